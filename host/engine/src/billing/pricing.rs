//! The price table (`pricing` file, TOML) and what a call costs.
//!
//! Money is exact: prices are decimals written as strings (a float in the file is refused),
//! arithmetic uses `rust_decimal`, and a call's charge is rounded **up** to the next
//! millionth of the currency unit (`micros`), the unit balances and the ledger are kept in.

use crate::FastMap;
use anyhow::{bail, Context, Result};
use rust_decimal::Decimal;
use serde::{Deserialize, Deserializer};
use std::path::Path;
use std::str::FromStr;

/// An exact amount read from TOML: a string ("0.15") or an integer; floats are refused.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Price(pub Decimal);

impl<'de> Deserialize<'de> for Price {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Price, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Text(String),
            Int(i64),
            Float(f64),
        }
        match Raw::deserialize(d)? {
            Raw::Text(s) => Decimal::from_str(s.trim())
                .map(Price)
                .map_err(|_| serde::de::Error::custom(format!("'{s}' is not a decimal amount"))),
            Raw::Int(i) => Ok(Price(Decimal::from(i))),
            Raw::Float(f) => Err(serde::de::Error::custom(format!(
                "write the price {f} as a string (\"{f}\") so that it stays exact"
            ))),
        }
    }
}

/// The prices of one model, per unit. Absent prices are zero.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelPrice {
    #[serde(default)]
    pub input_per_million: Price,
    #[serde(default)]
    pub output_per_million: Price,
    /// Input tokens read from the vendor's cache; when absent they cost the input price.
    #[serde(default)]
    pub cached_per_million: Option<Price>,
    /// Input tokens written to the vendor's cache (Anthropic's cache creation, billed above
    /// the input price); when absent they cost the input price.
    #[serde(default)]
    pub cache_write_per_million: Option<Price>,
    /// Characters as the vendor counts them (a CJK character counts 2).
    #[serde(default)]
    pub characters_per_10k: Price,
    #[serde(default)]
    pub per_second: Price,
    #[serde(default)]
    pub per_image: Price,
    #[serde(default)]
    pub per_call: Price,
    /// For an op that makes vendor objects (`[ops."minimax/minimax.voice_clone"]`): a fee per
    /// object made, charged once, with the first charged call that uses it (MiniMax's cloned
    /// and designed voices). Absent: none.
    #[serde(default)]
    pub first_use: Price,
    /// Units a vendor names (a plugin's `usage.extra`), each priced per unit: per-video tiers
    /// (`"768p-6s" = "2.0"`, the tier read from the request by the plugin's quote), songs
    /// (`song = "0.25"`), ... A model with this table needs its calls quoted with one of them
    /// and prices every named unit: a quote naming none, or one without a price, is refused
    /// before the vendor; a report naming none that costs is billed the quote (estimated), one
    /// naming an unpriced unit the hold. A model without it ignores named units.
    #[serde(default)]
    pub units: std::collections::BTreeMap<String, Price>,
    /// Higher token prices for calls whose input is larger: each tier applies above its
    /// `above_input_tokens`, in ascending order, and is never cheaper than the prices below it
    /// (so a reservation read from an upper bound of the input covers the charge).
    #[serde(default)]
    pub tiers: Vec<Tier>,
    /// The currency these prices are written in, when not the table's: converted by the
    /// table's `rates` into the balance's unit.
    #[serde(default)]
    pub currency: Option<String>,
    /// The share of these prices a request run in a batch (op `batch`) costs, e.g. `"0.5"`
    /// (SiliconFlow and OpenAI bill batches at half price); absent: the full prices.
    #[serde(default)]
    pub batch: Option<Price>,
    /// Output tokens reserved up front when the request sets no `max_tokens`.
    #[serde(default = "default_max_output")]
    pub max_output_tokens: u64,
    /// Seconds reserved up front for a model priced per second (nothing in a request bounds a
    /// duration), and billed when the vendor reports none.
    #[serde(default = "default_max_seconds")]
    pub max_seconds: u64,
}

/// Token prices for calls whose input exceeds `above_input_tokens` (Gemini 2.5 Pro above 200k,
/// MiniMax-M1 above 32k and 128k, ...). A cache price it leaves out is its input price.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Tier {
    pub above_input_tokens: u64,
    #[serde(default)]
    pub input_per_million: Price,
    #[serde(default)]
    pub output_per_million: Price,
    #[serde(default)]
    pub cached_per_million: Option<Price>,
    #[serde(default)]
    pub cache_write_per_million: Option<Price>,
}

impl Tier {
    fn prices(&self) -> TokenPrices {
        TokenPrices::of(
            self.input_per_million,
            self.output_per_million,
            self.cached_per_million,
            self.cache_write_per_million,
        )
    }
}

/// Per-million token prices: input, output, cache read, cache write.
#[derive(Debug, Clone, Copy, PartialEq)]
struct TokenPrices([Decimal; 4]);

impl TokenPrices {
    fn of(input: Price, output: Price, cached: Option<Price>, written: Option<Price>) -> Self {
        TokenPrices([input.0, output.0, cached.unwrap_or(input).0, written.unwrap_or(input).0])
    }
}

fn default_max_seconds() -> u64 {
    60
}

fn default_max_output() -> u64 {
    4096
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PriceTable {
    #[serde(default = "default_currency")]
    pub currency: String,
    /// Multiplier per consumer group; the group "default" applies when a consumer has none.
    #[serde(default)]
    pub groups: FastMap<String, Price>,
    #[serde(default)]
    pub models: FastMap<String, ModelPrice>,
    /// Prices of model-less calls a plugin route marks billed, by `"<plugin>/<op>"` (usually
    /// `per_call`).
    #[serde(default)]
    pub ops: FastMap<String, ModelPrice>,
    /// How many units of the balance (`currency`) one unit of another currency is, for models
    /// priced in it (`currency = "CNY"` on the model). A backend whose balance is "tokens" at
    /// two a yuan writes `currency = "tokens"` and `CNY = "2"`.
    #[serde(default)]
    pub rates: FastMap<String, Price>,
}

fn default_currency() -> String {
    "USD".into()
}

/// Billing units of one call, as reported by the plugin or estimated by the host.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Units {
    pub input_tokens: u64,
    pub output_tokens: u64,
    /// Of the input tokens, those read from the cache.
    pub cached_tokens: u64,
    /// Of the input tokens, those written to the cache.
    pub cache_write_tokens: u64,
    pub characters: u64,
    pub milliseconds: u64,
    pub images: u64,
}

impl PriceTable {
    pub fn load(path: &Path) -> Result<PriceTable> {
        let text = std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
        PriceTable::parse(&text).with_context(|| format!("invalid price table {}", path.display()))
    }

    /// Parses and checks a price table.
    pub fn parse(text: &str) -> Result<PriceTable> {
        let table: PriceTable = toml::from_str(text)?;
        for (name, m) in &table.groups {
            if m.0.is_sign_negative() {
                bail!("group '{name}': a multiplier cannot be negative");
            }
        }
        for (model, p) in table.models.iter().chain(&table.ops) {
            let all = [
                p.input_per_million,
                p.output_per_million,
                p.cached_per_million.unwrap_or_default(),
                p.cache_write_per_million.unwrap_or_default(),
                p.characters_per_10k,
                p.per_second,
                p.per_image,
                p.per_call,
                p.first_use,
                p.batch.unwrap_or_default(),
            ];
            if all.iter().chain(p.units.values()).any(|x| x.0.is_sign_negative()) {
                bail!("model '{model}': prices cannot be negative");
            }
            let mut below = (0u64, p.base_prices());
            for (i, t) in p.tiers.iter().enumerate() {
                let prices = t.prices();
                if i > 0 && t.above_input_tokens <= below.0 {
                    bail!("model '{model}': tiers go in ascending order of above_input_tokens");
                }
                if prices.0.iter().zip(below.1 .0).any(|(tier, under)| *tier < under) {
                    bail!("model '{model}': the tier above {} input tokens is cheaper than the prices below it; a larger input never costs less (reservations rely on it)", t.above_input_tokens);
                }
                below = (t.above_input_tokens, prices);
            }
            if let Some(c) = p.currency.as_deref().filter(|c| *c != table.currency) {
                if !table.rates.contains_key(c) {
                    bail!(
                        "model '{model}' is priced in {c}: add its rate to [rates] ({c} = \"<{} per {c}>\")",
                        table.currency
                    );
                }
            }
        }
        for (currency, rate) in &table.rates {
            if rate.0 <= Decimal::ZERO {
                bail!("rate of {currency}: it must be above zero");
            }
        }
        Ok(table)
    }

    pub fn model(&self, model: &str) -> Option<&ModelPrice> {
        self.models.get(model)
    }

    /// The price of a model-less call, by `"<plugin>/<op>"`.
    pub fn op(&self, op: &str) -> Option<&ModelPrice> {
        self.ops.get(op)
    }

    /// The one-time fee of an object made by op `"<plugin>/<op>"`, in micros for a consumer of
    /// `group` (rounded up); `None` when that op prices none.
    pub fn first_use_micros(&self, group: &str, op: &str) -> Option<i64> {
        use rust_decimal::prelude::ToPrimitive;
        let price = self.op(op).filter(|p| !p.first_use.0.is_zero())?;
        let micros =
            price.first_use.0.checked_mul(self.factor(group, price))?.checked_mul(Decimal::from(1_000_000u64))?;
        micros.ceil().to_i64().filter(|m| *m <= MAX_CHARGE_MICROS)
    }

    pub fn multiplier(&self, group: &str) -> Decimal {
        self.groups.get(group).or_else(|| self.groups.get("default")).map(|p| p.0).unwrap_or(Decimal::ONE)
    }

    /// What a cost in `price`'s currency is multiplied by for a consumer of `group`: the
    /// group's multiplier and the currency's rate into the balance's unit.
    pub fn factor(&self, group: &str, price: &ModelPrice) -> Decimal {
        let rate = match price.currency.as_deref() {
            Some(c) if c != self.currency => self.rates.get(c).map_or(Decimal::ONE, |r| r.0),
            _ => Decimal::ONE,
        };
        self.multiplier(group) * rate
    }
}

impl ModelPrice {
    /// The cost of `units` in micros, rounded up; `None` when it exceeds `MAX_CHARGE_MICROS`
    /// (an absurd usage: an error, never a wrap).
    pub fn cost_micros(&self, units: &Units, named: &[(String, u64)], multiplier: Decimal) -> Option<i64> {
        let d = Decimal::from;
        // Reads and writes are parts of the input: never more than it, reads counted first.
        let cached = units.cached_tokens.min(units.input_tokens);
        let written = units.cache_write_tokens.min(units.input_tokens - cached);
        let uncached = units.input_tokens - cached - written;
        let TokenPrices([input, output, cached_price, write_price]) = self.token_prices(units.input_tokens);
        let terms = [
            (d(uncached), input, 1_000_000u64),
            (d(cached), cached_price, 1_000_000),
            (d(written), write_price, 1_000_000),
            (d(units.output_tokens), output, 1_000_000),
            (d(units.characters), self.characters_per_10k.0, 10_000),
            (d(units.milliseconds), self.per_second.0, 1_000),
            (d(units.images), self.per_image.0, 1),
            (Decimal::ONE, self.per_call.0, 1),
        ];
        let mut cost = Decimal::ZERO;
        // A unit not used or not priced adds exactly nothing: most of a call's terms.
        for (count, price, per) in terms.into_iter().filter(|(count, price, _)| !count.is_zero() && !price.is_zero()) {
            cost = cost.checked_add(count.checked_mul(price)?.checked_div(d(per))?)?;
        }
        for (name, count) in named.iter().filter(|_| !self.units.is_empty()) {
            cost = cost.checked_add(d(*count).checked_mul(self.units.get(name)?.0)?)?;
        }
        use rust_decimal::prelude::ToPrimitive;
        let micros = cost.checked_mul(multiplier)?.checked_mul(d(1_000_000u64))?.ceil().to_i64()?;
        (micros <= MAX_CHARGE_MICROS).then_some(micros)
    }

    /// Units of a reservation: `input_tokens` all counted at the dearest of the input, cache
    /// read and cache write prices (a vendor's cache writes may cost more than plain input),
    /// so that the reservation bounds the charge whatever the vendor reports of its cache.
    pub fn dearest_input(&self, units: Units) -> Units {
        let TokenPrices([input, _, read, write]) = self.token_prices(units.input_tokens);
        let all = units.input_tokens;
        match (write > input && write >= read, read > input && read > write) {
            (true, _) => Units { cache_write_tokens: all, cached_tokens: 0, ..units },
            (_, true) => Units { cached_tokens: all, cache_write_tokens: 0, ..units },
            _ => Units { cached_tokens: 0, cache_write_tokens: 0, ..units },
        }
    }

    /// Whether any token costs something: at the base prices or in a tier, input, output or
    /// cache (a model free at its base and priced in a tier still prices tokens).
    pub fn prices_tokens(&self) -> bool {
        let tiers = self.tiers.iter().map(|t| t.prices());
        std::iter::once(self.base_prices()).chain(tiers).any(|p| p.0.iter().any(|d| !d.is_zero()))
    }

    fn base_prices(&self) -> TokenPrices {
        TokenPrices::of(
            self.input_per_million,
            self.output_per_million,
            self.cached_per_million,
            self.cache_write_per_million,
        )
    }

    /// The token prices for a call of `input_tokens`: the highest tier it is above, else the
    /// base prices.
    fn token_prices(&self, input_tokens: u64) -> TokenPrices {
        match self.tiers.iter().rev().find(|t| input_tokens > t.above_input_tokens) {
            Some(t) => t.prices(),
            None => self.base_prices(),
        }
    }

    /// Whether a report of named units says what was made: one of them, counted, costs.
    pub fn named_covers(&self, named: &[(String, u64)]) -> bool {
        named.iter().any(|(n, count)| *count > 0 && self.units.get(n).is_some_and(|p| !p.0.is_zero()))
    }

    /// The first of `named` that has no price.
    pub fn unpriced<'a>(&self, named: &'a [(String, u64)]) -> Option<&'a str> {
        if self.units.is_empty() {
            return None;
        }
        named.iter().find(|(n, _)| !self.units.contains_key(n)).map(|(n, _)| n.as_str())
    }

    /// No unit of this model has a price.
    pub fn is_free(&self) -> bool {
        self.units.values().all(|p| p.0.is_zero())
            && self.fixed_free()
            && self.tiers.iter().all(|t| t.prices().0.iter().all(Decimal::is_zero))
    }

    fn fixed_free(&self) -> bool {
        [
            self.input_per_million,
            self.output_per_million,
            self.cached_per_million.unwrap_or_default(),
            self.cache_write_per_million.unwrap_or_default(),
            self.characters_per_10k,
            self.per_second,
            self.per_image,
            self.per_call,
        ]
        .iter()
        .all(|p| p.0.is_zero())
    }
}

/// The most one call can cost (a billion currency units, in micros): a larger figure comes
/// from an absurd usage report and is treated as an error. Sums of a batch of charges stay
/// far from `i64::MAX`.
pub const MAX_CHARGE_MICROS: i64 = 1_000_000_000_000_000;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shipped_example_table_is_valid_and_prices_a_model_of_every_shipped_plugin() {
        let table = PriceTable::parse(include_str!("../../../../config/pricing.toml")).expect("config/pricing.toml");
        // One model (or op) per shipped plugin, as the README's vendor table names them.
        for model in [
            "gpt-4o-mini",
            "claude-sonnet-4-5",
            "gemini-2.5-pro",
            "deepseek-chat",
            "glm-4.6",
            "speech-2.8-hd",
            "Qwen/Qwen3-8B",
            "kling-v2-1-master",
            "jimeng_t2v_v30",
            "sora-2-free",
            "doubao-seed-1-6-250615",
            "doubao-seedream-4-0-250828",
            "qwen-plus",
            "chirp-v3-5",
        ] {
            assert!(table.model(model).is_some(), "{model}");
        }
        assert_eq!(table.first_use_micros("default", "minimax/minimax.voice_clone"), Some(1_386_000));
    }

    fn table(text: &str) -> PriceTable {
        toml::from_str(text).unwrap()
    }

    #[test]
    fn token_prices_are_exact_and_round_up_to_a_micro() {
        let t = table(
            r#"[models.m]
input_per_million = "0.15"
output_per_million = "0.60"
cached_per_million = "0.075""#,
        );
        let p = t.model("m").unwrap();
        // 600 uncached × 0.15 + 400 cached × 0.075 + 500 out × 0.60, per million: 90 + 30 + 300 micros.
        let u = Units { input_tokens: 1000, cached_tokens: 400, output_tokens: 500, ..Units::default() };
        assert_eq!(p.cost_micros(&u, &[], Decimal::ONE), Some(420));
        // One token at 0.15 per million is 0.15 micros: charged as 1 micro, never 0.
        assert_eq!(p.cost_micros(&Units { input_tokens: 1, ..Units::default() }, &[], Decimal::ONE), Some(1));
        assert_eq!(p.cost_micros(&Units::default(), &[], Decimal::ONE), Some(0));
    }

    #[test]
    fn cache_writes_cost_their_own_price_and_never_more_tokens_than_the_input() {
        let t = table(
            r#"[models.claude]
input_per_million = "3"
cached_per_million = "0.30"
cache_write_per_million = "3.75"
output_per_million = "15"
[models.plain]
input_per_million = "3""#,
        );
        let p = t.model("claude").unwrap();
        // 100 input: 60 read (0.30), 30 written (3.75), 10 plain (3); 10 out (15), per million:
        // 18 + 112.5 + 30 + 150 = 310.5 → 311 micros.
        let u = Units {
            input_tokens: 100,
            cached_tokens: 60,
            cache_write_tokens: 30,
            output_tokens: 10,
            ..Units::default()
        };
        assert_eq!(p.cost_micros(&u, &[], Decimal::ONE), Some(311));
        // A vendor claiming more cache than input: reads first, then writes, within the input.
        let absurd = Units { input_tokens: 100, cached_tokens: 90, cache_write_tokens: 1_000_000, ..Units::default() };
        // 90 read × 0.30 + 10 written × 3.75 = 27 + 37.5 = 64.5 → 65.
        assert_eq!(p.cost_micros(&absurd, &[], Decimal::ONE), Some(65));
        // A reservation counts every input token at the dearest input-side price.
        let reserve = p.dearest_input(Units { input_tokens: 100, output_tokens: 10, ..Units::default() });
        assert_eq!(p.cost_micros(&reserve, &[], Decimal::ONE), Some(375 + 150), "100 × 3.75 + 10 × 15");
        for (cached, written) in [(100, 0), (0, 100), (40, 60), (0, 0)] {
            let charge = Units {
                input_tokens: 100,
                cached_tokens: cached,
                cache_write_tokens: written,
                output_tokens: 10,
                ..Units::default()
            };
            assert!(p.cost_micros(&charge, &[], Decimal::ONE) <= p.cost_micros(&reserve, &[], Decimal::ONE));
        }
        // Without a write price, a write costs the input price: never free.
        let plain = t.model("plain").unwrap();
        let u = Units { input_tokens: 100, cache_write_tokens: 100, ..Units::default() };
        assert_eq!(plain.cost_micros(&u, &[], Decimal::ONE), Some(300));
        assert!(PriceTable::parse("[models.x]\ncache_write_per_million = \"-1\"").is_err());
    }

    #[test]
    fn larger_inputs_cost_their_tiers_price_and_tiers_never_get_cheaper() {
        let t = PriceTable::parse(
            r#"[models.pro]
input_per_million = "1"
output_per_million = "10"
[[models.pro.tiers]]
above_input_tokens = 1000
input_per_million = "2"
output_per_million = "15"
[[models.pro.tiers]]
above_input_tokens = 5000
input_per_million = "4"
output_per_million = "30"
cached_per_million = "4""#,
        )
        .unwrap();
        let p = t.model("pro").unwrap();
        let cost = |input, output| {
            p.cost_micros(&Units { input_tokens: input, output_tokens: output, ..Units::default() }, &[], Decimal::ONE)
        };
        assert_eq!(cost(1000, 100), Some(1000 + 1000), "at the threshold: the base prices");
        assert_eq!(cost(1001, 100), Some(2002 + 1500), "above it: the tier's, for every token");
        assert_eq!(cost(6000, 0), Some(24_000));
        // A cache price the tier leaves out is its input price, not the base's cache price.
        let u = Units { input_tokens: 2000, cached_tokens: 2000, ..Units::default() };
        assert_eq!(p.cost_micros(&u, &[], Decimal::ONE), Some(4000));
        // A tier cheaper than what is below it, or out of order, is refused.
        let cheaper = "[models.x]\ninput_per_million = \"2\"\n[[models.x.tiers]]\nabove_input_tokens = 10\ninput_per_million = \"1\"";
        assert!(PriceTable::parse(cheaper).unwrap_err().to_string().contains("cheaper"));
        let cheaper_output = "[models.x]\noutput_per_million = \"2\"\n[[models.x.tiers]]\nabove_input_tokens = 10\noutput_per_million = \"1\"";
        assert!(PriceTable::parse(cheaper_output).is_err());
        let order =
            "[models.x]\n[[models.x.tiers]]\nabove_input_tokens = 10\n[[models.x.tiers]]\nabove_input_tokens = 10";
        assert!(PriceTable::parse(order).unwrap_err().to_string().contains("ascending"));
        assert!(!t.model("pro").unwrap().is_free());
    }

    #[test]
    fn a_model_priced_in_another_currency_is_converted_at_the_tables_rate() {
        let t = PriceTable::parse(
            r#"currency = "tokens"
[rates]
CNY = "2"
[groups]
vip = "0.5"
[models.qwen]
currency = "CNY"
input_per_million = "1"
[models.local]
input_per_million = "1""#,
        )
        .unwrap();
        let u = Units { input_tokens: 1_000_000, ..Units::default() };
        let qwen = t.model("qwen").unwrap();
        assert_eq!(qwen.cost_micros(&u, &[], t.factor("default", qwen)), Some(2_000_000), "1 yuan is 2 tokens");
        assert_eq!(qwen.cost_micros(&u, &[], t.factor("vip", qwen)), Some(1_000_000));
        let local = t.model("local").unwrap();
        assert_eq!(local.cost_micros(&u, &[], t.factor("default", local)), Some(1_000_000));
        let unknown = "[models.x]\ncurrency = \"EUR\"\ninput_per_million = \"1\"";
        assert!(PriceTable::parse(unknown).unwrap_err().to_string().contains("[rates]"));
        assert!(PriceTable::parse("[rates]\nCNY = \"0\"").is_err());
    }

    #[test]
    fn other_units_and_group_multipliers() {
        let t = table(
            r#"[groups]
default = "1"
vip = "0.5"
[models.tts]
characters_per_10k = "2"
per_call = "0.001"
[models.img]
per_image = "0.04"
[models.video]
per_second = "0.1""#,
        );
        let tts = t.model("tts").unwrap();
        let u = Units { characters: 5000, ..Units::default() };
        assert_eq!(tts.cost_micros(&u, &[], t.multiplier("nobody")), Some(1_001_000));
        assert_eq!(tts.cost_micros(&u, &[], t.multiplier("vip")), Some(500_500));
        assert_eq!(
            t.model("img").unwrap().cost_micros(&Units { images: 3, ..Units::default() }, &[], Decimal::ONE),
            Some(120_000)
        );
        let v = Units { milliseconds: 5500, ..Units::default() };
        assert_eq!(t.model("video").unwrap().cost_micros(&v, &[], Decimal::ONE), Some(550_000));
    }

    #[test]
    fn an_absurd_usage_is_an_error_never_a_wrap() {
        let t = table("[models.m]\noutput_per_million = \"1000\"\n[models.img]\nper_image = \"0.04\"");
        let huge = Units { output_tokens: u64::MAX, ..Units::default() };
        assert_eq!(t.model("m").unwrap().cost_micros(&huge, &[], Decimal::ONE), None);
        let many = Units { images: u64::MAX, ..Units::default() };
        assert_eq!(t.model("img").unwrap().cost_micros(&many, &[], Decimal::from(1_000_000)), None);
        // Just below the cap is still a charge.
        let big = Units { output_tokens: 1_000_000_000_000, ..Units::default() };
        assert_eq!(t.model("m").unwrap().cost_micros(&big, &[], Decimal::ONE), Some(1_000_000_000_000_000));
    }

    #[test]
    fn floats_and_negative_prices_are_refused() {
        let err = toml::from_str::<PriceTable>("[models.m]\ninput_per_million = 0.15").unwrap_err();
        assert!(err.to_string().contains("as a string"), "{err}");
        let dir = std::env::temp_dir().join(format!("tollgate-pricing-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join("p.toml");
        std::fs::write(&f, "[models.m]\nper_call = \"-1\"").unwrap();
        assert!(format!("{:#}", PriceTable::load(&f).unwrap_err()).contains("negative"));
    }
}
