//! The progress socket through the real binary, with a real WebSocket client (tungstenite),
//! fed by real tasks (the `faulty` fixture's `POST /fixture/videos` against the mock vendor's
//! job API): the backend's protocol (`compat-protocols.md` §5.2) on the operator's path and on
//! `/v1/tasks/ws`; run frames while a task works and a stop frame with its charge; only the
//! caller's own tasks, of the registered model and chat; what was missed replayed at the next
//! registration; a newer registration replaces the older; and, with two nodes on one
//! database, the event reaches the socket on the node that did not poll the task.

use serde_json::{json, Value};
use std::net::TcpStream;
use std::time::Duration;
use tollgate_e2e::{channel, eventually, http, pricing_setting, Gateway, Mock};
use tungstenite::{Message, WebSocket};

const PRICES: &str = "[models.\"fixture-video\"]\nper_second = \"0.01\"\n";
const LOCAL_CDN: &str = "fetch_allow_private_hosts = [\"127.0.0.1\"]\n";
const BACKEND_PATH: &str = "/cozeZhsApi/public-socket/ws";

type Socket = WebSocket<TcpStream>;

fn settings(mock: &Mock) -> String {
    let ch = channel("video", "faulty", &mock.url(), &["fixture-video"], &["k1"]);
    format!("{LOCAL_CDN}progress_socket_path = \"{BACKEND_PATH}\"\n{}{ch}", pricing_setting(PRICES))
}

fn send(ws: &mut Socket, frame: Value) {
    ws.send(Message::text(frame.to_string())).expect("send");
}

/// The next text frame, as JSON.
fn next(ws: &mut Socket) -> Value {
    loop {
        match ws.read().expect("a frame") {
            Message::Text(t) => return serde_json::from_str(&t).expect("a JSON frame"),
            Message::Close(c) => panic!("closed: {c:?}"),
            _ => continue,
        }
    }
}

fn register(ws: &mut Socket, user_uuid: &str, chat_id: &str) -> Value {
    send(ws, json!({ "event": "register", "user_uuid": user_uuid, "model_id": "fixture-video", "chat_id": chat_id }));
    let connected = next(ws);
    assert_eq!(
        (connected["event"].as_str(), connected["code"].as_i64()),
        (Some("connected"), Some(200)),
        "{connected}"
    );
    connected
}

/// Submits a video task for `chat_id` and returns its id.
fn submit(gw: &Gateway, key: &str, chat_id: &str) -> String {
    let auth = format!("Bearer {key}");
    let headers = [("authorization", auth.as_str()), ("tollgate-chat-id", chat_id), ("tollgate-user-uuid", "u1")];
    let body = br#"{"model":"fixture-video","seconds":5,"prompt":"a cat"}"#;
    let r = http::request(&gw.addr, "POST", "/fixture/videos", &headers, body);
    assert_eq!(r.status, 200, "{}", r.text());
    r.json()["id"].as_str().unwrap().to_string()
}

/// The frames of task `id` up to its stop frame (frames of other tasks are returned too).
fn until_stop(ws: &mut Socket, id: &str) -> Vec<Value> {
    let mut frames = Vec::new();
    loop {
        let f = next(ws);
        let stop = f["task_id"] == id && f["status"] == "stop";
        frames.push(f);
        if stop {
            return frames;
        }
    }
}

fn finished(gw: &Gateway, key: &str, id: &str) {
    let auth = format!("Bearer {key}");
    let done = eventually(Duration::from_secs(30), || {
        let t = http::request(&gw.addr, "GET", &format!("/v1/tasks/{id}"), &[("authorization", &auth)], b"").json();
        !matches!(t["status"].as_str(), Some("queued" | "in_progress"))
    });
    assert!(done, "the task never finished");
}

#[test]
fn a_socket_hears_its_own_tasks_run_and_stop_and_gets_what_it_missed_when_it_comes_back() {
    let mock = Mock::start();
    let gw = Gateway::start("progress-socket", &[("faulty-v1", "faulty.wasm")], &settings(&mock));
    let other = gw.create_key("other", "1");
    gw.wait_for_key(&other);

    // Without a key, no socket; a browser gives a short-lived socket token in the query, never
    // the key itself.
    assert_eq!(gw.socket(BACKEND_PATH, None).err(), Some(401));
    assert_eq!(gw.socket(&format!("/v1/tasks/ws?token={}", gw.key), None).err(), Some(401), "a key is no token");
    let auth = format!("Bearer {}", gw.key);
    let issued = http::request(&gw.addr, "POST", "/v1/sockets/token", &[("authorization", &auth)], b"").json();
    let token = issued["token"].as_str().expect("a socket token").to_string();
    assert_eq!(issued["expires_in"], 300);
    let mut ws = gw.socket(&format!("/v1/tasks/ws?token={token}"), None).expect("the upgrade with ?token=");
    send(&mut ws, json!({ "event": "ping" }));
    assert_eq!(next(&mut ws)["event"], "pong");
    ws.send(Message::text("nonsense")).unwrap();
    assert_eq!(next(&mut ws)["code"], "INVALID_JSON");
    send(&mut ws, json!({ "event": "register", "user_uuid": "u1" }));
    assert_eq!(next(&mut ws)["code"], "MISSING_PARAMS");
    send(&mut ws, json!({ "event": "subscribe" }));
    assert_eq!(next(&mut ws)["code"], "UNKNOWN_EVENT");
    register(&mut ws, "u1", "c0");
    send(&mut ws, json!({ "event": "register", "user_uuid": "u1", "model_id": "fixture-video" }));
    assert_eq!(next(&mut ws)["code"], "TOO_MANY_REGISTRATIONS");
    drop(ws);
    assert!(!gw.log().contains(&token), "the token is never logged");

    let mut mine = gw.socket(BACKEND_PATH, Some(&gw.key)).expect("the upgrade");
    let connected = register(&mut mine, "u1", "c1");
    assert_eq!(connected["data"]["replayed"], 0, "{connected}");
    let mut theirs = gw.socket(BACKEND_PATH, Some(&other)).expect("the upgrade");
    register(&mut theirs, "u1", "c1");

    // A task of another chat is not this registration's; the next one is.
    let elsewhere = submit(&gw, &gw.key, "c2");
    let id = submit(&gw, &gw.key, "c1");
    let frames = until_stop(&mut mine, &id);
    assert!(frames.iter().all(|f| f["task_id"] == id), "only chat c1's task: {frames:?}");
    let first = &frames[0];
    assert_eq!(
        (first["event"].as_str(), first["status"].as_str(), first["message"]["status"].as_str()),
        (Some("video_generation"), Some("run"), Some("queued")),
        "{first}"
    );
    assert_eq!((first["model_id"].as_str(), first["chat_id"].as_str()), (Some("fixture-video"), Some("c1")));
    assert_eq!(first["user_uuid"], "u1");
    assert!(first["event_id"].as_i64() > Some(0), "{first}");
    let mut ids: Vec<i64> = frames.iter().map(|f| f["event_id"].as_i64().unwrap()).collect();
    ids.dedup();
    assert_eq!(ids.len(), frames.len(), "each event once");
    assert!(frames.iter().any(|f| f["message"]["status"] == "in_progress"), "{frames:?}");
    let stop = frames.last().unwrap();
    assert_eq!(stop["message"]["status"], "succeeded", "{stop}");
    // The vendor rendered 4 s at 0.01: the stop frame carries the charge.
    assert_eq!(stop["total_tokens"], 0.04, "{stop}");
    assert_eq!(stop["message"]["outputs"][0]["url"], format!("/v1/tasks/{id}/content/0"));
    assert!(stop["timestamp"].as_i64() > Some(1_700_000_000_000), "milliseconds: {stop}");

    // Another user's socket heard none of it: its first frame is its own task's.
    let own = submit(&gw, &other, "c1");
    let heard = until_stop(&mut theirs, &own);
    assert!(heard.iter().all(|f| f["task_id"] == own), "{heard:?}");

    // Away: a task runs to its end; the next registration gets what was missed, in order.
    mine.close(None).unwrap();
    while mine.read().is_ok() {}
    finished(&gw, &gw.key, &elsewhere);
    let missed = submit(&gw, &gw.key, "c1");
    finished(&gw, &gw.key, &missed);
    let mut back = gw.socket(BACKEND_PATH, Some(&gw.key)).expect("the upgrade");
    let connected = register(&mut back, "u1", "c1");
    assert!(connected["data"]["replayed"].as_u64() >= Some(2), "{connected}");
    let replayed = until_stop(&mut back, &missed);
    assert_eq!(replayed[0]["status"], "run", "{replayed:?}");
    assert!(replayed.iter().all(|f| f["task_id"] == missed), "{replayed:?}");

    // A newer registration of the same user, model and chat replaces the older socket.
    let mut newer = gw.socket(BACKEND_PATH, Some(&gw.key)).expect("the upgrade");
    register(&mut newer, "u1", "c1");
    let closed = loop {
        match back.read() {
            Ok(Message::Close(c)) => break c,
            Ok(_) => continue,
            Err(e) => panic!("no close frame: {e}"),
        }
    };
    assert!(closed.unwrap().reason.contains("replaced"));
    // Open sessions are counted: the two registered ones.
    let metrics = || http::request(&gw.addr, "GET", "/metrics", &[], b"").text();
    let open_two = || metrics().lines().any(|l| l == "tollgate_sockets_open 2");
    assert!(eventually(Duration::from_secs(5), open_two), "{}", metrics());
}

#[test]
fn an_event_reaches_the_socket_on_the_node_that_did_not_poll_the_task() {
    let mock = Mock::start();
    let plugins = [("faulty-v1", "faulty.wasm")];
    // The socket's node polls nothing: another node on the same database runs every task.
    let serving = Gateway::start("progress-two-a", &plugins, &format!("poll_tasks = false\n{}", settings(&mock)));
    let polling = Gateway::start_sharing("progress-two-b", &plugins, &settings(&mock), &serving);
    let mut ws = serving.socket("/v1/tasks/ws", Some(&serving.key)).expect("the upgrade");
    register(&mut ws, "u1", "c1");
    let id = submit(&serving, &serving.key, "c1");
    // Only the other node polls: the stop frame reached this socket from there.
    let frames = until_stop(&mut ws, &id);
    assert_eq!(frames.last().unwrap()["message"]["status"], "succeeded", "{frames:?}");
    assert_eq!(frames.last().unwrap()["total_tokens"], 0.04);
    drop(polling);
}
