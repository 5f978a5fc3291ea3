//! Request coalescing: while one request for a key is out at the origin,
//! others for the same key wait for it (up to a bound in number and in
//! time) and then look in the cache again, instead of all going to the
//! origin at once.

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::watch;

use super::store::Key;

/// The key a flight is for: the tenant's partition and the URL.
type FlightKey = (Arc<str>, Key);

struct Flight {
    /// Dropped (closing every receiver) when the leader is done.
    done: watch::Receiver<()>,
    waiters: usize,
}

/// The origin fetches in flight, by key.
#[derive(Default)]
pub(crate) struct Flights {
    by_key: Mutex<HashMap<FlightKey, Flight>>,
}

/// What a request should do about a key.
pub(crate) enum Role {
    /// Fetch from the origin; others wait until this is dropped.
    Lead(Leader),
    /// Wait for the leader (with [`Waiter::wait`]), then look again.
    Wait(Waiter),
    /// Too many wait already: fetch without coalescing.
    Alone,
}

/// The one request fetching a key; dropping it (done or cancelled)
/// releases the waiters.
pub(crate) struct Leader {
    flights: Arc<Flights>,
    key: FlightKey,
    _done: watch::Sender<()>,
}

impl Drop for Leader {
    fn drop(&mut self) {
        let mut by_key = self
            .flights
            .by_key
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        by_key.remove(&self.key);
        // `_done` drops after this, which wakes the waiters.
    }
}

/// A request waiting for a leader.
pub(crate) struct Waiter {
    done: watch::Receiver<()>,
}

impl Waiter {
    /// Waits until the leader is done, or `timeout` passes: whether the
    /// leader finished in time.
    pub(crate) async fn wait(mut self, timeout: Duration) -> bool {
        // `changed` fails when the sender is gone, which is the signal.
        tokio::time::timeout(timeout, self.done.changed())
            .await
            .is_ok()
    }
}

impl Flights {
    /// Joins the flight for (`tenant`, `key`), or starts it; at most
    /// `max_waiters` wait on one flight.
    pub(crate) fn join(self: &Arc<Self>, tenant: &Arc<str>, key: &Key, max_waiters: usize) -> Role {
        let mut by_key = self.by_key.lock().unwrap_or_else(|e| e.into_inner());
        let flight_key = (tenant.clone(), key.clone());
        match by_key.entry(flight_key.clone()) {
            Entry::Occupied(mut flight) => {
                let flight = flight.get_mut();
                if flight.waiters >= max_waiters {
                    return Role::Alone;
                }
                flight.waiters += 1;
                Role::Wait(Waiter {
                    done: flight.done.clone(),
                })
            }
            Entry::Vacant(slot) => {
                let (tx, rx) = watch::channel(());
                slot.insert(Flight {
                    done: rx,
                    waiters: 0,
                });
                Role::Lead(Leader {
                    flights: self.clone(),
                    key: flight_key,
                    _done: tx,
                })
            }
        }
    }

    /// Flights in progress (for tests).
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.by_key.lock().unwrap().len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(url: &str) -> Key {
        Key {
            head: false,
            url: url.into(),
        }
    }

    #[tokio::test]
    async fn waiters_wake_when_the_leader_is_done_and_a_new_flight_starts_after() {
        let flights = Arc::new(Flights::default());
        let acme: Arc<str> = Arc::from("acme");
        let Role::Lead(leader) = flights.join(&acme, &key("a"), 10) else {
            panic!("the first request leads");
        };
        let Role::Wait(waiter) = flights.join(&acme, &key("a"), 10) else {
            panic!("the second waits");
        };
        // Another tenant's request for the same URL never waits on acme's.
        assert!(matches!(
            flights.join(&Arc::from("rival"), &key("a"), 10),
            Role::Lead(_)
        ));
        let woke = tokio::spawn(waiter.wait(Duration::from_secs(60)));
        drop(leader);
        assert!(woke.await.unwrap());
        assert_eq!(flights.len(), 0);
        assert!(matches!(flights.join(&acme, &key("a"), 10), Role::Lead(_)));
    }

    #[tokio::test(start_paused = true)]
    async fn a_slow_leader_releases_its_waiters_at_the_timeout() {
        let flights = Arc::new(Flights::default());
        let acme: Arc<str> = Arc::from("acme");
        let _leader = flights.join(&acme, &key("a"), 10);
        let Role::Wait(waiter) = flights.join(&acme, &key("a"), 10) else {
            panic!("waits");
        };
        assert!(!waiter.wait(Duration::from_secs(5)).await);
    }

    #[test]
    fn past_the_bound_requests_go_alone() {
        let flights = Arc::new(Flights::default());
        let acme: Arc<str> = Arc::from("acme");
        let _leader = flights.join(&acme, &key("a"), 2);
        let _w1 = flights.join(&acme, &key("a"), 2);
        let _w2 = flights.join(&acme, &key("a"), 2);
        assert!(matches!(flights.join(&acme, &key("a"), 2), Role::Alone));
    }
}
