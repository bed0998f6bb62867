//! The periodic sweep of a worker's upstream connection pools: connections idle past their
//! limit, or closed by their servers, are dropped (which closes them) even when their origin
//! is never used again, and origins left with none are forgotten.
//!
//! Invariants: a pool's sweep runs on the runtime of the thread that first used the pool
//! (a request worker's, for its own pool), once per period, and ends once the pool is dropped
//! (it holds the pool weakly); a pool starts at most one.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

/// How often a pool is swept.
pub const EVERY: Duration = Duration::from_secs(30);

/// A pool that drops its idle and closed connections when swept.
pub trait Sweep: Send + Sync + 'static {
    fn sweep(&self);
}

/// Whether a pool's sweep was started, and its period.
pub struct Sweeper {
    started: AtomicBool,
    every: Duration,
}

impl Sweeper {
    pub fn new(every: Duration) -> Sweeper {
        Sweeper { started: AtomicBool::new(false), every }
    }

    /// Starts `pool`'s sweep on this thread's runtime, unless it runs in none or the sweep
    /// was started already (one atomic load after the first time).
    pub fn start<P: Sweep>(&self, pool: &Arc<P>) {
        if self.started.load(Ordering::Acquire) {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else { return };
        if self.started.swap(true, Ordering::AcqRel) {
            return;
        }
        let (pool, every): (Weak<P>, _) = (Arc::downgrade(pool), self.every);
        runtime.spawn(async move {
            let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                match pool.upgrade() {
                    Some(pool) => pool.sweep(),
                    None => return,
                }
            }
        });
    }
}
