//! The sites' HTTP front end: Host → site → module (`routing`), request
//! limits, and guest answers or faults turned into HTTP responses.

pub mod listener;
pub mod routing;

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http::header::{CONTENT_LENGTH, CONTENT_TYPE, HOST, RETRY_AFTER};
use http::{HeaderValue, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::{Body, Incoming};
use hyper::{Request, Response};

use crate::config::Config;
use crate::executor::{Answer, Fault, FaultKind, RequestBody, StreamBody};
use crate::messages::{GuestRequest, GuestResponse, drop_framing_headers};
use crate::modules::Registry;

/// What the sites' server answers with: a whole body (faults, Terrafirma
/// and CGI guests) or one that streams (wasi:http guests).
pub type SiteBody = http_body_util::Either<Full<Bytes>, StreamBody>;

enum Answered {
    Full(Full<Bytes>),
    Streaming(StreamBody),
}

/// Response header naming the kind of fault (`docs/errors.md`).
pub const ERROR_HEADER: &str = "x-terrafirma-error";

pub struct SiteServer {
    pub config: Arc<Config>,
    pub store: Arc<crate::modules::ModuleStore>,
}

impl SiteServer {
    fn registry(&self) -> &Registry {
        &self.store.registry
    }

    pub async fn handle(&self, peer: SocketAddr, request: Request<Incoming>) -> Response<SiteBody> {
        self.answer(peer, request).await.map(|body| match body {
            Answered::Full(full) => SiteBody::Left(full),
            Answered::Streaming(stream) => SiteBody::Right(stream),
        })
    }

    async fn answer(&self, peer: SocketAddr, request: Request<Incoming>) -> Response<Answered> {
        let (parts, body) = request.into_parts();
        let host = parts.headers.get(HOST).and_then(|h| h.to_str().ok()).or_else(|| parts.uri.host());
        let Some(route) = routing::resolve(self.registry(), &self.config, host, parts.uri.path()) else {
            let site = routing::site_for(self.registry(), &self.config, host);
            let name = routing::module_segment(parts.uri.path()).unwrap_or(crate::names::INDEX_MODULE);
            return fault_response(name, &Fault::new(FaultKind::NotFound, format!("no such module on site {site}"))).map(Answered::Full);
        };
        let deployed = route.module;
        let max_body = self.config.limits_for(&deployed.site).max_request_bytes;
        let declared = parts.headers.get(CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok());
        let too_large = || {
            deployed.count(true);
            let reason = format!("request body over the limit of {max_body} bytes");
            fault_response(&deployed.name, &Fault::new(FaultKind::BodyTooLarge, reason))
        };
        if declared.is_some_and(|len| len > max_body) {
            return too_large().map(Answered::Full);
        }
        let body = if deployed.handler.streams_bodies() {
            RequestBody::Streaming(body)
        } else if body.is_end_stream() {
            RequestBody::Full(Bytes::new())
        } else {
            let read = match read_body(body, max_body as usize, self.config.http.body_timeout).await {
                Ok(body) => Ok(body),
                Err(BodyError::TooLarge) => Err(too_large()),
                Err(BodyError::TooSlow) => {
                    deployed.count(true);
                    let reason = format!("request body not received within {:?}", self.config.http.body_timeout);
                    Err(fault_response(&deployed.name, &Fault::new(FaultKind::RequestTimeout, reason)))
                }
                Err(BodyError::Unreadable) => {
                    deployed.count(true);
                    Err(plain(StatusCode::BAD_REQUEST, "request body could not be read\n"))
                }
            };
            match read {
                Ok(body) => RequestBody::Full(body),
                Err(response) => return response.map(Answered::Full),
            }
        };
        let request = GuestRequest::new(parts.method, parts.uri, parts.headers, Bytes::new(), peer.ip(), route.script_len);
        let answer = deployed.handler.handle(request, body).await;
        let status = match &answer {
            Ok(Answer::Full(response)) => response.status,
            Ok(Answer::Streaming(response)) => response.status(),
            Err(_) => StatusCode::OK,
        };
        match answer {
            Ok(_) if status.is_informational() => {
                deployed.count(true);
                let reason = format!("guest answered with informational status {}", status.as_u16());
                fault_response(&deployed.name, &Fault::new(FaultKind::Trap, reason)).map(Answered::Full)
            }
            Ok(Answer::Full(response)) => {
                deployed.count(false);
                guest_response(response).map(Answered::Full)
            }
            Ok(Answer::Streaming(response)) => {
                deployed.count(false);
                response.map(Answered::Streaming)
            }
            Err(fault) => {
                deployed.count(true);
                tracing::debug!(site = %deployed.site, module = %deployed.name, "{fault}");
                fault_response(&deployed.name, &fault).map(Answered::Full)
            }
        }
    }
}

/// Why a request body could not be had.
#[derive(Debug, PartialEq, Eq)]
pub enum BodyError {
    TooLarge,
    /// Not all of it arrived in time.
    TooSlow,
    Unreadable,
}

/// Reads a whole body of at most `limit` bytes, within `timeout` from now.
pub async fn read_body(body: Incoming, limit: usize, timeout: std::time::Duration) -> Result<Bytes, BodyError> {
    match tokio::time::timeout(timeout, Limited::new(body, limit).collect()).await {
        Err(_) => Err(BodyError::TooSlow),
        Ok(Ok(collected)) => Ok(collected.to_bytes()),
        Ok(Err(error)) if error.is::<http_body_util::LengthLimitError>() => Err(BodyError::TooLarge),
        Ok(Err(_)) => Err(BodyError::Unreadable),
    }
}

fn guest_response(mut response: GuestResponse) -> Response<Full<Bytes>> {
    drop_framing_headers(&mut response.headers);
    let mut out = Response::new(Full::new(response.body));
    *out.status_mut() = response.status;
    *out.headers_mut() = response.headers;
    out
}

/// The error response of `docs/errors.md`: status, `x-terrafirma-error`, one line naming the
/// module and the reason.
pub fn fault_response(module: &str, fault: &Fault) -> Response<Full<Bytes>> {
    let mut response = plain(fault.kind.status(), &format!("{module}: {}\n", fault.reason));
    let headers = response.headers_mut();
    headers.insert(ERROR_HEADER, HeaderValue::from_static(fault.kind.code()));
    if fault.kind == FaultKind::Overloaded {
        headers.insert(RETRY_AFTER, HeaderValue::from_static("1"));
    }
    response
}

fn plain(status: StatusCode, body: &str) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body.to_owned())));
    *response.status_mut() = status;
    response.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
    response
}
