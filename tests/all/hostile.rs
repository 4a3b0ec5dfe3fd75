//! Hostile input and rough handling at the HTTP edges: names that try to
//! leave the data directory, bytes that are not UTF-8 in paths and hosts,
//! malformed tokens and request ids, thousands of idle connections, hot
//! swaps under load, `kill -9` during uploads. Each is refused or served
//! cleanly (a 4xx, never a 5xx or a dropped node), and nothing appears on
//! disk outside the data directory.

use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::harness::*;

/// Sends `head` (raw bytes, so that they need not be valid UTF-8) and
/// `body` on a new connection and returns the status code and the whole
/// answer.
async fn raw(addr: std::net::SocketAddr, head: &[u8], body: &[u8]) -> (u16, Vec<u8>) {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let mut request = head.to_vec();
    request.extend_from_slice(format!("Content-Length: {}\r\nConnection: close\r\n\r\n", body.len()).as_bytes());
    request.extend_from_slice(body);
    stream.write_all(&request).await.unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut answer))
        .await
        .unwrap_or_else(|_| panic!("no answer to {:?}", String::from_utf8_lossy(head)))
        .unwrap();
    let status = std::str::from_utf8(&answer[..answer.len().min(12)])
        .ok()
        .and_then(|line| line.strip_prefix("HTTP/1.1 "))
        .and_then(|code| code.get(..3)?.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP answer to {:?}: {:?}", String::from_utf8_lossy(head), String::from_utf8_lossy(&answer)));
    (status, answer)
}

/// A node whose data directory is `OUTER/data`, so that anything written
/// beside it would show.
async fn node_in_a_box() -> (tempfile::TempDir, TestNode) {
    let outer = tempfile::TempDir::new().unwrap();
    let data = outer.path().join("data");
    let node = TestNode::start_with(|c| {
        c.data = data;
        c.admin_token = Some("op-secret".into());
    })
    .await;
    (outer, node)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn names_that_try_to_leave_the_data_directory_are_refused_and_write_nothing() {
    let (outer, node) = node_in_a_box().await;
    let module = wasm("hello");
    let targets = [
        "/v1/sites/..%2f..%2fescaped/modules/x",
        "/v1/sites/../modules/x",
        "/v1/sites/%2e%2e/modules/x",
        "/v1/sites/_default/modules/..",
        "/v1/sites/_default/modules/%2e%2e",
        "/v1/sites/_default/modules/.",
        "/v1/sites/_default/modules/..%2f..%2f..%2fescaped",
        "/v1/sites/_default/modules/a%2fb",
        "/v1/sites/_default/modules/a%5cb",
        "/v1/sites/a%00b/modules/x",
        "/v1/sites/%ff%fe/modules/x",
        "/v1/sites/_default/modules/%ff",
        "/v1/sites/_default/modules/.hidden",
    ];
    for target in targets {
        let head = format!("PUT {target} HTTP/1.1\r\nHost: admin\r\nAuthorization: Bearer op-secret\r\n");
        let (status, answer) = raw(node.node.admin_addr, head.as_bytes(), &module).await;
        assert!(matches!(status, 400 | 404), "{target}: {}", String::from_utf8_lossy(&answer));
    }
    let beside: Vec<_> = std::fs::read_dir(outer.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(beside, ["data"], "only the data directory exists beside it");
    let listed = node.admin("GET", "/v1/sites/_default/modules", &[("authorization", "Bearer op-secret")], "").await;
    assert_eq!(listed.status, 200, "{listed:?}");
    assert_eq!(listed.json()["modules"].as_array().map(Vec::len), Some(0), "nothing was deployed: {listed:?}");
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bytes_that_are_not_utf8_and_malformed_tokens_and_ids_get_clean_answers() {
    let (_outer, node) = node_in_a_box().await;
    let deployed = node.admin("PUT", "/v1/sites/_default/modules/hello", &[("authorization", "Bearer op-secret")], wasm("hello")).await;
    assert_eq!(deployed.status, 201, "{deployed:?}");
    let site = node.node.http_addr;

    // Not UTF-8 in the path (hyper refuses it as a URI) and in the host
    // (routed as an unknown host: the default site's module answers).
    let (status, _) = raw(site, b"GET /hello\xff\xfe HTTP/1.1\r\nHost: a.test\r\n", b"").await;
    assert!(matches!(status, 400 | 404), "{status}");
    let (status, answer) = raw(site, b"GET /hello HTTP/1.1\r\nHost: \xff\xfe.test\r\n", b"").await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&answer));
    let (status, _) = raw(site, b"GET /hello HTTP/1.1\r\nHost: \r\n", b"").await;
    assert!(matches!(status, 200 | 400), "{status}");

    // Malformed tokens on the admin port: refused, never a 5xx.
    let admin = node.node.admin_addr;
    let long = format!("Authorization: Bearer {}\r\n", "x".repeat(16 << 10));
    let tokens: [&[u8]; 7] = [
        b"Authorization: Bearer \xff\xfe\r\n",
        b"Authorization: Bearerop-secret\r\n",
        b"Authorization: Basic b3A6c2VjcmV0\r\n",
        b"Authorization: Bearer\r\n",
        b"Authorization: Bearer op-secret op-secret\r\n",
        b"Authorization: bearer OP-SECRET\r\n",
        long.as_bytes(),
    ];
    for token in tokens {
        let mut head = b"GET /v1/sites/_default/modules HTTP/1.1\r\nHost: admin\r\n".to_vec();
        head.extend_from_slice(token);
        let (status, answer) = raw(admin, &head, b"").await;
        assert!(matches!(status, 400 | 401 | 403 | 431), "{:?}: {}", String::from_utf8_lossy(token), String::from_utf8_lossy(&answer));
    }

    // Request ids that are not well formed are replaced by the node's own.
    for id in [&b"has space"[..], b"\xff\xfe", b"semi;colon", &[b'x'; 200]] {
        let mut head = b"GET /hello HTTP/1.1\r\nHost: a.test\r\nX-Request-Id: ".to_vec();
        head.extend_from_slice(id);
        head.extend_from_slice(b"\r\n");
        let (status, answer) = raw(site, &head, b"").await;
        assert_eq!(status, 200, "{}", String::from_utf8_lossy(&answer));
        let answer = String::from_utf8_lossy(&answer).to_lowercase();
        let given = answer.lines().find_map(|l| l.strip_prefix("x-request-id: ")).expect("an id on the answer").trim().to_owned();
        let (prefix, number) = given.split_once('-').unwrap_or_else(|| panic!("{given}"));
        assert!(prefix.len() == 8 && number.len() == 12, "{:?} answered with id {given:?}", String::from_utf8_lossy(id));
    }
    node.assert_still_serving().await;
    node.stop().await;
}

/// Raises this process's open-file limit as far as it may go (the node
/// runs in this process: two descriptors per connection) and returns it.
fn raise_open_files() -> u64 {
    let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: plain system calls on a local struct.
    unsafe {
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit);
        limit.rlim_cur = limit.rlim_max.min(1 << 16);
        libc::setrlimit(libc::RLIMIT_NOFILE, &limit);
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit);
    }
    limit.rlim_cur
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thousands_of_idle_connections_do_not_keep_others_from_being_served() {
    let open_files = raise_open_files();
    let idle_count = ((open_files.saturating_sub(300)) / 2).min(3000) as usize;
    assert!(idle_count >= 300, "only {open_files} open files allowed");
    let node = TestNode::start().await;
    node.deploy_ok("_default", "hello", fixture("hello")).await;
    let mut idle = Vec::with_capacity(idle_count);
    for _ in 0..idle_count {
        idle.push(TcpStream::connect(node.node.http_addr).await.unwrap());
    }
    // Half of them started a request and stopped mid-head.
    for stream in idle.iter_mut().step_by(2) {
        stream.write_all(b"GET /hello HTTP/1.1\r\nHost: a").await.unwrap();
    }
    for _ in 0..20 {
        let started = Instant::now();
        let resp = node.get("/hello").await;
        assert_eq!((resp.status, resp.text().as_str()), (200, "Hello World!\n"), "with {idle_count} idle connections");
        assert!(started.elapsed() < Duration::from_secs(1), "{:?} with {idle_count} idle connections", started.elapsed());
    }
    drop(idle);
    node.assert_still_serving().await;
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_hot_swaps_under_load_fail_no_request() {
    let node = TestNode::start().await;
    node.deploy_ok("_default", "swap", say_wasm("v0")).await;
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let clients: Vec<_> = (0..8)
        .map(|_| {
            let (http, stop) = (node.node.http_addr, stop.clone());
            tokio::spawn(async move {
                let (mut answered, mut newest) = (0u32, 0u32);
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let resp = request(http, "GET", "/swap", None, &[], bytes::Bytes::new()).await;
                    let text = resp.text();
                    let version: u32 = text.strip_prefix('v').and_then(|v| v.parse().ok()).unwrap_or_else(|| panic!("{resp:?}"));
                    assert_eq!(resp.status, 200, "{resp:?}");
                    // A client never sees an older version after a newer one.
                    assert!(version >= newest, "v{version} after v{newest}");
                    (answered, newest) = (answered + 1, version);
                }
                answered
            })
        })
        .collect();
    for version in 1..=10 {
        tokio::time::sleep(Duration::from_millis(50)).await;
        node.deploy_ok("_default", "swap", say_wasm(&format!("v{version}"))).await;
    }
    node.poll(None, "/swap", |r| r.text() == "v10").await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut answered = 0;
    for client in clients {
        answered += client.await.expect("no client saw a failed request");
    }
    assert!(answered >= 80, "only {answered} requests during the swaps");
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_during_uploads_leaves_a_whole_version_serving() {
    let data = tempfile::tempdir().unwrap();
    let node = crate::process::Process::serve(data.path(), None).await;
    let put = |admin, version: u32| async move {
        request(admin, "PUT", "/v1/sites/_default/modules/m", None, &[], say_wasm(&format!("v{version}"))).await.status
    };
    assert_eq!(put(node.admin, 0).await, 201);
    // One upload cut off halfway through its body, then whole ones in a
    // row, and the node killed while they go on.
    let mut cut = TcpStream::connect(node.admin).await.unwrap();
    let module = say_wasm("never");
    let head = format!("PUT /v1/sites/_default/modules/m HTTP/1.1\r\nHost: admin\r\nContent-Length: {}\r\n\r\n", module.len());
    cut.write_all(head.as_bytes()).await.unwrap();
    cut.write_all(&module[..module.len() / 2]).await.unwrap();
    let admin = node.admin;
    let uploads = tokio::spawn(async move {
        let mut acknowledged = 0;
        for version in 1..1000 {
            match tokio::time::timeout(Duration::from_secs(5), request_or_closed(admin, version)).await {
                Ok(Some(201 | 200)) => acknowledged = version,
                _ => break,
            }
        }
        acknowledged
    });
    tokio::time::sleep(Duration::from_millis(400)).await;
    drop(node); // SIGKILL mid-upload
    let acknowledged = uploads.await.unwrap();
    assert!(acknowledged >= 1, "no upload finished before the kill");

    let mut node = crate::process::Process::serve(data.path(), None).await;
    let resp = request(node.http, "GET", "/m", None, &[], bytes::Bytes::new()).await;
    assert_eq!(resp.status, 200, "{resp:?}");
    let served: u32 = resp.text().strip_prefix('v').and_then(|v| v.parse().ok()).unwrap_or_else(|| panic!("{resp:?}"));
    // The last acknowledged version, or the one after it if its upload
    // had been written when the kill came.
    assert!(served == acknowledged || served == acknowledged + 1, "serves v{served}, v{acknowledged} was the last acknowledged");
    // The upload cut off halfway left nothing of itself on disk. The node is
    // stopped first: its background Cranelift upgrade writes and renames
    // files in the data directory, which a walk beside it races.
    node.signal("TERM");
    node.exit_within(Duration::from_secs(10)).await;
    for file in walk(data.path()) {
        let bytes = std::fs::read(&file).unwrap();
        assert!(!bytes.windows(5).any(|w| w == b"never"), "{} holds part of the cut-off upload", file.display());
    }
}

/// A PUT of version `version`; `None` when the node went away.
async fn request_or_closed(admin: std::net::SocketAddr, version: u32) -> Option<u16> {
    let body = say_wasm(&format!("v{version}"));
    let mut stream = TcpStream::connect(admin).await.ok()?;
    let head =
        format!("PUT /v1/sites/_default/modules/m HTTP/1.1\r\nHost: admin\r\nContent-Length: {}\r\nConnection: close\r\n\r\n", body.len());
    stream.write_all(head.as_bytes()).await.ok()?;
    stream.write_all(&body).await.ok()?;
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).await.ok()?;
    std::str::from_utf8(answer.get(9..12)?).ok()?.parse().ok()
}

/// Every file under `dir`.
fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap().map(Result::unwrap) {
        if entry.file_type().unwrap().is_dir() {
            files.extend(walk(&entry.path()));
        } else {
            files.push(entry.path());
        }
    }
    files
}
