//! The keys of a JSON request body that a vendor may read otherwise than the gateway. Go's
//! `encoding/json`, and decoders like it, match a key to a field without regard to case (the
//! last match winning), and fold two non-ASCII letters onto ASCII ones: a body with `"model"`
//! and `"MODEL"`, or `"max_tokens"` and `"Max_Tokens"`, is priced and routed by the gateway
//! on one copy and run by such a vendor on the other. Such bodies are refused, whichever path
//! sends them (the consumer's bytes verbatim, or a rewrite that keeps their order).
//!
//! Invariants:
//! - `READ_FIELDS` names every field the host reads from a JSON body to route, authorize or
//!   price a call; a key that folds onto one of them without being it is refused;
//! - folding is Go's (ASCII letters in either case, `ſ` as `s`, the Kelvin sign as `k`), and
//!   also `ı` and `İ` as `i`, as decoders that upper-case without a locale read them (.NET's
//!   invariant culture); no other letter folds onto ASCII;
//! - a body whose keys cannot be walked is refused, never taken as clean: the walk reads keys
//!   and skips values as leniently as any of the host's readers.

use serde::de::{IgnoredAny, MapAccess, Visitor};
use serde::Deserialize;
use std::borrow::Cow;

/// The fields of a JSON body the host reads: the model (routing and the key's allowed models),
/// the stream flag and its options (a forwarded stream's usage), and what the estimate reads
/// (`max_tokens`, `max_completion_tokens`, `n`, `batch_size`, the texts, Gemini's config).
pub const READ_FIELDS: &[&str] = &[
    "model",
    "stream",
    "stream_options",
    "max_tokens",
    "max_completion_tokens",
    "n",
    "batch_size",
    "input",
    "text",
    "prompt",
    "generationConfig",
    "generation_config",
];

/// The fields the estimate reads inside Gemini's `generationConfig`, in both spellings.
const GENERATION_FIELDS: &[&str] = &["maxOutputTokens", "max_output_tokens", "candidateCount", "candidate_count"];

/// Whether a decoder that folds case reads `key` as `field` (an ASCII name).
pub fn folds_to(key: &str, field: &str) -> bool {
    let mut field = field.bytes();
    for c in key.chars() {
        let folded = match c {
            'ſ' => b's',
            '\u{212A}' => b'k',
            'ı' | 'İ' => b'i',
            c if c.is_ascii() => c as u8,
            _ => return false,
        };
        match field.next() {
            Some(f) if f.eq_ignore_ascii_case(&folded) => {}
            _ => return false,
        }
    }
    field.next().is_none()
}

/// The field of `fields` (ASCII names) that `key` names in another spelling, if any. Every
/// JSON body's every top-level key comes here: an ASCII key is compared by length first.
pub fn variant_of<'f>(key: &str, fields: &[&'f str]) -> Option<&'f str> {
    if key.is_ascii() {
        return fields.iter().copied().find(|f| f.len() == key.len() && *f != key && f.eq_ignore_ascii_case(key));
    }
    fields.iter().copied().find(|f| folds_to(key, f))
}

/// A key spelling a read field otherwise, and that field: `("MODEL", "model")`.
pub type Misspelled = (String, &'static str);

/// The first key of `body`'s object (or of its `generationConfig`) that spells a field the host
/// reads otherwise, with that field: `("MODEL", "model")`. `Ok(None)` for a body that does not
/// start as a JSON object (no field of it is read) or has no such key; an error for one that
/// starts as an object and cannot be read through (its keys could not be vouched for).
pub fn misspelled_field(body: &[u8]) -> Result<Option<Misspelled>, serde_json::Error> {
    if body.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
        return Ok(None);
    }
    walk(body, false).map(|w| w.misspelled)
}

/// `misspelled_field`'s walk of a JSON object that also reads its `model` (a string, once;
/// `None` when absent or null): a surface that routes by the body's model reads both in one
/// pass, and the engine need not walk the body again. An error for a body that is not one
/// object.
pub fn model_and_misspelled(body: &[u8]) -> Result<(Option<Cow<'_, str>>, Option<Misspelled>), serde_json::Error> {
    walk(body, true).map(|w| (w.model, w.misspelled))
}

/// One walk of `body`, which must be one JSON object and nothing after it.
fn walk(body: &[u8], model: bool) -> Result<Walk<'_>, serde_json::Error> {
    let mut de = serde_json::Deserializer::from_slice(body);
    let walk = serde::Deserializer::deserialize_map(&mut de, Keys { fields: READ_FIELDS, top: true, model })?;
    de.end()?;
    Ok(walk)
}

/// A key, or the model's value, as the parser gives it: borrowed from the body unless it has
/// escapes.
#[derive(Deserialize)]
struct Text<'a>(#[serde(borrow)] Cow<'a, str>);

/// What one walk of an object found: its first misspelled key and, when asked, its `model`.
#[derive(Default)]
struct Walk<'a> {
    misspelled: Option<Misspelled>,
    model: Option<Cow<'a, str>>,
}

/// Looks for a key spelling one of `fields` otherwise; at the top, also into Gemini's config,
/// and reads the `model` when `model` is set.
struct Keys {
    fields: &'static [&'static str],
    top: bool,
    model: bool,
}

impl<'de> Visitor<'de> for Keys {
    type Value = Walk<'de>;
    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a JSON object")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Walk<'de>, A::Error> {
        let mut walk = Walk::default();
        let mut model_seen = false;
        while let Some(Text(key)) = map.next_key()? {
            if walk.misspelled.is_none() {
                walk.misspelled = variant_of(&key, self.fields).map(|f| (key.to_string(), f));
            }
            let config = || folds_to(&key, "generationConfig") || folds_to(&key, "generation_config");
            if self.model && key == "model" {
                if std::mem::replace(&mut model_seen, true) {
                    return Err(serde::de::Error::duplicate_field("model"));
                }
                walk.model = map.next_value::<Option<Text<'de>>>()?.map(|t| t.0);
            } else if walk.misspelled.is_none() && self.top && config() {
                walk.misspelled = map.next_value_seed(Nested)?.misspelled;
            } else {
                map.next_value::<IgnoredAny>()?;
            }
        }
        Ok(walk)
    }
}

/// Gemini's config: looked into when it is an object; any other value is skipped (the
/// estimate refuses it; a number or string the parser cannot take fails the walk).
struct Nested;

impl<'de> serde::de::DeserializeSeed<'de> for Nested {
    type Value = Walk<'de>;
    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<Walk<'de>, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Nested {
    type Value = Walk<'de>;
    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Walk<'de>, A::Error> {
        Keys { fields: GENERATION_FIELDS, top: false, model: false }.visit_map(map)
    }
    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Walk<'de>, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(Walk::default())
    }
    fn visit_bool<E>(self, _: bool) -> Result<Walk<'de>, E> {
        Ok(Walk::default())
    }
    fn visit_i64<E>(self, _: i64) -> Result<Walk<'de>, E> {
        Ok(Walk::default())
    }
    fn visit_u64<E>(self, _: u64) -> Result<Walk<'de>, E> {
        Ok(Walk::default())
    }
    fn visit_f64<E>(self, _: f64) -> Result<Walk<'de>, E> {
        Ok(Walk::default())
    }
    fn visit_str<E>(self, _: &str) -> Result<Walk<'de>, E> {
        Ok(Walk::default())
    }
    fn visit_unit<E>(self) -> Result<Walk<'de>, E> {
        Ok(Walk::default())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_model_is_read_in_the_same_walk() {
        let read = |body: &str| model_and_misspelled(body.as_bytes()).map(|(m, x)| (m.map(|m| m.into_owned()), x));
        assert_eq!(read(r#"{"model":"m","messages":[]}"#).unwrap(), (Some("m".into()), None));
        assert_eq!(read(r#" {"mod\u0065l":"a\"b"}"#).unwrap(), (Some("a\"b".into()), None));
        assert_eq!(read(r#"{"model":null}"#).unwrap(), (None, None));
        assert_eq!(read(r#"{"messages":[]}"#).unwrap(), (None, None));
        assert_eq!(
            read(r#"{"model":"m","MODEL":"o1-pro"}"#).unwrap(),
            (Some("m".into()), Some(("MODEL".into(), "model")))
        );
        for bad in [r#"{"model":"a","model":"b"}"#, r#"{"model":5}"#, r#"[{"model":"m"}]"#, r#"{"model":"m"} x"#, ""] {
            assert!(read(bad).is_err(), "{bad}");
        }
        // Without reading the model, its type is not the walk's to judge.
        assert_eq!(misspelled_field(br#"{"model":5}"#).unwrap(), None);
    }

    #[test]
    fn keys_fold_as_go_folds_them() {
        for (key, field) in [
            ("MODEL", "model"),
            ("Max_Tokens", "max_tokens"),
            ("ſtream_options", "stream_options"),
            ("\u{212A}", "k"),
            ("batch_sİze", "batch_size"),
            ("ınput", "input"),
            ("model", "model"),
        ] {
            assert!(folds_to(key, field), "{key} folds to {field}");
        }
        for (key, field) in [("models", "model"), ("mode", "model"), ("modél", "model"), ("max-tokens", "max_tokens")]
        {
            assert!(!folds_to(key, field), "{key} is not {field}");
        }
        assert_eq!(variant_of("model", READ_FIELDS), None, "the field itself is no variant");
        assert_eq!(variant_of("Model", READ_FIELDS), Some("model"));
    }

    #[test]
    fn a_body_spelling_a_read_field_otherwise_is_found() {
        let found = |body: &str| misspelled_field(body.as_bytes()).unwrap();
        for (body, key, field) in [
            (r#"{"model":"m","MODEL":"dear","stream":true}"#, "MODEL", "model"),
            (r#"{"model":"m","max_tokens":1,"Max_Tokens":100000}"#, "Max_Tokens", "max_tokens"),
            (
                r#"{"model":"m","stream":true,"ſtream_options":{"include_usage":false}}"#,
                "ſtream_options",
                "stream_options",
            ),
            (r#"{"model":"m","\u004dodel":"dear"}"#, "Model", "model"),
            (r#"{"Model":"m"}"#, "Model", "model"),
            (r#"{"model":"m","Input":"a long text"}"#, "Input", "input"),
            (
                r#"{"generationConfig":{"maxOutputTokens":1,"MaxOutputTokens":9000}}"#,
                "MaxOutputTokens",
                "maxOutputTokens",
            ),
            (r#"{"GenerationConfig":{"maxOutputTokens":9000}}"#, "GenerationConfig", "generationConfig"),
            (r#"{"generation_config":{"Max_Output_Tokens":9000}}"#, "Max_Output_Tokens", "max_output_tokens"),
            (r#"{"generationConfig":null,"MODEL":"dear"}"#, "MODEL", "model"),
            (r#"{"generationConfig":[1,{"x":2}],"stream":1,"STREAM":true}"#, "STREAM", "stream"),
        ] {
            assert_eq!(found(body), Some((key.to_string(), field)), "{body}");
        }
        for body in [
            r#"{"model":"m","messages":[{"role":"user","content":"MODEL Max_Tokens"}],"stream":true}"#,
            r#"{"model":"m","metadata":{"MODEL":"x","Stream":true}}"#,
            r#"{"generationConfig":{"maxOutputTokens":9000,"temperature":1},"contents":[]}"#,
            r#"{"generationConfig":null,"Temperature":1}"#,
            r#"{"model":"m","x":"\ud800","y":1e400,"z":[[[[[[[[1]]]]]]]]}"#,
            r#"[{"MODEL":"x"}]"#,
            "",
        ] {
            assert_eq!(found(body), None, "{body}");
        }
        // What cannot be walked is refused, not taken as clean.
        for body in [
            r#"{"MODEL":"#,
            r#"{"generationConfig":1e400,"MODEL":"o1-pro"}"#,
            r#"{"generationConfig":"\ud800","MODEL":"o1-pro"}"#,
            r#"{"model":"m"}{"MODEL":"o1-pro"}"#,
        ] {
            assert!(misspelled_field(body.as_bytes()).is_err(), "{body}");
        }
    }
}
