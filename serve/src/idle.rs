//! Idle connections: when bytes last moved on each connection,
//! the idle timeout that closes quiet ones, and the registry that lets a
//! new connection take an idle one's place at the connection cap.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::Notify;

/// The open client connections, so that one idle connection can be closed
/// when a new one arrives at the cap.
#[derive(Default)]
pub(crate) struct Slots {
    open: std::sync::Mutex<Vec<Arc<Slot>>>,
    /// State of the xorshift generator that picks the sample.
    seed: AtomicU64,
}

struct Slot {
    activity: Arc<Activity>,
    evict: Notify,
    /// Position in `Slots::open`; only changed under its lock.
    index: AtomicUsize,
}

/// A connection's entry in [`Slots`], removed when dropped.
pub(crate) struct Registered {
    slots: Arc<Slots>,
    slot: Arc<Slot>,
}

impl Slots {
    /// How many connections one eviction looks at: enough to find an idle
    /// one when most are, without scanning ten thousand on every accept.
    const SAMPLE: usize = 16;

    pub(crate) fn register(self: &Arc<Self>, activity: Arc<Activity>) -> Registered {
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        let slot = Arc::new(Slot {
            activity,
            evict: Notify::new(),
            index: AtomicUsize::new(open.len()),
        });
        open.push(slot.clone());
        Registered {
            slots: self.clone(),
            slot,
        }
    }

    /// Removes `slot` if it is still listed; true if it was.
    fn remove(open: &mut Vec<Arc<Slot>>, slot: &Arc<Slot>) -> bool {
        let i = slot.index.load(Ordering::Relaxed);
        if !open.get(i).is_some_and(|s| Arc::ptr_eq(s, slot)) {
            return false;
        }
        open.swap_remove(i);
        if let Some(moved) = open.get(i) {
            moved.index.store(i, Ordering::Relaxed);
        }
        true
    }

    /// Closes the idlest of a random sample of connections that have been
    /// quiet for `after` with no request being handled. False if the sample
    /// had none.
    pub(crate) fn evict_one(&self, after: Duration) -> bool {
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        if open.is_empty() {
            return false;
        }
        let mut x = self.seed.load(Ordering::Relaxed) | 1;
        let mut victim: Option<(Duration, Arc<Slot>)> = None;
        for _ in 0..Self::SAMPLE.min(open.len()) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let slot = &open[(x % open.len() as u64) as usize];
            let idle_for = slot.activity.idle_for();
            let idle = idle_for >= after && slot.activity.busy.load(Ordering::Relaxed) == 0;
            if idle && victim.as_ref().is_none_or(|(best, _)| idle_for > *best) {
                victim = Some((idle_for, slot.clone()));
            }
        }
        self.seed.store(x, Ordering::Relaxed);
        let Some((_, slot)) = victim else {
            return false;
        };
        Self::remove(&mut open, &slot);
        slot.evict.notify_one();
        true
    }
}

impl Registered {
    /// Completes once this connection was picked to make room.
    pub(crate) async fn evicted(&self) {
        self.slot.evict.notified().await;
    }
}

impl Drop for Registered {
    fn drop(&mut self) {
        let mut open = self.slots.open.lock().unwrap_or_else(|e| e.into_inner());
        Slots::remove(&mut open, &self.slot);
    }
}

/// When bytes last moved on a connection, and how many of its requests are
/// being handled right now.
pub(crate) struct Activity {
    started: Instant,
    /// Milliseconds since `started` at the last read or write.
    last_ms: AtomicU64,
    busy: AtomicUsize,
}

/// Marks a request as being handled for as long as it lives. Owned, so a
/// response body can carry it to its last byte.
pub(crate) struct Busy(Arc<Activity>);

impl Drop for Busy {
    fn drop(&mut self) {
        self.0.busy.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Activity {
    pub(crate) fn new() -> Activity {
        Activity {
            started: Instant::now(),
            last_ms: AtomicU64::new(0),
            busy: AtomicUsize::new(0),
        }
    }

    fn touch(&self) {
        let now = u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_ms.store(now, Ordering::Relaxed);
    }

    pub(crate) fn busy(self: &Arc<Self>) -> Busy {
        self.busy.fetch_add(1, Ordering::Relaxed);
        Busy(self.clone())
    }

    fn idle_for(&self) -> Duration {
        let last = self.started + Duration::from_millis(self.last_ms.load(Ordering::Relaxed));
        Instant::now().saturating_duration_since(last)
    }

    /// Completes once nothing has moved for `timeout` while no request was
    /// being handled. Such a request is bounded by its handler (a guest's
    /// deadline on the node), so it is not cut short here even if it is
    /// quiet.
    /// A body that is being streamed moves bytes; one that stalls (the guest
    /// pauses, or the client stops reading) ends with the connection.
    pub(crate) async fn idle(&self, timeout: Duration) {
        loop {
            let idle_for = self.idle_for();
            if idle_for >= timeout {
                if self.busy.load(Ordering::Relaxed) == 0 {
                    return;
                }
                tokio::time::sleep(timeout).await;
            } else {
                tokio::time::sleep(timeout - idle_for).await;
            }
        }
    }
}

/// A socket that records in its [`Activity`] every time bytes move.
pub struct Tracked<I> {
    pub(crate) inner: I,
    pub(crate) activity: Arc<Activity>,
}

impl<I: AsyncRead + Unpin> AsyncRead for Tracked<I> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let polled = Pin::new(&mut this.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            this.activity.touch();
        }
        polled
    }
}

impl<I: AsyncWrite + Unpin> AsyncWrite for Tracked<I> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = polled
            && n > 0
        {
            this.activity.touch();
        }
        polled
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_write_vectored(cx, bufs);
        if let Poll::Ready(Ok(n)) = polled
            && n > 0
        {
            this.activity.touch();
        }
        polled
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn open_count(slots: &Slots) -> usize {
        slots.open.lock().unwrap().len()
    }

    #[tokio::test]
    async fn only_quiet_connections_with_nothing_in_flight_are_evicted() {
        let slots = Arc::new(Slots::default());
        let busy = Arc::new(Activity::new());
        let quiet = Arc::new(Activity::new());
        let a = slots.register(busy.clone());
        let b = slots.register(quiet.clone());
        let _in_flight = busy.busy();
        // Nobody has been quiet for an hour.
        assert!(!slots.evict_one(Duration::from_secs(3600)));
        // The busy one is never picked; the quiet one is, once.
        assert!(slots.evict_one(Duration::ZERO));
        tokio::time::timeout(Duration::from_secs(1), b.evicted())
            .await
            .expect("the quiet connection is told to close");
        assert_eq!(open_count(&slots), 1);
        assert!(!slots.evict_one(Duration::ZERO), "only a busy one is left");
        drop(b);
        assert_eq!(open_count(&slots), 1);
        drop(a);
        assert_eq!(open_count(&slots), 0);
    }

    #[test]
    fn dropping_entries_keeps_the_registry_consistent() {
        let slots = Arc::new(Slots::default());
        let mut entries: Vec<_> = (0..10)
            .map(|_| slots.register(Arc::new(Activity::new())))
            .collect();
        // Remove from the middle, the front and the back: swap_remove
        // moves entries, whose recorded positions must follow.
        for i in [4, 0, 7, 2] {
            entries.remove(i);
        }
        assert_eq!(open_count(&slots), 6);
        let mut evicted = 0;
        while slots.evict_one(Duration::ZERO) {
            evicted += 1;
        }
        assert_eq!((evicted, open_count(&slots)), (6, 0));
        drop(entries);
        assert_eq!(open_count(&slots), 0);
    }

    #[tokio::test]
    async fn the_idle_timeout_waits_for_requests_in_flight() {
        let activity = Arc::new(Activity::new());
        let busy = activity.busy();
        let idle = activity.idle(Duration::from_millis(10));
        tokio::pin!(idle);
        // Twenty idle timeouts pass: the connection stays open while its
        // request is in flight.
        assert!(
            tokio::time::timeout(Duration::from_millis(200), &mut idle)
                .await
                .is_err()
        );
        drop(busy);
        tokio::time::timeout(Duration::from_secs(5), idle)
            .await
            .expect("idle once the request is done");
    }
}
