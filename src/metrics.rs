//! What the node reports to its operators: `GET /metrics` on the admin port,
//! in Prometheus's text format (`docs/metrics.md` lists every series).
//!
//! The request path touches no map and builds no label: each deployed
//! module holds its own figures (`ModuleMetrics`), found once at deploy,
//! and a request records all of them under one uncontended lock (five
//! locks before, one per histogram, counter map and so on: about 300 of a
//! hello request's 33,000 instructions). A collector writes them out at
//! each scrape.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use crate::sandbox::Cost;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ModuleLabels {
    site: String,
    module: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StatusLabels {
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

/// The histograms' upper bounds, seconds: 10 us doubling to about 20 s,
/// then everything above.
const BOUNDS: usize = 22;
fn upper_bound(bucket: usize) -> f64 {
    if bucket < BOUNDS { 10e-6 * f64::from(1u32 << bucket) } else { f64::INFINITY }
}

/// The node's metrics, one registry per node.
pub struct Metrics {
    registry: Registry,
    modules: Arc<Modules>,
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
        let modules = Arc::new(Modules::default());
        let faults = Family::default();
        let rejected = Family::default();
        let unrouted = Counter::default();
        let pool_in_use = Gauge::default();
        let deploys = Family::default();
        let tls_failures = Counter::default();
        let (kv_ops, kv_bytes, outbound) = (Family::default(), Family::default(), Family::default());
        let (fleet_restarts, fleet_kv_revision) = (Family::default(), Gauge::default());
        registry.register_collector(Box::new(modules.clone()));
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
            modules,
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

    /// The figures of one deployed module: a new version of a module goes on
    /// counting where the one it replaces stopped.
    pub fn module(self: &Arc<Self>, site: &str, module: &str) -> ModuleMetrics {
        let labels = ModuleLabels { site: site.to_owned(), module: module.to_owned() };
        let mut all = self.modules.0.lock().unwrap_or_else(|p| p.into_inner());
        let figures = match all.iter().find(|(l, _)| *l == labels) {
            Some((_, figures)) => figures.clone(),
            None => {
                let figures = Arc::new(Mutex::new(Figures::default()));
                all.push((labels.clone(), figures.clone()));
                figures
            }
        };
        ModuleMetrics { figures, labels, metrics: self.clone() }
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

/// One module's figures, and where its faults are counted.
pub struct ModuleMetrics {
    figures: Arc<Mutex<Figures>>,
    labels: ModuleLabels,
    metrics: Arc<Metrics>,
}

impl ModuleMetrics {
    /// Records one answered request, and what its guest cost where it ran;
    /// a fresh instance's instantiation goes to its own histogram.
    pub fn answered(&self, status: u16, latency: Duration, cost: Option<&Cost>) {
        let mut figures = self.figures.lock().unwrap_or_else(|p| p.into_inner());
        match figures.statuses.iter_mut().find(|(s, _)| *s == status) {
            Some((_, n)) => *n += 1,
            None => figures.statuses.push((status, 1)),
        }
        figures.latency.observe(latency);
        if let Some(cost) = cost {
            figures.fuel += cost.fuel;
            figures.sandbox.observe(cost.time);
            if !cost.instantiate.is_zero() {
                figures.instantiate.observe(cost.instantiate);
            }
        }
    }

    /// Records a fault of `kind` (its `x-terrafirma-error` value).
    pub fn fault(&self, kind: &'static str) {
        let labels = FaultLabels { site: self.labels.site.clone(), module: self.labels.module.clone(), kind };
        self.metrics.faults.get_or_create(&labels).inc();
    }
}

/// Every module's figures, by labels, in deploy order.
#[derive(Debug, Default)]
struct Modules(Mutex<Vec<(ModuleLabels, Arc<Mutex<Figures>>)>>);

/// What a module's requests recorded.
#[derive(Debug, Default)]
struct Figures {
    /// Requests by status code: a handful per module, so a short list.
    statuses: Vec<(u16, u64)>,
    latency: Buckets,
    sandbox: Buckets,
    instantiate: Buckets,
    fuel: u64,
}

/// A histogram of durations over `BOUNDS`.
#[derive(Debug, Default)]
struct Buckets {
    counts: [u64; BOUNDS + 1],
    sum: f64,
    count: u64,
}

impl Buckets {
    fn observe(&mut self, duration: Duration) {
        let seconds = duration.as_secs_f64();
        // The first bucket whose bound is at least the value: bucket i
        // holds up to 10 us * 2^i, so i is the bit length of (us - 1) / 10.
        // (In u64: a u128 division is a call, on every request.)
        let nanos = duration.as_secs().saturating_mul(1_000_000_000).saturating_add(u64::from(duration.subsec_nanos()));
        let tens_of_us = nanos.saturating_sub(1) / 10_000;
        let bucket = ((u64::BITS - tens_of_us.leading_zeros()) as usize).min(BOUNDS);
        self.counts[bucket] += 1;
        self.sum += seconds;
        self.count += 1;
    }

    /// As prometheus-client's histograms give them: (upper bound, count).
    fn buckets(&self) -> Vec<(f64, u64)> {
        self.counts.iter().enumerate().map(|(i, &n)| (upper_bound(i), n)).collect()
    }
}

impl Collector for Modules {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        // A copy of the list, so that no request waits on the writing out.
        let all: Vec<_> = self.0.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let snapshot: Vec<_> = all
            .iter()
            .map(|(labels, figures)| {
                let f = figures.lock().unwrap_or_else(|p| p.into_inner());
                let histograms = [&f.latency, &f.sandbox, &f.instantiate].map(|b| (b.sum, b.count, b.buckets()));
                (labels, f.statuses.clone(), histograms, f.fuel)
            })
            .collect();
        let mut requests =
            encoder.encode_descriptor("requests", "Requests answered, by site, module and status", None, MetricType::Counter)?;
        for (labels, statuses, _, _) in &snapshot {
            for &(status, n) in statuses {
                ConstCounter::new(n).encode(requests.encode_family(&((*labels).clone(), StatusLabels { status }))?)?;
            }
        }
        let histograms = [
            ("request_duration_seconds", "Time from routing to the response head, by module"),
            ("sandbox_duration_seconds", "Time a request's guest spent in its sandbox, by module"),
            ("instantiate_duration_seconds", "Time to instantiate a fresh instance on the request path"),
        ];
        for (i, (name, help)) in histograms.into_iter().enumerate() {
            let mut family = encoder.encode_descriptor(name, help, None, MetricType::Histogram)?;
            for (labels, _, histograms, _) in &snapshot {
                let (sum, count, buckets) = &histograms[i];
                family.encode_family(*labels)?.encode_histogram::<NoLabelSet>(*sum, *count, buckets, None)?;
            }
        }
        let mut fuel = encoder.encode_descriptor("fuel_consumed", "Fuel the guests burnt, by module", None, MetricType::Counter)?;
        for (labels, _, _, n) in &snapshot {
            ConstCounter::new(*n).encode(fuel.encode_family(*labels)?)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_duration_falls_in_the_first_bucket_whose_bound_holds_it() {
        let bucket_of = |us: u64| {
            let mut b = Buckets::default();
            b.observe(Duration::from_micros(us));
            b.counts.iter().position(|&n| n == 1).unwrap()
        };
        assert_eq!(bucket_of(0), 0);
        assert_eq!(bucket_of(10), 0, "10 us is within the first bound");
        assert_eq!(bucket_of(11), 1);
        assert_eq!(bucket_of(20), 1);
        assert_eq!(bucket_of(21), 2);
        assert_eq!(bucket_of(10 << 21), 21, "the last bound, about 21 s");
        assert_eq!(bucket_of((10 << 21) + 1), BOUNDS, "above every bound");
        assert_eq!(bucket_of(u64::MAX / 1_000_000), BOUNDS);
        for i in 0..BOUNDS {
            assert!(upper_bound(i) < upper_bound(i + 1));
        }
        // The text encoder writes `+Inf` for the last bucket only when its
        // bound is infinite (else it adds one of its own).
        assert_eq!(upper_bound(BOUNDS), f64::INFINITY);
    }
}
