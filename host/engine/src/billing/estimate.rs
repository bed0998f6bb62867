//! What a call reserves: upper bounds read from the request as the vendor reads it (a JSON
//! body, or a multipart form's text fields), or quoted by the plugin.

use super::{ModelPrice, Refusal, Reported};
use tollgate_base::text::vendor_characters;

/// The duration reserved for a model priced per second.
fn reserved_milliseconds(price: &ModelPrice) -> u64 {
    if price.per_second.0.is_zero() {
        0
    } else {
        price.max_seconds.saturating_mul(1000)
    }
}

/// The count fields the estimate reads (`RequestEstimate::of`); a form gives them as text.
const COUNT_FIELDS: [&str; 4] = ["max_tokens", "max_completion_tokens", "n", "batch_size"];

/// A multipart form's text fields as the JSON body the estimate reads: vendors read `n=2` in a
/// form as the number 2, and `prompt=123` as text. A field sent twice stays twice, so that the
/// estimate refuses it where it would (a vendor may read either copy).
pub fn form_estimate_body<'a>(fields: impl Iterator<Item = (&'a str, &'a str)>) -> Vec<u8> {
    let mut out = String::from("{");
    for (name, value) in fields {
        if out.len() > 1 {
            out.push(',');
        }
        out.push_str(&serde_json::Value::from(name).to_string());
        out.push(':');
        match value.trim().parse::<u64>() {
            Ok(n) if COUNT_FIELDS.contains(&name) => out.push_str(&n.to_string()),
            _ => out.push_str(&serde_json::Value::from(value).to_string()),
        }
    }
    out.push('}');
    out.into_bytes()
}

/// Where a call's reservation comes from.
#[derive(Debug, Clone, Copy)]
pub enum Estimate<'a> {
    /// The request's JSON body, read as the vendor reads it.
    Body(&'a [u8]),
    /// The plugin's quote (ops it declares `quoted`: video seconds, songs, images).
    Quote(&'a Reported),
    /// A batch's input file: the worst case of all its requests.
    Batch(&'a super::batch::BatchInput),
}

/// Upper bounds of a call's units, read from the request or quoted by the plugin.
#[derive(Debug)]
pub(super) struct RequestEstimate {
    pub(super) input_tokens: u64,
    pub(super) max_output_tokens: u64,
    pub(super) characters: u64,
    pub(super) images: u64,
    pub(super) milliseconds: u64,
    /// The plugin quoted output tokens: a reply reporting none is billed them.
    pub(super) quoted_output: bool,
    /// Units the plugin's quote names (a video's tier, songs).
    pub(super) named: Vec<(String, u64)>,
}

/// The ops that generate output tokens bounded by the request: OpenAI's chat and Anthropic's
/// messages (`max_tokens`), Gemini's generate (`generationConfig.maxOutputTokens`). A reply of
/// theirs that reports no output is billed what was reserved, never nothing.
pub(super) fn generates_tokens(op: &str) -> bool {
    matches!(op, "chat" | "messages" | "generate")
}

/// The most items (`n`, `batch_size`) one request may ask for: more is refused, not estimated.
const MAX_COUNT: u64 = 10_000;

impl RequestEstimate {
    /// Reads the bounds from the same JSON the plugin and the vendor read. A billing-relevant
    /// field of the wrong type (`"max_tokens":"x"`, `"n":"x"`) or written twice is refused,
    /// never estimated as zero: vendors read such bodies in ways the host cannot predict.
    pub(super) fn of(op: &str, body: &[u8], price: &ModelPrice) -> Result<RequestEstimate, Refusal> {
        /// Only the fields the estimate needs: serde skips the rest, and refuses a field
        /// written twice (a vendor may read the other copy).
        #[derive(serde::Deserialize, Default)]
        struct Fields {
            #[serde(default)]
            max_tokens: Option<serde_json::Value>,
            #[serde(default)]
            max_completion_tokens: Option<serde_json::Value>,
            #[serde(default)]
            input: Option<serde_json::Value>,
            #[serde(default)]
            text: Option<serde_json::Value>,
            #[serde(default)]
            prompt: Option<serde_json::Value>,
            #[serde(default)]
            n: Option<serde_json::Value>,
            #[serde(default)]
            batch_size: Option<serde_json::Value>,
            /// Gemini's bounds (`maxOutputTokens`, `candidateCount`), in either spelling Google
            /// accepts; both spellings at once are refused like any field given twice.
            #[serde(default, rename = "generationConfig", alias = "generation_config")]
            generation_config: Option<GenerationConfig>,
        }
        #[derive(serde::Deserialize, Default)]
        struct GenerationConfig {
            #[serde(default, rename = "maxOutputTokens", alias = "max_output_tokens")]
            max_output_tokens: Option<serde_json::Value>,
            #[serde(default, rename = "candidateCount", alias = "candidate_count")]
            candidate_count: Option<serde_json::Value>,
        }
        let f: Fields = if body.iter().all(u8::is_ascii_whitespace) {
            Fields::default()
        } else {
            serde_json::from_slice(body).map_err(|e| Refusal::BadRequest {
                param: None,
                message: format!("The request body must be one JSON object with each field once: {e}"),
            })?
        };
        let count = |name: &'static str, v: &Option<serde_json::Value>, min: u64, max: u64| match v {
            None | Some(serde_json::Value::Null) => Ok(None),
            Some(v) => match v.as_u64().filter(|n| (min..=max).contains(n)) {
                Some(n) => Ok(Some(n)),
                None => Err(Refusal::BadRequest {
                    param: Some(name),
                    message: format!("'{name}' must be an integer from {min} to {max}, not {v}."),
                }),
            },
        };
        let max_tokens = count("max_tokens", &f.max_tokens, 0, u32::MAX as u64)?;
        let max_completion = count("max_completion_tokens", &f.max_completion_tokens, 0, u32::MAX as u64)?;
        let n = count("n", &f.n, 1, MAX_COUNT)?;
        let batch_size = count("batch_size", &f.batch_size, 1, MAX_COUNT)?;
        let gemini = f.generation_config.unwrap_or_default();
        let max_output = count("maxOutputTokens", &gemini.max_output_tokens, 0, u32::MAX as u64)?;
        let candidates = count("candidateCount", &gemini.candidate_count, 1, MAX_COUNT)?;
        // Every text field a vendor may read: each is counted, so that adding an empty one
        // never hides the one the vendor synthesises.
        let mut characters = 0u64;
        for (name, v) in [("input", &f.input), ("text", &f.text), ("prompt", &f.prompt)] {
            characters = characters.saturating_add(text_characters(name, v.as_ref())?);
        }
        // The vendor generates `n` (or its own `batch_size`) items: the larger bounds both.
        let items = n.unwrap_or(1).max(batch_size.unwrap_or(1)).max(candidates.unwrap_or(1));
        // Vendors read one or the other: the larger bounds both.
        let per_choice = match (max_completion, max_tokens, max_output) {
            (None, None, None) => price.max_output_tokens,
            (a, b, c) => a.unwrap_or(0).max(b.unwrap_or(0)).max(c.unwrap_or(0)),
        };
        Ok(RequestEstimate {
            // A token is at least ~2 bytes of JSON-escaped text: bytes/2 is a generous bound.
            input_tokens: (body.len() as u64).div_ceil(2),
            max_output_tokens: if generates_tokens(op) { per_choice.saturating_mul(items) } else { 0 },
            characters,
            images: items,
            milliseconds: reserved_milliseconds(price),
            quoted_output: false,
            named: Vec::new(),
        })
    }

    /// A batch: every request's input bound, and every answer's output bound (the model's
    /// `max_output_tokens` where a request sets none).
    pub(super) fn batch(input: &super::batch::BatchInput, price: &ModelPrice) -> RequestEstimate {
        let (input_tokens, max_output_tokens) = input.bound(price.max_output_tokens);
        RequestEstimate {
            input_tokens,
            max_output_tokens,
            characters: 0,
            images: 0,
            milliseconds: 0,
            quoted_output: true,
            named: Vec::new(),
        }
    }

    /// The plugin's quote: each unit it names is reserved; a duration it does not name is the
    /// model's `max_seconds`, as for any call priced per second.
    pub(super) fn quoted(q: &Reported, price: &ModelPrice) -> RequestEstimate {
        RequestEstimate {
            input_tokens: q.input_tokens.unwrap_or(0),
            max_output_tokens: q.output_tokens.unwrap_or(0),
            characters: q.characters.unwrap_or(0),
            images: q.images.map_or(1, u64::from),
            milliseconds: match q.milliseconds {
                Some(ms) if !price.per_second.0.is_zero() => ms,
                _ => reserved_milliseconds(price),
            },
            quoted_output: q.output_tokens.is_some(),
            named: q.named.clone(),
        }
    }
}

/// The characters of a text field: a string, or a list of strings (token arrays count
/// nothing); any other type is refused.
fn text_characters(name: &'static str, v: Option<&serde_json::Value>) -> Result<u64, Refusal> {
    use serde_json::Value;
    let bad = || Refusal::BadRequest {
        param: Some(name),
        message: format!("'{name}' must be a string or a list of strings."),
    };
    match v {
        None | Some(Value::Null) => Ok(0),
        Some(Value::String(s)) => Ok(vendor_characters(s)),
        Some(Value::Array(items)) => items.iter().try_fold(0u64, |sum, item| match item {
            Value::String(s) => Ok(sum.saturating_add(vendor_characters(s))),
            Value::Number(_) => Ok(sum),
            Value::Array(tokens) if tokens.iter().all(Value::is_number) => Ok(sum),
            _ => Err(bad()),
        }),
        Some(_) => Err(bad()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rust_decimal::Decimal;

    #[test]
    fn a_form_is_estimated_as_the_vendor_reads_it() {
        let fields = [("n", "2"), ("prompt", "123"), ("max_tokens", " 9 "), ("n", "x")];
        let body = form_estimate_body(fields.into_iter());
        assert_eq!(String::from_utf8(body.clone()).unwrap(), r#"{"n":2,"prompt":"123","max_tokens":9,"n":"x"}"#);
        let price = ModelPrice { output_per_million: super::super::pricing::Price(Decimal::ONE), ..Default::default() };
        let once = form_estimate_body([("prompt", "12345"), ("n", "3")].into_iter());
        let e = RequestEstimate::of("image", &once, &price).unwrap();
        assert_eq!((e.characters, e.images), (5, 3), "a numeric prompt is text; n counts");
        assert!(RequestEstimate::of("image", &body, &price).is_err(), "n given twice is refused");
    }
}
