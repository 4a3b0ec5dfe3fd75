//! `hostcall_init_mm`, `hostcall_debug`, `hostcall_panic_hook`,
//! `hostcall_time_now` and `hostcall_rng_next_u64`.

use std::time::{SystemTime, UNIX_EPOCH};

use wasmtime::{Caller, Linker, Ref};

use super::memory::{memory, read, slice, write_i32};
use super::{GuestTrap, HostcallResult, TerrafirmaView};

/// Longest NUL-terminated message `hostcall_debug` reads.
const MAX_DEBUG_LINE: usize = 64 << 10;

/// A guest message: `len == -1` means NUL-terminated (ABI, `hostcall_debug`).
fn message<T: TerrafirmaView>(caller: &Caller<'_, T>, ptr: i32, len: i32) -> Result<String, GuestTrap> {
    let bytes = if len == -1 {
        let memory = memory(caller)?;
        let data = memory.data(caller);
        let available = data.len().saturating_sub(ptr as u32 as usize).min(MAX_DEBUG_LINE);
        let tail = slice(data, ptr, available as i32)?;
        let end = tail.iter().position(|&b| b == 0).unwrap_or(tail.len());
        tail[..end].to_vec()
    } else {
        read(caller, ptr, len)?
    };
    Ok(String::from_utf8_lossy(&bytes).into_owned())
}

fn hostcall_init_mm<T: TerrafirmaView>(caller: &mut Caller<'_, T>, malloc_idx: i32, _free_idx: i32) -> HostcallResult<()> {
    // The host never frees what it hands out: the guest owns it, and the
    // instance lives for one request.
    let index = malloc_idx as u32;
    let bad = GuestTrap::BadAllocatorIndex(index);
    let table = caller.data().session().table().ok_or(bad.clone())?;
    let Some(Ref::Func(Some(func))) = table.get(&mut *caller, u64::from(index)) else { return Err(bad.into()) };
    let malloc = func.typed::<i32, i32>(&*caller).map_err(|_| bad)?;
    caller.data_mut().session_mut().register_malloc(malloc);
    Ok(())
}

fn hostcall_debug<T: TerrafirmaView>(caller: &mut Caller<'_, T>, ptr: i32, len: i32) -> HostcallResult<()> {
    let line = message(caller, ptr, len)?;
    // A log line leaves the node too (see `Session::flush_kv`, which logs a failure).
    let session = caller.data_mut().session_mut();
    let _ = session.flush_kv();
    tracing::info!(target: "guest", module = %session.label(), request = %session.request_id(), "{}", line.trim_end());
    Ok(())
}

fn hostcall_panic_hook<T: TerrafirmaView>(caller: &mut Caller<'_, T>, ptr: i32, len: i32) -> HostcallResult<()> {
    let text = message(caller, ptr, len)?;
    let session = caller.data_mut().session_mut();
    let _ = session.flush_kv();
    tracing::warn!(target: "guest", module = %session.label(), request = %session.request_id(), "guest panicked: {text}");
    session.set_panic_message(text);
    Ok(())
}

fn hostcall_time_now<T: TerrafirmaView>(caller: &mut Caller<'_, T>, subsec_nanos_p: i32) -> HostcallResult<i64> {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
    if subsec_nanos_p != 0 {
        write_i32(caller, subsec_nanos_p, now.subsec_nanos() as i32)?;
    }
    Ok(now.as_secs() as i64)
}

fn hostcall_rng_next_u64<T: TerrafirmaView>(_caller: &mut Caller<'_, T>) -> HostcallResult<i64> {
    Ok(rand::random::<u64>() as i64)
}

pub fn add_to_linker<T: TerrafirmaView>(linker: &mut Linker<T>) -> wasmtime::Result<()> {
    plain!(linker, hostcall_init_mm(malloc_idx: i32, free_idx: i32));
    plain!(linker, hostcall_debug(ptr: i32, len: i32));
    plain!(linker, hostcall_panic_hook(ptr: i32, len: i32));
    plain!(linker, hostcall_time_now(subsec_nanos_p: i32));
    plain!(linker, hostcall_rng_next_u64());
    Ok(())
}
