//! The batching writer for call records.
//!
//! The request path calls `CallLog::record`, which never waits: records go into bounded
//! queues and one task writes them in a transaction per batch (up to `BATCH` records, or what
//! arrived within `WINDOW`; the queues are read every `TICK`, so a record does not wake it).
//! A record carrying a charge has a queue of its own, taken first, and is never dropped: when
//! that queue is full, it waits for room in a task of its own, and the engine refuses new paid
//! calls and socket pieces until there is room (`charges_full`), so those tasks are at most the
//! calls and pieces that were in flight when it filled. A free record (a refused or
//! failed call) is dropped when its queue is full, counted in `dropped` and logged: never
//! silently. So a flood of refused calls cannot delay a charge's commit, which is when the
//! other nodes of a PostgreSQL database see it. A crash loses at most the records of one open
//! window.

use super::Db;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;

const BATCH: usize = 512;
/// Rows per insert statement. Only a statement of exactly this many rows is kept prepared, so
/// each database connection keeps one statement per table (two for the ledger: counted and
/// returning, see `insert`), whatever the batches' sizes (when every size was kept, the cache
/// held megabytes and RSS grew 70 MiB in a soak while the writer fell behind); a batch's
/// remainder is prepared for its one use. Parsing the statements was a quarter of the SQLite
/// writer's CPU. 64 × 22 parameters is within SQLite's 32,766 and PostgreSQL's 65,535.
const ROWS: usize = 64;
const WINDOW: Duration = Duration::from_millis(200);
/// How often a window's queue is read.
const TICK: Duration = Duration::from_millis(20);
/// Records per queue in tests (the gateway's is `call_log_queue` in its configuration).
#[cfg(any(test, feature = "test-support"))]
const QUEUE: usize = 65_536;

#[derive(Debug, Clone, Default)]
pub struct CallRecord {
    pub request_id: String,
    pub key_id: Option<i64>,
    /// The user whose balance pays the charge.
    pub user_id: Option<i64>,
    pub channel: Option<String>,
    pub plugin: Option<String>,
    pub model: Option<String>,
    pub op: String,
    pub status: u16,
    pub error_kind: Option<String>,
    pub latency_us: u64,
    pub streamed: bool,
    pub interrupted: bool,
    pub input_tokens: Option<u64>,
    pub output_tokens: Option<u64>,
    pub cached_tokens: Option<u64>,
    pub characters: Option<u64>,
    pub milliseconds: Option<u64>,
    pub images: Option<u64>,
    /// What the call is charged, in micros (0: free or failed).
    pub charge_micros: i64,
    /// Some billed units were estimated by the gateway, not reported by the vendor.
    pub estimated: bool,
    /// The charge also counts against the key's spending limit.
    pub key_limited: bool,
    pub created_at: i64,
    /// A chat socket's chat, and the app's user reference (never an identity).
    pub chat_id: Option<String>,
    pub user_uuid: Option<String>,
}

/// Who learns of committed charges (billing's wallets): the writer holds `lock` from before a
/// batch's transaction until every `committed` of it is applied, so a balance refresh that
/// takes the same lock never reads the database in between.
pub trait Charges: Send + Sync + 'static {
    fn lock(&self) -> &tokio::sync::Mutex<()>;
    /// The record's charge was committed (`applied`: the ledger took it; false when its
    /// request id had been charged already, or the batch was lost).
    fn committed(&self, record: &CallRecord, applied: bool);
}

#[derive(Clone)]
pub struct CallLog {
    /// Records without a charge: dropped when full.
    tx: mpsc::Sender<CallRecord>,
    /// Records carrying a charge: waited for, never dropped, and written first.
    charges: mpsc::Sender<CallRecord>,
    pub written: Arc<AtomicU64>,
    pub dropped: Arc<AtomicU64>,
    /// The most records the writer has found waiting in the queues (it looks every `TICK`):
    /// what they held was resident memory, about 0.5 KiB a record.
    pub queued_peak: Arc<AtomicU64>,
}

impl CallLog {
    /// Starts the writer task, with queues of `queue` records each. The returned handle
    /// finishes once every `CallLog` clone is dropped and the queues are drained (used on
    /// shutdown).
    pub fn start(db: Db, charges: Option<Arc<dyn Charges>>, queue: usize) -> (CallLog, tokio::task::JoinHandle<()>) {
        let queue = queue.max(1);
        let (tx, rx) = mpsc::channel(queue);
        let (charges_tx, charges_rx) = mpsc::channel(queue);
        let written = Arc::new(AtomicU64::new(0));
        let queued_peak = Arc::new(AtomicU64::new(0));
        let counters = Counters { written: written.clone(), queued_peak: queued_peak.clone() };
        let task = tokio::spawn(write_loop(db, Queues { charges: charges_rx, free: rx }, counters, charges));
        (CallLog { tx, charges: charges_tx, written, dropped: Arc::new(AtomicU64::new(0)), queued_peak }, task)
    }

    /// A call log whose records a test reads from the receiver instead of a database.
    #[cfg(any(test, feature = "test-support"))]
    pub fn to_channel() -> (CallLog, mpsc::Receiver<CallRecord>) {
        let (tx, rx) = mpsc::channel(QUEUE);
        let log = CallLog {
            charges: tx.clone(),
            tx,
            written: Arc::default(),
            dropped: Arc::default(),
            queued_peak: Arc::default(),
        };
        (log, rx)
    }

    /// Queues a record. A record carrying a charge waits for room rather than being dropped:
    /// money is never lost to a full queue.
    pub async fn record_charge(&self, record: CallRecord) {
        if self.charges.send(record).await.is_err() {
            tracing::error!("call log writer is gone: a charge was not recorded");
        }
    }

    /// Records waiting in the queues for the writer (not those of the batch it is writing).
    /// Grows when the database falls behind: what the queues hold is resident memory.
    pub fn queued(&self) -> usize {
        let waiting = |q: &mpsc::Sender<CallRecord>| q.max_capacity() - q.capacity();
        // A test's log (`to_channel`) has one queue for both.
        waiting(&self.tx) + if self.charges.same_channel(&self.tx) { 0 } else { waiting(&self.charges) }
    }

    /// The charges' queue is full: a charge recorded now would wait in a task of its own.
    pub fn charges_full(&self) -> bool {
        self.charges.capacity() == 0
    }

    pub fn record(&self, record: CallRecord) {
        if record.charge_micros != 0 {
            if let Err(mpsc::error::TrySendError::Full(record) | mpsc::error::TrySendError::Closed(record)) =
                self.charges.try_send(record)
            {
                let log = self.clone();
                tokio::spawn(async move { log.record_charge(record).await });
            }
            return;
        }
        if self.tx.try_send(record).is_err() {
            let n = self.dropped.fetch_add(1, Ordering::Relaxed) + 1;
            if n.is_power_of_two() {
                tracing::error!(dropped_total = n, "call log queue full: call records dropped");
            }
        }
    }
}

/// The writer's two queues. Charges are taken first: a flood of free records (refused calls)
/// never holds a charge back from the database, where the other nodes see it.
struct Queues {
    charges: mpsc::Receiver<CallRecord>,
    free: mpsc::Receiver<CallRecord>,
}

impl Queues {
    /// The next record, charges first; `None` once both queues are closed and empty.
    async fn next(&mut self) -> Option<CallRecord> {
        tokio::select! {
            biased;
            Some(r) = self.charges.recv() => Some(r),
            Some(r) = self.free.recv() => Some(r),
            else => None,
        }
    }

    /// Records waiting in both queues.
    fn len(&self) -> usize {
        self.charges.len() + self.free.len()
    }

    /// Moves what is queued into `batch`, charges first, up to `BATCH`; false once both
    /// queues are closed.
    fn take(&mut self, batch: &mut Vec<CallRecord>) -> bool {
        let mut open = false;
        for rx in [&mut self.charges, &mut self.free] {
            loop {
                if batch.len() >= BATCH {
                    return true;
                }
                match rx.try_recv() {
                    Ok(r) => batch.push(r),
                    Err(mpsc::error::TryRecvError::Empty) => {
                        open = true;
                        break;
                    }
                    Err(mpsc::error::TryRecvError::Disconnected) => break,
                }
            }
        }
        open
    }
}

/// What the writer counts for `/metrics` (see `CallLog`).
struct Counters {
    written: Arc<AtomicU64>,
    queued_peak: Arc<AtomicU64>,
}

async fn write_loop(db: Db, mut queues: Queues, counters: Counters, charges: Option<Arc<dyn Charges>>) {
    let Counters { written, queued_peak } = counters;
    let mut batch = Vec::with_capacity(BATCH);
    while let Some(first) = queues.next().await {
        batch.push(first);
        // The window's records are taken every `TICK`, not as each arrives: the writer wakes
        // a few times per batch rather than once per call.
        let deadline = tokio::time::Instant::now() + WINDOW;
        loop {
            queued_peak.fetch_max(queues.len() as u64 + 1, Ordering::Relaxed);
            let open = queues.take(&mut batch);
            let now = tokio::time::Instant::now();
            if batch.len() >= BATCH || !open || now >= deadline {
                break;
            }
            tokio::time::sleep_until(deadline.min(now + TICK)).await;
        }
        let mut attempt = 0;
        // Held from the transaction to the wallet update: a balance refresh never reads the
        // database between the two (see billing::wallet).
        let _sync = match &charges {
            Some(c) => Some(c.lock().lock().await),
            None => None,
        };
        loop {
            match insert(&db, &batch).await {
                Ok(applied) => {
                    written.fetch_add(batch.len() as u64, Ordering::Relaxed);
                    if let Some(c) = &charges {
                        for (r, applied) in batch.iter().zip(applied) {
                            if applied {
                                tollgate_base::metrics::METRICS
                                    .charged_micros
                                    .fetch_add(r.charge_micros.max(0) as u64, Ordering::Relaxed);
                            }
                            if r.charge_micros != 0 {
                                c.committed(r, applied);
                            }
                        }
                    }
                    break;
                }
                // A batch that carries charges is retried until the database takes it (money is
                // never dropped; new records wait in the queue meanwhile); one without is
                // retried three times.
                Err(e) if attempt < 3 || batch.iter().any(|r| r.charge_micros != 0) => {
                    attempt += 1;
                    tracing::warn!(error = %e, attempt, "writing call records failed; retrying");
                    tokio::time::sleep(Duration::from_millis(100 * attempt.min(50))).await;
                }
                Err(e) => {
                    tracing::error!(error = %e, records = batch.len(), "writing call records failed; batch lost");
                    if let Some(c) = &charges {
                        for r in batch.iter().filter(|r| r.charge_micros != 0) {
                            tracing::error!(request_id = %r.request_id, key_id = r.key_id, charge_micros = r.charge_micros, "charge not recorded");
                            c.committed(r, false);
                        }
                    }
                    break;
                }
            }
        }
        batch.clear();
    }
}

/// The record as the database can hold it, when it cannot as it is: PostgreSQL refuses a NUL
/// character in TEXT, and one record it refuses would hold back every charge batched with it,
/// so a NUL is written as U+FFFD. (Request ids are the gateway's own and match the ledger's
/// entries: written as they are.)
fn without_nul(r: &CallRecord) -> Option<CallRecord> {
    let has = |s: &Option<String>| s.as_deref().is_some_and(|s| s.contains('\0'));
    let texts = [&r.channel, &r.plugin, &r.model, &r.error_kind, &r.chat_id, &r.user_uuid];
    if !texts.into_iter().any(has) && !r.op.contains('\0') {
        return None;
    }
    let clean = |s: &Option<String>| s.as_ref().map(|s| s.replace('\0', "\u{FFFD}"));
    Some(CallRecord {
        channel: clean(&r.channel),
        plugin: clean(&r.plugin),
        model: clean(&r.model),
        error_kind: clean(&r.error_kind),
        chat_id: clean(&r.chat_id),
        user_uuid: clean(&r.user_uuid),
        op: r.op.replace('\0', "\u{FFFD}"),
        ..r.clone()
    })
}

/// Writes a batch in one transaction: the call records and the ledger entries as multi-row
/// inserts, then one balance update per key. Returns, for each record, whether its charge was
/// applied (false when the ledger already had a charge for that request id).
///
/// Usually every charge is new to the ledger, and the write is counted: a ledger insert that
/// adds as many rows as its chunk has proves each applied, and hands no row back (each
/// returned row goes from the database's thread to this task one by one: ~2 µs of CPU per
/// request at load). When one adds fewer (a request id charged already, twice in the batch, or
/// by another node meanwhile), that transaction is undone whole and the batch written again,
/// the ledger's inserts returning the ids they add: only those are applied.
async fn insert(db: &Db, batch: &[CallRecord]) -> Result<Vec<bool>, sqlx::Error> {
    match write(db, batch, Ledger::Counted).await? {
        Some(applied) => Ok(applied),
        None => Ok(write(db, batch, Ledger::Returning).await?.expect("a returning write knows each charge")),
    }
}

/// How `write` learns which charges the ledger took.
#[derive(Clone, Copy, PartialEq)]
enum Ledger {
    /// From the rows each insert adds: all of its chunk, or the write is undone (`None`).
    Counted,
    /// From the ids each insert returns.
    Returning,
}

/// One transaction of `insert`.
async fn write(db: &Db, batch: &[CallRecord], ledger: Ledger) -> Result<Option<Vec<bool>>, sqlx::Error> {
    let numbered = db.connect_options().database_url.scheme() != "sqlite";
    let mut tx = crate::begin_write(db).await?;
    for rows in batch.chunks(ROWS) {
        let sql = format!(
            "INSERT INTO call_log (request_id, key_id, channel, plugin, model, op, status, error_kind, \
             latency_us, streamed, interrupted, input_tokens, output_tokens, cached_tokens, characters, \
             milliseconds, images, created_at, charge_micros, estimated, chat_id, user_uuid) VALUES {}",
            placeholders(rows.len(), 22, numbered)
        );
        let cleaned: Vec<Option<CallRecord>> = rows.iter().map(without_nul).collect();
        let mut q = sqlx::query(&sql).persistent(rows.len() == ROWS);
        for (r, cleaned) in rows.iter().zip(&cleaned) {
            let r = cleaned.as_ref().unwrap_or(r);
            q = q
                .bind(&r.request_id)
                .bind(r.key_id)
                .bind(&r.channel)
                .bind(&r.plugin)
                .bind(&r.model)
                .bind(&r.op)
                .bind(r.status as i64)
                .bind(&r.error_kind)
                .bind(db_count(r.latency_us))
                .bind(r.streamed as i64)
                .bind(r.interrupted as i64)
                .bind(r.input_tokens.map(db_count))
                .bind(r.output_tokens.map(db_count))
                .bind(r.cached_tokens.map(db_count))
                .bind(r.characters.map(db_count))
                .bind(r.milliseconds.map(db_count))
                .bind(r.images.map(db_count))
                .bind(r.created_at)
                .bind(r.charge_micros)
                .bind(r.estimated as i64)
                .bind(&r.chat_id)
                .bind(&r.user_uuid);
        }
        q.execute(&mut *tx).await?;
    }

    let charges: Vec<&CallRecord> = batch.iter().filter(|r| r.charge_micros != 0).collect();
    let mut inserted = std::collections::HashSet::new();
    for rows in charges.chunks(ROWS) {
        let sql = format!(
            "INSERT INTO ledger (entry_id, key_id, user_id, amount_micros, kind, created_at) VALUES {} \
             ON CONFLICT (entry_id) DO NOTHING",
            placeholders(rows.len(), 6, numbered)
        );
        let prepared = rows.len() == ROWS;
        if ledger == Ledger::Returning {
            let returning = format!("{sql} RETURNING entry_id");
            let ids = sqlx::query_as_with::<_, (String,), _>(&returning, ledger_arguments(rows)?)
                .persistent(prepared)
                .fetch_all(&mut *tx)
                .await?;
            inserted.extend(ids.into_iter().map(|(id,)| id));
            continue;
        }
        let added = sqlx::query_with(&sql, ledger_arguments(rows)?)
            .persistent(prepared)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        if added != rows.len() as u64 {
            tx.rollback().await?;
            return Ok(None);
        }
        inserted.extend(rows.iter().map(|r| r.request_id.clone()));
    }

    // A request id's charge applies once: to its first record, if the ledger took it.
    let mut per_user: std::collections::BTreeMap<i64, i64> = std::collections::BTreeMap::new();
    let mut per_key: std::collections::BTreeMap<i64, i64> = std::collections::BTreeMap::new();
    let applied: Vec<bool> = batch
        .iter()
        .map(|r| {
            let applied = r.charge_micros != 0 && inserted.remove(&r.request_id);
            if applied {
                let user = per_user.entry(r.user_id.unwrap_or_default()).or_default();
                *user = user.saturating_add(r.charge_micros);
                let key = per_key.entry(r.key_id.unwrap_or_default()).or_default();
                *key = key.saturating_add(r.charge_micros);
            }
            applied
        })
        .collect();
    for (user_id, total) in per_user {
        sqlx::query("UPDATE users SET balance_micros = balance_micros - $1 WHERE id = $2")
            .bind(total)
            .bind(user_id)
            .execute(&mut *tx)
            .await?;
    }
    for (key_id, total) in per_key {
        sqlx::query("UPDATE consumer_keys SET spent_micros = spent_micros + $1 WHERE id = $2")
            .bind(total)
            .bind(key_id)
            .execute(&mut *tx)
            .await?;
    }
    tx.commit().await?;
    Ok(Some(applied))
}

/// The ledger entries of `rows` as arguments of `insert`'s ledger statement (six columns each).
fn ledger_arguments<'q>(rows: &[&'q CallRecord]) -> Result<sqlx::any::AnyArguments<'q>, sqlx::Error> {
    use sqlx::Arguments;
    let mut args = sqlx::any::AnyArguments::default();
    for r in rows {
        args.add(&r.request_id).map_err(sqlx::Error::Encode)?;
        args.add(r.key_id.unwrap_or_default()).map_err(sqlx::Error::Encode)?;
        args.add(r.user_id.unwrap_or_default()).map_err(sqlx::Error::Encode)?;
        args.add(-r.charge_micros).map_err(sqlx::Error::Encode)?;
        args.add("charge").map_err(sqlx::Error::Encode)?;
        args.add(r.created_at).map_err(sqlx::Error::Encode)?;
    }
    Ok(args)
}

/// A count as the database stores it (BIGINT): an absurd figure is capped, never wrapped
/// into a negative.
fn db_count(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// The VALUES list for `rows` rows of `columns` parameters: `($1, $2), ($3, $4)` for
/// PostgreSQL, `(?, ?), (?, ?)` for SQLite. (SQLite looks each named parameter up by a linear
/// scan: `$N` names made a 16,000-parameter batch quadratic, half the gateway's CPU under load.
/// sqlx's `QueryBuilder` writes `?` for the `Any` driver, which PostgreSQL refuses.)
fn placeholders(rows: usize, columns: usize, numbered: bool) -> String {
    let mut sql = String::with_capacity(rows * columns * 5);
    for row in 0..rows {
        sql.push_str(if row == 0 { "(" } else { ", (" });
        for col in 0..columns {
            if col > 0 {
                sql.push_str(", ");
            }
            if numbered {
                sql.push('$');
                sql.push_str(&(row * columns + col + 1).to_string());
            } else {
                sql.push('?');
            }
        }
        sql.push(')');
    }
    sql
}

#[cfg(test)]
mod tests;
