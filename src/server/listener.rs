//! Accept loop shared by the site and admin servers: HTTP/1.1 with
//! keep-alive and HTTP/2 (prior knowledge), one task per connection.
//!
//! A client gets a bounded time for each request head, which also bounds how
//! long a kept-alive connection may sit idle (`HttpConfig::head_timeout`);
//! bodies are bounded where they are read. On stop the server stops
//! accepting, lets the requests in flight finish up to the drain deadline,
//! then closes what is left.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use hyper::body::Incoming;
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::config::HttpConfig;

/// Largest request head (request line and headers) accepted; over it the
/// client gets `431`.
const MAX_HEAD_BYTES: usize = 64 << 10;

/// How a server stops: when `stop` turns true, with `drain` for the
/// requests in flight.
pub struct Stop {
    pub signal: watch::Receiver<bool>,
    pub drain: Duration,
}

/// TLS on a listener: the acceptor, and where failed handshakes are counted.
#[derive(Clone)]
pub struct Tls {
    pub acceptor: tokio_rustls::TlsAcceptor,
    pub certs: Arc<crate::certs::Certificates>,
}

/// Serves connections on `listener` with `handle` until stopped; over TLS
/// when `tls` is given (the handshake must finish within the head timeout).
pub async fn serve<H, F, B>(listener: TcpListener, http: HttpConfig, tls: Option<Tls>, handle: H, mut stop: Stop)
where
    H: Fn(SocketAddr, Request<Incoming>) -> F + Send + Sync + 'static,
    F: Future<Output = Response<B>> + Send + 'static,
    B: hyper::body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let handle = Arc::new(handle);
    let mut connections = JoinSet::new();
    let graceful = GracefulShutdown::new();
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder.http1().timer(TokioTimer::new()).header_read_timeout(http.head_timeout).max_buf_size(MAX_HEAD_BYTES.max(8192)).keep_alive(true);
    builder.http2().timer(TokioTimer::new());
    let builder = Arc::new(builder);
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let (stream, peer) = match accepted {
                    Ok(accepted) => accepted,
                    Err(e) => {
                        tracing::warn!("accept failed: {e}");
                        tokio::time::sleep(Duration::from_millis(10)).await;
                        continue;
                    }
                };
                let _ = stream.set_nodelay(true);
                let handle = handle.clone();
                let builder = builder.clone();
                let watcher = graceful.watcher();
                let tls = tls.clone();
                connections.spawn(async move {
                    let service = hyper::service::service_fn(move |request| {
                        let response = handle(peer, request);
                        async move { Ok::<_, Infallible>(response.await) }
                    });
                    match tls {
                        None => {
                            let _ = watcher.watch(builder.serve_connection(TokioIo::new(stream), service)).await;
                        }
                        Some(tls) => match tokio::time::timeout(http.head_timeout, tls.acceptor.accept(stream)).await {
                            Ok(Ok(stream)) => {
                                let _ = watcher.watch(builder.serve_connection(TokioIo::new(stream), service)).await;
                            }
                            // Not TLS (plain HTTP sent here, say), no
                            // certificate for the name, or too slow: closed.
                            _ => tls.certs.handshake_failed(),
                        },
                    }
                });
            }
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
            _ = stop.signal.changed() => break,
        }
    }
    drop(listener);
    // Idle connections close at once, busy ones after their response.
    if tokio::time::timeout(stop.drain, graceful.shutdown()).await.is_err() {
        tracing::warn!("{} connections still busy after the drain deadline of {:?}: closing them", connections.len(), stop.drain);
    }
    connections.shutdown().await;
}
