//! The raw credential a plugin that signs requests itself receives: only on a channel whose
//! operator set `allow_signing`, split into the plugin's declared fields. Every other plugin
//! gets none; the host inserts the key into what it sends.

use crate::exchange::CallError;
use crate::keypool::{Channel, UpstreamKey};
use crate::plugin::Plugin;

/// The raw credential `key` gives a plugin that signs requests itself (see
/// `split_credential`); nothing for a plugin that lets the host insert the key, for one whose
/// credential is optional on a channel that does not allow signing, or without a key.
pub fn credential_for(
    plugin: &Plugin,
    channel: &Channel,
    key: Option<&UpstreamKey>,
) -> Result<Vec<(String, String)>, CallError> {
    let fields = &plugin.manifest.credential_fields;
    match key {
        // A plugin that can let the host insert the key gets none where signing is not allowed.
        Some(_) if !channel.allow_signing && fields.iter().all(|f| f.optional) => Ok(Vec::new()),
        Some(key) if !fields.is_empty() => {
            let names: Vec<String> = fields.iter().map(|c| c.name.clone()).collect();
            split_credential(channel, &names, &key.0)
        }
        _ => Ok(Vec::new()),
    }
}

/// The raw credential for a plugin that signs requests itself, only where the channel's
/// operator allows it (`allow_signing`): a plugin file alone never decides that it receives
/// keys. A multi-field credential is written in the channel's `keys` as `value1|value2|...`,
/// in the order of the plugin's credential fields.
pub fn split_credential(channel: &Channel, fields: &[String], key: &str) -> Result<Vec<(String, String)>, CallError> {
    if !channel.allow_signing {
        return Err(CallError::config(format!(
            "channel '{}' uses a plugin that signs requests with the raw key; set allow_signing = true on the channel if you trust plugin '{}' with its keys",
            channel.name, channel.plugin
        )));
    }
    let values: Vec<&str> = if fields.len() == 1 { vec![key] } else { key.split('|').collect() };
    if values.len() != fields.len() {
        return Err(CallError::config(format!(
            "this channel's plugin needs credentials as '{}' (separated by '|')",
            fields.join("|")
        )));
    }
    Ok(fields.iter().cloned().zip(values.into_iter().map(str::to_string)).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raw_keys_reach_a_signing_plugin_only_where_the_operator_allows_it() {
        let channel = |allow: bool| {
            let text = format!("name = \"k\"\nplugin = \"kling\"\nmodels = [\"m\"]\nallow_signing = {allow}");
            Channel::from_config(&toml::from_str(&text).unwrap(), std::time::Duration::from_secs(1))
        };
        let fields = vec!["access_key".to_string(), "secret_key".to_string()];
        let e = split_credential(&channel(false), &fields, "ak|sk").unwrap_err();
        assert_eq!(e.status, 503);
        assert!(e.message.contains("allow_signing"), "{}", e.message);
        let pairs = split_credential(&channel(true), &fields, "ak|sk").unwrap();
        assert_eq!(pairs, vec![("access_key".into(), "ak".into()), ("secret_key".into(), "sk".into())]);
        assert!(split_credential(&channel(true), &fields, "ak").is_err(), "one field short");
    }
}
