//! Time and randomness for plugins that sign requests (Kling JWT expiry, Zhipu's millisecond
//! timestamps, Volcengine V4 dates, nonces). Inside the gateway they come from WASI: the host's
//! real wall clock and its cryptographically secure random source (pinned in the host's runtime
//! and tested end to end). In native unit tests the harness can fix them (`testing::fix_clock`,
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
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

/// 16 random bytes as 32 lower-case hex digits, from the secure random source.
pub fn nonce() -> String {
    if let Some(fixed) = FIXED_NONCE.with(|f| f.borrow().clone()) {
        return fixed;
    }
    let mut bytes = [0u8; 16];
    getrandom::fill(&mut bytes).expect("the host provides secure randomness");
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
