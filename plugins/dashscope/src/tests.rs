use super::*;
use tollgate_plugin_sdk::testing::{call, response, Harness, Outcome};

fn video(json: &str) -> Call {
    call("video", "wan2.2-t2v-plus", json)
}

#[test]
fn an_openai_request_becomes_an_async_video_synthesis() {
    let body = r#"{"model":"x","prompt":"a cat","size":"1280x720","seconds":"5","negative_prompt":"blur","image":"https://img/a.png","seed":"9"}"#;
    let mut ex = DashScopeExchange::new(video(body));
    assert_eq!(ex.quote().unwrap().extra, vec![("720p".to_string(), 5)]);
    for (size, tier) in
        [(None, "1080p"), (Some("832x480"), "480p"), (Some("1088x832"), "720p"), (Some("1920x1080"), "1080p")]
    {
        let body = match size {
            Some(s) => format!(r#"{{"prompt":"a","size":"{s}","seconds":"4"}}"#),
            None => r#"{"prompt":"a","seconds":"4"}"#.to_string(),
        };
        assert_eq!(DashScopeExchange::new(video(&body)).quote().unwrap().extra, vec![(tier.to_string(), 4)], "{body}");
    }
    let run = Harness::<DashScope>::new(video(body))
        .run(|_| response(200, r#"{"output":{"task_status":"PENDING","task_id":"0385dc79-5ff8"},"request_id":"r"}"#));
    let req = &run.requests[0];
    assert_eq!(req.path, "/api/v1/services/aigc/video-generation/video-synthesis");
    assert_eq!(tollgate_plugin_sdk::header(&req.headers, "x-dashscope-async"), Some("enable"));
    let sent: Value = serde_json::from_str(&tollgate_plugin_sdk::testing::body_text(req)).unwrap();
    assert_eq!(
        sent,
        json!({ "model": "wan2.2-t2v-plus",
            "input": { "prompt": "a cat", "negative_prompt": "blur", "img_url": "https://img/a.png" },
            "parameters": { "duration": 5, "size": "1280*720", "seed": 9 } })
    );
    assert!(matches!(run.outcome, Outcome::Submitted(ref s) if s.state == r#"{"id":"0385dc79-5ff8","tier":"720p"}"#));
}

#[test]
fn what_would_change_the_price_or_is_malformed_is_refused_and_errors_are_classified() {
    for bad in [
        r#"{"prompt":"a","audio":true}"#,
        r#"{"prompt":"a","seconds":"60"}"#,
        r#"{"prompt":"a","size":"big"}"#,
        r#"{"prompt":"a","size":"3840x2160"}"#,
        r#"{"prompt":"a","resolution":"480P"}"#,
        r#"{"prompt":"a","seconds":"5","duration":"10"}"#,
        r#"{"prompt":"a","seed":"x"}"#,
        r#"{"prompt":""}"#,
    ] {
        let run = Harness::<DashScope>::new(video(bad)).run(|_| panic!("nothing is sent"));
        assert!(matches!(run.outcome, Outcome::Failed(ref e) if e.kind == ErrorKind::BadRequest), "{bad}");
    }
    for (status, body, kind) in [
        (
            401,
            r#"{"code":"InvalidApiKey","message":"Invalid API-key provided.","request_id":"r"}"#,
            ErrorKind::Unauthorized,
        ),
        (
            400,
            r#"{"code":"Arrearage","message":"Access denied, please make sure your account is in good standing."}"#,
            ErrorKind::InsufficientBalance,
        ),
        (429, r#"{"code":"Throttling.RateQuota","message":"Requests rate limit exceeded"}"#, ErrorKind::RateLimited),
        (
            400,
            r#"{"code":"DataInspectionFailed","message":"Input data may contain inappropriate content."}"#,
            ErrorKind::ContentFiltered,
        ),
        (500, "oops", ErrorKind::UpstreamFault),
    ] {
        let run = Harness::<DashScope>::new(video(r#"{"prompt":"a"}"#)).run(|_| response(status, body));
        assert!(matches!(run.outcome, Outcome::Failed(ref e) if e.kind == kind), "{status} {body}");
    }
}

#[test]
fn a_poll_follows_the_task_to_its_seconds_and_a_cancel_is_posted() {
    let run_op = |op: &str, answer: &'static str| {
        let mut c = call(op, "wan2.2-t2v-plus", "");
        c.task = Some(r#"{"id":"0385dc79-5ff8","tier":"720p"}"#.into());
        Harness::<DashScope>::new(c).run(move |_| response(200, answer))
    };
    let run = run_op("task.poll", r#"{"output":{"task_id":"0385dc79-5ff8","task_status":"RUNNING"}}"#);
    assert_eq!(run.requests[0].path, "/api/v1/tasks/0385dc79-5ff8");
    assert!(matches!(run.outcome, Outcome::Task(TaskState::Pending(_))));
    match run_op("task.poll", r#"{"output":{"task_status":"SUCCEEDED","video_url":"https://dashscope-result.oss-cn-beijing.aliyuncs.com/v.mp4"},"usage":{"duration":5,"video_count":1}}"#).outcome {
        Outcome::Task(TaskState::Succeeded(d)) => assert_eq!(d.usage.extra, vec![("720p".to_string(), 5)]),
        o => panic!("{o:?}"),
    }
    match run_op("task.poll", r#"{"output":{"task_status":"SUCCEEDED","video_url":"https://x.aliyuncs.com/v.mp4"},"usage":{"video_duration":4.5}}"#).outcome {
        Outcome::Task(TaskState::Succeeded(d)) => assert_eq!(d.usage.extra, vec![("720p".to_string(), 5)], "a started second is whole"),
        o => panic!("{o:?}"),
    }
    assert!(
        matches!(run_op("task.poll", r#"{"output":{"task_status":"FAILED","code":"DataInspectionFailed","message":"inappropriate"}}"#).outcome,
        Outcome::Task(TaskState::Failed(ref e)) if e.kind == ErrorKind::ContentFiltered)
    );
    assert!(matches!(run_op("task.poll", "garbage").outcome, Outcome::Failed(_)));
    let run = run_op("task.cancel", r#"{"request_id":"r"}"#);
    assert_eq!(
        (run.requests[0].method.as_str(), run.requests[0].path.as_str()),
        ("POST", "/api/v1/tasks/0385dc79-5ff8/cancel")
    );
    assert!(matches!(run.outcome, Outcome::Reply(_)));
}
