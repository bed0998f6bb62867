//! Batches: a file of chat requests (OpenAI's batch input, one JSON request per line) that the
//! vendor runs later at its batch price, and the file of answers it writes.
//!
//! - An upload whose form says `purpose` = `batch` is read by the host before it is sent
//!   ([`BatchInput::read`]): a file that is not one model's chat requests is refused (400),
//!   and the summary (model, lines, token bounds) is kept with the file the vendor created.
//! - A call of op [`BATCH_OP`] names that file (its route's affinity): it is priced by the
//!   file's model at the model's `batch` share, and reserves the file's worst case: every
//!   line's input bound (its bytes / 2, as for any call) and output bound (`max_tokens` ×
//!   `n`, or the model's `max_output_tokens` for a line that sets none).
//! - The batch's result files are archived for the consumer, and read as they are written
//!   ([`BatchOutput`]): each answered line is priced by its own usage (a model's input tiers
//!   apply per request, as the vendor bills them), failed lines cost nothing, and a result
//!   that cannot be read line by line is charged the hold (never free: the vendor ran it).
//!
//! Every bound is explicit: at most [`MAX_LINES`] lines per file, at most [`MAX_LINE_BYTES`]
//! per result line.

use super::pricing::Units;
use serde::{Deserialize, Serialize};
use tollgate_base::json_keys;

/// The op of a call that creates a batch (the host reads its input file's summary).
pub const BATCH_OP: &str = "batch";
/// The most requests in one batch file (OpenAI's limit; SiliconFlow allows 5,000).
pub const MAX_LINES: usize = 50_000;
/// The longest result line read (a long answer); a longer one makes the result unreadable.
pub const MAX_LINE_BYTES: usize = 16 << 20;

/// What the host keeps of a batch input file: enough to price and bound a batch made from it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BatchInput {
    /// The one model every line names.
    pub model: String,
    pub lines: u64,
    /// The input bound of every line, summed.
    pub input_tokens: u64,
    /// The output bounds the lines set (`max_tokens` × `n`), summed.
    pub output_tokens: u64,
    /// Answers (lines × `n`) with no bound set: each reserves the model's `max_output_tokens`.
    pub unbounded: u64,
}

impl BatchInput {
    /// Reads a batch input file; the error says what is wrong and where.
    pub fn read(file: &[u8]) -> Result<BatchInput, String> {
        #[derive(Deserialize)]
        struct Line {
            #[serde(default)]
            url: Option<String>,
            body: Body,
        }
        #[derive(Deserialize)]
        struct Body {
            #[serde(default)]
            model: Option<String>,
            #[serde(default)]
            max_tokens: Option<u64>,
            #[serde(default)]
            max_completion_tokens: Option<u64>,
            #[serde(default)]
            n: Option<u64>,
        }
        let text = std::str::from_utf8(file).map_err(|_| "the batch file is not UTF-8 text".to_string())?;
        let mut input = BatchInput { model: String::new(), lines: 0, input_tokens: 0, output_tokens: 0, unbounded: 0 };
        for (i, line) in text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
            let at = i + 1;
            if input.lines as usize == MAX_LINES {
                return Err(format!("a batch file may hold at most {MAX_LINES} requests"));
            }
            let l: Line = serde_json::from_str(line)
                .map_err(|e| format!("line {at} of the batch file is not a request with a 'body' object: {e}"))?;
            // Every key is walked, and a line a `Value` cannot read (a lone surrogate or a
            // number beyond f64 in a field the line's reader skipped) is refused: a key behind
            // it could not be vouched for.
            let whole: serde_json::Value = serde_json::from_str(line)
                .map_err(|e| format!("line {at} of the batch file is not JSON the gateway reads whole: {e}"))?;
            if let Some(key) = case_variant(&whole) {
                return Err(format!(
                    "line {at} of the batch file spells the field '{key}' in another case: a vendor may read it where the gateway reads the other"
                ));
            }
            if l.url.as_deref().is_some_and(|u| u != "/v1/chat/completions") {
                return Err(format!(
                    "line {at} of the batch file asks for {}; batches run chat completions only",
                    l.url.unwrap_or_default()
                ));
            }
            let model = l.body.model.filter(|m| !m.is_empty()).ok_or_else(|| {
                format!("line {at} of the batch file names no model: every line names the model the batch is priced by")
            })?;
            if input.model.is_empty() {
                input.model = model;
            } else if model != input.model {
                return Err(format!(
                    "line {at} of the batch file names the model '{model}' and an earlier line '{}': a batch runs one model",
                    input.model
                ));
            }
            let n = l.body.n.unwrap_or(1).max(1);
            match l.body.max_tokens.max(l.body.max_completion_tokens) {
                Some(max) => input.output_tokens = input.output_tokens.saturating_add(max.saturating_mul(n)),
                None => input.unbounded = input.unbounded.saturating_add(n),
            }
            // A token is at least ~2 bytes of JSON text, as for any call's input bound.
            input.input_tokens = input.input_tokens.saturating_add((line.len() as u64).div_ceil(2));
            input.lines += 1;
        }
        if input.lines == 0 {
            return Err("the batch file holds no request".into());
        }
        Ok(input)
    }

    /// The worst case of a batch made from this file, with `max_output_tokens` for every
    /// answer the file leaves unbounded: (input tokens, output tokens).
    pub fn bound(&self, max_output_tokens: u64) -> (u64, u64) {
        (self.input_tokens, self.output_tokens.saturating_add(self.unbounded.saturating_mul(max_output_tokens)))
    }
}

/// The fields a batch line is priced by, in the line and in its `body`.
const PRICED_FIELDS: &[&str] = &["body", "url", "model", "max_tokens", "max_completion_tokens", "n"];

/// A key of the line or of its `body` that is a priced field spelled otherwise (`MODEL`,
/// `Max_Tokens`, `max_tokenſ`: `json_keys`): some vendors' parsers match keys without regard to
/// case, and would read what the gateway did not.
fn case_variant(line: &serde_json::Value) -> Option<String> {
    let objects = [Some(line), line.get("body")];
    let mut keys = objects.into_iter().flatten().filter_map(serde_json::Value::as_object).flat_map(|o| o.keys());
    keys.find(|key| json_keys::variant_of(key, PRICED_FIELDS).is_some()).cloned()
}

/// The usage of a batch's answers, read from its result files as they are downloaded.
#[derive(Debug, Default)]
pub struct BatchOutput {
    /// The part of a line not yet ended.
    partial: Vec<u8>,
    /// Each answered request's units.
    pub answered: Vec<Units>,
    /// Why the result cannot be priced line by line (a line too long or unreadable, an answer
    /// without usage, more answers than a batch may hold): the batch is charged its hold.
    pub unreadable: Option<String>,
}

impl BatchOutput {
    /// A chunk of a result file.
    pub fn feed(&mut self, mut data: &[u8]) {
        if self.unreadable.is_some() {
            return;
        }
        while let Some(end) = data.iter().position(|b| *b == b'\n') {
            if self.partial.is_empty() {
                self.line(&data[..end]);
            } else {
                self.partial.extend_from_slice(&data[..end]);
                let line = std::mem::take(&mut self.partial);
                self.line(&line);
            }
            data = &data[end + 1..];
        }
        if self.partial.len() + data.len() > MAX_LINE_BYTES {
            self.unreadable = Some(format!("a result line is longer than {MAX_LINE_BYTES} bytes"));
            self.partial = Vec::new();
        } else {
            self.partial.extend_from_slice(data);
        }
    }

    /// The end of one result file (its last line may have no line end).
    pub fn end_file(&mut self) {
        let line = std::mem::take(&mut self.partial);
        self.line(&line);
    }

    fn line(&mut self, line: &[u8]) {
        #[derive(Deserialize)]
        struct Line {
            #[serde(default)]
            response: Option<Response>,
        }
        #[derive(Deserialize)]
        struct Response {
            #[serde(default)]
            status_code: Option<u16>,
            #[serde(default)]
            body: Option<Body>,
        }
        #[derive(Deserialize)]
        struct Body {
            #[serde(default)]
            usage: Option<Usage>,
        }
        #[derive(Deserialize)]
        struct Usage {
            #[serde(default)]
            prompt_tokens: u64,
            #[serde(default)]
            completion_tokens: u64,
            #[serde(default)]
            prompt_tokens_details: Option<Details>,
        }
        #[derive(Deserialize)]
        struct Details {
            #[serde(default)]
            cached_tokens: Option<u64>,
        }
        if self.unreadable.is_some() || line.iter().all(u8::is_ascii_whitespace) {
            return;
        }
        let parsed: Line = match serde_json::from_slice(line) {
            Ok(l) => l,
            Err(e) => {
                self.unreadable = Some(format!("a result line is not JSON: {e}"));
                return;
            }
        };
        // A request the vendor refused (an error line) produced nothing: free.
        let Some(response) = parsed.response.filter(|r| r.status_code.is_none_or(|s| (200..300).contains(&s))) else {
            return;
        };
        let Some(usage) = response.body.and_then(|b| b.usage) else {
            self.unreadable = Some("an answered request reports no usage".into());
            return;
        };
        if self.answered.len() == MAX_LINES {
            self.unreadable = Some(format!("the result holds more than {MAX_LINES} answers"));
            return;
        }
        self.answered.push(Units {
            input_tokens: usage.prompt_tokens,
            output_tokens: usage.completion_tokens,
            cached_tokens: usage.prompt_tokens_details.and_then(|d| d.cached_tokens).unwrap_or(0),
            ..Units::default()
        });
    }
}

impl super::Billing {
    /// What a finished batch of `model` costs, by its answers' usage, for a consumer of
    /// `group`: each answer priced on its own at the model's batch share, the whole never above
    /// the hold. The hold, marked estimated, when the result could not be read line by line
    /// or the model has no price now.
    pub fn batch_charge(&self, model: &str, group: &str, output: &BatchOutput, held: i64) -> (i64, bool) {
        let table = self.table();
        let priced = super::Priced::Batch(model);
        let Some(price) = priced.price(&table) else { return (held, true) };
        if output.unreadable.is_some() {
            return (held, true);
        }
        let factor = priced.factor(&table, group, price);
        let mut total = 0i64;
        for units in &output.answered {
            match price.cost_micros(units, &[], factor).and_then(|c| total.checked_add(c)) {
                Some(t) => total = t,
                None => return (held, true),
            }
        }
        (total.min(held), false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_input_file_is_summed_per_line_and_refused_when_it_is_not_one_models_chat() {
        let line = |id: &str, extra: &str| {
            format!(
                r#"{{"custom_id":"{id}","method":"POST","url":"/v1/chat/completions","body":{{"model":"m1","messages":[{{"role":"user","content":"hi"}}]{extra}}}}}"#
            )
        };
        let (a, b, c) = (line("a", r#","max_tokens":100"#), line("b", r#","max_tokens":10,"n":3"#), line("c", ""));
        let file = format!("{a}\n\n{b}\r\n{c}");
        let input = BatchInput::read(file.as_bytes()).unwrap();
        let bytes = |l: &str| (l.len() as u64).div_ceil(2);
        assert_eq!(
            input,
            BatchInput {
                model: "m1".into(),
                lines: 3,
                input_tokens: bytes(&a) + bytes(&b) + bytes(&c),
                output_tokens: 130,
                unbounded: 1
            }
        );
        assert_eq!(input.bound(4096), (input.input_tokens, 130 + 4096));

        let refused = |file: &str| BatchInput::read(file.as_bytes()).unwrap_err();
        assert!(refused("").contains("no request"));
        assert!(refused("not json").contains("line 1"));
        assert!(refused(&format!("{a}\n{}", a.replace("m1", "m2"))).contains("line 2"), "two models");
        assert!(refused(&a.replace(r#""model":"m1","#, "")).contains("names no model"));
        let smuggled = a.replace(r#""model":"m1","#, r#""model":"m1","MODEL":"dear","#);
        assert!(refused(&smuggled).contains("'MODEL'"), "a model in another case");
        assert!(refused(&a.replace("max_tokens", "Max_Tokens")).contains("'Max_Tokens'"));
        assert!(refused(&a.replace("max_tokens", "max_tokenſ")).contains("'max_tokenſ'"), "folded as Go folds");
        for hidden in [r#""x":"\ud800","#, r#""x":1e400,"#] {
            let smuggled = a.replace(r#""model":"m1","#, &format!(r#""model":"m1",{hidden}"Max_Tokens":100000,"#));
            assert!(refused(&smuggled).contains("reads whole"), "{hidden}: {}", refused(&smuggled));
        }
        assert!(refused(&a.replace(r#""body""#, r#""Body""#)).contains("line 1"));
        assert!(refused(&a.replace("/v1/chat/completions", "/v1/embeddings")).contains("chat completions only"));
        assert!(refused(&a.replace("100", "-1")).contains("line 1"), "a negative bound");
        assert!(BatchInput::read(b"\xff").unwrap_err().contains("UTF-8"));
        let too_many = format!("{a}\n").repeat(MAX_LINES + 1);
        assert!(refused(&too_many).contains("at most"));
    }

    #[test]
    fn answers_are_read_across_chunks_errors_are_free_and_an_unreadable_result_says_why() {
        let ok = |p: u64, c: u64, cached: u64| {
            format!(
                r#"{{"id":"r","custom_id":"x","response":{{"status_code":200,"body":{{"usage":{{"prompt_tokens":{p},"completion_tokens":{c},"prompt_tokens_details":{{"cached_tokens":{cached}}}}}}}}},"error":null}}"#
            )
        };
        let failed = r#"{"id":"r","custom_id":"y","response":{"status_code":400,"body":{"error":{"message":"no"}}},"error":null}"#;
        let file = format!("{}\n{failed}\n{}", ok(10, 5, 2), ok(7, 3, 0));
        for chunk in [1, 7, 1000] {
            let mut out = BatchOutput::default();
            for piece in file.as_bytes().chunks(chunk) {
                out.feed(piece);
            }
            out.end_file();
            assert_eq!(out.unreadable, None);
            let units = |i, o, c| Units { input_tokens: i, output_tokens: o, cached_tokens: c, ..Units::default() };
            assert_eq!(out.answered, vec![units(10, 5, 2), units(7, 3, 0)], "chunks of {chunk}");
        }
        // Two files: the first's last line (no line end) is not glued to the second's.
        let mut out = BatchOutput::default();
        out.feed(ok(1, 1, 0).as_bytes());
        out.end_file();
        out.feed(failed.as_bytes());
        out.end_file();
        assert_eq!((out.answered.len(), out.unreadable), (1, None));

        let unreadable = |text: &str| {
            let mut out = BatchOutput::default();
            out.feed(text.as_bytes());
            out.end_file();
            out.unreadable.expect("unreadable")
        };
        assert!(unreadable("garbage\n").contains("not JSON"));
        assert!(unreadable(r#"{"response":{"status_code":200,"body":{}}}"#).contains("no usage"));
        let mut long = BatchOutput::default();
        long.feed(&vec![b'x'; MAX_LINE_BYTES + 1]);
        assert!(long.unreadable.is_some_and(|u| u.contains("longer")));
    }

    #[test]
    fn a_batch_reserves_its_worst_case_and_is_charged_each_answer_at_the_batch_share() {
        use crate::billing::{Account, Estimate, Priced, Refusal};
        // 1 and 2 per million tokens, 4 and 8 above 1,000 input tokens, at half price in a batch.
        let b = super::super::tests::billing(concat!(
            "[models.m]\ninput_per_million = \"1\"\noutput_per_million = \"2\"\nmax_output_tokens = 100\n",
            "batch = \"0.5\"\n[[models.m.tiers]]\nabove_input_tokens = 1000\ninput_per_million = \"4\"\n",
            "output_per_million = \"8\"\n[models.full]\ninput_per_million = \"1\"\n",
        ));
        let u1 = Account::User(1);
        b.wallets.set_db_balances([(u1, 1_000_000)]);
        let input = BatchInput { model: "m".into(), lines: 3, input_tokens: 3_000, output_tokens: 200, unbounded: 1 };
        // Reserved at the dearest tier, for 3,000 input and 200 + 100 output tokens, halved:
        // (3,000 × 4 + 300 × 8) / 2 micros.
        let m = b.start_with(&[u1], "default", Priced::Batch("m"), BATCH_OP, Estimate::Batch(&input)).unwrap();
        assert_eq!(m.reservation.amount, 7_200);
        let held = m.reservation.amount;
        b.release(m);
        // Each answer at its own tier: 500 in, 50 out → (500 + 100) / 2; 2,000 in (20 cached,
        // at the input price), 10 out → (8,000 + 80) / 2.
        let units = |i, o, c| Units { input_tokens: i, output_tokens: o, cached_tokens: c, ..Units::default() };
        let output = BatchOutput { answered: vec![units(500, 50, 0), units(2_000, 10, 20)], ..BatchOutput::default() };
        assert_eq!(b.batch_charge("m", "default", &output, held), (300 + 4_040, false));
        assert_eq!(b.batch_charge("m", "default", &output, 1_000), (1_000, false), "never above the hold");
        let unreadable = BatchOutput { unreadable: Some("x".into()), ..BatchOutput::default() };
        assert_eq!(b.batch_charge("m", "default", &unreadable, held), (held, true), "unreadable: the hold");
        assert_eq!(b.batch_charge("gone", "default", &output, held), (held, true), "unpriced now: the hold");
        assert_eq!(b.batch_charge("m", "default", &BatchOutput::default(), held), (0, false), "nothing answered");
        // A model without a batch share costs its full prices; one without a price is refused.
        let full = BatchInput { model: "full".into(), ..input.clone() };
        let m = b.start_with(&[u1], "default", Priced::Batch("full"), BATCH_OP, Estimate::Batch(&full)).unwrap();
        assert_eq!(m.reservation.amount, 3_000);
        b.release(m);
        let none = b.start_with(&[u1], "default", Priced::Batch("nope"), BATCH_OP, Estimate::Batch(&input));
        assert!(matches!(none, Err(Refusal::NotPriced)));
        // A worst case the balance cannot hold is refused before the vendor is asked.
        let big = BatchInput { output_tokens: 1_000_000_000, ..input };
        let refused = b.start_with(&[u1], "default", Priced::Batch("m"), BATCH_OP, Estimate::Batch(&big));
        assert!(matches!(refused, Err(Refusal::Insufficient { .. })));
    }
}
