//! MiniMax's WebSocket speech through the real binary (`vendor-apis.md` §1.4), with a real
//! WebSocket client (tungstenite) against the mock's MiniMax socket: the consumer speaks
//! MiniMax's own protocol at `/ws/v1/t2a_v2`, each `task_continue` is reserved by its
//! characters and charged what MiniMax counted in its final frame; a balance that runs out gets
//! MiniMax's failure frame and the session ends; an upstream gone mid-synthesis is an error
//! frame and is charged its reservation; a consumer gone before any audio pays nothing; the
//! upgrade refuses bad keys and a key's sessions beyond its cap; oversize messages close the
//! session; shutdown closes open sessions with 1001.

use serde_json::{json, Value};
use std::net::TcpStream;
use std::time::Duration;
use tollgate_e2e::{channel, eventually, pricing_setting, Gateway, Mock};
use tungstenite::client::IntoClientRequest;
use tungstenite::handshake::HandshakeError;
use tungstenite::{Message, WebSocket};

/// 0.01 per character (10,000 micros).
const PRICES: &str = "[models.\"speech-2.8-hd\"]\ncharacters_per_10k = \"100\"\n";
const PER_CHAR: i64 = 10_000;

fn gateway(mock: &Mock, extra: &str) -> Gateway {
    let ch = channel("mm", "minimax", &mock.url(), &["speech-2.8-hd"], &["mm-key"]);
    Gateway::start("realtime", &[("minimax", "minimax.wasm")], &format!("{extra}\n{}{ch}", pricing_setting(PRICES)))
}

type Socket = WebSocket<TcpStream>;

/// Opens the speech socket with `key`; the HTTP status when the upgrade is refused.
fn connect(gw: &Gateway, key: Option<&str>) -> Result<Socket, u16> {
    let stream = TcpStream::connect(&gw.addr).expect("connect");
    stream.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let mut request = format!("ws://{}/ws/v1/t2a_v2", gw.addr).into_client_request().unwrap();
    if let Some(k) = key {
        request.headers_mut().insert("authorization", format!("Bearer {k}").parse().unwrap());
    }
    match tungstenite::client(request, stream) {
        Ok((socket, _)) => Ok(socket),
        Err(HandshakeError::Failure(tungstenite::Error::Http(r))) => Err(r.status().as_u16()),
        Err(e) => panic!("the upgrade failed: {e}"),
    }
}

fn send(ws: &mut Socket, frame: Value) {
    ws.send(Message::text(frame.to_string())).expect("send");
}

/// The next text frame, as JSON; `None` once the socket closed (its close code with it).
fn next(ws: &mut Socket) -> Result<Value, Option<u16>> {
    loop {
        match ws.read() {
            Ok(Message::Text(t)) => return Ok(serde_json::from_str(&t).expect("a JSON frame")),
            Ok(Message::Close(c)) => return Err(c.map(|c| c.code.into())),
            Ok(_) => continue,
            Err(_) => return Err(None),
        }
    }
}

fn event(ws: &mut Socket) -> Value {
    next(ws).unwrap_or_else(|code| panic!("the socket closed ({code:?}) where a frame was expected"))
}

/// Opens the session: MiniMax's `connected_success`, then `task_start` → `task_started`.
fn started(gw: &Gateway, key: &str) -> Socket {
    let mut ws = connect(gw, Some(key)).expect("the upgrade");
    assert_eq!(event(&mut ws)["event"], "connected_success");
    send(
        &mut ws,
        json!({ "event": "task_start", "model": "speech-2.8-hd", "voice_setting": { "voice_id": "male-qn-qingse" } }),
    );
    assert_eq!(event(&mut ws)["event"], "task_started");
    ws
}

/// Speaks `text`: the audio of its `task_continued` frames (hex decoded) and its final frame.
fn speak(ws: &mut Socket, text: &str) -> (Vec<u8>, Value) {
    send(ws, json!({ "event": "task_continue", "text": text }));
    let mut audio = Vec::new();
    loop {
        let f = event(ws);
        assert_eq!(f["event"], "task_continued", "{f}");
        audio.extend(hex::decode(f["data"]["audio"].as_str().unwrap()).unwrap());
        if f["is_final"] == true {
            return (audio, f);
        }
    }
}

fn balance_becomes(gw: &Gateway, name: &str, micros: i64) {
    let ok = eventually(Duration::from_secs(5), || gw.balance_micros(name) == micros);
    assert!(ok, "balance {} micros, expected {micros}", gw.balance_micros(name));
}

/// What MiniMax billed `key` for its sockets (the characters of the final frames it sent).
fn minimax_billed(mock: &Mock, key: &str) -> i64 {
    mock.stats()["ws_characters"][key].as_i64().unwrap_or(0)
}

#[test]
fn minimax_speech_over_a_websocket_is_minimaxs_own_protocol_charged_per_piece() {
    let mock = Mock::start();
    let gw = gateway(&mock, "");
    let key = gw.create_key("ann", "10");
    assert!(eventually(Duration::from_secs(5), || connect(&gw, Some(&key)).is_ok()));
    let mut ws = started(&gw, &key);
    let (audio, last) = speak(&mut ws, "你好 world");
    assert_eq!(audio, "ID3mock-audio:你好 world".as_bytes(), "the audio arrives whole, in order");
    assert_eq!(last["extra_info"]["usage_characters"], 10, "MiniMax counts a CJK character 2");
    speak(&mut ws, "again");
    send(&mut ws, json!({ "event": "task_finish" }));
    assert_eq!(event(&mut ws)["event"], "task_finished");
    assert!(next(&mut ws).is_err(), "MiniMax closes after task_finished");
    // Charged what MiniMax counted, piece by piece: 10 + 5 characters.
    balance_becomes(&gw, "ann", 10_000_000 - 15 * PER_CHAR);
    assert_eq!(minimax_billed(&mock, "mm-key"), 15);
    let (ok, report) = gw.verify_ledger();
    assert!(ok, "{report}");
}

#[test]
fn the_upgrade_refuses_missing_and_bad_keys_and_sessions_beyond_a_keys_cap() {
    let mock = Mock::start();
    let gw = gateway(&mock, "max_sockets_per_key = 2");
    assert_eq!(connect(&gw, None).err(), Some(401));
    let key = gw.create_key("ann", "10");
    // A plain request to the socket's route is told to upgrade.
    let plain = |key: &str| {
        let auth = format!("Bearer {key}");
        tollgate_e2e::http::request(&gw.addr, "GET", "/ws/v1/t2a_v2", &[("authorization", &auth)], b"")
    };
    assert!(eventually(Duration::from_secs(5), || plain(&key).status != 401));
    let r = plain(&key);
    assert_eq!((r.status, r.json()["error"]["code"].as_str()), (400, Some("websocket_required")), "{}", r.text());
    assert_eq!(connect(&gw, Some("sk-tg-nonsense")).err(), Some(401));
    let held = [started(&gw, &key), started(&gw, &key)];
    assert_eq!(connect(&gw, Some(&key)).err(), Some(429), "a key holds at most its cap of sessions");
    drop(held);
    assert!(eventually(Duration::from_secs(5), || connect(&gw, Some(&key)).is_ok()), "closing one frees its place");
}

#[test]
fn a_balance_that_runs_out_ends_the_session_with_minimaxs_failure_and_nothing_is_free() {
    let mock = Mock::start();
    let gw = gateway(&mock, "");
    // 5 characters' worth.
    let key = gw.create_key("poor", "0.05");
    assert!(eventually(Duration::from_secs(5), || connect(&gw, Some(&key)).is_ok()));
    let mut ws = started(&gw, &key);
    speak(&mut ws, "abc");
    send(&mut ws, json!({ "event": "task_continue", "text": "abcdef" }));
    let failed = event(&mut ws);
    assert_eq!(failed["event"], "task_failed", "{failed}");
    assert_eq!(failed["base_resp"]["status_code"], 1008, "MiniMax's code for a balance too low: {failed}");
    assert!(next(&mut ws).is_err(), "the session ends");
    // The refused text never reached MiniMax: charged exactly what was delivered.
    balance_becomes(&gw, "poor", 50_000 - 3 * PER_CHAR);
    assert_eq!(minimax_billed(&mock, "mm-key"), 3);
}

#[test]
fn an_upstream_gone_mid_synthesis_is_an_error_frame_and_charged_its_reservation() {
    let mock = Mock::start();
    let gw = gateway(&mock, "");
    let key = gw.create_key("ann", "10");
    assert!(eventually(Duration::from_secs(5), || connect(&gw, Some(&key)).is_ok()));
    let mut ws = started(&gw, &key);
    send(&mut ws, json!({ "event": "task_continue", "text": "[drop] hello" }));
    let first = event(&mut ws);
    assert_eq!((first["event"].as_str(), first["is_final"].as_bool()), (Some("task_continued"), Some(false)));
    let failed = event(&mut ws);
    assert_eq!(failed["event"], "task_failed", "{failed}");
    assert!(next(&mut ws).is_err());
    // Audio reached the consumer and MiniMax never said how much: its 12 characters reserved.
    balance_becomes(&gw, "ann", 10_000_000 - 12 * PER_CHAR);
}

#[test]
fn a_consumer_gone_before_any_audio_pays_nothing() {
    let mock = Mock::start();
    let gw = gateway(&mock, "");
    let key = gw.create_key("ann", "10");
    assert!(eventually(Duration::from_secs(5), || connect(&gw, Some(&key)).is_ok()));
    let mut ws = started(&gw, &key);
    // MiniMax takes its time with this one; the consumer leaves before any audio.
    send(&mut ws, json!({ "event": "task_continue", "text": "[slow] hello" }));
    drop(ws);
    std::thread::sleep(Duration::from_millis(1500));
    balance_becomes(&gw, "ann", 10_000_000);
    let (ok, report) = gw.verify_ledger();
    assert!(ok, "{report}");
}

#[test]
fn an_oversize_message_closes_the_session_and_shutdown_closes_open_ones_with_1001() {
    let mock = Mock::start();
    let mut gw = gateway(&mock, "socket_max_message_bytes = 4096");
    let key = gw.create_key("ann", "10");
    assert!(eventually(Duration::from_secs(5), || connect(&gw, Some(&key)).is_ok()));
    let mut ws = started(&gw, &key);
    send(&mut ws, json!({ "event": "task_continue", "text": "x".repeat(5000) }));
    assert_eq!(next(&mut ws).err(), Some(Some(1009)), "too big: closed with 1009");
    balance_becomes(&gw, "ann", 10_000_000);

    let mut open = started(&gw, &key);
    gw.terminate();
    assert_eq!(next(&mut open).err(), Some(Some(1001)), "shutdown closes open sessions as going away");
    assert!(gw.wait_exit(Duration::from_secs(15)).is_some_and(|s| s.success()));
}
