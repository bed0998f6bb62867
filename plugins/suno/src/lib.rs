//! The `suno` plugin: Suno music through the "Suno API" gateway shape that new-api speaks
//! (`vendor-apis.md` §5), on its own routes so that its clients only change host:
//! - `POST /suno/submit/{action}` (op `suno.submit`; `MUSIC` or `LYRICS`, any case) sends the
//!   request as it came and answers Suno's own `{"code":"success","data":"<task id>"}`; the
//!   job becomes a gateway task (named in `x-tollgate-task-id`);
//! - `GET /suno/fetch/{id}` (op `suno.fetch`, free) runs on the key that made the task, for
//!   its owner only, and answers Suno's body as it is;
//! - op `task.poll` asks `POST /suno/fetch` (`{"ids":[id]}`) until `SUCCESS` (each clip's
//!   `audio_url` is archived by the gateway) or `FAILURE` (its `fail_reason`).
//!
//! Invariants:
//! - a song submit holds two `song`s (Suno makes two clips per request) and is charged the
//!   clips it delivered; a lyrics submit holds and is charged one `lyrics`. The model is `mv`;
//! - what Suno would refuse (an unknown action, lyrics without a `prompt`, a song without any
//!   prompt) is refused before it, and only the fields in `SENT` go to Suno (rebuilt, not
//!   forwarded): continuations naming another clip and vendor callbacks are not offered, since
//!   the gateway could not check whose clip or which host they name;
//! - Suno's failures come back as it wrote them, classified by their HTTP status only (a
//!   message's wording never takes a key out of the pool: consumers can make Suno echo words);
//!   a 200 with a code other than `success` refuses the request, or, for a poll, is a fault
//!   tried again at the next poll (never the end of a job Suno may still finish);
//! - a status Suno did not document is read as still running, never as done: the task's
//!   expiry ends a job that never finishes.

use serde_json::{json, Value};
use tollgate_plugin_sdk::{
    errors, exact_fields, export_plugin, percent_encode, AdapterError, Call, ErrorKind, Exchange, Field, Manifest,
    Media, Operation, Reply, Route, Step, TaskDone, TaskProgress, TaskState, TaskSubmitted, UpstreamRequest,
    UpstreamResponse, Usage,
};

const SUBMIT: &str = "suno.submit";
const FETCH: &str = "suno.fetch";
const POLL: &str = "task.poll";
/// Clips Suno makes for one song request.
const CLIPS_PER_SONG: u64 = 2;
/// The request fields sent to Suno; any other is refused.
const SENT: &[&str] =
    &["mv", "prompt", "gpt_description_prompt", "tags", "negative_tags", "title", "make_instrumental", "instrumental"];

pub struct Suno;

impl tollgate_plugin_sdk::Plugin for Suno {
    type Exchange = SunoExchange;
    fn describe() -> Manifest {
        Manifest::new("suno", env!("CARGO_PKG_VERSION"), "Suno", &[])
            .with_operation(Operation::new(SUBMIT).quoted())
            .with_operation(Operation::new(FETCH).resend())
            .with_operation(Operation::new(POLL).resend())
            .with(Route::new("POST", "/suno/submit/{action}", SUBMIT).model(Field::Body("mv".into())))
            .with(
                Route::new("GET", "/suno/fetch/{id}", FETCH)
                    .model(Field::None)
                    .free()
                    .affinity(Field::Path("id".into())),
            )
            // Where Suno's clips are served.
            .fetching("*.suno.ai")
            .fetching("*.suno.com")
    }
}

export_plugin!(Suno);

#[derive(Clone, Copy, PartialEq, Debug)]
enum Action {
    Music,
    Lyrics,
}

impl Action {
    fn parse(s: &str) -> Option<Action> {
        match s.to_ascii_uppercase().as_str() {
            "MUSIC" => Some(Action::Music),
            "LYRICS" => Some(Action::Lyrics),
            _ => None,
        }
    }
    fn name(self) -> &'static str {
        match self {
            Action::Music => "MUSIC",
            Action::Lyrics => "LYRICS",
        }
    }
    fn unit(self) -> &'static str {
        match self {
            Action::Music => "song",
            Action::Lyrics => "lyrics",
        }
    }
}

fn units(action: Action, n: u64) -> Usage {
    Usage { extra: vec![(action.unit().into(), n)], ..Usage::default() }
}

pub struct SunoExchange {
    call: Call,
    action: Option<Action>,
}

impl Exchange for SunoExchange {
    fn new(call: Call) -> Self {
        SunoExchange { call, action: None }
    }

    fn quote(&mut self) -> Result<Usage, AdapterError> {
        let action = self.checked()?;
        Ok(units(action, if action == Action::Music { CLIPS_PER_SONG } else { 1 }))
    }

    fn first(&mut self) -> Step {
        match self.call.op.as_str() {
            SUBMIT => match self.checked() {
                Ok(action) => {
                    self.action = Some(action);
                    // Checked above: a JSON object of `SENT` fields only.
                    let body = self.call.body.object("Suno takes JSON").map(Value::Object).unwrap_or_default();
                    Step::Send(UpstreamRequest::post_json(format!("/suno/submit/{}", action.name()), body.to_string()))
                }
                Err(e) => Step::Fail(e),
            },
            FETCH => match self.path_param("id") {
                Some(id) => Step::Send(UpstreamRequest::get(format!("/suno/fetch/{}", percent_encode(&id, false)))),
                None => Step::fail(ErrorKind::BadRequest, "a task id is required"),
            },
            POLL => match self.call.task.as_deref().map(serde_json::from_str::<Value>) {
                Some(Ok(state)) => {
                    self.action = state["action"].as_str().and_then(Action::parse);
                    let id = state["id"].as_str().unwrap_or_default();
                    Step::Send(UpstreamRequest::post_json("/suno/fetch", json!({ "ids": [id] }).to_string()))
                }
                _ => Step::fail(ErrorKind::BadRequest, "the task's Suno state is unreadable"),
            },
            op => Step::fail(ErrorKind::Unsupported, format!("operation '{op}' is not supported by the suno plugin")),
        }
    }

    fn next(&mut self, response: UpstreamResponse) -> Step {
        let error = failure(&response);
        match self.call.op.as_str() {
            SUBMIT => {
                if let Some(e) = error {
                    return Step::Reply(Reply { error: Some(e), ..Reply::verbatim(response) });
                }
                let v: Value = serde_json::from_slice(&response.body).unwrap_or(Value::Null);
                let (Some(id), Some(action)) = (v["data"].as_str().filter(|d| !d.is_empty()), self.action) else {
                    return Step::fail(ErrorKind::UpstreamFault, "Suno's answer to the submit has no task id");
                };
                let state = json!({ "id": id, "action": action.name() }).to_string();
                let reply = Reply { objects: vec![id.to_string()], ..Reply::verbatim(response) };
                Step::Submitted(TaskSubmitted {
                    state,
                    reply: Some(reply),
                    usage: Usage::default(),
                    poll_after_ms: Some(5_000),
                })
            }
            FETCH => Step::Reply(Reply { error, ..Reply::verbatim(response) }),
            _ => match error {
                // Suno may still finish the job: a refused poll is asked again later.
                Some(e) if e.kind == ErrorKind::BadRequest => {
                    Step::Fail(AdapterError { kind: ErrorKind::UpstreamFault, ..e })
                }
                Some(e) => Step::Fail(e),
                None => self.polled(&response),
            },
        }
    }
}

impl SunoExchange {
    fn path_param(&self, name: &str) -> Option<String> {
        self.call.context.path_params.iter().find(|(n, _)| n == name).map(|(_, v)| v.clone()).filter(|v| !v.is_empty())
    }

    /// The submit's action, once the request is one Suno would take.
    fn checked(&self) -> Result<Action, AdapterError> {
        let bad = |m: String| AdapterError::new(ErrorKind::BadRequest, m);
        let given = self.path_param("action").unwrap_or_default();
        let action =
            Action::parse(&given).ok_or_else(|| bad(format!("Suno's actions are MUSIC and LYRICS, not '{given}'")))?;
        let body = self.call.body.object("Suno takes JSON")?;
        exact_fields(&body, SENT)?;
        if let Some(k) = body.keys().find(|k| !SENT.contains(&k.as_str())) {
            return Err(bad(format!("'{k}' is not a field this gateway sends to Suno")));
        }
        let text = |k: &str| body.get(k).and_then(Value::as_str).is_some_and(|s| !s.trim().is_empty());
        match action {
            Action::Lyrics if !text("prompt") => Err(bad("lyrics need a 'prompt'".into())),
            Action::Music if !(text("prompt") || text("gpt_description_prompt") || text("tags")) => {
                Err(bad("a song needs a 'prompt' or a 'gpt_description_prompt'".into()))
            }
            _ => Ok(action),
        }
    }

    fn polled(&self, response: &UpstreamResponse) -> Step {
        let v: Value = match serde_json::from_slice(&response.body) {
            Ok(v) => v,
            Err(_) => return Step::fail(ErrorKind::UpstreamFault, "Suno answered with invalid JSON"),
        };
        let task = match &v["data"] {
            Value::Array(items) => items.first().cloned().unwrap_or(Value::Null),
            item => item.clone(),
        };
        let action = self.action.unwrap_or(Action::Music);
        match task["status"].as_str().unwrap_or_default() {
            "SUCCESS" => {
                let clips = task["data"].as_array().cloned().unwrap_or_default();
                let outputs: Vec<Media> = clips
                    .iter()
                    .filter_map(|c| c["audio_url"].as_str().filter(|u| !u.is_empty()))
                    .map(|url| Media { url: url.to_string(), content_type: Some("audio/mpeg".into()) })
                    .collect();
                let made = match action {
                    Action::Music if outputs.is_empty() => {
                        return Step::fail(ErrorKind::UpstreamFault, "Suno's finished song has no audio")
                    }
                    Action::Music => outputs.len() as u64,
                    Action::Lyrics => 1,
                };
                Step::Task(TaskState::Succeeded(TaskDone { reply: None, outputs, usage: units(action, made) }))
            }
            "FAILURE" => {
                let reason = task["fail_reason"].as_str().filter(|r| !r.is_empty()).unwrap_or("the job failed");
                Step::Task(TaskState::Failed(AdapterError::new(ErrorKind::UpstreamFault, format!("Suno: {reason}"))))
            }
            status => {
                let percent = task["progress"].as_str().and_then(|p| p.trim_end_matches('%').trim().parse::<u8>().ok());
                Step::Task(TaskState::Pending(TaskProgress {
                    percent: percent.map(|p| p.min(100)),
                    message: Some(if status.is_empty() { "SUBMITTED".into() } else { status.to_string() }),
                    state: None,
                    poll_after_ms: Some(5_000),
                    reply: None,
                }))
            }
        }
    }
}

/// Suno's failure in an answer: a `code` other than `success` (at any status), or a non-2xx
/// status without one.
fn failure(response: &UpstreamResponse) -> Option<AdapterError> {
    let v: Option<Value> = serde_json::from_slice(&response.body).ok();
    let code = v.as_ref().and_then(|v| v["code"].as_str().map(str::to_string));
    let ok = (200..300).contains(&response.status);
    match code.as_deref() {
        Some("success") if ok => None,
        None if ok => Some(AdapterError::new(ErrorKind::UpstreamFault, "Suno answered without a code")),
        _ => {
            let message = v.as_ref().and_then(|v| v["message"].as_str()).filter(|m| !m.is_empty());
            let kind = if ok { ErrorKind::BadRequest } else { errors::kind_for_status(response.status) };
            let message = message
                .map_or_else(|| format!("Suno refused the request ({})", response.status), |m| format!("Suno: {m}"));
            Some(AdapterError::new(kind, message).with_code(code.unwrap_or_default()))
        }
    }
}

#[cfg(test)]
mod tests;
