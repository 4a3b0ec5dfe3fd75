//! wasi:http/proxy components, as `wasmtime serve` runs them: a fresh
//! instance per request from the module's `ProxyPre` (made once, at
//! upload), under the same fuel, epoch and memory limits as every guest.
//! The request body streams in as the guest reads it (capped at
//! `max_request_bytes`), the response streams out as the guest writes it
//! (cut once past `max_response_bytes`). The guest runs on a task of its
//! own, so that it can go on writing after it has set the response.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use http::header::{CONTENT_LENGTH, HOST};
use http_body::{Body, Frame};
use http_body_util::{BodyExt, Empty, Limited};
use tokio::task::JoinHandle;
use wasmtime::component::{Component, ResourceTable};
use wasmtime_wasi::{WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};
use wasmtime_wasi_http::p2::bindings::ProxyPre;
use wasmtime_wasi_http::p2::bindings::http::types::Scheme;
use wasmtime_wasi_http::p2::body::HyperOutgoingBody;
use wasmtime_wasi_http::{Error as HttpError, WasiHttpCtx, WasiHttpCtxView, WasiHttpView};

use super::http_outbound::OutboundHooks;
use super::output::{CappedPipe, GUEST_LOG_BYTES, log_guest_output};
use super::{Fault, FaultKind, HandlerConfig, RequestBody, Runtime};
use crate::messages::{GuestRequest, drop_framing_headers};
use crate::sandbox::{CallMode, Sandbox, Sandboxed, new_store};

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

    pub async fn handle(&self, request: GuestRequest, body: RequestBody) -> Result<http::Response<StreamBody>, Fault> {
        let limits = self.config.limits;
        let label = self.config.label.clone();
        let log = CappedPipe::new(GUEST_LOG_BYTES);
        let wasi = WasiCtxBuilder::new().stdout(log.clone()).stderr(log.clone()).build();
        // The store is armed with the same deadline a moment later.
        let deadline = std::time::Instant::now() + limits.timeout;
        let hooks =
            OutboundHooks::new(self.config.net.clone(), label.clone(), deadline, limits.max_request_bytes, limits.max_response_bytes);
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
        let task = tokio::spawn(async move {
            let result = async {
                let proxy = pre.instantiate_async(&mut store).await?;
                proxy.wasi_http_incoming_handler().call_handle(&mut store, guest_request, outparam).await
            }
            .await;
            log_guest_output(&label, &log);
            Fault::from_guest_result(result, store.data_mut().sandbox().memory_denied())
        });
        match receiver.await {
            Ok(Ok(response)) => self.stream(response, task),
            Ok(Err(code)) => Err(Fault::new(FaultKind::Trap, format!("the guest answered with the error {code:?}"))),
            Err(_) => Err(match task.await {
                Ok(Err(fault)) => fault,
                Ok(Ok(())) => Fault::new(FaultKind::Trap, "the guest returned without setting a response"),
                Err(error) => Fault::new(FaultKind::Trap, format!("the guest's task failed: {error}")),
            }),
        }
    }

    /// The guest's response on its way out, within the response limit.
    fn stream(
        &self,
        response: http::Response<HyperOutgoingBody>,
        task: JoinHandle<Result<(), Fault>>,
    ) -> Result<http::Response<StreamBody>, Fault> {
        let limit = self.config.limits.max_response_bytes;
        let declared = response.headers().get(CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok());
        if declared.is_some_and(|len| len > limit as u64) {
            return Err(Fault::new(FaultKind::ResponseTooLarge, format!("response over the limit of {limit} bytes")));
        }
        let (mut parts, body) = response.into_parts();
        drop_framing_headers(&mut parts.headers);
        let body = GuestBody { inner: body, sent: 0, limit, task: Some(task), label: self.config.label.clone() };
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
    task: Option<JoinHandle<Result<(), Fault>>>,
    label: Arc<str>,
}

impl GuestBody {
    fn cut(&mut self, reason: String) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        tracing::warn!(module = %self.label, "response cut: {reason}");
        self.task = None;
        Poll::Ready(Some(Err(reason.into())))
    }
}

impl Body for GuestBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
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
                if let Some(task) = &mut this.task
                    && task.is_finished()
                    && let Poll::Ready(Ok(Err(fault))) = Pin::new(task).poll(cx)
                {
                    return this.cut(fault.to_string());
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
