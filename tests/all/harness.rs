//! What every test needs: a node on ephemeral ports over a temporary data
//! directory, a small HTTP client, fixtures, and the checks of the
//! error contract.

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header::HOST;
use http::{HeaderMap, Method, Request};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use tempfile::TempDir;
use terrafirma::config::{Config, Limits, PoolConfig};
use terrafirma::node::{Node, RunningNode};

/// How long any single request may take before the test gives up.
const REQUEST_DEADLINE: Duration = Duration::from_secs(30);

/// How long the drop folder and the counters get to catch up.
pub const EVENTUALLY: Duration = Duration::from_secs(5);

/// A response, fully read.
pub struct Resp {
    pub status: u16,
    pub headers: HeaderMap,
    pub body: Vec<u8>,
}

impl Resp {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| panic!("body is not JSON ({e}): {self:?}"))
    }

    /// The `x-terrafirma-error` header.
    pub fn error_kind(&self) -> Option<&str> {
        self.headers.get("x-terrafirma-error").and_then(|v| v.to_str().ok())
    }

    /// Every value of one response header, in order.
    pub fn header_values(&self, name: &str) -> Vec<String> {
        self.headers.get_all(name).iter().map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned()).collect()
    }

    /// `key=value` lines of a fixture's report.
    pub fn field(&self, key: &str) -> String {
        let prefix = format!("{key}=");
        self.text()
            .lines()
            .find_map(|line| line.strip_prefix(&prefix).map(str::to_owned))
            .unwrap_or_else(|| panic!("no {key}= line in {self:?}"))
    }
}

impl fmt::Debug for Resp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let text = self.text();
        let shown: String = text.chars().take(600).collect();
        f.debug_struct("Resp").field("status", &self.status).field("headers", &self.headers).field("body", &shown).finish()
    }
}

/// One HTTP/1.1 request with a fresh client; `host` overrides the `Host` header.
pub async fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    host: Option<&str>,
    headers: &[(&str, &str)],
    body: impl Into<Bytes>,
) -> Resp {
    let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    let method = Method::from_bytes(method.as_bytes()).expect("valid method");
    let mut builder = Request::builder().method(method).uri(format!("http://{addr}{path}"));
    if let Some(host) = host {
        builder = builder.header(HOST, host);
    }
    for (name, value) in headers {
        builder = builder.header(*name, *value);
    }
    let req = builder.body(Full::new(body.into())).expect("valid request");
    let resp = tokio::time::timeout(REQUEST_DEADLINE, client.request(req))
        .await
        .unwrap_or_else(|_| panic!("{path}: no answer within {REQUEST_DEADLINE:?}"))
        .unwrap_or_else(|e| panic!("{path}: request failed: {e:?}"));
    let (parts, body) = resp.into_parts();
    let body = tokio::time::timeout(REQUEST_DEADLINE, body.collect())
        .await
        .unwrap_or_else(|_| panic!("{path}: body not finished within {REQUEST_DEADLINE:?}"))
        .unwrap_or_else(|e| panic!("{path}: reading the body failed: {e:?}"))
        .to_bytes()
        .to_vec();
    Resp { status: parts.status.as_u16(), headers: parts.headers, body }
}

/// The config every test starts from: ephemeral ports, a small pool, small
/// memories, a 64 KiB upload limit.
pub fn test_config(data: &Path) -> Config {
    Config {
        listen: "127.0.0.1:0".parse().unwrap(),
        admin: "127.0.0.1:0".parse().unwrap(),
        data: data.to_path_buf(),
        pool: PoolConfig { instances: 16, prewarm: 0 },
        limits: Limits { memory_mb: 8, max_upload_bytes: 64 << 10, ..Limits::default() },
        ..Config::default()
    }
}

/// A node shut down by `TestNode::stopped`, its data kept.
pub struct Stopped {
    config: Config,
    dir: TempDir,
}

impl Stopped {
    /// The node started again over the same data directory.
    pub async fn start(self) -> TestNode {
        TestNode::boot(self.dir, self.config).await
    }

    /// `start` with `edit` made to the config first.
    pub async fn start_with(mut self, edit: impl FnOnce(&mut Config)) -> TestNode {
        edit(&mut self.config);
        TestNode::boot(self.dir, self.config).await
    }
}

/// A running node and the data directory it owns.
pub struct TestNode {
    pub node: RunningNode,
    pub config: Config,
    dir: TempDir,
}

impl TestNode {
    pub async fn start() -> TestNode {
        Self::start_with(|_| {}).await
    }

    /// Starts a node from `test_config` after `edit` has adjusted it.
    pub async fn start_with(edit: impl FnOnce(&mut Config)) -> TestNode {
        let dir = TempDir::new().expect("temp dir");
        let mut config = test_config(dir.path());
        edit(&mut config);
        Self::boot(dir, config).await
    }

    /// Starts a node over a data directory the test has prepared.
    pub async fn start_in(dir: TempDir) -> TestNode {
        let config = test_config(dir.path());
        Self::boot(dir, config).await
    }

    async fn boot(dir: TempDir, config: Config) -> TestNode {
        let node = Node::start(config.clone()).await.expect("node starts");
        TestNode { node, config, dir }
    }

    /// Shuts the node down and starts a new one on the same data directory.
    pub async fn restart(self) -> TestNode {
        let TestNode { node, config, dir } = self;
        node.shutdown().await;
        Self::boot(dir, config).await
    }

    pub async fn stop(self) {
        self.node.shutdown().await;
    }

    /// Shuts the node down, keeping its data directory and config for
    /// `Stopped::start`.
    pub async fn stopped(self) -> Stopped {
        let TestNode { node, config, dir } = self;
        node.shutdown().await;
        Stopped { config, dir }
    }

    pub fn data(&self) -> &Path {
        self.dir.path()
    }

    /// Where a deployed module lives: `DATA/sites/SITE/NAME.wasm`.
    pub fn module_file(&self, site: &str, name: &str) -> PathBuf {
        self.data().join("sites").join(site).join(format!("{name}.wasm"))
    }

    pub async fn get(&self, path: &str) -> Resp {
        self.send("GET", path, None, &[], Bytes::new()).await
    }

    /// `GET path` on a task of its own, for requests that must overlap.
    pub fn get_in_background(&self, path: &'static str) -> tokio::task::JoinHandle<Resp> {
        let addr = self.node.http_addr;
        tokio::spawn(async move { request(addr, "GET", path, None, &[], Bytes::new()).await })
    }

    pub async fn get_on(&self, host: &str, path: &str) -> Resp {
        self.send("GET", path, Some(host), &[], Bytes::new()).await
    }

    pub async fn send(&self, method: &str, path: &str, host: Option<&str>, headers: &[(&str, &str)], body: impl Into<Bytes>) -> Resp {
        request(self.node.http_addr, method, path, host, headers, body).await
    }

    pub async fn admin(&self, method: &str, path: &str, headers: &[(&str, &str)], body: impl Into<Bytes>) -> Resp {
        request(self.node.admin_addr, method, path, None, headers, body).await
    }

    pub async fn admin_get(&self, path: &str) -> Resp {
        self.admin("GET", path, &[], Bytes::new()).await
    }

    /// `PUT /v1/sites/{site}/modules/{name}` with wasm bytes or WAT text.
    pub async fn deploy(&self, site: &str, name: &str, module: impl Into<Bytes>) -> Resp {
        self.admin("PUT", &format!("/v1/sites/{site}/modules/{name}"), &[], module).await
    }

    /// Deploys and insists that the node took it.
    pub async fn deploy_ok(&self, site: &str, name: &str, module: impl Into<Bytes>) -> Resp {
        let resp = self.deploy(site, name, module).await;
        assert!(resp.status == 201 || resp.status == 200, "deploy {site}/{name}: {resp:?}");
        resp
    }

    /// Repeats a GET until `done` holds or `EVENTUALLY` has passed; returns the last answer.
    pub async fn poll(&self, host: Option<&str>, path: &str, done: impl Fn(&Resp) -> bool) -> Resp {
        let start = Instant::now();
        loop {
            let resp = self.send("GET", path, host, &[], Bytes::new()).await;
            if done(&resp) || start.elapsed() > EVENTUALLY {
                return resp;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The error contract of `docs/errors.md`: the status, `x-terrafirma-error`, and a body
    /// of one line that names the module and shows no host path.
    pub fn assert_error(&self, resp: &Resp, status: u16, kind: &str, module: &str) {
        assert_eq!(resp.status, status, "status for {module}: {resp:?}");
        assert_eq!(resp.error_kind(), Some(kind), "x-terrafirma-error for {module}: {resp:?}");
        let text = resp.text();
        let line = text.strip_suffix('\n').unwrap_or(&text);
        let line = line.strip_suffix('\r').unwrap_or(line);
        assert!(!line.is_empty() && !line.contains('\n'), "error body must be one line: {resp:?}");
        assert!(line.contains(module), "error body must name the module {module:?}: {resp:?}");
        let data = self.data().to_string_lossy().into_owned();
        let canonical = self.data().canonicalize().map(|p| p.to_string_lossy().into_owned()).unwrap_or(data.clone());
        for host_path in [data.as_str(), canonical.as_str(), env!("CARGO_MANIFEST_DIR"), ".cargo/registry", "/rustc/"] {
            assert!(!line.contains(host_path), "error body shows the host path {host_path:?}: {resp:?}");
        }
    }

    /// The node still answers an ordinary guest after whatever came before.
    pub async fn assert_still_serving(&self) {
        if self.get("/hello").await.status == 404 {
            self.deploy_ok("_default", "hello", fixture("hello")).await;
        }
        let resp = self.get("/hello").await;
        assert_eq!(resp.status, 200, "hello after a fault: {resp:?}");
        assert_eq!(resp.text(), "Hello World!\n");
    }
}

/// The value of the first line of a metrics text that starts with `sample`
/// (a series name with its labels).
pub fn sample_value(text: &str, sample: &str) -> f64 {
    let line = text.lines().find(|line| line.starts_with(sample)).unwrap_or_else(|| panic!("no {sample} in:\n{text}"));
    line.rsplit(' ').next().unwrap().parse().unwrap_or_else(|e| panic!("{line}: {e}"))
}

/// The WAT text of `tests/fixtures/NAME.wat`.
pub fn fixture(name: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(format!("{name}.wat"));
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The same fixture as a wasm binary.
pub fn wasm(name: &str) -> Vec<u8> {
    wat::parse_str(fixture(name)).unwrap_or_else(|e| panic!("{name}.wat: {e}"))
}

/// A guest whose whole body is `text` (plain ASCII, no quotes or backslashes).
pub fn say(text: &str) -> String {
    assert!(text.bytes().all(|b| (b' '..=b'~').contains(&b) && b != b'"' && b != b'\\'));
    format!(
        r#";; say: sets the body {text:?}
(module
  (import "env" "hostcall_resp_set_body" (func $set_body (param i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (data (i32.const 16) "{text}")
  (func (export "run")
    (drop (call $set_body (i32.const 0) (i32.const 16) (i32.const {len})))))
"#,
        len = text.len()
    )
}

/// `say` as a wasm binary.
pub fn say_wasm(text: &str) -> Vec<u8> {
    wat::parse_str(say(text)).expect("say.wat")
}

/// CPU time a process (a pid, or `self`) has used, user and system, in
/// clock ticks (1/100 s).
pub fn cpu_ticks(pid: &str) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // Fields after the command name, which is in parentheses: utime and
    // stime are the 12th and 13th.
    let fields: Vec<&str> = stat.rsplit_once(')').unwrap().1.split_whitespace().collect();
    fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap()
}
