//! The MiniMax proxy's speech socket (`compat-protocols.md` §1.1), on the path the operator
//! names (`minimax_proxy_socket_path`), so that the proxy's clients only change host. The
//! session is MiniMax's own (the `minimax` plugin's `/ws/v1/t2a_v2`), in the proxy's dialect:
//! - the upgrade is answered at once and the consumer's first frame authenticates,
//!   `{"bearer_token": "<key>"}` (skipped when the upgrade carried `Authorization`); a missing or
//!   bad token gets `{"event":"error"}` and the close; success gets the gateway's own
//!   `connected_success` with the user's id (MiniMax's is not forwarded);
//! - a `task_continue` of more than 10,000 characters gets an `error` frame and goes no
//!   further; the socket stays open;
//! - after each synthesis a `usage_summary` frame says what it was charged (the real charge,
//!   from the ledger's settlement; "no charge" after a failed one);
//! - `task_finished` is forwarded, then the session closes.
//!
//! Invariants: a socket that does not authenticate within `AUTH_WITHIN` is closed; the
//! per-key session cap applies from the authentication on; everything else (reservations,
//! limits, shutdown) is the engine's session, as on the native path.

use super::socket::{accept, key_place, switching, upgraded, Client};
use super::{with_request_id, ConsumerRequest};
use crate::engine::socket::{Dialect, Settled};
use crate::exchange::CallError;
use crate::plugin::wit;
use crate::server::body::Response;
use crate::server::error::ToResponse;
use crate::server::{auth, Api};
use futures_util::{SinkExt, StreamExt};
use http::Request;
use hyper::body::Incoming;
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_tungstenite::tungstenite::Message;

/// How long a new socket may take to send its token.
const AUTH_WITHIN: Duration = Duration::from_secs(10);

/// The most characters one `task_continue` may carry here.
const MAX_TEXT_CHARS: usize = 10_000;

/// The `minimax` plugin's speech socket, which the session is.
const SOCKET_ROUTE: &str = "/ws/v1/t2a_v2";

pub async fn upgrade(state: &Arc<Api>, mut req: Request<Incoming>) -> Response {
    let request_id = state.next_request_id();
    let (accept, place) = match accept(state, &req) {
        Ok(a) => a,
        Err(e) => return with_request_id(e.to_response(), &request_id),
    };
    let header_token = auth::credential(req.headers()).value().map(str::to_string);
    let on_upgrade = hyper::upgrade::on(&mut req);
    let (parts, _) = req.into_parts();
    let state_for_session = Arc::clone(state);
    state.socket_tasks.spawn(async move {
        let limits = state_for_session.settings.socket_limits;
        let Some(client) = upgraded(on_upgrade, limits).await else { return };
        session(&state_for_session, client, header_token, parts, request_id).await;
        drop(place);
    });
    switching(&accept, &[]).unwrap_or_else(|e| e.to_response())
}

async fn session(
    state: &Arc<Api>,
    mut client: Client,
    header_token: Option<String>,
    parts: http::request::Parts,
    request_id: String,
) {
    let token = match header_token {
        Some(t) => Some(t),
        None => first_frame_token(&mut client).await,
    };
    let consumer = match token.as_deref().map(|t| state.consumer_for(t)) {
        Some(Ok(c)) => c,
        Some(Err(e)) => return refuse(client, &e.message).await,
        None => return refuse(client, "Send your key first: {\"bearer_token\": \"<key>\"}.").await,
    };
    let slot = match key_place(state, consumer.key_id) {
        Ok(s) => s,
        Err(e) => return refuse(client, &e.message).await,
    };
    let user_id = consumer.user_id;
    let call = match resolve(state, consumer, parts, request_id) {
        Ok(c) => c,
        Err(e) => return refuse(client, &e.message).await,
    };
    let opened = state.engine.open_socket(call).await;
    let session = match opened {
        Ok(s) => s,
        Err(e) => return refuse(client, &e.message).await,
    };
    let hello = json!({ "event": "connected_success", "message": "connected", "user_id": user_id.to_string() });
    if client.send(Message::text(hello.to_string())).await.is_err() {
        return;
    }
    let limits = state.settings.socket_limits;
    session.run(client, limits, state.shutdown.subscribe(), Box::new(Proxy::default())).await;
    drop(slot);
}

/// The token of a first frame `{"bearer_token": "..."}`; `None` when the socket sent
/// anything else, closed, or took too long.
async fn first_frame_token(client: &mut Client) -> Option<String> {
    let first = tokio::time::timeout(AUTH_WITHIN, client.next()).await.ok()??.ok()?;
    let Message::Text(text) = first else { return None };
    let v: Value = serde_json::from_str(&text).ok()?;
    if v.get("event").is_some() {
        return None;
    }
    v["bearer_token"].as_str().filter(|t| !t.is_empty()).map(str::to_string)
}

async fn refuse(mut client: Client, message: &str) {
    let frame = json!({ "event": "error", "message": message });
    let _ = client.send(Message::text(frame.to_string())).await;
    let _ = client.close(None).await;
}

/// The call the session makes: the `minimax` plugin's socket route, as if asked on it.
fn resolve(
    state: &Api,
    consumer: crate::account::Consumer,
    parts: http::request::Parts,
    request_id: String,
) -> Result<crate::engine::CallRequest, CallError> {
    let registry = state.engine.registry.current();
    let unavailable = || CallError::config("the minimax plugin's speech socket is not loaded on this gateway");
    let matched = registry.route("GET", SOCKET_ROUTE).ok_or_else(unavailable)?;
    let plugin = Arc::clone(matched.plugin);
    let op = matched.route.op.clone();
    let channel = state
        .engine
        .channels
        .load()
        .for_plugin(plugin.name(), None)
        .cloned()
        .ok_or_else(|| CallError::config(format!("no channel uses the plugin '{}'", plugin.name())))?;
    let request = ConsumerRequest {
        consumer,
        headers: parts.headers,
        path: SOCKET_ROUTE.to_string(),
        query: parts.uri.query().unwrap_or_default().to_string(),
        body: bytes::Bytes::new(),
        form: None,
        idempotency_key: None,
        callback_url: None,
        chat_id: None,
        user_uuid: None,
    };
    let mut call = request.into_call(plugin, channel, op, String::new(), Instant::now(), request_id);
    call.billed = false;
    Ok(call)
}

/// The proxy's dialect over MiniMax's frames.
#[derive(Default)]
struct Proxy {
    voice_id: Option<String>,
}

impl Dialect for Proxy {
    fn inbound(&mut self, frame: wit::WsFrame) -> Result<wit::WsFrame, Vec<wit::WsFrame>> {
        let wit::WsFrame::Text(text) = &frame else { return Ok(frame) };
        let Ok(v) = serde_json::from_str::<Value>(text) else { return Ok(frame) };
        match v["event"].as_str() {
            Some("task_start") => {
                self.voice_id = v.pointer("/voice_setting/voice_id").and_then(Value::as_str).map(str::to_string);
            }
            Some("task_continue") => {
                let count = v["text"].as_str().map_or(0, |t| t.chars().count());
                if count > MAX_TEXT_CHARS {
                    let message =
                        format!("text has {count} characters; one task_continue takes at most {MAX_TEXT_CHARS}");
                    return Err(vec![wit::WsFrame::Text(json!({ "event": "error", "message": message }).to_string())]);
                }
            }
            _ => {}
        }
        Ok(frame)
    }

    fn outbound(&mut self, frame: wit::WsFrame) -> (Option<wit::WsFrame>, bool) {
        let event = match &frame {
            wit::WsFrame::Text(t) => {
                serde_json::from_str::<Value>(t).ok().and_then(|v| v["event"].as_str().map(str::to_string))
            }
            _ => None,
        };
        match event.as_deref() {
            // The gateway said it already, with the user's id.
            Some("connected_success") => (None, false),
            Some("task_finished") => (Some(frame), true),
            _ => (Some(frame), false),
        }
    }

    fn settled(&mut self, piece: &Settled) -> Vec<wit::WsFrame> {
        let summary = match piece.charge {
            Some(charge) => {
                let cost = charge.micros as f64 / 1e6;
                json!({
                    "event": "usage_summary",
                    "char_count": piece.usage.characters.unwrap_or(0),
                    "tts_cost": cost,
                    "voice_cost": 0,
                    "total_cost": cost,
                    "model_name": piece.model,
                    "voice_id": self.voice_id,
                    "message": if charge.estimated { "synthesis interrupted: charged as reserved" } else { "synthesis complete" },
                })
            }
            None => json!({ "event": "usage_summary", "message": "synthesis failed: no charge" }),
        };
        vec![wit::WsFrame::Text(summary.to_string())]
    }
}
