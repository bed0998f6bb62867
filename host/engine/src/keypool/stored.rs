//! Upstream keys stored in the database, encrypted at rest.
//!
//! Operators import keys (`tollgate upstream import`, `POST /admin/channels/{name}/keys`) and
//! export them again (`tollgate upstream export`, `GET /admin/channels/{name}/keys/export`).
//! Each key is sealed with XChaCha20-Poly1305 under the master key, which only ever comes from
//! the environment (`TOLLGATE_MASTER_KEY`, 64 hex digits: `openssl rand -hex 32`), never from
//! the configuration file or the database. The channel's name is the associated data: a row
//! moved to another channel does not decrypt. Without the master key nothing is stored or
//! read, and the gateway serves its configuration file's keys alone.
//!
//! Invariants: the plaintext of a stored key exists only in memory (the pool) and in an
//! export the operator asked for; it is never logged. Importing a key twice updates its
//! weight and priority (the fingerprint is a SHA-256 of the key).

use super::{Channels, KeyEntry, UpstreamKey};
use crate::store::{now_unix, Db};
use anyhow::{bail, Context, Result};
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::sync::Arc;

pub const MASTER_KEY_ENV: &str = "TOLLGATE_MASTER_KEY";

/// The key that seals stored upstream keys. `Debug` never shows it.
#[derive(Clone)]
pub struct MasterKey(Arc<XChaCha20Poly1305>);

impl std::fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "MasterKey(***)")
    }
}

impl MasterKey {
    /// From `TOLLGATE_MASTER_KEY`; `Ok(None)` when it is not set.
    pub fn from_env() -> Result<Option<MasterKey>> {
        match std::env::var(MASTER_KEY_ENV) {
            Ok(v) if !v.trim().is_empty() => MasterKey::parse(v.trim()).map(Some),
            _ => Ok(None),
        }
    }

    pub fn parse(hex_text: &str) -> Result<MasterKey> {
        let mut bytes = [0u8; 32];
        if hex::decode_to_slice(hex_text, &mut bytes).is_err() {
            bail!("{MASTER_KEY_ENV} must be 64 hex digits (32 bytes), e.g. from `openssl rand -hex 32`");
        }
        Ok(MasterKey(Arc::new(XChaCha20Poly1305::new(&bytes.into()))))
    }

    fn seal(&self, channel: &str, secret: &str) -> String {
        let nonce: [u8; 24] = rand::random();
        let sealed = self
            .0
            .encrypt(XNonce::from_slice(&nonce), Payload { msg: secret.as_bytes(), aad: channel.as_bytes() })
            .expect("sealing in memory cannot fail");
        let mut out = nonce.to_vec();
        out.extend_from_slice(&sealed);
        hex::encode(out)
    }

    fn open(&self, channel: &str, sealed_hex: &str) -> Result<String> {
        let raw = hex::decode(sealed_hex).context("a stored key is not hex")?;
        if raw.len() < 24 + 16 {
            bail!("a stored key is truncated");
        }
        let (nonce, sealed) = raw.split_at(24);
        let plain = self
            .0
            .decrypt(XNonce::from_slice(nonce), Payload { msg: sealed, aad: channel.as_bytes() })
            .map_err(|_| anyhow::anyhow!("a stored key of channel '{channel}' does not decrypt: is {MASTER_KEY_ENV} the key it was stored with?"))?;
        String::from_utf8(plain).context("a stored key is not UTF-8")
    }
}

/// One key to import, or one exported.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct KeyRecord {
    pub key: String,
    #[serde(default = "one")]
    pub weight: u32,
    #[serde(default)]
    pub priority: i32,
    /// On export, the key's channel; on import, ignored (the channel is named by the caller).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub channel: Option<String>,
}

fn one() -> u32 {
    1
}

/// An import text, read: the keys to store (each once: the first line naming a key wins), how
/// many lines named a key again, and the lines (or array items) refused, each with why.
#[derive(Debug, Default)]
pub struct ImportText {
    pub records: Vec<KeyRecord>,
    pub repeated: usize,
    pub invalid: Vec<String>,
}

/// Reads keys to import: a JSON array (of strings, or of `{key, weight, priority}`), or
/// lines of `key` or `key,weight,priority` (blank lines and `#` comments are skipped). A
/// line or item that is not a key is refused on its own (`invalid`); a text that is not
/// JSON when it starts like it is an error.
pub fn parse_import(text: &str) -> Result<ImportText> {
    let text = text.trim();
    let mut read = ImportText::default();
    let mut seen = std::collections::HashSet::new();
    let mut take = |read: &mut ImportText, place: String, record: Result<KeyRecord>| {
        let checked = record.and_then(|r| {
            if r.key.is_empty() || r.key.chars().any(char::is_whitespace) {
                bail!("a key is empty or contains spaces");
            }
            if r.weight == 0 {
                bail!("a key needs a weight of at least 1");
            }
            Ok(r)
        });
        match checked {
            Ok(r) if !seen.insert(r.key.clone()) => read.repeated += 1,
            Ok(r) => read.records.push(r),
            Err(e) => read.invalid.push(format!("{place}: {e:#}")),
        }
    };
    if text.starts_with('[') {
        let items: Vec<serde_json::Value> =
            serde_json::from_str(text).context("keys: a JSON array of strings or {key, weight, priority}")?;
        for (n, item) in items.into_iter().enumerate() {
            let record = match item {
                serde_json::Value::String(key) => Ok(KeyRecord { key, weight: 1, priority: 0, channel: None }),
                other => serde_json::from_value::<KeyRecord>(other).map_err(anyhow::Error::from),
            };
            take(&mut read, format!("item {}", n + 1), record);
        }
    } else {
        for (n, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let mut fields = line.split(',').map(str::trim);
            let key = fields.next().unwrap_or_default().to_string();
            let number = |f: Option<&str>, default: i64| -> Result<i64> {
                match f.filter(|f| !f.is_empty()) {
                    None => Ok(default),
                    Some(f) => f.parse().map_err(|_| anyhow::anyhow!("'{f}' is not a number")),
                }
            };
            let record = (|| {
                let weight = number(fields.next(), 1)?;
                let weight =
                    u32::try_from(weight).map_err(|_| anyhow::anyhow!("the weight {weight} is out of range"))?;
                let priority = number(fields.next(), 0)?;
                let priority =
                    i32::try_from(priority).map_err(|_| anyhow::anyhow!("the priority {priority} is out of range"))?;
                Ok(KeyRecord { key, weight, priority, channel: None })
            })();
            take(&mut read, format!("line {}", n + 1), record);
        }
    }
    Ok(read)
}

/// Stores `records` for `channel`, sealed. Returns (added, updated).
pub async fn import(db: &Db, master: &MasterKey, channel: &str, records: &[KeyRecord]) -> Result<(usize, usize)> {
    let now = now_unix();
    let mut tx = crate::store::begin_write(db).await?;
    let (mut added, mut updated) = (0, 0);
    for r in records {
        let fingerprint = hex::encode(Sha256::digest(r.key.as_bytes()));
        let existing: Option<(i64,)> =
            sqlx::query_as("SELECT id FROM upstream_keys WHERE channel = $1 AND fingerprint = $2")
                .bind(channel)
                .bind(&fingerprint)
                .fetch_optional(&mut *tx)
                .await?;
        if let Some((id,)) = existing {
            sqlx::query(
                "UPDATE upstream_keys SET weight = $1, priority = $2, updated_at = updated_at + 1 WHERE id = $3",
            )
            .bind(i64::from(r.weight))
            .bind(i64::from(r.priority))
            .bind(id)
            .execute(&mut *tx)
            .await?;
            updated += 1;
            continue;
        }
        let prefix: String = r.key.chars().take(6).collect();
        sqlx::query(
            "INSERT INTO upstream_keys (channel, fingerprint, key_prefix, secret, weight, priority, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $7)",
        )
        .bind(channel)
        .bind(&fingerprint)
        .bind(prefix)
        .bind(master.seal(channel, &r.key))
        .bind(i64::from(r.weight))
        .bind(i64::from(r.priority))
        .bind(now)
        .execute(&mut *tx)
        .await?;
        added += 1;
    }
    tx.commit().await?;
    Ok((added, updated))
}

/// Every stored key (of `channel`, or all), decrypted, for an export.
pub async fn export(db: &Db, master: &MasterKey, channel: Option<&str>) -> Result<Vec<KeyRecord>> {
    rows(db, channel)
        .await?
        .into_iter()
        .map(|r| {
            Ok(KeyRecord {
                key: master.open(&r.channel, &r.secret)?,
                weight: r.weight,
                priority: r.priority,
                channel: Some(r.channel),
            })
        })
        .collect()
}

/// Stored keys without their secrets: (id, channel, prefix, weight, priority).
pub async fn list(db: &Db) -> Result<Vec<(i64, String, String, i64, i64)>> {
    Ok(sqlx::query_as("SELECT id, channel, key_prefix, weight, priority FROM upstream_keys ORDER BY channel, id")
        .fetch_all(db)
        .await?)
}

/// Deletes a stored key of `channel` (any channel if `None`), and the operator's hold on it
/// (`holds`). False: no such key.
pub async fn remove(db: &Db, id: i64, channel: Option<&str>) -> Result<bool> {
    let mut tx = crate::store::begin_write(db).await?;
    sqlx::query(
        "DELETE FROM upstream_key_holds WHERE EXISTS (SELECT 1 FROM upstream_keys k WHERE k.id = $1 \
         AND ($2 IS NULL OR k.channel = $2) AND k.channel = upstream_key_holds.channel \
         AND k.fingerprint = upstream_key_holds.fingerprint)",
    )
    .bind(id)
    .bind(channel)
    .execute(&mut *tx)
    .await?;
    let done = sqlx::query("DELETE FROM upstream_keys WHERE id = $1 AND ($2 IS NULL OR channel = $2)")
        .bind(id)
        .bind(channel)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(done.rows_affected() > 0)
}

struct Row {
    id: i64,
    channel: String,
    secret: String,
    weight: u32,
    priority: i32,
}

async fn rows(db: &Db, channel: Option<&str>) -> Result<Vec<Row>> {
    let rows: Vec<(i64, String, String, i64, i64)> = sqlx::query_as(
        "SELECT id, channel, secret, weight, priority FROM upstream_keys WHERE ($1 IS NULL OR channel = $1) ORDER BY id",
    )
    .bind(channel)
    .fetch_all(db)
    .await?;
    Ok(rows
        .into_iter()
        .map(|(id, channel, secret, weight, priority)| Row {
            id,
            channel,
            secret,
            weight: weight.clamp(1, i64::from(u32::MAX)) as u32,
            priority: priority.clamp(i64::from(i32::MIN), i64::from(i32::MAX)) as i32,
        })
        .collect())
}

/// Loads every stored key into its channel's pool, and the operator's holds (`holds`). A key
/// that does not decrypt is skipped and logged (without its secret); keys of unknown channels
/// are logged.
pub async fn load_into(db: &Db, master: Option<&MasterKey>, channels: &Channels) -> Result<()> {
    super::holds::load_into(db, channels).await?;
    let rows = rows(db, None).await?;
    let Some(master) = master else {
        if !rows.is_empty() {
            tracing::error!(
                keys = rows.len(),
                "upstream keys are stored but {MASTER_KEY_ENV} is not set: they are not used"
            );
        }
        return Ok(());
    };
    let mut by_channel: HashMap<String, Vec<KeyEntry>> = HashMap::new();
    for r in rows {
        match master.open(&r.channel, &r.secret) {
            Ok(secret) => by_channel.entry(r.channel).or_default().push(KeyEntry {
                secret: UpstreamKey(Arc::from(secret)),
                weight: r.weight,
                priority: r.priority,
                stored_id: Some(r.id),
            }),
            Err(e) => tracing::error!(id = r.id, error = %e, "a stored upstream key is not used"),
        }
    }
    for channel in channels.all() {
        channel.set_stored_keys(by_channel.remove(&channel.name).unwrap_or_default());
    }
    for (name, keys) in by_channel {
        tracing::warn!(channel = %name, keys = keys.len(), "upstream keys are stored for a channel that is not configured");
    }
    Ok(())
}

/// Reloads the stored keys into `channels`' pools if they changed since the last look
/// (another process imported, another node shares the database), and the operator's holds
/// (a small table, read every time: a pool is rebuilt only when they changed); a job calls
/// this. `seen` is the fingerprint of the last load of stored keys.
pub async fn sync(db: &Db, master: Option<&MasterKey>, channels: &Channels, seen: &mut Option<(i64, i64, i64)>) {
    if let Err(e) = super::holds::load_into(db, channels).await {
        tracing::warn!(error = %e, "loading the operator's disabled upstream keys failed");
    }
    let fingerprint: Result<(i64, i64, i64), _> = sqlx::query_as(
        "SELECT COUNT(*), CAST(COALESCE(SUM(id), 0) AS BIGINT), CAST(COALESCE(SUM(updated_at), 0) AS BIGINT) \
         FROM upstream_keys",
    )
    .fetch_one(db)
    .await;
    match fingerprint {
        Ok(f) if Some(f) == *seen => {}
        Ok(f) => match load_into(db, master, channels).await {
            Ok(()) => *seen = Some(f),
            Err(e) => tracing::warn!(error = %e, "loading stored upstream keys failed"),
        },
        Err(e) => tracing::warn!(error = %e, "checking stored upstream keys failed"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MASTER: &str = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";

    #[test]
    fn sealed_keys_open_only_with_their_master_key_and_channel() {
        let m = MasterKey::parse(MASTER).unwrap();
        let sealed = m.seal("sf", "sk-secret-1");
        assert!(!sealed.contains("sk-secret"), "the stored text is not the key");
        assert_ne!(sealed, m.seal("sf", "sk-secret-1"), "a fresh nonce each time");
        assert_eq!(m.open("sf", &sealed).unwrap(), "sk-secret-1");
        assert!(m.open("other", &sealed).is_err(), "bound to its channel");
        let other = MasterKey::parse(&MASTER.replace("00", "ff")).unwrap();
        assert!(other.open("sf", &sealed).is_err());
        assert!(MasterKey::parse("short").is_err());
        assert_eq!(format!("{m:?}"), "MasterKey(***)");
    }

    #[test]
    fn imports_read_lines_and_json() {
        let r = parse_import("# pool\nsk-a\nsk-b, 3, -1\n\n").unwrap().records;
        assert_eq!((r.len(), r[1].key.as_str(), r[1].weight, r[1].priority), (2, "sk-b", 3, -1));
        let r = parse_import(r#"["sk-a", {"key":"sk-b","weight":2}]"#).unwrap().records;
        assert_eq!((r[0].weight, r[1].weight), (1, 2));
        assert!(parse_import("[not json").is_err());
    }

    #[test]
    fn an_import_refuses_each_bad_line_on_its_own_and_counts_repeats() {
        let r = parse_import("sk-a\nsk-a, 0\nsk-b, x\nsk-c, 2\nsk a\nsk-c\nsk-d,1,99999999999").unwrap();
        let keys: Vec<&str> = r.records.iter().map(|k| k.key.as_str()).collect();
        assert_eq!(keys, ["sk-a", "sk-c"]);
        assert_eq!(r.repeated, 1, "sk-c again");
        assert_eq!(
            r.invalid,
            [
                "line 2: a key needs a weight of at least 1",
                "line 3: 'x' is not a number",
                "line 5: a key is empty or contains spaces",
                "line 7: the priority 99999999999 is out of range",
            ]
        );
        let r = parse_import(r#"["sk-a", {"weight":2}, "", "sk-a"]"#).unwrap();
        assert_eq!((r.records.len(), r.repeated, r.invalid.len()), (1, 1, 2), "{:?}", r.invalid);
        assert!(r.invalid[0].starts_with("item 2: "), "{:?}", r.invalid);
    }

    #[tokio::test]
    async fn imported_keys_are_stored_sealed_and_export_as_they_were() {
        let db = crate::store::open_for_test("upstream_keys").await;
        let m = MasterKey::parse(MASTER).unwrap();
        let records = parse_import("sk-one,2\nsk-two").unwrap().records;
        assert_eq!(import(&db, &m, "sf", &records).await.unwrap(), (2, 0));
        assert_eq!(import(&db, &m, "sf", &parse_import("sk-one,5").unwrap().records).await.unwrap(), (0, 1));
        let (secrets,): (String,) =
            sqlx::query_as("SELECT MIN(secret) || MAX(secret) FROM upstream_keys").fetch_one(&db).await.unwrap();
        assert!(!secrets.contains("sk-one") && !secrets.contains("sk-two"));
        let out = export(&db, &m, Some("sf")).await.unwrap();
        assert_eq!(out.iter().map(|r| (r.key.as_str(), r.weight)).collect::<Vec<_>>(), [("sk-one", 5), ("sk-two", 1)]);
        let id = list(&db).await.unwrap()[0].0;
        assert!(!remove(&db, id, Some("other")).await.unwrap(), "only within its channel");
        assert!(remove(&db, id, Some("sf")).await.unwrap());
        assert_eq!(export(&db, &m, None).await.unwrap().len(), 1);
    }
}
