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

fn image(json: &str) -> Call {
    call("dashscope.image", "wan2.2-t2i-flash", json)
}

#[test]
fn dashscopes_own_image_route_holds_its_images_and_charges_those_counted() {
    let body = r#"{"model":"wan2.2-t2i-flash","input":{"prompt":"a cat"},"parameters":{"size":"1024*1024","n":3}}"#;
    assert_eq!(DashScopeExchange::new(image(body)).quote().unwrap().images, Some(3));
    assert_eq!(DashScopeExchange::new(image(r#"{"input":{"prompt":"a"}}"#)).quote().unwrap().images, Some(1));
    for bad in [
        r#"{"input":{"prompt":"a"},"parameters":{"n":5}}"#,
        r#"{"input":{"prompt":"a"},"parameters":{"N":4}}"#,
        r#"{"input":{"prompt":"a"},"Parameters":{"n":4}}"#,
        r#"{"input":{"prompt":"a"},"parameters":{"_n":4}}"#,
        r#"{"input":{"prompt":"a","ref_img":"https://x/y.png"}}"#,
        r#"{"input":{"prompt":"a"},"extra":1}"#,
        r#"{"input":{}}"#,
    ] {
        let e = DashScopeExchange::new(image(bad)).quote().unwrap_err();
        assert_eq!(e.kind, ErrorKind::BadRequest, "{bad}");
    }
    let answer = r#"{"output":{"task_status":"PENDING","task_id":"abc-1"},"request_id":"r"}"#;
    let run = Harness::<DashScope>::new(image(body)).run(|_| response(200, answer));
    assert_eq!(run.requests[0].path, "/api/v1/services/aigc/text2image/image-synthesis");
    assert_eq!(tollgate_plugin_sdk::header(&run.requests[0].headers, "x-dashscope-async"), Some("enable"));
    let Outcome::Submitted(t) = run.outcome else { panic!("expected a task") };
    let reply = t.reply.expect("DashScope's own answer");
    assert_eq!((reply.body.as_bytes().unwrap(), reply.objects), (answer.as_bytes(), vec!["abc-1".to_string()]));

    let state = r#"{"id":"abc-1","tier":"","kind":"image"}"#;
    let poll = |answer: &'static str| {
        Harness::<DashScope>::new(Call { task: Some(state.into()), ..call("task.poll", "wan2.2-t2i-flash", "") })
            .run(move |_| response(200, answer))
            .outcome
    };
    let done = poll(
        r#"{"output":{"task_status":"SUCCEEDED","results":[{"url":"https://a.aliyuncs.com/1.png"},{"url":"https://a.aliyuncs.com/2.png"}]},"usage":{"image_count":2}}"#,
    );
    let Outcome::Task(TaskState::Succeeded(d)) = done else { panic!("expected success") };
    assert_eq!((d.outputs.len(), d.usage.images), (2, Some(2)));
    // Delivered images are charged even when the count says fewer.
    let done = poll(
        r#"{"output":{"task_status":"SUCCEEDED","results":[{"url":"https://a.aliyuncs.com/1.png"}]},"usage":{"image_count":0}}"#,
    );
    let Outcome::Task(TaskState::Succeeded(d)) = done else { panic!("expected success") };
    assert_eq!(d.usage.images, Some(1));
    assert!(matches!(poll(r#"{"output":{"task_status":"RUNNING"}}"#), Outcome::Task(TaskState::Pending(_))));
    assert!(matches!(
        poll(r#"{"output":{"task_status":"FAILED","code":"DataInspectionFailed","message":"bad"}}"#),
        Outcome::Task(TaskState::Failed(ref e)) if e.kind == ErrorKind::ContentFiltered
    ));
    // A refusal comes back as DashScope wrote it.
    let run = Harness::<DashScope>::new(image(body))
        .run(|_| response(401, r#"{"code":"InvalidApiKey","message":"Invalid API-key provided."}"#));
    let Outcome::Reply(r) = run.outcome else { panic!("expected DashScope's answer") };
    assert_eq!((r.status, r.error.map(|e| e.kind)), (401, Some(ErrorKind::Unauthorized)));
}
