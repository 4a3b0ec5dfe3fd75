//! The process's allocator: mimalloc, asked the way its fast path wants.
//!
//! `mimalloc::MiMalloc` hands every request to `mi_malloc_aligned`, even
//! when the alignment is one any mimalloc block already has. mimalloc 2's
//! aligned entry then takes its slow, over-allocating path for every block
//! over 1 KiB (and marks the block, so `mi_free` takes its slow path too).
//! On a hello request (27 allocations) that was about 1,700 instructions of
//! 35,000 (callgrind, RESULTS.md). A layout whose alignment is at most
//! mimalloc's natural one (16 bytes, `MI_MAX_ALIGN_SIZE`) and whose size is a
//! multiple of it is satisfied by any block of that size (its size classes
//! are multiples of 8, and 16 from 16 bytes up, on 16-aligned pages), so it
//! goes to plain `mi_malloc`; everything else to `MiMalloc` as before. The
//! same change is proposed to the `mimalloc` crate upstream
//! (purpleprotocol/mimalloc_rust#170).
//!
//! A `terrafirma run` process uses the C library's allocator instead,
//! switched on before `main` (`use_system_allocator`): mimalloc starts every
//! size class on a page of its own, so a short run touches more pages than
//! glibc's packed heap (287 page faults against 228 for a cached hello
//! world). The switch costs the node one predictable branch per call.

use std::alloc::{GlobalAlloc, Layout, System};
use std::ffi::c_void;
use std::sync::atomic::{AtomicBool, Ordering};

use libmimalloc_sys::{mi_free, mi_malloc, mi_realloc, mi_zalloc};
use mimalloc::MiMalloc;

/// The alignment every mimalloc block of a size that is a multiple of it has.
const NATURAL_ALIGN: usize = 16;

pub struct NodeAllocator;

/// Set once, before the first allocation, for a process that should use the
/// C library's allocator instead (`terrafirma run`).
static SYSTEM: AtomicBool = AtomicBool::new(false);

/// Sends every allocation of this process to the C library's allocator.
///
/// # Safety
/// Called before the process's first allocation through `NodeAllocator`
/// (from an `.init_array` function), and never again: a block must go back
/// to the allocator it came from.
pub unsafe fn use_system_allocator() {
    SYSTEM.store(true, Ordering::Relaxed);
}

#[inline(always)]
fn system() -> bool {
    SYSTEM.load(Ordering::Relaxed)
}

/// Whether a plain mimalloc block of `size` bytes is aligned for `align`.
#[inline(always)]
fn natural(size: usize, align: usize) -> bool {
    align <= NATURAL_ALIGN && size.is_multiple_of(align)
}

// SAFETY: every block comes from mimalloc and goes back to it; `mi_free` and
// `mi_realloc` take blocks from either entry (plain or aligned), and a block
// from the plain entry is returned only where `natural` holds for its layout.
unsafe impl GlobalAlloc for NodeAllocator {
    #[inline]
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if system() {
            // SAFETY: the caller's contract, passed on.
            return unsafe { System.alloc(layout) };
        }
        if natural(layout.size(), layout.align()) {
            // SAFETY: mimalloc's malloc, any size.
            unsafe { mi_malloc(layout.size()) as *mut u8 }
        } else {
            // SAFETY: the caller's contract, passed on.
            unsafe { MiMalloc.alloc(layout) }
        }
    }

    #[inline]
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if system() {
            // SAFETY: the caller's contract, passed on.
            return unsafe { System.alloc_zeroed(layout) };
        }
        if natural(layout.size(), layout.align()) {
            // SAFETY: as `alloc`, zeroed.
            unsafe { mi_zalloc(layout.size()) as *mut u8 }
        } else {
            // SAFETY: the caller's contract, passed on.
            unsafe { MiMalloc.alloc_zeroed(layout) }
        }
    }

    #[inline]
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        if system() {
            // SAFETY: the caller's contract, passed on.
            return unsafe { System.dealloc(ptr, layout) };
        }
        // SAFETY: `ptr` is a live mimalloc block (either entry).
        unsafe { mi_free(ptr as *mut c_void) }
    }

    #[inline]
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if system() {
            // SAFETY: the caller's contract, passed on.
            return unsafe { System.realloc(ptr, layout, new_size) };
        }
        if natural(new_size, layout.align()) {
            // SAFETY: `ptr` is a live mimalloc block; the new one needs no
            // more than natural alignment.
            unsafe { mi_realloc(ptr as *mut c_void, new_size) as *mut u8 }
        } else {
            // SAFETY: the caller's contract, passed on.
            unsafe { MiMalloc.realloc(ptr, layout, new_size) }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_block_is_aligned_as_its_layout_asks_whichever_entry_serves_it() {
        let allocator = NodeAllocator;
        let mut live = Vec::new();
        for align in [1usize, 2, 4, 8, 16, 32, 64, 128, 4096] {
            for size in (1..=72).chain([100, 1000, 1024, 1025, 1500, 4095, 4096, 5000, 70_000, 1 << 20, (4 << 20) + 8]) {
                let Ok(layout) = Layout::from_size_align(size, align) else { continue };
                for zeroed in [false, true] {
                    // SAFETY: a layout of non-zero size; the block is freed below.
                    let block = unsafe { if zeroed { allocator.alloc_zeroed(layout) } else { allocator.alloc(layout) } };
                    assert!(!block.is_null(), "no block for {layout:?}");
                    assert_eq!(block as usize % align, 0, "{layout:?} (zeroed: {zeroed}) got a block at {block:p}");
                    if zeroed {
                        // SAFETY: `size` bytes were just allocated.
                        assert!(unsafe { std::slice::from_raw_parts(block, size) }.iter().all(|&b| b == 0), "{layout:?} not zeroed");
                    }
                    // SAFETY: writing the whole block catches one too small.
                    unsafe { block.write_bytes(0xa5, size) };
                    live.push((block, layout));
                }
            }
        }
        for (block, layout) in live.drain(..) {
            // Grown once to a size that is not a multiple of the alignment
            // (the aligned entry), once to one that is (the plain one, where
            // the alignment allows).
            let (mut block, mut size) = (block, layout.size());
            for new_size in [size * 2 + 3, (size * 2 + 3).next_multiple_of(layout.align()) * 2] {
                let old = Layout::from_size_align(size, layout.align()).unwrap();
                // SAFETY: `block` is live with `old`; it is replaced by the result.
                let grown = unsafe { allocator.realloc(block, old, new_size) };
                assert!(!grown.is_null());
                assert_eq!(grown as usize % layout.align(), 0, "{old:?} grown to {new_size} at {grown:p}");
                // SAFETY: the contents are kept up to the smaller size.
                assert!(unsafe { std::slice::from_raw_parts(grown, layout.size()) }.iter().all(|&b| b == 0xa5), "{old:?} lost its bytes");
                (block, size) = (grown, new_size);
            }
            // SAFETY: `block` is live with `size` bytes and the old alignment.
            unsafe { allocator.dealloc(block, Layout::from_size_align(size, layout.align()).unwrap()) };
        }
    }
}
