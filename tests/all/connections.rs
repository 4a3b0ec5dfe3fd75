//! What the node does with slow, idle and in-flight connections: bounded
//! time for a request's head and body, idle keep-alive connections closed,
//! and a graceful stop on SIGTERM or Ctrl-C.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::harness::{TestNode, fixture};
use crate::process::Process;

/// Reads until the peer closes; `None` if it had not closed within `limit`.
async fn read_until_closed(stream: &mut TcpStream, limit: Duration) -> Option<Vec<u8>> {
    let mut received = Vec::new();
    tokio::time::timeout(limit, stream.read_to_end(&mut received)).await.ok()?.ok()?;
    Some(received)
}

async fn quick_node() -> TestNode {
    let node = TestNode::start_with(|config| {
        config.http.head_timeout = Duration::from_millis(300);
        config.http.body_timeout = Duration::from_millis(300);
    })
    .await;
    node.deploy_ok("_default", "hello", fixture("hello")).await;
    node.deploy_ok("_default", "echo", fixture("echo_request")).await;
    node
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_trickling_its_head_is_cut_off() {
    let node = quick_node().await;
    let mut stream = TcpStream::connect(node.node.http_addr).await.unwrap();
    stream.write_all(b"GET /hello HTTP/1.1\r\nhost: localhost\r\nx-slow: ").await.unwrap();
    let started = Instant::now();
    let closed = read_until_closed(&mut stream, Duration::from_secs(10)).await;
    assert!(closed.is_some(), "the connection was still open after 10 s");
    assert!(started.elapsed() >= Duration::from_millis(250), "cut at the head timeout, not before");
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_trickling_its_body_gets_408() {
    let node = quick_node().await;
    let mut stream = TcpStream::connect(node.node.http_addr).await.unwrap();
    stream.write_all(b"POST /echo HTTP/1.1\r\nhost: localhost\r\ncontent-length: 100\r\n\r\nonly ten..").await.unwrap();
    let answer = read_until_closed(&mut stream, Duration::from_secs(10)).await.expect("an answer, then the connection closed");
    let answer = String::from_utf8_lossy(&answer).to_lowercase();
    assert!(answer.starts_with("http/1.1 408"), "{answer}");
    assert!(answer.contains("x-terrafirma-error: request-timeout"), "{answer}");
    assert!(answer.contains("echo:"), "names the module: {answer}");
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_keep_alive_connection_is_closed() {
    let node = quick_node().await;
    let mut stream = TcpStream::connect(node.node.http_addr).await.unwrap();
    stream.write_all(b"GET /hello HTTP/1.1\r\nhost: localhost\r\n\r\n").await.unwrap();
    let answer = read_until_closed(&mut stream, Duration::from_secs(10)).await.expect("closed once idle");
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 200") && answer.ends_with("Hello World!\n"), "served first: {answer}");
    node.stop().await;
}

/// The upstream a guest calls, held by the test: a guest's request is in
/// flight for as long as the test does not answer it.
async fn held_upstream() -> (tokio::net::TcpListener, String) {
    let upstream = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/held", upstream.local_addr().unwrap());
    (upstream, url)
}

/// Starts `GET /fetch` (the guest calls `url`) on a connection of its own.
fn fetch_in_background(http: SocketAddr, url: &str) -> tokio::task::JoinHandle<Vec<u8>> {
    let call = format!("GET /fetch HTTP/1.1\r\nhost: localhost\r\nx-url: {url}\r\nconnection: close\r\n\r\n");
    tokio::spawn(async move {
        let mut stream = TcpStream::connect(http).await.unwrap();
        stream.write_all(call.as_bytes()).await.unwrap();
        let mut answer = Vec::new();
        let _ = stream.read_to_end(&mut answer).await;
        answer
    })
}

async fn node_calling_out(drain_ms: u64) -> (Process, tempfile::TempDir, tempfile::NamedTempFile) {
    let data = tempfile::tempdir().unwrap();
    let config = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(config.path(), format!("drain_ms = {drain_ms}\n[limits]\noutbound_hosts = [\"127.0.0.1\"]\n")).unwrap();
    let node = Process::serve(data.path(), Some(config.path())).await;
    node.deploy("fetch", "fetch").await;
    node.deploy("hello", "hello").await;
    (node, data, config)
}

/// On SIGTERM the node stops accepting, lets the request in flight finish,
/// and exits 0.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_lets_requests_in_flight_finish() {
    for signal in ["TERM", "INT"] {
        let (mut node, _data, _config) = node_calling_out(10_000).await;
        let (upstream, url) = held_upstream().await;
        let in_flight = fetch_in_background(node.http, &url);
        let (mut from_guest, _) = tokio::time::timeout(Duration::from_secs(30), upstream.accept()).await.unwrap().unwrap();
        let mut head = [0; 1024];
        assert!(from_guest.read(&mut head).await.unwrap() > 0);

        node.signal(signal);
        let started = Instant::now();
        while TcpStream::connect(node.http).await.is_ok() {
            assert!(started.elapsed() < Duration::from_secs(10), "SIGTERM: still accepting after 10 s");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(!in_flight.is_finished(), "the request in flight was cut");
        from_guest.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 8\r\nconnection: close\r\n\r\nfinished").await.unwrap();
        let answer = String::from_utf8_lossy(&in_flight.await.unwrap()).into_owned();
        assert!(answer.starts_with("HTTP/1.1 200") && answer.ends_with("finished"), "SIG{signal}: {answer}");
        let status = node.exit_within(Duration::from_secs(10)).await;
        assert_eq!(status.code(), Some(0), "SIG{signal}: {status:?}");
    }
}

/// A request that outlasts the drain deadline does not keep the node up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_drain_deadline_bounds_shutdown() {
    let (mut node, _data, _config) = node_calling_out(300).await;
    let (upstream, url) = held_upstream().await;
    let in_flight = fetch_in_background(node.http, &url);
    let (_from_guest, _) = tokio::time::timeout(Duration::from_secs(30), upstream.accept()).await.unwrap().unwrap();
    node.signal("TERM");
    let status = node.exit_within(Duration::from_secs(10)).await;
    assert_eq!(status.code(), Some(0), "{status:?}");
    let _ = in_flight.await;
}
