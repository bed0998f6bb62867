//! Vendor-native routes declared by plugins (e.g. MiniMax `POST /v1/t2a_v2`): the consumer's
//! body goes to the plugin as it is, and the plugin answers in the vendor's own format, so a
//! vendor's client only changes its host and key. The channel is the one using the plugin that
//! serves the body's `model`, or else the first channel using that plugin.

use super::{answer, read_request, ConsumerRequest};
use crate::engine::CallRequest;
use crate::exchange::CallError;
use crate::plugin::Plugin;
use crate::server::body::Response;
use crate::server::AppState;
use http::Request;
use hyper::body::Incoming;
use std::sync::Arc;
use std::time::Instant;

pub async fn call(state: &Arc<AppState>, req: Request<Incoming>, plugin: Arc<Plugin>, op: String) -> Response {
    answer(state, |started, request_id| resolve(state, req, plugin, op, started, request_id)).await
}

async fn resolve(
    state: &Arc<AppState>,
    req: Request<Incoming>,
    plugin: Arc<Plugin>,
    op: String,
    started: Instant,
    request_id: String,
) -> Result<CallRequest, CallError> {
    let request = read_request(state, req).await?;
    let ConsumerRequest { consumer, headers, query, body, idempotency_key } = request;
    let model = serde_json::from_slice::<serde_json::Value>(&body)
        .ok()
        .and_then(|v| v.get("model").and_then(|m| m.as_str()).map(str::to_string))
        .unwrap_or_default();
    let channel = state
        .engine
        .channels
        .load()
        .for_plugin(plugin.name(), Some(model.as_str()).filter(|m| !m.is_empty()))
        .cloned()
        .ok_or_else(|| CallError::config(format!("no channel uses the plugin '{}'", plugin.name())))?;
    if !model.is_empty() && !channel.models.contains(&model) {
        return Err(CallError::new(
            404,
            "invalid_request_error",
            "model_not_found",
            format!(
                "The model '{model}' is not served on this route. GET /v1/models lists the models this gateway serves."
            ),
        ));
    }
    Ok(CallRequest { consumer, plugin, channel, op, model, body, query, headers, started, request_id, idempotency_key })
}
