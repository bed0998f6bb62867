//! MindVideo's API (`compat-protocols.md` §3.2), under `/api/v2`: `POST /creations` answers
//! `{"code":0,"data":{"id"}}`; `GET /creations/task_progress?ids[]=<id>` answers the task at
//! 30 %, then 70 %, then completed with a `result_url` on the mock's CDN (or failed, with a
//! `task_remark`, when the prompt was `fail`).
//!
//! Every request must carry an account token (Bearer; `mv-poor`'s account has no credits
//! left), `i-lang`, `i-version` and an `i-sign` whose MD5 is recomputed with the app key
//! `s#c_120*AB` and whose timestamp is within five minutes of now. Refusals are HTTP 200 with
//! `code != 0`, as MindVideo answers.

use crate::body::MockBody;
use crate::{json, Ctx, State};
use hyper::{Response, StatusCode};
use md5::Digest;
use serde_json::{json, Value};

pub const APP_KEY: &str = "s#c_120*AB";

pub struct Creation {
    key: String,
    job: String,
    queries: u32,
    prompt: String,
}

fn refuse(code: i64, message: &str) -> Response<MockBody> {
    json(StatusCode::OK, json!({ "code": code, "message": message, "data": null }).to_string())
}

/// The account, or why the request's headers are refused (MindVideo's code and message).
fn check(cx: &Ctx, key: Option<&str>) -> Result<String, (i64, &'static str)> {
    let (true, Some(key)) = (cx.authorized, key) else { return Err((401, "Please login first")) };
    let header = |n: &str| cx.headers.get(n).and_then(|v| v.to_str().ok()).map(str::to_string);
    if header("i-lang").is_none() || header("i-version").is_none() {
        return Err((400, "i-lang and i-version are required"));
    }
    let sign: Value = header("i-sign").and_then(|s| serde_json::from_str(&s).ok()).unwrap_or(Value::Null);
    let (Some(nonce), Some(ts), Some(given)) =
        (sign["nonce"].as_str(), sign["timestamp"].as_u64(), sign["sign"].as_str())
    else {
        return Err((403, "i-sign is missing or malformed"));
    };
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64);
    if nonce.len() != 16 || !nonce.chars().all(|c| c.is_ascii_hexdigit()) || now.abs_diff(ts) > 300_000 {
        return Err((403, "i-sign nonce or timestamp is invalid"));
    }
    let expected = hex::encode(md5::Md5::digest(format!("nonce={nonce}&timestamp={ts}&app_key={APP_KEY}")));
    if given != expected {
        return Err((403, "i-sign signature is invalid"));
    }
    Ok(key.to_string())
}

/// `POST /api/v2/creations`.
pub fn create(state: &State, cx: &Ctx, key: Option<&str>) -> Response<MockBody> {
    let key = match check(cx, key) {
        Ok(k) => k,
        Err((code, message)) => return refuse(code, message),
    };
    if key == "mv-poor" {
        return refuse(1001, "Insufficient credits");
    }
    let body: Value = serde_json::from_slice(&cx.body).unwrap_or(Value::Null);
    let prompt = body.pointer("/options/prompt").and_then(Value::as_str).unwrap_or_default().to_string();
    if body["type"] != 1 || !body["bot_id"].is_u64() || prompt.is_empty() {
        return refuse(1002, "type, bot_id and options.prompt are required");
    }
    let seconds = body.pointer("/options/seconds").and_then(Value::as_u64).unwrap_or(15);
    let job = crate::jobs::create(state, &key, seconds, &prompt);
    let id = 4_000 + state.next_trace();
    let creation = Creation { key, job, queries: 0, prompt };
    state.mindvideo.lock().unwrap_or_else(|e| e.into_inner()).insert(id, creation);
    json(StatusCode::OK, json!({ "code": 0, "message": "ok", "data": { "id": id } }).to_string())
}

/// `GET /api/v2/creations/task_progress?ids[]=<id>`.
pub fn progress(state: &State, cx: &Ctx, key: Option<&str>, query: &str) -> Response<MockBody> {
    let key = match check(cx, key) {
        Ok(k) => k,
        Err((code, message)) => return refuse(code, message),
    };
    let id = crate::query_param(query, "ids[]").and_then(|i| i.parse::<u64>().ok());
    let mut creations = state.mindvideo.lock().unwrap_or_else(|e| e.into_inner());
    let Some(c) = id.and_then(|id| creations.get_mut(&id)).filter(|c| c.key == key) else {
        return json(StatusCode::OK, json!({ "code": 0, "data": [] }).to_string());
    };
    c.queries += 1;
    let task = match c.queries {
        n @ (1 | 2) => {
            json!({ "task_status": "processing", "task_progress": 30 * n + (n - 1) * 10, "task_remark": "rendering", "results": [] })
        }
        _ if c.prompt == "fail" => {
            json!({ "task_status": "failed", "task_progress": 0, "task_remark": "the prompt was rejected", "results": [] })
        }
        n => json!({ "task_status": "completed", "task_progress": 100, "task_remark": "",
            "results": [{ "result_url": format!("http://{}/cdn/{}.mp4?sig=mv{n}", state.addr, c.job) }] }),
    };
    json(StatusCode::OK, json!({ "code": 0, "data": [task] }).to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cx(sign: &str) -> Ctx {
        let mut headers = hyper::HeaderMap::new();
        headers.insert("i-lang", "en".parse().unwrap());
        headers.insert("i-version", "1.0.0".parse().unwrap());
        headers.insert("i-sign", sign.parse().unwrap());
        Ctx { headers, body: bytes::Bytes::new(), authorized: true }
    }

    #[test]
    fn the_i_sign_is_recomputed_not_compared() {
        let ts = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as u64;
        let sign = |nonce: &str, ts: u64, key: &str| {
            let md5 = hex::encode(md5::Md5::digest(format!("nonce={nonce}&timestamp={ts}&app_key={key}")));
            json!({ "nonce": nonce, "timestamp": ts, "sign": md5 }).to_string()
        };
        assert_eq!(check(&cx(&sign("0123456789abcdef", ts, APP_KEY)), Some("k")), Ok("k".to_string()));
        assert_eq!(check(&cx(&sign("0123456789abcdef", ts, "another key")), Some("k")).unwrap_err().0, 403);
        assert_eq!(check(&cx(&sign("0123456789abcdef", ts - 600_000, APP_KEY)), Some("k")).unwrap_err().0, 403);
        assert_eq!(check(&cx(&sign("short", ts, APP_KEY)), Some("k")).unwrap_err().0, 403);
        assert_eq!(check(&cx("not json"), Some("k")).unwrap_err().0, 403);
        assert_eq!(check(&cx(&sign("0123456789abcdef", ts, APP_KEY)), None).unwrap_err().0, 401);
    }
}
