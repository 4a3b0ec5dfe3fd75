//! The allocator the SDK registers with the host, and ownership of what
//! the host hands out.
//!
//! The host allocates every result (method, path, headers, bodies, KV
//! values, DNS answers) with [`malloc`] and leaves it to the guest. Each
//! block carries its size in an 8-byte header in front of it, so that
//! [`free`] releases it with the exact layout it was allocated with
//! (the 2019 `http_guest` crates freed such buffers as if they were one
//! byte long, which today's allocators reject).

use std::alloc::{Layout, alloc, dealloc};
use std::ptr;

use crate::sys::{self, GuestSlice};

/// Bytes in front of each block; also its alignment, enough for the
/// `GuestSlice` arrays the host writes.
const HEADER: usize = 8;

fn layout(size: usize) -> Option<Layout> {
    Layout::from_size_align(size.checked_add(HEADER)?, HEADER).ok()
}

/// Allocates `size` bytes for the host; null when out of memory.
pub extern "C" fn malloc(size: usize) -> *mut u8 {
    let Some(layout) = layout(size) else { return ptr::null_mut() };
    // SAFETY: the layout has a non-zero size (the header).
    unsafe {
        let base = alloc(layout);
        if base.is_null() {
            return base;
        }
        base.cast::<usize>().write(size);
        base.add(HEADER)
    }
}

/// Frees a block from [`malloc`]; null is ignored.
///
/// # Safety
/// `ptr` is null or came from [`malloc`] and was not freed yet.
pub unsafe extern "C" fn free(ptr: *mut u8) {
    if ptr.is_null() {
        return;
    }
    // SAFETY: the caller guarantees ptr came from `malloc`, whose header
    // holds the size that `layout` accepted then.
    unsafe {
        let base = ptr.sub(HEADER);
        let size = base.cast::<usize>().read();
        dealloc(base, layout(size).expect("size checked by malloc"));
    }
}

/// Registers [`malloc`] and [`free`] with `hostcall_init_mm`, as function
/// table indices. [`crate::run`] does this on entry; a guest that calls
/// the raw hostcalls itself calls it before the first one.
pub fn register_allocator() {
    // SAFETY: both functions have the signatures the ABI asks for.
    unsafe { sys::hostcall_init_mm(malloc, free) }
}

/// Copies a buffer the host handed out and frees it; null is empty.
///
/// # Safety
/// `ptr` is null or a block from [`malloc`] holding at least `len` bytes.
pub unsafe fn take_bytes(ptr: *mut u8, len: usize) -> Vec<u8> {
    if ptr.is_null() {
        return Vec::new();
    }
    // SAFETY: guaranteed by the caller.
    unsafe {
        let bytes = std::slice::from_raw_parts(ptr, len).to_vec();
        free(ptr);
        bytes
    }
}

/// Copies a list the host handed out (an array of `GuestSlice`, each
/// element allocated separately) and frees the elements and the array.
///
/// # Safety
/// `list` is null or a block from [`malloc`] holding `count` slices, each
/// of them null or a block from [`malloc`].
pub unsafe fn take_list(list: *mut GuestSlice, count: usize) -> Vec<Vec<u8>> {
    if list.is_null() {
        return Vec::new();
    }
    // SAFETY: guaranteed by the caller.
    unsafe {
        let items = std::slice::from_raw_parts(list, count).iter().map(|item| take_bytes(item.ptr, item.len)).collect();
        free(list.cast());
        items
    }
}

/// A buffer out of a hostcall `(ptr_p, len_p, ...)`.
pub(crate) fn out_bytes(call: impl FnOnce(*mut *mut u8, *mut usize)) -> Vec<u8> {
    let (mut ptr, mut len) = (ptr::null_mut(), 0);
    call(&mut ptr, &mut len);
    // SAFETY: the host wrote a block from our allocator, or left null.
    unsafe { take_bytes(ptr, len) }
}

/// A list out of a hostcall `(list_p, count_p, ...)`.
pub(crate) fn out_list(call: impl FnOnce(*mut *mut GuestSlice, *mut usize)) -> Vec<Vec<u8>> {
    let (mut list, mut count) = (ptr::null_mut(), 0);
    call(&mut list, &mut count);
    // SAFETY: the host wrote a block from our allocator, or left null.
    unsafe { take_list(list, count) }
}

/// Borrows byte strings as a `GuestSlice` array for the host to read.
pub(crate) fn slices<'a>(items: impl IntoIterator<Item = &'a [u8]>) -> Vec<GuestSlice> {
    items.into_iter().map(|item| GuestSlice { ptr: item.as_ptr().cast_mut(), len: item.len() }).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_round_trip_with_their_real_size() {
        for size in [0, 1, 7, 8, 37, 4096, 1 << 20] {
            let block = malloc(size);
            assert!(!block.is_null());
            assert_eq!(block as usize % HEADER, 0, "aligned for GuestSlice arrays");
            unsafe {
                block.write_bytes(0xab, size);
                free(block);
            }
        }
        unsafe { free(ptr::null_mut()) };
    }

    #[test]
    fn impossible_sizes_are_null() {
        assert!(malloc(usize::MAX).is_null());
        assert!(malloc(usize::MAX - 4).is_null());
    }

    #[test]
    fn taking_copies_and_frees() {
        unsafe {
            let block = malloc(6);
            block.copy_from_nonoverlapping(c"hello".as_ptr().cast(), 6);
            assert_eq!(take_bytes(block, 5), b"hello");
            assert!(take_bytes(ptr::null_mut(), 0).is_empty());

            let list = malloc(2 * std::mem::size_of::<GuestSlice>()).cast::<GuestSlice>();
            for (i, text) in [&b"a"[..], b"bc"].iter().enumerate() {
                let item = malloc(text.len());
                item.copy_from_nonoverlapping(text.as_ptr(), text.len());
                list.add(i).write(GuestSlice { ptr: item, len: text.len() });
            }
            assert_eq!(take_list(list, 2), vec![b"a".to_vec(), b"bc".to_vec()]);
        }
    }
}
