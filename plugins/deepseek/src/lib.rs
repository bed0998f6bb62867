//! The `deepseek` plugin: DeepSeek's OpenAI-compatible chat (`deepseek-chat`,
//! `deepseek-reasoner`).
//!
//! - `reasoning_content` (the reasoner's thinking) reaches the consumer as DeepSeek sends it,
//!   whole or streamed; an assistant message sent back with it has it removed, since DeepSeek
//!   refuses such a request (400) and apps built on OpenAI's SDK send history back as received.
//! - Cache hits (`prompt_cache_hit_tokens`) are reported as cached tokens, billed at the
//!   model's `cached_per_million`.
//! - The key balance (`GET /user/balance`, `balance_infos[0].total_balance`) serves channels
//!   with `strategy = "highest-balance"`.

use serde_json::Value;
use tollgate_plugin_sdk::openai_compat::{Compat, Vendor};
use tollgate_plugin_sdk::{export_plugin, Manifest};

pub struct DeepSeek;

impl Vendor for DeepSeek {
    fn manifest() -> Manifest {
        Manifest::new("deepseek", env!("CARGO_PKG_VERSION"), "DeepSeek", &["chat", "balance"])
            .with_base_url("https://api.deepseek.com")
    }

    fn path(op: &str) -> Option<&'static str> {
        (op == "chat").then_some("/chat/completions")
    }

    fn rewrites(op: &str) -> bool {
        op == "chat"
    }

    fn adjust_request(_op: &str, body: &mut Value) {
        let messages = body.get_mut("messages").and_then(Value::as_array_mut);
        for m in messages.into_iter().flatten() {
            if let Some(m) = m.as_object_mut() {
                m.remove("reasoning_content");
            }
        }
    }

    fn balance_path() -> Option<&'static str> {
        Some("/user/balance")
    }

    /// `{"is_available":true,"balance_infos":[{"currency":"CNY","total_balance":"110.00",…}]}`
    fn read_balance(answer: &Value) -> Option<String> {
        answer.pointer("/balance_infos/0/total_balance").and_then(Value::as_str).map(str::to_string)
    }
}

pub type Plugin = Compat<DeepSeek>;
export_plugin!(Plugin);

#[cfg(test)]
mod tests {
    use super::Plugin;
    use serde_json::{json, Value};
    use tollgate_plugin_sdk::conformance::{answer, run, Vendor};
    use tollgate_plugin_sdk::testing::{body_text, call, event_data, response, Harness, Outcome};
    use tollgate_plugin_sdk::{ErrorKind, Usage};

    /// The reasoner's stream: a keep-alive comment, thinking first, then the answer, then usage
    /// with cache hits.
    const STREAM: &str = ": keep-alive\n\n\
        data: {\"id\":\"1\",\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":null,\"reasoning_content\":\"Hmm\"},\"finish_reason\":null}],\"usage\":null}\n\n\
        data: {\"id\":\"1\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hi\"},\"finish_reason\":\"stop\"}],\"usage\":null}\n\n\
        data: {\"id\":\"1\",\"choices\":[],\"usage\":{\"prompt_tokens\":10,\"completion_tokens\":6,\"total_tokens\":16,\"prompt_cache_hit_tokens\":8,\"prompt_cache_miss_tokens\":2,\"completion_tokens_details\":{\"reasoning_tokens\":4}}}\n\n\
        data: [DONE]\n\n";

    #[test]
    fn history_loses_its_reasoning_and_the_answer_keeps_it() {
        let body = json!({ "model": "deepseek-reasoner", "stream": true, "messages": [
            { "role": "user", "content": "hi" },
            { "role": "assistant", "content": "Hi", "reasoning_content": "Hmm" },
            { "role": "user", "content": "again" },
        ]});
        let run =
            Harness::<Plugin>::new(call("chat", "deepseek-reasoner", &body.to_string())).run(|_| response(200, STREAM));
        assert_eq!(run.requests[0].path, "/chat/completions");
        let sent: Value = serde_json::from_str(&body_text(&run.requests[0])).unwrap();
        assert!(sent["messages"][1].get("reasoning_content").is_none(), "DeepSeek refuses it back");
        assert_eq!(sent["messages"][1]["content"], "Hi");
        let Outcome::Stream { chunks, tail } = run.outcome else { panic!("a stream") };
        assert!(event_data(&chunks)[0].contains("\"reasoning_content\":\"Hmm\""));
        assert_eq!(
            (tail.usage.input_tokens, tail.usage.cached_tokens, tail.usage.output_tokens),
            (Some(10), Some(8), Some(6))
        );
    }

    #[test]
    fn the_balance_is_read_for_the_highest_balance_strategy() {
        let run = Harness::<Plugin>::new(call("balance", "", "")).run(|_| {
            response(200, r#"{"is_available":true,"balance_infos":[{"currency":"CNY","total_balance":"110.00"}]}"#)
        });
        assert_eq!(run.requests[0].path, "/user/balance");
        let Outcome::Reply(r) = run.outcome else { panic!("a reply") };
        assert!(matches!(r.body, tollgate_plugin_sdk::Body::Text(t) if t == r#"{"balance":"110.00"}"#));
    }

    #[test]
    fn the_conformance_battery() {
        let error = |status: u16, message: &str| {
            answer(
                status,
                json!({ "error": { "message": message, "type": "x", "param": null, "code": "invalid_request_error" } })
                    .to_string(),
            )
        };
        let whole = r#"{"id":"1","choices":[{"index":0,"message":{"role":"assistant","content":"Hi","reasoning_content":"Hmm"},"finish_reason":"stop"}],"usage":{"prompt_tokens":10,"completion_tokens":6,"prompt_cache_hit_tokens":8}}"#;
        run::<Plugin>(Vendor {
            whole: (
                call("chat", "deepseek-chat", r#"{"model":"deepseek-chat","messages":[]}"#),
                answer(200, whole),
                Usage { input_tokens: Some(10), output_tokens: Some(6), cached_tokens: Some(8), ..Default::default() },
            ),
            whole_without_usage: Some(answer(200, r#"{"id":"1","choices":[{"index":0,"message":{"content":"Hi"}}]}"#)),
            stream: Some((
                call("chat", "deepseek-reasoner", r#"{"stream":true,"messages":[]}"#),
                STREAM.as_bytes().to_vec(),
                Usage { input_tokens: Some(10), output_tokens: Some(6), cached_tokens: Some(8), ..Default::default() },
            )),
            failures: vec![
                (error(401, "Authentication Fails (no such user)"), ErrorKind::Unauthorized),
                (error(402, "Insufficient Balance"), ErrorKind::InsufficientBalance),
                (error(400, "Invalid Format"), ErrorKind::BadRequest),
                (error(422, "Invalid Parameters"), ErrorKind::BadRequest),
                (error(429, "Rate Limit Reached"), ErrorKind::RateLimited),
                (error(500, "Server Error"), ErrorKind::UpstreamFault),
                (error(503, "Server Overloaded"), ErrorKind::UpstreamFault),
            ],
        });
    }
}
