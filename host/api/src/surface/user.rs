//! Accounts as users see them: register, log in (a session token, JWT), their info, their
//! own API keys, their own request log and usage. Session routes read the database: they are not on the model-call path.

use crate::account;
use crate::exchange::CallError;
use crate::server::auth::{credential, Credential};
use crate::server::body::{json, Response};
use crate::server::error::ToResponse;
use crate::server::error::{bad_request, unauthorized};
use crate::server::Api;
use http::{Method, Request};
use hyper::body::Incoming;
use serde::Deserialize;

/// `POST /v1/auth/register`, `POST /v1/auth/login`, `POST /v1/auth/logout`, `/v1/user/keys[/{id}]`,
/// `GET /v1/user/logs`.
pub async fn handle(state: &Api, req: Request<Incoming>) -> Response {
    // Only what checks a password counts against the address's attempts (a sign-out checks a
    // signed token, and the fuzzing of the other routes must not lock a user out).
    if matches!(req.uri().path(), "/v1/auth/login" | "/v1/auth/register") {
        if let Some(refused) = throttled(state, &req) {
            return refused;
        }
    }
    let result = match (req.method().clone(), req.uri().path().to_string()) {
        (Method::POST, p) if p == "/v1/auth/register" => register(state, req).await,
        (Method::POST, p) if p == "/v1/auth/login" => login(state, req).await,
        (Method::POST, p) if p == "/v1/auth/logout" => logout(state, &req).await,
        (Method::GET, p) if p == "/v1/user/keys" => list_keys(state, &req).await,
        (Method::GET, p) if p == "/v1/user/logs" => logs(state, &req).await,
        (Method::GET, p) if p == "/v1/user/usage" => usage(state, &req).await,
        (Method::POST, p) if p == "/v1/user/keys" => create_key(state, req).await,
        (Method::DELETE, p) if p.starts_with("/v1/user/keys/") => {
            revoke_key(state, &req, &p["/v1/user/keys/".len()..]).await
        }
        _ => Err(CallError::new(404, "invalid_request_error", "unknown_route", "Unknown account route.")),
    };
    result.unwrap_or_else(|e| e.to_response())
}

/// A 429 (with `Retry-After`) when the caller's address has used up its sign-in and
/// registration attempts (`auth_attempts_per_minute`); every route that checks a password
/// asks first.
pub(crate) fn throttled(state: &Api, req: &Request<Incoming>) -> Option<Response> {
    let peer = req.extensions().get::<crate::server::Peer>()?;
    let wait = state.auth_throttle.take(peer.0, std::time::Instant::now()).err()?;
    let mut resp = CallError::new(
        429,
        "rate_limit_error",
        "too_many_attempts",
        "Too many sign-in or registration attempts from this address; wait and retry.",
    )
    .to_response();
    resp.headers_mut().insert(http::header::RETRY_AFTER, http::HeaderValue::from(wait.as_secs().max(1)));
    Some(resp)
}

#[derive(Deserialize)]
pub(crate) struct Credentials {
    pub name: String,
    pub password: String,
}

/// The largest body an account route reads: credentials and key requests are small, and these
/// routes are open before authentication.
const MAX_ACCOUNT_BODY: usize = 8 * 1024;

pub(crate) async fn read_json<T: serde::de::DeserializeOwned>(
    state: &Api,
    req: Request<Incoming>,
) -> Result<T, CallError> {
    let body = state.read_body_within(req, MAX_ACCOUNT_BODY).await?;
    serde_json::from_slice(&body).map_err(|e| bad_request("invalid_json", format!("Invalid JSON body: {e}")))
}

fn internal(e: anyhow::Error) -> CallError {
    tracing::error!(error = %format!("{e:#}"), "account operation failed");
    CallError::new(500, "server_error", "internal_error", "The account operation failed; see the gateway log.")
}

async fn register(state: &Api, req: Request<Incoming>) -> Result<Response, CallError> {
    if !state.settings.allow_registration {
        return Err(CallError::new(
            403,
            "permission_error",
            "registration_closed",
            "Registration is closed on this gateway.",
        ));
    }
    let c: Credentials = read_json(state, req).await?;
    let name = c.name.trim();
    if name.is_empty() || name.len() > 64 || !name.chars().all(|ch| ch.is_alphanumeric() || "-_.@".contains(ch)) {
        return Err(bad_request("invalid_name", "A user name is 1 to 64 letters, digits, '-', '_', '.' or '@'."));
    }
    if account::credentials(&state.engine.db, name).await.map_err(internal)?.is_some() {
        return Err(CallError::new(409, "invalid_request_error", "name_taken", "That user name is taken."));
    }
    let hash = account::session::hash_password_off_workers(c.password)
        .await
        .map_err(|e| bad_request("weak_password", e.to_string()))?;
    let new = account::NewUser {
        name: name.to_string(),
        password_hash: Some(hash),
        role: "user".into(),
        group: "default".into(),
        balance: "0".into(),
    };
    let id = account::create_user(&state.engine.db, &new)
        .await
        .map_err(|_| CallError::new(409, "invalid_request_error", "name_taken", "That user name is taken."))?;
    let (token, expires_at) = state.sessions.issue(id, name, "user").map_err(internal)?;
    Ok(json(
        201,
        &serde_json::json!({ "user": { "id": id, "name": name, "role": "user" }, "token": token, "expires_at": expires_at }),
    ))
}

async fn login(state: &Api, req: Request<Incoming>) -> Result<Response, CallError> {
    let c: Credentials = read_json(state, req).await?;
    let (token, role, expires_at) = check_password(state, c.name.trim(), c.password).await?;
    Ok(json(200, &serde_json::json!({ "token": token, "expires_at": expires_at, "role": role })))
}

/// A new session for `name` if `password` is its password and the user is enabled: the
/// token, the user's role and when the token expires.
pub async fn check_password(state: &Api, name: &str, password: String) -> Result<(String, String, i64), CallError> {
    let refused = || unauthorized("Wrong user name or password.");
    let found = account::credentials(&state.engine.db, name).await.map_err(internal)?;
    // An unknown or disabled user's password is checked too (against a stand-in hash), so
    // the refusal takes a wrong password's time.
    let (user, hash) = match found {
        Some((id, Some(hash), role, false)) => (Some((id, role)), hash),
        _ => (None, account::session::stand_in_hash()),
    };
    let verified = account::session::verify_password_off_workers(password, hash).await;
    let Some((id, role)) = user.filter(|_| verified) else {
        return Err(refused());
    };
    let (token, expires_at) = state.sessions.issue(id, name, &role).map_err(internal)?;
    Ok((token, role, expires_at))
}

/// The signed-in user (a valid session token, not signed out, of an enabled user), as the
/// database has it now.
pub async fn session_user(state: &Api, req: &Request<Incoming>) -> Result<account::UserInfo, CallError> {
    let Credential::Session(token) = credential(req.headers()) else {
        return Err(unauthorized("Sign in: send 'Authorization: Bearer <token>' from POST /v1/auth/login."));
    };
    let claims = state
        .sessions
        .verify(token)
        .ok_or_else(|| unauthorized("The session token is invalid or expired; sign in again."))?;
    match account::session_holder(&state.engine.db, claims.sub, token).await.map_err(internal)? {
        Some(u) if !u.disabled => Ok(u),
        _ => Err(unauthorized("This session was signed out, or its user is disabled or gone; sign in again.")),
    }
}

/// Signs out the request's session token, if it is a valid one, on every node sharing the
/// database (`account::session::revoke`). True when the token was a live session (signed out
/// now); false when it was no session, expired, or already signed out. A token whose user was
/// disabled is revoked too, so enabling the user again does not bring it back.
pub async fn revoke_session(state: &Api, req: &Request<Incoming>) -> Result<bool, CallError> {
    let Credential::Session(token) = credential(req.headers()) else { return Ok(false) };
    let Some(claims) = state.sessions.verify(token) else { return Ok(false) };
    let was_live = session_user(state, req).await.is_ok();
    account::session::revoke(&state.engine.db, token, claims.exp).await.map_err(|e| {
        tracing::error!(error = %format!("{e:#}"), "revoking a session failed");
        CallError::new(503, "server_error", "sign_out_failed", "The session could not be signed out; try again.")
    })?;
    Ok(was_live)
}

/// `POST /v1/auth/logout` with a session token: signs it out everywhere.
async fn logout(state: &Api, req: &Request<Incoming>) -> Result<Response, CallError> {
    if !matches!(credential(req.headers()), Credential::Session(_)) {
        return Err(unauthorized("Send the session token to sign out: 'Authorization: Bearer <token>'."));
    }
    let signed_out = revoke_session(state, req).await?;
    Ok(json(200, &serde_json::json!({ "signed_out": signed_out })))
}

/// `GET /v1/user/info` for a session: the user, its balance and spending.
pub async fn info(state: &Api, req: &Request<Incoming>) -> Result<Response, CallError> {
    let user = session_user(state, req).await?;
    let (calls, spent): (i64, i64) = sqlx::query_as(
        "SELECT COUNT(*), CAST(COALESCE(SUM(charge_micros), 0) AS BIGINT) FROM call_log \
             WHERE key_id IN (SELECT id FROM consumer_keys WHERE user_id = $1)",
    )
    .bind(user.id)
    .fetch_one(&state.engine.db)
    .await
    .map_err(|e| internal(e.into()))?;
    Ok(json(
        200,
        &serde_json::json!({ "object": "user.info", "id": user.id, "name": user.name, "role": user.role,
            "group": user.group, "balance": user.balance,
            "usage": { "calls": calls, "spent": account::format_money(spent) } }),
    ))
}

/// Whose calls a caller may read: a session's user's (every key of theirs), or an API key's
/// own; never from the query.
async fn own_scope(state: &Api, req: &Request<Incoming>) -> Result<(Option<i64>, Option<i64>), CallError> {
    Ok(if let Credential::Session(_) = credential(req.headers()) {
        (Some(session_user(state, req).await?.id), None)
    } else {
        (None, Some(state.authenticate(req)?.key_id))
    })
}

/// `GET /v1/user/logs?model=&status=&from=&to=&before_id=&limit=`: the caller's own calls,
/// newest first. With a session token, every call of the user's keys; with an API key, that
/// key's calls only. Never another user's, and without the operator's channel names.
async fn logs(state: &Api, req: &Request<Incoming>) -> Result<Response, CallError> {
    use crate::admin::reports;
    let (user_id, key_id) = own_scope(state, req).await?;
    let q = crate::server::url::query_params(req.uri().query().unwrap_or(""));
    // The caller's own calls only: the identity filters come from the credential, never the query.
    let asked = reports::LogFilter::from_query(&q, 50).map_err(|why| bad_request("bad_log_query", why))?;
    let filter = reports::LogFilter { key_id, user_id, channel: None, ..asked };
    let mut page = reports::logs(&state.engine.db, &filter).await.map_err(internal)?;
    if let Some(rows) = page["data"].as_array_mut() {
        for row in rows.iter_mut().filter_map(|r| r.as_object_mut()) {
            row.remove("channel");
        }
    }
    Ok(json(200, &page))
}

/// `GET /v1/user/usage?period=day|month&by=model&from=&to=`: the caller's own calls and
/// spending per period (per model with `by=model`): a session's user's, or an API key's.
async fn usage(state: &Api, req: &Request<Incoming>) -> Result<Response, CallError> {
    use crate::admin::reports;
    let (user_id, key_id) = own_scope(state, req).await?;
    let q = crate::server::url::query_params(req.uri().query().unwrap_or(""));
    // The caller's own calls only: the scope comes from the credential, never the query.
    let scope = reports::UsageScope { user_id, key_id, by_model: q.get("by").is_some_and(|b| b == "model") };
    let period = q.get("period").map(String::as_str).unwrap_or("day");
    match reports::usage(&state.engine.db, period, reports::Range::from_query(&q), scope).await {
        Ok(v) => Ok(json(200, &v)),
        Err(e) => Err(bad_request("bad_report_query", format!("{e:#}"))),
    }
}

async fn list_keys(state: &Api, req: &Request<Incoming>) -> Result<Response, CallError> {
    let user = session_user(state, req).await?;
    let keys = account::list_keys_of(&state.engine.db, Some(user.id)).await.map_err(internal)?;
    Ok(json(200, &serde_json::json!({ "data": keys })))
}

#[derive(Deserialize)]
struct NewKeyRequest {
    name: String,
    #[serde(default)]
    models: Vec<String>,
    #[serde(default)]
    limit: Option<String>,
    #[serde(default)]
    expires_in_days: Option<u32>,
}

async fn create_key(state: &Api, req: Request<Incoming>) -> Result<Response, CallError> {
    let user = session_user(state, &req).await?;
    let r: NewKeyRequest = read_json(state, req).await?;
    let held = account::list_keys_of(&state.engine.db, Some(user.id)).await.map_err(internal)?;
    let cap = state.settings.max_keys_per_user;
    if held.iter().filter(|k| !k.disabled).count() >= cap as usize {
        return Err(CallError::new(
            403,
            "permission_error",
            "too_many_keys",
            format!("You hold {cap} keys, the most this gateway allows; revoke one first."),
        ));
    }
    let new = account::NewKey {
        name: r.name,
        user: Some(user.name),
        balance: "0".into(),
        limit: r.limit,
        expires_at: r.expires_in_days.map(|d| crate::store::now_unix() + i64::from(d) * 86_400),
        models: r.models,
    };
    let key = account::create_key(&state.engine.db, &new)
        .await
        .map_err(|e| bad_request("invalid_key_request", format!("{e:#}")))?;
    state.accept_new_keys().await;
    Ok(json(201, &serde_json::json!({ "key": key, "note": "This is the only time the key is shown." })))
}

async fn revoke_key(state: &Api, req: &Request<Incoming>, id: &str) -> Result<Response, CallError> {
    let user = session_user(state, req).await?.id;
    let key_id: i64 = id.parse().map_err(|_| bad_request("invalid_id", "The key id must be a number."))?;
    account::set_disabled_of(&state.engine.db, key_id, Some(user), true)
        .await
        .map_err(|_| CallError::new(404, "invalid_request_error", "key_not_found", "You have no key with that id."))?;
    Ok(json(200, &serde_json::json!({ "id": key_id, "disabled": true })))
}
