//! The gateway's own routes, as data. The router dispatches from this one table, and both
//! the 405 answers (with `Allow`) and the paths a plugin may not declare are derived from it,
//! so the three can never drift apart.

/// What serves a route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Handler {
    Health,
    Metrics,
    Models,
    /// The models some channel speaks (the TTS accelerator's clients list them).
    AudioModels,
    UserInfo,
    /// Registration, sign-in, a user's own keys and log.
    Account,
    /// The caller's asynchronous tasks.
    Tasks,
    /// OpenAI's Videos API (tasks of op `video`).
    Videos,
    /// A model call on the OpenAI surface, with its operation.
    ModelCall(&'static str),
    /// Anthropic's Messages API.
    Messages,
    /// Its token count (free).
    MessagesCount,
    /// Gemini's model methods (`{model}:generateContent`), and OpenAI's `GET /v1/models/{id}`.
    Gemini,
    /// The gateway's own chat socket (an upgrade).
    ChatSocket,
    /// The gateway's own progress socket (an upgrade).
    ProgressSocket,
    /// A short-lived token that opens the caller's sockets from a browser.
    SocketToken,
    /// The speech prefetch cache's statistics and clearing (the admin token).
    SpeechCache,
    Admin,
    /// The web console's page, assets and browser session.
    Console,
    /// The OpenAPI document of these routes (`host/api/openapi.json`).
    OpenApi,
}

#[derive(Debug, Clone, Copy)]
pub enum RoutePath {
    Exact(&'static str),
    /// Every path under it (the handler routes further).
    Prefix(&'static str),
}

#[derive(Debug, Clone, Copy)]
pub struct Route {
    /// `None`: any method (the handler answers the methods it knows).
    pub method: Option<&'static str>,
    pub path: RoutePath,
    pub handler: Handler,
}

use Handler::*;
use RoutePath::*;

const fn route(method: &'static str, path: &'static str, handler: Handler) -> Route {
    Route { method: Some(method), path: Exact(path), handler }
}

const fn family(prefix: &'static str, handler: Handler) -> Route {
    Route { method: None, path: Prefix(prefix), handler }
}

/// The OpenAPI document of the gateway's own routes, served at `/openapi.json`.
pub const OPENAPI: &str = include_str!("../../openapi.json");

/// The routes the gateway serves itself; everything else may be a plugin's native route.
pub const ROUTES: &[Route] = &[
    route("GET", "/health", Health),
    route("GET", "/metrics", Metrics),
    route("GET", "/openapi.json", OpenApi),
    route("GET", "/v1/models", Models),
    family("/v1/models/", Gemini),
    route("GET", "/v1beta/models", Gemini),
    family("/v1beta/models/", Gemini),
    route("GET", "/v1/audio/models", AudioModels),
    route("GET", "/v1/user/info", UserInfo),
    // SiliconFlow's clients list models here.
    route("GET", "/v1/user/models", Models),
    route("GET", "/v1/user/logs", Account),
    route("GET", "/v1/user/usage", Account),
    route("GET", "/v1/user/keys", Account),
    route("POST", "/v1/user/keys", Account),
    family("/v1/user/keys/", Account),
    route("POST", "/v1/auth/register", Account),
    route("POST", "/v1/auth/login", Account),
    route("POST", "/v1/auth/logout", Account),
    family("/v1/auth/", Account),
    route("POST", "/v1/chat/completions", ModelCall("chat")),
    route("GET", "/v1/chat/ws", ChatSocket),
    route("POST", "/v1/messages", Messages),
    route("POST", "/v1/messages/count_tokens", MessagesCount),
    route("POST", "/v1/sockets/token", SocketToken),
    route("POST", "/v1/embeddings", ModelCall("embeddings")),
    route("POST", "/v1/images/generations", ModelCall("images")),
    // The singular spelling older SiliconFlow clients send.
    route("POST", "/v1/image/generations", ModelCall("images")),
    route("POST", "/v1/rerank", ModelCall("rerank")),
    route("POST", "/v1/audio/speech", ModelCall("speech")),
    route("POST", "/v1/audio/transcriptions", ModelCall("transcription")),
    route("POST", "/v1/audio/translations", ModelCall("translation")),
    route("GET", "/v1/tasks", Tasks),
    route("GET", "/v1/tasks/ws", ProgressSocket),
    family("/v1/tasks/", Tasks),
    route("GET", "/v1/videos", Videos),
    route("POST", "/v1/videos", Videos),
    family("/v1/videos/", Videos),
    family("/admin/", Admin),
    family("/console", Console),
    route("GET", "/cache/stats", SpeechCache),
    route("POST", "/cache/clear", SpeechCache),
];

/// What the table says about a request.
#[derive(Debug, PartialEq, Eq)]
pub enum Found {
    Route(Handler),
    /// The path is the gateway's, not with this method: 405 with these methods allowed.
    WrongMethod(Vec<&'static str>),
    /// Not the gateway's: maybe a plugin's native route.
    NotOurs,
}

pub fn find(method: &str, path: &str) -> Found {
    let mut allowed = Vec::new();
    for r in ROUTES {
        let matches = match r.path {
            Exact(p) => p == path,
            Prefix(p) => path.starts_with(p),
        };
        if !matches {
            continue;
        }
        match r.method {
            // A family takes the paths under it, but not another method of an exact path
            // listed before it (which names its methods).
            None if allowed.is_empty() => return Found::Route(r.handler),
            None => break,
            Some(m) if m == method => return Found::Route(r.handler),
            Some(m) => allowed.push(m),
        }
    }
    if allowed.is_empty() {
        Found::NotOurs
    } else {
        Found::WrongMethod(allowed)
    }
}

/// The methods the OpenAPI document gives `path` (a `{param}` segment matches any one
/// segment; where several of its paths match, the one with the most literal segments), as an
/// `Allow` value: a route's handler answers a method it does not take with these. `None`: the
/// document has no such path.
pub fn documented_methods(path: &str) -> Option<String> {
    static PATHS: std::sync::LazyLock<Vec<(Vec<String>, Vec<String>)>> = std::sync::LazyLock::new(|| {
        let doc: serde_json::Value =
            serde_json::from_str(OPENAPI).expect("openapi.json is JSON (a unit test reads it)");
        let paths = doc["paths"].as_object().cloned().unwrap_or_default();
        paths
            .into_iter()
            .map(|(p, ops)| {
                let methods = ops.as_object().map(|o| o.keys().map(|m| m.to_uppercase()).collect()).unwrap_or_default();
                (p.split('/').map(str::to_string).collect(), methods)
            })
            .collect()
    });
    let segments: Vec<&str> = path.split('/').collect();
    let literal = |t: &str| !(t.starts_with('{') && t.ends_with('}'));
    let matching = PATHS.iter().filter(|(template, _)| {
        template.len() == segments.len()
            && template.iter().zip(&segments).all(|(t, s)| if literal(t) { t == s } else { !s.is_empty() })
    });
    let best = matching.max_by_key(|(template, _)| template.iter().filter(|t| literal(t)).count())?;
    Some(best.1.join(", "))
}

/// A request's span name, low in cardinality as OpenTelemetry asks: the method and the route
/// when it is one of the table's exact paths (`POST /v1/chat/completions`), else the method
/// alone (the path, with its ids, is the span's `url.path`).
pub fn span_name(method: &str, path: &str) -> String {
    let exact = ROUTES.iter().any(|r| matches!(r.path, Exact(p) if p == path));
    if exact {
        format!("{method} {path}")
    } else {
        method.to_string()
    }
}

/// True when a plugin route `pattern` could take a path of the gateway's (it matches one of
/// the table's paths, or reaches into one of its families), so a plugin may not declare it.
/// A malformed pattern is refused elsewhere; here it counts as reserved.
pub fn reserved(pattern: &str) -> bool {
    let Ok(p) = crate::plugin::Pattern::parse(pattern) else { return true };
    let prefix = p.literal_prefix();
    ROUTES.iter().any(|r| match r.path {
        Exact(path) => p.matches(path).is_some(),
        Prefix(family) => prefix.starts_with(family) || (!p.is_literal() && family.starts_with(prefix.as_str())),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_table_gives_routes_405s_and_the_paths_plugins_may_not_take() {
        assert_eq!(find("POST", "/v1/rerank"), Found::Route(ModelCall("rerank")));
        assert_eq!(find("GET", "/v1/rerank"), Found::WrongMethod(vec!["POST"]));
        assert_eq!(find("DELETE", "/v1/user/keys/7"), Found::Route(Account));
        assert_eq!(find("PUT", "/admin/pricing"), Found::Route(Admin));
        assert_eq!(find("TRACE", "/v1/auth/login"), Found::WrongMethod(vec!["POST"]));
        assert_eq!(documented_methods("/admin/users").as_deref(), Some("POST"));
        assert_eq!(documented_methods("/admin/pricing").as_deref(), Some("GET, PUT"));
        assert_eq!(documented_methods("/admin/channels/main/keys/export").as_deref(), Some("GET"), "the literal wins");
        assert_eq!(documented_methods("/admin/channels/main/keys/7").as_deref(), Some("DELETE"));
        assert_eq!(documented_methods("/admin/nothing"), None);
        assert_eq!(find("PUT", "/v1/tasks/ws"), Found::WrongMethod(vec!["GET"]), "not the family's");
        assert_eq!(find("DELETE", "/v1/tasks/task_1"), Found::Route(Tasks));
        assert_eq!(span_name("POST", "/v1/chat/completions"), "POST /v1/chat/completions");
        assert_eq!(span_name("GET", "/v1/tasks/task_123"), "GET", "ids stay out of span names");
        assert_eq!(find("POST", "/v1/t2a_v2"), Found::NotOurs);
        assert_eq!(find("GET", "/v1/tasks/ws"), Found::Route(ProgressSocket), "before the tasks' family");
        assert_eq!(find("GET", "/v1/tasks/task_1"), Found::Route(Tasks));
        // Every route of the table is reserved, the ones the old hand-written list missed too.
        for path in
            ["/v1/rerank", "/v1/images/generations", "/v1/auth/login", "/v1/user/keys", "/v1/user/logs", "/admin/x"]
        {
            assert!(reserved(path), "{path}");
        }
        assert!(!reserved("/v1/t2a_v2"));
        // Patterns: reserved when one of the gateway's paths could match them.
        assert!(reserved("/v1/{op}/completions"), "matches /v1/chat/completions");
        assert!(reserved("/admin/{x}"));
        assert!(reserved("/{area}/users"), "could reach into /admin/");
        assert!(reserved("/v1/videos/{id}"), "OpenAI's Videos API is the gateway's");
        assert!(!reserved("/v1/video_generation"));
        assert!(!reserved("/v1/query/{kind}"));
        assert!(reserved("/v1beta/models/{model}:generateContent"), "Gemini's surface is the gateway's");
        assert!(!reserved("/v1beta/files/{id}"));
    }

    /// The OpenAPI document names every route of the table with its method, and a path under
    /// every family; what it names is routed (tests/e2e/tests/openapi.rs calls each).
    #[test]
    fn the_openapi_document_covers_the_table() {
        let doc: serde_json::Value = serde_json::from_str(super::OPENAPI).expect("the document is JSON");
        let paths = doc["paths"].as_object().expect("paths");
        for r in ROUTES {
            match (r.path, r.method) {
                (Exact(p), Some(m)) => {
                    assert!(
                        paths.get(p).and_then(|ops| ops.get(m.to_lowercase())).is_some(),
                        "{m} {p} is not documented"
                    )
                }
                (Prefix(p), _) | (Exact(p), None) => {
                    assert!(paths.keys().any(|k| k.starts_with(p)), "nothing under {p} is documented")
                }
            }
        }
    }
}
