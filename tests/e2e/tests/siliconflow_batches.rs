//! SiliconFlow's files and batches through the real binary, against the mock's SiliconFlow
//! (`tests/mock-vendor/src/siliconflow_batches.rs`), which keeps files and batches in the
//! account of the key that made them, runs each line deterministically, and serves the
//! results on a keyless URL as SiliconFlow does:
//! - an upload is read by the gateway before SiliconFlow sees it: a file that is not one
//!   model's chat requests is refused, and SiliconFlow is not asked;
//! - a batch runs on the key that holds its file, for the file's uploader only, priced by the
//!   model the file's lines name at its batch share; it holds the file's worst case, so a
//!   balance that cannot hold it is refused before SiliconFlow;
//! - the finished batch's results are archived for its owner and each answer charged by its
//!   usage, failed lines free; a cancelled batch is charged what it ran;
//! - the listings show a consumer's own files and batches only;
//! - the official `openai` SDK drives it all as SiliconFlow's docs show.

use std::time::Duration;
use tollgate_e2e::{channel, eventually, http, pricing_setting, python_with, run_python_check, Gateway, Mock};

const MODEL: &str = "Qwen/Qwen2.5-7B-Instruct";
/// 2 and 4 micros a token, at half price in a batch: 1 micro an input token, 2 an output one.
const PRICES: &str = "[models.\"Qwen/Qwen2.5-7B-Instruct\"]\ninput_per_million = \"2\"\noutput_per_million = \"4\"\nbatch = \"0.5\"\nmax_output_tokens = 100\n";
const BOUNDARY: &str = "e2e-sf-batch-71f";

fn gateway(mock: &Mock, name: &str) -> Gateway {
    // Read every second, not SiliconFlow's 30 s: the mock's batches move one state a read.
    gateway_with(mock, name, 1, "")
}

/// Batches read every `poll_seconds`; `extra` settings before the channel.
fn gateway_with(mock: &Mock, name: &str, poll_seconds: u32, extra: &str) -> Gateway {
    // SiliconFlow's files and batches are under the mock's /siliconflow; its results are on
    // the mock's own (loopback) host, which the operator names.
    let ch = channel("sf", "siliconflow", &format!("{}/siliconflow", mock.url()), &[MODEL], &["sk-a", "sk-b"]);
    let ch = format!("{ch}settings = {{ batch_poll_seconds = {poll_seconds} }}\n");
    let extra = format!("{extra}fetch_allow_private_hosts = [\"127.0.0.1\"]\n{}{ch}", pricing_setting(PRICES));
    Gateway::start(name, &[("siliconflow", "siliconflow.wasm")], &extra)
}

fn call(gw: &Gateway, key: &str, method: &str, path: &str, body: &[u8], content_type: &str) -> http::Response {
    let auth = format!("Bearer {key}");
    http::request(&gw.addr, method, path, &[("authorization", &auth), ("content-type", content_type)], body)
}

fn get(gw: &Gateway, key: &str, path: &str) -> http::Response {
    call(gw, key, "GET", path, b"", "application/json")
}

/// A request line of a batch file.
fn line(id: &str, messages: &str, extra: &str) -> String {
    format!(
        r#"{{"custom_id":"{id}","method":"POST","url":"/v1/chat/completions","body":{{"model":"{MODEL}","messages":{messages}{extra}}}}}"#
    )
}

/// Uploads `file` as a batch input; the answer.
fn upload(gw: &Gateway, key: &str, file: &str) -> http::Response {
    let body = format!(
        "--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"purpose\"\r\n\r\nbatch\r\n--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"requests.jsonl\"\r\nContent-Type: application/jsonl\r\n\r\n{file}\r\n--{BOUNDARY}--\r\n"
    );
    call(gw, key, "POST", "/v1/files", body.as_bytes(), &format!("multipart/form-data; boundary={BOUNDARY}"))
}

fn uploaded(gw: &Gateway, key: &str, file: &str) -> String {
    let r = upload(gw, key, file);
    assert_eq!(r.status, 200, "{}", r.text());
    r.json()["data"]["id"].as_str().expect("SiliconFlow's file id").to_string()
}

fn create(gw: &Gateway, key: &str, body: &str) -> http::Response {
    call(gw, key, "POST", "/v1/batches", body.as_bytes(), "application/json")
}

fn batch_of(file: &str) -> String {
    format!(r#"{{"input_file_id":"{file}","endpoint":"/v1/chat/completions","completion_window":"24h"}}"#)
}

/// Waits for the gateway's task to end; its view.
fn finished(gw: &Gateway, key: &str, task: &str) -> serde_json::Value {
    let path = format!("/v1/tasks/{task}");
    let ended = eventually(Duration::from_secs(60), || {
        get(gw, key, &path).json()["status"].as_str().is_some_and(|s| ["succeeded", "failed", "expired"].contains(&s))
    });
    assert!(ended, "{}", get(gw, key, &path).text());
    get(gw, key, &path).json()
}

fn requests(mock: &Mock) -> u64 {
    mock.stats()["requests"].as_u64().unwrap()
}

#[test]
fn a_batch_holds_its_worst_case_runs_on_its_files_key_and_is_charged_each_answer_at_the_batch_price() {
    let mock = Mock::start();
    let gw = gateway(&mock, "sf-batches");
    let alice = gw.new_key("alice", "1");
    let bob = gw.new_key("bob", "1");

    // A file the gateway cannot price never reaches SiliconFlow: two models, no model.
    let hi = r#"[{"role":"user","content":"hello"}]"#;
    let before = requests(&mock);
    let two_models = format!("{}\n{}", line("a", hi, ""), line("b", hi, "").replace(MODEL, "other/model"));
    for (file, why) in
        [(two_models, "a batch runs one model"), (line("a", hi, "").replace(MODEL, ""), "names no model")]
    {
        let r = upload(&gw, &alice, &file);
        assert_eq!(r.status, 400, "{}", r.text());
        assert_eq!(r.json()["error"]["code"], "invalid_batch_file", "{}", r.text());
        assert!(r.json()["error"]["message"].as_str().unwrap().contains(why), "{}", r.text());
    }
    assert_eq!(requests(&mock), before, "SiliconFlow was not asked");

    // Three requests: answered (8 tokens in, 5 out), answered with no bound (25 in, 2 of them
    // cached, 12 out), and one SiliconFlow fails (free).
    let lines = [
        line("a", hi, r#","max_tokens":5"#),
        line("cached-b", r#"[{"role":"system","content":"be brief"},{"role":"user","content":"héllo world"}]"#, ""),
        line("c", r#"[{"role":"user","content":"please FAIL"}]"#, r#","max_tokens":50"#),
    ];
    let file = lines.join("\n");
    let alices_file = uploaded(&gw, &alice, &file);
    // The worst case: every line's bytes / 2 in, at 1 micro; 5 + 100 (no bound: the model's
    // max_output_tokens) + 50 out, at 2 micros.
    let hold: i64 = lines.iter().map(|l| l.len().div_ceil(2) as i64).sum::<i64>() + 155 * 2;

    // Another consumer cannot make a batch of it, and SiliconFlow is not asked.
    let before = requests(&mock);
    let r = create(&gw, &bob, &batch_of(&alices_file));
    assert_eq!(r.status, 404, "{}", r.text());
    // A replaced model would be priced as another: refused before SiliconFlow.
    let replaced = batch_of(&alices_file).replace("}", r#","replace":{"model":"deepseek-ai/DeepSeek-V3"}}"#);
    let r = create(&gw, &alice, &replaced);
    assert_eq!(r.status, 400, "{}", r.text());
    assert_eq!(requests(&mock), before, "SiliconFlow was not asked");

    // A balance that cannot hold the worst case is refused before SiliconFlow.
    let carol = gw.new_key("carol", &format!("0.{:06}", hold - 1));
    let carols_file = uploaded(&gw, &carol, &file);
    let before = requests(&mock);
    let r = create(&gw, &carol, &batch_of(&carols_file));
    assert_eq!(r.status, 402, "{}", r.text());
    assert_eq!(requests(&mock), before, "SiliconFlow was not asked");

    // Alice's batch: SiliconFlow's batch object, the gateway's task beside it, the hold taken.
    let r = create(&gw, &alice, &batch_of(&alices_file));
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["status"], "in_queue", "SiliconFlow's own answer: {}", r.text());
    let batch = r.json()["id"].as_str().expect("SiliconFlow's batch id").to_string();
    let task = r.header("x-tollgate-task-id").expect("the gateway's task").to_string();
    gw.balance_becomes("alice", 1_000_000 - hold);

    // The batch is read on the key that made it; bob's query is not found.
    let r = get(&gw, &alice, &format!("/v1/batches/{batch}"));
    assert_eq!((r.status, r.json()["id"].as_str()), (200, Some(batch.as_str())), "{}", r.text());
    assert_eq!(get(&gw, &bob, &format!("/v1/batches/{batch}")).status, 404);

    // Done: each answer at its usage, at the batch price: (8 + 2 × 5) + (25 + 2 × 12).
    let view = finished(&gw, &alice, &task);
    assert_eq!(view["status"], "succeeded", "{view}");
    gw.balance_becomes("alice", 1_000_000 - 67);
    // Its results are kept for alice: the answers, then the failed line.
    let answers = get(&gw, &alice, &format!("/v1/tasks/{task}/content/0"));
    assert_eq!(answers.status, 200, "{}", answers.text());
    let text = answers.text();
    let ids: Vec<_> =
        text.lines().map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["custom_id"].clone()).collect();
    assert_eq!(ids, ["a", "cached-b"], "{text}");
    let errors = get(&gw, &alice, &format!("/v1/tasks/{task}/content/1")).text();
    assert!(errors.contains(r#""custom_id":"c""#), "{errors}");
    assert_eq!(get(&gw, &bob, &format!("/v1/tasks/{task}/content/0")).status, 404);

    // A cancelled batch is charged what it ran: its first answer, 18 micros.
    let r = create(&gw, &alice, &batch_of(&alices_file));
    assert_eq!(r.status, 200, "{}", r.text());
    let second = r.json()["id"].as_str().unwrap().to_string();
    let task = r.header("x-tollgate-task-id").unwrap().to_string();
    let r = call(&gw, &alice, "POST", &format!("/v1/batches/{second}/cancel"), b"", "application/json");
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(finished(&gw, &alice, &task)["status"], "succeeded");
    gw.balance_becomes("alice", 1_000_000 - 67 - 18);

    // The listings: alice's own file and batches, none of carol's; bob has none.
    let files = get(&gw, &alice, "/v1/files?purpose=batch");
    assert_eq!(files.status, 200, "{}", files.text());
    let listed: Vec<_> = files.json()["data"]["data"].as_array().unwrap().iter().map(|f| f["id"].clone()).collect();
    assert_eq!(listed, [alices_file.as_str()], "{}", files.text());
    let batches = get(&gw, &alice, "/v1/batches");
    let mut listed: Vec<_> =
        batches.json()["data"].as_array().unwrap().iter().map(|b| b["id"].as_str().unwrap().to_string()).collect();
    listed.sort();
    let mut mine = vec![batch.clone(), second.clone()];
    mine.sort();
    assert_eq!(listed, mine, "{}", batches.text());
    let bobs = get(&gw, &bob, "/v1/batches");
    assert_eq!(bobs.json()["data"].as_array().map(Vec::len), Some(0), "{}", bobs.text());
    gw.balance_becomes("bob", 1_000_000);
    gw.balance_becomes("carol", hold - 1);
}

#[test]
fn a_batch_the_gateway_stops_following_is_charged_its_hold_not_given_it_back() {
    // Read once a minute and expired after 2 s: the task ends before its first read, while
    // SiliconFlow would run the batch all the same (and its results stay fetchable there).
    let mock = Mock::start();
    let gw = gateway_with(&mock, "sf-batches-expiry", 60, "task_ttl_secs = 2\n");
    let alice = gw.new_key("alice", "1");
    let file = line("a", r#"[{"role":"user","content":"hello"}]"#, r#","max_tokens":5"#);
    let hold = file.len().div_ceil(2) as i64 + 5 * 2;
    let r = create(&gw, &alice, &batch_of(&uploaded(&gw, &alice, &file)));
    assert_eq!(r.status, 200, "{}", r.text());
    let task = r.header("x-tollgate-task-id").expect("the gateway's task").to_string();
    let view = finished(&gw, &alice, &task);
    assert_eq!(view["status"], "expired", "{view}");
    gw.balance_becomes("alice", 1_000_000 - hold);
}

#[test]
fn the_openai_sdk_uploads_makes_follows_cancels_and_lists_batches_as_siliconflows_docs_show() {
    let Some(python) = python_with("import openai", "openai") else { return };
    let mock = Mock::start();
    let gw = gateway(&mock, "sf-batches-sdk");
    let hi = r#"[{"role":"user","content":"hello"}]"#;
    let file = [line("a", hi, r#","max_tokens":5"#), line("b", hi, r#","max_tokens":5"#)].join("\n");
    run_python_check(&python, "openai_batches_check.py", &[&format!("http://{}/v1", gw.addr), &gw.key, &file]);
    // Two answers of 8 tokens in and 5 out, at the batch price; the cancelled one ran one.
    let charged = 3 * (8 + 2 * 5);
    assert!(
        eventually(Duration::from_secs(60), || gw.balance_micros("e2e") == 10_000_000 - charged),
        "balance {}",
        gw.balance_micros("e2e")
    );
}
