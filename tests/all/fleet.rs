//! A fleet of nodes on NATS JetStream: a module deployed on one node is
//! served by the others, a node that missed deploys catches up, and a node
//! whose servers are gone keeps serving and refuses deploys until they are
//! back. Each test starts its own `nats-server` (Debian's package; `bash
//! scripts/setup.sh` installs it) on a free loopback port.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tempfile::TempDir;
use terrafirma::config::FleetConfig;

use crate::harness::{Resp, TestNode, fixture, say};

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
        let Some(_) = nats_server() else {
            assert!(std::env::var_os("CI").is_none(), "nats-server is not installed (bash scripts/setup.sh installs it)");
            eprintln!("skipped: nats-server is not installed (bash scripts/setup.sh installs it)");
            return None;
        };
        let dir = TempDir::new().unwrap();
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
    let deadline = Instant::now() + Duration::from_secs(30);
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
    let b = b.stopped().await;
    a.deploy_ok("_default", "second", say("second")).await;
    a.deploy_ok("_default", "first", say("first, again")).await;
    let b = b.start().await;
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

    nats.kill();
    for node in [&a, &b] {
        let resp = node.get("/hello").await;
        assert_eq!((resp.status, resp.text().as_str()), (200, "Hello World!\n"), "serving goes on: {resp:?}");
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
    a.stop().await;
    b.stop().await;
}
