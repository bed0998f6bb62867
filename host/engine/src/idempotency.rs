//! `Idempotency-Key` on model calls: the first call with a key claims it in the database
//! before the upstream is called; a repeat is answered from what the first call stored, and
//! never runs the upstream again (so it can never be a free call).
//!
//! - same key, same operation and body, answered: the stored answer, with
//!   `Idempotent-Replayed: true` (and no charge: the first call paid);
//! - same key while the first call runs: 409 `idempotency_key_in_use`;
//! - same key, another operation or body: 422 `idempotency_key_reused`;
//! - a first call that cost nothing (refused, failed) gives the key up: a retry runs.

use super::{Answer, CallRequest};
use crate::exchange::CallError;
use crate::plugin::wit;
use crate::store::idempotency::{self, Claim, Stored};
use crate::store::{now_unix, Db};
use bytes::Bytes;
use sha2::{Digest, Sha256};

/// What a call holds on its key; given up when dropped unfinished (a call that panicked).
pub struct Held {
    db: Db,
    key_id: i64,
    key: String,
    /// The call that holds the claim (the only one that may end it).
    request_id: String,
    finished: bool,
}

/// What the claim decided.
pub enum Decision {
    /// No key, or this call holds it: run it.
    Run(Option<Held>),
    /// Answered before: replay it, without calling the upstream.
    Replay(Stored),
    /// Refused without calling the upstream (in progress, reused, not kept, store down).
    Refuse(CallError),
}

/// Claims the call's key, if it sent one.
pub async fn claim(db: &Db, r: &CallRequest) -> Decision {
    let Some(key) = &r.idempotency_key else { return Decision::Run(None) };
    let mut hash = Sha256::new();
    for part in [r.op.as_bytes(), b"\0", r.model.as_bytes(), b"\0", &r.body] {
        hash.update(part);
    }
    let fingerprint = hex::encode(hash.finalize());
    let key_id = r.consumer.key_id;
    let claim = idempotency::claim(db, key_id, key, &fingerprint, &r.request_id, now_unix()).await;
    Decision::Refuse(match claim {
        Ok(Claim::Claimed) => {
            return Decision::Run(Some(Held {
                db: db.clone(),
                key_id,
                key: key.clone(),
                request_id: r.request_id.clone(),
                finished: false,
            }))
        }
        Ok(Claim::Answered(Some(stored))) => return Decision::Replay(stored),
        Ok(Claim::InProgress) => CallError::new(
            409,
            "invalid_request_error",
            "idempotency_key_in_use",
            "A call with this Idempotency-Key is still in progress; retry once it has finished.",
        ),
        Ok(Claim::Mismatch) => CallError::new(
            422,
            "invalid_request_error",
            "idempotency_key_reused",
            "This Idempotency-Key was used for a different request; use a new key for a new request.",
        ),
        Ok(Claim::Answered(None)) => CallError::new(
            409,
            "invalid_request_error",
            "idempotency_key_reused",
            "This Idempotency-Key was answered with a download or an answer too large to keep; use a new key to call again.",
        ),
        Err(e) => {
            tracing::error!(error = %format!("{e:#}"), "idempotency key store failed");
            CallError::new(
                503,
                "server_error",
                "idempotency_unavailable",
                "The gateway could not check the Idempotency-Key; retry shortly.",
            )
        }
    })
}

/// The stored answer, marked as a replay.
pub fn replay(stored: Stored) -> Answer {
    let header = |name: &str, value: &str| wit::Header { name: name.into(), value: value.into() };
    let mut headers = vec![header("idempotent-replayed", "true"), header("original-request-id", &stored.request_id)];
    if let Some(ct) = &stored.content_type {
        headers.push(header("content-type", ct));
    }
    Answer::Full { status: stored.status, headers, body: Bytes::from(stored.body) }
}

impl Held {
    /// The call was answered: keep the answer for replays (`None`: answered, not kept).
    pub async fn complete(mut self, answer: Option<(u16, Option<&str>, &[u8])>) {
        self.finished = true;
        if let Err(e) = idempotency::complete(&self.db, self.key_id, &self.key, &self.request_id, answer).await {
            tracing::error!(error = %format!("{e:#}"), "storing an idempotent answer failed");
        }
    }

    /// `complete` from a synchronous place (the end of a stream).
    pub fn complete_later(self, answer: Option<(u16, Option<String>, Bytes)>) {
        tokio::spawn(async move {
            let answer = answer.as_ref().map(|(s, ct, b)| (*s, ct.as_deref(), b.as_ref()));
            self.complete(answer).await
        });
    }

    /// The call cost nothing: a retry with this key may run it.
    pub async fn give_up(mut self) {
        self.finished = true;
        if let Err(e) = idempotency::give_up(&self.db, self.key_id, &self.key, &self.request_id).await {
            tracing::error!(error = %format!("{e:#}"), "giving up an idempotency key failed");
        }
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        if !self.finished {
            let (db, key_id, key) = (self.db.clone(), self.key_id, std::mem::take(&mut self.key));
            let request_id = std::mem::take(&mut self.request_id);
            if let Ok(rt) = tokio::runtime::Handle::try_current() {
                rt.spawn(async move { idempotency::give_up(&db, key_id, &key, &request_id).await });
            }
        }
    }
}
