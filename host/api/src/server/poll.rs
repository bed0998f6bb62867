//! Polling before sleeping: after its last work a request worker keeps polling its sockets
//! for a short window (`worker_poll_us`) instead of sleeping at once, so a request or an
//! upstream answer that arrives meanwhile is taken without the wake-up of a sleeping thread,
//! on a core whose caches still hold the request's work. On two cores, one chat at a time
//! against a mock vendor answering in ~50 µs: 3,224 → 5,478 chats a second (held gateways,
//! wrk c=1), p50 added +239/+265 → +111/+112 µs (`tests/bench/run.sh`).
//!
//! The window adapts: while polls catch work it is whole; a poll that catches nothing ends
//! the wake-up's polling and halves the window for the next one, down to nothing, and every
//! `PROBE_EVERY`th wake-up polls the whole window to learn whether work now comes soon
//! enough. A worker whose vendors answer in hundreds of milliseconds stops polling after a
//! few wake-ups. Work is told by the thread's own CPU time, less the time since its last
//! reading: a pass during which the thread was preempted, or gave its core away, is not taken
//! for work (taken for work in wall time, it kept the window whole under load), and under
//! contention the rule errs toward sleeping. Measured beside polling off: the same CPU per
//! request at c=32 (85.3 against 85.5 µs), per stream paced 5 ms a chunk (1,014 against
//! 1,012 µs at 4 at once, 315 against 316 at 64), and when idle; a window that never shrank
//! cost 27–55% more CPU on those streams.
//!
//! A round also starts when the worker is about to sleep just after it finished an answer (its
//! body dropped by hyper: written whole, or its connection gone): a keep-alive client's next
//! request often follows within microseconds, and taken by a worker that never slept it finds
//! the code and data of the last one still in the core's caches (an idle virtual CPU gives its
//! core away, and the next request then runs cold). Those rounds have a window of their own,
//! 1 ms (`AFTER_ANSWER`), which adapts the same way, so a client that does not follow up soon
//! costs a few probes. Measured (`tests/bench/firstbyte.sh`, six rounds of 100 streams,
//! against the build before): the first streamed byte added +0.24 → +0.18 ms on average (lower
//! in 5 of 6 rounds), its p90 0.75–1.02 → 0.55–0.84 ms.
//!
//! Invariants: the poller polls only after the worker's thread woke from sleep or was about to
//! sleep after an answer, until the window passes without work it sees, and for at most
//! `LONGEST` windows (should every pass look like work, as where system calls are slow,
//! polling still ends and the window halves), so an idle worker sleeps (for windows up to
//! the setting's 1 ms: see `MAX_WORKER_POLL_US`); between idle passes it offers its core to
//! other runnable threads (`std::thread::yield_now`); a window of zero turns it off (no task
//! is started).

use std::cell::Cell;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tokio::sync::Notify;

/// A pass of the runtime that used more CPU than this ran other tasks: work came.
const WORK_SEEN: Duration = Duration::from_micros(5);
/// A window shorter than this is none.
const SHORTEST: Duration = Duration::from_micros(1);
/// One wake-up in this many polls the whole window, whatever the current one is.
const PROBE_EVERY: u32 = 32;
/// A wake-up's polling lasts at most this many whole windows (100 ms at the default).
const LONGEST: u32 = 1_000;
/// The whole window of a round after an answer, whatever `worker_poll_us` is (when polling is
/// on): a client reading a stream to its end and asking again takes a few hundred
/// microseconds, which the default window of 100 µs would miss and halve away.
const AFTER_ANSWER: Duration = Duration::from_millis(1);

/// How long the worker polls after a wake-up: the adaptive window.
#[derive(Debug)]
pub(crate) struct Window {
    max: Duration,
    current: Duration,
    wakes: u32,
}

impl Window {
    pub(crate) fn new(max: Duration) -> Window {
        Window { max, current: max, wakes: 0 }
    }

    /// The window for a wake-up: the current one, or the whole one on a probe.
    pub(crate) fn on_wake(&mut self) -> Duration {
        self.wakes = self.wakes.wrapping_add(1);
        if self.wakes.is_multiple_of(PROBE_EVERY) {
            self.max
        } else {
            self.current
        }
    }

    /// Work arrived while the worker polled: polling pays, the window is whole again.
    pub(crate) fn caught(&mut self) -> Duration {
        self.current = self.max;
        self.max
    }

    /// The window passed with nothing to do: half as long next time.
    pub(crate) fn missed(&mut self) {
        self.current /= 2;
        if self.current < SHORTEST {
            self.current = Duration::ZERO;
        }
    }
}

/// What starts a worker's round of polling.
#[derive(Default)]
pub(crate) struct Wakes {
    /// Notified by the runtime's `on_thread_unpark` hook (the thread woke from sleep), and by
    /// `before_sleep` after an answer.
    pub(crate) woke: Notify,
    /// The round is one after an answer.
    answered: AtomicBool,
}

thread_local! {
    /// An answer ended on this thread since it last went to sleep.
    static ANSWER_ENDED: Cell<bool> = const { Cell::new(false) };
}

/// The worker's `on_thread_park` hook: a thread about to sleep just after it finished an
/// answer polls instead (the poller's task is woken, so the runtime does not sleep).
pub(crate) fn before_sleep(wakes: &Wakes) {
    if ANSWER_ENDED.with(|a| a.replace(false)) {
        wakes.answered.store(true, Relaxed);
        wakes.woke.notify_one();
    }
}

/// A response body that tells the poller, when hyper drops it, that an answer ended.
pub struct Answered<B>(pub B);

impl<B> Drop for Answered<B> {
    fn drop(&mut self) {
        ANSWER_ENDED.with(|a| a.set(true));
    }
}

impl<B: hyper::body::Body + Unpin> hyper::body::Body for Answered<B> {
    type Data = B::Data;
    type Error = B::Error;
    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<hyper::body::Frame<B::Data>, B::Error>>> {
        Pin::new(&mut self.0).poll_frame(cx)
    }
    fn is_end_stream(&self) -> bool {
        self.0.is_end_stream()
    }
    fn size_hint(&self) -> hyper::body::SizeHint {
        self.0.size_hint()
    }
}

/// Starts the poller on the current worker's runtime (see `Wakes`).
pub(crate) fn start(max: Duration, wakes: Arc<Wakes>) {
    if !max.is_zero() {
        tokio::spawn(poll_after_wakes(Window::new(max), Window::new(AFTER_ANSWER), wakes));
    }
}

async fn poll_after_wakes(mut after_sleep: Window, mut after_answer: Window, wakes: Arc<Wakes>) {
    loop {
        wakes.woke.notified().await;
        let window = if wakes.answered.swap(false, Relaxed) { &mut after_answer } else { &mut after_sleep };
        let mut limit = window.on_wake();
        if limit.is_zero() {
            continue;
        }
        let mut last_work = Instant::now();
        let ends_by = last_work + window.max * LONGEST;
        // The thread's CPU time, and when it was read.
        let (mut cpu, mut cpu_read_at) = (thread_cpu(), last_work);
        // The previous pass found nothing to do.
        let mut idle = false;
        loop {
            let pass = Instant::now();
            // Every other runnable task runs, and the runtime polls its sockets (without
            // sleeping: a task is waiting), before this one is polled again.
            tokio::task::yield_now().await;
            let now = Instant::now();
            // A pass no longer than `WORK_SEEN` did no work; a longer one may have been
            // preempted: it worked if the thread's CPU time grew by more than `WORK_SEEN` on
            // top of all the time between the last reading and the pass.
            let worked = now - pass > WORK_SEEN && {
                let before = std::mem::replace(&mut cpu, thread_cpu());
                let since_reading = pass - std::mem::replace(&mut cpu_read_at, now);
                cpu.saturating_sub(before).saturating_sub(since_reading) > WORK_SEEN
            };
            if worked {
                if idle {
                    limit = window.caught();
                }
                last_work = now;
                idle = false;
            }
            if now - last_work >= limit || now >= ends_by {
                window.missed();
                break;
            }
            if !worked {
                idle = true;
                std::thread::yield_now();
            }
        }
    }
}

/// The CPU time this thread has used (a system call, unlike the clock: read only after a long
/// pass). Wall time would count the time the thread was preempted, or gave its core away, as
/// work.
fn thread_cpu() -> Duration {
    let mut t = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: `t` is a valid, writable timespec; the clock id is one Linux always has.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut t) };
    debug_assert_eq!(rc, 0);
    Duration::new(t.tv_sec as u64, t.tv_nsec as u32)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_window_halves_to_nothing_when_polling_catches_nothing_and_is_whole_when_it_does() {
        let max = Duration::from_micros(100);
        let mut w = Window::new(max);
        assert_eq!(w.on_wake(), max);
        let mut seen = Vec::new();
        for _ in 0..10 {
            w.missed();
            seen.push(w.on_wake());
        }
        assert_eq!(seen[0], Duration::from_micros(50));
        assert_eq!(seen[1], Duration::from_micros(25));
        assert_eq!(seen[6..], [Duration::ZERO; 4], "below a microsecond it stops: {seen:?}");
        assert_eq!(w.caught(), max);
        assert_eq!(w.on_wake(), max);
    }

    #[test]
    fn a_stopped_window_still_probes_the_whole_one_now_and_then() {
        let max = Duration::from_micros(100);
        let mut w = Window::new(max);
        for _ in 0..8 {
            w.missed();
        }
        let windows: Vec<Duration> = (0..PROBE_EVERY * 2).map(|_| w.on_wake()).collect();
        let probes = windows.iter().filter(|d| **d == max).count();
        assert_eq!(probes, 2);
        assert!(windows.iter().all(|d| *d == max || d.is_zero()));
    }
}
