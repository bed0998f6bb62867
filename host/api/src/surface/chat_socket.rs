//! Chat over WebSocket: each chat message the consumer sends is one chat call (the same
//! pipeline, billing and log as `POST /v1/chat/completions`, streamed), and its deltas go back
//! as frames while the vendor writes them. Two protocols:
//! - the many-vendor backend's (`compat-protocols.md` §5.1), on the paths the operator maps to
//!   a model (`chat_socket_paths`): `{"code","msg","data","event"}` frames;
//!   `{"type":"chat","data":{"prompt"|"query","chat_id"}}` → `conversation.chat.created`, one
//!   `conversation.message.delta` per piece, `conversation.chat.completed`; `{"type":"ping"}` →
//!   `connection.heartbeat`; errors as `system.error` with the call's status (402: balance too
//!   low) and the socket stays open; 300 s without a consumer frame → `connection.timeout`
//!   (408) and the close;
//! - the gateway's own, `GET /v1/chat/ws`: each message is an OpenAI chat request, answered
//!   with the chat completion chunks (one frame each), then a `[DONE]` frame; errors in
//!   OpenAI's error shape, the socket staying open.
//!
//! Invariants: the consumer is the key presented at the upgrade (a header, or a socket token
//! from a browser: `socket::consumer`), looked up again before each chat (a key revoked meanwhile ends the socket); `user_uuid` is recorded, never trusted; a
//! chat's `chat_id` is recorded on its call, and both are at most 128 characters without
//! control characters; one chat runs at a time per socket, none after the shutdown signal; the
//! idle timeout counts the consumer's text messages only;
//! every write is bounded in time (a consumer that stops reading ends the session, and its
//! chat is billed for what was delivered, as a stream is); the gateway's and the key's socket
//! caps apply (`socket::accept`).

use super::socket::{accept, key_place, send, Client};
use super::{reference, with_request_id, ConsumerRequest};
use crate::engine::socket::close;
use crate::engine::Answer;
use crate::exchange::CallError;
use crate::server::error::ToResponse;
use crate::server::Api;
use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http::Request;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::time::timeout;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::Message;

/// The gateway's own chat socket.
pub const PATH: &str = "/v1/chat/ws";

/// The backend protocol closes a socket silent this long.
const BACKEND_IDLE: Duration = Duration::from_secs(300);

/// Which protocol a socket speaks.
#[derive(Clone)]
pub enum Protocol {
    /// The backend's, bound to one model.
    Backend { model: String },
    /// OpenAI chat requests in, chunks out.
    OpenAi,
}

pub async fn upgrade(state: &Arc<Api>, mut req: Request<Incoming>, protocol: Protocol) -> Response {
    let request_id = state.next_request_id();
    let opened = (|| {
        let (accept, place) = accept(state, &req)?;
        let (consumer, auth) = super::socket::consumer(state, &req)?;
        let slot = key_place(state, consumer.key_id)?;
        Ok::<_, CallError>((accept, place, auth, slot))
    })();
    let query = req.uri().query().unwrap_or_default().to_string();
    let param = |name: &str| {
        query
            .split('&')
            .find_map(|p| p.strip_prefix(name)?.strip_prefix('='))
            .map(|v| crate::server::url::decode(v, true))
    };
    let references =
        reference(param("client_id").as_deref()).and_then(|c| Ok((c, reference(param("user_uuid").as_deref())?)));
    let opened = opened.and_then(|o| Ok((o, references?)));
    // The key is looked up again before each chat: a key revoked meanwhile stops chatting.
    let ((accept, place, auth, slot), (client_id, user_uuid)) = match opened {
        Ok(o) => o,
        Err(e) => return with_request_id(e.to_response(), &request_id),
    };
    let client_id = client_id.unwrap_or_else(|| request_id.clone());
    let session = Session { state: Arc::clone(state), auth, protocol, client_id, user_uuid };
    super::socket::serve(state, &mut req, &accept, (slot, place), &request_id, |client| session.run(client))
}

use crate::server::body::Response;

struct Session {
    state: Arc<Api>,
    /// The key presented at the upgrade.
    auth: super::socket::Auth,
    protocol: Protocol,
    client_id: String,
    user_uuid: Option<String>,
}

/// A backend frame.
fn backend(code: u16, msg: &str, event: &str, data: Value) -> String {
    json!({ "code": code, "msg": msg, "data": data, "event": event }).to_string()
}

impl Session {
    async fn run(self, mut client: Client) {
        let _open = tollgate_base::metrics::METRICS.socket_opened();
        let limits = self.state.settings.socket_limits;
        let within = limits.write_timeout;
        let idle = match self.protocol {
            Protocol::Backend { .. } => BACKEND_IDLE,
            Protocol::OpenAi => limits.idle_timeout,
        };
        let mut shutdown = self.state.shutdown.subscribe();
        if let Protocol::Backend { .. } = self.protocol {
            let hello =
                backend(200, "success", "system.connected", json!({ "type": "connected", "id": self.client_id }));
            if !send(&mut client, hello, within).await {
                return;
            }
        }
        let mut idle_until = tokio::time::Instant::now() + idle;
        loop {
            let message = tokio::select! {
                biased;
                _ = async { let _ = shutdown.wait_for(|stop| *stop).await; } => {
                    let _ = timeout(within, client.send(close(CloseCode::Away, "the gateway is shutting down"))).await;
                    return;
                }
                m = tokio::time::timeout_at(idle_until, client.next()) => m,
            };
            let text = match message {
                Err(_) => {
                    if let Protocol::Backend { .. } = self.protocol {
                        let frame = backend(408, "timeout", "connection.timeout", json!({ "type": "timeout" }));
                        send(&mut client, frame, within).await;
                    }
                    let _ = timeout(within, client.send(close(CloseCode::Normal, "idle timeout"))).await;
                    return;
                }
                Ok(Some(Ok(Message::Text(t)))) => {
                    tollgate_base::metrics::METRICS.socket_frame(true, t.len() as u64);
                    idle_until = tokio::time::Instant::now() + idle;
                    t.to_string()
                }
                Ok(Some(Ok(Message::Close(_)))) => {
                    let _ = timeout(within, client.flush()).await;
                    return;
                }
                Ok(Some(Ok(Message::Binary(_)))) => {
                    if !self.refuse(&mut client, "frames are JSON text").await {
                        return;
                    }
                    continue;
                }
                Ok(Some(Ok(_))) => {
                    if timeout(within, client.flush()).await.map_or(true, |r| r.is_err()) {
                        return;
                    }
                    continue;
                }
                Ok(Some(Err(tokio_tungstenite::tungstenite::Error::Capacity(_)))) => {
                    let _ = timeout(within, client.send(close(CloseCode::Size, "message too big"))).await;
                    return;
                }
                Ok(Some(Err(_))) | Ok(None) => return,
            };
            if *shutdown.borrow() {
                continue;
            }
            let alive = match &self.protocol {
                Protocol::Backend { model } => self.backend_message(&mut client, model, &text).await,
                Protocol::OpenAi => self.openai_message(&mut client, &text).await,
            };
            if !alive {
                return;
            }
        }
    }

    /// A frame the consumer's message is refused with (400); false when the consumer is gone.
    async fn refuse(&self, client: &mut Client, message: &str) -> bool {
        self.error(client, &CallError::new(400, "invalid_request_error", "invalid_message", message)).await
    }

    /// An error frame (the socket stays open); false when the consumer is gone.
    async fn error(&self, client: &mut Client, e: &CallError) -> bool {
        let within = self.state.settings.socket_limits.write_timeout;
        let frame = match self.protocol {
            Protocol::Backend { .. } => {
                // The protocol's codes: 402 for a balance too low, else 400 or 500.
                let code = match e.status {
                    402 => 402,
                    400..=499 => 400,
                    _ => 500,
                };
                let data = json!({ "type": "error", "message": e.message, "code": e.code, "status": e.status });
                backend(code, "error", "system.error", data)
            }
            Protocol::OpenAi => e.to_json().to_string(),
        };
        send(client, frame, within).await
    }

    async fn backend_message(&self, client: &mut Client, model: &str, text: &str) -> bool {
        let within = self.state.settings.socket_limits.write_timeout;
        let Ok(v) = serde_json::from_str::<Value>(text) else {
            return self.refuse(client, "a frame is a JSON object").await;
        };
        match v["type"].as_str() {
            Some("ping") => {
                let frame = backend(200, "heartbeat", "connection.heartbeat", json!({ "type": "pong" }));
                send(client, frame, within).await
            }
            Some("chat") => {
                let data = &v["data"];
                let prompt = data["prompt"].as_str().or_else(|| data["query"].as_str()).unwrap_or_default();
                if prompt.trim().is_empty() {
                    return self.refuse(client, "a chat needs data.prompt (or data.query)").await;
                }
                let chat_id = match reference(data["chat_id"].as_str()) {
                    Ok(c) => c,
                    Err(e) => return self.error(client, &e).await,
                };
                let body = json!({
                    "model": model,
                    "messages": [{ "role": "user", "content": prompt }],
                    "stream": true,
                    "stream_options": { "include_usage": true },
                });
                self.chat(client, body, chat_id).await
            }
            _ => self.refuse(client, "the type must be chat or ping").await,
        }
    }

    async fn openai_message(&self, client: &mut Client, text: &str) -> bool {
        let Ok(Value::Object(mut body)) = serde_json::from_str::<Value>(text) else {
            return self.refuse(client, "each message is a chat completion request (a JSON object)").await;
        };
        // Always streamed: the chunks are the frames.
        body.insert("stream".into(), Value::Bool(true));
        body.insert("stream_options".into(), json!({ "include_usage": true }));
        let chat_id = match reference(body.get("metadata").and_then(|m| m["chat_id"].as_str())) {
            Ok(c) => c,
            Err(e) => return self.error(client, &e).await,
        };
        self.chat(client, Value::Object(body), chat_id).await
    }

    /// Runs one chat call and sends its pieces; false when the consumer is gone (or its key).
    async fn chat(&self, client: &mut Client, body: Value, chat_id: Option<String>) -> bool {
        let within = self.state.settings.socket_limits.write_timeout;
        let consumer = match self.auth.consumer(&self.state) {
            Ok(c) => c,
            Err(e) => {
                self.error(client, &e).await;
                let _ = timeout(within, client.send(close(CloseCode::Policy, "the key is no longer valid"))).await;
                return false;
            }
        };
        let backend_chat = matches!(self.protocol, Protocol::Backend { .. });
        let chat_data = |kind: &str| json!({ "type": kind, "chat_id": chat_id });
        let call = self.call(consumer, body, chat_id.clone());
        let call = match call {
            Ok(c) => c,
            Err(e) => return self.error(client, &e).await,
        };
        let answer = self.state.engine.call(call).await;
        let stream = match answer {
            Answer::Stream { body, .. } => body,
            Answer::Failed(e) => return self.error(client, &e).await,
            Answer::Full { status, body, .. } if !(200..300).contains(&status) => {
                let message = serde_json::from_slice::<Value>(&body)
                    .ok()
                    .and_then(|v| v["error"]["message"].as_str().map(str::to_string))
                    .unwrap_or_else(|| "the chat failed".into());
                return self.error(client, &CallError::new(status, "api_error", "upstream_error", message)).await;
            }
            // Answered whole (and billed so): delivered as one piece.
            Answer::Full { body, .. } => {
                let completion: Value = serde_json::from_slice(&body).unwrap_or_default();
                return self.whole(client, completion, chat_id).await;
            }
            Answer::Relay(_) => {
                let e = CallError::new(502, "api_error", "not_streamed", "the vendor did not stream this chat");
                return self.error(client, &e).await;
            }
        };
        if backend_chat {
            let created = backend(200, "success", "conversation.chat.created", chat_data("stream_start"));
            if !send(client, created, within).await {
                return false;
            }
        }
        let mut stream = stream;
        let mut parser = tollgate_base::sse::Parser::new();
        let mut events = Vec::new();
        let mut failed = None;
        while let Some(frame) = stream.frame().await {
            let Ok(frame) = frame else {
                failed = Some("the chat stream was cut".to_string());
                break;
            };
            let Ok(data) = frame.into_data() else { continue };
            parser.feed(&data, &mut events);
            if parser.overflowed() {
                failed = Some("the chat stream sent an event too large to read".to_string());
                break;
            }
            for event in events.drain(..) {
                if event.data == "[DONE]" {
                    continue;
                }
                let Ok(chunk) = serde_json::from_str::<Value>(&event.data) else { continue };
                if let Some(message) = chunk["error"]["message"].as_str() {
                    failed = Some(message.to_string());
                    continue;
                }
                let frame = if backend_chat {
                    let Some(content) = chunk.pointer("/choices/0/delta/content").and_then(Value::as_str) else {
                        continue;
                    };
                    if content.is_empty() {
                        continue;
                    }
                    let mut data = chat_data("content");
                    data["content"] = json!(content);
                    backend(200, "success", "conversation.message.delta", data)
                } else {
                    event.data
                };
                // A consumer that stopped reading: the stream ends (billed for what was delivered).
                if !send(client, frame, within).await {
                    return false;
                }
            }
        }
        match (failed, backend_chat) {
            (Some(message), _) => {
                self.error(client, &CallError::new(502, "api_error", "stream_interrupted", message)).await
            }
            (None, true) => {
                let done = backend(200, "success", "conversation.chat.completed", chat_data("completed"));
                send(client, done, within).await
            }
            (None, false) => send(client, "[DONE]".into(), within).await,
        }
    }

    /// A chat the vendor answered whole: its content as one delta (backend), or as one chunk
    /// (OpenAI), then the end.
    async fn whole(&self, client: &mut Client, completion: Value, chat_id: Option<String>) -> bool {
        let within = self.state.settings.socket_limits.write_timeout;
        let content = completion.pointer("/choices/0/message/content").and_then(Value::as_str).unwrap_or_default();
        let frames = match self.protocol {
            Protocol::Backend { .. } => {
                let data = |kind: &str| json!({ "type": kind, "chat_id": chat_id });
                let mut delta = data("content");
                delta["content"] = json!(content);
                vec![
                    backend(200, "success", "conversation.chat.created", data("stream_start")),
                    backend(200, "success", "conversation.message.delta", delta),
                    backend(200, "success", "conversation.chat.completed", data("completed")),
                ]
            }
            Protocol::OpenAi => {
                let chunk = json!({
                    "id": completion["id"], "object": "chat.completion.chunk", "created": completion["created"],
                    "model": completion["model"], "usage": completion["usage"],
                    "choices": [{ "index": 0, "delta": { "role": "assistant", "content": content },
                                  "finish_reason": completion.pointer("/choices/0/finish_reason") }],
                });
                vec![chunk.to_string(), "[DONE]".to_string()]
            }
        };
        for frame in frames {
            if !send(client, frame, within).await {
                return false;
            }
        }
        true
    }

    /// The chat call, as `POST /v1/chat/completions` with `body` would be.
    fn call(
        &self,
        consumer: crate::account::Consumer,
        body: Value,
        chat_id: Option<String>,
    ) -> Result<crate::engine::CallRequest, CallError> {
        let model = body["model"].as_str().filter(|m| !m.is_empty()).map(str::to_string).ok_or_else(|| {
            CallError::new(400, "invalid_request_error", "missing_model", "A chat request needs a 'model'.")
        })?;
        let mut headers = http::HeaderMap::new();
        headers.insert(http::header::CONTENT_TYPE, http::HeaderValue::from_static("application/json"));
        let request = ConsumerRequest {
            consumer,
            headers,
            path: "/v1/chat/completions".into(),
            query: String::new(),
            body: Bytes::from(body.to_string()),
            form: None,
            idempotency_key: None,
            callback_url: None,
            chat_id,
            user_uuid: self.user_uuid.clone(),
        };
        let request_id = self.state.next_request_id();
        super::openai::to_channel(&self.state, request, "chat", model, Instant::now(), request_id)
    }
}
