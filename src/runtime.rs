//! The wasm side of a node: the engine, its epoch ticker, and the linkers of
//! each guest interface, built once and shared by every module.

use std::sync::Arc;

use wasmtime::{Engine, Linker};
use wasmtime_wasi::WasiCtxBuilder;
use wasmtime_wasi::p1::WasiP1Ctx;
use wasmtime_wasi::p2::pipe::MemoryOutputPipe;

use crate::engine::{EngineShape, EpochTicker, build_engine, compatibility_tag};
use crate::executor::Sandbox;

/// Bytes of stdout/stderr a Terrafirma guest may write per request; they go
/// to the node's log.
pub const GUEST_LOG_BYTES: usize = 64 << 10;

pub struct Runtime {
    pub engine: Engine,
    /// Names artifacts compiled by this engine configuration.
    pub compat_tag: String,
    /// `env.hostcall_*` plus WASI preview 1 (and `wasi_unstable`) for
    /// toolchain-built guests.
    pub terrafirma_linker: Linker<Sandbox>,
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
        let mut terrafirma_linker = wasi_linker.clone();
        crate::abi::terrafirma::add_to_linker(&mut terrafirma_linker)?;
        Ok(Arc::new(Runtime {
            compat_tag: compatibility_tag(&engine),
            _ticker: EpochTicker::start(engine.clone())?,
            engine,
            terrafirma_linker,
            wasi_linker,
        }))
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
