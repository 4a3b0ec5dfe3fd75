//! The wasm side of a node: the engine, its epoch ticker, and the linkers of
//! each guest interface, built once and shared by every module.

use std::sync::Arc;

use wasmtime::{Engine, InstancePre, Linker, Module, Store};
use wasmtime_wasi_http::p2::bindings::ProxyPre;

use super::state::{TerrafirmaState, WasiState};
use super::wasi_http::HttpState;
use crate::engine::{EngineShape, EpochTicker, SlotReset, build_baseline_engine, build_engine_with, compatibility_tag};
use crate::sandbox::CallMode;

/// What the wasi:http linker provides: WASI 0.2 and wasi:http's client side.
const PROVIDED_INTERFACES: [&str; 8] = [
    "wasi:io/",
    "wasi:clocks/",
    "wasi:random/",
    "wasi:cli/",
    "wasi:filesystem/",
    "wasi:sockets/",
    "wasi:http/types@",
    "wasi:http/outgoing-handler@",
];

pub struct Runtime {
    pub engine: Engine,
    /// Names artifacts compiled by this engine configuration.
    pub compat_tag: String,
    /// The `env.hostcall_*` that never wait, for guests called directly.
    terrafirma_direct: Linker<TerrafirmaState>,
    /// Every `env.hostcall_*` plus WASI preview 1 (and `wasi_unstable`) for
    /// toolchain-built guests, for guests on fibers.
    terrafirma_fiber: Linker<TerrafirmaState>,
    /// WASI preview 1 only, for commands (CGI and `terrafirma run`).
    pub(super) wasi: Linker<WasiState>,
    /// wasi:http and WASI 0.2 (with no filesystem, network or environment
    /// granted), for wasi:http components.
    http: wasmtime::component::Linker<HttpState>,
    /// How pool slots are reset, and why (logged at start).
    pub slot_reset: SlotReset,
    _ticker: EpochTicker,
}

impl Runtime {
    /// The node's engine: Cranelift, the pooling allocator.
    pub fn new(shape: EngineShape) -> anyhow::Result<Arc<Runtime>> {
        let slot_reset = SlotReset::for_this_machine();
        let engine = build_engine_with(shape, &slot_reset)?;
        Runtime::with_engine(engine, slot_reset)
    }

    /// The baseline engine new core modules are served from until their
    /// Cranelift code is ready (`build_baseline_engine`).
    pub fn baseline(shape: EngineShape) -> anyhow::Result<Arc<Runtime>> {
        let reset = SlotReset { pagemap_scan: false, reason: "instances allocated on demand".into() };
        Runtime::with_engine(build_baseline_engine(shape)?, reset)
    }

    fn with_engine(engine: Engine, slot_reset: SlotReset) -> anyhow::Result<Arc<Runtime>> {
        let mut wasi = Linker::new(&engine);
        wasmtime_wasi::p1::add_to_linker_async(&mut wasi, |state: &mut WasiState| &mut state.wasi)?;
        wasmtime_wasi::p0::add_to_linker_async(&mut wasi, |state: &mut WasiState| &mut state.wasi)?;
        let mut terrafirma_fiber = Linker::new(&engine);
        wasmtime_wasi::p1::add_to_linker_async(&mut terrafirma_fiber, TerrafirmaState::wasi)?;
        wasmtime_wasi::p0::add_to_linker_async(&mut terrafirma_fiber, TerrafirmaState::wasi)?;
        crate::abi::terrafirma::add_to_linker(&mut terrafirma_fiber, CallMode::Fiber)?;
        let mut http = wasmtime::component::Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut http)?;
        wasmtime_wasi_http::p2::add_only_http_to_linker_async(&mut http)?;
        let mut terrafirma_direct = Linker::new(&engine);
        crate::abi::terrafirma::add_to_linker(&mut terrafirma_direct, CallMode::Direct)?;
        Ok(Arc::new(Runtime {
            compat_tag: compatibility_tag(&engine),
            slot_reset,
            _ticker: EpochTicker::start(engine.clone())?,
            engine,
            terrafirma_direct,
            terrafirma_fiber,
            wasi,
            http,
        }))
    }

    /// How a Terrafirma module's guests are called: on fibers if it imports
    /// anything only the fiber linker has (a hostcall that waits, WASI),
    /// directly otherwise. Imports neither linker has become trapping
    /// functions either way.
    pub(super) fn call_mode(&self, module: &Module) -> CallMode {
        let mut store = Store::new(&self.engine, TerrafirmaState::default());
        let waits = module.imports().any(|import| {
            self.terrafirma_direct.get_by_import(&mut store, &import).is_none()
                && self.terrafirma_fiber.get_by_import(&mut store, &import).is_some()
        });
        if waits { CallMode::Fiber } else { CallMode::Direct }
    }

    pub(super) fn terrafirma_linker(&self, mode: CallMode) -> &Linker<TerrafirmaState> {
        match mode {
            CallMode::Direct => &self.terrafirma_direct,
            CallMode::Fiber => &self.terrafirma_fiber,
        }
    }

    /// Resolves a wasi:http component's imports once. A component importing
    /// what the node does not provide is refused with the list of them.
    pub(super) fn link_proxy(&self, component: &wasmtime::component::Component) -> wasmtime::Result<ProxyPre<HttpState>> {
        let missing: Vec<String> = component
            .component_type()
            .imports(&self.engine)
            .map(|(name, _)| name)
            .filter(|name| !PROVIDED_INTERFACES.iter().any(|provided| name.starts_with(provided)))
            .map(|name| format!("`{name}`"))
            .collect();
        if !missing.is_empty() {
            wasmtime::bail!("the component imports what this node does not provide: {}", missing.join(", "));
        }
        ProxyPre::new(self.http.instantiate_pre(component)?)
    }

    /// Resolves `module`'s imports once with `linker`: the node's own with
    /// type checks, anything else as a trapping function, listed in the
    /// returned warnings.
    pub(super) fn link<T: Default + 'static>(
        &self,
        linker: &Linker<T>,
        module: &Module,
    ) -> wasmtime::Result<(InstancePre<T>, Vec<String>)> {
        let mut store = Store::new(&self.engine, T::default());
        let warnings = module
            .imports()
            .filter(|import| linker.get_by_import(&mut store, import).is_none())
            .map(|import| format!("unknown import `{}::{}` is linked as a function that traps", import.module(), import.name()))
            .collect();
        let mut linker = linker.clone();
        linker.define_unknown_imports_as_traps(module)?;
        Ok((linker.instantiate_pre(module)?, warnings))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mode_of(runtime: &Runtime, imports: &str) -> CallMode {
        let wat = format!("(module {imports} (memory (export \"memory\") 1) (func (export \"run\")))");
        runtime.call_mode(&Module::new(&runtime.engine, wat).unwrap())
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
