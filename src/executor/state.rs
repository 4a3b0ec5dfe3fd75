//! The data of each executor's `Store`: a `Sandbox` (the limits every guest
//! runs under) plus what its interface needs. A Terrafirma guest's store
//! carries the hostcalls' `Session` and, for toolchain-built guests, a WASI
//! context whose output goes to the log; a WASI command's store (CGI, and
//! `terrafirma run`) carries only its WASI context.

use std::time::Instant;

use wasmtime_wasi::WasiCtxBuilder;
use wasmtime_wasi::p1::WasiP1Ctx;

use super::output::{CappedPipe, GUEST_LOG_BYTES};
use crate::abi::terrafirma::{Session, TerrafirmaView};
use crate::sandbox::{CallMode, Sandbox, Sandboxed};

/// Store data of a Terrafirma guest.
pub struct TerrafirmaState {
    pub sandbox: Sandbox,
    pub session: Session,
    /// Made on the guest's first WASI call (`wasi`).
    wasi: Option<WasiP1Ctx>,
    /// Where that WASI context's stdout and stderr go.
    pub log: Option<CappedPipe>,
}

impl TerrafirmaState {
    pub fn new(mode: CallMode, session: Session) -> TerrafirmaState {
        TerrafirmaState { sandbox: Sandbox::new(mode), session, wasi: None, log: None }
    }

    /// The guest's WASI context, made on first use: no filesystem, no
    /// environment, stdout and stderr into one capped log.
    pub fn wasi(&mut self) -> &mut WasiP1Ctx {
        let log = &mut self.log;
        self.wasi.get_or_insert_with(|| {
            let pipe = CappedPipe::new(GUEST_LOG_BYTES);
            *log = Some(pipe.clone());
            WasiCtxBuilder::new().stdout(pipe.clone()).stderr(pipe).build_p1()
        })
    }
}

impl Default for TerrafirmaState {
    fn default() -> Self {
        TerrafirmaState::new(CallMode::Fiber, Session::default())
    }
}

impl Sandboxed for TerrafirmaState {
    fn sandbox(&mut self) -> &mut Sandbox {
        &mut self.sandbox
    }

    /// A write the guest saw succeed reaches the operating system within a
    /// tick, however long the guest runs on after it (a failure is logged,
    /// and fails the request at its end).
    fn on_epoch_tick(&mut self) {
        let _ = self.session.flush_kv();
    }
}

impl TerrafirmaView for TerrafirmaState {
    fn session(&self) -> &Session {
        &self.session
    }

    fn session_mut(&mut self) -> &mut Session {
        &mut self.session
    }

    fn deadline(&self) -> Instant {
        self.sandbox.deadline()
    }

    fn call_mode(&self) -> CallMode {
        self.sandbox.mode()
    }
}

/// Store data of a WASI command.
pub struct WasiState {
    pub sandbox: Sandbox,
    pub wasi: WasiP1Ctx,
}

impl WasiState {
    pub fn new(wasi: WasiP1Ctx) -> WasiState {
        WasiState { sandbox: Sandbox::new(CallMode::Fiber), wasi }
    }
}

impl Default for WasiState {
    fn default() -> Self {
        WasiState::new(WasiCtxBuilder::new().build_p1())
    }
}

impl Sandboxed for WasiState {
    fn sandbox(&mut self) -> &mut Sandbox {
        &mut self.sandbox
    }
}
