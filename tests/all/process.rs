//! `terrafirma serve` as a process of its own, on ports the node picks
//! itself (port 0, the bound addresses read back from its first line on
//! stderr), for tests that signal or kill the node.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::harness::{fixture, request};

/// A node process; killed with SIGKILL when dropped.
pub struct Process {
    pub child: Child,
    pub http: SocketAddr,
    pub admin: SocketAddr,
    /// Every line the node wrote to stderr so far.
    pub log: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

/// The addresses in `terrafirma: serving sites on http://A and the admin API on http://B`.
fn addresses(line: &str) -> Option<(SocketAddr, SocketAddr)> {
    let rest = line.strip_prefix("terrafirma: serving sites on http://")?;
    let (http, admin) = rest.split_once(" and the admin API on http://")?;
    Some((http.parse().ok()?, admin.trim().parse().ok()?))
}

impl Process {
    /// A node on `data`, with `config` if given.
    pub async fn serve(data: &Path, config: Option<&Path>) -> Process {
        Self::serve_logging(data, config, "warn").await
    }

    /// `serve` with `RUST_LOG=rust_log`.
    pub async fn serve_logging(data: &Path, config: Option<&Path>, rust_log: &str) -> Process {
        let mut child = Command::new(env!("CARGO_BIN_EXE_terrafirma"))
            .args(["serve", "--listen", "127.0.0.1:0", "--admin", "127.0.0.1:0", "--data"])
            .arg(data)
            .args(config.map(|config| [std::ffi::OsStr::new("--config"), config.as_os_str()]).into_iter().flatten())
            .env("RUST_LOG", rust_log)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start terrafirma serve");
        let stderr = child.stderr.take().expect("piped");
        let (found, addresses_found) = std::sync::mpsc::channel();
        let log = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let kept = log.clone();
        // Reads the node's stderr to its end, passing it on to the test's.
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                eprintln!("{line}");
                kept.lock().unwrap().push(line.clone());
                if let Some(pair) = addresses(&line) {
                    let _ = found.send(pair);
                }
            }
        });
        let (http, admin) = tokio::task::spawn_blocking(move || addresses_found.recv_timeout(Duration::from_secs(60)))
            .await
            .unwrap()
            .expect("the node printed the addresses it serves on");
        let process = Process { child, http, admin, log };
        assert_eq!(request(admin, "GET", "/healthz", None, &[], Bytes::new()).await.status, 200);
        process
    }

    /// Deploys `tests/fixtures/FIXTURE.wat` as `_default/NAME`.
    pub async fn deploy(&self, name: &str, fixture_name: &str) {
        let path = format!("/v1/sites/_default/modules/{name}");
        let deployed = request(self.admin, "PUT", &path, None, &[], fixture(fixture_name)).await;
        assert!(deployed.status < 300, "{deployed:?}");
    }

    /// Sends `signal` (`kill -SIGNAL`).
    pub fn signal(&self, signal: &str) {
        let status = Command::new("kill").arg(format!("-{signal}")).arg(self.child.id().to_string()).status().expect("kill");
        assert!(status.success(), "kill -{signal}");
    }

    /// Waits for the process to exit, at most `limit`.
    pub async fn exit_within(&mut self, limit: Duration) -> ExitStatus {
        let started = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                return status;
            }
            assert!(started.elapsed() < limit, "the node did not exit within {limit:?}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
