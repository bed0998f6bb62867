//! Volcengine's Visual API for Jimeng's video (`vendor-apis.md` §3.2): `POST /?Action=…&Version=2022-08-31`
//! with `CVSync2AsyncSubmitTask` (answers a task id) and `CVSync2AsyncGetResult` (answers
//! `in_queue`, then `generating`, then `done` with a `video_url` on the mock's CDN; a job
//! whose prompt was `fail` ends with the service's risk-check code instead).
//!
//! Every request is authenticated as Volcengine's gateway does: the `Authorization` header's
//! signature is recomputed here (HMAC-SHA256 V4: the canonical request over the method, path,
//! sorted query, the headers it names and the body's hash; the key derived from the account's
//! secret by date, region, service), `X-Content-Sha256` must be the body's hash and `X-Date`
//! within 900 s of now. Refusals use the OpenAPI envelope (`ResponseMetadata.Error`); the
//! service's own answers the `{"code":10000,…}` one. A task belongs to the account that
//! submitted it, and is polled with the `req_key` it was submitted to.

use crate::body::MockBody;
use crate::{json, Ctx, State};
use hmac::Mac;
use hyper::{Response, StatusCode};
use serde_json::{json, Value};
use sha2::Digest;

/// Access key → secret key.
const ACCOUNTS: &[(&str, &str)] = &[("AK-jimeng", "SK-jimeng")];
const MAX_SKEW_SECS: i64 = 900;

pub struct Task {
    account: String,
    req_key: String,
    job: String,
    queries: u32,
    prompt: String,
}

fn refuse(status: StatusCode, action: &str, code: &str, message: &str) -> Response<MockBody> {
    let body = json!({ "ResponseMetadata": { "RequestId": "mock", "Action": action, "Version": "2022-08-31",
        "Service": "cv", "Region": "cn-north-1", "Error": { "Code": code, "Message": message } } });
    json(status, body.to_string())
}

fn answer(code: i64, message: &str, data: Value) -> Response<MockBody> {
    let body = json!({ "code": code, "message": message, "request_id": "mock", "data": data, "status": code,
        "time_elapsed": "1ms" });
    json(StatusCode::OK, body.to_string())
}

fn hmac(key: &[u8], data: &str) -> Vec<u8> {
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(key).expect("any key");
    mac.update(data.as_bytes());
    mac.finalize().into_bytes().to_vec()
}

fn rfc3986(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Seconds since the epoch of an `X-Date` (`YYYYMMDDTHHMMSSZ`).
fn parse_x_date(d: &str) -> Option<i64> {
    let b = d.as_bytes();
    if b.len() != 16 || b[8] != b'T' || b[15] != b'Z' {
        return None;
    }
    let n = |r: std::ops::Range<usize>| d.get(r)?.parse::<i64>().ok();
    let (y, m, day) = (n(0..4)?, n(4..6)?, n(6..8)?);
    let (hh, mm, ss) = (n(9..11)?, n(11..13)?, n(13..15)?);
    // Days from civil (Howard Hinnant's algorithm).
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * (m + if m > 2 { -3 } else { 9 }) + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some(days * 86_400 + hh * 3600 + mm * 60 + ss)
}

/// The account that signed the request, or the gateway's refusal (its code and message, 401).
fn verify(cx: &Ctx, method: &str, path: &str, query: &str) -> Result<&'static str, (&'static str, &'static str)> {
    let header = |name: &str| cx.headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or_default().trim().to_string();
    let unauthorized = |code, message| Err((code, message));
    let auth = header("authorization");
    let Some(rest) = auth.strip_prefix("HMAC-SHA256 ") else {
        return unauthorized("MissingAuthenticationToken", "the request is not signed");
    };
    let mut credential = "";
    let mut signed_headers = "";
    let mut signature = "";
    for part in rest.split(',').map(str::trim) {
        if let Some(v) = part.strip_prefix("Credential=") {
            credential = v;
        } else if let Some(v) = part.strip_prefix("SignedHeaders=") {
            signed_headers = v;
        } else if let Some(v) = part.strip_prefix("Signature=") {
            signature = v;
        }
    }
    let scope: Vec<&str> = credential.split('/').collect();
    let [ak, date, region, service, "request"] = scope[..] else {
        return unauthorized("InvalidCredential", "the credential scope is malformed");
    };
    let Some(&(account, sk)) = ACCOUNTS.iter().find(|(a, _)| *a == ak) else {
        return unauthorized("InvalidAccessKey", "the access key is unknown");
    };
    let x_date = header("x-date");
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64);
    match parse_x_date(&x_date) {
        Some(t) if (now - t).abs() <= MAX_SKEW_SECS && x_date.starts_with(date) => {}
        _ => return unauthorized("SignatureDoesNotMatch", "X-Date is missing, malformed or too far from now"),
    }
    let body_hash = hex::encode(sha2::Sha256::digest(&cx.body));
    if header("x-content-sha256") != body_hash {
        return unauthorized("SignatureDoesNotMatch", "X-Content-Sha256 is not the body's hash");
    }
    let names: Vec<&str> = signed_headers.split(';').collect();
    if !names.contains(&"host") || !names.contains(&"x-date") || !names.contains(&"x-content-sha256") {
        return unauthorized("SignatureDoesNotMatch", "host, x-date and x-content-sha256 must be signed");
    }
    let mut canonical_headers = String::new();
    for name in &names {
        let mut value = header(name);
        if *name == "host" {
            value = value.strip_suffix(":80").or_else(|| value.strip_suffix(":443")).unwrap_or(&value).to_string();
        }
        canonical_headers.push_str(&format!("{name}:{value}\n"));
    }
    let mut pairs: Vec<(String, String)> = query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| p.split_once('=').unwrap_or((p, "")))
        .map(|(k, v)| (rfc3986(&crate::percent_decode(k)), rfc3986(&crate::percent_decode(v))))
        .collect();
    pairs.sort();
    let canonical_query = pairs.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join("&");
    let canonical = format!("{method}\n{path}\n{canonical_query}\n{canonical_headers}\n{signed_headers}\n{body_hash}");
    let to_sign = format!(
        "HMAC-SHA256\n{x_date}\n{date}/{region}/{service}/request\n{}",
        hex::encode(sha2::Sha256::digest(canonical.as_bytes()))
    );
    let key = hmac(&hmac(&hmac(&hmac(sk.as_bytes(), date), region), service), "request");
    if hex::encode(hmac(&key, &to_sign)) != signature {
        return unauthorized("SignatureDoesNotMatch", "the request signature we calculated does not match");
    }
    Ok(account)
}

/// `POST /?Action=…`: the Visual API's actions.
pub fn action(state: &State, cx: &Ctx, path: &str, query: &str) -> Response<MockBody> {
    let param = |name: &str| crate::query_param(query, name);
    let action = param("Action").unwrap_or_default();
    let account = match verify(cx, "POST", path, query) {
        Ok(a) => a,
        Err((code, message)) => return refuse(StatusCode::UNAUTHORIZED, &action, code, message),
    };
    if param("Version").as_deref() != Some("2022-08-31") {
        return refuse(StatusCode::BAD_REQUEST, &action, "InvalidVersion", "Version must be 2022-08-31");
    }
    let Ok(body) = serde_json::from_slice::<Value>(&cx.body) else {
        return answer(50400, "Invalid Request: the body is not JSON", Value::Null);
    };
    let req_key = body["req_key"].as_str().unwrap_or_default().to_string();
    if req_key.is_empty() {
        return answer(50400, "Invalid Request: req_key is required", Value::Null);
    }
    match action.as_str() {
        "CVSync2AsyncSubmitTask" => {
            let prompt = body["prompt"].as_str().unwrap_or_default().to_string();
            if prompt.is_empty() && body["image_urls"].as_array().is_none_or(Vec::is_empty) {
                return answer(50400, "Invalid Request: prompt or image_urls is required", Value::Null);
            }
            let seconds = match body["frames"].as_u64() {
                None | Some(121) => 5,
                Some(241) => 10,
                Some(_) => return answer(50400, "Invalid Request: frames must be 121 or 241", Value::Null),
            };
            let job = crate::jobs::create(state, account, seconds, &prompt);
            let id = format!("{}", 7_392_000_000_000_u64 + state.next_trace());
            let task = Task { account: account.into(), req_key, job, queries: 0, prompt };
            state.jimeng.lock().unwrap_or_else(|e| e.into_inner()).insert(id.clone(), task);
            answer(10000, "Success", json!({ "task_id": id }))
        }
        "CVSync2AsyncGetResult" => {
            let id = body["task_id"].as_str().unwrap_or_default();
            let mut tasks = state.jimeng.lock().unwrap_or_else(|e| e.into_inner());
            let Some(task) = tasks.get_mut(id).filter(|t| t.account == account && t.req_key == req_key) else {
                return answer(10000, "Success", json!({ "status": "not_found" }));
            };
            task.queries += 1;
            match task.queries {
                1 => answer(10000, "Success", json!({ "status": "in_queue" })),
                2 => answer(10000, "Success", json!({ "status": "generating" })),
                _ if task.prompt == "fail" => answer(50412, "Output Video Risk Not Pass", Value::Null),
                n => answer(
                    10000,
                    "Success",
                    json!({ "status": "done", "resp_data": "",
                        "video_url": format!("http://{}/cdn/{}.mp4?sig=j{n}", state.addr, task.job) }),
                ),
            }
        }
        other => refuse(StatusCode::BAD_REQUEST, other, "InvalidAction", "the action is not supported"),
    }
}
