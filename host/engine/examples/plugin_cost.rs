//! Measures what one call costs inside the plugin runtime, for the plugin file given: what a
//! call waits for (`start`: an instance made ahead or a fresh one, and the exchange
//! constructor; `first()`; `next()`), and in all, the store freed and the next instance made
//! after the call (the runtime does that in a task after the answer; the loop lets it run).
//!
//! `cargo run --release -p tollgate-engine --example plugin_cost -- target/wasm32-unknown-unknown/plugin/tollgate_plugin_openai.wasm [N] [GAP_MS]`
//!
//! N calls (default 20,000), back to back or `GAP_MS` apart (a sparse load, each call on cold
//! caches: the idle time is left out of the figures). Also prints the thread's CPU time per
//! call.

use std::time::Instant;
use tollgate_engine::plugin::{runtime::sha256_hex, wit, Runtime};

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let path = std::env::args().nth(1).expect("usage: plugin_cost FILE.wasm [N] [GAP_MS]");
    let n: u32 = std::env::args().nth(2).map(|s| s.parse()).transpose()?.unwrap_or(20_000);
    let gap: u64 = std::env::args().nth(3).map(|s| s.parse()).transpose()?.unwrap_or(0);
    let bytes = std::fs::read(&path)?;
    let dir = std::env::temp_dir().join("tollgate-plugin-cost");
    let runtime = Runtime::new(dir, 64, 1000, 5000, 64, false)?;
    let pre = runtime.prepare(&bytes, &sha256_hex(&bytes))?;
    // As the gateway does: a plugin is described (its exports' types checked) before any call.
    runtime.describe(&pre).await?;
    let body = r#"{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hello"}]}"#;
    let call = wit::Call {
        op: "chat".into(),
        context: wit::CallContext {
            request_id: "req-cost".into(),
            attempt: 1,
            path: "/v1/chat/completions".into(),
            path_params: vec![],
            base_url: "http://127.0.0.1:9".into(),
        },
        model: "gpt-4o-mini".into(),
        upstream_model: "gpt-4o-mini".into(),
        body: wit::Body::Text(body.into()),
        query: String::new(),
        headers: vec![],
        credential: vec![],
        config: "{}".into(),
        task: None,
        keep_speech: false,
        owned: Vec::new(),
    };
    let answer = br#"{"id":"chatcmpl-mock","object":"chat.completion","created":1700000000,"model":"gpt-4o-mini","choices":[{"index":0,"message":{"role":"assistant","content":"Hello from mock"},"finish_reason":"stop"}],"usage":{"prompt_tokens":9,"completion_tokens":3,"total_tokens":12}}"#;
    let response = wit::UpstreamResponse { status: 200, headers: vec![], body: answer.to_vec() };
    let (mut t_start, mut t_first, mut t_next) = (0u128, 0u128, 0u128);
    let all = Instant::now();
    let mut idle = std::time::Duration::ZERO;
    let cpu = cpu_time();
    for _ in 0..n {
        if gap > 0 {
            let t = Instant::now();
            std::thread::sleep(std::time::Duration::from_millis(gap));
            idle += t.elapsed();
        }
        let t0 = Instant::now();
        let mut pc = runtime.start(&pre, &call).await?;
        let t1 = Instant::now();
        let step = pc.first().await?;
        let t2 = Instant::now();
        assert!(matches!(step, wit::Step::Send(_)));
        let step = pc.next(&response).await?;
        assert!(matches!(step, wit::Step::Reply(_)));
        let t3 = Instant::now();
        drop(pc);
        // As the gateway's worker goes on to other tasks after an answer: the call's end
        // (freeing its store, making the next instance) runs now.
        for _ in 0..3 {
            tokio::task::yield_now().await;
        }
        t_start += (t1 - t0).as_nanos();
        t_first += (t2 - t1).as_nanos();
        t_next += (t3 - t2).as_nanos();
    }
    let per = |t: u128| t as f64 / n as f64 / 1000.0;
    println!(
        "per call: start {:.1} µs, first {:.1} µs, next {:.1} µs: waited {:.1} µs; in all {:.1} µs",
        per(t_start),
        per(t_first),
        per(t_next),
        per(t_start + t_first + t_next),
        per((all.elapsed() - idle).as_nanos())
    );
    println!("cpu per call {:.1} µs", (cpu_time() - cpu) as f64 / n as f64 / 1000.0);
    Ok(())
}

/// This thread's CPU time in ns (the runtime is single-threaded).
fn cpu_time() -> u128 {
    let s = std::fs::read_to_string("/proc/thread-self/schedstat").unwrap_or_default();
    s.split_whitespace().next().and_then(|t| t.parse().ok()).unwrap_or(0)
}
