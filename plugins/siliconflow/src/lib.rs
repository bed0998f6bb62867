//! The `siliconflow` plugin: SiliconFlow's OpenAI-compatible chat and embeddings, plus the
//! key balance (`GET /v1/user/info`, `data.totalBalance`: granted plus topped-up, in CNY) for
//! channels with `strategy = "highest-balance"`.

use serde_json::Value;
use tollgate_plugin_sdk::openai_compat::{Compat, Vendor};
use tollgate_plugin_sdk::{export_plugin, Manifest};

pub struct SiliconFlow;

impl Vendor for SiliconFlow {
    fn manifest() -> Manifest {
        Manifest::new("siliconflow", env!("CARGO_PKG_VERSION"), "SiliconFlow", &["chat", "embeddings", "balance"])
            .with_base_url("https://api.siliconflow.cn")
    }

    fn balance_path() -> Option<&'static str> {
        Some("/v1/user/info")
    }

    /// `{"code":20000,"status":true,"data":{"balance":"0.88","chargeBalance":"88.00","totalBalance":"88.88"}}`
    fn read_balance(answer: &Value) -> Option<String> {
        answer.pointer("/data/totalBalance").and_then(Value::as_str).map(str::to_string)
    }
}

pub type Plugin = Compat<SiliconFlow>;
export_plugin!(Plugin);

#[cfg(test)]
mod tests {
    use super::Plugin;
    use tollgate_plugin_sdk::testing::{call, response, Harness, Outcome};
    use tollgate_plugin_sdk::ErrorKind;

    #[test]
    fn balance_reads_the_total_balance() {
        let run = Harness::<Plugin>::new(call("balance", "", "")).run(|_| {
            response(
                200,
                r#"{"code":20000,"status":true,"data":{"balance":"0.88","chargeBalance":"88.00","totalBalance":"88.88"}}"#,
            )
        });
        assert_eq!((run.requests[0].method.as_str(), run.requests[0].path.as_str()), ("GET", "/v1/user/info"));
        let Outcome::Reply(r) = run.outcome else { panic!("expected a reply") };
        let body: serde_json::Value = serde_json::from_str(&body_text_of(&r.body)).unwrap();
        assert_eq!(body["balance"], "88.88");
    }

    #[test]
    fn a_refused_key_fails_and_an_unreadable_answer_is_unknown_not_zero() {
        let run = Harness::<Plugin>::new(call("balance", "", "")).run(|_| response(401, r#""Invalid token""#));
        assert!(matches!(run.outcome, Outcome::Failed(e) if e.kind == ErrorKind::Unauthorized));
        let run = Harness::<Plugin>::new(call("balance", "", "")).run(|_| response(404, "404 page not found"));
        assert!(matches!(run.outcome, Outcome::Failed(e) if e.kind == ErrorKind::NotFound));
        for body in ["not json", r#"{"data":{}}"#, r#"{"data":{"totalBalance":"lots"}}"#] {
            let run = Harness::<Plugin>::new(call("balance", "", "")).run(|_| response(200, body));
            assert!(matches!(run.outcome, Outcome::Failed(e) if e.kind == ErrorKind::UpstreamFault), "{body}");
        }
    }

    #[test]
    fn chat_is_openai_compatible() {
        let run = Harness::<Plugin>::new(call("chat", "Qwen/Qwen3-8B", r#"{"model":"Qwen/Qwen3-8B","messages":[]}"#))
            .run(|_| response(200, r#"{"usage":{"prompt_tokens":3,"completion_tokens":1}}"#));
        assert_eq!(run.requests[0].path, "/v1/chat/completions");
        assert!(matches!(run.outcome, Outcome::Reply(r) if r.usage.input_tokens == Some(3)));
    }

    fn body_text_of(body: &tollgate_plugin_sdk::Body) -> String {
        String::from_utf8(body.as_bytes().unwrap().to_vec()).unwrap()
    }
}
