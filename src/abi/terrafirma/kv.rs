//! `hostcall_kvstore_*`: the site's durable KV store. A refused or failed
//! operation answers 0 and the request goes on; the reason goes to the log.
//! A write is readable when the call returns, and durable before anything of
//! the request leaves the node (`Session::flush_kv`).

use std::sync::Arc;

use wasmtime::{Caller, Linker};

use super::memory::{hand_out, hand_out_nothing, read};
use super::{GuestTrap, HostcallError, HostcallResult, TerrafirmaView};
use crate::kv::{SiteKv, WriteKind};
use crate::sandbox::{CallMode, off_worker};

/// The site's store, noting that the request used it.
fn store<T: TerrafirmaView>(caller: &mut Caller<'_, T>) -> HostcallResult<Arc<SiteKv>> {
    Ok(caller.data_mut().session_mut().use_kv().ok_or(GuestTrap::Unavailable)?)
}

/// Applies a write. A write that may have to wait (for the store to catch
/// up, or for the fleet's servers) is made off the worker thread, so it
/// holds up no other request; it is given up at the request's deadline.
fn write<T: TerrafirmaView>(caller: &mut Caller<'_, T>, kind: WriteKind, key: Vec<u8>, value: Vec<u8>) -> HostcallResult<bool> {
    let kv = store(caller)?;
    let deadline = caller.data().deadline();
    let result = match kv.write_may_wait() {
        true => off_worker(|| kv.write(kind, key, value, deadline)),
        false => kv.write(kind, key, value, deadline),
    };
    result.map_err(HostcallError::refused)
}

/// A write of `kind` with the key and value the guest points at.
fn write_pair<T: TerrafirmaView>(caller: &mut Caller<'_, T>, kind: WriteKind, key: (i32, i32), value: (i32, i32)) -> HostcallResult<bool> {
    let key = read(caller, key.0, key.1)?;
    let value = read(caller, value.0, value.1)?;
    write(caller, kind, key, value)
}

fn hostcall_kvstore_insert<T: TerrafirmaView>(
    caller: &mut Caller<'_, T>,
    key_ptr: i32,
    key_len: i32,
    val_ptr: i32,
    val_len: i32,
) -> HostcallResult<bool> {
    write_pair(caller, WriteKind::Insert, (key_ptr, key_len), (val_ptr, val_len))
}

fn hostcall_kvstore_upsert<T: TerrafirmaView>(
    caller: &mut Caller<'_, T>,
    key_ptr: i32,
    key_len: i32,
    val_ptr: i32,
    val_len: i32,
) -> HostcallResult<bool> {
    write_pair(caller, WriteKind::Upsert, (key_ptr, key_len), (val_ptr, val_len))
}

fn hostcall_kvstore_append<T: TerrafirmaView>(
    caller: &mut Caller<'_, T>,
    key_ptr: i32,
    key_len: i32,
    val_ptr: i32,
    val_len: i32,
) -> HostcallResult<bool> {
    write_pair(caller, WriteKind::Append, (key_ptr, key_len), (val_ptr, val_len))
}

fn hostcall_kvstore_remove<T: TerrafirmaView>(caller: &mut Caller<'_, T>, key_ptr: i32, key_len: i32) -> HostcallResult<bool> {
    let key = read(caller, key_ptr, key_len)?;
    write(caller, WriteKind::Remove, key, Vec::new())
}

async fn hostcall_kvstore_get<T: TerrafirmaView>(
    caller: &mut Caller<'_, T>,
    ptr_p: i32,
    len_p: i32,
    key_ptr: i32,
    key_len: i32,
) -> HostcallResult<bool> {
    let key = read(caller, key_ptr, key_len)?;
    let kv = store(caller)?;
    // Reads never wait for a write (see SiteKv::get).
    match kv.get(&key) {
        Ok(Some(value)) => {
            hand_out(caller, ptr_p, len_p, &value).await?;
            Ok(true)
        }
        result => {
            hand_out_nothing(caller, ptr_p, len_p)?;
            result.map(|_| false).map_err(HostcallError::refused)
        }
    }
}

pub fn add_to_linker<T: TerrafirmaView>(linker: &mut Linker<T>, mode: CallMode) -> wasmtime::Result<()> {
    plain!(linker, hostcall_kvstore_insert(key_ptr: i32, key_len: i32, val_ptr: i32, val_len: i32));
    plain!(linker, hostcall_kvstore_upsert(key_ptr: i32, key_len: i32, val_ptr: i32, val_len: i32));
    plain!(linker, hostcall_kvstore_append(key_ptr: i32, key_len: i32, val_ptr: i32, val_len: i32));
    plain!(linker, hostcall_kvstore_remove(key_ptr: i32, key_len: i32));
    reentrant!(linker, mode, hostcall_kvstore_get(ptr_p: i32, len_p: i32, key_ptr: i32, key_len: i32));
    Ok(())
}
