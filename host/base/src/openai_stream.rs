//! What both sides of the plugin boundary do with an OpenAI chat stream, done once: the
//! request asks the vendor for the usage chunk billing needs, and the events going back hide
//! that chunk when the consumer did not ask for it, stop at an error event and end with
//! `[DONE]`. The SDK's OpenAI-compatible adapter does it inside a plugin; the host does it for
//! the chat streams it forwards without entering the plugin (`tollgate:fast`). One rule, so a
//! stream is sent, relayed and billed the same whichever side ran it.
//!
//! Invariants:
//! - the request is the consumer's JSON object with `stream_options` replaced by
//!   `{"include_usage": true}` (and `model` by the upstream's name when one is given), nothing
//!   else changed; a body that is not one JSON object is not rewritten;
//! - an event's usage is read by `openai_json::Usage`, the reading of whole answers; an event
//!   that names a `usage` or `error` object and is not JSON fails the stream, as does an event
//!   with an `error` object (its message is the failure's).

use crate::openai_json::{MapOnly, Units, Usage};
use memchr::memmem::Finder;
use serde::Deserialize;
use serde_json::Value;
use std::sync::LazyLock;

/// A chat stream's state, from its request to its end.
#[derive(Debug, Default)]
pub struct ChatStream {
    /// The consumer asked for `stream_options.include_usage`: the usage chunk is theirs too.
    consumer_wants_usage: bool,
    saw_done: bool,
    usage: Option<Units>,
}

/// What to do with one event of the stream.
#[derive(Debug, PartialEq, Eq)]
pub enum Event {
    /// Give it to the consumer.
    Keep,
    /// The usage chunk the consumer did not ask for: read, not given.
    Hide,
    /// The stream failed with this message (the vendor's error event, or an event that could
    /// not be read): an upstream fault.
    Fail(String),
}

impl ChatStream {
    /// The upstream request's body for the consumer's `body` (with `model` set to
    /// `upstream_model` when one is given), and the stream's state; `None` when `body` is not
    /// one JSON object.
    pub fn request(body: &[u8], upstream_model: Option<&str>) -> Option<(String, ChatStream)> {
        if let Some(body) = with_usage_asked(body, upstream_model) {
            return Some((body, ChatStream::default()));
        }
        ChatStream::request_json(body, upstream_model).map(|(body, s)| (body.to_string(), s))
    }

    /// `request`, its body as JSON (for a vendor that adjusts it further).
    pub fn request_json(body: &[u8], upstream_model: Option<&str>) -> Option<(Value, ChatStream)> {
        let mut body: Value = match serde_json::from_slice(body) {
            Ok(v @ Value::Object(_)) => v,
            _ => return None,
        };
        if let Some(model) = upstream_model {
            body["model"] = Value::String(model.to_string());
        }
        let consumer_wants_usage =
            body.pointer("/stream_options/include_usage").and_then(Value::as_bool).unwrap_or(false);
        body["stream_options"] = serde_json::json!({ "include_usage": true });
        Some((body, ChatStream { consumer_wants_usage, ..ChatStream::default() }))
    }

    /// One event's `data`: whether it goes to the consumer. A usage it carries is kept (the
    /// last one read is the stream's).
    pub fn event(&mut self, data: &str) -> Event {
        let data = data.trim();
        if data == "[DONE]" {
            self.saw_done = true;
            return Event::Keep;
        }
        let v = match special(data) {
            Ok(None) => return Event::Keep,
            Ok(Some(v)) => v,
            Err(message) => return Event::Fail(message),
        };
        if let Some(u) = v.get("usage").filter(|u| u.is_object()) {
            if let Ok(MapOnly(u)) = MapOnly::<Usage>::deserialize(u) {
                self.usage = Some(u.units());
            }
            let no_choices = v.get("choices").and_then(Value::as_array).is_none_or(|c| c.is_empty());
            if no_choices && !self.consumer_wants_usage {
                return Event::Hide;
            }
        }
        Event::Keep
    }

    /// Whether a stream that ended (`complete`: the upstream closed it cleanly) needs the
    /// `[DONE]` its upstream did not send.
    pub fn needs_done(&self, complete: bool) -> bool {
        complete && !self.saw_done
    }

    /// The usage the stream reported; `None` when no event carried one.
    pub fn usage(&self) -> Option<Units> {
        self.usage
    }
}

/// `body` with `"stream_options":{"include_usage":true}` added as its last member, when it is
/// one JSON object in UTF-8 without a `stream_options` member (the usual request: the consumer
/// asked for no options) whose `model` is `upstream_model` already (or with none given): the
/// bytes the consumer sent, the member spliced in, where a parse into a `Value` and a print of
/// it cost a stream's first byte ~15k instructions. `None` for any other body (a
/// `stream_options` of any value, `null` too, another model, a member named twice, not one
/// object): `request_json` rewrites it.
fn with_usage_asked(body: &[u8], upstream_model: Option<&str>) -> Option<String> {
    /// Whether the member was there, whatever its value.
    #[derive(Default)]
    struct Present(bool);
    impl<'de> Deserialize<'de> for Present {
        fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            serde::de::IgnoredAny::deserialize(d).map(|_| Present(true))
        }
    }
    #[derive(Deserialize)]
    struct Members<'a> {
        #[serde(default)]
        stream_options: Present,
        #[serde(borrow)]
        model: Option<std::borrow::Cow<'a, str>>,
    }
    if value_might_refuse(body) {
        return None;
    }
    let text = std::str::from_utf8(body).ok()?;
    let inner = text.trim_ascii().strip_prefix('{')?.strip_suffix('}')?;
    let MapOnly(members) = serde_json::from_str::<MapOnly<Members>>(text).ok()?;
    if members.stream_options.0 || upstream_model.is_some_and(|m| members.model.as_deref() != Some(m)) {
        return None;
    }
    const MEMBER: &str = r#""stream_options":{"include_usage":true}}"#;
    let mut out = String::with_capacity(inner.len() + MEMBER.len() + 2);
    out.push('{');
    out.push_str(inner);
    if !inner.trim_ascii().is_empty() {
        out.push(',');
    }
    out.push_str(MEMBER);
    Some(out)
}

/// Whether a `Value` might refuse `body` where the reading of `with_usage_asked` (serde's
/// `IgnoredAny`, which builds nothing) takes it: containers nested past serde_json's limit
/// (128 deep), an escape of a surrogate (`\uD800` to `\uDFFF`: a lone one is refused), a
/// number beyond `f64` (an exponent, or 300 digits in a row; an escape's hex digits are not
/// one: `\u4e2d` is text). Such a body is rewritten
/// through a `Value`, as the plugin's `first()` does, so the host refuses what the plugin
/// would: the test is by bytes, strings included, and errs toward the `Value`.
fn value_might_refuse(body: &[u8]) -> bool {
    const DEEPEST: usize = 127;
    const LONGEST_NUMBER: usize = 300;
    let (mut openers, mut digits, mut i) = (0, 0, 0);
    while let Some(&b) = body.get(i) {
        i += 1;
        if b.is_ascii_digit() {
            digits += 1;
            if digits >= LONGEST_NUMBER {
                return true;
            }
            continue;
        }
        let after_digit = std::mem::take(&mut digits) > 0;
        match b {
            b'e' | b'E' if after_digit => return true,
            b'[' | b'{' => {
                openers += 1;
                if openers > DEEPEST {
                    return true;
                }
            }
            // An escape: a surrogate's is refused, another's four hex digits are no number.
            b'\\' if body.get(i) == Some(&b'u') => {
                if matches!(body.get(i + 1), Some(b'd' | b'D')) {
                    return true;
                }
                i += 5;
            }
            b'\\' => i += 1,
            _ => {}
        }
    }
    false
}

/// An OpenAI stream event's `data` when it names a `usage` or an `error` object, parsed
/// (`None`: it names neither, and is passed on unread); `Err`: the stream fails with this
/// message, the vendor's error event or an event that is not JSON. Every OpenAI-shaped stream
/// reads its events by this (the SDK's other streams too: speech, transcriptions).
pub fn special(data: &str) -> Result<Option<Value>, String> {
    if !mentions_object(data, &USAGE) && !mentions_object(data, &ERROR) {
        return Ok(None);
    }
    let v: Value = serde_json::from_str(data).map_err(|_| "the upstream sent an invalid stream chunk".to_string())?;
    if let Some(err) = v.get("error").filter(|e| e.is_object()) {
        return Err(err.get("message").and_then(Value::as_str).unwrap_or("upstream stream error").into());
    }
    Ok(Some(v))
}

/// The quoted names `special` looks for, their searchers set up once (a substring search set
/// its searcher up anew on each call: a fifth of a stream's relay).
static USAGE: LazyLock<Finder<'static>> = LazyLock::new(|| Finder::new("\"usage\""));
static ERROR: LazyLock<Finder<'static>> = LazyLock::new(|| Finder::new("\"error\""));

/// Whether `json` has a member `key` (quoted: `"usage"`) whose value is an object (a quick look
/// before parsing: most chunks of a stream carry neither usage nor error).
fn mentions_object(json: &str, key: &Finder) -> bool {
    let len = key.needle().len();
    key.find_iter(json.as_bytes()).any(|i| {
        let after = json[i + len..].trim_start();
        after.strip_prefix(':').is_some_and(|v| v.trim_start().starts_with('{'))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(b: &str) -> Value {
        serde_json::from_str(b).unwrap()
    }

    #[test]
    fn the_request_asks_for_usage_and_keeps_everything_else() {
        let (sent, s) =
            ChatStream::request(br#"{"model":"m","stream":true,"stream_options":{"x":1},"temperature":0.5}"#, None)
                .unwrap();
        assert_eq!(
            body(&sent),
            body(r#"{"model":"m","stream":true,"stream_options":{"include_usage":true},"temperature":0.5}"#)
        );
        assert!(!s.consumer_wants_usage);
        let (sent, s) =
            ChatStream::request(br#"{"model":"m","stream_options":{"include_usage":true}}"#, Some("up")).unwrap();
        assert_eq!(body(&sent), body(r#"{"model":"up","stream_options":{"include_usage":true}}"#));
        assert!(s.consumer_wants_usage);
        for not_an_object in [&b"[1]"[..], b"\"s\"", b"{", b""] {
            assert!(ChatStream::request(not_an_object, None).is_none());
        }
    }

    #[test]
    fn a_request_without_options_keeps_its_bytes_and_gains_the_member_at_its_end() {
        let cases: [(&[u8], &str); 3] = [
            (
                b"  {\"stream\": true, \"messages\":[{\"content\":\"\\u00e9\"}], \"n\": 100.50}\n",
                r#"{"stream": true, "messages":[{"content":"\u00e9"}], "n": 100.50,"stream_options":{"include_usage":true}}"#,
            ),
            (b"{ }", r#"{ "stream_options":{"include_usage":true}}"#),
            (b"{\"a\":1,\"a\":2}", r#"{"a":1,"a":2,"stream_options":{"include_usage":true}}"#),
        ];
        for (sent, want) in cases {
            let (body, s) = ChatStream::request(sent, None).unwrap();
            assert_eq!(body, want);
            assert!(!s.consumer_wants_usage);
        }
        // Options of any value, the member twice, a mapped model, text that is not UTF-8 or
        // not one object: rewritten whole, or not at all.
        for sent in [
            &br#"{"stream_options":null}"#[..],
            br#"{"stream_options":{"include_usage":false},"stream_options":{"include_usage":true}}"#,
            b"{\"x\":\"\xff\"}",
            b"{\"x\":1}}",
            b"[{}]",
        ] {
            assert_eq!(with_usage_asked(sent, None), None, "{}", String::from_utf8_lossy(sent));
        }
        let (body, s) = ChatStream::request(br#"{"stream_options":null}"#, None).unwrap();
        assert_eq!(body, r#"{"stream_options":{"include_usage":true}}"#);
        assert!(!s.consumer_wants_usage);
        // The model the upstream is asked for: kept in place when it is the consumer's.
        let (body, _) = ChatStream::request(br#"{"model":"m","stream":true}"#, Some("m")).unwrap();
        assert_eq!(body, r#"{"model":"m","stream":true,"stream_options":{"include_usage":true}}"#);
        for (sent, model) in [(&br#"{"model":"m","stream":true}"#[..], "up"), (br#"{"stream":true}"#, "up")] {
            assert_eq!(with_usage_asked(sent, Some(model)), None);
            let (body, _) = ChatStream::request(sent, Some(model)).unwrap();
            assert_eq!(body, r#"{"model":"up","stream":true,"stream_options":{"include_usage":true}}"#);
        }
        assert_eq!(with_usage_asked(br#"{"model":7}"#, None), None);
        // What a `Value` refuses (or might) goes the `Value`'s way: the same refusal as the
        // plugin's, or the same request.
        let nested = |depth: usize| format!(r#"{{"x":{}{}}}"#, "[".repeat(depth), "]".repeat(depth));
        assert!(with_usage_asked(nested(126).as_bytes(), None).is_some());
        for refused in [
            nested(127),
            r#"{"x":1e400}"#.into(),
            r#"{"x":"\ud800"}"#.into(),
            format!(r#"{{"x":{}}}"#, "9".repeat(400)),
        ] {
            assert_eq!(with_usage_asked(refused.as_bytes(), None), None, "{refused}");
            assert!(ChatStream::request(refused.as_bytes(), None).is_none(), "{refused}");
        }
        let escaped = br#"{"x":"\u4e2d\u6587 \\\\ud","y":"a\\"}"#;
        assert!(with_usage_asked(escaped, None).is_some());
        for taken_by_a_value in [r#"{"x":1.5e3}"#, r#"{"x":"\uD7FF"}"#, r#"{"x":"\\ud800 x2e"}"#] {
            assert_eq!(with_usage_asked(taken_by_a_value.as_bytes(), None), None);
            assert!(ChatStream::request(taken_by_a_value.as_bytes(), None).is_some());
        }
        assert_eq!(with_usage_asked(br#"{"model":"m","model":"m"}"#, Some("m")), None);
        let escaped = br#"{"model":"\u006d"}"#;
        assert_eq!(
            with_usage_asked(escaped, Some("m")).unwrap(),
            r#"{"model":"\u006d","stream_options":{"include_usage":true}}"#
        );
    }

    #[test]
    fn the_usage_chunk_is_read_and_hidden_unless_asked_for() {
        let usage = r#"{"choices":[],"usage":{"prompt_tokens":9,"completion_tokens":2}}"#;
        let (_, mut s) = ChatStream::request(br#"{"stream":true}"#, None).unwrap();
        assert_eq!(s.event(r#"{"choices":[{"delta":{"content":"usage"}}]}"#), Event::Keep);
        assert_eq!(s.event(usage), Event::Hide);
        assert_eq!(s.usage().unwrap().output_tokens, Some(2));
        assert!(s.needs_done(true) && !s.needs_done(false));
        assert_eq!(s.event("[DONE]"), Event::Keep);
        assert!(!s.needs_done(true));

        let (_, mut s) = ChatStream::request(br#"{"stream_options":{"include_usage":true}}"#, None).unwrap();
        assert_eq!(s.event(usage), Event::Keep);
        // A usage riding on a chunk with choices goes to the consumer whoever asked.
        let (_, mut s) = ChatStream::request(b"{}", None).unwrap();
        assert_eq!(s.event(r#"{"choices":[{"delta":{}}],"usage":{"prompt_tokens":1}}"#), Event::Keep);
        assert_eq!(s.usage().unwrap().input_tokens, Some(1));
    }

    #[test]
    fn an_error_event_or_an_unreadable_one_fails_the_stream() {
        let mut s = ChatStream::default();
        assert_eq!(s.event(r#"{"error":{"message":"overloaded"}}"#), Event::Fail("overloaded".into()));
        assert_eq!(s.event(r#"{"error":{}}"#), Event::Fail("upstream stream error".into()));
        assert_eq!(
            s.event(r#"{"usage":{"prompt_tokens":1}"#),
            Event::Fail("the upstream sent an invalid stream chunk".into())
        );
        // A usage of the wrong shape is not read, and the chunk is the consumer's as it came.
        assert_eq!(s.event(r#"{"choices":[{}],"usage":{"prompt_tokens":"9"}}"#), Event::Keep);
        assert_eq!(s.usage(), None);
    }

    #[test]
    fn mentions_object_ignores_null_and_strings() {
        assert!(mentions_object(r#"{"choices":[],"usage": {"prompt_tokens":1}}"#, &USAGE));
        assert!(!mentions_object(r#"{"choices":[{"delta":{"content":"usage"}}],"usage":null}"#, &USAGE));
        assert!(!mentions_object(r#"{"x":"\"usage\""}"#, &USAGE));
        assert!(mentions_object(r#"{"x":"\"usage\"","error" :{}}"#, &ERROR));
        assert_eq!(special(r#"{"choices":[],"usage":null}"#), Ok(None));
    }
}
