//! The Terrafirma / Terrarium executor: a fresh instance per request from the
//! module's `InstancePre`, optionally taken from a small queue of instances
//! made ahead of time, then `_initialize` (if exported) and `run`, called
//! directly or on a fiber as the module's imports allow (`CallMode`).

use std::sync::Arc;

use bytes::Bytes;
use crossbeam_queue::ArrayQueue;
use wasmtime::{ExternType, InstancePre, Module, ModuleExport, Store, TypedFunc};

use super::sandbox::arm;
use super::{CallMode, Fault, FaultKind, GuestRequest, GuestResponse, HandlerConfig, Sandbox};
use crate::abi::terrafirma::{HostcallError, KV_NOT_SAVED};
use crate::modules::prepare::{MEMORY_EXPORT, TABLE_EXPORT};
use crate::runtime::Runtime;

/// Exports a guest may offer as its allocator, in the ABI's order.
const MALLOC_EXPORTS: [&str; 3] = ["default_malloc_impl", "malloc", "memory.allocate"];

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
    store: Store<Sandbox>,
    run: TypedFunc<(), ()>,
}

/// Makes instances of one module.
struct Instantiator {
    runtime: Arc<Runtime>,
    pre: InstancePre<Sandbox>,
    mode: CallMode,
    exports: Exports,
    config: HandlerConfig,
}

pub struct TerrafirmaHandler {
    instantiator: Arc<Instantiator>,
    /// Instances made ahead of time; `None` when prewarming is off.
    warm: Option<Arc<ArrayQueue<Ready>>>,
}

/// Checks that `name`, if exported, is a function of type `[] -> []`.
pub(super) fn nullary_export(module: &Module, name: &str) -> wasmtime::Result<Option<ModuleExport>> {
    let Some(ty) = module.get_export(name) else { return Ok(None) };
    match ty {
        ExternType::Func(f) if f.params().len() == 0 && f.results().len() == 0 => Ok(module.get_export_index(name)),
        _ => wasmtime::bail!("export `{name}` must be a function of type [] -> []"),
    }
}

/// Resolves imports once: the node's own with type checks, anything else
/// as a trapping function, listed in the returned warnings.
pub(super) fn link(
    runtime: &Runtime,
    linker: &wasmtime::Linker<Sandbox>,
    module: &Module,
) -> wasmtime::Result<(InstancePre<Sandbox>, Vec<String>)> {
    let mut store = Store::new(&runtime.engine, Sandbox::unarmed());
    let warnings = module
        .imports()
        .filter(|import| linker.get_by_import(&mut store, import).is_none())
        .map(|import| format!("unknown import `{}::{}` is linked as a function that traps", import.module(), import.name()))
        .collect();
    let mut linker = linker.clone();
    linker.define_unknown_imports_as_traps(module)?;
    Ok((linker.instantiate_pre(module)?, warnings))
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
        let (pre, warnings) = link(runtime, runtime.terrafirma_linker(mode), &module)?;
        let prewarm = config.prewarm as usize;
        let instantiator = Arc::new(Instantiator { runtime: runtime.clone(), pre, mode, exports, config });
        let warm = (prewarm > 0).then(|| Arc::new(ArrayQueue::new(prewarm)));
        Ok((TerrafirmaHandler { instantiator, warm }, warnings))
    }

    pub async fn handle(&self, request: GuestRequest) -> Result<GuestResponse, Fault> {
        let ready = match self.warm.as_ref().and_then(|queue| queue.pop()) {
            Some(ready) => ready,
            None => self.instantiator.instantiate().await?,
        };
        self.refill();
        self.instantiator.run(ready, request).await
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
            if let Ok(ready) = instantiator.instantiate().await {
                // A full queue drops the instance, which frees its slot.
                let _ = queue.push(ready);
            }
        });
    }
}

impl Instantiator {
    async fn instantiate(&self) -> Result<Ready, Fault> {
        let mut store = Sandbox::new_store(&self.runtime.engine, &self.config.limits, self.mode);
        let session = &mut store.data_mut().session;
        session.label = self.config.label.clone();
        session.kv = self.config.kv.clone();
        session.outbound.net = self.config.net.clone();
        let instance = match self.mode {
            CallMode::Direct => self.pre.instantiate(&mut store),
            CallMode::Fiber => self.pre.instantiate_async(&mut store).await,
        };
        let instance = match instance {
            Ok(instance) => instance,
            Err(error) => return Err(name_panic(&store, Fault::from_guest_error(&error, store.data().memory_cap.denied))),
        };
        let exports = &self.exports;
        let memory = exports.memory.as_ref().and_then(|e| instance.get_module_export(&mut store, e)).and_then(|e| e.into_memory());
        let table = exports.table.as_ref().and_then(|e| instance.get_module_export(&mut store, e)).and_then(|e| e.into_table());
        let malloc = exports.malloc.as_ref().and_then(|e| instance.get_module_export(&mut store, e)).and_then(|e| e.into_func());
        let session = &mut store.data_mut().session;
        session.memory = memory;
        session.table = table;
        session.exported_malloc = malloc;
        let typed = |store: &mut Store<Sandbox>, export: &ModuleExport| {
            instance
                .get_module_export(&mut *store, export)
                .and_then(|e| e.into_func())
                .and_then(|f| f.typed::<(), ()>(&*store).ok())
                .expect("export type checked at upload")
        };
        if let Some(initialize) = &exports.initialize {
            let initialize = typed(&mut store, initialize);
            let result = self.call(&mut store, initialize).await;
            if let Err(fault) = outcome(&store, result) {
                // The error response leaves the node: what the guest wrote
                // first must be durable (a failure is logged, the fault stands).
                let _ = store.data_mut().session.flush_kv();
                return Err(fault);
            }
        }
        let run = typed(&mut store, &exports.run);
        Ok(Ready { store, run })
    }

    async fn run(&self, ready: Ready, request: GuestRequest) -> Result<GuestResponse, Fault> {
        let Ready { mut store, run } = ready;
        arm(&mut store, &self.config.limits);
        store.data_mut().session.request = Some(request);
        let result = self.call(&mut store, run).await;
        let output = guest_output(&store);
        let answer = outcome(&store, result).map(|()| std::mem::take(&mut store.data_mut().session.response));
        // The slot goes back to the pool before the wait for the journal.
        let mut session = std::mem::take(&mut store.data_mut().session);
        drop(store);
        // Nothing of the request leaves the node before its KV writes, and
        // those it read, are durable: not its response, not its log lines.
        let durable = session.flush_kv_batched().await;
        log_output(&session.label, output);
        let response = answer?;
        durable.map_err(|_| Fault::new(FaultKind::Storage, KV_NOT_SAVED))?;
        Ok(response)
    }

    /// Calls `func` in the module's call mode.
    async fn call(&self, store: &mut Store<Sandbox>, func: TypedFunc<(), ()>) -> wasmtime::Result<()> {
        match self.mode {
            CallMode::Direct => func.call(store, ()),
            CallMode::Fiber => func.call_async(store, ()).await,
        }
    }
}

/// Classifies a guest call's result, naming a recorded panic message if
/// the guest trapped after one.
fn outcome(store: &Store<Sandbox>, result: wasmtime::Result<()>) -> Result<(), Fault> {
    Fault::from_guest_result(result, store.data().memory_cap.denied).map_err(|fault| name_panic(store, fault))
}

fn name_panic(store: &Store<Sandbox>, mut fault: Fault) -> Fault {
    if let (FaultKind::Trap, Some(message)) = (fault.kind, &store.data().session.panic_message) {
        fault.reason = HostcallError::Panicked(one_line(message)).to_string();
    }
    fault
}

/// A guest's panic message on one line for the error body: Rust's default
/// format puts the location on the first line and the message on the next.
fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ").chars().take(300).collect()
}

/// What the guest wrote to WASI stdout/stderr, for `log_output`.
fn guest_output(store: &Store<Sandbox>) -> Option<Bytes> {
    store.data().guest_log.as_ref().map(|log| log.contents())
}

/// Sends what the guest wrote to WASI stdout/stderr to the node's log.
fn log_output(label: &str, output: Option<Bytes>) {
    let Some(output) = output else { return };
    for line in String::from_utf8_lossy(&output).lines() {
        tracing::info!(target: "guest", module = %label, "{line}");
    }
}

/// `log_output` at once, for an executor with no KV writes to wait for.
pub(super) fn log_guest_output(store: &Store<Sandbox>) {
    log_output(&store.data().session.label, guest_output(store));
}
