//! Pre-initialised images: a guest's `_initialize` run once at upload where
//! that cannot change what it answers, on every request where it could.

use terrafirma::config::{Limits, SiteConfig};

use crate::harness::{TestNode, fixture};

/// The node with a second site, `slow.test`, that runs `_initialize` per request.
async fn node_with_a_site_without_preinit() -> TestNode {
    TestNode::start_with(|c| {
        let limits = Limits { preinitialize: false, ..c.limits.clone() };
        c.sites.insert("slow.test".into(), SiteConfig { token: None, limits });
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pure_initialize_runs_once_at_upload_and_answers_the_same() {
    let node = node_with_a_site_without_preinit().await;
    let snapshot = node.deploy_ok("_default", "primes", fixture("heavy_init")).await.json();
    assert_eq!(snapshot["initialization"], "snapshot", "{snapshot}");
    assert!(snapshot["initialization_reason"].is_null(), "{snapshot}");
    let per_request = node.deploy_ok("slow.test", "primes", fixture("heavy_init")).await.json();
    assert_eq!(per_request["initialization"], "per-request", "{per_request}");
    assert_eq!(per_request["initialization_reason"], "turned off for this site (preinitialize = false)", "{per_request}");

    for _ in 0..3 {
        let fast = node.get("/primes").await;
        let slow = node.get_on("slow.test", "/primes").await;
        assert_eq!((fast.status, fast.text().as_str()), (200, "primes=17984"), "{fast:?}");
        assert_eq!((slow.status, slow.text().as_str()), (200, "primes=17984"), "{slow:?}");
    }
    let described = node.admin_get("/v1/sites/_default/modules/primes").await.json();
    assert_eq!(described["initialization"], "snapshot", "{described}");

    // A restart loads the cached artifact and still knows what it is.
    let node = node.restart().await;
    let resp = node.get("/primes").await;
    assert_eq!((resp.status, resp.text().as_str()), (200, "primes=17984"), "{resp:?}");
    let described = node.admin_get("/v1/sites/_default/modules/primes").await.json();
    assert_eq!(described["initialization"], "snapshot", "{described}");
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_initialize_that_reads_the_clock_or_randomness_runs_per_request() {
    let node = TestNode::start().await;
    for (name, import) in [("init_time", "env::hostcall_time_now"), ("init_random", "wasi_snapshot_preview1::random_get")] {
        let answer = node.deploy_ok("_default", name, fixture(name)).await.json();
        assert_eq!(answer["initialization"], "per-request", "{answer}");
        let reason = answer["initialization_reason"].as_str().unwrap_or_default();
        assert!(reason.contains(import), "the reason names {import}: {answer}");
        let path = format!("/{name}");
        let answers: std::collections::HashSet<String> = {
            let mut seen = std::collections::HashSet::new();
            for _ in 0..5 {
                let resp = node.get(&path).await;
                assert_eq!(resp.status, 200, "{resp:?}");
                seen.insert(resp.text());
                tokio::time::sleep(std::time::Duration::from_millis(2)).await;
            }
            seen
        };
        assert!(answers.len() > 1, "{name}: each request runs _initialize anew, so answers differ: {answers:?}");
    }
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_initialize_that_fails_at_upload_fails_each_request_as_before() {
    let node = TestNode::start().await;
    let answer = node.deploy_ok("_default", "bad-init", fixture("init_trap")).await.json();
    assert_eq!(answer["initialization"], "per-request", "{answer}");
    assert!(answer["initialization_reason"].as_str().unwrap_or_default().contains("failed"), "{answer}");
    node.assert_error(&node.get("/bad-init").await, 500, "trap", "bad-init");
    let none = node.deploy_ok("_default", "hello", fixture("hello")).await.json();
    assert_eq!(none["initialization"], "none", "{none}");
    node.stop().await;
}
