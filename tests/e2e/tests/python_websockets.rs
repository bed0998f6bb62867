//! The gateway's speech sockets driven by the `websockets` Python client
//! (tests/python/websocket_check.py): MiniMax's own protocol and the MiniMax proxy's dialect.
//! `.ci/run` installs it; outside CI a machine without it skips with a notice.

use std::process::Command;
use tollgate_e2e::{channel, eventually, pricing_setting, python_with, root, Gateway, Mock};

#[test]
fn the_websockets_python_client_speaks_to_both_speech_sockets() {
    let Some(python) = python_with("import websockets.sync.client", "websockets") else { return };
    let mock = Mock::start();
    let ch = channel("mm", "minimax", &mock.url(), &["speech-2.8-hd"], &["mm-key"]);
    let prices = pricing_setting("[models.\"speech-2.8-hd\"]\ncharacters_per_10k = \"100\"\n");
    let extra = format!("minimax_proxy_socket_path = \"/tts/ws\"\n{prices}{ch}");
    let gw = Gateway::start("python-websockets", &[("minimax", "minimax.wasm")], &extra);
    let key = gw.create_key("py", "10");
    gw.wait_for_key(&key);
    let out = Command::new(&python)
        .arg(root().join("tests/python/websocket_check.py"))
        .arg(format!("ws://{}", gw.addr))
        .arg(&key)
        .arg("/tts/ws")
        .output()
        .expect("run python");
    assert!(
        out.status.success(),
        "websocket check failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // 17 + 4 characters at 0.01.
    assert!(eventually(std::time::Duration::from_secs(5), || gw.balance_micros("py") == 10_000_000 - 210_000));
}
