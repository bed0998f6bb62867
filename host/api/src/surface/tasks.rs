//! The caller's asynchronous tasks: `GET /v1/tasks` (newest first), `GET /v1/tasks/{id}`,
//! `DELETE /v1/tasks/{id}` (a finished task, with its archived files),
//! `GET /v1/tasks/{id}/content/{n}` (an archived output, with range requests) and
//! `GET /v1/tasks/{id}/stream` (server-sent progress events in the MindVideo proxy's shape,
//! then the result or the error, then `[DONE]`).
//!
//! A task and its files are found only for the user who submitted it: another user's id is a
//! 404, the same answer as an id that does not exist. A browser, whose `EventSource` and
//! `<video>` cannot send an `Authorization` header, reads one task's stream and files with a
//! task token in the query (`?token=`, from the task's `stream_url`; it expires, names one
//! task and one key, and only paths are ever logged). Every download of an archived file is
//! recorded in the call log (op `task.content`, free) and in the log.

use crate::account::Consumer;
use crate::engine::tasks::view;
use crate::server::body::{json, ChannelBody, Response, ResponseBody};
use crate::server::error::{error_response, not_found, ToResponse};
use crate::server::Api;
use crate::store::{archive, now_unix, tasks, CallRecord};
use http::{Method, Request};
use hyper::body::Incoming;
use std::sync::atomic::Ordering::Relaxed;
use tollgate_base::metrics::METRICS;

/// The most tasks one list answers.
const LIST_LIMIT: i64 = 100;
/// How long a task token lasts.
const TOKEN_TTL_SECS: i64 = 3600;
/// How often a progress stream reads its task, and sends a comment to keep proxies from
/// closing a quiet stream; the longest a stream lasts (a client reconnects).
const STREAM_EVERY: std::time::Duration = std::time::Duration::from_secs(1);
const STREAM_PING_EVERY: u32 = 15;
const STREAM_MAX: std::time::Duration = std::time::Duration::from_secs(3600);

pub async fn handle(state: &std::sync::Arc<Api>, req: &Request<Incoming>) -> Response {
    let rest = req.uri().path().strip_prefix("/v1/tasks/");
    let mut parts = rest.map(|r| r.splitn(3, '/'));
    let id = parts.as_mut().and_then(|p| p.next());
    let sub = parts.as_mut().map(|p| (p.next(), p.next()));
    // The stream and the files also take a task token (browsers).
    let readable = matches!(sub, Some((Some("stream"), None)) | Some((Some("content"), Some(_))));
    let authenticated = match id {
        Some(id) if readable && req.method() == Method::GET => authenticate_task(state, req, id),
        _ => state.authenticate(req),
    };
    let consumer = match authenticated {
        Ok(c) => c,
        Err(e) => return e.to_response(),
    };
    let db = &state.engine.db;
    let failed = |e: anyhow::Error| {
        tracing::error!(error = %format!("{e:#}"), "reading tasks failed");
        error_response(503, "server_error", "database_unavailable", "The gateway cannot read tasks now; retry shortly.")
    };
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
            Ok(Some(t)) => {
                let mut v = view(&t);
                if let Some(token) = task_token(state, &consumer, id) {
                    v["stream_url"] = format!("/v1/tasks/{id}/stream?token={token}").into();
                }
                json(200, &v)
            }
            Ok(None) => no_task(id),
            Err(e) => failed(e),
        },
        (&Method::GET, Some(id), Some((Some("stream"), None))) => match tasks::get(db, id, consumer.user_id).await {
            Ok(Some(_)) => match state.streams.open(consumer.key_id) {
                Some(slot) => progress_stream(state, consumer, id.to_string(), slot),
                None => crate::server::throttle::too_many_streams().to_response(),
            },
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
        (&Method::POST, Some(id), Some((Some("cancel"), None))) => match tasks::get(db, id, consumer.user_id).await {
            Ok(Some(t)) => cancel(state, &t, "its owner").await,
            Ok(None) => no_task(id),
            Err(e) => failed(e),
        },
        // Another method on one of the task routes: 405 with that route's methods.
        (_, Some(_), sub) => {
            let allow = match sub {
                Some((None, _)) => "GET, DELETE",
                Some((Some("cancel"), None)) => "POST",
                Some((Some("stream"), None) | (Some("content"), Some(_))) => "GET",
                _ => return not_found("not_found", format!("No route for {}.", req.uri().path())).to_response(),
            };
            crate::server::error::method_not_allowed(method, req.uri().path(), allow)
        }
        (_, None, _) => crate::server::error::method_not_allowed(method, req.uri().path(), "GET"),
    }
}

/// The consumer of a request for task `id`'s stream or files: its `Authorization`, else the
/// query's task token for that task (whose key must still be enabled and unexpired).
fn authenticate_task(state: &Api, req: &Request<Incoming>, id: &str) -> Result<Consumer, crate::exchange::CallError> {
    let token = req.uri().query().and_then(|q| crate::server::url::query_params(q).remove("token"));
    let (Some(token), None) = (token, req.headers().get(http::header::AUTHORIZATION)) else {
        return state.authenticate(req);
    };
    let refused = || {
        crate::server::error::unauthorized(
            "The task token is invalid or expired; read the task again for a fresh stream_url.",
        )
    };
    let key_id = state.sessions.verify_task_token(&token, id).ok_or_else(refused)?;
    let consumer = state.keys.by_id(key_id).ok_or_else(refused)?;
    if consumer.expired(now_unix()) {
        return Err(refused());
    }
    Ok(consumer)
}

fn task_token(state: &Api, consumer: &Consumer, id: &str) -> Option<String> {
    match state.sessions.issue_task_token(consumer.key_id, id, TOKEN_TTL_SECS) {
        Ok(t) => Some(t),
        Err(e) => {
            tracing::error!(error = %e, "issuing a task token failed");
            None
        }
    }
}

/// Server-sent events of a task's progress, read from the database (so any node serves it):
/// `{"status":"processing","progress":N,"remark":"…"}` whenever it changes, then
/// `{"status":"completed","url":…,"urls":[…]}` (with a task token: a `<video>` can play them)
/// or `{"status":"failed","error":"…"}`, then `[DONE]`.
fn progress_stream(
    state: &std::sync::Arc<Api>,
    consumer: Consumer,
    id: String,
    slot: crate::server::throttle::StreamSlot,
) -> Response {
    let (tx, body) = ChannelBody::new();
    let state = std::sync::Arc::clone(state);
    tokio::spawn(async move {
        let _slot = slot;
        let send = |text: String| {
            let tx = tx.clone();
            async move { tx.send(Ok(bytes::Bytes::from(text))).await.is_ok() }
        };
        let started = std::time::Instant::now();
        let (mut last, mut quiet) = (String::new(), 0u32);
        while started.elapsed() < STREAM_MAX {
            let (event, done) = match tasks::get(&state.engine.db, &id, consumer.user_id).await {
                Ok(Some(t)) => progress_event(&state, &consumer, &t),
                Ok(None) => (serde_json::json!({ "status": "failed", "error": "the task was deleted" }), true),
                Err(e) => {
                    // The database is away: the stream waits for it.
                    tracing::warn!(task = %id, error = %format!("{e:#}"), "a progress stream could not read its task");
                    (serde_json::Value::Null, false)
                }
            };
            let event = (!event.is_null()).then(|| event.to_string()).filter(|e| *e != last);
            match event {
                Some(e) => {
                    if !send(format!("data: {e}\n\n")).await {
                        return;
                    }
                    (last, quiet) = (e, 0);
                }
                None => quiet += 1,
            }
            if done {
                let _ = send("data: [DONE]\n\n".into()).await;
                return;
            }
            if quiet >= STREAM_PING_EVERY {
                // A key disabled (or expired) since the stream opened ends it.
                let live = state.keys.by_id(consumer.key_id).is_some_and(|c| !c.expired(now_unix()));
                if !live || !send(": ping\n\n".into()).await {
                    return;
                }
                quiet = 0;
            }
            tokio::select! {
                _ = tokio::time::sleep(STREAM_EVERY) => {}
                _ = tx.closed() => return,
            }
        }
    });
    http::Response::builder()
        .status(200)
        .header(http::header::CONTENT_TYPE, "text/event-stream")
        .header(http::header::CACHE_CONTROL, "no-cache")
        .header("x-accel-buffering", "no")
        .body(ResponseBody::Channel(body))
        .expect("valid response parts")
}

/// The gateway paths of a task's archived outputs, each with a task token (a browser plays
/// them without an `Authorization` header).
pub fn output_urls(state: &Api, consumer: &Consumer, t: &tasks::Task) -> Vec<String> {
    let token = task_token(state, consumer, &t.id).unwrap_or_default();
    let outputs: serde_json::Value =
        t.outputs.as_deref().and_then(|o| serde_json::from_str(o).ok()).unwrap_or_default();
    outputs
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|o| o["index"].as_i64())
        .map(|n| format!("/v1/tasks/{}/content/{n}?token={token}", t.id))
        .collect()
}

/// One task's state as a stream event; `true` when it is the last.
fn progress_event(state: &Api, consumer: &Consumer, t: &tasks::Task) -> (serde_json::Value, bool) {
    match t.status.as_str() {
        tasks::QUEUED | tasks::IN_PROGRESS => (
            serde_json::json!({
                "status": "processing",
                "progress": t.progress.unwrap_or(0),
                "remark": t.message.as_deref().unwrap_or(if t.status == tasks::QUEUED { "queued" } else { "" }),
            }),
            false,
        ),
        tasks::SUCCEEDED => {
            let urls = output_urls(state, consumer, t);
            (serde_json::json!({ "status": "completed", "progress": 100, "url": urls.first(), "urls": urls }), true)
        }
        _ => (
            serde_json::json!({
                "status": "failed",
                "error": t.message.as_deref().or(t.error_kind.as_deref()).unwrap_or("the task failed"),
            }),
            true,
        ),
    }
}

/// Cancels a running task at its vendor (its hold given back) and answers the task; a task
/// that ended, or whose vendor cannot cancel, is a 409; a vendor's refusal is its error.
pub async fn cancel(state: &Api, task: &tasks::Task, by: &str) -> Response {
    use crate::engine::tasks::Cancel;
    match state.engine.cancel_task(task, by).await {
        Cancel::Done => match tasks::find(&state.engine.db, &task.id).await {
            Ok(Some(t)) => json(200, &view(&t)),
            _ => json(200, &serde_json::json!({ "id": task.id, "object": "task", "status": tasks::CANCELLED })),
        },
        Cancel::Ended(status) => error_response(
            409,
            "invalid_request_error",
            "task_finished",
            &format!("Task '{}' has ended ({status}); there is nothing to cancel.", task.id),
        ),
        Cancel::Unsupported => error_response(
            409,
            "invalid_request_error",
            "cancel_unsupported",
            &format!("The vendor of task '{}' cannot cancel a job; it runs to its end.", task.id),
        ),
        Cancel::Failed(e) => e.to_response(),
    }
}

/// Deletes the caller's finished task `id` and the archived files nothing else names; the
/// refusal (404, 409 while it runs, 503) in the API's error shape.
pub async fn delete(state: &Api, user_id: i64, id: &str) -> Result<(), Response> {
    match archive::delete_task(&state.engine.db, id, user_id).await {
        Ok(Some(Ok(orphans))) => {
            state.engine.delete_blobs(&orphans).await;
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
pub async fn content(state: &Api, req: &Request<Incoming>, consumer: &Consumer, id: &str, n: i64) -> Response {
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
    let bytes = match state.engine.archive.blobs.read(&stored.sha256, offset, len).await {
        Ok(Some(b)) => b,
        Ok(None) => {
            tracing::error!(task = %id, sha256 = %stored.sha256, "an archived file is missing from the store");
            return error_response(
                500,
                "server_error",
                "output_missing",
                &format!("Output {n} of task '{id}' is missing from the archive; tell the operator."),
            );
        }
        Err(e) => {
            tracing::error!(task = %id, error = %format!("{e:#}"), "reading an archived file failed");
            return error_response(
                503,
                "server_error",
                "archive_unavailable",
                "The gateway cannot read the archive now; retry shortly.",
            );
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
        .header(http::header::CACHE_CONTROL, "private, max-age=86400")
        // Served from the gateway's origin: never sniffed into something active, never run.
        .header(http::header::X_CONTENT_TYPE_OPTIONS, "nosniff")
        .header(http::header::CONTENT_SECURITY_POLICY, "sandbox");
    if status == 206 {
        resp = resp.header(http::header::CONTENT_RANGE, format!("bytes {}-{}/{size}", offset, offset + len - 1));
    }
    resp.body(ResponseBody::Channel(ChannelBody::stream(bytes, len))).expect("valid response parts")
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
