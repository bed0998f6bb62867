//! The one upstream HTTP client: pooled keep-alive connections (HTTP/1.1, or HTTP/2 for the
//! channels that ask for it, `http2`), rustls for https (with the roots of a `tls::Trust`),
//! connect and response timeouts. It sends a plugin's request only to its channel's base URL:
//! the plugin gives a path, never a host.
//!
//! One pair of connection pools per request worker (`tollgate_base::worker`), and one for
//! every other thread: a worker's connections are driven by its own runtime, so a request
//! never waits on another thread's wake-up to reach its vendor (an HTTP/2 connection is a task
//! of that runtime, which its calls wake).

use super::{form, CallError, ClientInput, Trust, VendorWork};
use super::{http1, http2};
use crate::keypool::{Channel, UpstreamKey};
use crate::plugin::wit;
use bytes::Bytes;
use http::{HeaderName, HeaderValue, Method, Request, Response};
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper_util::client::legacy::connect::HttpConnector;
use std::sync::Arc;
use std::time::Duration;
use tollgate_base::boxed;

#[derive(Clone)]
pub struct Upstream {
    /// `clients[0]` for threads that are no worker, `clients[i + 1]` for worker `i`.
    clients: Arc<[Clients]>,
    pub connect_timeout: Duration,
    pub response_timeout: Duration,
    pub idle_timeout: Duration,
    /// What https and wss connections to vendors trust.
    pub trust: Trust,
}

/// One thread's pools: HTTP/1.1 keep-alive connections, and HTTP/2 connections for the
/// channels that ask for it (`http2`: a host's calls multiplexed, on more connections as
/// they fill).
struct Clients {
    http1: Arc<http1::Pool>,
    http2: Arc<http2::Pool>,
}

impl Clients {
    fn new(connect_timeout: Duration, trust: &Trust) -> Clients {
        let connector = || {
            let mut http = HttpConnector::new();
            http.enforce_http(false);
            http.set_connect_timeout(Some(connect_timeout));
            http.set_nodelay(true);
            http
        };
        let tls = || trust.https().https_or_http();
        let http1 = Arc::new(http1::Pool::new(tls().enable_http1().wrap_connector(connector())));
        let http2 = Arc::new(http2::Pool::new(tls().enable_http2().wrap_connector(connector())));
        Clients { http1, http2 }
    }
}

/// Headers of the hop, not of the message: the host owns framing and connection management,
/// so a plugin may not set them, and does not get them from an answer (lower case, as
/// `HeaderName::as_str` is).
const HOP_BY_HOP: &[&str] =
    &["host", "content-length", "transfer-encoding", "connection", "keep-alive", "upgrade", "te", "trailer"];

/// An upstream answer's headers as a plugin gets them: the vendor's own, without the hop's
/// (`HOP_BY_HOP`: the body comes whole) and `date`, and without values that are not text.
/// Each header is two strings copied into the plugin's memory, each through a call into the
/// plugin, and a vendor's answer carries a dozen or more.
pub(crate) fn plugin_headers(headers: &http::HeaderMap) -> Vec<wit::Header> {
    headers
        .iter()
        .filter(|(name, _)| *name != http::header::DATE && !HOP_BY_HOP.contains(&name.as_str()))
        .filter_map(|(name, value)| {
            Some(wit::Header { name: name.as_str().to_string(), value: value.to_str().ok()?.to_string() })
        })
        .collect()
}

impl Upstream {
    /// `workers`: how many request workers will send through it (each gets its own pool).
    pub fn new(
        workers: usize,
        connect_timeout: Duration,
        response_timeout: Duration,
        idle_timeout: Duration,
        trust: Trust,
    ) -> Upstream {
        let clients = (0..=workers).map(|_| Clients::new(connect_timeout, &trust)).collect();
        Upstream { clients, connect_timeout, response_timeout, idle_timeout, trust }
    }

    /// This thread's pools.
    fn clients(&self) -> &Clients {
        let i = tollgate_base::worker::index().map_or(0, |i| i + 1);
        &self.clients[i % self.clients.len()]
    }

    /// Sends `req` to `base_url`, attaching `key` as `req.auth` says; waits for the headers.
    /// `channel` is named in errors that are its operator's to fix.
    pub async fn send(
        &self,
        channel: &Channel,
        base_url: &str,
        req: &wit::UpstreamRequest,
        key: Option<&UpstreamKey>,
        client: &ClientInput,
    ) -> Result<Response<UpstreamIncoming>, CallError> {
        let request = build(&channel.name, base_url, req, key, client)?;
        let timeout = req.timeout_ms.map(|ms| Duration::from_millis(ms as u64)).unwrap_or(self.response_timeout);
        let clients = self.clients();
        let sent = async {
            if channel.http2 {
                // Boxed: its future (~1.4 KB; the connection's opening is boxed inside it)
                // would otherwise be part of every call's, HTTP/1.1 ones too.
                return boxed::pin(|| clients.http2.send(request, channel.http2_max_streams)).await;
            }
            clients.http1.send(request).await
        };
        match tokio::time::timeout(timeout, sent).await {
            Ok(Ok(resp)) => Ok(resp),
            Ok(Err(failure)) => {
                // A connection that never opened carried nothing, nor did a stream the vendor
                // said it did not process; a connection that failed later may have delivered
                // the request.
                Err(match failure {
                    Failure::Connect(e) => {
                        tracing::warn!(error = %e, base_url, "cannot connect to the upstream");
                        CallError::upstream(wit::ErrorKind::UpstreamFault, "cannot connect to the upstream")
                    }
                    Failure::NotSent(e) => {
                        tracing::warn!(error = %e, base_url, "the upstream did not take the request");
                        CallError::upstream(
                            wit::ErrorKind::UpstreamFault,
                            "the upstream refused the request unprocessed",
                        )
                    }
                    Failure::Other(e) => {
                        tracing::warn!(error = %e, base_url, "upstream request failed");
                        CallError::upstream(wit::ErrorKind::UpstreamFault, "the upstream connection failed")
                            .after(VendorWork::Unknown)
                    }
                })
            }
            Err(_) => Err(CallError::upstream(
                wit::ErrorKind::Timeout,
                format!("the upstream did not answer within {} ms", timeout.as_millis()),
            )
            .after(VendorWork::Unknown)),
        }
    }
}

/// Why an upstream request failed, as far as the vendor's work is concerned.
pub enum Failure {
    /// The connection did not open: nothing was sent.
    Connect(String),
    /// Not processed: an HTTP/2 stream the vendor refused (`REFUSED_STREAM`) or that was past
    /// its GOAWAY's last stream (twice: see `http2`), a request its connection closed before
    /// sending, or one on a connection whose server answered in HTTP/1 (`http2::Preface`).
    NotSent(String),
    /// Failed after the request may have reached the vendor.
    Other(String),
}

/// An upstream answer's body; over HTTP/2 it holds its stream until it is dropped, over
/// HTTP/1.1 its connection, parked again once the body was read to its end.
pub struct UpstreamIncoming {
    body: Incoming,
    _held: Option<http2::Held>,
    lease: Option<http1::Lease>,
}

impl UpstreamIncoming {
    pub(super) fn held(body: Incoming, held: http2::Held) -> Self {
        UpstreamIncoming { body, _held: Some(held), lease: None }
    }

    pub(super) fn leased(body: Incoming, lease: http1::Lease) -> Self {
        UpstreamIncoming { body, _held: None, lease: Some(lease) }
    }
}

impl From<Incoming> for UpstreamIncoming {
    fn from(body: Incoming) -> Self {
        UpstreamIncoming { body, _held: None, lease: None }
    }
}

impl Drop for UpstreamIncoming {
    fn drop(&mut self) {
        if self.body.is_end_stream() {
            if let Some(lease) = self.lease.take() {
                lease.park();
            }
        }
    }
}

impl Body for UpstreamIncoming {
    type Data = Bytes;
    type Error = hyper::Error;
    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let frame = std::pin::Pin::new(&mut self.body).poll_frame(cx);
        if let std::task::Poll::Ready(None) = frame {
            if let Some(lease) = self.lease.take() {
                lease.park();
            }
        }
        frame
    }
    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }
    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

pub(crate) fn build(
    channel: &str,
    base_url: &str,
    req: &wit::UpstreamRequest,
    key: Option<&UpstreamKey>,
    client: &ClientInput,
) -> Result<Request<UpstreamBody>, CallError> {
    let plugin_bug = |m: String| CallError::plugin(m);
    if !req.path.starts_with('/') || req.path.starts_with("//") || req.path.contains(['\r', '\n', '#']) {
        return Err(plugin_bug(format!(
            "the plugin asked for path '{}': a path must start with a single '/'",
            req.path
        )));
    }
    let mut uri = String::with_capacity(base_url.len() + req.path.len() + 16);
    uri.push_str(base_url);
    uri.push_str(&req.path);
    let method = Method::from_bytes(req.method.as_bytes())
        .map_err(|_| plugin_bug(format!("the plugin asked for method '{}'", req.method)))?;
    let needs_key = !matches!(req.auth, wit::Auth::None);
    let key = match (needs_key, key) {
        (true, None) => {
            return Err(CallError::config(format!(
                "channel '{channel}' has no upstream keys: add them to its `keys` in the configuration file (then SIGHUP or POST /admin/channels/reload), or store them with `tollgate upstream import --channel {channel}`"
            )))
        }
        (_, k) => k,
    };
    if let (wit::Auth::Query(param), Some(k)) = (&req.auth, key) {
        uri.push(if uri.contains('?') { '&' } else { '?' });
        uri.push_str(&percent_encode(param));
        uri.push('=');
        uri.push_str(&percent_encode(&k.0));
    }
    let mut builder = Request::builder().method(method).uri(&uri);
    let headers = builder.headers_mut().expect("fresh builder");
    for h in &req.headers {
        let form_type = matches!(req.body, wit::Body::Form(_)) && h.name.eq_ignore_ascii_case("content-type");
        if form_type || HOP_BY_HOP.iter().any(|x| h.name.eq_ignore_ascii_case(x)) {
            continue;
        }
        let (Ok(name), Ok(value)) = (HeaderName::from_bytes(h.name.as_bytes()), HeaderValue::from_str(&h.value)) else {
            return Err(plugin_bug(format!("the plugin set an invalid header '{}'", h.name)));
        };
        headers.append(name, value);
    }
    if let Some(k) = key {
        let secret = |v: String| {
            let mut v = HeaderValue::from_str(&v)
                .map_err(|_| CallError::config("an upstream key contains invalid characters"))?;
            v.set_sensitive(true);
            Ok::<_, CallError>(v)
        };
        match &req.auth {
            wit::Auth::Bearer => {
                let mut value = String::with_capacity(7 + k.0.len());
                value.push_str("Bearer ");
                value.push_str(&k.0);
                headers.insert(http::header::AUTHORIZATION, secret(value)?);
            }
            wit::Auth::Header(name) => {
                let name = HeaderName::from_bytes(name.as_bytes())
                    .map_err(|_| plugin_bug(format!("the plugin named an invalid auth header '{name}'")))?;
                headers.insert(name, secret(k.0.to_string())?);
            }
            wit::Auth::Query(_) | wit::Auth::None => {}
        }
    }
    let body = match &req.body {
        wit::Body::Empty => UpstreamBody::whole(Bytes::new()),
        wit::Body::Text(s) => UpstreamBody::whole(Bytes::copy_from_slice(s.as_bytes())),
        wit::Body::Bytes(b) => UpstreamBody::whole(Bytes::copy_from_slice(b)),
        wit::Body::ClientBody => UpstreamBody::whole(client.body.clone()),
        wit::Body::Form(parts) => {
            let (content_type, pieces) = form::encode(parts, &client.files)?;
            headers.insert(http::header::CONTENT_TYPE, HeaderValue::from_str(&content_type).expect("ASCII boundary"));
            UpstreamBody::pieces(pieces)
        }
        wit::Body::TextWithFiles(t) => UpstreamBody::whole(Bytes::from(form::write_files_into(t, &client.files)?)),
    };
    builder.body(body).map_err(|e| plugin_bug(format!("the plugin built an invalid request: {e}")))
}

/// An upstream request body: whole, or pieces sent in turn (a form whose files are the
/// consumer's own bytes, shared rather than copied). A clone shares the bytes.
#[derive(Clone)]
pub struct UpstreamBody {
    pieces: std::collections::VecDeque<Bytes>,
    remaining: u64,
}

impl UpstreamBody {
    pub(super) fn whole(b: Bytes) -> Self {
        Self::pieces(vec![b])
    }
    fn pieces(pieces: Vec<Bytes>) -> Self {
        let remaining = pieces.iter().map(|p| p.len() as u64).sum();
        UpstreamBody { pieces: pieces.into_iter().filter(|p| !p.is_empty()).collect(), remaining }
    }
}

impl hyper::body::Body for UpstreamBody {
    type Data = Bytes;
    type Error = std::convert::Infallible;
    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let next = self.pieces.pop_front();
        if let Some(p) = &next {
            self.remaining -= p.len() as u64;
        }
        std::task::Poll::Ready(next.map(|p| Ok(Frame::data(p))))
    }
    fn is_end_stream(&self) -> bool {
        self.pieces.is_empty()
    }
    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.remaining)
    }
}

fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn a_plugin_gets_the_answers_own_headers_not_the_hops() {
        let mut h = http::HeaderMap::new();
        for (name, value) in [
            ("content-type", "application/json"),
            ("content-length", "266"),
            ("date", "Sat, 05 Dec 2026 01:08:34 GMT"),
            ("connection", "keep-alive"),
            ("keep-alive", "timeout=5"),
            ("transfer-encoding", "chunked"),
            ("retry-after", "3"),
            ("x-request-id", "abc"),
            ("x-ratelimit-remaining-requests", "9"),
        ] {
            h.append(HeaderName::from_static(name), HeaderValue::from_static(value));
        }
        h.append("x-request-id", HeaderValue::from_static("second"));
        h.append("x-binary", HeaderValue::from_bytes(b"\xff\xfe").unwrap());
        let got: Vec<(String, String)> = plugin_headers(&h).into_iter().map(|h| (h.name, h.value)).collect();
        let want = [
            ("content-type", "application/json"),
            ("retry-after", "3"),
            ("x-request-id", "abc"),
            ("x-request-id", "second"),
            ("x-ratelimit-remaining-requests", "9"),
        ];
        assert_eq!(got, want.map(|(n, v)| (n.to_string(), v.to_string())));
    }

    fn req(path: &str, auth: wit::Auth) -> wit::UpstreamRequest {
        wit::UpstreamRequest {
            method: "POST".into(),
            path: path.into(),
            headers: vec![wit::Header { name: "Host".into(), value: "evil.example".into() }],
            body: wit::Body::Text("{}".into()),
            auth,
            timeout_ms: None,
            key: 0,
        }
    }

    #[test]
    fn requests_go_only_to_the_base_url() {
        let key = UpstreamKey(Arc::from("k 1"));
        let r =
            build("ch", "http://127.0.0.1:9", &req("/v1/x", wit::Auth::Bearer), Some(&key), &ClientInput::default())
                .unwrap();
        assert_eq!(r.uri(), "http://127.0.0.1:9/v1/x");
        assert!(r.headers().get("host").is_none(), "plugins cannot set Host");
        assert_eq!(r.headers()["authorization"], "Bearer k 1");
        for bad in ["//evil.example/x", "http://evil.example/x", "x", "/a\r\nHost: y"] {
            assert!(
                build("ch", "http://127.0.0.1:9", &req(bad, wit::Auth::None), None, &ClientInput::default()).is_err(),
                "{bad}"
            );
        }
    }

    #[test]
    fn query_and_header_auth() {
        let key = UpstreamKey(Arc::from("a&b"));
        let r = build(
            "ch",
            "http://h",
            &req("/p?x=1", wit::Auth::Query("key".into())),
            Some(&key),
            &ClientInput::default(),
        )
        .unwrap();
        assert_eq!(r.uri(), "http://h/p?x=1&key=a%26b");
        let r = build(
            "ch",
            "http://h",
            &req("/p", wit::Auth::Header("x-api-key".into())),
            Some(&key),
            &ClientInput::default(),
        )
        .unwrap();
        assert_eq!(r.headers()["x-api-key"], "a&b");
        assert!(build("ch", "http://h", &req("/p", wit::Auth::Bearer), None, &ClientInput::default()).is_err());
    }
}
