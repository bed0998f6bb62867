//! SiliconFlow's reference audio (custom voices) through the real binary, on the routes the
//! SiliconFlow proxy's clients call (`compat-protocols.md` §2.1) and on SiliconFlow's own: an
//! upload answers SiliconFlow's `{"uri"}` and the gateway remembers the key and the user that
//! made it; a list shows a consumer their own references, from every key, and no one else's;
//! a delete runs on the key that made the reference, for its uploader only. The channel has
//! two keys, and the mock keeps each reference in the account that made it, as SiliconFlow
//! does: a delete on the other key would not find it. These calls are free.

use std::time::Duration;
use tollgate_e2e::{channel, eventually, http, Gateway, Mock};

const MODEL: &str = "FunAudioLLM/CosyVoice2-0.5B";
const BOUNDARY: &str = "e2e-sf-reference-9c2";

fn gateway(mock: &Mock, name: &str, keys: &[&str]) -> Gateway {
    let ch = channel("sf", "siliconflow", &mock.url(), &[MODEL], keys);
    Gateway::start(name, &[("siliconflow", "siliconflow.wasm")], &ch)
}

fn call(gw: &Gateway, key: &str, method: &str, path: &str, body: &[u8], content_type: &str) -> http::Response {
    let auth = format!("Bearer {key}");
    http::request(&gw.addr, method, path, &[("authorization", &auth), ("content-type", content_type)], body)
}

fn post(gw: &Gateway, key: &str, path: &str, json: &str) -> http::Response {
    call(gw, key, "POST", path, json.as_bytes(), "application/json")
}

/// A new consumer key, once the gateway accepts it.
fn new_key(gw: &Gateway, name: &str) -> String {
    let key = gw.create_key(name, "10");
    gw.wait_for_key(&key);
    key
}

/// A multipart upload: the text fields, then the audio as `file` (when given).
fn form(fields: &[(&str, &str)], audio: Option<&[u8]>) -> Vec<u8> {
    let mut body = Vec::new();
    for (name, value) in fields {
        let part = format!("--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"{name}\"\r\n\r\n{value}\r\n");
        body.extend(part.bytes());
    }
    if let Some(audio) = audio {
        let head = format!(
            "--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"me.mp3\"\r\nContent-Type: audio/mpeg\r\n\r\n"
        );
        body.extend(head.bytes());
        body.extend_from_slice(audio);
        body.extend(b"\r\n");
    }
    body.extend(format!("--{BOUNDARY}--\r\n").bytes());
    body
}

fn form_upload(gw: &Gateway, key: &str, path: &str, fields: &[(&str, &str)], audio: Option<&[u8]>) -> http::Response {
    let content_type = format!("multipart/form-data; boundary={BOUNDARY}");
    call(gw, key, "POST", path, &form(fields, audio), &content_type)
}

/// Uploads a reference for `key` (as JSON or as a form, in turn); its uri.
fn upload(gw: &Gateway, key: &str, name: &str, as_form: bool) -> String {
    let r = if as_form {
        let fields = [("model", MODEL), ("customName", name), ("text", "hello there")];
        form_upload(gw, key, "/v1/audio/reference", &fields, Some(b"ID3\x04 not really mp3"))
    } else {
        let body = format!(
            r#"{{"model":"{MODEL}","customName":"{name}","text":"hello there","audio":"data:audio/mpeg;base64,SUQzBAAAAAAA"}}"#
        );
        post(gw, key, "/v1/audio/reference", &body)
    };
    assert_eq!(r.status, 200, "{}", r.text());
    // SiliconFlow's own answer, as it wrote it.
    let v = r.json();
    assert_eq!(v.as_object().map(|o| o.len()), Some(1), "{v}");
    let uri = v["uri"].as_str().expect("the reference's uri").to_string();
    assert!(uri.starts_with(&format!("speech:{name}:")), "{uri}");
    uri
}

/// The uris a consumer's list shows (on `path`), sorted.
fn listed(gw: &Gateway, key: &str, path: &str) -> Vec<String> {
    let r = call(gw, key, "GET", path, b"", "application/json");
    assert_eq!(r.status, 200, "{}", r.text());
    let mut uris: Vec<String> = r.json()["results"]
        .as_array()
        .unwrap_or_else(|| panic!("SiliconFlow's list: {}", r.text()))
        .iter()
        .map(|e| {
            assert_eq!(e["model"], MODEL, "each entry as SiliconFlow lists it: {e}");
            e["uri"].as_str().expect("uri").to_string()
        })
        .collect();
    uris.sort();
    uris
}

/// The uris the mock holds in one upstream account, asked directly.
fn on_upstream(mock: &Mock, upstream_key: &str) -> Vec<String> {
    let auth = format!("Bearer {upstream_key}");
    let r = http::request(&mock.addr, "GET", "/v1/audio/voice/list", &[("authorization", &auth)], b"");
    r.json()["results"].as_array().expect("results").iter().map(|e| e["uri"].as_str().unwrap().to_string()).collect()
}

fn requests(mock: &Mock) -> u64 {
    mock.stats()["requests"].as_u64().unwrap()
}

#[test]
fn each_user_sees_and_deletes_only_their_own_references_from_every_key() {
    let mock = Mock::start();
    let gw = gateway(&mock, "sf-references", &["sf-one", "sf-two"]);
    let (alice, bob, carol) = (new_key(&gw, "alice"), new_key(&gw, "bob"), new_key(&gw, "carol"));
    // The pool takes its two keys in turn: alice's references land on both, bob's beside them.
    let mut hers = vec![upload(&gw, &alice, "alice-1", false), upload(&gw, &alice, "alice-2", true)];
    let mut his = vec![upload(&gw, &bob, "bob-1", true), upload(&gw, &bob, "bob-2", false)];
    hers.push(upload(&gw, &alice, "alice-3", false));
    hers.sort();
    his.sort();
    let accounts = [on_upstream(&mock, "sf-one"), on_upstream(&mock, "sf-two")];
    for (account, uris) in ["sf-one", "sf-two"].iter().zip(&accounts) {
        assert!(uris.iter().any(|u| hers.contains(u)), "{account} holds none of alice's: {uris:?}");
        assert!(uris.iter().any(|u| his.contains(u)), "{account} holds none of bob's: {uris:?}");
    }

    // Each sees their own, gathered from both keys, on the proxy's route and SiliconFlow's.
    assert_eq!(listed(&gw, &alice, "/v1/audio/reference"), hers);
    assert_eq!(listed(&gw, &bob, "/v1/audio/reference"), his);
    assert_eq!(listed(&gw, &alice, "/v1/audio/voice/list"), hers);
    // A consumer with none is answered without asking SiliconFlow.
    let before = requests(&mock);
    assert_eq!(listed(&gw, &carol, "/v1/audio/reference"), Vec::<String>::new());
    assert_eq!(requests(&mock), before);

    // Bob cannot delete alice's reference: not found, SiliconFlow never asked, and it survives.
    let delete = |uri: &str| format!(r#"{{"uri":"{uri}"}}"#);
    let before = requests(&mock);
    for path in ["/v1/audio/reference/delete", "/v1/audio/voice/deletions"] {
        let r = post(&gw, &bob, path, &delete(&hers[0]));
        assert_eq!((r.status, r.error_code().as_str()), (404, "not_found"), "{}", r.text());
    }
    assert_eq!(requests(&mock), before);
    assert_eq!(listed(&gw, &alice, "/v1/audio/reference"), hers);

    // Alice can, on whichever key holds it; then it is gone, there and from her list.
    let r = post(&gw, &alice, "/v1/audio/reference/delete", &delete(&hers[0]));
    assert_eq!((r.status, r.text().as_str()), (200, r#""success""#));
    let gone = hers.remove(0);
    assert_eq!(listed(&gw, &alice, "/v1/audio/reference"), hers);
    assert!(!on_upstream(&mock, "sf-one").contains(&gone) && !on_upstream(&mock, "sf-two").contains(&gone));
    // Deleted twice: SiliconFlow's own refusal, as it wrote it.
    let r = post(&gw, &alice, "/v1/audio/voice/deletions", &delete(&gone));
    assert_eq!((r.status, r.json()["code"].as_i64()), (400, Some(20012)), "{}", r.text());
    let r = post(&gw, &alice, "/v1/audio/voice/deletions", &delete(&hers[0]));
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(listed(&gw, &alice, "/v1/audio/reference"), hers[1..]);
    assert_eq!(listed(&gw, &bob, "/v1/audio/reference"), his);

    // All of it was free.
    for name in ["alice", "bob", "carol"] {
        let unchanged = eventually(Duration::from_secs(2), || gw.balance_micros(name) == 10_000_000);
        assert!(unchanged, "{name} was charged: {} micros left", gw.balance_micros(name));
    }
    let (ok, report) = gw.verify_ledger();
    assert!(ok, "{report}");
}

#[test]
fn bad_uploads_and_deletes_are_refused_with_what_to_fix_and_siliconflows_refusals_come_back_as_written() {
    let mock = Mock::start();
    let gw = gateway(&mock, "sf-references-bad", &["sf-one"]);
    let key = new_key(&gw, "dana");
    let before = requests(&mock);
    let refused = |r: http::Response, says: &str| {
        assert_eq!(r.status, 400, "{}", r.text());
        let message = r.json()["error"]["message"].as_str().unwrap_or_default().to_string();
        assert!(message.contains(says), "the error should name {says}: {}", r.text());
    };
    refused(post(&gw, &key, "/v1/audio/reference", "not json"), "JSON");
    refused(
        post(
            &gw,
            &key,
            "/v1/audio/reference",
            &format!(r#"{{"model":"{MODEL}","text":"hi","audio":"data:audio/mpeg;base64,AA"}}"#),
        ),
        "'customName'",
    );
    refused(
        post(
            &gw,
            &key,
            "/v1/audio/reference",
            &format!(r#"{{"model":"{MODEL}","customName":"n","text":"hi","audio":"AAAA"}}"#),
        ),
        "data URI",
    );
    let fields = [("model", MODEL), ("customName", "n"), ("text", "hi")];
    refused(form_upload(&gw, &key, "/v1/audio/reference", &fields, None), "'file'");
    refused(post(&gw, &key, "/v1/audio/reference/delete", "{}"), "'uri'");
    refused(post(&gw, &key, "/v1/audio/reference/delete", r#"{"URI":"speech:n:a:1"}"#), "'uri'");
    assert_eq!(requests(&mock), before, "SiliconFlow is never asked what it would refuse");
    // A uri no one uploaded through the gateway is not found.
    let r = post(&gw, &key, "/v1/audio/reference/delete", r#"{"uri":"speech:n:a:1"}"#);
    assert_eq!(r.status, 404, "{}", r.text());

    // What SiliconFlow refuses comes back in its own shape: a key it does not know is its
    // plain string, on SiliconFlow's own route too.
    let bad = gateway(&mock, "sf-references-badkey", &["bad-sf"]);
    let key = new_key(&bad, "erin");
    let fields = [("model", MODEL), ("customName", "n"), ("text", "hi")];
    let r = form_upload(&bad, &key, "/v1/uploads/audio/voice", &fields, Some(b"audio"));
    assert_eq!((r.status, r.text().as_str()), (401, r#""Invalid token""#));
}
