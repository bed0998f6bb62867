//! OpenAI's `POST /v1/audio/transcriptions` (op `transcription`) on qwen3-asr-flash, DashScope's
//! synchronous recognition: the consumer's form becomes DashScope's multimodal request
//! (`POST /api/v1/services/aigc/multimodal-generation/generation`), its file written into the
//! JSON by the host as a `data:` URI (`text-with-files`), so the audio never enters the plugin.
//!
//! - `file` (required, one): the user message's `audio`; `language`: `asr_options.language`;
//!   `prompt`: the system message's text (DashScope's context for names and terms);
//!   `enable_itn` is sent `false` (the transcript as spoken, as OpenAI's models write it).
//! - `response_format`: `json` (default, `{"text"}`), `text`, or `verbose_json` (the text, the
//!   language DashScope detected and the seconds heard; DashScope gives no segment times, so
//!   `srt` and `vtt`, which need them, are refused). `temperature` is taken only as `0`
//!   (OpenAI's default; DashScope's recognition has no such setting), `stream` only as
//!   `false`. Any other field is refused, naming it, rather than dropped.
//!
//! Billing: DashScope bills the seconds it heard (`usage.seconds`), unknown before the file is
//! read: the call holds the longest audio qwen3-asr-flash takes (5 minutes, as the native
//! route does) and is charged the seconds reported, never beyond the hold.

use crate::chat::{MAX_AUDIO_SECONDS, MULTIMODAL_PATH};
use serde_json::{json, Map, Value};
use tollgate_plugin_sdk::{
    AdapterError, Body, Call, ErrorKind, PartValue, Reply, Step, TextWithFiles, UpstreamRequest, UpstreamResponse,
    Usage,
};

pub const OP: &str = "transcription";
/// The consumer's form field that holds the audio.
const FILE: &str = "file";
/// Where the host writes the audio: its control characters are escaped in every JSON string
/// serde writes, so nothing the consumer sends can spell it.
pub const PLACEHOLDER: &str = "\u{1}tollgate-audio-5c0e9f27\u{1}";
/// The seconds held: the longest audio qwen3-asr-flash hears.
pub const HOLD_MS: u64 = MAX_AUDIO_SECONDS * 1000;

/// The answer's shape, as OpenAI's `response_format` names it.
#[derive(Clone, Copy, PartialEq, Debug)]
pub enum Format {
    Json,
    Text,
    Verbose,
}

fn bad(message: String) -> AdapterError {
    AdapterError::new(ErrorKind::BadRequest, message)
}

/// DashScope's request text (the audio's placeholder in it once), and the answer's format.
pub fn request(call: &Call) -> Result<(String, Format), AdapterError> {
    let Body::Form(parts) = &call.body else {
        return Err(bad("a transcription is a multipart/form-data request with the audio as 'file'".into()));
    };
    let (mut files, mut format) = (0, Format::Json);
    let mut options = Map::new();
    let mut prompt = None;
    for part in parts {
        let name = part.name.as_str();
        let text = match (&part.value, name) {
            (PartValue::ClientFile(_), FILE) => {
                files += 1;
                continue;
            }
            (PartValue::Text(t), _) if name != FILE => t.trim(),
            (_, FILE) => return Err(bad("'file' must be the uploaded audio".into())),
            _ => return Err(bad(format!("'{name}' is not a field this gateway sends to DashScope's recognition"))),
        };
        match name {
            // The host reads the model; the channel's name for it is sent.
            "model" => {}
            "language" if !text.is_empty() => {
                if text.len() > 16 || !text.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') {
                    return Err(bad(format!("'language' must be a language code such as 'en' or 'zh', not '{text}'")));
                }
                options.insert("language".into(), Value::String(text.to_string()));
            }
            "prompt" if !text.is_empty() => prompt = Some(text.to_string()),
            "language" | "prompt" => {}
            "response_format" => {
                format = match text {
                    "" | "json" => Format::Json,
                    "text" => Format::Text,
                    "verbose_json" => Format::Verbose,
                    "srt" | "vtt" => {
                        return Err(bad(format!(
                            "DashScope's qwen3-asr-flash gives no timings, so response_format '{text}' cannot be made; \
                             ask json, text or verbose_json"
                        )))
                    }
                    f => return Err(bad(format!("response_format '{f}' is not json, text or verbose_json"))),
                }
            }
            "temperature" if text.parse::<f64>().is_ok_and(|t| t == 0.0) => {}
            "temperature" => {
                return Err(bad(format!(
                    "DashScope's recognition takes no temperature; 'temperature' may only be 0, not '{text}'"
                )))
            }
            "stream" if text == "false" => {}
            "stream" => {
                return Err(bad("DashScope's recognition is not streamed here; 'stream' may only be false".into()))
            }
            _ => return Err(bad(format!("'{name}' is not a field this gateway sends to DashScope's recognition"))),
        }
    }
    match files {
        1 => {}
        0 => return Err(bad("a transcription needs the audio as a 'file' part".into())),
        _ => return Err(bad("a transcription takes one 'file'".into())),
    }
    options.insert("enable_itn".into(), Value::Bool(false));
    let model = Value::String(call.vendor_model().to_string());
    // The context, when given, is a system message before the audio, as DashScope documents it.
    let system = match prompt {
        Some(p) => format!("{},", json!({ "role": "system", "content": [{ "text": p }] })),
        None => String::new(),
    };
    let parameters = json!({ "asr_options": options });
    let text = format!(
        r#"{{"model":{model},"input":{{"messages":[{system}{{"role":"user","content":[{{"audio":"{PLACEHOLDER}"}}]}}]}},"parameters":{parameters}}}"#
    );
    // Always so (serde escapes control characters in strings); checked, as the host would fail
    // the call as the plugin's bug.
    if text.matches(PLACEHOLDER).count() != 1 {
        return Err(bad("the request cannot carry the audio".into()));
    }
    Ok((text, format))
}

/// The seconds held, once the form is found sound.
pub fn quote(call: &Call) -> Result<Usage, AdapterError> {
    request(call).map(|_| Usage { milliseconds: Some(HOLD_MS), ..Usage::default() })
}

pub fn first(call: &Call) -> Step {
    match request(call) {
        Ok((text, _)) => {
            let mut req = UpstreamRequest::post_json(MULTIMODAL_PATH, String::new());
            req.body = Body::TextWithFiles(TextWithFiles { text, files: vec![(PLACEHOLDER.into(), FILE.into())] });
            Step::Send(req)
        }
        Err(e) => Step::Fail(e),
    }
}

/// DashScope's answer in OpenAI's shape, charged the seconds heard (at most the hold); a
/// refusal classified as DashScope's code says.
pub fn next(call: &Call, response: UpstreamResponse) -> Step {
    let v: Value = serde_json::from_slice(&response.body).unwrap_or(Value::Null);
    if !(200..300).contains(&response.status) {
        return Step::Fail(super::error_of(response.status, &v));
    }
    let Some(message) = v.pointer("/output/choices/0/message") else {
        return Step::fail(ErrorKind::UpstreamFault, "DashScope's answer has no transcript");
    };
    let text: String =
        message["content"].as_array().into_iter().flatten().filter_map(|part| part["text"].as_str()).collect();
    let seconds = v.pointer("/usage/seconds").and_then(Value::as_f64).filter(|s| s.is_finite() && *s >= 0.0);
    // None reported: the host bills the hold, marked estimated.
    let usage = match seconds {
        Some(s) => Usage { milliseconds: Some(((s * 1000.0).ceil() as u64).min(HOLD_MS)), ..Usage::default() },
        None => Usage::default(),
    };
    let format = request(call).map(|(_, f)| f).unwrap_or(Format::Json);
    // The seconds as DashScope wrote them (an integer stays one).
    let heard = seconds.and(v.pointer("/usage/seconds").cloned());
    let reported = heard.clone().map(|s| json!({ "type": "duration", "seconds": s }));
    let body = match format {
        Format::Text => {
            let body = Body::Text(format!("{text}\n"));
            return Step::Reply(Reply::with_body(200, "text/plain; charset=utf-8", body, usage));
        }
        Format::Json => {
            let mut out = json!({ "text": text });
            if let Some(u) = reported {
                out["usage"] = u;
            }
            out
        }
        Format::Verbose => {
            // The language DashScope detected (its `audio_info` annotation), else the one asked.
            let language = message["annotations"]
                .as_array()
                .into_iter()
                .flatten()
                .find_map(|a| a["language"].as_str().map(str::to_string))
                .or_else(|| call.body.field("language").map(|l| l.trim().to_string()));
            let mut out = json!({ "task": "transcribe", "text": text });
            if let Some(l) = language.filter(|l| !l.is_empty()) {
                out["language"] = Value::String(l);
            }
            if let Some(s) = heard {
                out["duration"] = s;
            }
            if let Some(u) = reported {
                out["usage"] = u;
            }
            out
        }
    };
    Step::Reply(Reply::json(body.to_string(), usage))
}
