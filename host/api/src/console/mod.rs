//! The web console at `/console`: a page and its script and style, compiled into the binary
//! (no CDN, nothing fetched at run time), and the browser's session.
//!
//! - `GET /console` (and `/console/`): the page; `GET /console/app.js`, `/console/app.css`.
//! - `POST /console/session` `{name, password}`: signs in (throttled like `/v1/auth/login`);
//!   sets the session cookie (`server::auth::SESSION_COOKIE`: HttpOnly, SameSite=Strict,
//!   Path=/, for the session's lifetime, Secure behind an HTTPS proxy) and answers
//!   `{name, role, csrf, expires_at}`. Only a JSON body from this origin signs in: no other
//!   site can sign the browser into an account of its choosing.
//! - `GET /console/session`: who the cookie signs in (`401` if no one), with `csrf`.
//! - `DELETE /console/session`: signs out (needs `x-csrf-token`): the session token is
//!   revoked on every node sharing the database (`account::session::revoke`), so a copy of
//!   it is refused everywhere from then on, and the cookie is cleared.
//!
//! Everything else the console shows it reads from the admin and account APIs, with the
//! same cookie (see `server::auth::from_cookie`): it needs no route of its own for data, so
//! what an operator sees in the browser is what a script gets from the API.
//!
//! Invariants: every console response forbids framing and caching of sessions, and the page
//! runs only its own script and style (`Content-Security-Policy`); the session token is never
//! in a body a script can read.

use crate::exchange::CallError;
use crate::server::auth::{self, SESSION_COOKIE};
use crate::server::body::{full, json, Response};
use crate::server::error::{bad_request, unauthorized, ToResponse};
use crate::server::Api;
use http::{HeaderValue, Method, Request};
use hyper::body::Incoming;

const PAGE: &str = include_str!("../../console/index.html");
const SCRIPT: &str = include_str!("../../console/app.js");
const STYLE: &str = include_str!("../../console/app.css");

/// The page's policy: its own script, style and API only; images from this origin, data URLs
/// and vendors' HTTPS links (the playground's generated images), audio and video from this
/// origin (the archive) and the playground's own blobs.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data: blob: https:; \
                   media-src 'self' blob:; connect-src 'self'; form-action 'self'; frame-ancestors 'none'; \
                   base-uri 'none'";

pub async fn handle(state: &Api, req: Request<Incoming>) -> Response {
    let path = req.uri().path().to_string();
    let method = req.method().clone();
    let response = match (&method, path.as_str()) {
        (&Method::GET, "/console" | "/console/") => asset(PAGE, "text/html; charset=utf-8"),
        (&Method::GET, "/console/app.js") => asset(SCRIPT, "text/javascript; charset=utf-8"),
        (&Method::GET, "/console/app.css") => asset(STYLE, "text/css; charset=utf-8"),
        (&Method::GET, "/console/session") => who(state, &req).await.unwrap_or_else(|e| e.to_response()),
        (&Method::POST, "/console/session") => sign_in(state, req).await.unwrap_or_else(|e| e.to_response()),
        (&Method::DELETE, "/console/session") => sign_out(state, &req).await.unwrap_or_else(|e| e.to_response()),
        (_, "/console" | "/console/" | "/console/app.js" | "/console/app.css") => {
            crate::server::error::method_not_allowed(&method, &path, "GET")
        }
        (_, "/console/session") => crate::server::error::method_not_allowed(&method, &path, "GET, POST, DELETE"),
        _ => crate::server::error::error_response(
            404,
            "invalid_request_error",
            "unknown_route",
            &format!("Unknown console URL: {method} {path}. The console is at /console."),
        ),
    };
    guarded(response)
}

fn asset(body: &'static str, content_type: &str) -> Response {
    let mut r = full(200, content_type, body);
    r.headers_mut().insert(http::header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CSP));
    r
}

/// Headers every console response carries.
fn guarded(mut r: Response) -> Response {
    let h = r.headers_mut();
    h.insert(http::header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(http::header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    h.insert(http::header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    h.insert(http::header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

fn signed_in(name: &str, role: &str, session: &str, expires_at: i64) -> serde_json::Value {
    serde_json::json!({ "name": name, "role": role, "csrf": auth::csrf_token(session), "expires_at": expires_at })
}

async fn who(state: &Api, req: &Request<Incoming>) -> Result<Response, CallError> {
    let Some(session) = auth::session_cookie(req.headers()) else {
        return Err(unauthorized("Not signed in."));
    };
    // The answer's user and its CSRF token are the cookie's: a request that also sends a
    // credential of its own gets neither.
    if auth::credential(req.headers()) != auth::Credential::Session(session) {
        return Err(bad_request("two_credentials", "Send the console's cookie or an Authorization header, not both."));
    }
    let claims = state.sessions.verify(session).ok_or_else(|| unauthorized("The session expired; sign in again."))?;
    // The same rule as every session route: a disabled user is signed out.
    let user = crate::surface::user::session_user(state, req).await?;
    Ok(json(200, &signed_in(&user.name, &user.role, session, claims.exp)))
}

async fn sign_in(state: &Api, req: Request<Incoming>) -> Result<Response, CallError> {
    // Another site's form can post here (signing in needs no cookie) to sign the browser into
    // an account of the attacker's: a form cannot send JSON's content type, and a browser
    // says where a request comes from.
    let header = |name: &str| req.headers().get(name).and_then(|v| v.to_str().ok()).unwrap_or("");
    let json_body =
        header("content-type").split(';').next().is_some_and(|t| t.trim().eq_ignore_ascii_case("application/json"));
    if !json_body || !matches!(header("sec-fetch-site"), "" | "same-origin" | "none") {
        return Err(CallError::new(
            403,
            "permission_error",
            "cross_site_sign_in",
            "Sign in from the console's own page (a JSON body from this origin).",
        ));
    }
    let secure = behind_https(req.headers());
    if let Some(refused) = crate::surface::user::throttled(state, &req) {
        return Ok(refused);
    }
    let c: crate::surface::user::Credentials = crate::surface::user::read_json(state, req).await?;
    let (session, role, expires_at) = crate::surface::user::check_password(state, c.name.trim(), c.password).await?;
    let mut r = json(200, &signed_in(c.name.trim(), &role, &session, expires_at));
    let max_age = (expires_at - crate::store::now_unix()).max(0);
    let cookie = format!("{SESSION_COOKIE}={session}; Path=/; HttpOnly; SameSite=Strict; Max-Age={max_age}{secure}");
    r.headers_mut().insert(http::header::SET_COOKIE, HeaderValue::from_str(&cookie).expect("a token is header-safe"));
    Ok(r)
}

/// Signing out revokes the session token and clears the cookie, whether or not its session
/// is still good (the CSRF token was checked when the cookie became the request's session).
/// When the revocation cannot be written, the answer says so and the cookie stays: the
/// browser is not told it signed out while its token still works.
async fn sign_out(state: &Api, req: &Request<Incoming>) -> Result<Response, CallError> {
    let signed_in = crate::surface::user::revoke_session(state, req).await?;
    let mut r = json(200, &serde_json::json!({ "signed_out": signed_in }));
    let secure = behind_https(req.headers());
    let cookie = format!("{SESSION_COOKIE}=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0{secure}");
    r.headers_mut().insert(http::header::SET_COOKIE, HeaderValue::from_str(&cookie).expect("static"));
    Ok(r)
}

/// `; Secure` when a TLS proxy in front says the browser came over HTTPS
/// (`X-Forwarded-Proto: https`): the cookie then never travels over plain HTTP.
fn behind_https(headers: &http::HeaderMap) -> &'static str {
    let proto = headers.get("x-forwarded-proto").and_then(|v| v.to_str().ok()).unwrap_or("");
    if proto.eq_ignore_ascii_case("https") {
        "; Secure"
    } else {
        ""
    }
}
