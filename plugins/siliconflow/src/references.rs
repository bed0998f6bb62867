//! SiliconFlow's reference audio ("custom voices", `speech:…` uris a speech call names as its
//! `voice`), on the routes the SiliconFlow proxy's clients call (`compat-protocols.md` §2.1)
//! and on SiliconFlow's own:
//!
//! | consumer route                     | SiliconFlow's own route           | upstream request                  |
//! |------------------------------------|-----------------------------------|-----------------------------------|
//! | `POST /v1/audio/reference`         | `POST /v1/uploads/audio/voice`    | `POST /v1/uploads/audio/voice`    |
//! | `GET /v1/audio/reference`          | `GET /v1/audio/voice/list`        | `GET /v1/audio/voice/list`, per key |
//! | `POST /v1/audio/reference/delete`  | `POST /v1/audio/voice/deletions`  | `POST /v1/audio/voice/deletions`  |
//!
//! Wire format, from SiliconFlow's API reference (docs.siliconflow.cn, `api-reference/audio/`
//! `upload-voice`, `voice-list`, `delete-voice`):
//! - an upload is JSON `{model, customName, text, audio}` (`audio` a `data:audio/…;base64,`
//!   URI; a URL is taken too) or a multipart form with the same text fields and the audio as
//!   `file`; it answers `{"uri":"speech:<customName>:…"}`;
//! - the list answers `{"results":[{model, customName, text, uri}]}`: `results` in the
//!   reference's schema and example, though some clients read `result`, so the plugin filters
//!   whichever of the two the answer has and keeps its name;
//! - a delete is `{"uri":"speech:…"}`, answered with a string.
//!
//! Errors are SiliconFlow's (`vendor-apis.md` §2.2), several plain strings.
//!
//! Invariants:
//! - these calls are free: SiliconFlow prices speech by the characters synthesized, not the
//!   voices kept, so the routes have no model and are not billed;
//! - an upload's `uri` is an object the consumer created (`reply.objects`): the host remembers
//!   its key and owner; a delete names it (`affinity`) and runs on that key, for that owner
//!   only (another consumer gets 404 and SiliconFlow is never asked);
//! - a list asks every key the consumer has objects on and answers with the consumer's own
//!   references only (another consumer's on a shared key are never shown); a consumer with
//!   none is answered an empty list without asking SiliconFlow; a key that fails fails the
//!   list with SiliconFlow's answer (never a partial list);
//! - what SiliconFlow reads goes as the consumer sent it: a JSON body as its own bytes, a
//!   form's file spliced in by the host (the audio never enters the plugin); answers and
//!   errors come back verbatim, with `reply.error` set to the class of a refusal so that the
//!   host still acts on it (a refused key is disabled);
//! - what SiliconFlow would refuse for want of a field is refused first, with a message that
//!   names it; a delete without its `uri` is never sent (it would not be pinned to a key).

use serde_json::{json, Value};
use tollgate_plugin_sdk::openai_compat::Vendor;
use tollgate_plugin_sdk::{
    exact_fields, AdapterError, Body, Call, ErrorKind, Field, Manifest, Operation, PartValue, Reply, Route, Step,
    UpstreamRequest, UpstreamResponse,
};

pub const UPLOAD: &str = "siliconflow.reference_upload";
pub const LIST: &str = "siliconflow.reference_list";
pub const DELETE: &str = "siliconflow.reference_delete";

const UPLOAD_PATH: &str = "/v1/uploads/audio/voice";
const LIST_PATH: &str = "/v1/audio/voice/list";
const DELETE_PATH: &str = "/v1/audio/voice/deletions";

/// The fields of an upload SiliconFlow reads, taken only as written here.
const UPLOAD_FIELDS: &[&str] = &["model", "customName", "text", "audio"];

/// The ops and their routes (the proxy's and SiliconFlow's own): one list, for the manifest
/// and the dispatch.
pub fn declare(manifest: Manifest) -> Manifest {
    let free = |method: &str, path: &str, op: &str, object: Field| {
        Route::new(method, path, op).model(Field::None).free().affinity(object)
    };
    let uri = || Field::Body("uri".into());
    manifest
        .with_operation(Operation::new(UPLOAD))
        .with_operation(Operation::new(LIST).resend())
        .with_operation(Operation::new(DELETE))
        .with(free("POST", "/v1/audio/reference", UPLOAD, Field::None))
        .with(free("GET", "/v1/audio/reference", LIST, Field::Owned))
        .with(free("POST", "/v1/audio/reference/delete", DELETE, uri()))
        .with(free("POST", UPLOAD_PATH, UPLOAD, Field::None))
        .with(free("GET", LIST_PATH, LIST, Field::Owned))
        .with(free("POST", DELETE_PATH, DELETE, uri()))
}

/// Whether `op` is one of this module's.
pub fn handles(op: &str) -> bool {
    [UPLOAD, LIST, DELETE].contains(&op)
}

enum Stage {
    Start,
    /// An upload or a delete was sent: its answer goes back as it is.
    Relay,
    /// Key `key` (an index into `call.owned`) was asked for its references; the consumer's
    /// so far.
    List {
        key: usize,
        found: Vec<Value>,
    },
}

pub struct ReferenceExchange {
    call: Call,
    stage: Stage,
}

impl ReferenceExchange {
    pub fn new(call: Call) -> Self {
        ReferenceExchange { call, stage: Stage::Start }
    }

    pub fn first(&mut self) -> Step {
        self.start().unwrap_or_else(Step::Fail)
    }

    fn start(&mut self) -> Result<Step, AdapterError> {
        match self.call.op.as_str() {
            UPLOAD => {
                let mut request = UpstreamRequest::post_json(UPLOAD_PATH, String::new());
                match &self.call.body {
                    Body::Form(parts) => {
                        check_form(parts)?;
                        // The host writes the form's own content type and splices the file in.
                        request.headers.clear();
                        request.body = Body::Form(parts.clone());
                    }
                    _ => {
                        check_upload(&self.call.body)?;
                        request.body = Body::ClientBody;
                    }
                }
                self.stage = Stage::Relay;
                Ok(Step::Send(request))
            }
            DELETE => {
                let body = self.call.body.object("a delete is JSON: {\"uri\":\"speech:…\"}")?;
                exact_fields(&body, &["uri"])?;
                match body.get("uri") {
                    Some(Value::String(uri)) if !uri.trim().is_empty() => {}
                    _ => return Err(bad("'uri' (the reference's \"speech:…\" uri, a string) is required")),
                }
                let mut request = UpstreamRequest::post_json(DELETE_PATH, String::new());
                request.body = Body::ClientBody;
                self.stage = Stage::Relay;
                Ok(Step::Send(request))
            }
            LIST => Ok(match self.call.owned.is_empty() {
                // Nothing of the consumer's is on any key: no key is asked.
                true => Step::Reply(listing("results", Vec::new(), None)),
                false => self.list_on(0, Vec::new()),
            }),
            op => Err(AdapterError::new(
                ErrorKind::Unsupported,
                format!("operation '{op}' is not a reference-audio operation"),
            )),
        }
    }

    pub fn next(&mut self, response: UpstreamResponse) -> Step {
        match std::mem::replace(&mut self.stage, Stage::Start) {
            Stage::Relay => relayed(&self.call.op, response),
            Stage::List { key, found } => self.listed(key, found, response),
            Stage::Start => {
                Step::fail(ErrorKind::UpstreamFault, "the siliconflow plugin got a response it did not ask for")
            }
        }
    }

    /// Asks key `key` for its references.
    fn list_on(&mut self, key: usize, found: Vec<Value>) -> Step {
        self.stage = Stage::List { key, found };
        Step::Send(UpstreamRequest::get(LIST_PATH).on_key(key as u32))
    }

    /// One key's references: the consumer's are kept; the next key is asked, or the list ends.
    fn listed(&mut self, key: usize, mut found: Vec<Value>, response: UpstreamResponse) -> Step {
        if !(200..300).contains(&response.status) {
            return refusal(response);
        }
        let Ok(mut answer) = serde_json::from_slice::<Value>(&response.body) else {
            return Step::fail(ErrorKind::UpstreamFault, "SiliconFlow's reference list is not JSON");
        };
        let Some(name) = ["results", "result"].into_iter().find(|n| answer[*n].is_array()) else {
            return Step::fail(ErrorKind::UpstreamFault, "SiliconFlow's reference list has no 'results'");
        };
        let Value::Array(listed) = answer[name].take() else { unreachable!("checked to be an array") };
        let owned = &self.call.owned[key];
        found.extend(listed.into_iter().filter(|r| r["uri"].as_str().is_some_and(|u| owned.iter().any(|o| o == u))));
        if key + 1 < self.call.owned.len() {
            return self.list_on(key + 1, found);
        }
        Step::Reply(listing(name, found, Some(answer)))
    }
}

/// An upload's or a delete's answer, as SiliconFlow wrote it; an upload names the reference
/// it made.
fn relayed(op: &str, response: UpstreamResponse) -> Step {
    if !(200..300).contains(&response.status) {
        return refusal(response);
    }
    if op != UPLOAD {
        return Step::Reply(Reply::verbatim(response));
    }
    let uri = serde_json::from_slice::<Value>(&response.body)
        .ok()
        .and_then(|v| v["uri"].as_str().filter(|u| !u.is_empty()).map(str::to_string));
    match uri {
        Some(uri) => Step::Reply(Reply { objects: vec![uri], ..Reply::verbatim(response) }),
        None => Step::fail(ErrorKind::UpstreamFault, "SiliconFlow's answer to the upload has no 'uri'"),
    }
}

/// SiliconFlow's refusal, verbatim, with its class for the host.
fn refusal(response: UpstreamResponse) -> Step {
    let error = super::SiliconFlow::classify(&response);
    Step::Reply(Reply { error: Some(error), ..Reply::verbatim(response) })
}

/// SiliconFlow's list answer with `references` under `name` (its other fields as the last key
/// answered).
fn listing(name: &str, references: Vec<Value>, answered: Option<Value>) -> Reply {
    let mut v = answered.filter(Value::is_object).unwrap_or_else(|| json!({}));
    v[name] = Value::Array(references);
    Reply::json(v.to_string(), Default::default())
}

fn bad(message: impl Into<String>) -> AdapterError {
    AdapterError::new(ErrorKind::BadRequest, message)
}

/// A JSON upload: `model`, `customName` and `text`, and the audio as a data URI or URL.
fn check_upload(body: &Body) -> Result<(), AdapterError> {
    let fields =
        body.object("an upload is JSON {model, customName, text, audio} or a multipart form with the audio as 'file'")?;
    exact_fields(&fields, UPLOAD_FIELDS)?;
    let text = |k: &str| fields.get(k).and_then(Value::as_str).filter(|s| !s.trim().is_empty());
    required(|k| text(k).is_some())?;
    match text("audio") {
        Some(a) if ["data:", "https://", "http://"].iter().any(|p| a.starts_with(p)) => Ok(()),
        Some(_) => Err(bad("'audio' must be a data URI (data:audio/mpeg;base64,…) or an http(s) URL")),
        None => Err(bad(
            "'audio' (a data URI such as data:audio/mpeg;base64,…, or a URL) is required; or send a multipart form with the audio as 'file'",
        )),
    }
}

/// A form upload: the same text fields, the audio as the file `file` (or as the text `audio`).
fn check_form(parts: &[tollgate_plugin_sdk::FormPart]) -> Result<(), AdapterError> {
    let text =
        |k: &str| parts.iter().any(|p| p.name == k && matches!(&p.value, PartValue::Text(t) if !t.trim().is_empty()));
    required(text)?;
    let file = parts.iter().any(|p| p.name == "file" && !matches!(p.value, PartValue::Text(_)));
    if let Some(other) = parts.iter().find(|p| p.name != "file" && !matches!(p.value, PartValue::Text(_))) {
        return Err(bad(format!("the form's file must be named 'file', not '{}'", other.name)));
    }
    match (file, text("audio")) {
        (true, false) | (false, true) => Ok(()),
        (true, true) => Err(bad("give the audio once: as the file 'file' or as 'audio', not both")),
        (false, false) => Err(bad("the form needs the reference audio as the file 'file'")),
    }
}

/// `model`, `customName` and `text`, which SiliconFlow requires of every upload.
fn required(has: impl Fn(&str) -> bool) -> Result<(), AdapterError> {
    for (field, what) in [
        ("model", "the speech model the voice is for, e.g. FunAudioLLM/CosyVoice2-0.5B"),
        ("customName", "the voice's name"),
        ("text", "what the reference audio says"),
    ] {
        if !has(field) {
            return Err(bad(format!("'{field}' ({what}) is required")));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::{DELETE, LIST, UPLOAD};
    use crate::test_helpers::{refused, reply, text};
    use crate::Plugin;
    use tollgate_plugin_sdk::testing::{call, response, Harness, Outcome};
    use tollgate_plugin_sdk::{Body, ErrorKind, Field, FormPart, PartValue, Plugin as _};

    const JSON_UPLOAD: &str = r#"{"model":"FunAudioLLM/CosyVoice2-0.5B","customName":"mine","text":"hello there","audio":"data:audio/mpeg;base64,aGVsbG8="}"#;

    fn part(name: &str, value: PartValue) -> FormPart {
        let filename = matches!(value, PartValue::ClientFile(_)).then(|| "me.wav".to_string());
        FormPart { name: name.into(), filename, content_type: None, value }
    }

    fn form_call(parts: Vec<FormPart>) -> tollgate_plugin_sdk::Call {
        let mut c = call(UPLOAD, "", "");
        c.body = Body::Form(parts);
        c
    }

    fn form_fields() -> Vec<FormPart> {
        vec![
            part("model", PartValue::Text("FunAudioLLM/CosyVoice2-0.5B".into())),
            part("customName", PartValue::Text("mine".into())),
            part("text", PartValue::Text("hello there".into())),
        ]
    }

    #[test]
    fn the_routes_are_free_model_less_and_pinned_to_their_references() {
        let manifest = Plugin::describe();
        for (method, path, op, affinity) in [
            ("POST", "/v1/audio/reference", UPLOAD, Field::None),
            ("GET", "/v1/audio/reference", LIST, Field::Owned),
            ("POST", "/v1/audio/reference/delete", DELETE, Field::Body("uri".into())),
            ("POST", "/v1/uploads/audio/voice", UPLOAD, Field::None),
            ("GET", "/v1/audio/voice/list", LIST, Field::Owned),
            ("POST", "/v1/audio/voice/deletions", DELETE, Field::Body("uri".into())),
        ] {
            let r = manifest.routes.iter().find(|r| r.method == method && r.path == path).expect(path);
            assert_eq!((r.op.as_str(), r.billed), (op, false), "{path}");
            assert!(matches!(r.model, Field::None), "{path}");
            assert_eq!(format!("{:?}", r.affinity), format!("{affinity:?}"), "{path}");
        }
        let list = manifest.operations.iter().find(|o| o.name == LIST).unwrap();
        let upload = manifest.operations.iter().find(|o| o.name == UPLOAD).unwrap();
        assert!(list.resend && !upload.resend, "a list may be asked again; an upload is never sent twice");
    }

    #[test]
    fn a_json_upload_goes_as_sent_and_names_the_reference_it_made() {
        let answer = r#"{"uri":"speech:mine:cm04pf7az00061413w7kz5qxs:mjtkgbyuunvtybnsvbxd"}"#;
        let run = Harness::<Plugin>::new(call(UPLOAD, "", JSON_UPLOAD)).run(|_| response(200, answer));
        let sent = &run.requests[0];
        assert_eq!((sent.method.as_str(), sent.path.as_str()), ("POST", "/v1/uploads/audio/voice"));
        assert!(matches!(sent.body, Body::ClientBody), "the consumer's own bytes: {:?}", sent.body);
        assert!(matches!(sent.auth, tollgate_plugin_sdk::Auth::Bearer));
        let r = reply(run);
        assert_eq!((r.status, text(&r.body).as_str()), (200, answer));
        assert_eq!(r.objects, ["speech:mine:cm04pf7az00061413w7kz5qxs:mjtkgbyuunvtybnsvbxd"]);
        assert!(r.error.is_none() && r.usage.is_empty());
        // A URL is audio too.
        let by_url = JSON_UPLOAD.replace("data:audio/mpeg;base64,aGVsbG8=", "https://example.com/me.mp3");
        let run = Harness::<Plugin>::new(call(UPLOAD, "", &by_url)).run(|_| response(200, answer));
        assert_eq!(reply(run).objects.len(), 1);
    }

    #[test]
    fn a_form_upload_keeps_its_file_in_the_host() {
        let mut parts = form_fields();
        parts.push(part("file", PartValue::ClientFile("file".into())));
        let run =
            Harness::<Plugin>::new(form_call(parts.clone())).run(|_| response(200, r#"{"uri":"speech:mine:a:b"}"#));
        let sent = &run.requests[0];
        assert_eq!(sent.path, "/v1/uploads/audio/voice");
        assert!(sent.headers.is_empty(), "the host writes the form's content type: {:?}", sent.headers);
        match &sent.body {
            Body::Form(sent) => assert_eq!(format!("{sent:?}"), format!("{parts:?}")),
            b => panic!("expected the form, got {b:?}"),
        }
        assert_eq!(reply(run).objects, ["speech:mine:a:b"]);
        // The form's audio as a data URI is SiliconFlow's other form shape.
        let mut parts = form_fields();
        parts.push(part("audio", PartValue::Text("data:audio/wav;base64,AAAA".into())));
        let run = Harness::<Plugin>::new(form_call(parts)).run(|_| response(200, r#"{"uri":"speech:mine:a:c"}"#));
        assert_eq!(reply(run).objects, ["speech:mine:a:c"]);
    }

    #[test]
    fn an_upload_siliconflow_would_refuse_is_refused_first_and_says_why() {
        let without = |field: &str| {
            let mut v: serde_json::Value = serde_json::from_str(JSON_UPLOAD).unwrap();
            v.as_object_mut().unwrap().remove(field);
            v.to_string()
        };
        for (body, says) in [
            ("not json".to_string(), "JSON"),
            ("[1]".to_string(), "JSON"),
            (without("customName"), "'customName'"),
            (without("model"), "'model'"),
            (without("text"), "'text'"),
            (without("audio"), "'audio'"),
            (JSON_UPLOAD.replace("data:audio/mpeg;base64,", "aGVsbG8="), "data URI"),
            (JSON_UPLOAD.replace("customName", "CustomName"), "'CustomName' must be written 'customName'"),
        ] {
            let message = refused(Harness::<Plugin>::new(call(UPLOAD, "", &body)).run(|_| panic!("nothing is sent")));
            assert!(message.contains(says), "{body}: {message}");
        }
        let with = |extra: Vec<FormPart>| form_fields().into_iter().chain(extra).collect::<Vec<_>>();
        for (parts, says) in [
            (with(vec![]), "'file'"),
            (with(vec![part("audio", PartValue::ClientFile("audio".into()))]), "named 'file', not 'audio'"),
            (
                with(vec![
                    part("file", PartValue::ClientFile("file".into())),
                    part("audio", PartValue::Text("data:audio/wav;base64,AAAA".into())),
                ]),
                "once",
            ),
            (form_fields()[1..].to_vec(), "'model'"),
        ] {
            let message = refused(Harness::<Plugin>::new(form_call(parts)).run(|_| panic!("nothing is sent")));
            assert!(message.contains(says), "{message}");
        }
    }

    #[test]
    fn siliconflows_refusals_come_back_as_written_with_their_class() {
        for (status, body, kind) in [
            (401, r#""Invalid token""#, ErrorKind::Unauthorized),
            (403, r#""Forbidden""#, ErrorKind::Forbidden),
            (400, r#"{"code":20012,"message":"customName is invalid","data":""}"#, ErrorKind::BadRequest),
            (429, r#"{"message":"Request was rejected due to rate limiting.","data":""}"#, ErrorKind::RateLimited),
            (503, r#"{"code":50505,"message":"Model service overloaded.","data":""}"#, ErrorKind::UpstreamFault),
        ] {
            for c in [
                call(UPLOAD, "", JSON_UPLOAD),
                call(DELETE, "", r#"{"uri":"speech:mine:a:b"}"#),
                owned_call(vec![vec!["speech:mine:a:b"]]),
            ] {
                let op = c.op.clone();
                let r = reply(Harness::<Plugin>::new(c).run(|_| response(status, body)));
                assert_eq!((r.status, text(&r.body).as_str()), (status, body), "{op}");
                assert_eq!(r.error.map(|e| e.kind), Some(kind), "{op} {body}");
                assert!(r.objects.is_empty(), "{op}: a refused upload made nothing");
            }
        }
        // A 200 that names no reference is SiliconFlow's fault, not a reference.
        let run = Harness::<Plugin>::new(call(UPLOAD, "", JSON_UPLOAD)).run(|_| response(200, "{}"));
        assert!(matches!(run.outcome, Outcome::Failed(e) if e.kind == ErrorKind::UpstreamFault));
    }

    fn owned_call(owned: Vec<Vec<&str>>) -> tollgate_plugin_sdk::Call {
        let mut c = call(LIST, "", "");
        c.body = Body::Empty;
        c.owned = owned.into_iter().map(|ids| ids.into_iter().map(str::to_string).collect()).collect();
        c
    }

    fn entry(uri: &str) -> serde_json::Value {
        serde_json::json!({"model":"FunAudioLLM/CosyVoice2-0.5B","customName":"n","text":"t","uri":uri})
    }

    #[test]
    fn a_list_asks_every_key_and_shows_the_consumers_own_references_only() {
        // Key 0 holds the consumer's a1 and a stranger's s1; key 1 the consumer's b1 and b2.
        let accounts = [
            serde_json::json!({ "results": [entry("speech:x:k0:a1"), entry("speech:x:k0:s1")] }),
            serde_json::json!({ "results": [entry("speech:x:k1:b1"), entry("speech:x:k1:b2")] }),
        ];
        let c = owned_call(vec![vec!["speech:x:k0:a1", "sf-video-request"], vec!["speech:x:k1:b2", "speech:x:k1:b1"]]);
        let run = Harness::<Plugin>::new(c).run(|req| response(200, accounts[req.key as usize].to_string()));
        let asked: Vec<_> = run.requests.iter().map(|r| (r.method.as_str(), r.path.as_str(), r.key)).collect();
        assert_eq!(asked, [("GET", "/v1/audio/voice/list", 0), ("GET", "/v1/audio/voice/list", 1)]);
        let r = reply(run);
        let listed: serde_json::Value = serde_json::from_str(&text(&r.body)).unwrap();
        assert_eq!(
            listed,
            serde_json::json!({ "results": [entry("speech:x:k0:a1"), entry("speech:x:k1:b1"), entry("speech:x:k1:b2")] })
        );
        assert!(r.objects.is_empty() && r.error.is_none(), "a list creates nothing");

        // SiliconFlow's answer under `result` (as some of its clients read it) keeps that name.
        let run = Harness::<Plugin>::new(owned_call(vec![vec!["speech:x:k0:a1"]])).run(|_| {
            response(200, serde_json::json!({ "result": [entry("speech:x:k0:a1"), entry("other")] }).to_string())
        });
        let listed: serde_json::Value = serde_json::from_str(&text(&reply(run).body)).unwrap();
        assert_eq!(listed, serde_json::json!({ "result": [entry("speech:x:k0:a1")] }));
    }

    #[test]
    fn a_consumer_with_nothing_is_answered_without_siliconflow_and_a_failing_key_fails_the_list() {
        let run = Harness::<Plugin>::new(owned_call(vec![])).run(|_| panic!("no key is asked"));
        assert_eq!(text(&reply(run).body), r#"{"results":[]}"#);
        // The second key is refused: no partial list, SiliconFlow's own refusal.
        let c = owned_call(vec![vec!["speech:x:k0:a1"], vec!["speech:x:k1:b1"]]);
        let run = Harness::<Plugin>::new(c).run(|req| match req.key {
            0 => response(200, serde_json::json!({ "results": [entry("speech:x:k0:a1")] }).to_string()),
            _ => response(401, r#""Invalid token""#),
        });
        assert_eq!(run.requests.len(), 2);
        let r = reply(run);
        assert_eq!((r.status, text(&r.body).as_str()), (401, r#""Invalid token""#));
        assert_eq!(r.error.map(|e| e.kind), Some(ErrorKind::Unauthorized));
        for garbage in ["not json", "{}", r#"{"results":{}}"#] {
            let run = Harness::<Plugin>::new(owned_call(vec![vec!["u"]])).run(|_| response(200, garbage));
            assert!(matches!(run.outcome, Outcome::Failed(ref e) if e.kind == ErrorKind::UpstreamFault), "{garbage}");
        }
    }

    #[test]
    fn a_delete_names_its_reference_and_goes_as_sent() {
        let body = r#"{"uri":"speech:mine:a:b"}"#;
        let run = Harness::<Plugin>::new(call(DELETE, "", body)).run(|_| response(200, r#""success""#));
        let sent = &run.requests[0];
        assert_eq!((sent.method.as_str(), sent.path.as_str()), ("POST", "/v1/audio/voice/deletions"));
        assert!(matches!(sent.body, Body::ClientBody));
        let r = reply(run);
        assert_eq!((r.status, text(&r.body).as_str()), (200, r#""success""#));
        assert!(r.objects.is_empty());
        // Without its uri the delete would run on any key: it is never sent.
        for (body, says) in [
            ("{}", "'uri'"),
            (r#"{"uri":""}"#, "'uri'"),
            (r#"{"uri":7}"#, "'uri'"),
            (r#"{"URI":"speech:mine:a:b"}"#, "'URI' must be written 'uri'"),
            (r#"{"uri":"speech:mine:a:b","Uri":"speech:theirs:c:d"}"#, "must be written 'uri'"),
            ("speech:mine:a:b", "JSON"),
        ] {
            let message = refused(Harness::<Plugin>::new(call(DELETE, "", body)).run(|_| panic!("nothing is sent")));
            assert!(message.contains(says), "{body}: {message}");
        }
    }
}
