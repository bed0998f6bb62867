//! Billing: the price table, consumer wallets, and what each call is charged.
//!
//! The rules (DESIGN §5), each with a test:
//! - a call whose reservation does not fit the balance is refused with 402 **before** the
//!   upstream is called; a model with no price is refused (403) rather than served free;
//! - the reservation is an upper bound: input tokens estimated from the request size, output
//!   tokens from `max_tokens` (or the model's `max_output_tokens`), characters from the text;
//! - a call is charged once, by request id: the ledger refuses a second charge for the same id;
//! - a failed call (no answer, upstream or plugin error, a vendor error relayed) costs nothing;
//! - usage the vendor reports is billed as reported; units it does not report are estimated
//!   and the call record says `estimated`;
//! - an interrupted stream is billed for what was delivered: the usage seen before the cut, or
//!   else one output token per content event delivered, and the record says `interrupted`.
//!
//! Billing is on when the configuration names a `pricing_file`; the file is re-read when it
//! changes, and a file that fails to parse keeps the previous table.

pub mod pricing;
pub mod wallet;

use crate::plugin::wit;
use anyhow::Result;
use arc_swap::ArcSwap;
use pricing::{vendor_characters, ModelPrice, PriceTable, Units};
use rust_decimal::Decimal;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};
pub use wallet::{Account, Reservation, Wallets};

pub struct Billing {
    table: ArcSwap<PriceTable>,
    path: PathBuf,
    pub wallets: Wallets,
}

/// The billing state of one call between its start and its end.
pub struct Meter {
    pub reservation: Reservation,
    price: ModelPrice,
    multiplier: Decimal,
    /// Estimates from the request, used for units the vendor does not report.
    input_tokens_estimate: u64,
    characters_estimate: u64,
    images_estimate: u64,
}

/// What a finished call is charged.
#[derive(Debug, Clone, Copy, Default)]
pub struct Charge {
    pub micros: i64,
    pub estimated: bool,
    /// The charge also counts against the key's spending limit.
    pub key_limited: bool,
}

impl Billing {
    pub fn load(path: PathBuf) -> Result<Arc<Billing>> {
        let table = PriceTable::load(&path)?;
        Ok(Arc::new(Billing { table: ArcSwap::from_pointee(table), path, wallets: Wallets::default() }))
    }

    /// Re-reads the price table when its file changes.
    pub fn watch(self: &Arc<Self>, every: Duration) {
        let billing = Arc::clone(self);
        tokio::spawn(async move {
            let mut seen = modified(&billing.path);
            loop {
                tokio::time::sleep(every).await;
                let now = modified(&billing.path);
                if now == seen {
                    continue;
                }
                seen = now;
                match PriceTable::load(&billing.path) {
                    Ok(t) => {
                        tracing::info!(file = %billing.path.display(), models = t.models.len(), "price table reloaded");
                        billing.table.store(Arc::new(t));
                    }
                    Err(e) => {
                        tracing::error!(error = %format!("{e:#}"), "price table rejected; the previous one stays")
                    }
                }
            }
        });
    }

    /// Replaces the price table with `text` (TOML): validated first, then written to the file
    /// (via a temporary file and a rename) and swapped in. A bad table changes nothing.
    pub fn replace(&self, text: &str) -> Result<usize> {
        let table = PriceTable::parse(text)?;
        let tmp = self.path.with_extension("toml.part");
        std::fs::write(&tmp, text)?;
        std::fs::rename(&tmp, &self.path)?;
        let models = table.models.len();
        self.table.store(Arc::new(table));
        Ok(models)
    }

    /// The price table file as it is.
    pub fn text(&self) -> Result<String> {
        Ok(std::fs::read_to_string(&self.path)?)
    }

    pub fn table(&self) -> arc_swap::Guard<Arc<PriceTable>> {
        self.table.load()
    }

    /// Prices and reserves a call before it starts; the error is what the consumer is told.
    /// `accounts`: the user's balance, and the key's limit when it has one.
    pub fn start(
        &self,
        accounts: &[Account],
        group: &str,
        model: &str,
        op: &str,
        body: &[u8],
    ) -> Result<Meter, Refusal> {
        let table = self.table();
        let Some(price) = table.model(model) else {
            return Err(Refusal::NotPriced);
        };
        let multiplier = table.multiplier(group);
        let request = RequestEstimate::of(op, body, price);
        let reserve_units = Units {
            input_tokens: request.input_tokens,
            output_tokens: request.max_output_tokens,
            characters: request.characters,
            images: request.images,
            ..Units::default()
        };
        let amount = price.cost_micros(&reserve_units, multiplier);
        let reservation = self.wallets.reserve(accounts, amount).map_err(|e| Refusal::Insufficient {
            account: e.account,
            available: e.available,
            needed: e.needed,
        })?;
        Ok(Meter {
            reservation,
            price: price.clone(),
            multiplier,
            input_tokens_estimate: request.input_tokens,
            characters_estimate: request.characters,
            images_estimate: request.images,
        })
    }

    /// Ends a call that produced nothing billable.
    pub fn release(&self, meter: Meter) {
        self.wallets.release(meter.reservation);
    }

    /// Ends a call with the usage the plugin reported; `delivered_events` counts the content
    /// events a stream delivered (for an interrupted stream without usage).
    pub fn settle(&self, meter: Meter, usage: &wit::Usage, delivered_events: Option<u64>) -> Charge {
        let (units, estimated) = meter.units(usage, delivered_events);
        let micros = meter.price.cost_micros(&units, meter.multiplier);
        let key_limited = meter.reservation.accounts.iter().any(|a| matches!(a, Account::KeyLimit(_)));
        self.wallets.settle(meter.reservation, micros);
        Charge { micros, estimated, key_limited }
    }
}

impl Meter {
    /// The units to bill: reported ones as they are, missing priced ones estimated.
    fn units(&self, u: &wit::Usage, delivered_events: Option<u64>) -> (Units, bool) {
        let p = &self.price;
        let tokens_priced = !p.input_per_million.0.is_zero() || !p.output_per_million.0.is_zero();
        let mut estimated = false;
        let mut estimate = |reported: Option<u64>, priced: bool, guess: u64| match reported {
            Some(v) => v,
            None if priced => {
                estimated = true;
                guess
            }
            None => 0,
        };
        let units = Units {
            input_tokens: estimate(u.input_tokens, tokens_priced, self.input_tokens_estimate),
            output_tokens: estimate(u.output_tokens, tokens_priced, delivered_events.unwrap_or(0)),
            cached_tokens: u.cached_tokens.unwrap_or(0),
            characters: estimate(u.characters, !p.characters_per_10k.0.is_zero(), self.characters_estimate),
            // Nothing in a request bounds a duration: a plugin that does not report the seconds
            // its model is priced by leaves them unbilled, flagged (estimated) and logged.
            milliseconds: estimate(u.milliseconds, !p.per_second.0.is_zero(), 0),
            // Images the vendor did not count: as many as the request asked for (`n`).
            images: estimate(u.images.map(u64::from), !p.per_image.0.is_zero(), self.images_estimate),
        };
        if u.milliseconds.is_none() && !p.per_second.0.is_zero() {
            tracing::warn!("a call priced per second reported no duration: its seconds are not billed");
        }
        (units, estimated)
    }
}

/// Why a call was refused before it started.
#[derive(Debug, Clone, Copy)]
pub enum Refusal {
    NotPriced,
    Insufficient { account: Account, available: i64, needed: i64 },
}

/// Upper bounds read from the request body.
struct RequestEstimate {
    input_tokens: u64,
    max_output_tokens: u64,
    characters: u64,
    images: u64,
}

impl RequestEstimate {
    fn of(op: &str, body: &[u8], price: &ModelPrice) -> RequestEstimate {
        /// Only the fields the estimate needs: serde skips the rest without allocating.
        #[derive(serde::Deserialize, Default)]
        struct Fields<'a> {
            #[serde(default)]
            max_tokens: Option<u64>,
            #[serde(default)]
            max_completion_tokens: Option<u64>,
            #[serde(default, borrow)]
            input: Option<std::borrow::Cow<'a, str>>,
            #[serde(default, borrow)]
            text: Option<std::borrow::Cow<'a, str>>,
            #[serde(default, borrow)]
            prompt: Option<std::borrow::Cow<'a, str>>,
            #[serde(default)]
            n: Option<u64>,
        }
        // Fields of other types (an `input` array for embeddings) fall back to the defaults.
        let f: Fields = serde_json::from_slice(body).unwrap_or_default();
        let text = f.input.as_deref().or(f.text.as_deref()).or(f.prompt.as_deref()).unwrap_or("");
        let max_output_tokens = f.max_completion_tokens.or(f.max_tokens).unwrap_or(price.max_output_tokens);
        RequestEstimate {
            // A token is at least ~2 bytes of JSON-escaped text: bytes/2 is a generous bound.
            input_tokens: (body.len() as u64).div_ceil(2),
            max_output_tokens: if op == "chat" { max_output_tokens } else { 0 },
            characters: vendor_characters(text),
            images: f.n.unwrap_or(1),
        }
    }
}

fn modified(path: &std::path::Path) -> Option<SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn billing(prices: &str) -> Arc<Billing> {
        static SEQ: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("tollgate-billing-{}-{n}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join("pricing.toml");
        std::fs::write(&f, prices).unwrap();
        Billing::load(f).unwrap()
    }

    const PRICES: &str = "[models.m]\ninput_per_million = \"1\"\noutput_per_million = \"2\"\nmax_output_tokens = 100\n[models.tts]\ncharacters_per_10k = \"10\"\n[models.img]\nper_image = \"0.04\"";

    #[test]
    fn unpriced_models_and_small_balances_are_refused_before_the_call() {
        let b = billing(PRICES);
        let (u1, u2) = (Account::User(1), Account::User(2));
        b.wallets.set_db_balances([(u1, 1_000)]);
        assert!(matches!(b.start(&[u1], "default", "free-lunch", "chat", b"{}"), Err(Refusal::NotPriced)));
        // 100 output tokens at 2 per million reserve 200 micros, plus the input estimate.
        let m = b.start(&[u1], "default", "m", "chat", br#"{"messages":[]}"#).unwrap();
        assert!(m.reservation.amount >= 200);
        b.wallets.set_db_balances([(u2, 10)]);
        assert!(matches!(
            b.start(&[u2], "default", "m", "chat", b"{}"),
            Err(Refusal::Insufficient { available: 10, .. })
        ));
        b.release(m);
        assert_eq!(b.wallets.available(u1), 1_000);
    }

    #[test]
    fn reported_usage_is_billed_and_missing_usage_is_estimated() {
        let b = billing(PRICES);
        let u1 = Account::User(1);
        b.wallets.set_db_balances([(u1, 1_000_000)]);
        let m = b.start(&[u1], "default", "m", "chat", br#"{"max_tokens":10}"#).unwrap();
        let usage = wit::Usage { input_tokens: Some(1000), output_tokens: Some(500), ..wit::Usage::default() };
        let c = b.settle(m, &usage, None);
        assert_eq!((c.micros, c.estimated), (1000 + 1000, false));

        // A stream cut before its usage chunk: 7 delivered events bill as 7 output tokens.
        let body = br#"{"messages":[{"role":"user","content":"hello"}]}"#;
        let m = b.start(&[u1], "default", "m", "chat", body).unwrap();
        let c = b.settle(m, &wit::Usage::default(), Some(7));
        assert!(c.estimated);
        assert_eq!(c.micros, (body.len() as u64).div_ceil(2) as i64 + 14);

        // Characters, as the vendor counts them, else as the host counts them.
        let m = b.start(&[u1], "default", "tts", "speech", r#"{"input":"你好"}"#.as_bytes()).unwrap();
        assert_eq!(m.reservation.amount, 4_000);
        let c = b.settle(m, &wit::Usage::default(), None);
        assert_eq!((c.micros, c.estimated), (4_000, true));

        // Images: as the vendor counts them, else as many as the request asked for.
        let m = b.start(&[u1], "default", "img", "images", br#"{"prompt":"a cat","n":2}"#).unwrap();
        assert_eq!(m.reservation.amount, 80_000);
        let c = b.settle(m, &wit::Usage { images: Some(1), ..wit::Usage::default() }, None);
        assert_eq!((c.micros, c.estimated), (40_000, false));
        let m = b.start(&[u1], "default", "img", "images", br#"{"prompt":"a cat","n":2}"#).unwrap();
        let c = b.settle(m, &wit::Usage::default(), None);
        assert_eq!((c.micros, c.estimated), (80_000, true), "never free because the vendor said nothing");
    }
}
