//! Which request worker the current thread is. The HTTP server runs one single-threaded
//! runtime per worker thread, so a request, its plugin call and its upstream connection stay
//! on one thread; what keeps per-thread state (the upstream connection pools) asks `index`.
//!
//! Invariant: `index` is `Some(i)` only on the thread of worker `i`, set once when it starts;
//! every other thread (the background jobs' runtime, tests) sees `None`.

use std::cell::Cell;

thread_local! {
    static INDEX: Cell<Option<usize>> = const { Cell::new(None) };
}

/// The worker this thread is, if it is one.
pub fn index() -> Option<usize> {
    INDEX.with(Cell::get)
}

/// Marks this thread as worker `i`; called once, by the worker's thread, before it serves.
pub fn enter(i: usize) {
    INDEX.with(|c| c.set(Some(i)));
}

#[cfg(test)]
mod tests {
    #[test]
    fn only_the_marked_thread_is_a_worker() {
        assert_eq!(super::index(), None);
        std::thread::spawn(|| {
            super::enter(3);
            assert_eq!(super::index(), Some(3));
        })
        .join()
        .unwrap();
        assert_eq!(super::index(), None);
    }
}
