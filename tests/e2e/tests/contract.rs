//! The plugin contract as a plugin author relies on it, with the `faulty` fixture plugin's
//! native routes (see `tests/fixtures/trap`) and the mock vendor's files API: route patterns
//! and their parameters, the call context, forwarded headers (never credentials), a quote that
//! sets the reservation, model-less routes billed per call or free, multipart forms whose
//! files stay in the host, key affinity for follow-up calls (the owner only), and channel
//! settings checked when the gateway starts.

use std::time::Duration;
use tollgate_e2e::{channel, eventually, http, pricing_setting, tollgate_command, Gateway, Mock};

const PRICES: &str =
    "[models.\"fixture-video\"]\nper_second = \"0.01\"\n[ops.\"faulty/files.upload\"]\nper_call = \"0.002\"\n";

fn gateway(mock: &Mock, name: &str, keys: &[&str]) -> Gateway {
    let ch = channel("fixture", "faulty", &mock.url(), &["fixture-video"], keys);
    Gateway::start(name, &[("faulty-v1", "faulty.wasm")], &format!("{}{ch}", pricing_setting(PRICES)))
}

fn bearer(key: &str) -> String {
    format!("Bearer {key}")
}

/// Creates a consumer key and waits until the gateway knows it.
fn known_key(gw: &Gateway, name: &str, balance: &str) -> String {
    let key = gw.create_key(name, balance);
    let known = eventually(Duration::from_secs(5), || {
        http::request(&gw.addr, "GET", "/v1/user/info", &[("authorization", &bearer(&key))], b"").status == 200
    });
    assert!(known, "the gateway never learned the key {name}");
    key
}

#[test]
fn a_pattern_route_gets_its_context_forwarded_headers_and_a_quoted_reservation() {
    let mock = Mock::start();
    let gw = gateway(&mock, "contract-echo", &["k1"]);
    let auth = bearer(&gw.key);
    let echo = |key: &str, body: &str| {
        http::request(
            &gw.addr,
            "POST",
            "/fixture/echo/intro:run",
            &[("authorization", key), ("x-fixture-tag", "blue"), ("x-api-key", "leak?")],
            body.as_bytes(),
        )
    };
    let r = echo(&auth, r#"{"model":"fixture-video","seconds":30}"#);
    assert_eq!(r.status, 200, "{}", r.text());
    let v = r.json();
    assert_eq!(v["request_id"].as_str(), r.header("x-request-id"), "the context carries the gateway's request id");
    assert_eq!(v["attempt"], 1);
    assert_eq!(v["path"], "/fixture/echo/intro:run");
    assert_eq!(v["params"], serde_json::json!({ "name": "intro" }));
    assert_eq!(v["base_url"], mock.url());
    assert_eq!(v["model"], "fixture-video");
    assert_eq!(v["tag"], "blue", "the header the manifest asks for is forwarded");
    assert_eq!(v["credential_headers"], serde_json::json!([]), "consumer credentials never reach a plugin");
    // 30 seconds at 0.01 a second, as the plugin reported.
    gw.balance_becomes("e2e", 10_000_000 - 300_000);

    // The quote sets the reservation: 10 seconds fit a 0.20 balance (the model's default
    // 60 seconds would not), 30 do not.
    let small = known_key(&gw, "small", "0.20");
    assert_eq!(echo(&bearer(&small), r#"{"model":"fixture-video","seconds":10}"#).status, 200);
    gw.balance_becomes("small", 100_000);
    let r = echo(&bearer(&small), r#"{"model":"fixture-video","seconds":30}"#);
    assert_eq!((r.status, r.error_code().as_str()), (402, "insufficient_balance"), "{}", r.text());

    // A quote the plugin refuses is the consumer's 400; a billed route without its model too.
    let r = echo(&auth, r#"{"model":"fixture-video","seconds":0}"#);
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(r.text().contains("seconds"), "{}", r.text());
    let r = echo(&auth, r#"{"seconds":5}"#);
    assert_eq!((r.status, r.error_code().as_str()), (400, "missing_model"), "{}", r.text());
    // A model given twice is refused: the gateway would price one, the vendor might read the other.
    let r = echo(&auth, r#"{"model":"fixture-video","model":"dearer","seconds":5}"#);
    assert_eq!((r.status, r.error_code().as_str()), (400, "duplicate_field"), "{}", r.text());
    // A path the pattern does not match is not the plugin's.
    let r = http::request(&gw.addr, "POST", "/fixture/echo/intro", &[("authorization", &auth)], b"{}");
    assert_eq!(r.status, 404, "{}", r.text());
    gw.balance_becomes("e2e", 10_000_000 - 300_000);
    assert_eq!(mock.stats()["requests"], 0, "the echo route never calls the vendor");
}

/// A multipart body with a text field and a file.
fn upload_body(purpose: &str, file: &[u8]) -> (String, Vec<u8>) {
    let boundary = "e2e-boundary-7d1f";
    let mut body = format!(
        "--{boundary}\r\nContent-Disposition: form-data; name=\"purpose\"\r\n\r\n{purpose}\r\n--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"voice.wav\"\r\nContent-Type: audio/wav\r\n\r\n"
    )
    .into_bytes();
    body.extend_from_slice(file);
    body.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    (format!("multipart/form-data; boundary={boundary}"), body)
}

fn fnv1a64(data: &[u8]) -> String {
    let mut h: u64 = 0xcbf29ce484222325;
    for b in data {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x100000001b3);
    }
    format!("{h:016x}")
}

#[test]
fn an_uploaded_file_is_followed_up_on_the_key_that_created_it_for_its_owner_only() {
    let mock = Mock::start();
    let gw = gateway(&mock, "contract-files", &["k1", "k2", "k3"]);
    let auth = bearer(&gw.key);
    // Binary content with CRLFs and a fake boundary inside: the host must not mangle it.
    let file: Vec<u8> = (0..=255u8).chain(b"\r\n--e2e-boundary\r\n".iter().copied()).cycle().take(70_000).collect();
    let (content_type, body) = upload_body("voice_clone", &file);
    let r = http::request(
        &gw.addr,
        "POST",
        "/fixture/files",
        &[("authorization", &auth), ("content-type", &content_type)],
        &body,
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let uploaded = r.json();
    assert_eq!(uploaded["bytes"], file.len());
    assert_eq!(uploaded["fnv1a64"], fnv1a64(&file), "the file reached the vendor intact");
    assert_eq!(uploaded["purpose"], "voice_clone");
    assert_eq!(uploaded["filename"], "voice.wav");
    let id = uploaded["id"].as_str().unwrap().to_string();
    // A model-less route the plugin marks billed is priced per call by its op.
    gw.balance_becomes("e2e", 10_000_000 - 2_000);

    // The vendor keeps the file in the uploading key's account only; the pool has three keys,
    // and every follow-up runs on that one. Reads are free.
    for _ in 0..6 {
        let r = http::request(&gw.addr, "GET", &format!("/fixture/files/{id}"), &[("authorization", &auth)], b"");
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(r.json()["id"], id.as_str());
    }
    let by_key = mock.stats()["by_key"].clone();
    let used: Vec<_> = by_key.as_object().unwrap().iter().filter(|(_, n)| n.as_u64() > Some(0)).collect();
    assert_eq!(used.len(), 1, "one key served the upload and its follow-ups: {by_key}");
    gw.balance_becomes("e2e", 10_000_000 - 2_000);

    // Another consumer cannot reach the file through the gateway, and the vendor is not asked.
    let other = known_key(&gw, "other", "1");
    let before = mock.stats()["requests"].as_u64().unwrap();
    let r = http::request(&gw.addr, "GET", &format!("/fixture/files/{id}"), &[("authorization", &bearer(&other))], b"");
    assert_eq!((r.status, r.error_code().as_str()), (404, "not_found"), "{}", r.text());
    assert_eq!(mock.stats()["requests"].as_u64().unwrap(), before);

    // An id this user did not create through the gateway is not found, and no key "tries" it.
    let before = mock.stats()["requests"].as_u64().unwrap();
    let r = http::request(&gw.addr, "GET", "/fixture/files/file-unknown", &[("authorization", &auth)], b"");
    assert_eq!((r.status, r.error_code().as_str()), (404, "not_found"), "{}", r.text());
    assert_eq!(mock.stats()["requests"].as_u64().unwrap(), before);

    // A key limited to other models cannot use the plugin's model-less routes either.
    let limited =
        Gateway::cli(&gw.config, &["keys", "create", "--name", "limited", "--balance", "1", "--models", "gpt-4o"]);
    let limited = limited.trim().to_string();
    let known = eventually(Duration::from_secs(5), || {
        http::request(&gw.addr, "GET", "/v1/user/info", &[("authorization", &bearer(&limited))], b"").status == 200
    });
    assert!(known);
    let r = http::request(&gw.addr, "GET", "/fixture/files", &[("authorization", &bearer(&limited))], b"");
    assert_eq!((r.status, r.error_code().as_str()), (403, "model_not_allowed"), "{}", r.text());

    // A malformed form is the consumer's 400, in OpenAI's shape, and costs nothing.
    let r = http::request(
        &gw.addr,
        "POST",
        "/fixture/files",
        &[("authorization", &auth), ("content-type", "multipart/form-data; boundary=zz")],
        b"--zz\r\nbroken",
    );
    assert_eq!((r.status, r.error_code().as_str()), (400, "invalid_multipart"), "{}", r.text());
    // JSON under a multipart type, `--zz--` in a string: no empty form whose bytes a plugin
    // could relay unread, on a model's route either.
    let json_in_disguise = br#"{"model":"gpt-4o-mini","messages":[],"MODEL":"o1-pro","x":"--zz--"}"#;
    for path in ["/fixture/files", "/v1/chat/completions"] {
        let r = http::request(
            &gw.addr,
            "POST",
            path,
            &[("authorization", &auth), ("content-type", "multipart/form-data; boundary=zz")],
            json_in_disguise,
        );
        assert_eq!((r.status, r.error_code().as_str()), (400, "invalid_multipart"), "{path}: {}", r.text());
    }
    gw.balance_becomes("e2e", 10_000_000 - 2_000);
}

#[test]
fn a_channel_whose_settings_its_plugin_refuses_is_not_served() {
    let mock = Mock::start();
    let dir = tollgate_e2e::scratch("contract-settings");
    let plugins = dir.join("plugins");
    std::fs::create_dir_all(&plugins).unwrap();
    std::fs::copy(tollgate_e2e::plugin_file("faulty-v1"), plugins.join("faulty.wasm")).unwrap();
    let ch = channel("fixture", "faulty", &mock.url(), &["fixture-video"], &["k1"]);
    let config = dir.join("tollgate.toml");
    std::fs::write(
        &config,
        format!(
            "listen = \"127.0.0.1:0\"\ndata_dir = \"{d}/data\"\nplugins_dir = \"{d}/plugins\"\ncache_dir = \"{c}\"\n{ch}[channel.settings]\nreject = \"mode must be 'fast' or 'slow'\"\n",
            d = dir.display(),
            c = tollgate_e2e::root().join("target/e2e/plugin-cache").display()
        ),
    )
    .unwrap();
    let out = tollgate_command().arg("--config").arg(&config).arg("serve").output().unwrap();
    assert!(!out.status.success(), "serve must refuse to start");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("channel 'fixture'") && stderr.contains("mode must be 'fast' or 'slow'"),
        "the error names the channel and the plugin's reason: {stderr}"
    );
}

#[test]
fn a_read_that_got_no_answer_is_resent_on_another_key_a_costly_call_never() {
    let mock = Mock::start();
    let ch = channel("fixture", "faulty", &mock.url(), &["fixture-video"], &["k1", "k2"]);
    let extra = format!("upstream_timeout_ms = 400\n{}{ch}", pricing_setting(PRICES));
    let gw = Gateway::start("contract-resend", &[("faulty-v1", "faulty.wasm")], &extra);
    let auth = bearer(&gw.key);
    // `files.list` is declared resendable: its first request hangs, the second key answers.
    let r = http::request(&gw.addr, "GET", "/fixture/files?purpose=hang-once-1", &[("authorization", &auth)], b"");
    assert_eq!(r.status, 200, "the second key's answer: {}", r.text());
    assert_eq!(r.json()["object"], "list");
    assert_eq!(mock.stats()["requests"], 2);
    // `files.upload` is not: its request may have reached the vendor, so it is sent once, and
    // billed as reserved (the vendor may have stored the file).
    let (content_type, body) = upload_body("hang", b"hello");
    let r = http::request(
        &gw.addr,
        "POST",
        "/fixture/files",
        &[("authorization", &auth), ("content-type", &content_type)],
        &body,
    );
    assert_eq!((r.status, r.error_code().as_str()), (504, "upstream_timeout"), "{}", r.text());
    assert_eq!(mock.stats()["requests"], 3, "sent once, never on the other key");
    gw.balance_becomes("e2e", 10_000_000 - 2_000);
}

#[test]
fn an_interrupted_ndjson_stream_ends_with_an_error_line_and_pays_for_what_it_delivered() {
    let mock = Mock::start();
    let ch = channel("fixture", "faulty", &mock.url(), &["ndjson", "ndjson-cut"], &["k1"]);
    let prices =
        "[models.ndjson]\noutput_per_million = \"1000\"\n[models.\"ndjson-cut\"]\noutput_per_million = \"1000\"\n";
    let gw =
        Gateway::start("contract-ndjson", &[("faulty-v1", "faulty.wasm")], &format!("{}{ch}", pricing_setting(prices)));
    let r = gw.chat(&gw.key, "ndjson", "");
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("content-type"), Some("application/x-ndjson"));
    let lines: Vec<serde_json::Value> = r.text().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines.len(), 3, "each upstream line, reassembled across chunks: {}", r.text());
    // 7 output tokens, as the usage line said, at 0.001 each.
    gw.balance_becomes("e2e", 10_000_000 - 7_000);

    let r = gw.chat(&gw.key, "ndjson-cut", "");
    let lines: Vec<serde_json::Value> = r.text().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines.len(), 3, "two lines, then the error as a JSON line: {}", r.text());
    assert!(lines[2]["error"]["message"].as_str().is_some(), "{}", r.text());
    // No usage came: the two lines delivered are billed as two output tokens, never free.
    gw.balance_becomes("e2e", 10_000_000 - 9_000);
}

/// The released contract's text and its SHA-256: a release is never edited (a later version
/// is a new file beside it), so that plugins built from it keep their meaning.
const RELEASED: &[(&str, &str)] =
    &[("wit/released/1.0.0/adapter.wit", "7acb35985871415d08115919466cda8c47a5ba2e9d3ecc656a7ebcdd66d2e852")];

#[test]
fn a_released_contracts_text_never_changes_and_the_live_one_is_it_until_the_next_version() {
    use sha2::{Digest, Sha256};
    let root = tollgate_e2e::root();
    for (path, sha256) in RELEASED {
        let text = std::fs::read(root.join(path)).unwrap();
        assert_eq!(hex::encode(Sha256::digest(&text)), *sha256, "{path} is released: its text never changes");
    }
    // While the live contract names the released version, it is the released text.
    let live = std::fs::read_to_string(root.join("wit/adapter.wit")).unwrap();
    let released = std::fs::read_to_string(root.join(RELEASED[0].0)).unwrap();
    let package = |s: &str| s.lines().find(|l| l.starts_with("package ")).map(str::to_string);
    if package(&live) == package(&released) {
        assert!(
            live == released,
            "wit/adapter.wit changed but still says {:?}: a change is a new version",
            package(&live)
        );
    }
}

#[test]
fn a_plugin_built_from_the_released_contract_loads_and_serves() {
    let mock = Mock::start();
    let ch = channel("old", "released", &mock.url(), &["gpt-4o-mini"], &["sk-old"]);
    let prices = "[models.\"gpt-4o-mini\"]\ninput_per_million = \"1\"\noutput_per_million = \"1\"\n";
    let gw = Gateway::start(
        "contract-released",
        &[("released-1.0", "released.wasm")],
        &format!("{}{ch}", pricing_setting(prices)),
    );
    let loaded = gw.admin_plugins();
    assert!(loaded.to_string().contains("\"released\""), "{loaded}");
    let r = gw.chat(&gw.key, "gpt-4o-mini", "");
    assert_eq!(r.status, 200, "{}", r.text());
    let answer = r.json();
    assert!(answer["choices"][0]["message"]["content"].as_str().is_some(), "{answer}");
    let spent = eventually(Duration::from_secs(5), || gw.balance_micros("e2e") < 10_000_000);
    assert!(spent, "the call was charged its tokens");
    let (ok, report) = gw.verify_ledger();
    assert!(ok, "{report}");
}

#[test]
fn a_fetch_step_reads_a_declared_and_allowed_url_without_a_credential_and_nothing_else() {
    let mock = Mock::start();
    let ch = channel("fixture", "faulty", &mock.url(), &["fixture-video"], &["k1"]);
    // The fixture declares 127.0.0.1 among its fetch hosts; the operator allows it here.
    let extra = format!("fetch_allow_private_hosts = [\"127.0.0.1\"]\n{}{ch}", pricing_setting(PRICES));
    let gw = Gateway::start("contract-fetch", &[("faulty-v1", "faulty.wasm")], &extra);
    let fetch = |gw: &Gateway, url: &str| {
        http::request(
            &gw.addr,
            "GET",
            &format!("/fixture/fetch?url={url}"),
            &[("authorization", &bearer(&gw.key))],
            b"",
        )
    };
    // The mock's model list needs a key: the fetch carries none, so the plugin reads a 401.
    let r = fetch(&gw, &format!("{}/v1/models", mock.url()));
    assert_eq!((r.status, r.json()["status"].as_u64()), (200, Some(401)), "{}", r.text());
    // A host the plugin did not declare, and a plain-http public host: refused, never reached.
    for url in ["http://example.com/x", "https://example.com/x"] {
        let r = fetch(&gw, url);
        assert_eq!(r.status, 502, "{url}: {}", r.text());
    }
    // Without the operator's leave, the declared loopback host is not reached either.
    let ch = channel("fixture", "faulty", &mock.url(), &["fixture-video"], &["k1"]);
    let strict = Gateway::start(
        "contract-fetch-strict",
        &[("faulty-v1", "faulty.wasm")],
        &format!("{}{ch}", pricing_setting(PRICES)),
    );
    let before = mock.stats()["requests"].as_u64();
    let r = fetch(&strict, &format!("{}/v1/models", mock.url()));
    assert_eq!(r.status, 502, "{}", r.text());
    assert_eq!(mock.stats()["requests"].as_u64(), before, "nothing reached the private host");
}

#[test]
fn an_archive_step_keeps_a_file_for_the_calls_consumer_only_and_a_relay_streams_one() {
    let mock = Mock::start();
    let ch = channel("fixture", "faulty", &mock.url(), &["fixture-video"], &["k1"]);
    let extra = format!("fetch_allow_private_hosts = [\"127.0.0.1\"]\n{}{ch}", pricing_setting(PRICES));
    let gw = Gateway::start("contract-archive", &[("faulty-v1", "faulty.wasm")], &extra);
    let get = |key: &str, path: &str| http::request(&gw.addr, "GET", path, &[("authorization", &bearer(key))], b"");
    let r = get(&gw.key, &format!("/fixture/archive?url={}/cdn/static/clip.mp4", mock.url()));
    assert_eq!(r.status, 200, "{}", r.text());
    let file = r.json()["files"][0].clone();
    let expected = b"\0\0\0\x18ftypmp42 static clip";
    assert_eq!(
        (file["size"].as_u64(), file["content_type"].as_str()),
        (Some(expected.len() as u64), Some("video/mp4")),
        "{file}"
    );
    // The plugin is told where the consumer reads it now: the gateway, for its owner only.
    let url = file["url"].as_str().expect("the gateway's URL").to_string();
    assert!(url.starts_with("/v1/tasks/task_") && url.ends_with("/content/0"), "{url}");
    let kept = get(&gw.key, &url);
    assert_eq!((kept.status, kept.header("content-type")), (200, Some("video/mp4")));
    assert_eq!(kept.body, expected);
    let other = known_key(&gw, "other", "1");
    assert_eq!(get(&other, &url).status, 404, "another consumer never reads it");
    // A relay of the same URL streams it to the consumer, the vendor's bytes as they are.
    let relayed = get(&gw.key, &format!("/fixture/relay?url={}/cdn/static/clip.mp4", mock.url()));
    assert_eq!((relayed.status, relayed.header("content-type")), (200, Some("video/mp4")));
    assert_eq!(relayed.body, expected);
    assert_eq!(get(&gw.key, "/fixture/relay?url=https://example.com/clip.mp4").status, 502, "an undeclared host");
    // A CDN's refusal is relayed as it is and says nothing of the channel's key, which
    // went nowhere near it: the key still serves the next call.
    let refused = get(&gw.key, &format!("/fixture/relay?url={}/v1/models", mock.url()));
    assert_eq!(refused.status, 401, "{}", refused.text());
    let listed = get(&gw.key, "/fixture/files");
    assert_eq!(listed.status, 200, "the channel's only key was not disabled: {}", listed.text());
    // What is no media (an HTML page answered 200) is refused, and nothing is kept.
    let r = get(&gw.key, &format!("/fixture/archive?url={}/cdn/static/page.html", mock.url()));
    assert_eq!(r.status, 502, "{}", r.text());
    let (ok, report) = gw.verify_ledger();
    assert!(ok, "{report}");
}
