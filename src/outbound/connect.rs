//! The TCP connector under the client: hyper's `HttpConnector` (system
//! resolver, Nagle off), refusing any connection that lands on the node's
//! own admin port, whatever name or address led there.

use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::task::{Context, Poll};

use http::Uri;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tower_service::Service;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

#[derive(Clone)]
pub struct GuardedConnector {
    inner: HttpConnector,
    admin: Option<SocketAddr>,
}

impl GuardedConnector {
    pub fn new(admin: Option<SocketAddr>) -> GuardedConnector {
        let mut inner = HttpConnector::new();
        // https URLs reach this connector too; TLS is layered on top.
        inner.enforce_http(false);
        inner.set_nodelay(true);
        GuardedConnector { inner, admin }
    }
}

/// Whether a connection from `local` to `peer` reached this machine's admin
/// listener at `admin`. A connection to any address of this machine has
/// that address as its own local address too (Linux routes it over `lo`).
fn reaches_admin(peer: SocketAddr, local: SocketAddr, admin: SocketAddr) -> bool {
    let on_this_machine = |ip: IpAddr| ip.is_loopback() || ip.is_unspecified() || ip == local.ip();
    peer.port() == admin.port()
        && (peer.ip() == admin.ip() || (on_this_machine(peer.ip()) && (admin.ip().is_unspecified() || on_this_machine(admin.ip()))))
}

impl Service<Uri> for GuardedConnector {
    type Response = TokioIo<TcpStream>;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, BoxError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let connecting = self.inner.call(uri);
        let admin = self.admin;
        Box::pin(async move {
            let io = connecting.await?;
            if let Some(admin) = admin {
                let stream = io.inner();
                if reaches_admin(stream.peer_addr()?, stream.local_addr()?, admin) {
                    return Err("the node's admin API is not reachable from guests".into());
                }
            }
            Ok(io)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(text: &str) -> SocketAddr {
        text.parse().unwrap()
    }

    #[test]
    fn the_admin_listener_is_recognised_by_any_local_address() {
        let admin = addr("127.0.0.1:8081");
        assert!(reaches_admin(addr("127.0.0.1:8081"), addr("127.0.0.1:40000"), admin));
        assert!(reaches_admin(addr("127.0.0.2:8081"), addr("127.0.0.1:40000"), admin), "all of 127/8 is loopback");
        assert!(!reaches_admin(addr("127.0.0.1:8080"), addr("127.0.0.1:40000"), admin), "another port");
        assert!(!reaches_admin(addr("10.0.0.9:8081"), addr("10.0.0.5:40000"), admin), "another machine");
        let any = addr("0.0.0.0:8081");
        assert!(reaches_admin(addr("10.0.0.5:8081"), addr("10.0.0.5:40000"), any), "own interface address");
        assert!(reaches_admin(addr("[::1]:8081"), addr("[::1]:40000"), any));
        let public = addr("10.0.0.5:8081");
        assert!(reaches_admin(addr("10.0.0.5:8081"), addr("10.0.0.5:40000"), public));
    }
}
