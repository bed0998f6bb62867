//! A channel as the configuration file writes it: its plugin, base URL, models, upstream key
//! pool and settings. The binary's configuration holds a list of them; the key pool is built
//! from them.

use serde::Deserialize;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChannelConfig {
    pub name: String,
    /// The name the plugin declares in describe().
    pub plugin: String,
    /// Every upstream request of this channel goes to this origin; defaults to the plugin's.
    #[serde(default)]
    pub base_url: Option<String>,
    pub models: Vec<String>,
    /// Upstream credentials: a pool. Each is a string, or a table
    /// `{ key = "...", weight = 3, priority = 1 }`: the highest priority with a usable key
    /// serves, its keys in weighted turn.
    #[serde(default)]
    pub keys: Vec<KeySpec>,
    /// How the keys of the best priority take turns.
    #[serde(default)]
    pub strategy: Strategy,
    /// Seconds between reads of every key's balance (`highest-balance` only).
    #[serde(default = "self::defaults::balance_refresh_secs")]
    pub balance_refresh_secs: u64,
    /// Consumer model name → upstream model name.
    #[serde(default)]
    pub model_map: std::collections::BTreeMap<String, String>,
    /// Plugin settings handed to the plugin as JSON.
    #[serde(default)]
    pub settings: Option<toml::Table>,
    /// Hand the raw keys to the plugin, for plugins that sign requests themselves (they
    /// declare credential fields: Kling, Volcengine, ...). Off: such a plugin's calls fail
    /// with 503, and the keys never enter a plugin.
    #[serde(default)]
    pub allow_signing: bool,
    /// The OpenAI-surface operations this channel serves (`chat`, `images`, `video`, ...);
    /// unset: every one its plugin supports. A channel serving `video` but not `chat` or
    /// `images` runs those requests as video tasks (the MindVideo proxy's surface).
    #[serde(default)]
    pub ops: Option<Vec<String>>,
    /// Keep every synthesized audio this channel answers whole in the speech archive
    /// (`speech_archive_dir`), in the MiniMax proxy's layout.
    #[serde(default)]
    pub archive_speech: bool,
    /// Speak HTTP/2 to the upstream (prior knowledge on `http://`, ALPN on `https://`): each
    /// request worker multiplexes the channel's calls on a connection to its host, up to
    /// `http2_max_streams` at once, and opens another as one fills. Off: HTTP/1.1, one
    /// connection per call in flight.
    #[serde(default)]
    pub http2: bool,
    /// The most calls one HTTP/2 connection carries at once (keep it at or below what the
    /// vendor's server allows, commonly 100 to 256).
    #[serde(default = "default_http2_max_streams")]
    pub http2_max_streams: usize,
}

fn default_http2_max_streams() -> usize {
    100
}

/// A channel's key selection among the usable keys of its best priority.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Strategy {
    /// Smooth weighted turn (with every weight 1, plain round-robin).
    #[default]
    Weighted,
    /// Plain turn; weights are ignored.
    RoundRobin,
    /// The key with the highest balance at the vendor, as the plugin's `balance` operation
    /// reads it every `balance_refresh_secs`; keys with equal or unknown balances take turns.
    HighestBalance,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum KeySpec {
    Plain(String),
    Detailed {
        key: String,
        #[serde(default = "self::defaults::weight")]
        weight: u32,
        #[serde(default)]
        priority: i32,
    },
}

impl KeySpec {
    pub fn key(&self) -> &str {
        match self {
            KeySpec::Plain(k) | KeySpec::Detailed { key: k, .. } => k,
        }
    }
    pub fn weight(&self) -> u32 {
        match self {
            KeySpec::Plain(_) => 1,
            KeySpec::Detailed { weight, .. } => *weight,
        }
    }
    pub fn priority(&self) -> i32 {
        match self {
            KeySpec::Plain(_) => 0,
            KeySpec::Detailed { priority, .. } => *priority,
        }
    }
}

mod defaults {
    pub fn weight() -> u32 {
        1
    }
    pub fn balance_refresh_secs() -> u64 {
        300
    }
}
