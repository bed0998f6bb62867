use super::*;
use tollgate_plugin_sdk::testing::{call, response, Harness, Outcome};

const MODEL: &str = "doubao-seedance-1-0-pro-250528";

fn video(json: &str) -> Call {
    call("video", MODEL, json)
}

#[test]
fn a_prompt_may_use_dashes_but_not_set_parameters() {
    assert_eq!(prompt_flag("a cat -- running --dur 5"), Some("--dur"));
    assert_eq!(prompt_flag("a cat — running - fast -- 5"), None);
}

#[test]
fn the_quote_bounds_what_ark_counts_for_every_ratio() {
    // Ark's own figure for a 1080p 16:9 five-second video: 1920 × 1088 × 121 / 1024.
    assert!(token_bound(1080, 5) >= 246_840);
    for (short, long) in [(480, 1120), (720, 1680), (1080, 2520)] {
        for seconds in [2, 5, 12] {
            let actual = (long * short * (24 * seconds + 1)) / 1024;
            assert!(token_bound(short, seconds) >= actual, "{short}p {seconds}s");
        }
    }
    let mut ex = ArkExchange::new(video(r#"{"prompt":"a","size":"1280x720","seconds":"8"}"#));
    assert_eq!(ex.quote().unwrap().output_tokens, Some(token_bound(720, 8)));
}

#[test]
fn an_openai_request_becomes_a_seedance_task() {
    let run = Harness::<Ark>::new(video(
        r#"{"model":"x","prompt":"a cat","size":"720x1280","seconds":"10","image":"https://img/a.png","seed":3}"#,
    ))
    .run(|_| response(200, r#"{"id":"cgt-2025-1"}"#));
    let req = &run.requests[0];
    assert_eq!((req.method.as_str(), req.path.as_str()), ("POST", "/contents/generations/tasks"));
    let sent: Value = serde_json::from_str(&tollgate_plugin_sdk::testing::body_text(req)).unwrap();
    assert_eq!(
        sent,
        json!({ "model": MODEL, "resolution": "720p", "ratio": "9:16", "duration": 10, "seed": 3, "content": [
            { "type": "text", "text": "a cat" },
            { "type": "image_url", "image_url": { "url": "https://img/a.png" }, "role": "first_frame" } ] })
    );
    assert!(matches!(req.auth, tollgate_plugin_sdk::Auth::Bearer));
    assert!(matches!(run.outcome, Outcome::Submitted(ref s) if s.state == "cgt-2025-1"));
}

#[test]
fn what_would_change_the_price_or_cannot_be_rendered_is_refused_before_ark() {
    for bad in [
        r#"{"prompt":"a","generate_audio":true}"#,
        r#"{"prompt":"a","service_tier":"flex"}"#,
        r#"{"prompt":"a","seconds":"30"}"#,
        r#"{"prompt":"a","size":"4096x2160"}"#,
        r#"{"prompt":"a","size":"1000x720"}"#,
        r#"{"prompt":" "}"#,
        r#"{"prompt":"a cat --dur 12","seconds":"2"}"#,
        r#"{"prompt":"a cat --rs 1080p"}"#,
        r#"{"prompt":"a","seconds":"5","duration":"10"}"#,
        r#"{"prompt":"a","size":"480p","resolution":"1080p"}"#,
    ] {
        let run = Harness::<Ark>::new(video(bad)).run(|_| panic!("nothing is sent"));
        assert!(matches!(run.outcome, Outcome::Failed(ref e) if e.kind == ErrorKind::BadRequest), "{bad}");
    }
    for (status, body, kind) in [
        (
            401,
            r#"{"error":{"code":"AuthenticationError","message":"bad key","type":"Unauthorized"}}"#,
            ErrorKind::Unauthorized,
        ),
        (
            403,
            r#"{"error":{"code":"AccountOverdueError","message":"overdue","type":"Forbidden"}}"#,
            ErrorKind::InsufficientBalance,
        ),
        (
            400,
            r#"{"error":{"code":"InputTextRiskDetection","message":"risky","type":"BadRequest"}}"#,
            ErrorKind::ContentFiltered,
        ),
        (
            429,
            r#"{"error":{"code":"RateLimitExceeded.EndpointRPMExceeded","message":"slow down"}}"#,
            ErrorKind::RateLimited,
        ),
        (500, "oops", ErrorKind::UpstreamFault),
    ] {
        let run = Harness::<Ark>::new(video(r#"{"prompt":"a"}"#)).run(|_| response(status, body));
        assert!(matches!(run.outcome, Outcome::Failed(ref e) if e.kind == kind), "{status} {body}");
    }
}

#[test]
fn a_poll_follows_the_task_and_a_cancel_deletes_it() {
    let run_op = |op: &str, answer: &'static str| {
        let mut c = call(op, MODEL, "");
        c.task = Some("cgt-2025-1".into());
        Harness::<Ark>::new(c).run(move |_| response(200, answer))
    };
    let run = run_op("task.poll", r#"{"id":"cgt-2025-1","status":"running"}"#);
    assert_eq!(
        (run.requests[0].method.as_str(), run.requests[0].path.as_str()),
        ("GET", "/contents/generations/tasks/cgt-2025-1")
    );
    assert!(matches!(run.outcome, Outcome::Task(TaskState::Pending(_))));
    match run_op("task.poll", r#"{"id":"cgt-2025-1","status":"succeeded","content":{"video_url":"https://ark.volces.com/v.mp4"},"usage":{"completion_tokens":108900}}"#).outcome {
        Outcome::Task(TaskState::Succeeded(d)) => {
            assert_eq!((d.outputs[0].url.as_str(), d.usage.output_tokens), ("https://ark.volces.com/v.mp4", Some(108_900)));
        }
        o => panic!("{o:?}"),
    }
    assert!(
        matches!(run_op("task.poll", r#"{"status":"failed","error":{"code":"OutputVideoSensitiveContentDetected","message":"sensitive"}}"#).outcome,
        Outcome::Task(TaskState::Failed(ref e)) if e.kind == ErrorKind::ContentFiltered)
    );
    assert!(matches!(run_op("task.poll", r#"{"status":"expired"}"#).outcome, Outcome::Task(TaskState::Failed(_))));
    assert!(matches!(run_op("task.poll", "garbage").outcome, Outcome::Failed(_)));
    let run = run_op("task.cancel", "{}");
    assert_eq!(run.requests[0].method, "DELETE");
    assert!(matches!(run.outcome, Outcome::Reply(_)));
    let mut c = call("task.poll", MODEL, "");
    c.task = Some("../x".into());
    assert!(matches!(Harness::<Ark>::new(c).run(|_| panic!("nothing is sent")).outcome, Outcome::Failed(_)));
}
