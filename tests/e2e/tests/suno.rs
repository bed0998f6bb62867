//! Suno music through the real binary, on the Suno API's own routes (`vendor-apis.md` §5): a
//! song submit answers Suno's body and becomes a task held two songs, polled on its key, its
//! clips archived, charged the clips made once; lyrics are charged as lyrics; a failed job
//! costs nothing; an account out of credits leaves the pool; another consumer's task is
//! not found.

use std::time::Duration;
use tollgate_e2e::{channel, eventually, http, pricing_setting, Gateway, Mock};

const PRICES: &str = "[models.\"chirp-v3-5\".units]\nsong = \"0.5\"\nlyrics = \"0.1\"\n";

fn call(gw: &Gateway, key: &str, method: &str, path: &str, body: &str) -> http::Response {
    let auth = format!("Bearer {key}");
    http::request(
        &gw.addr,
        method,
        path,
        &[("authorization", &auth), ("content-type", "application/json")],
        body.as_bytes(),
    )
}

fn finished(gw: &Gateway, id: &str) -> serde_json::Value {
    let mut last = serde_json::Value::Null;
    let ended = eventually(Duration::from_secs(60), || {
        last = call(gw, &gw.key, "GET", &format!("/v1/tasks/{id}"), "").json();
        matches!(last["status"].as_str(), Some("succeeded" | "failed" | "expired"))
    });
    assert!(ended, "the task never ended: {last}");
    last
}

#[test]
fn a_song_is_held_two_clips_archived_and_charged_the_clips_made_once() {
    let mock = Mock::start();
    // The first key's account has no credits left: its refusal sends the submit to the next.
    let ch = channel("suno", "suno", &mock.url(), &["chirp-v3-5"], &["poor-1", "suno-1"]);
    let extra = format!("fetch_allow_private_hosts = [\"127.0.0.1\"]\n{}{ch}", pricing_setting(PRICES));
    let gw = Gateway::start("suno", &[("suno", "suno.wasm")], &extra);

    let r = call(&gw, &gw.key, "POST", "/suno/submit/music", r#"{"prompt":"la la la","mv":"chirp-v3-5","tags":"pop"}"#);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["code"], "success", "Suno's own answer: {}", r.text());
    let suno_id = r.json()["data"].as_str().expect("Suno's task id").to_string();
    let task = r.header("x-tollgate-task-id").expect("the gateway's task").to_string();
    gw.balance_becomes("e2e", 10_000_000 - 1_000_000);
    let r = call(&gw, &gw.key, "GET", &format!("/suno/fetch/{suno_id}"), "");
    assert_eq!((r.status, r.json()["code"].as_str()), (200, Some("success")), "{}", r.text());
    // The account without credits was tried and left the pool.
    let states = call(&gw, "admin-secret", "GET", "/admin/channels", "").json();
    assert_eq!(states["channels"][0]["keys"][0]["state"], "disabled", "{states}");

    let done = finished(&gw, &task);
    assert_eq!(done["status"], "succeeded", "{done}");
    for n in 0..2 {
        let clip = call(&gw, &gw.key, "GET", &format!("/v1/tasks/{task}/content/{n}"), "");
        assert_eq!((clip.status, clip.header("content-type")), (200, Some("audio/mpeg")), "clip {n}");
    }
    gw.balance_becomes("e2e", 10_000_000 - 1_000_000);

    // Lyrics are charged as lyrics; a job Suno fails costs nothing.
    let r = call(&gw, &gw.key, "POST", "/suno/submit/LYRICS", r#"{"prompt":"rain","mv":"chirp-v3-5"}"#);
    let lyrics = r.header("x-tollgate-task-id").expect("a task").to_string();
    let r = call(&gw, &gw.key, "POST", "/suno/submit/MUSIC", r#"{"prompt":"fail","mv":"chirp-v3-5"}"#);
    let failed = r.header("x-tollgate-task-id").expect("a task").to_string();
    assert_eq!(finished(&gw, &lyrics)["status"], "succeeded");
    assert_eq!(finished(&gw, &failed)["status"], "failed");
    gw.balance_becomes("e2e", 10_000_000 - 1_100_000);

    // Another consumer's fetch is not found, and Suno is not asked; what Suno would refuse
    // is refused before it.
    let other = gw.create_key("other", "10");
    assert!(eventually(Duration::from_secs(5), || call(&gw, &other, "GET", "/v1/tasks", "").status == 200));
    let before = mock.stats()["requests"].as_u64().unwrap();
    let r = call(&gw, &other, "GET", &format!("/suno/fetch/{suno_id}"), "");
    assert_eq!((r.status, r.error_code().as_str()), (404, "not_found"), "{}", r.text());
    let r = call(&gw, &gw.key, "POST", "/suno/submit/video", r#"{"prompt":"x","mv":"chirp-v3-5"}"#);
    assert_eq!(r.status, 400, "{}", r.text());
    let r = call(&gw, &gw.key, "POST", "/suno/submit/music", r#"{"prompt":"x","mv":"chirp-v3-5","MV":"chirp-v4"}"#);
    assert_eq!(r.status, 400, "{}", r.text());
    assert_eq!(mock.stats()["requests"].as_u64().unwrap(), before);
    let (ok, report) = gw.verify_ledger();
    assert!(ok, "{report}");
}
