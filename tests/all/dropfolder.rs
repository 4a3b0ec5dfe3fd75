//! The data directory as a drop folder: `DATA/sites/SITE/NAME.wasm` files
//! deploy, redeploy and undeploy modules, and survive a restart.

use tempfile::TempDir;

use crate::harness::{TestNode, fixture, say, say_wasm};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropped_file_is_served_replaced_and_removed() {
    let node = TestNode::start().await;
    let file = node.module_file("_default", "dropped");
    std::fs::create_dir_all(file.parent().unwrap()).unwrap();

    std::fs::write(&file, say_wasm("dropped one")).unwrap();
    let resp = node.poll(None, "/dropped", |r| r.status == 200).await;
    assert_eq!((resp.status, resp.text().as_str()), (200, "dropped one"), "{resp:?}");

    std::fs::write(&file, say_wasm("dropped two")).unwrap();
    let resp = node.poll(None, "/dropped", |r| r.text() == "dropped two").await;
    assert_eq!((resp.status, resp.text().as_str()), (200, "dropped two"), "{resp:?}");

    std::fs::remove_file(&file).unwrap();
    let resp = node.poll(None, "/dropped", |r| r.status == 404).await;
    node.assert_error(&resp, 404, "not-found", "dropped");
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropped_file_can_start_a_new_site() {
    let node = TestNode::start().await;
    let file = node.module_file("drop.test", "index");
    std::fs::create_dir_all(file.parent().unwrap()).unwrap();
    std::fs::write(&file, say_wasm("new site")).unwrap();

    let resp = node.poll(Some("drop.test"), "/anything", |r| r.status == 200).await;
    assert_eq!((resp.status, resp.text().as_str()), (200, "new site"), "{resp:?}");
    let resp = node.admin_get("/v1/sites/drop.test/modules/index").await;
    assert_eq!(resp.status, 200, "a dropped module is listed like an uploaded one: {resp:?}");
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn files_present_at_start_are_served() {
    let dir = TempDir::new().unwrap();
    let site = dir.path().join("sites/_default");
    std::fs::create_dir_all(&site).unwrap();
    std::fs::write(site.join("early.wasm"), say_wasm("was here first")).unwrap();

    let node = TestNode::start_in(dir).await;
    let resp = node.get("/early").await;
    assert_eq!((resp.status, resp.text().as_str()), (200, "was here first"), "{resp:?}");
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broken_file_does_not_disturb_the_node() {
    let node = TestNode::start().await;
    node.deploy_ok("_default", "hello", fixture("hello")).await;
    node.deploy_ok("_default", "broken", say_wasm("the version before")).await;
    let file = node.module_file("_default", "broken");
    std::fs::write(&file, b"\0asm\x01\0\0\0 this is not a module").unwrap();
    // A module dropped after the broken file: once it serves, a scan has
    // seen the broken file too.
    std::fs::write(node.module_file("_default", "marker"), say_wasm("marker")).unwrap();
    let marker = node.poll(None, "/marker", |r| r.status == 200).await;
    assert_eq!(marker.text(), "marker", "{marker:?}");

    // The version before keeps serving until the file is fixed.
    let resp = node.get("/broken").await;
    assert_eq!((resp.status, resp.text().as_str()), (200, "the version before"), "{resp:?}");
    node.assert_still_serving().await;

    // Fixing the file deploys it.
    std::fs::write(&file, say_wasm("fixed")).unwrap();
    let resp = node.poll(None, "/broken", |r| r.text() == "fixed").await;
    assert_eq!((resp.status, resp.text().as_str()), (200, "fixed"), "{resp:?}");
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn modules_survive_a_restart() {
    let node = TestNode::start().await;
    node.deploy_ok("_default", "hello", fixture("hello")).await;
    node.deploy_ok("example.com", "index", say("example index")).await;
    node.deploy_ok("_default", "replaced", say("old")).await;
    node.deploy_ok("_default", "replaced", say("new")).await;

    let node = node.restart().await;
    assert_eq!(node.get("/hello").await.text(), "Hello World!\n");
    assert_eq!(node.get_on("example.com", "/some/path").await.text(), "example index");
    assert_eq!(node.get("/replaced").await.text(), "new", "the last version survives");
    let list = node.admin_get("/v1/sites/_default/modules").await.json();
    assert_eq!(list["modules"].as_array().map(Vec::len), Some(2), "{list}");
    node.stop().await;
}
