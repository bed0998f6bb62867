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
    /// A slice of a file (archived media).
    File(FileBody),
}

impl Body for ResponseBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.get_mut() {
            ResponseBody::Full(b) => Pin::new(b).poll_frame(cx).map_err(|e| match e {}),
            ResponseBody::Stream(b) => Pin::new(b).poll_frame(cx).map_err(Into::into),
            ResponseBody::Relay(b) => Pin::new(b).poll_frame(cx).map_err(Into::into),
            ResponseBody::File(b) => match b.rx.poll_recv(cx) {
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
            ResponseBody::File(b) => b.len == 0,
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            ResponseBody::Full(b) => b.size_hint(),
            ResponseBody::Stream(_) => SizeHint::default(),
            ResponseBody::Relay(b) => b.size_hint(),
            ResponseBody::File(b) => SizeHint::with_exact(b.len),
        }
    }
}

/// `len` bytes of a file from `offset`, read by a task a few chunks ahead of the consumer
/// (the channel bounds what is buffered; the task ends when the consumer goes away).
pub struct FileBody {
    rx: tokio::sync::mpsc::Receiver<std::io::Result<Bytes>>,
    len: u64,
}

impl FileBody {
    const CHUNK: u64 = 64 << 10;

    pub fn new(mut file: tokio::fs::File, offset: u64, len: u64) -> FileBody {
        use tokio::io::{AsyncReadExt, AsyncSeekExt};
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        tokio::spawn(async move {
            if let Err(e) = file.seek(std::io::SeekFrom::Start(offset)).await {
                let _ = tx.send(Err(e)).await;
                return;
            }
            let mut left = len;
            while left > 0 {
                let mut buf = vec![0; left.min(Self::CHUNK) as usize];
                match file.read_exact(&mut buf).await {
                    Ok(_) => {}
                    Err(e) => {
                        let _ = tx.send(Err(e)).await;
                        return;
                    }
                }
                left -= buf.len() as u64;
                if tx.send(Ok(Bytes::from(buf))).await.is_err() {
                    return;
                }
            }
        });
        FileBody { rx, len }
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
