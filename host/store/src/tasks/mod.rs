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

pub mod events;
mod read;
pub use read::{count_open, find, get, ledger, list, page, search, Filter};

/// The largest plugin state kept per task.
pub const MAX_STATE_BYTES: usize = 64 << 10;

pub const QUEUED: &str = "queued";
pub const IN_PROGRESS: &str = "in_progress";
pub const SUCCEEDED: &str = "succeeded";
pub const FAILED: &str = "failed";
pub const EXPIRED: &str = "expired";
pub const CANCELLED: &str = "cancelled";
/// Every status a task can have, in the order a task moves through them.
pub const STATUSES: [&str; 6] = [QUEUED, IN_PROGRESS, SUCCEEDED, FAILED, EXPIRED, CANCELLED];

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
    /// The part of the hold that is one-time fees of objects the submit used (see
    /// `NewTask::fee_micros`).
    pub fee_micros: i64,
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
    /// The chat and the app's user reference the task was submitted for (recorded as given).
    pub chat_id: Option<String>,
    pub user_uuid: Option<String>,
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
    /// One-time fees of the objects the submit used (a cloned voice), within
    /// `reserved_micros`: charged with the task when it succeeds.
    pub fee_micros: i64,
    pub request_id: String,
    pub first_poll_at: i64,
    pub expires_at: i64,
    /// What the surface keeps of the request (at most `MAX_PARAMS_BYTES`).
    pub params: Option<String>,
    /// The consumer's callback URL (checked against the operator's hosts before the call).
    pub callback_url: Option<String>,
    /// The chat and the app's user reference of the submit (checked by the surface).
    pub chat_id: Option<String>,
    pub user_uuid: Option<String>,
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
     fee_micros, charge_micros, error_kind, request_id, created_at, updated_at, expires_at, params, callback_url, callback_state, \
     callback_attempts, callback_at, chat_id, user_uuid";

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
         callback_url, chat_id, user_uuid, fee_micros) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, 0, $13, $14, $15, $16, $16, $17, $18, $19, $20, $21, $22)",
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
    .bind(&t.chat_id)
    .bind(&t.user_uuid)
    .bind(t.fee_micros)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// Stores a new task and holds its `reserved_micros` of its owner's balance (and of its key's limit):
/// the task, the submit's call record and the ledger entry commit together or not at all.
pub async fn create_with_hold(db: &Db, id: &str, t: &NewTask, record: &CallRecord, now: i64) -> Result<()> {
    let mut tx = crate::begin_write(db).await?;
    insert_row(&mut tx, id, t, now).await?;
    let record = CallRecord { charge_micros: t.reserved_micros, ..record.clone() };
    charge(&mut tx, &record).await?;
    events::record(&mut tx, id, now).await?;
    tx.commit().await?;
    events::committed(db).await;
    Ok(())
}

/// Keeps the files one call archived (its plugin's `archive` step) for the call's owner: as a
/// task born succeeded that holds and is charged nothing (the call is billed as a call), so
/// that the files are served (`/v1/tasks/{id}/content/{n}`), listed and expired as every
/// task's are. `outputs` is the consumer's view of them (JSON).
pub async fn keep_call_files(
    db: &Db,
    id: &str,
    t: &NewTask,
    outputs: &str,
    archived: &[crate::archive::Output],
    now: i64,
) -> Result<()> {
    if t.reserved_micros != 0 || t.fee_micros != 0 {
        bail!("a call's archived files hold nothing");
    }
    let mut tx = crate::begin_write(db).await?;
    insert_row(&mut tx, id, t, now).await?;
    let done =
        Outcome { status: SUCCEEDED, outputs: Some(outputs), archived, charge_micros: Some(0), ..Default::default() };
    if !finish_in(&mut tx, id, None, &done, now).await? {
        bail!("the files' task {id} could not be ended");
    }
    crate::archive::record(&mut tx, id, archived, now).await?;
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
    let mut tx = crate::begin_write(db).await?;
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
    events::record(&mut tx, id, now).await?;
    tx.commit().await?;
    events::committed(db).await;
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
    let mut tx = crate::begin_write(db).await?;
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
    // No second event: its end (and charge) was told when it failed; the task shows the files.
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
pub(crate) mod tests;
