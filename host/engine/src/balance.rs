//! Reads each upstream key's balance at the vendor, for channels with
//! `strategy = "highest-balance"`: every `balance_refresh_secs`, the channel's plugin runs
//! operation `balance` on each key of the pool (the plugin knows the vendor's endpoint, e.g.
//! SiliconFlow's `GET /v1/user/info`) and replies `{"balance":"<decimal>"}`.
//!
//! A read that fails leaves the balance unknown, never zero. A key the vendor refuses
//! (unauthorized, out of balance) is reported to its health like a failed call, so it is
//! disabled before a consumer's call meets it.

use super::Engine;
use crate::exchange::{self, Outcome};
use crate::keypool::health::KeyOutcome;
use crate::keypool::{Channel, BALANCE_OP};
use crate::plugin::wit;
use std::sync::Arc;

impl Engine {
    /// Reads every key's balance of `channel` once; returns how many were read. A job calls
    /// this for each `highest-balance` channel every `balance_refresh_secs`.
    pub async fn read_balances(&self, channel: &Arc<Channel>) -> usize {
        let Some(plugin) = self.registry.current().get(&channel.plugin).cloned() else {
            tracing::warn!(channel = %channel.name, plugin = %channel.plugin, "balance refresh: the plugin is not loaded");
            return 0;
        };
        if !plugin.supports(BALANCE_OP) {
            tracing::warn!(channel = %channel.name, plugin = %channel.plugin,
            "strategy highest-balance: the plugin has no 'balance' operation; keys take turns instead");
            return 0;
        }
        let mut read = 0;
        for key in channel.all_keys() {
            let Ok(credential) = super::credential_for(&plugin, channel, Some(&key.secret)) else { continue };
            let Ok(base_url) = exchange::base_url(channel, &plugin) else { continue };
            let call = wit::Call {
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
            let result = exchange::run(ctx, &call).await;
            let balance = match &result {
                Ok(Outcome::Reply { status: 200..=299, body, error: None, .. }) => parse_balance(body),
                _ => None,
            };
            match super::key_outcome(&result) {
                outcome @ KeyOutcome::Refused => key.report(outcome),
                _ if balance.is_some() => read += 1,
                _ => {
                    let why = result.err().map(|e| e.message).unwrap_or_else(|| "no readable balance".into());
                    tracing::warn!(channel = %channel.name, key = %key.secret.masked(), error = %why, "reading a key's balance failed");
                }
            }
            key.set_balance(balance);
        }
        read
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
