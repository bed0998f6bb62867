//! Upstream key pools through the real binary: a key the vendor refuses is failed over (the
//! consumer never sees it), disabled, probed later and re-enabled once the vendor accepts it
//! again; a failover storm never charges twice.

use std::time::Duration;
use tollgate_e2e::{channel, eventually, http, pricing_setting, Gateway, Mock};

fn reject(mock: &Mock, key: &str, on: bool) {
    let r = http::request(&mock.addr, "POST", &format!("/_mock/reject?key={key}&on={}", on as u8), &[], b"");
    assert_eq!(r.status, 200);
}

fn used(mock: &Mock, key: &str) -> u64 {
    mock.stats()["by_key"][key].as_u64().unwrap_or(0)
}

#[test]
fn a_refused_key_fails_over_is_disabled_and_recovers() {
    let mock = Mock::start();
    let ch = channel("pool", "openai", &mock.url(), &["gpt-4o-mini"], &["k-one", "k-two", "k-three"]);
    let gw = Gateway::start("keypool", &[("openai", "openai.wasm")], &format!("key_probe_after_ms = 1500\n{ch}"));
    reject(&mock, "k-one", true);
    for _ in 0..9 {
        let r = gw.post("/v1/chat/completions", r#"{"model":"gpt-4o-mini","messages":[]}"#);
        assert_eq!(r.status, 200, "the consumer never sees the refused key: {}", r.text());
    }
    assert_eq!(used(&mock, "k-one"), 1, "refused once, then disabled");
    let states =
        http::request(&gw.addr, "GET", "/admin/channels", &[("authorization", "Bearer admin-secret")], b"").json();
    assert_eq!(states["channels"][0]["keys"][0]["state"], "disabled", "{states}");
    assert_eq!(states["channels"][0]["keys"][0]["key"], "k-one…", "keys are shown masked: {states}");
    assert!(!states.to_string().contains("k-two\""), "{states}");
    let metrics = http::request(&gw.addr, "GET", "/metrics", &[], b"").text();
    assert!(metrics.contains("tollgate_upstream_keys{channel=\"pool\",state=\"disabled\"} 1"), "{metrics}");
    assert!(metrics.contains("tollgate_upstream_keys{channel=\"pool\",state=\"healthy\"} 2"), "{metrics}");
    assert!(metrics.contains("tollgate_failovers_total{to=\"key\"} 1"), "{metrics}");
    // The chats were forwarded by the host; the refusal went to the plugin, whose class
    // (unauthorized) disabled the key.
    assert!(metrics.contains("tollgate_calls_forwarded_total{answered=\"plugin\"} 1"), "{metrics}");

    // The vendor accepts the key again: after the probe delay one call probes it, and it serves.
    reject(&mock, "k-one", false);
    std::thread::sleep(Duration::from_millis(1600));
    assert!(
        eventually(Duration::from_secs(10), || {
            gw.post("/v1/chat/completions", r#"{"model":"gpt-4o-mini","messages":[]}"#);
            used(&mock, "k-one") >= 3
        }),
        "k-one back in rotation: used {} times",
        used(&mock, "k-one")
    );
}

#[test]
fn a_failover_storm_never_charges_twice() {
    let mock = Mock::start();
    let prices = pricing_setting(
        "[models.\"gpt-4o-mini\"]\ninput_per_million = \"1\"\noutput_per_million = \"1000\"\nmax_output_tokens = 10\n",
    );
    let ch = channel("pool", "openai", &mock.url(), &["gpt-4o-mini"], &["bad-a", "bad-b", "good"]);
    let gw = Gateway::start("storm", &[("openai", "openai.wasm")], &format!("{prices}{ch}"));
    let start = gw.balance_micros("e2e");
    let n = 20;
    let threads: Vec<_> = (0..n)
        .map(|_| {
            let (addr, key) = (gw.addr.clone(), gw.key.clone());
            std::thread::spawn(move || {
                let body = br#"{"model":"gpt-4o-mini","messages":[]}"#;
                http::request(
                    &addr,
                    "POST",
                    "/v1/chat/completions",
                    &[("authorization", &format!("Bearer {key}"))],
                    body,
                )
                .status
            })
        })
        .collect();
    let statuses: Vec<u16> = threads.into_iter().map(|t| t.join().unwrap()).collect();
    assert!(statuses.iter().all(|s| *s == 200), "{statuses:?}");
    // Each call: 9 input + 3 output tokens = 3009 micros, charged once however many keys it tried.
    assert!(
        eventually(Duration::from_secs(5), || gw.balance_micros("e2e") == start - n * 3009),
        "balance {} expected {}",
        gw.balance_micros("e2e"),
        start - n * 3009
    );
    let (ok, out) = gw.verify_ledger();
    assert!(ok, "{out}");
}

fn admin(gw: &Gateway, method: &str, path: &str, body: &str) -> http::Response {
    http::request(&gw.addr, method, path, &[("authorization", "Bearer admin-secret")], body.as_bytes())
}

fn chat(gw: &Gateway) -> u16 {
    gw.post("/v1/chat/completions", r#"{"model":"gpt-4o-mini","messages":[]}"#).status
}

#[test]
fn stored_keys_are_sealed_serve_without_restart_and_export_in_clear() {
    let mock = Mock::start();
    let ch = channel("pool", "openai", &mock.url(), &["gpt-4o-mini"], &["conf-key"]);
    let gw = Gateway::start("stored", &[("openai", "openai.wasm")], &ch);

    // The CLI stores keys; the running gateway picks them up (within key_refresh_ms).
    let file = gw.dir.join("keys.txt");
    std::fs::write(&file, "# two keys\nst-one-4f1c9a\nst-two-77b2e0, 2\n").unwrap();
    let out = Gateway::cli(&gw.config, &["upstream", "import", "--channel", "pool", "--file", file.to_str().unwrap()]);
    assert_eq!(out.trim(), "2 added, 0 updated");
    assert!(
        eventually(Duration::from_secs(10), || {
            assert_eq!(chat(&gw), 200);
            used(&mock, "st-one-4f1c9a") > 0 && used(&mock, "st-two-77b2e0") > 0
        }),
        "the stored keys serve: {}",
        mock.stats()
    );

    // The admin API stores one too; it serves from the next call on.
    let r = admin(&gw, "POST", "/admin/channels/pool/keys", r#"[{"key":"st-three-c0ffee","priority":5}]"#);
    assert_eq!((r.status, r.json()["added"].as_i64()), (200, Some(1)), "{}", r.text());
    assert_eq!(chat(&gw), 200);
    assert_eq!(used(&mock, "st-three-c0ffee"), 1, "the higher priority key served at once");
    assert_eq!(admin(&gw, "POST", "/admin/channels/pool/keys", "a key with spaces").status, 400);
    assert_eq!(admin(&gw, "POST", "/admin/channels/nope/keys", "k").status, 404);

    // At rest the keys are sealed; in the log they never appear.
    let raw = gw.raw_database("upstream_keys");
    assert!(raw.contains("st-one") || raw.len() > 100, "the table was read: {raw}");
    for secret in ["st-one-4f1c9a", "st-two-77b2e0", "st-three-c0ffee"] {
        assert!(!raw.contains(secret), "{secret} is stored in clear");
        assert!(!gw.log().contains(secret), "{secret} is in the log");
    }

    // Export gives them back in clear (importable again); a wrong master key cannot.
    let exported: serde_json::Value =
        serde_json::from_str(&Gateway::cli(&gw.config, &["upstream", "export", "--channel", "pool"])).unwrap();
    let keys: Vec<&str> = exported.as_array().unwrap().iter().map(|k| k["key"].as_str().unwrap()).collect();
    assert_eq!(keys, ["st-one-4f1c9a", "st-two-77b2e0", "st-three-c0ffee"]);
    assert_eq!(exported[1]["weight"], 2);
    let wrong = tollgate_e2e::tollgate_command()
        .env("TOLLGATE_MASTER_KEY", "ab".repeat(32))
        .args(["--config", gw.config.to_str().unwrap(), "upstream", "export"])
        .output()
        .unwrap();
    assert!(!wrong.status.success());
    assert!(String::from_utf8_lossy(&wrong.stderr).contains("does not decrypt"), "{wrong:?}");
    let api = admin(&gw, "GET", "/admin/channels/pool/keys/export", "").json();
    assert_eq!(api["keys"].as_array().unwrap().len(), 3, "{api}");
    // The configuration file's keys can move into the store too.
    let out = Gateway::cli(&gw.config, &["upstream", "import", "--from-config"]);
    assert_eq!(out.trim(), "pool: 1 added, 0 updated");
    assert!(Gateway::cli(&gw.config, &["upstream", "list"]).contains("\tpool\tconf-k…\t"));

    // Removing a stored key takes it out of the pool.
    let states = admin(&gw, "GET", "/admin/channels", "").json();
    let three = states["channels"][0]["keys"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["priority"] == 5)
        .expect("the stored key is listed")
        .clone();
    assert_eq!(three["key"], "st-thr…", "{states}");
    let id = three["stored_id"].as_i64().unwrap();
    assert_eq!(admin(&gw, "DELETE", &format!("/admin/channels/pool/keys/{id}"), "").status, 200);
    assert_eq!(admin(&gw, "DELETE", &format!("/admin/channels/pool/keys/{id}"), "").status, 404);
    for _ in 0..3 {
        assert_eq!(chat(&gw), 200);
    }
    assert_eq!(used(&mock, "st-three-c0ffee"), 1, "a removed key no longer serves");
}

fn set_balance(mock: &Mock, key: &str, value: &str) {
    let r = http::request(&mock.addr, "POST", &format!("/_mock/balance?key={key}&value={value}"), &[], b"");
    assert_eq!(r.status, 200);
}

#[test]
fn highest_balance_sends_calls_to_the_richest_key_and_follows_its_balance() {
    let mock = Mock::start();
    for (key, balance) in [("sf-low", "1.00"), ("sf-rich", "50.00"), ("sf-mid", "10.00")] {
        set_balance(&mock, key, balance);
    }
    let ch = channel("sf", "siliconflow", &mock.url(), &["gpt-4o-mini"], &["sf-low", "sf-rich", "sf-mid", "bad-sf"]);
    let gw = Gateway::start(
        "balance",
        &[("siliconflow", "siliconflow.wasm")],
        &format!("{ch}strategy = \"highest-balance\"\nbalance_refresh_secs = 1\n"),
    );
    let keys = || admin(&gw, "GET", "/admin/channels", "").json()["channels"][0]["keys"].clone();
    // One round of reads covers the pool in order; the refused key is read last.
    assert!(
        eventually(Duration::from_secs(10), || {
            let k = keys();
            k[1]["balance"] == "50.000000" && k[2]["balance"] == "10.000000" && k[3]["state"] == "disabled"
        }),
        "balances read, and a key refused by the balance read is disabled: {}",
        keys()
    );
    assert_eq!(used(&mock, "bad-sf"), 0, "before any consumer met it");

    for _ in 0..5 {
        assert_eq!(chat(&gw), 200);
    }
    assert_eq!(used(&mock, "sf-rich"), 5, "every call on the richest key: {}", mock.stats());

    // The rich key is spent: after the next read, the next richest serves.
    set_balance(&mock, "sf-rich", "0.50");
    assert!(eventually(Duration::from_secs(10), || keys()[1]["balance"] == "0.500000"), "{}", keys());
    for _ in 0..4 {
        assert_eq!(chat(&gw), 200);
    }
    assert_eq!((used(&mock, "sf-mid"), used(&mock, "sf-rich")), (4, 5), "{}", mock.stats());
    assert!(
        eventually(Duration::from_secs(5), || mock.stats()["balance_reads"].as_u64().unwrap() >= 8),
        "balances are read on schedule: {}",
        mock.stats()
    );
}

#[test]
fn a_channel_out_of_keys_fails_over_to_the_next_channel_of_the_model() {
    let mock = Mock::start();
    let primary = channel("primary", "openai", &mock.url(), &["gpt-4o-mini"], &["bad-p1", "bad-p2"]);
    let backup = channel("backup", "openai", &mock.url(), &["gpt-4o-mini"], &["good-b"]);
    let gw = Gateway::start("channels", &[("openai", "openai.wasm")], &format!("{primary}{backup}"));
    for _ in 0..6 {
        assert_eq!(chat(&gw), 200, "the consumer never sees the refused channel");
    }
    assert_eq!((used(&mock, "bad-p1"), used(&mock, "bad-p2")), (1, 1), "each refused once, then disabled");
    assert_eq!(used(&mock, "good-b"), 6);
    // Every call is recorded under the channel that served it.
    assert!(eventually(Duration::from_secs(5), || {
        admin(&gw, "GET", "/admin/logs?channel=backup", "").json()["data"].as_array().unwrap().len() == 6
    }));
    assert_eq!(admin(&gw, "GET", "/admin/logs?channel=primary", "").json()["data"], serde_json::json!([]));
    let metrics = http::request(&gw.addr, "GET", "/metrics", &[], b"").text();
    assert!(metrics.contains("tollgate_failovers_total{to=\"channel\"} "), "{metrics}");
    assert!(!metrics.contains("tollgate_failovers_total{to=\"channel\"} 0"), "{metrics}");
}

#[test]
fn channels_reload_from_the_file_without_restart_and_keep_their_keys_health() {
    let mock = Mock::start();
    let a = channel("a", "openai", &mock.url(), &["gpt-4o-mini"], &["k-a1", "bad-a2"]);
    let gw = Gateway::start("chreload", &[("openai", "openai.wasm")], &a);
    for _ in 0..4 {
        assert_eq!(chat(&gw), 200);
    }
    assert_eq!(used(&mock, "bad-a2"), 1, "refused once, then disabled");
    let embed = || gw.post("/v1/embeddings", r#"{"model":"text-embedding-3-small","input":"x"}"#).status;
    assert_eq!(embed(), 404, "no channel serves it yet");

    // A broken file is refused and the running channels keep serving.
    let original = std::fs::read_to_string(&gw.config).unwrap();
    std::fs::write(&gw.config, format!("{original}[[channel]]\nname = \"b\"\n")).unwrap();
    let r = admin(&gw, "POST", "/admin/channels/reload", "");
    assert_eq!((r.status, r.error_code().as_str()), (400, "reload_failed"), "{}", r.text());
    assert_eq!(chat(&gw), 200);

    // A new channel serves after the reload; the old one keeps what it knew about its keys.
    let b = channel("b", "openai", &mock.url(), &["text-embedding-3-small"], &["k-b"]);
    std::fs::write(&gw.config, format!("{original}{b}")).unwrap();
    let r = admin(&gw, "POST", "/admin/channels/reload", "");
    assert_eq!((r.status, r.json()["channels"].clone()), (200, serde_json::json!(["a", "b"])), "{}", r.text());
    assert_eq!(embed(), 200);
    assert_eq!(used(&mock, "k-b"), 1);
    let states = admin(&gw, "GET", "/admin/channels", "").json();
    assert_eq!(states["channels"][0]["keys"][1]["state"], "disabled", "health kept across the reload: {states}");
    for _ in 0..4 {
        assert_eq!(chat(&gw), 200);
    }
    assert_eq!(used(&mock, "bad-a2"), 1, "the disabled key stayed out");

    // SIGHUP reloads too: channel b is gone again.
    std::fs::write(&gw.config, &original).unwrap();
    let hup = std::process::Command::new("kill").args(["-HUP", &gw.proc.child.id().to_string()]).status().unwrap();
    assert!(hup.success());
    assert!(eventually(Duration::from_secs(5), || embed() == 404), "channel b removed by SIGHUP");
    assert_eq!(chat(&gw), 200);
}

/// The keys of channel `ch` as `GET /admin/channels` shows them.
fn keys_of(gw: &Gateway, ch: &str) -> Vec<serde_json::Value> {
    let channels = admin(gw, "GET", "/admin/channels", "").json();
    let channel =
        channels["channels"].as_array().unwrap().iter().find(|c| c["name"] == ch).expect("the channel").clone();
    channel["keys"].as_array().unwrap().clone()
}

/// The fingerprint of the key of `ch` whose masked form is `masked`.
fn fingerprint(gw: &Gateway, ch: &str, masked: &str) -> String {
    let keys = keys_of(gw, ch);
    let key = keys.iter().find(|k| k["key"] == masked).unwrap_or_else(|| panic!("{masked} in {keys:?}"));
    key["fingerprint"].as_str().unwrap().to_string()
}

#[test]
fn an_operator_disables_a_key_on_every_node_across_restarts_until_enabled() {
    let mock = Mock::start();
    let ch = channel("pool", "openai", &mock.url(), &["gpt-4o-mini"], &["held-a1", "free-b2"]);
    let a = Gateway::start("holds-a", &[("openai", "openai.wasm")], &ch);
    let b = Gateway::start_sharing("holds-b", &[("openai", "openai.wasm")], &ch, &a);
    let held = fingerprint(&a, "pool", "held-a…");
    let disable = |gw: &Gateway, fp: &str| admin(gw, "POST", &format!("/admin/channels/pool/keys/{fp}/disable"), "");

    // Unhappy paths first: what is not a fingerprint, a key the channel lacks, no such channel.
    let r = disable(&a, "held-a1");
    assert_eq!((r.status, r.error_code().as_str()), (400, "invalid_fingerprint"), "{}", r.text());
    let r = disable(&a, &"0".repeat(64));
    assert_eq!((r.status, r.error_code().as_str()), (404, "unknown_key"), "{}", r.text());
    let r = admin(&a, "POST", &format!("/admin/channels/nope/keys/{held}/disable"), "");
    assert_eq!((r.status, r.error_code().as_str()), (404, "unknown_channel"), "{}", r.text());
    assert!(keys_of(&a, "pool").iter().all(|k| k["state"] == "healthy" && k["disabled_by_operator"] == false));

    // Disabled on node a: it shows as the operator's, apart from its health, and no call of
    // either node uses it (node b within key_refresh_ms).
    let r = disable(&a, &held.to_uppercase());
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!((r.json()["key"].as_str(), r.json()["disabled_by_operator"].as_bool()), (Some("held-a…"), Some(true)));
    let shown = keys_of(&a, "pool")[0].clone();
    assert_eq!(
        (shown["state"].as_str(), shown["health"].as_str()),
        (Some("disabled_by_operator"), Some("healthy")),
        "{shown}"
    );
    assert!(
        eventually(Duration::from_secs(5), || keys_of(&b, "pool")[0]["state"] == "disabled_by_operator"),
        "node b applies the hold: {:?}",
        keys_of(&b, "pool")
    );
    let before = used(&mock, "held-a1");
    for gw in [&a, &b, &a, &b, &a, &b] {
        assert_eq!(chat(gw), 200);
    }
    assert_eq!(used(&mock, "held-a1"), before, "a disabled key is never picked: {}", mock.stats());
    // The metrics count it apart from the health states.
    let metrics = http::request(&a.addr, "GET", "/metrics", &[], b"").text();
    for line in ["channel=\"pool\",state=\"disabled_by_operator\"} 1", "channel=\"pool\",state=\"healthy\"} 1"] {
        assert!(metrics.contains(line), "{line} in:\n{metrics}");
    }

    // The only other key refused by the vendor: the held key still serves no one.
    reject(&mock, "free-b2", true);
    let r = a.post("/v1/chat/completions", r#"{"model":"gpt-4o-mini","messages":[]}"#);
    assert_eq!((r.status, r.error_code().as_str()), (503, "upstream_keys_unavailable"), "{}", r.text());
    assert_eq!(used(&mock, "held-a1"), before);
    let last = keys_of(&a, "pool")[1]["last_error"].clone();
    assert!(
        last["message"].as_str().unwrap().contains("refused by the vendor") && last["at"].as_i64().unwrap() > 0,
        "{last}"
    );
    reject(&mock, "free-b2", false);

    // A reload of the channels and a new node started later (a restart) keep the hold.
    assert_eq!(admin(&a, "POST", "/admin/channels/reload", "").status, 200);
    assert_eq!(keys_of(&a, "pool")[0]["state"], "disabled_by_operator");
    let c = Gateway::start_sharing("holds-c", &[("openai", "openai.wasm")], &ch, &a);
    assert_eq!(keys_of(&c, "pool")[0]["state"], "disabled_by_operator", "held from the first call on");
    for _ in 0..3 {
        chat(&c);
    }
    assert_eq!(used(&mock, "held-a1"), before, "{}", mock.stats());

    // Enabled on node c: it serves again on every node.
    let r = admin(&c, "POST", &format!("/admin/channels/pool/keys/{held}/enable"), "");
    assert_eq!((r.status, r.json()["disabled_by_operator"].as_bool()), (200, Some(false)), "{}", r.text());
    assert!(eventually(Duration::from_secs(5), || keys_of(&a, "pool")[0]["state"] == "healthy"));
    for _ in 0..4 {
        assert_eq!(chat(&a), 200);
    }
    assert!(used(&mock, "held-a1") > before, "back in rotation: {}", mock.stats());
}

#[test]
fn an_operator_reads_the_balances_now_or_is_told_why_not() {
    let mock = Mock::start();
    set_balance(&mock, "sf-rich", "50.00");
    set_balance(&mock, "sf-poor", "0.50");
    let sf =
        channel("sf", "siliconflow", &mock.url(), &["gpt-4o-mini"], &["sf-rich", "sf-poor", "sf-unread", "bad-sf"]);
    let oa = channel("oa", "openai", &mock.url(), &["gpt-4o"], &["oa-key"]);
    let gw = Gateway::start(
        "balance-now",
        &[("siliconflow", "siliconflow.wasm"), ("openai", "openai.wasm")],
        &format!("{sf}{oa}"),
    );
    // Unhappy paths first: a vendor whose plugin reads no balance, a channel that is not.
    let r = admin(&gw, "POST", "/admin/channels/oa/keys/balances/refresh", "");
    assert_eq!((r.status, r.error_code().as_str()), (409, "no_balance_operation"), "{}", r.text());
    assert!(
        r.json()["error"]["message"].as_str().unwrap().contains("'openai' has no 'balance' operation"),
        "{}",
        r.text()
    );
    let r = admin(&gw, "POST", "/admin/channels/nope/keys/balances/refresh", "");
    assert_eq!((r.status, r.error_code().as_str()), (404, "unknown_channel"));
    assert_eq!(mock.stats()["balance_reads"], 0, "the channel's strategy reads no balance on its own");
    assert!(keys_of(&gw, "sf").iter().all(|k| k["balance"].is_null()));

    let r = admin(&gw, "POST", "/admin/channels/sf/keys/balances/refresh", "");
    assert_eq!(r.status, 200, "{}", r.text());
    let read: Vec<(String, serde_json::Value, bool)> = r.json()["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| (k["key"].as_str().unwrap().to_string(), k["balance"].clone(), k["error"].is_string()))
        .collect();
    assert_eq!(
        read,
        [
            ("sf-ric…".into(), serde_json::json!("50.000000"), false),
            ("sf-poo…".into(), serde_json::json!("0.500000"), false),
            ("sf-unr…".into(), serde_json::Value::Null, true),
            ("bad-sf…".into(), serde_json::Value::Null, true),
        ]
    );
    assert_eq!(mock.stats()["balance_reads"], 4);
    let keys = keys_of(&gw, "sf");
    assert_eq!((keys[0]["balance"].as_str(), keys[1]["balance"].as_str()), (Some("50.000000"), Some("0.500000")));
    assert!(keys[2]["last_error"]["message"].as_str().unwrap().starts_with("balance read failed"), "{:?}", keys[2]);
    assert_eq!(keys[3]["state"], "disabled", "the vendor refused the key: its breaker opened");
}
