//! Process lifecycle: SIGTERM lets calls in flight finish, then the gateway exits cleanly;
//! keys created while it runs are picked up without a restart.

use std::time::Duration;
use tollgate_e2e::{channel, eventually, http, Gateway, Mock};

#[test]
fn sigterm_lets_a_stream_in_flight_finish() {
    let mock = Mock::start_with(&["--chunk-delay-ms", "200"]);
    let ch = channel("mock", "openai", &mock.url(), &["gpt-4o-mini"], &["up"]);
    let mut gw = Gateway::start("shutdown", &[("openai", "openai.wasm")], &ch);
    let (addr, key) = (gw.addr.clone(), gw.key.clone());
    let client = std::thread::spawn(move || {
        http::timed(
            &addr,
            "/v1/chat/completions",
            &[("authorization", &format!("Bearer {key}"))],
            br#"{"model":"gpt-4o-mini","stream":true,"messages":[]}"#,
        )
    });
    std::thread::sleep(Duration::from_millis(500));
    gw.terminate();
    let streamed = client.join().unwrap();
    let data = http::sse_data(&streamed.text());
    assert_eq!(data.last().map(String::as_str), Some("[DONE]"), "the stream in flight completed: {data:?}");
    let status = gw.wait_exit(Duration::from_secs(15)).expect("the gateway exits after SIGTERM");
    assert!(status.success(), "exit status {status:?}");
    assert!(http::try_request(&gw.addr, "GET", "/health", &[], b"").is_none(), "no longer listening");
}

#[test]
fn keys_created_while_serving_work_without_restart() {
    let mock = Mock::start();
    let ch = channel("mock", "openai", &mock.url(), &["gpt-4o-mini"], &["up"]);
    let gw = Gateway::start("livekeys", &[("openai", "openai.wasm")], &ch);
    let key = Gateway::cli(&gw.config, &["keys", "create", "--name", "late"]).trim().to_string();
    let listed = Gateway::cli(&gw.config, &["keys", "list"]);
    assert!(listed.contains("late") && !listed.contains(&key), "keys list never shows secrets: {listed}");
    assert!(eventually(Duration::from_secs(5), || {
        http::request(&gw.addr, "GET", "/v1/models", &[("authorization", &format!("Bearer {key}"))], b"").status == 200
    }));
}

#[test]
fn key_limits_expiry_allow_list_and_disable() {
    let mock = Mock::start();
    let ch = channel("mock", "openai", &mock.url(), &["gpt-4o-mini", "text-embedding-3-small"], &["up"]);
    let gw = Gateway::start("keylimits", &[("openai", "openai.wasm")], &ch);
    let models = |key: &str| {
        http::request(&gw.addr, "GET", "/v1/models", &[("authorization", &format!("Bearer {key}"))], b"").status
    };
    let call = |key: &str, model: &str| gw.chat(key, model, "");

    let narrow =
        Gateway::cli(&gw.config, &["keys", "create", "--name", "narrow", "--models", "gpt-4o-mini"]).trim().to_string();
    let expired =
        Gateway::cli(&gw.config, &["keys", "create", "--name", "old", "--expires-in-days", "0"]).trim().to_string();
    assert!(eventually(Duration::from_secs(5), || models(&narrow) == 200));
    assert_eq!(call(&narrow, "gpt-4o-mini").status, 200);
    let r = call(&narrow, "text-embedding-3-small");
    assert_eq!((r.status, r.error_code().as_str()), (403, "model_not_allowed"));
    // (Once the key is loaded, which may be one refresh after `narrow`.)
    assert!(eventually(Duration::from_secs(5), || {
        let r = call(&expired, "gpt-4o-mini");
        r.status == 401 && r.text().contains("expired")
    }));

    let id = gw.key_id("narrow");
    Gateway::cli(&gw.config, &["keys", "disable", "--id", &id]);
    assert!(eventually(Duration::from_secs(5), || models(&narrow) == 401), "disabled keys are refused");
    Gateway::cli(&gw.config, &["keys", "enable", "--id", &id]);
    assert!(eventually(Duration::from_secs(5), || models(&narrow) == 200), "enabled again");
}
