//! Guest output lines waiting to be shipped to the control plane, queued
//! per tenant so that one tenant printing in a loop cannot crowd another
//! tenant's lines out of the node's shipping.
//!
//! Each tenant has its own queue, bounded by lines and bytes; a tenant over
//! its bound loses its *own* oldest lines. The queues together are bounded
//! as well ([`TOTAL_LINES`], [`TOTAL_BYTES`]), which also bounds how many
//! tenants can have a queue at once (an empty queue is removed): past the
//! total, the line dropped is the oldest of the tenant holding the most
//! bytes, so a tenant with little queued always finds room and a flood
//! pays for itself. Every dropped line is counted on its app's
//! `outpost_runtime_guest_log_unshipped_lines_total`.
//!
//! Batches are taken round-robin, one line per tenant in turn, and the turn
//! carries over from batch to batch: with 100 000 lines of one tenant
//! waiting and 10 of another, the next batch holds all 10.
//!
//! Deliberately not durable, and lines of one tenant keep their order but
//! are interleaved with other tenants' in a batch. The node's own log
//! (tracing target `outpost::guest`) keeps every line regardless.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

use outpost_proto::GuestLogLine;
use prometheus::IntCounter;
use tokio::sync::Notify;

/// Lines one tenant may have waiting…
pub const TENANT_LINES: usize = 2048;
/// …and bytes, whichever bound comes first (about 128 lines at the
/// longest shipped line, 4 KiB).
pub const TENANT_BYTES: usize = 512 * 1024;
/// Lines waiting across all tenants: also the most tenants with a queue.
pub const TOTAL_LINES: usize = 16 * 1024;
/// Bytes waiting across all tenants: the node's memory for shipping.
pub const TOTAL_BYTES: usize = 8 * 1024 * 1024;
/// What a queued line costs beyond its text and names (the struct, the
/// stream name, the counter handle), so that a flood of empty lines is
/// bounded by bytes too.
const LINE_OVERHEAD: usize = 128;

/// The node-wide queues guest lines are shipped from. They only hold lines
/// once shipping is on (sync mode's shipper called [`ShipQueue::start`]):
/// a standalone node keeps nothing queued.
#[derive(Debug, Default)]
pub struct ShipQueue {
    queues: Mutex<Queues>,
    /// Signalled on every push, for the shipper waiting for lines.
    more: Notify,
    on: AtomicBool,
}

#[derive(Debug, Default)]
struct Queues {
    tenants: HashMap<String, TenantQueue>,
    /// Tenants with lines waiting, each once, in the order their next line
    /// is taken.
    turn: VecDeque<String>,
    lines: usize,
    bytes: usize,
}

#[derive(Debug, Default)]
struct TenantQueue {
    lines: VecDeque<Queued>,
    bytes: usize,
}

#[derive(Debug)]
struct Queued {
    line: GuestLogLine,
    /// The line's own app's counter, so that a drop is counted where the
    /// line came from whoever's push caused it.
    unshipped: IntCounter,
}

fn weight(line: &GuestLogLine) -> usize {
    line.text.len() + line.tenant.len() + line.app.len() + LINE_OVERHEAD
}

impl ShipQueue {
    /// Empty queues, shipping off.
    pub fn new() -> ShipQueue {
        ShipQueue::default()
    }

    /// Turns shipping on; `false` if it already was (one shipper only).
    pub fn start(&self) -> bool {
        !self.on.swap(true, Ordering::Relaxed)
    }

    /// Queues `line` behind its tenant's others, never waiting: a shipper
    /// that falls behind loses lines, a guest never stalls. A line dropped
    /// to make room is counted on its app's `unshipped`.
    pub fn push(&self, line: GuestLogLine, unshipped: &IntCounter) {
        if !self.on.load(Ordering::Relaxed) {
            return;
        }
        let mut queues = self.queues.lock().unwrap();
        queues.push(Queued {
            line,
            unshipped: unshipped.clone(),
        });
        drop(queues);
        self.more.notify_one();
    }

    /// Up to `max` lines, taken round-robin across tenants.
    pub fn take_batch(&self, max: usize) -> Vec<GuestLogLine> {
        self.queues.lock().unwrap().take(max)
    }

    /// Lines waiting.
    pub fn len(&self) -> usize {
        self.queues.lock().unwrap().lines
    }

    /// Whether no line is waiting.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Returns once at least `lines` lines are waiting.
    pub async fn wait_for(&self, lines: usize) {
        loop {
            // `notify_one` keeps a permit when nobody waits, so a push
            // between this check and the await is not missed.
            if self.len() >= lines {
                return;
            }
            self.more.notified().await;
        }
    }
}

impl Queues {
    fn push(&mut self, item: Queued) {
        let weight = weight(&item.line);
        let tenant = item.line.tenant.clone();
        let queue = self.tenants.entry(tenant.clone()).or_default();
        if queue.lines.is_empty() {
            self.turn.push_back(tenant.clone());
        }
        queue.lines.push_back(item);
        queue.bytes += weight;
        self.lines += 1;
        self.bytes += weight;
        // The tenant's own bound: its oldest lines go first. The line just
        // queued stays, whatever it weighs.
        loop {
            let queue = &self.tenants[&tenant];
            if queue.lines.len() <= 1
                || (queue.lines.len() <= TENANT_LINES && queue.bytes <= TENANT_BYTES)
            {
                break;
            }
            self.drop_oldest(&tenant);
        }
        // The node's bound: the tenant holding the most pays. Only scans
        // the queues when many tenants are near their own bound at once.
        while self.lines > TOTAL_LINES || self.bytes > TOTAL_BYTES {
            let Some(largest) = self
                .tenants
                .iter()
                .max_by_key(|(_, q)| q.bytes)
                .map(|(t, _)| t.clone())
            else {
                break;
            };
            self.drop_oldest(&largest);
        }
    }

    fn drop_oldest(&mut self, tenant: &str) {
        let Some(queue) = self.tenants.get_mut(tenant) else {
            return;
        };
        let Some(old) = queue.lines.pop_front() else {
            return;
        };
        let weight = weight(&old.line);
        queue.bytes -= weight;
        self.lines -= 1;
        self.bytes -= weight;
        old.unshipped.inc();
        if queue.lines.is_empty() {
            // Rare (every tenant is down to a line or so): the O(n) removal
            // from the turn is fine there.
            self.tenants.remove(tenant);
            self.turn.retain(|t| t != tenant);
        }
    }

    fn take(&mut self, max: usize) -> Vec<GuestLogLine> {
        let mut batch = Vec::with_capacity(max.min(self.lines));
        while batch.len() < max {
            let Some(tenant) = self.turn.pop_front() else {
                break;
            };
            let Some(queue) = self.tenants.get_mut(&tenant) else {
                continue;
            };
            if let Some(item) = queue.lines.pop_front() {
                let weight = weight(&item.line);
                queue.bytes -= weight;
                self.lines -= 1;
                self.bytes -= weight;
                batch.push(item.line);
            }
            if queue.lines.is_empty() {
                self.tenants.remove(&tenant);
            } else {
                self.turn.push_back(tenant);
            }
        }
        batch
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(tenant: &str, text: String) -> GuestLogLine {
        GuestLogLine {
            tenant: tenant.into(),
            app: "web".into(),
            node: String::new(),
            request_id: 1,
            stream: "stdout".into(),
            text,
            time_ms: 0,
        }
    }

    fn counter() -> IntCounter {
        IntCounter::new("unshipped", "unshipped").unwrap()
    }

    fn texts_of(batch: &[GuestLogLine], tenant: &str) -> Vec<String> {
        batch
            .iter()
            .filter(|l| l.tenant == tenant)
            .map(|l| l.text.clone())
            .collect()
    }

    #[test]
    fn a_flooding_tenant_cannot_crowd_out_another_tenants_lines() {
        let queue = ShipQueue::new();
        assert!(queue.start());
        let (a_dropped, b_dropped) = (counter(), counter());
        for i in 0..100_000 {
            // b's lines arrive before and all through a's flood: b's queue
            // is older than a's, so a bound shared with a would cost b.
            if i % 10_000 == 0 {
                queue.push(line("b", format!("b{}", i / 10_000)), &b_dropped);
            }
            queue.push(line("a", format!("a{i}")), &a_dropped);
        }
        assert_eq!(b_dropped.get(), 0, "b lost lines to a's flood");
        assert_eq!(a_dropped.get(), 100_000 - TENANT_LINES as u64);
        // The next batch carries every one of b's lines, in order.
        let batch = queue.take_batch(500);
        assert_eq!(batch.len(), 500);
        let want: Vec<String> = (0..10).map(|i| format!("b{i}")).collect();
        assert_eq!(texts_of(&batch, "b"), want);
        // a kept its newest lines, in order.
        let a = texts_of(&batch, "a");
        assert_eq!(a[0], format!("a{}", 100_000 - TENANT_LINES));
        assert_eq!(a.len(), 490);
    }

    #[test]
    fn the_turn_carries_over_from_batch_to_batch() {
        let queue = ShipQueue::new();
        queue.start();
        let c = counter();
        for i in 0..4 {
            queue.push(line("a", format!("a{i}")), &c);
        }
        for i in 0..2 {
            queue.push(line("b", format!("b{i}")), &c);
        }
        let texts =
            |batch: Vec<GuestLogLine>| batch.into_iter().map(|l| l.text).collect::<Vec<_>>();
        assert_eq!(texts(queue.take_batch(3)), ["a0", "b0", "a1"]);
        // b's turn comes first now, not a's again.
        assert_eq!(texts(queue.take_batch(2)), ["b1", "a2"]);
        assert_eq!(texts(queue.take_batch(10)), ["a3"]);
        assert!(queue.is_empty());
        assert!(queue.queues.lock().unwrap().tenants.is_empty());
    }

    #[test]
    fn many_tenants_are_bounded_in_total_and_the_largest_pays() {
        let queue = ShipQueue::new();
        queue.start();
        let (big, small) = (counter(), counter());
        // Enough flooding tenants to pass the node's byte bound.
        let long = "x".repeat(4000);
        let floods = TOTAL_BYTES / TENANT_BYTES + 4;
        for round in 0..TENANT_BYTES / 4000 {
            for t in 0..floods {
                queue.push(line(&format!("flood{t}"), format!("{round}{long}")), &big);
            }
        }
        let queues = queue.queues.lock().unwrap();
        assert!(queues.bytes <= TOTAL_BYTES && queues.lines <= TOTAL_LINES);
        drop(queues);
        assert!(big.get() > 0);
        // A quiet tenant arriving now still gets its line in.
        queue.push(line("quiet", "hello".into()), &small);
        assert_eq!(small.get(), 0);
        let batch = queue.take_batch(floods + 1);
        assert_eq!(texts_of(&batch, "quiet"), ["hello"]);
    }

    #[test]
    fn nothing_is_queued_until_shipping_starts() {
        let queue = ShipQueue::new();
        queue.push(line("a", "lost".into()), &counter());
        assert!(queue.is_empty());
        assert!(queue.start());
        assert!(!queue.start(), "one shipper only");
        queue.push(line("a", "kept".into()), &counter());
        assert_eq!(queue.len(), 1);
    }

    #[tokio::test]
    async fn waiting_for_lines_wakes_on_the_push_that_fills_the_batch() {
        let queue = std::sync::Arc::new(ShipQueue::new());
        queue.start();
        let waiter = tokio::spawn({
            let queue = queue.clone();
            async move { queue.wait_for(3).await }
        });
        let c = counter();
        for i in 0..3 {
            assert!(!waiter.is_finished());
            queue.push(line("a", i.to_string()), &c);
            tokio::task::yield_now().await;
        }
        tokio::time::timeout(std::time::Duration::from_secs(10), waiter)
            .await
            .expect("woken by the third line")
            .unwrap();
    }
}
