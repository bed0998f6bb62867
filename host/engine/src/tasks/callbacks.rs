//! Callbacks: a finished task with a callback URL is POSTed to it, signed with its owner's key,
//! and tried again on a failure until its retries run out; one node delivers each (a lease).

use super::{view, BATCH};
use crate::store::now_unix;
use crate::store::tasks;
use crate::Engine;

/// How long a node holds a callback it delivers; when a failed delivery is tried again
/// (after the first, second, ... attempt); past the last, the delivery has failed.
const CALLBACK_LEASE_SECS: i64 = 60;
const CALLBACK_RETRIES: [i64; 5] = [2, 10, 60, 300, 1800];

impl Engine {
    /// Delivers due callbacks: each finished task with a callback URL is POSTed, as
    /// `{"type":"task.<status>","data":<task>}`, signed with its owner's key
    /// (`Tollgate-Signature: t=<unix>,v1=<hex HMAC-SHA256 of "<t>.<body>">`), and tried again
    /// on a failure (not 2xx, no answer) until `CALLBACK_RETRIES` run out. Returns how many
    /// were attempted.
    pub async fn deliver_callbacks(&self, key_of: &(dyn Fn(i64) -> Vec<u8> + Sync)) -> usize {
        let now = now_unix();
        let due = match tasks::claim_callbacks(&self.db, now, CALLBACK_LEASE_SECS, BATCH as i64).await {
            Ok(due) => due,
            Err(e) => {
                tracing::warn!(error = %format!("{e:#}"), "claiming due callbacks failed");
                return 0;
            }
        };
        let attempts = due.iter().map(|t| async move {
            let Some(url) = t.callback_url.as_deref() else { return };
            let body = serde_json::json!({ "type": format!("task.{}", t.status), "created_at": now, "data": view(t) });
            let body = bytes::Bytes::from(body.to_string());
            let signature = sign(&key_of(t.user_id), now, &body);
            let headers = [("tollgate-signature", signature), ("tollgate-event", format!("task.{}", t.status))];
            let result = self.archive.post(url, body, &headers).await;
            let delivered = matches!(result, Ok(200..=299));
            if !delivered {
                let why = match &result {
                    Ok(status) => format!("answered {status}"),
                    Err(e) => e.clone(),
                };
                tracing::warn!(task = %t.id, attempt = t.callback_attempts + 1, why, "a callback was not delivered");
            }
            let retry_at = CALLBACK_RETRIES.get(t.callback_attempts as usize).map(|s| now_unix() + s);
            if let Err(e) = tasks::callback_attempted(&self.db, &t.id, delivered, retry_at).await {
                tracing::warn!(task = %t.id, error = %format!("{e:#}"), "recording a callback attempt failed");
            }
        });
        futures_util::future::join_all(attempts).await;
        due.len()
    }
}

/// `t=<unix>,v1=<hex HMAC-SHA256(key, "<t>.<body>")>`.
fn sign(key: &[u8], t: i64, body: &[u8]) -> String {
    use hmac::{Mac, SimpleHmac};
    let mut mac = <SimpleHmac<sha2::Sha256> as Mac>::new_from_slice(key).expect("HMAC takes any key");
    mac.update(format!("{t}.").as_bytes());
    mac.update(body);
    format!("t={t},v1={}", hex::encode(mac.finalize().into_bytes()))
}
