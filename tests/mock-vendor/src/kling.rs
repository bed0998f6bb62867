//! Kling's video API (`vendor-apis.md` §4): `POST /v1/videos/{text2video|image2video}` and
//! `GET /v1/videos/{kind}/{task_id}`, each answered in Kling's envelope
//! (`{"code","message","request_id","data"}`, `code` 0 on success).
//!
//! Every request is authenticated as Kling does: `Authorization: Bearer <JWT>`, HS256, header
//! with `typ: JWT`, `iss` an access key of the accounts below, the signature recomputed with
//! that account's secret key, `nbf` passed and `exp` not (code 1004 when it has). A task
//! belongs to the account that submitted it. `duration` must be the string "5" or "10" (a
//! number is refused, as Kling does), and an `external_task_id` is one task per account
//! (a repeat is refused with code 1201). The task answers `submitted`, then `processing`, then
//! `succeed` with a URL on the mock's CDN (`jobs::cdn`, which expires it once downloaded), or
//! `failed` when the prompt was `fail`. Account `ak-poor` has no resource pack left (1102).

use crate::body::MockBody;
use crate::{json, Ctx, State};
use hyper::{Response, StatusCode};
use serde_json::{json, Value};

/// Access key → secret key.
const ACCOUNTS: &[(&str, &str)] = &[("ak-1", "sk-1"), ("ak-2", "sk-2"), ("ak-poor", "sk-poor")];

pub struct Task {
    account: String,
    kind: String,
    external_task_id: Option<String>,
    /// The CDN job holding the output (`jobs::Job`).
    job: String,
    queries: u32,
    prompt: String,
    duration: String,
    created_at: u64,
}

fn envelope(status: StatusCode, code: u32, message: &str, data: Value) -> Response<MockBody> {
    let body = json!({ "code": code, "message": message, "request_id": format!("mock-{code}"), "data": data });
    json(status, body.to_string())
}

fn now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// The account whose JWT signs the request, or Kling's refusal (code and message, 401).
fn account(cx: &Ctx) -> Result<&'static str, (u32, &'static str)> {
    let refuse = |code, message| Err((code, message));
    let Some(token) = cx
        .headers
        .get(hyper::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
    else {
        return refuse(1000, "Authorization header is missing");
    };
    let Some(jwt) = crate::jwt::Jwt::parse(token) else {
        return refuse(1001, "Authorization token is malformed");
    };
    if jwt.header["alg"] != "HS256" || jwt.header["typ"] != "JWT" {
        return refuse(1001, "Authorization token header is invalid");
    }
    let claims = &jwt.claims;
    let Some(&(ak, sk)) = ACCOUNTS.iter().find(|(ak, _)| claims["iss"] == *ak) else {
        return refuse(1002, "Authorization access key is unknown");
    };
    if !jwt.signed_with(sk) {
        return refuse(1002, "Authorization signature is invalid");
    }
    let (Some(nbf), Some(exp)) = (claims["nbf"].as_u64(), claims["exp"].as_u64()) else {
        return refuse(1001, "Authorization token lacks nbf or exp");
    };
    let t = now();
    if nbf > t {
        return refuse(1003, "Authorization token is not yet valid");
    }
    if exp <= t {
        return refuse(1004, "Authorization token has expired");
    }
    Ok(ak)
}

/// `POST /v1/videos/{kind}`.
pub fn submit(state: &State, cx: &Ctx, kind: &str) -> Response<MockBody> {
    let ak = match account(cx) {
        Ok(ak) => ak,
        Err((code, message)) => return envelope(StatusCode::UNAUTHORIZED, code, message, Value::Null),
    };
    if ak == "ak-poor" {
        return envelope(StatusCode::FORBIDDEN, 1102, "Account resource pack is exhausted", Value::Null);
    }
    let bad = |message: &str| envelope(StatusCode::BAD_REQUEST, 1201, message, Value::Null);
    let Ok(body) = serde_json::from_slice::<Value>(&cx.body) else {
        return bad("request body is not JSON");
    };
    if body["model_name"].as_str().is_none_or(str::is_empty) {
        return bad("model_name is required");
    }
    let duration = match &body["duration"] {
        Value::Null => "5".to_string(),
        Value::String(d) if d == "5" || d == "10" => d.clone(),
        _ => return bad("duration must be the string \"5\" or \"10\""),
    };
    if !matches!(body["mode"].as_str(), None | Some("std" | "pro")) {
        return bad("mode must be std or pro");
    }
    let prompt = body["prompt"].as_str().unwrap_or_default().to_string();
    if kind == "image2video" && body["image"].as_str().is_none_or(str::is_empty) {
        return bad("image is required");
    }
    if kind == "text2video" && prompt.trim().is_empty() {
        return bad("prompt is required");
    }
    let external = body["external_task_id"].as_str().map(str::to_string);
    let mut tasks = state.kling.lock().unwrap_or_else(|e| e.into_inner());
    if external.is_some() && tasks.values().any(|t| t.account == ak && t.external_task_id == external) {
        return bad("external_task_id already exists");
    }
    let seconds: u64 = duration.parse().unwrap_or(5);
    let job = crate::jobs::create(state, ak, seconds, &prompt);
    let id = format!("{}", 700_000_000_000 + state.next_trace());
    let created_at = now() * 1000;
    tasks.insert(
        id.clone(),
        Task {
            account: ak.into(),
            kind: kind.into(),
            external_task_id: external.clone(),
            job,
            queries: 0,
            prompt,
            duration,
            created_at,
        },
    );
    envelope(
        StatusCode::OK,
        0,
        "SUCCEED",
        json!({ "task_id": id, "task_status": "submitted", "task_info": { "external_task_id": external },
            "created_at": created_at, "updated_at": created_at }),
    )
}

/// `GET /v1/videos/{kind}/{task_id}`: the caller's task, a step further at each query.
pub fn query(state: &State, cx: &Ctx, kind: &str, id: &str) -> Response<MockBody> {
    let ak = match account(cx) {
        Ok(ak) => ak,
        Err((code, message)) => return envelope(StatusCode::UNAUTHORIZED, code, message, Value::Null),
    };
    let mut tasks = state.kling.lock().unwrap_or_else(|e| e.into_inner());
    let Some(task) = tasks.get_mut(id).filter(|t| t.account == ak && t.kind == kind) else {
        return envelope(StatusCode::NOT_FOUND, 1203, "task not found", Value::Null);
    };
    task.queries += 1;
    let (status, result, message) = match task.queries {
        1 => ("submitted", Value::Null, ""),
        2 => ("processing", Value::Null, ""),
        _ if task.prompt == "fail" => ("failed", Value::Null, "the prompt was rejected by the content check"),
        _ => (
            "succeed",
            json!({ "videos": [{ "id": format!("v-{id}"), "duration": format!("{}.1", task.duration),
                "url": format!("http://{}/cdn/{}.mp4?sig=k{}", state.addr, task.job, task.queries) }] }),
            "",
        ),
    };
    envelope(
        StatusCode::OK,
        0,
        "SUCCEED",
        json!({ "task_id": id, "task_status": status, "task_status_msg": message,
            "task_info": { "external_task_id": task.external_task_id }, "task_result": result,
            "created_at": task.created_at, "updated_at": now() * 1000 }),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine as _;
    use hmac::Mac;

    fn token(header: &str, claims: &Value, secret: &str) -> String {
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let input = format!("{}.{}", b64.encode(header), b64.encode(claims.to_string()));
        let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).unwrap();
        mac.update(input.as_bytes());
        format!("{input}.{}", b64.encode(mac.finalize().into_bytes()))
    }

    fn code(token: &str) -> Result<&'static str, u32> {
        let mut headers = hyper::HeaderMap::new();
        headers.insert(hyper::header::AUTHORIZATION, format!("Bearer {token}").parse().unwrap());
        let cx = Ctx { headers, body: bytes::Bytes::new(), authorized: true };
        account(&cx).map_err(|(code, _)| code)
    }

    #[test]
    fn the_jwt_is_verified_not_compared() {
        let t = now();
        let hs = r#"{"alg":"HS256","typ":"JWT"}"#;
        let valid = json!({ "iss": "ak-1", "exp": t + 1800, "nbf": t - 5 });
        assert_eq!(code(&token(hs, &valid, "sk-1")), Ok("ak-1"));
        assert_eq!(code(&token(hs, &valid, "sk-2")), Err(1002), "another account's secret");
        assert_eq!(code(&token(r#"{"alg":"HS256"}"#, &valid, "sk-1")), Err(1001), "no typ");
        assert_eq!(code(&token(hs, &json!({ "iss": "ak-9", "exp": t + 1800, "nbf": t - 5 }), "sk-1")), Err(1002));
        assert_eq!(code(&token(hs, &json!({ "iss": "ak-1", "exp": t - 1, "nbf": t - 1800 }), "sk-1")), Err(1004));
        assert_eq!(code(&token(hs, &json!({ "iss": "ak-1", "exp": t + 1800, "nbf": t + 60 }), "sk-1")), Err(1003));
        assert_eq!(code(&token(hs, &json!({ "iss": "ak-1" }), "sk-1")), Err(1001));
        assert_eq!(code("not.a.jwt"), Err(1001));
    }
}
