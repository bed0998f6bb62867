//! Upstream keys an operator took out of service (`POST /admin/channels/{name}/keys/{fingerprint}/disable`),
//! kept in the database by channel and fingerprint (`upstream_key_holds`).
//!
//! Invariants: a held key is never picked for a call (`Channel::pick_key`), whatever its
//! health; only the operator's `enable` returns it. The hold is the database's, not a node's:
//! it applies to a key of the configuration file and to a stored one alike, survives restarts
//! and channel reloads (the pools read it when they are built: `stored::load_into`), and every
//! node sharing the database applies it within `key_refresh_ms` (`stored::sync`). A key the
//! operator removes loses its hold with it. Follow-up calls of objects a held key created
//! (task polls, downloads) still run on it: only that key can reach them.

use super::Channels;
use crate::store::{now_unix, Db};
use anyhow::Result;
use std::collections::{HashMap, HashSet};

/// Holds (`held`) or releases the key with `fingerprint` of `channel`. True when this changed
/// anything.
pub async fn set(db: &Db, channel: &str, fingerprint: &str, held: bool) -> Result<bool> {
    let done = if held {
        // A second disable keeps the first one's time.
        sqlx::query(
            "INSERT INTO upstream_key_holds (channel, fingerprint, created_at) VALUES ($1, $2, $3) \
             ON CONFLICT (channel, fingerprint) DO NOTHING",
        )
        .bind(channel)
        .bind(fingerprint)
        .bind(now_unix())
        .execute(db)
        .await?
    } else {
        sqlx::query("DELETE FROM upstream_key_holds WHERE channel = $1 AND fingerprint = $2")
            .bind(channel)
            .bind(fingerprint)
            .execute(db)
            .await?
    };
    Ok(done.rows_affected() > 0)
}

/// Gives every channel of `channels` its held keys as the database has them now.
pub async fn load_into(db: &Db, channels: &Channels) -> Result<()> {
    let rows: Vec<(String, String)> =
        sqlx::query_as("SELECT channel, fingerprint FROM upstream_key_holds").fetch_all(db).await?;
    let mut by_channel: HashMap<String, HashSet<String>> = HashMap::new();
    for (channel, fingerprint) in rows {
        by_channel.entry(channel).or_default().insert(fingerprint);
    }
    for channel in channels.all() {
        channel.set_held(by_channel.remove(&channel.name).unwrap_or_default());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keypool::config::ChannelConfig;
    use crate::keypool::UpstreamKey;
    use std::sync::Arc;
    use std::time::Duration;

    #[tokio::test]
    async fn a_held_key_is_never_picked_on_any_channel_set_that_reads_the_database() {
        let db = crate::store::open_for_test("upstream_key_holds").await;
        let config: ChannelConfig =
            toml::from_str("name='c'\nplugin='openai'\nmodels=['m']\nkeys=['k1','k2']").unwrap();
        let node = || Channels::new(std::slice::from_ref(&config), Duration::from_secs(60));
        let (a, b) = (node(), node());
        let k1 = UpstreamKey(Arc::from("k1")).fingerprint();
        assert!(set(&db, "c", &k1, true).await.unwrap());
        assert!(!set(&db, "c", &k1, true).await.unwrap(), "held already");
        assert!(!set(&db, "other", "f", false).await.unwrap(), "nothing to release");
        for channels in [&a, &b] {
            load_into(&db, channels).await.unwrap();
            let ch = channels.by_name("c").unwrap();
            for _ in 0..4 {
                assert_eq!(&*ch.pick_key(&[]).unwrap().secret.0, "k2", "the held key is never picked");
            }
            let k2 = ch.all_keys().into_iter().find(|k| &*k.secret.0 == "k2").unwrap();
            assert!(ch.pick_key(&[k2.id]).is_none(), "not even when it is the only key left");
            assert_eq!(ch.key_states()[0].shown, "disabled_by_operator");
        }
        // A reload of the channel set keeps the hold; a release on the database frees the key.
        let reloaded = Channels::reloaded(std::slice::from_ref(&config), Duration::from_secs(60), &a);
        assert!(reloaded.by_name("c").unwrap().key_states()[0].disabled_by_operator);
        assert!(set(&db, "c", &k1, false).await.unwrap());
        load_into(&db, &b).await.unwrap();
        let picks: HashSet<String> =
            (0..4).map(|_| b.by_name("c").unwrap().pick_key(&[]).unwrap().secret.0.to_string()).collect();
        assert_eq!(picks.len(), 2, "both keys serve again: {picks:?}");
    }
}
