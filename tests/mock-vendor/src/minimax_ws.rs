//! MiniMax's WebSocket speech, `GET /ws/v1/t2a_v2` (`vendor-apis.md` §1.4), for the gateway's
//! socket sessions.
//!
//! The upgrade needs `Authorization: Bearer <key>` (a `bad…` or rejected key is answered 401
//! before the upgrade). Then, as MiniMax does: `connected_success` at once; `task_start`
//! (a known `model`) answered `task_started`; each `task_continue` (only after it) answered by
//! three `task_continued` frames of hex audio, the last `is_final` with
//! `extra_info.usage_characters` (a CJK character counted 2); `task_finish` answered
//! `task_finished`, then the close. Anything else fails the task (`task_failed`, code 2013).
//! Texts steer failures: `[fail]` answers `task_failed` (code 1000) and closes; `[drop]` sends
//! one audio frame and drops the connection without a close; `[slow]` waits 700 ms first.
//! The characters each key was billed (is_final frames sent) are in `/_mock/stats`.

use super::{bearer, MockBody, State};
use futures_util::{SinkExt, StreamExt};
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::Duration;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::{Message, Role};
use tokio_tungstenite::WebSocketStream;

pub const PATH: &str = "/ws/v1/t2a_v2";

const MODELS: &[&str] = &["speech-2.8-hd", "speech-02-hd", "speech-02-turbo"];

/// MiniMax closes a session after this long without an event.
const IDLE: Duration = Duration::from_secs(120);

/// Answers the upgrade and runs the session on its own task.
pub fn upgrade(mut req: Request<Incoming>, state: Arc<State>) -> Response<MockBody> {
    let header = |name: &str| req.headers().get(name).and_then(|v| v.to_str().ok()).map(str::to_string);
    let Some(ws_key) = header("sec-websocket-key") else {
        return super::json(StatusCode::BAD_REQUEST, r#"{"error":"not a WebSocket upgrade"}"#);
    };
    let key = bearer(req.headers()).map(str::to_string);
    let authorized = key.as_deref().is_some_and(|k| !k.starts_with("bad") && !state.is_rejected(k));
    let Some(key) = key.filter(|_| authorized) else {
        let body = r#"{"base_resp":{"status_code":1004,"status_msg":"login fail: Please carry the API secret key in the 'Authorization' field of the request header"}}"#;
        return super::json(StatusCode::UNAUTHORIZED, body);
    };
    state.count(Some(&key));
    let on_upgrade = hyper::upgrade::on(&mut req);
    tokio::spawn(async move {
        let Ok(upgraded) = on_upgrade.await else { return };
        let ws = WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Server, None).await;
        session(ws, &state, &key).await;
    });
    Response::builder()
        .status(StatusCode::SWITCHING_PROTOCOLS)
        .header("upgrade", "websocket")
        .header("connection", "Upgrade")
        .header("sec-websocket-accept", derive_accept_key(ws_key.as_bytes()))
        .body(MockBody::empty())
        .expect("a valid response")
}

fn frame(event: &str, session: &str, mut extra: Value, code: u32, msg: &str) -> Message {
    extra["event"] = json!(event);
    extra["session_id"] = json!(session);
    extra["trace_id"] = json!("mock-trace");
    extra["base_resp"] = json!({ "status_code": code, "status_msg": msg });
    Message::text(extra.to_string())
}

/// MiniMax's count: a CJK ideograph 2, any other character 1.
fn characters(text: &str) -> u64 {
    text.chars().map(|c| if ('\u{4e00}'..='\u{9fff}').contains(&c) { 2 } else { 1 }).sum()
}

async fn session<S>(mut ws: WebSocketStream<S>, state: &State, key: &str)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let id = format!("ws-{}", state.trace.fetch_add(1, std::sync::atomic::Ordering::Relaxed));
    let ok = |event: &str, extra: Value| frame(event, &id, extra, 0, "success");
    let failed = |code: u32, msg: &str| frame("task_failed", &id, json!({}), code, msg);
    if ws.send(ok("connected_success", json!({}))).await.is_err() {
        return;
    }
    let mut started = false;
    loop {
        let message = match tokio::time::timeout(IDLE, ws.next()).await {
            Ok(Some(Ok(m))) => m,
            _ => return,
        };
        let text = match message {
            Message::Text(t) => t.to_string(),
            Message::Close(_) => return,
            Message::Ping(_) | Message::Pong(_) | Message::Frame(_) => continue,
            Message::Binary(_) => {
                let _ = ws.send(failed(2013, "invalid params: frames are JSON text")).await;
                return;
            }
        };
        let Ok(v) = serde_json::from_str::<Value>(&text) else {
            let _ = ws.send(failed(2013, "invalid params: not JSON")).await;
            return;
        };
        match v["event"].as_str() {
            Some("task_start") => {
                let model = v["model"].as_str().unwrap_or_default();
                if !MODELS.contains(&model) {
                    let _ = ws.send(failed(2013, &format!("invalid params: unknown model '{model}'"))).await;
                    return;
                }
                started = true;
                if ws.send(ok("task_started", json!({}))).await.is_err() {
                    return;
                }
            }
            Some("task_continue") if started => {
                let text = v["text"].as_str().unwrap_or_default();
                if text.is_empty() {
                    let _ = ws.send(failed(2013, "invalid params: text is empty")).await;
                    return;
                }
                if text.contains("[fail]") {
                    let _ = ws.send(failed(1000, "unknown error")).await;
                    let _ = ws.close(None).await;
                    return;
                }
                if text.contains("[slow]") {
                    tokio::time::sleep(Duration::from_millis(700)).await;
                }
                let audio = hex::encode(format!("ID3mock-audio:{text}"));
                let third = (audio.len() / 3) & !1;
                let pieces = [&audio[..third], &audio[third..2 * third], &audio[2 * third..]];
                for (i, piece) in pieces.iter().enumerate() {
                    let last = i == pieces.len() - 1;
                    let mut body = json!({ "data": { "audio": piece }, "is_final": last });
                    if last {
                        let used = characters(text);
                        body["extra_info"] =
                            json!({ "audio_format": "mp3", "usage_characters": used, "word_count": used });
                        *state
                            .ws_characters
                            .lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .entry(key.to_string())
                            .or_default() += used;
                    }
                    if ws.send(ok("task_continued", body)).await.is_err() {
                        return;
                    }
                    if i == 0 && text.contains("[drop]") {
                        // Gone without a close frame, mid-synthesis.
                        return;
                    }
                }
            }
            Some("task_finish") if started => {
                let _ = ws.send(ok("task_finished", json!({}))).await;
                let _ = ws.close(None).await;
                return;
            }
            Some("task_continue" | "task_finish") => {
                let _ = ws.send(failed(2013, "invalid params: the task has not started")).await;
                return;
            }
            _ => {
                let _ = ws.send(failed(2013, "invalid params: unknown event")).await;
                return;
            }
        }
    }
}
