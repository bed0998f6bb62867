//! MiniMax's asynchronous speech and video and its files through the real binary, on
//! MiniMax's own routes (`compat-protocols.md` §1.2): a submit answers MiniMax's own body and
//! becomes a gateway task (held, polled on its key, archived, charged once); the follow-up
//! routes (queries, file reads, downloads, deletes) reach the key that made the object, for
//! its owner only; an upload's file can be named by a later submit; a file list shows a
//! consumer its own files, from every key. The channel has two keys, and the mock keeps each
//! object in the account that made it: a follow-up on the other key would be refused.

use std::time::Duration;
use tollgate_e2e::{channel, eventually, http, pricing_setting, Gateway, Mock};

/// 0.01 per character; tiers of Hailuo.
const PRICES: &str = "[models.\"speech-2.8-hd\"]\ncharacters_per_10k = \"100\"\n\
    [models.\"MiniMax-Hailuo-02\".units]\n\"768p-6s\" = \"2.0\"\n\"512p-10s\" = \"1.0\"\n";

fn gateway(mock: &Mock) -> Gateway {
    let ch = channel("mm", "minimax", &mock.url(), &["speech-2.8-hd", "MiniMax-Hailuo-02"], &["mm-key", "mm-key-2"]);
    // The mock's CDN is on loopback (the channel's own host): the operator names it.
    let extra = format!("fetch_allow_private_hosts = [\"127.0.0.1\"]\n{}{ch}", pricing_setting(PRICES));
    Gateway::start("minimax-jobs", &[("minimax", "minimax.wasm")], &extra)
}

fn call(gw: &Gateway, key: &str, method: &str, path: &str, body: &[u8], content_type: &str) -> http::Response {
    let auth = format!("Bearer {key}");
    http::request(&gw.addr, method, path, &[("authorization", &auth), ("content-type", content_type)], body)
}

fn post(gw: &Gateway, key: &str, path: &str, json: &str) -> http::Response {
    call(gw, key, "POST", path, json.as_bytes(), "application/json")
}

fn get(gw: &Gateway, key: &str, path: &str) -> http::Response {
    call(gw, key, "GET", path, b"", "application/json")
}

/// The gateway's task, once it ended.
fn finished(gw: &Gateway, key: &str, id: &str) -> serde_json::Value {
    let mut last = serde_json::Value::Null;
    let ended = eventually(Duration::from_secs(60), || {
        last = get(gw, key, &format!("/v1/tasks/{id}")).json();
        matches!(last["status"].as_str(), Some("succeeded" | "failed" | "expired"))
    });
    assert!(ended, "the task never ended: {last}");
    last
}

/// The submit's MiniMax body and the gateway's task id beside it.
fn submit(gw: &Gateway, key: &str, path: &str, json: &str) -> (serde_json::Value, String) {
    let r = post(gw, key, path, json);
    assert_eq!(r.status, 200, "{}", r.text());
    let task = r.header("x-tollgate-task-id").expect("the gateway's task id").to_string();
    (r.json(), task)
}

#[test]
fn long_speech_is_minimaxs_own_task_charged_its_characters_once_and_archived() {
    let mock = Mock::start();
    let gw = gateway(&mock);
    let (body, task) = submit(
        &gw,
        &gw.key,
        "/v1/t2a_async_v2",
        r#"{"model":"speech-2.8-hd","text":"hello 你好\uF900","voice_setting":{"voice_id":"male-qn-qingse"}}"#,
    );
    // MiniMax's own answer: a numeric task id, the file it will write, what it bills.
    assert_eq!(
        (body["usage_characters"].as_u64(), body["base_resp"]["status_code"].as_i64()),
        (Some(11), Some(0)),
        "{body}"
    );
    // Held as the gateway counts (U+F900, a compatibility ideograph, as 2: 12 characters)...
    gw.balance_becomes("e2e", 10_000_000 - 120_000);
    let vendor_task = body["task_id"].as_u64().expect("a numeric task id").to_string();

    // The consumer's query reaches the key that made the task, and MiniMax answers it.
    let query = format!("/v1/query/t2a_async_query_v2?task_id={vendor_task}");
    let r = get(&gw, &gw.key, &query);
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(r.json()["status"].as_str().is_some(), "{}", r.text());

    let done = finished(&gw, &gw.key, &task);
    assert_eq!(done["status"], "succeeded", "{done}");
    let content = get(&gw, &gw.key, &format!("/v1/tasks/{task}/content/0"));
    assert_eq!((content.status, content.header("content-type")), (200, Some("application/x-tar")));
    assert!(content.body.starts_with(b"output.mp3"), "the archived tar");
    // ...and charged, once, the 11 MiniMax counted (a CJK character 2, U+F900 1), at 0.01.
    gw.balance_becomes("e2e", 10_000_000 - 110_000);

    // The file the task made: its metadata and its bytes, from MiniMax, on the same key.
    let r = get(&gw, &gw.key, &query).json();
    let file_id = r["file_id"].as_u64().expect("a finished task's file").to_string();
    let r = get(&gw, &gw.key, &format!("/v1/files/retrieve?file_id={file_id}"));
    assert_eq!((r.status, r.json()["file"]["filename"].as_str()), (200, Some("output.tar")), "{}", r.text());
    let r = get(&gw, &gw.key, &format!("/v1/files/retrieve_content?file_id={file_id}"));
    assert_eq!((r.status, r.header("content-type")), (200, Some("application/x-tar")));

    // Another consumer reaches none of it, and MiniMax is not even asked.
    let other = gw.new_key("other", "10");
    let before = mock.stats()["requests"].as_u64().unwrap();
    for path in [
        query.clone(),
        format!("/v1/files/retrieve?file_id={file_id}"),
        format!("/v1/files/retrieve_content?file_id={file_id}"),
        format!("/v1/video/download?file_id={file_id}"),
    ] {
        let r = get(&gw, &other, &path);
        assert_eq!((r.status, r.error_code().as_str()), (404, "not_found"), "{path}: {}", r.text());
    }
    let r = post(&gw, &other, "/v1/files/delete", &format!(r#"{{"file_id":{file_id}}}"#));
    assert_eq!(r.status, 404, "{}", r.text());
    assert_eq!(get(&gw, &other, &format!("/v1/tasks/{task}")).status, 404);
    // An id nobody made through the gateway is not found either.
    assert_eq!(get(&gw, &gw.key, "/v1/query/t2a_async_query_v2?task_id=1").status, 404);
    assert_eq!(mock.stats()["requests"].as_u64().unwrap(), before);
    let (ok, report) = gw.verify_ledger();
    assert!(ok, "{report}");
}

#[test]
fn a_minimax_video_is_charged_its_tier_once_and_a_failed_one_nothing() {
    let mock = Mock::start();
    let gw = gateway(&mock);
    let video = r#"{"model":"MiniMax-Hailuo-02","prompt":"a cat"}"#;
    let (body, task) = submit(&gw, &gw.key, "/v1/video_generation", video);
    let vendor_task = body["task_id"].as_str().expect("a string task id").to_string();
    // The tier's price (768P, 6 s: MiniMax's defaults) is held at once.
    gw.balance_becomes("e2e", 10_000_000 - 2_000_000);
    // A job MiniMax will fail is held its tier meanwhile.
    let fails = r#"{"model":"MiniMax-Hailuo-02","prompt":"fail","duration":10,"resolution":"512P"}"#;
    let (_, failed) = submit(&gw, &gw.key, "/v1/video_generation", fails);
    gw.balance_becomes("e2e", 10_000_000 - 3_000_000);

    let done = finished(&gw, &gw.key, &task);
    assert_eq!(done["status"], "succeeded", "{done}");
    let content = get(&gw, &gw.key, &format!("/v1/tasks/{task}/content/0"));
    assert_eq!((content.status, &content.body[4..8]), (200, &b"ftyp"[..]));
    // A job MiniMax fails costs nothing; the other is charged its tier once.
    let failed = finished(&gw, &gw.key, &failed);
    assert_eq!(failed["status"], "failed", "{failed}");
    gw.balance_becomes("e2e", 10_000_000 - 2_000_000);

    // The proxy's download route gives the video's bytes, relayed from MiniMax.
    let r = get(&gw, &gw.key, &format!("/v1/query/video_generation?task_id={vendor_task}")).json();
    assert_eq!(r["status"], "Success", "{r}");
    let file_id = r["file_id"].as_str().expect("the video's file, a string").to_string();
    let r = get(&gw, &gw.key, &format!("/v1/video/download?file_id={file_id}"));
    assert_eq!((r.status, r.header("content-type"), &r.body[4..8]), (200, Some("video/mp4"), &b"ftyp"[..]));

    // What MiniMax cannot render, or the table does not price, is refused before MiniMax.
    let before = mock.stats()["requests"].as_u64().unwrap();
    let r =
        post(&gw, &gw.key, "/v1/video_generation", r#"{"model":"MiniMax-Hailuo-02","prompt":"a cat","duration":8}"#);
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(r.text().contains("6 or 10 seconds"), "{}", r.text());
    let r = post(
        &gw,
        &gw.key,
        "/v1/video_generation",
        r#"{"model":"MiniMax-Hailuo-02","prompt":"a cat","resolution":"1080P"}"#,
    );
    assert_eq!((r.status, r.error_code().as_str()), (403, "unit_not_priced"), "{}", r.text());
    assert_eq!(mock.stats()["requests"].as_u64().unwrap(), before);
    let (ok, report) = gw.verify_ledger();
    assert!(ok, "{report}");
}

#[test]
fn an_uploaded_text_file_is_its_owners_to_synthesize_and_delete() {
    let mock = Mock::start();
    let gw = gateway(&mock);
    let rich = gw.new_key("rich", "5000");
    let boundary = "e2e-mm-7d1f";
    let form = format!(
        "--{boundary}\r\nContent-Disposition: form-data; name=\"purpose\"\r\n\r\nt2a_async_input\r\n--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"book.txt\"\r\nContent-Type: text/plain\r\n\r\nonce upon\r\n--{boundary}--\r\n"
    );
    let r = call(
        &gw,
        &rich,
        "POST",
        "/v1/files/upload",
        form.as_bytes(),
        &format!("multipart/form-data; boundary={boundary}"),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let file_id = r.json()["file"]["file_id"].as_u64().expect("the uploaded file's id");
    // Uploads are free.
    gw.balance_becomes("rich", 5_000_000_000);

    // Another consumer cannot name the file; its owner can, and is charged what MiniMax counted.
    let other = gw.new_key("other", "5000");
    let submit_file = format!(r#"{{"model":"speech-2.8-hd","text_file_id":{file_id}}}"#);
    let r = post(&gw, &other, "/v1/t2a_async_v2", &submit_file);
    assert_eq!(r.status, 404, "{}", r.text());
    // A file's text is unknown until MiniMax reads it: the most a file may bill is held.
    let (body, task) = submit(&gw, &rich, "/v1/t2a_async_v2", &submit_file);
    assert_eq!(body["usage_characters"], 9, "{body}");
    let done = finished(&gw, &rich, &task);
    assert_eq!(done["status"], "succeeded", "{done}");
    gw.balance_becomes("rich", 5_000_000_000 - 90_000);

    // Its owner deletes it; then it is gone at MiniMax too.
    let r = post(&gw, &rich, "/v1/files/delete", &format!(r#"{{"file_id":{file_id}}}"#));
    assert_eq!((r.status, r.json()["base_resp"]["status_code"].as_i64()), (200, Some(0)), "{}", r.text());
    let r = get(&gw, &rich, &format!("/v1/files/retrieve?file_id={file_id}"));
    assert_eq!(r.json()["base_resp"]["status_code"], 2013, "{}", r.text());
    let (ok, report) = gw.verify_ledger();
    assert!(ok, "{report}");
}

/// Uploads a text file for `key`; its MiniMax file id.
fn upload(gw: &Gateway, key: &str, text: &str) -> u64 {
    let boundary = "e2e-mm-list-51a";
    let form = format!(
        "--{boundary}\r\nContent-Disposition: form-data; name=\"purpose\"\r\n\r\nt2a_async_input\r\n--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.txt\"\r\nContent-Type: text/plain\r\n\r\n{text}\r\n--{boundary}--\r\n"
    );
    let content_type = format!("multipart/form-data; boundary={boundary}");
    let r = call(gw, key, "POST", "/v1/files/upload", form.as_bytes(), &content_type);
    assert_eq!(r.status, 200, "{}", r.text());
    r.json()["file"]["file_id"].as_u64().expect("the uploaded file's id")
}

/// The file ids a consumer's `GET /v1/files/list` shows, sorted.
fn listed(gw: &Gateway, key: &str, purpose: &str) -> Vec<u64> {
    let r = get(gw, key, &format!("/v1/files/list?purpose={purpose}"));
    assert_eq!((r.status, r.json()["base_resp"]["status_code"].as_i64()), (200, Some(0)), "{}", r.text());
    let mut ids: Vec<u64> =
        r.json()["files"].as_array().expect("files").iter().filter_map(|f| f["file_id"].as_u64()).collect();
    ids.sort_unstable();
    ids
}

#[test]
fn a_file_list_shows_a_consumer_its_own_files_from_every_key_and_no_one_elses() {
    let mock = Mock::start();
    let gw = gateway(&mock);
    let (rich, other, stranger) = (gw.new_key("rich", "10"), gw.new_key("other", "10"), gw.new_key("stranger", "10"));
    // The pool takes its two keys in turn: rich's files are on both, other's beside them.
    let mut mine: Vec<u64> = (0..3).map(|i| upload(&gw, &rich, &format!("part {i}"))).collect();
    let theirs = upload(&gw, &other, "not yours");
    mine.sort_unstable();
    // Asked directly, each of the channel's accounts holds some of rich's files.
    for upstream_key in ["mm-key", "mm-key-2"] {
        let auth = format!("Bearer {upstream_key}");
        let r = http::request(
            &mock.addr,
            "GET",
            "/v1/files/list?purpose=t2a_async_input",
            &[("authorization", &auth)],
            b"",
        );
        let there = r.json()["files"]
            .as_array()
            .expect("files")
            .iter()
            .filter_map(|f| f["file_id"].as_u64())
            .collect::<Vec<_>>();
        assert!(there.iter().any(|id| mine.contains(id)), "{upstream_key} holds none of rich's files: {}", r.text());
    }

    assert_eq!(listed(&gw, &rich, "t2a_async_input"), mine);
    assert_eq!(listed(&gw, &other, "t2a_async_input"), [theirs]);
    assert_eq!(listed(&gw, &rich, "voice_clone"), Vec::<u64>::new(), "MiniMax's own purpose filter still applies");
    // A consumer with no files is answered an empty list (MiniMax is not asked on any key).
    assert_eq!(listed(&gw, &stranger, "t2a_async_input"), Vec::<u64>::new());
    // A deleted file leaves the list; listing is free.
    let r = post(&gw, &rich, "/v1/files/delete", &format!(r#"{{"file_id":{}}}"#, mine[0]));
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(listed(&gw, &rich, "t2a_async_input"), mine[1..]);
    gw.balance_becomes("rich", 10_000_000);
}

#[test]
fn a_job_whose_file_its_owner_deleted_before_the_archive_took_it_is_still_charged() {
    let mock = Mock::start();
    let gw = gateway(&mock);
    let (body, task) = submit(&gw, &gw.key, "/v1/t2a_async_v2", r#"{"model":"speech-2.8-hd","text":"free?"}"#);
    let file_id = body["file_id"].as_u64().expect("the file the job writes");
    // The owner takes the file out from under the gateway before its first poll.
    let r = post(&gw, &gw.key, "/v1/files/delete", &format!(r#"{{"file_id":{file_id}}}"#));
    assert_eq!(r.json()["base_resp"]["status_code"], 0, "{}", r.text());
    let done = finished(&gw, &gw.key, &task);
    // MiniMax did the work: the task succeeds with nothing archived, and is charged.
    assert_eq!(
        (done["status"].as_str(), done["outputs"].as_array().map(Vec::len)),
        (Some("succeeded"), Some(0)),
        "{done}"
    );
    gw.balance_becomes("e2e", 10_000_000 - 50_000);
    // A field written in another case than MiniMax's is refused before MiniMax.
    let r = post(&gw, &gw.key, "/v1/files/delete", &format!(r#"{{"File_Id":{file_id}}}"#));
    assert_eq!(r.status, 400, "{}", r.text());
    let r = post(
        &gw,
        &gw.key,
        "/v1/video_generation",
        r#"{"model":"MiniMax-Hailuo-02","prompt":"a","Resolution":"1080P"}"#,
    );
    assert_eq!(r.status, 400, "{}", r.text());
    let (ok, report) = gw.verify_ledger();
    assert!(ok, "{report}");
}
