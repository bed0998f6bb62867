//! Tollgate: a multi-vendor AI API gateway whose vendor adapters are WebAssembly components.
//!
//! A request reads top to bottom: `server` (sockets, routing, limits, error bodies) →
//! `surface` (OpenAI and vendor-native routes: authenticate with `account`, read, resolve the
//! channel) → `engine` (the call pipeline below HTTP: authorize the model, claim the
//! idempotency key, reserve with `billing`, run the plugin's steps through `exchange` on a
//! `keypool` key with failover, settle and record exactly once) → `store` (the call log and
//! ledger, written off the request path). `telemetry` and `admin` watch it all.

pub mod account;
pub mod admin;
pub mod billing;
pub mod config;
pub mod engine;
pub mod exchange;
pub mod keypool;
pub mod plugin;
pub mod private_fs;
pub mod server;
pub mod store;
pub mod surface;
pub mod telemetry;

use anyhow::{Context, Result};
use std::sync::Arc;
use std::time::Duration;

/// Starts everything `tollgate serve` runs and serves until SIGTERM or Ctrl-C.
pub async fn serve(config: config::Config) -> Result<()> {
    config.check_serve_safety()?;
    let db = store::open(&config.database_url()).await?;
    let billing = match &config.pricing_file {
        Some(path) => {
            let b = billing::Billing::load(path.clone())?;
            b.watch(Duration::from_secs(2));
            Some(b)
        }
        None => None,
    };
    let keys = account::KeyCache::new();
    keys.reload(&db, billing.as_ref().map(|b| &b.wallets)).await.context("loading consumer keys")?;
    keys.refresh_forever(db.clone(), Duration::from_millis(config.key_refresh_ms), billing.clone());

    let runtime = plugin::Runtime::new(
        config.cache_dir(),
        config.plugin_memory_limit_mb,
        config.plugin_time_limit_ms,
        config.plugin_deadline_ms,
        config.max_concurrent_calls,
    )?;
    let registry = plugin::PluginRegistry::new(runtime, config.plugins_dir());
    registry.scan().await.with_context(|| format!("scanning {}", registry.dir().display()))?;
    let _watcher = registry.watch(Duration::from_secs(10))?;
    for s in registry.status() {
        if s.status == "failed" {
            tracing::error!(file = %s.file, error = s.last_error.as_deref().unwrap_or(""), "plugin not loaded");
        }
    }
    for ch in &config.channels {
        if registry.current().get(&ch.plugin).is_none() {
            tracing::warn!(channel = %ch.name, plugin = %ch.plugin, dir = %registry.dir().display(), "channel's plugin is not loaded");
        }
    }

    let (call_log, writer) = store::CallLog::start(db.clone(), billing.clone());
    // Housekeeping, hourly: expired idempotency keys; call records past the retention window
    // when one is set (the ledger is never pruned).
    {
        let db = db.clone();
        let days = config.log_retention_days;
        tokio::spawn(async move {
            loop {
                if let Err(e) = store::idempotency::prune(&db, store::now_unix()).await {
                    tracing::warn!(error = %e, "pruning idempotency keys failed");
                }
                if let Some(days) = days {
                    match admin::reports::prune(&db, days).await {
                        Ok(n) if n > 0 => tracing::info!(deleted = n, days, "call log retention"),
                        Ok(_) => {}
                        Err(e) => tracing::warn!(error = %e, "call log retention failed"),
                    }
                }
                tokio::time::sleep(Duration::from_secs(3600)).await;
            }
        });
    }
    let listener = tokio::net::TcpListener::bind(&config.listen)
        .await
        .with_context(|| format!("cannot listen on {}", config.listen))?;
    let addr = listener.local_addr()?;
    let sessions =
        account::session::Sessions::new(config.jwt_secret.as_deref(), &config.data_dir, config.session_ttl_hours)?;
    let state = Arc::new(server::AppState::new(config, registry, keys, call_log, db.clone(), billing, sessions));
    // Stored upstream keys join their pools before the first call, then follow changes.
    keypool::stored::load_into(&db, state.config.master_key.as_ref(), &state.engine.channels.load()).await?;
    for c in state.engine.channels.load().all().iter().filter(|c| c.key_count() == 0) {
        tracing::warn!(channel = %c.name, "channel has no upstream keys: its models answer 503 until you add keys to it in the configuration file or run `tollgate upstream import --channel {}`", c.name);
    }
    keypool::stored::sync_forever(&state, Duration::from_millis(state.config.key_refresh_ms.max(200)));
    keypool::balance::refresh_forever(&state);
    reload_channels_on_sighup(&state);
    // Tests and scripts read this line to learn the port (listen = "127.0.0.1:0" works).
    println!("tollgate listening on http://{addr}");
    tracing::info!(%addr, plugins = state.engine.registry.current().len(), "tollgate serving");
    server::serve(Arc::clone(&state), listener, shutdown_signal()).await;
    drop(state);
    // Every CallLog clone is gone once the connections are; the writer drains and ends.
    if tokio::time::timeout(Duration::from_secs(10), writer).await.is_err() {
        tracing::error!("the call log did not finish writing within 10 s");
    }
    tracing::info!("stopped");
    Ok(())
}

/// SIGHUP re-reads the channels from the configuration file (as `POST /admin/channels/reload`).
fn reload_channels_on_sighup(state: &Arc<server::AppState>) {
    #[cfg(unix)]
    {
        let state = Arc::downgrade(state);
        let Ok(mut hup) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) else {
            tracing::warn!("cannot listen for SIGHUP: channels reload only through the admin API");
            return;
        };
        tokio::spawn(async move {
            while hup.recv().await.is_some() {
                let Some(state) = state.upgrade() else { return };
                match state.reload_channels().await {
                    Ok(channels) => tracing::info!(?channels, "channels reloaded"),
                    Err(e) => {
                        tracing::error!(error = %format!("{e:#}"), "channels not reloaded; the previous ones serve")
                    }
                }
            }
        });
    }
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).expect("SIGTERM handler");
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}
