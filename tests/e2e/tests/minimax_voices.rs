//! MiniMax's voices through the real binary (`compat-protocols.md` §1.2–1.3): a voice cloned
//! from an upload, or designed from a description, is its maker's, on the key that made it;
//! every synthesis naming it runs on that key (the mock refuses a voice of another account,
//! as MiniMax does); its one-time fee is charged once, with the first synthesis charged, and
//! never when that synthesis is refused; another consumer can neither use, list nor delete it.

use std::time::Duration;
use tollgate_e2e::{channel, eventually, http, pricing_setting, Gateway, Mock};

/// Speech at 0.01 per character; a clone's preview free, a design's at 0.01 per character; a
/// cloned voice's fee 5, a designed one's 3.
const PRICES: &str = "[models.\"speech-2.8-hd\"]\ncharacters_per_10k = \"100\"\n\
    [ops.\"minimax/minimax.voice_clone\"]\nfirst_use = \"5\"\n\
    [ops.\"minimax/minimax.voice_design\"]\ncharacters_per_10k = \"100\"\nfirst_use = \"3\"\n";

fn post(gw: &Gateway, key: &str, path: &str, json: &str) -> http::Response {
    let auth = format!("Bearer {key}");
    http::request(
        &gw.addr,
        "POST",
        path,
        &[("authorization", &auth), ("content-type", "application/json")],
        json.as_bytes(),
    )
}

/// Uploads audio for a clone on the MiniMax proxy's route (its purpose in the path).
fn upload_sample(gw: &Gateway, key: &str) -> u64 {
    let boundary = "e2e-voice-0c4e";
    let body = format!(
        "--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"me.wav\"\r\nContent-Type: audio/wav\r\n\r\nRIFF-sample\r\n--{boundary}--\r\n"
    );
    let auth = format!("Bearer {key}");
    let content_type = format!("multipart/form-data; boundary={boundary}");
    let headers = [("authorization", auth.as_str()), ("content-type", content_type.as_str())];
    let r = http::request(&gw.addr, "POST", "/v1/files/upload/voice_clone", &headers, body.as_bytes());
    assert_eq!(r.status, 200, "{}", r.text());
    r.json()["file"]["file_id"].as_u64().expect("a file id")
}

fn speak(gw: &Gateway, key: &str, voice: &str, text: &str) -> http::Response {
    let body = serde_json::json!({ "model": "speech-2.8-hd", "text": text, "voice_setting": { "voice_id": voice } });
    post(gw, key, "/v1/t2a_v2", &body.to_string())
}

fn ok(r: &http::Response) -> serde_json::Value {
    assert_eq!(r.status, 200, "{}", r.text());
    let v = r.json();
    assert_eq!(v["base_resp"]["status_code"], 0, "{v}");
    v
}

#[test]
fn a_made_voice_is_its_makers_on_its_key_and_its_fee_is_charged_once_on_first_use() {
    let mock = Mock::start();
    let ch = channel("mm", "minimax", &mock.url(), &["speech-2.8-hd"], &["mm-key", "mm-key-2"]);
    let gw =
        Gateway::start("minimax-voices", &[("minimax", "minimax.wasm")], &format!("{}{ch}", pricing_setting(PRICES)));
    let ann = gw.new_key("ann", "100");
    let bob = gw.new_key("bob", "1");

    // A clone of ann's upload runs on the key that has the upload (the other key's account
    // has no such file), and costs nothing yet.
    let file_id = upload_sample(&gw, &ann);
    let clone = format!(r#"{{"file_id":{file_id},"voice_id":"AnnVoice01"}}"#);
    ok(&post(&gw, &ann, "/v1/voice_clone", &clone));
    gw.balance_becomes("ann", 100_000_000);
    // Bob cannot clone from ann's file: not found, and MiniMax is not asked.
    let r = post(&gw, &bob, "/v1/voice_clone", &format!(r#"{{"file_id":{file_id},"voice_id":"BobVoice01"}}"#));
    assert_eq!(r.status, 404, "{}", r.text());

    // Every synthesis with the voice reaches its key (each would fail on the other): the
    // first is charged its 5 characters and the voice's fee, the next ones their characters.
    ok(&speak(&gw, &ann, "AnnVoice01", "hello"));
    gw.balance_becomes("ann", 100_000_000 - 50_000 - 5_000_000);
    for _ in 0..3 {
        ok(&speak(&gw, &ann, "AnnVoice01", "hello"));
    }
    gw.balance_becomes("ann", 100_000_000 - 4 * 50_000 - 5_000_000);
    // OpenAI's speech with the voice, too.
    let speech = r#"{"model":"speech-2.8-hd","input":"hi","voice":"AnnVoice01"}"#;
    let r = post(&gw, &ann, "/v1/audio/speech", speech);
    assert_eq!(r.status, 200, "{}", r.text());
    gw.balance_becomes("ann", 100_000_000 - 4 * 50_000 - 20_000 - 5_000_000);
    // Stock voices run on any key, free of fees.
    ok(&speak(&gw, &ann, "male-qn-qingse", "hey"));
    gw.balance_becomes("ann", 100_000_000 - 4 * 50_000 - 20_000 - 30_000 - 5_000_000);

    // Bob can neither speak with ann's voice nor delete it: not found, MiniMax not asked.
    let sent = mock.stats()["requests"].as_u64();
    assert_eq!(speak(&gw, &bob, "AnnVoice01", "hello").status, 404);
    let mixed = r#"{"model":"speech-2.8-hd","text":"a","timber_weights":[{"voice_id":"male-qn-qingse","weight":1},{"voice_id":"AnnVoice01","weight":1}]}"#;
    assert_eq!(post(&gw, &bob, "/v1/t2a_v2", mixed).status, 404, "nor mixed into another voice");
    let r = post(&gw, &bob, "/v1/delete_voice", r#"{"voice_type":"voice_cloning","voice_id":"AnnVoice01"}"#);
    assert_eq!(r.status, 404, "{}", r.text());
    assert_eq!(mock.stats()["requests"].as_u64(), sent, "MiniMax was not asked");

    // Bob designs a voice: its preview's 8 characters are charged, its fee is not yet.
    let design = r#"{"prompt":"a calm narrator","preview_text":"hi there"}"#;
    let designed = ok(&post(&gw, &bob, "/v1/voice_design", design));
    let bobs_voice = designed["voice_id"].as_str().expect("MiniMax's voice id").to_string();
    assert!(designed["trial_audio"].as_str().is_some_and(|a| !a.is_empty()), "{designed}");
    gw.balance_becomes("bob", 1_000_000 - 80_000);
    // Its first use needs the fee too: refused before MiniMax while the balance cannot pay,
    // and the fee stays due.
    let r = speak(&gw, &bob, &bobs_voice, "hello");
    assert_eq!(r.status, 402, "{}", r.text());
    let token = "Bearer admin-secret";
    let topup = [("authorization", token), ("content-type", "application/json")];
    let r = http::request(&gw.addr, "POST", "/admin/users/bob/topup", &topup, br#"{"amount":"10"}"#);
    assert_eq!(r.status, 200, "{}", r.text());
    gw.balance_becomes("bob", 11_000_000 - 80_000);
    let paid = eventually(Duration::from_secs(5), || speak(&gw, &bob, &bobs_voice, "hello").status == 200);
    assert!(paid, "the top-up reaches the gateway's wallets");
    gw.balance_becomes("bob", 11_000_000 - 80_000 - 50_000 - 3_000_000);

    // Each lists the stock voices and their own made voices only.
    let list = |key: &str| ok(&post(&gw, key, "/v1/get_voice", r#"{"voice_type":"all"}"#));
    let anns = list(&ann);
    assert_eq!(anns["voice_cloning"].as_array().map(|v| v.len()), Some(1), "{anns}");
    assert_eq!(anns["voice_cloning"][0]["voice_id"], "AnnVoice01");
    assert_eq!(anns["voice_generation"], serde_json::json!([]), "{anns}");
    assert!(anns["system_voice"].as_array().is_some_and(|v| !v.is_empty()), "{anns}");
    let bobs = list(&bob);
    assert_eq!(bobs["voice_cloning"], serde_json::json!([]), "{bobs}");
    assert_eq!(bobs["voice_generation"][0]["voice_id"].as_str(), Some(bobs_voice.as_str()), "{bobs}");
    // A consumer who made none is answered MiniMax's shape, empty, without MiniMax.
    let carl = gw.new_key("carl", "1");
    let sent = mock.stats()["requests"].as_u64();
    let carls = list(&carl);
    assert_eq!(carls["voice_cloning"], serde_json::json!([]), "{carls}");
    assert_eq!(mock.stats()["requests"].as_u64(), sent);

    // Ann deletes her voice, on its key.
    ok(&post(&gw, &ann, "/v1/delete_voice", r#"{"voice_type":"voice_cloning","voice_id":"AnnVoice01"}"#));
    let (fine, report) = gw.verify_ledger();
    assert!(fine, "{report}");
}

#[test]
fn a_voice_request_the_vendor_would_read_otherwise_is_refused_before_it() {
    let mock = Mock::start();
    let ch = channel("mm", "minimax", &mock.url(), &["speech-2.8-hd"], &["mm-key"]);
    let gw = Gateway::start(
        "minimax-voices-bad",
        &[("minimax", "minimax.wasm")],
        &format!("{}{ch}", pricing_setting(PRICES)),
    );
    let sent = mock.stats()["requests"].as_u64();
    for (path, body) in [
        ("/v1/voice_clone", r#"{"voice_id":"AnnVoice01"}"#),
        ("/v1/voice_clone", r#"{"file_id":1,"voice_id":"AnnVoice01","text":5}"#),
        ("/v1/voice_design", r#"{"prompt":"calm"}"#),
        ("/v1/voice_design", r#"{"prompt":"calm","preview_text":"a","preview_text":"a much longer text"}"#),
        ("/v1/delete_voice", r#"{"voice_type":"voice_cloning"}"#),
    ] {
        let r = post(&gw, &gw.key, path, body);
        assert_eq!(r.status, 400, "{path} {body}: {}", r.text());
    }
    assert_eq!(mock.stats()["requests"].as_u64(), sent, "MiniMax was not asked");
}
