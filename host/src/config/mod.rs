//! The operator's configuration: `tollgate.toml`, then `TOLLGATE_<NAME>` environment overrides.
//!
//! Defaults are chosen so that `tollgate serve` starts with no external service: embedded
//! SQLite and plugins under `data/`. Every scalar top-level setting can be overridden by an
//! environment variable named `TOLLGATE_` + the setting in upper case (e.g. `TOLLGATE_LISTEN`);
//! channels can be replaced whole with `TOLLGATE_CHANNELS` holding TOML `[[channel]]` tables.

use anyhow::{anyhow, bail, Context, Result};
use serde::Deserialize;
use std::path::{Path, PathBuf};
pub use tollgate_engine::keypool::config::{ChannelConfig, KeySpec, Strategy};

/// The longest `worker_poll_us`: 1 ms. The poller takes a pass longer than 5 µs of the
/// thread's CPU for work, and an interrupt handled during a pass counts as the thread's CPU:
/// with the clock's ticks ~1–4 ms apart, a longer window could never pass without "work" on
/// an idle worker (seen at 20 ms in the poller's test).
pub const MAX_WORKER_POLL_US: u64 = 1_000;

/// `[speech_prefetch]`: a chat's sentences synthesized as it streams, for the app's speech
/// requests to come.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SpeechPrefetch {
    /// The speech model (a channel must serve it with op `speech`); unset: prefetch is off.
    pub model: Option<String>,
    /// The voice (unset: the speech plugin's own default).
    pub voice: String,
    /// The audio format synthesized (`wav` joins a whole reply exactly).
    pub format: String,
    /// Prefetch a chat that does not say `tts_enabled` (the accelerator's clients).
    pub by_default: bool,
    /// Prefetches at once per speech channel.
    pub concurrency: usize,
    /// How long a speech request waits for a sentence being synthesized.
    pub wait_ms: u64,
    pub cache_entries: usize,
    pub cache_bytes: usize,
    pub cache_ttl_secs: u64,
}

/// `[tracing]`: each sampled request's spans (auth, reserve, plugin steps, upstream,
/// stream, settle) exported to an OpenTelemetry receiver over OTLP/HTTP (protobuf).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Tracing {
    /// The receiver's traces URL, e.g. `http://127.0.0.1:4318/v1/traces` (a collector's
    /// OTLP/HTTP port); unset: tracing is off.
    pub otlp_endpoint: Option<String>,
    /// Headers every export carries (a hosted receiver's API key).
    pub otlp_headers: std::collections::BTreeMap<String, String>,
    /// The resource's `service.name`.
    pub service_name: String,
    /// The share of requests traced, 0 to 1; a caller's sampled `traceparent` is always
    /// followed.
    pub sample_ratio: f64,
}

impl Default for Tracing {
    fn default() -> Self {
        Tracing {
            otlp_endpoint: None,
            otlp_headers: Default::default(),
            service_name: "tollgate".into(),
            sample_ratio: 1.0,
        }
    }
}

impl Tracing {
    /// The exporter's settings; `None` when tracing is off.
    pub fn otlp(&self) -> Result<Option<tollgate_engine::trace::otlp::Settings>> {
        let Some(endpoint) = self.otlp_endpoint.as_deref().filter(|e| !e.is_empty()) else { return Ok(None) };
        let uri: http::Uri =
            endpoint.parse().with_context(|| format!("[tracing] otlp_endpoint '{endpoint}' is not a URL"))?;
        if !matches!(uri.scheme_str(), Some("http" | "https")) || uri.authority().is_none() {
            bail!("[tracing] otlp_endpoint must be http(s)://host[:port]/path, e.g. http://127.0.0.1:4318/v1/traces");
        }
        if !(0.0..=1.0).contains(&self.sample_ratio) {
            bail!("[tracing] sample_ratio must be between 0 and 1");
        }
        let headers = self
            .otlp_headers
            .iter()
            .map(|(k, v)| {
                let name = http::HeaderName::try_from(k.as_str())
                    .with_context(|| format!("[tracing] otlp_headers: '{k}' is not a header name"))?;
                let value = http::HeaderValue::try_from(v.as_str())
                    .with_context(|| format!("[tracing] otlp_headers: the value of '{k}' is not a header value"))?;
                Ok((name, value))
            })
            .collect::<Result<_>>()?;
        Ok(Some(tollgate_engine::trace::otlp::Settings {
            endpoint: uri,
            headers,
            service_name: self.service_name.clone(),
            sample_ratio: self.sample_ratio,
        }))
    }
}

impl Default for SpeechPrefetch {
    fn default() -> Self {
        SpeechPrefetch {
            model: None,
            voice: String::new(),
            format: "wav".into(),
            by_default: false,
            concurrency: 3,
            wait_ms: 30_000,
            cache_entries: 1_000,
            cache_bytes: 256 << 20,
            cache_ttl_secs: 3_600,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Seals upstream keys stored in the database. Only from the environment
    /// (`TOLLGATE_MASTER_KEY`), never from the file; `None` when unset.
    #[serde(skip)]
    pub master_key: Option<tollgate_engine::keypool::stored::MasterKey>,
    /// The file this configuration was read from (re-read when channels are reloaded).
    #[serde(skip)]
    pub source: Option<PathBuf>,
    #[serde(default = "defaults::listen")]
    pub listen: String,
    #[serde(default = "defaults::data_dir")]
    pub data_dir: PathBuf,
    /// Compiled plugins (native code, authenticated by a key kept in the folder); defaults to
    /// `<data_dir>/cache`. Gateways on one machine may share one.
    #[serde(default)]
    pub cache_dir: Option<PathBuf>,
    /// Defaults to `sqlite://<data_dir>/tollgate.db`.
    #[serde(default)]
    pub database_url: Option<String>,
    /// Defaults to `<data_dir>/plugins`.
    #[serde(default)]
    pub plugins_dir: Option<PathBuf>,
    /// Largest consumer request body accepted; larger ones get 413.
    #[serde(default = "defaults::max_body_bytes")]
    pub max_body_bytes: usize,
    /// Time to connect to an upstream.
    #[serde(default = "defaults::connect_timeout_ms")]
    pub connect_timeout_ms: u64,
    /// Time for an upstream to answer with its headers, and for a whole non-streamed body.
    #[serde(default = "defaults::upstream_timeout_ms")]
    pub upstream_timeout_ms: u64,
    /// Longest silence allowed between two chunks of a streamed upstream body.
    #[serde(default = "defaults::stream_idle_timeout_ms")]
    pub stream_idle_timeout_ms: u64,
    /// CA certificates (PEM) trusted for outbound TLS besides the web PKI's roots: vendors,
    /// their media URLs, webhooks, the OTLP receiver and the archive's bucket behind a
    /// private CA.
    #[serde(default)]
    pub tls_ca_file: Option<PathBuf>,
    /// CPU budget of one plugin call (first, next, decode, ...), in milliseconds.
    #[serde(default = "defaults::plugin_time_limit_ms")]
    pub plugin_time_limit_ms: u64,
    /// Wall-clock time of one plugin entry, waits included (a plugin that sleeps fails its
    /// call and frees its slot).
    #[serde(default = "defaults::plugin_deadline_ms")]
    pub plugin_deadline_ms: u64,
    /// Linear memory one plugin call may use.
    #[serde(default = "defaults::plugin_memory_limit_mb")]
    pub plugin_memory_limit_mb: usize,
    /// For profiling only: wasmtime names the plugins' compiled functions in
    /// `/tmp/perf-<pid>.map` (perf reads it; a file local users can read, which grows with each
    /// plugin load), and plugins compile in the gateway's own process (valgrind cannot start
    /// the compiling child), whose heap keeps the compiler's memory and whose crash a compiler
    /// crash becomes.
    #[serde(default)]
    pub plugin_perf_map: bool,
    /// Plugin calls in flight at once (pooling allocator slots); beyond it, 503.
    #[serde(default = "defaults::max_concurrent_calls")]
    pub max_concurrent_calls: u32,
    /// Call records that may wait for the database, per queue (charges, the rest): the memory
    /// a slow database can make the gateway hold. While the charges' queue is full, paid calls
    /// and socket pieces are refused (503); a free record that finds its queue full is dropped
    /// and counted.
    #[serde(default = "defaults::call_log_queue")]
    pub call_log_queue: usize,
    /// How long SIGTERM waits for calls in flight before closing their connections.
    #[serde(default = "defaults::shutdown_grace_ms")]
    pub shutdown_grace_ms: u64,
    /// How long an upstream key refused by its vendor stays disabled before one call probes it
    /// (doubling after each failed probe).
    #[serde(default = "defaults::key_probe_after_ms")]
    pub key_probe_after_ms: u64,
    /// How often consumer keys are re-read from the database (new and revoked keys).
    #[serde(default = "defaults::key_refresh_ms")]
    pub key_refresh_ms: u64,
    /// How long an asynchronous task (video, music) may run before it expires and its hold is
    /// given back.
    #[serde(default = "defaults::task_ttl_secs")]
    pub task_ttl_secs: u64,
    /// The most polls of one vendor's (plugin's) tasks per second, per node.
    #[serde(default = "defaults::task_polls_per_second")]
    pub task_polls_per_second: u32,
    /// The most unfinished tasks one user may have; a submit beyond it is refused (429) before
    /// the vendor. 0: no limit.
    #[serde(default = "defaults::task_max_open_per_user")]
    pub task_max_open_per_user: u32,
    /// Where task outputs (videos, music, speech) are kept; defaults to `<data_dir>/archive`.
    /// One folder per gateway process.
    #[serde(default)]
    pub archive_dir: Option<PathBuf>,
    /// Where channels with `archive_speech = true` keep synthesized speech
    /// (`<dir>/<user id>/<YYYY-MM-DD>/<HHMMSS>_<8 hex>.<format>` and a `.txt`); defaults to
    /// `<data_dir>/speech`.
    #[serde(default)]
    pub speech_archive_dir: Option<PathBuf>,
    /// Keep archived files in this S3-compatible bucket instead of `archive_dir` (which still
    /// holds downloads in progress): what several nodes share. Credentials come from the
    /// environment (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`).
    #[serde(default)]
    pub archive_s3_bucket: Option<String>,
    /// Keys in the bucket start with it (`<prefix>/sha256/ab/<hash>`).
    #[serde(default)]
    pub archive_s3_prefix: String,
    /// The URL of an S3-compatible server other than AWS (MinIO, a cloud's S3 API).
    #[serde(default)]
    pub archive_s3_endpoint: Option<String>,
    /// The bucket's region (else `AWS_REGION`, else us-east-1).
    #[serde(default)]
    pub archive_s3_region: Option<String>,
    /// The largest file the archive downloads; a task whose output is larger fails (and is
    /// charged what the vendor made).
    #[serde(default = "defaults::archive_max_bytes")]
    pub archive_max_bytes: u64,
    /// How long the download of one task's outputs may take before it is tried again.
    #[serde(default = "defaults::archive_download_timeout_secs")]
    pub archive_download_timeout_secs: u64,
    /// Archived files older than this many days are deleted (hourly); unset keeps them.
    #[serde(default)]
    pub archive_retention_days: Option<u32>,
    /// Hosts the archive may download from, narrowing what plugins declare in their
    /// `fetch-hosts` (names or `*.domain`); `["*"]`: whatever the loaded plugins declare.
    #[serde(default = "defaults::fetch_allow_hosts")]
    pub fetch_allow_hosts: Vec<String>,
    /// Hosts the archive may reach although they are not public (names or IP literals,
    /// exactly, e.g. `["127.0.0.1"]` for a local mock); plain http is allowed to them.
    #[serde(default)]
    pub fetch_allow_private_hosts: Vec<String>,
    /// Hosts a consumer's task callbacks (`Tollgate-Callback-Url`) may go to (names or
    /// `*.domain`); empty: callbacks are refused. Private hosts as for downloads.
    #[serde(default)]
    pub webhook_allow_hosts: Vec<String>,
    /// The price table; billing (402 before the upstream, charges, the ledger) is on when set.
    #[serde(default)]
    pub pricing_file: Option<PathBuf>,
    /// Secret that signs session tokens (JWT); unset: one is created in `<data_dir>/jwt.secret`.
    #[serde(default)]
    pub jwt_secret: Option<String>,
    /// Whether anyone may register (`POST /v1/auth/register`); closed by default.
    #[serde(default = "defaults::allow_registration")]
    pub allow_registration: bool,
    /// How long a consumer may take to send a request body.
    #[serde(default = "defaults::body_read_timeout_ms")]
    pub body_read_timeout_ms: u64,
    /// How long a stream waits for a consumer that stopped reading before it ends the stream
    /// (billed for what was delivered; the plugin slot and reservation are freed).
    #[serde(default = "defaults::stream_write_timeout_ms")]
    pub stream_write_timeout_ms: u64,
    /// Connections served at once; more wait in the listen backlog.
    #[serde(default = "defaults::max_connections")]
    pub max_connections: usize,
    /// Sign-in and registration attempts per client address per minute (beyond: 429).
    #[serde(default = "defaults::auth_attempts_per_minute")]
    pub auth_attempts_per_minute: u32,
    /// The largest WebSocket message (and frame) a consumer may send; larger closes the
    /// session with 1009.
    #[serde(default = "defaults::socket_max_message_bytes")]
    pub socket_max_message_bytes: usize,
    /// A WebSocket session whose consumer sent nothing for this long is closed.
    #[serde(default = "defaults::socket_idle_timeout_ms")]
    pub socket_idle_timeout_ms: u64,
    /// WebSocket sessions the gateway holds at once (beyond: 503 at the upgrade); each holds a
    /// plugin slot, so keep it below `max_concurrent_calls`.
    #[serde(default = "defaults::max_sockets")]
    pub max_sockets: usize,
    /// The path where the MiniMax proxy's clients open their speech socket
    /// (`compat-protocols.md` §1.1: key in the first frame, `usage_summary` frames); unset: not
    /// served.
    #[serde(default)]
    pub minimax_proxy_socket_path: Option<String>,
    /// The many-vendor backend's chat socket paths (`compat-protocols.md` §5.1), each bound to
    /// the model its chats run on: `{ "/cozeZhsApi/ws/qwen/stream" = "qwen-plus" }`.
    #[serde(default)]
    pub chat_socket_paths: std::collections::BTreeMap<String, String>,
    /// Where the many-vendor backend's apps open their progress socket
    /// (`compat-protocols.md` §5.2), e.g. `"/cozeZhsApi/public-socket/ws"`; unset: only the
    /// gateway's own `/v1/tasks/ws` serves it.
    #[serde(default)]
    pub progress_socket_path: Option<String>,
    /// How long a task event no progress socket took is kept, and replayed to the first
    /// matching registration (seconds).
    #[serde(default = "defaults::progress_replay_secs")]
    pub progress_replay_secs: u64,
    /// Speech prefetch (`compat-protocols.md` §4); off unless it names a speech model.
    #[serde(default)]
    pub speech_prefetch: SpeechPrefetch,
    /// OpenTelemetry traces of calls (`[tracing]`); off unless it names a receiver.
    #[serde(default)]
    pub tracing: Tracing,
    /// Whether this node polls tasks (a node that only serves requests may leave it to others;
    /// at least one node on the database must).
    #[serde(default = "defaults::poll_tasks")]
    pub poll_tasks: bool,
    /// WebSocket sessions one consumer key may hold at once (beyond: 429 at the upgrade).
    #[serde(default = "defaults::max_sockets_per_key")]
    pub max_sockets_per_key: u32,
    /// Keys a user may hold (enabled ones) through `POST /v1/user/keys`.
    #[serde(default = "defaults::max_keys_per_user")]
    pub max_keys_per_user: u32,
    /// Open registration without a price table hands the upstream keys to anyone who can
    /// reach the port: `serve` refuses it unless this says the operator means it.
    #[serde(default)]
    pub allow_unbilled_registration: bool,
    /// How long a session token lasts.
    #[serde(default = "defaults::session_ttl_hours")]
    pub session_ttl_hours: u32,
    /// Bearer token for `/admin/*` (admin users' session tokens work too).
    #[serde(default)]
    pub admin_token: Option<String>,
    /// A bearer token `GET /metrics` requires (it shows revenue, channels and key health);
    /// unset: open, for a scraper on a private network.
    #[serde(default)]
    pub metrics_token: Option<String>,
    /// Threads serving requests, each with its own connections and upstream pool; defaults
    /// to the number of cores.
    #[serde(default)]
    pub worker_threads: Option<usize>,
    /// How long a request worker keeps polling its sockets after its last work before it
    /// sleeps, in microseconds, shortened while polling catches nothing (see the server's
    /// `poll`; after an answer it polls up to 1 ms for the connection's next request); 0: it
    /// sleeps at once, never polling. At most `MAX_WORKER_POLL_US`.
    #[serde(default = "defaults::worker_poll_us")]
    pub worker_poll_us: u64,
    /// Call records older than this many days are deleted (hourly); unset keeps them all.
    /// The ledger is never pruned.
    #[serde(default)]
    pub log_retention_days: Option<u32>,
    /// Log format: "text" or "json".
    #[serde(default = "defaults::log_format")]
    pub log_format: String,
    #[serde(default, rename = "channel")]
    pub channels: Vec<ChannelConfig>,
}

mod defaults {
    use std::path::PathBuf;
    pub fn listen() -> String {
        "127.0.0.1:8080".into()
    }
    pub fn data_dir() -> PathBuf {
        "data".into()
    }
    pub fn max_body_bytes() -> usize {
        16 << 20
    }
    pub fn connect_timeout_ms() -> u64 {
        5_000
    }
    pub fn upstream_timeout_ms() -> u64 {
        120_000
    }
    pub fn stream_idle_timeout_ms() -> u64 {
        120_000
    }
    pub fn plugin_time_limit_ms() -> u64 {
        1_000
    }
    pub fn plugin_deadline_ms() -> u64 {
        5_000
    }
    pub fn plugin_memory_limit_mb() -> usize {
        64
    }
    pub fn worker_poll_us() -> u64 {
        100
    }
    pub fn max_concurrent_calls() -> u32 {
        1_000
    }
    pub fn call_log_queue() -> usize {
        65_536
    }
    pub fn shutdown_grace_ms() -> u64 {
        30_000
    }
    pub fn body_read_timeout_ms() -> u64 {
        30_000
    }
    pub fn stream_write_timeout_ms() -> u64 {
        30_000
    }
    pub fn max_connections() -> usize {
        10_000
    }
    pub fn auth_attempts_per_minute() -> u32 {
        20
    }
    pub fn socket_max_message_bytes() -> usize {
        1 << 20
    }
    pub fn socket_idle_timeout_ms() -> u64 {
        120_000
    }
    pub fn max_sockets() -> usize {
        500
    }
    pub fn max_sockets_per_key() -> u32 {
        16
    }
    pub fn max_keys_per_user() -> u32 {
        50
    }
    pub fn allow_registration() -> bool {
        false
    }
    pub fn session_ttl_hours() -> u32 {
        24
    }
    pub fn key_probe_after_ms() -> u64 {
        60_000
    }
    pub fn task_ttl_secs() -> u64 {
        86_400
    }
    pub fn archive_max_bytes() -> u64 {
        2 << 30
    }
    pub fn archive_download_timeout_secs() -> u64 {
        600
    }
    pub fn fetch_allow_hosts() -> Vec<String> {
        vec!["*".into()]
    }
    pub fn progress_replay_secs() -> u64 {
        900
    }
    pub fn poll_tasks() -> bool {
        true
    }
    pub fn task_polls_per_second() -> u32 {
        10
    }
    pub fn task_max_open_per_user() -> u32 {
        100
    }
    pub fn key_refresh_ms() -> u64 {
        1_000
    }
    pub fn log_format() -> String {
        "text".into()
    }
}

impl Config {
    /// Reads `path` (a missing file at the default path means "all defaults"), then applies
    /// environment overrides.
    pub fn load(path: &Path, path_was_given: bool) -> Result<Config> {
        let mut table = match std::fs::read_to_string(path) {
            Ok(text) => text.parse::<toml::Table>().with_context(|| format!("{} is not valid TOML", path.display()))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let cwd = std::env::current_dir().map(|d| d.display().to_string()).unwrap_or_default();
                let hint = if path_was_given {
                    String::new()
                } else {
                    " (the default, relative to the current folder); run from the folder that has it, or pass --config PATH"
                        .to_string()
                };
                bail!("no configuration file at {} in {cwd}{hint}", path.display())
            }
            Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
        };
        apply_env(&mut table, std::env::vars())?;
        let mut config: Config = toml::Value::Table(table)
            .try_into()
            .with_context(|| format!("invalid configuration in {}", path.display()))?;
        config.master_key = tollgate_engine::keypool::stored::MasterKey::from_env()?;
        config.source = Some(path.to_path_buf());
        config.validate()?;
        Ok(config)
    }

    pub fn database_url(&self) -> String {
        self.database_url.clone().unwrap_or_else(|| format!("sqlite://{}/tollgate.db", self.data_dir.display()))
    }

    pub fn cache_dir(&self) -> PathBuf {
        self.cache_dir.clone().unwrap_or_else(|| self.data_dir.join("cache"))
    }

    pub fn archive_dir(&self) -> PathBuf {
        self.archive_dir.clone().unwrap_or_else(|| self.data_dir.join("archive"))
    }

    pub fn speech_archive_dir(&self) -> PathBuf {
        self.speech_archive_dir.clone().unwrap_or_else(|| self.data_dir.join("speech"))
    }

    pub fn plugins_dir(&self) -> PathBuf {
        self.plugins_dir.clone().unwrap_or_else(|| self.data_dir.join("plugins"))
    }

    /// Refuses settings that would serve the operator's upstream keys to strangers for free.
    /// How many request workers `serve` runs: `worker_threads`, or one per core.
    pub fn request_workers(&self) -> usize {
        self.worker_threads
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
            .clamp(1, 1024)
    }

    pub fn check_serve_safety(&self) -> Result<()> {
        if self.allow_registration && self.pricing_file.is_none() && !self.allow_unbilled_registration {
            bail!(
                "allow_registration = true with no pricing_file lets anyone who reaches {} use the upstream keys for free; \
                 set a pricing_file, close registration, or set allow_unbilled_registration = true if that is meant",
                self.listen
            );
        }
        Ok(())
    }

    /// What outbound TLS trusts: the web PKI's roots and `tls_ca_file`'s certificates (read
    /// at start: a reload checks the file but does not apply a change to it).
    pub fn trust(&self) -> Result<tollgate_engine::exchange::Trust> {
        let Some(path) = &self.tls_ca_file else { return Ok(tollgate_engine::exchange::Trust::web_pki()) };
        let pem = std::fs::read(path).with_context(|| format!("tls_ca_file: cannot read {}", path.display()))?;
        tollgate_engine::exchange::Trust::adding(&pem, &format!("tls_ca_file {}", path.display()))
            .map_err(|e| anyhow!(e))
    }

    fn validate(&self) -> Result<()> {
        self.tracing.otlp()?;
        self.trust()?;
        let mut names = std::collections::HashSet::new();
        for c in &self.channels {
            if !names.insert(&c.name) {
                bail!("two channels are named '{}'", c.name);
            }
            if let Some(url) = &c.base_url {
                let uri: http::Uri =
                    url.parse().with_context(|| format!("channel '{}': base_url '{url}' is not a URL", c.name))?;
                if !matches!(uri.scheme_str(), Some("http" | "https")) || uri.authority().is_none() {
                    bail!("channel '{}': base_url must be http(s)://host[:port][/prefix]", c.name);
                }
                if uri.query().is_some() {
                    bail!("channel '{}': base_url must not have a query", c.name);
                }
            }
            if c.models.is_empty() {
                bail!("channel '{}' lists no models", c.name);
            }
            if c.keys.iter().any(|k| k.weight() == 0 || k.key().is_empty()) {
                bail!("channel '{}': every key needs a value and a weight of at least 1", c.name);
            }
        }
        if !matches!(self.log_format.as_str(), "text" | "json") {
            bail!("log_format must be \"text\" or \"json\"");
        }
        if self.call_log_queue == 0 {
            bail!("call_log_queue must be at least 1");
        }
        if self.worker_poll_us > MAX_WORKER_POLL_US {
            bail!("worker_poll_us must be at most {MAX_WORKER_POLL_US} (polling longer only burns the core)");
        }
        Ok(())
    }
}

/// Applies `TOLLGATE_<NAME>` variables to the top-level table. Values are parsed as TOML
/// values when they parse (numbers, booleans, arrays) and taken as strings otherwise.
fn apply_env(table: &mut toml::Table, vars: impl Iterator<Item = (String, String)>) -> Result<()> {
    for (key, value) in vars {
        let Some(name) = key.strip_prefix("TOLLGATE_") else {
            continue;
        };
        let name = name.to_ascii_lowercase();
        if name == "channels" {
            let parsed: toml::Table = value.parse().context("TOLLGATE_CHANNELS must hold [[channel]] tables")?;
            let channels = parsed.get("channel").cloned().unwrap_or(toml::Value::Array(vec![]));
            table.insert("channel".into(), channels);
            continue;
        }
        if name == "config" || name == "log" || name == "master_key" {
            continue; // read elsewhere: the config path, the log filter, the upstream keys' master key
        }
        let parsed = format!("v = {value}")
            .parse::<toml::Table>()
            .ok()
            .and_then(|mut t| t.remove("v"))
            .unwrap_or(toml::Value::String(value));
        table.insert(name, parsed);
    }
    Ok(())
}

#[cfg(test)]
mod tests;
