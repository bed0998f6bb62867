//! The response body type and helpers to build responses. One enum instead of a boxed trait
//! object: no allocation per response for the common full-body case.

use crate::exchange::{StreamBody, StreamCut};
use bytes::Bytes;
use http_body_util::Full;
use hyper::body::{Body, Frame, SizeHint};
use std::pin::Pin;
use std::task::{Context, Poll};
use tollgate_base::sse;

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

pub enum ResponseBody {
    Full(Full<Bytes>),
    Stream(StreamBody),
    /// An upstream body relayed as it arrives.
    Relay(tollgate_engine::exchange::upstream::UpstreamIncoming),
    /// Chunks a task of the gateway's writes (a slice of a file, an event stream).
    Channel(ChannelBody),
    /// A stream's events rewritten into another API's on their way to the consumer.
    Sse(SseMapped),
}

impl Body for ResponseBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.get_mut() {
            ResponseBody::Full(b) => Pin::new(b).poll_frame(cx).map_err(|e| match e {}),
            ResponseBody::Stream(b) => Pin::new(b).poll_frame(cx).map_err(Into::into),
            ResponseBody::Relay(b) => Pin::new(b).poll_frame(cx).map_err(Into::into),
            ResponseBody::Sse(b) => b.poll(cx).map_err(Into::into),
            ResponseBody::Channel(b) => match b.rx.poll_recv(cx) {
                Poll::Ready(Some(Ok(data))) => Poll::Ready(Some(Ok(Frame::data(data)))),
                Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(e.into()))),
                Poll::Ready(None) => Poll::Ready(None),
                Poll::Pending => Poll::Pending,
            },
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            ResponseBody::Full(b) => b.is_end_stream(),
            ResponseBody::Stream(_) | ResponseBody::Sse(_) => false,
            ResponseBody::Relay(b) => b.is_end_stream(),
            ResponseBody::Channel(b) => b.len == Some(0),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            ResponseBody::Full(b) => b.size_hint(),
            ResponseBody::Stream(_) | ResponseBody::Sse(_) => SizeHint::default(),
            ResponseBody::Relay(b) => b.size_hint(),
            ResponseBody::Channel(b) => b.len.map_or_else(SizeHint::default, SizeHint::with_exact),
        }
    }
}

/// What rewrites a stream's events: each event the stream completes, then its clean end.
pub trait SseMap: Send {
    fn event(&mut self, event: sse::Event, out: &mut Vec<u8>);
    /// The stream ended cleanly (never called after a cut: the consumer sees a broken
    /// transfer, as for any stream).
    fn end(&mut self, out: &mut Vec<u8>);
}

/// A stream whose SSE events pass through an [`SseMap`] one network chunk at a time; nothing
/// is held but an incomplete event (bounded by the parser).
pub struct SseMapped {
    inner: StreamBody,
    parser: sse::Parser,
    events: Vec<sse::Event>,
    map: Box<dyn SseMap>,
    ended: bool,
}

impl SseMapped {
    pub fn new(inner: StreamBody, map: Box<dyn SseMap>) -> SseMapped {
        SseMapped { inner, parser: sse::Parser::new(), events: Vec::new(), map, ended: false }
    }

    fn poll(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, StreamCut>>> {
        loop {
            if self.ended {
                return Poll::Ready(None);
            }
            let mut out = Vec::new();
            match Pin::new(&mut self.inner).poll_frame(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Some(Err(cut))) => {
                    // Never a clean end after a cut, however the body is polled again.
                    self.ended = true;
                    return Poll::Ready(Some(Err(cut)));
                }
                Poll::Ready(Some(Ok(frame))) => {
                    let Ok(data) = frame.into_data() else { continue };
                    self.parser.feed(&data, &mut self.events);
                    if self.parser.overflowed() {
                        self.ended = true;
                        return Poll::Ready(Some(Err(StreamCut)));
                    }
                }
                Poll::Ready(None) => {
                    self.ended = true;
                    self.parser.finish(&mut self.events);
                }
            }
            for event in self.events.drain(..) {
                self.map.event(event, &mut out);
            }
            if self.ended {
                self.map.end(&mut out);
            }
            if !out.is_empty() {
                return Poll::Ready(Some(Ok(Frame::data(Bytes::from(out)))));
            }
        }
    }
}

/// A body written by a task of the gateway's through a small channel (so what is buffered is
/// bounded, and the task learns the consumer left when its sends fail).
pub struct ChannelBody {
    rx: tokio::sync::mpsc::Receiver<std::io::Result<Bytes>>,
    /// The exact length, when known.
    len: Option<u64>,
}

impl ChannelBody {
    /// A body of unknown length and the sender that writes it.
    pub fn new() -> (tokio::sync::mpsc::Sender<std::io::Result<Bytes>>, ChannelBody) {
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        (tx, ChannelBody { rx, len: None })
    }

    /// A body of exactly `len` bytes read from `bytes` a few chunks ahead of the consumer
    /// (an archived file: its reads stop when the consumer leaves).
    pub fn stream(mut bytes: tollgate_store::archive::ByteStream, len: u64) -> ChannelBody {
        use futures_util::StreamExt;
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        tokio::spawn(async move {
            while let Some(chunk) = bytes.next().await {
                let failed = chunk.is_err();
                if tx.send(chunk).await.is_err() || failed {
                    return;
                }
            }
        });
        ChannelBody { rx, len: Some(len) }
    }
}

pub type Response = http::Response<ResponseBody>;

pub fn full(status: u16, content_type: &str, body: impl Into<Bytes>) -> Response {
    http::Response::builder()
        .status(status)
        .header(http::header::CONTENT_TYPE, content_type)
        .body(ResponseBody::Full(Full::new(body.into())))
        .expect("static response parts are valid")
}

pub fn json(status: u16, value: &serde_json::Value) -> Response {
    full(status, "application/json", value.to_string())
}
