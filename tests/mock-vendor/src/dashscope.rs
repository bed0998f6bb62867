//! Alibaba DashScope's asynchronous video synthesis (`vendor-apis.md` §6.2): the submit
//! needs `X-DashScope-Async: enable` (DashScope refuses a synchronous call of it) and answers
//! `{"output":{"task_status":"PENDING","task_id"}}`; `GET /api/v1/tasks/{id}` answers
//! `PENDING`, then `RUNNING`, then `SUCCEEDED` with a `video_url` on the mock's CDN and
//! `usage.duration` (a second less than asked: what was made), or `FAILED` with DashScope's code when the prompt was
//! `fail`; `POST /api/v1/tasks/{id}/cancel` cancels a pending task. Errors are
//! `{"code","message","request_id"}`; a task belongs to the key that made it. Text to image
//! (`POST /api/v1/services/aigc/text2image/image-synthesis`, async only) is a task of the same
//! kind whose success lists `parameters.n` PNGs in `results` and `usage.image_count`.

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
    let task = Task { key, job, queries: 0, prompt, seconds, cancelled: false, images: None };
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
    let task = Task { key, job, queries: 0, prompt, seconds: 0, cancelled: false, images: Some(n) };
    state.dashscope.lock().unwrap_or_else(|e| e.into_inner()).insert(id.clone(), task);
    json(
        StatusCode::OK,
        json!({ "output": { "task_status": "PENDING", "task_id": id }, "request_id": "mock" }).to_string(),
    )
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
