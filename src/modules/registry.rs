//! The deployed modules, by site and name, as the request path reads them:
//! an immutable snapshot behind an `ArcSwap`, replaced whole on every
//! change, so a lookup takes no lock and a request keeps the version it got.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use arc_swap::ArcSwap;

use crate::executor::{Abi, Handler};

/// One version of one module, ready to serve.
pub struct Deployed {
    pub site: String,
    pub name: String,
    pub sha256: String,
    pub bytes: u64,
    pub abi: Abi,
    pub deployed_at: SystemTime,
    pub warnings: Vec<String>,
    pub handler: Handler,
    pub requests: AtomicU64,
    pub errors: AtomicU64,
}

impl Deployed {
    pub fn count(&self, error: bool) {
        self.requests.fetch_add(1, Ordering::Relaxed);
        if error {
            self.errors.fetch_add(1, Ordering::Relaxed);
        }
    }
}

type Sites = HashMap<String, HashMap<String, Arc<Deployed>>>;

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
