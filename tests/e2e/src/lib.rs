//! The end-to-end harness: starts the real `tollgate` binary and the `mock-vendor` upstream on
//! 127.0.0.1, with real plugins built from this repository, and talks to them over real
//! sockets with a small HTTP/1.1 client (which can also time each streamed chunk).
//!
//! Expects the binaries and plugins built first (the README's test command does it):
//! `target/release/{tollgate,mock-vendor}` and `target/wasm32-unknown-unknown/plugin/*.wasm`,
//! plus the fixtures in `target/fixtures/` (the fault plugin in two versions, the released
//! contract's plugin; built for `wasm32-wasip2`).

pub mod http;

use serde_json::Value;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").canonicalize().expect("repo root")
}

pub fn bin(name: &str) -> PathBuf {
    let p = root().join("target/release").join(name);
    assert!(p.exists(), "{} is missing: run the README's test command (it builds it)", p.display());
    let sources: &[&str] = match name {
        // Every crate of the gateway, and the contract it is generated from. (Not Cargo.lock:
        // a crate added elsewhere in the workspace changes it without relinking the gateway.)
        "tollgate" => &["host", "wit"],
        _ => &["tests/mock-vendor/src"],
    };
    assert_fresh(&p, sources);
    p
}

/// Refuses to test a build older than its sources: the suite always runs what was just built.
/// `E2E_TRUST_BUILDS=1` skips the check, for a developer testing a build while sources it
/// does not cover change beside it; the README's test command never sets it.
fn assert_fresh(built: &Path, sources: &[&str]) {
    if std::env::var_os("E2E_TRUST_BUILDS").is_some() {
        return;
    }
    fn newest(path: &Path) -> std::time::SystemTime {
        let Ok(meta) = std::fs::metadata(path) else { return std::time::UNIX_EPOCH };
        if !meta.is_dir() {
            return meta.modified().unwrap_or(std::time::UNIX_EPOCH);
        }
        std::fs::read_dir(path)
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| newest(&e.path()))
            .max()
            .unwrap_or(std::time::UNIX_EPOCH)
    }
    let built_at = std::fs::metadata(built).and_then(|m| m.modified()).expect("a built file's time");
    let source_at = sources.iter().map(|s| newest(&root().join(s))).max().unwrap_or(std::time::UNIX_EPOCH);
    assert!(
        built_at >= source_at,
        "{} is older than its sources: run the README's test command (it builds what is tested)",
        built.display()
    );
}

/// A built plugin: a shipped one (`plugins/shipped`), or a fixture such as `faulty-v1`.
pub fn plugin_file(name: &str) -> PathBuf {
    let shipped = include_str!("../../../plugins/shipped").lines().any(|l| l.trim() == name);
    let p = if shipped {
        root().join(format!("target/wasm32-unknown-unknown/plugin/tollgate_plugin_{name}.wasm"))
    } else {
        root().join(format!("target/fixtures/{name}.wasm"))
    };
    assert!(p.exists(), "{} is missing: run the README's test command (it builds plugins)", p.display());
    if shipped {
        assert_fresh(&p, &[&format!("plugins/{name}/src"), "plugin-sdk/src", "host/base/src", "wit"]);
    } else if name.starts_with("released-") {
        // Built from a released contract's text, which never changes, without the SDK.
        assert_fresh(&p, &[&format!("tests/fixtures/{name}/src"), "wit/released"]);
    } else {
        assert_fresh(&p, &["tests/fixtures/trap/src", "plugin-sdk/src", "host/base/src", "wit"]);
    }
    p
}

/// The master key the tests' gateways and CLI runs seal stored upstream keys with.
pub const TEST_MASTER_KEY: &str = "5eed5eed5eed5eed5eed5eed5eed5eed5eed5eed5eed5eed5eed5eed5eed5eed";

/// The `tollgate` binary, with the tests' master key in its environment.
pub fn tollgate_command() -> Command {
    let mut cmd = Command::new(bin("tollgate"));
    cmd.env("TOLLGATE_MASTER_KEY", TEST_MASTER_KEY);
    cmd
}

/// A child process killed when dropped.
pub struct Proc {
    pub child: Child,
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Spawns `cmd` and returns it with the first line it prints on stdout.
pub fn spawn_reading_first_line(mut cmd: Command, log: &Path) -> (Proc, String) {
    let stderr = std::fs::File::create(log).expect("log file");
    let mut child = cmd.stdout(Stdio::piped()).stderr(stderr).spawn().expect("spawn");
    let stdout = child.stdout.take().expect("stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut reader = BufReader::new(stdout);
        let mut line = String::new();
        let _ = reader.read_line(&mut line);
        let _ = tx.send(line);
        // Keep draining so the child never blocks on a full pipe.
        let mut sink = Vec::new();
        let _ = reader.read_to_end(&mut sink);
    });
    let line = rx.recv_timeout(Duration::from_secs(60)).unwrap_or_default();
    let proc = Proc { child };
    if line.is_empty() {
        panic!("process printed nothing; its log:\n{}", std::fs::read_to_string(log).unwrap_or_default());
    }
    (proc, line.trim().to_string())
}

static SEQ: AtomicU32 = AtomicU32::new(0);

/// A fresh folder for one test under target/e2e.
pub fn scratch(name: &str) -> PathBuf {
    let dir = root().join("target/e2e").join(format!(
        "{name}-{}-{}",
        std::process::id(),
        SEQ.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("scratch dir");
    dir
}

/// With `TEST_POSTGRES_URL` set to a PostgreSQL server's URL (`tests/run` starts one), a
/// new empty database on it for the gateway in `dir`; otherwise `None` (SQLite in `dir`).
pub fn fresh_database(dir: &Path) -> Option<String> {
    let server = std::env::var("TEST_POSTGRES_URL").ok().filter(|s| !s.is_empty())?;
    let server = server.trim_end_matches('/');
    let leaf = dir.file_name().unwrap().to_string_lossy().to_lowercase();
    let name: String =
        format!("tg_{leaf}").chars().map(|c| if c.is_ascii_alphanumeric() { c } else { '_' }).take(63).collect();
    let out = Command::new("psql")
        .args(["-v", "ON_ERROR_STOP=1", "-d", &format!("{server}/postgres")])
        .args(["-c", &format!("DROP DATABASE IF EXISTS {name}"), "-c", &format!("CREATE DATABASE {name}")])
        .output()
        .expect("run psql");
    assert!(out.status.success(), "creating database {name}: {}", String::from_utf8_lossy(&out.stderr));
    Some(format!("{server}/{name}"))
}

/// The Python (`$PYTHON`, else `python3`) that can `import_line`; `None` (`skipped`) when it
/// cannot.
pub fn python_with(import_line: &str, package: &str) -> Option<String> {
    let python = std::env::var("PYTHON").unwrap_or_else(|_| "python3".into());
    let has = Command::new(&python).args(["-c", import_line]).status().is_ok_and(|s| s.success());
    if !has {
        skipped(&format!("the {package} Python package is not installed (pip install {package})"));
        return None;
    }
    Some(python)
}

/// A test that cannot run here for want of `what` (a package, a browser): a failure in CI,
/// which installs everything the suite needs (`.ci/run`); elsewhere a notice, and a line in
/// `$TEST_SKIPS_FILE` (tests/run names that file and prints what it holds at the end, so a
/// local run never reads as whole when it was not).
pub fn skipped(what: &str) {
    assert!(std::env::var("CI").is_err(), "CI must have what this test needs: {what}");
    eprintln!("SKIPPED: {what}");
    if let Some(file) = std::env::var_os("TEST_SKIPS_FILE") {
        use std::io::Write;
        let test = std::thread::current().name().unwrap_or("a test").to_string();
        let mut f = std::fs::OpenOptions::new().create(true).append(true).open(file).expect("the skips file");
        // One write of the whole line: tests run in parallel, and appends of one write each
        // do not interleave.
        f.write_all(format!("{test}: {what}\n").as_bytes()).expect("write the skips file");
    }
}

/// Runs `tests/python/<script>` with `args` and fails the test with its output when it fails.
pub fn run_python_check(python: &str, script: &str, args: &[&str]) {
    let out =
        Command::new(python).arg(root().join("tests/python").join(script)).args(args).output().expect("run python");
    assert!(
        out.status.success(),
        "{script} failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Writes `table` as a price table in a scratch folder; returns the `pricing_file` setting
/// that names it (billing on).
pub fn pricing_setting(table: &str) -> String {
    let file = scratch("prices").join("pricing.toml");
    std::fs::write(&file, table).expect("write the price table");
    format!("pricing_file = \"{}\"\n", file.display())
}

pub struct Mock {
    _proc: Proc,
    pub addr: String,
}

impl Mock {
    pub fn start() -> Mock {
        Mock::start_with(&[])
    }

    /// With extra flags, e.g. `["--chunk-delay-ms", "250"]`.
    pub fn start_with(flags: &[&str]) -> Mock {
        let dir = scratch("mock");
        let mut cmd = Command::new(bin("mock-vendor"));
        cmd.args(["--listen", "127.0.0.1:0", "--threads", "1"]).args(flags);
        let (proc, line) = spawn_reading_first_line(cmd, &dir.join("mock.log"));
        let addr = line.strip_prefix("LISTENING ").expect("mock's first line").to_string();
        Mock { _proc: proc, addr }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn stats(&self) -> Value {
        http::request(&self.addr, "GET", "/_mock/stats", &[], b"").json()
    }

    /// The last body the mock received on `path`.
    pub fn last_body(&self, path: &str) -> Value {
        http::request(&self.addr, "GET", &format!("/_mock/last?path={path}"), &[], b"").json()
    }
}

/// A CA, and a certificate it signed for `localhost` and 127.0.0.1: the CA's PEM file and the
/// server's certificate and key files, in `dir`.
pub fn certificates(dir: &Path) -> (PathBuf, PathBuf, PathBuf) {
    use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name.push(DnType::CommonName, "Tollgate test CA");
    let ca = CertifiedIssuer::self_signed(ca, KeyPair::generate().unwrap()).unwrap();
    let key = KeyPair::generate().unwrap();
    let server = CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()])
        .unwrap()
        .signed_by(&key, &ca)
        .unwrap();
    let files = (dir.join("ca.pem"), dir.join("server.pem"), dir.join("server.key"));
    std::fs::write(&files.0, ca.pem()).unwrap();
    std::fs::write(&files.1, server.pem()).unwrap();
    std::fs::write(&files.2, key.serialize_pem()).unwrap();
    files
}

/// An S3-compatible server (moto's server mode, from PyPI) with one bucket, for the
/// archive's tests, over plain http or TLS; `None` (and says so) where moto is not installed,
/// except in CI, which installs it.
pub struct S3 {
    proc: Proc,
    pub addr: String,
    pub bucket: String,
    python: String,
    /// Over TLS: the CA its certificate chains to.
    tls_ca: Option<PathBuf>,
}

/// One request over TLS with Python's client, trusting only the given CA and no proxy (argv:
/// method, URL, CA file): prints the status, a newline and the body.
const TLS_REQUEST: &str = r#"
import ssl, sys, urllib.error, urllib.request
method, url, ca = sys.argv[1:4]
opener = urllib.request.build_opener(
    urllib.request.ProxyHandler({}), urllib.request.HTTPSHandler(context=ssl.create_default_context(cafile=ca)))
try:
    r = opener.open(urllib.request.Request(url, method=method), timeout=10)
    status, body = r.status, r.read()
except urllib.error.HTTPError as e:
    status, body = e.code, e.read()
sys.stdout.buffer.write(b"%d\n" % status + body)
"#;

impl S3 {
    pub fn start() -> Option<S3> {
        S3::launch(&scratch("s3"), None)
    }

    /// Over TLS, with a certificate for 127.0.0.1 from a CA made in `dir`: the server and the
    /// CA's file (a gateway reaches it with that file as its `tls_ca_file`).
    pub fn start_tls(dir: &Path) -> Option<(S3, PathBuf)> {
        let (ca, cert, key) = certificates(dir);
        S3::launch(dir, Some((ca.clone(), cert, key))).map(|s3| (s3, ca))
    }

    fn launch(dir: &Path, tls: Option<(PathBuf, PathBuf, PathBuf)>) -> Option<S3> {
        let python = std::env::var("PYTHON").unwrap_or_else(|_| "python3".into());
        let has_moto = Command::new(&python).args(["-c", "import moto.server"]).status().is_ok_and(|s| s.success());
        if !has_moto {
            skipped("moto's server is not installed (pip install 'moto[server]')");
            return None;
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let log_path = dir.join("moto.log");
        let log = std::fs::File::create(&log_path).unwrap();
        let mut moto = Command::new(&python);
        moto.args(["-m", "moto.server", "-H", "127.0.0.1", "-p", &port.to_string()]);
        if let Some((_, cert, key)) = &tls {
            moto.arg("--ssl-cert").arg(cert).arg("--ssl-key").arg(key);
        }
        let child = moto.stdout(log.try_clone().unwrap()).stderr(log).spawn().expect("start moto");
        let mut s3 = S3 {
            proc: Proc { child },
            addr: format!("127.0.0.1:{port}"),
            bucket: "tollgate-archive".into(),
            python,
            tls_ca: tls.map(|(ca, _, _)| ca),
        };
        let path = format!("/{}", s3.bucket);
        let (mut last, mut exited) = (Err("not asked yet".to_string()), None);
        let made = eventually(Duration::from_secs(60), || {
            exited = s3.proc.child.try_wait().ok().flatten();
            last = s3.request("PUT", &path);
            exited.is_some() || matches!(last, Ok((200, _)))
        });
        assert!(
            made && exited.is_none(),
            "moto did not make the bucket (exited: {exited:?}; last answer: {last:?}); its log:\n{}",
            std::fs::read_to_string(&log_path).unwrap()
        );
        Some(s3)
    }

    fn endpoint(&self) -> String {
        let scheme = if self.tls_ca.is_some() { "https" } else { "http" };
        format!("{scheme}://{}", self.addr)
    }

    /// A request with no body: the status and the body's text, or why there was no answer.
    fn request(&self, method: &str, path: &str) -> Result<(u16, String), String> {
        let Some(ca) = &self.tls_ca else {
            return http::try_request(&self.addr, method, path, &[], b"")
                .map(|r| (r.status, r.text()))
                .ok_or_else(|| "no answer".to_string());
        };
        let url = format!("{}{path}", self.endpoint());
        let out = Command::new(&self.python)
            .args(["-c", TLS_REQUEST, method, &url])
            .arg(ca)
            .output()
            .map_err(|e| e.to_string())?;
        let text = String::from_utf8_lossy(&out.stdout);
        match text.split_once('\n').and_then(|(status, body)| Some((status.parse().ok()?, body.to_string()))) {
            Some(answer) => Ok(answer),
            None => Err(format!("{}: {}", out.status, String::from_utf8_lossy(&out.stderr))),
        }
    }

    /// The gateway's settings for a bucket on this server, under `prefix`.
    pub fn settings(&self, prefix: &str) -> String {
        format!(
            "archive_s3_bucket = \"{}\"\narchive_s3_prefix = \"{prefix}\"\narchive_s3_endpoint = \"{}\"\narchive_s3_region = \"us-east-1\"\n",
            self.bucket,
            self.endpoint()
        )
    }

    /// The credentials a gateway reads from its environment (moto takes any).
    pub fn env(&self) -> [(&'static str, &'static str); 2] {
        [("AWS_ACCESS_KEY_ID", "tollgate-test"), ("AWS_SECRET_ACCESS_KEY", "tollgate-test-secret")]
    }

    /// The keys of the bucket's objects under `prefix` (ListObjectsV2).
    pub fn keys(&self, prefix: &str) -> Vec<String> {
        let list = self.request("GET", &format!("/{}?list-type=2&prefix={prefix}", self.bucket));
        let Ok((200, text)) = list else { panic!("listing the bucket: {list:?}") };
        text.split("<Key>").skip(1).filter_map(|k| k.split_once("</Key>").map(|(k, _)| k.to_string())).collect()
    }
}

pub struct Gateway {
    pub proc: Proc,
    pub addr: String,
    pub dir: PathBuf,
    pub config: PathBuf,
    /// A consumer key created before the start.
    pub key: String,
    /// The PostgreSQL database, on the PostgreSQL pass; `None`: SQLite under `dir/data`.
    pub database_url: Option<String>,
}

impl Gateway {
    /// The value of an unlabelled metric at `/metrics`.
    pub fn metric(&self, name: &str) -> f64 {
        let text = http::request(&self.addr, "GET", "/metrics", &[], b"").text();
        text.lines()
            .find_map(|l| l.strip_prefix(name).and_then(|v| v.strip_prefix(' ')).and_then(|v| v.trim().parse().ok()))
            .unwrap_or_else(|| panic!("no {name} in {text}"))
    }

    /// Starts a gateway in a scratch folder with `plugins` (name in target → file name in
    /// plugins_dir) and `extra` TOML appended to the config (settings and channels).
    pub fn start(name: &str, plugins: &[(&str, &str)], extra: &str) -> Gateway {
        Gateway::start_on(name, plugins, extra, None)
    }

    /// Like `start`, as a second node on `other`'s database (SQLite file or PostgreSQL).
    pub fn start_sharing(name: &str, plugins: &[(&str, &str)], extra: &str, other: &Gateway) -> Gateway {
        Gateway::start_on(name, plugins, extra, Some(other))
    }

    fn start_on(name: &str, plugins: &[(&str, &str)], extra: &str, shared: Option<&Gateway>) -> Gateway {
        Gateway::start_with_env(name, plugins, extra, shared, &[])
    }

    /// Like `start` (on `shared`'s database when given), with `env` set for the gateway.
    pub fn start_with_env(
        name: &str,
        plugins: &[(&str, &str)],
        extra: &str,
        shared: Option<&Gateway>,
        env: &[(&str, &str)],
    ) -> Gateway {
        let dir = scratch(name);
        let plugins_dir = dir.join("plugins");
        std::fs::create_dir_all(&plugins_dir).unwrap();
        for (src, dest) in plugins {
            std::fs::copy(plugin_file(src), plugins_dir.join(dest)).expect("copy plugin");
        }
        let config = dir.join("tollgate.toml");
        let database_url = match shared {
            Some(g) => g.database_url.clone(),
            None => fresh_database(&dir),
        };
        let database = match (&database_url, shared) {
            (Some(url), _) => format!("database_url = \"{url}\"\n"),
            (None, Some(g)) => format!("database_url = \"sqlite://{}/data/tollgate.db\"\n", g.dir.display()),
            (None, None) => String::new(),
        };
        let text = format!(
            "listen = \"127.0.0.1:0\"\ndata_dir = \"{d}/data\"\nplugins_dir = \"{d}/plugins\"\ncache_dir = \"{c}\"\nadmin_token = \"admin-secret\"\nkey_refresh_ms = 200\n{database}{extra}\n",
            d = dir.display(),
            c = root().join("target/e2e/plugin-cache").display()
        );
        std::fs::write(&config, text).unwrap();
        let key = Gateway::cli(&config, &["keys", "create", "--name", "e2e", "--balance", "10"]).trim().to_string();
        assert!(key.starts_with("sk-tg-"), "unexpected key output {key:?}");
        let mut cmd = tollgate_command();
        cmd.args(["--config", config.to_str().unwrap(), "serve"]).env("TOLLGATE_LOG", "info").envs(env.iter().copied());
        let (proc, line) = spawn_reading_first_line(cmd, &dir.join("gateway.log"));
        let addr = line.strip_prefix("tollgate listening on http://").expect("gateway's first line").to_string();
        let gw = Gateway { proc, addr, dir, config, key, database_url };
        gw.wait_healthy();
        gw
    }

    fn wait_healthy(&self) {
        let t = Instant::now();
        while t.elapsed() < Duration::from_secs(30) {
            if http::try_request(&self.addr, "GET", "/health", &[], b"").is_some_and(|r| r.status == 200) {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("gateway never became healthy; log:\n{}", self.log());
    }

    /// Runs the `tollgate` CLI and returns its stdout (panics on failure).
    pub fn cli(config: &Path, args: &[&str]) -> String {
        let out = tollgate_command().arg("--config").arg(config).args(args).output().expect("run tollgate");
        assert!(out.status.success(), "tollgate {args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap()
    }

    /// Creates another consumer key with `balance`; returns the key.
    pub fn create_key(&self, name: &str, balance: &str) -> String {
        Gateway::cli(&self.config, &["keys", "create", "--name", name, "--balance", balance]).trim().to_string()
    }

    /// The balance `keys list` shows for the key named `name`, in micros.
    pub fn balance_micros(&self, name: &str) -> i64 {
        let out = Gateway::cli(&self.config, &["keys", "list"]);
        let line =
            out.lines().find(|l| l.split('\t').nth(1) == Some(name)).unwrap_or_else(|| panic!("no key {name}: {out}"));
        let balance = line.split('\t').nth(3).unwrap();
        let negative = balance.starts_with('-');
        let (whole, frac) = balance.trim_start_matches('-').split_once('.').unwrap();
        let micros = whole.parse::<i64>().unwrap() * 1_000_000 + frac.parse::<i64>().unwrap();
        if negative {
            -micros
        } else {
            micros
        }
    }

    /// The id `keys list` shows for the key named `name`.
    pub fn key_id(&self, name: &str) -> String {
        let out = Gateway::cli(&self.config, &["keys", "list"]);
        let line =
            out.lines().find(|l| l.split('\t').nth(1) == Some(name)).unwrap_or_else(|| panic!("no key {name}: {out}"));
        line.split('\t').next().unwrap().to_string()
    }

    /// Waits until the gateway accepts `key` (a key created while it serves is taken within
    /// `key_refresh_ms`).
    pub fn wait_for_key(&self, key: &str) {
        let auth = format!("Bearer {key}");
        let accepted = || http::request(&self.addr, "GET", "/v1/tasks", &[("authorization", &auth)], b"").status == 200;
        assert!(eventually(Duration::from_secs(5), accepted), "the gateway never accepted the key");
    }

    /// Creates a consumer key with `balance` and waits until the gateway accepts it.
    pub fn new_key(&self, name: &str, balance: &str) -> String {
        let key = self.create_key(name, balance);
        self.wait_for_key(&key);
        key
    }

    /// Holds the database's write lock (SQLite: a transaction begun IMMEDIATE; PostgreSQL:
    /// the call log's table locked EXCLUSIVE) until the returned process is dropped: the call
    /// log's writer waits, as behind a slow or stalled database.
    pub fn hold_writes(&self) -> Proc {
        let mut cmd = match &self.database_url {
            Some(url) => {
                let mut c = Command::new("psql");
                c.args(["-v", "ON_ERROR_STOP=1", "-q", "-d", url]);
                c
            }
            None => {
                let python = std::env::var("PYTHON").unwrap_or_else(|_| "python3".into());
                let db = self.dir.join("data/tollgate.db");
                let script = "import sqlite3, sys\n\
                              c = sqlite3.connect(sys.argv[1], isolation_level=None, timeout=10)\n\
                              c.execute('BEGIN IMMEDIATE')\n\
                              print('locked', flush=True)\n\
                              sys.stdin.read()\n";
                let mut c = Command::new(python);
                c.args(["-c", script, db.to_str().unwrap()]);
                c
            }
        };
        let mut child =
            cmd.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::inherit()).spawn().expect("spawn");
        if self.database_url.is_some() {
            use std::io::Write;
            let sql = "BEGIN;\nLOCK TABLE call_log IN EXCLUSIVE MODE;\n\\echo locked\n";
            child.stdin.as_mut().unwrap().write_all(sql.as_bytes()).unwrap();
        }
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
        assert_eq!(line.trim(), "locked", "the database's write lock was not taken");
        Proc { child }
    }

    /// Waits until the key named `name` shows `micros` (charges are written in batches).
    pub fn balance_becomes(&self, name: &str, micros: i64) {
        let ok = eventually(Duration::from_secs(5), || self.balance_micros(name) == micros);
        assert!(ok, "balance of {name}: {} micros, expected {micros}", self.balance_micros(name));
    }

    /// Opens a WebSocket on `path` with `key` at the upgrade (tungstenite, a 20 s read
    /// timeout); the HTTP status when the upgrade is refused.
    pub fn socket(&self, path: &str, key: Option<&str>) -> Result<tungstenite::WebSocket<std::net::TcpStream>, u16> {
        use tungstenite::client::IntoClientRequest;
        let stream = std::net::TcpStream::connect(&self.addr).expect("connect");
        stream.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        let mut request = format!("ws://{}{path}", self.addr).into_client_request().unwrap();
        if let Some(k) = key {
            request.headers_mut().insert("authorization", format!("Bearer {k}").parse().unwrap());
        }
        match tungstenite::client(request, stream) {
            Ok((socket, _)) => Ok(socket),
            Err(tungstenite::HandshakeError::Failure(tungstenite::Error::Http(r))) => Err(r.status().as_u16()),
            Err(e) => panic!("the upgrade failed: {e}"),
        }
    }

    /// `tollgate ledger verify`: (success, output).
    pub fn verify_ledger(&self) -> (bool, String) {
        let out = tollgate_command().arg("--config").arg(&self.config).args(["ledger", "verify"]).output().unwrap();
        (out.status.success(), String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// What the database holds, as raw as it can be read: on SQLite the database and WAL
    /// files' bytes, on PostgreSQL every row of `table` as text. For checks that a secret is
    /// not stored in clear.
    pub fn raw_database(&self, table: &str) -> String {
        match &self.database_url {
            Some(url) => {
                let out = Command::new("psql")
                    .args(["-At", "-d", url, "-c", &format!("SELECT * FROM {table}")])
                    .output()
                    .expect("run psql");
                assert!(out.status.success(), "psql: {}", String::from_utf8_lossy(&out.stderr));
                String::from_utf8_lossy(&out.stdout).into_owned()
            }
            None => ["tollgate.db", "tollgate.db-wal"]
                .iter()
                .filter_map(|f| std::fs::read(self.dir.join("data").join(f)).ok())
                .map(|b| String::from_utf8_lossy(&b).into_owned())
                .collect(),
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("gateway.log")).unwrap_or_default()
    }

    pub fn plugins_dir(&self) -> PathBuf {
        self.dir.join("plugins")
    }

    /// POST JSON with the consumer key.
    pub fn post(&self, path: &str, json: &str) -> http::Response {
        http::request(
            &self.addr,
            "POST",
            path,
            &[("authorization", &format!("Bearer {}", self.key)), ("content-type", "application/json")],
            json.as_bytes(),
        )
    }

    /// A chat call with `key`: one user message, plus `extra` JSON members (e.g. `,"max_tokens":5`).
    pub fn chat(&self, key: &str, model: &str, extra: &str) -> http::Response {
        let body = format!(r#"{{"model":"{model}","messages":[{{"role":"user","content":"hi"}}]{extra}}}"#);
        http::request(
            &self.addr,
            "POST",
            "/v1/chat/completions",
            &[("authorization", &format!("Bearer {key}"))],
            body.as_bytes(),
        )
    }

    pub fn admin_plugins(&self) -> Value {
        http::request(&self.addr, "GET", "/admin/plugins", &[("authorization", "Bearer admin-secret")], b"").json()
    }

    /// Sends SIGTERM.
    pub fn terminate(&self) {
        let status = Command::new("kill").args(["-TERM", &self.proc.child.id().to_string()]).status().unwrap();
        assert!(status.success());
    }

    /// Waits for the process to exit, returning its exit status.
    pub fn wait_exit(&mut self, within: Duration) -> Option<std::process::ExitStatus> {
        let t = Instant::now();
        while t.elapsed() < within {
            if let Ok(Some(s)) = self.proc.child.try_wait() {
                return Some(s);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }
}

/// Every finished file under `dir`, at any depth, sorted (none when it does not exist). Names
/// starting with `.` are files still being written (the archives write `.name.part` and rename),
/// so they are left out: a test that waits for a count never counts half a write.
pub fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut dirs = vec![dir.to_path_buf()];
    while let Some(d) = dirs.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            if e.path().is_dir() {
                dirs.push(e.path())
            } else if !e.file_name().to_string_lossy().starts_with('.') {
                out.push(e.path())
            }
        }
    }
    out.sort();
    out
}

/// Checks a gateway whose channel for `gpt-4o-mini` speaks HTTP/2 and whose channel for
/// `gpt-4o` speaks HTTP/1.1, both to `mock` (pacing its chunks): a whole chat and a stream go
/// over HTTP/2, the stream relayed as its chunks arrive (at least `paced` from its first
/// token to `[DONE]`) with the usage chunk it asked for, and the other model's chat goes over
/// HTTP/1.1.
pub fn chats_over_http2_and_http1(gw: &Gateway, mock: &Mock, paced: Duration) {
    let version = || mock.last_body("/v1/chat/completions")["version"].as_str().unwrap_or_default().to_string();
    let chat = r#"{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi"}]}"#;
    let r = gw.post("/v1/chat/completions", chat);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["usage"]["total_tokens"], 12);
    assert_eq!(version(), "HTTP/2.0");

    let auth = format!("Bearer {}", gw.key);
    let body = r#"{"model":"gpt-4o-mini","stream":true,"stream_options":{"include_usage":true},"messages":[]}"#;
    let t = http::timed(&gw.addr, "/v1/chat/completions", &[("authorization", &auth)], body.as_bytes());
    assert_eq!(t.status, 200);
    let (first, last) = (t.arrival_of("tok0").expect("first token"), t.arrival_of("[DONE]").expect("[DONE]"));
    assert!(last - first >= paced, "first token at {first:?}, end at {last:?}: buffered");
    assert!(http::sse_data(&t.text()).iter().any(|d| d.contains("\"usage\":{")));
    assert_eq!(version(), "HTTP/2.0");

    let r = gw.post("/v1/chat/completions", &chat.replace("gpt-4o-mini", "gpt-4o"));
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(version(), "HTTP/1.1");
}

/// A channel table for the config.
pub fn channel(name: &str, plugin: &str, base_url: &str, models: &[&str], keys: &[&str]) -> String {
    format!("[[channel]]\nname = \"{name}\"\nplugin = \"{plugin}\"\nbase_url = \"{base_url}\"\nmodels = {models:?}\nkeys = {keys:?}\n")
}

/// Polls `f` until it returns true or `within` passes.
pub fn eventually(within: Duration, mut f: impl FnMut() -> bool) -> bool {
    let t = Instant::now();
    while t.elapsed() < within {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    false
}
