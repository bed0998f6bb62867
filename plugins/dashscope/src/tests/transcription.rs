//! OpenAI's transcriptions on qwen3-asr-flash (`transcription.rs`).

use super::*;
use crate::transcription::{self as asr_flash, PLACEHOLDER};
use tollgate_plugin_sdk::testing::{call, response, Harness, Outcome};
use tollgate_plugin_sdk::{Body, FormPart, PartValue};

fn text(name: &str, value: &str) -> FormPart {
    FormPart { name: name.into(), filename: None, content_type: None, value: PartValue::Text(value.into()) }
}

fn file(name: &str) -> FormPart {
    FormPart {
        name: name.into(),
        filename: Some("a.wav".into()),
        content_type: Some("audio/wav".into()),
        value: PartValue::ClientFile(name.into()),
    }
}

/// A transcription form: the audio as `file`, the model, and `fields`.
fn form(fields: &[(&str, &str)]) -> Call {
    let mut c = call(asr_flash::OP, "qwen3-asr-flash", "");
    c.upstream_model = "qwen3-asr-flash-2025-09-08".into();
    let mut parts = vec![text("model", "qwen3-asr-flash"), file("file")];
    parts.extend(fields.iter().map(|(n, v)| text(n, v)));
    c.body = Body::Form(parts);
    c
}

/// The JSON DashScope is sent, with `audio` where the host writes the file; and the field named.
fn sent(req: &UpstreamRequest, audio: &str) -> (Value, String) {
    let Body::TextWithFiles(t) = &req.body else { panic!("the file is written in by the host: {:?}", req.body) };
    assert_eq!(t.files.len(), 1);
    assert_eq!(t.text.matches(PLACEHOLDER).count(), 1, "{}", t.text);
    let json = serde_json::from_str(&t.text.replace(PLACEHOLDER, audio)).expect("JSON once the file is in");
    (json, t.files[0].1.clone())
}

const HEARD: &str = r#"{"request_id":"r","output":{"choices":[{"finish_reason":"stop","message":{"annotations":[{"language":"en","type":"audio_info","emotion":"neutral"}],"content":[{"text":"Welcome "},{"text":"to Qwen."}],"role":"assistant"}}]},"usage":{"input_tokens_details":{"text_tokens":0},"output_tokens_details":{"text_tokens":6},"seconds":3.2}}"#;

fn reply(run: tollgate_plugin_sdk::testing::Run) -> Reply {
    match run.outcome {
        Outcome::Reply(r) => r,
        o => panic!("expected a reply: {o:?}"),
    }
}

#[test]
fn a_form_becomes_dashscopes_multimodal_request_with_the_file_written_in_by_the_host() {
    let m = <DashScope as tollgate_plugin_sdk::Plugin>::describe();
    assert!(m.operations.iter().any(|o| o.name == "transcription" && o.quoted && !o.resend));
    let c = form(&[("language", "en"), ("prompt", "Qwen, DashScope"), ("response_format", "json")]);
    let q = DashScopeExchange::new(c.clone()).quote().unwrap();
    assert_eq!(q.milliseconds, Some(300_000), "the longest audio qwen3-asr-flash hears");
    let run = Harness::<DashScope>::new(c).run(|_| response(200, HEARD));
    let req = &run.requests[0];
    assert_eq!((req.method.as_str(), req.path.as_str()), ("POST", chat::MULTIMODAL_PATH));
    assert_eq!(tollgate_plugin_sdk::header(&req.headers, "content-type"), Some("application/json"));
    let (body, field) = sent(req, "data:audio/wav;base64,UklGRg==");
    assert_eq!(field, "file");
    assert_eq!(
        body,
        json!({ "model": "qwen3-asr-flash-2025-09-08",
            "input": { "messages": [
                { "role": "system", "content": [{ "text": "Qwen, DashScope" }] },
                { "role": "user", "content": [{ "audio": "data:audio/wav;base64,UklGRg==" }] }] },
            "parameters": { "asr_options": { "language": "en", "enable_itn": false } } })
    );
    let r = reply(run);
    assert_eq!(r.usage.milliseconds, Some(3_200));
    let out: Value = serde_json::from_slice(r.body.as_bytes().unwrap()).unwrap();
    assert_eq!(out, json!({ "text": "Welcome to Qwen.", "usage": { "type": "duration", "seconds": 3.2 } }));

    // Only the audio when nothing else is asked; no language, DashScope detects it.
    let run =
        Harness::<DashScope>::new(form(&[("temperature", "0"), ("stream", "false")])).run(|_| response(200, HEARD));
    let (body, _) = sent(&run.requests[0], "data:audio/wav;base64,AA==");
    assert_eq!(body["input"]["messages"].as_array().map(Vec::len), Some(1));
    assert_eq!(body["parameters"], json!({ "asr_options": { "enable_itn": false } }));
}

#[test]
fn the_placeholder_cannot_be_spelled_by_the_consumer() {
    // The placeholder's own text in a prompt is escaped: the file is still written in once.
    let c = form(&[("prompt", PLACEHOLDER), ("language", "zh")]);
    let run = Harness::<DashScope>::new(c).run(|_| response(200, HEARD));
    let (body, _) = sent(&run.requests[0], "data:audio/wav;base64,AA==");
    assert_eq!(body["input"]["messages"][0]["content"][0]["text"], PLACEHOLDER);
    assert_eq!(body["input"]["messages"][1]["content"][0]["audio"], "data:audio/wav;base64,AA==");
}

#[test]
fn text_and_verbose_json_are_rebuilt_and_every_one_is_charged_the_seconds_heard() {
    let r = reply(Harness::<DashScope>::new(form(&[("response_format", "text")])).run(|_| response(200, HEARD)));
    assert_eq!(tollgate_plugin_sdk::header(&r.headers, "content-type"), Some("text/plain; charset=utf-8"));
    assert_eq!((r.body.as_bytes().unwrap(), r.usage.milliseconds), (&b"Welcome to Qwen.\n"[..], Some(3_200)));
    let r =
        reply(Harness::<DashScope>::new(form(&[("response_format", "verbose_json")])).run(|_| response(200, HEARD)));
    let out: Value = serde_json::from_slice(r.body.as_bytes().unwrap()).unwrap();
    assert_eq!(
        (out["task"].as_str(), out["language"].as_str(), out["duration"].as_f64(), out["text"].as_str()),
        (Some("transcribe"), Some("en"), Some(3.2), Some("Welcome to Qwen."))
    );
    // Seconds beyond the hold are absurd: charged the hold at most. None: the host bills it.
    let r = reply(
        Harness::<DashScope>::new(form(&[]))
            .run(|_| response(200, r#"{"output":{"choices":[{"message":{"content":[]}}]},"usage":{"seconds":1e9}}"#)),
    );
    assert_eq!(r.usage.milliseconds, Some(300_000));
    let r = reply(
        Harness::<DashScope>::new(form(&[]))
            .run(|_| response(200, r#"{"output":{"choices":[{"message":{"content":[{"text":"hi"}]}}]}}"#)),
    );
    assert_eq!(r.usage.milliseconds, None);
    let run = Harness::<DashScope>::new(form(&[])).run(|_| response(200, r#"{"output":{}}"#));
    assert!(matches!(run.outcome, Outcome::Failed(ref e) if e.kind == ErrorKind::UpstreamFault));
}

#[test]
fn what_dashscope_would_not_read_is_refused_naming_it_and_nothing_is_sent() {
    let refused = |c: Call, needle: &str| {
        let e = DashScopeExchange::new(c.clone()).quote().expect_err("refused at the quote");
        assert!(e.kind == ErrorKind::BadRequest && e.message.contains(needle), "{needle}: {}", e.message);
        let run = Harness::<DashScope>::new(c).run(|_| panic!("nothing is sent"));
        assert!(matches!(run.outcome, Outcome::Failed(ref e) if e.kind == ErrorKind::BadRequest), "{needle}");
    };
    refused(form(&[("timestamp_granularities[]", "word")]), "'timestamp_granularities[]'");
    refused(form(&[("chunking_strategy", "auto")]), "'chunking_strategy'");
    refused(form(&[("response_format", "srt")]), "srt");
    refused(form(&[("response_format", "vtt")]), "no timings");
    refused(form(&[("response_format", "xml")]), "xml");
    refused(form(&[("temperature", "0.4")]), "temperature");
    refused(form(&[("stream", "true")]), "stream");
    refused(form(&[("language", "en\",\"x")]), "language code");
    let mut c = form(&[]);
    c.body = Body::Form(vec![text("model", "qwen3-asr-flash")]);
    refused(c.clone(), "'file'");
    c.body = Body::Form(vec![text("model", "qwen3-asr-flash"), text("file", "https://x/a.wav")]);
    refused(c.clone(), "'file'");
    c.body = Body::Form(vec![text("model", "m"), file("audio")]);
    refused(c.clone(), "'audio'");
    c.body = Body::Form(vec![text("model", "m"), file("file"), file("file")]);
    refused(c.clone(), "one 'file'");
    refused(call(asr_flash::OP, "qwen3-asr-flash", r#"{"model":"qwen3-asr-flash","file":"x"}"#), "multipart");
}

#[test]
fn dashscopes_refusals_are_classified() {
    for (status, body, kind) in [
        (
            401,
            r#"{"request_id":"r","code":"InvalidApiKey","message":"Invalid API-key provided."}"#,
            ErrorKind::Unauthorized,
        ),
        (400, r#"{"request_id":"r","code":"Arrearage","message":"Access denied."}"#, ErrorKind::InsufficientBalance),
        (429, r#"{"request_id":"r","code":"Throttling.RateQuota","message":"slow down"}"#, ErrorKind::RateLimited),
        (
            400,
            r#"{"request_id":"r","code":"InvalidParameter","message":"The audio is too long."}"#,
            ErrorKind::BadRequest,
        ),
        (500, r#"{"request_id":"r","code":"InternalError","message":"m"}"#, ErrorKind::UpstreamFault),
    ] {
        let run = Harness::<DashScope>::new(form(&[])).run(|_| response(status, body));
        let Outcome::Failed(e) = run.outcome else { panic!("{body}") };
        assert_eq!(e.kind, kind, "{body}");
        assert!(e.message.starts_with("DashScope: ") && e.code.is_some(), "{e:?}");
    }
}
