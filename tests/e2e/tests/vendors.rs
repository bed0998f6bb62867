//! The OpenAI-compatible vendors' plugins, built to wasm and loaded by the real gateway,
//! against mocks of the vendors' own paths, auth and error shapes: DeepSeek (reasoning passed
//! through, history cleaned, cache hits billed as cached), Zhipu (the key as it is, or a JWT
//! signed per request where the channel allows signing), Ark's Doubao chat, and DashScope's
//! Qwen on its compatible mode and on its own generation route, streamed DashScope's way.

use std::time::Duration;
use tollgate_e2e::{channel, eventually, http, pricing_setting, Gateway, Mock};

/// Input 1000 micros a token, a cache read 100, output 2000.
const PRICES: &str = "input_per_million = \"1000\"\ncached_per_million = \"100\"\noutput_per_million = \"2000\"\n";

fn prices(models: &[&str]) -> String {
    pricing_setting(&models.iter().map(|m| format!("[models.\"{m}\"]\n{PRICES}")).collect::<String>())
}

fn chat(gw: &Gateway, key: &str, model: &str, messages: &str, stream: bool) -> http::Response {
    let body = format!(r#"{{"model":"{model}","stream":{stream},"messages":{messages}}}"#);
    http::request(
        &gw.addr,
        "POST",
        "/v1/chat/completions",
        &[("authorization", &format!("Bearer {key}"))],
        body.as_bytes(),
    )
}

#[test]
fn deepseek_streams_its_reasoning_cleans_history_and_bills_cache_hits() {
    let mock = Mock::start();
    let ch = channel("ds", "deepseek", &mock.url(), &["deepseek-reasoner-cached"], &["dk"]);
    let gw = Gateway::start(
        "vendor-deepseek",
        &[("deepseek", "deepseek.wasm")],
        &format!("{}{ch}", prices(&["deepseek-reasoner-cached"])),
    );
    let key = gw.create_key("ds", "10");
    gw.wait_for_key(&key);
    let r = chat(&gw, &key, "deepseek-reasoner-cached", r#"[{"role":"user","content":"say:Hi"}]"#, true);
    assert_eq!(r.status, 200, "{}", r.text());
    let data = r.sse_data();
    assert!(data.iter().any(|d| d.contains("reasoning_content")), "{data:?}");
    assert_eq!(mock.last_body("/chat/completions")["path"], "/chat/completions", "DeepSeek's own path");
    // 9 prompt tokens, 6 of them cache hits; 1 output: 3 × 1000 + 6 × 100 + 2000.
    assert!(
        eventually(Duration::from_secs(5), || gw.balance_micros("ds") == 10_000_000 - 5_600),
        "{}",
        gw.balance_micros("ds")
    );
    // An app sends the answer back as it got it: DeepSeek would refuse the reasoning in it.
    let history = r#"[{"role":"user","content":"hi"},{"role":"assistant","content":"Hi","reasoning_content":"Let me think."},{"role":"user","content":"say:Again"}]"#;
    let r = chat(&gw, &key, "deepseek-reasoner-cached", history, false);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["choices"][0]["message"]["content"], "Again");
}

#[test]
fn zhipu_sends_its_key_or_a_jwt_where_signing_is_allowed() {
    let mock = Mock::start();
    let base = format!("{}/api/paas/v4", mock.url());
    let raw = channel("zhipu-raw", "zhipu", &base, &["glm-raw"], &["zk.zk-secret"]);
    let signed =
        format!("{}allow_signing = true\n", channel("zhipu-jwt", "zhipu", &base, &["glm-jwt"], &["zj.zj-secret"]));
    let gw = Gateway::start(
        "vendor-zhipu",
        &[("zhipu", "zhipu.wasm")],
        &format!("{}{raw}{signed}", prices(&["glm-raw", "glm-jwt"])),
    );
    let key = gw.create_key("z", "10");
    gw.wait_for_key(&key);
    let r = chat(&gw, &key, "glm-raw", r#"[{"role":"user","content":"say:Raw"}]"#, false);
    assert_eq!((r.status, r.json()["choices"][0]["message"]["content"].as_str()), (200, Some("Raw")), "{}", r.text());
    let sent = mock.last_body("/api/paas/v4/chat/completions");
    assert_eq!(sent["headers"]["authorization"], "Bearer zk.zk-secret", "the host inserted the key: {sent}");
    let r = chat(&gw, &key, "glm-jwt", r#"[{"role":"user","content":"say:Signed"}]"#, true);
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(r.sse_data().iter().any(|d| d.contains("Sign")), "{}", r.text());
    let sent = mock.last_body("/api/paas/v4/chat/completions");
    let auth = sent["headers"]["authorization"].as_str().unwrap_or_default().to_string();
    assert!(auth.starts_with("Bearer eyJ") && auth.matches('.').count() == 2, "a JWT, verified by the mock: {auth}");
    assert!(!auth.contains("zj-secret"), "the secret never crosses the wire");
}

#[test]
fn doubao_and_qwen_chat_on_their_vendors_paths_and_qwen_on_dashscopes_own_route() {
    let mock = Mock::start();
    let ark = channel("ark", "ark", &format!("{}/api/v3", mock.url()), &["doubao-seed"], &["ak"]);
    let dashscope = channel("dashscope", "dashscope", &mock.url(), &["qwen-plus"], &["dk"]);
    let extra = format!("{}{ark}{dashscope}", prices(&["doubao-seed", "qwen-plus"]));
    let gw = Gateway::start("vendor-ark-dashscope", &[("ark", "ark.wasm"), ("dashscope", "dashscope.wasm")], &extra);
    let key = gw.create_key("v", "10");
    gw.wait_for_key(&key);
    let r = chat(&gw, &key, "doubao-seed", r#"[{"role":"user","content":"say:Doubao"}]"#, true);
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(mock.last_body("/api/v3/chat/completions")["json"]["stream_options"]["include_usage"] == true);
    let r = chat(&gw, &key, "qwen-plus", r#"[{"role":"user","content":"say:Qwen"}]"#, false);
    assert_eq!((r.status, r.json()["choices"][0]["message"]["content"].as_str()), (200, Some("Qwen")), "{}", r.text());
    assert_eq!(mock.last_body("/compatible-mode/v1/chat/completions")["json"]["model"], "qwen-plus");
    // DashScope's own route and its SSE, for DashScope's SDK.
    let body = br#"{"model":"qwen-plus","input":{"messages":[{"role":"user","content":"say:Hi there"}]},"parameters":{"incremental_output":true,"max_tokens":50}}"#;
    let headers = [("authorization", format!("Bearer {key}")), ("x-dashscope-sse", "enable".to_string())];
    let headers: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let r = http::request(&gw.addr, "POST", "/api/v1/services/aigc/text-generation/generation", &headers, body);
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(r.text().contains("event: result") || r.text().contains("event:result"), "{}", r.text());
    let text: String = r
        .sse_data()
        .iter()
        .filter_map(|d| serde_json::from_str::<serde_json::Value>(d).ok())
        .filter_map(|v| v.pointer("/output/choices/0/message/content").and_then(|c| c.as_str()).map(str::to_string))
        .collect();
    assert_eq!(text, "Hi there");
    // Doubao: 9 input, 2 output (13,000); Qwen: 9 and 1 (11,000); DashScope's route, by the last
    // event's usage: 9 input of which 4 cached, 2 output: 5 × 1000 + 4 × 100 + 2 × 2000.
    let spent = 13_000 + 11_000 + 9_400;
    assert!(
        eventually(Duration::from_secs(5), || gw.balance_micros("v") == 10_000_000 - spent),
        "{}",
        gw.balance_micros("v")
    );
    assert!(gw.verify_ledger().0, "{}", gw.verify_ledger().1);
}
