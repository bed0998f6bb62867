use super::*;
use tollgate_plugin_sdk::testing::{call, response, Harness, Outcome};
use tollgate_plugin_sdk::Plugin as _;

const SETTINGS: &str = r#"{"app_key":"s#c_120*AB","bots":{"sora-2-free":153}}"#;

fn video_call(json: &str) -> Call {
    let mut c = call("video", "sora-2-free", json);
    c.config = SETTINGS.into();
    c
}

#[test]
fn settings_need_an_app_key_and_numeric_bots() {
    assert!(MindVideo::check_settings(SETTINGS).is_ok());
    for bad in ["{}", r#"{"app_key":"k"}"#, r#"{"app_key":"k","bots":{"m":"153"}}"#, "nope"] {
        assert!(MindVideo::check_settings(bad).is_err(), "{bad}");
    }
}

#[test]
fn the_sign_is_the_md5_of_nonce_timestamp_and_app_key() {
    let v: Value = serde_json::from_str(&i_sign("0123456789abcdef", 1_700_000_000_000, "s#c_120*AB")).unwrap();
    let expected = hex::encode(md5::Md5::digest("nonce=0123456789abcdef&timestamp=1700000000000&app_key=s#c_120*AB"));
    assert_eq!((v["nonce"].as_str(), v["timestamp"].as_u64()), (Some("0123456789abcdef"), Some(1_700_000_000_000)));
    assert_eq!(v["sign"].as_str(), Some(expected.as_str()));
    assert_eq!(expected.len(), 32);
}

#[test]
fn a_video_is_submitted_signed_with_its_bot_and_polled_to_its_url() {
    let run = Harness::<MindVideo>::new(video_call(
        r#"{"model":"sora-2-free","prompt":"a cat","seconds":"10","size":"1280x720"}"#,
    ))
    .run(|_| response(200, r#"{"code":0,"data":{"id":4242}}"#));
    let req = &run.requests[0];
    assert_eq!((req.method.as_str(), req.path.as_str()), ("POST", "/creations"));
    assert!(matches!(req.auth, tollgate_plugin_sdk::Auth::Bearer), "the account's token, inserted by the host");
    let sent: Value = serde_json::from_str(&tollgate_plugin_sdk::testing::body_text(req)).unwrap();
    assert_eq!(sent["bot_id"], 153);
    assert_eq!(sent["options"], json!({ "prompt": "a cat", "size": "1280x720", "seconds": 10, "history_images": [] }));
    let sign: Value = serde_json::from_str(tollgate_plugin_sdk::header(&req.headers, "i-sign").unwrap()).unwrap();
    let nonce = sign["nonce"].as_str().unwrap();
    assert!(nonce.len() == 16 && nonce.chars().all(|c| c.is_ascii_hexdigit()), "{nonce}");
    let again: Value = serde_json::from_str(&i_sign(nonce, sign["timestamp"].as_u64().unwrap(), "s#c_120*AB")).unwrap();
    assert_eq!(sign["sign"], again["sign"]);
    assert!(tollgate_plugin_sdk::header(&req.headers, "i-lang").is_some());
    let state = match run.outcome {
        Outcome::Submitted(s) => s.state,
        o => panic!("{o:?}"),
    };

    let poll = |answer: &'static str| {
        let mut c = call("task.poll", "sora-2-free", "");
        c.config = SETTINGS.into();
        c.task = Some(state.clone());
        Harness::<MindVideo>::new(c).run(move |_| response(200, answer))
    };
    let run = poll(
        r#"{"code":0,"data":[{"task_status":"processing","task_progress":40,"task_remark":"rendering","results":[]}]}"#,
    );
    assert_eq!(run.requests[0].path, "/creations/task_progress?ids[]=4242");
    assert!(
        matches!(run.outcome, Outcome::Task(TaskState::Pending(ref p)) if p.percent == Some(40) && p.message.as_deref() == Some("rendering"))
    );
    match poll(r#"{"code":0,"data":[{"task_status":"processing","task_progress":100,"results":[{"result_url":"https://cdn.mindvideo.ai/v.mp4"}]}]}"#).outcome {
        Outcome::Task(TaskState::Succeeded(d)) => {
            assert_eq!(d.outputs[0].url, "https://cdn.mindvideo.ai/v.mp4");
            assert_eq!((d.usage.milliseconds, d.usage.extra), (Some(10_000), vec![("10s".to_string(), 1)]));
        }
        o => panic!("{o:?}"),
    }
    assert!(
        matches!(poll(r#"{"code":0,"data":[{"task_status":"failed","task_progress":0,"task_remark":"prompt rejected"}]}"#).outcome,
        Outcome::Task(TaskState::Failed(ref e)) if e.message.contains("prompt rejected"))
    );
    assert!(matches!(poll(r#"{"code":0,"data":[]}"#).outcome, Outcome::Failed(_)));
    assert!(matches!(poll("<html>").outcome, Outcome::Failed(_)));
}

#[test]
fn refusals_are_classified_and_what_cannot_be_made_is_refused_before_it() {
    for (status, body, kind) in [
        (200, r#"{"code":1001,"message":"Insufficient credits"}"#, ErrorKind::InsufficientBalance),
        (200, r#"{"code":401,"message":"Please login first"}"#, ErrorKind::Unauthorized),
        (200, r#"{"code":1002,"message":"prompt too long"}"#, ErrorKind::BadRequest),
        (401, r#"{"code":401,"message":"Unauthorized"}"#, ErrorKind::Unauthorized),
        (502, "bad gateway", ErrorKind::UpstreamFault),
    ] {
        let run = Harness::<MindVideo>::new(video_call(r#"{"prompt":"a"}"#)).run(|_| response(status, body));
        assert!(matches!(run.outcome, Outcome::Failed(ref e) if e.kind == kind), "{status} {body}");
    }
    for bad in [
        r#"{"prompt":""}"#,
        r#"{"prompt":"a","seconds":"600"}"#,
        r#"{"prompt":"a","size":"huge"}"#,
        r#"{"prompt":"a","size":"3840x2160"}"#,
    ] {
        let run = Harness::<MindVideo>::new(video_call(bad)).run(|_| panic!("nothing is sent"));
        assert!(matches!(run.outcome, Outcome::Failed(ref e) if e.kind == ErrorKind::BadRequest), "{bad}");
    }
    let mut c = video_call(r#"{"prompt":"a"}"#);
    c.model = "unknown-model".into();
    c.upstream_model = "unknown-model".into();
    assert!(matches!(Harness::<MindVideo>::new(c).run(|_| panic!("nothing is sent")).outcome, Outcome::Failed(_)));
}
