//! The `jimeng` plugin: Jimeng's video generation on Volcengine's Visual API, as
//! asynchronous tasks (`vendor-apis.md` §3.2).
//!
//! - op `video` (OpenAI's Videos API): `POST /?Action=CVSync2AsyncSubmitTask&Version=2022-08-31`
//!   with the channel's model as `req_key` (e.g. `jimeng_t2v_v30`), the prompt, `seconds` (5
//!   or 10) as `frames` (24·s+1), `size` as `aspect_ratio`, an `image` URL as `image_urls`.
//! - op `task.poll`: `CVSync2AsyncGetResult` with the same `req_key` and the task id, until
//!   `done` (its `video_url` is archived by the gateway), or `not_found` / `expired` / a
//!   business code other than 10000 (the job failed).
//! - The quote, and a finished job's usage, name the tier Jimeng bills a video by:
//!   `{seconds}s` (`5s`, `10s`), with the seconds.
//!
//! Every request is signed with Volcengine's HMAC-SHA256 V4 (`sign`), region `cn-north-1` and
//! service `cv` unless the channel's settings say otherwise; the channel's keys are written
//! `AccessKey|SecretKey` and the channel must set `allow_signing = true`. Errors come in two
//! envelopes: the OpenAPI gateway's (`ResponseMetadata.Error`, HTTP 4xx/5xx: signature,
//! throttling) and the service's (`code != 10000`, also on HTTP 200).

pub mod sign;

use serde_json::{json, Value};
use tollgate_plugin_sdk::{
    export_plugin, AdapterError, Auth, Body, Call, ErrorKind, Exchange, Manifest, Media, Operation, Step, TaskDone,
    TaskProgress, TaskState, TaskSubmitted, UpstreamRequest, UpstreamResponse, Usage,
};

pub struct Jimeng;

impl tollgate_plugin_sdk::Plugin for Jimeng {
    type Exchange = JimengExchange;

    fn describe() -> Manifest {
        Manifest::new("jimeng", env!("CARGO_PKG_VERSION"), "Volcengine Jimeng", &[])
            .with_operation(Operation::new("video").quoted())
            .with_operation(Operation::new("task.poll").resend())
            .with_access_key_pair("Volcengine")
            // Where Volcengine serves generated media.
            .fetching("*.volces.com")
            .fetching("*.volccdn.com")
            .with_base_url("https://visual.volcengineapi.com")
    }

    fn check_settings(settings: &str) -> Result<(), String> {
        let v: Value = serde_json::from_str(settings).map_err(|e| format!("not JSON: {e}"))?;
        for name in ["region", "service"] {
            if v.get(name).is_some_and(|x| !x.as_str().is_some_and(|s| !s.is_empty() && s.is_ascii())) {
                return Err(format!("'{name}' must be a non-empty name such as cn-north-1"));
            }
        }
        Ok(())
    }
}

const VERSION: &str = "2022-08-31";
/// Business success.
const OK: i64 = 10000;

pub struct JimengExchange {
    call: Call,
}

/// What a task's state keeps: the model (`req_key`) it was submitted to, Jimeng's id and the
/// tier quoted.
fn task_state(req_key: &str, task_id: &str, seconds: u64) -> String {
    json!({ "req_key": req_key, "task_id": task_id, "seconds": seconds }).to_string()
}

impl JimengExchange {
    fn setting(&self, name: &str, default: &'static str) -> String {
        let v: Value = serde_json::from_str(&self.call.config).unwrap_or(Value::Null);
        v[name].as_str().unwrap_or(default).to_string()
    }

    /// A signed `POST /?Action=<action>&Version=…` with a JSON body.
    fn request(&self, action: &str, body: &Value) -> Result<UpstreamRequest, AdapterError> {
        let (Some(ak), Some(sk)) = (self.call.credential_field("access_key"), self.call.credential_field("secret_key"))
        else {
            return Err(AdapterError::new(
                ErrorKind::Unauthorized,
                "the channel's key is not 'AccessKey|SecretKey' (Volcengine signs each request with both)",
            ));
        };
        let base = &self.call.context.base_url;
        let authority = base.split_once("://").map_or(base.as_str(), |(_, rest)| rest);
        let (host, prefix) = authority.split_once('/').map_or((authority, ""), |(h, p)| (h, p));
        let path = format!("/{}", prefix.trim_end_matches('/'));
        let path = if prefix.is_empty() { "/".to_string() } else { format!("{path}/") };
        let query = [("Action", action), ("Version", VERSION)];
        let text = body.to_string();
        let (region, service) = (self.setting("region", "cn-north-1"), self.setting("service", "cv"));
        let signer = sign::Signer { access_key: ak, secret_key: sk, region: &region, service: &service };
        let now = tollgate_plugin_sdk::now_ms() / 1000;
        let signed = signer.sign("POST", &path, &query, host, text.as_bytes(), &sign::x_date(now));
        // The path is appended to the channel's base URL, which already holds any prefix.
        let req = UpstreamRequest::post_json(format!("/?{}", sign::canonical_query(&query)), text)
            .with_auth(Auth::None)
            .with_header("x-date", signed.x_date)
            .with_header("x-content-sha256", signed.content_sha256)
            .with_header("authorization", signed.authorization);
        Ok(req)
    }

    /// The seconds asked for (5 or 10): Jimeng's own, else OpenAI's `seconds`, else 5.
    fn seconds(&self) -> Result<u64, AdapterError> {
        let given = self.call.body.field("seconds").or_else(|| self.call.body.field("duration"));
        match given.as_deref().map(str::trim) {
            None | Some("5") => Ok(5),
            Some("10") => Ok(10),
            Some(other) => Err(AdapterError::new(
                ErrorKind::BadRequest,
                format!("Jimeng renders videos of 5 or 10 seconds; '{other}' was asked for"),
            )),
        }
    }

    fn req_key(&self) -> &str {
        self.call.vendor_model()
    }

    fn submit_body(&self) -> Result<Value, AdapterError> {
        if matches!(&self.call.body, Body::Form(parts) if parts.iter().any(|p| !matches!(p.value, tollgate_plugin_sdk::PartValue::Text(_))))
        {
            return Err(AdapterError::new(
                ErrorKind::BadRequest,
                "Jimeng takes a reference image as a URL in the 'image' field, not as a file",
            ));
        }
        let field = |name: &str| self.call.body.field(name).filter(|v| !v.trim().is_empty());
        let prompt = field("prompt");
        let image = field("image");
        if prompt.is_none() && image.is_none() {
            return Err(AdapterError::new(ErrorKind::BadRequest, "a video needs a 'prompt' (or an 'image')"));
        }
        let seconds = self.seconds()?;
        let mut body = json!({ "req_key": self.req_key(), "seed": -1, "frames": 24 * seconds + 1 });
        if let Some(p) = prompt {
            body["prompt"] = Value::String(p);
        }
        if let Some(i) = image {
            body["image_urls"] = json!([i]);
        }
        let ratio = match (field("aspect_ratio"), field("size")) {
            (Some(r), _) => Some(r),
            (None, Some(size)) => Some(aspect_ratio(&size)?.to_string()),
            _ => None,
        };
        if let Some(r) = ratio {
            body["aspect_ratio"] = Value::String(r);
        }
        if let Some(seed) = field("seed").and_then(|s| s.parse::<i64>().ok()) {
            body["seed"] = json!(seed);
        }
        Ok(body)
    }
}

/// OpenAI's `size` (`1280x720`) as Jimeng's aspect ratio.
fn aspect_ratio(size: &str) -> Result<&'static str, AdapterError> {
    let bad = || AdapterError::new(ErrorKind::BadRequest, format!("size '{size}' is not WIDTHxHEIGHT"));
    let (w, h) = size.split_once('x').ok_or_else(bad)?;
    let (w, h): (u32, u32) = (w.trim().parse().map_err(|_| bad())?, h.trim().parse().map_err(|_| bad())?);
    Ok(match (w, h) {
        _ if w == h => "1:1",
        _ if w > h => "16:9",
        _ => "9:16",
    })
}

fn tier(seconds: u64) -> Usage {
    Usage { milliseconds: Some(seconds * 1000), extra: vec![(format!("{seconds}s"), 1)], ..Usage::default() }
}

impl Exchange for JimengExchange {
    fn new(call: Call) -> Self {
        JimengExchange { call }
    }

    fn quote(&mut self) -> Result<Usage, AdapterError> {
        Ok(tier(self.seconds()?))
    }

    fn first(&mut self) -> Step {
        let req = match self.call.op.as_str() {
            "video" => self.submit_body().and_then(|body| self.request("CVSync2AsyncSubmitTask", &body)),
            "task.poll" => {
                let state: Value =
                    serde_json::from_str(self.call.task.as_deref().unwrap_or_default()).unwrap_or_default();
                match (state["req_key"].as_str(), state["task_id"].as_str()) {
                    (Some(k), Some(id)) => {
                        self.request("CVSync2AsyncGetResult", &json!({ "req_key": k, "task_id": id }))
                    }
                    _ => Err(AdapterError::new(ErrorKind::BadRequest, "the task's state is not Jimeng's")),
                }
            }
            op => Err(AdapterError::new(ErrorKind::Unsupported, format!("jimeng does not serve '{op}'"))),
        };
        match req {
            Ok(r) => Step::Send(r),
            Err(e) => Step::Fail(e),
        }
    }

    fn next(&mut self, response: UpstreamResponse) -> Step {
        let v: Value = serde_json::from_slice(&response.body).unwrap_or(Value::Null);
        if let Some(e) = gateway_error(response.status, &v) {
            return Step::Fail(e);
        }
        let code = v["code"].as_i64();
        match self.call.op.as_str() {
            _ if code.is_none() => Step::fail(ErrorKind::UpstreamFault, "Jimeng's answer is unreadable"),
            "video" => {
                if code != Some(OK) {
                    return Step::Fail(service_error(response.status, &v));
                }
                let (Some(id), Ok(seconds)) = (v.pointer("/data/task_id").and_then(Value::as_str), self.seconds())
                else {
                    return Step::fail(ErrorKind::UpstreamFault, "Jimeng's answer to the submit has no task_id");
                };
                Step::Submitted(TaskSubmitted {
                    state: task_state(self.req_key(), id, seconds),
                    reply: None,
                    usage: Usage::default(),
                    poll_after_ms: Some(5_000),
                })
            }
            // The job itself failed (a content check, a bad image): the task ends.
            _ if code != Some(OK) => Step::Task(TaskState::Failed(service_error(response.status, &v))),
            _ => self.polled(&v["data"]),
        }
    }
}

impl JimengExchange {
    fn polled(&self, data: &Value) -> Step {
        let state = match data["status"].as_str() {
            Some(s @ ("in_queue" | "generating")) => TaskState::Pending(TaskProgress {
                percent: None,
                message: Some(s.to_string()),
                state: None,
                poll_after_ms: Some(3_000),
                reply: None,
            }),
            Some("done") => {
                let Some(url) = data["video_url"].as_str().filter(|u| !u.is_empty()) else {
                    return Step::fail(ErrorKind::UpstreamFault, "Jimeng's finished task has no video_url");
                };
                let quoted: Value =
                    serde_json::from_str(self.call.task.as_deref().unwrap_or_default()).unwrap_or_default();
                TaskState::Succeeded(TaskDone {
                    reply: None,
                    outputs: vec![Media { url: url.to_string(), content_type: Some("video/mp4".into()) }],
                    usage: quoted["seconds"].as_u64().map(tier).unwrap_or_default(),
                })
            }
            Some(s @ ("not_found" | "expired")) => {
                TaskState::Failed(AdapterError::new(ErrorKind::NotFound, format!("Jimeng says the task is {s}")))
            }
            _ => return Step::fail(ErrorKind::UpstreamFault, "Jimeng's task status is unreadable"),
        };
        Step::Task(state)
    }
}

/// The OpenAPI gateway's refusal (`ResponseMetadata.Error`), or an HTTP failure with no
/// service envelope.
fn gateway_error(status: u16, v: &Value) -> Option<AdapterError> {
    let error = v.pointer("/ResponseMetadata/Error");
    if error.is_none() && ((200..300).contains(&status) || v["code"].is_i64()) {
        return None;
    }
    let code = error.and_then(|e| e["Code"].as_str()).unwrap_or_default();
    let message = error.and_then(|e| e["Message"].as_str()).unwrap_or("Volcengine refused the request");
    let kind = match code {
        "SignatureDoesNotMatch" | "InvalidAccessKey" | "InvalidCredential" | "MissingAuthenticationToken" => {
            ErrorKind::Unauthorized
        }
        "AccessDenied" | "Forbidden" => ErrorKind::Forbidden,
        "RequestLimitExceeded" | "Throttling" | "FlowLimitExceeded" => ErrorKind::RateLimited,
        "AccountOverdue" | "AccountArrears" => ErrorKind::InsufficientBalance,
        _ => tollgate_plugin_sdk::errors::kind_for_status(status),
    };
    let mut e = AdapterError::new(kind, format!("Volcengine: {message}"));
    if !code.is_empty() {
        e = e.with_code(code);
    }
    Some(e)
}

/// The service's refusal (`code != 10000`).
fn service_error(status: u16, v: &Value) -> AdapterError {
    let message = v["message"].as_str().unwrap_or("Jimeng refused the request");
    let kind = match status {
        429 => ErrorKind::RateLimited,
        s if s >= 500 => ErrorKind::UpstreamFault,
        _ if message.to_ascii_lowercase().contains("risk") => ErrorKind::ContentFiltered,
        _ => ErrorKind::BadRequest,
    };
    let e = AdapterError::new(kind, format!("Jimeng: {message}"));
    match v["code"].as_i64() {
        Some(c) => e.with_code(c.to_string()),
        None => e,
    }
}

export_plugin!(Jimeng);

#[cfg(test)]
mod tests;
