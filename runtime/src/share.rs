//! Each tenant's fair share of the node's instance slots.
//!
//! The instance pool has a fixed number of slots (`pool.max_instances`),
//! shared by every tenant on the node. Per-app concurrency caps do not
//! protect it: a tenant with sixteen apps of 64 sleeping requests each
//! held all thousand slots, and every other tenant got 503s. So every
//! request takes a slot here before it gets an instance:
//!
//! - a tenant under its **share** (`tenant_share_percent` of the slots)
//!   gets a free slot at once, or waits for one (first come, first
//!   served, at most `slot_wait_ms`);
//! - a tenant at or past its share may **borrow** free slots only while no
//!   other tenant is waiting, and never the last **reserve** (a twentieth
//!   of the slots), so a tenant alone on a node can use nearly all of it
//!   and a newcomer still finds a slot at once;
//! - otherwise it is refused at once, 503 `tenant_share`, without an
//!   instance: it already holds more than its share of a node others want.
//!
//! A released slot goes to the first waiting request whose tenant is
//! under its share, so other tenants' waiting requests are admitted before
//! the big tenant's new ones.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use tokio::sync::oneshot;

/// Why a request got no slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Its tenant holds its share while others want slots.
    TenantShare,
    /// No slot came free in time.
    Busy,
}

/// The node's instance slots and who holds them.
pub struct Slots {
    /// Slots a tenant may hold while another tenant wants one.
    share: usize,
    /// Free slots a tenant past its share leaves alone.
    reserve: usize,
    /// Requests waiting at most.
    max_waiting: usize,
    state: Mutex<State>,
}

struct State {
    free: usize,
    /// Slots held, by tenant; tenants holding none are removed.
    held: HashMap<Arc<str>, usize>,
    waiting: VecDeque<Waiter>,
}

struct Waiter {
    tenant: Arc<str>,
    tx: oneshot::Sender<Slot>,
}

/// One instance slot, held until dropped.
pub struct Slot {
    slots: Arc<Slots>,
    tenant: Arc<str>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.slots.release(&self.tenant);
    }
}

impl Slots {
    /// `total` slots, of which one tenant may hold `share_percent` while
    /// others want them.
    pub fn new(total: usize, share_percent: u32) -> Arc<Slots> {
        let total = total.max(1);
        let share = (total * share_percent.min(100) as usize / 100).max(1);
        Arc::new(Slots {
            share,
            reserve: (total / 20).max(1).min(total - share),
            max_waiting: total,
            state: Mutex::new(State {
                free: total,
                held: HashMap::new(),
                waiting: VecDeque::new(),
            }),
        })
    }

    /// A slot for `tenant`, waiting until `wait_until` at most.
    pub async fn acquire(
        self: &Arc<Self>,
        tenant: &Arc<str>,
        wait_until: Instant,
    ) -> Result<Slot, Refusal> {
        let rx = {
            let mut state = self.lock();
            if self.may_take(&state, tenant) {
                return Ok(self.grant(&mut state, tenant));
            }
            if state.held.get(tenant).copied().unwrap_or(0) >= self.share {
                return Err(Refusal::TenantShare);
            }
            state.waiting.retain(|w| !w.tx.is_closed());
            if state.waiting.len() >= self.max_waiting {
                return Err(Refusal::Busy);
            }
            let (tx, rx) = oneshot::channel();
            state.waiting.push_back(Waiter {
                tenant: tenant.clone(),
                tx,
            });
            rx
        };
        // A slot sent just as the wait ends is dropped with the receiver,
        // which releases it to the next waiter.
        match tokio::time::timeout_at(wait_until.into(), rx).await {
            Ok(Ok(slot)) => Ok(slot),
            _ => Err(Refusal::Busy),
        }
    }

    /// Slots held by `tenant` now.
    pub fn held(&self, tenant: &str) -> usize {
        self.lock().held.get(tenant).copied().unwrap_or(0)
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // Nothing panics while holding the lock; if something did, the
        // counts are still whole numbers worth carrying on with.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether `tenant` may take a free slot now.
    fn may_take(&self, state: &State, tenant: &str) -> bool {
        if state.free == 0 {
            return false;
        }
        if state.held.get(tenant).copied().unwrap_or(0) < self.share {
            return true;
        }
        state.free > self.reserve
            && !state
                .waiting
                .iter()
                .any(|w| &*w.tenant != tenant && !w.tx.is_closed())
    }

    fn grant(self: &Arc<Self>, state: &mut State, tenant: &Arc<str>) -> Slot {
        state.free -= 1;
        *state.held.entry(tenant.clone()).or_default() += 1;
        Slot {
            slots: self.clone(),
            tenant: tenant.clone(),
        }
    }

    fn release(self: &Arc<Self>, tenant: &str) {
        let handed = {
            let mut state = self.lock();
            state.free += 1;
            if let Some(n) = state.held.get_mut(tenant) {
                *n -= 1;
                if *n == 0 {
                    state.held.remove(tenant);
                }
            }
            state.waiting.retain(|w| !w.tx.is_closed());
            let next =
                (0..state.waiting.len()).find(|&i| self.may_take(&state, &state.waiting[i].tenant));
            next.and_then(|i| state.waiting.remove(i)).map(|w| {
                let slot = self.grant(&mut state, &w.tenant);
                (w.tx, slot)
            })
        };
        // Sent outside the lock: if the waiter gave up meanwhile, the slot
        // comes back and its drop releases it again.
        if let Some((tx, slot)) = handed {
            let _ = tx.send(slot);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn t(name: &str) -> Arc<str> {
        Arc::from(name)
    }

    fn soon() -> Instant {
        Instant::now() + Duration::from_millis(50)
    }

    async fn take(slots: &Arc<Slots>, tenant: &Arc<str>, n: usize) -> Vec<Slot> {
        let mut out = Vec::new();
        for _ in 0..n {
            out.push(slots.acquire(tenant, soon()).await.unwrap());
        }
        out
    }

    #[tokio::test]
    async fn a_tenant_alone_borrows_all_but_the_reserve() {
        // 40 slots: share 20, reserve 2.
        let slots = Slots::new(40, 50);
        let a = t("a");
        let held = take(&slots, &a, 38).await;
        assert_eq!(slots.held("a"), 38);
        let refused = slots.acquire(&a, soon()).await.err();
        assert_eq!(refused, Some(Refusal::TenantShare));

        // The reserve is there for anyone else, at once.
        let b = t("b");
        let _b = take(&slots, &b, 2).await;
        drop(held);
        assert_eq!(slots.held("a"), 0);
    }

    #[tokio::test]
    async fn a_released_slot_goes_to_the_waiting_tenant_under_its_share() {
        let slots = Slots::new(4, 50);
        let (a, b) = (t("a"), t("b"));
        // a: share 2, borrows one more (reserve 1); b takes the reserve.
        let mut held_a = take(&slots, &a, 3).await;
        let _held_b = take(&slots, &b, 1).await;

        // b waits for a slot; meanwhile a, past its share, is refused
        // rather than queued ahead of b.
        let waiting = tokio::spawn({
            let (slots, b) = (slots.clone(), b.clone());
            async move {
                let until = Instant::now() + Duration::from_secs(5);
                slots.acquire(&b, until).await.map(|_| ())
            }
        });
        tokio::task::yield_now().await;
        while slots.lock().waiting.is_empty() {
            tokio::task::yield_now().await;
        }
        assert_eq!(
            slots.acquire(&a, soon()).await.err(),
            Some(Refusal::TenantShare)
        );
        held_a.pop();
        assert_eq!(waiting.await.unwrap(), Ok(()));
    }

    #[tokio::test]
    async fn a_wait_ends_busy_when_nothing_comes_free() {
        // Share 2 of 2: both tenants are under it, so a waits.
        let slots = Slots::new(2, 100);
        let (a, b) = (t("a"), t("b"));
        let _a = take(&slots, &a, 1).await;
        let _b = take(&slots, &b, 1).await;
        assert_eq!(slots.acquire(&a, soon()).await.err(), Some(Refusal::Busy));
        // The waiter that gave up is not handed the next slot.
        drop(_b);
        assert_eq!(slots.lock().free, 1);
        let _again = take(&slots, &b, 1).await;
    }

    #[tokio::test]
    async fn every_slot_comes_back() {
        let slots = Slots::new(8, 25);
        let tenants = [t("a"), t("b"), t("c")];
        let mut tasks = Vec::new();
        for i in 0..60 {
            let (slots, tenant) = (slots.clone(), tenants[i % 3].clone());
            tasks.push(tokio::spawn(async move {
                let until = Instant::now() + Duration::from_secs(5);
                if let Ok(slot) = slots.acquire(&tenant, until).await {
                    tokio::time::sleep(Duration::from_millis(1)).await;
                    drop(slot);
                }
            }));
        }
        for task in tasks {
            task.await.unwrap();
        }
        let state = slots.lock();
        assert_eq!(state.free, 8);
        assert!(state.held.is_empty());
    }
}
