//! The speech cache: audio by (user, model, voice, format, text), each entry queued, being
//! generated or ready, and the sentences of each prefetched reply in order.
//!
//! Invariants (tests below):
//! - an entry is generated once: whoever claims an absent key generates it; a claim of a key
//!   queued or being generated waits for it (`Claim::Wait`) instead of generating it again;
//! - a failed generation leaves nothing behind (its waiters are told, the next claim tries
//!   again): failures are never cached;
//! - bounded: at most `entries` entries and `bytes` bytes of audio (the oldest ready entries
//!   go first; when only unfinished entries are left a claim is refused), each kept `ttl`;
//!   one user holds at most a quarter of the entries (its own oldest go first);
//!   at most `entries` reply mappings of at most `MAX_SENTENCES` sentences;
//! - keys include the user: one user's audio is never another's hit.

use bytes::Bytes;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Mutex;
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// The most sentences one reply maps to.
pub const MAX_SENTENCES: usize = 200;

/// Synthesized audio.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Audio {
    pub bytes: Bytes,
    pub content_type: String,
}

/// What a speech is cached by.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Key {
    pub user_id: i64,
    pub model: String,
    pub voice: String,
    pub format: String,
    pub text: String,
}

/// Where an entry is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Phase {
    Queued,
    Generating,
    Ready(Audio),
}

struct Entry {
    phase: watch::Sender<Phase>,
    created: Instant,
}

#[derive(Default)]
struct Inner {
    entries: HashMap<Key, Entry>,
    bytes: usize,
    /// A reply's whole text (as a key) → its sentences' keys, in order.
    replies: HashMap<Key, (Vec<Key>, Instant)>,
}

#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub entries: usize,
    pub bytes: usize,
    pub ttl: Duration,
}

pub struct Cache {
    limits: Limits,
    inner: Mutex<Inner>,
    hits: AtomicU64,
    misses: AtomicU64,
    joined_hits: AtomicU64,
    failures: AtomicU64,
}

/// What a claim of a key found.
pub enum Claim {
    /// Nobody has it: the caller generates it and reports through the ticket.
    Mine(Ticket),
    /// Someone is generating it: wait for it (`wait`).
    Wait(watch::Receiver<Phase>),
    Ready(Audio),
    /// The cache is full of unfinished work.
    Full,
}

/// The duty to generate one entry; dropped unfinished, the entry is removed (a failure).
pub struct Ticket {
    cache: std::sync::Arc<Cache>,
    key: Option<Key>,
}

impl Ticket {
    pub fn generating(&self) {
        if let Some(key) = &self.key {
            if let Some(e) = self.cache.lock().entries.get(key) {
                e.phase.send_replace(Phase::Generating);
            }
        }
    }

    /// The audio is ready: waiters get it, later claims hit it.
    pub fn ready(mut self, audio: Audio) {
        let Some(key) = self.key.take() else { return };
        let cache = std::sync::Arc::clone(&self.cache);
        let mut inner = cache.lock();
        let size = audio.bytes.len();
        if let Some(e) = inner.entries.get(&key) {
            e.phase.send_replace(Phase::Ready(audio));
            inner.bytes += size;
        }
        cache.evict(&mut inner, Instant::now(), 0);
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        if let Some(key) = self.key.take() {
            self.cache.failures.fetch_add(1, Relaxed);
            // Removing the entry drops its sender: its waiters learn it failed.
            self.cache.lock().entries.remove(&key);
        }
    }
}

/// Waits for an entry someone generates, at most `within`; `None`: it failed, or took longer.
pub async fn wait(mut rx: watch::Receiver<Phase>, within: Duration) -> Option<Audio> {
    let ready = tokio::time::timeout(within, rx.wait_for(|p| matches!(p, Phase::Ready(_)))).await;
    match ready {
        Ok(Ok(phase)) => match &*phase {
            Phase::Ready(a) => Some(a.clone()),
            _ => None,
        },
        _ => None,
    }
}

/// What the operator sees of the cache.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Stats {
    pub entries: usize,
    pub completed: usize,
    pub pending: usize,
    pub generating: usize,
    pub bytes: usize,
    pub segment_mappings: usize,
    pub hits: u64,
    pub misses: u64,
    pub joined_hits: u64,
    /// Generations that failed (retried, never cached).
    pub failed: u64,
}

impl Cache {
    pub fn new(limits: Limits) -> Cache {
        Cache {
            limits,
            inner: Mutex::default(),
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
            joined_hits: AtomicU64::new(0),
            failures: AtomicU64::new(0),
        }
    }

    /// The most entries one user holds: a quarter of the cache (at least 32), so that no
    /// user's prefetches push everyone else's out.
    fn user_share(&self) -> usize {
        (self.limits.entries / 4).max(32).min(self.limits.entries)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Claims `key` (see `Claim`).
    pub fn claim(self: &std::sync::Arc<Self>, key: &Key) -> Claim {
        let now = Instant::now();
        let mut inner = self.lock();
        if let Some(e) = inner.entries.get(key) {
            match &*e.phase.borrow() {
                Phase::Ready(a) if now.duration_since(e.created) < self.limits.ttl => return Claim::Ready(a.clone()),
                Phase::Ready(_) => {}
                // Work in progress is never replaced, however old: one ticket per key.
                _ => return Claim::Wait(e.phase.subscribe()),
            }
        }
        self.evict(&mut inner, now, 1);
        // A user holds at most its share: its own oldest ready entry makes room, else none.
        let share = self.user_share();
        let mine: Vec<(&Key, &Entry)> = inner.entries.iter().filter(|(k, _)| k.user_id == key.user_id).collect();
        if mine.len() >= share {
            let oldest = mine
                .iter()
                .filter(|(_, e)| matches!(&*e.phase.borrow(), Phase::Ready(_)))
                .min_by_key(|(_, e)| e.created)
                .map(|(k, _)| (*k).clone());
            let Some(oldest) = oldest else { return Claim::Full };
            if let Some(e) = inner.entries.remove(&oldest) {
                inner.bytes -= ready_bytes(&e);
            }
        }
        if inner.entries.len() >= self.limits.entries {
            return Claim::Full;
        }
        let (phase, _) = watch::channel(Phase::Queued);
        inner.entries.insert(key.clone(), Entry { phase, created: now });
        Claim::Mine(Ticket { cache: std::sync::Arc::clone(self), key: Some(key.clone()) })
    }

    /// What a speech request finds: the audio, or someone generating it (the caller counts
    /// the outcome: `hit`, `miss`, `joined_hit`).
    pub fn peek(&self, key: &Key) -> Option<Result<Audio, watch::Receiver<Phase>>> {
        let inner = self.lock();
        inner.entries.get(key).filter(|e| e.created.elapsed() < self.limits.ttl).map(|e| match &*e.phase.borrow() {
            Phase::Ready(a) => Ok(a.clone()),
            _ => Err(e.phase.subscribe()),
        })
    }

    /// A speech request was answered from the cache.
    pub fn hit(&self) {
        self.hits.fetch_add(1, Relaxed);
    }

    /// A speech request was not.
    pub fn miss(&self) {
        self.misses.fetch_add(1, Relaxed);
    }

    /// Records a reply's sentences, in order, under its whole text.
    pub fn map_reply(&self, whole: Key, sentences: Vec<Key>) {
        if sentences.len() < 2 || sentences.len() > MAX_SENTENCES {
            return;
        }
        let now = Instant::now();
        let mut inner = self.lock();
        let ttl = self.limits.ttl;
        inner.replies.retain(|_, (_, at)| now.duration_since(*at) < ttl);
        if inner.replies.len() >= self.limits.entries {
            // The oldest mapping makes room.
            if let Some(oldest) = inner.replies.iter().min_by_key(|(_, (_, at))| *at).map(|(k, _)| k.clone()) {
                inner.replies.remove(&oldest);
            }
        }
        inner.replies.insert(whole, (sentences, now));
    }

    /// The sentences of a reply whose whole text is `whole`.
    pub fn reply(&self, whole: &Key) -> Option<Vec<Key>> {
        let inner = self.lock();
        inner.replies.get(whole).filter(|(_, at)| at.elapsed() < self.limits.ttl).map(|(keys, _)| keys.clone())
    }

    /// A joined answer was served (counted apart from single hits).
    pub fn joined_hit(&self) {
        self.joined_hits.fetch_add(1, Relaxed);
    }

    pub fn stats(&self) -> Stats {
        let inner = self.lock();
        let mut s = Stats {
            entries: inner.entries.len(),
            completed: 0,
            pending: 0,
            generating: 0,
            bytes: inner.bytes,
            segment_mappings: inner.replies.len(),
            hits: self.hits.load(Relaxed),
            misses: self.misses.load(Relaxed),
            joined_hits: self.joined_hits.load(Relaxed),
            failed: self.failures.load(Relaxed),
        };
        for e in inner.entries.values() {
            match &*e.phase.borrow() {
                Phase::Queued => s.pending += 1,
                Phase::Generating => s.generating += 1,
                Phase::Ready(_) => s.completed += 1,
            }
        }
        s
    }

    /// Drops every ready entry and mapping (work in progress finishes into the cache).
    pub fn clear(&self) -> usize {
        let mut inner = self.lock();
        let before = inner.entries.len();
        inner.entries.retain(|_, e| !matches!(&*e.phase.borrow(), Phase::Ready(_)));
        inner.bytes = 0;
        inner.replies.clear();
        before - inner.entries.len()
    }

    /// Removes expired entries, then the oldest ready ones while over the limits (with `room`
    /// entries to spare).
    fn evict(&self, inner: &mut Inner, now: Instant, room: usize) {
        let ttl = self.limits.ttl;
        let size = ready_bytes;
        let mut freed = 0;
        inner.entries.retain(|_, e| {
            // Work in progress stays until its ticket ends it.
            let keep = now.duration_since(e.created) < ttl || !matches!(&*e.phase.borrow(), Phase::Ready(_));
            if !keep {
                freed += size(e);
            }
            keep
        });
        inner.bytes -= freed;
        while inner.entries.len() + room > self.limits.entries || inner.bytes > self.limits.bytes {
            let oldest = inner
                .entries
                .iter()
                .filter(|(_, e)| matches!(&*e.phase.borrow(), Phase::Ready(_)))
                .min_by_key(|(_, e)| e.created)
                .map(|(k, _)| k.clone());
            let Some(k) = oldest else { break };
            if let Some(e) = inner.entries.remove(&k) {
                inner.bytes -= size(&e);
            }
        }
    }
}

/// The bytes an entry counts for (its audio, once ready).
fn ready_bytes(e: &Entry) -> usize {
    match &*e.phase.borrow() {
        Phase::Ready(a) => a.bytes.len(),
        _ => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn key(user_id: i64, text: &str) -> Key {
        Key { user_id, model: "m".into(), voice: "v".into(), format: "wav".into(), text: text.into() }
    }

    fn audio(n: usize) -> Audio {
        Audio { bytes: Bytes::from(vec![7u8; n]), content_type: "audio/wav".into() }
    }

    fn cache(entries: usize, bytes: usize) -> Arc<Cache> {
        Arc::new(Cache::new(Limits { entries, bytes, ttl: Duration::from_secs(3600) }))
    }

    #[tokio::test]
    async fn an_entry_is_generated_once_and_waiters_get_it() {
        let c = cache(10, 1 << 20);
        let Claim::Mine(ticket) = c.claim(&key(1, "a")) else { panic!("the first claim generates") };
        let Claim::Wait(rx) = c.claim(&key(1, "a")) else { panic!("the second waits") };
        let Some(Err(looked)) = c.peek(&key(1, "a")) else { panic!("a request waits too") };
        assert!(matches!(c.claim(&key(2, "a")), Claim::Mine(_)), "another user's text is not this one");
        ticket.generating();
        assert_eq!(c.stats().generating, 1);
        let waiter = tokio::spawn(wait(rx, Duration::from_secs(5)));
        ticket.ready(audio(3));
        assert_eq!(waiter.await.unwrap(), Some(audio(3)));
        assert_eq!(wait(looked, Duration::from_secs(5)).await, Some(audio(3)));
        assert!(matches!(c.claim(&key(1, "a")), Claim::Ready(a) if a == audio(3)));
        let s = c.stats();
        assert_eq!((s.completed, s.bytes), (1, 3));
        assert!(c.peek(&key(1, "b")).is_none());
    }

    #[tokio::test]
    async fn a_failure_is_not_cached_and_its_waiters_are_told() {
        let c = cache(10, 1 << 20);
        let Claim::Mine(ticket) = c.claim(&key(1, "a")) else { panic!() };
        let Claim::Wait(rx) = c.claim(&key(1, "a")) else { panic!() };
        drop(ticket);
        assert_eq!(wait(rx, Duration::from_secs(5)).await, None);
        assert_eq!(c.stats().failed, 1);
        assert!(matches!(c.claim(&key(1, "a")), Claim::Mine(_)), "tried again");
    }

    #[test]
    fn the_cache_is_bounded_by_entries_and_bytes_oldest_first() {
        let c = cache(2, 10);
        for t in ["a", "b"] {
            let Claim::Mine(ticket) = c.claim(&key(1, t)) else { panic!() };
            ticket.ready(audio(4));
        }
        let Claim::Mine(third) = c.claim(&key(1, "c")) else { panic!("the oldest ready entry makes room") };
        assert!(c.peek(&key(1, "a")).is_none());
        third.ready(audio(8));
        let s = c.stats();
        assert!(s.bytes <= 10 && s.entries <= 2, "{s:?}");
        assert!(c.peek(&key(1, "b")).is_none(), "evicted for bytes");
        // Only unfinished work left: a claim is refused.
        let c = cache(1, 10);
        let _working = c.claim(&key(1, "x"));
        assert!(matches!(c.claim(&key(1, "y")), Claim::Full));
        // One user's share: its own oldest ready entry goes, another user's stays.
        let c = cache(128, 1 << 20);
        let Claim::Mine(t) = c.claim(&key(2, "theirs")) else { panic!() };
        t.ready(audio(1));
        for i in 0..40 {
            let Claim::Mine(t) = c.claim(&key(1, &i.to_string())) else { panic!("room for {i}") };
            t.ready(audio(1));
        }
        assert!(c.peek(&key(2, "theirs")).is_some(), "not pushed out by another user");
        assert!(c.peek(&key(1, "0")).is_none(), "the user's own oldest made room");
        assert_eq!(c.stats().entries, 33);
    }

    #[test]
    fn replies_map_to_their_sentences_and_clear_drops_ready_work() {
        let c = cache(10, 100);
        c.map_reply(key(1, "A. B."), vec![key(1, "A."), key(1, "B.")]);
        assert_eq!(c.reply(&key(1, "A. B.")).unwrap().len(), 2);
        assert!(c.reply(&key(2, "A. B.")).is_none());
        let Claim::Mine(t) = c.claim(&key(1, "A.")) else { panic!() };
        t.ready(audio(1));
        let _working = c.claim(&key(1, "B."));
        assert_eq!(c.clear(), 1);
        let s = c.stats();
        assert_eq!((s.entries, s.segment_mappings, s.bytes), (1, 0, 0));
    }
}
