//! Users, their consumer API keys, and the money on their accounts.
//!
//! A user owns the balance; a key belongs to a user and may carry its own spending limit,
//! an expiry and a model allow-list. Every change of a balance is a ledger entry
//! (`ledger.rs` checks the invariants).
//!
//! Invariants: a key (`sk-tg-…`) is shown once, at creation, and only its SHA-256 is stored.
//! The request path checks keys against an in-memory map (`KeyCache`) that a background task
//! refreshes from the database, so new and disabled keys take effect within
//! `key_refresh_ms` and a flood of bad keys never reaches the database.

mod keys;
mod ledger;
pub mod session;
mod users;

pub use keys::{create_key, list_keys, list_keys_of, set_disabled, set_disabled_of, KeyInfo, NewKey};
pub use ledger::{verify_ledger, LedgerMismatch};
pub use users::{
    create_user, credentials, get_user, list_users, session_holder, set_user_disabled, top_up, top_up_key, NewUser,
    UserInfo,
};

use crate::billing::{Account, Billing, Wallets};
use crate::store::Db;
use anyhow::Result;
use arc_swap::ArcSwap;
use sha2::{Digest, Sha256};
use std::sync::Arc;

/// What the request path knows about a consumer key.
#[derive(Debug, Clone)]
pub struct Consumer {
    pub key_id: i64,
    pub name: String,
    /// The user whose balance pays.
    pub user_id: i64,
    /// The user's pricing group.
    pub group: Arc<str>,
    /// The key has a spending limit of its own.
    pub limited: bool,
    /// Unix seconds after which the key is refused.
    pub expires_at: Option<i64>,
    /// The models the key may call; `None`: every model.
    pub models: Option<Arc<[String]>>,
}

impl Consumer {
    /// The key's expiry has passed at `now` (unix seconds): it is refused.
    pub fn expired(&self, now: i64) -> bool {
        self.expires_at.is_some_and(|t| now >= t)
    }

    pub fn may_use(&self, model: &str) -> bool {
        self.models.as_ref().is_none_or(|m| m.iter().any(|x| x == model))
    }

    /// The wallet accounts a call of this key draws on.
    pub fn accounts(&self) -> Vec<Account> {
        let mut a = vec![Account::User(self.user_id)];
        if self.limited {
            a.push(Account::KeyLimit(self.key_id));
        }
        a
    }
}

/// SHA-256 hashes of enabled keys → consumer.
pub struct KeyCache {
    keys: ArcSwap<crate::FastMap<[u8; 32], Consumer>>,
}

impl KeyCache {
    pub fn new() -> Arc<KeyCache> {
        Arc::new(KeyCache { keys: ArcSwap::from_pointee(crate::FastMap::default()) })
    }

    /// The consumer owning `key`, if it is a known, enabled key.
    pub fn check(&self, key: &str) -> Option<Consumer> {
        self.keys.load().get(&hash(key)).cloned()
    }

    /// The consumer of enabled key `key_id` (a scan: for task tokens, not the request path).
    pub fn by_id(&self, key_id: i64) -> Option<Consumer> {
        self.keys.load().values().find(|c| c.key_id == key_id).cloned()
    }

    /// Reloads every enabled key from the database, and the balances into `wallets`.
    pub async fn reload(&self, db: &Db, wallets: Option<&Wallets>) -> Result<()> {
        // Held across the read and the update: no charge commits in between.
        let _sync = match wallets {
            Some(w) => Some(w.sync.lock().await),
            None => None,
        };
        type Row = (i64, String, String, Option<i64>, Option<String>, i64, String, i64, Option<i64>, i64);
        let rows: Vec<Row> = sqlx::query_as(
            "SELECT k.id, k.name, k.key_hash, k.expires_at, k.models, u.id, u.user_group, u.balance_micros, \
             k.spend_limit_micros, k.spent_micros \
             FROM consumer_keys k JOIN users u ON u.id = k.user_id WHERE k.disabled = 0 AND u.disabled = 0",
        )
        .fetch_all(db)
        .await?;
        if let Some(w) = wallets {
            w.set_db_balances(rows.iter().map(|r| (Account::User(r.5), r.7)));
            w.set_db_balances(rows.iter().filter_map(|r| r.8.map(|limit| (Account::KeyLimit(r.0), limit - r.9))));
        }
        let mut map = crate::FastMap::with_capacity_and_hasher(rows.len(), Default::default());
        for (key_id, name, key_hash, expires_at, models, user_id, group, _, limit, _) in rows {
            let models = models.map(|m| m.split(',').map(str::to_string).collect::<Vec<_>>().into());
            let mut h = [0u8; 32];
            if hex::decode_to_slice(&key_hash, &mut h).is_ok() {
                let consumer = Consumer {
                    key_id,
                    name,
                    user_id,
                    group: group.into(),
                    limited: limit.is_some(),
                    expires_at,
                    models,
                };
                map.insert(h, consumer);
            }
        }
        self.keys.store(Arc::new(map));
        Ok(())
    }

    /// Re-reads keys every `every` when the table changed (a cheap fingerprint query).
    /// Reloads the keys if the keys, users or balances changed since the last look (a job
    /// calls this every `key_refresh_ms`). `seen` is the fingerprint of the last load.
    pub async fn refresh(&self, db: &Db, billing: Option<&Billing>, seen: &mut Option<(i64, i64, i64, i64)>) {
        // Every change bumps a key's updated_at, so the sum only grows: a change is never
        // mistaken for "no change". The balances' sum catches charges written by other nodes
        // sharing the database.
        let fingerprint: Result<(i64, i64, i64, i64), _> = sqlx::query_as(
            "SELECT (SELECT COUNT(*) FROM consumer_keys) + (SELECT COUNT(*) FROM users), \
             CAST((SELECT COALESCE(SUM(updated_at), 0) FROM consumer_keys) + (SELECT COALESCE(SUM(updated_at), 0) FROM users) AS BIGINT), \
             CAST((SELECT COALESCE(SUM(disabled), 0) FROM consumer_keys) + (SELECT COALESCE(SUM(disabled), 0) FROM users) AS BIGINT), \
             CAST((SELECT COALESCE(SUM(balance_micros), 0) FROM users) AS BIGINT)",
        )
        .fetch_one(db)
        .await;
        match fingerprint {
            Ok(f) if Some(f) == *seen => {}
            Ok(f) => match self.reload(db, billing.map(|b| &b.wallets)).await {
                Ok(()) => *seen = Some(f),
                Err(e) => tracing::warn!(error = %e, "reloading consumer keys failed"),
            },
            Err(e) => tracing::warn!(error = %e, "checking consumer keys failed"),
        }
    }
}

pub(crate) fn hash(key: &str) -> [u8; 32] {
    Sha256::digest(key.as_bytes()).into()
}

/// Parses a decimal amount ("12", "0.5", "3.000001") into micros, exactly (`money::parse`).
pub fn parse_money(s: &str) -> Result<i64> {
    tollgate_base::money::parse(s).map_err(anyhow::Error::msg)
}

pub use tollgate_base::money::format as format_money;

/// Why an account change was refused, when it is the request's fault: what it names does not
/// exist, or exists already (the admin API answers 404 and 409; other failures are 400).
#[derive(Debug)]
pub enum Refused {
    NotFound(String),
    Taken(String),
}

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Refused::NotFound(m) | Refused::Taken(m) => f.write_str(m),
        }
    }
}

impl std::error::Error for Refused {}
