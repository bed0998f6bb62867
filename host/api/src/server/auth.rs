//! The one reading of a request's credential, for every route: `Authorization: Bearer <x>`
//! (the scheme in any case, RFC 7235), `x-api-key: <x>` (Anthropic's clients) or
//! `x-goog-api-key: <x>` (Google's; the Gemini surface moves a `?key=` there). A token
//! shaped like a JWT is a session; anything else is an API key (or the admin or metrics token,
//! which the route compares in constant time). What a credential is worth is decided by the
//! route: model calls take API keys, account routes sessions, the admin API its token or an
//! admin's session.

use http::HeaderMap;

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
}
