//! SiliconFlow's reference audio (custom voices) through the real binary, on the routes the
//! SiliconFlow proxy's clients call (`compat-protocols.md` §2.1) and on SiliconFlow's own: an
//! upload answers SiliconFlow's `{"uri"}` and the gateway remembers the key and the user that
//! made it; a list shows a consumer their own references, from every key, and no one else's;
//! a delete runs on the key that made the reference, for its uploader only. The channel has
//! two keys, and the mock keeps each reference in the account that made it, as SiliconFlow
//! does: a delete on the other key would not find it. These calls are free. A speech call
//! naming a reference as its `voice` runs on the key that uploaded it (the mock, as
//! SiliconFlow, refuses another account's), for its uploader only, charged its characters.

use std::time::Duration;
use tollgate_e2e::{channel, eventually, http, pricing_setting, Gateway, Mock};

const MODEL: &str = "FunAudioLLM/CosyVoice2-0.5B";
const BOUNDARY: &str = "e2e-sf-reference-9c2";

fn gateway(mock: &Mock, name: &str, keys: &[&str]) -> Gateway {
    gateway_with(mock, name, keys, "")
}

/// With `extra` settings before the channel (a price table).
fn gateway_with(mock: &Mock, name: &str, keys: &[&str], extra: &str) -> Gateway {
    let ch = channel("sf", "siliconflow", &mock.url(), &[MODEL], keys);
    Gateway::start(name, &[("siliconflow", "siliconflow.wasm")], &format!("{extra}{ch}"))
}

fn call(gw: &Gateway, key: &str, method: &str, path: &str, body: &[u8], content_type: &str) -> http::Response {
    let auth = format!("Bearer {key}");
    http::request(&gw.addr, method, path, &[("authorization", &auth), ("content-type", content_type)], body)
}

fn post(gw: &Gateway, key: &str, path: &str, json: &str) -> http::Response {
    call(gw, key, "POST", path, json.as_bytes(), "application/json")
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
    let (alice, bob, carol) = (gw.new_key("alice", "10"), gw.new_key("bob", "10"), gw.new_key("carol", "10"));
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
    let key = gw.new_key("dana", "10");
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
    let key = bad.new_key("erin", "10");
    let fields = [("model", MODEL), ("customName", "n"), ("text", "hi")];
    let r = form_upload(&bad, &key, "/v1/uploads/audio/voice", &fields, Some(b"audio"));
    assert_eq!((r.status, r.text().as_str()), (401, r#""Invalid token""#));
}

/// OpenAI's speech on the gateway, as `key`, with `voice`.
fn speak(gw: &Gateway, key: &str, voice: &str, input: &str) -> http::Response {
    let body = serde_json::json!({ "model": MODEL, "input": input, "voice": voice, "response_format": "mp3" });
    post(gw, key, "/v1/audio/speech", &body.to_string())
}

/// The synthesis succeeded: the mock's audio (the input repeated four times), relayed.
fn spoken(r: &http::Response, input: &str) {
    assert_eq!((r.status, r.header("content-type")), (200, Some("audio/mpeg")), "{}", r.text());
    assert_eq!(r.body, input.repeat(4).into_bytes(), "SiliconFlow's audio, relayed");
}

/// The calls each upstream key served so far.
fn by_key(mock: &Mock, upstream_key: &str) -> u64 {
    mock.stats()["by_key"][upstream_key].as_u64().unwrap_or(0)
}

#[test]
fn speech_with_a_reference_runs_on_the_key_that_uploaded_it_for_its_uploader_only() {
    let mock = Mock::start();
    // Speech at 0.01 per character.
    let prices = pricing_setting(&format!("[models.\"{MODEL}\"]\ncharacters_per_10k = \"100\"\n"));
    let gw = gateway_with(&mock, "sf-reference-speech", &["sf-one", "sf-two"], &prices);
    let (alice, bob) = (gw.new_key("alice", "10"), gw.new_key("bob", "10"));
    let spent = |name: &str, micros: i64| {
        let ok = eventually(Duration::from_secs(5), || gw.balance_micros(name) == 10_000_000 - micros);
        assert!(ok, "{name}: {} micros left, expected {}", gw.balance_micros(name), 10_000_000 - micros);
    };
    let uri = upload(&gw, &alice, "alice-voice", false);
    let (holder, other) = match on_upstream(&mock, "sf-one").contains(&uri) {
        true => ("sf-one", "sf-two"),
        false => ("sf-two", "sf-one"),
    };
    assert!(on_upstream(&mock, holder).contains(&uri) && !on_upstream(&mock, other).contains(&uri));
    // SiliconFlow, as the mock, speaks a reference on its own account only.
    let direct = serde_json::json!({ "model": MODEL, "input": "hi", "voice": uri }).to_string();
    for (upstream_key, status) in [(other, 400), (holder, 200)] {
        let auth = format!("Bearer {upstream_key}");
        let r = http::request(&mock.addr, "POST", "/v1/audio/speech", &[("authorization", &auth)], direct.as_bytes());
        assert_eq!(r.status, status, "{upstream_key}: {}", r.text());
        if status == 400 {
            assert_eq!(r.json()["code"], 20012, "{}", r.text());
        }
    }

    // Every call with her voice reaches the key that holds it (taken in turn, half would
    // reach the other), each charged its characters: 5, and 2 for each CJK character.
    let (held_before, other_before) = (by_key(&mock, holder), by_key(&mock, other));
    for _ in 0..4 {
        spoken(&speak(&gw, &alice, &uri, "hello"), "hello");
    }
    spoken(&speak(&gw, &alice, &uri, "你好"), "你好");
    assert_eq!((by_key(&mock, holder), by_key(&mock, other)), (held_before + 5, other_before));
    spent("alice", 4 * 50_000 + 40_000);

    // Bob cannot speak with it: not found, SiliconFlow not asked, nothing charged.
    let before = requests(&mock);
    let r = speak(&gw, &bob, &uri, "hello");
    assert_eq!((r.status, r.error_code().as_str()), (404, "not_found"), "{}", r.text());
    // An input that is not text is refused before SiliconFlow too.
    let r = post(&gw, &alice, "/v1/audio/speech", &format!(r#"{{"model":"{MODEL}","input":7,"voice":"{uri}"}}"#));
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(r.json()["error"]["message"].as_str().unwrap_or_default().contains("'input'"), "{}", r.text());
    assert_eq!(requests(&mock), before);

    // A stock voice is SiliconFlow's own: any key serves it, both in turn.
    let (one, two) = (by_key(&mock, "sf-one"), by_key(&mock, "sf-two"));
    for _ in 0..4 {
        spoken(&speak(&gw, &bob, "FunAudioLLM/CosyVoice2-0.5B:alex", "hey"), "hey");
    }
    assert!(by_key(&mock, "sf-one") > one && by_key(&mock, "sf-two") > two, "{}", mock.stats());
    spent("bob", 4 * 30_000);
    spent("alice", 4 * 50_000 + 40_000);
    let (ok, report) = gw.verify_ledger();
    assert!(ok, "{report}");
}
