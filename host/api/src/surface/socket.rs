//! WebSocket upgrades, and what every socket surface shares:
//! - on plugin routes (MiniMax's `/ws/v1/t2a_v2`, ...) the consumer is authenticated at the
//!   upgrade (`Authorization: Bearer`, or `x-api-key`), the plugin's upstream socket is
//!   opened, and only then is the upgrade answered (101); the session runs on its own task
//!   (`Engine`'s `Session::run`), tracked so that shutdown closes it;
//! - the gateway's own sockets (chat, progress) take the key at the upgrade, or a short-lived
//!   socket token from `POST /v1/sockets/token` as `?token=` (browsers; `consumer`, `Auth`,
//!   `token`), and run their session through `serve`; `send` is their write.
//!
//! Invariants: the gateway holds at most `max_sockets` sessions (503 beyond, and while it
//! shuts down), a key at most `max_sockets_per_key` (429 beyond); a refused
//! upgrade is answered in the API's error shape, as HTTP, before any socket exists; only
//! version 13 of the protocol is spoken (426 otherwise).

use super::native::{resolve, NativeRoute};
use super::with_request_id;
use crate::engine::socket::{Native, SocketLimits};
use crate::exchange::CallError;
use crate::plugin::wit;
use crate::server::body::{Response, ResponseBody};
use crate::server::error::bad_request;
use crate::server::error::ToResponse;
use crate::server::Api;
use http::Request;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use std::sync::Arc;
use std::time::Instant;
use tokio::sync::OwnedSemaphorePermit;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::Role;
use tokio_tungstenite::WebSocketStream;

/// The request asks to become a WebSocket (`Connection: upgrade`, `Upgrade: websocket`).
pub fn is_upgrade(req: &Request<Incoming>) -> bool {
    let has = |name: http::HeaderName, token: &str| {
        req.headers()
            .get_all(name)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .any(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
    };
    has(http::header::CONNECTION, "upgrade") && has(http::header::UPGRADE, "websocket")
}

pub async fn upgrade(state: &Arc<Api>, req: Request<Incoming>, route: NativeRoute) -> Response {
    let request_id = state.next_request_id();
    let response = match open(state, req, route, request_id.clone()).await {
        Ok(r) => r,
        Err(e) => e.to_response(),
    };
    with_request_id(response, &request_id)
}

/// Checks an upgrade request (GET, version 13, a key, the gateway not shutting down, a place
/// among `max_sockets`) and gives its `Sec-WebSocket-Accept` and the place it holds.
pub fn accept(state: &Api, req: &Request<Incoming>) -> Result<(String, OwnedSemaphorePermit), CallError> {
    let header = |name: &str| req.headers().get(name).and_then(|v| v.to_str().ok());
    if req.method() != http::Method::GET {
        return Err(bad_request("invalid_upgrade", "A WebSocket upgrade is a GET request."));
    }
    if header("sec-websocket-version") != Some("13") {
        return Err(CallError::new(
            426,
            "invalid_request_error",
            "unsupported_websocket_version",
            "This gateway speaks WebSocket version 13 (Sec-WebSocket-Version: 13).",
        ));
    }
    let Some(accept) = header("sec-websocket-key").map(|k| derive_accept_key(k.as_bytes())) else {
        return Err(bad_request("invalid_upgrade", "A WebSocket upgrade needs Sec-WebSocket-Key."));
    };
    let unavailable = |m: &str| CallError::new(503, "server_error", "sockets_unavailable", m);
    if *state.shutdown.borrow() {
        return Err(unavailable("The gateway is shutting down; connect again shortly."));
    }
    let place = Arc::clone(&state.socket_places).try_acquire_owned().map_err(|_| {
        unavailable("The gateway holds all the WebSocket sessions it may (max_sockets); retry shortly.")
    })?;
    Ok((accept, place))
}

/// How long a socket token (`POST /v1/sockets/token`) opens sockets.
pub const TOKEN_TTL_SECS: i64 = 300;
/// What a socket token names instead of a task.
const SOCKET_TOKEN: &str = "socket";

/// The key a gateway socket (chat, progress) was opened with, looked up again during the
/// session: a key revoked meanwhile ends it.
#[derive(Clone)]
pub enum Auth {
    /// The key itself, presented in a header.
    Key(String),
    /// A socket token's key.
    KeyId(i64),
}

impl Auth {
    pub fn consumer(&self, state: &Api) -> Result<crate::account::Consumer, CallError> {
        match self {
            Auth::Key(k) => state.consumer_for(k),
            Auth::KeyId(id) => {
                state.keys.by_id(*id).filter(|c| !c.expired(crate::store::now_unix())).ok_or_else(|| {
                    crate::server::error::unauthorized("The key of this socket token is no longer valid.")
                })
            }
        }
    }
}

/// The consumer of a gateway socket (chat, progress): `Authorization` or `x-api-key` at the
/// upgrade, else `?token=` with a socket token for browsers, whose `WebSocket` cannot send
/// headers (a short-lived token from `POST /v1/sockets/token`, never the key itself, so no
/// long-lived secret lands in a URL; only paths are ever logged). A plugin's socket takes
/// headers only: its query goes to the vendor.
pub fn consumer(state: &Api, req: &Request<Incoming>) -> Result<(crate::account::Consumer, Auth), CallError> {
    if let Some(key) = crate::server::auth::credential(req.headers()).value() {
        return Ok((state.consumer_for(key)?, Auth::Key(key.to_string())));
    }
    let token = req.uri().query().and_then(|q| crate::server::url::query_params(q).remove("token"));
    let Some(token) = token else {
        return Err(crate::server::error::unauthorized(
            "You didn't provide an API key. Send it as 'Authorization: Bearer sk-tg-...' at the upgrade, or from a browser a socket token (POST /v1/sockets/token) as ?token=.",
        ));
    };
    let auth = state.sessions.verify_task_token(&token, SOCKET_TOKEN).map(Auth::KeyId).ok_or_else(|| {
        crate::server::error::unauthorized("The socket token is invalid or expired; ask for a new one.")
    })?;
    Ok((auth.consumer(state)?, auth))
}

/// `POST /v1/sockets/token`: a token that opens the caller's gateway sockets from a browser
/// for `TOKEN_TTL_SECS` (its key is checked at each use).
pub fn token(state: &Api, req: &Request<Incoming>) -> Response {
    use crate::server::error::ToResponse;
    let consumer = match state.authenticate(req) {
        Ok(c) => c,
        Err(e) => return e.to_response(),
    };
    match state.sessions.issue_task_token(consumer.key_id, SOCKET_TOKEN, TOKEN_TTL_SECS) {
        Ok(token) => crate::server::body::json(
            200,
            &serde_json::json!({ "object": "socket.token", "token": token, "expires_in": TOKEN_TTL_SECS }),
        ),
        Err(e) => {
            tracing::error!(error = %e, "issuing a socket token failed");
            CallError::new(500, "server_error", "token_failed", "The gateway could not issue a token.").to_response()
        }
    }
}

/// A place among the key's sessions (429 at its cap).
pub fn key_place(state: &Api, key_id: i64) -> Result<crate::server::throttle::StreamSlot, CallError> {
    state.sockets.open(key_id).ok_or_else(|| {
        CallError::new(
            429,
            "rate_limit_error",
            "too_many_sockets",
            format!("This key has {} WebSocket sessions open; close one first.", state.sockets.limit()),
        )
    })
}

/// A consumer's socket, once hyper hands over the upgraded connection.
pub type Client = WebSocketStream<TokioIo<hyper::upgrade::Upgraded>>;

/// The consumer's socket after the 101; `None` when the upgrade did not complete.
pub async fn upgraded(on_upgrade: hyper::upgrade::OnUpgrade, limits: SocketLimits) -> Option<Client> {
    match on_upgrade.await {
        Ok(u) => Some(WebSocketStream::from_raw_socket(TokioIo::new(u), Role::Server, Some(limits.config())).await),
        Err(e) => {
            tracing::debug!(error = %e, "the consumer's upgrade did not complete");
            None
        }
    }
}

/// The answer that upgrades the connection.
pub fn switching(accept: &str, headers: &[wit::Header]) -> Result<Response, CallError> {
    let mut response = http::Response::builder()
        .status(http::StatusCode::SWITCHING_PROTOCOLS)
        .header(http::header::CONNECTION, "Upgrade")
        .header(http::header::UPGRADE, "websocket")
        .header("sec-websocket-accept", accept);
    for h in headers {
        response = response.header(h.name.as_str(), h.value.as_str());
    }
    response
        .body(ResponseBody::Full(http_body_util::Full::new(bytes::Bytes::new())))
        .map_err(|_| CallError::plugin("the plugin gave an invalid header for the upgrade answer"))
}

async fn open(
    state: &Arc<Api>,
    mut req: Request<Incoming>,
    route: NativeRoute,
    request_id: String,
) -> Result<Response, CallError> {
    let (accept, place) = accept(state, &req)?;
    let consumer = state.authenticate(&req)?;
    let slot = key_place(state, consumer.key_id)?;
    let on_upgrade = hyper::upgrade::on(&mut req);
    let call = resolve(state, req, route, Instant::now(), request_id).await?;
    let session = state.engine.open_socket(call).await?;
    let response = switching(&accept, &session.reply_headers)?;
    let limits = state.settings.socket_limits;
    let shutdown = state.shutdown.subscribe();
    state.socket_tasks.spawn(async move {
        let Some(client) = upgraded(on_upgrade, limits).await else { return };
        session.run(client, limits, shutdown, Box::new(Native)).await;
        drop((slot, place));
    });
    Ok(response)
}

/// Sends one text frame within `within`; false when the consumer is gone or stopped reading.
pub async fn send(client: &mut Client, text: String, within: std::time::Duration) -> bool {
    use futures_util::SinkExt;
    tollgate_base::metrics::METRICS.socket_frame(false, text.len() as u64);
    let message = tokio_tungstenite::tungstenite::Message::text(text);
    matches!(tokio::time::timeout(within, client.send(message)).await, Ok(Ok(())))
}

/// Answers the upgrade (101) and runs `session` on the upgraded connection, on a task that
/// shutdown waits for; `held` (the places it takes) is released when the session ends.
pub fn serve<F, Fut>(
    state: &Arc<Api>,
    req: &mut Request<Incoming>,
    accept: &str,
    held: impl Send + 'static,
    request_id: &str,
    session: F,
) -> Response
where
    F: FnOnce(Client) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let on_upgrade = hyper::upgrade::on(req);
    let limits = state.settings.socket_limits;
    state.socket_tasks.spawn(async move {
        if let Some(client) = upgraded(on_upgrade, limits).await {
            session(client).await;
        }
        drop(held);
    });
    with_request_id(switching(accept, &[]).unwrap_or_else(|e| e.to_response()), request_id)
}
