//! Conveniences on the generated contract types: constructors and small helpers that keep
//! plugin code short. Nothing here changes what crosses the boundary.

use crate::{
    AdapterError, Auth, Body, ErrorKind, Field, Header, Manifest, Operation, PartValue, Reply, Route, Step,
    StreamRequest, StreamTail, UpstreamRequest, Usage,
};

#[allow(clippy::derivable_impls)] // generated type: it cannot derive
impl Default for Usage {
    fn default() -> Self {
        Usage {
            input_tokens: None,
            output_tokens: None,
            cached_tokens: None,
            cache_write_tokens: None,
            characters: None,
            milliseconds: None,
            images: None,
            extra: Vec::new(),
        }
    }
}

impl Usage {
    /// True when the vendor reported no unit at all.
    pub fn is_empty(&self) -> bool {
        *self == Usage::default()
    }
}

impl PartialEq for Usage {
    fn eq(&self, o: &Self) -> bool {
        self.input_tokens == o.input_tokens
            && self.output_tokens == o.output_tokens
            && self.cached_tokens == o.cached_tokens
            && self.cache_write_tokens == o.cache_write_tokens
            && self.characters == o.characters
            && self.milliseconds == o.milliseconds
            && self.images == o.images
            && self.extra == o.extra
    }
}

impl AdapterError {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        AdapterError { kind, message: message.into(), code: None, retry_after_ms: None }
    }
    pub fn with_code(mut self, code: impl Into<String>) -> Self {
        self.code = Some(code.into());
        self
    }
}

impl Header {
    pub fn new(name: impl Into<String>, value: impl Into<String>) -> Self {
        Header { name: name.into(), value: value.into() }
    }
}

/// The value of the first header called `name` (ASCII case-insensitive).
pub fn header<'a>(headers: &'a [Header], name: &str) -> Option<&'a str> {
    headers.iter().find(|h| h.name.eq_ignore_ascii_case(name)).map(|h| h.value.as_str())
}

impl Body {
    /// A top-level field of a JSON object body (a string, or a number or boolean as written),
    /// or a text part of a form: OpenAI's APIs take both shapes (the `openai` SDK sends
    /// `POST /v1/videos` as a form, curl users send JSON). `None` when absent or not text.
    pub fn field(&self, name: &str) -> Option<String> {
        match self {
            Body::Form(parts) => parts.iter().find(|p| p.name == name).and_then(|p| match &p.value {
                PartValue::Text(t) => Some(t.clone()),
                _ => None,
            }),
            _ => {
                let v: serde_json::Value = serde_json::from_slice(self.as_bytes()?).ok()?;
                match v.get(name)? {
                    serde_json::Value::String(s) => Some(s.clone()),
                    v @ (serde_json::Value::Number(_) | serde_json::Value::Bool(_)) => Some(v.to_string()),
                    _ => None,
                }
            }
        }
    }

    /// The request's top-level fields as a JSON object: a JSON body's, or a form's text
    /// fields (as strings). A form with a file is refused with `file_refusal` (what the vendor
    /// takes instead), as is a body that is not a JSON object.
    pub fn object(&self, file_refusal: &str) -> Result<serde_json::Map<String, serde_json::Value>, AdapterError> {
        let bad = |m: &str| AdapterError::new(crate::ErrorKind::BadRequest, m.to_string());
        match self {
            Body::Text(t) => match serde_json::from_str(t) {
                Ok(serde_json::Value::Object(o)) => Ok(o),
                _ => Err(bad("the request body is not a JSON object")),
            },
            Body::Form(parts) => parts
                .iter()
                .map(|p| match &p.value {
                    PartValue::Text(t) => Ok((p.name.clone(), serde_json::Value::String(t.clone()))),
                    _ => Err(bad(file_refusal)),
                })
                .collect(),
            _ => Err(bad("the request has no body")),
        }
    }

    /// The body as bytes; `None` for bodies the host completes (`client-body`, `form`,
    /// `text-with-files`).
    pub fn as_bytes(&self) -> Option<&[u8]> {
        match self {
            Body::Empty => Some(&[]),
            Body::Text(s) => Some(s.as_bytes()),
            Body::Bytes(b) => Some(b),
            Body::ClientBody | Body::Form(_) | Body::TextWithFiles(_) => None,
        }
    }
}

/// Refuses a JSON object whose keys a vendor might read otherwise than the plugin does: a key
/// that is not ASCII, two keys equal but for case, or a key equal but for case to one the
/// plugin reads (`read`: the fields that price or route the call) without being it. Vendors
/// whose JSON decoders match keys case-insensitively (Go's does, with Unicode folds) would
/// otherwise render `"Resolution":"1080P"` while the plugin quoted the default, or act on a
/// `"File_Id"` the host never checked.
pub fn exact_fields(fields: &serde_json::Map<String, serde_json::Value>, read: &[&str]) -> Result<(), AdapterError> {
    let bad = |m: String| AdapterError::new(crate::ErrorKind::BadRequest, m);
    let mut seen = std::collections::HashSet::with_capacity(fields.len());
    for key in fields.keys() {
        if !key.is_ascii() {
            return Err(bad(format!("'{key}' is not a field name this vendor takes")));
        }
        let folded = key.to_ascii_lowercase();
        if let Some(r) = read.iter().find(|r| r.eq_ignore_ascii_case(key) && **r != key) {
            return Err(bad(format!("'{key}' must be written '{r}'")));
        }
        if !seen.insert(folded) {
            return Err(bad(format!("'{key}' is given twice (in different cases); give it once")));
        }
    }
    Ok(())
}

impl UpstreamRequest {
    /// A JSON POST with the channel's key as a bearer token.
    pub fn post_json(path: impl Into<String>, json: String) -> Self {
        UpstreamRequest {
            method: "POST".into(),
            path: path.into(),
            headers: vec![Header::new("content-type", "application/json")],
            body: Body::Text(json),
            auth: Auth::Bearer,
            timeout_ms: None,
            key: 0,
        }
    }
    /// A GET with the channel's key as a bearer token.
    pub fn get(path: impl Into<String>) -> Self {
        UpstreamRequest {
            method: "GET".into(),
            path: path.into(),
            headers: Vec::new(),
            body: Body::Empty,
            auth: Auth::Bearer,
            timeout_ms: None,
            key: 0,
        }
    }
    pub fn with_auth(mut self, auth: Auth) -> Self {
        self.auth = auth;
        self
    }
    pub fn with_header(mut self, name: &str, value: impl Into<String>) -> Self {
        self.headers.push(Header::new(name, value));
        self
    }
    /// Sent on the key of `call.owned[key]` (a call listing the consumer's objects).
    pub fn on_key(mut self, key: u32) -> Self {
        self.key = key;
        self
    }
}

/// RFC 3986 percent-encoding: only `A–Z a–z 0–9 - _ . ~` stay (and `/` when `keep_slash`);
/// for ids put into a path or query, and for signatures' canonical requests.
pub fn percent_encode(s: &str, keep_slash: bool) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') || (keep_slash && b == b'/') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

impl Reply {
    /// The upstream's answer as it is: status, content type (JSON when it names none) and
    /// body; what native routes relay.
    pub fn verbatim(response: crate::UpstreamResponse) -> Self {
        let content_type = header(&response.headers, "content-type").unwrap_or("application/json").to_string();
        Reply::with_body(response.status, &content_type, Body::Bytes(response.body), crate::Usage::default())
    }
    /// A 200 JSON reply.
    pub fn json(json: String, usage: Usage) -> Self {
        Reply::with_body(200, "application/json", Body::Text(json), usage)
    }
    pub fn with_body(status: u16, content_type: &str, body: Body, usage: Usage) -> Self {
        Reply {
            status,
            headers: vec![Header::new("content-type", content_type)],
            body,
            usage,
            error: None,
            objects: Vec::new(),
            speech: None,
        }
    }
}

impl Step {
    /// Fail the call with a classified error.
    pub fn fail(kind: ErrorKind, message: impl Into<String>) -> Step {
        Step::Fail(AdapterError::new(kind, message))
    }
    /// Stream an SSE response to the consumer as `text/event-stream`.
    pub fn stream_sse(request: UpstreamRequest) -> Step {
        Step::Stream(StreamRequest {
            request,
            framing: crate::Framing::Sse,
            reply_headers: vec![
                Header::new("content-type", "text/event-stream"),
                Header::new("cache-control", "no-cache"),
            ],
        })
    }
}

impl StreamTail {
    pub fn new(chunks: Vec<crate::OutChunk>, usage: Usage) -> Self {
        StreamTail { chunks, usage }
    }
}

impl Operation {
    /// An op that is never resent once it may have reached the vendor, reserved from the
    /// request by the host.
    pub fn new(name: &str) -> Self {
        Operation { name: name.into(), resend: false, quoted: false }
    }
    /// A read (a query, a list): may be sent again on another key when a request got no
    /// answer.
    pub fn resend(mut self) -> Self {
        self.resend = true;
        self
    }
    /// The host asks `Exchange::quote` for the units to reserve.
    pub fn quoted(mut self) -> Self {
        self.quoted = true;
        self
    }
}

impl Route {
    /// A billed route whose model is the body's `model` field, without affinity.
    pub fn new(method: &str, path: &str, op: &str) -> Self {
        Route {
            method: method.into(),
            path: path.into(),
            op: op.into(),
            model: Field::Body("model".into()),
            billed: true,
            affinity: Field::None,
        }
    }
    /// Where the model is (`Field::None`: the route has none).
    pub fn model(mut self, field: Field) -> Self {
        self.model = field;
        self
    }
    /// A free route (queries, lists): never priced nor reserved.
    pub fn free(mut self) -> Self {
        self.billed = false;
        self
    }
    /// Where the vendor object the call names is: the call runs on the key that created it.
    pub fn affinity(mut self, field: Field) -> Self {
        self.affinity = field;
        self
    }
}

impl crate::Call {
    /// The model name to send the vendor: the channel's mapped name, else the consumer's.
    pub fn vendor_model(&self) -> &str {
        if self.upstream_model.is_empty() {
            &self.model
        } else {
            &self.upstream_model
        }
    }

    /// A field of the credential of a plugin that signs its requests (`credential-fields`);
    /// `None` when absent or empty.
    pub fn credential_field(&self, name: &str) -> Option<&str> {
        self.credential.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str()).filter(|v| !v.is_empty())
    }
}

impl Manifest {
    /// A manifest with no routes and no credential fields; each op is `Operation::new`.
    pub fn new(name: &str, version: &str, vendor: &str, operations: &[&str]) -> Self {
        Manifest {
            name: name.into(),
            version: version.into(),
            vendor: vendor.into(),
            operations: operations.iter().map(|s| Operation::new(s)).collect(),
            routes: Vec::new(),
            forward_headers: Vec::new(),
            fetch_hosts: Vec::new(),
            credential_fields: Vec::new(),
            default_base_url: None,
        }
    }
    /// Declares an op (replacing one of the same name).
    pub fn with_operation(mut self, op: Operation) -> Self {
        self.operations.retain(|o| o.name != op.name);
        self.operations.push(op);
        self
    }
    /// A billed route whose model is the body's `model` field (see `Route::new`).
    pub fn with_route(self, method: &str, path: &str, op: &str) -> Self {
        self.with(Route::new(method, path, op))
    }
    pub fn with(mut self, route: Route) -> Self {
        self.routes.push(route);
        self
    }
    /// A consumer header the plugin needs (e.g. `anthropic-version`).
    pub fn forwarding(mut self, header: &str) -> Self {
        self.forward_headers.push(header.into());
        self
    }
    /// A host the plugin's outputs are downloaded from (a CDN): a name or `*.domain`. The
    /// operator must allow it too, and a private address only when named by the operator.
    pub fn fetching(mut self, host: &str) -> Self {
        self.fetch_hosts.push(host.into());
        self
    }
    /// A field of the credential the plugin signs requests with (Kling's access and secret
    /// keys): the channel's keys are written `field1|field2|…`, and the channel must set
    /// `allow_signing = true` for the plugin to receive them.
    pub fn with_credential(mut self, field: crate::CredentialField) -> Self {
        self.credential_fields.push(field);
        self
    }
    /// The usual signing pair: `access_key` (shown) and `secret_key` (masked), the channel's
    /// keys written `AccessKey|SecretKey`; `vendor` names them for the operator.
    pub fn with_access_key_pair(self, vendor: &str) -> Self {
        self.with_credential(crate::CredentialField {
            name: "access_key".into(),
            description: format!("{vendor} access key (AK)"),
            secret: false,
            optional: false,
        })
        .with_credential(crate::CredentialField {
            name: "secret_key".into(),
            description: format!("{vendor} secret key (SK), signs each request"),
            secret: true,
            optional: false,
        })
    }
    pub fn with_base_url(mut self, url: &str) -> Self {
        self.default_base_url = Some(url.into());
        self
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn fields_are_taken_only_as_the_plugin_reads_them() {
        let obj = |j: &str| serde_json::from_str::<serde_json::Map<String, serde_json::Value>>(j).unwrap();
        let read = ["resolution", "file_id"];
        assert!(super::exact_fields(&obj(r#"{"resolution":"768P","prompt":"a","callBackUrl":"x"}"#), &read).is_ok());
        for bad in
            [r#"{"Resolution":"1080P"}"#, r#"{"prompt":"a","PROMPT":"b"}"#, r#"{"ſile_id":1}"#, r#"{"FILE_ID":1}"#]
        {
            assert!(super::exact_fields(&obj(bad), &read).is_err(), "{bad}");
        }
    }

    use crate::{Body, FormPart, PartValue};

    #[test]
    fn a_field_reads_the_same_from_json_and_from_a_form() {
        let json = Body::Text(r#"{"seconds":8,"size":"720x1280","hd":true,"meta":{"a":1}}"#.into());
        assert_eq!(json.field("seconds").as_deref(), Some("8"));
        assert_eq!(json.field("size").as_deref(), Some("720x1280"));
        assert_eq!(json.field("hd").as_deref(), Some("true"));
        assert_eq!(json.field("meta"), None);
        assert_eq!(json.field("absent"), None);
        let part =
            |name: &str, value: PartValue| FormPart { name: name.into(), filename: None, content_type: None, value };
        let form = Body::Form(vec![
            part("seconds", PartValue::Text("8".into())),
            part("input_reference", PartValue::ClientFile("input_reference".into())),
        ]);
        assert_eq!(form.field("seconds").as_deref(), Some("8"));
        assert_eq!(form.field("input_reference"), None);
        assert_eq!(Body::ClientBody.field("seconds"), None);
        assert_eq!(Body::Text("not json".into()).field("seconds"), None);
    }
}
