//! Outbound HTTP: `hostcall_req_create/set_header/set_body/send/send_async`,
//! `hostcall_pending_req_poll/wait/select` and `hostcall_resp_get_*`.
//!
//! A URL must pass the site's allow-list when the request is created;
//! anything refused or failed answers `-1` and leaves a log line. Every send
//! runs within the incoming request's wall-clock limit, and whatever is
//! still in flight when the request ends is cancelled with it.

use std::future::{Future, poll_fn};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};

use bytes::Bytes;
use http::{Method, Request, StatusCode};
use tokio::task::{JoinError, JoinHandle};
use tokio::time::{Instant, timeout_at};
use wasmtime::{Caller, Linker};

use super::memory::{hand_out, hand_out_list, memory, read, read_header, read_i32s, slice, write_i32};
use super::{GuestTrap, Handle, HostcallError, HostcallResult, HostcallStatus, KV_NOT_SAVED, TerrafirmaView, headers};
use crate::messages::GuestResponse;
use crate::outbound::{ByteBudget, MAX_OUTBOUND_REQUESTS, MAX_URL_BYTES, OutboundError, RECEIVED_BODIES_FACTOR, SiteNet, UrlError};
use crate::sandbox::{CallMode, DeadlineExceeded};

/// One kind of handle. Handles count up from 1 (0 is the incoming request
/// or the outgoing response) and are never reused within a request, so a
/// stale handle can only be invalid.
struct Slots<T> {
    items: Vec<Option<T>>,
}

impl<T> Slots<T> {
    const fn new() -> Self {
        Slots { items: Vec::new() }
    }

    fn insert(&mut self, item: T) -> Handle {
        self.items.push(Some(item));
        Handle(self.items.len() as i32)
    }

    fn index(&self, handle: i32) -> Option<usize> {
        let index = usize::try_from(handle.checked_sub(1)?).ok()?;
        (index < self.items.len()).then_some(index)
    }

    fn get(&self, handle: i32) -> Option<&T> {
        self.items[self.index(handle)?].as_ref()
    }

    fn get_mut(&mut self, handle: i32) -> Option<&mut T> {
        let index = self.index(handle)?;
        self.items[index].as_mut()
    }

    fn take(&mut self, handle: i32) -> Option<T> {
        let index = self.index(handle)?;
        self.items[index].take()
    }
}

/// A request sent in the background; dropping it cancels it.
struct Task(JoinHandle<Result<GuestResponse, OutboundError>>);

impl Drop for Task {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl Future for Task {
    type Output = Result<Result<GuestResponse, OutboundError>, JoinError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        Pin::new(&mut self.0).poll(cx)
    }
}

/// The outbound state of one request.
pub struct Outbound {
    /// What the site may reach; `None` where nothing may be (`terrafirma run`).
    net: Option<SiteNet>,
    /// Requests being built.
    requests: Slots<Request<Bytes>>,
    /// Responses received.
    responses: Slots<GuestResponse>,
    pending: Slots<Task>,
    created: usize,
    /// What the request's sends may still receive; set on the first send.
    budget: Option<Arc<ByteBudget>>,
}

impl Default for Outbound {
    fn default() -> Self {
        Outbound::new(None)
    }
}

impl Outbound {
    pub fn new(net: Option<SiteNet>) -> Outbound {
        Outbound { net, requests: Slots::new(), responses: Slots::new(), pending: Slots::new(), created: 0, budget: None }
    }

    /// What the site may reach; `None` where nothing may be.
    pub fn net(&self) -> Option<SiteNet> {
        self.net.clone()
    }
}

fn outbound<'a, T: TerrafirmaView>(caller: &'a mut Caller<'_, T>) -> &'a mut Outbound {
    caller.data_mut().session_mut().outbound_mut()
}

/// The limits of one send: each body's cap and the request's shared budget.
fn body_limits<T: TerrafirmaView>(caller: &mut Caller<'_, T>) -> (usize, Arc<ByteBudget>) {
    let session = caller.data_mut().session_mut();
    let max_body = session.limits().max_response_bytes;
    let budget =
        session.outbound_mut().budget.get_or_insert_with(|| Arc::new(ByteBudget::new(max_body.saturating_mul(RECEIVED_BODIES_FACTOR))));
    (max_body, budget.clone())
}

fn deadline<T: TerrafirmaView>(caller: &Caller<'_, T>) -> Instant {
    Instant::from_std(caller.data().deadline())
}

/// Sends `request` within the request's deadline.
fn send<T: TerrafirmaView>(
    caller: &mut Caller<'_, T>,
    net: SiteNet,
    request: Request<Bytes>,
) -> impl Future<Output = Result<GuestResponse, OutboundError>> + use<T> {
    let deadline = deadline(caller);
    let (max_body, budget) = body_limits(caller);
    async move { timeout_at(deadline, net.net.send(request, max_body, &budget)).await.unwrap_or(Err(OutboundError::Deadline)) }
}

/// A finished send as the guest sees it: a response handle, or `-1`. Past
/// the deadline the guest's request ends with a timeout.
fn received<T: TerrafirmaView>(
    caller: &mut Caller<'_, T>,
    result: Result<Result<GuestResponse, OutboundError>, JoinError>,
) -> HostcallResult<Handle> {
    match result {
        Ok(Ok(response)) => Ok(outbound(caller).responses.insert(response)),
        Ok(Err(OutboundError::Deadline)) => Err(DeadlineExceeded.into()),
        Ok(Err(error)) => Err(HostcallError::refused(error)),
        Err(error) => Err(HostcallError::refused(format!("the request task failed: {error}"))),
    }
}

/// Takes a built request for sending. It goes out only once the KV writes
/// the guest may have seen are durable.
fn take_request<T: TerrafirmaView>(caller: &mut Caller<'_, T>, req: i32) -> HostcallResult<(SiteNet, Request<Bytes>)> {
    if caller.data_mut().session_mut().flush_kv().is_err() {
        return Err(HostcallError::refused(KV_NOT_SAVED));
    }
    let outbound = outbound(caller);
    match (outbound.net.clone(), outbound.requests.take(req)) {
        (Some(net), Some(request)) => Ok((net, request)),
        _ => Err(HostcallError::refused(format!("invalid request handle {req}"))),
    }
}

/// The response a `hostcall_resp_get_*` reads: one received, or (handle 0)
/// the outgoing response as built so far.
fn response<'a, T: TerrafirmaView>(caller: &'a Caller<'_, T>, handle: i32) -> Result<&'a GuestResponse, GuestTrap> {
    let session = caller.data().session();
    match handle {
        0 => Ok(session.response()),
        _ => session.outbound().responses.get(handle).ok_or(GuestTrap::BadHandle(handle)),
    }
}

fn hostcall_req_create<T: TerrafirmaView>(
    caller: &mut Caller<'_, T>,
    method_ptr: i32,
    method_len: i32,
    url_ptr: i32,
    url_len: i32,
) -> HostcallResult<Handle> {
    let method = read(caller, method_ptr, method_len)?;
    let url = {
        let memory = memory(caller)?;
        let url = slice(memory.data(&*caller), url_ptr, url_len)?;
        if url.len() > MAX_URL_BYTES {
            return Err(HostcallError::refused(UrlError::TooLong(url.len())));
        }
        url.to_vec()
    };
    let outbound = outbound(caller);
    let Some(net) = &outbound.net else { return Err(HostcallError::refused("outbound requests are not available here")) };
    if outbound.created >= MAX_OUTBOUND_REQUESTS {
        return Err(HostcallError::refused(format!("over the limit of {MAX_OUTBOUND_REQUESTS} outbound requests per request")));
    }
    let Ok(method) = Method::from_bytes(&method) else {
        return Err(HostcallError::refused(format!("invalid method {:?}", String::from_utf8_lossy(&method))));
    };
    let uri = net.allow.check_url(&url).map_err(HostcallError::refused)?;
    let mut request = Request::new(Bytes::new());
    *request.method_mut() = method;
    *request.uri_mut() = uri;
    outbound.created += 1;
    Ok(outbound.requests.insert(request))
}

fn hostcall_req_set_header<T: TerrafirmaView>(
    caller: &mut Caller<'_, T>,
    req: i32,
    name_ptr: i32,
    name_len: i32,
    values_ptr: i32,
    values_count: i32,
) -> HostcallResult<HostcallStatus> {
    let (name, values) = read_header(caller, (name_ptr, name_len), (values_ptr, values_count))?;
    let request = outbound(caller).requests.get_mut(req).ok_or(HostcallError::Invalid)?;
    Ok(headers::set(request.headers_mut(), &name, values))
}

fn hostcall_req_set_body<T: TerrafirmaView>(caller: &mut Caller<'_, T>, req: i32, ptr: i32, len: i32) -> HostcallResult<HostcallStatus> {
    let limit = caller.data().session().limits().max_request_bytes;
    if usize::try_from(len).is_ok_and(|len| len > limit) {
        return Err(HostcallError::refused(format!("body of {len} bytes is over the outbound limit of {limit} bytes")));
    }
    let body = read(caller, ptr, len)?;
    let request = outbound(caller).requests.get_mut(req).ok_or(HostcallError::Invalid)?;
    *request.body_mut() = Bytes::from(body);
    Ok(HostcallStatus::Ok)
}

fn hostcall_req_send_async<T: TerrafirmaView>(caller: &mut Caller<'_, T>, req: i32) -> HostcallResult<Handle> {
    let (net, request) = take_request(caller, req)?;
    let task = Task(tokio::spawn(send(caller, net, request)));
    Ok(outbound(caller).pending.insert(task))
}

fn hostcall_pending_req_poll<T: TerrafirmaView>(caller: &mut Caller<'_, T>, pending: i32) -> HostcallResult<Handle> {
    let outbound = outbound(caller);
    let task = outbound.pending.get_mut(pending).ok_or_else(|| HostcallError::refused(format!("invalid pending handle {pending}")))?;
    match Pin::new(task).poll(&mut Context::from_waker(Waker::noop())) {
        Poll::Pending => Ok(Handle::NOT_READY),
        Poll::Ready(result) => {
            outbound.pending.take(pending);
            received(caller, result)
        }
    }
}

async fn hostcall_req_send<T: TerrafirmaView>(caller: &mut Caller<'_, T>, req: i32) -> HostcallResult<Handle> {
    let (net, request) = take_request(caller, req)?;
    let result = send(caller, net, request).await;
    received(caller, Ok(result))
}

async fn hostcall_pending_req_wait<T: TerrafirmaView>(caller: &mut Caller<'_, T>, pending: i32) -> HostcallResult<Handle> {
    let task = outbound(caller).pending.take(pending).ok_or_else(|| HostcallError::refused(format!("invalid pending handle {pending}")))?;
    let result = timeout_at(deadline(caller), task).await.map_err(|_| DeadlineExceeded)?;
    received(caller, result)
}

async fn hostcall_pending_req_select<T: TerrafirmaView>(
    caller: &mut Caller<'_, T>,
    pendings_ptr: i32,
    count: i32,
    out_ptr: i32,
) -> HostcallResult<Handle> {
    if !(1..=MAX_OUTBOUND_REQUESTS as i32).contains(&count) {
        return Err(HostcallError::refused(format!("{count} handles: expected 1 to {MAX_OUTBOUND_REQUESTS}")));
    }
    let handles = read_i32s(caller, pendings_ptr, count)?;
    // Checks the out pointer before waiting, and leaves -1 there on failure.
    write_i32(caller, out_ptr, -1)?;
    if let Some(bad) = handles.iter().find(|&&h| caller.data().session().outbound().pending.get(h).is_none()) {
        return Err(HostcallError::refused(format!("invalid pending handle {bad}")));
    }
    let deadline = deadline(caller);
    let pending = &mut outbound(caller).pending;
    let first_done = poll_fn(|cx| {
        for &handle in &handles {
            let task = pending.get_mut(handle).expect("checked above");
            if let Poll::Ready(result) = Pin::new(task).poll(cx) {
                return Poll::Ready((handle, result));
            }
        }
        Poll::Pending
    });
    let (handle, result) = timeout_at(deadline, first_done).await.map_err(|_| DeadlineExceeded)?;
    outbound(caller).pending.take(handle);
    write_i32(caller, out_ptr, handle)?;
    received(caller, result)
}

fn hostcall_resp_get_response_code<T: TerrafirmaView>(caller: &mut Caller<'_, T>, resp: i32) -> HostcallResult<StatusCode> {
    response(caller, resp).map(|response| response.status).map_err(HostcallError::refused)
}

async fn hostcall_resp_get_headers<T: TerrafirmaView>(
    caller: &mut Caller<'_, T>,
    names_p: i32,
    count_p: i32,
    resp: i32,
) -> HostcallResult<()> {
    let names: Vec<Bytes> = headers::names(&response(caller, resp)?.headers).collect();
    hand_out_list(caller, names_p, count_p, &names).await
}

async fn hostcall_resp_get_header<T: TerrafirmaView>(
    caller: &mut Caller<'_, T>,
    values_p: i32,
    count_p: i32,
    resp: i32,
    name_ptr: i32,
    name_len: i32,
) -> HostcallResult<()> {
    let name = read(caller, name_ptr, name_len)?;
    let values = headers::values(&response(caller, resp)?.headers, &name);
    hand_out_list(caller, values_p, count_p, &values).await
}

async fn hostcall_resp_get_body<T: TerrafirmaView>(caller: &mut Caller<'_, T>, ptr_p: i32, len_p: i32, resp: i32) -> HostcallResult<()> {
    let body = response(caller, resp)?.body.clone();
    hand_out(caller, ptr_p, len_p, &body).await
}

/// Building, polling and reading are linked in both modes; sending and
/// waiting (`req_send`, `pending_req_wait`, `pending_req_select`) only for
/// guests on fibers.
pub fn add_to_linker<T: TerrafirmaView>(linker: &mut Linker<T>, mode: CallMode) -> wasmtime::Result<()> {
    plain!(linker, hostcall_req_create(method_ptr: i32, method_len: i32, url_ptr: i32, url_len: i32));
    plain!(linker, hostcall_req_set_header(req: i32, name_ptr: i32, name_len: i32, values_ptr: i32, values_count: i32));
    plain!(linker, hostcall_req_set_body(req: i32, ptr: i32, len: i32));
    plain!(linker, hostcall_req_send_async(req: i32));
    plain!(linker, hostcall_pending_req_poll(pending: i32));
    plain!(linker, hostcall_resp_get_response_code(resp: i32));
    reentrant!(linker, mode, hostcall_resp_get_headers(names_p: i32, count_p: i32, resp: i32));
    reentrant!(linker, mode, hostcall_resp_get_header(values_p: i32, count_p: i32, resp: i32, name_ptr: i32, name_len: i32));
    reentrant!(linker, mode, hostcall_resp_get_body(ptr_p: i32, len_p: i32, resp: i32));
    if mode == CallMode::Fiber {
        waiting!(linker, hostcall_req_send(req: i32));
        waiting!(linker, hostcall_pending_req_wait(pending: i32));
        waiting!(linker, hostcall_pending_req_select(pendings_ptr: i32, count: i32, out_ptr: i32));
    }
    Ok(())
}
