//! Vendor objects a call created (file ids, voice ids) and the upstream key that created
//! each: a follow-up call naming one runs on that key (the object exists only on that vendor
//! account) and only for the consumer who created it.
//!
//! Invariants: a key is stored by fingerprint (a SHA-256 of it), never in the clear; an object
//! id is remembered once per channel (the first creator keeps it: a vendor never reuses ids,
//! so a second claim is a consumer replaying another's id and must not take it over).

use super::Db;
use anyhow::Result;

/// Who created an object, and on which key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Owner {
    pub key_fingerprint: String,
    pub user_id: i64,
}

/// Remembers the objects one call created.
pub async fn remember(
    db: &Db,
    channel: &str,
    objects: &[String],
    owner: &Owner,
    request_id: &str,
    now: i64,
) -> Result<()> {
    for object in objects {
        sqlx::query(
            "INSERT INTO vendor_objects (channel, object_id, key_fingerprint, user_id, request_id, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (channel, object_id) DO NOTHING",
        )
        .bind(channel)
        .bind(object)
        .bind(&owner.key_fingerprint)
        .bind(owner.user_id)
        .bind(request_id)
        .bind(now)
        .execute(db)
        .await?;
    }
    Ok(())
}

/// The creator of `object` on `channel`, if a call through the gateway created it.
pub async fn owner(db: &Db, channel: &str, object: &str) -> Result<Option<Owner>> {
    let row: Option<(String, i64)> =
        sqlx::query_as("SELECT key_fingerprint, user_id FROM vendor_objects WHERE channel = $1 AND object_id = $2")
            .bind(channel)
            .bind(object)
            .fetch_optional(db)
            .await?;
    Ok(row.map(|(key_fingerprint, user_id)| Owner { key_fingerprint, user_id }))
}
