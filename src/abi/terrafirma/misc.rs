//! `hostcall_init_mm`, `hostcall_debug`, `hostcall_panic_hook`,
//! `hostcall_time_now` and `hostcall_rng_next_u64`.

use std::time::{SystemTime, UNIX_EPOCH};

use wasmtime::{Caller, Linker, Ref};

use super::memory::{memory, read, slice, write_i32};
use super::{HostcallError, MODULE};
use crate::executor::Sandbox;

/// Longest NUL-terminated message `hostcall_debug` reads.
const MAX_DEBUG_LINE: usize = 64 << 10;

/// A guest message: `len == -1` means NUL-terminated (ABI, `hostcall_debug`).
fn message(caller: &Caller<'_, Sandbox>, ptr: i32, len: i32, call: &'static str) -> Result<String, HostcallError> {
    let bytes = if len == -1 {
        let memory = memory(caller, call)?;
        let data = memory.data(caller);
        let available = data.len().saturating_sub(ptr as u32 as usize).min(MAX_DEBUG_LINE);
        let tail = slice(data, ptr, available as i32, call)?;
        let end = tail.iter().position(|&b| b == 0).unwrap_or(tail.len());
        tail[..end].to_vec()
    } else {
        read(caller, ptr, len, call)?
    };
    Ok(String::from_utf8_lossy(&bytes).into_owned())
}

fn init_mm(caller: &mut Caller<'_, Sandbox>, malloc_idx: i32, _free_idx: i32) -> Result<(), HostcallError> {
    // The host never frees what it hands out: the guest owns it, and the
    // instance lives for one request.
    let index = malloc_idx as u32;
    let bad = HostcallError::BadAllocatorIndex { index };
    let table = caller.data().session.table.ok_or(HostcallError::BadAllocatorIndex { index })?;
    let func = match table.get(&mut *caller, u64::from(index)) {
        Some(Ref::Func(Some(func))) => func,
        _ => return Err(bad),
    };
    let malloc = func.typed::<i32, i32>(&*caller).map_err(|_| HostcallError::BadAllocatorIndex { index })?;
    caller.data_mut().session.registered_malloc = Some(malloc);
    Ok(())
}

pub fn add_to_linker(linker: &mut Linker<Sandbox>) -> wasmtime::Result<()> {
    linker.func_wrap(MODULE, "hostcall_init_mm", |mut caller: Caller<'_, Sandbox>, malloc: i32, free: i32| -> wasmtime::Result<()> {
        Ok(init_mm(&mut caller, malloc, free)?)
    })?;
    linker.func_wrap(MODULE, "hostcall_debug", |mut caller: Caller<'_, Sandbox>, ptr: i32, len: i32| -> wasmtime::Result<()> {
        let line = message(&caller, ptr, len, "hostcall_debug")?;
        // A log line leaves the node too (see `Session::flush_kv`, which logs a failure).
        let _ = caller.data_mut().session.flush_kv();
        tracing::info!(target: "guest", module = %caller.data().session.label, "{}", line.trim_end());
        Ok(())
    })?;
    linker.func_wrap(MODULE, "hostcall_panic_hook", |mut caller: Caller<'_, Sandbox>, ptr: i32, len: i32| -> wasmtime::Result<()> {
        let text = message(&caller, ptr, len, "hostcall_panic_hook")?;
        let _ = caller.data_mut().session.flush_kv();
        tracing::warn!(target: "guest", module = %caller.data().session.label, "guest panicked: {text}");
        caller.data_mut().session.panic_message = Some(text);
        Ok(())
    })?;
    linker.func_wrap(MODULE, "hostcall_time_now", |mut caller: Caller<'_, Sandbox>, subsec_nanos_p: i32| -> wasmtime::Result<i64> {
        let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
        if subsec_nanos_p != 0 {
            write_i32(&mut caller, subsec_nanos_p, now.subsec_nanos() as i32, "hostcall_time_now")?;
        }
        Ok(now.as_secs() as i64)
    })?;
    linker.func_wrap(MODULE, "hostcall_rng_next_u64", || -> i64 { rand::random::<u64>() as i64 })?;
    Ok(())
}
