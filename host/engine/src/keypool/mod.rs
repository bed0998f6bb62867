//! Channels and their upstream key pools.
//!
//! A channel is one configured upstream: a plugin, a base URL, the models it serves and a pool
//! of credentials. The pool holds the channel's keys from the configuration file and the keys
//! stored (encrypted) in the database (see `stored`); it is replaced whole when stored keys
//! change, and a key that stays keeps its health and balance.
//!
//! Selection: among the keys of the highest priority that has a usable key, by the channel's
//! `strategy`: smooth weighted turn (a key of weight 3 serves three calls for each call of a
//! key of weight 1, interleaved), plain turn, or the highest known balance (ties and unknown
//! balances take turns). Keys that are disabled or cooling down are skipped (see `health`), and
//! a key the operator disabled is never picked (see `holds`); a call that fails on a key's
//! account is retried on another key of the pool before anything reaches the consumer (see
//! `engine::call`).
//!
//! Upstream keys are secrets: they are never logged, `Debug` prints them masked, the admin API
//! shows a prefix.

pub mod config;
pub mod health;
pub mod holds;
pub mod stored;

use crate::FastMap;
use arc_swap::ArcSwap;
use config::{ChannelConfig, Strategy};
use health::{KeyHealth, KeyOutcome, KeyState, LastError};
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

pub struct Channel {
    pub name: String,
    pub plugin: String,
    /// Normalised: no trailing '/'. `None`: the plugin's default base URL.
    pub base_url: Option<String>,
    pub models: Vec<String>,
    pub model_map: FastMap<String, String>,
    /// The channel's plugin settings as JSON, handed to the plugin.
    pub settings_json: String,
    pub strategy: Strategy,
    pub balance_refresh: Duration,
    /// The operator lets this channel's plugin receive raw keys (to sign requests).
    pub allow_signing: bool,
    /// The OpenAI-surface operations the operator lets this channel serve; `None`: all.
    pub ops: Option<Vec<String>>,
    /// Synthesized speech this channel answers is kept in the speech archive.
    pub archive_speech: bool,
    /// Its upstream requests go over HTTP/2 (`http2` in its configuration).
    pub http2: bool,
    /// The most of its calls one HTTP/2 connection carries at once (`http2_max_streams`).
    pub http2_max_streams: usize,
    probe_after: Duration,
    /// The keys written in the configuration file.
    configured: Vec<KeyEntry>,
    /// The fingerprints of the keys the operator disabled (`holds`), whether or not the pool
    /// holds them now: a key that joins later is held from the start.
    held: std::sync::Mutex<Arc<HashSet<String>>>,
    pool: ArcSwap<Pool>,
}

/// An upstream credential. `Debug` never shows it.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct UpstreamKey(pub Arc<str>);

impl std::fmt::Debug for UpstreamKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "UpstreamKey(***)")
    }
}

impl UpstreamKey {
    /// A stable name of the key that reveals nothing of it (SHA-256, hex): what the database
    /// stores where a later call must find the same key (vendor objects, tasks).
    pub fn fingerprint(&self) -> String {
        use sha2::Digest;
        hex::encode(sha2::Sha256::digest(self.0.as_bytes()))
    }

    /// The first characters, for operators ("sk-abc…").
    pub fn masked(&self) -> String {
        let prefix: String = self.0.chars().take(6).collect();
        format!("{prefix}…")
    }
}

/// A key the pool should hold.
#[derive(Debug, Clone)]
pub struct KeyEntry {
    pub secret: UpstreamKey,
    pub weight: u32,
    pub priority: i32,
    /// The `upstream_keys` row of a stored key; `None`: from the configuration file.
    pub stored_id: Option<i64>,
}

struct Pool {
    keys: Vec<PooledKey>,
    /// Smooth weighted round-robin state: each key's current weight.
    turn: std::sync::Mutex<Vec<i64>>,
}

struct PooledKey {
    entry: KeyEntry,
    /// Unique while the gateway runs; kept when the pool is rebuilt.
    id: u64,
    health: Arc<KeyHealth>,
    /// `UpstreamKey::fingerprint`, computed once (follow-up calls and task polls look keys
    /// up by it).
    fingerprint: String,
    /// The operator disabled it (`holds`): never picked.
    held: bool,
}

/// A key taken for one call (or one balance read).
#[derive(Clone)]
pub struct PickedKey {
    /// Stable across pool rebuilds: what a retry excludes.
    pub id: u64,
    pub secret: UpstreamKey,
    health: Arc<KeyHealth>,
}

impl PickedKey {
    /// Records what a call on this key taught about it.
    pub fn report(&self, outcome: KeyOutcome) {
        self.health.report(outcome, Instant::now());
    }
    pub fn set_balance(&self, micros: Option<i64>) {
        self.health.set_balance(micros);
    }
    /// Records what went wrong with the key outside a call (a balance read).
    pub fn note_error(&self, message: impl Into<String>) {
        self.health.note_error(message);
    }
}

/// One key as the operator sees it. In JSON, `state` is what the operator reads first
/// (`disabled_by_operator` while the operator holds the key out, else its health) and `health`
/// is the breaker's own state.
#[derive(Debug, Clone, serde::Serialize)]
pub struct KeyView {
    pub key: String,
    /// SHA-256 of the key, hex: names the key in the admin API and reveals nothing of it.
    pub fingerprint: String,
    /// `disabled_by_operator`, or the health's name.
    #[serde(rename = "state")]
    pub shown: &'static str,
    /// The health breaker's state, whatever the operator's hold.
    #[serde(rename = "health")]
    pub state: KeyState,
    pub disabled_by_operator: bool,
    pub weight: u32,
    pub priority: i32,
    /// The balance at the vendor, when it was read.
    pub balance: Option<String>,
    /// What last went wrong with the key, and when.
    pub last_error: Option<LastError>,
    /// The `upstream_keys` id of a stored key; absent for keys of the configuration file.
    pub stored_id: Option<i64>,
}

static NEXT_KEY_ID: AtomicU64 = AtomicU64::new(1);

/// The plugin operation that reads a key's balance (see `balance`).
pub const BALANCE_OP: &str = "balance";

impl Channel {
    pub fn from_config(c: &ChannelConfig, probe_after: Duration) -> Channel {
        let settings_json =
            c.settings.as_ref().and_then(|t| serde_json::to_string(t).ok()).unwrap_or_else(|| "{}".to_string());
        let configured: Vec<KeyEntry> = c
            .keys
            .iter()
            .map(|k| KeyEntry {
                secret: UpstreamKey(Arc::from(k.key())),
                weight: k.weight(),
                priority: k.priority(),
                stored_id: None,
            })
            .collect();
        let channel = Channel {
            name: c.name.clone(),
            plugin: c.plugin.clone(),
            base_url: c.base_url.as_ref().map(|u| u.trim_end_matches('/').to_string()),
            models: c.models.clone(),
            model_map: c.model_map.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
            settings_json,
            strategy: c.strategy,
            balance_refresh: Duration::from_secs(c.balance_refresh_secs.max(1)),
            allow_signing: c.allow_signing,
            ops: c.ops.clone(),
            archive_speech: c.archive_speech,
            http2: c.http2,
            http2_max_streams: c.http2_max_streams.max(1),
            probe_after,
            configured,
            held: std::sync::Mutex::new(Arc::default()),
            pool: ArcSwap::from_pointee(Pool { keys: Vec::new(), turn: std::sync::Mutex::new(Vec::new()) }),
        };
        channel.set_stored_keys(Vec::new());
        channel
    }

    /// Rebuilds the pool from the configured keys and `stored` (the channel's keys in the
    /// database). A key already in the pool keeps its id, health and balance.
    pub fn set_stored_keys(&self, stored: Vec<KeyEntry>) {
        let old = self.pool.load_full();
        self.build_pool(stored, &old);
    }

    /// Takes over what `old` (the same channel before a reload) knew: its stored keys, the
    /// keys the operator disabled, and the id, health and balance of every key that stays.
    pub fn carry_over(&self, old: &Channel) {
        *self.held.lock().expect("held keys") = Arc::clone(&old.held.lock().expect("held keys"));
        self.rebuild_from(&old.pool.load_full());
    }

    /// Sets the fingerprints of the keys the operator disabled (`holds`); the pool is rebuilt
    /// only when they changed.
    pub fn set_held(&self, fingerprints: HashSet<String>) {
        {
            let mut held = self.held.lock().expect("held keys");
            if **held == fingerprints {
                return;
            }
            *held = Arc::new(fingerprints);
        }
        self.rebuild_from(&self.pool.load_full());
    }

    /// The pool again from the configured keys and `old`'s stored keys.
    fn rebuild_from(&self, old: &Pool) {
        let stored = old.keys.iter().filter(|k| k.entry.stored_id.is_some()).map(|k| k.entry.clone()).collect();
        self.build_pool(stored, old);
    }

    fn build_pool(&self, stored: Vec<KeyEntry>, old: &Pool) {
        let held = Arc::clone(&self.held.lock().expect("held keys"));
        let mut known: HashMap<&UpstreamKey, &PooledKey> = old.keys.iter().map(|k| (&k.entry.secret, k)).collect();
        let mut seen = std::collections::HashSet::new();
        let keys: Vec<PooledKey> = self
            .configured
            .iter()
            .cloned()
            .chain(stored)
            .filter(|e| seen.insert(e.secret.clone()))
            .map(|entry| {
                let mut key = match known.remove(&entry.secret) {
                    Some(k) => PooledKey {
                        entry,
                        id: k.id,
                        health: Arc::clone(&k.health),
                        fingerprint: k.fingerprint.clone(),
                        held: false,
                    },
                    None => PooledKey {
                        fingerprint: entry.secret.fingerprint(),
                        entry,
                        id: NEXT_KEY_ID.fetch_add(1, Ordering::Relaxed),
                        health: Arc::new(KeyHealth::new(self.probe_after)),
                        held: false,
                    },
                };
                key.held = held.contains(&key.fingerprint);
                key
            })
            .collect();
        let turn = std::sync::Mutex::new(vec![0; keys.len()]);
        self.pool.store(Arc::new(Pool { keys, turn }));
    }

    /// The next usable key of the pool, not among `tried` (key ids): among the usable keys of
    /// the highest priority, by the channel's strategy (a disabled key is usable when its
    /// probe is due); if no key is usable, one that is cooling down. Never a key the operator
    /// disabled. `None`: no key can serve.
    pub fn pick_key(&self, tried: &[u64]) -> Option<PickedKey> {
        let pool = self.pool.load();
        let keys = &pool.keys;
        if keys.is_empty() {
            return None;
        }
        let now = Instant::now();
        let mut turn = pool.turn.lock().expect("key turn");
        let weight = |i: usize| match self.strategy {
            Strategy::RoundRobin => 1,
            _ => i64::from(keys[i].entry.weight),
        };
        let mut excluded: Vec<usize> =
            (0..keys.len()).filter(|&i| keys[i].held || tried.contains(&keys[i].id)).collect();
        loop {
            let usable: Vec<usize> =
                (0..keys.len()).filter(|i| !excluded.contains(i) && keys[*i].health.available(now)).collect();
            let Some(best) = usable.iter().map(|&i| keys[i].entry.priority).max() else { break };
            let mut group: Vec<usize> = usable.into_iter().filter(|&i| keys[i].entry.priority == best).collect();
            if self.strategy == Strategy::HighestBalance {
                let richest = group.iter().map(|&i| keys[i].health.balance()).max().flatten();
                if richest.is_some() {
                    group.retain(|&i| keys[i].health.balance() == richest);
                }
            }
            let total: i64 = group.iter().map(|&i| weight(i)).sum();
            for &i in &group {
                turn[i] += weight(i);
            }
            let pick = *group.iter().max_by_key(|&&i| (turn[i], std::cmp::Reverse(i))).expect("non-empty group");
            turn[pick] -= total;
            if keys[pick].health.try_take(now) {
                return Some(picked(&keys[pick]));
            }
            excluded.push(pick); // taken by a concurrent call's probe meanwhile
        }
        keys.iter()
            .find(|k| !k.held && !tried.contains(&k.id) && k.health.state(now) == KeyState::CoolingDown)
            .map(picked)
    }

    /// The key with this fingerprint, whatever its health: a follow-up call must run on the
    /// key that created its object. `None`: the key left the pool.
    pub fn key_by_fingerprint(&self, fingerprint: &str) -> Option<PickedKey> {
        self.pool.load().keys.iter().find(|k| k.fingerprint == fingerprint).map(picked)
    }

    pub fn key_count(&self) -> usize {
        self.pool.load().keys.len()
    }

    /// Every key of the pool (for the balance reads).
    pub fn all_keys(&self) -> Vec<PickedKey> {
        self.pool.load().keys.iter().map(picked).collect()
    }

    /// The masked form of the pool's key with `fingerprint`, if the pool holds it.
    pub fn masked_key(&self, fingerprint: &str) -> Option<String> {
        self.pool.load().keys.iter().find(|k| k.fingerprint == fingerprint).map(|k| k.entry.secret.masked())
    }

    /// Each key, masked, with its state, for the operator.
    pub fn key_states(&self) -> Vec<KeyView> {
        let now = Instant::now();
        self.pool
            .load()
            .keys
            .iter()
            .map(|k| {
                let state = k.health.state(now);
                KeyView {
                    key: k.entry.secret.masked(),
                    fingerprint: k.fingerprint.clone(),
                    shown: if k.held { "disabled_by_operator" } else { state.as_str() },
                    state,
                    disabled_by_operator: k.held,
                    weight: k.entry.weight,
                    priority: k.entry.priority,
                    balance: k.health.balance().map(tollgate_base::money::format),
                    last_error: k.health.last_error(),
                    stored_id: k.entry.stored_id,
                }
            })
            .collect()
    }

    pub fn upstream_model<'a>(&'a self, model: &'a str) -> &'a str {
        self.model_map.get(model).map(String::as_str).unwrap_or(model)
    }
}

fn picked(k: &PooledKey) -> PickedKey {
    PickedKey { id: k.id, secret: k.entry.secret.clone(), health: Arc::clone(&k.health) }
}

/// All channels, indexed by model and by plugin.
#[derive(Default)]
pub struct Channels {
    all: Vec<Arc<Channel>>,
    by_model: FastMap<String, Vec<Arc<Channel>>>,
    next: AtomicUsize,
}

impl Channels {
    pub fn new(configs: &[ChannelConfig], probe_after: Duration) -> Channels {
        let mut channels = Channels::default();
        for c in configs {
            let ch = Arc::new(Channel::from_config(c, probe_after));
            for m in &ch.models {
                channels.by_model.entry(m.clone()).or_default().push(Arc::clone(&ch));
            }
            channels.all.push(ch);
        }
        channels
    }

    /// A channel serving `model`; several channels for one model are used in turn.
    pub fn for_model(&self, model: &str) -> Option<&Arc<Channel>> {
        let list = self.by_model.get(model)?;
        if list.len() == 1 {
            return list.first();
        }
        list.get(self.next.fetch_add(1, Ordering::Relaxed) % list.len())
    }

    /// The channels of `configs`, each taking over what the same-named channel of `previous`
    /// knew about its keys (a reload keeps health, balances and stored keys).
    pub fn reloaded(configs: &[ChannelConfig], probe_after: Duration, previous: &Channels) -> Channels {
        let channels = Channels::new(configs, probe_after);
        for ch in channels.all() {
            if let Some(old) = previous.by_name(&ch.name) {
                ch.carry_over(old);
            }
        }
        channels
    }

    pub fn by_name(&self, name: &str) -> Option<&Arc<Channel>> {
        self.all.iter().find(|c| c.name == name)
    }

    /// Every channel serving `model`, in configuration order.
    pub fn serving(&self, model: &str) -> &[Arc<Channel>] {
        self.by_model.get(model).map_or(&[], Vec::as_slice)
    }

    /// The other channels serving `model`, in configuration order, for failover.
    pub fn others_for_model(&self, model: &str, except: &str) -> Vec<Arc<Channel>> {
        self.by_model.get(model).map(|l| l.iter().filter(|c| c.name != except).cloned().collect()).unwrap_or_default()
    }

    /// A channel using `plugin`, preferring one that serves `model`.
    pub fn for_plugin(&self, plugin: &str, model: Option<&str>) -> Option<&Arc<Channel>> {
        model
            .and_then(|m| self.by_model.get(m))
            .and_then(|l| l.iter().find(|c| c.plugin == plugin))
            .or_else(|| self.all.iter().find(|c| c.plugin == plugin))
    }

    /// The channel of `plugin` whose pool holds the key with this fingerprint.
    pub fn with_key(&self, plugin: &str, fingerprint: &str) -> Option<Arc<Channel>> {
        self.all.iter().find(|c| c.plugin == plugin && c.key_by_fingerprint(fingerprint).is_some()).cloned()
    }

    /// Every configured model with its channel's plugin, sorted, for `/v1/models`.
    pub fn models(&self) -> Vec<(&str, &str)> {
        let mut v: Vec<(&str, &str)> =
            self.by_model.iter().map(|(m, chans)| (m.as_str(), chans[0].plugin.as_str())).collect();
        v.sort();
        v
    }

    pub fn all(&self) -> &[Arc<Channel>] {
        &self.all
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn channel(toml_text: &str) -> Channel {
        let c: ChannelConfig = toml::from_str(toml_text).unwrap();
        Channel::from_config(&c, Duration::from_secs(60))
    }

    fn secret(k: &PickedKey) -> String {
        k.secret.0.to_string()
    }

    /// Reports `outcome` on the key `name` (taken directly, whatever the turn).
    fn report(ch: &Channel, name: &str, outcome: KeyOutcome) {
        ch.all_keys().into_iter().find(|k| &*k.secret.0 == name).expect("key").report(outcome);
    }

    #[test]
    fn weights_and_priorities() {
        let ch = channel(
            "name='w'\nplugin='openai'\nmodels=['m']\nkeys=[{key='a', weight=3}, 'b', {key='backup', priority=-1}]",
        );
        let picks: Vec<String> = (0..8).map(|_| secret(&ch.pick_key(&[]).unwrap())).collect();
        assert_eq!(picks.iter().filter(|k| *k == "a").count(), 6, "weight 3 against 1: {picks:?}");
        assert!(!picks.iter().any(|k| k == "backup"), "the backup priority is not used while the others serve");
        assert_ne!(picks[0..4], ["a", "a", "a", "b"], "smooth: interleaved, not in blocks: {picks:?}");
        report(&ch, "a", KeyOutcome::Refused);
        report(&ch, "b", KeyOutcome::Refused);
        assert_eq!(secret(&ch.pick_key(&[]).unwrap()), "backup", "the backup serves when the others are out");
    }

    #[test]
    fn round_robin_ignores_weights() {
        let ch =
            channel("name='r'\nplugin='openai'\nmodels=['m']\nstrategy='round-robin'\nkeys=[{key='a', weight=3}, 'b']");
        let picks: Vec<String> = (0..4).map(|_| secret(&ch.pick_key(&[]).unwrap())).collect();
        assert_eq!(picks, ["a", "b", "a", "b"]);
    }

    #[test]
    fn highest_balance_takes_the_richest_usable_key() {
        let ch = channel("name='h'\nplugin='openai'\nmodels=['m']\nstrategy='highest-balance'\nkeys=['a', 'b', 'c']");
        let picks: Vec<String> = (0..3).map(|_| secret(&ch.pick_key(&[]).unwrap())).collect();
        assert_eq!(picks, ["a", "b", "c"], "unknown balances take turns");
        let keys = ch.all_keys();
        keys[0].set_balance(Some(5_000_000));
        keys[1].set_balance(Some(80_000_000));
        keys[2].set_balance(None);
        for _ in 0..3 {
            assert_eq!(secret(&ch.pick_key(&[]).unwrap()), "b", "the richest key serves");
        }
        assert_eq!(secret(&ch.pick_key(&[keys[1].id]).unwrap()), "a", "a retry takes the next richest");
        keys[1].report(KeyOutcome::Refused);
        assert_eq!(secret(&ch.pick_key(&[]).unwrap()), "a", "a disabled key is skipped however rich");
    }

    #[test]
    fn a_rebuilt_pool_keeps_each_remaining_keys_health() {
        let ch = channel("name='s'\nplugin='openai'\nmodels=['m']\nkeys=['conf']");
        let stored = |names: &[&str]| {
            names
                .iter()
                .enumerate()
                .map(|(i, n)| KeyEntry {
                    secret: UpstreamKey(Arc::from(*n)),
                    weight: 1,
                    priority: 0,
                    stored_id: Some(i as i64),
                })
                .collect::<Vec<_>>()
        };
        ch.set_stored_keys(stored(&["s1", "s2"]));
        assert_eq!(ch.key_count(), 3);
        report(&ch, "s1", KeyOutcome::Refused);
        let id = ch.all_keys().iter().find(|k| &*k.secret.0 == "s1").unwrap().id;
        ch.set_stored_keys(stored(&["s1", "s3", "conf"]));
        let states = ch.key_states();
        assert_eq!(states.len(), 3, "s2 removed, s3 added, a stored copy of a configured key not doubled");
        assert_eq!(states[1].state, KeyState::Disabled, "s1 is still disabled: {states:?}");
        assert_eq!(ch.all_keys()[1].id, id);
    }

    fn cfg(name: &str, keys: &[&str], models: &[&str]) -> ChannelConfig {
        toml::from_str(&format!(
            "name='{name}'\nplugin='openai'\nmodels={models:?}\nkeys={keys:?}\n[model_map]\nalias='real'"
        ))
        .unwrap()
    }

    #[test]
    fn keys_are_used_in_turn_and_never_printed() {
        let ch = Channel::from_config(&cfg("a", &["k1", "k2"], &["m"]), Duration::from_secs(60));
        let picked: Vec<String> = (0..4).map(|_| secret(&ch.pick_key(&[]).unwrap())).collect();
        assert_eq!(picked, ["k1", "k2", "k1", "k2"]);
        assert_eq!(format!("{:?}", ch.pick_key(&[]).unwrap().secret), "UpstreamKey(***)");
        assert_eq!(ch.upstream_model("alias"), "real");
        assert_eq!(ch.upstream_model("m"), "m");
    }

    #[test]
    fn refused_keys_are_skipped_and_retries_take_another_key() {
        let ch = Channel::from_config(&cfg("a", &["k1", "k2", "k3"], &["m"]), Duration::from_secs(60));
        report(&ch, "k1", KeyOutcome::Refused);
        for _ in 0..6 {
            assert_ne!(secret(&ch.pick_key(&[]).unwrap()), "k1", "a disabled key is never picked");
        }
        let first = ch.pick_key(&[]).unwrap();
        let second = ch.pick_key(&[first.id]).unwrap();
        assert!(second.id != first.id && secret(&second) != "k1");
        let ids: Vec<u64> = ch.all_keys().iter().map(|k| k.id).collect();
        assert!(ch.pick_key(&ids[1..]).is_none(), "the only key left is disabled");
        report(&ch, "k2", KeyOutcome::RateLimited(None));
        report(&ch, "k3", KeyOutcome::RateLimited(None));
        assert!(ch.pick_key(&[]).is_some(), "all cooling down: one is still tried");
        let k1 = &ch.key_states()[0];
        assert_eq!((k1.key.as_str(), k1.state), ("k1…", KeyState::Disabled));
    }

    #[test]
    fn models_route_to_their_channels() {
        let c = Channels::new(&[cfg("a", &["k"], &["m1", "m2"]), cfg("b", &["k"], &["m2"])], Duration::from_secs(60));
        assert_eq!(c.for_model("m1").unwrap().name, "a");
        let names: std::collections::HashSet<_> = (0..4).map(|_| c.for_model("m2").unwrap().name.clone()).collect();
        assert_eq!(names.len(), 2);
        assert!(c.for_model("nope").is_none());
        assert_eq!(c.models().len(), 2);
    }
}
