//! The durable per-site KV store (`hostcall_kvstore_*`) over HTTP: the
//! ABI's semantics, isolation between sites, sharing between a site's
//! modules, durability across a restart, and refused keys.

use bytes::Bytes;

use crate::harness::{TestNode, fixture};

async fn call(node: &TestNode, host: &str, method: &str, path: &str, body: &str) -> String {
    let resp = node.send(method, path, Some(host), &[], Bytes::from(body.to_owned())).await;
    assert_eq!(resp.status, 200, "{method} {path}: {resp:?}");
    resp.text()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn insert_upsert_append_get_remove() {
    let node = TestNode::start().await;
    node.deploy_ok("_default", "kv", fixture("kv")).await;
    let h = "any.test";
    assert_eq!(call(&node, h, "GET", "/kv/a", "").await, "0", "absent");
    assert_eq!(call(&node, h, "PUT", "/kv/a", "1").await, "1", "insert: new key");
    assert_eq!(call(&node, h, "PUT", "/kv/a", "2").await, "0", "insert: existing key, replaced");
    assert_eq!(call(&node, h, "POST", "/kv/a", "3").await, "0", "upsert: present, not set");
    assert_eq!(call(&node, h, "GET", "/kv/a", "").await, "12");
    assert_eq!(call(&node, h, "POST", "/kv/b", "x").await, "1", "upsert: absent, set");
    assert_eq!(call(&node, h, "GET", "/kv/b", "").await, "1x");
    assert_eq!(call(&node, h, "PATCH", "/kv/a", "45").await, "0", "append to an existing value");
    assert_eq!(call(&node, h, "GET", "/kv/a", "").await, "1245");
    assert_eq!(call(&node, h, "PATCH", "/kv/c", "z").await, "1", "append creates");
    assert_eq!(call(&node, h, "DELETE", "/kv/a", "").await, "1");
    assert_eq!(call(&node, h, "DELETE", "/kv/a", "").await, "0", "nothing left to remove");
    assert_eq!(call(&node, h, "GET", "/kv/a", "").await, "0");
    assert_eq!(call(&node, h, "PUT", "/kv/empty", "").await, "1", "empty values are values");
    assert_eq!(call(&node, h, "GET", "/kv/empty", "").await, "1");
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sites_are_isolated_modules_share_and_data_survives_restart() {
    let node = TestNode::start().await;
    node.deploy_ok("one.test", "kv", fixture("kv")).await;
    node.deploy_ok("one.test", "k2", fixture("kv")).await;
    node.deploy_ok("two.test", "kv", fixture("kv")).await;

    assert_eq!(call(&node, "one.test", "PUT", "/kv/count", "7").await, "1");
    assert_eq!(call(&node, "one.test", "GET", "/k2/count", "").await, "17", "the site's modules share its store");
    assert_eq!(call(&node, "two.test", "GET", "/kv/count", "").await, "0", "another site sees nothing");
    assert_eq!(call(&node, "two.test", "PUT", "/kv/count", "9").await, "1");
    assert_eq!(call(&node, "one.test", "GET", "/kv/count", "").await, "17", "and changes nothing");

    let node = node.restart().await;
    assert_eq!(call(&node, "one.test", "GET", "/kv/count", "").await, "17", "durable across a restart");
    assert_eq!(call(&node, "two.test", "GET", "/kv/count", "").await, "19");
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_empty_or_over_the_limit_fail_and_the_request_goes_on() {
    let node = TestNode::start().await;
    node.deploy_ok("_default", "kv", fixture("kv")).await;
    let long = format!("/kv/{}", "k".repeat(1025));
    assert_eq!(call(&node, "x.test", "PUT", &long, "v").await, "0", "key over 1 KiB refused");
    assert_eq!(call(&node, "x.test", "GET", &long, "").await, "0");
    let ok = format!("/kv/{}", "k".repeat(1024));
    assert_eq!(call(&node, "x.test", "PUT", &ok, "v").await, "1", "a 1 KiB key is fine");
    // An empty key (fjall would panic on it) is refused like a long one.
    for method in ["PUT", "POST", "PATCH", "DELETE", "GET"] {
        assert_eq!(call(&node, "x.test", method, "/kv/", "v").await, "0", "{method} of an empty key refused");
    }
    node.assert_still_serving().await;
    node.stop().await;
}
