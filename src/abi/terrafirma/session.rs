//! Per-request state of a Terrafirma guest: the request it reads, the
//! response it builds, the requests it sends out, and the guest's memory and
//! allocator as the host found them. Fields are private; hostcalls go
//! through the accessors, which hand out typed state, never raw fields.

use std::sync::Arc;

use wasmtime::{Func, Memory, Table, TypedFunc};

use super::outbound::Outbound;
use crate::kv::{KvError, KvUser, SiteKv};
use crate::messages::{GuestRequest, GuestResponse, RequestId};
use crate::outbound::SiteNet;

/// The per-request byte limits the hostcalls enforce.
#[derive(Debug, Clone, Copy, Default)]
pub struct SessionLimits {
    /// The response body, and each body received from an outbound request.
    pub max_response_bytes: usize,
    /// Each body of a request the guest sends out.
    pub max_request_bytes: usize,
}

/// Why a request, or what it was about to send out, fails when its KV
/// writes could not be flushed.
pub const KV_NOT_SAVED: &str = "the KV store could not save the request's writes";

/// The guest's memory, table and allocator, as instantiation found them.
#[derive(Default)]
struct GuestParts {
    memory: Option<Memory>,
    /// Table 0, through the export the upload rewrite added.
    table: Option<Table>,
    /// `default_malloc_impl`, `malloc` or `memory.allocate`, if exported.
    exported_malloc: Option<Func>,
    /// The allocator registered with `hostcall_init_mm`.
    registered_malloc: Option<TypedFunc<i32, i32>>,
}

#[derive(Default)]
pub struct Session {
    /// `site/module`, for log lines.
    label: Arc<str>,
    limits: SessionLimits,
    /// The incoming request (handle 0); `None` while a prewarmed instance waits.
    request: Option<GuestRequest>,
    /// The outgoing response (handle 0).
    response: GuestResponse,
    guest: GuestParts,
    panic_message: Option<String>,
    /// The site's KV store; `None` where there is none.
    kv: Option<Arc<SiteKv>>,
    /// Set while the guest has used the KV store since its last flush.
    kv_user: Option<KvUser>,
    /// Requests the guest sends out, and their responses.
    outbound: Outbound,
}

impl Session {
    pub fn new(label: Arc<str>, limits: SessionLimits, kv: Option<Arc<SiteKv>>, net: Option<SiteNet>) -> Session {
        Session { label, limits, kv, outbound: Outbound::new(net), ..Session::default() }
    }

    pub fn label(&self) -> &Arc<str> {
        &self.label
    }

    pub fn limits(&self) -> SessionLimits {
        self.limits
    }

    /// What instantiation found of the guest.
    pub fn set_guest(&mut self, memory: Option<Memory>, table: Option<Table>, exported_malloc: Option<Func>) {
        self.guest = GuestParts { memory, table, exported_malloc, registered_malloc: None };
    }

    pub fn memory(&self) -> Option<Memory> {
        self.guest.memory
    }

    pub fn table(&self) -> Option<Table> {
        self.guest.table
    }

    pub fn exported_malloc(&self) -> Option<Func> {
        self.guest.exported_malloc
    }

    pub fn registered_malloc(&self) -> Option<&TypedFunc<i32, i32>> {
        self.guest.registered_malloc.as_ref()
    }

    pub fn register_malloc(&mut self, malloc: TypedFunc<i32, i32>) {
        self.guest.registered_malloc = Some(malloc);
    }

    /// Gives the session its request (handle 0).
    pub fn begin(&mut self, request: GuestRequest) {
        self.request = Some(request);
    }

    /// The id of the request being served, for log lines.
    pub fn request_id(&self) -> &RequestId {
        static NONE: RequestId = RequestId::None;
        self.request.as_ref().map_or(&NONE, |request| &request.id)
    }

    /// The incoming request; `None` for any handle but 0.
    pub fn request(&self, handle: i32) -> Option<&GuestRequest> {
        self.request.as_ref().filter(|_| handle == 0)
    }

    pub fn response(&self) -> &GuestResponse {
        &self.response
    }

    pub fn response_mut(&mut self) -> &mut GuestResponse {
        &mut self.response
    }

    /// The response as the guest left it.
    pub fn take_response(&mut self) -> GuestResponse {
        std::mem::take(&mut self.response)
    }

    pub fn outbound(&self) -> &Outbound {
        &self.outbound
    }

    pub fn outbound_mut(&mut self) -> &mut Outbound {
        &mut self.outbound
    }

    pub fn panic_message(&self) -> Option<&str> {
        self.panic_message.as_deref()
    }

    pub fn set_panic_message(&mut self, message: String) {
        self.panic_message = Some(message);
    }

    /// The site's store, noting that the request uses it.
    pub fn use_kv(&mut self) -> Option<Arc<SiteKv>> {
        let kv = self.kv.as_ref()?;
        self.kv_user.get_or_insert_with(|| kv.user());
        Some(kv.clone())
    }

    /// Makes the KV writes this request made or read survive `kill -9` (see
    /// `crate::kv`); called before anything of the request leaves the node,
    /// and on every epoch tick of a running guest. A failure is logged here,
    /// and the request stays a user, so that its end fails too.
    pub fn flush_kv(&mut self) -> Result<(), KvError> {
        let (Some(kv), Some(_)) = (&self.kv, &self.kv_user) else { return Ok(()) };
        kv.flush().inspect_err(|error| flush_failed(&self.label, self.request_id(), error))?;
        self.kv_user = None;
        Ok(())
    }

    /// `flush_kv` at the end of the request, one `write(2)` for the
    /// requests that end alongside (`SiteKv::flush_batched`).
    pub async fn flush_kv_batched(&mut self) -> Result<(), KvError> {
        let (Some(kv), Some(user)) = (&self.kv, self.kv_user.take()) else { return Ok(()) };
        kv.flush_batched(user).await.inspect_err(|error| flush_failed(&self.label, self.request_id(), error))
    }
}

fn flush_failed(label: &str, request: &RequestId, error: &KvError) {
    tracing::error!(module = %label, request = %request, "KV: the request's writes could not be saved: {error}");
}
