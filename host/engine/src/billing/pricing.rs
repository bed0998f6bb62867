//! The price table (`pricing` file, TOML) and what a call costs.
//!
//! Money is exact: prices are decimals written as strings (a float in the file is refused),
//! arithmetic uses `rust_decimal`, and a call's charge is rounded **up** to the next
//! millionth of the currency unit (`micros`), the unit balances and the ledger are kept in.

use anyhow::{bail, Context, Result};
use rust_decimal::Decimal;
use serde::{Deserialize, Deserializer};
use std::collections::HashMap;
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
    /// Cached input tokens; when absent they cost the input price.
    #[serde(default)]
    pub cached_per_million: Option<Price>,
    /// Characters as the vendor counts them (a CJK character counts 2).
    #[serde(default)]
    pub characters_per_10k: Price,
    #[serde(default)]
    pub per_second: Price,
    #[serde(default)]
    pub per_image: Price,
    #[serde(default)]
    pub per_call: Price,
    /// Units a vendor names (a plugin's `usage.extra`), each priced per unit: per-video tiers
    /// (`"768p-6s" = "2.0"`, the tier read from the request by the plugin's quote), songs
    /// (`song = "0.25"`), ... A model with this table needs its calls quoted with one of them
    /// and prices every named unit: a quote naming none, or one without a price, is refused
    /// before the vendor; a report naming none that costs is billed the quote (estimated), one
    /// naming an unpriced unit the hold. A model without it ignores named units.
    #[serde(default)]
    pub units: std::collections::BTreeMap<String, Price>,
    /// Output tokens reserved up front when the request sets no `max_tokens`.
    #[serde(default = "default_max_output")]
    pub max_output_tokens: u64,
    /// Seconds reserved up front for a model priced per second (nothing in a request bounds a
    /// duration), and billed when the vendor reports none.
    #[serde(default = "default_max_seconds")]
    pub max_seconds: u64,
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
    pub groups: HashMap<String, Price>,
    #[serde(default)]
    pub models: HashMap<String, ModelPrice>,
    /// Prices of model-less calls a plugin route marks billed, by `"<plugin>/<op>"` (usually
    /// `per_call`).
    #[serde(default)]
    pub ops: HashMap<String, ModelPrice>,
}

fn default_currency() -> String {
    "USD".into()
}

/// Billing units of one call, as reported by the plugin or estimated by the host.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Units {
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub cached_tokens: u64,
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
                p.characters_per_10k,
                p.per_second,
                p.per_image,
                p.per_call,
            ];
            if all.iter().chain(p.units.values()).any(|x| x.0.is_sign_negative()) {
                bail!("model '{model}': prices cannot be negative");
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

    pub fn multiplier(&self, group: &str) -> Decimal {
        self.groups.get(group).or_else(|| self.groups.get("default")).map(|p| p.0).unwrap_or(Decimal::ONE)
    }
}

impl ModelPrice {
    /// The cost of `units` in micros, rounded up; `None` when it exceeds `MAX_CHARGE_MICROS`
    /// (an absurd usage: an error, never a wrap).
    pub fn cost_micros(&self, units: &Units, named: &[(String, u64)], multiplier: Decimal) -> Option<i64> {
        let d = Decimal::from;
        let uncached = units.input_tokens.saturating_sub(units.cached_tokens);
        let cached_price = self.cached_per_million.unwrap_or(self.input_per_million).0;
        let terms = [
            (d(uncached), self.input_per_million.0, 1_000_000u64),
            (d(units.cached_tokens.min(units.input_tokens)), cached_price, 1_000_000),
            (d(units.output_tokens), self.output_per_million.0, 1_000_000),
            (d(units.characters), self.characters_per_10k.0, 10_000),
            (d(units.milliseconds), self.per_second.0, 1_000),
            (d(units.images), self.per_image.0, 1),
            (Decimal::ONE, self.per_call.0, 1),
        ];
        let mut cost = Decimal::ZERO;
        for (count, price, per) in terms {
            cost = cost.checked_add(count.checked_mul(price)?.checked_div(d(per))?)?;
        }
        for (name, count) in named.iter().filter(|_| !self.units.is_empty()) {
            cost = cost.checked_add(d(*count).checked_mul(self.units.get(name)?.0)?)?;
        }
        use rust_decimal::prelude::ToPrimitive;
        let micros = cost.checked_mul(multiplier)?.checked_mul(d(1_000_000u64))?.ceil().to_i64()?;
        (micros <= MAX_CHARGE_MICROS).then_some(micros)
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
        self.units.values().all(|p| p.0.is_zero()) && self.fixed_free()
    }

    fn fixed_free(&self) -> bool {
        [
            self.input_per_million,
            self.output_per_million,
            self.cached_per_million.unwrap_or_default(),
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
