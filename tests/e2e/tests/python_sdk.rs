//! The gateway driven by the official `openai` Python SDK (tests/python/openai_sdk_check.py).
//! `.ci/run` installs the SDK; outside CI a machine without it skips with a notice.

use tollgate_e2e::{channel, pricing_setting, python_with, run_python_check, Gateway, Mock};

#[test]
fn the_official_openai_sdk_works_against_tollgate() {
    let Some(python) = python_with("import openai", "openai") else { return };
    let mock = Mock::start();
    let ch = channel(
        "mock",
        "openai",
        &mock.url(),
        &["gpt-4o-mini", "text-embedding-3-small", "dall-e-3", "cut-stream", "tts-1", "whisper-1", "gpt-4o-transcribe"],
        &["up"],
    );
    let gw = Gateway::start("pysdk", &[("openai", "openai.wasm")], &ch);
    run_python_check(&python, "openai_sdk_check.py", &[&format!("http://{}", gw.addr), &gw.key]);
}

#[test]
fn the_official_openai_sdk_makes_lists_downloads_and_deletes_videos() {
    let Some(python) = python_with("import openai", "openai") else { return };
    let mock = Mock::start();
    let ch = channel("video", "faulty", &mock.url(), &["sora-2"], &["k1"]);
    let prices = "[models.\"sora-2\"]\nper_second = \"0.1\"\n";
    let extra = format!("fetch_allow_private_hosts = [\"127.0.0.1\"]\n{}{ch}", pricing_setting(prices));
    let gw = Gateway::start("pysdk-videos", &[("faulty-v1", "faulty.wasm")], &extra);
    run_python_check(&python, "openai_videos_check.py", &[&format!("http://{}", gw.addr), &gw.key, &mock.url()]);
    // Charged what was rendered (3 s and 7 s at 0.1); the failed video and the refused
    // creates cost nothing.
    assert!(
        tollgate_e2e::eventually(std::time::Duration::from_secs(5), || gw.balance_micros("e2e")
            == 10_000_000 - 1_000_000),
        "balance {}",
        gw.balance_micros("e2e")
    );
    let (ok, report) = gw.verify_ledger();
    assert!(ok, "{report}");
}
