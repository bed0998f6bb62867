//! DashScope's own speech recognition and image edit routes end to end, against the mock's
//! DashScope (`tests/mock-vendor/src/dashscope.rs`): a file transcription is a task held the
//! most its files may last and charged the seconds DashScope heard, once; qwen-image-edit and
//! qwen3-asr-flash on the synchronous multimodal route are held their `n` images or their
//! audio's longest and charged what was made or heard; a refusal costs nothing; a hold beyond
//! the balance is refused before DashScope is asked; another consumer's task is not found.
//! OpenAI's transcriptions run qwen3-asr-flash on the multimodal route, the uploaded file's
//! bytes written into DashScope's JSON by the gateway and charged the seconds heard.
//! Prices are written in CNY, converted at the table's rate.

use std::time::Duration;
use tollgate_e2e::{channel, eventually, http, pricing_setting, Gateway, Mock};

/// The mock's CDN is on loopback (the channel's own host): the operator names it.
const LOCAL_CDN: &str = "fetch_allow_private_hosts = [\"127.0.0.1\"]\n";
/// 0.0005 CNY a second at 0.2 USD a yuan: 0.0001 USD a second; a file holds 12 hours, 4.32 USD.
/// An edited image: 10 CNY, 2 USD. qwen3-asr-flash: 0.001 CNY a second, 0.0002 USD.
const PRICES: &str = "[models.\"paraformer-v2\"]\ncurrency = \"CNY\"\nper_second = \"0.0005\"\n\
    [models.\"qwen-image-edit-plus\"]\ncurrency = \"CNY\"\nper_image = \"10\"\n\
    [models.\"qwen3-asr-flash\"]\ncurrency = \"CNY\"\nper_second = \"0.001\"\n\
    [rates]\nCNY = \"0.2\"\n";
const TRANSCRIPTION: &str = "/api/v1/services/audio/asr/transcription";
const MULTIMODAL: &str = "/api/v1/services/aigc/multimodal-generation/generation";

fn gateway(name: &str, mock: &Mock) -> Gateway {
    let models = ["paraformer-v2", "qwen-image-edit-plus", "qwen3-asr-flash"];
    let ch = channel("dashscope", "dashscope", &mock.url(), &models, &["ds-key"]);
    Gateway::start(name, &[("dashscope", "dashscope.wasm")], &format!("{LOCAL_CDN}{}{ch}", pricing_setting(PRICES)))
}

fn call(gw: &Gateway, key: &str, method: &str, path: &str, body: &str, asynchronous: bool) -> http::Response {
    let auth = format!("Bearer {key}");
    let mut headers = vec![("authorization", auth.as_str()), ("content-type", "application/json")];
    if asynchronous {
        headers.push(("x-dashscope-async", "enable"));
    }
    http::request(&gw.addr, method, path, &headers, body.as_bytes())
}

fn get(gw: &Gateway, key: &str, path: &str) -> http::Response {
    http::request(&gw.addr, "GET", path, &[("authorization", &format!("Bearer {key}"))], b"")
}

/// Waits for the gateway's task to end; its final status.
fn finished(gw: &Gateway, task: &str) -> String {
    let mut last = serde_json::Value::Null;
    let done = eventually(Duration::from_secs(60), || {
        last = get(gw, &gw.key, &format!("/v1/tasks/{task}")).json();
        matches!(last["status"].as_str(), Some("succeeded" | "failed"))
    });
    assert!(done, "the task never finished: {last}");
    last["status"].as_str().unwrap_or_default().to_string()
}

fn files(urls: &[&str]) -> String {
    serde_json::json!({ "model": "paraformer-v2", "input": { "file_urls": urls },
        "parameters": { "language_hints": ["zh", "en"] } })
    .to_string()
}

#[test]
fn a_file_transcription_is_held_its_files_longest_and_charged_the_seconds_dashscope_heard() {
    let mock = Mock::start();
    let gw = gateway("dashscope-asr", &mock);
    let body = files(&["https://files.example/a.wav?seconds=7", "https://files.example/b.mp3?seconds=5"]);
    let r = call(&gw, &gw.key, "POST", TRANSCRIPTION, &body, true);
    assert_eq!(r.status, 200, "{}", r.text());
    // DashScope's own answer, the gateway's task beside it; two files of 12 hours held.
    let ds_id = r.json()["output"]["task_id"].as_str().expect("DashScope's task id").to_string();
    let task = r.header("x-tollgate-task-id").expect("the gateway's task").to_string();
    gw.balance_becomes("e2e", 10_000_000 - 2 * 4_320_000);
    assert_eq!(mock.last_body(TRANSCRIPTION)["json"]["input"]["file_urls"][1], "https://files.example/b.mp3?seconds=5");

    assert_eq!(finished(&gw, &task), "succeeded");
    // Charged the 12 seconds heard, once: 12 × 0.0001 USD.
    gw.balance_becomes("e2e", 10_000_000 - 1_200);
    let r = call(&gw, &gw.key, "GET", &format!("/api/v1/tasks/{ds_id}"), "", false);
    assert_eq!(r.status, 200, "{}", r.text());
    let done = r.json();
    assert_eq!(
        (done["output"]["task_status"].as_str(), done["usage"]["duration"].as_u64()),
        (Some("SUCCEEDED"), Some(12))
    );
    let url = done["output"]["results"][0]["transcription_url"].as_str().expect("a transcript's URL").to_string();
    let transcript = http::request(&mock.addr, "GET", url.split_once(&mock.addr).unwrap().1, &[], b"").json();
    assert!(transcript["transcripts"][0]["text"].as_str().is_some(), "{transcript}");
    gw.balance_becomes("e2e", 10_000_000 - 1_200);

    // No file heard: the task failed and its hold came back.
    let r = call(&gw, &gw.key, "POST", TRANSCRIPTION, &files(&["https://files.example/fail.wav"]), true);
    assert_eq!(r.status, 200, "{}", r.text());
    let failed = r.header("x-tollgate-task-id").unwrap().to_string();
    assert_eq!(finished(&gw, &failed), "failed");
    gw.balance_becomes("e2e", 10_000_000 - 1_200);

    // Another consumer's query is not found; three files' hold is beyond the balance, 101 files
    // beyond DashScope's limit: refused before DashScope is asked.
    let other = gw.create_key("other", "10");
    assert!(eventually(Duration::from_secs(5), || get(&gw, &other, "/v1/tasks").status == 200));
    let before = mock.stats()["requests"].as_u64().unwrap();
    let r = call(&gw, &other, "GET", &format!("/api/v1/tasks/{ds_id}"), "", false);
    assert_eq!((r.status, r.error_code().as_str()), (404, "not_found"), "{}", r.text());
    let three = files(&["https://f.example/1.wav", "https://f.example/2.wav", "https://f.example/3.wav"]);
    let r = call(&gw, &gw.key, "POST", TRANSCRIPTION, &three, true);
    assert_eq!(r.status, 402, "{}", r.text());
    let r = call(&gw, &gw.key, "POST", TRANSCRIPTION, &files(&["https://f.example/1.wav"; 101]), true);
    assert_eq!(r.status, 400, "{}", r.text());
    assert_eq!(mock.stats()["requests"].as_u64().unwrap(), before);
    gw.balance_becomes("e2e", 10_000_000 - 1_200);
    let (ok, report) = gw.verify_ledger();
    assert!(ok, "{report}");
}

fn edit(text: &str, n: u64) -> String {
    serde_json::json!({ "model": "qwen-image-edit-plus", "input": { "messages": [{ "role": "user", "content": [
        { "image": "data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg==" },
        { "image": "https://img.example/dress.png" },
        { "text": text }] }] }, "parameters": { "n": n, "watermark": false } })
    .to_string()
}

fn hear(audio: &str) -> String {
    serde_json::json!({ "model": "qwen3-asr-flash", "input": { "messages": [
        { "role": "system", "content": [{ "text": "" }] },
        { "role": "user", "content": [{ "audio": audio }] }] }, "parameters": { "asr_options": { "enable_itn": false } } })
    .to_string()
}

#[test]
fn an_image_edit_and_a_synchronous_asr_on_dashscopes_multimodal_route_are_charged_what_was_made_or_heard() {
    let mock = Mock::start();
    let gw = gateway("dashscope-multimodal", &mock);
    // Two images made: 2 × 2 USD; DashScope's answer as it wrote it.
    let r = call(&gw, &gw.key, "POST", MULTIMODAL, &edit("make the dress blue", 2), false);
    assert_eq!(r.status, 200, "{}", r.text());
    let content = r.json()["output"]["choices"][0]["message"]["content"].clone();
    assert_eq!((content.as_array().map(Vec::len), r.json()["usage"]["image_count"].as_u64()), (Some(2), Some(2)));
    let sent = mock.last_body(MULTIMODAL)["json"].clone();
    assert!(sent["input"]["messages"][0]["content"][0]["image"]
        .as_str()
        .unwrap()
        .starts_with("data:image/png;base64,"));
    gw.balance_becomes("e2e", 10_000_000 - 4_000_000);
    // A refusal costs nothing.
    let r = call(&gw, &gw.key, "POST", MULTIMODAL, &edit("fail", 1), false);
    assert_eq!((r.status, r.json()["code"].as_str()), (400, Some("DataInspectionFailed")), "{}", r.text());
    gw.balance_becomes("e2e", 10_000_000 - 4_000_000);
    // Six images' hold (12 USD) is beyond the balance: refused before DashScope is asked.
    let before = mock.stats()["requests"].as_u64().unwrap();
    let r = call(&gw, &gw.key, "POST", MULTIMODAL, &edit("six", 6), false);
    assert_eq!(r.status, 402, "{}", r.text());
    assert_eq!(mock.stats()["requests"].as_u64().unwrap(), before);

    // Speech heard: 4 seconds of a URL, 2 of a data URI (63,999 bytes), at 0.0002 USD a second.
    let r = call(&gw, &gw.key, "POST", MULTIMODAL, &hear("https://audio.example/welcome.mp3?seconds=4"), false);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["usage"]["seconds"].as_u64(), Some(4), "{}", r.text());
    gw.balance_becomes("e2e", 10_000_000 - 4_000_000 - 800);
    let data = format!("data:audio/wav;base64,{}", "A".repeat(85_332));
    let r = call(&gw, &gw.key, "POST", MULTIMODAL, &hear(&data), false);
    assert_eq!((r.status, r.json()["usage"]["seconds"].as_u64()), (200, Some(2)), "{}", r.text());
    gw.balance_becomes("e2e", 10_000_000 - 4_000_000 - 1_200);
    let r = call(&gw, &gw.key, "POST", MULTIMODAL, &hear("https://audio.example/fail.mp3"), false);
    assert_eq!(r.status, 400, "{}", r.text());
    gw.balance_becomes("e2e", 10_000_000 - 4_000_000 - 1_200);
    // Five minutes held (0.06 USD) beyond a balance of 0.01: refused before DashScope.
    let poor = gw.create_key("poor", "0.01");
    assert!(eventually(Duration::from_secs(5), || get(&gw, &poor, "/v1/tasks").status == 200));
    let before = mock.stats()["requests"].as_u64().unwrap();
    let r = call(&gw, &poor, "POST", MULTIMODAL, &hear("https://audio.example/a.mp3"), false);
    assert_eq!(r.status, 402, "{}", r.text());
    assert_eq!(mock.stats()["requests"].as_u64().unwrap(), before);
    let (ok, report) = gw.verify_ledger();
    assert!(ok, "{report}");
}

const BOUNDARY: &str = "tollgate-dashscope-boundary";
const TRANSCRIPTIONS: &str = "/v1/audio/transcriptions";

/// A multipart form of text `fields` and, when given, the audio as `file` (audio/wav).
fn form(fields: &[(&str, &str)], audio: Option<&[u8]>) -> Vec<u8> {
    let mut body = Vec::new();
    for (name, value) in fields {
        let part = format!("--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"{name}\"\r\n\r\n{value}\r\n");
        body.extend_from_slice(part.as_bytes());
    }
    if let Some(audio) = audio {
        let head = format!(
            "--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"speech.wav\"\r\nContent-Type: audio/wav\r\n\r\n"
        );
        body.extend_from_slice(head.as_bytes());
        body.extend_from_slice(audio);
        body.extend_from_slice(b"\r\n");
    }
    body.extend_from_slice(format!("--{BOUNDARY}--\r\n").as_bytes());
    body
}

/// `n` bytes of "audio" with every byte value in it, a boundary-like run and CRLFs included.
fn audio(n: usize) -> Vec<u8> {
    let mut seed = 0x2545_f491_u32;
    let mut bytes: Vec<u8> = (0..n)
        .map(|_| {
            seed = seed.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            (seed >> 24) as u8
        })
        .collect();
    let tricky = b"\r\n--tollgate-dashscope-boundar\r\n\0\xff";
    bytes[100..100 + tricky.len()].copy_from_slice(tricky);
    bytes
}

#[test]
fn openais_transcriptions_run_qwen3_asr_flash_with_the_file_written_into_dashscopes_json() {
    use sha2::Digest as _;
    let mock = Mock::start();
    let ch = channel("dashscope", "dashscope", &mock.url(), &["qwen3-asr-flash"], &["ds-key"]);
    // Forms up to 64 KiB: a larger file is refused by the gateway itself.
    let gw = Gateway::start(
        "dashscope-openai-asr",
        &[("dashscope", "dashscope.wasm")],
        &format!("max_body_bytes = 65536\n{}{ch}", pricing_setting(PRICES)),
    );
    let content_type = format!("multipart/form-data; boundary={BOUNDARY}");
    let auth = format!("Bearer {}", gw.key);
    let headers = [("authorization", auth.as_str()), ("content-type", content_type.as_str())];
    let post = |body: &[u8]| http::request(&gw.addr, "POST", TRANSCRIPTIONS, &headers, body);

    // 40,000 bytes: the mock hears 2 seconds, charged once at 0.0002 USD each.
    let sound = audio(40_000);
    let digest = hex::encode(sha2::Sha256::digest(&sound));
    let asked = [("model", "qwen3-asr-flash"), ("language", "en"), ("prompt", "Tollgate, DashScope")];
    let r = post(&form(&asked, Some(&sound)));
    assert_eq!(r.status, 200, "{}", r.text());
    let answer = r.json();
    assert_eq!(answer["text"], format!("Heard 40000 bytes, sha256 {digest}."), "the file's bytes arrived intact");
    assert_eq!(answer["usage"]["seconds"].as_u64(), Some(2), "{answer}");
    gw.balance_becomes("e2e", 10_000_000 - 400);
    let sent = mock.last_body(MULTIMODAL)["json"].clone();
    assert_eq!(sent["model"], "qwen3-asr-flash");
    assert_eq!(sent["parameters"]["asr_options"], serde_json::json!({ "language": "en", "enable_itn": false }));
    assert_eq!(sent["input"]["messages"][0]["content"][0]["text"], "Tollgate, DashScope");
    let uri = sent["input"]["messages"][1]["content"][0]["audio"].as_str().expect("the audio").to_string();
    assert!(uri.starts_with("data:audio/wav;base64,"), "{}", &uri[..40]);

    // Plain text, and OpenAI's verbose JSON: each charged the seconds heard.
    let r = post(&form(&[("model", "qwen3-asr-flash"), ("response_format", "text")], Some(&sound)));
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(r.header("content-type").is_some_and(|c| c.starts_with("text/plain")), "{:?}", r.header("content-type"));
    assert_eq!(r.text(), format!("Heard 40000 bytes, sha256 {digest}.\n"));
    gw.balance_becomes("e2e", 10_000_000 - 800);
    let r = post(&form(&[("model", "qwen3-asr-flash"), ("response_format", "verbose_json")], Some(&sound[..100])));
    assert_eq!(r.status, 200, "{}", r.text());
    let verbose = r.json();
    assert_eq!((verbose["duration"].as_u64(), verbose["language"].as_str()), (Some(1), Some("zh")), "{verbose}");
    gw.balance_becomes("e2e", 10_000_000 - 1_000);

    // Refused before DashScope is asked, and free: no file, a file beyond the gateway's upload
    // limit, a field DashScope would not read, subtitles DashScope cannot time.
    let before = mock.stats()["requests"].as_u64().unwrap();
    let r = post(&form(&[("model", "qwen3-asr-flash")], None));
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(r.text().contains("'file'"), "{}", r.text());
    let r = post(&form(&[("model", "qwen3-asr-flash")], Some(&audio(70_000))));
    assert_eq!((r.status, r.error_code().as_str()), (413, "request_too_large"), "{}", r.text());
    let r = post(&form(&[("model", "qwen3-asr-flash"), ("timestamp_granularities[]", "word")], Some(&sound)));
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(r.text().contains("timestamp_granularities[]"), "{}", r.text());
    let r = post(&form(&[("model", "qwen3-asr-flash"), ("response_format", "srt")], Some(&sound)));
    assert_eq!(r.status, 400, "{}", r.text());
    assert_eq!(mock.stats()["requests"].as_u64().unwrap(), before);
    gw.balance_becomes("e2e", 10_000_000 - 1_000);

    // DashScope's refusal (a file that is not audio) is the consumer's 400, and free.
    let text = String::from_utf8(form(&[("model", "qwen3-asr-flash")], Some(b"plain words"))).unwrap();
    let r = post(text.replace("audio/wav", "text/plain").as_bytes());
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(r.text().contains("DashScope: "), "{}", r.text());
    assert_eq!(mock.stats()["requests"].as_u64().unwrap(), before + 1);
    gw.balance_becomes("e2e", 10_000_000 - 1_000);
    let (ok, report) = gw.verify_ledger();
    assert!(ok, "{report}");
}
