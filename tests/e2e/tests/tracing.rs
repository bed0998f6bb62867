//! OpenTelemetry traces through the real binary, received by an OTLP/HTTP receiver that
//! decodes them with OpenTelemetry's own protobuf definitions (tests/python/otlp_receiver.py):
//! a call's spans (auth, reserve, upstream, settle, a stream's: a forwarded call's have no
//! plugin step; a call through its plugin, whole or streamed, has its steps), the caller's
//! `traceparent` followed, no secret in any span, and a receiver that is briefly down.

use serde_json::Value;
use std::process::Command;
use std::time::Duration;
use tollgate_e2e::{channel, eventually, http, pricing_setting, python_with, root, scratch, spawn_reading_first_line};
use tollgate_e2e::{Gateway, Mock, Proc};

const PRICES: &str = "[models.\"gpt-4o-mini\"]\ninput_per_million = \"150\"\noutput_per_million = \"600\"\n\
                      [models.mapped]\ninput_per_million = \"150\"\noutput_per_million = \"600\"\n";
const UPSTREAM_KEY: &str = "sk-upstream-traced-secret";

struct Receiver {
    _proc: Proc,
    port: String,
    out: std::path::PathBuf,
}

impl Receiver {
    fn start(name: &str, python: &str, flags: &[&str]) -> Receiver {
        let dir = scratch(name);
        let out = dir.join("received.jsonl");
        let mut cmd = Command::new(python);
        cmd.arg(root().join("tests/python/otlp_receiver.py")).arg(&out).args(flags);
        let (proc, line) = spawn_reading_first_line(cmd, &dir.join("receiver.log"));
        let port = line.strip_prefix("listening on ").expect("the receiver's first line").to_string();
        Receiver { _proc: proc, port, out }
    }

    /// The entries written whole: a line the receiver is still writing (no newline yet) is
    /// read on a later look.
    fn entries(&self) -> Vec<Value> {
        let text = std::fs::read_to_string(&self.out).unwrap_or_default();
        let whole = text.rfind('\n').map_or("", |end| &text[..end]);
        whole.lines().map(|l| serde_json::from_str(l).expect("a JSON line")).collect()
    }

    /// Every span received, each with its trace id and the resource's attributes.
    fn spans(&self) -> Vec<Value> {
        let mut spans = Vec::new();
        for e in self.entries() {
            let Some(export) = e.get("export") else { continue };
            for rs in export["resourceSpans"].as_array().unwrap() {
                for ss in rs["scopeSpans"].as_array().unwrap() {
                    assert_eq!(ss["scope"]["name"], "tollgate");
                    for s in ss["spans"].as_array().unwrap() {
                        let mut s = s.clone();
                        s["resource"] = rs["resource"].clone();
                        spans.push(s);
                    }
                }
            }
        }
        spans
    }

    /// The spans of the trace whose root has `request_id`, once they all arrived.
    fn trace_of(&self, request_id: &str) -> Vec<Value> {
        let mut found = Vec::new();
        let arrived = eventually(Duration::from_secs(15), || {
            let spans = self.spans();
            let Some(root) = spans.iter().find(|s| attr(s, "tollgate.request_id").as_deref() == Some(request_id))
            else {
                return false;
            };
            let trace = root["traceId"].as_str().unwrap().to_string();
            found = spans.into_iter().filter(|s| s["traceId"] == trace.as_str()).collect();
            // The trace is sent whole, once: its settle is the last thing a call does.
            found.iter().any(|s| s["name"] == "settle")
        });
        assert!(arrived, "no whole trace for {request_id}; received: {:#?}", self.entries());
        found
    }
}

fn attr(span: &Value, key: &str) -> Option<String> {
    let kv = span["attributes"].as_array()?.iter().find(|kv| kv["key"] == key)?;
    let v = &kv["value"];
    v.get("stringValue")
        .and_then(Value::as_str)
        .map(str::to_string)
        .or_else(|| v.get("intValue").map(|n| n.as_str().map_or_else(|| n.to_string(), str::to_string)))
        .or_else(|| v.get("boolValue").map(Value::to_string))
}

fn names(spans: &[Value]) -> Vec<String> {
    spans.iter().map(|s| s["name"].as_str().unwrap().to_string()).collect()
}

fn traced_gateway(name: &str, mock: &Mock, receiver: &Receiver) -> Gateway {
    let main = channel("main", "openai", &mock.url(), &["gpt-4o-mini", "mapped"], &[UPSTREAM_KEY]);
    let settings = format!(
        "{}{main}[channel.model_map]\nmapped = \"gpt-4o-mini\"\n[tracing]\notlp_endpoint = \"http://127.0.0.1:{}/v1/traces\"\nservice_name = \"tollgate-e2e\"\n\
         otlp_headers = {{ \"x-receiver-token\" = \"receiver-secret\" }}\n",
        pricing_setting(PRICES),
        receiver.port
    );
    Gateway::start(name, &[("openai", "openai.wasm")], &settings)
}

#[test]
fn a_call_is_traced_from_auth_to_settle_and_no_span_carries_a_secret() {
    let Some(python) = python_with("import opentelemetry.proto", "opentelemetry-proto") else { return };
    let receiver = Receiver::start("otlp-receiver", &python, &[]);
    let mock = Mock::start();
    let gw = traced_gateway("traced", &mock, &receiver);

    // A whole answer.
    let r = gw.chat(&gw.key, "gpt-4o-mini", "");
    assert_eq!(r.status, 200, "{}", r.text());
    let id = r.header("x-request-id").expect("a request id").to_string();
    let spans = receiver.trace_of(&id);
    let root = &spans[0];
    assert_eq!(root["name"], "POST /v1/chat/completions");
    assert_eq!(root["kind"], "SPAN_KIND_SERVER");
    assert!(root.get("parentSpanId").is_none_or(|p| p == ""), "a request without traceparent starts a trace");
    for (key, want) in [
        ("http.request.method", "POST"),
        ("url.path", "/v1/chat/completions"),
        ("http.response.status_code", "200"),
        ("tollgate.model", "gpt-4o-mini"),
        ("tollgate.channel", "main"),
        ("tollgate.plugin", "openai"),
    ] {
        assert_eq!(attr(root, key).as_deref(), Some(want), "{key} of {root:#}");
    }
    let charged: i64 = attr(root, "tollgate.charge_micros").expect("the charge").parse().unwrap();
    assert!(charged > 0, "a billed call's charge: {root:#}");
    let resource = &root["resource"]["attributes"];
    assert!(resource
        .as_array()
        .unwrap()
        .iter()
        .any(|kv| kv["key"] == "service.name" && kv["value"]["stringValue"] == "tollgate-e2e"));
    let children = &spans[1..];
    for s in children {
        assert_eq!(s["parentSpanId"], root["spanId"], "every span is the root's child: {s:#}");
        let (start, end): (u64, u64) = (
            s["startTimeUnixNano"].as_str().unwrap().parse().unwrap(),
            s["endTimeUnixNano"].as_str().unwrap().parse().unwrap(),
        );
        let (r0, r1): (u64, u64) = (
            root["startTimeUnixNano"].as_str().unwrap().parse().unwrap(),
            root["endTimeUnixNano"].as_str().unwrap().parse().unwrap(),
        );
        assert!(r0 <= start && start <= end && end <= r1, "within the root: {s:#}");
    }
    // A whole answer to a model the channel does not map is forwarded by the host: its
    // plugin is never entered, and the upstream span says so.
    let got = names(children);
    assert_eq!(got, ["auth", "reserve", "upstream", "settle"], "a forwarded call's spans");
    let upstream = children.iter().find(|s| s["name"] == "upstream").unwrap();
    assert_eq!(upstream["kind"], "SPAN_KIND_CLIENT");
    assert_eq!(attr(upstream, "http.response.status_code").as_deref(), Some("200"));
    assert_eq!(attr(upstream, "url.path").as_deref(), Some("/v1/chat/completions"));
    assert_eq!(attr(upstream, "tollgate.forwarded").as_deref(), Some("true"), "{upstream:#}");
    assert!(attr(upstream, "server.address").is_some(), "{upstream:#}");

    // A model the channel maps goes through the plugin: its steps, in order, and the vendor's
    // call between them.
    let r = gw.chat(&gw.key, "mapped", "");
    assert_eq!(r.status, 200, "{}", r.text());
    let spans = receiver.trace_of(r.header("x-request-id").unwrap());
    let got = names(&spans[1..]);
    assert_eq!(
        got,
        ["auth", "reserve", "plugin.start", "plugin.first", "upstream", "plugin.next", "settle"],
        "a call through its plugin"
    );
    let upstream = spans.iter().find(|s| s["name"] == "upstream").unwrap();
    assert!(attr(upstream, "tollgate.forwarded").is_none(), "{upstream:#}");

    // A stream: its own span and the settle after it; forwarded by the host, or through the
    // plugin (its steps, the last one in the stream) for a mapped model.
    for (model, steps) in [
        ("gpt-4o-mini", &["auth", "reserve", "upstream", "stream", "settle"][..]),
        (
            "mapped",
            &["auth", "reserve", "plugin.start", "plugin.first", "upstream", "plugin.finish", "stream", "settle"],
        ),
    ] {
        let r = gw.chat(&gw.key, model, r#","stream":true"#);
        assert_eq!(r.status, 200);
        let spans = receiver.trace_of(r.header("x-request-id").unwrap());
        assert_eq!(names(&spans[1..]), steps, "a stream of {model}");
        let upstream = spans.iter().find(|s| s["name"] == "upstream").unwrap();
        assert_eq!(attr(upstream, "tollgate.forwarded").is_some(), model == "gpt-4o-mini", "{upstream:#}");
    }
    let r = gw.chat(&gw.key, "gpt-4o-mini", r#","stream":true"#);
    let spans = receiver.trace_of(r.header("x-request-id").unwrap());
    let got = names(&spans[1..]);
    let stream = spans.iter().find(|s| s["name"] == "stream").unwrap();
    assert!(attr(stream, "tollgate.events").is_some_and(|n| n.parse::<u64>().unwrap() > 0), "{stream:#}");
    assert!(got.iter().position(|n| n == "stream") < got.iter().position(|n| n == "settle"), "{got:?}");

    // The caller's trace is followed: same trace id, the caller's span as the root's parent.
    let caller = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
    let body = r#"{"model":"gpt-4o-mini","messages":[{"role":"user","content":"prompt-text-never-traced"}]}"#;
    let r = http::request(
        &gw.addr,
        "POST",
        "/v1/chat/completions",
        &[("authorization", &format!("Bearer {}", gw.key)), ("traceparent", caller)],
        body.as_bytes(),
    );
    assert_eq!(r.status, 200);
    let spans = receiver.trace_of(r.header("x-request-id").unwrap());
    assert_eq!(spans[0]["traceId"], "0af7651916cd43dd8448eb211c80319c");
    assert_eq!(spans[0]["parentSpanId"], "b7ad6b7169203331");

    // A refused call: its root says so, and the failing span carries the error.
    let r = gw.chat("sk-tg-not-a-key", "gpt-4o-mini", "");
    assert_eq!(r.status, 401);
    let refused = eventually(Duration::from_secs(15), || {
        receiver.spans().iter().any(|s| s["name"] == "auth" && s["status"]["code"] == "STATUS_CODE_ERROR")
            && receiver.spans().iter().any(|s| attr(s, "http.response.status_code").as_deref() == Some("401"))
    });
    assert!(refused, "the refused call's spans: {:#?}", receiver.spans());

    // Nothing secret left the gateway: not the consumer's key, not the upstream key, not the
    // prompt; and the receiver's own header was sent.
    let entries = receiver.entries();
    assert!(entries.iter().all(|e| e.get("refused").is_none()), "the receiver refused an export: {entries:#?}");
    for e in &entries {
        let raw = hex_text(e["raw_hex"].as_str().unwrap());
        for secret in [gw.key.as_str(), UPSTREAM_KEY, "sk-tg-not-a-key", "prompt-text-never-traced"] {
            assert!(!raw.contains(secret), "an export carries {secret}");
        }
        assert_eq!(e["headers"]["x-receiver-token"], "receiver-secret");
    }
    let metrics = http::request(&gw.addr, "GET", "/metrics", &[], b"").text();
    assert!(metrics.contains("tollgate_traces_exported_total"), "{metrics}");
}

#[test]
fn a_receiver_that_is_briefly_down_gets_the_batch_again() {
    let Some(python) = python_with("import opentelemetry.proto", "opentelemetry-proto") else { return };
    let receiver = Receiver::start("otlp-receiver-down", &python, &["--fail-first", "1"]);
    let mock = Mock::start();
    let gw = traced_gateway("traced-retry", &mock, &receiver);
    let r = gw.chat(&gw.key, "gpt-4o-mini", "");
    assert_eq!(r.status, 200);
    let spans = receiver.trace_of(r.header("x-request-id").unwrap());
    assert!(spans.len() > 3);
    let entries = receiver.entries();
    assert_eq!(entries[0]["answered"], 503, "{entries:#?}");
    assert!(entries.iter().skip(1).any(|e| e.get("export").is_some()));
}

fn hex_text(hex: &str) -> String {
    let bytes: Vec<u8> = (0..hex.len()).step_by(2).map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap()).collect();
    String::from_utf8_lossy(&bytes).into_owned()
}
