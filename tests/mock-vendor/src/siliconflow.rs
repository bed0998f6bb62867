//! SiliconFlow's video API (`vendor-apis.md` §2.1): `POST /v1/video/submit` answers
//! `{"requestId"}`; `POST /v1/video/status` (`{"requestId"}`) answers `InQueue` (with a
//! position), then `InProgress`, then `Succeed` with a URL on the mock's CDN, or `Failed` with
//! a reason when the prompt was `fail`. A request belongs to the key that submitted it; a
//! size SiliconFlow does not render is its 400 (`{"code":20012,…}`), a bad key its plain
//! `"Invalid token"`.
//!
//! Its reference audio (docs.siliconflow.cn `api-reference/audio/`): `POST
//! /v1/uploads/audio/voice` (JSON with a data URI or URL, or a form with `file`) answers
//! `{"uri":"speech:…"}`; `GET /v1/audio/voice/list` answers the key's own `{"results":[…]}`;
//! `POST /v1/audio/voice/deletions` `{"uri"}` removes one of the key's. Each account (key)
//! sees only its own references, as at SiliconFlow, and speaks only with them: a speech
//! request (`POST /v1/audio/speech`, otherwise `audio.rs`) whose `voice` is a `speech:…` uri
//! the key's account does not hold is refused with SiliconFlow's 400 (`{"code":20012,…}`).

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

/// One account's reference audio (`POST /v1/uploads/audio/voice`), by key: the list entries
/// SiliconFlow answers, in upload order.
pub type References = std::collections::HashMap<String, Vec<Value>>;

/// `POST /v1/uploads/audio/voice`: JSON `{model, customName, text, audio}` (`audio` a data URI
/// or a URL) or a form with those text fields and the audio as `file`; answers
/// `{"uri":"speech:<customName>:<account>:<n>"}`, the reference kept in the key's account.
pub async fn upload_reference(state: &State, cx: &Ctx, key: Option<&str>) -> Response<MockBody> {
    let (true, Some(key)) = (cx.authorized, key) else { return invalid_token() };
    let mut fields = std::collections::HashMap::new();
    // The audio's copies: a file and an `audio` field.
    let mut audio = 0;
    match crate::multipart::parts(cx).await {
        Some(Err(e)) => return bad(&e),
        Some(Ok(parts)) => {
            for part in parts {
                match (part.name.as_str(), part.filename) {
                    ("file", Some(_)) if !part.data.is_empty() => audio += 1,
                    (name, None) => {
                        fields.insert(name.to_string(), String::from_utf8_lossy(&part.data).into_owned());
                    }
                    (name, Some(_)) => return bad(&format!("unexpected file '{name}'")),
                }
            }
        }
        None => {
            let Ok(Value::Object(body)) = serde_json::from_slice::<Value>(&cx.body) else {
                return bad("the body is not a JSON object");
            };
            for (name, value) in body {
                let Value::String(value) = value else { return bad(&format!("'{name}' must be a string")) };
                fields.insert(name, value);
            }
        }
    }
    if let Some(a) = fields.remove("audio") {
        if !(a.starts_with("data:audio/") && a.contains(";base64,") || a.starts_with("http")) {
            return bad("audio must be a base64 data URI (data:audio/mpeg;base64,…) or a URL");
        }
        audio += 1;
    }
    let field = |k: &str| fields.get(k).filter(|v| !v.trim().is_empty()).cloned();
    let (Some(model), Some(name), Some(text)) = (field("model"), field("customName"), field("text")) else {
        return bad("model, customName and text are required");
    };
    if audio != 1 {
        return bad("the audio is required, once: as 'audio' or as the file 'file'");
    }
    let uri = format!("speech:{name}:{}:{}", crate::files::fnv1a64(key.as_bytes()), state.next_trace());
    let reference = json!({ "model": model, "customName": name, "text": text, "uri": uri });
    state
        .siliconflow_references
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .entry(key.into())
        .or_default()
        .push(reference);
    json(StatusCode::OK, json!({ "uri": uri }).to_string())
}

/// `GET /v1/audio/voice/list`: the key's references, `{"results":[…]}` as SiliconFlow's API
/// reference writes it.
pub fn list_references(state: &State, cx: &Ctx, key: Option<&str>) -> Response<MockBody> {
    let (true, Some(key)) = (cx.authorized, key) else { return invalid_token() };
    let references = state.siliconflow_references.lock().unwrap_or_else(|e| e.into_inner());
    let mine = references.get(key).cloned().unwrap_or_default();
    json(StatusCode::OK, json!({ "results": mine }).to_string())
}

/// `POST /v1/audio/voice/deletions` `{"uri"}`: removes one of the key's references. SiliconFlow
/// documents its answer only as a string; an unknown uri is the mock's 400.
pub fn delete_reference(state: &State, cx: &Ctx, key: Option<&str>) -> Response<MockBody> {
    let (true, Some(key)) = (cx.authorized, key) else { return invalid_token() };
    let uri = serde_json::from_slice::<Value>(&cx.body).ok().and_then(|v| v["uri"].as_str().map(str::to_string));
    let Some(uri) = uri.filter(|u| !u.is_empty()) else { return bad("uri is required") };
    let mut references = state.siliconflow_references.lock().unwrap_or_else(|e| e.into_inner());
    let mine = references.entry(key.into()).or_default();
    match mine.iter().position(|r| r["uri"] == uri.as_str()) {
        Some(i) => {
            mine.remove(i);
            json(StatusCode::OK, r#""success""#)
        }
        None => bad("the voice does not exist"),
    }
}

/// `POST /v1/audio/speech` naming a reference (`"voice":"speech:…"`) the key's account does
/// not hold: SiliconFlow's refusal. `None` lets `audio::speech` answer (any other voice, or a
/// request it refuses itself).
pub fn foreign_reference(state: &State, cx: &Ctx, key: Option<&str>) -> Option<Response<MockBody>> {
    let (true, Some(key)) = (cx.authorized, key) else { return None };
    let body = serde_json::from_slice::<Value>(&cx.body).ok()?;
    let voice = body["voice"].as_str().filter(|v| v.starts_with("speech:"))?;
    let references = state.siliconflow_references.lock().unwrap_or_else(|e| e.into_inner());
    let held = references.get(key).is_some_and(|mine| mine.iter().any(|r| r["uri"] == voice));
    (!held).then(|| bad(&format!("the voice {voice} does not exist")))
}
