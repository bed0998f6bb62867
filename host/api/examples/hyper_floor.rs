//! The floor under Tollgate's request path: the same stack (hyper server and client, one
//! single-threaded runtime per worker, connections spread over them, bodies collected both
//! ways) proxying to an upstream with nothing else: no auth, plugin, billing or log. What
//! Tollgate costs above this is its own; what this costs above nginx is the stack's.
//!
//! `cargo run --release -p tollgate-api --example hyper_floor -- http://127.0.0.1:PORT [WORKERS]`
//! prints `listening 127.0.0.1:N`; drive it like the gateway (tests/bench/post.lua).

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::service::service_fn;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};

fn main() -> anyhow::Result<()> {
    let upstream: String = std::env::args().nth(1).expect("usage: hyper_floor UPSTREAM_URL [WORKERS]");
    let n: usize = std::env::args().nth(2).map(|s| s.parse()).transpose()?.unwrap_or(2).max(1);
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    println!("listening {}", listener.local_addr()?);
    let mut workers = Vec::with_capacity(n);
    for _ in 0..n {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel::<std::net::TcpStream>();
        let upstream = upstream.clone();
        std::thread::spawn(move || worker(upstream, rx));
        workers.push(tx);
    }
    for (i, stream) in listener.incoming().enumerate() {
        workers[i % n].send(stream?)?;
    }
    Ok(())
}

fn worker(upstream: String, mut connections: tokio::sync::mpsc::UnboundedReceiver<std::net::TcpStream>) {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("a runtime");
    rt.block_on(async move {
        let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
        while let Some(stream) = connections.recv().await {
            let Ok(stream) = stream.set_nonblocking(true).and_then(|()| tokio::net::TcpStream::from_std(stream)) else {
                continue;
            };
            let _ = stream.set_nodelay(true);
            let (client, upstream) = (client.clone(), upstream.clone());
            tokio::task::spawn(async move {
                let service = service_fn(move |request: hyper::Request<hyper::body::Incoming>| {
                    let (client, upstream) = (client.clone(), upstream.clone());
                    async move {
                        let (parts, body) = request.into_parts();
                        let body = body.collect().await?.to_bytes();
                        let forward = hyper::Request::builder()
                            .method(parts.method)
                            .uri(format!("{upstream}{}", parts.uri.path()))
                            .header("content-type", "application/json")
                            .header("authorization", "Bearer sk-upstream-1")
                            .body(Full::new(body))
                            .expect("a valid request");
                        let answer = match client.request(forward).await {
                            Ok(answer) => answer,
                            Err(_) => {
                                let mut bad = hyper::Response::new(Full::new(Bytes::new()));
                                *bad.status_mut() = hyper::StatusCode::BAD_GATEWAY;
                                return Ok(bad);
                            }
                        };
                        let (parts, body) = answer.into_parts();
                        let body = body.collect().await?.to_bytes();
                        Ok::<_, hyper::Error>(hyper::Response::from_parts(parts, Full::new(body)))
                    }
                });
                let _ =
                    hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), service).await;
            });
        }
    });
}
