//! MiniMax `POST /v1/t2a_v2`: errors in `base_resp` with HTTP 200, hex audio, SSE streaming
//! without `[DONE]`.

use crate::body::MockBody;
use crate::{json, sse, Ctx, Fault, State};
use bytes::Bytes;
use hyper::header::{HeaderValue, RETRY_AFTER};
use hyper::{Response, StatusCode};
use serde::Deserialize;
use serde_json::json;
use std::borrow::Cow;

#[derive(Deserialize)]
struct T2aRequest<'a> {
    #[serde(borrow)]
    model: Option<Cow<'a, str>>,
    voice_setting: Option<VoiceSetting>,
    #[serde(borrow)]
    text: Option<Cow<'a, str>>,
    stream: Option<bool>,
    audio_setting: Option<AudioSetting>,
}

#[derive(Deserialize, Default)]
struct VoiceSetting {
    voice_id: Option<String>,
}

#[derive(Deserialize, Default)]
struct AudioSetting {
    sample_rate: Option<u64>,
    bitrate: Option<u64>,
    format: Option<String>,
}

/// Characters as MiniMax bills them: CJK ideographs and fullwidth/CJK punctuation count 2.
pub fn usage_characters(text: &str) -> u64 {
    text.chars()
        .map(|c| match c as u32 {
            0x4E00..=0x9FFF | 0x3400..=0x4DBF | 0x3000..=0x303F | 0xFF00..=0xFFEF => 2,
            _ => 1,
        })
        .sum()
}

/// Deterministic WAV audio (PCM16 mono, 32 kHz): the text's UTF-8 bytes as samples, padded to
/// a whole sample.
pub fn fake_wav(text: &str) -> Vec<u8> {
    let mut data = text.as_bytes().to_vec();
    if data.len() % 2 == 1 {
        data.push(0);
    }
    let mut out = b"RIFF".to_vec();
    out.extend_from_slice(&(36 + data.len() as u32).to_le_bytes());
    out.extend_from_slice(b"WAVEfmt ");
    out.extend_from_slice(&16u32.to_le_bytes());
    out.extend_from_slice(&1u16.to_le_bytes()); // PCM
    out.extend_from_slice(&1u16.to_le_bytes()); // mono
    out.extend_from_slice(&32000u32.to_le_bytes());
    out.extend_from_slice(&64000u32.to_le_bytes());
    out.extend_from_slice(&2u16.to_le_bytes());
    out.extend_from_slice(&16u16.to_le_bytes());
    out.extend_from_slice(b"data");
    out.extend_from_slice(&(data.len() as u32).to_le_bytes());
    out.extend_from_slice(&data);
    out
}

/// Deterministic fake audio: `ID3` then the text's UTF-8 bytes repeated to at least 64 bytes.
pub fn fake_audio(text: &str) -> Vec<u8> {
    let mut audio = b"ID3".to_vec();
    while audio.len() < 64 {
        audio.extend_from_slice(text.as_bytes());
    }
    audio
}

/// A reply carrying only `base_resp` (and `trace_id`).
fn base_error(state: &State, http: StatusCode, code: u32, msg: &str) -> Response<MockBody> {
    let v = json!({
        "trace_id": state.trace_id(),
        "base_resp": {"status_code": code, "status_msg": msg},
    });
    json(http, v.to_string())
}

/// `fail-<n>`: n below 600 is an HTTP status, anything else a `base_resp` code under HTTP 200.
fn fail(state: &State, n: u32) -> Response<MockBody> {
    match n {
        429 => {
            let mut r = base_error(state, StatusCode::TOO_MANY_REQUESTS, 1002, "rate limit");
            r.headers_mut().insert(RETRY_AFTER, HeaderValue::from_static("1"));
            r
        }
        100..=599 => {
            let http = StatusCode::from_u16(n as u16).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            base_error(state, http, 1000, "unknown error")
        }
        code => base_error(state, StatusCode::OK, code, &format!("mock error {code}")),
    }
}

pub async fn t2a(state: &State, cx: &Ctx, key: Option<&str>) -> Response<MockBody> {
    if !cx.authorized {
        return base_error(state, StatusCode::OK, 1004, "authorized failed");
    }
    let req: T2aRequest = match serde_json::from_slice(&cx.body) {
        Ok(r) => r,
        Err(_) => return base_error(state, StatusCode::OK, 2013, "invalid params"),
    };
    // A voice lives in the account that made it.
    let voice = req.voice_setting.as_ref().and_then(|v| v.voice_id.as_deref()).unwrap_or_default();
    if crate::minimax_voices::made_elsewhere(state, key, voice) {
        return base_error(state, StatusCode::OK, 2054, "voice id not exist");
    }
    let text = match req.text.as_deref() {
        Some(t) if !t.is_empty() => t,
        _ => return base_error(state, StatusCode::OK, 2013, "invalid params"),
    };
    let fault = Fault::of(req.model.as_deref().unwrap_or(""));
    if let Fault::Fail(n) = fault {
        return fail(state, n);
    }
    fault.pause().await;
    // Per text: `[slow]` answers after 1.5 s; `[flaky]` fails its first request (HTTP 503).
    let seen = {
        let mut texts = state.t2a_texts.lock().unwrap_or_else(|e| e.into_inner());
        let n = texts.entry(text.to_string()).or_default();
        *n += 1;
        *n
    };
    // `rtf-<ms>` as the model: synthesis takes that long per character, as real synthesis
    // takes time in proportion to the text (the prefetch benchmark).
    if let Some(ms) = req.model.as_deref().and_then(|m| m.strip_prefix("rtf-")).and_then(|n| n.parse::<u64>().ok()) {
        let chars = text.chars().count() as u64;
        tokio::time::sleep(std::time::Duration::from_millis(ms.min(100) * chars.min(10_000))).await;
    }
    if text.contains("[slow]") {
        tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    }
    if text.contains("[flaky]") && seen == 1 {
        return base_error(state, StatusCode::SERVICE_UNAVAILABLE, 1000, "unknown error");
    }

    let setting = req.audio_setting.unwrap_or_default();
    let audio = if setting.format.as_deref() == Some("wav") { fake_wav(text) } else { fake_audio(text) };
    let chars = text.chars().count() as u64;
    let extra_info = json!({
        "audio_length": 1000 * chars,
        "audio_sample_rate": setting.sample_rate.unwrap_or(32000),
        "audio_size": audio.len(),
        "bitrate": setting.bitrate.unwrap_or(128000),
        "word_count": chars,
        "invisible_character_ratio": 0,
        "usage_characters": usage_characters(text),
        "audio_format": setting.format.as_deref().unwrap_or("mp3"),
        "audio_channel": 1,
    });
    let trace_id = state.trace_id();
    let done = json!({
        "data": {"audio": hex::encode(&audio), "status": 2},
        "extra_info": extra_info,
        "trace_id": trace_id,
        "base_resp": {"status_code": 0, "status_msg": "success"},
    });
    if !req.stream.unwrap_or(false) {
        return json(StatusCode::OK, done.to_string());
    }

    let crlf = cx.headers.get("x-mock-crlf").is_some_and(|v| v.as_bytes() == b"1");
    let sep = if crlf { "\r\n\r\n" } else { "\n\n" };
    let event = |v: &serde_json::Value| Bytes::from(format!("data: {v}{sep}"));
    let (a, b) = (audio.len() / 3, audio.len() * 2 / 3);
    let cut = fault == Fault::Cut;
    let parts: &[&[u8]] = if cut { &[&audio[..a], &audio[a..b]] } else { &[&audio[..a], &audio[a..b], &audio[b..]] };
    let mut events: Vec<Bytes> = parts
        .iter()
        .map(|p| {
            event(&json!({
                "data": {"audio": hex::encode(p), "status": 1},
                "trace_id": trace_id,
                "base_resp": {"status_code": 0, "status_msg": ""},
            }))
        })
        .collect();
    if !cut {
        events.push(event(&done));
    }
    sse(events, state.chunk_delay(&cx.headers), cut)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_cjk_as_two() {
        assert_eq!(usage_characters(""), 0);
        assert_eq!(usage_characters("hello"), 5);
        assert_eq!(usage_characters("你好"), 4);
        // Fullwidth comma (U+FF0C) and ideographic full stop (U+3002) count 2; ASCII space 1.
        assert_eq!(usage_characters("你好，世界。 ok"), 2 * 6 + 3);
        // Extension A (U+3400) counts 2; kana (U+3042) and emoji are outside the ranges.
        assert_eq!(usage_characters("\u{3400}\u{3042}😀"), 2 + 1 + 1);
    }

    #[test]
    fn audio_is_deterministic_and_long_enough() {
        let a = fake_audio("hi");
        assert!(a.starts_with(b"ID3hihi"));
        assert_eq!(a.len(), 3 + 2 * 31);
        let long = "x".repeat(100);
        assert_eq!(fake_audio(&long).len(), 103);
        assert_eq!(fake_audio("你好"), fake_audio("你好"));
    }
}
