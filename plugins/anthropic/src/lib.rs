//! The `anthropic` plugin: Anthropic's Messages API (`POST /v1/messages`, `x-api-key`).
//!
//! - Op `messages` (the gateway's Anthropic surface): the consumer's body goes to Anthropic as
//!   it is (only `model` mapped to the channel's name), `anthropic-version` and
//!   `anthropic-beta` are forwarded, and the answer, whole or streamed, comes back as it is.
//! - Op `chat` (the OpenAI surface, `chat.rs`): OpenAI's chat request translated to Messages,
//!   the answer translated back, streamed chunk by chunk.
//! - Op `messages.count`: `POST /v1/messages/count_tokens`, Anthropic's answer as it is (free).
//!
//! Usage in the contract's units: input tokens include the ones read from and written to the
//! cache (as OpenAI counts them), `cached-tokens` are the reads, `cache-write-tokens` the
//! writes. In a stream, input comes from `message_start` (or a `message_delta` that carries
//! it) and output from the last `message_delta` (Anthropic's counts are cumulative).

mod chat;

use serde::Deserialize;
use serde_json::Value;
use tollgate_plugin_sdk::{
    errors, export_plugin, header, AdapterError, Auth, Body, Call, ErrorKind, Exchange, Manifest, OutChunk, Plugin,
    Reply, Step, StreamEnd, StreamInput, StreamTail, UpstreamRequest, UpstreamResponse, Usage,
};

/// The API version sent when the consumer names none.
pub const API_VERSION: &str = "2023-06-01";

pub struct Anthropic;

impl Plugin for Anthropic {
    type Exchange = AnthropicExchange;
    fn describe() -> Manifest {
        Manifest::new("anthropic", env!("CARGO_PKG_VERSION"), "Anthropic", &["messages", "chat"])
            .with_operation(tollgate_plugin_sdk::Operation::new("messages.count").resend())
            .forwarding("anthropic-version")
            .forwarding("anthropic-beta")
            .with_base_url("https://api.anthropic.com")
    }
}

export_plugin!(Anthropic);

pub struct AnthropicExchange {
    call: Call,
    /// Op `chat`: the translation of the answer back to OpenAI's shape.
    chat: Option<chat::Answer>,
    usage: Usage,
}

/// Anthropic's usage object.
#[derive(Deserialize, Default)]
struct AnthropicUsage {
    input_tokens: Option<u64>,
    output_tokens: Option<u64>,
    cache_creation_input_tokens: Option<u64>,
    cache_read_input_tokens: Option<u64>,
}

impl AnthropicUsage {
    /// Adds what this report says to `usage` (a later report overrides: counts are cumulative).
    fn merge_into(self, usage: &mut Usage) {
        let (read, write) = (self.cache_read_input_tokens, self.cache_creation_input_tokens);
        if let Some(input) = self.input_tokens {
            let total = input.saturating_add(read.unwrap_or(0)).saturating_add(write.unwrap_or(0));
            usage.input_tokens = Some(total);
            usage.cached_tokens = read.or(usage.cached_tokens);
            usage.cache_write_tokens = write.or(usage.cache_write_tokens);
        }
        if let Some(output) = self.output_tokens {
            usage.output_tokens = Some(output);
        }
    }
}

/// A failure in Anthropic's shape (`{"type":"error","error":{"type","message"}}`), classified
/// by its type first: 529 `overloaded_error` is the vendor's fault, `billing_error` the key's.
fn classify(response: &UpstreamResponse) -> AdapterError {
    let v: Value = serde_json::from_slice(&response.body).unwrap_or_default();
    let kind_name = v.pointer("/error/type").and_then(Value::as_str);
    let Some(message) = v.pointer("/error/message").and_then(Value::as_str) else {
        return errors::from_openai_response(response);
    };
    let kind = match kind_name {
        Some("authentication_error") => ErrorKind::Unauthorized,
        Some("billing_error") => ErrorKind::InsufficientBalance,
        Some("permission_error") => ErrorKind::Forbidden,
        Some("not_found_error") => ErrorKind::NotFound,
        Some("rate_limit_error") => ErrorKind::RateLimited,
        Some("overloaded_error" | "api_error") => ErrorKind::UpstreamFault,
        Some("timeout_error") => ErrorKind::Timeout,
        _ => errors::kind_for_status(response.status),
    };
    AdapterError {
        kind,
        message: message.to_string(),
        code: kind_name.map(str::to_string),
        retry_after_ms: errors::retry_after_ms(&response.headers),
    }
}

/// The `error` event of a stream, as a failure.
fn stream_error(data: &str) -> AdapterError {
    let v: Value = serde_json::from_str(data).unwrap_or_default();
    let message = v.pointer("/error/message").and_then(Value::as_str).unwrap_or("the upstream stream failed");
    let kind = match v.pointer("/error/type").and_then(Value::as_str) {
        Some("rate_limit_error") => ErrorKind::RateLimited,
        _ => ErrorKind::UpstreamFault,
    };
    AdapterError::new(kind, message)
}

/// Server tools Anthropic bills per use, on top of tokens.
const PAID_TOOLS: [&str; 3] = ["web_search", "web_fetch", "code_execution"];

/// What a Messages request asks for that Anthropic bills beyond the tokens this gateway
/// prices: server tools (per search, per container hour), remote MCP servers, one-hour cache
/// writes (twice the input price). Refused, so a consumer never gets them unbilled.
fn unpriced_feature(body: &serde_json::Map<String, Value>) -> Option<String> {
    let tools = body.get("tools").and_then(Value::as_array).map(Vec::as_slice).unwrap_or_default();
    if let Some(kind) = tools
        .iter()
        .filter_map(|t| t.get("type").and_then(Value::as_str))
        .find(|kind| PAID_TOOLS.iter().any(|paid| kind.starts_with(paid)))
    {
        return Some(format!(
            "tools: the server tool '{kind}' is billed by Anthropic per use, which this gateway does not price"
        ));
    }
    if body.get("mcp_servers").is_some_and(|m| m.as_array().is_none_or(|a| !a.is_empty())) {
        return Some("mcp_servers: remote MCP servers are not available through this gateway".into());
    }
    fn one_hour_cache(v: &Value) -> bool {
        match v {
            Value::Object(m) => m.get("ttl").and_then(Value::as_str) == Some("1h") || m.values().any(one_hour_cache),
            Value::Array(a) => a.iter().any(one_hour_cache),
            _ => false,
        }
    }
    body.values().any(one_hour_cache).then(|| {
        "cache_control: one-hour cache writes are not priced by this gateway; use the default five-minute cache".into()
    })
}

impl AnthropicExchange {
    /// The request to `/v1/messages` with `body`, the key in `x-api-key` and the version.
    fn request(&self, body: Body) -> UpstreamRequest {
        let version = header(&self.call.headers, "anthropic-version").unwrap_or(API_VERSION).to_string();
        let mut request = UpstreamRequest::post_json("/v1/messages", String::new())
            .with_auth(Auth::Header("x-api-key".into()))
            .with_header("anthropic-version", version);
        if let Some(beta) = header(&self.call.headers, "anthropic-beta") {
            request = request.with_header("anthropic-beta", beta.to_string());
        }
        request.body = body;
        request
    }

    /// Op `messages`: the consumer's body, its model mapped; streamed when it asks.
    fn messages(&mut self) -> Step {
        let mut body = match self.call.body.object("a Messages request is JSON, not a form") {
            Ok(b) => b,
            Err(e) => return Step::Fail(e),
        };
        if let Some(why) = unpriced_feature(&body) {
            return Step::fail(ErrorKind::BadRequest, why);
        }
        let stream = match body.get("stream") {
            None | Some(Value::Null) => false,
            Some(Value::Bool(b)) => *b,
            Some(_) => return Step::fail(ErrorKind::BadRequest, "stream: must be a boolean"),
        };
        let mapped = !self.call.upstream_model.is_empty() && self.call.upstream_model != self.call.model;
        let request = if mapped {
            body.insert("model".into(), Value::String(self.call.upstream_model.clone()));
            self.request(Body::Text(Value::Object(body).to_string()))
        } else {
            self.request(Body::ClientBody)
        };
        if stream {
            Step::stream_sse(request)
        } else {
            Step::Send(request)
        }
    }
}

impl Exchange for AnthropicExchange {
    fn new(call: Call) -> Self {
        AnthropicExchange { call, chat: None, usage: Usage::default() }
    }

    fn first(&mut self) -> Step {
        match self.call.op.as_str() {
            "messages" => self.messages(),
            "messages.count" => {
                let mut request = self.request(Body::ClientBody);
                request.path = "/v1/messages/count_tokens".into();
                if !self.call.upstream_model.is_empty() && self.call.upstream_model != self.call.model {
                    match self.call.body.object("a Messages request is JSON") {
                        Ok(mut body) => {
                            body.insert("model".into(), Value::String(self.call.upstream_model.clone()));
                            request.body = Body::Text(Value::Object(body).to_string());
                        }
                        Err(e) => return Step::Fail(e),
                    }
                }
                Step::Send(request)
            }
            "chat" => match chat::to_messages(&self.call) {
                Ok((body, answer)) => {
                    let stream = answer.streams();
                    self.chat = Some(answer);
                    let request = self.request(Body::Text(body));
                    if stream {
                        Step::stream_sse(request)
                    } else {
                        Step::Send(request)
                    }
                }
                Err(e) => Step::Fail(e),
            },
            op => Step::fail(ErrorKind::Unsupported, format!("operation '{op}' is not supported by Anthropic")),
        }
    }

    fn next(&mut self, response: UpstreamResponse) -> Step {
        if !(200..300).contains(&response.status) {
            return Step::Fail(classify(&response));
        }
        #[derive(Deserialize)]
        struct Head {
            #[serde(default)]
            usage: Option<AnthropicUsage>,
        }
        let Ok(head) = serde_json::from_slice::<Head>(&response.body) else {
            return Step::fail(ErrorKind::UpstreamFault, "Anthropic answered with invalid JSON");
        };
        let mut usage = Usage::default();
        head.usage.unwrap_or_default().merge_into(&mut usage);
        match &self.chat {
            Some(answer) => match answer.completion(&response.body) {
                Some(completion) => Step::Reply(Reply::json(completion, usage)),
                None => Step::fail(ErrorKind::UpstreamFault, "Anthropic's answer is not a message"),
            },
            None => Step::Reply(Reply::with_body(200, "application/json", Body::Bytes(response.body), usage)),
        }
    }

    fn decode(&mut self, input: StreamInput) -> Result<Vec<OutChunk>, AdapterError> {
        let StreamInput::Events(events) = input else {
            return Err(AdapterError::new(ErrorKind::UpstreamFault, "expected SSE"));
        };
        let mut out = Vec::with_capacity(events.len());
        for event in events {
            let name = event.event.as_deref().unwrap_or_default();
            match name {
                "error" => return Err(stream_error(&event.data)),
                "message_start" | "message_delta" => {
                    let v: Value = serde_json::from_str(&event.data).map_err(|_| {
                        AdapterError::new(ErrorKind::UpstreamFault, "Anthropic sent an invalid stream event")
                    })?;
                    let usage = if name == "message_start" { &v["message"]["usage"] } else { &v["usage"] };
                    if let Ok(mut u) = AnthropicUsage::deserialize(usage) {
                        if name == "message_start" {
                            // Its output count is a placeholder (1); only message_delta's is.
                            u.output_tokens = None;
                        }
                        u.merge_into(&mut self.usage);
                    }
                }
                _ => {}
            }
            match self.chat.as_mut() {
                Some(answer) => answer.event(&event, &mut out)?,
                None => out.push(OutChunk::Event(event)),
            }
        }
        Ok(out)
    }

    fn finish(&mut self, end: StreamEnd) -> Result<StreamTail, AdapterError> {
        let mut chunks = Vec::new();
        if let Some(answer) = self.chat.as_mut() {
            answer.finish(end, &self.usage, &mut chunks);
        }
        Ok(StreamTail::new(chunks, std::mem::take(&mut self.usage)))
    }
}

#[cfg(test)]
mod tests;
