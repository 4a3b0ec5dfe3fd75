//! Native baseline: a hyper 1 HTTP/1.1 server answering "Hello World!\n" on
//! 127.0.0.1:PORT, with keep-alive, one task per connection on tokio's
//! multi-thread runtime and mimalloc as the allocator, as the node uses.

use std::convert::Infallible;
use std::net::{Ipv4Addr, SocketAddr};
use std::process::ExitCode;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const BODY: &[u8] = b"Hello World!\n";

async fn hello(_request: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    Ok(Response::new(Full::new(Bytes::from_static(BODY))))
}

#[tokio::main]
async fn main() -> ExitCode {
    let port = match std::env::args().nth(1).as_deref().map(str::parse::<u16>) {
        None => 8090,
        Some(Ok(port)) => port,
        Some(Err(_)) => {
            eprintln!("usage: native-hello [PORT]   (listens on 127.0.0.1:PORT, default 8090)");
            return ExitCode::from(2);
        }
    };
    // Loopback only: this is a load-test target, never a public server.
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let listener = match TcpListener::bind(addr).await {
        Ok(listener) => listener,
        Err(e) => {
            eprintln!("native-hello: cannot listen on {addr}: {e}");
            return ExitCode::FAILURE;
        }
    };
    eprintln!("native-hello: listening on http://{addr}");

    loop {
        let (stream, _peer) = match listener.accept().await {
            Ok(conn) => conn,
            // Out of file descriptors and the like: skip this one, keep serving.
            Err(e) => {
                eprintln!("native-hello: accept: {e}");
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        tokio::spawn(async move {
            // Keep-alive is hyper's default for HTTP/1.1.
            let _ = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service_fn(hello))
                .await;
        });
    }
}
