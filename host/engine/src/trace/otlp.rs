//! The export of finished traces to an OpenTelemetry receiver: OTLP/HTTP with protobuf
//! bodies (`POST <endpoint>`, `Content-Type: application/x-protobuf`), the encoding every
//! collector accepts.
//!
//! Invariants:
//! - one task exports; it takes traces from a bounded queue in batches (`MAX_BATCH` traces, or
//!   what came within `FLUSH_EVERY` of the batch's first) and sends one request at a time, so
//!   a slow receiver costs a bounded queue and never a call's time;
//! - a batch the receiver refused or did not take is retried once when OTLP says it may be
//!   (429, 502, 503, 504, no answer), then dropped and counted; the task never stops on a
//!   receiver's failure and warns about it at most once a minute;
//! - it ends when every sender is gone (the gateway stopped), after sending what it holds.

use super::{Finished, Kind, Tracer, Value};
use crate::exchange::Trust;
use crate::telemetry::METRICS;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::TokioExecutor;
use prost::Message;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;
use tokio::sync::mpsc;

/// Traces waiting for the exporter; beyond, traces are dropped (and counted).
const QUEUE: usize = 4096;
/// The most traces one export request carries.
const MAX_BATCH: usize = 512;
/// How long the first trace of a batch waits for company.
const FLUSH_EVERY: Duration = Duration::from_millis(500);
/// One export request's limit, connection included.
const TIMEOUT: Duration = Duration::from_secs(10);

/// Where and how traces are exported.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The receiver's traces URL, e.g. `http://127.0.0.1:4318/v1/traces`.
    pub endpoint: http::Uri,
    /// Headers every export carries (a receiver's API key).
    pub headers: Vec<(http::HeaderName, http::HeaderValue)>,
    /// The resource's `service.name`.
    pub service_name: String,
    /// The share of requests traced (0 to 1); a caller's sampled `traceparent` is always followed.
    pub sample_ratio: f64,
}

/// Starts the exporter (an https receiver's certificate must chain to `trust`); the tracer is
/// the gateway's, the future runs until it is dropped.
pub fn start(settings: Settings, trust: Trust) -> (Tracer, impl std::future::Future<Output = ()> + Send + 'static) {
    let (tx, rx) = mpsc::channel(QUEUE);
    (Tracer::new(tx, settings.sample_ratio), run(rx, settings, trust))
}

async fn run(mut rx: mpsc::Receiver<Finished>, settings: Settings, trust: Trust) {
    let mut http = HttpConnector::new();
    http.enforce_http(false);
    http.set_connect_timeout(Some(TIMEOUT));
    let https = trust.https().https_or_http().enable_http1().wrap_connector(http);
    let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new()).build(https);
    let resource = resource(&settings.service_name);
    let mut last_warning: Option<tokio::time::Instant> = None;
    while let Some(first) = rx.recv().await {
        let mut batch = vec![first];
        let deadline = tokio::time::Instant::now() + FLUSH_EVERY;
        while batch.len() < MAX_BATCH {
            tokio::select! {
                next = rx.recv() => match next {
                    Some(t) => batch.push(t),
                    None => break,
                },
                _ = tokio::time::sleep_until(deadline) => break,
            }
        }
        let body = Bytes::from(encode(&resource, &batch));
        let mut outcome = send(&client, &settings, body.clone()).await;
        if matches!(outcome, Err(Failure::Retryable(_))) {
            tokio::time::sleep(Duration::from_secs(1)).await;
            outcome = send(&client, &settings, body).await;
        }
        match outcome {
            Ok(()) => {
                METRICS.traces_exported.fetch_add(batch.len() as u64, Relaxed);
            }
            Err(Failure::Retryable(why) | Failure::Refused(why)) => {
                METRICS.traces_dropped.fetch_add(batch.len() as u64, Relaxed);
                let now = tokio::time::Instant::now();
                if last_warning.is_none_or(|t| now.duration_since(t) >= Duration::from_secs(60)) {
                    last_warning = Some(now);
                    tracing::warn!(endpoint = %settings.endpoint, traces = batch.len(), error = %why, "the OTLP receiver did not take a batch of traces; dropped");
                }
            }
        }
    }
}

enum Failure {
    /// OTLP says the same request may be sent again.
    Retryable(String),
    Refused(String),
}

async fn send(
    client: &Client<hyper_rustls::HttpsConnector<HttpConnector>, Full<Bytes>>,
    settings: &Settings,
    body: Bytes,
) -> Result<(), Failure> {
    let mut req = http::Request::post(settings.endpoint.clone())
        .header(http::header::CONTENT_TYPE, "application/x-protobuf")
        .body(Full::new(body))
        .map_err(|e| Failure::Refused(e.to_string()))?;
    for (k, v) in &settings.headers {
        req.headers_mut().insert(k.clone(), v.clone());
    }
    let exchange = async {
        let resp = client.request(req).await.map_err(|e| Failure::Retryable(format!("no answer: {e}")))?;
        let status = resp.status().as_u16();
        // The answer is read (bounded) so that the connection is kept for the next batch.
        let body = http_body_util::Limited::new(resp.into_body(), 64 << 10).collect().await;
        match status {
            200..=299 => Ok(()),
            429 | 502 | 503 | 504 => Err(Failure::Retryable(format!("HTTP {status}"))),
            _ => {
                let detail = body.map(|b| String::from_utf8_lossy(&b.to_bytes()).chars().take(200).collect::<String>());
                Err(Failure::Refused(format!("HTTP {status} {}", detail.unwrap_or_default())))
            }
        }
    };
    tokio::time::timeout(TIMEOUT, exchange).await.unwrap_or_else(|_| Err(Failure::Retryable("timed out".into())))
}

fn resource(service_name: &str) -> pb::Resource {
    let instance: [u8; 8] = rand::random();
    pb::Resource {
        attributes: vec![
            kv("service.name", &Value::Str(service_name.to_string())),
            kv("service.version", &Value::Str(env!("CARGO_PKG_VERSION").to_string())),
            kv("service.instance.id", &Value::Str(hex::encode(instance))),
        ],
        dropped_attributes_count: 0,
    }
}

/// One `ExportTraceServiceRequest` for a batch of traces.
fn encode(resource: &pb::Resource, batch: &[Finished]) -> Vec<u8> {
    let spans = batch
        .iter()
        .flat_map(|t| {
            t.spans.iter().map(|s| pb::Span {
                trace_id: t.trace_id.to_vec(),
                span_id: s.span_id.to_vec(),
                trace_state: String::new(),
                parent_span_id: s.parent_id.map(|p| p.to_vec()).unwrap_or_default(),
                name: s.name.clone(),
                kind: match s.kind {
                    Kind::Internal => 1,
                    Kind::Server => 2,
                    Kind::Client => 3,
                },
                start_time_unix_nano: s.start_unix_nanos,
                end_time_unix_nano: s.end_unix_nanos,
                attributes: s.attrs.iter().map(|(k, v)| kv(k, v)).collect(),
                status: Some(match &s.error {
                    Some(message) => pb::Status { message: message.clone(), code: 2 },
                    None => pb::Status { message: String::new(), code: 0 },
                }),
            })
        })
        .collect();
    pb::ExportTraceServiceRequest {
        resource_spans: vec![pb::ResourceSpans {
            resource: Some(resource.clone()),
            scope_spans: vec![pb::ScopeSpans {
                scope: Some(pb::InstrumentationScope {
                    name: "tollgate".into(),
                    version: env!("CARGO_PKG_VERSION").into(),
                }),
                spans,
            }],
        }],
    }
    .encode_to_vec()
}

fn kv(key: &str, value: &Value) -> pb::KeyValue {
    let value = match value {
        Value::Str(s) => pb::any_value::Value::Str(s.clone()),
        Value::Int(n) => pb::any_value::Value::Int(*n),
        Value::Bool(b) => pb::any_value::Value::Bool(*b),
    };
    pb::KeyValue { key: key.to_string(), value: Some(pb::AnyValue { value: Some(value) }) }
}

/// The messages of OTLP's `trace/v1/trace.proto`, `common/v1/common.proto`,
/// `resource/v1/resource.proto` and `collector/trace/v1/trace_service.proto` that the export
/// uses, with their field numbers (fields the gateway never sets are left out: a reader skips
/// what is absent).
mod pb {
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct ExportTraceServiceRequest {
        #[prost(message, repeated, tag = "1")]
        pub resource_spans: Vec<ResourceSpans>,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct ResourceSpans {
        #[prost(message, optional, tag = "1")]
        pub resource: Option<Resource>,
        #[prost(message, repeated, tag = "2")]
        pub scope_spans: Vec<ScopeSpans>,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Resource {
        #[prost(message, repeated, tag = "1")]
        pub attributes: Vec<KeyValue>,
        #[prost(uint32, tag = "2")]
        pub dropped_attributes_count: u32,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct ScopeSpans {
        #[prost(message, optional, tag = "1")]
        pub scope: Option<InstrumentationScope>,
        #[prost(message, repeated, tag = "2")]
        pub spans: Vec<Span>,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct InstrumentationScope {
        #[prost(string, tag = "1")]
        pub name: String,
        #[prost(string, tag = "2")]
        pub version: String,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Span {
        #[prost(bytes = "vec", tag = "1")]
        pub trace_id: Vec<u8>,
        #[prost(bytes = "vec", tag = "2")]
        pub span_id: Vec<u8>,
        #[prost(string, tag = "3")]
        pub trace_state: String,
        #[prost(bytes = "vec", tag = "4")]
        pub parent_span_id: Vec<u8>,
        #[prost(string, tag = "5")]
        pub name: String,
        /// `SpanKind`: 1 internal, 2 server, 3 client.
        #[prost(int32, tag = "6")]
        pub kind: i32,
        #[prost(fixed64, tag = "7")]
        pub start_time_unix_nano: u64,
        #[prost(fixed64, tag = "8")]
        pub end_time_unix_nano: u64,
        #[prost(message, repeated, tag = "9")]
        pub attributes: Vec<KeyValue>,
        #[prost(message, optional, tag = "15")]
        pub status: Option<Status>,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Status {
        #[prost(string, tag = "2")]
        pub message: String,
        /// `StatusCode`: 0 unset, 1 ok, 2 error.
        #[prost(int32, tag = "3")]
        pub code: i32,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct KeyValue {
        #[prost(string, tag = "1")]
        pub key: String,
        #[prost(message, optional, tag = "2")]
        pub value: Option<AnyValue>,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct AnyValue {
        #[prost(oneof = "any_value::Value", tags = "1, 2, 3")]
        pub value: Option<any_value::Value>,
    }
    pub mod any_value {
        /// `string_value`, `bool_value`, `int_value` (the names are not on the wire).
        #[derive(Clone, PartialEq, prost::Oneof)]
        pub enum Value {
            #[prost(string, tag = "1")]
            Str(String),
            #[prost(bool, tag = "2")]
            Bool(bool),
            #[prost(int64, tag = "3")]
            Int(i64),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_batch_encodes_its_spans_under_one_resource_with_their_ids_and_status() {
        let trace = Finished {
            trace_id: [7; 16],
            spans: vec![
                super::super::SpanData {
                    span_id: [1; 8],
                    parent_id: None,
                    name: "POST /v1/chat/completions".into(),
                    kind: Kind::Server,
                    start_unix_nanos: 10,
                    end_unix_nanos: 30,
                    attrs: vec![("http.response.status_code", Value::Int(200))],
                    error: None,
                },
                super::super::SpanData {
                    span_id: [2; 8],
                    parent_id: Some([1; 8]),
                    name: "upstream".into(),
                    kind: Kind::Client,
                    start_unix_nanos: 12,
                    end_unix_nanos: 20,
                    attrs: vec![("server.address", Value::Str("127.0.0.1".into()))],
                    error: Some("upstream_timeout".into()),
                },
            ],
        };
        let bytes = encode(&resource("tollgate-test"), &[trace]);
        let back = pb::ExportTraceServiceRequest::decode(&bytes[..]).unwrap();
        let rs = &back.resource_spans[0];
        assert_eq!(rs.resource.as_ref().unwrap().attributes[0].key, "service.name");
        let spans = &rs.scope_spans[0].spans;
        assert_eq!(spans.len(), 2);
        assert_eq!((spans[0].kind, spans[0].parent_span_id.len(), spans[0].trace_id.clone()), (2, 0, vec![7; 16]));
        assert_eq!((spans[1].kind, spans[1].parent_span_id.clone()), (3, vec![1; 8]));
        assert_eq!(spans[1].status.as_ref().map(|s| (s.code, s.message.as_str())), Some((2, "upstream_timeout")));
        assert_eq!(spans[0].status.as_ref().map(|s| s.code), Some(0));
    }
}
