//! Gemini's API on the gateway, native to the `gemini` plugin, driven by the official
//! `google-genai` SDK (tests/python/gemini_sdk_check.py); the key in the query never logged;
//! what a call reserves and bills.

use tollgate_e2e::{channel, eventually, http, pricing_setting, python_with, run_python_check, Gateway, Mock};

/// Input 1000 micros a token, a cache read 100, output 2000.
const PRICES: &str =
    "input_per_million = \"1000\"\ncached_per_million = \"100\"\noutput_per_million = \"2000\"\nmax_output_tokens = 10\n";

fn start(name: &str, mock: &Mock) -> Gateway {
    let gemini = channel("gem", "gemini", &mock.url(), &["gemini-mock", "gemini-cached", "gemini-thinking"], &["gk"]);
    // Its own key: a rate limit must not cool down the key the other calls use.
    let faulty = channel("gem-faulty", "gemini", &mock.url(), &["fail-429"], &["gk2"]);
    let openai = channel("oa", "openai", &mock.url(), &["gpt-4o-mini"], &["up"]);
    let models = ["gemini-mock", "gemini-cached", "gemini-thinking", "fail-429", "gpt-4o-mini"];
    let table: String = models.iter().map(|m| format!("[models.\"{m}\"]\n{PRICES}")).collect();
    let extra = format!("{}{gemini}{faulty}{openai}", pricing_setting(&table));
    Gateway::start(name, &[("gemini", "gemini.wasm"), ("openai", "openai.wasm")], &extra)
}

#[test]
fn the_official_google_genai_sdk_works_against_tollgate() {
    let Some(python) = python_with("from google import genai; import openai", "google-genai") else { return };
    let mock = Mock::start();
    let gw = start("gemini-sdk", &mock);
    run_python_check(&python, "gemini_sdk_check.py", &[&format!("http://{}", gw.addr), &gw.key]);
}

#[test]
fn a_query_key_is_never_logged_and_usage_is_billed_as_google_reports_it() {
    let mock = Mock::start();
    let gw = start("gemini-billing", &mock);
    let key = gw.create_key("gem", "1");
    gw.wait_for_key(&key);
    let body =
        br#"{"contents":[{"role":"user","parts":[{"text":"say:Hi"}]}],"generationConfig":{"maxOutputTokens":8}}"#;
    // The key in the query: served, and found nowhere the gateway writes.
    let path = format!("/v1beta/models/gemini-cached:generateContent?key={key}");
    let r = http::request(&gw.addr, "POST", &path, &[("content-type", "application/json")], body);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["usageMetadata"]["cachedContentTokenCount"], 6);
    let sent = mock.last_body("/v1beta/models/gemini-cached:generateContent");
    assert_eq!(sent["json"]["contents"][0]["parts"][0]["text"], "say:Hi", "{sent}");
    assert!(sent["query"].is_null() && sent["headers"]["x-goog-api-key"] == "gk", "the channel's key only: {sent}");
    // 9 prompt tokens of which 6 from the cache, 1 output: 3 × 1000 + 6 × 100 + 1 × 2000.
    assert!(eventually(std::time::Duration::from_secs(5), || gw.balance_micros("gem") == 1_000_000 - 5_600));
    // Thinking is output: 1 + 4 tokens.
    let r = http::request(
        &gw.addr,
        "POST",
        "/v1/models/gemini-thinking:streamGenerateContent?alt=sse",
        &[("x-goog-api-key", &key)],
        body,
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(r.text().starts_with("data: "), "{}", r.text());
    assert!(eventually(std::time::Duration::from_secs(5), || gw.balance_micros("gem") == 1_000_000 - 5_600 - 19_000));
    // A reservation reads generationConfig: a balance below maxOutputTokens' worth is refused.
    let poor = gw.create_key("poor", "0.15");
    gw.wait_for_key(&poor);
    let generate = |body: &[u8]| {
        http::request(
            &gw.addr,
            "POST",
            "/v1beta/models/gemini-mock:generateContent",
            &[("x-goog-api-key", &poor)],
            body,
        )
    };
    let greedy = br#"{"contents":[{"role":"user","parts":[{"text":"x"}]}],"generationConfig":{"maxOutputTokens":100}}"#;
    let r = generate(greedy);
    assert_eq!((r.status, r.json()["error"]["status"].as_str()), (402, Some("FAILED_PRECONDITION")), "{}", r.text());
    // A bound spelled twice (the engine walks a body whose model is in the path): refused in
    // Google's shape before anything is reserved or sent, never reserved by the smaller copy.
    let sent_before = mock.stats()["requests"].as_u64();
    let smuggled =
        br#"{"contents":[{"role":"user","parts":[{"text":"x"}]}],"generationConfig":{"maxOutputTokens":1,"MaxOutputTokens":100}}"#;
    let r = generate(smuggled);
    assert_eq!((r.status, r.json()["error"]["status"].as_str()), (400, Some("INVALID_ARGUMENT")), "{}", r.text());
    assert!(r.text().contains("MaxOutputTokens"), "{}", r.text());
    assert_eq!(mock.stats()["requests"].as_u64(), sent_before, "nothing was sent");
    let log = gw.log() + &gw.raw_database("call_log");
    assert!(!log.contains(&key), "the consumer's key was written down");
    assert!(gw.verify_ledger().0, "{}", gw.verify_ledger().1);
}
