//! Traces of calls, exported as OpenTelemetry spans over OTLP/HTTP (`otlp`); off unless the
//! operator names a receiver (`[tracing] otlp_endpoint`).
//!
//! A sampled request gets a `Trace` that is *current* for the task serving it (and for its
//! stream's task); code on the call path opens spans with `span(name)` and never passes the
//! trace along. A call's spans: `auth`, `reserve`, each plugin step (`plugin.first`,
//! `plugin.next`, ...), each `upstream` request, the `stream`, `settle`; all children of the
//! request's root span (itself the child of the caller's `traceparent`, when it sent one).
//!
//! Invariants:
//! - off (or not sampled), a span site costs one task-local read and allocates nothing;
//! - a trace is handed to the exporter once, when its last holder drops it (the request's
//!   task, or the stream task that outlives it), and never blocks a call: the queue is bounded
//!   and a full queue drops the trace (counted in `tollgate_traces_dropped_total`);
//! - a trace is bounded (`MAX_SPANS` spans, `MAX_ATTRS` attributes a span);
//! - spans carry no secret: paths without their query, key fingerprints, ids; never a header,
//!   a body or a key.

pub mod otlp;

use crate::telemetry::METRICS;
use futures_util::future::Either;
use std::future::Future;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

/// The most spans one trace keeps (a call that loops through failovers stays bounded).
const MAX_SPANS: usize = 64;
/// The most attributes one span keeps.
const MAX_ATTRS: usize = 16;

/// An attribute's value.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Str(String),
    Int(i64),
    Bool(bool),
}

impl From<&str> for Value {
    fn from(s: &str) -> Value {
        Value::Str(s.to_string())
    }
}
impl From<String> for Value {
    fn from(s: String) -> Value {
        Value::Str(s)
    }
}
impl From<i64> for Value {
    fn from(n: i64) -> Value {
        Value::Int(n)
    }
}
impl From<u64> for Value {
    fn from(n: u64) -> Value {
        Value::Int(i64::try_from(n).unwrap_or(i64::MAX))
    }
}
impl From<u16> for Value {
    fn from(n: u16) -> Value {
        Value::Int(i64::from(n))
    }
}
impl From<bool> for Value {
    fn from(b: bool) -> Value {
        Value::Bool(b)
    }
}

pub type Attrs = Vec<(&'static str, Value)>;

/// OpenTelemetry's span kinds, as far as the gateway uses them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Internal,
    Server,
    Client,
}

/// One finished span.
#[derive(Debug, Clone)]
pub struct SpanData {
    pub span_id: [u8; 8],
    /// `None`: a root span (no caller's `traceparent`).
    pub parent_id: Option<[u8; 8]>,
    pub name: String,
    pub kind: Kind,
    pub start_unix_nanos: u64,
    pub end_unix_nanos: u64,
    pub attrs: Attrs,
    /// The error the span ended with (OpenTelemetry's status `ERROR` with this message).
    pub error: Option<String>,
}

/// A finished trace: its spans, the root first.
#[derive(Debug, Clone)]
pub struct Finished {
    pub trace_id: [u8; 16],
    pub spans: Vec<SpanData>,
}

/// Where finished traces go, and which requests are traced.
#[derive(Debug, Clone)]
pub struct Tracer {
    queue: tokio::sync::mpsc::Sender<Finished>,
    /// Requests traced, out of `u64::MAX` (a ratio without floating point on the hot path).
    threshold: u64,
}

impl Tracer {
    /// A tracer sending to `queue` and sampling `ratio` (0 to 1) of the requests that come
    /// without a sampled `traceparent` (a caller's sampled trace is always followed).
    pub fn new(queue: tokio::sync::mpsc::Sender<Finished>, ratio: f64) -> Tracer {
        let threshold = if ratio >= 1.0 { u64::MAX } else { (ratio.max(0.0) * u64::MAX as f64) as u64 };
        Tracer { queue, threshold }
    }

    /// A trace for one request, if it is sampled: `name` is its root span's (`POST
    /// /v1/chat/completions`), `traceparent` the caller's W3C header, if any.
    pub fn start(&self, name: String, traceparent: Option<&str>, attrs: Attrs) -> Option<Arc<Trace>> {
        let parent = traceparent.and_then(parse_traceparent);
        let sampled = match parent {
            Some((_, _, sampled)) => sampled,
            None => self.threshold == u64::MAX || rand::random::<u64>() < self.threshold,
        };
        if !sampled {
            return None;
        }
        let (trace_id, parent_id) = match parent {
            Some((t, p, _)) => (t, Some(p)),
            None => (nonzero_id(), None),
        };
        Some(Arc::new(Trace {
            trace_id,
            root: nonzero_id(),
            parent_id,
            name,
            started: Instant::now(),
            start_unix_nanos: unix_nanos(),
            spans: Mutex::new(Recorded { spans: Vec::new(), attrs, error: None }),
            queue: self.queue.clone(),
        }))
    }
}

/// A request's trace, while it is served.
pub struct Trace {
    trace_id: [u8; 16],
    root: [u8; 8],
    parent_id: Option<[u8; 8]>,
    name: String,
    started: Instant,
    start_unix_nanos: u64,
    spans: Mutex<Recorded>,
    queue: tokio::sync::mpsc::Sender<Finished>,
}

struct Recorded {
    spans: Vec<SpanData>,
    /// The root span's.
    attrs: Attrs,
    error: Option<String>,
}

impl Trace {
    /// Sets an attribute of the root span (a later value of the same key replaces it).
    pub fn annotate(&self, key: &'static str, value: impl Into<Value>) {
        let mut r = self.spans.lock().unwrap_or_else(|p| p.into_inner());
        set_attr(&mut r.attrs, key, value.into());
    }

    /// Marks the root span failed.
    pub fn fail(&self, message: impl Into<String>) {
        self.spans.lock().unwrap_or_else(|p| p.into_inner()).error = Some(message.into());
    }

    fn at(&self, instant: Instant) -> u64 {
        let offset = instant.saturating_duration_since(self.started).as_nanos();
        self.start_unix_nanos.saturating_add(u64::try_from(offset).unwrap_or(u64::MAX))
    }
}

impl Drop for Trace {
    fn drop(&mut self) {
        let end = self.at(Instant::now());
        let recorded = std::mem::replace(
            self.spans.get_mut().unwrap_or_else(|p| p.into_inner()),
            Recorded { spans: Vec::new(), attrs: Vec::new(), error: None },
        );
        let mut spans = Vec::with_capacity(recorded.spans.len() + 1);
        spans.push(SpanData {
            span_id: self.root,
            parent_id: self.parent_id,
            name: std::mem::take(&mut self.name),
            kind: Kind::Server,
            start_unix_nanos: self.start_unix_nanos,
            end_unix_nanos: end,
            attrs: recorded.attrs,
            error: recorded.error,
        });
        spans.extend(recorded.spans);
        if self.queue.try_send(Finished { trace_id: self.trace_id, spans }).is_err() {
            METRICS.traces_dropped.fetch_add(1, Relaxed);
        }
    }
}

tokio::task_local! {
    static CURRENT: Arc<Trace>;
}

/// Runs `f` with `trace` current (as it is: `None` runs `f` untraced). Not an `async fn`:
/// that would hold `f` twice (the argument, and the value it awaits) and copy it from one to
/// the other when first polled, and a call's future is kilobytes.
pub fn scope<F: Future>(trace: Option<Arc<Trace>>, f: F) -> impl Future<Output = F::Output> {
    match trace {
        Some(t) => Either::Left(CURRENT.scope(t, f)),
        None => Either::Right(f),
    }
}

/// The current task's trace (to carry into a task it spawns, with `scope`).
pub fn current() -> Option<Arc<Trace>> {
    CURRENT.try_with(Arc::clone).ok()
}

/// Sets an attribute of the current trace's root span, if any.
pub fn annotate(key: &'static str, value: impl Into<Value>) {
    let _ = CURRENT.try_with(|t| t.annotate(key, value));
}

/// Opens a span of the current trace, ended when the returned guard drops; a no-op when the
/// task is not traced.
pub fn span(name: &'static str) -> Span {
    Span::open(name, Kind::Internal)
}

/// Opens a client span (a request the gateway sends).
pub fn client_span(name: &'static str) -> Span {
    Span::open(name, Kind::Client)
}

/// An open span: attributes and an error may be added until it drops.
pub struct Span(Option<Box<Open>>);

struct Open {
    trace: Arc<Trace>,
    name: &'static str,
    kind: Kind,
    started: Instant,
    attrs: Attrs,
    error: Option<String>,
}

impl Span {
    fn open(name: &'static str, kind: Kind) -> Span {
        Span(
            CURRENT
                .try_with(|t| {
                    Box::new(Open {
                        trace: Arc::clone(t),
                        name,
                        kind,
                        started: Instant::now(),
                        attrs: Vec::new(),
                        error: None,
                    })
                })
                .ok(),
        )
    }

    /// Whether the span records (to skip building an attribute's value when it does not).
    pub fn on(&self) -> bool {
        self.0.is_some()
    }

    pub fn attr(&mut self, key: &'static str, value: impl Into<Value>) {
        if let Some(o) = &mut self.0 {
            set_attr(&mut o.attrs, key, value.into());
        }
    }

    pub fn fail(&mut self, message: impl Into<String>) {
        if let Some(o) = &mut self.0 {
            o.error = Some(message.into());
        }
    }
}

impl Drop for Span {
    fn drop(&mut self) {
        let Some(o) = self.0.take() else { return };
        let (start, end) = (o.trace.at(o.started), o.trace.at(Instant::now()));
        let mut r = o.trace.spans.lock().unwrap_or_else(|p| p.into_inner());
        if r.spans.len() >= MAX_SPANS {
            return;
        }
        r.spans.push(SpanData {
            span_id: nonzero_id(),
            parent_id: Some(o.trace.root),
            name: o.name.to_string(),
            kind: o.kind,
            start_unix_nanos: start,
            end_unix_nanos: end,
            attrs: o.attrs,
            error: o.error,
        });
    }
}

fn set_attr(attrs: &mut Attrs, key: &'static str, value: Value) {
    if let Some(slot) = attrs.iter_mut().find(|(k, _)| *k == key) {
        slot.1 = value;
    } else if attrs.len() < MAX_ATTRS {
        attrs.push((key, value));
    }
}

fn unix_nanos() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

/// A random id that is not all zeros (W3C and OTLP call an all-zero id invalid).
fn nonzero_id<const N: usize>() -> [u8; N] {
    loop {
        let id: [u8; N] = rand::random();
        if id.iter().any(|&b| b != 0) {
            return id;
        }
    }
}

/// A W3C `traceparent` (`00-<trace id>-<parent id>-<flags>`): the trace id, the caller's span
/// id and whether the caller sampled it. Anything malformed (or an all-zero id) is ignored,
/// as the standard says, and the request starts a trace of its own.
fn parse_traceparent(v: &str) -> Option<([u8; 16], [u8; 8], bool)> {
    let mut parts = v.trim().split('-');
    let (version, trace, parent, flags) = (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    if version.len() != 2 || version == "ff" || (version == "00" && parts.next().is_some()) {
        return None;
    }
    let lower_hex = |s: &str| s.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
    if trace.len() != 32
        || parent.len() != 16
        || flags.len() != 2
        || ![trace, parent, flags].iter().all(|s| lower_hex(s))
    {
        return None;
    }
    let mut t = [0u8; 16];
    let mut p = [0u8; 8];
    hex::decode_to_slice(trace, &mut t).ok()?;
    hex::decode_to_slice(parent, &mut p).ok()?;
    let flags = u8::from_str_radix(flags, 16).ok()?;
    if t == [0; 16] || p == [0; 8] {
        return None;
    }
    Some((t, p, flags & 1 == 1))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tracer(ratio: f64) -> (Tracer, tokio::sync::mpsc::Receiver<Finished>) {
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        (Tracer::new(tx, ratio), rx)
    }

    #[test]
    fn a_malformed_traceparent_is_ignored_and_a_good_one_is_followed() {
        let good = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let (t, p, sampled) = parse_traceparent(good).unwrap();
        assert_eq!(hex::encode(t), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(hex::encode(p), "00f067aa0ba902b7");
        assert!(sampled);
        assert!(!parse_traceparent("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00").unwrap().2);
        for bad in [
            "",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
        ] {
            assert!(parse_traceparent(bad).is_none(), "{bad}");
        }
    }

    #[tokio::test]
    async fn spans_of_the_current_task_reach_the_queue_once_with_their_root() {
        let (tracer, mut rx) = tracer(1.0);
        let caller = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let trace = tracer.start(
            "POST /v1/chat/completions".into(),
            Some(caller),
            vec![("http.request.method", "POST".into())],
        );
        let trace = trace.expect("a caller's sampled trace is followed");
        let carried = Arc::clone(&trace);
        scope(Some(trace), async {
            let mut s = span("reserve");
            s.attr("tollgate.reserved_micros", 120u64);
            drop(s);
            annotate("http.response.status_code", 200u16);
            // A spawned task records into the same trace when it is carried there.
            let t = current();
            tokio::spawn(scope(t, async {
                let mut s = client_span("upstream");
                s.fail("upstream_timeout");
            }))
            .await
            .unwrap();
        })
        .await;
        assert!(rx.try_recv().is_err(), "a holder is left: not finished yet");
        drop(carried);
        let done = rx.try_recv().expect("finished when the last holder dropped");
        assert!(rx.try_recv().is_err(), "exactly once");
        assert_eq!(hex::encode(done.trace_id), "4bf92f3577b34da6a3ce929d0e0e4736");
        let root = &done.spans[0];
        assert_eq!((root.name.as_str(), root.kind), ("POST /v1/chat/completions", Kind::Server));
        assert_eq!(root.parent_id.map(hex::encode).as_deref(), Some("00f067aa0ba902b7"));
        assert!(root.attrs.contains(&("http.response.status_code", Value::Int(200))));
        let names: Vec<_> =
            done.spans[1..].iter().map(|s| (s.name.as_str(), s.parent_id == Some(root.span_id))).collect();
        assert_eq!(names, [("reserve", true), ("upstream", true)]);
        assert_eq!(done.spans[2].error.as_deref(), Some("upstream_timeout"));
        assert!(done.spans.iter().all(|s| s.start_unix_nanos <= s.end_unix_nanos && s.start_unix_nanos > 0));
    }

    #[tokio::test]
    async fn untraced_tasks_record_nothing_and_unsampled_requests_get_no_trace() {
        let s = span("reserve");
        assert!(!s.on());
        let (tracer, _rx) = tracer(0.0);
        assert!(tracer.start("GET /".into(), None, Vec::new()).is_none());
        let unsampled = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00";
        assert!(tracer.start("GET /".into(), Some(unsampled), Vec::new()).is_none());
    }

    #[tokio::test]
    async fn a_full_queue_drops_the_trace_and_counts_it() {
        let (tx, _rx) = tokio::sync::mpsc::channel(1);
        let tracer = Tracer::new(tx, 1.0);
        let before = METRICS.traces_dropped.load(Relaxed);
        for _ in 0..3 {
            drop(tracer.start("GET /".into(), None, Vec::new()));
        }
        assert!(METRICS.traces_dropped.load(Relaxed) >= before + 2);
    }

    #[tokio::test]
    async fn a_trace_keeps_at_most_its_bound_of_spans() {
        let (tracer, mut rx) = tracer(1.0);
        scope(tracer.start("GET /".into(), None, Vec::new()), async {
            for _ in 0..MAX_SPANS + 10 {
                let mut s = span("plugin.next");
                for i in 0..MAX_ATTRS + 4 {
                    s.attr(
                        [
                            "a", "b", "c", "d", "e", "f", "g", "h", "i", "j", "k", "l", "m", "n", "o", "p", "q", "r",
                            "s", "t",
                        ][i],
                        1i64,
                    );
                }
            }
        })
        .await;
        let done = rx.try_recv().unwrap();
        assert_eq!(done.spans.len(), MAX_SPANS + 1);
        assert!(done.spans[1..].iter().all(|s| s.attrs.len() == MAX_ATTRS));
    }
}
