//! Every background loop of a serving gateway runs here, under one shutdown signal: the
//! consumer key cache, the price table, plugin rescans, stored upstream keys, key balances,
//! the task poller, housekeeping and SIGHUP channel reloads. The modules they drive expose one step each
//! (`refresh`, `reload_if_changed`, `scan`, ...) and own no loop; the call log's writer is
//! the one task outside, because it must outlive the jobs to drain the last charges.
//!
//! Invariants: each job checks the signal between steps and returns when it flips;
//! `Jobs::stop` flips it and waits for every job (bounded), so shutdown never leaves a loop
//! running against a closing database.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tollgate_api::admin;
use tollgate_api::server::Api;
use tollgate_engine::keypool::{self, config::Strategy};
use tollgate_engine::tasks;
use tollgate_store as store;

/// The shutdown signal as a job sees it.
#[derive(Clone)]
pub struct Stop(watch::Receiver<bool>);

impl Stop {
    /// Waits `period`; true when the gateway is stopping (the job returns).
    pub async fn sleep(&mut self, period: Duration) -> bool {
        if *self.0.borrow() {
            return true;
        }
        tokio::select! {
            changed = self.0.changed() => changed.is_err() || *self.0.borrow(),
            _ = tokio::time::sleep(period) => *self.0.borrow(),
        }
    }

    /// Resolves when the gateway is stopping.
    pub async fn stopped(&mut self) {
        while !*self.0.borrow() {
            if self.0.changed().await.is_err() {
                return;
            }
        }
    }
}

pub struct Jobs {
    stop: watch::Sender<bool>,
    running: Vec<(&'static str, JoinHandle<()>)>,
}

impl Default for Jobs {
    fn default() -> Self {
        Jobs { stop: watch::channel(false).0, running: Vec::new() }
    }
}

impl Jobs {
    /// Starts a job; it gets the shutdown signal and must return once it flips.
    pub fn spawn<F, Fut>(&mut self, name: &'static str, job: F)
    where
        F: FnOnce(Stop) -> Fut,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let stop = Stop(self.stop.subscribe());
        self.running.push((name, tokio::spawn(job(stop))));
    }

    /// Runs `step` every `period` (the first after one period) until shutdown.
    pub fn every<F, Fut>(&mut self, name: &'static str, period: Duration, mut step: F)
    where
        F: FnMut() -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        self.spawn(name, move |mut stop| async move {
            while !stop.sleep(period).await {
                step().await;
            }
        });
    }

    /// Signals every job and waits for it (each at most `grace`).
    pub async fn stop(self, grace: Duration) {
        let _ = self.stop.send(true);
        for (name, job) in self.running {
            if tokio::time::timeout(grace, job).await.is_err() {
                tracing::warn!(job = name, "a background job did not stop in time");
            }
        }
    }
}

/// What the jobs are told by the configuration.
pub struct Settings {
    /// How often the consumer keys are read again.
    pub refresh: Duration,
    pub log_retention_days: Option<u32>,
    pub archive_retention_days: Option<u32>,
    /// Whether this node polls tasks.
    pub poll_tasks: bool,
}

/// How long the progress feed waits for a wake before it reads the events on its own (a
/// notification lost, another node on SQLite).
const FEED_EVERY: Duration = Duration::from_secs(2);

/// Starts every background job of a serving gateway.
pub fn start(state: &Arc<Api>, plugin_events: tokio::sync::mpsc::UnboundedReceiver<()>, settings: Settings) -> Jobs {
    let Settings { refresh, log_retention_days, archive_retention_days, poll_tasks } = settings;
    let mut jobs = Jobs::default();

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
            keypool::stored::sync(&s.engine.db, s.engine.master_key.as_ref(), &channels, &mut seen).await;
        }
    });
    let s = Arc::clone(state);
    jobs.spawn("key balances", move |mut stop| async move {
        // Each highest-balance channel of the current set (it changes with reloads), on its
        // own schedule.
        let mut last_read: std::collections::HashMap<String, std::time::Instant> = Default::default();
        while !stop.sleep(Duration::from_millis(250)).await {
            let channels = s.engine.channels.load_full();
            for channel in channels.all().iter().filter(|c| c.strategy == Strategy::HighestBalance) {
                if last_read.get(&channel.name).is_none_or(|t| t.elapsed() >= channel.balance_refresh) {
                    last_read.insert(channel.name.clone(), std::time::Instant::now());
                    if let Err(e) = s.engine.read_balances(channel).await {
                        tracing::warn!(channel = %channel.name, "strategy highest-balance: {e}; keys take turns instead");
                    }
                }
            }
        }
    });
    let s = Arc::clone(state);
    jobs.spawn("progress feed", move |mut stop| async move {
        let mut wakes = store::tasks::events::Wakes::open(&s.engine.db).await;
        let mut pruned = std::time::Instant::now();
        loop {
            tokio::select! {
                _ = stop.stopped() => return,
                _ = wakes.next(FEED_EVERY) => {}
            }
            s.engine.progress.round().await;
            if pruned.elapsed() >= Duration::from_secs(60) {
                pruned = std::time::Instant::now();
                s.engine.progress.prune().await;
            }
        }
    });
    let s = Arc::clone(state);
    jobs.spawn("task poller", move |mut stop| async move {
        if !poll_tasks {
            return;
        }
        // A name for this node's leases: unique per process.
        let node = format!("node-{:016x}", rand::random::<u64>());
        loop {
            // After a full round more may be due: poll again at once.
            let polled = s.engine.poll_tasks(&node).await;
            let pause = if polled >= tasks::BATCH { Duration::ZERO } else { Duration::from_millis(500) };
            if stop.sleep(pause).await {
                return;
            }
        }
    });
    let s = Arc::clone(state);
    jobs.spawn("task callbacks", move |mut stop| async move {
        loop {
            let key_of = |user_id: i64| s.sessions.webhook_secret(user_id).into_bytes();
            let sent = s.engine.deliver_callbacks(&key_of).await;
            let pause = if sent >= tasks::BATCH { Duration::ZERO } else { Duration::from_millis(500) };
            if stop.sleep(pause).await {
                return;
            }
        }
    });
    let (db, days) = (state.engine.db.clone(), log_retention_days);
    let s = Arc::clone(state);
    jobs.spawn("housekeeping", move |mut stop| async move {
        // Hourly, from the start: expired idempotency keys; call records past the retention
        // window when one is set (the ledger is never pruned); archived files past theirs, and
        // those no task names.
        loop {
            if let Some(days) = archive_retention_days {
                let before = store::now_unix() - i64::from(days) * 86_400;
                match s.engine.expire_archive(before).await {
                    Ok(n) if n > 0 => tracing::info!(removed = n, days, "archive retention"),
                    Ok(_) => {}
                    Err(e) => tracing::warn!(error = %format!("{e:#}"), "archive retention failed"),
                }
                let (dir, before_day) = (s.engine.archive.speech_dir.clone(), before.div_euclid(86_400));
                let expired =
                    tokio::task::spawn_blocking(move || tollgate_engine::archive::speech::expire(&dir, before_day))
                        .await;
                if let Ok(n @ 1..) = expired {
                    tracing::info!(removed_days = n, days, "speech archive retention");
                }
            }
            match s.engine.sweep_archive().await {
                Ok(n) if n > 0 => tracing::info!(deleted = n, "archive files no task names"),
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %format!("{e:#}"), "sweeping the archive failed"),
            }
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};
    use std::sync::Arc;

    #[tokio::test]
    async fn every_job_steps_until_the_one_signal_then_stops() {
        let mut jobs = Jobs::default();
        let steps = Arc::new(AtomicU32::new(0));
        let counted = Arc::clone(&steps);
        jobs.every("count", Duration::from_millis(5), move || {
            let counted = Arc::clone(&counted);
            async move {
                counted.fetch_add(1, Ordering::Relaxed);
            }
        });
        let waited = Arc::new(AtomicU32::new(0));
        let flag = Arc::clone(&waited);
        jobs.spawn("wait", move |mut stop| async move {
            stop.stopped().await;
            flag.store(1, Ordering::Relaxed);
        });
        while steps.load(Ordering::Relaxed) < 3 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        jobs.stop(Duration::from_secs(5)).await;
        let after = steps.load(Ordering::Relaxed);
        tokio::time::sleep(Duration::from_millis(30)).await;
        assert_eq!(steps.load(Ordering::Relaxed), after, "no step after stop");
        assert_eq!(waited.load(Ordering::Relaxed), 1, "a waiting job saw the signal");
    }
}
