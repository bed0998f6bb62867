//! Idempotency keys, in the database so that every node sees them.
//!
//! Invariants:
//! - a call with an `Idempotency-Key` claims `(consumer key, Idempotency-Key)` **before** the
//!   upstream is called; only the claimant runs the upstream;
//! - a repeat of a claimed key gets the stored answer, or `InProgress`, or `Mismatch` (another
//!   operation or body): never a second upstream call, so never a free one;
//! - a call that cost nothing (refused, failed) gives its claim up, so the client may retry;
//! - a claim left in progress (a crash) is taken over after `STALE_CLAIM_SECS`; every claim
//!   expires after `KEEP_SECS`. Each execution has its own request id, so a takeover that runs
//!   the upstream again is charged again.

use super::Db;
use anyhow::Result;

/// How long an answered key is kept (as the APIs consumers know do: a day).
pub const KEEP_SECS: i64 = 86_400;
/// A claim still in progress after this long was abandoned by a node that died.
pub const STALE_CLAIM_SECS: i64 = 3_600;
/// The largest answer kept for replay; a larger one is remembered as "answered, not kept".
pub const MAX_STORED_BYTES: usize = 4 << 20;

const IN_PROGRESS: i64 = 0;
const STORED: i64 = 1;
const NOT_KEPT: i64 = 2;

/// An answer as it is replayed.
#[derive(Debug, Clone)]
pub struct Stored {
    pub status: u16,
    pub content_type: Option<String>,
    pub body: Vec<u8>,
    /// The request id of the call that produced it.
    pub request_id: String,
}

/// What a claim found.
#[derive(Debug)]
pub enum Claim {
    /// This call owns the key: run it, then `complete` or `give_up`.
    Claimed,
    /// Another call with this key has not finished.
    InProgress,
    /// The key was used for another operation or body.
    Mismatch,
    /// Answered before: replay it (`None`: the answer was a download or too large to keep).
    Answered(Option<Stored>),
}

/// Claims `idem_key` for `key_id`, or reports what holds it.
pub async fn claim(
    db: &Db,
    key_id: i64,
    idem_key: &str,
    fingerprint: &str,
    request_id: &str,
    now: i64,
) -> Result<Claim> {
    sqlx::query(
        "DELETE FROM idempotency WHERE key_id = $1 AND idem_key = $2 AND (created_at < $3 OR (state = $4 AND created_at < $5))",
    )
    .bind(key_id)
    .bind(idem_key)
    .bind(now - KEEP_SECS)
    .bind(IN_PROGRESS)
    .bind(now - STALE_CLAIM_SECS)
    .execute(db)
    .await?;
    let inserted = sqlx::query_as::<_, (i64,)>(
        "INSERT INTO idempotency (key_id, idem_key, fingerprint, request_id, state, created_at) \
         VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (key_id, idem_key) DO NOTHING RETURNING key_id",
    )
    .bind(key_id)
    .bind(idem_key)
    .bind(fingerprint)
    .bind(request_id)
    .bind(IN_PROGRESS)
    .bind(now)
    .fetch_optional(db)
    .await?;
    if inserted.is_some() {
        return Ok(Claim::Claimed);
    }
    type Row = (String, String, i64, Option<i64>, Option<String>, Option<Vec<u8>>);
    let row: Option<Row> = sqlx::query_as(
        "SELECT fingerprint, request_id, state, status, content_type, body FROM idempotency \
         WHERE key_id = $1 AND idem_key = $2",
    )
    .bind(key_id)
    .bind(idem_key)
    .fetch_optional(db)
    .await?;
    // Gone between the insert and the read (its call gave it up): report it as in progress,
    // the client's retry will claim it.
    let Some((stored_fingerprint, request_id, state, status, content_type, body)) = row else {
        return Ok(Claim::InProgress);
    };
    if stored_fingerprint != fingerprint {
        return Ok(Claim::Mismatch);
    }
    Ok(match state {
        IN_PROGRESS => Claim::InProgress,
        STORED => Claim::Answered(Some(Stored {
            status: status.and_then(|s| u16::try_from(s).ok()).unwrap_or(200),
            content_type,
            body: body.unwrap_or_default(),
            request_id,
        })),
        _ => Claim::Answered(None),
    })
}

/// Stores the answer of the call that holds the claim (`None`: answered, but not kept). Only
/// the claim's own call (`request_id`) can complete it: one that lost it to a takeover cannot.
pub async fn complete(
    db: &Db,
    key_id: i64,
    idem_key: &str,
    request_id: &str,
    answer: Option<(u16, Option<&str>, &[u8])>,
) -> Result<()> {
    let answer = answer.filter(|(_, _, body)| body.len() <= MAX_STORED_BYTES);
    let state = if answer.is_some() { STORED } else { NOT_KEPT };
    sqlx::query(
        "UPDATE idempotency SET state = $1, status = $2, content_type = $3, body = $4 \
         WHERE key_id = $5 AND idem_key = $6 AND request_id = $7",
    )
    .bind(state)
    .bind(answer.map(|(status, _, _)| status as i64))
    .bind(answer.and_then(|(_, ct, _)| ct.map(str::to_string)))
    .bind(answer.map(|(_, _, body)| body.to_vec()))
    .bind(key_id)
    .bind(idem_key)
    .bind(request_id)
    .execute(db)
    .await?;
    Ok(())
}

/// Gives a claim up: the call cost nothing, a retry may run it (only the claim's own call).
pub async fn give_up(db: &Db, key_id: i64, idem_key: &str, request_id: &str) -> Result<()> {
    sqlx::query("DELETE FROM idempotency WHERE key_id = $1 AND idem_key = $2 AND state = $3 AND request_id = $4")
        .bind(key_id)
        .bind(idem_key)
        .bind(IN_PROGRESS)
        .bind(request_id)
        .execute(db)
        .await?;
    Ok(())
}

/// Deletes expired keys.
pub async fn prune(db: &Db, now: i64) -> Result<u64> {
    Ok(sqlx::query("DELETE FROM idempotency WHERE created_at < $1")
        .bind(now - KEEP_SECS)
        .execute(db)
        .await?
        .rows_affected())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn one_claim_per_key_then_the_stored_answer_and_expired_claims_are_taken_over() {
        let db = crate::open_for_test("idempotency").await;
        let t = 1_000_000;
        let claimed = |c: &Claim| matches!(c, Claim::Claimed);
        assert!(claimed(&claim(&db, 1, "k", "f1", "req-1", t).await.unwrap()));
        assert!(matches!(claim(&db, 1, "k", "f1", "req-2", t).await.unwrap(), Claim::InProgress));
        assert!(matches!(claim(&db, 1, "k", "f2", "req-2", t).await.unwrap(), Claim::Mismatch));
        assert!(claimed(&claim(&db, 2, "k", "f1", "req-3", t).await.unwrap()), "keys are per consumer key");

        complete(&db, 1, "k", "req-1", Some((200, Some("application/json"), b"{\"ok\":1}"))).await.unwrap();
        match claim(&db, 1, "k", "f1", "req-4", t + 10).await.unwrap() {
            Claim::Answered(Some(s)) => {
                assert_eq!(
                    (s.status, s.content_type.as_deref(), s.request_id.as_str()),
                    (200, Some("application/json"), "req-1")
                );
                assert_eq!(s.body, b"{\"ok\":1}");
            }
            other => panic!("{other:?}"),
        }
        // An answer too large to keep is remembered as answered, never run again.
        assert!(claimed(&claim(&db, 1, "big", "f", "req-5", t).await.unwrap()));
        complete(&db, 1, "big", "req-5", Some((200, None, &vec![0u8; MAX_STORED_BYTES + 1]))).await.unwrap();
        assert!(matches!(claim(&db, 1, "big", "f", "req-6", t).await.unwrap(), Claim::Answered(None)));

        // Given up (the call was free): a retry claims it; a stale claim is taken over; a day
        // later the key is free again.
        give_up(&db, 2, "k", "req-3").await.unwrap();
        assert!(claimed(&claim(&db, 2, "k", "f1", "req-7", t).await.unwrap()));
        assert!(matches!(
            claim(&db, 2, "k", "f1", "req-8", t + STALE_CLAIM_SECS - 1).await.unwrap(),
            Claim::InProgress
        ));
        assert!(claimed(&claim(&db, 2, "k", "f1", "req-9", t + STALE_CLAIM_SECS + 1).await.unwrap()));
        // The call that lost its claim to the takeover can neither give it up nor complete it.
        give_up(&db, 2, "k", "req-7").await.unwrap();
        complete(&db, 2, "k", "req-7", Some((200, None, b"stale"))).await.unwrap();
        let later = t + STALE_CLAIM_SECS + 2;
        assert!(matches!(claim(&db, 2, "k", "f1", "req-10", later).await.unwrap(), Claim::InProgress));
        assert!(claimed(&claim(&db, 1, "k", "other", "req-11", t + KEEP_SECS + 1).await.unwrap()));
        assert!(prune(&db, t + 10 * KEEP_SECS).await.unwrap() >= 2);
    }
}
