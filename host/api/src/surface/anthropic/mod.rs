//! Anthropic's Messages API: `POST /v1/messages`, for the official `anthropic` SDKs and the
//! apps built on them (`x-api-key` or Bearer; `anthropic-version` is accepted, any value).
//!
//! A model whose channel's plugin speaks op `messages` (the `anthropic` plugin) gets the
//! consumer's body as it is, and its answer goes back as it is. Any other chat model is
//! translated: the request to OpenAI's chat format (`request.rs`), the answer, whole or
//! streamed, back to Anthropic's (`reply.rs`). Either way every failure is Anthropic's error
//! object (`{"type":"error","error":{"type","message"}}`), in a stream its `error` event,
//! and billing is the chat's: the reservation is read from the body the vendor sees.
//!
//! `POST /v1/messages/count_tokens` is free: asked of a plugin that counts natively, else an
//! estimate from the translated request's size (Anthropic's own count is an estimate too),
//! marked `tollgate-estimated: true`.

mod reply;
mod request;

use super::{read_request, run};
use crate::engine::{Answer, CallRequest};
use crate::exchange::CallError;
use crate::server::body::{full, json, Response, ResponseBody, SseMap, SseMapped};
use crate::server::Api;
use bytes::Bytes;
use http::Request;
use hyper::body::Incoming;
use std::sync::Arc;
use std::time::Instant;
use tollgate_base::sse;

/// The op of a plugin that speaks Anthropic's Messages API natively.
pub const MESSAGES: &str = "messages";
/// Its token count (`/v1/messages/count_tokens`), a free read.
pub const COUNT: &str = "messages.count";

/// How the call was sent, which decides how its answer is read.
enum Mode {
    /// To a plugin speaking Messages: the answer is already Anthropic's.
    Native,
    /// Translated to op `chat`: the answer is OpenAI's.
    Translated { model: String },
}

pub async fn messages(state: &Arc<Api>, req: Request<Incoming>) -> Response {
    let mut mode = None;
    let (answer, request_id) =
        run(state, |started, request_id| resolve(state, req, started, request_id, &mut mode)).await;
    let mut response = match (answer, mode) {
        (Answer::Failed(e), _) => error(&e),
        (answer, None | Some(Mode::Native)) => native(answer),
        (answer, Some(Mode::Translated { model })) => translated(answer, &request_id, model),
    };
    if let Ok(v) = http::HeaderValue::from_str(&request_id) {
        response.headers_mut().insert("request-id", v.clone());
        response.headers_mut().insert("x-request-id", v);
    }
    response
}

async fn resolve(
    state: &Arc<Api>,
    req: Request<Incoming>,
    started: Instant,
    request_id: String,
    mode: &mut Option<Mode>,
) -> Result<CallRequest, CallError> {
    let mut request = read_request(state, req).await?;
    let model = super::openai::requested_model(&request.body)?;
    let (plugin, channel) = super::openai::route(state, &model)?;
    if super::openai::serves(&plugin, &channel, MESSAGES) {
        *mode = Some(Mode::Native);
        // The body goes as it came: its keys were walked as its model was read.
        let mut call = super::openai::checked_call(plugin, channel, request, MESSAGES, model, started, request_id)?;
        call.keys_read = call.form.is_none();
        return Ok(call);
    }
    let translated = request::to_openai(&request.body)?;
    request.body = Bytes::from(translated.body);
    *mode = Some(Mode::Translated { model: translated.model });
    super::openai::checked_call(plugin, channel, request, "chat", model, started, request_id)
}

pub async fn count_tokens(state: &Arc<Api>, req: Request<Incoming>) -> Response {
    let request = match read_request(state, req).await {
        Ok(r) => r,
        Err(e) => return error(&e),
    };
    let model = match super::openai::requested_model(&request.body) {
        Ok(m) => m,
        Err(e) => return error(&e),
    };
    let (plugin, channel) = match super::openai::route(state, &model) {
        Ok(found) => found,
        Err(e) => return error(&e),
    };
    if !request.consumer.may_use(&model) {
        let e = CallError::new(
            403,
            "permission_error",
            "model_not_allowed",
            format!("This API key may not use the model '{model}'."),
        );
        return error(&e);
    }
    if super::openai::serves(&plugin, &channel, COUNT) {
        let (answer, request_id) = run(state, |started, request_id| async move {
            let mut call = super::openai::checked_call(plugin, channel, request, COUNT, model, started, request_id)?;
            call.billed = false;
            Ok(call)
        })
        .await;
        let response = match answer {
            Answer::Failed(e) => error(&e),
            answer => super::render(answer),
        };
        return super::with_request_id(response, &request_id);
    }
    match request::estimated_tokens(&request.body) {
        Ok(tokens) => {
            let mut resp = json(200, &serde_json::json!({ "input_tokens": tokens }));
            resp.headers_mut().insert("tollgate-estimated", http::HeaderValue::from_static("true"));
            resp
        }
        Err(e) => error(&e),
    }
}

/// An answer already in Anthropic's shape: only the gateway's own stream error is rewritten.
fn native(answer: Answer) -> Response {
    match answer {
        Answer::Stream { headers, body } => {
            super::stream_response(&headers, ResponseBody::Sse(SseMapped::new(body, Box::new(Native))))
        }
        answer => super::render(answer),
    }
}

struct Native;

impl SseMap for Native {
    fn event(&mut self, event: sse::Event, out: &mut Vec<u8>) {
        reply::native_event(event, out);
    }
    fn end(&mut self, _out: &mut Vec<u8>) {}
}

impl SseMap for reply::StreamTranslator {
    fn event(&mut self, event: sse::Event, out: &mut Vec<u8>) {
        reply::StreamTranslator::event(self, event, out);
    }
    fn end(&mut self, out: &mut Vec<u8>) {
        reply::StreamTranslator::end(self, out);
    }
}

/// An OpenAI answer in Anthropic's shape.
fn translated(answer: Answer, request_id: &str, model: String) -> Response {
    let id = format!("msg_{}", request_id.trim_start_matches("req_"));
    match answer {
        Answer::Stream { body, .. } => {
            let mapped = SseMapped::new(body, Box::new(reply::StreamTranslator::new(id, model)));
            http::Response::builder()
                .status(200)
                .header(http::header::CONTENT_TYPE, "text/event-stream")
                .header(http::header::CACHE_CONTROL, "no-cache")
                .body(ResponseBody::Sse(mapped))
                .expect("static response parts are valid")
        }
        // A stream replayed whole (a repeated `Idempotency-Key`): its events translated at once.
        Answer::Full { status, headers, body } if (200..300).contains(&status) && super::is_event_stream(&headers) => {
            let mut translator = reply::StreamTranslator::new(id, model);
            let (mut parser, mut events, mut out) = (sse::Parser::new(), Vec::new(), Vec::new());
            parser.feed(&body, &mut events);
            parser.finish(&mut events);
            for event in events {
                translator.event(event, &mut out);
            }
            translator.end(&mut out);
            let mut resp = full(200, "text/event-stream", out);
            for h in headers.iter().filter(|h| h.name.starts_with("idempotent-") || h.name == "original-request-id") {
                if let (Ok(n), Ok(v)) =
                    (http::HeaderName::from_bytes(h.name.as_bytes()), http::HeaderValue::from_str(&h.value))
                {
                    resp.headers_mut().insert(n, v);
                }
            }
            resp
        }
        Answer::Full { status, body, .. } if (200..300).contains(&status) => match reply::message(&body, &id, &model) {
            Some(message) => json(200, &message),
            None => error(&CallError::new(
                502,
                "api_error",
                "invalid_upstream_answer",
                "The vendor's answer is not a chat completion.",
            )),
        },
        // A vendor error relayed as it is: its message, in Anthropic's shape.
        Answer::Full { status, body, .. } => {
            let v: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
            let message =
                v.pointer("/error/message").and_then(|m| m.as_str()).unwrap_or("The vendor refused the call.");
            error(&CallError::new(status, "api_error", "upstream_error", message))
        }
        answer @ (Answer::Relay(_) | Answer::Failed(_)) => super::render(answer),
    }
}

/// Anthropic's error type for a status.
fn error_type(status: u16) -> &'static str {
    match status {
        400 | 405 | 422 => "invalid_request_error",
        401 => "authentication_error",
        402 => "billing_error",
        403 => "permission_error",
        404 => "not_found_error",
        413 => "request_too_large",
        429 => "rate_limit_error",
        503 | 529 => "overloaded_error",
        504 => "timeout_error",
        _ => "api_error",
    }
}

/// A call's error as Anthropic's error object (the status kept, `Retry-After` too).
pub fn error(e: &CallError) -> Response {
    let body = serde_json::json!({ "type": "error", "error": { "type": error_type(e.status), "message": e.message } });
    crate::server::error::shaped(e, &body)
}
