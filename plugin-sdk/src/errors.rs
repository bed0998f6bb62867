//! Classifying upstream failures. The class drives the host's key pool (disable, cool down,
//! fail over), so getting it right matters more than the message.

use crate::{AdapterError, ErrorKind, UpstreamResponse};

/// The class of an HTTP status from an upstream.
pub fn kind_for_status(status: u16) -> ErrorKind {
    match status {
        400 | 405 | 409 | 413 | 415 | 422 => ErrorKind::BadRequest,
        401 => ErrorKind::Unauthorized,
        402 => ErrorKind::InsufficientBalance,
        403 => ErrorKind::Forbidden,
        404 => ErrorKind::NotFound,
        408 | 504 => ErrorKind::Timeout,
        429 => ErrorKind::RateLimited,
        _ => ErrorKind::UpstreamFault,
    }
}

/// A classified error from a non-2xx response with an OpenAI-style body
/// (`{"error":{"message":..,"code":..,"type":..}}`), or a plain-text body.
///
/// OpenAI reports an exhausted account as 429 `insufficient_quota`: that is a balance
/// problem of the key, not a rate limit, and is classified as such.
pub fn from_openai_response(resp: &UpstreamResponse) -> AdapterError {
    let mut kind = kind_for_status(resp.status);
    let parsed: Option<serde_json::Value> = serde_json::from_slice(&resp.body).ok();
    let err = parsed.as_ref().and_then(|v| v.get("error"));
    let message = err
        .and_then(|e| e.get("message").and_then(|m| m.as_str()).or_else(|| e.as_str()))
        .or_else(|| parsed.as_ref().and_then(|v| v.get("message")).and_then(|m| m.as_str()))
        .map(str::to_owned)
        .unwrap_or_else(|| {
            let text = String::from_utf8_lossy(&resp.body);
            let text = text.trim();
            if text.is_empty() {
                format!("upstream answered HTTP {}", resp.status)
            } else {
                tollgate_base::text::truncate(text, 300).to_owned()
            }
        });
    let code = err.and_then(|e| e.get("code").or_else(|| e.get("type"))).and_then(|c| match c {
        serde_json::Value::String(s) => Some(s.clone()),
        serde_json::Value::Number(n) => Some(n.to_string()),
        _ => None,
    });
    if code.as_deref() == Some("insufficient_quota") {
        kind = ErrorKind::InsufficientBalance;
    }
    AdapterError { kind, message, code, retry_after_ms: retry_after_ms(&resp.headers) }
}

/// A `Retry-After` in seconds (a number; the HTTP-date form is ignored), in milliseconds.
pub fn retry_after_ms(headers: &[crate::Header]) -> Option<u64> {
    crate::header(headers, "retry-after")
        .and_then(|v| v.trim().parse::<f64>().ok())
        .filter(|s| s.is_finite() && *s >= 0.0)
        .map(|s| (s * 1000.0) as u64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Header;

    fn resp(status: u16, body: &str) -> UpstreamResponse {
        UpstreamResponse { status, headers: vec![Header::new("Retry-After", "2")], body: body.into() }
    }

    #[test]
    fn openai_body_gives_message_and_code() {
        let e = from_openai_response(&resp(
            401,
            r#"{"error":{"message":"Incorrect API key","type":"invalid_request_error","code":"invalid_api_key"}}"#,
        ));
        assert_eq!(e.kind, ErrorKind::Unauthorized);
        assert_eq!(e.message, "Incorrect API key");
        assert_eq!(e.code.as_deref(), Some("invalid_api_key"));
    }

    #[test]
    fn insufficient_quota_is_a_balance_problem() {
        let e = from_openai_response(&resp(429, r#"{"error":{"message":"quota","code":"insufficient_quota"}}"#));
        assert_eq!(e.kind, ErrorKind::InsufficientBalance);
        assert_eq!(e.retry_after_ms, Some(2000));
    }

    #[test]
    fn plain_text_and_empty_bodies() {
        assert_eq!(from_openai_response(&resp(401, "Invalid token")).message, "Invalid token");
        let e = from_openai_response(&resp(503, ""));
        assert_eq!(e.kind, ErrorKind::UpstreamFault);
        assert!(e.message.contains("503"));
    }
}
