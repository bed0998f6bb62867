//! What consumers call: the OpenAI-compatible routes (`openai`) and the vendor-native routes
//! plugins declare (`native`). Each reads and resolves the request, hands it to
//! `Engine::call` (which settles and records it) and renders the answer as HTTP.

pub mod anthropic;
pub mod chat_socket;
pub mod gemini;
pub mod mindvideo;
pub mod minimax_proxy;
pub mod native;
pub mod openai;
pub mod progress_socket;
pub mod socket;
pub mod speech_prefetch;
pub mod tasks;
pub mod user;
pub mod videos;

use crate::account::Consumer;
use crate::engine::{Affinity, Answer, CallRequest};
use crate::exchange::{form, CallError, Form};
use crate::keypool::Channel;
use crate::plugin::{wit, Plugin, FORBIDDEN_FORWARD};
use crate::server::body::{Response, ResponseBody};
use crate::server::error::ToResponse;
use crate::server::Api;
use bytes::Bytes;
use http_body_util::Full;
use std::sync::Arc;
use std::time::Instant;
use tollgate_base::boxed;

/// What every call reads from the consumer's request before it is resolved to a channel.
pub struct ConsumerRequest {
    pub consumer: Consumer,
    pub headers: http::HeaderMap,
    pub path: String,
    pub query: String,
    pub body: Bytes,
    /// A `multipart/form-data` body, parsed (the body stays as it arrived too).
    pub form: Option<Form>,
    /// The consumer's `Idempotency-Key`, if it sent a usable one.
    pub idempotency_key: Option<String>,
    /// `Tollgate-Callback-Url`: where a task's end is POSTed (checked: the operator's hosts).
    pub callback_url: Option<String>,
    /// `Tollgate-Chat-Id` and `Tollgate-User-Uuid`: the app's chat and user references,
    /// recorded on the call and its task (a task's events go to the progress socket's
    /// registrations that name them), never an identity.
    pub chat_id: Option<String>,
    pub user_uuid: Option<String>,
}

impl ConsumerRequest {
    /// The call this request makes once resolved: billed, without path parameters or
    /// affinity (a native route sets those).
    pub fn into_call(
        self,
        plugin: Arc<Plugin>,
        channel: Arc<Channel>,
        op: String,
        model: String,
        started: Instant,
        request_id: String,
    ) -> CallRequest {
        let headers = self.headers_for(&plugin);
        CallRequest {
            consumer: self.consumer,
            plugin,
            channel,
            op,
            model,
            body: self.body,
            form: self.form,
            query: self.query,
            headers,
            path: self.path,
            path_params: Vec::new(),
            billed: true,
            keys_read: false,
            affinity: Affinity::None,
            started,
            request_id,
            idempotency_key: self.idempotency_key,
            task_view: None,
            task_params: None,
            callback_url: self.callback_url,
            chat_id: self.chat_id,
            user_uuid: self.user_uuid,
        }
    }

    /// The consumer headers `plugin` may see: the common ones and those its manifest asks
    /// for, never credentials.
    pub fn headers_for(&self, plugin: &Plugin) -> Vec<wit::Header> {
        const ALWAYS: [&str; 4] = ["content-type", "accept", "accept-language", "user-agent"];
        let asked = plugin.manifest.forward_headers.iter().map(String::as_str);
        let mut out = Vec::new();
        for name in ALWAYS.into_iter().chain(asked) {
            if FORBIDDEN_FORWARD.iter().any(|f| name.eq_ignore_ascii_case(f)) {
                continue;
            }
            for v in self.headers.get_all(name) {
                if let Ok(v) = v.to_str() {
                    out.push(wit::Header { name: name.to_ascii_lowercase(), value: v.to_string() });
                }
            }
        }
        out
    }
}

/// Authenticates the consumer (401), reads the body within the limit (413) and parses a
/// multipart body (400).
pub async fn read_request(
    state: &Api,
    req: http::Request<hyper::body::Incoming>,
) -> Result<ConsumerRequest, CallError> {
    let consumer = state.authenticate(&req)?;
    let path = req.uri().path().to_string();
    let query = req.uri().query().unwrap_or("").to_string();
    let idempotency_key = match req.headers().get("idempotency-key").map(|v| v.to_str()) {
        None => None,
        Some(Ok(k)) if !k.is_empty() && k.len() <= 128 && k.bytes().all(|b| b.is_ascii_graphic()) => {
            Some(k.to_string())
        }
        Some(_) => {
            return Err(crate::server::error::bad_request(
                "invalid_idempotency_key",
                "Idempotency-Key must be 1 to 128 visible ASCII characters.",
            ))
        }
    };
    let callback_url = match req.headers().get("tollgate-callback-url").map(|v| v.to_str()) {
        None => None,
        Some(Ok(url)) => match state.engine.archive.check_callback(url) {
            Ok(()) => Some(url.to_string()),
            Err(why) => return Err(crate::server::error::bad_request("callback_not_allowed", why)),
        },
        Some(Err(_)) => {
            return Err(crate::server::error::bad_request(
                "callback_not_allowed",
                "Tollgate-Callback-Url must be ASCII.",
            ))
        }
    };
    let reference_header = |name: &str| match req.headers().get(name) {
        None => Ok(None),
        Some(v) => v.to_str().map_err(|_| invalid_reference()).and_then(|v| reference(Some(v))),
    };
    let chat_id = reference_header("tollgate-chat-id")?;
    let user_uuid = reference_header("tollgate-user-uuid")?;
    // The headers move out, not copied; the body reader keeps the declared length.
    let mut req = req;
    let headers = std::mem::take(req.headers_mut());
    if let Some(length) = headers.get(http::header::CONTENT_LENGTH) {
        req.headers_mut().insert(http::header::CONTENT_LENGTH, length.clone());
    }
    let body = state.read_body(req).await?;
    let content_type = headers.get(http::header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
    let form = match form::boundary(content_type) {
        None => None,
        // Boxed: a multipart body's parse is not carried in every call's future.
        Some(boundary) => {
            let boundary = boundary?;
            Some(boxed::pin(|| form::parse(body.clone(), boundary)).await?)
        }
    };
    Ok(ConsumerRequest {
        consumer,
        headers,
        path,
        query,
        body,
        form,
        idempotency_key,
        callback_url,
        chat_id,
        user_uuid,
    })
}

/// An app's reference (`chat_id`, `user_uuid`, `client_id`) as it may be recorded: 1 to 128
/// characters, none of them a control character (a NUL would be refused by PostgreSQL, and a
/// long one would bloat the log).
pub fn reference(value: Option<&str>) -> Result<Option<String>, CallError> {
    match value {
        None | Some("") => Ok(None),
        Some(v) if v.chars().count() <= 128 && !v.chars().any(char::is_control) => Ok(Some(v.to_string())),
        Some(_) => Err(invalid_reference()),
    }
}

fn invalid_reference() -> CallError {
    CallError::new(
        400,
        "invalid_request_error",
        "invalid_reference",
        "chat_id, user_uuid and client_id are 1 to 128 characters, none of them a control character.",
    )
}

/// Runs a call once `resolve` has found its plugin and channel; a call refused while
/// resolving is answered with its error.
pub async fn answer<F, Fut>(state: &Arc<Api>, resolve: F) -> Response
where
    F: FnOnce(Instant, String) -> Fut,
    Fut: std::future::Future<Output = Result<CallRequest, CallError>>,
{
    let (answer, request_id) = run(state, resolve).await;
    with_request_id(render(answer), &request_id)
}

/// `answer`, before the answer is rendered: the engine's answer and the request id.
pub async fn run<F, Fut>(state: &Arc<Api>, resolve: F) -> (Answer, String)
where
    F: FnOnce(Instant, String) -> Fut,
    Fut: std::future::Future<Output = Result<CallRequest, CallError>>,
{
    let started = Instant::now();
    let request_id = state.next_request_id();
    let answer = match resolve(started, request_id.clone()).await {
        // Its own task: a consumer that goes away cannot cancel a call the vendor may be
        // working on; it finishes, is settled by its usage and recorded.
        Ok(r) => {
            let state = Arc::clone(state);
            let trace = crate::engine::trace::current();
            // Boxed: the task holds a pointer, not the call's state machine (kilobytes, which
            // the task's cell would otherwise copy in when spawned and overwrite when done).
            let call = Box::pin(crate::engine::trace::scope(trace, async move { state.engine.call(r).await }));
            match tokio::spawn(call).await {
                Ok(answer) => answer,
                Err(e) => {
                    tracing::error!(request_id = %request_id, error = %e, "a call's task failed");
                    Answer::Failed(CallError::new(
                        500,
                        "server_error",
                        "internal_error",
                        "The gateway failed this call.",
                    ))
                }
            }
        }
        Err(e) => Answer::Failed(e),
    };
    (answer, request_id)
}

/// Headers never copied from a plugin's reply to the consumer.
const NOT_FORWARDED: &[&str] = &["content-length", "transfer-encoding", "connection", "keep-alive", "set-cookie"];

/// What the engine answered, as an HTTP response.
pub fn render(answer: Answer) -> Response {
    match answer {
        Answer::Full { status, headers, body } => with_headers(status, &headers)
            .body(ResponseBody::Full(Full::new(body)))
            .unwrap_or_else(|_| CallError::plugin("the plugin replied with invalid headers").to_response()),
        Answer::Stream { headers, body } => stream_response(&headers, ResponseBody::Stream(body)),
        Answer::Relay(response) => {
            let (parts, body) = response.into_parts();
            let mut resp = http::Response::builder().status(parts.status);
            for name in [http::header::CONTENT_TYPE, http::header::CONTENT_LENGTH, http::header::CONTENT_DISPOSITION] {
                if let Some(v) = parts.headers.get(&name) {
                    resp = resp.header(name, v);
                }
            }
            resp.body(ResponseBody::Relay(body)).expect("copied headers are valid")
        }
        Answer::Failed(e) => e.to_response(),
    }
}

/// Whether a plugin's headers say its answer is an event stream.
pub(super) fn is_event_stream(headers: &[wit::Header]) -> bool {
    headers.iter().any(|h| h.name.eq_ignore_ascii_case("content-type") && h.value.starts_with("text/event-stream"))
}

/// A stream's response: the plugin's headers (those that may be forwarded) and `body`.
pub fn stream_response(headers: &[wit::Header], body: ResponseBody) -> Response {
    with_headers(200, headers)
        .body(body)
        .unwrap_or_else(|_| CallError::plugin("the plugin set invalid stream headers").to_response())
}

fn with_headers(status: u16, headers: &[wit::Header]) -> http::response::Builder {
    let mut resp = http::Response::builder().status(status);
    for h in headers {
        if !NOT_FORWARDED.iter().any(|n| h.name.eq_ignore_ascii_case(n)) {
            resp = resp.header(h.name.as_str(), h.value.as_str());
        }
    }
    resp
}

pub fn with_request_id(mut resp: Response, id: &str) -> Response {
    if let Ok(v) = http::HeaderValue::from_str(id) {
        resp.headers_mut().insert("x-request-id", v);
    }
    resp
}
