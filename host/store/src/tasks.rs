//! Asynchronous vendor jobs (video, music, long speech), in the database so that they survive
//! restarts and every node sees them.
//!
//! Invariants (each with a test, on both backends):
//! - a task id is unguessable (128 random bits) and a task is found only for its owner;
//! - a due task is polled by one node at a time: `claim_due` takes a lease in one statement
//!   that re-checks it, so two nodes claiming together get disjoint tasks; a lease that ran
//!   out (its node died) is taken over;
//! - only the lease holder records progress;
//! - a task reaches a final status once (`finish` returns true to exactly one caller): only
//!   that transition may charge or release the task's reservation;
//! - the plugin's persisted state is at most `MAX_STATE_BYTES`.

use super::Db;
use anyhow::{bail, Result};

/// The largest plugin state kept per task.
pub const MAX_STATE_BYTES: usize = 64 << 10;

pub const QUEUED: &str = "queued";
pub const IN_PROGRESS: &str = "in_progress";
pub const SUCCEEDED: &str = "succeeded";
pub const FAILED: &str = "failed";
pub const EXPIRED: &str = "expired";
pub const CANCELLED: &str = "cancelled";

/// A task as stored.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct Task {
    pub id: String,
    pub user_id: i64,
    pub key_id: i64,
    pub channel: String,
    pub key_fingerprint: String,
    pub plugin: String,
    pub plugin_version: String,
    pub op: String,
    pub model: String,
    pub state: String,
    pub status: String,
    pub progress: Option<i64>,
    pub message: Option<String>,
    pub polls: i64,
    pub next_poll_at: i64,
    pub lease_owner: Option<String>,
    pub lease_until: Option<i64>,
    pub outputs: Option<String>,
    pub reserved_micros: i64,
    pub charge_micros: Option<i64>,
    pub error_kind: Option<String>,
    pub request_id: String,
    pub created_at: i64,
    pub updated_at: i64,
    pub expires_at: i64,
}

impl Task {
    pub fn is_final(&self) -> bool {
        ![QUEUED, IN_PROGRESS].contains(&self.status.as_str())
    }
}

/// What a submit knows of a new task.
#[derive(Debug, Clone)]
pub struct NewTask {
    pub user_id: i64,
    pub key_id: i64,
    pub channel: String,
    pub key_fingerprint: String,
    pub plugin: String,
    pub plugin_version: String,
    pub op: String,
    pub model: String,
    pub state: String,
    pub reserved_micros: i64,
    pub request_id: String,
    pub first_poll_at: i64,
    pub expires_at: i64,
}

/// A fresh, unguessable task id.
pub fn new_id(random: u128) -> String {
    format!("task_{random:032x}")
}

const COLUMNS: &str = "id, user_id, key_id, channel, key_fingerprint, plugin, plugin_version, op, model, state, \
     status, progress, message, polls, next_poll_at, lease_owner, lease_until, outputs, reserved_micros, \
     charge_micros, error_kind, request_id, created_at, updated_at, expires_at";

fn check_state(state: &str) -> Result<()> {
    if state.len() > MAX_STATE_BYTES {
        bail!("the plugin's task state is {} bytes; at most {MAX_STATE_BYTES} are kept", state.len());
    }
    Ok(())
}

/// Stores a new task, queued.
pub async fn insert(db: &Db, id: &str, t: &NewTask, now: i64) -> Result<()> {
    check_state(&t.state)?;
    sqlx::query(
        "INSERT INTO tasks (id, user_id, key_id, channel, key_fingerprint, plugin, plugin_version, op, model, state, \
         status, polls, next_poll_at, reserved_micros, request_id, created_at, updated_at, expires_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, 0, $12, $13, $14, $15, $15, $16)",
    )
    .bind(id)
    .bind(t.user_id)
    .bind(t.key_id)
    .bind(&t.channel)
    .bind(&t.key_fingerprint)
    .bind(&t.plugin)
    .bind(&t.plugin_version)
    .bind(&t.op)
    .bind(&t.model)
    .bind(&t.state)
    .bind(QUEUED)
    .bind(t.first_poll_at)
    .bind(t.reserved_micros)
    .bind(&t.request_id)
    .bind(now)
    .bind(t.expires_at)
    .execute(db)
    .await?;
    Ok(())
}

/// The task `id` if `user_id` owns it.
pub async fn get(db: &Db, id: &str, user_id: i64) -> Result<Option<Task>> {
    let sql = format!("SELECT {COLUMNS} FROM tasks WHERE id = $1 AND user_id = $2");
    Ok(sqlx::query_as::<_, Task>(&sql).bind(id).bind(user_id).fetch_optional(db).await?)
}

/// The owner's tasks, newest first.
pub async fn list(db: &Db, user_id: i64, limit: i64) -> Result<Vec<Task>> {
    let sql = format!("SELECT {COLUMNS} FROM tasks WHERE user_id = $1 ORDER BY created_at DESC, id LIMIT $2");
    Ok(sqlx::query_as::<_, Task>(&sql).bind(user_id).bind(limit).fetch_all(db).await?)
}

/// Leases up to `limit` due tasks to `node` for `lease_secs`: queued or in progress, due, and
/// not leased by a live node. The statement re-checks the lease on each row it updates, so
/// concurrent claims (other nodes) never get the same task.
pub async fn claim_due(db: &Db, node: &str, now: i64, lease_secs: i64, limit: i64) -> Result<Vec<Task>> {
    let sql = format!(
        "UPDATE tasks SET lease_owner = $1, lease_until = $2 \
         WHERE id IN (SELECT id FROM tasks WHERE status IN ($3, $4) AND next_poll_at <= $5 \
                      AND (lease_until IS NULL OR lease_until < $5) ORDER BY next_poll_at LIMIT $6) \
         AND status IN ($3, $4) AND (lease_until IS NULL OR lease_until < $5) \
         RETURNING {COLUMNS}"
    );
    Ok(sqlx::query_as::<_, Task>(&sql)
        .bind(node)
        .bind(now + lease_secs)
        .bind(QUEUED)
        .bind(IN_PROGRESS)
        .bind(now)
        .bind(limit)
        .fetch_all(db)
        .await?)
}

/// A poll's news for a task `node` holds the lease of: it is in progress, with the vendor's
/// progress and message, the plugin's new state (`None` keeps it), and the next poll time.
/// The lease is released. False when `node` no longer holds the lease (nothing is written).
#[allow(clippy::too_many_arguments)]
pub async fn progress(
    db: &Db,
    id: &str,
    node: &str,
    percent: Option<i64>,
    message: Option<&str>,
    state: Option<&str>,
    next_poll_at: i64,
    now: i64,
) -> Result<bool> {
    if let Some(s) = state {
        check_state(s)?;
    }
    let done = sqlx::query(
        "UPDATE tasks SET status = $1, progress = COALESCE($2, progress), message = COALESCE($3, message), \
         state = COALESCE($4, state), next_poll_at = $5, polls = polls + 1, lease_owner = NULL, lease_until = NULL, \
         updated_at = $6 WHERE id = $7 AND lease_owner = $8 AND status IN ($9, $1)",
    )
    .bind(IN_PROGRESS)
    .bind(percent)
    .bind(message)
    .bind(state)
    .bind(next_poll_at)
    .bind(now)
    .bind(id)
    .bind(node)
    .bind(QUEUED)
    .execute(db)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// How a task ended.
#[derive(Debug, Clone, Default)]
pub struct Outcome<'a> {
    /// `SUCCEEDED`, `FAILED`, `EXPIRED` or `CANCELLED`.
    pub status: &'a str,
    pub outputs: Option<&'a str>,
    pub charge_micros: Option<i64>,
    pub error_kind: Option<&'a str>,
    pub message: Option<&'a str>,
}

/// Moves a task to its final status. True for exactly one caller: the one whose transition
/// settles the task (charges or releases its reservation); false when it had already ended.
pub async fn finish(db: &Db, id: &str, outcome: &Outcome<'_>, now: i64) -> Result<bool> {
    if ![SUCCEEDED, FAILED, EXPIRED, CANCELLED].contains(&outcome.status) {
        bail!("'{}' is not a final task status", outcome.status);
    }
    let done = sqlx::query(
        "UPDATE tasks SET status = $1, outputs = $2, charge_micros = $3, error_kind = $4, \
         message = COALESCE($5, message), progress = CASE WHEN $1 = $6 THEN 100 ELSE progress END, \
         lease_owner = NULL, lease_until = NULL, updated_at = $7 WHERE id = $8 AND status IN ($9, $10)",
    )
    .bind(outcome.status)
    .bind(outcome.outputs)
    .bind(outcome.charge_micros)
    .bind(outcome.error_kind)
    .bind(outcome.message)
    .bind(SUCCEEDED)
    .bind(now)
    .bind(id)
    .bind(QUEUED)
    .bind(IN_PROGRESS)
    .execute(db)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// The ids of unfinished tasks past their expiry (the poller expires each with `finish`).
pub async fn overdue(db: &Db, now: i64, limit: i64) -> Result<Vec<String>> {
    let rows: Vec<(String,)> = sqlx::query_as(
        "SELECT id FROM tasks WHERE status IN ($1, $2) AND expires_at <= $3 ORDER BY expires_at LIMIT $4",
    )
    .bind(QUEUED)
    .bind(IN_PROGRESS)
    .bind(now)
    .bind(limit)
    .fetch_all(db)
    .await?;
    Ok(rows.into_iter().map(|(id,)| id).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn new_task(user_id: i64, first_poll_at: i64) -> NewTask {
        NewTask {
            user_id,
            key_id: 1,
            channel: "video".into(),
            key_fingerprint: "fp".into(),
            plugin: "kling".into(),
            plugin_version: "1.0.0".into(),
            op: "video".into(),
            model: "kling-v2".into(),
            state: r#"{"vendor_id":"v1"}"#.into(),
            reserved_micros: 500_000,
            request_id: "req-1".into(),
            first_poll_at,
            expires_at: first_poll_at + 3600,
        }
    }

    #[tokio::test]
    async fn each_due_task_is_leased_to_one_node_and_taken_over_when_its_lease_runs_out() {
        let db = crate::open_for_test("tasks_lease").await;
        for i in 0..6 {
            insert(&db, &format!("task_{i}"), &new_task(1, 100), 90).await.unwrap();
        }
        insert(&db, "task_later", &new_task(1, 500), 90).await.unwrap();
        // Two nodes claim at once: disjoint, and together every due task once.
        let (a, b) = tokio::join!(claim_due(&db, "node-a", 100, 30, 4), claim_due(&db, "node-b", 100, 30, 4));
        let (a, b) = (a.unwrap(), b.unwrap());
        let mut ids: Vec<&str> = a.iter().chain(&b).map(|t| t.id.as_str()).collect();
        ids.sort();
        ids.dedup();
        assert_eq!(ids.len(), a.len() + b.len(), "no task leased twice");
        let rest = claim_due(&db, "node-c", 101, 30, 10).await.unwrap();
        assert_eq!(a.len() + b.len() + rest.len(), 6, "every due task, none not yet due");
        assert!(claim_due(&db, "node-c", 110, 30, 10).await.unwrap().is_empty(), "all leased");
        // Only the lease holder records progress; then the task is due again at its next poll.
        let t = &a.first().or(b.first()).unwrap().clone();
        let holder = t.lease_owner.clone().unwrap();
        assert!(!progress(&db, &t.id, "someone-else", Some(5), None, None, 200, 110).await.unwrap());
        assert!(progress(&db, &t.id, &holder, Some(40), Some("rendering"), Some("{}"), 200, 110).await.unwrap());
        let stored = get(&db, &t.id, 1).await.unwrap().unwrap();
        assert_eq!((stored.status.as_str(), stored.progress, stored.polls), (IN_PROGRESS, Some(40), 1));
        assert_eq!((stored.state.as_str(), stored.lease_owner), ("{}", None));
        // A node that died: its leases run out and another node takes the tasks over.
        let taken = claim_due(&db, "node-d", 150, 30, 10).await.unwrap();
        assert_eq!(taken.len(), 5, "the five leased tasks whose leases ran out, not the one polled");
        assert!(taken.iter().all(|t| t.lease_owner.as_deref() == Some("node-d")));
    }

    #[tokio::test]
    async fn a_task_ends_once_and_only_its_owner_sees_it() {
        let db = crate::open_for_test("tasks_end").await;
        insert(&db, "task_a", &new_task(7, 100), 90).await.unwrap();
        assert!(get(&db, "task_a", 8).await.unwrap().is_none(), "another user's task is not found");
        assert_eq!(list(&db, 8, 10).await.unwrap().len(), 0);
        assert_eq!(list(&db, 7, 10).await.unwrap().len(), 1);
        let ok = Outcome { status: SUCCEEDED, outputs: Some("[]"), charge_micros: Some(400_000), ..Default::default() };
        let failed = Outcome { status: FAILED, error_kind: Some("upstream_fault"), ..Default::default() };
        // Two settlements race (two nodes, a poll and a cancel): exactly one wins.
        let (x, y) = tokio::join!(finish(&db, "task_a", &ok, 200), finish(&db, "task_a", &failed, 200));
        assert!(x.unwrap() ^ y.unwrap(), "exactly one transition settles the task");
        assert!(!finish(&db, "task_a", &ok, 300).await.unwrap(), "never twice");
        let t = get(&db, "task_a", 7).await.unwrap().unwrap();
        assert!(t.is_final());
        assert!(claim_due(&db, "n", 10_000, 30, 10).await.unwrap().is_empty(), "a final task is never polled");
        assert!(finish(&db, "task_a", &Outcome { status: QUEUED, ..Default::default() }, 1).await.is_err());
    }

    #[tokio::test]
    async fn overdue_tasks_are_found_and_state_is_capped() {
        let db = crate::open_for_test("tasks_overdue").await;
        insert(&db, "task_old", &new_task(1, 100), 90).await.unwrap();
        assert!(overdue(&db, 3699, 10).await.unwrap().is_empty());
        assert_eq!(overdue(&db, 3700, 10).await.unwrap(), vec!["task_old".to_string()]);
        let mut big = new_task(1, 100);
        big.state = "x".repeat(MAX_STATE_BYTES + 1);
        assert!(insert(&db, "task_big", &big, 90).await.is_err());
        assert_eq!(new_id(u128::MAX).len(), "task_".len() + 32);
    }
}
