//! Reads each upstream key's balance at the vendor: for channels with
//! `strategy = "highest-balance"` every `balance_refresh_secs`, and for any channel when the
//! operator asks (`POST /admin/channels/{name}/keys/balances/refresh`). The channel's plugin
//! runs operation `balance` on each key of the pool (the plugin knows the vendor's endpoint,
//! e.g. SiliconFlow's `GET /v1/user/info`) and replies `{"balance":"<decimal>"}`.
//!
//! A read that fails leaves the balance unknown, never zero, and is the key's last error. A
//! key the vendor refuses (unauthorized, out of balance) is reported to its health like a
//! failed call, so it is disabled before a consumer's call meets it. Keys the operator
//! disabled are read too: their balance is still the operator's business.

use super::Engine;
use crate::exchange::{self, Outcome};
use crate::keypool::health::KeyOutcome;
use crate::keypool::{Channel, BALANCE_OP};
use crate::plugin::wit;
use std::sync::Arc;

/// Why a channel's balances cannot be read at all.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BalanceUnreadable {
    /// The channel's plugin is not loaded.
    PluginNotLoaded { plugin: String },
    /// The channel's plugin has no `balance` operation.
    NoBalanceOp { plugin: String },
}

impl std::fmt::Display for BalanceUnreadable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BalanceUnreadable::PluginNotLoaded { plugin } => {
                write!(f, "the plugin '{plugin}' is not loaded (see GET /admin/plugins)")
            }
            BalanceUnreadable::NoBalanceOp { plugin } => {
                write!(
                    f,
                    "the plugin '{plugin}' has no '{BALANCE_OP}' operation: this vendor's balances cannot be read"
                )
            }
        }
    }
}

/// One key's balance read.
#[derive(Debug, Clone, serde::Serialize)]
pub struct BalanceRead {
    /// Masked.
    pub key: String,
    pub fingerprint: String,
    /// The balance read, as a decimal; `None` when it could not be read (`error` says why).
    pub balance: Option<String>,
    pub error: Option<String>,
}

impl Engine {
    /// Reads every key's balance of `channel` once, in pool order. A job calls this for each
    /// `highest-balance` channel every `balance_refresh_secs`; the admin API when asked.
    pub async fn read_balances(&self, channel: &Arc<Channel>) -> Result<Vec<BalanceRead>, BalanceUnreadable> {
        let Some(plugin) = self.registry.current().get(&channel.plugin).cloned() else {
            return Err(BalanceUnreadable::PluginNotLoaded { plugin: channel.plugin.clone() });
        };
        if !plugin.supports(BALANCE_OP) {
            return Err(BalanceUnreadable::NoBalanceOp { plugin: channel.plugin.clone() });
        }
        let mut reads = Vec::new();
        for key in channel.all_keys() {
            let result = match (
                super::credential_for(&plugin, channel, Some(&key.secret)),
                exchange::base_url(channel, &plugin),
            ) {
                (Ok(credential), Ok(base_url)) => {
                    let mut call = wit::Call {
                        op: BALANCE_OP.into(),
                        context: wit::CallContext {
                            request_id: format!("balance-{}", channel.name),
                            attempt: 1,
                            path: String::new(),
                            path_params: Vec::new(),
                            base_url,
                        },
                        model: String::new(),
                        upstream_model: String::new(),
                        body: wit::Body::Empty,
                        query: String::new(),
                        headers: Vec::new(),
                        credential,
                        config: channel.settings_json.clone(),
                        task: None,
                        keep_speech: false,
                        owned: Vec::new(),
                    };
                    let ctx = self.exchange_context(&plugin, channel, Some(&key.secret), Default::default(), false);
                    exchange::run(ctx, &mut call).await
                }
                (Err(e), _) | (_, Err(e)) => Err(e),
            };
            let balance = match &result {
                Ok(Outcome::Reply { status: 200..=299, body, error: None, .. }) => parse_balance(body),
                _ => None,
            };
            let outcome = super::key_outcome(&result);
            if outcome == KeyOutcome::Refused {
                key.report(outcome);
            }
            let error = balance.is_none().then(|| {
                let why = match result {
                    Err(e) => e.message,
                    Ok(Outcome::Reply { error: Some(e), .. }) => e.message,
                    Ok(Outcome::Reply { status, .. }) => format!("the vendor answered {status} without a readable balance"),
                    Ok(_) => "the vendor's answer holds no readable balance".into(),
                };
                tracing::warn!(channel = %channel.name, key = %key.secret.masked(), error = %why, "reading a key's balance failed");
                key.note_error(format!("balance read failed: {why}"));
                why
            });
            key.set_balance(balance);
            reads.push(BalanceRead {
                key: key.secret.masked(),
                fingerprint: key.secret.fingerprint(),
                balance: balance.map(tollgate_base::money::format),
                error,
            });
        }
        Ok(reads)
    }
}

/// `{"balance":"12.50"}` → micros, exactly (`money::parse_reported`: digits past the sixth
/// decimal are cut, an overdraft is kept, an absurd figure is unknown, never a panic).
fn parse_balance(body: &[u8]) -> Option<i64> {
    let v: serde_json::Value = serde_json::from_slice(body).ok()?;
    tollgate_base::money::parse_reported(v.get("balance")?.as_str()?)
}

#[cfg(test)]
mod tests {
    #[test]
    fn balances_parse_exactly() {
        assert_eq!(super::parse_balance(br#"{"balance":"88.88"}"#), Some(88_880_000));
        assert_eq!(super::parse_balance(br#"{"balance":"-0.5"}"#), Some(-500_000));
        assert_eq!(super::parse_balance(br#"{"balance":"1.23456789"}"#), Some(1_234_567));
        assert_eq!(super::parse_balance(br#"{"balance":"7"}"#), Some(7_000_000));
        assert_eq!(super::parse_balance(br#"{"balance":"lots"}"#), None);
        assert_eq!(super::parse_balance(br#"{"balance":88}"#), None);
        assert_eq!(super::parse_balance(br#"{"balance":"79228162514264337593543950335"}"#), None);
        assert_eq!(super::parse_balance(br#"{"balance":"-9999999999999999999999"}"#), None);
    }
}
