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
