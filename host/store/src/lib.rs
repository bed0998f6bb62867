//! The database: one sqlx pool, migrations, and the batching writer for call records.
//!
//! Embedded SQLite by default (WAL mode, created on first start), or PostgreSQL when
//! `database_url` is `postgres://…`, so that several nodes can share one database. One
//! `AnyPool` serves both; the queries are written in the SQL the two share:
//! - parameters are `$1`, `$2`, … (SQLite accepts them too);
//! - every integer is read as `i64` and flags are integers 0/1 (never SQL booleans);
//! - every `SUM` is wrapped in `CAST(… AS BIGINT)` (PostgreSQL sums BIGINT as NUMERIC);
//! - dates are unix seconds, bucketed in Rust, not with a dialect's date functions.
//!
//! Every transaction that writes begins with [`begin_write`]: on SQLite a deferred transaction
//! that reads and then writes fails at once with "database is locked" (no busy wait) when
//! another connection wrote in between, so a writing transaction takes the write lock at
//! `BEGIN IMMEDIATE` and waits its turn under `busy_timeout` instead.
//!
//! Each backend has its own migrations folder; a migration added to one is added to the other
//! under the same number. The request path never awaits the database: it reads caches (see
//! `account`) and hands records to `CallLog`.

pub mod archive;
pub mod call_log;
pub mod idempotency;
pub mod objects;
pub mod private_fs;
pub mod tasks;

use anyhow::{bail, Context, Result};
use sqlx::any::{AnyConnectOptions, AnyPoolOptions};
use sqlx::{AnyPool, Executor};
use std::str::FromStr;

pub use call_log::{CallLog, CallRecord};

pub type Db = AnyPool;

static SQLITE_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");
static POSTGRES_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/postgres");

/// Opens the database (creating an SQLite file and its folder if needed) and applies pending
/// migrations.
pub async fn open(url: &str) -> Result<Db> {
    sqlx::any::install_default_drivers();
    let (url, sqlite) = if let Some(rest) = url.strip_prefix("sqlite:") {
        let path = rest.trim_start_matches("//");
        let file = path.split('?').next().unwrap_or(path);
        if let Some(dir) = std::path::Path::new(file).parent().filter(|d| !d.as_os_str().is_empty()) {
            crate::private_fs::create_dir(dir)?;
        }
        let url = if rest.contains("mode=") {
            url.to_string()
        } else {
            format!("{url}{}mode=rwc", if rest.contains('?') { '&' } else { '?' })
        };
        (url, true)
    } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        (url.to_string(), false)
    } else {
        bail!("database_url '{url}': use sqlite://<file> or postgres://user:password@host/database");
    };
    let options =
        AnyConnectOptions::from_str(&url).with_context(|| format!("invalid database_url '{}'", redact(&url)))?;
    let pool = AnyPoolOptions::new()
        .max_connections(if sqlite { 4 } else { 8 })
        .after_connect(move |conn, _| {
            Box::pin(async move {
                if sqlite {
                    conn.execute("PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; PRAGMA busy_timeout = 5000;")
                        .await?;
                }
                Ok(())
            })
        })
        .connect_with(options)
        .await
        .with_context(|| format!("cannot open the database {}", redact(&url)))?;
    let migrations = if sqlite { &SQLITE_MIGRATIONS } else { &POSTGRES_MIGRATIONS };
    migrations.run(&pool).await.context("applying database migrations")?;
    Ok(pool)
}

/// Begins a transaction that will write: `BEGIN IMMEDIATE` on SQLite (see the module doc),
/// a plain `BEGIN` on PostgreSQL, whose row locks need nothing more.
pub async fn begin_write(db: &Db) -> sqlx::Result<sqlx::Transaction<'static, sqlx::Any>> {
    if is_postgres(db) {
        db.begin().await
    } else {
        db.begin_with("BEGIN IMMEDIATE").await
    }
}

/// Whether `db` is on PostgreSQL (several nodes may share it) rather than SQLite.
pub fn is_postgres(db: &Db) -> bool {
    db.connect_options().database_url.scheme().starts_with("postgres")
}

/// The URL without its password, for messages.
fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => match url[scheme + 3..at].split_once(':') {
            Some((user, _)) => format!("{}{user}:***{}", &url[..scheme + 3], &url[at..]),
            None => url.to_string(),
        },
        _ => url.to_string(),
    }
}

/// Seconds since the Unix epoch.
pub fn now_unix() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0)
}

/// A new, empty database for a unit test: on the PostgreSQL server named by
/// `TEST_POSTGRES_URL` when it is set (`tests/run` sets it for its PostgreSQL pass),
/// else an SQLite file under the system's temporary folder. For tests only (this crate's,
/// and the crates above with the `test-support` feature).
#[cfg(any(test, feature = "test-support"))]
pub async fn open_for_test(name: &str) -> Db {
    let unique = format!("tg_unit_{name}_{}", std::process::id());
    match std::env::var("TEST_POSTGRES_URL").ok().filter(|s| !s.is_empty()) {
        Some(server) => {
            let server = server.trim_end_matches('/');
            sqlx::any::install_default_drivers();
            let admin = AnyPool::connect(&format!("{server}/postgres")).await.expect("connect to PostgreSQL");
            admin.execute(format!("DROP DATABASE IF EXISTS {unique}").as_str()).await.unwrap();
            admin.execute(format!("CREATE DATABASE {unique}").as_str()).await.unwrap();
            open(&format!("{server}/{unique}")).await.unwrap()
        }
        None => {
            let dir = std::env::temp_dir().join(unique);
            let _ = std::fs::remove_dir_all(&dir);
            open(&format!("sqlite://{}/t.db", dir.display())).await.unwrap()
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn passwords_are_redacted_from_database_urls() {
        assert_eq!(super::redact("postgres://tg:s3cret@db:5432/tg"), "postgres://tg:***@db:5432/tg");
        assert_eq!(super::redact("postgres://tg@db/tg"), "postgres://tg@db/tg");
        assert_eq!(super::redact("sqlite://data/t.db"), "sqlite://data/t.db");
    }
}
