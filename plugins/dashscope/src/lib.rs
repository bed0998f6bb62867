//! The `dashscope` plugin: Alibaba DashScope: Qwen chat, vision and omni in OpenAI's shape
//! and DashScope's own (`chat.rs`, `vendor-apis.md` §6.1), and Wan video and images as
//! asynchronous tasks (§6.2).
//!
//! - op `video` (OpenAI's Videos API): `POST /api/v1/services/aigc/video-generation/video-synthesis`
//!   with `X-DashScope-Async: enable`; OpenAI's `size` (`1280x720`) becomes DashScope's
//!   (`1280*720`), `seconds` `duration`, an `image` URL `img_url` (image to video). Fields
//!   that change the price (`audio`, ...) are refused, not sent at the quoted price.
//! - op `task.poll`: `GET /api/v1/tasks/{task_id}` until `SUCCEEDED` (its `video_url` is
//!   archived) or `FAILED` / `CANCELED` / `UNKNOWN` (its `code` and `message`).
//! - op `task.cancel`: `POST /api/v1/tasks/{task_id}/cancel` (a task still pending).
//!
//! - op `dashscope.image`, DashScope's own route `POST
//!   /api/v1/services/aigc/text2image/image-synthesis` (Wan text to image), for its clients:
//!   the request is checked and sent asynchronously, and DashScope's own answer goes back; the
//!   job becomes a task held `parameters.n` images (1 to 4, 1 by default) and charged the
//!   images DashScope reports (`usage.image_count`), each archived. `GET /api/v1/tasks/{id}`
//!   (`dashscope.task`, free) runs on the key that made the task, for its owner only, and
//!   answers DashScope's body as it is.
//! - op `dashscope.transcription`, DashScope's own route `POST
//!   /api/v1/services/audio/asr/transcription` (Paraformer and Fun-ASR on files): a task the
//!   same way, held the most its files may be heard and charged the seconds DashScope reports
//!   (`asr.rs`).
//! - op `transcription` (OpenAI's `POST /v1/audio/transcriptions`): qwen3-asr-flash on the
//!   multimodal route, the consumer's file written into the JSON by the host, held 5 minutes
//!   and charged the seconds DashScope heard (`transcription.rs`).
//!
//! DashScope bills a video by its seconds at a price per resolution: the quote names the
//! resolution's tier (`480p`, `720p`, `1080p`, from the size's area; 1080p when none is given,
//! as DashScope defaults) counted in the seconds asked for, and a finished task the seconds
//! it reports (`usage.duration`, or the older `video_duration`), a started second whole.
//! Price them as `[models."wan2.2-t2v-plus".units] "720p" = "<per second>"`. Auth is the
//! channel's API key as a bearer token; errors are `{"code","message","request_id"}`.

mod asr;
mod chat;
mod transcription;

use serde_json::{json, Map, Value};
use tollgate_plugin_sdk::openai_compat::CompatExchange;
use tollgate_plugin_sdk::{
    exact_fields, export_plugin, AdapterError, Call, ErrorKind, Exchange, Field, Manifest, Media, Operation, OutChunk,
    Reply, Route, Step, StreamEnd, StreamInput, StreamTail, TaskDone, TaskProgress, TaskState, TaskSubmitted,
    UpstreamRequest, UpstreamResponse, Usage,
};

pub struct DashScope;

impl tollgate_plugin_sdk::Plugin for DashScope {
    type Exchange = DashScopeExchange;

    fn describe() -> Manifest {
        Manifest::new("dashscope", env!("CARGO_PKG_VERSION"), "Alibaba DashScope", &["chat", "embeddings"])
            .with_operation(Operation::new(chat::GENERATION).quoted())
            .with_operation(Operation::new(chat::MULTIMODAL).quoted())
            .with_route("POST", chat::GENERATION_PATH, chat::GENERATION)
            .with_route("POST", chat::MULTIMODAL_PATH, chat::MULTIMODAL)
            .forwarding("x-dashscope-sse")
            .with_operation(Operation::new("video").quoted())
            .with_operation(Operation::new("task.poll").resend())
            .with_operation(Operation::new("task.cancel"))
            .with_operation(Operation::new(IMAGE).quoted())
            .with_operation(Operation::new(TASK).resend())
            .with(Route::new("POST", IMAGE_SUBMIT, IMAGE))
            .with_operation(Operation::new(asr::OP).quoted())
            .with(Route::new("POST", asr::PATH, asr::OP))
            .with_operation(Operation::new(transcription::OP).quoted())
            .with(
                Route::new("GET", "/api/v1/tasks/{task_id}", TASK)
                    .model(Field::None)
                    .free()
                    .affinity(Field::Path("task_id".into())),
            )
            // Where DashScope serves results (its OSS buckets).
            .fetching("*.aliyuncs.com")
            .with_base_url("https://dashscope.aliyuncs.com")
    }

    fn check_settings(settings: &str) -> Result<(), String> {
        let v: Value = match settings.trim() {
            "" => Value::Null,
            s => serde_json::from_str(s).map_err(|e| format!("not JSON: {e}"))?,
        };
        asr::check_settings(&v)
    }
}

const SUBMIT: &str = "/api/v1/services/aigc/video-generation/video-synthesis";
const IMAGE_SUBMIT: &str = "/api/v1/services/aigc/text2image/image-synthesis";
/// DashScope's own routes, as ops.
const IMAGE: &str = "dashscope.image";
const TASK: &str = "dashscope.task";
/// The fields of a native image request sent to DashScope (none changes the price but `n`).
const IMAGE_INPUT: &[&str] = &["prompt", "negative_prompt"];
const IMAGE_PARAMETERS: &[&str] = &["size", "n", "seed", "prompt_extend", "watermark"];
/// Request fields passed into `input` / `parameters` as given: none changes the price.
const INPUT: &[&str] = &["prompt", "negative_prompt"];
const PARAMETERS: &[&str] = &["seed", "prompt_extend", "watermark"];

pub struct DashScopeExchange {
    call: Call,
    /// Chat and embeddings: OpenAI's shape, on DashScope's compatible mode.
    compat: Option<CompatExchange<chat::Compatible>>,
    /// A native stream's usage so far.
    usage: Usage,
}

impl DashScopeExchange {
    /// DashScope's request body, the resolution's tier and the seconds it holds.
    fn submit(&self) -> Result<(Value, &'static str, u64), AdapterError> {
        let bad = |m: String| AdapterError::new(ErrorKind::BadRequest, m);
        let mut f = self.call.body.object("DashScope takes a first frame as a URL in 'image', not as a file")?;
        f.remove("model");
        let seconds = match f.remove("seconds").or_else(|| f.remove("duration")) {
            None => 5,
            Some(v) => match v.as_u64().or_else(|| v.as_str().and_then(|s| s.trim().parse().ok())) {
                Some(s @ 1..=15) => s,
                _ => return Err(bad(format!("a Wan video is 1 to 15 seconds, not {v}"))),
            },
        };
        let mut input = Map::new();
        let mut parameters = Map::new();
        parameters.insert("duration".into(), json!(seconds));
        let tier = match f.remove("size") {
            None => "1080p",
            Some(size) => {
                let s = size.as_str().unwrap_or_default();
                let dims = s.split_once('x').and_then(|(w, h)| Some((w.parse::<u64>().ok()?, h.parse::<u64>().ok()?)));
                let Some((w, h)) = dims else { return Err(bad(format!("size {size} is not WIDTHxHEIGHT"))) };
                parameters.insert("size".into(), Value::String(s.replace('x', "*")));
                tier(w * h).ok_or_else(|| bad(format!("size {s} is larger than 1080p")))?
            }
        };
        if let Some(image) = f.remove("image").and_then(|i| i.as_str().map(str::to_string)).filter(|i| !i.is_empty()) {
            input.insert("img_url".into(), Value::String(image));
        }
        for (k, v) in f {
            if INPUT.contains(&k.as_str()) {
                input.insert(k, v);
            } else if PARAMETERS.contains(&k.as_str()) {
                // A form's fields are strings: DashScope wants the seed a number, flags booleans.
                let typed = match v.as_str() {
                    Some(t) if k == "seed" => t
                        .trim()
                        .parse::<i64>()
                        .map(Value::from)
                        .map_err(|_| bad(format!("seed '{t}' is not a number")))?,
                    Some(t @ ("true" | "false")) => Value::Bool(t == "true"),
                    _ => v,
                };
                parameters.insert(k, typed);
            } else {
                return Err(bad(format!(
                    "'{k}' is not a field this gateway sends to DashScope (it may change the price)"
                )));
            }
        }
        let has_prompt = input.get("prompt").and_then(Value::as_str).is_some_and(|p| !p.trim().is_empty());
        if !has_prompt && !input.contains_key("img_url") {
            return Err(bad("a video needs a 'prompt' (or an 'image')".into()));
        }
        let model = self.call.vendor_model();
        Ok((json!({ "model": model, "input": input, "parameters": parameters }), tier, seconds))
    }

    /// A native image request rebuilt from the fields DashScope is sent (`IMAGE_INPUT`,
    /// `IMAGE_PARAMETERS`; any other is refused: it might change the price), the model the
    /// channel's name; and the images it holds.
    fn image(&self) -> Result<(Value, u32), AdapterError> {
        let bad = |m: String| AdapterError::new(ErrorKind::BadRequest, m);
        let (input, parameters) = native_sections(&self.call, IMAGE_INPUT, IMAGE_PARAMETERS)?;
        let n = match parameters.get("n") {
            None => 1,
            Some(n) => match n.as_u64() {
                Some(n @ 1..=4) => n as u32,
                _ => return Err(bad(format!("'parameters.n' is 1 to 4 images, not {n}"))),
            },
        };
        if input.get("prompt").and_then(Value::as_str).is_none_or(|p| p.trim().is_empty()) {
            return Err(bad("an image needs 'input.prompt'".into()));
        }
        let model = self.call.vendor_model();
        Ok((json!({ "model": model, "input": input, "parameters": parameters }), n))
    }

    /// The task's DashScope id, tier and kind, from its state (`{"id","tier"}`, with
    /// `"kind":"image"` for an image task, `"asr"` for a transcription; a video has none).
    fn task(&self) -> Option<(String, String, String)> {
        let state: Value = serde_json::from_str(self.call.task.as_deref()?).ok()?;
        let id = state["id"].as_str().filter(|id| safe_id(id))?;
        let kind = state["kind"].as_str().unwrap_or_default().to_string();
        Some((id.to_string(), state["tier"].as_str()?.to_string(), kind))
    }
}

/// A DashScope task id (letters, digits and dashes): safe in a path.
/// A JSON object's fields.
type Fields = Map<String, Value>;

/// A native request's `input` and `parameters` (each absent as empty), holding only the
/// fields named here, each written once: any other field, at the top or inside, is refused,
/// since it might change what DashScope does or charges.
pub(crate) fn native_sections(
    call: &Call,
    input_fields: &[&str],
    parameter_fields: &[&str],
) -> Result<(Fields, Fields), AdapterError> {
    let bad = |m: String| AdapterError::new(ErrorKind::BadRequest, m);
    let body = call.body.object("DashScope takes JSON")?;
    exact_fields(&body, &["model", "input", "parameters"])?;
    if let Some(k) = body.keys().find(|k| !["model", "input", "parameters"].contains(&k.as_str())) {
        return Err(bad(format!("'{k}' is not a field this gateway sends to DashScope")));
    }
    let section = |name: &str, allowed: &[&str]| -> Result<Fields, AdapterError> {
        let map = match body.get(name) {
            None => Map::new(),
            Some(Value::Object(m)) => m.clone(),
            Some(v) => return Err(bad(format!("'{name}' must be an object, not {v}"))),
        };
        exact_fields(&map, allowed)?;
        match map.keys().find(|k| !allowed.contains(&k.as_str())) {
            Some(k) => Err(bad(format!("'{name}.{k}' is not a field this gateway sends to DashScope"))),
            None => Ok(map),
        }
    };
    Ok((section("input", input_fields)?, section("parameters", parameter_fields)?))
}

fn safe_id(id: &str) -> bool {
    !id.is_empty() && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
}

/// DashScope's answer as it is (status, content type, body), its failure classified.
fn verbatim(response: UpstreamResponse, v: &Value) -> Reply {
    let error = (!(200..300).contains(&response.status)).then(|| error_of(response.status, v));
    Reply { error, ..Reply::verbatim(response) }
}

/// A resolution's tier by its area in pixels (DashScope's sizes of each resolution, all
/// ratios); `None`: above 1080p.
fn tier(area: u64) -> Option<&'static str> {
    match area {
        0..=410_000 => Some("480p"),
        410_001..=930_000 => Some("720p"),
        930_001..=2_100_000 => Some("1080p"),
        _ => None,
    }
}

fn seconds_of(tier: &str, s: u64) -> Usage {
    Usage { extra: vec![(tier.to_string(), s)], ..Usage::default() }
}

/// DashScope's error (`{"code","message"}`, at the top or in `output`), classified.
fn error_of(status: u16, v: &Value) -> AdapterError {
    let at = |k: &str| v[k].as_str().or_else(|| v["output"][k].as_str()).unwrap_or_default();
    let (code, message) = (at("code"), at("message"));
    let kind = match code {
        "InvalidApiKey" => ErrorKind::Unauthorized,
        "Arrearage" => ErrorKind::InsufficientBalance,
        c if c.starts_with("Throttling") => ErrorKind::RateLimited,
        c if c.starts_with("DataInspectionFailed") || c.contains("InappropriateContent") => ErrorKind::ContentFiltered,
        "InvalidParameter" => ErrorKind::BadRequest,
        _ => tollgate_plugin_sdk::errors::kind_for_status(status),
    };
    let message = if message.is_empty() { "DashScope refused the request" } else { message };
    let e = AdapterError::new(kind, format!("DashScope: {message}"));
    if code.is_empty() {
        e
    } else {
        e.with_code(code)
    }
}

impl Exchange for DashScopeExchange {
    fn new(call: Call) -> Self {
        let compat = matches!(call.op.as_str(), "chat" | "embeddings").then(|| CompatExchange::new(call.clone()));
        DashScopeExchange { call, compat, usage: Usage::default() }
    }

    fn decode(&mut self, input: StreamInput) -> Result<Vec<OutChunk>, AdapterError> {
        match (self.compat.as_mut(), input) {
            (Some(c), input) => c.decode(input),
            (None, StreamInput::Events(events)) => chat::native_decode(events, &mut self.usage),
            (None, _) => Err(AdapterError::new(ErrorKind::UpstreamFault, "expected SSE")),
        }
    }

    fn finish(&mut self, end: StreamEnd) -> Result<StreamTail, AdapterError> {
        match self.compat.as_mut() {
            Some(c) => c.finish(end),
            None => Ok(StreamTail::new(Vec::new(), chat::bounded(&self.call, std::mem::take(&mut self.usage)))),
        }
    }

    fn quote(&mut self) -> Result<Usage, AdapterError> {
        if matches!(self.call.op.as_str(), chat::GENERATION | chat::MULTIMODAL) {
            return chat::native_quote(&self.call);
        }
        if self.call.op == IMAGE {
            return self.image().map(|(_, n)| Usage { images: Some(n), ..Usage::default() });
        }
        if self.call.op == asr::OP {
            return asr::quote(&self.call);
        }
        if self.call.op == transcription::OP {
            return transcription::quote(&self.call);
        }
        self.submit().map(|(_, tier, s)| seconds_of(tier, s))
    }

    fn first(&mut self) -> Step {
        if let Some(c) = self.compat.as_mut() {
            return c.first();
        }
        match self.call.op.as_str() {
            chat::GENERATION | chat::MULTIMODAL => chat::native_first(&self.call),
            "video" => match self.submit() {
                Ok((body, ..)) => Step::Send(
                    UpstreamRequest::post_json(SUBMIT, body.to_string()).with_header("x-dashscope-async", "enable"),
                ),
                Err(e) => Step::Fail(e),
            },
            IMAGE => match self.image() {
                Ok((body, _)) => Step::Send(
                    UpstreamRequest::post_json(IMAGE_SUBMIT, body.to_string())
                        .with_header("x-dashscope-async", "enable"),
                ),
                Err(e) => Step::Fail(e),
            },
            asr::OP => asr::first(&self.call),
            transcription::OP => transcription::first(&self.call),
            TASK => {
                let id = self.call.context.path_params.iter().find(|(n, _)| n == "task_id").map(|(_, v)| v.as_str());
                match id.filter(|id| safe_id(id)) {
                    Some(id) => Step::Send(UpstreamRequest::get(format!("/api/v1/tasks/{id}"))),
                    None => Step::fail(ErrorKind::BadRequest, "not a DashScope task id"),
                }
            }
            "task.poll" => match self.task() {
                Some((id, ..)) => Step::Send(UpstreamRequest::get(format!("/api/v1/tasks/{id}"))),
                None => Step::fail(ErrorKind::BadRequest, "the task's state is not a DashScope task id"),
            },
            "task.cancel" => match self.task() {
                Some((id, ..)) => {
                    Step::Send(UpstreamRequest::post_json(format!("/api/v1/tasks/{id}/cancel"), String::new()))
                }
                None => Step::fail(ErrorKind::BadRequest, "the task's state is not a DashScope task id"),
            },
            op => Step::fail(ErrorKind::Unsupported, format!("dashscope does not serve '{op}'")),
        }
    }

    fn next(&mut self, response: UpstreamResponse) -> Step {
        if let Some(c) = self.compat.as_mut() {
            return c.next(response);
        }
        if matches!(self.call.op.as_str(), chat::GENERATION | chat::MULTIMODAL) {
            return chat::native_next(&self.call, response);
        }
        if self.call.op == transcription::OP {
            return transcription::next(&self.call, response);
        }
        let v: Value = serde_json::from_slice(&response.body).unwrap_or(Value::Null);
        let ok = (200..300).contains(&response.status);
        match self.call.op.as_str() {
            TASK => return Step::Reply(verbatim(response, &v)),
            IMAGE | asr::OP if !ok => return Step::Reply(verbatim(response, &v)),
            IMAGE | asr::OP => {
                let Some(id) = v.pointer("/output/task_id").and_then(Value::as_str).filter(|id| safe_id(id)) else {
                    return Step::fail(ErrorKind::UpstreamFault, "DashScope's answer to the submit has no task_id");
                };
                let kind = if self.call.op == IMAGE { "image" } else { "asr" };
                let state = json!({ "id": id, "tier": "", "kind": kind }).to_string();
                let reply = Reply { objects: vec![id.to_string()], ..verbatim(response, &v) };
                return Step::Submitted(TaskSubmitted {
                    state,
                    reply: Some(reply),
                    usage: Usage::default(),
                    poll_after_ms: Some(3_000),
                });
            }
            _ if !ok => return Step::Fail(error_of(response.status, &v)),
            _ => {}
        }
        match self.call.op.as_str() {
            "video" => {
                match (v.pointer("/output/task_id").and_then(Value::as_str).filter(|id| !id.is_empty()), self.submit())
                {
                    (Some(id), Ok((_, tier, _))) => Step::Submitted(TaskSubmitted {
                        // What a poll needs: where to ask, and the tier to report.
                        state: json!({ "id": id, "tier": tier }).to_string(),
                        reply: None,
                        usage: Usage::default(),
                        poll_after_ms: Some(5_000),
                    }),
                    _ => Step::fail(ErrorKind::UpstreamFault, "DashScope's answer to the submit has no task_id"),
                }
            }
            "task.cancel" => Step::Reply(Reply::json("{}".into(), Usage::default())),
            _ => match self.task() {
                Some((_, _, kind)) if kind == "image" => images_polled(&v),
                Some((_, _, kind)) if kind == "asr" => asr::polled(&v),
                task => polled(&v, &task.map(|(_, tier, _)| tier).unwrap_or_default()),
            },
        }
    }
}

fn polled(v: &Value, tier: &str) -> Step {
    let state = match v.pointer("/output/task_status").and_then(Value::as_str) {
        Some(s @ ("PENDING" | "RUNNING")) => TaskState::Pending(TaskProgress {
            percent: None,
            message: Some(s.to_ascii_lowercase()),
            state: None,
            poll_after_ms: Some(if s == "PENDING" { 5_000 } else { 3_000 }),
            reply: None,
        }),
        Some("SUCCEEDED") => {
            let Some(url) = v.pointer("/output/video_url").and_then(Value::as_str).filter(|u| !u.is_empty()) else {
                return Step::fail(ErrorKind::UpstreamFault, "DashScope's finished task has no video_url");
            };
            let usage = &v["usage"];
            let reported = usage["duration"].as_f64().or_else(|| usage["video_duration"].as_f64());
            TaskState::Succeeded(TaskDone {
                reply: None,
                outputs: vec![Media { url: url.to_string(), content_type: Some("video/mp4".into()) }],
                // A started second is billed whole; none reported: the host bills the quote.
                usage: match reported.filter(|s| s.is_finite() && *s >= 0.0) {
                    Some(s) if !tier.is_empty() => seconds_of(tier, s.ceil() as u64),
                    _ => Usage::default(),
                },
            })
        }
        Some("FAILED" | "CANCELED" | "UNKNOWN") => TaskState::Failed(error_of(400, v)),
        _ => return Step::fail(ErrorKind::UpstreamFault, "DashScope's task status is unreadable"),
    };
    Step::Task(state)
}

/// An image task's state: its results' URLs archived, charged the images DashScope counted.
fn images_polled(v: &Value) -> Step {
    match v.pointer("/output/task_status").and_then(Value::as_str) {
        Some("SUCCEEDED") => {
            let outputs: Vec<Media> = v
                .pointer("/output/results")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(|r| r["url"].as_str().filter(|u| !u.is_empty()))
                .map(|url| Media { url: url.to_string(), content_type: None })
                .collect();
            let counted = v.pointer("/usage/image_count").and_then(Value::as_u64).map(|n| n.min(64) as u32);
            if outputs.is_empty() && counted.is_none_or(|n| n > 0) {
                return Step::fail(ErrorKind::UpstreamFault, "DashScope's finished task has no image");
            }
            // What was counted or delivered, whichever is more (never a delivered image free).
            let images = counted.unwrap_or(0).max(outputs.len() as u32);
            let usage = Usage { images: Some(images), ..Usage::default() };
            Step::Task(TaskState::Succeeded(TaskDone { reply: None, outputs, usage }))
        }
        _ => polled(v, ""),
    }
}

export_plugin!(DashScope);

#[cfg(test)]
mod tests;
