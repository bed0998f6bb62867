//! SiliconFlow's video API (`vendor-apis.md` §2.1): `POST /v1/video/submit` answers
//! `{"requestId"}`; `POST /v1/video/status` (`{"requestId"}`) answers `InQueue` (with a
//! position), then `InProgress`, then `Succeed` with a URL on the mock's CDN, or `Failed` with
//! a reason when the prompt was `fail`. A request belongs to the key that submitted it; a
//! size SiliconFlow does not render is its 400 (`{"code":20012,…}`), a bad key its plain
//! `"Invalid token"`.

use crate::body::MockBody;
use crate::{json, Ctx, State};
use hyper::{Response, StatusCode};
use serde_json::{json, Value};

pub struct Request {
    key: String,
    job: String,
    queries: u32,
    prompt: String,
}

fn invalid_token() -> Response<MockBody> {
    json(StatusCode::UNAUTHORIZED, r#""Invalid token""#)
}

fn bad(message: &str) -> Response<MockBody> {
    json(StatusCode::BAD_REQUEST, json!({ "code": 20012, "message": message, "data": "" }).to_string())
}

/// `POST /v1/video/submit`.
pub fn submit(state: &State, cx: &Ctx, key: Option<&str>) -> Response<MockBody> {
    let (true, Some(key)) = (cx.authorized, key) else { return invalid_token() };
    let Ok(body) = serde_json::from_slice::<Value>(&cx.body) else { return bad("the body is not JSON") };
    if body["model"].as_str().is_none_or(str::is_empty) || body["prompt"].as_str().is_none_or(str::is_empty) {
        return bad("model and prompt are required");
    }
    if !matches!(body["image_size"].as_str(), Some("1280x720" | "720x1280" | "960x960")) {
        return bad("image_size must be 1280x720, 720x1280 or 960x960");
    }
    let prompt = body["prompt"].as_str().unwrap_or_default().to_string();
    let job = crate::jobs::create(state, key, 5, &prompt);
    let id = format!("sf-{}", state.next_trace());
    let request = Request { key: key.into(), job, queries: 0, prompt };
    state.siliconflow.lock().unwrap_or_else(|e| e.into_inner()).insert(id.clone(), request);
    json(StatusCode::OK, json!({ "requestId": id }).to_string())
}

/// `POST /v1/video/status`: the caller's request, a step further at each query.
pub fn status(state: &State, cx: &Ctx, key: Option<&str>) -> Response<MockBody> {
    let (true, Some(key)) = (cx.authorized, key) else { return invalid_token() };
    let id = serde_json::from_slice::<Value>(&cx.body).ok().and_then(|v| v["requestId"].as_str().map(str::to_string));
    let mut requests = state.siliconflow.lock().unwrap_or_else(|e| e.into_inner());
    let Some(r) = id.and_then(|id| requests.get_mut(&id)).filter(|r| r.key == key) else {
        return bad("requestId not found");
    };
    r.queries += 1;
    let v = match r.queries {
        1 => json!({ "status": "InQueue", "reason": "", "position": 2 }),
        2 => json!({ "status": "InProgress", "reason": "", "position": 0 }),
        _ if r.prompt == "fail" => json!({ "status": "Failed", "reason": "sensitive content detected", "position": 0 }),
        n => json!({ "status": "Succeed", "reason": "", "position": 0, "results": {
            "videos": [{ "url": format!("http://{}/cdn/{}.mp4?sig=sf{n}", state.addr, r.job) }],
            "timings": { "inference": 12.3 }, "seed": 42 } }),
    };
    json(StatusCode::OK, v.to_string())
}
