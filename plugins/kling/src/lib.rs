//! The `kling` plugin: Kling's video generation as asynchronous tasks.
//!
//! - op `video` (OpenAI's Videos API, `POST /v1/videos`, JSON or the SDK's form): submits
//!   `POST /v1/videos/text2video`, or `image2video` when the request names an `image` (a URL
//!   or base64, as Kling takes it). OpenAI's `seconds` becomes Kling's `duration` (a string,
//!   "5" or "10": Kling refuses a number), `size` its `aspect_ratio`; Kling's own fields
//!   that do not change the price (`negative_prompt`, `cfg_scale`, `camera_control`, ...) pass
//!   through from JSON; one that does (`sound`, ...) is refused.
//!   The gateway's request id is sent as `external_task_id`, so a submit is one job whatever
//!   happens to the answer.
//! - op `task.poll`: `GET /v1/videos/{text2video|image2video}/{task_id}` until `succeed`
//!   (the video's URL is archived by the gateway) or `failed`.
//! - The quote, and the usage of a finished job, name the tier Kling prices a job by:
//!   `{mode}-{duration}s` (e.g. `std-5s`, `pro-10s`), with the seconds.
//!
//! Every request carries `Authorization: Bearer <JWT>` (HS256; `iss` the access key, valid
//! from 5 s ago for 30 minutes), signed here with the key's secret: the channel's keys are
//! written `AccessKey|SecretKey` and the channel must set `allow_signing = true`.
//! Errors are Kling's envelope (`code != 0`, also on HTTP 200), classified by code family.

use base64::Engine as _;
use hmac::Mac;
use serde_json::Value;
use tollgate_plugin_sdk::{
    export_plugin, AdapterError, Call, ErrorKind, Exchange, Manifest, Media, Operation, Step, TaskDone, TaskProgress,
    TaskState, TaskSubmitted, UpstreamRequest, UpstreamResponse, Usage,
};

pub struct Kling;

impl tollgate_plugin_sdk::Plugin for Kling {
    type Exchange = KlingExchange;

    fn describe() -> Manifest {
        Manifest::new("kling", env!("CARGO_PKG_VERSION"), "Kling", &[])
            .with_operation(Operation::new("video").quoted())
            .with_operation(Operation::new("task.poll").resend())
            .with_access_key_pair("Kling")
            // Where Kling's finished videos are served from.
            .fetching("*.klingai.com")
            .fetching("*.kechuangai.com")
            .with_base_url("https://api-beijing.klingai.com")
    }
}

/// A JWT is valid this long (Kling's samples: 30 minutes) ...
const JWT_TTL_SECS: u64 = 1800;
/// ... from this long ago (clock skew).
const JWT_SKEW_SECS: u64 = 5;
/// The durations Kling renders.
const DURATIONS: &[&str] = &["5", "10"];
/// The modes Kling renders in.
const MODES: &[&str] = &["std", "pro"];
/// Kling's request fields passed through as given: none changes what a job costs.
const PASSED: &[&str] = &[
    "prompt",
    "negative_prompt",
    "cfg_scale",
    "aspect_ratio",
    "image",
    "image_tail",
    "static_mask",
    "dynamic_masks",
    "camera_control",
    "watermark_info",
];

/// Kling's JWT for `access_key`, signed with `secret_key`, issued at `now` (unix seconds):
/// header and claims as compact JSON in Kling's order, HS256.
pub fn jwt(access_key: &str, secret_key: &str, now: u64) -> String {
    let b64 = |bytes: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes);
    let header = b64(br#"{"alg":"HS256","typ":"JWT"}"#);
    let claims = format!(
        r#"{{"iss":{},"exp":{},"nbf":{}}}"#,
        Value::String(access_key.into()),
        now + JWT_TTL_SECS,
        now.saturating_sub(JWT_SKEW_SECS)
    );
    let signing_input = format!("{header}.{}", b64(claims.as_bytes()));
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(secret_key.as_bytes()).expect("HMAC takes any key");
    mac.update(signing_input.as_bytes());
    format!("{signing_input}.{}", b64(&mac.finalize().into_bytes()))
}

pub struct KlingExchange {
    call: Call,
}

/// A task's state, `{kind}:{tier}:{task_id}`: the path it was submitted to and is polled on,
/// the tier it was quoted, Kling's id.
fn parse_state(state: &str) -> Option<(&'static str, &str, &str)> {
    let mut parts = state.splitn(3, ':');
    let kind = match parts.next()? {
        "text2video" => "text2video",
        "image2video" => "image2video",
        _ => return None,
    };
    let (tier, id) = (parts.next()?, parts.next()?);
    let safe = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    (safe(tier) && safe(id)).then_some((kind, tier, id))
}

impl KlingExchange {
    /// A request to Kling, signed.
    fn signed(&self, mut req: UpstreamRequest) -> Result<UpstreamRequest, AdapterError> {
        let (Some(ak), Some(sk)) = (self.call.credential_field("access_key"), self.call.credential_field("secret_key"))
        else {
            return Err(AdapterError::new(
                ErrorKind::Unauthorized,
                "the channel's key is not 'AccessKey|SecretKey' (Kling signs each request with both)",
            ));
        };
        let token = jwt(ak, sk, tollgate_plugin_sdk::now_ms() / 1000);
        // Signed here: the host inserts no key (the raw credential holds the secret).
        req = req.with_auth(tollgate_plugin_sdk::Auth::None).with_header("authorization", format!("Bearer {token}"));
        Ok(req)
    }

    /// The request's duration ("5" or "10"): Kling's `duration`, else OpenAI's `seconds`,
    /// else 5; a number is taken as its string.
    fn duration(&self) -> Result<String, AdapterError> {
        let given = self.call.body.field("duration").or_else(|| self.call.body.field("seconds"));
        let d = given.unwrap_or_else(|| "5".into());
        let d = d.trim().trim_end_matches(".0").to_string();
        if DURATIONS.contains(&d.as_str()) {
            Ok(d)
        } else {
            Err(AdapterError::new(
                ErrorKind::BadRequest,
                format!("Kling renders videos of 5 or 10 seconds; '{d}' was asked for"),
            ))
        }
    }

    fn mode(&self) -> Result<String, AdapterError> {
        let m = self.call.body.field("mode").unwrap_or_else(|| "std".into());
        if MODES.contains(&m.as_str()) {
            Ok(m)
        } else {
            Err(AdapterError::new(ErrorKind::BadRequest, format!("Kling's mode is 'std' or 'pro', not '{m}'")))
        }
    }

    /// Kling's request body for the consumer's, and the kind of job it is.
    fn submit_body(&self) -> Result<(&'static str, Value), AdapterError> {
        let mut out = self
            .call
            .body
            .object("Kling takes a reference image as a URL or base64 in the 'image' field, not as a file")?;
        let duration = self.duration()?;
        let mode = self.mode()?;
        let prompt = out.get("prompt").and_then(Value::as_str).unwrap_or_default();
        let has_image = out.get("image").and_then(Value::as_str).is_some_and(|i| !i.is_empty());
        if prompt.trim().is_empty() && !has_image {
            return Err(AdapterError::new(ErrorKind::BadRequest, "a video needs a 'prompt' (or an 'image')"));
        }
        // OpenAI's names, translated; the gateway's own fields never reach Kling; of Kling's,
        // only those that do not change the price (the tier prices mode and duration): an
        // option Kling charges more for (sound, multiple shots, ...) is refused, not sent.
        let size = out.remove("size").and_then(|s| s.as_str().map(str::to_string));
        for k in ["model", "seconds", "input_reference", "external_task_id", "duration", "mode"] {
            out.remove(k);
        }
        if let Some(k) = out.keys().find(|k| !PASSED.contains(&k.as_str())) {
            return Err(AdapterError::new(
                ErrorKind::BadRequest,
                format!("'{k}' is not a field this gateway sends to Kling (it may change the price)"),
            ));
        }
        if let Some(size) = size {
            out.entry("aspect_ratio").or_insert(Value::String(aspect_ratio(&size)?.into()));
        }
        let model = self.call.vendor_model();
        out.insert("model_name".into(), Value::String(model.to_string()));
        out.insert("duration".into(), Value::String(duration));
        out.insert("mode".into(), Value::String(mode));
        // One job per gateway request, whatever becomes of the answer.
        out.insert("external_task_id".into(), Value::String(self.call.context.request_id.clone()));
        Ok((if has_image { "image2video" } else { "text2video" }, Value::Object(out)))
    }

    fn tier(&self) -> Result<(String, u64), AdapterError> {
        let duration = self.duration()?;
        let seconds: u64 = duration.parse().unwrap_or(5);
        Ok((format!("{}-{duration}s", self.mode()?), seconds))
    }
}

/// OpenAI's `size` (`1280x720`) as Kling's aspect ratio.
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

impl Exchange for KlingExchange {
    fn new(call: Call) -> Self {
        KlingExchange { call }
    }

    fn quote(&mut self) -> Result<Usage, AdapterError> {
        let (tier, seconds) = self.tier()?;
        Ok(Usage { milliseconds: Some(seconds * 1000), extra: vec![(tier, 1)], ..Usage::default() })
    }

    fn first(&mut self) -> Step {
        let req = match self.call.op.as_str() {
            "video" => match self.submit_body() {
                Ok((kind, body)) => UpstreamRequest::post_json(format!("/v1/videos/{kind}"), body.to_string()),
                Err(e) => return Step::Fail(e),
            },
            "task.poll" => {
                let state = self.call.task.clone().unwrap_or_default();
                let Some((kind, _, id)) = parse_state(&state) else {
                    return Step::fail(ErrorKind::BadRequest, "the task's state is not Kling's");
                };
                UpstreamRequest::get(format!("/v1/videos/{kind}/{id}"))
            }
            op => return Step::fail(ErrorKind::Unsupported, format!("kling does not serve '{op}'")),
        };
        match self.signed(req) {
            Ok(req) => Step::Send(req),
            Err(e) => Step::Fail(e),
        }
    }

    fn next(&mut self, response: UpstreamResponse) -> Step {
        let v: Value = serde_json::from_slice(&response.body).unwrap_or(Value::Null);
        if let Some(e) = error_of(response.status, &v) {
            return Step::Fail(e);
        }
        let data = &v["data"];
        match self.call.op.as_str() {
            "video" => {
                let (kind, (tier, _)) = match self.submit_body().and_then(|(kind, _)| Ok((kind, self.tier()?))) {
                    Ok(k) => k,
                    Err(e) => return Step::Fail(e),
                };
                match data["task_id"].as_str() {
                    Some(id) if !id.is_empty() => Step::Submitted(TaskSubmitted {
                        // What a poll needs: where to ask, and the tier to report.
                        state: format!("{kind}:{tier}:{id}"),
                        reply: None,
                        usage: Usage::default(),
                        poll_after_ms: Some(5_000),
                    }),
                    _ => Step::fail(ErrorKind::UpstreamFault, "Kling's answer to the submit has no task_id"),
                }
            }
            _ => self.polled(data),
        }
    }
}

impl KlingExchange {
    fn polled(&self, data: &Value) -> Step {
        let message = data["task_status_msg"].as_str().filter(|m| !m.is_empty()).map(str::to_string);
        let state = match data["task_status"].as_str() {
            Some(s @ ("submitted" | "processing")) => TaskState::Pending(TaskProgress {
                percent: None,
                message: message.or_else(|| Some(s.to_string())),
                state: None,
                poll_after_ms: Some(if s == "submitted" { 5_000 } else { 3_000 }),
                reply: None,
            }),
            Some("succeed") => {
                let videos = data.pointer("/task_result/videos").and_then(Value::as_array);
                let outputs: Vec<Media> = videos
                    .into_iter()
                    .flatten()
                    .filter_map(|v| v["url"].as_str())
                    .map(|url| Media { url: url.to_string(), content_type: Some("video/mp4".into()) })
                    .collect();
                if outputs.is_empty() {
                    return Step::fail(ErrorKind::UpstreamFault, "Kling's finished task has no video");
                }
                // Kling bills the job by its tier, whatever the video's exact length.
                let usage = match self.tier_of_state() {
                    Some((tier, seconds)) => {
                        Usage { milliseconds: Some(seconds * 1000), extra: vec![(tier, 1)], ..Usage::default() }
                    }
                    None => Usage::default(),
                };
                TaskState::Succeeded(TaskDone { reply: None, outputs, usage })
            }
            Some("failed") => TaskState::Failed(
                AdapterError::new(
                    ErrorKind::ContentFiltered,
                    message.unwrap_or_else(|| "Kling could not make the video".into()),
                )
                .with_code("failed"),
            ),
            _ => return Step::fail(ErrorKind::UpstreamFault, "Kling's task status is unreadable"),
        };
        Step::Task(state)
    }

    /// The tier the submit quoted, kept in the task's state.
    fn tier_of_state(&self) -> Option<(String, u64)> {
        let (_, tier, _) = parse_state(self.call.task.as_deref()?)?;
        let seconds = tier.split_once('-')?.1.strip_suffix('s')?.parse().ok()?;
        Some((tier.to_string(), seconds))
    }
}

/// Kling's error envelope (`code != 0`, on any status) or an HTTP failure, classified.
fn error_of(status: u16, v: &Value) -> Option<AdapterError> {
    let code = v["code"].as_i64();
    if (200..300).contains(&status) && code == Some(0) {
        return None;
    }
    let message = v["message"].as_str().unwrap_or("Kling refused the request").to_string();
    let kind = match code {
        // A token not yet valid or expired: clocks disagree, the key is fine (it cools down).
        Some(1003 | 1004) => ErrorKind::RateLimited,
        Some(1000..=1099) => ErrorKind::Unauthorized,
        Some(1100..=1199) => ErrorKind::InsufficientBalance,
        Some(1200..=1299) => ErrorKind::BadRequest,
        Some(1302 | 1303) => ErrorKind::RateLimited,
        Some(1300..=1399) => ErrorKind::ContentFiltered,
        Some(5000..=5999) => ErrorKind::UpstreamFault,
        _ => match status {
            401 => ErrorKind::Unauthorized,
            403 => ErrorKind::Forbidden,
            404 => ErrorKind::NotFound,
            429 => ErrorKind::RateLimited,
            400..=499 => ErrorKind::BadRequest,
            _ => ErrorKind::UpstreamFault,
        },
    };
    let mut e = AdapterError::new(kind, format!("Kling: {message}"));
    if let Some(c) = code {
        e = e.with_code(c.to_string());
    }
    Some(e)
}

export_plugin!(Kling);

#[cfg(test)]
mod tests;
