//! The plugins' allocator: a bump arena in the module's zeroed data, in front of the system
//! allocator.
//!
//! The host makes a fresh instance for every call and throws it away after, so most of a
//! call's allocations live until the instance ends: for them a general-purpose allocator's
//! bins, headers and coalescing are work thrown away with the instance (wasi-libc's dlmalloc
//! was ~16k of the ~45k instructions the openai plugin runs for a chat). Here an allocation
//! takes the next aligned bytes of a fixed region; freeing the last allocation gives its bytes
//! back (so a buffer grown step by step stays in place), any other freed block stays used
//! until the instance ends. When the region is full, allocations go to the system allocator,
//! so a long stream or socket session, whose allocations outlive the region, costs what it
//! cost before.
//!
//! Invariants: the region never grows, every pointer it hands out is aligned as asked and
//! within it, a pointer it did not hand out goes to the system allocator, and a block is never
//! given out twice while in use (only the last block is ever given back). The region is part of
//! the module's zeroed data: it costs an instance nothing until touched, it never grows the
//! memory (a `memory.grow` is a system call for the host), and the host's reset of the
//! instance's dirtied pages clears it with everything else. Single-threaded: wasm32 without
//! the atomics feature, which is how plugins are built. A plugin that brings its own global
//! allocator turns this one off (the SDK's `arena-allocator` feature, on by default).

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::{Cell, UnsafeCell};

#[repr(C, align(16))]
pub(crate) struct ArenaFirst<const N: usize> {
    region: UnsafeCell<[u8; N]>,
    /// Bytes of the region in use, from its start.
    used: Cell<usize>,
}

impl<const N: usize> ArenaFirst<N> {
    pub(crate) const fn new() -> Self {
        ArenaFirst { region: UnsafeCell::new([0; N]), used: Cell::new(0) }
    }

    fn base(&self) -> usize {
        self.region.get() as usize
    }

    fn owns(&self, ptr: *mut u8) -> bool {
        (ptr as usize).wrapping_sub(self.base()) < N
    }

    /// The region's next `layout`-aligned block, if it fits.
    fn bump(&self, layout: Layout) -> Option<*mut u8> {
        let base = self.base();
        let start = (base + self.used.get()).checked_add(layout.align() - 1)? & !(layout.align() - 1);
        let offset = start - base;
        if offset > N || layout.size() > N - offset {
            return None;
        }
        self.used.set(offset + layout.size());
        Some(start as *mut u8)
    }

    /// True when the block at `ptr` of `size` bytes is the last one handed out.
    fn is_last(&self, ptr: *mut u8, size: usize) -> bool {
        ptr as usize + size == self.base() + self.used.get()
    }
}

unsafe impl<const N: usize> GlobalAlloc for ArenaFirst<N> {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        match self.bump(layout) {
            Some(ptr) => ptr,
            None => unsafe { System.alloc(layout) },
        }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        if !self.owns(ptr) {
            return unsafe { System.dealloc(ptr, layout) };
        }
        if self.is_last(ptr, layout.size()) {
            self.used.set(ptr as usize - self.base());
        }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if !self.owns(ptr) {
            return unsafe { System.realloc(ptr, layout, new_size) };
        }
        let offset = ptr as usize - self.base();
        if self.is_last(ptr, layout.size()) && new_size <= N - offset {
            self.used.set(offset + new_size);
            return ptr;
        }
        if new_size <= layout.size() {
            return ptr;
        }
        // SAFETY (of the layout): `realloc`'s caller guarantees `new_size`, rounded up to
        // `layout.align()`, does not overflow `isize`.
        let new_layout = unsafe { Layout::from_size_align_unchecked(new_size, layout.align()) };
        let new = unsafe { self.alloc(new_layout) };
        if !new.is_null() {
            unsafe {
                std::ptr::copy_nonoverlapping(ptr, new, layout.size());
                self.dealloc(ptr, layout);
            }
        }
        new
    }
}

// SAFETY: the module is compiled in only for wasm32 without atomics (see lib.rs), whose code is
// single-threaded (no shared memory, no threads): the region and its `used` count are never
// touched by two threads. (Tests use arenas they own, from one thread.)
#[cfg(not(test))]
unsafe impl<const N: usize> Sync for ArenaFirst<N> {}

/// 64 KiB: a chat's allocations (its call, the consumer's body, the vendor's answer and what is
/// parsed from them) fit several times over.
#[cfg(not(test))]
#[global_allocator]
static ALLOCATOR: ArenaFirst<{ 64 * 1024 }> = ArenaFirst::new();

#[cfg(test)]
mod tests {
    use super::ArenaFirst;
    use std::alloc::{GlobalAlloc, Layout};

    fn layout(size: usize, align: usize) -> Layout {
        Layout::from_size_align(size, align).unwrap()
    }

    #[test]
    fn blocks_are_aligned_disjoint_and_inside_the_region() {
        let arena = Box::new(ArenaFirst::<256>::new());
        let a = unsafe { arena.alloc(layout(3, 1)) };
        let b = unsafe { arena.alloc(layout(8, 8)) };
        let c = unsafe { arena.alloc(layout(16, 16)) };
        for (p, align) in [(a, 1), (b, 8), (c, 16)] {
            assert!(arena.owns(p));
            assert!((p as usize).is_multiple_of(align));
        }
        assert!(b as usize >= a as usize + 3, "b overlaps a");
        assert!(c as usize >= b as usize + 8, "c overlaps b");
        unsafe {
            std::ptr::write_bytes(a, 0xaa, 3);
            std::ptr::write_bytes(b, 0xbb, 8);
            std::ptr::write_bytes(c, 0xcc, 16);
            assert_eq!(*a.add(2), 0xaa);
            assert_eq!(*b.add(7), 0xbb);
        }
    }

    #[test]
    fn only_the_last_block_is_given_back() {
        let arena = Box::new(ArenaFirst::<256>::new());
        let a = unsafe { arena.alloc(layout(32, 8)) };
        let b = unsafe { arena.alloc(layout(32, 8)) };
        unsafe { arena.dealloc(a, layout(32, 8)) };
        let c = unsafe { arena.alloc(layout(32, 8)) };
        assert_ne!(c, a, "a block freed out of order is never given out again");
        assert_ne!(c, b);
        unsafe { arena.dealloc(c, layout(32, 8)) };
        let d = unsafe { arena.alloc(layout(32, 8)) };
        assert_eq!(d, c, "the last block's bytes come back");
    }

    #[test]
    fn a_full_region_hands_allocations_to_the_system_and_takes_them_back() {
        let arena = Box::new(ArenaFirst::<64>::new());
        let a = unsafe { arena.alloc(layout(48, 8)) };
        assert!(arena.owns(a));
        let big = unsafe { arena.alloc(layout(32, 8)) };
        assert!(!big.is_null() && !arena.owns(big), "what does not fit comes from the system");
        unsafe {
            std::ptr::write_bytes(big, 1, 32);
            arena.dealloc(big, layout(32, 8));
        }
        // Sizes and alignments past the region's end never wrap around into it.
        assert_eq!(arena.bump(layout(usize::MAX / 4, 8)), None);
        assert_eq!(arena.bump(layout(1, 1 << 62)), None);
        assert_eq!(arena.used.get(), 48, "a refused block takes nothing");
        let aligned = unsafe { arena.alloc(layout(8, 4096)) };
        assert!(!arena.owns(aligned) && (aligned as usize).is_multiple_of(4096));
        unsafe { arena.dealloc(aligned, layout(8, 4096)) };
    }

    #[test]
    fn realloc_grows_the_last_block_in_place_and_moves_any_other() {
        let arena = Box::new(ArenaFirst::<256>::new());
        let a = unsafe { arena.alloc(layout(8, 8)) };
        unsafe { std::ptr::copy_nonoverlapping(b"abcdefgh".as_ptr(), a, 8) };
        let a2 = unsafe { arena.realloc(a, layout(8, 8), 64) };
        assert_eq!(a2, a, "the last block grows in place");
        let b = unsafe { arena.alloc(layout(8, 8)) };
        let a3 = unsafe { arena.realloc(a2, layout(64, 8), 100) };
        assert_ne!(a3, a2, "a block with another after it moves");
        assert!(a3 as usize >= b as usize + 8);
        assert_eq!(unsafe { std::slice::from_raw_parts(a3, 8) }, b"abcdefgh", "its bytes move with it");
        // Past the region's end: to the system allocator, bytes kept.
        let a4 = unsafe { arena.realloc(a3, layout(100, 8), 1000) };
        assert!(!arena.owns(a4));
        assert_eq!(unsafe { std::slice::from_raw_parts(a4, 8) }, b"abcdefgh");
        let a5 = unsafe { arena.realloc(a4, layout(1000, 8), 2000) };
        assert_eq!(unsafe { std::slice::from_raw_parts(a5, 8) }, b"abcdefgh");
        unsafe { arena.dealloc(a5, layout(2000, 8)) };
    }

    #[test]
    fn zeroed_allocations_are_zero_even_where_a_block_was_given_back() {
        let arena = Box::new(ArenaFirst::<256>::new());
        let a = unsafe { arena.alloc(layout(64, 8)) };
        unsafe {
            std::ptr::write_bytes(a, 0xff, 64);
            arena.dealloc(a, layout(64, 8));
        }
        let z = unsafe { arena.alloc_zeroed(layout(64, 8)) };
        assert_eq!(z, a);
        assert!(unsafe { std::slice::from_raw_parts(z, 64) }.iter().all(|&b| b == 0));
    }
}
