//! Executors: one per guest interface, all behind `Handler`. The front end
//! only sees a `GuestRequest` go in and a `GuestResponse` or a `Fault` come
//! out; routing knows nothing of interfaces.

pub mod command;
mod fault;
mod http_outbound;
mod output;
mod runtime;
mod state;
mod terrafirma;
mod wasi_cgi;
mod wasi_http;

use std::fmt;
use std::sync::Arc;

pub use fault::{Fault, FaultKind};
pub use runtime::Runtime;
pub use wasi_http::StreamBody;

use crate::kv::SiteKv;
use crate::messages::{GuestRequest, GuestResponse};
use crate::outbound::SiteNet;
use crate::sandbox::{Cost, SandboxLimits};

/// The guest interfaces a module can implement.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Abi {
    /// Terrafirma / Terrarium: exports `run`, imports `env.hostcall_*`.
    Terrafirma,
    /// A WASI command (`_start`) run as a CGI handler.
    WasiCgi,
    /// A component of the `wasi:http/proxy` world.
    WasiHttp,
}

impl Abi {
    /// As the upload answer names it.
    pub fn as_str(self) -> &'static str {
        match self {
            Abi::Terrafirma => "terrafirma",
            Abi::WasiCgi => "wasi-cgi",
            Abi::WasiHttp => "wasi-http",
        }
    }
}

impl fmt::Display for Abi {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a handler needs to know of the module's deployment.
#[derive(Clone)]
pub struct HandlerConfig {
    /// `site/name`, for log lines.
    pub label: Arc<str>,
    /// The site's limits.
    pub limits: SandboxLimits,
    /// Instances to keep ready (Terrafirma guests only).
    pub prewarm: u32,
    /// The site's KV store.
    pub kv: Option<Arc<SiteKv>>,
    /// What the site's guests may reach on the network.
    pub net: Option<SiteNet>,
}

/// Compiled code: a core module (Terrafirma, CGI) or a component (wasi:http).
pub enum Code {
    Module(wasmtime::Module),
    Component(wasmtime::component::Component),
}

/// A compiled module ready to serve, whatever its interface.
pub enum Handler {
    Terrafirma(terrafirma::TerrafirmaHandler),
    WasiCgi(wasi_cgi::CgiHandler),
    WasiHttp(wasi_http::HttpHandler),
}

/// A request's body as the front end hands it over: read whole, for the
/// executors that want it so, or as it arrives.
pub enum RequestBody {
    Full(bytes::Bytes),
    Streaming(hyper::body::Incoming),
}

/// A response as the front end sends it out: whole, or streamed as the
/// guest writes it.
pub enum Answer {
    Full(GuestResponse),
    Streaming(http::Response<StreamBody>),
}

impl Handler {
    /// Resolves the module's imports once; fails (an upload error) when an
    /// import the node provides is declared with another signature.
    pub fn new(runtime: &Arc<Runtime>, code: Code, abi: Abi, config: HandlerConfig) -> wasmtime::Result<(Handler, Vec<String>)> {
        Ok(match (abi, code) {
            (Abi::Terrafirma, Code::Module(module)) => {
                let (handler, warnings) = terrafirma::TerrafirmaHandler::new(runtime, module, config)?;
                (Handler::Terrafirma(handler), warnings)
            }
            (Abi::WasiCgi, Code::Module(module)) => {
                let (handler, warnings) = wasi_cgi::CgiHandler::new(runtime, module, config.label, config.limits)?;
                (Handler::WasiCgi(handler), warnings)
            }
            (Abi::WasiHttp, Code::Component(component)) => {
                (Handler::WasiHttp(wasi_http::HttpHandler::new(runtime, &component, config)?), Vec::new())
            }
            (abi, _) => wasmtime::bail!("internal error: compiled code of the wrong kind for {abi}"),
        })
    }

    /// Whether the handler reads the request body as it arrives (else the
    /// front end reads it whole first).
    pub fn streams_bodies(&self) -> bool {
        matches!(self, Handler::WasiHttp(_))
    }

    pub async fn handle(&self, request: GuestRequest, body: RequestBody) -> Served {
        let whole = |request: GuestRequest, body: RequestBody| match body {
            RequestBody::Full(bytes) => GuestRequest { body: bytes, ..request },
            RequestBody::Streaming(_) => request,
        };
        let (answer, cost) = match self {
            Handler::Terrafirma(handler) => {
                let (answer, cost) = handler.handle(whole(request, body)).await;
                (answer.map(Answer::Full), cost)
            }
            Handler::WasiCgi(handler) => {
                let (answer, cost) = handler.handle(whole(request, body)).await;
                (answer.map(Answer::Full), cost)
            }
            Handler::WasiHttp(handler) => {
                let (answer, cost) = handler.handle(request, body).await;
                (answer.map(Answer::Streaming), cost)
            }
        };
        Served { answer, cost }
    }
}

/// What a handler gives back for one request: the guest's answer or the
/// fault that ended it, and what the guest cost where it ran (none when it
/// never started, or for a wasi:http guest still writing its response).
pub struct Served {
    pub answer: Result<Answer, Fault>,
    pub cost: Option<Cost>,
}

/// Checks that `name`, if exported, is a function of type `[] -> []`.
fn nullary_export(module: &wasmtime::Module, name: &str) -> wasmtime::Result<Option<wasmtime::ModuleExport>> {
    use wasmtime::ExternType;
    let Some(ty) = module.get_export(name) else { return Ok(None) };
    match ty {
        ExternType::Func(f) if f.params().len() == 0 && f.results().len() == 0 => Ok(module.get_export_index(name)),
        _ => wasmtime::bail!("export `{name}` must be a function of type [] -> []"),
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::engine::EngineShape;
    use crate::sandbox::SandboxLimits;

    fn fixture(name: &str) -> Vec<u8> {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(format!("{name}.wat"));
        wat::parse_file(path).unwrap()
    }

    /// What a request to `fixture` gets from a handler on `runtime`'s engine.
    async fn serve(runtime: &Arc<Runtime>, fixture_name: &str) -> Result<String, FaultKind> {
        serve_with(runtime, fixture_name, 1_000_000).await
    }

    async fn serve_with(runtime: &Arc<Runtime>, fixture_name: &str, fuel: u64) -> Result<String, FaultKind> {
        let limits = SandboxLimits {
            fuel,
            timeout: Duration::from_millis(300),
            memory_bytes: 8 << 20,
            max_response_bytes: 1 << 20,
            max_request_bytes: 1 << 20,
        };
        let config = HandlerConfig { label: Arc::from("test/guest"), limits, prewarm: 0, kv: None, net: None };
        let prepared = crate::modules::prepare::prepare(&fixture(fixture_name)).unwrap();
        let module = wasmtime::Module::new(&runtime.engine, &prepared.rewritten).unwrap();
        let (handler, _) = Handler::new(runtime, Code::Module(module), Abi::Terrafirma, config).unwrap();
        let request = GuestRequest::new(
            http::Method::GET,
            http::Uri::from_static("/guest"),
            http::HeaderMap::new(),
            bytes::Bytes::new(),
            std::net::Ipv4Addr::LOCALHOST.into(),
            6,
        );
        match handler.handle(request, RequestBody::Full(bytes::Bytes::new())).await.answer {
            Ok(Answer::Full(response)) => Ok(String::from_utf8_lossy(&response.body).into_owned()),
            Ok(Answer::Streaming(_)) => panic!("a Terrafirma guest answers whole"),
            Err(fault) => Err(fault.kind),
        }
    }

    /// Baseline (Winch) code is held to the same limits, with the same
    /// faults, as Cranelift code: fuel, the wall clock, memory, traps.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn baseline_and_optimised_code_answer_and_fail_alike() {
        let shape = EngineShape { instances: 4, max_memory_bytes: 8 << 20 };
        let runtimes = [Runtime::new(shape).unwrap(), Runtime::baseline(shape).unwrap()];
        for runtime in &runtimes {
            assert_eq!(serve(runtime, "hello").await, Ok("Hello World!\n".to_owned()));
            assert_eq!(serve(runtime, "initialize").await, Ok("init=1".to_owned()));
            assert_eq!(serve(runtime, "spin").await, Err(FaultKind::Fuel));
            assert_eq!(serve(runtime, "unreachable").await, Err(FaultKind::Trap));
            assert_eq!(serve(runtime, "grow").await, Err(FaultKind::Memory));
            assert_eq!(serve_with(runtime, "spin", u64::MAX / 4).await, Err(FaultKind::Timeout));
            assert_eq!(serve(runtime, "recurse").await, Err(FaultKind::Trap));
            assert_eq!(serve(runtime, "bounds").await, Err(FaultKind::Trap), "a read past the end of memory");
        }
    }
}
