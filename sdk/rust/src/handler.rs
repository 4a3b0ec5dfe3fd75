//! The entry point: reads the incoming request (handle 0), calls the
//! handler, writes what it returns to the outgoing response (handle 0).

use std::fmt::Display;

use http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, header};

use crate::mem::{self, out_bytes, out_list};
use crate::sys::{self, REQUEST_INCOMING, RESPONSE_OUTGOING};

/// The incoming request: method, target (path and query, as the client sent
/// it) as the URI, headers with all their values, and the whole body.
pub type Request = http::Request<Vec<u8>>;

/// The response a handler returns.
pub type Response = http::Response<Vec<u8>>;

/// What a handler may return.
pub trait IntoResponse {
    fn into_response(self) -> Response;
}

impl<B: Into<Vec<u8>>> IntoResponse for http::Response<B> {
    fn into_response(self) -> Response {
        self.map(Into::into)
    }
}

/// `Err(e)` becomes a `500` whose body is `e` and a newline (also logged).
impl<T: IntoResponse, E: Display> IntoResponse for Result<T, E> {
    fn into_response(self) -> Response {
        match self {
            Ok(response) => response.into_response(),
            Err(error) => {
                let message = format!("{error}\n");
                crate::debug(&message);
                text(StatusCode::INTERNAL_SERVER_ERROR, message)
            }
        }
    }
}

/// A `text/plain` response.
pub fn text(status: StatusCode, body: impl Into<Vec<u8>>) -> Response {
    let mut response = http::Response::new(body.into());
    *response.status_mut() = status;
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
    response
}

/// Runs one request through `handler`: installs a panic hook that hands the
/// message to the host, registers the allocator, reads the request, writes
/// the response. Call it from the exported `run`, or let [`crate::main!`]
/// write that export.
pub fn run<H, R>(handler: H)
where
    H: FnOnce(Request) -> R,
    R: IntoResponse,
{
    std::panic::set_hook(Box::new(|info| {
        // One line, message first: the node shows the client the first line.
        let payload = info.payload();
        let text = payload
            .downcast_ref::<&str>()
            .copied()
            .or_else(|| payload.downcast_ref::<String>().map(String::as_str))
            .unwrap_or("Box<dyn Any>");
        let message = match info.location() {
            Some(at) => format!("{text} ({}:{}:{})", at.file(), at.line(), at.column()),
            None => text.to_owned(),
        };
        // SAFETY: a valid buffer; the host copies it.
        unsafe { sys::hostcall_panic_hook(message.as_ptr(), message.len()) }
    }));
    mem::register_allocator();
    let response = match incoming() {
        Ok(request) => handler(request).into_response(),
        Err(error) => text(StatusCode::BAD_REQUEST, format!("bad request: {error}\n")),
    };
    send(&response);
}

/// Reads the incoming request; [`run`] does it for the handler. The
/// allocator must be registered first ([`crate::mem::register_allocator`]).
pub fn incoming() -> Result<Request, http::Error> {
    // SAFETY (all calls): valid out-pointers; the host writes blocks from
    // the registered allocator.
    let method = out_bytes(|p, l| unsafe { sys::hostcall_req_get_method(p, l, REQUEST_INCOMING) });
    let target = out_bytes(|p, l| unsafe { sys::hostcall_req_get_path(p, l, REQUEST_INCOMING) });
    let body = out_bytes(|p, l| unsafe { sys::hostcall_req_get_body(p, l, REQUEST_INCOMING) });
    let mut request = http::Request::builder().method(Method::from_bytes(&method)?).uri(target).body(body)?;
    *request.headers_mut() = read_headers(
        |p, c| unsafe { sys::hostcall_req_get_headers(p, c, REQUEST_INCOMING) },
        |p, c, name| unsafe { sys::hostcall_req_get_header(p, c, REQUEST_INCOMING, name.as_ptr(), name.len()) },
    );
    Ok(request)
}

/// All headers of a request or a received response, from its
/// `get_headers` and `get_header` hostcalls. Names or values that `http`
/// rejects are skipped (the host never hands such out).
pub(crate) fn read_headers(
    names: impl FnOnce(*mut *mut sys::GuestSlice, *mut usize),
    values: impl Fn(*mut *mut sys::GuestSlice, *mut usize, &[u8]),
) -> HeaderMap {
    let mut headers = HeaderMap::new();
    for name in out_list(names) {
        let Ok(header_name) = HeaderName::from_bytes(&name) else { continue };
        for value in out_list(|p, c| values(p, c, &name)) {
            if let Ok(value) = HeaderValue::from_bytes(&value) {
                headers.append(header_name.clone(), value);
            }
        }
    }
    headers
}

/// Writes `response` to the outgoing response: status, each header name
/// with all its values in one call, body.
pub fn send(response: &Response) {
    // SAFETY (all calls): pointers and lengths of live buffers.
    unsafe {
        sys::hostcall_resp_set_response_code(RESPONSE_OUTGOING, i32::from(response.status().as_u16()));
        for name in response.headers().keys() {
            let values = mem::slices(response.headers().get_all(name).iter().map(HeaderValue::as_bytes));
            let name = name.as_str();
            sys::hostcall_resp_set_header(RESPONSE_OUTGOING, name.as_ptr(), name.len(), values.as_ptr(), values.len());
        }
        let body = response.body();
        sys::hostcall_resp_set_body(RESPONSE_OUTGOING, body.as_ptr(), body.len());
    }
}
