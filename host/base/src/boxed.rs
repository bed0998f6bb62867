//! Boxing a large value without its copy: `Box::pin(make())` builds the value on the stack
//! and copies all of it into the box, allocated only after (a future's copy is its whole size,
//! kilobytes on the call path, though an unstarted future holds only its arguments). Here the
//! box is allocated first and the value is built in it: the compiler writes `make`'s result
//! straight into the box (measured in `tests/bench/instructions.sh`: its `memcpy`).
//!
//! Invariant: the same value and box as `Box::pin(make())`; only where it is built differs.

use std::pin::Pin;

/// `Box::pin(make())`, the value built in its box.
#[inline(always)]
pub fn pin<T>(make: impl FnOnce() -> T) -> Pin<Box<T>> {
    Box::into_pin(Box::write(Box::new_uninit(), make()))
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_value_is_the_one_made() {
        let b = super::pin(|| [7u8; 4096]);
        assert!(b.iter().all(|&x| x == 7));
        assert_eq!(b.len(), 4096);
    }
}
