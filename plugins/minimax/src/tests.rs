//! The MiniMax plugin's behaviour, driven natively by the SDK's harness.

use super::*;
use serde_json::json;
use tollgate_plugin_sdk::testing::{body_text, call, event_data, response, Harness, Outcome, Run};
use tollgate_plugin_sdk::{Auth, Framing, Header};

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
    assert_eq!((m.name.as_str(), ops), ("minimax", vec!["speech", "minimax.t2a"]));
    assert!(m.operations.iter().all(|o| !o.resend), "speech costs: never resent after it may have reached MiniMax");
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
    let c = Call { query: "GroupId=42&other=x".into(), ..native(body) };
    let same = run(c, response(200, OK));
    assert_eq!(body_text(&same.requests[0]), body, "same model: bytes unchanged");
    assert_eq!(same.requests[0].path, "/v1/t2a_v2?GroupId=42");
    let r = reply(same.outcome);
    assert_eq!((r.status, bytes(&r.body)), (200, OK.as_bytes()));
    assert_eq!((r.usage.characters, r.error.is_none()), (Some(4), true));
    assert_eq!(header(&r.headers, "content-type"), Some("application/json"));

    let c = Call { upstream_model: "speech-02-turbo".into(), ..native(body) };
    let mapped = run(c, response(200, OK));
    let want = json!({"model": "speech-02-turbo", "text": "hi", "voice_setting": {"voice_id": "v"}});
    assert_eq!((sent(&mapped), mapped.requests[0].path.as_str()), (want, T2A_PATH));
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
