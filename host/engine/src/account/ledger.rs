//! The money invariants, checked from the database: every user's balance equals the sum of
//! its ledger entries, every key's spending equals the sum of its charges, and every charge
//! has its call record (written in one transaction; records older than the retention window
//! are pruned, so only newer charges are checked).

use crate::store::Db;
use anyhow::Result;

/// One account whose stored figure disagrees with its ledger.
#[derive(Debug)]
pub struct LedgerMismatch {
    /// "user 3" or "key 7".
    pub account: String,
    pub stored_micros: i64,
    pub ledger_micros: i64,
}

/// Returns the number of users checked, the mismatches, and the orphan charges.
pub async fn verify_ledger(db: &Db) -> Result<(usize, Vec<LedgerMismatch>, i64)> {
    let users: Vec<(i64, i64, i64)> = sqlx::query_as(
        "SELECT u.id, u.balance_micros, CAST(COALESCE((SELECT SUM(l.amount_micros) FROM ledger l WHERE l.user_id = u.id), 0) AS BIGINT) \
         FROM users u ORDER BY u.id",
    )
    .fetch_all(db)
    .await?;
    let keys: Vec<(i64, i64, i64)> = sqlx::query_as(
        "SELECT k.id, k.spent_micros, \
         CAST(COALESCE((SELECT -SUM(l.amount_micros) FROM ledger l WHERE l.key_id = k.id AND l.kind = 'charge'), 0) AS BIGINT) \
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
    let mut mismatches = Vec::new();
    for (what, rows) in [("user", &users), ("key", &keys)] {
        for &(id, stored, ledger) in rows.iter() {
            if stored != ledger {
                mismatches.push(LedgerMismatch {
                    account: format!("{what} {id}"),
                    stored_micros: stored,
                    ledger_micros: ledger,
                });
            }
        }
    }
    Ok((users.len(), mismatches, orphans))
}
