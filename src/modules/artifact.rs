//! Compiled artifacts: a prepared module compiled once for this engine and
//! kept in a directory of artifacts (a node's `DATA/artifacts`, or
//! `terrafirma run`'s cache), named by the module's sha256 and the engine's
//! compatibility tag, loaded back with `Module::deserialize_file` (mmap).

use std::borrow::Cow;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use wasmtime::Module;
use wasmtime::component::Component;

use super::preinit::{Initialization, exports_initialize, preinitialize};
use super::prepare::Prepared;
use crate::executor::{Abi, Code, Runtime};
use crate::sandbox::SandboxLimits;

/// Bumped whenever `prepare::rewrite` changes what it produces.
const REWRITE_VERSION: u32 = 1;

/// Bumped whenever `preinit` changes what it produces.
const PREINIT_VERSION: u32 = 1;

/// Why a guest runs `_initialize` per request when it was not asked to.
const PREINIT_OFF: &str = "turned off for this site (preinitialize = false)";

/// A compiled module or component, how long compiling it took (0 if it was
/// cached) and how its `_initialize` runs.
pub struct Compiled {
    pub code: Code,
    pub compile_ms: u64,
    pub initialization: Initialization,
}

/// Loads an artifact written by `load_or_compile` for `abi`.
///
/// # Safety
/// `path` must hold what `precompile_module` or `precompile_component` of
/// this engine configuration wrote (see `load_or_compile`).
unsafe fn load(runtime: &Runtime, abi: Abi, path: &Path) -> wasmtime::Result<Code> {
    // SAFETY: as the caller promises.
    unsafe {
        Ok(match abi {
            Abi::WasiHttp => Code::Component(Component::deserialize_file(&runtime.engine, path)?),
            Abi::Terrafirma | Abi::WasiCgi => Code::Module(Module::deserialize_file(&runtime.engine, path)?),
        })
    }
}

pub fn artifact_path(dir: &Path, runtime: &Runtime, sha256: &str) -> PathBuf {
    dir.join(format!("{sha256}-{}-r{REWRITE_VERSION}.cwasm", runtime.compat_tag))
}

/// The artifact of a module whose `_initialize` was tried at upload, and
/// the file beside it that says how that went (`Initialization::encode`).
fn preinit_paths(dir: &Path, runtime: &Runtime, sha256: &str) -> (PathBuf, PathBuf) {
    let stem = format!("{sha256}-{}-r{REWRITE_VERSION}-i{PREINIT_VERSION}", runtime.compat_tag);
    (dir.join(format!("{stem}.cwasm")), dir.join(format!("{stem}.init")))
}

/// Where a prepared module's artifact lives and how it is to be built: the
/// steps of `load_or_compile`, apart so that a module can be served from
/// other code (the baseline compiler) while its artifact is compiled.
#[derive(Clone)]
pub struct Plan {
    abi: Abi,
    path: PathBuf,
    /// The file beside the artifact that records `Initialization`, for a
    /// module whose `_initialize` is tried at upload.
    init_path: Option<PathBuf>,
    /// The limits `_initialize` is tried under, if it is.
    preinit: Option<SandboxLimits>,
    /// What a module not tried is: `None`, or per request because the site
    /// turned pre-initialisation off.
    untried: Initialization,
}

impl Plan {
    /// With `preinit`, a Terrafirma guest that exports `_initialize` has it
    /// run once under those limits and is compiled from the snapshot where
    /// that is safe (`preinit`).
    pub fn new(runtime: &Runtime, dir: &Path, prepared: &Prepared, preinit: Option<&SandboxLimits>) -> Plan {
        let initializes = prepared.abi == Abi::Terrafirma && exports_initialize(&prepared.rewritten);
        let untried = match initializes {
            true => Initialization::PerRequest(PREINIT_OFF.to_owned()),
            false => Initialization::None,
        };
        match preinit.filter(|_| initializes) {
            Some(limits) => {
                let (path, init) = preinit_paths(dir, runtime, &prepared.sha256);
                Plan { abi: prepared.abi, path, init_path: Some(init), preinit: Some(*limits), untried }
            }
            None => {
                Plan { abi: prepared.abi, path: artifact_path(dir, runtime, &prepared.sha256), init_path: None, preinit: None, untried }
            }
        }
    }

    /// The artifact already compiled for `runtime`'s engine, if there is a
    /// readable one.
    pub fn load_cached(&self, runtime: &Runtime) -> Option<Compiled> {
        let initialization = match &self.init_path {
            Some(init) => Initialization::decode(&std::fs::read_to_string(init).ok()?)?,
            None => self.untried.clone(),
        };
        if !self.path.exists() {
            return None;
        }
        // SAFETY: the file was written by `precompile_module` of this engine
        // configuration (the name carries its compatibility tag) through an
        // atomic rename, and nothing but `Plan::compile` writes to a
        // directory of artifacts.
        match unsafe { load(runtime, self.abi, &self.path) } {
            Ok(code) => Some(Compiled { code, compile_ms: 0, initialization }),
            Err(error) => {
                tracing::warn!("recompiling unreadable artifact {}: {error}", self.path.display());
                None
            }
        }
    }

    /// Runs `_initialize` once on `engine` if the plan says so: the bytes to
    /// compile (the snapshot, or the module as prepared) and how it went.
    pub fn initialize<'a>(&self, engine: &wasmtime::Engine, prepared: &'a Prepared) -> (Initialization, Cow<'a, [u8]>) {
        match &self.preinit {
            Some(limits) => match preinitialize(engine, &prepared.rewritten, limits) {
                Ok(snapshot) => (Initialization::Snapshot, Cow::Owned(snapshot)),
                Err(reason) => (Initialization::PerRequest(reason), Cow::Borrowed(&prepared.rewritten)),
            },
            None => (self.untried.clone(), Cow::Borrowed(&prepared.rewritten)),
        }
    }

    /// `initialize` and `compile` on `runtime`'s engine; `compile_ms`
    /// counts both.
    pub fn build(&self, runtime: &Runtime, tmp: &Path, prepared: &Prepared) -> anyhow::Result<Compiled> {
        let started = Instant::now();
        let (initialization, wasm) = self.initialize(&runtime.engine, prepared);
        let compiled = self.compile(runtime, tmp, &wasm, initialization)?;
        Ok(Compiled { compile_ms: started.elapsed().as_millis() as u64, ..compiled })
    }

    pub fn abi(&self) -> Abi {
        self.abi
    }

    /// Compiles `wasm` (from `initialize`) for `runtime`'s engine, writes
    /// the artifact and loads it back.
    pub fn compile(&self, runtime: &Runtime, tmp: &Path, wasm: &[u8], initialization: Initialization) -> anyhow::Result<Compiled> {
        let started = Instant::now();
        let bytes = match self.abi {
            Abi::WasiHttp => runtime.engine.precompile_component(wasm)?,
            Abi::Terrafirma | Abi::WasiCgi => runtime.engine.precompile_module(wasm)?,
        };
        let compile_ms = started.elapsed().as_millis() as u64;
        // The decision first: an artifact is only ever read beside its decision.
        if let Some(init) = &self.init_path {
            write_atomic(tmp, init, initialization.encode().as_bytes())?;
        }
        write_atomic(tmp, &self.path, &bytes)?;
        // SAFETY: as in `load_cached`; the file was just written by this engine.
        let code = unsafe { load(runtime, self.abi, &self.path)? };
        Ok(Compiled { code, compile_ms, initialization })
    }
}

/// Loads the artifact of `prepared` from `dir`, compiling and writing it if
/// it is missing or unreadable; `preinit` as in `Plan::new`.
pub fn load_or_compile(
    runtime: &Runtime,
    dir: &Path,
    tmp: &Path,
    prepared: &Prepared,
    preinit: Option<&SandboxLimits>,
) -> anyhow::Result<Compiled> {
    let plan = Plan::new(runtime, dir, prepared, preinit);
    match plan.load_cached(runtime) {
        Some(compiled) => Ok(compiled),
        None => plan.build(runtime, tmp, prepared),
    }
}

/// Compiles in memory only, with no artifact written (benches).
pub fn compile_in_memory(runtime: &Runtime, prepared: &Prepared) -> anyhow::Result<Code> {
    Ok(match prepared.abi {
        Abi::WasiHttp => Code::Component(Component::new(&runtime.engine, &prepared.rewritten)?),
        Abi::Terrafirma | Abi::WasiCgi => Code::Module(Module::new(&runtime.engine, &prepared.rewritten)?),
    })
}

/// Writes `bytes` to `dest` so that a crash leaves either the old file or the
/// new one: a temporary file in `tmp` (same filesystem), fsync, rename, fsync
/// of the directory.
pub fn write_atomic(tmp: &Path, dest: &Path, bytes: &[u8]) -> std::io::Result<()> {
    std::fs::create_dir_all(tmp)?;
    let mut file = tempfile_in(tmp)?;
    file.1.write_all(bytes)?;
    file.1.sync_all()?;
    drop(file.1);
    if let Some(parent) = dest.parent() {
        std::fs::create_dir_all(parent)?;
    }
    std::fs::rename(&file.0, dest).inspect_err(|_| {
        let _ = std::fs::remove_file(&file.0);
    })?;
    if let Some(parent) = dest.parent() {
        std::fs::File::open(parent)?.sync_all()?;
    }
    Ok(())
}

fn tempfile_in(dir: &Path) -> std::io::Result<(PathBuf, std::fs::File)> {
    loop {
        let path = dir.join(format!(".tmp-{:016x}", rand::random::<u64>()));
        match std::fs::OpenOptions::new().write(true).create_new(true).open(&path) {
            Ok(file) => return Ok((path, file)),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e),
        }
    }
}
