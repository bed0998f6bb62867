//! Alibaba DashScope's asynchronous video synthesis (`vendor-apis.md` §6.2): the submit
//! needs `X-DashScope-Async: enable` (DashScope refuses a synchronous call of it) and answers
//! `{"output":{"task_status":"PENDING","task_id"}}`; `GET /api/v1/tasks/{id}` answers
//! `PENDING`, then `RUNNING`, then `SUCCEEDED` with a `video_url` on the mock's CDN and
//! `usage.duration` (a second less than asked: what was made), or `FAILED` with DashScope's code when the prompt was
//! `fail`; `POST /api/v1/tasks/{id}/cancel` cancels a pending task. Errors are
//! `{"code","message","request_id"}`; a task belongs to the key that made it. Text to image
//! (`POST /api/v1/services/aigc/text2image/image-synthesis`, async only) is a task of the same
//! kind whose success lists `parameters.n` PNGs in `results` and `usage.image_count`.
//!
//! Speech recognition of files (`POST /api/v1/services/audio/asr/transcription`, async only,
//! `input.file_urls`: 1 to 100 http(s) URLs) is a task of the same kind whose success lists a
//! subtask per file: `SUCCEEDED` with a `transcription_url` (JSON on the mock's CDN), or, for a
//! URL containing `fail`, `FAILED` with DashScope's `InvalidFile.DownloadFailed`; its
//! `usage.duration` is the seconds heard in the files transcribed (a URL's `seconds=N`, else 5).
//!
//! The synchronous multimodal route (`POST /api/v1/services/aigc/multimodal-generation/generation`)
//! serves qwen-image-edit (1 to 3 `image` parts, URLs or data URIs, and a `text`;
//! `parameters.n` images, 1 for `qwen-image-edit`, up to 6 for the others; `usage` with
//! `image_count`; the text `fail` is refused as DashScope refuses inappropriate content) and
//! qwen3-asr-flash (one `audio` part; `usage.seconds`: a URL's `seconds=N`, a data URI's
//! decoded bytes at 32,000 a second, else 3; a data URI's transcript names its decoded bytes'
//! count and SHA-256; an `audio_info` annotation with `asr_options.language`, else `zh`), and
//! any other model a short text with its tokens.

use crate::body::MockBody;
use crate::{json, Ctx, State};
use hyper::{Response, StatusCode};
use serde_json::{json, Value};

pub struct Task {
    key: String,
    job: String,
    queries: u32,
    prompt: String,
    seconds: u64,
    cancelled: bool,
    /// An image task: the images asked for.
    images: Option<u64>,
    /// A transcription task: its files' URLs.
    files: Option<Vec<String>>,
}

fn error(status: StatusCode, code: &str, message: &str) -> Response<MockBody> {
    json(status, json!({ "code": code, "message": message, "request_id": "mock" }).to_string())
}

fn unauthorized() -> Response<MockBody> {
    error(StatusCode::UNAUTHORIZED, "InvalidApiKey", "Invalid API-key provided.")
}

/// An asynchronous submit's key and JSON body, or DashScope's refusal (a bad key, a call
/// without `X-DashScope-Async: enable`, a body that is not JSON).
fn accept(cx: &Ctx, key: Option<&str>) -> Result<(String, Value), (StatusCode, &'static str, &'static str)> {
    let Some(key) = key.filter(|_| cx.authorized).map(str::to_string) else {
        return Err((StatusCode::UNAUTHORIZED, "InvalidApiKey", "Invalid API-key provided."));
    };
    if cx.headers.get("x-dashscope-async").and_then(|v| v.to_str().ok()) != Some("enable") {
        return Err((StatusCode::FORBIDDEN, "AccessDenied", "current user api does not support synchronous calls"));
    }
    match serde_json::from_slice::<Value>(&cx.body) {
        Ok(body) => Ok((key, body)),
        Err(_) => Err((StatusCode::BAD_REQUEST, "InvalidParameter", "the body is not JSON")),
    }
}

/// `POST /api/v1/services/aigc/video-generation/video-synthesis`.
pub fn submit(state: &State, cx: &Ctx, key: Option<&str>) -> Response<MockBody> {
    let (key, body) = match accept(cx, key) {
        Ok(accepted) => accepted,
        Err((status, code, message)) => return error(status, code, message),
    };
    let prompt = body.pointer("/input/prompt").and_then(Value::as_str).unwrap_or_default().to_string();
    if body["model"].as_str().is_none_or(str::is_empty)
        || (prompt.is_empty() && body.pointer("/input/img_url").is_none())
    {
        return error(StatusCode::BAD_REQUEST, "InvalidParameter", "model and input.prompt are required");
    }
    if body.pointer("/parameters/size").and_then(Value::as_str).is_some_and(|s| !s.contains('*')) {
        return error(StatusCode::BAD_REQUEST, "InvalidParameter", "size must be WIDTH*HEIGHT");
    }
    let seconds = body.pointer("/parameters/duration").and_then(Value::as_u64).unwrap_or(5);
    let job = crate::jobs::create(state, &key, seconds, &prompt);
    let id = format!("0385dc79-{:012x}", state.next_trace());
    let task = Task { key, job, queries: 0, prompt, seconds, cancelled: false, images: None, files: None };
    state.dashscope.lock().unwrap_or_else(|e| e.into_inner()).insert(id.clone(), task);
    json(
        StatusCode::OK,
        json!({ "output": { "task_status": "PENDING", "task_id": id }, "request_id": "mock" }).to_string(),
    )
}

/// `POST /api/v1/services/aigc/text2image/image-synthesis`.
pub fn image(state: &State, cx: &Ctx, key: Option<&str>) -> Response<MockBody> {
    let (key, body) = match accept(cx, key) {
        Ok(accepted) => accepted,
        Err((status, code, message)) => return error(status, code, message),
    };
    let prompt = body.pointer("/input/prompt").and_then(Value::as_str).unwrap_or_default().to_string();
    if body["model"].as_str().is_none_or(str::is_empty) || prompt.is_empty() {
        return error(StatusCode::BAD_REQUEST, "InvalidParameter", "model and input.prompt are required");
    }
    let n = body.pointer("/parameters/n").and_then(Value::as_u64).unwrap_or(1);
    if !(1..=4).contains(&n) {
        return error(StatusCode::BAD_REQUEST, "InvalidParameter", "n must be 1 to 4");
    }
    let job = crate::jobs::create(state, &key, 0, &prompt);
    let id = format!("0385dc79-{:012x}", state.next_trace());
    let task = Task { key, job, queries: 0, prompt, seconds: 0, cancelled: false, images: Some(n), files: None };
    state.dashscope.lock().unwrap_or_else(|e| e.into_inner()).insert(id.clone(), task);
    json(
        StatusCode::OK,
        json!({ "output": { "task_status": "PENDING", "task_id": id }, "request_id": "mock" }).to_string(),
    )
}

/// `POST /api/v1/services/audio/asr/transcription`.
pub fn transcription(state: &State, cx: &Ctx, key: Option<&str>) -> Response<MockBody> {
    let (key, body) = match accept(cx, key) {
        Ok(accepted) => accepted,
        Err((status, code, message)) => return error(status, code, message),
    };
    let urls = body.pointer("/input/file_urls").and_then(Value::as_array);
    let files: Option<Vec<String>> = urls.and_then(|u| u.iter().map(|u| u.as_str().map(str::to_string)).collect());
    let Some(files) = files.filter(|f| (1..=100).contains(&f.len())) else {
        return error(StatusCode::BAD_REQUEST, "InvalidParameter", "input.file_urls must list 1 to 100 URLs");
    };
    if body["model"].as_str().is_none_or(str::is_empty) || files.iter().any(|f| !f.starts_with("http")) {
        return error(StatusCode::BAD_REQUEST, "InvalidParameter", "model and http(s) file_urls are required");
    }
    let job = crate::jobs::create(state, &key, 0, "transcript");
    let id = format!("0385dc79-{:012x}", state.next_trace());
    let task = Task {
        key,
        job,
        queries: 0,
        prompt: String::new(),
        seconds: 0,
        cancelled: false,
        images: None,
        files: Some(files),
    };
    state.dashscope.lock().unwrap_or_else(|e| e.into_inner()).insert(id.clone(), task);
    json(
        StatusCode::OK,
        json!({ "output": { "task_status": "PENDING", "task_id": id }, "request_id": "mock" }).to_string(),
    )
}

/// The seconds a file or audio URL says it lasts (`seconds=N` in it).
fn seconds_in(url: &str) -> Option<u64> {
    let (_, rest) = url.split_once("seconds=")?;
    rest.split(|c: char| !c.is_ascii_digit()).next()?.parse().ok()
}

/// A finished transcription task: a subtask per file, the seconds of those transcribed.
fn transcribed(state: &State, id: &str, t: &Task, files: &[String], n: u32) -> Value {
    let mut heard = 0;
    let results: Vec<Value> = files
        .iter()
        .enumerate()
        .map(|(i, file)| {
            if file.contains("fail") {
                return json!({ "file_url": file, "subtask_status": "FAILED", "code": "InvalidFile.DownloadFailed",
                    "message": "The audio file cannot be downloaded." });
            }
            heard += seconds_in(file).unwrap_or(5);
            let url = format!("http://{}/cdn/{}.json?sig=ds{n}f{i}", state.addr, t.job);
            json!({ "file_url": file, "transcription_url": url, "subtask_status": "SUCCEEDED" })
        })
        .collect();
    let ok = results.iter().filter(|r| r["subtask_status"] == "SUCCEEDED").count();
    json!({ "output": { "task_id": id, "task_status": "SUCCEEDED", "results": results,
        "task_metrics": { "TOTAL": files.len(), "SUCCEEDED": ok, "FAILED": files.len() - ok } },
        "usage": { "duration": heard }, "request_id": "mock" })
}

/// `POST /api/v1/services/aigc/multimodal-generation/generation`: qwen-image-edit, qwen3-asr-flash.
pub fn multimodal(state: &State, cx: &Ctx, key: Option<&str>) -> Response<MockBody> {
    let Some(key) = key.filter(|_| cx.authorized) else { return unauthorized() };
    let invalid = |message: &str| error(StatusCode::BAD_REQUEST, "InvalidParameter", message);
    let Ok(body) = serde_json::from_slice::<Value>(&cx.body) else { return invalid("the body is not JSON") };
    let model = body["model"].as_str().unwrap_or_default();
    let parts: Vec<&Value> = body
        .pointer("/input/messages")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|m| m["content"].as_array())
        .flatten()
        .collect();
    let named = |kind: &str| parts.iter().filter_map(|p| p[kind].as_str()).collect::<Vec<_>>();
    let (images, audios, texts) = (named("image"), named("audio"), named("text"));
    let media = |url: &&str, kind: &str| url.starts_with("http") || url.starts_with(&format!("data:{kind}/"));
    let answer = |content: Value, usage: Value| {
        let choice = json!({ "finish_reason": "stop", "message": { "role": "assistant", "content": content } });
        json(
            StatusCode::OK,
            json!({ "output": { "choices": [choice] }, "usage": usage, "request_id": "mock" }).to_string(),
        )
    };
    if model.starts_with("qwen-image-edit") {
        if !(1..=3).contains(&images.len()) || !images.iter().all(|i| media(i, "image")) || texts.is_empty() {
            return invalid("an edit takes 1 to 3 images (URLs or data URIs) and a text");
        }
        if texts.contains(&"fail") {
            return error(
                StatusCode::BAD_REQUEST,
                "DataInspectionFailed",
                "Input data may contain inappropriate content.",
            );
        }
        let most = if model == "qwen-image-edit" { 1 } else { 6 };
        let n = body.pointer("/parameters/n").map_or(Some(1), Value::as_u64).filter(|n| (1..=most).contains(n));
        let Some(n) = n else { return invalid("parameters.n is out of range for this model") };
        let job = crate::jobs::create(state, key, 0, texts[0]);
        let trace = state.next_trace();
        let content: Vec<Value> = (1..=n)
            .map(|i| json!({ "image": format!("http://{}/cdn/{job}.png?sig=mm{trace}i{i}", state.addr) }))
            .collect();
        return answer(json!(content), json!({ "width": 1024, "height": 1024, "image_count": n }));
    }
    if model.contains("asr") {
        if audios.len() != 1 || !media(&audios[0], "audio") {
            return invalid("the model takes one audio (a URL or a data URI)");
        }
        let audio = audios[0];
        if audio.contains("fail") {
            return invalid("The audio file cannot be downloaded.");
        }
        // A data URI's bytes are decoded and named in the transcript (their count and SHA-256),
        // so a test sees that they arrived intact.
        let (seconds, heard) = match audio.split_once(";base64,") {
            Some((_, data)) if audio.starts_with("data:") => {
                use base64::Engine as _;
                use sha2::Digest as _;
                let Ok(bytes) = base64::engine::general_purpose::STANDARD.decode(data) else {
                    return invalid("The audio's base64 is malformed.");
                };
                let digest = hex::encode(sha2::Sha256::digest(&bytes));
                let seconds = (bytes.len() as u64).div_ceil(32_000).max(1);
                (seconds, format!("Heard {} bytes, sha256 {digest}.", bytes.len()))
            }
            _ => (seconds_in(audio).unwrap_or(3), "Hello from the mock's ears.".to_string()),
        };
        let options = body.pointer("/parameters/asr_options");
        let language = options.and_then(|o| o.get("language"));
        if language.is_some_and(|l| !l.is_string())
            || options.and_then(|o| o.get("enable_itn")).is_some_and(|i| !i.is_boolean())
        {
            return invalid("asr_options.language is a string, asr_options.enable_itn a boolean");
        }
        let choice = json!({ "finish_reason": "stop", "message": { "role": "assistant", "content": [{ "text": heard }],
            "annotations": [{ "type": "audio_info", "language": language.and_then(Value::as_str).unwrap_or("zh"),
                "emotion": "neutral" }] } });
        let usage = json!({ "input_tokens_details": { "text_tokens": 0 }, "output_tokens_details": { "text_tokens": 7 },
            "seconds": seconds });
        return json(
            StatusCode::OK,
            json!({ "output": { "choices": [choice] }, "usage": usage, "request_id": "mock" }).to_string(),
        );
    }
    answer(json!([{ "text": "Hello from mock" }]), json!({ "input_tokens": 9, "output_tokens": 3 }))
}

/// `GET /api/v1/tasks/{id}`, or `POST /api/v1/tasks/{id}/cancel`.
pub fn task(state: &State, cx: &Ctx, key: Option<&str>, id: &str, cancel: bool) -> Response<MockBody> {
    let Some(key) = key.filter(|_| cx.authorized).map(str::to_string) else { return unauthorized() };
    let mut tasks = state.dashscope.lock().unwrap_or_else(|e| e.into_inner());
    let Some(t) = tasks.get_mut(id).filter(|t| t.key == key) else {
        return error(StatusCode::NOT_FOUND, "InvalidParameter", "task not found");
    };
    if cancel {
        if t.queries > 0 || t.cancelled {
            return error(StatusCode::BAD_REQUEST, "UnsupportedOperation", "only a pending task can be cancelled");
        }
        t.cancelled = true;
        return json(StatusCode::OK, json!({ "request_id": "mock" }).to_string());
    }
    t.queries += 1;
    let output = match (t.cancelled, t.queries) {
        (true, _) => json!({ "task_id": id, "task_status": "CANCELED" }),
        (_, 1) => json!({ "task_id": id, "task_status": "PENDING" }),
        (_, 2) => json!({ "task_id": id, "task_status": "RUNNING" }),
        _ if t.prompt == "fail" => json!({ "task_id": id, "task_status": "FAILED", "code": "DataInspectionFailed",
            "message": "Output data may contain inappropriate content." }),
        (_, n) if t.files.is_some() => {
            let files = t.files.clone().unwrap_or_default();
            return json(StatusCode::OK, transcribed(state, id, t, &files, n).to_string());
        }
        (_, n) if t.images.is_some() => {
            let images = t.images.unwrap_or(1);
            let results: Vec<Value> = (1..=images)
                .map(|i| {
                    json!({ "url": format!("http://{}/cdn/{}.png?sig=ds{n}i{i}", state.addr, t.job),
                    "orig_prompt": t.prompt })
                })
                .collect();
            return json(
                StatusCode::OK,
                json!({ "output": { "task_id": id, "task_status": "SUCCEEDED", "results": results,
                    "task_metrics": { "TOTAL": images, "SUCCEEDED": images, "FAILED": 0 } },
                    "usage": { "image_count": images }, "request_id": "mock" })
                .to_string(),
            );
        }
        (_, n) => {
            let url = format!("http://{}/cdn/{}.mp4?sig=ds{n}", state.addr, t.job);
            return json(
                StatusCode::OK,
                json!({ "output": { "task_id": id, "task_status": "SUCCEEDED", "video_url": url },
                    "usage": { "duration": t.seconds.saturating_sub(1), "video_count": 1 }, "request_id": "mock" })
                .to_string(),
            );
        }
    };
    json(StatusCode::OK, json!({ "output": output, "request_id": "mock" }).to_string())
}
