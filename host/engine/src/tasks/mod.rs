//! Asynchronous vendor jobs (video, music, long speech): a submit the vendor accepted becomes a
//! task, held on the ledger with it; the poller advances due tasks, each with a fresh plugin
//! call on the upstream key that created it; the final transition settles the task once.
//!
//! Invariants (tests in `tests/e2e/tests/tasks.rs` and `tollgate-store`'s `tasks`):
//! - a task's reservation is a ledger hold from its submit to its end: it survives restarts,
//!   and every node sees it in the owner's balance;
//! - a task is settled once, by the node whose final transition it is (a poll's result only
//!   while its node still holds the lease): success charges the units the vendor reported
//!   (its hold, estimated, when it left a priced unit unreported), never more than its hold;
//!   failure and expiry give the hold back; a task being polled does not expire; a batch
//!   (op `batch`) is charged by the answers its result files hold as they are archived, each
//!   at the model's batch share (`billing::batch`), its hold when they cannot be read whole
//!   or when it expires (its vendor runs it all the same);
//! - a poll never holds an instance between polls, never runs on another key, ends within
//!   `POLL_TIMEOUT` (well inside its lease), and a transient failure (network, rate limit, a
//!   refused key) only delays the task: its expiry ends it; a vendor saying the job is bad or
//!   gone fails it;
//! - the wallets follow every hold and settlement under their `sync` lock, so a balance
//!   refresh never undoes one.

use crate::billing::batch::{BatchOutput, BATCH_OP};
use crate::billing::{Account, Priced};
use crate::end::{reported, CallEnd};
use crate::exchange::{self, CallError, Outcome};
use crate::plugin::wit;
use crate::store::now_unix;
use crate::store::tasks::{self, NewTask, Task};
use crate::telemetry::METRICS;
use crate::{Answer, CallRequest, Engine};
use bytes::Bytes;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

mod callbacks;
pub mod feed;
mod retry;
mod submitting;
mod view;
pub use retry::RetryRefused;
pub use submitting::{InFlight, Submitting};
pub use view::view;

/// How long a node holds a due task while it polls it, and how long one poll may take (well
/// inside the lease, so that no other node polls the task meanwhile).
const LEASE_SECS: i64 = 60;
const POLL_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);
/// The most tasks one poll round takes.
pub const BATCH: usize = 16;
/// Polls are at least this far apart, and at most this far (vendor hints are clamped).
const MIN_POLL_SECS: i64 = 1;
const MAX_POLL_SECS: i64 = 60;

/// The header naming the gateway's task on a vendor-shaped answer to a submit (native routes):
/// `GET /v1/tasks/{id}` shows it, with its archived outputs.
pub const TASK_HEADER: &str = "x-tollgate-task-id";

/// The op a plugin maps to read a job's state, and the one that cancels it at the vendor.
pub const POLL_OP: &str = "task.poll";
pub const CANCEL_OP: &str = "task.cancel";

/// What a cancel did.
pub enum Cancel {
    /// Cancelled at the vendor; the hold is given back.
    Done,
    /// The task had already ended (with this status).
    Ended(String),
    /// Its vendor cannot cancel a job (the plugin has no `task.cancel`).
    Unsupported,
    /// The vendor (or the gateway) refused or failed the cancel; the task runs on.
    Failed(CallError),
}

/// What one exchange of a task (a poll, a cancel) gave; its key's health is reported.
struct TaskExchange {
    result: Result<Outcome, CallError>,
    /// Where the task's outputs may be downloaded from (see `task_exchange`).
    fetch_hosts: Vec<String>,
}

impl Engine {
    /// The vendor accepted a job: the task, the call's record and the hold of its
    /// reservation are written together; the consumer gets the plugin's vendor-shaped answer,
    /// or the gateway's task object.
    pub(super) async fn submitted(
        &self,
        r: &CallRequest,
        mut end: CallEnd,
        sub: wit::TaskSubmitted,
        key_fingerprint: String,
    ) -> Answer {
        let now = now_unix();
        let id = tasks::new_id(rand::random());
        let mut rec = end.draft();
        rec.status = 200;
        let new = NewTask {
            user_id: r.consumer.user_id,
            key_id: r.consumer.key_id,
            channel: rec.channel.clone().unwrap_or_default(),
            key_fingerprint,
            plugin: r.plugin.name().to_string(),
            plugin_version: r.plugin.manifest.version.clone(),
            op: r.op.clone(),
            model: r.model.clone(),
            price_group: r.consumer.group.to_string(),
            state: sub.state,
            reserved_micros: end.meter.as_ref().map_or(0, |m| m.reservation.amount),
            fee_micros: end.meter.as_ref().map_or(0, |m| m.fee_micros()),
            request_id: r.request_id.clone(),
            // Times are whole seconds: the first poll comes at least a full second after the submit.
            first_poll_at: now + 1 + poll_delay(sub.poll_after_ms, 0),
            expires_at: now + self.task_ttl_secs,
            params: r.task_params.clone(),
            callback_url: r.callback_url.clone(),
            chat_id: r.chat_id.clone(),
            user_uuid: r.user_uuid.clone(),
        };
        let stored = match &self.billing {
            Some(b) => {
                let _sync = b.wallets.sync.lock().await;
                let stored = tasks::create_with_hold(&self.db, &id, &new, &rec, now).await;
                if stored.is_ok() {
                    // The hold is in the database now: it replaces the reservation.
                    if let Some(m) = end.meter.take() {
                        let accounts = m.reservation.accounts.clone();
                        b.release(m);
                        b.wallets.apply_committed(&accounts, new.reserved_micros);
                    }
                }
                stored
            }
            None => tasks::create_with_hold(&self.db, &id, &new, &rec, now).await,
        };
        if let Err(e) = stored {
            tracing::error!(error = %format!("{e:#}"), request_id = %r.request_id, "a task the vendor accepted could not be stored");
            let e = CallError::new(
                500,
                "server_error",
                "task_not_stored",
                format!(
                    "The vendor accepted the job but the gateway could not store it; it is billed as reserved. Give the operator the request id {}.",
                    r.request_id
                ),
            );
            // A repeat with the same Idempotency-Key gets this answer: never a second job.
            if let Some(h) = end.untracked(&e) {
                let body = e.to_json().to_string();
                h.complete(Some((e.status, Some("application/json"), body.as_bytes()))).await;
            }
            return Answer::Failed(e);
        }
        let (status, headers, body) = match (r.task_view, sub.reply) {
            // The task is stored: a body only a request can have (the plugin's bug) is sent empty.
            (None, Some(reply)) => {
                // The vendor's own answer, and the gateway's task (its archived outputs) beside it.
                let mut headers = reply.headers;
                headers.push(wit::Header { name: TASK_HEADER.into(), value: id.clone() });
                (reply.status, headers, exchange::reply_body(reply.body).unwrap_or_default())
            }
            (task_view, _) => {
                let task = tasks::get(&self.db, &id, r.consumer.user_id).await.ok().flatten();
                let body =
                    task.as_ref().map(task_view.unwrap_or(view)).unwrap_or_else(|| serde_json::json!({ "id": id }));
                let json = wit::Header { name: "content-type".into(), value: "application/json".into() };
                (200, vec![json], Bytes::from(body.to_string()))
            }
        };
        METRICS.tasks_submitted.fetch_add(1, Relaxed);
        if let Some(h) = end.into_task() {
            let ct = headers.iter().find(|h| h.name.eq_ignore_ascii_case("content-type"));
            h.complete(Some((status, ct.map(|h| h.value.as_str()), &body))).await;
        }
        Answer::Full { status, headers, body }
    }

    /// One poll round of this node: tasks past their expiry end (their holds given back),
    /// then up to `BATCH` due tasks are leased and polled, at most `task_polls_per_round` of
    /// one plugin (vendors cap their query rates). Returns how many were polled (a full batch:
    /// the job polls again at once; otherwise it waits half a second).
    pub async fn poll_tasks(&self, node: &str) -> usize {
        let now = now_unix();
        match tasks::overdue(&self.db, now, BATCH as i64).await {
            Ok(ids) => {
                for id in ids {
                    // A batch keeps running at its vendor (and its results stay the consumer's to
                    // fetch there) after the gateway stops following it: it is charged its hold,
                    // never given it back.
                    let batch = match tasks::find(&self.db, &id).await {
                        Ok(Some(t)) if t.op == BATCH_OP => Some(t.reserved_micros.saturating_add(t.fee_micros)),
                        Ok(_) => None,
                        Err(e) => {
                            tracing::warn!(task = %id, error = %format!("{e:#}"), "reading an overdue task failed");
                            continue;
                        }
                    };
                    let expired = tasks::Outcome {
                        status: tasks::EXPIRED,
                        error_kind: Some("expired"),
                        message: Some(match batch {
                            Some(_) => "the batch did not finish before task_ttl_secs; it is charged its hold",
                            None => "the vendor did not finish the job in time",
                        }),
                        ..Default::default()
                    };
                    self.settle(&id, None, &expired, batch.unwrap_or(0)).await;
                }
            }
            Err(e) => tracing::warn!(error = %format!("{e:#}"), "reading overdue tasks failed"),
        }
        let due = match tasks::claim_due(&self.db, node, now, LEASE_SECS, BATCH as i64).await {
            Ok(due) => due,
            Err(e) => {
                tracing::warn!(error = %format!("{e:#}"), "claiming due tasks failed");
                return 0;
            }
        };
        // A vendor gets at most its share per round (`task_polls_per_round`); the rest of its
        // due tasks are given back untouched, for the next round.
        let mut per_plugin: std::collections::HashMap<String, usize> = Default::default();
        let mut polls = Vec::with_capacity(due.len());
        for t in due {
            let n = per_plugin.entry(t.plugin.clone()).or_default();
            *n += 1;
            if *n > self.task_polls_per_round {
                METRICS.task_polls_deferred.fetch_add(1, Relaxed);
                if let Err(e) = tasks::release(&self.db, &t.id, node).await {
                    tracing::warn!(task = %t.id, error = %format!("{e:#}"), "giving a lease back failed");
                }
            } else {
                polls.push(self.poll(node, t));
            }
        }
        let polled = polls.len();
        futures_util::future::join_all(polls).await;
        polled
    }

    /// Runs one exchange of `op` for a task (a poll, a cancel): a fresh plugin call on the
    /// upstream key that created it, within `POLL_TIMEOUT`. `Err`: why it could not run.
    async fn task_exchange(&self, task: &Task, op: &str) -> Result<TaskExchange, String> {
        let Some(plugin) = self.registry.current().get(&task.plugin).cloned() else {
            return Err("its plugin is not loaded".into());
        };
        let channels = self.channels.load();
        // A task submitted on a keyless channel (a vendor that needs none) runs without one.
        let (channel, key) = if task.key_fingerprint.is_empty() {
            match channels.for_plugin(&task.plugin, Some(task.model.as_str())) {
                Some(c) if c.key_count() == 0 => (Arc::clone(c), None),
                _ => return Err("no keyless channel of its plugin is configured".into()),
            }
        } else {
            match channels.with_key(&task.plugin, &task.key_fingerprint) {
                Some(c) => {
                    let key = c.key_by_fingerprint(&task.key_fingerprint);
                    (c, key)
                }
                None => return Err("the upstream key that created it is not configured".into()),
            }
        };
        let base_url = exchange::base_url(&channel, &plugin).map_err(|e| e.message)?;
        // Outputs may come from the hosts the plugin declares, and from the channel's own
        // host (the vendor's API serving its files; an operator's proxy in front of it).
        let mut fetch_hosts = plugin.manifest.fetch_hosts.clone();
        fetch_hosts.extend(base_url.parse::<http::Uri>().ok().and_then(|u| u.host().map(str::to_string)));
        let credential =
            crate::credential_for(&plugin, &channel, key.as_ref().map(|k| &k.secret)).map_err(|e| e.message)?;
        let mut call = wit::Call {
            op: op.into(),
            context: wit::CallContext {
                request_id: task.request_id.clone(),
                attempt: 1,
                path: String::new(),
                path_params: Vec::new(),
                base_url,
            },
            model: task.model.clone(),
            upstream_model: channel.upstream_model(&task.model).to_string(),
            body: wit::Body::Empty,
            query: String::new(),
            headers: Vec::new(),
            credential,
            config: channel.settings_json.clone(),
            task: Some(task.state.clone()),
            keep_speech: false,
            owned: Vec::new(),
        };
        let ctx = self.exchange_context(&plugin, &channel, key.as_ref().map(|k| &k.secret), Default::default(), false);
        let result = match tokio::time::timeout(POLL_TIMEOUT, exchange::run(ctx, &mut call)).await {
            Ok(result) => result,
            Err(_) => Err(CallError::upstream(wit::ErrorKind::Timeout, format!("the {op} did not finish in time"))),
        };
        if let Some(key) = &key {
            key.report(crate::key_outcome(&result));
        }
        Ok(TaskExchange { result, fetch_hosts })
    }

    /// Cancels a running task at its vendor (op `task.cancel`, on the key that created it) and
    /// gives its whole hold back. A vendor that cannot cancel (its plugin has no such op) keeps
    /// working, so the task is not cancelled: the operator pays for what it makes.
    pub async fn cancel_task(&self, task: &Task, by: &str) -> Cancel {
        if task.is_final() {
            return Cancel::Ended(task.status.clone());
        }
        let supported = self.registry.current().get(&task.plugin).is_some_and(|p| p.supports(CANCEL_OP));
        if !supported {
            return Cancel::Unsupported;
        }
        match self.task_exchange(task, CANCEL_OP).await {
            Err(why) => Cancel::Failed(CallError::config(why)),
            Ok(TaskExchange { result: Err(e), .. }) => Cancel::Failed(e),
            Ok(TaskExchange { result: Ok(Outcome::Reply { error: Some(e), .. }), .. }) => {
                Cancel::Failed(CallError::from_adapter(&e))
            }
            Ok(TaskExchange { result: Ok(Outcome::Reply { status: 200..=299, .. } | Outcome::Task(_)), .. }) => {
                let message = format!("cancelled by {by}");
                let cancelled = tasks::Outcome {
                    status: tasks::CANCELLED,
                    error_kind: Some("cancelled"),
                    message: Some(&message),
                    ..Default::default()
                };
                match self.settler().settle(&task.id, None, &cancelled, 0).await {
                    true => Cancel::Done,
                    // It ended meanwhile (a poll settled it first).
                    false => Cancel::Ended("finished".into()),
                }
            }
            Ok(_) => Cancel::Failed(CallError::plugin("the plugin answered a cancel with something else than a reply")),
        }
    }

    /// Polls one leased task: a fresh exchange with op `task.poll` on the key that created it.
    async fn poll(&self, node: &str, task: Task) {
        let (id, polls) = (task.id.as_str(), task.polls);
        let later = |why: &str| {
            tracing::warn!(task = %id, why, "task poll failed; trying again later");
            retry_later(&self.db, id, node, polls, None)
        };
        let TaskExchange { result, fetch_hosts } = match self.task_exchange(&task, POLL_OP).await {
            Ok(ran) => ran,
            Err(why) => return later(&why).await,
        };
        METRICS.task_polls.fetch_add(1, Relaxed);
        let now = now_unix();
        match result {
            Ok(Outcome::Task(wit::TaskState::Pending(p))) => {
                let next = now + poll_delay(p.poll_after_ms, task.polls);
                let percent = p.percent.map(|v| i64::from(v.min(100)));
                let progressed = tasks::progress(
                    &self.db,
                    &task.id,
                    node,
                    percent,
                    p.message.as_deref(),
                    p.state.as_deref(),
                    next,
                    now,
                )
                .await;
                match progressed {
                    // News for the progress socket: the job started, or moved on.
                    Ok(true) if task.status == tasks::QUEUED || (percent.is_some() && percent != task.progress) => {
                        if let Err(e) = tasks::events::announce(&self.db, &task.id, now).await {
                            tracing::warn!(task = %task.id, error = %format!("{e:#}"), "announcing a task's progress failed");
                        }
                    }
                    Ok(_) => {}
                    Err(e) => {
                        tracing::warn!(task = %task.id, error = %format!("{e:#}"), "recording a task's progress failed")
                    }
                }
            }
            Ok(Outcome::Task(wit::TaskState::Succeeded(done))) => {
                let priced = Priced::of(&task.plugin, &task.op, &task.model);
                // A batch is charged by its answers, read from its result files as they are
                // archived (its hold, when it names none: it ran).
                let batch = (task.op == BATCH_OP).then(|| BatchSettle {
                    model: task.model.clone(),
                    group: task.price_group.clone(),
                    held: task.reserved_micros,
                    fee: task.fee_micros,
                });
                let charge = match (&self.billing, &batch) {
                    (None, _) => 0,
                    (Some(_), Some(_)) => task.reserved_micros.saturating_add(task.fee_micros),
                    // One-time fees the submit reserved are charged with the job that used them
                    // (the settle caps the whole at the hold).
                    (Some(b), None) => b
                        .task_charge(priced, &task.price_group, &reported(&done.usage), task.reserved_micros)
                        .0
                        .saturating_add(task.fee_micros),
                };
                if done.outputs.is_empty() {
                    let ok = tasks::Outcome { status: tasks::SUCCEEDED, outputs: Some("[]"), ..Default::default() };
                    return self.settle(&task.id, Some(node), &ok, charge).await;
                }
                // The downloads run off the poll round (a slow file holds no other task), a
                // few at a time per node, under a lease extended to the archive's deadline.
                let Ok(slot) = std::sync::Arc::clone(&self.archive.slots).try_acquire_owned() else {
                    return later("every archive slot of this node is busy").await;
                };
                let until = now + self.archive.deadline.as_secs() as i64 + LEASE_SECS;
                match tasks::extend_lease(&self.db, &task.id, node, until).await {
                    Ok(true) => {}
                    Ok(false) => return,
                    Err(e) => return later(&format!("the database: {e:#}")).await,
                }
                let job = ArchiveJob {
                    settler: self.settler(),
                    archive: Arc::clone(&self.archive),
                    hosts: fetch_hosts,
                    id: task.id.clone(),
                    node: node.to_string(),
                    polls: task.polls,
                    media: done.outputs,
                    charge,
                    batch,
                };
                tokio::spawn(async move {
                    job.run().await;
                    drop(slot);
                });
            }
            Ok(Outcome::Task(wit::TaskState::Failed(e))) => {
                let failed = tasks::Outcome {
                    status: tasks::FAILED,
                    error_kind: Some(crate::kind_name(e.kind)),
                    message: Some(&e.message),
                    ..Default::default()
                };
                self.settle(&task.id, Some(node), &failed, 0).await;
            }
            Ok(_) => later("the plugin answered a poll with something else than the task's state").await,
            // The vendor says the job is bad or gone: it will not finish.
            Err(e) if e.class.is_some_and(job_is_over) => {
                let failed = tasks::Outcome {
                    status: tasks::FAILED,
                    error_kind: Some(&e.code),
                    message: Some(&e.message),
                    ..Default::default()
                };
                self.settle(&task.id, Some(node), &failed, 0).await;
            }
            Err(e) => later(&e.message).await,
        }
    }

    /// Ends a task with its settlement (once, whoever else tries; `node`: the lease a poll's
    /// result needs) and lets the wallets know.
    async fn settle(&self, id: &str, node: Option<&str>, outcome: &tasks::Outcome<'_>, charge: i64) {
        self.settler().settle(id, node, outcome, charge).await;
    }

    fn settler(&self) -> Settler {
        Settler { db: self.db.clone(), billing: self.billing.clone() }
    }
}

/// What settles tasks, owned: an archive download settles its task off the poll round.
#[derive(Clone)]
struct Settler {
    db: crate::store::Db,
    billing: Option<Arc<crate::billing::Billing>>,
}

impl Settler {
    /// True when this call settled the task.
    async fn settle(&self, id: &str, node: Option<&str>, outcome: &tasks::Outcome<'_>, charge: i64) -> bool {
        let settled = match &self.billing {
            Some(b) => {
                let _sync = b.wallets.sync.lock().await;
                let settled = tasks::finish_and_settle(&self.db, id, node, outcome, charge, now_unix()).await;
                if let Ok(Some(s)) = &settled {
                    let accounts = [Account::User(s.user_id), Account::KeyLimit(s.key_id)];
                    b.wallets.apply_committed(&accounts, -s.refund_micros);
                }
                settled
            }
            None => tasks::finish_and_settle(&self.db, id, node, outcome, 0, now_unix()).await,
        };
        match settled {
            Ok(Some(_)) => {
                METRICS.task_ended(outcome.status);
                true
            }
            Ok(None) => false,
            Err(e) => {
                tracing::error!(task = %id, error = %format!("{e:#}"), "settling a task failed; it is settled on a later round");
                false
            }
        }
    }
}

/// A succeeded job's outputs, to download into the archive before the task is settled.
struct ArchiveJob {
    settler: Settler,
    archive: Arc<crate::archive::Archive>,
    /// The plugin's `fetch-hosts`.
    hosts: Vec<String>,
    id: String,
    node: String,
    polls: i64,
    media: Vec<wit::Media>,
    /// What the vendor's reported units cost (a batch's hold, until its answers are read).
    charge: i64,
    /// A batch: charged by the answers its result files hold.
    batch: Option<BatchSettle>,
}

/// How a batch's answers are priced once read.
struct BatchSettle {
    model: String,
    group: String,
    held: i64,
    /// One-time fees its submit reserved.
    fee: i64,
}

impl ArchiveJob {
    /// Downloads every output, then settles: succeeded with the files; failed when the archive
    /// refuses an output (too large, not media, a host not allowed), charged all the same (the
    /// vendor made it, and the operator pays the vendor: a consumer cannot have jobs made for
    /// free by asking for outputs the archive refuses); tried again later on a network error.
    async fn run(mut self) {
        let mut answers = self.batch.as_ref().map(|_| BatchOutput::default());
        let result = self.archive.download_all(&self.media, &self.hosts, answers.as_mut()).await;
        // Only a whole read prices a batch by its answers; else it keeps its hold.
        let read = answers.as_ref().filter(|_| result.is_ok());
        if let (Some(b), Some(answers), Some(billing)) = (&self.batch, read, &self.settler.billing) {
            let (charge, estimated) = billing.batch_charge(&b.model, &b.group, answers, b.held);
            if estimated {
                tracing::warn!(task = %self.id, why = answers.unreadable.as_deref().unwrap_or("the model has no price now"), "a batch is charged its hold");
            }
            self.charge = charge.saturating_add(b.fee);
        }
        match &result {
            Ok(files) => {
                METRICS.archive_files.fetch_add(files.len() as u64, Relaxed);
                METRICS.archive_bytes.fetch_add(files.iter().map(|f| f.size_bytes as u64).sum(), Relaxed);
            }
            Err(f) => {
                METRICS.archive_failures.fetch_add(1, Relaxed);
                tracing::warn!(task = %self.id, permanent = f.permanent, error = %f.message, "archiving a task's outputs failed");
            }
        }
        let node = Some(self.node.as_str());
        match result {
            Ok(files) => {
                let outputs = outputs_json(&files);
                let ok = tasks::Outcome {
                    status: tasks::SUCCEEDED,
                    outputs: Some(&outputs),
                    archived: &files,
                    ..Default::default()
                };
                if !self.settler.settle(&self.id, node, &ok, self.charge).await {
                    // Not recorded (settled elsewhere, or to be downloaded again): no hold stays.
                    self.archive.release(&files).await;
                }
            }
            Err(f) if f.permanent => {
                let message = format!("{}; the vendor made it, so it is charged", f.message);
                let failed = tasks::Outcome {
                    status: tasks::FAILED,
                    error_kind: Some(tasks::ARCHIVE_FAILED),
                    message: Some(&message),
                    ..Default::default()
                };
                self.settler.settle(&self.id, node, &failed, self.charge).await;
            }
            Err(f) => retry_later(&self.settler.db, &self.id, &self.node, self.polls, Some(&f.message)).await,
        }
    }
}

/// A task's archived files as its `outputs` column keeps them (the consumer's view).
pub(crate) fn outputs_json(files: &[crate::store::archive::Output]) -> String {
    let outputs: Vec<serde_json::Value> = files
        .iter()
        .map(|o| serde_json::json!({ "index": o.n, "content_type": o.content_type, "size": o.size_bytes, "sha256": o.sha256 }))
        .collect();
    serde_json::Value::from(outputs).to_string()
}

/// A poll failure of this class means the job will not finish (the vendor finds it bad, gone
/// or forbidden); other classes (faults, time-outs, rate limits, a refused key) pass.
fn job_is_over(class: wit::ErrorKind) -> bool {
    use wit::ErrorKind as K;
    matches!(class, K::BadRequest | K::NotFound | K::Forbidden | K::ContentFiltered | K::Unsupported)
}

/// A poll (or its download) that failed for now: the lease is given back and the task is due
/// again after the backoff of its `polls`, with `message` (why) recorded if given.
async fn retry_later(db: &crate::store::Db, id: &str, node: &str, polls: i64, message: Option<&str>) {
    let now = now_unix();
    let next = now + poll_delay(None, polls);
    if let Err(e) = tasks::progress(db, id, node, None, message, None, next, now).await {
        tracing::warn!(task = %id, error = %format!("{e:#}"), "recording a task's progress failed");
    }
}

/// When to poll next: the vendor's hint, else a backoff that grows with the polls made.
fn poll_delay(hint_ms: Option<u32>, polls: i64) -> i64 {
    match hint_ms {
        Some(ms) => (i64::from(ms) / 1000).clamp(MIN_POLL_SECS, MAX_POLL_SECS),
        None => (MIN_POLL_SECS + polls / 2).clamp(MIN_POLL_SECS, MAX_POLL_SECS),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn polls_follow_the_vendor_hint_within_bounds_or_back_off() {
        assert_eq!(super::poll_delay(Some(5_000), 0), 5);
        assert_eq!(super::poll_delay(Some(10), 0), 1);
        assert_eq!(super::poll_delay(Some(3_600_000), 0), 60);
        assert_eq!(super::poll_delay(None, 0), 1);
        assert_eq!(super::poll_delay(None, 10), 6);
        assert_eq!(super::poll_delay(None, 1_000), 60);
    }

    #[test]
    fn a_users_submits_in_flight_take_places_until_they_end() {
        let counts = super::InFlight::default();
        let a = super::Submitting::start(&counts, 1, 2).expect("room for two");
        let b = super::Submitting::start(&counts, 1, 2).expect("room for two");
        assert!(super::Submitting::start(&counts, 1, 2).is_none(), "no third");
        assert!(super::Submitting::start(&counts, 2, 1).is_some(), "another user has room");
        assert!(super::Submitting::start(&counts, 3, 0).is_none(), "no room at all");
        drop(a);
        let c = super::Submitting::start(&counts, 1, 2).expect("a place came free");
        drop((b, c));
        assert!(counts.lock().unwrap().is_empty(), "nothing left behind");
    }
}
