//! `CallError`: how a call fails, with what the consumer is told (OpenAI's error object, which
//! every surface renders in its own shape) and what the vendor may have done with the request
//! (`VendorWork`), which decides whether the call is billed and whether it may be resent.
//!
//! Invariants: a constructor never says the vendor did work (`VendorWork::None`); only the
//! exchange, which knows what was sent, raises it (`after`, `at_least`), and `at_least` never
//! lowers it. A plugin's failure is logged with its cause where it becomes a `CallError`
//! (`plugin_failure`) and told to the consumer as 502 `plugin_error`, or 503 `overloaded` when
//! no instance was free.

use crate::plugin::{wit, Plugin};

/// A failed call, with what the consumer is told.
#[derive(Debug, Clone)]
pub struct CallError {
    pub status: u16,
    /// OpenAI's error `type`.
    pub kind: &'static str,
    /// OpenAI's error `code`.
    pub code: String,
    pub message: String,
    /// The plugin's classification, when the failure came from the upstream.
    pub class: Option<wit::ErrorKind>,
    /// The upstream's retry-after, for rate limits.
    pub retry_after_ms: Option<u64>,
    /// OpenAI's error `param`: the request field at fault.
    pub param: Option<&'static str>,
    /// What the vendor may have done with the request before the call failed.
    pub work: VendorWork,
}

/// What the vendor may have done with a call that failed: decides whether the call may be
/// resent on another key and whether it is billed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub enum VendorWork {
    /// Nothing: the request never reached it, or it refused the request. Free; may be resent.
    #[default]
    None,
    /// Maybe: the request was sent and no answer came (a timeout, a connection lost). The
    /// vendor received it, so it is billed (its reservation, marked estimated), and never
    /// resent: a consumer must not be able to make the operator pay twice.
    Unknown,
    /// It answered 2xx, and the answer could not be used. Billed (by the reservation, marked
    /// estimated), never resent.
    Done,
}

impl CallError {
    pub fn new(status: u16, kind: &'static str, code: &str, message: impl Into<String>) -> Self {
        CallError {
            status,
            kind,
            code: code.into(),
            message: message.into(),
            class: None,
            retry_after_ms: None,
            param: None,
            work: VendorWork::None,
        }
    }
    pub fn plugin(message: impl Into<String>) -> Self {
        CallError::new(502, "upstream_error", "plugin_error", message)
    }
    pub fn config(message: impl Into<String>) -> Self {
        CallError::new(503, "server_error", "channel_misconfigured", message)
    }
    pub fn bad_request(message: impl Into<String>) -> Self {
        CallError::new(400, "invalid_request_error", "invalid_request", message)
    }
    /// A body spelling `field`, which the host reads, another way (`key`; `json_keys`): a vendor
    /// matching keys without regard to case might run that copy.
    pub fn ambiguous_field(key: &str, field: &'static str) -> Self {
        CallError {
            param: Some(field),
            ..CallError::new(
                400,
                "invalid_request_error",
                "ambiguous_field",
                format!("'{key}' is the field '{field}' spelled otherwise, which some vendors read as '{field}'; write it '{field}', once."),
            )
        }
    }
    /// A body that should be JSON and is not (`reason`: the parser's words, with where).
    pub fn invalid_json(reason: impl std::fmt::Display) -> Self {
        CallError::new(
            400,
            "invalid_request_error",
            "invalid_json",
            format!("We could not parse the JSON body of your request: {reason}"),
        )
    }
    pub fn unsupported(message: impl Into<String>) -> Self {
        CallError::new(400, "invalid_request_error", "unsupported_operation", message)
    }
    /// The consumer-facing error for a classified upstream failure.
    pub fn upstream(class: wit::ErrorKind, message: impl Into<String>) -> Self {
        use wit::ErrorKind as K;
        let (status, kind, code) = match class {
            K::BadRequest => (400, "invalid_request_error", "upstream_bad_request"),
            K::Unauthorized => (502, "upstream_error", "upstream_unauthorized"),
            K::Forbidden => (403, "permission_error", "upstream_forbidden"),
            K::InsufficientBalance => (503, "upstream_error", "upstream_insufficient_balance"),
            K::RateLimited => (429, "rate_limit_error", "upstream_rate_limited"),
            K::NotFound => (404, "invalid_request_error", "upstream_not_found"),
            K::ContentFiltered => (400, "invalid_request_error", "content_filtered"),
            K::UpstreamFault => (502, "upstream_error", "upstream_error"),
            K::Timeout => (504, "upstream_error", "upstream_timeout"),
            K::Unsupported => (400, "invalid_request_error", "unsupported_operation"),
        };
        CallError { class: Some(class), ..CallError::new(status, kind, code, message) }
    }
    pub fn from_adapter(e: &wit::AdapterError) -> Self {
        CallError { retry_after_ms: e.retry_after_ms, ..CallError::upstream(e.kind, e.message.clone()) }
    }
    /// OpenAI's error object for this error (what every surface shows, and what a stream's
    /// final `error` event carries).
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({ "error": { "message": self.message, "type": self.kind, "param": self.param, "code": self.code } })
    }

    /// The same error, after the vendor did `work`.
    pub fn after(self, work: VendorWork) -> Self {
        CallError { work, ..self }
    }
    /// The same error, with at least `work` done (what earlier steps got done stays done).
    pub fn at_least(self, work: VendorWork) -> Self {
        let work = self.work.max(work);
        CallError { work, ..self }
    }
}

/// A plugin that trapped, ran out of time or memory: logged with its cause, 502 for the consumer.
pub(crate) fn plugin_failure(plugin: &Plugin, during: &str, e: anyhow::Error) -> CallError {
    let detail = format!("{e:#}");
    let cause = if detail.contains("wall-clock deadline") {
        "exceeded its wall-clock deadline"
    } else if detail.contains("time limit") {
        "exceeded its time limit"
    } else if detail.contains("memory") || detail.contains("grow") {
        "exceeded its memory limit"
    } else if detail.contains("pooling") || detail.contains("instance count") || detail.contains("concurrent") {
        return CallError::new(503, "server_error", "overloaded", "too many calls in flight; retry shortly");
    } else {
        "trapped"
    };
    crate::telemetry::METRICS.plugin_failures.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    tracing::error!(plugin = plugin.name(), version = %plugin.manifest.version, during, error = %detail, "plugin failed");
    CallError::plugin(format!("plugin '{}' {cause} during {during}", plugin.name()))
}

/// The innermost cause of `e` (what a failed connection's logs need: "invalid peer
/// certificate: UnknownIssuer", "Connection refused", not "client error (Connect)").
pub(crate) fn root_cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut e = e;
    while let Some(s) = e.source() {
        e = s;
    }
    e.to_string()
}
