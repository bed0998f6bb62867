//! The `ark` plugin: Volcengine Ark (`vendor-apis.md` §3.1): Doubao chat and Seedream images
//! (OpenAI-shaped, `openai.rs`), and Seedance video generation as asynchronous tasks.
//!
//! - op `video` (OpenAI's Videos API): `POST /contents/generations/tasks` with the prompt as a
//!   text item and an `image` URL as the first frame; OpenAI's `size` becomes `resolution`
//!   and `ratio`, `seconds` `duration`. Fields that change the price (`generate_audio`,
//!   `service_tier`, ...) and parameters written into the prompt (`--dur 12`) are refused,
//!   not sent at the quoted price.
//! - op `task.poll`: `GET /contents/generations/tasks/{id}` until `succeeded` (its
//!   `content.video_url` is archived) or `failed` / `expired` / `cancelled`.
//! - op `task.cancel`: `DELETE /contents/generations/tasks/{id}` (Ark cancels a queued task).
//!
//! Ark bills a video by its `usage.completion_tokens` (width × height × frames / 1024). The
//! quote is their upper bound for the resolution and duration asked (the widest ratio, sides
//! rounded up to 16, 24 frames a second plus one), reported as output tokens; a finished task
//! reports what Ark counted. Auth is the channel's Ark API key as a bearer token.

mod openai;

use serde_json::{json, Value};
use tollgate_plugin_sdk::openai_compat::CompatExchange;
use tollgate_plugin_sdk::{
    export_plugin, AdapterError, Call, ErrorKind, Exchange, Manifest, Media, Operation, OutChunk, Reply, Step,
    StreamEnd, StreamInput, StreamTail, TaskDone, TaskProgress, TaskState, TaskSubmitted, UpstreamRequest,
    UpstreamResponse, Usage,
};

pub struct Ark;

impl tollgate_plugin_sdk::Plugin for Ark {
    type Exchange = ArkExchange;

    fn describe() -> Manifest {
        Manifest::new("ark", env!("CARGO_PKG_VERSION"), "Volcengine Ark", &["chat"])
            .with_operation(Operation::new("images").quoted())
            .with_operation(Operation::new("video").quoted())
            .with_operation(Operation::new("task.poll").resend())
            .with_operation(Operation::new("task.cancel"))
            // Where Ark serves generated videos.
            .fetching("*.volces.com")
            .with_base_url("https://ark.cn-beijing.volces.com/api/v3")
    }
}

const TASKS: &str = "/contents/generations/tasks";
/// Seedance's frame rate.
const FPS: u64 = 24;
/// Request fields passed as given: none changes the price.
const PASSED: &[&str] = &["prompt", "image", "seed", "camera_fixed", "watermark", "return_last_frame"];

pub struct ArkExchange {
    call: Call,
    /// Chat and images: OpenAI's shape, on Ark's paths.
    compat: Option<CompatExchange<openai::ArkCompat>>,
}

/// A resolution's short side, from Ark's name (`720p`) or OpenAI's size (`1280x720`), and
/// the ratio a size names.
fn resolution(size: &str) -> Result<(u64, Option<&'static str>), AdapterError> {
    let bad =
        || AdapterError::new(ErrorKind::BadRequest, format!("size '{size}' is not 480p, 720p, 1080p or WIDTHxHEIGHT"));
    if let Some(p) = size.strip_suffix('p') {
        return match p.parse::<u64>() {
            Ok(s @ (480 | 720 | 1080)) => Ok((s, None)),
            _ => Err(bad()),
        };
    }
    let (w, h) = size.split_once('x').ok_or_else(bad)?;
    let (w, h): (u64, u64) = (w.parse().map_err(|_| bad())?, h.parse().map_err(|_| bad())?);
    let short = w.min(h);
    if ![480, 720, 1080].contains(&short) {
        return Err(bad());
    }
    let ratio = match (w * 9 == h * 16, h * 9 == w * 16, w == h, w * 3 == h * 4, h * 3 == w * 4) {
        (true, ..) => "16:9",
        (_, true, ..) => "9:16",
        (_, _, true, ..) => "1:1",
        (.., true, _) => "4:3",
        (.., true) => "3:4",
        _ => return Err(bad()),
    };
    Ok((short, Some(ratio)))
}

/// A Seedance parameter written into a prompt (`--dur`, `--rs`, ...: a word of `--` and a
/// letter), if any.
fn prompt_flag(prompt: &str) -> Option<&str> {
    prompt
        .split_whitespace()
        .find(|w| w.strip_prefix("--").is_some_and(|r| r.starts_with(|c: char| c.is_ascii_alphabetic())))
}

/// The most tokens a video of this short side and duration can count: the widest ratio
/// (21:9), sides rounded up to 16, `FPS` frames a second plus one.
pub fn token_bound(short: u64, seconds: u64) -> u64 {
    let up16 = |n: u64| n.div_ceil(16) * 16;
    let long = up16((short * 21).div_ceil(9));
    (long * up16(short) * (FPS * seconds + 1)).div_ceil(1024)
}

impl ArkExchange {
    /// Ark's request body and the quote's bound (short side, seconds).
    fn submit(&self) -> Result<(Value, u64), AdapterError> {
        let bad = |m: String| AdapterError::new(ErrorKind::BadRequest, m);
        let mut f = self.call.body.object("Ark takes a first frame as a URL in 'image', not as a file")?;
        f.remove("model");
        let seconds = match f.remove("seconds").or_else(|| f.remove("duration")) {
            None => 5,
            Some(v) => match v.as_u64().or_else(|| v.as_str().and_then(|s| s.trim().parse().ok())) {
                Some(s @ 2..=12) => s,
                _ => return Err(bad(format!("Seedance renders 2 to 12 seconds, not {v}"))),
            },
        };
        let size = f.remove("size").or_else(|| f.remove("resolution"));
        let (short, ratio) = match size.as_ref().and_then(Value::as_str) {
            None => (720, None),
            Some(s) => resolution(s)?,
        };
        let ratio = match (f.remove("ratio"), ratio) {
            (Some(Value::String(r)), _) => Some(r),
            (_, r) => r.map(str::to_string),
        };
        if let Some(k) = f.keys().find(|k| !PASSED.contains(&k.as_str())) {
            return Err(bad(format!("'{k}' is not a field this gateway sends to Ark (it may change the price)")));
        }
        let prompt = f.remove("prompt").and_then(|p| p.as_str().map(str::to_string)).filter(|p| !p.trim().is_empty());
        // Seedance also reads parameters written into the prompt (`--dur 12`, `--rs 1080p`):
        // they would override what was quoted.
        if let Some(flag) = prompt.as_deref().and_then(prompt_flag) {
            return Err(bad(format!(
                "the prompt sets '{flag}'; give the video's parameters as fields (seconds, size), not in the text"
            )));
        }
        let image = f.remove("image").and_then(|p| p.as_str().map(str::to_string)).filter(|p| !p.is_empty());
        if prompt.is_none() && image.is_none() {
            return Err(bad("a video needs a 'prompt' (or an 'image')".into()));
        }
        let mut content = Vec::new();
        if let Some(p) = prompt {
            content.push(json!({ "type": "text", "text": p }));
        }
        if let Some(i) = image {
            content.push(json!({ "type": "image_url", "image_url": { "url": i }, "role": "first_frame" }));
        }
        let mut body = json!({ "model": self.call.vendor_model(), "content": content, "resolution": format!("{short}p"), "duration": seconds });
        if let Some(r) = ratio {
            body["ratio"] = Value::String(r);
        }
        for (k, v) in f {
            body[k] = v;
        }
        Ok((body, token_bound(short, seconds)))
    }

    fn task_id(&self) -> Option<&str> {
        self.call
            .task
            .as_deref()
            .filter(|id| !id.is_empty() && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'))
    }
}

/// Ark's error (`{"error":{"code","message"}}`), classified by status and code.
fn error_of(status: u16, v: &Value) -> AdapterError {
    let code = v.pointer("/error/code").and_then(Value::as_str).unwrap_or_default();
    let message = v.pointer("/error/message").and_then(Value::as_str).unwrap_or("Ark refused the request");
    let kind = match (status, code) {
        (_, c) if c.contains("RiskDetection") || c.contains("SensitiveContent") => ErrorKind::ContentFiltered,
        (_, "AccountOverdueError") => ErrorKind::InsufficientBalance,
        (_, c) if c.starts_with("RateLimitExceeded") => ErrorKind::RateLimited,
        (s, _) => tollgate_plugin_sdk::errors::kind_for_status(s),
    };
    let e = AdapterError::new(kind, format!("Ark: {message}"));
    if code.is_empty() {
        e
    } else {
        e.with_code(code)
    }
}

impl Exchange for ArkExchange {
    fn new(call: Call) -> Self {
        let compat = matches!(call.op.as_str(), "chat" | "images").then(|| CompatExchange::new(call.clone()));
        ArkExchange { call, compat }
    }

    fn quote(&mut self) -> Result<Usage, AdapterError> {
        if self.call.op == "images" {
            return openai::images_quote(&self.call.body);
        }
        let (_, tokens) = self.submit()?;
        Ok(Usage { output_tokens: Some(tokens), ..Usage::default() })
    }

    fn first(&mut self) -> Step {
        if let Some(c) = self.compat.as_mut() {
            return c.first();
        }
        match self.call.op.as_str() {
            "video" => match self.submit() {
                Ok((body, _)) => Step::Send(UpstreamRequest::post_json(TASKS, body.to_string())),
                Err(e) => Step::Fail(e),
            },
            "task.poll" | "task.cancel" => match self.task_id() {
                Some(id) => {
                    let mut req = UpstreamRequest::get(format!("{TASKS}/{id}"));
                    if self.call.op == "task.cancel" {
                        req.method = "DELETE".into();
                    }
                    Step::Send(req)
                }
                None => Step::fail(ErrorKind::BadRequest, "the task's state is not an Ark task id"),
            },
            op => Step::fail(ErrorKind::Unsupported, format!("ark does not serve '{op}'")),
        }
    }

    fn decode(&mut self, input: StreamInput) -> Result<Vec<OutChunk>, AdapterError> {
        match self.compat.as_mut() {
            Some(c) => c.decode(input),
            None => Err(AdapterError::new(ErrorKind::Unsupported, "only chat streams")),
        }
    }

    fn finish(&mut self, end: StreamEnd) -> Result<StreamTail, AdapterError> {
        match self.compat.as_mut() {
            Some(c) => c.finish(end),
            None => Err(AdapterError::new(ErrorKind::Unsupported, "only chat streams")),
        }
    }

    fn next(&mut self, response: UpstreamResponse) -> Step {
        if let Some(c) = self.compat.as_mut() {
            let generated = (self.call.op == "images" && (200..300).contains(&response.status))
                .then(|| serde_json::from_slice::<Value>(&response.body).ok())
                .flatten()
                .and_then(|v| v.pointer("/usage/generated_images").and_then(Value::as_u64));
            return match (c.next(response), generated) {
                (Step::Reply(mut r), Some(n)) => {
                    r.usage.images = Some(n.min(u64::from(u32::MAX)) as u32);
                    Step::Reply(r)
                }
                (step, _) => step,
            };
        }
        let v: Value = serde_json::from_slice(&response.body).unwrap_or(Value::Null);
        if !(200..300).contains(&response.status) {
            return Step::Fail(error_of(response.status, &v));
        }
        match self.call.op.as_str() {
            "video" => match v["id"].as_str().filter(|id| !id.is_empty()) {
                Some(id) => Step::Submitted(TaskSubmitted {
                    state: id.to_string(),
                    reply: None,
                    usage: Usage::default(),
                    poll_after_ms: Some(5_000),
                }),
                None => Step::fail(ErrorKind::UpstreamFault, "Ark's answer to the submit has no id"),
            },
            "task.cancel" => Step::Reply(Reply::json("{}".into(), Usage::default())),
            _ => polled(&v),
        }
    }
}

fn polled(v: &Value) -> Step {
    let state = match v["status"].as_str() {
        Some(s @ ("queued" | "running")) => TaskState::Pending(TaskProgress {
            percent: None,
            message: Some(s.to_string()),
            state: None,
            poll_after_ms: Some(if s == "queued" { 5_000 } else { 3_000 }),
            reply: None,
        }),
        Some("succeeded") => {
            let Some(url) = v.pointer("/content/video_url").and_then(Value::as_str).filter(|u| !u.is_empty()) else {
                return Step::fail(ErrorKind::UpstreamFault, "Ark's finished task has no video_url");
            };
            TaskState::Succeeded(TaskDone {
                reply: None,
                outputs: vec![Media { url: url.to_string(), content_type: Some("video/mp4".into()) }],
                usage: Usage {
                    output_tokens: v.pointer("/usage/completion_tokens").and_then(Value::as_u64),
                    ..Usage::default()
                },
            })
        }
        Some(s @ ("failed" | "expired" | "cancelled")) => {
            let e = error_of(400, v);
            let message = match s {
                "failed" => e.message,
                other => format!("Ark: the task was {other}"),
            };
            TaskState::Failed(AdapterError { message, ..e })
        }
        _ => return Step::fail(ErrorKind::UpstreamFault, "Ark's task status is unreadable"),
    };
    Step::Task(state)
}

export_plugin!(Ark);

#[cfg(test)]
mod tests;
