//! wasi:http/proxy components (`examples/wasi-http`, Rust with the `wasi`
//! crate) deployed and called over HTTP: streaming both ways, headers and
//! status, outbound requests under the site's rules, faults mapped to
//! statuses, and components the node does not serve refused at upload.

use bytes::Bytes;
use terrafirma::config::{Config, Limits, SiteConfig};

use crate::examples::built_examples;
use crate::harness::{Resp, TestNode};
use crate::upstream::Upstream;

/// The site whose guests may reach 127.0.0.1.
const ALLOWED: &str = "allowed.test";

fn component(name: &str) -> Vec<u8> {
    std::fs::read(built_examples().join(name)).unwrap_or_else(|e| panic!("{name}: {e}"))
}

/// A node with the wasi:http example deployed as `wh` on `_default` and on
/// `ALLOWED`, `edit` applied to the default limits.
async fn node_with(edit: impl FnOnce(&mut Limits)) -> TestNode {
    tokio::task::spawn_blocking(built_examples).await.unwrap();
    let node = TestNode::start_with(|config: &mut Config| {
        config.limits.max_upload_bytes = 16 << 20;
        edit(&mut config.limits);
        let limits = Limits { outbound_hosts: vec!["127.0.0.1".into()], ..config.limits.clone() };
        config.sites.insert(ALLOWED.into(), SiteConfig { token: None, limits });
    })
    .await;
    for site in ["_default", ALLOWED] {
        let deployed = node.deploy_ok(site, "wh", component("wasi-http.wasm")).await;
        assert_eq!(deployed.json()["abi"], "wasi-http", "{deployed:?}");
        assert_eq!(deployed.json()["warnings"], serde_json::json!([]), "{deployed:?}");
    }
    node
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wasi_http_hello_headers_and_status() {
    let node = node_with(|_| {}).await;
    let hello = node.get("/wh").await;
    assert_eq!((hello.status, hello.text().as_str()), (200, "Hello, wasi:http!\n"), "{hello:?}");
    assert_eq!(hello.header_values("content-type"), ["text/plain"]);
    let teapot = node.get("/wh.wasm/status/418").await;
    assert_eq!((teapot.status, teapot.header_values("x-status")), (418, vec!["418".to_owned()]), "{teapot:?}");
    node.stop().await;
}

/// A body larger than any one buffer goes in and comes back as it streams;
/// the guest sees the client's headers and the node's client address.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_echo_streams_a_large_body_both_ways() {
    let node = node_with(|_| {}).await;
    let body: Vec<u8> = (0..3 << 20).map(|i: u32| (i * 7 % 251) as u8).collect();
    let headers = [("x-round", "trip"), ("x-terrafirma-client-ip", "6.6.6.6")];
    let echo = node.send("POST", "/wh/echo", None, &headers, Bytes::from(body.clone())).await;
    assert_eq!(echo.status, 200);
    assert!(echo.body == body, "{} bytes back of {}", echo.body.len(), body.len());
    assert_eq!(echo.header_values("x-round"), ["trip"]);
    assert_eq!(echo.header_values("x-terrafirma-client-ip"), ["127.0.0.1"], "the node's value, not the client's");
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_and_response_limits_hold_while_streaming() {
    let node = node_with(|limits| {
        limits.max_request_bytes = 100_000;
        limits.max_response_bytes = 100_000;
    })
    .await;
    let fits = node.get("/wh/big/100000").await;
    assert_eq!((fits.status, fits.body.len()), (200, 100_000));
    // Past the limit the response is cut: the client never sees it end as
    // if it were complete.
    let over = try_get(node.node.http_addr, "/wh/big/300000").await;
    assert!(over.is_err(), "a response over the limit must be cut: {over:?}");
    let declared = node.send("POST", "/wh/echo", None, &[], Bytes::from(vec![b'x'; 100_001])).await;
    node.assert_error(&declared, 413, "body-too-large", "wh");
    node.assert_still_serving().await;
    node.stop().await;
}

/// A GET whose response may be cut: `Err` when the body did not arrive whole.
async fn try_get(addr: std::net::SocketAddr, path: &str) -> Result<usize, String> {
    use http_body_util::BodyExt;
    let client: hyper_util::client::legacy::Client<_, http_body_util::Full<Bytes>> =
        hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new()).build_http();
    let uri: http::Uri = format!("http://{addr}{path}").parse().unwrap();
    let response = client.get(uri).await.map_err(|e| e.to_string())?;
    let body = response.into_body().collect().await.map_err(|e| e.to_string())?;
    Ok(body.to_bytes().len())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outgoing_requests_obey_the_sites_rules() {
    let upstream = Upstream::start().await;
    let node = node_with(|_| {}).await;
    let url = upstream.url("/hello");
    let allowed = node.send("GET", &format!("/wh/fetch?url={url}"), Some(ALLOWED), &[], Bytes::new()).await;
    assert_eq!(allowed.status, 200, "{allowed:?}");
    assert_eq!(allowed.text(), "hello from upstream", "{allowed:?}");
    let refused = node.get(&format!("/wh/fetch?url={url}")).await;
    assert_eq!(refused.status, 502, "off the site's list: {refused:?}");
    assert!(refused.text().contains("HttpRequestDenied"), "{refused:?}");
    let admin = format!("http://{}/healthz", node.node.admin_addr);
    let guarded = node.send("GET", &format!("/wh/fetch?url={admin}"), Some(ALLOWED), &[], Bytes::new()).await;
    assert_eq!(guarded.status, 502, "the admin port is never reached: {guarded:?}");
    let flood = node.send("GET", &format!("/wh/flood?url={url}"), Some(ALLOWED), &[], Bytes::new()).await;
    let cap = terrafirma::MAX_OUTBOUND_REQUESTS;
    assert_eq!(flood.text().trim_end(), format!("sent={cap} refused={}", 100 - cap), "{flood:?}");
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn faults_map_to_statuses_and_the_node_keeps_serving() {
    let node = node_with(|limits| {
        limits.memory_mb = 8;
        limits.fuel = 50_000_000;
    })
    .await;
    node.assert_error(&node.get("/wh/trap").await, 500, "trap", "wh");
    node.assert_error(&node.get("/wh/no-answer").await, 500, "trap", "wh");
    node.assert_error(&node.get("/wh/spin").await, 500, "fuel", "wh");
    node.assert_error(&node.get("/wh/grow").await, 500, "memory", "wh");
    let late = try_get(node.node.http_addr, "/wh/trap-late").await;
    assert!(late.is_err(), "a response the guest trapped in is cut, never complete: {late:?}");
    assert_eq!(node.get("/wh").await.status, 200, "still serving");
    node.stop().await;

    let node = TestNode::start_with(|config| {
        config.limits.max_upload_bytes = 16 << 20;
        config.limits.timeout_ms = 300;
        config.limits.fuel = u64::MAX / 2;
    })
    .await;
    node.deploy_ok("_default", "wh", component("wasi-http.wasm")).await;
    node.assert_error(&node.get("/wh/spin").await, 504, "timeout", "wh");
    node.stop().await;
}

async fn refused_upload(node: &TestNode, bytes: impl Into<Bytes>) -> Resp {
    let resp = node.deploy("_default", "other", bytes).await;
    assert_eq!(resp.status, 400, "{resp:?}");
    resp
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn components_the_node_does_not_serve_are_refused_at_upload() {
    tokio::task::spawn_blocking(built_examples).await.unwrap();
    let node = TestNode::start_with(|config| config.limits.max_upload_bytes = 16 << 20).await;
    let command = refused_upload(&node, component("rust-wasi-p2.wasm")).await;
    assert!(command.json()["error"].as_str().unwrap().contains("wasi:http/proxy"), "says what was expected: {command:?}");
    let unknown = r#"(component
        (import "example:unknown/thing" (instance))
        (import "other:pkg/iface@1.0.0" (instance))
        (instance $empty)
        (export "wasi:http/incoming-handler@0.2.0" (instance $empty)))"#;
    let unknown = refused_upload(&node, unknown).await;
    let error = unknown.json()["error"].as_str().unwrap().to_owned();
    assert!(error.contains("example:unknown/thing") && error.contains("other:pkg/iface@1.0.0"), "lists them all: {error}");
    let nothing = refused_upload(&node, "(component)").await;
    assert!(nothing.json()["error"].as_str().unwrap().contains("wasi:http/incoming-handler"), "{nothing:?}");
    assert_eq!(node.admin_get("/v1/sites/_default/modules/other").await.status, 404, "nothing changed");
    node.stop().await;
}
