//! Consumers and their API keys.
//!
//! Invariants: a key (`sk-tg-…`) is shown once, at creation, and only its SHA-256 is stored.
//! The request path checks keys against an in-memory map (`KeyCache`) that a background task
//! refreshes from the database, so new and disabled keys take effect within
//! `key_refresh_ms` and a flood of bad keys never reaches the database.

use crate::billing::{Billing, Wallets};
use crate::store::{now_unix, Db};
use anyhow::{bail, Context, Result};
use arc_swap::ArcSwap;
use rand::Rng;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

/// What the request path knows about a consumer key.
#[derive(Debug, Clone)]
pub struct Consumer {
    pub key_id: i64,
    pub name: String,
    /// Unix seconds after which the key is refused.
    pub expires_at: Option<i64>,
    /// The models the key may call; `None`: every model.
    pub models: Option<Arc<[String]>>,
}

impl Consumer {
    pub fn may_use(&self, model: &str) -> bool {
        self.models.as_ref().is_none_or(|m| m.iter().any(|x| x == model))
    }
}

/// The options of a new key.
#[derive(Debug, Default, Clone)]
pub struct NewKey {
    pub name: String,
    /// A decimal amount.
    pub balance: String,
    pub expires_at: Option<i64>,
    pub models: Vec<String>,
}

/// A key as the operator sees it (no secret).
#[derive(Debug, Clone, serde::Serialize)]
pub struct KeyInfo {
    pub id: i64,
    pub name: String,
    pub key_prefix: String,
    pub balance: String,
    pub disabled: bool,
}

/// SHA-256 hashes of enabled keys → consumer.
pub struct KeyCache {
    keys: ArcSwap<HashMap<[u8; 32], Consumer>>,
}

impl KeyCache {
    pub fn new() -> Arc<KeyCache> {
        Arc::new(KeyCache { keys: ArcSwap::from_pointee(HashMap::new()) })
    }

    /// The consumer owning `key`, if it is a known, enabled key.
    pub fn check(&self, key: &str) -> Option<Consumer> {
        self.keys.load().get(&hash(key)).cloned()
    }

    /// Reloads every enabled key from the database, and the balances into `wallets`.
    pub async fn reload(&self, db: &Db, wallets: Option<&Wallets>) -> Result<()> {
        // Held across the read and the update: no charge commits in between.
        let _sync = match wallets {
            Some(w) => Some(w.sync.lock().await),
            None => None,
        };
        type Row = (i64, String, String, i64, Option<i64>, Option<String>);
        let rows: Vec<Row> = sqlx::query_as(
            "SELECT id, name, key_hash, balance_micros, expires_at, models FROM consumer_keys WHERE disabled = 0",
        )
        .fetch_all(db)
        .await?;
        if let Some(w) = wallets {
            w.set_db_balances(rows.iter().map(|r| (r.0, r.3)));
        }
        let mut map = HashMap::with_capacity(rows.len());
        for (key_id, name, key_hash, _, expires_at, models) in rows {
            let models = models.map(|m| m.split(',').map(str::to_string).collect::<Vec<_>>().into());
            let mut h = [0u8; 32];
            if hex::decode_to_slice(&key_hash, &mut h).is_ok() {
                map.insert(h, Consumer { key_id, name, expires_at, models });
            }
        }
        self.keys.store(Arc::new(map));
        Ok(())
    }

    /// Re-reads keys every `every` when the table changed (a cheap fingerprint query).
    pub fn refresh_forever(self: &Arc<Self>, db: Db, every: Duration, billing: Option<Arc<Billing>>) {
        let cache = Arc::clone(self);
        tokio::spawn(async move {
            let mut seen: Option<(i64, i64, i64)> = None;
            loop {
                tokio::time::sleep(every).await;
                // Every change bumps a key's updated_at, so the sum only grows: a change is
                // never mistaken for "no change".
                let fingerprint: Result<(i64, i64, i64), _> = sqlx::query_as(
                    "SELECT COUNT(*), COALESCE(SUM(updated_at), 0), COALESCE(SUM(disabled), 0) FROM consumer_keys",
                )
                .fetch_one(&db)
                .await;
                match fingerprint {
                    Ok(f) if Some(f) == seen => {}
                    Ok(f) => match cache.reload(&db, billing.as_ref().map(|b| &b.wallets)).await {
                        Ok(()) => seen = Some(f),
                        Err(e) => tracing::warn!(error = %e, "reloading consumer keys failed"),
                    },
                    Err(e) => tracing::warn!(error = %e, "checking consumer keys failed"),
                }
            }
        });
    }
}

fn hash(key: &str) -> [u8; 32] {
    Sha256::digest(key.as_bytes()).into()
}

/// Creates a consumer key and returns it; the only time the key exists in clear.
pub async fn create_key(db: &Db, new: &NewKey) -> Result<String> {
    let name = new.name.as_str();
    if name.trim().is_empty() {
        bail!("the key needs a name (--name)");
    }
    if new.models.iter().any(|m| m.is_empty() || m.contains(',')) {
        bail!("model names in the allow-list must be non-empty and contain no comma");
    }
    let balance_micros = parse_money(&new.balance)?;
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    let mut rng = rand::rng();
    let secret: String = (0..40).map(|_| ALPHABET[rng.random_range(0..ALPHABET.len())] as char).collect();
    let key = format!("sk-tg-{secret}");
    let now = now_unix();
    let mut tx = db.begin().await?;
    let (id,): (i64,) = sqlx::query_as(
        "INSERT INTO consumer_keys (name, key_hash, key_prefix, balance_micros, disabled, created_at, updated_at, \
         expires_at, models) VALUES ($1, $2, $3, $4, 0, $5, $5, $6, $7) RETURNING id",
    )
    .bind(name)
    .bind(hex::encode(hash(&key)))
    .bind(&key[..10])
    .bind(balance_micros)
    .bind(now)
    .bind(new.expires_at)
    .bind((!new.models.is_empty()).then(|| new.models.join(",")))
    .fetch_one(&mut *tx)
    .await
    .context("storing the new key")?;
    if balance_micros != 0 {
        sqlx::query(
            "INSERT INTO ledger (entry_id, key_id, amount_micros, kind, created_at) VALUES ($1, $2, $3, 'grant', $4)",
        )
        .bind(format!("grant-{id}"))
        .bind(id)
        .bind(balance_micros)
        .bind(now)
        .execute(&mut *tx)
        .await?;
    }
    tx.commit().await?;
    Ok(key)
}

/// Disables or enables a key; the running gateway refuses or accepts it within
/// `key_refresh_ms`.
pub async fn set_disabled(db: &Db, key_id: i64, disabled: bool) -> Result<()> {
    let updated = sqlx::query("UPDATE consumer_keys SET disabled = $1, updated_at = updated_at + 1 WHERE id = $2")
        .bind(disabled as i64)
        .bind(key_id)
        .execute(db)
        .await?
        .rows_affected();
    if updated != 1 {
        bail!("no consumer key with id {key_id} ('tollgate keys list' shows the ids)");
    }
    Ok(())
}

/// Adds `amount` to a key's balance (a ledger entry and the balance, in one transaction);
/// returns the new balance. The running gateway sees it within `key_refresh_ms`.
pub async fn top_up(db: &Db, key_id: i64, amount: &str) -> Result<String> {
    let micros = parse_money(amount)?;
    let now = now_unix();
    let mut tx = db.begin().await?;
    let updated = sqlx::query(
        "UPDATE consumer_keys SET balance_micros = balance_micros + $1, updated_at = updated_at + 1 WHERE id = $2",
    )
    .bind(micros)
    .bind(key_id)
    .execute(&mut *tx)
    .await?
    .rows_affected();
    if updated != 1 {
        bail!("no consumer key with id {key_id} ('tollgate keys list' shows the ids)");
    }
    let entry = format!("topup-{key_id}-{now}-{:016x}", rand::random::<u64>());
    sqlx::query(
        "INSERT INTO ledger (entry_id, key_id, amount_micros, kind, created_at) VALUES ($1, $2, $3, 'topup', $4)",
    )
    .bind(entry)
    .bind(key_id)
    .bind(micros)
    .bind(now)
    .execute(&mut *tx)
    .await?;
    let (balance,): (i64,) = sqlx::query_as("SELECT balance_micros FROM consumer_keys WHERE id = $1")
        .bind(key_id)
        .fetch_one(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(format_money(balance))
}

pub async fn list_keys(db: &Db) -> Result<Vec<KeyInfo>> {
    let rows: Vec<(i64, String, String, i64, i64)> =
        sqlx::query_as("SELECT id, name, key_prefix, balance_micros, disabled FROM consumer_keys ORDER BY id")
            .fetch_all(db)
            .await?;
    Ok(rows
        .into_iter()
        .map(|(id, name, key_prefix, micros, disabled)| KeyInfo {
            id,
            name,
            key_prefix,
            balance: format_money(micros),
            disabled: disabled != 0,
        })
        .collect())
}

/// Parses a decimal amount ("12", "0.5", "3.000001") into millionths, exactly.
pub fn parse_money(s: &str) -> Result<i64> {
    let s = s.trim();
    let bad = || anyhow::anyhow!("'{s}' is not an amount: use digits with at most 6 decimals, e.g. 12.50");
    let (whole, frac) = s.split_once('.').unwrap_or((s, ""));
    if whole.is_empty()
        || !whole.bytes().all(|b| b.is_ascii_digit())
        || frac.len() > 6
        || !frac.bytes().all(|b| b.is_ascii_digit())
    {
        return Err(bad());
    }
    let whole: i64 = whole.parse().map_err(|_| bad())?;
    let frac: i64 = if frac.is_empty() { 0 } else { format!("{frac:0<6}").parse().map_err(|_| bad())? };
    whole.checked_mul(1_000_000).and_then(|w| w.checked_add(frac)).ok_or_else(bad)
}

pub fn format_money(micros: i64) -> String {
    let sign = if micros < 0 { "-" } else { "" };
    let m = micros.unsigned_abs();
    format!("{sign}{}.{:06}", m / 1_000_000, m % 1_000_000)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn money_is_exact() {
        assert_eq!(parse_money("12").unwrap(), 12_000_000);
        assert_eq!(parse_money("0.1").unwrap(), 100_000);
        assert_eq!(parse_money("3.000001").unwrap(), 3_000_001);
        assert!(parse_money("1.0000001").is_err());
        assert!(parse_money("-1").is_err());
        assert!(parse_money("1e3").is_err());
        assert!(parse_money("").is_err());
        assert!(parse_money("99999999999999999").is_err());
        assert_eq!(format_money(3_000_001), "3.000001");
        assert_eq!(format_money(-5), "-0.000005");
    }
}

/// One key whose balance disagrees with its ledger.
#[derive(Debug)]
pub struct LedgerMismatch {
    pub key_id: i64,
    pub balance_micros: i64,
    pub ledger_micros: i64,
}

/// Checks the money invariants: every balance equals the sum of its ledger entries, and every
/// charge in the ledger has its call record (they are written in one transaction; records
/// older than the retention window are pruned, so only newer charges are checked). Returns
/// the number of keys checked, the mismatches, and the orphan charges.
pub async fn verify_ledger(db: &Db) -> Result<(usize, Vec<LedgerMismatch>, i64)> {
    let rows: Vec<(i64, i64, i64)> = sqlx::query_as(
        "SELECT k.id, k.balance_micros, COALESCE((SELECT SUM(l.amount_micros) FROM ledger l WHERE l.key_id = k.id), 0) \
         FROM consumer_keys k ORDER BY k.id",
    )
    .fetch_all(db)
    .await?;
    let (orphans,): (i64,) = sqlx::query_as(
        "SELECT COUNT(*) FROM ledger l WHERE l.kind = 'charge' \
         AND l.created_at >= (SELECT COALESCE(MIN(created_at), 9223372036854775807) FROM call_log) \
         AND NOT EXISTS (SELECT 1 FROM call_log c WHERE c.request_id = l.entry_id)",
    )
    .fetch_one(db)
    .await?;
    let mismatches = rows
        .iter()
        .filter(|(_, b, l)| b != l)
        .map(|&(key_id, balance_micros, ledger_micros)| LedgerMismatch { key_id, balance_micros, ledger_micros })
        .collect();
    Ok((rows.len(), mismatches, orphans))
}
