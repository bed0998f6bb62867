//! MiniMax's asynchronous speech and video and its files (`vendor-apis.md` §1.3), each object
//! in the account (key) that made it; every failure is HTTP 200 with `base_resp`:
//! - `POST /v1/t2a_async_v2` (`text`, or `text_file_id` of an uploaded `t2a_async_input` file)
//!   answers a numeric `task_id`, a `file_id` and the `usage_characters` it will bill (a CJK
//!   character 2); `GET /v1/query/t2a_async_query_v2?task_id=` answers `Processing`, then
//!   `Success` (or `Failed` when the text was `fail`);
//! - `POST /v1/video_generation` (`duration` 6 or 10, `resolution` 512P/768P/1080P, 1080P for
//!   6 s only) answers a string `task_id`; `GET /v1/query/video_generation?task_id=` answers
//!   `Queueing`, `Processing`, then `Success` with a `file_id`, a string (or `Fail` for the
//!   prompt `fail`);
//! - `GET /v1/files/retrieve?file_id=` answers the file with a `download_url` on the mock's CDN
//!   (a tar for speech, an MP4 for video, each URL good for one download);
//!   `GET /v1/files/retrieve_content?file_id=` its bytes; `POST /v1/files/upload` (multipart
//!   `purpose`, `file`), `GET /v1/files/list?purpose=`, `POST /v1/files/delete` (`file_id`).

use crate::body::MockBody;
use crate::minimax::usage_characters;
use crate::{json, query_param, Ctx, State};
use hyper::{Response, StatusCode};
use serde_json::{json, Value};

#[derive(Default)]
pub struct Store {
    tasks: std::collections::HashMap<String, Task>,
    files: std::collections::HashMap<u64, File>,
    next: u64,
    /// Voices made (`minimax_voices.rs`), by (key, voice id).
    pub voices: std::collections::HashMap<(String, String), crate::minimax_voices::Voice>,
}

struct Task {
    key: String,
    video: bool,
    /// The mock's job (`jobs.rs`) whose file the CDN serves.
    job: String,
    fail: bool,
    queries: u32,
    file_id: u64,
}

struct File {
    key: String,
    filename: String,
    purpose: String,
    /// An uploaded file's bytes; `None` for a job's output (served by the CDN).
    bytes: Option<Vec<u8>>,
    job: Option<(String, bool)>,
    downloads: u32,
}

impl Store {
    fn id(&mut self) -> u64 {
        self.next += 1;
        95_157_322_514_444 + self.next
    }
    pub fn next_id(&mut self) -> u64 {
        self.id()
    }
    /// The purpose of file `id`, when `key`'s account uploaded it.
    pub fn file_purpose(&self, id: u64, key: &str) -> Option<&str> {
        self.files.get(&id).filter(|f| f.key == key).map(|f| f.purpose.as_str())
    }
}

fn base(code: u32, msg: &str) -> Value {
    json!({ "status_code": code, "status_msg": msg })
}

pub fn failure(code: u32, msg: &str) -> Response<MockBody> {
    json(StatusCode::OK, json!({ "base_resp": base(code, msg) }).to_string())
}

pub fn login_fail() -> Response<MockBody> {
    failure(1004, "login fail: Please carry the API secret key in the 'Authorization' field of the request header")
}

pub fn ok(mut v: Value) -> Response<MockBody> {
    v["base_resp"] = base(0, "success");
    json(StatusCode::OK, v.to_string())
}

pub fn store(state: &State) -> std::sync::MutexGuard<'_, Store> {
    state.minimax.lock().unwrap_or_else(|e| e.into_inner())
}

/// `POST /v1/t2a_async_v2`.
pub fn t2a_async(state: &State, cx: &Ctx, key: Option<&str>) -> Response<MockBody> {
    let (true, Some(key)) = (cx.authorized, key) else { return login_fail() };
    let Ok(body) = serde_json::from_slice::<Value>(&cx.body) else { return failure(2013, "invalid params: body") };
    if body["model"].as_str().is_none_or(str::is_empty) {
        return failure(2013, "invalid params: model is required");
    }
    let mut s = store(state);
    let text = match (&body["text"], &body["text_file_id"]) {
        (Value::String(t), Value::Null) if !t.is_empty() => t.clone(),
        (Value::Null, Value::Number(id)) => match id.as_u64().and_then(|id| s.files.get(&id)) {
            Some(f) if f.key == key && f.purpose == "t2a_async_input" => {
                String::from_utf8_lossy(f.bytes.as_deref().unwrap_or_default()).into_owned()
            }
            _ => return failure(2013, "invalid params: text_file_id not found"),
        },
        _ => return failure(2013, "invalid params: text or text_file_id is required"),
    };
    if text.chars().count() > 50_000 {
        return failure(2013, "invalid params: text is longer than 50000 characters");
    }
    let job = crate::jobs::create(state, key, 0, &text);
    let (task_id, file_id) = (s.id(), s.id());
    // The file exists (and may be deleted) from the submit on.
    let output = File {
        key: key.into(),
        filename: "output.tar".into(),
        purpose: "t2a_async".into(),
        bytes: None,
        job: Some((job.clone(), false)),
        downloads: 0,
    };
    s.files.insert(file_id, output);
    let task = Task { key: key.into(), video: false, job, fail: text == "fail", queries: 0, file_id };
    s.tasks.insert(task_id.to_string(), task);
    ok(json!({ "task_id": task_id, "task_token": "eyJhbGciOiJSUz", "file_id": file_id,
        "usage_characters": usage_characters(&text) }))
}

/// `POST /v1/video_generation`.
pub fn video(state: &State, cx: &Ctx, key: Option<&str>) -> Response<MockBody> {
    let (true, Some(key)) = (cx.authorized, key) else { return login_fail() };
    let Ok(body) = serde_json::from_slice::<Value>(&cx.body) else { return failure(2013, "invalid params: body") };
    let Some(prompt) = body["prompt"].as_str().filter(|p| !p.is_empty()) else {
        return failure(2013, "invalid params: prompt is required");
    };
    let duration = body["duration"].as_u64().unwrap_or(6);
    let resolution = body["resolution"].as_str().unwrap_or("768P");
    if !matches!((resolution, duration), ("512P" | "768P", 6 | 10) | ("1080P", 6)) {
        return failure(2013, "invalid params: duration and resolution");
    }
    let job = crate::jobs::create(state, key, duration, prompt);
    let mut s = store(state);
    let task_id = s.id().to_string();
    let task = Task { key: key.into(), video: true, job, fail: prompt == "fail", queries: 0, file_id: 0 };
    s.tasks.insert(task_id.clone(), task);
    ok(json!({ "task_id": task_id }))
}

/// `GET /v1/query/…?task_id=`: the caller's task, a step further at each query.
pub fn query(state: &State, cx: &Ctx, key: Option<&str>, query: &str) -> Response<MockBody> {
    let (true, Some(key)) = (cx.authorized, key) else { return login_fail() };
    let id = query_param(query, "task_id").unwrap_or_default();
    let mut s = store(state);
    let Some(task) = s.tasks.get_mut(&id).filter(|t| t.key == key) else {
        return failure(2013, "invalid params: task not found");
    };
    task.queries += 1;
    let (queries, video, fail, job) = (task.queries, task.video, task.fail, task.job.clone());
    let running = if video { 3 } else { 2 };
    // Long speech names its file from the submit on (as MiniMax documents); a video once done.
    let pending_file = if video { json!("") } else { json!(task.file_id) };
    let status = match queries {
        n if n < running => {
            let status = if video && n == 1 { "Queueing" } else { "Processing" };
            return ok(json!({ "task_id": id, "status": status, "file_id": pending_file }));
        }
        _ if fail => return ok(json!({ "task_id": id, "status": if video { "Fail" } else { "Failed" } })),
        _ => "Success",
    };
    let file_id = match task.file_id {
        0 => {
            // A video's file appears when it is done.
            let file_id = s.id();
            s.tasks.get_mut(&id).expect("the task").file_id = file_id;
            let file = File {
                key: key.into(),
                filename: "output_aigc.mp4".into(),
                purpose: "video_generation".into(),
                bytes: None,
                job: Some((job, video)),
                downloads: 0,
            };
            s.files.insert(file_id, file);
            file_id
        }
        f => f,
    };
    let mut v = json!({ "task_id": id, "status": status, "file_id": file_id });
    if video {
        // MiniMax's video API writes its ids as strings.
        v["file_id"] = json!(file_id.to_string());
        v["video_width"] = json!(1366);
        v["video_height"] = json!(768);
    }
    ok(v)
}

/// `GET /v1/files/retrieve?file_id=`.
pub fn retrieve(state: &State, cx: &Ctx, key: Option<&str>, query: &str) -> Response<MockBody> {
    let (true, Some(key)) = (cx.authorized, key) else { return login_fail() };
    let id = query_param(query, "file_id").and_then(|v| v.parse::<u64>().ok()).unwrap_or_default();
    let mut s = store(state);
    let Some(file) = s.files.get_mut(&id).filter(|f| f.key == key) else {
        return failure(2013, "invalid params: file not found");
    };
    file.downloads += 1;
    let url = match &file.job {
        Some((job, true)) => format!("http://{}/cdn/{job}.mp4?sig=mm{}", state.addr, file.downloads),
        Some((job, false)) => format!("http://{}/cdn/{job}.tar?sig=mm{}", state.addr, file.downloads),
        None => String::new(),
    };
    ok(json!({ "file": describe(id, file, Some(url)) }))
}

fn describe(id: u64, file: &File, url: Option<String>) -> Value {
    let bytes = file.bytes.as_ref().map_or(200_006, Vec::len);
    let mut v = json!({ "file_id": id, "bytes": bytes, "created_at": 1_700_469_398,
        "filename": file.filename, "purpose": file.purpose });
    if let Some(url) = url {
        v["download_url"] = json!(url);
    }
    v
}

/// `GET /v1/files/retrieve_content?file_id=`: the bytes themselves.
pub fn content(state: &State, cx: &Ctx, key: Option<&str>, query: &str) -> Response<MockBody> {
    let (true, Some(key)) = (cx.authorized, key) else { return login_fail() };
    let id = query_param(query, "file_id").and_then(|v| v.parse::<u64>().ok()).unwrap_or_default();
    let s = store(state);
    let Some(file) = s.files.get(&id).filter(|f| f.key == key) else {
        return failure(2013, "invalid params: file not found");
    };
    match (&file.bytes, &file.job) {
        (Some(b), _) => crate::respond(StatusCode::OK, "application/octet-stream", MockBody::full(b.clone())),
        (None, Some((_, true))) => {
            crate::respond(StatusCode::OK, "video/mp4", MockBody::full(crate::jobs::video(200_006)))
        }
        (None, _) => crate::respond(StatusCode::OK, "application/x-tar", MockBody::full(tar())),
    }
}

/// A tar-like file (what the CDN and `retrieve_content` serve for long speech).
pub fn tar() -> Vec<u8> {
    let mut v = b"output.mp3".to_vec();
    v.resize(512, 0);
    v.extend(crate::minimax::fake_audio("long speech"));
    v
}

/// `POST /v1/files/upload`: multipart `purpose` and `file`.
pub async fn upload(state: &State, cx: &Ctx, key: Option<&str>) -> Response<MockBody> {
    let (true, Some(key)) = (cx.authorized, key) else { return login_fail() };
    let ct = cx.headers.get(hyper::header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or_default();
    let Ok(boundary) = multer::parse_boundary(ct) else { return failure(2013, "invalid params: not multipart") };
    let body = cx.body.clone();
    let stream = futures_util::stream::once(async move { Ok::<_, std::convert::Infallible>(body) });
    let mut form = multer::Multipart::new(stream, boundary);
    let (mut purpose, mut file) = (None, None);
    while let Ok(Some(field)) = form.next_field().await {
        let name = field.name().unwrap_or_default().to_string();
        let filename = field.file_name().map(str::to_string);
        let Ok(data) = field.bytes().await else { return failure(2013, "invalid params: malformed part") };
        match (name.as_str(), filename) {
            ("purpose", None) => purpose = Some(String::from_utf8_lossy(&data).into_owned()),
            ("file", Some(f)) => file = Some((f, data.to_vec())),
            _ => {}
        }
    }
    let (Some(purpose), Some((filename, bytes))) = (purpose, file) else {
        return failure(2013, "invalid params: purpose and file are required");
    };
    let mut s = store(state);
    let id = s.id();
    let file = File { key: key.into(), filename, purpose, bytes: Some(bytes), job: None, downloads: 0 };
    let v = describe(id, &file, None);
    s.files.insert(id, file);
    ok(json!({ "file": v }))
}

/// `GET /v1/files/list?purpose=`: the caller's files.
pub fn list(state: &State, cx: &Ctx, key: Option<&str>, query: &str) -> Response<MockBody> {
    let (true, Some(key)) = (cx.authorized, key) else { return login_fail() };
    let purpose = query_param(query, "purpose");
    let s = store(state);
    let mut files: Vec<(&u64, &File)> =
        s.files.iter().filter(|(_, f)| f.key == key && purpose.as_ref().is_none_or(|p| *p == f.purpose)).collect();
    files.sort_by_key(|(id, _)| **id);
    ok(json!({ "files": files.into_iter().map(|(id, f)| describe(*id, f, None)).collect::<Vec<_>>() }))
}

/// `POST /v1/files/delete` (`{"file_id": n}`).
pub fn delete(state: &State, cx: &Ctx, key: Option<&str>) -> Response<MockBody> {
    let (true, Some(key)) = (cx.authorized, key) else { return login_fail() };
    let id = serde_json::from_slice::<Value>(&cx.body).ok();
    let id = id.and_then(|v| v["file_id"].as_u64().or_else(|| v["file_id"].as_str()?.parse().ok())).unwrap_or_default();
    let mut s = store(state);
    if s.files.get(&id).is_none_or(|f| f.key != key) {
        return failure(2013, "invalid params: file not found");
    }
    s.files.remove(&id);
    ok(json!({ "file_id": id }))
}
