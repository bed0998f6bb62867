//! OpenAI's audio routes as OpenAI (and SiliconFlow) put them on the wire:
//! - `POST /v1/audio/speech`: `{model, input, voice, response_format, stream_format}` → the
//!   audio's bytes (`audio/mpeg` for mp3, `audio/wav`, ...), no usage; with
//!   `stream_format: "sse"`, `speech.audio.delta` events and a `speech.audio.done` with usage.
//!   The "audio" is the input's bytes repeated, so a test can check what reached the consumer.
//! - `POST /v1/audio/transcriptions` (multipart: `file`, `model`, `response_format`, `stream`):
//!   the "transcript" is the file's text; `json` answers `{text, usage}` (`whisper-1`:
//!   `{"type":"duration","seconds"}` at a second per 16 bytes; other models tokens), `text` the
//!   text alone, `verbose_json` with `duration`; `stream=true` streams `transcript.text.delta`
//!   events and a `transcript.text.done` with usage.

use crate::body::MockBody;
use crate::{json, openai, respond, sse, Ctx};
use bytes::Bytes;
use hyper::{Response, StatusCode};
use serde_json::{json, Value};
use std::time::Duration;

fn event(data: Value) -> Bytes {
    Bytes::from(format!("data: {data}\n\n"))
}

pub fn speech(cx: &Ctx) -> Response<MockBody> {
    if !cx.authorized {
        return openai::unauthorized();
    }
    let Ok(req) = serde_json::from_slice::<Value>(&cx.body) else { return openai::bad_request("invalid JSON") };
    let (Some(_model), Some(input)) = (req["model"].as_str(), req["input"].as_str()) else {
        return openai::bad_request("'model' and 'input' are required");
    };
    let audio: Vec<u8> = input.bytes().cycle().take(input.len() * 4).collect();
    if req["stream_format"] == "sse" {
        use base64::Engine as _;
        let mut events: Vec<Bytes> = audio
            .chunks(16)
            .map(|c| event(json!({ "type": "speech.audio.delta", "audio": base64::engine::general_purpose::STANDARD.encode(c) })))
            .collect();
        let tokens = input.chars().count().div_ceil(4);
        let usage = json!({ "input_tokens": tokens, "output_tokens": audio.len() / 16, "total_tokens": tokens + audio.len() / 16 });
        events.push(event(json!({ "type": "speech.audio.done", "usage": usage })));
        return sse(events, Duration::ZERO, false);
    }
    let content_type = match req["response_format"].as_str().unwrap_or("mp3") {
        "wav" => "audio/wav",
        "opus" => "audio/opus",
        "aac" => "audio/aac",
        "flac" => "audio/flac",
        "pcm" => "audio/pcm",
        _ => "audio/mpeg",
    };
    respond(StatusCode::OK, content_type, MockBody::full(audio))
}

pub async fn transcription(cx: &Ctx) -> Response<MockBody> {
    if !cx.authorized {
        return openai::unauthorized();
    }
    let parts = match crate::multipart::parts(cx).await {
        None => return openai::bad_request("expected a multipart/form-data body"),
        Some(Err(e)) => return openai::bad_request(&e),
        Some(Ok(parts)) => parts,
    };
    let (mut fields, mut file) = (std::collections::HashMap::new(), None);
    for part in parts {
        if part.filename.is_some() && part.name == "file" {
            file = Some(part.data);
        } else if fields.insert(part.name.clone(), String::from_utf8_lossy(&part.data).into_owned()).is_some() {
            return openai::bad_request(&format!("'{}' is given twice", part.name));
        }
    }
    let (Some(model), Some(file)) = (fields.get("model"), file) else {
        return openai::bad_request("'model' and a 'file' are required");
    };
    let text = String::from_utf8_lossy(&file).into_owned();
    let seconds = file.len().div_ceil(16);
    let usage = if model == "whisper-1" {
        json!({ "type": "duration", "seconds": seconds })
    } else {
        json!({ "type": "tokens", "input_tokens": seconds * 10, "output_tokens": text.len().div_ceil(4), "total_tokens": seconds * 10 + text.len().div_ceil(4) })
    };
    if fields.get("stream").map(String::as_str) == Some("true") {
        let mut events: Vec<Bytes> = text
            .as_bytes()
            .chunks(5)
            .map(|c| event(json!({ "type": "transcript.text.delta", "delta": String::from_utf8_lossy(c) })))
            .collect();
        events.push(event(json!({ "type": "transcript.text.done", "text": text, "usage": usage })));
        return sse(events, Duration::ZERO, false);
    }
    match fields.get("response_format").map(String::as_str).unwrap_or("json") {
        "text" => respond(StatusCode::OK, "text/plain; charset=utf-8", MockBody::full(text)),
        "verbose_json" => json(
            StatusCode::OK,
            json!({ "task": "transcribe", "language": "english", "duration": seconds as f64, "text": text, "segments": [] }).to_string(),
        ),
        _ => json(StatusCode::OK, json!({ "text": text, "usage": usage }).to_string()),
    }
}
