//! The progress socket (`compat-protocols.md` §5.2), on `GET /v1/tasks/ws` and on the path the
//! operator names for the backend's apps (`progress_socket_path`): the consumer registers
//! `{"event":"register","user_uuid","model_id","chat_id"?}` and gets `{"event":"connected",…}`,
//! then the events it missed (within `progress_replay_secs`), then each of its tasks' events
//! as they happen: `{"event":"video_generation"|"image_generation"|"music_generation"|
//! "speech_generation"|"task_update","user_uuid","model_id","chat_id","timestamp","message":
//! <the task>,"status":"run"|"stop","total_tokens"?}` (`stop`: the task ended, with what it
//! was charged, in the balance's unit). `{"event":"ping"}` is answered `{"event":"pong"}`;
//! errors are `{"event":"error","code":"MISSING_PARAMS"|"INVALID_JSON"|"INVALID_PARAMS"|
//! "UNKNOWN_EVENT"|"TOO_MANY_REGISTRATIONS"|"UNAUTHORIZED","message"}` and the socket stays
//! open (not after `UNAUTHORIZED`). Each event frame carries its `event_id`.
//!
//! Invariants: the consumer is the key presented at the upgrade (`socket::consumer`), looked
//! up again at each registration and every `PING_EVERY` (a revoked key ends the socket; so
//! does a peer silent for two pings); at most one registration a second per socket; a
//! socket gets only its own user's tasks (`engine::tasks::feed`), whichever node polled
//! them; `user_uuid` and `chat_id` select among them, never an identity; one registration per
//! socket (a new one replaces its own), and a newer registration of the same user, model,
//! chat and app user on the same node ends this one (1000, "replaced"); a socket that does not read
//! its events is ended, and they are replayed to its next registration; the gateway's and the
//! key's socket caps apply (`socket::accept`).

use super::socket::{accept, key_place, send, Client};
use super::{reference, with_request_id};
use crate::engine::socket::close;
use crate::engine::tasks::feed::{Delivery, Interest, Subscription};
use crate::exchange::CallError;
use crate::server::body::Response;
use crate::server::error::ToResponse;
use crate::server::Api;
use crate::store::tasks::events::Event;
use futures_util::{SinkExt, StreamExt};
use http::Request;
use hyper::body::Incoming;
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::Duration;
use tokio::time::timeout;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::Message;
use tollgate_base::metrics::METRICS;

/// The gateway's own progress socket.
pub const PATH: &str = "/v1/tasks/ws";

/// A registered socket waits for events as long as it likes; a ping this often finds a peer
/// that is gone (its write times out) and rechecks the key.
const PING_EVERY: Duration = Duration::from_secs(30);
/// The least time between two registrations of one socket.
const REGISTER_EVERY: Duration = Duration::from_secs(1);

pub async fn upgrade(state: &Arc<Api>, mut req: Request<Incoming>) -> Response {
    let request_id = state.next_request_id();
    let opened = (|| {
        let (accept, place) = accept(state, &req)?;
        let (consumer, auth) = super::socket::consumer(state, &req)?;
        let slot = key_place(state, consumer.key_id)?;
        Ok::<_, CallError>((accept, place, consumer.user_id, auth, slot))
    })();
    let (accept, place, user_id, auth, slot) = match opened {
        Ok(o) => o,
        Err(e) => return with_request_id(e.to_response(), &request_id),
    };
    let session = Session { state: Arc::clone(state), auth, user_id, registered: None, last_register: None };
    super::socket::serve(state, &mut req, &accept, (slot, place), &request_id, |client| session.run(client))
}

struct Session {
    state: Arc<Api>,
    /// The key presented at the upgrade.
    auth: super::socket::Auth,
    user_id: i64,
    registered: Option<Subscription>,
    last_register: Option<tokio::time::Instant>,
}

/// How a message from the consumer leaves the session.
enum Next {
    Go,
    /// The session ends; these events were claimed for it and not sent.
    End(Vec<i64>),
}

impl Session {
    /// Serves the socket; then the events claimed for it and never sent are given back (the
    /// next registration gets them).
    async fn run(mut self, client: Client) {
        let _open = tollgate_base::metrics::METRICS.socket_opened();
        let mut unsent = self.serve(client).await;
        unsent.extend(self.unregister());
        self.state.engine.progress.give_back(&unsent).await;
    }

    /// Ends the registration; the events queued for it and not sent.
    fn unregister(&mut self) -> Vec<i64> {
        let mut unsent = Vec::new();
        if let Some(mut subscription) = self.registered.take() {
            subscription.events.close();
            while let Ok(delivery) = subscription.events.try_recv() {
                if let Delivery::Event(e) = delivery {
                    unsent.push(e.event_id);
                }
            }
        }
        unsent
    }

    async fn serve(&mut self, mut client: Client) -> Vec<i64> {
        let limits = self.state.settings.socket_limits;
        let within = limits.write_timeout;
        let mut shutdown = self.state.shutdown.subscribe();
        // Until it registers, a socket is idle by the usual rule; then it waits for events.
        let mut idle_until = tokio::time::Instant::now() + limits.idle_timeout;
        // A peer that answers neither pings nor anything else for two rounds is gone.
        let mut last_heard = tokio::time::Instant::now();
        let mut ping = tokio::time::interval_at(tokio::time::Instant::now() + PING_EVERY, PING_EVERY);
        ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let registered = self.registered.is_some();
            tokio::select! {
                biased;
                _ = async { let _ = shutdown.wait_for(|stop| *stop).await; } => {
                    let _ = timeout(within, client.send(close(CloseCode::Away, "the gateway is shutting down"))).await;
                    return Vec::new();
                }
                delivery = async {
                    match self.registered.as_mut() {
                        Some(subscription) => subscription.events.recv().await,
                        None => std::future::pending().await,
                    }
                } => {
                    let reason = match delivery {
                        Some(Delivery::Event(e)) => {
                            let frame = Self::frame(&e);
                            if !send(&mut client, frame, within).await {
                                return vec![e.event_id];
                            }
                            continue;
                        }
                        Some(Delivery::Replaced) => "replaced by a newer registration",
                        None => "the socket did not keep up with its events; register again",
                    };
                    let code = if reason.starts_with("replaced") { CloseCode::Normal } else { CloseCode::Again };
                    let _ = timeout(within, client.send(close(code, reason))).await;
                    return Vec::new();
                }
                _ = ping.tick() => {
                    if self.auth.consumer(&self.state).is_err() {
                        self.unauthorized(&mut client).await;
                        return Vec::new();
                    }
                    if last_heard.elapsed() > 2 * PING_EVERY {
                        let _ = timeout(within, client.send(close(CloseCode::Away, "no answer to pings"))).await;
                        return Vec::new();
                    }
                    if !matches!(timeout(within, client.send(Message::Ping(Default::default()))).await, Ok(Ok(()))) {
                        return Vec::new();
                    }
                }
                _ = tokio::time::sleep_until(idle_until), if !registered => {
                    let _ = timeout(within, client.send(close(CloseCode::Normal, "idle timeout"))).await;
                    return Vec::new();
                }
                message = client.next() => {
                    last_heard = tokio::time::Instant::now();
                    let text = match message {
                        Some(Ok(Message::Text(t))) => {
                            METRICS.socket_frame(true, t.len() as u64);
                            t.to_string()
                        }
                        Some(Ok(Message::Close(_))) => {
                            let _ = timeout(within, client.flush()).await;
                            return Vec::new();
                        }
                        Some(Ok(Message::Binary(_))) => {
                            if !send(&mut client, error("INVALID_JSON", "frames are JSON text"), within).await {
                                return Vec::new();
                            }
                            continue;
                        }
                        Some(Ok(_)) => {
                            if timeout(within, client.flush()).await.map_or(true, |r| r.is_err()) {
                                return Vec::new();
                            }
                            continue;
                        }
                        Some(Err(tokio_tungstenite::tungstenite::Error::Capacity(_))) => {
                            let _ = timeout(within, client.send(close(CloseCode::Size, "message too big"))).await;
                            return Vec::new();
                        }
                        Some(Err(_)) | None => return Vec::new(),
                    };
                    idle_until = tokio::time::Instant::now() + limits.idle_timeout;
                    if let Next::End(unsent) = self.message(&mut client, &text).await {
                        return unsent;
                    }
                }
            }
        }
    }

    async fn message(&mut self, client: &mut Client, text: &str) -> Next {
        let within = self.state.settings.socket_limits.write_timeout;
        let Ok(Value::Object(v)) = serde_json::from_str::<Value>(text) else {
            return reply(client, error("INVALID_JSON", "a frame is a JSON object"), within).await;
        };
        match v.get("event").and_then(Value::as_str) {
            Some("ping") => {
                reply(client, json!({ "event": "pong", "code": 200, "msg": "pong" }).to_string(), within).await
            }
            Some("register") => {
                let field = |name: &str| v.get(name).and_then(Value::as_str);
                let (Some(user_uuid), Some(model_id)) = (field("user_uuid"), field("model_id")) else {
                    let e = error("MISSING_PARAMS", "register needs user_uuid and model_id (chat_id is optional)");
                    return reply(client, e, within).await;
                };
                let checked = (reference(Some(user_uuid)), reference(field("chat_id")));
                let (Ok(Some(user_uuid)), Ok(chat_id), false) =
                    (checked.0, checked.1, model_id.is_empty() || model_id.len() > 256)
                else {
                    let e = error(
                        "INVALID_PARAMS",
                        "user_uuid and chat_id are 1 to 128 characters without control characters; model_id names a model",
                    );
                    return reply(client, e, within).await;
                };
                if self.auth.consumer(&self.state).is_err() {
                    self.unauthorized(client).await;
                    return Next::End(Vec::new());
                }
                // Each registration reads the database: one a second per socket.
                let now = tokio::time::Instant::now();
                if self.last_register.is_some_and(|t| now.duration_since(t) < REGISTER_EVERY) {
                    let e = error("TOO_MANY_REGISTRATIONS", "register at most once a second");
                    return reply(client, e, within).await;
                }
                self.last_register = Some(now);
                // Its own older registration ends first (it is not "replaced": it moved); what
                // was queued for it is given back, for the new one.
                let queued = self.unregister();
                self.state.engine.progress.give_back(&queued).await;
                let interest = Interest {
                    user_id: self.user_id,
                    model: model_id.to_string(),
                    chat_id: chat_id.clone(),
                    user_uuid: Some(user_uuid.clone()),
                };
                let (subscription, missed) = self.state.engine.progress.subscribe(interest).await;
                let connected = json!({
                    "event": "connected", "code": 200, "msg": "success",
                    "data": { "user_uuid": user_uuid, "model_id": model_id, "chat_id": chat_id, "replayed": missed.len() },
                });
                self.registered = Some(subscription);
                let unsent = |from: usize| Next::End(missed[from..].iter().map(|e| e.event_id).collect());
                if !send(client, connected.to_string(), within).await {
                    return unsent(0);
                }
                for (i, e) in missed.iter().enumerate() {
                    if !send(client, Self::frame(e), within).await {
                        return unsent(i);
                    }
                }
                Next::Go
            }
            _ => reply(client, error("UNKNOWN_EVENT", "the event must be register or ping"), within).await,
        }
    }

    async fn unauthorized(&self, client: &mut Client) {
        let within = self.state.settings.socket_limits.write_timeout;
        send(client, error("UNAUTHORIZED", "the key is no longer valid"), within).await;
        let _ = timeout(within, client.send(close(CloseCode::Policy, "the key is no longer valid"))).await;
    }

    /// An event as the backend's apps read it.
    fn frame(e: &Event) -> String {
        let t = &e.task;
        let mut message = crate::engine::tasks::view(t);
        // The status and progress when it happened (a replayed event tells its own time).
        message["status"] = json!(e.event_status);
        message["progress"] = json!(e.event_progress);
        let ended = !matches!(e.event_status.as_str(), "queued" | "in_progress");
        // The task's own references, never the registration's.
        let mut frame = json!({
            "event": kind(&t.op),
            "user_uuid": t.user_uuid,
            "model_id": t.model,
            "chat_id": t.chat_id,
            "task_id": t.id,
            // Unique per event: a client can drop one it got twice.
            "event_id": e.event_id,
            "timestamp": e.event_at * 1000,
            "message": message,
            "status": if ended { "stop" } else { "run" },
        });
        if ended {
            let micros = t.charge_micros.unwrap_or(0);
            frame["total_tokens"] =
                serde_json::Number::from_f64(micros as f64 / 1e6).map_or(Value::Null, Value::Number);
        }
        frame.to_string()
    }
}

/// The backend's event name for a task of op `op`.
fn kind(op: &str) -> &'static str {
    let op = op.to_ascii_lowercase();
    if op.contains("video") {
        "video_generation"
    } else if op.contains("image") {
        "image_generation"
    } else if op.contains("music") || op.starts_with("suno.") {
        "music_generation"
    } else if op.contains("speech") || op.contains("t2a") {
        "speech_generation"
    } else {
        "task_update"
    }
}

/// Sends a frame in answer to the consumer's message.
async fn reply(client: &mut Client, frame: String, within: Duration) -> Next {
    if send(client, frame, within).await {
        Next::Go
    } else {
        Next::End(Vec::new())
    }
}

fn error(code: &str, message: &str) -> String {
    json!({ "event": "error", "code": code, "message": message }).to_string()
}

#[cfg(test)]
mod tests {
    #[test]
    fn each_vendor_op_has_the_backends_event_name() {
        for (op, kind) in [
            ("video", "video_generation"),
            ("minimax.video", "video_generation"),
            ("siliconflow.video_submit", "video_generation"),
            ("dashscope.image", "image_generation"),
            ("suno.submit", "music_generation"),
            ("minimax.t2a_async", "speech_generation"),
            ("dashscope.task", "task_update"),
        ] {
            assert_eq!(super::kind(op), kind, "{op}");
        }
    }
}
