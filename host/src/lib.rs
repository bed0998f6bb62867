//! Tollgate: a multi-vendor AI API gateway whose vendor adapters are WebAssembly components.
//!
//! This crate is the binary and the composition root: the configuration (`config`), the
//! command line (`src/cli`), logging, and every background job (`jobs`), wired around the
//! crates that do the work, in one direction (Cargo refuses cycles):
//!
//! `tollgate-base` (money, stream framing, metrics) ← `tollgate-store` (the database, the
//! call-log writer) ← `tollgate-engine` (accounts, billing, key pools, plugins, the call
//! pipeline below HTTP) ← `tollgate-api` (the route table, authentication, the surfaces) ←
//! this crate.

pub mod config;
pub mod jobs;
pub mod logging;

use anyhow::{Context, Result};
use std::sync::Arc;
use std::time::Duration;
use tollgate_api::server::{self, Api, ApiSettings, ChannelSource};
use tollgate_engine::keypool::config::ChannelConfig;
use tollgate_engine::{account, billing, exchange, keypool, plugin, Engine};
use tollgate_store as store;

/// This running program, for the child processes `serve` starts (`tollgate compile-plugin`):
/// on Linux the file it was started from even if an upgrade has replaced it on disk since.
fn this_program() -> Result<std::path::PathBuf> {
    let proc_self = std::path::Path::new("/proc/self/exe");
    if proc_self.exists() {
        return Ok(proc_self.to_path_buf());
    }
    std::env::current_exe().context("finding this program's path")
}

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
        config.plugin_perf_map,
    )?;
    // Profiled, plugins compile here: valgrind cannot start this program again as the child
    // (perf alone would not need it; one switch keeps profiling one setting).
    let runtime = if config.plugin_perf_map { runtime } else { runtime.compile_in_child(this_program()?) };
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
    let (call_log, writer) = store::CallLog::start(db.clone(), charges, config.call_log_queue);
    let listener = tokio::net::TcpListener::bind(&config.listen)
        .await
        .with_context(|| format!("cannot listen on {}", config.listen))?;
    let addr = listener.local_addr()?;
    let sessions =
        account::session::Sessions::new(config.jwt_secret.as_deref(), &config.data_dir, config.session_ttl_hours)?;
    let key_refresh = Duration::from_millis(config.key_refresh_ms.max(50));
    let log_retention_days = config.log_retention_days;
    let workers =
        server::workers::Workers::start(config.request_workers(), Duration::from_micros(config.worker_poll_us))
            .context("starting the request workers")?;
    let trust = config.trust()?;
    let engine = Engine {
        registry,
        channels: arc_swap::ArcSwap::from_pointee(keypool::Channels::default()),
        upstream: exchange::Upstream::new(
            workers.len(),
            Duration::from_millis(config.connect_timeout_ms),
            Duration::from_millis(config.upstream_timeout_ms),
            Duration::from_millis(config.stream_idle_timeout_ms),
            trust.clone(),
        ),
        billing,
        call_log,
        db: db.clone(),
        stream_write_timeout: Duration::from_millis(config.stream_write_timeout_ms),
        key_probe_after: Duration::from_millis(config.key_probe_after_ms),
        master_key: config.master_key.clone(),
        // At most ten years: `now + ttl` never overflows.
        task_ttl_secs: config.task_ttl_secs.min(10 * 365 * 86_400) as i64,
        // Rounds are half a second apart.
        task_polls_per_round: (config.task_polls_per_second as usize).div_ceil(2).max(1),
        task_max_open_per_user: i64::from(config.task_max_open_per_user),
        submitting: Default::default(),
        // A minute to a day.
        progress: Arc::new(tollgate_engine::tasks::feed::Feed::new(
            db.clone(),
            config.progress_replay_secs.clamp(60, 86_400) as i64,
        )),
        prefetch: {
            let p = &config.speech_prefetch;
            Arc::new(tollgate_engine::prefetch::Prefetch::new(tollgate_engine::prefetch::Settings {
                model: p.model.clone().filter(|m| !m.is_empty()),
                voice: p.voice.clone(),
                format: p.format.to_ascii_lowercase(),
                by_default: p.by_default,
                concurrency: p.concurrency.clamp(1, 64),
                wait: Duration::from_millis(p.wait_ms.min(600_000)),
                limits: tollgate_engine::prefetch::cache::Limits {
                    entries: p.cache_entries.clamp(1, 1_000_000),
                    bytes: p.cache_bytes,
                    ttl: Duration::from_secs(p.cache_ttl_secs.clamp(1, 7 * 86_400)),
                },
            }))
        },
        archive: Arc::new(
            tollgate_engine::archive::Archive::open(
                tollgate_engine::archive::Settings {
                    dir: config.archive_dir(),
                    remote: config.archive_s3_bucket.as_ref().map(|bucket| store::archive::Remote {
                        bucket: bucket.clone(),
                        prefix: config.archive_s3_prefix.clone(),
                        endpoint: config.archive_s3_endpoint.clone(),
                        region: config.archive_s3_region.clone(),
                        ca_pem: trust.added_pem().to_vec(),
                    }),
                    max_bytes: config.archive_max_bytes,
                    deadline: Duration::from_secs(config.archive_download_timeout_secs.clamp(1, 86_400)),
                    connect_timeout: Duration::from_millis(config.connect_timeout_ms),
                    idle_timeout: Duration::from_millis(config.stream_idle_timeout_ms),
                    rules: tollgate_engine::archive::guard::Rules {
                        allow_hosts: config.fetch_allow_hosts.clone(),
                        private_hosts: config.fetch_allow_private_hosts.clone(),
                    },
                    webhook_hosts: config.webhook_allow_hosts.clone(),
                    speech_dir: config.speech_archive_dir(),
                    trust: trust.clone(),
                },
                db.clone(),
            )
            .context("opening the archive")?,
        ),
    };
    // The channels, with their stored upstream keys, before the first call; settings a
    // plugin refuses are the operator's to fix before anything is served.
    engine.replace_channels(&config.channels).await?;
    // Traces, when the operator names a receiver: exported by a task of their own.
    let (tracer, trace_export) = match config.tracing.otlp()? {
        Some(otlp) => {
            tracing::info!(endpoint = %otlp.endpoint, sample_ratio = otlp.sample_ratio, "exporting traces over OTLP");
            let (tracer, export) = tollgate_engine::trace::otlp::start(otlp, trust);
            (Some(tracer), Some(tokio::spawn(export)))
        }
        None => (None, None),
    };
    let settings = ApiSettings {
        admin_token: config.admin_token.clone(),
        metrics_token: config.metrics_token.clone(),
        allow_registration: config.allow_registration,
        max_keys_per_user: config.max_keys_per_user,
        max_body_bytes: config.max_body_bytes,
        body_read_timeout_ms: config.body_read_timeout_ms,
        max_connections: config.max_connections,
        shutdown_grace_ms: config.shutdown_grace_ms,
        auth_attempts_per_minute: config.auth_attempts_per_minute,
        socket_limits: tollgate_engine::socket::SocketLimits {
            max_message_bytes: config.socket_max_message_bytes,
            idle_timeout: Duration::from_millis(config.socket_idle_timeout_ms),
            write_timeout: Duration::from_millis(config.stream_write_timeout_ms),
        },
        max_sockets: config.max_sockets,
        max_sockets_per_key: config.max_sockets_per_key,
        minimax_proxy_socket_path: config.minimax_proxy_socket_path.clone(),
        chat_socket_paths: config.chat_socket_paths.clone(),
        progress_socket_path: config.progress_socket_path.clone(),
        tracer,
    };
    let source = Box::new(ConfigFile(config.source.clone()));
    let state = Arc::new(Api::new(settings, engine, keys, sessions, source));
    for c in state.engine.channels.load().all().iter().filter(|c| c.key_count() == 0) {
        tracing::warn!(channel = %c.name, "channel has no upstream keys: its models answer 503 until you add keys to it in the configuration file or run `tollgate upstream import --channel {}`", c.name);
    }
    let jobs = jobs::start(
        &state,
        plugin_events,
        jobs::Settings {
            refresh: key_refresh,
            log_retention_days,
            archive_retention_days: config.archive_retention_days,
            poll_tasks: config.poll_tasks,
        },
    );
    // Tests and scripts read this line to learn the port (listen = "127.0.0.1:0" works).
    println!("tollgate listening on http://{addr}");
    tracing::info!(%addr, plugins = state.engine.registry.current().len(), "tollgate serving");
    server::serve(Arc::clone(&state), listener, workers, shutdown_signal()).await;
    jobs.stop(Duration::from_secs(5)).await;
    drop(watcher);
    drop(state);
    // The tracer went with the state: the exporter sends what it holds and ends.
    if let Some(export) = trace_export {
        if tokio::time::timeout(Duration::from_secs(10), export).await.is_err() {
            tracing::warn!("the trace exporter did not finish within 10 s");
        }
    }
    // Every CallLog clone is gone once the connections and jobs are; the writer drains and ends.
    if tokio::time::timeout(Duration::from_secs(10), writer).await.is_err() {
        tracing::error!("the call log did not finish writing within 10 s");
    }
    tracing::info!("stopped");
    Ok(())
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

/// Channel reloads read the configuration file again (SIGHUP, `POST /admin/channels/reload`).
struct ConfigFile(Option<std::path::PathBuf>);

impl ChannelSource for ConfigFile {
    fn load(&self) -> Result<Vec<ChannelConfig>> {
        let path = self.0.as_deref().context("this gateway was not started from a configuration file")?;
        Ok(config::Config::load(path, true)?.channels)
    }
}
