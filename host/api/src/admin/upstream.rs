//! Upstream keys stored in the database, through the admin API:
//! - `POST /admin/channels/{name}/keys`: imports keys (the body is a JSON array, or lines of
//!   `key[,weight[,priority]]`); they serve from the next call on. The answer reports what
//!   was `added`, `updated` (already stored: its weight and priority replaced), `repeated`
//!   in the text, and each `invalid` line with why; the good lines are stored (400 when none
//!   is good);
//! - `GET /admin/channels/{name}/keys/export`: the channel's stored keys in clear, as JSON;
//! - `DELETE /admin/channels/{name}/keys/{id}`: removes a stored key.
//!
//! Keys written in the configuration file are listed by `GET /admin/channels` but are not
//! managed here.

use crate::keypool::stored;
use crate::server::body::{json, Response};
use crate::server::error::error_response;
use crate::server::error::ToResponse;
use crate::server::Api;
use http::{Method, Request};
use hyper::body::Incoming;

/// Whether `path` is one of this module's routes.
pub fn is_route(path: &str) -> bool {
    matches!(segments(path).as_slice(), ["channels", _, "keys", ..])
}

fn segments(path: &str) -> Vec<&str> {
    path.trim_start_matches("/admin/").split('/').collect()
}

pub async fn handle(state: &Api, req: Request<Incoming>) -> Response {
    let path = req.uri().path().to_string();
    let method = req.method().clone();
    let segs = segments(&path);
    let name = segs[1];
    if state.engine.channels.load().by_name(name).is_none() {
        return error_response(
            404,
            "invalid_request_error",
            "unknown_channel",
            &format!("No channel is named '{name}'."),
        );
    }
    let Some(master) = state.engine.master_key.as_ref() else {
        return error_response(
            409,
            "invalid_request_error",
            "no_master_key",
            &format!("Stored upstream keys need {}: start the gateway with it set.", stored::MASTER_KEY_ENV),
        );
    };
    let result = match (&method, &segs[2..]) {
        (&Method::POST, ["keys"]) => {
            let body = match state.read_body(req).await {
                Ok(b) => b,
                Err(e) => return e.to_response(),
            };
            let read = match stored::parse_import(&String::from_utf8_lossy(&body)) {
                Ok(r) => r,
                Err(e) => return error_response(400, "invalid_request_error", "invalid_keys", &format!("{e:#}")),
            };
            if read.records.is_empty() {
                let why = if read.invalid.is_empty() { "no keys".to_string() } else { read.invalid.join("; ") };
                return error_response(
                    400,
                    "invalid_request_error",
                    "invalid_keys",
                    &format!("Nothing to import: {why}"),
                );
            }
            // The good lines are stored; the report names the refused ones.
            stored::import(&state.engine.db, master, name, &read.records).await.map(|(added, updated)| {
                serde_json::json!({ "added": added, "updated": updated, "repeated": read.repeated,
                                    "invalid": read.invalid })
            })
        }
        (&Method::GET, ["keys", "export"]) => {
            stored::export(&state.engine.db, master, Some(name)).await.map(|keys| serde_json::json!({ "keys": keys }))
        }
        (&Method::DELETE, ["keys", id]) => {
            let Ok(id) = id.parse::<i64>() else {
                return error_response(400, "invalid_request_error", "invalid_id", "The key id must be a number.");
            };
            match stored::remove(&state.engine.db, id, Some(name)).await {
                Ok(true) => Ok(serde_json::json!({ "id": id, "removed": true })),
                Ok(false) => {
                    return error_response(
                        404,
                        "invalid_request_error",
                        "unknown_key",
                        &format!("Channel '{name}' has no stored key {id}."),
                    )
                }
                Err(e) => Err(e),
            }
        }
        _ => return error_response(404, "invalid_request_error", "unknown_route", "Unknown admin route."),
    };
    match result {
        Ok(v) => {
            // The change serves from the next call on, not from the next sync.
            if let Err(e) = stored::load_into(&state.engine.db, Some(master), &state.engine.channels.load()).await {
                tracing::warn!(error = %e, "reloading stored upstream keys failed");
            }
            json(200, &v)
        }
        Err(e) => error_response(500, "server_error", "stored_keys_failed", &format!("{e:#}")),
    }
}
