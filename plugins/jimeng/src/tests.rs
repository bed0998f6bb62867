use super::*;
use tollgate_plugin_sdk::testing::{call, response, Harness, Outcome};

fn signed(op: &str, json: &str) -> Call {
    let mut c = call(op, "jimeng_t2v_v30", json);
    c.credential = vec![("access_key".into(), "AKTEST".into()), ("secret_key".into(), "SKTEST".into())];
    c
}

fn body_of(req: &UpstreamRequest) -> Value {
    match &req.body {
        Body::Text(t) => serde_json::from_str(t).unwrap(),
        b => panic!("not JSON: {b:?}"),
    }
}

fn header<'a>(req: &'a UpstreamRequest, name: &str) -> &'a str {
    tollgate_plugin_sdk::header(&req.headers, name).unwrap_or_default()
}

#[test]
fn an_openai_video_request_becomes_a_signed_submit_with_frames_and_ratio() {
    let run = Harness::<Jimeng>::new(signed(
        "video",
        r#"{"model":"jimeng_t2v_v30","prompt":"a cat","seconds":"10","size":"720x1280"}"#,
    ))
    .run(|_| {
        response(200, r#"{"code":10000,"message":"Success","request_id":"r","data":{"task_id":"7392"},"status":10000}"#)
    });
    let req = &run.requests[0];
    assert_eq!(
        (req.method.as_str(), req.path.as_str()),
        ("POST", "/?Action=CVSync2AsyncSubmitTask&Version=2022-08-31")
    );
    let sent = body_of(req);
    assert_eq!(
        sent,
        json!({ "req_key": "jimeng_t2v_v30", "prompt": "a cat", "seed": -1, "frames": 241, "aspect_ratio": "9:16" })
    );
    assert!(matches!(req.auth, Auth::None), "the plugin signs; the host inserts no key");
    // The signature covers what is sent, at the date sent, for the channel's host.
    let text = match &req.body {
        Body::Text(t) => t.clone(),
        _ => unreachable!(),
    };
    let signer = sign::Signer { access_key: "AKTEST", secret_key: "SKTEST", region: "cn-north-1", service: "cv" };
    let query = [("Action", "CVSync2AsyncSubmitTask"), ("Version", "2022-08-31")];
    let again = signer.sign("POST", "/", &query, "vendor.test", text.as_bytes(), header(req, "x-date"));
    assert_eq!(header(req, "authorization"), again.authorization);
    assert_eq!(header(req, "x-content-sha256"), again.content_sha256);
    match run.outcome {
        Outcome::Submitted(s) => {
            let state: Value = serde_json::from_str(&s.state).unwrap();
            assert_eq!(state, json!({ "req_key": "jimeng_t2v_v30", "task_id": "7392", "seconds": 10 }));
        }
        o => panic!("{o:?}"),
    }
}

#[test]
fn the_quote_is_the_tier_and_what_jimeng_cannot_render_is_refused_before_it() {
    let mut ex = JimengExchange::new(signed("video", r#"{"prompt":"a"}"#));
    let q = ex.quote().unwrap();
    assert_eq!((q.milliseconds, q.extra), (Some(5000), vec![("5s".to_string(), 1)]));
    for bad in [r#"{"prompt":"a","seconds":"8"}"#, r#"{"prompt":" "}"#, r#"{"prompt":"a","size":"big"}"#] {
        let run = Harness::<Jimeng>::new(signed("video", bad)).run(|_| panic!("nothing is sent"));
        assert!(matches!(run.outcome, Outcome::Failed(ref e) if e.kind == ErrorKind::BadRequest), "{bad}");
    }
    let mut c = signed("video", r#"{"prompt":"a"}"#);
    c.credential.truncate(1);
    let run = Harness::<Jimeng>::new(c).run(|_| panic!("nothing is sent"));
    assert!(matches!(run.outcome, Outcome::Failed(ref e) if e.kind == ErrorKind::Unauthorized));
    // An image makes the request image-to-video.
    let run = Harness::<Jimeng>::new(signed("video", r#"{"image":"https://img.example/a.png"}"#))
        .run(|_| response(200, r#"{"code":10000,"data":{"task_id":"1"}}"#));
    assert_eq!(body_of(&run.requests[0])["image_urls"], json!(["https://img.example/a.png"]));
}

#[test]
fn both_error_envelopes_are_classified() {
    let gateway =
        |code: &str| format!(r#"{{"ResponseMetadata":{{"RequestId":"r","Error":{{"Code":"{code}","Message":"m"}}}}}}"#);
    for (status, body, kind) in [
        (401, gateway("SignatureDoesNotMatch"), ErrorKind::Unauthorized),
        (401, gateway("InvalidAccessKey"), ErrorKind::Unauthorized),
        (429, gateway("RequestLimitExceeded"), ErrorKind::RateLimited),
        (403, gateway("AccountOverdue"), ErrorKind::InsufficientBalance),
        (500, gateway("InternalError"), ErrorKind::UpstreamFault),
        (200, r#"{"code":50400,"message":"Invalid Request"}"#.to_string(), ErrorKind::BadRequest),
        (200, r#"{"code":50411,"message":"Pre Img Risk Not Pass"}"#.to_string(), ErrorKind::ContentFiltered),
        (502, "<html>bad gateway</html>".to_string(), ErrorKind::UpstreamFault),
        (200, "".to_string(), ErrorKind::UpstreamFault),
    ] {
        let run = Harness::<Jimeng>::new(signed("video", r#"{"prompt":"a"}"#)).run(|_| response(status, body.clone()));
        match run.outcome {
            Outcome::Failed(e) => assert_eq!(e.kind, kind, "{status} {body}: {}", e.message),
            o => panic!("{status} {body}: {o:?}"),
        }
    }
}

#[test]
fn a_poll_follows_the_job_to_its_video_or_its_failure() {
    let state = r#"{"req_key":"jimeng_t2v_v30","task_id":"7392","seconds":10}"#;
    let poll = |answer: &str| {
        let mut c = signed("task.poll", "");
        c.task = Some(state.into());
        let answer = answer.to_string();
        Harness::<Jimeng>::new(c).run(move |_| response(200, answer.clone()))
    };
    let run = poll(r#"{"code":10000,"data":{"status":"generating"}}"#);
    assert_eq!(run.requests[0].path, "/?Action=CVSync2AsyncGetResult&Version=2022-08-31");
    assert_eq!(body_of(&run.requests[0]), json!({ "req_key": "jimeng_t2v_v30", "task_id": "7392" }));
    assert!(matches!(run.outcome, Outcome::Task(TaskState::Pending(_))));
    match poll(r#"{"code":10000,"data":{"status":"done","video_url":"https://v.volccdn.com/a.mp4"}}"#).outcome {
        Outcome::Task(TaskState::Succeeded(d)) => {
            assert_eq!(d.outputs[0].url, "https://v.volccdn.com/a.mp4");
            assert_eq!(d.usage.extra, vec![("10s".to_string(), 1)]);
        }
        o => panic!("{o:?}"),
    }
    assert!(matches!(poll(r#"{"code":50412,"message":"Output Video Risk Not Pass"}"#).outcome,
        Outcome::Task(TaskState::Failed(ref e)) if e.kind == ErrorKind::ContentFiltered));
    assert!(matches!(
        poll(r#"{"code":10000,"data":{"status":"expired"}}"#).outcome,
        Outcome::Task(TaskState::Failed(_))
    ));
    assert!(matches!(poll(r#"{"code":10000,"data":{"status":"done"}}"#).outcome, Outcome::Failed(_)));
    assert!(matches!(poll("garbage").outcome, Outcome::Failed(_)));
    let mut c = signed("task.poll", "");
    c.task = Some("7392".into());
    assert!(matches!(Harness::<Jimeng>::new(c).run(|_| panic!("nothing is sent")).outcome, Outcome::Failed(_)));
}
