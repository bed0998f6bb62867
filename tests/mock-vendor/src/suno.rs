//! The "Suno API" gateway shape (`vendor-apis.md` §5), each task in the account (bearer key)
//! that submitted it: `POST /suno/submit/{action}` (`MUSIC` or `LYRICS`, any case) answers
//! `{"code":"success","data":"<task id>"}`; `POST /suno/fetch` (`{"ids":[…]}`) and
//! `GET /suno/fetch/{id}` answer `SUBMITTED`, then `IN_PROGRESS` with a percentage, then
//! `SUCCESS` with two clips whose `audio_url` is on the mock's CDN (or lyrics text), or
//! `FAILURE` with a `fail_reason` when the prompt was `fail`. Failures are `code: "error"`:
//! a bad key is HTTP 401, a key starting `poor` has no credits left (HTTP 402).

use crate::body::MockBody;
use crate::{json, Ctx, State};
use hyper::{Response, StatusCode};
use serde_json::{json, Value};

pub struct Task {
    key: String,
    lyrics: bool,
    prompt: String,
    /// The mock's job (`jobs.rs`) whose file the CDN serves for each clip.
    job: String,
    fetches: u32,
}

fn error(status: StatusCode, message: &str) -> Response<MockBody> {
    json(status, json!({ "code": "error", "message": message, "data": null }).to_string())
}

/// `POST /suno/submit/{action}`.
pub fn submit(state: &State, cx: &Ctx, key: Option<&str>, action: &str) -> Response<MockBody> {
    let (true, Some(key)) = (cx.authorized, key) else { return error(StatusCode::UNAUTHORIZED, "invalid token") };
    if key.starts_with("poor") {
        return error(StatusCode::PAYMENT_REQUIRED, "insufficient credits");
    }
    let lyrics = match action.to_ascii_uppercase().as_str() {
        "MUSIC" => false,
        "LYRICS" => true,
        _ => return error(StatusCode::BAD_REQUEST, "unknown action"),
    };
    let Ok(body) = serde_json::from_slice::<Value>(&cx.body) else { return error(StatusCode::BAD_REQUEST, "bad json") };
    let prompt =
        ["prompt", "gpt_description_prompt", "tags"].iter().find_map(|k| body[*k].as_str().filter(|s| !s.is_empty()));
    let Some(prompt) = prompt else { return error(StatusCode::OK, "prompt is required") };
    if lyrics && body["prompt"].as_str().is_none_or(str::is_empty) {
        return error(StatusCode::OK, "lyrics need a prompt");
    }
    let job = crate::jobs::create(state, key, 120, prompt);
    let id = format!("suno-{}", state.next_trace());
    let task = Task { key: key.into(), lyrics, prompt: prompt.into(), job, fetches: 0 };
    state.suno.lock().unwrap_or_else(|e| e.into_inner()).insert(id.clone(), task);
    json(StatusCode::OK, json!({ "code": "success", "message": "", "data": id }).to_string())
}

/// `POST /suno/fetch` (`ids`) or `GET /suno/fetch/{id}` (`one`): the caller's tasks, each a
/// step further at each fetch.
pub fn fetch(state: &State, cx: &Ctx, key: Option<&str>, one: Option<&str>) -> Response<MockBody> {
    let (true, Some(key)) = (cx.authorized, key) else { return error(StatusCode::UNAUTHORIZED, "invalid token") };
    let ids: Vec<String> = match one {
        Some(id) => vec![id.to_string()],
        None => match serde_json::from_slice::<Value>(&cx.body).ok().and_then(|v| v["ids"].as_array().cloned()) {
            Some(ids) => ids.iter().filter_map(|i| i.as_str().map(str::to_string)).collect(),
            None => return error(StatusCode::BAD_REQUEST, "ids are required"),
        },
    };
    let mut tasks = state.suno.lock().unwrap_or_else(|e| e.into_inner());
    let mut items = Vec::new();
    for id in ids {
        let Some(t) = tasks.get_mut(&id).filter(|t| t.key == key) else { continue };
        t.fetches += 1;
        let action = if t.lyrics { "LYRICS" } else { "MUSIC" };
        let mut item = json!({ "task_id": id, "action": action, "fail_reason": "", "submit_time": 1_700_000_000 });
        match t.fetches {
            1 => item
                .as_object_mut()
                .map(|o| o.extend([("status".into(), json!("SUBMITTED")), ("progress".into(), json!("0%"))])),
            2 => item
                .as_object_mut()
                .map(|o| o.extend([("status".into(), json!("IN_PROGRESS")), ("progress".into(), json!("45%"))])),
            _ if t.prompt == "fail" => item.as_object_mut().map(|o| {
                o.extend([
                    ("status".into(), json!("FAILURE")),
                    ("fail_reason".into(), json!("the lyrics were rejected")),
                ])
            }),
            n => {
                let clips: Vec<Value> = if t.lyrics {
                    vec![json!({ "id": "lyrics-1", "status": "complete", "title": "Rain", "text": "[Verse]\nrain" })]
                } else {
                    (1..=2)
                        .map(|c| {
                            let url = format!("http://{}/cdn/{}.mp3?sig=suno{n}c{c}", state.addr, t.job);
                            json!({ "id": format!("clip-{c}"), "status": "complete", "title": "Song", "audio_url": url,
                                "model_name": "chirp-v3", "metadata": { "duration": 120.5, "tags": "pop" } })
                        })
                        .collect()
                };
                item.as_object_mut().map(|o| {
                    o.extend([
                        ("status".into(), json!("SUCCESS")),
                        ("progress".into(), json!("100%")),
                        ("data".into(), json!(clips)),
                    ])
                })
            }
        };
        items.push(item);
    }
    let data = match one {
        Some(_) => items.into_iter().next().unwrap_or(Value::Null),
        None => Value::Array(items),
    };
    json(StatusCode::OK, json!({ "code": "success", "message": "", "data": data }).to_string())
}
