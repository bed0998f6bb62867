//! Errors as consumers see them: OpenAI's error object, with a message that says what to do.

use super::body::{json, Response};
use crate::exchange::CallError;

/// `{"error":{"message","type","param","code"}}` with the status.
pub fn error_response(status: u16, kind: &str, code: &str, message: &str) -> Response {
    json(status, &serde_json::json!({ "error": { "message": message, "type": kind, "param": null, "code": code } }))
}

/// 405 with the `Allow` header RFC 9110 asks for: the methods `path` takes.
pub fn method_not_allowed(method: &http::Method, path: &str, allow: &str) -> Response {
    let mut resp = error_response(
        405,
        "invalid_request_error",
        "method_not_allowed",
        &format!("{method} is not allowed on {path}; use {allow}."),
    );
    if let Ok(v) = http::HeaderValue::from_str(allow) {
        resp.headers_mut().insert(http::header::ALLOW, v);
    }
    resp
}

/// A call's error as an HTTP response.
pub trait ToResponse {
    fn to_response(&self) -> Response;
}

impl ToResponse for CallError {
    fn to_response(&self) -> Response {
        shaped(self, &self.to_json())
    }
}

/// A call's error in some API's shape (`body`): its status, and its `Retry-After` when it has
/// one. Every surface's errors go through here.
pub fn shaped(e: &CallError, body: &serde_json::Value) -> Response {
    let mut resp = json(e.status, body);
    if let Some(ms) = e.retry_after_ms {
        resp.headers_mut().insert(http::header::RETRY_AFTER, http::HeaderValue::from(ms.div_ceil(1000).max(1)));
    }
    resp
}

pub fn unauthorized(message: &str) -> CallError {
    CallError::new(401, "invalid_request_error", "invalid_api_key", message)
}

pub fn bad_request(code: &str, message: impl Into<String>) -> CallError {
    CallError::new(400, "invalid_request_error", code, message)
}

pub fn not_found(code: &str, message: impl Into<String>) -> CallError {
    CallError::new(404, "invalid_request_error", code, message)
}
