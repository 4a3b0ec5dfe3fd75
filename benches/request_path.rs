//! The pieces of a hello request's path inside the node, each timed on its
//! own over the same loop (criterion `iter_custom`: every iteration does the
//! whole request, only the piece named is counted), on the node's engine:
//!
//! - `guest_request`: the guest's view of the request made from the HTTP
//!   parts (method, URI, six headers a browser sends);
//! - `store`: a `Store` with the sandbox's limiter, deadline callback, fuel
//!   and epoch deadline;
//! - `instantiate`: `InstancePre::instantiate` from the pooling allocator,
//!   copy-on-write image;
//! - `run`: the typed `run` export looked up and called (one hostcall);
//! - `reset`: dropping the store, which resets the pool slot;
//! - `whole`: all of it, one clock read per iteration.
//!
//! `cargo bench --bench request_path`; RESULTS.md has the figures and the
//! HTTP side (`perf stat` of the node and of native hyper under load).

use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};

use bytes::Bytes;
use criterion::{Criterion, criterion_group, criterion_main};
use http::{HeaderMap, HeaderValue, Method};
use terrafirma::config::{Config, Limits};
use terrafirma::engine::EngineShape;
use terrafirma::executor::Runtime;
use terrafirma::messages::GuestRequest;
use terrafirma::prepare::prepare;
use terrafirma::sandbox::{CallMode, Sandbox, SandboxLimits, Sandboxed, new_store};
use wasmtime::{Linker, Module};

const HELLO: &str = include_str!("../tests/fixtures/hello.wat");

struct Data {
    sandbox: Sandbox,
    body: usize,
}

impl Sandboxed for Data {
    fn sandbox(&mut self) -> &mut Sandbox {
        &mut self.sandbox
    }
}

fn headers() -> HeaderMap {
    let mut headers = HeaderMap::new();
    for (name, value) in [
        ("host", "example.com"),
        ("user-agent", "Mozilla/5.0 (X11; Linux x86_64; rv:120.0) Gecko/20100101 Firefox/120.0"),
        ("accept", "text/html,application/xhtml+xml"),
        ("accept-language", "en-GB,en;q=0.5"),
        ("accept-encoding", "gzip, deflate, br"),
        ("connection", "keep-alive"),
    ] {
        headers.insert(name, HeaderValue::from_static(value));
    }
    headers
}

#[derive(Clone, Copy)]
enum Piece {
    GuestRequest,
    Store,
    Instantiate,
    Run,
    Reset,
    Whole,
}

fn request_path(c: &mut Criterion) {
    let runtime = Runtime::new(EngineShape::from_config(&Config::default())).unwrap();
    let engine = &runtime.engine;
    let module = Module::new(engine, prepare(HELLO.as_bytes()).unwrap().rewritten).unwrap();
    let mut linker = Linker::<Data>::new(engine);
    linker
        .func_wrap("env", "hostcall_resp_set_body", |mut caller: wasmtime::Caller<'_, Data>, _: i32, _: i32, len: i32| {
            caller.data_mut().body = len as usize;
            0i32
        })
        .unwrap();
    let pre = linker.instantiate_pre(&module).unwrap();
    let limits = SandboxLimits::from(&Limits::default());
    let (method, uri, headers) = (Method::GET, "/hello?x=1".parse::<http::Uri>().unwrap(), headers());

    let mut group = c.benchmark_group("request_path");
    for (id, piece) in [
        ("guest_request", Piece::GuestRequest),
        ("store", Piece::Store),
        ("instantiate", Piece::Instantiate),
        ("run", Piece::Run),
        ("reset", Piece::Reset),
        ("whole", Piece::Whole),
    ] {
        group.bench_function(id, |b| {
            b.iter_custom(|iterations| {
                let mut counted = Duration::ZERO;
                for _ in 0..iterations {
                    let t0 = Instant::now();
                    let request =
                        GuestRequest::new(method.clone(), uri.clone(), headers.clone(), Bytes::new(), IpAddr::V4(Ipv4Addr::LOCALHOST), 6);
                    let t1 = Instant::now();
                    let mut store = new_store(engine, Data { sandbox: Sandbox::new(CallMode::Direct), body: 0 }, &limits);
                    let t2 = Instant::now();
                    let instance = pre.instantiate(&mut store).unwrap();
                    let t3 = Instant::now();
                    instance.get_typed_func::<(), ()>(&mut store, "run").unwrap().call(&mut store, ()).unwrap();
                    let t4 = Instant::now();
                    assert_eq!(store.data().body, 13, "hello's body is 13 bytes");
                    drop(store);
                    drop(request);
                    let t5 = Instant::now();
                    counted += match piece {
                        Piece::GuestRequest => t1 - t0,
                        Piece::Store => t2 - t1,
                        Piece::Instantiate => t3 - t2,
                        Piece::Run => t4 - t3,
                        Piece::Reset => t5 - t4,
                        Piece::Whole => t5 - t0,
                    };
                }
                counted
            })
        });
    }
    group.finish();
}

criterion_group!(benches, request_path);
criterion_main!(benches);
