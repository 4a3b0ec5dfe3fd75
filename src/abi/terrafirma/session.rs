//! Per-request state of a Terrafirma guest: the request it reads, the
//! response it builds, and the guest's memory and allocator as the host found
//! them.

use std::sync::Arc;

use wasmtime::{Func, Memory, Table, TypedFunc};

use super::outbound::Outbound;
use crate::executor::{GuestRequest, GuestResponse};
use crate::kv::SiteKv;

#[derive(Default)]
pub struct Session {
    /// The incoming request (handle 0); `None` while a prewarmed instance waits.
    pub request: Option<GuestRequest>,
    /// The outgoing response (handle 0).
    pub response: GuestResponse,
    pub max_response_bytes: usize,
    /// Largest body of a request the guest sends out.
    pub max_request_bytes: usize,
    /// `site/module`, for log lines.
    pub label: Arc<str>,
    pub memory: Option<Memory>,
    /// Table 0, through the export the upload rewrite added.
    pub table: Option<Table>,
    /// `default_malloc_impl`, `malloc` or `memory.allocate`, if exported.
    pub exported_malloc: Option<Func>,
    /// The allocator registered with `hostcall_init_mm`.
    pub registered_malloc: Option<TypedFunc<i32, i32>>,
    pub panic_message: Option<String>,
    /// The site's KV store; `None` where there is none (`terrafirma run`).
    pub kv: Option<Arc<SiteKv>>,
    /// Requests the guest sends out, and their responses.
    pub outbound: Outbound,
}
