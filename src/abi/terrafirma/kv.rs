//! `hostcall_kvstore_*`: the site's durable KV store. A refused or failed
//! operation answers 0 and the request goes on; the reason goes to the log.
//! A write is readable when the call returns, and durable before anything of
//! the request leaves the node (`Session::flush_kv`).

use std::sync::Arc;

use wasmtime::{Caller, Linker};

use super::memory::{hand_out, hand_out_nothing, read};
use super::{HostcallError, MODULE, log_failure};
use crate::executor::{CallMode, Sandbox, off_worker};
use crate::kv::{KvError, SiteKv, WriteKind};

/// The site's store, noting that the request used it.
fn store(caller: &mut Caller<'_, Sandbox>, call: &'static str) -> Result<Arc<SiteKv>, HostcallError> {
    caller.data_mut().session.use_kv().ok_or(HostcallError::Unavailable(call))
}

/// The answer of a KV operation as the guest sees it: 1 or 0.
fn answer(caller: &Caller<'_, Sandbox>, call: &'static str, result: Result<bool, KvError>) -> i32 {
    match result {
        Ok(done) => i32::from(done),
        Err(error) => {
            log_failure(caller, call, error);
            0
        }
    }
}

/// Applies a write. A write that may have to wait for the store to catch up
/// is made off the worker thread, so it holds up no other request.
fn write(caller: &mut Caller<'_, Sandbox>, call: &'static str, kind: WriteKind, key: Vec<u8>, value: Vec<u8>) -> wasmtime::Result<i32> {
    let kv = store(caller, call)?;
    let result = if kv.write_may_wait() { off_worker(|| kv.write(kind, key, value)) } else { kv.write(kind, key, value) };
    Ok(answer(caller, call, result))
}

fn add_write(linker: &mut Linker<Sandbox>, call: &'static str, kind: WriteKind) -> wasmtime::Result<()> {
    linker.func_wrap(
        MODULE,
        call,
        move |mut caller: Caller<'_, Sandbox>, key_ptr: i32, key_len: i32, val_ptr: i32, val_len: i32| -> wasmtime::Result<i32> {
            let key = read(&caller, key_ptr, key_len, call)?;
            let value = read(&caller, val_ptr, val_len, call)?;
            write(&mut caller, call, kind, key, value)
        },
    )?;
    Ok(())
}

pub fn add_to_linker(linker: &mut Linker<Sandbox>, mode: CallMode) -> wasmtime::Result<()> {
    add_write(linker, "hostcall_kvstore_insert", WriteKind::Insert)?;
    add_write(linker, "hostcall_kvstore_upsert", WriteKind::Upsert)?;
    add_write(linker, "hostcall_kvstore_append", WriteKind::Append)?;
    linker.func_wrap(
        MODULE,
        "hostcall_kvstore_remove",
        |mut caller: Caller<'_, Sandbox>, key_ptr: i32, key_len: i32| -> wasmtime::Result<i32> {
            const CALL: &str = "hostcall_kvstore_remove";
            let key = read(&caller, key_ptr, key_len, CALL)?;
            write(&mut caller, CALL, WriteKind::Remove, key, Vec::new())
        },
    )?;
    reentrant!(linker, mode, "hostcall_kvstore_get", |caller, ptr_p: i32, len_p: i32, key_ptr: i32, key_len: i32| {
        const CALL: &str = "hostcall_kvstore_get";
        let key = read(&caller, key_ptr, key_len, CALL)?;
        let kv = store(&mut caller, CALL)?;
        // Reads never wait for a write (see SiteKv::get).
        match kv.get(&key) {
            Ok(Some(value)) => {
                hand_out(&mut caller, ptr_p, len_p, &value, CALL).await?;
                Ok(1)
            }
            result => {
                hand_out_nothing(&mut caller, ptr_p, len_p, CALL)?;
                Ok(answer(&caller, CALL, result.map(|_| false)))
            }
        }
    })?;
    Ok(())
}
