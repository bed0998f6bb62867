//! Streams: one task per streamed call owns its `Decoder` (the plugin's store, or for a chat
//! stream the host forwards, the host's relay and the call's admission), reads the upstream
//! body frame by frame, frames it (SSE, NDJSON or raw) and feeds the events of what has arrived
//! to `decode`, and writes the decoder's output to the consumer: one call and one write per
//! network chunk, or per burst of chunks that arrived together (up to `BURST_BYTES`; never
//! waiting for more). Nothing is buffered whole. What arrived with the upstream's head is
//! decoded before the task starts, in the call's own, so that it leaves with the consumer's
//! head in one write.
//!
//! The end is always explicit: `finish` is called with why the stream ended; an upstream cut,
//! an idle timeout or a decoder error ends the consumer's stream with an SSE `error` event,
//! never a silent clean end; a consumer that goes away, or stops reading for the write timeout,
//! stops the upstream read. The end is reported once, with the usage seen, through `on_end`.

use super::upstream::UpstreamIncoming as Incoming;
use super::{plugin_failure, CallError, OnStreamEnd, StreamReport};
use crate::plugin::{wit, Admission, Plugin, PluginCall};
use bytes::Bytes;
use hyper::body::{Body, Frame};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::sync::mpsc;
use tollgate_base::boxed;
use tollgate_base::openai_stream::{ChatStream, Event};
use tollgate_base::{ndjson, sse};

/// The consumer-facing body of a stream.
pub struct StreamBody {
    rx: mpsc::Receiver<Result<Bytes, StreamCut>>,
    /// Sees each chunk as the consumer takes it, and the clean end (speech prefetch).
    tap: Option<Box<dyn Tap>>,
}

/// What watches a stream on its way to the consumer: only what the consumer took is seen,
/// `end` only when the stream ended cleanly (never after a cut or a consumer that left).
pub trait Tap: Send {
    fn data(&mut self, chunk: &Bytes);
    fn end(&mut self);
}

impl StreamBody {
    /// This stream, with `tap` watching it.
    pub fn tapped(mut self, tap: Box<dyn Tap>) -> StreamBody {
        self.tap = Some(tap);
        self
    }
}

/// A stream that ended abnormally in a format with no error event of its own (audio, raw
/// bytes): the response is aborted, so the consumer sees a broken transfer, never a clean end.
#[derive(Debug)]
pub struct StreamCut;

impl std::fmt::Display for StreamCut {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("the upstream stream ended abnormally")
    }
}

impl std::error::Error for StreamCut {}

impl Body for StreamBody {
    type Data = Bytes;
    type Error = StreamCut;
    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let polled = self.rx.poll_recv(cx);
        if let Some(tap) = self.tap.as_mut() {
            match &polled {
                Poll::Ready(Some(Ok(chunk))) => tap.data(chunk),
                Poll::Ready(None) => {
                    tap.end();
                    self.tap = None;
                }
                // A cut: nothing more is seen.
                Poll::Ready(Some(Err(_))) => self.tap = None,
                Poll::Pending => {}
            }
        }
        polled.map(|o| o.map(|r| r.map(Frame::data)))
    }
}

/// How the consumer's stream says it failed, by its content type.
fn end_with_error(content_type: &str, e: &CallError) -> Result<Bytes, StreamCut> {
    let ct = content_type.to_ascii_lowercase();
    if ct.starts_with("text/event-stream") {
        let mut out = Vec::new();
        sse::write_event(&mut out, None, None, &e.to_json().to_string());
        Ok(Bytes::from(out))
    } else if ct.contains("ndjson") || ct.contains("jsonl") || ct.contains("json-seq") {
        Ok(Bytes::from(format!("{}\n", e.to_json())))
    } else {
        Err(StreamCut)
    }
}

/// How a stream treats its two sides.
pub(super) struct Settings {
    /// Upstream silence that ends the stream.
    pub idle: Duration,
    /// A consumer that takes no write for this long (it stopped reading) is gone.
    pub write_timeout: Duration,
    /// Keep a copy of what the consumer is sent (up to `idempotency::MAX_STORED_BYTES`), for
    /// replays of an `Idempotency-Key`.
    pub capture: bool,
    /// The consumer's content type (the plugin's reply headers): how a failure is told.
    pub content_type: String,
}

pub(super) async fn start(
    mut pc: Decoder,
    resp: http::Response<Incoming>,
    framing: wit::Framing,
    settings: Settings,
    plugin: Arc<Plugin>,
    on_end: OnStreamEnd,
) -> StreamBody {
    let (tx, rx) = mpsc::channel(16);
    let mut out = Out { tx, capture: settings.capture.then(Vec::new), write_timeout: settings.write_timeout };
    // What the upstream sent with its head goes to the consumer with the consumer's head (the
    // body holds it before hyper writes the head): one write, the first chunk at once. Never
    // waits for the upstream: what has not arrived is the stream task's. hyper's connection
    // reads none of a body before it is asked for: this poll asks, and the burst lets the
    // connection run and takes what it read.
    let mut read = Read { body: resp.into_body(), framer: Framer::new(framing), delivered: 0 };
    let first = Pin::new(&mut read.body).poll_frame(&mut Context::from_waker(std::task::Waker::noop()));
    let early = match took(first, &mut read.framer) {
        Ok(taken) => read.burst(taken.unwrap_or(0), &mut pc, &plugin, &mut out).await,
        Err(stop) => Some(stop),
    };
    // The call's trace goes on in the stream's task (its settle ends there).
    let trace = crate::trace::current();
    // Boxed: the task's cell holds a pointer. Its future is kilobytes, which tokio's spawn
    // would copy from call to call on its way into the cell.
    tokio::spawn(boxed::pin(|| {
        crate::trace::scope(trace, async move {
            let mut span = crate::trace::span("stream");
            let mut report = pump(pc, read, early, settings.idle, &plugin, &mut out).await;
            if span.on() {
                span.attr("tollgate.events", report.delivered_events);
                span.attr("tollgate.client_gone", report.client_gone);
                if let Some(e) = &report.error {
                    span.fail(e.code.clone());
                }
            }
            drop(span);
            if let Some(e) = &report.error {
                if !report.client_gone {
                    match end_with_error(&settings.content_type, e) {
                        Ok(last) => {
                            let _ = out.send(last).await;
                        }
                        Err(cut) => {
                            let _ = out.tx.send(Err(cut)).await;
                        }
                    }
                }
            }
            report.captured = out.capture.map(Bytes::from);
            report.content_type = settings.content_type;
            drop(out.tx);
            on_end(report);
        })
    }));
    StreamBody { rx, tap: None }
}

/// The consumer's side of a stream, with the copy kept for replays.
struct Out {
    tx: mpsc::Sender<Result<Bytes, StreamCut>>,
    /// `None` when not asked for, or once the stream outgrew what is kept.
    capture: Option<Vec<u8>>,
    /// A consumer that takes no write for this long (it stopped reading) is gone.
    write_timeout: Duration,
}

impl Out {
    /// Sends one write; false when the consumer is gone, or has read nothing for
    /// `write_timeout` while the stream's buffer is full.
    async fn send(&mut self, bytes: Bytes) -> bool {
        if let Some(copy) = &mut self.capture {
            if copy.len() + bytes.len() <= crate::store::idempotency::MAX_STORED_BYTES {
                copy.extend_from_slice(&bytes);
            } else {
                self.capture = None;
            }
        }
        matches!(tokio::time::timeout(self.write_timeout, self.tx.send(Ok(bytes))).await, Ok(Ok(())))
    }
}

/// What turns the upstream's events into the consumer's: the plugin (`decode`, `finish`), or
/// the host itself for a chat stream it forwards (`tollgate:fast`; the rule is
/// `tollgate_base::openai_stream`, the one the SDK's plugins follow).
pub(super) enum Decoder {
    Plugin(PluginCall),
    /// Held with its admission: a forwarded stream counts among the calls in flight until it
    /// ends, as its plugin's would.
    Forwarded {
        chat: ChatStream,
        _admitted: Admission,
    },
}

impl Decoder {
    async fn decode(
        &mut self,
        input: wit::StreamInput,
    ) -> anyhow::Result<Result<Vec<wit::OutChunk>, wit::AdapterError>> {
        match self {
            Decoder::Plugin(pc) => pc.decode(&input).await,
            Decoder::Forwarded { chat, .. } => Ok(relay(chat, input)),
        }
    }

    async fn finish(&mut self, end: wit::StreamEnd) -> anyhow::Result<Result<wit::StreamTail, wit::AdapterError>> {
        match self {
            Decoder::Plugin(pc) => pc.finish(end).await,
            Decoder::Forwarded { chat, .. } => {
                let done = wit::SseEvent { event: None, data: "[DONE]".into(), id: None };
                let chunks = if chat.needs_done(end == wit::StreamEnd::Complete) {
                    vec![wit::OutChunk::Event(done)]
                } else {
                    Vec::new()
                };
                Ok(Ok(wit::StreamTail {
                    chunks,
                    usage: chat.usage().map(super::forward::usage_of).unwrap_or_default(),
                }))
            }
        }
    }
}

/// A forwarded stream's events for the consumer (always SSE: the host forwards chat streams).
fn relay(chat: &mut ChatStream, input: wit::StreamInput) -> Result<Vec<wit::OutChunk>, wit::AdapterError> {
    let wit::StreamInput::Events(events) = input else { return Err(fault("expected SSE".into())) };
    let mut out = Vec::with_capacity(events.len());
    for e in events {
        match chat.event(&e.data) {
            Event::Keep => out.push(wit::OutChunk::Event(e)),
            Event::Hide => {}
            Event::Fail(message) => return Err(fault(message)),
        }
    }
    Ok(out)
}

/// A forwarded stream's failure: the upstream's fault, as the SDK's adapter classes it.
fn fault(message: String) -> wit::AdapterError {
    wit::AdapterError { kind: wit::ErrorKind::UpstreamFault, message, code: None, retry_after_ms: None }
}

enum Stop {
    Complete,
    Cut(CallError),
    ClientGone,
    /// The plugin trapped: it must not be called again.
    PluginDead(CallError),
    /// The decoder rejected the stream (e.g. an error event from the upstream).
    Rejected(CallError),
}

/// The upstream body being read: the framer of what arrived and the content delivered.
struct Read {
    body: Incoming,
    framer: Framer,
    delivered: u64,
}

impl Read {
    /// After a frame of `taken` bytes: what else has arrived (without waiting), decoded and
    /// written in one plugin call and one write. How the stream stopped, if it did; a failed
    /// delivery before the body's end.
    async fn burst(&mut self, taken: usize, pc: &mut Decoder, plugin: &Plugin, out: &mut Out) -> Option<Stop> {
        let ended = take_ready(&mut self.body, &mut self.framer, taken).await;
        if let Some(input) = self.framer.take() {
            if let Err(stop) = deliver(pc, input, plugin, out, &mut self.delivered).await {
                return Some(stop);
            }
        }
        ended
    }
}

async fn pump(
    mut pc: Decoder,
    mut read: Read,
    early: Option<Stop>,
    idle: Duration,
    plugin: &Plugin,
    out: &mut Out,
) -> StreamReport {
    // One timer for the whole stream. Its deadline moves on after each delivery as a plain
    // value, and the timer is only told when the stream must wait: a later deadline is then an
    // atomic store, where a new timer per frame was an insert into the runtime's timer wheel
    // and, at low load, a wake-up of its own driver (a syscall and another turn of its loop).
    // A burst that never waits never touches it.
    let mut deadline = tokio::time::Instant::now() + idle;
    let silence = tokio::time::sleep_until(deadline);
    tokio::pin!(silence);
    let stop = match early {
        Some(stop) => stop,
        None => loop {
            let polled = std::future::poll_fn(|cx| match Pin::new(&mut read.body).poll_frame(cx) {
                Poll::Ready(frame) => Poll::Ready(Some(frame)),
                Poll::Pending => {
                    if silence.deadline() != deadline {
                        silence.as_mut().reset(deadline);
                    }
                    silence.as_mut().poll(cx).map(|()| None)
                }
            });
            let taken = match polled.await {
                None => {
                    break Stop::Cut(CallError::upstream(wit::ErrorKind::Timeout, "the upstream stream went silent"))
                }
                Some(frame) => match took(Poll::Ready(frame), &mut read.framer) {
                    Ok(taken) => taken.unwrap_or(0),
                    Err(stop) => break stop,
                },
            };
            // What the upstream has sent already goes into the same plugin call and write: a
            // burst of chunks costs one call and one write, not one each.
            if let Some(stop) = read.burst(taken, &mut pc, plugin, out).await {
                break stop;
            }
            // Silence is counted from here, as a consumer slow to take the writes is not.
            deadline = tokio::time::Instant::now() + idle;
        },
    };
    let Read { mut framer, mut delivered, .. } = read;
    let stop = match stop {
        Stop::Complete => match framer.take_last() {
            None => Stop::Complete,
            Some(input) => deliver(&mut pc, input, plugin, out, &mut delivered).await.err().unwrap_or(Stop::Complete),
        },
        other => other,
    };
    let (end, error, client_gone) = match stop {
        Stop::Complete => (wit::StreamEnd::Complete, None, false),
        Stop::Cut(e) | Stop::Rejected(e) => (wit::StreamEnd::UpstreamCut, Some(e), false),
        Stop::ClientGone => (wit::StreamEnd::ClientGone, None, true),
        Stop::PluginDead(e) => {
            return StreamReport {
                usage: wit::Usage::default(),
                delivered_events: delivered,
                error: Some(e),
                client_gone: false,
                ..Default::default()
            }
        }
    };
    match pc.finish(end).await {
        Ok(Ok(tail)) => {
            let mut error = error;
            let mut client_gone = client_gone;
            if !client_gone && !tail.chunks.is_empty() && !out.send(render(&tail.chunks)).await {
                client_gone = true;
                error = None;
            }
            if !client_gone {
                delivered += content_events(&tail.chunks);
            }
            StreamReport { usage: tail.usage, delivered_events: delivered, error, client_gone, ..Default::default() }
        }
        Ok(Err(e)) => StreamReport {
            usage: wit::Usage::default(),
            delivered_events: delivered,
            error: Some(error.unwrap_or_else(|| CallError::from_adapter(&e))),
            client_gone,
            ..Default::default()
        },
        Err(trap) => StreamReport {
            usage: wit::Usage::default(),
            delivered_events: delivered,
            error: Some(plugin_failure(plugin, "finish()", trap)),
            client_gone,
            ..Default::default()
        },
    }
}

/// Most bytes of a burst taken into one plugin call, and most frames.
const BURST_BYTES: usize = 64 << 10;
const BURST_FRAMES: usize = 64;

/// Feeds `framer` the frames `body` has ready, without waiting for the upstream, until
/// `BURST_BYTES` (from `taken`) or `BURST_FRAMES`; returns how the body ended, if it did. The
/// upstream connection's task hands frames over one at a time, so each is asked for after a
/// yield that lets it run: a paced stream pays one yield per chunk, a burst one plugin call.
async fn take_ready(body: &mut Incoming, framer: &mut Framer, mut taken: usize) -> Option<Stop> {
    for _ in 1..BURST_FRAMES {
        if taken >= BURST_BYTES {
            break;
        }
        woken_first().await;
        // Polled with a waker that does nothing: on `Pending`, the caller polls again with its
        // own before it waits, so no wake-up is lost.
        let mut cx = Context::from_waker(std::task::Waker::noop());
        match took(Pin::new(&mut *body).poll_frame(&mut cx), framer) {
            Ok(Some(n)) => taken += n,
            Ok(None) => break,
            Err(stop) => return Some(stop),
        }
    }
    None
}

/// Lets the tasks already woken run before this one goes on: the upstream connection's task,
/// woken when the body was polled, decodes the next frame it has read. The task wakes itself
/// and goes to the back of its thread's queue. `tokio::task::yield_now` would instead wait
/// for the runtime to poll its I/O driver, a syscall per frame of a burst.
async fn woken_first() {
    let mut yielded = false;
    std::future::poll_fn(|cx| {
        if yielded {
            return Poll::Ready(());
        }
        yielded = true;
        cx.waker().wake_by_ref();
        Poll::Pending
    })
    .await
}

/// A polled frame fed to `framer`: the bytes it brought (`None` when there was none yet), or
/// how the body ended.
fn took(polled: Poll<Option<Result<Frame<Bytes>, hyper::Error>>>, framer: &mut Framer) -> Result<Option<usize>, Stop> {
    match polled {
        Poll::Pending => Ok(None),
        Poll::Ready(None) => Err(Stop::Complete),
        Poll::Ready(Some(Err(_))) => Err(interrupted()),
        Poll::Ready(Some(Ok(frame))) => match frame.into_data() {
            Ok(data) => framer.feed(&data).map(|()| Some(data.len())).map_err(Stop::Cut),
            // Trailers: nothing for the consumer.
            Err(_) => Ok(Some(0)),
        },
    }
}

fn interrupted() -> Stop {
    Stop::Cut(CallError::upstream(wit::ErrorKind::UpstreamFault, "the upstream stream was interrupted"))
}

async fn deliver(
    pc: &mut Decoder,
    input: wit::StreamInput,
    plugin: &Plugin,
    out: &mut Out,
    delivered: &mut u64,
) -> Result<(), Stop> {
    match pc.decode(input).await {
        Ok(Ok(chunks)) => {
            if !chunks.is_empty() && !out.send(render(&chunks)).await {
                return Err(Stop::ClientGone);
            }
            *delivered += content_events(&chunks);
            Ok(())
        }
        Ok(Err(e)) => Err(Stop::Rejected(CallError::from_adapter(&e))),
        Err(trap) => Err(Stop::PluginDead(plugin_failure(plugin, "decode()", trap))),
    }
}

/// Splits an upstream body into what `decode` receives, as the stream step's framing says:
/// `feed` takes network chunks, `take` what they completed (one `decode` for all of them).
enum Framer {
    Sse(sse::Parser, Vec<sse::Event>),
    Ndjson(ndjson::Splitter, Vec<String>),
    Raw(Vec<u8>),
}

impl Framer {
    fn new(framing: wit::Framing) -> Framer {
        match framing {
            wit::Framing::Sse => Framer::Sse(sse::Parser::new(), Vec::new()),
            wit::Framing::Ndjson => Framer::Ndjson(ndjson::Splitter::new(), Vec::new()),
            wit::Framing::Raw => Framer::Raw(Vec::new()),
        }
    }

    /// One network chunk.
    fn feed(&mut self, data: &[u8]) -> Result<(), CallError> {
        let too_long = |what: &str| {
            CallError::upstream(
                wit::ErrorKind::UpstreamFault,
                format!("the upstream sent {what} larger than {} bytes", sse::MAX_EVENT_BYTES),
            )
        };
        match self {
            Framer::Sse(parser, events) => {
                parser.feed(data, events);
                if parser.overflowed() {
                    return Err(too_long("an event"));
                }
            }
            Framer::Ndjson(splitter, lines) => {
                splitter.feed(data, lines);
                if splitter.overflowed() {
                    return Err(too_long("a line"));
                }
            }
            Framer::Raw(bytes) => bytes.extend_from_slice(data),
        }
        Ok(())
    }

    /// The events, lines or bytes completed since the last `take`; `None` when there are none.
    fn take(&mut self) -> Option<wit::StreamInput> {
        match self {
            Framer::Sse(_, events) => {
                (!events.is_empty()).then(|| wit::StreamInput::Events(events.drain(..).map(to_wit).collect()))
            }
            Framer::Ndjson(_, lines) => (!lines.is_empty()).then(|| wit::StreamInput::Lines(std::mem::take(lines))),
            Framer::Raw(bytes) => (!bytes.is_empty()).then(|| wit::StreamInput::Bytes(std::mem::take(bytes))),
        }
    }

    /// The end of the body: what it completed.
    fn take_last(&mut self) -> Option<wit::StreamInput> {
        match self {
            Framer::Sse(parser, events) => parser.finish(events),
            Framer::Ndjson(splitter, lines) => splitter.finish(lines),
            Framer::Raw(_) => {}
        }
        self.take()
    }
}

/// The content a write delivered, in the units an interrupted stream without usage is billed
/// by: SSE events (`[DONE]` excluded), and byte chunks (NDJSON lines, audio) one each.
fn content_events(chunks: &[wit::OutChunk]) -> u64 {
    chunks
        .iter()
        .filter(|c| match c {
            wit::OutChunk::Event(e) => e.data != "[DONE]",
            wit::OutChunk::Bytes(b) => !b.is_empty(),
        })
        .count() as u64
}

fn to_wit(e: sse::Event) -> wit::SseEvent {
    wit::SseEvent { event: e.event, data: e.data, id: e.id }
}

/// The plugin's chunks as one network write.
fn render(chunks: &[wit::OutChunk]) -> Bytes {
    let mut out = Vec::new();
    for c in chunks {
        match c {
            wit::OutChunk::Event(e) => sse::write_event(&mut out, e.event.as_deref(), e.id.as_deref(), &e.data),
            wit::OutChunk::Bytes(b) => out.extend_from_slice(b),
        }
    }
    Bytes::from(out)
}
