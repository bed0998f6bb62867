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

    /// `req-`, the prefix, and the sequence number in lower-case hex, at least 8 digits
    /// (written by hand: `format!` was 1,200 instructions of every request).
    pub fn next(&self) -> String {
        let n = self.seq.fetch_add(1, Ordering::Relaxed);
        let digits = (16 - n.leading_zeros() as usize / 4).max(8);
        let mut id = String::with_capacity(4 + self.prefix.len() + digits);
        id.push_str("req-");
        id.push_str(&self.prefix);
        id.extend((0..digits).rev().map(|i| char::from(b"0123456789abcdef"[(n >> (4 * i)) as usize & 0xf])));
        id
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

    #[test]
    fn the_sequence_is_hex_of_at_least_eight_digits() {
        let ids = RequestIds::new(0xfeed_u128 << 112);
        let prefix = format!("req-{:024x}", 0xfeed_u128 << 80);
        for n in [0u64, 1, 0xa, 0xffff_ffff, 0x1_0000_0000, 0xdead_beef_cafe, u64::MAX] {
            ids.seq.store(n, std::sync::atomic::Ordering::Relaxed);
            assert_eq!(ids.next(), format!("{prefix}{n:08x}"), "{n:#x}");
        }
    }
}
