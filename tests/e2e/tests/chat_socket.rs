//! Chat over WebSocket through the real binary, with a real WebSocket client (tungstenite):
//! the many-vendor backend's protocol (`compat-protocols.md` §5.1) on a path the operator binds
//! to a model, and the gateway's own `GET /v1/chat/ws` (OpenAI chat requests in, chunks out).
//! Each chat is a billed chat call, its `chat_id` recorded; errors keep the socket open; a
//! balance too low is a 402 error frame.

use serde_json::{json, Value};
use std::net::TcpStream;
use std::time::Duration;
use tollgate_e2e::{channel, eventually, http, pricing_setting, Gateway, Mock};
use tungstenite::{Message, WebSocket};

const PRICES: &str =
    "[models.\"gpt-4o-mini\"]\ninput_per_million = \"1\"\noutput_per_million = \"1000\"\nmax_output_tokens = 1000\n";
const BACKEND_PATH: &str = "/cozeZhsApi/ws/qwen/stream";

fn gateway(mock: &Mock) -> Gateway {
    let ch = channel("mock", "openai", &mock.url(), &["gpt-4o-mini"], &["up"]);
    let paths = format!("[chat_socket_paths]\n\"{BACKEND_PATH}\" = \"gpt-4o-mini\"\n");
    Gateway::start("chat-socket", &[("openai", "openai.wasm")], &format!("{}{paths}{ch}", pricing_setting(PRICES)))
}

type Socket = WebSocket<TcpStream>;

fn connect(gw: &Gateway, path: &str, key: &str) -> Result<Socket, u16> {
    gw.socket(path, Some(key))
}

fn send(ws: &mut Socket, frame: Value) {
    ws.send(Message::text(frame.to_string())).expect("send");
}

/// The next text frame (JSON, or the text itself as a JSON string).
fn next(ws: &mut Socket) -> Value {
    loop {
        match ws.read().expect("a frame") {
            Message::Text(t) => return serde_json::from_str(&t).unwrap_or_else(|_| Value::String(t.to_string())),
            Message::Close(c) => panic!("closed: {c:?}"),
            _ => continue,
        }
    }
}

fn logs(gw: &Gateway, key: &str) -> Value {
    http::request(&gw.addr, "GET", "/v1/user/logs", &[("authorization", &format!("Bearer {key}"))], b"").json()
}

#[test]
fn the_backends_chat_socket_streams_each_chat_billed_with_its_chat_id() {
    let mock = Mock::start();
    let gw = gateway(&mock);
    let key = gw.create_key("app", "10");
    gw.wait_for_key(&key);
    let mut ws = connect(&gw, &format!("{BACKEND_PATH}?client_id=c-7&user_uuid=u-1"), &key).expect("the upgrade");
    let hello = next(&mut ws);
    assert_eq!(
        (hello["event"].as_str(), hello["data"]["id"].as_str()),
        (Some("system.connected"), Some("c-7")),
        "{hello}"
    );
    send(&mut ws, json!({ "type": "ping" }));
    let pong = next(&mut ws);
    assert_eq!((pong["event"].as_str(), pong["data"]["type"].as_str()), (Some("connection.heartbeat"), Some("pong")));

    // Some clients send `query` instead of `prompt`.
    send(&mut ws, json!({ "type": "chat", "data": { "query": "hello", "chat_id": "chat-9" } }));
    let created = next(&mut ws);
    assert_eq!(created["event"], "conversation.chat.created", "{created}");
    let mut answer = String::new();
    loop {
        let f = next(&mut ws);
        match f["event"].as_str() {
            Some("conversation.message.delta") => {
                assert_eq!(
                    (f["data"]["type"].as_str(), f["data"]["chat_id"].as_str()),
                    (Some("content"), Some("chat-9"))
                );
                answer.push_str(f["data"]["content"].as_str().unwrap());
            }
            Some("conversation.chat.completed") => break,
            _ => panic!("unexpected frame {f}"),
        }
    }
    assert!(answer.starts_with("tok0"), "the deltas, in order: {answer}");

    // Errors keep the socket open.
    ws.send(Message::text("not json")).unwrap();
    let error = next(&mut ws);
    assert_eq!((error["event"].as_str(), error["code"].as_i64()), (Some("system.error"), Some(400)), "{error}");
    send(&mut ws, json!({ "type": "chat", "data": { "chat_id": "x" } }));
    assert_eq!(next(&mut ws)["code"], 400, "a chat without a prompt");
    send(&mut ws, json!({ "type": "ping" }));
    assert_eq!(next(&mut ws)["event"], "connection.heartbeat");

    // Billed like the HTTP call, with its chat_id on the record.
    assert!(eventually(Duration::from_secs(5), || logs(&gw, &key)["data"].as_array().is_some_and(|d| !d.is_empty())));
    let record = logs(&gw, &key)["data"][0].clone();
    assert_eq!(
        (record["model"].as_str(), record["chat_id"].as_str()),
        (Some("gpt-4o-mini"), Some("chat-9")),
        "{record}"
    );
    assert_ne!(record["charge"], "0", "{record}");
    assert!(gw.balance_micros("app") < 10_000_000);
    let (ok, report) = gw.verify_ledger();
    assert!(ok, "{report}");
}

#[test]
fn a_balance_too_low_is_a_402_frame_and_the_gateways_own_chat_socket_speaks_openai_chunks() {
    let mock = Mock::start();
    let gw = gateway(&mock);
    let broke = gw.create_key("broke", "0");
    gw.wait_for_key(&broke);
    let mut ws = connect(&gw, BACKEND_PATH, &broke).expect("the upgrade");
    assert_eq!(next(&mut ws)["event"], "system.connected");
    send(&mut ws, json!({ "type": "chat", "data": { "prompt": "hello" } }));
    let refused = next(&mut ws);
    assert_eq!((refused["event"].as_str(), refused["code"].as_i64()), (Some("system.error"), Some(402)), "{refused}");
    send(&mut ws, json!({ "type": "ping" }));
    assert_eq!(next(&mut ws)["event"], "connection.heartbeat", "the socket stays open");

    let key = gw.create_key("dev", "10");
    gw.wait_for_key(&key);
    let r = http::request(&gw.addr, "GET", "/v1/chat/ws", &[("authorization", &format!("Bearer {key}"))], b"");
    assert_eq!((r.status, r.json()["error"]["code"].as_str()), (400, Some("websocket_required")));
    let mut ws = connect(&gw, "/v1/chat/ws", &key).expect("the upgrade");
    send(&mut ws, json!({ "model": "gpt-4o-mini", "messages": [{ "role": "user", "content": "hi" }] }));
    let mut content = String::new();
    let mut usage = None;
    loop {
        let f = next(&mut ws);
        if f == "[DONE]" {
            break;
        }
        assert_eq!(f["object"], "chat.completion.chunk", "{f}");
        if let Some(c) = f.pointer("/choices/0/delta/content").and_then(Value::as_str) {
            content.push_str(c);
        }
        if f["usage"].is_object() {
            usage = Some(f["usage"].clone());
        }
    }
    assert!(content.starts_with("tok0") && usage.is_some(), "{content} {usage:?}");
    send(&mut ws, json!({ "model": "no-such-model", "messages": [] }));
    let error = next(&mut ws);
    assert_eq!(error["error"]["code"], "model_not_found", "{error}");
    assert_eq!(connect(&gw, "/v1/chat/ws", "sk-tg-nonsense").err(), Some(401));
}

#[test]
fn references_are_bounded_and_a_key_revoked_mid_socket_stops_chatting() {
    let mock = Mock::start();
    let gw = gateway(&mock);
    let key = gw.create_key("app", "10");
    gw.wait_for_key(&key);
    // A user_uuid the log could not hold (too long) is refused at the upgrade.
    let long = "u".repeat(200);
    assert_eq!(connect(&gw, &format!("{BACKEND_PATH}?user_uuid={long}"), &key).err(), Some(400));
    let mut ws = connect(&gw, &format!("{BACKEND_PATH}?user_uuid=u-1"), &key).expect("the upgrade");
    assert_eq!(next(&mut ws)["event"], "system.connected");
    // A chat_id with a control character (PostgreSQL refuses a NUL) is refused; nothing is billed.
    send(&mut ws, json!({ "type": "chat", "data": { "prompt": "hi", "chat_id": "a\u{0}b" } }));
    let refused = next(&mut ws);
    assert_eq!((refused["code"].as_i64(), refused["data"]["code"].as_str()), (Some(400), Some("invalid_reference")));
    send(&mut ws, json!({ "type": "chat", "data": { "prompt": "hi" } }));
    let mut last = next(&mut ws);
    while last["event"] != "conversation.chat.completed" {
        last = next(&mut ws);
    }
    // The key is disabled while the socket is open: the next chat is refused and the socket ends.
    let id = gw.key_id("app");
    Gateway::cli(&gw.config, &["keys", "disable", "--id", &id]);
    let gone = || {
        let auth = format!("Bearer {key}");
        http::request(&gw.addr, "GET", "/v1/tasks", &[("authorization", &auth)], b"").status == 401
    };
    assert!(eventually(Duration::from_secs(5), gone));
    send(&mut ws, json!({ "type": "chat", "data": { "prompt": "hi again" } }));
    let refused = next(&mut ws);
    assert_eq!(
        (refused["event"].as_str(), refused["data"]["status"].as_i64()),
        (Some("system.error"), Some(401)),
        "{refused}"
    );
    assert_eq!(refused["code"], 400, "401 is sent as the protocol's 400");
    assert!(matches!(ws.read(), Ok(Message::Close(_)) | Err(_)), "the socket ends");
    assert!(eventually(Duration::from_secs(5), || logs_of(&gw, "app").len() == 1), "one chat billed");
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(logs_of(&gw, "app").len(), 1, "nothing else was a call");
}

/// The calls of user `name`, through the admin API.
fn logs_of(gw: &Gateway, name: &str) -> Vec<Value> {
    let id = gw.key_id(name);
    let r = http::request(
        &gw.addr,
        "GET",
        &format!("/admin/logs?key_id={id}"),
        &[("authorization", "Bearer admin-secret")],
        b"",
    );
    r.json()["data"].as_array().cloned().unwrap_or_default()
}
