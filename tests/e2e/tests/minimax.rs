//! The `minimax` plugin through the real binary: `/v1/audio/speech` mapped onto T2A v2 with the
//! hex audio decoded, and the native `POST /v1/t2a_v2` byte-compatible with MiniMax in both
//! modes, errors included.

use tollgate_e2e::{channel, http, Gateway, Mock};

fn fake_audio(text: &str) -> Vec<u8> {
    let mut audio = b"ID3".to_vec();
    while audio.len() < 64 {
        audio.extend_from_slice(text.as_bytes());
    }
    audio
}

fn gateways(mock: &Mock) -> (Gateway, Gateway) {
    let good = channel("mm", "minimax", &mock.url(), &["speech-2.8-hd"], &["mm-key"]);
    let bad = channel("mm-bad", "minimax", &mock.url(), &["speech-2.8-hd"], &["bad-mm-key"]);
    (
        Gateway::start("minimax", &[("minimax", "minimax.wasm")], &good),
        Gateway::start("minimax-bad", &[("minimax", "minimax.wasm")], &bad),
    )
}

#[test]
fn speech_returns_decoded_audio() {
    let mock = Mock::start();
    let (gw, bad) = gateways(&mock);
    let r = gw.post("/v1/audio/speech", r#"{"model":"speech-2.8-hd","input":"今天好","voice":"male-qn-qingse"}"#);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("content-type"), Some("audio/mpeg"));
    assert_eq!(r.body, fake_audio("今天好"));
    let sent = &mock.last_body("/v1/t2a_v2")["json"];
    assert_eq!(sent["text"], "今天好");
    assert_eq!(sent["voice_setting"]["voice_id"], "male-qn-qingse");

    // Bad input is refused before the upstream; a bad upstream key is classified.
    let r = gw.post("/v1/audio/speech", r#"{"model":"speech-2.8-hd","input":""}"#);
    assert_eq!(r.status, 400, "{}", r.text());
    let r = bad.post("/v1/audio/speech", r#"{"model":"speech-2.8-hd","input":"hi"}"#);
    assert_eq!((r.status, r.error_code().as_str()), (502, "upstream_unauthorized"), "{}", r.text());
}

#[test]
fn native_t2a_is_byte_compatible() {
    let mock = Mock::start();
    let (gw, bad) = gateways(&mock);
    let body = r#"{"model":"speech-2.8-hd","text":"hello","stream":false,"voice_setting":{"voice_id":"x"}}"#;
    let through = gw.post("/v1/t2a_v2", body);
    let direct =
        http::request(&mock.addr, "POST", "/v1/t2a_v2", &[("authorization", "Bearer mm-key")], body.as_bytes());
    assert_eq!(through.status, 200);
    let (mut a, mut b) = (through.json(), direct.json());
    // trace ids differ per call; everything else is the vendor's answer, unchanged.
    a["trace_id"] = serde_json::Value::Null;
    b["trace_id"] = serde_json::Value::Null;
    assert_eq!(a, b);
    assert_eq!(mock.last_body("/v1/t2a_v2")["body"], body, "the consumer's body went upstream as it was");
    assert_eq!(hex_decode(a["data"]["audio"].as_str().unwrap()), fake_audio("hello"));

    // Stream mode: the same events as MiniMax sends, no [DONE] added.
    let stream_body = body.replace("\"stream\":false", "\"stream\":true");
    let through = gw.post("/v1/t2a_v2", &stream_body);
    assert_eq!(through.header("content-type"), Some("text/event-stream"));
    let direct =
        http::request(&mock.addr, "POST", "/v1/t2a_v2", &[("authorization", "Bearer mm-key")], stream_body.as_bytes());
    let strip = |d: Vec<String>| -> Vec<serde_json::Value> {
        d.iter()
            .map(|e| {
                let mut v: serde_json::Value = serde_json::from_str(e).unwrap();
                v["trace_id"] = serde_json::Value::Null;
                v
            })
            .collect()
    };
    let (t, d) = (strip(through.sse_data()), strip(direct.sse_data()));
    assert_eq!(t, d);
    assert_eq!(t.last().unwrap()["extra_info"]["usage_characters"], 5);

    // A bad upstream key: MiniMax's own error body, relayed verbatim (in stream mode MiniMax
    // answers it as plain JSON, and so does the gateway).
    let r = bad.post("/v1/t2a_v2", &stream_body);
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["base_resp"]["status_code"], 1004, "{}", r.text());
    // That key is now disabled: the channel has no other, so the gateway says so.
    let r = bad.post("/v1/t2a_v2", body);
    assert_eq!((r.status, r.error_code().as_str()), (503, "upstream_keys_unavailable"), "{}", r.text());
}

fn hex_decode(s: &str) -> Vec<u8> {
    (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap()).collect()
}
