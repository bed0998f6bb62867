//! The `tollgate` command: `serve`, `keys`, `users`, `upstream`, `report`, `logs`, `ledger`,
//! `plugins list`.
//! This interface is the operator contract (DESIGN §4): scripts depend on it.

use anyhow::Result;
use clap::{Parser, Subcommand};
use std::path::PathBuf;
use tollgate::config::Config;

/// mimalloc: the request path allocates many small short-lived buffers; glibc's allocator
/// showed up at ~15% of CPU under load.
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(name = "tollgate", version, about = "A multi-vendor AI API gateway with WebAssembly vendor adapters")]
struct Cli {
    /// Configuration file (also TOLLGATE_CONFIG).
    #[arg(long, global = true, env = "TOLLGATE_CONFIG")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the gateway.
    Serve,
    /// Consumer API keys.
    Keys {
        #[command(subcommand)]
        command: KeysCommand,
    },
    /// Upstream keys stored in the database, encrypted with TOLLGATE_MASTER_KEY.
    Upstream {
        #[command(subcommand)]
        command: UpstreamCommand,
    },
    /// Users: who owns keys and the balance.
    Users {
        #[command(subcommand)]
        command: UsersCommand,
    },
    /// Usage, spending and statistics (JSON).
    Report {
        #[command(subcommand)]
        command: ReportCommand,
        /// Start of the range, unix seconds.
        #[arg(long, global = true)]
        from: Option<i64>,
        /// End of the range (exclusive), unix seconds.
        #[arg(long, global = true)]
        to: Option<i64>,
    },
    /// The request log, newest first (JSON).
    Logs {
        #[arg(long)]
        key_id: Option<i64>,
        /// Every call of this user, through any of their keys.
        #[arg(long)]
        user_id: Option<i64>,
        #[arg(long)]
        model: Option<String>,
        #[arg(long)]
        channel: Option<String>,
        /// An exact status, or a class: 2, 4, 5.
        #[arg(long)]
        status: Option<i64>,
        #[arg(long, default_value_t = 50)]
        limit: i64,
        /// The next page: records older than this id.
        #[arg(long)]
        before_id: Option<i64>,
        /// Records from this time on, unix seconds.
        #[arg(long)]
        from: Option<i64>,
        /// Records before this time, unix seconds.
        #[arg(long)]
        to: Option<i64>,
        /// Delete records older than this many days instead (the ledger is kept).
        #[arg(long)]
        prune_days: Option<u32>,
    },
    /// The money ledger.
    Ledger {
        #[command(subcommand)]
        command: LedgerCommand,
    },
    /// Plugins in plugins_dir.
    Plugins {
        #[command(subcommand)]
        command: PluginsCommand,
    },
}

#[derive(Subcommand)]
enum KeysCommand {
    /// Create a consumer key and print it (shown only this once).
    Create {
        #[arg(long)]
        name: String,
        /// Granted to the owner with the key, a decimal amount such as 10 or 2.50.
        #[arg(long, default_value = "0")]
        balance: String,
        /// The owner (default: a user named like the key, created if missing).
        #[arg(long)]
        user: Option<String>,
        /// The most this key may spend (default: no limit but the owner's balance).
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
        #[arg(long)]
        id: i64,
    },
    /// Accept a disabled key again.
    Enable {
        #[arg(long)]
        id: i64,
    },
    /// List consumer keys (without secrets).
    List,
    /// Add to the balance of the key's owner (a ledger entry).
    Topup {
        /// The key's id, as `keys list` shows it.
        #[arg(long)]
        id: i64,
        /// A decimal amount such as 10 or 2.50.
        #[arg(long)]
        amount: String,
    },
}

#[derive(Subcommand)]
enum UsersCommand {
    /// Create a user (prints its id).
    Create {
        #[arg(long)]
        name: String,
        /// Lets the user sign in (POST /v1/auth/login); without it the user only owns keys.
        #[arg(long)]
        password: Option<String>,
        /// "admin" or "user".
        #[arg(long, default_value = "user")]
        role: String,
        /// Pricing group (multiplier in the price table).
        #[arg(long, default_value = "default")]
        group: String,
        /// Granted at creation.
        #[arg(long, default_value = "0")]
        balance: String,
    },
    /// List users with their balance.
    List,
    /// Add to a user's balance (a ledger entry); prints the new balance.
    Topup {
        #[arg(long)]
        name: String,
        #[arg(long)]
        amount: String,
    },
}

#[derive(Subcommand)]
enum ReportCommand {
    /// Calls, errors, spending and units per day or month.
    Usage {
        #[arg(long, default_value = "day")]
        period: String,
    },
    /// Per consumer key: calls, errors, spending, balance.
    Keys,
    /// Per user: balance, calls, spending and credits (the billing summary).
    Users,
    /// Totals, revenue, top users, keys and models.
    Stats,
}

#[derive(Subcommand)]
enum UpstreamCommand {
    /// Store keys for a channel: a JSON array, or lines of `key[,weight[,priority]]`, read from
    /// --file or standard input. A key stored twice gets the new weight and priority.
    Import {
        #[arg(long, required_unless_present = "from_config")]
        channel: Option<String>,
        #[arg(long)]
        file: Option<PathBuf>,
        /// Store every channel's keys from the configuration file instead (then delete them
        /// from the file: stored keys are encrypted at rest, the file is not).
        #[arg(long, conflicts_with_all = ["channel", "file"])]
        from_config: bool,
    },
    /// Print the stored keys in clear as JSON (importable again).
    Export {
        #[arg(long)]
        channel: Option<String>,
    },
    /// List stored keys without their secrets.
    List,
    /// Delete a stored key.
    Remove {
        #[arg(long)]
        id: i64,
    },
}

#[derive(Subcommand)]
enum LedgerCommand {
    /// Check that every balance equals the sum of its ledger entries and that every charge has
    /// its call record; exits 1 otherwise.
    Verify,
}

#[derive(Subcommand)]
enum PluginsCommand {
    /// Load and validate every plugin file; print name, version, sha256, status, last error.
    List {
        #[arg(long)]
        json: bool,
    },
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    let path_given = cli.config.is_some();
    let path = cli.config.unwrap_or_else(|| PathBuf::from("config/tollgate.toml"));
    let config = Config::load(&path, path_given)?;
    tollgate::telemetry::init_logging(&config.log_format);
    let mut rt = tokio::runtime::Builder::new_multi_thread();
    if let Some(n) = config.worker_threads {
        rt.worker_threads(n.max(1));
    }
    let rt = rt.enable_all().build()?;
    rt.block_on(async move {
        match cli.command {
            Command::Serve => tollgate::serve(config).await,
            Command::Keys { command: KeysCommand::Create { name, balance, user, limit, expires_in_days, models } } => {
                let db = tollgate::store::open(&config.database_url()).await?;
                let expires_at = expires_in_days.map(|d| tollgate::store::now_unix() + i64::from(d) * 86_400);
                let new = tollgate::account::NewKey { name, user, balance, limit, expires_at, models };
                let key = tollgate::account::create_key(&db, &new).await?;
                println!("{key}");
                Ok(())
            }
            Command::Keys { command: KeysCommand::Disable { id } } => {
                let db = tollgate::store::open(&config.database_url()).await?;
                tollgate::account::set_disabled(&db, id, true).await
            }
            Command::Keys { command: KeysCommand::Enable { id } } => {
                let db = tollgate::store::open(&config.database_url()).await?;
                tollgate::account::set_disabled(&db, id, false).await
            }
            Command::Keys { command: KeysCommand::Topup { id, amount } } => {
                let db = tollgate::store::open(&config.database_url()).await?;
                println!("{}", tollgate::account::top_up_key(&db, id, &amount).await?);
                Ok(())
            }
            Command::Keys { command: KeysCommand::List } => {
                let db = tollgate::store::open(&config.database_url()).await?;
                for k in tollgate::account::list_keys(&db).await? {
                    let state = if k.disabled { "disabled" } else { "enabled" };
                    let limit = k.limit.map(|l| format!("limit {l}, spent {}", k.spent)).unwrap_or_default();
                    println!(
                        "{}\t{}\t{}…\t{}\t{state}\tuser {}\t{limit}",
                        k.id, k.name, k.key_prefix, k.balance, k.user
                    );
                }
                Ok(())
            }
            Command::Plugins { command: PluginsCommand::List { json } } => plugins_list(&config, json).await,
            Command::Users { command } => {
                let db = tollgate::store::open(&config.database_url()).await?;
                match command {
                    UsersCommand::Create { name, password, role, group, balance } => {
                        let password_hash =
                            password.map(|p| tollgate::account::session::hash_password(&p)).transpose()?;
                        let new = tollgate::account::NewUser { name, password_hash, role, group, balance };
                        println!("{}", tollgate::account::create_user(&db, &new).await?);
                    }
                    UsersCommand::List => {
                        for u in tollgate::account::list_users(&db).await? {
                            let state = if u.disabled { "disabled" } else { "enabled" };
                            println!("{}\t{}\t{}\t{}\t{}\t{state}", u.id, u.name, u.role, u.group, u.balance);
                        }
                    }
                    UsersCommand::Topup { name, amount } => {
                        println!("{}", tollgate::account::top_up(&db, &name, &amount).await?)
                    }
                }
                Ok(())
            }
            Command::Report { command, from, to } => {
                use tollgate::admin::reports;
                let db = tollgate::store::open(&config.database_url()).await?;
                let range = reports::Range { from, to };
                let v = match command {
                    ReportCommand::Usage { period } => reports::usage(&db, &period, range).await?,
                    ReportCommand::Keys => reports::keys(&db, range).await?,
                    ReportCommand::Users => reports::users(&db, range).await?,
                    ReportCommand::Stats => reports::stats(&db, range).await?,
                };
                println!("{}", serde_json::to_string_pretty(&v)?);
                Ok(())
            }
            Command::Logs { key_id, user_id, model, channel, status, limit, before_id, from, to, prune_days } => {
                use tollgate::admin::reports;
                let db = tollgate::store::open(&config.database_url()).await?;
                if let Some(days) = prune_days {
                    println!("deleted {} call records", reports::prune(&db, days).await?);
                    return Ok(());
                }
                let filter = reports::LogFilter {
                    key_id,
                    user_id,
                    model,
                    channel,
                    status,
                    range: reports::Range { from, to },
                    before_id,
                    limit,
                };
                println!("{}", serde_json::to_string_pretty(&reports::logs(&db, &filter).await?)?);
                Ok(())
            }
            Command::Upstream { command } => upstream_command(&config, command).await,
            Command::Ledger { command: LedgerCommand::Verify } => {
                let db = tollgate::store::open(&config.database_url()).await?;
                let (keys, mismatches, orphans) = tollgate::account::verify_ledger(&db).await?;
                for m in &mismatches {
                    println!("{}: stored {} but the ledger says {}", m.account, m.stored_micros, m.ledger_micros);
                }
                if orphans > 0 {
                    println!("{orphans} charges without their call record");
                }
                if !mismatches.is_empty() || orphans > 0 {
                    std::process::exit(1);
                }
                println!("ledger consistent: {keys} users");
                Ok(())
            }
        }
    })
}

async fn plugins_list(config: &Config, json: bool) -> Result<()> {
    let runtime = tollgate::plugin::Runtime::new(
        config.data_dir.join("cache"),
        config.plugin_memory_limit_mb,
        config.plugin_time_limit_ms,
        16,
    )?;
    let registry = tollgate::plugin::PluginRegistry::new(runtime, config.plugins_dir());
    registry.scan().await?;
    let status = registry.status();
    if json {
        println!("{}", serde_json::to_string_pretty(&status)?);
        return Ok(());
    }
    println!("{:<24} {:<12} {:<10} {:<8} {:<14} error", "file", "name", "version", "status", "sha256");
    for s in status {
        println!(
            "{:<24} {:<12} {:<10} {:<8} {:<14} {}",
            s.file,
            s.name.as_deref().unwrap_or("-"),
            s.version.as_deref().unwrap_or("-"),
            s.status,
            &s.sha256[..12.min(s.sha256.len())],
            s.last_error.as_deref().unwrap_or("")
        );
    }
    Ok(())
}

async fn upstream_command(config: &Config, command: UpstreamCommand) -> Result<()> {
    use tollgate::keypool::stored;
    let db = tollgate::store::open(&config.database_url()).await?;
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
                println!("{}: {added} added, {updated} updated", c.name);
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
            let records = stored::parse_import(&text)?;
            let (added, updated) = stored::import(&db, &master()?, &channel, &records).await?;
            println!("{added} added, {updated} updated");
        }
        UpstreamCommand::Export { channel } => {
            let keys = stored::export(&db, &master()?, channel.as_deref()).await?;
            println!("{}", serde_json::to_string_pretty(&keys)?);
        }
        UpstreamCommand::List => {
            for (id, channel, prefix, weight, priority) in stored::list(&db).await? {
                println!("{id}\t{channel}\t{prefix}…\tweight {weight}\tpriority {priority}");
            }
        }
        UpstreamCommand::Remove { id } => {
            if !stored::remove(&db, id, None).await? {
                anyhow::bail!("no stored upstream key {id}");
            }
            println!("removed {id}");
        }
    }
    Ok(())
}
