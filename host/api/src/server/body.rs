//! The response body type and helpers to build responses. One enum instead of a boxed trait
//! object: no allocation per response for the common full-body case.

use crate::exchange::StreamBody;
use bytes::Bytes;
use http_body_util::Full;
use hyper::body::{Body, Frame, Incoming, SizeHint};
use std::pin::Pin;
use std::task::{Context, Poll};

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

pub enum ResponseBody {
    Full(Full<Bytes>),
    Stream(StreamBody),
    /// An upstream body relayed as it arrives.
    Relay(Incoming),
    /// Chunks a task of the gateway's writes (a slice of a file, an event stream).
    Channel(ChannelBody),
}

impl Body for ResponseBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.get_mut() {
            ResponseBody::Full(b) => Pin::new(b).poll_frame(cx).map_err(|e| match e {}),
            ResponseBody::Stream(b) => Pin::new(b).poll_frame(cx).map_err(Into::into),
            ResponseBody::Relay(b) => Pin::new(b).poll_frame(cx).map_err(Into::into),
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
            ResponseBody::Stream(_) => false,
            ResponseBody::Relay(b) => b.is_end_stream(),
            ResponseBody::Channel(b) => b.len == Some(0),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            ResponseBody::Full(b) => b.size_hint(),
            ResponseBody::Stream(_) => SizeHint::default(),
            ResponseBody::Relay(b) => b.size_hint(),
            ResponseBody::Channel(b) => b.len.map_or_else(SizeHint::default, SizeHint::with_exact),
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
