//! OpenAI-compatible routes: chat completions (plain and SSE), embeddings, image generation,
//! models.

use crate::{header_u64, json, sse, Ctx, Fault, State};
use bytes::Bytes;
use hyper::header::{HeaderValue, RETRY_AFTER};
use hyper::{Response, StatusCode};
use serde::Deserialize;
use std::borrow::Cow;

use crate::body::MockBody;

const UNAUTHORIZED: &str = r#"{"error":{"message":"Incorrect API key provided","type":"invalid_request_error","param":null,"code":"invalid_api_key"}}"#;
const RATE_LIMITED: &str = r#"{"error":{"message":"Rate limit reached for requests","type":"requests","param":null,"code":"rate_limit_exceeded"}}"#;
const SERVER_ERROR: &str = r#"{"error":{"message":"The server had an error while processing your request. Sorry about that!","type":"server_error","param":null,"code":null}}"#;
const NOT_FOUND: &str =
    r#"{"error":{"message":"Unknown request URL","type":"invalid_request_error","param":null,"code":"unknown_url"}}"#;
const MODELS: &str = r#"{"object":"list","data":[{"id":"gpt-4o-mini","object":"model","created":1700000000,"owned_by":"mock"},{"id":"gpt-4o","object":"model","created":1700000000,"owned_by":"mock"},{"id":"text-embedding-3-small","object":"model","created":1700000000,"owned_by":"mock"}]}"#;
/// A sanity cap on `x-mock-chunks`.
const MAX_CHUNKS: u64 = 1_000_000;
const DONE: &[u8] = b"data: [DONE]\n\n";

#[derive(Deserialize)]
struct ChatRequest<'a> {
    #[serde(borrow)]
    model: Option<Cow<'a, str>>,
    stream: Option<bool>,
    stream_options: Option<StreamOptions>,
    #[serde(default)]
    messages: Vec<Message>,
}

#[derive(Deserialize)]
struct Message {
    content: Option<serde_json::Value>,
}

impl ChatRequest<'_> {
    /// `say:<text>` as the last message: the answer is that text (streamed 4 characters a
    /// chunk), for tests that need a given answer.
    fn said(&self) -> Option<String> {
        let last = self.messages.last()?.content.as_ref()?.as_str()?;
        last.strip_prefix("say:").map(str::to_string)
    }

    /// `call:<name> <arguments>` as the last message: the answer calls that tool with those
    /// arguments (streamed 5 characters a chunk), for tests of tool use.
    fn called(&self) -> Option<(String, String)> {
        let last = self.messages.last()?.content.as_ref()?.as_str()?;
        let (name, args) = last.strip_prefix("call:")?.split_once(' ')?;
        Some((name.to_string(), args.to_string()))
    }
}

#[derive(Deserialize)]
struct StreamOptions {
    include_usage: Option<bool>,
}

#[derive(Deserialize)]
struct EmbeddingsRequest<'a> {
    #[serde(borrow)]
    model: Option<Cow<'a, str>>,
    input: Option<serde_json::Value>,
}

#[derive(serde::Deserialize)]
struct ImagesRequest<'a> {
    #[serde(borrow)]
    model: Option<Cow<'a, str>>,
    prompt: Option<String>,
    n: Option<u64>,
    /// SiliconFlow's names for `size` and `n`: a request with them gets SiliconFlow's answer.
    image_size: Option<String>,
    batch_size: Option<u64>,
}

#[derive(serde::Deserialize)]
struct RerankRequest<'a> {
    #[serde(borrow)]
    model: Option<Cow<'a, str>>,
    query: Option<String>,
    #[serde(default)]
    documents: Vec<String>,
}

pub fn unauthorized() -> Response<MockBody> {
    json(StatusCode::UNAUTHORIZED, UNAUTHORIZED)
}

pub fn not_found() -> Response<MockBody> {
    json(StatusCode::NOT_FOUND, NOT_FOUND)
}

pub fn bad_request(message: &str) -> Response<MockBody> {
    let v = serde_json::json!({"error": {
        "message": message, "type": "invalid_request_error", "param": null, "code": null,
    }});
    json(StatusCode::BAD_REQUEST, v.to_string())
}

/// The answer to `fail-<n>`: HTTP n (500 when n is not an error status) with an OpenAI error.
pub fn fail(n: u32) -> Response<MockBody> {
    let status = u16::try_from(n)
        .ok()
        .and_then(|n| StatusCode::from_u16(n).ok())
        .filter(|s| s.is_client_error() || s.is_server_error())
        .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    match status.as_u16() {
        401 => unauthorized(),
        429 => {
            let mut r = json(status, RATE_LIMITED);
            r.headers_mut().insert(RETRY_AFTER, HeaderValue::from_static("1"));
            r
        }
        s if s >= 500 => json(status, SERVER_ERROR),
        s => {
            let v = serde_json::json!({"error": {
                "message": format!("mock fault {s}"), "type": "invalid_request_error",
                "param": null, "code": null,
            }});
            json(status, v.to_string())
        }
    }
}

/// What every OpenAI route checks first: the key, the JSON body, its `model`, and the fault
/// that model asks for (answered here, or paused for). `Err` is the answer to send.
async fn admit<'a, T: serde::Deserialize<'a>>(
    cx: &'a Ctx,
    model_of: impl FnOnce(&T) -> Option<Cow<'a, str>>,
) -> Result<(T, Cow<'a, str>, Fault), Response<MockBody>> {
    if !cx.authorized {
        return Err(unauthorized());
    }
    let req: T = serde_json::from_slice(&cx.body)
        .map_err(|e| bad_request(&format!("We could not parse the JSON body of your request: {e}")))?;
    let model = model_of(&req).ok_or_else(|| bad_request("you must provide a model parameter"))?;
    let fault = Fault::of(&model);
    if let Fault::Fail(n) = fault {
        return Err(fail(n));
    }
    if fault == Fault::Garbled {
        return Err(json(StatusCode::OK, r#"{"id":"chatcmpl-garbled","choices":[{"message":{"content":"Hel"#));
    }
    fault.pause().await;
    Ok((req, model, fault))
}

pub async fn chat(state: &State, cx: &Ctx) -> Response<MockBody> {
    let (req, model, fault) = match admit::<ChatRequest>(cx, |r| r.model.clone()).await {
        Ok(v) => v,
        Err(answer) => return answer,
    };
    let model_json = serde_json::to_string(&model).expect("a string serialises");
    // A model named `…cached…` read 6 of its 9 prompt tokens from the vendor's cache.
    let cached = if model.contains("cached") { 6 } else { 0 };
    if let Some(text) = req.said() {
        return said(&model_json, &text, req.stream.unwrap_or(false), state.chunk_delay(&cx.headers), cached);
    }
    if let Some((name, args)) = req.called() {
        return called(&model_json, &name, &args, req.stream.unwrap_or(false), cached);
    }
    if !req.stream.unwrap_or(false) {
        return json(StatusCode::OK, completion(&model_json));
    }
    let include_usage = req.stream_options.and_then(|o| o.include_usage).unwrap_or(false);
    let cut = fault == Fault::Cut;
    // `chunks-<n>` as the model asks for n chunks, like the `x-mock-chunks` header;
    // `burst-<n>` for n chunks sent without a pause whatever the pacing (a stream's cost per
    // chunk, measured through a gateway that does not forward the mock's headers).
    let burst = model.strip_prefix("burst-").and_then(|n| n.parse().ok());
    let asked = model.strip_prefix("chunks-").and_then(|n| n.parse().ok()).or(burst);
    let n = if cut { 2 } else { asked.or(header_u64(&cx.headers, "x-mock-chunks")).unwrap_or(5).min(MAX_CHUNKS) };
    let delay = if burst.is_some() { std::time::Duration::ZERO } else { state.chunk_delay(&cx.headers) };
    sse(stream_chunks(&model_json, n, include_usage, cut), delay, cut)
}

/// The usage of an answer of `tokens` tokens to a 9-token prompt, `cached` of them from the cache.
fn usage_json(tokens: usize, cached: u64) -> String {
    format!(
        r#"{{"prompt_tokens":9,"completion_tokens":{tokens},"total_tokens":{},"prompt_tokens_details":{{"cached_tokens":{cached}}}}}"#,
        9 + tokens
    )
}

/// The answer `text`, whole or streamed in chunks of 4 characters, with usage.
fn said(model_json: &str, text: &str, stream: bool, delay: std::time::Duration, cached: u64) -> Response<MockBody> {
    let reasons = model_json.contains("reasoner");
    let reasoning = if reasons { r#","reasoning_content":"Let me think.""# } else { "" };
    let tokens = text.chars().count().div_ceil(4);
    let usage = usage_json(tokens, cached);
    let content = serde_json::to_string(text).expect("a string serialises");
    if !stream {
        return json(
            StatusCode::OK,
            format!(
                r#"{{"id":"chatcmpl-mock","object":"chat.completion","created":1700000000,"model":{model_json},"choices":[{{"index":0,"message":{{"role":"assistant","content":{content}{reasoning}}},"finish_reason":"stop"}}],"usage":{usage}}}"#
            ),
        );
    }
    let head = format!(
        r#"data: {{"id":"chatcmpl-mock","object":"chat.completion.chunk","created":1700000000,"model":{model_json},"choices":["#
    );
    let event = |rest: &str| Bytes::from([head.as_str(), rest, "\n\n"].concat());
    let chars: Vec<char> = text.chars().collect();
    let mut out = Vec::new();
    for piece in chars.chunks(4) {
        let piece = serde_json::to_string(&piece.iter().collect::<String>()).expect("a string serialises");
        out.push(event(&format!(
            r#"{{"index":0,"delta":{{"content":{piece}}},"finish_reason":null}}],"usage":null}}"#
        )));
    }
    out.push(event(r#"{"index":0,"delta":{},"finish_reason":"stop"}],"usage":null}"#));
    out.push(event(&format!(r#"],"usage":{usage}}}"#)));
    out.push(Bytes::from_static(DONE));
    if reasons {
        // A reasoning model thinks first, with no content (DeepSeek's reasoner).
        out.insert(0, event(r#"{"index":0,"delta":{"role":"assistant","content":null,"reasoning_content":"Let me think."},"finish_reason":null}],"usage":null}"#));
    }
    sse(out, delay, false)
}

/// A call of tool `name` with `args`, whole or streamed as OpenAI streams tool calls (the id
/// and name first, then the arguments 5 characters a chunk), `finish_reason` `tool_calls`.
fn called(model_json: &str, name: &str, args: &str, stream: bool, cached: u64) -> Response<MockBody> {
    let usage = usage_json(args.len().div_ceil(4), cached);
    let (name, whole) =
        (serde_json::to_string(name).expect("a string"), serde_json::to_string(args).expect("a string"));
    if !stream {
        return json(
            StatusCode::OK,
            format!(
                r#"{{"id":"chatcmpl-mock","object":"chat.completion","created":1700000000,"model":{model_json},"choices":[{{"index":0,"message":{{"role":"assistant","content":null,"tool_calls":[{{"id":"call_mock1","type":"function","function":{{"name":{name},"arguments":{whole}}}}}]}},"finish_reason":"tool_calls"}}],"usage":{usage}}}"#
            ),
        );
    }
    let head = format!(
        r#"data: {{"id":"chatcmpl-mock","object":"chat.completion.chunk","created":1700000000,"model":{model_json},"choices":["#
    );
    let event = |rest: &str| Bytes::from([head.as_str(), rest, "\n\n"].concat());
    let mut out = vec![event(&format!(
        r#"{{"index":0,"delta":{{"role":"assistant","content":null,"tool_calls":[{{"index":0,"id":"call_mock1","type":"function","function":{{"name":{name},"arguments":""}}}}]}},"finish_reason":null}}],"usage":null}}"#
    ))];
    let chars: Vec<char> = args.chars().collect();
    for piece in chars.chunks(5) {
        let piece = serde_json::to_string(&piece.iter().collect::<String>()).expect("a string");
        out.push(event(&format!(
            r#"{{"index":0,"delta":{{"tool_calls":[{{"index":0,"function":{{"arguments":{piece}}}}}]}},"finish_reason":null}}],"usage":null}}"#
        )));
    }
    out.push(event(r#"{"index":0,"delta":{},"finish_reason":"tool_calls"}],"usage":null}"#));
    out.push(event(&format!(r#"],"usage":{usage}}}"#)));
    out.push(Bytes::from_static(DONE));
    sse(out, std::time::Duration::ZERO, false)
}

fn completion(model_json: &str) -> String {
    format!(
        concat!(
            r#"{{"id":"chatcmpl-mock","object":"chat.completion","created":1700000000,"model":{},"#,
            r#""choices":[{{"index":0,"message":{{"role":"assistant","content":"Hello from mock"}},"finish_reason":"stop"}}],"#,
            r#""usage":{{"prompt_tokens":9,"completion_tokens":3,"total_tokens":12}}}}"#
        ),
        model_json
    )
}

/// The SSE events of a streamed completion with `n` content chunks `tok0 `, `tok1 `, ...; a cut
/// stream stops after the content chunks. The finish, the usage (when asked) and `[DONE]` are
/// one write, as a vendor sends them once the answer is complete: paced apart, a gateway that
/// asks for the usage (the consumer's request did not) would end its streams a pause later than
/// the direct call, for the mock's pacing only.
fn stream_chunks(model_json: &str, n: u64, include_usage: bool, cut: bool) -> Vec<Bytes> {
    let head = format!(
        r#"data: {{"id":"chatcmpl-mock","object":"chat.completion.chunk","created":1700000000,"model":{model_json},"choices":["#
    );
    let event = |rest: &str| Bytes::from([head.as_str(), rest, "\n\n"].concat());
    let mut out = Vec::with_capacity(n as usize + 2);
    out.push(event(r#"{"index":0,"delta":{"role":"assistant","content":""},"finish_reason":null}],"usage":null}"#));
    for i in 0..n {
        out.push(event(&format!(
            r#"{{"index":0,"delta":{{"content":"tok{i} "}},"finish_reason":null}}],"usage":null}}"#
        )));
    }
    if cut {
        return out;
    }
    let mut tail = event(r#"{"index":0,"delta":{},"finish_reason":"stop"}],"usage":null}"#).to_vec();
    if include_usage {
        tail.extend_from_slice(&event(&format!(
            r#"],"usage":{{"prompt_tokens":9,"completion_tokens":{n},"total_tokens":{}}}}}"#,
            9 + n
        )));
    }
    tail.extend_from_slice(DONE);
    out.push(Bytes::from(tail));
    out
}

pub async fn embeddings(cx: &Ctx) -> Response<MockBody> {
    let (req, model, _) = match admit::<EmbeddingsRequest>(cx, |r| r.model.clone()).await {
        Ok(v) => v,
        Err(answer) => return answer,
    };
    let count = match &req.input {
        Some(serde_json::Value::Array(items)) => items.len(),
        Some(_) => 1,
        None => return bad_request("you must provide an input parameter"),
    };
    let mut body = String::with_capacity(160 + count * 72);
    body.push_str(r#"{"object":"list","data":["#);
    for i in 0..count {
        if i > 0 {
            body.push(',');
        }
        body.push_str(&format!(r#"{{"object":"embedding","index":{i},"embedding":[0.1,0.2,0.3]}}"#));
    }
    body.push_str(r#"],"model":"#);
    body.push_str(&serde_json::to_string(&model).expect("a string serialises"));
    body.push_str(r#","usage":{"prompt_tokens":4,"total_tokens":4}}"#);
    json(StatusCode::OK, body)
}

/// `POST /v1/images/generations`: `n` images (URLs), OpenAI's shape, no usage object (as
/// most vendors answer).
pub async fn images(cx: &Ctx) -> Response<MockBody> {
    let (req, _, _) = match admit::<ImagesRequest>(cx, |r| r.model.clone()).await {
        Ok(v) => v,
        Err(answer) => return answer,
    };
    if req.prompt.as_deref().unwrap_or("").is_empty() {
        return bad_request("you must provide a prompt");
    }
    let siliconflow = req.image_size.is_some() || req.batch_size.is_some();
    let n = req.batch_size.or(req.n).unwrap_or(1).clamp(1, 10);
    let data: Vec<serde_json::Value> = (0..n)
        .map(|i| serde_json::json!({ "url": format!("https://images.mock.test/img-{i}.png"), "revised_prompt": req.prompt }))
        .collect();
    let body = if siliconflow {
        serde_json::json!({ "images": data, "timings": { "inference": 1.2 }, "seed": 42 })
    } else {
        serde_json::json!({ "created": 1_700_000_000, "data": data })
    };
    json(StatusCode::OK, body.to_string())
}

/// `POST /v1/rerank` (SiliconFlow's shape): the documents by relevance, and `meta.tokens`
/// counting the query and documents (one token per 4 bytes, at least 1 each).
pub async fn rerank(cx: &Ctx) -> Response<MockBody> {
    let (req, _, _) = match admit::<RerankRequest>(cx, |r| r.model.clone()).await {
        Ok(v) => v,
        Err(answer) => return answer,
    };
    let Some(query) = req.query.filter(|q| !q.is_empty()) else {
        return bad_request("you must provide a query");
    };
    let tokens: usize = std::iter::once(&query).chain(&req.documents).map(|t| t.len().div_ceil(4).max(1)).sum();
    let results: Vec<serde_json::Value> = (0..req.documents.len())
        .rev()
        .map(|i| serde_json::json!({ "index": i, "relevance_score": 0.9 - 0.1 * i as f64 }))
        .collect();
    let body = serde_json::json!({ "id": "rerank-mock", "results": results,
        "meta": { "tokens": { "input_tokens": tokens, "output_tokens": 0 } } });
    json(StatusCode::OK, body.to_string())
}

pub fn models(cx: &Ctx) -> Response<MockBody> {
    if !cx.authorized {
        return unauthorized();
    }
    json(StatusCode::OK, MODELS)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(b: &[u8]) -> serde_json::Value {
        let s = std::str::from_utf8(b).unwrap();
        let data = s.strip_prefix("data: ").unwrap().strip_suffix("\n\n").unwrap();
        serde_json::from_str(data).unwrap()
    }

    #[test]
    fn stream_shape() {
        let chunks = stream_chunks("\"m\"", 3, true, false);
        assert_eq!(chunks.len(), 1 + 3 + 1);
        assert_eq!(parse(&chunks[0])["choices"][0]["delta"]["role"], "assistant");
        assert_eq!(parse(&chunks[1])["choices"][0]["delta"]["content"], "tok0 ");
        // The finish, the usage and [DONE]: one write.
        let tail = std::str::from_utf8(&chunks[4]).unwrap();
        let events: Vec<&str> = tail.split_inclusive("\n\n").collect();
        assert_eq!(events.len(), 3, "{tail}");
        let finish = parse(events[0].as_bytes());
        assert_eq!(finish["choices"][0]["finish_reason"], "stop");
        assert!(finish["usage"].is_null());
        let usage = parse(events[1].as_bytes());
        assert_eq!(usage["choices"], serde_json::json!([]));
        assert_eq!(usage["usage"]["total_tokens"], 12);
        assert_eq!(events[2].as_bytes(), DONE);
        let without_usage = stream_chunks("\"m\"", 3, false, false);
        assert_eq!(without_usage.len(), 5);
        assert_eq!(std::str::from_utf8(&without_usage[4]).unwrap().split_inclusive("\n\n").count(), 2);
        assert_eq!(stream_chunks("\"m\"", 2, true, true).len(), 3);
        let v: serde_json::Value = serde_json::from_str(&completion("\"m\"")).unwrap();
        assert_eq!(v["usage"]["total_tokens"], 12);
    }
}
