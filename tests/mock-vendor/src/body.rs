//! The response body: either one preserialised buffer or a paced sequence of chunks, each
//! emitted as its own frame (optionally ending in an error so hyper aborts the connection).

use bytes::Bytes;
use hyper::body::{Body, Frame, SizeHint};
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use std::time::Duration;
use tokio::time::Sleep;

/// How long a cut stream waits before failing, so hyper flushes the chunks sent so far.
const CUT_GRACE: Duration = Duration::from_millis(20);

pub enum MockBody {
    Full(Option<Bytes>),
    Chunks(Box<Chunks>),
}

impl MockBody {
    pub fn full(b: impl Into<Bytes>) -> Self {
        MockBody::Full(Some(b.into()))
    }

    pub fn empty() -> Self {
        MockBody::Full(None)
    }

    /// `chunks` go out one frame each, `delay` apart (no delay before the first); with `cut`
    /// the body then fails instead of ending.
    pub fn chunks(chunks: Vec<Bytes>, delay: Duration, cut: bool) -> Self {
        MockBody::Chunks(Box::new(Chunks { chunks: chunks.into_iter(), delay, sent_any: false, cut, sleep: None }))
    }
}

pub struct Chunks {
    chunks: std::vec::IntoIter<Bytes>,
    delay: Duration,
    sent_any: bool,
    cut: bool,
    /// A running pause; when it elapses the next chunk (or the cut) goes out.
    sleep: Option<Pin<Box<Sleep>>>,
}

impl Chunks {
    fn poll_next(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        loop {
            if let Some(s) = self.sleep.as_mut() {
                ready!(s.as_mut().poll(cx));
                self.sleep = None;
                return Poll::Ready(self.emit());
            }
            let wait = if self.chunks.len() > 0 {
                if !self.sent_any || self.delay.is_zero() {
                    return Poll::Ready(self.emit());
                }
                self.delay
            } else if self.cut {
                self.delay.max(CUT_GRACE)
            } else {
                return Poll::Ready(None);
            };
            self.sleep = Some(Box::pin(tokio::time::sleep(wait)));
        }
    }

    /// The next chunk, the cut error, or the end.
    fn emit(&mut self) -> Option<Result<Frame<Bytes>, io::Error>> {
        match self.chunks.next() {
            Some(c) => {
                self.sent_any = true;
                Some(Ok(Frame::data(c)))
            }
            None if self.cut => {
                self.cut = false;
                Some(Err(io::Error::new(io::ErrorKind::ConnectionAborted, "mock: stream cut")))
            }
            None => None,
        }
    }
}

impl Body for MockBody {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        match self.get_mut() {
            MockBody::Full(b) => Poll::Ready(b.take().map(|b| Ok(Frame::data(b)))),
            MockBody::Chunks(c) => c.poll_next(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        matches!(self, MockBody::Full(None))
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            MockBody::Full(Some(b)) => SizeHint::with_exact(b.len() as u64),
            MockBody::Full(None) => SizeHint::with_exact(0),
            MockBody::Chunks(_) => SizeHint::default(),
        }
    }
}
