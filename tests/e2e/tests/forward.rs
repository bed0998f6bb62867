//! Calls the host forwards without entering their plugin (`tollgate:fast`'s `forward`,
//! `wit/fast/forward.wit`), through the real binary: the openai plugin's plain chats are
//! answered by the host with the vendor's bytes and billed as the plugin bills them, their
//! streams relayed by the host as the plugin relays them; mapped models go through the plugin;
//! an answer the host cannot use goes to the plugin,
//! whose classification still decides the bill (and the key's health: `keypool.rs`); a plugin
//! whose first step breaks its declaration fails the call as its fault.

use std::time::Duration;
use tollgate_e2e::{channel, eventually, http, pricing_setting, Gateway, Mock};

/// The same prices for the model and the name mapped to it, so a call through the plugin and a
/// forwarded one cost the same: the mock's usage (9 in, 3 out) is 9 + 3000 micros.
const PRICES: &str = r#"
[models."gpt-4o-mini"]
input_per_million = "1"
output_per_million = "1000"
max_output_tokens = 1000
[models."alias"]
input_per_million = "1"
output_per_million = "1000"
max_output_tokens = 1000
[models."garbled-200"]
input_per_million = "1"
output_per_million = "1000"
max_output_tokens = 1000
[models."fail-400"]
per_call = "1"
"#;

fn forwarded(gw: &Gateway, by: &str) -> f64 {
    gw.metric(&format!("tollgate_calls_forwarded_total{{answered=\"{by}\"}}"))
}

/// What the consumer's balance lost to `call` (whose charge is written in a batch, soon after
/// it answered: waited for up to 3 s; a free call waits the whole 3 s).
fn cost(gw: &Gateway, name: &str, call: impl FnOnce() -> http::Response) -> (http::Response, i64) {
    let before = gw.balance_micros(name);
    let r = call();
    eventually(Duration::from_secs(3), || gw.balance_micros(name) != before);
    (r, before - gw.balance_micros(name))
}

#[test]
fn a_plain_chat_is_answered_by_the_host_and_billed_as_through_its_plugin() {
    let mock = Mock::start();
    let ch = channel("mock", "openai", &mock.url(), &["gpt-4o-mini", "alias", "garbled-200", "fail-400"], &["up"]);
    let gw = Gateway::start(
        "forward-chat",
        &[("openai", "openai.wasm")],
        &format!("{}{ch}[channel.model_map]\nalias = \"gpt-4o-mini\"\n", pricing_setting(PRICES)),
    );
    let key = gw.create_key("fwd", "10");
    assert!(eventually(Duration::from_secs(5), || gw.chat(&key, "gpt-4o-mini", "").status != 401));
    gw.balance_becomes("fwd", 10_000_000 - 3009);
    let (host, plugin) = (forwarded(&gw, "host"), forwarded(&gw, "plugin"));
    assert!(host >= 1.0, "the plain chat above was forwarded");

    // Forwarded: the vendor's bytes as they came, the consumer's body as it was sent.
    let body = r#"{"model":"gpt-4o-mini","messages":[{"role":"user","content":"say:forwarded"}],"temperature":0.5}"#;
    let auth = format!("Bearer {key}");
    let direct =
        http::request(&mock.addr, "POST", "/v1/chat/completions", &[("authorization", "Bearer up")], body.as_bytes());
    let (r, forwarded_cost) = cost(&gw, "fwd", || {
        http::request(&gw.addr, "POST", "/v1/chat/completions", &[("authorization", &auth)], body.as_bytes())
    });
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.text(), direct.text(), "the answer is the vendor's, byte for byte");
    assert_eq!(r.header("content-type"), Some("application/json"));
    let sent = mock.last_body("/v1/chat/completions");
    assert_eq!(sent["body"], body, "the body went as it was sent, byte for byte");
    assert_eq!(
        (sent["headers"]["authorization"].as_str(), sent["headers"]["content-type"].as_str()),
        (Some("Bearer up"), Some("application/json"))
    );
    assert_eq!(forwarded(&gw, "host"), host + 1.0);
    assert_eq!(forwarded_cost, 9 + 3000, "billed by the answer's usage");

    // Through the plugin: a mapped model. Billed alike, not forwarded.
    let (r, mapped_cost) = cost(&gw, "fwd", || gw.chat(&key, "alias", ""));
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(mock.last_body("/v1/chat/completions")["json"]["model"], "gpt-4o-mini", "the plugin mapped the name");
    assert_eq!(mapped_cost, forwarded_cost, "a forwarded call costs what the same call through the plugin costs");
    assert_eq!((forwarded(&gw, "host"), forwarded(&gw, "plugin")), (host + 1.0, plugin));
    // `stream` twice is the plugin's to refuse, as it always was.
    let r = gw.chat(&key, "gpt-4o-mini", r#","stream":false,"stream":true"#);
    assert_eq!(r.status, 400, "{}", r.text());
    assert_eq!((forwarded(&gw, "host"), forwarded(&gw, "plugin")), (host + 1.0, plugin));

    // An answer the host cannot use goes to the plugin: its class, its bill.
    let (r, failed_cost) = cost(&gw, "fwd", || gw.chat(&key, "fail-400", ""));
    assert_eq!((r.status, r.error_code().as_str()), (400, "upstream_bad_request"), "{}", r.text());
    assert_eq!(failed_cost, 0, "a refused call is free");
    let (r, garbled_cost) = cost(&gw, "fwd", || gw.chat(&key, "garbled-200", ""));
    assert_eq!((r.status, r.error_code().as_str()), (502, "upstream_error"), "{}", r.text());
    assert!(garbled_cost > 0, "a 2xx the vendor worked on is billed even when it cannot be read");
    assert_eq!(forwarded(&gw, "plugin"), plugin + 2.0);
    assert!(gw.verify_ledger().0, "{}", gw.verify_ledger().1);
}

#[test]
fn a_chat_stream_is_relayed_by_the_host_as_through_its_plugin_and_billed_alike() {
    let mock = Mock::start();
    let models = ["gpt-4o-mini", "alias", "cut-stream", "cut-alias", "fail-400"];
    let ch = channel("mock", "openai", &mock.url(), &models, &["up"]);
    let prices = format!("{PRICES}[models.\"cut-stream\"]\ninput_per_million = \"1\"\noutput_per_million = \"1000\"\nmax_output_tokens = 1000\n[models.\"cut-alias\"]\ninput_per_million = \"1\"\noutput_per_million = \"1000\"\nmax_output_tokens = 1000\n");
    let gw = Gateway::start(
        "forward-stream",
        &[("openai", "openai.wasm")],
        &format!(
            "{}{ch}[channel.model_map]\nalias = \"gpt-4o-mini\"\n\"cut-alias\" = \"cut-stream\"\n",
            pricing_setting(&prices)
        ),
    );
    let key = gw.create_key("fwd", "10");
    assert!(eventually(Duration::from_secs(5), || gw.chat(&key, "gpt-4o-mini", "").status != 401));
    gw.balance_becomes("fwd", 10_000_000 - 3009);
    let (host, plugin) = (forwarded(&gw, "host"), forwarded(&gw, "plugin"));
    let stream = r#","stream":true,"temperature":0.5"#;

    // Relayed by the host: the usage asked of the vendor, its chunk hidden, billed by it.
    let (forwarded_stream, forwarded_cost) = cost(&gw, "fwd", || gw.chat(&key, "gpt-4o-mini", stream));
    assert_eq!(forwarded_stream.status, 200, "{}", forwarded_stream.text());
    assert_eq!(forwarded_stream.header("content-type"), Some("text/event-stream"));
    assert_eq!(forwarded(&gw, "host"), host + 1.0, "the stream was forwarded");
    let sent = mock.last_body("/v1/chat/completions")["json"].clone();
    let mut asked: serde_json::Value = serde_json::from_str(&format!(
        r#"{{"model":"gpt-4o-mini","messages":[{{"role":"user","content":"hi"}}]{stream}}}"#
    ))
    .unwrap();
    asked["stream_options"] = serde_json::json!({ "include_usage": true });
    assert_eq!(sent, asked, "the consumer's request, asking for the usage");
    let text = forwarded_stream.text();
    assert!(text.ends_with("data: [DONE]\n\n") && !text.contains("prompt_tokens"), "{text}");
    assert_eq!(forwarded_cost, 9 + 5 * 1000, "billed by the stream's usage (9 in, 5 out)");

    // The same stream through the plugin (a mapped name): the same bytes, the same bill.
    let (through_plugin, plugin_cost) = cost(&gw, "fwd", || gw.chat(&key, "alias", stream));
    assert_eq!(through_plugin.text(), text, "the host relays the stream as the plugin does");
    assert_eq!(plugin_cost, forwarded_cost);
    assert_eq!(forwarded(&gw, "host"), host + 1.0, "a mapped model's stream is the plugin's");

    // The consumer who asks for the usage chunk gets it, either way.
    let with_usage = r#","stream":true,"stream_options":{"include_usage":true}"#;
    let (r, c) = cost(&gw, "fwd", || gw.chat(&key, "gpt-4o-mini", with_usage));
    let (p, pc) = cost(&gw, "fwd", || gw.chat(&key, "alias", with_usage));
    assert!(r.text().contains(r#""prompt_tokens":9"#), "{}", r.text());
    assert_eq!((r.text(), c), (p.text(), pc));

    // A stream cut by the vendor: an error event, billed for what was delivered, as through
    // the plugin.
    let (cut, cut_cost) = cost(&gw, "fwd", || gw.chat(&key, "cut-stream", r#","stream":true"#));
    let (cut_plugin, cut_plugin_cost) = cost(&gw, "fwd", || gw.chat(&key, "cut-alias", r#","stream":true"#));
    assert!(cut.text().contains("upstream_error") && !cut.text().contains("[DONE]"), "{}", cut.text());
    assert_eq!(cut.text().replace("cut-stream", ""), cut_plugin.text().replace("cut-stream", ""));
    assert!(cut_cost > 0 && cut_cost == cut_plugin_cost, "{cut_cost} {cut_plugin_cost}");

    // A refusal goes to the plugin, which classifies it: free.
    let (r, refused_cost) = cost(&gw, "fwd", || gw.chat(&key, "fail-400", r#","stream":true"#));
    assert_eq!((r.status, r.error_code().as_str()), (400, "upstream_bad_request"), "{}", r.text());
    assert_eq!(refused_cost, 0);
    assert_eq!((forwarded(&gw, "host"), forwarded(&gw, "plugin")), (host + 3.0, plugin + 1.0));
    assert!(gw.verify_ledger().0, "{}", gw.verify_ledger().1);
}

/// A forwarded stream counts among the calls in flight to its end, as its plugin's would: with
/// `max_concurrent_calls = 1`, a call made while a paced stream runs is refused (503, retry
/// shortly), and one made after it ended is served.
#[test]
fn a_forwarded_stream_holds_its_admission_to_its_end() {
    let mock = Mock::start_with(&["--chunk-delay-ms", "300"]);
    let ch = channel("mock", "openai", &mock.url(), &["gpt-4o-mini"], &["up"]);
    let gw = Gateway::start(
        "forward-admission",
        &[("openai", "openai.wasm")],
        &format!(
            "max_concurrent_calls = 1
{ch}"
        ),
    );
    let key = gw.key.clone();
    assert_eq!(gw.chat(&key, "gpt-4o-mini", "").status, 200);
    let streaming = {
        let gw_addr = gw.addr.clone();
        let key = key.clone();
        std::thread::spawn(move || {
            let body = r#"{"model":"gpt-4o-mini","messages":[],"stream":true}"#;
            let auth = format!("Bearer {key}");
            http::request(&gw_addr, "POST", "/v1/chat/completions", &[("authorization", &auth)], body.as_bytes())
        })
    };
    // The stream's head has come (it was forwarded), and its chunks are 300 ms apart.
    assert!(eventually(Duration::from_secs(5), || forwarded(&gw, "host") >= 2.0), "the stream was not forwarded");
    let r = gw.chat(&key, "gpt-4o-mini", "");
    assert_eq!((r.status, r.error_code().as_str()), (503, "overloaded"), "{}", r.text());
    let stream = streaming.join().unwrap();
    assert!(stream.text().ends_with("data: [DONE]\n\n"), "{}", stream.text());
    assert!(eventually(Duration::from_secs(5), || gw.chat(&key, "gpt-4o-mini", "").status == 200));
}

#[test]
fn a_plugin_whose_first_step_is_not_the_request_it_declared_fails_the_call() {
    let mock = Mock::start();
    let ch = channel("faults", "faulty", &mock.url(), &["trap", "fail-500"], &["up"]);
    let gw = Gateway::start(
        "forward-faulty",
        &[("faulty-v1", "faulty.wasm")],
        &format!("{ch}[channel.settings]\nforward = \"/v1/chat/completions\"\n"),
    );
    // Forwarded and answered by the host: the plugin is never entered (it would trap).
    let r = gw.post("/v1/chat/completions", r#"{"model":"trap","messages":[]}"#);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(forwarded(&gw, "host"), 1.0);
    // Handed to the plugin, whose first step replies instead of sending: its fault.
    let r = gw.post("/v1/chat/completions", r#"{"model":"fail-500","messages":[]}"#);
    assert_eq!((r.status, r.error_code().as_str()), (502, "plugin_error"), "{}", r.text());
    assert!(r.json()["error"]["message"].as_str().unwrap().contains("declared op 'chat' forwarded"), "{}", r.text());
    assert_eq!(forwarded(&gw, "plugin"), 1.0);
}

/// A body that spells a field the host reads in another case (or with a letter Go folds onto
/// ASCII) is refused before anything is reserved or sent, forwarded or through the plugin: a
/// vendor matching keys without regard to case would run the copy the host did not price
/// (`"max_tokens":1,"Max_Tokens":100000` on a small balance) or authorize (`"MODEL"`).
#[test]
fn a_body_spelling_a_read_field_in_another_case_is_refused_unsent() {
    let mock = Mock::start();
    let ch = channel("mock", "openai", &mock.url(), &["gpt-4o-mini", "alias"], &["up"]);
    let gw = Gateway::start(
        "forward-case",
        &[("openai", "openai.wasm")],
        &format!("{}{ch}[channel.model_map]\nalias = \"gpt-4o-mini\"\n", pricing_setting(PRICES)),
    );
    // 0.01: one call of a few tokens, never 100,000 of them (0.001 each).
    let key = gw.create_key("small", "0.01");
    assert!(eventually(Duration::from_secs(5), || gw.chat(&key, "gpt-4o-mini", r#","max_tokens":5"#).status != 401));
    gw.balance_becomes("small", 10_000 - 3009);
    let sent = mock.stats()["requests"].as_u64().unwrap();
    for model in ["gpt-4o-mini", "alias"] {
        for (extra, field) in [
            (r#","MODEL":"o1-pro""#, "model"),
            (r#","max_tokens":1,"Max_Tokens":100000"#, "max_tokens"),
            (r#","max_tokens":1,"\u004dax_tokens":100000"#, "max_tokens"),
            (r#","max_tokens":1,"max_tokenſ":100000"#, "max_tokens"),
            (r#","stream":true,"ſtream_options":{"include_usage":false}"#, "stream_options"),
            (r#","stream":true,"max_tokens":1,"MAX_TOKENS":100000"#, "max_tokens"),
            (r#","Stream":true"#, "stream"),
        ] {
            let r = gw.chat(&key, model, extra);
            let error = &r.json()["error"];
            assert_eq!(
                (r.status, error["code"].as_str(), error["param"].as_str()),
                (400, Some("ambiguous_field"), Some(field)),
                "{model} {extra}: {}",
                r.text()
            );
        }
    }
    assert_eq!(mock.stats()["requests"].as_u64().unwrap(), sent, "nothing was sent");
    // Nothing was reserved or charged: the next call costs what the first did.
    let r = gw.chat(&key, "gpt-4o-mini", r#","max_tokens":5"#);
    assert_eq!(r.status, 200, "{}", r.text());
    gw.balance_becomes("small", 10_000 - 2 * 3009);
    assert!(gw.verify_ledger().0, "{}", gw.verify_ledger().1);
}
