//! The caller's asynchronous tasks: `GET /v1/tasks` (newest first), `GET /v1/tasks/{id}`,
//! `DELETE /v1/tasks/{id}` (a finished task, with its archived files) and
//! `GET /v1/tasks/{id}/content/{n}` (an archived output, with range requests).
//!
//! A task and its files are found only for the user who submitted it: another user's id is a
//! 404, the same answer as an id that does not exist. Every download of an archived file is
//! recorded in the call log (op `task.content`, free) and in the log.

use crate::engine::tasks::view;
use crate::server::body::{json, FileBody, Response, ResponseBody};
use crate::server::error::{error_response, not_found, ToResponse};
use crate::server::Api;
use crate::store::{archive, now_unix, tasks, CallRecord};
use http::{Method, Request};
use hyper::body::Incoming;
use std::sync::atomic::Ordering::Relaxed;
use tollgate_base::metrics::METRICS;

/// The most tasks one list answers.
const LIST_LIMIT: i64 = 100;

pub async fn handle(state: &Api, req: &Request<Incoming>) -> Response {
    let consumer = match state.authenticate(req) {
        Ok(c) => c,
        Err(e) => return e.to_response(),
    };
    let db = &state.engine.db;
    let failed = |e: anyhow::Error| {
        tracing::error!(error = %format!("{e:#}"), "reading tasks failed");
        error_response(503, "server_error", "database_unavailable", "The gateway cannot read tasks now; retry shortly.")
    };
    let rest = req.uri().path().strip_prefix("/v1/tasks/");
    let mut parts = rest.map(|r| r.splitn(3, '/'));
    let id = parts.as_mut().and_then(|p| p.next());
    let sub = parts.as_mut().map(|p| (p.next(), p.next()));
    let no_task =
        |id: &str| not_found("task_not_found", format!("No task '{id}' exists for this account.")).to_response();
    let method = req.method();
    match (method, id, sub) {
        (&Method::GET, None, _) => match tasks::list(db, consumer.user_id, LIST_LIMIT).await {
            Ok(list) => {
                json(200, &serde_json::json!({ "object": "list", "data": list.iter().map(view).collect::<Vec<_>>() }))
            }
            Err(e) => failed(e),
        },
        (&Method::GET, Some(id), Some((None, _))) => match tasks::get(db, id, consumer.user_id).await {
            Ok(Some(t)) => json(200, &view(&t)),
            Ok(None) => no_task(id),
            Err(e) => failed(e),
        },
        (&Method::DELETE, Some(id), Some((None, _))) => match delete(state, consumer.user_id, id).await {
            Ok(()) => json(200, &serde_json::json!({ "id": id, "object": "task", "deleted": true })),
            Err(refused) => refused,
        },
        (&Method::GET, Some(id), Some((Some("content"), Some(n)))) => {
            let Ok(n) = n.parse::<i64>() else {
                return not_found("output_not_found", format!("Task '{id}' has no output '{n}'.")).to_response();
            };
            content(state, req, &consumer, id, n).await
        }
        (&Method::GET | &Method::DELETE, Some(_), _) => {
            not_found("not_found", format!("No route for {}.", req.uri().path())).to_response()
        }
        _ => {
            let mut resp = error_response(
                405,
                "invalid_request_error",
                "method_not_allowed",
                "Tasks are read with GET and deleted with DELETE.",
            );
            resp.headers_mut().insert(http::header::ALLOW, http::HeaderValue::from_static("GET, DELETE"));
            resp
        }
    }
}

/// Deletes the caller's finished task `id` and the archived files nothing else names; the
/// refusal (404, 409 while it runs, 503) in the API's error shape.
pub async fn delete(state: &Api, user_id: i64, id: &str) -> Result<(), Response> {
    match archive::delete_task(&state.engine.db, id, user_id).await {
        Ok(Some(Ok(orphans))) => {
            for sha in orphans {
                if let Err(e) = state.engine.archive.blobs.delete(&sha).await {
                    tracing::warn!(error = %format!("{e:#}"), "deleting an archived file failed");
                }
            }
            Ok(())
        }
        Ok(Some(Err(status))) => Err(error_response(
            409,
            "invalid_request_error",
            "task_running",
            &format!("Task '{id}' is {status}; a task is deleted once it has ended."),
        )),
        Ok(None) => Err(not_found("task_not_found", format!("No task '{id}' exists for this account.")).to_response()),
        Err(e) => {
            tracing::error!(error = %format!("{e:#}"), "deleting a task failed");
            Err(error_response(
                503,
                "server_error",
                "database_unavailable",
                "The gateway cannot delete tasks now; retry shortly.",
            ))
        }
    }
}

/// Serves archived output `n` of the caller's task `id`: the whole file, or the one byte
/// range asked for.
pub async fn content(
    state: &Api,
    req: &Request<Incoming>,
    consumer: &crate::engine::account::Consumer,
    id: &str,
    n: i64,
) -> Response {
    let started = std::time::Instant::now();
    let stored = match archive::output(&state.engine.db, id, n, consumer.user_id).await {
        Ok(Some(s)) => s,
        Ok(None) => return not_found("output_not_found", format!("Task '{id}' has no output {n}.")).to_response(),
        Err(e) => {
            tracing::error!(error = %format!("{e:#}"), "reading an archived file's record failed");
            return error_response(
                503,
                "server_error",
                "database_unavailable",
                "The gateway cannot read tasks now; retry shortly.",
            );
        }
    };
    if stored.removed_at.is_some() {
        return error_response(
            410,
            "invalid_request_error",
            "output_expired",
            &format!("Output {n} of task '{id}' was removed after the archive's retention time."),
        );
    }
    let file = match state.engine.archive.blobs.open_blob(&stored.sha256).await {
        Ok(Some(f)) => f,
        Ok(None) | Err(_) => {
            tracing::error!(task = %id, sha256 = %stored.sha256, "an archived file is missing from the store");
            return error_response(
                500,
                "server_error",
                "output_missing",
                &format!("Output {n} of task '{id}' is missing from the archive; tell the operator."),
            );
        }
    };
    let size = stored.size_bytes.max(0) as u64;
    let range = req.headers().get(http::header::RANGE).and_then(|v| v.to_str().ok());
    let (status, offset, len) = match byte_range(range, size) {
        Ok(None) => (200, 0, size),
        Ok(Some((start, end))) => (206, start, end - start + 1),
        Err(()) => {
            let mut resp = error_response(
                416,
                "invalid_request_error",
                "range_not_satisfiable",
                &format!("The file is {size} bytes."),
            );
            resp.headers_mut()
                .insert(http::header::CONTENT_RANGE, format!("bytes */{size}").parse().expect("a valid header"));
            return resp;
        }
    };
    METRICS.archive_served_bytes.fetch_add(len, Relaxed);
    tracing::info!(task = %id, output = n, user = consumer.user_id, key = consumer.key_id, status, bytes = len, "archived file served");
    state.engine.call_log.record(CallRecord {
        request_id: state.next_request_id(),
        key_id: Some(consumer.key_id),
        user_id: Some(consumer.user_id),
        op: "task.content".into(),
        status,
        latency_us: started.elapsed().as_micros() as u64,
        created_at: now_unix(),
        ..CallRecord::default()
    });
    let mut resp = http::Response::builder()
        .status(status)
        .header(http::header::CONTENT_TYPE, &stored.content_type)
        .header(http::header::CONTENT_LENGTH, len)
        .header(http::header::ACCEPT_RANGES, "bytes")
        .header(http::header::ETAG, format!("\"{}\"", stored.sha256))
        .header(http::header::CACHE_CONTROL, "private, max-age=86400");
    if status == 206 {
        resp = resp.header(http::header::CONTENT_RANGE, format!("bytes {}-{}/{size}", offset, offset + len - 1));
    }
    resp.body(ResponseBody::File(FileBody::new(file, offset, len))).expect("valid response parts")
}

/// The one byte range a `Range` header asks of a file of `size` bytes, inclusive. `None`:
/// the whole file (no header, one the gateway ignores as RFC 9110 allows: malformed or
/// several ranges); `Err`: a range the file cannot satisfy (416).
fn byte_range(header: Option<&str>, size: u64) -> Result<Option<(u64, u64)>, ()> {
    let Some(spec) = header.and_then(|h| h.trim().strip_prefix("bytes=")) else {
        return Ok(None);
    };
    if spec.contains(',') {
        return Ok(None);
    }
    let Some((a, b)) = spec.trim().split_once('-') else {
        return Ok(None);
    };
    let num =
        |s: &str| -> Option<u64> { (!s.is_empty() && s.bytes().all(|c| c.is_ascii_digit())).then(|| s.parse().ok())? };
    match (a.trim(), b.trim()) {
        ("", suffix) => match num(suffix) {
            Some(0) => Err(()),
            Some(_) if size == 0 => Err(()),
            Some(n) => Ok(Some((size.saturating_sub(n), size - 1))),
            None => Ok(None),
        },
        (start, end) => {
            let Some(start) = num(start) else { return Ok(None) };
            let end = match end {
                "" => size.saturating_sub(1),
                e => match num(e) {
                    Some(e) if e >= start => e.min(size.saturating_sub(1)),
                    _ => return Ok(None),
                },
            };
            if start >= size {
                return Err(());
            }
            Ok(Some((start, end)))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::byte_range;

    #[test]
    fn one_byte_range_is_served_and_others_are_ignored_or_refused() {
        assert_eq!(byte_range(None, 100), Ok(None));
        assert_eq!(byte_range(Some("bytes=0-9"), 100), Ok(Some((0, 9))));
        assert_eq!(byte_range(Some("bytes=90-"), 100), Ok(Some((90, 99))));
        assert_eq!(byte_range(Some("bytes=90-1000"), 100), Ok(Some((90, 99))));
        assert_eq!(byte_range(Some("bytes=-10"), 100), Ok(Some((90, 99))));
        assert_eq!(byte_range(Some("bytes=-1000"), 100), Ok(Some((0, 99))));
        assert_eq!(byte_range(Some("bytes=100-"), 100), Err(()));
        assert_eq!(byte_range(Some("bytes=-0"), 100), Err(()));
        assert_eq!(byte_range(Some("bytes=0-"), 0), Err(()));
        // Malformed, reversed or several ranges: the whole file.
        for h in ["bytes=9-1", "bytes=a-b", "items=0-1", "bytes=0-1,5-6", "bytes=", "bytes=--1", "bytes=+1-2"] {
            assert_eq!(byte_range(Some(h), 100), Ok(None), "{h}");
        }
    }
}
