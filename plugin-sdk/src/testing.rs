//! A native test harness: drives a plugin's [`Exchange`] through its steps the way the host
//! does, with a closure standing in for the upstream. No wasm, no sockets: plain `cargo test`.
//!
//! ```ignore
//! let run = Harness::<MyPlugin>::new(testing::call("chat", "gpt-4o-mini", r#"{"messages":[]}"#))
//!     .run(|req| testing::response(200, r#"{"usage":{"prompt_tokens":3}}"#));
//! assert!(matches!(run.outcome, Outcome::Reply(_)));
//! ```

use crate::{ndjson, sse};
use crate::{
    AdapterError, Archived, Body, Call, CallContext, Exchange, Framing, Media, OutChunk, Plugin, Reply, SocketRequest,
    SseEvent, Step, StreamEnd, StreamInput, StreamTail, TaskState, TaskSubmitted, UpstreamRequest, UpstreamResponse,
};

/// How a call ended.
#[derive(Debug)]
pub enum Outcome {
    Reply(Reply),
    /// A stream: every chunk the consumer would have received, then the tail.
    Stream {
        chunks: Vec<OutChunk>,
        tail: StreamTail,
    },
    /// The stream's decoder failed after `chunks` had been delivered.
    StreamFailed {
        chunks: Vec<OutChunk>,
        error: AdapterError,
    },
    Relay(UpstreamRequest),
    /// A WebSocket session was asked for (drive it with `Exchange::frame`).
    Socket(SocketRequest),
    Submitted(TaskSubmitted),
    Task(TaskState),
    Failed(AdapterError),
}

/// One driven call: the outcome and every request the plugin asked the host to send.
pub struct Run {
    pub outcome: Outcome,
    pub requests: Vec<UpstreamRequest>,
}

pub struct Harness<P: Plugin> {
    call: Call,
    /// Stream bodies are fed in pieces of this many bytes, to exercise chunk boundaries.
    piece: usize,
    max_steps: usize,
    plugin: std::marker::PhantomData<P>,
}

impl<P: Plugin> Harness<P> {
    pub fn new(call: Call) -> Self {
        Harness { call, piece: 64, max_steps: 16, plugin: std::marker::PhantomData }
    }

    /// Feed streamed bodies in pieces of `n` bytes (default 64).
    pub fn piece_size(mut self, n: usize) -> Self {
        self.piece = n.max(1);
        self
    }

    /// Drive the call to its end; `upstream` answers every request the plugin sends.
    pub fn run(self, mut upstream: impl FnMut(&UpstreamRequest) -> UpstreamResponse) -> Run {
        let mut ex = P::Exchange::new(self.call);
        let mut requests = Vec::new();
        let mut step = ex.first();
        for _ in 0..self.max_steps {
            step = match step {
                Step::Send(req) => {
                    let resp = upstream(&req);
                    requests.push(req);
                    ex.next(resp)
                }
                Step::Stream(s) => {
                    let resp = upstream(&s.request);
                    requests.push(s.request);
                    if !(200..300).contains(&resp.status) {
                        ex.next(resp)
                    } else {
                        let outcome = drive_stream(&mut ex, s.framing, &resp.body, self.piece);
                        return Run { outcome, requests };
                    }
                }
                Step::Relay(r) => return Run { outcome: Outcome::Relay(r), requests },
                Step::Reply(r) => return Run { outcome: Outcome::Reply(r), requests },
                Step::Fetch(req) => {
                    let resp = upstream(&req);
                    requests.push(req);
                    ex.next(resp)
                }
                Step::Archive(media) => {
                    let stored = media.iter().map(archived).collect();
                    ex.archived(stored)
                }
                Step::Socket(s) => return Run { outcome: Outcome::Socket(s), requests },
                Step::Submitted(t) => return Run { outcome: Outcome::Submitted(t), requests },
                Step::Task(t) => return Run { outcome: Outcome::Task(t), requests },
                Step::Fail(e) => return Run { outcome: Outcome::Failed(e), requests },
            };
        }
        panic!("the plugin took more than {} steps", self.max_steps);
    }
}

fn drive_stream<E: Exchange>(ex: &mut E, framing: Framing, body: &[u8], piece: usize) -> Outcome {
    let mut parser = sse::Parser::new();
    let mut splitter = ndjson::Splitter::new();
    let mut lines = Vec::new();
    let mut chunks = Vec::new();
    let mut events = Vec::new();
    let feed = |ex: &mut E, input: StreamInput, chunks: &mut Vec<OutChunk>| -> Result<(), AdapterError> {
        chunks.extend(ex.decode(input)?);
        Ok(())
    };
    for part in body.chunks(piece) {
        let input = match framing {
            Framing::Sse => {
                parser.feed(part, &mut events);
                if events.is_empty() {
                    continue;
                }
                StreamInput::Events(events.drain(..).map(to_wit).collect())
            }
            Framing::Ndjson => {
                splitter.feed(part, &mut lines);
                if lines.is_empty() {
                    continue;
                }
                StreamInput::Lines(std::mem::take(&mut lines))
            }
            Framing::Raw => StreamInput::Bytes(part.to_vec()),
        };
        if let Err(error) = feed(ex, input, &mut chunks) {
            return Outcome::StreamFailed { chunks, error };
        }
    }
    if matches!(framing, Framing::Ndjson) {
        splitter.finish(&mut lines);
        if !lines.is_empty() {
            if let Err(error) = feed(ex, StreamInput::Lines(std::mem::take(&mut lines)), &mut chunks) {
                return Outcome::StreamFailed { chunks, error };
            }
        }
    }
    if matches!(framing, Framing::Sse) {
        parser.finish(&mut events);
        if !events.is_empty() {
            if let Err(error) = feed(ex, StreamInput::Events(events.drain(..).map(to_wit).collect()), &mut chunks) {
                return Outcome::StreamFailed { chunks, error };
            }
        }
    }
    match ex.finish(StreamEnd::Complete) {
        Ok(tail) => Outcome::Stream { chunks, tail },
        Err(error) => Outcome::StreamFailed { chunks, error },
    }
}

fn to_wit(e: sse::Event) -> SseEvent {
    SseEvent { event: e.event, data: e.data, id: e.id }
}

/// What the harness answers for an `Archive` step: each medium stored under a gateway URL.
fn archived(m: &Media) -> Archived {
    Archived {
        source: m.url.clone(),
        url: format!("/v1/archive/{}", m.url.rsplit('/').next().unwrap_or_default()),
        content_type: m.content_type.clone().unwrap_or_else(|| "application/octet-stream".into()),
        size: 0,
        sha256: String::new(),
    }
}

/// A call with a JSON body, as the host builds it for OpenAI-surface ops (request id
/// `req-test`, first attempt, base URL `https://vendor.test`).
pub fn call(op: &str, model: &str, json: &str) -> Call {
    Call {
        op: op.into(),
        context: CallContext {
            request_id: "req-test".into(),
            attempt: 1,
            path: String::new(),
            path_params: Vec::new(),
            base_url: "https://vendor.test".into(),
        },
        model: model.into(),
        upstream_model: model.into(),
        body: Body::Text(json.into()),
        query: String::new(),
        headers: Vec::new(),
        credential: Vec::new(),
        config: "{}".into(),
        task: None,
        keep_speech: false,
        owned: Vec::new(),
    }
}

/// An upstream response with a body.
pub fn response(status: u16, body: impl Into<Vec<u8>>) -> UpstreamResponse {
    UpstreamResponse { status, headers: Vec::new(), body: body.into() }
}

/// The data of every SSE event among `chunks`, in order.
pub fn event_data(chunks: &[OutChunk]) -> Vec<String> {
    chunks
        .iter()
        .filter_map(|c| match c {
            OutChunk::Event(e) => Some(e.data.clone()),
            OutChunk::Bytes(_) => None,
        })
        .collect()
}

/// The text of a request body (panics on a body the host holds).
pub fn body_text(req: &UpstreamRequest) -> String {
    String::from_utf8(req.body.as_bytes().expect("plugin-held body").to_vec()).expect("utf-8 body")
}

/// Fixes `now_ms()` for this thread's tests (`None`: the real clock again).
pub fn fix_clock(now_ms: Option<u64>) {
    crate::clock::FIXED_NOW_MS.with(|f| *f.borrow_mut() = now_ms);
}

/// Fixes `nonce()` for this thread's tests (`None`: real randomness again).
pub fn fix_nonce(nonce: Option<&str>) {
    crate::clock::FIXED_NONCE.with(|f| *f.borrow_mut() = nonce.map(str::to_string));
}

#[cfg(test)]
mod clock_tests {
    #[test]
    fn the_clock_and_nonces_are_real_unless_a_test_fixes_them() {
        let now = crate::now_ms();
        assert!(now > 1_700_000_000_000, "a real wall clock: {now}");
        let (a, b) = (crate::nonce(), crate::nonce());
        assert_eq!(a.len(), 32);
        assert_ne!(a, b, "fresh randomness each time");
        super::fix_clock(Some(1_234));
        super::fix_nonce(Some("00ff"));
        assert_eq!((crate::now_ms(), crate::nonce().as_str()), (1_234, "00ff"));
        super::fix_clock(None);
        super::fix_nonce(None);
        assert!(crate::now_ms() >= now);
    }
}
