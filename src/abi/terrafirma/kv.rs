//! `hostcall_kvstore_*`: the site's durable KV store. A refused or failed
//! operation answers 0 and the request goes on; the reason goes to the log.
//! Writes wait for their commit off the async workers, within the request's
//! wall-clock limit.

use std::sync::Arc;

use tokio::time::Instant;
use wasmtime::{Caller, Linker};

use super::memory::{hand_out, read, write_i32};
use super::{HostcallError, MODULE};
use crate::executor::{DeadlineExceeded, Sandbox};
use crate::kv::{KvError, SiteKv};

type Write = fn(&SiteKv, &[u8], &[u8]) -> Result<bool, KvError>;

fn store(caller: &Caller<'_, Sandbox>, call: &'static str) -> Result<Arc<SiteKv>, HostcallError> {
    caller.data().session.kv.clone().ok_or(HostcallError::Unavailable(call))
}

/// The answer of a KV operation as the guest sees it: 1 or 0.
fn answer(caller: &Caller<'_, Sandbox>, call: &'static str, result: Result<bool, KvError>) -> i32 {
    match result {
        Ok(done) => i32::from(done),
        Err(error) => {
            tracing::warn!(target: "guest", module = %caller.data().session.label, "{call}: {error}");
            0
        }
    }
}

/// Runs a blocking store operation off the async workers, bounded by the
/// request's deadline.
async fn blocking<R: Send + 'static>(deadline: std::time::Instant, op: impl FnOnce() -> R + Send + 'static) -> wasmtime::Result<R> {
    let deadline = Instant::from_std(deadline);
    match tokio::time::timeout_at(deadline, tokio::task::spawn_blocking(op)).await {
        Ok(Ok(result)) => Ok(result),
        Ok(Err(join)) => Err(wasmtime::Error::msg(format!("KV operation failed: {join}"))),
        Err(_) => Err(DeadlineExceeded.into()),
    }
}

fn add_write(linker: &mut Linker<Sandbox>, call: &'static str, op: Write) -> wasmtime::Result<()> {
    linker.func_wrap_async(
        MODULE,
        call,
        move |caller: Caller<'_, Sandbox>, (key_ptr, key_len, val_ptr, val_len): (i32, i32, i32, i32)| {
            Box::new(async move {
                let key = read(&caller, key_ptr, key_len, call)?;
                let value = read(&caller, val_ptr, val_len, call)?;
                let kv = store(&caller, call)?;
                let result = blocking(caller.data().deadline, move || op(&kv, &key, &value)).await?;
                Ok(answer(&caller, call, result))
            })
        },
    )?;
    Ok(())
}

pub fn add_to_linker(linker: &mut Linker<Sandbox>) -> wasmtime::Result<()> {
    add_write(linker, "hostcall_kvstore_insert", SiteKv::insert)?;
    add_write(linker, "hostcall_kvstore_upsert", SiteKv::upsert)?;
    add_write(linker, "hostcall_kvstore_append", SiteKv::append)?;
    linker.func_wrap_async(
        MODULE,
        "hostcall_kvstore_remove",
        |caller: Caller<'_, Sandbox>, (key_ptr, key_len): (i32, i32)| {
            Box::new(async move {
                const CALL: &str = "hostcall_kvstore_remove";
                let key = read(&caller, key_ptr, key_len, CALL)?;
                let kv = store(&caller, CALL)?;
                let result = blocking(caller.data().deadline, move || kv.remove(&key)).await?;
                Ok(answer(&caller, CALL, result))
            })
        },
    )?;
    linker.func_wrap_async(
        MODULE,
        "hostcall_kvstore_get",
        |mut caller: Caller<'_, Sandbox>, (ptr_p, len_p, key_ptr, key_len): (i32, i32, i32, i32)| {
            Box::new(async move {
                const CALL: &str = "hostcall_kvstore_get";
                let key = read(&caller, key_ptr, key_len, CALL)?;
                let kv = store(&caller, CALL)?;
                // Reads come from redb's cache or a page read: no commit to wait for.
                match kv.get(&key) {
                    Ok(Some(value)) => {
                        hand_out(&mut caller, ptr_p, len_p, &value, CALL).await?;
                        Ok(1)
                    }
                    result => {
                        write_i32(&mut caller, ptr_p, 0, CALL)?;
                        write_i32(&mut caller, len_p, 0, CALL)?;
                        Ok(answer(&caller, CALL, result.map(|_| false)))
                    }
                }
            })
        },
    )?;
    Ok(())
}
