//! The `openai` plugin: any OpenAI-compatible vendor, chosen by the channel's base URL (and
//! its preset or API root, `openai_compat::PRESETS`). Chat (with streaming and usage),
//! embeddings, image generation, speech (audio relayed) and transcriptions (the file streamed
//! from the consumer); bodies pass through, usage (tokens, images, seconds) is reported.

use tollgate_plugin_sdk::openai_compat::{Compat, Vendor};
use tollgate_plugin_sdk::{export_plugin, Manifest};

pub struct OpenAi;

impl Vendor for OpenAi {
    fn manifest() -> Manifest {
        Manifest::new(
            "openai",
            env!("CARGO_PKG_VERSION"),
            "OpenAI-compatible",
            &["chat", "embeddings", "images", "speech", "transcription", "translation"],
        )
        .with_base_url("https://api.openai.com")
    }
}

pub type Plugin = Compat<OpenAi>;
export_plugin!(Plugin);

#[cfg(test)]
mod tests {
    use super::Plugin;
    use tollgate_plugin_sdk::testing::{body_text, call, event_data, response, Harness, Outcome};
    use tollgate_plugin_sdk::{Body, ErrorKind, Step};

    #[test]
    fn chat_passes_body_through_and_reports_usage() {
        let mut c =
            call("chat", "gpt-4o-mini", r#"{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi"}]}"#);
        c.upstream_model = "gpt-4o-mini-2024".into();
        let run = Harness::<Plugin>::new(c).run(|_| {
            response(200, r#"{"id":"x","choices":[],"usage":{"prompt_tokens":9,"completion_tokens":2,"prompt_tokens_details":{"cached_tokens":4}}}"#)
        });
        let sent: serde_json::Value = serde_json::from_str(&body_text(&run.requests[0])).unwrap();
        assert_eq!(sent["model"], "gpt-4o-mini-2024");
        assert_eq!(run.requests[0].path, "/v1/chat/completions");
        let Outcome::Reply(r) = run.outcome else { panic!("expected a reply") };
        assert_eq!((r.usage.input_tokens, r.usage.output_tokens, r.usage.cached_tokens), (Some(9), Some(2), Some(4)));
        assert!(matches!(r.body, Body::Bytes(b) if b.starts_with(br#"{"id":"x""#)));
    }

    #[test]
    fn a_preset_puts_the_paths_under_its_vendors_root() {
        let mut c = call("chat", "llama", r#"{"model":"llama","messages":[]}"#);
        c.config = r#"{"preset":"groq"}"#.into();
        let run = Harness::<Plugin>::new(c).run(|_| response(200, r#"{"choices":[]}"#));
        assert_eq!(run.requests[0].path, "/openai/v1/chat/completions");
        let mut c = call("embeddings", "e", r#"{"input":"x"}"#);
        c.config = r#"{"api_root":"/api/paas/v4"}"#.into();
        let run = Harness::<Plugin>::new(c).run(|_| response(200, r#"{"data":[]}"#));
        assert_eq!(run.requests[0].path, "/api/paas/v4/embeddings");
    }

    #[test]
    fn speech_is_relayed_or_streamed_with_its_usage() {
        let run = Harness::<Plugin>::new(call("speech", "tts-1", r#"{"model":"tts-1","input":"hi","voice":"alloy"}"#))
            .run(|_| unreachable!());
        let Outcome::Relay(r) = run.outcome else { panic!("relayed") };
        assert_eq!((r.path.as_str(), matches!(r.body, Body::ClientBody)), ("/v1/audio/speech", true));
        let sse = "data: {\"type\":\"speech.audio.delta\",\"audio\":\"AAAA\"}\n\n\
            data: {\"type\":\"speech.audio.done\",\"usage\":{\"input_tokens\":3,\"output_tokens\":40,\"total_tokens\":43}}\n\n";
        let c = call(
            "speech",
            "gpt-4o-mini-tts",
            r#"{"model":"gpt-4o-mini-tts","input":"hi","voice":"alloy","stream_format":"sse"}"#,
        );
        let run = Harness::<Plugin>::new(c).run(|_| response(200, sse));
        let Outcome::Stream { chunks, tail } = run.outcome else { panic!("a stream") };
        assert_eq!(event_data(&chunks).len(), 2, "the done event, usage and all, reaches the consumer");
        assert_eq!((tail.usage.input_tokens, tail.usage.output_tokens), (Some(3), Some(40)));
    }

    #[test]
    fn a_transcription_sends_the_form_on_and_reads_seconds_or_tokens() {
        use tollgate_plugin_sdk::{FormPart, PartValue};
        let part =
            |name: &str, value: PartValue| FormPart { name: name.into(), filename: None, content_type: None, value };
        let form = |stream: bool| {
            let mut parts = vec![
                part("model", PartValue::Text("whisper".into())),
                part("file", PartValue::ClientFile("file".into())),
            ];
            if stream {
                parts.push(part("stream", PartValue::Text("true".into())));
            }
            let mut c = call("transcription", "whisper", "");
            c.upstream_model = "whisper-1".into();
            c.body = Body::Form(parts);
            c
        };
        let run = Harness::<Plugin>::new(form(false))
            .run(|_| response(200, r#"{"text":"hi","usage":{"type":"duration","seconds":2.5}}"#));
        let sent = &run.requests[0];
        assert_eq!(sent.path, "/v1/audio/transcriptions");
        let Body::Form(parts) = &sent.body else { panic!("a form") };
        assert!(matches!(&parts[0].value, PartValue::Text(m) if m == "whisper-1"), "the model mapped");
        assert!(matches!(&parts[1].value, PartValue::ClientFile(f) if f == "file"), "the file spliced in by the host");
        assert!(matches!(run.outcome, Outcome::Reply(r) if r.usage.milliseconds == Some(2500)));
        // Text and subtitles carry no usage: asked as JSON, rebuilt, billed by its seconds.
        let mut asked = form(false);
        let Body::Form(parts) = &mut asked.body else { unreachable!() };
        parts.push(part("response_format", PartValue::Text("srt".into())));
        let verbose = r#"{"text":"hi there","duration":3.5,"segments":[{"start":0.0,"end":1.25,"text":" hi"},{"start":1.25,"end":3.5,"text":" there"}]}"#;
        let run = Harness::<Plugin>::new(asked).run(|_| response(200, verbose));
        let Body::Form(sent) = &run.requests[0].body else { panic!("a form") };
        assert!(sent
            .iter()
            .any(|p| p.name == "response_format" && matches!(&p.value, PartValue::Text(f) if f == "verbose_json")));
        let Outcome::Reply(r) = run.outcome else { panic!("a reply") };
        assert_eq!(r.usage.milliseconds, Some(3500));
        let Body::Bytes(srt) = r.body else { panic!("bytes") };
        assert_eq!(
            String::from_utf8(srt).unwrap(),
            "1\n00:00:00,000 --> 00:00:01,250\nhi\n\n2\n00:00:01,250 --> 00:00:03,500\nthere\n\n"
        );
        let sse = "data: {\"type\":\"transcript.text.delta\",\"delta\":\"hi\"}\n\n\
            data: {\"type\":\"transcript.text.done\",\"text\":\"hi\",\"usage\":{\"type\":\"tokens\",\"input_tokens\":20,\"output_tokens\":1}}\n\n";
        let run = Harness::<Plugin>::new(form(true)).run(|_| response(200, sse));
        let Outcome::Stream { tail, .. } = run.outcome else { panic!("a stream") };
        assert_eq!((tail.usage.input_tokens, tail.usage.output_tokens), (Some(20), Some(1)));
        let run =
            Harness::<Plugin>::new(call("transcription", "whisper", r#"{"model":"whisper"}"#)).run(|_| unreachable!());
        assert!(matches!(run.outcome, Outcome::Failed(e) if e.kind == ErrorKind::BadRequest));
    }

    #[test]
    fn chats_and_embeddings_are_forwarded_as_the_plugin_sends_them() {
        use tollgate_plugin_sdk::conformance::forwarded;
        use tollgate_plugin_sdk::Plugin as _;
        let ops = |settings: &str| Plugin::forward(settings).into_iter().map(|r| (r.op, r.path)).collect::<Vec<_>>();
        assert_eq!(
            ops("{}"),
            [("chat".to_string(), "/v1/chat/completions".to_string()), ("embeddings".into(), "/v1/embeddings".into())]
        );
        assert_eq!(ops(r#"{"preset":"groq"}"#)[0].1, "/openai/v1/chat/completions", "under the channel's root");
        let embeddings =
            r#"{"object":"list","data":[{"embedding":[0.1]}],"usage":{"prompt_tokens":3,"total_tokens":3}}"#;
        forwarded::<Plugin>(&call("embeddings", "e", r#"{"model":"e","input":"x"}"#), &response(200, embeddings));
        let mut grouped = call("embeddings", "e", r#"{"model":"e","input":"x"}"#);
        grouped.config = r#"{"api_root":"/api/v3"}"#.into();
        forwarded::<Plugin>(&grouped, &response(200, embeddings));
    }

    #[test]
    fn images_are_counted_for_billing() {
        let run = Harness::<Plugin>::new(call("images", "dall-e-3", r#"{"model":"dall-e-3","prompt":"a cat","n":2}"#))
            .run(|_| response(200, r#"{"created":1,"data":[{"url":"https://x/1.png"},{"url":"https://x/2.png"}]}"#));
        assert_eq!(run.requests[0].path, "/v1/images/generations");
        assert!(matches!(run.outcome, Outcome::Reply(r) if r.usage.images == Some(2)));
        // Other operations' `data` (embeddings) are not images.
        let run = Harness::<Plugin>::new(call("embeddings", "e", r#"{"input":"x"}"#))
            .run(|_| response(200, r#"{"data":[{"embedding":[0.1]}],"usage":{"prompt_tokens":1}}"#));
        assert!(matches!(run.outcome, Outcome::Reply(r) if r.usage.images.is_none()));
    }

    #[test]
    fn unchanged_request_is_forwarded_without_entering_the_plugin() {
        let run = Harness::<Plugin>::new(call("chat", "m", r#"{"model":"m","messages":[]}"#))
            .run(|_| response(200, r#"{"usage":{"prompt_tokens":1,"completion_tokens":1}}"#));
        assert!(matches!(run.requests[0].body, Body::ClientBody));
        assert!(matches!(run.outcome, Outcome::Reply(r) if r.usage.input_tokens == Some(1)));
    }

    const STREAM: &str = "data: {\"choices\":[{\"delta\":{\"content\":\"Hel\"}}],\"usage\":null}\n\n\
        data: {\"choices\":[{\"delta\":{\"content\":\"lo\"}}],\"usage\":null}\n\n\
        data: {\"choices\":[],\"usage\":{\"prompt_tokens\":5,\"completion_tokens\":2}}\n\n\
        data: [DONE]\n\n";

    #[test]
    fn stream_forces_usage_upstream_and_hides_it_when_not_asked() {
        for piece in [1, 7, 1000] {
            let c = call("chat", "m", r#"{"model":"m","stream":true,"messages":[]}"#);
            let run = Harness::<Plugin>::new(c).piece_size(piece).run(|_| response(200, STREAM));
            let sent: serde_json::Value = serde_json::from_str(&body_text(&run.requests[0])).unwrap();
            assert_eq!(sent["stream_options"]["include_usage"], true);
            let Outcome::Stream { chunks, tail } = run.outcome else { panic!("expected a stream") };
            let data = event_data(&chunks);
            assert_eq!(data.len(), 3, "usage chunk removed: {data:?}");
            assert_eq!(data[2], "[DONE]");
            assert_eq!((tail.usage.input_tokens, tail.usage.output_tokens), (Some(5), Some(2)));
        }
    }

    #[test]
    fn stream_keeps_usage_chunk_when_asked_and_adds_missing_done() {
        let c = call("chat", "m", r#"{"stream":true,"stream_options":{"include_usage":true},"messages":[]}"#);
        let body = STREAM.replace("data: [DONE]\n\n", "");
        let run = Harness::<Plugin>::new(c).run(|_| response(200, body.clone()));
        let Outcome::Stream { chunks, tail } = run.outcome else { panic!("expected a stream") };
        let data = event_data(&chunks);
        assert!(data[2].contains("prompt_tokens"));
        assert!(tail.chunks.len() == 1, "a clean end without [DONE] gets one");
        assert_eq!(tail.usage.output_tokens, Some(2));
    }

    #[test]
    fn errors_are_classified_and_bad_bodies_refused() {
        let run = Harness::<Plugin>::new(call("embeddings", "e", r#"{"input":"x"}"#))
            .run(|_| response(401, r#"{"error":{"message":"bad key","code":"invalid_api_key"}}"#));
        assert!(matches!(run.outcome, Outcome::Failed(e) if e.kind == ErrorKind::Unauthorized));
        let mut ex =
            <tollgate_plugin_sdk::openai_compat::CompatExchange<super::OpenAi> as tollgate_plugin_sdk::Exchange>::new(
                call("chat", "m", r#"[{"stream":true}]"#),
            );
        assert!(
            matches!(tollgate_plugin_sdk::Exchange::first(&mut ex), Step::Fail(e) if e.kind == ErrorKind::BadRequest)
        );
        let run = Harness::<Plugin>::new(call("video", "m", "{}")).run(|_| unreachable!());
        assert!(matches!(run.outcome, Outcome::Failed(e) if e.kind == ErrorKind::Unsupported));
    }

    #[test]
    fn the_conformance_battery() {
        use tollgate_plugin_sdk::conformance::{answer, run, Vendor};
        let error = |status: u16, code: &str| {
            let e = serde_json::json!({ "error": { "message": "m", "type": "x", "param": null, "code": code } });
            answer(status, e.to_string())
        };
        let whole = r#"{"id":"x","choices":[{"message":{"content":"Hi"}}],"usage":{"prompt_tokens":9,"completion_tokens":2,"prompt_tokens_details":{"cached_tokens":4}}}"#;
        let usage = tollgate_plugin_sdk::Usage {
            input_tokens: Some(9),
            output_tokens: Some(2),
            cached_tokens: Some(4),
            ..Default::default()
        };
        let stream_call = call("chat", "m", r#"{"model":"m","stream":true,"messages":[]}"#);
        run::<Plugin>(Vendor {
            whole: (call("chat", "m", r#"{"model":"m","messages":[]}"#), answer(200, whole), usage),
            whole_without_usage: Some(answer(200, r#"{"id":"x","choices":[{"message":{"content":"Hi"}}]}"#)),
            stream: Some((
                stream_call,
                STREAM.as_bytes().to_vec(),
                tollgate_plugin_sdk::Usage { input_tokens: Some(5), output_tokens: Some(2), ..Default::default() },
            )),
            failures: vec![
                (error(401, "invalid_api_key"), ErrorKind::Unauthorized),
                (error(429, "rate_limit_exceeded"), ErrorKind::RateLimited),
                (error(429, "insufficient_quota"), ErrorKind::InsufficientBalance),
                (error(400, "invalid_request"), ErrorKind::BadRequest),
                (error(403, "forbidden"), ErrorKind::Forbidden),
                (error(404, "model_not_found"), ErrorKind::NotFound),
                (error(500, "server_error"), ErrorKind::UpstreamFault),
                (answer(502, "<html>Bad Gateway</html>"), ErrorKind::UpstreamFault),
            ],
        });
    }
}
