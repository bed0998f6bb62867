//! DashScope's speech recognition of files (Paraformer, Fun-ASR: `vendor-apis.md` §6.2) on its
//! own route, for its clients: `POST /api/v1/services/audio/asr/transcription` (op
//! `dashscope.transcription`) is checked, rebuilt from the fields this gateway knows, sent with
//! `X-DashScope-Async: enable`, and DashScope's own answer goes back; the job becomes a task
//! polled at `GET /api/v1/tasks/{task_id}`, which the consumer also reads there (DashScope's
//! body as it is, with a `transcription_url` per file).
//!
//! Billing: DashScope bills a task the seconds it heard (`usage.duration`), which nothing in the
//! request tells before the files are read. The hold is therefore the most a request can
//! cost at DashScope's own limits: every file at the longest DashScope accepts (12 hours), or
//! the channel's `asr_max_file_seconds` when the operator sets a lower bound, times the audio
//! tracks asked for (`parameters.channel_id`), for at most 100 files (DashScope's limit).
//! The finished task is charged the seconds DashScope reports; a task whose files all failed
//! is a failure (nothing charged). The host never charges a task more than it held.

use serde_json::{json, Value};
use tollgate_plugin_sdk::{AdapterError, Call, ErrorKind, Step, TaskDone, TaskState, UpstreamRequest, Usage};

pub const OP: &str = "dashscope.transcription";
pub const PATH: &str = "/api/v1/services/audio/asr/transcription";
/// DashScope's limits for one request: 100 files, each at most 12 hours long.
pub const MAX_FILES: usize = 100;
pub const MAX_FILE_SECONDS: u64 = 12 * 3600;
/// Audio tracks one request may name (`parameters.channel_id`): each is heard, and may be billed.
const MAX_TRACKS: usize = 8;
/// The channel setting that lowers the seconds held per file.
pub const SETTING: &str = "asr_max_file_seconds";
/// The parameters sent to DashScope: none changes the price per second (tracks are counted).
const PARAMETERS: &[&str] = &[
    "channel_id",
    "language_hints",
    "vocabulary_id",
    "disfluency_removal_enabled",
    "timestamp_alignment_enabled",
    "special_word_filter",
    "diarization_enabled",
    "speaker_count",
];

/// The seconds held per file on a channel: its `asr_max_file_seconds`, else DashScope's limit.
fn file_seconds(config: &str) -> u64 {
    let v: Value = serde_json::from_str(config).unwrap_or(Value::Null);
    v.get(SETTING).and_then(Value::as_u64).filter(|s| (1..=MAX_FILE_SECONDS).contains(s)).unwrap_or(MAX_FILE_SECONDS)
}

/// A channel's setting, checked when the channel loads.
pub fn check_settings(settings: &Value) -> Result<(), String> {
    match settings.get(SETTING) {
        None => Ok(()),
        Some(v) if v.as_u64().is_some_and(|s| (1..=MAX_FILE_SECONDS).contains(&s)) => Ok(()),
        Some(v) => Err(format!("{SETTING} must be a number of seconds from 1 to {MAX_FILE_SECONDS}, not {v}")),
    }
}

/// The request sent to DashScope (its model the channel's name) and the seconds it holds.
pub fn request(call: &Call) -> Result<(Value, u64), AdapterError> {
    let bad = |m: String| AdapterError::new(ErrorKind::BadRequest, m);
    let (input, parameters) = crate::native_sections(call, &["file_urls"], PARAMETERS)?;
    let files = match input.get("file_urls").and_then(Value::as_array) {
        Some(urls) if (1..=MAX_FILES).contains(&urls.len()) => urls,
        _ => return Err(bad(format!("'input.file_urls' must list 1 to {MAX_FILES} file URLs"))),
    };
    if let Some(url) = files.iter().find(|u| !u.as_str().is_some_and(is_file_url)) {
        return Err(bad(format!("{url} is not an http(s) URL of an audio or video file")));
    }
    let tracks = match parameters.get("channel_id") {
        None => 1,
        Some(Value::Array(ids)) if (1..=MAX_TRACKS).contains(&ids.len()) && ids.iter().all(Value::is_u64) => ids.len(),
        Some(v) => {
            return Err(bad(format!("'parameters.channel_id' must list 1 to {MAX_TRACKS} track numbers, not {v}")))
        }
    };
    let held = file_seconds(&call.config).saturating_mul((files.len() * tracks) as u64);
    let model = call.vendor_model();
    Ok((json!({ "model": model, "input": input, "parameters": parameters }), held))
}

fn is_file_url(url: &str) -> bool {
    let rest = url.strip_prefix("https://").or_else(|| url.strip_prefix("http://"));
    rest.is_some_and(|r| !r.is_empty() && !r.starts_with('/')) && !url.chars().any(char::is_whitespace)
}

/// The seconds held, as a quote.
pub fn quote(call: &Call) -> Result<Usage, AdapterError> {
    let (_, held) = request(call)?;
    Ok(Usage { milliseconds: Some(held.saturating_mul(1000)), ..Usage::default() })
}

/// The submit, asynchronous as DashScope requires.
pub fn first(call: &Call) -> Step {
    match request(call) {
        Ok((body, _)) => {
            Step::Send(UpstreamRequest::post_json(PATH, body.to_string()).with_header("x-dashscope-async", "enable"))
        }
        Err(e) => Step::Fail(e),
    }
}

/// A transcription task's state: charged the seconds DashScope heard; a task that transcribed
/// no file failed (a subtask's code and message), and costs nothing.
pub fn polled(v: &Value) -> Step {
    if v.pointer("/output/task_status").and_then(Value::as_str) != Some("SUCCEEDED") {
        return super::polled(v, "");
    }
    let results = v.pointer("/output/results").and_then(Value::as_array).map(Vec::as_slice).unwrap_or_default();
    let transcribed = results.iter().filter(|r| r["subtask_status"] == "SUCCEEDED").count();
    if transcribed == 0 {
        let failed = results.iter().find(|r| r.get("code").is_some()).cloned().unwrap_or(Value::Null);
        let mut e = super::error_of(400, &failed);
        if failed.is_null() {
            e.message = "DashScope's finished task transcribed no file".into();
        }
        return Step::Task(TaskState::Failed(e));
    }
    // Seconds as DashScope bills them; none reported: the host bills the hold.
    let seconds = v.pointer("/usage/duration").and_then(Value::as_f64).filter(|s| s.is_finite() && *s >= 0.0);
    let usage = match seconds {
        Some(s) => Usage { milliseconds: Some((s * 1000.0).ceil() as u64), ..Usage::default() },
        None => Usage::default(),
    };
    // The transcripts are JSON on DashScope's storage, which the archive (media only) does not
    // keep: DashScope's answer on `GET /api/v1/tasks/{id}` names them.
    Step::Task(TaskState::Succeeded(TaskDone { reply: None, outputs: Vec::new(), usage }))
}
