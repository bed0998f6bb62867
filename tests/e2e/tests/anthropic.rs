//! Anthropic's Messages API on the gateway: translated to an OpenAI-shaped vendor, and native
//! to the `anthropic` plugin; driven by the official `anthropic` SDK
//! (tests/python/anthropic_sdk_check.py) and checked for what it bills.

use tollgate_e2e::{channel, eventually, pricing_setting, python_with, run_python_check, Gateway, Mock};

/// Input 1000 micros a token, a cache read 100, a cache write 1250, output 2000.
const PRICES: &str = "input_per_million = \"1000\"\ncached_per_million = \"100\"\ncache_write_per_million = \"1250\"\noutput_per_million = \"2000\"\n";

fn start(name: &str, mock: &Mock) -> Gateway {
    let openai = channel("oa", "openai", &mock.url(), &["gpt-4o-mini", "gpt-cached"], &["up"]);
    let claude = channel("claude", "anthropic", &mock.url(), &["claude-mock", "claude-cached"], &["ak"]);
    // Its own key: a failure must not cool down the key the other calls use.
    let faulty = channel("claude-faulty", "anthropic", &mock.url(), &["overload-stream"], &["ak2"]);
    let models = ["gpt-4o-mini", "gpt-cached", "claude-mock", "claude-cached", "overload-stream"];
    let table: String = models.iter().map(|m| format!("[models.\"{m}\"]\n{PRICES}")).collect();
    let extra = format!("{}{openai}{claude}{faulty}", pricing_setting(&table));
    Gateway::start(name, &[("openai", "openai.wasm"), ("anthropic", "anthropic.wasm")], &extra)
}

#[test]
fn the_official_anthropic_sdk_works_translated_and_native() {
    let Some(python) = python_with("import anthropic, openai", "anthropic") else { return };
    let mock = Mock::start();
    let gw = start("anthropic-sdk", &mock);
    run_python_check(&python, "anthropic_sdk_check.py", &[&format!("http://{}", gw.addr), &gw.key]);
}

#[test]
fn cache_reads_are_billed_as_cache_reads_and_errors_are_anthropics() {
    let mock = Mock::start();
    let gw = start("anthropic-billing", &mock);
    let key = gw.create_key("cache", "1");
    gw.wait_for_key(&key);
    let body = |model: &str, stream: bool| {
        format!(
            r#"{{"model":"{model}","max_tokens":8,"stream":{stream},"messages":[{{"role":"user","content":"say:Hi"}}]}}"#
        )
    };
    let headers =
        [("x-api-key", key.as_str()), ("anthropic-version", "2023-06-01"), ("content-type", "application/json")];
    // gpt-cached: 9 input tokens, 6 read from the cache; 1 output: 3 × 1000 + 6 × 100 + 2000.
    // claude-cached: 6 read and 2 written: 1 × 1000 + 6 × 100 + 2 × 1250 + 2000.
    let mut spent = 0;
    for (model, stream, cost) in [
        ("gpt-cached", false, 5_600),
        ("gpt-cached", true, 5_600),
        ("claude-cached", false, 6_100),
        ("claude-cached", true, 6_100),
    ] {
        let r = tollgate_e2e::http::request(&gw.addr, "POST", "/v1/messages", &headers, body(model, stream).as_bytes());
        assert_eq!(r.status, 200, "{model} stream={stream}: {}", r.text());
        if stream {
            assert!(r.text().contains("event: message_stop"), "{}", r.text());
        } else {
            assert_eq!(r.json()["usage"]["cache_read_input_tokens"], 6, "{}", r.text());
        }
        spent += cost;
        assert!(
            eventually(std::time::Duration::from_secs(5), || gw.balance_micros("cache") == 1_000_000 - spent),
            "{model} stream={stream}: balance {}",
            gw.balance_micros("cache")
        );
    }
    // A repeated Idempotency-Key: the first stream's answer again, in Anthropic's events, free.
    let once = [("x-api-key", key.as_str()), ("anthropic-version", "2023-06-01"), ("idempotency-key", "stream-1")];
    let first =
        tollgate_e2e::http::request(&gw.addr, "POST", "/v1/messages", &once, body("gpt-cached", true).as_bytes());
    spent += 5_600;
    assert!(eventually(std::time::Duration::from_secs(5), || gw.balance_micros("cache") == 1_000_000 - spent));
    let again =
        tollgate_e2e::http::request(&gw.addr, "POST", "/v1/messages", &once, body("gpt-cached", true).as_bytes());
    assert_eq!(again.header("idempotent-replayed"), Some("true"), "{}", again.text());
    let texts = |r: &tollgate_e2e::http::Response| -> Vec<String> {
        r.sse_data().iter().filter(|d| d.contains("text_delta")).cloned().collect()
    };
    assert_eq!(texts(&again), texts(&first), "the same text, as Anthropic's events");
    assert!(again.text().contains("event: message_stop"), "{}", again.text());
    std::thread::sleep(std::time::Duration::from_millis(300));
    assert_eq!(gw.balance_micros("cache"), 1_000_000 - spent, "a replay is free");
    // A balance too small: Anthropic's billing error, before any vendor call.
    let poor = gw.create_key("poor", "0.001");
    gw.wait_for_key(&poor);
    let before = mock.stats()["requests"].as_u64().unwrap();
    let poor_headers = [("x-api-key", poor.as_str()), ("anthropic-version", "2023-06-01")];
    let r = tollgate_e2e::http::request(
        &gw.addr,
        "POST",
        "/v1/messages",
        &poor_headers,
        body("claude-mock", false).as_bytes(),
    );
    assert_eq!((r.status, r.json()["type"].as_str()), (402, Some("error")), "{}", r.text());
    assert_eq!(r.json()["error"]["type"], "billing_error");
    assert_eq!(mock.stats()["requests"].as_u64().unwrap(), before, "refused before the vendor");
    // A body that is not a Messages request: Anthropic's invalid_request_error.
    let r = tollgate_e2e::http::request(&gw.addr, "POST", "/v1/messages", &headers, b"{\"model\":\"claude-mock\"");
    assert_eq!((r.status, r.json()["error"]["type"].as_str()), (400, Some("invalid_request_error")), "{}", r.text());
    // A bound spelled twice (a vendor matching keys without regard to case could run the other
    // copy): Anthropic's invalid_request_error naming the field, native and translated, unsent.
    let before = mock.stats()["requests"].as_u64().unwrap();
    for model in ["claude-mock", "gpt-4o-mini"] {
        let twice = format!(
            r#"{{"model":"{model}","max_tokens":8,"MAX_TOKENS":4096,"messages":[{{"role":"user","content":"hi"}}]}}"#
        );
        let r = tollgate_e2e::http::request(&gw.addr, "POST", "/v1/messages", &headers, twice.as_bytes());
        assert_eq!(
            (r.status, r.json()["error"]["type"].as_str()),
            (400, Some("invalid_request_error")),
            "{}",
            r.text()
        );
        assert!(r.json()["error"]["message"].as_str().is_some_and(|m| m.contains("'max_tokens'")), "{}", r.text());
    }
    assert_eq!(mock.stats()["requests"].as_u64().unwrap(), before, "refused before the vendor");
    assert!(gw.verify_ledger().0, "{}", gw.verify_ledger().1);
}
