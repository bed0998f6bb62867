//! Upstream key pools through the real binary: a key the vendor refuses is failed over (the
//! consumer never sees it), disabled, probed later and re-enabled once the vendor accepts it
//! again; a failover storm never charges twice.

use std::time::Duration;
use tollgate_e2e::{channel, eventually, http, scratch, Gateway, Mock};

fn reject(mock: &Mock, key: &str, on: bool) {
    let r = http::request(&mock.addr, "POST", &format!("/_mock/reject?key={key}&on={}", on as u8), &[], b"");
    assert_eq!(r.status, 200);
}

fn used(mock: &Mock, key: &str) -> u64 {
    mock.stats()["by_key"][key].as_u64().unwrap_or(0)
}

#[test]
fn a_refused_key_fails_over_is_disabled_and_recovers() {
    let mock = Mock::start();
    let ch = channel("pool", "openai", &mock.url(), &["gpt-4o-mini"], &["k-one", "k-two", "k-three"]);
    let gw = Gateway::start("keypool", &[("openai", "openai.wasm")], &format!("key_probe_after_ms = 1500\n{ch}"));
    reject(&mock, "k-one", true);
    for _ in 0..9 {
        let r = gw.post("/v1/chat/completions", r#"{"model":"gpt-4o-mini","messages":[]}"#);
        assert_eq!(r.status, 200, "the consumer never sees the refused key: {}", r.text());
    }
    assert_eq!(used(&mock, "k-one"), 1, "refused once, then disabled");
    let states =
        http::request(&gw.addr, "GET", "/admin/channels", &[("authorization", "Bearer admin-secret")], b"").json();
    assert_eq!(states["channels"][0]["keys"][0]["state"], "disabled", "{states}");
    assert_eq!(states["channels"][0]["keys"][0]["key"], "k-one…", "keys are shown masked: {states}");
    assert!(!states.to_string().contains("k-two\""), "{states}");

    // The vendor accepts the key again: after the probe delay one call probes it, and it serves.
    reject(&mock, "k-one", false);
    std::thread::sleep(Duration::from_millis(1600));
    assert!(
        eventually(Duration::from_secs(10), || {
            gw.post("/v1/chat/completions", r#"{"model":"gpt-4o-mini","messages":[]}"#);
            used(&mock, "k-one") >= 3
        }),
        "k-one back in rotation: used {} times",
        used(&mock, "k-one")
    );
}

#[test]
fn a_failover_storm_never_charges_twice() {
    let mock = Mock::start();
    let dir = scratch("prices");
    let prices = dir.join("pricing.toml");
    std::fs::write(
        &prices,
        "[models.\"gpt-4o-mini\"]\ninput_per_million = \"1\"\noutput_per_million = \"1000\"\nmax_output_tokens = 10\n",
    )
    .unwrap();
    let ch = channel("pool", "openai", &mock.url(), &["gpt-4o-mini"], &["bad-a", "bad-b", "good"]);
    let gw = Gateway::start(
        "storm",
        &[("openai", "openai.wasm")],
        &format!("pricing_file = \"{}\"\n{ch}", prices.display()),
    );
    let start = gw.balance_micros("e2e");
    let n = 20;
    let threads: Vec<_> = (0..n)
        .map(|_| {
            let (addr, key) = (gw.addr.clone(), gw.key.clone());
            std::thread::spawn(move || {
                let body = br#"{"model":"gpt-4o-mini","messages":[]}"#;
                http::request(
                    &addr,
                    "POST",
                    "/v1/chat/completions",
                    &[("authorization", &format!("Bearer {key}"))],
                    body,
                )
                .status
            })
        })
        .collect();
    let statuses: Vec<u16> = threads.into_iter().map(|t| t.join().unwrap()).collect();
    assert!(statuses.iter().all(|s| *s == 200), "{statuses:?}");
    // Each call: 9 input + 3 output tokens = 3009 micros, charged once however many keys it tried.
    assert!(
        eventually(Duration::from_secs(5), || gw.balance_micros("e2e") == start - n * 3009),
        "balance {} expected {}",
        gw.balance_micros("e2e"),
        start - n * 3009
    );
    let (ok, out) = gw.verify_ledger();
    assert!(ok, "{out}");
}
