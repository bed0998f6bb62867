//! OpenAI-compatible vendors on their own paths, each with its own auth and error shape
//! (`vendor-apis.md` §3.1, §6.1, §7.1, §7.2); the answers are `openai.rs`'s:
//! - DeepSeek: `POST /chat/completions` (a `…reasoner…` model thinks first, in
//!   `reasoning_content`; a history sent back with `reasoning_content` is refused with 400, as
//!   DeepSeek does), `GET /user/balance` (the key's balance from `/_mock/balance`);
//! - Zhipu: `POST /api/paas/v4/chat/completions` with the key `id.secret` as it is, or a JWT
//!   (`{"alg":"HS256","sign_type":"SIGN"}`, `api_key`, `exp` and `timestamp` in milliseconds)
//!   signed with the secret; errors `{"error":{"code":"1000","message"}}`;
//! - Ark: `POST /api/v3/chat/completions` (Bearer; errors `{"error":{"code","message","type"}}`);
//! - DashScope: `POST /compatible-mode/v1/chat/completions` (Bearer), and its own
//!   `POST /api/v1/services/aigc/text-generation/generation`: JSON, or with
//!   `X-DashScope-SSE: enable` its SSE (`id:`, `event:result`, a `:HTTP_STATUS/200` comment,
//!   `data:` without a space, usage cumulative in each event, no `[DONE]`).

use crate::body::MockBody;
use crate::{json, openai, sse, Ctx, State};
use bytes::Bytes;
use hyper::{Response, StatusCode};
use serde_json::{json, Value};
use std::time::Duration;

fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

fn bearer(cx: &Ctx) -> Option<&str> {
    cx.headers.get(hyper::header::AUTHORIZATION)?.to_str().ok()?.strip_prefix("Bearer ")
}

/// `POST /chat/completions`: DeepSeek.
pub async fn deepseek(state: &State, cx: &Ctx) -> Response<MockBody> {
    if !cx.authorized {
        let body = json!({ "error": { "message": "Authentication Fails, Your api key is invalid", "type": "authentication_error", "param": null, "code": "invalid_request_error" } });
        return json(StatusCode::UNAUTHORIZED, body.to_string());
    }
    let Ok(v) = serde_json::from_slice::<Value>(&cx.body) else { return openai::bad_request("invalid JSON") };
    let history = v["messages"].as_array().map(Vec::as_slice).unwrap_or_default();
    if history.iter().any(|m| m.get("reasoning_content").is_some()) {
        return openai::bad_request("The reasoning_content is an intermediate result for display purposes only and will not be included in the context for inference. Please remove the reasoning_content from your message to reduce network traffic.");
    }
    openai::chat(state, cx).await
}

/// `GET /user/balance`: DeepSeek's balance of the key.
pub fn deepseek_balance(state: &State, key: Option<&str>, authorized: bool) -> Response<MockBody> {
    if !authorized {
        return json(
            StatusCode::UNAUTHORIZED,
            r#"{"error":{"message":"Authentication Fails","code":"invalid_request_error"}}"#,
        );
    }
    let balance = key.and_then(|k| state.balance_of(k)).unwrap_or_else(|| "0.00".into());
    let body = json!({ "is_available": balance != "0.00", "balance_infos": [{ "currency": "CNY", "total_balance": balance, "granted_balance": "0.00", "topped_up_balance": balance }] });
    json(StatusCode::OK, body.to_string())
}

/// Zhipu's key check: the key `id.secret` as it is, or a JWT signed with its secret (the mock
/// knows `<id>.<id>-secret` keys); `Err` is Zhipu's code and message.
fn zhipu_account(cx: &Ctx) -> Result<(), (&'static str, String)> {
    let Some(token) = bearer(cx) else { return Err(("1000", "Authorization header is missing".into())) };
    if token.starts_with("bad") {
        return Err(("1000", "Authentication failed".into()));
    }
    if let Some((id, secret)) = token.split_once('.').filter(|_| token.matches('.').count() == 1) {
        return if secret == format!("{id}-secret") { Ok(()) } else { Err(("1000", "Authentication failed".into())) };
    }
    let Some(jwt) = crate::jwt::Jwt::parse(token) else {
        return Err(("1001", "the token is malformed".into()));
    };
    if jwt.header != json!({ "alg": "HS256", "sign_type": "SIGN" }) {
        return Err(("1001", format!("the token's header is not Zhipu's: {}", jwt.header)));
    }
    let claims = &jwt.claims;
    let Some(id) = claims["api_key"].as_str() else { return Err(("1001", "the token names no api_key".into())) };
    if !jwt.signed_with(&format!("{id}-secret")) {
        return Err(("1002", "the token's signature is invalid".into()));
    }
    let (Some(exp), Some(issued)) = (claims["exp"].as_u64(), claims["timestamp"].as_u64()) else {
        return Err(("1001", "the token lacks exp or timestamp".into()));
    };
    // Milliseconds, both: a token read in seconds would be long expired.
    let now = now_ms();
    if exp <= now || issued > now + 60_000 || issued + 86_400_000 < now {
        return Err(("1004", format!("the token has expired (exp {exp}, now {now}, in milliseconds)")));
    }
    Ok(())
}

/// `POST /api/paas/v4/chat/completions`: Zhipu.
pub async fn zhipu(state: &State, cx: &Ctx) -> Response<MockBody> {
    if let Err((code, message)) = zhipu_account(cx) {
        return json(StatusCode::UNAUTHORIZED, json!({ "error": { "code": code, "message": message } }).to_string());
    }
    let authorized = Ctx { headers: cx.headers.clone(), body: cx.body.clone(), authorized: true };
    openai::chat(state, &authorized).await
}

/// `POST /api/v3/chat/completions` (Ark) and `POST /compatible-mode/v1/chat/completions`
/// (DashScope): Bearer keys, each vendor's refusal shape.
pub async fn bearer_chat(state: &State, cx: &Ctx, vendor: &str) -> Response<MockBody> {
    if !cx.authorized {
        let body = match vendor {
            "ark" => {
                json!({ "error": { "code": "AuthenticationError", "message": "the API key in the request is missing or invalid", "type": "Unauthorized" } })
            }
            _ => {
                json!({ "error": { "code": "invalid_api_key", "message": "Incorrect API key provided.", "type": "invalid_request_error" } })
            }
        };
        return json(StatusCode::UNAUTHORIZED, body.to_string());
    }
    openai::chat(state, cx).await
}

/// `POST /api/v1/services/aigc/text-generation/generation`: DashScope's own chat.
pub fn dashscope_generation(cx: &Ctx) -> Response<MockBody> {
    if !cx.authorized {
        let body = json!({ "request_id": "mock", "code": "InvalidApiKey", "message": "Invalid API-key provided." });
        return json(StatusCode::UNAUTHORIZED, body.to_string());
    }
    let Ok(v) = serde_json::from_slice::<Value>(&cx.body) else {
        return json(
            StatusCode::BAD_REQUEST,
            r#"{"request_id":"mock","code":"InvalidParameter","message":"the body is not JSON"}"#,
        );
    };
    let text = v
        .pointer("/input/messages")
        .and_then(Value::as_array)
        .and_then(|m| m.last())
        .and_then(|m| m["content"].as_str())
        .unwrap_or_default();
    let answer = text.strip_prefix("say:").unwrap_or("Hello from mock").to_string();
    let chars: Vec<char> = answer.chars().collect();
    let usage = |out: usize| json!({ "input_tokens": 9, "output_tokens": out, "total_tokens": 9 + out, "prompt_tokens_details": { "cached_tokens": 4 } });
    let streamed = cx.headers.get("x-dashscope-sse").and_then(|h| h.to_str().ok()) == Some("enable");
    if !streamed {
        let body = json!({ "output": { "choices": [{ "finish_reason": "stop", "message": { "role": "assistant", "content": answer } }] }, "usage": usage(chars.len().div_ceil(4)), "request_id": "mock" });
        return json(StatusCode::OK, body.to_string());
    }
    let pieces: Vec<String> = chars.chunks(4).map(|c| c.iter().collect()).collect();
    let events = pieces
        .iter()
        .enumerate()
        .map(|(i, piece)| {
            let last = i + 1 == pieces.len();
            let data = json!({
                "output": { "choices": [{ "message": { "role": "assistant", "content": piece }, "finish_reason": if last { "stop" } else { "null" } }] },
                "usage": usage(i + 1),
                "request_id": "mock",
            });
            Bytes::from(format!("id:{}\nevent:result\n:HTTP_STATUS/200\ndata:{data}\n\n", i + 1))
        })
        .collect();
    sse(events, Duration::ZERO, false)
}
