//! The MindVideo proxy's surface (`compat-protocols.md` §3.1): its clients ask for videos
//! through OpenAI's image and chat routes. When the model's channel serves op `video` but not
//! the route's op (a video plugin, or a channel narrowed with `ops = ["video"]`):
//! - `POST /v1/images/generations` submits a video task and answers `{"task_id": …}` at once
//!   (the client follows `GET /v1/tasks/{id}/stream`);
//! - `POST /v1/chat/completions` submits one with the last user message as the prompt and
//!   answers when it is done: a chat completion whose content is the video's URL (with a task
//!   token, so it plays in a browser), or, with `stream: true`, chunks of progress first.
//!
//! Either is an ordinary video task: quoted, held, settled once, archived, and listed by
//! `/v1/tasks` and `/v1/videos`. A client that leaves while it waits does not cancel it.

use super::native::json_text_field;
use super::{render, ConsumerRequest};
use crate::account::Consumer;
use crate::engine::{Answer, CallRequest};
use crate::exchange::CallError;
use crate::keypool::Channel;
use crate::plugin::Plugin;
use crate::server::body::{json, ChannelBody, Response, ResponseBody};
use crate::server::error::{bad_request, ToResponse};
use crate::server::Api;
use crate::store::tasks::{self, Task};
use std::sync::Arc;
use std::time::Duration;

/// How often a waiting call reads its task, and the longest it waits.
const WAIT_EVERY: Duration = Duration::from_secs(1);
const WAIT_MAX: Duration = Duration::from_secs(30 * 60);

/// A chat or image request being served as a video task.
pub struct VideoCall {
    chat: Option<ChatWait>,
    /// A chat's place among its key's open streams, taken before the job is submitted.
    slot: Option<crate::server::throttle::StreamSlot>,
    consumer: Consumer,
    params: String,
}

#[derive(Debug, Clone)]
struct ChatWait {
    stream: bool,
    model: String,
    /// `scheme://host` of the request, for absolute URLs in the answer.
    origin: String,
}

/// Whether a request for `op` on `model` is a video request; for chat, the request's body
/// becomes the video op's (`{"model","prompt",…}`).
pub fn resolve(
    state: &Api,
    plugin: &Plugin,
    channel: &Channel,
    mut request: ConsumerRequest,
    op: &str,
    model: &str,
) -> Result<(Option<VideoCall>, ConsumerRequest), CallError> {
    if op != "chat" && op != "images" {
        return Ok((None, request));
    }
    let serves = |op: &str| super::openai::serves(plugin, channel, op);
    if serves(op) || !serves("video") {
        return Ok((None, request));
    }
    let body: serde_json::Value = serde_json::from_slice(&request.body).map_err(CallError::invalid_json)?;
    let prompt = match op {
        "chat" => last_user_text(&body),
        _ => body["prompt"].as_str().map(str::to_string),
    };
    let Some(prompt) = prompt.filter(|p| !p.trim().is_empty()) else {
        return Err(bad_request(
            "missing_prompt",
            match op {
                "chat" => "A video model needs a user message with text: it is the video's prompt.",
                _ => "'prompt' is required.",
            },
        ));
    };
    // What the quote reads, given once (the vendor must read the value reserved for).
    let seconds = json_text_field(&request.body, "seconds", true)?;
    let size = json_text_field(&request.body, "size", true)?;
    if op == "images" {
        json_text_field(&request.body, "prompt", false)?;
    }
    let params = super::videos::task_params(seconds.clone(), size.clone(), &prompt);
    let chat = (op == "chat").then(|| ChatWait {
        stream: body["stream"].as_bool().unwrap_or(false),
        model: model.to_string(),
        origin: origin(&request.headers),
    });
    if op == "chat" {
        // The video op's body, as the Videos API would send it.
        let mut video = serde_json::json!({ "model": model, "prompt": prompt });
        for (name, value) in [("seconds", seconds), ("size", size)] {
            if let Some(v) = value {
                video[name] = v.into();
            }
        }
        request.body = video.to_string().into();
    }
    let slot = match chat {
        Some(_) => {
            Some(state.streams.open(request.consumer.key_id).ok_or_else(crate::server::throttle::too_many_streams)?)
        }
        None => None,
    };
    Ok((Some(VideoCall { chat, slot, consumer: request.consumer.clone(), params }), request))
}

impl VideoCall {
    /// The submit answers `{"task_id"}` and keeps what the video's views show.
    pub fn prepare(&self, call: &mut CallRequest) {
        call.task_view = Some(|t| serde_json::json!({ "task_id": t.id }));
        call.task_params = Some(self.params.clone());
    }
}

/// The answer: the submit's (images), or the finished video (chat).
pub async fn finish(state: &Arc<Api>, call: VideoCall, answer: Answer) -> Response {
    let Some(chat) = call.chat else { return render(answer) };
    let id = match &answer {
        Answer::Full { status: 200, body, .. } => serde_json::from_slice::<serde_json::Value>(body)
            .ok()
            .and_then(|v| v["task_id"].as_str().map(str::to_string)),
        _ => None,
    };
    let Some(id) = id else { return render(answer) };
    let slot = call.slot;
    if chat.stream {
        return stream(state, call.consumer, chat, id, slot);
    }
    match wait(state, &call.consumer, &id, |_| async { true }).await {
        Some(t) if t.status == tasks::SUCCEEDED => {
            let content = urls(state, &call.consumer, &chat, &t).join("\n");
            json(
                200,
                &serde_json::json!({
                    "id": format!("chatcmpl-{id}"),
                    "object": "chat.completion",
                    "created": crate::store::now_unix(),
                    "model": chat.model,
                    "choices": [{ "index": 0, "message": { "role": "assistant", "content": content }, "finish_reason": "stop" }],
                    "usage": { "prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0 },
                }),
            )
        }
        Some(t) => failed(&t).to_response(),
        None => still_running(&id).to_response(),
    }
}

/// Reads the task until it ends (or `WAIT_MAX`); `progress` hears of every state read and
/// says whether to go on (false: the client left).
async fn wait<F, Fut>(state: &Api, consumer: &Consumer, id: &str, mut progress: F) -> Option<Task>
where
    F: FnMut(Task) -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let started = std::time::Instant::now();
    while started.elapsed() < WAIT_MAX {
        if let Ok(Some(t)) = tasks::get(&state.engine.db, id, consumer.user_id).await {
            if t.is_final() {
                return Some(t);
            }
            if !progress(t).await {
                return None;
            }
        }
        tokio::time::sleep(WAIT_EVERY).await;
    }
    None
}

fn stream(
    state: &Arc<Api>,
    consumer: Consumer,
    chat: ChatWait,
    id: String,
    slot: Option<crate::server::throttle::StreamSlot>,
) -> Response {
    let (tx, body) = ChannelBody::new();
    let state = Arc::clone(state);
    tokio::spawn(async move {
        let _slot = slot;
        let chunk = |delta: serde_json::Value, finish: Option<&str>| {
            let c = serde_json::json!({
                "id": format!("chatcmpl-{id}"),
                "object": "chat.completion.chunk",
                "created": crate::store::now_unix(),
                "model": chat.model,
                "choices": [{ "index": 0, "delta": delta, "finish_reason": finish }],
            });
            bytes::Bytes::from(format!("data: {c}\n\n"))
        };
        if tx.send(Ok(chunk(serde_json::json!({ "role": "assistant", "content": "" }), None))).await.is_err() {
            return;
        }
        let mut last = None;
        let result = wait(&state, &consumer, &id, |t| {
            let tx = tx.clone();
            let line = (last != t.progress).then(|| {
                last = t.progress;
                format!("Rendering: {}%\n", t.progress.unwrap_or(0))
            });
            let chunk = line.map(|l| chunk(serde_json::json!({ "content": l }), None));
            async move {
                match chunk {
                    Some(c) => tx.send(Ok(c)).await.is_ok(),
                    None => !tx.is_closed(),
                }
            }
        })
        .await;
        let end = match result {
            Some(t) if t.status == tasks::SUCCEEDED => {
                let content = urls(&state, &consumer, &chat, &t).join("\n");
                chunk(serde_json::json!({ "content": content }), Some("stop"))
            }
            Some(t) => bytes::Bytes::from(format!("data: {}\n\n", failed(&t).to_json())),
            None => bytes::Bytes::from(format!("data: {}\n\n", still_running(&id).to_json())),
        };
        if tx.send(Ok(end)).await.is_ok() {
            let _ = tx.send(Ok(bytes::Bytes::from_static(b"data: [DONE]\n\n"))).await;
        }
    });
    http::Response::builder()
        .status(200)
        .header(http::header::CONTENT_TYPE, "text/event-stream")
        .header(http::header::CACHE_CONTROL, "no-cache")
        .body(ResponseBody::Channel(body))
        .expect("valid response parts")
}

fn urls(state: &Api, consumer: &Consumer, chat: &ChatWait, t: &Task) -> Vec<String> {
    super::tasks::output_urls(state, consumer, t).into_iter().map(|u| format!("{}{u}", chat.origin)).collect()
}

fn failed(t: &Task) -> CallError {
    let message = t.message.as_deref().unwrap_or("the video could not be generated");
    match t.status.as_str() {
        tasks::EXPIRED => {
            CallError::new(504, "server_error", "video_expired", format!("The video task {} expired: {message}", t.id))
        }
        _ => CallError::new(
            502,
            "upstream_error",
            t.error_kind.as_deref().unwrap_or("video_failed"),
            format!("The video task {} failed: {message}", t.id),
        ),
    }
}

fn still_running(id: &str) -> CallError {
    CallError::new(
        504,
        "server_error",
        "video_still_running",
        format!("The video task {id} is still running; follow it with GET /v1/tasks/{id}/stream."),
    )
}

/// The text of the last user message (a string, or its text parts joined).
fn last_user_text(body: &serde_json::Value) -> Option<String> {
    let message = body["messages"].as_array()?.iter().rev().find(|m| m["role"] == "user")?;
    match &message["content"] {
        serde_json::Value::String(s) => Some(s.clone()),
        serde_json::Value::Array(parts) => {
            let texts: Vec<&str> =
                parts.iter().filter(|p| p["type"] == "text").filter_map(|p| p["text"].as_str()).collect();
            (!texts.is_empty()).then(|| texts.join("\n"))
        }
        _ => None,
    }
}

/// `scheme://host` as the client reached the gateway (`X-Forwarded-Proto` from a TLS proxy).
fn origin(headers: &http::HeaderMap) -> String {
    let host = headers.get(http::header::HOST).and_then(|v| v.to_str().ok()).unwrap_or("localhost");
    let scheme = match headers.get("x-forwarded-proto").and_then(|v| v.to_str().ok()) {
        Some("https") => "https",
        _ => "http",
    };
    format!("{scheme}://{host}")
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_prompt_is_the_last_user_messages_text() {
        let body = serde_json::json!({ "messages": [
            { "role": "user", "content": "first" },
            { "role": "assistant", "content": "ok" },
            { "role": "user", "content": [{ "type": "text", "text": "a cat" }, { "type": "image_url", "image_url": {} }, { "type": "text", "text": "surfing" }] },
        ]});
        assert_eq!(super::last_user_text(&body).as_deref(), Some("a cat\nsurfing"));
        assert_eq!(super::last_user_text(&serde_json::json!({ "messages": [] })), None);
        assert_eq!(super::last_user_text(&serde_json::json!({})), None);
    }
}
