//! The clock of the plugins' time limit: wasmtime's epoch, advanced every `TICK` by a thread of
//! its own (`runtime` sets each entry's deadline a tick ahead and counts the ticks spent inside
//! the plugin). An idle gateway should not wake a hundred times a second for it: the thread
//! sleeps once no plugin can be running, and the next entry wakes it.
//!
//! Invariants:
//! - While a plugin may run, the epoch advances every `TICK`. A plugin's code runs only while
//!   its entry's future is polled, and every poll first marks the ticker busy (`Running`); the
//!   ticker sleeps only when no poll has marked it for `idle` (the entries' wall-clock deadline
//!   and a second more). One poll runs the plugin until its next tick at most (the tick's
//!   callback yields), so a plugin never runs with the clock stopped.
//! - No poll goes unseen by a sleeping ticker: the poll publishes its mark, then reads
//!   `asleep`; the ticker publishes `asleep`, then reads the mark again; both sequentially
//!   consistent, so one of them sees the other (and an `unpark` before the `park` is kept).
//! - The thread ends with the last runtime: it holds the engine weakly, and the ticker only
//!   while awake; the ticker's drop wakes it.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock, Weak};
use std::task::{Context, Poll};
use std::time::Duration;
use tollgate_base::metrics::METRICS;
use wasmtime::EngineWeak;

pub(super) const TICK: Duration = Duration::from_millis(10);

/// A sleeping ticker wakes on its own this often (a backstop: every poll that needs it wakes
/// it at once).
const BACKSTOP: Duration = Duration::from_secs(60);

pub(super) struct Ticker {
    /// Ticks since the start; written by the ticker's thread only.
    tick: AtomicU64,
    /// The tick of the latest poll of an entry.
    busy_at: AtomicU64,
    asleep: AtomicBool,
    /// Ticks without a poll after which the ticker sleeps.
    idle: u64,
    thread: OnceLock<std::thread::Thread>,
}

impl Ticker {
    /// Starts the ticker of `engine`; it sleeps after `deadline` (the longest an entry lasts)
    /// and a second more without an entry's poll, and ends when the engine or the last
    /// reference to the ticker is dropped.
    pub(super) fn start(engine: EngineWeak, deadline: Duration) -> std::io::Result<Arc<Ticker>> {
        let idle = (deadline + Duration::from_secs(1)).as_millis().div_ceil(TICK.as_millis()) as u64;
        let ticker = Arc::new(Ticker {
            tick: AtomicU64::new(0),
            busy_at: AtomicU64::new(0),
            asleep: AtomicBool::new(false),
            idle,
            thread: OnceLock::new(),
        });
        let weak = Arc::downgrade(&ticker);
        let handle = std::thread::Builder::new().name("wasm-epoch".into()).spawn(move || run(&weak, &engine))?;
        let _ = ticker.thread.set(handle.thread().clone());
        Ok(ticker)
    }

    /// Marks the ticker busy now, and wakes it if it sleeps: before a plugin's code may run.
    fn busy(&self) {
        let now = self.tick.load(Ordering::Relaxed);
        if self.busy_at.load(Ordering::Relaxed) != now {
            self.busy_at.store(now, Ordering::SeqCst);
        }
        if self.asleep.load(Ordering::SeqCst) {
            if let Some(thread) = self.thread.get() {
                thread.unpark();
            }
        }
    }

    #[cfg(test)]
    fn sleeping(&self) -> bool {
        self.asleep.load(Ordering::SeqCst)
    }
}

impl Drop for Ticker {
    fn drop(&mut self) {
        if let Some(thread) = self.thread.get() {
            thread.unpark(); // to end
        }
    }
}

/// The ticker's thread. It holds the ticker only while awake, so that dropping the last
/// runtime drops the ticker, which wakes it to end.
fn run(ticker: &Weak<Ticker>, engine: &EngineWeak) {
    loop {
        std::thread::sleep(TICK);
        let (Some(mut t), Some(e)) = (ticker.upgrade(), engine.upgrade()) else { return };
        e.increment_epoch();
        drop(e);
        let now = t.tick.fetch_add(1, Ordering::Relaxed) + 1;
        METRICS.plugin_clock_ticks.fetch_add(1, Ordering::Relaxed);
        if now - t.busy_at.load(Ordering::SeqCst) <= t.idle {
            continue;
        }
        t.asleep.store(true, Ordering::SeqCst);
        while now - t.busy_at.load(Ordering::SeqCst) > t.idle {
            drop(t);
            std::thread::park_timeout(BACKSTOP);
            let Some(again) = ticker.upgrade() else { return };
            t = again;
        }
        t.asleep.store(false, Ordering::SeqCst);
    }
}

pin_project_lite::pin_project! {
    /// An entry's future, which marks the ticker busy at each poll (see the module's
    /// invariants).
    pub(super) struct Running<'a, F> {
        ticker: &'a Ticker,
        #[pin]
        entry: F,
    }
}

impl<'a, F> Running<'a, F> {
    pub(super) fn new(ticker: &'a Ticker, entry: F) -> Self {
        Running { ticker, entry }
    }
}

impl<F: Future> Future for Running<'_, F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let this = self.project();
        this.ticker.busy();
        this.entry.poll(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn waits_for(what: &str, mut done: impl FnMut() -> bool) {
        let t = std::time::Instant::now();
        while !done() {
            assert!(t.elapsed() < Duration::from_secs(10), "waited 10 s for {what}");
            std::thread::sleep(TICK);
        }
    }

    #[test]
    fn the_ticker_sleeps_when_no_plugin_runs_and_an_entry_wakes_it() {
        let engine = wasmtime::Engine::default();
        let ticker = Ticker::start(engine.weak(), Duration::ZERO).unwrap();
        // No entry for a second: asleep, and the clock stands still.
        waits_for("the ticker to sleep", || ticker.sleeping());
        let stopped = ticker.tick.load(Ordering::SeqCst);
        std::thread::sleep(TICK * 5);
        assert_eq!(ticker.tick.load(Ordering::SeqCst), stopped, "a sleeping ticker ticked");
        // An entry's poll wakes it, and it ticks again.
        futures_util::FutureExt::now_or_never(Running::new(&ticker, async {})).unwrap();
        waits_for("the ticker to tick again", || ticker.tick.load(Ordering::SeqCst) > stopped + 2);
        assert!(!ticker.sleeping());
    }

    #[test]
    fn a_sleeping_ticker_ends_with_the_last_runtime() {
        let engine = wasmtime::Engine::default();
        let ticker = Ticker::start(engine.weak(), Duration::ZERO).unwrap();
        waits_for("the ticker to sleep", || ticker.sleeping());
        let weak = Arc::downgrade(&ticker);
        drop(ticker);
        // A sleeping thread holds the ticker weakly: the last runtime's drop frees it, and
        // wakes the thread to end (it holds the engine weakly too, so the engine is all this
        // test still has).
        drop(engine);
        assert!(weak.upgrade().is_none(), "the sleeping ticker's thread held it");
    }
}
