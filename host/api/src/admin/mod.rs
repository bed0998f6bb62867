//! The admin API (`/admin/*`), guarded by the `admin_token` setting (off when unset).
//! Reports: `GET /admin/reports/usage?period=day|month&by=model&user_id=&key_id=`, `/admin/reports/users`,
//! `/admin/reports/keys`, `/admin/stats`,
//! `/admin/logs?user_id=&key_id=&model=&channel=&status=&before_id=&limit=` (`status`: a
//! status, a class 2/4/5, or `errors`; a parameter that does not read is a 400); every
//! report takes `from` and `to` (unix seconds).
//! Users and keys: `POST /admin/users`, `POST /admin/users/{name}/topup|disable|enable`,
//! `POST /admin/keys`, `POST /admin/keys/{id}/disable|enable`. Access: `admin_token`, or an admin user's session.
//! Prices: `GET /admin/pricing` (the TOML), `PUT /admin/pricing` (validated, written, live).
//! Plugins and channels: `GET /admin/plugins` (every plugin file's status),
//! `POST /admin/plugins/rescan`, `GET /admin/channels` (channels, their strategy, and each key's
//! health and balance, masked), `POST /admin/channels/reload` (the channels re-read from the
//! configuration file). Upstream keys (import, export, remove, disable, enable, balance
//! refresh): see `upstream`.
//! Tasks: `GET /admin/tasks?status=&user_id=&model=&channel=&plugin=&limit=` (every user's,
//! newest first, with their owner, key, plugin, polls and hold; a status that is none of the
//! statuses or a limit out of 1..=1000 is a 400); `GET /admin/tasks/{id}` (one, with its
//! archived files and their sources, its ledger entries, its callback and its events still
//! within the replay window); `POST /admin/tasks/{id}/cancel`.

pub mod reports;
pub mod upstream;

use crate::server::auth::{constant_time_eq, credential, Credential};
use crate::server::body::{json, Response};
use crate::server::error::error_response;
use crate::server::error::ToResponse;
use crate::server::Api;
use anyhow::Context;
use http::{Method, Request};
use hyper::body::Incoming;

pub async fn handle(state: &Api, req: Request<Incoming>) -> Response {
    let presented = credential(req.headers());
    let token_ok = match (&state.settings.admin_token, presented.value()) {
        (Some(token), Some(given)) if !token.is_empty() => constant_time_eq(given, token),
        _ => false,
    };
    let admin_session = !token_ok
        && matches!(presented, Credential::Session(_))
        && matches!(crate::surface::user::session_user(state, &req).await, Ok(user) if user.role == "admin");
    if !token_ok && !admin_session {
        return error_response(
            401,
            "invalid_request_error",
            "admin_required",
            "The admin API needs 'Authorization: Bearer <admin_token>' or an admin user's session token.",
        );
    }
    if req.method() == Method::POST && is_manage_route(req.uri().path()) {
        return manage(state, req).await;
    }
    if upstream::is_route(req.uri().path()) {
        return upstream::handle(state, req).await;
    }
    match (req.method(), req.uri().path()) {
        (&Method::GET, "/admin/plugins") => {
            json(200, &serde_json::json!({ "plugins": state.engine.registry.status() }))
        }
        (&Method::GET, "/admin/channels") => {
            let channels: Vec<serde_json::Value> = state
                .engine
                .channels
                .load()
                .all()
                .iter()
                .map(|c| {
                    serde_json::json!({ "name": c.name, "plugin": c.plugin, "models": c.models,
                                        "strategy": c.strategy, "keys": c.key_states() })
                })
                .collect();
            json(200, &serde_json::json!({ "channels": channels }))
        }
        (
            &Method::GET,
            path @ ("/admin/reports/usage"
            | "/admin/reports/keys"
            | "/admin/reports/users"
            | "/admin/stats"
            | "/admin/logs"),
        ) => {
            let q = crate::server::url::query_params(req.uri().query().unwrap_or(""));
            let range = reports::Range::from_query(&q);
            let result = match path {
                "/admin/reports/usage" => {
                    let id = |k: &str| q.get(k).and_then(|v| v.parse::<i64>().ok());
                    let scope = reports::UsageScope {
                        user_id: id("user_id"),
                        key_id: id("key_id"),
                        by_model: q.get("by").is_some_and(|b| b == "model"),
                    };
                    let period = q.get("period").map(String::as_str).unwrap_or("day");
                    reports::usage(&state.engine.db, period, range, scope).await
                }
                "/admin/reports/keys" => reports::keys(&state.engine.db, range).await,
                "/admin/reports/users" => reports::users(&state.engine.db, range).await,
                "/admin/stats" => reports::stats(&state.engine.db, range).await,
                _ => match reports::LogFilter::from_query(&q, 100) {
                    Ok(filter) => reports::logs(&state.engine.db, &filter).await,
                    Err(why) => Err(anyhow::anyhow!(why)),
                },
            };
            match result {
                Ok(v) => json(200, &v),
                Err(e) => error_response(400, "invalid_request_error", "bad_report_query", &format!("{e:#}")),
            }
        }
        (&Method::GET, "/admin/tasks") => {
            let q = crate::server::url::query_params(req.uri().query().unwrap_or(""));
            let filter = match task_filter(&q) {
                Ok(f) => f,
                Err(why) => return error_response(400, "invalid_request_error", "bad_task_query", &why),
            };
            match crate::store::tasks::search(&state.engine.db, &filter).await {
                Ok(tasks) => {
                    json(200, &serde_json::json!({ "tasks": tasks.iter().map(task_json).collect::<Vec<_>>() }))
                }
                Err(e) => error_response(503, "server_error", "database_unavailable", &format!("{e:#}")),
            }
        }
        (&Method::GET, p) if p.starts_with("/admin/tasks/") => {
            let id = &p["/admin/tasks/".len()..];
            let db = &state.engine.db;
            let task = match crate::store::tasks::find(db, id).await {
                Ok(Some(t)) => t,
                Ok(None) => {
                    return error_response(404, "invalid_request_error", "task_not_found", &format!("No task '{id}'."))
                }
                Err(e) => return error_response(503, "server_error", "database_unavailable", &format!("{e:#}")),
            };
            let (files, ledger, events) = match tokio::try_join!(
                crate::store::archive::outputs(db, id),
                crate::store::tasks::ledger(db, &task),
                crate::store::tasks::events::of_task(db, id)
            ) {
                Ok(found) => found,
                Err(e) => return error_response(503, "server_error", "database_unavailable", &format!("{e:#}")),
            };
            let mut v = task_json(&task);
            v["files"] = files
                .iter()
                .map(|f| {
                    serde_json::json!({ "index": f.n, "sha256": f.sha256, "size": f.size_bytes,
                        "content_type": f.content_type, "source_url": f.source_url })
                })
                .collect();
            v["ledger"] = ledger
                .iter()
                .map(|(entry, amount, at)| {
                    serde_json::json!({ "entry_id": entry, "amount": tollgate_base::money::format(*amount), "created_at": at })
                })
                .collect();
            v["callback"] = serde_json::json!({ "url": task.callback_url, "state": task.callback_state,
                "attempts": task.callback_attempts });
            v["events"] = events
                .iter()
                .map(|(status, progress, at)| serde_json::json!({ "status": status, "progress": progress, "at": at }))
                .collect();
            json(200, &v)
        }
        (&Method::POST, p) if task_action(p, "/retry").is_some() => {
            use tollgate_engine::tasks::RetryRefused;
            let id = task_action(p, "/retry").unwrap_or_default();
            match state.engine.retry_archive(id).await {
                Ok(t) => json(200, &task_json(&t)),
                Err(RetryRefused::NotFound) => {
                    error_response(404, "invalid_request_error", "task_not_found", &format!("No task '{id}'."))
                }
                Err(RetryRefused::NotArchiveFailed(why)) => error_response(
                    409,
                    "invalid_request_error",
                    "task_not_archive_failed",
                    &format!("Task '{id}' is {why}: only a task that failed for its archive is retried."),
                ),
                Err(RetryRefused::Failed(why)) => error_response(
                    502,
                    "server_error",
                    "retry_failed",
                    &format!("Task '{id}' was not archived: {why}. It stays failed (and charged)."),
                ),
            }
        }
        (&Method::POST, p) if task_action(p, "/cancel").is_some() => {
            let id = task_action(p, "/cancel").unwrap_or_default();
            match crate::store::tasks::find(&state.engine.db, id).await {
                Ok(Some(t)) => crate::surface::tasks::cancel(state, &t, "the operator").await,
                Ok(None) => error_response(404, "invalid_request_error", "task_not_found", &format!("No task '{id}'.")),
                Err(e) => error_response(503, "server_error", "database_unavailable", &format!("{e:#}")),
            }
        }
        (&Method::GET, "/admin/pricing") => match state.engine.billing.as_ref().map(|b| b.text()) {
            Some(Ok(text)) => crate::server::body::full(200, "application/toml", text),
            Some(Err(e)) => error_response(500, "server_error", "pricing_unreadable", &format!("{e:#}")),
            None => error_response(404, "invalid_request_error", "billing_off", "Billing is off: set pricing_file."),
        },
        (&Method::PUT, "/admin/pricing") => {
            let Some(billing) = state.engine.billing.clone() else {
                return error_response(
                    404,
                    "invalid_request_error",
                    "billing_off",
                    "Billing is off: set pricing_file.",
                );
            };
            let body = match state.read_body(req).await {
                Ok(b) => b,
                Err(e) => return e.to_response(),
            };
            let text = String::from_utf8_lossy(&body);
            match billing.replace(&text) {
                Ok(models) => json(200, &serde_json::json!({ "models": models })),
                Err(e) => error_response(400, "invalid_request_error", "invalid_pricing", &format!("{e:#}")),
            }
        }
        (&Method::POST, "/admin/channels/reload") => match state.reload_channels().await {
            Ok(names) => json(200, &serde_json::json!({ "channels": names })),
            Err(e) => error_response(400, "invalid_request_error", "reload_failed", &format!("{e:#}")),
        },
        (&Method::POST, "/admin/plugins/rescan") => match state.engine.registry.scan().await {
            Ok(()) => json(200, &serde_json::json!({ "plugins": state.engine.registry.status() })),
            Err(e) => error_response(500, "server_error", "rescan_failed", &format!("{e:#}")),
        },
        (method, path) => unknown(method, path),
    }
}

/// Users and keys: `POST /admin/users`, `POST /admin/users/{name}/topup`, `POST /admin/keys`,
/// `POST /admin/keys/{id}/disable|enable`, each with a JSON body.
fn is_manage_route(path: &str) -> bool {
    let segments: Vec<&str> = path.trim_start_matches("/admin/").split('/').collect();
    matches!(
        segments.as_slice(),
        ["users"] | ["users", _, "topup" | "disable" | "enable"] | ["keys"] | ["keys", _, "disable" | "enable"]
    )
}

async fn manage(state: &Api, req: Request<Incoming>) -> Response {
    let path = req.uri().path().to_string();
    let segments: Vec<&str> = path.trim_start_matches("/admin/").split('/').collect();
    let body = match state.read_body(req).await {
        Ok(b) => b,
        Err(e) => return e.to_response(),
    };
    let body: serde_json::Value = if body.is_empty() {
        serde_json::Value::Null
    } else {
        match serde_json::from_slice(&body) {
            Ok(v) => v,
            Err(e) => {
                return error_response(400, "invalid_request_error", "invalid_json", &format!("Invalid JSON body: {e}"))
            }
        }
    };
    match run_manage(state, &segments, body).await {
        Ok(v) => json(200, &v),
        Err(e) => match e.downcast_ref::<crate::account::Refused>() {
            Some(r @ crate::account::Refused::NotFound(_)) => {
                error_response(404, "invalid_request_error", "not_found", &r.to_string())
            }
            Some(r @ crate::account::Refused::Taken(_)) => {
                error_response(409, "invalid_request_error", "already_exists", &r.to_string())
            }
            None => error_response(400, "invalid_request_error", "admin_request_failed", &format!("{e:#}")),
        },
    }
}

/// The bodies of the manage routes: a field of the wrong type is a 400 naming it, never read
/// as absent.
#[derive(serde::Deserialize, Default)]
#[serde(default)]
struct ManageBody {
    name: String,
    password: Option<String>,
    role: Option<String>,
    group: Option<String>,
    balance: Option<String>,
    amount: String,
    user: Option<String>,
    limit: Option<String>,
    /// A whole number of days (JSON may write it `30.0`).
    expires_in_days: Option<f64>,
    models: Vec<String>,
}

async fn run_manage(state: &Api, segments: &[&str], body: serde_json::Value) -> anyhow::Result<serde_json::Value> {
    use crate::account;
    let body: ManageBody =
        if body.is_null() { ManageBody::default() } else { serde_json::from_value(body).context("the body")? };
    match segments {
        ["users"] => {
            let password_hash = match body.password {
                Some(p) => Some(account::session::hash_password_off_workers(p).await?),
                None => None,
            };
            let new = account::NewUser {
                name: body.name,
                password_hash,
                role: body.role.unwrap_or_else(|| "user".into()),
                group: body.group.unwrap_or_else(|| "default".into()),
                balance: body.balance.unwrap_or_else(|| "0".into()),
            };
            let id = account::create_user(&state.engine.db, &new).await?;
            Ok(serde_json::json!({ "id": id, "name": new.name }))
        }
        ["users", name, action @ ("disable" | "enable")] => {
            account::set_user_disabled(&state.engine.db, name, *action == "disable").await?;
            Ok(serde_json::json!({ "name": name, "disabled": *action == "disable" }))
        }
        ["users", name, "topup"] => {
            let balance = account::top_up(&state.engine.db, name, &body.amount).await?;
            Ok(serde_json::json!({ "name": name, "balance": balance }))
        }
        ["keys"] => {
            let new = account::NewKey {
                name: body.name,
                user: body.user,
                balance: body.balance.unwrap_or_else(|| "0".into()),
                limit: body.limit,
                expires_at: match body.expires_in_days {
                    Some(d) if d.fract() == 0.0 && (1.0..=36_500.0).contains(&d) => {
                        Some(crate::store::now_unix() + d as i64 * 86_400)
                    }
                    Some(_) => anyhow::bail!("expires_in_days is a whole number of days from 1 to 36500"),
                    None => None,
                },
                models: body.models,
            };
            let key = account::create_key(&state.engine.db, &new).await?;
            state.accept_new_keys().await;
            Ok(serde_json::json!({ "key": key }))
        }
        ["keys", id, action] => {
            let id: i64 = id.parse()?;
            account::set_disabled(&state.engine.db, id, *action == "disable").await?;
            Ok(serde_json::json!({ "id": id, "disabled": *action == "disable" }))
        }
        _ => anyhow::bail!("unknown admin route"),
    }
}

/// The filter of `GET /admin/tasks` (`status`, `user_id`, `model`, `channel`, `plugin`,
/// `limit`; an empty parameter is no filter), or why the query is wrong.
fn task_filter(q: &std::collections::HashMap<String, String>) -> Result<crate::store::tasks::Filter, String> {
    use crate::store::tasks::STATUSES;
    let text = |k: &str| q.get(k).map(|v| v.trim()).filter(|v| !v.is_empty()).map(str::to_string);
    let status = text("status");
    if let Some(s) = status.as_deref().filter(|s| !STATUSES.contains(s)) {
        return Err(format!("status '{s}' is none of {}", STATUSES.join(", ")));
    }
    let user_id = match text("user_id").map(|v| v.parse::<i64>()) {
        None => None,
        Some(Ok(id)) => Some(id),
        Some(Err(_)) => return Err("user_id must be a user's id (a number)".into()),
    };
    let limit = match text("limit").map(|v| v.parse::<i64>()) {
        None => 100,
        Some(Ok(n @ 1..=1000)) => n,
        Some(_) => return Err("limit must be a number from 1 to 1000".into()),
    };
    Ok(crate::store::tasks::Filter {
        status,
        user_id,
        model: text("model"),
        channel: text("channel"),
        plugin: text("plugin"),
        limit,
    })
}

/// A task as an operator sees it: what its owner sees, and whose it is and how it runs.
fn task_json(t: &crate::store::tasks::Task) -> serde_json::Value {
    let mut v = crate::engine::tasks::view(t);
    let fields = serde_json::json!({
        "user_id": t.user_id, "key_id": t.key_id, "channel": t.channel, "plugin": t.plugin,
        "plugin_version": t.plugin_version, "op": t.op, "polls": t.polls, "next_poll_at": t.next_poll_at,
        "held": tollgate_base::money::format(t.reserved_micros), "request_id": t.request_id,
    });
    if let (Some(v), serde_json::Value::Object(extra)) = (v.as_object_mut(), fields) {
        v.extend(extra);
    }
    v
}

/// The task id of `/admin/tasks/{id}<action>` (an id that is not empty).
fn task_action<'a>(path: &'a str, action: &str) -> Option<&'a str> {
    path.strip_prefix("/admin/tasks/")?.strip_suffix(action).filter(|id| !id.is_empty() && !id.contains('/'))
}

/// An admin URL no route takes with this method: 405 with the methods the document gives the
/// path, else 404.
pub(crate) fn unknown(method: &Method, path: &str) -> Response {
    match crate::server::routes::documented_methods(path) {
        Some(allow) => crate::server::error::method_not_allowed(method, path, &allow),
        None => error_response(404, "invalid_request_error", "unknown_route", "Unknown admin route."),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_task_query_is_read_or_refused_with_why() {
        let q = |text: &str| super::task_filter(&crate::server::url::query_params(text));
        let f = q("status=failed&user_id=7&model=kling-v2&channel=&limit=5").unwrap();
        assert_eq!(
            (f.status.as_deref(), f.user_id, f.model.as_deref(), f.channel, f.limit),
            (Some("failed"), Some(7), Some("kling-v2"), None, 5)
        );
        assert_eq!(q("").unwrap().limit, 100);
        assert!(q("status=done").unwrap_err().contains("queued, in_progress, succeeded"), "names the statuses");
        assert!(q("user_id=carol").unwrap_err().contains("user_id"));
        for limit in ["0", "1001", "many"] {
            assert!(q(&format!("limit={limit}")).unwrap_err().contains("limit"), "{limit}");
        }
    }

    #[test]
    fn a_task_action_path_names_one_task_or_none() {
        assert_eq!(super::task_action("/admin/tasks/task_1/retry", "/retry"), Some("task_1"));
        assert_eq!(super::task_action("/admin/tasks/retry", "/retry"), None, "no id (once a panic)");
        assert_eq!(super::task_action("/admin/tasks//cancel", "/cancel"), None);
        assert_eq!(super::task_action("/admin/tasks/a/b/cancel", "/cancel"), None);
        assert_eq!(super::task_action("/admin/tasks/a/cancel", "/retry"), None);
    }
}
