//! Executors: one per guest interface, all behind `Handler`. Routing and the
//! HTTP front end only see `GuestRequest` in, `GuestResponse` or `Fault` out.

mod fault;
mod sandbox;
pub mod terrafirma;
pub mod wasi_cgi;

use std::net::IpAddr;
use std::sync::Arc;

use bytes::Bytes;
use http::header::{CONNECTION, CONTENT_LENGTH, TRANSFER_ENCODING};
use http::{HeaderMap, Method, StatusCode, Uri};

pub use fault::{Fault, FaultKind};
pub use sandbox::{CallMode, DeadlineExceeded, Sandbox, SandboxLimits, off_worker};

use crate::modules::prepare::Abi;
use crate::runtime::Runtime;

/// An incoming request as the guest sees it.
#[derive(Debug, Clone)]
pub struct GuestRequest {
    pub method: Method,
    /// The request target as the client sent it (path and query).
    pub uri: Uri,
    pub headers: HeaderMap,
    pub body: Bytes,
    /// Set by the node, never taken from the client.
    pub client_ip: IpAddr,
    /// How many leading bytes of the path name the module (`/hello.wasm`);
    /// 0 when the site's `index` module serves it. CGI's `SCRIPT_NAME`.
    pub script_len: usize,
}

impl GuestRequest {
    /// The target with its query, as the client sent it.
    pub fn target(&self) -> &str {
        self.uri.path_and_query().map_or("/", |pq| pq.as_str())
    }
}

/// What the guest answered.
#[derive(Debug, Clone)]
pub struct GuestResponse {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

/// Drops the headers that frame a message (`content-length`,
/// `transfer-encoding`, `connection`) from one a guest built: the node
/// frames every message itself, and a guest's own framing would contradict
/// the body it set (hyper panics on such a response).
pub fn drop_framing_headers(headers: &mut HeaderMap) {
    for framing in [CONTENT_LENGTH, TRANSFER_ENCODING, CONNECTION] {
        headers.remove(framing);
    }
}

impl Default for GuestResponse {
    fn default() -> Self {
        GuestResponse { status: StatusCode::OK, headers: HeaderMap::new(), body: Bytes::new() }
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
    pub kv: Option<Arc<crate::kv::SiteKv>>,
    /// What the site's guests may reach on the network.
    pub net: Option<crate::outbound::SiteNet>,
}

/// A compiled module ready to serve, whatever its interface.
pub enum Handler {
    Terrafirma(terrafirma::TerrafirmaHandler),
    WasiCgi(wasi_cgi::CgiHandler),
}

impl Handler {
    /// Resolves the module's imports once; fails (an upload error) when an
    /// import the node provides is declared with another signature.
    pub fn new(
        runtime: &Arc<Runtime>,
        module: wasmtime::Module,
        abi: Abi,
        config: HandlerConfig,
    ) -> wasmtime::Result<(Handler, Vec<String>)> {
        Ok(match abi {
            Abi::Terrafirma => {
                let (handler, warnings) = terrafirma::TerrafirmaHandler::new(runtime, module, config)?;
                (Handler::Terrafirma(handler), warnings)
            }
            Abi::WasiCgi => {
                let (handler, warnings) = wasi_cgi::CgiHandler::new(runtime, module, config.label, config.limits)?;
                (Handler::WasiCgi(handler), warnings)
            }
        })
    }

    pub async fn handle(&self, request: GuestRequest) -> Result<GuestResponse, Fault> {
        match self {
            Handler::Terrafirma(handler) => handler.handle(request).await,
            Handler::WasiCgi(handler) => handler.handle(request).await,
        }
    }
}
