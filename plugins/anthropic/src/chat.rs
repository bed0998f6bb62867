//! OpenAI's chat format on Anthropic: the request translated to Messages, the answer (whole
//! or streamed) translated back.
//!
//! Invariants:
//! - system and developer messages become the system prompt, in order; consecutive messages
//!   of one role are merged into one turn (Anthropic alternates roles), tool results are user
//!   turns of `tool_result` blocks;
//! - what Anthropic cannot take is refused with a `bad-request` naming it (`n` above 1, audio
//!   input, legacy `function` messages, a JSON `response_format`), never dropped;
//! - a streamed tool call reaches the consumer as OpenAI's `tool_calls` deltas: its id and name
//!   first, then every fragment of its arguments, on the call's own index;
//! - `usage` follows OpenAI: `prompt_tokens` includes cache reads and writes, cache reads are
//!   `prompt_tokens_details.cached_tokens`; the usage chunk is sent only when asked for.

use serde_json::{json, Map, Value};
use tollgate_plugin_sdk::openai_chunks::Chunks;
use tollgate_plugin_sdk::{AdapterError, Call, ErrorKind, OutChunk, SseEvent, StreamEnd, Usage};

/// `max_tokens` when the consumer names none: Anthropic requires one.
const DEFAULT_MAX_TOKENS: u64 = 4096;

fn bad(message: impl Into<String>) -> AdapterError {
    AdapterError::new(ErrorKind::BadRequest, message)
}

/// The text of an OpenAI content: a string, or its text parts joined.
fn text_of(content: &Value, at: &str) -> Result<String, AdapterError> {
    match content {
        Value::Null => Ok(String::new()),
        Value::String(s) => Ok(s.clone()),
        Value::Array(parts) => {
            let mut text = String::new();
            for part in parts {
                match part["type"].as_str() {
                    Some("text") => text.push_str(part["text"].as_str().unwrap_or_default()),
                    other => return Err(bad(format!("{at}: a '{}' part is not text", other.unwrap_or("?")))),
                }
            }
            Ok(text)
        }
        _ => Err(bad(format!("{at}: content must be a string or a list of parts"))),
    }
}

/// An `image_url` as Anthropic's image source: base64 data from a `data:` URL, else the URL.
fn image_source(url: &str) -> Result<Value, AdapterError> {
    match url.strip_prefix("data:") {
        Some(rest) => {
            let (media, data) = rest.split_once(";base64,").ok_or_else(|| bad("an image data URL must be base64"))?;
            Ok(json!({ "type": "base64", "media_type": media, "data": data }))
        }
        None => Ok(json!({ "type": "url", "url": url })),
    }
}

/// A user message's content as blocks.
fn user_blocks(content: &Value, at: &str) -> Result<Vec<Value>, AdapterError> {
    let parts = match content {
        Value::String(s) => return Ok(vec![json!({ "type": "text", "text": s })]),
        Value::Array(parts) => parts,
        _ => return Err(bad(format!("{at}: content must be a string or a list of parts"))),
    };
    let mut blocks = Vec::with_capacity(parts.len());
    for part in parts {
        match part["type"].as_str() {
            Some("text") => blocks.push(json!({ "type": "text", "text": part["text"].as_str().unwrap_or_default() })),
            Some("image_url") => {
                let url = part["image_url"]["url"].as_str().or(part["image_url"].as_str()).unwrap_or_default();
                blocks.push(json!({ "type": "image", "source": image_source(url)? }));
            }
            other => return Err(bad(format!("{at}: a '{}' part cannot be sent to Anthropic", other.unwrap_or("?")))),
        }
    }
    Ok(blocks)
}

/// Appends `blocks` as a turn of `role`, merged into the previous turn when it is the same role.
fn push_turn(turns: &mut Vec<Value>, role: &str, blocks: Vec<Value>) {
    // Anthropic refuses empty text blocks.
    let blocks: Vec<Value> = blocks.into_iter().filter(|b| b["type"] != "text" || b["text"] != "").collect();
    if blocks.is_empty() {
        return;
    }
    if let Some(last) = turns.last_mut().filter(|t| t["role"] == role) {
        if let Some(content) = last["content"].as_array_mut() {
            content.extend(blocks);
            return;
        }
    }
    turns.push(json!({ "role": role, "content": blocks }));
}

/// The Messages request for an OpenAI chat call, and what reads its answer.
pub fn to_messages(call: &Call) -> Result<(String, Answer), AdapterError> {
    let body = call.body.object("a chat request is JSON, not a form")?;
    if body.get("n").and_then(Value::as_u64).is_some_and(|n| n > 1) {
        return Err(bad("n: Anthropic answers one choice per request"));
    }
    if let Some(kind) = body.get("response_format").and_then(|f| f["type"].as_str()).filter(|k| *k != "text") {
        return Err(bad(format!(
            "response_format: Anthropic has no '{kind}' mode; ask for JSON in the prompt, or use a tool"
        )));
    }
    let messages = body.get("messages").and_then(Value::as_array).ok_or_else(|| bad("messages: a list is required"))?;
    let mut system = Vec::new();
    let mut turns: Vec<Value> = Vec::with_capacity(messages.len());
    for (i, m) in messages.iter().enumerate() {
        let at = format!("messages[{i}]");
        match m["role"].as_str() {
            Some("system" | "developer") => system.push(text_of(&m["content"], &at)?),
            Some("user") => push_turn(&mut turns, "user", user_blocks(&m["content"], &at)?),
            Some("assistant") => {
                let mut blocks = vec![json!({ "type": "text", "text": text_of(&m["content"], &at)? })];
                for call in m["tool_calls"].as_array().map(Vec::as_slice).unwrap_or_default() {
                    let args = call["function"]["arguments"].as_str().unwrap_or_default();
                    let input = serde_json::from_str::<Value>(args).ok().filter(Value::is_object).unwrap_or(json!({}));
                    blocks.push(json!({
                        "type": "tool_use",
                        "id": call["id"].as_str().unwrap_or_default(),
                        "name": call["function"]["name"].as_str().unwrap_or_default(),
                        "input": input,
                    }));
                }
                push_turn(&mut turns, "assistant", blocks);
            }
            Some("tool") => {
                let id = m["tool_call_id"].as_str().ok_or_else(|| bad(format!("{at}: tool_call_id is required")))?;
                let result =
                    json!({ "type": "tool_result", "tool_use_id": id, "content": text_of(&m["content"], &at)? });
                push_turn(&mut turns, "user", vec![result]);
            }
            other => return Err(bad(format!("{at}: the role '{}' cannot be sent to Anthropic", other.unwrap_or("?")))),
        }
    }
    let max_tokens = ["max_completion_tokens", "max_tokens"]
        .iter()
        .find_map(|k| body.get(*k).and_then(Value::as_u64))
        .unwrap_or(DEFAULT_MAX_TOKENS);
    let stream = body.get("stream").and_then(Value::as_bool).unwrap_or(false);
    let mut out = Map::new();
    out.insert("model".into(), json!(call.vendor_model()));
    out.insert("max_tokens".into(), json!(max_tokens));
    out.insert("messages".into(), Value::Array(turns));
    if !system.is_empty() {
        out.insert("system".into(), json!(system.join("\n\n")));
    }
    if stream {
        out.insert("stream".into(), json!(true));
    }
    // OpenAI's temperature runs to 2, Anthropic's to 1.
    if let Some(t) = body.get("temperature").and_then(Value::as_f64) {
        out.insert("temperature".into(), json!(t.min(1.0)));
    }
    // Newer Claude models refuse both at once: the temperature wins.
    if let Some(p) = body.get("top_p").and_then(Value::as_f64).filter(|_| !out.contains_key("temperature")) {
        out.insert("top_p".into(), json!(p));
    }
    match body.get("stop") {
        Some(Value::String(s)) => {
            out.insert("stop_sequences".into(), json!([s]));
        }
        Some(Value::Array(a)) if !a.is_empty() => {
            out.insert("stop_sequences".into(), Value::Array(a.clone()));
        }
        _ => {}
    }
    if let Some(tools) = body.get("tools").and_then(Value::as_array).filter(|t| !t.is_empty()) {
        let tools = tools
            .iter()
            .map(|t| {
                let f = &t["function"];
                let name = f["name"].as_str().ok_or_else(|| bad("tools: each function needs a name"))?;
                let mut tool = json!({ "name": name, "input_schema": f.get("parameters").cloned().unwrap_or(json!({ "type": "object" })) });
                if let Some(d) = f["description"].as_str() {
                    tool["description"] = json!(d);
                }
                Ok(tool)
            })
            .collect::<Result<Vec<_>, AdapterError>>()?;
        out.insert("tools".into(), Value::Array(tools));
    }
    let mut choice = match body.get("tool_choice") {
        Some(Value::String(c)) if c == "required" => Some(json!({ "type": "any" })),
        Some(Value::String(c)) if c == "none" => Some(json!({ "type": "none" })),
        Some(Value::String(_)) => Some(json!({ "type": "auto" })),
        Some(Value::Object(c)) => {
            let name = c
                .get("function")
                .and_then(|f| f["name"].as_str())
                .ok_or_else(|| bad("tool_choice: a function name is required"))?;
            Some(json!({ "type": "tool", "name": name }))
        }
        _ => None,
    };
    if body.get("parallel_tool_calls") == Some(&Value::Bool(false)) && out.contains_key("tools") {
        let c = choice.get_or_insert_with(|| json!({ "type": "auto" }));
        c["disable_parallel_tool_use"] = json!(true);
    }
    // A tool choice without tools is refused by Anthropic; without tools there is no choice.
    if let Some(c) = choice.filter(|_| out.contains_key("tools")) {
        out.insert("tool_choice".into(), c);
    }
    if let Some(user) = body.get("user").and_then(Value::as_str) {
        out.insert("metadata".into(), json!({ "user_id": user }));
    }
    let include_usage = body.get("stream_options").and_then(|o| o["include_usage"].as_bool()).unwrap_or(false);
    let answer = Answer {
        out: Chunks::new("chatcmpl-anthropic".into(), call.model.clone()),
        stream,
        include_usage,
        tools: Vec::new(),
    };
    Ok((Value::Object(out).to_string(), answer))
}

fn finish_reason(stop: Option<&str>) -> &'static str {
    match stop {
        Some("max_tokens") => "length",
        Some("tool_use") => "tool_calls",
        Some("refusal") => "content_filter",
        _ => "stop",
    }
}

/// Reads Anthropic's answer for an OpenAI consumer.
pub struct Answer {
    /// OpenAI's chunks (their id becomes Anthropic's message id once it is known).
    out: Chunks,
    stream: bool,
    include_usage: bool,
    /// The content block index of each tool call, in order (its OpenAI index is its place).
    tools: Vec<u64>,
}

impl Answer {
    pub fn streams(&self) -> bool {
        self.stream
    }

    /// A whole Message as a chat completion; `None` when it is not one.
    pub fn completion(&self, message: &[u8]) -> Option<String> {
        let m: Value = serde_json::from_slice(message).ok()?;
        let mut text = String::new();
        let mut reasoning = String::new();
        let mut calls = Vec::new();
        for block in m.get("content")?.as_array()? {
            match block["type"].as_str() {
                Some("text") => text.push_str(block["text"].as_str().unwrap_or_default()),
                Some("thinking") => reasoning.push_str(block["thinking"].as_str().unwrap_or_default()),
                Some("tool_use") => calls.push(json!({
                    "id": block["id"], "type": "function",
                    "function": { "name": block["name"], "arguments": block["input"].to_string() },
                })),
                _ => {}
            }
        }
        let mut message = json!({ "role": "assistant", "content": if text.is_empty() && !calls.is_empty() { Value::Null } else { json!(text) } });
        if !calls.is_empty() {
            message["tool_calls"] = Value::Array(calls);
        }
        if !reasoning.is_empty() {
            message["reasoning_content"] = json!(reasoning);
        }
        let mut usage = Usage::default();
        if let Ok(u) = serde_json::from_value::<super::AnthropicUsage>(m["usage"].clone()) {
            u.merge_into(&mut usage);
        }
        let out = Chunks { id: format!("chatcmpl-{}", m["id"].as_str().unwrap_or("anthropic")), ..self.out.clone() };
        let choices =
            json!([{ "index": 0, "message": message, "finish_reason": finish_reason(m["stop_reason"].as_str()) }]);
        Some(out.completion(choices, &usage))
    }

    fn delta(&self, delta: Value, finish: Option<&str>) -> OutChunk {
        self.out.delta(delta, finish)
    }

    /// One event of Anthropic's stream, as OpenAI chunks.
    pub fn event(&mut self, event: &SseEvent, out: &mut Vec<OutChunk>) -> Result<(), AdapterError> {
        let name = event.event.as_deref().unwrap_or_default();
        if matches!(name, "ping" | "message_stop" | "content_block_stop" | "") {
            return Ok(());
        }
        let v: Value = serde_json::from_str(&event.data)
            .map_err(|_| AdapterError::new(ErrorKind::UpstreamFault, "Anthropic sent an invalid stream event"))?;
        match name {
            "message_start" => {
                if let Some(id) = v["message"]["id"].as_str() {
                    self.out.id = format!("chatcmpl-{id}");
                }
                out.push(self.delta(json!({ "role": "assistant", "content": "" }), None));
            }
            "content_block_start" if v["content_block"]["type"] == "tool_use" => {
                let index = self.tools.len();
                self.tools.push(v["index"].as_u64().unwrap_or(0));
                let b = &v["content_block"];
                let call = json!({ "index": index, "id": b["id"], "type": "function", "function": { "name": b["name"], "arguments": "" } });
                out.push(self.delta(json!({ "tool_calls": [call] }), None));
            }
            "content_block_delta" => {
                let d = &v["delta"];
                match d["type"].as_str() {
                    Some("text_delta") => out.push(self.delta(json!({ "content": d["text"] }), None)),
                    Some("thinking_delta") => out.push(self.delta(json!({ "reasoning_content": d["thinking"] }), None)),
                    Some("input_json_delta") => {
                        let block = v["index"].as_u64().unwrap_or(0);
                        let Some(index) = self.tools.iter().position(|b| *b == block) else { return Ok(()) };
                        let call = json!({ "index": index, "function": { "arguments": d["partial_json"] } });
                        out.push(self.delta(json!({ "tool_calls": [call] }), None));
                    }
                    _ => {}
                }
            }
            "message_delta" => {
                if let Some(stop) = v["delta"]["stop_reason"].as_str() {
                    out.push(self.delta(json!({}), Some(finish_reason(Some(stop)))));
                }
            }
            _ => {}
        }
        Ok(())
    }

    /// The end of a stream: the usage chunk (when asked for) and `[DONE]`, only after a
    /// clean end (the host ends a cut stream with its error event).
    pub fn finish(&mut self, end: StreamEnd, usage: &Usage, out: &mut Vec<OutChunk>) {
        if end != StreamEnd::Complete {
            return;
        }
        self.out.end(self.include_usage, usage, out);
    }
}
