//! WASI CGI (WAGI style): a `_start` command per request, the request as CGI
//! variables and stdin, its stdout parsed as CGI output.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::{CONTENT_LENGTH, CONTENT_TYPE, HOST, LOCATION};
use http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use wasmtime::{InstancePre, Module, ModuleExport};
use wasmtime_wasi::WasiCtxBuilder;
use wasmtime_wasi::p2::pipe::MemoryInputPipe;

use super::output::{CappedPipe, GUEST_LOG_BYTES, log_guest_output};
use super::state::WasiState;
use super::{Fault, FaultKind, Runtime, nullary_export};
use crate::messages::{GuestRequest, GuestResponse};
use crate::sandbox::{Cost, SandboxLimits, cost, new_store};

/// Room for the CGI header block on top of the response body limit.
const HEADER_ROOM: usize = 64 << 10;

pub struct CgiHandler {
    runtime: Arc<Runtime>,
    pre: InstancePre<WasiState>,
    start: ModuleExport,
    label: Arc<str>,
    limits: SandboxLimits,
}

impl CgiHandler {
    pub fn new(
        runtime: &Arc<Runtime>,
        module: Module,
        label: Arc<str>,
        limits: SandboxLimits,
    ) -> wasmtime::Result<(CgiHandler, Vec<String>)> {
        let start = nullary_export(&module, "_start")?.ok_or_else(|| wasmtime::format_err!("module does not export `_start`"))?;
        let (pre, warnings) = runtime.link(&runtime.wasi, &module)?;
        Ok((CgiHandler { runtime: runtime.clone(), pre, start, label, limits }, warnings))
    }

    /// The guest's answer and what it cost.
    pub async fn handle(&self, request: GuestRequest) -> (Result<GuestResponse, Fault>, Option<Cost>) {
        let stdout = CappedPipe::new(self.limits.max_response_bytes + HEADER_ROOM);
        let log = CappedPipe::new(GUEST_LOG_BYTES);
        let program = self.label.rsplit('/').next().unwrap_or_default();
        let wasi = WasiCtxBuilder::new()
            .args(&[program])
            .envs(&cgi_environment(&request, &self.label))
            .stdin(MemoryInputPipe::new(request.body.clone()))
            .stdout(stdout.clone())
            .stderr(log.clone())
            .build_p1();
        let mut store = new_store(&self.runtime.engine, WasiState::new(wasi), &self.limits);
        let mut instantiate = Duration::ZERO;
        let result = async {
            let started = std::time::Instant::now();
            let instance = self.pre.instantiate_async(&mut store).await?;
            instantiate = started.elapsed();
            let start = instance
                .get_module_export(&mut store, &self.start)
                .and_then(|e| e.into_func())
                .expect("export checked at upload")
                .typed::<(), ()>(&store)?;
            start.call_async(&mut store, ()).await
        }
        .await;
        let cost = Some(Cost { instantiate, ..cost(&mut store) });
        log_guest_output(&self.label, &request.id, &log);
        let answer = Fault::from_guest_result(result, store.data().sandbox.memory_denied()).and_then(|()| {
            let limit = self.limits.max_response_bytes;
            let response = parse_cgi_output(stdout.contents());
            if stdout.dropped() > 0 || response.body.len() > limit {
                return Err(Fault::new(FaultKind::ResponseTooLarge, format!("response over the limit of {limit} bytes")));
            }
            Ok(response)
        });
        (answer, cost)
    }
}

/// The CGI/1.1 meta-variables of a request.
fn cgi_environment(request: &GuestRequest, label: &str) -> Vec<(String, String)> {
    let path = request.uri.path();
    let script_len = request.script_len.min(path.len());
    let host = request.headers.get(HOST).and_then(|h| h.to_str().ok()).unwrap_or_default();
    let server_name = host.rsplit_once(':').map_or(host, |(name, _)| name);
    let mut env = vec![
        ("GATEWAY_INTERFACE".to_owned(), "CGI/1.1".to_owned()),
        ("SERVER_PROTOCOL".to_owned(), "HTTP/1.1".to_owned()),
        ("SERVER_SOFTWARE".to_owned(), concat!("terrafirma/", env!("CARGO_PKG_VERSION")).to_owned()),
        ("REQUEST_METHOD".to_owned(), request.method.as_str().to_owned()),
        ("SCRIPT_NAME".to_owned(), path[..script_len].to_owned()),
        ("PATH_INFO".to_owned(), path[script_len..].to_owned()),
        ("QUERY_STRING".to_owned(), request.uri.query().unwrap_or_default().to_owned()),
        ("REQUEST_URI".to_owned(), request.target().to_owned()),
        ("SERVER_NAME".to_owned(), server_name.to_owned()),
        ("REMOTE_ADDR".to_owned(), request.client_ip.to_string()),
        ("X_TERRAFIRMA_MODULE".to_owned(), label.to_owned()),
    ];
    if let Some(content_type) = request.headers.get(CONTENT_TYPE).and_then(|v| v.to_str().ok()) {
        env.push(("CONTENT_TYPE".to_owned(), content_type.to_owned()));
    }
    env.push(("CONTENT_LENGTH".to_owned(), request.body.len().to_string()));
    let node_set: Vec<_> = request.client_ip_headers().collect();
    for (name, value) in request.headers.iter().chain(node_set.iter().map(|(name, value)| (*name, value))) {
        if name == CONTENT_TYPE || name == CONTENT_LENGTH {
            continue;
        }
        if let Ok(value) = value.to_str() {
            let key = format!("HTTP_{}", name.as_str().to_ascii_uppercase().replace('-', "_"));
            env.push((key, value.to_owned()));
        }
    }
    env
}

/// CGI output: a header block, a blank line, the body. Output that does not
/// start with a valid header block is the body of a 200.
fn parse_cgi_output(output: Bytes) -> GuestResponse {
    let plain = || GuestResponse { body: output.clone(), ..GuestResponse::default() };
    let Some((head_len, body_start)) = find_blank_line(&output) else { return plain() };
    let Ok(head) = std::str::from_utf8(&output[..head_len]) else { return plain() };
    let mut response = GuestResponse::default();
    let mut headers = HeaderMap::new();
    let mut status = None;
    for line in head.lines() {
        let Some((name, value)) = line.split_once(':') else { return plain() };
        let value = value.trim();
        if name.eq_ignore_ascii_case("status") {
            let code = value.split_whitespace().next().and_then(|c| c.parse::<u16>().ok());
            match code.and_then(|c| StatusCode::from_u16(c).ok()) {
                Some(code) => status = Some(code),
                None => return plain(),
            }
            continue;
        }
        match (HeaderName::from_bytes(name.trim().as_bytes()), HeaderValue::from_str(value)) {
            (Ok(name), Ok(value)) => {
                headers.append(name, value);
            }
            _ => return plain(),
        }
    }
    response.status = status.unwrap_or(if headers.contains_key(LOCATION) { StatusCode::FOUND } else { StatusCode::OK });
    response.headers = headers;
    response.body = output.slice(body_start..);
    response
}

/// Where the header block ends and the body starts (`\n\n` or `\r\n\r\n`).
fn find_blank_line(output: &[u8]) -> Option<(usize, usize)> {
    let lf = output.windows(2).position(|w| w == b"\n\n").map(|i| (i, i + 2));
    let crlf = output.windows(4).position(|w| w == b"\r\n\r\n").map(|i| (i, i + 4));
    match (lf, crlf) {
        (Some(a), Some(b)) => Some(if a.0 < b.0 { a } else { b }),
        (a, b) => a.or(b),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_cgi_headers_and_status() {
        let r = parse_cgi_output(Bytes::from_static(b"Status: 404 Not Found\nContent-Type: text/plain\n\nnope"));
        assert_eq!(r.status, StatusCode::NOT_FOUND);
        assert_eq!(r.headers["content-type"], "text/plain");
        assert_eq!(&r.body[..], b"nope");
    }

    #[test]
    fn output_without_headers_is_the_body() {
        let r = parse_cgi_output(Bytes::from_static(b"hello world\n"));
        assert_eq!(r.status, StatusCode::OK);
        assert_eq!(&r.body[..], b"hello world\n");
        let r = parse_cgi_output(Bytes::from_static(b"hello world\n\nmore"));
        assert_eq!(&r.body[..], b"hello world\n\nmore");
    }
}
