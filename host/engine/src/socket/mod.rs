//! WebSocket sessions below HTTP: a consumer's socket, the plugin's upstream socket, and the
//! plugin between them, frame by frame (`exchange.frame`), with the session's work billed in
//! pieces.
//!
//! Invariants (each with a test):
//! - the upstream is opened (on a key of the route's channel, the next key when the upstream
//!   refused one) before the consumer's upgrade is answered, so a consumer is never left on a
//!   socket that leads nowhere;
//! - a piece of work is reserved before the frames that ask for it are sent on: a `reserve`
//!   the consumer may not have (model, price, balance, too many open) drops the actions after
//!   it and the plugin answers with the vendor's own failure;
//! - each piece is one call record, settled once, in order: charged what the vendor reported,
//!   or its reservation when the plugin says the vendor worked without reporting, or free;
//!   pieces still open when the session ends are free, unless the plugin failed (then each is
//!   charged its reservation, marked estimated: the vendor may have worked);
//! - a consumer gone without a close frame, or silent past the idle timeout, reaches the
//!   plugin as a close (it settles its pieces), and the upstream is closed; at shutdown open
//!   sessions get a close frame (1001);
//! - every message is bounded (the consumer's by `SocketLimits`, the upstream's by
//!   `connect::MAX_UPSTREAM_MESSAGE`), as are the pieces open at once.

mod connect;

use crate::account::Consumer;
use crate::billing::{Estimate, Priced};
use crate::call::{self, CallRequest};
use crate::end::CallEnd;
use crate::exchange::{self, plugin_failure, CallError, VendorWork};
use crate::keypool::health::KeyOutcome;
use crate::keypool::{Channel, UpstreamKey};
use crate::plugin::{wit, Plugin, PluginCall};
use crate::telemetry::METRICS;
use crate::Engine;
use futures_util::{SinkExt, StreamExt};
use std::collections::VecDeque;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, WebSocketConfig};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

pub use connect::UpstreamSocket;

/// What bounds a consumer's session.
#[derive(Debug, Clone, Copy)]
pub struct SocketLimits {
    /// The largest message (and frame) a consumer may send.
    pub max_message_bytes: usize,
    /// A session whose consumer sent nothing for this long is closed.
    pub idle_timeout: Duration,
}

impl SocketLimits {
    /// The consumer side's protocol settings.
    pub fn config(&self) -> WebSocketConfig {
        WebSocketConfig::default()
            .max_message_size(Some(self.max_message_bytes))
            .max_frame_size(Some(self.max_message_bytes))
    }
}

/// The most pieces of work open at once in one session.
const MAX_OPEN_PIECES: usize = 32;

/// The most keys opening a session tries.
const MAX_ATTEMPTS: usize = 3;

/// A session whose upstream is open, waiting for the consumer's socket.
pub struct Session {
    r: CallRequest,
    pc: PluginCall,
    upstream: UpstreamSocket,
    /// Headers for the consumer's upgrade answer (a sub-protocol).
    pub reply_headers: Vec<wit::Header>,
    billing: Option<Arc<crate::billing::Billing>>,
    log: crate::store::CallLog,
}

impl Engine {
    /// Starts the plugin's exchange for a consumer's upgrade and opens its upstream socket on a
    /// key of the route's channel. An error is answered to the upgrade request as HTTP.
    pub async fn open_socket(&self, r: CallRequest) -> Result<Session, CallError> {
        let allowed = r.channel.models.iter().any(|m| r.consumer.may_use(m));
        if !allowed {
            return Err(CallError::new(
                403,
                "permission_error",
                "model_not_allowed",
                format!("This API key may not use the models of channel '{}'.", r.channel.name),
            ));
        }
        let (channel, plugin) = (Arc::clone(&r.channel), Arc::clone(&r.plugin));
        let mut tried = Vec::new();
        let attempts = channel.key_count().clamp(1, MAX_ATTEMPTS);
        loop {
            let picked = channel.pick_key(&tried);
            if picked.is_none() && channel.key_count() > 0 {
                return Err(CallError::new(
                    503,
                    "server_error",
                    "upstream_keys_unavailable",
                    format!(
                        "every upstream key of channel '{}' is disabled or cooling down; retry later",
                        channel.name
                    ),
                ));
            }
            let key = picked.as_ref().map(|k| &k.secret);
            let result = self.open_on(&r, &plugin, &channel, key, tried.len() as u32 + 1).await;
            let Some(picked) = picked else {
                return result.map(|(pc, socket, headers)| self.session(r, pc, socket, headers));
            };
            let outcome = match &result {
                Ok(_) => KeyOutcome::Success,
                Err(e) => call::key_outcome(&Err(e.clone())),
            };
            picked.report(outcome);
            tried.push(picked.id);
            let retry = matches!(outcome, KeyOutcome::Refused | KeyOutcome::RateLimited(_) | KeyOutcome::Fault);
            match result {
                Ok((pc, socket, headers)) => return Ok(self.session(r, pc, socket, headers)),
                Err(e) if !retry || tried.len() >= attempts => return Err(e),
                Err(_) => {
                    METRICS.key_failovers.fetch_add(1, Relaxed);
                    tracing::warn!(channel = %channel.name, request_id = %r.request_id, "the upstream refused the socket on this key; trying another");
                }
            }
        }
    }

    fn session(
        &self,
        r: CallRequest,
        pc: PluginCall,
        upstream: UpstreamSocket,
        reply_headers: Vec<wit::Header>,
    ) -> Session {
        Session { r, pc, upstream, reply_headers, billing: self.billing.clone(), log: self.call_log.clone() }
    }

    /// One attempt: the plugin's first step must be its socket, which is opened on `key`.
    async fn open_on(
        &self,
        r: &CallRequest,
        plugin: &Arc<Plugin>,
        channel: &Arc<Channel>,
        key: Option<&UpstreamKey>,
        attempt: u32,
    ) -> Result<(PluginCall, UpstreamSocket, Vec<wit::Header>), CallError> {
        let mut call = call::wit_call(r, channel, plugin, attempt)?;
        call.credential = call::credential_for(plugin, channel, key)?;
        let mut pc = self
            .registry
            .runtime()
            .start(&plugin.pre, &call)
            .await
            .map_err(|e| plugin_failure(plugin, "starting the exchange", e))?;
        let step = pc.first().await.map_err(|e| plugin_failure(plugin, "first()", e))?;
        let request = match step {
            wit::Step::Socket(s) => s,
            wit::Step::Fail(e) => return Err(CallError::from_adapter(&e)),
            _ => {
                return Err(CallError::new(
                    400,
                    "invalid_request_error",
                    "not_a_socket_route",
                    "This route does not take a WebSocket upgrade; send a plain HTTP request.",
                ))
            }
        };
        let base_url = exchange::base_url(channel, plugin)?;
        match connect::open(&self.upstream, &channel.name, &base_url, &request.request, key).await? {
            connect::Opened::Socket(socket) => Ok((pc, *socket, request.reply_headers)),
            // The plugin reads the refusal (its class decides the key's fate).
            connect::Opened::Refused(response) => {
                let step = pc.next(&response).await.map_err(|e| plugin_failure(plugin, "next()", e))?;
                Err(match step {
                    wit::Step::Fail(e) => CallError::from_adapter(&e),
                    _ => CallError::upstream(
                        wit::ErrorKind::UpstreamFault,
                        format!("the upstream refused the socket with HTTP {}", response.status),
                    ),
                })
            }
        }
    }
}

/// Where a session's input came from.
enum Side {
    Client,
    Upstream,
}

impl Session {
    /// Runs the session until one side closes, the plugin closes it, or `shutdown` fires.
    pub async fn run<S>(
        mut self,
        mut client: WebSocketStream<S>,
        limits: SocketLimits,
        mut shutdown: tokio::sync::watch::Receiver<bool>,
    ) where
        S: AsyncRead + AsyncWrite + Unpin + Send,
    {
        METRICS.sockets_open.fetch_add(1, Relaxed);
        let mut pieces: VecDeque<CallEnd> = VecDeque::new();
        let mut seq = 0u32;
        let mut client_open = true;
        let mut upstream_open = true;
        let plugin = Arc::clone(&self.r.plugin);
        loop {
            let input = tokio::select! {
                changed = shutdown.changed() => {
                    let _ = changed;
                    let _ = client.send(close(CloseCode::Away, "the gateway is shutting down")).await;
                    client_open = false;
                    wit::SocketInput::Client(wit::WsFrame::Close((1001, String::new())))
                }
                m = tokio::time::timeout(limits.idle_timeout, client.next()), if client_open => match m {
                    Err(_) => {
                        let _ = client.send(close(CloseCode::Normal, "idle timeout")).await;
                        client_open = false;
                        wit::SocketInput::Client(wit::WsFrame::Close((1000, "idle timeout".into())))
                    }
                    Ok(Some(Err(tokio_tungstenite::tungstenite::Error::Capacity(e)))) => {
                        tracing::debug!(error = %e, "a consumer sent a message over the limit");
                        let _ = client.send(close(CloseCode::Size, "message too big")).await;
                        client_open = false;
                        wit::SocketInput::Client(wit::WsFrame::Close((1009, String::new())))
                    }
                    Ok(m) => match to_frame(m, Side::Client) {
                        Some(frame) => {
                            if matches!(frame, wit::WsFrame::Close(_)) { client_open = false; }
                            wit::SocketInput::Client(frame)
                        }
                        None => { let _ = client.flush().await; continue }
                    },
                },
                m = self.upstream.next(), if upstream_open => match to_frame(m, Side::Upstream) {
                    Some(frame) => {
                        if matches!(frame, wit::WsFrame::Close(_)) { upstream_open = false; }
                        wit::SocketInput::Upstream(frame)
                    }
                    None => { let _ = self.upstream.flush().await; continue }
                },
            };
            let actions = match self.pc.frame(input).await {
                Ok(Ok(actions)) => actions,
                Ok(Err(e)) => {
                    tracing::warn!(request_id = %self.r.request_id, error = %e.message, "the plugin ended the socket session");
                    break;
                }
                Err(e) => {
                    plugin_failure(&plugin, "frame()", e);
                    // The vendor may have worked on every open piece.
                    for end in pieces.drain(..) {
                        end.fail(&interrupted());
                    }
                    break;
                }
            };
            let mut closing = false;
            let mut actions = actions.into_iter();
            while let Some(action) = actions.next() {
                match action {
                    wit::SocketAction::ToClient(frame) => {
                        if client_open && client.send(to_message(frame)).await.is_err() {
                            client_open = false;
                        }
                    }
                    wit::SocketAction::ToUpstream(frame) => {
                        if upstream_open && self.upstream.send(to_message(frame)).await.is_err() {
                            upstream_open = false;
                        }
                    }
                    wit::SocketAction::Reserve(piece) => {
                        seq += 1;
                        match self.reserve(&piece, seq, pieces.len()) {
                            Ok(end) => pieces.push_back(end),
                            Err(e) => {
                                // The rest asked for the refused piece: dropped; the plugin answers.
                                let refused = wit::AdapterError {
                                    kind: refusal_kind(&e),
                                    message: e.message.clone(),
                                    code: Some(e.code.clone()),
                                    retry_after_ms: None,
                                };
                                actions = match self.pc.frame(wit::SocketInput::Refused(refused)).await {
                                    // A reserve among the answer is refused too: it is dropped.
                                    Ok(Ok(answer)) => answer
                                        .into_iter()
                                        .filter(|a| !matches!(a, wit::SocketAction::Reserve(_)))
                                        .collect::<Vec<_>>()
                                        .into_iter(),
                                    _ => vec![wit::SocketAction::Close].into_iter(),
                                };
                            }
                        }
                    }
                    wit::SocketAction::Bill(usage) => match pieces.pop_front() {
                        Some(end) => {
                            end.reply(200, &usage, None);
                        }
                        None => {
                            tracing::warn!(request_id = %self.r.request_id, "the plugin billed a piece it never reserved")
                        }
                    },
                    wit::SocketAction::BillReserved => {
                        if let Some(end) = pieces.pop_front() {
                            end.fail(&interrupted());
                        }
                    }
                    wit::SocketAction::Release => {
                        if let Some(end) = pieces.pop_front() {
                            end.fail(&CallError::upstream(
                                wit::ErrorKind::UpstreamFault,
                                "the vendor failed the piece before any output",
                            ));
                        }
                    }
                    wit::SocketAction::Close => closing = true,
                }
            }
            if closing || (!client_open && !upstream_open) {
                break;
            }
        }
        if client_open {
            let _ = client.send(close(CloseCode::Normal, "")).await;
        }
        if upstream_open {
            let _ = self.upstream.send(close(CloseCode::Normal, "")).await;
        }
        // Pieces the plugin left open: free (`CallEnd`'s drop records them and returns their holds).
        drop(pieces);
        METRICS.sockets_open.fetch_sub(1, Relaxed);
    }

    /// Opens piece `seq` of the session: the model checked, its units reserved.
    fn reserve(&self, piece: &wit::SocketReserve, seq: u32, open: usize) -> Result<CallEnd, CallError> {
        let r = &self.r;
        if open >= MAX_OPEN_PIECES {
            return Err(CallError::new(
                429,
                "rate_limit_error",
                "too_many_open_pieces",
                format!("A session may have {MAX_OPEN_PIECES} pieces of work in flight; wait for one to finish."),
            ));
        }
        if !r.consumer.may_use(&piece.model) {
            return Err(CallError::new(
                403,
                "permission_error",
                "model_not_allowed",
                format!("This API key may not use the model '{}'.", piece.model),
            ));
        }
        if !r.channel.models.contains(&piece.model) {
            return Err(CallError::new(
                404,
                "invalid_request_error",
                "model_not_found",
                format!("The model '{}' is not served on this route.", piece.model),
            ));
        }
        let mut rec = call::draft_record(r);
        rec.request_id = format!("{}-{seq}", r.request_id);
        rec.model = Some(piece.model.clone());
        let mut end = CallEnd::new(self.billing.clone(), self.log.clone(), rec, Instant::now());
        if let Some(b) = &self.billing {
            let (accounts, group) = (r.consumer.accounts(), &r.consumer.group);
            let quoted = crate::end::reported(&piece.usage);
            let priced = Priced::Model(&piece.model);
            match b.start_with(&accounts, group, priced, &r.op, Estimate::Quote(&quoted)) {
                Ok(meter) => end.meter = Some(meter),
                Err(refusal) => {
                    let e = call::refusal_error(priced, refusal);
                    end.refuse(&e);
                    return Err(e);
                }
            }
        }
        Ok(end)
    }

    /// The consumer behind the session.
    pub fn consumer(&self) -> &Consumer {
        &self.r.consumer
    }
}

/// A piece the vendor worked on whose units are unknown.
fn interrupted() -> CallError {
    CallError::upstream(wit::ErrorKind::UpstreamFault, "the session broke during this piece").after(VendorWork::Done)
}

fn refusal_kind(e: &CallError) -> wit::ErrorKind {
    match e.status {
        402 => wit::ErrorKind::InsufficientBalance,
        403 => wit::ErrorKind::Forbidden,
        404 => wit::ErrorKind::NotFound,
        429 => wit::ErrorKind::RateLimited,
        _ => wit::ErrorKind::BadRequest,
    }
}

fn close(code: CloseCode, reason: &str) -> Message {
    Message::Close(Some(CloseFrame { code, reason: reason.to_string().into() }))
}

/// A message as the plugin sees it; `None` for control frames the library answers itself. A
/// side gone without a close frame is a close 1006.
fn to_frame(m: Option<Result<Message, tokio_tungstenite::tungstenite::Error>>, side: Side) -> Option<wit::WsFrame> {
    let gone = || wit::WsFrame::Close((1006, String::new()));
    let message = match m {
        Some(Ok(m)) => m,
        Some(Err(e)) => {
            let who = match side {
                Side::Client => "consumer",
                Side::Upstream => "upstream",
            };
            tracing::debug!(error = %e, who, "socket read failed");
            return Some(gone());
        }
        None => return Some(gone()),
    };
    let (bytes, direction) = (message.len() as u64, matches!(side, Side::Client));
    METRICS.socket_frame(direction, bytes);
    Some(match message {
        Message::Text(t) => wit::WsFrame::Text(t.to_string()),
        Message::Binary(b) => wit::WsFrame::Binary(b.to_vec()),
        Message::Close(c) => {
            wit::WsFrame::Close(c.map_or((1005, String::new()), |c| (c.code.into(), c.reason.to_string())))
        }
        Message::Ping(_) | Message::Pong(_) | Message::Frame(_) => return None,
    })
}

fn to_message(frame: wit::WsFrame) -> Message {
    match frame {
        wit::WsFrame::Text(t) => Message::text(t),
        wit::WsFrame::Binary(b) => Message::binary(b),
        wit::WsFrame::Close((code, reason)) => close(CloseCode::from(code), &reason),
    }
}
