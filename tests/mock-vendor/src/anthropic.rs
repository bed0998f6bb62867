//! Anthropic's Messages API (`POST /v1/messages`) as the vendor puts it on the wire: the key in
//! `x-api-key` (a Bearer header is not Anthropic's), `anthropic-version` required, errors as
//! `{"type":"error","error":{"type","message"}}` with Anthropic's statuses, streams as named
//! events (`message_start` … `message_stop`, a `ping` among them), usage with its cache fields
//! (`input_tokens` excludes what the cache served).
//!
//! The answer follows the last user message: `say:<text>` answers that text (streamed 4
//! characters a delta), `call:<name> <json>` calls that tool (its input streamed 5 characters a
//! delta), anything else `Hello from mock`. Models: `fail-<n>` answers HTTP n in Anthropic's
//! shape (429 with `retry-after`, 529 overloaded); `overload-stream` streams a little, then an
//! `error` event; a model named `…cached…` read 6 of its 9 input tokens from the cache and wrote 2.

use crate::body::MockBody;
use crate::{json, sse, Ctx, State};
use bytes::Bytes;
use hyper::header::{HeaderValue, RETRY_AFTER};
use hyper::{Response, StatusCode};
use serde_json::{json, Value};
use std::time::Duration;

fn error(status: u16, kind: &str, message: &str) -> Response<MockBody> {
    let body = json!({ "type": "error", "error": { "type": kind, "message": message } });
    let mut r = json(StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR), body.to_string());
    if status == 429 {
        r.headers_mut().insert(RETRY_AFTER, HeaderValue::from_static("1"));
    }
    r
}

/// What the answer is.
enum Answer {
    Text(String),
    Tool { name: String, input: String },
}

fn answer_to(messages: &[Value]) -> Answer {
    let last = messages.iter().rev().find(|m| m["role"] == "user").map(|m| &m["content"]);
    let text = match last {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Array(blocks)) => blocks
            .iter()
            .rev()
            .find(|b| b["type"] == "text")
            .and_then(|b| b["text"].as_str())
            .unwrap_or_default()
            .to_string(),
        _ => String::new(),
    };
    if let Some(said) = text.strip_prefix("say:") {
        return Answer::Text(said.to_string());
    }
    if let Some((name, input)) = text.strip_prefix("call:").and_then(|c| c.split_once(' ')) {
        return Answer::Tool { name: name.to_string(), input: input.to_string() };
    }
    Answer::Text("Hello from mock".into())
}

/// `POST /v1/messages` (`count`: `POST /v1/messages/count_tokens`, which needs no `max_tokens`).
pub async fn messages(state: &State, cx: &Ctx, count: bool) -> Response<MockBody> {
    let key = cx.headers.get("x-api-key").and_then(|v| v.to_str().ok()).unwrap_or_default();
    if key.is_empty() || key.starts_with("bad") || state.is_rejected(key) {
        return error(401, "authentication_error", "invalid x-api-key");
    }
    if cx.headers.get("anthropic-version").is_none() {
        return error(400, "invalid_request_error", "anthropic-version: header is required");
    }
    let Ok(body) = serde_json::from_slice::<Value>(&cx.body) else {
        return error(400, "invalid_request_error", "The request body is not valid JSON.");
    };
    let Some(model) = body["model"].as_str().map(str::to_string) else {
        return error(400, "invalid_request_error", "model: Field required");
    };
    if !count && !body["max_tokens"].is_u64() {
        return error(400, "invalid_request_error", "max_tokens: Field required");
    }
    let Some(messages) = body["messages"].as_array().filter(|m| !m.is_empty()) else {
        return error(400, "invalid_request_error", "messages: at least one message is required");
    };
    if count {
        return json(StatusCode::OK, json!({ "input_tokens": 9 }).to_string());
    }
    if let Some(n) = model.strip_prefix("fail-").and_then(|n| n.parse::<u16>().ok()) {
        return match n {
            401 => error(401, "authentication_error", "invalid x-api-key"),
            429 => error(429, "rate_limit_error", "Number of request tokens has exceeded your per-minute rate limit"),
            529 => error(529, "overloaded_error", "Overloaded"),
            n if n < 500 => error(n, "invalid_request_error", &format!("mock fault {n}")),
            n => error(n, "api_error", "Internal server error"),
        };
    }
    let (cache_read, cache_write) = if model.contains("cached") { (6, 2) } else { (0, 0) };
    let usage_in = json!({
        "input_tokens": 9 - cache_read - cache_write,
        "cache_creation_input_tokens": cache_write,
        "cache_read_input_tokens": cache_read,
    });
    let answer = answer_to(messages);
    let (block, pieces, output_tokens) = match &answer {
        Answer::Text(t) => {
            let chars: Vec<char> = t.chars().collect();
            let pieces = chars.chunks(4).map(|c| c.iter().collect::<String>()).collect::<Vec<_>>();
            (json!({ "type": "text", "text": t }), pieces, t.chars().count().div_ceil(4) as u64)
        }
        Answer::Tool { name, input } => {
            let parsed: Value = serde_json::from_str(input).unwrap_or_else(|_| json!({}));
            let chars: Vec<char> = input.chars().collect();
            let pieces = chars.chunks(5).map(|c| c.iter().collect::<String>()).collect::<Vec<_>>();
            let block = json!({ "type": "tool_use", "id": "toolu_mock1", "name": name, "input": parsed });
            (block, pieces, input.len().div_ceil(4) as u64)
        }
    };
    let stop_reason = if matches!(answer, Answer::Tool { .. }) { "tool_use" } else { "end_turn" };
    let mut usage = usage_in.clone();
    usage["output_tokens"] = json!(output_tokens);
    if body["stream"] != Value::Bool(true) {
        let message = json!({
            "id": "msg_mock1", "type": "message", "role": "assistant", "model": model,
            "content": [block], "stop_reason": stop_reason, "stop_sequence": null, "usage": usage,
        });
        return json(StatusCode::OK, message.to_string());
    }
    let event = |data: Value| {
        let name = data["type"].as_str().unwrap_or_default().to_string();
        Bytes::from(format!("event: {name}\ndata: {data}\n\n"))
    };
    let mut start_usage = usage_in;
    start_usage["output_tokens"] = json!(1);
    let mut out = vec![event(json!({ "type": "message_start", "message": {
        "id": "msg_mock1", "type": "message", "role": "assistant", "model": model, "content": [],
        "stop_reason": null, "stop_sequence": null, "usage": start_usage,
    }}))];
    let (start, delta) = match &answer {
        Answer::Text(_) => (json!({ "type": "text", "text": "" }), "text_delta"),
        Answer::Tool { .. } => {
            let mut b = block.clone();
            b["input"] = json!({});
            (b, "input_json_delta")
        }
    };
    out.push(event(json!({ "type": "content_block_start", "index": 0, "content_block": start })));
    out.push(event(json!({ "type": "ping" })));
    for (i, piece) in pieces.iter().enumerate() {
        let d = match delta {
            "text_delta" => json!({ "type": "text_delta", "text": piece }),
            _ => json!({ "type": "input_json_delta", "partial_json": piece }),
        };
        out.push(event(json!({ "type": "content_block_delta", "index": 0, "delta": d })));
        if model == "overload-stream" && i == 0 {
            out.push(event(
                json!({ "type": "error", "error": { "type": "overloaded_error", "message": "Overloaded" } }),
            ));
            return sse(out, Duration::ZERO, false);
        }
    }
    out.push(event(json!({ "type": "content_block_stop", "index": 0 })));
    out.push(event(json!({
        "type": "message_delta",
        "delta": { "stop_reason": stop_reason, "stop_sequence": null },
        "usage": { "output_tokens": output_tokens },
    })));
    out.push(event(json!({ "type": "message_stop" })));
    sse(out, Duration::ZERO, false)
}
