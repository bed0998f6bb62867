//! OpenAI's chat format on Gemini: the request translated to `generateContent`, the answer
//! (whole or streamed) translated back.
//!
//! Invariants:
//! - system and developer messages become `systemInstruction`; assistant turns are `model`
//!   turns; consecutive turns of one role are merged (Gemini alternates them); a tool result is
//!   a `functionResponse` under the name of the call it answers (looked up by its id);
//! - what Gemini cannot take is refused with a `bad-request` naming it, never dropped;
//! - a function call reaches the consumer as one OpenAI tool call (Gemini sends each whole),
//!   with an id the gateway makes (`call_<n>`), and `finish_reason` `tool_calls`;
//! - thought parts are `reasoning_content`; usage follows OpenAI (thinking in the completion
//!   tokens, cached tokens in `prompt_tokens_details`), the usage chunk only when asked for.

use serde_json::{json, Map, Value};
use tollgate_plugin_sdk::openai_chunks::Chunks;
use tollgate_plugin_sdk::{AdapterError, Call, ErrorKind, OutChunk, Usage};

fn bad(message: impl Into<String>) -> AdapterError {
    AdapterError::new(ErrorKind::BadRequest, message)
}

/// An image URL as a part: inline data from a `data:` URL, else a file reference.
fn image_part(url: &str) -> Result<Value, AdapterError> {
    if let Some(rest) = url.strip_prefix("data:") {
        let (mime, data) = rest.split_once(";base64,").ok_or_else(|| bad("an image data URL must be base64"))?;
        return Ok(json!({ "inlineData": { "mimeType": mime, "data": data } }));
    }
    let lower = url.to_ascii_lowercase();
    let path = lower.split(['?', '#']).next().unwrap_or_default();
    let mime = match path.rsplit('.').next() {
        Some("png") => "image/png",
        Some("webp") => "image/webp",
        Some("gif") => "image/gif",
        Some("heic") => "image/heic",
        _ => "image/jpeg",
    };
    Ok(json!({ "fileData": { "mimeType": mime, "fileUri": url } }))
}

/// An OpenAI content (a string or parts) as Gemini parts.
fn parts(content: &Value, at: &str) -> Result<Vec<Value>, AdapterError> {
    match content {
        Value::Null => Ok(Vec::new()),
        Value::String(s) if s.is_empty() => Ok(Vec::new()),
        Value::String(s) => Ok(vec![json!({ "text": s })]),
        Value::Array(items) => items
            .iter()
            .map(|p| match p["type"].as_str() {
                Some("text") => Ok(json!({ "text": p["text"].as_str().unwrap_or_default() })),
                Some("image_url") => {
                    image_part(p["image_url"]["url"].as_str().or(p["image_url"].as_str()).unwrap_or_default())
                }
                other => Err(bad(format!("{at}: a '{}' part cannot be sent to Gemini", other.unwrap_or("?")))),
            })
            .collect(),
        _ => Err(bad(format!("{at}: content must be a string or a list of parts"))),
    }
}

fn push_turn(turns: &mut Vec<Value>, role: &str, parts: Vec<Value>) {
    if parts.is_empty() {
        return;
    }
    if let Some(last) = turns.last_mut().filter(|t| t["role"] == role) {
        if let Some(p) = last["parts"].as_array_mut() {
            p.extend(parts);
            return;
        }
    }
    turns.push(json!({ "role": role, "parts": parts }));
}

/// The `generateContent` request for an OpenAI chat call, and what reads its answer.
pub fn to_gemini(call: &Call) -> Result<(String, Answer), AdapterError> {
    let body = call.body.object("a chat request is JSON, not a form")?;
    let messages = body.get("messages").and_then(Value::as_array).ok_or_else(|| bad("messages: a list is required"))?;
    let mut system = Vec::new();
    let mut turns = Vec::with_capacity(messages.len());
    // The name of each tool call, by id: a tool result names only the id.
    let mut names: Vec<(String, String)> = Vec::new();
    for (i, m) in messages.iter().enumerate() {
        let at = format!("messages[{i}]");
        match m["role"].as_str() {
            Some("system" | "developer") => system.extend(parts(&m["content"], &at)?),
            Some("user") => push_turn(&mut turns, "user", parts(&m["content"], &at)?),
            Some("assistant") => {
                let mut p = parts(&m["content"], &at)?;
                for call in m["tool_calls"].as_array().map(Vec::as_slice).unwrap_or_default() {
                    let name = call["function"]["name"].as_str().unwrap_or_default().to_string();
                    let args = call["function"]["arguments"].as_str().unwrap_or_default();
                    let args = serde_json::from_str::<Value>(args).ok().filter(Value::is_object).unwrap_or(json!({}));
                    names.push((call["id"].as_str().unwrap_or_default().to_string(), name.clone()));
                    let mut part = json!({ "functionCall": { "name": name, "args": args } });
                    // Gemini's signature of its thinking, given back with the call it came with.
                    if let Some(sig) = call.pointer("/extra_content/google/thought_signature").and_then(Value::as_str) {
                        part["thoughtSignature"] = json!(sig);
                    }
                    p.push(part);
                }
                push_turn(&mut turns, "model", p);
            }
            Some("tool") => {
                let id = m["tool_call_id"].as_str().unwrap_or_default();
                let name = names
                    .iter()
                    .rfind(|(i, _)| i == id)
                    .map(|(_, n)| n.clone())
                    .ok_or_else(|| bad(format!("{at}: tool_call_id '{id}' names no earlier tool call")))?;
                let text: String = parts(&m["content"], &at)?.iter().filter_map(|p| p["text"].as_str()).collect();
                // A JSON object result is given as it is; anything else as its text.
                let response = serde_json::from_str::<Value>(&text)
                    .ok()
                    .filter(Value::is_object)
                    .unwrap_or_else(|| json!({ "content": text }));
                push_turn(
                    &mut turns,
                    "user",
                    vec![json!({ "functionResponse": { "name": name, "response": response } })],
                );
            }
            other => return Err(bad(format!("{at}: the role '{}' cannot be sent to Gemini", other.unwrap_or("?")))),
        }
    }
    let mut config = Map::new();
    if let Some(n) = ["max_completion_tokens", "max_tokens"].iter().find_map(|k| body.get(*k).and_then(Value::as_u64)) {
        config.insert("maxOutputTokens".into(), json!(n));
    }
    for (from, to) in [("temperature", "temperature"), ("top_p", "topP")] {
        if let Some(v) = body.get(from).and_then(Value::as_f64) {
            config.insert(to.into(), json!(v));
        }
    }
    if let Some(n) = body.get("n").and_then(Value::as_u64) {
        config.insert("candidateCount".into(), json!(n));
    }
    match body.get("stop") {
        Some(Value::String(s)) => {
            config.insert("stopSequences".into(), json!([s]));
        }
        Some(Value::Array(a)) if !a.is_empty() => {
            config.insert("stopSequences".into(), Value::Array(a.clone()));
        }
        _ => {}
    }
    match body.get("response_format").and_then(|f| f["type"].as_str()) {
        Some("json_object") => {
            config.insert("responseMimeType".into(), json!("application/json"));
        }
        Some("json_schema") => {
            config.insert("responseMimeType".into(), json!("application/json"));
            if let Some(schema) = body.get("response_format").and_then(|f| f.pointer("/json_schema/schema")) {
                config.insert("responseJsonSchema".into(), schema.clone());
            }
        }
        _ => {}
    }
    let mut out = Map::new();
    out.insert("contents".into(), Value::Array(turns));
    if !system.is_empty() {
        out.insert("systemInstruction".into(), json!({ "parts": system }));
    }
    if !config.is_empty() {
        out.insert("generationConfig".into(), Value::Object(config));
    }
    if let Some(tools) = body.get("tools").and_then(Value::as_array).filter(|t| !t.is_empty()) {
        let declarations = tools
            .iter()
            .map(|t| {
                let f = &t["function"];
                let name = f["name"].as_str().ok_or_else(|| bad("tools: each function needs a name"))?;
                let mut d = json!({ "name": name });
                if let Some(desc) = f["description"].as_str() {
                    d["description"] = json!(desc);
                }
                if let Some(p) = f.get("parameters") {
                    // The whole JSON Schema (`$defs`, `$ref`, ...), which `parameters` (an
                    // OpenAPI subset) would refuse.
                    d["parametersJsonSchema"] = p.clone();
                }
                Ok(d)
            })
            .collect::<Result<Vec<_>, AdapterError>>()?;
        out.insert("tools".into(), json!([{ "functionDeclarations": declarations }]));
    }
    let mode = match body.get("tool_choice") {
        Some(Value::String(c)) if c == "none" => Some(json!({ "mode": "NONE" })),
        Some(Value::String(c)) if c == "required" => Some(json!({ "mode": "ANY" })),
        Some(Value::String(_)) => Some(json!({ "mode": "AUTO" })),
        Some(Value::Object(c)) => {
            let name = c
                .get("function")
                .and_then(|f| f["name"].as_str())
                .ok_or_else(|| bad("tool_choice: a function name is required"))?;
            Some(json!({ "mode": "ANY", "allowedFunctionNames": [name] }))
        }
        _ => None,
    };
    if let Some(mode) = mode {
        out.insert("toolConfig".into(), json!({ "functionCallingConfig": mode }));
    }
    let answer = Answer {
        out: Chunks::new(format!("chatcmpl-{}", call.context.request_id), call.model.clone()),
        stream: body.get("stream").and_then(Value::as_bool).unwrap_or(false),
        include_usage: body.get("stream_options").and_then(|o| o["include_usage"].as_bool()).unwrap_or(false),
        started: false,
        calls: 0,
        call_prefix: call.context.request_id.chars().filter(char::is_ascii_alphanumeric).collect(),
    };
    Ok((Value::Object(out).to_string(), answer))
}

fn finish_reason(reason: &str, called: bool) -> &'static str {
    match reason {
        _ if called => "tool_calls",
        "MAX_TOKENS" => "length",
        "SAFETY" | "RECITATION" | "BLOCKLIST" | "PROHIBITED_CONTENT" | "SPII" | "IMAGE_SAFETY" => "content_filter",
        _ => "stop",
    }
}

/// Reads Gemini's answer for an OpenAI consumer.
pub struct Answer {
    out: Chunks,
    stream: bool,
    include_usage: bool,
    started: bool,
    /// Tool calls given so far (their OpenAI indexes and ids follow this count).
    calls: usize,
    /// What makes this answer's call ids unique in the conversation (the request id).
    call_prefix: String,
}

impl Answer {
    pub fn streams(&self) -> bool {
        self.stream
    }
}

/// One candidate's parts as an OpenAI delta or message (content, reasoning, tool calls);
/// `calls_so_far` counts the tool calls given before (their indexes and ids follow it).
fn message(prefix: &str, calls_so_far: &mut usize, candidate: &Value, with_index: bool) -> (Value, bool) {
    let mut text = String::new();
    let mut thought = String::new();
    let mut calls = Vec::new();
    for part in candidate["content"]["parts"].as_array().map(Vec::as_slice).unwrap_or_default() {
        if let Some(call) = part.get("functionCall") {
            let mut c = json!({
                // Unique in the conversation: a later turn's result names its own call.
                "id": format!("call_{prefix}_{calls_so_far}"),
                "type": "function",
                "function": { "name": call["name"], "arguments": call.get("args").cloned().unwrap_or(json!({})).to_string() },
            });
            if with_index {
                c["index"] = json!(*calls_so_far);
            }
            if let Some(sig) = part.get("thoughtSignature").and_then(Value::as_str) {
                c["extra_content"] = json!({ "google": { "thought_signature": sig } });
            }
            *calls_so_far += 1;
            calls.push(c);
        } else if let Some(t) = part["text"].as_str() {
            if part["thought"] == true {
                thought.push_str(t);
            } else {
                text.push_str(t);
            }
        }
    }
    let mut m = Map::new();
    if !text.is_empty() {
        m.insert("content".into(), json!(text));
    }
    if !thought.is_empty() {
        m.insert("reasoning_content".into(), json!(thought));
    }
    let called = !calls.is_empty();
    if called {
        m.insert("tool_calls".into(), Value::Array(calls));
    }
    (Value::Object(m), called)
}

impl Answer {
    /// A whole answer as a chat completion (one choice per candidate).
    pub fn completion(&self, answer: &Value) -> String {
        let mut calls = 0;
        let candidates = answer["candidates"].as_array().map(Vec::as_slice).unwrap_or_default();
        let choices: Vec<Value> = candidates
            .iter()
            .enumerate()
            .map(|(i, c)| {
                let (mut message, called) = message(&self.call_prefix, &mut calls, c, false);
                message["role"] = json!("assistant");
                if message.get("content").is_none() {
                    message["content"] = Value::Null;
                }
                let reason = finish_reason(c["finishReason"].as_str().unwrap_or("STOP"), called);
                json!({ "index": c["index"].as_u64().unwrap_or(i as u64), "message": message, "finish_reason": reason })
            })
            .collect();
        // A prompt Gemini blocked has no candidate: one filtered choice, as OpenAI answers it.
        let choices = if choices.is_empty() && answer.pointer("/promptFeedback/blockReason").is_some() {
            vec![
                json!({ "index": 0, "message": { "role": "assistant", "content": null }, "finish_reason": "content_filter" }),
            ]
        } else {
            choices
        };
        let usage = super::UsageMetadata::of(answer).unwrap_or_default();
        self.out.completion(Value::Array(choices), &usage)
    }

    fn chunk(&self, choices: Value, usage: Value) -> OutChunk {
        self.out.chunk(choices, usage)
    }

    /// One chunk of Gemini's stream, as OpenAI chunks.
    pub fn event(&mut self, chunk: &Value, out: &mut Vec<OutChunk>) {
        if !self.started {
            self.started = true;
            out.push(self.chunk(
                json!([{ "index": 0, "delta": { "role": "assistant", "content": "" }, "finish_reason": null }]),
                Value::Null,
            ));
        }
        self.blocked(chunk, out);
        for (i, c) in chunk["candidates"].as_array().map(Vec::as_slice).unwrap_or_default().iter().enumerate() {
            let index = c["index"].as_u64().unwrap_or(i as u64);
            let (delta, called) = message(&self.call_prefix, &mut self.calls, c, true);
            if delta.as_object().is_some_and(|d| !d.is_empty()) {
                out.push(self.chunk(json!([{ "index": index, "delta": delta, "finish_reason": null }]), Value::Null));
            }
            if let Some(reason) = c["finishReason"].as_str() {
                let reason = finish_reason(reason, called || self.calls > 0);
                out.push(self.chunk(json!([{ "index": index, "delta": {}, "finish_reason": reason }]), Value::Null));
            }
        }
    }

    /// A blocked prompt in a stream: a filtered finish.
    fn blocked(&self, chunk: &Value, out: &mut Vec<OutChunk>) {
        let none = chunk["candidates"].as_array().is_none_or(Vec::is_empty);
        if none && chunk.pointer("/promptFeedback/blockReason").is_some() {
            out.push(self.chunk(json!([{ "index": 0, "delta": {}, "finish_reason": "content_filter" }]), Value::Null));
        }
    }

    /// The clean end: the usage chunk (when asked for) and `[DONE]` (Gemini sends none).
    pub fn finish(&mut self, usage: &Usage, out: &mut Vec<OutChunk>) {
        self.out.end(self.include_usage, usage, out);
    }
}
