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
