//! Which upstream key a call runs on when it names vendor objects: a follow-up call (a task
//! query, a file read) on the key that created its object; a listing of the consumer's objects
//! on every key they were created on; and the objects a call created, remembered for both.
//!
//! Invariants:
//! - only the user who created an object through the gateway reaches it: another user's object
//!   of the same id is "not found" (404), and no key "tries";
//! - a listing gives the plugin, per key, only the consumer's own objects there, so that it
//!   answers with those only; a consumer with none is answered without any key;
//! - what a listing reads is bounded: the newest `MAX_OWNED` objects on at most `MAX_KEYS` keys.

use super::call::CallRequest;
use super::Engine;
use crate::exchange::{self, CallError};
use crate::keypool::{Channel, UpstreamKey};
use crate::plugin::Plugin;
use crate::store::{now_unix, objects};
use std::sync::Arc;

/// The vendor objects a call names, which decide its key.
#[derive(Debug, Clone, Default, PartialEq)]
pub enum Affinity {
    /// None: any key of the channel.
    #[default]
    None,
    /// A follow-up call: the key that created this object, for its owner only.
    Object(String),
    /// A listing of the consumer's objects: every key they were created on.
    Owned,
}

/// The most objects, and keys, one listing reads.
const MAX_OWNED: i64 = 10_000;
const MAX_KEYS: usize = 16;

/// The key (and the channel holding it) a call must run on.
pub(super) struct Pinned {
    pub channel: Arc<Channel>,
    /// Empty for a listing of a consumer who has no objects: the call runs on no key.
    pub fingerprint: String,
    /// For a listing: the consumer's objects on the call's key, then on each of `more_keys`.
    pub owned: Vec<Vec<String>>,
    /// For a listing: the other keys, with their channel's base URL.
    pub more_keys: Vec<(String, UpstreamKey)>,
}

impl Engine {
    /// The key a call naming vendor objects must run on; `None` for a call that names none.
    pub(super) async fn pinned_key(&self, r: &CallRequest) -> Result<Option<Pinned>, CallError> {
        match &r.affinity {
            Affinity::None => Ok(None),
            Affinity::Object(object) => self.key_of(r, object).await.map(Some),
            Affinity::Owned => self.owned_keys(r).await.map(Some),
        }
    }

    async fn key_of(&self, r: &CallRequest, object: &str) -> Result<Pinned, CallError> {
        let not_found = || {
            CallError::new(
                404,
                "invalid_request_error",
                "not_found",
                format!("No object '{object}' was created by this account through this gateway."),
            )
        };
        let fingerprint = match objects::key_of(&self.db, r.plugin.name(), r.consumer.user_id, object).await {
            Ok(Some(f)) => f,
            Ok(None) => return Err(not_found()),
            Err(e) => return Err(database_unavailable(e)),
        };
        match self.channels.load().with_key(r.plugin.name(), &fingerprint) {
            Some(channel) => Ok(Pinned { channel, fingerprint, owned: Vec::new(), more_keys: Vec::new() }),
            None => Err(CallError::new(
                503,
                "server_error",
                "upstream_key_gone",
                format!("The upstream key that created '{object}' is no longer configured on this gateway."),
            )),
        }
    }

    /// The keys a listing runs on, each with the consumer's objects there. Objects on a key no
    /// longer configured are left out: no key can list them.
    async fn owned_keys(&self, r: &CallRequest) -> Result<Pinned, CallError> {
        let owned = objects::owned(&self.db, r.plugin.name(), r.consumer.user_id, MAX_OWNED)
            .await
            .map_err(database_unavailable)?;
        let channels = self.channels.load();
        let mut found: Vec<(Arc<Channel>, UpstreamKey, Vec<String>)> = Vec::new();
        for (fingerprint, ids) in owned {
            let Some(channel) = channels.with_key(r.plugin.name(), &fingerprint) else { continue };
            let Some(key) = channel.key_by_fingerprint(&fingerprint) else { continue };
            found.push((channel, key.secret, ids));
            if found.len() == MAX_KEYS {
                break;
            }
        }
        let mut keys = found.into_iter();
        let Some((channel, key, ids)) = keys.next() else {
            let channel = Arc::clone(&r.channel);
            return Ok(Pinned { channel, fingerprint: String::new(), owned: Vec::new(), more_keys: Vec::new() });
        };
        let mut pinned = Pinned { channel, fingerprint: key.fingerprint(), owned: vec![ids], more_keys: Vec::new() };
        for (channel, key, ids) in keys {
            pinned.more_keys.push((exchange::base_url(&channel, &r.plugin)?, key));
            pinned.owned.push(ids);
        }
        Ok(pinned)
    }

    /// Remembers the vendor objects a call created, with its key and user.
    pub(super) async fn remember(&self, r: &CallRequest, plugin: &Plugin, key: &UpstreamKey, objects: &[String]) {
        let (user, fingerprint) = (r.consumer.user_id, key.fingerprint());
        let remembered =
            objects::remember(&self.db, plugin.name(), user, objects, &fingerprint, &r.request_id, now_unix()).await;
        if let Err(e) = remembered {
            tracing::error!(error = %format!("{e:#}"), request_id = %r.request_id, "cannot remember the vendor objects a call created");
        }
    }
}

fn database_unavailable(e: anyhow::Error) -> CallError {
    tracing::error!(error = %format!("{e:#}"), "cannot read vendor objects");
    CallError::new(
        503,
        "server_error",
        "database_unavailable",
        "The gateway cannot serve this call now; retry shortly.",
    )
}
