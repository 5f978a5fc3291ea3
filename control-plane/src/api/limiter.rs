//! Slows token guessing: a client address that presents
//! [`MAX_FAILURES`] unknown tokens within [`WINDOW`] gets 429 (with
//! `Retry-After`) for every further unknown token until the window ends.
//! A valid token is checked first and always let in, so the limiter never
//! locks out a client that holds one — also behind a proxy, where every
//! client shares the proxy's address. (Tokens are 256 random bits: the
//! limit is against the load and noise of guessing, not its odds.)

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Unknown tokens one address may present per window.
pub const MAX_FAILURES: u32 = 20;
/// The window.
pub const WINDOW: Duration = Duration::from_secs(60);
/// Addresses tracked before stale ones are swept (bounds memory under a
/// spray from many addresses).
const SWEEP_AT: usize = 10_000;

/// Failed authentications per client address.
#[derive(Default)]
pub struct AuthLimiter {
    failures: Mutex<HashMap<IpAddr, (Instant, u32)>>,
}

impl AuthLimiter {
    /// `Err(wait)` if `ip` is locked out at `now`.
    pub fn check(&self, ip: IpAddr, now: Instant) -> Result<(), Duration> {
        let failures = self.failures.lock().unwrap();
        match failures.get(&ip) {
            Some((start, count)) if *count >= MAX_FAILURES && now < *start + WINDOW => {
                Err(*start + WINDOW - now)
            }
            _ => Ok(()),
        }
    }

    /// Records an unknown token from `ip` at `now`.
    pub fn failed(&self, ip: IpAddr, now: Instant) {
        let mut failures = self.failures.lock().unwrap();
        if failures.len() >= SWEEP_AT {
            failures.retain(|_, (start, _)| now < *start + WINDOW);
        }
        let entry = failures.entry(ip).or_insert((now, 0));
        if now >= entry.0 + WINDOW {
            *entry = (now, 0);
        }
        entry.1 += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_address_is_locked_out_after_too_many_failures_until_the_window_ends() {
        let limiter = AuthLimiter::default();
        let ip: IpAddr = "192.0.2.7".parse().unwrap();
        let other: IpAddr = "192.0.2.8".parse().unwrap();
        let t0 = Instant::now();
        for _ in 0..MAX_FAILURES - 1 {
            limiter.failed(ip, t0);
        }
        assert!(limiter.check(ip, t0).is_ok());
        limiter.failed(ip, t0);
        let wait = limiter.check(ip, t0 + Duration::from_secs(10)).unwrap_err();
        assert_eq!(wait, WINDOW - Duration::from_secs(10));
        assert!(limiter.check(other, t0).is_ok(), "only that address");
        assert!(limiter.check(ip, t0 + WINDOW).is_ok());
        // A new window starts counting from zero.
        limiter.failed(ip, t0 + WINDOW);
        assert!(limiter.check(ip, t0 + WINDOW).is_ok());
    }
}
