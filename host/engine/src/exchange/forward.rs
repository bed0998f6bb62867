//! A call the host forwards without entering its plugin (`tollgate:fast`'s `forward`, whose
//! text in `wit/fast/forward.wit` is the rule; the plugin's declaration is kept by
//! `plugin::forward`): the consumer's body POSTed as it came, the answer given back as it came
//! when it is a 2xx with OpenAI's usage; a chat stream asked with the usage chunk billing needs
//! and relayed by the host (`stream::Decoder::Forwarded`). Entering a plugin (an instance, the
//! call lowered into it and the answer lifted out) is over half of what a chat costs the
//! gateway, and most of a stream's first byte on an idle machine.
//!
//! Invariants:
//! - a call is forwarded only under the contract's conditions, and sends exactly the request the
//!   plugin's `first()` would have asked for (a stream's body the same JSON);
//! - an answer the host does not use as it came goes to the plugin's `next()`, after its
//!   `first()` asked for that same request; so a forwarded call ends as it would have through
//!   the plugin, its error class, key health and bill included;
//! - the usage is read, and a stream relayed, by the rules the plugin SDK follows
//!   (`tollgate_base::openai_json`, `tollgate_base::openai_stream`);
//! - a forwarded call is admitted (`max_concurrent_calls`) before it is sent, as a call through
//!   the plugin is: the plugin an answer still needs can always be entered, and a forwarded
//!   stream holds its admission to its end.

use super::stream::Decoder;
use super::{
    answered, answered_json_instead_of_events, consumer_body_into, failed, plugin_failure, read_body, read_whole, send,
    steps, upstream_span, whole_response, CallContext, CallError, Outcome, PendingStream, VendorWork,
};
use crate::plugin::runtime::Admission;
use crate::plugin::wit;
use bytes::Bytes;
use std::sync::atomic::Ordering::Relaxed;
use tollgate_base::boxed;
use tollgate_base::metrics::METRICS;
use tollgate_base::openai_json::{self, Units};
use tollgate_base::openai_stream::ChatStream;

/// A call the host forwards (`route`).
pub(super) enum Forward {
    /// A whole answer, asked on this path with the consumer's body.
    Whole(String),
    /// A chat stream, asked on `path` with `body` (`openai_stream`'s request), relayed by
    /// `chat`.
    Stream { path: String, body: String, chat: ChatStream },
}

/// How `call` is forwarded, when the contract lets the host forward it.
pub(super) fn route(ctx: &CallContext, call: &wit::Call) -> Option<Forward> {
    let mapped = !call.upstream_model.is_empty() && call.upstream_model != call.model;
    let plain = !matches!(call.body, wit::Body::Form(_)) && call.owned.is_empty() && call.task.is_none();
    if mapped || !plain || !call.credential.is_empty() || !ctx.plugin.manifest.credential_fields.is_empty() {
        return None;
    }
    let (path, streams) = ctx.plugin.forwarded(&call.config, &call.op)?;
    match openai_json::asks_for_stream(&ctx.client.body) {
        Ok(false) => Some(Forward::Whole(path)),
        Ok(true) if streams => {
            // The SDK's `first()` sets the model it is given, mapped or not: so does the host.
            let model = Some(call.upstream_model.as_str()).filter(|m| !m.is_empty());
            let (body, chat) = ChatStream::request(&ctx.client.body, model)?;
            Some(Forward::Stream { path, body, chat })
        }
        _ => None,
    }
}

/// Forwards `call` as `route` said: the host's reply to a 2xx with usage, or its relay of a
/// 2xx stream; else the plugin's steps from the answer on, as if it had sent the request
/// itself.
pub(super) async fn run(ctx: CallContext, call: &mut wit::Call, forward: Forward) -> Result<Outcome, CallError> {
    let admitted = ctx.runtime.admit().map_err(|e| plugin_failure(&ctx.plugin, "admitting the call", e))?;
    let (sent, chat) = match forward {
        Forward::Whole(path) => (request(path, wit::Body::ClientBody), None),
        Forward::Stream { path, body, chat } => (request(path, wit::Body::Text(body)), Some(chat)),
    };
    let mut span = upstream_span(&ctx, call, &sent);
    span.attr("tollgate.forwarded", true);
    let resp = send(&ctx, &call.context.base_url, &sent, VendorWork::None).await.map_err(|e| failed(&mut span, e))?;
    let response = match chat {
        Some(chat) => {
            span.attr("http.response.status_code", resp.status().as_u16());
            drop(span);
            if resp.status().is_success() && !answered_json_instead_of_events(&resp, &wit::Framing::Sse) {
                METRICS.forwarded[0].fetch_add(1, Relaxed);
                let decoder = Decoder::Forwarded { chat, _admitted: admitted };
                return Ok(PendingStream::outcome(ctx, decoder, resp, wit::Framing::Sse, stream_headers()));
            }
            read_whole(resp, &ctx.upstream).await?
        }
        None => {
            let (head, body) = read_body(resp, &ctx.upstream).await.map_err(|e| failed(&mut span, e))?;
            span.attr("http.response.status_code", head.status.as_u16());
            drop(span);
            if let Some(outcome) = reply(head.status, &body) {
                METRICS.forwarded[0].fetch_add(1, Relaxed);
                return Ok(outcome);
            }
            whole_response(&head, &body)
        }
    };
    METRICS.forwarded[1].fetch_add(1, Relaxed);
    // Boxed: the plugin's steps are most of a call's future (its instance's calls), and a
    // forwarded call seldom needs them; unboxed, every call's future is moved at their size.
    boxed::pin(|| to_plugin(ctx, call, &sent, &response, admitted)).await
}

/// The plugin's steps from `response`, the answer to the forwarded `sent`, on: its `first()`
/// must ask for `sent`, then its `next()` reads the answer.
async fn to_plugin(
    ctx: CallContext,
    call: &mut wit::Call,
    sent: &wit::UpstreamRequest,
    response: &wit::UpstreamResponse,
    admitted: Admission,
) -> Result<Outcome, CallError> {
    let work = answered(response.status);
    consumer_body_into(call, &ctx.client);
    let mut pc = ctx
        .runtime
        .start_admitted(&ctx.plugin.pre, call, admitted)
        .await
        .map_err(|e| plugin_failure(&ctx.plugin, "starting the exchange", e).after(work))?;
    let first = pc.first().await.map_err(|e| plugin_failure(&ctx.plugin, "first()", e).after(work))?;
    if !asks_for(&first, sent) {
        return Err(not_as_declared(&ctx, call, work));
    }
    let step = pc.next(response).await.map_err(|e| plugin_failure(&ctx.plugin, "next()", e).after(work))?;
    steps(ctx, call, pc, step, work).await
}

/// The request a forwarded call sends: what `first()` would have asked for.
fn request(path: String, body: wit::Body) -> wit::UpstreamRequest {
    wit::UpstreamRequest {
        method: "POST".into(),
        path,
        headers: vec![wit::Header { name: "content-type".into(), value: "application/json".into() }],
        body,
        auth: wit::Auth::Bearer,
        timeout_ms: None,
        key: 0,
    }
}

/// The consumer's headers of a forwarded stream (the SDK's `Step::stream_sse`).
fn stream_headers() -> Vec<wit::Header> {
    let header = |name: &str, value: &str| wit::Header { name: name.into(), value: value.into() };
    vec![header("content-type", "text/event-stream"), header("cache-control", "no-cache")]
}

/// Whether the plugin's first step asks for `sent`, the request the host forwarded: the same
/// request (a stream's body compared as JSON), and for a stream, the same framing and headers.
fn asks_for(step: &wit::Step, sent: &wit::UpstreamRequest) -> bool {
    let same = |r: &wit::UpstreamRequest| {
        r.method == sent.method
            && r.path == sent.path
            && matches!(r.auth, wit::Auth::Bearer)
            && r.key == 0
            && r.timeout_ms.is_none()
            && r.headers.len() == 1
            && r.headers[0].name.eq_ignore_ascii_case("content-type")
            && r.headers[0].value == "application/json"
    };
    match (step, &sent.body) {
        (wit::Step::Send(r), wit::Body::ClientBody) => same(r) && matches!(r.body, wit::Body::ClientBody),
        (wit::Step::Stream(s), wit::Body::Text(body)) => {
            let json = |text: &str| serde_json::from_str::<serde_json::Value>(text).ok();
            let asked = match &s.request.body {
                wit::Body::Text(t) => json(t),
                wit::Body::Bytes(b) => std::str::from_utf8(b).ok().and_then(json),
                _ => None,
            };
            same(&s.request)
                && asked.is_some()
                && asked == json(body)
                && matches!(s.framing, wit::Framing::Sse)
                && s.reply_headers.len() == 2
                && s.reply_headers.iter().zip(stream_headers()).all(|(a, b)| a.name == b.name && a.value == b.value)
        }
        _ => false,
    }
}

/// The reply to a forwarded call whose answer the host uses as it came: a 2xx with a usage
/// object; `None`: the answer goes to the plugin.
fn reply(status: http::StatusCode, body: &Bytes) -> Option<Outcome> {
    let units = status.is_success().then(|| openai_json::Answer::read(body)).flatten()?.usage()?;
    Some(Outcome::Reply {
        status: 200,
        headers: vec![wit::Header { name: "content-type".into(), value: "application/json".into() }],
        body: body.clone(),
        usage: usage_of(units),
        error: None,
        objects: Vec::new(),
        speech: None,
    })
}

/// What a forwarded call used, as a plugin reports it (the SDK's `openai_compat::usage_of`).
pub(super) fn usage_of(units: Units) -> wit::Usage {
    wit::Usage {
        input_tokens: units.input_tokens,
        output_tokens: units.output_tokens,
        cached_tokens: units.cached_tokens,
        images: units.images,
        ..wit::Usage::default()
    }
}

/// The failure of a plugin whose `first()` did not ask for the request the host forwarded
/// under its declaration: its fault, with what the vendor did counted.
fn not_as_declared(ctx: &CallContext, call: &wit::Call, work: VendorWork) -> CallError {
    METRICS.plugin_failures.fetch_add(1, Relaxed);
    tracing::error!(plugin = ctx.plugin.name(), version = %ctx.plugin.manifest.version, op = %call.op, "the plugin's first step is not the request it declared forwarded");
    CallError::plugin(format!(
        "plugin '{}' declared op '{}' forwarded, and its first step asked for another request",
        ctx.plugin.name(),
        call.op
    ))
    .after(work)
}
