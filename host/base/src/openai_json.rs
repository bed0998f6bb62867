//! What both sides of the plugin boundary read of an OpenAI-shaped body, read once: whether a
//! request asks for a stream, and an answer's usage. The SDK's OpenAI-compatible adapter reads
//! them inside a plugin; the host reads them for the calls it forwards without entering the
//! plugin (`tollgate:fast`). One reading, so a call is sent and billed the same whichever side
//! read it.
//!
//! Invariants:
//! - a body that is not one JSON object of these shapes (a field of the wrong type, a key
//!   given twice) is unreadable: neither side takes it as read;
//! - units the answer does not give stay `None` (the host estimates them), never zero.

use serde::de::IgnoredAny;
use serde::Deserialize;

/// Whether a request body asks for a stream, read as the vendor reads it: from the parsed JSON
/// (an escaped key such as `"str\u0065am"` is still `stream`), never from a substring. An error:
/// not one JSON object with at most one boolean `stream`, which the vendor might read another
/// way.
pub fn asks_for_stream(body: &[u8]) -> Result<bool, serde_json::Error> {
    #[derive(Deserialize)]
    struct StreamField {
        #[serde(default)]
        stream: Option<bool>,
    }
    object(body)?;
    serde_json::from_slice::<StreamField>(body).map(|f| f.stream.unwrap_or(false))
}

/// `Ok` when `body` starts as one JSON object: serde's derived readers also take a struct from
/// an array (`[true]` as `{"stream": true}`), which no vendor means.
fn object(body: &[u8]) -> Result<(), serde_json::Error> {
    match body.iter().find(|b| !b.is_ascii_whitespace()) {
        Some(b'{') => Ok(()),
        _ => Err(serde::de::Error::custom("expected one JSON object")),
    }
}

/// A `T` read only from a JSON object (serde's derived readers also take a struct from an
/// array, `[9, 2]` as `{"prompt_tokens": 9, "completion_tokens": 2}`, which no vendor means).
#[derive(Debug, Default)]
pub struct MapOnly<T>(pub T);

impl<'de, T: Deserialize<'de>> Deserialize<'de> for MapOnly<T> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Object<T>(std::marker::PhantomData<T>);
        impl<'de, T: Deserialize<'de>> serde::de::Visitor<'de> for Object<T> {
            type Value = T;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, map: A) -> Result<T, A::Error> {
                T::deserialize(serde::de::value::MapAccessDeserializer::new(map))
            }
        }
        d.deserialize_map(Object(std::marker::PhantomData)).map(MapOnly)
    }
}

/// What an answer says it used, in the units a plugin reports.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Units {
    pub input_tokens: Option<u64>,
    pub output_tokens: Option<u64>,
    pub cached_tokens: Option<u64>,
    pub images: Option<u32>,
}

/// OpenAI's usage object, with DeepSeek's cache fields; the audio and image APIs' names
/// (`input_tokens`, `output_tokens`) read where the chat names are absent.
#[derive(Deserialize, Default, Debug)]
pub struct Usage {
    #[serde(default)]
    pub prompt_tokens: Option<u64>,
    #[serde(default)]
    pub completion_tokens: Option<u64>,
    #[serde(default)]
    pub input_tokens: Option<u64>,
    #[serde(default)]
    pub output_tokens: Option<u64>,
    #[serde(default)]
    pub prompt_tokens_details: Option<MapOnly<PromptDetails>>,
    #[serde(default)]
    pub prompt_cache_hit_tokens: Option<u64>,
}

#[derive(Deserialize, Default, Debug)]
pub struct PromptDetails {
    #[serde(default)]
    pub cached_tokens: Option<u64>,
}

impl Usage {
    pub fn units(&self) -> Units {
        Units {
            input_tokens: self.prompt_tokens.or(self.input_tokens),
            output_tokens: self.completion_tokens.or(self.output_tokens),
            cached_tokens: self
                .prompt_tokens_details
                .as_ref()
                .and_then(|d| d.0.cached_tokens)
                .or(self.prompt_cache_hit_tokens),
            images: None,
        }
    }
}

/// The parts of a whole answer that tell its usage: `usage`, an image generation's `data` (one
/// item per image), a rerank's `tokens` or `meta.tokens` (Cohere's shape, which rerank vendors
/// follow).
#[derive(Deserialize, Debug)]
pub struct Answer {
    usage: Option<MapOnly<Usage>>,
    #[serde(default)]
    data: Option<Vec<IgnoredAny>>,
    #[serde(default)]
    tokens: Option<RerankTokens>,
    #[serde(default)]
    meta: Option<RerankMeta>,
}

#[derive(Deserialize, Debug)]
struct RerankMeta {
    tokens: Option<RerankTokens>,
}

#[derive(Deserialize, Debug, Clone, Copy)]
struct RerankTokens {
    input_tokens: Option<u64>,
    output_tokens: Option<u64>,
}

impl Answer {
    /// Reads a whole answer's body; `None`: not one JSON object of the shapes above.
    pub fn read(body: &[u8]) -> Option<Answer> {
        object(body).ok()?;
        serde_json::from_slice(body).ok()
    }

    /// The units of the answer's `usage` object alone, `None` without one: what the host bills
    /// a forwarded call by (`tollgate:fast`: OpenAI's usage, whatever the op).
    pub fn usage(&self) -> Option<Units> {
        self.usage.as_ref().map(|u| u.0.units())
    }

    /// The units of `op`'s answer: its usage; an image generation's images; a rerank's tokens.
    pub fn units(&self, op: &str) -> Units {
        let images = self.data.as_ref().map(|d| d.len() as u32).filter(|_| op == "images");
        let rerank = self.tokens.or(self.meta.as_ref().and_then(|m| m.tokens)).filter(|_| op == "rerank");
        match (&self.usage, rerank) {
            (Some(usage), _) => Units { images, ..usage.0.units() },
            (None, Some(t)) => Units {
                input_tokens: t.input_tokens,
                output_tokens: Some(t.output_tokens.unwrap_or(0)),
                ..Units::default()
            },
            (None, None) => Units { images, ..Units::default() },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn units(op: &str, body: &str) -> Option<Units> {
        Answer::read(body.as_bytes()).map(|a| a.units(op))
    }

    #[test]
    fn a_chats_usage_reads_openais_names_and_deepseeks_cache_hits() {
        let u = units(
            "chat",
            r#"{"usage":{"prompt_tokens":9,"completion_tokens":2,"prompt_tokens_details":{"cached_tokens":4}}}"#,
        );
        assert_eq!(
            u,
            Some(Units { input_tokens: Some(9), output_tokens: Some(2), cached_tokens: Some(4), images: None })
        );
        let u = units("chat", r#"{"usage":{"input_tokens":3,"output_tokens":1,"prompt_cache_hit_tokens":2}}"#);
        assert_eq!(
            u,
            Some(Units { input_tokens: Some(3), output_tokens: Some(1), cached_tokens: Some(2), images: None })
        );
        let u = units("embeddings", r#"{"data":[{"embedding":[0.1]}],"usage":{"prompt_tokens":1}}"#).unwrap();
        assert_eq!((u.input_tokens, u.output_tokens, u.images), (Some(1), None, None), "only images count data");
    }

    #[test]
    fn an_answer_of_the_wrong_shape_is_unreadable_not_free() {
        for body in [
            r#"{"usage":{"prompt_tokens":"9"}}"#,
            r#"{"usage":{"prompt_tokens":9},"usage":{"prompt_tokens":1}}"#,
            r#"{"data":5,"usage":{"prompt_tokens":9}}"#,
            r#"{"usage":{"prompt_tokens":-1}}"#,
            "[1]",
            r#"[{"prompt_tokens":9,"completion_tokens":2}]"#,
            r#"{"usage":[9,2]}"#,
            "not json",
        ] {
            assert!(Answer::read(body.as_bytes()).is_none(), "{body}");
        }
        let a = Answer::read(br#"{"usage":null,"choices":[]}"#).unwrap();
        assert_eq!(a.usage(), None);
        assert_eq!(a.units("chat"), Units::default(), "no usage is no units, never zeros");
    }

    #[test]
    fn a_stream_is_asked_by_one_boolean_read_from_the_json() {
        assert!(asks_for_stream(br#"{"model":"m","str\u0065am":true}"#).unwrap());
        assert!(!asks_for_stream(br#"{"model":"m","messages":[{"content":"\"stream\":true"}]}"#).unwrap());
        assert!(!asks_for_stream(br#"{"stream":null}"#).unwrap());
        for body in [&br#"{"stream":false,"stream":true}"#[..], br#"{"stream":"yes"}"#, b"[true]", b""] {
            assert!(asks_for_stream(body).is_err(), "{}", String::from_utf8_lossy(body));
        }
    }

    #[test]
    fn images_and_rerank_count_their_own_units() {
        let u = units("images", r#"{"data":[{"url":"a"},{"url":"b"}]}"#).unwrap();
        assert_eq!(u.images, Some(2));
        let u = units("rerank", r#"{"results":[],"meta":{"tokens":{"input_tokens":7}}}"#).unwrap();
        assert_eq!((u.input_tokens, u.output_tokens), (Some(7), Some(0)));
    }
}
