//! MiniMax's voices, on MiniMax's own routes (`compat-protocols.md` §1.2–1.3): clone a voice
//! from uploaded audio (`POST /v1/voice_clone`), design one from a description
//! (`POST /v1/voice_design`), list (`POST /v1/get_voice`) and delete (`POST /v1/delete_voice`).
//!
//! Invariants:
//! - a voice made here is an object of the consumer who made it, on the key that made it (a
//!   clone's is the `voice_id` the consumer chose, a design's the one MiniMax answers): a
//!   synthesis naming it runs on that key (see `voices_in`, which the synthesis ops report as
//!   `uses`), and the first one charged carries the voice's one-time fee, where the operator
//!   prices one (`first_use` of `[ops."minimax/minimax.voice_clone"]` or `…voice_design`);
//! - a clone uses its audio files (`file_id`, `clone_prompt.prompt_audio`): it runs on the key
//!   they were uploaded with, and another consumer's file is not found;
//! - a clone's preview (`text`) and a design's `preview_text` are quoted by their characters
//!   as MiniMax counts them (a CJK character 2), priced by the op; a text of the wrong type is
//!   refused, never quoted as nothing;
//! - a listing asks each key the consumer made voices on and answers MiniMax's stock voices
//!   with the consumer's own made voices only; a consumer who made none gets MiniMax's shape,
//!   empty, without a key being asked;
//! - answers come back verbatim, errors included, with `reply.error` set.

use serde_json::{json, Map, Value};
use tollgate_plugin_sdk::{
    exact_fields, text::vendor_characters, AdapterError, Body, Call, Field, Manifest, Operation, Reply, Route, Step,
    UpstreamRequest, UpstreamResponse, Usage,
};

pub const CLONE: &str = "minimax.voice_clone";
pub const DESIGN: &str = "minimax.voice_design";
pub const LIST: &str = "minimax.get_voice";
pub const DELETE: &str = "minimax.delete_voice";

const LIST_PATH: &str = "/v1/get_voice";
/// The made voices of a listing, by kind: only the consumer's own are shown.
const MADE: &[&str] = &["voice_cloning", "voice_generation"];

/// The ops of this module and their routes: one list, for the manifest and the dispatch.
pub fn declare(manifest: Manifest) -> Manifest {
    let op_priced = |path: &str, op: &str| Route::new("POST", path, op).model(Field::None);
    manifest
        .with_operation(Operation::new(CLONE).quoted())
        .with_operation(Operation::new(DESIGN).quoted())
        .with_operation(Operation::new(LIST).resend())
        .with_operation(Operation::new(DELETE))
        .with(op_priced("/v1/voice_clone", CLONE))
        .with(op_priced("/v1/voice_design", DESIGN))
        .with(op_priced(LIST_PATH, LIST).free().affinity(Field::Owned))
        .with(op_priced("/v1/delete_voice", DELETE).free().affinity(Field::Body("voice_id".into())))
}

/// Whether `op` is one of this module's.
pub fn handles(op: &str) -> bool {
    [CLONE, DESIGN, LIST, DELETE].contains(&op)
}

/// The fields a voice or synthesis body names voices, files and previews by: read only as
/// written here. The body goes to MiniMax as it came (or with its keys in order), so a
/// case-blind reader must find no other copy of them (`exact_voice_fields`).
const VOICE_FIELDS: &[&str] = &[
    "voice_id",
    "file_id",
    "clone_prompt",
    "text",
    "preview_text",
    "prompt",
    "voice",
    "voice_setting",
    "timber_weights",
    "timbre_weights",
];

/// Refuses a body whose voice fields, or the nested ones `voices_in` and a clone read
/// (`voice_setting.voice_id`, `clone_prompt.prompt_audio`, each mixed voice's `voice_id`), a
/// case-blind reader could read otherwise: `"Voice_Id"` beside `"voice_id"` would run, bill or
/// delete a voice the plugin never checked.
pub fn exact_voice_fields(body: &Map<String, Value>) -> Result<(), AdapterError> {
    exact_fields(body, VOICE_FIELDS)?;
    for (field, inner) in [("voice_setting", "voice_id"), ("clone_prompt", "prompt_audio")] {
        if let Some(Value::Object(o)) = body.get(field) {
            exact_fields(o, &[inner])?;
        }
    }
    for mix in ["timber_weights", "timbre_weights"] {
        for weight in body.get(mix).and_then(Value::as_array).into_iter().flatten() {
            if let Value::Object(o) = weight {
                exact_fields(o, &["voice_id"])?;
            }
        }
    }
    Ok(())
}

/// The voices a synthesis request names: `voice_setting.voice_id` and each of the mixed
/// voices (`timber_weights`, also spelled `timbre_weights`), or OpenAI's `voice`.
pub fn voices_in(body: &Map<String, Value>) -> Vec<String> {
    let mut voices = Vec::new();
    let mut add = |v: Option<&Value>| {
        if let Some(id) = v.and_then(Value::as_str).filter(|id| !id.is_empty()) {
            voices.push(id.to_string());
        }
    };
    add(body.get("voice_setting").and_then(|s| s.get("voice_id")));
    add(body.get("voice"));
    for mix in ["timber_weights", "timbre_weights"] {
        for weight in body.get(mix).and_then(Value::as_array).into_iter().flatten() {
            add(weight.get("voice_id"));
        }
    }
    voices
}

enum Stage {
    Start,
    Relay,
    /// A listing asked key `key`; what the consumer may see so far.
    List {
        key: usize,
        shown: Map<String, Value>,
    },
}

/// One voice call.
pub struct Voices {
    call: Call,
    stage: Stage,
}

impl Voices {
    pub fn new(call: Call) -> Self {
        Voices { call, stage: Stage::Start }
    }

    fn body(&self) -> Result<Map<String, Value>, AdapterError> {
        match super::json_object(&self.call.body)? {
            Value::Object(o) => exact_voice_fields(&o).map(|()| o),
            _ => unreachable!("json_object answers objects"),
        }
    }

    /// A clone's preview or a design's preview text, by its characters.
    pub fn quote(&mut self) -> Result<Usage, AdapterError> {
        let body = self.body()?;
        let (field, required) = if self.call.op == DESIGN { ("preview_text", true) } else { ("text", false) };
        let characters = match body.get(field) {
            Some(Value::String(t)) => vendor_characters(t),
            None | Some(Value::Null) if !required => 0,
            _ => return Err(super::bad_request(format!("'{field}' must be a string"))),
        };
        Ok(Usage { characters: Some(characters), ..Usage::default() })
    }

    /// A clone's audio files.
    pub fn uses(&mut self) -> Vec<String> {
        let Ok(body) = self.body() else { return Vec::new() };
        if self.call.op != CLONE {
            return Vec::new();
        }
        [body.get("file_id"), body.get("clone_prompt").and_then(|p| p.get("prompt_audio"))]
            .into_iter()
            .flatten()
            .filter_map(super::jobs::id_text)
            .collect()
    }

    pub fn first(&mut self) -> Step {
        self.start().unwrap_or_else(Step::Fail)
    }

    fn start(&mut self) -> Result<Step, AdapterError> {
        let body = self.body()?;
        let needs = |field: &str| match body.get(field) {
            Some(Value::String(s)) if !s.is_empty() => Ok(()),
            _ => Err(super::bad_request(format!("'{field}' is required"))),
        };
        match self.call.op.as_str() {
            CLONE => {
                needs("voice_id")?;
                if body.get("file_id").and_then(super::jobs::id_text).is_none() {
                    return Err(super::bad_request("'file_id' (the uploaded audio to clone) is required"));
                }
            }
            DESIGN => needs("prompt")?,
            DELETE => needs("voice_id")?,
            LIST => {
                return Ok(match self.call.owned.is_empty() {
                    // The consumer made no voice: no key is asked.
                    true => Step::Reply(listing(Map::new(), None)),
                    false => self.list_on(0, Map::new()),
                });
            }
            op => return Err(super::bad_request(format!("operation '{op}' is not one of MiniMax's voice routes"))),
        }
        let path = super::with_group(&self.call.context.path, &self.call.query);
        let mut request = UpstreamRequest::post_json(path, String::new());
        request.body = Body::ClientBody;
        self.stage = Stage::Relay;
        Ok(Step::Send(request))
    }

    /// Asks key `key` for its voices, with the consumer's body (`voice_type`).
    fn list_on(&mut self, key: usize, shown: Map<String, Value>) -> Step {
        let mut request = UpstreamRequest::post_json(super::with_group(LIST_PATH, &self.call.query), String::new());
        request.body = Body::ClientBody;
        self.stage = Stage::List { key, shown };
        Step::Send(request.on_key(key as u32))
    }

    pub fn next(&mut self, response: UpstreamResponse) -> Step {
        match std::mem::replace(&mut self.stage, Stage::Start) {
            Stage::Relay => {
                let made = self.made(&response);
                let mut reply = super::native_reply(response);
                if reply.error.is_none() {
                    reply.objects = made;
                }
                Step::Reply(reply)
            }
            Stage::List { key, shown } => self.listed(key, shown, response),
            Stage::Start => Step::Fail(super::fault("the minimax plugin got a response it did not ask for")),
        }
    }

    /// The voice a successful clone or design made.
    fn made(&self, response: &UpstreamResponse) -> Vec<String> {
        let Ok(answer) = super::jobs::answer(response) else { return Vec::new() };
        let id = match self.call.op.as_str() {
            CLONE => self.body().ok().and_then(|b| b.get("voice_id").cloned()),
            DESIGN => answer.get("voice_id").cloned(),
            _ => None,
        };
        id.as_ref().and_then(super::jobs::id_text).into_iter().collect()
    }

    /// One key's voices: the stock ones (from the first key) and the consumer's own made
    /// ones are kept; the next key is asked, or the listing ends. A key that fails fails the
    /// listing with MiniMax's answer (never a partial list).
    fn listed(&mut self, key: usize, mut shown: Map<String, Value>, response: UpstreamResponse) -> Step {
        let mut answer = match super::jobs::answer(&response) {
            Ok(Value::Object(o)) => o,
            Ok(_) => return Step::Fail(super::fault("MiniMax's voice list is not an object")),
            Err(_) => return Step::Reply(super::native_reply(response)),
        };
        let owned = &self.call.owned[key];
        for (kind, voices) in answer.iter_mut() {
            let Some(voices) = voices.as_array_mut().map(std::mem::take) else { continue };
            let keep: Vec<Value> = if MADE.contains(&kind.as_str()) {
                voices
                    .into_iter()
                    .filter(|v| v["voice_id"].as_str().is_some_and(|id| owned.iter().any(|o| o == id)))
                    .collect()
            } else if key == 0 {
                voices
            } else {
                continue;
            };
            match shown.entry(kind.clone()).or_insert_with(|| Value::Array(Vec::new())) {
                Value::Array(list) => list.extend(keep),
                other => *other = Value::Array(keep),
            }
        }
        if key + 1 < self.call.owned.len() {
            return self.list_on(key + 1, shown);
        }
        Step::Reply(listing(shown, answer.remove("base_resp")))
    }
}

/// MiniMax's answer to `get_voice` with the voices shown (each kind present, if empty).
fn listing(mut shown: Map<String, Value>, base_resp: Option<Value>) -> Reply {
    for kind in ["system_voice", "voice_cloning", "voice_generation"] {
        shown.entry(kind).or_insert_with(|| Value::Array(Vec::new()));
    }
    let ok = json!({ "status_code": 0, "status_msg": "success" });
    shown.insert("base_resp".into(), base_resp.unwrap_or(ok));
    Reply::json(Value::Object(shown).to_string(), Usage::default())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::MiniMaxExchange;
    use tollgate_plugin_sdk::testing::call;
    use tollgate_plugin_sdk::Exchange;

    fn response(body: Value) -> UpstreamResponse {
        UpstreamResponse { status: 200, headers: Vec::new(), body: body.to_string().into_bytes() }
    }

    #[test]
    fn a_synthesis_uses_every_voice_it_names_and_is_quoted_its_characters() {
        let body = r#"{"model":"m","text":"你好 ab","voice_setting":{"voice_id":"MyVoice01"},"timber_weights":[{"voice_id":"male-qn-qingse","weight":1},{"voice_id":"Other0001","weight":2}]}"#;
        let mut t2a = MiniMaxExchange::new(call("minimax.t2a", "m", body));
        assert_eq!(t2a.quote().unwrap().characters, Some(7));
        assert_eq!(t2a.uses(), ["MyVoice01", "male-qn-qingse", "Other0001"]);
        let mut speech = MiniMaxExchange::new(call("speech", "m", r#"{"input":"hi","voice":"MyVoice01"}"#));
        assert_eq!((speech.quote().unwrap().characters, speech.uses()), (Some(2), vec!["MyVoice01".to_string()]));
        for bad in [r#"{"input":5}"#, r#"{"voice":"v"}"#, "[]"] {
            assert!(MiniMaxExchange::new(call("speech", "m", bad)).quote().is_err(), "{bad}");
        }
        let mut long = MiniMaxExchange::new(call(
            crate::jobs::T2A_ASYNC,
            "m",
            r#"{"text":"a","voice_setting":{"voice_id":"V1234567"}}"#,
        ));
        assert_eq!(long.uses(), ["V1234567"]);
    }

    /// The body goes to MiniMax as it came: a voice, file or preview named twice in different
    /// cases (MiniMax might read either) is refused on every route that reads it.
    #[test]
    fn a_voice_field_spelled_otherwise_is_refused_on_every_route() {
        let quoted = |op: &str, body: &str| MiniMaxExchange::new(call(op, "m", body)).quote();
        let t2a = [
            r#"{"text":"hi","voice_setting":{"voice_id":"male-qn-qingse","Voice_Id":"Other0001"}}"#,
            r#"{"text":"hi","Timber_Weights":[{"voice_id":"Other0001","weight":1}]}"#,
            r#"{"text":"hi","timbre_weights":[{"voice_id":"a","VOICE_ID":"Other0001","weight":1}]}"#,
        ];
        for body in t2a {
            assert!(quoted("minimax.t2a", body).is_err(), "{body}");
            assert!(quoted(crate::jobs::T2A_ASYNC, body).is_err(), "{body}");
        }
        assert!(quoted("minimax.t2a", r#"{"text":"hi","voice_setting":{"voice_id":"a","speed":1}}"#).is_ok());
        let design = r#"{"prompt":"warm","preview_text":"hi","Preview_Text":"a much longer text"}"#;
        assert!(quoted(DESIGN, design).is_err());
        let clone = r#"{"voice_id":"Mine00001","file_id":1,"File_Id":2}"#;
        assert!(quoted(CLONE, clone).is_err());
        let prompt_audio = r#"{"voice_id":"Mine00001","file_id":1,"clone_prompt":{"prompt_audio":1,"Prompt_Audio":2}}"#;
        assert!(quoted(CLONE, prompt_audio).is_err());
        let delete = r#"{"voice_type":"voice_cloning","voice_id":"Mine00001","Voice_Id":"Theirs001"}"#;
        let mut exchange = MiniMaxExchange::new(call(DELETE, "m", delete));
        assert!(matches!(exchange.first(), Step::Fail(e) if e.message.contains("Voice_Id")));
    }

    #[test]
    fn a_clone_uses_its_files_names_its_voice_and_a_design_the_voice_minimax_made() {
        let body = r#"{"file_id":42,"voice_id":"MyVoice01","clone_prompt":{"prompt_audio":"43","prompt_text":"x"},"text":"你好"}"#;
        let mut c = call(CLONE, "", body);
        c.context.path = "/v1/voice_clone".into();
        let mut clone = MiniMaxExchange::new(c);
        assert_eq!(clone.quote().unwrap().characters, Some(4), "the preview text, as MiniMax counts it");
        assert_eq!(clone.uses(), ["42", "43"]);
        let Step::Send(req) = clone.first() else { panic!("a request") };
        assert!(req.path == "/v1/voice_clone" && matches!(req.body, Body::ClientBody), "{}", req.path);
        let Step::Reply(r) = clone.next(response(json!({ "base_resp": { "status_code": 0 } }))) else { panic!() };
        assert_eq!(r.objects, ["MyVoice01"]);
        // MiniMax refused: nothing made, its answer relayed with its class.
        let mut clone = MiniMaxExchange::new(call(CLONE, "", body));
        clone.first();
        let refused = json!({ "base_resp": { "status_code": 2039, "status_msg": "voice clone voice id duplicate" } });
        let Step::Reply(r) = clone.next(response(refused)) else { panic!() };
        assert!(r.objects.is_empty() && r.error.is_some());

        let mut design = MiniMaxExchange::new(call(DESIGN, "", r#"{"prompt":"calm","preview_text":"hello"}"#));
        assert_eq!(design.quote().unwrap().characters, Some(5));
        assert!(matches!(design.first(), Step::Send(_)));
        let made = json!({ "voice_id": "ttv-voice-7", "trial_audio": "4944", "base_resp": { "status_code": 0 } });
        let Step::Reply(r) = design.next(response(made)) else { panic!() };
        assert_eq!(r.objects, ["ttv-voice-7"]);
        for (op, bad) in
            [(CLONE, r#"{"voice_id":"MyVoice01"}"#), (CLONE, r#"{"file_id":1}"#), (DESIGN, r#"{"preview_text":"a"}"#)]
        {
            assert!(matches!(MiniMaxExchange::new(call(op, "", bad)).first(), Step::Fail(_)), "{bad}");
        }
        assert!(MiniMaxExchange::new(call(DESIGN, "", r#"{"prompt":"p","preview_text":1}"#)).quote().is_err());
    }

    #[test]
    fn a_listing_shows_the_stock_voices_and_the_consumers_own_from_every_key() {
        let mut c = call(LIST, "", r#"{"voice_type":"all"}"#);
        c.owned = vec![vec!["Mine0001".into()], vec!["ttv-voice-2".into()]];
        let mut list = MiniMaxExchange::new(c);
        let Step::Send(first) = list.first() else { panic!() };
        assert_eq!(first.key, 0);
        let voice = |id: &str| json!({ "voice_id": id, "description": [] });
        let key0 = json!({ "system_voice": [voice("male-qn-qingse")], "voice_cloning": [voice("Mine0001"), voice("Theirs01")],
            "voice_generation": [], "base_resp": { "status_code": 0, "status_msg": "success" } });
        let Step::Send(second) = list.next(response(key0)) else { panic!("the next key") };
        assert_eq!(second.key, 1);
        let key1 = json!({ "system_voice": [voice("male-qn-qingse")], "voice_cloning": [],
            "voice_generation": [voice("ttv-voice-2"), voice("ttv-voice-9")], "base_resp": { "status_code": 0 } });
        let Step::Reply(r) = list.next(response(key1)) else { panic!() };
        let v: Value = serde_json::from_slice(r.body.as_bytes().unwrap()).unwrap();
        assert_eq!(v["system_voice"], json!([voice("male-qn-qingse")]), "the stock voices once");
        assert_eq!(v["voice_cloning"], json!([voice("Mine0001")]));
        assert_eq!(v["voice_generation"], json!([voice("ttv-voice-2")]));
        assert_eq!(v["base_resp"]["status_code"], 0);
        // None made: MiniMax's shape, empty, and no key asked.
        let Step::Reply(r) = MiniMaxExchange::new(call(LIST, "", "{}")).first() else { panic!() };
        let v: Value = serde_json::from_slice(r.body.as_bytes().unwrap()).unwrap();
        assert_eq!((v["voice_cloning"].clone(), v["system_voice"].clone()), (json!([]), json!([])));
    }
}
