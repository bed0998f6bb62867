//! Time and randomness for plugins that sign requests (Kling JWT expiry, Zhipu's millisecond
//! timestamps, Volcengine V4 dates, nonces). Inside the gateway they come from two WASI
//! interfaces the plugin imports directly, `wasi:clocks/wall-clock` and `wasi:random/random`:
//! the host's real wall clock and its cryptographically secure random source (pinned in the
//! host's runtime and tested end to end). Nothing else of WASI is needed, and a plugin that
//! never calls these two functions imports nothing of WASI at all (the shipped plugins are
//! built for `wasm32-unknown-unknown`, where std has no clock or random source to call: these
//! functions are the plugin's only way to them). In native unit tests they come from the
//! operating system, and the harness can fix them (`testing::fix_clock`,
//! `testing::fix_nonce`) so that signatures are reproducible.

use std::cell::RefCell;

thread_local! {
    pub(crate) static FIXED_NOW_MS: RefCell<Option<u64>> = const { RefCell::new(None) };
    pub(crate) static FIXED_NONCE: RefCell<Option<String>> = const { RefCell::new(None) };
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    if let Some(fixed) = FIXED_NOW_MS.with(|f| *f.borrow()) {
        return fixed;
    }
    #[cfg(target_arch = "wasm32")]
    {
        let now = wasip2::clocks::wall_clock::now();
        now.seconds.saturating_mul(1000).saturating_add(u64::from(now.nanoseconds / 1_000_000))
    }
    #[cfg(not(target_arch = "wasm32"))]
    {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
    }
}

/// 16 random bytes as 32 lower-case hex digits, from the secure random source.
pub fn nonce() -> String {
    if let Some(fixed) = FIXED_NONCE.with(|f| f.borrow().clone()) {
        return fixed;
    }
    #[cfg(target_arch = "wasm32")]
    let bytes = wasip2::random::random::get_random_bytes(16);
    #[cfg(not(target_arch = "wasm32"))]
    let bytes = {
        let mut bytes = [0u8; 16];
        getrandom::fill(&mut bytes).expect("the operating system provides secure randomness");
        bytes
    };
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
