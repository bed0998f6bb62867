//! A call the host forwards without entering its plugin (`tollgate:fast`'s `forward`, whose
//! text in `wit/fast/forward.wit` is the rule; the plugin's declaration is kept by
//! `plugin::forward`): the consumer's body POSTed as it came, the answer given back as it came
//! when it is a 2xx with OpenAI's usage. Entering a plugin (an instance, the call lowered into
//! it and the answer lifted out) is over half of what a chat costs the gateway.
//!
//! Invariants:
//! - a call is forwarded only under the contract's conditions, and sends exactly the request the
//!   plugin's `first()` would have asked for;
//! - an answer the host does not use as it came goes to the plugin's `next()`, after its
//!   `first()` asked for that same request; so a forwarded call ends as it would have through
//!   the plugin, its error class, key health and bill included;
//! - the usage is read by the reading the plugin SDK uses (`tollgate_base::openai_json`);
//! - a forwarded call is admitted (`max_concurrent_calls`) before it is sent, as a call through
//!   the plugin is: the plugin an answer still needs can always be entered.

use super::{
    answered, consumer_body_into, failed, plugin_failure, read_body, send, steps, upstream_span, whole_response,
    CallContext, CallError, Outcome, VendorWork,
};
use crate::plugin::wit;
use bytes::Bytes;
use std::sync::atomic::Ordering::Relaxed;
use tollgate_base::metrics::METRICS;
use tollgate_base::openai_json;

/// The upstream path `call` is forwarded on, when the contract lets the host forward it.
pub(super) fn route(ctx: &CallContext, call: &wit::Call) -> Option<String> {
    let mapped = !call.upstream_model.is_empty() && call.upstream_model != call.model;
    let plain = !matches!(call.body, wit::Body::Form(_)) && call.owned.is_empty() && call.task.is_none();
    if mapped || !plain || !call.credential.is_empty() || !ctx.plugin.manifest.credential_fields.is_empty() {
        return None;
    }
    let path = ctx.plugin.forwarded(&call.config, &call.op)?;
    matches!(openai_json::asks_for_stream(&ctx.client.body), Ok(false)).then_some(path)
}

/// Forwards `call` on `path` (from `route`): the host's reply to a 2xx with usage, else the
/// plugin's steps from the answer on, as if it had sent the request itself.
pub(super) async fn run(ctx: CallContext, call: &mut wit::Call, path: String) -> Result<Outcome, CallError> {
    let admitted = ctx.runtime.admit().map_err(|e| plugin_failure(&ctx.plugin, "admitting the call", e))?;
    let sent = request(path);
    let mut span = upstream_span(&ctx, call, &sent);
    span.attr("tollgate.forwarded", true);
    let resp = send(&ctx, &call.context.base_url, &sent, VendorWork::None).await.map_err(|e| failed(&mut span, e))?;
    let (head, body) = read_body(resp, &ctx.upstream).await.map_err(|e| failed(&mut span, e))?;
    span.attr("http.response.status_code", head.status.as_u16());
    drop(span);
    if let Some(outcome) = reply(head.status, &body) {
        return Ok(outcome);
    }
    let work = answered(head.status.as_u16());
    let response = whole_response(&head, &body);
    consumer_body_into(call, &ctx.client);
    let mut pc = ctx
        .runtime
        .start_admitted(&ctx.plugin.pre, call, admitted)
        .await
        .map_err(|e| plugin_failure(&ctx.plugin, "starting the exchange", e).after(work))?;
    let first = pc.first().await.map_err(|e| plugin_failure(&ctx.plugin, "first()", e).after(work))?;
    if !asks_for(&first, &sent) {
        return Err(not_as_declared(&ctx, call, work));
    }
    let step = pc.next(&response).await.map_err(|e| plugin_failure(&ctx.plugin, "next()", e).after(work))?;
    steps(ctx, call, pc, step, work).await
}

/// The request a forwarded call sends: what `first()` would have asked for.
fn request(path: String) -> wit::UpstreamRequest {
    wit::UpstreamRequest {
        method: "POST".into(),
        path,
        headers: vec![wit::Header { name: "content-type".into(), value: "application/json".into() }],
        body: wit::Body::ClientBody,
        auth: wit::Auth::Bearer,
        timeout_ms: None,
        key: 0,
    }
}

/// Whether the plugin's first step asks for `sent`, the request the host forwarded.
fn asks_for(step: &wit::Step, sent: &wit::UpstreamRequest) -> bool {
    let wit::Step::Send(r) = step else { return false };
    r.method == sent.method
        && r.path == sent.path
        && matches!(r.body, wit::Body::ClientBody)
        && matches!(r.auth, wit::Auth::Bearer)
        && r.key == 0
        && r.timeout_ms.is_none()
        && r.headers.len() == 1
        && r.headers[0].name.eq_ignore_ascii_case("content-type")
        && r.headers[0].value == "application/json"
}

/// The reply to a forwarded call whose answer the host uses as it came: a 2xx with a usage
/// object; `None`: the answer goes to the plugin.
fn reply(status: http::StatusCode, body: &Bytes) -> Option<Outcome> {
    let units = status.is_success().then(|| openai_json::Answer::read(body)).flatten().and_then(|a| a.usage());
    let Some(units) = units else {
        METRICS.forwarded[1].fetch_add(1, Relaxed);
        return None;
    };
    METRICS.forwarded[0].fetch_add(1, Relaxed);
    Some(Outcome::Reply {
        status: 200,
        headers: vec![wit::Header { name: "content-type".into(), value: "application/json".into() }],
        body: body.clone(),
        usage: wit::Usage {
            input_tokens: units.input_tokens,
            output_tokens: units.output_tokens,
            cached_tokens: units.cached_tokens,
            images: units.images,
            ..wit::Usage::default()
        },
        error: None,
        objects: Vec::new(),
        speech: None,
    })
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
