//! The site's durable key-value store (`hostcall_kvstore_*`). All modules
//! of a site share it; a value confirmed by [`insert`] survives a restart
//! of the node. Keys and values are bytes; keys are short (up to 1 KiB).

use crate::mem::out_bytes;
use crate::sys;

/// Sets `key` to `value`; `true` if the key was new.
pub fn insert(key: impl AsRef<[u8]>, value: impl AsRef<[u8]>) -> bool {
    let (key, value) = (key.as_ref(), value.as_ref());
    // SAFETY: valid buffers, read by the host.
    unsafe { sys::hostcall_kvstore_insert(key.as_ptr(), key.len(), value.as_ptr(), value.len()) != 0 }
}

/// Sets `key` to `value` only if it is absent; `true` if it was set.
pub fn upsert(key: impl AsRef<[u8]>, value: impl AsRef<[u8]>) -> bool {
    let (key, value) = (key.as_ref(), value.as_ref());
    // SAFETY: valid buffers, read by the host.
    unsafe { sys::hostcall_kvstore_upsert(key.as_ptr(), key.len(), value.as_ptr(), value.len()) != 0 }
}

/// Appends `value` to the value of `key`, creating it if absent; `true` if
/// the key was new.
pub fn append(key: impl AsRef<[u8]>, value: impl AsRef<[u8]>) -> bool {
    let (key, value) = (key.as_ref(), value.as_ref());
    // SAFETY: valid buffers, read by the host.
    unsafe { sys::hostcall_kvstore_append(key.as_ptr(), key.len(), value.as_ptr(), value.len()) != 0 }
}

/// The value of `key`, if present.
pub fn get(key: impl AsRef<[u8]>) -> Option<Vec<u8>> {
    let key = key.as_ref();
    let mut found = false;
    // SAFETY: valid buffers; the host writes a block from our allocator.
    let value = out_bytes(|p, l| found = unsafe { sys::hostcall_kvstore_get(p, l, key.as_ptr(), key.len()) } != 0);
    found.then_some(value)
}

/// Removes `key`; `true` if a value was removed.
pub fn remove(key: impl AsRef<[u8]>) -> bool {
    let key = key.as_ref();
    // SAFETY: a valid buffer, read by the host.
    unsafe { sys::hostcall_kvstore_remove(key.as_ptr(), key.len()) != 0 }
}
