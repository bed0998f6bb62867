//! The admin API (`/admin/*`), guarded by the `admin_token` setting (off when unset).
//! For now: `GET /admin/plugins` (every plugin file's status), `POST /admin/plugins/rescan`,
//! `GET /admin/channels` (channels and the health of their keys, masked).

use crate::server::body::{json, Response};
use crate::server::error::error_response;
use crate::server::AppState;
use http::{Method, Request};
use hyper::body::Incoming;

pub async fn handle(state: &AppState, req: Request<Incoming>) -> Response {
    let Some(token) = state.config.admin_token.as_deref().filter(|t| !t.is_empty()) else {
        return error_response(
            404,
            "invalid_request_error",
            "admin_disabled",
            "The admin API is off: set admin_token (TOLLGATE_ADMIN_TOKEN) to enable it.",
        );
    };
    let given = req
        .headers()
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    if !given.is_some_and(|g| constant_time_eq(g.as_bytes(), token.as_bytes())) {
        return error_response(
            401,
            "invalid_request_error",
            "invalid_admin_token",
            "The admin API needs 'Authorization: Bearer <admin_token>'.",
        );
    }
    match (req.method(), req.uri().path()) {
        (&Method::GET, "/admin/plugins") => json(200, &serde_json::json!({ "plugins": state.registry.status() })),
        (&Method::GET, "/admin/channels") => {
            let channels: Vec<serde_json::Value> = state
                .channels
                .all()
                .iter()
                .map(|c| {
                    let keys: Vec<serde_json::Value> = c
                        .key_states()
                        .into_iter()
                        .map(|(prefix, st)| serde_json::json!({ "key": prefix, "state": st }))
                        .collect();
                    serde_json::json!({ "name": c.name, "plugin": c.plugin, "models": c.models, "keys": keys })
                })
                .collect();
            json(200, &serde_json::json!({ "channels": channels }))
        }
        (&Method::POST, "/admin/plugins/rescan") => match state.registry.scan().await {
            Ok(()) => json(200, &serde_json::json!({ "plugins": state.registry.status() })),
            Err(e) => error_response(500, "server_error", "rescan_failed", &format!("{e:#}")),
        },
        _ => error_response(404, "invalid_request_error", "unknown_route", "Unknown admin route."),
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}
