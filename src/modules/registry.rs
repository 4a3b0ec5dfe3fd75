//! The deployed modules, by site and name, as the request path reads them:
//! an immutable snapshot behind an `ArcSwap`, replaced whole on every
//! change, so a lookup takes no lock and a request keeps the version it got.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;
use hdrhistogram::Histogram;

use crate::admission::Gate;
use crate::executor::{Abi, Handler};
use crate::metrics::ModuleMetrics;
use crate::modules::preinit::Initialization;

/// One version of one module, ready to serve.
pub struct Deployed {
    pub site: String,
    pub name: String,
    pub sha256: String,
    pub bytes: u64,
    pub abi: Abi,
    pub deployed_at: SystemTime,
    pub warnings: Vec<String>,
    /// How its `_initialize` runs: once at upload, or per request and why.
    pub initialization: Initialization,
    /// The code requests run now: baseline code is replaced once, when the
    /// optimised code is ready; a request keeps the code it started with.
    pub serving: ArcSwap<Serving>,
    pub requests: AtomicU64,
    pub errors: AtomicU64,
    /// Its site's admission gate, shared by all the site's modules.
    pub gate: Arc<Gate>,
    pub metrics: ModuleMetrics,
    pub stats: ModuleStats,
}

/// A module's handler and the compiler that made its code.
pub struct Serving {
    pub handler: Handler,
    pub compiler: Compiler,
}

/// Which compiler made the code a module is served with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compiler {
    /// Winch, the baseline compiler: what a new module is served with while
    /// Cranelift compiles it.
    Winch,
    /// Cranelift, the optimising compiler.
    Cranelift,
}

impl Compiler {
    pub fn as_str(self) -> &'static str {
        match self {
            Compiler::Winch => "winch",
            Compiler::Cranelift => "cranelift",
        }
    }
}

impl Deployed {
    pub fn count(&self, error: bool) {
        self.requests.fetch_add(1, Ordering::Relaxed);
        if error {
            self.errors.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// A module's latency and fuel per request since it was deployed, for the
/// admin API's p50 and p99 (`hdrhistogram`, 3 significant digits).
pub struct ModuleStats(Mutex<StatsInner>);

struct StatsInner {
    latency_us: Histogram<u64>,
    fuel: Histogram<u64>,
}

/// Quantiles of one measure; `None` before the first request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quantiles {
    pub p50: u64,
    pub p99: u64,
}

impl Default for ModuleStats {
    fn default() -> Self {
        let histogram = || Histogram::new(3).expect("3 significant digits is a valid precision");
        ModuleStats(Mutex::new(StatsInner { latency_us: histogram(), fuel: histogram() }))
    }
}

impl ModuleStats {
    pub fn record(&self, latency: Duration, fuel: Option<u64>) {
        let mut inner = self.0.lock().unwrap_or_else(|p| p.into_inner());
        inner.latency_us.saturating_record(latency.as_micros().min(u64::MAX as u128) as u64);
        if let Some(fuel) = fuel {
            inner.fuel.saturating_record(fuel);
        }
    }

    /// Latency (µs) and fuel quantiles.
    pub fn quantiles(&self) -> (Option<Quantiles>, Option<Quantiles>) {
        let inner = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let of = |h: &Histogram<u64>| (!h.is_empty()).then(|| Quantiles { p50: h.value_at_quantile(0.5), p99: h.value_at_quantile(0.99) });
        (of(&inner.latency_us), of(&inner.fuel))
    }
}

/// Site → module name → module. Looked up twice per request with names
/// from the request, written only by deploys: foldhash, not std's SipHash
/// (a third of the lookups' cost; callgrind, RESULTS.md). Its seed is still
/// random per process, and a site holds at most `max_modules` names.
type Sites = HashMap<String, HashMap<String, Arc<Deployed>, Hasher>, Hasher>;
type Hasher = foldhash::fast::RandomState;

#[derive(Default)]
pub struct Registry {
    sites: ArcSwap<Sites>,
    writer: Mutex<()>,
}

impl Registry {
    pub fn get(&self, site: &str, name: &str) -> Option<Arc<Deployed>> {
        self.sites.load().get(site)?.get(name).cloned()
    }

    pub fn has_site(&self, site: &str) -> bool {
        self.sites.load().contains_key(site)
    }

    /// A site's modules, sorted by name.
    pub fn list(&self, site: &str) -> Vec<Arc<Deployed>> {
        let mut modules: Vec<_> = self.sites.load().get(site).map(|m| m.values().cloned().collect()).unwrap_or_default();
        modules.sort_by(|a, b| a.name.cmp(&b.name));
        modules
    }

    /// Every deployed module.
    pub fn all(&self) -> Vec<Arc<Deployed>> {
        self.sites.load().values().flat_map(|m| m.values().cloned()).collect()
    }

    /// Serves `deployed` from now on; returns the version it replaces.
    pub fn insert(&self, deployed: Arc<Deployed>) -> Option<Arc<Deployed>> {
        self.update(|sites| sites.entry(deployed.site.clone()).or_default().insert(deployed.name.clone(), deployed))
    }

    pub fn remove(&self, site: &str, name: &str) -> Option<Arc<Deployed>> {
        self.update(|sites| {
            let modules = sites.get_mut(site)?;
            let removed = modules.remove(name);
            if modules.is_empty() {
                sites.remove(site);
            }
            removed
        })
    }

    fn update<R>(&self, change: impl FnOnce(&mut Sites) -> R) -> R {
        let _writer = self.writer.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let mut sites = Sites::clone(&self.sites.load());
        let result = change(&mut sites);
        self.sites.store(Arc::new(sites));
        result
    }
}
