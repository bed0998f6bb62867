//! An Anthropic Messages request as the OpenAI chat request an OpenAI-shaped vendor reads.
//!
//! Invariants:
//! - nothing the consumer asked for is dropped silently when it changes the answer: a block,
//!   tool or source with no OpenAI equivalent (documents, server tools, file sources, images
//!   inside tool results) is refused with a 400 naming it; what only tunes the vendor
//!   (`cache_control`, `top_k`, `thinking`) is left out;
//! - the order of the conversation is kept: a user turn's tool results become `tool`
//!   messages before the rest of that turn, as OpenAI requires;
//! - a field given twice is refused (serde), as every surface does.

use crate::exchange::CallError;
use crate::server::error::bad_request;
use serde::Deserialize;
use serde_json::{json, Map, Value};

/// The fields of a Messages request the translation reads; the rest are left out.
#[derive(Deserialize)]
struct Messages {
    model: String,
    /// Required but by the token count.
    #[serde(default)]
    max_tokens: Option<u64>,
    messages: Vec<Message>,
    #[serde(default)]
    system: Option<Content>,
    #[serde(default)]
    stream: Option<bool>,
    #[serde(default)]
    temperature: Option<f64>,
    #[serde(default)]
    top_p: Option<f64>,
    #[serde(default)]
    stop_sequences: Option<Vec<String>>,
    #[serde(default)]
    tools: Option<Vec<Map<String, Value>>>,
    #[serde(default)]
    tool_choice: Option<Map<String, Value>>,
    #[serde(default)]
    metadata: Option<Metadata>,
}

#[derive(Deserialize)]
struct Metadata {
    #[serde(default)]
    user_id: Option<String>,
}

#[derive(Deserialize)]
struct Message {
    role: String,
    content: Content,
}

/// A string, or a list of content blocks.
#[derive(Deserialize)]
#[serde(untagged)]
enum Content {
    Text(String),
    Blocks(Vec<Map<String, Value>>),
}

/// What the surface needs besides the translated body.
pub struct Translated {
    pub model: String,
    /// The OpenAI chat request.
    pub body: Vec<u8>,
}

/// The OpenAI chat request for an Anthropic Messages request; a 400 in Anthropic's terms when
/// the request is not a valid Messages request or asks for what OpenAI's format cannot carry.
pub fn to_openai(body: &[u8]) -> Result<Translated, CallError> {
    translate(body, false)
}

/// An estimate of a token count request's input tokens (it has no `max_tokens`): about four
/// bytes of the translated request's JSON a token. A request the translation refuses is refused.
pub fn estimated_tokens(body: &[u8]) -> Result<u64, CallError> {
    Ok((translate(body, true)?.body.len() as u64).div_ceil(4).max(1))
}

fn translate(body: &[u8], counting: bool) -> Result<Translated, CallError> {
    let m: Messages = serde_json::from_slice(body)
        .map_err(|e| bad_request("invalid_request", format!("The body is not a valid Messages request: {e}")))?;
    let max_tokens = match (m.max_tokens, counting) {
        (Some(n), _) => n,
        (None, true) => 1,
        (None, false) => return Err(bad_request("invalid_request", "max_tokens: Field required")),
    };
    if m.model.is_empty() {
        return Err(bad_request("invalid_request", "model: the model is required."));
    }
    if m.messages.is_empty() {
        return Err(bad_request("invalid_request", "messages: at least one message is required."));
    }
    let mut out = Vec::with_capacity(m.messages.len() + 1);
    if let Some(system) = m.system {
        out.push(json!({ "role": "system", "content": text_of(system, "system")? }));
    }
    for (i, message) in m.messages.into_iter().enumerate() {
        match message.role.as_str() {
            "user" => user_turn(message.content, i, &mut out)?,
            "assistant" => out.push(assistant_turn(message.content, i)?),
            other => {
                return Err(bad_request(
                    "invalid_request",
                    format!("messages.{i}.role: '{other}' is not a role; use 'user' or 'assistant'."),
                ))
            }
        }
    }
    let stream = m.stream.unwrap_or(false);
    let mut req = Map::new();
    req.insert("model".into(), Value::String(m.model.clone()));
    req.insert("messages".into(), Value::Array(out));
    req.insert("max_tokens".into(), json!(max_tokens));
    if stream {
        req.insert("stream".into(), Value::Bool(true));
        // The usage chunk is where the answer's usage comes from.
        req.insert("stream_options".into(), json!({ "include_usage": true }));
    }
    if let Some(t) = m.temperature {
        req.insert("temperature".into(), json!(t));
    }
    if let Some(p) = m.top_p {
        req.insert("top_p".into(), json!(p));
    }
    if let Some(stop) = m.stop_sequences.filter(|s| !s.is_empty()) {
        req.insert("stop".into(), json!(stop));
    }
    if let Some(tools) = m.tools.filter(|t| !t.is_empty()) {
        let tools = tools.into_iter().enumerate().map(|(i, t)| tool(t, i)).collect::<Result<Vec<_>, _>>()?;
        req.insert("tools".into(), Value::Array(tools));
    }
    if let Some(choice) = m.tool_choice {
        let (choice, parallel) = tool_choice(&choice)?;
        req.insert("tool_choice".into(), choice);
        if parallel == Some(false) {
            req.insert("parallel_tool_calls".into(), Value::Bool(false));
        }
    }
    if let Some(user) = m.metadata.and_then(|m| m.user_id) {
        req.insert("user".into(), Value::String(user));
    }
    let body = serde_json::to_vec(&Value::Object(req)).expect("a JSON value serialises");
    Ok(Translated { model: m.model, body })
}

fn invalid(at: &str, message: impl std::fmt::Display) -> CallError {
    bad_request("invalid_request", format!("{at}: {message}"))
}

fn untranslatable(at: &str, what: &str) -> CallError {
    bad_request(
        "unsupported_content",
        format!("{at}: {what} cannot be sent to this model: its vendor speaks OpenAI's chat format, which has no equivalent."),
    )
}

fn block_type<'a>(block: &'a Map<String, Value>, at: &str) -> Result<&'a str, CallError> {
    block.get("type").and_then(Value::as_str).ok_or_else(|| invalid(at, "a content block needs a 'type'"))
}

fn string_field<'a>(block: &'a Map<String, Value>, name: &str, at: &str) -> Result<&'a str, CallError> {
    block.get(name).and_then(Value::as_str).ok_or_else(|| invalid(at, format!("'{name}' must be a string")))
}

/// Text only (a system prompt, a tool result): the text blocks joined.
fn text_of(content: Content, at: &str) -> Result<String, CallError> {
    match content {
        Content::Text(t) => Ok(t),
        Content::Blocks(blocks) => {
            let mut text = String::new();
            for (j, block) in blocks.iter().enumerate() {
                let at = format!("{at}.{j}");
                match block_type(block, &at)? {
                    "text" => {
                        if !text.is_empty() {
                            text.push('\n');
                        }
                        text.push_str(string_field(block, "text", &at)?);
                    }
                    "image" => return Err(untranslatable(&at, "an image here")),
                    other => return Err(untranslatable(&at, &format!("a '{other}' block"))),
                }
            }
            Ok(text)
        }
    }
}

/// A user turn: its tool results as `tool` messages, then its text and images.
fn user_turn(content: Content, i: usize, out: &mut Vec<Value>) -> Result<(), CallError> {
    let blocks = match content {
        Content::Text(t) => {
            out.push(json!({ "role": "user", "content": t }));
            return Ok(());
        }
        Content::Blocks(b) => b,
    };
    let mut parts = Vec::new();
    for (j, block) in blocks.into_iter().enumerate() {
        let at = format!("messages.{i}.content.{j}");
        match block_type(&block, &at)? {
            "text" => parts.push(json!({ "type": "text", "text": string_field(&block, "text", &at)? })),
            "image" => parts.push(json!({ "type": "image_url", "image_url": { "url": image_url(&block, &at)? } })),
            "tool_result" => {
                let id = string_field(&block, "tool_use_id", &at)?.to_string();
                let content = match block.get("content") {
                    None | Some(Value::Null) => String::new(),
                    Some(c) => text_of(
                        Content::deserialize(c).map_err(|e| invalid(&format!("{at}.content"), e))?,
                        &format!("{at}.content"),
                    )?,
                };
                out.push(json!({ "role": "tool", "tool_call_id": id, "content": content }));
            }
            other => return Err(untranslatable(&at, &format!("a '{other}' block in a user message"))),
        }
    }
    if parts.is_empty() {
        return Ok(());
    }
    // Text alone is one string: vendors that take no content parts still read it.
    let content = if parts.iter().all(|p| p["type"] == "text") {
        Value::String(parts.iter().filter_map(|p| p["text"].as_str()).collect::<Vec<_>>().join("\n"))
    } else {
        Value::Array(parts)
    };
    out.push(json!({ "role": "user", "content": content }));
    Ok(())
}

/// An assistant turn: its text, and its tool uses as tool calls; thinking is left out (it is
/// the vendor's own, and an OpenAI-shaped vendor has no way to take it back).
fn assistant_turn(content: Content, i: usize) -> Result<Value, CallError> {
    let blocks = match content {
        Content::Text(t) => return Ok(json!({ "role": "assistant", "content": t })),
        Content::Blocks(b) => b,
    };
    let mut text = String::new();
    let mut calls = Vec::new();
    for (j, block) in blocks.iter().enumerate() {
        let at = format!("messages.{i}.content.{j}");
        match block_type(block, &at)? {
            "text" => {
                if !text.is_empty() {
                    text.push('\n');
                }
                text.push_str(string_field(block, "text", &at)?);
            }
            "tool_use" => {
                let input = block.get("input").cloned().unwrap_or_else(|| json!({}));
                calls.push(json!({
                    "id": string_field(block, "id", &at)?,
                    "type": "function",
                    "function": { "name": string_field(block, "name", &at)?, "arguments": input.to_string() },
                }));
            }
            "thinking" | "redacted_thinking" => {}
            other => return Err(untranslatable(&at, &format!("a '{other}' block in an assistant message"))),
        }
    }
    let mut message = json!({ "role": "assistant", "content": if text.is_empty() && !calls.is_empty() { Value::Null } else { Value::String(text) } });
    if !calls.is_empty() {
        message["tool_calls"] = Value::Array(calls);
    }
    Ok(message)
}

/// An image block's source as an image URL (a `data:` URL for base64 data).
fn image_url(block: &Map<String, Value>, at: &str) -> Result<String, CallError> {
    let at = format!("{at}.source");
    let source =
        block.get("source").and_then(Value::as_object).ok_or_else(|| invalid(&at, "an image needs a source"))?;
    match source.get("type").and_then(Value::as_str) {
        Some("base64") => {
            let media = string_field(source, "media_type", &at)?;
            let data = string_field(source, "data", &at)?;
            Ok(format!("data:{media};base64,{data}"))
        }
        Some("url") => Ok(string_field(source, "url", &at)?.to_string()),
        Some(other) => Err(untranslatable(&at, &format!("an image source of type '{other}'"))),
        None => Err(invalid(&at, "a source needs a 'type'")),
    }
}

/// A client tool as an OpenAI function; a server tool (web search, code execution, ...) has
/// no OpenAI equivalent.
fn tool(t: Map<String, Value>, i: usize) -> Result<Value, CallError> {
    let at = format!("tools.{i}");
    if let Some(kind) = t.get("type").and_then(Value::as_str).filter(|k| *k != "custom") {
        return Err(untranslatable(&at, &format!("the server tool '{kind}'")));
    }
    let name = string_field(&t, "name", &at)?;
    let schema = t.get("input_schema").cloned().ok_or_else(|| invalid(&at, "a tool needs an 'input_schema'"))?;
    let mut function = json!({ "name": name, "parameters": schema });
    if let Some(d) = t.get("description").and_then(Value::as_str) {
        function["description"] = Value::String(d.to_string());
    }
    Ok(json!({ "type": "function", "function": function }))
}

/// `tool_choice` and whether parallel tool use is allowed.
fn tool_choice(c: &Map<String, Value>) -> Result<(Value, Option<bool>), CallError> {
    let parallel = c.get("disable_parallel_tool_use").and_then(Value::as_bool).map(|d| !d);
    let choice = match c.get("type").and_then(Value::as_str) {
        Some("auto") => json!("auto"),
        Some("any") => json!("required"),
        Some("none") => json!("none"),
        Some("tool") => json!({ "type": "function", "function": { "name": string_field(c, "name", "tool_choice")? } }),
        _ => return Err(invalid("tool_choice.type", "use 'auto', 'any', 'tool' or 'none'")),
    };
    Ok((choice, parallel))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn translate(body: Value) -> Value {
        serde_json::from_slice(&to_openai(body.to_string().as_bytes()).unwrap().body).unwrap()
    }

    #[test]
    fn a_conversation_with_tools_keeps_its_order_and_meaning() {
        let out = translate(json!({
            "model": "m", "max_tokens": 64, "stream": true,
            "system": [{ "type": "text", "text": "Be brief.", "cache_control": { "type": "ephemeral" } }],
            "messages": [
                { "role": "user", "content": [
                    { "type": "text", "text": "What is this?" },
                    { "type": "image", "source": { "type": "base64", "media_type": "image/png", "data": "iVBO" } },
                ]},
                { "role": "assistant", "content": [
                    { "type": "thinking", "thinking": "hmm", "signature": "s" },
                    { "type": "tool_use", "id": "toolu_1", "name": "look", "input": { "q": "x" } },
                ]},
                { "role": "user", "content": [
                    { "type": "tool_result", "tool_use_id": "toolu_1", "content": [{ "type": "text", "text": "a cat" }] },
                    { "type": "text", "text": "So?" },
                ]},
            ],
            "tools": [{ "name": "look", "description": "Looks", "input_schema": { "type": "object" } }],
            "tool_choice": { "type": "any", "disable_parallel_tool_use": true },
            "stop_sequences": ["END"], "metadata": { "user_id": "u1" }, "top_k": 5,
        }));
        let m = &out["messages"];
        assert_eq!(m[0], json!({ "role": "system", "content": "Be brief." }));
        assert_eq!(m[1]["content"][1]["image_url"]["url"], "data:image/png;base64,iVBO");
        assert_eq!(m[2]["content"], Value::Null);
        assert_eq!(m[2]["tool_calls"][0]["function"], json!({ "name": "look", "arguments": "{\"q\":\"x\"}" }));
        assert_eq!(m[3], json!({ "role": "tool", "tool_call_id": "toolu_1", "content": "a cat" }));
        assert_eq!(m[4], json!({ "role": "user", "content": "So?" }));
        assert_eq!(out["tools"][0]["function"]["parameters"], json!({ "type": "object" }));
        assert_eq!((&out["tool_choice"], &out["parallel_tool_calls"]), (&json!("required"), &json!(false)));
        assert_eq!((&out["stop"], &out["user"], &out["max_tokens"]), (&json!(["END"]), &json!("u1"), &json!(64)));
        assert_eq!(out["stream_options"]["include_usage"], true);
        assert!(out.get("top_k").is_none());
    }

    #[test]
    fn what_cannot_be_carried_is_refused_by_name() {
        let refused = |body: Value| to_openai(body.to_string().as_bytes()).err().map(|e| e.message).unwrap_or_default();
        let user = |content: Value| json!({ "model": "m", "max_tokens": 8, "messages": [{ "role": "user", "content": content }] });
        assert!(refused(user(json!([{ "type": "document", "source": {} }]))).contains("'document'"));
        assert!(refused(user(json!([{ "type": "image", "source": { "type": "file", "file_id": "f" } }])))
            .contains("'file'"));
        let server_tool = json!({ "model": "m", "max_tokens": 8, "messages": [{ "role": "user", "content": "x" }],
            "tools": [{ "type": "web_search_20250305", "name": "web_search" }] });
        assert!(refused(server_tool).contains("web_search_20250305"));
        assert!(
            refused(json!({ "model": "m", "messages": [{ "role": "user", "content": "x" }] })).contains("max_tokens")
        );
        assert!(refused(json!({ "model": "m", "max_tokens": 8, "messages": [] })).contains("at least one"));
        assert!(refused(json!({ "model": "m", "max_tokens": 8, "messages": [{ "role": "system", "content": "x" }] }))
            .contains("messages.0.role"));
        let twice = br#"{"model":"m","max_tokens":8,"max_tokens":9,"messages":[{"role":"user","content":"x"}]}"#;
        assert!(to_openai(twice).is_err(), "a field given twice");
    }
}
