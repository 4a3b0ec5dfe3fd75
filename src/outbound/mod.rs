//! The node's way out to the network, for guests: one pooled hyper client
//! (HTTP and HTTPS through rustls, connections reused), one DNS resolver,
//! and the rules every outgoing call obeys whatever the site allows: the
//! node's admin port is never reached and redirects are never followed.

mod allow;
mod connect;
mod dns;

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http::header::{CONNECTION, CONTENT_LENGTH, TRANSFER_ENCODING};
use http::Request;
use http_body_util::{BodyExt, Full, Limited};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

pub use allow::{AllowList, MAX_URL_BYTES, UrlError};
pub use dns::{DnsError, MAX_QUERY_BYTES, Resolver};

use crate::executor::GuestResponse;
use connect::GuardedConnector;

/// Why an outgoing request failed (the guest sees `-1`; this goes to the log).
#[derive(Debug, thiserror::Error)]
pub enum OutboundError {
    #[error("request to {url} failed: {reason}")]
    Failed { url: String, reason: String },
    #[error("response body from {url} is over the limit of {limit} bytes")]
    BodyTooLarge { url: String, limit: usize },
    #[error("the request's wall-clock limit ended it")]
    Deadline,
}

/// Shared by every site of the node.
pub struct Net {
    client: Client<HttpsConnector<GuardedConnector>, Full<Bytes>>,
    pub resolver: Resolver,
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
        Ok(Arc::new(Net { client, resolver: Resolver::from_system()? }))
    }

    /// Sends one request and reads the whole response, its body capped at
    /// `max_body` bytes. The caller bounds the time it may take. The node
    /// frames the body itself, so framing headers the guest set are dropped.
    pub async fn send(&self, request: Request<Bytes>, max_body: usize) -> Result<GuestResponse, OutboundError> {
        let url = request.uri().to_string();
        let failed = |reason: String| OutboundError::Failed { url: url.clone(), reason };
        let (mut parts, body) = request.into_parts();
        for framing in [CONTENT_LENGTH, TRANSFER_ENCODING, CONNECTION] {
            parts.headers.remove(framing);
        }
        let response = self.client.request(Request::from_parts(parts, Full::new(body))).await.map_err(|e| failed(chain(&e)))?;
        let (parts, body) = response.into_parts();
        let body = match Limited::new(body, max_body).collect().await {
            Ok(collected) => collected.to_bytes(),
            Err(e) if e.is::<http_body_util::LengthLimitError>() => {
                return Err(OutboundError::BodyTooLarge { url, limit: max_body });
            }
            Err(e) => return Err(failed(chain(&*e))),
        };
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
