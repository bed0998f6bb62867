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
pub mod jobs;
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
        Some(path) => Some(billing::Billing::load(path.clone())?),
        None => None,
    };
    let keys = account::KeyCache::new();
    keys.reload(&db, billing.as_ref().map(|b| &b.wallets)).await.context("loading consumer keys")?;

    let runtime = plugin::Runtime::new(
        config.cache_dir(),
        config.plugin_memory_limit_mb,
        config.plugin_time_limit_ms,
        config.plugin_deadline_ms,
        config.max_concurrent_calls,
    )?;
    let registry = plugin::PluginRegistry::new(runtime, config.plugins_dir(), server::routes::reserved);
    registry.scan().await.with_context(|| format!("scanning {}", registry.dir().display()))?;
    let (watcher, plugin_events) = registry.watch_folder()?;
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

    let charges = billing.clone().map(|b| b as Arc<dyn store::call_log::Charges>);
    let (call_log, writer) = store::CallLog::start(db.clone(), charges);
    let listener = tokio::net::TcpListener::bind(&config.listen)
        .await
        .with_context(|| format!("cannot listen on {}", config.listen))?;
    let addr = listener.local_addr()?;
    let sessions =
        account::session::Sessions::new(config.jwt_secret.as_deref(), &config.data_dir, config.session_ttl_hours)?;
    let state = Arc::new(server::AppState::new(config, registry, keys, call_log, db.clone(), billing, sessions));
    // Settings a plugin refuses are the operator's to fix before anything is served.
    let refused = state.engine.check_settings(&state.engine.channels.load()).await;
    if !refused.is_empty() {
        anyhow::bail!("{}", refused.join("\n"));
    }
    // Stored upstream keys join their pools before the first call, then follow changes.
    keypool::stored::load_into(&db, state.config.master_key.as_ref(), &state.engine.channels.load()).await?;
    for c in state.engine.channels.load().all().iter().filter(|c| c.key_count() == 0) {
        tracing::warn!(channel = %c.name, "channel has no upstream keys: its models answer 503 until you add keys to it in the configuration file or run `tollgate upstream import --channel {}`", c.name);
    }
    let jobs = start_jobs(&state, plugin_events);
    // Tests and scripts read this line to learn the port (listen = "127.0.0.1:0" works).
    println!("tollgate listening on http://{addr}");
    tracing::info!(%addr, plugins = state.engine.registry.current().len(), "tollgate serving");
    server::serve(Arc::clone(&state), listener, shutdown_signal()).await;
    jobs.stop(Duration::from_secs(5)).await;
    drop(watcher);
    drop(state);
    // Every CallLog clone is gone once the connections and jobs are; the writer drains and ends.
    if tokio::time::timeout(Duration::from_secs(10), writer).await.is_err() {
        tracing::error!("the call log did not finish writing within 10 s");
    }
    tracing::info!("stopped");
    Ok(())
}

/// Every background job of a serving gateway (see `jobs`).
fn start_jobs(state: &Arc<server::AppState>, plugin_events: tokio::sync::mpsc::UnboundedReceiver<()>) -> jobs::Jobs {
    let mut jobs = jobs::Jobs::default();
    let refresh = Duration::from_millis(state.config.key_refresh_ms.max(50));

    let s = Arc::clone(state);
    jobs.spawn("consumer keys", move |mut stop| async move {
        let mut seen = None;
        while !stop.sleep(refresh).await {
            s.keys.refresh(&s.engine.db, s.engine.billing.as_deref(), &mut seen).await;
        }
    });
    if let Some(b) = state.engine.billing.clone() {
        jobs.every("price table", Duration::from_secs(2), move || {
            let b = Arc::clone(&b);
            async move { b.reload_if_changed() }
        });
    }
    let registry = Arc::clone(&state.engine.registry);
    jobs.spawn("plugin rescan", move |mut stop| async move {
        registry.rescan_on(plugin_events, Duration::from_secs(10), async move { stop.stopped().await }).await
    });
    let s = Arc::clone(state);
    jobs.spawn("stored upstream keys", move |mut stop| async move {
        let mut seen = None;
        while !stop.sleep(refresh.max(Duration::from_millis(200))).await {
            let channels = s.engine.channels.load_full();
            keypool::stored::sync(&s.engine.db, s.config.master_key.as_ref(), &channels, &mut seen).await;
        }
    });
    let s = Arc::clone(state);
    jobs.spawn("key balances", move |mut stop| async move {
        // Each highest-balance channel of the current set (it changes with reloads), on its
        // own schedule.
        let mut last_read: std::collections::HashMap<String, std::time::Instant> = Default::default();
        while !stop.sleep(Duration::from_millis(250)).await {
            let channels = s.engine.channels.load_full();
            for channel in channels.all().iter().filter(|c| c.strategy == config::Strategy::HighestBalance) {
                if last_read.get(&channel.name).is_none_or(|t| t.elapsed() >= channel.balance_refresh) {
                    last_read.insert(channel.name.clone(), std::time::Instant::now());
                    s.engine.read_balances(channel).await;
                }
            }
        }
    });
    let (db, days) = (state.engine.db.clone(), state.config.log_retention_days);
    jobs.spawn("housekeeping", move |mut stop| async move {
        // Hourly, from the start: expired idempotency keys; call records past the retention
        // window when one is set (the ledger is never pruned).
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
            if stop.sleep(Duration::from_secs(3600)).await {
                return;
            }
        }
    });
    #[cfg(unix)]
    match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
        Ok(mut hup) => {
            let s = Arc::clone(state);
            jobs.spawn("SIGHUP channel reload", move |mut stop| async move {
                loop {
                    tokio::select! {
                        _ = stop.stopped() => return,
                        signal = hup.recv() => if signal.is_none() { return },
                    }
                    match s.reload_channels().await {
                        Ok(channels) => tracing::info!(?channels, "channels reloaded"),
                        Err(e) => {
                            tracing::error!(error = %format!("{e:#}"), "channels not reloaded; the previous ones serve")
                        }
                    }
                }
            });
        }
        Err(_) => tracing::warn!("cannot listen for SIGHUP: channels reload only through the admin API"),
    }
    jobs
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

/// The dependency direction inside this crate, until its parts become crates of their own
/// (where Cargo enforces it): a lower module never names a higher one.
#[cfg(test)]
mod layering {
    /// module → modules it must never name.
    const RULES: &[(&str, &[&str])] = &[
        (
            "store",
            &["billing", "account", "keypool", "engine", "exchange", "plugin", "server", "surface", "admin", "jobs"],
        ),
        ("billing", &["account", "keypool", "engine", "exchange", "plugin", "server", "surface", "admin", "jobs"]),
        ("account", &["keypool", "engine", "exchange", "plugin", "server", "surface", "admin", "jobs"]),
        ("keypool", &["account", "engine", "exchange", "server", "surface", "admin", "jobs"]),
        (
            "plugin",
            &["store", "billing", "account", "keypool", "engine", "exchange", "server", "surface", "admin", "jobs"],
        ),
        ("exchange", &["account", "billing", "engine", "server", "surface", "admin", "jobs"]),
        ("engine", &["server", "surface", "admin", "jobs"]),
        ("jobs", &["server", "surface", "admin", "engine"]),
    ];

    fn sources(path: &std::path::Path, out: &mut Vec<(std::path::PathBuf, String)>) {
        if path.is_dir() {
            for entry in std::fs::read_dir(path).unwrap().flatten() {
                sources(&entry.path(), out);
            }
        } else if path.is_file() && path.extension().is_some_and(|e| e == "rs") {
            // Test modules may reach across (fixtures); the rule is for the code that ships.
            let text = std::fs::read_to_string(path).unwrap();
            let shipped = text.split("#[cfg(test)]").next().unwrap_or_default().to_string();
            out.push((path.to_path_buf(), shipped));
        }
    }

    #[test]
    fn lower_modules_never_name_higher_ones() {
        let src = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
        let mut broken = Vec::new();
        for (module, forbidden) in RULES {
            let mut files = Vec::new();
            sources(&src.join(module), &mut files);
            sources(&src.join(format!("{module}.rs")), &mut files);
            assert!(!files.is_empty(), "no sources for {module}");
            for (file, text) in files {
                for higher in *forbidden {
                    if text.contains(&format!("crate::{higher}::")) || text.contains(&format!("crate::{higher}}}")) {
                        broken.push(format!("{} names crate::{higher}", file.display()));
                    }
                }
            }
        }
        assert!(broken.is_empty(), "dependency direction broken:\n{}", broken.join("\n"));
    }
}
