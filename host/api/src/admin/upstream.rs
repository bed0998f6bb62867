//! Upstream keys stored in the database, through the admin API:
//! - `POST /admin/channels/{name}/keys`: imports keys (the body is a JSON array, or lines of
//!   `key[,weight[,priority]]`); they serve from the next call on. The answer reports what
//!   was `added`, `updated` (already stored: its weight and priority replaced), `repeated`
//!   in the text, and each `invalid` line with why; the good lines are stored (400 when none
//!   is good);
//! - `GET /admin/channels/{name}/keys/export`: the channel's stored keys in clear, as JSON;
//! - `DELETE /admin/channels/{name}/keys/{id}`: removes a stored key;
//! - `POST /admin/channels/{name}/keys/{fingerprint}/disable|enable`: takes a key out of
//!   service or returns it, on every node sharing the database (see `keypool::holds`); any
//!   key of the pool, stored or from the configuration file, named by the `fingerprint`
//!   `GET /admin/channels` shows;
//! - `POST /admin/channels/{name}/keys/balances/refresh`: reads every key's balance at the
//!   vendor now and answers each (409 `no_balance_operation` when the vendor's plugin cannot).
//!
//! Keys written in the configuration file are listed by `GET /admin/channels`, and can be
//! disabled and enabled, but are not imported, exported or removed here. Only the routes that
//! read or write sealed keys need the master key.

use crate::keypool::{holds, stored};
use crate::server::body::{json, Response};
use crate::server::error::error_response;
use crate::server::error::ToResponse;
use crate::server::Api;
use http::{Method, Request};
use hyper::body::Incoming;
use tollgate_engine::BalanceUnreadable;

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
    match (&method, &segs[2..]) {
        (&Method::POST, ["keys", "balances", "refresh"]) => return refresh_balances(state, name).await,
        (&Method::POST, ["keys", fingerprint, action @ ("disable" | "enable")]) => {
            return hold(state, name, fingerprint, *action == "disable").await
        }
        _ => {}
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
            let Ok(text) = std::str::from_utf8(&body) else {
                return error_response(400, "invalid_request_error", "invalid_keys", "The keys must be UTF-8 text.");
            };
            let read = match stored::parse_import(text) {
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
        _ => return super::unknown(&method, &path),
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

/// Disables (`held`) or enables the key of channel `name` with `fingerprint`, then applies
/// the change on this node at once (the others within `key_refresh_ms`).
async fn hold(state: &Api, name: &str, fingerprint: &str, held: bool) -> Response {
    if fingerprint.len() != 64 || !fingerprint.bytes().all(|b| b.is_ascii_hexdigit()) {
        return error_response(
            400,
            "invalid_request_error",
            "invalid_fingerprint",
            "Name the key by its fingerprint: the 64 hex digits GET /admin/channels shows for it.",
        );
    }
    let fingerprint = fingerprint.to_ascii_lowercase();
    let channels = state.engine.channels.load_full();
    let Some(key) = channels.by_name(name).and_then(|c| c.masked_key(&fingerprint)) else {
        return error_response(
            404,
            "invalid_request_error",
            "unknown_key",
            &format!("Channel '{name}' has no key with fingerprint {fingerprint}."),
        );
    };
    let db = &state.engine.db;
    if let Err(e) = holds::set(db, name, &fingerprint, held).await {
        return error_response(503, "server_error", "database_unavailable", &format!("{e:#}"));
    }
    if let Err(e) = holds::load_into(db, &channels).await {
        tracing::warn!(error = %e, "applying the disabled upstream keys failed; the refresh job will");
    }
    json(200, &serde_json::json!({ "key": key, "fingerprint": fingerprint, "disabled_by_operator": held }))
}

/// Reads the balance of every key of channel `name` now.
async fn refresh_balances(state: &Api, name: &str) -> Response {
    let Some(channel) = state.engine.channels.load().by_name(name).cloned() else {
        return error_response(
            404,
            "invalid_request_error",
            "unknown_channel",
            &format!("No channel is named '{name}'."),
        );
    };
    match state.engine.read_balances(&channel).await {
        Ok(keys) => json(200, &serde_json::json!({ "channel": name, "keys": keys })),
        Err(e @ BalanceUnreadable::NoBalanceOp { .. }) => {
            error_response(409, "invalid_request_error", "no_balance_operation", &format!("Channel '{name}': {e}."))
        }
        Err(e @ BalanceUnreadable::PluginNotLoaded { .. }) => {
            error_response(503, "server_error", "plugin_not_loaded", &format!("Channel '{name}': {e}."))
        }
    }
}
