//! One-off runs of WASI commands (`terrafirma run`): a preview 1 module
//! (`_start`) or a wasip2 command component (`wasi:cli/run`), with the
//! terminal's stdio, as `wasmtime run` runs them.
//!
//! Start-up is the product here, so this path shares nothing with the node
//! but the WASI implementation: an engine of its own (instances allocated on
//! demand, no pool to reserve; no fuel or epoch checks compiled in), only
//! the linker the command needs, a current-thread tokio runtime (no worker
//! threads, no I/O driver), stdout and stderr written straight through,
//! memory initialised in place, and a cache keyed
//! by the file's identity (device, inode, size, modification time), so that
//! a cached run neither reads, hashes nor validates the module: it maps the
//! artifact and goes.

use std::io::Write;
use std::path::{Path, PathBuf};

use bytes::Bytes;
use tokio::io::AsyncWrite;
use wasmtime::component::{Component, ResourceTable};
use wasmtime::{Config, Engine, Linker, Module, Store};
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p1::WasiP1Ctx;
use wasmtime_wasi::p2::bindings::CommandPre;
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamResult};
use wasmtime_wasi::{FsPerms, I32Exit, WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};

/// Names the artifacts of this build's command engine: another build may
/// compile differently.
const ENGINE_TAG: &str = concat!("run-", env!("CARGO_PKG_VERSION"), "-v1");

/// What the command is given.
pub struct CommandOptions<'a> {
    /// `argv[0]` as the guest sees it.
    pub program: &'a str,
    pub args: &'a [String],
    pub env: &'a [(String, String)],
    /// `(host, guest)` directories it may use.
    pub dirs: &'a [(String, String)],
}

/// Why a file cannot be run as a command.
#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    #[error("{0} is an HTTP handler, not a WASI command: give it a request with --request PATH")]
    Handler(String),
    #[error("{0} is not a WASI command: it exports neither `_start` nor `wasi:cli/run`")]
    NotACommand(String),
}

/// Runs `path` once; the guest's exit code. For a process that ends right
/// after: the guest's store (its memory and stack) is left to the kernel.
pub fn run(path: &Path, cache: &Path, options: &CommandOptions<'_>) -> anyhow::Result<i32> {
    // No copy-on-write image: making one (a memfd and a copy of the data
    // segments) costs a single run more than initialising memory in place
    // (0.1 ms for a C hello). No compiler unless the cache misses: building
    // Cranelift's settings probes the CPU with `cpuid`, which a virtual
    // machine traps (6 us each here, 0.09 ms for the probe).
    let mut config = Config::new();
    config.memory_init_cow(false).enable_compiler(false);
    // SAFETY: `cached_cpu_feature` answers from the features the C library
    // found usable at start (or, for a name it does not map, from std's own
    // probe), so an artifact is accepted only where its code can run.
    unsafe { config.detect_host_feature(cached_cpu_feature) };
    let engine = Engine::new(&config)?;
    let code = cached_or_compiled(&engine, path, cache)?;
    // Time but no I/O driver: stdio is written straight through and nothing
    // is granted that needs the reactor (0.2 ms less).
    let runtime = tokio::runtime::Builder::new_current_thread().enable_time().build()?;
    runtime.block_on(async {
        match code {
            Compiled::Module(module) => run_module(&engine, &module, options, path).await,
            Compiled::Component(component) => run_component(&engine, &component, options, path).await,
        }
    })
}

enum Compiled {
    Module(Module),
    Component(Component),
}

/// The cached artifact of `path`, or `path` compiled and cached.
fn cached_or_compiled(engine: &Engine, path: &Path, cache: &Path) -> anyhow::Result<Compiled> {
    let meta = std::fs::metadata(path).map_err(|e| anyhow::anyhow!("cannot read {}: {e}", path.display()))?;
    let key = identity(&meta);
    let (module_file, component_file) = (cache.join(format!("{key}.module.cwasm")), cache.join(format!("{key}.component.cwasm")));
    // SAFETY: files in this cache are written only by `compile` below, with
    // this engine configuration, through an atomic rename; `deserialize_file`
    // checks the engine's compatibility and a mismatch recompiles.
    if module_file.exists()
        && let Ok(module) = unsafe { Module::deserialize_file(engine, &module_file) }
    {
        return Ok(Compiled::Module(module));
    }
    if component_file.exists()
        && let Ok(component) = unsafe { Component::deserialize_file(engine, &component_file) }
    {
        return Ok(Compiled::Component(component));
    }
    compile(engine, path, &module_file, &component_file, cache)
}

/// What identifies the file's contents without reading them: a changed
/// file gets a new modification time (or size, or inode). Written out, not
/// hashed: a hash costs a CPU probe and buys nothing here.
fn identity(meta: &std::fs::Metadata) -> String {
    use std::os::unix::fs::MetadataExt;
    format!("{ENGINE_TAG}-{:x}-{:x}-{:x}-{}.{:09}", meta.dev(), meta.ino(), meta.size(), meta.mtime(), meta.mtime_nsec())
}

fn compile(engine: &Engine, path: &Path, module_file: &Path, component_file: &Path, cache: &Path) -> anyhow::Result<Compiled> {
    let bytes = std::fs::read(path).map_err(|e| anyhow::anyhow!("cannot read {}: {e}", path.display()))?;
    let bytes = if bytes.starts_with(b"\0asm") {
        bytes
    } else if std::str::from_utf8(&bytes).is_ok_and(|text| text.trim_start().starts_with('(') || text.trim_start().starts_with(";;")) {
        wat::parse_bytes(&bytes).map_err(|e| anyhow::anyhow!("not WebAssembly: {e}"))?.into_owned()
    } else {
        anyhow::bail!("not WebAssembly: missing the `\\0asm` magic header");
    };
    // The same settings as `engine`, with Cranelift for this host.
    let compiler = Engine::new(Config::new().memory_init_cow(false))?;
    let tmp = cache.join("tmp");
    if wasmparser::Parser::is_component(&bytes) {
        let artifact = compiler.precompile_component(&bytes)?;
        crate::artifact::write_atomic(&tmp, component_file, &artifact)?;
        // SAFETY: just written, for this host, with `engine`'s settings.
        Ok(Compiled::Component(unsafe { Component::deserialize_file(engine, component_file)? }))
    } else {
        let artifact = compiler.precompile_module(&bytes)?;
        crate::artifact::write_atomic(&tmp, module_file, &artifact)?;
        // SAFETY: as above.
        Ok(Compiled::Module(unsafe { Module::deserialize_file(engine, module_file)? }))
    }
}

/// Whether the CPU feature wasmtime names (std's names) can be used, from
/// what the C library recorded when the process started, so that no `cpuid`
/// runs again. Where glibc does not say yes, std's own probe decides.
fn cached_cpu_feature(feature: &str) -> Option<bool> {
    #[cfg(all(target_arch = "x86_64", target_os = "linux", target_env = "gnu"))]
    if glibc_cpu::active(feature) == Some(true) {
        return Some(true);
    }
    std_cpu_feature(feature)
}

/// std's probe, for the features Cranelift can compile for on x86-64.
fn std_cpu_feature(feature: &str) -> Option<bool> {
    #[cfg(target_arch = "x86_64")]
    {
        use std::is_x86_feature_detected as has;
        Some(match feature {
            "cmpxchg16b" => has!("cmpxchg16b"),
            "sse3" => has!("sse3"),
            "ssse3" => has!("ssse3"),
            "sse4.1" => has!("sse4.1"),
            "sse4.2" => has!("sse4.2"),
            "popcnt" => has!("popcnt"),
            "avx" => has!("avx"),
            "avx2" => has!("avx2"),
            "fma" => has!("fma"),
            "avxvnni" => has!("avxvnni"),
            "bmi1" => has!("bmi1"),
            "bmi2" => has!("bmi2"),
            "lzcnt" => has!("lzcnt"),
            "avx512bitalg" => has!("avx512bitalg"),
            "avx512dq" => has!("avx512dq"),
            "avx512f" => has!("avx512f"),
            "avx512vl" => has!("avx512vl"),
            "avx512vbmi" => has!("avx512vbmi"),
            "avx512vnni" => has!("avx512vnni"),
            _ => return None,
        })
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = feature;
        None
    }
}

/// The C library's record of the CPU (`<sys/platform/x86.h>`, glibc 2.33 and
/// later): per CPUID leaf, the registers as read and the bits it found
/// usable (an AVX feature only where the kernel saves its state).
#[cfg(all(target_arch = "x86_64", target_os = "linux", target_env = "gnu"))]
mod glibc_cpu {
    #[repr(C)]
    struct CpuidFeature {
        cpuid: [u32; 4],
        active: [u32; 4],
    }

    unsafe extern "C" {
        fn __x86_get_cpuid_feature_leaf(leaf: u32) -> *const CpuidFeature;
    }

    // glibc's leaf indices and register order (eax, ebx, ecx, edx).
    const LEAF_1: u32 = 0;
    const LEAF_7: u32 = 1;
    const LEAF_80000001: u32 = 2;
    const LEAF_7_ECX_1: u32 = 6;
    const EAX: usize = 0;
    const EBX: usize = 1;
    const ECX: usize = 2;

    /// Whether glibc marked `feature` usable; `None` for a name not mapped.
    pub fn active(feature: &str) -> Option<bool> {
        let (leaf, register, bit) = match feature {
            "sse3" => (LEAF_1, ECX, 0),
            "ssse3" => (LEAF_1, ECX, 9),
            "fma" => (LEAF_1, ECX, 12),
            "cmpxchg16b" => (LEAF_1, ECX, 13),
            "sse4.1" => (LEAF_1, ECX, 19),
            "sse4.2" => (LEAF_1, ECX, 20),
            "popcnt" => (LEAF_1, ECX, 23),
            "avx" => (LEAF_1, ECX, 28),
            "bmi1" => (LEAF_7, EBX, 3),
            "avx2" => (LEAF_7, EBX, 5),
            "bmi2" => (LEAF_7, EBX, 8),
            "avx512f" => (LEAF_7, EBX, 16),
            "avx512dq" => (LEAF_7, EBX, 17),
            "avx512vl" => (LEAF_7, EBX, 31),
            "avx512vbmi" => (LEAF_7, ECX, 1),
            "avx512vnni" => (LEAF_7, ECX, 11),
            "avx512bitalg" => (LEAF_7, ECX, 12),
            "lzcnt" => (LEAF_80000001, ECX, 5),
            "avxvnni" => (LEAF_7_ECX_1, EAX, 4),
            _ => return None,
        };
        // SAFETY: glibc returns a pointer to its static record, valid for
        // the process's life (a zeroed one for a leaf it does not know).
        let record = unsafe { &*__x86_get_cpuid_feature_leaf(leaf) };
        Some(record.active[register] & (1 << bit) != 0)
    }
}

fn wasi_builder(options: &CommandOptions<'_>) -> anyhow::Result<WasiCtxBuilder> {
    let mut wasi = WasiCtxBuilder::new();
    wasi.inherit_stdin().stdout(Terminal::Stdout).stderr(Terminal::Stderr);
    wasi.args(&std::iter::once(options.program).chain(options.args.iter().map(String::as_str)).collect::<Vec<_>>());
    for (key, value) in options.env {
        wasi.env(key, value);
    }
    for (host, guest) in options.dirs {
        wasi.preopened_dir(host, guest, FsPerms::ReadWrite).map_err(|e| anyhow::anyhow!("--dir {host}: {e}"))?;
    }
    Ok(wasi)
}

/// The exit code of a finished command: `proc_exit`'s, or 0.
fn exit_code(result: wasmtime::Result<()>) -> anyhow::Result<i32> {
    match result {
        Ok(()) => Ok(0),
        Err(error) => match error.downcast_ref::<I32Exit>() {
            Some(exit) => Ok(exit.0),
            None => Err(error.into()),
        },
    }
}

async fn run_module(engine: &Engine, module: &Module, options: &CommandOptions<'_>, path: &Path) -> anyhow::Result<i32> {
    if module.get_export("_start").is_none() {
        let name = path.display().to_string();
        return Err(if module.get_export("run").is_some() { CommandError::Handler(name) } else { CommandError::NotACommand(name) }.into());
    }
    let mut linker: Linker<WasiP1Ctx> = Linker::new(engine);
    wasmtime_wasi::p1::add_to_linker_async(&mut linker, |ctx| ctx)?;
    if module.imports().any(|import| import.module() == "wasi_unstable") {
        wasmtime_wasi::p0::add_to_linker_async(&mut linker, |ctx| ctx)?;
    }
    linker.define_unknown_imports_as_traps(module)?;
    let mut store = Store::new(engine, wasi_builder(options)?.build_p1());
    let instance = linker.instantiate_async(&mut store, module).await?;
    let start = instance.get_typed_func::<(), ()>(&mut store, "_start")?;
    let result = start.call_async(&mut store, ()).await;
    // The process ends with the guest (`run`'s contract): the kernel takes
    // back its memory, stack and mappings at exit, at once, where dropping
    // the store would unmap them one by one first.
    std::mem::forget(store);
    exit_code(result)
}

struct CommandState {
    ctx: WasiCtx,
    table: ResourceTable,
}

impl WasiView for CommandState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView { ctx: &mut self.ctx, table: &mut self.table }
    }
}

async fn run_component(engine: &Engine, component: &Component, options: &CommandOptions<'_>, path: &Path) -> anyhow::Result<i32> {
    let exports: Vec<String> = component.component_type().exports(engine).map(|(name, _)| name.to_owned()).collect();
    let exported = |interface: &str| exports.iter().any(|name| name.split('@').next() == Some(interface));
    if !exported("wasi:cli/run") {
        let name = path.display().to_string();
        let error = if exported("wasi:http/incoming-handler") { CommandError::Handler(name) } else { CommandError::NotACommand(name) };
        return Err(error.into());
    }
    let mut linker = wasmtime::component::Linker::new(engine);
    wasmtime_wasi::p2::add_to_linker_async(&mut linker)?;
    let pre = CommandPre::new(linker.instantiate_pre(component)?)?;
    let mut store = Store::new(engine, CommandState { ctx: wasi_builder(options)?.build(), table: ResourceTable::new() });
    let command = pre.instantiate_async(&mut store).await?;
    let result = command.wasi_cli_run().call_run(&mut store).await;
    // As for a module: the process ends with the guest.
    std::mem::forget(store);
    match result {
        Ok(Ok(())) => Ok(0),
        Ok(Err(())) => Ok(1),
        Err(error) => exit_code(Err(error)),
    }
}

/// The process's stdout or stderr, written straight through: no worker
/// thread, no buffer to flush at exit.
#[derive(Clone, Copy)]
enum Terminal {
    Stdout,
    Stderr,
}

impl Terminal {
    fn write_all(self, bytes: &[u8]) -> std::io::Result<()> {
        match self {
            Terminal::Stdout => std::io::stdout().lock().write_all(bytes),
            Terminal::Stderr => std::io::stderr().lock().write_all(bytes),
        }
    }
}

impl IsTerminal for Terminal {
    fn is_terminal(&self) -> bool {
        match self {
            Terminal::Stdout => std::io::IsTerminal::is_terminal(&std::io::stdout()),
            Terminal::Stderr => std::io::IsTerminal::is_terminal(&std::io::stderr()),
        }
    }
}

impl StdoutStream for Terminal {
    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(*self)
    }

    fn async_stream(&self) -> Box<dyn AsyncWrite + Send + Sync> {
        Box::new(*self)
    }
}

#[wasmtime_wasi::async_trait]
impl Pollable for Terminal {
    async fn ready(&mut self) {}
}

impl OutputStream for Terminal {
    fn write(&mut self, bytes: Bytes) -> StreamResult<()> {
        self.write_all(&bytes).map_err(|e| wasmtime_wasi::p2::StreamError::LastOperationFailed(e.into()))
    }

    fn flush(&mut self) -> StreamResult<()> {
        Ok(())
    }

    fn check_write(&mut self) -> StreamResult<usize> {
        Ok(64 << 10)
    }
}

impl AsyncWrite for Terminal {
    fn poll_write(self: std::pin::Pin<&mut Self>, _cx: &mut std::task::Context<'_>, buf: &[u8]) -> std::task::Poll<std::io::Result<usize>> {
        std::task::Poll::Ready(self.write_all(buf).map(|()| buf.len()))
    }

    fn poll_flush(self: std::pin::Pin<&mut Self>, _cx: &mut std::task::Context<'_>) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: std::pin::Pin<&mut Self>, _cx: &mut std::task::Context<'_>) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }
}

/// Where `terrafirma run` keeps its artifacts.
pub fn cache_dir() -> PathBuf {
    std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".cache")))
        .unwrap_or_else(std::env::temp_dir)
        .join("terrafirma")
}

#[cfg(test)]
mod tests {
    /// Every feature the C library's record maps reads as std's own probe
    /// does, on the machine running the tests: a wrong leaf, register or bit
    /// shows as a disagreement on some feature this CPU has or lacks.
    #[cfg(all(target_arch = "x86_64", target_os = "linux", target_env = "gnu"))]
    #[test]
    fn the_c_librarys_cpu_record_agrees_with_std() {
        let features = [
            "cmpxchg16b",
            "sse3",
            "ssse3",
            "sse4.1",
            "sse4.2",
            "popcnt",
            "avx",
            "avx2",
            "fma",
            "avxvnni",
            "bmi1",
            "bmi2",
            "lzcnt",
            "avx512bitalg",
            "avx512dq",
            "avx512f",
            "avx512vl",
            "avx512vbmi",
            "avx512vnni",
        ];
        for feature in features {
            assert_eq!(super::glibc_cpu::active(feature), super::std_cpu_feature(feature), "{feature}");
        }
        assert_eq!(super::glibc_cpu::active("not-a-feature"), None);
    }
}
