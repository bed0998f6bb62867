//! Metrics (Prometheus text at `/metrics`): counters every layer of the gateway adds to.
//!
//! Metrics are plain atomics in one static: the request path pays one relaxed add per
//! counter, and nothing here allocates per request.

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

pub struct Metrics {
    /// Consumer responses by status class: 2xx, 4xx, 5xx.
    pub responses: [AtomicU64; 3],
    pub plugin_failures: AtomicU64,
    /// Calls the host forwarded without entering their plugin (`tollgate:fast`): answered by
    /// the host (`[0]`), and whose answer went to the plugin after all (`[1]`).
    pub forwarded: [AtomicU64; 2],
    pub streams_interrupted: AtomicU64,
    pub streams_client_gone: AtomicU64,
    pub in_flight: AtomicU64,
    /// Calls retried on another key of their channel, and on another channel.
    pub key_failovers: AtomicU64,
    pub channel_failovers: AtomicU64,
    /// Charges applied to the ledger, in micros.
    pub charged_micros: AtomicU64,
    /// Asynchronous tasks: submitted, polled, and ended by status (`TASK_ENDS`).
    pub tasks_submitted: AtomicU64,
    pub task_polls: AtomicU64,
    /// Due polls put off to the next round by a vendor's poll rate cap.
    pub task_polls_deferred: AtomicU64,
    pub tasks_ended: [AtomicU64; 4],
    /// The archive: files and bytes downloaded into it, downloads that failed, and bytes
    /// served from it.
    pub archive_files: AtomicU64,
    pub archive_bytes: AtomicU64,
    pub archive_failures: AtomicU64,
    pub archive_served_bytes: AtomicU64,
    /// WebSocket sessions open, and the messages and bytes they carried from the consumer
    /// (`[0]`) and from the upstream (`[1]`).
    pub sockets_open: AtomicU64,
    pub socket_frames: [AtomicU64; 2],
    pub socket_bytes: [AtomicU64; 2],
    /// Traces handed to the OTLP receiver, and traces dropped (queue full, receiver failed).
    pub traces_exported: AtomicU64,
    pub traces_dropped: AtomicU64,
    /// Ticks of the plugins' time-limit clock: every 10 ms while a plugin may run, every
    /// second when none has for a while.
    pub plugin_clock_ticks: AtomicU64,
}

/// The final statuses of a task, in the order of `Metrics::tasks_ended`.
pub const TASK_ENDS: [&str; 4] = ["succeeded", "failed", "expired", "cancelled"];

pub static METRICS: Metrics = Metrics {
    responses: [AtomicU64::new(0), AtomicU64::new(0), AtomicU64::new(0)],
    plugin_failures: AtomicU64::new(0),
    forwarded: [AtomicU64::new(0), AtomicU64::new(0)],
    streams_interrupted: AtomicU64::new(0),
    streams_client_gone: AtomicU64::new(0),
    in_flight: AtomicU64::new(0),
    key_failovers: AtomicU64::new(0),
    channel_failovers: AtomicU64::new(0),
    charged_micros: AtomicU64::new(0),
    tasks_submitted: AtomicU64::new(0),
    task_polls: AtomicU64::new(0),
    task_polls_deferred: AtomicU64::new(0),
    tasks_ended: [AtomicU64::new(0), AtomicU64::new(0), AtomicU64::new(0), AtomicU64::new(0)],
    archive_files: AtomicU64::new(0),
    archive_bytes: AtomicU64::new(0),
    archive_failures: AtomicU64::new(0),
    archive_served_bytes: AtomicU64::new(0),
    sockets_open: AtomicU64::new(0),
    socket_frames: [AtomicU64::new(0), AtomicU64::new(0)],
    socket_bytes: [AtomicU64::new(0), AtomicU64::new(0)],
    traces_exported: AtomicU64::new(0),
    traces_dropped: AtomicU64::new(0),
    plugin_clock_ticks: AtomicU64::new(0),
};

/// A session counted in `sockets_open` (`Metrics::socket_opened`).
pub struct SocketOpen(&'static Metrics);

impl Drop for SocketOpen {
    fn drop(&mut self) {
        self.0.sockets_open.fetch_sub(1, Relaxed);
    }
}

impl Metrics {
    /// A task reached `status` (one of `TASK_ENDS`).
    pub fn task_ended(&self, status: &str) {
        if let Some(i) = TASK_ENDS.iter().position(|s| *s == status) {
            self.tasks_ended[i].fetch_add(1, Relaxed);
        }
    }

    /// One WebSocket session, counted in `sockets_open` until the guard is dropped (every
    /// socket surface, whatever way its session ends).
    pub fn socket_opened(&'static self) -> SocketOpen {
        self.sockets_open.fetch_add(1, Relaxed);
        SocketOpen(self)
    }

    /// A WebSocket message read from the consumer (`from_client`) or the upstream.
    pub fn socket_frame(&self, from_client: bool, bytes: u64) {
        let i = usize::from(!from_client);
        self.socket_frames[i].fetch_add(1, Relaxed);
        self.socket_bytes[i].fetch_add(bytes, Relaxed);
    }

    pub fn response(&self, status: u16) {
        let i = match status {
            200..=399 => 0,
            400..=499 => 1,
            _ => 2,
        };
        self.responses[i].fetch_add(1, Relaxed);
    }
}

/// Extra gauges the caller knows about (plugins loaded, call log counters).
pub struct Snapshot {
    pub plugins_loaded: usize,
    pub plugin_loads_ok: u64,
    pub plugin_loads_failed: u64,
    pub call_records_written: u64,
    pub call_records_dropped: u64,
    pub call_records_queued: u64,
    pub call_records_queued_peak: u64,
    /// Per channel: its keys that are healthy, cooling down, disabled.
    pub upstream_keys: Vec<(String, [u64; 4])>,
    pub plugin_slots: PluginSlots,
}

/// The plugin runtime's pool of slots (memories, tables, fiber stacks), one per instance
/// alive. A freed slot stays warm: wasmtime keeps the start of it resident, reset, for the
/// next instance. Warm slots only grow to the most instances ever alive at once, so the
/// resident bytes they hold are bounded by the slots' count times what each keeps, and a
/// step in the gateway's memory under load can be read here as a new peak of instances.
#[derive(Debug, Default, Clone, Copy)]
pub struct PluginSlots {
    /// Component instances alive: calls in flight, instances made ahead, stores not yet freed.
    pub instances: u64,
    /// Unused slots that held an instance before, by kind (`SLOT_KINDS`).
    pub warm: [u64; 3],
    /// Bytes those unused slots keep resident, by kind.
    pub resident_bytes: [u64; 3],
}

/// The kinds of `PluginSlots::warm` and `resident_bytes`, in order.
pub const SLOT_KINDS: [&str; 3] = ["memory", "table", "stack"];

/// Samples whose labels were formatted, as `render`'s `metric` takes them.
fn borrowed(samples: &[(String, u64)]) -> Vec<(&str, u64)> {
    samples.iter().map(|(l, n)| (l.as_str(), *n)).collect()
}

pub fn render(s: &Snapshot) -> String {
    let m = &METRICS;
    let mut out = String::with_capacity(1024);
    let mut metric = |name: &str, kind: &str, help: &str, samples: &[(&str, u64)]| {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
        for (labels, v) in samples {
            let _ = writeln!(out, "{name}{labels} {v}");
        }
    };
    metric(
        "tollgate_responses_total",
        "counter",
        "Consumer responses by status class.",
        &[
            ("{class=\"2xx\"}", m.responses[0].load(Relaxed)),
            ("{class=\"4xx\"}", m.responses[1].load(Relaxed)),
            ("{class=\"5xx\"}", m.responses[2].load(Relaxed)),
        ],
    );
    metric("tollgate_in_flight", "gauge", "Calls in progress.", &[("", m.in_flight.load(Relaxed))]);
    metric(
        "tollgate_plugin_failures_total",
        "counter",
        "Plugin traps, time-outs and memory faults.",
        &[("", m.plugin_failures.load(Relaxed))],
    );
    metric(
        "tollgate_calls_forwarded_total",
        "counter",
        "Calls the host sent without entering their plugin, by who made the answer.",
        &[
            ("{answered=\"host\"}", m.forwarded[0].load(Relaxed)),
            ("{answered=\"plugin\"}", m.forwarded[1].load(Relaxed)),
        ],
    );
    metric(
        "tollgate_streams_interrupted_total",
        "counter",
        "Streams that ended abnormally.",
        &[("", m.streams_interrupted.load(Relaxed))],
    );
    metric(
        "tollgate_streams_client_gone_total",
        "counter",
        "Streams the consumer left.",
        &[("", m.streams_client_gone.load(Relaxed))],
    );
    metric("tollgate_plugins_loaded", "gauge", "Plugins serving.", &[("", s.plugins_loaded as u64)]);
    metric(
        "tollgate_plugin_loads_total",
        "counter",
        "Plugin files examined by result.",
        &[("{result=\"ok\"}", s.plugin_loads_ok), ("{result=\"failed\"}", s.plugin_loads_failed)],
    );
    metric(
        "tollgate_failovers_total",
        "counter",
        "Calls retried before any byte reached the consumer: on another key, on another channel.",
        &[("{to=\"key\"}", m.key_failovers.load(Relaxed)), ("{to=\"channel\"}", m.channel_failovers.load(Relaxed))],
    );
    metric(
        "tollgate_charged_micros_total",
        "counter",
        "Charges applied to the ledger, in millionths of the currency.",
        &[("", m.charged_micros.load(Relaxed))],
    );
    metric(
        "tollgate_tasks_submitted_total",
        "counter",
        "Asynchronous tasks submitted.",
        &[("", m.tasks_submitted.load(Relaxed))],
    );
    metric("tollgate_task_polls_total", "counter", "Polls of asynchronous tasks.", &[("", m.task_polls.load(Relaxed))]);
    metric(
        "tollgate_task_polls_deferred_total",
        "counter",
        "Due task polls put off by a vendor's poll rate cap.",
        &[("", m.task_polls_deferred.load(Relaxed))],
    );
    let ends: Vec<(String, u64)> =
        TASK_ENDS.iter().zip(&m.tasks_ended).map(|(s, n)| (format!("{{status=\"{s}\"}}"), n.load(Relaxed))).collect();
    let ends: Vec<(&str, u64)> = ends.iter().map(|(l, n)| (l.as_str(), *n)).collect();
    metric("tollgate_tasks_ended_total", "counter", "Asynchronous tasks by final status.", &ends);
    metric(
        "tollgate_archive_files_total",
        "counter",
        "Files downloaded into the archive.",
        &[("", m.archive_files.load(Relaxed))],
    );
    metric(
        "tollgate_archive_bytes_total",
        "counter",
        "Bytes downloaded into the archive.",
        &[("", m.archive_bytes.load(Relaxed))],
    );
    metric(
        "tollgate_archive_failures_total",
        "counter",
        "Archive downloads that failed (tried again, or the task failed).",
        &[("", m.archive_failures.load(Relaxed))],
    );
    metric(
        "tollgate_archive_served_bytes_total",
        "counter",
        "Bytes of archived files served to their owners.",
        &[("", m.archive_served_bytes.load(Relaxed))],
    );
    metric("tollgate_sockets_open", "gauge", "WebSocket sessions open.", &[("", m.sockets_open.load(Relaxed))]);
    let sides =
        |v: &[AtomicU64; 2]| [("{from=\"client\"}", v[0].load(Relaxed)), ("{from=\"upstream\"}", v[1].load(Relaxed))];
    metric("tollgate_socket_messages_total", "counter", "WebSocket messages read, by side.", &sides(&m.socket_frames));
    metric("tollgate_socket_bytes_total", "counter", "WebSocket message bytes read, by side.", &sides(&m.socket_bytes));
    metric(
        "tollgate_traces_exported_total",
        "counter",
        "Traces taken by the OTLP receiver.",
        &[("", m.traces_exported.load(Relaxed))],
    );
    metric(
        "tollgate_traces_dropped_total",
        "counter",
        "Traces dropped (export queue full, receiver failed).",
        &[("", m.traces_dropped.load(Relaxed))],
    );
    metric(
        "tollgate_plugin_clock_ticks_total",
        "counter",
        "Ticks of the plugins' time-limit clock (every 10 ms while a plugin may run, every second when idle).",
        &[("", m.plugin_clock_ticks.load(Relaxed))],
    );
    let keys: Vec<(String, u64)> = s
        .upstream_keys
        .iter()
        .flat_map(|(channel, counts)| {
            ["healthy", "cooling_down", "disabled", "disabled_by_operator"]
                .iter()
                .zip(counts)
                .map(move |(state, n)| (format!("{{channel=\"{channel}\",state=\"{state}\"}}"), *n))
        })
        .collect();
    metric("tollgate_upstream_keys", "gauge", "Upstream keys per channel and state.", &borrowed(&keys));
    metric("tollgate_call_records_written_total", "counter", "Call records written.", &[("", s.call_records_written)]);
    metric(
        "tollgate_call_records_queued",
        "gauge",
        "Call records waiting for the writer.",
        &[("", s.call_records_queued)],
    );
    metric(
        "tollgate_call_records_queued_peak",
        "gauge",
        "The most call records found waiting for the writer.",
        &[("", s.call_records_queued_peak)],
    );
    let p = &s.plugin_slots;
    metric("tollgate_plugin_instances", "gauge", "Plugin instances alive.", &[("", p.instances)]);
    let by_kind = |v: &[u64; 3]| -> Vec<(String, u64)> {
        SLOT_KINDS.iter().zip(v).map(|(k, n)| (format!("{{kind=\"{k}\"}}"), *n)).collect()
    };
    let (warm, resident) = (by_kind(&p.warm), by_kind(&p.resident_bytes));
    metric(
        "tollgate_plugin_slots_warm",
        "gauge",
        "Unused plugin slots that held an instance before.",
        &borrowed(&warm),
    );
    metric(
        "tollgate_plugin_slot_resident_bytes",
        "gauge",
        "Bytes unused plugin slots keep resident for the next instance.",
        &borrowed(&resident),
    );
    metric(
        "tollgate_call_records_dropped_total",
        "counter",
        "Call records dropped (queue full).",
        &[("", s.call_records_dropped)],
    );
    out
}
