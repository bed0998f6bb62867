//! The call pipeline, below HTTP: a resolved call in, what the consumer gets out. Every entry
//! (the OpenAI surface, vendor-native routes, and next tasks and WebSocket sessions) runs
//! through `Engine::call`.
//!
//! Invariants (each with a test):
//! - a call is settled and recorded exactly once: `CallEnd` is the only value that does it,
//!   and it is consumed on every path (reply, relay, failure, stream end); dropped unconsumed
//!   (the consumer left, a task panicked) it records the call as `client_gone` and its
//!   reservation returns by itself;
//! - the reservation is taken before the upstream is called, from the same parse the vendor
//!   reads; an `Idempotency-Key` is claimed before that;
//! - failover keeps the request id (charged once), never retries after a stream started, and
//!   never resends a request the vendor may have worked on.
//!
//! No listener, no routes, no loops of its own (the binary's jobs call its refresh methods).
//! Its parts: `account` (consumers, keys, sessions), `billing` (prices, wallets), `keypool`
//! (channels and their upstream keys), `plugin` (the wasm runtime and the hot-reloaded
//! registry), `exchange` (a plugin's steps against the upstream, streams). Below it:
//! `tollgate-store`; above it: `tollgate-api` and the binary. Cargo refuses the other way.

pub mod account;
mod affinity;
pub mod archive;
mod balance;
mod batch;
pub mod billing;
mod call;
mod end;
pub mod exchange;
mod idempotency;
pub mod keypool;
pub mod plugin;
pub mod prefetch;
pub mod socket;
pub mod tasks;
pub mod trace;

/// A hash map for the lookups every request makes (its key, wallets, price, channel and
/// plugin): foldhash, seeded per process, in place of SipHash (~420 instructions a lookup of a
/// short key). Their keys come from the configuration and the database; a request only looks
/// up, so a key it chooses cannot lengthen another's probe.
pub type FastMap<K, V> = std::collections::HashMap<K, V, foldhash::fast::RandomState>;

// The layers below, under the names the modules use.
use tollgate_base::metrics as telemetry;
use tollgate_store as store;

use crate::billing::Billing;
use crate::exchange::Upstream;
use crate::keypool::Channels;
use crate::plugin::PluginRegistry;
use crate::store::{CallLog, Db};
use std::sync::Arc;
use std::time::Duration;

pub use affinity::Affinity;
pub use balance::{BalanceRead, BalanceUnreadable};
pub use call::{credential_for, key_outcome, kind_name, split_credential, Answer, CallRequest};

impl Engine {
    /// What one exchange of `plugin` on `channel` with `key` runs with (a consumer call's
    /// attempt, a balance read, a task poll).
    fn exchange_context(
        &self,
        plugin: &Arc<plugin::Plugin>,
        channel: &Arc<keypool::Channel>,
        key: Option<&keypool::UpstreamKey>,
        client: Arc<exchange::ClientInput>,
        capture: bool,
    ) -> exchange::CallContext {
        exchange::CallContext {
            plugin: Arc::clone(plugin),
            channel: Arc::clone(channel),
            key: key.cloned(),
            runtime: self.registry.runtime().clone(),
            upstream: self.upstream.clone(),
            client,
            capture,
            write_timeout: self.stream_write_timeout,
            more_keys: Vec::new(),
            archive: Arc::clone(&self.archive),
            owner: None,
        }
    }

    /// Replaces the channel set with `configs`: keys that stay keep their health and balance,
    /// stored keys stay in their pools, calls in flight finish on the set they started with.
    /// A set whose settings a plugin refuses changes nothing. Returns the channels' names.
    pub async fn replace_channels(&self, configs: &[keypool::config::ChannelConfig]) -> anyhow::Result<Vec<String>> {
        let channels = Channels::reloaded(configs, self.key_probe_after, &self.channels.load());
        let refused = self.check_settings(&channels).await;
        if !refused.is_empty() {
            anyhow::bail!("{}", refused.join("; "));
        }
        keypool::stored::load_into(&self.db, self.master_key.as_ref(), &channels).await?;
        let names = channels.all().iter().map(|c| c.name.clone()).collect();
        let settings = channels
            .all()
            .iter()
            .map(|c| plugin::ChannelSettings {
                plugin: c.plugin.clone(),
                channel: c.name.clone(),
                settings_json: c.settings_json.clone(),
            })
            .collect();
        self.registry.set_channel_settings(settings);
        // What each channel's plugin forwards for its settings, asked once they are set.
        self.registry.learn_forwards().await;
        self.channels.store(Arc::new(channels));
        Ok(names)
    }

    /// Has each channel's plugin check the channel's settings (channels whose plugin is not
    /// loaded are reported by `/health` instead). The errors name the channel and what is
    /// wrong; empty when every channel's settings are accepted.
    pub async fn check_settings(&self, channels: &Channels) -> Vec<String> {
        let plugins = self.registry.current();
        let mut errors = Vec::new();
        for channel in channels.all() {
            let Some(plugin) = plugins.get(&channel.plugin) else { continue };
            match self.registry.runtime().check_settings(&plugin.pre, &channel.settings_json).await {
                Ok(Ok(())) => {}
                Ok(Err(why)) => errors.push(format!(
                    "channel '{}': plugin '{}' refuses its settings: {why}",
                    channel.name,
                    plugin.name()
                )),
                Err(e) => errors.push(format!(
                    "channel '{}': plugin '{}' failed checking its settings: {e:#}",
                    channel.name,
                    plugin.name()
                )),
            }
        }
        errors
    }
}

/// What the pipeline needs, shared by every call.
pub struct Engine {
    pub registry: Arc<PluginRegistry>,
    /// Replaced whole by a reload; a call keeps the set it started with.
    pub channels: arc_swap::ArcSwap<Channels>,
    pub upstream: Upstream,
    /// On when the configuration names a price table.
    pub billing: Option<Arc<Billing>>,
    pub call_log: CallLog,
    pub db: Db,
    /// How long a stream waits on a consumer that stopped reading.
    pub stream_write_timeout: Duration,
    /// How long a disabled upstream key rests before a call probes it.
    pub key_probe_after: Duration,
    /// Seals the upstream keys stored in the database; `None`: no keys are stored.
    pub master_key: Option<keypool::stored::MasterKey>,
    /// How long an asynchronous task may run before it expires (its hold given back).
    pub task_ttl_secs: i64,
    /// The most polls of one plugin's tasks per poll round (a round is half a second).
    pub task_polls_per_round: usize,
    /// The most unfinished tasks one user may have (0: no limit); checked before an op that
    /// may start a job (one its plugin quotes) reaches the vendor.
    pub task_max_open_per_user: i64,
    /// Submits this node is running per user (counted with the open tasks).
    pub submitting: tasks::InFlight,
    /// This node's progress socket registrations, and the round that feeds them.
    pub progress: Arc<tasks::feed::Feed>,
    /// Speech prefetch: its settings, cache and places on the speech channels.
    pub prefetch: Arc<prefetch::Prefetch>,
    /// Where task outputs are downloaded to and served from.
    pub archive: Arc<archive::Archive>,
}
