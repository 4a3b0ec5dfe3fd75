//! Instantiate + run + drop of the hello guest through the Terrafirma
//! executor, one fresh instance per iteration, by instance strategy:
//! `fresh` instantiates from the `InstancePre` on the request path (pooling
//! allocator, copy-on-write image); `prewarm` takes an instance made ahead
//! of time from the module's queue, which a background task refills.

use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;

use bytes::Bytes;
use criterion::{Criterion, criterion_group, criterion_main};
use http::{HeaderMap, Method};
use terrafirma::config::{Config, Limits};
use terrafirma::engine::EngineShape;
use terrafirma::executor::{GuestRequest, Handler, SandboxLimits};
use terrafirma::modules::artifact::compile_in_memory;
use terrafirma::modules::prepare::prepare;
use terrafirma::runtime::Runtime;

const HELLO: &str = r#"(module
  (import "env" "hostcall_resp_set_body" (func $set_body (param i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (data (i32.const 16) "Hello World!\n")
  (func (export "run") (drop (call $set_body (i32.const 0) (i32.const 16) (i32.const 13)))))"#;

fn request() -> GuestRequest {
    GuestRequest {
        method: Method::GET,
        uri: "/hello".parse().unwrap(),
        headers: HeaderMap::new(),
        body: Bytes::new(),
        client_ip: IpAddr::V4(Ipv4Addr::LOCALHOST),
        script_len: 6,
    }
}

fn instantiate_strategies(c: &mut Criterion) {
    let tokio = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let config = Config::default();
    let runtime = Runtime::new(EngineShape::from_config(&config)).unwrap();
    let prepared = prepare(HELLO.as_bytes()).unwrap();
    let limits = SandboxLimits::from(&Limits::default());
    let mut group = c.benchmark_group("hello_instantiate_run");
    for (strategy, prewarm) in [("fresh", 0), ("prewarm", 4)] {
        let module = compile_in_memory(&runtime, &prepared).unwrap();
        let (handler, _) = Handler::new(&runtime, module, prepared.abi, Arc::from("bench/hello"), limits, prewarm).unwrap();
        group.bench_function(strategy, |b| {
            b.to_async(&tokio).iter(|| async {
                let response = handler.handle(request()).await.unwrap();
                assert_eq!(response.body.len(), 13);
            })
        });
    }
    group.finish();
}

criterion_group!(benches, instantiate_strategies);
criterion_main!(benches);
