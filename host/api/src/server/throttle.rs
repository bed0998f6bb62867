//! Per-address limits on the unauthenticated account routes (sign-in, registration): a token
//! bucket per client IP, `per_minute` attempts refilled evenly over a minute.
//!
//! Bounded: at most `MAX_ADDRESSES` buckets are kept; beyond that, buckets that are full again
//! are forgotten first, and if every one is still draining the table starts over (an attack
//! from that many addresses is not stopped by a per-address limit anyway).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

const MAX_ADDRESSES: usize = 100_000;

pub struct Throttle {
    per_minute: u32,
    buckets: Mutex<HashMap<IpAddr, Bucket>>,
}

#[derive(Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

impl Throttle {
    pub fn new(per_minute: u32) -> Throttle {
        Throttle { per_minute: per_minute.max(1), buckets: Mutex::new(HashMap::new()) }
    }

    /// Takes one attempt for `ip` at `now`; `Err(wait)` when it has none left.
    pub fn take(&self, ip: IpAddr, now: Instant) -> Result<(), Duration> {
        let capacity = f64::from(self.per_minute);
        let per_sec = capacity / 60.0;
        let mut buckets = self.buckets.lock().expect("throttle");
        if buckets.len() >= MAX_ADDRESSES && !buckets.contains_key(&ip) {
            let full_after = Duration::from_secs(60);
            buckets.retain(|_, b| now.saturating_duration_since(b.at) < full_after);
            if buckets.len() >= MAX_ADDRESSES {
                buckets.clear();
            }
        }
        let b = buckets.entry(ip).or_insert(Bucket { tokens: capacity, at: now });
        b.tokens = (b.tokens + now.saturating_duration_since(b.at).as_secs_f64() * per_sec).min(capacity);
        b.at = now;
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - b.tokens) / per_sec))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_address_gets_its_attempts_per_minute_then_waits() {
        let t = Throttle::new(3);
        let (a, b) = ("10.0.0.1".parse().unwrap(), "10.0.0.2".parse().unwrap());
        let now = Instant::now();
        for _ in 0..3 {
            assert!(t.take(a, now).is_ok());
        }
        let wait = t.take(a, now).unwrap_err();
        assert!(wait > Duration::from_secs(19) && wait <= Duration::from_secs(20), "{wait:?}");
        assert!(t.take(b, now).is_ok(), "another address has its own bucket");
        assert!(t.take(a, now + Duration::from_secs(20)).is_ok(), "refilled evenly");
        assert!(t.take(a, now + Duration::from_secs(20)).is_err());
    }
}

/// Long-lived streams open per consumer key (task progress streams, video chats that wait,
/// WebSocket sessions): each holds a connection and reads or a plugin slot, so a key holds at
/// most `limit` at once (`MAX_STREAMS_PER_KEY` for task streams).
pub struct OpenStreams {
    open: std::sync::Mutex<std::collections::HashMap<i64, u32>>,
    limit: u32,
}

pub const MAX_STREAMS_PER_KEY: u32 = 16;

impl Default for OpenStreams {
    fn default() -> Self {
        OpenStreams::new(MAX_STREAMS_PER_KEY)
    }
}

/// One open stream; closing it (dropping) frees its place.
pub struct StreamSlot {
    streams: std::sync::Arc<OpenStreams>,
    key_id: i64,
}

impl OpenStreams {
    pub fn new(limit: u32) -> Self {
        OpenStreams { open: std::sync::Mutex::default(), limit }
    }

    pub fn limit(&self) -> u32 {
        self.limit
    }

    /// A place for one more stream of `key_id`; `None` at the limit.
    pub fn open(self: &std::sync::Arc<Self>, key_id: i64) -> Option<StreamSlot> {
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        let n = open.entry(key_id).or_default();
        if *n >= self.limit {
            return None;
        }
        *n += 1;
        Some(StreamSlot { streams: std::sync::Arc::clone(self), key_id })
    }
}

impl Drop for StreamSlot {
    fn drop(&mut self) {
        let mut open = self.streams.open.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = open.get_mut(&self.key_id) {
            *n -= 1;
            if *n == 0 {
                open.remove(&self.key_id);
            }
        }
    }
}

/// The answer at the limit.
pub fn too_many_streams() -> crate::exchange::CallError {
    crate::exchange::CallError::new(
        429,
        "rate_limit_error",
        "too_many_streams",
        format!("This key has {MAX_STREAMS_PER_KEY} task streams open; close one first."),
    )
}

#[cfg(test)]
mod stream_tests {
    #[test]
    fn a_key_holds_a_bounded_number_of_streams_and_closing_one_frees_its_place() {
        let streams = std::sync::Arc::new(super::OpenStreams::default());
        let held: Vec<_> = (0..super::MAX_STREAMS_PER_KEY).map(|_| streams.open(1).unwrap()).collect();
        assert!(streams.open(1).is_none());
        assert!(streams.open(2).is_some(), "another key is not held back");
        drop(held);
        assert!(streams.open(1).is_some());
        assert!(streams.open.lock().unwrap().get(&1).is_none_or(|n| *n <= 1));
    }
}
