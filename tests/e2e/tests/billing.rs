//! Money through the real binary: 402 before the upstream, exact charges, concurrent calls
//! that cannot overdraw, interrupted streams billed by the written rule, and a ledger that
//! stays consistent when the gateway is killed under load.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tollgate_e2e::{channel, eventually, http, pricing_setting, Gateway, Mock};

/// input 1 and output 1000 per million tokens: a chat with the mock's usage (9 in, 3 out)
/// costs 9 + 3000 micros; reserving 1000 output tokens holds 1,000,000 micros.
const PRICES: &str = r#"
[models."gpt-4o-mini"]
input_per_million = "1"
output_per_million = "1000"
max_output_tokens = 1000
[models."slow-300"]
input_per_million = "1"
output_per_million = "1000"
max_output_tokens = 1000
[models."fail-500"]
per_call = "1"
[models."dall-e-3"]
per_image = "0.04"
[models."cut-stream"]
input_per_million = "1"
output_per_million = "1000"
max_output_tokens = 1000
"#;

fn billed_gateway(mock: &Mock, name: &str) -> Gateway {
    let ch = channel(
        "mock",
        "openai",
        &mock.url(),
        &["gpt-4o-mini", "slow-300", "cut-stream", "fail-500", "unpriced", "dall-e-3"],
        &["up"],
    );
    Gateway::start(name, &[("openai", "openai.wasm")], &format!("{}{ch}", pricing_setting(PRICES)))
}

#[test]
fn a_call_the_balance_cannot_cover_is_refused_before_the_upstream() {
    let mock = Mock::start();
    let gw = billed_gateway(&mock, "bill402");
    let poor = gw.create_key("poor", "0.5");
    assert!(eventually(Duration::from_secs(5), || gw.chat(&poor, "gpt-4o-mini", "").status != 401));
    let before = mock.stats()["requests"].as_u64().unwrap();
    let r = gw.chat(&poor, "gpt-4o-mini", "");
    assert_eq!((r.status, r.error_code().as_str()), (402, "insufficient_balance"), "{}", r.text());
    assert!(r.json()["error"]["message"].as_str().unwrap().contains("0.500000"));
    // A smaller max_tokens fits: the reservation follows the request.
    let r = gw.chat(&poor, "gpt-4o-mini", r#","max_tokens":100"#);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(mock.stats()["requests"].as_u64().unwrap(), before + 1, "the refused call never reached the upstream");
    // An unpriced model is refused, not served free.
    let r = gw.chat(&gw.key, "unpriced", "");
    assert_eq!((r.status, r.error_code().as_str()), (403, "model_not_priced"));
}

#[test]
fn charges_are_exact_and_failed_calls_are_free() {
    let mock = Mock::start();
    let gw = billed_gateway(&mock, "billexact");
    let start = gw.balance_micros("e2e");
    for _ in 0..3 {
        assert_eq!(gw.chat(&gw.key, "gpt-4o-mini", "").status, 200);
    }
    // A failed call costs nothing, even with a per-call price.
    assert_eq!(gw.chat(&gw.key, "fail-500", "").status, 502);
    assert!(eventually(Duration::from_secs(5), || gw.balance_micros("e2e") == start - 3 * 3009));
    let (ok, out) = gw.verify_ledger();
    assert!(ok, "{out}");
    let info =
        http::request(&gw.addr, "GET", "/v1/user/info", &[("authorization", &format!("Bearer {}", gw.key))], b"")
            .json();
    assert_eq!(info["usage"]["calls"], 4, "{info}");
    assert_eq!(info["usage"]["spent"], "0.009027", "{info}");
    assert_eq!(info["balance"], "9.990973", "{info}");
}

#[test]
fn paid_calls_are_refused_while_charges_cannot_be_queued_and_each_call_served_is_charged_once() {
    let mock = Mock::start();
    let ch = channel("mock", "openai", &mock.url(), &["gpt-4o-mini"], &["up"]);
    let gw = Gateway::start(
        "chargequeue",
        &[("openai", "openai.wasm")],
        &format!("call_log_queue = 4\n{}{ch}", pricing_setting(PRICES)),
    );
    let start = gw.balance_micros("e2e");
    let served_before = mock.stats()["requests"].as_u64().unwrap();
    // The database stops taking writes: the writer holds its batch, and four more charges
    // fill their queue; then paid calls are refused before the upstream.
    let lock = gw.hold_writes();
    let mut served = 0;
    let refused = loop {
        let r = gw.chat(&gw.key, "gpt-4o-mini", "");
        if r.status != 200 {
            break r;
        }
        served += 1;
        assert!(served < 2_000, "no call was refused with the database's writes held");
    };
    assert_eq!((refused.status, refused.error_code().as_str()), (503, "overloaded"), "{}", refused.text());
    assert!(refused.json()["error"]["message"].as_str().unwrap().contains("database is behind"));
    assert_eq!(
        mock.stats()["requests"].as_u64().unwrap(),
        served_before + served,
        "the refused call never reached the upstream"
    );
    // Four charges wait, and the refused call's own (free) record.
    assert_eq!(gw.metric("tollgate_call_records_queued"), 5.0);
    assert_eq!(gw.balance_micros("e2e"), start, "nothing is committed while the database holds its writes");
    // Writes resume: every charge queued or held is written once, and paid calls are served.
    drop(lock);
    assert!(eventually(Duration::from_secs(20), || gw.chat(&gw.key, "gpt-4o-mini", "").status == 200));
    served += 1;
    gw.balance_becomes("e2e", start - served as i64 * 3009);
    let (ok, out) = gw.verify_ledger();
    assert!(ok, "{out}");
}

#[test]
fn parallel_calls_against_a_small_balance_never_overdraw() {
    let mock = Mock::start();
    let gw = billed_gateway(&mock, "billrace");
    // Room for two reservations of ~1.0 each, not three.
    let key = gw.create_key("racer", "2.5");
    assert!(eventually(Duration::from_secs(5), || gw.chat(&key, "gpt-4o-mini", r#","max_tokens":1"#).status == 200));
    let ok = Arc::new(AtomicU64::new(0));
    let refused = Arc::new(AtomicU64::new(0));
    let threads: Vec<_> = (0..16)
        .map(|_| {
            let (ok, refused, addr, key) = (ok.clone(), refused.clone(), gw.addr.clone(), key.clone());
            std::thread::spawn(move || {
                let body = br#"{"model":"slow-300","messages":[]}"#;
                let r = http::request(
                    &addr,
                    "POST",
                    "/v1/chat/completions",
                    &[("authorization", &format!("Bearer {key}"))],
                    body,
                );
                match r.status {
                    200 => ok.fetch_add(1, Ordering::Relaxed),
                    402 => refused.fetch_add(1, Ordering::Relaxed),
                    s => panic!("unexpected {s}: {}", r.text()),
                };
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let (ok, refused) = (ok.load(Ordering::Relaxed), refused.load(Ordering::Relaxed));
    assert!(ok >= 1 && refused >= 1, "ok {ok}, refused {refused}");
    assert!(ok <= 2 + 1, "at most two reservations fit at once (one more may start after one ends): ok {ok}");
    assert!(
        eventually(Duration::from_secs(5), || {
            let b = gw.balance_micros("racer");
            b == 2_500_000 - (ok as i64 + 1) * 3_009
        }),
        "balance {}",
        gw.balance_micros("racer")
    );
    assert!(gw.balance_micros("racer") >= 0);
}

#[test]
fn an_interrupted_stream_is_billed_for_what_was_delivered() {
    let mock = Mock::start();
    let gw = billed_gateway(&mock, "billcut");
    let start = gw.balance_micros("e2e");
    let body = r#"{"model":"cut-stream","stream":true,"messages":[]}"#;
    let r = gw.post("/v1/chat/completions", body);
    let data = r.sse_data();
    assert!(data.last().unwrap().contains("\"error\""), "ends with an error event: {data:?}");
    // Delivered: the role event and two content events = 3 output tokens (3000 micros), plus the
    // input estimated from the request (one token per 2 bytes, 1 micro each).
    let expected = 3 * 1000 + (body.len() as u64).div_ceil(2) as i64;
    assert!(
        eventually(Duration::from_secs(5), || gw.balance_micros("e2e") == start - expected),
        "balance {} expected {}",
        gw.balance_micros("e2e"),
        start - expected
    );
}

#[test]
fn sigkill_under_load_leaves_the_ledger_consistent() {
    let mock = Mock::start();
    let mut gw = billed_gateway(&mock, "billkill");
    let stop = Instant::now() + Duration::from_millis(1500);
    let threads: Vec<_> = (0..4)
        .map(|_| {
            let (addr, key) = (gw.addr.clone(), gw.key.clone());
            std::thread::spawn(move || {
                while Instant::now() < stop {
                    let body = br#"{"model":"gpt-4o-mini","max_tokens":5,"messages":[]}"#;
                    if http::try_request(
                        &addr,
                        "POST",
                        "/v1/chat/completions",
                        &[("authorization", &format!("Bearer {key}"))],
                        body,
                    )
                    .is_none()
                    {
                        return;
                    }
                }
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(1000));
    gw.proc.child.kill().unwrap(); // SIGKILL, mid-load
    gw.proc.child.wait().unwrap();
    for t in threads {
        t.join().unwrap();
    }
    let (ok, out) = gw.verify_ledger();
    assert!(ok, "after SIGKILL: {out}");
    assert!(gw.balance_micros("e2e") < 10_000_000, "some calls were charged before the kill");
}

#[test]
fn reports_and_logs_show_usage_spending_and_pages() {
    let mock = Mock::start();
    let gw = billed_gateway(&mock, "reports");
    for _ in 0..3 {
        assert_eq!(gw.chat(&gw.key, "gpt-4o-mini", "").status, 200);
    }
    assert_eq!(gw.chat(&gw.key, "fail-500", "").status, 502);
    // A second user, with one call through a key of their own.
    Gateway::cli(&gw.config, &["users", "create", "--name", "bob", "--balance", "2"]);
    let bob_key =
        Gateway::cli(&gw.config, &["keys", "create", "--name", "bob-key", "--user", "bob"]).trim().to_string();
    assert!(eventually(Duration::from_secs(5), || gw.chat(&bob_key, "gpt-4o-mini", "").status == 200));
    let admin = |path: &str| http::request(&gw.addr, "GET", path, &[("authorization", "Bearer admin-secret")], b"");
    assert!(eventually(Duration::from_secs(5), || admin("/admin/stats").json()["calls"] == 5));

    let stats = admin("/admin/stats").json();
    assert_eq!(stats["revenue"], "0.012036", "{stats}");
    let metrics = http::request(&gw.addr, "GET", "/metrics", &[], b"").text();
    assert!(metrics.contains("tollgate_charged_micros_total 12036"), "{metrics}");
    assert_eq!(stats["errors"], 1, "{stats}");
    assert_eq!(stats["top_keys"][0]["name"], "e2e", "{stats}");
    assert_eq!(stats["top_users"][0]["calls"], 4, "{stats}");
    assert_eq!((&stats["top_users"][1]["name"], &stats["top_users"][1]["spent"]), (&"bob".into(), &"0.003009".into()));

    let usage = admin("/admin/reports/usage?period=month").json();
    assert_eq!(usage["data"][0]["calls"], 5, "{usage}");
    assert_eq!(usage["data"][0]["output_tokens"], 12, "{usage}");
    let today = admin("/admin/reports/usage?period=day").json();
    let date = String::from_utf8(std::process::Command::new("date").args(["-u", "+%Y-%m-%d"]).output().unwrap().stdout)
        .unwrap();
    assert_eq!(today["data"][0]["period"], date.trim(), "{today}");
    assert_eq!(admin("/admin/reports/usage?period=year").status, 400);

    let keys = admin("/admin/reports/keys").json();
    assert_eq!(keys["data"][0]["spent"], "0.009027", "{keys}");
    assert_eq!(keys["data"][0]["balance"], "9.990973", "{keys}");

    // The billing summary per user: what each spent and was credited.
    let users = admin("/admin/reports/users").json();
    let bob = users["data"].as_array().unwrap().iter().find(|u| u["name"] == "bob").expect("bob").clone();
    assert_eq!((&bob["calls"], &bob["spent"], &bob["credited"]), (&1.into(), &"0.003009".into(), &"2.000000".into()));
    assert_eq!(bob["balance"], "1.996991", "{users}");
    let bob_calls = admin(&format!("/admin/logs?user_id={}", bob["user_id"])).json();
    assert_eq!(bob_calls["data"].as_array().unwrap().len(), 1, "{bob_calls}");

    // Filters and pages. A filter that does not read is refused, never silently dropped.
    for bad in ["status=oops", "status=7", "user_id=bob", "key_id=1.5", "from=yesterday", "limit=all"] {
        let r = admin(&format!("/admin/logs?{bad}"));
        assert_eq!((r.status, r.error_code().as_str()), (400, "bad_report_query"), "{bad}: {}", r.text());
    }
    let errors_only = admin("/admin/logs?status=errors").json();
    assert_eq!(errors_only["data"].as_array().unwrap().len(), 1, "{errors_only}");
    assert_eq!(errors_only["data"][0]["status"], 502);
    let bob_key_id =
        keys["data"].as_array().unwrap().iter().find(|k| k["name"] == "bob-key").unwrap()["key_id"].clone();
    let by_key = admin(&format!("/admin/logs?key_id={bob_key_id}&status=2&user_id=")).json();
    assert_eq!(by_key["data"].as_array().unwrap().len(), 1, "{by_key}");
    assert_eq!(by_key["data"][0]["key_id"], bob_key_id);
    let errors = admin("/admin/logs?status=5").json();
    assert_eq!(errors["data"].as_array().unwrap().len(), 1, "{errors}");
    assert_eq!(errors["data"][0]["model"], "fail-500");
    let page1 = admin("/admin/logs?model=gpt-4o-mini&limit=3").json();
    assert_eq!(page1["data"].as_array().unwrap().len(), 3);
    let next = page1["next_before_id"].as_i64().expect("a next page");
    let page2 = admin(&format!("/admin/logs?model=gpt-4o-mini&limit=3&before_id={next}")).json();
    assert_eq!(page2["data"].as_array().unwrap().len(), 1, "{page2}");
    assert!(page2["next_before_id"].is_null());

    // The CLI reads the same.
    let out = Gateway::cli(&gw.config, &["report", "stats"]);
    assert!(out.contains("\"revenue\": \"0.012036\""), "{out}");
    let out = Gateway::cli(&gw.config, &["logs", "--status", "5"]);
    assert!(out.contains("fail-500"), "{out}");
    let out = Gateway::cli(&gw.config, &["logs", "--status", "errors"]);
    assert!(out.contains("fail-500") && !out.contains("\"gpt-4o-mini\""), "{out}");
    let out = Gateway::cli(&gw.config, &["report", "users"]);
    assert!(out.contains("\"credited\": \"2.000000\""), "{out}");
}

#[test]
fn prices_are_edited_through_the_admin_api_without_restart() {
    let mock = Mock::start();
    let gw = billed_gateway(&mock, "pricing");
    let admin = |method: &str, body: &str| {
        http::request(&gw.addr, method, "/admin/pricing", &[("authorization", "Bearer admin-secret")], body.as_bytes())
    };
    assert!(admin("GET", "").text().contains("gpt-4o-mini"));
    let initial = gw.balance_micros("e2e");
    let r = admin("PUT", "[models.\"gpt-4o-mini\"]\ninput_per_million = 0.5\n");
    assert_eq!((r.status, r.error_code().as_str()), (400, "invalid_pricing"), "a float is refused");
    assert_eq!(gw.chat(&gw.key, "gpt-4o-mini", "").status, 200, "the old table still serves");
    let r = admin("PUT", "[models.\"gpt-4o-mini\"]\nper_call = \"1\"\n");
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(gw.chat(&gw.key, "gpt-4o-mini", "").status, 200);
    assert!(
        eventually(Duration::from_secs(5), || gw.balance_micros("e2e") == initial - 3_009 - 1_000_000),
        "the first call at the old prices, the second per call: {}",
        gw.balance_micros("e2e")
    );
    assert_eq!(gw.chat(&gw.key, "slow-300", "").status, 403, "models no longer in the table are refused");
}

#[test]
fn keys_of_one_user_share_its_balance_and_a_key_limit_binds_that_key_only() {
    let mock = Mock::start();
    let gw = billed_gateway(&mock, "users");
    Gateway::cli(&gw.config, &["users", "create", "--name", "acme", "--balance", "5"]);
    let a = Gateway::cli(&gw.config, &["keys", "create", "--name", "acme-a", "--user", "acme"]).trim().to_string();
    // Limit 1.5: one call reserves ~1.0 (1000 output tokens at 1000 per million).
    let b = Gateway::cli(&gw.config, &["keys", "create", "--name", "acme-b", "--user", "acme", "--limit", "1.5"])
        .trim()
        .to_string();
    assert!(eventually(Duration::from_secs(5), || gw.chat(&a, "gpt-4o-mini", "").status == 200));
    assert!(eventually(Duration::from_secs(5), || gw.chat(&b, "gpt-4o-mini", "").status == 200));
    // Both keys charged the one balance: 5 - 2 × 3009 micros.
    assert!(
        eventually(Duration::from_secs(5), || gw.balance_micros("acme-a") == 5_000_000 - 2 * 3_009
            && gw.balance_micros("acme-b") == 5_000_000 - 2 * 3_009),
        "{}",
        Gateway::cli(&gw.config, &["keys", "list"])
    );
    // Key b has 1.5 - 0.003009 left: a second full reservation does not fit its limit...
    assert_eq!(gw.chat(&b, "gpt-4o-mini", "").status, 200);
    assert!(eventually(Duration::from_secs(5), || gw.balance_micros("acme-a") == 5_000_000 - 3 * 3_009));
    let r = gw.chat(&b, "gpt-4o-mini", r#","max_tokens":1500"#);
    assert_eq!((r.status, r.error_code().as_str()), (402, "key_limit_reached"), "{}", r.text());
    // ...while key a still spends the user's balance.
    assert_eq!(gw.chat(&a, "gpt-4o-mini", r#","max_tokens":1500"#).status, 200);
    Gateway::cli(&gw.config, &["users", "topup", "--name", "acme", "--amount", "1"]);
    let users = Gateway::cli(&gw.config, &["users", "list"]);
    assert!(users.contains("acme"), "{users}");
    let (ok, out) = gw.verify_ledger();
    assert!(ok, "{out}");
}

#[test]
fn two_nodes_on_one_database_share_balances_and_the_ledger() {
    let mock = Mock::start();
    let a = billed_gateway(&mock, "node-a");
    let config = std::fs::read_to_string(&a.config).unwrap();
    let extra = &config[config.find("pricing_file").unwrap()..];
    let b = Gateway::start_sharing("node-b", &[("openai", "openai.wasm")], extra, &a);

    // One user, one key, created through node A. With max_tokens 5 a call reserves about
    // 0.005 and costs 0.003009: the balance covers one call, not two.
    let key = a.create_key("shared", "0.006");
    let info = |gw: &Gateway| {
        http::request(&gw.addr, "GET", "/v1/user/info", &[("authorization", &format!("Bearer {key}"))], b"").json()
    };
    let call = |gw: &Gateway| gw.chat(&key, "gpt-4o-mini", r#","max_tokens":5"#);
    assert!(eventually(Duration::from_secs(5), || info(&a)["balance"] == "0.006000"), "node A knows the key");
    assert!(eventually(Duration::from_secs(5), || info(&b)["balance"] == "0.006000"), "node B knows the key");
    assert_eq!(call(&a).status, 200);

    // Node B sees node A's charge, and refuses what the balance no longer covers.
    assert!(eventually(Duration::from_secs(5), || info(&b)["balance"] == "0.002991"), "{}", info(&b));
    let r = call(&b);
    assert_eq!((r.status, r.error_code().as_str()), (402, "insufficient_balance"), "{}", r.text());

    // A top-up through node B's CLI serves on node A.
    Gateway::cli(&b.config, &["users", "topup", "--name", "shared", "--amount", "1"]);
    assert!(eventually(Duration::from_secs(5), || info(&a)["balance"] == "1.002991"), "{}", info(&a));
    assert_eq!(call(&a).status, 200);
    assert!(eventually(Duration::from_secs(5), || info(&b)["balance"] != "0.002991"), "node B sees the top-up");
    assert_eq!(call(&b).status, 200);
    assert!(eventually(Duration::from_secs(5), || info(&a)["balance"] == "0.996973"), "{}", info(&a));
    for gw in [&a, &b] {
        let (ok, out) = gw.verify_ledger();
        assert!(ok, "{out}");
    }
}

#[test]
fn a_client_that_leaves_mid_stream_pays_for_what_it_received() {
    use std::io::{Read, Write};
    let mock = Mock::start_with(&["--chunk-delay-ms", "200"]);
    let gw = billed_gateway(&mock, "billgone");
    let body = r#"{"model":"gpt-4o-mini","stream":true,"messages":[]}"#;
    let mut conn = std::net::TcpStream::connect(&gw.addr).unwrap();
    write!(
        conn,
        "POST /v1/chat/completions HTTP/1.1\r\nhost: t\r\nauthorization: Bearer {}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
        gw.key,
        body.len()
    )
    .unwrap();
    // Read until the first event arrived, then leave.
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    while !String::from_utf8_lossy(&seen).contains("data: ") {
        let n = conn.read(&mut buf).unwrap();
        assert!(n > 0, "the stream ended early: {}", String::from_utf8_lossy(&seen));
        seen.extend_from_slice(&buf[..n]);
    }
    drop(conn);

    let admin = |path: &str| http::request(&gw.addr, "GET", path, &[("authorization", "Bearer admin-secret")], b"");
    let record = || admin("/admin/logs?model=gpt-4o-mini").json()["data"][0].clone();
    assert!(eventually(Duration::from_secs(10), || record()["error"] == "client_gone"), "{}", record());
    let r = record();
    assert_eq!(r["interrupted"], true, "{r}");
    // No usage was seen (it comes last): the input estimate plus one output token (1000
    // micros) per event delivered. At least the first event, never the whole stream (5 content
    // events and the usage).
    let charged = (gw.balance_micros("e2e") - 10_000_000).abs();
    let input = (body.len() as i64 + 1) / 2;
    assert!(charged >= 1000 + input && charged < 5000 + input, "charged {charged} micros: {r}");
    assert_eq!(r["charge"], format!("0.{charged:06}"));
    let (ok, out) = gw.verify_ledger();
    assert!(ok, "{out}");
}

#[test]
fn images_are_reserved_by_n_and_charged_per_image() {
    let mock = Mock::start();
    let gw = billed_gateway(&mock, "billimg");
    let key = gw.create_key("painter", "0.1");
    let images = |n: u32| {
        http::request(
            &gw.addr,
            "POST",
            "/v1/images/generations",
            &[("authorization", &format!("Bearer {key}"))],
            format!(r#"{{"model":"dall-e-3","prompt":"a lighthouse","n":{n}}}"#).as_bytes(),
        )
    };
    let info =
        || http::request(&gw.addr, "GET", "/v1/user/info", &[("authorization", &format!("Bearer {key}"))], b"").status;
    assert!(eventually(Duration::from_secs(5), || info() == 200), "the key is known");
    let before = mock.stats()["requests"].as_u64().unwrap();
    // 3 images reserve 0.12 > 0.1: refused before the upstream.
    let r = images(3);
    assert_eq!((r.status, r.error_code().as_str()), (402, "insufficient_balance"), "{}", r.text());
    assert_eq!(mock.stats()["requests"].as_u64().unwrap(), before, "the upstream was not called");
    let r = images(2);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["data"].as_array().unwrap().len(), 2);
    assert!(
        eventually(Duration::from_secs(5), || gw.balance_micros("painter") == 100_000 - 80_000),
        "2 images at 0.04: balance {}",
        gw.balance_micros("painter")
    );
}

#[test]
fn siliconflow_images_and_rerank_are_translated_and_billed_by_their_units() {
    let mock = Mock::start();
    let prices = pricing_setting(
        "[models.\"Kwai-Kolors/Kolors\"]\nper_image = \"0.02\"\n[models.\"BAAI/bge-reranker-v2-m3\"]\ninput_per_million = \"1000\"\n",
    );
    let ch = channel("sf", "siliconflow", &mock.url(), &["Kwai-Kolors/Kolors", "BAAI/bge-reranker-v2-m3"], &["up"]);
    let gw = Gateway::start("sfbill", &[("siliconflow", "siliconflow.wasm")], &format!("{prices}{ch}"));
    let start = gw.balance_micros("e2e");

    // OpenAI's image request in, SiliconFlow's on the wire, OpenAI's answer out.
    let r = gw
        .post("/v1/images/generations", r#"{"model":"Kwai-Kolors/Kolors","prompt":"a fox","size":"1024x1024","n":2}"#);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["data"].as_array().unwrap().len(), 2, "{}", r.text());
    let sent = &mock.last_body("/v1/images/generations")["json"];
    assert_eq!((&sent["image_size"], &sent["batch_size"]), (&"1024x1024".into(), &2.into()), "{sent}");
    assert!(eventually(Duration::from_secs(5), || gw.balance_micros("e2e") == start - 40_000), "2 images at 0.02");

    // Rerank: the vendor's meta.tokens (the mock counts a token per 4 bytes: query 1 + documents
    // 3 + 5 = 9 tokens, at 1000 per million).
    let r = gw.post(
        "/v1/rerank",
        r#"{"model":"BAAI/bge-reranker-v2-m3","query":"fox","documents":["a red fox","a brown dog jumps"]}"#,
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["results"][0]["index"], 1, "{}", r.text());
    assert!(
        eventually(Duration::from_secs(5), || gw.balance_micros("e2e") == start - 40_000 - 9_000),
        "balance {}",
        gw.balance_micros("e2e")
    );
}

#[test]
fn every_log_shows_the_units_each_call_was_billed_for() {
    let mock = Mock::start();
    let gw = billed_gateway(&mock, "units");
    assert_eq!(gw.chat(&gw.key, "gpt-4o-mini", "").status, 200);
    let r = gw.post("/v1/images/generations", r#"{"model":"dall-e-3","prompt":"a cat","n":2}"#);
    assert_eq!(r.status, 200, "{}", r.text());
    let auth = format!("Bearer {}", gw.key);
    let user_log = || http::request(&gw.addr, "GET", "/v1/user/logs", &[("authorization", &auth)], b"").json();
    assert!(eventually(Duration::from_secs(5), || user_log()["data"].as_array().unwrap().len() == 2));
    let log = user_log();
    let (image, chat) = (&log["data"][0], &log["data"][1]);
    assert_eq!(chat["units"], serde_json::json!({ "input_tokens": 9, "output_tokens": 3 }), "{log}");
    assert_eq!((&chat["charge"], &chat["estimated"]), (&"0.003009".into(), &false.into()), "{log}");
    assert_eq!(image["units"]["images"], 2, "{log}");
    assert_eq!(image["charge"], "0.080000", "{log}");
    // The operator sees the same in the admin log and on the command line.
    let admin = http::request(&gw.addr, "GET", "/admin/logs", &[("authorization", "Bearer admin-secret")], b"").json();
    assert_eq!(admin["data"][1]["units"], chat["units"], "{admin}");
    let cli: serde_json::Value = serde_json::from_str(&Gateway::cli(&gw.config, &["logs", "--limit", "2"])).unwrap();
    assert_eq!(cli["data"][0]["units"]["images"], 2, "{cli}");
}
