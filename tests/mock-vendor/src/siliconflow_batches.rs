//! SiliconFlow's files and batch API (docs.siliconflow.cn `api-reference/batch` and
//! `userguide/guides/batch`), served under the path prefix `/siliconflow` (a test sets the
//! channel's base URL to `<mock>/siliconflow`): OpenAI's own `/v1/files` keeps its shape in
//! `files.rs`. Requests under the prefix are counted and recorded like every other
//! (`/_mock/stats`, `/_mock/last?path=/siliconflow/v1/batches`). Any other path under the
//! prefix (chat included) is SiliconFlow's 404.
//!
//! Auth is `Authorization: Bearer <key>` (a key starting `bad`, or rejected with
//! `/_mock/reject`, is refused). Errors are SiliconFlow's: 401 the JSON string `"Invalid token"`;
//! 400 `{"code":20012,"message":"<what is wrong>","data":null}`; 404 the plain text `404 page
//! not found`. Files and batches belong to the key (account) that made them: another key's
//! are unknown to it.
//!
//! - `POST /siliconflow/v1/files`: a form with exactly the text field `purpose` (only `batch`) and
//!   the file `file` (its name ending `.jsonl`, at most 16 MiB, UTF-8). Every non-blank line must
//!   be a JSON object with a string `custom_id` unique within the file and an object `body`
//!   holding a `messages` array; at least one line, at most 5000 (SiliconFlow's limit). A
//!   refusal names the line (1-based, counting blank lines): `line 3: custom_id must be a
//!   string`. Answers `{"code":20000,"message":"Ok","status":true,"data":{"id":"file-<10
//!   lowercase letters>","object":"file","bytes":N,"createdAt":<unix>,"filename":"…",
//!   "purpose":"batch"}}`.
//! - `GET /siliconflow/v1/files?purpose=batch&limit=N`: `{"code":20000,"message":"Ok",
//!   "status":true,"data":{"data":[the key's file objects, newest first, at most N (default 10,
//!   1 to 100)],"object":"list"}}`; a `purpose` other than `batch` lists none.
//! - `POST /siliconflow/v1/batches` `{input_file_id, endpoint, completion_window, metadata?,
//!   replace?}`: the file must be the key's (else 400 `input file not found`), `endpoint`
//!   `/v1/chat/completions`, `completion_window` `<N>h` with N from 24 to 336, `replace` an
//!   object whose optional `model` is a string. Answers the batch object, status `in_queue`:
//!   `{"id":"batch_<10 lowercase letters>","object":"batch","endpoint":"/v1/chat/completions",
//!   "errors":null,"input_file_id","completion_window","status","output_file_id",
//!   "error_file_id","created_at","in_progress_at","expires_at" (created_at + N hours),
//!   "finalizing_at","completed_at","failed_at","expired_at","cancelling_at","cancelled_at",
//!   "request_counts","metadata" (as given, else null)}`.
//! - `GET /siliconflow/v1/batches/{id}`: each read advances the batch one state before answering
//!   it: `in_queue` → `in_progress` (`in_progress_at`, `request_counts`
//!   `{"total":T,"completed":0,"failed":0}`) → `finalizing` (`finalizing_at`; every line has
//!   run: `completed`/`failed` counted) → `completed` (`completed_at`, `output_file_id`, and
//!   `error_file_id` when a line failed, else null), which stays. So the first read answers
//!   `in_progress` and the third `completed`.
//! - `POST /siliconflow/v1/batches/{id}/cancel`: a batch not yet ended becomes `cancelling`
//!   (`cancelling_at`; cancelling one already `cancelling` answers it unchanged); its next read
//!   makes it `cancelled` (`cancelled_at`) having run only the file's first line: the counts are
//!   `{"total":T,"completed":C,"failed":F}` with C + F = 1 and the files hold that one line's
//!   result. Cancelling an ended batch: 400 `batch is already completed` (or `cancelled`).
//! - `GET /siliconflow/v1/batches?limit=N`: OpenAI's list, `{"object":"list","data":[the key's
//!   batches, newest first, at most N (default 20, 1 to 100)],"first_id","last_id" (null when
//!   empty),"has_more"}` (`has_more` true when the key has more than N).
//! - `GET /siliconflow-results/{batch id}/output.jsonl` and `…/errors.jsonl`: a signed CDN URL
//!   (SiliconFlow's results are a URL valid for a month): no key, not counted as a vendor call
//!   (only in `cdn_downloads`), `application/octet-stream`; 404 until the batch ended, and for
//!   `errors.jsonl` when no line failed. `output_file_id` and `error_file_id` are these URLs,
//!   absolute on the mock's own address (`http://<listen addr>/siliconflow-results/…`). An
//!   ended batch always has an output file, empty when every line that ran failed.
//!
//! How a line runs (deterministic, so a test can compute the bill). The model is
//! `replace.model` when given, else the line's `body.model` (null when absent). The line fails
//! when the text of its last message's `content` (a string, or the `text` of its parts)
//! contains `FAIL`; it is then a line of the error file:
//! `{"id":"batch_req_<n>","custom_id":…,"response":{"status_code":400,"request_id":"<32 hex>",
//! "body":{"error":{"message":"mock failure","type":"invalid_request_error"}}},"error":null}`.
//! Otherwise it is a line of the output file: `{"id":"batch_req_<n>","custom_id":…,"response":
//! {"status_code":200,"request_id":"<32 hex>","body":{"id":"chatcmpl-<n>","object":
//! "chat.completion","created":<unix>,"model":<model>,"choices":[{"index":0,"message":{"role":
//! "assistant","content":"mock answer"},"finish_reason":"stop"}],"usage":{"prompt_tokens":P,
//! "completion_tokens":C,"total_tokens":P+C,"prompt_tokens_details":{"cached_tokens":K}}}},
//! "error":null}` where P is the number of characters (Unicode scalar values) of every
//! message's `content` that is a string (a content of parts counts 0) plus 3 per message; C is
//! min(`body.max_tokens` when it is a non-negative integer, else 100; 12); K is 2 when the
//! `custom_id` starts with `cached-`, else 0. `<n>` is a number unique in the mock. Each file
//! holds one `\n`-terminated line per result, in input order.
//!
//! The mock keeps at most 500 files and 500 batches (then refuses with 400).

use crate::body::MockBody;
use crate::{json, Ctx, State};
use hyper::{Method, Response, StatusCode};
use serde_json::{json, Value};

/// The path prefix the tests give SiliconFlow's channel.
pub const PREFIX: &str = "/siliconflow";
/// Where the results are downloaded (no key).
pub const RESULTS: &str = "/siliconflow-results/";

const MAX_LINES: usize = 5000;
const MAX_FILE_BYTES: usize = 16 << 20;
const MAX_FILES: usize = 500;
const MAX_BATCHES: usize = 500;
const MAX_LIST: usize = 100;

/// The account's files and batches, in creation order.
#[derive(Default)]
pub struct Store {
    files: Vec<File>,
    batches: Vec<Batch>,
}

struct File {
    key: String,
    object: Value,
    lines: Vec<Line>,
}

struct Line {
    custom_id: String,
    body: Value,
}

#[derive(Clone, Copy, PartialEq)]
enum Status {
    InQueue,
    InProgress,
    Finalizing,
    Completed,
    Cancelling,
    Cancelled,
}

impl Status {
    fn name(self) -> &'static str {
        match self {
            Status::InQueue => "in_queue",
            Status::InProgress => "in_progress",
            Status::Finalizing => "finalizing",
            Status::Completed => "completed",
            Status::Cancelling => "cancelling",
            Status::Cancelled => "cancelled",
        }
    }
}

/// What running a batch's lines made: the two files' text and the counts.
struct Results {
    output: String,
    errors: String,
    completed: usize,
    failed: usize,
}

struct Batch {
    id: String,
    key: String,
    input_file_id: String,
    window: String,
    /// The input file's index in `Store::files` (files are never removed).
    file: usize,
    replace_model: Option<String>,
    metadata: Value,
    status: Status,
    created_at: u64,
    expires_at: u64,
    in_progress_at: Option<u64>,
    finalizing_at: Option<u64>,
    completed_at: Option<u64>,
    cancelling_at: Option<u64>,
    cancelled_at: Option<u64>,
    total: usize,
    results: Option<Results>,
}

impl Batch {
    fn ended(&self) -> bool {
        matches!(self.status, Status::Completed | Status::Cancelled)
    }

    fn object(&self, state: &State) -> Value {
        let ended = self.ended();
        let url = |name: &str| format!("http://{}{RESULTS}{}/{name}", state.addr, self.id);
        let output = ended.then(|| url("output.jsonl"));
        let errors = ended.then(|| url("errors.jsonl")).filter(|_| self.results.as_ref().is_some_and(|r| r.failed > 0));
        let counts = match (&self.results, self.in_progress_at.is_some() || self.results.is_some()) {
            (Some(r), _) => json!({ "total": self.total, "completed": r.completed, "failed": r.failed }),
            (None, true) => json!({ "total": self.total, "completed": 0, "failed": 0 }),
            (None, false) => Value::Null,
        };
        json!({
            "id": self.id, "object": "batch", "endpoint": "/v1/chat/completions", "errors": null,
            "input_file_id": self.input_file_id, "completion_window": self.window,
            "status": self.status.name(), "output_file_id": output, "error_file_id": errors,
            "created_at": self.created_at, "in_progress_at": self.in_progress_at,
            "expires_at": self.expires_at, "finalizing_at": self.finalizing_at,
            "completed_at": self.completed_at, "failed_at": null, "expired_at": null,
            "cancelling_at": self.cancelling_at, "cancelled_at": self.cancelled_at,
            "request_counts": counts, "metadata": self.metadata,
        })
    }
}

fn now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or_default()
}

/// Ten lowercase letters, distinct for distinct `n` (below 26^10): `n` scrambled by a
/// multiplier prime to 26, in base 26.
fn letters(n: u64) -> String {
    const SPACE: u128 = 26u128.pow(10);
    let mut x = (u128::from(n) * 0x9E37_79B9_7F4A_7C15 + 0x1234_5678) % SPACE;
    let mut out = [b'a'; 10];
    for c in out.iter_mut().rev() {
        *c = b'a' + (x % 26) as u8;
        x /= 26;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn invalid_token() -> Response<MockBody> {
    json(StatusCode::UNAUTHORIZED, r#""Invalid token""#)
}

fn bad(message: &str) -> Response<MockBody> {
    json(StatusCode::BAD_REQUEST, json!({ "code": 20012, "message": message, "data": null }).to_string())
}

fn not_found() -> Response<MockBody> {
    crate::text(StatusCode::NOT_FOUND, "404 page not found")
}

fn ok(data: Value) -> Response<MockBody> {
    json(StatusCode::OK, json!({ "code": 20000, "message": "Ok", "status": true, "data": data }).to_string())
}

fn limit(query: &str, default: usize) -> usize {
    crate::query_param(query, "limit").and_then(|n| n.parse().ok()).unwrap_or(default).clamp(1, MAX_LIST)
}

/// A request under `/siliconflow`, `path` without the prefix.
pub async fn route(
    state: &State,
    cx: &Ctx,
    key: Option<&str>,
    method: &Method,
    path: &str,
    query: &str,
) -> Response<MockBody> {
    let known = matches!(path, "/v1/files" | "/v1/batches") || path.starts_with("/v1/batches/");
    if !known {
        return not_found();
    }
    let (true, Some(key)) = (cx.authorized, key) else { return invalid_token() };
    let batch = path.strip_prefix("/v1/batches/");
    match (method, path) {
        (&Method::POST, "/v1/files") => upload(state, cx, key).await,
        (&Method::GET, "/v1/files") => list_files(state, key, query),
        (&Method::POST, "/v1/batches") => create(state, cx, key),
        (&Method::GET, "/v1/batches") => list_batches(state, key, query),
        _ => match (method, batch.map(|b| b.split_once('/').unwrap_or((b, "")))) {
            (&Method::GET, Some((id, ""))) => retrieve(state, key, id),
            (&Method::POST, Some((id, "cancel"))) => cancel(state, key, id),
            _ => not_found(),
        },
    }
}

async fn upload(state: &State, cx: &Ctx, key: &str) -> Response<MockBody> {
    let (purpose, filename, data) = match crate::multipart::purpose_and_file(cx).await {
        Ok(form) => form,
        Err(e) => return bad(&e),
    };
    if purpose != "batch" {
        return bad("purpose must be batch");
    }
    if !filename.ends_with(".jsonl") {
        return bad("the file must be a .jsonl file");
    }
    if data.len() > MAX_FILE_BYTES {
        return bad("the file is larger than the mock's 16 MiB");
    }
    let Ok(text) = std::str::from_utf8(&data) else { return bad("the file is not UTF-8") };
    let lines = match parse(text) {
        Ok(lines) => lines,
        Err(e) => return bad(&e),
    };
    let id = format!("file-{}", letters(state.next_trace()));
    let object = json!({ "id": id, "object": "file", "bytes": data.len(), "createdAt": now(),
        "filename": filename, "purpose": "batch" });
    let mut store = state.siliconflow_batches.lock().unwrap_or_else(|e| e.into_inner());
    if store.files.len() >= MAX_FILES {
        return bad("the mock holds at most 500 files");
    }
    store.files.push(File { key: key.into(), object: object.clone(), lines });
    ok(object)
}

/// A batch input file's requests, or what is wrong with it.
fn parse(text: &str) -> Result<Vec<Line>, String> {
    let mut lines = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for (i, raw) in text.lines().enumerate() {
        if raw.trim().is_empty() {
            continue;
        }
        let n = i + 1;
        if lines.len() == MAX_LINES {
            return Err(format!("line {n}: the file has more than {MAX_LINES} requests"));
        }
        let Ok(Value::Object(mut line)) = serde_json::from_str::<Value>(raw) else {
            return Err(format!("line {n}: not a JSON object"));
        };
        let Some(Value::String(custom_id)) = line.remove("custom_id") else {
            return Err(format!("line {n}: custom_id must be a string"));
        };
        if !seen.insert(custom_id.clone()) {
            return Err(format!("line {n}: custom_id '{custom_id}' is not unique in the file"));
        }
        let body = line.remove("body").unwrap_or(Value::Null);
        if !body.is_object() {
            return Err(format!("line {n}: body must be an object"));
        }
        if !body["messages"].is_array() {
            return Err(format!("line {n}: body.messages must be an array"));
        }
        lines.push(Line { custom_id, body });
    }
    if lines.is_empty() {
        return Err("the file has no requests".into());
    }
    Ok(lines)
}

fn list_files(state: &State, key: &str, query: &str) -> Response<MockBody> {
    let purpose = crate::query_param(query, "purpose");
    let store = state.siliconflow_batches.lock().unwrap_or_else(|e| e.into_inner());
    let data: Vec<&Value> = store
        .files
        .iter()
        .rev()
        .filter(|f| f.key == key && purpose.as_deref().is_none_or(|p| p == "batch"))
        .take(limit(query, 10))
        .map(|f| &f.object)
        .collect();
    ok(json!({ "data": data, "object": "list" }))
}

fn create(state: &State, cx: &Ctx, key: &str) -> Response<MockBody> {
    let Ok(Value::Object(body)) = serde_json::from_slice::<Value>(&cx.body) else {
        return bad("the body is not a JSON object");
    };
    if body.get("endpoint").and_then(Value::as_str) != Some("/v1/chat/completions") {
        return bad("endpoint must be /v1/chat/completions");
    }
    let window = body.get("completion_window").and_then(Value::as_str).unwrap_or_default();
    let Some(hours) = window.strip_suffix('h').and_then(|h| h.parse::<u64>().ok()).filter(|h| (24..=336).contains(h))
    else {
        return bad("completion_window must be from 24h to 336h");
    };
    let replace_model = match body.get("replace") {
        None | Some(Value::Null) => None,
        Some(Value::Object(r)) => match r.get("model") {
            None | Some(Value::Null) => None,
            Some(Value::String(m)) => Some(m.clone()),
            Some(_) => return bad("replace.model must be a string"),
        },
        Some(_) => return bad("replace must be an object"),
    };
    let input = body.get("input_file_id").and_then(Value::as_str).unwrap_or_default();
    let mut store = state.siliconflow_batches.lock().unwrap_or_else(|e| e.into_inner());
    let Some(file) = store.files.iter().position(|f| f.key == key && f.object["id"] == input) else {
        return bad("input file not found");
    };
    if store.batches.len() >= MAX_BATCHES {
        return bad("the mock holds at most 500 batches");
    }
    let created_at = now();
    let batch = Batch {
        id: format!("batch_{}", letters(state.next_trace())),
        key: key.into(),
        input_file_id: input.into(),
        window: window.into(),
        file,
        replace_model,
        metadata: body.get("metadata").cloned().unwrap_or(Value::Null),
        status: Status::InQueue,
        created_at,
        expires_at: created_at + hours * 3600,
        in_progress_at: None,
        finalizing_at: None,
        completed_at: None,
        cancelling_at: None,
        cancelled_at: None,
        total: store.files[file].lines.len(),
        results: None,
    };
    let object = batch.object(state);
    store.batches.push(batch);
    json(StatusCode::OK, object.to_string())
}

fn list_batches(state: &State, key: &str, query: &str) -> Response<MockBody> {
    let store = state.siliconflow_batches.lock().unwrap_or_else(|e| e.into_inner());
    let limit = limit(query, 20);
    let mine: Vec<&Batch> = store.batches.iter().rev().filter(|b| b.key == key).take(limit + 1).collect();
    let has_more = mine.len() > limit;
    let data: Vec<Value> = mine.iter().take(limit).map(|b| b.object(state)).collect();
    let v = json!({ "object": "list", "first_id": data.first().map(|b| b["id"].clone()),
        "last_id": data.last().map(|b| b["id"].clone()), "data": data, "has_more": has_more });
    json(StatusCode::OK, v.to_string())
}

/// `GET /v1/batches/{id}`: the key's batch, one state further.
fn retrieve(state: &State, key: &str, id: &str) -> Response<MockBody> {
    let mut store = state.siliconflow_batches.lock().unwrap_or_else(|e| e.into_inner());
    let Store { files, batches } = &mut *store;
    let Some(batch) = batches.iter_mut().find(|b| b.id == id && b.key == key) else { return not_found() };
    let t = now();
    let lines = &files[batch.file].lines;
    match batch.status {
        Status::InQueue => {
            batch.status = Status::InProgress;
            batch.in_progress_at = Some(t);
        }
        Status::InProgress => {
            batch.status = Status::Finalizing;
            batch.finalizing_at = Some(t);
            batch.results = Some(run(state, lines, batch.replace_model.as_deref()));
        }
        Status::Finalizing => {
            batch.status = Status::Completed;
            batch.completed_at = Some(t);
        }
        Status::Cancelling => {
            batch.status = Status::Cancelled;
            batch.cancelled_at = Some(t);
            batch.results = Some(run(state, &lines[..1], batch.replace_model.as_deref()));
        }
        Status::Completed | Status::Cancelled => {}
    }
    json(StatusCode::OK, batch.object(state).to_string())
}

/// `POST /v1/batches/{id}/cancel`.
fn cancel(state: &State, key: &str, id: &str) -> Response<MockBody> {
    let mut store = state.siliconflow_batches.lock().unwrap_or_else(|e| e.into_inner());
    let Some(batch) = store.batches.iter_mut().find(|b| b.id == id && b.key == key) else { return not_found() };
    match batch.status {
        Status::Completed => return bad("batch is already completed"),
        Status::Cancelled => return bad("batch is already cancelled"),
        Status::Cancelling => {}
        _ => {
            batch.status = Status::Cancelling;
            batch.cancelling_at = Some(now());
        }
    }
    json(StatusCode::OK, batch.object(state).to_string())
}

/// Runs `lines` (see the module doc).
fn run(state: &State, lines: &[Line], replace_model: Option<&str>) -> Results {
    let mut r = Results { output: String::new(), errors: String::new(), completed: 0, failed: 0 };
    let created = now();
    for line in lines {
        let n = state.next_trace();
        let messages = line.body["messages"].as_array().map(Vec::as_slice).unwrap_or_default();
        let last = messages.last().map(|m| content_text(&m["content"])).unwrap_or_default();
        let response = if last.contains("FAIL") {
            r.failed += 1;
            json!({ "status_code": 400, "request_id": state.trace_id(),
                "body": { "error": { "message": "mock failure", "type": "invalid_request_error" } } })
        } else {
            r.completed += 1;
            let model = replace_model.map(Value::from).unwrap_or_else(|| line.body["model"].clone());
            let prompt: u64 =
                messages.iter().map(|m| m["content"].as_str().map_or(0, |s| s.chars().count() as u64) + 3).sum();
            let completion = line.body["max_tokens"].as_u64().unwrap_or(100).min(12);
            let cached = if line.custom_id.starts_with("cached-") { 2 } else { 0 };
            json!({ "status_code": 200, "request_id": state.trace_id(), "body": {
                "id": format!("chatcmpl-{n}"), "object": "chat.completion", "created": created, "model": model,
                "choices": [{ "index": 0, "message": { "role": "assistant", "content": "mock answer" },
                    "finish_reason": "stop" }],
                "usage": { "prompt_tokens": prompt, "completion_tokens": completion,
                    "total_tokens": prompt + completion, "prompt_tokens_details": { "cached_tokens": cached } } } })
        };
        let failed = response["status_code"] != 200;
        let out = json!({ "id": format!("batch_req_{n}"), "custom_id": line.custom_id, "response": response,
            "error": null });
        let file = if failed { &mut r.errors } else { &mut r.output };
        file.push_str(&out.to_string());
        file.push('\n');
    }
    r
}

/// The text of a message's `content`: the string, or its parts' `text` joined.
fn content_text(content: &Value) -> String {
    match content {
        Value::String(s) => s.clone(),
        Value::Array(parts) => parts.iter().filter_map(|p| p["text"].as_str()).collect(),
        _ => String::new(),
    }
}

/// `GET /siliconflow-results/{batch id}/{output|errors}.jsonl`: an ended batch's file, no key.
pub fn download(state: &State, file: &str) -> Response<MockBody> {
    let store = state.siliconflow_batches.lock().unwrap_or_else(|e| e.into_inner());
    let (id, name) = file.split_once('/').unwrap_or((file, ""));
    let results = store.batches.iter().find(|b| b.id == id).filter(|b| b.ended()).and_then(|b| b.results.as_ref());
    let text = match (results, name) {
        (Some(r), "output.jsonl") => r.output.clone(),
        (Some(r), "errors.jsonl") if r.failed > 0 => r.errors.clone(),
        _ => return not_found(),
    };
    state.cdn_downloads.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    crate::respond(StatusCode::OK, "application/octet-stream", MockBody::full(text))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_ten_distinct_letters() {
        let ids: std::collections::HashSet<String> = (0..2000).map(letters).collect();
        assert_eq!(ids.len(), 2000);
        assert!(ids.iter().all(|id| id.len() == 10 && id.bytes().all(|c| c.is_ascii_lowercase())));
    }

    #[test]
    fn a_file_is_refused_with_its_line() {
        let ok =
            "{\"custom_id\":\"a\",\"body\":{\"messages\":[]}}\n\n{\"custom_id\":\"b\",\"body\":{\"messages\":[]}}\n";
        assert_eq!(parse(ok).map(|l| l.len()), Ok(2));
        let dup =
            "{\"custom_id\":\"a\",\"body\":{\"messages\":[]}}\n\n{\"custom_id\":\"a\",\"body\":{\"messages\":[]}}";
        assert!(parse(dup).err().is_some_and(|e| e.starts_with("line 3:")));
        assert!(parse("{\"custom_id\":1,\"body\":{}}").err().is_some_and(|e| e.contains("custom_id")));
        assert!(parse("{\"custom_id\":\"a\",\"body\":{}}").err().is_some_and(|e| e.contains("messages")));
        assert!(parse("\n \n").is_err());
    }
}
