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
//! - the plugin's persisted state is at most `MAX_STATE_BYTES`;
//! - money survives restarts and nodes: a submit writes the task, its call record and a hold
//!   of its reservation on the ledger in one transaction (`create_with_hold`); the final
//!   transition writes the settlement (the hold minus the charge, given back) in the same
//!   transaction as the status (`finish_and_settle`), so a task is settled exactly once and
//!   never without its hold. Ledger entries are charges keyed `<request id>` (the hold) and
//!   `<request id>:settle` (negative: a refund), each with its call record, so the ledger's
//!   invariants (`tollgate ledger verify`) hold unchanged.

use super::{CallRecord, Db};
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
    pub price_group: String,
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
    /// What the surface that created the task keeps of its request (JSON).
    pub params: Option<String>,
    /// Where the task's end is POSTed, and how that delivery stands.
    pub callback_url: Option<String>,
    pub callback_state: Option<String>,
    pub callback_attempts: i64,
    pub callback_at: Option<i64>,
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
    pub price_group: String,
    pub state: String,
    pub reserved_micros: i64,
    pub request_id: String,
    pub first_poll_at: i64,
    pub expires_at: i64,
    /// What the surface keeps of the request (at most `MAX_PARAMS_BYTES`).
    pub params: Option<String>,
    /// The consumer's callback URL (checked against the operator's hosts before the call).
    pub callback_url: Option<String>,
}

/// The most a surface keeps of a task's request.
pub const MAX_PARAMS_BYTES: usize = 8 << 10;

/// A fresh, unguessable task id.
pub fn new_id(random: u128) -> String {
    format!("task_{random:032x}")
}

const COLUMNS: &str =
    "id, user_id, key_id, channel, key_fingerprint, plugin, plugin_version, op, model, price_group, state, \
     status, progress, message, polls, next_poll_at, lease_owner, lease_until, outputs, reserved_micros, \
     charge_micros, error_kind, request_id, created_at, updated_at, expires_at, params, callback_url, callback_state, \
     callback_attempts, callback_at";

fn check_state(state: &str) -> Result<()> {
    if state.len() > MAX_STATE_BYTES {
        bail!("the plugin's task state is {} bytes; at most {MAX_STATE_BYTES} are kept", state.len());
    }
    Ok(())
}

/// Stores a new task, queued, with no hold: for tests only (a real task is created with its
/// hold, `create_with_hold`; settling a task without one would give back money never held).
#[cfg(any(test, feature = "test-support"))]
pub async fn insert(db: &Db, id: &str, t: &NewTask, now: i64) -> Result<()> {
    let mut conn = db.acquire().await?;
    insert_row(&mut conn, id, t, now).await
}

async fn insert_row(conn: &mut sqlx::AnyConnection, id: &str, t: &NewTask, now: i64) -> Result<()> {
    check_state(&t.state)?;
    if t.params.as_ref().is_some_and(|p| p.len() > MAX_PARAMS_BYTES) {
        bail!("a task's params are at most {MAX_PARAMS_BYTES} bytes");
    }
    sqlx::query(
        "INSERT INTO tasks (id, user_id, key_id, channel, key_fingerprint, plugin, plugin_version, op, model, price_group, \
         state, status, polls, next_poll_at, reserved_micros, request_id, created_at, updated_at, expires_at, params, \
         callback_url) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, 0, $13, $14, $15, $16, $16, $17, $18, $19)",
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
    .bind(&t.price_group)
    .bind(&t.state)
    .bind(QUEUED)
    .bind(t.first_poll_at)
    .bind(t.reserved_micros)
    .bind(&t.request_id)
    .bind(now)
    .bind(t.expires_at)
    .bind(&t.params)
    .bind(&t.callback_url)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// Stores a new task and holds its `reserved_micros` of its owner's balance (and of its key's limit):
/// the task, the submit's call record and the ledger entry commit together or not at all.
pub async fn create_with_hold(db: &Db, id: &str, t: &NewTask, record: &CallRecord, now: i64) -> Result<()> {
    let mut tx = db.begin().await?;
    insert_row(&mut tx, id, t, now).await?;
    let record = CallRecord { charge_micros: t.reserved_micros, ..record.clone() };
    charge(&mut tx, &record).await?;
    tx.commit().await?;
    Ok(())
}

/// A settled task: who paid, and what was given back of the hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Settled {
    pub user_id: i64,
    pub key_id: i64,
    pub refund_micros: i64,
}

/// Ends a task with its settlement, in one transaction: the final status, then (for the one
/// caller whose transition it is) the hold minus the charge given back, with a call record
/// `<request id>:settle`. The charge is at most the hold: a task never costs more than was
/// held for it (the plugin's quote is its upper bound). `node`: the lease that must still be
/// held (a poll's result), or `None` (expiry, an operator). `None` when the task had already
/// ended or the lease was lost (nothing written).
pub async fn finish_and_settle(
    db: &Db,
    id: &str,
    node: Option<&str>,
    outcome: &Outcome<'_>,
    charge_micros: i64,
    now: i64,
) -> Result<Option<Settled>> {
    // The write comes first: it takes the write lock before anything is read (two SQLite
    // transactions that both read first deadlock when both then write).
    let mut tx = db.begin().await?;
    let outcome = Outcome { charge_micros: Some(charge_micros), ..outcome.clone() };
    if !finish_in(&mut tx, id, node, &outcome, now).await? {
        return Ok(None);
    }
    crate::archive::record(&mut tx, id, outcome.archived, now).await?;
    let sql = format!("SELECT {COLUMNS} FROM tasks WHERE id = $1");
    let task = sqlx::query_as::<_, Task>(&sql).bind(id).fetch_one(&mut *tx).await?;
    let refund = task.reserved_micros.saturating_sub(task.charge_micros.unwrap_or(0));
    let record = CallRecord {
        request_id: format!("{}:settle", task.request_id),
        key_id: Some(task.key_id),
        user_id: Some(task.user_id),
        channel: Some(task.channel.clone()),
        plugin: Some(task.plugin.clone()),
        model: Some(task.model.clone()),
        op: format!("{}.settle", task.op),
        status: 200,
        charge_micros: -refund,
        created_at: now,
        ..CallRecord::default()
    };
    if refund != 0 {
        charge(&mut tx, &record).await?;
    }
    tx.commit().await?;
    Ok(Some(Settled { user_id: task.user_id, key_id: task.key_id, refund_micros: refund }))
}

/// Why a task failed when the archive refused its outputs (the vendor made them: charged).
pub const ARCHIVE_FAILED: &str = "archive_failed";

/// An operator's retry of a task that failed only because the archive refused its outputs:
/// now they are archived, it succeeded. Its money was settled when it failed and is not
/// touched. Its callback is not sent again (its failure may be in delivery right now; the
/// consumer reads the task). `false`: the task is not (or no longer) such a task.
pub async fn rearchived(
    db: &Db,
    id: &str,
    outputs: &str,
    archived: &[crate::archive::Output],
    now: i64,
) -> Result<bool> {
    let mut tx = db.begin().await?;
    let done = sqlx::query(
        "UPDATE tasks SET status = $1, outputs = $2, error_kind = NULL, message = NULL, progress = 100, \
         updated_at = $3 WHERE id = $4 AND status = $5 AND error_kind = $6",
    )
    .bind(SUCCEEDED)
    .bind(tollgate_base::text::truncate(outputs, MAX_OUTPUTS_BYTES))
    .bind(now)
    .bind(id)
    .bind(FAILED)
    .bind(ARCHIVE_FAILED)
    .execute(&mut *tx)
    .await?;
    if done.rows_affected() == 0 {
        return Ok(false);
    }
    crate::archive::record(&mut tx, id, archived, now).await?;
    tx.commit().await?;
    Ok(true)
}

/// Writes a call record with its charge: the call log row, the ledger entry (keyed by the
/// request id: a second one fails the transaction) and the balances.
async fn charge(tx: &mut sqlx::Transaction<'_, sqlx::Any>, r: &CallRecord) -> Result<()> {
    sqlx::query(
        "INSERT INTO call_log (request_id, key_id, channel, plugin, model, op, status, latency_us, streamed, \
         interrupted, created_at, charge_micros, estimated) VALUES ($1, $2, $3, $4, $5, $6, $7, 0, 0, 0, $8, $9, $10)",
    )
    .bind(&r.request_id)
    .bind(r.key_id)
    .bind(&r.channel)
    .bind(&r.plugin)
    .bind(&r.model)
    .bind(&r.op)
    .bind(i64::from(r.status))
    .bind(r.created_at)
    .bind(r.charge_micros)
    .bind(r.estimated as i64)
    .execute(&mut **tx)
    .await?;
    sqlx::query(
        "INSERT INTO ledger (entry_id, key_id, user_id, amount_micros, kind, created_at) VALUES ($1, $2, $3, $4, 'charge', $5)",
    )
    .bind(&r.request_id)
    .bind(r.key_id.unwrap_or_default())
    .bind(r.user_id.unwrap_or_default())
    .bind(-r.charge_micros)
    .bind(r.created_at)
    .execute(&mut **tx)
    .await?;
    sqlx::query("UPDATE users SET balance_micros = balance_micros - $1 WHERE id = $2")
        .bind(r.charge_micros)
        .bind(r.user_id.unwrap_or_default())
        .execute(&mut **tx)
        .await?;
    sqlx::query("UPDATE consumer_keys SET spent_micros = spent_micros + $1 WHERE id = $2")
        .bind(r.charge_micros)
        .bind(r.key_id.unwrap_or_default())
        .execute(&mut **tx)
        .await?;
    Ok(())
}

/// The task `id` if `user_id` owns it.
pub async fn get(db: &Db, id: &str, user_id: i64) -> Result<Option<Task>> {
    let sql = format!("SELECT {COLUMNS} FROM tasks WHERE id = $1 AND user_id = $2");
    Ok(sqlx::query_as::<_, Task>(&sql).bind(id).bind(user_id).fetch_optional(db).await?)
}

/// The task `id`, whoever owns it (for operators).
pub async fn find(db: &Db, id: &str) -> Result<Option<Task>> {
    let sql = format!("SELECT {COLUMNS} FROM tasks WHERE id = $1");
    Ok(sqlx::query_as::<_, Task>(&sql).bind(id).fetch_optional(db).await?)
}

/// The ledger entries of a task (its hold, and its settlement once it ended): entry id,
/// amount (negative: taken from the balance), time.
pub async fn ledger(db: &Db, task: &Task) -> Result<Vec<(String, i64, i64)>> {
    Ok(sqlx::query_as(
        "SELECT entry_id, amount_micros, created_at FROM ledger WHERE entry_id = $1 OR entry_id = $2 ORDER BY created_at, entry_id",
    )
    .bind(&task.request_id)
    .bind(format!("{}:settle", task.request_id))
    .fetch_all(db)
    .await?)
}

/// What an operator filters tasks by (every field optional).
#[derive(Debug, Clone, Default)]
pub struct Filter {
    pub status: Option<String>,
    pub user_id: Option<i64>,
    pub channel: Option<String>,
    pub plugin: Option<String>,
    pub limit: i64,
}

/// Every user's tasks matching `f`, newest first (for operators).
pub async fn search(db: &Db, f: &Filter) -> Result<Vec<Task>> {
    let mut sql = format!("SELECT {COLUMNS} FROM tasks WHERE 1 = 1");
    let mut n = 0;
    let mut next = || {
        n += 1;
        n
    };
    if f.status.is_some() {
        sql.push_str(&format!(" AND status = ${}", next()));
    }
    if f.user_id.is_some() {
        sql.push_str(&format!(" AND user_id = ${}", next()));
    }
    if f.channel.is_some() {
        sql.push_str(&format!(" AND channel = ${}", next()));
    }
    if f.plugin.is_some() {
        sql.push_str(&format!(" AND plugin = ${}", next()));
    }
    sql.push_str(&format!(" ORDER BY created_at DESC, id LIMIT ${}", next()));
    let mut q = sqlx::query_as::<_, Task>(&sql);
    if let Some(v) = &f.status {
        q = q.bind(v);
    }
    if let Some(v) = f.user_id {
        q = q.bind(v);
    }
    if let Some(v) = &f.channel {
        q = q.bind(v);
    }
    if let Some(v) = &f.plugin {
        q = q.bind(v);
    }
    Ok(q.bind(f.limit.clamp(1, 1000)).fetch_all(db).await?)
}

/// The owner's tasks, newest first.
pub async fn list(db: &Db, user_id: i64, limit: i64) -> Result<Vec<Task>> {
    page(db, user_id, None, None, limit, false).await
}

/// A page of the owner's tasks (of one op, if given), newest first or oldest first, after the
/// task `after` (a cursor: the last id of the previous page). An `after` that is not the
/// owner's task gives an empty page.
pub async fn page(
    db: &Db,
    user_id: i64,
    op: Option<&str>,
    after: Option<&str>,
    limit: i64,
    oldest_first: bool,
) -> Result<Vec<Task>> {
    let (cmp, order) = if oldest_first { (">", "ASC") } else { ("<", "DESC") };
    let mut sql = format!("SELECT {COLUMNS} FROM tasks WHERE user_id = $1 AND ($2 = '' OR op = $2)");
    if after.is_some() {
        sql.push_str(&format!(
            " AND (created_at, id) {cmp} (SELECT created_at, id FROM tasks WHERE id = $4 AND user_id = $1)"
        ));
    }
    sql.push_str(&format!(" ORDER BY created_at {order}, id {order} LIMIT $3"));
    let mut q = sqlx::query_as::<_, Task>(&sql).bind(user_id).bind(op.unwrap_or("")).bind(limit.clamp(1, 1000));
    if let Some(a) = after {
        q = q.bind(a);
    }
    Ok(q.fetch_all(db).await?)
}

/// How many unfinished tasks `user_id` has, counted up to `at_most`.
pub async fn count_open(db: &Db, user_id: i64, at_most: i64) -> Result<i64> {
    // The statuses are written out, as the partial index `tasks_open` names them.
    const _: () = assert!(QUEUED.len() == 6 && IN_PROGRESS.len() == 11);
    let (n,): (i64,) = sqlx::query_as(
        "SELECT COUNT(*) FROM (SELECT 1 FROM tasks WHERE user_id = $1 AND status IN ('queued', 'in_progress') \
         LIMIT $2) AS open_tasks",
    )
    .bind(user_id)
    .bind(at_most.max(0))
    .fetch_one(db)
    .await?;
    Ok(n)
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
    .bind(message.map(|m| tollgate_base::text::truncate(m, MAX_MESSAGE_BYTES)))
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

/// The callbacks due now (pending, due), each pushed `lease_secs` ahead so that no other node
/// delivers it meanwhile (the statement re-checks, so concurrent claims are disjoint).
pub async fn claim_callbacks(db: &Db, now: i64, lease_secs: i64, limit: i64) -> Result<Vec<Task>> {
    let sql = format!(
        "UPDATE tasks SET callback_at = $1 \
         WHERE id IN (SELECT id FROM tasks WHERE callback_state = 'pending' AND callback_at <= $2 ORDER BY callback_at LIMIT $3) \
         AND callback_state = 'pending' AND callback_at <= $2 RETURNING {COLUMNS}"
    );
    Ok(sqlx::query_as::<_, Task>(&sql).bind(now + lease_secs).bind(now).bind(limit).fetch_all(db).await?)
}

/// One delivery attempt of a task's callback: delivered, or due again at `retry_at`, or failed
/// for good (`retry_at` none).
pub async fn callback_attempted(db: &Db, id: &str, delivered: bool, retry_at: Option<i64>) -> Result<()> {
    let state = match (delivered, retry_at) {
        (true, _) => "delivered",
        (false, Some(_)) => "pending",
        (false, None) => "failed",
    };
    sqlx::query(
        "UPDATE tasks SET callback_state = $1, callback_attempts = callback_attempts + 1, callback_at = $2 \
         WHERE id = $3 AND callback_state = 'pending'",
    )
    .bind(state)
    .bind(retry_at)
    .bind(id)
    .execute(db)
    .await?;
    Ok(())
}

/// Extends `node`'s lease of a task to `until` (a poll that downloads the outputs). False
/// when `node` no longer holds it.
pub async fn extend_lease(db: &Db, id: &str, node: &str, until: i64) -> Result<bool> {
    let done =
        sqlx::query("UPDATE tasks SET lease_until = $1 WHERE id = $2 AND lease_owner = $3 AND status IN ($4, $5)")
            .bind(until)
            .bind(id)
            .bind(node)
            .bind(QUEUED)
            .bind(IN_PROGRESS)
            .execute(db)
            .await?;
    Ok(done.rows_affected() == 1)
}

/// Gives a lease back untouched (the task was not polled this round): due again at once.
pub async fn release(db: &Db, id: &str, node: &str) -> Result<()> {
    sqlx::query("UPDATE tasks SET lease_owner = NULL, lease_until = NULL WHERE id = $1 AND lease_owner = $2")
        .bind(id)
        .bind(node)
        .execute(db)
        .await?;
    Ok(())
}

/// How a task ended.
#[derive(Debug, Clone, Default)]
pub struct Outcome<'a> {
    /// `SUCCEEDED`, `FAILED`, `EXPIRED` or `CANCELLED`.
    pub status: &'a str,
    /// What the consumer sees of the outputs (JSON).
    pub outputs: Option<&'a str>,
    /// The files archived for the outputs, recorded with the final status.
    pub archived: &'a [crate::archive::Output],
    pub charge_micros: Option<i64>,
    pub error_kind: Option<&'a str>,
    pub message: Option<&'a str>,
}

/// Moves a task to its final status. True for exactly one caller: the one whose transition
/// settles the task (charges or releases its reservation); false when it had already ended.
pub async fn finish(db: &Db, id: &str, outcome: &Outcome<'_>, now: i64) -> Result<bool> {
    let mut conn = db.acquire().await?;
    finish_in(&mut conn, id, None, outcome, now).await
}

async fn finish_in(
    conn: &mut sqlx::AnyConnection,
    id: &str,
    node: Option<&str>,
    outcome: &Outcome<'_>,
    now: i64,
) -> Result<bool> {
    if ![SUCCEEDED, FAILED, EXPIRED, CANCELLED].contains(&outcome.status) {
        bail!("'{}' is not a final task status", outcome.status);
    }
    let done = sqlx::query(
        "UPDATE tasks SET status = $1, outputs = $2, \
         charge_micros = CASE WHEN $3 > reserved_micros THEN reserved_micros WHEN $3 < 0 THEN 0 ELSE $3 END, error_kind = $4, \
         message = COALESCE($5, message), progress = CASE WHEN $1 = $6 THEN 100 ELSE progress END, \
         lease_owner = NULL, lease_until = NULL, updated_at = $7, \
         callback_state = CASE WHEN callback_url IS NULL THEN NULL ELSE 'pending' END, callback_at = $7 \
         WHERE id = $8 AND status IN ($9, $10) \
         AND ($11 = '' OR lease_owner = $11)",
    )
    .bind(outcome.status)
    .bind(outcome.outputs.map(|o| tollgate_base::text::truncate(o, MAX_OUTPUTS_BYTES)))
    .bind(outcome.charge_micros)
    .bind(outcome.error_kind)
    .bind(outcome.message.map(|m| tollgate_base::text::truncate(m, MAX_MESSAGE_BYTES)))
    .bind(SUCCEEDED)
    .bind(now)
    .bind(id)
    .bind(QUEUED)
    .bind(IN_PROGRESS)
    .bind(node.unwrap_or(""))
    .execute(&mut *conn)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// The largest vendor message and outputs list kept per task.
const MAX_MESSAGE_BYTES: usize = 1 << 10;
const MAX_OUTPUTS_BYTES: usize = 64 << 10;

/// The ids of unfinished tasks past their expiry that no node is polling (the poller expires
/// each with `finish_and_settle`; one being polled ends by its poll, or expires next round).
pub async fn overdue(db: &Db, now: i64, limit: i64) -> Result<Vec<String>> {
    let rows: Vec<(String,)> = sqlx::query_as(
        "SELECT id FROM tasks WHERE status IN ($1, $2) AND expires_at <= $3 \
         AND (lease_until IS NULL OR lease_until < $3) ORDER BY expires_at LIMIT $4",
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
pub(crate) mod tests {
    use super::*;

    /// A task of `user_id` first due at `first_poll_at` (for the store's tests).
    pub(crate) fn new_task(user_id: i64, first_poll_at: i64) -> NewTask {
        NewTask {
            user_id,
            key_id: 1,
            channel: "video".into(),
            key_fingerprint: "fp".into(),
            plugin: "kling".into(),
            plugin_version: "1.0.0".into(),
            op: "video".into(),
            model: "kling-v2".into(),
            price_group: "default".into(),
            state: r#"{"vendor_id":"v1"}"#.into(),
            reserved_micros: 500_000,
            request_id: "req-1".into(),
            first_poll_at,
            expires_at: first_poll_at + 3600,
            params: None,
            callback_url: None,
        }
    }

    #[tokio::test]
    async fn open_tasks_are_counted_per_user_and_only_up_to_the_bound() {
        let db = crate::open_for_test("tasks_count_open").await;
        for i in 0..3 {
            insert(&db, &format!("task_{i}"), &new_task(1, 100), 90).await.unwrap();
        }
        insert(&db, "task_other", &new_task(2, 100), 90).await.unwrap();
        let done = Outcome { status: SUCCEEDED, outputs: Some("[]"), ..Default::default() };
        assert!(finish(&db, "task_0", &done, 95).await.unwrap());
        assert_eq!(count_open(&db, 1, 10).await.unwrap(), 2, "an ended task is not open");
        assert_eq!(count_open(&db, 1, 1).await.unwrap(), 1, "counted up to the bound");
        assert_eq!(count_open(&db, 3, 10).await.unwrap(), 0);
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
        // A lease given back untouched makes the task due again at once, for any node.
        let other = a.iter().chain(&b).find(|x| x.id != t.id).unwrap().clone();
        release(&db, &other.id, "not-the-holder").await.unwrap();
        assert!(claim_due(&db, "node-e", 111, 30, 10).await.unwrap().is_empty(), "only the holder releases");
        release(&db, &other.id, other.lease_owner.as_deref().unwrap()).await.unwrap();
        let again = claim_due(&db, "node-e", 111, 30, 10).await.unwrap();
        assert_eq!(again.iter().map(|x| x.id.as_str()).collect::<Vec<_>>(), [other.id.as_str()]);
        assert_eq!(again[0].polls, 0, "not counted as a poll");
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
        insert(&db, "task_b", &new_task(8, 100), 95).await.unwrap();
        let all = search(&db, &Filter { limit: 10, ..Default::default() }).await.unwrap();
        assert_eq!(all.iter().map(|t| t.id.as_str()).collect::<Vec<_>>(), ["task_b", "task_a"]);
        let mine = Filter { user_id: Some(7), status: Some(t.status.clone()), limit: 10, ..Default::default() };
        assert_eq!(search(&db, &mine).await.unwrap().len(), 1);
        let none =
            Filter { plugin: Some("suno".into()), channel: Some("video".into()), limit: 10, ..Default::default() };
        assert!(search(&db, &none).await.unwrap().is_empty());
    }

    /// A user granted 1.000000, and a key of theirs.
    async fn account(db: &Db) {
        sqlx::query("INSERT INTO users (name, balance_micros, created_at, updated_at) VALUES ('u', 1000000, 0, 0)")
            .execute(db)
            .await
            .unwrap();
        sqlx::query(
            "INSERT INTO consumer_keys (name, key_hash, key_prefix, created_at, updated_at, user_id) \
             VALUES ('k', 'h', 'p', 0, 0, 1)",
        )
        .execute(db)
        .await
        .unwrap();
        sqlx::query(
            "INSERT INTO ledger (entry_id, key_id, user_id, amount_micros, kind, created_at) \
             VALUES ('grant-1', 1, 1, 1000000, 'grant', 0)",
        )
        .execute(db)
        .await
        .unwrap();
    }

    async fn money(db: &Db) -> (i64, i64, i64, i64) {
        let (balance, ledger): (i64, i64) = sqlx::query_as(
            "SELECT u.balance_micros, CAST((SELECT SUM(l.amount_micros) FROM ledger l WHERE l.user_id = u.id) AS BIGINT) \
             FROM users u WHERE u.id = 1",
        )
        .fetch_one(db)
        .await
        .unwrap();
        let (spent, charged): (i64, i64) = sqlx::query_as(
            "SELECT k.spent_micros, CAST(COALESCE((SELECT -SUM(l.amount_micros) FROM ledger l \
             WHERE l.key_id = k.id AND l.kind = 'charge'), 0) AS BIGINT) FROM consumer_keys k WHERE k.id = 1",
        )
        .fetch_one(db)
        .await
        .unwrap();
        (balance, ledger, spent, charged)
    }

    fn submit_record(request_id: &str) -> CallRecord {
        CallRecord {
            request_id: request_id.into(),
            key_id: Some(1),
            user_id: Some(1),
            op: "video".into(),
            status: 200,
            created_at: 90,
            ..CallRecord::default()
        }
    }

    #[tokio::test]
    async fn a_task_holds_its_reservation_and_is_settled_once_by_what_it_cost() {
        let db = crate::open_for_test("tasks_money").await;
        account(&db).await;
        let mut t = new_task(1, 100);
        t.request_id = "req-v".into();
        create_with_hold(&db, "task_v", &t, &submit_record("req-v"), 90).await.unwrap();
        // The hold is on the ledger at once: it survives a restart of the node.
        assert_eq!(money(&db).await, (500_000, 500_000, 500_000, 500_000));
        // The same request id cannot hold twice; nothing of the second attempt is written.
        let mut again = new_task(1, 100);
        again.request_id = "req-v".into();
        assert!(create_with_hold(&db, "task_w", &again, &submit_record("req-v"), 90).await.is_err());
        assert!(get(&db, "task_w", 1).await.unwrap().is_none());
        // Two nodes settle at once (a poll and a cancel): one gives back 0.5 - 0.3, once.
        let ok = Outcome { status: SUCCEEDED, outputs: Some("[]"), ..Default::default() };
        let cancel = Outcome { status: CANCELLED, ..Default::default() };
        let (x, y) = tokio::join!(
            finish_and_settle(&db, "task_v", None, &ok, 300_000, 200),
            finish_and_settle(&db, "task_v", None, &cancel, 0, 200)
        );
        let settled: Vec<i64> = [x.unwrap(), y.unwrap()].into_iter().flatten().map(|s| s.refund_micros).collect();
        assert_eq!(settled.len(), 1, "exactly one settlement");
        let (balance, ledger, spent, charged) = money(&db).await;
        assert_eq!((balance, spent), (1_000_000 - 500_000 + settled[0], 500_000 - settled[0]));
        assert_eq!((balance, spent), (ledger, charged), "the ledger's invariants hold");
        assert_eq!(finish_and_settle(&db, "task_v", None, &ok, 0, 300).await.unwrap(), None, "never again");
    }

    #[tokio::test]
    async fn only_the_lease_holder_settles_a_poll_and_never_beyond_the_hold() {
        let db = crate::open_for_test("tasks_lease_settle").await;
        account(&db).await;
        create_with_hold(&db, "task_l", &new_task(1, 100), &submit_record("req-l"), 90).await.unwrap();
        // Leased by node A at its expiry time: neither expiry nor node B can end it meanwhile.
        let leased = claim_due(&db, "node-a", 3700, 60, 10).await.unwrap();
        assert_eq!(leased.len(), 1);
        assert!(overdue(&db, 3750, 10).await.unwrap().is_empty(), "a task being polled does not expire");
        assert_eq!(overdue(&db, 3761, 10).await.unwrap().len(), 1, "once its lease ran out, it does");
        let ok = Outcome { status: SUCCEEDED, message: Some(&"é".repeat(2000)), ..Default::default() };
        assert_eq!(finish_and_settle(&db, "task_l", Some("node-b"), &ok, 1, 110).await.unwrap(), None);
        // Node A reports more than was held: the task costs its hold, no more.
        let settled = finish_and_settle(&db, "task_l", Some("node-a"), &ok, 9_000_000, 110).await.unwrap().unwrap();
        assert_eq!(settled.refund_micros, 0);
        assert_eq!(money(&db).await, (500_000, 500_000, 500_000, 500_000));
        let t = get(&db, "task_l", 1).await.unwrap().unwrap();
        assert_eq!(t.charge_micros, Some(500_000));
        assert!(t.message.unwrap().len() <= 1024, "the vendor's message is bounded");
    }

    #[tokio::test]
    async fn a_failed_task_gives_its_hold_back_whole() {
        let db = crate::open_for_test("tasks_refund").await;
        account(&db).await;
        create_with_hold(&db, "task_f", &new_task(1, 100), &submit_record("req-1"), 90).await.unwrap();
        let failed = Outcome { status: FAILED, error_kind: Some("content_filtered"), ..Default::default() };
        let settled = finish_and_settle(&db, "task_f", None, &failed, 0, 200).await.unwrap().unwrap();
        assert_eq!((settled.refund_micros, settled.user_id), (500_000, 1));
        assert_eq!(money(&db).await, (1_000_000, 1_000_000, 0, 0));
        let t = get(&db, "task_f", 1).await.unwrap().unwrap();
        assert_eq!((t.status.as_str(), t.charge_micros), (FAILED, Some(0)));
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

    #[tokio::test]
    async fn pages_follow_a_cursor_of_the_owners_tasks_in_either_order() {
        let db = crate::open_for_test("tasks_page").await;
        for (id, at, op) in
            [("task_1", 10, "video"), ("task_2", 20, "music"), ("task_3", 20, "video"), ("task_4", 30, "video")]
        {
            let t = NewTask { op: op.into(), ..new_task(1, 100) };
            insert(&db, id, &t, at).await.unwrap();
        }
        insert(&db, "task_other", &new_task(2, 100), 25).await.unwrap();
        let ids = |v: Vec<Task>| v.into_iter().map(|t| t.id).collect::<Vec<_>>();
        let newest = ids(page(&db, 1, Some("video"), None, 2, false).await.unwrap());
        assert_eq!(newest, ["task_4", "task_3"]);
        assert_eq!(ids(page(&db, 1, Some("video"), Some("task_3"), 2, false).await.unwrap()), ["task_1"]);
        assert_eq!(ids(page(&db, 1, None, Some("task_3"), 5, false).await.unwrap()), ["task_2", "task_1"]);
        assert_eq!(ids(page(&db, 1, Some("video"), Some("task_1"), 5, true).await.unwrap()), ["task_3", "task_4"]);
        // Another user's task is no cursor.
        assert!(page(&db, 1, None, Some("task_other"), 5, false).await.unwrap().is_empty());
        let mut with_params = new_task(1, 100);
        with_params.params = Some(r#"{"seconds":"8"}"#.into());
        insert(&db, "task_p", &with_params, 40).await.unwrap();
        assert_eq!(get(&db, "task_p", 1).await.unwrap().unwrap().params.as_deref(), Some(r#"{"seconds":"8"}"#));
        with_params.params = Some("x".repeat(MAX_PARAMS_BYTES + 1));
        assert!(insert(&db, "task_q", &with_params, 40).await.is_err());
    }

    #[tokio::test]
    async fn a_finished_tasks_callback_is_claimed_by_one_node_retried_and_ends_delivered_or_failed() {
        let db = crate::open_for_test("tasks_callbacks").await;
        let mut t = new_task(1, 100);
        t.callback_url = Some("https://hooks.example.com/a".into());
        insert(&db, "task_cb", &t, 90).await.unwrap();
        insert(&db, "task_none", &new_task(1, 100), 90).await.unwrap();
        assert!(claim_callbacks(&db, 200, 60, 10).await.unwrap().is_empty(), "nothing before the end");
        let ok = Outcome { status: SUCCEEDED, ..Default::default() };
        for id in ["task_cb", "task_none"] {
            assert!(finish(&db, id, &ok, 150).await.unwrap());
        }
        let (a, b) = tokio::join!(claim_callbacks(&db, 200, 60, 10), claim_callbacks(&db, 200, 60, 10));
        let (a, b) = (a.unwrap(), b.unwrap());
        assert_eq!(a.len() + b.len(), 1, "one node delivers it; a task without a callback has none");
        let claimed = a.into_iter().chain(b).next().unwrap();
        assert_eq!((claimed.id.as_str(), claimed.callback_state.as_deref()), ("task_cb", Some("pending")));
        assert!(claim_callbacks(&db, 230, 60, 10).await.unwrap().is_empty(), "held while it is tried");
        callback_attempted(&db, "task_cb", false, Some(300)).await.unwrap();
        assert!(claim_callbacks(&db, 299, 60, 10).await.unwrap().is_empty());
        assert_eq!(claim_callbacks(&db, 300, 60, 10).await.unwrap().len(), 1, "retried when due");
        callback_attempted(&db, "task_cb", true, None).await.unwrap();
        let t = get(&db, "task_cb", 1).await.unwrap().unwrap();
        assert_eq!((t.callback_state.as_deref(), t.callback_attempts), (Some("delivered"), 2));
        assert!(claim_callbacks(&db, 10_000, 60, 10).await.unwrap().is_empty());
        // A last failed attempt ends it.
        let mut t2 = new_task(1, 100);
        t2.callback_url = Some("https://hooks.example.com/b".into());
        insert(&db, "task_cb2", &t2, 90).await.unwrap();
        assert!(finish(&db, "task_cb2", &ok, 150).await.unwrap());
        callback_attempted(&db, "task_cb2", false, None).await.unwrap();
        assert_eq!(get(&db, "task_cb2", 1).await.unwrap().unwrap().callback_state.as_deref(), Some("failed"));
    }
}
