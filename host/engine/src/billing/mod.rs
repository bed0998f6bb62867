//! Billing: the price table, consumer wallets, and what each call is charged.
//!
//! The rules, each with a test:
//! - a call whose reservation does not fit the balance is refused with 402 **before** the
//!   upstream is called; a model with no price is refused (403) rather than served free; a
//!   priced call reserves at least one micro, so a balance at zero or below refuses it;
//! - the reservation is an upper bound read from the same JSON the vendor reads: input tokens
//!   from the request size, output tokens from `max_tokens` (or the model's
//!   `max_output_tokens`) times `n`, characters from every text field a vendor may read, images
//!   from `n` or `batch_size`; a billing field of the wrong type or written twice is a 400,
//!   never a zero estimate;
//! - a call is charged once, by request id: the ledger refuses a second charge for the same id;
//! - a call the vendor refused or never received costs nothing; one it received and may have
//!   worked on (answered 2xx but unreadable, timed out, connection lost after sending) is
//!   billed its reservation (`settle_reserved`, marked estimated), never resent;
//! - usage the vendor reports is billed as reported; units it does not report are estimated
//!   and the call record says `estimated`; a usage whose cost exceeds
//!   `pricing::MAX_CHARGE_MICROS` is absurd: billed as reserved and logged, never wrapped;
//! - an interrupted stream is billed for what was delivered: the usage seen before the cut, or
//!   else one output token per content event delivered, and the record says `interrupted`.
//!
//! Billing is on when the configuration names a `pricing_file`; the file is re-read when it
//! changes, and a file that fails to parse keeps the previous table.

pub mod batch;
mod estimate;
pub mod pricing;
pub mod wallet;

use anyhow::Result;
use arc_swap::ArcSwap;
use estimate::RequestEstimate;
pub use estimate::{form_estimate_body, Estimate};
use pricing::{ModelPrice, PriceTable, Units};
use rust_decimal::Decimal;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::SystemTime;
pub use wallet::{Account, Reservation, Wallets};

pub struct Billing {
    table: ArcSwap<PriceTable>,
    path: PathBuf,
    /// The file's modification time when it was last read.
    seen: std::sync::Mutex<Option<SystemTime>>,
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
    /// The output tokens reserved: what a reply that reports none is billed.
    output_tokens_estimate: u64,
    /// The duration reserved: what a call priced per second that reports none is billed.
    milliseconds_estimate: u64,
    /// The operation generates output tokens (chat); others (embeddings, rerank) that report
    /// none have none, which is not an estimate.
    generates_tokens: bool,
    /// The named units quoted: what a call that reports none is billed.
    named_estimate: Vec<(String, u64)>,
    /// One-time fees of the objects the call uses (reserved with it): charged with any
    /// charge the call gets.
    fee_micros: i64,
}

/// Usage as the vendor reported it (the pipeline converts the plugin's report once); `None`:
/// not reported, so the host estimates it where the unit is priced.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Reported {
    pub input_tokens: Option<u64>,
    pub output_tokens: Option<u64>,
    /// Input tokens read from the vendor's cache (counted in `input_tokens` too).
    pub cached_tokens: Option<u64>,
    /// Input tokens written to the vendor's cache (counted in `input_tokens` too).
    pub cache_write_tokens: Option<u64>,
    pub characters: Option<u64>,
    pub milliseconds: Option<u64>,
    pub images: Option<u32>,
    /// Units the vendor names (`usage.extra`): a video's tier, songs; empty: none reported.
    pub named: Vec<(String, u64)>,
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
        let seen = std::sync::Mutex::new(modified(&path));
        Ok(Arc::new(Billing { table: ArcSwap::from_pointee(table), path, seen, wallets: Wallets::default() }))
    }

    /// Re-reads the price table if its file changed since the last read (a job calls this);
    /// a file that does not parse keeps the previous table.
    pub fn reload_if_changed(&self) {
        let now = modified(&self.path);
        {
            let mut seen = self.seen.lock().expect("price table time");
            if *seen == now {
                return;
            }
            *seen = now;
        }
        match PriceTable::load(&self.path) {
            Ok(t) => {
                tracing::info!(file = %self.path.display(), models = t.models.len(), "price table reloaded");
                self.table.store(Arc::new(t));
            }
            Err(e) => tracing::error!(error = %format!("{e:#}"), "price table rejected; the previous one stays"),
        }
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

    /// Prices and reserves a model's call before it starts, estimating from its JSON body; the
    /// error is what the consumer is told. `accounts`: the user's balance, and the key's limit
    /// when it has one.
    pub fn start(
        &self,
        accounts: &[Account],
        group: &str,
        model: &str,
        op: &str,
        body: &[u8],
    ) -> Result<Meter, Refusal> {
        self.start_with(accounts, group, Priced::Model(model), op, Estimate::Body(body))
    }

    /// `start`, for a model's call or a model-less one (priced by `[ops]`), with the
    /// reservation from the request body or from the plugin's quote.
    pub fn start_with(
        &self,
        accounts: &[Account],
        group: &str,
        priced: Priced<'_>,
        op: &str,
        source: Estimate<'_>,
    ) -> Result<Meter, Refusal> {
        self.start_with_fees(accounts, group, priced, op, source, 0)
    }

    /// `start_with`, reserving also `fee_micros` of one-time fees (see `fee_micros`), which
    /// any charge of the call includes.
    pub fn start_with_fees(
        &self,
        accounts: &[Account],
        group: &str,
        priced: Priced<'_>,
        op: &str,
        source: Estimate<'_>,
        fee_micros: i64,
    ) -> Result<Meter, Refusal> {
        let table = self.table();
        let price = priced.price(&table);
        let Some(price) = price else {
            return Err(Refusal::NotPriced);
        };
        let multiplier = priced.factor(&table, group, price);
        let mut request = match source {
            Estimate::Body(body) => RequestEstimate::of(op, body, price)?,
            Estimate::Quote(q) => RequestEstimate::quoted(q, price),
            Estimate::Batch(input) => RequestEstimate::batch(input, price),
        };
        // A unit quoted zero times bounds nothing.
        request.named.retain(|(_, count)| *count > 0);
        if let Some(unit) = price.unpriced(&request.named) {
            return Err(Refusal::UnitNotPriced(unit.to_string()));
        }
        // Priced by named units and none quoted: nothing says which (a tier, how many songs).
        if !price.units.is_empty() && request.named.is_empty() {
            return Err(Refusal::NoUnitQuoted);
        }
        let reserve_units = price.dearest_input(Units {
            input_tokens: request.input_tokens,
            output_tokens: request.max_output_tokens,
            characters: request.characters,
            images: request.images,
            milliseconds: request.milliseconds,
            ..Units::default()
        });
        // A priced call reserves at least one micro, so that an account at zero or below is
        // refused even when the estimate rounds to nothing.
        let amount = match price.cost_micros(&reserve_units, &request.named, multiplier) {
            Some(0) if !price.is_free() => 1,
            Some(amount) => amount,
            None => i64::MAX,
        }
        .saturating_add(fee_micros);
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
            output_tokens_estimate: request.max_output_tokens,
            milliseconds_estimate: request.milliseconds,
            generates_tokens: estimate::generates_tokens(op) || request.quoted_output,
            named_estimate: request.named,
            fee_micros,
        })
    }

    /// The one-time fee, for a consumer of `group`, of an object made by `op` of `plugin`;
    /// `None` when the price table gives that op none.
    pub fn fee_micros(&self, group: &str, plugin: &str, op: &str) -> Option<i64> {
        self.table().first_use_micros(group, &format!("{plugin}/{op}"))
    }

    /// What a finished task costs, by the units the vendor reported at the end (`priced` as
    /// at its submit, the `group`'s multiplier). The task's hold, marked estimated, when the
    /// vendor left a priced unit unreported (never free because the vendor said nothing), or
    /// when the units cost more than any balance holds.
    pub fn task_charge(&self, priced: Priced<'_>, group: &str, usage: &Reported, held: i64) -> (i64, bool) {
        let table = self.table();
        let price = priced.price(&table);
        let Some(price) = price else { return (held, true) };
        let unreported = |priced: bool, reported: bool| priced && !reported;
        let tokens = price.prices_tokens();
        if unreported(tokens, usage.input_tokens.is_some() || usage.output_tokens.is_some())
            || unreported(!price.characters_per_10k.0.is_zero(), usage.characters.is_some())
            || unreported(!price.per_second.0.is_zero(), usage.milliseconds.is_some())
            || unreported(!price.per_image.0.is_zero(), usage.images.is_some())
            || unreported(!price.units.is_empty(), price.named_covers(&usage.named))
        {
            return (held, true);
        }
        let units = Units {
            input_tokens: usage.input_tokens.unwrap_or(0),
            output_tokens: usage.output_tokens.unwrap_or(0),
            cached_tokens: usage.cached_tokens.unwrap_or(0),
            cache_write_tokens: usage.cache_write_tokens.unwrap_or(0),
            characters: usage.characters.unwrap_or(0),
            milliseconds: usage.milliseconds.unwrap_or(0),
            images: usage.images.map_or(0, u64::from),
        };
        // A named unit without a price, or an absurd count: the hold, estimated.
        match price.cost_micros(&units, &usage.named, priced.factor(&table, group, price)) {
            Some(micros) => (micros, false),
            None => (held, true),
        }
    }

    /// Ends a call that produced nothing billable.
    pub fn release(&self, meter: Meter) {
        self.wallets.release(meter.reservation);
    }

    /// Ends a call with the usage the plugin reported; `delivered_events` counts the content
    /// events a stream delivered (for an interrupted stream without usage).
    pub fn settle(&self, meter: Meter, usage: &Reported, delivered_events: Option<u64>) -> Charge {
        let (units, named, estimated) = meter.units(usage, delivered_events);
        let cost = meter.price.cost_micros(&units, named, meter.multiplier);
        match cost.and_then(|c| c.checked_add(meter.fee_micros)) {
            Some(micros) => self.charge(meter, micros, estimated),
            None => {
                tracing::error!(?units, "the reported usage costs more than any balance holds: billed as reserved");
                self.settle_reserved(meter)
            }
        }
    }

    /// Ends a call the vendor accepted but whose usage is unknown (the answer could not be
    /// read, or its numbers are absurd): it is charged its whole reservation, marked
    /// estimated. Never free: the vendor did the work.
    pub fn settle_reserved(&self, meter: Meter) -> Charge {
        let micros = meter.reservation.amount;
        self.charge(meter, micros, true)
    }

    fn charge(&self, meter: Meter, micros: i64, estimated: bool) -> Charge {
        let key_limited = meter.reservation.accounts.iter().any(|a| matches!(a, Account::KeyLimit(_)));
        self.wallets.settle(meter.reservation, micros);
        Charge { micros, estimated, key_limited }
    }
}

impl Meter {
    /// The one-time fees reserved with the call.
    pub fn fee_micros(&self) -> i64 {
        self.fee_micros
    }

    /// The units to bill: reported ones as they are, missing priced ones estimated.
    fn units<'a>(&'a self, u: &'a Reported, delivered_events: Option<u64>) -> (Units, &'a [(String, u64)], bool) {
        let p = &self.price;
        let tokens_priced = p.prices_tokens();
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
            // A stream that reports none: one per content event delivered; a reply that
            // reports none: what was reserved (never free because the vendor said nothing).
            output_tokens: estimate(
                u.output_tokens,
                tokens_priced && self.generates_tokens,
                delivered_events.unwrap_or(self.output_tokens_estimate),
            ),
            cached_tokens: u.cached_tokens.unwrap_or(0),
            cache_write_tokens: u.cache_write_tokens.unwrap_or(0),
            characters: estimate(u.characters, !p.characters_per_10k.0.is_zero(), self.characters_estimate),
            // Nothing in a request bounds a duration: the model's `max_seconds` is reserved,
            // and billed (estimated, logged) when the vendor reports none. Never free.
            milliseconds: estimate(u.milliseconds, !p.per_second.0.is_zero(), self.milliseconds_estimate),
            // Images the vendor did not count: as many as the request asked for (`n`).
            images: estimate(u.images.map(u64::from), !p.per_image.0.is_zero(), self.images_estimate),
        };
        if u.milliseconds.is_none() && !p.per_second.0.is_zero() {
            tracing::warn!(
                seconds = self.milliseconds_estimate / 1000,
                "a call priced per second reported no duration: billed its reserved seconds"
            );
        }
        // Named units the vendor did not report (none that costs): those quoted, estimated.
        let named = if p.units.is_empty() || p.named_covers(&u.named) {
            u.named.as_slice()
        } else {
            estimated = true;
            self.named_estimate.as_slice()
        };
        (units, named, estimated)
    }
}

impl crate::store::call_log::Charges for Billing {
    fn lock(&self) -> &tokio::sync::Mutex<()> {
        &self.wallets.sync
    }

    /// Moves a committed charge out of `pending`, on the user and, for a limited key, on the key.
    fn committed(&self, r: &crate::store::CallRecord, applied: bool) {
        self.wallets.committed(Account::User(r.user_id.unwrap_or_default()), r.charge_micros, applied);
        if r.key_limited {
            self.wallets.committed(Account::KeyLimit(r.key_id.unwrap_or_default()), r.charge_micros, applied);
        }
    }
}

/// Why a call was refused before it started.
#[derive(Debug, Clone)]
pub enum Refusal {
    NotPriced,
    /// The plugin's quote names a unit the price table does not price.
    UnitNotPriced(String),
    /// The model is priced by named units, and the call's op quoted none.
    NoUnitQuoted,
    /// A billing-relevant field of the request is malformed (400).
    BadRequest {
        param: Option<&'static str>,
        message: String,
    },
    Insufficient {
        account: Account,
        available: i64,
        needed: i64,
    },
}

/// What a call is priced as.
#[derive(Debug, Clone, Copy)]
pub enum Priced<'a> {
    /// The model's prices (`[models."<model>"]`).
    Model(&'a str),
    /// A model-less call of a plugin route marked billed (`[ops."<plugin>/<op>"]`).
    Op { plugin: &'a str, op: &'a str },
    /// Requests run in a batch: the model's prices at its `batch` share.
    Batch(&'a str),
}

impl<'a> Priced<'a> {
    /// How a call of `op` on `model` ("" for a model-less route) is priced.
    pub fn of(plugin: &'a str, op: &'a str, model: &'a str) -> Priced<'a> {
        match model {
            "" => Priced::Op { plugin, op },
            model if op == batch::BATCH_OP => Priced::Batch(model),
            model => Priced::Model(model),
        }
    }

    /// Its entry in the price table.
    fn price(self, table: &PriceTable) -> Option<&ModelPrice> {
        match self {
            Priced::Model(model) | Priced::Batch(model) => table.model(model),
            Priced::Op { plugin, op } => table.op(&format!("{plugin}/{op}")),
        }
    }

    /// What its cost in `price` is multiplied by for a consumer of `group`.
    fn factor(self, table: &PriceTable, group: &str, price: &ModelPrice) -> Decimal {
        let share = match self {
            Priced::Batch(_) => price.batch.map_or(Decimal::ONE, |s| s.0),
            _ => Decimal::ONE,
        };
        table.factor(group, price) * share
    }
}

fn modified(path: &std::path::Path) -> Option<SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}

#[cfg(test)]
mod tests;
