//! A circuit breaker per app: an app whose requests keep ending in limit
//! kills (fuel, memory, deadline) or traps stops getting instances for a
//! while. Its requests are answered 503 `app_throttled` with `Retry-After`
//! by the node, without instantiating anything, so a memory bomb at low
//! fuel no longer costs its neighbours an instance setup and teardown per
//! request. The cooling-off period doubles each time the app trips again
//! right after it was let back in, up to a ceiling, and starts over once
//! it has behaved for a whole window.
//!
//! The hot path is one atomic load; the counting takes a small per-app
//! lock only when a request ends.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

/// When an app's breaker opens and for how long.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BreakerConfig {
    /// The window kills are counted over.
    pub window: Duration,
    /// Kills within one window that open the breaker…
    pub min_kills: u32,
    /// …when they are at least this share (percent) of the window's
    /// finished requests, so a busy app with the odd kill keeps serving.
    pub min_kill_percent: u32,
    /// The first cooling-off period.
    pub cooldown: Duration,
    /// The longest one, however often the app trips.
    pub max_cooldown: Duration,
}

impl Default for BreakerConfig {
    fn default() -> Self {
        BreakerConfig {
            window: Duration::from_secs(10),
            min_kills: 20,
            min_kill_percent: 50,
            cooldown: Duration::from_secs(1),
            max_cooldown: Duration::from_secs(60),
        }
    }
}

/// One app's breaker. Times are milliseconds on the caller's monotonic
/// clock ([`crate::lanes::Lanes::now_ms`] in the node).
#[derive(Debug)]
pub struct Breaker {
    config: BreakerConfig,
    /// Until when requests are refused; 0: never tripped.
    open_until_ms: AtomicU64,
    /// Tripped and not yet seen closed by [`Breaker::admit`].
    open: AtomicBool,
    counts: Mutex<Counts>,
}

#[derive(Debug, Default)]
struct Counts {
    window_start_ms: u64,
    finished: u32,
    kills: u32,
    /// Trips in a row without a clean window in between.
    trips: u32,
}

/// What [`Breaker::finished`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tripped {
    /// Nothing changed.
    No,
    /// The breaker opened for this long.
    For(Duration),
}

impl Breaker {
    /// A closed breaker.
    pub fn new(config: BreakerConfig) -> Breaker {
        Breaker {
            config,
            open_until_ms: AtomicU64::new(0),
            open: AtomicBool::new(false),
            counts: Mutex::default(),
        }
    }

    /// `Ok` if a request may have an instance at `now_ms` (`Ok(true)`
    /// for the first one after the breaker closed again), else how long
    /// until the breaker closes.
    pub fn admit(&self, now_ms: u64) -> Result<bool, Duration> {
        let until = self.open_until_ms.load(Ordering::Relaxed);
        if until > now_ms {
            return Err(Duration::from_millis(until - now_ms));
        }
        Ok(self.open.load(Ordering::Relaxed) && self.open.swap(false, Ordering::Relaxed))
    }

    /// Records a request that ran and how it ended (`killed`: a limit or a
    /// trap stopped it); opens the breaker when the window's kills pass the
    /// threshold.
    pub fn finished(&self, now_ms: u64, killed: bool) -> Tripped {
        let c = &self.config;
        let mut counts = self.counts.lock().unwrap();
        let window_ms = c.window.as_millis() as u64;
        if now_ms.saturating_sub(counts.window_start_ms) >= window_ms {
            // A whole window without a trip forgives the earlier ones.
            if counts.kills < c.min_kills {
                counts.trips = 0;
            }
            counts.window_start_ms = now_ms;
            counts.finished = 0;
            counts.kills = 0;
        }
        counts.finished += 1;
        counts.kills += u32::from(killed);
        let over = counts.kills >= c.min_kills
            && u64::from(counts.kills) * 100
                >= u64::from(c.min_kill_percent) * u64::from(counts.finished);
        if !over || self.admit(now_ms).is_err() {
            return Tripped::No;
        }
        let doubled = c.cooldown.saturating_mul(1 << counts.trips.min(16));
        let cooldown = doubled.min(c.max_cooldown);
        counts.trips += 1;
        // The next window starts when the app is let back in: it must
        // earn its threshold again from there.
        let until = now_ms + cooldown.as_millis() as u64;
        counts.window_start_ms = until;
        counts.finished = 0;
        counts.kills = 0;
        self.open_until_ms.store(until, Ordering::Relaxed);
        self.open.store(true, Ordering::Relaxed);
        Tripped::For(cooldown)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> BreakerConfig {
        BreakerConfig {
            window: Duration::from_secs(10),
            min_kills: 4,
            min_kill_percent: 50,
            cooldown: Duration::from_secs(1),
            max_cooldown: Duration::from_secs(4),
        }
    }

    #[test]
    fn kills_past_the_threshold_open_it_and_the_cooldown_doubles_on_repeat() {
        let b = Breaker::new(config());
        for t in 0..3 {
            assert_eq!(b.finished(t, true), Tripped::No);
        }
        assert_eq!(b.finished(3, true), Tripped::For(Duration::from_secs(1)));
        assert_eq!(b.admit(500), Err(Duration::from_millis(503)));
        assert_eq!(b.admit(1003), Ok(true), "the first request after it closed");
        assert_eq!(b.admit(1004), Ok(false));
        // Tripping again right away: 2 s, then 4 s, then no more than 4 s.
        for t in 1003..1006 {
            b.finished(t, true);
        }
        assert_eq!(b.finished(1006, true), Tripped::For(Duration::from_secs(2)));
        let mut now = 3006;
        for want in [4, 4] {
            for t in now..now + 3 {
                b.finished(t, true);
            }
            assert_eq!(
                b.finished(now + 3, true),
                Tripped::For(Duration::from_secs(want))
            );
            now += 3 + want * 1000;
        }
        // A clean window forgives: the next trip is 1 s again.
        for t in 0..10 {
            b.finished(now + t * 1000, false);
        }
        let later = now + 21_000;
        for t in later..later + 3 {
            b.finished(t, true);
        }
        assert_eq!(
            b.finished(later + 3, true),
            Tripped::For(Duration::from_secs(1))
        );
    }

    #[test]
    fn a_busy_app_with_the_odd_kill_keeps_serving() {
        let b = Breaker::new(config());
        for t in 0..1000 {
            // One kill in ten: 100 kills, well past min_kills, but 10 %.
            assert_eq!(b.finished(t, t % 10 == 0), Tripped::No);
        }
        assert_eq!(b.admit(1000), Ok(false));
        // Kills spread thinner than the window never add up.
        let b = Breaker::new(config());
        for t in 0..20 {
            assert_eq!(b.finished(t * 4000, true), Tripped::No);
        }
    }
}
