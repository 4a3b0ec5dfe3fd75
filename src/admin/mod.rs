//! The admin API (`docs/admin-api.md`): upload, inspect and delete modules.
//! Without any token configured it answers loopback clients only; with
//! tokens, an operator token reaches every site and a site token its own.

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http::header::{AUTHORIZATION, CONTENT_LENGTH, CONTENT_TYPE};
use http::{HeaderValue, Method, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Request, Response};
use serde_json::{Value, json};

use crate::admission::Gate;
use crate::config::Config;
use crate::modules::{DeployError, Deployed, ModuleStore, Quantiles};
use crate::server::{BodyError, read_body};

pub struct AdminServer {
    pub config: Arc<Config>,
    pub store: Arc<ModuleStore>,
    /// Uploads being received at once: each may hold `max_upload_bytes` in
    /// memory, so many clients uploading at the limit cannot exhaust it.
    uploads: Gate,
}

/// Uploads received at once; more wait up to `UPLOAD_WAIT`, then get `503`.
const MAX_CONCURRENT_UPLOADS: usize = 4;
const UPLOAD_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

/// Who a request is from, as far as its token says.
enum Caller {
    Operator,
    Site(String),
}

impl AdminServer {
    pub fn new(config: Arc<Config>, store: Arc<ModuleStore>) -> AdminServer {
        AdminServer { config, store, uploads: Gate::new(MAX_CONCURRENT_UPLOADS) }
    }

    fn tokens_configured(&self) -> bool {
        self.config.admin_token.is_some() || self.config.sites.values().any(|s| s.token.is_some())
    }

    /// Who `request` is from, or the status and reason it is refused with.
    fn authenticate(&self, peer: SocketAddr, request: &Request<Incoming>) -> Result<Caller, (StatusCode, &'static str)> {
        if !self.tokens_configured() {
            return if peer.ip().is_loopback() {
                Ok(Caller::Operator)
            } else {
                Err((StatusCode::FORBIDDEN, "the admin API answers loopback clients only when no token is configured"))
            };
        }
        let token =
            request.headers().get(AUTHORIZATION).and_then(|v| v.to_str().ok()).and_then(|v| v.strip_prefix("Bearer ")).map(str::trim);
        let Some(token) = token else { return Err((StatusCode::UNAUTHORIZED, "missing bearer token")) };
        if self.config.admin_token.as_deref().is_some_and(|t| constant_time_eq(t, token)) {
            return Ok(Caller::Operator);
        }
        for (site, config) in &self.config.sites {
            if config.token.as_deref().is_some_and(|t| constant_time_eq(t, token)) {
                return Ok(Caller::Site(site.clone()));
            }
        }
        Err((StatusCode::UNAUTHORIZED, "invalid token"))
    }

    pub async fn handle(&self, peer: SocketAddr, request: Request<Incoming>) -> Response<Full<Bytes>> {
        let path = request.uri().path().to_owned();
        if path == "/healthz" {
            return Response::new(Full::new(Bytes::from_static(b"ok\n")));
        }
        let caller = match self.authenticate(peer, &request) {
            Ok(caller) => caller,
            Err((status, reason)) => return error(status, reason),
        };
        if path == "/metrics" {
            return match (&caller, request.method()) {
                (Caller::Site(_), _) => error(StatusCode::FORBIDDEN, "the metrics cover every site: they need the operator's token"),
                (Caller::Operator, &Method::GET) => self.metrics(),
                _ => error(StatusCode::METHOD_NOT_ALLOWED, "method not allowed"),
            };
        }
        let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
        let (site, name, certificate) = match segments.as_slice() {
            ["v1", "sites", site, "modules"] => (*site, None, false),
            ["v1", "sites", site, "modules", name] => (*site, Some(*name), false),
            ["v1", "sites", site, "certificate"] => (*site, None, true),
            _ => return error(StatusCode::NOT_FOUND, "no such endpoint"),
        };
        let site = site.to_ascii_lowercase();
        if let Caller::Site(own) = &caller
            && *own != site
        {
            return error(StatusCode::FORBIDDEN, "this token is for another site");
        }
        if certificate {
            return match request.method() {
                &Method::PUT => self.install_certificate(&site, request).await,
                _ => error(StatusCode::METHOD_NOT_ALLOWED, "method not allowed"),
            };
        }
        match (request.method().clone(), name) {
            (Method::GET, None) => {
                let modules: Vec<Value> = self.store.registry.list(&site).iter().map(|d| describe(d)).collect();
                json_response(StatusCode::OK, json!({ "modules": modules }))
            }
            (Method::GET, Some(name)) => match self.store.registry.get(&site, name) {
                Some(deployed) => json_response(StatusCode::OK, describe(&deployed)),
                None => error(StatusCode::NOT_FOUND, &format!("no module {name:?} on site {site:?}")),
            },
            (Method::PUT, Some(name)) => self.upload(&site, name, request).await,
            (Method::DELETE, Some(name)) => match self.store.remove(&site, name).await {
                Ok(true) => {
                    let mut response = Response::new(Full::new(Bytes::new()));
                    *response.status_mut() = StatusCode::NO_CONTENT;
                    response
                }
                Ok(false) => error(StatusCode::NOT_FOUND, &format!("no module {name:?} on site {site:?}")),
                Err(e @ DeployError::Fleet(_)) => unavailable(&e.to_string()),
                Err(e) if e.is_client_error() => error(StatusCode::BAD_REQUEST, &e.to_string()),
                Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
            },
            _ => error(StatusCode::METHOD_NOT_ALLOWED, "method not allowed"),
        }
    }

    /// `PUT /v1/sites/{site}/certificate`: the PEM chain and key in one body.
    async fn install_certificate(&self, site: &str, request: Request<Incoming>) -> Response<Full<Bytes>> {
        if !crate::names::valid_site_name(site) {
            return error(StatusCode::BAD_REQUEST, &format!("invalid site name {site:?}"));
        }
        const MAX_PEM: usize = 1 << 20;
        let body = match read_body(request.into_body(), MAX_PEM, self.config.http.body_timeout).await {
            Ok(body) => body,
            Err(BodyError::TooLarge) => return error(StatusCode::PAYLOAD_TOO_LARGE, "certificate over 1 MiB"),
            Err(BodyError::TooSlow) => return error(StatusCode::REQUEST_TIMEOUT, "certificate not received in time"),
            Err(BodyError::Unreadable) => return error(StatusCode::BAD_REQUEST, "certificate could not be read"),
        };
        let certs = self.store.certs.clone();
        let site_owned = site.to_owned();
        match tokio::task::spawn_blocking(move || certs.install(&site_owned, &body)).await {
            Ok(Ok(())) => {
                tracing::info!(site, "HTTPS certificate installed");
                json_response(StatusCode::OK, json!({ "site": site, "certificate": "installed" }))
            }
            Ok(Err(e @ crate::certs::CertError::Storage(_))) => error(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
            Ok(Err(e)) => error(StatusCode::BAD_REQUEST, &e.to_string()),
            Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, &format!("install failed: {e}")),
        }
    }

    fn metrics(&self) -> Response<Full<Bytes>> {
        let text = self.store.metrics.encode(self.store.readings());
        let mut response = Response::new(Full::new(Bytes::from(text)));
        response.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static(crate::metrics::CONTENT_TYPE));
        response
    }

    async fn upload(&self, site: &str, name: &str, request: Request<Incoming>) -> Response<Full<Bytes>> {
        let response = self.try_upload(site, name, request).await;
        let result = match response.status() {
            status if status.is_success() => "ok",
            status if status.is_client_error() => "refused",
            _ => "failed",
        };
        self.store.metrics.deploy(result);
        response
    }

    async fn try_upload(&self, site: &str, name: &str, request: Request<Incoming>) -> Response<Full<Bytes>> {
        let limit = self.config.limits_for(site).max_upload_bytes;
        let too_large = || error(StatusCode::PAYLOAD_TOO_LARGE, &format!("upload over the limit of {limit} bytes"));
        let declared = request.headers().get(CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok());
        if declared.is_some_and(|len| len > limit) {
            return too_large();
        }
        let Some(_receiving) = self.uploads.enter(UPLOAD_WAIT).await else {
            let mut busy = error(StatusCode::SERVICE_UNAVAILABLE, "too many uploads at once: retry shortly");
            busy.headers_mut().insert(http::header::RETRY_AFTER, HeaderValue::from_static("5"));
            return busy;
        };
        let body = match read_body(request.into_body(), limit as usize, self.config.http.body_timeout).await {
            Ok(body) => body,
            Err(BodyError::TooLarge) => return too_large(),
            Err(BodyError::TooSlow) => return error(StatusCode::REQUEST_TIMEOUT, "upload not received in time"),
            Err(BodyError::Unreadable) => return error(StatusCode::BAD_REQUEST, "upload could not be read"),
        };
        match self.store.deploy(site, name, body).await {
            Ok(outcome) => {
                let d = &outcome.deployed;
                tracing::info!(site, module = name, sha256 = %d.sha256, compile_ms = outcome.compile_ms, "deployed");
                let status = if outcome.replaced { StatusCode::OK } else { StatusCode::CREATED };
                json_response(
                    status,
                    json!({
                        "site": d.site, "name": d.name, "sha256": d.sha256, "bytes": d.bytes,
                        "abi": d.abi.as_str(), "compile_ms": outcome.compile_ms, "warnings": d.warnings,
                        "initialization": d.initialization.as_str(), "initialization_reason": d.initialization.reason(),
                        "compiler": outcome.compiler.as_str(),
                    }),
                )
            }
            Err(e @ DeployError::Quota(_)) => error(StatusCode::FORBIDDEN, &e.to_string()),
            Err(e @ DeployError::Fleet(_)) => unavailable(&e.to_string()),
            Err(e) if e.is_client_error() => error(StatusCode::BAD_REQUEST, &e.to_string()),
            Err(e) => {
                tracing::error!(site, module = name, "deploy failed: {e}");
                error(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string())
            }
        }
    }
}

fn describe(d: &Deployed) -> Value {
    use std::sync::atomic::Ordering::Relaxed;
    let (latency, fuel) = d.stats.quantiles();
    let quantiles = |q: Option<Quantiles>| q.map(|q| json!({ "p50": q.p50, "p99": q.p99 }));
    json!({
        "name": d.name, "sha256": d.sha256, "abi": d.abi.as_str(), "bytes": d.bytes,
        "deployed_at": humantime::format_rfc3339_seconds(d.deployed_at).to_string(),
        "requests": d.requests.load(Relaxed), "errors": d.errors.load(Relaxed),
        "latency_us": quantiles(latency), "fuel": quantiles(fuel),
        "warnings": d.warnings,
        "initialization": d.initialization.as_str(), "initialization_reason": d.initialization.reason(),
        "compiler": d.serving.load().compiler.as_str(),
    })
}

fn json_response(status: StatusCode, value: Value) -> Response<Full<Bytes>> {
    let mut body = serde_json::to_vec(&value).expect("JSON values serialize");
    body.push(b'\n');
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

/// 503 with `Retry-After`: the fleet's servers did not answer.
fn unavailable(message: &str) -> Response<Full<Bytes>> {
    let mut response = error(StatusCode::SERVICE_UNAVAILABLE, message);
    response.headers_mut().insert(http::header::RETRY_AFTER, HeaderValue::from_static("5"));
    response
}

fn error(status: StatusCode, message: &str) -> Response<Full<Bytes>> {
    json_response(status, json!({ "error": message }))
}

fn constant_time_eq(a: &str, b: &str) -> bool {
    a.len() == b.len() && a.bytes().zip(b.bytes()).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}
