//! The module store on disk and its one write path. Uploads, deletions and
//! the drop-folder scan all go through here, one at a time:
//!
//! ```text
//! DATA/sites/SITE/NAME.wasm     the module as uploaded (the drop folder)
//! DATA/artifacts/*.cwasm        compiled code, rebuilt when missing
//! DATA/tmp/                     temporary files, renamed into place
//! ```

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::SystemTime;

use super::artifact::{Compiled, Plan, write_atomic};
use super::prepare::{PrepareError, Prepared, prepare};
use super::registry::{Compiler, Deployed, ModuleStats, Registry, Serving};
use super::upgrade::Upgrade;
use crate::admission::Gate;
use crate::certs::Certificates;
use crate::config::Config;
use crate::engine::EngineShape;
use crate::executor::{Abi, Code, Handler, HandlerConfig, Runtime};
use crate::kv::KvStores;
use crate::metrics::Metrics;
use crate::names::{valid_module_name, valid_site_name};
use crate::outbound::{AllowList, Net, SiteNet};
use crate::sandbox::SandboxLimits;

#[derive(Debug, thiserror::Error)]
pub enum DeployError {
    #[error("invalid site name {0:?}")]
    BadSite(String),
    #[error("invalid module name {0:?}: use letters, digits, `_` and `-`")]
    BadName(String),
    #[error(transparent)]
    Prepare(#[from] PrepareError),
    #[error("{0}")]
    Link(String),
    #[error("storage failed: {0}")]
    Storage(String),
    /// Over the site's `max_modules` or `max_module_bytes`.
    #[error("{0}")]
    Quota(String),
    /// The node is in a fleet whose servers did not take the change.
    #[error(transparent)]
    Fleet(#[from] crate::fleet::FleetError),
    /// The node's configuration for the site is not usable (the config is
    /// validated at start, so this is a node bug, not the upload's fault).
    #[error("the site's configuration is invalid: {0}")]
    SiteConfig(String),
}

impl DeployError {
    /// Whether the upload itself is at fault (400) rather than the node (500).
    pub fn is_client_error(&self) -> bool {
        !matches!(self, DeployError::Storage(_) | DeployError::SiteConfig(_) | DeployError::Fleet(_))
    }
}

pub struct DeployOutcome {
    pub deployed: Arc<Deployed>,
    pub replaced: bool,
    pub compile_ms: u64,
    /// What compiled the code it was first served with.
    pub compiler: Compiler,
}

/// A module built from an upload: what to serve, how long compiling took,
/// the bytes to store and what compiled the code it is first served with.
struct Built {
    deployed: Arc<Deployed>,
    compile_ms: u64,
    original: Vec<u8>,
    compiler: Compiler,
}

/// Size and modification time of a module file, to notice changes cheaply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stamp {
    len: u64,
    modified: SystemTime,
}

fn stamp(path: &Path) -> Option<Stamp> {
    let meta = std::fs::metadata(path).ok()?;
    Some(Stamp { len: meta.len(), modified: meta.modified().ok()? })
}

pub struct ModuleStore {
    runtime: Arc<Runtime>,
    /// The baseline compiler's engine, where new core modules are first
    /// served from (`Config::baseline_compiler`), and the thread that
    /// compiles them with Cranelift meanwhile, one at a time.
    baseline: Option<(Arc<Runtime>, std::sync::mpsc::Sender<Upgrade>)>,
    /// The client and resolver the sites' guests share.
    net: Arc<Net>,
    config: Arc<Config>,
    sites_dir: PathBuf,
    artifacts_dir: PathBuf,
    tmp_dir: PathBuf,
    kv: KvStores,
    pub registry: Registry,
    pub metrics: Arc<Metrics>,
    /// The sites' HTTPS certificates (`DATA/certs`).
    pub certs: Arc<Certificates>,
    /// Each site's admission gate (`max_concurrency` permits), made at its
    /// first deploy and shared by its modules and their later versions.
    gates: std::sync::Mutex<HashMap<String, Arc<Gate>>>,
    /// The fleet this node is part of: deploys and deletions through the
    /// admin API go to it first.
    fleet: Option<Arc<crate::fleet::Fleet>>,
    /// Set by `close`: the fleet's follower stops.
    closed: std::sync::atomic::AtomicBool,
    /// Serialises every change; also guards what the scan last saw of each
    /// file (a deployed stamp, or one that failed and is not retried).
    scan_state: tokio::sync::Mutex<HashMap<(String, String), Stamp>>,
}

/// Why the data folder is scanned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scan {
    /// The node starts: load what the folder holds.
    Start,
    /// The drop folder changed (or its periodic scan): in a fleet, changes
    /// go to the fleet.
    DropFolder,
}

impl ModuleStore {
    pub fn open(
        runtime: Arc<Runtime>,
        config: Arc<Config>,
        net: Arc<Net>,
        fleet: Option<Arc<crate::fleet::Fleet>>,
    ) -> std::io::Result<Arc<ModuleStore>> {
        let data = &config.data;
        let baseline = match config.baseline_compiler {
            true => Some((Runtime::baseline(EngineShape::from_config(&config)).map_err(std::io::Error::other)?, Upgrade::start_thread()?)),
            false => None,
        };
        let store = ModuleStore {
            baseline,
            closed: std::sync::atomic::AtomicBool::new(false),
            sites_dir: data.join("sites"),
            artifacts_dir: data.join("artifacts"),
            tmp_dir: data.join("tmp"),
            // A fleet's KV is the fleet's bucket; a node's own store is kept
            // apart, untouched, for when it leaves the fleet.
            kv: KvStores::new(if fleet.is_some() { data.join("fleet").join("kv") } else { data.join("kv") }, fleet.clone())?,
            runtime,
            net,
            registry: Registry::default(),
            metrics: Arc::new(Metrics::new()),
            certs: Certificates::open(data.join("certs"), data.join("tmp"))?,
            gates: std::sync::Mutex::new(HashMap::new()),
            scan_state: tokio::sync::Mutex::new(HashMap::new()),
            fleet,
            config,
        };
        for dir in [&store.sites_dir, &store.artifacts_dir, &store.tmp_dir] {
            std::fs::create_dir_all(dir)?;
        }
        Ok(Arc::new(store))
    }

    /// What the metrics read from the other parts at a scrape.
    pub fn readings(&self) -> crate::metrics::Readings {
        use std::sync::atomic::Ordering::Relaxed;
        let kv = &self.kv.counts;
        crate::metrics::Readings {
            pool_in_use: self.pool_slots_in_use(),
            tls_failures: self.certs.failed_handshakes.load(Relaxed),
            kv_ops: std::array::from_fn(|i| kv.ops[i].load(Relaxed)),
            kv_bytes_read: kv.bytes_read.load(Relaxed),
            kv_bytes_written: kv.bytes_written.load(Relaxed),
            outbound: std::array::from_fn(|i| self.net.results[i].load(Relaxed)),
            fleet_restarts: self.fleet.as_ref().map_or([0; 2], |fleet| fleet.restarts()),
            fleet_kv_revision: self.fleet.as_ref().map_or(0, |fleet| fleet.kv_revision()),
        }
    }

    /// The KV store of `site`, shared by its modules.
    pub fn kv_site(&self, site: &str) -> Arc<crate::kv::SiteKv> {
        self.kv.site(site, SandboxLimits::from(self.config.limits_for(site)).max_response_bytes)
    }

    /// Every site's KV store.
    pub fn kv_stores(&self) -> &KvStores {
        &self.kv
    }

    /// Instance slots of the pooling allocator in use now.
    pub fn pool_slots_in_use(&self) -> u64 {
        self.runtime.engine.pooling_allocator_metrics().map_or(0, |m| m.core_instances())
    }

    pub fn sites_dir(&self) -> &Path {
        &self.sites_dir
    }

    fn module_path(&self, site: &str, name: &str) -> PathBuf {
        self.sites_dir.join(site).join(format!("{name}.wasm"))
    }

    /// Validates, compiles and serves an upload, then stores it as
    /// `DATA/sites/SITE/NAME.wasm`. In a fleet, the upload goes to the
    /// fleet's servers after it compiled and before it is served here, so
    /// every node gets it. On any error nothing changes.
    pub async fn deploy(self: &Arc<Self>, site: &str, name: &str, upload: bytes::Bytes) -> Result<DeployOutcome, DeployError> {
        self.deploy_with(site, name, upload, self.fleet.as_ref()).await
    }

    /// `deploy` of what the fleet already has (the fleet's follower).
    pub async fn deploy_local(self: &Arc<Self>, site: &str, name: &str, upload: bytes::Bytes) -> Result<DeployOutcome, DeployError> {
        self.deploy_with(site, name, upload, None).await
    }

    async fn deploy_with(
        self: &Arc<Self>,
        site: &str,
        name: &str,
        upload: bytes::Bytes,
        fleet: Option<&Arc<crate::fleet::Fleet>>,
    ) -> Result<DeployOutcome, DeployError> {
        check_names(site, name)?;
        let mut scan_state = self.scan_state.lock().await;
        self.check_quota(site, name, upload.len() as u64)?;
        let this = self.clone();
        let (site_owned, name_owned) = (site.to_owned(), name.to_owned());
        let built = tokio::task::spawn_blocking(move || this.build(&site_owned, &name_owned, &upload))
            .await
            .map_err(|e| DeployError::Storage(format!("deploy task failed: {e}")))??;
        let Built { deployed, compile_ms, original, compiler } = built;
        if let Some(fleet) = fleet {
            fleet.publish(site, name, &original, &deployed.sha256, deployed.abi.as_str()).await?;
        }
        let path = self.module_path(site, name);
        let this = self.clone();
        let (outcome, stamp) = tokio::task::spawn_blocking(move || {
            write_atomic(&this.tmp_dir, &path, &original).map_err(|e| DeployError::Storage(e.to_string()))?;
            let replaced = this.registry.insert(deployed.clone()).is_some();
            Ok::<_, DeployError>((DeployOutcome { deployed, replaced, compile_ms, compiler }, stamp(&path)))
        })
        .await
        .map_err(|e| DeployError::Storage(format!("deploy task failed: {e}")))??;
        if let Some(stamp) = stamp {
            scan_state.insert((site.to_owned(), name.to_owned()), stamp);
        }
        Ok(outcome)
    }

    /// Whether `close` was called.
    pub fn is_closed(&self) -> bool {
        self.closed.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Stops serving everything and closes the sites' KV stores, releasing
    /// their files.
    pub async fn close(&self) {
        self.closed.store(true, std::sync::atomic::Ordering::Relaxed);
        let _scan_state = self.scan_state.lock().await;
        for deployed in self.registry.all() {
            self.registry.remove(&deployed.site, &deployed.name);
        }
        self.kv.close().await;
    }

    /// Stops serving a module and deletes its file. `false` if there was
    /// none. In a fleet, the deletion goes to the fleet's servers first.
    pub async fn remove(&self, site: &str, name: &str) -> Result<bool, DeployError> {
        check_names(site, name)?;
        let Some(fleet) = &self.fleet else { return self.remove_local(site, name).await };
        // Asked before the deletion goes out: this node's follower may
        // apply it before `remove_local` below runs.
        let existed = self.registry.get(site, name).is_some() || self.module_path(site, name).exists();
        if !existed {
            return Ok(false);
        }
        fleet.retract(site, name).await?;
        self.remove_local(site, name).await?;
        Ok(true)
    }

    /// `remove` of what the fleet already deleted (the fleet's follower).
    pub async fn remove_local(&self, site: &str, name: &str) -> Result<bool, DeployError> {
        check_names(site, name)?;
        let mut scan_state = self.scan_state.lock().await;
        scan_state.remove(&(site.to_owned(), name.to_owned()));
        let removed = self.registry.remove(site, name).is_some();
        match std::fs::remove_file(self.module_path(site, name)) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(removed),
            Err(e) => Err(DeployError::Storage(e.to_string())),
        }
    }

    /// Refuses an upload that would take the site over its number of
    /// modules or stored bytes (the version it replaces does not count).
    fn check_quota(&self, site: &str, name: &str, bytes: u64) -> Result<(), DeployError> {
        let limits = self.config.limits_for(site);
        let others: Vec<_> = self.registry.list(site).into_iter().filter(|d| d.name != name).collect();
        if others.len() as u64 >= limits.max_modules {
            return Err(DeployError::Quota(format!("site {site} already has {} modules, its limit (max_modules)", others.len())));
        }
        let stored: u64 = others.iter().map(|d| d.bytes).sum();
        if stored + bytes > limits.max_module_bytes {
            return Err(DeployError::Quota(format!(
                "site {site} stores {stored} bytes of modules; {bytes} more would pass its limit of {} (max_module_bytes)",
                limits.max_module_bytes
            )));
        }
        Ok(())
    }

    fn gate(&self, site: &str) -> Arc<Gate> {
        let permits = self.config.limits_for(site).max_concurrency as usize;
        let mut gates = self.gates.lock().unwrap_or_else(|p| p.into_inner());
        gates.entry(site.to_owned()).or_insert_with(|| Arc::new(Gate::new(permits))).clone()
    }

    /// Prepares, compiles (or loads the cached artifact) and links a module.
    /// A core module with no artifact yet is served with baseline code,
    /// and its Cranelift code takes over when the upgrade thread has it.
    fn build(&self, site: &str, name: &str, upload: &[u8]) -> Result<Built, DeployError> {
        let prepared = prepare(upload)?;
        let site_limits = self.config.limits_for(site);
        let limits = SandboxLimits::from(site_limits);
        let kv = self.kv_site(site);
        let allow = AllowList::parse(&site_limits.outbound_hosts).map_err(DeployError::SiteConfig)?;
        let net = SiteNet { net: self.net.clone(), allow: Arc::new(allow) };
        let config = HandlerConfig {
            label: Arc::from(format!("{site}/{name}")),
            limits,
            prewarm: self.config.pool.prewarm,
            kv: Some(kv),
            net: Some(net),
        };
        let plan = Plan::new(&self.runtime, &self.artifacts_dir, &prepared, site_limits.preinitialize.then_some(&limits));
        let started = std::time::Instant::now();
        let (compiled, compiler, upgrade) = match plan.load_cached(&self.runtime) {
            Some(compiled) => (compiled, Compiler::Cranelift, None),
            None => match self.compile_baseline(&plan, &prepared) {
                Some((compiled, wasm)) => {
                    let initialization = compiled.initialization.clone();
                    (compiled, Compiler::Winch, Some((wasm, initialization)))
                }
                None => {
                    let compiled = plan
                        .build(&self.runtime, &self.tmp_dir, &prepared)
                        .map_err(|e| DeployError::Link(format!("compilation failed: {}", root_message(&e))))?;
                    (compiled, Compiler::Cranelift, None)
                }
            },
        };
        // A cached artifact says 0; baseline code counts its pre-initialisation too.
        let compile_ms = if compiler == Compiler::Winch { started.elapsed().as_millis() as u64 } else { compiled.compile_ms };
        let runtime = match compiler {
            Compiler::Winch => &self.baseline.as_ref().expect("baseline code comes from the baseline engine").0,
            Compiler::Cranelift => &self.runtime,
        };
        let (handler, warnings) =
            Handler::new(runtime, compiled.code, prepared.abi, config.clone()).map_err(|e| DeployError::Link(root_message(&e.into())))?;
        let deployed = Arc::new(Deployed {
            site: site.to_owned(),
            name: name.to_owned(),
            sha256: prepared.sha256,
            bytes: prepared.original.len() as u64,
            abi: prepared.abi,
            deployed_at: SystemTime::now(),
            warnings,
            initialization: compiled.initialization,
            serving: arc_swap::ArcSwap::from_pointee(Serving { handler, compiler }),
            requests: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            gate: self.gate(site),
            metrics: self.metrics.module(site, name),
            stats: ModuleStats::default(),
        });
        if let (Some((wasm, initialization)), Some((_, jobs))) = (upgrade, &self.baseline) {
            let job = Upgrade {
                runtime: self.runtime.clone(),
                tmp: self.tmp_dir.clone(),
                plan,
                wasm,
                initialization,
                config,
                deployed: Arc::downgrade(&deployed),
            };
            if jobs.send(job).is_err() {
                tracing::error!(%site, module = %name, "the Cranelift thread is gone: the module stays on baseline code");
            }
        }
        Ok(Built { deployed, compile_ms, original: prepared.original, compiler })
    }

    /// Baseline code for a core module, and the bytes it was compiled from
    /// (after pre-initialisation) for the Cranelift upgrade; `None` where
    /// there is no baseline engine, for components, or where Winch cannot
    /// compile the module (then Cranelift compiles it right away).
    fn compile_baseline(&self, plan: &Plan, prepared: &Prepared) -> Option<(Compiled, Vec<u8>)> {
        let (baseline, _) = self.baseline.as_ref().filter(|_| prepared.abi != Abi::WasiHttp)?;
        let (initialization, wasm) = plan.initialize(&baseline.engine, prepared);
        match wasmtime::Module::new(&baseline.engine, &wasm) {
            Ok(module) => Some((Compiled { code: Code::Module(module), compile_ms: 0, initialization }, wasm.into_owned())),
            Err(error) => {
                tracing::info!(
                    "the baseline compiler cannot compile this module ({}); compiling it with Cranelift",
                    root_message(&error.into())
                );
                None
            }
        }
    }

    /// Brings the registry in line with `DATA/sites`: new or changed files are
    /// deployed, removed files stop being served. Used at start and by the
    /// drop-folder watcher. A file that fails is logged once per version.
    ///
    /// In a fleet, what the drop folder changes while the node runs goes to
    /// the fleet first, as an admin API deploy or deletion does: a change
    /// the fleet's servers do not take is not made here either, and is tried
    /// again at the next scan. At start the folder is this node's copy of
    /// what the fleet deployed, and is only loaded.
    pub async fn rescan(self: &Arc<Self>, scan: Scan) {
        let mut scan_state = self.scan_state.lock().await;
        let this = self.clone();
        let seen = std::mem::take(&mut *scan_state);
        let seen = tokio::task::spawn_blocking(move || this.rescan_blocking(seen, scan)).await;
        match seen {
            Ok(seen) => *scan_state = seen,
            Err(e) => tracing::error!("drop-folder scan failed: {e}"),
        }
    }

    fn rescan_blocking(&self, mut seen: HashMap<(String, String), Stamp>, scan: Scan) -> HashMap<(String, String), Stamp> {
        let fleet = self.fleet.as_ref().filter(|_| scan == Scan::DropFolder);
        // This runs on a blocking thread of the runtime, which may wait on it.
        let runtime = tokio::runtime::Handle::current();
        let files = self.module_files();
        for deployed in self.registry.all() {
            let key = (deployed.site.clone(), deployed.name.clone());
            if !files.contains_key(&key) {
                if let Some(fleet) = fleet
                    && let Err(error) = runtime.block_on(fleet.retract(&key.0, &key.1))
                {
                    tracing::warn!(site = %key.0, module = %key.1, "module file removed, still served: {error}; trying again at the next scan");
                    continue;
                }
                tracing::info!(site = %key.0, module = %key.1, "module file removed; no longer served");
                self.registry.remove(&key.0, &key.1);
                seen.remove(&key);
            }
        }
        seen.retain(|key, _| files.contains_key(key));
        for (key, path) in files {
            let Some(current) = stamp(&path) else { continue };
            if seen.get(&key) == Some(&current) {
                continue;
            }
            seen.insert(key.clone(), current);
            let (site, name) = key;
            let bytes = match std::fs::read(&path) {
                Ok(bytes) => bytes,
                Err(e) => {
                    tracing::warn!(%site, module = %name, "cannot read module file: {e}");
                    continue;
                }
            };
            let unchanged = self.registry.get(&site, &name).is_some_and(|d| {
                use sha2::Digest;
                d.sha256 == hex::encode(sha2::Sha256::digest(&bytes))
            });
            if unchanged {
                continue;
            }
            match self.build(&site, &name, &bytes) {
                Ok(Built { deployed, compile_ms, original, .. }) => {
                    if let Some(fleet) = fleet
                        && let Err(error) =
                            runtime.block_on(fleet.publish(&site, &name, &original, &deployed.sha256, deployed.abi.as_str()))
                    {
                        tracing::warn!(%site, module = %name, "module file not deployed: {error}; trying again at the next scan");
                        seen.remove(&(site, name));
                        continue;
                    }
                    tracing::info!(%site, module = %name, sha256 = %deployed.sha256, compile_ms, "deployed from the data folder");
                    self.registry.insert(deployed);
                }
                Err(e) => tracing::warn!(%site, module = %name, "not deployed: {e}"),
            }
        }
        seen
    }

    /// `(site, name) -> path` of every module file with valid names.
    fn module_files(&self) -> HashMap<(String, String), PathBuf> {
        let mut files = HashMap::new();
        let Ok(sites) = std::fs::read_dir(&self.sites_dir) else { return files };
        for site in sites.flatten() {
            let Some(site_name) = site.file_name().to_str().map(str::to_owned) else { continue };
            if !valid_site_name(&site_name) || !site.path().is_dir() {
                continue;
            }
            let Ok(modules) = std::fs::read_dir(site.path()) else { continue };
            for module in modules.flatten() {
                let file_name = module.file_name();
                let Some(name) = file_name.to_str().and_then(|f| f.strip_suffix(".wasm")) else { continue };
                if valid_module_name(name) && module.path().is_file() {
                    files.insert((site_name.clone(), name.to_owned()), module.path());
                }
            }
        }
        files
    }
}

fn check_names(site: &str, name: &str) -> Result<(), DeployError> {
    if !valid_site_name(site) {
        return Err(DeployError::BadSite(site.to_owned()));
    }
    if !valid_module_name(name) {
        return Err(DeployError::BadName(name.to_owned()));
    }
    Ok(())
}

/// The most specific message of an error chain, without host paths.
pub(super) fn root_message(error: &anyhow::Error) -> String {
    let messages: Vec<String> = error.chain().map(|e| e.to_string()).collect();
    // wasmtime's link errors put the useful part ("incompatible import type
    // for `env::x`") on top and details below; keep the top two lines.
    let text = messages.iter().take(2).cloned().collect::<Vec<_>>().join(": ");
    text.lines().next().unwrap_or_default().to_owned()
}
