//! Volcengine Ark's Seedance video tasks (`vendor-apis.md` §3.1), under `/api/v3`:
//! `POST /contents/generations/tasks` answers `{"id":"cgt-…"}`; `GET …/{id}` answers
//! `queued`, then `running`, then `succeeded` with `content.video_url` on the mock's CDN and
//! `usage.completion_tokens` (width × height × frames / 1024, as Ark counts), or `failed` with
//! Ark's error when the prompt was `fail`; `DELETE …/{id}` cancels a task still queued. Errors
//! are Ark's `{"error":{"code","message","type"}}`; a task belongs to the key that made it.

use crate::body::MockBody;
use crate::{json, Ctx, State};
use hyper::{Response, StatusCode};
use serde_json::{json, Value};

pub struct Task {
    key: String,
    job: String,
    queries: u32,
    prompt: String,
    cancelled: bool,
    tokens: u64,
    model: String,
}

fn error(status: StatusCode, code: &str, message: &str) -> Response<MockBody> {
    let kind = status.canonical_reason().unwrap_or("Error").replace(' ', "");
    json(status, json!({ "error": { "code": code, "message": message, "type": kind } }).to_string())
}

fn account(cx: &Ctx, key: Option<&str>) -> Option<String> {
    key.filter(|_| cx.authorized).map(str::to_string)
}

/// Width and height Seedance renders for a resolution and ratio.
fn dimensions(resolution: &str, ratio: &str) -> Option<(u64, u64)> {
    let short = match resolution {
        "480p" => 480,
        "720p" => 720,
        "1080p" => 1080,
        _ => return None,
    };
    let (a, b) = match ratio {
        "16:9" => (16, 9),
        "9:16" => (9, 16),
        "4:3" => (4, 3),
        "3:4" => (3, 4),
        "1:1" => (1, 1),
        "21:9" => (21, 9),
        _ => return None,
    };
    Some(if a >= b { (short * a / b, short) } else { (short, short * b / a) })
}

/// `POST /api/v3/contents/generations/tasks`.
pub fn create(state: &State, cx: &Ctx, key: Option<&str>) -> Response<MockBody> {
    let Some(key) = account(cx, key) else {
        return error(StatusCode::UNAUTHORIZED, "AuthenticationError", "the API key is invalid");
    };
    let bad = |m: &str| error(StatusCode::BAD_REQUEST, "InvalidParameter", m);
    let Ok(body) = serde_json::from_slice::<Value>(&cx.body) else { return bad("the body is not JSON") };
    let model = body["model"].as_str().unwrap_or_default().to_string();
    if model.is_empty() {
        return error(StatusCode::BAD_REQUEST, "MissingParameter", "model is required");
    }
    let content = body["content"].as_array().cloned().unwrap_or_default();
    let prompt = content.iter().find(|c| c["type"] == "text").and_then(|c| c["text"].as_str()).unwrap_or_default();
    if prompt.is_empty() && !content.iter().any(|c| c["type"] == "image_url") {
        return bad("content needs a text or an image_url");
    }
    let duration = body["duration"].as_u64().unwrap_or(5);
    if !(2..=12).contains(&duration) {
        return bad("duration must be 2 to 12");
    }
    let ratio = body["ratio"].as_str().unwrap_or("16:9");
    let Some((w, h)) = dimensions(body["resolution"].as_str().unwrap_or("720p"), ratio) else {
        return bad("resolution or ratio is not supported");
    };
    let tokens = w.div_ceil(16) * 16 * h.div_ceil(16) * 16 * (24 * duration + 1) / 1024;
    let job = crate::jobs::create(state, &key, duration, prompt);
    let id = format!("cgt-2025{:010}", state.next_trace());
    let task = Task { key, job, queries: 0, prompt: prompt.into(), cancelled: false, tokens, model };
    state.ark.lock().unwrap_or_else(|e| e.into_inner()).insert(id.clone(), task);
    json(StatusCode::OK, json!({ "id": id }).to_string())
}

/// `GET` or `DELETE /api/v3/contents/generations/tasks/{id}`.
pub fn task(state: &State, cx: &Ctx, key: Option<&str>, id: &str, delete: bool) -> Response<MockBody> {
    let Some(key) = account(cx, key) else {
        return error(StatusCode::UNAUTHORIZED, "AuthenticationError", "the API key is invalid");
    };
    let mut tasks = state.ark.lock().unwrap_or_else(|e| e.into_inner());
    let Some(t) = tasks.get_mut(id).filter(|t| t.key == key) else {
        return error(StatusCode::NOT_FOUND, "ResourceNotFound", "the task does not exist");
    };
    if delete {
        if t.queries > 0 || t.cancelled {
            return error(StatusCode::BAD_REQUEST, "InvalidParameter", "only a queued task can be cancelled");
        }
        t.cancelled = true;
        return json(StatusCode::OK, "{}");
    }
    t.queries += 1;
    let base = json!({ "id": id, "model": t.model, "created_at": 1_743_414_619, "updated_at": 1_743_414_673 });
    let mut v = base;
    match (t.cancelled, t.queries) {
        (true, _) => v["status"] = "cancelled".into(),
        (_, 1) => v["status"] = "queued".into(),
        (_, 2) => v["status"] = "running".into(),
        _ if t.prompt == "fail" => {
            v["status"] = "failed".into();
            v["error"] = json!({ "code": "OutputVideoSensitiveContentDetected", "message": "the output may contain sensitive content" });
        }
        (_, n) => {
            v["status"] = "succeeded".into();
            v["content"] = json!({ "video_url": format!("http://{}/cdn/{}.mp4?sig=ark{n}", state.addr, t.job) });
            v["usage"] = json!({ "completion_tokens": t.tokens, "total_tokens": t.tokens });
        }
    }
    json(StatusCode::OK, v.to_string())
}
