//! `tollgate keys`: consumer API keys.

use super::{line, table};
use anyhow::Result;
use clap::Subcommand;
use tollgate::config::Config;

#[derive(Subcommand)]
pub enum KeysCommand {
    /// Create a consumer key and print it (shown only this once).
    Create {
        /// A name for the key (1 to 64 characters); without --user, also its owner's name.
        #[arg(long)]
        name: String,
        /// Granted to the owner with the key, a decimal amount such as 10 or 2.50.
        #[arg(long, default_value = "0")]
        balance: String,
        /// The owner (default: a user named like the key, created if missing; never one that
        /// signs in with a password).
        #[arg(long)]
        user: Option<String>,
        /// The most this key may spend, a decimal amount (default: the owner's balance only).
        #[arg(long)]
        limit: Option<String>,
        /// Days until the key expires (default: never).
        #[arg(long)]
        expires_in_days: Option<u32>,
        /// The only models the key may call, comma-separated (default: all).
        #[arg(long, value_delimiter = ',')]
        models: Vec<String>,
    },
    /// Refuse a key from now on (within key_refresh_ms on a running gateway).
    Disable {
        /// The key's id, as `keys list` shows it.
        #[arg(long)]
        id: i64,
    },
    /// Accept a disabled key again.
    Enable {
        /// The key's id, as `keys list` shows it.
        #[arg(long)]
        id: i64,
    },
    /// List consumer keys (without secrets).
    List,
    /// Add to the balance of the key's owner (a ledger entry); prints the new balance.
    Topup {
        /// The key's id, as `keys list` shows it.
        #[arg(long)]
        id: i64,
        /// A decimal amount such as 10 or 2.50.
        #[arg(long)]
        amount: String,
    },
}

pub async fn run(config: &Config, command: KeysCommand) -> Result<()> {
    let db = tollgate_store::open(&config.database_url()).await?;
    match command {
        KeysCommand::Create { name, balance, user, limit, expires_in_days, models } => {
            let expires_at = expires_in_days.map(|d| tollgate_store::now_unix() + i64::from(d) * 86_400);
            let new = tollgate_engine::account::NewKey { name, user, balance, limit, expires_at, models };
            line(tollgate_engine::account::create_key(&db, &new).await?);
        }
        KeysCommand::Disable { id } => tollgate_engine::account::set_disabled(&db, id, true).await?,
        KeysCommand::Enable { id } => tollgate_engine::account::set_disabled(&db, id, false).await?,
        KeysCommand::Topup { id, amount } => line(tollgate_engine::account::top_up_key(&db, id, &amount).await?),
        KeysCommand::List => {
            let keys = tollgate_engine::account::list_keys(&db).await?;
            table(
                &["id", "name", "prefix", "balance", "state", "user", "limit", "spent"],
                keys.into_iter().map(|k| {
                    vec![
                        k.id.to_string(),
                        k.name,
                        format!("{}…", k.key_prefix),
                        k.balance,
                        if k.disabled { "disabled" } else { "enabled" }.to_string(),
                        k.user,
                        k.limit.unwrap_or_else(|| "-".into()),
                        k.spent,
                    ]
                }),
            );
        }
    }
    Ok(())
}
