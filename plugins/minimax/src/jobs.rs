//! MiniMax's asynchronous jobs and its files, on MiniMax's own routes (`compat-protocols.md`
//! §1.2, `vendor-apis.md` §1.3): long speech (`POST /v1/t2a_async_v2`) and video
//! (`POST /v1/video_generation`) become gateway tasks; their queries, the files they make and
//! the files a consumer uploads are reached on the key that made them.
//!
//! Invariants:
//! - a submit is quoted before it is sent: long speech by its text's characters as MiniMax
//!   counts them (a CJK character 2), or by the most a text file may hold when it names one;
//!   a Hailuo video by its tier (`768p-6s`: resolution × duration, MiniMax's defaults when the
//!   request leaves them out), another video model as one `video`. What MiniMax would refuse
//!   (a text over its limit, a duration or resolution it does not render) is refused first;
//! - the consumer's body goes to MiniMax as it came (its `model` renamed only when the channel
//!   maps it), and every answer comes back verbatim, errors included, with `reply.error` set
//!   whenever MiniMax reported a failure, so that the host still acts on the class;
//! - a submit's answer names the task id (and, for speech, the file id) as objects the
//!   consumer created; a query's answer names the file its task made; an upload's the file:
//!   follow-up calls find their key through them, and only their owner reaches them;
//! - a file list asks every key the consumer has objects on and answers with the consumer's
//!   files only (another consumer's files on a shared key are never shown); a consumer with
//!   none is answered an empty list without asking MiniMax;
//! - a poll reads the job's status (compared case-insensitively), then the finished file's
//!   `download_url`, which the host archives; speech is charged the characters MiniMax
//!   reported at the submit, a video its tier.

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use tollgate_plugin_sdk::{
    exact_fields, percent_encode, text::vendor_characters, AdapterError, Body, Call, ErrorKind, Field, FormPart,
    Manifest, Media, Operation, PartValue, Reply, Route, Step, TaskDone, TaskProgress, TaskState, TaskSubmitted,
    UpstreamRequest, UpstreamResponse, Usage,
};

pub const T2A_ASYNC: &str = "minimax.t2a_async";
pub const VIDEO: &str = "minimax.video";
pub const QUERY: &str = "minimax.query";
pub const FILE: &str = "minimax.file";
pub const FILE_CONTENT: &str = "minimax.file_content";
pub const UPLOAD: &str = "minimax.upload";
pub const DELETE: &str = "minimax.file_delete";
pub const LIST: &str = "minimax.file_list";
pub const POLL: &str = "task.poll";

const T2A_ASYNC_PATH: &str = "/v1/t2a_async_v2";
const VIDEO_PATH: &str = "/v1/video_generation";
const T2A_QUERY_PATH: &str = "/v1/query/t2a_async_query_v2";
const VIDEO_QUERY_PATH: &str = "/v1/query/video_generation";
const RETRIEVE_PATH: &str = "/v1/files/retrieve";
const CONTENT_PATH: &str = "/v1/files/retrieve_content";
const LIST_PATH: &str = "/v1/files/list";

/// The most characters one `text` may have (MiniMax's limit), and the most a text file of
/// `text_file_id` may bill (its 100,000 characters, each counted 2 when CJK): what such a
/// submit reserves.
const MAX_TEXT_CHARS: usize = 50_000;
const FILE_CHARACTERS_BOUND: u64 = 200_000;

/// The fields that price a submit or name an object: taken only as written here.
const READ: &[&str] = &[
    "model",
    "text",
    "text_file_id",
    "duration",
    "resolution",
    "prompt",
    "first_frame_image",
    "subject_reference",
    "file_id",
];

/// The ops of this module and their routes: one list, for the manifest and the dispatch.
pub fn declare(manifest: Manifest) -> Manifest {
    let free = |method: &str, path: &str, op: &str, object: Field| {
        Route::new(method, path, op).model(Field::None).free().affinity(object)
    };
    let task = || Field::Query("task_id".into());
    let file = || Field::Query("file_id".into());
    manifest
        .with_operation(Operation::new(T2A_ASYNC).quoted())
        .with_operation(Operation::new(VIDEO).quoted())
        .with_operation(Operation::new(QUERY).resend())
        .with_operation(Operation::new(FILE).resend())
        .with_operation(Operation::new(FILE_CONTENT).resend())
        .with_operation(Operation::new(UPLOAD))
        .with_operation(Operation::new(DELETE))
        .with_operation(Operation::new(LIST).resend())
        .with_operation(Operation::new(POLL).resend())
        // A text file is read on the key it was uploaded with.
        .with(Route::new("POST", T2A_ASYNC_PATH, T2A_ASYNC).affinity(Field::Body("text_file_id".into())))
        .with(Route::new("POST", VIDEO_PATH, VIDEO))
        .with(free("GET", T2A_QUERY_PATH, QUERY, task()))
        .with(free("GET", VIDEO_QUERY_PATH, QUERY, task()))
        .with(free("GET", RETRIEVE_PATH, FILE, file()))
        .with(free("GET", CONTENT_PATH, FILE_CONTENT, file()))
        // The MiniMax proxy's download route: the video file's bytes.
        .with(free("GET", "/v1/video/download", FILE_CONTENT, file()))
        .with(free("POST", "/v1/files/upload", UPLOAD, Field::None))
        // The MiniMax proxy's uploads of a voice's audio: MiniMax's upload with that purpose.
        .with(free("POST", "/v1/files/upload/voice_clone", UPLOAD, Field::None))
        .with(free("POST", "/v1/files/upload/prompt_audio", UPLOAD, Field::None))
        .with(free("POST", "/v1/files/delete", DELETE, Field::Body("file_id".into())))
        // The consumer's own files, on every key they were uploaded or made with.
        .with(free("GET", LIST_PATH, LIST, Field::Owned))
        // Files of the jobs' answers are on MiniMax's object storage.
        .fetching("*.aliyuncs.com")
        .fetching("*.minimax.io")
        .fetching("*.minimaxi.com")
}

/// Whether `op` is one of this module's.
pub fn handles(op: &str) -> bool {
    [T2A_ASYNC, VIDEO, QUERY, FILE, FILE_CONTENT, UPLOAD, DELETE, LIST, POLL].contains(&op)
}

#[derive(Serialize, Deserialize, Clone, Copy, PartialEq, Debug)]
#[serde(rename_all = "lowercase")]
enum Kind {
    Speech,
    Video,
}

/// What a task keeps between polls.
#[derive(Serialize, Deserialize, Debug)]
struct Job {
    kind: Kind,
    task_id: String,
    /// What the finished job is charged: characters (speech) or a tier or `video`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    characters: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    unit: Option<String>,
}

impl Job {
    fn usage(&self) -> Usage {
        match (&self.unit, self.characters) {
            (Some(unit), _) => Usage { extra: vec![(unit.clone(), 1)], ..Usage::default() },
            (None, characters) => Usage { characters, ..Usage::default() },
        }
    }
}

enum Stage {
    Start,
    /// A submit was sent; the quote's usage.
    Submit(Kind, Usage),
    /// A query, a file read, an upload or a delete: the answer goes back as it is.
    Relay,
    /// A listing asked key `key` (an index into `call.owned`); the consumer's files so far.
    List {
        key: usize,
        files: Vec<Value>,
    },
    /// A poll asked the job's status.
    Status(Job),
    /// A poll asked where the finished job's file is.
    Retrieve(Job),
}

pub struct Jobs {
    call: Call,
    stage: Stage,
}

impl Jobs {
    pub fn new(call: Call) -> Self {
        Jobs { call, stage: Stage::Start }
    }

    pub fn quote(&mut self) -> Result<Usage, AdapterError> {
        match self.call.op.as_str() {
            T2A_ASYNC | VIDEO => self.quote_of(&self.body()?),
            op => Err(AdapterError::new(ErrorKind::Unsupported, format!("the minimax plugin does not quote '{op}'"))),
        }
    }

    /// The voices a long speech names (the consumer's made voices run on their key).
    pub fn uses(&mut self) -> Vec<String> {
        match (self.call.op.as_str(), self.body()) {
            (T2A_ASYNC, Ok(body)) => super::voices::voices_in(&body),
            _ => Vec::new(),
        }
    }

    /// A submit's units, read from its body.
    fn quote_of(&self, body: &serde_json::Map<String, Value>) -> Result<Usage, AdapterError> {
        match self.call.op.as_str() {
            VIDEO => video_quote(self.call.vendor_model(), body),
            _ => speech_quote(body),
        }
    }

    pub fn first(&mut self) -> Step {
        self.start().unwrap_or_else(Step::Fail)
    }

    fn start(&mut self) -> Result<Step, AdapterError> {
        let op = self.call.op.clone();
        let step = match op.as_str() {
            T2A_ASYNC | VIDEO => {
                let body = self.body()?;
                let usage = self.quote_of(&body)?;
                let kind = if op == VIDEO { Kind::Video } else { Kind::Speech };
                let path = if kind == Kind::Video { VIDEO_PATH } else { T2A_ASYNC_PATH };
                let mut request = UpstreamRequest::post_json(super::with_group(path, &self.call.query), String::new());
                request.body = self.forwarded_body(body);
                self.stage = Stage::Submit(kind, usage);
                Step::Send(request)
            }
            QUERY => {
                let path = self.call.context.path.clone();
                self.stage = Stage::Relay;
                Step::Send(UpstreamRequest::get(self.with_param(&path, "task_id")?))
            }
            FILE => {
                self.stage = Stage::Relay;
                Step::Send(UpstreamRequest::get(self.with_param(RETRIEVE_PATH, "file_id")?))
            }
            FILE_CONTENT => Step::Relay(UpstreamRequest::get(self.with_param(CONTENT_PATH, "file_id")?)),
            UPLOAD | DELETE => {
                // The proxy's `/v1/files/upload/<purpose>` is MiniMax's upload with that purpose.
                let (path, purpose) = match self.call.context.path.strip_prefix("/v1/files/upload/") {
                    Some(purpose) => ("/v1/files/upload".to_string(), Some(purpose.to_string())),
                    None => (self.call.context.path.clone(), None),
                };
                let mut request = UpstreamRequest::post_json(super::with_group(&path, &self.call.query), String::new());
                if op == UPLOAD {
                    let Body::Form(parts) = &self.call.body else {
                        return Err(super::bad_request("an upload is a multipart form with 'purpose' and 'file'"));
                    };
                    let mut parts = parts.clone();
                    if let Some(purpose) = purpose {
                        if parts.iter().any(|p| p.name == "purpose") {
                            return Err(super::bad_request(format!(
                                "this route uploads with purpose '{purpose}': send no 'purpose'"
                            )));
                        }
                        parts.insert(
                            0,
                            FormPart {
                                name: "purpose".into(),
                                filename: None,
                                content_type: None,
                                value: PartValue::Text(purpose),
                            },
                        );
                    }
                    request.headers.clear();
                    request.body = Body::Form(parts);
                } else {
                    // The file deleted is the one the host found its owner and key for.
                    if self.body()?.get("file_id").and_then(id_text).is_none() {
                        return Err(super::bad_request("'file_id' is required"));
                    }
                    request.body = std::mem::replace(&mut self.call.body, Body::Empty);
                }
                self.stage = Stage::Relay;
                Step::Send(request)
            }
            LIST => match self.call.owned.is_empty() {
                // Nothing of the consumer's is on any key: no key is asked.
                true => Step::Reply(listing(Vec::new(), None)),
                false => self.list_on(0, Vec::new()),
            },
            POLL => {
                let state = self.call.task.as_deref().unwrap_or_default();
                let job: Job = serde_json::from_str(state)
                    .map_err(|_| super::bad_request("the task's MiniMax state is unreadable"))?;
                let path = if job.kind == Kind::Video { VIDEO_QUERY_PATH } else { T2A_QUERY_PATH };
                let request = UpstreamRequest::get(format!("{path}?task_id={}", percent_encode(&job.task_id, false)));
                self.stage = Stage::Status(job);
                Step::Send(request)
            }
            op => {
                return Err(AdapterError::new(
                    ErrorKind::Unsupported,
                    format!("operation '{op}' is not supported by the minimax plugin"),
                ))
            }
        };
        Ok(step)
    }

    pub fn next(&mut self, response: UpstreamResponse) -> Step {
        match std::mem::replace(&mut self.stage, Stage::Start) {
            Stage::Submit(kind, quoted) => submitted(kind, quoted, response),
            Stage::Relay => {
                let objects = created_objects(&self.call.op, &response);
                let mut reply = super::native_reply(response);
                if reply.error.is_none() {
                    reply.objects = objects;
                }
                Step::Reply(reply)
            }
            Stage::List { key, files } => self.listed(key, files, response),
            Stage::Status(job) => self.status(job, response),
            Stage::Retrieve(job) => retrieved(job, response),
            Stage::Start => Step::Fail(super::fault("the minimax plugin got a response it did not ask for")),
        }
    }

    /// Asks key `key` for its files (the consumer's query as it came: `purpose`, `GroupId`).
    fn list_on(&mut self, key: usize, files: Vec<Value>) -> Step {
        let path = match self.call.query.as_str() {
            "" => LIST_PATH.to_string(),
            query => format!("{LIST_PATH}?{query}"),
        };
        self.stage = Stage::List { key, files };
        Step::Send(UpstreamRequest::get(path).on_key(key as u32))
    }

    /// One key's files: the consumer's are kept; the next key is asked, or the listing ends.
    /// A key that fails fails the listing with MiniMax's answer (never a partial list).
    fn listed(&mut self, key: usize, mut files: Vec<Value>, response: UpstreamResponse) -> Step {
        let mut v = match answer(&response) {
            Ok(v) => v,
            Err(_) => return Step::Reply(super::native_reply(response)),
        };
        let owned = &self.call.owned[key];
        let Value::Array(listed) = v["files"].take() else {
            return Step::Fail(super::fault("MiniMax's file list has no 'files'"));
        };
        files.extend(listed.into_iter().filter(|f| id_text(&f["file_id"]).is_some_and(|id| owned.contains(&id))));
        if key + 1 < self.call.owned.len() {
            return self.list_on(key + 1, files);
        }
        Step::Reply(listing(files, Some(v)))
    }

    fn status(&mut self, job: Job, response: UpstreamResponse) -> Step {
        let v = match answer(&response) {
            Ok(v) => v,
            Err(e) => return Step::Fail(e),
        };
        let status = v["status"].as_str().unwrap_or_default().to_ascii_lowercase();
        match status.as_str() {
            "success" => match id_text(&v["file_id"]) {
                Some(file) => {
                    self.stage = Stage::Retrieve(job);
                    Step::Send(UpstreamRequest::get(format!(
                        "{RETRIEVE_PATH}?file_id={}",
                        percent_encode(&file, false)
                    )))
                }
                // MiniMax did the work: it is charged, with nothing to archive.
                None => done(job, Vec::new()),
            },
            "preparing" | "queueing" | "processing" => Step::Task(TaskState::Pending(TaskProgress {
                percent: None,
                message: v["status"].as_str().map(str::to_string),
                state: None,
                poll_after_ms: Some(poll_hint(job.kind)),
                reply: None,
            })),
            "failed" | "fail" | "expired" => {
                let said = v
                    .pointer("/base_resp/status_msg")
                    .and_then(Value::as_str)
                    .filter(|m| !m.is_empty() && *m != "success");
                let message = match said {
                    Some(m) => format!("MiniMax: the job {status}: {m}"),
                    None => format!("MiniMax: the job {status}"),
                };
                Step::Task(TaskState::Failed(AdapterError::new(ErrorKind::UpstreamFault, message)))
            }
            _ => Step::Fail(super::fault("MiniMax's job status is unreadable")),
        }
    }

    /// The consumer's JSON object, its fields as MiniMax reads them (`READ`).
    fn body(&self) -> Result<serde_json::Map<String, Value>, AdapterError> {
        let Value::Object(o) = super::json_object(&self.call.body)? else {
            unreachable!("json_object answers objects")
        };
        exact_fields(&o, READ)?;
        super::voices::exact_voice_fields(&o)?;
        Ok(o)
    }

    /// The consumer's body (`body`, as parsed), with the channel's name for the model when it
    /// differs; else its bytes as they came.
    fn forwarded_body(&mut self, mut body: serde_json::Map<String, Value>) -> Body {
        let model = self.call.vendor_model().to_string();
        if !model.is_empty() && body.get("model").and_then(Value::as_str) != Some(&model) {
            body.insert("model".into(), Value::String(model));
            return Body::Text(Value::Object(body).to_string());
        }
        std::mem::replace(&mut self.call.body, Body::Empty)
    }

    /// `path?name=<the consumer's value>` (and `GroupId` when the consumer sent one).
    fn with_param(&self, path: &str, name: &str) -> Result<String, AdapterError> {
        let value = self
            .call
            .query
            .split('&')
            .find_map(|p| p.strip_prefix(name).and_then(|v| v.strip_prefix('=')))
            .filter(|v| !v.is_empty())
            .ok_or_else(|| super::bad_request(format!("'{name}' is required")))?;
        // Already percent-encoded as the consumer sent it; only its own parameter goes on.
        let group = self.call.query.split('&').find(|p| p.starts_with("GroupId="));
        Ok(match group {
            Some(g) => format!("{path}?{name}={value}&{g}"),
            None => format!("{path}?{name}={value}"),
        })
    }
}

/// The units a long-speech submit reserves.
fn speech_quote(body: &serde_json::Map<String, Value>) -> Result<Usage, AdapterError> {
    let characters = match (body.get("text"), body.get("text_file_id")) {
        (Some(Value::String(text)), None) if !text.trim().is_empty() => {
            let count = text.chars().count();
            if count > MAX_TEXT_CHARS {
                return Err(super::bad_request(format!(
                    "'text' has {count} characters; MiniMax takes at most {MAX_TEXT_CHARS} (upload a text file and name it in 'text_file_id')"
                )));
            }
            vendor_characters(text)
        }
        (None, Some(id)) if id_text(id).is_some() => FILE_CHARACTERS_BOUND,
        (Some(_), Some(_)) => return Err(super::bad_request("give 'text' or 'text_file_id', not both")),
        _ => return Err(super::bad_request("'text' (a non-empty string) or 'text_file_id' is required")),
    };
    Ok(Usage { characters: Some(characters), ..Usage::default() })
}

/// The tier a video submit reserves: `{resolution}-{duration}s` for Hailuo models (which
/// render 6 or 10 seconds at 512P, 768P or 1080P, 1080P for 6 only), `video` for the others
/// (6 seconds at 720P).
fn video_quote(model: &str, body: &serde_json::Map<String, Value>) -> Result<Usage, AdapterError> {
    let bad = |m: String| super::bad_request(m);
    let given = |k: &str| body.get(k).filter(|v| !v.is_null());
    let text = |k: &str| given(k).and_then(Value::as_str).is_some_and(|s| !s.trim().is_empty());
    if !(text("prompt") || given("first_frame_image").is_some() || given("subject_reference").is_some()) {
        return Err(bad("a video needs a 'prompt' (or a 'first_frame_image' or 'subject_reference')".into()));
    }
    let duration = match given("duration") {
        None => 6,
        Some(d) => d.as_u64().ok_or_else(|| bad(format!("'duration' must be a whole number of seconds, not {d}")))?,
    };
    let resolution = match given("resolution") {
        None => None,
        Some(Value::String(r)) => Some(r.to_ascii_uppercase()),
        Some(r) => return Err(bad(format!("'resolution' must be a string such as \"768P\", not {r}"))),
    };
    let unit = if model.starts_with("MiniMax-Hailuo") {
        let resolution = resolution.unwrap_or_else(|| "768P".into());
        match (resolution.as_str(), duration) {
            ("512P" | "768P", 6 | 10) | ("1080P", 6) => {}
            ("1080P", _) => return Err(bad("MiniMax renders 1080P videos of 6 seconds only".into())),
            ("512P" | "768P", d) => return Err(bad(format!("MiniMax renders videos of 6 or 10 seconds, not {d}"))),
            (r, _) => return Err(bad(format!("MiniMax renders videos at 512P, 768P or 1080P, not {r}"))),
        }
        format!("{}-{duration}s", resolution.to_ascii_lowercase())
    } else {
        if duration != 6 || resolution.as_deref().is_some_and(|r| r != "720P") {
            return Err(bad(format!("{model} renders videos of 6 seconds at 720P only")));
        }
        "video".into()
    };
    Ok(Usage { extra: vec![(unit, 1)], ..Usage::default() })
}

/// The answer to a submit: the task, answered with MiniMax's own body, or the refusal.
fn submitted(kind: Kind, quoted: Usage, response: UpstreamResponse) -> Step {
    let parsed = answer(&response);
    let mut reply = super::native_reply(response);
    if reply.error.is_some() {
        return Step::Reply(reply);
    }
    let v = match parsed {
        Ok(v) => v,
        Err(e) => return Step::Fail(e),
    };
    let Some(task_id) = id_text(&v["task_id"]) else {
        return Step::Fail(super::fault("MiniMax's answer to the submit has no task_id"));
    };
    let job = match kind {
        // Charged what MiniMax counted at the submit; the quote when it did not say.
        Kind::Speech => Job {
            kind,
            task_id: task_id.clone(),
            characters: v["usage_characters"].as_u64().or(quoted.characters),
            unit: None,
        },
        Kind::Video => {
            Job { kind, task_id: task_id.clone(), characters: None, unit: quoted.extra.first().map(|u| u.0.clone()) }
        }
    };
    reply.objects = std::iter::once(task_id).chain(id_text(&v["file_id"])).collect();
    reply.usage = Usage::default();
    Step::Submitted(TaskSubmitted {
        state: json!(job).to_string(),
        reply: Some(reply),
        usage: job.usage(),
        poll_after_ms: Some(poll_hint(kind)),
    })
}

/// How long to wait before the next query: MiniMax asks for a few seconds between queries.
fn poll_hint(kind: Kind) -> u32 {
    match kind {
        Kind::Video => 5_000,
        Kind::Speech => 3_000,
    }
}

/// A finished job's file: its download URL, for the host to archive.
///
/// MiniMax finished the job, so it is charged whatever the file's fate: a file that is gone
/// (its owner may delete it through `/v1/files/delete` as soon as the job is done) leaves
/// nothing to archive; only a transient failure (a refused key, a rate limit, a fault) is
/// asked again at the next poll.
fn retrieved(job: Job, response: UpstreamResponse) -> Step {
    let v = match answer(&response) {
        Ok(v) => v,
        Err(e) if e.kind == ErrorKind::BadRequest => return done(job, Vec::new()),
        Err(e) => return Step::Fail(e),
    };
    let Some(url) = v.pointer("/file/download_url").and_then(Value::as_str).filter(|u| !u.is_empty()) else {
        return done(job, Vec::new());
    };
    // Speech comes as an archive of the audio and its subtitles, or as the audio itself.
    let content_type = (job.kind == Kind::Video).then(|| "video/mp4".to_string());
    done(job, vec![Media { url: url.to_string(), content_type }])
}

/// MiniMax's answer to a file list with `files` (its other fields as the last key answered).
fn listing(files: Vec<Value>, answered: Option<Value>) -> Reply {
    let mut v = answered.unwrap_or_else(|| json!({ "base_resp": { "status_code": 0, "status_msg": "success" } }));
    v["files"] = Value::Array(files);
    Reply::json(v.to_string(), Usage::default())
}

/// A finished job, charged what it was held for (or MiniMax counted).
fn done(job: Job, outputs: Vec<Media>) -> Step {
    Step::Task(TaskState::Succeeded(TaskDone { reply: None, outputs, usage: job.usage() }))
}

/// A 2xx JSON answer without a `base_resp` failure, or the classified error.
pub(crate) fn answer(response: &UpstreamResponse) -> Result<Value, AdapterError> {
    if !(200..300).contains(&response.status) {
        return Err(super::http_error(response));
    }
    let v: Value =
        serde_json::from_slice(&response.body).map_err(|_| super::fault("MiniMax answered with invalid JSON"))?;
    match v.pointer("/base_resp/status_code").and_then(Value::as_i64) {
        Some(code) if code != 0 => {
            let message = v.pointer("/base_resp/status_msg").and_then(Value::as_str).unwrap_or_default();
            Err(super::classify(code, message))
        }
        _ => Ok(v),
    }
}

/// The objects a relayed answer shows the consumer made: the file a query's job made, the
/// file an upload made. Lists and deletes name none.
fn created_objects(op: &str, response: &UpstreamResponse) -> Vec<String> {
    let Ok(v) = answer(response) else { return Vec::new() };
    let id = match op {
        QUERY => &v["file_id"],
        UPLOAD => &v["file"]["file_id"],
        _ => return Vec::new(),
    };
    id_text(id).into_iter().collect()
}

/// A MiniMax id (a number or a string) as text; `None` when absent, empty or 0.
pub(crate) fn id_text(v: &Value) -> Option<String> {
    match v {
        Value::Number(n) if n.as_u64() != Some(0) => Some(n.to_string()),
        Value::String(s) if !s.is_empty() && s != "0" => Some(s.clone()),
        _ => None,
    }
}
