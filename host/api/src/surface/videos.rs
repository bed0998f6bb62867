//! OpenAI's Videos API over the task model, as the official SDK calls it: `POST /v1/videos`
//! (JSON, or the form the `openai` SDK sends, with an optional `input_reference` file),
//! `GET /v1/videos` (the caller's, paged by cursor), `GET /v1/videos/{id}`,
//! `GET /v1/videos/{id}/content` (the archived file, with ranges) and `DELETE /v1/videos/{id}`.
//!
//! A create is op `video` on the channel serving the model: quoted, held and settled like
//! every task. The answers are OpenAI's video objects rendered from the task (`view`); a video
//! is found only for its owner. The fields the quote may read (`model`, `prompt`, `seconds`,
//! `size`) are refused when given twice, so the vendor never reads another value than the
//! one the gateway reserved for.

use super::native::{field_value, json_text_field};
use super::{answer, read_request, ConsumerRequest};
use crate::exchange::CallError;
use crate::plugin::wit;
use crate::server::body::{json, Response};
use crate::server::error::{bad_request, error_response, not_found, ToResponse};
use crate::server::{url, Api};
use crate::store::tasks::{self, Task};
use http::{Method, Request};
use hyper::body::Incoming;
use std::sync::Arc;

/// OpenAI's default when a create names no model.
const DEFAULT_MODEL: &str = "sora-2";
/// The most of a prompt kept to show back.
const PROMPT_KEPT: usize = 4 << 10;
const PAGE_DEFAULT: i64 = 20;
const PAGE_MAX: i64 = 100;

pub async fn handle(state: &Arc<Api>, req: Request<Incoming>) -> Response {
    let path = req.uri().path().to_string();
    let rest = path.strip_prefix("/v1/videos").unwrap_or_default();
    let parts: Vec<&str> = rest.trim_start_matches('/').split('/').collect();
    match (req.method(), parts.as_slice()) {
        (&Method::POST, [""]) => return create(state, req).await,
        (&Method::GET, [""]) => {}
        (&Method::GET | &Method::DELETE, [id]) if !id.is_empty() => {}
        (&Method::GET, [id, "content"]) if !id.is_empty() => {}
        (&Method::POST, [_, "remix"]) => {
            return error_response(
                404,
                "invalid_request_error",
                "unsupported",
                "Remixing videos is not supported by this gateway.",
            )
        }
        _ => return not_found("not_found", format!("No route for {} {path}.", req.method())).to_response(),
    }
    let consumer = match state.authenticate(&req) {
        Ok(c) => c,
        Err(e) => return e.to_response(),
    };
    let unavailable = |e: anyhow::Error| {
        tracing::error!(error = %format!("{e:#}"), "reading videos failed");
        error_response(
            503,
            "server_error",
            "database_unavailable",
            "The gateway cannot read videos now; retry shortly.",
        )
    };
    let no_video =
        |id: &str| not_found("video_not_found", format!("No video '{id}' exists for this account.")).to_response();
    let db = &state.engine.db;
    match (req.method(), parts.as_slice()) {
        (&Method::GET, [""]) => {
            let q = url::query_params(req.uri().query().unwrap_or(""));
            let get = |name: &str| q.get(name).map(String::as_str);
            let limit = match get("limit").map(str::parse::<i64>) {
                None => PAGE_DEFAULT,
                Some(Ok(n)) if (1..=PAGE_MAX).contains(&n) => n,
                Some(_) => {
                    return bad_request("invalid_limit", format!("'limit' must be from 1 to {PAGE_MAX}.")).to_response()
                }
            };
            let oldest_first = match get("order") {
                None | Some("desc") => false,
                Some("asc") => true,
                Some(_) => return bad_request("invalid_order", "'order' is 'asc' or 'desc'.").to_response(),
            };
            match tasks::page(db, consumer.user_id, Some("video"), get("after"), limit + 1, oldest_first).await {
                Ok(mut page) => {
                    let has_more = page.len() as i64 > limit;
                    page.truncate(limit as usize);
                    json(
                        200,
                        &serde_json::json!({
                            "object": "list",
                            "data": page.iter().map(view).collect::<Vec<_>>(),
                            "first_id": page.first().map(|t| &t.id),
                            "last_id": page.last().map(|t| &t.id),
                            "has_more": has_more,
                        }),
                    )
                }
                Err(e) => unavailable(e),
            }
        }
        (&Method::GET, [id]) => match tasks::get(db, id, consumer.user_id).await {
            Ok(Some(t)) => {
                let mut resp = json(200, &view(&t));
                if !t.is_final() {
                    // The SDK's `poll` waits this long between retrievals.
                    let ms = ((t.next_poll_at - crate::store::now_unix()) * 1000).clamp(1_000, 10_000);
                    resp.headers_mut().insert("openai-poll-after-ms", ms.into());
                }
                resp
            }
            Ok(None) => no_video(id),
            Err(e) => unavailable(e),
        },
        (&Method::DELETE, [id]) => match super::tasks::delete(state, consumer.user_id, id).await {
            Ok(()) => json(200, &serde_json::json!({ "id": id, "object": "video.deleted", "deleted": true })),
            Err(refused) => refused,
        },
        (&Method::GET, [id, "content"]) => {
            let q = url::query_params(req.uri().query().unwrap_or(""));
            match q.get("variant").map(String::as_str) {
                None | Some("video") => super::tasks::content(state, &req, &consumer, id, 0).await,
                Some(v) => not_found("variant_not_found", format!("The '{v}' variant is not available; 'video' is."))
                    .to_response(),
            }
        }
        _ => unreachable!("matched above"),
    }
}

async fn create(state: &Arc<Api>, req: Request<Incoming>) -> Response {
    answer(state, |started, request_id| async move {
        let request = read_request(state, req).await?;
        let model = text_field(&request, "model")?.unwrap_or_else(|| DEFAULT_MODEL.to_string());
        let Some(prompt) = text_field(&request, "prompt")? else {
            return Err(bad_request("missing_prompt", "'prompt' is required."));
        };
        let params = task_params(text_field(&request, "seconds")?, text_field(&request, "size")?, &prompt);
        let mut call = super::openai::to_channel(state, request, "video", model, started, request_id)?;
        call.task_view = Some(view);
        call.task_params = Some(params);
        Ok(call)
    })
    .await
}

/// What a video task keeps of its request to show back, within the store's bound (the prompt
/// is cut to fit; it is shown back, never used again).
pub(super) fn task_params(seconds: Option<String>, size: Option<String>, prompt: &str) -> String {
    let short = |v: Option<String>| v.map(|v| tollgate_base::text::truncate(&v, 32).to_string());
    let (seconds, size) = (short(seconds), short(size));
    let mut kept = PROMPT_KEPT;
    loop {
        let params = serde_json::json!({
            "seconds": seconds,
            "size": size,
            "prompt": tollgate_base::text::truncate(prompt, kept),
        })
        .to_string();
        if params.len() <= tasks::MAX_PARAMS_BYTES || kept == 0 {
            return params;
        }
        kept /= 2;
    }
}

/// A text field of a JSON body (numbers as written) or a form; given twice: 400.
fn text_field(request: &ConsumerRequest, name: &str) -> Result<Option<String>, CallError> {
    match request.form {
        Some(_) => field_value(&wit::Field::Form(name.into()), request, &[], false),
        None => json_text_field(&request.body, name, true),
    }
}

/// A task as OpenAI's video object.
pub fn view(t: &Task) -> serde_json::Value {
    let params: serde_json::Value = t.params.as_deref().and_then(|p| serde_json::from_str(p).ok()).unwrap_or_default();
    let status = match t.status.as_str() {
        tasks::QUEUED => "queued",
        tasks::IN_PROGRESS => "in_progress",
        tasks::SUCCEEDED => "completed",
        _ => "failed",
    };
    let error = (status == "failed").then(|| {
        serde_json::json!({
            "code": t.error_kind.as_deref().unwrap_or("failed"),
            "message": t.message.as_deref().unwrap_or("The video could not be generated."),
        })
    });
    serde_json::json!({
        "id": t.id,
        "object": "video",
        "model": t.model,
        "status": status,
        "progress": if status == "completed" { 100 } else { t.progress.unwrap_or(0) },
        "created_at": t.created_at,
        "completed_at": t.is_final().then_some(t.updated_at),
        "expires_at": null,
        "seconds": params["seconds"],
        "size": params["size"],
        "prompt": params["prompt"],
        "error": error,
        "remixed_from_video_id": null,
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn what_a_video_keeps_of_its_request_always_fits_the_store() {
        // Control characters take six bytes each in JSON: the prompt is cut until it fits.
        let p = super::task_params(Some("8".into()), Some("x".repeat(100)), &"\u{1}".repeat(5000));
        assert!(p.len() <= crate::store::tasks::MAX_PARAMS_BYTES, "{}", p.len());
        let v: serde_json::Value = serde_json::from_str(&p).unwrap();
        assert_eq!((v["seconds"].as_str(), v["size"].as_str().map(str::len)), (Some("8"), Some(32)));
        assert!(!v["prompt"].as_str().unwrap().is_empty());
        let plain = super::task_params(None, None, "a cat");
        assert_eq!(plain, r#"{"prompt":"a cat","seconds":null,"size":null}"#);
    }
}
