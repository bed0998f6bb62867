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
}

impl Body for ResponseBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.get_mut() {
            ResponseBody::Full(b) => Pin::new(b).poll_frame(cx).map_err(|e| match e {}),
            ResponseBody::Stream(b) => Pin::new(b).poll_frame(cx).map_err(Into::into),
            ResponseBody::Relay(b) => Pin::new(b).poll_frame(cx).map_err(Into::into),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            ResponseBody::Full(b) => b.is_end_stream(),
            ResponseBody::Stream(_) => false,
            ResponseBody::Relay(b) => b.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            ResponseBody::Full(b) => b.size_hint(),
            ResponseBody::Stream(_) => SizeHint::default(),
            ResponseBody::Relay(b) => b.size_hint(),
        }
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
