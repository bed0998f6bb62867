//! MiniMax's WebSocket speech (`vendor-apis.md` §1.4) on its own path, `/ws/v1/t2a_v2`: the
//! consumer speaks MiniMax's protocol to the gateway, and the gateway to MiniMax with the
//! channel's key.
//!
//! Invariants:
//! - only what the plugin read is sent on: a `task_start` whose field names MiniMax could read
//!   otherwise (case variants, non-ASCII) is refused, and each frame goes upstream as the
//!   plugin re-wrote it (a repeated key reaches MiniMax once, as the plugin read it); a
//!   `task_continue` goes as `{"event","text"}` alone; any other event is refused, not sent;
//! - each `task_continue` is reserved (its text's characters, a CJK character 2, priced by the
//!   model of the session's `task_start`) before it is sent, so that nothing is synthesized
//!   unpaid; a refused reservation is answered with MiniMax's own `task_failed` (1008 for a
//!   balance too low), and the session ends;
//! - pieces settle in order: an `is_final` frame charges its `usage_characters`. A piece sent to
//!   MiniMax is MiniMax's work: when the consumer leaves, MiniMax is told to finish
//!   (`task_finish`) and read on, so each piece is still charged what MiniMax counts, and a
//!   piece that never got its count is charged its reservation; when the consumer broke the
//!   protocol, its pieces in flight are charged their reservations. Only a piece MiniMax failed
//!   (`task_failed`, or its connection gone) before any audio is free;
//! - one `task_start` per session: the model that prices the pieces is the one MiniMax uses;
//! - MiniMax's frames go back verbatim (its `connected_success` included: MiniMax's clients
//!   expect it).

use serde_json::{json, Map, Value};
use std::collections::VecDeque;
use tollgate_plugin_sdk::{
    exact_fields, text::vendor_characters, AdapterError, Call, ErrorKind, Manifest, Operation, Route, SocketAction,
    SocketInput, SocketRequest, SocketReserve, SpeechAudio, Step, UpstreamRequest, Usage, WsFrame,
};

pub const SOCKET: &str = "minimax.ws";
const PATH: &str = "/ws/v1/t2a_v2";

/// The fields of a `task_start` (`vendor-apis.md` §1.4).
const TASK_START: &[&str] = &[
    "event",
    "model",
    "voice_setting",
    "audio_setting",
    "pronunciation_dict",
    "timbre_weights",
    "language_boost",
    "voice_modify",
    "subtitle_enable",
    "subtitle_type",
    "continuous_sound",
];

/// MiniMax's code for a balance too low, and for bad parameters.
const INSUFFICIENT_BALANCE: u32 = 1008;
const INVALID_PARAMS: u32 = 2013;

pub fn declare(manifest: Manifest) -> Manifest {
    use tollgate_plugin_sdk::Field;
    // The upgrade itself costs nothing: each piece of the session is reserved and priced.
    manifest.with_operation(Operation::new(SOCKET)).with(Route::new("GET", PATH, SOCKET).model(Field::None).free())
}

/// One piece of work in flight: a `task_continue` reserved and sent.
struct Piece {
    /// Some of its audio reached the consumer.
    audio: bool,
    /// Its text and decoded audio, kept for the speech archive (only when asked).
    text: String,
    decoded: Vec<u8>,
}

pub struct Session {
    /// The host keeps the session's speech (`call.keep_speech`).
    keep: bool,
    /// The audio format of the session's `task_start` (MiniMax's default: mp3).
    format: String,
    /// The model of the session's `task_start`.
    model: Option<String>,
    /// The voices of the session's `task_start`, which each piece uses.
    voices: Vec<String>,
    pieces: VecDeque<Piece>,
    /// The consumer left while pieces were in flight: MiniMax finishes them unheard.
    client_gone: bool,
}

impl Session {
    pub fn new(call: Call) -> Self {
        let keep = call.keep_speech;
        Session {
            keep,
            format: "mp3".into(),
            model: None,
            voices: Vec::new(),
            pieces: VecDeque::new(),
            client_gone: false,
        }
    }

    pub fn first(&mut self) -> Step {
        Step::Socket(SocketRequest { request: UpstreamRequest::get(PATH), reply_headers: Vec::new() })
    }

    pub fn frame(&mut self, input: SocketInput) -> Result<Vec<SocketAction>, AdapterError> {
        Ok(match input {
            SocketInput::Client(WsFrame::Text(text)) => self.client_said(&text),
            SocketInput::Client(WsFrame::Binary(_)) => {
                self.fail(INVALID_PARAMS, "invalid params: frames are JSON text")
            }
            SocketInput::Client(WsFrame::Close(_)) if self.pieces.is_empty() => self.end(Vec::new()),
            SocketInput::Client(WsFrame::Close(_)) => {
                // MiniMax has the texts: it finishes them, and each is charged what it counts.
                self.client_gone = true;
                vec![upstream(json!({ "event": "task_finish" }))]
            }
            SocketInput::Upstream(WsFrame::Text(text)) => self.minimax_said(text),
            SocketInput::Upstream(frame @ WsFrame::Binary(_)) => {
                if let Some(piece) = self.pieces.front_mut() {
                    piece.audio = true;
                }
                vec![SocketAction::ToClient(frame)]
            }
            SocketInput::Upstream(WsFrame::Close(_)) if self.pieces.is_empty() || self.client_gone => {
                self.end(Vec::new())
            }
            // Gone mid-synthesis: the consumer is told, as MiniMax tells a failure.
            SocketInput::Upstream(WsFrame::Close(_)) => {
                let frame = failure(1000, "MiniMax closed the connection during the synthesis");
                self.vendor_ended(vec![SocketAction::ToClient(frame)])
            }
            SocketInput::Refused(e) => {
                // The piece the refused reservation was for was never sent.
                self.pieces.pop_back();
                let code = if e.kind == ErrorKind::InsufficientBalance { INSUFFICIENT_BALANCE } else { INVALID_PARAMS };
                self.fail(code, &e.message)
            }
        })
    }

    fn client_said(&mut self, text: &str) -> Vec<SocketAction> {
        let Ok(Value::Object(frame)) = serde_json::from_str::<Value>(text) else {
            return self.fail(INVALID_PARAMS, "invalid params: a frame is a JSON object");
        };
        match frame.get("event").and_then(Value::as_str) {
            Some("task_start") => self.task_start(frame),
            Some("task_continue") => self.task_continue(&frame),
            Some("task_finish") => vec![upstream(json!({ "event": "task_finish" }))],
            _ => {
                self.fail(INVALID_PARAMS, "invalid params: the event must be task_start, task_continue or task_finish")
            }
        }
    }

    fn task_start(&mut self, frame: Map<String, Value>) -> Vec<SocketAction> {
        if self.model.is_some() {
            return self.fail(INVALID_PARAMS, "invalid params: one task_start per session");
        }
        if let Err(e) = exact_fields(&frame, TASK_START).and_then(|()| super::voices::exact_voice_fields(&frame)) {
            return self.fail(INVALID_PARAMS, &format!("invalid params: {}", e.message));
        }
        match frame.get("model").and_then(Value::as_str).filter(|m| !m.is_empty()) {
            Some(model) => self.model = Some(model.to_string()),
            None => return self.fail(INVALID_PARAMS, "invalid params: task_start needs a 'model'"),
        }
        if let Some(format) = frame.get("audio_setting").and_then(|a| a.get("format")).and_then(Value::as_str) {
            self.format = format.to_string();
        }
        self.voices = super::voices::voices_in(&frame);
        vec![upstream(Value::Object(frame))]
    }

    fn task_continue(&mut self, frame: &Map<String, Value>) -> Vec<SocketAction> {
        let Some(model) = self.model.clone() else {
            return self.fail(INVALID_PARAMS, "invalid params: send task_start before task_continue");
        };
        let text = match frame.get("text") {
            Some(Value::String(t)) if !t.trim().is_empty() => t,
            _ => return self.fail(INVALID_PARAMS, "invalid params: task_continue needs a non-empty 'text'"),
        };
        let usage = Usage { characters: Some(vendor_characters(text)), ..Usage::default() };
        let text_kept = if self.keep { text.clone() } else { String::new() };
        self.pieces.push_back(Piece { audio: false, text: text_kept, decoded: Vec::new() });
        vec![
            SocketAction::Reserve(SocketReserve { model, usage, uses: self.voices.clone() }),
            upstream(json!({ "event": "task_continue", "text": text })),
        ]
    }

    fn minimax_said(&mut self, text: String) -> Vec<SocketAction> {
        let Ok(v) = serde_json::from_str::<Value>(&text) else {
            return vec![SocketAction::ToClient(WsFrame::Text(text))];
        };
        let failed = v.pointer("/base_resp/status_code").and_then(Value::as_i64).is_some_and(|c| c != 0);
        let event = v["event"].as_str().unwrap_or_default();
        let mut actions = vec![SocketAction::ToClient(WsFrame::Text(text.clone()))];
        if failed || event == "task_failed" {
            // MiniMax ends the session after a failure.
            return self.vendor_ended(actions);
        }
        if event == "task_continued" {
            let audio = v.pointer("/data/audio").and_then(Value::as_str).filter(|a| !a.is_empty());
            if let (Some(piece), Some(hex)) = (self.pieces.front_mut(), audio) {
                piece.audio = true;
                if self.keep {
                    // Audio that is not hex is relayed as it came, and not kept.
                    piece.decoded.extend(super::decode_hex(hex).unwrap_or_default());
                }
            }
            if v["is_final"].as_bool() != Some(true) {
                return actions;
            }
            if let Some(piece) = self.pieces.pop_front() {
                if !piece.decoded.is_empty() {
                    let speech = SpeechAudio { audio: piece.decoded, format: self.format.clone(), text: piece.text };
                    actions.push(SocketAction::Keep(speech));
                }
                actions.push(match v.pointer("/extra_info/usage_characters").and_then(Value::as_u64) {
                    Some(n) => SocketAction::Bill(Usage { characters: Some(n), ..Usage::default() }),
                    None => SocketAction::BillReserved,
                });
            }
        }
        actions
    }

    /// MiniMax's failure frame to the consumer, then the end of the session.
    fn fail(&mut self, code: u32, message: &str) -> Vec<SocketAction> {
        self.end(vec![SocketAction::ToClient(failure(code, message))])
    }

    /// The end of the session: every piece still open was sent to MiniMax and is charged its
    /// reservation.
    fn end(&mut self, mut actions: Vec<SocketAction>) -> Vec<SocketAction> {
        actions.extend(self.pieces.drain(..).map(|_| SocketAction::BillReserved));
        actions.push(SocketAction::Close);
        actions
    }

    /// The end MiniMax made (a failure, its connection gone): a piece with audio is charged
    /// its reservation, one without is free.
    fn vendor_ended(&mut self, mut actions: Vec<SocketAction>) -> Vec<SocketAction> {
        let client_gone = self.client_gone;
        actions.extend(self.pieces.drain(..).map(|p| match p.audio || client_gone {
            true => SocketAction::BillReserved,
            false => SocketAction::Release,
        }));
        actions.push(SocketAction::Close);
        actions
    }
}

/// MiniMax's failure frame.
fn failure(code: u32, message: &str) -> WsFrame {
    let frame = json!({ "event": "task_failed", "base_resp": { "status_code": code, "status_msg": message } });
    WsFrame::Text(frame.to_string())
}

fn upstream(frame: Value) -> SocketAction {
    SocketAction::ToUpstream(WsFrame::Text(frame.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tollgate_plugin_sdk::testing::call;

    fn session() -> Session {
        Session::new(call(SOCKET, "", ""))
    }

    fn client(s: &mut Session, frame: &str) -> Vec<SocketAction> {
        s.frame(SocketInput::Client(WsFrame::Text(frame.into()))).unwrap()
    }

    fn minimax(s: &mut Session, frame: Value) -> Vec<SocketAction> {
        s.frame(SocketInput::Upstream(WsFrame::Text(frame.to_string()))).unwrap()
    }

    /// The JSON of a text frame an action sends.
    fn sent(a: &SocketAction) -> Option<Value> {
        match a {
            SocketAction::ToClient(WsFrame::Text(t)) | SocketAction::ToUpstream(WsFrame::Text(t)) => {
                Some(serde_json::from_str(t).unwrap())
            }
            _ => None,
        }
    }

    fn failure_code(actions: &[SocketAction]) -> Option<i64> {
        let frame = actions.iter().find_map(|a| match a {
            SocketAction::ToClient(_) => sent(a),
            _ => None,
        })?;
        assert_eq!(frame["event"], "task_failed");
        assert!(matches!(actions.last(), Some(SocketAction::Close)), "a failure ends the session");
        frame["base_resp"]["status_code"].as_i64()
    }

    fn started() -> Session {
        let mut s = session();
        let actions =
            client(&mut s, r#"{"event":"task_start","model":"speech-2.8-hd","voice_setting":{"voice_id":"v"}}"#);
        assert!(matches!(&actions[..], [SocketAction::ToUpstream(_)]));
        s
    }

    #[test]
    fn the_session_opens_minimaxs_socket_and_a_refused_upgrade_is_classified() {
        let Step::Socket(s) = session().first() else { panic!("a socket step") };
        assert_eq!(s.request.path, PATH);
        let m = <crate::MiniMax as tollgate_plugin_sdk::Plugin>::describe();
        assert!(m.routes.iter().any(|r| r.path == PATH && r.op == SOCKET));
    }

    #[test]
    fn each_text_is_reserved_before_it_is_sent_and_what_is_sent_is_what_was_reserved() {
        let mut s = started();
        // A repeated key reaches MiniMax once, as the plugin read it (the last).
        let actions = client(&mut s, r#"{"event":"task_continue","text":"a","text":"你好 world","voice":"x"}"#);
        let [SocketAction::Reserve(r), forward] = &actions[..] else { panic!("{actions:?}") };
        assert_eq!((r.model.as_str(), r.usage.characters), ("speech-2.8-hd", Some(10)));
        assert_eq!(r.uses, vec!["v".to_string()], "each piece uses the task_start's voice");
        assert_eq!(sent(forward).unwrap(), json!({ "event": "task_continue", "text": "你好 world" }));

        // MiniMax's frames go back verbatim; the final one charges what MiniMax counted.
        let chunk = json!({ "event": "task_continued", "data": { "audio": "494433" }, "is_final": false });
        assert!(matches!(&minimax(&mut s, chunk)[..], [SocketAction::ToClient(_)]));
        let last = json!({ "event": "task_continued", "data": { "audio": "00" }, "is_final": true, "extra_info": { "usage_characters": 11 } });
        let actions = minimax(&mut s, last);
        assert!(matches!(&actions[1], SocketAction::Bill(u) if u.characters == Some(11)), "{actions:?}");
        // A final frame without its count: the reservation, as estimated.
        client(&mut s, r#"{"event":"task_continue","text":"abc"}"#);
        let actions = minimax(&mut s, json!({ "event": "task_continued", "is_final": true }));
        assert!(matches!(actions[1], SocketAction::BillReserved));
    }

    #[test]
    fn what_minimax_could_read_otherwise_is_refused_and_not_sent() {
        let mut s = session();
        assert_eq!(
            failure_code(&client(&mut s, r#"{"event":"task_continue","text":"hi"}"#)),
            Some(2013),
            "no task_start"
        );
        let mut s = session();
        let actions = client(&mut s, r#"{"event":"task_start","model":"speech-2.8-hd","Model":"speech-02-turbo"}"#);
        assert_eq!(failure_code(&actions), Some(2013));
        assert!(!actions.iter().any(|a| matches!(a, SocketAction::ToUpstream(_))));
        for voices in [
            r#""voice_setting":{"voice_id":"male-qn-qingse","Voice_Id":"Other0001"}"#,
            r#""Timber_Weights":[{"voice_id":"Other0001","weight":1}]"#,
        ] {
            let mut s = session();
            let actions = client(&mut s, &format!(r#"{{"event":"task_start","model":"speech-2.8-hd",{voices}}}"#));
            assert_eq!(failure_code(&actions), Some(2013), "{voices}");
            assert!(!actions.iter().any(|a| matches!(a, SocketAction::ToUpstream(_))));
        }
        for frame in [r#"{"event":"TASK_CONTINUE","text":"hi"}"#, "not json", r#"{"event":"task_continue","text":" "}"#]
        {
            let mut s = started();
            let actions = client(&mut s, frame);
            assert_eq!(failure_code(&actions), Some(2013), "{frame}");
            assert!(!actions.iter().any(|a| matches!(a, SocketAction::ToUpstream(_) | SocketAction::Reserve(_))));
        }
    }

    #[test]
    fn a_refused_reservation_is_minimaxs_balance_failure_and_open_pieces_settle_by_what_reached_the_consumer() {
        let mut s = started();
        client(&mut s, r#"{"event":"task_continue","text":"one"}"#);
        minimax(&mut s, json!({ "event": "task_continued", "data": { "audio": "aa" }, "is_final": false }));
        client(&mut s, r#"{"event":"task_continue","text":"two"}"#);
        let refused = AdapterError::new(ErrorKind::InsufficientBalance, "balance too low");
        let actions = s.frame(SocketInput::Refused(refused)).unwrap();
        assert_eq!(failure_code(&actions), Some(1008));
        // "one" was sent: charged its reservation; "two" was refused, never sent: not settled here.
        let settled: Vec<_> =
            actions.iter().filter(|a| matches!(a, SocketAction::BillReserved | SocketAction::Release)).collect();
        assert!(matches!(settled[..], [SocketAction::BillReserved]), "{actions:?}");

        // The consumer gone: MiniMax finishes what it has, and each is charged what it counts.
        let mut s = started();
        client(&mut s, r#"{"event":"task_continue","text":"one"}"#);
        let actions = s.frame(SocketInput::Client(WsFrame::Close((1006, String::new())))).unwrap();
        assert_eq!(actions.len(), 1, "{actions:?}");
        assert_eq!(sent(&actions[0]).unwrap(), json!({ "event": "task_finish" }));
        let last = json!({ "event": "task_continued", "is_final": true, "extra_info": { "usage_characters": 3 } });
        assert!(matches!(minimax(&mut s, last)[1], SocketAction::Bill(ref u) if u.characters == Some(3)));
        // One MiniMax never counted, the consumer gone: its reservation.
        client(&mut s, r#"{"event":"task_continue","text":"two"}"#);
        let actions = s.frame(SocketInput::Upstream(WsFrame::Close((1006, String::new())))).unwrap();
        assert!(matches!(&actions[..], [SocketAction::BillReserved, SocketAction::Close]), "{actions:?}");

        // MiniMax failed a piece before any audio: free.
        let mut s = started();
        client(&mut s, r#"{"event":"task_continue","text":"one"}"#);
        let failed = json!({ "event": "task_failed", "base_resp": { "status_code": 1000, "status_msg": "x" } });
        let actions = minimax(&mut s, failed);
        assert!(matches!(&actions[1..], [SocketAction::Release, SocketAction::Close]), "{actions:?}");
        // One task_start per session.
        let mut s = started();
        let again = client(&mut s, r#"{"event":"task_start","model":"speech-02-turbo"}"#);
        assert_eq!(failure_code(&again), Some(2013));

        // MiniMax gone mid-synthesis: the consumer is told, and the piece with audio is charged.
        let mut s = started();
        client(&mut s, r#"{"event":"task_continue","text":"one"}"#);
        minimax(&mut s, json!({ "event": "task_continued", "data": { "audio": "aa" }, "is_final": false }));
        let actions = s.frame(SocketInput::Upstream(WsFrame::Close((1006, String::new())))).unwrap();
        assert_eq!(failure_code(&actions), Some(1000));
        assert!(actions.iter().any(|a| matches!(a, SocketAction::BillReserved)));
    }
}
