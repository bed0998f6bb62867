//! Request ids: unique across nodes and restarts, and cheap on the request path.
//!
//! An id is `req-` + 96 random bits (drawn once per process by the caller, from a secure
//! source) + a counter (8 hex digits or more). Request ids key the ledger, so two nodes or two runs must never
//! produce the same one: a collision would leave a call uncharged.

use std::sync::atomic::{AtomicU64, Ordering};

pub struct RequestIds {
    prefix: String,
    seq: AtomicU64,
}

impl RequestIds {
    /// `random`: 96 or more random bits (the top 96 are used).
    pub fn new(random: u128) -> RequestIds {
        RequestIds { prefix: format!("{:024x}", random >> 32), seq: AtomicU64::new(0) }
    }

    pub fn next(&self) -> String {
        format!("req-{}{:08x}", self.prefix, self.seq.fetch_add(1, Ordering::Relaxed))
    }
}

#[cfg(test)]
mod tests {
    use super::RequestIds;

    #[test]
    fn ids_carry_the_process_prefix_and_never_repeat_within_it() {
        let ids = RequestIds::new(0xfeed_u128 << 112);
        let (a, b) = (ids.next(), ids.next());
        assert_ne!(a, b);
        assert_eq!(a.len(), "req-".len() + 24 + 8);
        assert!(a.starts_with("req-feed"), "{a}");
        assert_ne!(RequestIds::new(1 << 32).next(), RequestIds::new(2 << 32).next());
    }
}
