//! Per-request state of a Terrafirma guest: the request it reads, the
//! response it builds, and the guest's memory and allocator as the host found
//! them.

use std::sync::Arc;

use wasmtime::{Func, Memory, Table, TypedFunc};

use super::outbound::Outbound;
use crate::executor::{GuestRequest, GuestResponse};
use crate::kv::{KvError, KvUser, SiteKv};

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
    /// The site's KV store; `None` where there is none.
    pub kv: Option<Arc<SiteKv>>,
    /// Set while the guest has used the KV store since its last flush.
    pub kv_user: Option<KvUser>,
    /// Requests the guest sends out, and their responses.
    pub outbound: Outbound,
}

/// Why a request, or what it was about to send out, fails when its KV
/// writes could not be flushed.
pub const KV_NOT_SAVED: &str = "the KV store could not save the request's writes";

impl Session {
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
        kv.flush().inspect_err(|error| flush_failed(&self.label, error))?;
        self.kv_user = None;
        Ok(())
    }

    /// `flush_kv` at the end of the request, one `write(2)` for the
    /// requests that end alongside (`SiteKv::flush_batched`).
    pub async fn flush_kv_batched(&mut self) -> Result<(), KvError> {
        let (Some(kv), Some(user)) = (&self.kv, self.kv_user.take()) else { return Ok(()) };
        kv.flush_batched(user).await.inspect_err(|error| flush_failed(&self.label, error))
    }
}

fn flush_failed(label: &str, error: &KvError) {
    tracing::error!(module = %label, "KV: the request's writes could not be saved: {error}");
}
