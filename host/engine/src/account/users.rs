//! Users: who owns keys and the balance. Every balance change is a ledger entry written in the
//! same transaction as the balance.

use super::{format_money, parse_money};
use crate::store::{now_unix, Db};
use anyhow::{bail, Result};
use sqlx::{Any, Transaction};

#[derive(Debug, Clone, Default)]
pub struct NewUser {
    pub name: String,
    /// Already hashed (argon2id), or `None`: the user cannot log in.
    pub password_hash: Option<String>,
    /// "admin" or "user".
    pub role: String,
    pub group: String,
    /// A decimal amount granted at creation.
    pub balance: String,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct UserInfo {
    pub id: i64,
    pub name: String,
    pub role: String,
    pub group: String,
    pub balance: String,
    pub disabled: bool,
}

pub async fn create_user(db: &Db, new: &NewUser) -> Result<i64> {
    if new.name.trim().is_empty() {
        bail!("the user needs a name");
    }
    if !new.group.is_empty() && new.group.trim().is_empty() {
        bail!("a group needs a name (leave it out for 'default')");
    }
    if !matches!(new.role.as_str(), "admin" | "user") {
        bail!("role must be 'admin' or 'user'");
    }
    let grant = parse_money(&new.balance)?;
    let now = now_unix();
    let mut tx = crate::store::begin_write(db).await?;
    let (id,): (i64,) = sqlx::query_as(
        "INSERT INTO users (name, password_hash, role, user_group, balance_micros, disabled, created_at, updated_at) \
         VALUES ($1, $2, $3, $4, 0, 0, $5, $5) RETURNING id",
    )
    .bind(&new.name)
    .bind(&new.password_hash)
    .bind(&new.role)
    .bind(if new.group.is_empty() { "default" } else { new.group.as_str() })
    .bind(now)
    .fetch_one(&mut *tx)
    .await
    .map_err(|e| match &e {
        sqlx::Error::Database(d) if d.is_unique_violation() || d.message().to_ascii_lowercase().contains("unique") => {
            anyhow::Error::new(super::Refused::Taken(format!("a user named '{}' exists already", new.name)))
        }
        _ => anyhow::Error::new(e).context(format!("creating user '{}'", new.name)),
    })?;
    if grant != 0 {
        credit(&mut tx, id, None, grant, "grant", &format!("grant-user-{id}")).await?;
    }
    tx.commit().await?;
    Ok(id)
}

/// The id of the user `name`; created (no password, role user) if `create` and missing.
/// With `create`, an existing user that signs in with a password (it registered, or an admin
/// gave it one) is refused: a key named like a user must never hand that user the key and
/// its grant unless the operator names the owner (`--user`).
pub(super) async fn find_or_create(tx: &mut Transaction<'_, Any>, name: &str, create: bool) -> Result<i64> {
    let found: Option<(i64, Option<String>)> = sqlx::query_as("SELECT id, password_hash FROM users WHERE name = $1")
        .bind(name)
        .fetch_optional(&mut **tx)
        .await?;
    match found {
        Some((_, Some(_))) if create => return Err(super::Refused::Taken(format!(
            "a user named '{name}' already exists and signs in with a password; to give it this key, name it as the owner: --user {name}"
        )).into()),
        Some((id, _)) => return Ok(id),
        None if !create => {
            return Err(super::Refused::NotFound(format!(
                "no user named '{name}' ('tollgate users create --name {name}' creates one)"
            ))
            .into())
        }
        None => {}
    }
    let now = now_unix();
    let (id,): (i64,) = sqlx::query_as(
        "INSERT INTO users (name, role, user_group, balance_micros, disabled, created_at, updated_at) \
         VALUES ($1, 'user', 'default', 0, 0, $2, $2) RETURNING id",
    )
    .bind(name)
    .bind(now)
    .fetch_one(&mut **tx)
    .await?;
    Ok(id)
}

/// Adds `micros` to a user's balance with its ledger entry, in `tx`.
pub(super) async fn credit(
    tx: &mut Transaction<'_, Any>,
    user_id: i64,
    key_id: Option<i64>,
    micros: i64,
    kind: &str,
    entry_id: &str,
) -> Result<()> {
    let now = now_unix();
    sqlx::query(
        "INSERT INTO ledger (entry_id, key_id, user_id, amount_micros, kind, created_at) VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(entry_id)
    .bind(key_id.unwrap_or(0))
    .bind(user_id)
    .bind(micros)
    .bind(kind)
    .bind(now)
    .execute(&mut **tx)
    .await?;
    // updated_at moves so that running gateways re-read the balance.
    sqlx::query("UPDATE users SET balance_micros = balance_micros + $1, updated_at = updated_at + 1 WHERE id = $2")
        .bind(micros)
        .bind(user_id)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

/// Tops up the user `name`; returns the new balance. Running gateways see it within
/// `key_refresh_ms`.
pub async fn top_up(db: &Db, name: &str, amount: &str) -> Result<String> {
    let micros = parse_money(amount)?;
    let mut tx = crate::store::begin_write(db).await?;
    let user_id = find_or_create(&mut tx, name, false).await?;
    let entry = format!("topup-{user_id}-{}-{:016x}", now_unix(), rand::random::<u64>());
    credit(&mut tx, user_id, None, micros, "topup", &entry).await?;
    let (balance,): (i64,) =
        sqlx::query_as("SELECT balance_micros FROM users WHERE id = $1").bind(user_id).fetch_one(&mut *tx).await?;
    tx.commit().await?;
    Ok(format_money(balance))
}

/// Tops up the owner of key `key_id`.
pub async fn top_up_key(db: &Db, key_id: i64, amount: &str) -> Result<String> {
    let owner: Option<(String,)> =
        sqlx::query_as("SELECT u.name FROM consumer_keys k JOIN users u ON u.id = k.user_id WHERE k.id = $1")
            .bind(key_id)
            .fetch_optional(db)
            .await?;
    match owner {
        Some((name,)) => top_up(db, &name, amount).await,
        None => Err(super::Refused::NotFound(format!(
            "no consumer key with id {key_id} ('tollgate keys list' shows the ids)"
        ))
        .into()),
    }
}

pub async fn list_users(db: &Db) -> Result<Vec<UserInfo>> {
    list_users_where(db, None, None).await
}

/// What login needs: id, password hash, role, disabled.
pub async fn credentials(db: &Db, name: &str) -> Result<Option<(i64, Option<String>, String, bool)>> {
    let row: Option<(i64, Option<String>, String, i64)> =
        sqlx::query_as("SELECT id, password_hash, role, disabled FROM users WHERE name = $1")
            .bind(name)
            .fetch_optional(db)
            .await?;
    Ok(row.map(|(id, hash, role, disabled)| (id, hash, role, disabled != 0)))
}

/// One user, if it exists.
pub async fn get_user(db: &Db, id: i64) -> Result<Option<UserInfo>> {
    Ok(list_users_where(db, Some(id), None).await?.into_iter().next())
}

/// The user `id` a verified session token signs in, as the database has it now; `None` when
/// the user is gone or the token was signed out (`session::revoke`). One indexed read: the
/// revocation costs a session route no second round trip.
pub async fn session_holder(db: &Db, id: i64, token: &str) -> Result<Option<UserInfo>> {
    let digest = super::session::token_digest(token);
    Ok(list_users_where(db, Some(id), Some(&digest)).await?.into_iter().next())
}

/// Users (`id`'s, or all); with `unrevoked`, only if no sign-out revoked the session token of
/// that digest.
async fn list_users_where(db: &Db, id: Option<i64>, unrevoked: Option<&str>) -> Result<Vec<UserInfo>> {
    let rows: Vec<(i64, String, String, String, i64, i64)> = sqlx::query_as(
        "SELECT id, name, role, user_group, balance_micros, disabled FROM users WHERE ($1 IS NULL OR id = $1) \
         AND ($2 IS NULL OR NOT EXISTS (SELECT 1 FROM revoked_sessions WHERE token_sha256 = $2)) ORDER BY id",
    )
    .bind(id)
    .bind(unrevoked)
    .fetch_all(db)
    .await?;
    Ok(rows
        .into_iter()
        .map(|(id, name, role, group, balance, disabled)| UserInfo {
            id,
            name,
            role,
            group,
            balance: format_money(balance),
            disabled: disabled != 0,
        })
        .collect())
}

/// Disables or enables a user: its keys and sessions are refused (within `key_refresh_ms`
/// for keys, at once for sessions).
pub async fn set_user_disabled(db: &Db, name: &str, disabled: bool) -> Result<()> {
    let updated = sqlx::query("UPDATE users SET disabled = $1, updated_at = updated_at + 1 WHERE name = $2")
        .bind(disabled as i64)
        .bind(name)
        .execute(db)
        .await?
        .rows_affected();
    if updated != 1 {
        return Err(super::Refused::NotFound(format!("no user named '{name}'")).into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A top-up reads the user, then writes: on SQLite two of them at once made the later
    /// one fail with "database is locked" until writing transactions began IMMEDIATE.
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn concurrent_top_ups_all_land_and_the_ledger_sums_them() {
        let db = crate::store::open_for_test("concurrent_top_ups").await;
        let carol = NewUser { name: "carol".into(), role: "user".into(), balance: "1".into(), ..Default::default() };
        create_user(&db, &carol).await.unwrap();
        let runs: Vec<_> = (0..24)
            .map(|_| {
                let db = db.clone();
                tokio::spawn(async move { top_up(&db, "carol", "0.5").await })
            })
            .collect();
        for run in runs {
            run.await.unwrap().expect("every top-up lands");
        }
        let (balance,): (i64,) =
            sqlx::query_as("SELECT balance_micros FROM users WHERE name = 'carol'").fetch_one(&db).await.unwrap();
        assert_eq!(balance, 13_000_000);
        let (_, mismatches, _) = super::super::ledger::verify_ledger(&db).await.unwrap();
        assert!(mismatches.is_empty(), "{mismatches:?}");
    }
}
