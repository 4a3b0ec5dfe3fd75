//! Outgoing requests of wasi:http guests (`wasi:http/outgoing-handler`)
//! under the same rules as Terrafirma guests' (`hostcall_req_*`): the site's
//! `outbound_hosts`, the node's admin port never reached, at most
//! `MAX_OUTBOUND_REQUESTS` per incoming request, bodies capped both ways and
//! received bodies charged to one budget per request, everything within the
//! request's wall-clock limit, through the node's one pooled client. A
//! refused request fails with `HTTP-request-denied` and leaves a log line.

use std::sync::Arc;
use std::time::Instant;

use http_body_util::{BodyExt, Full, Limited};
use tokio::time::timeout_at;
use wasmtime_wasi_http::{Error as HttpError, RequestOptions, WasiBody, WasiHttpHooks};

use crate::messages::RequestId;
use crate::outbound::{ByteBudget, MAX_OUTBOUND_REQUESTS, OutboundError, RECEIVED_BODIES_FACTOR, SiteNet};

type Sent = Box<dyn Future<Output = Result<(), HttpError>> + Send>;
type Sending = Box<dyn Future<Output = Result<(http::Response<WasiBody>, Sent), HttpError>> + Send>;

/// The outbound state of one incoming request.
pub struct OutboundHooks {
    /// What the site may reach; `None` where nothing may be.
    net: Option<SiteNet>,
    label: Arc<str>,
    request: RequestId,
    deadline: Instant,
    max_request_bytes: usize,
    max_response_bytes: usize,
    budget: Arc<ByteBudget>,
    sent: usize,
}

impl OutboundHooks {
    pub fn new(
        net: Option<SiteNet>,
        label: Arc<str>,
        request: RequestId,
        deadline: Instant,
        max_request_bytes: usize,
        max_response_bytes: usize,
    ) -> Self {
        let budget = Arc::new(ByteBudget::new(max_response_bytes.saturating_mul(RECEIVED_BODIES_FACTOR)));
        OutboundHooks { net, label, request, deadline, max_request_bytes, max_response_bytes, budget, sent: 0 }
    }

    fn refuse(&self, reason: impl std::fmt::Display, error: HttpError) -> Sending {
        tracing::warn!(target: "guest", module = %self.label, request = %self.request, "outgoing request: {reason}");
        Box::new(async move { Err(error) })
    }
}

/// The error a guest sees for a failed send.
fn error_code(error: &OutboundError) -> HttpError {
    match error {
        OutboundError::Failed { .. } => HttpError::DestinationUnavailable,
        OutboundError::BodyTooLarge { limit, .. } | OutboundError::BudgetSpent { limit, .. } => {
            HttpError::HttpResponseBodySize(Some(*limit as u64))
        }
        OutboundError::Deadline => HttpError::ConnectionTimeout,
    }
}

impl WasiHttpHooks for OutboundHooks {
    fn send_request(&mut self, request: http::Request<WasiBody>, _options: Option<RequestOptions>, _sent: Sent) -> Sending {
        let Some(net) = self.net.clone() else {
            return self.refuse("outbound requests are not available here", HttpError::HttpRequestDenied);
        };
        if self.sent >= MAX_OUTBOUND_REQUESTS {
            let reason = format!("over the limit of {MAX_OUTBOUND_REQUESTS} outbound requests per request");
            return self.refuse(reason, HttpError::ConnectionLimitReached);
        }
        let uri = match net.allow.check_url(request.uri().to_string().as_bytes()) {
            Ok(uri) => uri,
            Err(error) => return self.refuse(error, HttpError::HttpRequestDenied),
        };
        self.sent += 1;
        let (label, id, deadline, budget) =
            (self.label.clone(), self.request.clone(), tokio::time::Instant::from_std(self.deadline), self.budget.clone());
        let (max_request, max_response) = (self.max_request_bytes, self.max_response_bytes);
        Box::new(async move {
            let (mut parts, body) = request.into_parts();
            parts.uri = uri;
            let Ok(Ok(body)) = timeout_at(deadline, Limited::new(body, max_request).collect()).await else {
                tracing::warn!(target: "guest", module = %label, request = %id, "outgoing request: body over {max_request} bytes, or not written in time");
                return Err(HttpError::HttpRequestBodySize(None));
            };
            let sent = timeout_at(deadline, net.net.send(http::Request::from_parts(parts, body.to_bytes()), max_response, &budget)).await;
            let response = match sent.unwrap_or(Err(OutboundError::Deadline)) {
                Ok(response) => response,
                Err(error) => {
                    tracing::warn!(target: "guest", module = %label, request = %id, "outgoing request: {error}");
                    return Err(error_code(&error));
                }
            };
            let mut answer =
                http::Response::new(Full::new(response.body).map_err(|never: std::convert::Infallible| match never {}).boxed_unsync());
            *answer.status_mut() = response.status;
            *answer.headers_mut() = response.headers;
            let done: Sent = Box::new(async { Ok::<(), HttpError>(()) });
            Ok((answer, done))
        })
    }
}
