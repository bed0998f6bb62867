//! A worker's HTTP/2 connections to upstreams (the channels with `http2 = true`).
//!
//! Calls to one origin share a connection up to the channel's `http2_max_streams` calls in
//! flight; past that the worker opens another connection to it, rather than let calls wait
//! for a stream while the vendor's server holds the rest (HTTP/2 servers commonly allow 100 to
//! 256 streams on a connection). A call holds its stream from its request to the end of its
//! answer's body ([`Held`], carried by its `UpstreamIncoming`), so a stream relayed for minutes
//! counts for minutes.
//!
//! Invariants:
//! - a connection carries at most `max_streams` calls, unless the origin has
//!   [`MAX_CONNECTIONS`] open, all full: then the least busy takes the call (the vendor's
//!   server queues or refuses it);
//! - a connection is dropped from the pool once closed (by the vendor, or after a failed
//!   connect) and once idle for `IDLE`, when its origin is next used or by the pool's sweep
//!   ([`super::sweep`]), whichever comes first; its driver task ends when it closes; an origin
//!   left with no connection is forgotten by the sweep;
//! - a request is sent at most twice, the second time on another connection, and only when
//!   the first did not reach the vendor: its connection closed before sending it, or its
//!   stream is past the last one the server's GOAWAY named (RFC 9113 §8.7: not processed;
//!   servers send GOAWAY routinely, after a number of requests or on a graceful restart). A
//!   connection whose server sent GOAWAY takes no new call;
//! - a request that still did not reach the vendor (a second GOAWAY, or the vendor refused its
//!   stream with `REFUSED_STREAM`, or its connection's server answered in HTTP/1 and cannot
//!   have read HTTP/2) fails as not sent: the engine tries another key or answers without a
//!   charge. Any other failure after sending may have reached the vendor.

use super::sweep::{Sweep, Sweeper};
use super::upstream::{Failure, UpstreamBody, UpstreamIncoming};
use hyper::client::conn::http2::SendRequest;
use hyper_util::rt::TokioExecutor;
use std::collections::HashMap;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tollgate_base::boxed;
use tower_service::Service;

type Connector = hyper_rustls::HttpsConnector<hyper_util::client::legacy::connect::HttpConnector>;

/// The most connections a worker opens to one origin.
pub const MAX_CONNECTIONS: usize = 64;
/// A connection with no call for this long is closed.
const IDLE: Duration = Duration::from_secs(90);

/// An origin (`scheme://host:port`) and the most streams a connection to it carries.
type Origin = (String, usize);

/// One worker's HTTP/2 connections, by origin and stream limit.
pub struct Pool {
    connector: Connector,
    origins: Mutex<HashMap<Origin, Vec<Arc<Conn>>>>,
    /// Started by the first call.
    sweeper: Sweeper,
    /// `IDLE`, shorter in tests.
    idle: Duration,
}

struct Conn {
    /// Set once connected; a connection that failed to open is closed.
    send: tokio::sync::OnceCell<SendRequest<UpstreamBody>>,
    /// Set once the server's first bytes were an HTTP/1 status line (`Preface`).
    answered_http1: Arc<AtomicBool>,
    /// Set once the connection failed to open or its server sent GOAWAY: no new call picks it.
    retired: AtomicBool,
    streams: AtomicUsize,
    idle_since: Mutex<Instant>,
}

impl Conn {
    fn closed(&self) -> bool {
        self.retired.load(Ordering::Acquire) || self.send.get().is_some_and(SendRequest::is_closed)
    }

    /// Whether the pool keeps it: open, and carrying a call or idle less than `idle`.
    fn kept(&self, now: Instant, idle: Duration) -> bool {
        !self.closed()
            && (self.streams.load(Ordering::Acquire) > 0
                || now.duration_since(*self.idle_since.lock().expect("never poisoned")) < idle)
    }
}

impl Pool {
    pub fn new(connector: Connector) -> Pool {
        Pool { connector, origins: Mutex::default(), sweeper: Sweeper::new(super::sweep::EVERY), idle: IDLE }
    }

    /// Sends `req` on a connection to its origin with fewer than `max_streams` (at least 1)
    /// calls in flight, opening one if none has room, and returns the answer holding that
    /// stream.
    pub async fn send(
        self: &Arc<Self>,
        req: http::Request<UpstreamBody>,
        max_streams: usize,
    ) -> Result<http::Response<UpstreamIncoming>, Failure> {
        self.sweeper.start(self);
        let origin = match (req.uri().scheme_str(), req.uri().authority()) {
            (Some(scheme), Some(authority)) => format!("{scheme}://{authority}"),
            _ => return Err(Failure::Connect("the upstream URL has no host".into())),
        };
        let key = (origin, max_streams);
        let mut req = req;
        // A copy for a second attempt after a GOAWAY (the body's bytes are shared, not copied).
        let mut spare = Some(copy(&req));
        for attempt in 0..2 {
            let (conn, held) = self.pick(&key);
            // Calls waiting for the same new connection open it one at a time: once it
            // failed, the others fail at once instead of each trying again.
            let opened = conn.send.get_or_try_init(|| async {
                if conn.retired.load(Ordering::Acquire) {
                    return Err("the connection to the upstream failed".to_string());
                }
                // Boxed: opening is once a connection; its future (~5.5 KB) stays out of
                // every call's.
                let opened = boxed::pin(|| self.connect(&key.0, conn.answered_http1.clone())).await;
                if opened.is_err() {
                    conn.retired.store(true, Ordering::Release);
                }
                opened
            });
            let mut send = match opened.await {
                Ok(send) => send.clone(),
                Err(e) => return Err(Failure::Connect(e)),
            };
            let error = match send.try_send_request(req).await {
                Ok(resp) => return Ok(resp.map(|body| UpstreamIncoming::held(body, held))),
                Err(mut e) => match e.take_message() {
                    // The connection closed before sending it.
                    Some(unsent) if attempt == 0 => {
                        req = unsent;
                        continue;
                    }
                    Some(_) => return Err(Failure::NotSent(e.into_error().to_string())),
                    None => e.into_error(),
                },
            };
            // A server that answered in HTTP/1 could not read the request (it answers HTTP/2's
            // preface with an error).
            if conn.answered_http1.load(Ordering::Acquire) {
                return Err(Failure::NotSent(error.to_string()));
            }
            match unprocessed(&error) {
                Some(Unprocessed::PastGoaway) => {
                    conn.retired.store(true, Ordering::Release);
                    match spare.take() {
                        Some(again) if attempt == 0 => req = again,
                        _ => return Err(Failure::NotSent(error.to_string())),
                    }
                }
                Some(Unprocessed::Refused) => return Err(Failure::NotSent(error.to_string())),
                None => return Err(Failure::Other(error.to_string())),
            }
        }
        unreachable!("the loop returns on its second attempt")
    }

    /// A connection to `key`'s origin with a free stream, taken; a new one (not yet opened)
    /// when none has one and fewer than `MAX_CONNECTIONS` are open.
    fn pick(&self, key: &Origin) -> (Arc<Conn>, Held) {
        let mut origins = self.origins.lock().expect("the pool's lock is never held across a panic");
        let conns = origins.entry(key.clone()).or_default();
        let now = Instant::now();
        conns.retain(|c| c.kept(now, self.idle));
        let free = conns.iter().find(|c| c.streams.load(Ordering::Acquire) < key.1);
        let conn = match free {
            Some(c) => c.clone(),
            None if conns.len() < MAX_CONNECTIONS => {
                let c = Arc::new(Conn {
                    send: tokio::sync::OnceCell::new(),
                    retired: AtomicBool::new(false),
                    answered_http1: Arc::default(),
                    streams: AtomicUsize::new(0),
                    idle_since: Mutex::new(now),
                });
                conns.push(c.clone());
                c
            }
            None => conns.iter().min_by_key(|c| c.streams.load(Ordering::Acquire)).expect("full, so not empty").clone(),
        };
        conn.streams.fetch_add(1, Ordering::AcqRel);
        let held = Held(conn.clone());
        (conn, held)
    }

    /// Opens a connection to `origin` and drives it in a task of this thread's runtime.
    async fn connect(
        &self,
        origin: &str,
        answered_http1: Arc<AtomicBool>,
    ) -> Result<SendRequest<UpstreamBody>, String> {
        let uri: http::Uri = origin.parse().map_err(|e| format!("{e}"))?;
        let mut connector = self.connector.clone();
        std::future::poll_fn(|cx| connector.poll_ready(cx)).await.map_err(|e| format!("{e}"))?;
        let io = Preface::watch(connector.call(uri).await.map_err(|e| super::root_cause(&*e))?, answered_http1);
        let (send, conn) = hyper::client::conn::http2::Builder::new(TokioExecutor::new())
            .timer(hyper_util::rt::TokioTimer::new())
            .handshake::<_, UpstreamBody>(io)
            .await
            .map_err(|e| format!("{e}"))?;
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "an upstream HTTP/2 connection ended");
            }
        });
        Ok(send)
    }
}

impl Sweep for Pool {
    /// Drops the connections closed or idle for `IDLE`, and the origins left with none.
    fn sweep(&self) {
        let mut origins = self.origins.lock().expect("the pool's lock is never held across a panic");
        let now = Instant::now();
        origins.retain(|_, conns| {
            conns.retain(|c| c.kept(now, self.idle));
            !conns.is_empty()
        });
    }
}

/// Why the vendor did not process a request's stream (RFC 9113 §8.7), as its server said.
enum Unprocessed {
    /// It refused the stream (`REFUSED_STREAM`).
    Refused,
    /// Its GOAWAY named a last stream below this one.
    PastGoaway,
}

/// Whether the vendor said it did not process the request's stream, and how. h2 fails with
/// the GOAWAY's error only the streams past the last one it names; a stream the GOAWAY covers
/// that the connection then drops fails as a broken pipe. The GOAWAY reading holds only where
/// the connection's task and hyper's dispatch take turns on one thread (the request workers):
/// on a multi-threaded runtime hyper can report a GOAWAY that arrived after it handed the
/// stream over, for a stream the GOAWAY covers.
fn unprocessed(e: &hyper::Error) -> Option<Unprocessed> {
    let mut source: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(e);
    while let Some(s) = source {
        if let Some(h2) = s.downcast_ref::<h2::Error>() {
            if !h2.is_remote() {
                return None;
            }
            if h2.reason() == Some(h2::Reason::REFUSED_STREAM) {
                return Some(Unprocessed::Refused);
            }
            let one_thread = tokio::runtime::Handle::try_current()
                .is_ok_and(|h| h.runtime_flavor() == tokio::runtime::RuntimeFlavor::CurrentThread);
            return (h2.is_go_away() && one_thread).then_some(Unprocessed::PastGoaway);
        }
        source = s.source();
    }
    None
}

/// A copy of a request not yet sent: method, URI, version, headers and body (whose bytes are
/// shared). Extensions are not copied: the upstream client sets none.
fn copy(req: &http::Request<UpstreamBody>) -> http::Request<UpstreamBody> {
    let mut again = http::Request::new(req.body().clone());
    *again.method_mut() = req.method().clone();
    *again.uri_mut() = req.uri().clone();
    *again.version_mut() = req.version();
    *again.headers_mut() = req.headers().clone();
    again
}

/// A connection's I/O, watched until the server's first 9 bytes have arrived; sets
/// `answered_http1` if they begin an HTTP/1 status line (`HTTP/1.`), which as an HTTP/2 frame
/// head is longer than any frame h2 accepts, so none of it can have been read as HTTP/2.
/// Anything else (an HTTP/2 server's SETTINGS, or a server that opens otherwise) proves
/// nothing. Passes every byte through unchanged.
struct Preface<T> {
    io: T,
    head: [u8; 9],
    seen: usize,
    answered_http1: Arc<AtomicBool>,
}

impl<T> Preface<T> {
    fn watch(io: T, answered_http1: Arc<AtomicBool>) -> Preface<T> {
        Preface { io, head: [0; 9], seen: 0, answered_http1 }
    }
}

impl<T: hyper::rt::Read + Unpin> hyper::rt::Read for Preface<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        mut buf: hyper::rt::ReadBufCursor<'_>,
    ) -> Poll<std::io::Result<()>> {
        if self.seen == self.head.len() {
            return Pin::new(&mut self.io).poll_read(cx, buf);
        }
        // Until the head has arrived, read through a buffer of our own to see the bytes.
        let mut bytes = vec![0; buf.remaining().min(16 << 10)];
        let mut read = hyper::rt::ReadBuf::new(&mut bytes);
        std::task::ready!(Pin::new(&mut self.io).poll_read(cx, read.unfilled()))?;
        let got = read.filled();
        let me = &mut *self;
        let take = got.len().min(me.head.len() - me.seen);
        me.head[me.seen..me.seen + take].copy_from_slice(&got[..take]);
        me.seen += take;
        if me.seen == me.head.len() && me.head.starts_with(b"HTTP/1.") {
            me.answered_http1.store(true, Ordering::Release);
        }
        buf.put_slice(got);
        Poll::Ready(Ok(()))
    }
}

impl<T: hyper::rt::Write + Unpin> hyper::rt::Write for Preface<T> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }
}

/// A call's stream on its connection, counted until dropped.
pub struct Held(Arc<Conn>);

impl Drop for Held {
    fn drop(&mut self) {
        if self.0.streams.fetch_sub(1, Ordering::AcqRel) == 1 {
            *self.0.idle_since.lock().expect("never poisoned") = Instant::now();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An HTTP/2 server on loopback that resets every stream with `reason`.
    async fn resetting_server(reason: h2::Reason) -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let mut conn = h2::server::handshake(tcp).await.unwrap();
                    while let Some(Ok((_, mut respond))) = conn.accept().await {
                        respond.send_reset(reason);
                    }
                });
            }
        });
        format!("http://{addr}")
    }

    fn pool() -> Arc<Pool> {
        let mut http = hyper_util::client::legacy::connect::HttpConnector::new();
        http.enforce_http(false);
        Arc::new(Pool::new(
            crate::exchange::Trust::web_pki().https().https_or_http().enable_http2().wrap_connector(http),
        ))
    }

    fn post(origin: &str) -> http::Request<UpstreamBody> {
        let body = UpstreamBody::whole(bytes::Bytes::from_static(b"{}"));
        http::Request::post(format!("{origin}/v1/chat/completions")).body(body).unwrap()
    }

    #[tokio::test]
    async fn the_sweep_closes_a_connection_idle_too_long_and_forgets_its_origin() {
        use http_body_util::BodyExt;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let origin = format!("http://{}", listener.local_addr().unwrap());
        let closed = Arc::new(AtomicUsize::new(0));
        let counted = closed.clone();
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let counted = counted.clone();
                tokio::spawn(async move {
                    let mut conn = h2::server::handshake(tcp).await.unwrap();
                    while let Some(Ok((_, mut respond))) = conn.accept().await {
                        let mut body = respond.send_response(http::Response::new(()), false).unwrap();
                        body.send_data(bytes::Bytes::from_static(b"ok"), true).unwrap();
                    }
                    counted.fetch_add(1, Ordering::SeqCst);
                });
            }
        });
        let mut pool = pool();
        let p = Arc::get_mut(&mut pool).unwrap();
        (p.idle, p.sweeper) = (Duration::from_secs(1), Sweeper::new(Duration::from_millis(20)));
        let answer = pool.send(post(&origin), 100).await.ok().expect("answered");
        assert_eq!(answer.into_body().collect().await.unwrap().to_bytes(), "ok");
        let origins = |pool: &Pool| pool.origins.lock().unwrap().len();
        // Idle less than its limit: kept through several sweeps.
        tokio::time::sleep(Duration::from_millis(80)).await;
        assert_eq!((origins(&pool), closed.load(Ordering::SeqCst)), (1, 0));
        // Idle past it: closed by a sweep, its origin never used again.
        for _ in 0..2000 {
            if closed.load(Ordering::SeqCst) == 1 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        assert_eq!(closed.load(Ordering::SeqCst), 1, "the idle connection closed, its origin never used again");
        assert_eq!(origins(&pool), 0);
    }

    #[tokio::test]
    async fn a_refused_stream_was_not_sent_and_any_other_reset_may_have_been() {
        let pool = pool();
        let refusing = resetting_server(h2::Reason::REFUSED_STREAM).await;
        assert!(matches!(pool.send(post(&refusing), 100).await, Err(Failure::NotSent(_))));
        let failing = resetting_server(h2::Reason::INTERNAL_ERROR).await;
        assert!(matches!(pool.send(post(&failing), 100).await, Err(Failure::Other(_))));
    }

    /// A server speaking just enough HTTP/2, by hand, to answer a connection's first request
    /// with a GOAWAY naming `last_stream_id` (NO_ERROR) and then close the connection. With
    /// `answer_later`, only its first connection does that, and later ones (real HTTP/2) answer
    /// 200 with the request's body. Also returns the count of connections it accepted.
    async fn going_away_server(last_stream_id: u32, answer_later: bool) -> (String, Arc<AtomicUsize>) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let accepted = Arc::new(AtomicUsize::new(0));
        let counted = accepted.clone();
        tokio::spawn(async move {
            while let Ok((mut tcp, _)) = listener.accept().await {
                if counted.fetch_add(1, Ordering::AcqRel) > 0 && answer_later {
                    tokio::spawn(echo(tcp));
                    continue;
                }
                tokio::spawn(async move {
                    let mut preface = [0u8; 24];
                    if tcp.read_exact(&mut preface).await.is_err() {
                        return;
                    }
                    // An empty SETTINGS frame; the client's SETTINGS acknowledged; on its first
                    // HEADERS (the request's stream), the GOAWAY.
                    let _ = tcp.write_all(&[0, 0, 0, 4, 0, 0, 0, 0, 0]).await;
                    loop {
                        let mut head = [0u8; 9];
                        if tcp.read_exact(&mut head).await.is_err() {
                            return;
                        }
                        let mut payload = vec![0u8; u32::from_be_bytes([0, head[0], head[1], head[2]]) as usize];
                        if tcp.read_exact(&mut payload).await.is_err() {
                            return;
                        }
                        match (head[3], head[4] & 1) {
                            (4, 0) => {
                                let _ = tcp.write_all(&[0, 0, 0, 4, 1, 0, 0, 0, 0]).await;
                            }
                            (1, _) => break,
                            _ => {}
                        }
                    }
                    let mut goaway = vec![0, 0, 8, 7, 0, 0, 0, 0, 0];
                    goaway.extend_from_slice(&last_stream_id.to_be_bytes());
                    goaway.extend_from_slice(&0u32.to_be_bytes());
                    let _ = tcp.write_all(&goaway).await;
                    let _ = tcp.shutdown().await;
                    // What else the client sends is read, so that no reset can overtake the
                    // GOAWAY.
                    let mut rest = [0u8; 1024];
                    while matches!(tcp.read(&mut rest).await, Ok(n) if n > 0) {}
                });
            }
        });
        (format!("http://{addr}"), accepted)
    }

    /// Serves one HTTP/2 connection: each request is answered 200 with its own body.
    async fn echo(tcp: tokio::net::TcpStream) {
        let mut conn = h2::server::handshake(tcp).await.unwrap();
        while let Some(Ok((req, mut respond))) = conn.accept().await {
            tokio::spawn(async move {
                let mut body = req.into_body();
                let mut got = Vec::new();
                while let Some(Ok(chunk)) = body.data().await {
                    let _ = body.flow_control().release_capacity(chunk.len());
                    got.extend_from_slice(&chunk);
                }
                let mut send = respond.send_response(http::Response::new(()), false).unwrap();
                send.send_data(got.into(), true).unwrap();
            });
        }
    }

    #[tokio::test]
    async fn a_stream_past_a_goaway_was_not_sent_and_one_it_covers_may_have_been() {
        let pool = pool();
        // The call's stream is 1: a GOAWAY naming stream 0 says it was not processed. It is
        // sent once more, on a new connection; turned away again, it fails as not sent.
        let (turned_away, accepted) = going_away_server(0, false).await;
        let r = pool.send(post(&turned_away), 100).await;
        assert!(matches!(r, Err(Failure::NotSent(_))), "{}", outcome(&r));
        assert_eq!(accepted.load(Ordering::Acquire), 2);
        // Naming stream 1 says it was taken; the connection then closed under it: not sent
        // again.
        let (cut, accepted) = going_away_server(1, false).await;
        let r = pool.send(post(&cut), 100).await;
        assert!(matches!(r, Err(Failure::Other(_))), "{}", outcome(&r));
        assert_eq!(accepted.load(Ordering::Acquire), 1);
    }

    #[tokio::test]
    async fn a_request_a_goaway_turned_away_is_sent_again_whole_on_a_new_connection() {
        use http_body_util::BodyExt;
        let pool = pool();
        let (origin, accepted) = going_away_server(0, true).await;
        let body = UpstreamBody::whole(bytes::Bytes::from_static(br#"{"model":"m","n":1}"#));
        let req = http::Request::post(format!("{origin}/v1/chat/completions")).body(body).unwrap();
        let resp = match pool.send(req, 100).await {
            Ok(resp) => resp,
            r => panic!("{}", outcome(&r)),
        };
        assert_eq!(resp.status(), 200);
        let got = resp.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(&got[..], br#"{"model":"m","n":1}"#);
        assert_eq!(accepted.load(Ordering::Acquire), 2);
        // The connection that went away takes no new call; the new one takes the next.
        let again = pool.send(post(&origin), 100).await;
        assert!(matches!(&again, Ok(r) if r.status() == 200), "{}", outcome(&again));
        assert_eq!(accepted.load(Ordering::Acquire), 2);
    }

    fn outcome(r: &Result<http::Response<UpstreamIncoming>, Failure>) -> String {
        match r {
            Ok(resp) => format!("answered {}", resp.status()),
            Err(Failure::Connect(e)) => format!("connect: {e}"),
            Err(Failure::NotSent(e)) => format!("not sent: {e}"),
            Err(Failure::Other(e)) => format!("other: {e}"),
        }
    }

    #[tokio::test]
    async fn a_server_that_does_not_speak_http2_never_read_the_request() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        // An HTTP/1.1 server: HTTP/2's preface is a bad request to it. It closes as servers
        // do (nginx's lingering close): its side first, then it reads what else comes, so
        // that its answer is not lost to a reset.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let origin = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move {
            while let Ok((mut tcp, _)) = listener.accept().await {
                let mut some = [0u8; 64];
                let _ = tcp.read(&mut some).await;
                let _ =
                    tcp.write_all(b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\nconnection: close\r\n\r\n").await;
                let _ = tcp.shutdown().await;
                tokio::spawn(async move { while matches!(tcp.read(&mut some).await, Ok(n) if n > 0) {} });
            }
        });
        let r = pool().send(post(&origin), 100).await;
        assert!(matches!(r, Err(Failure::NotSent(_))), "{}", outcome(&r));
    }

    #[tokio::test]
    async fn a_host_that_does_not_listen_is_a_failed_connect_for_every_call_waiting_on_it() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let origin = format!("http://{}", listener.local_addr().unwrap());
        drop(listener);
        let pool = pool();
        let (a, b) = tokio::join!(pool.send(post(&origin), 100), pool.send(post(&origin), 100));
        assert!(matches!(a, Err(Failure::Connect(_))) && matches!(b, Err(Failure::Connect(_))));
        // The failed connection left the pool: the next call tries afresh.
        assert!(matches!(pool.send(post(&origin), 100).await, Err(Failure::Connect(_))));
        assert_eq!(pool.origins.lock().unwrap().values().map(Vec::len).sum::<usize>(), 1);
    }
}
