//! Outbound HTTP: `hostcall_req_create/set_header/set_body/send/send_async`,
//! `hostcall_pending_req_poll/wait/select` and `hostcall_resp_get_*`.
//!
//! A URL must pass the site's allow-list when the request is created;
//! anything refused or failed answers `-1` and leaves a log line. Every send
//! runs within the incoming request's wall-clock limit, and whatever is
//! still in flight when the request ends is cancelled with it.

use std::fmt::Display;
use std::future::{Future, poll_fn};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};

use bytes::Bytes;
use http::{Method, Request};
use tokio::task::{JoinError, JoinHandle};
use tokio::time::timeout_at;
use wasmtime::{Caller, Linker};

use super::memory::{hand_out, hand_out_list, memory, read, read_slices, slice, write_i32};
use super::{HostcallError, HostcallStatus, KV_NOT_SAVED, MODULE, deadline, headers, log_failure};
use crate::executor::{CallMode, DeadlineExceeded, GuestResponse, Sandbox};
use crate::outbound::{ByteBudget, MAX_URL_BYTES, OutboundError, SiteNet, UrlError};

/// Most requests a guest may create while serving one incoming request.
pub const MAX_OUTBOUND_REQUESTS: usize = 64;
/// Response bytes one incoming request may receive in all, in units of the
/// site's `max_response_bytes` (which also caps each body).
pub const RECEIVED_BODIES_FACTOR: usize = 4;

/// The handle results of the ABI.
const FAILED: i32 = -1;
const NOT_READY: i32 = -2;

/// One kind of handle. Handles count up from `first` and are never reused
/// within a request, so a stale handle can only be invalid.
struct Slots<T> {
    first: i32,
    items: Vec<Option<T>>,
}

impl<T> Slots<T> {
    const fn new(first: i32) -> Self {
        Slots { first, items: Vec::new() }
    }

    fn insert(&mut self, item: T) -> i32 {
        self.items.push(Some(item));
        self.first + self.items.len() as i32 - 1
    }

    fn index(&self, handle: i32) -> Option<usize> {
        let index = usize::try_from(handle.checked_sub(self.first)?).ok()?;
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
    pub net: Option<SiteNet>,
    /// Requests being built (handle 0 is the incoming request).
    requests: Slots<Request<Bytes>>,
    /// Responses received (handle 0 is the outgoing response).
    responses: Slots<GuestResponse>,
    pending: Slots<Task>,
    created: usize,
    /// What the request's sends may still receive; set on the first send.
    budget: Option<Arc<ByteBudget>>,
}

impl Default for Outbound {
    fn default() -> Self {
        Outbound { net: None, requests: Slots::new(1), responses: Slots::new(1), pending: Slots::new(1), created: 0, budget: None }
    }
}

/// The limits of one send: each body's cap and the request's shared budget.
fn body_limits(caller: &mut Caller<'_, Sandbox>) -> (usize, Arc<ByteBudget>) {
    let session = &mut caller.data_mut().session;
    let max_body = session.max_response_bytes;
    let budget = session.outbound.budget.get_or_insert_with(|| Arc::new(ByteBudget::new(max_body.saturating_mul(RECEIVED_BODIES_FACTOR))));
    (max_body, budget.clone())
}

/// Logs why a call failed and answers `-1`.
fn refuse(caller: &Caller<'_, Sandbox>, call: &'static str, reason: impl Display) -> i32 {
    log_failure(caller, call, reason);
    FAILED
}

/// Sends `request` in the background, within the request's deadline.
fn spawn(caller: &mut Caller<'_, Sandbox>, net: &SiteNet, request: Request<Bytes>) -> Task {
    let (net, deadline) = (net.net.clone(), deadline(caller));
    let (max_body, budget) = body_limits(caller);
    Task(tokio::spawn(
        async move { timeout_at(deadline, net.send(request, max_body, &budget)).await.unwrap_or(Err(OutboundError::Deadline)) },
    ))
}

/// A finished send as the guest sees it: a response handle, or `-1`. Past
/// the deadline the guest's request ends with a timeout.
fn finish(
    caller: &mut Caller<'_, Sandbox>,
    call: &'static str,
    result: Result<Result<GuestResponse, OutboundError>, JoinError>,
) -> wasmtime::Result<i32> {
    match result {
        Ok(Ok(response)) => Ok(caller.data_mut().session.outbound.responses.insert(response)),
        Ok(Err(OutboundError::Deadline)) => Err(DeadlineExceeded.into()),
        Ok(Err(error)) => Ok(refuse(caller, call, error)),
        Err(error) => Ok(refuse(caller, call, format!("the request task failed: {error}"))),
    }
}

/// Takes a built request for sending (`Err`: the answer to give). It goes
/// out only once the KV writes the guest may have seen are durable.
fn take_request(caller: &mut Caller<'_, Sandbox>, call: &'static str, req: i32) -> Result<(SiteNet, Request<Bytes>), i32> {
    if caller.data_mut().session.flush_kv().is_err() {
        return Err(refuse(caller, call, KV_NOT_SAVED));
    }
    let outbound = &mut caller.data_mut().session.outbound;
    match (outbound.net.clone(), outbound.requests.take(req)) {
        (Some(net), Some(request)) => Ok((net, request)),
        _ => Err(refuse(caller, call, format!("invalid request handle {req}"))),
    }
}

/// The response a `hostcall_resp_get_*` reads: one received, or (handle 0)
/// the outgoing response as built so far.
fn response<'a>(caller: &'a Caller<'_, Sandbox>, call: &'static str, handle: i32) -> Result<&'a GuestResponse, HostcallError> {
    let session = &caller.data().session;
    match handle {
        0 => Ok(&session.response),
        _ => session.outbound.responses.get(handle).ok_or(HostcallError::BadHandle { call, handle }),
    }
}

/// Building, polling and reading are linked in both modes; sending and
/// waiting (`req_send`, `pending_req_wait`, `pending_req_select`) only for
/// guests on fibers.
pub fn add_to_linker(linker: &mut Linker<Sandbox>, mode: CallMode) -> wasmtime::Result<()> {
    add_requests(linker)?;
    add_pending(linker)?;
    add_responses(linker, mode)?;
    if mode == CallMode::Fiber {
        add_waiting(linker)?;
    }
    Ok(())
}

fn add_requests(linker: &mut Linker<Sandbox>) -> wasmtime::Result<()> {
    linker.func_wrap(
        MODULE,
        "hostcall_req_create",
        |mut caller: Caller<'_, Sandbox>, method_ptr: i32, method_len: i32, url_ptr: i32, url_len: i32| -> wasmtime::Result<i32> {
            const CALL: &str = "hostcall_req_create";
            let method = read(&caller, method_ptr, method_len, CALL)?;
            let url = {
                let memory = memory(&caller, CALL)?;
                let url = slice(memory.data(&caller), url_ptr, url_len, CALL)?;
                if url.len() > MAX_URL_BYTES {
                    return Ok(refuse(&caller, CALL, UrlError::TooLong(url.len())));
                }
                url.to_vec()
            };
            let outbound = &caller.data().session.outbound;
            let Some(net) = &outbound.net else {
                return Ok(refuse(&caller, CALL, "outbound requests are not available here"));
            };
            if outbound.created >= MAX_OUTBOUND_REQUESTS {
                return Ok(refuse(&caller, CALL, format!("over the limit of {MAX_OUTBOUND_REQUESTS} outbound requests per request")));
            }
            let Ok(method) = Method::from_bytes(&method) else {
                return Ok(refuse(&caller, CALL, format!("invalid method {:?}", String::from_utf8_lossy(&method))));
            };
            let uri = match net.allow.check_url(&url) {
                Ok(uri) => uri,
                Err(error) => return Ok(refuse(&caller, CALL, error)),
            };
            let mut request = Request::new(Bytes::new());
            *request.method_mut() = method;
            *request.uri_mut() = uri;
            let outbound = &mut caller.data_mut().session.outbound;
            outbound.created += 1;
            Ok(outbound.requests.insert(request))
        },
    )?;
    linker.func_wrap(
        MODULE,
        "hostcall_req_set_header",
        |mut caller: Caller<'_, Sandbox>,
         req: i32,
         name_ptr: i32,
         name_len: i32,
         values_ptr: i32,
         values_count: i32|
         -> wasmtime::Result<i32> {
            const CALL: &str = "hostcall_req_set_header";
            let name = read(&caller, name_ptr, name_len, CALL)?;
            let values = read_slices(&caller, values_ptr, values_count, CALL)?;
            Ok(match caller.data_mut().session.outbound.requests.get_mut(req) {
                Some(request) => headers::set(request.headers_mut(), &name, values),
                None => HostcallStatus::Invalid,
            }
            .into())
        },
    )?;
    linker.func_wrap(
        MODULE,
        "hostcall_req_set_body",
        |mut caller: Caller<'_, Sandbox>, req: i32, ptr: i32, len: i32| -> wasmtime::Result<i32> {
            const CALL: &str = "hostcall_req_set_body";
            let limit = caller.data().session.max_request_bytes;
            if usize::try_from(len).is_ok_and(|len| len > limit) {
                refuse(&caller, CALL, format!("body of {len} bytes is over the outbound limit of {limit} bytes"));
                return Ok(HostcallStatus::Invalid.into());
            }
            let body = read(&caller, ptr, len, CALL)?;
            Ok(match caller.data_mut().session.outbound.requests.get_mut(req) {
                Some(request) => {
                    *request.body_mut() = Bytes::from(body);
                    HostcallStatus::Ok
                }
                None => HostcallStatus::Invalid,
            }
            .into())
        },
    )?;
    linker.func_wrap(MODULE, "hostcall_req_send_async", |mut caller: Caller<'_, Sandbox>, req: i32| -> i32 {
        const CALL: &str = "hostcall_req_send_async";
        let (net, request) = match take_request(&mut caller, CALL, req) {
            Ok(taken) => taken,
            Err(answer) => return answer,
        };
        let task = spawn(&mut caller, &net, request);
        caller.data_mut().session.outbound.pending.insert(task)
    })?;
    Ok(())
}

fn add_pending(linker: &mut Linker<Sandbox>) -> wasmtime::Result<()> {
    linker.func_wrap(MODULE, "hostcall_pending_req_poll", |mut caller: Caller<'_, Sandbox>, pending: i32| -> wasmtime::Result<i32> {
        const CALL: &str = "hostcall_pending_req_poll";
        let outbound = &mut caller.data_mut().session.outbound;
        let Some(task) = outbound.pending.get_mut(pending) else {
            return Ok(refuse(&caller, CALL, format!("invalid pending handle {pending}")));
        };
        match Pin::new(task).poll(&mut Context::from_waker(Waker::noop())) {
            Poll::Pending => Ok(NOT_READY),
            Poll::Ready(result) => {
                outbound.pending.take(pending);
                finish(&mut caller, CALL, result)
            }
        }
    })?;
    Ok(())
}

/// The hostcalls that wait on the network.
fn add_waiting(linker: &mut Linker<Sandbox>) -> wasmtime::Result<()> {
    linker.func_wrap_async(MODULE, "hostcall_req_send", |mut caller: Caller<'_, Sandbox>, (req,): (i32,)| {
        Box::new(async move {
            const CALL: &str = "hostcall_req_send";
            let (net, request) = match take_request(&mut caller, CALL, req) {
                Ok(taken) => taken,
                Err(answer) => return Ok(answer),
            };
            let (max_body, budget) = body_limits(&mut caller);
            let result = match timeout_at(deadline(&caller), net.net.send(request, max_body, &budget)).await {
                Ok(result) => result,
                Err(_) => Err(OutboundError::Deadline),
            };
            finish(&mut caller, CALL, Ok(result))
        })
    })?;
    linker.func_wrap_async(MODULE, "hostcall_pending_req_wait", |mut caller: Caller<'_, Sandbox>, (pending,): (i32,)| {
        Box::new(async move {
            const CALL: &str = "hostcall_pending_req_wait";
            let Some(task) = caller.data_mut().session.outbound.pending.take(pending) else {
                return Ok(refuse(&caller, CALL, format!("invalid pending handle {pending}")));
            };
            match timeout_at(deadline(&caller), task).await {
                Ok(result) => finish(&mut caller, CALL, result),
                Err(_) => Err(DeadlineExceeded.into()),
            }
        })
    })?;
    linker.func_wrap_async(
        MODULE,
        "hostcall_pending_req_select",
        |mut caller: Caller<'_, Sandbox>, (pendings_ptr, count, out_ptr): (i32, i32, i32)| {
            Box::new(async move {
                const CALL: &str = "hostcall_pending_req_select";
                if !(1..=MAX_OUTBOUND_REQUESTS as i32).contains(&count) {
                    return Ok(refuse(&caller, CALL, format!("{count} handles: expected 1 to {MAX_OUTBOUND_REQUESTS}")));
                }
                let handles: Vec<i32> = read(&caller, pendings_ptr, count * 4, CALL)?
                    .chunks_exact(4)
                    .map(|bytes| i32::from_le_bytes(bytes.try_into().expect("4 bytes")))
                    .collect();
                // Checks the out pointer before waiting, and leaves -1 there on failure.
                write_i32(&mut caller, out_ptr, FAILED, CALL)?;
                if let Some(bad) = handles.iter().find(|&&h| caller.data().session.outbound.pending.get(h).is_none()) {
                    return Ok(refuse(&caller, CALL, format!("invalid pending handle {bad}")));
                }
                let deadline = deadline(&caller);
                let pending = &mut caller.data_mut().session.outbound.pending;
                let first_done = poll_fn(|cx| {
                    for &handle in &handles {
                        let task = pending.get_mut(handle).expect("checked above");
                        if let Poll::Ready(result) = Pin::new(task).poll(cx) {
                            return Poll::Ready((handle, result));
                        }
                    }
                    Poll::Pending
                });
                let Ok((handle, result)) = timeout_at(deadline, first_done).await else {
                    return Err(DeadlineExceeded.into());
                };
                caller.data_mut().session.outbound.pending.take(handle);
                write_i32(&mut caller, out_ptr, handle, CALL)?;
                finish(&mut caller, CALL, result)
            })
        },
    )?;
    Ok(())
}

fn add_responses(linker: &mut Linker<Sandbox>, mode: CallMode) -> wasmtime::Result<()> {
    linker.func_wrap(MODULE, "hostcall_resp_get_response_code", |caller: Caller<'_, Sandbox>, resp: i32| -> i32 {
        const CALL: &str = "hostcall_resp_get_response_code";
        match response(&caller, CALL, resp) {
            Ok(response) => i32::from(response.status.as_u16()),
            Err(error) => refuse(&caller, CALL, error),
        }
    })?;
    reentrant!(linker, mode, "hostcall_resp_get_headers", |caller, names_p: i32, count_p: i32, resp: i32| {
        const CALL: &str = "hostcall_resp_get_headers";
        let names: Vec<Bytes> = headers::names(&response(&caller, CALL, resp)?.headers).collect();
        hand_out_list(&mut caller, names_p, count_p, &names, CALL).await
    })?;
    reentrant!(linker, mode, "hostcall_resp_get_header", |caller,
                                                          values_p: i32,
                                                          count_p: i32,
                                                          resp: i32,
                                                          name_ptr: i32,
                                                          name_len: i32| {
        const CALL: &str = "hostcall_resp_get_header";
        let name = read(&caller, name_ptr, name_len, CALL)?;
        let values = headers::values(&response(&caller, CALL, resp)?.headers, &name);
        hand_out_list(&mut caller, values_p, count_p, &values, CALL).await
    })?;
    reentrant!(linker, mode, "hostcall_resp_get_body", |caller, ptr_p: i32, len_p: i32, resp: i32| {
        const CALL: &str = "hostcall_resp_get_body";
        let body = response(&caller, CALL, resp)?.body.clone();
        hand_out(&mut caller, ptr_p, len_p, &body, CALL).await
    })?;
    Ok(())
}
