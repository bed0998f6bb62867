//! The caller's asynchronous tasks: `GET /v1/tasks` (newest first) and `GET /v1/tasks/{id}`.
//! A task is found only for the user who submitted it: another user's id is a 404, the same
//! answer as an id that does not exist.

use crate::engine::tasks::view;
use crate::server::body::{json, Response};
use crate::server::error::{error_response, not_found, ToResponse};
use crate::server::Api;
use crate::store::tasks;
use http::{Method, Request};
use hyper::body::Incoming;

/// The most tasks one list answers.
const LIST_LIMIT: i64 = 100;

pub async fn handle(state: &Api, req: &Request<Incoming>) -> Response {
    let consumer = match state.authenticate(req) {
        Ok(c) => c,
        Err(e) => return e.to_response(),
    };
    if req.method() != Method::GET {
        let mut resp = error_response(405, "invalid_request_error", "method_not_allowed", "Tasks are read with GET.");
        resp.headers_mut().insert(http::header::ALLOW, http::HeaderValue::from_static("GET"));
        return resp;
    }
    let db = &state.engine.db;
    let failed = |e: anyhow::Error| {
        tracing::error!(error = %format!("{e:#}"), "reading tasks failed");
        error_response(503, "server_error", "database_unavailable", "The gateway cannot read tasks now; retry shortly.")
    };
    match req.uri().path().strip_prefix("/v1/tasks/") {
        None => match tasks::list(db, consumer.user_id, LIST_LIMIT).await {
            Ok(list) => {
                json(200, &serde_json::json!({ "object": "list", "data": list.iter().map(view).collect::<Vec<_>>() }))
            }
            Err(e) => failed(e),
        },
        Some(id) => match tasks::get(db, id, consumer.user_id).await {
            Ok(Some(t)) => json(200, &view(&t)),
            Ok(None) => not_found("task_not_found", format!("No task '{id}' exists for this account.")).to_response(),
            Err(e) => failed(e),
        },
    }
}
