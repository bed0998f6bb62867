//! DashScope's Qwen models in both shapes:
//! - ops `chat` and `embeddings` (OpenAI's surface) on DashScope's OpenAI-compatible mode
//!   (`/compatible-mode/v1/...`): vision (`image_url` parts), qwen-omni's audio output
//!   (`modalities`, streamed) and thinking (`reasoning_content`) pass through as they are;
//! - DashScope's own routes for its SDK and clients, byte-compatible:
//!   `POST /api/v1/services/aigc/text-generation/generation` (`dashscope.generation`) and
//!   `POST /api/v1/services/aigc/multimodal-generation/generation` (`dashscope.multimodal`:
//!   Qwen-VL, Qwen-Omni, qwen-image, qwen3-asr-flash), whole, or streamed as DashScope streams
//!   them when the consumer sends `X-DashScope-SSE: enable` (`id:`/`event:result`/`data:` events,
//!   no `[DONE]`, usage cumulative in each event: the last one is billed).
//!
//! Native usage: `input_tokens` (with `prompt_tokens_details.cached_tokens`), `output_tokens`;
//! a multimodal answer's images (qwen-image, qwen-image-edit: `usage.image_count`, or the
//! `image` parts of `output.choices[].message.content[]`, whichever is more), and the seconds
//! of audio qwen3-asr-flash heard (`usage.seconds`), each billed where the model is priced in
//! them (`per_image`, `per_second`).

use serde::Deserialize;
use serde_json::Value;
use tollgate_plugin_sdk::openai_compat::Vendor;
use tollgate_plugin_sdk::{
    header, AdapterError, Body, Call, ErrorKind, Manifest, OutChunk, Reply, SseEvent, Step, StreamRequest,
    UpstreamRequest, UpstreamResponse, Usage,
};

pub const GENERATION: &str = "dashscope.generation";
pub const MULTIMODAL: &str = "dashscope.multimodal";
pub const GENERATION_PATH: &str = "/api/v1/services/aigc/text-generation/generation";
pub const MULTIMODAL_PATH: &str = "/api/v1/services/aigc/multimodal-generation/generation";

/// DashScope's OpenAI-compatible mode.
pub struct Compatible;

impl Vendor for Compatible {
    fn manifest() -> Manifest {
        unreachable!("the dashscope plugin's manifest is its own")
    }

    fn path(op: &str) -> Option<&'static str> {
        match op {
            "chat" => Some("/compatible-mode/v1/chat/completions"),
            "embeddings" => Some("/compatible-mode/v1/embeddings"),
            _ => None,
        }
    }

    fn classify(response: &UpstreamResponse) -> AdapterError {
        let v: Value = serde_json::from_slice(&response.body).unwrap_or(Value::Null);
        // The compatible mode answers OpenAI's error object; DashScope's own codes inside it.
        let inner = v.get("error").cloned().unwrap_or(v);
        super::error_of(response.status, &inner)
    }
}

/// DashScope's native usage.
#[derive(Deserialize, Default)]
struct NativeUsage {
    input_tokens: Option<u64>,
    output_tokens: Option<u64>,
    prompt_tokens_details: Option<Cached>,
    /// Images made (qwen-image, qwen-image-edit).
    image_count: Option<u64>,
    /// Seconds of audio heard (qwen3-asr-flash).
    seconds: Option<f64>,
}

#[derive(Deserialize, Default)]
struct Cached {
    cached_tokens: Option<u64>,
}

/// The usage of a native answer (or stream event); `None` when it has none.
fn native_usage(v: &Value) -> Option<Usage> {
    let u = NativeUsage::deserialize(v.get("usage").filter(|u| u.is_object())?).ok()?;
    let delivered = v
        .pointer("/output/choices")
        .and_then(Value::as_array)
        .map(|choices| {
            choices
                .iter()
                .filter_map(|c| c.pointer("/message/content").and_then(Value::as_array))
                .flatten()
                .filter(|part| part.get("image").is_some())
                .count() as u32
        })
        .filter(|n| *n > 0);
    // What was counted or delivered, whichever is more (never a delivered image free).
    let counted = u.image_count.map(|n| n.min(u64::from(MAX_IMAGES)) as u32);
    let images = match (counted, delivered) {
        (None, None) => None,
        (a, b) => Some(a.unwrap_or(0).max(b.unwrap_or(0))),
    };
    let milliseconds = u.seconds.filter(|s| s.is_finite() && *s >= 0.0).map(|s| (s * 1000.0).ceil() as u64);
    Some(Usage {
        input_tokens: u.input_tokens,
        output_tokens: u.output_tokens,
        cached_tokens: u.prompt_tokens_details.and_then(|d| d.cached_tokens),
        images,
        milliseconds,
        ..Usage::default()
    })
}

/// The output a native request may make when it names no `max_tokens`: DashScope's largest
/// (thinking included), so a reservation always bounds it.
pub const DEFAULT_MAX_OUTPUT: u64 = 32_768;
/// The most images one multimodal request may ask for (`parameters.n`).
const MAX_IMAGES: u32 = 16;
/// The longest audio qwen3-asr-flash hears in one request (DashScope's limit: 5 minutes).
pub const MAX_AUDIO_SECONDS: u64 = 300;

/// The `audio` parts of a multimodal request's messages (what qwen3-asr-flash hears).
fn audio_parts(body: &serde_json::Map<String, Value>) -> u64 {
    let messages = body.get("input").and_then(|i| i.get("messages")).and_then(Value::as_array);
    messages
        .into_iter()
        .flatten()
        .filter_map(|m| m.get("content").and_then(Value::as_array))
        .flatten()
        .filter(|part| part.get("audio").is_some())
        .count() as u64
}

/// The seconds of audio a multimodal request holds: each audio part at DashScope's longest.
fn audio_bound_ms(call: &Call) -> Option<u64> {
    let body = call.body.object("").ok()?;
    let parts = audio_parts(&body);
    (parts > 0).then(|| parts.saturating_mul(MAX_AUDIO_SECONDS * 1000))
}

/// A native answer's usage, its seconds never beyond what the request held: the bound is
/// DashScope's own limit, so a larger report is absurd, and a call is never charged more than
/// its reservation.
pub fn bounded(call: &Call, mut usage: Usage) -> Usage {
    if let (Some(ms), Some(bound)) = (usage.milliseconds, audio_bound_ms(call)) {
        usage.milliseconds = Some(ms.min(bound));
    }
    usage
}

/// What a native generation request may cost, read from DashScope's own fields (the host
/// reads OpenAI's): input bounded by the body's size, output by `parameters.max_tokens` (or
/// DashScope's largest) plus the thinking budget when thinking is on, times `n`; images
/// (qwen-image, qwen-image-edit) by `n`, 1 by default; seconds of audio (qwen3-asr-flash) by
/// its audio parts, each at DashScope's longest. Fields that price the call are read only as
/// written (`"N"` beside `"n"` is refused: DashScope might read the other).
pub fn native_quote(call: &Call) -> Result<Usage, AdapterError> {
    let body = call.body.object("DashScope takes JSON")?;
    let bad = |m: String| AdapterError::new(ErrorKind::BadRequest, m);
    tollgate_plugin_sdk::exact_fields(&body, &["model", "input", "parameters"])?;
    let parameters = match body.get("parameters") {
        None | Some(Value::Null) => serde_json::Map::new(),
        Some(Value::Object(p)) => p.clone(),
        Some(v) => return Err(bad(format!("'parameters' must be an object, not {v}"))),
    };
    tollgate_plugin_sdk::exact_fields(&parameters, &["max_tokens", "enable_thinking", "thinking_budget", "n"])?;
    let count = |name: &str, max: u64| -> Result<Option<u64>, AdapterError> {
        match parameters.get(name) {
            None | Some(Value::Null) => Ok(None),
            Some(v) => match v.as_u64().filter(|n| (1..=max).contains(n)) {
                Some(n) => Ok(Some(n)),
                None => Err(bad(format!("'parameters.{name}' must be an integer from 1 to {max}, not {v}"))),
            },
        }
    };
    let max_tokens = count("max_tokens", 1 << 20)?.unwrap_or(DEFAULT_MAX_OUTPUT);
    let thinking = match parameters.get("enable_thinking") {
        Some(Value::Bool(true)) => count("thinking_budget", 1 << 20)?.unwrap_or(DEFAULT_MAX_OUTPUT),
        _ => 0,
    };
    let n = count("n", u64::from(MAX_IMAGES))?.unwrap_or(1);
    let size = serde_json::to_vec(&body).map(|b| b.len() as u64).unwrap_or(u64::MAX);
    Ok(Usage {
        input_tokens: Some(size.div_ceil(2)),
        output_tokens: Some(max_tokens.saturating_add(thinking).saturating_mul(n)),
        images: (call.op == MULTIMODAL).then_some(n as u32),
        milliseconds: audio_bound_ms(call).filter(|_| call.op == MULTIMODAL),
        ..Usage::default()
    })
}

/// The first step of a native generation call: the body (its model the channel's name), to
/// the route's path, streamed when the consumer asked DashScope's way.
pub fn native_first(call: &Call) -> Step {
    let path = if call.op == MULTIMODAL { MULTIMODAL_PATH } else { GENERATION_PATH };
    let mut body = match call.body.object("DashScope takes JSON") {
        Ok(b) => b,
        Err(e) => return Step::Fail(e),
    };
    let mut request = UpstreamRequest::post_json(path, String::new());
    request.body = if call.upstream_model.is_empty() || call.upstream_model == call.model {
        Body::ClientBody
    } else {
        body.insert("model".into(), Value::String(call.upstream_model.clone()));
        Body::Text(Value::Object(body).to_string())
    };
    let streamed = header(&call.headers, "x-dashscope-sse").is_some_and(|v| v.eq_ignore_ascii_case("enable"));
    if !streamed {
        return Step::Send(request);
    }
    request = request.with_header("x-dashscope-sse", "enable").with_header("accept", "text/event-stream");
    Step::Stream(StreamRequest {
        request,
        framing: tollgate_plugin_sdk::Framing::Sse,
        reply_headers: vec![
            tollgate_plugin_sdk::Header::new("content-type", "text/event-stream"),
            tollgate_plugin_sdk::Header::new("cache-control", "no-cache"),
        ],
    })
}

/// A native answer: DashScope's body as it is, its usage read, a failure relayed and classified.
pub fn native_next(call: &Call, response: UpstreamResponse) -> Step {
    let v: Value = serde_json::from_slice(&response.body).unwrap_or(Value::Null);
    if !(200..300).contains(&response.status) {
        return Step::Reply(super::verbatim(response, &v));
    }
    if !v.is_object() {
        return Step::fail(ErrorKind::UpstreamFault, "DashScope answered with invalid JSON");
    }
    let usage = bounded(call, native_usage(&v).unwrap_or_default());
    Step::Reply(Reply { usage, ..Reply::verbatim(response) })
}

/// One chunk's events of a native stream: passed as they are, the last usage kept.
pub fn native_decode(events: Vec<SseEvent>, usage: &mut Usage) -> Result<Vec<OutChunk>, AdapterError> {
    let mut out = Vec::with_capacity(events.len());
    for event in events {
        let v: Value = serde_json::from_str(&event.data)
            .map_err(|_| AdapterError::new(ErrorKind::UpstreamFault, "DashScope sent an invalid stream event"))?;
        if v.get("code").and_then(Value::as_str).is_some_and(|c| !c.is_empty()) && v.get("output").is_none() {
            return Err(super::error_of(500, &v));
        }
        if let Some(u) = native_usage(&v) {
            *usage = u;
        }
        out.push(OutChunk::Event(event));
    }
    Ok(out)
}
