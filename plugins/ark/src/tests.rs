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

#[test]
fn doubao_chat_streams_with_its_reasoning_and_cache() {
    let stream = "data: {\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"reasoning_content\":\"Hmm\"}}]}\n\n\
        data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hi\"},\"finish_reason\":\"stop\"}]}\n\n\
        data: {\"choices\":[],\"usage\":{\"prompt_tokens\":9,\"completion_tokens\":5,\"prompt_tokens_details\":{\"cached_tokens\":4},\"completion_tokens_details\":{\"reasoning_tokens\":3}}}\n\n\
        data: [DONE]\n\n";
    let c = call("chat", "doubao-seed-1-6", r#"{"model":"doubao-seed-1-6","stream":true,"messages":[]}"#);
    let run = Harness::<Ark>::new(c).run(|_| response(200, stream));
    assert_eq!(run.requests[0].path, "/chat/completions");
    let Outcome::Stream { chunks, tail } = run.outcome else { panic!("a stream") };
    assert!(tollgate_plugin_sdk::testing::event_data(&chunks)[0].contains("reasoning_content"));
    assert_eq!(
        (tail.usage.input_tokens, tail.usage.cached_tokens, tail.usage.output_tokens),
        (Some(9), Some(4), Some(5))
    );
}

#[test]
fn seedream_reserves_every_image_a_series_may_make() {
    let quote = |body: &str| ArkExchange::new(call("images", "doubao-seedream-4-0", body)).quote();
    assert_eq!(quote(r#"{"prompt":"a cat"}"#).unwrap().images, Some(1));
    assert_eq!(quote(r#"{"prompt":"a cat","sequential_image_generation":"auto"}"#).unwrap().images, Some(15));
    let series =
        r#"{"prompt":"a","sequential_image_generation":"auto","sequential_image_generation_options":{"max_images":4}}"#;
    assert_eq!(quote(series).unwrap().images, Some(4));
    assert!(quote(r#"{"prompt":"a","n":99}"#).is_err());
    assert!(quote(r#"{"prompt":"a","sequential_image_generation":"auto","sequential_image_generation_options":{"max_images":"4"}}"#).is_err());
    // The body goes as it came: a field that prices it, spelled otherwise, is refused.
    for smuggled in [
        r#"{"prompt":"a","sequential_image_generation":"disabled","Sequential_Image_Generation":"auto"}"#,
        r#"{"prompt":"a","sequential_image_generation":"auto","sequential_image_generation_options":{"max_images":1,"Max_Images":15}}"#,
        r#"{"prompt":"a","n":1,"N":15}"#,
    ] {
        assert!(quote(smuggled).is_err(), "{smuggled}");
    }
    let run = Harness::<Ark>::new(call("images", "doubao-seedream-4-0", series)).run(|_| {
        response(200, r#"{"model":"m","created":1,"data":[{"url":"https://x/1.png"},{"url":"https://x/2.png"}],"usage":{"generated_images":2,"output_tokens":8192}}"#)
    });
    assert_eq!(run.requests[0].path, "/images/generations");
    assert!(matches!(run.outcome, Outcome::Reply(r) if r.usage.images == Some(2)));
    // A series lists a failed image too: Ark's count is charged.
    let run = Harness::<Ark>::new(call("images", "doubao-seedream-4-0", series)).run(|_| {
        response(200, r#"{"data":[{"url":"https://x/1.png"},{"error":{"code":"OutputImageSensitiveContentDetected"}}],"usage":{"generated_images":1}}"#)
    });
    assert!(matches!(run.outcome, Outcome::Reply(r) if r.usage.images == Some(1)));
    assert_eq!(
        quote(r#"{"prompt":"a","sequential_image_generation":"AUTO"}"#).unwrap().images,
        Some(15),
        "fails closed"
    );
}

#[test]
fn the_conformance_battery() {
    use tollgate_plugin_sdk::conformance::{answer, run, Vendor};
    let error = |status: u16, code: &str| {
        answer(status, json!({ "error": { "code": code, "message": "m", "type": "BadRequest" } }).to_string())
    };
    let whole =
        r#"{"choices":[{"index":0,"message":{"content":"Hi"}}],"usage":{"prompt_tokens":9,"completion_tokens":2}}"#;
    let stream = "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hi\"}}]}\n\ndata: {\"choices\":[],\"usage\":{\"prompt_tokens\":9,\"completion_tokens\":2}}\n\ndata: [DONE]\n\n";
    let usage = Usage { input_tokens: Some(9), output_tokens: Some(2), ..Usage::default() };
    run::<Ark>(Vendor {
        whole: (call("chat", "doubao", r#"{"model":"doubao","messages":[]}"#), answer(200, whole), usage.clone()),
        whole_without_usage: Some(answer(200, r#"{"choices":[{"index":0,"message":{"content":"Hi"}}]}"#)),
        stream: Some((call("chat", "doubao", r#"{"stream":true,"messages":[]}"#), stream.as_bytes().to_vec(), usage)),
        failures: vec![
            (error(401, "AuthenticationError"), ErrorKind::Unauthorized),
            (error(403, "AccountOverdueError"), ErrorKind::InsufficientBalance),
            (error(400, "InputTextRiskDetection"), ErrorKind::ContentFiltered),
            (error(404, "InvalidEndpointOrModel.NotFound"), ErrorKind::NotFound),
            (error(429, "RateLimitExceeded.EndpointRPMExceeded"), ErrorKind::RateLimited),
            (error(500, "InternalServiceError"), ErrorKind::UpstreamFault),
            (error(400, "InvalidParameter"), ErrorKind::BadRequest),
        ],
    });
}
