//! The admin API: deploy, replace, list, inspect, delete, refuse bad
//! uploads without touching what is served, authentication, health.

use std::time::Instant;

use bytes::Bytes;
use serde_json::Value;
use sha2::{Digest, Sha256};
use terrafirma::config::SiteConfig;

use crate::harness::{EVENTUALLY, Resp, TestNode, fixture, say, say_wasm, wasm};

fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// The fields `docs/admin-api.md` promises in an upload's answer.
fn assert_upload_report(resp: &Resp, site: &str, name: &str) -> Value {
    let json = resp.json();
    assert_eq!(json["site"], site, "{json}");
    assert_eq!(json["name"], name, "{json}");
    assert_eq!(json["abi"], "terrafirma", "{json}");
    let sha = json["sha256"].as_str().unwrap_or_else(|| panic!("sha256: {json}"));
    assert!(sha.len() == 64 && sha.bytes().all(|b| b.is_ascii_hexdigit()), "sha256 {sha:?}");
    assert!(json["bytes"].as_u64().is_some_and(|b| b > 0), "bytes: {json}");
    assert!(json["compile_ms"].is_number(), "compile_ms: {json}");
    assert!(json["warnings"].is_array(), "warnings: {json}");
    json
}

fn find_module<'a>(list: &'a Value, name: &str) -> Option<&'a Value> {
    list["modules"].as_array().expect("modules is an array").iter().find(|m| m["name"] == name)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deploy_creates_then_replaces() {
    let node = TestNode::start().await;

    let resp = node.deploy("_default", "greet", say("version one")).await;
    assert_eq!(resp.status, 201, "new module: {resp:?}");
    let first = assert_upload_report(&resp, "_default", "greet");
    assert_eq!(first["warnings"].as_array().unwrap().len(), 0, "{first}");
    assert_eq!(node.get("/greet").await.text(), "version one");

    let resp = node.deploy("_default", "greet", say("version two")).await;
    assert_eq!(resp.status, 200, "replaced module: {resp:?}");
    let second = assert_upload_report(&resp, "_default", "greet");
    assert_ne!(first["sha256"], second["sha256"]);
    let resp = node.get("/greet").await;
    assert_eq!((resp.status, resp.text().as_str()), (200, "version two"));
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deployed_binary_lands_on_disk_as_uploaded() {
    let node = TestNode::start().await;
    let module = say_wasm("from disk");

    let resp = node.deploy("example.com", "disk", module.clone()).await;
    assert_eq!(resp.status, 201, "{resp:?}");
    let json = assert_upload_report(&resp, "example.com", "disk");
    assert_eq!(json["sha256"], sha256_hex(&module), "sha256 of the uploaded module");
    assert_eq!(json["bytes"], module.len() as u64);

    let on_disk = std::fs::read(node.module_file("example.com", "disk")).expect("DATA/sites/example.com/disk.wasm");
    assert_eq!(on_disk, module);
    assert_eq!(node.get_on("example.com", "/disk").await.text(), "from disk");

    // WAT text is stored compiled to a binary module.
    node.deploy_ok("example.com", "text", say("from text")).await;
    let on_disk = std::fs::read(node.module_file("example.com", "text")).expect("DATA/sites/example.com/text.wasm");
    assert!(on_disk.starts_with(b"\0asm"), "a .wasm file holds a binary module");
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_and_get_report_modules_and_counters() {
    let node = TestNode::start().await;
    node.deploy_ok("_default", "hello", wasm("hello")).await;
    node.deploy_ok("_default", "crasher", fixture("unreachable")).await;
    for _ in 0..3 {
        assert_eq!(node.get("/hello").await.status, 200);
    }
    assert_eq!(node.get("/crasher").await.status, 500);

    // The counters may be updated just after the response is sent.
    let start = Instant::now();
    let list = loop {
        let resp = node.admin_get("/v1/sites/_default/modules").await;
        assert_eq!(resp.status, 200, "{resp:?}");
        let list = resp.json();
        let hello = find_module(&list, "hello").unwrap_or_else(|| panic!("hello listed: {list}"));
        let crasher = find_module(&list, "crasher").unwrap_or_else(|| panic!("crasher listed: {list}"));
        if (hello["requests"] == 3 && crasher["errors"] == 1) || start.elapsed() > EVENTUALLY {
            break list;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    };
    assert_eq!(list["modules"].as_array().unwrap().len(), 2, "{list}");
    let hello = find_module(&list, "hello").unwrap();
    for key in ["name", "sha256", "abi", "bytes", "deployed_at", "requests", "errors"] {
        assert!(!hello[key].is_null(), "{key} missing: {hello}");
    }
    assert_eq!(hello["sha256"], sha256_hex(&wasm("hello")), "{hello}");
    assert_eq!(hello["abi"], "terrafirma");
    assert_eq!(hello["requests"], 3, "{hello}");
    assert_eq!(hello["errors"], 0, "{hello}");
    let crasher = find_module(&list, "crasher").unwrap();
    assert_eq!(crasher["requests"], 1, "{crasher}");
    assert_eq!(crasher["errors"], 1, "{crasher}");

    let resp = node.admin_get("/v1/sites/_default/modules/hello").await;
    assert_eq!(resp.status, 200, "{resp:?}");
    let one = resp.json();
    assert_eq!(one["name"], "hello");
    assert_eq!(one["sha256"], hello["sha256"]);

    let resp = node.admin_get("/v1/sites/_default/modules/nothing").await;
    assert_eq!(resp.status, 404, "{resp:?}");
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_stops_serving() {
    let node = TestNode::start().await;
    node.deploy_ok("_default", "doomed", fixture("hello")).await;
    assert_eq!(node.get("/doomed").await.status, 200);

    let resp = node.admin("DELETE", "/v1/sites/_default/modules/doomed", &[], Bytes::new()).await;
    assert_eq!(resp.status, 204, "{resp:?}");
    let resp = node.get("/doomed").await;
    node.assert_error(&resp, 404, "not-found", "doomed");
    let resp = node.admin_get("/v1/sites/_default/modules/doomed").await;
    assert_eq!(resp.status, 404, "{resp:?}");
    let list = node.admin_get("/v1/sites/_default/modules").await.json();
    assert!(find_module(&list, "doomed").is_none(), "{list}");
    assert!(!node.module_file("_default", "doomed").exists(), "a file left in the drop folder would deploy it again");

    // Nor does it come back after a restart.
    let node = node.restart().await;
    let resp = node.get("/doomed").await;
    node.assert_error(&resp, 404, "not-found", "doomed");
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn healthz_answers() {
    let node = TestNode::start().await;
    let resp = node.admin_get("/healthz").await;
    assert_eq!(resp.status, 200, "{resp:?}");
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_uploads_are_refused_and_change_nothing() {
    let node = TestNode::start().await;
    let good = say_wasm("good version");
    node.deploy_ok("_default", "keep", good.clone()).await;
    let hello = wasm("hello");

    let bad: Vec<(&str, Vec<u8>)> = vec![
        ("empty", Vec::new()),
        ("junk bytes", vec![0xde, 0xad, 0xbe, 0xef, 0x00, 0x01, 0x02, 0x03, 0xff]),
        ("junk text", b"this is neither wasm nor wat".to_vec()),
        ("bad section", b"\0asm\x01\0\0\0\xff\xff\xff".to_vec()),
        ("truncated module", hello[..hello.len() / 2].to_vec()),
        ("neither run nor _start", fixture("no_entry").into_bytes()),
        ("hostcall with the wrong signature", fixture("bad_signature").into_bytes()),
    ];
    for (what, body) in bad {
        let resp = node.deploy("_default", "keep", body.clone()).await;
        assert_eq!(resp.status, 400, "{what}: {resp:?}");
        let json = resp.json();
        assert!(json["error"].as_str().is_some_and(|e| !e.is_empty()), "{what}: {json}");

        let resp = node.get("/keep").await;
        assert_eq!((resp.status, resp.text().as_str()), (200, "good version"), "{what}: old version keeps serving");
        assert_eq!(std::fs::read(node.module_file("_default", "keep")).unwrap(), good, "{what}: file untouched");

        // Under a new name nothing appears either.
        let resp = node.deploy("_default", "fresh", body).await;
        assert_eq!(resp.status, 400, "{what}: {resp:?}");
        let resp = node.admin_get("/v1/sites/_default/modules/fresh").await;
        assert_eq!(resp.status, 404, "{what}: {resp:?}");
        assert!(!node.module_file("_default", "fresh").exists(), "{what}");
    }
    let list = node.admin_get("/v1/sites/_default/modules").await.json();
    assert_eq!(find_module(&list, "keep").unwrap()["sha256"], sha256_hex(&good));
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upload_over_the_limit_is_413() {
    let node = TestNode::start_with(|c| c.limits.max_upload_bytes = 64 << 10).await;
    // A valid module, only too big: 80 KiB of data.
    let filler = "a".repeat(80 << 10);
    let big = format!(
        r#"(module
  (memory (export "memory") 2)
  (data (i32.const 0) "{filler}")
  (func (export "run")))"#
    );
    let big = wat::parse_str(&big).unwrap();
    assert!(big.len() > 64 << 10);

    let resp = node.deploy("_default", "big", big).await;
    assert_eq!(resp.status, 413, "{resp:?}");
    let resp = node.admin_get("/v1/sites/_default/modules/big").await;
    assert_eq!(resp.status, 404, "{resp:?}");
    assert!(!node.module_file("_default", "big").exists());

    node.deploy_ok("_default", "small", wasm("hello")).await;
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_imports_upload_with_a_warning() {
    let node = TestNode::start().await;
    let resp = node.deploy("_default", "bindgen", fixture("unknown_import")).await;
    assert_eq!(resp.status, 201, "{resp:?}");
    let json = assert_upload_report(&resp, "_default", "bindgen");
    let warnings = json["warnings"].as_array().unwrap();
    assert!(warnings.iter().any(|w| w.to_string().contains("__wbindgen_describe")), "a warning names the import: {json}");
    let resp = node.get("/bindgen").await;
    assert_eq!((resp.status, resp.text().as_str()), (200, "still fine"), "{resp:?}");

    node.deploy_ok("_default", "bindgen-call", fixture("unknown_import_call")).await;
    let resp = node.get("/bindgen-call").await;
    node.assert_error(&resp, 500, "trap", "bindgen-call");
    node.assert_still_serving().await;
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_guard_the_admin_api() {
    let node = TestNode::start_with(|c| {
        c.admin_token = Some("operator-secret".into());
        let limits = c.limits.clone();
        c.sites.insert("a.test".into(), SiteConfig { token: Some("site-a-secret".into()), limits });
    })
    .await;
    let operator = [("authorization", "Bearer operator-secret")];
    let site_a = [("authorization", "Bearer site-a-secret")];
    let wrong = [("authorization", "Bearer guess")];
    let put = "/v1/sites/_default/modules/hello";

    let resp = node.admin("PUT", put, &[], fixture("hello")).await;
    assert!(matches!(resp.status, 401 | 403), "no token: {resp:?}");
    let resp = node.admin("PUT", put, &wrong, fixture("hello")).await;
    assert!(matches!(resp.status, 401 | 403), "wrong token: {resp:?}");
    let resp = node.admin("PUT", put, &site_a, fixture("hello")).await;
    assert!(matches!(resp.status, 401 | 403), "another site's token: {resp:?}");
    assert_eq!(node.get("/hello").await.status, 404, "nothing was deployed");

    let resp = node.admin("PUT", put, &operator, fixture("hello")).await;
    assert_eq!(resp.status, 201, "operator token: {resp:?}");
    let resp = node.admin("PUT", "/v1/sites/a.test/modules/mine", &site_a, say("site a")).await;
    assert_eq!(resp.status, 201, "site token on its site: {resp:?}");
    assert_eq!(node.get_on("a.test", "/mine").await.text(), "site a");

    let resp = node.admin("GET", "/v1/sites/a.test/modules", &site_a, Bytes::new()).await;
    assert_eq!(resp.status, 200, "{resp:?}");
    let resp = node.admin("GET", "/v1/sites/_default/modules", &site_a, Bytes::new()).await;
    assert!(matches!(resp.status, 401 | 403), "site token on another site: {resp:?}");
    let resp = node.admin("DELETE", put, &site_a, Bytes::new()).await;
    assert!(matches!(resp.status, 401 | 403), "site token deleting elsewhere: {resp:?}");
    assert_eq!(node.get("/hello").await.status, 200);
    node.stop().await;
}
