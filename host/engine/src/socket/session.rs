//! One socket session's loop: messages from either side go through the plugin
//! (`exchange.frame`), its actions are carried out in order, and its pieces of work are
//! reserved and settled.
//!
//! Invariants:
//! - every write to either side is bounded in time (`SocketLimits::write_timeout`): a side
//!   that stops reading is gone, and the plugin hears it as a close 1006, like a side that
//!   failed or vanished;
//! - the idle timeout counts the consumer's data messages only (pings do not hold a session);
//! - a consumer gone with pieces in flight does not end them unpaid: the upstream is read on
//!   (at most `DRAIN`) so that the plugin settles them by what the vendor counted;
//! - shutdown reaches every session, also one that started after the signal.

use super::{Dialect, Piece, Session, SocketLimits};
use crate::end::PieceEnd;
use crate::exchange::plugin_failure;
use crate::plugin::wit;
use crate::telemetry::METRICS;
use futures_util::{SinkExt, StreamExt};
use std::collections::VecDeque;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::time::{sleep_until, timeout, Instant};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tokio_tungstenite::WebSocketStream;

/// How long the upstream is read after the consumer left with pieces in flight.
const DRAIN: Duration = Duration::from_secs(10);

/// The state of both sides.
struct Sides {
    client_open: bool,
    upstream_open: bool,
    /// Inputs the host made (a side found gone while writing), handed to the plugin first.
    pending: VecDeque<wit::SocketInput>,
}

impl Sides {
    fn client_gone(&mut self) {
        if self.client_open {
            self.client_open = false;
            self.pending.push_back(wit::SocketInput::Client(gone()));
        }
    }
    fn upstream_gone(&mut self) {
        if self.upstream_open {
            self.upstream_open = false;
            self.pending.push_back(wit::SocketInput::Upstream(gone()));
        }
    }
}

fn gone() -> wit::WsFrame {
    wit::WsFrame::Close((1006, String::new()))
}

impl Session {
    /// Runs the session until the plugin closes it, both sides are gone, or the gateway shuts
    /// down; `dialect` is the consumer's protocol over the plugin's frames.
    pub async fn run<S>(
        mut self,
        mut client: WebSocketStream<S>,
        limits: SocketLimits,
        mut shutdown: tokio::sync::watch::Receiver<bool>,
        mut dialect: Box<dyn Dialect>,
    ) where
        S: AsyncRead + AsyncWrite + Unpin + Send,
    {
        let _open = METRICS.socket_opened();
        let within = limits.write_timeout;
        let mut pieces: VecDeque<Piece> = VecDeque::new();
        let mut seq = 0u32;
        let mut sides = Sides { client_open: true, upstream_open: true, pending: VecDeque::new() };
        let mut idle_until = Instant::now() + limits.idle_timeout;
        let mut drain_until: Option<Instant> = None;
        let mut shutting_down = false;
        // 1000: the plugin or both sides ended it; 1011: the gateway failed.
        let mut close_code = CloseCode::Normal;
        'session: loop {
            if !sides.client_open && drain_until.is_none() {
                drain_until = Some(Instant::now() + DRAIN);
            }
            let input = match sides.pending.pop_front() {
                Some(input) => input,
                None if !sides.client_open && !sides.upstream_open => break,
                None => tokio::select! {
                    _ = async { let _ = shutdown.wait_for(|stop| *stop).await; }, if !shutting_down => {
                        shutting_down = true;
                        if sides.client_open {
                            let _ = timeout(within, client.send(close(CloseCode::Away, "the gateway is shutting down"))).await;
                            sides.client_open = false;
                        }
                        wit::SocketInput::Client(wit::WsFrame::Close((1001, String::new())))
                    }
                    _ = sleep_until(idle_until), if sides.client_open => {
                        let _ = timeout(within, client.send(close(CloseCode::Normal, "idle timeout"))).await;
                        sides.client_open = false;
                        wit::SocketInput::Client(wit::WsFrame::Close((1000, "idle timeout".into())))
                    }
                    _ = sleep_until(drain_until.unwrap_or_else(Instant::now)), if drain_until.is_some() && sides.upstream_open => {
                        sides.upstream_open = false;
                        wit::SocketInput::Upstream(gone())
                    }
                    m = client.next(), if sides.client_open => match m {
                        Some(Err(WsError::Capacity(e))) => {
                            tracing::debug!(error = %e, "a consumer sent a message over the limit");
                            let _ = timeout(within, client.send(close(CloseCode::Size, "message too big"))).await;
                            sides.client_open = false;
                            wit::SocketInput::Client(wit::WsFrame::Close((1009, String::new())))
                        }
                        m => match super::to_frame(m, true) {
                            None => {
                                // A ping: its pong is queued; it does not count as activity.
                                if timeout(within, client.flush()).await.map_or(true, |r| r.is_err()) {
                                    sides.client_gone();
                                }
                                continue;
                            }
                            Some(frame @ wit::WsFrame::Close(_)) => {
                                sides.client_open = false;
                                // The close is answered (tungstenite queued the reply).
                                let _ = timeout(within, client.flush()).await;
                                wit::SocketInput::Client(frame)
                            }
                            Some(frame) => {
                                idle_until = Instant::now() + limits.idle_timeout;
                                match dialect.inbound(frame) {
                                    Ok(frame) => wit::SocketInput::Client(frame),
                                    Err(replies) => {
                                        for reply in replies {
                                            if !deliver(&mut client, reply, within).await {
                                                sides.client_gone();
                                            }
                                        }
                                        continue;
                                    }
                                }
                            }
                        },
                    },
                    m = self.upstream.next(), if sides.upstream_open => match super::to_frame(m, false) {
                        None => {
                            if timeout(within, self.upstream.flush()).await.map_or(true, |r| r.is_err()) {
                                sides.upstream_gone();
                            }
                            continue;
                        }
                        Some(frame) => {
                            if matches!(frame, wit::WsFrame::Close(_)) {
                                sides.upstream_open = false;
                                let _ = timeout(within, self.upstream.flush()).await;
                            }
                            wit::SocketInput::Upstream(frame)
                        }
                    },
                },
            };
            let mut actions: VecDeque<wit::SocketAction> = match self.pc.frame(input).await {
                Ok(Ok(actions)) => actions.into(),
                failed => {
                    match failed {
                        Err(e) => {
                            plugin_failure(&self.r.plugin, "frame()", e);
                        }
                        Ok(Err(e)) => {
                            tracing::warn!(request_id = %self.r.request_id, error = %e.message, "the plugin failed the socket session")
                        }
                        Ok(Ok(_)) => unreachable!("matched above"),
                    }
                    close_code = CloseCode::Error;
                    break;
                }
            };
            while let Some(action) = actions.pop_front() {
                match action {
                    wit::SocketAction::ToClient(frame) => {
                        let (frame, ends) = dialect.outbound(frame);
                        if let Some(frame) = frame.filter(|_| sides.client_open) {
                            if !deliver(&mut client, frame, within).await {
                                sides.client_gone();
                            }
                        }
                        if ends {
                            break 'session;
                        }
                    }
                    wit::SocketAction::ToUpstream(frame) => {
                        if sides.upstream_open && !deliver(&mut self.upstream, frame, within).await {
                            sides.upstream_gone();
                        }
                    }
                    wit::SocketAction::Reserve(piece) => {
                        seq += 1;
                        match self.reserve(&piece, seq, pieces.len()).await {
                            Ok(end) => pieces.push_back(Piece { end, model: piece.model, reserved: piece.usage }),
                            Err(e) => {
                                // What followed asked for the refused piece: dropped; the plugin answers.
                                let refused = wit::AdapterError {
                                    kind: super::refusal_kind(&e),
                                    message: e.message.clone(),
                                    code: Some(e.code.clone()),
                                    retry_after_ms: None,
                                };
                                match self.pc.frame(wit::SocketInput::Refused(refused)).await {
                                    // A reserve among the answer would be refused too: dropped.
                                    Ok(Ok(answer)) => {
                                        actions = answer
                                            .into_iter()
                                            .filter(|a| !matches!(a, wit::SocketAction::Reserve(_)))
                                            .collect();
                                    }
                                    _ => {
                                        close_code = CloseCode::Error;
                                        break 'session;
                                    }
                                }
                            }
                        }
                    }
                    wit::SocketAction::Bill(usage) => {
                        self.settle(&mut pieces, &mut *dialect, &mut client, &mut sides, Some(&usage), within).await
                    }
                    wit::SocketAction::BillReserved => {
                        self.settle(&mut pieces, &mut *dialect, &mut client, &mut sides, None, within).await
                    }
                    wit::SocketAction::Release => {
                        if let Some(p) = pieces.pop_front() {
                            p.end.settle_piece(PieceEnd::Free);
                            let frames =
                                dialect.settled(&super::Settled { model: &p.model, usage: &p.reserved, charge: None });
                            send_all(&mut client, &mut sides, frames, within).await;
                        }
                    }
                    wit::SocketAction::Keep(speech) => {
                        if let Some(dir) = &self.speech_dir {
                            let c = &self.r.consumer;
                            let speech = crate::archive::speech::Speech {
                                user_id: c.user_id,
                                key_name: c.name.clone(),
                                audio: speech.audio.into(),
                                format: speech.format,
                                text: speech.text,
                            };
                            crate::archive::speech::keep(dir.clone(), speech);
                        }
                    }
                    wit::SocketAction::Close => break 'session,
                }
            }
        }
        if close_code == CloseCode::Error {
            // The plugin failed: the vendor may have worked on every piece in flight.
            for p in pieces.drain(..) {
                p.end.settle_piece(PieceEnd::Reserved(&p.reserved));
            }
        }
        if sides.client_open {
            let _ = timeout(within, client.send(close(close_code, ""))).await;
        }
        if sides.upstream_open {
            let _ = timeout(within, self.upstream.send(close(CloseCode::Normal, ""))).await;
        }
        // Pieces the plugin left open are free: `CallEnd`'s drop records them and returns
        // their holds.
        drop(pieces);
    }

    /// Settles the oldest piece by the vendor's units (`Some`) or its reservation (`None`),
    /// and tells the consumer what the dialect says about it.
    async fn settle<S>(
        &mut self,
        pieces: &mut VecDeque<Piece>,
        dialect: &mut dyn Dialect,
        client: &mut WebSocketStream<S>,
        sides: &mut Sides,
        usage: Option<&wit::Usage>,
        within: Duration,
    ) where
        S: AsyncRead + AsyncWrite + Unpin + Send,
    {
        let Some(p) = pieces.pop_front() else {
            tracing::warn!(request_id = %self.r.request_id, "the plugin settled a piece it never reserved");
            return;
        };
        let (how, billed) = match usage {
            Some(u) => (PieceEnd::Reported(u), u),
            None => (PieceEnd::Reserved(&p.reserved), &p.reserved),
        };
        let charge = p.end.settle_piece(how);
        let frames = dialect.settled(&super::Settled { model: &p.model, usage: billed, charge });
        send_all(client, sides, frames, within).await;
    }
}

async fn send_all<S>(client: &mut WebSocketStream<S>, sides: &mut Sides, frames: Vec<wit::WsFrame>, within: Duration)
where
    S: AsyncRead + AsyncWrite + Unpin + Send,
{
    for frame in frames {
        if sides.client_open && !deliver(client, frame, within).await {
            sides.client_gone();
        }
    }
}

/// Sends one frame within `within`; false when the side is gone or stopped reading.
async fn deliver<S>(ws: &mut WebSocketStream<S>, frame: wit::WsFrame, within: Duration) -> bool
where
    S: AsyncRead + AsyncWrite + Unpin + Send,
{
    matches!(timeout(within, ws.send(to_message(frame))).await, Ok(Ok(())))
}

/// A close frame; a reason is cut to what a close frame holds (123 bytes, on a character).
pub fn close(code: CloseCode, reason: &str) -> Message {
    let mut end = reason.len().min(123);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    Message::Close(Some(CloseFrame { code, reason: reason[..end].to_string().into() }))
}

fn to_message(frame: wit::WsFrame) -> Message {
    match frame {
        wit::WsFrame::Text(t) => Message::text(t),
        wit::WsFrame::Binary(b) => Message::binary(b),
        // Codes a peer may not send (1005, 1006, 1015, out of range) become 1000 or 1011.
        wit::WsFrame::Close((code, reason)) => {
            let code = match CloseCode::from(code) {
                CloseCode::Status | CloseCode::Abnormal | CloseCode::Tls => CloseCode::Normal,
                c if c.is_allowed() => c,
                _ => CloseCode::Error,
            };
            close(code, &reason)
        }
    }
}
