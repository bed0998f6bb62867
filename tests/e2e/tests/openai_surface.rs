//! The OpenAI-compatible surface through the real binary and the `openai` plugin: every route,
//! every error the foundation promises, streaming that is incremental, upstream faults.

use std::time::Duration;
use tollgate_e2e::{channel, chats_over_http2_and_http1, eventually, http, Gateway, Mock};

const CHAT: &str = r#"{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi"}]}"#;

fn gateway(mock: &Mock, extra: &str) -> Gateway {
    let models = ["gpt-4o-mini", "text-embedding-3-small", "fail-500", "fail-429", "hang", "cut-stream", "alias"];
    let ch = channel("mock", "openai", &mock.url(), &models, &["up-key-1", "up-key-2"]);
    Gateway::start(
        "openai",
        &[("openai", "openai.wasm")],
        &format!("{extra}\n{ch}\n[channel.model_map]\nalias = \"gpt-4o-mini\"\n"),
    )
}

#[test]
fn chat_embeddings_models_and_health() {
    let mock = Mock::start();
    let gw = gateway(&mock, "");

    let r = http::request(&gw.addr, "GET", "/health", &[], b"");
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["plugins"], 1);

    let r = gw.post("/v1/chat/completions", CHAT);
    assert_eq!(r.status, 200, "{}", r.text());
    let v = r.json();
    assert_eq!(v["choices"][0]["message"]["content"], "Hello from mock");
    assert_eq!(v["usage"]["total_tokens"], 12);
    assert!(r.header("x-request-id").is_some_and(|id| id.starts_with("req-")));

    let r = gw.post("/v1/embeddings", r#"{"model":"text-embedding-3-small","input":["a","b"]}"#);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["data"].as_array().unwrap().len(), 2);

    let r = http::request(&gw.addr, "GET", "/v1/models", &[("authorization", &format!("Bearer {}", gw.key))], b"");
    let ids: Vec<String> =
        r.json()["data"].as_array().unwrap().iter().map(|m| m["id"].as_str().unwrap().to_string()).collect();
    assert!(ids.contains(&"gpt-4o-mini".to_string()) && ids.contains(&"text-embedding-3-small".to_string()), "{ids:?}");

    // Upstream keys are used in turn, and the consumer's key never reaches the upstream.
    for _ in 0..4 {
        assert_eq!(gw.post("/v1/chat/completions", CHAT).status, 200);
    }
    let stats = mock.stats();
    let by_key = &stats["by_key"];
    assert!(by_key["up-key-1"].as_u64().unwrap() >= 2 && by_key["up-key-2"].as_u64().unwrap() >= 2, "{stats}");
    assert!(by_key.get(&gw.key).is_none());

    // A model alias is sent upstream under the channel's name for it.
    assert_eq!(gw.post("/v1/chat/completions", r#"{"model":"alias","messages":[]}"#).status, 200);
    let last = mock.last_body("/v1/chat/completions");
    let sent: serde_json::Value = serde_json::from_str(last["body"].as_str().unwrap()).unwrap();
    assert_eq!(sent["model"], "gpt-4o-mini", "{last}");

    // Every call is recorded by the batching writer, which has found at least one waiting.
    assert!(eventually(Duration::from_secs(5), || {
        gw.metric("tollgate_call_records_written_total") >= 7.0 && gw.metric("tollgate_call_records_queued") == 0.0
    }));
    assert!(gw.metric("tollgate_call_records_queued_peak") >= 1.0);
}

#[test]
fn errors_use_openais_shape_and_status() {
    let mock = Mock::start();
    let gw = gateway(&mock, "max_body_bytes = 2048\nupstream_timeout_ms = 700");

    // Missing and bad keys: 401.
    let r = http::request(&gw.addr, "POST", "/v1/chat/completions", &[], CHAT.as_bytes());
    assert_eq!((r.status, r.error_code().as_str()), (401, "invalid_api_key"));
    assert_eq!(r.json()["error"]["type"], "invalid_request_error");
    let r = http::request(
        &gw.addr,
        "POST",
        "/v1/chat/completions",
        &[("authorization", "Bearer sk-tg-nope")],
        CHAT.as_bytes(),
    );
    assert_eq!(r.status, 401);

    // Malformed JSON, missing model: 400.
    let r = gw.post("/v1/chat/completions", r#"{"model":"gpt-4o-mini","messages":["#);
    assert_eq!((r.status, r.error_code().as_str()), (400, "invalid_json"));
    assert!(r.json()["error"]["message"].as_str().unwrap().contains("parse"));
    let r = gw.post("/v1/chat/completions", r#"{"messages":[]}"#);
    assert_eq!((r.status, r.error_code().as_str()), (400, "missing_model"));

    // Unknown model: 404, and the upstream was not called.
    let before = mock.stats()["requests"].as_u64().unwrap();
    let r = gw.post("/v1/chat/completions", r#"{"model":"gpt-9","messages":[]}"#);
    assert_eq!((r.status, r.error_code().as_str()), (404, "model_not_found"));
    assert_eq!(mock.stats()["requests"].as_u64().unwrap(), before);

    // Body over the limit: 413.
    let big = format!(r#"{{"model":"gpt-4o-mini","messages":[{{"role":"user","content":"{}"}}]}}"#, "x".repeat(4096));
    let r = gw.post("/v1/chat/completions", &big);
    assert_eq!((r.status, r.error_code().as_str()), (413, "request_too_large"));

    // An op the plugin does not map: 400.
    let r = gw.post("/v1/rerank", r#"{"model":"gpt-4o-mini","query":"hi","documents":["a"]}"#);
    assert_eq!((r.status, r.error_code().as_str()), (400, "unsupported_operation"));

    // Upstream faults: 502 with the upstream's message, 429 passed on, 504 on a hang.
    let r = gw.post("/v1/chat/completions", r#"{"model":"fail-500","messages":[]}"#);
    assert_eq!(r.status, 502, "{}", r.text());
    let r = gw.post("/v1/chat/completions", r#"{"model":"fail-429","messages":[]}"#);
    assert_eq!((r.status, r.error_code().as_str()), (429, "upstream_rate_limited"));
    let r = gw.post("/v1/chat/completions", r#"{"model":"hang","messages":[]}"#);
    assert_eq!((r.status, r.error_code().as_str()), (504, "upstream_timeout"));

    // Unknown route and wrong method.
    let r = http::request(&gw.addr, "GET", "/v1/nothing", &[], b"");
    assert_eq!((r.status, r.error_code().as_str()), (404, "unknown_route"));
    let r = http::request(&gw.addr, "GET", "/v1/chat/completions", &[], b"");
    assert_eq!(r.status, 405);
}

#[test]
fn upstream_that_refuses_the_key_is_a_gateway_error_not_the_consumers() {
    let mock = Mock::start();
    let ch = channel("badkeys", "openai", &mock.url(), &["gpt-4o-mini"], &["bad-upstream-key"]);
    let gw = Gateway::start("badkey", &[("openai", "openai.wasm")], &ch);
    let r = gw.post("/v1/chat/completions", CHAT);
    assert_eq!((r.status, r.error_code().as_str()), (502, "upstream_unauthorized"), "{}", r.text());
}

#[test]
fn streaming_passes_chunks_as_they_arrive_with_usage_when_asked() {
    let mock = Mock::start_with(&["--chunk-delay-ms", "250"]);
    let gw = gateway(&mock, "");
    let auth = format!("Bearer {}", gw.key);
    let body = r#"{"model":"gpt-4o-mini","stream":true,"stream_options":{"include_usage":true},"messages":[]}"#;
    let t = http::timed(&gw.addr, "/v1/chat/completions", &[("authorization", &auth)], body.as_bytes());
    assert_eq!(t.status, 200);
    let first = t.arrival_of("tok0").expect("first token");
    let last = t.arrival_of("[DONE]").expect("[DONE]");
    // The mock waits 250 ms between its 8 chunks: a gateway that buffered would deliver all at once.
    assert!(
        last - first >= Duration::from_millis(1000),
        "first token at {first:?}, end at {last:?}: the stream was buffered"
    );
    let data = http::sse_data(&t.text());
    assert!(data.iter().any(|d| d.contains("\"usage\":{")), "usage chunk expected: {data:?}");
    assert_eq!(data.last().map(String::as_str), Some("[DONE]"));

    // Without include_usage the usage chunk is not shown (the gateway still reads it).
    let r = gw.post("/v1/chat/completions", r#"{"model":"gpt-4o-mini","stream":true,"messages":[]}"#);
    assert_eq!(r.header("content-type"), Some("text/event-stream"));
    let data = r.sse_data();
    assert!(!data.iter().any(|d| d.contains("\"usage\":{")), "{data:?}");
    assert_eq!(data.last().map(String::as_str), Some("[DONE]"));
}

#[test]
fn a_cut_stream_ends_with_an_error_event_not_a_clean_end() {
    let mock = Mock::start();
    let gw = gateway(&mock, "");
    let r = gw.post("/v1/chat/completions", r#"{"model":"cut-stream","stream":true,"messages":[]}"#);
    assert_eq!(r.status, 200);
    let data = r.sse_data();
    assert!(data.iter().any(|d| d.contains("tok0")), "{data:?}");
    assert!(!data.iter().any(|d| d == "[DONE]"), "no clean end: {data:?}");
    let last: serde_json::Value = serde_json::from_str(data.last().unwrap()).unwrap();
    assert_eq!(last["error"]["code"], "upstream_error", "{data:?}");
    let m = http::request(&gw.addr, "GET", "/metrics", &[], b"").text();
    assert!(m.contains("tollgate_streams_interrupted_total 1"), "{m}");
}

#[test]
fn a_stream_is_cut_when_its_upstream_goes_silent_not_while_it_keeps_sending() {
    // Chunks 100 ms apart under a 250 ms silence limit: each chunk moves the limit on, so a
    // stream longer than the limit ends cleanly. Chunks 400 ms apart: cut after the first
    // (the role event, which comes with the head).
    let paced = Mock::start_with(&["--chunk-delay-ms", "100"]);
    let silent = Mock::start_with(&["--chunk-delay-ms", "400"]);
    let config = format!(
        "stream_idle_timeout_ms = 250\n{}{}",
        channel("paced", "openai", &paced.url(), &["gpt-4o-mini"], &["up-key-1"]),
        channel("silent", "openai", &silent.url(), &["gpt-4o"], &["up-key-1"])
    );
    let gw = Gateway::start("silence", &[("openai", "openai.wasm")], &config);
    let auth = format!("Bearer {}", gw.key);

    let body = r#"{"model":"gpt-4o-mini","stream":true,"messages":[]}"#;
    let t = http::timed(&gw.addr, "/v1/chat/completions", &[("authorization", &auth)], body.as_bytes());
    assert_eq!(t.status, 200);
    let (first, last) = (t.arrival_of("tok0").expect("first token"), t.arrival_of("[DONE]").expect("a clean end"));
    assert!(last - first >= Duration::from_millis(300), "first token at {first:?}, end at {last:?}: not paced");

    let body = r#"{"model":"gpt-4o","stream":true,"messages":[]}"#;
    let t = http::timed(&gw.addr, "/v1/chat/completions", &[("authorization", &auth)], body.as_bytes());
    assert_eq!(t.status, 200);
    let data = http::sse_data(&t.text());
    assert!(data.first().is_some_and(|d| d.contains(r#""role":"assistant""#)), "{data:?}");
    assert!(!data.iter().any(|d| d.contains("tok0") || d == "[DONE]"), "cut after the first event: {data:?}");
    let last: serde_json::Value = serde_json::from_str(data.last().unwrap()).unwrap();
    assert!(last["error"]["message"].as_str().unwrap_or_default().contains("went silent"), "{data:?}");
    let m = http::request(&gw.addr, "GET", "/metrics", &[], b"").text();
    assert!(m.contains("tollgate_streams_interrupted_total 1"), "{m}");
}

#[test]
fn a_channel_asking_for_http2_sends_whole_and_streamed_calls_over_it() {
    let mock = Mock::start_with(&["--chunk-delay-ms", "100"]);
    let h2 = channel("h2", "openai", &mock.url(), &["gpt-4o-mini"], &["up-key-1"]);
    let h1 = channel("h1", "openai", &mock.url(), &["gpt-4o"], &["up-key-1"]);
    let gw = Gateway::start("http2", &[("openai", "openai.wasm")], &format!("{h2}http2 = true\n{h1}"));
    chats_over_http2_and_http1(&gw, &mock, Duration::from_millis(400));

    // Calls at once share the worker's connection, each with its own answer.
    let answers: Vec<u16> = std::thread::scope(|s| {
        let calls: Vec<_> = (0..16).map(|_| s.spawn(|| gw.post("/v1/chat/completions", CHAT).status)).collect();
        calls.into_iter().map(|c| c.join().unwrap()).collect()
    });
    assert!(answers.iter().all(|&s| s == 200), "{answers:?}");
}

#[test]
fn an_http2_channel_opens_another_connection_when_its_streams_are_full() {
    // The vendor's server takes 4 streams a connection, and the channel says so.
    let mock = Mock::start_with(&["--chunk-delay-ms", "100", "--h2-streams", "4"]);
    let h2 = channel("h2", "openai", &mock.url(), &["gpt-4o-mini"], &["up-key-1"]);
    let gw = Gateway::start(
        "http2-full",
        &[("openai", "openai.wasm")],
        &format!("{h2}http2 = true\nhttp2_max_streams = 4\n"),
    );
    let auth = format!("Bearer {}", gw.key);
    let body = r#"{"model":"gpt-4o-mini","stream":true,"messages":[]}"#;
    // 12 streams at once, each ~0.5 s: with 4 a connection on each of the two workers, at
    // least 3 connections (one per worker would hold 8 calls waiting for a stream).
    let ended: Vec<bool> = std::thread::scope(|s| {
        let calls: Vec<_> = (0..12)
            .map(|_| {
                s.spawn(|| {
                    let t = http::timed(&gw.addr, "/v1/chat/completions", &[("authorization", &auth)], body.as_bytes());
                    t.status == 200 && t.arrival_of("[DONE]").is_some()
                })
            })
            .collect();
        calls.into_iter().map(|c| c.join().unwrap()).collect()
    });
    assert!(ended.iter().all(|&e| e), "{ended:?}");
    let opened = http::request(&mock.addr, "GET", "/_mock/h2-connections", &[], b"").json()["connections"].as_u64();
    assert!(opened.is_some_and(|n| (3..=12).contains(&n)), "HTTP/2 connections opened: {opened:?}");
}
