//! The `mindvideo` plugin: MindVideo's video generation as asynchronous tasks
//! (`compat-protocols.md` §3.2), which the MindVideo proxy's clients reach through the
//! gateway's image, chat, task and Videos routes.
//!
//! - op `video`: `POST /creations` with the model's `bot_id` (from the channel's settings),
//!   the prompt, `size` and `seconds`, answered `{"code":0,"data":{"id"}}`;
//! - op `task.poll`: `GET /creations/task_progress?ids[]=<id>` until a `result_url` exists
//!   with progress 100 or status `completed` (the gateway archives it), or status `failed`
//!   (its `task_remark` is the reason).
//!
//! Every request carries the account's token (the channel's keys: the pool rotates
//! accounts, and an account out of credits leaves it), `i-lang`, `i-version` and `i-sign`:
//! compact JSON `{"nonce","timestamp","sign"}` with `sign` the MD5 of
//! `nonce=<nonce>&timestamp=<ms>&app_key=<app key>`. Settings:
//! `{ app_key = "…", bots = { "sora-2-free" = 153 }, is_public = true }`. A job is billed by
//! its tier, `{seconds}s` (`15s` by default), with its seconds.

use md5::Digest;
use serde_json::{json, Value};
use tollgate_plugin_sdk::{
    export_plugin, AdapterError, Call, ErrorKind, Exchange, Manifest, Media, Operation, Step, TaskDone, TaskProgress,
    TaskState, TaskSubmitted, UpstreamRequest, UpstreamResponse, Usage,
};

pub struct MindVideo;

impl tollgate_plugin_sdk::Plugin for MindVideo {
    type Exchange = MindVideoExchange;

    fn describe() -> Manifest {
        Manifest::new("mindvideo", env!("CARGO_PKG_VERSION"), "MindVideo", &[])
            .with_operation(Operation::new("video").quoted())
            .with_operation(Operation::new("task.poll").resend())
            .fetching("*.mindvideo.ai")
            .with_base_url("https://api.mindvideo.ai/api/v2")
    }

    fn check_settings(settings: &str) -> Result<(), String> {
        let v: Value = serde_json::from_str(settings).map_err(|e| format!("not JSON: {e}"))?;
        if v["app_key"].as_str().is_none_or(|k| k.is_empty()) {
            return Err("settings need the app_key that signs requests (i-sign)".into());
        }
        let Some(bots) = v["bots"].as_object().filter(|b| !b.is_empty()) else {
            return Err("settings need bots = { \"<model>\" = <bot id> }".into());
        };
        if let Some((model, _)) = bots.iter().find(|(_, id)| !id.is_u64()) {
            return Err(format!("bots.\"{model}\" must be MindVideo's numeric bot id"));
        }
        if v.get("is_public").is_some_and(|p| !p.is_boolean()) {
            return Err("is_public must be true or false".into());
        }
        Ok(())
    }
}

/// The sizes MindVideo's video bots render.
const SIZES: &[&str] = &["720x1280", "1280x720"];
/// The seconds a video is when the request names none.
const DEFAULT_SECONDS: u64 = 15;

/// `i-sign`'s value for `nonce` and `timestamp` (ms), signed with `app_key`.
pub fn i_sign(nonce: &str, timestamp: u64, app_key: &str) -> String {
    let sign = hex::encode(md5::Md5::digest(format!("nonce={nonce}&timestamp={timestamp}&app_key={app_key}")));
    json!({ "nonce": nonce, "timestamp": timestamp, "sign": sign }).to_string()
}

pub struct MindVideoExchange {
    call: Call,
}

impl MindVideoExchange {
    fn settings(&self) -> Value {
        serde_json::from_str(&self.call.config).unwrap_or(Value::Null)
    }

    /// A request with MindVideo's headers; the host adds the account's token.
    fn signed(&self, mut req: UpstreamRequest) -> Result<UpstreamRequest, AdapterError> {
        let settings = self.settings();
        let Some(app_key) = settings["app_key"].as_str() else {
            return Err(AdapterError::new(ErrorKind::BadRequest, "the channel's settings have no app_key"));
        };
        let nonce: String = tollgate_plugin_sdk::nonce().chars().filter(char::is_ascii_hexdigit).take(16).collect();
        let nonce = format!("{nonce:0>16}");
        req = req
            .with_header("i-lang", "en")
            .with_header("i-version", "1.0.0")
            .with_header("i-sign", i_sign(&nonce, tollgate_plugin_sdk::now_ms(), app_key));
        Ok(req)
    }

    fn seconds(&self) -> Result<u64, AdapterError> {
        match self.call.body.field("seconds") {
            None => Ok(DEFAULT_SECONDS),
            Some(s) => match s.trim().parse::<u64>() {
                Ok(n) if (1..=60).contains(&n) => Ok(n),
                _ => Err(AdapterError::new(ErrorKind::BadRequest, format!("'seconds' must be 1 to 60, not '{s}'"))),
            },
        }
    }

    fn submit_body(&self) -> Result<Value, AdapterError> {
        let bad = |m: String| AdapterError::new(ErrorKind::BadRequest, m);
        let model = self.call.vendor_model();
        let Some(bot) = self.settings()["bots"][model].as_u64() else {
            return Err(bad(format!("model '{model}' has no MindVideo bot (the channel's settings.bots)")));
        };
        let prompt = self.call.body.field("prompt").filter(|p| !p.trim().is_empty());
        let Some(prompt) = prompt else { return Err(bad("a video needs a 'prompt'".into())) };
        let size = self.call.body.field("size").unwrap_or_else(|| "720x1280".into());
        if !SIZES.contains(&size.as_str()) {
            return Err(bad(format!("MindVideo renders {}; not '{size}'", SIZES.join(" or "))));
        }
        // Public by default, as MindVideo's own clients send it; `settings.is_public = false`
        // keeps the videos out of its gallery where the account allows it.
        let public = self.settings()["is_public"].as_bool().unwrap_or(true);
        Ok(json!({ "type": 1, "bot_id": bot,
            "options": { "prompt": prompt, "size": size, "seconds": self.seconds()?, "history_images": [] },
            "is_public": public, "copy_protection": false }))
    }

    /// A video's tier, `{seconds}s`: MindVideo's bots cost more for longer videos.
    fn usage(seconds: u64) -> Usage {
        Usage { milliseconds: Some(seconds * 1000), extra: vec![(format!("{seconds}s"), 1)], ..Usage::default() }
    }
}

/// MindVideo's refusal: its HTTP status, or `code != 0` with a `message`.
fn error_of(status: u16, v: &Value) -> Option<AdapterError> {
    if (200..300).contains(&status) && v["code"].as_i64() == Some(0) {
        return None;
    }
    let message = v["message"].as_str().unwrap_or("MindVideo refused the request");
    let lower = message.to_ascii_lowercase();
    let kind = match status {
        200..=299 if ["credit", "balance", "quota", "points"].iter().any(|w| lower.contains(w)) => {
            ErrorKind::InsufficientBalance
        }
        200..=299 if lower.contains("login") || lower.contains("token") => ErrorKind::Unauthorized,
        200..=299 if v["code"].is_i64() => ErrorKind::BadRequest,
        200..=299 => ErrorKind::UpstreamFault,
        s => tollgate_plugin_sdk::errors::kind_for_status(s),
    };
    let mut e = AdapterError::new(kind, format!("MindVideo: {message}"));
    if let Some(c) = v["code"].as_i64() {
        e = e.with_code(c.to_string());
    }
    Some(e)
}

impl Exchange for MindVideoExchange {
    fn new(call: Call) -> Self {
        MindVideoExchange { call }
    }

    fn quote(&mut self) -> Result<Usage, AdapterError> {
        self.submit_body()?;
        Ok(Self::usage(self.seconds()?))
    }

    fn first(&mut self) -> Step {
        let req = match self.call.op.as_str() {
            "video" => self.submit_body().map(|b| UpstreamRequest::post_json("/creations", b.to_string())),
            "task.poll" => {
                let state: Value =
                    serde_json::from_str(self.call.task.as_deref().unwrap_or_default()).unwrap_or_default();
                match state["id"].as_u64() {
                    Some(id) => Ok(UpstreamRequest::get(format!("/creations/task_progress?ids[]={id}"))),
                    None => Err(AdapterError::new(ErrorKind::BadRequest, "the task's state is not MindVideo's")),
                }
            }
            op => Err(AdapterError::new(ErrorKind::Unsupported, format!("mindvideo does not serve '{op}'"))),
        };
        match req.and_then(|r| self.signed(r)) {
            Ok(r) => Step::Send(r),
            Err(e) => Step::Fail(e),
        }
    }

    fn next(&mut self, response: UpstreamResponse) -> Step {
        let v: Value = serde_json::from_slice(&response.body).unwrap_or(Value::Null);
        if let Some(e) = error_of(response.status, &v) {
            return Step::Fail(e);
        }
        if self.call.op == "video" {
            let (Some(id), Ok(seconds)) = (v.pointer("/data/id").and_then(Value::as_u64), self.seconds()) else {
                return Step::fail(ErrorKind::UpstreamFault, "MindVideo's answer to the submit has no task id");
            };
            return Step::Submitted(TaskSubmitted {
                state: json!({ "id": id, "seconds": seconds }).to_string(),
                reply: None,
                usage: Usage::default(),
                poll_after_ms: Some(5_000),
            });
        }
        let Some(task) = v["data"].as_array().and_then(|d| d.first()) else {
            return Step::fail(ErrorKind::UpstreamFault, "MindVideo's progress answer names no task");
        };
        let status = task["task_status"].as_str().unwrap_or_default();
        let progress = task["task_progress"].as_u64().unwrap_or(0).min(100);
        let remark = task["task_remark"].as_str().filter(|r| !r.is_empty());
        let url = task["results"].as_array().into_iter().flatten().find_map(|r| r["result_url"].as_str());
        let state = match (status, url) {
            ("failed", _) => TaskState::Failed(AdapterError::new(
                ErrorKind::UpstreamFault,
                format!("MindVideo: {}", remark.unwrap_or("the video failed")),
            )),
            (s, Some(url)) if progress == 100 || s == "completed" => {
                let quoted: Value =
                    serde_json::from_str(self.call.task.as_deref().unwrap_or_default()).unwrap_or_default();
                TaskState::Succeeded(TaskDone {
                    reply: None,
                    outputs: vec![Media { url: url.to_string(), content_type: Some("video/mp4".into()) }],
                    usage: Self::usage(quoted["seconds"].as_u64().unwrap_or(DEFAULT_SECONDS)),
                })
            }
            (s, _) => TaskState::Pending(TaskProgress {
                percent: Some(progress as u8),
                message: remark.map(str::to_string).or_else(|| Some(s.to_string()).filter(|s| !s.is_empty())),
                state: None,
                poll_after_ms: Some(5_000),
                reply: None,
            }),
        };
        Step::Task(state)
    }
}

export_plugin!(MindVideo);

#[cfg(test)]
mod tests;
