//! Asynchronous tasks end to end, with the `faulty` fixture's `POST /fixture/videos` (quoted by
//! its seconds) against the mock vendor's job API: the submit holds the quote on the ledger at
//! once, the gateway polls the job on the key that created it, success charges the seconds the
//! vendor rendered and gives the rest of the hold back, failure gives it all back, and only
//! the owner sees the task.

use std::time::Duration;
use tollgate_e2e::{channel, eventually, http, pricing_setting, scratch, Gateway, Mock, S3};

const PRICES: &str = "[models.\"fixture-video\"]\nper_second = \"0.01\"\n";
/// The mock's CDN is on loopback: the operator names it, or the archive never reaches it.
const LOCAL_CDN: &str = "fetch_allow_private_hosts = [\"127.0.0.1\"]\n";

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

#[test]
fn a_task_holds_its_quote_is_polled_on_its_key_and_is_charged_once_by_what_was_made() {
    let mock = Mock::start();
    let ch = channel("video", "faulty", &mock.url(), &["fixture-video"], &["k1", "k2", "k3"]);
    let gw = Gateway::start(
        "tasks-flow",
        &[("faulty-v1", "faulty.wasm")],
        &format!("{LOCAL_CDN}{}{ch}", pricing_setting(PRICES)),
    );

    let r = submit(&gw, &gw.key, r#"{"model":"fixture-video","seconds":5,"prompt":"a cat"}"#);
    assert_eq!(r.status, 200, "{}", r.text());
    let submitted = r.json();
    let id = submitted["id"].as_str().unwrap().to_string();
    assert!(id.starts_with("task_") && id.len() > 30, "an unguessable id: {id}");
    assert_eq!(submitted["status"], "queued");
    // The quote (5 s at 0.01) is held at once, on the ledger.
    gw.balance_becomes("e2e", 10_000_000 - 50_000);

    let done = finished(&gw, &id);
    assert_eq!(done["status"], "succeeded", "{done}");
    assert_eq!(done["progress"], 100);
    assert_eq!(done["outputs"][0]["url"], format!("/v1/tasks/{id}/content/0"), "{done}");
    // The vendor rendered 4 s: 0.04 charged, the rest of the hold given back, once.
    assert_eq!(done["charge"], "0.040000", "{done}");
    gw.balance_becomes("e2e", 10_000_000 - 40_000);
    // Every poll ran on the key that created the job (the vendor knows it on that key only).
    let by_key = mock.stats()["by_key"].clone();
    let used = by_key.as_object().unwrap().values().filter(|n| n.as_u64() > Some(0)).count();
    assert_eq!(used, 1, "{by_key}");

    // A job the vendor fails costs nothing: its whole hold comes back.
    let r = submit(&gw, &gw.key, r#"{"model":"fixture-video","seconds":3,"prompt":"fail"}"#);
    let failed = finished(&gw, r.json()["id"].as_str().unwrap());
    assert_eq!((failed["status"].as_str(), failed["error"].as_str()), (Some("failed"), Some("content_filtered")));
    assert_eq!(failed["charge"], "0.000000");
    gw.balance_becomes("e2e", 10_000_000 - 40_000);

    // Only the owner sees a task; a submit the vendor refuses is no task and costs nothing.
    let other = gw.create_key("other", "1");
    assert!(eventually(Duration::from_secs(5), || task(&gw, &other, "task_x").status == 404));
    let r = task(&gw, &other, &id);
    assert_eq!((r.status, r.error_code().as_str()), (404, "task_not_found"), "{}", r.text());
    let list = http::request(&gw.addr, "GET", "/v1/tasks", &[("authorization", &format!("Bearer {}", gw.key))], b"");
    assert_eq!(list.json()["data"].as_array().unwrap().len(), 2);
    let r = submit(&gw, &gw.key, r#"{"model":"fixture-video","seconds":0}"#);
    assert_eq!(r.status, 400, "{}", r.text());
    gw.balance_becomes("e2e", 10_000_000 - 40_000);
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
    // One task in full: its files (and where they came from) and its money on the ledger.
    let one =
        http::request(&gw.addr, "GET", &format!("/admin/tasks/{id}"), &[("authorization", "Bearer admin-secret")], b"");
    let one = one.json();
    assert!(one["files"][0]["source_url"].as_str().unwrap().contains("/cdn/"), "{one}");
    let ledger: Vec<&str> = one["ledger"].as_array().unwrap().iter().map(|e| e["amount"].as_str().unwrap()).collect();
    assert_eq!(ledger, ["-0.050000", "0.010000"], "held 5 s, gave 1 s back: {one}");
    assert_eq!((tasks[0]["id"].as_str(), tasks[0]["held"].as_str()), (Some(id.as_str()), Some("0.050000")));
    assert!(tasks[0]["polls"].as_i64() >= Some(2), "{}", admin.text());
    // What happened to it, in order, while the events are kept.
    let events: Vec<&str> = one["events"].as_array().unwrap().iter().map(|e| e["status"].as_str().unwrap()).collect();
    assert_eq!((events.first(), events.last()), (Some(&"queued"), Some(&"succeeded")), "{one}");
    // Filters: a query that does not read is refused with why; by status, user and model.
    let list = |query: &str| {
        http::request(
            &gw.addr,
            "GET",
            &format!("/admin/tasks?{query}"),
            &[("authorization", "Bearer admin-secret")],
            b"",
        )
    };
    for bad in ["status=done", "limit=0", "limit=many", "user_id=e2e"] {
        let r = list(bad);
        assert_eq!((r.status, r.error_code().as_str()), (400, "bad_task_query"), "{bad}: {}", r.text());
    }
    let ids = |query: &str| -> Vec<String> {
        let r = list(query);
        assert_eq!(r.status, 200, "{query}: {}", r.text());
        r.json()["tasks"].as_array().unwrap().iter().map(|t| t["id"].as_str().unwrap().to_string()).collect()
    };
    let owner = one["user_id"].as_i64().unwrap();
    assert_eq!(ids(&format!("model=fixture-video&user_id={owner}")).len(), 2);
    assert_eq!(ids(&format!("model=fixture-video&user_id={owner}&status=succeeded")), std::slice::from_ref(&id));
    assert!(ids("model=another-model").is_empty());
    assert!(ids(&format!("user_id={}", owner + 1000)).is_empty());
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
    let extra = format!("{LOCAL_CDN}{}{ch}", pricing_setting(PRICES));
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
        &format!("task_ttl_secs = 1\n{LOCAL_CDN}{}{ch}", pricing_setting(PRICES)),
    );
    let r = submit(&gw, &gw.key, r#"{"model":"fixture-video","seconds":5,"prompt":"a cat"}"#);
    let id = r.json()["id"].as_str().unwrap().to_string();
    gw.balance_becomes("e2e", 10_000_000 - 50_000);
    let done = finished(&gw, &id);
    assert_eq!((done["status"].as_str(), done["error"].as_str()), (Some("expired"), Some("expired")), "{done}");
    assert_eq!(done["charge"], "0.000000");
    gw.balance_becomes("e2e", 10_000_000);
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
        &format!("task_polls_per_second = 2\n{LOCAL_CDN}{}{ch}", pricing_setting(PRICES)),
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
    gw.balance_becomes("e2e", 10_000_000 - 4 * 10_000);
    // Four tasks due within two seconds, one poll of the vendor per round: some waited a round.
    let m = http::request(&gw.addr, "GET", "/metrics", &[], b"").text();
    let deferred = m.lines().find_map(|l| l.strip_prefix("tollgate_task_polls_deferred_total ")).unwrap_or("0");
    assert!(deferred.parse::<u64>().unwrap() > 0, "{m}");
}

fn get(gw: &Gateway, key: &str, path: &str, headers: &[(&str, &str)]) -> http::Response {
    let auth = format!("Bearer {key}");
    let mut all = vec![("authorization", auth.as_str())];
    all.extend_from_slice(headers);
    http::request(&gw.addr, "GET", path, &all, b"")
}

/// `DELETE /v1/tasks/{id}` as the holder of `key`.
fn delete_task(gw: &Gateway, key: &str, id: &str) -> http::Response {
    http::request(&gw.addr, "DELETE", &format!("/v1/tasks/{id}"), &[("authorization", &format!("Bearer {key}"))], b"")
}

fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect()
}

fn blobs_in(gw: &Gateway) -> usize {
    let dir = gw.dir.join("data/archive/sha256");
    std::fs::read_dir(dir).map_or(0, |d| d.flatten().map(|sub| std::fs::read_dir(sub.path()).unwrap().count()).sum())
}

#[test]
fn outputs_are_archived_and_served_to_their_owner_with_ranges_after_the_vendor_url_expired() {
    let mock = Mock::start();
    let ch = channel("video", "faulty", &mock.url(), &["fixture-video"], &["k1"]);
    let extra = format!("{LOCAL_CDN}archive_max_bytes = 1048576\n{}{ch}", pricing_setting(PRICES));
    let gw = Gateway::start("tasks-archive", &[("faulty-v1", "faulty.wasm")], &extra);

    let r = submit(&gw, &gw.key, r#"{"model":"fixture-video","seconds":5,"prompt":"a cat"}"#);
    let id = r.json()["id"].as_str().unwrap().to_string();
    let done = finished(&gw, &id);
    assert_eq!(done["status"], "succeeded", "{done}");
    let out = &done["outputs"][0];
    assert_eq!((out["content_type"].as_str(), out["size"].as_u64()), (Some("video/mp4"), Some(200_005)), "{done}");
    // The vendor's URL worked once; it has expired since (the mock's CDN says 403 now).
    assert_eq!(mock.stats()["cdn_downloads"], 1);

    let path = format!("/v1/tasks/{id}/content/0");
    let whole = get(&gw, &gw.key, &path, &[]);
    assert_eq!(whole.status, 200, "{}", whole.text());
    assert_eq!((whole.body.len(), &whole.body[4..8]), (200_005, &b"ftyp"[..]));
    assert_eq!(whole.header("content-type"), Some("video/mp4"));
    assert_eq!(whole.header("accept-ranges"), Some("bytes"));
    assert_eq!(
        (whole.header("x-content-type-options"), whole.header("content-security-policy")),
        (Some("nosniff"), Some("sandbox"))
    );
    assert_eq!(sha256_hex(&whole.body), out["sha256"].as_str().unwrap(), "stored by its hash");
    // Range requests: what players and resumed downloads send.
    let part = get(&gw, &gw.key, &path, &[("range", "bytes=100-199")]);
    assert_eq!((part.status, part.header("content-range")), (206, Some("bytes 100-199/200005")));
    assert_eq!(part.body, whole.body[100..200]);
    let tail = get(&gw, &gw.key, &path, &[("range", "bytes=-10")]);
    assert_eq!((tail.status, tail.body.as_slice()), (206, &whole.body[200_005 - 10..]));
    let past = get(&gw, &gw.key, &path, &[("range", "bytes=300000-")]);
    assert_eq!((past.status, past.header("content-range")), (416, Some("bytes */200005")));
    // Only the owner gets it; another output number or task is a 404 too.
    let other = gw.create_key("other", "1");
    assert!(eventually(Duration::from_secs(5), || get(&gw, &other, "/v1/tasks", &[]).status == 200));
    let theirs = get(&gw, &other, &path, &[]);
    assert_eq!((theirs.status, theirs.error_code().as_str()), (404, "output_not_found"));
    assert_eq!(get(&gw, &gw.key, &format!("/v1/tasks/{id}/content/1"), &[]).status, 404);
    // Served from the archive: the CDN was not asked again. Each download is in the log.
    assert_eq!(mock.stats()["cdn_downloads"], 1);
    assert_eq!(gw.log().matches("archived file served").count(), 3, "{}", gw.log());

    // A redirect to the file is followed (and checked again).
    let r = submit(&gw, &gw.key, r#"{"model":"fixture-video","seconds":2,"prompt":"redirect"}"#);
    let redirected = finished(&gw, r.json()["id"].as_str().unwrap());
    assert_eq!(
        (redirected["status"].as_str(), redirected["outputs"][0]["size"].as_u64()),
        (Some("succeeded"), Some(200_002))
    );

    // Too large (announced or not) or not media: the task fails cleanly, saying why, and is
    // charged what the vendor made (the operator pays the vendor: outputs the archive refuses
    // are no way to have jobs made for free).
    for (prompt, why) in [("huge", "archive_max_bytes"), ("huge-chunked", "archive_max_bytes"), ("html", "text/html")] {
        let r = submit(&gw, &gw.key, &format!(r#"{{"model":"fixture-video","seconds":3,"prompt":"{prompt}"}}"#));
        let failed = finished(&gw, r.json()["id"].as_str().unwrap());
        assert_eq!(
            (failed["status"].as_str(), failed["error"].as_str()),
            (Some("failed"), Some("archive_failed")),
            "{failed}"
        );
        let message = failed["message"].as_str().unwrap();
        assert!(message.contains(why) && message.contains("charged"), "{prompt}: {failed}");
        assert!(!message.contains("/cdn/"), "the vendor's URL is never shown: {message}");
        assert_eq!(failed["charge"], "0.020000");
    }
    // Charged: 4 s, 1 s and three times 2 s rendered, each once.
    gw.balance_becomes("e2e", 10_000_000 - 40_000 - 10_000 - 3 * 20_000);
    assert_eq!(std::fs::read_dir(gw.dir.join("data/archive/tmp")).unwrap().count(), 0, "no partial file is left");
    let m = http::request(&gw.addr, "GET", "/metrics", &[], b"").text();
    for line in ["tollgate_archive_files_total 2", "tollgate_archive_failures_total 3"] {
        assert!(m.contains(line), "{line} in {m}");
    }

    // Deleting a task deletes its file; a running task is not deleted.
    assert_eq!(blobs_in(&gw), 2);
    let delete = |key: &str, id: &str| delete_task(&gw, key, id);
    assert_eq!(delete(&other, &id).status, 404);
    let r = submit(&gw, &gw.key, r#"{"model":"fixture-video","seconds":2,"prompt":"a dog"}"#);
    let running = r.json()["id"].as_str().unwrap().to_string();
    assert_eq!(delete(&gw.key, &running).error_code(), "task_running");
    assert_eq!(delete(&gw.key, &id).status, 200);
    assert_eq!(get(&gw, &gw.key, &path, &[]).status, 404);
    assert_eq!(get(&gw, &gw.key, &format!("/v1/tasks/{id}"), &[]).status, 404);
    assert_eq!(blobs_in(&gw), 1);
    let (ok, report) = gw.verify_ledger();
    assert!(ok, "{report}");
}

#[test]
fn two_nodes_keep_the_archive_in_one_s3_bucket_and_a_file_goes_with_the_last_task_naming_it() {
    let Some(s3) = S3::start() else { return };
    let mock = Mock::start();
    let ch = channel("video", "faulty", &mock.url(), &["fixture-video"], &["k1"]);
    let extra = format!("{LOCAL_CDN}{}{}{ch}", s3.settings("tg/archive"), pricing_setting(PRICES));
    let plugins = [("faulty-v1", "faulty.wasm")];
    let a = Gateway::start_with_env("tasks-s3-a", &plugins, &extra, None, &s3.env());
    let b = Gateway::start_with_env("tasks-s3-b", &plugins, &extra, Some(&a), &s3.env());
    let key = a.key.clone();
    assert!(eventually(Duration::from_secs(5), || get(&b, &key, "/v1/tasks", &[]).status == 200));
    let object = |sha: &str| format!("tg/archive/sha256/{}/{sha}", &sha[..2]);

    // Whichever node polled and archived it, both serve it, from the bucket only.
    let first = submit(&a, &key, r#"{"model":"fixture-video","seconds":5,"prompt":"a cat"}"#).json()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let done = finished_for(&a, &key, &first);
    assert_eq!(done["status"], "succeeded", "{done}");
    let sha = done["outputs"][0]["sha256"].as_str().unwrap().to_string();
    assert_eq!(s3.keys("tg/"), vec![object(&sha)]);
    for gw in [&a, &b] {
        let path = format!("/v1/tasks/{first}/content/0");
        let whole = get(gw, &key, &path, &[]);
        assert_eq!((whole.status, sha256_hex(&whole.body)), (200, sha.clone()), "{}", whole.text());
        let part = get(gw, &key, &path, &[("range", "bytes=100-199")]);
        assert_eq!((part.status, part.body.as_slice()), (206, &whole.body[100..200]));
        assert!(!gw.dir.join("data/archive/sha256").exists(), "no local copy");
    }

    // A file of several upload parts.
    let huge = submit(&b, &key, r#"{"model":"fixture-video","seconds":2,"prompt":"huge"}"#).json()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let done = finished_for(&b, &key, &huge);
    assert_eq!(
        (done["status"].as_str(), done["outputs"][0]["size"].as_u64()),
        (Some("succeeded"), Some(9 << 20)),
        "{done}"
    );
    let huge_sha = done["outputs"][0]["sha256"].as_str().unwrap().to_string();
    let whole = get(&a, &key, &format!("/v1/tasks/{huge}/content/0"), &[]);
    assert_eq!((whole.body.len(), sha256_hex(&whole.body)), (9 << 20, huge_sha.clone()));

    // The same bytes again are one object; it goes when the last task naming it is deleted.
    let again = submit(&a, &key, r#"{"model":"fixture-video","seconds":5,"prompt":"a cat"}"#).json()["id"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(finished_for(&a, &key, &again)["outputs"][0]["sha256"], sha.as_str());
    let delete = |gw: &Gateway, id: &str| delete_task(gw, &key, id);
    assert_eq!(delete(&b, &first).status, 200);
    let mut objects = s3.keys("tg/");
    objects.sort();
    let mut both = vec![object(&sha), object(&huge_sha)];
    both.sort();
    assert_eq!(objects, both, "still named by the second task");
    assert_eq!(get(&b, &key, &format!("/v1/tasks/{again}/content/0"), &[]).status, 200);
    assert_eq!(delete(&a, &again).status, 200);
    assert_eq!(s3.keys("tg/"), vec![object(&huge_sha)]);
    assert_eq!(get(&b, &key, &format!("/v1/tasks/{again}/content/0"), &[]).status, 404);
    let (ok, report) = a.verify_ledger();
    assert!(ok, "{report}");
}

#[test]
fn the_archive_reaches_a_bucket_over_tls_only_trusting_the_ca_of_tls_ca_file() {
    let Some((s3, ca)) = S3::start_tls(&scratch("s3-tls")) else { return };
    let mock = Mock::start();
    let ch = channel("video", "faulty", &mock.url(), &["fixture-video"], &["k1"]);
    let plugins = [("faulty-v1", "faulty.wasm")];
    let settings = format!("{LOCAL_CDN}{}{}{ch}", s3.settings("tg/tls"), pricing_setting(PRICES));
    let video = r#"{"model":"fixture-video","seconds":5,"prompt":"a cat"}"#;

    // A gateway that does not trust the bucket's certificate stores nothing, says why, and
    // keeps the task to try again.
    let untrusting = Gateway::start_with_env("tasks-s3-tls-untrusted", &plugins, &settings, None, &s3.env());
    let id = submit(&untrusting, &untrusting.key, video).json()["id"].as_str().unwrap().to_string();
    assert!(
        eventually(Duration::from_secs(30), || untrusting.log().contains("UnknownIssuer")),
        "no certificate error in the log:\n{}",
        untrusting.log()
    );
    let status = task(&untrusting, &untrusting.key, &id).json()["status"].clone();
    assert!(matches!(status.as_str(), Some("queued" | "in_progress")), "{status}");
    assert!(s3.keys("tg/").is_empty());
    drop(untrusting);

    // With the CA, the same archive goes to the bucket and is served from it.
    let gw = Gateway::start_with_env(
        "tasks-s3-tls",
        &plugins,
        &format!("tls_ca_file = \"{}\"\n{settings}", ca.display()),
        None,
        &s3.env(),
    );
    let id = submit(&gw, &gw.key, video).json()["id"].as_str().unwrap().to_string();
    let done = finished(&gw, &id);
    assert_eq!(done["status"], "succeeded", "{done}");
    let sha = done["outputs"][0]["sha256"].as_str().unwrap().to_string();
    assert_eq!(s3.keys("tg/"), vec![format!("tg/tls/sha256/{}/{sha}", &sha[..2])]);
    let whole = get(&gw, &gw.key, &format!("/v1/tasks/{id}/content/0"), &[]);
    assert_eq!((whole.status, sha256_hex(&whole.body)), (200, sha), "{}", whole.text());
    assert!(!gw.dir.join("data/archive/sha256").exists(), "no local copy");
}

#[test]
fn a_private_cdn_the_operator_did_not_name_is_never_reached() {
    let mock = Mock::start();
    let ch = channel("video", "faulty", &mock.url(), &["fixture-video"], &["k1"]);
    let gw = Gateway::start(
        "tasks-no-private",
        &[("faulty-v1", "faulty.wasm")],
        &format!("{}{ch}", pricing_setting(PRICES)),
    );
    let r = submit(&gw, &gw.key, r#"{"model":"fixture-video","seconds":5,"prompt":"a cat"}"#);
    let failed = finished(&gw, r.json()["id"].as_str().unwrap());
    assert_eq!(
        (failed["status"].as_str(), failed["error"].as_str()),
        (Some("failed"), Some("archive_failed")),
        "{failed}"
    );
    assert!(failed["message"].as_str().unwrap().contains("fetch_allow_private_hosts"), "{failed}");
    assert_eq!(mock.stats()["cdn_downloads"], 0);
    // The vendor made it: charged (4 s rendered), once.
    gw.balance_becomes("e2e", 10_000_000 - 40_000);
}

#[test]
fn a_browser_follows_a_task_on_its_event_stream_and_plays_the_result_with_a_task_token() {
    let mock = Mock::start();
    let ch = channel("video", "faulty", &mock.url(), &["fixture-video"], &["k1"]);
    let gw = Gateway::start(
        "tasks-stream",
        &[("faulty-v1", "faulty.wasm")],
        &format!("{LOCAL_CDN}{}{ch}", pricing_setting(PRICES)),
    );
    let id = submit(&gw, &gw.key, r#"{"model":"fixture-video","seconds":5,"prompt":"a cat"}"#).json()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let stream_url = task(&gw, &gw.key, &id).json()["stream_url"].as_str().unwrap().to_string();
    assert!(stream_url.starts_with(&format!("/v1/tasks/{id}/stream?token=")), "{stream_url}");

    // What an EventSource sends: no Authorization header, the token in the query.
    let r = http::request(&gw.addr, "GET", &stream_url, &[("accept", "text/event-stream")], b"");
    assert_eq!((r.status, r.header("content-type")), (200, Some("text/event-stream")), "{}", r.text());
    let data = r.sse_data();
    assert_eq!(data.last().map(String::as_str), Some("[DONE]"), "{data:?}");
    let events: Vec<serde_json::Value> =
        data[..data.len() - 1].iter().map(|d| serde_json::from_str(d).unwrap()).collect();
    let progress: Vec<i64> =
        events.iter().filter(|e| e["status"] == "processing").map(|e| e["progress"].as_i64().unwrap()).collect();
    // The stream reads the task every second: which of the vendor's steps (30, 60) it saw
    // depends on timing, but it saw one, in order.
    let between = progress.iter().any(|p| [30, 60].contains(p));
    assert!(between && progress.windows(2).all(|w| w[0] <= w[1]), "progress as it happened: {events:?}");
    let done = events.last().unwrap();
    assert_eq!(done["status"], "completed", "{events:?}");
    // The result plays in a <video> (no header either): the URL carries a token.
    let url = done["url"].as_str().unwrap();
    let video = http::request(&gw.addr, "GET", url, &[("range", "bytes=0-99")], b"");
    assert_eq!((video.status, video.body.len()), (206, 100), "{url}");

    // A token reads its own task only, with a live key; nothing else gets in.
    let token = stream_url.split_once("token=").unwrap().1;
    let other_id = submit(&gw, &gw.key, r#"{"model":"fixture-video","seconds":2,"prompt":"fail"}"#).json()["id"]
        .as_str()
        .unwrap()
        .to_string();
    for path in [
        format!("/v1/tasks/{other_id}/stream?token={token}"),
        format!("/v1/tasks/{id}/stream?token={token}x"),
        format!("/v1/tasks/{id}/stream"),
        format!("/v1/tasks/{id}?token={token}"),
        format!("/v1/tasks/{id}/content/0?token=not-a-token"),
    ] {
        assert_eq!(http::request(&gw.addr, "GET", &path, &[], b"").status, 401, "{path}");
    }
    let other = gw.create_key("other", "1");
    assert!(eventually(Duration::from_secs(5), || get(&gw, &other, "/v1/tasks", &[]).status == 200));
    assert_eq!(get(&gw, &other, &format!("/v1/tasks/{id}/stream"), &[]).status, 404);

    // A failed job's stream ends with its error; a finished task's stream answers at once.
    let failed = get(&gw, &gw.key, &format!("/v1/tasks/{other_id}/stream"), &[]).sse_data();
    let last: serde_json::Value = serde_json::from_str(&failed[failed.len() - 2]).unwrap();
    assert_eq!(
        (last["status"].as_str(), failed.last().map(String::as_str)),
        (Some("failed"), Some("[DONE]")),
        "{failed:?}"
    );
    assert!(last["error"].as_str().unwrap().contains("rejected"), "{last}");
    let again = get(&gw, &gw.key, &format!("/v1/tasks/{id}/stream"), &[]).sse_data();
    assert_eq!(again.len(), 2, "{again:?}");
    // Tokens are never logged.
    assert!(!gw.log().contains(token), "a task token in the log");

    // A key holds at most 16 streams at once (each reads the database every second).
    let running = submit(&gw, &gw.key, r#"{"model":"fixture-video","seconds":5,"prompt":"slow"}"#).json()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let path = format!("/v1/tasks/{running}/stream");
    let held: Vec<std::net::TcpStream> = (0..16)
        .map(|_| {
            use std::io::{Read, Write};
            let mut s = std::net::TcpStream::connect(&gw.addr).unwrap();
            write!(s, "GET {path} HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {}\r\n\r\n", gw.key).unwrap();
            let mut first = [0u8; 12];
            s.read_exact(&mut first).unwrap();
            assert_eq!(&first, b"HTTP/1.1 200");
            s
        })
        .collect();
    let refused = get(&gw, &gw.key, &path, &[]);
    assert_eq!((refused.status, refused.error_code().as_str()), (429, "too_many_streams"));
    drop(held);
    assert!(eventually(Duration::from_secs(5), || get(&gw, &gw.key, &path, &[]).status == 200));
}

#[test]
fn the_mindvideo_proxys_clients_get_videos_through_the_image_and_chat_routes() {
    let mock = Mock::start();
    // A channel narrowed to video: its chat and image requests become video tasks.
    let ch = format!("{}ops = [\"video\"]\n", channel("mindvideo", "faulty", &mock.url(), &["sora-2-free"], &["k1"]));
    let prices = "[models.\"sora-2-free\"]\nper_second = \"0.01\"\n";
    let gw = Gateway::start(
        "tasks-mindvideo",
        &[("faulty-v1", "faulty.wasm")],
        &format!("{LOCAL_CDN}{}{ch}", pricing_setting(prices)),
    );
    let auth = format!("Bearer {}", gw.key);
    let post =
        |path: &str, body: &str| http::request(&gw.addr, "POST", path, &[("authorization", &auth)], body.as_bytes());

    // Images: the task id at once, followed on the task's stream.
    let r = post("/v1/images/generations", r#"{"model":"sora-2-free","prompt":"a cat","size":"720x1280","seconds":4}"#);
    assert_eq!(r.status, 200, "{}", r.text());
    let v = r.json();
    assert_eq!(v.as_object().unwrap().len(), 1, "only the task id: {v}");
    let id = v["task_id"].as_str().unwrap();
    let events = get(&gw, &gw.key, &format!("/v1/tasks/{id}/stream"), &[]).sse_data();
    assert!(events[events.len() - 2].contains("\"completed\""), "{events:?}");

    // Chat: blocks until the video is done; the answer's content is its URL.
    let r = post(
        "/v1/chat/completions",
        r#"{"model":"sora-2-free","seconds":4,"messages":[{"role":"user","content":"a dog"}]}"#,
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let c = r.json();
    assert_eq!(
        (c["object"].as_str(), c["choices"][0]["finish_reason"].as_str()),
        (Some("chat.completion"), Some("stop"))
    );
    let url = c["choices"][0]["message"]["content"].as_str().unwrap().to_string();
    let origin = format!("http://{}", gw.addr);
    assert!(url.starts_with(&format!("{origin}/v1/tasks/task_")) && url.contains("?token="), "{url}");
    let video = http::request(&gw.addr, "GET", &url[origin.len()..], &[], b"");
    assert_eq!((video.status, video.body.len()), (200, 200_004), "plays without a header");

    // Streamed: progress as content, then the URL, then [DONE].
    let r = post(
        "/v1/chat/completions",
        r#"{"model":"sora-2-free","seconds":4,"stream":true,"messages":[{"role":"user","content":"a bird"}]}"#,
    );
    assert_eq!((r.status, r.header("content-type")), (200, Some("text/event-stream")));
    let data = r.sse_data();
    assert_eq!(data.last().map(String::as_str), Some("[DONE]"));
    let chunks: Vec<serde_json::Value> =
        data[..data.len() - 1].iter().map(|d| serde_json::from_str(d).unwrap()).collect();
    let text: String = chunks.iter().filter_map(|c| c["choices"][0]["delta"]["content"].as_str()).collect();
    assert!(text.contains("Rendering: 30%") && text.contains("/content/0?token="), "{text}");
    assert_eq!(chunks.last().unwrap()["choices"][0]["finish_reason"], "stop");

    // A job the vendor fails is an error in OpenAI's shape; a request without text is refused.
    let r = post(
        "/v1/chat/completions",
        r#"{"model":"sora-2-free","seconds":4,"messages":[{"role":"user","content":"fail"}]}"#,
    );
    assert_eq!((r.status, r.error_code().as_str()), (502, "content_filtered"), "{}", r.text());
    let r = post("/v1/chat/completions", r#"{"model":"sora-2-free","messages":[{"role":"system","content":"x"}]}"#);
    assert_eq!((r.status, r.error_code().as_str()), (400, "missing_prompt"));
    // What the quote reads is given once: the vendor never reads another value.
    let r = post("/v1/images/generations", r#"{"model":"sora-2-free","prompt":"a cat","seconds":1,"seconds":20}"#);
    assert_eq!((r.status, r.error_code().as_str()), (400, "duplicate_field"), "{}", r.text());

    // Ordinary video tasks: in the Videos API's list, each charged once (3 s rendered).
    let videos = get(&gw, &gw.key, "/v1/videos", &[]).json();
    assert_eq!(videos["data"].as_array().unwrap().len(), 4, "{videos}");
    gw.balance_becomes("e2e", 10_000_000 - 3 * 30_000);
    let (ok, report) = gw.verify_ledger();
    assert!(ok, "{report}");
}

#[test]
fn a_signed_callback_tells_the_caller_when_its_task_ends_and_is_retried_until_delivered() {
    let mock = Mock::start();
    let ch = channel("video", "faulty", &mock.url(), &["fixture-video"], &["k1"]);
    let extra = format!("{LOCAL_CDN}webhook_allow_hosts = [\"127.0.0.1\"]\n{}{ch}", pricing_setting(PRICES));
    let gw = Gateway::start("tasks-callbacks", &[("faulty-v1", "faulty.wasm")], &extra);
    let auth = format!("Bearer {}", gw.key);
    let with_callback = |url: &str, body: &str| {
        let headers = [("authorization", auth.as_str()), ("tollgate-callback-url", url)];
        http::request(&gw.addr, "POST", "/fixture/videos", &headers, body.as_bytes())
    };

    // A host the operator does not list is refused before anything is called or held.
    let r = with_callback("https://hooks.example.com/x", r#"{"model":"fixture-video","seconds":5,"prompt":"a cat"}"#);
    assert_eq!((r.status, r.error_code().as_str()), (400, "callback_not_allowed"), "{}", r.text());
    assert!(r.text().contains("webhook_allow_hosts"));
    assert_eq!(mock.stats()["requests"], 0);

    // The endpoint fails once: the callback is tried again, then delivered, once.
    let hook = format!("{}/_mock/hooks?fail=1", mock.url());
    let r = with_callback(&hook, r#"{"model":"fixture-video","seconds":5,"prompt":"a cat"}"#);
    assert_eq!(r.status, 200, "{}", r.text());
    let id = r.json()["id"].as_str().unwrap().to_string();
    assert_eq!(finished(&gw, &id)["status"], "succeeded");
    let hooks = || http::request(&mock.addr, "GET", "/_mock/hooks", &[], b"").json();
    assert!(eventually(Duration::from_secs(15), || hooks().as_array().unwrap().len() == 2), "{}", hooks());
    std::thread::sleep(Duration::from_secs(3));
    let all = hooks();
    let all = all.as_array().unwrap();
    assert_eq!(all.len(), 2, "delivered once: {all:?}");
    assert_eq!((all[0]["status"].as_u64(), all[1]["status"].as_u64()), (Some(500), Some(200)));
    let last = &all[1];
    assert_eq!(last["event"], "task.succeeded");
    let body: serde_json::Value = serde_json::from_str(last["body"].as_str().unwrap()).unwrap();
    assert_eq!((body["type"].as_str(), body["data"]["id"].as_str()), (Some("task.succeeded"), Some(id.as_str())));

    // The signature is the owner's: HMAC-SHA256 of "<t>.<body>" with the secret in /v1/user/info.
    let secret = get(&gw, &gw.key, "/v1/user/info", &[]).json()["webhook_secret"].as_str().unwrap().to_string();
    let signature = last["signature"].as_str().unwrap();
    let (t, v1) = signature.strip_prefix("t=").unwrap().split_once(",v1=").unwrap();
    use hmac::Mac;
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(format!("{t}.{}", last["body"].as_str().unwrap()).as_bytes());
    assert_eq!(hex::encode(mac.finalize().into_bytes()), v1, "{signature}");
    let other = gw.create_key("other", "1");
    assert!(eventually(Duration::from_secs(5), || get(&gw, &other, "/v1/user/info", &[]).status == 200));
    assert_ne!(get(&gw, &other, "/v1/user/info", &[]).json()["webhook_secret"].as_str(), Some(secret.as_str()));
}

#[test]
fn a_running_task_is_cancelled_at_its_vendor_and_its_hold_comes_back() {
    let mock = Mock::start();
    let ch = channel("video", "faulty", &mock.url(), &["fixture-video"], &["k1", "k2"]);
    let gw = Gateway::start(
        "tasks-cancel",
        &[("faulty-v1", "faulty.wasm")],
        &format!("{LOCAL_CDN}{}{ch}", pricing_setting(PRICES)),
    );
    let cancel = |key: &str, id: &str| {
        http::request(
            &gw.addr,
            "POST",
            &format!("/v1/tasks/{id}/cancel"),
            &[("authorization", &format!("Bearer {key}"))],
            b"",
        )
    };
    let id = submit(&gw, &gw.key, r#"{"model":"fixture-video","seconds":5,"prompt":"a cat"}"#).json()["id"]
        .as_str()
        .unwrap()
        .to_string();
    gw.balance_becomes("e2e", 10_000_000 - 50_000);
    // Only the owner cancels.
    let other = gw.create_key("other", "1");
    assert!(eventually(Duration::from_secs(5), || get(&gw, &other, "/v1/tasks", &[]).status == 200));
    assert_eq!(cancel(&other, &id).status, 404);
    let r = cancel(&gw.key, &id);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!((r.json()["status"].as_str(), r.json()["charge"].as_str()), (Some("cancelled"), Some("0.000000")));
    gw.balance_becomes("e2e", 10_000_000);
    // The vendor was told, on the key that made the job.
    let last = mock.last_body(&format!("/v1/video/jobs/{}", "job-1"));
    assert_eq!(last["method"], "DELETE", "{last}");
    // Nothing more happens to it: not polled, not cancelled twice.
    let r = cancel(&gw.key, &id);
    assert_eq!((r.status, r.error_code().as_str()), (409, "task_finished"));
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(task(&gw, &gw.key, &id).json()["status"], "cancelled");

    // A job the vendor has finished cannot be cancelled: the task runs to its end, charged.
    let id = submit(&gw, &gw.key, r#"{"model":"fixture-video","seconds":2,"prompt":"a dog"}"#).json()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let done = finished(&gw, &id);
    assert_eq!(done["status"], "succeeded");
    assert_eq!(cancel(&gw.key, &id).error_code(), "task_finished");
    // Operators cancel any user's task, from the command line (which asks the gateway).
    let id = submit(&gw, &gw.key, r#"{"model":"fixture-video","seconds":3,"prompt":"a bird"}"#).json()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let out = Gateway::cli(&gw.config, &["tasks", "cancel", &id, "--gateway", &format!("http://{}", gw.addr)]);
    let r: serde_json::Value = serde_json::from_str(&out).expect("the task, as JSON");
    // The admin token never goes over plain http to another host.
    let out = tollgate_e2e::tollgate_command()
        .args(["--config", gw.config.to_str().unwrap(), "tasks", "cancel", &id, "--gateway", "http://192.0.2.1:9"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && stderr.contains("loopback"), "{stderr}");
    assert_eq!(
        (r["status"].as_str(), r["message"].as_str()),
        (Some("cancelled"), Some("cancelled by the operator")),
        "{r}"
    );
    gw.balance_becomes("e2e", 10_000_000 - 10_000);
    let (ok, report) = gw.verify_ledger();
    assert!(ok, "{report}");
}

#[test]
fn a_video_priced_by_its_tier_holds_the_tier_and_an_unpriced_tier_is_refused() {
    let mock = Mock::start();
    let ch = channel("video", "faulty", &mock.url(), &["fixture-tier"], &["k1"]);
    let prices = "[models.\"fixture-tier\".units]\n\"720p-5s\" = \"0.5\"\n\"720p-10s\" = \"0.9\"\n";
    let gw = Gateway::start(
        "tasks-tiers",
        &[("faulty-v1", "faulty.wasm")],
        &format!("{LOCAL_CDN}{}{ch}", pricing_setting(prices)),
    );
    // The quote names the tier (720p, 5 s): its price is held at once.
    let r = submit(&gw, &gw.key, r#"{"model":"fixture-tier","seconds":5,"size":"1280x720","prompt":"a cat"}"#);
    assert_eq!(r.status, 200, "{}", r.text());
    gw.balance_becomes("e2e", 10_000_000 - 500_000);
    // The vendor reports no tier at the end: the quoted one is charged, estimated; once.
    let done = finished(&gw, r.json()["id"].as_str().unwrap());
    assert_eq!((done["status"].as_str(), done["charge"].as_str()), (Some("succeeded"), Some("0.500000")), "{done}");
    gw.balance_becomes("e2e", 10_000_000 - 500_000);
    // A tier the table does not price, or none at all, is refused before the vendor is called.
    let before = mock.stats()["requests"].as_u64().unwrap();
    let r = submit(&gw, &gw.key, r#"{"model":"fixture-tier","seconds":5,"size":"3840x2160","prompt":"a cat"}"#);
    assert_eq!((r.status, r.error_code().as_str()), (403, "unit_not_priced"), "{}", r.text());
    assert!(r.text().contains("2160p-5s"));
    let r = submit(&gw, &gw.key, r#"{"model":"fixture-tier","seconds":5,"prompt":"a cat"}"#);
    assert_eq!((r.status, r.error_code().as_str()), (403, "unit_not_quoted"), "{}", r.text());
    // What the quote reads is given once: the vendor might read the other copy.
    let r = submit(&gw, &gw.key, r#"{"model":"fixture-tier","seconds":5,"size":"1280x720","size":"1920x1080"}"#);
    assert_eq!((r.status, r.error_code().as_str()), (400, "duplicate_field"), "{}", r.text());
    assert_eq!(mock.stats()["requests"].as_u64().unwrap(), before);
    gw.balance_becomes("e2e", 10_000_000 - 500_000);
    let (ok, report) = gw.verify_ledger();
    assert!(ok, "{report}");
}

#[test]
fn an_operator_retries_a_download_the_archive_refused_and_the_task_succeeds_charged_once() {
    let mock = Mock::start();
    let ch = channel("video", "faulty", &mock.url(), &["fixture-video"], &["k1"]);
    let plugins = [("faulty-v1", "faulty.wasm")];
    // The operator's limit is too small for the 9 MiB video: the task fails, charged.
    let small = format!("{LOCAL_CDN}archive_max_bytes = 1048576\n{}{ch}", pricing_setting(PRICES));
    let mut a = Gateway::start("tasks-retry-a", &plugins, &small);
    let id = submit(&a, &a.key, r#"{"model":"fixture-video","seconds":3,"prompt":"huge"}"#).json()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let failed = finished(&a, &id);
    assert_eq!((failed["error"].as_str(), failed["charge"].as_str()), (Some("archive_failed"), Some("0.020000")));
    a.balance_becomes("e2e", 10_000_000 - 20_000);
    let admin = |gw: &Gateway, method: &str, path: &str| {
        http::request(&gw.addr, method, path, &[("authorization", "Bearer admin-secret")], b"")
    };
    let retry = format!("/admin/tasks/{id}/retry");
    // Retried under the same limit: refused again, and the task stays as it was.
    let r = admin(&a, "POST", &retry);
    assert_eq!((r.status, r.error_code().as_str()), (502, "retry_failed"), "{}", r.text());
    assert!(r.text().contains("archive_max_bytes"), "{}", r.text());
    // The command line says so too, and fails.
    let gateway = format!("http://{}", a.addr);
    let out = tollgate_e2e::tollgate_command()
        .args(["--config", a.config.to_str().unwrap(), "tasks", "retry", &id, "--gateway", &gateway])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && stderr.contains("502") && stderr.contains("archive_max_bytes"), "{stderr}");
    assert_eq!(finished(&a, &id)["status"], "failed");
    assert_eq!(admin(&a, "POST", "/admin/tasks/task_nope/retry").status, 404);

    // The operator raises the limit (a restart on the same database) and retries: the vendor
    // is polled again on the job's key, its fresh URL downloaded, and the task succeeds with
    // its money untouched: charged once, when it failed.
    a.terminate();
    a.wait_exit(Duration::from_secs(10));
    let b =
        Gateway::start_sharing("tasks-retry-b", &plugins, &format!("{LOCAL_CDN}{}{ch}", pricing_setting(PRICES)), &a);
    // (The second node's start created a key of its own, topping the account up.)
    let before = b.balance_micros("e2e");
    let out = Gateway::cli(&b.config, &["tasks", "retry", &id, "--gateway", &format!("http://{}", b.addr)]);
    assert!(out.contains(&id), "the retried task: {out}");
    let done = finished_for(&b, &a.key, &id);
    assert_eq!((done["status"].as_str(), done["charge"].as_str()), (Some("succeeded"), Some("0.020000")), "{done}");
    let content = get(&b, &a.key, &format!("/v1/tasks/{id}/content/0"), &[]);
    assert_eq!((content.status, content.body.len()), (200, 9 << 20));
    assert_eq!(sha256_hex(&content.body), done["outputs"][0]["sha256"].as_str().unwrap());
    assert_eq!(b.balance_micros("e2e"), before, "the retry moves no money");
    // Once succeeded, a retry is refused; so is one of a task that did not fail its archive.
    assert_eq!(admin(&b, "POST", &retry).error_code(), "task_not_archive_failed");
    let (ok, report) = b.verify_ledger();
    assert!(ok, "{report}");
}

#[test]
fn a_user_with_the_most_unfinished_tasks_is_refused_another_before_the_vendor() {
    let mock = Mock::start();
    let ch = channel("video", "faulty", &mock.url(), &["fixture-video"], &["k1"]);
    let extra = format!("{LOCAL_CDN}task_max_open_per_user = 1\n{}{ch}", pricing_setting(PRICES));
    let gw = Gateway::start("tasks-cap", &[("faulty-v1", "faulty.wasm")], &extra);
    let first = submit(&gw, &gw.key, r#"{"model":"fixture-video","seconds":2,"prompt":"a cat"}"#);
    assert_eq!(first.status, 200, "{}", first.text());
    gw.balance_becomes("e2e", 10_000_000 - 20_000);
    // The second is refused while the first runs: nothing sent, nothing held.
    let before = mock.stats()["requests"].as_u64().unwrap();
    let r = submit(&gw, &gw.key, r#"{"model":"fixture-video","seconds":3,"prompt":"a dog"}"#);
    assert_eq!((r.status, r.error_code().as_str()), (429, "too_many_open_tasks"), "{}", r.text());
    assert_eq!(mock.stats()["requests"].as_u64().unwrap(), before);
    gw.balance_becomes("e2e", 10_000_000 - 20_000);
    // Once it ended, the next is taken.
    assert_eq!(finished(&gw, first.json()["id"].as_str().unwrap())["status"], "succeeded");
    let r = submit(&gw, &gw.key, r#"{"model":"fixture-video","seconds":3,"prompt":"a dog"}"#);
    assert_eq!(r.status, 200, "{}", r.text());
}
