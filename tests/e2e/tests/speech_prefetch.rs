//! Speech prefetch through the real binary (`compat-protocols.md` §4): a chat with
//! `tts_enabled` streams from the mock's OpenAI chat while its sentences are synthesized on the
//! `minimax` plugin's speech channel (the mock's T2A, WAV); the app's speech requests for a
//! sentence, for one still being synthesized, and for the whole reply (joined) come from the
//! cache, free, while each sentence was charged once when synthesized; another user's request
//! is theirs to pay; a sentence that failed is tried again, never cached as failed.

use serde_json::{json, Value};
use std::time::Duration;
use tollgate_e2e::{channel, eventually, http, pricing_setting, Gateway, Mock};

const PRICES: &str = "[models.\"gpt-4o-mini\"]\ninput_per_million = \"0\"\noutput_per_million = \"0\"\n\
                      [models.\"speech-2.8-hd\"]\ncharacters_per_10k = \"100\"\n";

fn gateway(mock: &Mock) -> Gateway {
    // The openai plugin speaks too: a channel of chat models says it serves chat only.
    let chat = format!("{}ops = [\"chat\"]\n", channel("chat", "openai", &mock.url(), &["gpt-4o-mini"], &["up"]));
    let speech = channel("speech", "minimax", &mock.url(), &["speech-2.8-hd"], &["mm-key"]);
    let prefetch = "[speech_prefetch]\nmodel = \"speech-2.8-hd\"\nvoice = \"male-qn-qingse\"\nformat = \"wav\"\n";
    Gateway::start(
        "speech-prefetch",
        &[("openai", "openai.wasm"), ("minimax", "minimax.wasm")],
        &format!("{}{prefetch}{chat}{speech}", pricing_setting(PRICES)),
    )
}

fn bearer(key: &str) -> String {
    format!("Bearer {key}")
}

/// A streamed chat answering `text`, prefetched; returns the SSE text.
fn chat(gw: &Gateway, key: &str, text: &str) -> String {
    let body = json!({
        "model": "gpt-4o-mini", "stream": true, "tts_enabled": true,
        "messages": [{ "role": "user", "content": format!("say:{text}") }],
    });
    let r = http::request(
        &gw.addr,
        "POST",
        "/v1/chat/completions",
        &[("authorization", &bearer(key))],
        body.to_string().as_bytes(),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    r.text()
}

fn speech(gw: &Gateway, key: &str, input: &str) -> http::Response {
    let body = json!({ "model": "speech-2.8-hd", "input": input });
    http::request(&gw.addr, "POST", "/v1/audio/speech", &[("authorization", &bearer(key))], body.to_string().as_bytes())
}

fn stats(gw: &Gateway) -> Value {
    http::request(&gw.addr, "GET", "/cache/stats", &[("authorization", "Bearer admin-secret")], b"").json()
}

/// How often the mock synthesized `text`.
fn synthesized(mock: &Mock, text: &str) -> u64 {
    mock.stats()["t2a_texts"][text].as_u64().unwrap_or(0)
}

/// The PCM data of a WAV file (its one data chunk).
fn wav_data(wav: &[u8]) -> Vec<u8> {
    assert_eq!(&wav[..4], b"RIFF", "a WAV file");
    assert_eq!(
        u32::from_le_bytes(wav[4..8].try_into().unwrap()) as usize + 8,
        wav.len(),
        "one RIFF of the file's size"
    );
    let at = wav.windows(4).position(|w| w == b"data").expect("a data chunk");
    let size = u32::from_le_bytes(wav[at + 4..at + 8].try_into().unwrap()) as usize;
    wav[at + 8..at + 8 + size].to_vec()
}

/// A sentence's samples as the mock makes them: its bytes, padded to whole samples.
fn samples(text: &str) -> Vec<u8> {
    let mut b = text.as_bytes().to_vec();
    if b.len() % 2 == 1 {
        b.push(0);
    }
    b
}

fn speech_charges(gw: &Gateway, key: &str) -> Vec<(String, String)> {
    let logs =
        http::request(&gw.addr, "GET", "/v1/user/logs?limit=100", &[("authorization", &bearer(key))], b"").json();
    let mut rows: Vec<(String, String)> = logs["data"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["op"].as_str().is_some_and(|o| o.starts_with("speech")))
        .map(|r| (r["op"].as_str().unwrap().to_string(), r["charge"].as_str().unwrap_or("0").to_string()))
        .collect();
    rows.sort();
    rows
}

#[test]
fn a_chats_sentences_are_spoken_ahead_charged_once_and_answered_from_the_cache() {
    let mock = Mock::start();
    let gw = gateway(&mock);
    let key = gw.create_key("app", "10");
    let other = gw.create_key("other", "10");
    gw.wait_for_key(&key);
    gw.wait_for_key(&other);

    let sentences = ["Hello there, my friend.", "The value is 3.14 today!", "Visit example.com now."];
    let reply = sentences.join(" ");
    let answer = chat(&gw, &key, &reply);
    assert!(answer.contains("Hel") && answer.contains("[DONE]"), "{answer}");
    assert!(mock.last_body("/v1/chat/completions").get("tts_enabled").is_none(), "the vendor never sees tts_*");
    assert!(eventually(Duration::from_secs(10), || stats(&gw)["completed"] == 3), "{}", stats(&gw));
    for s in sentences {
        assert_eq!(synthesized(&mock, s), 1, "{s}: the splitter kept 3.14 and example.com whole, once each");
    }

    // One sentence: from the cache, free.
    let r = speech(&gw, &key, sentences[1]);
    assert_eq!((r.status, r.header("x-tollgate-cache")), (200, Some("hit")), "{}", r.text());
    assert_eq!(wav_data(&r.body), samples(sentences[1]));
    // The whole reply: the sentences joined in order under one header.
    let r = speech(&gw, &key, &reply);
    assert_eq!((r.status, r.header("x-tollgate-cache")), (200, Some("hit")));
    let joined: Vec<u8> = sentences.iter().flat_map(|s| samples(s)).collect();
    assert_eq!(wav_data(&r.body), joined);
    for s in sentences {
        assert_eq!(synthesized(&mock, s), 1, "never synthesized twice");
    }
    // Charged once per sentence when synthesized (1 cent a character); the hits are free.
    let expected: Vec<(String, String)> = sentences
        .iter()
        .map(|s| ("speech".to_string(), format!("{:.6}", s.len() as f64 / 100.0)))
        .chain([("speech.cached".into(), "0.000000".into()), ("speech.cached".into(), "0.000000".into())])
        .collect();
    let mut expected = expected;
    expected.sort();
    assert!(
        eventually(Duration::from_secs(5), || speech_charges(&gw, &key) == expected),
        "{:?}",
        speech_charges(&gw, &key)
    );

    // Another user's request is no hit: synthesized for them, and theirs to pay.
    let r = speech(&gw, &other, sentences[0]);
    assert_eq!((r.status, r.header("x-tollgate-cache")), (200, None));
    assert_eq!(synthesized(&mock, sentences[0]), 2);
    let theirs = vec![("speech".to_string(), "0.230000".to_string())];
    assert!(
        eventually(Duration::from_secs(5), || speech_charges(&gw, &other) == theirs),
        "{:?}",
        speech_charges(&gw, &other)
    );
    // Another speed is other audio: a call, not a hit.
    let body = json!({ "model": "speech-2.8-hd", "input": sentences[2], "speed": 1.5 });
    let r = http::request(
        &gw.addr,
        "POST",
        "/v1/audio/speech",
        &[("authorization", &bearer(&key))],
        body.to_string().as_bytes(),
    );
    assert_eq!((r.status, r.header("x-tollgate-cache")), (200, None));
    // A speech model nobody serves is refused before the chat runs.
    let body = json!({ "model": "gpt-4o-mini", "tts_enabled": true, "tts_model": "no-such-voice-model",
                       "messages": [{ "role": "user", "content": "say:Hello there." }] });
    let r = http::request(
        &gw.addr,
        "POST",
        "/v1/chat/completions",
        &[("authorization", &bearer(&key))],
        body.to_string().as_bytes(),
    );
    assert_eq!((r.status, r.error_code().as_str()), (400, "invalid_tts_option"), "{}", r.text());

    // A sentence still being synthesized is waited for, not synthesized twice.
    let slow = "This one is slow [slow].";
    chat(&gw, &key, &format!("{slow} And then it ends here."));
    let r = speech(&gw, &key, slow);
    assert_eq!((r.status, r.header("x-tollgate-cache")), (200, Some("hit")), "{}", r.text());
    assert_eq!(synthesized(&mock, slow), 1);

    // A sentence that failed is tried again, and cached only once it worked.
    let flaky = "A flaky sentence [flaky] here.";
    chat(&gw, &key, &format!("{flaky} Done with that one."));
    assert!(eventually(Duration::from_secs(10), || synthesized(&mock, flaky) == 2), "tried again");
    assert!(eventually(Duration::from_secs(5), || speech(&gw, &key, flaky).header("x-tollgate-cache") == Some("hit")));
    assert_eq!(synthesized(&mock, flaky), 2, "served from the cache once it worked");
    // The failed attempt (HTTP 503: no work done) is free; the one that worked is charged once.
    let flaky_charge = format!("{:.6}", flaky.len() as f64 / 100.0);
    let charged = || speech_charges(&gw, &key).iter().filter(|(op, c)| op == "speech" && *c == flaky_charge).count();
    assert!(eventually(Duration::from_secs(5), || charged() == 1), "{:?}", speech_charges(&gw, &key));

    let s = stats(&gw);
    assert!(s["hits"].as_u64() >= Some(3) && s["joined_hits"] == 1 && s["misses"].as_u64() >= Some(1), "{s}");
    // The operator's view and clear action, with the admin token only.
    let r = http::request(&gw.addr, "POST", "/cache/clear", &[("authorization", &bearer(&key))], b"");
    assert_eq!(r.status, 401);
    let r = http::request(&gw.addr, "POST", "/cache/clear", &[("authorization", "Bearer admin-secret")], b"");
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(stats(&gw)["completed"], 0);
    let r = speech(&gw, &key, sentences[1]);
    assert_eq!((r.status, r.header("x-tollgate-cache")), (200, None), "cleared: synthesized again");
    // The speech models, for the accelerator's clients.
    let listed = http::request(&gw.addr, "GET", "/v1/audio/models", &[("authorization", &bearer(&key))], b"").json();
    let ids: Vec<&str> = listed["data"].as_array().unwrap().iter().map(|m| m["id"].as_str().unwrap()).collect();
    assert_eq!(ids, ["speech-2.8-hd"], "{listed}");
    let (ok, report) = gw.verify_ledger();
    assert!(ok, "{report}");
}
