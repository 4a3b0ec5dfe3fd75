//! The example guests of `examples/` as a new user builds them: the Rust
//! ones with the SDK (`sdk/rust`), the C ones with `sdk/c/terrafirma.h`,
//! and the WAT ones as they are, answering alike over real HTTP. Built once
//! per test run by `scripts/build-examples.sh` (`scripts/setup.sh` installs
//! the toolchains).

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use bytes::Bytes;
use terrafirma::config::{Config, Limits, SiteConfig};

use crate::harness::TestNode;
use crate::upstream::Upstream;

/// Builds every example once; the directory holding `rust-NAME.wasm` and
/// `c-NAME.wasm`.
pub fn built_examples() -> &'static Path {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT.get_or_init(|| {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let out = root.join("target/test-examples");
        let status = std::process::Command::new("bash")
            .arg(root.join("scripts/build-examples.sh"))
            .arg(&out)
            .status()
            .expect("run bash scripts/build-examples.sh");
        assert!(status.success(), "scripts/build-examples.sh failed ({status}); bash scripts/setup.sh installs what it needs");
        out
    })
}

/// A guest of one language: the bytes to upload.
fn guest(lang: &str, name: &str) -> Vec<u8> {
    let path = match lang {
        "wat" => Path::new(env!("CARGO_MANIFEST_DIR")).join("examples").join(format!("{name}.wat")),
        _ => built_examples().join(format!("{lang}-{name}.wasm")),
    };
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Toolchain-built modules are larger than the test default upload limit.
fn roomy(config: &mut Config) {
    config.limits.max_upload_bytes = 16 << 20;
}

const LANGS: [&str; 3] = ["wat", "rust", "c"];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hello_echo_counter_and_fetch_answer_alike_in_wat_rust_and_c() {
    tokio::task::spawn_blocking(built_examples).await.unwrap();
    let upstream = Upstream::start().await;
    let node = TestNode::start_with(|config| {
        roomy(config);
        for lang in LANGS {
            let limits = Limits { outbound_hosts: vec!["127.0.0.1".into()], ..config.limits.clone() };
            config.sites.insert(format!("{lang}.test"), SiteConfig { token: None, limits });
        }
    })
    .await;
    for lang in LANGS {
        let site = format!("{lang}.test");
        for name in ["hello", "echo", "counter", "fetch"] {
            node.deploy_ok(&site, name, guest(lang, name)).await;
        }
        node.deploy_ok("_default", &format!("{lang}-fetch"), guest(lang, "fetch")).await;
    }

    let hello_url = upstream.url("/hello");
    for lang in LANGS {
        let site = format!("{lang}.test");
        let host = Some(site.as_str());
        let hello = node.send("GET", "/hello", host, &[], Bytes::new()).await;
        assert_eq!((hello.status, hello.text().as_str()), (200, "Hello World!\n"), "{lang} hello");

        let echo = node.send("POST", "/echo/a/b?x=1", host, &[], "some data").await;
        assert_eq!(echo.text(), "POST /echo/a/b?x=1\nsome data", "{lang} echo");

        for expected in ["1\n", "2\n"] {
            assert_eq!(node.send("GET", "/counter", host, &[], Bytes::new()).await.text(), expected, "{lang} counter");
        }
        assert_eq!(node.send("GET", "/counter/other", host, &[], Bytes::new()).await.text(), "1\n", "{lang}: another key");

        let fetched = node.send("GET", &format!("/fetch?url={hello_url}"), host, &[], Bytes::new()).await;
        assert_eq!((fetched.status, fetched.text().as_str()), (200, "hello from upstream"), "{lang} fetch");
        let refused = node.send("GET", &format!("/{lang}-fetch?url={hello_url}"), None, &[], Bytes::new()).await;
        assert_eq!(refused.status, 502, "{lang} fetch without an allow-list entry: {refused:?}");
    }

    let node = node.restart().await;
    for lang in LANGS {
        let counter = node.send("GET", "/counter", Some(&format!("{lang}.test")), &[], Bytes::new()).await;
        assert_eq!(counter.text(), "3\n", "{lang}: the count survives a restart");
    }
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sdk_guests_also_run_as_wasi_reactors_and_old_style_guests_still_run() {
    tokio::task::spawn_blocking(built_examples).await.unwrap();
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let out = root.join("target/test-examples-wasip1");
    let mut build = std::process::Command::new("bash");
    build.arg(root.join("scripts/build-examples.sh")).arg(&out).arg("--rust-only").env("RUST_TARGET", "wasm32-wasip1");
    let status = tokio::task::spawn_blocking(move || build.status()).await.unwrap().expect("run build-examples.sh");
    assert!(status.success(), "wasm32-wasip1 build failed");
    let node = TestNode::start_with(roomy).await;
    node.deploy_ok("_default", "echo", std::fs::read(out.join("rust-echo.wasm")).unwrap()).await;
    let echo = node.send("PUT", "/echo?q", None, &[], "body").await;
    assert_eq!(echo.text(), "PUT /echo?q\nbody", "a wasip1 reactor built with the SDK");

    node.deploy_ok("_default", "rust-kv", std::fs::read(built_examples().join("rust-kv.wasm")).unwrap()).await;
    node.deploy_ok("_default", "agent", std::fs::read(built_examples().join("c-echo-agent.wasm")).unwrap()).await;
    for body in ["a", "b"] {
        node.send("POST", "/rust-kv", None, &[], body).await;
    }
    assert_eq!(node.get("/rust-kv").await.text(), "rust guest, GET: log=ab\n", "the 2019-style Rust guest appends to its KV log");
    let agent = node.send("GET", "/agent/x", None, &[("user-agent", "tester/1")], Bytes::new()).await;
    assert_eq!(agent.status, 200, "{agent:?}");
    assert!(agent.text().contains("tester/1"), "{agent:?}");
    node.stop().await;
}

/// The C reactor whose constructor does the work: run once at upload, and
/// every request still answers as the constructor left it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_c_reactor_is_served_from_its_pre_initialised_image() {
    tokio::task::spawn_blocking(built_examples).await.unwrap();
    let node = TestNode::start_with(roomy).await;
    let answer = node.deploy_ok("_default", "primes", guest("c", "primes")).await.json();
    assert_eq!(answer["initialization"], "snapshot", "{answer}");
    for (path, status, body) in [
        ("/primes", 200, "78498 primes up to 1000000\n"),
        ("/primes/1000", 200, "168 primes up to 1000\n"),
        ("/primes/2", 200, "1 primes up to 2\n"),
        ("/primes/1000001", 400, "this guest counts up to 1000000\n"),
    ] {
        let resp = node.get(path).await;
        assert_eq!((resp.status, resp.text().as_str()), (status, body), "{path}");
    }
    node.stop().await;
}
