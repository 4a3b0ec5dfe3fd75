//! The node's way out to the network, for guests: one pooled hyper client
//! (HTTP and HTTPS through rustls, connections reused), one DNS resolver,
//! and the rules every outgoing call obeys whatever the site allows: the
//! node's admin port is never reached and redirects are never followed.

mod allow;
mod connect;
mod dns;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use bytes::{Bytes, BytesMut};
use http::Request;
use http_body_util::{BodyExt, Full};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

pub use allow::{AllowList, MAX_URL_BYTES, UrlError};
pub use dns::{DnsError, MAX_QUERY_BYTES, Resolver};

use crate::messages::{GuestResponse, drop_framing_headers};
use connect::GuardedConnector;

/// Most requests a guest may send while serving one incoming request,
/// whatever its interface.
pub const MAX_OUTBOUND_REQUESTS: usize = 64;
/// Response bytes one incoming request may receive in all, in units of the
/// site's `max_response_bytes` (which also caps each body).
pub const RECEIVED_BODIES_FACTOR: usize = 4;

/// Why an outgoing request failed (the guest sees `-1`; this goes to the log).
#[derive(Debug, thiserror::Error)]
pub enum OutboundError {
    #[error("request to {url} failed: {reason}")]
    Failed { url: String, reason: String },
    #[error("response body from {url} is over the limit of {limit} bytes")]
    BodyTooLarge { url: String, limit: usize },
    #[error("response bodies from {url} and earlier requests are over the limit of {limit} bytes per incoming request")]
    BudgetSpent { url: String, limit: usize },
    #[error("the request's wall-clock limit ended it")]
    Deadline,
}

/// The bytes of response bodies one incoming request may receive in all,
/// shared by its concurrent sends.
#[derive(Debug)]
pub struct ByteBudget {
    limit: usize,
    left: AtomicUsize,
}

impl ByteBudget {
    pub fn new(limit: usize) -> ByteBudget {
        ByteBudget { limit, left: AtomicUsize::new(limit) }
    }

    /// Takes `n` bytes; `false` (and nothing taken) if fewer are left.
    fn take(&self, n: usize) -> bool {
        self.left.fetch_update(Ordering::AcqRel, Ordering::Acquire, |left| left.checked_sub(n)).is_ok()
    }
}

/// Shared by every site of the node.
pub struct Net {
    client: Client<HttpsConnector<GuardedConnector>, Full<Bytes>>,
    pub resolver: Resolver,
    /// Sends by result, for the metrics: answered, failed (no connection,
    /// a broken response), or a body over its limit: the order of
    /// `metrics::OUTBOUND_RESULTS`.
    pub results: [std::sync::atomic::AtomicU64; 3],
}

impl Net {
    /// `admin`: the node's admin address, which guests must never reach.
    pub fn new(admin: Option<SocketAddr>) -> anyhow::Result<Arc<Net>> {
        let tls = hyper_rustls::HttpsConnectorBuilder::new()
            .with_provider_and_webpki_roots(rustls::crypto::ring::default_provider())?
            .https_or_http()
            .enable_http1()
            .enable_http2()
            .wrap_connector(GuardedConnector::new(admin));
        let client = Client::builder(TokioExecutor::new()).build(tls);
        Ok(Arc::new(Net { client, resolver: Resolver::from_system()?, results: Default::default() }))
    }

    /// Sends one request and reads the whole response, its body capped at
    /// `max_body` bytes and charged to `budget` as it arrives. The caller
    /// bounds the time it may take. The node frames the body itself, so
    /// framing headers the guest set are dropped.
    pub async fn send(&self, request: Request<Bytes>, max_body: usize, budget: &ByteBudget) -> Result<GuestResponse, OutboundError> {
        let result = self.send_counted(request, max_body, budget).await;
        let index = match &result {
            Ok(_) => 0,
            Err(OutboundError::Failed { .. } | OutboundError::Deadline) => 1,
            Err(OutboundError::BodyTooLarge { .. } | OutboundError::BudgetSpent { .. }) => 2,
        };
        self.results[index].fetch_add(1, Ordering::Relaxed);
        result
    }

    async fn send_counted(&self, request: Request<Bytes>, max_body: usize, budget: &ByteBudget) -> Result<GuestResponse, OutboundError> {
        let url = request.uri().to_string();
        let failed = |reason: String| OutboundError::Failed { url: url.clone(), reason };
        let (mut parts, body) = request.into_parts();
        drop_framing_headers(&mut parts.headers);
        let response = self.client.request(Request::from_parts(parts, Full::new(body))).await.map_err(|e| failed(chain(&e)))?;
        let (parts, mut body) = response.into_parts();
        let mut received = BytesMut::new();
        while let Some(frame) = body.frame().await {
            let Ok(data) = frame.map_err(|e| failed(chain(&e)))?.into_data() else { continue };
            if received.len() + data.len() > max_body {
                return Err(OutboundError::BodyTooLarge { url, limit: max_body });
            }
            if !budget.take(data.len()) {
                return Err(OutboundError::BudgetSpent { url, limit: budget.limit });
            }
            received.extend_from_slice(&data);
        }
        let body = received.freeze();
        Ok(GuestResponse { status: parts.status, headers: parts.headers, body })
    }
}

/// An error and its sources on one line: hyper's own message is often just
/// "client error (Connect)".
fn chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// What one site may reach, with the node's client and resolver.
#[derive(Clone)]
pub struct SiteNet {
    pub net: Arc<Net>,
    pub allow: Arc<AllowList>,
}
