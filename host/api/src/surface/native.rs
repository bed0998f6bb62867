//! Vendor-native routes declared by plugins (e.g. MiniMax `POST /v1/t2a_v2`, a pattern such as
//! `GET /v1/videos/{id}`): the consumer's body goes to the plugin as it is, and the plugin
//! answers in the vendor's own format, so a vendor's client only changes its host and key.
//!
//! The route says where the model is (body field, path parameter, form field, query
//! parameter, or nowhere), whether the call is billed, and where the vendor object a
//! follow-up call names is (its affinity). The channel is the one using the plugin that serves
//! the model, or else the first channel using that plugin.

use super::{answer, read_request, ConsumerRequest};
use crate::engine::CallRequest;
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

async fn resolve(
    state: &Arc<Api>,
    req: Request<Incoming>,
    NativeRoute { plugin, route, params }: NativeRoute,
    started: Instant,
    request_id: String,
) -> Result<CallRequest, CallError> {
    let request = read_request(state, req).await?;
    let json = body_fields(&request, &route)?;
    let model = field_value(&route.model, &request, &params, json.as_ref()).unwrap_or_default();
    if model.is_empty() && !matches!(route.model, wit::Field::None) && route.billed {
        return Err(bad_request("missing_model", format!("This route needs a model ({}).", describe(&route.model))));
    }
    let affinity = field_value(&route.affinity, &request, &params, json.as_ref()).filter(|a| !a.is_empty());
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
    let headers = request.headers_for(&plugin);
    let ConsumerRequest { consumer, path, query, body, form, idempotency_key, .. } = request;
    Ok(CallRequest {
        consumer,
        plugin,
        channel,
        op: route.op,
        model,
        body,
        form,
        query,
        headers,
        path,
        path_params: params,
        billed: route.billed,
        affinity,
        started,
        request_id,
        idempotency_key,
    })
}

/// The top-level fields of a JSON object body, when the route reads one of them.
fn body_fields(
    request: &ConsumerRequest,
    route: &wit::Route,
) -> Result<Option<serde_json::Map<String, serde_json::Value>>, CallError> {
    let reads_body = [&route.model, &route.affinity].iter().any(|f| matches!(f, wit::Field::Body(_)));
    if !reads_body || request.form.is_some() || request.body.iter().all(u8::is_ascii_whitespace) {
        return Ok(None);
    }
    match serde_json::from_slice(&request.body) {
        Ok(serde_json::Value::Object(map)) => Ok(Some(map)),
        Ok(_) => Err(bad_request("invalid_json", "The request body must be a JSON object.")),
        Err(e) => Err(bad_request("invalid_json", format!("We could not parse the JSON body of your request: {e}"))),
    }
}

/// The value a route's field names in this request.
fn field_value(
    field: &wit::Field,
    request: &ConsumerRequest,
    params: &[(String, String)],
    json: Option<&serde_json::Map<String, serde_json::Value>>,
) -> Option<String> {
    match field {
        wit::Field::None => None,
        wit::Field::Body(name) => json?.get(name)?.as_str().map(str::to_string),
        wit::Field::Path(name) => params.iter().find(|(n, _)| n == name).map(|(_, v)| url::decode(v, false)),
        wit::Field::Form(name) => request.form.as_ref()?.text(name).map(str::to_string),
        wit::Field::Query(name) => url::query_params(&request.query).remove(name),
    }
}

fn describe(field: &wit::Field) -> String {
    match field {
        wit::Field::None => "nowhere".into(),
        wit::Field::Body(n) => format!("the body field '{n}'"),
        wit::Field::Path(n) => format!("the path parameter '{n}'"),
        wit::Field::Form(n) => format!("the form field '{n}'"),
        wit::Field::Query(n) => format!("the query parameter '{n}'"),
    }
}
