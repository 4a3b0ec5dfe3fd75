//! `terrafirma run`: run a module once, without a server. A WASI command runs
//! with the terminal's stdio, like `wasmtime run`; an HTTP handler runs
//! against a synthetic request (`--request`) and its response is printed.
//! Compiled artifacts are cached, so a second run does not compile again;
//! a handler's KV data is kept in the same cache.

use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;
use std::sync::Arc;

use bytes::Bytes;
use clap::Args;
use http::{HeaderMap, HeaderName, HeaderValue, Method, Uri};
use http_body_util::BodyExt;
use std::io::Write;
use terrafirma::artifact::load_or_compile;
use terrafirma::config::Limits;
use terrafirma::engine::EngineShape;
use terrafirma::executor::command::{self, CommandOptions, cache_dir};
use terrafirma::executor::{Abi, Answer, Code, Handler, HandlerConfig, RequestBody, Runtime};
use terrafirma::kv::KvStores;
use terrafirma::messages::{GuestRequest, GuestResponse};
use terrafirma::prepare::prepare;
use terrafirma::sandbox::SandboxLimits;
use terrafirma::script_name_len;

#[derive(Args)]
pub struct RunCommand {
    /// The module: .wasm binary or .wat text
    file: PathBuf,
    /// Run as an HTTP handler against a request for this path
    #[arg(long)]
    request: Option<String>,
    /// Request method
    #[arg(long, default_value = "GET", requires = "request")]
    method: String,
    /// Request header `Name: value` (repeatable)
    #[arg(short = 'H', long = "header", requires = "request")]
    headers: Vec<String>,
    /// Request body
    #[arg(long, requires = "request")]
    data: Option<String>,
    /// An environment variable of a WASI command (repeatable)
    #[arg(long = "env", value_name = "K=V")]
    env: Vec<String>,
    /// A host directory the WASI command may use, as GUEST (default: the
    /// same path) (repeatable)
    #[arg(long = "dir", value_name = "HOST[::GUEST]")]
    dirs: Vec<String>,
    /// Arguments of a WASI command
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    args: Vec<String>,
}

/// A one-off run gets one memory of up to 4 GiB, no fuel or time limit.
const RUN_SHAPE: EngineShape = EngineShape { instances: 4, max_memory_bytes: 4 << 30 };

impl RunCommand {
    pub fn execute(self) -> anyhow::Result<i32> {
        if self.request.is_none() {
            return self.run_command();
        }
        super::init_logging("warn");
        let bytes = std::fs::read(&self.file).map_err(|e| anyhow::anyhow!("cannot read {}: {e}", self.file.display()))?;
        let prepared = prepare(&bytes)?;
        let runtime = Runtime::new(RUN_SHAPE)?;
        let cache = cache_dir();
        let code = load_or_compile(&runtime, &cache.join("artifacts"), &cache.join("tmp"), &prepared, None)?.code;
        let name = self.file.file_stem().and_then(|s| s.to_str()).unwrap_or("module").to_owned();
        super::tokio_runtime()?.block_on(async {
            let path = self.request.as_deref().unwrap_or("/");
            self.run_request(&runtime, code, prepared.abi, &name, path).await
        })
    }

    async fn run_request(&self, runtime: &Arc<Runtime>, code: Code, abi: Abi, name: &str, path: &str) -> anyhow::Result<i32> {
        let limits = SandboxLimits::from(&Limits::default());
        // A one-off run keeps its KV data in the cache, as the site `_run`.
        let kv = KvStores::new(cache_dir().join("kv"), None)?.site("_run", limits.max_response_bytes);
        let config = HandlerConfig { label: Arc::from(format!("run/{name}")), limits, prewarm: 0, kv: Some(kv), net: None };
        let (handler, warnings) = Handler::new(runtime, code, abi, config)?;
        for warning in warnings {
            eprintln!("warning: {warning}");
        }
        let mut headers = HeaderMap::new();
        for header in &self.headers {
            let (key, value) = header.split_once(':').ok_or_else(|| anyhow::anyhow!("header {header:?} is not `Name: value`"))?;
            headers.append(HeaderName::from_bytes(key.trim().as_bytes())?, HeaderValue::from_str(value.trim())?);
        }
        let uri: Uri = path.parse()?;
        // Served as the node would serve it: under its name, or as the
        // site's `index` module for any other path.
        let script_len = script_name_len(uri.path(), name);
        let method = Method::from_bytes(self.method.as_bytes())?;
        let body = Bytes::from(self.data.clone().unwrap_or_default());
        let request = GuestRequest::new(method, uri, headers, Bytes::new(), IpAddr::V4(Ipv4Addr::LOCALHOST), script_len);
        let answer = handler.handle(request, RequestBody::Full(body)).await.answer;
        let response = match answer {
            Ok(Answer::Full(response)) => Ok(response),
            Ok(Answer::Streaming(response)) => {
                let (parts, body) = response.into_parts();
                let body = body.collect().await.map_err(|e| anyhow::anyhow!("the response was cut: {e}"))?.to_bytes();
                Ok(GuestResponse { status: parts.status, headers: parts.headers, body })
            }
            Err(fault) => Err(fault),
        };
        match response {
            Ok(response) => {
                println!("HTTP/1.1 {}", response.status);
                for (key, value) in &response.headers {
                    println!("{key}: {}", String::from_utf8_lossy(value.as_bytes()));
                }
                println!();
                use std::io::Write;
                std::io::stdout().write_all(&response.body)?;
                Ok(libc::EXIT_SUCCESS)
            }
            Err(fault) => {
                println!("HTTP/1.1 {}\nx-terrafirma-error: {}\n\n{name}: {}", fault.kind.status(), fault.kind.code(), fault.reason);
                Ok(libc::EXIT_FAILURE)
            }
        }
    }

    /// A WASI command, on the fast path of `executor::command`; exits the
    /// process with the guest's code once its output is flushed.
    fn run_command(&self) -> anyhow::Result<i32> {
        let mut env = Vec::new();
        for pair in &self.env {
            let (key, value) = pair.split_once('=').ok_or_else(|| anyhow::anyhow!("--env {pair:?} is not K=V"))?;
            env.push((key.to_owned(), value.to_owned()));
        }
        let dirs: Vec<(String, String)> = self
            .dirs
            .iter()
            .map(|dir| dir.split_once("::").map_or((dir.clone(), dir.clone()), |(host, guest)| (host.to_owned(), guest.to_owned())))
            .collect();
        let program = self.file.display().to_string();
        let options = CommandOptions { program: &program, args: &self.args, env: &env, dirs: &dirs };
        let code = command::run(&self.file, &cache_dir().join("run"), &options)?;
        let _ = std::io::stdout().flush();
        // Nothing is left to clean up that the kernel does not: skipping the
        // destructors (engine, mappings) and the C library's exit handlers
        // (mimalloc returning its pages one by one) saves start-up's mirror
        // image. Stdout is flushed above; stderr is unbuffered.
        // SAFETY: ends the process; no handler is needed for correctness.
        unsafe { libc::_exit(code) }
    }
}
