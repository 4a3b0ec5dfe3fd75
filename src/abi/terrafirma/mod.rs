//! The Terrafirma / Terrarium hostcall ABI (`env.hostcall_*`, see
//! `shared/abi/terrafirma.md`). Each file holds one family of hostcalls and
//! only moves bytes between guest memory (`memory.rs`) and the `Session`.

#[macro_use]
mod reentrant;

mod dns;
mod headers;
mod kv;
mod memory;
mod misc;
mod outbound;
mod request;
mod response;
mod session;

pub use outbound::{MAX_OUTBOUND_REQUESTS, RECEIVED_BODIES_FACTOR};
pub use session::{KV_NOT_SAVED, Session};

use wasmtime::{Caller, Linker};

use crate::executor::{CallMode, Sandbox};

/// Import module of every hostcall.
pub const MODULE: &str = "env";

/// Hostcall status codes (`Ok` / `Invalid`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(i32)]
pub enum HostcallStatus {
    Ok = 0,
    Invalid = 1,
}

impl From<HostcallStatus> for i32 {
    fn from(status: HostcallStatus) -> i32 {
        status as i32
    }
}

/// A guest mistake that ends the request with a trap. The message names the
/// hostcall and is safe to show to the client.
#[derive(Debug, thiserror::Error)]
pub enum HostcallError {
    #[error("{call}: pointer range {ptr:#x}+{len} is outside guest memory")]
    OutOfBounds { call: &'static str, ptr: u32, len: u32 },
    #[error("{call}: the guest exports no memory")]
    NoMemory { call: &'static str },
    #[error("{call}: the guest registered no allocator (hostcall_init_mm) and exports no `malloc`")]
    NoAllocator { call: &'static str },
    #[error("{call}: the guest allocator returned no memory")]
    AllocatorFailed { call: &'static str },
    #[error("hostcall_init_mm: table index {index} is not a function of type [i32] -> [i32]")]
    BadAllocatorIndex { index: u32 },
    #[error("{call}: invalid handle {handle}")]
    BadHandle { call: &'static str, handle: i32 },
    #[error("hostcall_resp_set_body: body of {len} bytes is over the response limit of {limit} bytes")]
    ResponseTooLarge { len: usize, limit: usize },
    #[error("guest panicked: {0}")]
    Panicked(String),
    #[error("{0} is not available here")]
    Unavailable(&'static str),
}

/// Logs why a hostcall failed without ending the request (the guest gets
/// the call's failure value).
fn log_failure(caller: &Caller<'_, Sandbox>, call: &'static str, reason: impl std::fmt::Display) {
    tracing::warn!(target: "guest", module = %caller.data().session.label, "{call}: {reason}");
}

/// The request's wall-clock deadline, for host work a hostcall awaits.
fn deadline(caller: &Caller<'_, Sandbox>) -> tokio::time::Instant {
    tokio::time::Instant::from_std(caller.data().deadline)
}

/// Adds the hostcalls of a guest called in `mode`: all of them on fibers;
/// called directly, all but those that wait on the network (sending and
/// waiting for outbound requests, DNS), whose importers run on fibers.
pub fn add_to_linker(linker: &mut Linker<Sandbox>, mode: CallMode) -> wasmtime::Result<()> {
    misc::add_to_linker(linker)?;
    request::add_to_linker(linker, mode)?;
    response::add_to_linker(linker)?;
    kv::add_to_linker(linker, mode)?;
    outbound::add_to_linker(linker, mode)?;
    if mode == CallMode::Fiber {
        dns::add_to_linker(linker)?;
    }
    Ok(())
}
