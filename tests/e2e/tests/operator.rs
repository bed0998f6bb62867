//! What an operator meets: safe defaults (registration closed; open registration without a
//! price table refused at start) and a missing configuration file named, never replaced by
//! silent defaults.

use tollgate_e2e::{channel, http, scratch, tollgate_command, Gateway, Mock};

#[test]
fn registration_is_closed_by_default() {
    let mock = Mock::start();
    let ch = channel("mock", "openai", &mock.url(), &["gpt-4o-mini"], &["up"]);
    let gw = Gateway::start("closed", &[("openai", "openai.wasm")], &ch);
    let r =
        http::request(&gw.addr, "POST", "/v1/auth/register", &[], br#"{"name":"eve","password":"a long password"}"#);
    assert_eq!((r.status, r.error_code().as_str()), (403, "registration_closed"), "{}", r.text());
}

#[test]
fn serve_refuses_open_registration_without_a_price_table() {
    let dir = scratch("open-unbilled");
    let config = dir.join("tollgate.toml");
    let settings =
        format!("listen = \"127.0.0.1:0\"\ndata_dir = \"{d}/data\"\nallow_registration = true\n", d = dir.display());
    std::fs::write(&config, &settings).unwrap();
    let out = tollgate_command().arg("--config").arg(&config).arg("serve").output().unwrap();
    assert!(!out.status.success(), "refused to start");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("allow_unbilled_registration"), "says how to mean it: {err}");
}

#[test]
fn a_missing_configuration_file_is_an_error_naming_the_path() {
    let dir = scratch("no-config");
    let out = tollgate_command().current_dir(&dir).args(["keys", "list"]).output().unwrap();
    assert!(!out.status.success(), "an error, not an empty database");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("config/tollgate.toml") && err.contains("--config"), "{err}");
    assert!(!dir.join("data").exists(), "no database was created in {}", dir.display());
    let out = tollgate_command().current_dir(&dir).args(["--config", "elsewhere.toml", "serve"]).output().unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("elsewhere.toml"));
}

#[test]
fn metrics_can_require_a_token() {
    let mock = Mock::start();
    let ch = channel("mock", "openai", &mock.url(), &["gpt-4o-mini"], &["up"]);
    let gw =
        Gateway::start("metrics-token", &[("openai", "openai.wasm")], &format!("metrics_token = \"m-secret\"\n{ch}"));
    let r = http::request(&gw.addr, "GET", "/metrics", &[], b"");
    assert_eq!((r.status, r.error_code().as_str()), (401, "metrics_token_required"));
    let r = http::request(&gw.addr, "GET", "/metrics", &[("authorization", "Bearer wrong")], b"");
    assert_eq!(r.status, 401);
    let r = http::request(&gw.addr, "GET", "/metrics", &[("authorization", "Bearer m-secret")], b"");
    assert_eq!(r.status, 200);
    assert!(r.text().contains("tollgate_in_flight"), "{}", r.text());
}

#[test]
fn the_command_line_is_friendly_to_pipes_scripts_and_people() {
    use std::io::Write;
    use std::process::Stdio;
    let mock = Mock::start();
    let ch = channel("mock", "openai", &mock.url(), &["gpt-4o-mini"], &["up"]);
    let gw = Gateway::start(
        "cli",
        &[("openai", "openai.wasm")],
        &format!("allow_registration = true\nallow_unbilled_registration = true\n{ch}"),
    );
    // Tables have a header row.
    let keys = Gateway::cli(&gw.config, &["keys", "list"]);
    assert!(keys.starts_with("id\tname\tprefix\tbalance"), "{keys}");
    assert!(Gateway::cli(&gw.config, &["users", "list"]).starts_with("id\tname\trole"));
    // Times accept ISO dates; a bad one says what is accepted.
    Gateway::cli(&gw.config, &["logs", "--from", "2026-01-01", "--to", "2100-01-01T00:00Z"]);
    let out =
        tollgate_command().arg("--config").arg(&gw.config).args(["logs", "--from", "yesterday"]).output().unwrap();
    assert!(!out.status.success() && String::from_utf8_lossy(&out.stderr).contains("2026-12-01"));
    // A reader that goes away is not a crash.
    let mut child = tollgate_command()
        .arg("--config")
        .arg(&gw.config)
        .args(["logs", "--limit", "1000"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    let out = child.wait_with_output().unwrap();
    assert!(!String::from_utf8_lossy(&out.stderr).contains("panicked"), "{}", String::from_utf8_lossy(&out.stderr));
    // A password read from standard input, never the command line.
    let mut child = tollgate_command()
        .arg("--config")
        .arg(&gw.config)
        .args(["users", "create", "--name", "ops", "--password-stdin", "--role", "admin"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(b"a long admin password\n").unwrap();
    assert!(child.wait().unwrap().success());
    let r =
        http::request(&gw.addr, "POST", "/v1/auth/login", &[], br#"{"name":"ops","password":"a long admin password"}"#);
    assert_eq!(r.status, 200, "{}", r.text());
    // Allowed values are listed, and a log written to a file carries no colour codes.
    let help = tollgate_command().args(["users", "create", "--help"]).output().unwrap();
    assert!(String::from_utf8_lossy(&help.stdout).contains("admin"), "roles are listed");
    assert!(!gw.log().contains('\u{1b}'), "no ANSI escape codes in a log file");
}

#[test]
fn a_channel_without_keys_is_named_with_its_fix_at_start_in_health_and_in_the_error() {
    let mock = Mock::start();
    let empty = channel("empty", "openai", &mock.url(), &["gpt-4o-mini"], &[]);
    let gw = Gateway::start("keyless", &[("openai", "openai.wasm")], &empty);
    assert!(gw.log().contains("channel has no upstream keys"), "serve warns: {}", gw.log());
    let health = http::request(&gw.addr, "GET", "/health", &[], b"");
    assert_eq!(health.status, 200, "liveness stays 200");
    let h = health.json();
    assert_eq!(h["ready"], false, "{h}");
    assert_eq!(h["channels_not_ready"][0]["channel"], "empty", "{h}");
    let r = gw.chat(&gw.key, "gpt-4o-mini", "");
    assert_eq!((r.status, r.error_code().as_str()), (503, "channel_misconfigured"), "{}", r.text());
    let message = r.json()["error"]["message"].as_str().unwrap().to_string();
    assert!(message.contains("'empty'") && message.contains("upstream import --channel empty"), "{message}");
}
