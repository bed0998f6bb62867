//! The database: one sqlx pool, migrations, and the batching writer for call records.
//!
//! Embedded SQLite by default (WAL mode, created on first start); the schema is written in
//! the SQL that SQLite and PostgreSQL share so that several nodes can later share one
//! PostgreSQL database. The request path never awaits the database: it reads caches
//! (see `account`) and hands records to `CallLog`.

pub mod call_log;

use anyhow::{bail, Context, Result};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::SqlitePool;
use std::str::FromStr;

pub use call_log::{CallLog, CallRecord};

pub type Db = SqlitePool;

static MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");

/// Opens (creating if needed) the database and applies pending migrations.
pub async fn open(url: &str) -> Result<Db> {
    if !url.starts_with("sqlite:") {
        bail!("database_url '{url}': only sqlite:// is supported in this version");
    }
    if let Some(path) = url.strip_prefix("sqlite://").map(|p| p.split('?').next().unwrap_or(p)) {
        if let Some(dir) = std::path::Path::new(path).parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        }
    }
    let options = SqliteConnectOptions::from_str(url)
        .with_context(|| format!("invalid database_url '{url}'"))?
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(SqliteSynchronous::Normal)
        .busy_timeout(std::time::Duration::from_secs(5));
    let pool = SqlitePoolOptions::new()
        .max_connections(4)
        .connect_with(options)
        .await
        .with_context(|| format!("cannot open the database {url}"))?;
    MIGRATIONS.run(&pool).await.context("applying database migrations")?;
    Ok(pool)
}

/// Seconds since the Unix epoch.
pub fn now_unix() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0)
}
