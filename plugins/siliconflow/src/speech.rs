//! SiliconFlow's speech (OpenAI's `POST /v1/audio/speech`, op `speech`), quoted: the host
//! asks what a call may cost and which reference audio it names before it runs. The call
//! itself is OpenAI-compatible (`openai_compat` relays it); only its quote is here.
//!
//! Invariants:
//! - the quote reserves the characters of `input` as the host would estimate them
//!   (`vendor_characters`: CJK counts 2), at least what the call is charged: a relayed
//!   synthesis reports no usage and is charged its reservation;
//! - a `voice` that is a reference's `speech:…` uri is a vendor object the call uses: one the
//!   consumer uploaded through the gateway runs the call on the key that uploaded it
//!   (SiliconFlow keeps references per account), another user's is 404 without SiliconFlow
//!   being asked, and one never uploaded here is SiliconFlow's to answer; a stock voice
//!   (`FunAudioLLM/CosyVoice2-0.5B:alex`) names nothing and runs on any key;
//! - what the quote reads is read as SiliconFlow would: `input` must be a string, `voice` a
//!   string when given, and neither may be shadowed by a key equal but for case (a decoder
//!   matching keys case-insensitively could speak another voice than the one pinned).

use serde_json::Value;
use tollgate_plugin_sdk::text::vendor_characters;
use tollgate_plugin_sdk::{exact_fields, AdapterError, Body, Call, ErrorKind, Manifest, Operation, Usage};

pub const OP: &str = "speech";

/// The prefix of a reference's uri (`speech:<customName>:…`).
const REFERENCE: &str = "speech:";

/// The fields the quote reads.
const READ: &[&str] = &["input", "voice"];

/// Declares `speech` quoted (replacing the plain op of the manifest's list).
pub fn declare(manifest: Manifest) -> Manifest {
    manifest.with_operation(Operation::new(OP).quoted())
}

/// What a speech call's quote reads: its body.
pub struct Speech {
    body: Body,
}

impl Speech {
    /// `Some` for a speech call.
    pub fn of(call: &Call) -> Option<Speech> {
        (call.op == OP).then(|| Speech { body: call.body.clone() })
    }

    /// The characters of `input`.
    pub fn quote(&self) -> Result<Usage, AdapterError> {
        let body = self.body.object("speech is JSON: {\"model\", \"input\", \"voice\"}")?;
        exact_fields(&body, READ)?;
        match body.get("voice") {
            None | Some(Value::Null | Value::String(_)) => {}
            Some(_) => {
                return Err(bad(
                    "'voice' must be a string: a stock voice such as FunAudioLLM/CosyVoice2-0.5B:alex, or a reference's \"speech:…\" uri",
                ))
            }
        }
        match body.get("input") {
            Some(Value::String(text)) => Ok(Usage { characters: Some(vendor_characters(text)), ..Usage::default() }),
            _ => Err(bad("'input' (the text to speak) is required, as a string")),
        }
    }

    /// The reference the call speaks with, when its `voice` is one.
    pub fn uses(&self) -> Vec<String> {
        let Ok(body) = self.body.object("") else { return Vec::new() };
        body.get("voice")
            .and_then(Value::as_str)
            .filter(|v| v.starts_with(REFERENCE))
            .map(str::to_string)
            .into_iter()
            .collect()
    }
}

fn bad(message: &str) -> AdapterError {
    AdapterError::new(ErrorKind::BadRequest, message)
}

#[cfg(test)]
mod tests {
    use crate::{Plugin, SiliconFlowExchange};
    use tollgate_plugin_sdk::testing::{body_text, call, Harness, Outcome};
    use tollgate_plugin_sdk::{Body, ErrorKind, Exchange, Plugin as _, Step};

    const MODEL: &str = "FunAudioLLM/CosyVoice2-0.5B";

    fn exchange(body: &str) -> SiliconFlowExchange {
        SiliconFlowExchange::new(call("speech", MODEL, body))
    }

    #[test]
    fn speech_is_quoted_and_every_other_op_is_not() {
        let manifest = Plugin::describe();
        let ops: Vec<_> = manifest.operations.iter().filter(|o| o.name == "speech").collect();
        assert_eq!(ops.len(), 1, "declared once");
        assert!(ops[0].quoted && !ops[0].resend);
        let quoted: Vec<_> = manifest.operations.iter().filter(|o| o.quoted).map(|o| o.name.as_str()).collect();
        assert_eq!(quoted, ["video", "siliconflow.video_submit", "speech"]);
    }

    #[test]
    fn the_quote_is_the_inputs_characters_as_the_host_counts_them() {
        for (input, characters) in [("hello", 5), ("你好，world", 2 + 2 + 2 + 5), ("", 0)] {
            let body =
                serde_json::json!({ "model": MODEL, "input": input, "voice": "FunAudioLLM/CosyVoice2-0.5B:alex" });
            let usage = exchange(&body.to_string()).quote().unwrap();
            assert_eq!(usage.characters, Some(characters), "{input}");
            assert_eq!(
                usage.characters,
                Some(tollgate_plugin_sdk::text::vendor_characters(input)),
                "as the host estimates speech"
            );
            assert!(usage.input_tokens.is_none() && usage.output_tokens.is_none() && usage.extra.is_empty());
        }
    }

    #[test]
    fn a_reference_voice_is_used_and_a_stock_voice_is_not() {
        let uses = |body: &str| exchange(body).uses();
        let uri = "speech:mine:cm04pf7az00061413w7kz5qxs:mjtkgbyuunvtybnsvbxd";
        assert_eq!(uses(&format!(r#"{{"model":"{MODEL}","input":"hi","voice":"{uri}"}}"#)), [uri]);
        for voice in [r#""FunAudioLLM/CosyVoice2-0.5B:alex""#, r#""alloy""#, "null", r#""""#, r#""Speech:x""#] {
            let body = format!(r#"{{"model":"{MODEL}","input":"hi","voice":{voice}}}"#);
            assert!(uses(&body).is_empty(), "{voice}");
        }
        assert!(uses(&format!(r#"{{"model":"{MODEL}","input":"hi"}}"#)).is_empty());
    }

    #[test]
    fn what_the_quote_cannot_read_is_refused() {
        for (body, says) in [
            (r#"{"model":"m","input":7,"voice":"speech:a:b:c"}"#, "'input'"),
            (r#"{"model":"m","input":["a","b"]}"#, "'input'"),
            (r#"{"model":"m","input":null}"#, "'input'"),
            (r#"{"model":"m","voice":"speech:a:b:c"}"#, "'input'"),
            (r#"{"model":"m","input":"hi","voice":["speech:a:b:c"]}"#, "'voice'"),
            (r#"{"model":"m","input":"hi","voice":"alex","Voice":"speech:a:b:c"}"#, "'Voice' must be written 'voice'"),
            (r#"{"model":"m","INPUT":"a long text","input":"hi"}"#, "must be written 'input'"),
            ("not json", "JSON"),
        ] {
            match exchange(body).quote() {
                Err(e) => {
                    assert_eq!(e.kind, ErrorKind::BadRequest, "{body}");
                    assert!(e.message.contains(says), "{body}: {}", e.message);
                }
                Ok(u) => panic!("{body} was quoted {u:?}"),
            }
        }
    }

    #[test]
    fn speech_is_still_relayed_as_sent() {
        let body = format!(r#"{{"model":"{MODEL}","input":"hi","voice":"speech:mine:a:b","response_format":"mp3"}}"#);
        let mut ex = exchange(&body);
        match ex.first() {
            Step::Relay(r) => {
                assert_eq!((r.method.as_str(), r.path.as_str()), ("POST", "/v1/audio/speech"));
                assert!(matches!(r.body, Body::ClientBody), "the consumer's bytes: {:?}", r.body);
            }
            s => panic!("expected a relay, got {s:?}"),
        }
        // A mapped model is rewritten, the rest as sent.
        let mut c = call("speech", MODEL, &body);
        c.upstream_model = "FunAudioLLM/CosyVoice2-0.5B-mapped".into();
        let Outcome::Relay(r) = Harness::<Plugin>::new(c).run(|_| panic!("relayed by the host")).outcome else {
            panic!("expected a relay")
        };
        let sent: serde_json::Value = serde_json::from_str(&body_text(&r)).unwrap();
        assert_eq!(sent["model"], "FunAudioLLM/CosyVoice2-0.5B-mapped");
        assert_eq!(sent["voice"], "speech:mine:a:b");
    }

    #[test]
    fn other_ops_quote_as_before() {
        let mut chat = SiliconFlowExchange::new(call("chat", "Qwen/Qwen3-8B", r#"{"messages":[]}"#));
        assert!(matches!(chat.quote(), Err(e) if e.kind == ErrorKind::Unsupported));
        assert!(chat.uses().is_empty());
        let mut video = SiliconFlowExchange::new(call("video", "Wan-AI/Wan2.2-T2V-A14B", r#"{"prompt":"a"}"#));
        assert_eq!(video.quote().unwrap().extra, vec![("video".to_string(), 1)]);
        assert!(video.uses().is_empty());
    }
}
