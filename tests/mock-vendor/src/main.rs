//! `mock-vendor`: a fast mock upstream for Tollgate's end-to-end tests and benchmarks.
//!
//! ```text
//! mock-vendor [--listen 127.0.0.1:0] [--threads 1] [--chunk-delay-ms 0]
//! ```
//!
//! Binds, prints exactly one line `LISTENING <addr>` on stdout, then serves HTTP/1.1 (keep-alive)
//! and HTTP/2 until killed. With `--tls-cert FILE --tls-key FILE` (PEM), a connection that
//! opens with a TLS handshake is served over TLS, offering `--tls-alpn` (default
//! `h2,http/1.1`) as a vendor's https endpoint does, and any other in plain text (the tests'
//! requests to the control routes).
//!
//! Routes: OpenAI-compatible chat/embeddings/images/models (see `openai.rs`),
//! OpenAI's speech and transcriptions (`audio.rs`), DeepSeek's, Zhipu's, Ark's and DashScope's
//! chat on their own paths (`compatible.rs`), Anthropic's messages (`anthropic.rs`), Gemini's generateContent (`gemini.rs`), MiniMax
//! `POST /v1/t2a_v2` (see `minimax.rs`) and its asynchronous speech, video and files
//! (`minimax_jobs.rs`), a generic video job API (`jobs.rs`), Kling's video API
//! with its JWT checked (`kling.rs`), Volcengine's Visual API for Jimeng with its V4 signature
//! checked (`jimeng.rs`), SiliconFlow's video API and reference audio (`siliconflow.rs`),
//! SiliconFlow's files and batches under `/siliconflow` (`siliconflow_batches.rs`),
//! MindVideo's with its `i-sign` checked (`mindvideo.rs`), Ark's Seedance tasks (`ark.rs`),
//! DashScope's asynchronous video
//! (`dashscope.rs`), the Suno API's music (`suno.rs`), MiniMax's WebSocket speech
//! (`minimax_ws.rs`), and the control routes under `/_mock/` (below).

mod anthropic;
mod ark;
mod audio;
mod body;
mod compatible;
mod dashscope;
mod files;
mod gemini;
mod jimeng;
mod jobs;
mod jwt;
mod kling;
mod mindvideo;
mod minimax;
mod minimax_jobs;
mod minimax_voices;
mod minimax_ws;
mod multipart;
mod openai;
mod siliconflow;
mod siliconflow_batches;
mod suno;

use body::MockBody;
use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::header::{HeaderMap, HeaderValue, AUTHORIZATION, CONTENT_TYPE};
use hyper::http::request::Parts;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};
use std::collections::HashMap;
use std::convert::Infallible;
use std::io::Write;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

const USAGE: &str = "usage: mock-vendor [--listen ADDR] [--threads N] [--chunk-delay-ms D] [--h2-streams N] \
    [--tls-cert PEM --tls-key PEM [--tls-alpn h2,http/1.1]]";

struct Args {
    listen: SocketAddr,
    threads: usize,
    chunk_delay_ms: u64,
    /// Concurrent HTTP/2 streams per connection; by default more than any test opens on
    /// one connection, so the gateway's own limit (`http2_max_streams`) decides.
    h2_streams: u32,
    tls_cert: Option<String>,
    tls_key: Option<String>,
    tls_alpn: String,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        listen: ([127, 0, 0, 1], 0).into(),
        threads: 1,
        chunk_delay_ms: 0,
        h2_streams: 20_000,
        tls_cert: None,
        tls_key: None,
        tls_alpn: "h2,http/1.1".into(),
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        if flag == "--help" || flag == "-h" {
            println!("{USAGE}");
            std::process::exit(0);
        }
        let value = it.next().ok_or_else(|| format!("{flag} needs a value"))?;
        let bad = || format!("bad value for {flag}: {value}");
        match flag.as_str() {
            "--listen" => args.listen = value.parse().map_err(|_| bad())?,
            "--threads" => args.threads = value.parse::<usize>().map_err(|_| bad())?.max(1),
            "--chunk-delay-ms" => args.chunk_delay_ms = value.parse().map_err(|_| bad())?,
            "--h2-streams" => args.h2_streams = value.parse().map_err(|_| bad())?,
            "--tls-cert" => args.tls_cert = Some(value),
            "--tls-key" => args.tls_key = Some(value),
            "--tls-alpn" => args.tls_alpn = value,
            _ => return Err(format!("unknown argument {flag}")),
        }
    }
    if args.tls_cert.is_some() != args.tls_key.is_some() {
        return Err("--tls-cert and --tls-key go together".into());
    }
    Ok(args)
}

/// The TLS acceptor `--tls-cert` and `--tls-key` ask for.
fn tls_acceptor(args: &Args) -> Result<Option<tokio_rustls::TlsAcceptor>, String> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let (Some(cert), Some(key)) = (&args.tls_cert, &args.tls_key) else { return Ok(None) };
    let certs = CertificateDer::pem_file_iter(cert)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|e| format!("--tls-cert {cert}: {e}"))?;
    let key = PrivateKeyDer::from_pem_file(key).map_err(|e| format!("--tls-key {key}: {e}"))?;
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| format!("--tls-cert/--tls-key: {e}"))?;
    config.alpn_protocols = args.tls_alpn.split(',').filter(|p| !p.is_empty()).map(|p| p.as_bytes().to_vec()).collect();
    Ok(Some(tokio_rustls::TlsAcceptor::from(std::sync::Arc::new(config))))
}

fn main() {
    let args = parse_args().unwrap_or_else(|e| {
        eprintln!("mock-vendor: {e}\n{USAGE}");
        std::process::exit(2);
    });
    let tls = tls_acceptor(&args).unwrap_or_else(|e| {
        eprintln!("mock-vendor: {e}");
        std::process::exit(2);
    });
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(args.threads)
        .enable_all()
        .build()
        .expect("tokio runtime");
    rt.block_on(serve(args, tls));
}

async fn serve(args: Args, tls: Option<tokio_rustls::TlsAcceptor>) {
    let listener = tokio::net::TcpListener::bind(args.listen).await.unwrap_or_else(|e| {
        eprintln!("mock-vendor: cannot bind {}: {e}", args.listen);
        std::process::exit(1);
    });
    let addr = listener.local_addr().expect("local address");
    {
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "LISTENING {addr}");
        let _ = out.flush();
    }
    let state = Arc::new(State::new(args.chunk_delay_ms, addr));
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            // Out of file descriptors and the like: back off instead of spinning.
            Err(_) => {
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let state = state.clone();
        let h2_streams = args.h2_streams;
        let tls = tls.clone();
        tokio::spawn(async move {
            // A TLS record of type handshake (22) opens a TLS connection.
            let mut first = [0u8; 1];
            match tls {
                Some(tls) if matches!(stream.peek(&mut first).await, Ok(1) if first[0] == 22) => {
                    if let Ok(stream) = tls.accept(stream).await {
                        let alpn = stream.get_ref().1.alpn_protocol().map(|p| String::from_utf8_lossy(p).into_owned());
                        let tls = Tls(alpn.unwrap_or_default());
                        serve_connection(stream, peer, state, h2_streams, Some(tls)).await;
                    }
                }
                _ => serve_connection(stream, peer, state, h2_streams, None).await,
            }
        });
    }
}

/// HTTP/1.1, or HTTP/2 (with prior knowledge in plain text, a channel's `http2`; by ALPN
/// over TLS), many streams to a connection as a vendor's load balancer allows.
async fn serve_connection<I>(io: I, peer: SocketAddr, state: Arc<State>, h2_streams: u32, tls: Option<Tls>)
where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let svc = hyper::service::service_fn(move |mut req: Request<Incoming>| {
        let state = state.clone();
        if let Some(tls) = &tls {
            req.extensions_mut().insert(tls.clone());
        }
        if req.version() == hyper::Version::HTTP_2 {
            state.h2_peers.lock().unwrap_or_else(|e| e.into_inner()).insert(peer);
        }
        async move { Ok::<_, Infallible>(handle(req, state).await) }
    });
    let mut server = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    server.http1().keep_alive(true);
    server.http2().max_concurrent_streams(h2_streams);
    let _ = server.serve_connection_with_upgrades(TokioIo::new(io), svc).await;
}

/// A request came over TLS, and the protocol its connection's ALPN chose ("" for none).
#[derive(Clone)]
struct Tls(String);

/// The last request seen on one path.
struct Last {
    version: hyper::Version,
    /// Over TLS: the protocol ALPN chose ("" for none); `None` in plain text.
    tls_alpn: Option<String>,
    method: Method,
    query: Option<String>,
    headers: HeaderMap,
    body: Bytes,
}

pub struct State {
    requests: AtomicU64,
    /// The connections HTTP/2 requests came on (`GET /_mock/h2-connections` counts them).
    h2_peers: Mutex<std::collections::HashSet<SocketAddr>>,
    by_key: Mutex<HashMap<String, u64>>,
    last: Mutex<HashMap<String, Last>>,
    /// Keys refused as if revoked (`POST /_mock/reject?key=K&on=1|0`), besides `bad…` keys.
    rejected: Mutex<std::collections::HashSet<String>>,
    /// Each key's balance for SiliconFlow's `GET /v1/user/info`
    /// (`POST /_mock/balance?key=K&value=12.5`); a key without one gets 404.
    balances: Mutex<HashMap<String, String>>,
    balance_reads: AtomicU64,
    /// Uploaded files by id (`POST /v1/files`), each in the account of the key that sent it.
    files: Mutex<HashMap<String, files::Stored>>,
    /// Asynchronous video jobs by id (`POST /v1/video/jobs`).
    jobs: Mutex<HashMap<String, jobs::Job>>,
    /// Kling's tasks by id (`POST /v1/videos/text2video`).
    kling: Mutex<HashMap<String, kling::Task>>,
    /// Jimeng's tasks by id (`POST /?Action=CVSync2AsyncSubmitTask`).
    jimeng: Mutex<HashMap<String, jimeng::Task>>,
    /// SiliconFlow's video requests by id (`POST /v1/video/submit`).
    siliconflow: Mutex<HashMap<String, siliconflow::Request>>,
    /// SiliconFlow's reference audio, per key (`POST /v1/uploads/audio/voice`).
    siliconflow_references: Mutex<siliconflow::References>,
    /// SiliconFlow's batch files and batches (`/siliconflow/v1/files`, `/siliconflow/v1/batches`).
    siliconflow_batches: Mutex<siliconflow_batches::Store>,
    /// MindVideo's creations by id (`POST /api/v2/creations`).
    mindvideo: Mutex<HashMap<u64, mindvideo::Creation>>,
    /// Ark's Seedance tasks by id (`POST /api/v3/contents/generations/tasks`).
    ark: Mutex<HashMap<String, ark::Task>>,
    /// DashScope's video tasks by id (`POST /api/v1/services/aigc/video-generation/…`).
    dashscope: Mutex<HashMap<String, dashscope::Task>>,
    /// MiniMax's asynchronous tasks and files (`POST /v1/t2a_async_v2`, …).
    minimax: Mutex<minimax_jobs::Store>,
    /// Characters MiniMax's socket billed each key (its final frames).
    ws_characters: Mutex<HashMap<String, u64>>,
    /// MiniMax T2A requests per text (`POST /v1/t2a_v2`).
    t2a_texts: Mutex<HashMap<String, u64>>,
    /// Suno's tasks by id (`POST /suno/submit/{action}`).
    suno: Mutex<HashMap<String, suno::Task>>,
    /// `hang-once-…` list purposes whose first request already hung.
    hung: Mutex<std::collections::HashSet<String>>,
    /// The default pause between stream chunks (`--chunk-delay-ms`).
    chunk_delay_ms: u64,
    trace: AtomicU64,
    /// Where the mock listens (its CDN's URLs are absolute).
    pub addr: std::net::SocketAddr,
    /// Files the CDN served (`GET /cdn/…`).
    cdn_downloads: AtomicU64,
    /// Callbacks received on `POST /_mock/hooks` (a consumer's endpoint), in order.
    hooks: Mutex<Vec<serde_json::Value>>,
}

impl State {
    fn new(chunk_delay_ms: u64, addr: std::net::SocketAddr) -> Self {
        State {
            requests: AtomicU64::new(0),
            h2_peers: Mutex::default(),
            by_key: Mutex::new(HashMap::new()),
            last: Mutex::new(HashMap::new()),
            rejected: Mutex::new(std::collections::HashSet::new()),
            balances: Mutex::new(HashMap::new()),
            balance_reads: AtomicU64::new(0),
            files: Mutex::new(HashMap::new()),
            hung: Mutex::new(std::collections::HashSet::new()),
            jobs: Mutex::new(HashMap::new()),
            kling: Mutex::new(HashMap::new()),
            jimeng: Mutex::new(HashMap::new()),
            siliconflow: Mutex::new(HashMap::new()),
            siliconflow_references: Mutex::new(HashMap::new()),
            siliconflow_batches: Mutex::new(Default::default()),
            mindvideo: Mutex::new(HashMap::new()),
            ark: Mutex::new(HashMap::new()),
            dashscope: Mutex::new(HashMap::new()),
            minimax: Mutex::new(Default::default()),
            suno: Mutex::new(HashMap::new()),
            ws_characters: Mutex::new(HashMap::new()),
            t2a_texts: Mutex::new(HashMap::new()),
            chunk_delay_ms,
            trace: AtomicU64::new(1),
            addr,
            cdn_downloads: AtomicU64::new(0),
            hooks: Mutex::new(Vec::new()),
        }
    }

    /// The balance `/_mock/balance` set for `key`.
    pub fn balance_of(&self, key: &str) -> Option<String> {
        self.balances.lock().unwrap_or_else(|e| e.into_inner()).get(key).cloned()
    }

    /// A key refused as if revoked (`/_mock/reject`).
    pub fn is_rejected(&self, key: &str) -> bool {
        self.rejected.lock().unwrap_or_else(|e| e.into_inner()).contains(key)
    }

    fn count(&self, key: Option<&str>) {
        self.requests.fetch_add(1, Ordering::Relaxed);
        if let Some(k) = key {
            let mut map = self.by_key.lock().unwrap_or_else(|e| e.into_inner());
            match map.get_mut(k) {
                Some(n) => *n += 1,
                None => {
                    map.insert(k.to_owned(), 1);
                }
            }
        }
    }

    fn record(&self, parts: &Parts, body: &Bytes) {
        let last = Last {
            version: parts.version,
            tls_alpn: parts.extensions.get::<Tls>().map(|t| t.0.clone()),
            method: parts.method.clone(),
            query: parts.uri.query().map(str::to_owned),
            headers: parts.headers.clone(),
            body: body.clone(),
        };
        let path = parts.uri.path();
        let mut map = self.last.lock().unwrap_or_else(|e| e.into_inner());
        match map.get_mut(path) {
            Some(slot) => *slot = last,
            None => {
                map.insert(path.to_owned(), last);
            }
        }
    }

    /// A fresh number, for ids.
    pub fn next_trace(&self) -> u64 {
        self.trace.fetch_add(1, Ordering::Relaxed)
    }

    /// A fresh 32-hex-digit trace id.
    pub fn trace_id(&self) -> String {
        format!("{:032x}", self.trace.fetch_add(1, Ordering::Relaxed))
    }

    /// The pause between stream chunks: `x-mock-delay-ms`, else `--chunk-delay-ms`.
    pub fn chunk_delay(&self, headers: &HeaderMap) -> Duration {
        Duration::from_millis(header_u64(headers, "x-mock-delay-ms").unwrap_or(self.chunk_delay_ms))
    }
}

/// One vendor request, body read, ready for a route handler.
pub struct Ctx {
    pub headers: HeaderMap,
    pub body: Bytes,
    /// A bearer token is present and does not start with `bad`.
    pub authorized: bool,
}

async fn handle(req: Request<Incoming>, state: Arc<State>) -> Response<MockBody> {
    if req.uri().path().starts_with("/_mock/") {
        return control(req, &state).await;
    }
    if req.uri().path() == minimax_ws::PATH {
        return minimax_ws::upgrade(req, state);
    }
    // Anthropic's key is its own header; every other vendor's is a Bearer token.
    let key = bearer(req.headers()).or_else(|| req.headers().get("x-api-key").and_then(|v| v.to_str().ok()));
    let authorized = key.is_some_and(|k| !k.starts_with("bad") && !state.is_rejected(k));
    if let Some(file) = req.uri().path().strip_prefix("/cdn/") {
        // A CDN: no key, not counted as a vendor call.
        return jobs::cdn(&state, file, req.uri().query().unwrap_or_default());
    }
    if let Some(file) = req.uri().path().strip_prefix(siliconflow_batches::RESULTS) {
        // SiliconFlow's batch results: a signed URL, no key, not counted as a vendor call.
        return siliconflow_batches::download(&state, file);
    }
    if req.uri().path() == "/v1/user/info" {
        // Balance reads are counted apart: `by_key` counts the calls that serve consumers.
        state.balance_reads.fetch_add(1, Ordering::Relaxed);
        return user_info(&state, key, authorized);
    }
    state.count(key);
    let key = key.map(str::to_string);
    let (parts, body) = req.into_parts();
    let body = match body.collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => return text(StatusCode::BAD_REQUEST, "unreadable body"),
    };
    state.record(&parts, &body);
    let cx = Ctx { headers: parts.headers, body, authorized };
    if let Some(path) = parts.uri.path().strip_prefix(siliconflow_batches::PREFIX).filter(|p| p.starts_with('/')) {
        let query = parts.uri.query().unwrap_or_default();
        return siliconflow_batches::route(&state, &cx, key.as_deref(), &parts.method, path, query).await;
    }
    match (&parts.method, parts.uri.path()) {
        (&Method::POST, "/v1/chat/completions") => openai::chat(&state, &cx).await,
        (&Method::POST, "/v1/messages") => anthropic::messages(&state, &cx, false).await,
        (&Method::POST, "/v1/messages/count_tokens") => anthropic::messages(&state, &cx, true).await,
        (&Method::POST, "/chat/completions") => compatible::deepseek(&state, &cx).await,
        (&Method::GET, "/user/balance") => compatible::deepseek_balance(&state, key.as_deref(), cx.authorized),
        (&Method::POST, "/api/paas/v4/chat/completions") => compatible::zhipu(&state, &cx).await,
        (&Method::POST, "/api/v3/chat/completions") => compatible::bearer_chat(&state, &cx, "ark").await,
        (&Method::POST, "/compatible-mode/v1/chat/completions") => {
            compatible::bearer_chat(&state, &cx, "dashscope").await
        }
        (&Method::POST, "/api/v1/services/aigc/text-generation/generation") => compatible::dashscope_generation(&cx),
        (&Method::POST, "/v1/audio/speech") => {
            siliconflow::foreign_reference(&state, &cx, key.as_deref()).unwrap_or_else(|| audio::speech(&cx))
        }
        (&Method::POST, "/v1/audio/transcriptions") => audio::transcription(&cx).await,
        (&Method::POST, path) if path.starts_with("/v1beta/models/") => {
            gemini::generate(&state, &cx, path, parts.uri.query().unwrap_or_default())
        }
        (&Method::POST, "/v1/embeddings") => openai::embeddings(&cx).await,
        (&Method::POST, "/v1/images/generations") => openai::images(&cx).await,
        (&Method::POST, "/v1/rerank") => openai::rerank(&cx).await,
        (&Method::GET, "/v1/models") => openai::models(&cx),
        (&Method::POST, "/v1/t2a_v2") => minimax::t2a(&state, &cx, key.as_deref()).await,
        (&Method::POST, "/v1/voice_clone") => minimax_voices::clone(&state, &cx, key.as_deref()),
        (&Method::POST, "/v1/voice_design") => minimax_voices::design(&state, &cx, key.as_deref()),
        (&Method::POST, "/v1/get_voice") => minimax_voices::list(&state, &cx, key.as_deref()),
        (&Method::POST, "/v1/delete_voice") => minimax_voices::delete(&state, &cx, key.as_deref()),
        (&Method::POST, "/v1/ndjson") => ndjson(&state, &cx, parts.uri.query().is_some_and(|q| q.contains("cut=1"))),
        (&Method::POST, "/v1/video/jobs") => jobs::submit(&state, &cx, key.as_deref()).await,
        (&Method::DELETE, path) if path.starts_with("/v1/video/jobs/") => {
            jobs::cancel(&state, &cx, key.as_deref(), &path["/v1/video/jobs/".len()..])
        }
        (&Method::GET, path) if path.starts_with("/v1/video/jobs/") => {
            jobs::query(&state, &cx, key.as_deref(), &path["/v1/video/jobs/".len()..])
        }
        (&Method::POST, "/v1/video/submit") => siliconflow::submit(&state, &cx, key.as_deref()),
        (&Method::POST, "/v1/video/status") => siliconflow::status(&state, &cx, key.as_deref()),
        (&Method::POST, "/v1/uploads/audio/voice") => siliconflow::upload_reference(&state, &cx, key.as_deref()).await,
        (&Method::GET, "/v1/audio/voice/list") => siliconflow::list_references(&state, &cx, key.as_deref()),
        (&Method::POST, "/v1/audio/voice/deletions") => siliconflow::delete_reference(&state, &cx, key.as_deref()),
        (&Method::POST, "/api/v3/contents/generations/tasks") => ark::create(&state, &cx, key.as_deref()),
        (method @ (&Method::GET | &Method::DELETE), path)
            if path.starts_with("/api/v3/contents/generations/tasks/") =>
        {
            let id = &path["/api/v3/contents/generations/tasks/".len()..];
            ark::task(&state, &cx, key.as_deref(), id, method == Method::DELETE)
        }
        (&Method::POST, "/api/v1/services/aigc/text2image/image-synthesis") => {
            dashscope::image(&state, &cx, key.as_deref())
        }
        (&Method::POST, "/api/v1/services/aigc/video-generation/video-synthesis") => {
            dashscope::submit(&state, &cx, key.as_deref())
        }
        (&Method::POST, "/api/v1/services/audio/asr/transcription") => {
            dashscope::transcription(&state, &cx, key.as_deref())
        }
        (&Method::POST, "/api/v1/services/aigc/multimodal-generation/generation") => {
            dashscope::multimodal(&state, &cx, key.as_deref())
        }
        (&Method::GET, path) if path.starts_with("/api/v1/tasks/") => {
            dashscope::task(&state, &cx, key.as_deref(), &path["/api/v1/tasks/".len()..], false)
        }
        (&Method::POST, path) if path.starts_with("/api/v1/tasks/") && path.ends_with("/cancel") => {
            let id = &path["/api/v1/tasks/".len()..path.len() - "/cancel".len()];
            dashscope::task(&state, &cx, key.as_deref(), id, true)
        }
        (&Method::POST, "/api/v2/creations") => mindvideo::create(&state, &cx, key.as_deref()),
        (&Method::GET, "/api/v2/creations/task_progress") => {
            mindvideo::progress(&state, &cx, key.as_deref(), parts.uri.query().unwrap_or_default())
        }
        (&Method::POST, "/") if parts.uri.query().is_some_and(|q| q.contains("Action=")) => {
            jimeng::action(&state, &cx, "/", parts.uri.query().unwrap_or_default())
        }
        (&Method::POST, path @ ("/v1/videos/text2video" | "/v1/videos/image2video")) => {
            kling::submit(&state, &cx, &path["/v1/videos/".len()..])
        }
        (&Method::GET, path) if path.starts_with("/v1/videos/") => match path["/v1/videos/".len()..].split_once('/') {
            Some((kind @ ("text2video" | "image2video"), id)) => kling::query(&state, &cx, kind, id),
            _ => openai::not_found(),
        },
        (&Method::POST, path) if path.starts_with("/suno/submit/") => {
            suno::submit(&state, &cx, key.as_deref(), &path["/suno/submit/".len()..])
        }
        (&Method::POST, "/suno/fetch") => suno::fetch(&state, &cx, key.as_deref(), None),
        (&Method::GET, path) if path.starts_with("/suno/fetch/") => {
            suno::fetch(&state, &cx, key.as_deref(), Some(&path["/suno/fetch/".len()..]))
        }
        (&Method::POST, "/v1/t2a_async_v2") => minimax_jobs::t2a_async(&state, &cx, key.as_deref()),
        (&Method::POST, "/v1/video_generation") => minimax_jobs::video(&state, &cx, key.as_deref()),
        (&Method::GET, "/v1/query/t2a_async_query_v2" | "/v1/query/video_generation") => {
            minimax_jobs::query(&state, &cx, key.as_deref(), parts.uri.query().unwrap_or_default())
        }
        (&Method::GET, "/v1/files/retrieve") => {
            minimax_jobs::retrieve(&state, &cx, key.as_deref(), parts.uri.query().unwrap_or_default())
        }
        (&Method::GET, "/v1/files/retrieve_content") => {
            minimax_jobs::content(&state, &cx, key.as_deref(), parts.uri.query().unwrap_or_default())
        }
        (&Method::GET, "/v1/files/list") => {
            minimax_jobs::list(&state, &cx, key.as_deref(), parts.uri.query().unwrap_or_default())
        }
        (&Method::POST, "/v1/files/upload") => minimax_jobs::upload(&state, &cx, key.as_deref()).await,
        (&Method::POST, "/v1/files/delete") => minimax_jobs::delete(&state, &cx, key.as_deref()),
        (&Method::POST, "/v1/files") => files::upload(&state, &cx, key.as_deref()).await,
        (&Method::GET, "/v1/files") => {
            let purpose = parts.uri.query().and_then(|q| query_param(q, "purpose"));
            files::list(&state, &cx, key.as_deref(), purpose).await
        }
        (&Method::GET, path) if path.starts_with("/v1/files/") => {
            files::retrieve(&state, &cx, key.as_deref(), &path["/v1/files/".len()..]).await
        }
        _ => openai::not_found(),
    }
}

/// `/_mock/stats`, `/_mock/reset`, `/_mock/last?path=...`, `/_mock/reject?key=K&on=1|0`,
/// `/_mock/balance?key=K&value=V`.
async fn control(req: Request<Incoming>, state: &State) -> Response<MockBody> {
    if (req.method(), req.uri().path()) == (&Method::POST, "/_mock/hooks") {
        return hook(req, state).await;
    }
    match (req.method(), req.uri().path()) {
        (&Method::GET, "/_mock/hooks") => {
            let hooks = state.hooks.lock().unwrap_or_else(|e| e.into_inner()).clone();
            json(StatusCode::OK, serde_json::Value::from(hooks).to_string())
        }
        (&Method::GET, "/_mock/stats") => {
            let by_key = state.by_key.lock().unwrap_or_else(|e| e.into_inner()).clone();
            let v = serde_json::json!({
                "requests": state.requests.load(Ordering::Relaxed),
                "by_key": by_key,
                "balance_reads": state.balance_reads.load(Ordering::Relaxed),
                "cdn_downloads": state.cdn_downloads.load(Ordering::Relaxed),
                "ws_characters": *state.ws_characters.lock().unwrap_or_else(|e| e.into_inner()),
                "t2a_texts": *state.t2a_texts.lock().unwrap_or_else(|e| e.into_inner()),
            });
            json(StatusCode::OK, v.to_string())
        }
        (&Method::POST, "/_mock/reset") => {
            state.requests.store(0, Ordering::Relaxed);
            state.by_key.lock().unwrap_or_else(|e| e.into_inner()).clear();
            state.last.lock().unwrap_or_else(|e| e.into_inner()).clear();
            json(StatusCode::OK, r#"{"ok":true}"#)
        }
        (&Method::POST, "/_mock/reject") => {
            let q = req.uri().query().unwrap_or_default();
            let (Some(key), on) = (query_param(q, "key"), query_param(q, "on").as_deref() != Some("0")) else {
                return json(StatusCode::BAD_REQUEST, r#"{"error":"key= is required"}"#);
            };
            let mut set = state.rejected.lock().unwrap_or_else(|e| e.into_inner());
            if on {
                set.insert(key);
            } else {
                set.remove(&key);
            }
            json(StatusCode::OK, r#"{"ok":true}"#)
        }
        (&Method::POST, "/_mock/balance") => {
            let q = req.uri().query().unwrap_or_default();
            let (Some(key), Some(value)) = (query_param(q, "key"), query_param(q, "value")) else {
                return json(StatusCode::BAD_REQUEST, r#"{"error":"key= and value= are required"}"#);
            };
            state.balances.lock().unwrap_or_else(|e| e.into_inner()).insert(key, value);
            json(StatusCode::OK, r#"{"ok":true}"#)
        }
        (&Method::GET, "/_mock/h2-connections") => {
            let n = state.h2_peers.lock().unwrap_or_else(|e| e.into_inner()).len();
            json(StatusCode::OK, format!(r#"{{"connections":{n}}}"#))
        }
        (&Method::GET, "/_mock/last") => {
            let path = req.uri().query().and_then(|q| query_param(q, "path")).unwrap_or_default();
            let map = state.last.lock().unwrap_or_else(|e| e.into_inner());
            let Some(last) = map.get(&path) else {
                return json(StatusCode::NOT_FOUND, r#"{"error":"no request recorded on that path"}"#);
            };
            json(StatusCode::OK, last_json(&path, last).to_string())
        }
        _ => json(StatusCode::NOT_FOUND, r#"{"error":"unknown control route"}"#),
    }
}

/// A consumer's callback endpoint: records each delivery (headers, body) and answers 500 to
/// the first `fail` of them (`?fail=N`), 200 after.
async fn hook(req: Request<Incoming>, state: &State) -> Response<MockBody> {
    let fail: usize = req.uri().query().and_then(|q| query_param(q, "fail")).and_then(|n| n.parse().ok()).unwrap_or(0);
    let (parts, body) = req.into_parts();
    let body = body.collect().await.map(|b| b.to_bytes()).unwrap_or_default();
    let header = |name: &str| parts.headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or_default().to_string();
    let mut hooks = state.hooks.lock().unwrap_or_else(|e| e.into_inner());
    let status = if hooks.len() < fail { StatusCode::INTERNAL_SERVER_ERROR } else { StatusCode::OK };
    hooks.push(serde_json::json!({
        "signature": header("tollgate-signature"),
        "event": header("tollgate-event"),
        "body": String::from_utf8_lossy(&body),
        "status": status.as_u16(),
    }));
    json(status, "{}")
}

/// SiliconFlow's `GET /v1/user/info`: 401 with a bare string for a refused key, 404 for a key
/// without a balance, else the account with `totalBalance`.
fn user_info(state: &State, key: Option<&str>, authorized: bool) -> Response<MockBody> {
    if !authorized {
        return json(StatusCode::UNAUTHORIZED, r#""Invalid token""#);
    }
    let balances = state.balances.lock().unwrap_or_else(|e| e.into_inner());
    match key.and_then(|k| balances.get(k)) {
        Some(b) => json(
            StatusCode::OK,
            serde_json::json!({ "code": 20000, "message": "OK", "status": true,
                "data": { "id": "u1", "balance": "0.00", "chargeBalance": b, "totalBalance": b, "status": "normal" } })
            .to_string(),
        ),
        None => text(StatusCode::NOT_FOUND, "404 page not found"),
    }
}

fn last_json(path: &str, last: &Last) -> serde_json::Value {
    let mut headers = serde_json::Map::new();
    for name in last.headers.keys() {
        let values: Vec<String> =
            last.headers.get_all(name).iter().map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned()).collect();
        headers.insert(name.as_str().to_owned(), values.join(", ").into());
    }
    serde_json::json!({
        "path": path,
        "method": last.method.as_str(),
        "version": format!("{:?}", last.version),
        "tls_alpn": last.tls_alpn,
        "query": last.query,
        "headers": headers,
        "body": String::from_utf8_lossy(&last.body),
        "body_hex": hex::encode(&last.body),
        "json": serde_json::from_slice::<serde_json::Value>(&last.body).ok(),
    })
}

/// The value of `name` in a query string, percent-decoded.
fn query_param(query: &str, name: &str) -> Option<String> {
    query.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        (k == name).then(|| percent_decode(v))
    })
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' if i + 2 < b.len() => match (hex_digit(b[i + 1]), hex_digit(b[i + 2])) {
                (Some(hi), Some(lo)) => {
                    out.push(hi << 4 | lo);
                    i += 3;
                    continue;
                }
                _ => out.push(b'%'),
            },
            b'+' => out.push(b' '),
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn hex_digit(c: u8) -> Option<u8> {
    (c as char).to_digit(16).map(|d| d as u8)
}

/// The token of `Authorization: Bearer <token>`.
fn bearer(headers: &HeaderMap) -> Option<&str> {
    let v = headers.get(AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = v.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

pub fn header_u64(headers: &HeaderMap, name: &str) -> Option<u64> {
    headers.get(name)?.to_str().ok()?.trim().parse().ok()
}

pub fn respond(status: StatusCode, content_type: &'static str, body: MockBody) -> Response<MockBody> {
    let mut r = Response::new(body);
    *r.status_mut() = status;
    r.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    r
}

pub fn json(status: StatusCode, body: impl Into<Bytes>) -> Response<MockBody> {
    respond(status, "application/json", MockBody::full(body))
}

fn text(status: StatusCode, body: &'static str) -> Response<MockBody> {
    respond(status, "text/plain", MockBody::full(body))
}

/// An SSE response whose chunks go out one frame each.
pub fn sse(chunks: Vec<Bytes>, delay: Duration, cut: bool) -> Response<MockBody> {
    let mut r = respond(StatusCode::OK, "text/event-stream", MockBody::chunks(chunks, delay, cut));
    r.headers_mut().insert("cache-control", HeaderValue::from_static("no-cache"));
    r
}

/// `POST /v1/ndjson`: a stream of JSON lines, split across chunks mid-line, ending with a
/// usage line; `?cut=1` drops the connection before the usage line.
fn ndjson(state: &State, cx: &Ctx, cut: bool) -> Response<MockBody> {
    if !cx.authorized {
        return openai::unauthorized();
    }
    let mut chunks = vec![Bytes::from_static(b"{\"n\":1}\n{\"n\""), Bytes::from_static(b":2}\n")];
    if !cut {
        chunks.push(Bytes::from_static(b"{\"done\":true,\"usage\":{\"output_tokens\":7}}\n"));
    }
    respond(StatusCode::OK, "application/x-ndjson", MockBody::chunks(chunks, state.chunk_delay(&cx.headers), cut))
}

/// Fault-injection models shared by the vendor routes.
#[derive(Debug, PartialEq)]
pub enum Fault {
    None,
    /// `fail-<n>`.
    Fail(u32),
    /// `slow-<ms>`: answer after that long.
    Slow(u64),
    /// `hang`: never answer.
    Hang,
    /// `cut-stream`: drop the connection mid-stream.
    Cut,
    /// `garbled-200`: do the work, then answer HTTP 200 with a body cut off mid-JSON.
    Garbled,
}

impl Fault {
    pub fn of(model: &str) -> Fault {
        if let Some(n) = model.strip_prefix("fail-").and_then(|n| n.parse().ok()) {
            Fault::Fail(n)
        } else if let Some(ms) = model.strip_prefix("slow-").and_then(|n| n.parse().ok()) {
            Fault::Slow(ms)
        } else if model == "hang" {
            Fault::Hang
        } else if model == "cut-stream" {
            Fault::Cut
        } else if model == "garbled-200" {
            Fault::Garbled
        } else {
            Fault::None
        }
    }

    /// Sleeps for `slow-*` and `hang`; returns at once otherwise.
    pub async fn pause(&self) {
        match self {
            Fault::Slow(ms) => tokio::time::sleep(Duration::from_millis(*ms)).await,
            Fault::Hang => tokio::time::sleep(Duration::from_secs(3600)).await,
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn faults_parse() {
        assert_eq!(Fault::of("fail-429"), Fault::Fail(429));
        assert_eq!(Fault::of("slow-250"), Fault::Slow(250));
        assert_eq!(Fault::of("hang"), Fault::Hang);
        assert_eq!(Fault::of("cut-stream"), Fault::Cut);
        assert_eq!(Fault::of("garbled-200"), Fault::Garbled);
        assert_eq!(Fault::of("gpt-4o"), Fault::None);
        assert_eq!(Fault::of("slow-x"), Fault::None);
    }

    #[test]
    fn query_params_decode() {
        let q = "a=1&path=%2Fv1%2Fchat%2Fcompletions&x";
        assert_eq!(query_param(q, "path").as_deref(), Some("/v1/chat/completions"));
        assert_eq!(query_param("path=/v1/t2a_v2", "path").as_deref(), Some("/v1/t2a_v2"));
        assert_eq!(query_param("path=%2", "path").as_deref(), Some("%2"));
        assert_eq!(query_param("x=1", "path"), None);
    }

    #[test]
    fn bearer_tokens() {
        let mut h = HeaderMap::new();
        assert_eq!(bearer(&h), None);
        h.insert(AUTHORIZATION, HeaderValue::from_static("Bearer sk-1"));
        assert_eq!(bearer(&h), Some("sk-1"));
        h.insert(AUTHORIZATION, HeaderValue::from_static("Basic abc"));
        assert_eq!(bearer(&h), None);
    }
}
