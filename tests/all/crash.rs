//! `kill -9` of a real node process: every KV write a guest saw succeed,
//! and that anything outside the node could have learned of, is there
//! after a restart on the same data directory.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::harness::{cpu_ticks, request};
use crate::process::Process;

impl Process {
    async fn kv(&self, method: &str, key: &str, value: &str) -> String {
        let resp = request(self.http, method, &format!("/kv/{key}"), None, &[], Bytes::from(value.to_owned())).await;
        assert_eq!(resp.status, 200, "{resp:?}");
        resp.text()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_writes_survive_kill_9() {
    let data = tempfile::tempdir().unwrap();
    let node = Process::serve(data.path(), None).await;
    node.deploy("kv", "kv").await;
    assert_eq!(node.kv("PUT", "one", "1").await, "1");
    let writes: Vec<_> = (0..40)
        .map(|i| {
            let http = node.http;
            tokio::spawn(async move { request(http, "PATCH", "/kv/log", None, &[], Bytes::from(format!("{},", i % 10))).await.status })
        })
        .collect();
    for write in writes {
        assert_eq!(write.await.unwrap(), 200);
    }
    assert_eq!(node.kv("DELETE", "one", "").await, "1");
    assert_eq!(node.kv("PUT", "two", "2").await, "1");
    drop(node); // SIGKILL: no shutdown, no final sync

    let node = Process::serve(data.path(), None).await;
    assert_eq!(node.kv("GET", "two", "").await, "12", "the last acknowledged insert");
    assert_eq!(node.kv("GET", "one", "").await, "0", "the acknowledged remove");
    let log = node.kv("GET", "log", "").await;
    assert_eq!(log.len(), 1 + 40 * 2, "all 40 acknowledged appends: {log}");
}

/// A guest writes, then sends a request out: the write is durable before
/// the request leaves, so a node killed the moment the upstream sees it
/// keeps the write (KV records are written out in batches, but never after
/// anything that could tell of them).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_is_durable_before_the_guests_outbound_request_leaves() {
    let data = tempfile::tempdir().unwrap();
    let config = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(config.path(), "[limits]\noutbound_hosts = [\"127.0.0.1\"]\n").unwrap();
    let upstream = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/", upstream.local_addr().unwrap());
    let node = Process::serve(data.path(), Some(config.path())).await;
    node.deploy("kv", "kv").await;
    node.deploy("kf", "kv_fetch").await;

    let client = send(node.http, "POST", "/kf", &url).await.unwrap();
    let (mut from_guest, _) = tokio::time::timeout(Duration::from_secs(30), upstream.accept()).await.expect("the guest's request").unwrap();
    let mut first = [0; 16];
    assert!(from_guest.read(&mut first).await.unwrap() > 0, "the guest's request arrived");
    drop(node); // SIGKILL while the guest waits for the answer
    drop((client, from_guest));

    let node = Process::serve(data.path(), Some(config.path())).await;
    assert_eq!(node.kv("GET", "fetch", "").await, format!("1{url}"), "the write made before the request went out");
}

/// Sends one request on a connection of its own (closed after the
/// answer) and returns the connection without waiting for the answer, so
/// that the node can be killed meanwhile.
async fn send(http: SocketAddr, method: &str, path: &str, body: &str) -> std::io::Result<tokio::net::TcpStream> {
    let mut stream = tokio::net::TcpStream::connect(http).await?;
    let call = format!("{method} {path} HTTP/1.1\r\nhost: localhost\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}", body.len());
    stream.write_all(call.as_bytes()).await?;
    Ok(stream)
}

/// One `PUT /kv/KEY`; `true` if the node answered 200 (the write
/// acknowledged), `false` on any failure.
async fn put(http: SocketAddr, key: &str) -> bool {
    let Ok(mut stream) = send(http, "PUT", &format!("/kv/{key}"), "x").await else { return false };
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).await.is_ok() && answer.starts_with(b"HTTP/1.1 200")
}

/// Writers keep writing while the node is killed: every write acknowledged
/// before the kill, batched with others or not, is there after a restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_acknowledged_under_load_survive_kill_9() {
    const WRITERS: usize = 16;
    let data = tempfile::tempdir().unwrap();
    let node = Process::serve(data.path(), None).await;
    node.deploy("kv", "kv").await;
    let stop = Arc::new(AtomicBool::new(false));
    let total = Arc::new(AtomicUsize::new(0));
    let writers: Vec<_> = (0..WRITERS)
        .map(|writer| {
            let (http, stop, total) = (node.http, stop.clone(), total.clone());
            tokio::spawn(async move {
                let mut acknowledged = 0;
                while !stop.load(Ordering::Relaxed) && put(http, &format!("w{writer}-{acknowledged}")).await {
                    acknowledged += 1;
                    total.fetch_add(1, Ordering::Relaxed);
                }
                acknowledged
            })
        })
        .collect();
    // Killed while the writers are in full swing.
    let started = Instant::now();
    while total.load(Ordering::Relaxed) < 4 * WRITERS {
        assert!(started.elapsed() < Duration::from_secs(30), "the writers did not get going");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    drop(node);
    stop.store(true, Ordering::Relaxed);
    let mut acknowledged = Vec::new();
    for writer in writers {
        acknowledged.push(writer.await.unwrap());
    }
    assert!(acknowledged.iter().sum::<usize>() >= WRITERS, "the writers got going: {acknowledged:?}");

    let node = Process::serve(data.path(), None).await;
    for (writer, &count) in acknowledged.iter().enumerate() {
        for i in 0..count {
            assert_eq!(node.kv("GET", &format!("w{writer}-{i}"), "").await, "1x", "writer {writer}'s write {i} of {count}");
        }
    }
}

/// A guest writes, then runs on: its write reaches the operating system
/// within an epoch tick, not only when the request ends, so a node killed
/// while the guest still runs keeps it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_is_durable_while_the_guest_runs_on() {
    let data = tempfile::tempdir().unwrap();
    let node = Process::serve(data.path(), None).await;
    node.deploy("kv", "kv").await;
    node.deploy("ks", "kv_spin").await;
    let idle = cpu_ticks(&node.child.id().to_string());
    let client = send(node.http, "GET", "/ks", "").await.unwrap();
    // The guest has written and spun for several epoch ticks once the node
    // has used 0.1 s of CPU more than idle; its fuel lasts far longer.
    let started = Instant::now();
    while cpu_ticks(&node.child.id().to_string()) < idle + 10 {
        assert!(started.elapsed() < Duration::from_secs(30), "the guest did not run");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    drop(node);
    drop(client);

    let node = Process::serve(data.path(), None).await;
    assert_eq!(node.kv("GET", "spun", "").await, "11", "the write made before the guest spun");
}
