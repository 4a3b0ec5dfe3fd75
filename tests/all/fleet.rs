//! A fleet of nodes on NATS JetStream: a module deployed on one node is
//! served by the others, a KV write on one node is read on the others, a
//! node that missed deploys and writes catches up, and a node whose servers
//! are gone keeps serving and reading, and refuses deploys and KV writes
//! until they are back. Each test starts its own `nats-server` (Debian's package; `bash
//! scripts/setup.sh` installs it) on a free loopback port.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tempfile::TempDir;
use terrafirma::config::FleetConfig;

use crate::harness::{Resp, TestNode, fixture, request, say, say_wasm};

/// One JetStream server with its store in a temporary folder.
struct Nats {
    child: Child,
    port: u16,
    dir: TempDir,
}

fn nats_server() -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/sbin"), PathBuf::from("/usr/bin")])
        .map(|dir| dir.join("nats-server"))
        .find(|p| p.is_file())
}

impl Nats {
    /// A server on a free port; `None` (the test is skipped, and says so)
    /// where nats-server is not installed, except under CI, which must have it.
    fn start() -> Option<Nats> {
        Self::start_with("")
    }

    /// `start` with `conf` as the server's configuration file.
    fn start_with(conf: &str) -> Option<Nats> {
        let Some(_) = nats_server() else {
            assert!(std::env::var_os("CI").is_none(), "nats-server is not installed (bash scripts/setup.sh installs it)");
            eprintln!("skipped: nats-server is not installed (bash scripts/setup.sh installs it)");
            return None;
        };
        let dir = TempDir::new().unwrap();
        std::fs::write(dir.path().join("nats.conf"), conf).unwrap();
        let child = Self::spawn(&dir, None);
        let ports = dir.path().join("ports");
        let deadline = Instant::now() + Duration::from_secs(20);
        let port = loop {
            let file = std::fs::read_dir(&ports).ok().and_then(|mut entries| entries.next()).and_then(|e| e.ok());
            let text = file.and_then(|entry| std::fs::read_to_string(entry.path()).ok()).unwrap_or_default();
            if let Some(port) = text.split("nats://127.0.0.1:").nth(1).and_then(|rest| rest.split('"').next()?.parse().ok()) {
                break port;
            }
            assert!(Instant::now() < deadline, "nats-server did not start");
            std::thread::sleep(Duration::from_millis(20));
        };
        Some(Nats { child, port, dir })
    }

    fn spawn(dir: &TempDir, port: Option<u16>) -> Child {
        let ports = dir.path().join("ports");
        std::fs::create_dir_all(&ports).unwrap();
        let port = port.map_or("-1".to_owned(), |p| p.to_string());
        Command::new(nats_server().unwrap())
            .args(["-a", "127.0.0.1", "-p", &port, "-js", "-sd"])
            .arg(dir.path().join("store"))
            .arg("-l")
            .arg(dir.path().join("log"))
            .arg("--ports_file_dir")
            .arg(&ports)
            .arg("-c")
            .arg(dir.path().join("nats.conf"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start nats-server")
    }

    fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// The same server back on its port, with its store as it was.
    fn restart(&mut self) {
        self.child = Self::spawn(&self.dir, Some(self.port));
    }
}

impl Drop for Nats {
    fn drop(&mut self) {
        self.kill();
    }
}

async fn fleet_node(nats: &Nats) -> TestNode {
    let url = nats.url();
    TestNode::start_with(|c| c.fleet = Some(FleetConfig::at(&url))).await
}

/// GETs `path` until it answers `body` (or 30 s pass).
async fn until_body(node: &TestNode, path: &str, body: &str) -> Resp {
    until_body_within(node, path, body, Duration::from_secs(30)).await
}

/// `until_body` for up to `patience`.
async fn until_body_within(node: &TestNode, path: &str, body: &str, patience: Duration) -> Resp {
    let deadline = Instant::now() + patience;
    loop {
        let resp = node.get(path).await;
        if resp.status == 200 && resp.text() == body || Instant::now() > deadline {
            return resp;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_module_deployed_on_one_node_is_served_by_every_node() {
    let Some(nats) = Nats::start() else { return };
    let (a, b, c) = (fleet_node(&nats).await, fleet_node(&nats).await, fleet_node(&nats).await);
    a.deploy_ok("_default", "greet", say("one")).await;
    for node in [&a, &b, &c] {
        let resp = until_body(node, "/greet", "one").await;
        assert_eq!((resp.status, resp.text().as_str()), (200, "one"), "{resp:?}");
    }
    // A new version from another node replaces it everywhere.
    b.deploy_ok("_default", "greet", say("two")).await;
    for node in [&a, &b, &c] {
        let resp = until_body(node, "/greet", "two").await;
        assert_eq!((resp.status, resp.text().as_str()), (200, "two"), "{resp:?}");
    }
    // A deletion on any node stops it on all of them.
    let deleted = c.admin("DELETE", "/v1/sites/_default/modules/greet", &[], "").await;
    assert_eq!(deleted.status, 204, "{deleted:?}");
    for node in [&a, &b, &c] {
        let resp = node.poll(None, "/greet", |r| r.status == 404).await;
        assert_eq!(resp.status, 404, "{resp:?}");
    }
    for node in [a, b, c] {
        node.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_that_missed_deploys_catches_up_when_it_comes_back() {
    let Some(nats) = Nats::start() else { return };
    let a = fleet_node(&nats).await;
    let b = fleet_node(&nats).await;
    a.deploy_ok("_default", "first", say("first")).await;
    assert_eq!(until_body(&b, "/first", "first").await.text(), "first");
    a.deploy_ok("_default", "kv", fixture("kv")).await;
    assert_eq!(a.send("PUT", "/kv/before", None, &[], "1").await.text(), "1");
    assert_eq!(until_body(&b, "/kv/before", &got("1")).await.text(), got("1"));
    let b = b.stopped().await;
    a.deploy_ok("_default", "second", say("second")).await;
    a.deploy_ok("_default", "first", say("first, again")).await;
    assert_eq!(a.send("PUT", "/kv/missed", None, &[], "2").await.text(), "1");
    assert_eq!(a.send("DELETE", "/kv/before", None, &[], "").await.text(), "1");
    let b = b.start().await;
    assert_eq!(until_body(&b, "/kv/missed", &got("2")).await.text(), got("2"), "a KV write made while it was down");
    assert_eq!(until_body(&b, "/kv/before", "0").await.text(), "0", "and a removal");
    assert_eq!(until_body(&b, "/second", "second").await.text(), "second", "a deploy made while it was down");
    assert_eq!(until_body(&b, "/first", "first, again").await.text(), "first, again", "and a new version");
    a.stop().await;
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_its_servers_a_node_serves_what_it_has_and_refuses_deploys() {
    let Some(mut nats) = Nats::start() else { return };
    let a = fleet_node(&nats).await;
    let b = fleet_node(&nats).await;
    a.deploy_ok("_default", "hello", fixture("hello")).await;
    assert_eq!(until_body(&b, "/hello", "Hello World!\n").await.status, 200);

    a.deploy_ok("_default", "kv", fixture("kv")).await;
    assert_eq!(a.send("PUT", "/kv/k", None, &[], "v").await.text(), "1");
    assert_eq!(until_body(&b, "/kv/k", &got("v")).await.text(), got("v"));

    nats.kill();
    for node in [&a, &b] {
        let resp = node.get("/hello").await;
        assert_eq!((resp.status, resp.text().as_str()), (200, "Hello World!\n"), "serving goes on: {resp:?}");
        assert_eq!(node.get("/kv/k").await.text(), got("v"), "and KV reads, from the local copy");
        let refused = node.send("PUT", "/kv/new", None, &[], "w").await;
        assert_eq!((refused.status, refused.text().as_str()), (200, "0"), "a KV write is refused: {refused:?}");
        assert_eq!(node.get("/kv/new").await.text(), "0", "and not made");
    }
    let refused = a.deploy("_default", "later", say("later")).await;
    assert_eq!(refused.status, 503, "{refused:?}");
    assert_eq!(refused.header_values("retry-after"), ["5"], "{refused:?}");
    assert!(refused.json()["error"].as_str().unwrap_or_default().contains("fleet"), "{refused:?}");
    assert_eq!(a.get("/later").await.status, 404, "a refused deploy is not served here either");

    nats.restart();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let resp = a.deploy("_default", "later", say("later")).await;
        if resp.status == 201 || resp.status == 200 {
            break;
        }
        assert!(Instant::now() < deadline, "deploys still refused 30 s after the server came back: {resp:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(until_body(&b, "/later", "later").await.text(), "later", "the other node catches up on reconnect");
    let deadline = Instant::now() + Duration::from_secs(30);
    while a.send("PUT", "/kv/new", None, &[], "w").await.text() != "1" {
        assert!(Instant::now() < deadline, "KV writes still refused 30 s after the server came back");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(until_body(&b, "/kv/new", &got("w")).await.text(), got("w"), "a write after the outage reaches the other node");
    a.stop().await;
    b.stop().await;
}

/// The `kv` fixture's answer to a GET of `/kv/KEY` holding `value`.
fn got(value: &str) -> String {
    format!("1{value}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kv_write_on_one_node_is_read_on_every_node_and_a_counter_converges() {
    let Some(nats) = Nats::start() else { return };
    let nodes = [fleet_node(&nats).await, fleet_node(&nats).await, fleet_node(&nats).await];
    nodes[0].deploy_ok("_default", "kv", fixture("kv")).await;
    let counter = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/examples/counter.wat")).unwrap();
    nodes[1].deploy_ok("_default", "counter", counter).await;
    for node in &nodes {
        assert_eq!(node.poll(None, "/counter/warm", |r| r.status == 200).await.status, 200);
        assert_eq!(node.poll(None, "/kv/none", |r| r.status == 200).await.text(), "0");
    }

    let put = nodes[0].send("PUT", "/kv/greeting", None, &[], "hello").await;
    assert_eq!(put.text(), "1", "a new key: {put:?}");
    assert_eq!(nodes[0].get("/kv/greeting").await.text(), got("hello"), "read at once on the node that wrote it");
    for node in &nodes[1..] {
        assert_eq!(until_body(node, "/kv/greeting", &got("hello")).await.text(), got("hello"), "and soon on the others");
    }

    // The example counter, a read and a write of one key, on each node in
    // turn: each request sees the one before once it has reached its node.
    for round in 1..=6 {
        let node = &nodes[round % 3];
        let resp = node.get("/counter").await;
        assert_eq!((resp.status, resp.text().trim()), (200, round.to_string().as_str()), "request {round}: {resp:?}");
        assert_eq!(node.get("/kv/count").await.text().trim(), got(&round.to_string()), "read-your-writes on the node that counted");
        let next = &nodes[(round + 1) % 3];
        let seen = next.poll(None, "/kv/count", |r| r.text().trim() == got(&round.to_string())).await;
        assert_eq!(seen.text().trim(), got(&round.to_string()), "the next node has it");
    }
    for node in &nodes {
        let resp = node.poll(None, "/kv/count", |r| r.text().trim() == got("6")).await;
        assert_eq!(resp.text().trim(), got("6"), "converged on every node: {resp:?}");
    }
    for node in nodes {
        node.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kv_writes_of_one_key_from_two_nodes_at_once_are_all_kept() {
    let Some(nats) = Nats::start() else { return };
    let (a, b) = (fleet_node(&nats).await, fleet_node(&nats).await);
    a.deploy_ok("_default", "kv", fixture("kv")).await;
    assert_eq!(b.poll(None, "/kv/none", |r| r.status == 200).await.text(), "0");
    // Appends compare-and-set on the key's revision: one that lost the race
    // is decided again on the bucket's latest value, never lost.
    let appends = |node: &TestNode, letter: &'static str| {
        let addr = node.node.http_addr;
        tokio::spawn(async move {
            let mut answers = Vec::new();
            for _ in 0..25 {
                answers.push(request(addr, "PATCH", "/kv/log", None, &[], letter).await.text());
            }
            answers
        })
    };
    let (from_a, from_b) = (appends(&a, "a"), appends(&b, "b"));
    let answers: Vec<String> = [from_a.await.unwrap(), from_b.await.unwrap()].concat();
    assert_eq!(answers.iter().filter(|answer| *answer == "1").count(), 1, "one append created the key: {answers:?}");
    assert!(answers.iter().all(|answer| answer == "0" || answer == "1"), "every append was made: {answers:?}");
    for node in [&a, &b] {
        let resp = node.poll(None, "/kv/log", |r| r.text().len() == 51).await;
        let log = resp.text();
        assert_eq!(log.len(), 51, "50 appends: {log}");
        assert_eq!((log.matches('a').count(), log.matches('b').count()), (25, 25), "{log}");
    }
    a.stop().await;
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kv_values_over_the_servers_message_limit_are_refused_whole() {
    let Some(nats) = Nats::start_with("max_payload: 65536\n") else { return };
    let a = fleet_node(&nats).await;
    a.deploy_ok("_default", "kv", fixture("kv")).await;
    assert_eq!(a.send("PUT", "/kv/big", None, &[], vec![b'x'; 40_000]).await.text(), "1");
    assert_eq!(a.send("PUT", "/kv/big", None, &[], vec![b'y'; 70_000]).await.text(), "0", "over max_payload");
    assert_eq!(a.send("PATCH", "/kv/big", None, &[], vec![b'z'; 30_000]).await.text(), "0", "an append that would pass it");
    let resp = a.get("/kv/big").await;
    assert_eq!(resp.text(), got(&"x".repeat(40_000)), "the refused writes changed nothing");
    a.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_drop_folder_of_a_node_in_a_fleet_deploys_to_the_fleet() {
    let Some(mut nats) = Nats::start() else { return };
    let (a, b) = (fleet_node(&nats).await, fleet_node(&nats).await);
    let file = a.module_file("_default", "dropped");
    std::fs::create_dir_all(file.parent().unwrap()).unwrap();
    std::fs::write(&file, say_wasm("dropped")).unwrap();
    for node in [&a, &b] {
        assert_eq!(until_body(node, "/dropped", "dropped").await.text(), "dropped", "a file dropped on the first node");
    }
    std::fs::remove_file(&file).unwrap();
    for node in [&a, &b] {
        assert_eq!(node.poll(None, "/dropped", |r| r.status == 404).await.status, 404, "its removal");
    }

    // Without the servers a dropped file is not served, here or anywhere,
    // until the fleet takes it.
    nats.kill();
    std::fs::write(&file, say_wasm("later")).unwrap();
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(a.get("/dropped").await.status, 404, "not served while the fleet cannot take it");
    nats.restart();
    for node in [&a, &b] {
        assert_eq!(until_body(node, "/dropped", "later").await.text(), "later", "taken once the servers are back");
    }
    a.stop().await;
    b.stop().await;
}

/// Three JetStream servers in one cluster, on free loopback ports.
struct Cluster {
    servers: Vec<Child>,
    dir: TempDir,
    ports: Vec<u16>,
}

/// `n` distinct loopback ports free a moment ago: all bound at once, then
/// released for the servers to take.
fn free_ports(n: usize) -> Vec<u16> {
    let listeners: Vec<_> = (0..n).map(|_| std::net::TcpListener::bind("127.0.0.1:0").unwrap()).collect();
    listeners.iter().map(|l| l.local_addr().unwrap().port()).collect()
}

impl Cluster {
    fn start() -> Option<Cluster> {
        let Some(_) = nats_server() else {
            assert!(std::env::var_os("CI").is_none(), "nats-server is not installed (bash scripts/setup.sh installs it)");
            eprintln!("skipped: nats-server is not installed (bash scripts/setup.sh installs it)");
            return None;
        };
        // Between a port's release and the server's bind, another test's
        // connection can take it and that server exits, leaving a cluster
        // of two that never takes a deploy of three replicas: start over
        // on new ports then.
        for _ in 0..5 {
            let dir = TempDir::new().unwrap();
            let ports = free_ports(6);
            let routes: Vec<String> = ports[3..].iter().map(|port| format!("nats://127.0.0.1:{port}")).collect();
            let mut cluster = Cluster { servers: Vec::new(), dir, ports };
            for i in 0..3 {
                let server = cluster.spawn(i, &routes.join(","));
                cluster.servers.push(server);
            }
            if cluster.listening(Duration::from_secs(20)) {
                return Some(cluster);
            }
        }
        panic!("three nats-servers did not start on free ports in five tries");
    }

    /// Whether all three servers accept clients and are still running.
    fn listening(&mut self, within: Duration) -> bool {
        let deadline = Instant::now() + within;
        loop {
            if self.servers.iter_mut().any(|server| server.try_wait().ok().flatten().is_some()) {
                return false;
            }
            if self.ports[..3].iter().all(|port| std::net::TcpStream::connect(("127.0.0.1", *port)).is_ok()) {
                // A server whose cluster port was taken may exit just
                // after opening its client port.
                std::thread::sleep(Duration::from_millis(200));
                return self.servers.iter_mut().all(|server| server.try_wait().ok().flatten().is_none());
            }
            if Instant::now() > deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn spawn(&self, i: usize, routes: &str) -> Child {
        let store = self.dir.path().join(format!("store-{i}"));
        Command::new(nats_server().unwrap())
            .args(["-n", &format!("nats-{i}"), "-a", "127.0.0.1", "-p", &self.ports[i].to_string(), "-js", "-sd"])
            .arg(store)
            .args(["--cluster_name", "terrafirma", "--cluster", &format!("nats://127.0.0.1:{}", self.ports[3 + i]), "--routes", routes])
            .arg("-l")
            .arg(self.dir.path().join(format!("log-{i}")))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start nats-server")
    }

    fn urls(&self) -> Vec<String> {
        self.ports[..3].iter().map(|port| format!("nats://127.0.0.1:{port}")).collect()
    }

    /// The last lines of each server's log, for a failure's message.
    fn log_tails(&self) -> String {
        (0..self.servers.len())
            .map(|i| {
                let log = std::fs::read_to_string(self.dir.path().join(format!("log-{i}"))).unwrap_or_default();
                let lines: Vec<&str> = log.lines().collect();
                format!("nats-{i}:\n{}", lines[lines.len().saturating_sub(15)..].join("\n"))
            })
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// `kill -9` of one server.
    fn kill(&mut self, i: usize) {
        let _ = self.servers[i].kill();
        let _ = self.servers[i].wait();
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for i in 0..self.servers.len() {
            self.kill(i);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_jetstream_server_killed_during_deploys_and_kv_writes_loses_no_acknowledged_one() {
    let Some(mut cluster) = Cluster::start() else { return };
    let fleet = FleetConfig { nats: cluster.urls(), replicas: 3, ..FleetConfig::at("nats://127.0.0.1:1") };
    let node = || {
        let fleet = fleet.clone();
        TestNode::start_with(move |c| c.fleet = Some(fleet))
    };
    let a = node().await;
    // Until the cluster has elected its JetStream leader, deploys are
    // refused. That takes seconds alone and can take a minute while the
    // whole suite shares the two cores.
    let deadline = Instant::now() + Duration::from_secs(120);
    while !matches!(a.deploy("_default", "kv", fixture("kv")).await.status, 200 | 201) {
        assert!(Instant::now() < deadline, "the cluster took no deploy for 120 s; its logs:\n{}", cluster.log_tails());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    let (mut acked_keys, mut acked_version) = (Vec::new(), None);
    let start = Instant::now();
    for i in 0..60 {
        if i == 20 {
            cluster.kill(0);
        }
        if a.send("PUT", &format!("/kv/k{i}"), None, &[], i.to_string()).await.text() == "1" {
            acked_keys.push(i);
        }
        if i % 5 == 0 && matches!(a.deploy("_default", "version", say(&format!("v{i}"))).await.status, 200 | 201) {
            acked_version = Some(format!("v{i}"));
        }
        // Past the kill, until writes are taken again (a new leader).
        if i > 20 && acked_keys.last() != Some(&i) && start.elapsed() < Duration::from_secs(50) {
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }
    assert!(
        acked_keys.iter().any(|&i| i < 20) && acked_keys.iter().any(|&i| i > 20),
        "writes acknowledged before and after the kill: {acked_keys:?}"
    );
    let acked_version = acked_version.expect("a deploy acknowledged");

    // A node that joins now builds its copy from the two servers left
    // (which may take a few of its retries while they settle).
    let c = node().await;
    for &i in &acked_keys {
        let resp = until_body_within(&c, &format!("/kv/k{i}"), &got(&i.to_string()), Duration::from_secs(90)).await;
        assert_eq!(resp.text(), got(&i.to_string()), "acknowledged write k{i}: {resp:?}");
    }
    let resp = until_body_within(&c, "/version", &acked_version, Duration::from_secs(90)).await;
    assert_eq!(resp.text(), acked_version, "the last acknowledged deploy");
    a.stop().await;
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_that_is_up_to_date_keeps_watching_instead_of_starting_over() {
    let Some(nats) = Nats::start() else { return };
    let a = fleet_node(&nats).await;
    a.deploy_ok("_default", "kv", fixture("kv")).await;
    assert_eq!(a.send("PUT", "/kv/k", None, &[], "v").await.text(), "1");
    // Nothing new in either bucket from here on: a watch that ended when
    // nothing was pending would be started again every second.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let metrics = a.admin_get("/metrics").await.text();
    for follower in ["deployments", "kv"] {
        let restarts = crate::harness::sample_value(&metrics, &format!("terrafirma_fleet_watch_restarts_total{{follower=\"{follower}\"}}"));
        assert_eq!(restarts, 0.0, "{follower}: {metrics}");
    }
    assert!(crate::harness::sample_value(&metrics, "terrafirma_fleet_kv_revision") >= 1.0, "{metrics}");
    a.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_started_while_its_servers_are_down_serves_what_it_had() {
    let Some(mut nats) = Nats::start() else { return };
    let a = fleet_node(&nats).await;
    a.deploy_ok("_default", "hello", fixture("hello")).await;
    a.deploy_ok("_default", "kv", fixture("kv")).await;
    assert_eq!(a.send("PUT", "/kv/k", None, &[], "v").await.text(), "1");
    let a = a.stopped().await;
    nats.kill();
    let a = a.start().await;
    assert_eq!(a.get("/hello").await.text(), "Hello World!\n", "its modules");
    assert_eq!(a.get("/kv/k").await.text(), got("v"), "its copy of the KV");
    assert_eq!(a.send("PUT", "/kv/new", None, &[], "w").await.text(), "0", "KV writes refused");
    assert_eq!(a.deploy("_default", "later", say("later")).await.status, 503, "deploys refused");
    nats.restart();
    let deadline = Instant::now() + Duration::from_secs(30);
    while !matches!(a.deploy("_default", "later", say("later")).await.status, 200 | 201) {
        assert!(Instant::now() < deadline, "deploys still refused 30 s after the server came back");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(a.get("/later").await.text(), "later");
    a.stop().await;
}

/// Listens on a free loopback port; to each connection, `answer` (if any)
/// and then nothing, reading whatever comes.
fn bad_server(answer: &'static [u8]) -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("nats://{}", listener.local_addr().unwrap());
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            std::thread::spawn(move || {
                use std::io::{Read, Write};
                let mut stream = stream;
                let _ = stream.write_all(answer);
                let mut sink = [0; 4096];
                while matches!(stream.read(&mut sink), Ok(n) if n > 0) {}
            });
        }
    });
    url
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn servers_answering_garbage_or_nothing_never_hold_up_requests() {
    let a = TestNode::start().await;
    a.deploy_ok("_default", "hello", fixture("hello")).await;
    a.deploy_ok("_default", "kv", fixture("kv")).await;
    let fleet = FleetConfig {
        nats: vec![bad_server(b"NOT NATS \xff\xfe\r\n-ERR garbage\r\n"), bad_server(b"")],
        ..FleetConfig::at("nats://127.0.0.1:1")
    };
    let a = a.stopped().await.start_with(|c| c.fleet = Some(fleet)).await;
    for _ in 0..3 {
        let started = Instant::now();
        assert_eq!(a.get("/hello").await.text(), "Hello World!\n");
        assert_eq!(a.send("PUT", "/kv/k", None, &[], "v").await.text(), "0", "a KV write is refused");
        assert_eq!(a.get("/kv/k").await.text(), "0");
        assert!(started.elapsed() < Duration::from_secs(2), "requests did not wait on the servers: {:?}", started.elapsed());
    }
    let refused = a.deploy("_default", "later", say("later")).await;
    assert_eq!(refused.status, 503, "{refused:?}");
    a.assert_still_serving().await;
    a.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_object_that_is_not_what_its_name_says_is_refused_and_a_missing_one_waited_for() {
    use sha2::Digest;
    let Some(nats) = Nats::start() else { return };
    let (a, b) = (fleet_node(&nats).await, fleet_node(&nats).await);
    a.deploy_ok("_default", "first", say("first")).await;
    assert_eq!(until_body(&b, "/first", "first").await.text(), "first");

    // Written behind the nodes' backs, as a broken or hostile client would.
    let jetstream = async_nats::jetstream::new(async_nats::connect(nats.url()).await.unwrap());
    let objects = jetstream.get_object_store("terrafirma-modules").await.unwrap();
    let deployments = jetstream.get_key_value("terrafirma-deployments").await.unwrap();
    let name = |wasm: &[u8]| hex::encode(sha2::Sha256::digest(wasm));
    let deployment = |sha256: &str| serde_json::json!({"sha256": sha256, "abi": "terrafirma", "deployed_at": 0}).to_string().into();
    let (good, evil, later) = (say_wasm("good"), say_wasm("evil"), say_wasm("later"));
    objects.put(name(&good).as_str(), &mut &evil[..]).await.unwrap();
    deployments.put("_default/bad", deployment(&name(&good))).await.unwrap();
    deployments.put("_default/later", deployment(&name(&later))).await.unwrap();
    // A deploy after them shows both were seen.
    a.deploy_ok("_default", "after", say("after")).await;
    for node in [&a, &b] {
        assert_eq!(until_body(node, "/after", "after").await.text(), "after");
        assert_eq!(node.get("/bad").await.status, 404, "bytes that do not hash to their name are not served");
        assert_eq!(node.get("/later").await.status, 404, "a deployment without its object is not served");
    }
    // The missing object arrives: retried, then served.
    objects.put(name(&later).as_str(), &mut &later[..]).await.unwrap();
    for node in [&a, &b] {
        assert_eq!(until_body(node, "/later", "later").await.text(), "later");
    }
    // A node deploying the bytes the bad object claims to be stores them again.
    a.deploy_ok("_default", "good", good.clone()).await;
    assert_eq!(until_body(&b, "/good", "good").await.text(), "good", "the object was stored again");
    a.stop().await;
    b.stop().await;
}
