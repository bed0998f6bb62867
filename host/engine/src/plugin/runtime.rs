//! The wasmtime side: one `Engine` (pooling allocator, epoch interruption), components from
//! an on-disk cache (compiled by `compile`), and `PluginCall`, one consumer call's store and
//! exchange.
//!
//! Deadline: an epoch ticker (`epoch`) advances every `TICK` while a plugin may run. Before each
//! entry into the plugin the store's deadline is reset to the next tick, so only time spent
//! *inside* the plugin counts; every tick inside it the callback yields to tokio (a busy plugin
//! never blocks a worker thread) and, once the call's budget is spent, traps.
//!
//! Calls: the contract's exports are found once per component (`Exports`), and each call's
//! instance reaches them by index without the bindings' per-instance type check: their types
//! were checked when the plugin was described (the bindings check every export), and a
//! component whose description has not succeeded is never started.
//!
//! Cache: compiled components are stored as `<cache>/<sha256 of the .wasm>-<engine hash>.cwasm`.
//! Only files in that folder, written by this process or an earlier run of the same engine
//! build, are ever deserialized.

use super::bindings::{self, exports::tollgate::adapter::adapter::Manifest};
use super::epoch::{Running, Ticker, TICK};
use super::{compile, ready, wit};
use anyhow::{Context, Result};
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tollgate_base::metrics::PluginSlots;
use wasmtime::component::{Component, ComponentExportIndex, Instance, Linker, ResourceAny, ResourceTable, TypedFunc};
use wasmtime::{
    Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig, Store, StoreLimits, StoreLimitsBuilder,
    UpdateDeadline,
};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

/// The state of one call's store.
pub struct CallState {
    /// Made when the plugin first calls WASI (a signer reading the clock or drawing a nonce):
    /// most calls never do, and making it (its random sources seeded, a dozen allocations)
    /// was ~1% of a request's instructions.
    wasi: Option<WasiCtx>,
    table: ResourceTable,
    limits: StoreLimits,
    /// Ticks spent inside the plugin since the last entry.
    ticks: u64,
    max_ticks: u64,
}

impl WasiView for CallState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        let ctx = self.wasi.get_or_insert_with(|| {
            // Pinned, not left to defaults: plugins that sign requests need the real wall
            // clock and a cryptographically secure random source (and nothing else of WASI).
            WasiCtx::builder()
                .wall_clock(wasmtime_wasi::clocks::WallClock::new())
                .secure_random(wasmtime_wasi::thread_rng())
                .build()
        });
        WasiCtxView { ctx, table: &mut self.table }
    }
}

impl wit::Host for CallState {}

/// A component ready to instantiate: the bindings' view, and the exports a call uses. Clones
/// share everything: a clone is one reference count's increment (each call's end holds one).
/// Its allocation, one per `prepare`, is also the component's identity for instances made
/// ahead (`ready`).
#[derive(Clone)]
pub struct Pre(pub(super) Arc<PreParts>);

/// What a `Pre` shares with its clones.
pub struct PreParts {
    bindings: bindings::PluginPre<CallState>,
    exports: Exports,
    /// `tollgate:fast/forward`, when the plugin exports it.
    forward: Option<super::forward_bindings::ForwarderPre<CallState>>,
    /// True once `describe` instantiated it through the bindings, which checked the types of
    /// every export: only then may a call reach them unchecked.
    described: AtomicBool,
}

impl std::ops::Deref for Pre {
    type Target = PreParts;
    fn deref(&self) -> &PreParts {
        &self.0
    }
}

/// The exchange's functions, by index into the component's exports.
#[derive(Clone, Copy)]
struct Exports {
    constructor: ComponentExportIndex,
    quote: ComponentExportIndex,
    first: ComponentExportIndex,
    next: ComponentExportIndex,
    decode: ComponentExportIndex,
    finish: ComponentExportIndex,
    archived: ComponentExportIndex,
    frame: ComponentExportIndex,
}

/// One call counted among those in flight (`max_concurrent_calls`), until dropped.
pub struct Admission(ready::Admitted);

/// The interface the contract's functions are exported under.
const ADAPTER: &str = "tollgate:adapter/adapter@1.0.0";

/// The interface of the calls a plugin lets the host forward (`wit/fast/forward.wit`).
const FORWARD: &str = "tollgate:fast/forward@0.2.0";

impl Exports {
    fn find(component: &Component) -> Result<Exports> {
        let missing = || anyhow::anyhow!("the plugin does not export {ADAPTER}");
        let (_, adapter) = component.get_export(None, ADAPTER).ok_or_else(missing)?;
        let f = |name: &str| {
            component
                .get_export_index(Some(&adapter), name)
                .ok_or_else(|| anyhow::anyhow!("the plugin's {ADAPTER} does not export '{name}'"))
        };
        Ok(Exports {
            constructor: f("[constructor]exchange")?,
            quote: f("[method]exchange.quote")?,
            first: f("[method]exchange.first")?,
            next: f("[method]exchange.next")?,
            decode: f("[method]exchange.decode")?,
            finish: f("[method]exchange.finish")?,
            archived: f("[method]exchange.archived")?,
            frame: f("[method]exchange.frame")?,
        })
    }
}

/// Cheap to clone: one shared allocation, so that a clone (each call's end holds one) is one
/// reference count's increment, not one per part: request workers cloning it at once contend
/// for that count's cache line.
#[derive(Clone)]
pub struct Runtime(Arc<Shared>);

/// What a `Runtime` shares with its clones.
pub struct Shared {
    engine: Engine,
    linker: Linker<CallState>,
    cache: super::compile_cache::CompileCache,
    engine_hash: String,
    memory_limit: usize,
    slots: u32,
    max_ticks: u64,
    deadline: Duration,
    /// The program that compiles plugins in a child process (`compile`), if any.
    compiler: std::sync::OnceLock<PathBuf>,
    /// Calls in flight (at most `slots`) and instances made ahead.
    counts: Arc<ready::Counts>,
    ticker: Arc<Ticker>,
}

impl std::ops::Deref for Runtime {
    type Target = Shared;
    fn deref(&self) -> &Shared {
        &self.0
    }
}

impl Runtime {
    /// `time_limit_ms`: CPU time inside the plugin per entry (epoch ticks); `deadline_ms`:
    /// wall-clock time per entry, host waits included (a plugin blocked on a WASI clock or
    /// poll does not tick the epoch, and must not hold its slot). `perf_map`: wasmtime writes
    /// `/tmp/perf-<pid>.map`, naming the plugins' compiled functions (perf reads it;
    /// `tests/bench/instructions.sh` names callgrind's addresses with it).
    pub fn new(
        cache_dir: PathBuf,
        memory_limit_mb: usize,
        time_limit_ms: u64,
        deadline_ms: u64,
        slots: u32,
        perf_map: bool,
    ) -> Result<Runtime> {
        let memory_limit = memory_limit_mb << 20;
        let mut cfg = engine_config(memory_limit, slots);
        if perf_map {
            cfg.profiler(wasmtime::ProfilingStrategy::PerfMap);
        }
        let engine = Engine::new(&cfg).map_err(anyhow::Error::from).context("creating the wasm engine")?;
        let deadline = Duration::from_millis(deadline_ms.max(1));
        let ticker = Ticker::start(engine.weak(), deadline)?;
        let mut linker = Linker::<CallState>::new(&engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut linker)?;
        bindings::Plugin::add_to_linker::<CallState, wasmtime::component::HasSelf<CallState>>(&mut linker, |s| s)?;
        let mut h = std::collections::hash_map::DefaultHasher::new();
        engine.precompile_compatibility_hash().hash(&mut h);
        let engine_hash = format!("{:016x}", h.finish());
        let cache = super::compile_cache::CompileCache::open(cache_dir)?;
        Ok(Runtime(Arc::new(Shared {
            engine,
            linker,
            cache,
            engine_hash,
            memory_limit,
            slots,
            max_ticks: time_limit_ms.div_ceil(TICK.as_millis() as u64).max(1),
            deadline,
            compiler: std::sync::OnceLock::new(),
            counts: ready::Counts::new(slots),
            ticker,
        })))
    }

    /// Compiles plugins in a child process, `program compile-plugin`: the compiler's memory
    /// (tens of MiB for a plugin, more for a large one) is the child's and is gone when it
    /// exits, instead of staying in this process's heap; and a component that crashes the
    /// compiler fails to load instead of taking the gateway down. `program` must run
    /// `compile_plugin_main` for that subcommand. Set once, before the runtime is shared (it
    /// changes every clone).
    pub fn compile_in_child(self, program: PathBuf) -> Runtime {
        let set = self.compiler.set(program);
        debug_assert!(set.is_ok(), "compile_in_child is set once");
        self
    }

    /// Compiles (or loads from the cache) and links a component; does not run it.
    pub fn prepare(&self, wasm: &[u8], sha256: &str) -> Result<Pre> {
        let component = self.compile_cached(wasm, sha256)?;
        let exports = Exports::find(&component)?;
        let pre = self.linker.instantiate_pre(&component).map_err(anyhow::Error::from).context(
            "the plugin imports something the host does not provide (only WASI with no capabilities is linked)",
        )?;
        let forward = match component.get_export_index(None, FORWARD) {
            None => None,
            Some(_) => Some(
                super::forward_bindings::ForwarderPre::new(pre.clone())
                    .map_err(anyhow::Error::from)
                    .with_context(|| format!("the plugin's {FORWARD} is not the contract's"))?,
            ),
        };
        let bindings = bindings::PluginPre::new(pre)
            .map_err(anyhow::Error::from)
            .context("the plugin does not export tollgate:adapter/adapter@1.0.0")?;
        Ok(Pre(Arc::new(PreParts { bindings, exports, forward, described: AtomicBool::new(false) })))
    }

    fn compile_cached(&self, wasm: &[u8], sha256: &str) -> Result<Component> {
        let name = format!("{sha256}-{}.cwasm", self.engine_hash);
        if let Some(code) = self.cache.get(&name) {
            // SAFETY: `CompileCache::get` returns only code this gateway serialized with this
            // engine (its MAC, under a key only the gateway's private folder holds, matches);
            // the name carries the source's SHA-256 and the engine's compatibility hash.
            match unsafe { Component::deserialize(&self.engine, &code) } {
                Ok(c) => return Ok(c),
                Err(e) => tracing::warn!(entry = %name, error = %e, "ignoring unreadable compile cache entry"),
            }
        }
        let code = match self.compiler.get() {
            Some(program) => compile::compile_in_child(program, self.memory_limit, self.slots, wasm)?,
            None => compile::compile(&self.engine, wasm)?,
        };
        if let Err(e) = self.cache.put(&name, &code) {
            tracing::warn!(entry = %name, error = %format!("{e:#}"), "could not write the compile cache");
        }
        // SAFETY: `code` is what `compile` serialized, here or in a child running this same
        // program (see `compile_in_child`); `deserialize` also checks it was compiled for
        // this engine's version and settings.
        unsafe { Component::deserialize(&self.engine, &code) }.map_err(anyhow::Error::from)
    }

    fn new_store(&self) -> Store<CallState> {
        let state = CallState {
            wasi: None,
            table: ResourceTable::new(),
            limits: StoreLimitsBuilder::new()
                .memory_size(self.memory_limit)
                .instances(8)
                .trap_on_grow_failure(true)
                .build(),
            ticks: 0,
            max_ticks: self.max_ticks,
        };
        let mut store = Store::new(&self.engine, state);
        store.limiter(|s| &mut s.limits);
        store.epoch_deadline_callback(|mut ctx| {
            let state = ctx.data_mut();
            state.ticks += 1;
            if state.ticks > state.max_ticks {
                return Err(wasmtime::Error::msg("the plugin exceeded its time limit"));
            }
            Ok(UpdateDeadline::Yield(1))
        });
        store
    }

    /// Runs `describe()` in a fresh store, through the bindings, which check the type of every
    /// export: calls may start once it succeeded.
    pub async fn describe(&self, pre: &Pre) -> Result<Manifest> {
        let mut store = self.new_store();
        let manifest = within(&self.ticker, self.deadline, async {
            enter(&mut store);
            let plugin = pre.bindings.instantiate_async(&mut store).await.map_err(anyhow::Error::from)?;
            enter(&mut store);
            plugin.tollgate_adapter_adapter().call_describe(&mut store).await.map_err(anyhow::Error::from)
        })
        .await?;
        pre.described.store(true, Ordering::Release);
        Ok(manifest)
    }

    /// Runs `check-settings(settings)` in a fresh store: `Ok(Err(message))` is the plugin's
    /// verdict on the settings, `Err` a plugin that failed.
    pub async fn check_settings(&self, pre: &Pre, settings: &str) -> Result<Result<(), String>> {
        let mut store = self.new_store();
        within(&self.ticker, self.deadline, async {
            enter(&mut store);
            let plugin = pre.bindings.instantiate_async(&mut store).await.map_err(anyhow::Error::from)?;
            enter(&mut store);
            plugin.tollgate_adapter_adapter().call_check_settings(&mut store, settings).await.map_err(Into::into)
        })
        .await
    }

    /// Runs `tollgate:fast/forward`'s `routes(settings)` in a fresh store: the ops the host may
    /// forward for a channel with these settings (none for a plugin that does not export it).
    pub async fn forward_routes(&self, pre: &Pre, settings: &str) -> Result<Vec<super::ForwardRoute>> {
        let Some(forward) = &pre.forward else { return Ok(Vec::new()) };
        anyhow::ensure!(pre.described.load(Ordering::Acquire), "the plugin was not described before its routes");
        let mut store = self.new_store();
        within(&self.ticker, self.deadline, async {
            enter(&mut store);
            let plugin = forward.instantiate_async(&mut store).await.map_err(anyhow::Error::from)?;
            enter(&mut store);
            plugin.tollgate_fast_forward().call_routes(&mut store, settings).await.map_err(anyhow::Error::from)
        })
        .await
    }

    /// Starts one call: an instance never entered (this thread's made ahead, or a fresh one),
    /// and the plugin's exchange resource. Refused once `slots` calls are in flight.
    pub async fn start(&self, pre: &Pre, call: &wit::Call) -> Result<PluginCall> {
        let admitted = self.admit()?;
        self.start_admitted(pre, call, admitted).await
    }

    /// Admits one call, counted until the admission is dropped; refused once `slots` calls
    /// are in flight. A call the host forwards is admitted before it is sent, so that the
    /// plugin it may still need has its slot.
    pub fn admit(&self) -> Result<Admission> {
        Ok(Admission(self.counts.admit()?))
    }

    /// `start`, for a call already admitted.
    pub async fn start_admitted(&self, pre: &Pre, call: &wit::Call, admitted: Admission) -> Result<PluginCall> {
        anyhow::ensure!(pre.described.load(Ordering::Acquire), "the plugin was not described before its first call");
        let Admission(admitted) = admitted;
        let mut span = crate::trace::span("plugin.start");
        let exports = pre.exports;
        let started = async {
            let (mut store, instance) = match ready::take(&pre.0) {
                Some(made) => made,
                None => self.instantiate(pre).await?,
            };
            within(&self.ticker, self.deadline, async {
                enter(&mut store);
                // SAFETY: the type is the bindings' for this export, which `describe` checked;
                // the instance is of this `Pre`'s component (made from it here, or matched to
                // it by `ready::take`).
                let constructor = unsafe {
                    TypedFunc::<(&wit::Call,), (ResourceAny,)>::new_unchecked(func(
                        &instance,
                        &mut store,
                        exports.constructor,
                    )?)
                };
                let (exchange,) = constructor.call_async(&mut store, (call,)).await?;
                Ok((store, instance, exchange))
            })
            .await
        }
        .await;
        let (store, instance, exchange) = traced(&mut span, started)?;
        let end = End { runtime: self.clone(), pre: pre.clone() };
        Ok(PluginCall {
            live: Some((store, end)),
            instance,
            exports,
            exchange,
            deadline: self.deadline,
            _admitted: admitted,
        })
    }

    /// A fresh store and an instance of `pre`'s component in it, not yet entered by a call.
    async fn instantiate(&self, pre: &Pre) -> Result<(Store<CallState>, Instance)> {
        let mut store = self.new_store();
        let instance = within(&self.ticker, self.deadline, async {
            enter(&mut store);
            Ok(pre.bindings.instance_pre().instantiate_async(&mut store).await?)
        })
        .await?;
        Ok((store, instance))
    }

    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// The pool's slots now (`/metrics`).
    pub fn slots(&self) -> PluginSlots {
        let Some(m) = self.engine.pooling_allocator_metrics() else { return PluginSlots::default() };
        PluginSlots {
            instances: m.component_instances(),
            warm: [m.unused_warm_memories(), m.unused_warm_tables(), m.unused_warm_stacks()].map(u64::from),
            resident_bytes: [
                m.unused_memory_bytes_resident(),
                m.unused_table_bytes_resident(),
                m.unused_stack_bytes_resident().unwrap_or(0),
            ]
            .map(|b| b as u64),
        }
    }
}

/// The engine's settings: the same in the gateway and in the child that compiles for it
/// (`compile`), so the code one compiles is code the other's engine accepts.
pub(super) fn engine_config(memory_limit: usize, slots: u32) -> Config {
    let mut cfg = Config::new();
    cfg.wasm_component_model(true).epoch_interruption(true);
    let mut pool = PoolingAllocationConfig::default();
    // Room for the calls admitted, the instances made ahead, the stores freed late and the
    // plugin loads (see `ready`).
    let slots = slots + ready::MAX_READY + ready::MAX_FREEING + ready::LOADS;
    pool.total_component_instances(slots)
        // A streamed call or a socket session keeps its fiber stack to its end: one per slot
        // (wasmtime's default is 1,000, whatever the slots).
        .total_stacks(slots)
        .total_core_instances(slots * 4)
        .total_memories(slots * 2)
        .total_tables(slots * 4)
        .max_memory_size(memory_limit)
        .max_memories_per_component(4)
        .max_tables_per_component(8)
        // Reset up to 256 KiB of a freed slot's memory by writing it back instead of
        // madvise: a fresh instance per call otherwise pays page faults and TLB
        // shootdowns on every call. A plugin linked with a 64 KiB stack (see
        // .cargo/config.toml) fits in it; measured with examples/plugin_cost: 56 → 34 µs
        // per call, and 8.5k → 10.5k req/s through the gateway.
        .linear_memory_keep_resident(256 << 10)
        .table_keep_resident(64 << 10)
        .async_stack_keep_resident(128 << 10)
        // Where the kernel has PAGEMAP_SCAN (Linux 6.7), only the pages the call wrote are
        // written back, not the first 256 KiB whole: 21.0 → 20.2 µs per call at best of
        // eight, 27.4 → 24.9 at the median (examples/plugin_cost, alternated).
        .pagemap_scan(wasmtime::Enabled::Auto);
    cfg.allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
    // Each memory reserves its limit, not wasmtime's default 4 GiB: 10,000 slots of two
    // memories fit the address space (at 4 GiB each they did not), for bounds checks in
    // the plugin's code.
    cfg.memory_reservation(memory_limit as u64);
    cfg
}

/// Runs one plugin entry within the wall-clock deadline, the ticker kept awake while it runs.
/// On expiry the entry's future is dropped: that store is never entered again (its call fails
/// and frees the slot).
/// Not an `async fn`: that would hold `entry` twice (argument and awaited value) and copy it
/// between the two when first polled, on every entry. The deadline runs from this call (each
/// caller awaits at once).
fn within<'a, T>(
    ticker: &'a Ticker,
    deadline: Duration,
    entry: impl std::future::Future<Output = Result<T>> + 'a,
) -> impl std::future::Future<Output = Result<T>> + 'a {
    use futures_util::FutureExt;
    tokio::time::timeout(deadline, Running::new(ticker, entry)).map(move |timed| match timed {
        Ok(result) => result,
        Err(_) => Err(anyhow::anyhow!(
            "the plugin exceeded its wall-clock deadline of {} ms (plugin_deadline_ms)",
            deadline.as_millis()
        )),
    })
}

/// Resets the time budget before entering the plugin.
fn enter(store: &mut Store<CallState>) {
    store.data_mut().ticks = 0;
    store.set_epoch_deadline(1);
}

/// An export of `instance` by index.
fn func(
    instance: &Instance,
    store: &mut Store<CallState>,
    index: ComponentExportIndex,
) -> Result<wasmtime::component::Func> {
    instance
        .get_func(store, index)
        .ok_or_else(|| anyhow::anyhow!("the plugin's instance lacks an export its component has"))
}

/// One call's store and exchange. Dropping it ends the call (it stops counting against
/// `max_concurrent_calls`) and frees its store: in a task of its own, behind the tasks already
/// woken (`End`), or in place outside a runtime or when `ready::MAX_FREEING` stores wait.
pub struct PluginCall {
    /// The store and what follows the call; `Some` until dropped.
    live: Option<(Store<CallState>, End)>,
    instance: Instance,
    exports: Exports,
    exchange: ResourceAny,
    deadline: Duration,
    /// Counts the call in flight until it ends (this is dropped).
    _admitted: ready::Admitted,
}

/// What happens after a call's answer: its store is freed and the thread's next instance made.
struct End {
    runtime: Runtime,
    pre: Pre,
}

impl End {
    /// Runs as a task of its own. Its first yield puts it behind the tasks already woken
    /// (tokio runs a yielded task after those): usually the connection's write of the answer
    /// among them, so the consumer waits neither for the store to be freed nor for the next.
    ///
    /// The task stays small (`refill` boxes the instantiation's future, kilobytes, when it
    /// makes one): tokio's task cell copies its future in on spawn and at each change of the
    /// task's stage.
    async fn after_answer(self, ended: Option<(Store<CallState>, ready::Freeing)>) {
        tokio::task::yield_now().await;
        drop(ended);
        let (runtime, pre) = (&self.runtime, &self.pre);
        ready::refill(&runtime.counts, &pre.0, || runtime.instantiate(pre)).await;
    }
}

impl Drop for PluginCall {
    fn drop(&mut self) {
        let Some((store, end)) = self.live.take() else { return };
        let Ok(handle) = tokio::runtime::Handle::try_current() else {
            return drop(store); // outside a runtime (a program ending): freed here
        };
        let ended = match end.runtime.counts.reserve_freeing() {
            Some(freeing) => Some((store, freeing)),
            None => {
                drop(store); // MAX_FREEING stores wait already: this one is freed here
                None
            }
        };
        drop(handle.spawn(end.after_answer(ended)));
    }
}

/// Calls method `$export` of the call's exchange with `($args)`, typed `$params -> $result`
/// as the bindings type it (checked by `describe`), within the deadline.
macro_rules! method {
    ($self:ident, $export:ident, $params:ty, $result:ty, ($($arg:expr),*)) => {{
        let deadline = $self.deadline;
        let index = $self.exports.$export;
        let exchange = $self.exchange;
        let instance = $self.instance;
        let (store, end) = $self.live.as_mut().expect("a call's store is there until it is dropped");
        within(&end.runtime.ticker, deadline, async {
            enter(store);
            let f = func(&instance, store, index)?;
            // SAFETY: the type is the bindings' for this export, which `describe` checked.
            let typed = unsafe { TypedFunc::<$params, ($result,)>::new_unchecked(f) };
            let (out,) = typed.call_async(store, (exchange, $($arg),*)).await?;
            Ok(out)
        })
        .await
    }};
}

impl PluginCall {
    pub async fn first(&mut self) -> Result<wit::Step> {
        let mut span = crate::trace::span("plugin.first");
        let out = method!(self, first, (ResourceAny,), wit::Step, ());
        traced(&mut span, out)
    }

    pub async fn next(&mut self, response: &wit::UpstreamResponse) -> Result<wit::Step> {
        let mut span = crate::trace::span("plugin.next");
        let out = method!(self, next, (ResourceAny, &wit::UpstreamResponse), wit::Step, (response));
        traced(&mut span, out)
    }

    /// The step after an `archive` step stored its media.
    pub async fn archived(&mut self, stored: &[wit::Archived]) -> Result<wit::Step> {
        let mut span = crate::trace::span("plugin.archived");
        let out = method!(self, archived, (ResourceAny, &[wit::Archived]), wit::Step, (stored));
        traced(&mut span, out)
    }

    /// The units to reserve and the objects used, for ops the plugin declares `quoted`.
    pub async fn quote(&mut self) -> Result<Result<wit::Quote, wit::AdapterError>> {
        let mut span = crate::trace::span("plugin.quote");
        let out = method!(self, quote, (ResourceAny,), Result<wit::Quote, wit::AdapterError>, ());
        traced(&mut span, out)
    }

    pub async fn decode(&mut self, input: &wit::StreamInput) -> Result<Result<Vec<wit::OutChunk>, wit::AdapterError>> {
        method!(self, decode, (ResourceAny, &wit::StreamInput), Result<Vec<wit::OutChunk>, wit::AdapterError>, (input))
    }

    /// One message of a socket session.
    pub async fn frame(
        &mut self,
        input: wit::SocketInput,
    ) -> Result<Result<Vec<wit::SocketAction>, wit::AdapterError>> {
        method!(
            self,
            frame,
            (ResourceAny, &wit::SocketInput),
            Result<Vec<wit::SocketAction>, wit::AdapterError>,
            (&input)
        )
    }

    pub async fn finish(&mut self, end: wit::StreamEnd) -> Result<Result<wit::StreamTail, wit::AdapterError>> {
        let mut span = crate::trace::span("plugin.finish");
        let out =
            method!(self, finish, (ResourceAny, wit::StreamEnd), Result<wit::StreamTail, wit::AdapterError>, (end));
        traced(&mut span, out)
    }
}

/// A plugin export's result, its failure marked on its span.
fn traced<T>(span: &mut crate::trace::Span, out: Result<T>) -> Result<T> {
    if let Err(e) = &out {
        span.fail(format!("{e:#}"));
    }
    out
}

/// SHA-256 of a file's bytes, lower-case hex.
pub fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(bytes))
}

/// Reads a plugin file.
pub fn read_plugin_file(path: &Path) -> Result<Vec<u8>> {
    std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))
}
