//! The wasm side of a node: the engine, its epoch ticker, and the linkers of
//! each guest interface, built once and shared by every module.

use std::sync::Arc;

use wasmtime::{Engine, Linker};
use wasmtime_wasi::WasiCtxBuilder;
use wasmtime_wasi::p1::WasiP1Ctx;
use wasmtime_wasi::p2::pipe::MemoryOutputPipe;

use crate::engine::{EngineShape, EpochTicker, build_engine, compatibility_tag};
use crate::executor::{CallMode, Sandbox};

/// Bytes of stdout/stderr a Terrafirma guest may write per request; they go
/// to the node's log.
pub const GUEST_LOG_BYTES: usize = 64 << 10;

pub struct Runtime {
    pub engine: Engine,
    /// Names artifacts compiled by this engine configuration.
    pub compat_tag: String,
    /// The `env.hostcall_*` that never wait, for guests called directly.
    pub terrafirma_direct: Linker<Sandbox>,
    /// Every `env.hostcall_*` plus WASI preview 1 (and `wasi_unstable`) for
    /// toolchain-built guests, for guests on fibers.
    pub terrafirma_fiber: Linker<Sandbox>,
    /// WASI preview 1 only, for CGI commands.
    pub wasi_linker: Linker<Sandbox>,
    _ticker: EpochTicker,
}

impl Runtime {
    pub fn new(shape: EngineShape) -> anyhow::Result<Arc<Runtime>> {
        let engine = build_engine(shape)?;
        let mut wasi_linker = Linker::new(&engine);
        wasmtime_wasi::p1::add_to_linker_async(&mut wasi_linker, terrafirma_wasi)?;
        wasmtime_wasi::p0::add_to_linker_async(&mut wasi_linker, terrafirma_wasi)?;
        let mut terrafirma_fiber = wasi_linker.clone();
        crate::abi::terrafirma::add_to_linker(&mut terrafirma_fiber, CallMode::Fiber)?;
        let mut terrafirma_direct = Linker::new(&engine);
        crate::abi::terrafirma::add_to_linker(&mut terrafirma_direct, CallMode::Direct)?;
        Ok(Arc::new(Runtime {
            compat_tag: compatibility_tag(&engine),
            _ticker: EpochTicker::start(engine.clone())?,
            engine,
            terrafirma_direct,
            terrafirma_fiber,
            wasi_linker,
        }))
    }

    /// How a Terrafirma module's guests are called: on fibers if it imports
    /// anything only the fiber linker has (a hostcall that waits, WASI),
    /// directly otherwise. Imports neither linker has become trapping
    /// functions either way.
    pub fn call_mode(&self, module: &wasmtime::Module) -> CallMode {
        let mut store = wasmtime::Store::new(&self.engine, Sandbox::unarmed());
        let waits = module.imports().any(|import| {
            self.terrafirma_direct.get_by_import(&mut store, &import).is_none()
                && self.terrafirma_fiber.get_by_import(&mut store, &import).is_some()
        });
        if waits { CallMode::Fiber } else { CallMode::Direct }
    }

    pub fn terrafirma_linker(&self, mode: CallMode) -> &Linker<Sandbox> {
        match mode {
            CallMode::Direct => &self.terrafirma_direct,
            CallMode::Fiber => &self.terrafirma_fiber,
        }
    }
}

/// The WASI context of a Terrafirma guest, made on first use: no
/// filesystem, no environment, stdout and stderr into one log buffer.
fn terrafirma_wasi(sandbox: &mut Sandbox) -> &mut WasiP1Ctx {
    if sandbox.wasi.is_none() {
        let log = MemoryOutputPipe::new(GUEST_LOG_BYTES);
        sandbox.wasi = Some(WasiCtxBuilder::new().stdout(log.clone()).stderr(log.clone()).build_p1());
        sandbox.guest_log = Some(log);
    }
    sandbox.wasi.as_mut().expect("set above")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mode_of(runtime: &Runtime, imports: &str) -> CallMode {
        let wat = format!("(module {imports} (memory (export \"memory\") 1) (func (export \"run\")))");
        runtime.call_mode(&wasmtime::Module::new(&runtime.engine, wat).unwrap())
    }

    #[test]
    fn guests_that_can_wait_run_on_fibers_the_others_directly() {
        let runtime = Runtime::new(EngineShape { instances: 4, max_memory_bytes: 1 << 20 }).unwrap();
        let set_body = r#"(import "env" "hostcall_resp_set_body" (func (param i32 i32 i32) (result i32)))"#;
        let get_path = r#"(import "env" "hostcall_req_get_path" (func (param i32 i32 i32) (result i32)))"#;
        let kv_get = r#"(import "env" "hostcall_kvstore_get" (func (param i32 i32 i32 i32) (result i32)))"#;
        let send = r#"(import "env" "hostcall_req_send" (func (param i32) (result i32)))"#;
        let wait = r#"(import "env" "hostcall_pending_req_wait" (func (param i32) (result i32)))"#;
        let dns = r#"(import "env" "hostcall_dns_query_raw" (func (param i32 i32 i32 i32) (result i32)))"#;
        let fd_write = r#"(import "wasi_snapshot_preview1" "fd_write" (func (param i32 i32 i32 i32) (result i32)))"#;
        let unknown = r#"(import "env" "__wbindgen_throw" (func (param i32 i32)))"#;

        assert_eq!(mode_of(&runtime, ""), CallMode::Direct);
        assert_eq!(mode_of(&runtime, &format!("{set_body} {get_path} {kv_get} {unknown}")), CallMode::Direct);
        for waits in [send, wait, dns, fd_write] {
            assert_eq!(mode_of(&runtime, &format!("{set_body} {waits}")), CallMode::Fiber, "{waits}");
        }
    }
}
