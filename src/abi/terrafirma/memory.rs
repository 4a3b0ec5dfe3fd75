//! The one place where hostcalls touch guest memory: every pointer and length
//! from the guest is checked here, and every buffer handed to the guest is
//! allocated with the guest's own allocator and followed by a NUL byte.

use wasmtime::{Caller, Memory, TypedFunc};

use super::HostcallError;
use crate::executor::{CallMode, Sandbox};

/// The guest's linear memory, or a trap naming the hostcall.
pub fn memory(caller: &Caller<'_, Sandbox>, call: &'static str) -> Result<Memory, HostcallError> {
    caller.data().session.memory.ok_or(HostcallError::NoMemory { call })
}

/// `len` bytes at `ptr`, bounds-checked.
pub fn slice<'a>(data: &'a [u8], ptr: i32, len: i32, call: &'static str) -> Result<&'a [u8], HostcallError> {
    let (start, end) = range(data.len(), ptr, len, call)?;
    Ok(&data[start..end])
}

/// `len` writable bytes at `ptr`, bounds-checked.
pub fn slice_mut<'a>(data: &'a mut [u8], ptr: i32, len: usize, call: &'static str) -> Result<&'a mut [u8], HostcallError> {
    let len = i32::try_from(len).map_err(|_| HostcallError::OutOfBounds { call, ptr: ptr as u32, len: u32::MAX })?;
    let (start, end) = range(data.len(), ptr, len, call)?;
    Ok(&mut data[start..end])
}

fn range(size: usize, ptr: i32, len: i32, call: &'static str) -> Result<(usize, usize), HostcallError> {
    let (ptr, len) = (ptr as u32, len as u32);
    let start = ptr as usize;
    match start.checked_add(len as usize) {
        Some(end) if end <= size => Ok((start, end)),
        _ => Err(HostcallError::OutOfBounds { call, ptr, len }),
    }
}

/// Copies a guest buffer out.
pub fn read(caller: &Caller<'_, Sandbox>, ptr: i32, len: i32, call: &'static str) -> Result<Vec<u8>, HostcallError> {
    let memory = memory(caller, call)?;
    Ok(slice(memory.data(caller), ptr, len, call)?.to_vec())
}

/// Reads an array of `GuestSlice { ptr: i32, len: i32 }` and the buffers it points to.
pub fn read_slices(caller: &Caller<'_, Sandbox>, ptr: i32, count: i32, call: &'static str) -> Result<Vec<Vec<u8>>, HostcallError> {
    let memory = memory(caller, call)?;
    let data = memory.data(caller);
    let table_len = count.checked_mul(8).ok_or(HostcallError::OutOfBounds { call, ptr: ptr as u32, len: u32::MAX })?;
    let table = slice(data, ptr, table_len, call)?;
    table
        .chunks_exact(8)
        .map(|entry| {
            let item_ptr = i32::from_le_bytes(entry[..4].try_into().expect("4 bytes"));
            let item_len = i32::from_le_bytes(entry[4..].try_into().expect("4 bytes"));
            Ok(slice(data, item_ptr, item_len, call)?.to_vec())
        })
        .collect()
}

/// Writes a little-endian `i32` at `ptr`.
pub fn write_i32(caller: &mut Caller<'_, Sandbox>, ptr: i32, value: i32, call: &'static str) -> Result<(), HostcallError> {
    let memory = memory(caller, call)?;
    slice_mut(memory.data_mut(caller), ptr, 4, call)?.copy_from_slice(&value.to_le_bytes());
    Ok(())
}

/// The allocator the host uses for this guest (ABI: registered pair first,
/// then an exported `default_malloc_impl` / `malloc` / `memory.allocate`).
fn allocator(caller: &mut Caller<'_, Sandbox>) -> Option<TypedFunc<i32, i32>> {
    let session = &caller.data().session;
    if let Some(malloc) = &session.registered_malloc {
        return Some(malloc.clone());
    }
    let exported = session.exported_malloc?;
    exported.typed::<i32, i32>(&*caller).ok()
}

/// Allocates `size` bytes in the guest; `None` when it has no allocator.
/// The allocator is called the way the guest is (see `reentrant`).
async fn alloc(caller: &mut Caller<'_, Sandbox>, size: usize, call: &'static str) -> wasmtime::Result<Option<i32>> {
    let Some(malloc) = allocator(caller) else { return Ok(None) };
    let size = i32::try_from(size).map_err(|_| HostcallError::AllocatorFailed { call })?;
    let ptr = match caller.data().mode {
        CallMode::Fiber => malloc.call_async(&mut *caller, size).await?,
        CallMode::Direct => malloc.call(&mut *caller, size)?,
    };
    if ptr == 0 {
        return Err(HostcallError::AllocatorFailed { call }.into());
    }
    Ok(Some(ptr))
}

/// Copies `bytes` plus a NUL into a fresh guest allocation; returns its address.
/// `Ok(None)` when the guest has no allocator.
async fn place(caller: &mut Caller<'_, Sandbox>, bytes: &[u8], call: &'static str) -> wasmtime::Result<Option<i32>> {
    let Some(ptr) = alloc(caller, bytes.len() + 1, call).await? else { return Ok(None) };
    let memory = memory(caller, call)?;
    let dest = slice_mut(memory.data_mut(&mut *caller), ptr, bytes.len() + 1, call)?;
    dest[..bytes.len()].copy_from_slice(bytes);
    dest[bytes.len()] = 0;
    Ok(Some(ptr))
}

/// Writes the empty result (pointer 0, length or count 0).
pub fn hand_out_nothing(caller: &mut Caller<'_, Sandbox>, ptr_p: i32, len_p: i32, call: &'static str) -> Result<(), HostcallError> {
    write_i32(caller, ptr_p, 0, call)?;
    write_i32(caller, len_p, 0, call)
}

/// Hands a buffer to the guest: allocates and fills it, then writes its
/// address to `*ptr_p` and its length to `*len_p`. Without an allocator an
/// empty result is written as 0/0 and anything else traps.
pub async fn hand_out(caller: &mut Caller<'_, Sandbox>, ptr_p: i32, len_p: i32, bytes: &[u8], call: &'static str) -> wasmtime::Result<()> {
    let ptr = match place(caller, bytes, call).await? {
        Some(ptr) => ptr,
        None if bytes.is_empty() => 0,
        None => return Err(HostcallError::NoAllocator { call }.into()),
    };
    write_i32(caller, ptr_p, ptr, call)?;
    write_i32(caller, len_p, bytes.len() as i32, call)?;
    Ok(())
}

/// Hands a list of buffers to the guest as an allocated array of
/// `GuestSlice { ptr, len }`, each element allocated separately.
pub async fn hand_out_list<B: AsRef<[u8]>>(
    caller: &mut Caller<'_, Sandbox>,
    list_p: i32,
    count_p: i32,
    items: &[B],
    call: &'static str,
) -> wasmtime::Result<()> {
    if items.is_empty() {
        return Ok(hand_out_nothing(caller, list_p, count_p, call)?);
    }
    let mut table = Vec::with_capacity(items.len() * 8);
    for item in items {
        let item = item.as_ref();
        let ptr = place(caller, item, call).await?.ok_or(HostcallError::NoAllocator { call })?;
        table.extend_from_slice(&ptr.to_le_bytes());
        table.extend_from_slice(&(item.len() as i32).to_le_bytes());
    }
    let list = alloc(caller, table.len(), call).await?.ok_or(HostcallError::NoAllocator { call })?;
    let memory = memory(caller, call)?;
    slice_mut(memory.data_mut(&mut *caller), list, table.len(), call)?.copy_from_slice(&table);
    write_i32(caller, list_p, list, call)?;
    write_i32(caller, count_p, items.len() as i32, call)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_are_checked() {
        let data = [0u8; 16];
        assert_eq!(slice(&data, 4, 4, "t").unwrap().len(), 4);
        assert!(slice(&data, 12, 4, "t").is_ok());
        assert!(slice(&data, 13, 4, "t").is_err());
        assert!(slice(&data, -1, 2, "t").is_err());
        assert!(slice(&data, 0, -1, "t").is_err());
        assert!(slice(&data, 16, 0, "t").is_ok());
    }
}
