//! Opening a plugin's upstream WebSocket: the upgrade request built like any of the plugin's
//! requests (the key inserted by the host), over TCP, with rustls for `wss` (the upstream's
//! `Trust`).
//!
//! Invariants: the URL is the channel's base URL with `https` → `wss` (`http` → `ws`); connect
//! and handshake are each bounded by the upstream's timeouts; a handshake the upstream refused
//! comes back as its HTTP response (status, headers, body), for the plugin to classify.

use crate::exchange::upstream::{build, Upstream};
use crate::exchange::{CallError, ClientInput, VendorWork};
use crate::keypool::UpstreamKey;
use crate::plugin::wit;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::WebSocketStream;

/// The byte stream under an upstream socket: TCP, or TLS over TCP.
pub trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

pub type UpstreamSocket = WebSocketStream<Box<dyn Io>>;

/// The largest message an upstream may send (audio chunks are large).
const MAX_UPSTREAM_MESSAGE: usize = 16 << 20;

/// What opening gave.
pub enum Opened {
    Socket(Box<UpstreamSocket>),
    /// The upstream answered the upgrade with this instead.
    Refused(wit::UpstreamResponse),
}

/// Opens `req` on `base_url` with `key`.
pub async fn open(
    upstream: &Upstream,
    channel: &str,
    base_url: &str,
    req: &wit::UpstreamRequest,
    key: Option<&UpstreamKey>,
) -> Result<Opened, CallError> {
    let (secure, ws_base) = match base_url.split_once("://") {
        Some(("https", rest)) => (true, format!("wss://{rest}")),
        Some(("http", rest)) => (false, format!("ws://{rest}")),
        _ => return Err(CallError::config(format!("channel '{channel}' has a base_url that is not http(s)"))),
    };
    let built = build(channel, &ws_base, req, key, &ClientInput::default())?;
    let uri = built.uri().clone();
    let mut request = uri
        .to_string()
        .into_client_request()
        .map_err(|e| CallError::plugin(format!("the plugin asked for an invalid socket URL: {e}")))?;
    for (name, value) in built.headers() {
        if !name.as_str().starts_with("sec-websocket-") || name == "sec-websocket-protocol" {
            request.headers_mut().insert(name.clone(), value.clone());
        }
    }
    let host = uri.host().unwrap_or_default().trim_start_matches('[').trim_end_matches(']').to_string();
    let port = uri.port_u16().unwrap_or(if secure { 443 } else { 80 });
    let unreachable = |m: String| CallError::upstream(wit::ErrorKind::UpstreamFault, m);
    let tcp = match tokio::time::timeout(upstream.connect_timeout, TcpStream::connect((host.as_str(), port))).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            tracing::warn!(error = %e, channel, "cannot connect to the upstream socket");
            return Err(unreachable("cannot connect to the upstream".into()));
        }
        Err(_) => return Err(unreachable("connecting to the upstream timed out".into())),
    };
    let _ = tcp.set_nodelay(true);
    let io: Box<dyn Io> = if secure {
        let name = rustls::pki_types::ServerName::try_from(host.clone())
            .map_err(|_| CallError::config(format!("channel '{channel}' names an invalid host '{host}'")))?;
        match tokio::time::timeout(upstream.connect_timeout, upstream.trust.connector().connect(name, tcp)).await {
            Ok(Ok(s)) => Box::new(s),
            Ok(Err(e)) => {
                // The reason is the operator's (a certificate the gateway does not trust, see
                // `tls_ca_file`), not the consumer's.
                tracing::warn!(error = %e, channel, "the upstream socket's TLS handshake failed");
                return Err(unreachable("cannot connect to the upstream".into()));
            }
            Err(_) => return Err(unreachable("the upstream's TLS handshake timed out".into())),
        }
    } else {
        Box::new(tcp)
    };
    let config = WebSocketConfig::default().max_message_size(Some(MAX_UPSTREAM_MESSAGE));
    let handshake = tokio_tungstenite::client_async_with_config(request, io, Some(config));
    use tokio_tungstenite::tungstenite::Error;
    match tokio::time::timeout(upstream.response_timeout, handshake).await {
        Ok(Ok((socket, _))) => Ok(Opened::Socket(Box::new(socket))),
        Ok(Err(Error::Http(response))) => {
            let (parts, body) = response.into_parts();
            let headers = crate::exchange::upstream::plugin_headers(&parts.headers);
            Ok(Opened::Refused(wit::UpstreamResponse {
                status: parts.status.as_u16(),
                headers,
                body: body.unwrap_or_default(),
            }))
        }
        Ok(Err(e)) => {
            Err(unreachable(format!("the upstream's WebSocket handshake failed: {e}")).after(VendorWork::None))
        }
        Err(_) => Err(CallError::upstream(wit::ErrorKind::Timeout, "the upstream did not accept the socket in time")),
    }
}
