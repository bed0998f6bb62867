//! Instances made ahead of their calls, and the count of calls in flight.
//!
//! Every call gets an instance of its own, fresh, which no other call ever enters. Making one
//! (the store, the instance) and freeing it (resetting the memory it dirtied) is most of what
//! the runtime costs a call; done on the call's path, the consumer waits for both. So each
//! thread keeps at most one instance made ahead, never entered: a call of its plugin takes it,
//! and when the call ends a task frees the call's store and, if the thread's slot is empty,
//! makes the next instance of that call's plugin. The task yields first, so it runs after the
//! tasks already woken: usually the connection's write of the answer among them (not when the
//! call still awaits the database after its plugin, e.g. an idempotent answer being stored).
//! The work is the same; the consumer usually no longer waits for it. A thread that runs
//! several plugins keeps the instance of the first it ran after its slot emptied; calls of
//! the others make theirs at call time, as before (replacing it each time would make and
//! throw away an instance per call).
//!
//! Invariants:
//! - An instance serves one call at most: a ready one is taken out of its thread's slot and
//!   never put back; a call's store is only ever dropped.
//! - A ready instance is matched to its component by the identity of the `Pre` it was made
//!   from (its shared allocation, held weakly so that it cannot be reused while it waits):
//!   the exports a call reaches by index are that component's. One whose plugin was unloaded
//!   is dropped when its thread next starts a call (until then it keeps the old component's
//!   code alive; at most one per thread).
//! - The instance pool has room for `slots + MAX_READY + MAX_FREEING + LOADS`: calls are
//!   admitted up to `slots` (`max_concurrent_calls`) and counted until they end; at most
//!   `MAX_READY` instances wait in the process, and at most `MAX_FREEING` ended calls' stores
//!   wait to be freed (past that, a store is freed where its call ends); plugin loads and
//!   settings checks (`describe`, `check-settings`: one scan at a time, one store each) have
//!   `LOADS`. None can starve another, and a call that ends lets the next one in at once, as
//!   when its store was freed in place. A store waiting to be freed still holds the memory
//!   its call dirtied: at most `MAX_FREEING` such stores.

use super::runtime::{CallState, PreParts};
use std::cell::RefCell;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Weak};
use tollgate_base::boxed;
use wasmtime::component::Instance;
use wasmtime::Store;

/// The most instances waiting ready in the process: a bound, not a target (a thread holds at
/// most one, and only threads that run calls make any: one request worker per core and the
/// main runtime's threads).
pub(super) const MAX_READY: u32 = 64;
/// The most stores of ended calls waiting to be freed after their answers.
pub(super) const MAX_FREEING: u32 = 64;
/// Room for the stores of plugin loads and settings checks, which are not calls.
pub(super) const LOADS: u32 = 4;

/// Calls in flight and instances waiting, shared by every clone of the runtime.
pub(super) struct Counts {
    slots: u32,
    in_flight: AtomicU32,
    ready: AtomicU32,
    freeing: AtomicU32,
}

impl Counts {
    pub(super) fn new(slots: u32) -> Arc<Counts> {
        Arc::new(Counts { slots, in_flight: AtomicU32::new(0), ready: AtomicU32::new(0), freeing: AtomicU32::new(0) })
    }

    /// Admits one call, or refuses it when `slots` are in flight (the engine answers 503). A
    /// refused call never counts, even for a moment.
    pub(super) fn admit(self: &Arc<Self>) -> anyhow::Result<Admitted> {
        if !reserve(&self.in_flight, self.slots) {
            anyhow::bail!("too many concurrent calls (max_concurrent_calls = {})", self.slots);
        }
        Ok(Admitted(self.clone()))
    }

    /// Room for one more waiting instance, if the process has fewer than `MAX_READY`.
    fn reserve_ready(self: &Arc<Self>) -> Option<Waiting> {
        reserve(&self.ready, MAX_READY).then(|| Waiting(self.clone()))
    }

    /// Room for one more store to free later, if fewer than `MAX_FREEING` wait.
    pub(super) fn reserve_freeing(self: &Arc<Self>) -> Option<Freeing> {
        reserve(&self.freeing, MAX_FREEING).then(|| Freeing(self.clone()))
    }
}

/// Adds one to `count` if it is below `max`.
fn reserve(count: &AtomicU32, max: u32) -> bool {
    count.fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| (n < max).then_some(n + 1)).is_ok()
}

/// One admitted call, counted until dropped (when the call ends).
pub(super) struct Admitted(Arc<Counts>);

impl Drop for Admitted {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

/// One instance waiting, counted until dropped.
pub(super) struct Waiting(Arc<Counts>);

impl Drop for Waiting {
    fn drop(&mut self) {
        self.0.ready.fetch_sub(1, Ordering::AcqRel);
    }
}

/// One ended call's store waiting to be freed, counted until dropped.
pub(super) struct Freeing(Arc<Counts>);

impl Drop for Freeing {
    fn drop(&mut self) {
        self.0.freeing.fetch_sub(1, Ordering::AcqRel);
    }
}

/// An instance made ahead, never entered.
struct Ready {
    of: Weak<PreParts>,
    store: Store<CallState>,
    instance: Instance,
    _counted: Waiting,
}

thread_local! {
    static READY: RefCell<Option<Ready>> = const { RefCell::new(None) };
}

/// This thread's waiting instance, if it was made from the component `pre` prepared. One of a
/// plugin that was unloaded since is dropped; one of another plugin stays.
pub(super) fn take(pre: &Arc<PreParts>) -> Option<(Store<CallState>, Instance)> {
    let ready = READY.with_borrow_mut(|slot| match slot {
        Some(r) if std::ptr::eq(r.of.as_ptr(), Arc::as_ptr(pre)) => slot.take(),
        Some(r) if r.of.strong_count() == 0 => {
            drop(slot.take());
            None
        }
        _ => None,
    })?;
    Some((ready.store, ready.instance))
}

/// Whether this thread already holds a waiting instance.
fn occupied() -> bool {
    READY.with_borrow(Option::is_some)
}

/// Makes this thread's next instance with `make`, unless it holds one already or the process
/// has `MAX_READY` waiting. `make` builds a fresh store and instantiates, entering nothing
/// but the component's instantiation; its future (kilobytes: wasmtime's) is made only when
/// needed, boxed, so that this future stays small.
pub(super) async fn refill<F>(counts: &Arc<Counts>, pre: &Arc<PreParts>, make: impl FnOnce() -> F)
where
    F: std::future::Future<Output = anyhow::Result<(Store<CallState>, Instance)>>,
{
    if occupied() {
        return;
    }
    let Some(counted) = counts.reserve_ready() else { return };
    let Ok((store, instance)) = boxed::pin(make).await else { return };
    let ready = Ready { of: Arc::downgrade(pre), store, instance, _counted: counted };
    READY.with_borrow_mut(|slot| {
        if slot.is_none() {
            *slot = Some(ready);
        }
        // else: another call's refill on this thread got there first; this one is dropped.
    });
}
