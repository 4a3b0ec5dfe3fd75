//! The Terrafirma / Terrarium executor: a fresh instance per request from the
//! module's `InstancePre`, optionally taken from a small queue of instances
//! made ahead of time, then `_initialize` (if exported) and `run`, called
//! directly or on a fiber as the module's imports allow (`CallMode`).

use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_queue::ArrayQueue;
use wasmtime::{Func, InstancePre, Module, ModuleExport, Store};

use super::output::log_guest_output;
use super::state::TerrafirmaState;
use super::{Fault, FaultKind, HandlerConfig, Runtime, nullary_export};
use crate::abi::terrafirma::{KV_NOT_SAVED, MALLOC_EXPORTS, MEMORY_EXPORT, Session, SessionLimits, TABLE_EXPORT};
use crate::messages::{GuestRequest, GuestResponse};
use crate::sandbox::{CallMode, Cost, arm_at, cost, new_store_at};

/// Export lookups resolved once per module.
#[derive(Clone)]
struct Exports {
    run: ModuleExport,
    initialize: Option<ModuleExport>,
    memory: Option<ModuleExport>,
    table: Option<ModuleExport>,
    malloc: Option<ModuleExport>,
}

/// An instance ready for `run`.
struct Ready {
    store: Store<TerrafirmaState>,
    /// Takes and returns nothing (checked at upload, `nullary_export`).
    run: Func,
}

/// Makes instances of one module.
struct Instantiator {
    runtime: Arc<Runtime>,
    pre: InstancePre<TerrafirmaState>,
    mode: CallMode,
    exports: Exports,
    config: HandlerConfig,
}

pub struct TerrafirmaHandler {
    instantiator: Arc<Instantiator>,
    /// Instances made ahead of time; `None` when prewarming is off.
    warm: Option<Arc<ArrayQueue<Ready>>>,
}

impl TerrafirmaHandler {
    pub fn new(runtime: &Arc<Runtime>, module: Module, config: HandlerConfig) -> wasmtime::Result<(TerrafirmaHandler, Vec<String>)> {
        let exports = Exports {
            run: nullary_export(&module, "run")?.ok_or_else(|| wasmtime::format_err!("module does not export `run`"))?,
            initialize: nullary_export(&module, "_initialize")?,
            memory: module.get_export_index(MEMORY_EXPORT),
            table: module.get_export_index(TABLE_EXPORT),
            malloc: MALLOC_EXPORTS.iter().find_map(|name| module.get_export_index(name)),
        };
        let mode = runtime.call_mode(&module);
        let (pre, warnings) = runtime.link(runtime.terrafirma_linker(mode), &module)?;
        let prewarm = config.prewarm as usize;
        let instantiator = Arc::new(Instantiator { runtime: runtime.clone(), pre, mode, exports, config });
        let warm = (prewarm > 0).then(|| Arc::new(ArrayQueue::new(prewarm)));
        Ok((TerrafirmaHandler { instantiator, warm }, warnings))
    }

    /// The guest's answer and, once it ran, what it cost.
    pub async fn handle(&self, request: GuestRequest) -> (Result<GuestResponse, Fault>, Option<Cost>) {
        let started = Instant::now();
        let (ready, fresh) = match self.warm.as_ref().and_then(|queue| queue.pop()) {
            Some(ready) => (ready, false),
            None => match self.instantiator.instantiate(started).await {
                Ok(ready) => (ready, true),
                Err(fault) => return (Err(fault), None),
            },
        };
        let now = Instant::now();
        let instantiate = if fresh { now - started } else { Duration::ZERO };
        self.refill();
        let (answer, cost) = self.instantiator.run(ready, request, now).await;
        (answer, cost.map(|cost| Cost { instantiate, ..cost }))
    }

    /// Tops the warm queue up by one instance, off the request path.
    fn refill(&self) {
        let Some(queue) = &self.warm else { return };
        if queue.is_full() {
            return;
        }
        let queue = queue.clone();
        let instantiator = self.instantiator.clone();
        tokio::spawn(async move {
            if let Ok(ready) = instantiator.instantiate(Instant::now()).await {
                // A full queue drops the instance, which frees its slot.
                let _ = queue.push(ready);
            }
        });
    }
}

impl Instantiator {
    fn session(&self) -> Session {
        let config = &self.config;
        let limits =
            SessionLimits { max_response_bytes: config.limits.max_response_bytes, max_request_bytes: config.limits.max_request_bytes };
        Session::new(config.label.clone(), limits, config.kv.clone(), config.net.clone())
    }

    /// A fresh instance, its limits counted from `now`.
    async fn instantiate(&self, now: Instant) -> Result<Ready, Fault> {
        let state = TerrafirmaState::new(self.mode, self.session());
        let mut store = new_store_at(&self.runtime.engine, state, &self.config.limits, now);
        let instance = match self.mode {
            CallMode::Direct => self.pre.instantiate(&mut store),
            CallMode::Fiber => self.pre.instantiate_async(&mut store).await,
        };
        let instance = match instance {
            Ok(instance) => instance,
            Err(error) => return Err(name_panic(&store, Fault::from_guest_error(&error, store.data().sandbox.memory_denied()))),
        };
        let exports = &self.exports;
        let memory = exports.memory.as_ref().and_then(|e| instance.get_module_export(&mut store, e)).and_then(|e| e.into_memory());
        let table = exports.table.as_ref().and_then(|e| instance.get_module_export(&mut store, e)).and_then(|e| e.into_table());
        let malloc = exports.malloc.as_ref().and_then(|e| instance.get_module_export(&mut store, e)).and_then(|e| e.into_func());
        store.data_mut().session.set_guest(memory, table, malloc);
        let func = |store: &mut Store<TerrafirmaState>, export: &ModuleExport| {
            instance.get_module_export(&mut *store, export).and_then(|e| e.into_func()).expect("export checked at upload")
        };
        if let Some(initialize) = &exports.initialize {
            let initialize = func(&mut store, initialize);
            let result = self.call(&mut store, initialize).await;
            if let Err(fault) = outcome(&store, result) {
                // The error response leaves the node: what the guest wrote
                // first must be durable (a failure is logged, the fault stands).
                let _ = store.data_mut().session.flush_kv();
                return Err(fault);
            }
        }
        let run = func(&mut store, &exports.run);
        Ok(Ready { store, run })
    }

    async fn run(&self, ready: Ready, request: GuestRequest, now: Instant) -> (Result<GuestResponse, Fault>, Option<Cost>) {
        let Ready { mut store, run } = ready;
        arm_at(&mut store, &self.config.limits, now);
        store.data_mut().session.begin(request);
        let result = self.call(&mut store, run).await;
        let cost = Some(cost(&mut store));
        let answer = outcome(&store, result).map(|()| store.data_mut().session.take_response());
        // The slot goes back to the pool before the wait for the journal.
        let TerrafirmaState { mut session, log, .. } = store.into_data();
        // Nothing of the request leaves the node before its KV writes, and
        // those it read, are durable: not its response, not its log lines.
        let durable = session.flush_kv_batched().await;
        if let Some(log) = &log {
            log_guest_output(session.label(), session.request_id(), log);
        }
        let answer = answer.and_then(|response| match durable {
            Ok(()) => Ok(response),
            Err(_) => Err(Fault::new(FaultKind::Storage, KV_NOT_SAVED)),
        });
        (answer, cost)
    }

    /// Calls `func`, an export of `store`'s instance that takes and returns
    /// nothing, in the module's call mode.
    async fn call(&self, store: &mut Store<TerrafirmaState>, func: Func) -> wasmtime::Result<()> {
        match self.mode {
            // Without `TypedFunc`: making one looks the function's type up
            // in the engine's registry on every request, to check what
            // upload already checked.
            // SAFETY: `func` belongs to `store` and takes and returns
            // nothing, so an empty array holds its parameters and results;
            // a directly called guest's store is never on a fiber, so the
            // call is not inside a `call_async`.
            CallMode::Direct => unsafe { func.call_unchecked(store, &mut []) },
            CallMode::Fiber => func.typed::<(), ()>(&*store)?.call_async(store, ()).await,
        }
    }
}

/// Classifies a guest call's result, naming a recorded panic message if
/// the guest trapped after one.
fn outcome(store: &Store<TerrafirmaState>, result: wasmtime::Result<()>) -> Result<(), Fault> {
    Fault::from_guest_result(result, store.data().sandbox.memory_denied()).map_err(|fault| name_panic(store, fault))
}

fn name_panic(store: &Store<TerrafirmaState>, mut fault: Fault) -> Fault {
    if let (FaultKind::Trap, Some(message)) = (fault.kind, store.data().session.panic_message()) {
        fault.reason = format!("guest panicked: {}", one_line(message));
    }
    fault
}

/// A guest's panic message on one line for the error body: Rust's default
/// format puts the location on the first line and the message on the next.
fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ").chars().take(300).collect()
}
