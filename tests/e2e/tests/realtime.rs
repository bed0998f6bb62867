//! MiniMax's WebSocket speech through the real binary (`vendor-apis.md` §1.4), with a real
//! WebSocket client (tungstenite) against the mock's MiniMax socket: the consumer speaks
//! MiniMax's own protocol at `/ws/v1/t2a_v2`, each `task_continue` is reserved by its
//! characters and charged what MiniMax counted in its final frame; a balance that runs out gets
//! MiniMax's failure frame and the session ends; an upstream gone mid-synthesis is an error
//! frame and is charged its reservation; a consumer gone mid-synthesis pays what MiniMax
//! counted; the MiniMax proxy's dialect (key in the first frame, `usage_summary`); the
//! upgrade refuses bad keys and a key's sessions beyond its cap; oversize messages close the
//! session; shutdown closes open sessions with 1001.

use serde_json::{json, Value};
use std::net::TcpStream;
use std::time::Duration;
use tollgate_e2e::{channel, eventually, pricing_setting, Gateway, Mock};
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
    gw.socket("/ws/v1/t2a_v2", key)
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

/// What MiniMax billed `key` for its sockets (the characters of the final frames it sent).
fn minimax_billed(mock: &Mock, key: &str) -> i64 {
    mock.stats()["ws_characters"][key].as_i64().unwrap_or(0)
}

#[test]
fn minimax_speech_over_a_websocket_is_minimaxs_own_protocol_charged_per_piece() {
    let mock = Mock::start();
    let gw = gateway(&mock, "");
    let key = gw.create_key("ann", "10");
    gw.wait_for_key(&key);
    let mut ws = started(&gw, &key);
    let (audio, last) = speak(&mut ws, "你好 world");
    assert_eq!(audio, "ID3mock-audio:你好 world".as_bytes(), "the audio arrives whole, in order");
    assert_eq!(last["extra_info"]["usage_characters"], 10, "MiniMax counts a CJK character 2");
    speak(&mut ws, "again");
    send(&mut ws, json!({ "event": "task_finish" }));
    assert_eq!(event(&mut ws)["event"], "task_finished");
    assert!(next(&mut ws).is_err(), "MiniMax closes after task_finished");
    // Charged what MiniMax counted, piece by piece: 10 + 5 characters.
    gw.balance_becomes("ann", 10_000_000 - 15 * PER_CHAR);
    assert_eq!(minimax_billed(&mock, "mm-key"), 15);
    let (ok, report) = gw.verify_ledger();
    assert!(ok, "{report}");
}

#[test]
fn a_piece_is_refused_while_charges_cannot_be_queued_and_each_piece_spoken_is_charged_once() {
    let mock = Mock::start();
    let gw = gateway(&mock, "call_log_queue = 2");
    let key = gw.create_key("ann", "100");
    gw.wait_for_key(&key);
    let mut ws = started(&gw, &key);
    // The database stops taking writes: pieces are spoken until two charges wait, then the
    // next is refused before MiniMax hears it.
    let lock = gw.hold_writes();
    let mut spoken: i64 = 0;
    let failed = 'pieces: loop {
        send(&mut ws, json!({ "event": "task_continue", "text": "abc" }));
        loop {
            let f = event(&mut ws);
            if f["event"] != "task_continued" {
                break 'pieces f;
            }
            if f["is_final"] == true {
                break;
            }
        }
        spoken += 1;
        assert!(spoken < 3_000, "no piece was refused with the database's writes held");
    };
    assert_eq!(failed["event"], "task_failed", "{failed}");
    assert!(failed["base_resp"]["status_msg"].as_str().unwrap().contains("database is behind"), "{failed}");
    assert!(next(&mut ws).is_err(), "the session ends");
    assert_eq!(minimax_billed(&mock, "mm-key"), 3 * spoken, "the refused piece never reached MiniMax");
    // Writes resume: each piece spoken is charged once.
    drop(lock);
    gw.balance_becomes("ann", 100_000_000 - 3 * spoken * PER_CHAR);
    let (ok, report) = gw.verify_ledger();
    assert!(ok, "{report}");
}

#[test]
fn the_upgrade_refuses_missing_and_bad_keys_and_sessions_beyond_a_keys_cap() {
    let mock = Mock::start();
    let gw = gateway(&mock, "max_sockets_per_key = 2\nmax_sockets = 3");
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
    let other = gw.create_key("bob", "10");
    gw.wait_for_key(&other);
    let third = started(&gw, &other);
    assert_eq!(connect(&gw, Some(&other)).err(), Some(503), "the gateway holds at most max_sockets");
    drop(third);
    // A consumer who cannot pay for any work gets no session.
    let broke = gw.create_key("broke", "0");
    gw.wait_for_key(&broke);
    assert_eq!(connect(&gw, Some(&broke)).err(), Some(402));
    drop(held);
    assert!(eventually(Duration::from_secs(5), || connect(&gw, Some(&key)).is_ok()), "closing one frees its place");
}

#[test]
fn a_balance_that_runs_out_ends_the_session_with_minimaxs_failure_and_nothing_is_free() {
    let mock = Mock::start();
    let gw = gateway(&mock, "");
    // 5 characters' worth.
    let key = gw.create_key("poor", "0.05");
    gw.wait_for_key(&key);
    let mut ws = started(&gw, &key);
    speak(&mut ws, "abc");
    send(&mut ws, json!({ "event": "task_continue", "text": "abcdef" }));
    let failed = event(&mut ws);
    assert_eq!(failed["event"], "task_failed", "{failed}");
    assert_eq!(failed["base_resp"]["status_code"], 1008, "MiniMax's code for a balance too low: {failed}");
    assert!(next(&mut ws).is_err(), "the session ends");
    // The refused text never reached MiniMax: charged exactly what was delivered.
    gw.balance_becomes("poor", 50_000 - 3 * PER_CHAR);
    assert_eq!(minimax_billed(&mock, "mm-key"), 3);
}

#[test]
fn an_upstream_gone_mid_synthesis_is_an_error_frame_and_charged_its_reservation() {
    let mock = Mock::start();
    let gw = gateway(&mock, "");
    let key = gw.create_key("ann", "10");
    gw.wait_for_key(&key);
    let mut ws = started(&gw, &key);
    send(&mut ws, json!({ "event": "task_continue", "text": "[drop] hello" }));
    let first = event(&mut ws);
    assert_eq!((first["event"].as_str(), first["is_final"].as_bool()), (Some("task_continued"), Some(false)));
    let failed = event(&mut ws);
    assert_eq!(failed["event"], "task_failed", "{failed}");
    assert!(next(&mut ws).is_err());
    // Audio reached the consumer and MiniMax never said how much: its 12 characters reserved.
    gw.balance_becomes("ann", 10_000_000 - 12 * PER_CHAR);
}

#[test]
fn a_consumer_gone_mid_synthesis_pays_what_minimax_counted_never_nothing() {
    let mock = Mock::start();
    let gw = gateway(&mock, "");
    let key = gw.create_key("ann", "10");
    gw.wait_for_key(&key);
    let mut ws = started(&gw, &key);
    // MiniMax takes its time with this one; the consumer leaves before any audio. MiniMax has
    // the text and bills it: so is the consumer, by MiniMax's count.
    send(&mut ws, json!({ "event": "task_continue", "text": "[slow] hello" }));
    drop(ws);
    gw.balance_becomes("ann", 10_000_000 - 12 * PER_CHAR);
    assert!(eventually(Duration::from_secs(5), || minimax_billed(&mock, "mm-key") == 12));
    let (ok, report) = gw.verify_ledger();
    assert!(ok, "{report}");
}

#[test]
fn an_oversize_message_closes_the_session_and_shutdown_closes_open_ones_with_1001() {
    let mock = Mock::start();
    let mut gw = gateway(&mock, "socket_max_message_bytes = 4096");
    let key = gw.create_key("ann", "10");
    gw.wait_for_key(&key);
    let mut ws = started(&gw, &key);
    send(&mut ws, json!({ "event": "task_continue", "text": "x".repeat(5000) }));
    assert_eq!(next(&mut ws).err(), Some(Some(1009)), "too big: closed with 1009");
    gw.balance_becomes("ann", 10_000_000);

    let mut open = started(&gw, &key);
    gw.terminate();
    assert_eq!(next(&mut open).err(), Some(Some(1001)), "shutdown closes open sessions as going away");
    assert!(gw.wait_exit(Duration::from_secs(15)).is_some_and(|s| s.success()));
}

/// Opens the MiniMax proxy's socket.
fn connect_proxy(gw: &Gateway, path: &str, key: Option<&str>) -> Socket {
    gw.socket(path, key).expect("the proxy's socket answers the upgrade")
}

#[test]
fn the_minimax_proxys_socket_authenticates_by_first_frame_and_reports_each_real_charge() {
    let mock = Mock::start();
    let gw = gateway(&mock, "minimax_proxy_socket_path = \"/tts/ws\"");
    let key = gw.create_key("ann", "10");
    gw.wait_for_key(&key);

    // A missing or bad token: an error frame, then the close.
    for first in [json!({ "event": "task_start" }), json!({ "bearer_token": "sk-tg-nonsense" })] {
        let mut ws = connect_proxy(&gw, "/tts/ws", None);
        send(&mut ws, first.clone());
        let refused = event(&mut ws);
        assert_eq!(refused["event"], "error", "{first}: {refused}");
        assert!(next(&mut ws).is_err(), "{first}: closed after the error");
    }

    let mut ws = connect_proxy(&gw, "/tts/ws", None);
    send(&mut ws, json!({ "bearer_token": key }));
    let hello = event(&mut ws);
    assert_eq!(hello["event"], "connected_success", "{hello}");
    assert!(hello["user_id"].as_str().is_some_and(|id| !id.is_empty()), "{hello}");
    send(
        &mut ws,
        json!({ "event": "task_start", "model": "speech-2.8-hd", "voice_setting": { "voice_id": "female-shaonv" } }),
    );
    // MiniMax's own connected_success is not forwarded: the next frame is task_started.
    assert_eq!(event(&mut ws)["event"], "task_started");
    let (audio, _) = speak(&mut ws, "hello");
    assert_eq!(audio, b"ID3mock-audio:hello");
    let summary = event(&mut ws);
    assert_eq!(summary["event"], "usage_summary", "{summary}");
    assert_eq!((summary["char_count"].as_u64(), summary["model_name"].as_str()), (Some(5), Some("speech-2.8-hd")));
    assert_eq!(
        (summary["tts_cost"].as_f64(), summary["total_cost"].as_f64()),
        (Some(0.05), Some(0.05)),
        "the real charge"
    );
    assert_eq!(summary["voice_id"], "female-shaonv");

    // Over 10,000 characters: an error frame, and the socket stays open.
    send(&mut ws, json!({ "event": "task_continue", "text": "y".repeat(10_001) }));
    assert_eq!(event(&mut ws)["event"], "error");
    speak(&mut ws, "again");
    assert_eq!(event(&mut ws)["char_count"], 5);

    // A failed synthesis: MiniMax's failure, then "no charge".
    send(&mut ws, json!({ "event": "task_continue", "text": "[fail] this" }));
    assert_eq!(event(&mut ws)["event"], "task_failed");
    let summary = event(&mut ws);
    assert!(summary["message"].as_str().is_some_and(|m| m.contains("no charge")), "{summary}");
    assert!(next(&mut ws).is_err());
    gw.balance_becomes("ann", 10_000_000 - 10 * PER_CHAR);

    // A key at the upgrade skips the first frame; task_finished ends the session.
    let mut ws = connect_proxy(&gw, "/tts/ws", Some(&key));
    assert_eq!(event(&mut ws)["event"], "connected_success");
    send(&mut ws, json!({ "event": "task_start", "model": "speech-2.8-hd" }));
    assert_eq!(event(&mut ws)["event"], "task_started");
    send(&mut ws, json!({ "event": "task_finish" }));
    assert_eq!(event(&mut ws)["event"], "task_finished");
    assert!(next(&mut ws).is_err(), "closed after task_finished");
    let (ok, report) = gw.verify_ledger();
    assert!(ok, "{report}");
}

#[test]
fn a_channel_that_archives_speech_keeps_each_socket_synthesis_hex_decoded() {
    let mock = Mock::start();
    let ch = channel("mm", "minimax", &mock.url(), &["speech-2.8-hd"], &["mm-key"]);
    let extra = format!("{}{ch}archive_speech = true\n", pricing_setting(PRICES));
    let gw = Gateway::start("realtime-archive", &[("minimax", "minimax.wasm")], &extra);
    let key = gw.create_key("ann", "10");
    gw.wait_for_key(&key);
    let mut ws = connect(&gw, Some(&key)).expect("the upgrade");
    assert_eq!(event(&mut ws)["event"], "connected_success");
    send(&mut ws, json!({ "event": "task_start", "model": "speech-2.8-hd", "audio_setting": { "format": "wav" } }));
    assert_eq!(event(&mut ws)["event"], "task_started");
    speak(&mut ws, "第一句 one");
    speak(&mut ws, "second");
    let files = || tollgate_e2e::files_under(&gw.dir.join("data/speech"));
    assert!(eventually(Duration::from_secs(5), || files().len() == 4), "{:?}", files());
    let mut kept: Vec<(Vec<u8>, String)> = files()
        .iter()
        .filter(|p| p.extension().is_some_and(|e| e == "wav"))
        .map(|p| (std::fs::read(p).unwrap(), std::fs::read_to_string(p.with_extension("txt")).unwrap()))
        .collect();
    kept.sort();
    assert_eq!(kept.len(), 2, "each synthesis is one file, in the session's format");
    assert_eq!(kept[0].0, "ID3mock-audio:second".as_bytes(), "the hex decoded");
    assert!(kept[0].1.ends_with("text:\nsecond\n"), "{}", kept[0].1);
    assert_eq!(kept[1].0, "ID3mock-audio:第一句 one".as_bytes());
}
