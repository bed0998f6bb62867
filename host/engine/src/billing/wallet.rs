//! Balances on the request path: reserve before the upstream is called, settle after, never
//! wait on the database.
//!
//! An account is a user's balance, or a consumer key's spending limit (what is left of it).
//! Per account the wallet holds `db_balance` (what the database has, including every committed
//! charge), `pending` (charges settled but not yet committed by the writer) and `reserved`
//! (upper bounds of calls in flight). A call may start only if its reservation fits in
//! `db_balance - pending - reserved` of **every** account it draws on (the user, and the key
//! when the key has a limit); so concurrent calls never overdraw by more than what one call
//! costs beyond its own reservation.
//!
//! Arithmetic saturates: a charge is at most `pricing::MAX_CHARGE_MICROS`, so the sums never
//! come near the limits, and an absurd figure can never wrap a balance into a large positive.
//!
//! Consistency with the database: the writer commits a charge (ledger row + balances in one
//! transaction, idempotent by request id) and then calls `committed`, which moves the amount
//! from `pending` into `db_balance`; the periodic refresh (for top-ups made elsewhere) and the
//! writer take the same `sync` lock, so a refresh can never overwrite a charge that was
//! committed after its read.

use std::sync::{Arc, Mutex};

/// What a charge is drawn from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Account {
    User(i64),
    /// A consumer key's spending limit.
    KeyLimit(i64),
}

#[derive(Debug, Default, Clone, Copy)]
struct WalletState {
    db_balance: i64,
    pending: i64,
    reserved: i64,
}

impl WalletState {
    fn available(&self) -> i64 {
        self.db_balance.saturating_sub(self.pending).saturating_sub(self.reserved)
    }
}

type State = Arc<Mutex<crate::FastMap<Account, WalletState>>>;

#[derive(Default)]
pub struct Wallets {
    state: State,
    /// Serialises "read the database, apply" (refresh) with "commit, apply" (writer).
    pub sync: tokio::sync::Mutex<()>,
}

/// A reservation held by one call on one or two accounts; give it back with `settle` or
/// `release`. Dropped without either (a call that panicked, a path that forgot), it releases
/// itself: a reservation is always returned.
#[must_use = "a reservation must be settled or released"]
pub struct Reservation {
    pub accounts: Vec<Account>,
    pub amount: i64,
    wallets: State,
    /// Settled or released: nothing left to give back.
    ended: bool,
}

impl std::fmt::Debug for Reservation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reservation").field("accounts", &self.accounts).field("amount", &self.amount).finish()
    }
}

impl Reservation {
    /// Returns the reservation and adds `charge` as pending, once.
    fn end(&mut self, charge: i64) {
        if std::mem::replace(&mut self.ended, true) {
            return;
        }
        let mut map = self.wallets.lock().unwrap_or_else(|e| e.into_inner());
        for account in &self.accounts {
            let w = map.entry(*account).or_default();
            w.reserved = w.reserved.saturating_sub(self.amount);
            w.pending = w.pending.saturating_add(charge);
        }
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        if !self.ended {
            tracing::warn!(amount = self.amount, "a call ended without settling its reservation: released");
            self.end(0);
        }
    }
}

/// An account cannot cover the call.
#[derive(Debug, Clone, Copy)]
pub struct Insufficient {
    pub account: Account,
    pub available: i64,
    pub needed: i64,
}

impl Wallets {
    /// Reserves `amount` micros on every account, or on none.
    pub fn reserve(&self, accounts: &[Account], amount: i64) -> Result<Reservation, Insufficient> {
        let mut map = self.state.lock().expect("wallets");
        for &account in accounts {
            let available = map.get(&account).copied().unwrap_or_default().available();
            if amount > available || (available <= 0 && amount > 0) {
                return Err(Insufficient { account, available, needed: amount });
            }
        }
        for &account in accounts {
            let w = map.entry(account).or_default();
            w.reserved = w.reserved.saturating_add(amount);
        }
        Ok(Reservation { accounts: accounts.to_vec(), amount, wallets: Arc::clone(&self.state), ended: false })
    }

    /// Ends a call that costs nothing (it failed): the reservation is returned.
    pub fn release(&self, mut r: Reservation) {
        r.end(0);
    }

    /// Ends a call that costs `charge`: the reservation is returned and the charge is pending
    /// until the writer commits it.
    pub fn settle(&self, mut r: Reservation, charge: i64) {
        r.end(charge);
    }

    /// A charge (or, negative, a refund) committed to the database by someone else than the
    /// writer (a task's hold and settlement, written with the task): applied to the accounts
    /// the wallet holds; one it does not hold (a key without a limit) has nothing to follow.
    /// Call under `sync`, like the writer, so that a refresh cannot undo it.
    pub fn apply_committed(&self, accounts: &[Account], charge: i64) {
        let mut map = self.state.lock().expect("wallets");
        for account in accounts {
            if let Some(w) = map.get_mut(account) {
                w.db_balance = w.db_balance.saturating_sub(charge);
            }
        }
    }

    /// The writer committed `charge` on `account` (`applied`: the ledger took it; false when
    /// the request id had been charged already, so the database did not change).
    pub fn committed(&self, account: Account, charge: i64, applied: bool) {
        let mut map = self.state.lock().expect("wallets");
        let w = map.entry(account).or_default();
        w.pending = w.pending.saturating_sub(charge);
        if applied {
            w.db_balance = w.db_balance.saturating_sub(charge);
        }
    }

    /// Sets the database balances read by a refresh (call with `sync` held).
    pub fn set_db_balances(&self, balances: impl IntoIterator<Item = (Account, i64)>) {
        let mut map = self.state.lock().expect("wallets");
        for (account, balance) in balances {
            map.entry(account).or_default().db_balance = balance;
        }
    }

    /// What the account can still spend now.
    pub fn available(&self, account: Account) -> i64 {
        self.state.lock().expect("wallets").get(&account).map(WalletState::available).unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    const U: Account = Account::User(1);
    const K: Account = Account::KeyLimit(7);

    #[test]
    fn reservations_bound_concurrent_spending() {
        let w = Wallets::default();
        w.set_db_balances([(U, 100)]);
        let a = w.reserve(&[U], 60).unwrap();
        assert!(w.reserve(&[U], 60).is_err(), "a second reservation does not fit");
        let b = w.reserve(&[U], 40).unwrap();
        assert_eq!(w.available(U), 0);
        w.settle(a, 50);
        w.release(b);
        assert_eq!(w.available(U), 50);
        w.committed(U, 50, true);
        assert_eq!(w.available(U), 50);
        // A charge for a request id that was already charged changes nothing.
        let c = w.reserve(&[U], 10).unwrap();
        w.settle(c, 10);
        w.committed(U, 10, false);
        assert_eq!(w.available(U), 50);
    }

    #[test]
    fn a_key_limit_binds_with_the_user_balance() {
        let w = Wallets::default();
        w.set_db_balances([(U, 1_000), (K, 30)]);
        let e = w.reserve(&[U, K], 40).unwrap_err();
        assert_eq!((e.account, e.available), (K, 30));
        assert_eq!(w.available(U), 1_000, "nothing reserved when one account refuses");
        let r = w.reserve(&[U, K], 30).unwrap();
        w.settle(r, 20);
        assert_eq!((w.available(U), w.available(K)), (980, 10));
        assert!(w.reserve(&[U], 900).is_ok(), "another key of the user is not bound by this key's limit");
    }

    #[test]
    fn a_reservation_dropped_without_an_end_is_released() {
        let w = Wallets::default();
        w.set_db_balances([(U, 100)]);
        let r = w.reserve(&[U], 60).unwrap();
        assert_eq!(w.available(U), 40);
        let panicked = std::thread::scope(|s| {
            s.spawn(move || {
                let _held = r;
                panic!("a call's task panicked");
            })
            .join()
        });
        assert!(panicked.is_err());
        assert_eq!(w.available(U), 100, "given back when the call's task died");
        let r = w.reserve(&[U], 60).unwrap();
        w.settle(r, 10);
        assert_eq!(w.available(U), 90, "settled once, not released again on drop");
    }

    #[test]
    fn empty_or_negative_balance_refuses_paid_calls_but_not_free_ones() {
        let w = Wallets::default();
        w.set_db_balances([(Account::User(2), 0)]);
        assert!(w.reserve(&[Account::User(2)], 1).is_err());
        let free = w.reserve(&[Account::User(2)], 0).unwrap();
        w.release(free);
        w.set_db_balances([(Account::User(2), -5)]);
        let e = w.reserve(&[Account::User(2)], 1).unwrap_err();
        assert_eq!((e.available, e.needed), (-5, 1));
    }
}
