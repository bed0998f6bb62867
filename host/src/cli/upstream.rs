//! `tollgate upstream`: upstream keys stored in the database, sealed with TOLLGATE_MASTER_KEY.

use super::{json, line, table};
use anyhow::Result;
use clap::Subcommand;
use std::path::PathBuf;
use tollgate::config::Config;
use tollgate_engine::keypool::stored;

#[derive(Subcommand)]
pub enum UpstreamCommand {
    /// Store keys for a channel: a JSON array, or lines of `key[,weight[,priority]]`, read from
    /// --file or standard input. A key stored twice gets the new weight and priority.
    Import {
        /// The channel the keys serve (a `[[channel]]` name in the configuration).
        #[arg(long, required_unless_present = "from_config")]
        channel: Option<String>,
        /// Read the keys from this file instead of standard input.
        #[arg(long)]
        file: Option<PathBuf>,
        /// Store every channel's keys from the configuration file instead (then delete them
        /// from the file: stored keys are encrypted at rest, the file is not).
        #[arg(long, conflicts_with_all = ["channel", "file"])]
        from_config: bool,
    },
    /// Print the stored keys in clear as JSON (importable again).
    Export {
        /// Only this channel's keys.
        #[arg(long)]
        channel: Option<String>,
    },
    /// List stored keys without their secrets.
    List,
    /// Delete a stored key.
    Remove {
        /// The stored key's id, as `upstream list` shows it.
        #[arg(long)]
        id: i64,
    },
}

pub async fn run(config: &Config, command: UpstreamCommand) -> Result<()> {
    let db = tollgate_store::open(&config.database_url()).await?;
    let master = || {
        config.master_key.clone().ok_or_else(|| {
            anyhow::anyhow!("set {} (64 hex digits, e.g. `openssl rand -hex 32`)", stored::MASTER_KEY_ENV)
        })
    };
    match command {
        UpstreamCommand::Import { from_config: true, .. } => {
            let master = master()?;
            for c in config.channels.iter().filter(|c| !c.keys.is_empty()) {
                let records: Vec<stored::KeyRecord> = c
                    .keys
                    .iter()
                    .map(|k| stored::KeyRecord {
                        key: k.key().to_string(),
                        weight: k.weight(),
                        priority: k.priority(),
                        channel: None,
                    })
                    .collect();
                let (added, updated) = stored::import(&db, &master, &c.name, &records).await?;
                line(format!("{}: {added} added, {updated} updated", c.name));
            }
        }
        UpstreamCommand::Import { channel, file, .. } => {
            let channel = channel.unwrap_or_default();
            if !config.channels.iter().any(|c| c.name == channel) {
                anyhow::bail!("no channel named '{channel}' in the configuration");
            }
            let text = match file {
                Some(f) => std::fs::read_to_string(&f).map_err(|e| anyhow::anyhow!("reading {}: {e}", f.display()))?,
                None => std::io::read_to_string(std::io::stdin())?,
            };
            // The command line stores all or nothing: a file with a bad line is fixed and run again.
            let read = stored::parse_import(&text)?;
            if !read.invalid.is_empty() {
                anyhow::bail!("nothing imported; fix these lines: {}", read.invalid.join("; "));
            }
            let (added, updated) = stored::import(&db, &master()?, &channel, &read.records).await?;
            let repeated = if read.repeated > 0 { format!(", {} repeated", read.repeated) } else { String::new() };
            line(format!("{added} added, {updated} updated{repeated}"));
        }
        UpstreamCommand::Export { channel } => json(&stored::export(&db, &master()?, channel.as_deref()).await?)?,
        UpstreamCommand::List => table(
            &["id", "channel", "prefix", "weight", "priority"],
            stored::list(&db).await?.into_iter().map(|(id, channel, prefix, weight, priority)| {
                vec![id.to_string(), channel, format!("{prefix}…"), weight.to_string(), priority.to_string()]
            }),
        ),
        UpstreamCommand::Remove { id } => {
            if !stored::remove(&db, id, None).await? {
                anyhow::bail!("no stored upstream key {id}");
            }
            line(format!("removed {id}"));
        }
    }
    Ok(())
}
