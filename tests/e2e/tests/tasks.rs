//! Asynchronous tasks end to end, with the `faulty` fixture's `POST /fixture/videos` (quoted by
//! its seconds) against the mock vendor's job API: the submit holds the quote on the ledger at
//! once, the gateway polls the job on the key that created it, success charges the seconds the
//! vendor rendered and gives the rest of the hold back, failure gives it all back, and only
//! the owner sees the task.

use std::time::Duration;
use tollgate_e2e::{channel, eventually, http, pricing_setting, Gateway, Mock};

const PRICES: &str = "[models.\"fixture-video\"]\nper_second = \"0.01\"\n";

fn submit(gw: &Gateway, key: &str, body: &str) -> http::Response {
    http::request(&gw.addr, "POST", "/fixture/videos", &[("authorization", &format!("Bearer {key}"))], body.as_bytes())
}

fn task(gw: &Gateway, key: &str, id: &str) -> http::Response {
    http::request(&gw.addr, "GET", &format!("/v1/tasks/{id}"), &[("authorization", &format!("Bearer {key}"))], b"")
}

/// Waits for the task's final status and returns the task.
fn finished(gw: &Gateway, id: &str) -> serde_json::Value {
    finished_for(gw, &gw.key, id)
}

fn finished_for(gw: &Gateway, key: &str, id: &str) -> serde_json::Value {
    let mut last = serde_json::Value::Null;
    let done = eventually(Duration::from_secs(30), || {
        last = task(gw, key, id).json();
        !matches!(last["status"].as_str(), Some("queued" | "in_progress"))
    });
    assert!(done, "the task never finished: {last}");
    last
}

fn balance_becomes(gw: &Gateway, micros: i64) {
    let ok = eventually(Duration::from_secs(5), || gw.balance_micros("e2e") == micros);
    assert!(ok, "balance {} micros, expected {micros}", gw.balance_micros("e2e"));
}

#[test]
fn a_task_holds_its_quote_is_polled_on_its_key_and_is_charged_once_by_what_was_made() {
    let mock = Mock::start();
    let ch = channel("video", "faulty", &mock.url(), &["fixture-video"], &["k1", "k2", "k3"]);
    let gw = Gateway::start("tasks-flow", &[("faulty-v1", "faulty.wasm")], &format!("{}{ch}", pricing_setting(PRICES)));

    let r = submit(&gw, &gw.key, r#"{"model":"fixture-video","seconds":5,"prompt":"a cat"}"#);
    assert_eq!(r.status, 200, "{}", r.text());
    let submitted = r.json();
    let id = submitted["id"].as_str().unwrap().to_string();
    assert!(id.starts_with("task_") && id.len() > 30, "an unguessable id: {id}");
    assert_eq!(submitted["status"], "queued");
    // The quote (5 s at 0.01) is held at once, on the ledger.
    balance_becomes(&gw, 10_000_000 - 50_000);

    let done = finished(&gw, &id);
    assert_eq!(done["status"], "succeeded", "{done}");
    assert_eq!(done["progress"], 100);
    assert!(done["outputs"][0]["url"].as_str().unwrap().contains("/v1/video/jobs/"), "{done}");
    // The vendor rendered 4 s: 0.04 charged, the rest of the hold given back, once.
    assert_eq!(done["charge"], "0.040000", "{done}");
    balance_becomes(&gw, 10_000_000 - 40_000);
    // Every poll ran on the key that created the job (the vendor knows it on that key only).
    let by_key = mock.stats()["by_key"].clone();
    let used = by_key.as_object().unwrap().values().filter(|n| n.as_u64() > Some(0)).count();
    assert_eq!(used, 1, "{by_key}");

    // A job the vendor fails costs nothing: its whole hold comes back.
    let r = submit(&gw, &gw.key, r#"{"model":"fixture-video","seconds":3,"prompt":"fail"}"#);
    let failed = finished(&gw, r.json()["id"].as_str().unwrap());
    assert_eq!((failed["status"].as_str(), failed["error"].as_str()), (Some("failed"), Some("content_filtered")));
    assert_eq!(failed["charge"], "0.000000");
    balance_becomes(&gw, 10_000_000 - 40_000);

    // Only the owner sees a task; a submit the vendor refuses is no task and costs nothing.
    let other = gw.create_key("other", "1");
    assert!(eventually(Duration::from_secs(5), || task(&gw, &other, "task_x").status == 404));
    let r = task(&gw, &other, &id);
    assert_eq!((r.status, r.error_code().as_str()), (404, "task_not_found"), "{}", r.text());
    let list = http::request(&gw.addr, "GET", "/v1/tasks", &[("authorization", &format!("Bearer {}", gw.key))], b"");
    assert_eq!(list.json()["data"].as_array().unwrap().len(), 2);
    let r = submit(&gw, &gw.key, r#"{"model":"fixture-video","seconds":0}"#);
    assert_eq!(r.status, 400, "{}", r.text());
    balance_becomes(&gw, 10_000_000 - 40_000);
    let (ok, report) = gw.verify_ledger();
    assert!(ok, "the ledger's invariants hold: {report}");

    // Operators see every task: the admin API, the CLI, the metrics.
    let admin = http::request(
        &gw.addr,
        "GET",
        "/admin/tasks?status=succeeded",
        &[("authorization", "Bearer admin-secret")],
        b"",
    );
    let tasks = admin.json()["tasks"].as_array().cloned().unwrap_or_default();
    assert_eq!(tasks.len(), 1, "{}", admin.text());
    assert_eq!((tasks[0]["id"].as_str(), tasks[0]["held"].as_str()), (Some(id.as_str()), Some("0.050000")));
    assert!(tasks[0]["polls"].as_i64() >= Some(2), "{}", admin.text());
    let cli = Gateway::cli(&gw.config, &["tasks", "list", "--status", "failed"]);
    assert_eq!(cli.lines().count(), 2, "a header and the failed task: {cli}");
    let row: Vec<&str> = cli.lines().nth(1).unwrap().split('\t').collect();
    assert_eq!((row[1], row[6], row[7]), ("failed", "0.030000", "0.000000"), "held 3 s, charged nothing: {cli}");
    let m = http::request(&gw.addr, "GET", "/metrics", &[], b"").text();
    for line in [
        "tollgate_tasks_submitted_total 2",
        "tollgate_tasks_ended_total{status=\"succeeded\"} 1",
        "tollgate_tasks_ended_total{status=\"failed\"} 1",
    ] {
        assert!(m.contains(line), "{line} in {m}");
    }
}

#[test]
fn a_task_submitted_before_a_crash_completes_after_it_and_is_billed_once() {
    let mock = Mock::start();
    let ch = channel("video", "faulty", &mock.url(), &["fixture-video"], &["k1", "k2"]);
    let extra = format!("{}{ch}", pricing_setting(PRICES));
    let plugins = [("faulty-v1", "faulty.wasm")];
    let mut a = Gateway::start("tasks-crash-a", &plugins, &extra);
    let key = a.create_key("video", "1");
    let info = |gw: &Gateway| {
        http::request(&gw.addr, "GET", "/v1/user/info", &[("authorization", &format!("Bearer {key}"))], b"").json()
    };
    assert!(eventually(Duration::from_secs(5), || info(&a)["balance"] == "1.000000"));
    let r = submit(&a, &key, r#"{"model":"fixture-video","seconds":5,"prompt":"a cat"}"#);
    assert_eq!(r.status, 200, "{}", r.text());
    let id = r.json()["id"].as_str().unwrap().to_string();
    // The node dies at once (SIGKILL: nothing flushed, no lease taken yet).
    a.proc.child.kill().unwrap();
    a.proc.child.wait().unwrap();

    // Another node on the same database takes the task over and settles it, once.
    let b = Gateway::start_sharing("tasks-crash-b", &plugins, &extra, &a);
    assert!(
        eventually(Duration::from_secs(5), || info(&b)["balance"] == "0.950000"),
        "the hold survived: {}",
        info(&b)
    );
    let done = finished_for(&b, &key, &id);
    assert_eq!((done["status"].as_str(), done["charge"].as_str()), (Some("succeeded"), Some("0.040000")), "{done}");
    assert!(eventually(Duration::from_secs(5), || info(&b)["balance"] == "0.960000"), "{}", info(&b));
    let (ok, report) = b.verify_ledger();
    assert!(ok, "{report}");
}

#[test]
fn a_task_the_vendor_never_finishes_expires_and_gives_its_hold_back() {
    let mock = Mock::start();
    let ch = channel("video", "faulty", &mock.url(), &["fixture-video"], &["k1"]);
    let gw = Gateway::start(
        "tasks-expiry",
        &[("faulty-v1", "faulty.wasm")],
        &format!("task_ttl_secs = 1\n{}{ch}", pricing_setting(PRICES)),
    );
    let r = submit(&gw, &gw.key, r#"{"model":"fixture-video","seconds":5,"prompt":"a cat"}"#);
    let id = r.json()["id"].as_str().unwrap().to_string();
    balance_becomes(&gw, 10_000_000 - 50_000);
    let done = finished(&gw, &id);
    assert_eq!((done["status"].as_str(), done["error"].as_str()), (Some("expired"), Some("expired")), "{done}");
    assert_eq!(done["charge"], "0.000000");
    balance_becomes(&gw, 10_000_000);
    let (ok, report) = gw.verify_ledger();
    assert!(ok, "{report}");
}

#[test]
fn a_vendors_poll_rate_is_capped_and_every_task_still_finishes() {
    let mock = Mock::start();
    let ch = channel("video", "faulty", &mock.url(), &["fixture-video"], &["k1"]);
    let gw = Gateway::start(
        "tasks-rate",
        &[("faulty-v1", "faulty.wasm")],
        &format!("task_polls_per_second = 2\n{}{ch}", pricing_setting(PRICES)),
    );
    let ids: Vec<String> = (0..4)
        .map(|_| {
            let r = submit(&gw, &gw.key, r#"{"model":"fixture-video","seconds":2,"prompt":"a cat"}"#);
            r.json()["id"].as_str().unwrap().to_string()
        })
        .collect();
    for id in &ids {
        assert_eq!(finished(&gw, id)["status"], "succeeded");
    }
    // Each job took exactly three queries: a task given back untouched is not polled twice.
    let queries = mock.stats()["requests"].as_u64().unwrap();
    assert_eq!(queries, 4 + 4 * 3, "4 submits and 3 queries each");
    balance_becomes(&gw, 10_000_000 - 4 * 10_000);
    // Four tasks due within two seconds, one poll of the vendor per round: some waited a round.
    let m = http::request(&gw.addr, "GET", "/metrics", &[], b"").text();
    let deferred = m.lines().find_map(|l| l.strip_prefix("tollgate_task_polls_deferred_total ")).unwrap_or("0");
    assert!(deferred.parse::<u64>().unwrap() > 0, "{m}");
}
