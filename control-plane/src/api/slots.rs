//! Upload validation is the control plane's heaviest shared work (a
//! cranelift compile of up to 50 MiB, then a trial instantiation): a few
//! run at once across all tenants, and one tenant may hold only part of
//! them, so another tenant's deploy always finds room.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// Validations in flight per tenant, up to a cap each.
#[derive(Debug)]
pub struct TenantSlots {
    per_tenant: usize,
    taken: Mutex<HashMap<String, usize>>,
}

impl TenantSlots {
    /// At most `per_tenant` at once for any one tenant.
    pub fn new(per_tenant: usize) -> Arc<TenantSlots> {
        Arc::new(TenantSlots {
            per_tenant,
            taken: Mutex::new(HashMap::new()),
        })
    }

    /// A slot for `tenant`, or `Err(in_flight)` when it holds all of its
    /// own. The slot is given back when the guard drops — also when the
    /// work it guards outlives the request (a compile cannot be cut short).
    pub fn take(self: &Arc<Self>, tenant: &str) -> Result<TenantSlot, usize> {
        let mut taken = self.taken.lock().unwrap();
        let n = taken.entry(tenant.to_string()).or_insert(0);
        if *n >= self.per_tenant {
            return Err(*n);
        }
        *n += 1;
        Ok(TenantSlot {
            slots: self.clone(),
            tenant: tenant.to_string(),
        })
    }

    fn give_back(&self, tenant: &str) {
        let mut taken = self.taken.lock().unwrap();
        if let Some(n) = taken.get_mut(tenant) {
            *n -= 1;
            if *n == 0 {
                taken.remove(tenant);
            }
        }
    }
}

/// One tenant's validation slot.
#[derive(Debug)]
pub struct TenantSlot {
    slots: Arc<TenantSlots>,
    tenant: String,
}

impl Drop for TenantSlot {
    fn drop(&mut self) {
        self.slots.give_back(&self.tenant);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tenant_holds_at_most_its_share_and_gets_it_back() {
        let slots = TenantSlots::new(2);
        let a1 = slots.take("a").unwrap();
        let _a2 = slots.take("a").unwrap();
        assert_eq!(slots.take("a").unwrap_err(), 2);
        // Another tenant is not held to a's count.
        let _b1 = slots.take("b").unwrap();
        drop(a1);
        let _a3 = slots.take("a").unwrap();
        assert_eq!(slots.take("a").unwrap_err(), 2);
    }

    #[test]
    fn a_slot_moved_into_other_work_is_given_back_when_that_work_ends() {
        let slots = TenantSlots::new(1);
        let slot = slots.take("a").unwrap();
        std::thread::spawn(move || drop(slot)).join().unwrap();
        assert!(slots.take("a").is_ok());
        assert!(slots.taken.lock().unwrap().len() <= 1);
    }
}
