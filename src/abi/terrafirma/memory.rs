//! The one place where hostcalls touch guest memory: every pointer and length
//! from the guest is checked here, and every buffer handed to the guest is
//! allocated with the guest's own allocator and followed by a NUL byte.

use wasmtime::{Caller, Memory, TypedFunc};

use super::{GuestTrap, HostcallResult, TerrafirmaView};
use crate::sandbox::CallMode;

/// The guest's linear memory.
pub fn memory<T: TerrafirmaView>(caller: &Caller<'_, T>) -> Result<Memory, GuestTrap> {
    caller.data().session().memory().ok_or(GuestTrap::NoMemory)
}

/// `len` bytes at `ptr`, bounds-checked.
pub fn slice(data: &[u8], ptr: i32, len: i32) -> Result<&[u8], GuestTrap> {
    let (start, end) = range(data.len(), ptr, len)?;
    Ok(&data[start..end])
}

/// `len` writable bytes at `ptr`, bounds-checked.
fn slice_mut(data: &mut [u8], ptr: i32, len: usize) -> Result<&mut [u8], GuestTrap> {
    let len = i32::try_from(len).map_err(|_| GuestTrap::OutOfBounds { ptr: ptr as u32, len: u32::MAX })?;
    let (start, end) = range(data.len(), ptr, len)?;
    Ok(&mut data[start..end])
}

fn range(size: usize, ptr: i32, len: i32) -> Result<(usize, usize), GuestTrap> {
    let (ptr, len) = (ptr as u32, len as u32);
    let start = ptr as usize;
    match start.checked_add(len as usize) {
        Some(end) if end <= size => Ok((start, end)),
        _ => Err(GuestTrap::OutOfBounds { ptr, len }),
    }
}

/// Copies a guest buffer out.
pub fn read<T: TerrafirmaView>(caller: &Caller<'_, T>, ptr: i32, len: i32) -> Result<Vec<u8>, GuestTrap> {
    let memory = memory(caller)?;
    Ok(slice(memory.data(caller), ptr, len)?.to_vec())
}

/// Reads an array of `GuestSlice { ptr: i32, len: i32 }` and the buffers it points to.
pub fn read_slices<T: TerrafirmaView>(caller: &Caller<'_, T>, ptr: i32, count: i32) -> Result<Vec<Vec<u8>>, GuestTrap> {
    let memory = memory(caller)?;
    let data = memory.data(caller);
    let table_len = count.checked_mul(8).ok_or(GuestTrap::OutOfBounds { ptr: ptr as u32, len: u32::MAX })?;
    let table = slice(data, ptr, table_len)?;
    table
        .chunks_exact(8)
        .map(|entry| {
            let item_ptr = i32::from_le_bytes(entry[..4].try_into().expect("4 bytes"));
            let item_len = i32::from_le_bytes(entry[4..].try_into().expect("4 bytes"));
            Ok(slice(data, item_ptr, item_len)?.to_vec())
        })
        .collect()
}

/// A header as a guest passes it to a setter: its name, and its values as
/// an array of `GuestSlice`.
pub fn read_header<T: TerrafirmaView>(
    caller: &Caller<'_, T>,
    (name_ptr, name_len): (i32, i32),
    (values_ptr, values_count): (i32, i32),
) -> Result<(Vec<u8>, Vec<Vec<u8>>), GuestTrap> {
    Ok((read(caller, name_ptr, name_len)?, read_slices(caller, values_ptr, values_count)?))
}

/// Reads an array of `count` little-endian `i32`s.
pub fn read_i32s<T: TerrafirmaView>(caller: &Caller<'_, T>, ptr: i32, count: i32) -> Result<Vec<i32>, GuestTrap> {
    let len = count.checked_mul(4).ok_or(GuestTrap::OutOfBounds { ptr: ptr as u32, len: u32::MAX })?;
    Ok(read(caller, ptr, len)?.chunks_exact(4).map(|bytes| i32::from_le_bytes(bytes.try_into().expect("4 bytes"))).collect())
}

/// Writes a little-endian `i32` at `ptr`.
pub fn write_i32<T: TerrafirmaView>(caller: &mut Caller<'_, T>, ptr: i32, value: i32) -> Result<(), GuestTrap> {
    let memory = memory(caller)?;
    slice_mut(memory.data_mut(caller), ptr, 4)?.copy_from_slice(&value.to_le_bytes());
    Ok(())
}

/// The allocator the host uses for this guest (ABI: registered pair first,
/// then an exported `default_malloc_impl` / `malloc` / `memory.allocate`).
fn allocator<T: TerrafirmaView>(caller: &Caller<'_, T>) -> Option<TypedFunc<i32, i32>> {
    let session = caller.data().session();
    if let Some(malloc) = session.registered_malloc() {
        return Some(malloc.clone());
    }
    session.exported_malloc()?.typed::<i32, i32>(caller).ok()
}

/// Allocates `size` bytes in the guest; `None` when it has no allocator.
/// The allocator is called the way the guest is (see `register`).
async fn alloc<T: TerrafirmaView>(caller: &mut Caller<'_, T>, size: usize) -> HostcallResult<Option<i32>> {
    let Some(malloc) = allocator(caller) else { return Ok(None) };
    let size = i32::try_from(size).map_err(|_| GuestTrap::AllocatorFailed)?;
    let ptr = match caller.data().call_mode() {
        CallMode::Fiber => malloc.call_async(&mut *caller, size).await?,
        CallMode::Direct => malloc.call(&mut *caller, size)?,
    };
    if ptr == 0 {
        return Err(GuestTrap::AllocatorFailed.into());
    }
    Ok(Some(ptr))
}

/// Copies `bytes` plus a NUL into a fresh guest allocation; returns its
/// address, or `None` when the guest has no allocator.
async fn place<T: TerrafirmaView>(caller: &mut Caller<'_, T>, bytes: &[u8]) -> HostcallResult<Option<i32>> {
    let Some(ptr) = alloc(caller, bytes.len() + 1).await? else { return Ok(None) };
    let memory = memory(caller)?;
    let dest = slice_mut(memory.data_mut(&mut *caller), ptr, bytes.len() + 1)?;
    dest[..bytes.len()].copy_from_slice(bytes);
    dest[bytes.len()] = 0;
    Ok(Some(ptr))
}

/// Writes the empty result (pointer 0, length or count 0).
pub fn hand_out_nothing<T: TerrafirmaView>(caller: &mut Caller<'_, T>, ptr_p: i32, len_p: i32) -> Result<(), GuestTrap> {
    write_i32(caller, ptr_p, 0)?;
    write_i32(caller, len_p, 0)
}

/// Hands a buffer to the guest: allocates and fills it, then writes its
/// address to `*ptr_p` and its length to `*len_p`. Without an allocator an
/// empty result is written as 0/0 and anything else traps.
pub async fn hand_out<T: TerrafirmaView>(caller: &mut Caller<'_, T>, ptr_p: i32, len_p: i32, bytes: &[u8]) -> HostcallResult<()> {
    let ptr = match place(caller, bytes).await? {
        Some(ptr) => ptr,
        None if bytes.is_empty() => 0,
        None => return Err(GuestTrap::NoAllocator.into()),
    };
    write_i32(caller, ptr_p, ptr)?;
    write_i32(caller, len_p, bytes.len() as i32)?;
    Ok(())
}

/// Hands a list of buffers to the guest as an allocated array of
/// `GuestSlice { ptr, len }`, each element allocated separately.
pub async fn hand_out_list<T: TerrafirmaView, B: AsRef<[u8]>>(
    caller: &mut Caller<'_, T>,
    list_p: i32,
    count_p: i32,
    items: &[B],
) -> HostcallResult<()> {
    if items.is_empty() {
        return Ok(hand_out_nothing(caller, list_p, count_p)?);
    }
    let mut table = Vec::with_capacity(items.len() * 8);
    for item in items {
        let item = item.as_ref();
        let ptr = place(caller, item).await?.ok_or(GuestTrap::NoAllocator)?;
        table.extend_from_slice(&ptr.to_le_bytes());
        table.extend_from_slice(&(item.len() as i32).to_le_bytes());
    }
    let list = alloc(caller, table.len()).await?.ok_or(GuestTrap::NoAllocator)?;
    let memory = memory(caller)?;
    slice_mut(memory.data_mut(&mut *caller), list, table.len())?.copy_from_slice(&table);
    write_i32(caller, list_p, list)?;
    write_i32(caller, count_p, items.len() as i32)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_are_checked() {
        let data = [0u8; 16];
        assert_eq!(slice(&data, 4, 4).unwrap().len(), 4);
        assert!(slice(&data, 12, 4).is_ok());
        assert!(slice(&data, 13, 4).is_err());
        assert!(slice(&data, -1, 2).is_err());
        assert!(slice(&data, 0, -1).is_err());
        assert!(slice(&data, 16, 0).is_ok());
    }
}
