//! The `gemini` plugin: Google's Gemini API (AI Studio), key in `x-goog-api-key`.
//!
//! - Op `generate` (the gateway's Gemini surface, `{model}:generateContent` and
//!   `:streamGenerateContent`): the consumer's body goes to Google as it is, to the channel's
//!   name of the model; a stream is read as SSE (`alt=sse`) and given back as the consumer
//!   asked: SSE, or the streamed JSON array Google sends without `alt=sse`.
//! - Op `chat` (the OpenAI surface, `chat.rs`): OpenAI's chat request translated to
//!   `generateContent`, the answer translated back, streamed chunk by chunk.
//!
//! Usage in the contract's units: input is `promptTokenCount` plus `toolUsePromptTokenCount`,
//! output is `candidatesTokenCount` plus `thoughtsTokenCount` (thinking is billed as output,
//! as Google bills it), cached is `cachedContentTokenCount`. A stream's counts are cumulative:
//! the last report wins.

mod chat;

use serde::Deserialize;
use serde_json::Value;
use tollgate_plugin_sdk::{
    errors, export_plugin, AdapterError, Auth, Body, Call, ErrorKind, Exchange, Header, Manifest, OutChunk, Plugin,
    Reply, SseEvent, Step, StreamEnd, StreamInput, StreamRequest, StreamTail, UpstreamRequest, UpstreamResponse, Usage,
};

pub struct Gemini;

impl Plugin for Gemini {
    type Exchange = GeminiExchange;
    fn describe() -> Manifest {
        Manifest::new("gemini", env!("CARGO_PKG_VERSION"), "Google Gemini", &["generate", "chat"])
            .with_base_url("https://generativelanguage.googleapis.com")
    }
}

export_plugin!(Gemini);

pub struct GeminiExchange {
    call: Call,
    /// Op `chat`: the translation of the answer back to OpenAI's shape.
    chat: Option<chat::Answer>,
    /// Op `generate` streamed without `alt=sse`: the consumer gets a JSON array; the first
    /// element is written yet.
    array: Option<bool>,
    usage: Usage,
}

/// Google's `usageMetadata`.
#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct UsageMetadata {
    prompt_token_count: Option<u64>,
    candidates_token_count: Option<u64>,
    thoughts_token_count: Option<u64>,
    tool_use_prompt_token_count: Option<u64>,
    cached_content_token_count: Option<u64>,
}

impl UsageMetadata {
    /// This report in the contract's units (a later report replaces an earlier one).
    fn into_usage(self) -> Usage {
        let add = |a: Option<u64>, b: Option<u64>| match (a, b) {
            (None, None) => None,
            (a, b) => Some(a.unwrap_or(0).saturating_add(b.unwrap_or(0))),
        };
        Usage {
            input_tokens: add(self.prompt_token_count, self.tool_use_prompt_token_count),
            output_tokens: add(self.candidates_token_count, self.thoughts_token_count),
            cached_tokens: self.cached_content_token_count,
            ..Usage::default()
        }
    }

    /// The usage of a response (or stream chunk) that carries one.
    fn of(response: &Value) -> Option<Usage> {
        let u = response.get("usageMetadata").filter(|u| u.is_object())?;
        UsageMetadata::deserialize(u).ok().map(UsageMetadata::into_usage)
    }
}

/// A failure in Google's shape (`{"error":{"code","message","status","details"}}`). Google
/// answers a bad key with 400 `INVALID_ARGUMENT` and the reason `API_KEY_INVALID`: that is
/// the key's fault, and classified so.
fn classify(response: &UpstreamResponse) -> AdapterError {
    let v: Value = serde_json::from_slice(&response.body).unwrap_or_default();
    let Some(message) = v.pointer("/error/message").and_then(Value::as_str) else {
        return errors::from_openai_response(response);
    };
    let status = v.pointer("/error/status").and_then(Value::as_str);
    let key_invalid = v
        .pointer("/error/details")
        .and_then(Value::as_array)
        .is_some_and(|d| d.iter().any(|d| d["reason"] == "API_KEY_INVALID"))
        || message.contains("API key not valid");
    let kind = match status {
        _ if key_invalid => ErrorKind::Unauthorized,
        Some("UNAUTHENTICATED") => ErrorKind::Unauthorized,
        Some("PERMISSION_DENIED") => ErrorKind::Forbidden,
        Some("RESOURCE_EXHAUSTED") => ErrorKind::RateLimited,
        Some("NOT_FOUND") => ErrorKind::NotFound,
        Some("DEADLINE_EXCEEDED") => ErrorKind::Timeout,
        Some("UNAVAILABLE" | "INTERNAL") => ErrorKind::UpstreamFault,
        Some("INVALID_ARGUMENT" | "FAILED_PRECONDITION") => ErrorKind::BadRequest,
        _ => errors::kind_for_status(response.status),
    };
    AdapterError {
        kind,
        message: message.to_string(),
        code: status.map(str::to_string),
        retry_after_ms: errors::retry_after_ms(&response.headers),
    }
}

/// Tools Google bills per use or whose input it fetches itself (unbounded by the request
/// the reservation reads): grounding with Search or Maps, URL context, file search.
const PAID_TOOLS: [&str; 6] =
    ["googleSearch", "googleSearchRetrieval", "googleMaps", "urlContext", "fileSearch", "enterpriseWebSearch"];

/// A request's tool that this gateway does not price, named; `None` when there is none.
fn unpriced_tool(body: &[u8]) -> Option<String> {
    #[derive(Deserialize)]
    struct Tools {
        #[serde(default)]
        tools: Vec<serde_json::Map<String, Value>>,
    }
    let tools = serde_json::from_slice::<Tools>(body).ok()?.tools;
    let snake = |s: &str| {
        s.chars()
            .flat_map(|c| if c.is_ascii_uppercase() { vec!['_', c.to_ascii_lowercase()] } else { vec![c] })
            .collect::<String>()
    };
    let found = tools.iter().flat_map(|t| t.keys()).find(|k| PAID_TOOLS.iter().any(|p| *k == p || **k == snake(p)))?;
    Some(format!("tools: '{found}' is billed by Google per use (or reads input this gateway cannot bound), which this gateway does not price"))
}

impl GeminiExchange {
    /// The request for `model`'s `action`, streamed as SSE for `streamGenerateContent`.
    fn step(&self, action: &str, body: Body) -> Step {
        let model = tollgate_plugin_sdk::percent_encode(self.call.vendor_model(), false);
        let stream = action == "streamGenerateContent";
        let query = if stream { "?alt=sse" } else { "" };
        let mut request = UpstreamRequest::post_json(format!("/v1beta/models/{model}:{action}{query}"), String::new())
            .with_auth(Auth::Header("x-goog-api-key".into()));
        request.body = body;
        if !stream {
            return Step::Send(request);
        }
        let content_type = if self.array.is_some() { "application/json" } else { "text/event-stream" };
        Step::Stream(StreamRequest {
            request,
            framing: tollgate_plugin_sdk::Framing::Sse,
            reply_headers: vec![Header::new("content-type", content_type), Header::new("cache-control", "no-cache")],
        })
    }

    /// Op `generate`: the consumer's body, to the action its path names.
    fn generate(&mut self) -> Step {
        let action = self.call.context.path_params.iter().find(|(k, _)| k == "action").map(|(_, v)| v.clone());
        let action = action.unwrap_or_else(|| "generateContent".into());
        if !matches!(action.as_str(), "generateContent" | "streamGenerateContent" | "countTokens") {
            return Step::fail(ErrorKind::Unsupported, format!("'{action}' is not a method this plugin serves"));
        }
        if let Some(why) = self.call.body.as_bytes().and_then(unpriced_tool) {
            return Step::fail(ErrorKind::BadRequest, why);
        }
        if action == "streamGenerateContent" && !self.call.query.split('&').any(|p| p == "alt=sse") {
            self.array = Some(false);
        }
        self.step(&action, Body::ClientBody)
    }
}

impl Exchange for GeminiExchange {
    fn new(call: Call) -> Self {
        GeminiExchange { call, chat: None, array: None, usage: Usage::default() }
    }

    fn first(&mut self) -> Step {
        match self.call.op.as_str() {
            "generate" => self.generate(),
            "chat" => match chat::to_gemini(&self.call) {
                Ok((body, answer)) => {
                    let action = if answer.streams() { "streamGenerateContent" } else { "generateContent" };
                    self.chat = Some(answer);
                    self.step(action, Body::Text(body))
                }
                Err(e) => Step::Fail(e),
            },
            op => Step::fail(ErrorKind::Unsupported, format!("operation '{op}' is not supported by Gemini")),
        }
    }

    fn next(&mut self, response: UpstreamResponse) -> Step {
        if !(200..300).contains(&response.status) {
            return Step::Fail(classify(&response));
        }
        let Ok(answer) = serde_json::from_slice::<Value>(&response.body) else {
            return Step::fail(ErrorKind::UpstreamFault, "Gemini answered with invalid JSON");
        };
        let usage = UsageMetadata::of(&answer).unwrap_or_default();
        match &self.chat {
            Some(chat) => Step::Reply(Reply::json(chat.completion(&answer), usage)),
            None => Step::Reply(Reply::with_body(200, "application/json", Body::Bytes(response.body), usage)),
        }
    }

    fn decode(&mut self, input: StreamInput) -> Result<Vec<OutChunk>, AdapterError> {
        let StreamInput::Events(events) = input else {
            return Err(AdapterError::new(ErrorKind::UpstreamFault, "expected SSE"));
        };
        let mut out = Vec::with_capacity(events.len());
        for event in events {
            let chunk: Value = serde_json::from_str(&event.data)
                .map_err(|_| AdapterError::new(ErrorKind::UpstreamFault, "Gemini sent an invalid stream chunk"))?;
            if let Some(message) = chunk.pointer("/error/message").and_then(Value::as_str) {
                return Err(AdapterError::new(ErrorKind::UpstreamFault, message));
            }
            if let Some(u) = UsageMetadata::of(&chunk) {
                self.usage = u;
            }
            match (&mut self.chat, &mut self.array) {
                (Some(chat), _) => chat.event(&chunk, &mut out),
                (None, Some(started)) => {
                    let sep = if *started { ",\r\n" } else { "[" };
                    *started = true;
                    out.push(OutChunk::Bytes([sep.as_bytes(), event.data.as_bytes()].concat()));
                }
                (None, None) => out.push(OutChunk::Event(SseEvent { event: None, data: event.data, id: None })),
            }
        }
        Ok(out)
    }

    fn finish(&mut self, end: StreamEnd) -> Result<StreamTail, AdapterError> {
        let mut chunks = Vec::new();
        if end == StreamEnd::Complete {
            match (&mut self.chat, self.array) {
                (Some(chat), _) => chat.finish(&self.usage, &mut chunks),
                (None, Some(started)) => {
                    chunks.push(OutChunk::Bytes(if started { b"]".to_vec() } else { b"[]".to_vec() }))
                }
                (None, None) => {}
            }
        }
        Ok(StreamTail::new(chunks, std::mem::take(&mut self.usage)))
    }
}

#[cfg(test)]
mod tests;
