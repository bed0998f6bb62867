//! `tollgate plugins list`: load and validate every plugin file, as `serve` would.

use super::{json, table};
use anyhow::Result;
use clap::Subcommand;
use tollgate::config::Config;

#[derive(Subcommand)]
pub enum PluginsCommand {
    /// Load and validate every plugin file; print name, version, sha256, status, last error.
    List {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
}

pub async fn run(config: &Config, command: PluginsCommand) -> Result<()> {
    let PluginsCommand::List { json: as_json } = command;
    let runtime = tollgate_engine::plugin::Runtime::new(
        config.cache_dir(),
        config.plugin_memory_limit_mb,
        config.plugin_time_limit_ms,
        config.plugin_deadline_ms,
        16,
        false,
    )?;
    let registry = tollgate_engine::plugin::PluginRegistry::new(
        runtime,
        config.plugins_dir(),
        tollgate_api::server::routes::reserved,
    );
    registry.scan().await?;
    let status = registry.status();
    if as_json {
        return json(&status);
    }
    table(
        &["file", "name", "version", "status", "sha256", "error"],
        status.into_iter().map(|s| {
            vec![
                s.file,
                s.name.unwrap_or_else(|| "-".into()),
                s.version.unwrap_or_else(|| "-".into()),
                s.status.to_string(),
                s.sha256.chars().take(12).collect(),
                s.last_error.unwrap_or_default(),
            ]
        }),
    );
    Ok(())
}
