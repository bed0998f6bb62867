//! A complete adapter for OpenAI-compatible vendors (OpenAI, DeepSeek, SiliconFlow, Ark, Zhipu,
//! any `/v1/chat/completions` server). A vendor plugin supplies a [`Vendor`] and exports
//! `Compat<ItsVendor>`; see `plugins/openai` for a whole plugin.
//!
//! What it guarantees:
//! - bodies pass through unchanged except `model` (the channel's upstream name) and, for
//!   streams, `stream_options.include_usage = true`, because billing needs the usage chunk;
//!   when the consumer did not ask for usage, that chunk is removed again before it is sent;
//! - stream chunks are forwarded one by one as they arrive; only chunks that may carry usage
//!   are parsed;
//! - speech (`/v1/audio/speech`) is relayed: its audio goes to the consumer as it arrives,
//!   never through the plugin (the host bills the input's characters); with
//!   `stream_format: "sse"` it streams, its usage read from `speech.audio.done`;
//! - a transcription's form is sent on as it came (its file spliced in by the host, only
//!   `model` mapped), streamed when it asks (`stream=true`); its usage is the vendor's seconds
//!   (`usage.seconds`, or `duration`), or its tokens; text, SRT and VTT are asked upstream as
//!   JSON (they would carry no usage) and rebuilt;
//! - a stream that ends without `[DONE]` but cleanly gets one; an interrupted stream does not
//!   (the host ends it with an error event);
//! - a channel's settings may move the API under another root (`api_root = "/api/v3"`, or a
//!   known vendor's `preset = "groq"`, see [`PRESETS`]): OpenAI's `/v1/...` paths are sent
//!   under it; any other setting is refused when the channel loads.

use crate::{
    errors, AdapterError, Call, ErrorKind, Exchange, Manifest, OutChunk, Plugin, Reply, SseEvent, Step, StreamEnd,
    StreamInput, StreamTail, UpstreamRequest, UpstreamResponse, Usage,
};
use serde::Deserialize;
use serde_json::Value;
use std::marker::PhantomData;
use tollgate_base::openai_json::{Answer, Units};
use tollgate_base::openai_stream::{special, ChatStream, Event as ChatEvent};

/// What differs between OpenAI-compatible vendors.
pub trait Vendor: 'static {
    fn manifest() -> Manifest;

    /// The upstream path for an operation; `None` answers "unsupported".
    fn path(op: &str) -> Option<&'static str> {
        match op {
            "chat" => Some("/v1/chat/completions"),
            "embeddings" => Some("/v1/embeddings"),
            "images" => Some("/v1/images/generations"),
            "rerank" => Some("/v1/rerank"),
            "speech" => Some("/v1/audio/speech"),
            "transcription" => Some("/v1/audio/transcriptions"),
            "translation" => Some("/v1/audio/translations"),
            _ => None,
        }
    }

    /// Whether the vendor rewrites this operation's request or answer (`adjust_request`,
    /// `adjust_response`). Other operations pass through: a request that needs no change is
    /// forwarded as the consumer sent it, without entering the plugin.
    fn rewrites(_op: &str) -> bool {
        false
    }

    /// Last edits to the request JSON before it is sent (after `model` is set).
    fn adjust_request(_op: &str, _body: &mut Value) {}

    /// Turns the vendor's (2xx) answer into OpenAI's shape, for operations it `rewrites`.
    fn adjust_response(_op: &str, _body: &mut Value) {}

    /// The class of a non-2xx response.
    fn classify(response: &UpstreamResponse) -> AdapterError {
        errors::from_openai_response(response)
    }

    /// The vendor's endpoint for a key's remaining balance (`GET`), for the host's
    /// highest-balance key strategy (op `balance`); `None`: the vendor has none.
    fn balance_path() -> Option<&'static str> {
        None
    }

    /// The balance, a decimal string, read from that endpoint's JSON answer; `None`: unknown.
    fn read_balance(_answer: &Value) -> Option<String> {
        None
    }
}

/// OpenAI-compatible vendors whose API is not under `/v1`: the `preset` a channel names, the
/// base URL to write beside it, and the root its paths go under.
pub const PRESETS: &[(&str, &str, &str)] = &[
    ("openai", "https://api.openai.com", "/v1"),
    ("deepseek", "https://api.deepseek.com", ""),
    ("moonshot", "https://api.moonshot.cn", "/v1"),
    ("groq", "https://api.groq.com", "/openai/v1"),
    ("openrouter", "https://openrouter.ai", "/api/v1"),
    ("together", "https://api.together.xyz", "/v1"),
    ("mistral", "https://api.mistral.ai", "/v1"),
    ("xai", "https://api.x.ai", "/v1"),
    ("fireworks", "https://api.fireworks.ai", "/inference/v1"),
    ("perplexity", "https://api.perplexity.ai", ""),
    ("ark", "https://ark.cn-beijing.volces.com", "/api/v3"),
    ("dashscope", "https://dashscope.aliyuncs.com", "/compatible-mode/v1"),
    ("zhipu", "https://open.bigmodel.cn", "/api/paas/v4"),
    ("siliconflow", "https://api.siliconflow.cn", "/v1"),
    ("ollama", "http://127.0.0.1:11434", "/v1"),
];

/// The API root a channel's settings (JSON) name: `api_root`, else its `preset`'s; `None`:
/// OpenAI's `/v1`. Settings are checked when the channel loads (`check_compat_settings`).
fn api_root(config: &str) -> Option<String> {
    if config.len() <= 2 {
        return None; // "{}": the common case, without a parse
    }
    let v: Value = serde_json::from_str(config).ok()?;
    if let Some(root) = v.get("api_root").and_then(Value::as_str) {
        return Some(root.trim_end_matches('/').to_string());
    }
    let preset = v.get("preset").and_then(Value::as_str)?;
    PRESETS.iter().find(|(name, ..)| *name == preset).map(|(_, _, root)| root.to_string())
}

/// The upstream path of `op` on a channel with these settings: the vendor's path, under the
/// channel's API root; `None`: the vendor does not serve `op`.
fn upstream_path<V: Vendor>(op: &str, config: &str) -> Option<std::borrow::Cow<'static, str>> {
    let path = V::path(op)?;
    Some(match api_root(config) {
        Some(root) => format!("{root}{}", path.strip_prefix("/v1").unwrap_or(path)).into(),
        None => path.into(),
    })
}

/// The ops the host may forward for a channel with these settings (`tollgate:fast`): a chat
/// or embeddings the vendor serves and does not rewrite, whose request `first()` sends as the
/// consumer's body when it is not streamed and its model not mapped, and whose answer's usage
/// is OpenAI's; a chat's streams too (`first()` and `decode` follow
/// `tollgate_base::openai_stream`, the rule the host forwards them by).
pub fn forwarded_routes<V: Vendor>(settings: &str) -> Vec<crate::ForwardRoute> {
    let manifest = V::manifest();
    ["chat", "embeddings"]
        .into_iter()
        .filter(|op| manifest.operations.iter().any(|o| o.name == *op && !o.quoted) && !V::rewrites(op))
        .filter_map(|op| {
            let path = upstream_path::<V>(op, settings)?;
            Some(crate::ForwardRoute { op: op.to_string(), path: path.into_owned(), streams: op == "chat" })
        })
        .collect()
}

/// Checks the settings an OpenAI-compatible channel may have: `api_root` (a path, `""` for
/// none) or `preset` (one of [`PRESETS`]), nothing else.
pub fn check_compat_settings(settings: &str) -> Result<(), String> {
    let v: Value = serde_json::from_str(settings).map_err(|e| format!("settings are not JSON: {e}"))?;
    let Some(map) = v.as_object() else { return Err("settings must be a table".into()) };
    for (key, value) in map {
        match (key.as_str(), value.as_str()) {
            ("api_root", Some(r)) if r.is_empty() || (r.starts_with('/') && !r.contains(['?', '#'])) => {}
            ("api_root", _) => return Err(format!("api_root must be a path such as \"/api/v3\", not {value}")),
            ("preset", Some(p)) if PRESETS.iter().any(|(name, ..)| *name == p) => {}
            ("preset", _) => {
                let names: Vec<&str> = PRESETS.iter().map(|(n, ..)| *n).collect();
                return Err(format!("unknown preset {value}; known: {}", names.join(", ")));
            }
            (other, _) => return Err(format!("unknown setting '{other}'; this plugin takes api_root or preset")),
        }
    }
    if map.contains_key("api_root") && map.contains_key("preset") {
        return Err("give api_root or preset, not both".into());
    }
    Ok(())
}

/// The plugin type for a [`Vendor`]: `export_plugin!(Compat<MyVendor>)`.
pub struct Compat<V>(PhantomData<V>);

impl<V: Vendor> Plugin for Compat<V> {
    type Exchange = CompatExchange<V>;
    fn describe() -> Manifest {
        V::manifest()
    }
    fn check_settings(settings: &str) -> Result<(), String> {
        check_compat_settings(settings)
    }
    fn forward(settings: &str) -> Vec<crate::ForwardRoute> {
        forwarded_routes::<V>(settings)
    }
}

pub struct CompatExchange<V> {
    call: Call,
    /// A chat's stream (`tollgate_base::openai_stream`, the rule the host forwards by); boxed,
    /// as most exchanges are no chat stream.
    chat: Option<Box<ChatStream>>,
    /// Other streams: whether the upstream sent `[DONE]`, and the usage read.
    saw_done: bool,
    usage: Usage,
    /// A transcription asked as text, SRT or VTT: asked upstream as JSON (which carries the
    /// usage billing needs), given back in this format.
    transcript_format: Option<&'static str>,
    vendor: PhantomData<V>,
}

impl<V: Vendor> Exchange for CompatExchange<V> {
    fn new(call: Call) -> Self {
        CompatExchange {
            call,
            chat: None,
            saw_done: false,
            usage: Usage::default(),
            transcript_format: None,
            vendor: PhantomData,
        }
    }

    fn first(&mut self) -> Step {
        if self.call.op == BALANCE {
            return match V::balance_path() {
                Some(path) => Step::Send(UpstreamRequest::get(path)),
                None => Step::fail(ErrorKind::Unsupported, "this vendor has no balance endpoint"),
            };
        }
        let Some(path) = upstream_path::<V>(&self.call.op, &self.call.config) else {
            return Step::fail(
                ErrorKind::Unsupported,
                format!("operation '{}' is not supported by this channel", self.call.op),
            );
        };
        let path = path.as_ref();
        if matches!(self.call.op.as_str(), "transcription" | "translation") {
            return self.transcription(path);
        }
        let streaming_asked = match self.call.op.as_str() {
            "chat" => match asks_for_stream(&self.call.body) {
                Ok(asked) => asked,
                Err(e) => return Step::Fail(e),
            },
            "speech" => self.call.body.field("stream_format").as_deref() == Some("sse"),
            _ => false,
        };
        let model_unchanged = self.call.upstream_model.is_empty() || self.call.upstream_model == self.call.model;
        if !streaming_asked && model_unchanged && !V::rewrites(&self.call.op) {
            // Nothing to change: the host forwards the consumer's bytes; the body never
            // enters the plugin (the host has already checked it is a JSON object). For the
            // ops `forward` declares, the host sends this very request itself and enters the
            // plugin only for an answer it cannot use as it is.
            let mut request = UpstreamRequest::post_json(path, String::new());
            request.body = crate::Body::ClientBody;
            return if self.call.op == "speech" { Step::Relay(request) } else { Step::Send(request) };
        }
        let not_an_object = || Step::fail(ErrorKind::BadRequest, "the request body must be a JSON object");
        let upstream_model = Some(self.call.upstream_model.as_str()).filter(|m| !m.is_empty());
        let streaming = streaming_asked;
        let mut body = if streaming && self.call.op == "chat" {
            let read = self.call.body.as_bytes().and_then(|b| ChatStream::request_json(b, upstream_model));
            let Some((body, chat)) = read else { return not_an_object() };
            self.chat = Some(Box::new(chat));
            body
        } else {
            let mut body: Value = match self.call.body.as_bytes().map(serde_json::from_slice) {
                Some(Ok(v @ Value::Object(_))) => v,
                _ => return not_an_object(),
            };
            if let Some(model) = upstream_model {
                body["model"] = Value::String(model.to_string());
            }
            body
        };
        V::adjust_request(&self.call.op, &mut body);
        let request = UpstreamRequest::post_json(path, body.to_string());
        match (streaming, self.call.op.as_str()) {
            (true, _) => Step::stream_sse(request),
            (false, "speech") => Step::Relay(request),
            (false, _) => Step::Send(request),
        }
    }

    fn next(&mut self, response: UpstreamResponse) -> Step {
        if !(200..300).contains(&response.status) {
            return Step::Fail(V::classify(&response));
        }
        if matches!(self.call.op.as_str(), "transcription" | "translation") {
            return transcribed(response, self.transcript_format);
        }
        if self.call.op == BALANCE {
            return balance_reply(serde_json::from_slice(&response.body).ok().as_ref().and_then(V::read_balance));
        }
        let mut body = response.body;
        if V::rewrites(&self.call.op) {
            let Ok(mut answer) = serde_json::from_slice::<Value>(&body) else {
                return Step::fail(ErrorKind::UpstreamFault, "the upstream answered with invalid JSON");
            };
            V::adjust_response(&self.call.op, &mut answer);
            body = answer.to_string().into_bytes();
        }
        let Some(answer) = Answer::read(&body) else {
            return Step::fail(ErrorKind::UpstreamFault, "the upstream answered with invalid JSON");
        };
        let usage = usage_of(answer.units(&self.call.op));
        Step::Reply(Reply::with_body(200, "application/json", crate::Body::Bytes(body), usage))
    }

    fn decode(&mut self, input: StreamInput) -> Result<Vec<OutChunk>, AdapterError> {
        let events = match input {
            StreamInput::Events(e) => e,
            StreamInput::Bytes(_) | StreamInput::Lines(_) => {
                return Err(AdapterError::new(ErrorKind::UpstreamFault, "expected SSE"))
            }
        };
        let mut out = Vec::with_capacity(events.len());
        if let Some(chat) = &mut self.chat {
            for event in events {
                match chat.event(&event.data) {
                    ChatEvent::Keep => out.push(OutChunk::Event(event)),
                    ChatEvent::Hide => {}
                    ChatEvent::Fail(message) => return Err(AdapterError::new(ErrorKind::UpstreamFault, message)),
                }
            }
            return Ok(out);
        }
        for event in events {
            let data = event.data.trim();
            if data == "[DONE]" {
                self.saw_done = true;
                out.push(OutChunk::Event(event));
                continue;
            }
            let read = special(data).map_err(|message| AdapterError::new(ErrorKind::UpstreamFault, message))?;
            if let Some(v) = read {
                // Only a chat's usage chunk is the gateway's to hide (above); other streams'
                // usage rides on events the consumer needs (`speech.audio.done`, ...).
                if let Some(u) = v.get("usage").filter(|u| u.is_object()) {
                    if matches!(self.call.op.as_str(), "transcription" | "translation") {
                        self.usage = transcription_usage(&v);
                    } else if let Ok(u) = OpenAiUsage::deserialize(u) {
                        self.usage = usage_of(u.units());
                    }
                }
            }
            out.push(OutChunk::Event(event));
        }
        Ok(out)
    }

    fn finish(&mut self, end: StreamEnd) -> Result<StreamTail, AdapterError> {
        let mut chunks = Vec::new();
        let done = SseEvent { event: None, data: "[DONE]".into(), id: None };
        if let Some(chat) = &self.chat {
            if chat.needs_done(end == StreamEnd::Complete) {
                chunks.push(OutChunk::Event(done));
            }
            return Ok(StreamTail::new(chunks, chat.usage().map(usage_of).unwrap_or_default()));
        }
        if end == StreamEnd::Complete && !self.saw_done {
            chunks.push(OutChunk::Event(done));
        }
        Ok(StreamTail::new(chunks, std::mem::take(&mut self.usage)))
    }
}

impl<V: Vendor> CompatExchange<V> {
    /// A transcription: the consumer's form sent on (its file spliced in by the host), only
    /// `model` mapped; streamed when the form asks (`stream=true`).
    fn transcription(&mut self, path: &str) -> Step {
        let crate::Body::Form(parts) = &self.call.body else {
            return Step::fail(ErrorKind::BadRequest, "a transcription is a multipart/form-data request with a 'file'");
        };
        if !parts.iter().any(|p| matches!(p.value, crate::PartValue::ClientFile(_))) {
            return Step::fail(ErrorKind::BadRequest, "a transcription needs the audio as a 'file' part");
        }
        let model = self.call.vendor_model().to_string();
        let streamed = self.call.body.field("stream").as_deref() == Some("true");
        // Text, SRT and VTT answers carry no usage: JSON is asked for instead (verbose, with
        // its segments' times, for subtitles), and the answer rebuilt in the format asked.
        self.transcript_format = match self.call.body.field("response_format").as_deref() {
            _ if streamed => None,
            Some("text") => Some("text"),
            Some("srt") => Some("srt"),
            Some("vtt") => Some("vtt"),
            _ => None,
        };
        let upstream_format = match self.transcript_format {
            Some("text") => "json",
            Some(_) => "verbose_json",
            None => "",
        };
        let parts = parts
            .iter()
            .map(|p| match (&p.value, p.name.as_str()) {
                (crate::PartValue::Text(_), "model") => {
                    crate::FormPart { value: crate::PartValue::Text(model.clone()), ..p.clone() }
                }
                (crate::PartValue::Text(_), "response_format") if !upstream_format.is_empty() => {
                    crate::FormPart { value: crate::PartValue::Text(upstream_format.into()), ..p.clone() }
                }
                _ => p.clone(),
            })
            .collect();
        let mut request = UpstreamRequest::post_json(path, String::new());
        request.headers.clear();
        request.body = crate::Body::Form(parts);
        if streamed {
            Step::stream_sse(request)
        } else {
            Step::Send(request)
        }
    }
}

/// A transcription's answer (rebuilt as text, SRT or VTT when the consumer asked so) with the
/// vendor's usage: `usage.seconds` (or `duration`) as milliseconds, or its tokens.
fn transcribed(response: UpstreamResponse, format: Option<&str>) -> Step {
    let content_type = crate::header(&response.headers, "content-type").unwrap_or("application/json").to_string();
    let v = match serde_json::from_slice::<Value>(&response.body) {
        Ok(v) => v,
        // Plain text from a vendor that ignored the format asked: nothing reported, the host
        // estimates.
        Err(_) if !content_type.contains("json") => {
            let body = crate::Body::Bytes(response.body);
            return Step::Reply(Reply::with_body(200, &content_type, body, Usage::default()));
        }
        Err(_) => return Step::fail(ErrorKind::UpstreamFault, "the upstream answered with invalid JSON"),
    };
    let usage = transcription_usage(&v);
    let (content_type, body) = match format {
        Some("text") => {
            ("text/plain; charset=utf-8", format!("{}\n", v["text"].as_str().unwrap_or_default()).into_bytes())
        }
        Some(f @ ("srt" | "vtt")) => ("text/plain; charset=utf-8", subtitles(&v, f == "vtt").into_bytes()),
        _ => (content_type.as_str(), response.body),
    };
    Step::Reply(Reply::with_body(200, content_type, crate::Body::Bytes(body), usage))
}

/// SRT or WebVTT from a verbose transcription's segments (`start`, `end` in seconds, `text`).
fn subtitles(v: &Value, vtt: bool) -> String {
    let time = |s: f64| {
        let ms = (s.max(0.0) * 1000.0).round() as u64;
        let (h, m, sec, milli) = (ms / 3_600_000, ms / 60_000 % 60, ms / 1000 % 60, ms % 1000);
        if vtt {
            format!("{h:02}:{m:02}:{sec:02}.{milli:03}")
        } else {
            format!("{h:02}:{m:02}:{sec:02},{milli:03}")
        }
    };
    let mut out = String::from(if vtt { "WEBVTT\n\n" } else { "" });
    for (i, seg) in v["segments"].as_array().map(Vec::as_slice).unwrap_or_default().iter().enumerate() {
        let (start, end) = (seg["start"].as_f64().unwrap_or(0.0), seg["end"].as_f64().unwrap_or(0.0));
        let text = seg["text"].as_str().unwrap_or_default().trim();
        if !vtt {
            out.push_str(&format!("{}\n", i + 1));
        }
        out.push_str(&format!("{} --> {}\n{text}\n\n", time(start), time(end)));
    }
    out
}

/// The usage of a transcription (or its stream's `done` event): seconds, or tokens.
fn transcription_usage(v: &Value) -> Usage {
    let seconds = v.pointer("/usage/seconds").or_else(|| v.get("duration")).and_then(Value::as_f64);
    match (seconds, v.get("usage").filter(|u| u.is_object())) {
        (Some(s), _) if s.is_finite() && s >= 0.0 => {
            Usage { milliseconds: Some((s * 1000.0).ceil() as u64), ..Usage::default() }
        }
        (_, Some(u)) => OpenAiUsage::deserialize(u).map(|u| usage_of(u.units())).unwrap_or_default(),
        _ => Usage::default(),
    }
}

/// The operation that reads an upstream key's balance. The contract: the plugin replies 200
/// with `{"balance":"<decimal>"}`, or fails (an unauthorized key fails as `unauthorized`).
pub const BALANCE: &str = "balance";

/// The reply to op `balance`; an answer without a readable balance is "unknown", never zero.
pub fn balance_reply(balance: Option<String>) -> Step {
    let decimal = |b: &str| {
        let digits = b.strip_prefix('-').unwrap_or(b);
        !digits.is_empty()
            && digits.bytes().all(|c| c.is_ascii_digit() || c == b'.')
            && digits.bytes().filter(|&c| c == b'.').count() <= 1
            && digits.bytes().any(|c| c.is_ascii_digit())
    };
    match balance.filter(|b| decimal(b)) {
        Some(b) => Step::Reply(Reply::json(serde_json::json!({ "balance": b }).to_string(), Usage::default())),
        None => Step::fail(ErrorKind::UpstreamFault, "the balance endpoint answered without a readable balance"),
    }
}

/// Whether the consumer asked for a stream (`tollgate_base::openai_json::asks_for_stream`, which
/// the host reads alike); a body it cannot read is refused: the vendor might read it another way.
fn asks_for_stream(body: &crate::Body) -> Result<bool, AdapterError> {
    tollgate_base::openai_json::asks_for_stream(body.as_bytes().unwrap_or_default()).map_err(|e| {
        AdapterError::new(
            ErrorKind::BadRequest,
            format!("the request body must be one JSON object with a boolean 'stream' at most once: {e}"),
        )
    })
}

/// OpenAI's usage object (the one reading the host shares: `tollgate_base::openai_json`).
pub use tollgate_base::openai_json::Usage as OpenAiUsage;

/// A plugin's usage of the units an OpenAI-shaped answer gives.
pub fn usage_of(units: Units) -> Usage {
    Usage {
        input_tokens: units.input_tokens,
        output_tokens: units.output_tokens,
        cached_tokens: units.cached_tokens,
        images: units.images,
        ..Usage::default()
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_channel_puts_the_api_under_its_root_or_its_presets() {
        use super::{api_root, check_compat_settings};
        assert_eq!(api_root("{}"), None);
        assert_eq!(api_root(r#"{"api_root":"/api/v3/"}"#).as_deref(), Some("/api/v3"));
        assert_eq!(api_root(r#"{"preset":"groq"}"#).as_deref(), Some("/openai/v1"));
        assert_eq!(api_root(r#"{"preset":"deepseek"}"#).as_deref(), Some(""));
        assert!(check_compat_settings(r#"{"preset":"zhipu"}"#).is_ok());
        assert!(check_compat_settings(r#"{"api_root":""}"#).is_ok());
        for bad in [
            r#"{"preset":"nope"}"#,
            r#"{"api_root":"v3"}"#,
            r#"{"api-root":"/v3"}"#,
            r#"{"api_root":"/a","preset":"groq"}"#,
            "[]",
        ] {
            assert!(check_compat_settings(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_stream_is_read_from_the_parsed_json_never_a_substring() {
        use super::asks_for_stream;
        let ask = |s: &str| asks_for_stream(&crate::Body::Text(s.into()));
        assert!(ask(r#"{"str\u0065am":true}"#).unwrap(), "an escaped key is still 'stream'");
        assert!(ask(r#"{"model":"m","stream":true}"#).unwrap());
        assert!(!ask(r#"{"model":"m","content":"\"stream\":true"}"#).unwrap());
        assert!(!ask(r#"{"model":"m"}"#).unwrap());
        assert!(ask(r#"{"stream":false,"stream":true}"#).is_err(), "written twice");
        assert!(ask(r#"{"stream":"yes"}"#).is_err());
        assert!(ask("[1]").is_err());
    }
}
