//! `Engine::call`: authorize the model, claim the idempotency key, reserve, run the plugin's
//! steps on a key of the channel (failing over to other keys, then other channels), and end
//! the call through its `CallEnd`.

use super::end::CallEnd;
use super::idempotency::{self, Held};
use super::Engine;
use crate::account::{format_money, Consumer};
use crate::billing::{Account, Refusal};
use crate::exchange::{self, CallContext, CallError, Outcome, StreamBody, VendorWork};
use crate::keypool::health::KeyOutcome;
use crate::keypool::Channel;
use crate::plugin::{wit, Plugin};
use crate::store::{now_unix, CallRecord};
use crate::telemetry::METRICS;
use bytes::Bytes;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Instant;

/// One call, resolved to its plugin and channel.
pub struct CallRequest {
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

/// What the consumer gets.
pub enum Answer {
    /// A whole answer (the plugin's reply, a stored idempotent answer).
    Full { status: u16, headers: Vec<wit::Header>, body: Bytes },
    /// A stream; the stream task ends the call.
    Stream { headers: Vec<wit::Header>, body: StreamBody },
    /// An upstream response copied as it is (downloads).
    Relay(http::Response<hyper::body::Incoming>),
    /// An error in the consumer's API shape.
    Failed(CallError),
}

/// The most keys one call tries.
const MAX_ATTEMPTS: usize = 3;

impl Engine {
    /// Runs one call to what the consumer gets; the call is settled and recorded exactly once.
    pub async fn call(&self, r: CallRequest) -> Answer {
        let mut end = CallEnd::new(self.billing.clone(), self.call_log.clone(), draft_record(&r), r.started);
        if !r.model.is_empty() && !r.consumer.may_use(&r.model) {
            let e = CallError::new(
                403,
                "permission_error",
                "model_not_allowed",
                format!("This API key may not use the model '{}'.", r.model),
            );
            end.refuse(&e);
            return Answer::Failed(e);
        }
        // An Idempotency-Key is claimed before anything is reserved or sent.
        match idempotency::claim(&self.db, &r).await {
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
        // Billing: priced and reserved before the upstream is called (400/402/403 otherwise).
        if let Some(b) = &self.billing {
            match b.start(&r.consumer.accounts(), &r.consumer.group, &r.model, &r.op, &r.body) {
                Ok(m) => end.meter = Some(m),
                Err(refusal) => {
                    let e = refusal_error(&r.model, refusal);
                    give_up(end.refuse(&e)).await;
                    return Answer::Failed(e);
                }
            }
        }
        let capture = end.held.is_some();
        match self.run_with_failover(&r, &mut end, capture).await {
            Ok(Outcome::Stream { headers, pending }) => {
                let body = pending.start(Box::new(move |report| end.stream(report)));
                Answer::Stream { headers, body }
            }
            Ok(Outcome::Reply { status, headers, body, usage, error }) => {
                let answered = error.is_none() && (200..300).contains(&status);
                let held = end.reply(status, &usage, error.as_ref());
                if let Some(h) = held {
                    if answered {
                        let ct = headers.iter().find(|h| h.name.eq_ignore_ascii_case("content-type"));
                        h.complete(Some((status, ct.map(|h| h.value.as_str()), &body))).await;
                    } else {
                        h.give_up().await;
                    }
                }
                Answer::Full { status, headers, body }
            }
            Ok(Outcome::Relay { response }) => {
                let ok = response.status().is_success();
                match end.relay(response.status().as_u16()) {
                    // A download is not kept: a repeat is told so, never served again.
                    Some(h) if ok => h.complete(None).await,
                    held => give_up(held).await,
                }
                Answer::Relay(response)
            }
            Err(e) => {
                match end.fail(&e) {
                    Some(h) if e.work != VendorWork::None => {
                        let body = e.to_json().to_string();
                        h.complete(Some((e.status, Some("application/json"), body.as_bytes()))).await
                    }
                    held => give_up(held).await,
                }
                Answer::Failed(e)
            }
        }
    }

    /// Runs the call on the resolved channel; when every attempt there failed on the keys'
    /// account (refused, rate limited, faults, or no usable key), runs it on the model's other
    /// channels in turn. `end` learns the channel and plugin that gave the result.
    async fn run_with_failover(&self, r: &CallRequest, end: &mut CallEnd, capture: bool) -> Result<Outcome, CallError> {
        let (mut result, mut retryable) = self.run_on_channel(r, &r.plugin, &r.channel, capture).await;
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
            (result, retryable) = self.run_on_channel(r, &plugin, &channel, capture).await;
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
        r: &CallRequest,
        plugin: &Arc<Plugin>,
        channel: &Arc<Channel>,
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
                runtime: self.registry.runtime().clone(),
                upstream: self.upstream.clone(),
                client_body: r.body.clone(),
                capture,
                write_timeout: self.stream_write_timeout,
            };
            let result = exchange::run(ctx, &call).await;
            let outcome = key_outcome(&result);
            let Some(picked) = picked else { return (result, false) };
            picked.report(outcome);
            tried.push(picked.id);
            // A stream that started is the consumer's now (it is a success), and a request
            // the vendor may have worked on is never sent again: only a call the vendor
            // refused or never received is retried.
            let may_have_run = match &result {
                Err(e) => e.work != VendorWork::None,
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

async fn give_up(held: Option<Held>) {
    if let Some(h) = held {
        h.give_up().await;
    }
}

/// What a call's result says about the key it used.
pub fn key_outcome(result: &Result<Outcome, CallError>) -> KeyOutcome {
    use wit::ErrorKind as K;
    let (class, retry_after) = match result {
        Ok(Outcome::Reply { error: Some(e), .. }) => (e.kind, e.retry_after_ms),
        // A relayed answer is classified by its status, like any other: a 401 on a download
        // disables the key, a 429 cools it.
        Ok(Outcome::Relay { response }) => match relayed_class(response) {
            Some(class) => class,
            None => return KeyOutcome::Success,
        },
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

/// The class of a relayed answer's status (`None`: a success or the consumer's own problem).
fn relayed_class(response: &http::Response<hyper::body::Incoming>) -> Option<(wit::ErrorKind, Option<u64>)> {
    use wit::ErrorKind as K;
    let retry_after = || {
        let secs = response.headers().get(http::header::RETRY_AFTER)?.to_str().ok()?.trim().parse::<u64>().ok()?;
        secs.checked_mul(1000)
    };
    match response.status().as_u16() {
        401 => Some((K::Unauthorized, None)),
        402 => Some((K::InsufficientBalance, None)),
        429 => Some((K::RateLimited, retry_after())),
        500..=599 => Some((K::UpstreamFault, None)),
        _ => None,
    }
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

fn draft_record(r: &CallRequest) -> CallRecord {
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
pub fn credential_fields(plugin: &Plugin) -> Option<Vec<String>> {
    let f = &plugin.manifest.credential_fields;
    (!f.is_empty()).then(|| f.iter().map(|c| c.name.clone()).collect())
}

/// The raw credential for a plugin that signs requests itself, only where the channel's
/// operator allows it (`allow_signing`): a plugin file alone never decides that it receives
/// keys. A multi-field credential is written in the channel's `keys` as `value1|value2|...`,
/// in the order of the plugin's credential fields.
pub fn split_credential(channel: &Channel, fields: &[String], key: &str) -> Result<Vec<(String, String)>, CallError> {
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
