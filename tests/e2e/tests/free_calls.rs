//! Ways a consumer with a small balance could get service for free, each closed, through the
//! real binary: a repeated `Idempotency-Key`, a wrongly typed or hidden billing field, an
//! answer the plugin cannot read, a stream asked for with an escaped key, a client that leaves
//! before the answer, and a key created under a name a stranger registered.

use std::io::Write;
use std::time::Duration;
use tollgate_e2e::{channel, eventually, http, pricing_setting, Gateway, Mock};

/// A chat with the mock's usage (9 in, 3 out) costs 3009 micros; reserving 1000 output
/// tokens holds about 1.0.
const PRICES: &str = r#"
[models."gpt-4o-mini"]
input_per_million = "1"
output_per_million = "1000"
max_output_tokens = 1000
[models."slow-1500"]
input_per_million = "1"
output_per_million = "1000"
max_output_tokens = 1000
[models."fail-500"]
per_call = "1"
[models."garbled-200"]
per_call = "0.25"
[models."speech-2.8-hd"]
characters_per_10k = "1"
"#;

fn gateway(mock: &Mock, name: &str) -> Gateway {
    gateway_with(mock, name, "")
}

/// `settings`: top-level settings, written before the channels.
fn gateway_with(mock: &Mock, name: &str, settings: &str) -> Gateway {
    let openai = channel(
        "mock",
        "openai",
        &mock.url(),
        &["gpt-4o-mini", "slow-1500", "fail-500", "garbled-200"],
        &["up-1", "up-2"],
    );
    let minimax = channel("mm", "minimax", &mock.url(), &["speech-2.8-hd"], &["mm-key"]);
    Gateway::start(
        name,
        &[("openai", "openai.wasm"), ("minimax", "minimax.wasm")],
        &format!("{settings}{}{openai}{minimax}", pricing_setting(PRICES)),
    )
}

fn upstream_calls(mock: &Mock) -> u64 {
    mock.stats()["requests"].as_u64().unwrap()
}

fn call(gw: &Gateway, key: &str, path: &str, idem: Option<&str>, body: &str) -> http::Response {
    let auth = format!("Bearer {key}");
    let mut headers = vec![("authorization", auth.as_str())];
    if let Some(k) = idem {
        headers.push(("idempotency-key", k));
    }
    http::request(&gw.addr, "POST", path, &headers, body.as_bytes())
}

#[test]
fn a_repeated_idempotency_key_replays_the_first_answer_and_never_calls_the_upstream_again() {
    let mock = Mock::start();
    let gw = gateway(&mock, "idem-replay");
    let initial = gw.balance_micros("e2e");
    let chat = r#"{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi"}]}"#;
    let first = call(&gw, &gw.key, "/v1/chat/completions", Some("order-42"), chat);
    assert_eq!(first.status, 200, "{}", first.text());
    let before = upstream_calls(&mock);
    for _ in 0..3 {
        let again = call(&gw, &gw.key, "/v1/chat/completions", Some("order-42"), chat);
        assert_eq!(again.status, 200, "{}", again.text());
        assert_eq!(again.header("idempotent-replayed"), Some("true"));
        assert_eq!(again.body, first.body, "the first answer, byte for byte");
    }
    // Another body, model or route under the same key is refused, never run.
    let other = r#"{"model":"gpt-4o-mini","messages":[{"role":"user","content":"something else"}]}"#;
    let r = call(&gw, &gw.key, "/v1/chat/completions", Some("order-42"), other);
    assert_eq!((r.status, r.error_code().as_str()), (422, "idempotency_key_reused"), "{}", r.text());
    let r = call(&gw, &gw.key, "/v1/audio/speech", Some("order-42"), r#"{"model":"speech-2.8-hd","input":"hi"}"#);
    assert_eq!(r.status, 422, "{}", r.text());
    assert_eq!(upstream_calls(&mock), before, "no repeat reached the upstream");

    // A stream is replayed as it was sent.
    let stream = r#"{"model":"gpt-4o-mini","messages":[],"stream":true}"#;
    let first = call(&gw, &gw.key, "/v1/chat/completions", Some("stream-1"), stream);
    assert_eq!(first.status, 200);
    assert!(first.text().contains("[DONE]"), "{}", first.text());
    let before = upstream_calls(&mock);
    let mut last = None;
    let replayed = eventually(Duration::from_secs(5), || {
        let r = call(&gw, &gw.key, "/v1/chat/completions", Some("stream-1"), stream);
        let ok = r.status == 200 && r.body == first.body && r.header("idempotent-replayed") == Some("true");
        last = Some(r);
        ok
    });
    let last = last.unwrap();
    assert!(replayed, "{} {:?}: {}\nfirst: {}", last.status, last.headers, last.text(), first.text());
    assert_eq!(upstream_calls(&mock), before, "the stream's replay never reached the upstream");

    // A call that failed cost nothing and gave its key up: a retry runs (and is free again).
    assert_eq!(call(&gw, &gw.key, "/v1/chat/completions", Some("f"), r#"{"model":"fail-500"}"#).status, 502);
    let before = upstream_calls(&mock);
    assert_eq!(call(&gw, &gw.key, "/v1/chat/completions", Some("f"), r#"{"model":"fail-500"}"#).status, 502);
    assert!(upstream_calls(&mock) > before, "the retry of a failed call runs");

    assert!(
        eventually(Duration::from_secs(5), || gw.balance_micros("e2e") == initial - 3_009 - 5_009),
        "one chat and one stream, each charged once: {}",
        gw.balance_micros("e2e")
    );
    let (ok, out) = gw.verify_ledger();
    assert!(ok, "{out}");
    assert_eq!(call(&gw, &gw.key, "/v1/chat/completions", Some("bad key with spaces"), chat).status, 400);
}

#[test]
fn a_repeat_while_the_first_call_runs_is_told_so() {
    let mock = Mock::start();
    let gw = gateway(&mock, "idem-busy");
    let body = r#"{"model":"slow-1500","messages":[]}"#;
    std::thread::scope(|s| {
        let first = s.spawn(|| call(&gw, &gw.key, "/v1/chat/completions", Some("busy"), body));
        std::thread::sleep(Duration::from_millis(400));
        let r = call(&gw, &gw.key, "/v1/chat/completions", Some("busy"), body);
        assert_eq!((r.status, r.error_code().as_str()), (409, "idempotency_key_in_use"), "{}", r.text());
        assert_eq!(first.join().unwrap().status, 200);
    });
    assert_eq!(upstream_calls(&mock), 1);
}

#[test]
fn a_wrongly_typed_or_hidden_billing_field_never_makes_a_call_free() {
    let mock = Mock::start();
    let gw = gateway(&mock, "typed");
    let zero = gw.create_key("zero", "0");
    let small = gw.create_key("small", "0.001");
    for key in [&zero, &small] {
        assert!(eventually(Duration::from_secs(5), || gw.chat(key, "gpt-4o-mini", "").status == 402));
    }
    let speech = |key: &str, body: &str| call(&gw, key, "/v1/audio/speech", None, body);

    // A mistyped field used to reset the estimate to nothing: now the host's estimate refuses
    // it; and MiniMax's speech, which its plugin quotes from what it sends (`input`), is
    // reserved that, whatever else the body holds: never free.
    let r = speech(&zero, r#"{"model":"speech-2.8-hd","input":"Hello world","n":"x"}"#);
    assert_eq!((r.status, r.error_code().as_str()), (402, "insufficient_balance"), "{}", r.text());
    let r = speech(&zero, r#"{"model":"speech-2.8-hd","input":7}"#);
    assert_eq!(r.status, 400, "{}", r.text());
    let r = gw.chat(&gw.key, "gpt-4o-mini", r#","max_tokens":"x""#);
    assert_eq!((r.status, r.json()["error"]["param"].as_str()), (400, Some("max_tokens")), "{}", r.text());
    // A priced call whose estimate is nothing is still refused at zero balance.
    let r = speech(&zero, r#"{"model":"speech-2.8-hd","input":""}"#);
    assert_eq!((r.status, r.error_code().as_str()), (402, "insufficient_balance"), "{}", r.text());
    // MiniMax reads `text`: an empty `input` beside it no longer hides it (20,000 characters
    // reserve 2.0 at 1 per 10k, more than 'small' holds).
    let long = "x".repeat(20_000);
    let r = call(
        &gw,
        &small,
        "/v1/t2a_v2",
        None,
        &format!(r#"{{"model":"speech-2.8-hd","input":"","text":"{long}","stream":false}}"#),
    );
    assert_eq!((r.status, r.error_code().as_str()), (402, "insufficient_balance"), "{}", r.text());
    assert_eq!(upstream_calls(&mock), 0, "no refused call reached the upstream");
}

#[test]
fn a_call_the_vendor_answered_is_billed_even_when_its_answer_cannot_be_read_and_is_never_resent() {
    let mock = Mock::start();
    let gw = gateway(&mock, "garbled");
    let initial = gw.balance_micros("e2e");
    let r = gw.chat(&gw.key, "garbled-200", "");
    assert_eq!(r.status, 502, "{}", r.text());
    assert_eq!(upstream_calls(&mock), 1, "not resent on the channel's other key");
    assert!(
        eventually(Duration::from_secs(5), || gw.balance_micros("e2e") == initial - 250_000),
        "charged its reservation: {}",
        gw.balance_micros("e2e")
    );
    let logs =
        http::request(&gw.addr, "GET", "/v1/user/logs", &[("authorization", &format!("Bearer {}", gw.key))], b"")
            .json();
    assert_eq!(logs["data"][0]["charge"], "0.250000", "{logs}");
}

#[test]
fn a_stream_asked_for_with_an_escaped_key_streams_and_is_billed() {
    let mock = Mock::start();
    let gw = gateway(&mock, "escaped");
    let initial = gw.balance_micros("e2e");
    let r =
        call(&gw, &gw.key, "/v1/chat/completions", None, r#"{"model":"gpt-4o-mini","messages":[],"str\u0065am":true}"#);
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(r.header("content-type").unwrap_or("").starts_with("text/event-stream"), "{:?}", r.header("content-type"));
    assert_eq!(upstream_calls(&mock), 1);
    assert!(eventually(Duration::from_secs(5), || gw.balance_micros("e2e") < initial), "the stream was charged");
    let r = call(&gw, &gw.key, "/v1/chat/completions", None, r#"{"model":"gpt-4o-mini","stream":false,"stream":true}"#);
    assert_eq!(r.status, 400, "a key written twice is refused: {}", r.text());
}

#[test]
fn a_client_that_leaves_before_the_answer_pays_for_it_and_leaves_no_reservation() {
    let mock = Mock::start();
    let gw = gateway(&mock, "leaves");
    // 5 covers the three calls left in flight (~1.0 reserved each); a leaked reservation
    // would then refuse the call that reserves 4.9.
    let key = gw.create_key("leaver", "5");
    assert!(eventually(Duration::from_secs(5), || gw.chat(&key, "gpt-4o-mini", "").status == 200));
    for _ in 0..3 {
        let mut s = std::net::TcpStream::connect(&gw.addr).unwrap();
        let body = r#"{"model":"slow-1500","messages":[]}"#;
        write!(
            s,
            "POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {key}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
            body.len()
        )
        .unwrap();
        std::thread::sleep(Duration::from_millis(300));
        drop(s);
    }
    assert!(
        eventually(Duration::from_secs(10), || gw.chat(&key, "gpt-4o-mini", r#","max_tokens":4900"#).status == 200),
        "the reservations came back"
    );
    let logs =
        || http::request(&gw.addr, "GET", "/v1/user/logs", &[("authorization", &format!("Bearer {key}"))], b"").json();
    assert!(
        eventually(Duration::from_secs(5), || {
            let logs = logs();
            let left = logs["data"].as_array().unwrap().iter().filter(|c| c["model"] == "slow-1500");
            left.filter(|c| c["status"] == 200 && c["charge"] == "0.003009").count() == 3
        }),
        "each call that was left finished, was billed by its usage and recorded: {}",
        logs()
    );
    let (ok, out) = gw.verify_ledger();
    assert!(ok, "{out}");
}

#[test]
fn keys_create_never_hands_a_key_and_its_grant_to_a_user_who_registered_that_name() {
    let mock = Mock::start();
    let gw = gateway_with(&mock, "squat", "allow_registration = true\n");
    let r = http::request(
        &gw.addr,
        "POST",
        "/v1/auth/register",
        &[],
        br#"{"name":"customer-x","password":"a long password"}"#,
    );
    assert_eq!(r.status, 201, "{}", r.text());
    let out = tollgate_e2e::tollgate_command()
        .arg("--config")
        .arg(&gw.config)
        .args(["keys", "create", "--name", "customer-x", "--balance", "100"])
        .output()
        .unwrap();
    assert!(!out.status.success(), "refused");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--user customer-x"), "says how to mean it: {err}");
    let users = Gateway::cli(&gw.config, &["users", "list"]);
    let line = users.lines().find(|l| l.contains("customer-x")).unwrap_or_else(|| panic!("{users}"));
    assert!(line.contains("0.000000") && !line.contains("100.000000"), "no grant: {line}");
    // A name the operator's own key command created takes more keys, as before.
    gw.create_key("ops-batch", "1");
    gw.create_key("ops-batch", "1");
}

#[test]
fn a_call_that_timed_out_after_reaching_the_vendor_is_billed_as_reserved_and_never_resent() {
    let mock = Mock::start();
    let gw = gateway_with(&mock, "timeout", "upstream_timeout_ms = 300\n");
    let initial = gw.balance_micros("e2e");
    let body = r#"{"model":"slow-1500","messages":[],"max_tokens":10}"#;
    let r = call(&gw, &gw.key, "/v1/chat/completions", None, body);
    assert_eq!((r.status, r.error_code().as_str()), (504, "upstream_timeout"), "{}", r.text());
    assert_eq!(upstream_calls(&mock), 1, "not resent on the channel's other key");
    // Reserved: 10 output tokens at 1000 per million and the input estimate at 1 per million.
    let reserved = 10_000 + (body.len() as i64 + 1) / 2;
    assert!(
        eventually(Duration::from_secs(5), || gw.balance_micros("e2e") == initial - reserved),
        "charged its reservation: {} of {initial}",
        gw.balance_micros("e2e")
    );
}
