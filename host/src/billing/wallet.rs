//! Consumer balances on the request path: reserve before the upstream is called, settle
//! after, never wait on the database.
//!
//! Per key the wallet holds `db_balance` (the balance the database has, including every
//! committed charge), `pending` (charges settled but not yet committed by the writer) and
//! `reserved` (upper bounds of calls in flight). A call may start only if its reservation fits
//! in `db_balance - pending - reserved`; so concurrent calls never overdraw by more than what
//! one call costs beyond its own reservation.
//!
//! Consistency with the database: the writer commits a charge (ledger row + balance update in
//! one transaction, idempotent by request id) and then calls `committed`, which moves the
//! amount from `pending` into `db_balance`; the periodic refresh (for top-ups made elsewhere)
//! and the writer take the same `sync` lock, so a refresh can never overwrite a charge that
//! was committed after its read.

use std::collections::HashMap;
use std::sync::Mutex;

#[derive(Debug, Default, Clone, Copy)]
struct WalletState {
    db_balance: i64,
    pending: i64,
    reserved: i64,
}

impl WalletState {
    fn available(&self) -> i64 {
        self.db_balance - self.pending - self.reserved
    }
}

#[derive(Default)]
pub struct Wallets {
    state: Mutex<HashMap<i64, WalletState>>,
    /// Serialises "read the database, apply" (refresh) with "commit, apply" (writer).
    pub sync: tokio::sync::Mutex<()>,
}

/// A reservation held by one call; give it back with `settle` or `release`.
#[derive(Debug)]
#[must_use = "a reservation must be settled or released"]
pub struct Reservation {
    pub key_id: i64,
    pub amount: i64,
}

/// The balance cannot cover the call.
#[derive(Debug, Clone, Copy)]
pub struct Insufficient {
    pub available: i64,
    pub needed: i64,
}

impl Wallets {
    /// Reserves `amount` micros for a call of `key_id`.
    pub fn reserve(&self, key_id: i64, amount: i64) -> Result<Reservation, Insufficient> {
        let mut map = self.state.lock().expect("wallets");
        let w = map.entry(key_id).or_default();
        let available = w.available();
        if amount > available || (available <= 0 && amount > 0) {
            return Err(Insufficient { available, needed: amount });
        }
        w.reserved += amount;
        Ok(Reservation { key_id, amount })
    }

    /// Ends a call that costs nothing (it failed): the reservation is returned.
    pub fn release(&self, r: Reservation) {
        let mut map = self.state.lock().expect("wallets");
        if let Some(w) = map.get_mut(&r.key_id) {
            w.reserved -= r.amount;
        }
    }

    /// Ends a call that costs `charge`: the reservation is returned and the charge is pending
    /// until the writer commits it.
    pub fn settle(&self, r: Reservation, charge: i64) {
        let mut map = self.state.lock().expect("wallets");
        let w = map.entry(r.key_id).or_default();
        w.reserved -= r.amount;
        w.pending += charge;
    }

    /// The writer committed `charge` (`applied`: the ledger took it; false when the request id
    /// had been charged already, so the database balance did not change).
    pub fn committed(&self, key_id: i64, charge: i64, applied: bool) {
        let mut map = self.state.lock().expect("wallets");
        let w = map.entry(key_id).or_default();
        w.pending -= charge;
        if applied {
            w.db_balance -= charge;
        }
    }

    /// The writer gave up on `charge` (the database refused it after retries).
    pub fn dropped(&self, key_id: i64, charge: i64) {
        self.committed(key_id, charge, false);
    }

    /// Sets the database balances read by a refresh (call with `sync` held).
    pub fn set_db_balances(&self, balances: impl IntoIterator<Item = (i64, i64)>) {
        let mut map = self.state.lock().expect("wallets");
        for (key_id, balance) in balances {
            map.entry(key_id).or_default().db_balance = balance;
        }
    }

    /// What the key can still spend now (for `/v1/user/info`-style answers and errors).
    pub fn available(&self, key_id: i64) -> i64 {
        self.state.lock().expect("wallets").get(&key_id).map(WalletState::available).unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reservations_bound_concurrent_spending() {
        let w = Wallets::default();
        w.set_db_balances([(1, 100)]);
        let a = w.reserve(1, 60).unwrap();
        assert!(w.reserve(1, 60).is_err(), "a second reservation does not fit");
        let b = w.reserve(1, 40).unwrap();
        assert_eq!(w.available(1), 0);
        w.settle(a, 50);
        w.release(b);
        assert_eq!(w.available(1), 50);
        w.committed(1, 50, true);
        assert_eq!(w.available(1), 50);
        // A charge for a request id that was already charged changes nothing.
        let c = w.reserve(1, 10).unwrap();
        w.settle(c, 10);
        w.committed(1, 10, false);
        assert_eq!(w.available(1), 50);
    }

    #[test]
    fn empty_or_negative_balance_refuses_paid_calls_but_not_free_ones() {
        let w = Wallets::default();
        w.set_db_balances([(2, 0)]);
        assert!(w.reserve(2, 1).is_err());
        let free = w.reserve(2, 0).unwrap();
        w.release(free);
        w.set_db_balances([(2, -5)]);
        let e = w.reserve(2, 1).unwrap_err();
        assert_eq!((e.available, e.needed), (-5, 1));
    }
}
