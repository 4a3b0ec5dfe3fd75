//! WASI CGI handlers end to end: a Rust-built WASI command
//! (`examples/rust-wasi`) deployed and called over HTTP.

use bytes::Bytes;
use terrafirma::config::{Limits, SiteConfig};

use crate::examples::built_examples;
use crate::harness::TestNode;

fn rust_wasi() -> Vec<u8> {
    std::fs::read(built_examples().join("rust-wasi.wasm")).expect("rust-wasi.wasm")
}

/// A node with the CGI guest deployed as `_default/cgi`, `limits` adjusted by `edit`.
async fn node_with(edit: impl FnOnce(&mut Limits)) -> TestNode {
    tokio::task::spawn_blocking(built_examples).await.unwrap();
    let node = TestNode::start_with(|config| {
        config.limits.max_upload_bytes = 16 << 20;
        edit(&mut config.limits);
        config.sites.insert("cgi.test".into(), SiteConfig { token: None, limits: config.limits.clone() });
    })
    .await;
    let deployed = node.deploy_ok("_default", "cgi", rust_wasi()).await;
    assert_eq!(deployed.json()["abi"], "wasi-cgi", "{deployed:?}");
    node
}

/// The guest's `NAME=value` lines for `path`.
async fn cgi_env(node: &TestNode, host: Option<&str>, path: &str, headers: &[(&str, &str)]) -> Vec<String> {
    let resp = node.send("GET", path, host, headers, Bytes::new()).await;
    assert_eq!(resp.status, 200, "{resp:?}");
    resp.text().lines().map(str::to_owned).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cgi_guest_answers_with_its_path_and_headers() {
    let node = node_with(|_| {}).await;
    let resp = node.get("/cgi.wasm/a/b").await;
    assert_eq!(resp.status, 200, "{resp:?}");
    assert_eq!(resp.header_values("content-type"), ["text/plain"]);
    assert_eq!(resp.text().trim_end(), "Hello from a Rust CGI guest! path=/a/b");
    let env = cgi_env(&node, None, "/cgi/x?env", &[("X-Custom", "yes")]).await;
    for expected in ["REQUEST_METHOD=GET", "SCRIPT_NAME=/cgi", "PATH_INFO=/x", "QUERY_STRING=env", "HTTP_X_CUSTOM=yes"] {
        assert!(env.iter().any(|line| line == expected), "{expected} in {env:?}");
    }
    node.stop().await;
}

/// The node sets the client-address headers; a client's own values never
/// reach a CGI guest, as they never reach a Terrafirma guest.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cgi_guest_never_sees_the_clients_own_address_headers() {
    let node = node_with(|_| {}).await;
    let forged = [("X-Fastly-Client-IP", "6.6.6.6"), ("Fastly-Client-IP", "6.6.6.6"), ("X-Terrafirma-Client-IP", "6.6.6.6")];
    let env = cgi_env(&node, None, "/cgi?env", &forged).await;
    assert!(!env.iter().any(|line| line.contains("6.6.6.6")), "{env:?}");
    for name in ["HTTP_X_FASTLY_CLIENT_IP", "HTTP_FASTLY_CLIENT_IP", "HTTP_X_TERRAFIRMA_CLIENT_IP"] {
        assert!(env.contains(&format!("{name}=127.0.0.1")), "{name} in {env:?}");
    }
    node.stop().await;
}

/// Output over `max_response_bytes` is an error naming the limit, never a
/// truncated 200.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cgi_output_over_the_response_limit_is_an_error() {
    let node = node_with(|limits| limits.max_response_bytes = 10_000).await;
    let fits = node.get("/cgi?stdout=10000").await;
    assert_eq!((fits.status, fits.body.len()), (200, 10_000), "{fits:?}");
    for over in ["/cgi?stdout=10001", "/cgi?stdout=200000"] {
        let resp = node.get(over).await;
        node.assert_error(&resp, 500, "response-too-large", "cgi");
        assert!(resp.text().contains("10000 bytes"), "names the limit: {resp:?}");
    }
    node.stop().await;
}

/// A guest that logs far more than the log keeps still answers: its
/// stderr is capped and the rest dropped, never an error it sees.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cgi_guest_that_logs_300_kib_still_answers() {
    let node = node_with(|_| {}).await;
    let resp = node.get("/cgi?stderr=300000").await;
    assert_eq!((resp.status, resp.text().as_str()), (200, "logged\n"), "{resp:?}");
    node.stop().await;
}

/// As the site's `index` module it serves every path, with an empty
/// `SCRIPT_NAME` unless the path names it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn as_index_the_whole_path_is_path_info() {
    let node = node_with(|_| {}).await;
    node.deploy_ok("cgi.test", "index", rust_wasi()).await;
    let env = cgi_env(&node, Some("cgi.test"), "/compare/a/to/b?env", &[]).await;
    assert!(env.contains(&"SCRIPT_NAME=".to_owned()) && env.contains(&"PATH_INFO=/compare/a/to/b".to_owned()), "{env:?}");
    let env = cgi_env(&node, Some("cgi.test"), "/index/x?env", &[]).await;
    assert!(env.contains(&"SCRIPT_NAME=/index".to_owned()) && env.contains(&"PATH_INFO=/x".to_owned()), "{env:?}");
    node.stop().await;
}
