//! Outgoing HTTP requests (`hostcall_req_create`, `hostcall_req_send`, ...).
//! The node only lets a site call the hosts on its allow-list
//! (`outbound_hosts`); any other host fails ([`Error::Create`] on this
//! node, which checks when the request is created). Requests count against
//! the incoming request's wall-clock limit.

use std::fmt;
use std::task::Poll;

use http::{HeaderValue, StatusCode};

use crate::handler::{Response, read_headers};
use crate::mem::{self, out_bytes};
use crate::sys::{self, HANDLE_ERROR, HANDLE_NOT_READY, STATUS_OK};

/// Why an outgoing request failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Error {
    /// The host refused to create the request: a URL that is not
    /// absolute, a method it does not accept, or a host outside the
    /// site's allow-list.
    Create,
    /// The host refused a header (name or value) or the body.
    Invalid,
    /// Sending failed: a host outside the site's allow-list, no connection,
    /// an error on the way, or the time limit.
    Send,
    /// The host answered with a status code outside 100..=999.
    Status(i32),
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Create => f.write_str("the host refused to create the request (method, URL, or a host not allowed)"),
            Error::Invalid => f.write_str("the host refused a header or the body of the request"),
            Error::Send => f.write_str("the request could not be sent or got no response"),
            Error::Status(code) => write!(f, "the response has an invalid status code {code}"),
        }
    }
}

impl std::error::Error for Error {}

/// Sends `request` (its URI must be absolute: `http://host/path`) and waits
/// for the whole response.
pub fn send<B: AsRef<[u8]>>(request: http::Request<B>) -> Result<Response, Error> {
    let handle = create(&request)?;
    // SAFETY: a handle from `create`; the host consumes it.
    received(unsafe { sys::hostcall_req_send(handle) })
}

/// `GET url`.
pub fn get(url: &str) -> Result<Response, Error> {
    let handle = create_raw("GET", url)?;
    // SAFETY: a handle from `create_raw`; the host consumes it.
    received(unsafe { sys::hostcall_req_send(handle) })
}

/// Starts sending `request` and returns at once; see [`Pending`] and
/// [`select`].
pub fn send_async<B: AsRef<[u8]>>(request: http::Request<B>) -> Result<Pending, Error> {
    let handle = create(&request)?;
    // SAFETY: a handle from `create`; the host consumes it.
    match unsafe { sys::hostcall_req_send_async(handle) } {
        HANDLE_ERROR => Err(Error::Send),
        handle => Ok(Pending { handle, done: false }),
    }
}

/// A request in flight.
#[derive(Debug)]
pub struct Pending {
    handle: i32,
    done: bool,
}

impl Pending {
    /// The host's handle for this request.
    pub fn handle(&self) -> i32 {
        self.handle
    }

    /// Whether the response (or the error) was already taken.
    pub fn is_done(&self) -> bool {
        self.done
    }

    /// Checks without blocking. After `Ready` the request is finished:
    /// polling it again panics.
    pub fn poll(&mut self) -> Poll<Result<Response, Error>> {
        assert!(!self.done, "Pending::poll after the request finished");
        // SAFETY: a live pending handle.
        match unsafe { sys::hostcall_pending_req_poll(self.handle) } {
            HANDLE_NOT_READY => Poll::Pending,
            resp => {
                self.done = true;
                Poll::Ready(received(resp))
            }
        }
    }

    /// Waits for the response.
    pub fn wait(self) -> Result<Response, Error> {
        assert!(!self.done, "Pending::wait after the request finished");
        // SAFETY: a live pending handle; the host consumes it.
        received(unsafe { sys::hostcall_pending_req_wait(self.handle) })
    }
}

/// Waits for the first of the unfinished requests in `pending` to finish
/// and returns its index and outcome; that one is then done, the others
/// stay in flight. `None` if every request in `pending` is done.
pub fn select(pending: &mut [Pending]) -> Option<(usize, Result<Response, Error>)> {
    let handles: Vec<i32> = pending.iter().filter(|p| !p.done).map(|p| p.handle).collect();
    if handles.is_empty() {
        return None;
    }
    let mut finished = HANDLE_ERROR;
    // SAFETY: live pending handles and a valid out-pointer.
    let resp = unsafe { sys::hostcall_pending_req_select(handles.as_ptr(), handles.len(), &mut finished) };
    match pending.iter().position(|p| !p.done && p.handle == finished) {
        Some(index) => {
            pending[index].done = true;
            Some((index, received(resp)))
        }
        // The host refused the call as a whole (say, more handles than it
        // takes at once): wait for the first unfinished request alone.
        None => {
            let index = pending.iter().position(|p| !p.done)?;
            pending[index].done = true;
            // SAFETY: a live pending handle; the host consumes it.
            Some((index, received(unsafe { sys::hostcall_pending_req_wait(pending[index].handle) })))
        }
    }
}

/// A host request with the method, URI, headers and body of `request`.
fn create<B: AsRef<[u8]>>(request: &http::Request<B>) -> Result<i32, Error> {
    let handle = create_raw(request.method().as_str(), &request.uri().to_string())?;
    for name in request.headers().keys() {
        let values = mem::slices(request.headers().get_all(name).iter().map(HeaderValue::as_bytes));
        let name = name.as_str();
        // SAFETY: live buffers, read by the host.
        let status = unsafe { sys::hostcall_req_set_header(handle, name.as_ptr(), name.len(), values.as_ptr(), values.len()) };
        if status != STATUS_OK {
            return Err(Error::Invalid);
        }
    }
    let body = request.body().as_ref();
    // SAFETY: a live buffer, read by the host.
    if !body.is_empty() && unsafe { sys::hostcall_req_set_body(handle, body.as_ptr(), body.len()) } != STATUS_OK {
        return Err(Error::Invalid);
    }
    Ok(handle)
}

fn create_raw(method: &str, url: &str) -> Result<i32, Error> {
    // SAFETY: live buffers, read by the host.
    match unsafe { sys::hostcall_req_create(method.as_ptr(), method.len(), url.as_ptr(), url.len()) } {
        HANDLE_ERROR => Err(Error::Create),
        handle => Ok(handle),
    }
}

/// Reads a received response: status, headers, body.
fn received(resp: i32) -> Result<Response, Error> {
    if resp < 0 {
        return Err(Error::Send);
    }
    // SAFETY (all calls): a response handle from the host and valid
    // out-pointers; the host writes blocks from our allocator.
    let code = unsafe { sys::hostcall_resp_get_response_code(resp) };
    let status = u16::try_from(code).ok().and_then(|code| StatusCode::from_u16(code).ok()).ok_or(Error::Status(code))?;
    let headers = read_headers(
        |p, c| unsafe { sys::hostcall_resp_get_headers(p, c, resp) },
        |p, c, name| unsafe { sys::hostcall_resp_get_header(p, c, resp, name.as_ptr(), name.len()) },
    );
    let body = out_bytes(|p, l| unsafe { sys::hostcall_resp_get_body(p, l, resp) });
    let mut response = http::Response::new(body);
    *response.status_mut() = status;
    *response.headers_mut() = headers;
    Ok(response)
}
