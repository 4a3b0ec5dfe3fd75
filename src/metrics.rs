//! What the node reports to its operators: `GET /metrics` on the admin port,
//! in Prometheus's text format (`docs/metrics.md` lists every series).
//!
//! The request path touches no map and builds no label: each deployed
//! module holds its own handles (`ModuleMetrics`), made once at deploy;
//! only a status code a module has not answered with before takes a lock
//! to make its counter.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::sandbox::Cost;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ModuleLabels {
    site: String,
    module: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StatusLabels {
    site: String,
    module: String,
    status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct FaultLabels {
    site: String,
    module: String,
    kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SiteLabels {
    site: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabels {
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct FollowerLabels {
    follower: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OpLabels {
    op: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DirectionLabels {
    direction: &'static str,
}

/// Figures other parts of the node keep in their own atomic counters,
/// read at each scrape.
#[derive(Debug, Default, Clone, Copy)]
pub struct Readings {
    pub pool_in_use: u64,
    pub tls_failures: u64,
    /// By `KV_OPS`.
    pub kv_ops: [u64; 5],
    pub kv_bytes_read: u64,
    pub kv_bytes_written: u64,
    /// By `OUTBOUND_RESULTS`.
    pub outbound: [u64; 3],
    /// In a fleet: times each follower (by `FLEET_FOLLOWERS`) started its
    /// watch again after it failed, and the KV bucket's last revision
    /// this node's copy applied.
    pub fleet_restarts: [u64; 2],
    pub fleet_kv_revision: u64,
}

/// The `op` labels of `Readings::kv_ops`, and the `result` labels of
/// `Readings::outbound`.
pub const KV_OPS: [&str; 5] = ["get", "insert", "upsert", "append", "remove"];
pub const OUTBOUND_RESULTS: [&str; 3] = ["ok", "failed", "too-large"];
/// The `follower` labels of `Readings::fleet_restarts`.
pub const FLEET_FOLLOWERS: [&str; 2] = ["deployments", "kv"];

fn seconds_histogram() -> Histogram {
    // 10 us to about 20 s.
    Histogram::new(exponential_buckets(10e-6, 2.0, 22))
}

/// The node's metrics, one registry per node.
pub struct Metrics {
    registry: Registry,
    requests: Family<StatusLabels, Counter>,
    latency: Family<ModuleLabels, Histogram, fn() -> Histogram>,
    sandbox: Family<ModuleLabels, Histogram, fn() -> Histogram>,
    instantiate: Family<ModuleLabels, Histogram, fn() -> Histogram>,
    fuel: Family<ModuleLabels, Counter>,
    faults: Family<FaultLabels, Counter>,
    rejected: Family<SiteLabels, Counter>,
    unrouted: Counter,
    pool_in_use: Gauge,
    deploys: Family<ResultLabels, Counter>,
    tls_failures: Counter,
    kv_ops: Family<OpLabels, Counter>,
    kv_bytes: Family<DirectionLabels, Counter>,
    outbound: Family<ResultLabels, Counter>,
    fleet_restarts: Family<FollowerLabels, Counter>,
    fleet_kv_revision: Gauge,
    /// The readings as of the last scrape: counters advance by the difference.
    seen: std::sync::Mutex<Readings>,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("terrafirma");
        let requests = Family::default();
        let latency = Family::new_with_constructor(seconds_histogram as fn() -> Histogram);
        let sandbox = Family::new_with_constructor(seconds_histogram as fn() -> Histogram);
        let instantiate = Family::new_with_constructor(seconds_histogram as fn() -> Histogram);
        let fuel = Family::default();
        let faults = Family::default();
        let rejected = Family::default();
        let unrouted = Counter::default();
        let pool_in_use = Gauge::default();
        let deploys = Family::default();
        let tls_failures = Counter::default();
        let (kv_ops, kv_bytes, outbound) = (Family::default(), Family::default(), Family::default());
        let (fleet_restarts, fleet_kv_revision) = (Family::default(), Gauge::default());
        registry.register("requests", "Requests answered, by site, module and status", requests.clone());
        registry.register("request_duration_seconds", "Time from routing to the response head, by module", latency.clone());
        registry.register("sandbox_duration_seconds", "Time a request's guest spent in its sandbox, by module", sandbox.clone());
        registry.register("instantiate_duration_seconds", "Time to instantiate a fresh instance on the request path", instantiate.clone());
        registry.register("fuel_consumed", "Fuel the guests burnt, by module", fuel.clone());
        registry.register("faults", "Requests that ended in a fault, by module and kind (x-terrafirma-error)", faults.clone());
        registry.register(
            "admission_rejected",
            "Requests refused with 503 because the site or node was at its concurrency limit",
            rejected.clone(),
        );
        registry.register("unrouted_requests", "Requests for no deployed module (404)", unrouted.clone());
        registry.register("pool_slots_in_use", "Instance slots of the pooling allocator in use", pool_in_use.clone());
        registry.register("deploys", "Module uploads, by result (ok, refused, failed)", deploys.clone());
        registry.register("tls_handshake_failures", "TLS connections closed before their handshake finished", tls_failures.clone());
        registry.register("kv_operations", "KV operations of guests, by op", kv_ops.clone());
        registry.register("kv_bytes", "KV bytes read (values got) and written (keys and values), by direction", kv_bytes.clone());
        registry.register("outbound_requests", "Requests guests sent out, by result (ok, failed, too-large)", outbound.clone());
        registry.register(
            "fleet_watch_restarts",
            "In a fleet: watches of a bucket started again after they failed, by follower (deployments, kv)",
            fleet_restarts.clone(),
        );
        registry.register(
            "fleet_kv_revision",
            "In a fleet: the KV bucket's last revision this node's copy applied",
            fleet_kv_revision.clone(),
        );
        Metrics {
            registry,
            requests,
            latency,
            sandbox,
            instantiate,
            fuel,
            faults,
            rejected,
            unrouted,
            pool_in_use,
            deploys,
            tls_failures,
            kv_ops,
            kv_bytes,
            outbound,
            fleet_restarts,
            fleet_kv_revision,
            seen: Default::default(),
        }
    }

    /// The handles of one deployed module.
    pub fn module(self: &Arc<Self>, site: &str, module: &str) -> ModuleMetrics {
        let labels = ModuleLabels { site: site.to_owned(), module: module.to_owned() };
        ModuleMetrics {
            latency: self.latency.get_or_create_owned(&labels),
            sandbox: self.sandbox.get_or_create_owned(&labels),
            instantiate: self.instantiate.get_or_create_owned(&labels),
            fuel: self.fuel.get_or_create_owned(&labels),
            statuses: RwLock::new(HashMap::default()),
            labels,
            metrics: self.clone(),
        }
    }

    pub fn rejected(&self, site: &str) {
        self.rejected.get_or_create(&SiteLabels { site: site.to_owned() }).inc();
    }

    pub fn unrouted(&self) {
        self.unrouted.inc();
    }

    /// Counts an upload: `ok`, `refused` (the upload's fault) or `failed`.
    pub fn deploy(&self, result: &'static str) {
        self.deploys.get_or_create(&ResultLabels { result }).inc();
    }

    /// The text exposition, with `now`'s readings.
    pub fn encode(&self, now: Readings) -> String {
        {
            let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
            let delta = |now: u64, seen: u64| now.saturating_sub(seen);
            self.pool_in_use.set(now.pool_in_use as i64);
            self.tls_failures.inc_by(delta(now.tls_failures, seen.tls_failures));
            for (i, op) in KV_OPS.iter().enumerate() {
                self.kv_ops.get_or_create(&OpLabels { op }).inc_by(delta(now.kv_ops[i], seen.kv_ops[i]));
            }
            self.kv_bytes.get_or_create(&DirectionLabels { direction: "read" }).inc_by(delta(now.kv_bytes_read, seen.kv_bytes_read));
            self.kv_bytes
                .get_or_create(&DirectionLabels { direction: "written" })
                .inc_by(delta(now.kv_bytes_written, seen.kv_bytes_written));
            for (i, result) in OUTBOUND_RESULTS.iter().enumerate() {
                self.outbound.get_or_create(&ResultLabels { result }).inc_by(delta(now.outbound[i], seen.outbound[i]));
            }
            for (i, follower) in FLEET_FOLLOWERS.iter().enumerate() {
                self.fleet_restarts
                    .get_or_create(&FollowerLabels { follower })
                    .inc_by(delta(now.fleet_restarts[i], seen.fleet_restarts[i]));
            }
            self.fleet_kv_revision.set(now.fleet_kv_revision as i64);
            *seen = now;
        }
        let mut text = String::new();
        prometheus_client::encoding::prometheus_text::encode(&mut text, &self.registry).expect("writing to a String cannot fail");
        text
    }
}

/// The `Content-Type` of `Metrics::encode`'s text.
pub const CONTENT_TYPE: &str = prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

/// One module's metric handles.
pub struct ModuleMetrics {
    latency: Histogram,
    sandbox: Histogram,
    instantiate: Histogram,
    fuel: Counter,
    /// By status code; foldhash: this is looked up on every request.
    statuses: RwLock<HashMap<u16, Counter, foldhash::fast::RandomState>>,
    labels: ModuleLabels,
    metrics: Arc<Metrics>,
}

impl ModuleMetrics {
    /// Records one answered request.
    pub fn answered(&self, status: u16, latency: Duration) {
        self.latency.observe(latency.as_secs_f64());
        let known = self.statuses.read().unwrap_or_else(|p| p.into_inner()).get(&status).map(|counter| counter.inc()).is_some();
        if !known {
            let labels = StatusLabels { site: self.labels.site.clone(), module: self.labels.module.clone(), status };
            let counter = self.metrics.requests.get_or_create_owned(&labels);
            counter.inc();
            self.statuses.write().unwrap_or_else(|p| p.into_inner()).insert(status, counter);
        }
    }

    /// Records what a request's guest cost; a fresh instance's
    /// instantiation goes to its own histogram.
    pub fn spent(&self, cost: &Cost) {
        self.fuel.inc_by(cost.fuel);
        self.sandbox.observe(cost.time.as_secs_f64());
        if !cost.instantiate.is_zero() {
            self.instantiate.observe(cost.instantiate.as_secs_f64());
        }
    }

    /// Records a fault of `kind` (its `x-terrafirma-error` value).
    pub fn fault(&self, kind: &'static str) {
        let labels = FaultLabels { site: self.labels.site.clone(), module: self.labels.module.clone(), kind };
        self.metrics.faults.get_or_create(&labels).inc();
    }
}
