use super::Gemini;
use serde_json::{json, Value};
use tollgate_plugin_sdk::testing::{body_text, call, event_data, response, Harness, Outcome};
use tollgate_plugin_sdk::{Auth, Body, ErrorKind, Header, OutChunk, UpstreamResponse};

/// A stream as Google writes it (`alt=sse`, CRLF, no `[DONE]`): a thought, text, then a
/// function call, usage cumulative on each chunk.
const STREAM: &str = "data: {\"candidates\":[{\"content\":{\"role\":\"model\",\"parts\":[{\"text\":\"hmm\",\"thought\":true}]},\"index\":0}],\"usageMetadata\":{\"promptTokenCount\":9,\"candidatesTokenCount\":0,\"thoughtsTokenCount\":4}}\r\n\r\n\
data: {\"candidates\":[{\"content\":{\"role\":\"model\",\"parts\":[{\"text\":\"Let me\"}]},\"index\":0}],\"usageMetadata\":{\"promptTokenCount\":9,\"candidatesTokenCount\":2,\"thoughtsTokenCount\":4}}\r\n\r\n\
data: {\"candidates\":[{\"content\":{\"role\":\"model\",\"parts\":[{\"functionCall\":{\"name\":\"look\",\"args\":{\"q\":\"x\"}}}]},\"finishReason\":\"STOP\",\"index\":0}],\"usageMetadata\":{\"promptTokenCount\":9,\"candidatesTokenCount\":5,\"thoughtsTokenCount\":4,\"cachedContentTokenCount\":6}}\r\n\r\n";

fn generate(action: &str, query: &str) -> tollgate_plugin_sdk::Call {
    let mut c = call("generate", "gemini-2.5-flash", r#"{"contents":[{"role":"user","parts":[{"text":"hi"}]}]}"#);
    c.upstream_model = "gemini-2.5-flash-001".into();
    c.context.path_params = vec![("model".into(), "gemini-2.5-flash".into()), ("action".into(), action.into())];
    c.query = query.into();
    c
}

#[test]
fn generate_passes_the_body_to_the_channels_model_with_the_key_in_its_header() {
    let run = Harness::<Gemini>::new(generate("generateContent", "")).run(|_| {
        response(200, r#"{"candidates":[],"usageMetadata":{"promptTokenCount":9,"candidatesTokenCount":3,"thoughtsTokenCount":2,"toolUsePromptTokenCount":1,"cachedContentTokenCount":4}}"#)
    });
    let sent = &run.requests[0];
    assert_eq!(sent.path, "/v1beta/models/gemini-2.5-flash-001:generateContent");
    assert!(matches!(&sent.auth, Auth::Header(h) if h == "x-goog-api-key"));
    assert!(matches!(sent.body, Body::ClientBody));
    let Outcome::Reply(r) = run.outcome else { panic!("a reply") };
    let u = r.usage;
    assert_eq!((u.input_tokens, u.output_tokens, u.cached_tokens), (Some(10), Some(5), Some(4)), "thinking is output");
}

#[test]
fn a_stream_is_sse_or_the_json_array_the_consumer_asked_for() {
    for piece in [1, 7, 1000] {
        let run = Harness::<Gemini>::new(generate("streamGenerateContent", "alt=sse"))
            .piece_size(piece)
            .run(|_| response(200, STREAM));
        assert_eq!(run.requests[0].path, "/v1beta/models/gemini-2.5-flash-001:streamGenerateContent?alt=sse");
        let Outcome::Stream { chunks, tail } = run.outcome else { panic!("a stream") };
        assert_eq!(event_data(&chunks).len(), 3);
        assert_eq!(
            (tail.usage.input_tokens, tail.usage.output_tokens, tail.usage.cached_tokens),
            (Some(9), Some(9), Some(6))
        );
        // Without alt=sse: Google's streamed JSON array, whole when joined.
        let run = Harness::<Gemini>::new(generate("streamGenerateContent", ""))
            .piece_size(piece)
            .run(|_| response(200, STREAM));
        assert!(run.requests[0].path.ends_with("?alt=sse"), "read as SSE whatever the consumer asked");
        let Outcome::Stream { chunks, tail } = run.outcome else { panic!("a stream") };
        let bytes: Vec<u8> = chunks
            .iter()
            .chain(&tail.chunks)
            .flat_map(|c| match c {
                OutChunk::Bytes(b) => b.clone(),
                OutChunk::Event(_) => panic!("bytes expected"),
            })
            .collect();
        let array: Vec<Value> = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(array.len(), 3);
    }
}

#[test]
fn chat_is_translated_to_gemini_and_the_stream_back_to_openai_chunks() {
    let body = json!({
        "model": "gemini-2.5-flash", "stream": true, "stream_options": { "include_usage": true },
        "max_tokens": 50, "n": 1, "stop": ["END"], "response_format": { "type": "json_object" },
        "messages": [
            { "role": "system", "content": "Be brief." },
            { "role": "user", "content": [
                { "type": "text", "text": "What is this?" },
                { "type": "image_url", "image_url": { "url": "data:image/png;base64,iVBO" } },
            ]},
            { "role": "assistant", "content": null, "tool_calls": [
                { "id": "call_9", "type": "function", "function": { "name": "look", "arguments": "{\"q\":1}" } },
            ]},
            { "role": "tool", "tool_call_id": "call_9", "content": "a cat" },
            { "role": "user", "content": "So?" },
        ],
        "tools": [{ "type": "function", "function": { "name": "look", "parameters": { "type": "object" } } }],
        "tool_choice": { "type": "function", "function": { "name": "look" } },
    });
    for piece in [1, 7, 1000] {
        let run = Harness::<Gemini>::new(call("chat", "gemini-2.5-flash", &body.to_string()))
            .piece_size(piece)
            .run(|_| response(200, STREAM));
        let sent: Value = serde_json::from_str(&body_text(&run.requests[0])).unwrap();
        assert_eq!(sent["systemInstruction"]["parts"][0]["text"], "Be brief.");
        assert_eq!(sent["contents"][0]["parts"][1]["inlineData"], json!({ "mimeType": "image/png", "data": "iVBO" }));
        assert_eq!(
            sent["contents"][1],
            json!({ "role": "model", "parts": [{ "functionCall": { "name": "look", "args": { "q": 1 } } }] })
        );
        assert_eq!(
            sent["contents"][2]["parts"][0]["functionResponse"],
            json!({ "name": "look", "response": { "content": "a cat" } })
        );
        assert_eq!(sent["contents"][2]["parts"][1], json!({ "text": "So?" }), "merged into one user turn");
        let config = &sent["generationConfig"];
        assert_eq!(
            (&config["maxOutputTokens"], &config["stopSequences"], &config["responseMimeType"]),
            (&json!(50), &json!(["END"]), &json!("application/json"))
        );
        assert_eq!(
            sent["toolConfig"]["functionCallingConfig"],
            json!({ "mode": "ANY", "allowedFunctionNames": ["look"] })
        );
        let Outcome::Stream { chunks, tail } = run.outcome else { panic!("a stream") };
        let mut all = chunks;
        all.extend(tail.chunks);
        let data = event_data(&all);
        assert_eq!(data.last().unwrap(), "[DONE]", "Gemini sends none; the consumer gets one");
        let chunks: Vec<Value> = data[..data.len() - 1].iter().map(|d| serde_json::from_str(d).unwrap()).collect();
        assert!(chunks.iter().any(|c| c["choices"][0]["delta"]["reasoning_content"] == "hmm"));
        let call = chunks.iter().find_map(|c| c.pointer("/choices/0/delta/tool_calls/0")).unwrap();
        assert_eq!((&call["index"], &call["function"]["arguments"]), (&json!(0), &json!("{\"q\":\"x\"}")));
        assert!(chunks.iter().any(|c| c["choices"][0]["finish_reason"] == "tool_calls"));
        let usage = &chunks.last().unwrap()["usage"];
        assert_eq!(
            (&usage["prompt_tokens"], &usage["completion_tokens"], &usage["prompt_tokens_details"]["cached_tokens"]),
            (&json!(9), &json!(9), &json!(6))
        );
    }
}

#[test]
fn a_whole_chat_answer_is_a_completion() {
    let run = Harness::<Gemini>::new(call("chat", "g", r#"{"messages":[{"role":"user","content":"hi"}]}"#)).run(|_| {
        response(200, r#"{"candidates":[{"content":{"parts":[{"text":"Hi"}]},"finishReason":"MAX_TOKENS","index":0}],"usageMetadata":{"promptTokenCount":3,"candidatesTokenCount":5}}"#)
    });
    assert_eq!(run.requests[0].path, "/v1beta/models/g:generateContent");
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
fn errors_are_classified_by_googles_status_and_reason() {
    let failed = |status: u16, body: Value| {
        let run = Harness::<Gemini>::new(generate("generateContent", "")).run(|_| UpstreamResponse {
            status,
            headers: vec![Header::new("retry-after", "3")],
            body: body.to_string().into(),
        });
        match run.outcome {
            Outcome::Failed(e) => (e.kind, e.retry_after_ms),
            other => panic!("{other:?}"),
        }
    };
    let google = |code: u16, status: &str| json!({ "error": { "code": code, "message": "m", "status": status } });
    let bad_key = json!({ "error": { "code": 400, "message": "API key not valid. Please pass a valid API key.", "status": "INVALID_ARGUMENT",
        "details": [{ "@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": "API_KEY_INVALID" }] } });
    assert_eq!(failed(400, bad_key).0, ErrorKind::Unauthorized, "Google's bad key is a 400");
    assert_eq!(failed(429, google(429, "RESOURCE_EXHAUSTED")), (ErrorKind::RateLimited, Some(3000)));
    assert_eq!(failed(503, google(503, "UNAVAILABLE")).0, ErrorKind::UpstreamFault);
    assert_eq!(failed(400, google(400, "INVALID_ARGUMENT")).0, ErrorKind::BadRequest);
    assert_eq!(failed(403, google(403, "PERMISSION_DENIED")).0, ErrorKind::Forbidden);
    let run =
        Harness::<Gemini>::new(call("chat", "g", r#"{"messages":[{"role":"tool","tool_call_id":"x","content":"r"}]}"#))
            .run(|_| unreachable!());
    assert!(matches!(run.outcome, Outcome::Failed(e) if e.kind == ErrorKind::BadRequest && e.message.contains("'x'")));
}

#[test]
fn the_conformance_battery() {
    use tollgate_plugin_sdk::conformance::{answer, run, Vendor};
    let google = |code: u16, status: &str| {
        answer(code, json!({ "error": { "code": code, "message": "m", "status": status } }).to_string())
    };
    let whole = r#"{"candidates":[{"content":{"parts":[{"text":"Hi"}]},"finishReason":"STOP","index":0}],"usageMetadata":{"promptTokenCount":3,"candidatesTokenCount":5}}"#;
    let usage = |input, output, cached| tollgate_plugin_sdk::Usage {
        input_tokens: Some(input),
        output_tokens: Some(output),
        cached_tokens: cached,
        ..Default::default()
    };
    let chat = r#"{"messages":[{"role":"user","content":"hi"}]}"#;
    let chat_stream = r#"{"stream":true,"messages":[{"role":"user","content":"hi"}]}"#;
    for (whole_call, stream_call) in [
        (generate("generateContent", ""), generate("streamGenerateContent", "alt=sse")),
        (call("chat", "g", chat), call("chat", "g", chat_stream)),
    ] {
        run::<Gemini>(Vendor {
            whole: (whole_call, answer(200, whole), usage(3, 5, None)),
            whole_without_usage: Some(answer(
                200,
                whole.replace(r#","usageMetadata":{"promptTokenCount":3,"candidatesTokenCount":5}"#, ""),
            )),
            stream: Some((stream_call, STREAM.as_bytes().to_vec(), usage(9, 9, Some(6)))),
            failures: vec![
                (
                    answer(
                        400,
                        r#"{"error":{"code":400,"message":"API key not valid. Please pass a valid API key.","status":"INVALID_ARGUMENT"}}"#,
                    ),
                    ErrorKind::Unauthorized,
                ),
                (google(400, "INVALID_ARGUMENT"), ErrorKind::BadRequest),
                (google(403, "PERMISSION_DENIED"), ErrorKind::Forbidden),
                (google(404, "NOT_FOUND"), ErrorKind::NotFound),
                (google(429, "RESOURCE_EXHAUSTED"), ErrorKind::RateLimited),
                (google(500, "INTERNAL"), ErrorKind::UpstreamFault),
                (google(503, "UNAVAILABLE"), ErrorKind::UpstreamFault),
                (google(504, "DEADLINE_EXCEEDED"), ErrorKind::Timeout),
                (answer(502, "<html>Bad Gateway</html>"), ErrorKind::UpstreamFault),
            ],
        });
    }
}

#[test]
fn grounding_and_url_context_are_refused_not_given_away() {
    for tool in [r#"{"googleSearch":{}}"#, r#"{"url_context":{}}"#, r#"{"googleSearchRetrieval":{}}"#] {
        let mut c = generate("generateContent", "");
        c.body =
            Body::Text(format!(r#"{{"contents":[{{"role":"user","parts":[{{"text":"hi"}}]}}],"tools":[{tool}]}}"#));
        let run = Harness::<Gemini>::new(c).run(|_| unreachable!());
        assert!(matches!(run.outcome, Outcome::Failed(e) if e.kind == ErrorKind::BadRequest), "{tool}");
    }
    let mut c = generate("generateContent", "");
    c.body = Body::Text(r#"{"contents":[],"tools":[{"functionDeclarations":[]},{"codeExecution":{}}]}"#.into());
    let run = Harness::<Gemini>::new(c).run(|_| response(200, r#"{"candidates":[]}"#));
    assert!(matches!(run.outcome, Outcome::Reply(_)), "function calling and code execution are tokens");
}

#[test]
fn call_ids_are_unique_across_turns_and_signatures_go_back_with_their_calls() {
    let answer = r#"{"candidates":[{"content":{"parts":[{"functionCall":{"name":"look","args":{}},"thoughtSignature":"c2ln"}]},"finishReason":"STOP"}]}"#;
    let mut c = call("chat", "g", r#"{"messages":[{"role":"user","content":"hi"}]}"#);
    c.context.request_id = "req-turn-2".into();
    let run = Harness::<Gemini>::new(c).run(|_| response(200, answer));
    let Outcome::Reply(r) = run.outcome else { panic!("a reply") };
    let Body::Text(text) = r.body else { panic!("text") };
    let call0 = serde_json::from_str::<Value>(&text).unwrap()["choices"][0]["message"]["tool_calls"][0].clone();
    assert_eq!(call0["id"], "call_reqturn2_0");
    assert_eq!(call0["extra_content"]["google"]["thought_signature"], "c2ln");
    // Two turns that each called a tool: each result is answered under its own call's name.
    let history = json!({ "messages": [
        { "role": "user", "content": "hi" },
        { "role": "assistant", "tool_calls": [{ "id": "call_a_0", "type": "function", "function": { "name": "first", "arguments": "{}" } }] },
        { "role": "tool", "tool_call_id": "call_a_0", "content": "1" },
        { "role": "assistant", "tool_calls": [{ "id": "call_b_0", "type": "function", "function": { "name": "second", "arguments": "{}" },
            "extra_content": { "google": { "thought_signature": "c2ln" } } }] },
        { "role": "tool", "tool_call_id": "call_b_0", "content": "2" },
    ]});
    let run =
        Harness::<Gemini>::new(call("chat", "g", &history.to_string())).run(|_| response(200, r#"{"candidates":[]}"#));
    let sent: Value = serde_json::from_str(&body_text(&run.requests[0])).unwrap();
    assert_eq!(sent["contents"][4]["parts"][0]["functionResponse"]["name"], "second");
    assert_eq!(sent["contents"][3]["parts"][0]["thoughtSignature"], "c2ln");
    // A blocked prompt: one filtered choice, never an empty list.
    let run = Harness::<Gemini>::new(call("chat", "g", r#"{"messages":[{"role":"user","content":"x"}]}"#)).run(|_| {
        response(200, r#"{"promptFeedback":{"blockReason":"SAFETY"},"usageMetadata":{"promptTokenCount":3}}"#)
    });
    let Outcome::Reply(r) = run.outcome else { panic!("a reply") };
    let Body::Text(text) = r.body else { panic!("text") };
    assert_eq!(serde_json::from_str::<Value>(&text).unwrap()["choices"][0]["finish_reason"], "content_filter");
}
