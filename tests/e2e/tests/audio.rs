//! OpenAI's audio routes on the gateway: speech relayed (its bytes never through the plugin),
//! transcriptions with the consumer's file streamed to the vendor, each billed as the vendor
//! reports it; and the aliases older clients call.

use std::time::Duration;
use tollgate_e2e::{channel, eventually, http, pricing_setting, Gateway, Mock};

const BOUNDARY: &str = "tollgate-test-boundary";

fn form(fields: &[(&str, &str)], file: &[u8]) -> Vec<u8> {
    let mut body = Vec::new();
    for (name, value) in fields {
        body.extend(
            format!("--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"{name}\"\r\n\r\n{value}\r\n").bytes(),
        );
    }
    body.extend(
        format!("--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.wav\"\r\nContent-Type: audio/wav\r\n\r\n")
            .bytes(),
    );
    body.extend_from_slice(file);
    body.extend(format!("\r\n--{BOUNDARY}--\r\n").bytes());
    body
}

#[test]
fn speech_and_transcriptions_are_served_and_billed_as_the_vendor_reports() {
    let mock = Mock::start();
    let ch = channel("oa", "openai", &mock.url(), &["tts-1", "whisper-1", "dall-e-3"], &["up"]);
    // Speech by characters (0.01 each), transcription by seconds (0.1 each), images per image.
    let prices = "[models.\"tts-1\"]\ncharacters_per_10k = \"100\"\n[models.\"whisper-1\"]\nper_second = \"0.1\"\nmax_seconds = 30\n[models.\"dall-e-3\"]\nper_image = \"0.04\"\n";
    let gw = Gateway::start("audio", &[("openai", "openai.wasm")], &format!("{}{ch}", pricing_setting(prices)));
    let key = gw.create_key("audio", "10");
    gw.wait_for_key(&key);
    let auth = format!("Bearer {key}");
    let spent = |micros: i64| eventually(Duration::from_secs(5), || gw.balance_micros("audio") == 10_000_000 - micros);

    let r = http::request(
        &gw.addr,
        "POST",
        "/v1/audio/speech",
        &[("authorization", &auth)],
        br#"{"model":"tts-1","input":"Hello","voice":"alloy","response_format":"wav"}"#,
    );
    assert_eq!((r.status, r.header("content-type")), (200, Some("audio/wav")), "{}", r.text());
    assert_eq!(r.body, b"Hello".repeat(4), "the vendor's bytes, relayed");
    assert!(spent(50_000), "5 characters at 0.01: {}", gw.balance_micros("audio"));

    // 48 bytes of "audio": the mock hears 3 seconds.
    let content_type = format!("multipart/form-data; boundary={BOUNDARY}");
    let headers = [("authorization", auth.as_str()), ("content-type", content_type.as_str())];
    let audio = b"a long recording of words spoken into the mic.!!";
    let r =
        http::request(&gw.addr, "POST", "/v1/audio/transcriptions", &headers, &form(&[("model", "whisper-1")], audio));
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["text"], std::str::from_utf8(audio).unwrap());
    assert!(spent(50_000 + 300_000), "3 seconds at 0.1: {}", gw.balance_micros("audio"));
    // Asked as plain text (which carries no usage): still billed the seconds the vendor heard.
    let text = form(&[("model", "whisper-1"), ("response_format", "text")], audio);
    let r = http::request(&gw.addr, "POST", "/v1/audio/transcriptions", &headers, &text);
    assert_eq!((r.status, r.text().trim()), (200, std::str::from_utf8(audio).unwrap()), "{}", r.text());
    assert!(spent(50_000 + 600_000), "3 more seconds at 0.1: {}", gw.balance_micros("audio"));
    // The model given twice: refused before the vendor, whichever copy it would read.
    let twice = form(&[("model", "whisper-1"), ("model", "gpt-4o-transcribe")], audio);
    let r = http::request(&gw.addr, "POST", "/v1/audio/transcriptions", &headers, &twice);
    assert_eq!((r.status, r.error_code().as_str()), (400, "duplicate_model"), "{}", r.text());
    let r = http::request(&gw.addr, "POST", "/v1/audio/transcriptions", &headers, &form(&[], audio));
    assert_eq!((r.status, r.error_code().as_str()), (400, "missing_model"), "{}", r.text());

    // The singular images route of older SiliconFlow clients, and their model list.
    let r = http::request(
        &gw.addr,
        "POST",
        "/v1/image/generations",
        &[("authorization", &auth)],
        br#"{"model":"dall-e-3","prompt":"a cat"}"#,
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(spent(50_000 + 600_000 + 40_000));
    let r = http::request(&gw.addr, "GET", "/v1/user/models", &[("authorization", &auth)], b"");
    assert!(r.json()["data"].as_array().unwrap().iter().any(|m| m["id"] == "whisper-1"), "{}", r.text());
    assert!(gw.verify_ledger().0, "{}", gw.verify_ledger().1);
}
