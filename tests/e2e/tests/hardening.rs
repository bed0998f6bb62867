//! Cheap denial of service, refused: a consumer that stops reading a stream, bodies that
//! trickle in or are too large for the route, connection floods, password guessing and key
//! spam. Each limit is a setting; the tests set them low. And a connection is never closed
//! behind a client's back.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;
use tollgate_e2e::{channel, eventually, http, pricing_setting, Gateway, Mock};

const PRICES: &str = r#"
[models."chunks-200000"]
input_per_million = "1"
output_per_million = "1"
max_output_tokens = 1000
"#;

fn gateway(mock: &Mock, name: &str, settings: &str) -> Gateway {
    let ch = channel("mock", "openai", &mock.url(), &["gpt-4o-mini", "chunks-200000"], &["up"]);
    Gateway::start(name, &[("openai", "openai.wasm")], &format!("{settings}{ch}"))
}

fn raw_request(addr: &str, head: &str, body: &[u8]) -> TcpStream {
    let mut s = TcpStream::connect(addr).unwrap();
    s.write_all(head.as_bytes()).unwrap();
    s.write_all(body).unwrap();
    s
}

#[test]
fn a_consumer_that_stops_reading_a_stream_is_cut_and_billed_for_what_was_delivered() {
    let mock = Mock::start();
    let gw = gateway(&mock, "stalled", &format!("stream_write_timeout_ms = 500\n{}", pricing_setting(PRICES)));
    let body = r#"{"model":"chunks-200000","messages":[],"stream":true}"#;
    let head = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
        gw.key,
        body.len()
    );
    let mut stalled = raw_request(&gw.addr, &head, body.as_bytes());
    let mut first = [0u8; 512];
    let n = stalled.read(&mut first).unwrap();
    assert!(String::from_utf8_lossy(&first[..n]).starts_with("HTTP/1.1 200"), "the stream started");
    // The consumer reads nothing more; the gateway gives up on it and frees the call.
    assert!(
        eventually(Duration::from_secs(15), || gw.metric("tollgate_in_flight") == 0.0),
        "the stalled stream still holds its slot"
    );
    let logs = || {
        http::request(&gw.addr, "GET", "/v1/user/logs", &[("authorization", &format!("Bearer {}", gw.key))], b"").json()
    };
    assert!(
        eventually(Duration::from_secs(5), || {
            let c = &logs()["data"][0];
            c["error"] == "client_gone" && c["interrupted"] == true && c["charge"] != "0.000000"
        }),
        "recorded as client_gone, billed for what was delivered: {}",
        logs()
    );
    drop(stalled);
}

#[test]
fn bodies_that_trickle_or_overflow_an_account_route_are_refused() {
    let mock = Mock::start();
    let gw = gateway(
        &mock,
        "bodies",
        "body_read_timeout_ms = 300\nallow_registration = true\nallow_unbilled_registration = true\n",
    );
    // Declares 100 bytes, sends 10, then waits: 408 once the read deadline passes.
    let head = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {}\r\ncontent-length: 100\r\n\r\n",
        gw.key
    );
    let mut s = raw_request(&gw.addr, &head, b"{\"model\":");
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut answer = [0u8; 64];
    let n = s.read(&mut answer).unwrap();
    assert!(
        String::from_utf8_lossy(&answer[..n]).starts_with("HTTP/1.1 408"),
        "{}",
        String::from_utf8_lossy(&answer[..n])
    );
    // Account routes read small bodies only.
    let big = format!(r#"{{"name":"ann","password":"{}"}}"#, "p".repeat(20_000));
    let r = http::request(&gw.addr, "POST", "/v1/auth/register", &[], big.as_bytes());
    assert_eq!((r.status, r.error_code().as_str()), (413, "request_too_large"), "{}", r.text());
    let long = format!(r#"{{"name":"ann","password":"{}"}}"#, "p".repeat(1_000));
    let r = http::request(&gw.addr, "POST", "/v1/auth/register", &[], long.as_bytes());
    assert_eq!((r.status, r.error_code().as_str()), (400, "weak_password"), "a 1,000-byte password: {}", r.text());
}

#[test]
fn an_answer_given_before_the_body_is_read_says_the_connection_closes() {
    let mock = Mock::start();
    let gw = gateway(&mock, "unread", "");
    let bearer = format!("authorization: Bearer {}\r\n", gw.key);
    // Only the head is sent: the gateway answers without the body, and the connection cannot
    // be reused; the answer must say so, or the client's next request meets a closed socket.
    for (path, auth, status) in [
        ("/v1/videos/video_1/remix", bearer.as_str(), 404),
        ("/v1/no/such/route", bearer.as_str(), 404),
        ("/v1/chat/completions", "", 401),
    ] {
        let head = format!("POST {path} HTTP/1.1\r\nhost: x\r\n{auth}content-length: 20\r\n\r\n");
        let mut s = raw_request(&gw.addr, &head, b"");
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut raw = Vec::new();
        s.read_to_end(&mut raw).unwrap_or_else(|e| panic!("{path}: the connection stayed open ({e})"));
        let answer = tollgate_e2e::http::parse(&raw).unwrap();
        assert_eq!((answer.status, answer.header("connection")), (status, Some("close")), "{path}: {}", answer.text());
    }
    // A WebSocket's 101 keeps its `connection: upgrade`, a body declared and unread or not.
    use tungstenite::client::IntoClientRequest;
    let mut upgrade = format!("ws://{}/v1/tasks/ws", gw.addr).into_client_request().unwrap();
    upgrade.headers_mut().insert("authorization", format!("Bearer {}", gw.key).parse().unwrap());
    upgrade.headers_mut().insert("content-length", "20".parse().unwrap());
    let stream = TcpStream::connect(&gw.addr).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let (_socket, answer) = tungstenite::client(upgrade, stream).expect("the upgrade");
    assert_eq!(answer.status(), 101);
    // A body read whole keeps the connection open: two calls on one socket.
    let body = r#"{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi"}]}"#;
    let call = |last: &str| {
        format!(
            "POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\n{bearer}{last}content-length: {}\r\n\r\n{body}",
            body.len()
        )
    };
    let mut s = raw_request(&gw.addr, &call(""), b"");
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let (mut raw, mut buf) = (Vec::new(), [0u8; 4096]);
    let first = loop {
        let n = s.read(&mut buf).unwrap_or_else(|e| panic!("no whole answer ({e}): {}", String::from_utf8_lossy(&raw)));
        assert!(n > 0, "closed after {}", String::from_utf8_lossy(&raw));
        raw.extend_from_slice(&buf[..n]);
        let whole = tollgate_e2e::http::parse(&raw)
            .filter(|a| a.header("content-length").and_then(|l| l.parse().ok()) == Some(a.body.len()));
        if let Some(answer) = whole {
            break answer;
        }
    };
    assert_eq!((first.status, first.header("connection")), (200, None), "{}", first.text());
    s.write_all(call("connection: close\r\n").as_bytes()).unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).unwrap_or_else(|e| panic!("the second call was not answered and closed ({e})"));
    assert_eq!(tollgate_e2e::http::parse(&raw).unwrap().status, 200, "{}", String::from_utf8_lossy(&raw));
}

#[test]
fn connections_beyond_the_cap_wait_until_one_closes() {
    let mock = Mock::start();
    let gw = gateway(&mock, "conncap", "max_connections = 2\n");
    // Two idle keep-alive connections hold both slots (the test's own health checks closed).
    let health = "GET /health HTTP/1.1\r\nhost: x\r\n\r\n";
    let mut held: Vec<TcpStream> = (0..2).map(|_| raw_request(&gw.addr, health, b"")).collect();
    for s in &mut held {
        let mut buf = [0u8; 256];
        assert!(s.read(&mut buf).unwrap() > 0);
    }
    let mut third = raw_request(&gw.addr, health, b"");
    third.set_read_timeout(Some(Duration::from_millis(700))).unwrap();
    let mut buf = [0u8; 256];
    assert!(third.read(&mut buf).is_err(), "not served while two connections hold the slots");
    drop(held.pop());
    third.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let n = third.read(&mut buf).unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"), "served once a slot is free");
}

#[test]
fn password_guessing_is_throttled_per_address_and_key_spam_is_capped() {
    let mock = Mock::start();
    let gw = gateway(
        &mock,
        "throttle",
        "auth_attempts_per_minute = 4\nmax_keys_per_user = 2\nallow_registration = true\nallow_unbilled_registration = true\n",
    );
    let post = |path: &str, bearer: &str, body: &str| {
        http::request(&gw.addr, "POST", path, &[("authorization", &format!("Bearer {bearer}"))], body.as_bytes())
    };
    let r = post("/v1/auth/register", "", r#"{"name":"ann","password":"correct horse"}"#);
    assert_eq!(r.status, 201, "{}", r.text());
    let token = r.json()["token"].as_str().unwrap().to_string();
    for _ in 0..3 {
        assert_eq!(post("/v1/auth/login", "", r#"{"name":"ann","password":"wrong horse"}"#).status, 401);
    }
    let r = post("/v1/auth/login", "", r#"{"name":"ann","password":"correct horse"}"#);
    assert_eq!((r.status, r.error_code().as_str()), (429, "too_many_attempts"), "{}", r.text());
    assert!(r.header("retry-after").is_some());

    for i in 0..2 {
        let r = post("/v1/user/keys", &token, &format!(r#"{{"name":"k{i}"}}"#));
        assert_eq!(r.status, 201, "{}", r.text());
    }
    let r = post("/v1/user/keys", &token, r#"{"name":"k3"}"#);
    assert_eq!((r.status, r.error_code().as_str()), (403, "too_many_keys"), "{}", r.text());
    let r = post("/v1/user/keys", &token, &format!(r#"{{"name":"{}"}}"#, "n".repeat(100)));
    assert_eq!(r.status, 403, "the cap is checked first");
}
