//! Vendor objects a consumer's call created (file ids, voice ids) and the upstream key that
//! created each: a follow-up call naming one runs on that key (the object exists only on that
//! vendor account), and only for the user who created it.
//!
//! Invariants: a key is stored by fingerprint (a SHA-256 of it), never in the clear; objects
//! are kept per (plugin, user, object id), so one user can never reach, shadow or squat
//! another's object of the same id; an object the user did not create through the gateway
//! is not found (the caller answers 404, never "any key may try");
//! - an object's one-time fee is taken by at most one call at a time (`take_fee` is a
//!   conditional update), and given back (`give_back_fee`) when that call is not charged.

use super::Db;
use anyhow::Result;

/// Where one call of a user made its objects: the plugin, the user, the key (by
/// fingerprint), the request id and the op (whose `first_use` fee, if priced, is due on each).
pub struct Made<'a> {
    pub plugin: &'a str,
    pub user_id: i64,
    pub key_fingerprint: &'a str,
    pub request_id: &'a str,
    pub op: &'a str,
    /// The summary of a batch input file the call uploaded (see the engine's `batch`), kept
    /// with the object it created.
    pub batch_input: Option<&'a str>,
}

/// Remembers the objects one call created. The same user creating an id again (a vendor
/// reusing it after a delete) moves it to the new key, its fee due again.
pub async fn remember(db: &Db, made: &Made<'_>, objects: &[String], now: i64) -> Result<()> {
    for object in objects {
        sqlx::query(
            "INSERT INTO vendor_objects \
             (plugin, user_id, object_id, key_fingerprint, request_id, created_at, fee_due_op, batch_input) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT (plugin, user_id, object_id) DO UPDATE \
             SET key_fingerprint = excluded.key_fingerprint, request_id = excluded.request_id, \
             created_at = excluded.created_at, fee_due_op = excluded.fee_due_op, batch_input = excluded.batch_input",
        )
        .bind(made.plugin)
        .bind(made.user_id)
        .bind(object)
        .bind(made.key_fingerprint)
        .bind(made.request_id)
        .bind(now)
        .bind(made.op)
        .bind(made.batch_input)
        .execute(db)
        .await?;
    }
    Ok(())
}

/// The batch input summary kept with `object`, if `user_id` created it: `None` when the user
/// has no such object, `Some(None)` when it is no batch input.
pub async fn batch_input(db: &Db, plugin: &str, user_id: i64, object: &str) -> Result<Option<Option<String>>> {
    let row: Option<(Option<String>,)> =
        sqlx::query_as("SELECT batch_input FROM vendor_objects WHERE plugin = $1 AND user_id = $2 AND object_id = $3")
            .bind(plugin)
            .bind(user_id)
            .bind(object)
            .fetch_optional(db)
            .await?;
    Ok(row.map(|(summary,)| summary))
}

/// A vendor object a call names, as the gateway knows it.
#[derive(Debug, Clone, PartialEq)]
pub struct Known {
    pub object_id: String,
    pub user_id: i64,
    pub key_fingerprint: String,
    /// The op whose one-time fee is still due on it.
    pub fee_due_op: Option<String>,
}

/// Every row, of any user, for these object ids of `plugin` (at most `ids.len()` ids, which
/// the caller bounds): who made each, on which key, and its fee still due.
pub async fn known(db: &Db, plugin: &str, ids: &[String]) -> Result<Vec<Known>> {
    let mut out = Vec::new();
    for id in ids {
        let rows: Vec<(i64, String, Option<String>)> = sqlx::query_as(
            "SELECT user_id, key_fingerprint, fee_due_op FROM vendor_objects WHERE plugin = $1 AND object_id = $2",
        )
        .bind(plugin)
        .bind(id)
        .fetch_all(db)
        .await?;
        out.extend(rows.into_iter().map(|(user_id, key_fingerprint, fee_due_op)| Known {
            object_id: id.clone(),
            user_id,
            key_fingerprint,
            fee_due_op,
        }));
    }
    Ok(out)
}

/// Takes `object`'s due fee for one call: true when this call took it (no other call holds
/// or has paid it).
pub async fn take_fee(db: &Db, plugin: &str, user_id: i64, object: &str, op: &str) -> Result<bool> {
    let done = sqlx::query(
        "UPDATE vendor_objects SET fee_due_op = NULL \
         WHERE plugin = $1 AND user_id = $2 AND object_id = $3 AND fee_due_op = $4",
    )
    .bind(plugin)
    .bind(user_id)
    .bind(object)
    .bind(op)
    .execute(db)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Gives a taken fee back: the call that took it was not charged, so the next use owes it.
pub async fn give_back_fee(db: &Db, plugin: &str, user_id: i64, object: &str, op: &str) -> Result<()> {
    sqlx::query(
        "UPDATE vendor_objects SET fee_due_op = $4 \
         WHERE plugin = $1 AND user_id = $2 AND object_id = $3 AND fee_due_op IS NULL",
    )
    .bind(plugin)
    .bind(user_id)
    .bind(object)
    .bind(op)
    .execute(db)
    .await?;
    Ok(())
}

/// The fingerprint of the key that created `object` for `user_id`, if that user created it.
pub async fn key_of(db: &Db, plugin: &str, user_id: i64, object: &str) -> Result<Option<String>> {
    let row: Option<(String,)> = sqlx::query_as(
        "SELECT key_fingerprint FROM vendor_objects WHERE plugin = $1 AND user_id = $2 AND object_id = $3",
    )
    .bind(plugin)
    .bind(user_id)
    .bind(object)
    .fetch_optional(db)
    .await?;
    Ok(row.map(|(k,)| k))
}

/// The objects `user_id` created, newest first (at most `limit`), grouped by the key that
/// created them: the keys in the order of their newest object.
pub async fn owned(db: &Db, plugin: &str, user_id: i64, limit: i64) -> Result<Vec<(String, Vec<String>)>> {
    let rows: Vec<(String, String)> = sqlx::query_as(
        "SELECT key_fingerprint, object_id FROM vendor_objects WHERE plugin = $1 AND user_id = $2 \
         ORDER BY created_at DESC, object_id LIMIT $3",
    )
    .bind(plugin)
    .bind(user_id)
    .bind(limit)
    .fetch_all(db)
    .await?;
    let mut keys: Vec<(String, Vec<String>)> = Vec::new();
    for (key, object) in rows {
        match keys.iter_mut().find(|(k, _)| *k == key) {
            Some((_, objects)) => objects.push(object),
            None => keys.push((key, vec![object])),
        }
    }
    Ok(keys)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_listing_reads_only_its_users_objects_grouped_by_key_newest_first_and_bounded() {
        let db = crate::open_for_test("objects").await;
        let ids = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let made = |plugin, user_id, key_fingerprint, request_id| Made {
            plugin,
            user_id,
            key_fingerprint,
            request_id,
            op: "upload",
            batch_input: None,
        };
        remember(&db, &made("minimax", 1, "key-a", "req-1"), &ids(&["f1", "f2"]), 100).await.unwrap();
        remember(&db, &made("minimax", 1, "key-b", "req-2"), &ids(&["f3"]), 200).await.unwrap();
        remember(&db, &made("minimax", 2, "key-a", "req-3"), &ids(&["f9"]), 300).await.unwrap();
        remember(&db, &made("suno", 1, "key-c", "req-4"), &ids(&["s1"]), 400).await.unwrap();

        let owned_by_1 = owned(&db, "minimax", 1, 100).await.unwrap();
        assert_eq!(owned_by_1, vec![("key-b".into(), ids(&["f3"])), ("key-a".into(), ids(&["f1", "f2"]))]);
        assert_eq!(owned(&db, "minimax", 2, 100).await.unwrap(), vec![("key-a".into(), ids(&["f9"]))]);
        assert!(owned(&db, "minimax", 3, 100).await.unwrap().is_empty(), "a user without objects lists none");
        assert_eq!(owned(&db, "minimax", 1, 1).await.unwrap(), vec![("key-b".into(), ids(&["f3"]))], "bounded");

        // The same user creating an id again on another key moves it.
        remember(&db, &made("minimax", 1, "key-b", "req-5"), &ids(&["f1"]), 500).await.unwrap();
        let moved = owned(&db, "minimax", 1, 100).await.unwrap();
        assert_eq!(moved, vec![("key-b".into(), ids(&["f1", "f3"])), ("key-a".into(), ids(&["f2"]))]);
        assert_eq!(key_of(&db, "minimax", 2, "f1").await.unwrap(), None, "another user's object is not found");
    }

    #[tokio::test]
    async fn a_batch_inputs_summary_is_read_by_its_maker_only() {
        let db = crate::open_for_test("batch_inputs").await;
        let made = Made {
            plugin: "siliconflow",
            user_id: 1,
            key_fingerprint: "key-a",
            request_id: "r1",
            op: "upload",
            batch_input: Some(r#"{"model":"m"}"#),
        };
        remember(&db, &made, &["file-1".to_string()], 100).await.unwrap();
        remember(&db, &Made { batch_input: None, request_id: "r2", ..made }, &["file-2".to_string()], 100)
            .await
            .unwrap();
        let read = |user, object: &'static str| batch_input(&db, "siliconflow", user, object);
        assert_eq!(read(1, "file-1").await.unwrap(), Some(Some(r#"{"model":"m"}"#.to_string())));
        assert_eq!(read(1, "file-2").await.unwrap(), Some(None), "an object that is no batch input");
        assert_eq!(read(2, "file-1").await.unwrap(), None, "another user's file is not found");
        assert_eq!(batch_input(&db, "minimax", 1, "file-1").await.unwrap(), None, "nor another plugin's");
    }

    #[tokio::test]
    async fn a_fee_is_taken_by_one_call_given_back_when_unpaid_and_due_again_on_a_new_object() {
        let db = crate::open_for_test("object_fees").await;
        let voice = vec!["v1".to_string()];
        let made = Made {
            plugin: "minimax",
            user_id: 1,
            key_fingerprint: "key-a",
            request_id: "r1",
            op: "clone",
            batch_input: None,
        };
        remember(&db, &made, &voice, 100).await.unwrap();
        let found = known(&db, "minimax", &voice).await.unwrap();
        assert_eq!(
            found,
            vec![Known {
                object_id: "v1".into(),
                user_id: 1,
                key_fingerprint: "key-a".into(),
                fee_due_op: Some("clone".into())
            }]
        );
        assert!(known(&db, "minimax", &["stock-voice".to_string()]).await.unwrap().is_empty());

        assert!(!take_fee(&db, "minimax", 2, "v1", "clone").await.unwrap(), "only its owner's calls take it");
        assert!(!take_fee(&db, "minimax", 1, "v1", "design").await.unwrap(), "only the fee that is due");
        assert!(take_fee(&db, "minimax", 1, "v1", "clone").await.unwrap());
        assert!(!take_fee(&db, "minimax", 1, "v1", "clone").await.unwrap(), "one call at a time");
        give_back_fee(&db, "minimax", 1, "v1", "clone").await.unwrap();
        assert!(take_fee(&db, "minimax", 1, "v1", "clone").await.unwrap(), "due again once given back");
        assert_eq!(known(&db, "minimax", &voice).await.unwrap()[0].fee_due_op, None, "paid");

        // Made again (a vendor reusing the id after a delete): a new object, its fee due.
        remember(&db, &Made { request_id: "r2", ..made }, &voice, 200).await.unwrap();
        assert_eq!(known(&db, "minimax", &voice).await.unwrap()[0].fee_due_op.as_deref(), Some("clone"));
    }
}
