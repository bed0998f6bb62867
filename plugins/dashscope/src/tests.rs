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

/// DashScope's native stream as it writes it: no space after the colons, a status comment,
/// usage cumulative, no `[DONE]`.
const NATIVE_STREAM: &str = "id:1\nevent:result\n:HTTP_STATUS/200\ndata:{\"output\":{\"choices\":[{\"message\":{\"content\":\"\",\"reasoning_content\":\"The\",\"role\":\"assistant\"},\"finish_reason\":\"null\"}]},\"usage\":{\"total_tokens\":288,\"output_tokens\":1,\"input_tokens\":287},\"request_id\":\"r1\"}\n\n\
id:2\nevent:result\n:HTTP_STATUS/200\ndata:{\"output\":{\"choices\":[{\"message\":{\"content\":\"Hi\",\"role\":\"assistant\"},\"finish_reason\":\"stop\"}]},\"usage\":{\"total_tokens\":290,\"output_tokens\":3,\"input_tokens\":287,\"prompt_tokens_details\":{\"cached_tokens\":200}},\"request_id\":\"r1\"}\n\n";

fn native(op: &str, sse: bool) -> Call {
    let mut c = call(
        op,
        "qwen-plus",
        r#"{"model":"qwen-plus","input":{"messages":[{"role":"user","content":"hi"}]},"parameters":{"incremental_output":true}}"#,
    );
    if sse {
        c.headers.push(tollgate_plugin_sdk::Header::new("x-dashscope-sse", "enable"));
    }
    c
}

#[test]
fn qwen_chat_runs_on_the_compatible_mode() {
    let run = Harness::<DashScope>::new(call("chat", "qwen-vl-max", r#"{"model":"qwen-vl-max","messages":[{"role":"user","content":[{"type":"image_url","image_url":{"url":"https://x/cat.png"}}]}]}"#))
        .run(|_| response(200, r#"{"choices":[{"message":{"content":"a cat"}}],"usage":{"prompt_tokens":1200,"completion_tokens":3}}"#));
    assert_eq!(run.requests[0].path, "/compatible-mode/v1/chat/completions");
    assert!(matches!(run.requests[0].body, tollgate_plugin_sdk::Body::ClientBody), "vision parts pass as they are");
    assert!(matches!(run.outcome, Outcome::Reply(r) if r.usage.input_tokens == Some(1200)));
}

#[test]
fn native_generation_streams_as_dashscope_streams_and_bills_the_last_usage() {
    for piece in [1, 7, 1000] {
        let run = Harness::<DashScope>::new(native(chat::GENERATION, true))
            .piece_size(piece)
            .run(|_| response(200, NATIVE_STREAM));
        let r = &run.requests[0];
        assert_eq!(r.path, chat::GENERATION_PATH);
        assert_eq!(tollgate_plugin_sdk::header(&r.headers, "x-dashscope-sse"), Some("enable"));
        let Outcome::Stream { chunks, tail } = run.outcome else { panic!("a stream") };
        assert_eq!(chunks.len(), 2);
        let u = tail.usage;
        assert_eq!((u.input_tokens, u.output_tokens, u.cached_tokens), (Some(287), Some(3), Some(200)));
    }
    let run = Harness::<DashScope>::new(native(chat::MULTIMODAL, false)).run(|_| {
        response(200, r#"{"output":{"choices":[{"message":{"content":[{"image":"https://x/1.png"}]}}]},"usage":{"input_tokens":10,"output_tokens":0},"request_id":"r"}"#)
    });
    assert_eq!(run.requests[0].path, chat::MULTIMODAL_PATH);
    assert!(matches!(run.outcome, Outcome::Reply(r) if r.usage.images == Some(1)), "qwen-image's image counted");
    // A failure is DashScope's own body, relayed, classified.
    let run = Harness::<DashScope>::new(native(chat::GENERATION, false))
        .run(|_| response(401, r#"{"request_id":"r","code":"InvalidApiKey","message":"Invalid API-key provided."}"#));
    assert!(
        matches!(run.outcome, Outcome::Reply(r) if r.status == 401 && r.error.as_ref().unwrap().kind == ErrorKind::Unauthorized)
    );
}

#[test]
fn the_conformance_battery() {
    use tollgate_plugin_sdk::conformance::{answer, run, Vendor};
    let error = |status: u16, code: &str| {
        answer(status, json!({ "request_id": "r", "code": code, "message": "m" }).to_string())
    };
    let whole = r#"{"output":{"choices":[{"message":{"content":"Hi"},"finish_reason":"stop"}]},"usage":{"input_tokens":287,"output_tokens":3},"request_id":"r"}"#;
    run::<DashScope>(Vendor {
        whole: (
            native(chat::GENERATION, false),
            answer(200, whole),
            Usage { input_tokens: Some(287), output_tokens: Some(3), ..Usage::default() },
        ),
        whole_without_usage: Some(answer(200, r#"{"output":{"choices":[]},"request_id":"r"}"#)),
        stream: Some((
            native(chat::GENERATION, true),
            NATIVE_STREAM.as_bytes().to_vec(),
            Usage { input_tokens: Some(287), output_tokens: Some(3), cached_tokens: Some(200), ..Usage::default() },
        )),
        failures: vec![
            (error(401, "InvalidApiKey"), ErrorKind::Unauthorized),
            (error(400, "Arrearage"), ErrorKind::InsufficientBalance),
            (error(429, "Throttling.RateQuota"), ErrorKind::RateLimited),
            (error(400, "DataInspectionFailed"), ErrorKind::ContentFiltered),
            (error(400, "InvalidParameter"), ErrorKind::BadRequest),
            (error(500, "InternalError"), ErrorKind::UpstreamFault),
        ],
    });
}

#[test]
fn a_native_request_is_quoted_from_dashscopes_own_fields() {
    let quote = |body: &str| DashScopeExchange::new(call(chat::GENERATION, "qwen-plus", body)).quote();
    let q = quote(r#"{"model":"qwen-plus","input":{"messages":[]},"parameters":{"max_tokens":100,"n":2}}"#).unwrap();
    assert_eq!(q.output_tokens, Some(200));
    let q = quote(r#"{"model":"qwen-plus","input":{"messages":[]},"parameters":{"max_tokens":100,"enable_thinking":true,"thinking_budget":500}}"#).unwrap();
    assert_eq!(q.output_tokens, Some(600), "thinking is output, beyond max_tokens");
    let q = quote(r#"{"model":"qwen-plus","input":{"messages":[]}}"#).unwrap();
    assert_eq!(q.output_tokens, Some(chat::DEFAULT_MAX_OUTPUT));
    assert!(q.input_tokens.unwrap() > 10);
    assert!(quote(r#"{"model":"qwen-plus","parameters":{"max_tokens":"9"}}"#).is_err());
    let q = DashScopeExchange::new(call(chat::MULTIMODAL, "qwen-image", r#"{"input":{},"parameters":{"n":3}}"#))
        .quote()
        .unwrap();
    assert_eq!(q.images, Some(3));
}

fn transcription(json: &str) -> Call {
    call(asr::OP, "paraformer-v2", json)
}

#[test]
fn a_file_transcription_holds_its_files_at_dashscopes_longest_and_is_sent_asynchronously() {
    let body = r#"{"model":"paraformer-v2","input":{"file_urls":["https://x.oss-cn-beijing.aliyuncs.com/a.wav","http://y/b.mp3"]},"parameters":{"language_hints":["zh","en"]}}"#;
    let q = DashScopeExchange::new(transcription(body)).quote().unwrap();
    assert_eq!(q.milliseconds, Some(2 * 12 * 3600 * 1000), "two files, 12 hours each");
    // Two tracks heard in each file: twice the hold; an operator's lower bound per file.
    let tracks = r#"{"input":{"file_urls":["https://x/a.wav"]},"parameters":{"channel_id":[0,1]}}"#;
    assert_eq!(DashScopeExchange::new(transcription(tracks)).quote().unwrap().milliseconds, Some(2 * 43_200_000));
    let lowered = Call { config: r#"{"asr_max_file_seconds":600}"#.into(), ..transcription(body) };
    assert_eq!(DashScopeExchange::new(lowered).quote().unwrap().milliseconds, Some(1_200_000));
    let many = format!(r#"{{"input":{{"file_urls":{:?}}}}}"#, vec!["https://x/a.wav"; 101]);
    for bad in [
        many.as_str(),
        r#"{"input":{"file_urls":[]}}"#,
        r#"{"input":{"file_urls":"https://x/a.wav"}}"#,
        r#"{"input":{"file_urls":["file:///etc/passwd"]}}"#,
        r#"{"input":{"file_urls":[7]}}"#,
        r#"{"input":{"file_urls":["https://x/a.wav"],"File_urls":["https://x/b.wav"]}}"#,
        r#"{"input":{"file_urls":["https://x/a.wav"]},"parameters":{"channel_id":[0,1,2,3,4,5,6,7,8]}}"#,
        r#"{"input":{"file_urls":["https://x/a.wav"]},"parameters":{"channel_id":"0"}}"#,
        r#"{"input":{"file_urls":["https://x/a.wav"]},"parameters":{"callback_url":"https://evil"}}"#,
        r#"{"input":{"file_urls":["https://x/a.wav"]},"extra":1}"#,
    ] {
        let run = Harness::<DashScope>::new(transcription(bad)).run(|_| panic!("nothing is sent"));
        assert!(matches!(run.outcome, Outcome::Failed(ref e) if e.kind == ErrorKind::BadRequest), "{bad}");
    }
    assert!(<DashScope as tollgate_plugin_sdk::Plugin>::check_settings(r#"{"asr_max_file_seconds":0}"#).is_err());
    assert!(<DashScope as tollgate_plugin_sdk::Plugin>::check_settings(r#"{"asr_max_file_seconds":3600}"#).is_ok());
    assert!(<DashScope as tollgate_plugin_sdk::Plugin>::check_settings("{}").is_ok());

    let answer = r#"{"output":{"task_status":"PENDING","task_id":"asr-1"},"request_id":"r"}"#;
    let run = Harness::<DashScope>::new(transcription(body)).run(|_| response(200, answer));
    let req = &run.requests[0];
    assert_eq!(req.path, asr::PATH);
    assert_eq!(tollgate_plugin_sdk::header(&req.headers, "x-dashscope-async"), Some("enable"));
    let sent: Value = serde_json::from_str(&tollgate_plugin_sdk::testing::body_text(req)).unwrap();
    assert_eq!(sent["input"]["file_urls"][1], "http://y/b.mp3");
    assert_eq!(sent["parameters"]["language_hints"], json!(["zh", "en"]));
    let Outcome::Submitted(t) = run.outcome else { panic!("expected a task") };
    assert_eq!(t.state, r#"{"id":"asr-1","kind":"asr","tier":""}"#);
    let reply = t.reply.expect("DashScope's own answer");
    assert_eq!((reply.body.as_bytes().unwrap(), reply.objects), (answer.as_bytes(), vec!["asr-1".to_string()]));
    let run = Harness::<DashScope>::new(transcription(body))
        .run(|_| response(401, r#"{"code":"InvalidApiKey","message":"Invalid API-key provided."}"#));
    assert!(matches!(run.outcome, Outcome::Reply(ref r) if r.status == 401));
}

#[test]
fn a_transcription_task_is_charged_the_seconds_dashscope_heard_and_nothing_when_no_file_was_heard() {
    let poll = |answer: &'static str| {
        let c =
            Call { task: Some(r#"{"id":"asr-1","tier":"","kind":"asr"}"#.into()), ..call("task.poll", "fun-asr", "") };
        Harness::<DashScope>::new(c).run(move |_| response(200, answer)).outcome
    };
    let done = poll(
        r#"{"output":{"task_status":"SUCCEEDED","results":[{"file_url":"https://x/a.wav","transcription_url":"https://r.aliyuncs.com/a.json","subtask_status":"SUCCEEDED"},{"file_url":"https://x/fail.wav","subtask_status":"FAILED","code":"InvalidFile.DownloadFailed","message":"m"}]},"usage":{"duration":9}}"#,
    );
    let Outcome::Task(TaskState::Succeeded(d)) = done else { panic!("expected success: {done:?}") };
    assert_eq!((d.usage.milliseconds, d.outputs.len()), (Some(9_000), 0));
    let done = poll(r#"{"output":{"task_status":"SUCCEEDED","results":[{"subtask_status":"SUCCEEDED"}]}}"#);
    let Outcome::Task(TaskState::Succeeded(d)) = done else { panic!("expected success") };
    assert_eq!(d.usage.milliseconds, None, "no duration: the host bills the hold, marked estimated");
    let failed = poll(
        r#"{"output":{"task_status":"SUCCEEDED","results":[{"subtask_status":"FAILED","code":"InvalidFile.DownloadFailed","message":"The audio file cannot be downloaded."}]},"usage":{"duration":0}}"#,
    );
    assert!(matches!(failed, Outcome::Task(TaskState::Failed(ref e)) if e.message.contains("cannot be downloaded")));
    assert!(matches!(poll(r#"{"output":{"task_status":"RUNNING"}}"#), Outcome::Task(TaskState::Pending(_))));
    assert!(matches!(
        poll(r#"{"output":{"task_status":"FAILED","code":"InternalError"}}"#),
        Outcome::Task(TaskState::Failed(_))
    ));
}

fn multimodal(model: &str, body: &str) -> Call {
    call(chat::MULTIMODAL, model, body)
}

#[test]
fn an_image_edit_holds_its_n_images_and_is_charged_those_made() {
    let edit = r#"{"model":"qwen-image-edit-plus","input":{"messages":[{"role":"user","content":[{"image":"data:image/png;base64,iVBORw0KGgo="},{"text":"make it blue"}]}]},"parameters":{"n":2}}"#;
    let q = DashScopeExchange::new(multimodal("qwen-image-edit-plus", edit)).quote().unwrap();
    assert_eq!((q.images, q.milliseconds), (Some(2), None));
    let one = r#"{"input":{"messages":[{"role":"user","content":[{"image":"https://x/a.png"},{"text":"t"}]}]}}"#;
    assert_eq!(DashScopeExchange::new(multimodal("qwen-image-edit", one)).quote().unwrap().images, Some(1));
    for bad in [
        r#"{"input":{},"parameters":{"n":2,"N":6}}"#,
        r#"{"input":{},"Parameters":{"n":6}}"#,
        r#"{"input":{},"parameters":{"n":17}}"#,
    ] {
        assert!(DashScopeExchange::new(multimodal("qwen-image-edit-plus", bad)).quote().is_err(), "{bad}");
    }
    let made = |answer: &'static str| match Harness::<DashScope>::new(multimodal("qwen-image-edit-plus", edit))
        .run(move |_| response(200, answer))
        .outcome
    {
        Outcome::Reply(r) => r.usage.images,
        o => panic!("{o:?}"),
    };
    let two = r#"{"output":{"choices":[{"message":{"content":[{"image":"https://a/1.png"},{"image":"https://a/2.png"}]}}]},"usage":{"width":1024,"height":1024,"image_count":2}}"#;
    assert_eq!(made(two), Some(2));
    let counted =
        r#"{"output":{"choices":[{"message":{"content":[{"image":"https://a/1.png"}]}}]},"usage":{"image_count":2}}"#;
    assert_eq!(made(counted), Some(2), "DashScope's count, when it is more");
    let none = r#"{"output":{"choices":[{"message":{"content":[]}}]},"usage":{"image_count":0}}"#;
    assert_eq!(made(none), Some(0), "none made, none charged");
    let run = Harness::<DashScope>::new(multimodal("qwen-image-edit-plus", edit))
        .run(|_| response(400, r#"{"request_id":"r","code":"DataInspectionFailed","message":"bad"}"#));
    assert!(
        matches!(run.outcome, Outcome::Reply(r) if r.error.as_ref().is_some_and(|e| e.kind == ErrorKind::ContentFiltered))
    );
}

#[test]
fn a_synchronous_asr_holds_its_audio_at_dashscopes_longest_and_is_charged_the_seconds_heard() {
    let body = r#"{"model":"qwen3-asr-flash","input":{"messages":[{"role":"system","content":[{"text":""}]},{"role":"user","content":[{"audio":"https://x/welcome.mp3"}]}]},"parameters":{"asr_options":{"enable_itn":false}}}"#;
    let q = DashScopeExchange::new(multimodal("qwen3-asr-flash", body)).quote().unwrap();
    assert_eq!(q.milliseconds, Some(chat::MAX_AUDIO_SECONDS * 1000));
    let heard = |answer: &'static str| match Harness::<DashScope>::new(multimodal("qwen3-asr-flash", body))
        .run(move |_| response(200, answer))
        .outcome
    {
        Outcome::Reply(r) => r.usage,
        o => panic!("{o:?}"),
    };
    let u = heard(
        r#"{"output":{"choices":[{"finish_reason":"stop","message":{"content":[{"text":"Welcome."}],"role":"assistant"}}]},"usage":{"input_tokens_details":{"text_tokens":0},"output_tokens_details":{"text_tokens":6},"seconds":1},"request_id":"r"}"#,
    );
    assert_eq!((u.milliseconds, u.input_tokens, u.images), (Some(1_000), None, None));
    let u = heard(r#"{"output":{"choices":[]},"usage":{"seconds":1e12}}"#);
    assert_eq!(u.milliseconds, Some(300_000), "never beyond what was held");
}

mod transcription;
