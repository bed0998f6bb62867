use super::Anthropic;
use serde_json::{json, Value};
use tollgate_plugin_sdk::testing::{body_text, call, event_data, response, Harness, Outcome};
use tollgate_plugin_sdk::{Auth, Body, ErrorKind, Header, OutChunk, UpstreamResponse};

/// A stream as Anthropic writes it: a tool call after some text, cache reads and writes.
const STREAM: &str = "event: message_start\n\
data: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_1\",\"type\":\"message\",\"role\":\"assistant\",\"content\":[],\"usage\":{\"input_tokens\":3,\"cache_creation_input_tokens\":2,\"cache_read_input_tokens\":6,\"output_tokens\":1}}}\n\n\
event: content_block_start\n\
data: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"text\",\"text\":\"\"}}\n\n\
event: ping\n\
data: {\"type\":\"ping\"}\n\n\
event: content_block_delta\n\
data: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"Let me\"}}\n\n\
event: content_block_stop\n\
data: {\"type\":\"content_block_stop\",\"index\":0}\n\n\
event: content_block_start\n\
data: {\"type\":\"content_block_start\",\"index\":1,\"content_block\":{\"type\":\"tool_use\",\"id\":\"toolu_1\",\"name\":\"look\",\"input\":{}}}\n\n\
event: content_block_delta\n\
data: {\"type\":\"content_block_delta\",\"index\":1,\"delta\":{\"type\":\"input_json_delta\",\"partial_json\":\"{\\\"q\\\":\"}}\n\n\
event: content_block_delta\n\
data: {\"type\":\"content_block_delta\",\"index\":1,\"delta\":{\"type\":\"input_json_delta\",\"partial_json\":\"\\\"x\\\"}\"}}\n\n\
event: content_block_stop\n\
data: {\"type\":\"content_block_stop\",\"index\":1}\n\n\
event: message_delta\n\
data: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"tool_use\",\"stop_sequence\":null},\"usage\":{\"output_tokens\":12}}\n\n\
event: message_stop\n\
data: {\"type\":\"message_stop\"}\n\n";

fn with_version(mut c: tollgate_plugin_sdk::Call) -> tollgate_plugin_sdk::Call {
    c.headers.push(Header::new("anthropic-version", "2023-06-01"));
    c
}

#[test]
fn messages_pass_through_with_the_key_in_its_header_and_usage_counted_with_the_cache() {
    let body = r#"{"model":"claude","max_tokens":9,"messages":[{"role":"user","content":"hi"}]}"#;
    let run = Harness::<Anthropic>::new(with_version(call("messages", "claude", body))).run(|_| {
        response(
            200,
            r#"{"id":"msg_1","type":"message","content":[],"usage":{"input_tokens":3,"output_tokens":5,"cache_read_input_tokens":6,"cache_creation_input_tokens":2}}"#,
        )
    });
    let sent = &run.requests[0];
    assert_eq!(sent.path, "/v1/messages");
    assert!(matches!(&sent.auth, Auth::Header(h) if h == "x-api-key"));
    assert!(matches!(sent.body, Body::ClientBody), "an unmapped body is the consumer's own bytes");
    assert!(sent.headers.iter().any(|h| h.name == "anthropic-version" && h.value == "2023-06-01"));
    let Outcome::Reply(r) = run.outcome else { panic!("a reply") };
    let u = r.usage;
    assert_eq!(
        (u.input_tokens, u.output_tokens, u.cached_tokens, u.cache_write_tokens),
        (Some(11), Some(5), Some(6), Some(2))
    );
}

#[test]
fn a_native_stream_passes_every_event_and_bills_the_last_cumulative_output() {
    for piece in [1, 7, 1000] {
        let mut c = call("messages", "claude", r#"{"model":"claude","max_tokens":9,"stream":true,"messages":[]}"#);
        c.upstream_model = "claude-3-real".into();
        let run = Harness::<Anthropic>::new(c).piece_size(piece).run(|_| response(200, STREAM));
        let sent: Value = serde_json::from_str(&body_text(&run.requests[0])).unwrap();
        assert_eq!(sent["model"], "claude-3-real");
        assert!(run.requests[0].headers.iter().any(|h| h.name == "anthropic-version"), "a default version");
        let Outcome::Stream { chunks, tail } = run.outcome else { panic!("a stream") };
        let names: Vec<&str> = chunks
            .iter()
            .filter_map(|c| match c {
                OutChunk::Event(e) => e.event.as_deref(),
                OutChunk::Bytes(_) => None,
            })
            .collect();
        assert_eq!(names.len(), 11, "every event, the ping too: {names:?}");
        assert_eq!((tail.usage.input_tokens, tail.usage.output_tokens), (Some(11), Some(12)));
    }
}

#[test]
fn chat_is_translated_to_messages_and_the_stream_back_to_openai_chunks() {
    let body = json!({
        "model": "claude", "stream": true, "stream_options": { "include_usage": true }, "max_tokens": 50,
        "temperature": 1.5, "top_p": 0.9, "stop": "END", "user": "u1", "parallel_tool_calls": false,
        "messages": [
            { "role": "system", "content": "Be brief." },
            { "role": "user", "content": [
                { "type": "text", "text": "What is this?" },
                { "type": "image_url", "image_url": { "url": "data:image/png;base64,iVBO" } },
            ]},
            { "role": "assistant", "content": null, "tool_calls": [
                { "id": "call_1", "type": "function", "function": { "name": "look", "arguments": "{\"q\":1}" } },
            ]},
            { "role": "tool", "tool_call_id": "call_1", "content": "a cat" },
            { "role": "user", "content": "So?" },
        ],
        "tools": [{ "type": "function", "function": { "name": "look", "parameters": { "type": "object" } } }],
    });
    for piece in [1, 7, 1000] {
        let run = Harness::<Anthropic>::new(call("chat", "claude", &body.to_string()))
            .piece_size(piece)
            .run(|_| response(200, STREAM));
        let sent: Value = serde_json::from_str(&body_text(&run.requests[0])).unwrap();
        assert_eq!(sent["system"], "Be brief.");
        assert_eq!(
            sent["messages"][0]["content"][1]["source"],
            json!({ "type": "base64", "media_type": "image/png", "data": "iVBO" })
        );
        assert_eq!(
            sent["messages"][1]["content"][0],
            json!({ "type": "tool_use", "id": "call_1", "name": "look", "input": { "q": 1 } })
        );
        assert_eq!(sent["messages"][2]["content"][0]["type"], "tool_result", "a tool result is a user turn");
        assert_eq!(sent["messages"][2]["content"][1], json!({ "type": "text", "text": "So?" }), "merged into one turn");
        assert_eq!((&sent["temperature"], &sent["stop_sequences"]), (&json!(1.0), &json!(["END"])));
        assert!(sent.get("top_p").is_none(), "never with a temperature");
        assert_eq!(sent["tool_choice"], json!({ "type": "auto", "disable_parallel_tool_use": true }));
        assert_eq!(sent["tools"][0]["input_schema"], json!({ "type": "object" }));
        let Outcome::Stream { chunks, tail } = run.outcome else { panic!("a stream") };
        let mut all = chunks;
        all.extend(tail.chunks);
        let data = event_data(&all);
        assert_eq!(data.last().unwrap(), "[DONE]");
        let chunks: Vec<Value> = data[..data.len() - 1].iter().map(|d| serde_json::from_str(d).unwrap()).collect();
        let args: String = chunks
            .iter()
            .filter_map(|c| c.pointer("/choices/0/delta/tool_calls/0/function/arguments").and_then(Value::as_str))
            .collect();
        assert_eq!(args, "{\"q\":\"x\"}", "every fragment of the arguments");
        assert!(chunks.iter().any(|c| c["choices"][0]["finish_reason"] == "tool_calls"));
        let usage = &chunks.last().unwrap()["usage"];
        assert_eq!(
            (&usage["prompt_tokens"], &usage["prompt_tokens_details"]["cached_tokens"]),
            (&json!(11), &json!(6))
        );
    }
}

#[test]
fn a_whole_chat_answer_is_a_completion() {
    let run = Harness::<Anthropic>::new(call("chat", "claude", r#"{"messages":[{"role":"user","content":"hi"}]}"#))
        .run(|_| {
            response(
                200,
                r#"{"id":"msg_9","type":"message","content":[{"type":"text","text":"Hi"}],"stop_reason":"max_tokens","usage":{"input_tokens":3,"output_tokens":5}}"#,
            )
        });
    let sent: Value = serde_json::from_str(&body_text(&run.requests[0])).unwrap();
    assert_eq!(sent["max_tokens"], 4096, "Anthropic needs one");
    let Outcome::Reply(r) = run.outcome else { panic!("a reply") };
    let Body::Text(text) = r.body else { panic!("a text body") };
    let c: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(
        (&c["choices"][0]["message"]["content"], &c["choices"][0]["finish_reason"]),
        (&json!("Hi"), &json!("length"))
    );
    assert_eq!(c["usage"]["total_tokens"], 8);
}

#[test]
fn errors_are_classified_by_anthropics_types() {
    let failed = |status: u16, kind: &str| {
        let body = json!({ "type": "error", "error": { "type": kind, "message": "m" } }).to_string();
        let run = Harness::<Anthropic>::new(call("messages", "c", r#"{"max_tokens":1,"messages":[]}"#)).run(|_| {
            UpstreamResponse { status, headers: vec![Header::new("retry-after", "2")], body: body.clone().into() }
        });
        match run.outcome {
            Outcome::Failed(e) => (e.kind, e.retry_after_ms),
            other => panic!("{other:?}"),
        }
    };
    assert_eq!(failed(529, "overloaded_error").0, ErrorKind::UpstreamFault);
    assert_eq!(failed(429, "rate_limit_error"), (ErrorKind::RateLimited, Some(2000)));
    assert_eq!(failed(401, "authentication_error").0, ErrorKind::Unauthorized);
    assert_eq!(failed(400, "billing_error").0, ErrorKind::InsufficientBalance);
    assert_eq!(failed(400, "invalid_request_error").0, ErrorKind::BadRequest);
    // A stream's error event fails the stream (the host ends it with its error event).
    let stream = format!("{}event: error\ndata: {{\"type\":\"error\",\"error\":{{\"type\":\"overloaded_error\",\"message\":\"Overloaded\"}}}}\n\n", &STREAM[..STREAM.find("event: content_block_stop").unwrap()]);
    let run = Harness::<Anthropic>::new(call("messages", "c", r#"{"stream":true,"messages":[]}"#))
        .run(|_| response(200, stream.clone()));
    assert!(matches!(run.outcome, Outcome::StreamFailed { error, .. } if error.message == "Overloaded"));
    // What Anthropic cannot take is refused, not dropped.
    let run = Harness::<Anthropic>::new(call("chat", "c", r#"{"n":2,"messages":[]}"#)).run(|_| unreachable!());
    assert!(matches!(run.outcome, Outcome::Failed(e) if e.kind == ErrorKind::BadRequest));
    let json_mode = r#"{"response_format":{"type":"json_object"},"messages":[]}"#;
    let run = Harness::<Anthropic>::new(call("chat", "c", json_mode)).run(|_| unreachable!());
    assert!(matches!(run.outcome, Outcome::Failed(e) if e.message.contains("json_object")));
    let audio = r#"{"messages":[{"role":"user","content":[{"type":"input_audio","input_audio":{}}]}]}"#;
    let run = Harness::<Anthropic>::new(call("chat", "c", audio)).run(|_| unreachable!());
    assert!(matches!(run.outcome, Outcome::Failed(e) if e.message.contains("input_audio")));
}

#[test]
fn the_conformance_battery() {
    use tollgate_plugin_sdk::conformance::{answer, run, Vendor};
    let error = |status: u16, kind: &str| {
        answer(status, json!({ "type": "error", "error": { "type": kind, "message": "m" } }).to_string())
    };
    let whole = r#"{"id":"msg_1","type":"message","content":[{"type":"text","text":"Hi"}],"stop_reason":"end_turn","usage":{"input_tokens":3,"output_tokens":5,"cache_read_input_tokens":6}}"#;
    let body = r#"{"model":"claude","max_tokens":9,"messages":[{"role":"user","content":"hi"}]}"#;
    let usage = |input, output, cached, written| tollgate_plugin_sdk::Usage {
        input_tokens: Some(input),
        output_tokens: Some(output),
        cached_tokens: cached,
        cache_write_tokens: written,
        ..Default::default()
    };
    for op in ["messages", "chat"] {
        let stream_body = if op == "chat" {
            r#"{"stream":true,"messages":[{"role":"user","content":"hi"}]}"#
        } else {
            r#"{"model":"claude","max_tokens":9,"stream":true,"messages":[]}"#
        };
        run::<Anthropic>(Vendor {
            whole: (call(op, "claude", body), answer(200, whole), usage(9, 5, Some(6), None)),
            whole_without_usage: Some(answer(
                200,
                whole.replace(r#","usage":{"input_tokens":3,"output_tokens":5,"cache_read_input_tokens":6}"#, ""),
            )),
            stream: Some((
                call(op, "claude", stream_body),
                STREAM.as_bytes().to_vec(),
                usage(11, 12, Some(6), Some(2)),
            )),
            failures: vec![
                (error(401, "authentication_error"), ErrorKind::Unauthorized),
                (error(400, "billing_error"), ErrorKind::InsufficientBalance),
                (error(403, "permission_error"), ErrorKind::Forbidden),
                (error(404, "not_found_error"), ErrorKind::NotFound),
                (error(429, "rate_limit_error"), ErrorKind::RateLimited),
                (error(500, "api_error"), ErrorKind::UpstreamFault),
                (error(529, "overloaded_error"), ErrorKind::UpstreamFault),
                (error(400, "invalid_request_error"), ErrorKind::BadRequest),
                (answer(502, "<html>Bad Gateway</html>"), ErrorKind::UpstreamFault),
            ],
        });
    }
}

#[test]
fn what_anthropic_bills_beyond_tokens_is_refused_not_given_away() {
    let refused = |body: Value| {
        let run = Harness::<Anthropic>::new(call("messages", "claude", &body.to_string())).run(|_| unreachable!());
        match run.outcome {
            Outcome::Failed(e) if e.kind == ErrorKind::BadRequest => e.message,
            other => panic!("{other:?}"),
        }
    };
    let base = |extra: Value| {
        let mut b = json!({ "model": "claude", "max_tokens": 9, "messages": [{ "role": "user", "content": "hi" }] });
        b.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
        b
    };
    assert!(refused(base(json!({ "tools": [{ "type": "web_search_20250305", "name": "web_search" }] })))
        .contains("web_search"));
    assert!(refused(base(json!({ "tools": [{ "type": "code_execution_20250522", "name": "x" }] })))
        .contains("code_execution"));
    assert!(refused(base(json!({ "mcp_servers": [{ "type": "url", "url": "https://x" }] }))).contains("mcp_servers"));
    let hour =
        json!({ "system": [{ "type": "text", "text": "s", "cache_control": { "type": "ephemeral", "ttl": "1h" } }] });
    assert!(refused(base(hour)).contains("one-hour"));
    // Client tools and the default cache pass.
    let fine =
        base(json!({ "tools": [{ "name": "f", "input_schema": {} }, { "type": "bash_20250124", "name": "bash" }],
        "system": [{ "type": "text", "text": "s", "cache_control": { "type": "ephemeral" } }] }));
    let run = Harness::<Anthropic>::new(call("messages", "claude", &fine.to_string()))
        .run(|_| response(200, r#"{"usage":{"input_tokens":1,"output_tokens":1}}"#));
    assert!(matches!(run.outcome, Outcome::Reply(_)));
}
