//! The `siliconflow` plugin: SiliconFlow's OpenAI-compatible chat and embeddings; rerank
//! (`POST /v1/rerank`, billed by its `meta.tokens`); image generation translated both ways
//! (OpenAI's `size`/`n` become `image_size`/`batch_size`, and SiliconFlow's `images` answer
//! becomes OpenAI's `data`); and the key balance (`GET /v1/user/info`, `data.totalBalance`:
//! granted plus topped-up, in CNY) for channels with `strategy = "highest-balance"`.

use serde_json::Value;
use tollgate_plugin_sdk::openai_compat::{Compat, Vendor};
use tollgate_plugin_sdk::{export_plugin, Manifest};

pub struct SiliconFlow;

impl Vendor for SiliconFlow {
    fn manifest() -> Manifest {
        Manifest::new(
            "siliconflow",
            env!("CARGO_PKG_VERSION"),
            "SiliconFlow",
            &["chat", "embeddings", "rerank", "images", "balance"],
        )
        .with_base_url("https://api.siliconflow.cn")
    }

    fn rewrites(op: &str) -> bool {
        op == "images"
    }

    /// OpenAI's image request → SiliconFlow's: `size` → `image_size`, `n` → `batch_size`.
    fn adjust_request(op: &str, body: &mut Value) {
        if op != "images" {
            return;
        }
        if let Some(obj) = body.as_object_mut() {
            if let Some(size) = obj.remove("size") {
                obj.entry("image_size").or_insert(size);
            }
            if let Some(n) = obj.remove("n") {
                obj.entry("batch_size").or_insert(n);
            }
            obj.remove("response_format"); // SiliconFlow answers URLs only
        }
    }

    /// SiliconFlow's `{"images":[{"url"}],"timings","seed"}` → OpenAI's `{"created","data"}`.
    fn adjust_response(op: &str, body: &mut Value) {
        if op != "images" {
            return;
        }
        let images = body.get_mut("images").map(Value::take).unwrap_or(Value::Array(Vec::new()));
        let created =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
        *body = serde_json::json!({ "created": created, "data": images });
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
    fn images_are_translated_both_ways_and_counted() {
        let c = call(
            "images",
            "Kwai-Kolors/Kolors",
            r#"{"model":"Kwai-Kolors/Kolors","prompt":"a cat","size":"1024x1024","n":2}"#,
        );
        let run = Harness::<Plugin>::new(c).run(|_| {
            response(200, r#"{"images":[{"url":"https://sf/1.png"},{"url":"https://sf/2.png"}],"timings":{"inference":1.2},"seed":42}"#)
        });
        let sent: serde_json::Value =
            serde_json::from_str(&tollgate_plugin_sdk::testing::body_text(&run.requests[0])).unwrap();
        assert_eq!((&sent["image_size"], &sent["batch_size"]), (&"1024x1024".into(), &2.into()), "{sent}");
        assert!(sent.get("size").is_none() && sent.get("n").is_none());
        let Outcome::Reply(r) = run.outcome else { panic!("expected a reply") };
        assert_eq!(r.usage.images, Some(2));
        let answer: serde_json::Value = serde_json::from_str(&body_text_of(&r.body)).unwrap();
        assert_eq!(answer["data"][1]["url"], "https://sf/2.png", "{answer}");
        assert!(answer["created"].as_u64().unwrap() > 1_700_000_000);
    }

    #[test]
    fn rerank_is_billed_by_its_tokens() {
        let c = call(
            "rerank",
            "BAAI/bge-reranker-v2-m3",
            r#"{"model":"BAAI/bge-reranker-v2-m3","query":"q","documents":["a","b"]}"#,
        );
        let run = Harness::<Plugin>::new(c).run(|_| {
            response(200, r#"{"id":"r","results":[{"index":1,"relevance_score":0.9}],"meta":{"tokens":{"input_tokens":12,"output_tokens":0}}}"#)
        });
        assert_eq!(run.requests[0].path, "/v1/rerank");
        assert!(matches!(run.outcome, Outcome::Reply(r) if r.usage.input_tokens == Some(12)));
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
