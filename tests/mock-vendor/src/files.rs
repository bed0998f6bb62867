//! OpenAI's files API, as far as the gateway's contract tests need it: `POST /v1/files`
//! (multipart: `purpose` and `file`) and `GET /v1/files/{id}`. As at the real vendor, a file
//! exists only in the account (key) that uploaded it: another key gets 404. `GET /v1/files`
//! lists the key's files (`?purpose=` filters); a list for a purpose starting `hang-once-`
//! never answers its first request, and an upload with purpose `hang` never answers, to test
//! what the gateway does when a request got no answer.

use crate::body::MockBody;
use crate::{json, openai, Ctx, State};
use hyper::{Response, StatusCode};

/// An uploaded file: its owner key and its OpenAI file object.
pub struct Stored {
    key: String,
    object: serde_json::Value,
}

pub async fn upload(state: &State, cx: &Ctx, key: Option<&str>) -> Response<MockBody> {
    if !cx.authorized {
        return openai::unauthorized();
    }
    let (purpose, filename, data) = match crate::multipart::purpose_and_file(cx).await {
        Ok(form) => form,
        Err(e) => return openai::bad_request(&e),
    };
    if purpose == "hang" {
        tokio::time::sleep(std::time::Duration::from_secs(3600)).await;
    }
    let id = format!("file-{}", state.next_trace());
    let object = serde_json::json!({
        "id": id, "object": "file", "bytes": data.len(), "created_at": 1_700_000_000,
        "filename": filename, "purpose": purpose, "fnv1a64": fnv1a64(&data),
    });
    let stored = Stored { key: key.unwrap_or_default().to_string(), object: object.clone() };
    state.files.lock().unwrap_or_else(|e| e.into_inner()).insert(id, stored);
    json(StatusCode::OK, object.to_string())
}

pub async fn retrieve(state: &State, cx: &Ctx, key: Option<&str>, id: &str) -> Response<MockBody> {
    if !cx.authorized {
        return openai::unauthorized();
    }
    let files = state.files.lock().unwrap_or_else(|e| e.into_inner());
    match files.get(id) {
        Some(f) if Some(f.key.as_str()) == key => json(StatusCode::OK, f.object.to_string()),
        _ => {
            let v = serde_json::json!({"error": {"message": format!("No such File object: {id}"),
                "type": "invalid_request_error", "param": "id", "code": null}});
            json(StatusCode::NOT_FOUND, v.to_string())
        }
    }
}

pub async fn list(state: &State, cx: &Ctx, key: Option<&str>, purpose: Option<String>) -> Response<MockBody> {
    if !cx.authorized {
        return openai::unauthorized();
    }
    if let Some(p) = purpose.as_deref().filter(|p| p.starts_with("hang-once-")) {
        if state.hung.lock().unwrap_or_else(|e| e.into_inner()).insert(p.to_string()) {
            tokio::time::sleep(std::time::Duration::from_secs(3600)).await;
        }
    }
    let files = state.files.lock().unwrap_or_else(|e| e.into_inner());
    let data: Vec<&serde_json::Value> = files
        .values()
        .filter(|f| Some(f.key.as_str()) == key)
        .filter(|f| purpose.as_deref().is_none_or(|p| f.object["purpose"] == p))
        .map(|f| &f.object)
        .collect();
    json(StatusCode::OK, serde_json::json!({ "object": "list", "data": data }).to_string())
}

/// A checksum the tests compare with what they uploaded (FNV-1a 64: the mock only proves the
/// bytes arrived intact; the field is the mock's, not OpenAI's).
pub fn fnv1a64(data: &[u8]) -> String {
    let mut h: u64 = 0xcbf29ce484222325;
    for b in data {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x100000001b3);
    }
    format!("{h:016x}")
}
