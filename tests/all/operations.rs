//! Running the node for others: what each request cost, request ids,
//! admission and fairness between sites, `/metrics`, per-module latency and
//! fuel, and per-site quotas.

use std::time::{Duration, Instant};

use bytes::Bytes;
use terrafirma::config::{Limits, SiteConfig};

use crate::harness::{TestNode, fixture, say};

fn number(resp: &crate::harness::Resp, header: &str) -> u64 {
    let values = resp.header_values(header);
    assert_eq!(values.len(), 1, "one {header}: {resp:?}");
    values[0].parse().unwrap_or_else(|e| panic!("{header} is not a number ({e}): {resp:?}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn guest_responses_carry_their_cost_and_every_response_its_request_id() {
    let node = TestNode::start_with(|c| c.limits.fuel = 1_000_000).await;
    node.deploy_ok("_default", "hello", fixture("hello")).await;
    node.deploy_ok("_default", "burner", fixture("spin")).await;

    let first = node.get("/hello").await;
    assert_eq!(first.status, 200, "{first:?}");
    assert!(number(&first, "x-terrafirma-fuel") > 0, "a guest that ran burnt fuel: {first:?}");
    number(&first, "x-terrafirma-time-us");
    let second = node.get("/hello").await;
    let (a, b) = (first.header_values("x-request-id"), second.header_values("x-request-id"));
    assert!(a.len() == 1 && b.len() == 1 && a != b, "each request gets its own id: {a:?} {b:?}");

    let kept = node.send("GET", "/hello", None, &[("x-request-id", "client-7.a:b")], Bytes::new()).await;
    assert_eq!(kept.header_values("x-request-id"), ["client-7.a:b"], "a well formed id is kept");
    let replaced = node.send("GET", "/hello", None, &[("x-request-id", "has spaces;and=more")], Bytes::new()).await;
    let id = replaced.header_values("x-request-id");
    assert!(id.len() == 1 && id[0] != "has spaces;and=more" && !id[0].is_empty(), "a malformed id is replaced: {id:?}");

    // A fault the guest ran into costs what it burnt: all of its fuel.
    let burnt = node.get("/burner").await;
    node.assert_error(&burnt, 500, "fuel", "burner");
    assert_eq!(number(&burnt, "x-terrafirma-fuel"), 1_000_000, "{burnt:?}");

    // No guest ran: an id, no cost.
    let missing = node.get("/nothing").await;
    assert_eq!(missing.status, 404);
    assert_eq!(missing.header_values("x-request-id").len(), 1, "{missing:?}");
    assert!(missing.header_values("x-terrafirma-fuel").is_empty(), "{missing:?}");
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_site_can_turn_its_cost_headers_off() {
    let node = TestNode::start_with(|c| {
        let limits = Limits { cost_headers: false, ..c.limits.clone() };
        c.sites.insert("quiet.test".into(), SiteConfig { token: None, limits });
    })
    .await;
    node.deploy_ok("quiet.test", "hello", fixture("hello")).await;
    node.deploy_ok("_default", "hello", fixture("hello")).await;
    let quiet = node.get_on("quiet.test", "/hello").await;
    assert_eq!(quiet.status, 200);
    assert!(quiet.header_values("x-terrafirma-fuel").is_empty() && quiet.header_values("x-terrafirma-time-us").is_empty(), "{quiet:?}");
    assert_eq!(quiet.header_values("x-request-id").len(), 1, "the id stays: {quiet:?}");
    assert_eq!(node.get("/hello").await.header_values("x-terrafirma-fuel").len(), 1, "other sites keep theirs");
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_site_over_its_concurrency_limit_is_refused_while_another_site_is_served() {
    let node = TestNode::start_with(|c| {
        c.pool.instances = 16;
        let limits = Limits { max_concurrency: 2, timeout_ms: 1500, fuel: 1 << 50, ..c.limits.clone() };
        c.sites.insert("flood.test".into(), SiteConfig { token: None, limits });
    })
    .await;
    node.deploy_ok("flood.test", "spin", fixture("spin")).await;
    node.deploy_ok("_default", "hello", fixture("hello")).await;

    let addr = node.node.http_addr;
    let flood: Vec<_> = (0..6)
        .map(|_| tokio::spawn(async move { crate::harness::request(addr, "GET", "/spin", Some("flood.test"), &[], Bytes::new()).await }))
        .collect();
    // While the site's two places spin, the other site answers at once.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let started = Instant::now();
    let hello = node.get("/hello").await;
    assert_eq!(hello.status, 200, "{hello:?}");
    assert!(started.elapsed() < Duration::from_secs(1), "another site waited {:?} behind the flood", started.elapsed());

    let (mut overloaded, mut timed_out) = (0, 0);
    for answer in flood {
        let resp = answer.await.expect("request task");
        match resp.status {
            503 => {
                node.assert_error(&resp, 503, "overloaded", "spin");
                assert_eq!(resp.header_values("retry-after"), ["1"], "{resp:?}");
                overloaded += 1;
            }
            _ => {
                node.assert_error(&resp, 504, "timeout", "spin");
                timed_out += 1;
            }
        }
    }
    assert_eq!((timed_out, overloaded), (2, 4), "two places, six requests");
    node.assert_still_serving().await;
    node.stop().await;
}

/// `/metrics` read by the Prometheus project's own parser (its Python
/// client; `scripts/setup.sh` installs it): one line per sample.
fn parse_metrics(text: &str) -> Option<String> {
    use std::io::Write;
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/tools/prometheus_parse.py");
    let child = std::process::Command::new("python3")
        .arg(script)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn();
    let Ok(mut child) = child else {
        assert!(std::env::var_os("CI").is_none(), "python3 is missing: bash scripts/setup.sh installs it");
        return None;
    };
    child.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
    let output = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    if stderr.contains("No module named 'prometheus_client'") {
        assert!(std::env::var_os("CI").is_none(), "prometheus_client is missing: bash scripts/setup.sh installs it");
        eprintln!("skipping the Prometheus parser: prometheus_client is not installed (bash scripts/setup.sh)");
        return None;
    }
    assert!(output.status.success(), "the Prometheus parser refused /metrics: {stderr}\n{text}");
    Some(String::from_utf8(output.stdout).unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_are_prometheus_text_with_requests_latency_faults_and_rejections() {
    let node = TestNode::start_with(|c| {
        c.pool.instances = 1;
        c.limits.timeout_ms = 1000;
        c.limits.fuel = 1 << 50;
    })
    .await;
    node.deploy_ok("_default", "hello", fixture("hello")).await;
    node.deploy_ok("_default", "spin", fixture("spin")).await;
    assert_eq!(node.deploy("_default", "broken", "(module (func").await.status, 400);
    for _ in 0..3 {
        assert_eq!(node.get("/hello").await.status, 200);
    }
    // The spinner holds the node's one place: hello is refused meanwhile.
    let spinning = node.get_in_background("/spin");
    let refused = node.poll(None, "/hello", |r| r.status == 503).await;
    node.assert_error(&refused, 503, "overloaded", "hello");
    node.assert_error(&spinning.await.unwrap(), 504, "timeout", "spin");

    let resp = node.admin_get("/metrics").await;
    assert_eq!(resp.status, 200, "{resp:?}");
    assert!(resp.header_values("content-type")[0].starts_with("text/plain; version=0.0.4"), "{resp:?}");
    let text = resp.text();
    assert!(text.contains("terrafirma_requests_total{"), "{text}");
    let Some(samples) = parse_metrics(&text) else { return node.stop().await };
    let value = |sample: &str| crate::harness::sample_value(&samples, sample);
    let hello = r#"module="hello",site="_default""#;
    assert!(value(&format!(r#"terrafirma_requests_total{{{hello},status="200"}}"#)) >= 3.0);
    assert!(value(&format!(r#"terrafirma_requests_total{{{hello},status="503"}}"#)) >= 1.0);
    assert_eq!(value(r#"terrafirma_requests_total{module="spin",site="_default",status="504"}"#), 1.0);
    assert_eq!(value(r#"terrafirma_faults_total{kind="timeout",module="spin",site="_default"}"#), 1.0);
    assert!(value(&format!(r#"terrafirma_faults_total{{kind="overloaded",{hello}}}"#)) >= 1.0);
    assert!(value(r#"terrafirma_admission_rejected_total{site="_default"}"#) >= 1.0);
    assert!(value(&format!(r#"terrafirma_request_duration_seconds_count{{{hello}}}"#)) >= 4.0);
    assert!(value(&format!(r#"terrafirma_sandbox_duration_seconds_bucket{{le="+Inf",{hello}}}"#)) >= 3.0);
    assert!(value(&format!(r#"terrafirma_instantiate_duration_seconds_count{{{hello}}}"#)) >= 3.0, "fresh instances are timed");
    assert!(value(&format!(r#"terrafirma_fuel_consumed_total{{{hello}}}"#)) > 0.0);
    // Each histogram: its bounds in order, counts that never fall, one
    // `+Inf` bucket, which holds every request.
    let buckets: Vec<(f64, f64)> = samples
        .lines()
        .filter(|line| line.starts_with("terrafirma_request_duration_seconds_bucket{") && line.contains(hello))
        .map(|line| {
            let le = line.split("le=\"").nth(1).unwrap().split('"').next().unwrap();
            (if le == "+Inf" { f64::INFINITY } else { le.parse().unwrap() }, line.rsplit(' ').next().unwrap().parse().unwrap())
        })
        .collect();
    assert_eq!(buckets.iter().filter(|(le, _)| le.is_infinite()).count(), 1, "{buckets:?}");
    assert!(buckets.iter().all(|(le, _)| le.is_infinite() || *le < 30.0), "bounds of 10 us to about 20 s, then +Inf: {buckets:?}");
    assert!(buckets.windows(2).all(|w| w[0].0 < w[1].0 && w[0].1 <= w[1].1), "{buckets:?}");
    assert_eq!(buckets.last().unwrap().1, value(&format!(r#"terrafirma_request_duration_seconds_count{{{hello}}}"#)));
    assert_eq!(value("terrafirma_pool_slots_in_use{}"), 0.0, "no request in flight");
    assert_eq!(value(r#"terrafirma_deploys_total{result="ok"}"#), 2.0);
    assert_eq!(value(r#"terrafirma_deploys_total{result="refused"}"#), 1.0);
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_need_the_operators_token() {
    let node = TestNode::start_with(|c| {
        c.admin_token = Some("operator".into());
        c.sites.insert("a.test".into(), SiteConfig { token: Some("site-a".into()), limits: c.limits.clone() });
    })
    .await;
    assert_eq!(node.admin("GET", "/metrics", &[], Bytes::new()).await.status, 401);
    assert_eq!(node.admin("GET", "/metrics", &[("authorization", "Bearer site-a")], Bytes::new()).await.status, 403);
    assert_eq!(node.admin("GET", "/metrics", &[("authorization", "Bearer operator")], Bytes::new()).await.status, 200);
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_module_reports_its_latency_and_fuel_quantiles() {
    let node = TestNode::start().await;
    node.deploy_ok("_default", "hello", fixture("hello")).await;
    let before = node.admin_get("/v1/sites/_default/modules/hello").await.json();
    assert!(before["latency_us"].is_null() && before["fuel"].is_null(), "no quantiles before a request: {before}");
    for _ in 0..5 {
        node.get("/hello").await;
    }
    let after = node.admin_get("/v1/sites/_default/modules/hello").await.json();
    let (fuel_p50, fuel_p99) = (after["fuel"]["p50"].as_u64().unwrap(), after["fuel"]["p99"].as_u64().unwrap());
    assert!(fuel_p50 > 0 && fuel_p50 <= fuel_p99, "{after}");
    let (p50, p99) = (after["latency_us"]["p50"].as_u64().unwrap(), after["latency_us"]["p99"].as_u64().unwrap());
    assert!(p50 <= p99, "{after}");
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_site_cannot_pass_its_module_quotas() {
    let node = TestNode::start_with(|c| {
        let limits = Limits { max_modules: 2, max_module_bytes: 4096, ..c.limits.clone() };
        c.sites.insert("small.test".into(), SiteConfig { token: None, limits });
    })
    .await;
    node.deploy_ok("small.test", "one", say("one")).await;
    node.deploy_ok("small.test", "two", say("two")).await;
    let third = node.deploy("small.test", "three", say("three")).await;
    assert_eq!(third.status, 403, "{third:?}");
    assert!(third.json()["error"].as_str().unwrap().contains("max_modules"), "{third:?}");
    // Replacing a module is no new module.
    node.deploy_ok("small.test", "two", say("two again")).await;
    // Bytes: a big data segment takes the site past 4 KiB.
    node.admin("DELETE", "/v1/sites/small.test/modules/two", &[], Bytes::new()).await;
    let big = format!(r#"(module (memory (export "memory") 1) (data (i32.const 0) "{}") (func (export "run")))"#, "x".repeat(5000));
    let too_big = node.deploy("small.test", "big", big).await;
    assert_eq!(too_big.status, 403, "{too_big:?}");
    assert!(too_big.json()["error"].as_str().unwrap().contains("max_module_bytes"), "{too_big:?}");
    // Other sites are not counted against it.
    node.deploy_ok("_default", "three", say("three")).await;
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_log_line_of_a_request_names_it_and_the_access_log_has_one_per_request() {
    let data = tempfile::TempDir::new().unwrap();
    let config = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(config.path(), "access_log = true\n").unwrap();
    let node = crate::process::Process::serve_logging(data.path(), Some(config.path()), "info").await;
    let talker = r#"(module
      (import "env" "hostcall_debug" (func $debug (param i32 i32)))
      (memory (export "memory") 1)
      (data (i32.const 16) "from the guest")
      (func (export "run") (call $debug (i32.const 16) (i32.const 14))))"#;
    let deployed = crate::harness::request(node.admin, "PUT", "/v1/sites/_default/modules/talker", None, &[], talker).await;
    assert!(deployed.status < 300, "{deployed:?}");
    let resp = crate::harness::request(node.http, "GET", "/talker", None, &[("x-request-id", "trace-me-7")], Bytes::new()).await;
    assert_eq!(resp.status, 200, "{resp:?}");

    let started = Instant::now();
    let find = |needles: &[&str]| node.log.lock().unwrap().iter().find(|line| needles.iter().all(|n| line.contains(n))).cloned();
    let (guest, access) = loop {
        let guest = find(&["from the guest", "request=trace-me-7", "module=_default/talker"]);
        let access = find(&["access", "site=_default", "module=talker", "status=200", "request=trace-me-7", "fuel="]);
        match (guest, access) {
            (Some(guest), Some(access)) => break (guest, access),
            _ if started.elapsed() < crate::harness::EVENTUALLY => tokio::time::sleep(Duration::from_millis(50)).await,
            missing => panic!("log lines missing ({missing:?}) in {:#?}", node.log.lock().unwrap()),
        }
    };
    assert!(guest.contains("guest"), "{guest}");
    assert!(access.contains("time_us="), "{access}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uploads_received_at_once_are_bounded() {
    use tokio::io::AsyncWriteExt;
    let node = TestNode::start().await;
    // Four uploads that send their head and then nothing: each holds a
    // place while the node waits for its body.
    let mut stalled = Vec::new();
    for i in 0..4 {
        let mut stream = tokio::net::TcpStream::connect(node.node.admin_addr).await.unwrap();
        let head = format!("PUT /v1/sites/_default/modules/s{i} HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n");
        stream.write_all(head.as_bytes()).await.unwrap();
        stalled.push(stream);
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let started = Instant::now();
    let refused = node.deploy("_default", "fifth", fixture("hello")).await;
    assert_eq!(refused.status, 503, "{refused:?}");
    assert_eq!(refused.header_values("retry-after"), ["5"], "{refused:?}");
    assert!(started.elapsed() >= Duration::from_secs(9), "refused without waiting: {:?}", started.elapsed());
    // Once they go, uploads are taken again.
    drop(stalled);
    tokio::time::sleep(Duration::from_millis(200)).await;
    node.deploy_ok("_default", "fifth", fixture("hello")).await;
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_kv_operations_and_bytes_and_outbound_requests_by_result() {
    let node = TestNode::start_with(|c| c.limits.outbound_hosts = vec!["127.0.0.1".into()]).await;
    node.deploy_ok("_default", "kv", fixture("kv")).await;
    node.deploy_ok("_default", "fetch", fixture("fetch")).await;
    assert_eq!(node.send("PUT", "/kv/k1", None, &[], "value").await.text(), "1");
    assert_eq!(node.send("GET", "/kv/k1", None, &[], Bytes::new()).await.text(), "1value");
    // Port 1 on loopback answers nothing: a failed send.
    let failed = node.send("GET", "/fetch", None, &[("x-url", "http://127.0.0.1:1/")], Bytes::new()).await;
    assert_ne!(failed.status, 200, "{failed:?}");

    let text = node.admin_get("/metrics").await.text();
    let value = |sample: &str| crate::harness::sample_value(&text, sample);
    assert_eq!(value(r#"terrafirma_kv_operations_total{op="insert"}"#), 1.0);
    assert_eq!(value(r#"terrafirma_kv_operations_total{op="get"}"#), 1.0);
    assert_eq!(value(r#"terrafirma_kv_bytes_total{direction="written"}"#), 7.0, "key and value");
    assert_eq!(value(r#"terrafirma_kv_bytes_total{direction="read"}"#), 5.0);
    assert_eq!(value(r#"terrafirma_outbound_requests_total{result="failed"}"#), 1.0);
    assert_eq!(value(r#"terrafirma_outbound_requests_total{result="ok"}"#), 0.0);
    node.stop().await;
}
