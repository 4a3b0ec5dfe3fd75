//! The `terrafirma` commands as a user runs them: `run` of WASI commands
//! built with Rust and clang, `run --request`, `compile`, and `deploy`
//! against a node on port 0.

use std::path::Path;
use std::process::{Command, Output};

use crate::examples::built_examples;
use crate::harness::{TestNode, fixture};

fn terrafirma(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_terrafirma"))
        .args(args)
        .env("XDG_CACHE_HOME", std::env::temp_dir().join("terrafirma-test-cache"))
        .env("RUST_LOG", "warn")
        .output()
        .expect("run terrafirma")
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

fn example(name: &str) -> String {
    built_examples().join(name).display().to_string()
}

#[test]
fn run_passes_args_env_and_dirs_and_exits_with_the_guests_code() {
    let wasm = example("rust-wasi.wasm");
    let hello = terrafirma(&["run", &wasm]);
    assert_eq!((hello.status.code(), stdout(&hello).as_str()), (Some(0), "Hello, world!\n"), "{hello:?}");
    // A second run is served from the cached artifact, and answers the same.
    let again = terrafirma(&["run", &wasm]);
    assert_eq!(stdout(&again), "Hello, world!\n", "{again:?}");

    let args = terrafirma(&["run", &wasm, "args", "one", "--two", "three four"]);
    assert_eq!(stdout(&args), "one\n--two\nthree four\n", "{args:?}");

    let env = terrafirma(&["run", "--env", "GREETING=hi there", &wasm, "env", "GREETING"]);
    assert_eq!(stdout(&env), "hi there\n", "{env:?}");
    let unset = terrafirma(&["run", &wasm, "env", "HOME"]);
    assert_eq!(stdout(&unset), "unset\n", "no environment unless given: {unset:?}");

    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("note.txt"), "from the host\n").unwrap();
    let mapped = format!("{}::/data", dir.path().display());
    let cat = terrafirma(&["run", "--dir", &mapped, &wasm, "cat", "/data/note.txt"]);
    assert_eq!((cat.status.code(), stdout(&cat).as_str()), (Some(0), "from the host\n"), "{cat:?}");
    let denied = terrafirma(&["run", &wasm, "cat", "/data/note.txt"]);
    assert_eq!(denied.status.code(), Some(2), "no filesystem unless given: {denied:?}");

    for code in ["0", "3", "125"] {
        let exit = terrafirma(&["run", &wasm, "exit", code]);
        assert_eq!(exit.status.code(), Some(code.parse().unwrap()), "{exit:?}");
    }
}

#[test]
fn run_of_a_wasip2_command_component() {
    let wasm = example("rust-wasi-p2.wasm");
    let hello = terrafirma(&["run", &wasm]);
    assert_eq!((hello.status.code(), stdout(&hello).as_str()), (Some(0), "Hello, world!\n"), "{hello:?}");
    let args = terrafirma(&["run", "--env", "K=v", &wasm, "args", "a", "b c"]);
    assert_eq!(stdout(&args), "a\nb c\n", "{args:?}");
    let env = terrafirma(&["run", "--env", "K=v", &wasm, "env", "K"]);
    assert_eq!(stdout(&env), "v\n", "{env:?}");
    // wasi:cli/exit 0.2 carries success or failure only: any failing code is 1.
    let exit = terrafirma(&["run", &wasm, "exit", "7"]);
    assert_eq!(exit.status.code(), Some(1), "{exit:?}");
    let exit = terrafirma(&["run", &wasm, "exit", "0"]);
    assert_eq!(exit.status.code(), Some(0), "{exit:?}");
}

/// The cache is keyed by the file's identity: a file rewritten in place is
/// compiled again, never served from the old artifact.
#[test]
fn run_notices_a_file_that_changed() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("guest.wasm");
    std::fs::copy(example("c-hello-wasi.wasm"), &file).unwrap();
    let first = terrafirma(&["run", &file.display().to_string()]);
    assert_eq!(stdout(&first), "Hello, world!\n", "{first:?}");
    std::fs::copy(example("rust-wasi.wasm"), &file).unwrap();
    let second = terrafirma(&["run", &file.display().to_string(), "args", "changed"]);
    assert_eq!(stdout(&second), "changed\n", "{second:?}");
}

#[test]
fn run_of_an_http_handler_without_a_request_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("hello.wat");
    std::fs::write(&file, fixture("hello")).unwrap();
    let out = terrafirma(&["run", &file.display().to_string()]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(stderr(&out).contains("--request"), "{out:?}");
    let component = terrafirma(&["run", &example("wasi-http.wasm")]);
    assert!(stderr(&component).contains("--request"), "{component:?}");
    let served = terrafirma(&["run", &example("wasi-http.wasm"), "--request", "/x/status/201"]);
    assert!(stdout(&served).starts_with("HTTP/1.1 201"), "{served:?}");
}

#[test]
fn run_of_a_clang_hello_world() {
    let hello = terrafirma(&["run", &example("c-hello-wasi.wasm")]);
    assert_eq!((hello.status.code(), stdout(&hello).as_str()), (Some(0), "Hello, world!\n"), "{hello:?}");
}

/// The binary has its own C `main` (no std start-up), so ignoring
/// `SIGPIPE`, as std did, is its job: a write to a pipe nobody reads is an
/// error the guest sees, not the end of the process by a signal.
#[test]
fn run_into_a_broken_pipe_is_not_killed_by_sigpipe() {
    use std::os::unix::process::{CommandExt, ExitStatusExt};
    let hello = example("c-hello-wasi.wasm");
    let cache = tempfile::tempdir().unwrap();
    // Twice: the first run compiles and caches, the second loads.
    for _ in 0..2 {
        let mut command = Command::new(env!("CARGO_BIN_EXE_terrafirma"));
        command.args(["run", &hello]).env("XDG_CACHE_HOME", cache.path());
        // SAFETY: only async-signal-safe calls between fork and exec: the
        // child's stdout becomes a pipe whose read end is closed.
        unsafe {
            command.pre_exec(|| {
                let mut fds = [0; 2];
                libc::pipe(fds.as_mut_ptr());
                libc::dup2(fds[1], 1);
                libc::close(fds[0]);
                libc::close(fds[1]);
                Ok(())
            })
        };
        let out = command.output().expect("run terrafirma");
        assert_eq!((out.status.signal(), out.status.code()), (None, Some(0)), "{out:?}");
    }
}

#[test]
fn run_of_a_missing_or_non_wasm_file_is_one_line_and_exit_1() {
    let dir = tempfile::tempdir().unwrap();
    let text = dir.path().join("notes.txt");
    std::fs::write(&text, "not wasm at all").unwrap();
    let missing = dir.path().join("missing.wasm");
    for file in [missing.as_path(), text.as_path()] {
        let out = terrafirma(&["run", &file.display().to_string()]);
        assert_eq!(out.status.code(), Some(1), "{out:?}");
        let err = stderr(&out);
        assert_eq!(err.lines().count(), 1, "one line: {err:?}");
        assert!(err.starts_with("terrafirma: "), "{err:?}");
    }
}

/// `run --request` routes as the node does: `SCRIPT_NAME` is the segment
/// naming the module, or empty for any other path.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_request_sees_what_the_node_shows_the_guest() {
    tokio::task::spawn_blocking(built_examples).await.unwrap();
    let wasm = example("rust-wasi.wasm");
    let node = TestNode::start_with(|config| config.limits.max_upload_bytes = 16 << 20).await;
    node.deploy_ok("_default", "rust-wasi", std::fs::read(&wasm).unwrap()).await;
    node.deploy_ok("_default", "index", std::fs::read(&wasm).unwrap()).await;
    for (path, expected) in [("/rust-wasi/a?env", "SCRIPT_NAME=/rust-wasi"), ("/elsewhere/a?env", "SCRIPT_NAME=")] {
        let served = node.get(path).await.text();
        let script_name = |text: &str| text.lines().find(|l| l.starts_with("SCRIPT_NAME=")).map(str::to_owned);
        let out = tokio::task::spawn_blocking({
            let (wasm, path) = (wasm.clone(), path.to_owned());
            move || terrafirma(&["run", &wasm, "--request", &path])
        })
        .await
        .unwrap();
        assert!(out.status.success(), "{out:?}");
        assert_eq!(script_name(&stdout(&out)), script_name(&served), "{path}: {out:?} vs {served}");
        assert_eq!(script_name(&served).as_deref(), Some(expected), "{served}");
    }
    node.stop().await;
}

#[test]
fn compile_writes_an_artifact() {
    let dir = tempfile::tempdir().unwrap();
    let source = dir.path().join("hello.wat");
    std::fs::write(&source, fixture("hello")).unwrap();
    let out = terrafirma(&["compile", &source.display().to_string()]);
    assert!(out.status.success(), "{out:?}");
    let artifact = dir.path().join("hello.cwasm");
    assert!(std::fs::metadata(&artifact).unwrap().len() > 0);
    assert!(stdout(&out).contains("terrafirma"), "names the interface: {out:?}");
    let named = dir.path().join("other.cwasm");
    let out = terrafirma(&["compile", &source.display().to_string(), "-o", &named.display().to_string()]);
    assert!(out.status.success() && Path::new(&named).exists(), "{out:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deploy_uploads_to_a_node_and_prints_its_answer() {
    let node = TestNode::start().await;
    let dir = tempfile::tempdir().unwrap();
    let source = dir.path().join("greeter.wat");
    std::fs::write(&source, fixture("hello")).unwrap();
    let url = format!("http://{}", node.node.admin_addr);
    let out = tokio::task::spawn_blocking({
        let source = source.display().to_string();
        move || terrafirma(&["deploy", &source, "--node", &url])
    })
    .await
    .unwrap();
    assert!(out.status.success(), "{out:?}");
    let answer: serde_json::Value = serde_json::from_str(&stdout(&out)).expect("the node's JSON answer");
    assert_eq!((answer["name"].as_str(), answer["abi"].as_str()), (Some("greeter"), Some("terrafirma")), "{answer}");
    let resp = node.get("/greeter").await;
    assert_eq!((resp.status, resp.text().as_str()), (200, "Hello World!\n"));

    let bad = dir.path().join("bad.wasm");
    std::fs::write(&bad, b"\0asm\x01\0\0\0garbage").unwrap();
    let url = format!("http://{}", node.node.admin_addr);
    let out = tokio::task::spawn_blocking(move || terrafirma(&["deploy", &bad.display().to_string(), "--node", &url])).await.unwrap();
    assert_eq!(out.status.code(), Some(1), "a refused upload fails the command: {out:?}");
    assert!(stdout(&out).contains("error"), "{out:?}");
    node.stop().await;
}
