//! MiniMax's voices (`compat-protocols.md` §1.2), each in the account (key) that made it; every
//! failure is HTTP 200 with `base_resp`:
//! - `POST /v1/voice_clone` (`file_id` of a `voice_clone` upload of this key, an optional
//!   `clone_prompt.prompt_audio` of a `prompt_audio` upload, a `voice_id` of 8 to 256 letters,
//!   digits, `-` and `_` starting with a letter, unique in the account; with `text` and `model`
//!   a `demo_audio` URL);
//! - `POST /v1/voice_design` (`prompt`, `preview_text`, an optional `voice_id`): a
//!   `ttv-voice-…` id and the preview's audio as hex in `trial_audio`;
//! - `POST /v1/get_voice` (`voice_type`: system, voice_cloning, voice_generation or all) and
//!   `POST /v1/delete_voice` (`voice_type`, `voice_id`).
//!
//! A synthesis naming a voice made on another account fails with 2054, as MiniMax's does
//! (`minimax.rs` asks [`made_elsewhere`]); stock voices are every id no account made.

use crate::body::MockBody;
use crate::minimax_jobs::{failure, login_fail, ok, store};
use crate::{Ctx, State};
use hyper::Response;
use serde_json::{json, Value};

/// A voice an account made.
pub struct Voice {
    key: String,
    kind: &'static str,
    description: String,
}

const STOCK: &[(&str, &str)] = &[("male-qn-qingse", "青涩青年音色"), ("female-shaonv", "少女音色")];

/// Whether `voice` was made by an account other than `key`'s (and not by `key`'s).
pub fn made_elsewhere(state: &State, key: Option<&str>, voice: &str) -> bool {
    let s = store(state);
    let mine = s.voices.iter().any(|((k, v), _)| v == voice && Some(k.as_str()) == key);
    !mine && s.voices.keys().any(|(_, v)| v == voice)
}

fn body(cx: &Ctx) -> Option<serde_json::Map<String, Value>> {
    match serde_json::from_slice(&cx.body) {
        Ok(Value::Object(o)) => Some(o),
        _ => None,
    }
}

fn file_of(state: &State, key: &str, id: &Value, purpose: &str) -> bool {
    let id = id.as_u64().or_else(|| id.as_str()?.parse().ok()).unwrap_or_default();
    store(state).file_purpose(id, key).is_some_and(|p| p == purpose)
}

fn valid_voice_id(id: &str) -> bool {
    (8..=256).contains(&id.len())
        && id.starts_with(|c: char| c.is_ascii_alphabetic())
        && id.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

/// `POST /v1/voice_clone`.
pub fn clone(state: &State, cx: &Ctx, key: Option<&str>) -> Response<MockBody> {
    let (true, Some(key)) = (cx.authorized, key) else { return login_fail() };
    let Some(b) = body(cx) else { return failure(2013, "invalid params: body") };
    let Some(voice_id) = b.get("voice_id").and_then(Value::as_str).filter(|v| valid_voice_id(v)) else {
        return failure(2013, "invalid params: voice_id");
    };
    if !b.get("file_id").is_some_and(|f| file_of(state, key, f, "voice_clone")) {
        return failure(2013, "invalid params: file_id not found");
    }
    if let Some(prompt) = b.get("clone_prompt").and_then(|p| p.get("prompt_audio")) {
        if !file_of(state, key, prompt, "prompt_audio") {
            return failure(2013, "invalid params: prompt_audio not found");
        }
    }
    let mut s = store(state);
    if s.voices.contains_key(&(key.to_string(), voice_id.to_string())) {
        return failure(2039, "voice clone voice id duplicate");
    }
    let voice = Voice { key: key.into(), kind: "voice_cloning", description: String::new() };
    s.voices.insert((key.to_string(), voice_id.to_string()), voice);
    let demo = match (b.get("text"), b.get("model")) {
        (Some(Value::String(_)), Some(Value::String(_))) => json!(format!("https://cdn.mock/demo/{voice_id}.mp3")),
        _ => json!(""),
    };
    ok(json!({ "input_sensitive": false, "input_sensitive_type": 0, "demo_audio": demo }))
}

/// `POST /v1/voice_design`.
pub fn design(state: &State, cx: &Ctx, key: Option<&str>) -> Response<MockBody> {
    let (true, Some(key)) = (cx.authorized, key) else { return login_fail() };
    let Some(b) = body(cx) else { return failure(2013, "invalid params: body") };
    let (Some(prompt), Some(preview)) =
        (b.get("prompt").and_then(Value::as_str), b.get("preview_text").and_then(Value::as_str))
    else {
        return failure(2013, "invalid params: prompt and preview_text are required");
    };
    let mut s = store(state);
    let voice_id = match b.get("voice_id").and_then(Value::as_str) {
        Some(v) if valid_voice_id(v) => v.to_string(),
        Some(_) => return failure(2013, "invalid params: voice_id"),
        None => format!("ttv-voice-{}", s.next_id()),
    };
    let voice = Voice { key: key.into(), kind: "voice_generation", description: prompt.to_string() };
    s.voices.insert((key.to_string(), voice_id.clone()), voice);
    let audio = hex::encode(format!("ID3mock-audio:{preview}"));
    ok(json!({ "voice_id": voice_id, "trial_audio": audio }))
}

/// `POST /v1/get_voice`.
pub fn list(state: &State, cx: &Ctx, key: Option<&str>) -> Response<MockBody> {
    let (true, Some(key)) = (cx.authorized, key) else { return login_fail() };
    let kind = body(cx).and_then(|b| b.get("voice_type").and_then(Value::as_str).map(str::to_string));
    let Some(kind) = kind.filter(|k| ["system", "voice_cloning", "voice_generation", "all"].contains(&k.as_str()))
    else {
        return failure(2013, "invalid params: voice_type");
    };
    let wants = |k: &str| kind == "all" || kind == k;
    let s = store(state);
    let mut made: Vec<(&String, &Voice)> =
        s.voices.iter().filter(|((_, _), v)| v.key == key).map(|((_, id), v)| (id, v)).collect();
    made.sort_by_key(|(id, _)| id.as_str());
    let of = |k: &str| -> Vec<Value> {
        made.iter()
            .filter(|(_, v)| v.kind == k && wants(k))
            .map(|(id, v)| json!({ "voice_id": id, "description": [v.description], "created_time": "2026-12-02" }))
            .collect()
    };
    let system: Vec<Value> = if wants("system") {
        STOCK.iter().map(|(id, name)| json!({ "voice_id": id, "voice_name": name, "description": [] })).collect()
    } else {
        Vec::new()
    };
    ok(
        json!({ "system_voice": system, "voice_cloning": of("voice_cloning"), "voice_generation": of("voice_generation") }),
    )
}

/// `POST /v1/delete_voice`.
pub fn delete(state: &State, cx: &Ctx, key: Option<&str>) -> Response<MockBody> {
    let (true, Some(key)) = (cx.authorized, key) else { return login_fail() };
    let Some(voice_id) = body(cx).and_then(|b| b.get("voice_id").and_then(Value::as_str).map(str::to_string)) else {
        return failure(2013, "invalid params: voice_id");
    };
    match store(state).voices.remove(&(key.to_string(), voice_id.clone())) {
        Some(_) => ok(json!({ "voice_id": voice_id, "created_time": "2026-12-02" })),
        None => failure(2013, "invalid params: voice not found"),
    }
}
