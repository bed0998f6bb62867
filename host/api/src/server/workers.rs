//! Request workers: one thread per core, each running its own single-threaded tokio runtime.
//! The listener hands each accepted connection to the worker with the fewest open ones, and
//! the connection lives there to its end: its requests, their plugin calls, the tasks they
//! spawn and their upstream connections (one pool per worker, `exchange::upstream`) all run
//! on that thread. A request never waits for another thread to be woken, which on two cores
//! was the largest share of the added latency.
//!
//! After its last work a worker polls a while before it sleeps (`poll`, `worker_poll_us`), and
//! longer when that work ended an answer: the connection's next request may follow at once.
//!
//! Invariants: a worker's thread is marked with its index (`tollgate_base::worker`) before
//! it serves; a worker runs until `Workers::stop`, which the server calls only after every
//! connection has ended or the grace period is over. A busy plugin cannot hold a worker: it
//! yields at every epoch tick (`plugin::runtime`).

use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::runtime::Handle;

struct Worker {
    handle: Handle,
    /// Connections open on this worker.
    open: Arc<AtomicUsize>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// The running workers.
pub struct Workers {
    workers: Vec<Worker>,
}

impl Workers {
    /// Starts `n` workers (at least one), each polling up to `poll` after its last work
    /// before it sleeps (zero: never).
    pub fn start(n: usize, poll: Duration) -> std::io::Result<Workers> {
        let mut workers = Vec::with_capacity(n.max(1));
        for i in 0..n.max(1) {
            let wakes = Arc::new(super::poll::Wakes::default());
            let (on_wake, on_sleep) = (Arc::clone(&wakes), Arc::clone(&wakes));
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .on_thread_unpark(move || on_wake.woke.notify_one())
                .on_thread_park(move || super::poll::before_sleep(&on_sleep))
                .build()?;
            let handle = rt.handle().clone();
            let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
            let thread = std::thread::Builder::new().name(format!("tollgate-worker-{i}")).spawn(move || {
                tollgate_base::worker::enter(i);
                rt.block_on(async {
                    super::poll::start(poll, wakes);
                    tokio::select! {
                        _ = stopped => {}
                        _ = keep_a_timer_due() => {}
                    }
                });
                // Whatever is still running (a call past the grace period) ends here.
                rt.shutdown_background();
            })?;
            workers.push(Worker { handle, open: Arc::default(), stop: Some(stop), thread: Some(thread) });
        }
        Ok(Workers { workers })
    }

    pub fn len(&self) -> usize {
        self.workers.len()
    }

    pub fn is_empty(&self) -> bool {
        self.workers.is_empty()
    }

    /// Runs `serve(stream)` on the worker with the fewest open connections, the stream
    /// registered with that worker's runtime. The returned future ends when the connection
    /// does (a stream the worker cannot register is dropped, closing it).
    pub fn serve<F, Fut>(&self, stream: tokio::net::TcpStream, serve: F) -> std::io::Result<impl Future<Output = ()>>
    where
        F: FnOnce(tokio::net::TcpStream) -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let worker =
            self.workers.iter().min_by_key(|w| w.open.load(Ordering::Relaxed)).expect("there is at least one worker");
        // Off the listener's runtime, onto the worker's in the task below.
        let stream = stream.into_std()?;
        let open = Arc::clone(&worker.open);
        open.fetch_add(1, Ordering::Relaxed);
        let task = worker.handle.spawn(async move {
            let _open = Decrement(open);
            match tokio::net::TcpStream::from_std(stream) {
                Ok(stream) => serve(stream).await,
                Err(e) => tracing::warn!(error = %e, "a worker could not take a connection"),
            }
        });
        Ok(async move {
            let _ = task.await;
        })
    }

    /// Stops every worker and waits for its thread; what still runs on them is dropped.
    pub fn stop(mut self) {
        for w in &mut self.workers {
            if let Some(stop) = w.stop.take() {
                let _ = stop.send(());
            }
        }
        for w in &mut self.workers {
            if let Some(thread) = w.thread.take() {
                let _ = thread.join();
            }
        }
    }
}

/// Keeps a timer due within the header-read timeout on the worker, for ever. tokio wakes its
/// driver (a write to its eventfd, then one more `epoll_wait`) whenever a timer is armed
/// earlier than every timer the driver last saw, even from the driver's own thread; hyper
/// arms its header-read timer after every response, and with no earlier timer on the worker
/// (the usual case: a call's other timers end with it) each response cost those two system
/// calls. With this timer due sooner, only its own re-arming wakes the driver, every 10 s.
async fn keep_a_timer_due() {
    const EVERY: std::time::Duration = std::time::Duration::from_secs(10);
    const _: () = assert!(EVERY.as_secs() < super::HEADER_READ_TIMEOUT.as_secs());
    loop {
        tokio::time::sleep(EVERY).await;
    }
}

struct Decrement(Arc<AtomicUsize>);

impl Drop for Decrement {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn connections_go_to_the_least_busy_worker_and_run_on_its_thread() {
        let workers = Workers::start(2, Duration::ZERO).unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let mut clients = Vec::new();
        let mut served = Vec::new();
        let (release, wait) = tokio::sync::watch::channel(false);
        for _ in 0..4 {
            clients.push(tokio::net::TcpStream::connect(addr).await.unwrap());
            let (stream, _) = listener.accept().await.unwrap();
            let (tx, rx) = tokio::sync::oneshot::channel();
            let mut wait = wait.clone();
            let done = workers
                .serve(stream, move |_stream| async move {
                    let _ = tx.send((tollgate_base::worker::index(), std::thread::current().name().map(String::from)));
                    let _ = wait.wait_for(|go| *go).await;
                })
                .unwrap();
            served.push((rx.await.unwrap(), tokio::spawn(done)));
        }
        // Two connections on each worker, each on its worker's own thread.
        let mut on = [0; 2];
        for ((index, thread), _) in &served {
            let i = index.expect("served on a worker");
            assert_eq!(thread.as_deref(), Some(format!("tollgate-worker-{i}").as_str()));
            on[i] += 1;
        }
        assert_eq!(on, [2, 2]);
        release.send_replace(true);
        for (_, done) in served {
            done.await.unwrap();
        }
        assert!(workers.workers.iter().all(|w| w.open.load(Ordering::Relaxed) == 0));
        workers.stop();
    }

    /// A connection on loopback: the client's end and the server's.
    async fn connected() -> (tokio::net::TcpStream, tokio::net::TcpStream) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = tokio::net::TcpStream::connect(listener.local_addr().unwrap()).await.unwrap();
        (client, listener.accept().await.unwrap().0)
    }

    /// How many times the current thread has slept (Linux counts a wait as a voluntary
    /// context switch; being preempted or yielding is not one).
    fn sleeps_of_this_thread() -> u64 {
        let status = std::fs::read_to_string("/proc/thread-self/status").unwrap();
        let line = status.lines().find_map(|l| l.strip_prefix("voluntary_ctxt_switches:")).unwrap();
        line.trim().parse().unwrap()
    }

    /// The pings' server side: b'p' a ping, echoed (then `after_ping`); b'?' the round's
    /// verdict, b'y' when this thread slept for fewer than a quarter of the round's `pings`;
    /// anything else ends. Returns how many rounds were quiet.
    async fn answer_pings(stream: &mut tokio::net::TcpStream, pings: u64, after_ping: impl Fn()) -> usize {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut byte = [0u8; 1];
        let mut round_sleeps = None;
        let mut quiet_rounds = 0;
        loop {
            stream.read_exact(&mut byte).await.unwrap();
            match byte[0] {
                b'p' => {
                    round_sleeps.get_or_insert_with(sleeps_of_this_thread);
                    stream.write_all(&byte).await.unwrap();
                    after_ping();
                }
                b'?' => {
                    let slept = sleeps_of_this_thread() - round_sleeps.take().unwrap();
                    let quiet = slept < pings / 4;
                    quiet_rounds += usize::from(quiet);
                    stream.write_all(if quiet { b"y" } else { b"n" }).await.unwrap();
                }
                _ => return quiet_rounds,
            }
        }
    }

    /// The pings' client side: rounds of `pings` pings, each sent `pause` after the last
    /// answer, a tenth of a second apart, until a round is quiet or `rounds` were tried; then
    /// the end. Returns whether a round was quiet.
    async fn ask_pings(client: &mut tokio::net::TcpStream, pings: u64, rounds: usize, pause: Duration) -> bool {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut byte = [0u8; 1];
        let mut quiet = false;
        for _ in 0..rounds {
            for _ in 0..pings {
                client.write_all(b"p").await.unwrap();
                client.read_exact(&mut byte).await.unwrap();
                if !pause.is_zero() {
                    std::thread::sleep(pause);
                }
            }
            client.write_all(b"?").await.unwrap();
            client.read_exact(&mut byte).await.unwrap();
            if &byte == b"y" {
                quiet = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        client.write_all(b"e").await.unwrap();
        quiet
    }

    /// A worker that just finished an answer polls for the connection's next request before
    /// it sleeps, however short its window after a wake-up: pings asked 300 µs after each
    /// answer (its window after a wake-up, 1 µs, never catches them) are taken without
    /// sleeping for most of them. Tried in rounds as the test below; a worker that sleeps once
    /// an answer ended fails them all.
    #[tokio::test]
    async fn a_worker_that_finished_an_answer_polls_for_the_next_request() {
        const PINGS: u64 = 100;
        const ROUNDS: usize = 30;
        let workers = Workers::start(1, Duration::from_micros(1)).unwrap();
        let (mut client, stream) = connected().await;
        let done = workers
            .serve(stream, move |mut stream| async move {
                // What hyper does once it wrote a response's body whole.
                answer_pings(&mut stream, PINGS, || drop(super::super::poll::Answered(()))).await;
            })
            .unwrap();
        let quiet = ask_pings(&mut client, PINGS, ROUNDS, Duration::from_micros(300)).await;
        done.await;
        workers.stop();
        assert!(
            quiet,
            "in no round of {PINGS} pings, each 300 µs after an answer, did the worker sleep fewer than {} times",
            PINGS / 4
        );
    }

    /// Pings answered back to back keep a polling worker awake: it sleeps for fewer than a
    /// quarter of them. The machine may be busy with other tests (the poller, by design, then
    /// errs toward sleeping): a round of pings that slept more is tried again, up to `ROUNDS`
    /// rounds a tenth of a second apart; a poller that does not poll fails them all. Once the
    /// pings stop, the worker sleeps.
    #[tokio::test]
    async fn a_polling_worker_takes_requests_that_come_soon_without_sleeping_and_sleeps_when_idle() {
        const PINGS: u64 = 200;
        const ROUNDS: usize = 30;
        let workers = Workers::start(1, Duration::from_millis(1)).unwrap();
        let (mut client, stream) = connected().await;
        let (tx, rx) = tokio::sync::oneshot::channel();
        let done = workers
            .serve(stream, move |mut stream| async move {
                let quiet_rounds = answer_pings(&mut stream, PINGS, || ()).await;
                // With nothing to do the poller stops and the thread sleeps: after a window
                // that catches nothing, or, should every pass look like work (slow system
                // calls, a contended machine), after `LONGEST` windows (1 s here). Waited for
                // in steps, up to twice that.
                let before = sleeps_of_this_thread();
                for _ in 0..200 {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    if sleeps_of_this_thread() > before {
                        break;
                    }
                }
                let _ = tx.send((quiet_rounds, sleeps_of_this_thread() - before));
            })
            .unwrap();
        ask_pings(&mut client, PINGS, ROUNDS, Duration::ZERO).await;
        let (quiet_rounds, idle) = rx.await.unwrap();
        done.await;
        workers.stop();
        assert_eq!(
            quiet_rounds,
            1,
            "in no round of {PINGS} pings did the polling worker sleep fewer than {} times",
            PINGS / 4
        );
        assert!(idle >= 1, "an idle worker sleeps");
    }
}
