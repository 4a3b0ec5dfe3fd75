//! Guest faults: each ends its own request with the status and
//! `x-terrafirma-error` of `docs/errors.md`, and never the node.

use std::time::{Duration, Instant};

use crate::harness::{Resp, TestNode, cpu_ticks, fixture};

/// Deploys `fixture` as `module`, requests it, checks the error, then checks
/// that the node still serves an ordinary guest.
async fn assert_fault(node: &TestNode, fixture_name: &str, module: &str, status: u16, kind: &str) -> Resp {
    node.deploy_ok("_default", module, fixture(fixture_name)).await;
    let resp = node.get(&format!("/{module}")).await;
    node.assert_error(&resp, status, kind, module);
    node.assert_still_serving().await;
    resp
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_is_a_trap() {
    let node = TestNode::start().await;
    assert_fault(&node, "unreachable", "crasher", 500, "trap").await;
    // The same module again: the fault did not poison it or its slot.
    let resp = node.get("/crasher").await;
    node.assert_error(&resp, 500, "trap", "crasher");
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wall_clock_limit_is_a_timeout() {
    let node = TestNode::start_with(|c| {
        c.limits.timeout_ms = 200;
        c.limits.fuel = 1 << 50;
    })
    .await;
    let start = Instant::now();
    assert_fault(&node, "spin", "spinner", 504, "timeout").await;
    assert!(start.elapsed() < Duration::from_secs(10), "took {:?}", start.elapsed());
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exhausted_fuel_is_fuel() {
    let node = TestNode::start_with(|c| {
        c.limits.timeout_ms = 30_000;
        c.limits.fuel = 100_000;
    })
    .await;
    assert_fault(&node, "spin", "burner", 500, "fuel").await;
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn growing_past_the_memory_cap_is_memory() {
    let node = TestNode::start_with(|c| c.limits.memory_mb = 8).await;
    assert_fault(&node, "grow", "grower", 500, "memory").await;
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn out_of_bounds_hostcall_argument_is_a_trap() {
    let node = TestNode::start().await;
    assert_fault(&node, "oob_pointer", "wild-body", 500, "trap").await;
    assert_fault(&node, "oob_out_pointer", "wild-out", 500, "trap").await;
    node.stop().await;
}

/// Guest code checks every access itself (no guard pages): a load past the
/// end of memory traps, also in a pool slot an earlier instance of the same
/// module grew and left read-write, and so does running out of stack.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn out_of_bounds_access_and_stack_overflow_are_traps() {
    let node = TestNode::start().await;
    node.deploy_ok("_default", "bounds", fixture("bounds")).await;
    for _ in 0..5 {
        let resp = node.get("/bounds/grow").await;
        assert_eq!((resp.status, resp.text().as_str()), (200, "grew"));
        let resp = node.get("/bounds/peek").await;
        node.assert_error(&resp, 500, "trap", "bounds");
    }
    assert_fault(&node, "recurse", "recurse", 500, "trap").await;
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn panic_hook_then_unreachable_is_a_trap() {
    let node = TestNode::start().await;
    let resp = assert_fault(&node, "panic", "panicker", 500, "trap").await;
    assert!(resp.text().contains("panicked at src/lib.rs:3:5: boom: the guest gave up"), "the whole message, on one line: {resp:?}");
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trap_in_initialize_is_a_trap() {
    let node = TestNode::start().await;
    assert_fault(&node, "init_trap", "bad-init", 500, "trap").await;
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calling_an_unknown_import_is_a_trap() {
    let node = TestNode::start().await;
    assert_fault(&node, "unknown_import_call", "placeholder", 500, "trap").await;
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn result_without_allocator_is_a_trap() {
    let node = TestNode::start().await;
    assert_fault(&node, "no_alloc_path", "no-alloc", 500, "trap").await;
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_requests_each_get_their_own_outcome() {
    let node = TestNode::start_with(|c| c.pool.instances = 64).await;
    node.deploy_ok("_default", "hello", fixture("hello")).await;
    node.deploy_ok("_default", "crasher", fixture("unreachable")).await;

    let tasks: Vec<_> = (0..50)
        .map(|i| {
            let path = if i % 2 == 0 { "/hello" } else { "/crasher" };
            (path, node.get_in_background(path))
        })
        .collect();
    for (path, task) in tasks {
        let resp = task.await.expect("request task");
        match path {
            "/hello" => {
                assert_eq!(resp.status, 200, "{resp:?}");
                assert_eq!(resp.text(), "Hello World!\n");
            }
            _ => node.assert_error(&resp, 500, "trap", "crasher"),
        }
    }
    node.assert_still_serving().await;
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_free_instance_slot_is_overloaded() {
    let node = TestNode::start_with(|c| {
        c.pool.instances = 1;
        c.limits.timeout_ms = 2000;
        c.limits.fuel = 1 << 50;
    })
    .await;
    node.deploy_ok("_default", "spin", fixture("spin")).await;
    node.deploy_ok("_default", "hello", fixture("hello")).await;

    // The spinning guest holds the only slot for two seconds.
    let spinning = node.get_in_background("/spin");
    let resp = node.poll(None, "/hello", |r| r.status == 503).await;
    node.assert_error(&resp, 503, "overloaded", "hello");
    assert!(resp.headers.contains_key("retry-after"), "{resp:?}");

    let spun = spinning.await.expect("request task");
    node.assert_error(&spun, 504, "timeout", "spin");
    node.assert_still_serving().await;
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spinning_guests_called_directly_do_not_hold_up_other_requests() {
    // More spinners than the runtime has worker threads: each must give its
    // worker away after one epoch tick, or `hello` waits for their deadline.
    let node = TestNode::start_with(|c| {
        c.limits.timeout_ms = 3_000;
        c.limits.fuel = 1 << 50;
    })
    .await;
    node.deploy_ok("_default", "spin", fixture("spin")).await;
    node.deploy_ok("_default", "hello", fixture("hello")).await;
    let idle = cpu_ticks("self");
    let spinners: Vec<_> = (0..4).map(|_| node.get_in_background("/spin")).collect();
    // The spinners are running once this process has spent 0.2 s of CPU.
    let started = Instant::now();
    while cpu_ticks("self") < idle + 20 {
        assert!(started.elapsed() < Duration::from_secs(30), "the spinners did not run");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let hello = node.get("/hello").await;
    assert_eq!(hello.status, 200, "{hello:?}");
    assert!(spinners.iter().all(|spinner| !spinner.is_finished()), "hello was answered only after the spinners ended");
    for spinner in spinners {
        node.assert_error(&spinner.await.expect("request task"), 504, "timeout", "spin");
    }
    node.stop().await;
}
