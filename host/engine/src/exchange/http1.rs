//! A worker's HTTP/1.1 keep-alive connections to upstreams (the channels without `http2`).
//!
//! A call takes the connection to its origin parked last (its socket and state are the
//! warmest) or opens one, and its answer's body parks the connection again once read to its
//! end ([`Lease`]). Nothing is spawned per call, and the pool is its worker's own: an uncontended
//! lock, the origin looked up with foldhash. (hyper-util's pooled client spawned a task per
//! call to return its connection and hashed the origin with SipHash under a lock: ~12k
//! instructions a call.)
//!
//! Invariants:
//! - a connection carries one call at a time: it is parked only once its answer's body was
//!   read to the end and hyper is ready for the next request; a body dropped before its end
//!   closes its connection (hyper cannot reuse it);
//! - at most [`MAX_PARKED`] connections per origin are parked; one parked [`IDLE`] or longer,
//!   or closed by its server, is dropped (which closes it) when its origin is next used or by
//!   the pool's sweep ([`super::sweep`], started by the pool's first call), whichever comes
//!   first; an origin enters the pool with its first connection parked and leaves it at the
//!   first sweep that finds none parked;
//! - a request goes to another connection only when hyper hands it back unsent from a parked
//!   one (its server closed it while parked, and hyper saw so before writing): then to the
//!   next parked, or a new one. So a call tries at most `MAX_PARKED + 1` connections, and a
//!   new connection's failure is the call's (`Failure::NotSent` when hyper hands the request
//!   back: the vendor never saw it). A close hyper sees only after writing the request fails
//!   the call as one the vendor may have received (`Failure::Other`), as any client's would.

use super::sweep::{Sweep, Sweeper};
use super::upstream::{Failure, UpstreamBody, UpstreamIncoming};
use crate::FastMap;
use http::uri::Authority;
use http::{HeaderValue, Request, Response, Uri};
use hyper::client::conn::http1::SendRequest;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tollgate_base::boxed;
use tower_service::Service;

type Connector = hyper_rustls::HttpsConnector<hyper_util::client::legacy::connect::HttpConnector>;

/// The most connections parked per origin.
pub const MAX_PARKED: usize = 512;
/// A connection parked this long is closed.
const IDLE: Duration = Duration::from_secs(90);

/// One worker's parked HTTP/1.1 connections.
pub struct Pool {
    connector: Connector,
    /// By scheme (`[http, https]`), then authority.
    parked: Mutex<[FastMap<Arc<str>, Origin>; 2]>,
    /// Started by the first call.
    sweeper: Sweeper,
    /// `IDLE`, shorter in tests.
    idle: Duration,
}

struct Origin {
    /// The map's key, shared with the leases of its connections.
    name: Arc<str>,
    /// Oldest first.
    parked: Vec<Parked>,
}

struct Parked {
    send: SendRequest<UpstreamBody>,
    since: Instant,
}

/// A call's connection, parked again by its answer's body when read to its end.
pub struct Lease {
    pool: Arc<Pool>,
    https: bool,
    authority: Arc<str>,
    send: SendRequest<UpstreamBody>,
}

impl Lease {
    /// Parks the connection once hyper is ready for its next request (at once where the
    /// connection's task and the body's reader share a thread, as on the request workers).
    pub(super) fn park(self) {
        if self.send.is_ready() {
            return self.pool.park(self.https, self.authority, self.send);
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else { return };
        let Lease { pool, https, authority, mut send } = self;
        runtime.spawn(async move {
            if send.ready().await.is_ok() {
                pool.park(https, authority, send);
            }
        });
    }
}

impl Pool {
    pub fn new(connector: Connector) -> Pool {
        Pool { connector, parked: Mutex::default(), sweeper: Sweeper::new(super::sweep::EVERY), idle: IDLE }
    }

    /// Sends `req` (its URI absolute, http or https) on a parked connection to its origin or
    /// a new one; the answer's body holds the connection.
    pub async fn send(self: &Arc<Self>, mut req: Request<UpstreamBody>) -> Result<Response<UpstreamIncoming>, Failure> {
        self.sweeper.start(self);
        let uri = req.uri().clone();
        let https = match uri.scheme_str() {
            Some("http") => false,
            Some("https") => true,
            _ => return Err(Failure::Connect("the upstream URL is neither http nor https".into())),
        };
        let Some(authority) = uri.authority() else {
            return Err(Failure::Connect("the upstream URL has no host".into()));
        };
        req.headers_mut().insert(http::header::HOST, host(https, authority)?);
        // The request line in origin form (`POST /v1/chat HTTP/1.1`), as servers expect.
        *req.uri_mut() = uri.path_and_query().cloned().map_or_else(|| Uri::from_static("/"), Uri::from);
        loop {
            let (name, send) = self.take(https, authority.as_str());
            let (mut send, parked) = match send {
                Some(send) => (send, true),
                None => (boxed::pin(|| self.connect(&uri)).await?, false),
            };
            match send.try_send_request(req).await {
                Ok(resp) => {
                    let lease = Lease { pool: self.clone(), https, authority: name, send };
                    return Ok(resp.map(|body| UpstreamIncoming::leased(body, lease)));
                }
                Err(mut e) => match e.take_message() {
                    // Its server closed the parked connection: the vendor never saw the request.
                    Some(unsent) if parked => req = unsent,
                    Some(_) => return Err(Failure::NotSent(e.into_error().to_string())),
                    None => return Err(Failure::Other(e.into_error().to_string())),
                },
            }
        }
    }

    /// The origin's name, and the connection to it parked last if one is open; drops those
    /// closed or idle too long, oldest first.
    fn take(&self, https: bool, authority: &str) -> (Arc<str>, Option<SendRequest<UpstreamBody>>) {
        let mut parked = self.parked.lock().expect("the pool's lock is never held across a panic");
        let origins = &mut parked[https as usize];
        let Some(origin) = origins.get_mut(authority) else {
            return (Arc::from(authority), None);
        };
        let name = origin.name.clone();
        let now = Instant::now();
        let stale = origin.parked.iter().take_while(|p| now.duration_since(p.since) >= self.idle).count();
        origin.parked.drain(..stale);
        while let Some(p) = origin.parked.pop() {
            if p.send.is_ready() {
                return (name, Some(p.send));
            }
        }
        (name, None)
    }

    fn park(&self, https: bool, authority: Arc<str>, send: SendRequest<UpstreamBody>) {
        let mut parked = self.parked.lock().expect("the pool's lock is never held across a panic");
        let origins = &mut parked[https as usize];
        let origin = origins.entry(authority.clone()).or_insert_with(|| Origin { name: authority, parked: Vec::new() });
        if origin.parked.len() >= MAX_PARKED {
            origin.parked.remove(0);
        }
        origin.parked.push(Parked { send, since: Instant::now() });
    }

    /// Opens a connection to `uri`'s origin, driven by a task of this thread's runtime.
    async fn connect(&self, uri: &Uri) -> Result<SendRequest<UpstreamBody>, Failure> {
        let mut connector = self.connector.clone();
        let io = async {
            std::future::poll_fn(|cx| connector.poll_ready(cx)).await?;
            connector.call(uri.clone()).await
        };
        let io = io.await.map_err(|e| Failure::Connect(super::root_cause(&*e)))?;
        let (send, conn) = hyper::client::conn::http1::Builder::new()
            .handshake::<_, UpstreamBody>(io)
            .await
            .map_err(|e| Failure::Connect(e.to_string()))?;
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "an upstream HTTP/1.1 connection ended");
            }
        });
        Ok(send)
    }
}

impl Sweep for Pool {
    /// Drops the connections parked `IDLE` or longer or closed by their servers, and the
    /// origins left with none.
    fn sweep(&self) {
        let mut parked = self.parked.lock().expect("the pool's lock is never held across a panic");
        let now = Instant::now();
        for origins in parked.iter_mut() {
            origins.retain(|_, origin| {
                origin.parked.retain(|p| now.duration_since(p.since) < self.idle && p.send.is_ready());
                !origin.parked.is_empty()
            });
        }
    }
}

/// The `Host` header of a request to `authority`: its host, and its port unless the scheme's
/// own (no user info).
fn host(https: bool, authority: &Authority) -> Result<HeaderValue, Failure> {
    let default = if https { 443 } else { 80 };
    let value = match authority.port_u16() {
        Some(port) if port != default => format!("{}:{port}", authority.host()),
        _ => authority.host().to_string(),
    };
    HeaderValue::try_from(value).map_err(|_| Failure::Connect("the upstream URL's host is not valid".into()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// What a test server saw: the request heads in order, connections opened and closed.
    #[derive(Default)]
    struct Seen {
        heads: Mutex<Vec<String>>,
        opened: AtomicUsize,
        closed: AtomicUsize,
    }

    /// An HTTP/1.1 server on loopback answering `ok` to each request (bodiless); with `close`,
    /// it closes each connection 30 ms after its first answer without saying so (as a server
    /// whose keep-alive timeout passed does), once the client has parked it.
    async fn server(close: bool) -> (String, Arc<Seen>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let seen = Arc::new(Seen::default());
        let s = seen.clone();
        tokio::spawn(async move {
            while let Ok((mut tcp, _)) = listener.accept().await {
                s.opened.fetch_add(1, Ordering::SeqCst);
                let s = s.clone();
                tokio::spawn(async move {
                    let mut buf = Vec::new();
                    let mut chunk = [0u8; 4096];
                    loop {
                        while let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                            let head = String::from_utf8_lossy(&buf[..end]).into_owned();
                            buf.drain(..end + 4);
                            s.heads.lock().unwrap().push(head);
                            tcp.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok").await.unwrap();
                            if close {
                                tokio::time::sleep(Duration::from_millis(30)).await;
                                drop(tcp);
                                s.closed.fetch_add(1, Ordering::SeqCst);
                                return;
                            }
                        }
                        match tcp.read(&mut chunk).await {
                            Ok(0) | Err(_) => break,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                    }
                    s.closed.fetch_add(1, Ordering::SeqCst);
                });
            }
        });
        (url, seen)
    }

    fn pool() -> Arc<Pool> {
        let mut http = hyper_util::client::legacy::connect::HttpConnector::new();
        http.enforce_http(false);
        Arc::new(Pool::new(
            crate::exchange::Trust::web_pki().https().https_or_http().enable_http1().wrap_connector(http),
        ))
    }

    /// A pool whose connections are idle too long after `idle`, swept every `sweep`.
    fn pool_with(idle: Duration, sweep: Duration) -> Arc<Pool> {
        let mut pool = pool();
        let p = Arc::get_mut(&mut pool).unwrap();
        (p.idle, p.sweeper) = (idle, Sweeper::new(sweep));
        pool
    }

    /// Connections parked (to any origin over http), and how many of them hyper says are open.
    fn parked(pool: &Pool) -> (usize, usize) {
        let parked = pool.parked.lock().unwrap();
        let all = parked[0].values().flat_map(|o| &o.parked);
        all.fold((0, 0), |(n, open), p| (n + 1, open + p.send.is_ready() as usize))
    }

    /// Waits (bounded) until hyper has seen every parked connection closed.
    async fn parked_closed(pool: &Pool) {
        for _ in 0..500 {
            if parked(pool).1 == 0 {
                return;
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        panic!("a parked connection was awaited closed; {:?} parked and open", parked(pool));
    }

    fn get(url: &str) -> Request<UpstreamBody> {
        Request::get(url).body(UpstreamBody::whole(bytes::Bytes::new())).unwrap()
    }

    async fn read(pool: &Arc<Pool>, url: &str) -> String {
        let resp = pool.send(get(url)).await.ok().expect("answered");
        String::from_utf8(resp.into_body().collect().await.unwrap().to_bytes().to_vec()).unwrap()
    }

    /// Waits (bounded) for the server to count `n` closed connections.
    async fn closed(seen: &Seen, n: usize) {
        for _ in 0..2000 {
            if seen.closed.load(Ordering::SeqCst) >= n {
                return;
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        panic!("{n} connections closed awaited; {} seen", seen.closed.load(Ordering::SeqCst));
    }

    #[tokio::test]
    async fn calls_take_turns_on_one_connection_and_a_body_dropped_unread_closes_its_connection() {
        let (url, seen) = server(false).await;
        let pool = pool();
        for _ in 0..3 {
            assert_eq!(read(&pool, &format!("{url}/v1/x?a=1")).await, "ok");
        }
        assert_eq!(seen.opened.load(Ordering::SeqCst), 1, "three calls in turn, one connection");
        let port = url.rsplit(':').next().unwrap();
        for head in seen.heads.lock().unwrap().iter() {
            let mut lines = head.lines();
            assert_eq!(lines.next(), Some("GET /v1/x?a=1 HTTP/1.1"), "origin form: {head}");
            assert!(lines.any(|l| l == format!("host: 127.0.0.1:{port}")), "the host header: {head}");
        }
        // An answer dropped before its end: its connection is not parked, and closes.
        let resp = pool.send(get(&url)).await.ok().unwrap();
        drop(resp);
        closed(&seen, 1).await;
        assert_eq!(read(&pool, &url).await, "ok");
        assert_eq!(seen.opened.load(Ordering::SeqCst), 2);
        // Two calls at once: two connections, both parked after.
        let (a, b) = tokio::join!(read(&pool, &url), read(&pool, &url));
        assert_eq!((a.as_str(), b.as_str()), ("ok", "ok"));
        assert_eq!(seen.opened.load(Ordering::SeqCst), 3);
        let parked = pool.parked.lock().unwrap()[0].values().map(|o| o.parked.len()).sum::<usize>();
        assert_eq!(parked, 2);
    }

    #[tokio::test]
    async fn a_connection_closed_or_idle_too_long_while_parked_is_replaced_without_failing_the_call() {
        // Closed by its server while parked: every call still succeeds, each on a new one.
        let (url, seen) = server(true).await;
        let pool = pool();
        for n in 1..=3 {
            assert_eq!(read(&pool, &url).await, "ok");
            assert_eq!(parked(&pool), (1, 1), "parked, open, before its server closes it");
            closed(&seen, n).await;
            parked_closed(&pool).await;
        }
        assert_eq!(seen.opened.load(Ordering::SeqCst), 3);

        // Parked longer than its idle limit: dropped (closed) when its origin is next used.
        let (url, seen) = server(false).await;
        let pool = pool_with(Duration::from_millis(200), crate::exchange::sweep::EVERY);
        assert_eq!(read(&pool, &url).await, "ok");
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(read(&pool, &url).await, "ok");
        assert_eq!(seen.opened.load(Ordering::SeqCst), 2);
        closed(&seen, 1).await;
    }

    #[tokio::test]
    async fn the_sweep_closes_connections_parked_too_long_and_forgets_origins_left_with_none() {
        let (url, seen) = server(false).await;
        let (closing_url, closing) = server(true).await;
        let pool = pool_with(Duration::from_secs(1), Duration::from_millis(20));
        assert_eq!(read(&pool, &url).await, "ok");
        assert_eq!(read(&pool, &closing_url).await, "ok");
        let origins = |pool: &Pool| pool.parked.lock().unwrap()[0].len();
        assert_eq!(origins(&pool), 2, "both parked");
        // The server that closes its connection while parked: its origin goes at a sweep.
        closed(&closing, 1).await;
        for _ in 0..100 {
            if origins(&pool) == 1 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert_eq!(origins(&pool), 1, "the origin whose connection its server closed is forgotten");
        assert_eq!(seen.closed.load(Ordering::SeqCst), 0, "the other, parked within its limit, is kept");
        // Parked past its limit: closed by a sweep, the origin never used again.
        closed(&seen, 1).await;
        assert_eq!(origins(&pool), 0);
        // The sweep ends with its pool.
        let weak = Arc::downgrade(&pool);
        drop(pool);
        assert!(weak.upgrade().is_none());
    }

    #[tokio::test]
    async fn a_url_of_another_scheme_or_no_host_is_refused_before_connecting() {
        let pool = pool();
        for url in ["ftp://127.0.0.1:9/x", "/only/a/path"] {
            assert!(matches!(pool.send(get(url)).await, Err(Failure::Connect(_))), "{url}");
        }
    }

    #[test]
    fn the_host_header_names_the_port_only_when_not_the_schemes_own() {
        let host = |https, a: &str| host(https, &a.parse().unwrap()).ok().unwrap();
        assert_eq!(host(false, "127.0.0.1:8080"), "127.0.0.1:8080");
        assert_eq!(host(false, "example.com:80"), "example.com");
        assert_eq!(host(true, "example.com:443"), "example.com");
        assert_eq!(host(true, "example.com:80"), "example.com:80");
        assert_eq!(host(true, "user:secret@example.com"), "example.com");
        assert_eq!(host(false, "[::1]:9"), "[::1]:9");
    }
}
