use super::*;
use tollgate_plugin_sdk::testing::{call, response, Harness, Outcome};
use tollgate_plugin_sdk::{Body, FormPart, PartValue};

fn signed(op: &str, json: &str) -> Call {
    let mut c = call(op, "kling-v2-1-master", json);
    c.credential = vec![("access_key".into(), "ak-test".into()), ("secret_key".into(), "sk-test".into())];
    c
}

fn submitted_body(run: &tollgate_plugin_sdk::testing::Run) -> Value {
    match &run.requests[0].body {
        Body::Text(t) => serde_json::from_str(t).unwrap(),
        b => panic!("not JSON: {b:?}"),
    }
}

#[test]
fn the_jwt_matches_klings_published_test_vector() {
    assert_eq!(
        jwt("test-ak", "test-sk", 1_700_000_000),
        "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJpc3MiOiJ0ZXN0LWFrIiwiZXhwIjoxNzAwMDAxODAwLCJuYmYiOjE2OTk5OTk5OTV9.WVi2E6Zh6XjoahLqvgwjrspinAR_wIVTs0y9SGAH0Gs"
    );
}

#[test]
fn an_openai_video_request_becomes_a_signed_text2video_job_with_the_request_id() {
    let body = r#"{"model":"kling-v2-1-master","prompt":"a cat","seconds":"10","size":"720x1280","mode":"pro","negative_prompt":"blur","camera_control":{"type":"simple"}}"#;
    let run = Harness::<Kling>::new(signed("video", body)).run(|_| {
        response(
            200,
            r#"{"code":0,"message":"SUCCEED","request_id":"r","data":{"task_id":"842","task_status":"submitted"}}"#,
        )
    });
    let req = &run.requests[0];
    assert_eq!((req.method.as_str(), req.path.as_str()), ("POST", "/v1/videos/text2video"));
    let sent = submitted_body(&run);
    assert_eq!(sent["duration"], "10", "a string: Kling refuses a number");
    assert_eq!(sent["aspect_ratio"], "9:16");
    assert_eq!((sent["model_name"].as_str(), sent["mode"].as_str()), (Some("kling-v2-1-master"), Some("pro")));
    assert_eq!(sent["external_task_id"], "req-test");
    assert_eq!(
        (sent["negative_prompt"].as_str(), sent["camera_control"]["type"].as_str()),
        (Some("blur"), Some("simple"))
    );
    for gone in ["model", "seconds", "size"] {
        assert!(sent.get(gone).is_none(), "{gone} in {sent}");
    }
    // The JWT: Kling's header, the access key as issuer, 30 minutes from 5 s ago, signed.
    let auth = tollgate_plugin_sdk::header(&req.headers, "authorization").unwrap();
    let token = auth.strip_prefix("Bearer ").unwrap();
    let parts: Vec<&str> = token.split('.').collect();
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let claims: Value = serde_json::from_slice(&b64.decode(parts[1]).unwrap()).unwrap();
    assert_eq!(claims["iss"], "ak-test");
    assert_eq!(claims["exp"].as_u64().unwrap() - claims["nbf"].as_u64().unwrap(), 1805);
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(b"sk-test").unwrap();
    mac.update(format!("{}.{}", parts[0], parts[1]).as_bytes());
    mac.verify_slice(&b64.decode(parts[2]).unwrap()).expect("signed with the secret key");
    assert!(matches!(req.auth, tollgate_plugin_sdk::Auth::None), "the plugin signs; the host inserts no key");
    match run.outcome {
        Outcome::Submitted(s) => assert_eq!(s.state, "text2video:pro-10s:842"),
        o => panic!("{o:?}"),
    }
}

#[test]
fn the_quote_names_the_tier_and_durations_kling_cannot_render_are_refused_before_it() {
    let mut ex = KlingExchange::new(signed("video", r#"{"prompt":"a","seconds":5}"#));
    let q = ex.quote().unwrap();
    assert_eq!((q.milliseconds, q.extra), (Some(5000), vec![("std-5s".to_string(), 1)]));
    let mut ex = KlingExchange::new(signed("video", r#"{"prompt":"a","duration":"10","mode":"pro"}"#));
    assert_eq!(ex.quote().unwrap().extra, vec![("pro-10s".to_string(), 1)]);
    for bad in [r#"{"prompt":"a","seconds":"8"}"#, r#"{"prompt":"a","mode":"ultra"}"#] {
        let mut ex = KlingExchange::new(signed("video", bad));
        assert_eq!(ex.quote().unwrap_err().kind, ErrorKind::BadRequest, "{bad}");
        let run = Harness::<Kling>::new(signed("video", bad)).run(|_| panic!("nothing is sent"));
        assert!(matches!(run.outcome, Outcome::Failed(ref e) if e.kind == ErrorKind::BadRequest), "{bad}");
    }
    // A number is sent as its string.
    let run = Harness::<Kling>::new(signed("video", r#"{"prompt":"a","duration":5}"#))
        .run(|_| response(200, r#"{"code":0,"data":{"task_id":"1"}}"#));
    assert_eq!(submitted_body(&run)["duration"], "5");
}

#[test]
fn an_image_makes_an_image2video_job_and_a_file_or_no_prompt_is_refused() {
    let run = Harness::<Kling>::new(signed("video", r#"{"image":"https://img.example/a.png","prompt":""}"#))
        .run(|_| response(200, r#"{"code":0,"data":{"task_id":"9"}}"#));
    assert_eq!(run.requests[0].path, "/v1/videos/image2video");
    assert!(matches!(run.outcome, Outcome::Submitted(ref s) if s.state == "image2video:std-5s:9"));

    let mut c = signed("video", "");
    let part = |name: &str, value: PartValue| FormPart { name: name.into(), filename: None, content_type: None, value };
    c.body = Body::Form(vec![
        part("prompt", PartValue::Text("a".into())),
        part("input_reference", PartValue::ClientFile("input_reference".into())),
    ]);
    let run = Harness::<Kling>::new(c).run(|_| panic!("nothing is sent"));
    assert!(
        matches!(run.outcome, Outcome::Failed(ref e) if e.kind == ErrorKind::BadRequest && e.message.contains("URL or base64"))
    );
    // The SDK's form with text fields only is fine.
    let mut c = signed("video", "");
    c.body =
        Body::Form(vec![part("prompt", PartValue::Text("a".into())), part("seconds", PartValue::Text("10".into()))]);
    let run = Harness::<Kling>::new(c).run(|_| response(200, r#"{"code":0,"data":{"task_id":"3"}}"#));
    assert_eq!(submitted_body(&run)["duration"], "10");

    // An option Kling charges more for is refused, never sent at the plain tier's price.
    for priced in [r#"{"prompt":"a","sound":"on"}"#, r#"{"prompt":"a","multi_shot":true}"#] {
        let run = Harness::<Kling>::new(signed("video", priced)).run(|_| panic!("nothing is sent"));
        assert!(matches!(run.outcome, Outcome::Failed(ref e) if e.kind == ErrorKind::BadRequest), "{priced}");
    }
    let run = Harness::<Kling>::new(signed("video", r#"{"prompt":"  "}"#)).run(|_| panic!("nothing is sent"));
    assert!(matches!(run.outcome, Outcome::Failed(ref e) if e.kind == ErrorKind::BadRequest));
}

#[test]
fn a_key_that_is_not_ak_and_sk_is_unauthorized_before_anything_is_sent() {
    let mut c = signed("video", r#"{"prompt":"a"}"#);
    c.credential.retain(|(n, _)| n == "access_key");
    let run = Harness::<Kling>::new(c).run(|_| panic!("nothing is sent"));
    assert!(matches!(run.outcome, Outcome::Failed(ref e) if e.kind == ErrorKind::Unauthorized));
}

#[test]
fn klings_errors_are_classified_by_code_on_any_status() {
    for (status, body, kind) in [
        (401, r#"{"code":1002,"message":"signature invalid"}"#, ErrorKind::Unauthorized),
        (401, r#"{"code":1004,"message":"token expired"}"#, ErrorKind::RateLimited),
        (200, r#"{"code":1102,"message":"resource pack exhausted"}"#, ErrorKind::InsufficientBalance),
        (400, r#"{"code":1201,"message":"duration invalid"}"#, ErrorKind::BadRequest),
        (429, r#"{"code":1303,"message":"parallel task over limit"}"#, ErrorKind::RateLimited),
        (400, r#"{"code":1301,"message":"prompt failed the safety check"}"#, ErrorKind::ContentFiltered),
        (500, r#"{"code":5000,"message":"internal"}"#, ErrorKind::UpstreamFault),
        (502, "<html>bad gateway</html>", ErrorKind::UpstreamFault),
        (200, "", ErrorKind::UpstreamFault),
    ] {
        let run = Harness::<Kling>::new(signed("video", r#"{"prompt":"a"}"#)).run(|_| response(status, body));
        match run.outcome {
            Outcome::Failed(e) => assert_eq!(e.kind, kind, "{status} {body}: {}", e.message),
            o => panic!("{status} {body}: {o:?}"),
        }
    }
}

#[test]
fn a_poll_follows_the_job_to_its_video_or_its_failure_and_reports_the_quoted_tier() {
    let poll = |state: &str, answer: &str| {
        let mut c = signed("task.poll", "");
        c.task = Some(state.into());
        Harness::<Kling>::new(c).run(|_| response(200, answer.to_string()))
    };
    let run = poll("text2video:pro-10s:842", r#"{"code":0,"data":{"task_id":"842","task_status":"processing"}}"#);
    assert_eq!(run.requests[0].path, "/v1/videos/text2video/842");
    assert!(tollgate_plugin_sdk::header(&run.requests[0].headers, "authorization").is_some());
    assert!(matches!(run.outcome, Outcome::Task(TaskState::Pending(_))));

    let done = r#"{"code":0,"data":{"task_id":"842","task_status":"succeed","task_result":{"videos":[{"id":"v","url":"https://cdn.klingai.com/v.mp4","duration":"10.1"}]}}}"#;
    match poll("image2video:pro-10s:842", done).outcome {
        Outcome::Task(TaskState::Succeeded(d)) => {
            assert_eq!(d.outputs[0].url, "https://cdn.klingai.com/v.mp4");
            assert_eq!((d.usage.milliseconds, d.usage.extra), (Some(10_000), vec![("pro-10s".to_string(), 1)]));
        }
        o => panic!("{o:?}"),
    }
    let failed = r#"{"code":0,"data":{"task_id":"842","task_status":"failed","task_status_msg":"content risk"}}"#;
    assert!(matches!(poll("text2video:std-5s:842", failed).outcome,
        Outcome::Task(TaskState::Failed(ref e)) if e.message == "content risk"));
    // Garbage never panics; a state that is not Kling's is refused before anything is sent.
    assert!(
        matches!(poll("text2video:std-5s:842", "{").outcome, Outcome::Failed(ref e) if e.kind == ErrorKind::UpstreamFault)
    );
    let empty = r#"{"code":0,"data":{"task_status":"succeed","task_result":{"videos":[]}}}"#;
    assert!(matches!(poll("text2video:std-5s:842", empty).outcome, Outcome::Failed(_)));
    for bad in ["842", "other:std-5s:842", "text2video:std-5s:../x", "text2video::842"] {
        let mut c = signed("task.poll", "");
        c.task = Some(bad.into());
        let run = Harness::<Kling>::new(c).run(|_| panic!("nothing is sent"));
        assert!(matches!(run.outcome, Outcome::Failed(_)), "{bad}");
    }
}
