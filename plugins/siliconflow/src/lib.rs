//! The `siliconflow` plugin: SiliconFlow's OpenAI-compatible chat and embeddings; rerank
//! (`POST /v1/rerank`, billed by its `meta.tokens`); image generation translated both ways
//! (OpenAI's `size`/`n` become `image_size`/`batch_size`, and SiliconFlow's `images` answer
//! becomes OpenAI's `data`); the key balance (`GET /v1/user/info`, `data.totalBalance`:
//! granted plus topped-up, in CNY) for channels with `strategy = "highest-balance"`; video
//! generation as asynchronous tasks (`video`); reference audio, the custom voices a speech
//! call names (`references`); speech, quoted so that a call naming a reference runs on the
//! key that uploaded it (`speech`); and OpenAI's files and batches as SiliconFlow serves them,
//! a batch a task the host prices by its input file's lines and charges by its results'
//! (`batches`).

mod batches;
mod references;
mod speech;
mod video;

use serde_json::Value;
use tollgate_plugin_sdk::openai_compat::{CompatExchange, Vendor};
use tollgate_plugin_sdk::{
    export_plugin, AdapterError, Archived, Call, Exchange, Manifest, OutChunk, SocketAction, SocketInput, Step,
    StreamEnd, StreamInput, StreamTail, UpstreamResponse, Usage,
};

pub struct SiliconFlow;

impl Vendor for SiliconFlow {
    fn manifest() -> Manifest {
        let manifest = Manifest::new(
            "siliconflow",
            env!("CARGO_PKG_VERSION"),
            "SiliconFlow",
            &["chat", "embeddings", "rerank", "images", "speech", "transcription", "balance"],
        )
        // Where SiliconFlow serves finished videos and batch results.
        .fetching("*.siliconflow.cn")
        .fetching("*.siliconflow.com")
        .with_base_url("https://api.siliconflow.cn");
        batches::declare(speech::declare(references::declare(video::declare(manifest))))
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
        let created = tollgate_plugin_sdk::now_ms() / 1000;
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

/// The plugin: SiliconFlow's OpenAI-compatible ops through `openai_compat` (speech quoted by
/// `speech`), its video tasks through `video`, its reference audio through `references`, its
/// files and batches through `batches`.
pub struct Plugin;

impl tollgate_plugin_sdk::Plugin for Plugin {
    type Exchange = SiliconFlowExchange;
    fn describe() -> Manifest {
        SiliconFlow::manifest()
    }
    /// `batch_poll_seconds`: how often a batch is read (see `batches`).
    fn check_settings(settings: &str) -> Result<(), String> {
        let v: Value = match settings.trim() {
            "" => Value::Null,
            s => serde_json::from_str(s).map_err(|e| format!("not JSON: {e}"))?,
        };
        batches::check_settings(&v)
    }
    /// Chats and embeddings pass through (no `api_root` here: SiliconFlow's own paths).
    fn forward(settings: &str) -> Vec<tollgate_plugin_sdk::ForwardRoute> {
        tollgate_plugin_sdk::openai_compat::forwarded_routes::<SiliconFlow>(settings)
    }
}

pub enum SiliconFlowExchange {
    /// An OpenAI-compatible op; for speech, what its quote reads.
    Compat(CompatExchange<SiliconFlow>, Option<speech::Speech>),
    Video(video::VideoExchange),
    References(references::ReferenceExchange),
    Batches(batches::BatchExchange),
}

impl Exchange for SiliconFlowExchange {
    fn new(call: Call) -> Self {
        match call.op.as_str() {
            // Before video: a batch task's poll is told from a video's by its state's prefix.
            op if batches::handles(op, call.task.as_deref()) => {
                SiliconFlowExchange::Batches(batches::BatchExchange::new(call))
            }
            op if video::handles(op) => SiliconFlowExchange::Video(video::VideoExchange::new(call)),
            op if references::handles(op) => SiliconFlowExchange::References(references::ReferenceExchange::new(call)),
            _ => {
                let speech = speech::Speech::of(&call);
                SiliconFlowExchange::Compat(CompatExchange::new(call), speech)
            }
        }
    }
    fn quote(&mut self) -> Result<Usage, AdapterError> {
        match self {
            SiliconFlowExchange::Compat(_, Some(s)) => s.quote(),
            SiliconFlowExchange::Compat(e, None) => e.quote(),
            SiliconFlowExchange::Video(e) => e.quote(),
            SiliconFlowExchange::References(_) => Err(AdapterError::new(
                tollgate_plugin_sdk::ErrorKind::Unsupported,
                "SiliconFlow's reference audio is free: it has no quote",
            )),
            SiliconFlowExchange::Batches(_) => Err(AdapterError::new(
                tollgate_plugin_sdk::ErrorKind::Unsupported,
                "SiliconFlow's files and batches are not quoted: the host prices a batch by its input file",
            )),
        }
    }
    fn uses(&mut self) -> Vec<String> {
        match self {
            SiliconFlowExchange::Compat(_, Some(s)) => s.uses(),
            _ => Vec::new(),
        }
    }
    fn first(&mut self) -> Step {
        match self {
            SiliconFlowExchange::Compat(e, _) => e.first(),
            SiliconFlowExchange::Video(e) => e.first(),
            SiliconFlowExchange::References(e) => e.first(),
            SiliconFlowExchange::Batches(e) => e.first(),
        }
    }
    fn next(&mut self, response: UpstreamResponse) -> Step {
        match self {
            SiliconFlowExchange::Compat(e, _) => e.next(response),
            SiliconFlowExchange::Video(e) => e.next(response),
            SiliconFlowExchange::References(e) => e.next(response),
            SiliconFlowExchange::Batches(e) => e.next(response),
        }
    }
    fn decode(&mut self, input: StreamInput) -> Result<Vec<OutChunk>, AdapterError> {
        match self {
            SiliconFlowExchange::Compat(e, _) => e.decode(input),
            _ => Err(does_not("stream")),
        }
    }
    fn finish(&mut self, end: StreamEnd) -> Result<StreamTail, AdapterError> {
        match self {
            SiliconFlowExchange::Compat(e, _) => e.finish(end),
            _ => Err(does_not("stream")),
        }
    }
    fn archived(&mut self, stored: Vec<Archived>) -> Step {
        match self {
            SiliconFlowExchange::Compat(e, _) => e.archived(stored),
            _ => Step::Fail(does_not("archive")),
        }
    }
    fn frame(&mut self, input: SocketInput) -> Result<Vec<SocketAction>, AdapterError> {
        match self {
            SiliconFlowExchange::Compat(e, _) => e.frame(input),
            _ => Err(does_not("open sockets")),
        }
    }
}

fn does_not(what: &str) -> AdapterError {
    AdapterError::new(
        tollgate_plugin_sdk::ErrorKind::Unsupported,
        format!("SiliconFlow's video tasks, reference audio, files and batches do not {what}"),
    )
}

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

    #[test]
    fn a_video_is_submitted_polled_and_billed_as_one_video() {
        use tollgate_plugin_sdk::{TaskState, UpstreamRequest};
        let c = call(
            "video",
            "Wan-AI/Wan2.2-T2V-A14B",
            r#"{"model":"Wan-AI/Wan2.2-T2V-A14B","prompt":"a cat","size":"720x1280","seed":"7"}"#,
        );
        let mut ex = <super::SiliconFlowExchange as tollgate_plugin_sdk::Exchange>::new(c.clone());
        assert_eq!(tollgate_plugin_sdk::Exchange::quote(&mut ex).unwrap().extra, vec![("video".to_string(), 1)]);
        let run = Harness::<Plugin>::new(c).run(|_| response(200, r#"{"requestId":"req-9"}"#));
        let sent: serde_json::Value =
            serde_json::from_str(&tollgate_plugin_sdk::testing::body_text(&run.requests[0])).unwrap();
        assert_eq!(run.requests[0].path, "/v1/video/submit");
        assert_eq!(
            sent,
            serde_json::json!({"model":"Wan-AI/Wan2.2-T2V-A14B","prompt":"a cat","image_size":"720x1280","seed":7})
        );
        assert!(matches!(run.outcome, Outcome::Submitted(ref s) if s.state == "req-9"));

        let poll = |answer: &'static str| {
            let mut c = call("task.poll", "Wan-AI/Wan2.2-T2V-A14B", "");
            c.task = Some("req-9".into());
            Harness::<Plugin>::new(c).run(move |_| response(200, answer))
        };
        let run = poll(r#"{"status":"InQueue","position":3}"#);
        let req: &UpstreamRequest = &run.requests[0];
        assert_eq!((req.method.as_str(), req.path.as_str()), ("POST", "/v1/video/status"));
        assert_eq!(tollgate_plugin_sdk::testing::body_text(req), r#"{"requestId":"req-9"}"#);
        assert!(
            matches!(run.outcome, Outcome::Task(TaskState::Pending(ref p)) if p.message.as_deref() == Some("InQueue (position 3)"))
        );
        match poll(
            r#"{"status":"Succeed","reason":"","results":{"videos":[{"url":"https://sf.example/v.mp4"}],"seed":42}}"#,
        )
        .outcome
        {
            Outcome::Task(TaskState::Succeeded(d)) => {
                assert_eq!(
                    (d.outputs[0].url.as_str(), d.usage.extra.clone()),
                    ("https://sf.example/v.mp4", vec![("video".to_string(), 1)])
                );
            }
            o => panic!("{o:?}"),
        }
        assert!(matches!(poll(r#"{"status":"Failed","reason":"sensitive content detected"}"#).outcome,
            Outcome::Task(TaskState::Failed(ref e)) if e.kind == ErrorKind::ContentFiltered));
        assert!(matches!(poll("not json").outcome, Outcome::Failed(ref e) if e.kind == ErrorKind::UpstreamFault));
    }

    #[test]
    fn what_siliconflow_cannot_render_or_price_is_refused_before_it_and_its_errors_are_classified() {
        for bad in [
            r#"{"prompt":"a","size":"1920x1080"}"#,
            r#"{"prompt":"a","seconds":"8"}"#,
            r#"{"prompt":"a","num_frames":300}"#,
            r#"{"size":"1280x720"}"#,
        ] {
            let run =
                Harness::<Plugin>::new(call("video", "Wan-AI/Wan2.2-T2V-A14B", bad)).run(|_| panic!("nothing is sent"));
            assert!(matches!(run.outcome, Outcome::Failed(ref e) if e.kind == ErrorKind::BadRequest), "{bad}");
        }
        for (status, body, kind) in [
            (401, r#""Invalid token""#, ErrorKind::Unauthorized),
            (400, r#"{"code":20012,"message":"model does not exist","data":""}"#, ErrorKind::BadRequest),
            (429, r#"{"message":"Request was rejected due to rate limiting.","data":""}"#, ErrorKind::RateLimited),
            (503, r#"{"code":50505,"message":"Model service overloaded.","data":""}"#, ErrorKind::UpstreamFault),
        ] {
            let run = Harness::<Plugin>::new(call("video", "Wan-AI/Wan2.2-T2V-A14B", r#"{"prompt":"a"}"#))
                .run(|_| response(status, body));
            assert!(matches!(run.outcome, Outcome::Failed(ref e) if e.kind == kind), "{status} {body}");
        }
    }

    #[test]
    fn siliconflows_own_routes_answer_its_own_bodies_and_name_the_request() {
        let body = r#"{"model":"Wan-AI/Wan2.2-T2V-A14B","prompt":"a cat","image_size":"720x1280"}"#;
        let run = Harness::<Plugin>::new(call("siliconflow.video_submit", "Wan-AI/Wan2.2-T2V-A14B", body))
            .run(|_| response(200, r#"{"requestId":"r-1"}"#));
        assert_eq!(run.requests[0].path, "/v1/video/submit");
        let Outcome::Submitted(t) = run.outcome else { panic!("expected a task") };
        let reply = t.reply.expect("SiliconFlow's own answer");
        assert_eq!((t.state.as_str(), body_text_of(&reply.body).as_str()), ("r-1", r#"{"requestId":"r-1"}"#));
        assert_eq!(reply.objects, ["r-1"]);
        // A size SiliconFlow does not render is refused before it, a refusal relayed as written.
        let bad = r#"{"model":"Wan-AI/Wan2.2-T2V-A14B","prompt":"a","image_size":"1920x1080"}"#;
        let run = Harness::<Plugin>::new(call("siliconflow.video_submit", "Wan-AI/Wan2.2-T2V-A14B", bad))
            .run(|_| panic!("nothing is sent"));
        assert!(matches!(run.outcome, Outcome::Failed(ref e) if e.kind == ErrorKind::BadRequest));
        let run = Harness::<Plugin>::new(call("siliconflow.video_submit", "Wan-AI/Wan2.2-T2V-A14B", body))
            .run(|_| response(401, r#""Invalid token""#));
        let Outcome::Reply(r) = run.outcome else { panic!("expected the vendor's answer") };
        assert_eq!((r.status, body_text_of(&r.body).as_str()), (401, r#""Invalid token""#));
        assert_eq!(r.error.map(|e| e.kind), Some(ErrorKind::Unauthorized));

        let status = r#"{"requestId":"r-1"}"#;
        let answer = r#"{"status":"InQueue","reason":"","position":2}"#;
        let run = Harness::<Plugin>::new(call("siliconflow.video_status", "", status)).run(|_| response(200, answer));
        assert_eq!(
            (run.requests[0].path.as_str(), body_text_of(&run.requests[0].body)),
            ("/v1/video/status", status.to_string())
        );
        let Outcome::Reply(r) = run.outcome else { panic!("expected the vendor's answer") };
        assert_eq!(body_text_of(&r.body), answer);
    }

    #[test]
    fn the_conformance_battery() {
        use tollgate_plugin_sdk::conformance::{answer, run, Vendor};
        use tollgate_plugin_sdk::Usage;
        let whole = r#"{"id":"x","choices":[{"message":{"content":"Hi","reasoning_content":"Hmm"}}],"usage":{"prompt_tokens":9,"completion_tokens":2,"total_tokens":11}}"#;
        let stream = "data: {\"choices\":[{\"delta\":{\"content\":\"Hi\"}}]}\n\ndata: {\"choices\":[],\"usage\":{\"prompt_tokens\":9,\"completion_tokens\":2}}\n\ndata: [DONE]\n\n";
        let usage = Usage { input_tokens: Some(9), output_tokens: Some(2), ..Usage::default() };
        run::<Plugin>(Vendor {
            whole: (
                call("chat", "Qwen/Qwen3-8B", r#"{"model":"Qwen/Qwen3-8B","messages":[]}"#),
                answer(200, whole),
                usage.clone(),
            ),
            whole_without_usage: Some(answer(200, r#"{"id":"x","choices":[{"message":{"content":"Hi"}}]}"#)),
            stream: Some((
                call("chat", "Qwen/Qwen3-8B", r#"{"stream":true,"messages":[]}"#),
                stream.as_bytes().to_vec(),
                usage,
            )),
            // SiliconFlow's own error shapes (`vendor-apis.md` §2.2), several plain strings.
            failures: vec![
                (answer(401, r#""Invalid token""#), ErrorKind::Unauthorized),
                (answer(400, r#"{"code":20012,"message":"Model does not exist","data":"x"}"#), ErrorKind::BadRequest),
                (
                    answer(
                        429,
                        r#"{"message":"Request was rejected due to rate limiting. Details:TPM limit reached.","data":"x"}"#,
                    ),
                    ErrorKind::RateLimited,
                ),
                (
                    answer(
                        503,
                        r#"{"code":50505,"message":"Model service overloaded. Please try again later.","data":"x"}"#,
                    ),
                    ErrorKind::UpstreamFault,
                ),
                (answer(404, "404 page not found"), ErrorKind::NotFound),
                (answer(504, "gateway timeout"), ErrorKind::Timeout),
            ],
        });
    }
}

/// What the modules' tests share: a body's text, SiliconFlow's answer, a refusal's message.
#[cfg(test)]
mod test_helpers {
    use tollgate_plugin_sdk::testing::{Outcome, Run};
    use tollgate_plugin_sdk::{Body, ErrorKind, Reply};

    pub fn text(body: &Body) -> String {
        String::from_utf8(body.as_bytes().expect("a plugin-held body").to_vec()).unwrap()
    }

    pub fn reply(run: Run) -> Reply {
        match run.outcome {
            Outcome::Reply(r) => r,
            o => panic!("expected SiliconFlow's answer, got {o:?}"),
        }
    }

    /// A refusal before anything was sent: its message.
    pub fn refused(run: Run) -> String {
        assert!(run.requests.is_empty(), "nothing is sent: {:?}", run.requests);
        match run.outcome {
            Outcome::Failed(e) if e.kind == ErrorKind::BadRequest => e.message,
            o => panic!("expected a bad request, got {o:?}"),
        }
    }
}
