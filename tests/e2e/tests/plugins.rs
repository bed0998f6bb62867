//! The sandbox and hot reload, with fixture plugins built from `tests/fixtures/trap`: a plugin
//! that traps, loops or allocates without bound fails only its own call; replacing plugin
//! files under a steady request loop fails no request; a broken file never replaces a good one.
//! And what the shipped plugins ask of the host: the contract, and WASI's clock and random
//! source at most.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tollgate_e2e::{channel, eventually, http, Gateway, Mock};

fn faulty_gateway(mock: &Mock, name: &str) -> Gateway {
    faulty_gateway_with(mock, name, "")
}

/// `extra`: top-level configuration lines.
fn faulty_gateway_with(mock: &Mock, name: &str, extra: &str) -> Gateway {
    let ch = channel("faults", "faulty", &mock.url(), &["trap", "loop", "oom", "sleep", "clock", "echo", "seen"], &[]);
    Gateway::start(
        name,
        &[("faulty-v1", "faulty.wasm")],
        &format!("plugin_time_limit_ms = 300\nplugin_deadline_ms = 1000\nplugin_memory_limit_mb = 32\n{extra}{ch}"),
    )
}

fn echo(gw: &Gateway) -> http::Response {
    gw.post("/v1/chat/completions", r#"{"model":"echo","messages":[]}"#)
}

#[test]
fn a_faulty_plugin_fails_only_its_own_call() {
    let mock = Mock::start();
    let gw = faulty_gateway(&mock, "faults");
    assert_eq!(echo(&gw).json()["version"], "1");
    let causes =
        [("trap", "trapped"), ("loop", "time limit"), ("oom", "memory limit"), ("sleep", "wall-clock deadline")];
    for (model, cause) in causes {
        let t = Instant::now();
        let r = gw.post("/v1/chat/completions", &format!(r#"{{"model":"{model}","messages":[]}}"#));
        assert_eq!((r.status, r.error_code().as_str()), (502, "plugin_error"), "{model}: {}", r.text());
        let message = r.json()["error"]["message"].as_str().unwrap().to_string();
        assert!(message.contains(cause), "{model}: {message}");
        assert!(t.elapsed() < Duration::from_secs(20), "{model} took {:?}", t.elapsed());
        // The gateway keeps serving, with the same plugin.
        let r = echo(&gw);
        assert_eq!(r.status, 200, "after {model}: {}", r.text());
    }
    let m = http::request(&gw.addr, "GET", "/metrics", &[], b"").text();
    assert!(m.contains("tollgate_plugin_failures_total 4"), "{m}");
    assert!(m.contains("tollgate_in_flight 0"), "every failed call freed its slot: {m}");
}

/// The plugins' time-limit clock stands still while no plugin runs (an idle gateway does not
/// wake every 10 ms for it: a tick a second remains), and a plugin that loops after such a
/// spell is still stopped by its time limit: had the clock stayed still, the loop would hold
/// its worker for good. (Its first entry, the exchange's constructor, wakes the clock; every
/// entry is marked the same way, in `within`.)
#[test]
fn a_plugin_that_loops_after_the_clock_stood_still_is_stopped_by_its_time_limit() {
    let mock = Mock::start();
    let gw = faulty_gateway(&mock, "clock-still");
    assert_eq!(echo(&gw).status, 200);
    let ticks = || gw.metric("tollgate_plugin_clock_ticks_total");
    // Still once no plugin has run for the deadline (1 s here) and a second more: at most the
    // idle tick or two in a second, where a running clock makes a hundred.
    let still = eventually(Duration::from_secs(20), || {
        let before = ticks();
        std::thread::sleep(Duration::from_secs(1));
        ticks() - before <= 2.0
    });
    assert!(still, "the clock kept ticking with no plugin running");
    let r = gw.post("/v1/chat/completions", r#"{"model":"loop","messages":[]}"#);
    assert_eq!((r.status, r.error_code().as_str()), (502, "plugin_error"), "{}", r.text());
    assert!(r.json()["error"]["message"].as_str().unwrap().contains("time limit"), "{}", r.text());
    assert_eq!(echo(&gw).status, 200);
}

/// A call by the `seen` model: how many exchanges its instance's memory has held.
fn calls_seen(addr: &str, key: &str) -> u64 {
    let r = http::request(
        addr,
        "POST",
        "/v1/chat/completions",
        &[("authorization", &format!("Bearer {key}"))],
        br#"{"model":"seen","messages":[]}"#,
    );
    assert_eq!(r.status, 200, "{}", r.text());
    r.json()["calls_seen"].as_u64().expect("calls_seen")
}

/// Instances are made ahead of their calls and freed after their answers, off the consumer's
/// wait; still, every call gets one that no other call entered: calls one after another,
/// many at once, and after a call that trapped.
#[test]
fn every_call_gets_an_instance_no_other_call_entered() {
    let mock = Mock::start();
    let gw = faulty_gateway(&mock, "fresh");
    let (addr, key) = (gw.addr.clone(), gw.key.clone());
    for _ in 0..30 {
        assert_eq!(calls_seen(&addr, &key), 1);
    }
    let seen: Vec<u64> = std::thread::scope(|s| {
        let threads: Vec<_> =
            (0..8).map(|_| s.spawn(|| (0..15).map(|_| calls_seen(&addr, &key)).collect::<Vec<_>>())).collect();
        threads.into_iter().flat_map(|t| t.join().unwrap()).collect()
    });
    assert!(seen.iter().all(|&n| n == 1), "an instance served more than one call: {seen:?}");
    let r = gw.post("/v1/chat/completions", r#"{"model":"trap","messages":[]}"#);
    assert_eq!(r.status, 502, "{}", r.text());
    for _ in 0..5 {
        assert_eq!(calls_seen(&addr, &key), 1, "after a trap");
    }
}

/// `max_concurrent_calls` is exact: with two calls in flight a third is refused (503,
/// retry shortly), and once they end, calls one after another are all served at once,
/// although their stores are freed after their answers.
#[test]
fn max_concurrent_calls_is_exact() {
    let mock = Mock::start();
    let gw = faulty_gateway_with(&mock, "admission", "max_concurrent_calls = 2\nworker_threads = 2\n");
    let (addr, key) = (gw.addr.clone(), gw.key.clone());
    let sleepers: Vec<_> = (0..2)
        .map(|_| {
            let (addr, key) = (addr.clone(), key.clone());
            std::thread::spawn(move || {
                let auth = format!("Bearer {key}");
                let body = br#"{"model":"sleep","messages":[]}"#;
                http::request(&addr, "POST", "/v1/chat/completions", &[("authorization", &auth)], body).status
            })
        })
        .collect();
    let metrics = || http::request(&addr, "GET", "/metrics", &[], b"").text();
    assert!(eventually(Duration::from_secs(10), || metrics().contains("tollgate_in_flight 2")), "{}", metrics());
    // Counted in flight just before their plugins start; they sleep for a second there.
    std::thread::sleep(Duration::from_millis(200));
    // The runtime's pool says so too: their two instances alive (and any made ahead).
    assert!(gw.metric("tollgate_plugin_instances") >= 2.0, "{}", metrics());
    let r = echo(&gw);
    assert_eq!((r.status, r.error_code().as_str()), (503, "overloaded"), "{}", r.text());
    for s in sleepers {
        assert_eq!(s.join().unwrap(), 502, "the sleeping call ends at its deadline");
    }
    for i in 0..50 {
        let r = echo(&gw);
        assert_eq!(r.status, 200, "call {i} after the sleepers: {}", r.text());
        assert_eq!(calls_seen(&addr, &key), 1);
    }
    // Calls one at a time reuse their slots: each takes its worker's instance made ahead, and
    // the next is made in the slot the call's store freed. So the memory slots ever used (in
    // use, or unused and kept warm) stay at the two workers' instances and the sleepers'.
    let slots = gw.metric("tollgate_plugin_instances") + gw.metric("tollgate_plugin_slots_warm{kind=\"memory\"}");
    assert!((2.0..=4.0).contains(&slots), "{}", metrics());
}

#[test]
fn replacing_plugin_files_under_load_fails_no_request() {
    let mock = Mock::start();
    let gw = faulty_gateway(&mock, "reload");
    let dir = gw.plugins_dir();
    let v1 = std::fs::read(tollgate_e2e::plugin_file("faulty-v1")).unwrap();
    let v2 = std::fs::read(tollgate_e2e::plugin_file("faulty-v2")).unwrap();

    let stop = Arc::new(AtomicBool::new(false));
    let ok = Arc::new(AtomicU64::new(0));
    let failures = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let seen_v2 = Arc::new(AtomicBool::new(false));
    let workers: Vec<_> = (0..4)
        .map(|_| {
            let (stop, ok, failures, seen_v2, addr, key) =
                (stop.clone(), ok.clone(), failures.clone(), seen_v2.clone(), gw.addr.clone(), gw.key.clone());
            std::thread::spawn(move || {
                let deadline = Instant::now() + Duration::from_secs(60);
                while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
                    let r = http::request(
                        &addr,
                        "POST",
                        "/v1/chat/completions",
                        &[("authorization", &format!("Bearer {key}"))],
                        br#"{"model":"echo","messages":[]}"#,
                    );
                    if r.status == 200 {
                        ok.fetch_add(1, Ordering::Relaxed);
                        if r.json()["version"] == "2" {
                            seen_v2.store(true, Ordering::Relaxed);
                        }
                    } else {
                        failures.lock().unwrap().push(format!("{} {}", r.status, r.text()));
                    }
                }
            })
        })
        .collect();

    // Ten replacements: atomic renames, and in-place rewrites (a reader may see half a file).
    for i in 0..10 {
        let bytes = if i % 2 == 0 { &v2 } else { &v1 };
        if i % 3 == 2 {
            std::fs::write(dir.join("faulty.wasm"), bytes).unwrap();
        } else {
            let tmp = dir.join("faulty.wasm.part");
            std::fs::write(&tmp, bytes).unwrap();
            std::fs::rename(&tmp, dir.join("faulty.wasm")).unwrap();
        }
        std::thread::sleep(Duration::from_millis(400));
    }
    std::fs::write(dir.join("faulty.wasm.part"), &v2).unwrap();
    std::fs::rename(dir.join("faulty.wasm.part"), dir.join("faulty.wasm")).unwrap();
    assert!(eventually(Duration::from_secs(10), || echo(&gw).json()["version"] == "2"), "v2 never served");
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        w.join().unwrap();
    }
    let failures = failures.lock().unwrap();
    assert!(failures.is_empty(), "{} failed requests, e.g. {:?}", failures.len(), failures.first());
    assert!(ok.load(Ordering::Relaxed) > 100, "the load loop barely ran: {}", ok.load(Ordering::Relaxed));
    assert!(seen_v2.load(Ordering::Relaxed));
    let status = gw.admin_plugins();
    assert_eq!(status["plugins"][0]["version"], "1.0.2", "{status}");
}

#[test]
fn a_broken_file_never_replaces_a_working_one_and_says_why() {
    let mock = Mock::start();
    let gw = faulty_gateway(&mock, "broken");
    let path = gw.plugins_dir().join("faulty.wasm");
    std::fs::write(&path, b"\0asm this is not a component").unwrap();
    assert!(eventually(Duration::from_secs(10), || gw.admin_plugins()["plugins"][0]["status"] == "failed"));
    let status = gw.admin_plugins();
    let p = &status["plugins"][0];
    assert_eq!(p["version"], "1.0.1", "the previous version keeps serving: {status}");
    // The compiler (a child process) said why, in one line.
    assert!(p["last_error"].as_str().unwrap().contains("not a valid WebAssembly component"), "{status}");
    assert_eq!(echo(&gw).status, 200);
    assert!(gw.log().contains("plugin file rejected"), "the log says so");

    // The CLI shows the same.
    let out = Gateway::cli(&gw.config, &["plugins", "list"]);
    assert!(out.contains("faulty.wasm") && out.contains("failed"), "{out}");

    // A second plugin claiming the same name is refused; removing a file unloads it.
    std::fs::copy(tollgate_e2e::plugin_file("faulty-v2"), gw.plugins_dir().join("faulty-copy.wasm")).unwrap();
    assert!(eventually(Duration::from_secs(10), || {
        let s = gw.admin_plugins();
        s["plugins"].as_array().unwrap().iter().any(|p| {
            p["file"] == "faulty-copy.wasm" && p["last_error"].as_str().is_some_and(|e| e.contains("already served"))
        })
    }));
    std::fs::remove_file(&path).unwrap();
    std::fs::remove_file(gw.plugins_dir().join("faulty-copy.wasm")).unwrap();
    assert!(eventually(Duration::from_secs(10), || echo(&gw).status == 503));
    assert_eq!(echo(&gw).error_code(), "channel_misconfigured");
}

#[test]
fn admin_api_needs_its_token() {
    let mock = Mock::start();
    let gw = faulty_gateway(&mock, "admin");
    let r = http::request(&gw.addr, "GET", "/admin/plugins", &[("authorization", "Bearer wrong")], b"");
    assert_eq!(r.status, 401);
    let r = http::request(&gw.addr, "GET", "/admin/plugins", &[("authorization", &format!("Bearer {}", gw.key))], b"");
    assert_eq!(r.status, 401, "a consumer key is not an admin token");
}

#[test]
fn plugins_read_the_real_wall_clock_and_a_secure_random_source() {
    let mock = Mock::start();
    let gw = faulty_gateway(&mock, "clock");
    let ask = || {
        let r = gw.post("/v1/chat/completions", r#"{"model":"clock","messages":[]}"#);
        assert_eq!(r.status, 200, "{}", r.text());
        r.json()
    };
    let (a, b) = (ask(), ask());
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i64;
    let plugin_now = a["now_ms"].as_i64().unwrap();
    assert!((now - plugin_now).abs() < 60_000, "the plugin's clock ({plugin_now}) is the host's ({now})");
    let nonce = a["nonce"].as_str().unwrap();
    assert!(nonce.len() == 32 && nonce.bytes().all(|c| c.is_ascii_hexdigit()), "{nonce}");
    assert_ne!(a["nonce"], b["nonce"], "fresh randomness on every call");
}

#[test]
fn a_relayed_answer_is_classified_so_a_refused_key_is_disabled_and_the_download_retried() {
    let mock = Mock::start();
    let ch = channel("relays", "faulty", &mock.url(), &["relay"], &["bad-relay-key", "good-relay-key"]);
    let gw = Gateway::start("relay", &[("faulty-v1", "faulty.wasm")], &ch);
    for _ in 0..3 {
        let r = gw.post("/v1/chat/completions", r#"{"model":"relay","messages":[]}"#);
        assert_eq!(r.status, 200, "served by the good key, whichever key came first: {}", r.text());
        assert!(r.text().contains("gpt-4o-mini"), "the upstream's answer, relayed: {}", r.text());
    }
    let channels =
        http::request(&gw.addr, "GET", "/admin/channels", &[("authorization", "Bearer admin-secret")], b"").json();
    let keys = channels.to_string();
    assert!(keys.contains("disabled"), "the key the vendor refused on a relay is disabled: {keys}");
}

#[test]
fn a_new_version_that_refuses_a_channels_settings_never_replaces_the_serving_one() {
    let mock = Mock::start();
    let ch = channel("faults", "faulty", &mock.url(), &["echo"], &[]);
    let gw = Gateway::start(
        "reload-settings",
        &[("faulty-v1", "faulty.wasm")],
        &format!("{ch}[channel.settings]\nmode = \"legacy\"\n"),
    );
    assert_eq!(echo(&gw).json()["version"], "1");
    let dir = gw.plugins_dir();
    let tmp = dir.join("faulty.wasm.part");
    std::fs::copy(tollgate_e2e::plugin_file("faulty-v2"), &tmp).unwrap();
    std::fs::rename(&tmp, dir.join("faulty.wasm")).unwrap();
    let failed = eventually(Duration::from_secs(10), || gw.admin_plugins()["plugins"][0]["status"] == "failed");
    let status = gw.admin_plugins();
    assert!(failed, "v2 was not refused: {status}");
    let error = status["plugins"][0]["last_error"].as_str().unwrap_or_default().to_string();
    assert!(error.contains("channel 'faults'") && error.contains("legacy"), "{error}");
    assert_eq!(status["plugins"][0]["version"], "1.0.1", "v1 keeps serving: {status}");
    assert_eq!(echo(&gw).json()["version"], "1");
}

/// `plugin_perf_map`: the plugins compile in the gateway's own process (the profilers it is
/// for cannot follow a compiling child) and wasmtime names their functions in
/// `/tmp/perf-<pid>.map`, which perf and `tests/bench/instructions.sh` read; calls are served.
#[test]
fn a_profiled_gateway_names_the_plugins_code_for_profilers() {
    let mock = Mock::start();
    let ch = channel("main", "openai", &mock.url(), &["gpt-4o-mini"], &["sk-upstream-1"]);
    let gw = Gateway::start("perfmap", &[("openai", "openai.wasm")], &format!("plugin_perf_map = true\n{ch}"));
    let r = gw.post("/v1/chat/completions", r#"{"model":"gpt-4o-mini","messages":[]}"#);
    assert_eq!(r.status, 200, "{}", r.text());
    let map = std::path::PathBuf::from(format!("/tmp/perf-{}.map", gw.proc.child.id()));
    let names = std::fs::read_to_string(&map).unwrap_or_default();
    let _ = std::fs::remove_file(&map);
    assert!(names.lines().any(|l| l.contains("wasm[0]::function[")), "no plugin function in {}", map.display());
}

/// The plugins run on a 64 KiB stack, built for speed (larger frames than for size): a body
/// nested as deep as JSON parsing allows is read inside the plugin without exhausting it, and
/// one nested deeper is refused in the API's error shape, never a trapped plugin. A stream of a
/// mapped model enters the plugin; one the host forwards refuses the same body (the host's
/// rewrite reads it as the plugin's does).
#[test]
fn a_body_nested_to_the_parsers_limit_does_not_exhaust_the_plugins_stack() {
    let mock = Mock::start();
    let ch = channel("main", "openai", &mock.url(), &["gpt-4o-mini", "mapped"], &["sk-upstream-1"]);
    let gw = Gateway::start(
        "deep",
        &[("openai", "openai.wasm")],
        &format!("{ch}[channel.model_map]\nmapped = \"gpt-4o-mini\"\n"),
    );
    // A streamed chat: the plugin parses the whole body to ask the vendor for usage.
    let body = |model: &str, depth: usize| {
        format!(r#"{{"model":"{model}","stream":true,"messages":[],"x":{}{}}}"#, "[".repeat(depth), "]".repeat(depth))
    };
    for model in ["mapped", "gpt-4o-mini"] {
        let r = gw.post("/v1/chat/completions", &body(model, 126));
        assert_eq!(r.status, 200, "{model}: {}", r.text());
        assert!(r.text().contains("[DONE]"), "{model}: {}", r.text());
        let r = gw.post("/v1/chat/completions", &body(model, 127));
        let kind = r.json()["error"]["type"].clone();
        assert_eq!((r.status, kind.as_str()), (400, Some("invalid_request_error")), "{model}: {}", r.text());
    }
    assert_eq!(mock.stats()["requests"].as_u64(), Some(2), "only the bodies a Value reads reach the vendor");
}

/// The top-level imports of a built component, by name (not those of the components and
/// modules nested in it, whose payloads come between their own `Version` and `End`).
fn component_imports(wasm: &[u8]) -> Vec<String> {
    let (mut names, mut depth) = (Vec::new(), 0);
    for payload in wasmparser::Parser::new(0).parse_all(wasm) {
        match payload.expect("a valid component") {
            wasmparser::Payload::Version { .. } => depth += 1,
            wasmparser::Payload::End(_) => depth -= 1,
            wasmparser::Payload::ComponentImportSection(section) if depth == 1 => {
                names.extend(section.into_iter().map(|import| import.expect("an import").name.name.to_string()))
            }
            _ => {}
        }
    }
    names
}

/// The shipped plugins are built for `wasm32-unknown-unknown` (`cargo plugins`): each imports
/// the contract's types and, if it reads the time or draws a nonce through the SDK, WASI's wall
/// clock and random source; nothing else (no files, environment, sockets or stdio: each
/// imported interface would cost every call an instance of its own). A build for another
/// target, or a plugin reaching std's clock, fails here.
#[test]
fn the_shipped_plugins_import_the_contract_and_at_most_the_clock_and_randomness() {
    const CONTRACT: &str = "tollgate:adapter/types@1.0.0";
    let allowed = |name: &str| {
        name == CONTRACT
            || name.starts_with("wasi:clocks/wall-clock@0.2.")
            || name.starts_with("wasi:random/random@0.2.")
    };
    for name in include_str!("../../../plugins/shipped").lines().map(str::trim).filter(|l| !l.is_empty()) {
        let wasm = std::fs::read(tollgate_e2e::plugin_file(name)).expect("the built plugin");
        let imports = component_imports(&wasm);
        assert!(imports.iter().any(|i| i == CONTRACT), "{name}: {imports:?}");
        let extra: Vec<_> = imports.iter().filter(|i| !allowed(i)).collect();
        assert!(extra.is_empty(), "{name} imports more than the contract, the clock and randomness: {extra:?}");
        if name == "openai" {
            // It neither signs nor dates anything: the contract alone.
            assert_eq!(imports, [CONTRACT], "{name}");
        }
    }
    // The check can fail: a fixture built for wasm32-wasip2 imports WASI's cli interfaces.
    let wasip2 = component_imports(&std::fs::read(tollgate_e2e::plugin_file("faulty-v1")).unwrap());
    assert!(wasip2.iter().any(|i| i.starts_with("wasi:cli/")), "{wasip2:?}");
}
