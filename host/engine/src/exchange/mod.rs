//! Drives one consumer call through a plugin: start the exchange, perform each step the plugin
//! answers (send, stream, relay, reply, fail), and hand back what the consumer gets; or forward
//! it without entering the plugin, where the plugin lets the host (`forward`).
//!
//! Invariants:
//! - the plugin's store lives exactly as long as the call (streams: until the stream task ends);
//! - a trapped plugin is never called again; the call fails with 502 `plugin_error`;
//! - every call ends in exactly one `Finished` report (for the call log), streams included.

mod error;
pub mod form;
mod forward;
pub mod http1;
pub mod http2;
mod stream;
mod sweep;
pub mod tls;
pub mod upstream;

use crate::keypool::{Channel, UpstreamKey};
use crate::plugin::{wit, Plugin, Runtime};
use bytes::Bytes;
use http_body_util::BodyExt;
use std::sync::Arc;
use tollgate_base::boxed;

pub(crate) use error::{plugin_failure, root_cause};
pub use error::{CallError, VendorWork};
pub use form::{ClientFile, Form};
pub use stream::{StreamBody, StreamCut, Tap};
pub use tls::Trust;
pub use upstream::Upstream;

/// The largest upstream answer read whole (larger downloads are relayed, never buffered).
const MAX_UPSTREAM_BODY: usize = 64 << 20;

/// The most steps one call may take; a plugin that loops between steps is a bug.
const MAX_STEPS: usize = 16;

/// What the consumer sent, held by the host for every attempt of a call: the raw body (for
/// `client-body` requests) and, for a multipart body, its files (for `client-file` parts).
#[derive(Debug, Default)]
pub struct ClientInput {
    pub body: Bytes,
    pub files: Vec<ClientFile>,
}

/// Everything needed to run one call.
pub struct CallContext {
    pub plugin: Arc<Plugin>,
    pub channel: Arc<Channel>,
    pub key: Option<UpstreamKey>,
    pub runtime: Runtime,
    pub upstream: Upstream,
    /// What the consumer sent, for `client-body` and `client-file` requests.
    pub client: Arc<ClientInput>,
    /// Keep a copy of a streamed answer (for `Idempotency-Key` replays).
    pub capture: bool,
    /// How long a stream waits on a consumer that stopped reading.
    pub write_timeout: std::time::Duration,
    /// A listing of the consumer's objects: the keys after `key` (a request's `key` 1, 2,
    /// ...), each with its channel's base URL.
    pub more_keys: Vec<(String, UpstreamKey)>,
    /// Where `fetch` steps go (the archive's guarded downloader).
    pub archive: Arc<crate::archive::Archive>,
    /// A consumer's call: who keeps the files an `archive` step stores; `None` for the
    /// host's own exchanges (balance reads, polls).
    pub owner: Option<FilesOwner>,
}

/// The consumer whose call keeps the files an `archive` step stores (cheap to copy per
/// attempt: the rest comes from the call and its context when a plugin archives).
#[derive(Debug, Clone)]
pub struct FilesOwner {
    pub user_id: i64,
    pub key_id: i64,
    pub group: Arc<str>,
}

impl CallContext {
    /// The files' task of an `archive` step in `call`: it holds nothing and is born finished.
    fn files_task(&self, owner: &FilesOwner, call: &wit::Call) -> crate::store::tasks::NewTask {
        let now = crate::store::now_unix();
        crate::store::tasks::NewTask {
            user_id: owner.user_id,
            key_id: owner.key_id,
            channel: self.channel.name.clone(),
            key_fingerprint: self.key.as_ref().map(UpstreamKey::fingerprint).unwrap_or_default(),
            plugin: self.plugin.name().to_string(),
            plugin_version: self.plugin.manifest.version.clone(),
            op: call.op.clone(),
            model: call.model.clone(),
            price_group: owner.group.to_string(),
            state: String::new(),
            reserved_micros: 0,
            fee_micros: 0,
            request_id: call.context.request_id.clone(),
            first_poll_at: now,
            expires_at: now,
            params: None,
            callback_url: None,
            chat_id: None,
            user_uuid: None,
        }
    }
}

/// What the consumer gets.
pub enum Outcome {
    Reply {
        status: u16,
        headers: Vec<wit::Header>,
        body: Bytes,
        usage: wit::Usage,
        /// A vendor error relayed verbatim (native routes).
        error: Option<wit::AdapterError>,
        /// Vendor objects the call created (for key affinity).
        objects: Vec<String>,
        /// Speech the plugin decoded from a vendor encoding, for the speech archive.
        speech: Option<wit::SpeechAudio>,
    },
    /// A streamed answer, not started yet: `PendingStream::start` hands it the value that
    /// ends the call, so that the stream task owns it from then on.
    Stream { headers: Vec<wit::Header>, pending: Box<PendingStream> },
    /// An upstream response copied to the consumer as it is; `keyed` when it came from the
    /// channel's base URL with its key (only then does its status tell of the key).
    Relay { response: http::Response<crate::exchange::upstream::UpstreamIncoming>, keyed: bool },
    /// The vendor accepted an asynchronous job (on `key_fingerprint`'s account).
    Submitted { task: wit::TaskSubmitted, key_fingerprint: String },
    /// A poll's news of a job.
    Task(wit::TaskState),
}

/// How a stream ended, reported once by the stream task.
#[derive(Debug, Clone, Default)]
pub struct StreamReport {
    pub usage: wit::Usage,
    /// Content delivered to the consumer: SSE events (`[DONE]` excluded) and byte chunks
    /// (the billing estimate for an interrupted stream without usage).
    pub delivered_events: u64,
    /// `None`: the stream completed normally.
    pub error: Option<CallError>,
    pub client_gone: bool,
    /// What the consumer was sent, when the call asked for a copy (`CallContext::capture`)
    /// and it stayed within the size kept.
    pub captured: Option<Bytes>,
    /// The consumer's content type (what a replay of the capture is served as).
    pub content_type: String,
}

pub type OnStreamEnd = Box<dyn FnOnce(StreamReport) + Send>;

/// Runs the call to its first answer: forwarded by the host when the plugin lets it
/// (`forward`), else through the plugin's steps.
pub async fn run(ctx: CallContext, call: &mut wit::Call) -> Result<Outcome, CallError> {
    if let Some(forward) = forward::route(&ctx, call) {
        return forward::run(ctx, call, forward).await;
    }
    // Boxed, as `forward::run` boxes its own way to the plugin: a forwarded call's future (the
    // common call's) is then not moved at the size of the plugin's steps.
    boxed::pin(|| through_plugin(ctx, call)).await
}

/// The call through its plugin's steps, from its `first()`.
async fn through_plugin(ctx: CallContext, call: &mut wit::Call) -> Result<Outcome, CallError> {
    consumer_body_into(call, &ctx.client);
    let mut pc = start(&ctx, call).await?;
    let step = pc.first().await.map_err(|e| plugin_failure(&ctx.plugin, "first()", e))?;
    steps(ctx, call, pc, step, VendorWork::None).await
}

/// The consumer's body into a call whose body is `client-body` (which the contract gives only
/// requests; a call made with it means the body the host holds, `CallContext::client`): done
/// before the plugin is entered, never for a forwarded call, which sends the held bytes.
fn consumer_body_into(call: &mut wit::Call, client: &ClientInput) {
    if matches!(call.body, wit::Body::ClientBody) {
        call.body = call_body(&client.body);
    }
}

/// The consumer's body as a call carries it: text when it is UTF-8, else bytes.
pub(crate) fn call_body(body: &[u8]) -> wit::Body {
    match std::str::from_utf8(body) {
        Ok(s) => wit::Body::Text(s.to_string()),
        Err(_) => wit::Body::Bytes(body.to_vec()),
    }
}

/// The plugin's exchange for `call`, started.
async fn start(ctx: &CallContext, call: &wit::Call) -> Result<crate::plugin::PluginCall, CallError> {
    ctx.runtime.start(&ctx.plugin.pre, call).await.map_err(|e| plugin_failure(&ctx.plugin, "starting the exchange", e))
}

/// Performs the plugin's steps from `step` to the call's answer. `work`: what the vendor has
/// done so far; once it answered 2xx, a plugin that cannot use the answer (it fails or traps)
/// does not make the call free.
async fn steps(
    ctx: CallContext,
    call: &wit::Call,
    mut pc: crate::plugin::PluginCall,
    mut step: wit::Step,
    mut work: VendorWork,
) -> Result<Outcome, CallError> {
    let base_url = &call.context.base_url;
    // The rare steps' futures (fetch, archive, an absolute relay) are boxed: every call's
    // future stays the size of its common steps.
    for _ in 0..MAX_STEPS {
        step = match step {
            wit::Step::Send(req) => {
                let mut span = upstream_span(&ctx, call, &req);
                // Work an earlier step got done is never forgotten by a later step's failure.
                let resp = send(&ctx, base_url, &req, work).await.map_err(|e| failed(&mut span, e))?;
                let response =
                    read_whole(resp, &ctx.upstream).await.map_err(|e| failed(&mut span, e.at_least(work)))?;
                span.attr("http.response.status_code", response.status);
                drop(span);
                work = work.max(answered(response.status));
                pc.next(&response).await.map_err(|e| plugin_failure(&ctx.plugin, "next()", e).after(work))?
            }
            wit::Step::Stream(s) => {
                let mut span = upstream_span(&ctx, call, &s.request);
                let resp = send(&ctx, base_url, &s.request, work).await.map_err(|e| failed(&mut span, e))?;
                span.attr("http.response.status_code", resp.status().as_u16());
                drop(span);
                if !resp.status().is_success() || answered_json_instead_of_events(&resp, &s.framing) {
                    let response = read_whole(resp, &ctx.upstream).await.map_err(|e| e.at_least(work))?;
                    work = work.max(answered(response.status));
                    pc.next(&response).await.map_err(|e| plugin_failure(&ctx.plugin, "next()", e).after(work))?
                } else {
                    let decoder = stream::Decoder::Plugin(pc);
                    return Ok(PendingStream::outcome(ctx, decoder, resp, s.framing, s.reply_headers));
                }
            }
            // An absolute URL (a vendor's CDN) goes the guarded way `fetch` goes, without a
            // credential; a path goes to the channel's base URL with its key.
            wit::Step::Relay(req) if req.path.starts_with("https://") || req.path.starts_with("http://") => {
                if !req.method.eq_ignore_ascii_case("GET") {
                    return Err(CallError::plugin("a relay of an absolute URL is a GET").after(work));
                }
                let hosts = &ctx.plugin.manifest.fetch_hosts;
                let response = match boxed::pin(|| ctx.archive.get(&req.path, hosts, &req.headers)).await {
                    Ok((_, response)) => response.map(Into::into),
                    Err(f) => return Err(download_failed(f).after(work)),
                };
                return Ok(Outcome::Relay { response, keyed: false });
            }
            wit::Step::Relay(req) => {
                let mut span = upstream_span(&ctx, call, &req);
                let response = send(&ctx, base_url, &req, work).await.map_err(|e| failed(&mut span, e))?;
                span.attr("http.response.status_code", response.status().as_u16());
                drop(span);
                return Ok(Outcome::Relay { response, keyed: true });
            }
            wit::Step::Reply(r) => {
                let body = reply_body(r.body)?;
                return Ok(Outcome::Reply {
                    status: r.status,
                    headers: r.headers,
                    body,
                    usage: r.usage,
                    error: r.error,
                    objects: r.objects,
                    speech: r.speech,
                });
            }
            wit::Step::Fail(e) => {
                // A class that says the vendor refused (an error inside an HTTP 200, as some
                // vendors send) is free; a fault means the plugin could not read the answer.
                let work = if is_fault(e.kind) { work } else { VendorWork::None };
                return Err(CallError::from_adapter(&e).after(work));
            }
            wit::Step::Submitted(task) => {
                let key_fingerprint = ctx.key.as_ref().map(UpstreamKey::fingerprint).unwrap_or_default();
                return Ok(Outcome::Submitted { task, key_fingerprint });
            }
            wit::Step::Task(state) => return Ok(Outcome::Task(state)),
            wit::Step::Fetch(req) => {
                if !req.method.eq_ignore_ascii_case("GET") {
                    return Err(CallError::plugin("a fetch step is a GET").after(work));
                }
                let hosts = &ctx.plugin.manifest.fetch_hosts;
                let response = match boxed::pin(|| ctx.archive.fetch(&req.path, hosts, &req.headers)).await {
                    Ok(r) => r,
                    Err(f) => return Err(download_failed(f).after(work)),
                };
                pc.next(&response).await.map_err(|e| plugin_failure(&ctx.plugin, "next()", e).after(work))?
            }
            wit::Step::Archive(media) => {
                let Some(owner) = &ctx.owner else {
                    return Err(CallError::plugin("only a consumer's call keeps files (a poll names them as outputs)")
                        .after(work));
                };
                let hosts = &ctx.plugin.manifest.fetch_hosts;
                let task = ctx.files_task(owner, call);
                let stored = match boxed::pin(|| ctx.archive.keep(&media, hosts, &task)).await {
                    Ok(s) => s,
                    Err(f) => return Err(download_failed(f).after(work)),
                };
                pc.archived(&stored).await.map_err(|e| plugin_failure(&ctx.plugin, "archived()", e).after(work))?
            }
            wit::Step::Socket(_) => return Err(CallError::new(
                400,
                "invalid_request_error",
                "websocket_required",
                "This route is a WebSocket: connect to it with an upgrade (Connection: Upgrade, Upgrade: websocket).",
            )),
        };
    }
    Err(CallError::plugin(format!("plugin '{}' took more than {MAX_STEPS} steps", ctx.plugin.name())).after(work))
}

/// A download of an absolute URL (`fetch`, `archive`, a relay of one) that failed: it carried
/// no key, so it has no class, and says nothing of the channel's key (never disabled, cooled
/// or failed over for it).
fn download_failed(f: crate::archive::Failure) -> CallError {
    CallError::new(502, "upstream_error", "download_failed", f.message)
}

/// The bytes of a plugin's reply; a body only a request can have is the plugin's bug.
pub fn reply_body(body: wit::Body) -> Result<Bytes, CallError> {
    match body {
        wit::Body::Empty => Ok(Bytes::new()),
        wit::Body::Text(s) => Ok(Bytes::from(s)),
        wit::Body::Bytes(b) => Ok(Bytes::from(b)),
        wit::Body::ClientBody | wit::Body::Form(_) | wit::Body::TextWithFiles(_) => {
            Err(CallError::plugin("the plugin replied with a body only a request can have"))
        }
    }
}

/// The base URL a channel's requests go to: the channel's, or its plugin's default.
pub fn base_url(channel: &Channel, plugin: &Plugin) -> Result<String, CallError> {
    match channel.base_url.as_deref().or(plugin.manifest.default_base_url.as_deref()) {
        Some(u) => Ok(u.trim_end_matches('/').to_string()),
        None => Err(CallError::config(format!("channel '{}' has no base_url", channel.name))),
    }
}

/// Sends one of the plugin's requests; a failure keeps what earlier steps got done.
async fn send(
    ctx: &CallContext,
    base_url: &str,
    req: &wit::UpstreamRequest,
    work: VendorWork,
) -> Result<http::Response<crate::exchange::upstream::UpstreamIncoming>, CallError> {
    let (base_url, key) = match req.key as usize {
        0 => (base_url, ctx.key.as_ref()),
        // Another key's credential is inserted by the host: a signing plugin has only its own.
        i => match ctx.more_keys.get(i - 1) {
            Some((url, key)) if ctx.plugin.manifest.credential_fields.is_empty() => (url.as_str(), Some(key)),
            _ => {
                let e = format!("the plugin sent a request on key {i}, which the call does not have");
                return Err(CallError::plugin(e).after(work));
            }
        },
    };
    ctx.upstream.send(&ctx.channel, base_url, req, key, &ctx.client).await.map_err(|e| e.at_least(work))
}

/// The span of one request to the channel's upstream: where it went (host and path, never
/// the query, a header or a body) and on which key (by fingerprint).
fn upstream_span(ctx: &CallContext, call: &wit::Call, req: &wit::UpstreamRequest) -> crate::trace::Span {
    let mut span = crate::trace::client_span("upstream");
    if span.on() {
        let host = call.context.base_url.parse::<http::Uri>().ok().and_then(|u| u.host().map(str::to_string));
        span.attr("http.request.method", req.method.clone());
        span.attr("server.address", host.unwrap_or_default());
        span.attr("url.path", req.path.split('?').next().unwrap_or_default().to_string());
        span.attr("tollgate.channel", ctx.channel.name.clone());
        span.attr("tollgate.attempt", u64::from(call.context.attempt));
        if let (0, Some(key)) = (req.key, &ctx.key) {
            span.attr("tollgate.key", key.fingerprint());
        }
    }
    span
}

/// `e`, marked on `span`.
fn failed(span: &mut crate::trace::Span, e: CallError) -> CallError {
    span.fail(e.code.clone());
    e
}

/// What an answer's status says the vendor did: a 2xx is work done.
fn answered(status: u16) -> VendorWork {
    if (200..300).contains(&status) {
        VendorWork::Done
    } else {
        VendorWork::None
    }
}

/// A class that means the plugin could not use the vendor's answer (a fault or a timeout), as
/// opposed to the vendor refusing the request (free, even inside an HTTP 200).
pub fn is_fault(kind: wit::ErrorKind) -> bool {
    matches!(kind, wit::ErrorKind::UpstreamFault | wit::ErrorKind::Timeout)
}

/// A stream whose upstream answered, waiting for the value that will end the call.
pub struct PendingStream {
    decoder: stream::Decoder,
    resp: http::Response<crate::exchange::upstream::UpstreamIncoming>,
    framing: wit::Framing,
    settings: stream::Settings,
    plugin: Arc<Plugin>,
}

impl PendingStream {
    /// The call's outcome: `resp`'s stream, decoded by `decoder`, to go to the consumer with
    /// `headers`.
    fn outcome(
        ctx: CallContext,
        decoder: stream::Decoder,
        resp: http::Response<crate::exchange::upstream::UpstreamIncoming>,
        framing: wit::Framing,
        headers: Vec<wit::Header>,
    ) -> Outcome {
        let settings = stream::Settings {
            idle: ctx.upstream.idle_timeout,
            write_timeout: ctx.write_timeout,
            capture: ctx.capture,
            content_type: headers
                .iter()
                .find(|h| h.name.eq_ignore_ascii_case("content-type"))
                .map_or_else(|| "text/event-stream".to_string(), |h| h.value.clone()),
        };
        let pending = PendingStream { decoder, resp, framing, settings, plugin: ctx.plugin };
        Outcome::Stream { headers, pending: Box::new(pending) }
    }

    /// Starts the stream task, with what the upstream sent with its head already decoded for
    /// the consumer's; the task calls `on_end` once, when the stream ends (dropped unused if
    /// the task dies, so a value it owns still ends the call by its own drop).
    pub async fn start(self, on_end: OnStreamEnd) -> StreamBody {
        stream::start(self.decoder, self.resp, self.framing, self.settings, self.plugin, on_end).await
    }
}

/// Vendors such as MiniMax answer a streamed request that failed with a plain JSON error
/// (HTTP 200); that body goes to `next()` for classification instead of the SSE decoder.
pub(super) fn answered_json_instead_of_events(
    resp: &http::Response<crate::exchange::upstream::UpstreamIncoming>,
    framing: &wit::Framing,
) -> bool {
    matches!(framing, wit::Framing::Sse)
        && resp
            .headers()
            .get(http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|ct| ct.starts_with("application/json"))
}

/// Reads a whole upstream answer for the plugin, within the response timeout.
pub(super) async fn read_whole(
    resp: http::Response<crate::exchange::upstream::UpstreamIncoming>,
    upstream: &Upstream,
) -> Result<wit::UpstreamResponse, CallError> {
    let (head, body) = read_body(resp, upstream).await?;
    Ok(whole_response(&head, &body))
}

/// An answer read whole, as the plugin gets it.
fn whole_response(head: &http::response::Parts, body: &Bytes) -> wit::UpstreamResponse {
    wit::UpstreamResponse {
        status: head.status.as_u16(),
        headers: upstream::plugin_headers(&head.headers),
        body: body.to_vec(),
    }
}

/// Reads a whole upstream body, within the response timeout.
async fn read_body(
    resp: http::Response<crate::exchange::upstream::UpstreamIncoming>,
    upstream: &Upstream,
) -> Result<(http::response::Parts, Bytes), CallError> {
    let (head, body) = resp.into_parts();
    // A 2xx whose body is lost was still worked on by the vendor.
    let work = answered(head.status.as_u16());
    let limited = http_body_util::Limited::new(body, MAX_UPSTREAM_BODY);
    let body = match tokio::time::timeout(upstream.response_timeout, limited.collect()).await {
        Ok(Ok(b)) => b.to_bytes(),
        Ok(Err(e)) if e.is::<http_body_util::LengthLimitError>() => {
            return Err(CallError::upstream(
                wit::ErrorKind::UpstreamFault,
                format!("the upstream answered with more than {MAX_UPSTREAM_BODY} bytes"),
            )
            .after(work))
        }
        Ok(Err(_)) => {
            return Err(CallError::upstream(
                wit::ErrorKind::UpstreamFault,
                "the upstream connection failed while sending its answer",
            )
            .after(work))
        }
        Err(_) => {
            return Err(CallError::upstream(wit::ErrorKind::Timeout, "the upstream did not finish its answer in time")
                .after(work))
        }
    };
    Ok((head, body))
}
