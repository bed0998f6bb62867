//! Speech prefetch (`compat-protocols.md` §4): while a chat answer streams, its sentences are
//! synthesized on a speech channel into a per-user cache, so that the app's
//! `POST /v1/audio/speech` for a sentence (or for the whole reply, joined) is answered at once.
//! This module holds what the surfaces share: the settings, the cache (`cache`), the joining
//! of audio (`wav`), and the places on the speech channels.
//!
//! Invariants:
//! - at most `concurrency` prefetches run on one channel at once, each on the least busy
//!   channel serving the speech model (`place`); a place is given back when its holder ends;
//! - billing: a prefetched sentence is an ordinary speech call of the chat's consumer, charged
//!   when synthesized, once; a cache hit (the sentence, a joined reply, or a wait for one being
//!   synthesized) is not charged again and is served to that user only.

pub mod cache;
pub mod wav;

use crate::keypool::Channel;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// What the operator set (`[speech_prefetch]`).
#[derive(Debug, Clone)]
pub struct Settings {
    /// The speech model sentences are synthesized with; `None`: prefetch is off.
    pub model: Option<String>,
    pub voice: String,
    pub format: String,
    /// Whether a chat that does not say `tts_enabled` is prefetched (the accelerator's clients
    /// never say it).
    pub by_default: bool,
    /// Prefetches at once per speech channel.
    pub concurrency: usize,
    /// How long a speech request waits for a sentence being synthesized.
    pub wait: Duration,
    pub limits: cache::Limits,
}

pub struct Prefetch {
    pub settings: Settings,
    pub cache: Arc<cache::Cache>,
    busy: Mutex<HashMap<String, usize>>,
    freed: tokio::sync::Notify,
}

/// A prefetch's place on a channel, given back when dropped.
pub struct Place {
    prefetch: Arc<Prefetch>,
    pub channel: Arc<Channel>,
}

impl Drop for Place {
    fn drop(&mut self) {
        let mut busy = self.prefetch.busy.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = busy.get_mut(&self.channel.name) {
            *n = n.saturating_sub(1);
        }
        drop(busy);
        self.prefetch.freed.notify_waiters();
    }
}

impl Prefetch {
    pub fn new(settings: Settings) -> Prefetch {
        let cache = Arc::new(cache::Cache::new(settings.limits));
        Prefetch { settings, cache, busy: Mutex::default(), freed: tokio::sync::Notify::new() }
    }

    /// A place on the least busy of `channels` with room, waiting at most `within` for one.
    pub async fn place(self: &Arc<Self>, channels: &[Arc<Channel>], within: Duration) -> Option<Place> {
        if channels.is_empty() {
            return None;
        }
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let freed = self.freed.notified();
            {
                let mut busy = self.busy.lock().unwrap_or_else(|p| p.into_inner());
                let least = channels
                    .iter()
                    .map(|c| (busy.get(&c.name).copied().unwrap_or(0), c))
                    .filter(|(n, _)| *n < self.settings.concurrency)
                    .min_by_key(|(n, _)| *n)
                    .map(|(_, c)| Arc::clone(c));
                if let Some(channel) = least {
                    *busy.entry(channel.name.clone()).or_default() += 1;
                    return Some(Place { prefetch: Arc::clone(self), channel });
                }
            }
            if tokio::time::timeout_at(deadline, freed).await.is_err() {
                return None;
            }
        }
    }

    /// Prefetches running per channel.
    pub fn busy(&self) -> HashMap<String, usize> {
        self.busy.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}
