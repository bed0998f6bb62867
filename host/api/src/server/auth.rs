//! The one reading of a request's credential, for every route: `Authorization: Bearer <x>`
//! (the scheme in any case, RFC 7235), `x-api-key: <x>` (Anthropic's clients) or
//! `x-goog-api-key: <x>` (Google's; the Gemini surface moves a `?key=` there). A token
//! shaped like a JWT is a session; anything else is an API key (or the admin or metrics token,
//! which the route compares in constant time). What a credential is worth is decided by the
//! route: model calls take API keys, account routes sessions, the admin API its token or an
//! admin's session.
//!
//! The console's browser session is the same session token, carried in the HttpOnly,
//! SameSite=Strict cookie `SESSION_COOKIE` instead of a header. On the routes that take
//! sessions (account, admin, console), `from_cookie` turns it into that header, so each route
//! applies its usual rules; routes that take keys or tokens never read it; a state-changing request
//! (any method but GET and HEAD) is taken only with `x-csrf-token: csrf_token(session)`, which
//! only a page of this origin can read (`GET /console/session`), so another site's form or
//! script can never act with the cookie. A request that presents a credential of its own is
//! left as it is: the cookie never adds to it.

use http::HeaderMap;

/// The console's session cookie.
pub const SESSION_COOKIE: &str = "tollgate_session";

/// The header a cookie-authenticated state-changing request must carry.
pub const CSRF_HEADER: &str = "x-csrf-token";

/// What a request presents.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Credential<'a> {
    None,
    /// A session token from `POST /v1/auth/login`.
    Session(&'a str),
    /// A consumer key (`sk-tg-…`), or an operator token.
    Key(&'a str),
}

impl<'a> Credential<'a> {
    /// The presented value, whatever its kind.
    pub fn value(&self) -> Option<&'a str> {
        match *self {
            Credential::None => None,
            Credential::Session(v) | Credential::Key(v) => Some(v),
        }
    }
}

pub fn credential(headers: &HeaderMap) -> Credential<'_> {
    let bearer = headers.get(http::header::AUTHORIZATION).and_then(|v| v.to_str().ok()).and_then(|v| {
        let (scheme, rest) = v.split_once(' ')?;
        scheme.eq_ignore_ascii_case("bearer").then_some(rest.trim())
    });
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok()).map(str::trim);
    let value = bearer.or_else(|| header("x-api-key")).or_else(|| header("x-goog-api-key"));
    match value {
        None | Some("") => Credential::None,
        Some(v) if crate::account::session::looks_like_jwt(v) => Credential::Session(v),
        Some(v) => Credential::Key(v),
    }
}

/// The session token in the request's `Cookie` header, if there is exactly one: a second
/// `tollgate_session` (planted by a sibling domain, or for a narrower path) makes both count
/// for nothing, so nobody can slip a session of theirs in front of the user's.
pub fn session_cookie(headers: &HeaderMap) -> Option<&str> {
    let mut sessions = headers
        .get_all(http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .filter(|(name, _)| *name == SESSION_COOKIE)
        .map(|(_, value)| value.trim());
    let first = sessions.next()?;
    if sessions.next().is_some() {
        return None;
    }
    Some(first).filter(|v| crate::account::session::looks_like_jwt(v))
}

/// The anti-forgery token of a session: a one-way function of the session token, which the
/// cookie keeps from every script (HttpOnly), so only this origin's pages, told it by the
/// gateway, can present it.
pub fn csrf_token(session: &str) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::new().chain_update(b"tollgate console csrf\0").chain_update(session).finalize())
}

/// Why a cookie could not stand for a credential.
#[derive(Debug, PartialEq, Eq)]
pub struct CsrfRefused;

/// Moves a session cookie into `Authorization` for a request that presents no credential of
/// its own. A state-changing request must carry the session's `x-csrf-token`.
pub fn from_cookie(method: &http::Method, headers: &mut HeaderMap) -> Result<(), CsrfRefused> {
    if credential(headers) != Credential::None {
        return Ok(());
    }
    let Some(session) = session_cookie(headers) else { return Ok(()) };
    if !matches!(*method, http::Method::GET | http::Method::HEAD) {
        let given = headers.get(CSRF_HEADER).and_then(|v| v.to_str().ok()).unwrap_or("");
        if !constant_time_eq(given, &csrf_token(session)) {
            return Err(CsrfRefused);
        }
    }
    let value = http::HeaderValue::from_str(&format!("Bearer {session}")).map_err(|_| CsrfRefused)?;
    headers.insert(http::header::AUTHORIZATION, value);
    Ok(())
}

/// `given` equals `secret`, compared in constant time (only the length leaks).
pub fn constant_time_eq(given: &str, secret: &str) -> bool {
    let (a, b) = (given.as_bytes(), secret.as_bytes());
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(pairs: &[(&'static str, &'static str)]) -> Credential<'static> {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, v.parse().unwrap());
        }
        let leaked: &'static HeaderMap = Box::leak(Box::new(h));
        credential(leaked)
    }

    #[test]
    fn one_reading_of_every_credential() {
        assert_eq!(read(&[("authorization", "Bearer sk-tg-abc")]), Credential::Key("sk-tg-abc"));
        assert_eq!(read(&[("authorization", "bearer sk-tg-abc")]), Credential::Key("sk-tg-abc"));
        assert_eq!(read(&[("authorization", "BEARER  sk-tg-abc ")]), Credential::Key("sk-tg-abc"));
        assert_eq!(read(&[("x-api-key", "sk-tg-abc")]), Credential::Key("sk-tg-abc"));
        assert_eq!(read(&[("x-goog-api-key", "sk-tg-abc")]), Credential::Key("sk-tg-abc"));
        assert_eq!(read(&[("authorization", "Bearer aaa.bbb.ccc")]), Credential::Session("aaa.bbb.ccc"));
        assert_eq!(read(&[("authorization", "Basic dXNlcg==")]), Credential::None);
        assert_eq!(read(&[("authorization", "Bearer ")]), Credential::None);
        assert_eq!(read(&[]), Credential::None);
        assert!(constant_time_eq("secret", "secret") && !constant_time_eq("secret", "secreT"));
        assert!(!constant_time_eq("s", "secret"));
    }

    fn cookie_request(method: http::Method, pairs: &[(&'static str, String)]) -> (Result<(), CsrfRefused>, HeaderMap) {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, v.parse().unwrap());
        }
        let result = from_cookie(&method, &mut h);
        (result, h)
    }

    #[test]
    fn a_cookie_stands_for_a_session_only_with_its_csrf_token_on_state_changing_requests() {
        let jwt = "aaa.bbb.ccc".to_string();
        let cookie = format!("theme=dark; {SESSION_COOKIE}={jwt}; other=1");
        // A cross-site form: the cookie alone, no token (or a wrong one): refused, nothing set.
        for token in [None, Some("0".repeat(64)), Some(csrf_token("aaa.bbb.ccd"))] {
            let mut pairs = vec![("cookie", cookie.clone())];
            if let Some(t) = token {
                pairs.push((CSRF_HEADER, t));
            }
            let (result, h) = cookie_request(http::Method::POST, &pairs);
            assert_eq!(result, Err(CsrfRefused));
            assert!(h.get("authorization").is_none());
        }
        // This origin's page, with the token: the session.
        let (result, h) =
            cookie_request(http::Method::DELETE, &[("cookie", cookie.clone()), (CSRF_HEADER, csrf_token(&jwt))]);
        assert_eq!(result, Ok(()));
        assert_eq!(credential(&h), Credential::Session("aaa.bbb.ccc"));
        // A read needs no token.
        let (result, h) = cookie_request(http::Method::GET, &[("cookie", cookie.clone())]);
        assert_eq!(result, Ok(()));
        assert_eq!(credential(&h), Credential::Session("aaa.bbb.ccc"));
        // A request with its own credential keeps it, and needs no token.
        let (result, h) =
            cookie_request(http::Method::POST, &[("cookie", cookie), ("authorization", "Bearer sk-tg-own".into())]);
        assert_eq!(result, Ok(()));
        assert_eq!(credential(&h), Credential::Key("sk-tg-own"));
        // Two session cookies (one planted for a narrower path) count for nothing.
        let (result, h) = cookie_request(
            http::Method::GET,
            &[("cookie", format!("{SESSION_COOKIE}=eee.fff.ggg; {SESSION_COOKIE}={jwt}"))],
        );
        assert_eq!(result, Ok(()));
        assert_eq!(credential(&h), Credential::None);
        // A cookie that is no session token is no credential.
        let (result, h) = cookie_request(http::Method::POST, &[("cookie", format!("{SESSION_COOKIE}=sk-tg-abc"))]);
        assert_eq!(result, Ok(()));
        assert_eq!(credential(&h), Credential::None);
    }
}
