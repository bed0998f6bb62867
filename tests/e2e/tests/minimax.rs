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

#[test]
fn a_channel_keeps_its_synthesized_speech_in_the_minimax_proxys_layout() {
    let mock = Mock::start();
    let ch = channel("mm", "minimax", &mock.url(), &["speech-2.8-hd"], &["mm-key"]);
    let gw = Gateway::start(
        "minimax-speech-archive",
        &[("minimax", "minimax.wasm")],
        &format!("{ch}archive_speech = true\n"),
    );
    let r = gw.post("/v1/audio/speech", r#"{"model":"speech-2.8-hd","input":"今天好"}"#);
    assert_eq!(r.status, 200, "{}", r.text());
    let r = gw.post("/v1/t2a_v2", r#"{"model":"speech-2.8-hd","text":"hello","audio_setting":{"format":"wav"}}"#);
    assert_eq!(r.status, 200, "{}", r.text());
    // <data>/speech/<user id>/<YYYY-MM-DD>/<HHMMSS>_<8 hex>.<format>, each with its .txt.
    let files = || tollgate_e2e::files_under(&gw.dir.join("data/speech"));
    assert!(tollgate_e2e::eventually(std::time::Duration::from_secs(5), || files().len() == 4), "{:?}", files());
    let files = files();
    let audio: Vec<_> = files.iter().filter(|p| p.extension().is_some_and(|e| e != "txt")).collect();
    let mut kept: Vec<(String, Vec<u8>, String)> = audio
        .iter()
        .map(|p| {
            let sidecar = std::fs::read_to_string(p.with_extension("txt")).unwrap();
            let ext = p.extension().unwrap().to_string_lossy().into_owned();
            (ext, std::fs::read(p).unwrap(), sidecar)
        })
        .collect();
    kept.sort();
    assert_eq!((kept[0].0.as_str(), &kept[0].1), ("mp3", &fake_audio("今天好")));
    assert!(kept[0].2.ends_with("text:\n今天好\n"), "{}", kept[0].2);
    // The mock answers WAV for a WAV request: a 44-byte header, then the text's bytes as samples.
    let wav = &kept[1].1;
    assert_eq!(kept[1].0, "wav");
    assert!(wav.starts_with(b"RIFF") && wav.len() == 44 + 6 && wav.ends_with(b"hello\0"), "the hex decoded: {wav:?}");
    assert!(kept[1].2.contains("key: e2e") && kept[1].2.ends_with("text:\nhello\n"), "{}", kept[1].2);
    let day = audio[0].parent().unwrap();
    let name = day.file_name().unwrap().to_string_lossy();
    assert!(name.len() == 10 && name.as_bytes()[4] == b'-', "a day folder: {name}");
    let stem = audio[0].file_stem().unwrap().to_string_lossy();
    assert!(stem.len() == 15 && stem.as_bytes()[6] == b'_', "HHMMSS_8hex: {stem}");
}
