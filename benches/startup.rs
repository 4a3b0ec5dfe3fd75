//! The seed's start-up table, reproduced side by side on this machine: the
//! same hello world as a shell script, in a container, under node, under
//! `wasmtime run` and `wasmer run` (where installed), under `terrafirma run`
//! (a cached artifact), and as fresh in-process instances by strategy. Every
//! process is timed whole, many times, and its answer checked; a row whose
//! tool is missing is printed as skipped, with the reason.
//!
//!   cargo bench --bench startup            (RUNS=N to change the count)
//!
//! `bash scripts/setup.sh --bench` installs what the rows need.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use bytes::Bytes;
use http::{HeaderMap, Method};
use terrafirma::executor::{Abi, Answer, Code, Handler, HandlerConfig, RequestBody, Runtime};
use terrafirma::messages::GuestRequest;
use wasmtime::{Config, Engine, InstanceAllocationStrategy, Linker, Module, PoolingAllocationConfig, Store};
use wasmtime_wasi::WasiCtxBuilder;
use wasmtime_wasi::p1::WasiP1Ctx;
use wasmtime_wasi::p2::pipe::MemoryOutputPipe;

const HELLO: &str = "Hello, world!\n";

/// The seed's figures (its author's machine, 2019), in ms.
const SEED: [(&str, f64); 4] = [("sh", 3.516), ("container", 692.3), ("node", 79.2), ("wasmer", 15.2)];

struct Row {
    name: String,
    what: String,
    seed: Option<f64>,
    /// Milliseconds per run, or why the row was skipped.
    times: Result<Vec<f64>, String>,
}

fn seed(key: &str) -> Option<f64> {
    SEED.iter().find(|(k, _)| *k == key).map(|(_, ms)| *ms)
}

fn which(tool: &str) -> Option<PathBuf> {
    let cargo_bin = std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".cargo/bin"));
    std::env::var_os("PATH")
        .map(|path| std::env::split_paths(&path).chain(cargo_bin).collect::<Vec<_>>())
        .unwrap_or_default()
        .into_iter()
        .map(|dir| dir.join(tool))
        .find(|candidate| candidate.is_file())
}

/// Runs `command` `runs` times (after one warm-up), checking its stdout.
fn time_process(program: &Path, args: &[&str], env: &[(&str, &Path)], runs: usize) -> Result<Vec<f64>, String> {
    let mut times = Vec::with_capacity(runs);
    for i in 0..=runs {
        let mut command = Command::new(program);
        command.args(args);
        for (key, value) in env {
            command.env(key, value);
        }
        let started = Instant::now();
        let output = command.output().map_err(|e| format!("{}: {e}", program.display()))?;
        let elapsed = started.elapsed();
        let stdout = String::from_utf8_lossy(&output.stdout);
        if !output.status.success() || stdout != HELLO {
            return Err(format!("answered {stdout:?} ({}), stderr {:?}", output.status, String::from_utf8_lossy(&output.stderr)));
        }
        if i > 0 {
            times.push(elapsed.as_secs_f64() * 1e3);
        }
    }
    Ok(times)
}

fn process_row(name: &str, what: &str, key: &str, tool: Option<PathBuf>, missing: &str, args: &[&str], runs: usize) -> Row {
    let times = match tool {
        Some(tool) => time_process(&tool, args, &[], runs),
        None => Err(missing.to_owned()),
    };
    Row { name: name.into(), what: what.into(), seed: seed(key), times }
}

/// The container row: `docker run` where a Docker engine answers, else
/// `podman run --runtime runc` of a busybox image made with `podman import`.
fn container_row(work: &Path, runs: usize) -> Row {
    let docker = which("docker").filter(|docker| Command::new(docker).arg("info").output().is_ok_and(|o| o.status.success()));
    let (name, times) = if let Some(docker) = docker {
        let times = image(&docker, work).and_then(|()| time_process(&docker, &["run", "--rm", "terrafirma-hello", "/hello.sh"], &[], runs));
        ("docker run --rm", times)
    } else if let (Some(podman), Some(_)) = (which("podman"), which("runc")) {
        let args = [
            "run",
            "--rm",
            "--runtime",
            "runc",
            "--ulimit",
            "nofile=1024:1024",
            "--ulimit",
            "nproc=1000:1000",
            "terrafirma-hello",
            "/hello.sh",
        ];
        ("podman run --rm --runtime runc", image(&podman, work).and_then(|()| time_process(&podman, &args, &[], runs)))
    } else {
        ("docker run / podman run", Err("no Docker engine answers and podman or runc is not installed".into()))
    };
    Row { name: name.into(), what: "busybox sh script in a container".into(), seed: seed("container"), times }
}

/// Imports a busybox rootfs with `/hello.sh` as the image `terrafirma-hello`.
fn image(engine: &Path, work: &Path) -> Result<(), String> {
    let exists = Command::new(engine).args(["image", "inspect", "terrafirma-hello"]).output().is_ok_and(|o| o.status.success());
    if exists {
        return Ok(());
    }
    let busybox = ["/bin/busybox", "/usr/bin/busybox"]
        .into_iter()
        .map(PathBuf::from)
        .find(|p| p.is_file())
        .ok_or("busybox-static is not installed")?;
    let rootfs = work.join("rootfs");
    std::fs::create_dir_all(rootfs.join("bin")).map_err(|e| e.to_string())?;
    std::fs::copy(&busybox, rootfs.join("bin/busybox")).map_err(|e| e.to_string())?;
    let _ = std::os::unix::fs::symlink("busybox", rootfs.join("bin/sh"));
    std::fs::write(rootfs.join("hello.sh"), "#!/bin/sh\necho 'Hello, world!'\n").map_err(|e| e.to_string())?;
    std::fs::set_permissions(rootfs.join("hello.sh"), std::os::unix::fs::PermissionsExt::from_mode(0o755)).map_err(|e| e.to_string())?;
    let tar = work.join("rootfs.tar");
    let status = Command::new("tar").arg("-C").arg(&rootfs).arg("-cf").arg(&tar).arg(".").status().map_err(|e| e.to_string())?;
    if !status.success() {
        return Err("tar of the rootfs failed".into());
    }
    let imported = Command::new(engine).arg("import").arg(&tar).arg("terrafirma-hello").output().map_err(|e| e.to_string())?;
    if imported.status.success() { Ok(()) } else { Err(format!("image import failed: {}", String::from_utf8_lossy(&imported.stderr))) }
}

/// Fresh instances of the WASI hello in this process, `runs` of them, per strategy.
fn in_process_rows(wasm: &[u8], runs: usize) -> Vec<Row> {
    let tokio = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let mut rows = Vec::new();
    for (pooling, cow) in [(false, false), (false, true), (true, false), (true, true)] {
        let times = tokio.block_on(bare(wasm, pooling, cow, false, runs));
        let name =
            format!("wasmtime in process, {}, CoW {}", if pooling { "pooling" } else { "on-demand" }, if cow { "on" } else { "off" });
        rows.push(Row { name, what: "Store + InstancePre::instantiate + _start + drop".into(), seed: None, times });
    }
    rows.push(Row {
        name: "wasmtime in process, prewarmed".into(),
        what: "_start of an instance made ahead (pooling, CoW)".into(),
        seed: None,
        times: tokio.block_on(bare(wasm, true, true, true, runs)),
    });
    rows.push(Row {
        name: "the node's CGI executor".into(),
        what: "a request through Handler::handle: CGI variables, instance, _start, output parsed".into(),
        seed: None,
        times: tokio.block_on(executor(wasm, runs)),
    });
    rows
}

fn engine(pooling: bool, cow: bool) -> Engine {
    let mut config = Config::new();
    config.memory_init_cow(cow);
    if pooling {
        let mut pool = PoolingAllocationConfig::new();
        pool.total_core_instances(16).total_memories(16).total_tables(16).total_stacks(16).max_memory_size(64 << 20);
        config.allocation_strategy(InstanceAllocationStrategy::Pooling(pool)).memory_reservation(64 << 20);
    }
    Engine::new(&config).unwrap()
}

fn wasi() -> (WasiP1Ctx, MemoryOutputPipe) {
    let out = MemoryOutputPipe::new(1 << 10);
    (WasiCtxBuilder::new().stdout(out.clone()).args(&["hello"]).build_p1(), out)
}

/// `runs` fresh instances of the hello: each timed from its `Store` to its
/// drop, or (`prewarmed`) from the call on, the instance made beforehand.
async fn bare(wasm: &[u8], pooling: bool, cow: bool, prewarmed: bool, runs: usize) -> Result<Vec<f64>, String> {
    let engine = engine(pooling, cow);
    let module = Module::new(&engine, wasm).map_err(|e| e.to_string())?;
    let mut linker: Linker<WasiP1Ctx> = Linker::new(&engine);
    wasmtime_wasi::p1::add_to_linker_async(&mut linker, |ctx| ctx).map_err(|e| e.to_string())?;
    let pre = linker.instantiate_pre(&module).map_err(|e| e.to_string())?;
    let mut times = Vec::with_capacity(runs);
    for _ in 0..runs {
        let mut started = Instant::now();
        let (ctx, out) = wasi();
        let mut store = Store::new(&engine, ctx);
        let instance = pre.instantiate_async(&mut store).await.map_err(|e| e.to_string())?;
        let start = instance.get_typed_func::<(), ()>(&mut store, "_start").map_err(|e| e.to_string())?;
        if prewarmed {
            started = Instant::now();
        }
        start.call_async(&mut store, ()).await.map_err(|e| e.to_string())?;
        drop(store);
        times.push(started.elapsed().as_secs_f64() * 1e3);
        check(&out.contents())?;
    }
    Ok(times)
}

async fn executor(wasm: &[u8], runs: usize) -> Result<Vec<f64>, String> {
    let config = terrafirma::config::Config::default();
    let runtime = Runtime::new(terrafirma::engine::EngineShape::from_config(&config)).map_err(|e| e.to_string())?;
    let module = Module::new(&runtime.engine, wasm).map_err(|e| e.to_string())?;
    let limits = terrafirma::sandbox::SandboxLimits::from(&config.limits);
    let handler_config = HandlerConfig { label: "bench/hello".into(), limits, prewarm: 0, kv: None, net: None };
    let (handler, _) = Handler::new(&runtime, Code::Module(module), Abi::WasiCgi, handler_config).map_err(|e| e.to_string())?;
    let mut times = Vec::with_capacity(runs);
    for _ in 0..runs {
        let request = GuestRequest::new(Method::GET, "/hello".parse().unwrap(), HeaderMap::new(), Bytes::new(), [127, 0, 0, 1].into(), 6);
        let started = Instant::now();
        let answer = handler.handle(request, RequestBody::Full(Bytes::new())).await.answer.map_err(|fault| fault.to_string())?;
        times.push(started.elapsed().as_secs_f64() * 1e3);
        let Answer::Full(response) = answer else { return Err("a CGI guest answers whole".into()) };
        check(&response.body)?;
    }
    Ok(times)
}

fn check(output: &[u8]) -> Result<(), String> {
    if output == HELLO.as_bytes() { Ok(()) } else { Err(format!("answered {:?}", String::from_utf8_lossy(output))) }
}

fn median_and_spread(times: &[f64]) -> (f64, f64, f64) {
    let mut sorted = times.to_vec();
    sorted.sort_by(f64::total_cmp);
    let at = |q: f64| sorted[((sorted.len() - 1) as f64 * q).round() as usize];
    (at(0.5), at(0.1), at(0.9))
}

fn format_ms(ms: f64) -> String {
    if ms >= 10.0 {
        format!("{ms:.1} ms")
    } else if ms >= 0.1 {
        format!("{ms:.3} ms")
    } else {
        format!("{:.1} µs", ms * 1e3)
    }
}

fn main() {
    // `cargo bench` passes `--bench`; any other argument is a filter criterion would take.
    let runs: usize = std::env::var("RUNS").ok().and_then(|r| r.parse().ok()).unwrap_or(30);
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let work = root.join("target/startup-bench");
    std::fs::create_dir_all(&work).unwrap();
    let examples = work.join("examples");
    let built = Command::new("bash").arg(root.join("scripts/build-examples.sh")).arg(&examples).output().expect("bash");
    assert!(built.status.success(), "scripts/build-examples.sh failed: {}", String::from_utf8_lossy(&built.stderr));
    let hello_wasm = examples.join("c-hello-wasi.wasm");
    let wasm = std::fs::read(&hello_wasm).unwrap();
    std::fs::write(work.join("hello.sh"), "echo 'Hello, world!'\n").unwrap();
    std::fs::write(work.join("hello.js"), "console.log('Hello, world!');\n").unwrap();
    let (script, js, hello) = (work.join("hello.sh"), work.join("hello.js"), hello_wasm.display().to_string());

    let mut rows = vec![process_row("sh hello.sh", "shell script", "sh", which("sh"), "sh not found", &[script.to_str().unwrap()], runs)];
    rows.push(container_row(&work, runs.min(10)));
    rows.push(process_row(
        "node hello.js",
        "Node.js",
        "node",
        which("node"),
        "node not installed (apt-get install nodejs)",
        &[js.to_str().unwrap()],
        runs,
    ));
    rows.push(process_row(
        "wasmtime run",
        "the C WASI hello",
        "",
        which("wasmtime"),
        "wasmtime not installed (`bash scripts/setup.sh --bench` builds it: `cargo install wasmtime-cli --version 48.0.8 --locked`, about 25 min here)",
        &["run", &hello],
        runs,
    ));
    rows.push(process_row(
        "wasmer run",
        "the C WASI hello",
        "wasmer",
        which("wasmer"),
        "wasmer not installed (`bash scripts/setup.sh --bench` builds it: `cargo install wasmer-cli --version 7.4.2 --features cranelift`, about an hour here)",
        &["run", &hello],
        runs,
    ));
    let cache = work.join("cache");
    let terrafirma = PathBuf::from(env!("CARGO_BIN_EXE_terrafirma"));
    let times = time_process(&terrafirma, &["run", &hello], &[("XDG_CACHE_HOME", &cache)], runs);
    rows.push(Row { name: "terrafirma run".into(), what: "the C WASI hello, cached artifact".into(), seed: None, times });
    rows.extend(in_process_rows(&wasm, runs * 20));

    let sh = rows[0].times.as_ref().ok().map(|times| median_and_spread(times).0);
    println!("\nStart-up of a hello world, {runs} runs per process row (in-process rows: {}), {}.\n", runs * 20, chrono_free_date());
    println!("| row | what | median | p10–p90 | × sh | seed (2019) |");
    println!("| --- | --- | ---: | ---: | ---: | ---: |");
    for row in &rows {
        let seed = row.seed.map_or(String::new(), |ms| format!("{ms} ms"));
        match &row.times {
            Ok(times) => {
                let (median, p10, p90) = median_and_spread(times);
                let ratio = sh.map_or(String::new(), |sh| format!("{:.2}", median / sh));
                println!(
                    "| {} | {} | {} | {}–{} | {ratio} | {seed} |",
                    row.name,
                    row.what,
                    format_ms(median),
                    format_ms(p10),
                    format_ms(p90)
                );
            }
            Err(reason) => println!("| {} | {} | skipped: {reason} | | | {seed} |", row.name, row.what),
        }
    }
    // The same figures as TSV, for scripts/plot.py.
    let mut tsv = String::from("row\tmedian_ms\tp10_ms\tp90_ms\tseed_ms\n");
    for row in &rows {
        let seed = row.seed.map_or(String::new(), |ms| ms.to_string());
        match &row.times {
            Ok(times) => {
                let (median, p10, p90) = median_and_spread(times);
                tsv.push_str(&format!("{}\t{median}\t{p10}\t{p90}\t{seed}\n", row.name));
            }
            Err(_) => tsv.push_str(&format!("{}\t\t\t\t{seed}\n", row.name)),
        }
    }
    std::fs::write(work.join("startup.tsv"), tsv).unwrap();
    println!("\n(as TSV: {})", work.join("startup.tsv").display());
    if rows.iter().any(|row| row.times.as_ref().is_err_and(|reason| reason.starts_with("answered"))) {
        eprintln!("a row answered wrongly");
        std::process::exit(1);
    }
}

/// Today's date from the system clock, for the table's caption.
fn chrono_free_date() -> String {
    let output = Command::new("date").arg("-u").arg("+%Y-%m-%d %H:%M UTC").output();
    output.map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned()).unwrap_or_default()
}
