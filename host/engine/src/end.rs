//! `CallEnd`: the one value that settles a call's money and writes its record.
//!
//! It is created when a call is resolved and consumed by exactly one of `refuse`, `reply`,
//! `relay`, `fail`, `stream`, or, for a submitted task, `into_task` (its record and hold are
//! written with the task) or `untracked` (the task could not be stored) (each takes `self`), so a call cannot be settled or recorded
//! twice, and the compiler refuses a path that forgets it. If it is dropped unconsumed (the
//! consumer went away and hyper dropped the call, a stream task died), `Drop` records the call
//! as `client_gone`; the reservation it held returns by itself (`Reservation`'s drop) and an
//! `Idempotency-Key` it held is given up.
//!
//! The finishing methods are synchronous: money and the record are done before anything is
//! awaited. They hand back the idempotency claim, which the caller completes afterwards.

use super::affinity::FeeClaim;
use super::idempotency::Held;
use crate::billing::{Billing, Meter};
use crate::billing::{Charge, Reported};
use crate::exchange::{is_fault, CallError, StreamReport, VendorWork};
use crate::plugin::wit;
use crate::store::{CallLog, CallRecord};
use crate::telemetry::METRICS;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Instant;

pub(super) struct CallEnd {
    billing: Option<Arc<Billing>>,
    pub(super) meter: Option<Meter>,
    /// One-time fees of the objects the call uses, reserved with the meter: paid when the
    /// call is charged, given back otherwise (by the claim's drop).
    pub(super) fees: Option<FeeClaim>,
    pub(super) held: Option<Held>,
    log: CallLog,
    /// `None` once recorded.
    rec: Option<CallRecord>,
    started: Instant,
}

impl CallEnd {
    /// Counts the call in flight until it ends.
    pub(super) fn new(billing: Option<Arc<Billing>>, log: CallLog, rec: CallRecord, started: Instant) -> CallEnd {
        METRICS.in_flight.fetch_add(1, Relaxed);
        CallEnd { billing, meter: None, fees: None, held: None, log, rec: Some(rec), started }
    }

    /// The channel and plugin that serve, when failover moved the call.
    pub(super) fn served_by(&mut self, channel: &str, plugin: &str) {
        if let Some(rec) = &mut self.rec {
            rec.channel = Some(channel.to_string());
            rec.plugin = Some(plugin.to_string());
        }
    }

    /// Refused before the upstream was called: free.
    pub(super) fn refuse(mut self, e: &CallError) -> Option<Held> {
        self.bill(Bill::Free);
        self.finish(|rec| {
            rec.status = e.status;
            rec.error_kind = Some(e.code.clone());
        })
    }

    /// Answered from an `Idempotency-Key`'s stored answer: free, recorded.
    pub(super) fn replayed(self, status: u16) {
        self.finish(|rec| {
            rec.status = status;
            rec.error_kind = Some("idempotent_replay".into());
        });
    }

    /// A reply: charged by its usage when it answered 2xx without a vendor error; a 2xx whose
    /// plugin reports a fault (it could not read the answer) is charged its reservation; else
    /// free (the vendor refused).
    pub(super) fn reply(mut self, status: u16, usage: &wit::Usage, error: Option<&wit::AdapterError>) -> Option<Held> {
        let answered = error.is_none() && (200..300).contains(&status);
        let unreadable = (200..300).contains(&status) && error.is_some_and(|e| is_fault(e.kind));
        let how = if answered {
            Bill::Usage(reported(usage), None)
        } else if unreadable {
            Bill::Reserved
        } else {
            Bill::Free
        };
        let charge = self.bill(how);
        self.finish(|rec| {
            set_usage(rec, usage);
            rec.status = status;
            rec.error_kind = error.map(|e| super::kind_name(e.kind).to_string());
            set_charge(rec, charge);
        })
    }

    /// A relayed download: charged (per call) when it answered 2xx.
    pub(super) fn relay(mut self, status: u16) -> Option<Held> {
        let charge =
            self.bill(if (200..300).contains(&status) { Bill::Usage(Reported::default(), None) } else { Bill::Free });
        self.finish(|rec| {
            rec.status = status;
            set_charge(rec, charge);
        })
    }

    /// A failure: free when the vendor refused the request or never received it; charged its
    /// reservation (marked estimated) when the vendor did or may have done the work (it
    /// answered 2xx and the answer was unusable, or it was sent and no answer came).
    pub(super) fn fail(mut self, e: &CallError) -> Option<Held> {
        let charge = self.bill(if e.work != VendorWork::None { Bill::Reserved } else { Bill::Free });
        self.finish(|rec| {
            rec.status = e.status;
            rec.error_kind = Some(e.code.clone());
            set_charge(rec, charge);
        })
    }

    /// A piece of a socket session, ended by the plugin's word: charged the units the vendor
    /// reported, or its reservation (marked estimated) when the vendor worked without saying,
    /// or free. Its charge, if any.
    pub(crate) fn settle_piece(mut self, how: PieceEnd<'_>) -> Option<Charge> {
        let charge = self.bill(match how {
            PieceEnd::Reported(u) => Bill::Usage(reported(u), None),
            PieceEnd::Reserved(_) => Bill::Reserved,
            PieceEnd::Free => Bill::Free,
        });
        self.finish(|rec| {
            rec.streamed = true;
            match how {
                PieceEnd::Reported(u) => set_usage(rec, u),
                PieceEnd::Reserved(u) => {
                    set_usage(rec, u);
                    rec.status = 502;
                    rec.interrupted = true;
                    rec.error_kind = Some("socket_interrupted".into());
                }
                PieceEnd::Free => {
                    rec.status = 502;
                    rec.error_kind = Some("vendor_failed".into());
                }
            }
            set_charge(rec, charge);
        });
        charge
    }

    /// A submitted task took the call over: its record and the hold of its reservation were
    /// written with the task, in one transaction (`tasks::create_with_hold`), and its meter
    /// was released for the hold. Never recorded here; hands back the idempotency claim.
    pub(super) fn into_task(mut self) -> Option<Held> {
        // The fees are in the task's hold, charged with it when it succeeds.
        if let Some(f) = self.fees.take() {
            f.charged();
        }
        if self.rec.take().is_some() {
            METRICS.in_flight.fetch_sub(1, Relaxed);
        }
        self.held.take()
    }

    /// The call's record as it stands (for a task, whose record is written with it).
    pub(super) fn draft(&self) -> CallRecord {
        let mut rec = self.rec.clone().unwrap_or_default();
        rec.latency_us = self.started.elapsed().as_micros() as u64;
        rec
    }

    /// A submitted task whose row could not be written: the vendor has the job, so the call
    /// is charged its reservation (estimated), like any call the vendor worked on.
    pub(super) fn untracked(mut self, e: &CallError) -> Option<Held> {
        let charge = self.bill(Bill::Reserved);
        self.finish(|rec| {
            rec.status = e.status;
            rec.error_kind = Some(e.code.clone());
            set_charge(rec, charge);
        })
    }

    /// The end of a stream, by the written rule: billed for what was delivered (the usage
    /// seen, else one output token per content event or byte chunk, and the request's
    /// estimate for other priced units); a stream that failed before delivering anything and
    /// reported no usage costs nothing. Its answer is kept for an idempotency key.
    pub(super) fn stream(mut self, report: StreamReport) {
        let interrupted = report.error.is_some() || report.client_gone;
        let nothing = report.delivered_events == 0 && reported(&report.usage) == Reported::default() && interrupted;
        if report.client_gone {
            METRICS.streams_client_gone.fetch_add(1, Relaxed);
        }
        if report.error.is_some() {
            METRICS.streams_interrupted.fetch_add(1, Relaxed);
        }
        let mut usage = reported(&report.usage);
        if interrupted {
            // A cut stream's output so far is at least what reached the consumer, whatever
            // count the vendor gave before the cut (Anthropic's `message_start` says 1).
            usage.output_tokens = usage.output_tokens.map(|o| o.max(report.delivered_events));
        }
        let charge = self.bill(if nothing { Bill::Free } else { Bill::Usage(usage, Some(report.delivered_events)) });
        let held = self.finish(|rec| {
            set_usage(rec, &report.usage);
            rec.streamed = true;
            rec.interrupted = interrupted;
            if report.client_gone {
                rec.error_kind = Some("client_gone".into());
            }
            if let Some(e) = &report.error {
                rec.error_kind = Some(e.code.clone());
            }
            set_charge(rec, charge);
        });
        if let Some(h) = held {
            if nothing {
                drop(h); // gives the key up
            } else {
                h.complete_later(report.captured.map(|b| (200, Some(report.content_type), b)));
            }
        }
    }

    /// Ends the call's reservation, once: released, settled by usage (with the content
    /// events a stream delivered), or charged whole. `None` when nothing was charged.
    fn bill(&mut self, how: Bill) -> Option<Charge> {
        let (Some(b), Some(m)) = (&self.billing, self.meter.take()) else { return None };
        let _span = crate::trace::span("settle");
        let fees = self.fees.take();
        let charge = match how {
            Bill::Free => {
                b.release(m);
                None
            }
            Bill::Usage(usage, delivered_events) => Some(b.settle(m, &usage, delivered_events)),
            Bill::Reserved => Some(b.settle_reserved(m)),
        };
        // Charged: the fees are in the charge. Free: their drop gives them back.
        if let (Some(f), Some(_)) = (fees, charge) {
            f.charged();
        }
        charge
    }

    /// Writes the record (once) and hands back the idempotency claim.
    fn finish(mut self, fill: impl FnOnce(&mut CallRecord)) -> Option<Held> {
        if let Some(mut rec) = self.rec.take() {
            fill(&mut rec);
            rec.latency_us = self.started.elapsed().as_micros() as u64;
            annotate_trace(&rec);
            METRICS.in_flight.fetch_sub(1, Relaxed);
            self.log.record(rec);
        }
        self.held.take()
    }
}

/// The call's record, on its trace's root span (if the call is traced).
fn annotate_trace(rec: &CallRecord) {
    let Some(trace) = crate::trace::current() else { return };
    trace.annotate("tollgate.request_id", rec.request_id.clone());
    let named = [("tollgate.model", &rec.model), ("tollgate.channel", &rec.channel), ("tollgate.plugin", &rec.plugin)];
    for (key, value) in named {
        if let Some(v) = value {
            trace.annotate(key, v.clone());
        }
    }
    if let Some(user) = rec.user_id {
        trace.annotate("tollgate.user_id", user);
    }
    trace.annotate("tollgate.charge_micros", rec.charge_micros);
    if let Some(kind) = &rec.error_kind {
        trace.annotate("tollgate.error", kind.clone());
        trace.fail(kind.clone());
    }
}

/// How a piece of a socket session ends.
#[derive(Clone, Copy)]
pub(crate) enum PieceEnd<'a> {
    /// Charged the units the vendor reported.
    Reported(&'a wit::Usage),
    /// Charged its reservation (these units), marked estimated.
    Reserved(&'a wit::Usage),
    Free,
}

/// How a call's reservation ends.
enum Bill {
    Free,
    Usage(Reported, Option<u64>),
    /// The vendor did (or may have done) the work and its usage is unknown.
    Reserved,
}

impl Drop for CallEnd {
    fn drop(&mut self) {
        if let Some(mut rec) = self.rec.take() {
            rec.status = 499;
            rec.error_kind = Some("client_gone".into());
            rec.interrupted = true;
            rec.latency_us = self.started.elapsed().as_micros() as u64;
            annotate_trace(&rec);
            METRICS.in_flight.fetch_sub(1, Relaxed);
            self.log.record(rec);
        }
        // The meter's reservation and the claim end by their own drops.
    }
}

/// The plugin's usage report in billing's terms.
pub(crate) fn reported(u: &wit::Usage) -> Reported {
    Reported {
        input_tokens: u.input_tokens,
        output_tokens: u.output_tokens,
        cached_tokens: u.cached_tokens,
        cache_write_tokens: u.cache_write_tokens,
        characters: u.characters,
        milliseconds: u.milliseconds,
        images: u.images,
        named: u.extra.clone(),
    }
}

fn set_charge(rec: &mut CallRecord, charge: Option<Charge>) {
    if let Some(c) = charge {
        rec.charge_micros = c.micros;
        rec.estimated = c.estimated;
        rec.key_limited = c.key_limited;
    }
}

fn set_usage(rec: &mut CallRecord, u: &wit::Usage) {
    rec.input_tokens = u.input_tokens;
    rec.output_tokens = u.output_tokens;
    rec.cached_tokens = u.cached_tokens;
    rec.characters = u.characters;
    rec.milliseconds = u.milliseconds;
    rec.images = u.images.map(u64::from);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::billing::Account;

    fn billing() -> Arc<Billing> {
        let dir = std::env::temp_dir().join(format!("tollgate-end-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join("pricing.toml");
        std::fs::write(&f, "[models.m]\nper_call = \"1\"\n").unwrap();
        Billing::load(f).unwrap()
    }

    fn started(b: &Arc<Billing>, log: &CallLog) -> CallEnd {
        let rec = CallRecord { request_id: "r1".into(), key_id: Some(1), user_id: Some(1), ..CallRecord::default() };
        let mut end = CallEnd::new(Some(Arc::clone(b)), log.clone(), rec, Instant::now());
        end.meter = Some(b.start(&[Account::User(1)], "default", "m", "chat", b"{}").unwrap());
        end
    }

    #[test]
    fn a_call_whose_task_dies_is_recorded_once_and_its_reservation_returns() {
        let (log, mut records) = CallLog::to_channel();
        let b = billing();
        b.wallets.set_db_balances([(Account::User(1), 5_000_000)]);
        let end = started(&b, &log);
        assert_eq!(b.wallets.available(Account::User(1)), 4_000_000, "reserved");
        let died = std::thread::spawn(move || {
            let _end = end;
            panic!("the call's task panicked");
        })
        .join();
        assert!(died.is_err());
        let rec = records.try_recv().expect("recorded");
        assert_eq!((rec.status, rec.error_kind.as_deref(), rec.charge_micros), (499, Some("client_gone"), 0));
        assert!(records.try_recv().is_err(), "once");
        assert_eq!(b.wallets.available(Account::User(1)), 5_000_000, "the reservation came back");

        // A call that ends normally is recorded once, and its drop adds nothing.
        let end = started(&b, &log);
        assert!(end.reply(200, &wit::Usage::default(), None).is_none());
        let rec = records.try_recv().expect("recorded");
        assert_eq!((rec.status, rec.charge_micros), (200, 1_000_000));
        assert!(records.try_recv().is_err(), "once");
    }
}
