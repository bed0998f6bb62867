//! Google's Gemini API (`POST /v1beta/models/{model}:generateContent` and
//! `:streamGenerateContent`) as Google puts it on the wire: the key in `x-goog-api-key` or
//! `?key=` (a bad one is a 400 `INVALID_ARGUMENT` with the reason `API_KEY_INVALID`), errors
//! as `{"error":{"code","message","status"}}`, streams as `data:` events with CRLF and no
//! `[DONE]` (`alt=sse`) or a JSON array without it, cumulative `usageMetadata` on each chunk.
//!
//! The answer follows the last user turn's last text: `say:<text>` answers that text (4
//! characters a chunk), `call:<name> <json>` calls that function, anything else `Hello from
//! mock`. Models: `fail-<n>` answers HTTP n in Google's shape; a model named `…cached…` read 6
//! of its 9 prompt tokens from the cache; `…thinking…` thinks first (a thought part, 4 tokens)
//! and signs its function calls (`thoughtSignature`), refusing a history that lost a signature.
//! A function response must name a function an earlier turn called, as at Google.

use crate::body::MockBody;
use crate::{json, sse, Ctx, State};
use bytes::Bytes;
use hyper::{Response, StatusCode};
use serde_json::{json, Value};
use std::time::Duration;

fn error(code: u16, status: &str, message: &str) -> Response<MockBody> {
    let mut body = json!({ "error": { "code": code, "message": message, "status": status } });
    if message.starts_with("API key not valid") {
        body["error"]["details"] = json!([{ "@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": "API_KEY_INVALID", "domain": "googleapis.com" }]);
    }
    json(StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR), body.to_string())
}

/// `path` is `/v1beta/models/{model}:{action}`.
pub fn generate(state: &State, cx: &Ctx, path: &str, query: &str) -> Response<MockBody> {
    let from_query = query.split('&').find_map(|p| p.strip_prefix("key="));
    let key = cx.headers.get("x-goog-api-key").and_then(|v| v.to_str().ok()).or(from_query).unwrap_or_default();
    if key.is_empty() || key.starts_with("bad") || state.is_rejected(key) {
        return error(400, "INVALID_ARGUMENT", "API key not valid. Please pass a valid API key.");
    }
    let rest = path.trim_start_matches("/v1beta/models/");
    let Some((model, action)) = rest.rsplit_once(':') else {
        return error(404, "NOT_FOUND", "Method not found.");
    };
    if let Some(n) = model.strip_prefix("fail-").and_then(|n| n.parse::<u16>().ok()) {
        let status = match n {
            429 => "RESOURCE_EXHAUSTED",
            403 => "PERMISSION_DENIED",
            503 => "UNAVAILABLE",
            n if n < 500 => "INVALID_ARGUMENT",
            _ => "INTERNAL",
        };
        return error(n, status, &format!("mock fault {n}"));
    }
    let Ok(body) = serde_json::from_slice::<Value>(&cx.body) else {
        return error(400, "INVALID_ARGUMENT", "Invalid JSON payload received.");
    };
    let Some(contents) = body["contents"].as_array().filter(|c| !c.is_empty()) else {
        return error(400, "INVALID_ARGUMENT", "* GenerateContentRequest.contents: contents is not specified");
    };
    let last_text = contents
        .iter()
        .rev()
        .find(|c| c["role"] != "model")
        .and_then(|c| c["parts"].as_array())
        .and_then(|p| p.iter().rev().find_map(|p| p["text"].as_str()))
        .unwrap_or_default();
    let cached = if model.contains("cached") { 6 } else { 0 };
    let thoughts = if model.contains("thinking") { 4 } else { 0 };
    let usage = |candidates: usize| {
        let mut u = json!({ "promptTokenCount": 9, "candidatesTokenCount": candidates, "totalTokenCount": 9 + candidates + thoughts });
        if cached > 0 {
            u["cachedContentTokenCount"] = json!(cached);
        }
        if thoughts > 0 {
            u["thoughtsTokenCount"] = json!(thoughts);
        }
        u
    };
    if let Some(refusal) = history_refusal(contents, thoughts > 0) {
        return error(400, "INVALID_ARGUMENT", &refusal);
    }
    // Each chunk's parts, the last one's with the finish reason.
    let mut chunks: Vec<Vec<Value>> = Vec::new();
    if thoughts > 0 {
        chunks.push(vec![json!({ "text": "Thinking it over.", "thought": true })]);
    }
    let tokens;
    if let Some((name, args)) = last_text.strip_prefix("call:").and_then(|c| c.split_once(' ')) {
        let args: Value = serde_json::from_str(args).unwrap_or_else(|_| json!({}));
        tokens = 3;
        let mut part = json!({ "functionCall": { "name": name, "args": args } });
        if thoughts > 0 {
            // A thinking model signs its call; the signature must come back with it.
            part["thoughtSignature"] = json!(format!("sig-{name}"));
        }
        chunks.push(vec![part]);
    } else {
        let text = last_text.strip_prefix("say:").unwrap_or("Hello from mock");
        let chars: Vec<char> = text.chars().collect();
        tokens = chars.len().div_ceil(4);
        chunks.extend(chars.chunks(4).map(|c| vec![json!({ "text": c.iter().collect::<String>() })]));
    }
    let response = |parts: Vec<Value>, finish: bool, usage: Value| {
        let mut candidate = json!({ "content": { "role": "model", "parts": parts }, "index": 0 });
        if finish {
            candidate["finishReason"] = json!("STOP");
        }
        json!({ "candidates": [candidate], "usageMetadata": usage, "modelVersion": model, "responseId": "mock-response" })
    };
    match action {
        "countTokens" => json(StatusCode::OK, json!({ "totalTokens": 9 }).to_string()),
        "generateContent" => json(StatusCode::OK, response(chunks.concat(), true, usage(tokens)).to_string()),
        "streamGenerateContent" => {
            let n = chunks.len();
            let responses = chunks.into_iter().enumerate().map(|(i, parts)| {
                let so_far = if i + 1 == n { tokens } else { (i + 1).min(tokens) };
                response(parts, i + 1 == n, usage(so_far)).to_string()
            });
            if query.split('&').any(|p| p == "alt=sse") {
                let events = responses.map(|r| Bytes::from(format!("data: {r}\r\n\r\n"))).collect();
                return sse(events, Duration::ZERO, false);
            }
            let mut pieces: Vec<Bytes> = Vec::new();
            for (i, r) in responses.enumerate() {
                pieces.push(Bytes::from(format!("{}{r}", if i == 0 { "[" } else { ",\r\n" })));
            }
            pieces.push(Bytes::from_static(b"]"));
            crate::respond(StatusCode::OK, "application/json", MockBody::chunks(pieces, Duration::ZERO, false))
        }
        _ => error(404, "NOT_FOUND", &format!("models/{model}:{action} is not found")),
    }
}

/// What Google refuses in a conversation's history: a function response whose name no earlier
/// call had, and (a thinking model) a function call without its thought signature.
fn history_refusal(contents: &[Value], thinking: bool) -> Option<String> {
    let mut called: Vec<&str> = Vec::new();
    for part in contents.iter().filter_map(|c| c["parts"].as_array()).flatten() {
        if let Some(name) = part.pointer("/functionCall/name").and_then(Value::as_str) {
            if thinking && part["thoughtSignature"].as_str() != Some(&format!("sig-{name}")) {
                return Some(format!("Function call {name} is missing a thought_signature"));
            }
            called.push(name);
        }
        if let Some(name) = part.pointer("/functionResponse/name").and_then(Value::as_str) {
            if !called.contains(&name) {
                return Some(format!("The function response {name} answers no function call"));
            }
        }
    }
    None
}
