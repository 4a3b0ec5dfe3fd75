//! Pre-initialisation: a Terrafirma guest that exports `_initialize` (a C or
//! Rust reactor) has it run once at upload instead of on every request,
//! when that is sure not to change what the guest answers.
//!
//! The module is instrumented to export its memory and globals
//! (`wasmtime-wizer`), instantiated with every import defined as a function
//! that traps, and `_initialize` is called under the site's fuel, time and
//! memory limits. If it finishes without calling any import, its memory and
//! globals are written back into a new module as data segments and initial
//! values, without `_initialize`; the engine turns those segments into the
//! copy-on-write image every request's instance starts from. If it calls an
//! import (a clock, random bytes, the request, KV, the network, WASI, even a
//! log line), the guest keeps running `_initialize` per request, as before:
//! an answer the node cannot replay is never frozen into the image.

use std::future::Future;
use std::pin::pin;
use std::task::{Context, Poll, Waker};

use wasmtime::{Engine, ExternType, Instance, Linker, Module, Store, StoreLimits, StoreLimitsBuilder, Val};
use wasmtime_wizer::{InstanceState, SnapshotVal, ValType, Wizer};

use crate::engine::EPOCH_TICK;
use crate::sandbox::SandboxLimits;

const INITIALIZE: &str = "_initialize";

/// How a module's `_initialize` is run. Shown in the upload answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Initialization {
    /// No `_initialize` (or not a Terrafirma guest).
    None,
    /// Run once at upload; requests start from its memory and globals.
    Snapshot,
    /// Run on every request, and why it could not be snapshotted.
    PerRequest(String),
}

impl Initialization {
    pub fn as_str(&self) -> &'static str {
        match self {
            Initialization::None => "none",
            Initialization::Snapshot => "snapshot",
            Initialization::PerRequest(_) => "per-request",
        }
    }

    pub fn reason(&self) -> Option<&str> {
        match self {
            Initialization::PerRequest(reason) => Some(reason),
            _ => None,
        }
    }

    /// The one-line form kept beside a cached artifact.
    pub fn encode(&self) -> String {
        match self {
            Initialization::PerRequest(reason) => format!("per-request {reason}"),
            other => other.as_str().to_owned(),
        }
    }

    pub fn decode(text: &str) -> Option<Initialization> {
        let text = text.trim_end_matches('\n');
        match text {
            "none" => Some(Initialization::None),
            "snapshot" => Some(Initialization::Snapshot),
            _ => text.strip_prefix("per-request ").map(|reason| Initialization::PerRequest(reason.to_owned())),
        }
    }
}

/// Whether `wasm` (a valid core module) exports a function `_initialize`.
pub fn exports_initialize(wasm: &[u8]) -> bool {
    use wasmparser::{ExternalKind, Parser, Payload};
    Parser::new(0).parse_all(wasm).any(|payload| match payload {
        Ok(Payload::ExportSection(reader)) => {
            reader.into_iter().flatten().any(|export| export.name == INITIALIZE && export.kind == ExternalKind::Func)
        }
        _ => false,
    })
}

/// Runs `wasm`'s `_initialize` once under `limits` and returns the module
/// that starts where it ended, or why the guest must keep running it per
/// request.
pub fn preinitialize(engine: &Engine, wasm: &[u8], limits: &SandboxLimits) -> Result<Vec<u8>, String> {
    let mut wizer = Wizer::new();
    wizer.init_func(INITIALIZE);
    let (context, instrumented) = wizer.instrument(wasm).map_err(|e| format!("the module cannot be snapshotted: {e:#}"))?;
    let module = Module::new(engine, &instrumented).map_err(|e| format!("the instrumented module does not compile: {e:#}"))?;

    let mut linker = Linker::<InitState>::new(engine);
    for import in module.imports() {
        let ExternType::Func(ty) = import.ty() else {
            return Err(format!("the module imports `{}::{}`, which is not a function", import.module(), import.name()));
        };
        let name = format!("{}::{}", import.module(), import.name());
        linker
            .func_new(import.module(), import.name(), ty, move |mut caller, _, _| {
                caller.data_mut().called.get_or_insert_with(|| name.clone());
                Err(wasmtime::format_err!("an import was called during pre-initialisation"))
            })
            .map_err(|e| e.to_string())?;
    }

    let limiter = StoreLimitsBuilder::new().memory_size(limits.memory_bytes).build();
    let mut store = Store::new(engine, InitState { limiter, called: None });
    store.limiter(|state: &mut InitState| &mut state.limiter);
    store.set_fuel(limits.fuel).map_err(|e| e.to_string())?;
    store.epoch_deadline_trap();
    store.set_epoch_deadline(1 + (limits.timeout.as_millis() / EPOCH_TICK.as_millis()) as u64);

    let failed = |store: &mut Store<InitState>, stage: &str, error: wasmtime::Error| match store.data_mut().called.take() {
        Some(name) => format!("{stage} calls `{name}`, whose answer may differ from one request to the next"),
        None => format!("{stage} failed: {}", error.root_cause()),
    };
    let instance = match linker.instantiate(&mut store, &module) {
        Ok(instance) => instance,
        Err(error) => return Err(failed(&mut store, "instantiation", error)),
    };
    let initialize = instance.get_typed_func::<(), ()>(&mut store, INITIALIZE).map_err(|e| format!("`{INITIALIZE}`: {e}"))?;
    if let Err(error) = initialize.call(&mut store, ()) {
        return Err(failed(&mut store, "`_initialize`", error));
    }

    let mut initialized = Initialized { store: &mut store, instance };
    now_or_never(wizer.snapshot(&context, &mut initialized)).map_err(|e| format!("the snapshot failed: {e:#}"))
}

/// The store's data while `_initialize` runs: the memory cap, and the
/// first import it called, if any.
struct InitState {
    limiter: StoreLimits,
    called: Option<String>,
}

/// The instance after `_initialize`, read by the snapshot.
struct Initialized<'a> {
    store: &'a mut Store<InitState>,
    instance: Instance,
}

impl InstanceState for Initialized<'_> {
    async fn global_get(&mut self, name: &str, _: ValType) -> SnapshotVal {
        let global = self.instance.get_global(&mut *self.store, name).expect("the instrumented module exports its globals");
        match global.get(&mut *self.store) {
            Val::I32(x) => SnapshotVal::I32(x),
            Val::I64(x) => SnapshotVal::I64(x),
            Val::F32(x) => SnapshotVal::F32(x),
            Val::F64(x) => SnapshotVal::F64(x),
            Val::V128(x) => SnapshotVal::V128(x.as_u128()),
            _ => unreachable!("wizer refuses modules with mutable reference globals"),
        }
    }

    async fn memory_contents(&mut self, name: &str, contents: impl FnOnce(&[u8]) + Send) {
        let memory = self.instance.get_memory(&mut *self.store, name).expect("the instrumented module exports its memories");
        contents(memory.data(&*self.store))
    }
}

/// Polls a future whose every step is ready (the snapshot reads an instance
/// that is already there) to its end.
fn now_or_never<F: Future>(future: F) -> F::Output {
    let mut future = pin!(future);
    match future.as_mut().poll(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(output) => output,
        Poll::Pending => unreachable!("reading an instance's state never waits"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::{EngineShape, SlotReset, build_engine_with};
    use std::time::Duration;

    fn engine() -> Engine {
        build_engine_with(
            EngineShape { instances: 4, max_memory_bytes: 1 << 24 },
            &SlotReset { pagemap_scan: false, reason: String::new() },
        )
        .unwrap()
    }

    const LIMITS: SandboxLimits = SandboxLimits {
        fuel: 10_000_000,
        timeout: Duration::from_secs(1),
        memory_bytes: 1 << 24,
        max_response_bytes: 1 << 20,
        max_request_bytes: 1 << 20,
    };

    /// `_initialize` stores 42 at address 16 and in a global; `get` reads both.
    const PURE: &str = r#"(module
        (memory (export "memory") 1)
        (global $g (mut i32) (i32.const 0))
        (func (export "_initialize") (i32.store (i32.const 16) (i32.const 42)) (global.set $g (i32.const 7)))
        (func (export "get") (result i32) (i32.add (i32.load (i32.const 16)) (global.get $g))))"#;

    fn get(engine: &Engine, wasm: &[u8]) -> i32 {
        let module = Module::new(engine, wasm).unwrap();
        let mut store = Store::new(engine, ());
        store.set_fuel(1_000_000).unwrap();
        store.set_epoch_deadline(1_000);
        let instance = Instance::new(&mut store, &module, &[]).unwrap();
        instance.get_typed_func::<(), i32>(&mut store, "get").unwrap().call(&mut store, ()).unwrap()
    }

    #[test]
    fn a_pure_initialize_is_snapshotted_and_removed() {
        let engine = engine();
        let wasm = wat::parse_str(PURE).unwrap();
        assert!(exports_initialize(&wasm));
        let snapshot = preinitialize(&engine, &wasm, &LIMITS).unwrap();
        assert!(!exports_initialize(&snapshot), "the snapshot no longer exports `_initialize`");
        assert_eq!(get(&engine, &snapshot), 49, "memory and global as `_initialize` left them");
        assert_eq!(get(&engine, &wasm), 0, "the original, uninitialised");
    }

    #[test]
    fn an_initialize_that_calls_an_import_is_not_snapshotted() {
        let engine = engine();
        let wat = r#"(module
            (import "wasi_snapshot_preview1" "clock_time_get" (func $now (param i32 i64 i32) (result i32)))
            (memory (export "memory") 1)
            (func (export "_initialize") (drop (call $now (i32.const 0) (i64.const 0) (i32.const 16)))))"#;
        let reason = preinitialize(&engine, &wat::parse_str(wat).unwrap(), &LIMITS).unwrap_err();
        assert!(reason.contains("`wasi_snapshot_preview1::clock_time_get`"), "{reason}");
    }

    #[test]
    fn an_initialize_over_its_limits_is_not_snapshotted() {
        let engine = engine();
        let spin = r#"(module (memory (export "memory") 1) (func (export "_initialize") (loop (br 0))))"#;
        let reason = preinitialize(&engine, &wat::parse_str(spin).unwrap(), &LIMITS).unwrap_err();
        assert!(reason.contains("`_initialize` failed"), "{reason}");
        let grow = r#"(module (memory (export "memory") 1) (func (export "_initialize") (drop (memory.grow (i32.const 1000)))
            (if (i32.eq (memory.size) (i32.const 1)) (then unreachable))))"#;
        let reason = preinitialize(&engine, &wat::parse_str(grow).unwrap(), &LIMITS).unwrap_err();
        assert!(reason.contains("`_initialize` failed"), "{reason}");
    }

    #[test]
    fn the_decision_round_trips_through_its_line() {
        for init in [Initialization::None, Initialization::Snapshot, Initialization::PerRequest("calls `env::x`".into())] {
            assert_eq!(Initialization::decode(&init.encode()), Some(init));
        }
        assert_eq!(Initialization::decode("garbage"), None);
    }
}
