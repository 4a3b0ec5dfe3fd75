//! HTTPS: a certificate per site chosen by the TLS server name, HTTP/1.1
//! and HTTP/2 by ALPN, installed through the admin API or as files, bad
//! pairs refused, plain HTTP on the TLS port cut and counted. Talked to with
//! curl, as a user would.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::harness::{EVENTUALLY, TestNode, fixture, say};

fn self_signed(name: &str) -> (String, String) {
    let cert = rcgen::generate_simple_self_signed(vec![name.to_owned()]).unwrap();
    (cert.cert.pem(), cert.signing_key.serialize_pem())
}

/// `curl --cacert CA https://HOST:PORT/PATH` resolved to the node; the
/// HTTP version, status and body, or curl's exit code.
fn curl(node: &TestNode, ca: &Path, host: &str, path: &str, http2: bool) -> Result<(String, u16, String), i32> {
    let addr = node.node.tls_addr.expect("the test node has a TLS listener");
    let out = Command::new("curl")
        .args(["-s", "--max-time", "10", "--cacert"])
        .arg(ca)
        .args(["--resolve", &format!("{host}:{}:127.0.0.1", addr.port())])
        .arg(if http2 { "--http2" } else { "--http1.1" })
        .args(["-w", "\n%{http_version} %{http_code}"])
        .arg(format!("https://{host}:{}{path}", addr.port()))
        .output()
        .expect("curl runs (bash scripts/setup.sh installs it)");
    if !out.status.success() {
        return Err(out.status.code().unwrap_or(-1));
    }
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, trailer) = text.rsplit_once('\n').unwrap();
    let (version, status) = trailer.split_once(' ').unwrap();
    Ok((version.to_owned(), status.parse().unwrap(), body.to_owned()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_sites_with_two_certificates_on_one_port_over_http1_and_http2() {
    let node = TestNode::start_with(|c| c.tls_listen = Some("127.0.0.1:0".parse().unwrap())).await;
    let dir = tempfile::TempDir::new().unwrap();
    node.deploy_ok("a.test", "hello", say("site a")).await;
    node.deploy_ok("b.test", "hello", say("site b")).await;
    let mut cas = Vec::new();
    for site in ["a.test", "b.test"] {
        let (cert, key) = self_signed(site);
        let ca = dir.path().join(format!("{site}.pem"));
        std::fs::write(&ca, &cert).unwrap();
        let resp = node.admin("PUT", &format!("/v1/sites/{site}/certificate"), &[], format!("{cert}{key}")).await;
        assert_eq!(resp.status, 200, "{resp:?}");
        cas.push(ca);
    }
    let (a, b) = (cas[0].clone(), cas[1].clone());
    let node = std::sync::Arc::new(node);
    let run = |ca: std::path::PathBuf, host: &'static str, http2: bool| {
        let node = node.clone();
        tokio::task::spawn_blocking(move || curl(&node, &ca, host, "/hello", http2))
    };
    assert_eq!(run(a.clone(), "a.test", false).await.unwrap(), Ok(("1.1".into(), 200, "site a".into())));
    assert_eq!(run(a.clone(), "a.test", true).await.unwrap(), Ok(("2".into(), 200, "site a".into())), "HTTP/2 by ALPN");
    assert_eq!(run(b.clone(), "b.test", true).await.unwrap(), Ok(("2".into(), 200, "site b".into())));
    // Each name gets its own site's certificate: a's is no good for b.
    assert!(run(a.clone(), "b.test", false).await.unwrap().is_err(), "b.test was served a.test's certificate");
    // A name with no certificate and no `_default` one: the handshake fails.
    assert!(run(a.clone(), "c.test", false).await.unwrap().is_err());
    let node = std::sync::Arc::try_unwrap(node).ok().expect("no curl left running");
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_pairs_are_refused_files_are_picked_up_and_plain_http_is_cut() {
    let node = TestNode::start_with(|c| c.tls_listen = Some("127.0.0.1:0".parse().unwrap())).await;
    node.deploy_ok("_default", "hello", fixture("hello")).await;
    let dir = tempfile::TempDir::new().unwrap();
    let (cert, key) = self_signed("localhost");
    let (_, other_key) = self_signed("localhost");
    let ca = dir.path().join("ca.pem");
    std::fs::write(&ca, &cert).unwrap();

    // The `_default` pair, written as files: served within a rescan.
    std::fs::write(node.data().join("certs/_default.key"), &key).unwrap();
    std::fs::write(node.data().join("certs/_default.pem"), &cert).unwrap();
    let check = |node: &TestNode| curl(node, &ca, "localhost", "/hello", false);
    let started = Instant::now();
    let served = loop {
        match check(&node) {
            Ok(answer) => break answer,
            Err(_) if started.elapsed() < EVENTUALLY => std::thread::sleep(Duration::from_millis(100)),
            Err(code) => panic!("the certificate files were not picked up (curl exit {code})"),
        }
    };
    assert_eq!(served, ("1.1".into(), 200, "Hello World!\n".into()));

    // A key that is not the certificate's, or no key at all: 400, the old pair stays.
    for bad in [format!("{cert}{other_key}"), cert.clone(), "not pem".to_owned()] {
        let resp = node.admin("PUT", "/v1/sites/_default/certificate", &[], bad).await;
        assert_eq!(resp.status, 400, "{resp:?}");
    }
    assert!(check(&node).is_ok(), "the old certificate keeps serving");
    assert_eq!(std::fs::read_to_string(node.data().join("certs/_default.pem")).unwrap(), cert, "the files are unchanged");

    // Plain HTTP sent to the TLS port is cut, and counted.
    let failures =
        async || crate::harness::sample_value(&node.admin_get("/metrics").await.text(), "terrafirma_tls_handshake_failures_total");
    let before = failures().await;
    let plain = std::net::TcpStream::connect(node.node.tls_addr.unwrap()).unwrap();
    {
        use std::io::{Read, Write};
        let mut plain = plain;
        plain.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        plain.write_all(b"GET /hello HTTP/1.1\r\nHost: localhost\r\n\r\n").unwrap();
        let mut answer = Vec::new();
        let _ = plain.read_to_end(&mut answer);
        assert!(!String::from_utf8_lossy(&answer).contains("Hello World"), "plain HTTP was served on the TLS port");
    }
    assert_eq!(failures().await, before + 1.0, "the cut connection is counted");
    assert!(check(&node).is_ok(), "HTTPS still served");
    assert_eq!(node.get("/hello").await.status, 200, "plain HTTP on its own port still served");
    assert_eq!(node.admin("GET", "/v1/sites/_default/certificate", &[], Bytes::new()).await.status, 405);
    node.stop().await;
}
