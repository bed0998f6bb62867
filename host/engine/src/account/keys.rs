//! Consumer API keys: created for a user, listed without secrets, disabled and enabled.

use super::{hash, parse_money, users};
use crate::store::{now_unix, Db};
use anyhow::{bail, Context, Result};
use rand::Rng;

/// The options of a new key.
#[derive(Debug, Default, Clone)]
pub struct NewKey {
    pub name: String,
    /// The owner; `None`: a user named like the key, created if missing.
    pub user: Option<String>,
    /// Granted to the owner with the key (a ledger entry), a decimal amount.
    pub balance: String,
    /// The most this key may spend, a decimal amount; `None`: the owner's balance only.
    pub limit: Option<String>,
    pub expires_at: Option<i64>,
    pub models: Vec<String>,
}

/// A key as the operator sees it (no secret).
#[derive(Debug, Clone, serde::Serialize)]
pub struct KeyInfo {
    pub id: i64,
    pub name: String,
    pub key_prefix: String,
    /// The owner's balance.
    pub balance: String,
    pub disabled: bool,
    pub user: String,
    pub limit: Option<String>,
    pub spent: String,
}

/// Creates a consumer key and returns it; the only time the key exists in clear.
pub async fn create_key(db: &Db, new: &NewKey) -> Result<String> {
    let name = new.name.as_str();
    if name.trim().is_empty() || name.chars().count() > 64 {
        bail!("the key needs a name (--name) of 1 to 64 characters");
    }
    if new.models.len() > 64 || new.models.iter().any(|m| m.is_empty() || m.contains(',') || m.len() > 128) {
        bail!("the allow-list takes up to 64 model names, each 1 to 128 characters with no comma");
    }
    let grant = parse_money(&new.balance)?;
    let limit = new.limit.as_deref().map(parse_money).transpose()?;
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    let secret: String = {
        let mut rng = rand::rng(); // not Send: dropped before the first await
        (0..40).map(|_| ALPHABET[rng.random_range(0..ALPHABET.len())] as char).collect()
    };
    let key = format!("sk-tg-{secret}");
    let now = now_unix();
    let mut tx = crate::store::begin_write(db).await?;
    let owner = new.user.as_deref().unwrap_or(name);
    let user_id = users::find_or_create(&mut tx, owner, new.user.is_none()).await?;
    let (id,): (i64,) = sqlx::query_as(
        "INSERT INTO consumer_keys (name, key_hash, key_prefix, balance_micros, disabled, created_at, updated_at, \
         expires_at, models, user_id, spend_limit_micros) VALUES ($1, $2, $3, 0, 0, $4, $4, $5, $6, $7, $8) RETURNING id",
    )
    .bind(name)
    .bind(hex::encode(hash(&key)))
    .bind(&key[..10])
    .bind(now)
    .bind(new.expires_at)
    .bind((!new.models.is_empty()).then(|| new.models.join(",")))
    .bind(user_id)
    .bind(limit)
    .fetch_one(&mut *tx)
    .await
    .context("storing the new key")?;
    if grant != 0 {
        users::credit(&mut tx, user_id, Some(id), grant, "grant", &format!("grant-key-{id}")).await?;
    }
    tx.commit().await?;
    Ok(key)
}

/// Disables or enables a key (of `owner` only, when given); the running gateway refuses or
/// accepts it within `key_refresh_ms`.
pub async fn set_disabled(db: &Db, key_id: i64, disabled: bool) -> Result<()> {
    set_disabled_of(db, key_id, None, disabled).await
}

pub async fn set_disabled_of(db: &Db, key_id: i64, owner: Option<i64>, disabled: bool) -> Result<()> {
    let updated = sqlx::query(
        "UPDATE consumer_keys SET disabled = $1, updated_at = updated_at + 1 WHERE id = $2 AND ($3 IS NULL OR user_id = $3)",
    )
    .bind(disabled as i64)
    .bind(key_id)
    .bind(owner)
    .execute(db)
        .await?
        .rows_affected();
    if updated != 1 {
        return Err(super::Refused::NotFound(format!(
            "no consumer key with id {key_id} ('tollgate keys list' shows the ids)"
        ))
        .into());
    }
    Ok(())
}

pub async fn list_keys(db: &Db) -> Result<Vec<KeyInfo>> {
    list_keys_of(db, None).await
}

/// The keys of one user (`Some`), or of everyone.
pub async fn list_keys_of(db: &Db, user_id: Option<i64>) -> Result<Vec<KeyInfo>> {
    type Row = (i64, String, String, i64, i64, String, Option<i64>, i64);
    let rows: Vec<Row> = sqlx::query_as(
        "SELECT k.id, k.name, k.key_prefix, u.balance_micros, k.disabled, u.name, k.spend_limit_micros, k.spent_micros \
         FROM consumer_keys k JOIN users u ON u.id = k.user_id WHERE ($1 IS NULL OR k.user_id = $1) ORDER BY k.id",
    )
    .bind(user_id)
    .fetch_all(db)
    .await?;
    Ok(rows
        .into_iter()
        .map(|(id, name, key_prefix, balance, disabled, user, limit, spent)| KeyInfo {
            id,
            name,
            key_prefix,
            balance: super::format_money(balance),
            disabled: disabled != 0,
            user,
            limit: limit.map(super::format_money),
            spent: super::format_money(spent),
        })
        .collect())
}
