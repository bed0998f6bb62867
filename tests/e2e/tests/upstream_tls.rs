//! Vendors over TLS, as real vendors are: a channel's `https://` base URL, its certificate
//! checked against the web PKI's roots and the operator's `tls_ca_file` (a private CA, here
//! one made for the test); HTTP/1.1, or HTTP/2 negotiated by ALPN on a channel with
//! `http2 = true`; a speech socket over `wss`. A certificate the gateway does not trust fails
//! the call before anything reaches the vendor, free; a CA file that is not one stops the
//! gateway from starting.

use std::path::PathBuf;
use std::time::Duration;
use tollgate_e2e::{
    certificates, channel, chats_over_http2_and_http1, pricing_setting, scratch, tollgate_command, Gateway, Mock,
};
use tungstenite::Message;

const CHAT: &str = r#"{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi"}]}"#;
const PRICES: &str = "[models.\"gpt-4o-mini\"]\nper_call = \"1\"\n[models.\"gpt-4o\"]\nper_call = \"1\"\n";

/// The mock serving TLS with the test CA's certificate (plain text still reaches its control
/// routes), and the CA's file.
fn tls_mock(name: &str, alpn: &str) -> (Mock, PathBuf) {
    let (ca, cert, key) = certificates(&scratch(name));
    let mock = Mock::start_with(&[
        "--chunk-delay-ms",
        "50",
        "--tls-cert",
        cert.to_str().unwrap(),
        "--tls-key",
        key.to_str().unwrap(),
        "--tls-alpn",
        alpn,
    ]);
    (mock, ca)
}

fn https(mock: &Mock) -> String {
    format!("https://localhost:{}", mock.addr.rsplit(':').next().unwrap())
}

#[test]
fn https_vendors_are_reached_over_http1_http2_and_wss_with_an_added_ca() {
    let (mock, ca) = tls_mock("tls-ok", "h2,http/1.1");
    let url = https(&mock);
    let h2 = channel("h2", "openai", &url, &["gpt-4o-mini"], &["up-key-1"]);
    let h1 = channel("h1", "openai", &url, &["gpt-4o"], &["up-key-1"]);
    let mm = channel("mm", "minimax", &url, &["speech-2.8-hd"], &["mm-key"]);
    let extra = format!("tls_ca_file = \"{}\"\n{}{h2}http2 = true\n{h1}{mm}", ca.display(), pricing_setting(PRICES));
    let gw = Gateway::start("tls-ok", &[("openai", "openai.wasm"), ("minimax", "minimax.wasm")], &extra);

    // HTTP/2, chosen by ALPN, whole and streamed; HTTP/1.1 on the other channel, to the same
    // server.
    chats_over_http2_and_http1(&gw, &mock, Duration::from_millis(150));
    let alpn = || mock.last_body("/v1/chat/completions")["tls_alpn"].clone();
    assert_eq!(alpn(), "", "the HTTP/1.1 client offers no protocol: TLS, none chosen");
    assert_eq!(gw.post("/v1/chat/completions", CHAT).status, 200);
    assert_eq!(alpn(), "h2", "the HTTP/2 pool offers h2 and the server chose it");
    // Four calls, a unit each.
    gw.balance_becomes("e2e", 10_000_000 - 4_000_000);

    // MiniMax's speech socket over wss.
    let mut ws = gw.socket("/ws/v1/t2a_v2", Some(&gw.key)).expect("the upgrade");
    assert_eq!(text_frame(&mut ws)["event"], "connected_success");
    let start = r#"{"event":"task_start","model":"speech-2.8-hd","voice_setting":{"voice_id":"male-qn-qingse"}}"#;
    ws.send(Message::text(start)).unwrap();
    let frame = text_frame(&mut ws);
    assert_eq!(frame["event"], "task_started", "{frame}");
}

/// The socket's next text frame, as JSON.
fn text_frame(ws: &mut tungstenite::WebSocket<std::net::TcpStream>) -> serde_json::Value {
    loop {
        if let Message::Text(t) = ws.read().expect("a frame") {
            return serde_json::from_str(&t).expect("a JSON frame");
        }
    }
}

#[test]
fn an_untrusted_certificate_fails_the_call_free_and_an_http2_channel_needs_alpn() {
    // The vendor's certificate chains to a CA the gateway was not told of.
    let (mock, _ca) = tls_mock("tls-untrusted", "h2,http/1.1");
    let ch = channel("h1", "openai", &https(&mock), &["gpt-4o-mini"], &["up-key-1"]);
    let gw = Gateway::start("tls-untrusted", &[("openai", "openai.wasm")], &format!("{}{ch}", pricing_setting(PRICES)));
    let r = gw.post("/v1/chat/completions", CHAT);
    assert_eq!(r.status, 502, "{}", r.text());
    assert_eq!(r.json()["error"]["message"], "cannot connect to the upstream");
    assert!(gw.log().contains("UnknownIssuer"), "the log names the reason:\n{}", gw.log());
    assert_eq!(mock.stats()["requests"], 0, "nothing reached the vendor");
    assert_eq!(gw.balance_micros("e2e"), 10_000_000, "free");

    // A server that offers only HTTP/1.1 cannot carry an `http2` channel's calls: refused as
    // not sent (free), not misread.
    let (mock, ca) = tls_mock("tls-h1-only", "http/1.1");
    let ch = channel("h2", "openai", &https(&mock), &["gpt-4o-mini"], &["up-key-1"]);
    let extra = format!("tls_ca_file = \"{}\"\n{}{ch}http2 = true\n", ca.display(), pricing_setting(PRICES));
    let gw = Gateway::start("tls-h1-only", &[("openai", "openai.wasm")], &extra);
    let r = gw.post("/v1/chat/completions", CHAT);
    assert_eq!(r.status, 502, "{}", r.text());
    assert!(gw.log().contains("NoApplicationProtocol"), "refused for its protocol:\n{}", gw.log());
    assert_eq!(mock.stats()["requests"], 0, "nothing reached the vendor");
    assert_eq!(gw.balance_micros("e2e"), 10_000_000, "free");
}

#[test]
fn a_ca_file_that_is_not_one_stops_the_gateway_before_it_serves() {
    let dir = scratch("tls-bad-ca");
    for (content, says) in [
        (None, "cannot read"),
        (Some("not a certificate\n"), "no certificate in it"),
        (Some("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"), "not a usable CA"),
    ] {
        let ca = dir.join("ca.pem");
        match content {
            Some(c) => std::fs::write(&ca, c).unwrap(),
            None => {
                let _ = std::fs::remove_file(&ca);
            }
        }
        let config = dir.join("tollgate.toml");
        let settings = format!(
            "listen = \"127.0.0.1:0\"\ndata_dir = \"{d}/data\"\ntls_ca_file = \"{c}\"\n",
            d = dir.display(),
            c = ca.display()
        );
        std::fs::write(&config, settings).unwrap();
        let out = tollgate_command().arg("--config").arg(&config).arg("serve").output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "started with {content:?}");
        assert!(stderr.contains("tls_ca_file") && stderr.contains(says), "{content:?}: {stderr}");
    }
}
