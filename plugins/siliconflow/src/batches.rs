//! SiliconFlow's files and batches: OpenAI's batch API, as SiliconFlow serves it
//! (docs.siliconflow.cn, `api-reference/batch` and the batch guide), on its own routes:
//!
//! | consumer route                  | op                          | billed | affinity              |
//! |---------------------------------|-----------------------------|--------|-----------------------|
//! | `POST /v1/files`                | `siliconflow.files_upload`  | free   | none                  |
//! | `GET /v1/files`                 | `siliconflow.files_list`    | free   | owned, every key      |
//! | `POST /v1/batches`              | `batch`, a task             | yes    | body `input_file_id`  |
//! | `GET /v1/batches/{id}`          | `siliconflow.batch_get`     | free   | path `id`             |
//! | `POST /v1/batches/{id}/cancel`  | `siliconflow.batch_cancel`  | free   | path `id`             |
//! | `GET /v1/batches`               | `siliconflow.batches_list`  | free   | owned, every key      |
//!
//! and `task.poll` for a task whose state is `batch:<id>` (a video task's state is a bare
//! requestId; `lib.rs` dispatches on the prefix).
//!
//! Wire format (base `https://api.siliconflow.cn`, the key as a Bearer token):
//! - `POST /v1/files`, multipart: the text `purpose` (`batch`) and the JSONL as the file
//!   `file`; answers `{"code":20000,"message":"Ok","status":true,"data":{"id":"file-…",
//!   "object":"file","bytes","createdAt","filename","purpose":"batch"}}`: the file is in `data`;
//! - `GET /v1/files?purpose=batch&limit=N` answers `{"code":20000,…,"data":{"data":[files],
//!   "object":"list"}}`;
//! - `POST /v1/batches`, JSON `{input_file_id, endpoint:"/v1/chat/completions",
//!   completion_window:"24h".."336h", metadata?, replace?:{model}}`, answers the batch object
//!   `{"id":"batch_…","object":"batch","status":"in_queue","output_file_id":null,
//!   "error_file_id":null,"request_counts":null,…}`;
//! - `GET /v1/batches/{id}` answers the batch object: `status` one of `in_queue`, `validating`,
//!   `in_progress`, `finalizing`, `completed`, `failed`, `expired`, `cancelling`, `cancelled`;
//!   `request_counts` `{total, completed, failed}` or null; once finished, `output_file_id`
//!   (and `error_file_id` when lines failed) are absolute URLs of the result files, valid a
//!   month; `errors` (an array of strings in the reference) may say why a batch failed;
//! - `GET /v1/batches?limit=N&after=…` answers OpenAI's list, `{"object":"list","data",
//!   "first_id","last_id","has_more"}`; `POST /v1/batches/{id}/cancel` the batch object;
//! - errors: 400 `{"code":20012,"message","data"}`, 401 `"Invalid token"` (a JSON string),
//!   404 `"404 page not found"`, 429 and 503 JSON with a `message`.
//!
//! Invariants:
//! - only a batch costs: the host prices it by the model its input file's lines name (it read
//!   the file when it was uploaded with `purpose` `batch`), reserves its worst case with the
//!   task, and charges what the result file's lines report once the poll hands it the file.
//!   This plugin never reports a batch's usage. Files, reads, cancels and lists are free;
//! - SiliconFlow's `replace` (run every line on another model) is refused: the batch would be
//!   charged at the price of the model its lines name while another model ran. So is any field
//!   this module does not know, an `endpoint` other than `/v1/chat/completions` (the host
//!   prices chat lines only), and a form that SiliconFlow would refuse for want of `purpose` or
//!   `file`. Refusals are 400s sent before anything reaches SiliconFlow;
//! - an upload names the file it made (`reply.objects`, SiliconFlow's `data.id`), a batch its
//!   id: a batch names its input file (`affinity`) and runs on the key that holds it, and a
//!   read or cancel of a batch runs on the key that made it, for its owner only;
//! - the lists ask every key the consumer has objects on (`call.owned`) with the consumer's
//!   query and answer that consumer's own files or batches only; a consumer with none is
//!   answered an empty list without asking; a key that fails fails the list with SiliconFlow's
//!   answer, never a partial list. The query's `limit` and `after` apply to each key's whole
//!   listing, before the consumer's are picked out of it: a page may hold fewer than `limit`;
//! - what SiliconFlow answers a native route goes back verbatim, its refusals with `reply.error`
//!   set to their class so that the host still acts on them (a refused key is disabled);
//! - a poll maps the batch's status: running (`in_queue` … `finalizing`, `cancelling`) is
//!   pending, its percent read from `request_counts`; finished (`completed`, `cancelled`,
//!   `expired`, `failed`) with a result URL succeeds with the result files as outputs, which the
//!   host archives (SiliconFlow's URLs expire) and reads the usage of; finished without one
//!   (nothing ran) fails as a bad request, which is free. `failed` is read like the others: a
//!   batch that left results ran, and is never free;
//! - assumption: SiliconFlow documents its results as URLs. A finished batch whose result is a
//!   bare file id instead ran but cannot be archived or read: it succeeds with no outputs, and
//!   the host charges a batch without outputs its hold (never free, never left to expire).
//!   An `error_file_id` that is not a URL is left out of the outputs (it holds no usage);
//! - result files are fetched from SiliconFlow's hosts, which the manifest's `fetch-hosts`
//!   declare (`*.siliconflow.cn`, `*.siliconflow.com`).

use serde_json::{json, Value};
use tollgate_plugin_sdk::openai_compat::Vendor;
use tollgate_plugin_sdk::{
    exact_fields, percent_encode, text, AdapterError, Body, Call, ErrorKind, Field, FormPart, Manifest, Media,
    Operation, PartValue, Reply, Route, Step, TaskDone, TaskProgress, TaskState, TaskSubmitted, UpstreamRequest,
    UpstreamResponse, Usage,
};

pub const FILES_UPLOAD: &str = "siliconflow.files_upload";
pub const FILES_LIST: &str = "siliconflow.files_list";
/// The op the host knows: it finds the input file by the affinity field, prices the batch by
/// the model of its lines and reserves its worst case.
pub const BATCH: &str = "batch";
pub const BATCH_GET: &str = "siliconflow.batch_get";
pub const BATCH_CANCEL: &str = "siliconflow.batch_cancel";
pub const BATCHES_LIST: &str = "siliconflow.batches_list";

const FILES_PATH: &str = "/v1/files";
const BATCHES_PATH: &str = "/v1/batches";

/// A batch task's state: this prefix, then SiliconFlow's batch id.
const STATE_PREFIX: &str = "batch:";

/// Where a route finds the object it names.
enum Pin {
    None,
    /// It lists the consumer's objects, on every key.
    Owned,
    Body(&'static str),
    Path(&'static str),
}

/// method, path, op, billed, resend, affinity: one list, for the manifest and the dispatch.
const ROUTES: &[(&str, &str, &str, bool, bool, Pin)] = &[
    ("POST", FILES_PATH, FILES_UPLOAD, false, false, Pin::None),
    ("GET", FILES_PATH, FILES_LIST, false, true, Pin::Owned),
    ("POST", BATCHES_PATH, BATCH, true, false, Pin::Body("input_file_id")),
    ("GET", "/v1/batches/{id}", BATCH_GET, false, true, Pin::Path("id")),
    ("POST", "/v1/batches/{id}/cancel", BATCH_CANCEL, false, false, Pin::Path("id")),
    ("GET", BATCHES_PATH, BATCHES_LIST, false, true, Pin::Owned),
];

/// The fields of a batch request SiliconFlow gets, taken only as written here.
const BATCH_FIELDS: &[&str] = &["input_file_id", "endpoint", "completion_window", "metadata"];
/// The one endpoint whose lines the host prices.
const CHAT: &str = "/v1/chat/completions";

/// The ops and their routes (none quoted; `task.poll` is declared by `video`).
pub fn declare(manifest: Manifest) -> Manifest {
    ROUTES.iter().fold(manifest, |m, (method, path, op, billed, resend, pin)| {
        let operation = Operation::new(op);
        let mut route = Route::new(method, path, op).model(Field::None).affinity(match pin {
            Pin::None => Field::None,
            Pin::Owned => Field::Owned,
            Pin::Body(f) => Field::Body(f.to_string()),
            Pin::Path(p) => Field::Path(p.to_string()),
        });
        if !billed {
            route = route.free();
        }
        m.with_operation(if *resend { operation.resend() } else { operation }).with(route)
    })
}

/// Whether this module serves `op`: one of its routes', or the poll of a batch task.
pub fn handles(op: &str, task: Option<&str>) -> bool {
    ROUTES.iter().any(|r| r.2 == op) || (op == "task.poll" && task.is_some_and(|t| t.starts_with(STATE_PREFIX)))
}

enum Stage {
    Start,
    /// One request was sent (an upload, a batch, a read, a cancel, a poll): `next` reads its
    /// answer by the op.
    Sent,
    /// Key `key` (an index into `call.owned`) was asked for its files or batches; the
    /// consumer's so far, and whether any key said it has more.
    List {
        key: usize,
        found: Vec<Value>,
        has_more: bool,
    },
}

pub struct BatchExchange {
    call: Call,
    stage: Stage,
}

impl BatchExchange {
    pub fn new(call: Call) -> Self {
        BatchExchange { call, stage: Stage::Start }
    }

    pub fn first(&mut self) -> Step {
        self.start().unwrap_or_else(Step::Fail)
    }

    fn start(&mut self) -> Result<Step, AdapterError> {
        let request = match self.call.op.as_str() {
            FILES_UPLOAD => {
                let Body::Form(parts) = &self.call.body else {
                    return Err(bad(
                        "an upload is a multipart form: 'purpose' (batch) and the JSONL input as the file 'file'",
                    ));
                };
                check_form(parts)?;
                // The host writes the form's own content type and splices the file in.
                let mut request = UpstreamRequest::post_json(FILES_PATH, String::new());
                request.headers.clear();
                request.body = Body::Form(parts.clone());
                request
            }
            BATCH => {
                check_batch(&self.call.body)?;
                let mut request = UpstreamRequest::post_json(BATCHES_PATH, String::new());
                request.body = Body::ClientBody;
                request
            }
            BATCH_GET => UpstreamRequest::get(batch_path(self.path_id()?, "")),
            BATCH_CANCEL => {
                let path = batch_path(self.path_id()?, "/cancel");
                UpstreamRequest { method: "POST".into(), ..UpstreamRequest::get(path) }
            }
            FILES_LIST | BATCHES_LIST => {
                return Ok(match self.call.owned.is_empty() {
                    // Nothing of the consumer's is on any key: no key is asked.
                    true => Step::Reply(self.listing(None, Vec::new(), false)),
                    false => self.list_on(0, Vec::new(), false),
                });
            }
            "task.poll" => match self.call.task.as_deref().and_then(|t| t.strip_prefix(STATE_PREFIX)) {
                Some(id) if !id.is_empty() => UpstreamRequest::get(batch_path(id, "")),
                _ => return Err(bad("the task has no SiliconFlow batch id")),
            },
            op => {
                return Err(AdapterError::new(
                    ErrorKind::Unsupported,
                    format!("operation '{op}' is not a batch operation"),
                ))
            }
        };
        self.stage = Stage::Sent;
        Ok(Step::Send(request))
    }

    /// The batch id of the consumer's path (`{id}`).
    fn path_id(&self) -> Result<&str, AdapterError> {
        let id = self.call.context.path_params.iter().find(|(name, _)| name == "id").map(|(_, v)| v.as_str());
        id.filter(|id| !id.is_empty()).ok_or_else(|| bad("the path names no batch"))
    }

    pub fn next(&mut self, response: UpstreamResponse) -> Step {
        match std::mem::replace(&mut self.stage, Stage::Start) {
            Stage::Sent => match self.call.op.as_str() {
                "task.poll" => polled(response, poll_every(&self.call.config)),
                BATCH => submitted(response, poll_every(&self.call.config)),
                FILES_UPLOAD => uploaded(response),
                _ if !ok(&response) => refusal(response),
                _ => Step::Reply(Reply::verbatim(response)),
            },
            Stage::List { key, found, has_more } => self.listed(key, found, has_more, response),
            Stage::Start => {
                Step::fail(ErrorKind::UpstreamFault, "the siliconflow plugin got a response it did not ask for")
            }
        }
    }

    /// Asks key `key` for its files or batches, with the consumer's query.
    fn list_on(&mut self, key: usize, found: Vec<Value>, has_more: bool) -> Step {
        let path = if self.call.op == FILES_LIST { FILES_PATH } else { BATCHES_PATH };
        let path = match self.call.query.is_empty() {
            true => path.to_string(),
            false => format!("{path}?{}", self.call.query),
        };
        self.stage = Stage::List { key, found, has_more };
        Step::Send(UpstreamRequest::get(path).on_key(key as u32))
    }

    /// One key's files or batches: the consumer's are kept; the next key is asked, or the list
    /// ends.
    fn listed(&mut self, key: usize, mut found: Vec<Value>, mut has_more: bool, response: UpstreamResponse) -> Step {
        if !ok(&response) {
            return refusal(response);
        }
        let files = self.call.op == FILES_LIST;
        let Ok(mut answer) = serde_json::from_slice::<Value>(&response.body) else {
            return Step::fail(ErrorKind::UpstreamFault, "SiliconFlow's list is not JSON");
        };
        // Files are listed in `data.data`, batches in `data`; an empty list may be null.
        let listed = match answer.pointer_mut(if files { "/data/data" } else { "/data" }).map(Value::take) {
            Some(Value::Array(listed)) => listed,
            Some(Value::Null) => Vec::new(),
            _ => return Step::fail(ErrorKind::UpstreamFault, "SiliconFlow's list has no 'data' list"),
        };
        has_more |= answer["has_more"] == Value::Bool(true);
        let owned = &self.call.owned[key];
        found.extend(listed.into_iter().filter(|x| x["id"].as_str().is_some_and(|id| owned.iter().any(|o| o == id))));
        if key + 1 < self.call.owned.len() {
            return self.list_on(key + 1, found, has_more);
        }
        Step::Reply(self.listing(Some(answer), found, has_more))
    }

    /// The consumer's list in SiliconFlow's shape: files in the last key's envelope (`data.data`),
    /// batches as OpenAI's list with its cursors recomputed.
    fn listing(&self, answered: Option<Value>, found: Vec<Value>, has_more: bool) -> Reply {
        let body = if self.call.op == FILES_LIST {
            let mut v = answered
                .filter(|v| v["data"].is_object())
                .unwrap_or_else(|| json!({"code": 20000, "message": "Ok", "status": true, "data": {"object": "list"}}));
            v["data"]["data"] = Value::Array(found);
            v
        } else {
            let first_id = found.first().map_or(Value::Null, |b| b["id"].clone());
            let last_id = found.last().map_or(Value::Null, |b| b["id"].clone());
            json!({"object": "list", "data": found, "first_id": first_id, "last_id": last_id, "has_more": has_more})
        };
        Reply::json(body.to_string(), Usage::default())
    }
}

fn ok(response: &UpstreamResponse) -> bool {
    (200..300).contains(&response.status)
}

fn bad(message: impl Into<String>) -> AdapterError {
    AdapterError::new(ErrorKind::BadRequest, message)
}

/// `/v1/batches/{id}{tail}`, the id encoded.
fn batch_path(id: &str, tail: &str) -> String {
    format!("{BATCHES_PATH}/{}{tail}", percent_encode(id, false))
}

/// SiliconFlow's refusal, verbatim, with its class for the host.
fn refusal(response: UpstreamResponse) -> Step {
    let error = super::SiliconFlow::classify(&response);
    Step::Reply(Reply { error: Some(error), ..Reply::verbatim(response) })
}

/// A form SiliconFlow takes: the text `purpose`, `batch`, once; one file, `file`; other text
/// fields as they came.
fn check_form(parts: &[FormPart]) -> Result<(), AdapterError> {
    let purposes: Vec<&FormPart> = parts.iter().filter(|p| p.name == "purpose").collect();
    match purposes.as_slice() {
        [] => return Err(bad("'purpose' is required: SiliconFlow keeps files for batches, 'purpose' 'batch'")),
        [p] => match &p.value {
            PartValue::Text(t) if t == "batch" => {}
            PartValue::Text(t) => {
                return Err(bad(format!(
                    "SiliconFlow keeps files for batches only: 'purpose' must be 'batch', not '{t}'"
                )))
            }
            _ => return Err(bad("'purpose' is a text field ('batch'), not a file")),
        },
        _ => return Err(bad("'purpose' is given twice; give it once")),
    }
    if parts.iter().any(|p| p.name == "file" && matches!(p.value, PartValue::Text(_))) {
        return Err(bad("'file' must be the JSONL input uploaded as a file, not a text field"));
    }
    let files: Vec<&FormPart> = parts.iter().filter(|p| !matches!(p.value, PartValue::Text(_))).collect();
    match files.as_slice() {
        [f] if f.name == "file" => Ok(()),
        [f] => Err(bad(format!("the form's file must be named 'file', not '{}'", f.name))),
        [] => Err(bad("the form needs the batch's input, a JSONL file, as the file 'file'")),
        _ => Err(bad("the form takes one file, 'file'")),
    }
}

/// A batch SiliconFlow runs as the host priced it: chat lines, on the models they name.
fn check_batch(body: &Body) -> Result<(), AdapterError> {
    if matches!(body, Body::Form(_)) {
        return Err(bad("a batch is JSON: {\"input_file_id\", \"endpoint\", \"completion_window\"}"));
    }
    let fields = body.object("a batch is JSON: {\"input_file_id\", \"endpoint\", \"completion_window\"}")?;
    if fields.keys().any(|k| k.eq_ignore_ascii_case("replace")) {
        return Err(bad(
            "'replace' is not taken: name the model in every line of the input file instead (the gateway prices \
             a batch by the model its lines name)",
        ));
    }
    exact_fields(&fields, BATCH_FIELDS)?;
    if let Some(k) = fields.keys().find(|k| !BATCH_FIELDS.contains(&k.as_str())) {
        return Err(bad(format!("'{k}' is not a field of a batch this gateway sends ({})", BATCH_FIELDS.join(", "))));
    }
    let text = |k: &str| fields.get(k).and_then(Value::as_str).filter(|s| !s.trim().is_empty());
    if text("input_file_id").is_none() {
        return Err(bad("'input_file_id' (the id of the JSONL file uploaded with 'purpose' 'batch') is required"));
    }
    match text("endpoint") {
        Some(CHAT) => {}
        Some(e) => return Err(bad(format!("SiliconFlow's batches run '{CHAT}' only; 'endpoint' is '{e}'"))),
        None => return Err(bad(format!("'endpoint' ('{CHAT}') is required"))),
    }
    if text("completion_window").is_none() {
        return Err(bad("'completion_window' (from \"24h\" to \"336h\") is required"));
    }
    match fields.get("metadata") {
        None | Some(Value::Null | Value::Object(_)) => Ok(()),
        Some(_) => Err(bad("'metadata' is an object of strings")),
    }
}

/// An upload's answer, as SiliconFlow wrote it, naming the file it made.
fn uploaded(response: UpstreamResponse) -> Step {
    if !ok(&response) {
        return refusal(response);
    }
    let id = serde_json::from_slice::<Value>(&response.body)
        .ok()
        .and_then(|v| v.pointer("/data/id").and_then(Value::as_str).filter(|id| !id.is_empty()).map(str::to_string));
    match id {
        Some(id) => Step::Reply(Reply { objects: vec![id], ..Reply::verbatim(response) }),
        None => Step::fail(ErrorKind::UpstreamFault, "SiliconFlow's answer to the upload has no 'data.id'"),
    }
}

/// A batch SiliconFlow accepted becomes a task (the host holds its reservation and polls it);
/// the consumer gets SiliconFlow's batch object. A refusal is relayed, and nothing is charged.
fn submitted(response: UpstreamResponse, every: Option<u32>) -> Step {
    if !ok(&response) {
        return refusal(response);
    }
    let id = serde_json::from_slice::<Value>(&response.body)
        .ok()
        .and_then(|v| v["id"].as_str().filter(|id| !id.is_empty()).map(str::to_string));
    let Some(id) = id else {
        return Step::fail(ErrorKind::UpstreamFault, "SiliconFlow's answer to the batch has no 'id'");
    };
    let reply = Reply { status: 200, objects: vec![id.clone()], ..Reply::verbatim(response) };
    Step::Submitted(TaskSubmitted {
        state: format!("{STATE_PREFIX}{id}"),
        reply: Some(reply),
        usage: Usage::default(),
        poll_after_ms: Some(every.unwrap_or(30_000)),
    })
}

/// The channel setting that sets how often a batch is read (seconds), in place of 30 s while
/// it is queued and 10 s while it runs.
pub const POLL_SETTING: &str = "batch_poll_seconds";
/// The most seconds between two reads of a batch.
const MAX_POLL_SECONDS: u64 = 3600;

/// The channel's `batch_poll_seconds`, in milliseconds.
fn poll_every(config: &str) -> Option<u32> {
    let v: Value = serde_json::from_str(config).unwrap_or(Value::Null);
    let seconds = v.get(POLL_SETTING).and_then(Value::as_u64).filter(|s| (1..=MAX_POLL_SECONDS).contains(s))?;
    Some(seconds as u32 * 1000)
}

/// A channel's settings, checked when the channel loads.
pub fn check_settings(settings: &Value) -> Result<(), String> {
    match settings.get(POLL_SETTING) {
        None => Ok(()),
        Some(v) if v.as_u64().is_some_and(|s| (1..=MAX_POLL_SECONDS).contains(&s)) => Ok(()),
        Some(v) => Err(format!("{POLL_SETTING} must be a number of seconds from 1 to {MAX_POLL_SECONDS}, not {v}")),
    }
}

/// An absolute http(s) URL, which the host can archive.
fn is_url(s: &str) -> bool {
    ["https://", "http://"].iter().any(|p| s.get(..p.len()).is_some_and(|head| head.eq_ignore_ascii_case(p)))
}

/// A poll's answer: the batch's status as the task's.
fn polled(response: UpstreamResponse, every: Option<u32>) -> Step {
    if !ok(&response) {
        // 404 ends the task (failed, free); a refused key, 429 and 5xx are asked again later.
        return Step::Fail(super::SiliconFlow::classify(&response));
    }
    let Ok(v) = serde_json::from_slice::<Value>(&response.body) else {
        return Step::fail(ErrorKind::UpstreamFault, "SiliconFlow's batch is not JSON");
    };
    let status = v["status"].as_str().unwrap_or_default();
    let file = |k: &str| v[k].as_str().map(str::trim).filter(|f| !f.is_empty());
    Step::Task(match status {
        "in_queue" | "validating" | "in_progress" | "finalizing" | "cancelling" => TaskState::Pending(TaskProgress {
            percent: percent(&v["request_counts"]),
            message: Some(status.to_string()),
            state: None,
            poll_after_ms: Some(every.unwrap_or(if status == "in_queue" { 30_000 } else { 10_000 })),
            reply: None,
        }),
        "completed" | "cancelled" | "expired" | "failed" => match file("output_file_id") {
            Some(url) if is_url(url) => {
                let jsonl = |url: &str| Media { url: url.to_string(), content_type: Some("application/jsonl".into()) };
                let errors = file("error_file_id").filter(|e| is_url(e));
                TaskState::Succeeded(TaskDone {
                    reply: None,
                    outputs: std::iter::once(url).chain(errors).map(jsonl).collect(),
                    // The host reads the usage from the result's lines.
                    usage: Usage::default(),
                })
            }
            // Results named by id cannot be archived (the host fetches URLs only): the batch
            // ran, so it ends charged its hold, never free and never polled until it expires.
            Some(_) => TaskState::Succeeded(TaskDone { reply: None, outputs: Vec::new(), usage: Usage::default() }),
            None => {
                let why = errors(&v["errors"]).unwrap_or_else(|| format!("the batch ended {status} with no results"));
                TaskState::Failed(bad(format!("SiliconFlow: {why}")))
            }
        },
        "" => return Step::fail(ErrorKind::UpstreamFault, "SiliconFlow's batch has no status"),
        other => {
            return Step::fail(
                ErrorKind::UpstreamFault,
                format!("SiliconFlow's batch status '{}' is unknown", text::truncate(other, 40)),
            )
        }
    })
}

/// Percent done from `request_counts` (`completed` and `failed` of `total`), when it has a total.
fn percent(counts: &Value) -> Option<u8> {
    let n = |k: &str| counts[k].as_u64().unwrap_or(0) as u128;
    let total = n("total");
    (total > 0).then(|| ((n("completed") + n("failed")) * 100 / total).min(100) as u8)
}

/// Why a batch failed, from its `errors`: strings, OpenAI's `{data:[{code, message, line}]}`,
/// or objects with a `message`.
fn errors(errors: &Value) -> Option<String> {
    let one = |e: &Value| match e {
        Value::String(s) => Some(s.clone()),
        Value::Object(o) => {
            let message = o.get("message").and_then(Value::as_str)?;
            let code = o.get("code").and_then(Value::as_str).map(|c| format!("{c}: ")).unwrap_or_default();
            let line = o.get("line").and_then(Value::as_u64).map(|l| format!(" (line {l})")).unwrap_or_default();
            Some(format!("{code}{message}{line}"))
        }
        _ => None,
    };
    let list = match errors {
        Value::Array(list) => list.iter().filter_map(one).collect::<Vec<_>>(),
        Value::Object(o) if o.get("data").is_some_and(Value::is_array) => {
            o["data"].as_array().into_iter().flatten().filter_map(one).collect()
        }
        other => one(other).into_iter().collect(),
    };
    let joined = list.into_iter().map(|s| s.trim().to_string()).filter(|s| !s.is_empty()).collect::<Vec<_>>();
    (!joined.is_empty()).then(|| text::truncate(&joined.join("; "), 500).to_string())
}

#[cfg(test)]
mod tests;
