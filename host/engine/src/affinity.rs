//! Which upstream key a call runs on when it names vendor objects: a follow-up call (a task
//! query, a file read) on the key that created its object; a listing of the consumer's objects
//! on every key they were created on; and the objects a call created, remembered for both.
//!
//! Invariants:
//! - only the user who created an object through the gateway reaches it: another user's object
//!   of the same id is "not found" (404), and no key "tries";
//! - a listing gives the plugin, per key, only the consumer's own objects there, so that it
//!   answers with those only; a consumer with none is answered without any key;
//! - what a listing reads is bounded: the newest `MAX_OWNED` objects on at most `MAX_KEYS` keys;
//! - the objects a call *uses* (a cloned voice, from the plugin's quote) pin it the same way
//!   when the gateway made them: another user's is not found, objects of two keys are refused,
//!   and an id the gateway never made is the vendor's own (any key). A one-time fee due on
//!   one is taken by one call (`FeeClaim`) and given back unless that call is charged.

use super::call::CallRequest;
use super::Engine;
use crate::billing::Billing;
use crate::exchange::{self, CallError};
use crate::keypool::{Channel, UpstreamKey};
use crate::plugin::Plugin;
use crate::store::{now_unix, objects, Db};
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
/// The most vendor objects one call may use.
const MAX_USES: usize = 16;

/// What the objects a call uses decide.
#[derive(Debug, Default)]
pub(crate) struct Uses {
    /// The key that made the consumer's objects among them, and the first of those objects
    /// (what an error about that key names); `None` when the gateway made none.
    pub made_on: Option<(String, String)>,
    /// The one-time fees still due on them: (object, the op that made it).
    pub due: Vec<(String, String)>,
}

/// One-time fees a call took for the objects it uses, in micros: given back when dropped
/// uncharged (the call was refused or free, or its consumer left), kept by `charged`.
pub(crate) struct FeeClaim {
    db: Db,
    plugin: String,
    user_id: i64,
    /// (object, op) of each fee taken.
    taken: Vec<(String, String)>,
    pub micros: i64,
}

impl FeeClaim {
    /// The call was charged (its charge includes `micros`): the fees are paid.
    pub fn charged(mut self) {
        self.taken.clear();
    }
}

impl Drop for FeeClaim {
    fn drop(&mut self) {
        if self.taken.is_empty() {
            return;
        }
        let (db, plugin, user_id, taken) =
            (self.db.clone(), self.plugin.clone(), self.user_id, std::mem::take(&mut self.taken));
        tokio::spawn(async move {
            for (object, op) in taken {
                if let Err(e) = objects::give_back_fee(&db, &plugin, user_id, &object, &op).await {
                    tracing::error!(error = %format!("{e:#}"), object, "an uncharged call's one-time fee could not be given back: the object's next use is not charged it");
                }
            }
        });
    }
}

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
        match objects::key_of(&self.db, r.plugin.name(), r.consumer.user_id, object).await {
            Ok(Some(fingerprint)) => self.pin_to(r, fingerprint, object),
            Ok(None) => Err(not_found(object)),
            Err(e) => Err(database_unavailable(e)),
        }
    }

    /// The call pinned to the key `fingerprint`, which made `object`.
    pub(super) fn pin_to(&self, r: &CallRequest, fingerprint: String, object: &str) -> Result<Pinned, CallError> {
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

    /// Remembers the vendor objects a call created, with its key, user and op.
    pub(super) async fn remember(
        &self,
        r: &CallRequest,
        plugin: &Plugin,
        key: &UpstreamKey,
        objects: &[String],
        batch_input: Option<&str>,
    ) {
        let fingerprint = key.fingerprint();
        let made = objects::Made {
            plugin: plugin.name(),
            user_id: r.consumer.user_id,
            key_fingerprint: &fingerprint,
            request_id: &r.request_id,
            op: &r.op,
            batch_input,
        };
        let remembered = objects::remember(&self.db, &made, objects, now_unix()).await;
        if let Err(e) = remembered {
            tracing::error!(error = %format!("{e:#}"), request_id = %r.request_id, "cannot remember the vendor objects a call created");
        }
    }
}

/// What the objects a call uses decide (see `Uses`): another user's is not found, and
/// the consumer's own must all have been made on one key.
pub(crate) async fn uses(db: &Db, plugin: &str, user_id: i64, ids: &[String]) -> Result<Uses, CallError> {
    let mut ids = ids.to_vec();
    ids.sort();
    ids.dedup();
    if ids.len() > MAX_USES {
        return Err(CallError::bad_request(format!("A call may use at most {MAX_USES} vendor objects.")));
    }
    let known = objects::known(db, plugin, &ids).await.map_err(database_unavailable)?;
    let mut uses = Uses::default();
    for id in &ids {
        let rows: Vec<&objects::Known> = known.iter().filter(|k| &k.object_id == id).collect();
        let Some(mine) = rows.iter().find(|k| k.user_id == user_id) else {
            if rows.is_empty() {
                continue; // the vendor's own (a stock voice)
            }
            return Err(not_found(id));
        };
        match &uses.made_on {
            Some((f, _)) if *f != mine.key_fingerprint => {
                return Err(CallError::bad_request(format!(
                    "'{id}' was made on another upstream account than the other objects this call uses; one call uses objects of one account."
                )))
            }
            Some(_) => {}
            None => uses.made_on = Some((mine.key_fingerprint.clone(), id.clone())),
        }
        if let Some(op) = &mine.fee_due_op {
            uses.due.push((id.clone(), op.clone()));
        }
    }
    Ok(uses)
}

/// Takes the one-time fees due on a billed call's objects that the price table prices,
/// for its consumer; `None` when none is due.
pub(crate) async fn take_fees(
    db: &Db,
    b: &Billing,
    r: &CallRequest,
    due: &[(String, String)],
) -> Result<Option<FeeClaim>, CallError> {
    let (plugin, user_id) = (r.plugin.name(), r.consumer.user_id);
    let mut claim = FeeClaim { db: db.clone(), plugin: plugin.to_string(), user_id, taken: Vec::new(), micros: 0 };
    for (object, op) in due {
        let Some(micros) = b.fee_micros(&r.consumer.group, plugin, op) else { continue };
        if objects::take_fee(db, plugin, user_id, object, op).await.map_err(database_unavailable)? {
            claim.taken.push((object.clone(), op.clone()));
            claim.micros = claim.micros.saturating_add(micros);
        }
    }
    Ok((!claim.taken.is_empty()).then_some(claim))
}

pub(crate) fn not_found(object: &str) -> CallError {
    CallError::new(
        404,
        "invalid_request_error",
        "not_found",
        format!("No object '{object}' was created by this account through this gateway."),
    )
}

pub(crate) fn database_unavailable(e: anyhow::Error) -> CallError {
    tracing::error!(error = %format!("{e:#}"), "cannot read vendor objects");
    CallError::new(
        503,
        "server_error",
        "database_unavailable",
        "The gateway cannot serve this call now; retry shortly.",
    )
}
