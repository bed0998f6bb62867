//! Channels and their upstream key pools.
//!
//! A channel is one configured upstream: a plugin, a base URL, the models it serves and a pool
//! of credentials. Keys of the highest priority that has a usable key are taken in smooth
//! weighted turn (a key of weight 3 serves three calls for each call of a key of weight 1,
//! interleaved), skipping keys that are disabled or cooling down (see `health`); a call that fails on a key's account is retried on another key
//! of the pool before anything reaches the consumer (see `surface::dispatch`). Upstream keys
//! are secrets: they are never logged, `Debug` prints them masked, the admin API shows a prefix.

pub mod health;

use crate::config::ChannelConfig;
use health::{KeyHealth, KeyOutcome, KeyState};
use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

pub struct Channel {
    pub name: String,
    pub plugin: String,
    /// Normalised: no trailing '/'. `None`: the plugin's default base URL.
    pub base_url: Option<String>,
    pub models: Vec<String>,
    pub model_map: HashMap<String, String>,
    /// The channel's plugin settings as JSON, handed to the plugin.
    pub settings_json: String,
    keys: Vec<UpstreamKey>,
    health: Vec<KeyHealth>,
    weights: Vec<i64>,
    priorities: Vec<i32>,
    /// Smooth weighted round-robin state: each key's current weight.
    turn: std::sync::Mutex<Vec<i64>>,
}

/// An upstream credential. `Debug` never shows it.
#[derive(Clone)]
pub struct UpstreamKey(pub Arc<str>);

impl std::fmt::Debug for UpstreamKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "UpstreamKey(***)")
    }
}

impl Channel {
    pub fn from_config(c: &ChannelConfig, probe_after: Duration) -> Channel {
        let settings_json =
            c.settings.as_ref().and_then(|t| serde_json::to_string(t).ok()).unwrap_or_else(|| "{}".to_string());
        Channel {
            name: c.name.clone(),
            plugin: c.plugin.clone(),
            base_url: c.base_url.as_ref().map(|u| u.trim_end_matches('/').to_string()),
            models: c.models.clone(),
            model_map: c.model_map.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
            settings_json,
            keys: c.keys.iter().map(|k| UpstreamKey(Arc::from(k.key()))).collect(),
            health: c.keys.iter().map(|_| KeyHealth::new(probe_after)).collect(),
            weights: c.keys.iter().map(|k| i64::from(k.weight())).collect(),
            priorities: c.keys.iter().map(|k| k.priority()).collect(),
            turn: std::sync::Mutex::new(vec![0; c.keys.len()]),
        }
    }

    /// The next usable key of the pool, not among `tried`: among the usable keys of the highest
    /// priority, in smooth weighted turn (a disabled key is usable when its probe is due); if
    /// no key is usable, one that is cooling down. `None`: no key can serve.
    pub fn pick_key(&self, tried: &[usize]) -> Option<(usize, &UpstreamKey)> {
        let n = self.keys.len();
        if n == 0 {
            return None;
        }
        let now = Instant::now();
        let mut turn = self.turn.lock().expect("key turn");
        let mut excluded: Vec<usize> = tried.to_vec();
        loop {
            let usable: Vec<usize> =
                (0..n).filter(|i| !excluded.contains(i) && self.health[*i].available(now)).collect();
            let Some(best) = usable.iter().map(|&i| self.priorities[i]).max() else { break };
            let group: Vec<usize> = usable.into_iter().filter(|&i| self.priorities[i] == best).collect();
            let total: i64 = group.iter().map(|&i| self.weights[i]).sum();
            for &i in &group {
                turn[i] += self.weights[i];
            }
            let pick = *group.iter().max_by_key(|&&i| (turn[i], std::cmp::Reverse(i))).expect("non-empty group");
            turn[pick] -= total;
            if self.health[pick].try_take(now) {
                return Some((pick, &self.keys[pick]));
            }
            excluded.push(pick); // taken by a concurrent call's probe meanwhile
        }
        (0..n)
            .filter(|i| !tried.contains(i))
            .find(|&i| self.health[i].state(now) == KeyState::CoolingDown)
            .map(|i| (i, &self.keys[i]))
    }

    pub fn key_count(&self) -> usize {
        self.keys.len()
    }

    /// Records what a call on key `index` taught about it.
    pub fn report(&self, index: usize, outcome: KeyOutcome) {
        if let Some(h) = self.health.get(index) {
            h.report(outcome, Instant::now());
        }
    }

    /// Each key's masked prefix and state, for the operator.
    pub fn key_states(&self) -> Vec<(String, KeyState)> {
        let now = Instant::now();
        self.keys
            .iter()
            .zip(&self.health)
            .map(|(k, h)| {
                let prefix: String = k.0.chars().take(6).collect();
                (format!("{prefix}…"), h.state(now))
            })
            .collect()
    }

    pub fn upstream_model<'a>(&'a self, model: &'a str) -> &'a str {
        self.model_map.get(model).map(String::as_str).unwrap_or(model)
    }
}

/// All channels, indexed by model and by plugin.
#[derive(Default)]
pub struct Channels {
    all: Vec<Arc<Channel>>,
    by_model: HashMap<String, Vec<Arc<Channel>>>,
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

    /// A channel using `plugin`, preferring one that serves `model`.
    pub fn for_plugin(&self, plugin: &str, model: Option<&str>) -> Option<&Arc<Channel>> {
        model
            .and_then(|m| self.by_model.get(m))
            .and_then(|l| l.iter().find(|c| c.plugin == plugin))
            .or_else(|| self.all.iter().find(|c| c.plugin == plugin))
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

    #[test]
    fn weights_and_priorities() {
        let c: ChannelConfig = toml::from_str(
            "name='w'\nplugin='openai'\nmodels=['m']\nkeys=[{key='a', weight=3}, 'b', {key='backup', priority=-1}]",
        )
        .unwrap();
        let ch = Channel::from_config(&c, Duration::from_secs(60));
        let picks: Vec<usize> = (0..8).map(|_| ch.pick_key(&[]).unwrap().0).collect();
        assert_eq!(picks.iter().filter(|&&i| i == 0).count(), 6, "weight 3 against 1: {picks:?}");
        assert!(!picks.contains(&2), "the backup priority is not used while the others serve");
        assert_ne!(picks[0..4], [0, 0, 0, 1], "smooth: interleaved, not in blocks: {picks:?}");
        ch.report(0, KeyOutcome::Refused);
        ch.report(1, KeyOutcome::Refused);
        assert_eq!(ch.pick_key(&[]).unwrap().0, 2, "the backup serves when the others are out");
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
        let picked: Vec<String> = (0..4).map(|_| ch.pick_key(&[]).unwrap().1 .0.to_string()).collect();
        assert_eq!(picked, ["k1", "k2", "k1", "k2"]);
        assert_eq!(format!("{:?}", ch.pick_key(&[]).unwrap().1), "UpstreamKey(***)");
        assert_eq!(ch.upstream_model("alias"), "real");
        assert_eq!(ch.upstream_model("m"), "m");
    }

    #[test]
    fn refused_keys_are_skipped_and_retries_take_another_key() {
        let ch = Channel::from_config(&cfg("a", &["k1", "k2", "k3"], &["m"]), Duration::from_secs(60));
        ch.report(0, KeyOutcome::Refused);
        for _ in 0..6 {
            assert_ne!(ch.pick_key(&[]).unwrap().0, 0, "a disabled key is never picked");
        }
        let (first, _) = ch.pick_key(&[]).unwrap();
        let (second, _) = ch.pick_key(&[first]).unwrap();
        assert!(second != first && second != 0);
        assert!(ch.pick_key(&[1, 2]).is_none(), "the only key left is disabled");
        ch.report(1, KeyOutcome::RateLimited(None));
        ch.report(2, KeyOutcome::RateLimited(None));
        assert!(ch.pick_key(&[]).is_some(), "all cooling down: one is still tried");
        assert_eq!(ch.key_states()[0], ("k1…".to_string(), KeyState::Disabled));
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
