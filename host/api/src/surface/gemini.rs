//! Google's Gemini API: `POST /v1beta/models/{model}:generateContent` and
//! `:streamGenerateContent` (`?alt=sse`, or a streamed JSON array without it), and the same
//! under `/v1/` (the `google-genai` SDK's default), for channels whose plugin speaks op
//! `generate` (the `gemini` plugin). `GET /v1/models/{id}` is OpenAI's model retrieval.
//!
//! The consumer's key may come as `x-goog-api-key`, or as `?key=` as Google's own REST
//! examples send it: that one is moved into the header before anything reads the request, so
//! it never reaches a plugin, a log or the call record. Every failure is Google's error
//! object (`{"error":{"code","message","status"}}`), in an SSE stream too.

use super::{read_request, run};
use crate::engine::{Answer, CallRequest};
use crate::exchange::CallError;
use crate::server::body::{Response, ResponseBody, SseMap, SseMapped};
use crate::server::error::{bad_request, not_found};
use crate::server::{url, Api};
use http::Request;
use hyper::body::Incoming;
use std::sync::Arc;
use std::time::Instant;
use tollgate_base::sse;

/// The op of a plugin that speaks Gemini's `generateContent` natively.
pub const GENERATE: &str = "generate";

/// The methods of a model the gateway serves (`countTokens` free).
const ACTIONS: [&str; 3] = ["generateContent", "streamGenerateContent", "countTokens"];

pub async fn handle(state: &Arc<Api>, mut req: Request<Incoming>) -> Response {
    let path = req.uri().path().to_string();
    if path == "/v1beta/models" {
        return list(state, req);
    }
    let rest = path.strip_prefix("/v1beta/models/").or_else(|| path.strip_prefix("/v1/models/")).unwrap_or_default();
    if let Err(e) = key_to_header(&mut req) {
        return error(&e);
    }
    // A model id may hold ':' itself (`qwen2.5:7b`): only a method the gateway serves is one.
    let method = rest.rsplit_once(':').filter(|(_, action)| ACTIONS.contains(action));
    let Some((model, action)) = method else {
        if req.method() == http::Method::GET {
            return match path.starts_with("/v1/models/") {
                true => super::openai::model(state, &req, &url::decode(rest, false)),
                false => model_object(state, &req, &url::decode(rest, false)),
            };
        }
        let message = format!("{path} is not served; this gateway serves models/{{model}}:{}.", ACTIONS.join(", :"));
        return error(&not_found("not_found", message));
    };
    if req.method() != http::Method::POST {
        let e = CallError::new(405, "invalid_request_error", "method_not_allowed", format!("{path} takes POST"));
        let mut resp = error(&e);
        resp.headers_mut().insert(http::header::ALLOW, http::HeaderValue::from_static("POST"));
        return resp;
    }
    let (model, action) = (url::decode(model, false), action.to_string());
    let (answer, request_id) =
        run(state, |started, request_id| resolve(state, req, model, action, started, request_id)).await;
    let response = match answer {
        Answer::Failed(e) => error(&e),
        Answer::Stream { headers, body } => {
            let body = if super::is_event_stream(&headers) {
                ResponseBody::Sse(SseMapped::new(body, Box::new(Errors)))
            } else {
                ResponseBody::Stream(body)
            };
            super::stream_response(&headers, body)
        }
        answer => super::render(answer),
    };
    super::with_request_id(response, &request_id)
}

/// `GET /v1beta/models`: the models served here on Gemini's routes, in Google's shape.
fn list(state: &Arc<Api>, mut req: Request<Incoming>) -> Response {
    if let Err(e) = key_to_header(&mut req).and_then(|()| state.authenticate(&req).map(drop)) {
        return error(&e);
    }
    let models: Vec<serde_json::Value> = gemini_models(state).iter().map(|m| google_model(m)).collect();
    crate::server::body::json(200, &serde_json::json!({ "models": models }))
}

/// `GET /v1beta/models/{model}`: one of them (the SDK's `models.get`).
fn model_object(state: &Arc<Api>, req: &Request<Incoming>, model: &str) -> Response {
    if let Err(e) = state.authenticate(req) {
        return error(&e);
    }
    let model = model.strip_prefix("models/").unwrap_or(model);
    match gemini_models(state).iter().find(|m| *m == model) {
        Some(m) => crate::server::body::json(200, &google_model(m)),
        None => error(&not_found("not_found", format!("models/{model} is not found on this gateway"))),
    }
}

/// The models a channel serves on Gemini's routes (its plugin speaks `generate`).
fn gemini_models(state: &Api) -> Vec<String> {
    let registry = state.engine.registry.current();
    let channels = state.engine.channels.load();
    let speaks = |m: &str| {
        channels
            .serving(m)
            .iter()
            .any(|c| registry.get(&c.plugin).is_some_and(|p| super::openai::serves(p, c, GENERATE)))
    };
    channels.models().into_iter().filter(|(m, _)| speaks(m)).map(|(m, _)| m.to_string()).collect()
}

fn google_model(m: &str) -> serde_json::Value {
    serde_json::json!({ "name": format!("models/{m}"), "displayName": m, "supportedGenerationMethods": ACTIONS })
}

/// Moves a `?key=` into `x-goog-api-key` (a header given too wins), leaving the query without it.
fn key_to_header(req: &mut Request<Incoming>) -> Result<(), CallError> {
    let Some(query) = req.uri().query() else { return Ok(()) };
    let mut key = None;
    let kept: Vec<&str> = query
        .split('&')
        .filter(|p| match p.strip_prefix("key=") {
            Some(k) => {
                key = Some(url::decode(k, true));
                false
            }
            None => true,
        })
        .collect();
    let Some(key) = key else { return Ok(()) };
    let path = req.uri().path();
    let uri = if kept.is_empty() { path.to_string() } else { format!("{path}?{}", kept.join("&")) };
    *req.uri_mut() = uri.parse().map_err(|_| bad_request("invalid_request", "The request URL is not valid."))?;
    if !req.headers().contains_key("x-goog-api-key") {
        let value =
            http::HeaderValue::from_str(&key).map_err(|_| bad_request("invalid_api_key", "The key is not valid."))?;
        req.headers_mut().insert("x-goog-api-key", value);
    }
    Ok(())
}

async fn resolve(
    state: &Arc<Api>,
    req: Request<Incoming>,
    model: String,
    action: String,
    started: Instant,
    request_id: String,
) -> Result<CallRequest, CallError> {
    let request = read_request(state, req).await?;
    let (plugin, channel) = super::openai::route(state, &model)?;
    if !super::openai::serves(&plugin, &channel, GENERATE) {
        return Err(bad_request(
            "unsupported_model",
            format!("The model '{model}' is not a Gemini model here: call it on /v1/chat/completions or /v1/messages."),
        ));
    }
    let mut call = super::openai::checked_call(plugin, channel, request, GENERATE, model.clone(), started, request_id)?;
    // Counting tokens generates nothing: a read, never priced.
    call.billed = action != "countTokens";
    call.path_params = vec![("model".into(), model), ("action".into(), action)];
    Ok(call)
}

/// Google's status name for an HTTP status.
fn status_name(status: u16) -> &'static str {
    match status {
        400 | 413 => "INVALID_ARGUMENT",
        401 => "UNAUTHENTICATED",
        402 => "FAILED_PRECONDITION",
        403 => "PERMISSION_DENIED",
        404 => "NOT_FOUND",
        405 => "UNIMPLEMENTED",
        429 => "RESOURCE_EXHAUSTED",
        503 => "UNAVAILABLE",
        504 => "DEADLINE_EXCEEDED",
        _ => "INTERNAL",
    }
}

fn error_json(status: u16, message: &str) -> serde_json::Value {
    serde_json::json!({ "error": { "code": status, "message": message, "status": status_name(status) } })
}

/// A call's error as Google's error object (the status kept, `Retry-After` too).
pub fn error(e: &CallError) -> Response {
    crate::server::error::shaped(e, &error_json(e.status, &e.message))
}

/// Rewrites the gateway's own stream error event (OpenAI-shaped) into Google's error object;
/// the plugin's events pass as they are.
struct Errors;

impl SseMap for Errors {
    fn event(&mut self, event: sse::Event, out: &mut Vec<u8>) {
        let failure = serde_json::from_str::<serde_json::Value>(&event.data)
            .ok()
            .filter(|v| v.pointer("/error/type").is_some_and(serde_json::Value::is_string));
        match failure {
            Some(v) => {
                let message = v.pointer("/error/message").and_then(|m| m.as_str()).unwrap_or("The stream failed.");
                sse::write_event(out, None, None, &error_json(502, message).to_string());
            }
            None => sse::write_event(out, event.event.as_deref(), event.id.as_deref(), &event.data),
        }
    }
    fn end(&mut self, _out: &mut Vec<u8>) {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_gateways_stream_error_becomes_googles() {
        let mut out = Vec::new();
        let gateway = r#"{"error":{"message":"cut","type":"api_error","param":null,"code":"stream_interrupted"}}"#;
        Errors.event(sse::Event { data: gateway.into(), ..Default::default() }, &mut out);
        let vendor = r#"{"candidates":[],"error_note":1}"#;
        Errors.event(sse::Event { data: vendor.into(), ..Default::default() }, &mut out);
        let text = String::from_utf8(out).unwrap();
        assert_eq!(
            text,
            "data: {\"error\":{\"code\":502,\"message\":\"cut\",\"status\":\"INTERNAL\"}}\n\ndata: {\"candidates\":[],\"error_note\":1}\n\n"
        );
    }
}
