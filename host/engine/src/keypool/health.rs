//! The health of one upstream key: a small circuit breaker driven by classified outcomes.
//!
//! - `unauthorized` or `insufficient-balance`: the key is **disabled**. After `probe_after`
//!   (doubling on each failed probe, up to ten minutes) one real call is let through as a
//!   probe; its success re-enables the key. A failed probe costs the consumer nothing: the
//!   call fails over to another key before any byte is sent.
//! - `rate-limited`: the key **cools down** for the vendor's retry-after (or 10 s).
//! - `upstream-fault` / `timeout`: counted in a sliding window of the last 60 s; at four or
//!   more samples with half or more faults, the key cools down for 30 s.
//! - success clears all of it.
//!
//! It also holds the key's last known balance at the vendor (read by `engine::balance`, on
//! the highest-balance strategy's schedule or when the operator asks) and what last went
//! wrong with the key (`LastError`: the class of the failure, or why its balance could not be
//! read), which a success does not erase: it is history for the operator, not state.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

const WINDOW: Duration = Duration::from_secs(60);
const FAULT_COOLDOWN: Duration = Duration::from_secs(30);
const RATE_LIMIT_COOLDOWN: Duration = Duration::from_secs(10);
const MAX_PROBE_BACKOFF: Duration = Duration::from_secs(600);

/// What one call taught about a key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyOutcome {
    Success,
    /// The upstream refused the key itself (revoked, out of balance).
    Refused,
    RateLimited(Option<Duration>),
    Fault,
    /// Nothing about the key (the consumer's request was bad, the plugin failed).
    Neutral,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum KeyState {
    Healthy,
    CoolingDown,
    Disabled,
}

impl KeyState {
    /// The name the admin API shows.
    pub fn as_str(self) -> &'static str {
        match self {
            KeyState::Healthy => "healthy",
            KeyState::CoolingDown => "cooling_down",
            KeyState::Disabled => "disabled",
        }
    }
}

/// What last went wrong with a key, and when (unix seconds).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct LastError {
    pub message: String,
    pub at: i64,
}

#[derive(Debug)]
struct State {
    disabled: Option<Disabled>,
    cooling_until: Option<Instant>,
    recent: VecDeque<(Instant, bool)>,
    last_error: Option<LastError>,
}

#[derive(Debug)]
struct Disabled {
    probe_at: Instant,
    backoff: Duration,
    probing: bool,
}

#[derive(Debug)]
pub struct KeyHealth {
    state: Mutex<State>,
    probe_after: Duration,
    /// Micros; `UNKNOWN_BALANCE` until read.
    balance: AtomicI64,
}

const UNKNOWN_BALANCE: i64 = i64::MIN;

impl KeyHealth {
    pub fn new(probe_after: Duration) -> KeyHealth {
        KeyHealth {
            state: Mutex::new(State { disabled: None, cooling_until: None, recent: VecDeque::new(), last_error: None }),
            probe_after,
            balance: AtomicI64::new(UNKNOWN_BALANCE),
        }
    }

    /// The key's balance at the vendor in micros, when known.
    pub fn balance(&self) -> Option<i64> {
        Some(self.balance.load(Ordering::Relaxed)).filter(|&b| b != UNKNOWN_BALANCE)
    }

    pub fn set_balance(&self, micros: Option<i64>) {
        self.balance.store(micros.unwrap_or(UNKNOWN_BALANCE), Ordering::Relaxed);
    }

    pub fn last_error(&self) -> Option<LastError> {
        self.state.lock().expect("key health").last_error.clone()
    }

    /// Records `message` as what last went wrong with the key, now.
    pub fn note_error(&self, message: impl Into<String>) {
        let error = LastError { message: message.into(), at: crate::store::now_unix() };
        self.state.lock().expect("key health").last_error = Some(error);
    }

    /// Takes the key for a call if it may serve one now (a disabled key: one probe call).
    pub fn try_take(&self, now: Instant) -> bool {
        let mut s = self.state.lock().expect("key health");
        if let Some(d) = &mut s.disabled {
            if d.probing || now < d.probe_at {
                return false;
            }
            d.probing = true;
            return true;
        }
        s.cooling_until.is_none_or(|t| now >= t)
    }

    /// Whether `try_take` would succeed now (no side effect).
    pub fn available(&self, now: Instant) -> bool {
        let s = self.state.lock().expect("key health");
        match &s.disabled {
            Some(d) => !d.probing && now >= d.probe_at,
            None => s.cooling_until.is_none_or(|t| now >= t),
        }
    }

    pub fn state(&self, now: Instant) -> KeyState {
        let s = self.state.lock().expect("key health");
        if s.disabled.is_some() {
            KeyState::Disabled
        } else if s.cooling_until.is_some_and(|t| now < t) {
            KeyState::CoolingDown
        } else {
            KeyState::Healthy
        }
    }

    pub fn report(&self, outcome: KeyOutcome, now: Instant) {
        let failure = match outcome {
            KeyOutcome::Refused => Some("refused by the vendor (unauthorized or out of balance)"),
            KeyOutcome::RateLimited(_) => Some("rate limited by the vendor"),
            KeyOutcome::Fault => Some("upstream fault or timeout"),
            KeyOutcome::Success | KeyOutcome::Neutral => None,
        };
        if let Some(message) = failure {
            self.note_error(message);
        }
        let mut s = self.state.lock().expect("key health");
        match outcome {
            KeyOutcome::Neutral => {
                if let Some(d) = &mut s.disabled {
                    d.probing = false; // the probe proved nothing; allow another
                }
            }
            KeyOutcome::Success => {
                s.disabled = None;
                s.cooling_until = None;
                s.recent.push_back((now, true));
            }
            KeyOutcome::Refused => {
                let backoff = match &s.disabled {
                    Some(d) => (d.backoff * 2).min(MAX_PROBE_BACKOFF),
                    None => self.probe_after,
                };
                s.disabled = Some(Disabled { probe_at: now + backoff, backoff, probing: false });
            }
            KeyOutcome::RateLimited(after) => {
                if let Some(d) = &mut s.disabled {
                    d.probing = false;
                }
                s.cooling_until = Some(now + after.unwrap_or(RATE_LIMIT_COOLDOWN));
            }
            KeyOutcome::Fault => {
                if let Some(d) = &mut s.disabled {
                    d.probing = false;
                    d.probe_at = now + d.backoff;
                }
                s.recent.push_back((now, false));
                while s.recent.front().is_some_and(|(t, _)| now.duration_since(*t) > WINDOW) {
                    s.recent.pop_front();
                }
                let faults = s.recent.iter().filter(|(_, ok)| !ok).count();
                if s.recent.len() >= 4 && faults * 2 >= s.recent.len() {
                    s.cooling_until = Some(now + FAULT_COOLDOWN);
                    s.recent.clear();
                }
            }
        }
        while s.recent.len() > 64 {
            s.recent.pop_front();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refused_key_is_disabled_then_probed_once_and_recovers() {
        let h = KeyHealth::new(Duration::from_secs(5));
        let t0 = Instant::now();
        h.report(KeyOutcome::Refused, t0);
        assert_eq!(h.state(t0), KeyState::Disabled);
        assert!(!h.try_take(t0 + Duration::from_secs(4)));
        assert!(h.try_take(t0 + Duration::from_secs(5)), "one probe");
        assert!(!h.try_take(t0 + Duration::from_secs(5)), "only one probe at a time");
        h.report(KeyOutcome::Refused, t0 + Duration::from_secs(5));
        assert!(!h.try_take(t0 + Duration::from_secs(14)), "backoff doubled");
        assert!(h.try_take(t0 + Duration::from_secs(15)));
        h.report(KeyOutcome::Success, t0 + Duration::from_secs(15));
        assert_eq!(h.state(t0 + Duration::from_secs(15)), KeyState::Healthy);
        let last = h.last_error().expect("the refusal is remembered after the recovery");
        assert!(last.message.starts_with("refused by the vendor"), "{last:?}");
        assert!(h.try_take(t0 + Duration::from_secs(15)));
    }

    #[test]
    fn rate_limits_cool_down_and_fault_storms_too() {
        let h = KeyHealth::new(Duration::from_secs(5));
        let t0 = Instant::now();
        h.report(KeyOutcome::RateLimited(Some(Duration::from_secs(2))), t0);
        assert!(!h.try_take(t0 + Duration::from_secs(1)));
        assert!(h.try_take(t0 + Duration::from_secs(2)));
        assert_eq!(h.last_error().unwrap().message, "rate limited by the vendor");
        let h = KeyHealth::new(Duration::from_secs(5));
        h.report(KeyOutcome::Success, t0);
        assert_eq!(h.last_error(), None, "a success is no error");
        h.report(KeyOutcome::Fault, t0);
        h.report(KeyOutcome::Success, t0);
        assert!(h.try_take(t0), "one fault in three is not a storm");
        h.report(KeyOutcome::Fault, t0);
        assert_eq!(h.state(t0), KeyState::CoolingDown);
        assert!(h.try_take(t0 + FAULT_COOLDOWN));
    }
}
