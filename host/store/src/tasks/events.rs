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
//!   PostgreSQL every other node's too (`NOTIFY` after the commit); a reader also wakes on its
//!   own after a while, so a lost notification only delays;
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
/// transaction sees it. The caller calls `committed` after its commit.
pub(crate) async fn record(conn: &mut sqlx::AnyConnection, id: &str, now: i64) -> Result<()> {
    sqlx::query(
        "INSERT INTO task_events (task_id, user_id, status, progress, created_at) \
         SELECT id, user_id, status, progress, $2 FROM tasks WHERE id = $1",
    )
    .bind(id)
    .bind(now)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// Writes task `id`'s event now (its progress, just recorded) and wakes the readers.
pub async fn announce(db: &Db, id: &str, now: i64) -> Result<()> {
    let mut tx = crate::begin_write(db).await?;
    record(&mut tx, id, now).await?;
    tx.commit().await?;
    committed(db).await;
    Ok(())
}

static WAKE: tokio::sync::Notify = tokio::sync::Notify::const_new();

/// An event this process wrote has committed: its reader wakes, and on PostgreSQL every other
/// node's (a `NOTIFY` after the commit, never inside a transaction that moves money: a lost
/// one only delays the event to the reader's next round).
pub(crate) async fn committed(db: &Db) {
    WAKE.notify_one();
    if crate::is_postgres(db) {
        if let Err(e) = sqlx::query("SELECT pg_notify($1, '')").bind(CHANNEL).execute(db).await {
            tracing::debug!(error = %e, "notifying other nodes of a task event failed");
        }
    }
}

/// The columns an event reads of its task: the heavy ones it does not show (the plugin's
/// state, the request's params) are left empty.
fn task_columns() -> String {
    COLUMNS
        .split(',')
        .map(|c| match c.trim() {
            "state" => "'' AS state".to_string(),
            "params" => "NULL AS params".to_string(),
            c => format!("t.{c}"),
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// The undelivered events of `users`' tasks after event `after`, oldest first, at most `limit`.
pub async fn pending_after(db: &Db, users: &[i64], after: i64, limit: i64) -> Result<Vec<Event>> {
    if users.is_empty() {
        return Ok(Vec::new());
    }
    // The users are numbers: written into the statement, no text of anyone's.
    let users: Vec<String> = users.iter().map(i64::to_string).collect();
    let sql = format!(
        "SELECT e.id AS event_id, e.status AS event_status, e.progress AS event_progress, e.created_at AS event_at, {} \
         FROM task_events e JOIN tasks t ON t.id = e.task_id \
         WHERE e.delivered = 0 AND e.id > $1 AND e.user_id IN ({}) ORDER BY e.id LIMIT $2",
        task_columns(),
        users.join(", ")
    );
    Ok(sqlx::query_as::<_, Event>(&sql).bind(after).bind(limit).fetch_all(db).await?)
}

/// What one registration asks for: a user's tasks of a model, of a chat and an app user where
/// both the registration and the task name one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Interest {
    pub user_id: i64,
    pub model: String,
    pub chat_id: Option<String>,
    pub user_uuid: Option<String>,
}

impl Interest {
    pub fn matches(&self, t: &Task) -> bool {
        let same = |a: &Option<String>, b: &Option<String>| match (a, b) {
            (Some(a), Some(b)) => a == b,
            _ => true,
        };
        t.user_id == self.user_id
            && t.model == self.model
            && same(&t.chat_id, &self.chat_id)
            && same(&t.user_uuid, &self.user_uuid)
    }
}

/// The undelivered events `interest` matches written at or after `since`, oldest first, at
/// most `limit`, claimed for the caller (the replay of a new registration).
pub async fn claim_missed(db: &Db, interest: &Interest, since: i64, limit: i64) -> Result<Vec<Event>> {
    let sql = format!(
        "SELECT e.id AS event_id, e.status AS event_status, e.progress AS event_progress, e.created_at AS event_at, {} \
         FROM task_events e JOIN tasks t ON t.id = e.task_id \
         WHERE e.delivered = 0 AND e.created_at >= $1 AND e.user_id = $2 AND t.model = $3 \
         AND (t.chat_id IS NULL OR $4 = '' OR t.chat_id = $4) AND (t.user_uuid IS NULL OR $5 = '' OR t.user_uuid = $5) \
         ORDER BY e.id LIMIT $6",
        task_columns()
    );
    let found = sqlx::query_as::<_, Event>(&sql)
        .bind(since)
        .bind(interest.user_id)
        .bind(&interest.model)
        .bind(interest.chat_id.as_deref().unwrap_or(""))
        .bind(interest.user_uuid.as_deref().unwrap_or(""))
        .bind(limit)
        .fetch_all(db)
        .await?;
    if found.is_empty() {
        return Ok(found);
    }
    // Claimed together: what another node took meanwhile is not pushed twice.
    let ids: Vec<String> = found.iter().map(|e| e.event_id.to_string()).collect();
    let claimed: Vec<(i64,)> = sqlx::query_as(&format!(
        "UPDATE task_events SET delivered = 1 WHERE delivered = 0 AND id IN ({}) RETURNING id",
        ids.join(", ")
    ))
    .fetch_all(db)
    .await?;
    let claimed: std::collections::HashSet<i64> = claimed.into_iter().map(|(id,)| id).collect();
    Ok(found.into_iter().filter(|e| claimed.contains(&e.event_id)).collect())
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

/// Task `id`'s events still kept (within the replay window), oldest first: status, progress,
/// time; for operators inspecting a task.
pub async fn of_task(db: &Db, id: &str) -> Result<Vec<(String, Option<i64>, i64)>> {
    Ok(sqlx::query_as("SELECT status, progress, created_at FROM task_events WHERE task_id = $1 ORDER BY id")
        .bind(id)
        .fetch_all(db)
        .await?)
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
    /// Listens on `db`'s server when it is PostgreSQL (a failure to listen is logged: the
    /// reader then wakes on its own schedule only).
    pub async fn open(db: &Db) -> Wakes {
        if !crate::is_postgres(db) {
            return Wakes { listener: None };
        }
        let url = db.connect_options().database_url.to_string();
        let listening = async {
            let mut l = sqlx::postgres::PgListener::connect(&url).await?;
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

    /// Waits for a wake, at most `within`; the notifications that came meanwhile count as one.
    pub async fn next(&mut self, within: Duration) {
        if let Some(l) = &mut self.listener {
            while l.next_buffered().is_some() {}
        }
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
