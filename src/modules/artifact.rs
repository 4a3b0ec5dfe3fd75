//! Compiled artifacts: a prepared module compiled once for this engine and
//! kept in a directory of artifacts (a node's `DATA/artifacts`, or
//! `terrafirma run`'s cache), named by the module's sha256 and the engine's
//! compatibility tag, loaded back with `Module::deserialize_file` (mmap).

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

/// Loads the artifact of `prepared` from `dir`, compiling and writing it if
/// it is missing or unreadable. With `preinit`, a Terrafirma guest that
/// exports `_initialize` has it run once under those limits and is compiled
/// from the snapshot where that is safe (`preinit`).
pub fn load_or_compile(
    runtime: &Runtime,
    dir: &Path,
    tmp: &Path,
    prepared: &Prepared,
    preinit: Option<&SandboxLimits>,
) -> anyhow::Result<Compiled> {
    let initializes = prepared.abi == Abi::Terrafirma && exports_initialize(&prepared.rewritten);
    let unsnapshotted = match initializes {
        true => Initialization::PerRequest(PREINIT_OFF.to_owned()),
        false => Initialization::None,
    };
    let preinit = preinit.filter(|_| initializes);
    let (path, init_path) = match preinit {
        Some(_) => {
            let (path, init) = preinit_paths(dir, runtime, &prepared.sha256);
            (path, Some(init))
        }
        None => (artifact_path(dir, runtime, &prepared.sha256), None),
    };
    let cached_init = match &init_path {
        Some(init) => std::fs::read_to_string(init).ok().and_then(|text| Initialization::decode(&text)),
        None => Some(unsnapshotted.clone()),
    };
    if let Some(initialization) = cached_init.filter(|_| path.exists()) {
        // SAFETY: the file was written by `precompile_module` of this engine
        // configuration (the name carries its compatibility tag) through an
        // atomic rename, and nothing but this function writes to a
        // directory of artifacts.
        match unsafe { load(runtime, prepared.abi, &path) } {
            Ok(code) => return Ok(Compiled { code, compile_ms: 0, initialization }),
            Err(error) => tracing::warn!("recompiling unreadable artifact {}: {error}", path.display()),
        }
    }
    let started = Instant::now();
    let (initialization, wasm) = match preinit {
        Some(limits) => match preinitialize(&runtime.engine, &prepared.rewritten, limits) {
            Ok(snapshot) => (Initialization::Snapshot, std::borrow::Cow::Owned(snapshot)),
            Err(reason) => (Initialization::PerRequest(reason), std::borrow::Cow::Borrowed(&prepared.rewritten)),
        },
        None => (unsnapshotted, std::borrow::Cow::Borrowed(&prepared.rewritten)),
    };
    let bytes = match prepared.abi {
        Abi::WasiHttp => runtime.engine.precompile_component(&wasm)?,
        Abi::Terrafirma | Abi::WasiCgi => runtime.engine.precompile_module(&wasm)?,
    };
    let compile_ms = started.elapsed().as_millis() as u64;
    // The decision first: an artifact is only ever read beside its decision.
    if let Some(init) = &init_path {
        write_atomic(tmp, init, initialization.encode().as_bytes())?;
    }
    write_atomic(tmp, &path, &bytes)?;
    // SAFETY: as above; the file was just written by this engine.
    let code = unsafe { load(runtime, prepared.abi, &path)? };
    Ok(Compiled { code, compile_ms, initialization })
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
