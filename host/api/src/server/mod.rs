//! The HTTP server: accepting connections (hyper 1, HTTP/1.1 keep-alive), routing, consumer
//! request bodies with a size limit, and graceful shutdown.
//!
//! A request's body is read whole by `Api::read_body_within` or not at all. An answer given
//! with the body left unread (a refused key, an unknown route, a body too large) says
//! `connection: close`: hyper cannot reuse a connection holding unread bytes and closes it
//! after the answer, and a client told nothing would send its next request into the closed
//! socket. (A 101 keeps its `connection: upgrade`: the WebSocket takes the connection over.)
//!
//! Shutdown: on the signal the listener closes at once (new connections are refused), idle
//! keep-alive connections are closed, WebSocket sessions get a close frame (1001) and settle,
//! and calls in flight, streams included, run to their end or until `shutdown_grace_ms`; then
//! the call log is flushed.

pub mod auth;
pub mod body;
pub mod error;
mod poll;
pub mod routes;
pub mod throttle;
pub mod url;
pub mod workers;

use crate::account::{Consumer, KeyCache};
use crate::engine::{trace, Engine};
use crate::exchange::CallError;
use crate::keypool::config::ChannelConfig;
use crate::keypool::health::KeyState;
use crate::{admin, surface, telemetry};
use body::{full, json, Response};
use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tollgate_base::boxed;

/// The settings of the HTTP side (the binary reads them from its configuration).
#[derive(Debug, Clone)]
pub struct ApiSettings {
    /// `None`: the admin API is off.
    pub admin_token: Option<String>,
    /// `None`: `/metrics` is open.
    pub metrics_token: Option<String>,
    pub allow_registration: bool,
    pub max_keys_per_user: u32,
    pub max_body_bytes: usize,
    pub body_read_timeout_ms: u64,
    pub max_connections: usize,
    pub shutdown_grace_ms: u64,
    pub auth_attempts_per_minute: u32,
    /// WebSocket sessions: message size and idle limits, and how many one key may hold.
    pub socket_limits: crate::engine::socket::SocketLimits,
    pub max_sockets: usize,
    pub max_sockets_per_key: u32,
    /// Where the MiniMax proxy's clients open their speech socket (`None`: not served).
    pub minimax_proxy_socket_path: Option<String>,
    /// The backend's chat socket paths, each bound to a model.
    pub chat_socket_paths: std::collections::BTreeMap<String, String>,
    /// Where the backend's apps open their progress socket (`None`: only `/v1/tasks/ws`).
    pub progress_socket_path: Option<String>,
    /// Where sampled requests' traces go (`None`: tracing is off).
    pub tracer: Option<trace::Tracer>,
}

/// Where a channel reload reads the channels from (the binary's configuration file); a test
/// can hand in its own.
pub trait ChannelSource: Send + Sync {
    fn load(&self) -> anyhow::Result<Vec<ChannelConfig>>;
}

/// What the HTTP side shares across connections: its settings, the engine, and the state of
/// consumers' sign-ins. Built by the binary.
pub struct Api {
    pub settings: ApiSettings,
    /// The call pipeline and what it shares (plugins, channels, billing, the call log).
    pub engine: Engine,
    pub keys: Arc<KeyCache>,
    pub sessions: crate::account::session::Sessions,
    /// Sign-in and registration attempts per client address.
    pub auth_throttle: throttle::Throttle,
    channel_source: Box<dyn ChannelSource>,
    request_ids: tollgate_base::ids::RequestIds,
    /// Long-lived task streams open per consumer key.
    pub streams: Arc<throttle::OpenStreams>,
    /// WebSocket sessions open per consumer key, and on the whole gateway.
    pub sockets: Arc<throttle::OpenStreams>,
    pub socket_places: Arc<tokio::sync::Semaphore>,
    /// The sessions' tasks, which shutdown closes (`shutdown` tells them) and waits for.
    pub socket_tasks: tokio_util::task::TaskTracker,
    pub shutdown: tokio::sync::watch::Sender<bool>,
}

impl Api {
    pub fn new(
        settings: ApiSettings,
        engine: Engine,
        keys: Arc<KeyCache>,
        sessions: crate::account::session::Sessions,
        channel_source: Box<dyn ChannelSource>,
    ) -> Api {
        Api {
            auth_throttle: throttle::Throttle::new(settings.auth_attempts_per_minute),
            sockets: Arc::new(throttle::OpenStreams::new(settings.max_sockets_per_key)),
            socket_places: Arc::new(tokio::sync::Semaphore::new(settings.max_sockets)),
            settings,
            engine,
            keys,
            sessions,
            channel_source,
            request_ids: tollgate_base::ids::RequestIds::new(rand::random()),
            streams: Arc::default(),
            socket_tasks: tokio_util::task::TaskTracker::new(),
            shutdown: tokio::sync::watch::Sender::new(false),
        }
    }

    /// Re-reads the channels from their source and swaps them in (see
    /// `Engine::replace_channels`); a set that does not load changes nothing.
    pub async fn reload_channels(&self) -> anyhow::Result<Vec<String>> {
        let configs = self.channel_source.load()?;
        self.engine.replace_channels(&configs).await
    }

    /// Reads the consumer keys again now, so a key just created answers at once on this node
    /// (others see it within `key_refresh_ms`, as before). A failure leaves that to the
    /// refresh job.
    pub async fn accept_new_keys(&self) {
        let wallets = self.engine.billing.as_ref().map(|b| &b.wallets);
        if let Err(e) = self.keys.reload(&self.engine.db, wallets).await {
            tracing::warn!(error = %e, "reloading consumer keys after a new key failed; the refresh job will");
        }
    }

    /// A request id unique across restarts (random prefix) and cheap (a counter).
    pub fn next_request_id(&self) -> String {
        self.request_ids.next()
    }

    /// The consumer behind the request's `Authorization: Bearer` (or `x-api-key`) key.
    pub fn authenticate(&self, req: &Request<Incoming>) -> Result<Consumer, CallError> {
        match auth::credential(req.headers()).value() {
            None | Some("") => {
                let e = error::unauthorized(
                    "You didn't provide an API key. Send your Tollgate key as 'Authorization: Bearer sk-tg-...'.",
                );
                trace::span("auth").fail(e.code.clone());
                Err(e)
            }
            Some(k) => self.consumer_for(k),
        }
    }

    /// The consumer of API key `key` (a header's, or a protocol's first frame's).
    pub fn consumer_for(&self, key: &str) -> Result<Consumer, CallError> {
        let mut span = trace::span("auth");
        let found = self.key_consumer(key);
        match &found {
            Ok(c) if span.on() => {
                span.attr("tollgate.key_id", c.key_id);
                span.attr("tollgate.user_id", c.user_id);
            }
            Err(e) => span.fail(e.code.clone()),
            Ok(_) => {}
        }
        found
    }

    fn key_consumer(&self, key: &str) -> Result<Consumer, CallError> {
        let consumer = self.keys.check(key).ok_or_else(|| {
            error::unauthorized(
                "Incorrect API key provided. Create one with 'tollgate keys create --name NAME'; a new key is accepted within key_refresh_ms (1 s by default).",
            )
        })?;
        if consumer.expired(crate::store::now_unix()) {
            return Err(error::unauthorized("This API key has expired; ask the operator for a new one."));
        }
        Ok(consumer)
    }

    /// Reads the whole request body, refusing more than `max_body_bytes` with 413.
    pub async fn read_body(&self, req: Request<Incoming>) -> Result<Bytes, CallError> {
        self.read_body_within(req, self.settings.max_body_bytes).await
    }

    /// Reads the whole request body: more than `limit` bytes is a 413; a body that does not
    /// arrive within `body_read_timeout_ms` is a 408 (a client trickling bytes cannot hold
    /// the connection and its buffer for ever).
    pub async fn read_body_within(&self, req: Request<Incoming>, limit: usize) -> Result<Bytes, CallError> {
        if let Some(len) =
            req.headers().get(http::header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse::<usize>().ok())
        {
            if len > limit {
                return Err(too_large(limit));
            }
        }
        let deadline = Duration::from_millis(self.settings.body_read_timeout_ms);
        let read = req.extensions().get::<BodyRead>().cloned();
        match tokio::time::timeout(deadline, Limited::new(req.into_body(), limit).collect()).await {
            Ok(Ok(b)) => {
                if let Some(read) = read {
                    read.0.store(true, Ordering::Relaxed);
                }
                Ok(b.to_bytes())
            }
            Ok(Err(e)) if e.is::<http_body_util::LengthLimitError>() => Err(too_large(limit)),
            Ok(Err(_)) => Err(error::bad_request("body_read_failed", "the request body could not be read")),
            Err(_) => Err(CallError::new(
                408,
                "invalid_request_error",
                "request_timeout",
                format!("the request body did not arrive within {} ms", deadline.as_millis()),
            )),
        }
    }
}

/// Set once a request's body has been read whole (see the module's doc).
#[derive(Clone, Default)]
struct BodyRead(Arc<AtomicBool>);

fn too_large(limit: usize) -> CallError {
    CallError::new(
        413,
        "invalid_request_error",
        "request_too_large",
        format!("the request body exceeds the gateway's limit of {limit} bytes (max_body_bytes)"),
    )
}

/// Serves one request, traced when the operator exports traces and the request is sampled
/// (see `tollgate_engine::trace`): its root span names the route and ends with its status.
pub async fn handle(state: Arc<Api>, req: Request<Incoming>) -> Response {
    let Some(tracer) = &state.settings.tracer else { return route(state, req).await };
    let traceparent = req.headers().get("traceparent").and_then(|v| v.to_str().ok());
    let (method, path) = (req.method().as_str(), req.uri().path());
    let attrs = vec![("http.request.method", method.into()), ("url.path", path.into())];
    let Some(trace) = tracer.start(routes::span_name(method, path), traceparent, attrs) else {
        return route(state, req).await;
    };
    let response = trace::scope(Some(Arc::clone(&trace)), route(state, req)).await;
    let status = response.status().as_u16();
    trace.annotate("http.response.status_code", status);
    if status >= 500 {
        trace.fail(format!("HTTP {status}"));
    }
    response
}

/// Serves one request and counts its answer; an answer given with the request's body unread
/// closes the connection (see the module's doc).
async fn route(state: Arc<Api>, mut req: Request<Incoming>) -> Response {
    use hyper::body::Body;
    let body_read = (!req.body().is_end_stream()).then(|| {
        let read = BodyRead::default();
        req.extensions_mut().insert(read.clone());
        read
    });
    let mut response = dispatch(state, req).await;
    let switching = response.status() == http::StatusCode::SWITCHING_PROTOCOLS;
    if !switching && body_read.is_some_and(|read| !read.0.load(Ordering::Relaxed)) {
        response.headers_mut().insert(http::header::CONNECTION, http::HeaderValue::from_static("close"));
    }
    telemetry::METRICS.response(response.status().as_u16());
    response
}

/// Routes one request: the gateway's own routes from `routes::ROUTES`, then plugins' native
/// routes. Every route but the model calls is boxed: this future is moved per request, and
/// its size is that of its largest branch.
async fn dispatch(state: Arc<Api>, mut req: Request<Incoming>) -> Response {
    use routes::{Found, Handler};
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let proxy_socket = state.settings.minimax_proxy_socket_path.as_deref() == Some(path.as_str());
    if proxy_socket && surface::socket::is_upgrade(&req) {
        return boxed::pin(|| surface::minimax_proxy::upgrade(&state, req)).await;
    }
    let progress_socket = state.settings.progress_socket_path.as_deref() == Some(path.as_str());
    if progress_socket && surface::socket::is_upgrade(&req) {
        return boxed::pin(|| surface::progress_socket::upgrade(&state, req)).await;
    }
    if let Some(model) = state.settings.chat_socket_paths.get(&path).filter(|_| surface::socket::is_upgrade(&req)) {
        let protocol = surface::chat_socket::Protocol::Backend { model: model.clone() };
        return boxed::pin(|| surface::chat_socket::upgrade(&state, req, protocol)).await;
    }
    let found = routes::find(method.as_str(), &path);
    // The console's session cookie stands for its session on the routes that take sessions
    // (model calls, tasks and sockets take keys and tokens, and never read it).
    if matches!(found, Found::Route(Handler::Account | Handler::UserInfo | Handler::Admin | Handler::Console))
        && req.headers().contains_key(http::header::COOKIE)
        && auth::from_cookie(&method, req.headers_mut()).is_err()
    {
        return error::error_response(
            403,
            "permission_error",
            "csrf_failed",
            "A request signed in by the console's cookie must carry its 'x-csrf-token' (GET /console/session tells it).",
        );
    }
    match found {
        Found::Route(Handler::Health) => json(200, &health(&state)),
        Found::Route(Handler::Metrics) => match &state.settings.metrics_token {
            Some(token) if !bearer_is(&req, token) => error::error_response(
                401,
                "invalid_request_error",
                "metrics_token_required",
                "GET /metrics needs 'Authorization: Bearer <metrics_token>'.",
            ),
            _ => full(200, "text/plain; version=0.0.4", metrics_text(&state)),
        },
        Found::Route(Handler::Models) => surface::openai::models(&state, &req, false),
        Found::Route(Handler::AudioModels) => surface::openai::models(&state, &req, true),
        Found::Route(Handler::UserInfo) => boxed::pin(|| surface::openai::user_info(&state, &req)).await,
        Found::Route(Handler::Account) => boxed::pin(|| surface::user::handle(&state, req)).await,
        Found::Route(Handler::Tasks) => boxed::pin(|| surface::tasks::handle(&state, &req)).await,
        Found::Route(Handler::Videos) => boxed::pin(|| surface::videos::handle(&state, req)).await,
        Found::Route(Handler::ModelCall(op)) => surface::openai::model_call(&state, req, op).await,
        Found::Route(Handler::Messages) => boxed::pin(|| surface::anthropic::messages(&state, req)).await,
        Found::Route(Handler::MessagesCount) => boxed::pin(|| surface::anthropic::count_tokens(&state, req)).await,
        Found::Route(Handler::Gemini) => boxed::pin(|| surface::gemini::handle(&state, req)).await,
        Found::Route(Handler::ChatSocket) if surface::socket::is_upgrade(&req) => {
            boxed::pin(|| surface::chat_socket::upgrade(&state, req, surface::chat_socket::Protocol::OpenAi)).await
        }
        Found::Route(Handler::SocketToken) => surface::socket::token(&state, &req),
        Found::Route(Handler::SpeechCache) => surface::speech_prefetch::cache_admin(&state, &req),
        Found::Route(Handler::ProgressSocket) if surface::socket::is_upgrade(&req) => {
            boxed::pin(|| surface::progress_socket::upgrade(&state, req)).await
        }
        Found::Route(Handler::ChatSocket | Handler::ProgressSocket) => error::error_response(
            400,
            "invalid_request_error",
            "websocket_required",
            &format!("GET {path} is a WebSocket: connect to it with an upgrade."),
        ),
        Found::Route(Handler::Admin) => boxed::pin(|| admin::handle(&state, req)).await,
        Found::Route(Handler::Console) => boxed::pin(|| crate::console::handle(&state, req)).await,
        Found::Route(Handler::OpenApi) => full(200, "application/json", routes::OPENAPI),
        Found::WrongMethod(allowed) => error::method_not_allowed(&method, &path, &allowed.join(", ")),
        Found::NotOurs => {
            let route = state.engine.registry.current().route(method.as_str(), &path).map(|m| {
                surface::native::NativeRoute { plugin: Arc::clone(m.plugin), route: m.route.clone(), params: m.params }
            });
            match route {
                Some(route) if surface::socket::is_upgrade(&req) => {
                    boxed::pin(|| surface::socket::upgrade(&state, req, route)).await
                }
                Some(route) => surface::native::call(&state, req, route).await,
                None => error::error_response(
                    404,
                    "invalid_request_error",
                    "unknown_route",
                    &format!(
                        "Unknown request URL: {method} {path}. GET /openapi.json lists the routes Tollgate serves."
                    ),
                ),
            }
        }
    }
}

/// Liveness (always 200 while serving) with readiness details: channels that cannot serve
/// (no usable key, plugin not loaded) and plugin files that failed to load.
fn health(state: &Api) -> serde_json::Value {
    let plugins = state.engine.registry.current();
    let mut unready = Vec::new();
    for c in state.engine.channels.load().all() {
        let usable = c.key_states().iter().filter(|k| k.state != KeyState::Disabled && !k.disabled_by_operator).count();
        let why = if plugins.get(&c.plugin).is_none() {
            Some(format!("plugin '{}' is not loaded", c.plugin))
        } else if c.key_count() == 0 {
            Some("no upstream keys".to_string())
        } else if usable == 0 {
            Some("every upstream key is disabled".to_string())
        } else {
            None
        };
        if let Some(why) = why {
            unready.push(serde_json::json!({ "channel": c.name, "reason": why }));
        }
    }
    let failed: Vec<_> = state
        .engine
        .registry
        .status()
        .into_iter()
        .filter(|s| s.status == "failed")
        .map(|s| serde_json::json!({ "file": s.file, "error": s.last_error }))
        .collect();
    serde_json::json!({
        "status": "ok",
        "ready": unready.is_empty() && failed.is_empty(),
        "plugins": plugins.len(),
        "channels_not_ready": unready,
        "plugins_failed": failed,
    })
}

/// The request presents `token` (compared in constant time).
pub(crate) fn bearer_is(req: &Request<Incoming>, token: &str) -> bool {
    auth::credential(req.headers()).value().is_some_and(|given| auth::constant_time_eq(given, token))
}

fn metrics_text(state: &Api) -> String {
    telemetry::render(&telemetry::Snapshot {
        plugins_loaded: state.engine.registry.current().len(),
        plugin_loads_ok: state.engine.registry.loads_ok.load(Ordering::Relaxed),
        plugin_loads_failed: state.engine.registry.loads_failed.load(Ordering::Relaxed),
        call_records_written: state.engine.call_log.written.load(Ordering::Relaxed),
        call_records_dropped: state.engine.call_log.dropped.load(Ordering::Relaxed),
        call_records_queued: state.engine.call_log.queued() as u64,
        call_records_queued_peak: state.engine.call_log.queued_peak.load(Ordering::Relaxed),
        plugin_slots: state.engine.registry.runtime().slots(),
        upstream_keys: state
            .engine
            .channels
            .load()
            .all()
            .iter()
            .map(|c| {
                let mut counts = [0u64; 4];
                for k in c.key_states() {
                    counts[match k.state {
                        _ if k.disabled_by_operator => 3,
                        KeyState::Healthy => 0,
                        KeyState::CoolingDown => 1,
                        KeyState::Disabled => 2,
                    }] += 1;
                }
                (c.name.clone(), counts)
            })
            .collect(),
    })
}

/// How long a connection may take to send a request's head, and so how long an idle
/// keep-alive connection stays open.
pub(crate) const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);

/// The client's address, put in each request's extensions.
#[derive(Debug, Clone, Copy)]
pub struct Peer(pub std::net::IpAddr);

/// Serves until `shutdown` resolves, then drains gracefully and stops the workers. The
/// listener accepts and hands each connection to a request worker (`workers`). At most
/// `max_connections` are served at once: a connection is accepted only when a slot is free
/// (others wait in the listen backlog), so a flood of idle or trickling connections cannot
/// exhaust descriptors.
pub async fn serve(
    state: Arc<Api>,
    listener: TcpListener,
    workers: workers::Workers,
    shutdown: impl std::future::Future<Output = ()>,
) {
    // Connections and their graceful close are tracked here (hyper-util's tracker does not
    // take connections that may be upgraded to WebSockets).
    let connections = tokio_util::task::TaskTracker::new();
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new()).header_read_timeout(HEADER_READ_TIMEOUT).keep_alive(true);
    let slots = Arc::new(tokio::sync::Semaphore::new(state.settings.max_connections.max(1)));
    tokio::pin!(shutdown);
    loop {
        let slot = tokio::select! {
            slot = Arc::clone(&slots).acquire_owned() => slot.expect("the connection semaphore is never closed"),
            _ = &mut shutdown => break,
        };
        tokio::select! {
            accepted = listener.accept() => {
                let (stream, peer) = match accepted {
                    Ok(s) => s,
                    Err(e) => {
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let _ = stream.set_nodelay(true);
                let mut shutdown = state.shutdown.subscribe();
                let state = Arc::clone(&state);
                let http = http.clone();
                let serve = move |stream: tokio::net::TcpStream| async move {
                    let service = hyper::service::service_fn(move |mut req: Request<Incoming>| {
                        req.extensions_mut().insert(Peer(peer.ip()));
                        let state = Arc::clone(&state);
                        async move { Ok::<_, std::convert::Infallible>(handle(state, req).await.map(poll::Answered)) }
                    });
                    let conn = http.serve_connection(TokioIo::new(stream), service).with_upgrades();
                    tokio::pin!(conn);
                    tokio::select! {
                        _ = conn.as_mut() => {}
                        _ = async { let _ = shutdown.wait_for(|stop| *stop).await; } => {
                            // Idle keep-alive connections close now; a call in flight ends first.
                            conn.as_mut().graceful_shutdown();
                            let _ = conn.await;
                        }
                    }
                };
                match workers.serve(stream, serve) {
                    Ok(done) => {
                        connections.spawn(async move {
                            done.await;
                            drop(slot);
                        });
                    }
                    Err(e) => tracing::warn!(error = %e, "could not hand a connection to a worker"),
                }
            }
            _ = &mut shutdown => break,
        }
    }
    drop(listener);
    let grace = Duration::from_millis(state.settings.shutdown_grace_ms);
    tracing::info!(
        grace_ms = grace.as_millis() as u64,
        "shutting down: no new connections; waiting for calls in flight"
    );
    // Open WebSocket sessions get their close frame, settle, and end.
    state.shutdown.send_replace(true);
    state.socket_tasks.close();
    connections.close();
    let drained = async {
        connections.wait().await;
        state.socket_tasks.wait().await;
    };
    tokio::select! {
        _ = drained => tracing::info!("all connections closed"),
        _ = tokio::time::sleep(grace) => tracing::warn!("shutdown grace period over; closing remaining connections"),
    }
    // Joining the workers' threads blocks: off this runtime's threads.
    let _ = tokio::task::spawn_blocking(move || workers.stop()).await;
}
