//! A small HTTP server on a loopback port for outbound tests: the upstream
//! a guest fetches from.
//!
//! Routes: `/hello` (200, two `x-upstream` values), `/echo` (the method, the
//! `x-from-guest` header and the body), `/slow/MS` (answers after MS
//! milliseconds), `/status/N`, `/redirect` (302 to `/hello`) and `/big/N`
//! (N bytes).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

pub struct Upstream {
    pub addr: SocketAddr,
    /// Requests that reached the server.
    pub served: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl Upstream {
    pub async fn start() -> Upstream {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind upstream");
        let addr = listener.local_addr().unwrap();
        let served = Arc::new(AtomicUsize::new(0));
        let counter = served.clone();
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let counter = counter.clone();
                tokio::spawn(async move {
                    let service = service_fn(move |request| {
                        counter.fetch_add(1, Ordering::SeqCst);
                        answer(request)
                    });
                    let _ = http1::Builder::new().serve_connection(TokioIo::new(stream), service).await;
                });
            }
        });
        Upstream { addr, served, task }
    }

    /// `http://127.0.0.1:PORT{path}`
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub fn served(&self) -> usize {
        self.served.load(Ordering::SeqCst)
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn answer(request: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    let path = request.uri().path().to_owned();
    let reply = |status: u16, body: String| {
        let mut response = Response::new(Full::new(Bytes::from(body)));
        *response.status_mut() = hyper::StatusCode::from_u16(status).unwrap();
        response
    };
    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let response = match segments.as_slice() {
        ["hello"] => {
            let mut response = reply(200, "hello from upstream".into());
            response.headers_mut().append("x-upstream", "one".parse().unwrap());
            response.headers_mut().append("x-upstream", "two".parse().unwrap());
            response
        }
        ["echo"] => {
            let method = request.method().to_string();
            let from_guest = request.headers().get("x-from-guest").map(|v| v.to_str().unwrap_or("?").to_owned()).unwrap_or_default();
            let body = request.into_body().collect().await.map(|b| b.to_bytes()).unwrap_or_default();
            reply(200, format!("{method} {from_guest} {}", String::from_utf8_lossy(&body)))
        }
        ["slow", ms] => {
            let ms: u64 = ms.parse().unwrap_or(0);
            tokio::time::sleep(Duration::from_millis(ms)).await;
            reply(200, format!("slow {ms}"))
        }
        ["status", code] => reply(code.parse().unwrap_or(500), format!("status {code}")),
        ["redirect"] => {
            let mut response = reply(302, String::new());
            response.headers_mut().insert("location", "/hello".parse().unwrap());
            response
        }
        ["big", n] => reply(200, "b".repeat(n.parse().unwrap_or(0))),
        _ => reply(404, "no such route".into()),
    };
    Ok(response)
}
