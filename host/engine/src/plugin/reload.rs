//! The loaded plugin set and its hot reload, in one file because it is the part of the
//! gateway where a mistake drops requests.
//!
//! Why it is shaped this way:
//! - `notify` events only *trigger* a rescan. Events are coalesced, can arrive while a file is
//!   half written, and are not delivered on every filesystem; the scan itself (list, hash,
//!   compare) is the source of truth, and a periodic rescan backs the watcher up.
//! - Files are compared by SHA-256, so touching a file or rewriting identical bytes does
//!   nothing, and the same broken bytes are not compiled again and again. The quiet periodic
//!   rescans read and hash again only files whose metadata moved (`Stamp`), so they do not
//!   re-read a folder of large plugins; every other scan reads every file.
//! - A new or changed file is compiled and validated (links against the empty WASI context,
//!   exports the contract, `describe()` runs, its name and routes do not collide with another
//!   plugin or with the gateway's own routes, it accepts the settings of every channel that
//!   uses it) before anything changes. Only then is a new
//!   immutable `PluginSet` built and swapped in with one atomic store.
//! - A file that fails keeps serving its previous good version (if it had one); the failure is
//!   logged, counted and shown by `tollgate plugins list` and `GET /admin/plugins`.
//! - Calls hold an `Arc<Plugin>`: a call in flight finishes on the version it started with;
//!   the old version is freed when its last call ends (and an instance made ahead of it, if a
//!   thread holds one, when that thread next starts a call: `ready`).
//! - Scans are serialised by a mutex, so two triggers never race to swap.

use super::pattern::Pattern;
use super::runtime::{read_plugin_file, sha256_hex, Runtime};
use super::{wit, Forwards, Manifest, Plugin};
use crate::FastMap;
use anyhow::{bail, Result};
use arc_swap::ArcSwap;
use serde::Serialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// An immutable snapshot of the loaded plugins.
#[derive(Default)]
pub struct PluginSet {
    by_name: FastMap<String, Arc<Plugin>>,
    /// Literal routes: (method, path) → (plugin, index of the route in its manifest).
    literal: FastMap<(String, String), (Arc<Plugin>, usize)>,
    /// Pattern routes, the most specific first.
    patterns: Vec<(String, Pattern, Arc<Plugin>, usize)>,
}

/// A native route that matched a request.
pub struct RouteMatch<'a> {
    pub plugin: &'a Arc<Plugin>,
    pub route: &'a wit::Route,
    pub params: Vec<(String, String)>,
}

impl PluginSet {
    pub fn get(&self, name: &str) -> Option<&Arc<Plugin>> {
        self.by_name.get(name)
    }

    /// The plugin route serving `method path`: a literal route first, then the most specific
    /// pattern.
    pub fn route(&self, method: &str, path: &str) -> Option<RouteMatch<'_>> {
        if let Some((plugin, i)) = self.literal.get(&(method.to_string(), path.to_string())) {
            return Some(RouteMatch { plugin, route: &plugin.manifest.routes[*i], params: Vec::new() });
        }
        self.patterns.iter().filter(|(m, ..)| m == method).find_map(|(_, pattern, plugin, i)| {
            let params = pattern.matches(path)?;
            Some(RouteMatch { plugin, route: &plugin.manifest.routes[*i], params })
        })
    }

    pub fn len(&self) -> usize {
        self.by_name.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_name.is_empty()
    }

    /// Builds the set from plugins whose routes were checked (`check_manifest`).
    fn build(plugins: impl Iterator<Item = Arc<Plugin>>) -> PluginSet {
        let mut set = PluginSet::default();
        for p in plugins {
            for (i, r) in p.manifest.routes.iter().enumerate() {
                let method = r.method.to_ascii_uppercase();
                let Ok(pattern) = Pattern::parse(&r.path) else { continue };
                if pattern.is_literal() {
                    set.literal.insert((method, r.path.clone()), (Arc::clone(&p), i));
                } else {
                    set.patterns.push((method, pattern, Arc::clone(&p), i));
                }
            }
            set.by_name.insert(p.name().to_string(), p);
        }
        set.patterns.sort_by_key(|(_, pattern, ..)| std::cmp::Reverse(pattern.specificity()));
        set
    }
}

/// Consumer headers that carry credentials: never forwarded to a plugin.
pub const FORBIDDEN_FORWARD: &[&str] =
    &["authorization", "proxy-authorization", "x-api-key", "x-goog-api-key", "cookie", "api-key"];

/// One channel's settings, as its plugin checks them.
#[derive(Debug, Clone)]
pub struct ChannelSettings {
    pub plugin: String,
    pub channel: String,
    pub settings_json: String,
}

/// What the operator sees for one file in `plugins_dir`.
#[derive(Debug, Clone, Serialize)]
pub struct PluginFileStatus {
    pub file: String,
    pub sha256: String,
    /// "loaded", or "failed" when the file's current bytes were rejected.
    pub status: &'static str,
    /// The plugin name and version serving from this file (the previous good version when
    /// the current bytes failed), if any.
    pub name: Option<String>,
    pub version: Option<String>,
    pub serving_sha256: Option<String>,
    pub last_error: Option<String>,
    pub routes: Vec<String>,
    pub operations: Vec<String>,
}

struct FileEntry {
    /// SHA-256 of the bytes last examined.
    sha256: String,
    /// The file's metadata, taken before those bytes were read: while it is the same, the
    /// file is not read again (see `Stamp`).
    stamp: Option<Stamp>,
    /// The good version serving from this file.
    plugin: Option<Arc<Plugin>>,
    error: Option<String>,
}

pub struct PluginRegistry {
    runtime: Runtime,
    dir: PathBuf,
    /// The gateway's own paths (from its route table).
    reserved: fn(&str) -> bool,
    current: ArcSwap<PluginSet>,
    /// The channels' settings, by plugin name: a new version of a plugin must accept the
    /// settings of every channel that uses it before it replaces the one serving.
    channel_settings: Mutex<Vec<ChannelSettings>>,
    files: Mutex<BTreeMap<PathBuf, FileEntry>>,
    scanning: tokio::sync::Mutex<()>,
    /// Counters for /metrics: accepted and rejected files.
    pub loads_ok: std::sync::atomic::AtomicU64,
    pub loads_failed: std::sync::atomic::AtomicU64,
    /// Plugin files read by scans (the quiet rescans skip the unchanged ones).
    files_read: std::sync::atomic::AtomicU64,
}

impl PluginRegistry {
    /// `reserved`: the paths the gateway serves itself (its route table says), which a
    /// plugin may not declare.
    pub fn new(runtime: Runtime, dir: PathBuf, reserved: fn(&str) -> bool) -> Arc<PluginRegistry> {
        Arc::new(PluginRegistry {
            runtime,
            dir,
            reserved,
            current: ArcSwap::from_pointee(PluginSet::default()),
            channel_settings: Mutex::new(Vec::new()),
            files: Mutex::new(BTreeMap::new()),
            scanning: tokio::sync::Mutex::new(()),
            loads_ok: Default::default(),
            loads_failed: Default::default(),
            files_read: Default::default(),
        })
    }

    /// The settings of the channels now configured (the engine sets them with every channel
    /// set it swaps in); later loads check them.
    pub fn set_channel_settings(&self, settings: Vec<ChannelSettings>) {
        *self.channel_settings.lock().expect("channel settings") = settings;
    }

    /// Asks each current plugin which calls it forwards for the settings of its channels, those
    /// it was not asked about yet: called once channels are set, and once a scan swapped the
    /// plugins, so that a plugin that loaded while the channels changed (and read their old
    /// settings) learns the new ones. Settings are set before the plugins are read here, and
    /// the plugins swapped before the settings are read: one of the two calls sees both.
    pub async fn learn_forwards(&self) {
        let channels = self.channel_settings.lock().expect("channel settings").clone();
        let plugins = self.current();
        for c in &channels {
            if let Some(p) = plugins.get(&c.plugin) {
                p.forwards.learn(&self.runtime, &p.pre, &p.manifest, &c.settings_json).await;
            }
        }
    }

    /// The current set; cheap, lock-free, for the request path.
    pub fn current(&self) -> arc_swap::Guard<Arc<PluginSet>> {
        self.current.load()
    }

    pub fn runtime(&self) -> &Runtime {
        &self.runtime
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Rescans the folder, loads what is new or changed, unloads what is gone, swaps. Reads
    /// every file.
    pub async fn scan(&self) -> Result<()> {
        self.scan_files(false).await
    }

    /// `trust_stamps`: skip the files whose `Stamp` did not move (the quiet backstop rescans).
    async fn scan_files(&self, trust_stamps: bool) -> Result<()> {
        let _only_one = self.scanning.lock().await;
        std::fs::create_dir_all(&self.dir)?;
        let mut on_disk: Vec<PathBuf> = std::fs::read_dir(&self.dir)?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "wasm") && p.is_file())
            .collect();
        on_disk.sort();

        let mut changed = false;
        {
            let mut files = self.files.lock().expect("plugin file table");
            let before = files.len();
            files.retain(|path, entry| {
                let keep = on_disk.contains(path);
                if !keep {
                    if let Some(p) = &entry.plugin {
                        tracing::info!(plugin = p.name(), file = %path.display(), "plugin file removed: unloaded");
                    }
                }
                keep
            });
            changed |= files.len() != before;
        }

        for path in on_disk {
            let stamp = std::fs::metadata(&path).ok().and_then(|m| Stamp::at(&m, std::time::SystemTime::now()));
            if trust_stamps
                && stamp.is_some()
                && self.files.lock().expect("plugin file table").get(&path).is_some_and(|e| e.stamp == stamp)
            {
                continue;
            }
            self.files_read.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let bytes = match read_plugin_file(&path) {
                Ok(b) => b,
                Err(e) => {
                    tracing::warn!(file = %path.display(), error = %e, "cannot read plugin file");
                    continue;
                }
            };
            let sha = sha256_hex(&bytes);
            if let Some(entry) = self.files.lock().expect("plugin file table").get_mut(&path) {
                if entry.sha256 == sha {
                    entry.stamp = stamp;
                    continue;
                }
            }
            changed = true;
            let result = self.load(&path, bytes, &sha).await;
            let mut files = self.files.lock().expect("plugin file table");
            let entry = files.entry(path.clone()).or_insert(FileEntry {
                sha256: String::new(),
                stamp: None,
                plugin: None,
                error: None,
            });
            entry.sha256 = sha.clone();
            entry.stamp = stamp;
            match result {
                Ok(plugin) => {
                    self.loads_ok.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    tracing::info!(plugin = plugin.name(), version = %plugin.manifest.version, sha256 = %sha, file = %path.display(), "plugin loaded");
                    entry.plugin = Some(plugin);
                    entry.error = None;
                }
                Err(e) => {
                    self.loads_failed.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    let message = format!("{e:#}");
                    tracing::error!(file = %path.display(), sha256 = %sha, error = %message,
                        still_serving = entry.plugin.as_ref().map(|p| p.manifest.version.as_str()).unwrap_or("nothing"),
                        "plugin file rejected");
                    entry.error = Some(message);
                }
            }
        }

        if changed {
            let set = {
                let files = self.files.lock().expect("plugin file table");
                PluginSet::build(files.values().filter_map(|e| e.plugin.clone()))
            };
            self.current.store(Arc::new(set));
            self.learn_forwards().await;
        }
        Ok(())
    }

    async fn load(&self, path: &Path, bytes: Vec<u8>, sha: &str) -> Result<Arc<Plugin>> {
        let runtime = self.runtime.clone();
        let sha_owned = sha.to_string();
        let pre = tokio::task::spawn_blocking(move || runtime.prepare(&bytes, &sha_owned)).await??;
        let manifest = tokio::time::timeout(Duration::from_secs(10), self.runtime.describe(&pre))
            .await
            .map_err(|_| anyhow::anyhow!("describe() did not return"))?
            .map_err(|e| anyhow::anyhow!("describe() failed: {e:#}"))?;
        self.check_manifest(path, &manifest)?;
        let channels: Vec<ChannelSettings> = {
            let all = self.channel_settings.lock().expect("channel settings");
            all.iter().filter(|c| c.plugin == manifest.name).cloned().collect()
        };
        for c in &channels {
            match self.runtime.check_settings(&pre, &c.settings_json).await {
                Ok(Ok(())) => {}
                Ok(Err(why)) => bail!("it refuses the settings of channel '{}': {why}", c.channel),
                Err(e) => bail!("check-settings failed for channel '{}': {e:#}", c.channel),
            }
        }
        let forwards = Forwards::default();
        for c in &channels {
            forwards.learn(&self.runtime, &pre, &manifest, &c.settings_json).await;
        }
        Ok(Arc::new(Plugin { manifest, sha256: sha.to_string(), file: path.to_path_buf(), pre, forwards }))
    }

    /// A plugin's manifest must make sense, and its name and routes must be its own: not
    /// another file's, not the gateway's.
    fn check_manifest(&self, path: &Path, m: &Manifest) -> Result<()> {
        if m.name.is_empty() || !m.name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_') {
            bail!("plugin name '{}' must be non-empty ASCII letters, digits, '-' or '_'", m.name);
        }
        let mut patterns = Vec::with_capacity(m.routes.len());
        for r in &m.routes {
            let pattern = Pattern::parse(&r.path)?;
            if (self.reserved)(&r.path) {
                bail!("route {} {} is one of the gateway's own routes; a plugin cannot take it", r.method, r.path);
            }
            if !m.operations.iter().any(|o| o.name == r.op) {
                bail!(
                    "route {} {} runs op '{}', which the manifest's operations do not declare",
                    r.method,
                    r.path,
                    r.op
                );
            }
            if matches!(r.model, wit::Field::Owned) {
                bail!("route {} {} takes its model from the consumer's objects, which name no model", r.method, r.path);
            }
            for (what, field) in [("model", &r.model), ("affinity", &r.affinity)] {
                if let wit::Field::Path(name) = field {
                    if !pattern.has_param(name) {
                        bail!(
                            "route {} {} takes its {what} from the path parameter '{name}', which it does not have",
                            r.method,
                            r.path
                        );
                    }
                }
            }
            patterns.push((r.method.to_ascii_uppercase(), pattern));
        }
        for (i, (method, a)) in patterns.iter().enumerate() {
            if patterns[..i].iter().any(|(m, b)| m == method && a.overlaps(b)) {
                bail!("route {method} {} overlaps another route of the plugin", m.routes[i].path);
            }
        }
        for host in &m.fetch_hosts {
            crate::archive::guard::check_pattern(host, false).map_err(|e| anyhow::anyhow!("fetch-hosts: {e}"))?;
        }
        for name in &m.forward_headers {
            if FORBIDDEN_FORWARD.iter().any(|f| name.eq_ignore_ascii_case(f)) {
                bail!("the header '{name}' carries consumer credentials; a plugin cannot ask for it");
            }
        }
        let files = self.files.lock().expect("plugin file table");
        for (other_path, other) in files.iter() {
            let Some(o) = &other.plugin else { continue };
            if other_path == path {
                continue;
            }
            if o.name() == m.name {
                bail!("plugin name '{}' is already served by {}", m.name, other_path.display());
            }
            for (r, (method, pattern)) in m.routes.iter().zip(&patterns) {
                let taken = o.manifest.routes.iter().any(|x| {
                    x.method.eq_ignore_ascii_case(method)
                        && Pattern::parse(&x.path).is_ok_and(|other| other.overlaps(pattern))
                });
                if taken {
                    bail!("route {} {} overlaps a route of plugin '{}'", r.method, r.path, o.name());
                }
            }
        }
        Ok(())
    }

    /// Every file's status, for the operator.
    pub fn status(&self) -> Vec<PluginFileStatus> {
        let files = self.files.lock().expect("plugin file table");
        files
            .iter()
            .map(|(path, e)| PluginFileStatus {
                file: path.file_name().map(|f| f.to_string_lossy().into_owned()).unwrap_or_default(),
                sha256: e.sha256.clone(),
                status: if e.error.is_some() { "failed" } else { "loaded" },
                name: e.plugin.as_ref().map(|p| p.name().to_string()),
                version: e.plugin.as_ref().map(|p| p.manifest.version.clone()),
                serving_sha256: e.plugin.as_ref().map(|p| p.sha256.clone()),
                last_error: e.error.clone(),
                routes: e
                    .plugin
                    .iter()
                    .flat_map(|p| p.manifest.routes.iter().map(|r| format!("{} {}", r.method, r.path)))
                    .collect(),
                operations: e
                    .plugin
                    .iter()
                    .flat_map(|p| p.manifest.operations.iter().map(|o| o.name.clone()))
                    .collect(),
            })
            .collect()
    }

    /// Watches the folder: the receiver yields once per change event (the rescan job scans on
    /// it, debounced, and on a backstop timer). Keep the watcher alive as long as the job runs.
    /// A test drives the same job by sending into a channel of its own.
    pub fn watch_folder(&self) -> Result<(notify::RecommendedWatcher, tokio::sync::mpsc::UnboundedReceiver<()>)> {
        use notify::Watcher;
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel::<()>();
        let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
            if event.is_ok_and(|e| changes_files(&e.kind)) {
                let _ = tx.send(());
            }
        })?;
        watcher.watch(&self.dir, notify::RecursiveMode::NonRecursive)?;
        Ok((watcher, rx))
    }

    /// The rescan job's loop: scans on each trigger (a burst of events, such as a file being
    /// written, settles first) and every `backstop`, until `stop` resolves (the gateway stops).
    /// A triggered scan and every `FULL_EVERY`th backstop read every file; the others only the
    /// files whose metadata moved (`Stamp`), so a change the stamps cannot see (a filesystem
    /// whose status-change time is not kept, a clock set back) is still found within
    /// `FULL_EVERY` backstops.
    pub async fn rescan_on(
        &self,
        mut triggers: tokio::sync::mpsc::UnboundedReceiver<()>,
        backstop: Duration,
        stop: impl std::future::Future<Output = ()>,
    ) {
        tokio::pin!(stop);
        let mut backstops = 0u32;
        loop {
            let triggered = tokio::select! {
                _ = &mut stop => return,
                t = tokio::time::timeout(backstop, triggers.recv()) => t,
            };
            if let Ok(None) = triggered {
                return; // every trigger source is gone
            }
            let full = if triggered.is_ok() {
                tokio::time::sleep(Duration::from_millis(100)).await;
                while triggers.try_recv().is_ok() {}
                true
            } else {
                backstops = backstops.wrapping_add(1);
                backstops.is_multiple_of(FULL_EVERY)
            };
            if let Err(e) = self.scan_files(!full).await {
                tracing::error!(error = %e, dir = %self.dir.display(), "plugin rescan failed");
            }
        }
    }
}

/// What a file's metadata says of its content: its inode, length, and last modification
/// and status change. On a local filesystem any write, replacement (a rename onto it) or
/// truncation changes the status change time, which `touch` and `cp -p` cannot set back, so
/// the quiet backstop rescans read and hash only files whose stamp moved. The times are coarse
/// (a clock tick, seconds on some filesystems): a write in the same tick as the read would
/// leave the stamp as it was, so a file changed less than `SETTLED` ago has no stamp and is
/// read again by the next scan. Where even that does not hold (a network or FUSE filesystem
/// that does not keep the status change time, a clock set back), every `FULL_EVERY`th
/// backstop reads every file.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
struct Stamp {
    dev: u64,
    ino: u64,
    len: u64,
    mtime: (i64, i64),
    ctime: (i64, i64),
}

const SETTLED: Duration = Duration::from_secs(3);
/// With a 10 s backstop: every file read at least once a minute.
const FULL_EVERY: u32 = 6;

impl Stamp {
    /// The stamp of a file with metadata `m` at time `now`; `None` while it is not settled.
    #[cfg(unix)]
    fn at(m: &std::fs::Metadata, now: std::time::SystemTime) -> Option<Stamp> {
        use std::os::unix::fs::MetadataExt;
        let changed =
            std::time::UNIX_EPOCH + Duration::new(u64::try_from(m.ctime()).ok()?, u32::try_from(m.ctime_nsec()).ok()?);
        if now.duration_since(changed).map_or(true, |age| age < SETTLED) {
            return None;
        }
        Some(Stamp {
            dev: m.dev(),
            ino: m.ino(),
            len: m.len(),
            mtime: (m.mtime(), m.mtime_nsec()),
            ctime: (m.ctime(), m.ctime_nsec()),
        })
    }

    /// No status change time to trust: every scan reads every file.
    #[cfg(not(unix))]
    fn at(_: &std::fs::Metadata, _: std::time::SystemTime) -> Option<Stamp> {
        None
    }
}

/// Whether a folder event can change what the folder holds. Reading a file is an event too
/// (inotify's open, access and close-without-write), and a rescan reads every file: were
/// those triggers, each rescan would trigger the next, forever.
fn changes_files(kind: &notify::EventKind) -> bool {
    use notify::event::{AccessKind, AccessMode, EventKind, MetadataKind, ModifyKind};
    match kind {
        // A file written and closed: its content is complete now.
        EventKind::Access(AccessKind::Close(AccessMode::Write)) => true,
        EventKind::Access(_) | EventKind::Modify(ModifyKind::Metadata(MetadataKind::AccessTime)) => false,
        _ => true,
    }
}

#[cfg(test)]
mod tests;
