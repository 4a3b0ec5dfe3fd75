//! wasi:http/proxy components, as `wasmtime serve` runs them: a fresh
//! instance per request from the module's `ProxyPre` (made once, at
//! upload), under the same fuel, epoch and memory limits as every guest.
//! The request body streams in as the guest reads it (capped at
//! `max_request_bytes`), the response streams out as the guest writes it
//! (cut once past `max_response_bytes`). The guest goes on running after it
//! has set the response (it writes the body then): its call is driven by
//! the response body itself, on the connection's own task, so that no
//! request wakes another thread (a task per request, as `wasmtime serve`
//! has, cost 2.4 times the CPU: futex wake-ups between the two).

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::Bytes;
use http::header::{CONTENT_LENGTH, HOST};
use http_body::{Body, Frame};
use http_body_util::{BodyExt, Empty, Limited};
use wasmtime::component::{Component, ResourceTable};
use wasmtime_wasi::{WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};
use wasmtime_wasi_http::p2::bindings::ProxyPre;
use wasmtime_wasi_http::p2::bindings::http::types::Scheme;
use wasmtime_wasi_http::p2::body::HyperOutgoingBody;
use wasmtime_wasi_http::{Error as HttpError, WasiHttpCtx, WasiHttpCtxView, WasiHttpView};

use super::http_outbound::OutboundHooks;
use super::output::{CappedPipe, GUEST_LOG_BYTES, log_guest_output};
use super::{Fault, FaultKind, HandlerConfig, RequestBody, Runtime};
use crate::messages::{GuestRequest, RequestId, drop_framing_headers};
use crate::sandbox::{CallMode, Cost, Sandbox, Sandboxed, cost, new_store};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Store data of a wasi:http guest.
pub struct HttpState {
    sandbox: Sandbox,
    table: ResourceTable,
    wasi: WasiCtx,
    http: WasiHttpCtx,
    hooks: OutboundHooks,
}

impl WasiView for HttpState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView { ctx: &mut self.wasi, table: &mut self.table }
    }
}

impl WasiHttpView for HttpState {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        WasiHttpCtxView { ctx: &mut self.http, table: &mut self.table, hooks: &mut self.hooks }
    }
}

impl Sandboxed for HttpState {
    fn sandbox(&mut self) -> &mut Sandbox {
        &mut self.sandbox
    }
}

pub struct HttpHandler {
    runtime: Arc<Runtime>,
    pre: ProxyPre<HttpState>,
    config: HandlerConfig,
}

impl HttpHandler {
    pub fn new(runtime: &Arc<Runtime>, component: &Component, config: HandlerConfig) -> wasmtime::Result<HttpHandler> {
        let pre = runtime.link_proxy(component)?;
        Ok(HttpHandler { runtime: runtime.clone(), pre, config })
    }

    /// The guest's response (streaming) and what the guest cost, when it
    /// has finished by the time the response head leaves.
    pub async fn handle(&self, request: GuestRequest, body: RequestBody) -> (Result<http::Response<StreamBody>, Fault>, Option<Cost>) {
        let spent = Arc::new(OnceLock::new());
        let answer = self.answer(request, body, spent.clone()).await;
        (answer, spent.get().copied())
    }

    async fn answer(
        &self,
        request: GuestRequest,
        body: RequestBody,
        spent: Arc<OnceLock<Cost>>,
    ) -> Result<http::Response<StreamBody>, Fault> {
        let limits = self.config.limits;
        let label = self.config.label.clone();
        let id = request.id.clone();
        let log = CappedPipe::new(GUEST_LOG_BYTES);
        let wasi = WasiCtxBuilder::new().stdout(log.clone()).stderr(log.clone()).build();
        // The store is armed with the same deadline a moment later.
        let deadline = std::time::Instant::now() + limits.timeout;
        let hooks = OutboundHooks::new(
            self.config.net.clone(),
            label.clone(),
            id.clone(),
            deadline,
            limits.max_request_bytes,
            limits.max_response_bytes,
        );
        let state =
            HttpState { sandbox: Sandbox::new(CallMode::Fiber), table: ResourceTable::new(), wasi, http: WasiHttpCtx::new(), hooks };
        let mut store = new_store(&self.runtime.engine, state, &limits);

        let incoming = incoming_request(request, body, limits.max_request_bytes);
        let internal =
            |error: wasmtime::Error| Fault::new(FaultKind::Trap, format!("the request could not be handed to the guest: {error}"));
        let guest_request = store.data_mut().http().new_incoming_request(Scheme::Http, incoming).map_err(internal)?;
        let (sender, receiver) = tokio::sync::oneshot::channel();
        let outparam = store.data_mut().http().new_response_outparam(sender).map_err(internal)?;
        let pre = self.pre.clone();
        let guest_id = id.clone();
        let mut guest: Guest = Box::pin(async move {
            let mut instantiate = Duration::ZERO;
            let result = async {
                let started = std::time::Instant::now();
                let proxy = pre.instantiate_async(&mut store).await?;
                instantiate = started.elapsed();
                proxy.wasi_http_incoming_handler().call_handle(&mut store, guest_request, outparam).await
            }
            .await;
            let _ = spent.set(Cost { instantiate, ..cost(&mut store) });
            log_guest_output(&label, &guest_id, &log);
            Fault::from_guest_result(result, store.data_mut().sandbox().memory_denied())
        });
        // Runs the guest until it sets its response (or ends without one).
        let mut receiver = std::pin::pin!(receiver);
        let mut ended = None;
        let set = std::future::poll_fn(|cx| {
            if let Poll::Ready(set) = receiver.as_mut().poll(cx) {
                return Poll::Ready(set);
            }
            if ended.is_none()
                && let Poll::Ready(result) = guest.as_mut().poll(cx)
            {
                ended = Some(result);
                // It may have set the response on its way out.
                return receiver.as_mut().poll(cx);
            }
            Poll::Pending
        })
        .await;
        match set {
            Ok(Ok(response)) => {
                let running = if ended.is_some() { None } else { Some(guest) };
                self.stream(response, running, ended, id).await
            }
            Ok(Err(code)) => Err(Fault::new(FaultKind::Trap, format!("the guest answered with the error {code:?}"))),
            Err(_) => Err(match ended {
                Some(Err(fault)) => fault,
                _ => Fault::new(FaultKind::Trap, "the guest returned without setting a response"),
            }),
        }
    }

    /// The guest's response on its way out, within the response limit.
    async fn stream(
        &self,
        response: http::Response<HyperOutgoingBody>,
        guest: Option<Guest>,
        ended: Option<Result<(), Fault>>,
        id: RequestId,
    ) -> Result<http::Response<StreamBody>, Fault> {
        let limit = self.config.limits.max_response_bytes;
        let declared = response.headers().get(CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok());
        if declared.is_some_and(|len| len > limit as u64) {
            return Err(Fault::new(FaultKind::ResponseTooLarge, format!("response over the limit of {limit} bytes")));
        }
        let (mut parts, body) = response.into_parts();
        drop_framing_headers(&mut parts.headers);
        let label = self.config.label.clone();
        let mut body = GuestBody { inner: body, sent: 0, limit, guest, ended, label, id, early: VecDeque::new() };
        // A small answer the guest writes at once goes out whole, with a
        // content-length: chunked, it cost a hello 12 us more CPU (hyper
        // writes the closing chunk on its own).
        if let Some(whole) = body.whole().await {
            return Ok(http::Response::from_parts(parts, StreamBody::full(whole)));
        }
        Ok(http::Response::from_parts(parts, StreamBody(Box::pin(body))))
    }
}

/// The request as wasi:http hands it to the guest: the client's headers
/// and the node's client-address headers, a body capped at `limit`.
fn incoming_request(
    request: GuestRequest,
    body: RequestBody,
    limit: usize,
) -> http::Request<impl Body<Data = Bytes, Error = HttpError> + Send + 'static> {
    let body: StreamBody = match body {
        RequestBody::Full(bytes) => StreamBody::full(bytes),
        RequestBody::Streaming(incoming) => StreamBody(Box::pin(Limited::new(incoming, limit))),
    };
    let mut headers = request.headers.clone();
    for (name, value) in request.client_ip_headers() {
        headers.insert(name, value);
    }
    if !headers.contains_key(HOST) {
        headers.insert(HOST, http::HeaderValue::from_static("localhost"));
    }
    let mut incoming = http::Request::new(body.map_err(guest_error));
    *incoming.method_mut() = request.method;
    *incoming.uri_mut() = request.uri;
    *incoming.headers_mut() = headers;
    incoming
}

/// A body that streams: the guest's response going out, or a request body
/// coming in.
pub struct StreamBody(Pin<Box<dyn Body<Data = Bytes, Error = BoxError> + Send>>);

impl StreamBody {
    pub fn full(bytes: Bytes) -> StreamBody {
        StreamBody(Box::pin(http_body_util::Full::new(bytes).map_err(|never| match never {})))
    }

    pub fn empty() -> StreamBody {
        StreamBody(Box::pin(Empty::new().map_err(|never| match never {})))
    }
}

impl Body for StreamBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        self.0.as_mut().poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.0.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.0.size_hint()
    }
}

/// The guest's response body: cut (an error, so the client sees an
/// incomplete response, never a complete-looking one) once past the limit,
/// or when the guest ended in a fault before finishing it.
struct GuestBody {
    inner: HyperOutgoingBody,
    sent: usize,
    limit: usize,
    /// The guest's call while it runs: polled with the body.
    guest: Option<Guest>,
    /// How it ended, once it has.
    ended: Option<Result<(), Fault>>,
    label: Arc<str>,
    id: RequestId,
    /// What `whole` took from `inner` before finding the body would stream.
    early: VecDeque<Result<Frame<Bytes>, String>>,
}

/// Most bytes of an answer that `GuestBody::whole` gathers.
const WHOLE_BYTES: usize = 64 << 10;

/// The guest's call, from instantiation to the end of `handle`.
type Guest = Pin<Box<dyn Future<Output = Result<(), Fault>> + Send>>;

impl GuestBody {
    /// Drives the guest and takes the body's frames for as long as either
    /// makes progress without waiting: the whole body, if it is finished by
    /// then within `WHOLE_BYTES` and the limit (a guest still running after
    /// it goes on in the background); `None` if it is to stream.
    async fn whole(&mut self) -> Option<Bytes> {
        let finished = std::future::poll_fn(|cx| {
            loop {
                let mut progress = false;
                if let Some(guest) = &mut self.guest
                    && let Poll::Ready(result) = guest.as_mut().poll(cx)
                {
                    (self.guest, self.ended, progress) = (None, Some(result), true);
                }
                match Pin::new(&mut self.inner).poll_frame(cx) {
                    Poll::Ready(Some(Ok(frame))) => {
                        let data = frame.is_data();
                        self.sent += frame.data_ref().map_or(0, Bytes::len);
                        self.early.push_back(Ok(frame));
                        if !data || self.sent > WHOLE_BYTES.min(self.limit) {
                            return Poll::Ready(false);
                        }
                    }
                    Poll::Ready(Some(Err(error))) => {
                        self.early.push_back(Err(format!("the guest's body failed: {error}")));
                        return Poll::Ready(false);
                    }
                    Poll::Ready(None) => return Poll::Ready(true),
                    Poll::Pending if progress => {}
                    Poll::Pending => return Poll::Ready(false),
                }
            }
        })
        .await;
        if !finished || matches!(self.ended, Some(Err(_))) {
            return None;
        }
        if let Some(guest) = self.guest.take() {
            tokio::spawn(guest);
        }
        let mut whole = bytes::BytesMut::with_capacity(self.sent);
        for frame in self.early.drain(..).flatten() {
            if let Ok(data) = frame.into_data() {
                whole.extend_from_slice(&data);
            }
        }
        Some(whole.freeze())
    }

    fn cut(&mut self, reason: String) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        tracing::warn!(module = %self.label, request = %self.id, "response cut: {reason}");
        self.guest = None;
        Poll::Ready(Some(Err(reason.into())))
    }
}

impl Body for GuestBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        match this.early.pop_front() {
            Some(Ok(frame)) if this.sent > this.limit => {
                drop(frame);
                return this.cut(format!("response over the limit of {} bytes", this.limit));
            }
            Some(Ok(frame)) => return Poll::Ready(Some(Ok(frame))),
            Some(Err(reason)) => return this.cut(reason),
            None => {}
        }
        if let Some(guest) = &mut this.guest
            && let Poll::Ready(result) = guest.as_mut().poll(cx)
        {
            this.guest = None;
            this.ended = Some(result);
        }
        match ready!(Pin::new(&mut this.inner).poll_frame(cx)) {
            Some(Ok(frame)) => {
                this.sent += frame.data_ref().map_or(0, Bytes::len);
                if this.sent > this.limit {
                    return this.cut(format!("response over the limit of {} bytes", this.limit));
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Some(Err(error)) => this.cut(format!("the guest's body failed: {error}")),
            None => {
                // The body ended; if the guest's call ended in a fault
                // first, what was sent is incomplete.
                if let Some(Err(fault)) = this.ended.take() {
                    return this.cut(fault.to_string());
                }
                // The answer is complete; a guest still running after it
                // finishes in the background.
                if let Some(guest) = this.guest.take() {
                    tokio::spawn(guest);
                }
                Poll::Ready(None)
            }
        }
    }
}

/// What a guest reading the request body sees when it cannot be read.
fn guest_error(error: BoxError) -> HttpError {
    if error.is::<http_body_util::LengthLimitError>() {
        return HttpError::HttpRequestBodySize(None);
    }
    match error.downcast::<hyper::Error>() {
        Ok(hyper) => HttpError::Hyper(*hyper),
        Err(other) => HttpError::InternalError(Some(other.to_string())),
    }
}
