//! `Engine::call`: refuse a body a vendor would read otherwise (`json_keys`), authorize the
//! model, claim the idempotency key, reserve, run the plugin's steps on a key of the channel
//! (failing over to other keys, then other channels), and end the call through its `CallEnd`.
//! Beside the run: `refusal` (the errors of a call refused before its vendor is asked),
//! `outcome` (what a result says of the key it used), `credential` (raw keys, only for a
//! plugin that signs on a channel that allows it) and `fields` (repeated fields refused).

use super::affinity::{Affinity, FeeClaim, Pinned};
use super::end::CallEnd;
use super::idempotency::{self, Held};
use super::Engine;
use crate::account::Consumer;
use crate::billing::{self, Estimate, Priced, Reported};
use crate::exchange::{self, plugin_failure, CallError, ClientInput, Form, Outcome, StreamBody, VendorWork};
use crate::keypool::health::KeyOutcome;
use crate::keypool::Channel;
use crate::plugin::{wit, Plugin};
use crate::store::{now_unix, CallRecord};
use crate::telemetry::METRICS;
use bytes::Bytes;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Instant;
use tollgate_base::boxed;
use tollgate_base::json_keys;

mod credential;
mod fields;
mod outcome;
mod refusal;

pub use credential::{credential_for, split_credential};
use fields::refuse_repeated_fields;
pub use outcome::{key_outcome, kind_name};
pub(crate) use refusal::{charges_backlogged, keys_unavailable, refusal_error};

/// One call, resolved to its plugin and channel.
pub struct CallRequest {
    pub consumer: Consumer,
    pub plugin: Arc<Plugin>,
    pub channel: Arc<Channel>,
    pub op: String,
    pub model: String,
    /// The consumer's body as it arrived.
    pub body: Bytes,
    /// A multipart body, parsed: the plugin gets its parts, the host keeps its files.
    pub form: Option<Form>,
    pub query: String,
    pub headers: Vec<wit::Header>,
    /// The consumer's path and the route pattern's parameters.
    pub path: String,
    pub path_params: Vec<(String, String)>,
    /// False for routes the plugin marks free (queries, lists): never priced nor reserved.
    pub billed: bool,
    /// The surface walked the body's keys for misspelled fields already, reading its model
    /// (`json_keys::model_and_misspelled`): the engine does not walk them again. False unless
    /// a surface did, so a surface that forgets costs a second walk, never a missed one.
    pub keys_read: bool,
    /// The vendor objects the call names (a route's `affinity`), which decide its key.
    pub affinity: Affinity,
    pub started: Instant,
    pub request_id: String,
    /// The consumer's `Idempotency-Key`: the call claims it before the upstream is called.
    pub idempotency_key: Option<String>,
    /// How a job the vendor accepted is answered: `None`, the plugin's vendor-shaped reply
    /// (native routes), else the gateway's task object; `Some`: this view of the task (a
    /// surface's own object, e.g. OpenAI's video).
    pub task_view: Option<fn(&crate::store::tasks::Task) -> serde_json::Value>,
    /// What the surface keeps of the request, with the task (JSON, shown back by its view).
    pub task_params: Option<String>,
    /// Where the consumer wants the task's end POSTed (already checked against the
    /// operator's hosts); ignored by calls that are no task.
    pub callback_url: Option<String>,
    /// A chat socket's chat and the app's user reference, recorded on the call.
    pub chat_id: Option<String>,
    pub user_uuid: Option<String>,
}

/// What the consumer gets.
pub enum Answer {
    /// A whole answer (the plugin's reply, a stored idempotent answer).
    Full { status: u16, headers: Vec<wit::Header>, body: Bytes },
    /// A stream; the stream task ends the call.
    Stream { headers: Vec<wit::Header>, body: StreamBody },
    /// An upstream response copied as it is (downloads).
    Relay(http::Response<crate::exchange::upstream::UpstreamIncoming>),
    /// An error in the consumer's API shape.
    Failed(CallError),
}

/// The most keys one call tries.
const MAX_ATTEMPTS: usize = 3;

impl Engine {
    /// Runs one call to what the consumer gets; the call is settled and recorded exactly once.
    pub async fn call(&self, mut r: CallRequest) -> Answer {
        // A batch is priced by the model its input file names; a batch input upload is read
        // before it is sent (see `billing::batch`).
        let (batch, batch_upload) = match boxed::pin(|| crate::batch::prepare(&self.db, &mut r)).await {
            Ok(read) => read,
            Err(e) => {
                let end = CallEnd::new(self.billing.clone(), self.call_log.clone(), draft_record(&r), r.started);
                end.refuse(&e);
                return Answer::Failed(e);
            }
        };
        let mut end = CallEnd::new(self.billing.clone(), self.call_log.clone(), draft_record(&r), r.started);
        // A JSON body that spells a field the host reads in another case (`MODEL`,
        // `Max_Tokens`) may be run by a vendor on the copy the host did not price or authorize.
        // A surface that read the model walked the keys in the same pass (`keys_read`).
        let misread = match (r.form.is_none() && !r.keys_read).then(|| json_keys::misspelled_field(&r.body)) {
            Some(Ok(Some((key, field)))) => Some(CallError::ambiguous_field(&key, field)),
            Some(Err(e)) => Some(CallError::invalid_json(e)),
            Some(Ok(None)) | None => None,
        };
        if let Some(e) = misread {
            end.refuse(&e);
            return Answer::Failed(e);
        }
        // A model-less route (a file upload, a task query) is allowed to a key whose models are
        // limited only when its channel serves one of them.
        let allowed = if r.model.is_empty() {
            r.channel.models.iter().any(|m| r.consumer.may_use(m))
        } else {
            r.consumer.may_use(&r.model)
        };
        if !allowed {
            let what = if r.model.is_empty() {
                format!("the models of channel '{}'", r.channel.name)
            } else {
                format!("the model '{}'", r.model)
            };
            let e = CallError::new(
                403,
                "permission_error",
                "model_not_allowed",
                format!("This API key may not use {what}."),
            );
            end.refuse(&e);
            return Answer::Failed(e);
        }
        // An Idempotency-Key is claimed before anything is reserved or sent.
        match boxed::pin(|| idempotency::claim(&self.db, &r)).await {
            idempotency::Decision::Run(held) => end.held = held,
            idempotency::Decision::Replay(stored) => {
                end.replayed(stored.status);
                return idempotency::replay(stored);
            }
            idempotency::Decision::Refuse(e) => {
                end.refuse(&e);
                return Answer::Failed(e);
            }
        }
        let client = Arc::new(ClientInput {
            body: r.body.clone(),
            files: r.form.as_ref().map(|f| f.files.clone()).unwrap_or_default(),
        });
        // The plugin's quote, for ops it declares quoted: the units to reserve and the vendor
        // objects the call uses. Its future is made only then (it is a plugin call's size).
        let quote = if r.plugin.quotes(&r.op) {
            match boxed::pin(|| self.quote(&r)).await {
                Ok(q) => Some(q),
                Err(e) => {
                    give_up(end.refuse(&e)).await;
                    return Answer::Failed(e);
                }
            }
        } else {
            None
        };
        // A follow-up call runs on the key that created its object, and a call using the
        // consumer's objects on the key that made them, for their owner only.
        let pinned = match boxed::pin(|| self.pin(&r, quote.as_ref().map_or(&[][..], |q| &q.1))).await {
            Ok((pinned, fees)) => {
                end.fees = fees;
                pinned
            }
            Err(e) => {
                give_up(end.refuse(&e)).await;
                return Answer::Failed(e);
            }
        };
        if let Some(p) = &pinned {
            end.served_by(&p.channel.name, r.plugin.name());
        }
        // A user's unfinished jobs are bounded: each is polled and held until it ends.
        let _submitting = match boxed::pin(|| self.under_task_cap(&r)).await {
            Ok(s) => s,
            Err(e) => {
                give_up(end.refuse(&e)).await;
                return Answer::Failed(e);
            }
        };
        // Billing: priced and reserved before the upstream is called (400/402/403 otherwise).
        if let (Some(b), true) = (&self.billing, r.billed) {
            if self.call_log.charges_full() {
                let e = charges_backlogged();
                give_up(end.refuse(&e)).await;
                return Answer::Failed(e);
            }
            let mut span = crate::trace::span("reserve");
            let priced = Priced::of(r.plugin.name(), &r.op, &r.model);
            let (accounts, group) = (r.consumer.accounts(), &r.consumer.group);
            let fees = end.fees.as_ref().map_or(0, |f| f.micros);
            let started = match (&quote, &batch) {
                (_, Some(input)) => b.start_with_fees(&accounts, group, priced, &r.op, Estimate::Batch(input), fees),
                (Some((q, _)), None) => b.start_with_fees(&accounts, group, priced, &r.op, Estimate::Quote(q), fees),
                (None, None) => {
                    let form_fields = r.form.as_ref().map(|f| billing::form_estimate_body(f.text_fields()));
                    let body = form_fields.as_deref().unwrap_or(&r.body);
                    b.start_with_fees(&accounts, group, priced, &r.op, Estimate::Body(body), fees)
                }
            };
            match started {
                Ok(m) => {
                    span.attr("tollgate.reserved_micros", m.reservation.amount);
                    end.meter = Some(m);
                }
                Err(refusal) => {
                    let e = refusal_error(priced, refusal);
                    span.fail(e.code.clone());
                    drop(span);
                    give_up(end.refuse(&e)).await;
                    return Answer::Failed(e);
                }
            }
        }
        let capture = end.held.is_some();
        let run = Run { r: &r, client, capture, pinned, batch_upload };
        // Boxed: the call's future is moved whole into its task; the run is most of it.
        match boxed::pin(|| self.run_with_failover(&run, &mut end)).await {
            Ok(Outcome::Submitted { task, key_fingerprint }) => {
                return boxed::pin(|| self.submitted(&r, end, task, key_fingerprint)).await;
            }
            Ok(Outcome::Task(_)) => {
                let e = CallError::plugin("the plugin answered a call with a task's state (that answers a poll)");
                give_up(end.fail(&e)).await;
                Answer::Failed(e)
            }
            Ok(Outcome::Stream { headers, pending }) => {
                // Boxed: its future (~3 KB) would otherwise size every call's.
                let body = boxed::pin(|| pending.start(Box::new(move |report| end.stream(report)))).await;
                Answer::Stream { headers, body }
            }
            Ok(Outcome::Reply { status, headers, body, usage, error, .. }) => {
                let answered = error.is_none() && (200..300).contains(&status);
                let held = end.reply(status, &usage, error.as_ref());
                if let Some(h) = held {
                    if answered {
                        let ct = headers.iter().find(|h| h.name.eq_ignore_ascii_case("content-type"));
                        boxed::pin(|| h.complete(Some((status, ct.map(|h| h.value.as_str()), &body)))).await;
                    } else {
                        h.give_up().await;
                    }
                }
                Answer::Full { status, headers, body }
            }
            Ok(Outcome::Relay { response, .. }) => {
                let ok = response.status().is_success();
                match end.relay(response.status().as_u16()) {
                    // A download is not kept: a repeat is told so, never served again.
                    Some(h) if ok => boxed::pin(|| h.complete(None)).await,
                    held => give_up(held).await,
                }
                Answer::Relay(response)
            }
            Err(e) => {
                match end.fail(&e) {
                    Some(h) if e.work != VendorWork::None => {
                        let body = e.to_json().to_string();
                        boxed::pin(|| h.complete(Some((e.status, Some("application/json"), body.as_bytes())))).await
                    }
                    held => give_up(held).await,
                }
                Answer::Failed(e)
            }
        }
    }

    /// The plugin's quote of an op it declares `quoted` (others are estimated from the body):
    /// the units to reserve and the vendor objects the call uses. A quote runs in an exchange
    /// of its own that sends nothing.
    async fn quote(&self, r: &CallRequest) -> Result<(Reported, Vec<String>), CallError> {
        // What the quote reads, the vendor reads: a field given twice could be read once each.
        refuse_repeated_fields(r)?;
        let call = wit_call(r, &r.channel, &r.plugin, 0)?;
        let runtime = self.registry.runtime();
        let mut pc = runtime.start(&r.plugin.pre, &call).await.map_err(|e| plugin_failure(&r.plugin, "quote()", e))?;
        match pc.quote().await {
            Ok(Ok(q)) => Ok((super::end::reported(&q.usage), q.uses)),
            Ok(Err(e)) => Err(CallError::from_adapter(&e)),
            Err(e) => Err(plugin_failure(&r.plugin, "quote()", e)),
        }
    }

    /// The key a call must run on: its route's affinity, and the key that made the objects it
    /// uses (both must agree); with the one-time fees those objects still owe, taken.
    async fn pin(&self, r: &CallRequest, uses: &[String]) -> Result<(Option<Pinned>, Option<FeeClaim>), CallError> {
        let pinned = self.pinned_key(r).await?;
        if uses.is_empty() {
            return Ok((pinned, None));
        }
        // Boxed: a call that uses no objects carries none of these futures.
        let used = boxed::pin(|| super::affinity::uses(&self.db, r.plugin.name(), r.consumer.user_id, uses)).await?;
        let pinned = match (pinned, used.made_on) {
            (Some(p), Some((f, _))) if p.fingerprint != f => {
                return Err(CallError::bad_request(
                    "The objects this call names were made on different upstream accounts; one call uses objects of one account.",
                ))
            }
            (None, Some((f, object))) => Some(self.pin_to(r, f, &object)?),
            (pinned, _) => pinned,
        };
        let fees = match (&self.billing, r.billed) {
            (Some(b), true) => boxed::pin(|| super::affinity::take_fees(&self.db, b, r, &used.due)).await?,
            _ => None,
        };
        Ok((pinned, fees))
    }

    /// Runs the call on the resolved channel; when every attempt there failed on the keys'
    /// account (refused, rate limited, faults, or no usable key), runs it on the model's other
    /// channels in turn. `end` learns the channel and plugin that gave the result. A call
    /// pinned to a key runs on that key only.
    async fn run_with_failover(&self, run: &Run<'_>, end: &mut CallEnd) -> Result<Outcome, CallError> {
        let r = run.r;
        if let Some(p) = &run.pinned {
            return self.run_on_channel(run, &r.plugin, &p.channel).await.0;
        }
        let (mut result, mut retryable) = self.run_on_channel(run, &r.plugin, &r.channel).await;
        if !retryable || r.model.is_empty() {
            return result;
        }
        let mut from = r.channel.name.clone();
        let others = self.channels.load().others_for_model(&r.model, &r.channel.name);
        for channel in others {
            let Some(plugin) = self.registry.current().get(&channel.plugin).cloned().filter(|p| p.supports(&r.op))
            else {
                continue;
            };
            METRICS.channel_failovers.fetch_add(1, Relaxed);
            tracing::warn!(from = %from, to = %channel.name, request_id = %r.request_id, "channel failed on every key; trying the next channel");
            end.served_by(&channel.name, plugin.name());
            from.clone_from(&channel.name);
            (result, retryable) = self.run_on_channel(run, &plugin, &channel).await;
            if !retryable {
                break;
            }
        }
        result
    }

    /// Runs the exchange on a key of `channel`'s pool; when the upstream refused the request
    /// on that key's account (unauthorized, out of balance, rate limited, a fault it answered)
    /// or was never reached, runs it again on another key. The call keeps its request id, so
    /// it is charged once whatever the number of attempts. The flag: the channel could not
    /// serve for reasons of its keys (another channel may).
    async fn run_on_channel(
        &self,
        run: &Run<'_>,
        plugin: &Arc<Plugin>,
        channel: &Arc<Channel>,
    ) -> (Result<Outcome, CallError>, bool) {
        let r = run.r;
        // Ops that may be sent again after a request got no answer (reads): the plugin says.
        let resend = plugin.operation(&r.op).is_some_and(|o| o.resend);
        let attempts = if run.pinned.is_some() { 1 } else { channel.key_count().clamp(1, MAX_ATTEMPTS) };
        let mut tried = Vec::with_capacity(attempts);
        loop {
            let picked = match &run.pinned {
                // Found in this channel's pool by `pinned_key` (a reload since keeps the key).
                Some(p) => channel.key_by_fingerprint(&p.fingerprint),
                None => match channel.pick_key(&tried) {
                    Some(k) => Some(k),
                    None if channel.key_count() == 0 => None,
                    None => return (Err(keys_unavailable(channel)), true),
                },
            };
            let mut call = match wit_call_with(r, channel, plugin, tried.len() as u32 + 1, true) {
                Ok(c) => c,
                Err(e) => return (Err(e), false),
            };
            let key = picked.as_ref().map(|k| &k.secret);
            call.credential = match credential_for(plugin, channel, key) {
                Ok(c) => c,
                Err(e) => return (Err(e), false),
            };
            let mut ctx = self.exchange_context(plugin, channel, key, Arc::clone(&run.client), run.capture);
            ctx.owner = Some(exchange::FilesOwner {
                user_id: r.consumer.user_id,
                key_id: r.consumer.key_id,
                group: Arc::clone(&r.consumer.group),
            });
            if let Some(p) = &run.pinned {
                call.owned.clone_from(&p.owned);
                ctx.more_keys.clone_from(&p.more_keys);
            }
            let mut result = exchange::run(ctx, &mut call).await;
            let outcome = key_outcome(&result);
            let Some(picked) = picked else { return (result, false) };
            picked.report(outcome);
            tried.push(picked.id);
            let objects = match &result {
                Ok(Outcome::Reply { objects, .. }) => &objects[..],
                // A job's ids, named in the vendor's answer to its submit (native routes).
                Ok(Outcome::Submitted { task, .. }) => task.reply.as_ref().map_or(&[][..], |r| &r.objects[..]),
                _ => &[],
            };
            if !objects.is_empty() {
                self.remember(r, plugin, &picked.secret, objects, run.batch_upload.as_deref()).await;
            }
            if channel.archive_speech {
                self.keep_speech(r, &mut result);
            }
            // A stream that started is the consumer's now (it is a success), and a request
            // the vendor may have worked on is never sent again (unless its op is a read the
            // plugin says may be resent): only a call the vendor refused or never received is
            // retried.
            let may_have_run = match &result {
                Err(e) => match e.work {
                    VendorWork::None => false,
                    VendorWork::Unknown => !resend,
                    VendorWork::Done => true,
                },
                Ok(Outcome::Reply { status, error: Some(e), .. }) => {
                    (200..300).contains(status) && exchange::is_fault(e.kind)
                }
                Ok(_) => false,
            };
            let retryable = !may_have_run
                && matches!(outcome, KeyOutcome::Refused | KeyOutcome::RateLimited(_) | KeyOutcome::Fault);
            if !retryable || tried.len() >= attempts {
                return (result, retryable);
            }
            METRICS.key_failovers.fetch_add(1, Relaxed);
            tracing::warn!(channel = %channel.name, request_id = %r.request_id, attempt = tried.len(), ?outcome, "upstream failed on this key; trying another");
        }
    }
}

/// One call's run, the same for every attempt.
struct Run<'a> {
    r: &'a CallRequest,
    client: Arc<ClientInput>,
    capture: bool,
    /// The key the call must run on.
    pinned: Option<Pinned>,
    /// The summary of the batch input file the call uploads, kept with the file it creates.
    batch_upload: Option<String>,
}

/// What the plugin is given for one attempt (`attempt` 0: a quote, nothing is sent).
pub(crate) fn wit_call(
    r: &CallRequest,
    channel: &Channel,
    plugin: &Plugin,
    attempt: u32,
) -> Result<wit::Call, CallError> {
    wit_call_with(r, channel, plugin, attempt, false)
}

/// `wit_call`; with `body_held`, a body that is no form is `client-body`, the consumer's body
/// the host holds, copied into the call only if the plugin is entered (`exchange::run`), so
/// that a forwarded call never copies it.
fn wit_call_with(
    r: &CallRequest,
    channel: &Channel,
    plugin: &Plugin,
    attempt: u32,
    body_held: bool,
) -> Result<wit::Call, CallError> {
    let body = match &r.form {
        Some(form) => wit::Body::Form(form.parts.clone()),
        None if body_held => wit::Body::ClientBody,
        None => exchange::call_body(&r.body),
    };
    Ok(wit::Call {
        op: r.op.clone(),
        context: wit::CallContext {
            request_id: r.request_id.clone(),
            attempt,
            path: r.path.clone(),
            path_params: r.path_params.clone(),
            base_url: exchange::base_url(channel, plugin)?,
        },
        model: r.model.clone(),
        upstream_model: channel.upstream_model(&r.model).to_string(),
        body,
        query: r.query.clone(),
        headers: r.headers.clone(),
        credential: Vec::new(),
        config: channel.settings_json.clone(),
        task: None,
        keep_speech: channel.archive_speech,
        owned: Vec::new(),
    })
}

pub(super) async fn give_up(held: Option<Held>) {
    if let Some(h) = held {
        // Boxed: a call without an Idempotency-Key carries none of its futures.
        boxed::pin(|| h.give_up()).await;
    }
}

pub(crate) fn draft_record(r: &CallRequest) -> CallRecord {
    CallRecord {
        request_id: r.request_id.clone(),
        key_id: Some(r.consumer.key_id),
        user_id: Some(r.consumer.user_id),
        channel: Some(r.channel.name.clone()),
        plugin: Some(r.plugin.name().to_string()),
        model: Some(r.model.clone()),
        op: r.op.clone(),
        status: 200,
        created_at: now_unix(),
        chat_id: r.chat_id.clone(),
        user_uuid: r.user_uuid.clone(),
        ..CallRecord::default()
    }
}
