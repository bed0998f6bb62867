//! The `zhipu` plugin: Zhipu's GLM models (`open.bigmodel.cn/api/paas/v4`), OpenAI-compatible
//! chat, embeddings and image generation.
//!
//! The key is written as Zhipu issues it, `id.secret`. By default the host sends it as a
//! Bearer token and the plugin never sees it. On a channel with `allow_signing = true` the
//! plugin signs a JWT per request instead (HS256 with the secret; `exp` and `timestamp` in
//! milliseconds, as Zhipu reads them; valid for an hour), so the secret never crosses the wire.
//!
//! Errors are `{"error":{"code":"1214","message"}}`: classified by the code's family (1000–1004
//! the key, 1113 the account's balance, 12xx the request, 1301 the content filter, 1302–1305
//! rate limits), else by the HTTP status.

use base64::Engine as _;
use hmac::Mac;
use serde_json::Value;
use tollgate_plugin_sdk::openai_compat::{CompatExchange, Vendor};
use tollgate_plugin_sdk::{
    errors, export_plugin, AdapterError, Auth, Call, CredentialField, ErrorKind, Exchange, Manifest, OutChunk, Step,
    StreamEnd, StreamInput, StreamTail, UpstreamRequest, UpstreamResponse, Usage,
};

/// How long a signed token is valid.
const JWT_TTL_MS: u64 = 3_600_000;

pub struct Zhipu;

impl Vendor for Zhipu {
    fn manifest() -> Manifest {
        Manifest::new("zhipu", env!("CARGO_PKG_VERSION"), "Zhipu GLM", &["chat", "embeddings", "images"])
            .with_credential(CredentialField {
                name: "api_key".into(),
                description: "Zhipu API key, 'id.secret'; signs a JWT per request where the channel allows signing"
                    .into(),
                secret: true,
                optional: true,
            })
            .with_base_url("https://open.bigmodel.cn/api/paas/v4")
    }

    fn path(op: &str) -> Option<&'static str> {
        match op {
            "chat" => Some("/chat/completions"),
            "embeddings" => Some("/embeddings"),
            "images" => Some("/images/generations"),
            _ => None,
        }
    }

    fn classify(response: &UpstreamResponse) -> AdapterError {
        let mut e = errors::from_openai_response(response);
        let code = e.code.as_deref().and_then(|c| c.parse::<u32>().ok());
        e.kind = match code {
            Some(1000..=1004) => ErrorKind::Unauthorized,
            Some(1113) => ErrorKind::InsufficientBalance,
            Some(1200..=1299) => ErrorKind::BadRequest,
            Some(1301) => ErrorKind::ContentFiltered,
            Some(1302..=1305) => ErrorKind::RateLimited,
            _ => e.kind,
        };
        e
    }
}

/// Zhipu's JWT for the key `id.secret`, issued at `now_ms`.
pub fn jwt(key: &str, now_ms: u64) -> Option<String> {
    let (id, secret) = key.split_once('.')?;
    let b64 = |bytes: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes);
    let header = b64(br#"{"alg":"HS256","sign_type":"SIGN"}"#);
    let claims =
        format!(r#"{{"api_key":{},"exp":{},"timestamp":{now_ms}}}"#, Value::String(id.into()), now_ms + JWT_TTL_MS);
    let signing_input = format!("{header}.{}", b64(claims.as_bytes()));
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC takes any key");
    mac.update(signing_input.as_bytes());
    Some(format!("{signing_input}.{}", b64(&mac.finalize().into_bytes())))
}

pub struct Plugin;

impl tollgate_plugin_sdk::Plugin for Plugin {
    type Exchange = ZhipuExchange;
    fn describe() -> Manifest {
        Zhipu::manifest()
    }
}

export_plugin!(Plugin);

/// The OpenAI-compatible exchange, its requests signed when the call carries the key.
pub struct ZhipuExchange {
    inner: CompatExchange<Zhipu>,
    /// The key, where the channel allows signing.
    key: Option<String>,
}

impl ZhipuExchange {
    fn signed(&self, step: Step) -> Step {
        let Some(key) = &self.key else { return step };
        let Some(token) = jwt(key, tollgate_plugin_sdk::now_ms()) else {
            return Step::fail(ErrorKind::Unauthorized, "the channel's key is not a Zhipu key ('id.secret')");
        };
        let sign = |r: UpstreamRequest| r.with_auth(Auth::None).with_header("authorization", format!("Bearer {token}"));
        match step {
            Step::Send(r) => Step::Send(sign(r)),
            Step::Stream(mut s) => {
                s.request = sign(s.request);
                Step::Stream(s)
            }
            other => other,
        }
    }
}

impl Exchange for ZhipuExchange {
    fn new(call: Call) -> Self {
        let key = call.credential_field("api_key").map(str::to_string);
        ZhipuExchange { inner: CompatExchange::new(call), key }
    }
    fn first(&mut self) -> Step {
        let step = self.inner.first();
        self.signed(step)
    }
    fn next(&mut self, response: UpstreamResponse) -> Step {
        let step = self.inner.next(response);
        self.signed(step)
    }
    fn decode(&mut self, input: StreamInput) -> Result<Vec<OutChunk>, AdapterError> {
        self.inner.decode(input)
    }
    fn finish(&mut self, end: StreamEnd) -> Result<StreamTail, AdapterError> {
        self.inner.finish(end)
    }
    fn quote(&mut self) -> Result<Usage, AdapterError> {
        self.inner.quote()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tollgate_plugin_sdk::conformance::{answer, run, Vendor as Battery};
    use tollgate_plugin_sdk::testing::{call, response, Harness, Outcome};
    use tollgate_plugin_sdk::Header;

    #[test]
    fn the_jwt_matches_zhipus_test_vector() {
        // vendor-apis.md §7.1: id test-id, secret test-secret, now 1700000000000, an hour.
        assert_eq!(
            jwt("test-id.test-secret", 1_700_000_000_000).unwrap(),
            "eyJhbGciOiJIUzI1NiIsInNpZ25fdHlwZSI6IlNJR04ifQ.eyJhcGlfa2V5IjoidGVzdC1pZCIsImV4cCI6MTcwMDAwMzYwMDAwMCwidGltZXN0YW1wIjoxNzAwMDAwMDAwMDAwfQ.pgyAlOi9o1YeTMu-Rl0kq15I5ZxUinpjlcyeSFIBU3U"
        );
        assert!(jwt("no-secret", 1).is_none());
    }

    #[test]
    fn the_raw_key_is_the_hosts_unless_the_channel_allows_signing() {
        let body = r#"{"model":"glm-4","messages":[]}"#;
        let run = Harness::<Plugin>::new(call("chat", "glm-4", body)).run(|_| response(200, r#"{"choices":[]}"#));
        assert_eq!(run.requests[0].path, "/chat/completions");
        assert!(matches!(run.requests[0].auth, Auth::Bearer), "the host inserts the key");
        let mut signing = call("chat", "glm-4", body);
        signing.credential = vec![("api_key".into(), "test-id.test-secret".into())];
        tollgate_plugin_sdk::testing::fix_clock(Some(1_700_000_000_000));
        let run = Harness::<Plugin>::new(signing).run(|_| response(200, r#"{"choices":[]}"#));
        tollgate_plugin_sdk::testing::fix_clock(None);
        let r = &run.requests[0];
        assert!(matches!(r.auth, Auth::None));
        let auth = tollgate_plugin_sdk::header(&r.headers, "authorization").unwrap();
        assert_eq!(auth, format!("Bearer {}", jwt("test-id.test-secret", 1_700_000_000_000).unwrap()));
        let mut bad = call("chat", "glm-4", body);
        bad.credential = vec![("api_key".into(), "nodot".into())];
        let run = Harness::<Plugin>::new(bad).run(|_| unreachable!());
        assert!(matches!(run.outcome, Outcome::Failed(e) if e.kind == ErrorKind::Unauthorized));
    }

    #[test]
    fn the_conformance_battery() {
        let error = |status: u16, code: &str| {
            answer(status, serde_json::json!({ "error": { "code": code, "message": "m" } }).to_string())
        };
        let whole = r#"{"id":"1","choices":[{"index":0,"message":{"role":"assistant","content":"Hi"},"finish_reason":"stop"}],"usage":{"prompt_tokens":9,"completion_tokens":2,"total_tokens":11}}"#;
        let stream = "data: {\"id\":\"1\",\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"Hi\"}}]}\n\n\
            data: {\"id\":\"1\",\"choices\":[{\"index\":0,\"finish_reason\":\"stop\",\"delta\":{\"content\":\"\"}}],\"usage\":{\"prompt_tokens\":9,\"completion_tokens\":2,\"total_tokens\":11}}\n\n\
            data: [DONE]\n\n";
        let usage = Usage { input_tokens: Some(9), output_tokens: Some(2), ..Default::default() };
        let mut limited = error(429, "1302");
        limited.headers.push(Header::new("retry-after", "1"));
        run::<Plugin>(Battery {
            whole: (call("chat", "glm-4", r#"{"model":"glm-4","messages":[]}"#), answer(200, whole), usage.clone()),
            whole_without_usage: Some(answer(200, r#"{"id":"1","choices":[]}"#)),
            stream: Some((
                call("chat", "glm-4", r#"{"stream":true,"messages":[]}"#),
                stream.as_bytes().to_vec(),
                usage,
            )),
            failures: vec![
                (error(401, "1000"), ErrorKind::Unauthorized),
                (error(400, "1002"), ErrorKind::Unauthorized),
                (error(429, "1113"), ErrorKind::InsufficientBalance),
                (error(400, "1214"), ErrorKind::BadRequest),
                (error(400, "1301"), ErrorKind::ContentFiltered),
                (limited, ErrorKind::RateLimited),
                (error(500, "500"), ErrorKind::UpstreamFault),
            ],
        });
    }
}
