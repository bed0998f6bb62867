//! An OpenAI chat answer as Anthropic's: the whole message, or the stream of named events.
//!
//! Invariants:
//! - usage is Anthropic's: `input_tokens` excludes the tokens read from the cache, which are
//!   `cache_read_input_tokens` (OpenAI's `prompt_tokens` includes them);
//! - `stop_reason` is `tool_use` whenever the answer calls a tool, whatever the vendor's
//!   `finish_reason` said;
//! - a streamed tool call's arguments reach the consumer as `input_json_delta`s in the order
//!   they came, each on the block of its call, none dropped: tool blocks stay open until the
//!   message ends (a vendor may add to an earlier call after starting the next), and a call
//!   the vendor gives no index is found by its id, else it is the last one;
//! - a stream ends with `message_delta` (stop reason and usage) and `message_stop` only when
//!   the vendor's ended cleanly; a failure ends it with Anthropic's `error` event.

use serde_json::{json, Value};
use std::collections::HashMap;
use tollgate_base::sse;

/// Anthropic's usage from OpenAI's.
fn usage(u: &Value) -> Value {
    let prompt = u["prompt_tokens"].as_u64().unwrap_or(0);
    let cached = u.pointer("/prompt_tokens_details/cached_tokens").and_then(Value::as_u64);
    let cached = cached.or_else(|| u["prompt_cache_hit_tokens"].as_u64()).unwrap_or(0).min(prompt);
    json!({
        "input_tokens": prompt - cached,
        "output_tokens": u["completion_tokens"].as_u64().unwrap_or(0),
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": cached,
    })
}

fn stop_reason(finish: Option<&str>, called_tools: bool) -> &'static str {
    match finish {
        _ if called_tools => "tool_use",
        Some("length") => "max_tokens",
        Some("content_filter") => "refusal",
        _ => "end_turn",
    }
}

/// A tool call's arguments as the tool's input (a JSON object); arguments that are not JSON
/// are kept whole under `arguments`, so nothing is lost.
fn tool_input(arguments: &str) -> Value {
    match serde_json::from_str::<Value>(arguments) {
        Ok(v @ Value::Object(_)) => v,
        _ if arguments.trim().is_empty() => json!({}),
        _ => json!({ "arguments": arguments }),
    }
}

/// A whole chat completion as a Message; `None` when it is not one.
pub fn message(completion: &[u8], id: &str, model: &str) -> Option<Value> {
    let c: Value = serde_json::from_slice(completion).ok()?;
    let choice = c.get("choices")?.get(0)?;
    let m = &choice["message"];
    let mut content = Vec::new();
    if let Some(thinking) = m["reasoning_content"].as_str().filter(|t| !t.is_empty()) {
        content.push(json!({ "type": "thinking", "thinking": thinking, "signature": "" }));
    }
    if let Some(text) = m["content"].as_str().filter(|t| !t.is_empty()) {
        content.push(json!({ "type": "text", "text": text }));
    }
    let calls = m["tool_calls"].as_array().map(Vec::as_slice).unwrap_or_default();
    for call in calls {
        content.push(json!({
            "type": "tool_use",
            "id": call["id"].as_str().unwrap_or_default(),
            "name": call["function"]["name"].as_str().unwrap_or_default(),
            "input": tool_input(call["function"]["arguments"].as_str().unwrap_or_default()),
        }));
    }
    Some(json!({
        "id": id,
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": content,
        "stop_reason": stop_reason(choice["finish_reason"].as_str(), !calls.is_empty()),
        "stop_sequence": null,
        "usage": usage(&c["usage"]),
    }))
}

/// The kind of a text-like content block open in a stream (tool blocks are kept apart).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Block {
    Thinking,
    Text,
}

/// Turns a stream of OpenAI chat chunks into Anthropic's events, event by event.
pub struct StreamTranslator {
    id: String,
    model: String,
    started: bool,
    /// The open text or thinking block and its index.
    open: Option<(Block, usize)>,
    next_index: usize,
    /// Each tool call's key (OpenAI's index, else its id) → its block, open until the end.
    tools: HashMap<String, usize>,
    /// The tool blocks, in order, and the last one's key.
    tool_blocks: Vec<usize>,
    last_tool: Option<String>,
    finish: Option<String>,
    usage: Option<Value>,
    ended: bool,
}

impl StreamTranslator {
    pub fn new(id: String, model: String) -> Self {
        StreamTranslator {
            id,
            model,
            started: false,
            open: None,
            next_index: 0,
            tools: HashMap::new(),
            tool_blocks: Vec::new(),
            last_tool: None,
            finish: None,
            usage: None,
            ended: false,
        }
    }

    fn emit(out: &mut Vec<u8>, data: Value) {
        let name = data["type"].as_str().unwrap_or_default().to_string();
        sse::write_event(out, Some(&name), None, &data.to_string());
    }

    fn start(&mut self, out: &mut Vec<u8>) {
        if self.started {
            return;
        }
        self.started = true;
        Self::emit(
            out,
            json!({ "type": "message_start", "message": {
                "id": self.id, "type": "message", "role": "assistant", "model": self.model, "content": [],
                "stop_reason": null, "stop_sequence": null,
                "usage": { "input_tokens": 0, "output_tokens": 0 },
            }}),
        );
    }

    fn close(&mut self, out: &mut Vec<u8>) {
        if let Some((_, index)) = self.open.take() {
            Self::emit(out, json!({ "type": "content_block_stop", "index": index }));
        }
    }

    /// The index of a block of `kind`, opening it (and closing the one open) when needed.
    fn block(&mut self, kind: Block, start: Value, out: &mut Vec<u8>) -> usize {
        match self.open {
            Some((k, index)) if k == kind => index,
            _ => {
                self.close(out);
                let index = self.open_block(start, out);
                self.open = Some((kind, index));
                index
            }
        }
    }

    fn open_block(&mut self, start: Value, out: &mut Vec<u8>) -> usize {
        let index = self.next_index;
        self.next_index += 1;
        Self::emit(out, json!({ "type": "content_block_start", "index": index, "content_block": start }));
        index
    }

    /// One event of the OpenAI stream, as Anthropic's events appended to `out`.
    pub fn event(&mut self, event: sse::Event, out: &mut Vec<u8>) {
        if self.ended {
            return;
        }
        let data = event.data.trim();
        if data == "[DONE]" {
            self.end(out);
            return;
        }
        let Ok(chunk) = serde_json::from_str::<Value>(data) else { return };
        if let Some(e) = chunk.get("error").filter(|e| e.is_object()) {
            self.fail(e, out);
            return;
        }
        self.start(out);
        if let Some(u) = chunk.get("usage").filter(|u| u.is_object()) {
            self.usage = Some(usage(u));
        }
        let Some(choice) = chunk.pointer("/choices/0") else { return };
        let delta = &choice["delta"];
        if let Some(t) = delta["reasoning_content"].as_str().filter(|t| !t.is_empty()) {
            let index =
                self.block(Block::Thinking, json!({ "type": "thinking", "thinking": "", "signature": "" }), out);
            let d = json!({ "type": "thinking_delta", "thinking": t });
            Self::emit(out, json!({ "type": "content_block_delta", "index": index, "delta": d }));
        }
        if let Some(t) = delta["content"].as_str().filter(|t| !t.is_empty()) {
            let index = self.block(Block::Text, json!({ "type": "text", "text": "" }), out);
            let d = json!({ "type": "text_delta", "text": t });
            Self::emit(out, json!({ "type": "content_block_delta", "index": index, "delta": d }));
        }
        for call in delta["tool_calls"].as_array().map(Vec::as_slice).unwrap_or_default() {
            self.tool_delta(call, out);
        }
        if let Some(f) = choice["finish_reason"].as_str() {
            self.finish = Some(f.to_string());
        }
    }

    fn tool_delta(&mut self, call: &Value, out: &mut Vec<u8>) {
        let id = call["id"].as_str().filter(|id| !id.is_empty());
        let key = match (call["index"].as_u64(), id) {
            (Some(i), _) => i.to_string(),
            (None, Some(id)) => format!("id:{id}"),
            (None, None) => self.last_tool.clone().unwrap_or_else(|| "0".into()),
        };
        let index = match self.tools.get(&key) {
            Some(&index) => index,
            None => {
                self.close(out);
                let start = json!({
                    "type": "tool_use",
                    "id": id.unwrap_or_default(),
                    "name": call["function"]["name"].as_str().unwrap_or_default(),
                    "input": {},
                });
                let index = self.open_block(start, out);
                self.tools.insert(key.clone(), index);
                self.tool_blocks.push(index);
                index
            }
        };
        self.last_tool = Some(key);
        if let Some(args) = call["function"]["arguments"].as_str().filter(|a| !a.is_empty()) {
            let d = json!({ "type": "input_json_delta", "partial_json": args });
            Self::emit(out, json!({ "type": "content_block_delta", "index": index, "delta": d }));
        }
    }

    /// The clean end: the open block closed, the stop reason and the usage, `message_stop`.
    pub fn end(&mut self, out: &mut Vec<u8>) {
        if self.ended {
            return;
        }
        self.start(out);
        self.close(out);
        for index in std::mem::take(&mut self.tool_blocks) {
            Self::emit(out, json!({ "type": "content_block_stop", "index": index }));
        }
        self.ended = true;
        let reason = stop_reason(self.finish.as_deref(), !self.tools.is_empty());
        let usage = self.usage.take().unwrap_or_else(|| usage(&Value::Null));
        Self::emit(
            out,
            json!({ "type": "message_delta", "delta": { "stop_reason": reason, "stop_sequence": null }, "usage": usage }),
        );
        Self::emit(out, json!({ "type": "message_stop" }));
    }

    /// A failure (the gateway's error event): Anthropic's `error` event, and nothing after it.
    fn fail(&mut self, e: &Value, out: &mut Vec<u8>) {
        self.ended = true;
        let message = e["message"].as_str().unwrap_or("The stream failed.");
        let event = json!({ "type": "error", "error": { "type": "api_error", "message": message } });
        sse::write_event(out, Some("error"), None, &event.to_string());
    }
}

/// For a stream a plugin already speaks in Anthropic's events: only the gateway's own error
/// event (unnamed, OpenAI-shaped) is rewritten as Anthropic's `error` event.
pub fn native_event(event: sse::Event, out: &mut Vec<u8>) {
    if event.event.is_none() {
        if let Ok(v) = serde_json::from_str::<Value>(&event.data) {
            if let Some(message) = v.pointer("/error/message").and_then(Value::as_str) {
                let e = json!({ "type": "error", "error": { "type": "api_error", "message": message } });
                sse::write_event(out, Some("error"), None, &e.to_string());
                return;
            }
        }
    }
    sse::write_event(out, event.event.as_deref(), event.id.as_deref(), &event.data);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn events(out: &[u8]) -> Vec<(String, Value)> {
        let mut parser = sse::Parser::new();
        let mut evs = Vec::new();
        parser.feed(out, &mut evs);
        evs.into_iter().map(|e| (e.event.unwrap_or_default(), serde_json::from_str(&e.data).unwrap())).collect()
    }

    fn chunk(data: Value) -> sse::Event {
        sse::Event { event: None, data: data.to_string(), id: None }
    }

    #[test]
    fn a_whole_answer_with_tool_calls_and_cache_hits() {
        let completion = json!({
            "choices": [{ "message": { "content": "Let me look.", "tool_calls": [
                { "id": "call_1", "type": "function", "function": { "name": "look", "arguments": "{\"q\":\"x\"}" } },
            ]}, "finish_reason": "stop" }],
            "usage": { "prompt_tokens": 100, "completion_tokens": 7, "prompt_tokens_details": { "cached_tokens": 60 } },
        });
        let m = message(completion.to_string().as_bytes(), "msg_1", "m").unwrap();
        assert_eq!(m["stop_reason"], "tool_use", "a tool call is tool_use even when the vendor said stop");
        assert_eq!(
            m["content"][1],
            json!({ "type": "tool_use", "id": "call_1", "name": "look", "input": { "q": "x" } })
        );
        assert_eq!(
            m["usage"],
            json!({ "input_tokens": 40, "output_tokens": 7, "cache_creation_input_tokens": 0, "cache_read_input_tokens": 60 })
        );
        let deepseek = json!({ "choices": [{ "message": { "content": "x" }, "finish_reason": "length" }],
            "usage": { "prompt_tokens": 10, "completion_tokens": 1, "prompt_cache_hit_tokens": 4 } });
        let m = message(deepseek.to_string().as_bytes(), "msg_2", "m").unwrap();
        assert_eq!((&m["stop_reason"], &m["usage"]["cache_read_input_tokens"]), (&json!("max_tokens"), &json!(4)));
        assert!(message(b"{\"error\":{}}", "x", "m").is_none());
    }

    #[test]
    fn a_stream_of_text_then_two_tool_calls() {
        let mut t = StreamTranslator::new("msg_1".into(), "m".into());
        let mut out = Vec::new();
        let calls = |c: Value| json!({ "choices": [{ "delta": { "tool_calls": [c] }, "finish_reason": null }] });
        for data in [
            json!({ "choices": [{ "delta": { "role": "assistant", "content": "" }, "finish_reason": null }] }),
            json!({ "choices": [{ "delta": { "content": "Hi" }, "finish_reason": null }] }),
            calls(json!({ "index": 0, "id": "c0", "function": { "name": "a", "arguments": "" } })),
            calls(json!({ "index": 0, "function": { "arguments": "{\"x\":" } })),
            calls(json!({ "index": 1, "id": "c1", "function": { "name": "b", "arguments": "{}" } })),
            calls(json!({ "index": 0, "function": { "arguments": "1}" } })),
            json!({ "choices": [{ "delta": {}, "finish_reason": "tool_calls" }] }),
            json!({ "choices": [], "usage": { "prompt_tokens": 9, "completion_tokens": 3 } }),
        ] {
            t.event(chunk(data), &mut out);
        }
        t.event(sse::Event { event: None, data: "[DONE]".into(), id: None }, &mut out);
        let evs = events(&out);
        let names: Vec<&str> = evs.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(
            names,
            [
                "message_start",
                "content_block_start",
                "content_block_delta",
                "content_block_stop",
                "content_block_start",
                "content_block_delta",
                "content_block_start",
                "content_block_delta",
                "content_block_delta",
                "content_block_stop",
                "content_block_stop",
                "message_delta",
                "message_stop"
            ]
        );
        let partial: Vec<(u64, &str)> = evs
            .iter()
            .filter(|(_, v)| v["delta"]["type"] == "input_json_delta")
            .map(|(_, v)| (v["index"].as_u64().unwrap(), v["delta"]["partial_json"].as_str().unwrap()))
            .collect();
        assert_eq!(partial, [(1, "{\"x\":"), (2, "{}"), (1, "1}")], "every fragment, on its call's block, still open");
        // Calls without an index: found by id, else the last one.
        let mut t = StreamTranslator::new("msg_2".into(), "m".into());
        let mut out = Vec::new();
        t.event(chunk(calls(json!({ "id": "a", "function": { "name": "f", "arguments": "{\"k\"" } }))), &mut out);
        t.event(chunk(calls(json!({ "function": { "arguments": ":1}" } }))), &mut out);
        t.event(chunk(calls(json!({ "id": "b", "function": { "name": "g", "arguments": "{}" } }))), &mut out);
        t.end(&mut out);
        let starts = events(&out).iter().filter(|(n, _)| n == "content_block_start").count();
        assert_eq!(starts, 2, "two calls, two blocks");
        assert_eq!(evs[11].1["delta"]["stop_reason"], "tool_use");
        assert_eq!(evs[11].1["usage"]["input_tokens"], 9);
        // Nothing after the end.
        let mut more = Vec::new();
        t.end(&mut more);
        assert!(more.is_empty());
    }

    #[test]
    fn a_failure_is_anthropics_error_event() {
        let mut t = StreamTranslator::new("msg_1".into(), "m".into());
        let mut out = Vec::new();
        t.event(chunk(json!({ "choices": [{ "delta": { "content": "Hi" } }] })), &mut out);
        t.event(chunk(json!({ "error": { "message": "the upstream stream was cut", "type": "api_error" } })), &mut out);
        t.event(sse::Event { event: None, data: "[DONE]".into(), id: None }, &mut out);
        let evs = events(&out);
        let (name, last) = evs.last().unwrap();
        assert_eq!((name.as_str(), &last["error"]["message"]), ("error", &json!("the upstream stream was cut")));
        assert!(!evs.iter().any(|(n, _)| n == "message_stop"), "a failed stream never ends cleanly");
        let mut native = Vec::new();
        native_event(chunk(json!({ "error": { "message": "cut" } })), &mut native);
        assert_eq!(events(&native)[0].0, "error");
    }
}
