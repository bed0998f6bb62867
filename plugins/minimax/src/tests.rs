//! The MiniMax plugin's behaviour, driven natively by the SDK's harness.

use super::*;
use serde_json::json;
use tollgate_plugin_sdk::testing::{body_text, call, event_data, response, Harness, Outcome, Run};
use tollgate_plugin_sdk::{header, Auth, Framing, Header};

const OK: &str = r#"{"data":{"audio":"52494646","status":2},"extra_info":{"audio_length":1234,"usage_characters":4},"trace_id":"t","base_resp":{"status_code":0,"status_msg":"success"}}"#;
const BAD_KEY: &str = r#"{"base_resp":{"status_code":1004,"status_msg":"login fail"}}"#;
const EVENTS: [&str; 3] = [
    r#"{"data":{"audio":"4944","status":1},"trace_id":"t","base_resp":{"status_code":0,"status_msg":""}}"#,
    r#"{"data":{"audio":"3303","status":1},"trace_id":"t","base_resp":{"status_code":0,"status_msg":""}}"#,
    r#"{"data":{"audio":"49443303","status":2},"extra_info":{"audio_length":900,"usage_characters":26},"trace_id":"t","base_resp":{"status_code":0,"status_msg":"success"}}"#,
];
const HI: &str = r#"{"input":"hi"}"#;
const HI_STREAM: &str = r#"{"model":"speech-2.8-hd","text":"hi","stream":true}"#;

fn sse(events: &[&str], eol: &str) -> String {
    events.iter().map(|e| format!("data: {e}{eol}{eol}")).collect()
}

fn speech(json: &str) -> Call {
    Call { upstream_model: "speech-2.8-hd".into(), ..call("speech", "tts-1", json) }
}

fn native(json: &str) -> Call {
    call("minimax.t2a", "speech-2.8-hd", json)
}

/// Runs a call against an upstream that always gives `answer`, fed in `piece`-byte chunks.
fn run_in(piece: usize, c: Call, answer: UpstreamResponse) -> Run {
    Harness::<MiniMax>::new(c).piece_size(piece).run(move |_| answer.clone())
}

fn run(c: Call, answer: UpstreamResponse) -> Run {
    run_in(64, c, answer)
}

fn sent(run: &Run) -> Value {
    serde_json::from_str(&body_text(&run.requests[0])).expect("JSON request")
}

fn reply(outcome: Outcome) -> Reply {
    match outcome {
        Outcome::Reply(r) => r,
        other => panic!("expected a reply, got {other:?}"),
    }
}

fn failed(outcome: Outcome) -> AdapterError {
    match outcome {
        Outcome::Failed(e) | Outcome::StreamFailed { error: e, .. } => e,
        other => panic!("expected a failure, got {other:?}"),
    }
}

/// The error of a call refused before anything is sent upstream.
fn refused(c: Call) -> AdapterError {
    failed(Harness::<MiniMax>::new(c).run(|_| unreachable!()).outcome)
}

fn class(e: &AdapterError) -> (ErrorKind, &str) {
    (e.kind, e.code.as_deref().unwrap_or(""))
}

fn bytes(body: &Body) -> &[u8] {
    body.as_bytes().expect("a body held by the plugin")
}

#[test]
fn manifest_declares_ops_route_and_base_url() {
    let m = MiniMax::describe();
    let ops: Vec<&str> = m.operations.iter().map(|o| o.name.as_str()).collect();
    assert_eq!((m.name.as_str(), &ops[..2]), ("minimax", &["speech", "minimax.t2a"][..]));
    // What costs or changes something is never resent once it may have reached MiniMax.
    for op in ["speech", "minimax.t2a", "minimax.t2a_async", "minimax.video", "minimax.upload", "minimax.file_delete"] {
        assert!(m.operations.iter().any(|o| o.name == op && !o.resend), "{op}");
    }
    let route = &m.routes[0];
    assert_eq!([&route.method, &route.path, &route.op], ["POST", T2A_PATH, "minimax.t2a"]);
    assert!(route.billed);
    assert!(matches!(&route.model, tollgate_plugin_sdk::Field::Body(f) if f == "model"));
    assert_eq!(m.default_base_url.as_deref(), Some("https://api.minimax.io"));
}

#[test]
fn speech_maps_request_decodes_hex_and_reports_usage() {
    let body = r#"{"input":"你好","voice":"female-shaonv","response_format":"wav","speed":1.5}"#;
    let run = run(speech(body), response(200, OK));
    let req = &run.requests[0];
    assert_eq!((req.method.as_str(), req.path.as_str()), ("POST", T2A_PATH));
    assert!(matches!(req.auth, Auth::Bearer));
    let voice = json!({"voice_id": "female-shaonv", "speed": 1.5, "vol": 1, "pitch": 0});
    let audio = json!({"format": "wav", "sample_rate": 32000, "bitrate": 128000, "channel": 1});
    let want = json!({"model": "speech-2.8-hd", "text": "你好", "stream": false,
        "voice_setting": voice, "audio_setting": audio, "output_format": "hex"});
    assert_eq!(sent(&run), want);
    let r = reply(run.outcome);
    assert_eq!((r.status, header(&r.headers, "content-type")), (200, Some("audio/wav")));
    assert_eq!(bytes(&r.body), b"RIFF");
    assert_eq!((r.usage.characters, r.usage.milliseconds), (Some(4), Some(1234)));
    assert!(r.error.is_none());
}

#[test]
fn speech_defaults_to_mp3_the_default_voice_and_speed_1() {
    let run = run(speech(HI), response(200, OK));
    let voice = json!({"voice_id": DEFAULT_VOICE, "speed": 1.0, "vol": 1, "pitch": 0});
    assert_eq!(sent(&run)["voice_setting"], voice);
    assert_eq!(sent(&run)["audio_setting"]["format"], "mp3");
    let r = reply(run.outcome);
    assert_eq!(header(&r.headers, "content-type"), Some("audio/mpeg"));
}

#[test]
fn bad_key_fails_speech_and_is_relayed_with_its_class_on_the_native_route() {
    let e = failed(run(speech(HI), response(200, BAD_KEY)).outcome);
    assert_eq!(class(&e), (ErrorKind::Unauthorized, "1004"));
    assert_eq!(e.message, "login fail");

    let r = reply(run(native(r#"{"text":"hi"}"#), response(200, BAD_KEY)).outcome);
    assert_eq!((r.status, bytes(&r.body)), (200, BAD_KEY.as_bytes()), "verbatim");
    let e = r.error.expect("the error class is set");
    assert_eq!(class(&e), (ErrorKind::Unauthorized, "1004"));
}

#[test]
fn error_codes_are_classified() {
    use ErrorKind::*;
    let kinds = [Unauthorized, InsufficientBalance, RateLimited, RateLimited, BadRequest];
    let more = [BadRequest, Timeout, UpstreamFault];
    let codes = [2049, 1008, 1002, 1039, 2013, 1042, 1001, 1000];
    for (code, kind) in codes.into_iter().zip(kinds.into_iter().chain(more)) {
        assert_eq!(classify(code, "").kind, kind, "code {code}");
    }
    assert_eq!(classify(1000, " ").message, "MiniMax error 1000");
}

#[test]
fn http_errors_are_classified_and_relayed_on_the_native_route() {
    let rpm = r#"{"base_resp":{"status_code":1002,"status_msg":"rpm"}}"#;
    let mut limited = response(429, rpm);
    limited.headers.push(Header::new("Retry-After", "3"));
    let e = failed(run(speech(HI), limited).outcome);
    assert_eq!((class(&e), e.retry_after_ms), ((ErrorKind::RateLimited, "1002"), Some(3000)));

    let unknown = r#"{"base_resp":{"status_code":1000,"status_msg":"?"}}"#;
    let e = failed(run(speech(HI), response(401, unknown)).outcome);
    assert_eq!(class(&e), (ErrorKind::Unauthorized, "1000"), "HTTP class for unknown codes");

    let r = reply(run(native(HI_STREAM), response(502, "Bad Gateway")).outcome);
    assert_eq!((r.status, bytes(&r.body)), (502, &b"Bad Gateway"[..]));
    assert_eq!(r.error.map(|e| e.kind), Some(ErrorKind::UpstreamFault));
}

#[test]
fn invalid_answers_are_upstream_faults() {
    let bad_hex = r#"{"data":{"audio":"5249zz"},"base_resp":{"status_code":0}}"#;
    for body in [bad_hex, r#"{"data":{"audio":"524"}}"#, r#"{"data":{}}"#, "not json"] {
        let e = failed(run(speech(HI), response(200, body)).outcome);
        assert_eq!(e.kind, ErrorKind::UpstreamFault, "{body}");
    }
}

#[test]
fn bad_input_is_a_bad_request() {
    let bodies = [r#"{"voice":"x"}"#, r#"{"input":" "}"#, r#"{"input":5}"#, "[1]", "nope"];
    for body in bodies.into_iter().chain([r#"{"input":"hi","speed":4}"#]) {
        assert_eq!(refused(speech(body)).kind, ErrorKind::BadRequest, "{body}");
    }
    assert!(refused(speech("{}")).message.contains("'input' is required"));
    for body in [r#"["x"]"#, "", "null"] {
        assert_eq!(refused(native(body)).kind, ErrorKind::BadRequest, "{body}");
    }
    assert_eq!(refused(call("chat", "m", "{}")).kind, ErrorKind::Unsupported);
}

#[test]
fn unsupported_formats_are_refused_not_replaced() {
    for format in ["opus", "aac"] {
        let body = format!(r#"{{"input":"hi","response_format":"{format}"}}"#);
        let e = refused(speech(&body));
        assert_eq!(e.kind, ErrorKind::BadRequest);
        assert!(e.message.contains(format), "{}", e.message);
    }
}

#[test]
fn native_forwards_bytes_and_replaces_only_a_different_model() {
    let body = r#"{"model":"speech-2.8-hd", "text":"hi","voice_setting":{"voice_id":"v"}}"#;
    let c = Call { query: "GroupId=42&other=x".into(), keep_speech: true, ..native(body) };
    let same = run(c, response(200, OK));
    assert_eq!(body_text(&same.requests[0]), body, "same model: bytes unchanged");
    assert_eq!(same.requests[0].path, "/v1/t2a_v2?GroupId=42");
    let r = reply(same.outcome);
    assert_eq!((r.status, bytes(&r.body)), (200, OK.as_bytes()));
    assert_eq!((r.usage.characters, r.error.is_none()), (Some(4), true));
    assert_eq!(header(&r.headers, "content-type"), Some("application/json"));
    // The audio decoded beside the answer, for the host's speech archive.
    let speech = r.speech.expect("the decoded speech");
    assert_eq!((speech.audio, speech.format.as_str(), speech.text.as_str()), (b"RIFF".to_vec(), "mp3", "hi"));

    let c = Call { upstream_model: "speech-02-turbo".into(), ..native(body) };
    let mapped = run(c, response(200, OK));
    let want = json!({"model": "speech-02-turbo", "text": "hi", "voice_setting": {"voice_id": "v"}});
    assert_eq!((sent(&mapped), mapped.requests[0].path.as_str()), (want, T2A_PATH));
    assert!(reply(mapped.outcome).speech.is_none(), "decoded only for a channel that keeps speech");
}

#[test]
fn stream_passes_events_through_in_any_pieces_and_framing() {
    let Step::Stream(step) = T2a::new(native(HI_STREAM)).first() else { panic!("a stream") };
    assert_eq!(step.framing, Framing::Sse);
    assert_eq!(header(&step.reply_headers, "content-type"), Some("text/event-stream"));
    for eol in ["\n", "\r\n"] {
        for piece in [1, 5, 1000] {
            let run = run_in(piece, native(HI_STREAM), response(200, sse(&EVENTS, eol)));
            assert_eq!(body_text(&run.requests[0]), HI_STREAM);
            let Outcome::Stream { chunks, tail } = run.outcome else { panic!("a stream") };
            assert_eq!(event_data(&chunks), EVENTS, "{eol:?}, piece {piece}");
            assert!(tail.chunks.is_empty(), "MiniMax has no [DONE]");
            assert_eq!((tail.usage.characters, tail.usage.milliseconds), (Some(26), Some(900)));
        }
    }
}

#[test]
fn stream_error_event_fails_the_stream_after_the_events_before_it() {
    let tpm = r#"{"base_resp":{"status_code":1039,"status_msg":"tpm limit"}}"#;
    let body = sse(&[EVENTS[0], EVENTS[1], tpm, EVENTS[2]], "\r\n");
    for piece in [1, 7, 1000] {
        let run = run_in(piece, native(HI_STREAM), response(200, body.clone()));
        let Outcome::StreamFailed { chunks, error } = run.outcome else { panic!("a failure") };
        assert_eq!(event_data(&chunks), EVENTS[..2], "piece {piece}");
        assert_eq!(class(&error), (ErrorKind::RateLimited, "1039"));
        assert_eq!(error.message, "tpm limit");
    }
}

#[test]
fn stream_answered_without_events_is_not_a_silent_success() {
    let e = failed(run(native(HI_STREAM), response(200, BAD_KEY)).outcome);
    assert_eq!(e.kind, ErrorKind::UpstreamFault);
    let r = reply(run(native(HI_STREAM), response(401, BAD_KEY)).outcome);
    assert_eq!((r.status, r.error.map(|e| e.kind)), (401, Some(ErrorKind::Unauthorized)));
}

mod jobs {
    use super::*;
    use tollgate_plugin_sdk::{Field, FormPart, PartValue, TaskState};

    const SUBMITTED: &str = r#"{"task_id":95157322514444,"task_token":"t","file_id":95157322514445,"usage_characters":7,"base_resp":{"status_code":0,"status_msg":"success"}}"#;

    fn job(op: &str, model: &str, body: &str) -> Call {
        call(op, model, body)
    }

    fn quote(c: Call) -> Result<Usage, AdapterError> {
        MiniMaxExchange::new(c).quote()
    }

    fn poll(state: &str) -> Call {
        Call { task: Some(state.into()), ..call("task.poll", "speech-2.8-hd", "") }
    }

    #[test]
    fn routes_name_where_their_objects_are() {
        let m = MiniMax::describe();
        let route = |path: &str| m.routes.iter().find(|r| r.path == path).unwrap_or_else(|| panic!("{path}"));
        let submit = route("/v1/t2a_async_v2");
        assert!(submit.billed && matches!(&submit.affinity, Field::Body(f) if f == "text_file_id"));
        for path in ["/v1/query/t2a_async_query_v2", "/v1/query/video_generation"] {
            let r = route(path);
            assert!(!r.billed && matches!(&r.affinity, Field::Query(f) if f == "task_id"), "{path}");
        }
        for path in ["/v1/files/retrieve", "/v1/files/retrieve_content", "/v1/video/download"] {
            assert!(matches!(&route(path).affinity, Field::Query(f) if f == "file_id"), "{path}");
        }
        assert!(matches!(&route("/v1/files/delete").affinity, Field::Body(f) if f == "file_id"));
        assert!(!route("/v1/files/upload").billed);
        let list = route("/v1/files/list");
        assert!(!list.billed && matches!(list.affinity, Field::Owned));
    }

    #[test]
    fn a_file_list_asks_each_key_and_shows_only_the_consumers_files() {
        let list = |owned: Vec<Vec<String>>| Call {
            query: "purpose=t2a_async_input".into(),
            owned,
            ..call("minimax.file_list", "", "")
        };
        let files = |ids: &[u64]| {
            let files: Vec<Value> =
                ids.iter().map(|id| json!({ "file_id": id, "purpose": "t2a_async_input" })).collect();
            response(
                200,
                json!({ "files": files, "base_resp": { "status_code": 0, "status_msg": "success" } }).to_string(),
            )
        };
        let ids = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        // Key 0 holds 1 and 2 of the consumer's and 3 of another's; key 1 holds 7.
        let run = Harness::<MiniMax>::new(list(vec![ids(&["1", "2", "99"]), ids(&["7"])])).run(|r| match r.key {
            0 => files(&[1, 2, 3]),
            1 => files(&[7, 8]),
            k => panic!("no key {k}"),
        });
        assert_eq!(run.requests.len(), 2);
        assert!(run.requests.iter().all(|r| r.path == "/v1/files/list?purpose=t2a_async_input"));
        let shown: Value = serde_json::from_slice(bytes(&reply(run.outcome).body)).unwrap();
        let shown_ids: Vec<u64> =
            shown["files"].as_array().unwrap().iter().map(|f| f["file_id"].as_u64().unwrap()).collect();
        assert_eq!(shown_ids, [1, 2, 7]);
        assert_eq!(shown["base_resp"]["status_code"], 0);

        // No objects: an empty list, and MiniMax is not asked.
        let run = Harness::<MiniMax>::new(list(Vec::new())).run(|_| unreachable!());
        let shown: Value = serde_json::from_slice(bytes(&reply(run.outcome).body)).unwrap();
        assert_eq!(shown["files"], json!([]));

        // A key that fails fails the listing with MiniMax's answer, never a partial list.
        let run = Harness::<MiniMax>::new(list(vec![ids(&["1"]), ids(&["7"])])).run(|r| match r.key {
            0 => files(&[1]),
            _ => response(200, r#"{"base_resp":{"status_code":1004,"status_msg":"login fail"}}"#),
        });
        let r = reply(run.outcome);
        assert_eq!(r.error.map(|e| e.kind), Some(ErrorKind::Unauthorized));
        assert!(String::from_utf8_lossy(bytes(&r.body)).contains("login fail"));
    }

    #[test]
    fn long_speech_is_quoted_by_its_characters_or_bounded_by_its_file() {
        let q = quote(job("minimax.t2a_async", "speech-2.8-hd", r#"{"model":"speech-2.8-hd","text":"ab你好"}"#));
        assert_eq!(q.unwrap().characters, Some(6));
        let q = quote(job("minimax.t2a_async", "speech-2.8-hd", r#"{"text_file_id":123}"#));
        assert_eq!(q.unwrap().characters, Some(200_000));
        for bad in [r#"{"text":""}"#, r#"{}"#, r#"{"text":"a","text_file_id":1}"#, r#"{"text":7}"#] {
            let e = quote(job("minimax.t2a_async", "speech-2.8-hd", bad)).unwrap_err();
            assert_eq!(e.kind, ErrorKind::BadRequest, "{bad}");
        }
        let long = format!(r#"{{"text":"{}"}}"#, "a".repeat(50_001));
        let e = quote(job("minimax.t2a_async", "speech-2.8-hd", &long)).unwrap_err();
        assert!(e.message.contains("at most 50000"), "{}", e.message);
    }

    #[test]
    fn a_video_is_quoted_by_its_tier_and_what_minimax_cannot_render_is_refused() {
        let tier = |model: &str, body: &str| quote(job("minimax.video", model, body)).map(|u| u.extra[0].0.clone());
        assert_eq!(tier("MiniMax-Hailuo-02", r#"{"prompt":"cat"}"#).unwrap(), "768p-6s");
        assert_eq!(
            tier("MiniMax-Hailuo-02", r#"{"prompt":"cat","duration":10,"resolution":"512P"}"#).unwrap(),
            "512p-10s"
        );
        assert_eq!(tier("MiniMax-Hailuo-02", r#"{"prompt":"cat","resolution":"1080P"}"#).unwrap(), "1080p-6s");
        assert_eq!(tier("T2V-01", r#"{"prompt":"cat"}"#).unwrap(), "video");
        assert_eq!(tier("I2V-01", r#"{"first_frame_image":"https://x/y.png"}"#).unwrap(), "video");
        for (model, bad, says) in [
            ("MiniMax-Hailuo-02", r#"{"prompt":"cat","resolution":"1080P","duration":10}"#, "6 seconds only"),
            ("MiniMax-Hailuo-02", r#"{"prompt":"cat","duration":8}"#, "6 or 10"),
            ("MiniMax-Hailuo-02", r#"{"prompt":"cat","duration":"6"}"#, "whole number"),
            ("MiniMax-Hailuo-02", r#"{"prompt":"cat","resolution":"4K"}"#, "512P, 768P or 1080P"),
            ("T2V-01", r#"{"prompt":"cat","duration":10}"#, "720P only"),
            ("T2V-01", r#"{"prompt":" "}"#, "needs a 'prompt'"),
        ] {
            let e = tier(model, bad).unwrap_err();
            assert!(e.kind == ErrorKind::BadRequest && e.message.contains(says), "{bad}: {}", e.message);
        }
    }

    #[test]
    fn a_submit_becomes_a_task_answered_with_minimaxs_own_body() {
        let body = r#"{"model":"speech-2.8-hd","text":"hello"}"#;
        let run = run(job("minimax.t2a_async", "speech-2.8-hd", body), response(200, SUBMITTED));
        assert_eq!(run.requests[0].path, "/v1/t2a_async_v2");
        assert_eq!(bytes(&run.requests[0].body), body.as_bytes(), "the consumer's bytes, unchanged");
        let Outcome::Submitted(t) = run.outcome else { panic!("expected a task") };
        let state: Value = serde_json::from_str(&t.state).unwrap();
        assert_eq!(state, json!({"kind": "speech", "task_id": "95157322514444", "characters": 7}));
        assert_eq!(t.usage.characters, Some(7), "what MiniMax counted, not the quote");
        let reply = t.reply.expect("MiniMax's own answer");
        assert_eq!(bytes(&reply.body), SUBMITTED.as_bytes());
        assert_eq!(reply.objects, ["95157322514444", "95157322514445"]);

        // A refusal goes back as MiniMax wrote it, classified, and makes no task.
        let run = super::run(job("minimax.t2a_async", "speech-2.8-hd", body), response(200, BAD_KEY));
        let r = reply_of(run.outcome);
        assert_eq!((bytes(&r.body), r.error.map(|e| e.kind)), (BAD_KEY.as_bytes(), Some(ErrorKind::Unauthorized)));

        // A mapped model is renamed; a video's tier is kept for the charge.
        let c = Call {
            upstream_model: "MiniMax-Hailuo-02".into(),
            ..job("minimax.video", "hailuo", r#"{"model":"hailuo","prompt":"cat","duration":10}"#)
        };
        let run = super::run(
            c,
            response(200, r#"{"task_id":"106916112212032","base_resp":{"status_code":0,"status_msg":"success"}}"#),
        );
        assert_eq!(sent(&run)["model"], "MiniMax-Hailuo-02");
        let Outcome::Submitted(t) = run.outcome else { panic!("expected a task") };
        assert_eq!(serde_json::from_str::<Value>(&t.state).unwrap()["unit"], "768p-10s");
        assert_eq!(t.reply.unwrap().objects, ["106916112212032"]);
    }

    fn reply_of(outcome: Outcome) -> Reply {
        super::reply(outcome)
    }

    #[test]
    fn a_poll_reads_the_status_then_the_file_and_charges_what_was_counted() {
        let state = r#"{"kind":"speech","task_id":"42","characters":7}"#;
        let run = Harness::<MiniMax>::new(poll(state))
            .run(|_| response(200, r#"{"task_id":42,"status":"Processing","base_resp":{"status_code":0}}"#));
        assert_eq!(run.requests[0].path, "/v1/query/t2a_async_query_v2?task_id=42");
        assert!(matches!(run.outcome, Outcome::Task(TaskState::Pending(_))));

        let run = Harness::<MiniMax>::new(poll(state)).run(|req| {
            if req.path.starts_with("/v1/query/") {
                response(200, r#"{"task_id":42,"status":"success","file_id":77,"base_resp":{"status_code":0}}"#)
            } else {
                assert_eq!(req.path, "/v1/files/retrieve?file_id=77");
                response(200, r#"{"file":{"file_id":77,"download_url":"https://cdn.example/a.tar"},"base_resp":{"status_code":0}}"#)
            }
        });
        let Outcome::Task(TaskState::Succeeded(done)) = run.outcome else { panic!("expected success") };
        assert_eq!(done.outputs[0].url, "https://cdn.example/a.tar");
        assert_eq!(done.usage.characters, Some(7));

        let video = r#"{"kind":"video","task_id":"9","unit":"768p-6s"}"#;
        let run = Harness::<MiniMax>::new(poll(video)).run(|_| {
            response(200, r#"{"task_id":"9","status":"Fail","base_resp":{"status_code":0,"status_msg":"success"}}"#)
        });
        assert_eq!(run.requests[0].path, "/v1/query/video_generation?task_id=9");
        let Outcome::Task(TaskState::Failed(e)) = run.outcome else { panic!("expected a failed job") };
        assert!(e.message.contains("fail"), "{}", e.message);

        // A refused key only fails this poll (the host retries it later); garbage is a fault.
        let run = Harness::<MiniMax>::new(poll(video)).run(|_| response(200, BAD_KEY));
        assert_eq!(failed(run.outcome).kind, ErrorKind::Unauthorized);
        let run = Harness::<MiniMax>::new(poll(video)).run(|_| response(200, "<html>"));
        assert_eq!(failed(run.outcome).kind, ErrorKind::UpstreamFault);
    }

    #[test]
    fn follow_ups_go_to_minimax_with_only_their_own_parameter_and_name_what_they_created() {
        let c = |op: &str, path: &str, query: &str| {
            let mut c = call(op, "", "");
            c.context.path = path.into();
            c.query = query.into();
            c
        };
        let run = Harness::<MiniMax>::new(c("minimax.query", "/v1/query/video_generation", "task_id=9&x=1&GroupId=g"))
            .run(|_| {
                response(200, r#"{"task_id":"9","status":"Success","file_id":"55","base_resp":{"status_code":0}}"#)
            });
        assert_eq!(run.requests[0].path, "/v1/query/video_generation?task_id=9&GroupId=g");
        assert_eq!(reply_of(run.outcome).objects, ["55"]);

        let run = Harness::<MiniMax>::new(c("minimax.file_content", "/v1/video/download", "file_id=55"))
            .run(|_| unreachable!());
        let Outcome::Relay(r) = run.outcome else { panic!("expected a relay") };
        assert_eq!(r.path, "/v1/files/retrieve_content?file_id=55");

        let e = refused(c("minimax.file", "/v1/files/retrieve", "other=1"));
        assert!(e.kind == ErrorKind::BadRequest && e.message.contains("file_id"), "{}", e.message);

        let mut upload = c("minimax.upload", "/v1/files/upload", "");
        upload.body = Body::Form(vec![
            FormPart {
                name: "purpose".into(),
                filename: None,
                content_type: None,
                value: PartValue::Text("t2a_async_input".into()),
            },
            FormPart {
                name: "file".into(),
                filename: Some("a.txt".into()),
                content_type: None,
                value: PartValue::ClientFile("file".into()),
            },
        ]);
        let run = Harness::<MiniMax>::new(upload).run(|_| {
            response(200, r#"{"file":{"file_id":31,"bytes":5},"base_resp":{"status_code":0,"status_msg":"success"}}"#)
        });
        assert!(matches!(&run.requests[0].body, Body::Form(p) if p.len() == 2));
        assert_eq!(reply_of(run.outcome).objects, ["31"]);
    }

    #[test]
    fn fields_minimax_might_read_in_another_case_are_refused_and_a_gone_file_is_still_charged() {
        for bad in [r#"{"prompt":"cat","Resolution":"1080P"}"#, r#"{"prompt":"cat","DURATION":10}"#] {
            let e = quote(job("minimax.video", "MiniMax-Hailuo-02", bad)).unwrap_err();
            assert_eq!(e.kind, ErrorKind::BadRequest, "{bad}");
        }
        let mut delete = call("minimax.file_delete", "", r#"{"File_Id":5}"#);
        delete.context.path = "/v1/files/delete".into();
        assert_eq!(refused(delete.clone()).kind, ErrorKind::BadRequest);
        delete.body = Body::Text(r#"{"purpose":"t2a_async_input"}"#.into());
        assert!(refused(delete).message.contains("file_id"));

        // The job finished and its file was deleted before the gateway took it: charged.
        let state = r#"{"kind":"speech","task_id":"42","characters":7}"#;
        let run = Harness::<MiniMax>::new(poll(state)).run(|req| {
            if req.path.starts_with("/v1/query/") {
                response(200, r#"{"task_id":42,"status":"Success","file_id":77,"base_resp":{"status_code":0}}"#)
            } else {
                response(200, r#"{"base_resp":{"status_code":2013,"status_msg":"invalid params, file not found"}}"#)
            }
        });
        let Outcome::Task(TaskState::Succeeded(done)) = run.outcome else { panic!("expected a charged success") };
        assert_eq!((done.outputs.len(), done.usage.characters), (0, Some(7)));
        // A transient failure of the same read is asked again at the next poll.
        let run = Harness::<MiniMax>::new(poll(state)).run(|req| {
            if req.path.starts_with("/v1/query/") {
                response(200, r#"{"task_id":42,"status":"Success","file_id":77,"base_resp":{"status_code":0}}"#)
            } else {
                response(200, r#"{"base_resp":{"status_code":1002,"status_msg":"rate limit"}}"#)
            }
        });
        assert_eq!(failed(run.outcome).kind, ErrorKind::RateLimited);
    }
}

#[test]
fn the_conformance_battery() {
    use tollgate_plugin_sdk::conformance::{answer, run, Vendor};
    let base = |code: i64, msg: &str| {
        answer(200, json!({ "base_resp": { "status_code": code, "status_msg": msg } }).to_string())
    };
    let spoken = |n, ms| Usage { characters: Some(n), milliseconds: Some(ms), ..Usage::default() };
    run::<MiniMax>(Vendor {
        whole: (native(r#"{"model":"speech-2.8-hd","text":"hi"}"#), answer(200, OK), spoken(4, 1234)),
        whole_without_usage: Some(answer(
            200,
            OK.replace(r#""extra_info":{"audio_length":1234,"usage_characters":4},"#, ""),
        )),
        stream: Some((native(HI_STREAM), sse(&EVENTS, "\r\n").into_bytes(), spoken(26, 900))),
        // MiniMax answers most failures with HTTP 200 and a base_resp code.
        failures: vec![
            (base(1004, "login fail"), ErrorKind::Unauthorized),
            (base(1008, "insufficient balance"), ErrorKind::InsufficientBalance),
            (base(1002, "rpm limit"), ErrorKind::RateLimited),
            (base(2013, "invalid params"), ErrorKind::BadRequest),
            (base(1000, "unknown"), ErrorKind::UpstreamFault),
            (answer(502, "<html>Bad Gateway</html>"), ErrorKind::UpstreamFault),
        ],
    });
}
