use super::{BATCH, BATCHES_LIST, BATCH_CANCEL, BATCH_GET, FILES_LIST, FILES_UPLOAD};
use crate::test_helpers::{refused, reply, text};
use crate::Plugin;
use serde_json::{json, Value};
use tollgate_plugin_sdk::testing::{call, response, Harness, Outcome, Run};
use tollgate_plugin_sdk::{Body, ErrorKind, Field, FormPart, PartValue, Plugin as _, TaskState};

const BATCH_BODY: &str = r#"{"input_file_id":"file-in1","endpoint":"/v1/chat/completions","completion_window":"24h","metadata":{"description":"nightly"}}"#;
const ACCEPTED: &str = r#"{"id":"batch_rdyqgrcgjg","object":"batch","endpoint":"/v1/chat/completions","errors":null,"input_file_id":"file-in1","completion_window":"24h","status":"in_queue","output_file_id":null,"error_file_id":null,"created_at":1741685413,"request_counts":null,"metadata":{"description":"nightly"}}"#;
const UPLOADED: &str = r#"{"code":20000,"message":"Ok","status":true,"data":{"id":"file-in1","object":"file","bytes":512,"createdAt":1741685400,"filename":"in.jsonl","purpose":"batch"}}"#;

fn with_id(op: &str, id: &str) -> tollgate_plugin_sdk::Call {
    let mut c = call(op, "", "");
    c.body = Body::Empty;
    c.context.path_params = vec![("id".into(), id.into())];
    c
}

/// A poll of the batch `batch_rdyqgrcgjg`.
fn poll_call() -> tollgate_plugin_sdk::Call {
    let mut c = call("task.poll", "", "");
    c.body = Body::Empty;
    c.task = Some("batch:batch_rdyqgrcgjg".into());
    c
}

fn poll(answer: Value) -> Run {
    Harness::<Plugin>::new(poll_call()).run(move |_| response(200, answer.to_string()))
}

fn task(run: Run) -> TaskState {
    assert_eq!(
        run.requests.iter().map(|r| (r.method.as_str(), r.path.as_str())).collect::<Vec<_>>(),
        [("GET", "/v1/batches/batch_rdyqgrcgjg")]
    );
    match run.outcome {
        Outcome::Task(t) => t,
        o => panic!("expected the task's state, got {o:?}"),
    }
}

#[test]
fn the_routes_and_ops_are_declared_as_the_host_reads_them() {
    let manifest = Plugin::describe();
    for (method, path, op, billed, affinity) in [
        ("POST", "/v1/files", FILES_UPLOAD, false, Field::None),
        ("GET", "/v1/files", FILES_LIST, false, Field::Owned),
        ("POST", "/v1/batches", BATCH, true, Field::Body("input_file_id".into())),
        ("GET", "/v1/batches/{id}", BATCH_GET, false, Field::Path("id".into())),
        ("POST", "/v1/batches/{id}/cancel", BATCH_CANCEL, false, Field::Path("id".into())),
        ("GET", "/v1/batches", BATCHES_LIST, false, Field::Owned),
    ] {
        let r = manifest.routes.iter().find(|r| r.method == method && r.path == path).expect(path);
        assert_eq!((r.op.as_str(), r.billed), (op, billed), "{method} {path}");
        assert!(matches!(r.model, Field::None), "{path}");
        assert_eq!(format!("{:?}", r.affinity), format!("{affinity:?}"), "{method} {path}");
    }
    let op = |name: &str| manifest.operations.iter().find(|o| o.name == name).expect(name);
    assert!(!op(BATCH).quoted && !op(BATCH).resend, "a batch is reserved by the host and never sent twice");
    assert!(op(BATCH_GET).resend && op(FILES_LIST).resend && op(BATCHES_LIST).resend);
    assert!(!op(FILES_UPLOAD).resend && !op(BATCH_CANCEL).resend);
    assert!(op("task.poll").resend);
    assert!(manifest.fetch_hosts.iter().any(|h| h == "*.siliconflow.cn"));
    assert!(manifest.fetch_hosts.iter().any(|h| h == "*.siliconflow.com"));
}

#[test]
fn a_batch_goes_as_sent_and_becomes_a_task_named_by_its_id() {
    let run = Harness::<Plugin>::new(call(BATCH, "", BATCH_BODY)).run(|_| response(200, ACCEPTED));
    let sent = &run.requests[0];
    assert_eq!((sent.method.as_str(), sent.path.as_str()), ("POST", "/v1/batches"));
    assert!(matches!(sent.body, Body::ClientBody), "the consumer's own bytes: {:?}", sent.body);
    assert!(matches!(sent.auth, tollgate_plugin_sdk::Auth::Bearer));
    let Outcome::Submitted(t) = run.outcome else { panic!("expected a task") };
    assert_eq!((t.state.as_str(), t.poll_after_ms), ("batch:batch_rdyqgrcgjg", Some(30_000)));
    assert!(t.usage.is_empty(), "the host prices the batch from its input file");
    let r = t.reply.expect("SiliconFlow's batch object");
    assert_eq!((r.status, text(&r.body).as_str()), (200, ACCEPTED));
    assert_eq!(r.objects, ["batch_rdyqgrcgjg"]);
    assert!(r.error.is_none());
    // Without `metadata`, and with it null.
    for body in [
        r#"{"input_file_id":"f","endpoint":"/v1/chat/completions","completion_window":"336h"}"#,
        r#"{"input_file_id":"f","endpoint":"/v1/chat/completions","completion_window":"24h","metadata":null}"#,
    ] {
        let run = Harness::<Plugin>::new(call(BATCH, "", body)).run(|_| response(200, ACCEPTED));
        assert!(matches!(run.outcome, Outcome::Submitted(_)), "{body}");
    }
}

#[test]
fn a_batch_the_gateway_would_price_otherwise_is_refused_before_siliconflow() {
    let with = |k: &str, v: Value| {
        let mut b: Value = serde_json::from_str(BATCH_BODY).unwrap();
        b[k] = v;
        b.to_string()
    };
    let without = |k: &str| {
        let mut b: Value = serde_json::from_str(BATCH_BODY).unwrap();
        b.as_object_mut().unwrap().remove(k);
        b.to_string()
    };
    for (body, says) in [
        (with("replace", json!({"model": "deepseek-ai/DeepSeek-V3"})), "name the model in every line"),
        (with("Replace", json!({"model": "deepseek-ai/DeepSeek-V3"})), "name the model in every line"),
        (with("model", json!("deepseek-ai/DeepSeek-V3")), "'model' is not a field"),
        (with("Endpoint", json!("/v1/chat/completions")), "must be written 'endpoint'"),
        (with("endpoint", json!("/v1/embeddings")), "'/v1/chat/completions' only"),
        (without("endpoint"), "'endpoint'"),
        (with("endpoint", json!(["/v1/chat/completions"])), "'endpoint'"),
        (without("input_file_id"), "'input_file_id'"),
        (with("input_file_id", json!(7)), "'input_file_id'"),
        (without("completion_window"), "'completion_window'"),
        (with("completion_window", json!(24)), "'completion_window'"),
        (with("metadata", json!("nightly")), "'metadata'"),
        ("not json".to_string(), "JSON"),
        ("[1]".to_string(), "JSON"),
    ] {
        let message = refused(Harness::<Plugin>::new(call(BATCH, "", &body)).run(|_| panic!("nothing is sent")));
        assert!(message.contains(says), "{body}: {message}");
    }
    let mut form = call(BATCH, "", "");
    form.body = Body::Form(vec![FormPart {
        name: "input_file_id".into(),
        filename: None,
        content_type: None,
        value: PartValue::Text("file-in1".into()),
    }]);
    assert!(refused(Harness::<Plugin>::new(form).run(|_| panic!("nothing is sent"))).contains("JSON"));
}

#[test]
fn siliconflows_refusal_of_a_batch_comes_back_as_written_and_makes_no_task() {
    for (status, body, kind) in [
        (400, r#"{"code":20012,"message":"input file not found","data":""}"#, ErrorKind::BadRequest),
        (401, r#""Invalid token""#, ErrorKind::Unauthorized),
        (404, "404 page not found", ErrorKind::NotFound),
        (429, r#"{"message":"Request was rejected due to rate limiting.","data":""}"#, ErrorKind::RateLimited),
        (503, r#"{"code":50505,"message":"Model service overloaded.","data":""}"#, ErrorKind::UpstreamFault),
    ] {
        let r = reply(Harness::<Plugin>::new(call(BATCH, "", BATCH_BODY)).run(|_| response(status, body)));
        assert_eq!((r.status, text(&r.body).as_str()), (status, body));
        assert_eq!(r.error.map(|e| e.kind), Some(kind), "{body}");
        assert!(r.objects.is_empty() && r.usage.is_empty());
    }
    for garbage in ["{}", "not json", r#"{"id":""}"#] {
        let run = Harness::<Plugin>::new(call(BATCH, "", BATCH_BODY)).run(|_| response(200, garbage));
        assert!(matches!(run.outcome, Outcome::Failed(ref e) if e.kind == ErrorKind::UpstreamFault), "{garbage}");
    }
}

#[test]
fn a_running_batch_is_pending_with_its_progress() {
    for (answer, percent, message, after) in [
        (json!({"status":"in_queue","request_counts":null}), None, "in_queue", 30_000),
        (json!({"status":"validating"}), None, "validating", 10_000),
        (
            json!({"status":"in_progress","request_counts":{"total":200,"completed":40,"failed":10}}),
            Some(25),
            "in_progress",
            10_000,
        ),
        (
            json!({"status":"in_progress","request_counts":{"total":0,"completed":0,"failed":0}}),
            None,
            "in_progress",
            10_000,
        ),
        (
            json!({"status":"finalizing","request_counts":{"total":3,"completed":3,"failed":0}}),
            Some(100),
            "finalizing",
            10_000,
        ),
        (json!({"status":"cancelling","request_counts":{"total":4,"completed":1}}), Some(25), "cancelling", 10_000),
        (
            json!({"status":"in_progress","request_counts":{"total":1,"completed":u64::MAX,"failed":u64::MAX}}),
            Some(100),
            "in_progress",
            10_000,
        ),
    ] {
        match task(poll(answer.clone())) {
            TaskState::Pending(p) => {
                assert_eq!((p.percent, p.message.as_deref(), p.poll_after_ms), (percent, Some(message), Some(after)));
                assert!(p.state.is_none() && p.reply.is_none(), "{answer}");
            }
            t => panic!("{answer}: {t:?}"),
        }
    }
}

#[test]
fn a_channel_may_set_how_often_a_batch_is_read() {
    let mut c = poll_call();
    c.config = r#"{"batch_poll_seconds":2}"#.into();
    let answer = json!({"status":"in_queue"}).to_string();
    match task(Harness::<Plugin>::new(c).run(move |_| response(200, answer.clone()))) {
        TaskState::Pending(p) => assert_eq!(p.poll_after_ms, Some(2_000)),
        t => panic!("{t:?}"),
    }
    let check = <Plugin as tollgate_plugin_sdk::Plugin>::check_settings;
    assert!(check(r#"{"batch_poll_seconds":60}"#).is_ok() && check("").is_ok());
    for bad in [r#"{"batch_poll_seconds":0}"#, r#"{"batch_poll_seconds":"5"}"#, r#"{"batch_poll_seconds":3601}"#] {
        assert!(check(bad).unwrap_err().contains("batch_poll_seconds"), "{bad}");
    }
}

#[test]
fn a_finished_batch_hands_its_result_files_to_the_host() {
    let output = "https://batch.siliconflow.cn/results/out.jsonl?sig=1";
    let errors = "https://batch.siliconflow.cn/results/err.jsonl?sig=2";
    for (answer, urls) in [
        (json!({"status":"completed","output_file_id":output,"error_file_id":null}), vec![output]),
        (json!({"status":"completed","output_file_id":output,"error_file_id":errors}), vec![output, errors]),
        // Cancelled or expired part way: what ran is in the output, and is charged.
        (
            json!({"status":"cancelled","output_file_id":output,"error_file_id":errors,"request_counts":{"total":10,"completed":4,"failed":0}}),
            vec![output, errors],
        ),
        (json!({"status":"expired","output_file_id":output}), vec![output]),
        // A failed batch that left results ran: it is not free either.
        (json!({"status":"failed","output_file_id":output,"errors":["3 lines failed"]}), vec![output]),
        // The mock's plain http, and an error file named by id only (left out: no usage in it).
        (
            json!({"status":"completed","output_file_id":"http://127.0.0.1:9/o.jsonl","error_file_id":"file-err"}),
            vec!["http://127.0.0.1:9/o.jsonl"],
        ),
    ] {
        match task(poll(answer.clone())) {
            TaskState::Succeeded(d) => {
                let got: Vec<_> = d.outputs.iter().map(|m| (m.url.as_str(), m.content_type.as_deref())).collect();
                let want: Vec<_> = urls.iter().map(|u| (*u, Some("application/jsonl"))).collect();
                assert_eq!(got, want, "{answer}");
                assert!(d.usage.is_empty() && d.reply.is_none(), "the host reads the usage from the output");
            }
            t => panic!("{answer}: {t:?}"),
        }
    }
}

#[test]
fn a_batch_that_ran_nothing_fails_free() {
    for (answer, says) in [
        (
            json!({"status":"failed","errors":["input file has no valid line"],"output_file_id":null}),
            "input file has no valid line",
        ),
        (
            json!({"status":"failed","errors":{"object":"list","data":[{"code":"invalid_model","message":"model not found","line":2}]}}),
            "invalid_model: model not found (line 2)",
        ),
        (json!({"status":"failed","errors":null}), "the batch ended failed with no results"),
        (
            json!({"status":"completed","output_file_id":null,"error_file_id":"https://x.siliconflow.cn/e.jsonl"}),
            "the batch ended completed with no results",
        ),
        (json!({"status":"cancelled","output_file_id":""}), "the batch ended cancelled with no results"),
        (json!({"status":"expired"}), "the batch ended expired with no results"),
    ] {
        match task(poll(answer.clone())) {
            TaskState::Failed(e) => {
                assert_eq!(e.kind, ErrorKind::BadRequest, "{answer}: a bad request ends the task free");
                assert!(e.message.contains(says), "{answer}: {}", e.message);
            }
            t => panic!("{answer}: {t:?}"),
        }
    }
}

#[test]
fn a_result_named_by_a_bare_id_ends_with_no_outputs_for_the_host_to_charge_the_hold() {
    let run = poll(json!({"status":"completed","output_file_id":"file-out9","error_file_id":null}));
    match task(run) {
        TaskState::Succeeded(done) => {
            assert!(done.outputs.is_empty() && done.reply.is_none(), "{done:?}");
            assert_eq!(
                done.usage,
                tollgate_plugin_sdk::Usage::default(),
                "the host charges a batch without outputs its hold"
            );
        }
        t => panic!("expected a success without outputs, got {t:?}"),
    }
}

#[test]
fn a_polls_errors_are_classified_so_that_only_a_missing_batch_ends_it() {
    let c = poll_call();
    for (status, body, kind) in [
        (404, "404 page not found", ErrorKind::NotFound),
        (401, r#""Invalid token""#, ErrorKind::Unauthorized),
        (429, r#"{"message":"Request was rejected due to rate limiting.","data":""}"#, ErrorKind::RateLimited),
        (503, r#"{"code":50505,"message":"Model service overloaded.","data":""}"#, ErrorKind::UpstreamFault),
        (200, "not json", ErrorKind::UpstreamFault),
        (200, "{}", ErrorKind::UpstreamFault),
        (200, r#"{"status":"paused"}"#, ErrorKind::UpstreamFault),
    ] {
        let run = Harness::<Plugin>::new(c.clone()).run(|_| response(status, body));
        assert!(matches!(run.outcome, Outcome::Failed(ref e) if e.kind == kind), "{status} {body}");
    }
}

#[test]
fn video_tasks_still_poll_as_videos_and_batch_tasks_as_batches() {
    let mut c = call("task.poll", "", "");
    c.body = Body::Empty;
    c.task = Some("req-9".into());
    let run = Harness::<Plugin>::new(c.clone()).run(|_| response(200, r#"{"status":"InQueue"}"#));
    assert_eq!((run.requests[0].method.as_str(), run.requests[0].path.as_str()), ("POST", "/v1/video/status"));
    c.task = Some("batch:a/b c".into());
    let run = Harness::<Plugin>::new(c.clone()).run(|_| response(200, r#"{"status":"in_queue"}"#));
    assert_eq!((run.requests[0].method.as_str(), run.requests[0].path.as_str()), ("GET", "/v1/batches/a%2Fb%20c"));
    c.task = Some("batch:".into());
    assert!(refused(Harness::<Plugin>::new(c).run(|_| panic!("nothing is sent"))).contains("batch id"));
}

#[test]
fn a_batch_is_read_and_cancelled_on_its_own_path_verbatim() {
    let run = Harness::<Plugin>::new(with_id(BATCH_GET, "batch_1")).run(|_| response(200, ACCEPTED));
    let sent = &run.requests[0];
    assert_eq!((sent.method.as_str(), sent.path.as_str()), ("GET", "/v1/batches/batch_1"));
    let r = reply(run);
    assert_eq!((r.status, text(&r.body).as_str()), (200, ACCEPTED));
    assert!(r.objects.is_empty() && r.error.is_none());

    let cancelling = ACCEPTED.replace("in_queue", "cancelling");
    let run = Harness::<Plugin>::new(with_id(BATCH_CANCEL, "batch_1")).run(|_| response(200, cancelling.clone()));
    let sent = &run.requests[0];
    assert_eq!((sent.method.as_str(), sent.path.as_str()), ("POST", "/v1/batches/batch_1/cancel"));
    assert!(matches!(sent.body, Body::Empty));
    assert_eq!(text(&reply(run).body), cancelling);

    for op in [BATCH_GET, BATCH_CANCEL] {
        let r = reply(Harness::<Plugin>::new(with_id(op, "batch_1")).run(|_| response(401, r#""Invalid token""#)));
        assert_eq!((r.status, text(&r.body).as_str()), (401, r#""Invalid token""#));
        assert_eq!(r.error.map(|e| e.kind), Some(ErrorKind::Unauthorized), "{op}");
    }
}

fn part(name: &str, value: PartValue) -> FormPart {
    let filename = matches!(value, PartValue::ClientFile(_)).then(|| "in.jsonl".to_string());
    FormPart { name: name.into(), filename, content_type: None, value }
}

fn upload(parts: Vec<FormPart>) -> tollgate_plugin_sdk::Call {
    let mut c = call(FILES_UPLOAD, "", "");
    c.body = Body::Form(parts);
    c
}

#[test]
fn a_file_upload_goes_as_sent_and_names_the_file_it_made() {
    let parts =
        vec![part("purpose", PartValue::Text("batch".into())), part("file", PartValue::ClientFile("file".into()))];
    let run = Harness::<Plugin>::new(upload(parts.clone())).run(|_| response(200, UPLOADED));
    let sent = &run.requests[0];
    assert_eq!((sent.method.as_str(), sent.path.as_str()), ("POST", "/v1/files"));
    assert!(sent.headers.is_empty(), "the host writes the form's content type: {:?}", sent.headers);
    match &sent.body {
        Body::Form(sent) => assert_eq!(format!("{sent:?}"), format!("{parts:?}")),
        b => panic!("expected the form, got {b:?}"),
    }
    let r = reply(run);
    assert_eq!((r.status, text(&r.body).as_str()), (200, UPLOADED));
    assert_eq!(r.objects, ["file-in1"]);
    assert!(r.error.is_none() && r.usage.is_empty());

    for (status, body, kind) in [
        (400, r#"{"code":20012,"message":"invalid file","data":""}"#, ErrorKind::BadRequest),
        (401, r#""Invalid token""#, ErrorKind::Unauthorized),
    ] {
        let r = reply(Harness::<Plugin>::new(upload(parts.clone())).run(|_| response(status, body)));
        assert_eq!((r.status, text(&r.body).as_str()), (status, body));
        assert_eq!(r.error.map(|e| e.kind), Some(kind));
        assert!(r.objects.is_empty());
    }
    let run = Harness::<Plugin>::new(upload(parts)).run(|_| response(200, r#"{"id":"file-x"}"#));
    assert!(matches!(run.outcome, Outcome::Failed(ref e) if e.kind == ErrorKind::UpstreamFault));
}

#[test]
fn an_upload_siliconflow_would_refuse_is_refused_first_and_says_why() {
    let purpose = || part("purpose", PartValue::Text("batch".into()));
    let file = || part("file", PartValue::ClientFile("file".into()));
    for (parts, says) in [
        (vec![file()], "'purpose'"),
        (vec![purpose()], "as the file 'file'"),
        (vec![part("purpose", PartValue::Text("fine-tune".into())), file()], "'batch', not 'fine-tune'"),
        (vec![purpose(), purpose(), file()], "twice"),
        (vec![part("purpose", PartValue::ClientFile("purpose".into())), file()], "text field"),
        (vec![purpose(), part("input", PartValue::ClientFile("input".into()))], "named 'file', not 'input'"),
        (vec![purpose(), file(), part("file", PartValue::Text("x".into()))], "not a text field"),
        (vec![purpose(), file(), part("extra", PartValue::ClientFile("extra".into()))], "one file"),
    ] {
        let message = refused(Harness::<Plugin>::new(upload(parts)).run(|_| panic!("nothing is sent")));
        assert!(message.contains(says), "{message}");
    }
    let json = call(FILES_UPLOAD, "", r#"{"purpose":"batch","file":"x"}"#);
    assert!(refused(Harness::<Plugin>::new(json).run(|_| panic!("nothing is sent"))).contains("multipart"));
}

fn owned_call(op: &str, query: &str, owned: Vec<Vec<&str>>) -> tollgate_plugin_sdk::Call {
    let mut c = call(op, "", "");
    c.body = Body::Empty;
    c.query = query.into();
    c.owned = owned.into_iter().map(|ids| ids.into_iter().map(str::to_string).collect()).collect();
    c
}

fn file(id: &str) -> Value {
    json!({"id": id, "object": "file", "bytes": 1, "createdAt": 1, "filename": "in.jsonl", "purpose": "batch"})
}

fn files(list: Vec<Value>) -> String {
    json!({"code": 20000, "message": "Ok", "status": true, "data": {"data": list, "object": "list"}}).to_string()
}

#[test]
fn the_file_list_asks_every_key_and_shows_the_consumers_own_files_only() {
    // Key 0 holds the consumer's f1 and a stranger's s1; key 1 the consumer's g1 and a stranger's s2.
    let accounts = [files(vec![file("f1"), file("s1")]), files(vec![file("s2"), file("g1")])];
    let c = owned_call(FILES_LIST, "purpose=batch&limit=20", vec![vec!["f1", "batch_x"], vec!["g1"]]);
    let run = Harness::<Plugin>::new(c).run(|req| response(200, accounts[req.key as usize].clone()));
    let asked: Vec<_> = run.requests.iter().map(|r| (r.method.as_str(), r.path.as_str(), r.key)).collect();
    assert_eq!(asked, [("GET", "/v1/files?purpose=batch&limit=20", 0), ("GET", "/v1/files?purpose=batch&limit=20", 1)]);
    let r = reply(run);
    let listed: Value = serde_json::from_str(&text(&r.body)).unwrap();
    assert_eq!(listed, serde_json::from_str::<Value>(&files(vec![file("f1"), file("g1")])).unwrap());
    assert!(r.objects.is_empty() && r.error.is_none(), "a list creates nothing");

    // Nothing of the consumer's: SiliconFlow's empty list, and no key asked.
    let run = Harness::<Plugin>::new(owned_call(FILES_LIST, "", vec![])).run(|_| panic!("no key is asked"));
    let listed: Value = serde_json::from_str(&text(&reply(run).body)).unwrap();
    assert_eq!(listed, serde_json::from_str::<Value>(&files(vec![])).unwrap());
    // An empty list written null is empty; no query, no '?'.
    let run = Harness::<Plugin>::new(owned_call(FILES_LIST, "", vec![vec!["f1"]]))
        .run(|_| response(200, r#"{"code":20000,"message":"Ok","status":true,"data":{"data":null,"object":"list"}}"#));
    assert_eq!(run.requests[0].path, "/v1/files");
    let listed: Value = serde_json::from_str(&text(&reply(run).body)).unwrap();
    assert_eq!(listed["data"]["data"], json!([]));
}

fn batch(id: &str) -> Value {
    json!({"id": id, "object": "batch", "status": "in_queue", "input_file_id": "file-in1"})
}

#[test]
fn the_batch_list_merges_the_consumers_own_batches_across_keys() {
    let accounts = [
        json!({"object":"list","data":[batch("b1"), batch("s1"), batch("b2")],"first_id":"b1","last_id":"b2","has_more":false}),
        json!({"object":"list","data":[batch("s2"), batch("c1")],"first_id":"s2","last_id":"c1","has_more":true}),
    ];
    let c = owned_call(BATCHES_LIST, "limit=10", vec![vec!["b1", "b2", "file-in1"], vec!["c1"]]);
    let run = Harness::<Plugin>::new(c).run(|req| response(200, accounts[req.key as usize].to_string()));
    let asked: Vec<_> = run.requests.iter().map(|r| (r.path.as_str(), r.key)).collect();
    assert_eq!(asked, [("/v1/batches?limit=10", 0), ("/v1/batches?limit=10", 1)]);
    let listed: Value = serde_json::from_str(&text(&reply(run).body)).unwrap();
    assert_eq!(
        listed,
        json!({"object":"list","data":[batch("b1"), batch("b2"), batch("c1")],"first_id":"b1","last_id":"c1","has_more":true})
    );

    let run = Harness::<Plugin>::new(owned_call(BATCHES_LIST, "", vec![])).run(|_| panic!("no key is asked"));
    let listed: Value = serde_json::from_str(&text(&reply(run).body)).unwrap();
    assert_eq!(listed, json!({"object":"list","data":[],"first_id":null,"last_id":null,"has_more":false}));
    // Only strangers' batches on the key: an empty page.
    let run = Harness::<Plugin>::new(owned_call(BATCHES_LIST, "", vec![vec!["b9"]]))
        .run(|_| response(200, accounts[0].to_string()));
    let listed: Value = serde_json::from_str(&text(&reply(run).body)).unwrap();
    assert_eq!(listed, json!({"object":"list","data":[],"first_id":null,"last_id":null,"has_more":false}));
}

#[test]
fn a_key_that_fails_fails_the_list_with_siliconflows_answer() {
    for op in [FILES_LIST, BATCHES_LIST] {
        let c = owned_call(op, "", vec![vec!["f1"], vec!["g1"]]);
        let run = Harness::<Plugin>::new(c).run(|req| match req.key {
            0 if op == FILES_LIST => response(200, files(vec![file("f1")])),
            0 => response(200, json!({"object":"list","data":[batch("f1")],"has_more":false}).to_string()),
            _ => response(401, r#""Invalid token""#),
        });
        assert_eq!(run.requests.len(), 2);
        let r = reply(run);
        assert_eq!((r.status, text(&r.body).as_str()), (401, r#""Invalid token""#), "{op}");
        assert_eq!(r.error.map(|e| e.kind), Some(ErrorKind::Unauthorized));
        for garbage in ["not json", "{}", r#"{"data":{}}"#, r#"{"data":"x"}"#] {
            let run = Harness::<Plugin>::new(owned_call(op, "", vec![vec!["f1"]])).run(|_| response(200, garbage));
            assert!(
                matches!(run.outcome, Outcome::Failed(ref e) if e.kind == ErrorKind::UpstreamFault),
                "{op} {garbage}"
            );
        }
    }
}
