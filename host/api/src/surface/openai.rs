//! The OpenAI-compatible routes: `/v1/chat/completions`, `/v1/embeddings`, `/v1/images/generations`,
//! `/v1/audio/speech`, `/v1/audio/transcriptions` (model calls, translated by the channel's
//! plugin; a multipart call's model is its form's `model` field) and `/v1/models`.

use super::{read_request, render, run, with_request_id};
use crate::engine::CallRequest;
use crate::exchange::CallError;
use crate::server::auth::{credential, Credential};
use crate::server::body::{json, Response};
use crate::server::error::ToResponse;
use crate::server::error::{bad_request, not_found};
use crate::server::Api;
use http::Request;
use hyper::body::Incoming;
use std::sync::Arc;
use std::time::Instant;
use tollgate_base::boxed;

pub async fn model_call(state: &Arc<Api>, req: Request<Incoming>, op: &str) -> Response {
    // The rarer paths are boxed: this future is moved with every request, at its largest
    // branch's size.
    if op == "speech" && state.engine.prefetch.settings.model.is_some() {
        return boxed::pin(|| super::speech_prefetch::speech(state, req)).await;
    }
    let (mut video, mut speech) = (None, None);
    let (answer, request_id) =
        run(state, |started, request_id| resolve(state, req, op, started, request_id, &mut video, &mut speech)).await;
    let response = match (video, speech) {
        (Some(v), _) => boxed::pin(|| super::mindvideo::finish(state, v, answer)).await,
        (None, Some(plan)) => render(super::speech_prefetch::speak(state, plan, answer)),
        (None, None) => render(answer),
    };
    with_request_id(response, &request_id)
}

async fn resolve(
    state: &Arc<Api>,
    req: Request<Incoming>,
    op: &str,
    started: Instant,
    request_id: String,
    video: &mut Option<super::mindvideo::VideoCall>,
    speech: &mut Option<super::speech_prefetch::Plan>,
) -> Result<CallRequest, CallError> {
    let request = read_request(state, req).await?;
    // A JSON body's keys are walked with its model read (`requested_model`).
    let keys_read = request.form.is_none();
    let model = match &request.form {
        // A transcription's model is a field of its form, once (the vendor might read another copy).
        Some(form) if form.parts.iter().filter(|p| p.name == "model").count() > 1 => {
            return Err(bad_request("duplicate_model", "The form gives 'model' more than once."));
        }
        Some(form) => form.text("model").filter(|m| !m.is_empty()).map(str::to_string).ok_or_else(|| {
            bad_request("missing_model", "You must provide a model parameter (a 'model' field of the form).")
        })?,
        None => requested_model(&request.body)?,
    };
    let (plugin, channel) = route(state, &model)?;
    // A video model asked through chat or images: the MindVideo proxy's surface.
    let (as_video, request) = super::mindvideo::resolve(state, &plugin, &channel, request, op, &model)?;
    let op = if as_video.is_some() { "video" } else { op };
    let mut call = checked_call(plugin, channel, request, op, model, started, request_id)?;
    // A video's body is the surface's rewrite: the engine walks it as it walks any.
    call.keys_read = keys_read && as_video.is_none();
    if let Some(v) = as_video {
        v.prepare(&mut call);
        *video = Some(v);
    } else if op == "chat" {
        *speech = super::speech_prefetch::chat_plan(state, &mut call)?;
    }
    Ok(call)
}

/// The call of a read request for `model`'s `op`: the channel serving the model (404) and its
/// plugin, loaded (503) and supporting the op.
pub(super) fn to_channel(
    state: &Api,
    request: super::ConsumerRequest,
    op: &str,
    model: String,
    started: Instant,
    request_id: String,
) -> Result<CallRequest, CallError> {
    let (plugin, channel) = route(state, &model)?;
    checked_call(plugin, channel, request, op, model, started, request_id)
}

/// The channel serving `model` (several take turns: call once per request) and its plugin.
pub(super) fn route(
    state: &Api,
    model: &str,
) -> Result<(Arc<crate::plugin::Plugin>, Arc<crate::keypool::Channel>), CallError> {
    let channel = state.engine.channels.load().for_model(model).cloned().ok_or_else(|| {
        not_found(
            "model_not_found",
            format!("The model '{model}' does not exist or you do not have access to it. GET /v1/models lists the models this gateway serves."),
        )
    })?;
    let plugin = state.engine.registry.current().get(&channel.plugin).cloned().ok_or_else(|| {
        CallError::config(format!(
            "the plugin '{}' of channel '{}' is not loaded; see GET /admin/plugins",
            channel.plugin, channel.name
        ))
    })?;
    Ok((plugin, channel))
}

/// The call, if the channel serves `op`.
pub(super) fn checked_call(
    plugin: Arc<crate::plugin::Plugin>,
    channel: Arc<crate::keypool::Channel>,
    request: super::ConsumerRequest,
    op: &str,
    model: String,
    started: Instant,
    request_id: String,
) -> Result<CallRequest, CallError> {
    if !serves(&plugin, &channel, op) {
        return Err(CallError::unsupported(format!(
            "the model '{model}' does not support {op} (plugin '{}')",
            plugin.name()
        )));
    }
    Ok(request.into_call(plugin, channel, op.to_string(), model, started, request_id))
}

/// The channels serving `model` whose plugin speaks it (op `speech`).
pub(super) fn speakers(state: &Api, model: &str) -> Vec<Arc<crate::keypool::Channel>> {
    let registry = state.engine.registry.current();
    let channels = state.engine.channels.load();
    channels
        .serving(model)
        .iter()
        .filter(|c| registry.get(&c.plugin).is_some_and(|p| serves(p, c, "speech")))
        .cloned()
        .collect()
}

/// Whether `channel` serves `op`: its plugin supports it and the operator did not narrow the
/// channel's ops (`ops = [...]`).
pub(super) fn serves(plugin: &crate::plugin::Plugin, channel: &crate::keypool::Channel, op: &str) -> bool {
    plugin.supports(op) && channel.ops.as_ref().is_none_or(|ops| ops.iter().any(|o| o == op))
}

/// The `model` of a JSON object body; 400 with a precise message otherwise, and for a body
/// spelling a field the host reads another way (read in the same walk: `json_keys`).
pub(super) fn requested_model(body: &[u8]) -> Result<String, CallError> {
    if body.is_empty() {
        return Err(bad_request("invalid_json", "The request body is empty; send a JSON object."));
    }
    let first = body.iter().find(|b| !b.is_ascii_whitespace());
    if first != Some(&b'{') {
        return Err(bad_request("invalid_json", "The request body must be a JSON object."));
    }
    let (model, misspelled) = tollgate_base::json_keys::model_and_misspelled(body).map_err(CallError::invalid_json)?;
    if let Some((key, field)) = misspelled {
        return Err(CallError::ambiguous_field(&key, field));
    }
    match model {
        Some(m) if !m.is_empty() => Ok(m.into_owned()),
        _ => Err(bad_request("missing_model", "You must provide a model parameter.")),
    }
}

/// `GET /v1/user/info`: the caller's balance (what it can spend now) and its usage so far.
pub async fn user_info(state: &Api, req: &Request<Incoming>) -> Response {
    if let Credential::Session(_) = credential(req.headers()) {
        return super::user::info(state, req).await.unwrap_or_else(|e| e.to_response());
    }
    let consumer = match state.authenticate(req) {
        Ok(c) => c,
        Err(e) => return e.to_response(),
    };
    let usage: Result<(i64, i64), _> = sqlx::query_as(
        "SELECT COUNT(*), CAST(COALESCE(SUM(charge_micros), 0) AS BIGINT) FROM call_log WHERE key_id = $1",
    )
    .bind(consumer.key_id)
    .fetch_one(&state.engine.db)
    .await;
    let (calls, spent) = usage.unwrap_or_default();
    let (balance, currency) = match &state.engine.billing {
        Some(b) => (
            serde_json::Value::String(crate::account::format_money(
                b.wallets.available(crate::billing::Account::User(consumer.user_id)),
            )),
            serde_json::Value::String(b.table().currency.clone()),
        ),
        None => (serde_json::Value::Null, serde_json::Value::Null),
    };
    json(
        200,
        &serde_json::json!({
            "object": "user.info",
            "name": consumer.name,
            "balance": balance,
            "currency": currency,
            "usage": { "calls": calls, "spent": crate::account::format_money(spent) },
            // Verifies the signatures of this user's task callbacks.
            "webhook_secret": state.sessions.webhook_secret(consumer.user_id),
        }),
    )
}

/// `GET /v1/models` (`speech_only`: `GET /v1/audio/models`, the models some channel speaks).
pub fn models(state: &Api, req: &Request<Incoming>, speech_only: bool) -> Response {
    if let Err(e) = state.authenticate(req) {
        return e.to_response();
    }
    let channels = state.engine.channels.load();
    let data: Vec<serde_json::Value> = channels
        .models()
        .into_iter()
        .filter(|(id, _)| !speech_only || !speakers(state, id).is_empty())
        .map(|(id, plugin)| model_object(id, plugin))
        .collect();
    json(200, &serde_json::json!({ "object": "list", "data": data }))
}

/// `GET /v1/models/{id}`: one model, as OpenAI's SDKs retrieve it.
pub fn model(state: &Api, req: &Request<Incoming>, id: &str) -> Response {
    if let Err(e) = state.authenticate(req) {
        return e.to_response();
    }
    let channels = state.engine.channels.load();
    match channels.models().into_iter().find(|(m, _)| *m == id) {
        Some((id, plugin)) => json(200, &model_object(id, plugin)),
        None => {
            not_found("model_not_found", format!("The model '{id}' does not exist or you do not have access to it."))
                .to_response()
        }
    }
}

fn model_object(id: &str, plugin: &str) -> serde_json::Value {
    serde_json::json!({ "id": id, "object": "model", "created": 0, "owned_by": plugin })
}

#[cfg(test)]
mod tests {
    use super::requested_model;

    #[test]
    fn model_is_required_and_body_must_be_an_object() {
        assert_eq!(requested_model(br#"{"model":"m","messages":[]}"#).unwrap(), "m");
        assert_eq!(requested_model(br#" {"model":"a\"b"}"#).unwrap(), "a\"b");
        assert_eq!(requested_model(br#"{"messages":[]}"#).unwrap_err().code, "missing_model");
        assert_eq!(requested_model(br#"{"model":""}"#).unwrap_err().code, "missing_model");
        assert_eq!(requested_model(b"[1]").unwrap_err().code, "invalid_json");
        assert_eq!(requested_model(b"{\"model\":").unwrap_err().status, 400);
        assert_eq!(requested_model(b"").unwrap_err().code, "invalid_json");
        let e = requested_model(br#"{"model":"m","Max_Tokens":9}"#).unwrap_err();
        assert_eq!((e.status, e.code.as_str(), e.param), (400, "ambiguous_field", Some("max_tokens")));
    }
}
