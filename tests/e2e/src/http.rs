//! A minimal HTTP/1.1 client for tests: one request per connection (`Connection: close`),
//! content-length and chunked bodies, and a streaming read that timestamps each chunk.

use serde_json::Value;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.text()))
    }
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
    /// The OpenAI error code of an error body.
    pub fn error_code(&self) -> String {
        self.json()["error"]["code"].as_str().unwrap_or_default().to_string()
    }
    /// The `data:` payloads of an SSE body.
    pub fn sse_data(&self) -> Vec<String> {
        sse_data(&self.text())
    }
}

pub fn sse_data(text: &str) -> Vec<String> {
    text.split("\n\n")
        .flat_map(|ev| {
            ev.lines()
                .filter_map(|l| l.strip_prefix("data: ").or_else(|| l.strip_prefix("data:")))
                .map(str::to_string)
                .collect::<Vec<_>>()
        })
        .collect()
}

fn write_request(
    stream: &mut TcpStream,
    addr: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> std::io::Result<()> {
    let mut req =
        format!("{method} {path} HTTP/1.1\r\nhost: {addr}\r\nconnection: close\r\ncontent-length: {}\r\n", body.len());
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    stream.write_all(req.as_bytes())?;
    stream.write_all(body)
}

pub fn try_request(addr: &str, method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> Option<Response> {
    let mut stream = TcpStream::connect(addr).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(60))).ok()?;
    write_request(&mut stream, addr, method, path, headers, body).ok()?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).ok()?;
    parse(&raw)
}

pub fn request(addr: &str, method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> Response {
    try_request(addr, method, path, headers, body).unwrap_or_else(|| panic!("{method} {path} to {addr} failed"))
}

/// Parses one whole answer as read from a socket.
pub fn parse(raw: &[u8]) -> Option<Response> {
    let end = raw.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = std::str::from_utf8(&raw[..end]).ok()?;
    let mut lines = head.split("\r\n");
    let status = lines.next()?.split(' ').nth(1)?.parse().ok()?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let rest = &raw[end + 4..];
    let chunked = headers.iter().any(|(k, v)| k == "transfer-encoding" && v.contains("chunked"));
    let body = if chunked { dechunk(rest) } else { rest.to_vec() };
    Some(Response { status, headers, body })
}

fn dechunk(mut data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(pos) = data.windows(2).position(|w| w == b"\r\n") {
        let size_line = std::str::from_utf8(&data[..pos]).unwrap_or("0");
        let size = usize::from_str_radix(size_line.split(';').next().unwrap_or("0").trim(), 16).unwrap_or(0);
        data = &data[pos + 2..];
        if size == 0 || data.len() < size {
            out.extend_from_slice(&data[..size.min(data.len())]);
            break;
        }
        out.extend_from_slice(&data[..size]);
        data = &data[(size + 2).min(data.len())..];
    }
    out
}

/// A streamed response: the body as it arrived, each read with the time since the request.
pub struct Timed {
    pub status: u16,
    pub pieces: Vec<(Duration, Vec<u8>)>,
}

impl Timed {
    /// When the first byte containing `needle` arrived.
    pub fn arrival_of(&self, needle: &str) -> Option<Duration> {
        let mut seen = Vec::new();
        for (t, p) in &self.pieces {
            seen.extend_from_slice(p);
            if String::from_utf8_lossy(&seen).contains(needle) {
                return Some(*t);
            }
        }
        None
    }
    pub fn text(&self) -> String {
        let all: Vec<u8> = self.pieces.iter().flat_map(|(_, p)| p.clone()).collect();
        let raw = String::from_utf8_lossy(&all).into_owned();
        match raw.split_once("\r\n\r\n") {
            Some((_, body)) => String::from_utf8_lossy(&dechunk(body.as_bytes())).into_owned(),
            None => raw,
        }
    }
}

/// Sends a request and records every read of the response with its arrival time.
pub fn timed(addr: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> Timed {
    let mut stream = TcpStream::connect(addr).expect("connect");
    stream.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    let start = Instant::now();
    write_request(&mut stream, addr, "POST", path, headers, body).expect("write");
    let mut pieces = Vec::new();
    let mut buf = [0u8; 16384];
    loop {
        match stream.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => pieces.push((start.elapsed(), buf[..n].to_vec())),
        }
    }
    let first: Vec<u8> = pieces.first().map(|(_, p)| p.clone()).unwrap_or_default();
    let status = String::from_utf8_lossy(&first).split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    Timed { status, pieces }
}
