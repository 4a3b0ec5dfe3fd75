//! Instantiate + run + drop of the hello guest, one fresh instance per
//! iteration, on the node's engine (pooling allocator, copy-on-write image,
//! fuel, epochs), by strategy:
//! - `executor/fresh`: the Terrafirma executor, instantiating from the
//!   module's `InstancePre` on the request path (what the node does; hello
//!   imports no hostcall that waits, so it is called directly, no fiber);
//! - `executor/prewarm`: the executor taking an instance made ahead of time
//!   from the module's queue, which a background task refills;
//! - `bare/sync` and `bare/async`: wasmtime alone, a `Store<()>` with fuel
//!   and an epoch deadline, the import stubbed: the floor under the
//!   executor, called directly and on a fiber (the two call modes).
//!
//! And `kv_request`: the same fresh-instance request for hello and for
//! `loadtest/guests/hello_kv.wat` (hello plus one KV get and one insert,
//! on a store in a temporary folder): what a get + insert costs a request
//! without HTTP around it (`loadtest/abi.sh` measures it with HTTP).

use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;

use bytes::Bytes;
use criterion::measurement::WallTime;
use criterion::{BenchmarkGroup, Criterion, criterion_group, criterion_main};
use http::{HeaderMap, Method};
use terrafirma::artifact::compile_in_memory;
use terrafirma::config::{Config, Limits};
use terrafirma::engine::EngineShape;
use terrafirma::executor::{Answer, Handler, HandlerConfig, RequestBody, Runtime};
use terrafirma::kv::{KvStores, SiteKv};
use terrafirma::messages::GuestRequest;
use terrafirma::prepare::prepare;
use terrafirma::sandbox::SandboxLimits;

const HELLO: &str = r#"(module
  (import "env" "hostcall_resp_set_body" (func $set_body (param i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (data (i32.const 16) "Hello World!\n")
  (func (export "run") (drop (call $set_body (i32.const 0) (i32.const 16) (i32.const 13)))))"#;

fn request() -> GuestRequest {
    GuestRequest::new(Method::GET, "/hello".parse().unwrap(), HeaderMap::new(), Bytes::new(), IpAddr::V4(Ipv4Addr::LOCALHOST), 6)
}

/// A handler for `wat` as the node deploys it.
fn handler(runtime: &Arc<Runtime>, wat: &str, name: &str, prewarm: u32, kv: Option<Arc<SiteKv>>) -> Handler {
    let prepared = prepare(wat.as_bytes()).unwrap();
    let module = compile_in_memory(runtime, &prepared).unwrap();
    let limits = SandboxLimits::from(&Limits::default());
    let config = HandlerConfig { label: Arc::from(format!("bench/{name}")), limits, prewarm, kv, net: None };
    Handler::new(runtime, module, prepared.abi, config).unwrap().0
}

/// One request through `handler` per iteration; each answer is hello's body.
fn bench_requests(group: &mut BenchmarkGroup<'_, WallTime>, tokio: &tokio::runtime::Runtime, id: &str, handler: &Handler) {
    group.bench_function(id, |b| {
        b.to_async(tokio).iter(|| async {
            let Answer::Full(response) = handler.handle(request(), RequestBody::Full(Bytes::new())).await.answer.unwrap() else {
                panic!("hello answers with a whole body")
            };
            assert_eq!(response.body.len(), 13);
        })
    });
}

fn instantiate_strategies(c: &mut Criterion) {
    let tokio = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let runtime = Runtime::new(EngineShape::from_config(&Config::default())).unwrap();
    let mut group = c.benchmark_group("hello_instantiate_run");
    for (strategy, prewarm) in [("fresh", 0), ("prewarm", 4)] {
        let handler = handler(&runtime, HELLO, "hello", prewarm, None);
        bench_requests(&mut group, &tokio, &format!("executor/{strategy}"), &handler);
    }
    group.finish();
}

fn kv_request(c: &mut Criterion) {
    let tokio = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let runtime = Runtime::new(EngineShape::from_config(&Config::default())).unwrap();
    let folder = tempfile::tempdir().unwrap();
    let stores = KvStores::new(folder.path().to_owned(), None).unwrap();
    let mut group = c.benchmark_group("kv_request");
    for (name, wat) in [("hello", HELLO), ("hello_kv", include_str!("../loadtest/guests/hello_kv.wat"))] {
        let kv = stores.site("bench", SandboxLimits::from(&Limits::default()).max_response_bytes);
        let handler = handler(&runtime, wat, name, 0, Some(kv));
        bench_requests(&mut group, &tokio, &format!("executor/{name}"), &handler);
    }
    group.finish();
    tokio.block_on(stores.close());
}

fn bare_wasmtime(c: &mut Criterion) {
    use wasmtime::{Linker, Module, Store};
    let tokio = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let runtime = Runtime::new(EngineShape::from_config(&Config::default())).unwrap();
    let engine = &runtime.engine;
    let module = Module::new(engine, prepare(HELLO.as_bytes()).unwrap().rewritten).unwrap();
    let mut linker = Linker::<()>::new(engine);
    linker.func_wrap("env", "hostcall_resp_set_body", |_: i32, _: i32, _: i32| 0i32).unwrap();
    let pre = linker.instantiate_pre(&module).unwrap();
    let store = || {
        let mut store = Store::new(engine, ());
        store.set_fuel(1_000_000).unwrap();
        store.set_epoch_deadline(1_000);
        store
    };
    let mut group = c.benchmark_group("hello_instantiate_run");
    group.bench_function("bare/sync", |b| {
        b.iter(|| {
            let mut store = store();
            let instance = pre.instantiate(&mut store).unwrap();
            instance.get_typed_func::<(), ()>(&mut store, "run").unwrap().call(&mut store, ()).unwrap();
        })
    });
    group.bench_function("bare/async", |b| {
        b.to_async(&tokio).iter(|| async {
            let mut store = store();
            let instance = pre.instantiate_async(&mut store).await.unwrap();
            let run = instance.get_typed_func::<(), ()>(&mut store, "run").unwrap();
            run.call_async(&mut store, ()).await.unwrap();
        })
    });
    group.finish();
}

criterion_group!(benches, instantiate_strategies, bare_wasmtime, kv_request);
criterion_main!(benches);
