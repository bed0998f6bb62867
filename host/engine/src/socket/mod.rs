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
//! - a session is opened only for a consumer whose balance can pay for some work;
//! - a consumer gone without a close frame, or silent past the idle timeout, reaches the
//!   plugin as a close (it settles its pieces; `session.rs` reads the upstream on so that it
//!   can), and the upstream is closed; at shutdown open sessions get a close frame (1001);
//! - every message is bounded (the consumer's by `SocketLimits`, the upstream's by
//!   `connect::MAX_UPSTREAM_MESSAGE`), as are the pieces open at once.

mod connect;
mod session;

use crate::billing::{Estimate, Priced};
use crate::call::{self, CallRequest};
use crate::end::CallEnd;
use crate::exchange::{self, plugin_failure, CallError};
use crate::keypool::health::KeyOutcome;
use crate::keypool::{Channel, UpstreamKey};
use crate::plugin::{wit, Plugin, PluginCall};
use crate::telemetry::METRICS;
use crate::Engine;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Message;

pub use connect::UpstreamSocket;
pub use session::close;

/// What bounds a consumer's session.
#[derive(Debug, Clone, Copy)]
pub struct SocketLimits {
    /// The largest message (and frame) a consumer may send.
    pub max_message_bytes: usize,
    /// A session whose consumer sent nothing for this long is closed.
    pub idle_timeout: Duration,
    /// A side that takes longer to take one message is gone.
    pub write_timeout: Duration,
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

/// The consumer's protocol over the plugin's frames: the vendor's own (`Native`), or a
/// replaced proxy's, which rewrites or drops frames either way and adds its own.
pub trait Dialect: Send {
    /// A consumer's data message before the plugin reads it: passed on (maybe rewritten), or
    /// answered here with these frames and dropped.
    fn inbound(&mut self, frame: wit::WsFrame) -> Result<wit::WsFrame, Vec<wit::WsFrame>> {
        Ok(frame)
    }
    /// A message on its way to the consumer: what is sent instead (`None`: nothing), and
    /// whether the session ends after it.
    fn outbound(&mut self, frame: wit::WsFrame) -> (Option<wit::WsFrame>, bool) {
        (Some(frame), false)
    }
    /// Frames for the consumer once a piece of work settled.
    fn settled(&mut self, _piece: &Settled) -> Vec<wit::WsFrame> {
        Vec::new()
    }
}

/// The vendor's own protocol, untouched.
pub struct Native;
impl Dialect for Native {}

/// A piece of work that settled.
pub struct Settled<'a> {
    pub model: &'a str,
    /// The units billed: the vendor's, or those reserved.
    pub usage: &'a wit::Usage,
    /// `None`: free.
    pub charge: Option<crate::billing::Charge>,
}

/// A piece of work in flight: its call's end, its model and the units it reserved.
struct Piece {
    end: CallEnd,
    model: String,
    reserved: wit::Usage,
}

/// A session whose upstream is open, waiting for the consumer's socket.
pub struct Session {
    r: CallRequest,
    pc: PluginCall,
    upstream: UpstreamSocket,
    /// Headers for the consumer's upgrade answer (a sub-protocol).
    pub reply_headers: Vec<wit::Header>,
    billing: Option<Arc<crate::billing::Billing>>,
    log: crate::store::CallLog,
    /// Where the session's speech is kept (the channel's `archive_speech`).
    speech_dir: Option<std::path::PathBuf>,
    db: crate::store::Db,
    /// The fingerprint of the upstream key the session runs on ("" without a key): the
    /// consumer's objects a piece uses must have been made on it.
    key_fingerprint: String,
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
        // A session holds a plugin slot and an upstream connection: only for a consumer who
        // can pay for some of its work.
        if let Some(b) = &self.billing {
            match b.wallets.reserve(&r.consumer.accounts(), 1) {
                Ok(hold) => b.wallets.release(hold),
                Err(_) => {
                    return Err(CallError::new(
                        402,
                        "insufficient_quota",
                        "insufficient_balance",
                        "This account's balance cannot pay for any speech; top it up first.",
                    ))
                }
            }
        }
        let (channel, plugin) = (Arc::clone(&r.channel), Arc::clone(&r.plugin));
        let mut tried = Vec::new();
        let attempts = channel.key_count().clamp(1, MAX_ATTEMPTS);
        loop {
            let picked = channel.pick_key(&tried);
            if picked.is_none() && channel.key_count() > 0 {
                return Err(call::keys_unavailable(&channel));
            }
            let key = picked.as_ref().map(|k| &k.secret);
            let result = self.open_on(&r, &plugin, &channel, key, tried.len() as u32 + 1).await;
            let Some(picked) = picked else {
                return result.map(|(pc, socket, headers)| self.session(r, pc, socket, headers, String::new()));
            };
            let outcome = match &result {
                Ok(_) => KeyOutcome::Success,
                Err(e) => call::key_outcome(&Err(e.clone())),
            };
            picked.report(outcome);
            tried.push(picked.id);
            let retry = matches!(outcome, KeyOutcome::Refused | KeyOutcome::RateLimited(_) | KeyOutcome::Fault);
            match result {
                Ok((pc, socket, headers)) => {
                    return Ok(self.session(r, pc, socket, headers, picked.secret.fingerprint()))
                }
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
        key_fingerprint: String,
    ) -> Session {
        let speech_dir = r.channel.archive_speech.then(|| self.archive.speech_dir.clone());
        let (billing, log, db) = (self.billing.clone(), self.call_log.clone(), self.db.clone());
        Session { r, pc, upstream, reply_headers, billing, log, speech_dir, db, key_fingerprint }
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

impl Session {
    /// Opens piece `seq` of the session: the model checked, the consumer's objects it uses
    /// found on the session's key, its units and their one-time fees reserved. (`&mut`: held
    /// across awaits, a shared borrow would need the session to be `Sync`.)
    async fn reserve(&mut self, piece: &wit::SocketReserve, seq: u32, open: usize) -> Result<CallEnd, CallError> {
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
        let mut used = crate::affinity::Uses::default();
        if !piece.uses.is_empty() {
            used = crate::affinity::uses(&self.db, r.plugin.name(), r.consumer.user_id, &piece.uses).await?;
            if used.made_on.as_ref().is_some_and(|(f, _)| *f != self.key_fingerprint) {
                return Err(CallError::bad_request(
                    "What this piece uses was made on another upstream account than this session's; use it over HTTP, or in a new session.",
                ));
            }
        }
        let mut rec = call::draft_record(r);
        rec.request_id = format!("{}-{seq}", r.request_id);
        rec.model = Some(piece.model.clone());
        let mut end = CallEnd::new(self.billing.clone(), self.log.clone(), rec, Instant::now());
        if let Some(b) = &self.billing {
            if self.log.charges_full() {
                let e = call::charges_backlogged();
                end.refuse(&e);
                return Err(e);
            }
            end.fees = crate::affinity::take_fees(&self.db, b, r, &used.due).await?;
            let (accounts, group) = (r.consumer.accounts(), &r.consumer.group);
            let quoted = crate::end::reported(&piece.usage);
            let priced = Priced::Model(&piece.model);
            let fees = end.fees.as_ref().map_or(0, |f| f.micros);
            match b.start_with_fees(&accounts, group, priced, &r.op, Estimate::Quote(&quoted), fees) {
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
}

pub(super) fn refusal_kind(e: &CallError) -> wit::ErrorKind {
    match e.status {
        402 => wit::ErrorKind::InsufficientBalance,
        403 => wit::ErrorKind::Forbidden,
        404 => wit::ErrorKind::NotFound,
        429 => wit::ErrorKind::RateLimited,
        503 if e.code == "overloaded" => wit::ErrorKind::RateLimited,
        _ => wit::ErrorKind::BadRequest,
    }
}

/// A message as the plugin sees it; `None` for control frames the library answers itself. A
/// side gone without a close frame is a close 1006.
pub(super) fn to_frame(
    m: Option<Result<Message, tokio_tungstenite::tungstenite::Error>>,
    from_client: bool,
) -> Option<wit::WsFrame> {
    let gone = || wit::WsFrame::Close((1006, String::new()));
    let message = match m {
        Some(Ok(m)) => m,
        Some(Err(e)) => {
            let who = if from_client { "consumer" } else { "upstream" };
            tracing::debug!(error = %e, who, "socket read failed");
            return Some(gone());
        }
        None => return Some(gone()),
    };
    METRICS.socket_frame(from_client, message.len() as u64);
    Some(match message {
        Message::Text(t) => wit::WsFrame::Text(t.to_string()),
        Message::Binary(b) => wit::WsFrame::Binary(b.to_vec()),
        Message::Close(c) => {
            wit::WsFrame::Close(c.map_or((1005, String::new()), |c| (c.code.into(), c.reason.to_string())))
        }
        Message::Ping(_) | Message::Pong(_) | Message::Frame(_) => return None,
    })
}
