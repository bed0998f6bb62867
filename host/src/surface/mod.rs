//! What consumers call: the OpenAI-compatible routes (`openai`) and the vendor-native routes
//! plugins declare (`native`). Both end in `dispatch`, which runs the exchange, shapes the
//! response and records the call exactly once.

mod idempotency;
pub mod native;
pub mod openai;
pub mod user;

use crate::account::{format_money, Consumer};
use crate::billing::{Account, Refusal};
use crate::exchange::{self, CallContext, CallError, Outcome, StreamReport, VendorWork};
use crate::keypool::health::KeyOutcome;
use crate::keypool::Channel;
use crate::plugin::{wit, Plugin};
use crate::server::body::{Response, ResponseBody};
use crate::server::AppState;
use crate::store::{self, now_unix, CallRecord};
use crate::telemetry::METRICS;
use bytes::Bytes;
use http_body_util::Full;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Instant;

/// One call, resolved to its plugin and channel.
pub struct Resolved {
    pub consumer: Consumer,
    pub plugin: Arc<Plugin>,
    pub channel: Arc<Channel>,
    pub op: String,
    pub model: String,
    pub body: Bytes,
    pub query: String,
    pub headers: Vec<wit::Header>,
    pub started: Instant,
    pub request_id: String,
    /// The consumer's `Idempotency-Key`: the call claims it before the upstream is called.
    pub idempotency_key: Option<String>,
}

/// What every call reads from the consumer's request before it is resolved to a channel.
pub struct ConsumerRequest {
    pub consumer: Consumer,
    pub headers: Vec<wit::Header>,
    pub query: String,
    pub body: Bytes,
    /// The consumer's `Idempotency-Key`, if it sent a usable one.
    pub idempotency_key: Option<String>,
}

/// Authenticates the consumer (401) and reads the body within the limit (413).
pub async fn read_request(
    state: &AppState,
    req: http::Request<hyper::body::Incoming>,
) -> Result<ConsumerRequest, CallError> {
    let consumer = state.authenticate(&req)?;
    let headers = forwarded_headers(req.headers());
    let query = req.uri().query().unwrap_or("").to_string();
    let idempotency_key = match req.headers().get("idempotency-key").map(|v| v.to_str()) {
        None => None,
        Some(Ok(k)) if !k.is_empty() && k.len() <= 128 && k.bytes().all(|b| b.is_ascii_graphic()) => {
            Some(k.to_string())
        }
        Some(_) => {
            return Err(crate::server::error::bad_request(
                "invalid_idempotency_key",
                "Idempotency-Key must be 1 to 128 visible ASCII characters.",
            ))
        }
    };
    let body = state.read_body(req).await?;
    Ok(ConsumerRequest { consumer, headers, query, body, idempotency_key })
}

/// Runs a call once `resolve` has found its plugin and channel; a call refused while
/// resolving is answered with its error.
pub async fn answer<F, Fut>(state: &Arc<AppState>, resolve: F) -> Response
where
    F: FnOnce(Instant, String) -> Fut,
    Fut: std::future::Future<Output = Result<Resolved, CallError>>,
{
    let started = Instant::now();
    let request_id = state.next_request_id();
    match resolve(started, request_id.clone()).await {
        Ok(r) => dispatch(state, r).await,
        Err(e) => with_request_id(e.into_response(), &request_id),
    }
}

/// Headers never copied from a plugin's reply to the consumer.
const NOT_FORWARDED: &[&str] = &["content-length", "transfer-encoding", "connection", "keep-alive", "set-cookie"];

pub async fn dispatch(state: &Arc<AppState>, r: Resolved) -> Response {
    if !r.model.is_empty() && !r.consumer.may_use(&r.model) {
        let e = CallError::new(
            403,
            "permission_error",
            "model_not_allowed",
            format!("This API key may not use the model '{}'.", r.model),
        );
        return finish_error(state, &r, e);
    }
    // An Idempotency-Key is claimed before anything is reserved or sent.
    let held = match idempotency::claim(&state.db, &r).await {
        idempotency::Decision::Run(held) => held,
        idempotency::Decision::Answer(Ok(replayed)) => {
            let mut rec = draft_record(&r);
            rec.status = replayed.status().as_u16();
            rec.error_kind = Some("idempotent_replay".into());
            rec.latency_us = r.started.elapsed().as_micros() as u64;
            state.call_log.record(rec);
            return with_request_id(replayed, &r.request_id);
        }
        idempotency::Decision::Answer(Err(e)) => return finish_error(state, &r, e),
    };
    // Billing: priced and reserved before the upstream is called (402/403 otherwise).
    let meter = match &state.billing {
        None => None,
        Some(b) => match b.start(&r.consumer.accounts(), &r.consumer.group, &r.model, &r.op, &r.body) {
            Ok(m) => Some(m),
            Err(refusal) => {
                if let Some(h) = held {
                    h.give_up().await;
                }
                return finish_error(state, &r, refusal_error(&r.model, refusal));
            }
        },
    };
    // Whichever end the call reaches (reply, error or stream end) takes the meter once.
    let meter = Arc::new(std::sync::Mutex::new(meter));
    let draft = draft_record(&r);
    // The channel and plugin that serve, when failover moved the call off the resolved ones.
    let serving = Arc::new(std::sync::Mutex::new((r.channel.name.clone(), r.plugin.name().to_string())));
    let stream_serving = Arc::clone(&serving);
    let call_log = state.call_log.clone();
    let started = r.started;
    let billing = state.billing.clone();
    let stream_meter = Arc::clone(&meter);
    // The claim goes to whichever end the call reaches, like the meter.
    let held_slot = Arc::new(std::sync::Mutex::new(held));
    let stream_held = Arc::clone(&held_slot);
    let on_stream_end: exchange::OnStreamEnd = Box::new(move |report: StreamReport| {
        METRICS.in_flight.fetch_sub(1, Relaxed);
        let mut rec = draft;
        (rec.channel, rec.plugin) = served_by(&stream_serving);
        rec.streamed = true;
        rec.latency_us = started.elapsed().as_micros() as u64;
        rec.interrupted = report.error.is_some() || report.client_gone;
        if report.client_gone {
            METRICS.streams_client_gone.fetch_add(1, Relaxed);
            rec.error_kind = Some("client_gone".into());
        }
        if let Some(e) = &report.error {
            METRICS.streams_interrupted.fetch_add(1, Relaxed);
            rec.error_kind = Some(e.code.clone());
        }
        set_usage(&mut rec, &report.usage);
        // The written rule for streams: bill what was delivered. Nothing delivered and no
        // usage reported (the stream failed before its first event) costs nothing.
        let nothing = report.delivered_events == 0 && report.usage.input_tokens.is_none() && rec.interrupted;
        if let (Some(b), Some(m)) = (&billing, take(&stream_meter)) {
            if nothing {
                b.release(m);
            } else {
                let charge = b.settle(m, &report.usage, Some(report.delivered_events));
                rec.charge_micros = charge.micros;
                rec.estimated = charge.estimated;
                rec.key_limited = charge.key_limited;
            }
        }
        if let Some(h) = take(&stream_held) {
            if nothing {
                drop(h); // gives the key up
            } else {
                h.complete_later(report.captured.map(|b| (200, Some("text/event-stream".to_string()), b)));
            }
        }
        call_log.record(rec);
    });
    METRICS.in_flight.fetch_add(1, Relaxed);
    // Until the call has an outcome, a consumer that goes away (hyper drops this future) is
    // recorded by this guard; the reservation returns by itself (`Reservation`'s drop).
    let mut left = LeftEarly { log: state.call_log.clone(), rec: Some(draft_record(&r)), started: r.started };
    let mut on_stream_end = Some(on_stream_end);
    let capture = held_slot.lock().expect("idempotency claim").is_some();
    let outcome = run_with_failover(state, &r, &serving, &mut on_stream_end, capture).await;
    left.rec = None;
    let mut rec = draft_record(&r);
    (rec.channel, rec.plugin) = served_by(&serving);
    // Settled and recorded first, with nothing awaited in between; the idempotency key is
    // completed after, so a consumer leaving then cannot lose a charge.
    let (response, keep) = match outcome {
        Ok(Outcome::Stream { headers, body }) => {
            // The stream task records the call, and keeps its answer, when the stream ends.
            let mut resp = http::Response::builder().status(200);
            for h in &headers {
                if !NOT_FORWARDED.iter().any(|n| h.name.eq_ignore_ascii_case(n)) {
                    resp = resp.header(h.name.as_str(), h.value.as_str());
                }
            }
            return resp
                .header("x-request-id", &r.request_id)
                .body(ResponseBody::Stream(body))
                .unwrap_or_else(|_| CallError::plugin("the plugin set invalid stream headers").into_response());
        }
        Ok(Outcome::Reply { status, headers, body, usage, error }) => {
            set_usage(&mut rec, &usage);
            let answered = error.is_none() && (200..300).contains(&status);
            if let (Some(b), Some(m)) = (&state.billing, take(&meter)) {
                if answered {
                    let charge = b.settle(m, &usage, None);
                    rec.charge_micros = charge.micros;
                    rec.estimated = charge.estimated;
                    rec.key_limited = charge.key_limited;
                } else {
                    b.release(m);
                }
            }
            rec.status = status;
            rec.error_kind = error.map(|e| kind_name(e.kind).to_string());
            let content_type =
                headers.iter().find(|h| h.name.eq_ignore_ascii_case("content-type")).map(|h| h.value.clone());
            let keep = answered.then(|| Some((status, content_type, body.clone())));
            let mut resp = http::Response::builder().status(status);
            for h in &headers {
                if !NOT_FORWARDED.iter().any(|n| h.name.eq_ignore_ascii_case(n)) {
                    resp = resp.header(h.name.as_str(), h.value.as_str());
                }
            }
            let resp = resp
                .body(ResponseBody::Full(Full::new(body)))
                .unwrap_or_else(|_| CallError::plugin("the plugin replied with invalid headers").into_response());
            (resp, keep)
        }
        Ok(Outcome::Relay { response }) => {
            rec.status = response.status().as_u16();
            if let (Some(b), Some(m)) = (&state.billing, take(&meter)) {
                if response.status().is_success() {
                    let charge = b.settle(m, &wit::Usage::default(), None);
                    rec.charge_micros = charge.micros;
                    rec.key_limited = charge.key_limited;
                } else {
                    b.release(m);
                }
            }
            // A download is not kept: a repeat is told so, never served again.
            let keep = response.status().is_success().then_some(None);
            let (parts, body) = response.into_parts();
            let mut resp = http::Response::builder().status(parts.status);
            for name in [http::header::CONTENT_TYPE, http::header::CONTENT_LENGTH, http::header::CONTENT_DISPOSITION] {
                if let Some(v) = parts.headers.get(&name) {
                    resp = resp.header(name, v);
                }
            }
            (resp.body(ResponseBody::Relay(body)).expect("copied headers are valid"), keep)
        }
        Err(e) => {
            // The vendor answered 2xx and the answer was unusable: the work was done, the call
            // is billed its reservation (marked estimated). Otherwise it is free.
            let done = e.work == VendorWork::Done;
            if let (Some(b), Some(m)) = (&state.billing, take(&meter)) {
                if done {
                    let charge = b.settle_reserved(m);
                    rec.charge_micros = charge.micros;
                    rec.estimated = charge.estimated;
                    rec.key_limited = charge.key_limited;
                } else {
                    b.release(m);
                }
            }
            rec.status = e.status;
            rec.error_kind = Some(e.code.clone());
            let body = Bytes::from(e.to_json().to_string());
            (e.into_response(), done.then(|| Some((e.status, Some("application/json".to_string()), body))))
        }
    };
    METRICS.in_flight.fetch_sub(1, Relaxed);
    rec.latency_us = r.started.elapsed().as_micros() as u64;
    state.call_log.record(rec);
    if let Some(h) = take(&held_slot) {
        match keep {
            Some(answer) => h.complete(answer.as_ref().map(|(s, ct, b)| (*s, ct.as_deref(), b.as_ref()))).await,
            None => h.give_up().await,
        }
    }
    with_request_id(response, &r.request_id)
}

/// The record of a call whose consumer went away before it had an outcome.
struct LeftEarly {
    log: store::CallLog,
    /// `None` once the call has an outcome.
    rec: Option<CallRecord>,
    started: Instant,
}

impl Drop for LeftEarly {
    fn drop(&mut self) {
        if let Some(mut rec) = self.rec.take() {
            METRICS.in_flight.fetch_sub(1, Relaxed);
            rec.status = 499;
            rec.error_kind = Some("client_gone".into());
            rec.interrupted = true;
            rec.latency_us = self.started.elapsed().as_micros() as u64;
            self.log.record(rec);
        }
    }
}

/// The (channel, plugin) names for the call record.
fn served_by(serving: &std::sync::Mutex<(String, String)>) -> (Option<String>, Option<String>) {
    let (channel, plugin) = serving.lock().expect("serving channel").clone();
    (Some(channel), Some(plugin))
}

/// The most keys one call tries.
const MAX_ATTEMPTS: usize = 3;

/// Runs the call on the resolved channel; when every attempt there failed on the keys'
/// account (refused, rate limited, faults, or no usable key), runs it on the model's other
/// channels in turn. `serving` names the channel and plugin that gave the result.
async fn run_with_failover(
    state: &AppState,
    r: &Resolved,
    serving: &std::sync::Mutex<(String, String)>,
    on_stream_end: &mut Option<exchange::OnStreamEnd>,
    capture: bool,
) -> Result<Outcome, CallError> {
    let (mut result, mut retryable) = run_on_channel(state, r, &r.plugin, &r.channel, on_stream_end, capture).await;
    if !retryable || r.model.is_empty() {
        return result;
    }
    let others = state.channels.load().others_for_model(&r.model, &r.channel.name);
    for channel in others {
        let Some(plugin) = state.registry.current().get(&channel.plugin).cloned().filter(|p| p.supports(&r.op)) else {
            continue;
        };
        METRICS.channel_failovers.fetch_add(1, Relaxed);
        {
            let mut names = serving.lock().expect("serving channel");
            tracing::warn!(from = %names.0, to = %channel.name, request_id = %r.request_id, "channel failed on every key; trying the next channel");
            *names = (channel.name.clone(), plugin.name().to_string());
        }
        (result, retryable) = run_on_channel(state, r, &plugin, &channel, on_stream_end, capture).await;
        if !retryable {
            break;
        }
    }
    result
}

/// Runs the exchange on a key of `channel`'s pool; when the upstream fails on that key's
/// account (refused, rate limited, a fault) before anything reached the consumer, runs it
/// again on another key. The call keeps its request id, so it is charged once whatever the
/// number of attempts. The flag: the channel could not serve for reasons of its keys (another
/// channel may).
async fn run_on_channel(
    state: &AppState,
    r: &Resolved,
    plugin: &Arc<Plugin>,
    channel: &Arc<Channel>,
    on_stream_end: &mut Option<exchange::OnStreamEnd>,
    capture: bool,
) -> (Result<Outcome, CallError>, bool) {
    let fields = credential_fields(plugin);
    let mut call = wit::Call {
        op: r.op.clone(),
        model: r.model.clone(),
        upstream_model: channel.upstream_model(&r.model).to_string(),
        body: match std::str::from_utf8(&r.body) {
            Ok(s) => wit::Body::Text(s.to_string()),
            Err(_) => wit::Body::Bytes(r.body.to_vec()),
        },
        query: r.query.clone(),
        headers: r.headers.clone(),
        credential: Vec::new(),
        config: channel.settings_json.clone(),
        task: None,
    };
    let attempts = channel.key_count().clamp(1, MAX_ATTEMPTS);
    let mut tried = Vec::with_capacity(attempts);
    loop {
        let picked = match channel.pick_key(&tried) {
            Some(k) => Some(k),
            None if channel.key_count() == 0 => None,
            None => {
                let e = CallError::new(
                    503,
                    "server_error",
                    "upstream_keys_unavailable",
                    format!(
                        "every upstream key of channel '{}' is disabled or cooling down; retry later",
                        channel.name
                    ),
                );
                return (Err(e), true);
            }
        };
        call.credential = match (&fields, &picked) {
            (Some(f), Some(k)) => match split_credential(channel, f, &k.secret.0) {
                Ok(c) => c,
                Err(e) => return (Err(e), false),
            },
            _ => Vec::new(),
        };
        let ctx = CallContext {
            plugin: Arc::clone(plugin),
            channel: Arc::clone(channel),
            key: picked.as_ref().map(|k| k.secret.clone()),
            runtime: state.registry.runtime().clone(),
            upstream: state.upstream.clone(),
            client_body: r.body.clone(),
            capture,
            write_timeout: std::time::Duration::from_millis(state.config.stream_write_timeout_ms),
        };
        let result = exchange::run(ctx, &call, on_stream_end).await;
        let outcome = key_outcome(&result);
        let Some(picked) = picked else { return (result, false) };
        picked.report(outcome);
        tried.push(picked.id);
        // A stream that started is the consumer's now, and a request the vendor may have
        // worked on is never sent again: only a call the vendor refused or never received is
        // retried.
        let may_have_run = matches!(&result, Err(e) if e.work != VendorWork::None);
        let retryable = on_stream_end.is_some()
            && !may_have_run
            && matches!(outcome, KeyOutcome::Refused | KeyOutcome::RateLimited(_) | KeyOutcome::Fault);
        if !retryable || tried.len() >= attempts {
            return (result, retryable);
        }
        METRICS.key_failovers.fetch_add(1, Relaxed);
        tracing::warn!(channel = %channel.name, request_id = %r.request_id, attempt = tried.len(), ?outcome, "upstream failed on this key; trying another");
    }
}

/// What a call's result says about the key it used.
pub(crate) fn key_outcome(result: &Result<Outcome, CallError>) -> KeyOutcome {
    use wit::ErrorKind as K;
    let (class, retry_after) = match result {
        Ok(Outcome::Reply { error: Some(e), .. }) => (e.kind, e.retry_after_ms),
        Ok(_) => return KeyOutcome::Success,
        Err(CallError { class: Some(c), retry_after_ms, .. }) => (*c, *retry_after_ms),
        Err(_) => return KeyOutcome::Neutral,
    };
    match class {
        K::Unauthorized | K::InsufficientBalance => KeyOutcome::Refused,
        K::RateLimited => KeyOutcome::RateLimited(retry_after.map(std::time::Duration::from_millis)),
        K::UpstreamFault | K::Timeout => KeyOutcome::Fault,
        K::BadRequest | K::Forbidden | K::NotFound | K::ContentFiltered | K::Unsupported => KeyOutcome::Neutral,
    }
}

/// Takes a value only one end of the call may use.
fn take<T>(slot: &std::sync::Mutex<Option<T>>) -> Option<T> {
    slot.lock().expect("call slot").take()
}

fn refusal_error(model: &str, refusal: Refusal) -> CallError {
    match refusal {
        Refusal::BadRequest { param, message } => CallError {
            param,
            ..CallError::new(
                400,
                "invalid_request_error",
                if param.is_some() { "invalid_type" } else { "invalid_json" },
                message,
            )
        },
        Refusal::NotPriced => CallError::new(
            403,
            "invalid_request_error",
            "model_not_priced",
            format!("The model '{model}' has no price on this gateway; the operator must add it to the price table."),
        ),
        Refusal::Insufficient { account: Account::User(_), available, needed } => CallError::new(
            402,
            "insufficient_quota",
            "insufficient_balance",
            format!(
                "Your balance ({}) cannot cover this call, which reserves up to {}. Top up, or ask for less (max_tokens, n).",
                format_money(available),
                format_money(needed)
            ),
        ),
        Refusal::Insufficient { account: Account::KeyLimit(_), available, needed } => CallError::new(
            402,
            "insufficient_quota",
            "key_limit_reached",
            format!(
                "This API key's spending limit has {} left; this call reserves up to {}.",
                format_money(available),
                format_money(needed)
            ),
        ),
    }
}

/// Records a call refused before the exchange started, and answers it.
fn finish_error(state: &AppState, r: &Resolved, e: CallError) -> Response {
    let mut rec = draft_record(r);
    rec.status = e.status;
    rec.error_kind = Some(e.code.clone());
    rec.latency_us = r.started.elapsed().as_micros() as u64;
    state.call_log.record(rec);
    with_request_id(e.into_response(), &r.request_id)
}

pub fn with_request_id(mut resp: Response, id: &str) -> Response {
    if let Ok(v) = http::HeaderValue::from_str(id) {
        resp.headers_mut().insert("x-request-id", v);
    }
    resp
}

fn draft_record(r: &Resolved) -> CallRecord {
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
        ..CallRecord::default()
    }
}

fn set_usage(rec: &mut CallRecord, u: &wit::Usage) {
    rec.input_tokens = u.input_tokens;
    rec.output_tokens = u.output_tokens;
    rec.cached_tokens = u.cached_tokens;
    rec.characters = u.characters;
    rec.milliseconds = u.milliseconds;
    rec.images = u.images.map(u64::from);
}

pub fn kind_name(k: wit::ErrorKind) -> &'static str {
    use wit::ErrorKind as K;
    match k {
        K::BadRequest => "bad_request",
        K::Unauthorized => "unauthorized",
        K::Forbidden => "forbidden",
        K::InsufficientBalance => "insufficient_balance",
        K::RateLimited => "rate_limited",
        K::NotFound => "not_found",
        K::ContentFiltered => "content_filtered",
        K::UpstreamFault => "upstream_fault",
        K::Timeout => "timeout",
        K::Unsupported => "unsupported",
    }
}

/// The credential field names, for plugins that sign requests themselves.
pub(crate) fn credential_fields(plugin: &Plugin) -> Option<Vec<String>> {
    let f = &plugin.manifest.credential_fields;
    (!f.is_empty()).then(|| f.iter().map(|c| c.name.clone()).collect())
}

/// The raw credential for a plugin that signs requests itself, only where the channel's
/// operator allows it (`allow_signing`): a plugin file alone never decides that it receives
/// keys. A multi-field credential is written in the channel's `keys` as `value1|value2|...`,
/// in the order of the plugin's credential fields.
pub(crate) fn split_credential(
    channel: &Channel,
    fields: &[String],
    key: &str,
) -> Result<Vec<(String, String)>, CallError> {
    if !channel.allow_signing {
        return Err(CallError::config(format!(
            "channel '{}' uses a plugin that signs requests with the raw key; set allow_signing = true on the channel if you trust plugin '{}' with its keys",
            channel.name, channel.plugin
        )));
    }
    let values: Vec<&str> = if fields.len() == 1 { vec![key] } else { key.split('|').collect() };
    if values.len() != fields.len() {
        return Err(CallError::config(format!(
            "this channel's plugin needs credentials as '{}' (separated by '|')",
            fields.join("|")
        )));
    }
    Ok(fields.iter().cloned().zip(values.into_iter().map(str::to_string)).collect())
}

/// Consumer headers a plugin may see. Never the consumer's own credentials.
pub fn forwarded_headers(h: &http::HeaderMap) -> Vec<wit::Header> {
    ["content-type", "accept", "accept-language", "user-agent"]
        .iter()
        .filter_map(|n| {
            h.get(*n).and_then(|v| v.to_str().ok()).map(|v| wit::Header { name: n.to_string(), value: v.to_string() })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raw_keys_reach_a_signing_plugin_only_where_the_operator_allows_it() {
        let channel = |allow: bool| {
            let text = format!("name = \"k\"\nplugin = \"kling\"\nmodels = [\"m\"]\nallow_signing = {allow}");
            Channel::from_config(&toml::from_str(&text).unwrap(), std::time::Duration::from_secs(1))
        };
        let fields = vec!["access_key".to_string(), "secret_key".to_string()];
        let e = split_credential(&channel(false), &fields, "ak|sk").unwrap_err();
        assert_eq!(e.status, 503);
        assert!(e.message.contains("allow_signing"), "{}", e.message);
        let pairs = split_credential(&channel(true), &fields, "ak|sk").unwrap();
        assert_eq!(pairs, vec![("access_key".into(), "ak".into()), ("secret_key".into(), "sk".into())]);
        assert!(split_credential(&channel(true), &fields, "ak").is_err(), "one field short");
    }
}
