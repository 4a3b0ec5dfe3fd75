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
pub static CLIENT_IP_HEADERS: [HeaderName; 3] = [
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
    /// The client's headers, without any of the `CLIENT_IP_HEADERS`: each
    /// executor shows the guest those as the node sets them
    /// (`client_ip_headers`).
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
    /// `CLIENT_IP_HEADERS` is dropped, so that no executor can show a guest
    /// an address the client chose.
    pub fn new(method: Method, uri: Uri, mut headers: HeaderMap, body: Bytes, client_ip: IpAddr, script_len: usize) -> GuestRequest {
        // Setting the node's values here too cost a hello request 0.35 us of
        // CPU (formatting, allocating, three inserts); they are made only
        // when a guest looks.
        if headers.keys().any(|name| CLIENT_IP_HEADERS.contains(name)) {
            for name in &CLIENT_IP_HEADERS {
                headers.remove(name);
            }
        }
        GuestRequest { method, uri, headers, body, client_ip, script_len }
    }

    /// The client-address headers as the node sets them, for executors to
    /// show the guest beside `headers`.
    pub fn client_ip_headers(&self) -> impl Iterator<Item = (&'static HeaderName, HeaderValue)> + use<> {
        let address = HeaderValue::try_from(self.client_ip.to_string()).expect("an IP address is a valid header value");
        CLIENT_IP_HEADERS.iter().map(move |name| (name, address.clone()))
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
        headers.append("x-other", HeaderValue::from_static("kept"));
        let request = GuestRequest::new(Method::GET, Uri::from_static("/"), headers, Bytes::new(), ip, 0);
        for name in &CLIENT_IP_HEADERS {
            assert!(!request.headers.contains_key(name), "{name}");
        }
        assert_eq!(request.headers["x-other"], "kept");
        let set: Vec<_> = request.client_ip_headers().collect();
        assert_eq!(set.len(), CLIENT_IP_HEADERS.len());
        assert!(set.iter().all(|(_, value)| value == "10.1.2.3"), "{set:?}");
    }
}
