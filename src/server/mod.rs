//! The sites' HTTP front end: Host → site → module (`routing`), request
//! limits, and guest answers or faults turned into HTTP responses.

pub mod listener;
pub mod routing;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header::{CONTENT_LENGTH, CONTENT_TYPE, HOST, RETRY_AFTER};
use http::{HeaderName, HeaderValue, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::{Body, Incoming};
use hyper::{Request, Response};

use crate::config::Config;

use crate::admission::{Gate, Pass};
use crate::executor::{Answer, Fault, FaultKind, RequestBody, Served, StreamBody};
use crate::messages::{GuestRequest, GuestResponse, REQUEST_ID, RequestId, drop_framing_headers};
use crate::modules::{Deployed, Registry};
use crate::sandbox::Cost;

/// What the sites' server answers with: a whole body (faults, Terrafirma
/// and CGI guests) or one that streams (wasi:http guests).
pub type SiteBody = http_body_util::Either<Full<Bytes>, StreamBody>;

enum Answered {
    Full(Full<Bytes>),
    Streaming(StreamBody),
}

/// Response header naming the kind of fault (`docs/errors.md`).
pub const ERROR_HEADER: &str = "x-terrafirma-error";

/// Response headers saying what the guest cost: fuel burnt, and
/// microseconds in its sandbox.
pub static FUEL_HEADER: HeaderName = HeaderName::from_static("x-terrafirma-fuel");
pub static TIME_HEADER: HeaderName = HeaderName::from_static("x-terrafirma-time-us");

/// How long a request over its site's (or the node's) concurrency limit
/// waits for a place before it is answered `503` with `Retry-After`.
pub const ADMISSION_WAIT: Duration = Duration::from_millis(250);

pub struct SiteServer {
    pub config: Arc<Config>,
    pub store: Arc<crate::modules::ModuleStore>,
    /// Requests running a guest, node-wide: one place per instance slot.
    pub node_gate: Gate,
}

impl SiteServer {
    pub fn new(config: Arc<Config>, store: Arc<crate::modules::ModuleStore>) -> SiteServer {
        let node_gate = Gate::new(config.pool.instances as usize);
        SiteServer { config, store, node_gate }
    }

    fn registry(&self) -> &Registry {
        &self.store.registry
    }

    /// Answers one request; every answer carries the request's id.
    pub async fn handle(&self, peer: SocketAddr, request: Request<Incoming>) -> Response<SiteBody> {
        let (parts, body) = request.into_parts();
        let id = RequestId::assign(&parts.headers);
        // On the heap: the answer's future holds the guest's, several KiB
        // that every caller up to hyper would otherwise move on each call.
        let (response, shown) = Box::pin(self.answer(peer, parts, body, &id)).await;
        let mut response = response.map(|body| match body {
            Answered::Full(full) => SiteBody::Left(full),
            Answered::Streaming(stream) => SiteBody::Right(stream),
        });
        stamp(response.headers_mut(), &id, shown);
        response
    }

    /// The response, and the cost to show on it (none where the guest did
    /// not run or the site turned cost headers off).
    async fn answer(
        &self,
        peer: SocketAddr,
        parts: http::request::Parts,
        body: Incoming,
        id: &RequestId,
    ) -> (Response<Answered>, Option<Cost>) {
        let started = Instant::now();
        let host = parts.headers.get(HOST).and_then(|h| h.to_str().ok()).or_else(|| parts.uri.host());
        let Some(route) = routing::resolve(self.registry(), &self.config, host, parts.uri.path()) else {
            self.store.metrics.unrouted();
            let site = routing::site_for(self.registry(), &self.config, host);
            let name = routing::module_segment(parts.uri.path()).unwrap_or(crate::names::INDEX_MODULE);
            let fault = Fault::new(FaultKind::NotFound, format!("no such module on site {site}"));
            return (fault_response(name, &fault).map(Answered::Full), None);
        };
        let deployed = route.module;
        let limits = self.config.limits_for(&deployed.site);
        let outcome = match self.admit(&deployed).await {
            Ok(_passes) => self.run(&deployed, limits, peer, (parts, body, id), route.script_len).await,
            Err(crowded) => {
                self.store.metrics.rejected(&deployed.site);
                let reason = match crowded {
                    Crowded::Site => format!("site {} has {} requests in flight, its limit", deployed.site, limits.max_concurrency),
                    Crowded::Node => "the node is at its limit of requests in flight".to_owned(),
                };
                Err((fault(&deployed, Fault::new(FaultKind::Overloaded, reason)), None))
            }
        };
        let (response, cost, errored) = match outcome {
            Ok((response, cost)) => (response, cost, false),
            Err((response, cost)) => (response, cost, true),
        };
        let latency = started.elapsed();
        deployed.count(errored);
        deployed.metrics.answered(response.status().as_u16(), latency, cost.as_ref());
        deployed.stats.record(latency, cost.map(|c| c.fuel));
        if self.config.access_log {
            let (fuel, sandbox_us) = cost.map_or((0, 0), |c| (c.fuel, c.time.as_micros()));
            tracing::info!(
                target: "access",
                site = %deployed.site,
                module = %deployed.name,
                status = response.status().as_u16(),
                time_us = latency.as_micros(),
                sandbox_us,
                fuel,
                request = %id,
            );
        }
        (response, cost.filter(|_| limits.cost_headers))
    }

    /// A place for one of the site's requests, and one of the node's, both
    /// within `ADMISSION_WAIT`; else which of the two stayed full.
    async fn admit<'a>(&'a self, deployed: &'a Deployed) -> Result<(Pass<'a>, Pass<'a>), Crowded> {
        let site = deployed.gate.enter(ADMISSION_WAIT).await.ok_or(Crowded::Site)?;
        let node = self.node_gate.enter(ADMISSION_WAIT).await.ok_or(Crowded::Node)?;
        Ok((site, node))
    }

    /// Reads the request body as the module's executor wants it and runs the
    /// guest: its response and cost, or the node's error response.
    async fn run(
        &self,
        deployed: &Deployed,
        limits: &crate::config::Limits,
        peer: SocketAddr,
        (parts, body, id): (http::request::Parts, Incoming, &RequestId),
        script_len: usize,
    ) -> Result<(Response<Answered>, Option<Cost>), (Response<Answered>, Option<Cost>)> {
        let max_body = limits.max_request_bytes;
        let declared = parts.headers.get(CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok());
        let too_large =
            || (fault(deployed, Fault::new(FaultKind::BodyTooLarge, format!("request body over the limit of {max_body} bytes"))), None);
        if declared.is_some_and(|len| len > max_body) {
            return Err(too_large());
        }
        let serving = deployed.serving.load_full();
        let body = if serving.handler.streams_bodies() {
            RequestBody::Streaming(body)
        } else if body.is_end_stream() {
            RequestBody::Full(Bytes::new())
        } else {
            match read_body(body, max_body as usize, self.config.http.body_timeout).await {
                Ok(body) => RequestBody::Full(body),
                Err(BodyError::TooLarge) => return Err(too_large()),
                Err(BodyError::TooSlow) => {
                    let reason = format!("request body not received within {:?}", self.config.http.body_timeout);
                    return Err((fault(deployed, Fault::new(FaultKind::RequestTimeout, reason)), None));
                }
                Err(BodyError::Unreadable) => {
                    return Err((plain(StatusCode::BAD_REQUEST, "request body could not be read\n").map(Answered::Full), None));
                }
            }
        };
        let request = GuestRequest::new(parts.method, parts.uri, parts.headers, Bytes::new(), peer.ip(), script_len).with_id(id.clone());
        let Served { answer, cost } = serving.handler.handle(request, body).await;
        let response = match answer {
            Ok(Answer::Full(response)) if response.status.is_informational() => {
                return Err((fault(deployed, informational(response.status)), cost));
            }
            Ok(Answer::Streaming(response)) if response.status().is_informational() => {
                return Err((fault(deployed, informational(response.status())), cost));
            }
            Ok(Answer::Full(response)) => guest_response(response).map(Answered::Full),
            Ok(Answer::Streaming(response)) => response.map(Answered::Streaming),
            Err(error) => {
                tracing::debug!(site = %deployed.site, module = %deployed.name, request = %id, "{error}");
                return Err((fault(deployed, error), cost));
            }
        };
        Ok((response, cost))
    }
}

/// The error response for `fault`, counted in the module's metrics.
fn fault(deployed: &Deployed, fault: Fault) -> Response<Answered> {
    deployed.metrics.fault(fault.kind.code());
    fault_response(&deployed.name, &fault).map(Answered::Full)
}

/// Which admission gate a request found full.
enum Crowded {
    Site,
    Node,
}

/// Puts the request id, and the cost if shown, on a response; the values
/// are written without the formatting machinery (this is every response).
fn stamp(headers: &mut http::HeaderMap, id: &RequestId, cost: Option<Cost>) {
    // Room for all three at once: a guest's map grown one header at a time
    // reallocates.
    headers.reserve(3);
    if let Some(cost) = cost {
        headers.insert(&FUEL_HEADER, decimal(cost.fuel));
        headers.insert(&TIME_HEADER, decimal(cost.time.as_micros().min(u64::MAX as u128) as u64));
    }
    headers.insert(&REQUEST_ID, id.header_value());
}

fn decimal(n: u64) -> HeaderValue {
    /// `0000` to `9999`, four digits each: the numbers most responses carry
    /// (a hello burns tens of fuel in a few microseconds) need no allocation.
    static SMALL: [u8; 40_000] = {
        let mut digits = [0u8; 40_000];
        let mut i = 0;
        while i < 10_000 {
            let mut n = i;
            let mut at = 4 * i + 3;
            loop {
                digits[at] = b'0' + (n % 10) as u8;
                n /= 10;
                if at == 4 * i {
                    break;
                }
                at -= 1;
            }
            i += 1;
        }
        digits
    };
    let bytes = if n < 10_000 {
        let n = n as usize;
        let width = if n < 10 {
            1
        } else if n < 100 {
            2
        } else if n < 1000 {
            3
        } else {
            4
        };
        Bytes::from_static(&SMALL[4 * n + 4 - width..4 * n + 4])
    } else {
        let (mut digits, mut at, mut n) = ([0u8; 20], 20, n);
        while n > 0 {
            at -= 1;
            digits[at] = b'0' + (n % 10) as u8;
            n /= 10;
        }
        Bytes::copy_from_slice(&digits[at..])
    };
    // SAFETY: ASCII digits.
    unsafe { HeaderValue::from_maybe_shared_unchecked(bytes) }
}

fn informational(status: StatusCode) -> Fault {
    Fault::new(FaultKind::Trap, format!("guest answered with informational status {}", status.as_u16()))
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cost_values_are_the_numbers_in_decimal_from_the_table_or_written_out() {
        for n in [0, 1, 9, 10, 42, 99, 100, 999, 1000, 1234, 9999, 10_000, 65_536, 123_456_789, u64::MAX] {
            assert_eq!(decimal(n), n.to_string().as_str(), "{n}");
        }
        for n in 0..10_000 {
            assert_eq!(decimal(n).as_bytes(), n.to_string().as_bytes());
        }
    }
}
