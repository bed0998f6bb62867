//! The `openai` plugin: any OpenAI-compatible vendor, chosen by the channel's base URL.
//! Chat (with streaming and usage), embeddings, image generation; bodies pass through, usage
//! (tokens, images) is reported.

use tollgate_plugin_sdk::openai_compat::{Compat, Vendor};
use tollgate_plugin_sdk::{export_plugin, Manifest};

pub struct OpenAi;

impl Vendor for OpenAi {
    fn manifest() -> Manifest {
        Manifest::new("openai", env!("CARGO_PKG_VERSION"), "OpenAI-compatible", &["chat", "embeddings", "images"])
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
        let run = Harness::<Plugin>::new(call("speech", "m", "{}")).run(|_| unreachable!());
        assert!(matches!(run.outcome, Outcome::Failed(e) if e.kind == ErrorKind::Unsupported));
    }
}
