//! Outbound HTTP and DNS over real HTTP: a guest (`fetch.wat`, `dns.wat`)
//! reaching a loopback upstream started by the test, with and without an
//! allow-list entry, failing upstreams, the deadline, async sends with
//! select, the per-request cap, and bad handles.

use std::time::{Duration, Instant};

use bytes::Bytes;
use hickory_proto::op::{Message, Query};
use hickory_proto::rr::{Name, RData, RecordType};
use terrafirma::config::{Config, Limits, SiteConfig};

use crate::harness::{Resp, TestNode, fixture};
use crate::upstream::Upstream;

/// The site allowed to reach 127.0.0.1 (any port) and `localhost`.
const ALLOWED: &str = "out.test";

fn allow(config: &mut Config, site: &str, edit: impl FnOnce(&mut Limits)) {
    let mut limits = Limits { outbound_hosts: vec!["127.0.0.1".into(), "localhost".into()], ..config.limits.clone() };
    edit(&mut limits);
    config.sites.insert(site.into(), SiteConfig { token: None, limits });
}

/// A node with `fetch` and `dns` on `out.test` (allowed) and on `_default`
/// (no outbound hosts).
async fn node_with(edit: impl FnOnce(&mut Limits)) -> TestNode {
    let node = TestNode::start_with(|config| allow(config, ALLOWED, edit)).await;
    for site in [ALLOWED, "_default"] {
        node.deploy_ok(site, "fetch", fixture("fetch")).await;
        node.deploy_ok(site, "dns", fixture("dns")).await;
    }
    node
}

async fn fetch(node: &TestNode, host: &str, method: &str, mode: &str, urls: &[&str], body: &str) -> Resp {
    let mut headers: Vec<(&str, &str)> = urls.iter().map(|url| ("x-url", *url)).collect();
    headers.push(("x-mode", mode));
    node.send(method, "/fetch", Some(host), &headers, Bytes::from(body.to_owned())).await
}

async fn get(node: &TestNode, host: &str, url: &str) -> Resp {
    fetch(node, host, "GET", "s", &[url], "").await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_allowed_fetch_carries_method_body_headers_and_status() {
    let upstream = Upstream::start().await;
    let node = node_with(|_| {}).await;

    let resp = get(&node, ALLOWED, &upstream.url("/hello")).await;
    assert_eq!((resp.status, resp.text().as_str()), (200, "hello from upstream"), "{resp:?}");
    assert_eq!(resp.header_values("x-upstream"), ["one", "two"], "every value of a received header");

    let resp = fetch(&node, ALLOWED, "POST", "s", &[&upstream.url("/echo")], "ping").await;
    assert_eq!(resp.text(), "POST yes ping", "method, a guest-set header and the body reach the upstream");

    let resp = get(&node, ALLOWED, &upstream.url("/status/418")).await;
    assert_eq!((resp.status, resp.text().as_str()), (418, "status 418"));

    let resp = get(&node, ALLOWED, &upstream.url("/redirect")).await;
    assert_eq!(resp.status, 302, "redirects are not followed: {resp:?}");
    assert_eq!(resp.header_values("location"), ["/hello"]);

    let by_name = upstream.url("/hello").replace("127.0.0.1", "localhost");
    assert_eq!(get(&node, ALLOWED, &by_name).await.text(), "hello from upstream", "a listed name resolves");
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hosts_off_the_list_and_hostile_urls_are_refused() {
    let upstream = Upstream::start().await;
    let node = TestNode::start_with(|config| {
        allow(config, ALLOWED, |_| {});
        allow(config, "port.test", |limits| limits.outbound_hosts = vec!["127.0.0.1:1".into()]);
    })
    .await;
    for site in [ALLOWED, "_default", "port.test"] {
        node.deploy_ok(site, "fetch", fixture("fetch")).await;
    }
    let hello = upstream.url("/hello");
    for (host, url) in [("_default", hello.as_str()), ("any.test", hello.as_str()), ("port.test", hello.as_str())] {
        let resp = get(&node, host, url).await;
        assert_eq!((resp.status, resp.text().as_str()), (502, "create=-1\n"), "{host}: {resp:?}");
    }
    let port = upstream.addr.port();
    let long = format!("{hello}?{}", "a".repeat(9000));
    let hostile = [
        "file:///etc/passwd".to_owned(),
        "ftp://127.0.0.1/".into(),
        "http:///hello".into(),
        "/hello".into(),
        format!("http://user:pw@127.0.0.1:{port}/hello"),
        format!("http://127.0.0.1@127.0.0.2:{port}/hello"),
        format!("http://127.0.0.2:{port}/hello"),
        format!("http://[::1]:{port}/hello"),
        "http://127.0.0.1:99999/hello".into(),
        long,
    ];
    for url in &hostile {
        let resp = get(&node, ALLOWED, url).await;
        assert_eq!((resp.status, resp.text().as_str()), (502, "create=-1\n"), "{url:.80}: {resp:?}");
    }
    assert_eq!(upstream.served(), 0, "nothing refused was sent");
    node.assert_still_serving().await;
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_failures_size_limits_and_the_admin_port_answer_minus_one() {
    let upstream = Upstream::start().await;
    let node = node_with(|limits| limits.max_response_bytes = 1000).await;
    let closed = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let cases = [
        (format!("http://127.0.0.1:{closed}/"), "connection refused"),
        (upstream.url("/big/1001"), "body over max_response_bytes"),
        (format!("http://127.0.0.1:{}/healthz", node.node.admin_addr.port()), "the node's admin port"),
        (format!("https://127.0.0.1:{}/hello", upstream.addr.port()), "TLS to a plain HTTP server"),
    ];
    for (url, why) in &cases {
        let resp = get(&node, ALLOWED, url).await;
        assert_eq!((resp.status, resp.text().as_str()), (502, "send=-1\n"), "{why}: {resp:?}");
    }
    assert_eq!(get(&node, ALLOWED, &upstream.url("/big/1000")).await.body.len(), 1000, "at the limit");
    node.assert_still_serving().await;
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn received_bodies_share_a_budget_per_incoming_request() {
    let upstream = Upstream::start().await;
    let node = node_with(|limits| limits.max_response_bytes = 1000).await;
    let factor = terrafirma::RECEIVED_BODIES_FACTOR;
    let (slow, big) = (upstream.url("/slow/300"), upstream.url("/big/900"));
    // The slow one first, so that the guest's poll finds it not ready.
    let mut urls = vec![slow.as_str()];
    urls.extend(vec![big.as_str(); factor + 1]);
    let resp = fetch(&node, ALLOWED, "GET", "a", &urls, "").await;
    assert_eq!(resp.status, 200, "{resp:?}");
    let done: Vec<String> = resp.text().lines().filter_map(|l| l.strip_prefix("done=")).map(str::to_owned).collect();
    assert_eq!(done.len(), factor + 2, "{resp:?}");
    assert_eq!(done.last().map(String::as_str), Some("slow 300"), "{resp:?}");
    assert_eq!(done.iter().filter(|d| d.starts_with("bbbb")).count(), factor, "bodies within the budget arrive");
    assert_eq!(done.iter().filter(|d| *d == "-1").count(), 1, "the one past {factor} x max_response_bytes fails");
    let again = get(&node, ALLOWED, &big).await;
    assert_eq!(again.body.len(), 900, "the budget is per incoming request");
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_upstream_is_cut_by_the_request_deadline() {
    let upstream = Upstream::start().await;
    let node = node_with(|limits| limits.timeout_ms = 400).await;
    for mode in ["s", "a"] {
        let started = Instant::now();
        let resp = fetch(&node, ALLOWED, "GET", mode, &[&upstream.url("/slow/20000")], "").await;
        node.assert_error(&resp, 504, "timeout", "fetch");
        assert!(started.elapsed() < Duration::from_secs(10), "mode {mode}: cut at the deadline, took {:?}", started.elapsed());
    }
    node.assert_still_serving().await;
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn async_sends_finish_through_poll_and_select_in_completion_order() {
    let upstream = Upstream::start().await;
    let node = node_with(|_| {}).await;
    let urls = [upstream.url("/slow/700"), upstream.url("/slow/200"), upstream.url("/hello")];
    let resp = fetch(&node, ALLOWED, "GET", "a", &urls.iter().map(String::as_str).collect::<Vec<_>>(), "").await;
    assert_eq!(resp.status, 200, "{resp:?}");
    assert_eq!(
        resp.text(),
        "poll=-2\ndone=hello from upstream\ndone=slow 200\ndone=slow 700\nwait_again=-1\n",
        "not ready at once, then the fastest first; a consumed handle is invalid"
    );

    let closed = format!("http://127.0.0.1:{}/", std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port());
    let resp = fetch(&node, ALLOWED, "GET", "a", &[&upstream.url("/slow/300"), &closed], "").await;
    assert_eq!(resp.text(), "poll=-2\ndone=-1\ndone=slow 300\nwait_again=-1\n", "a failed send finishes as -1");
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hundreds_of_async_requests_are_capped_per_request() {
    let upstream = Upstream::start().await;
    let node = node_with(|_| {}).await;
    let resp = fetch(&node, ALLOWED, "GET", "f", &[&upstream.url("/slow/50")], "").await;
    assert_eq!(resp.status, 200, "{resp:?}");
    let cap = terrafirma::MAX_OUTBOUND_REQUESTS;
    assert_eq!(resp.field("started"), cap.to_string());
    assert_eq!(resp.field("refused"), (100 - cap).to_string());
    assert!(upstream.served() <= cap, "never more than the cap sent");
    let resp = fetch(&node, ALLOWED, "GET", "f", &[&upstream.url("/slow/50")], "").await;
    assert_eq!(resp.field("started"), cap.to_string(), "the cap is per incoming request");
    assert_eq!(get(&node, ALLOWED, &upstream.url("/hello")).await.status, 200);
    node.assert_still_serving().await;
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_handles_and_header_names_are_invalid_not_fatal() {
    let upstream = Upstream::start().await;
    let node = node_with(|_| {}).await;
    let resp = fetch(&node, ALLOWED, "GET", "h", &[&upstream.url("/echo")], "").await;
    assert_eq!(resp.status, 200, "{resp:?}");
    let expected = [
        ("send_bad", "-1"),
        ("async_bad", "-1"),
        ("wait_bad", "-1"),
        ("poll_bad", "-1"),
        ("code_bad", "-1"),
        ("code_own", "200"),
        ("hdr_bad_handle", "1"),
        ("body_incoming", "1"),
        ("select_bad", "-1"),
        ("select_zero", "-1"),
        ("create", "1"),
        ("hdr_bad_name", "1"),
        ("hdr_bad_value", "1"),
        ("hdr_ok", "0"),
        ("send", "1"),
        ("send_twice", "-1"),
    ];
    for (key, value) in expected {
        assert_eq!(resp.field(key), value, "{key}: {resp:?}");
    }
    node.stop().await;
}

async fn dns(node: &TestNode, host: &str, name: &str, v6: bool) -> Resp {
    let mut headers = vec![("x-name", name)];
    if v6 {
        headers.push(("x-v6", "1"));
    }
    node.send("GET", "/dns", Some(host), &headers, Bytes::new()).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dns_answers_names_on_the_list_only() {
    let node = node_with(|_| {}).await;
    let resp = dns(&node, ALLOWED, "localhost", false).await;
    assert_eq!(resp.status, 200, "{resp:?}");
    assert!(resp.body.chunks(4).any(|ip| ip == [127, 0, 0, 1]), "localhost is 127.0.0.1: {:?}", resp.body);
    assert_eq!(dns(&node, ALLOWED, "127.0.0.1", false).await.body, [127, 0, 0, 1], "a listed IP literal");
    for (host, name) in [(ALLOWED, "example.com"), ("_default", "localhost"), (ALLOWED, "127.0.0.1.evil")] {
        let resp = dns(&node, host, name, false).await;
        assert_eq!((resp.status, resp.text().as_str()), (404, "0Z"), "{host} {name}: refused, pointer left 0");
    }

    let mut query = Message::query();
    query.metadata.recursion_desired = true;
    query.add_query(Query::query(Name::from_ascii("localhost.").unwrap(), RecordType::A));
    let raw = |host: &'static str, body: Vec<u8>| {
        let node = &node;
        async move { node.send("POST", "/dns", Some(host), &[("x-raw", "1")], Bytes::from(body)).await }
    };
    let resp = raw(ALLOWED, query.to_vec().unwrap()).await;
    assert_eq!(resp.status, 200, "{resp:?}");
    let answer = Message::from_vec(&resp.body).expect("a wire-format answer");
    assert_eq!(answer.metadata.id, query.metadata.id);
    assert!(answer.answers.iter().any(|record| matches!(&record.data, RData::A(a) if a.0 == std::net::Ipv4Addr::LOCALHOST)), "{answer:?}");
    assert_eq!(raw("_default", query.to_vec().unwrap()).await.text(), "0Z", "not on this site's list");
    assert_eq!(raw(ALLOWED, b"not a dns message".to_vec()).await.text(), "0Z", "garbage");
    node.assert_still_serving().await;
    node.stop().await;
}
