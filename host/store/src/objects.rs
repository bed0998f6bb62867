//! Vendor objects a consumer's call created (file ids, voice ids) and the upstream key that
//! created each: a follow-up call naming one runs on that key (the object exists only on that
//! vendor account), and only for the user who created it.
//!
//! Invariants: a key is stored by fingerprint (a SHA-256 of it), never in the clear; objects
//! are kept per (plugin, user, object id), so one user can never reach, shadow or squat
//! another's object of the same id; an object the user did not create through the gateway
//! is not found (the caller answers 404, never "any key may try").

use super::Db;
use anyhow::Result;

/// Remembers the objects one call of `user_id` created on the key `key_fingerprint`. The same
/// user creating an id again (a vendor reusing it after a delete) moves it to the new key.
pub async fn remember(
    db: &Db,
    plugin: &str,
    user_id: i64,
    objects: &[String],
    key_fingerprint: &str,
    request_id: &str,
    now: i64,
) -> Result<()> {
    for object in objects {
        sqlx::query(
            "INSERT INTO vendor_objects (plugin, user_id, object_id, key_fingerprint, request_id, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (plugin, user_id, object_id) DO UPDATE \
             SET key_fingerprint = excluded.key_fingerprint, request_id = excluded.request_id, created_at = excluded.created_at",
        )
        .bind(plugin)
        .bind(user_id)
        .bind(object)
        .bind(key_fingerprint)
        .bind(request_id)
        .bind(now)
        .execute(db)
        .await?;
    }
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
        remember(&db, "minimax", 1, &ids(&["f1", "f2"]), "key-a", "req-1", 100).await.unwrap();
        remember(&db, "minimax", 1, &ids(&["f3"]), "key-b", "req-2", 200).await.unwrap();
        remember(&db, "minimax", 2, &ids(&["f9"]), "key-a", "req-3", 300).await.unwrap();
        remember(&db, "suno", 1, &ids(&["s1"]), "key-c", "req-4", 400).await.unwrap();

        let owned_by_1 = owned(&db, "minimax", 1, 100).await.unwrap();
        assert_eq!(owned_by_1, vec![("key-b".into(), ids(&["f3"])), ("key-a".into(), ids(&["f1", "f2"]))]);
        assert_eq!(owned(&db, "minimax", 2, 100).await.unwrap(), vec![("key-a".into(), ids(&["f9"]))]);
        assert!(owned(&db, "minimax", 3, 100).await.unwrap().is_empty(), "a user without objects lists none");
        assert_eq!(owned(&db, "minimax", 1, 1).await.unwrap(), vec![("key-b".into(), ids(&["f3"]))], "bounded");

        // The same user creating an id again on another key moves it.
        remember(&db, "minimax", 1, &ids(&["f1"]), "key-b", "req-5", 500).await.unwrap();
        let moved = owned(&db, "minimax", 1, 100).await.unwrap();
        assert_eq!(moved, vec![("key-b".into(), ids(&["f1", "f3"])), ("key-a".into(), ids(&["f2"]))]);
        assert_eq!(key_of(&db, "minimax", 2, "f1").await.unwrap(), None, "another user's object is not found");
    }
}
