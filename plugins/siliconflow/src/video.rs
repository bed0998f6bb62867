//! SiliconFlow's video generation as asynchronous tasks: op `video` (OpenAI's Videos API)
//! submits `POST /v1/video/submit` (`{model, prompt, negative_prompt, image_size, image,
//! seed}`, answered `{"requestId"}`); op `task.poll` asks `POST /v1/video/status`
//! (`{"requestId"}`; note POST) until `Succeed` (its `results.videos[].url`, valid minutes,
//! is archived by the gateway) or `Failed` (its `reason`).
//!
//! SiliconFlow renders a video of a fixed length at one of three sizes, and bills per video:
//! the quote and a finished job's usage name one `video`. A `size` it does not render, or a
//! `seconds` other than 5, is refused before anything is sent.
//!
//! SiliconFlow's own routes are served too, for its clients: `POST /v1/video/submit`
//! (op `siliconflow.video_submit`) checks and sends the same request and answers SiliconFlow's
//! own `{"requestId"}`, the job becoming a task all the same; `POST /v1/video/status`
//! (`siliconflow.video_status`, free) runs on the key that made the request, for its owner
//! only, and answers SiliconFlow's body as it is. Errors come back as SiliconFlow wrote them.

use serde_json::{json, Value};
use tollgate_plugin_sdk::openai_compat::Vendor;
use tollgate_plugin_sdk::{
    exact_fields, AdapterError, Call, ErrorKind, Field, Manifest, Media, Operation, Reply, Route, Step, TaskDone,
    TaskProgress, TaskState, TaskSubmitted, UpstreamRequest, UpstreamResponse, Usage,
};

/// SiliconFlow's own video routes, as ops.
pub const NATIVE_SUBMIT: &str = "siliconflow.video_submit";
pub const NATIVE_STATUS: &str = "siliconflow.video_status";
const SUBMIT_PATH: &str = "/v1/video/submit";
const STATUS_PATH: &str = "/v1/video/status";

/// The video ops and SiliconFlow's own routes: one list, for the manifest and the dispatch.
pub fn declare(manifest: Manifest) -> Manifest {
    manifest
        .with_operation(Operation::new("video").quoted())
        .with_operation(Operation::new("task.poll").resend())
        .with_operation(Operation::new(NATIVE_SUBMIT).quoted())
        .with_operation(Operation::new(NATIVE_STATUS).resend())
        .with(Route::new("POST", SUBMIT_PATH, NATIVE_SUBMIT))
        .with(
            Route::new("POST", STATUS_PATH, NATIVE_STATUS)
                .model(Field::None)
                .free()
                .affinity(Field::Body("requestId".into())),
        )
}

/// Whether `op` is a video op.
pub fn handles(op: &str) -> bool {
    ["video", "task.poll", NATIVE_SUBMIT, NATIVE_STATUS].contains(&op)
}

/// The sizes SiliconFlow renders.
const SIZES: &[&str] = &["1280x720", "720x1280", "960x960"];
/// Request fields passed as given (none changes the price).
const PASSED: &[&str] = &["prompt", "negative_prompt", "image", "seed"];

fn one_video() -> Usage {
    Usage { extra: vec![("video".into(), 1)], ..Usage::default() }
}

pub struct VideoExchange {
    call: Call,
}

impl VideoExchange {
    pub fn new(call: Call) -> Self {
        VideoExchange { call }
    }

    fn submit_body(&self) -> Result<Value, AdapterError> {
        let bad = |m: String| AdapterError::new(ErrorKind::BadRequest, m);
        let mut given = self
            .call
            .body
            .object("SiliconFlow takes a reference image as a URL or data URI in 'image', not as a file")?;
        match given.remove("seconds").map(|s| s.as_str().map_or_else(|| s.to_string(), str::to_string)) {
            None => {}
            Some(s) if s.trim() == "5" => {}
            Some(s) => return Err(bad(format!("SiliconFlow renders 5-second videos; '{s}' seconds were asked for"))),
        }
        let size = match given.remove("size").or_else(|| given.remove("image_size")) {
            None => "1280x720".to_string(),
            Some(Value::String(s)) if SIZES.contains(&s.as_str()) => s,
            Some(s) => return Err(bad(format!("SiliconFlow renders videos of {}; not {s}", SIZES.join(", ")))),
        };
        given.remove("model");
        if let Some(k) = given.keys().find(|k| !PASSED.contains(&k.as_str())) {
            return Err(bad(format!("'{k}' is not a field this gateway sends to SiliconFlow")));
        }
        let has = |k: &str| given.get(k).and_then(Value::as_str).is_some_and(|v| !v.trim().is_empty());
        if !has("prompt") {
            return Err(bad("a video needs a 'prompt'".into()));
        }
        let model = self.call.vendor_model();
        given.insert("model".into(), Value::String(model.to_string()));
        given.insert("image_size".into(), Value::String(size));
        if let Some(seed) = given.get("seed").and_then(Value::as_str).and_then(|s| s.parse::<i64>().ok()) {
            given.insert("seed".into(), json!(seed));
        }
        Ok(Value::Object(given))
    }

    pub fn quote(&mut self) -> Result<Usage, AdapterError> {
        self.submit_body().map(|_| one_video())
    }

    pub fn first(&mut self) -> Step {
        match self.call.op.as_str() {
            "video" | NATIVE_SUBMIT => match self.submit_body() {
                Ok(body) => Step::Send(UpstreamRequest::post_json(SUBMIT_PATH, body.to_string())),
                Err(e) => Step::Fail(e),
            },
            NATIVE_STATUS => {
                // Only the request the host found the owner and key of goes to SiliconFlow.
                let id = self.call.body.object("a status request is JSON").and_then(|body| {
                    exact_fields(&body, &["requestId"])?;
                    match body.get("requestId") {
                        Some(Value::String(id)) if !id.is_empty() => Ok(id.clone()),
                        _ => Err(AdapterError::new(ErrorKind::BadRequest, "'requestId' is required")),
                    }
                });
                match id {
                    Ok(id) => {
                        Step::Send(UpstreamRequest::post_json(STATUS_PATH, json!({ "requestId": id }).to_string()))
                    }
                    Err(e) => Step::Fail(e),
                }
            }
            _ => match self.call.task.as_deref().filter(|id| !id.is_empty()) {
                Some(id) => Step::Send(UpstreamRequest::post_json(STATUS_PATH, json!({ "requestId": id }).to_string())),
                None => Step::fail(ErrorKind::BadRequest, "the task has no SiliconFlow request id"),
            },
        }
    }

    pub fn next(&mut self, response: UpstreamResponse) -> Step {
        let native = matches!(self.call.op.as_str(), NATIVE_SUBMIT | NATIVE_STATUS);
        if !(200..300).contains(&response.status) {
            let error = super::SiliconFlow::classify(&response);
            return match native {
                true => Step::Reply(Reply { error: Some(error), ..Reply::verbatim(response) }),
                false => Step::Fail(error),
            };
        }
        if self.call.op == NATIVE_STATUS {
            return Step::Reply(Reply::verbatim(response));
        }
        let v: Value = serde_json::from_slice(&response.body).unwrap_or(Value::Null);
        if matches!(self.call.op.as_str(), "video" | NATIVE_SUBMIT) {
            let Some(id) = v["requestId"].as_str().filter(|id| !id.is_empty()) else {
                return Step::fail(ErrorKind::UpstreamFault, "SiliconFlow's answer to the submit has no requestId");
            };
            // SiliconFlow's own answer for its clients, naming the request they will query.
            let reply = native.then(|| Reply { objects: vec![id.to_string()], ..Reply::verbatim(response.clone()) });
            return Step::Submitted(TaskSubmitted {
                state: id.to_string(),
                reply,
                usage: Usage::default(),
                poll_after_ms: Some(5_000),
            });
        }
        let state = match v["status"].as_str() {
            Some(s @ ("InQueue" | "InProgress")) => TaskState::Pending(TaskProgress {
                percent: None,
                message: Some(match v["position"].as_u64() {
                    Some(p) if p > 0 => format!("{s} (position {p})"),
                    _ => s.to_string(),
                }),
                state: None,
                poll_after_ms: Some(5_000),
                reply: None,
            }),
            Some("Succeed") => {
                let outputs: Vec<Media> = v
                    .pointer("/results/videos")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                    .filter_map(|x| x["url"].as_str())
                    .map(|url| Media { url: url.to_string(), content_type: Some("video/mp4".into()) })
                    .collect();
                if outputs.is_empty() {
                    return Step::fail(ErrorKind::UpstreamFault, "SiliconFlow's finished task has no video");
                }
                TaskState::Succeeded(TaskDone { reply: None, outputs, usage: one_video() })
            }
            Some("Failed") => {
                let reason = v["reason"].as_str().filter(|r| !r.is_empty()).unwrap_or("the video failed");
                let lower = reason.to_ascii_lowercase();
                let filtered = ["sensitive", "risk", "safety", "moderation"].iter().any(|w| lower.contains(w));
                let kind = if filtered { ErrorKind::ContentFiltered } else { ErrorKind::UpstreamFault };
                TaskState::Failed(AdapterError::new(kind, format!("SiliconFlow: {reason}")))
            }
            _ => return Step::fail(ErrorKind::UpstreamFault, "SiliconFlow's task status is unreadable"),
        };
        Step::Task(state)
    }
}
