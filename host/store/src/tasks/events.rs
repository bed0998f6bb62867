//! A task's events (its submit, its progress, its end), kept for the progress socket: each
//! node pushes the events of its registered users, whichever node wrote them, and one left
//! undelivered is replayed when its owner registers again.
//!
//! Invariants (tests below, on both backends):
//! - a submit's and an end's event are written in the transaction of the change, so an end is
//!   never committed without its event; progress is announced after it is recorded;
//! - an event is claimed (marked delivered) by one caller only (`claim`), so however many
//!   nodes read it, one pushes it;
//! - every write of an event wakes this node's readers at once (`committed`), and on
//!   PostgreSQL every other node's too (`NOTIFY` in the same transaction: sent at its commit);
//!   a reader also wakes on its own after a while, so a lost notification only delays;
//! - a deleted task's events go with it (`archive::delete_task`); events older than the
//!   replay window are pruned.

use super::{Task, COLUMNS};
use crate::Db;
use anyhow::Result;
use std::time::Duration;

/// The channel every node listens on (PostgreSQL).
const CHANNEL: &str = "tollgate_task_events";

/// An event with its task as it is now (the status and progress are the event's own).
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Event {
    pub event_id: i64,
    /// The task's status and progress when the event was written.
    pub event_status: String,
    pub event_progress: Option<i64>,
    pub event_at: i64,
    #[sqlx(flatten)]
    pub task: Task,
}

/// Writes task `id`'s event in the caller's transaction, from the task's row as the
/// transaction sees it; on PostgreSQL the other nodes are notified when it commits. The caller
/// calls `committed` after its commit.
pub(crate) async fn record(conn: &mut sqlx::AnyConnection, id: &str, now: i64) -> Result<()> {
    sqlx::query(
        "INSERT INTO task_events (task_id, user_id, status, progress, created_at) \
         SELECT id, user_id, status, progress, $2 FROM tasks WHERE id = $1",
    )
    .bind(id)
    .bind(now)
    .execute(&mut *conn)
    .await?;
    if conn.backend_name() == "PostgreSQL" {
        sqlx::query("SELECT pg_notify($1, '')").bind(CHANNEL).execute(&mut *conn).await?;
    }
    Ok(())
}

/// Writes task `id`'s event now (its progress, just recorded) and wakes the readers.
pub async fn announce(db: &Db, id: &str, now: i64) -> Result<()> {
    let mut tx = db.begin().await?;
    record(&mut tx, id, now).await?;
    tx.commit().await?;
    committed();
    Ok(())
}

static WAKE: tokio::sync::Notify = tokio::sync::Notify::const_new();

/// An event this process wrote has committed: its reader wakes.
pub(crate) fn committed() {
    WAKE.notify_one();
}

/// The undelivered events of `users`' tasks written at or after `since`, oldest first, at
/// most `limit`.
pub async fn pending(db: &Db, users: &[i64], since: i64, limit: i64) -> Result<Vec<Event>> {
    if users.is_empty() {
        return Ok(Vec::new());
    }
    let columns: Vec<String> = COLUMNS.split(',').map(|c| format!("t.{}", c.trim())).collect();
    // The users are numbers: written into the statement, no text of anyone's.
    let users: Vec<String> = users.iter().map(i64::to_string).collect();
    let sql = format!(
        "SELECT e.id AS event_id, e.status AS event_status, e.progress AS event_progress, e.created_at AS event_at, {} \
         FROM task_events e JOIN tasks t ON t.id = e.task_id \
         WHERE e.delivered = 0 AND e.created_at >= $1 AND e.user_id IN ({}) ORDER BY e.id LIMIT $2",
        columns.join(", "),
        users.join(", ")
    );
    Ok(sqlx::query_as::<_, Event>(&sql).bind(since).bind(limit).fetch_all(db).await?)
}

/// Marks an event delivered; true for the one caller that did (it pushes the event).
pub async fn claim(db: &Db, event_id: i64) -> Result<bool> {
    let done = sqlx::query("UPDATE task_events SET delivered = 1 WHERE id = $1 AND delivered = 0")
        .bind(event_id)
        .execute(db)
        .await?;
    Ok(done.rows_affected() == 1)
}

/// Gives a claimed event back (nobody could take it): it is replayed later.
pub async fn unclaim(db: &Db, event_id: i64) -> Result<()> {
    sqlx::query("UPDATE task_events SET delivered = 0 WHERE id = $1").bind(event_id).execute(db).await?;
    Ok(())
}

/// Deletes the events written before `before`; returns how many.
pub async fn prune(db: &Db, before: i64) -> Result<u64> {
    Ok(sqlx::query("DELETE FROM task_events WHERE created_at < $1").bind(before).execute(db).await?.rows_affected())
}

/// What wakes a reader of events: this process's writes, and on PostgreSQL every node's.
pub struct Wakes {
    listener: Option<sqlx::postgres::PgListener>,
}

impl Wakes {
    /// Listens on `database_url` when it is PostgreSQL (a failure to listen is logged: the
    /// reader then wakes on its own schedule only).
    pub async fn open(database_url: &str) -> Wakes {
        if !(database_url.starts_with("postgres://") || database_url.starts_with("postgresql://")) {
            return Wakes { listener: None };
        }
        let listening = async {
            let mut l = sqlx::postgres::PgListener::connect(database_url).await?;
            l.listen(CHANNEL).await?;
            Ok::<_, sqlx::Error>(l)
        };
        match listening.await {
            Ok(l) => Wakes { listener: Some(l) },
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen for other nodes' task events; they arrive on the next round");
                Wakes { listener: None }
            }
        }
    }

    /// Waits for a wake, at most `within`.
    pub async fn next(&mut self, within: Duration) {
        let notified = async {
            match &mut self.listener {
                // A lost connection is opened again by the next `recv`; meanwhile the
                // reader's own schedule covers what was missed.
                Some(l) => match l.recv().await {
                    Ok(_) => {}
                    Err(_) => tokio::time::sleep(within).await,
                },
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = WAKE.notified() => {}
            _ = notified => {}
            _ = tokio::time::sleep(within) => {}
        }
    }
}
