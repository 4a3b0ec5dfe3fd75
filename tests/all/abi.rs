//! The Terrafirma guest ABI, one fixture per family of hostcalls: what the
//! guest reads of the request, what it sets on the response, the host's use
//! of the guest allocator, and the shapes of memory a guest may have.

use bytes::Bytes;

use crate::harness::{TestNode, fixture};

/// The `name: value` lines of dump_headers.wat for one header name.
fn header_lines(text: &str, name: &str) -> Vec<String> {
    let prefix = format!("{name}: ");
    text.lines().filter_map(|l| l.strip_prefix(&prefix).map(str::to_owned)).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn guest_reads_method_target_and_body() {
    let node = TestNode::start().await;
    node.deploy_ok("_default", "echo", fixture("echo_request")).await;

    let resp = node.send("POST", "/echo/x?y=1&z", None, &[], "ping").await;
    assert_eq!(resp.status, 200, "{resp:?}");
    assert_eq!(resp.text(), "POST\n/echo/x?y=1&z\nnul-missing=0\nping");

    let resp = node.send("PURGE", "/echo.wasm", None, &[], Bytes::new()).await;
    assert_eq!(resp.text(), "PURGE\n/echo.wasm\nnul-missing=0\n");

    let resp = node.get("/echo").await;
    assert_eq!(resp.text(), "GET\n/echo\nnul-missing=0\n");

    // Every byte value, 10 KiB of them, comes back unchanged.
    let body: Vec<u8> = (0..10 * 1024).map(|i| (i % 256) as u8).collect();
    let resp = node.send("PUT", "/echo", None, &[], body.clone()).await;
    assert_eq!(resp.status, 200, "{resp:?}");
    let header = b"PUT\n/echo\nnul-missing=0\n";
    assert_eq!(&resp.body[..header.len()], header);
    assert!(resp.body[header.len()..] == body[..], "binary body echoed");
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn guest_reads_header_names_and_values() {
    let node = TestNode::start().await;
    node.deploy_ok("_default", "headers", fixture("dump_headers")).await;

    let resp = node
        .send(
            "GET",
            "/headers",
            Some("site.test"),
            &[("X-Mixed-Case", "Value With Spaces"), ("x-multi", "first"), ("x-multi", "second"), ("x-empty", "")],
            Bytes::new(),
        )
        .await;
    assert_eq!(resp.status, 200, "{resp:?}");
    let text = resp.text();
    assert_eq!(header_lines(&text, "x-mixed-case"), ["Value With Spaces"], "{text}");
    assert_eq!(header_lines(&text, "x-multi"), ["first", "second"], "distinct names, all values in order: {text}");
    assert_eq!(header_lines(&text, "x-empty"), [""], "{text}");
    assert_eq!(header_lines(&text, "host"), ["site.test"], "{text}");
    assert!(!text.contains("X-Mixed-Case"), "names are lower case: {text}");
    assert_eq!(resp.field("upper-x-multi"), "2", "header lookup ignores case");
    assert_eq!(resp.field("absent"), "0", "an absent header has no values");
    assert_eq!(resp.field("nul-missing"), "0", "every name and value is NUL-terminated");
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_ip_is_set_by_the_node() {
    let node = TestNode::start().await;
    node.deploy_ok("_default", "headers", fixture("dump_headers")).await;

    let resp = node.get("/headers").await;
    assert_eq!(header_lines(&resp.text(), "x-terrafirma-client-ip"), ["127.0.0.1"], "{resp:?}");
    assert_eq!(header_lines(&resp.text(), "fastly-client-ip"), ["127.0.0.1"], "{resp:?}");

    let forged = [
        ("x-terrafirma-client-ip", "6.6.6.6"),
        ("Fastly-Client-IP", "6.6.6.6"),
        ("fastly-client-ip", "7.7.7.7"),
        ("X-Fastly-Client-IP", "8.8.8.8"),
    ];
    let resp = node.send("GET", "/headers", None, &forged, Bytes::new()).await;
    for name in ["x-terrafirma-client-ip", "fastly-client-ip", "x-fastly-client-ip"] {
        assert_eq!(header_lines(&resp.text(), name), ["127.0.0.1"], "forged {name} replaced: {resp:?}");
    }
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn guest_sets_status_and_headers() {
    let node = TestNode::start().await;
    node.deploy_ok("_default", "response", fixture("response")).await;

    let resp = node.get("/response").await;
    assert_eq!(resp.status, 201, "the valid code stays after an invalid one: {resp:?}");
    assert_eq!(resp.field("code-201"), "0", "Ok");
    assert_eq!(resp.field("code-42"), "1", "42 is outside 100..=999");
    assert_eq!(resp.field("bad-handle"), "1", "response handle 7 does not exist");
    assert_eq!(resp.field("two-values"), "0");
    assert_eq!(resp.field("bad-name"), "1", "\"bad name\" is no header name");
    assert_eq!(resp.field("bad-value"), "1", "a newline is no part of a header value");
    assert_eq!(resp.field("replace"), "0");
    assert_eq!(resp.header_values("x-two"), ["one", "two"], "two values, two header lines");
    assert_eq!(resp.header_values("x-replaced"), ["new"], "set_header replaces");
    assert!(resp.headers.get("x-bad-value").is_none(), "{resp:?}");
    assert!(!resp.text().contains("discarded"), "the last body set wins");
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_node_frames_the_response() {
    let node = TestNode::start().await;
    node.deploy_ok("_default", "framing", fixture("framing")).await;
    for _ in 0..2 {
        // Twice on one keep-alive connection pool: a broken frame would show.
        let resp = node.get("/framing").await;
        assert_eq!(resp.status, 200, "{resp:?}");
        assert_eq!(resp.text(), "Hello World!\n");
        assert_eq!(resp.header_values("content-length"), ["13"]);
        assert!(resp.headers.get("transfer-encoding").is_none(), "{resp:?}");
        assert_eq!(resp.header_values("x-kept"), ["yes"]);
    }
    node.stop().await;
}

/// A guest that answers with status `code` and a short body.
fn status_guest(code: u16) -> String {
    format!(
        r#"(module
  (import "env" "hostcall_resp_set_response_code" (func $code (param i32 i32) (result i32)))
  (import "env" "hostcall_resp_set_body" (func $body (param i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (data (i32.const 16) "body")
  (func (export "run")
    (drop (call $code (i32.const 0) (i32.const {code})))
    (drop (call $body (i32.const 0) (i32.const 16) (i32.const 4)))))"#
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unusual_statuses_keep_http_well_formed() {
    let node = TestNode::start().await;
    for code in [100u16, 101, 103] {
        node.deploy_ok("_default", "status", status_guest(code)).await;
        let resp = node.get("/status").await;
        node.assert_error(&resp, 500, "trap", "status");
    }
    node.deploy_ok("_default", "status", status_guest(599)).await;
    assert_eq!(node.get("/status").await.status, 599);
    node.deploy_ok("_default", "status", status_guest(204)).await;
    let resp = node.get("/status").await;
    assert_eq!(resp.status, 204);
    assert!(resp.body.is_empty(), "no body with 204");
    node.assert_still_serving().await;
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn time_rng_and_debug() {
    let node = TestNode::start().await;
    node.deploy_ok("_default", "clock", fixture("time_rng")).await;

    let first = node.get("/clock").await;
    assert_eq!(first.status, 200, "{first:?}");
    let time: u64 = first.field("time").parse().unwrap();
    let time0: u64 = first.field("time0").parse().unwrap();
    let nanos: u64 = first.field("nanos").parse().unwrap();
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    assert!(time > 1_700_000_000 && time.abs_diff(now) <= 5, "time {time} vs {now}");
    assert!(time0.abs_diff(time) <= 1, "time without a nanos pointer: {time0}");
    assert!(nanos < 1_000_000_000, "nanos {nanos} must be written and below one second");
    assert_ne!(first.field("rng1"), first.field("rng2"), "two draws differ");

    let second = node.get("/clock").await;
    assert_ne!(first.field("rng1"), second.field("rng1"), "each request draws anew");
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_request_gets_a_fresh_instance() {
    let node = TestNode::start_with(|c| c.pool.prewarm = 2).await;
    node.deploy_ok("_default", "counter", fixture("counter")).await;
    node.deploy_ok("_default", "init", fixture("initialize")).await;
    for _ in 0..6 {
        let resp = node.get("/counter").await;
        assert_eq!((resp.status, resp.text().as_str()), (200, "11"), "globals and memory start fresh");
        let resp = node.get("/init").await;
        assert_eq!((resp.status, resp.text().as_str()), (200, "init=1"), "_initialize runs once, before run");
    }
    node.stop().await;
}

/// Linear memory is reset page by page (only the pages a guest wrote, where
/// the kernel can say which): what one request wrote anywhere, in a data
/// page, a zero page or a grown page, is gone for the next.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_a_request_wrote_is_pristine_for_the_next() {
    let node = TestNode::start().await;
    node.deploy_ok("_default", "dirty", fixture("dirty_pages")).await;
    for _ in 0..20 {
        let resp = node.get("/dirty").await;
        assert_eq!((resp.status, resp.text().as_str()), (200, "0A00"));
    }
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn allocator_found_in_each_supported_way() {
    let node = TestNode::start().await;
    // (fixture, how the guest provides its allocator and memory)
    let guests = [
        ("echo_path", "exported malloc"),
        ("init_mm", "table indices registered with hostcall_init_mm"),
        ("import_memory", "memory imported as env.memory"),
        ("hidden_memory", "memory defined but not exported"),
    ];
    for (name, how) in guests {
        node.deploy_ok("_default", name, fixture(name)).await;
        let target = format!("/{name}/p?q=1");
        let resp = node.get(&target).await;
        assert_eq!(resp.status, 200, "{how}: {resp:?}");
        assert_eq!(resp.text(), target, "{how}");
    }
    // No allocator at all is fine while the host has nothing to hand over.
    node.deploy_ok("_default", "hello", fixture("hello")).await;
    assert_eq!(node.get("/hello").await.text(), "Hello World!\n");
    // With something to hand over, it is a trap.
    node.deploy_ok("_default", "no-alloc", fixture("no_alloc_path")).await;
    let resp = node.get("/no-alloc").await;
    node.assert_error(&resp, 500, "trap", "no-alloc");
    node.stop().await;
}
