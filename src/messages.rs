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
    /// For log lines.
    pub id: RequestId,
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
        GuestRequest { method, uri, headers, body, client_ip, script_len, id: RequestId::None }
    }

    pub fn with_id(self, id: RequestId) -> GuestRequest {
        GuestRequest { id, ..self }
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

/// The response header carrying a request's id.
pub static REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// Longest client-chosen request id kept.
const MAX_REQUEST_ID: usize = 128;

/// A request's id: the client's `x-request-id` when it is well formed (1 to
/// 128 characters of letters, digits and `-_.:/+=@`), else one the node
/// makes: a per-process random prefix and a counter, unique for the node's
/// life, written out only when a log line or the response needs it.
#[derive(Debug, Clone, Default)]
pub enum RequestId {
    /// Outside a request (a prewarmed instance), shown as `-`.
    #[default]
    None,
    Client(HeaderValue),
    Node(u64),
}

impl RequestId {
    /// The id of a request with `headers`.
    pub fn assign(headers: &HeaderMap) -> RequestId {
        use std::sync::atomic::{AtomicU64, Ordering};
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        match headers.get(&REQUEST_ID) {
            Some(value) if well_formed_request_id(value.as_bytes()) => RequestId::Client(value.clone()),
            _ => RequestId::Node(COUNTER.fetch_add(1, Ordering::Relaxed)),
        }
    }

    /// The id as a header value.
    pub fn header_value(&self) -> HeaderValue {
        match self {
            RequestId::Client(value) => value.clone(),
            RequestId::Node(n) => {
                let text = node_id(*n);
                // SAFETY: hex digits and `-`, all visible ASCII.
                unsafe { HeaderValue::from_maybe_shared_unchecked(Bytes::copy_from_slice(&text)) }
            }
            RequestId::None => HeaderValue::from_static("-"),
        }
    }

    /// Appends the id's text, without the formatting machinery (this is on
    /// every response).
    pub fn write_to(&self, out: &mut bytes::BytesMut) {
        match self {
            RequestId::None => out.extend_from_slice(b"-"),
            RequestId::Client(value) => out.extend_from_slice(value.as_bytes()),
            RequestId::Node(n) => out.extend_from_slice(&node_id(*n)),
        }
    }
}

/// A node-made id: this process's random prefix, `-`, the request's number,
/// in hex (8 and 12 digits), written into a buffer on the stack.
fn node_id(n: u64) -> [u8; 21] {
    use std::sync::OnceLock;
    static PREFIX: OnceLock<u32> = OnceLock::new();
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let prefix = *PREFIX.get_or_init(rand::random);
    let mut text = [b'-'; 21];
    for (i, digit) in text[..8].iter_mut().enumerate() {
        *digit = HEX[(prefix >> ((7 - i) * 4)) as usize & 15];
    }
    for (i, digit) in text[9..].iter_mut().enumerate() {
        *digit = HEX[(n >> ((11 - i) * 4)) as usize & 15];
    }
    text
}

impl std::fmt::Display for RequestId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut text = bytes::BytesMut::new();
        self.write_to(&mut text);
        // Well formed ids are ASCII.
        f.write_str(std::str::from_utf8(&text).unwrap_or("?"))
    }
}

fn well_formed_request_id(id: &[u8]) -> bool {
    (1..=MAX_REQUEST_ID).contains(&id.len()) && id.iter().all(|b| b.is_ascii_alphanumeric() || b"-_.:/+=@".contains(b))
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
    #[test]
    fn request_ids_from_clients_are_kept_only_when_well_formed() {
        let mut headers = HeaderMap::new();
        headers.insert(&REQUEST_ID, HeaderValue::from_static("abc-123_x.y:z"));
        assert_eq!(RequestId::assign(&headers).to_string(), "abc-123_x.y:z");
        for bad in ["", "has space", "semi;colon", &"x".repeat(129)] {
            let mut headers = HeaderMap::new();
            headers.insert(&REQUEST_ID, HeaderValue::from_str(bad).unwrap());
            let id = RequestId::assign(&headers);
            assert!(matches!(id, RequestId::Node(_)), "{bad:?} kept");
            assert_eq!(id.header_value(), id.to_string().as_str());
        }
        let (a, b) = (RequestId::assign(&HeaderMap::new()), RequestId::assign(&HeaderMap::new()));
        assert_ne!(a.to_string(), b.to_string());
        assert_eq!(RequestId::None.to_string(), "-");
        assert_eq!(RequestId::None.header_value(), "-");
    }

    #[test]
    fn a_node_made_id_is_the_process_prefix_and_the_request_number_in_hex() {
        let (first, last) = (RequestId::Node(0x1a2b), RequestId::Node(u64::MAX));
        let (first, last) = (first.header_value(), last.to_string());
        let first = first.to_str().unwrap();
        assert_eq!(first.len(), 21, "{first}");
        assert!(first[..8].bytes().all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()), "{first}");
        assert_eq!(&first[8..], "-000000001a2b");
        // The number wraps into its 12 digits; the prefix is the same.
        assert_eq!(last, format!("{}-ffffffffffff", &first[..8]));
        assert!(well_formed_request_id(first.as_bytes()));
    }
}
