//! The Terrafirma / Terrarium hostcall ABI (`env.hostcall_*`, described in
//! `docs/guest-abi.md`). Each hostcall is one function named as the guest
//! imports it; each file holds one family and only moves bytes between guest
//! memory (`memory.rs`) and the per-request `Session`. `register.rs` links
//! them and turns their `HostcallError`s into the ABI's values, in one place.
//!
//! The hostcalls work on any store whose data offers a `TerrafirmaView`;
//! they know nothing of executors, pools or HTTP servers.

#[macro_use]
mod register;

mod dns;
mod headers;
mod kv;
mod memory;
mod misc;
mod outbound;
mod request;
mod response;
mod session;

use std::time::Instant;

pub use register::HostcallTrap;
pub use session::{KV_NOT_SAVED, Session, SessionLimits};
use wasmtime::Linker;

use crate::sandbox::{CallMode, DeadlineExceeded};

/// Import module of every hostcall.
pub const MODULE: &str = "env";

/// Export that the upload adds for the guest's memory 0, so that the host
/// finds a memory the guest does not export itself.
pub const MEMORY_EXPORT: &str = "__terrafirma_memory";
/// Export that the upload adds for the guest's table 0, where the
/// `hostcall_init_mm` indices point.
pub const TABLE_EXPORT: &str = "__terrafirma_table";

/// Exports a guest may offer as its allocator, in the ABI's order.
pub const MALLOC_EXPORTS: [&str; 3] = ["default_malloc_impl", "malloc", "memory.allocate"];

/// What the hostcalls need of a store's data: the request's `Session`, its
/// deadline, and how the guest is called (to call its allocator the same
/// way).
pub trait TerrafirmaView: Send + 'static {
    fn session(&self) -> &Session;
    fn session_mut(&mut self) -> &mut Session;
    fn deadline(&self) -> Instant;
    fn call_mode(&self) -> CallMode;
}

/// Hostcall status codes (`Ok` / `Invalid`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(i32)]
pub enum HostcallStatus {
    Ok = 0,
    Invalid = 1,
}

/// A handle result: a request, response or pending handle, or `-1`/`-2`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Handle(pub i32);

impl Handle {
    /// `hostcall_pending_req_poll`: the request is still under way.
    pub const NOT_READY: Handle = Handle(-2);
}

/// Why a hostcall did not do what the guest asked.
#[derive(Debug)]
pub enum HostcallError {
    /// Refused or failed, and the request goes on: the guest gets the call's
    /// failure value (`-1`, `Invalid`, `0`) and the reason goes to the log.
    Refused(String),
    /// A bad handle, header name or value, or status code: the guest gets
    /// the call's failure value; nothing is logged. (A hostcall that answers
    /// nothing, such as a getter, traps on a bad handle instead.)
    Invalid,
    /// A guest mistake the request cannot survive (a pointer outside its
    /// memory, no allocator): it ends with a trap naming the hostcall.
    Trap(GuestTrap),
    /// The request ended while the hostcall ran: the guest code it called
    /// back (the allocator) trapped, or the wall-clock limit passed. Passed
    /// on as it is.
    Ended(wasmtime::Error),
}

impl HostcallError {
    pub fn refused(reason: impl std::fmt::Display) -> HostcallError {
        HostcallError::Refused(reason.to_string())
    }
}

impl From<GuestTrap> for HostcallError {
    fn from(trap: GuestTrap) -> Self {
        HostcallError::Trap(trap)
    }
}

impl From<wasmtime::Error> for HostcallError {
    fn from(error: wasmtime::Error) -> Self {
        HostcallError::Ended(error)
    }
}

impl From<DeadlineExceeded> for HostcallError {
    fn from(deadline: DeadlineExceeded) -> Self {
        HostcallError::Ended(deadline.into())
    }
}

/// A guest mistake that ends the request. With the hostcall's name
/// (`HostcallTrap`), the message is safe to show to the client.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GuestTrap {
    #[error("pointer range {ptr:#x}+{len} is outside guest memory")]
    OutOfBounds { ptr: u32, len: u32 },
    #[error("the guest exports no memory")]
    NoMemory,
    #[error("the guest registered no allocator (hostcall_init_mm) and exports no `malloc`")]
    NoAllocator,
    #[error("the guest allocator returned no memory")]
    AllocatorFailed,
    #[error("table index {0} is not a function of type [i32] -> [i32]")]
    BadAllocatorIndex(u32),
    #[error("body of {len} bytes is over the response limit of {limit} bytes")]
    ResponseTooLarge { len: usize, limit: usize },
    #[error("invalid handle {0}")]
    BadHandle(i32),
    #[error("not available here")]
    Unavailable,
}

type HostcallResult<T> = Result<T, HostcallError>;

/// Adds the hostcalls of a guest called in `mode`: all of them on fibers;
/// called directly, all but those that wait on the network (sending and
/// waiting for outbound requests, DNS), whose importers run on fibers.
pub fn add_to_linker<T: TerrafirmaView>(linker: &mut Linker<T>, mode: CallMode) -> wasmtime::Result<()> {
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
