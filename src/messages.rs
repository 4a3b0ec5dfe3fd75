//! The messages every executor exchanges with the front end: the request a
//! guest is given and the response it answers with. They know nothing of
//! wasm, sites or ABIs.

use std::net::IpAddr;

use bytes::Bytes;
use http::header::{CONNECTION, CONTENT_LENGTH, HeaderName, TRANSFER_ENCODING};
use http::{HeaderMap, HeaderValue, Method, StatusCode, Uri};

/// Headers that carry the client's address, set by the node whatever the
/// client sent: `x-terrafirma-client-ip`, and for guests written for
/// Fastly's edge, `fastly-client-ip` and `x-fastly-client-ip` (Terrarium's
/// throttle template reads the latter first).
pub const CLIENT_IP_HEADERS: [HeaderName; 3] = [
    HeaderName::from_static("x-terrafirma-client-ip"),
    HeaderName::from_static("fastly-client-ip"),
    HeaderName::from_static("x-fastly-client-ip"),
];

/// An incoming request as every guest sees it.
#[derive(Debug, Clone)]
pub struct GuestRequest {
    pub method: Method,
    /// The request target as the client sent it (path and query).
    pub uri: Uri,
    /// The client's headers, with the client-address headers set by the node.
    pub headers: HeaderMap,
    pub body: Bytes,
    /// Set by the node, never taken from the client.
    pub client_ip: IpAddr,
    /// How many leading bytes of the path name the module (`/hello.wasm`);
    /// 0 when the site's `index` module serves it. CGI's `SCRIPT_NAME`.
    pub script_len: usize,
}

impl GuestRequest {
    /// A request from `client_ip`: whatever the client sent in the
    /// `CLIENT_IP_HEADERS` is replaced by the node's own value, so that no
    /// executor can show a guest an address the client chose.
    pub fn new(method: Method, uri: Uri, mut headers: HeaderMap, body: Bytes, client_ip: IpAddr, script_len: usize) -> GuestRequest {
        let address = HeaderValue::try_from(client_ip.to_string()).expect("an IP address is a valid header value");
        for name in &CLIENT_IP_HEADERS {
            headers.insert(name.clone(), address.clone());
        }
        GuestRequest { method, uri, headers, body, client_ip, script_len }
    }

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

impl Default for GuestResponse {
    fn default() -> Self {
        GuestResponse { status: StatusCode::OK, headers: HeaderMap::new(), body: Bytes::new() }
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_client_cannot_choose_its_address_headers() {
        let mut headers = HeaderMap::new();
        headers.append("x-fastly-client-ip", HeaderValue::from_static("6.6.6.6"));
        headers.append("X-Terrafirma-Client-IP", HeaderValue::from_static("6.6.6.6"));
        headers.append("x-terrafirma-client-ip", HeaderValue::from_static("7.7.7.7"));
        let ip: IpAddr = "10.1.2.3".parse().unwrap();
        let request = GuestRequest::new(Method::GET, Uri::from_static("/"), headers, Bytes::new(), ip, 0);
        for name in &CLIENT_IP_HEADERS {
            let values: Vec<_> = request.headers.get_all(name).iter().collect();
            assert_eq!(values, ["10.1.2.3"], "{name}");
        }
    }
}
