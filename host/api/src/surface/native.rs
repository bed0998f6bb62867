//! Vendor-native routes declared by plugins (e.g. MiniMax `POST /v1/t2a_v2`, a pattern such as
//! `GET /v1/videos/{id}`): the consumer's body goes to the plugin as it is, and the plugin
//! answers in the vendor's own format, so a vendor's client only changes its host and key.
//!
//! The route says where the model is (body field, path parameter, form field, query
//! parameter, or nowhere), whether the call is billed, and where the vendor object a
//! follow-up call names is (its affinity). The channel is the one using the plugin that serves
//! the model, or else the first channel using that plugin.

use super::{answer, read_request, ConsumerRequest};
use crate::engine::{Affinity, CallRequest};
use crate::exchange::CallError;
use crate::plugin::{wit, Plugin};
use crate::server::body::Response;
use crate::server::error::bad_request;
use crate::server::url;
use crate::server::Api;
use http::Request;
use hyper::body::Incoming;
use std::sync::Arc;
use std::time::Instant;

/// A plugin route that matched the request.
pub struct NativeRoute {
    pub plugin: Arc<Plugin>,
    pub route: wit::Route,
    pub params: Vec<(String, String)>,
}

pub async fn call(state: &Arc<Api>, req: Request<Incoming>, route: NativeRoute) -> Response {
    answer(state, |started, request_id| resolve(state, req, route, started, request_id)).await
}

pub(super) async fn resolve(
    state: &Arc<Api>,
    req: Request<Incoming>,
    NativeRoute { plugin, route, params }: NativeRoute,
    started: Instant,
    request_id: String,
) -> Result<CallRequest, CallError> {
    let request = read_request(state, req).await?;
    // The plugin sees the parameters as the consumer meant them (`%3A` is `:`), as the host does.
    let params: Vec<(String, String)> = params.into_iter().map(|(k, v)| (k, url::decode(&v, false))).collect();
    let model = field_value(&route.model, &request, &params, false)?.unwrap_or_default();
    if model.is_empty() && !matches!(route.model, wit::Field::None) && route.billed {
        return Err(bad_request("missing_model", format!("This route needs a model ({}).", describe(&route.model))));
    }
    // Vendors write their ids as numbers too (MiniMax's `file_id`): a number is its text.
    let affinity = match &route.affinity {
        wit::Field::Owned => Affinity::Owned,
        field => field_value(field, &request, &params, true)?
            .filter(|a| !a.is_empty())
            .map_or(Affinity::None, Affinity::Object),
    };
    let channel = state
        .engine
        .channels
        .load()
        .for_plugin(plugin.name(), Some(model.as_str()).filter(|m| !m.is_empty()))
        .cloned()
        .ok_or_else(|| CallError::config(format!("no channel uses the plugin '{}'", plugin.name())))?;
    if !model.is_empty() && !channel.models.contains(&model) {
        return Err(CallError::new(
            404,
            "invalid_request_error",
            "model_not_found",
            format!(
                "The model '{model}' is not served on this route. GET /v1/models lists the models this gateway serves."
            ),
        ));
    }
    let call = request.into_call(plugin, channel, route.op, model, started, request_id);
    Ok(CallRequest { path_params: params, billed: route.billed, affinity, ..call })
}

/// The value a route's field names in this request (a JSON number as its text when `numbers`).
/// A field given twice is refused: the host would price and authorize one copy while the
/// vendor may read the other.
pub(super) fn field_value(
    field: &wit::Field,
    request: &ConsumerRequest,
    params: &[(String, String)],
    numbers: bool,
) -> Result<Option<String>, CallError> {
    let twice = |name: &str| bad_request("duplicate_field", format!("'{name}' is given more than once; give it once."));
    match field {
        wit::Field::None | wit::Field::Owned => Ok(None),
        wit::Field::Body(name) if request.form.is_some() => Err(bad_request(
            "invalid_json",
            format!("This route reads '{name}' from a JSON body, not a multipart form."),
        )),
        wit::Field::Body(name) => json_text_field(&request.body, name, numbers),
        wit::Field::Path(name) => Ok(params.iter().find(|(n, _)| n == name).map(|(_, v)| v.clone())),
        wit::Field::Form(name) => {
            let Some(form) = &request.form else { return Ok(None) };
            match form.parts.iter().filter(|p| &p.name == name).count() {
                0 => Ok(None),
                1 => Ok(form.text(name).map(str::to_string)),
                _ => Err(twice(name)),
            }
        }
        wit::Field::Query(name) => {
            let mut values = request.query.split('&').filter_map(|pair| {
                let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
                (url::decode(k, true) == *name).then(|| url::decode(v, true))
            });
            match (values.next(), values.next()) {
                (Some(_), Some(_)) => Err(twice(name)),
                (value, None) => Ok(value),
                (None, Some(_)) => unreachable!("a second value implies a first"),
            }
        }
    }
}

/// A top-level string field of a JSON object body (`None`: absent, null, or no body); with
/// `numbers`, a number is taken as its text too (`"seconds": 8`).
pub(super) fn json_text_field(body: &[u8], name: &str, numbers: bool) -> Result<Option<String>, CallError> {
    use serde::de::{Deserializer, IgnoredAny, MapAccess, Visitor};
    /// Reads only `name`'s values: every copy of it, to refuse a second one.
    struct Find<'a>(&'a str);
    impl<'de> Visitor<'de> for Find<'_> {
        type Value = Vec<serde_json::Value>;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("a JSON object")
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
            let mut found = Vec::new();
            while let Some(key) = map.next_key::<std::borrow::Cow<'de, str>>()? {
                if key == self.0 {
                    found.push(map.next_value::<serde_json::Value>()?);
                } else {
                    map.next_value::<IgnoredAny>()?;
                }
            }
            Ok(found)
        }
    }
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(None);
    }
    let invalid =
        |e: serde_json::Error| bad_request("invalid_json", format!("The request body must be one JSON object: {e}"));
    let mut de = serde_json::Deserializer::from_slice(body);
    let found = de.deserialize_map(Find(name)).map_err(invalid)?;
    de.end().map_err(invalid)?;
    match found.as_slice() {
        [] | [serde_json::Value::Null] => Ok(None),
        [serde_json::Value::String(s)] => Ok(Some(s.clone())),
        [serde_json::Value::Number(n)] if numbers => Ok(Some(n.to_string())),
        [_] => Err(bad_request("invalid_type", format!("'{name}' must be a string."))),
        _ => Err(bad_request("duplicate_field", format!("'{name}' is given more than once; give it once."))),
    }
}

fn describe(field: &wit::Field) -> String {
    match field {
        wit::Field::None => "nowhere".into(),
        wit::Field::Body(n) => format!("the body field '{n}'"),
        wit::Field::Path(n) => format!("the path parameter '{n}'"),
        wit::Field::Form(n) => format!("the form field '{n}'"),
        wit::Field::Query(n) => format!("the query parameter '{n}'"),
        wit::Field::Owned => "the consumer's objects".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::json_text_field;

    fn json_field(body: &[u8], name: &str) -> Result<Option<String>, crate::exchange::CallError> {
        json_text_field(body, name, false)
    }

    #[test]
    fn a_body_field_is_read_once_and_as_a_string() {
        assert_eq!(json_field(br#"{"model":"m","x":[1,{"model":"no"}]}"#, "model").unwrap().as_deref(), Some("m"));
        assert_eq!(json_field(b"", "model").unwrap(), None);
        assert_eq!(json_field(br#"{"model":null}"#, "model").unwrap(), None);
        let e = json_field(br#"{"model":"cheap","model":"dear"}"#, "model").unwrap_err();
        assert_eq!((e.status, e.code.as_str()), (400, "duplicate_field"));
        assert_eq!(json_field(br#"{"model":7}"#, "model").unwrap_err().code, "invalid_type");
        assert_eq!(
            json_text_field(br#"{"file_id":95157322514444}"#, "file_id", true).unwrap().as_deref(),
            Some("95157322514444")
        );
        assert_eq!(json_field(b"[1]", "model").unwrap_err().code, "invalid_json");
        assert_eq!(json_field(br#"{"model":"m"} {}"#, "model").unwrap_err().code, "invalid_json");
    }
}
