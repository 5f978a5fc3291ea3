//! A time budget for one tenant's upload validations. The slots in
//! [`super::slots`] bound how many compiles a tenant runs at once; this
//! bounds how much compile time it spends over a window. A cranelift
//! compile cannot be interrupted, so a client that uploads and disconnects
//! over and over would otherwise keep its two slots busy for ever: every
//! compile is charged to its tenant when it ends, whether or not anyone
//! still waits for it, and a tenant past its budget is told to come back
//! (429 with `Retry-After`) before any more compiling starts.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Compile time one tenant may spend per [`WINDOW`].
pub const PER_TENANT: Duration = Duration::from_secs(120);
/// The sliding window [`PER_TENANT`] is counted over.
pub const WINDOW: Duration = Duration::from_secs(300);

/// Compile time spent per tenant over the last window.
#[derive(Debug)]
pub struct CompileBudget {
    per_tenant: Duration,
    window: Duration,
    spent: Mutex<HashMap<String, VecDeque<(Instant, Duration)>>>,
}

impl Default for CompileBudget {
    fn default() -> Self {
        CompileBudget::new(PER_TENANT, WINDOW)
    }
}

impl CompileBudget {
    /// `per_tenant` of compile time per `window`.
    pub fn new(per_tenant: Duration, window: Duration) -> CompileBudget {
        CompileBudget {
            per_tenant,
            window,
            spent: Mutex::default(),
        }
    }

    /// `Ok` if `tenant` has budget left at `now`, else how long until
    /// enough of it has aged out of the window.
    pub fn check(&self, tenant: &str, now: Instant) -> Result<(), Duration> {
        let mut spent = self.spent.lock().unwrap();
        let Some(entries) = spent.get_mut(tenant) else {
            return Ok(());
        };
        while entries
            .front()
            .is_some_and(|(at, _)| now.duration_since(*at) >= self.window)
        {
            entries.pop_front();
        }
        let mut total: Duration = entries.iter().map(|(_, d)| *d).sum();
        if total < self.per_tenant {
            return Ok(());
        }
        // The oldest entries leave the window first: wait until enough
        // of them have.
        for (at, took) in entries.iter() {
            total = total.saturating_sub(*took);
            if total < self.per_tenant {
                return Err((*at + self.window).saturating_duration_since(now));
            }
        }
        Err(self.window)
    }

    /// Charges `took` of compile time, ended at `now`, to `tenant`.
    pub fn spend(&self, tenant: &str, now: Instant, took: Duration) {
        let mut spent = self.spent.lock().unwrap();
        let entries = spent.entry(tenant.to_string()).or_default();
        entries.push_back((now, took));
        // Bounded: past the window an entry is dropped at the next check,
        // and a tenant cannot add entries faster than its slots compile.
        while entries
            .front()
            .is_some_and(|(at, _)| now.duration_since(*at) >= self.window)
        {
            entries.pop_front();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tenant_past_its_budget_waits_until_it_ages_out_and_others_do_not() {
        let s = Duration::from_secs;
        let budget = CompileBudget::new(s(10), s(60));
        let t0 = Instant::now();
        assert!(budget.check("a", t0).is_ok());
        budget.spend("a", t0 + s(5), s(6));
        assert!(budget.check("a", t0 + s(6)).is_ok());
        budget.spend("a", t0 + s(10), s(4));
        // 10 s spent: the next waits until the first 6 s leave the window.
        assert_eq!(budget.check("a", t0 + s(11)), Err(s(54)));
        assert!(budget.check("b", t0 + s(11)).is_ok());
        assert!(budget.check("a", t0 + s(65)).is_ok());
        assert_eq!(budget.spent.lock().unwrap()["a"].len(), 1);
    }
}
