//! The Suno plugin's behaviour, driven natively by the SDK's harness.

use super::*;
use tollgate_plugin_sdk::testing::{call, response, Harness, Outcome};
use tollgate_plugin_sdk::Body;

fn submit(action: &str, body: &str) -> Call {
    let mut c = call("suno.submit", "chirp-v3-5", body);
    c.context.path_params = vec![("action".into(), action.into())];
    c
}

fn poll(action: &str) -> Call {
    Call { task: Some(json!({ "id": "t-1", "action": action }).to_string()), ..call("task.poll", "chirp-v3-5", "") }
}

fn text(body: &Body) -> String {
    String::from_utf8(body.as_bytes().expect("a body").to_vec()).unwrap()
}

#[test]
fn a_song_holds_two_clips_and_lyrics_one_and_what_suno_refuses_is_refused_first() {
    let quote = |action: &str, body: &str| SunoExchange::new(submit(action, body)).quote();
    assert_eq!(quote("music", r#"{"prompt":"la la","mv":"chirp-v3-5"}"#).unwrap().extra, [("song".to_string(), 2)]);
    assert_eq!(quote("LYRICS", r#"{"prompt":"rain"}"#).unwrap().extra, [("lyrics".to_string(), 1)]);
    for (action, body, says) in [
        ("VIDEO", r#"{"prompt":"x"}"#, "MUSIC and LYRICS"),
        ("LYRICS", r#"{"tags":"pop"}"#, "need a 'prompt'"),
        ("MUSIC", r#"{"title":"t"}"#, "needs a 'prompt'"),
        ("MUSIC", "[1]", "not a JSON object"),
        ("MUSIC", r#"{"prompt":"x","continue_clip_id":"someone-elses"}"#, "not a field"),
        ("MUSIC", r#"{"prompt":"x","callBackUrl":"http://10.0.0.1/"}"#, "not a field"),
    ] {
        let e = quote(action, body).unwrap_err();
        assert!(e.kind == ErrorKind::BadRequest && e.message.contains(says), "{body}: {}", e.message);
    }
}

#[test]
fn a_submit_answers_sunos_own_body_and_becomes_a_task() {
    let body = r#"{"prompt":"la la","mv":"chirp-v3-5","make_instrumental":false}"#;
    let answer = r#"{"code":"success","message":"","data":"t-1"}"#;
    let run = Harness::<Suno>::new(submit("music", body)).run(|_| response(200, answer));
    let sent: Value = serde_json::from_str(&text(&run.requests[0].body)).unwrap();
    assert_eq!((run.requests[0].path.as_str(), sent), ("/suno/submit/MUSIC", serde_json::from_str(body).unwrap()));
    let Outcome::Submitted(t) = run.outcome else { panic!("expected a task") };
    let reply = t.reply.expect("Suno's own answer");
    assert_eq!((text(&reply.body), reply.objects), (answer.to_string(), vec!["t-1".to_string()]));
    assert_eq!(serde_json::from_str::<Value>(&t.state).unwrap(), json!({"id": "t-1", "action": "MUSIC"}));

    // A refusal is Suno's own body, classified by its status (never by words a consumer can
    // make Suno echo); an account out of credits leaves the pool.
    for (status, refusal, kind) in [
        (402, r#"{"code":"error","message":"insufficient credits","data":null}"#, ErrorKind::InsufficientBalance),
        (401, r#"{"code":"error","message":"invalid token"}"#, ErrorKind::Unauthorized),
        (200, r#"{"code":"error","message":"prompt too long"}"#, ErrorKind::BadRequest),
        (200, r#"{"code":"error","message":"tag 'auth token credit quota' rejected"}"#, ErrorKind::BadRequest),
        (502, "bad gateway", ErrorKind::UpstreamFault),
    ] {
        let run = Harness::<Suno>::new(submit("music", body)).run(|_| response(status, refusal));
        let Outcome::Reply(r) = run.outcome else { panic!("expected Suno's answer") };
        assert_eq!((r.status, text(&r.body)), (status, refusal.to_string()));
        assert_eq!(r.error.map(|e| e.kind), Some(kind), "{refusal}");
    }
}

#[test]
fn a_poll_reads_progress_then_archives_each_clip_and_charges_the_clips_made() {
    let run = Harness::<Suno>::new(poll("MUSIC")).run(|_| {
        response(200, r#"{"code":"success","data":[{"task_id":"t-1","status":"IN_PROGRESS","progress":"45%"}]}"#)
    });
    assert_eq!(
        (run.requests[0].path.as_str(), text(&run.requests[0].body)),
        ("/suno/fetch", r#"{"ids":["t-1"]}"#.to_string())
    );
    let Outcome::Task(TaskState::Pending(p)) = run.outcome else { panic!("expected progress") };
    assert_eq!((p.percent, p.message.as_deref()), (Some(45), Some("IN_PROGRESS")));

    let done = r#"{"code":"success","data":[{"task_id":"t-1","status":"SUCCESS","progress":"100%","data":[
        {"id":"c1","audio_url":"https://cdn1.suno.ai/c1.mp3"},{"id":"c2","audio_url":""}]}]}"#;
    let run = Harness::<Suno>::new(poll("MUSIC")).run(|_| response(200, done));
    let Outcome::Task(TaskState::Succeeded(d)) = run.outcome else { panic!("expected success") };
    assert_eq!(d.outputs.len(), 1);
    assert_eq!(d.usage.extra, [("song".to_string(), 1)], "only the clips delivered are charged");

    let lyrics =
        r#"{"code":"success","data":[{"task_id":"t-1","status":"SUCCESS","data":[{"id":"l","text":"rain"}]}]}"#;
    let run = Harness::<Suno>::new(poll("LYRICS")).run(|_| response(200, lyrics));
    let Outcome::Task(TaskState::Succeeded(d)) = run.outcome else { panic!("expected success") };
    assert_eq!((d.outputs.len(), d.usage.extra.clone()), (0, vec![("lyrics".to_string(), 1)]));

    let failed = r#"{"code":"success","data":[{"task_id":"t-1","status":"FAILURE","fail_reason":"lyrics rejected"}]}"#;
    let run = Harness::<Suno>::new(poll("MUSIC")).run(|_| response(200, failed));
    assert!(matches!(run.outcome, Outcome::Task(TaskState::Failed(ref e)) if e.message.contains("lyrics rejected")));
    // A poll Suno refuses is a fault (asked again), never the job's end.
    let refused = Harness::<Suno>::new(poll("MUSIC")).run(|_| response(200, r#"{"code":"error","message":"busy"}"#));
    assert!(matches!(refused.outcome, Outcome::Failed(ref e) if e.kind == ErrorKind::UpstreamFault));
    // A song with no audio is not a success; garbage is a fault, never a panic.
    let empty = r#"{"code":"success","data":[{"task_id":"t-1","status":"SUCCESS","data":[]}]}"#;
    assert!(matches!(Harness::<Suno>::new(poll("MUSIC")).run(|_| response(200, empty)).outcome, Outcome::Failed(_)));
    assert!(matches!(Harness::<Suno>::new(poll("MUSIC")).run(|_| response(200, "<html>")).outcome, Outcome::Failed(_)));
}

#[test]
fn a_fetch_is_relayed_as_suno_wrote_it() {
    let mut c = call("suno.fetch", "", "");
    c.context.path_params = vec![("id".into(), "t-1".into())];
    let answer = r#"{"code":"success","data":{"task_id":"t-1","status":"QUEUED"}}"#;
    let run = Harness::<Suno>::new(c).run(|_| response(200, answer));
    assert_eq!(run.requests[0].path, "/suno/fetch/t-1");
    let Outcome::Reply(r) = run.outcome else { panic!("expected Suno's answer") };
    assert_eq!((text(&r.body), r.error.is_none()), (answer.to_string(), true));
}
