//! The gateway driven by the official `openai` Python SDK (tests/python/openai_sdk_check.py).
//! `.ci/run` installs the SDK; outside CI a machine without it skips with a notice.

use std::process::Command;
use tollgate_e2e::{channel, root, Gateway, Mock};

#[test]
fn the_official_openai_sdk_works_against_tollgate() {
    let python = std::env::var("PYTHON").unwrap_or_else(|_| "python3".into());
    let has_sdk = Command::new(&python).args(["-c", "import openai"]).status().is_ok_and(|s| s.success());
    if !has_sdk {
        assert!(std::env::var("CI").is_err(), "CI must have the openai package (pip install openai)");
        eprintln!("SKIPPED: the openai Python package is not installed (pip install openai)");
        return;
    }
    let mock = Mock::start();
    let ch = channel(
        "mock",
        "openai",
        &mock.url(),
        &["gpt-4o-mini", "text-embedding-3-small", "dall-e-3", "cut-stream"],
        &["up"],
    );
    let gw = Gateway::start("pysdk", &[("openai", "openai.wasm")], &ch);
    let out = Command::new(&python)
        .arg(root().join("tests/python/openai_sdk_check.py"))
        .arg(format!("http://{}", gw.addr))
        .arg(&gw.key)
        .output()
        .expect("run python");
    assert!(
        out.status.success(),
        "openai SDK check failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
