//! The clock of the plugins' time limit: wasmtime's epoch, advanced every `TICK` by a thread of
//! its own (`runtime` sets each entry's deadline a tick ahead and counts the ticks spent inside
//! the plugin). An idle gateway should not wake a hundred times a second for it: once no
//! plugin can be running, the thread ticks only every `BACKSTOP`, and the next entry wakes it.
//!
//! Invariants:
//! - While a plugin may run, the epoch advances every `TICK`. A plugin's code runs only while
//!   its entry's future is polled, and every poll first marks the ticker busy (`Running`); the
//!   ticker sleeps only when no poll has marked it for `idle` (the entries' wall-clock deadline
//!   and a second more). One poll runs the plugin until its next tick at most (the tick's
//!   callback yields). This assumes no poll stalls for `idle` between its mark and the
//!   plugin's code (a thread descheduled that long); should one, the sleeping ticker still
//!   advances the epoch every `BACKSTOP`, so such a plugin is interrupted within a second and
//!   its next poll wakes the clock.
//! - No poll goes unseen by a sleeping ticker: the poll publishes its mark (`fetch_max`: a
//!   mark never goes back), then reads `asleep`; the ticker publishes `asleep`, then reads the
//!   mark again; both sequentially consistent, so one of them sees the other (and an `unpark`
//!   before the `park` is kept). A poll that finds the mark already at this tick relies on
//!   the poll that set it, which did the same.
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

/// A sleeping ticker still advances the epoch this often (see the module's invariants).
const BACKSTOP: Duration = Duration::from_secs(1);

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
    /// and a second more without an entry's poll, and ends when the last reference to the
    /// ticker is dropped (or at its next tick after the engine's).
    pub(super) fn start(engine: EngineWeak, deadline: Duration) -> std::io::Result<Arc<Ticker>> {
        let idle = (deadline + Duration::from_secs(1)).as_millis().div_ceil(TICK.as_millis()) as u64;
        Ok(Ticker::spawn(engine, idle, BACKSTOP)?.0)
    }

    /// The ticker and its thread (which `start` leaves detached).
    fn spawn(
        engine: EngineWeak,
        idle: u64,
        backstop: Duration,
    ) -> std::io::Result<(Arc<Ticker>, std::thread::JoinHandle<()>)> {
        let ticker = Arc::new(Ticker {
            tick: AtomicU64::new(0),
            busy_at: AtomicU64::new(0),
            asleep: AtomicBool::new(false),
            idle,
            thread: OnceLock::new(),
        });
        let weak = Arc::downgrade(&ticker);
        let handle =
            std::thread::Builder::new().name("wasm-epoch".into()).spawn(move || run(&weak, &engine, backstop))?;
        // Set before the thread can sleep (it sleeps only after `idle` ticks of a second or
        // more): a poll that finds it asleep has the handle to wake it.
        let _ = ticker.thread.set(handle.thread().clone());
        Ok((ticker, handle))
    }

    /// Marks the ticker busy now, and wakes it if it sleeps: before a plugin's code may run.
    fn busy(&self) {
        let now = self.tick.load(Ordering::Relaxed);
        if self.busy_at.load(Ordering::Relaxed) < now {
            self.busy_at.fetch_max(now, Ordering::SeqCst);
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

/// The ticker's thread: a tick every `TICK` while busy, every `backstop` while asleep. It
/// holds the ticker only between its pauses, so that dropping the last runtime drops the
/// ticker, which wakes it to end.
fn run(ticker: &Weak<Ticker>, engine: &EngineWeak, backstop: Duration) {
    let mut asleep = false;
    loop {
        if asleep {
            std::thread::park_timeout(backstop);
        } else {
            std::thread::sleep(TICK);
        }
        let (Some(t), Some(e)) = (ticker.upgrade(), engine.upgrade()) else { return };
        e.increment_epoch();
        drop(e);
        let now = t.tick.fetch_add(1, Ordering::Relaxed) + 1;
        METRICS.plugin_clock_ticks.fetch_add(1, Ordering::Relaxed);
        let idle = || now.saturating_sub(t.busy_at.load(Ordering::SeqCst)) > t.idle;
        asleep = idle() && {
            t.asleep.store(true, Ordering::SeqCst);
            idle()
        };
        if !asleep {
            t.asleep.store(false, Ordering::SeqCst);
        }
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

    /// A ticker that sleeps after a second without a poll, with a backstop longer than the
    /// tests wait: only a poll's wake can make it tick again in time.
    fn ticker(engine: &wasmtime::Engine) -> (Arc<Ticker>, std::thread::JoinHandle<()>) {
        Ticker::spawn(engine.weak(), 100, Duration::from_secs(3600)).unwrap()
    }

    #[test]
    fn the_ticker_sleeps_when_no_plugin_runs_and_an_entry_wakes_it() {
        let engine = wasmtime::Engine::default();
        let (ticker, _thread) = ticker(&engine);
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
    fn a_sleeping_ticker_still_advances_the_epoch_every_backstop() {
        let engine = wasmtime::Engine::default();
        let (ticker, _thread) = Ticker::spawn(engine.weak(), 10, Duration::from_millis(50)).unwrap();
        waits_for("the ticker to sleep", || ticker.sleeping());
        let asleep_at = ticker.tick.load(Ordering::SeqCst);
        waits_for("a backstop's tick", || ticker.tick.load(Ordering::SeqCst) > asleep_at + 2);
        assert!(ticker.sleeping(), "ticks of the backstop are no poll's");
    }

    #[test]
    fn a_sleeping_ticker_ends_with_the_last_runtime() {
        let engine = wasmtime::Engine::default();
        let (ticker, thread) = ticker(&engine);
        waits_for("the ticker to sleep", || ticker.sleeping());
        drop(ticker);
        let (done, ended) = std::sync::mpsc::channel();
        std::thread::spawn(move || done.send(thread.join().is_ok()));
        let ended = ended.recv_timeout(Duration::from_secs(10));
        assert_eq!(ended, Ok(true), "the sleeping ticker's thread did not end with its ticker");
    }
}
