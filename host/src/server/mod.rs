//! The HTTP server: accepting connections (hyper 1, HTTP/1.1 keep-alive), routing, consumer
//! request bodies with a size limit, and graceful shutdown.
//!
//! Shutdown: on the signal the listener closes at once (new connections are refused), idle
//! keep-alive connections are closed, and calls in flight, streams included, run to their end
//! or until `shutdown_grace_ms`; then the call log is flushed.

pub mod body;
pub mod error;

use crate::account::{Consumer, KeyCache};
use crate::billing::Billing;
use crate::config::Config;
use crate::exchange::{CallError, Upstream};
use crate::keypool::health::KeyState;
use crate::keypool::Channels;
use crate::plugin::PluginRegistry;
use crate::store::{CallLog, Db};
use crate::{admin, surface, telemetry};
use body::{full, json, Response};
use bytes::Bytes;
use http::{Method, Request};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;

/// Everything a request may need, shared by all connections.
pub struct AppState {
    pub config: Config,
    pub registry: Arc<PluginRegistry>,
    /// Replaced whole by a reload (`reload_channels`); a call keeps the set it started with.
    pub channels: arc_swap::ArcSwap<Channels>,
    pub keys: Arc<KeyCache>,
    pub upstream: Upstream,
    pub call_log: CallLog,
    pub db: Db,
    /// On when the configuration names a price table.
    pub billing: Option<Arc<Billing>>,
    pub sessions: crate::account::session::Sessions,
    request_seq: AtomicU64,
    request_prefix: String,
}

impl AppState {
    pub fn new(
        config: Config,
        registry: Arc<PluginRegistry>,
        keys: Arc<KeyCache>,
        call_log: CallLog,
        db: Db,
        billing: Option<Arc<Billing>>,
        sessions: crate::account::session::Sessions,
    ) -> AppState {
        let channels = arc_swap::ArcSwap::from_pointee(Channels::new(
            &config.channels,
            Duration::from_millis(config.key_probe_after_ms),
        ));
        let upstream = Upstream::new(
            Duration::from_millis(config.connect_timeout_ms),
            Duration::from_millis(config.upstream_timeout_ms),
            Duration::from_millis(config.stream_idle_timeout_ms),
        );
        AppState {
            config,
            registry,
            channels,
            keys,
            upstream,
            call_log,
            db,
            billing,
            sessions,
            request_seq: AtomicU64::new(0),
            request_prefix: format!("{:08x}", rand::random::<u32>()),
        }
    }

    /// Re-reads the channels from the configuration file and swaps them in: keys that stay
    /// keep their health and balance, stored keys stay in their pools, calls in flight finish
    /// on the set they started with. A file that does not load changes nothing.
    pub async fn reload_channels(&self) -> anyhow::Result<Vec<String>> {
        use anyhow::Context;
        let path = self.config.source.as_deref().context("this gateway was not started from a configuration file")?;
        let fresh = Config::load(path, true)?;
        let channels = Channels::reloaded(
            &fresh.channels,
            Duration::from_millis(self.config.key_probe_after_ms),
            &self.channels.load(),
        );
        crate::keypool::stored::load_into(&self.db, self.config.master_key.as_ref(), &channels).await?;
        let names = channels.all().iter().map(|c| c.name.clone()).collect();
        self.channels.store(Arc::new(channels));
        Ok(names)
    }

    /// A request id unique across restarts (random prefix) and cheap (a counter).
    pub fn next_request_id(&self) -> String {
        format!("req-{}{:08x}", self.request_prefix, self.request_seq.fetch_add(1, Ordering::Relaxed))
    }

    /// The consumer behind the request's `Authorization: Bearer` (or `x-api-key`) key.
    pub fn authenticate(&self, req: &Request<Incoming>) -> Result<Consumer, CallError> {
        let h = req.headers();
        let key = h
            .get(http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer ")))
            .or_else(|| h.get("x-api-key").and_then(|v| v.to_str().ok()))
            .map(str::trim);
        match key {
            None | Some("") => Err(error::unauthorized(
                "You didn't provide an API key. Send your Tollgate key as 'Authorization: Bearer sk-tg-...'.",
            )),
            Some(k) => {
                let consumer = self.keys.check(k).ok_or_else(|| {
                    error::unauthorized(
                        "Incorrect API key provided. Create one with 'tollgate keys create --name NAME'.",
                    )
                })?;
                if consumer.expires_at.is_some_and(|t| crate::store::now_unix() >= t) {
                    return Err(error::unauthorized("This API key has expired; ask the operator for a new one."));
                }
                Ok(consumer)
            }
        }
    }

    /// Reads the whole request body, refusing more than `max_body_bytes` with 413.
    pub async fn read_body(&self, req: Request<Incoming>) -> Result<Bytes, CallError> {
        let limit = self.config.max_body_bytes;
        if let Some(len) =
            req.headers().get(http::header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse::<usize>().ok())
        {
            if len > limit {
                return Err(too_large(limit));
            }
        }
        match Limited::new(req.into_body(), limit).collect().await {
            Ok(b) => Ok(b.to_bytes()),
            Err(e) if e.is::<http_body_util::LengthLimitError>() => Err(too_large(limit)),
            Err(_) => Err(error::bad_request("body_read_failed", "the request body could not be read")),
        }
    }
}

fn too_large(limit: usize) -> CallError {
    CallError::new(
        413,
        "invalid_request_error",
        "request_too_large",
        format!("the request body exceeds the gateway's limit of {limit} bytes (max_body_bytes)"),
    )
}

/// Routes one request.
pub async fn handle(state: Arc<AppState>, req: Request<Incoming>) -> Response {
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let response = match (&method, path.as_str()) {
        (&Method::GET, "/health") => {
            json(200, &serde_json::json!({ "status": "ok", "plugins": state.registry.current().len() }))
        }
        (&Method::GET, "/metrics") => full(200, "text/plain; version=0.0.4", metrics_text(&state)),
        (&Method::GET, "/v1/models") => surface::openai::models(&state, &req),
        (&Method::GET, "/v1/user/info") => surface::openai::user_info(&state, &req).await,
        (_, p) if p.starts_with("/v1/auth/") || p.starts_with("/v1/user/keys") || p == "/v1/user/logs" => {
            surface::user::handle(&state, req).await
        }
        (&Method::POST, "/v1/chat/completions") => surface::openai::model_call(&state, req, "chat").await,
        (&Method::POST, "/v1/embeddings") => surface::openai::model_call(&state, req, "embeddings").await,
        (&Method::POST, "/v1/images/generations") => surface::openai::model_call(&state, req, "images").await,
        (&Method::POST, "/v1/rerank") => surface::openai::model_call(&state, req, "rerank").await,
        (&Method::POST, "/v1/audio/speech") => surface::openai::model_call(&state, req, "speech").await,
        (_, p) if p.starts_with("/admin/") => admin::handle(&state, req).await,
        (
            _,
            "/v1/chat/completions"
            | "/v1/embeddings"
            | "/v1/images/generations"
            | "/v1/rerank"
            | "/v1/audio/speech"
            | "/v1/models"
            | "/v1/user/info"
            | "/health"
            | "/metrics",
        ) => error::error_response(
            405,
            "invalid_request_error",
            "method_not_allowed",
            &format!("{method} is not allowed on {path}"),
        ),
        _ => {
            let route =
                state.registry.current().route(method.as_str(), &path).map(|(p, op)| (Arc::clone(p), op.to_string()));
            match route {
                Some((plugin, op)) => surface::native::call(&state, req, plugin, op).await,
                None => error::error_response(
                    404,
                    "invalid_request_error",
                    "unknown_route",
                    &format!("Unknown request URL: {method} {path}. See the README for the routes Tollgate serves."),
                ),
            }
        }
    };
    telemetry::METRICS.response(response.status().as_u16());
    response
}

fn metrics_text(state: &AppState) -> String {
    telemetry::render(&telemetry::Snapshot {
        plugins_loaded: state.registry.current().len(),
        plugin_loads_ok: state.registry.loads_ok.load(Ordering::Relaxed),
        plugin_loads_failed: state.registry.loads_failed.load(Ordering::Relaxed),
        call_records_written: state.call_log.written.load(Ordering::Relaxed),
        call_records_dropped: state.call_log.dropped.load(Ordering::Relaxed),
        upstream_keys: state
            .channels
            .load()
            .all()
            .iter()
            .map(|c| {
                let mut counts = [0u64; 3];
                for k in c.key_states() {
                    counts[match k.state {
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

/// Serves until `shutdown` resolves, then drains gracefully.
pub async fn serve(state: Arc<AppState>, listener: TcpListener, shutdown: impl std::future::Future<Output = ()>) {
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new()).header_read_timeout(Duration::from_secs(30)).keep_alive(true);
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let (stream, _) = match accepted {
                    Ok(s) => s,
                    Err(e) => {
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let _ = stream.set_nodelay(true);
                let state = Arc::clone(&state);
                let service = hyper::service::service_fn(move |req| {
                    let state = Arc::clone(&state);
                    async move { Ok::<_, std::convert::Infallible>(handle(state, req).await) }
                });
                let conn = http.serve_connection(TokioIo::new(stream), service);
                let conn = graceful.watch(conn);
                tokio::spawn(async move {
                    let _ = conn.await;
                });
            }
            _ = &mut shutdown => break,
        }
    }
    drop(listener);
    let grace = Duration::from_millis(state.config.shutdown_grace_ms);
    tracing::info!(
        grace_ms = grace.as_millis() as u64,
        "shutting down: no new connections; waiting for calls in flight"
    );
    tokio::select! {
        _ = graceful.shutdown() => tracing::info!("all connections closed"),
        _ = tokio::time::sleep(grace) => tracing::warn!("shutdown grace period over; closing remaining connections"),
    }
}
