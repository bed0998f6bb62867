//! `tollgate tasks list`: every user's asynchronous tasks, newest first, filtered.

use super::{json, table};
use anyhow::Result;
use clap::Subcommand;
use tollgate::config::Config;
use tollgate_store::tasks::{search, Filter};

#[derive(Subcommand)]
pub enum TasksCommand {
    /// List tasks: id, status, progress, user, channel, model, held, charge, created.
    List {
        /// Only tasks in this status.
        #[arg(long, value_parser = ["queued", "in_progress", "succeeded", "failed", "expired", "cancelled"])]
        status: Option<String>,
        /// Only this user's tasks (its id, as `users list` shows it).
        #[arg(long)]
        user_id: Option<i64>,
        /// Only tasks of this channel.
        #[arg(long)]
        channel: Option<String>,
        /// Only tasks of this plugin.
        #[arg(long)]
        plugin: Option<String>,
        /// At most this many (1 to 1000).
        #[arg(long, default_value_t = 100)]
        limit: i64,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
}

pub async fn run(config: &Config, command: TasksCommand) -> Result<()> {
    let TasksCommand::List { status, user_id, channel, plugin, limit, json: as_json } = command;
    let db = tollgate_store::open(&config.database_url()).await?;
    let tasks = search(&db, &Filter { status, user_id, channel, plugin, limit }).await?;
    if as_json {
        return json(&tasks.iter().map(tollgate_engine::tasks::view).collect::<Vec<_>>());
    }
    let money = |m: i64| tollgate_base::money::format(m);
    table(
        &["id", "status", "progress", "user", "channel", "model", "held", "charge", "created (unix)"],
        tasks.into_iter().map(|t| {
            vec![
                t.id,
                t.status,
                t.progress.map_or_else(|| "-".into(), |p| format!("{p}%")),
                t.user_id.to_string(),
                t.channel,
                t.model,
                money(t.reserved_micros),
                t.charge_micros.map_or_else(|| "-".into(), money),
                t.created_at.to_string(),
            ]
        }),
    );
    Ok(())
}
