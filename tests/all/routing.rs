//! Routing: Host → site → module, the `index` fallback, what the guest sees
//! of the request target, and limits applied before a guest runs.

use std::time::{Duration, Instant};

use terrafirma::config::{Limits, SiteConfig};

use crate::harness::{TestNode, fixture, say};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn module_is_named_by_first_segment_with_or_without_wasm() {
    let node = TestNode::start().await;
    node.deploy_ok("_default", "hello", fixture("echo_path")).await;

    for target in ["/hello", "/hello.wasm", "/hello/a/b?x=1", "/hello.wasm/a/b?x=1", "/hello?q=%20z"] {
        let resp = node.get(target).await;
        assert_eq!(resp.status, 200, "{target}: {resp:?}");
        assert_eq!(resp.text(), target, "the guest sees the whole request target");
    }
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn host_header_selects_the_site() {
    let node = TestNode::start().await;
    node.deploy_ok("_default", "who", say("default site")).await;
    node.deploy_ok("example.com", "who", say("example.com site")).await;

    for host in ["example.com", "Example.COM:8080", "EXAMPLE.com"] {
        let resp = node.get_on(host, "/who").await;
        assert_eq!((resp.status, resp.text().as_str()), (200, "example.com site"), "Host {host}");
    }
    for host in ["unknown.test", "unknown.test:8080", "127.0.0.1"] {
        let resp = node.get_on(host, "/who").await;
        assert_eq!((resp.status, resp.text().as_str()), (200, "default site"), "Host {host}");
    }
    // The client's own Host (127.0.0.1:PORT) is no site either.
    assert_eq!(node.get("/who").await.text(), "default site");
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_known_site_does_not_fall_back_to_default_modules() {
    let node = TestNode::start().await;
    node.deploy_ok("_default", "only-default", say("default")).await;
    node.deploy_ok("example.com", "other", say("other")).await;

    let resp = node.get_on("example.com", "/only-default").await;
    node.assert_error(&resp, 404, "not-found", "only-default");
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn index_serves_root_and_unknown_first_segments() {
    let node = TestNode::start().await;
    node.deploy_ok("example.com", "index", fixture("echo_path")).await;
    node.deploy_ok("example.com", "hello", fixture("hello")).await;

    for target in ["/", "/compare/a/to/b", "/nomodule.wasm?x=1", "/?q=1"] {
        let resp = node.get_on("example.com", target).await;
        assert_eq!(resp.status, 200, "{target}: {resp:?}");
        assert_eq!(resp.text(), target, "index sees the whole target");
    }
    // A segment that names a module still goes to that module.
    assert_eq!(node.get_on("example.com", "/hello/x").await.text(), "Hello World!\n");
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_index_unknown_paths_are_not_found() {
    let node = TestNode::start().await;
    node.deploy_ok("_default", "hello", fixture("hello")).await;

    let resp = node.get("/nomodule/a?b=1").await;
    node.assert_error(&resp, 404, "not-found", "nomodule");
    let resp = node.get("/").await;
    assert_eq!(resp.status, 404, "{resp:?}");
    assert_eq!(resp.error_kind(), Some("not-found"));

    // A site nobody deployed to falls back to _default, which has no index either.
    let resp = node.get_on("nobody.test", "/").await;
    assert_eq!((resp.status, resp.error_kind()), (404, Some("not-found")), "{resp:?}");
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_body_over_the_limit_is_refused() {
    let node = TestNode::start_with(|c| c.limits.max_request_bytes = 1024).await;
    node.deploy_ok("_default", "echo", fixture("echo_request")).await;

    let resp = node.send("POST", "/echo", None, &[], vec![b'a'; 4096]).await;
    node.assert_error(&resp, 413, "body-too-large", "echo");

    let resp = node.send("POST", "/echo", None, &[], vec![b'a'; 1024]).await;
    assert_eq!(resp.status, 200, "a body at the limit is fine: {resp:?}");
    assert!(resp.body.ends_with(&[b'a'; 1024]));
    node.assert_still_serving().await;
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn site_limits_override_the_defaults() {
    let node = TestNode::start_with(|c| {
        c.limits.timeout_ms = 1500;
        c.limits.fuel = 1 << 50;
        let limits = Limits { timeout_ms: 100, ..c.limits.clone() };
        c.sites.insert("slow.test".into(), SiteConfig { token: None, limits });
    })
    .await;
    node.deploy_ok("slow.test", "spin", fixture("spin")).await;
    node.deploy_ok("_default", "spin", fixture("spin")).await;

    let start = Instant::now();
    let resp = node.get_on("slow.test", "/spin").await;
    let site_elapsed = start.elapsed();
    node.assert_error(&resp, 504, "timeout", "spin");
    assert!(site_elapsed < Duration::from_millis(1200), "slow.test's 100 ms limit took {site_elapsed:?}");

    let start = Instant::now();
    let resp = node.get("/spin").await;
    let default_elapsed = start.elapsed();
    node.assert_error(&resp, 504, "timeout", "spin");
    assert!(default_elapsed >= Duration::from_millis(1300), "_default keeps the 1500 ms default, but gave up after {default_elapsed:?}");
    node.assert_still_serving().await;
    node.stop().await;
}
