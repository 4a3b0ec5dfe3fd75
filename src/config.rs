//! Node configuration: the TOML file (`docs/config.md`) plus command-line flags,
//! merged and validated into one `Config` before any socket is bound.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

/// Everything the node needs to run, already validated.
#[derive(Debug, Clone)]
pub struct Config {
    pub listen: SocketAddr,
    /// HTTPS for the sites; off when `None`.
    pub tls_listen: Option<SocketAddr>,
    pub admin: SocketAddr,
    pub data: PathBuf,
    pub admin_token: Option<String>,
    pub pool: PoolConfig,
    /// Defaults for every site.
    pub limits: Limits,
    /// Per-site overrides, keyed by lower-case host name.
    pub sites: BTreeMap<String, SiteConfig>,
    /// How long clients get to send requests, and to stay idle.
    pub http: HttpConfig,
    /// How long in-flight requests may finish after a stop signal.
    pub drain: Duration,
    /// One log line per request (target `access`).
    pub access_log: bool,
    /// A new core module is first served with code from the baseline
    /// compiler (Winch), while Cranelift compiles it in the background.
    pub baseline_compiler: bool,
    /// The fleet this node is part of; `None`: a node on its own.
    pub fleet: Option<FleetConfig>,
}

/// `[fleet]`: the NATS JetStream servers a fleet of nodes shares, and how
/// its buckets are named and replicated.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct FleetConfig {
    /// Server URLs (`nats://HOST:PORT`); the client tries each.
    pub nats: Vec<String>,
    /// A token the servers require, if they do.
    #[serde(default)]
    pub token: Option<String>,
    /// Bucket names start with it: `PREFIX-modules` (objects),
    /// `PREFIX-deployments` and `PREFIX-kv` (key-value).
    #[serde(default = "default_fleet_prefix")]
    pub prefix: String,
    /// Copies JetStream keeps of each bucket (1 for one server; 3 for a
    /// three-server cluster).
    #[serde(default = "default_fleet_replicas")]
    pub replicas: usize,
}

fn default_fleet_prefix() -> String {
    "terrafirma".to_owned()
}

fn default_fleet_replicas() -> usize {
    1
}

impl FleetConfig {
    /// One server, the defaults for the rest (`--fleet URL`).
    pub fn at(url: &str) -> FleetConfig {
        FleetConfig { nats: vec![url.to_owned()], token: None, prefix: default_fleet_prefix(), replicas: default_fleet_replicas() }
    }
}

/// How long a client of either server may take.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct HttpConfig {
    /// From the first byte of a request head (or, on a kept-alive
    /// connection, the end of the previous response) to the end of the
    /// head; also how long a kept-alive connection may sit idle.
    pub head_timeout: Duration,
    /// For a request's whole body, from the end of its head.
    pub body_timeout: Duration,
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig { head_timeout: Duration::from_secs(10), body_timeout: Duration::from_secs(30) }
    }
}

/// `[http]` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct HttpFile {
    head_timeout_ms: Option<u64>,
    body_timeout_ms: Option<u64>,
}

/// How long a stopping node lets in-flight requests finish by default.
const DRAIN: Duration = Duration::from_secs(10);

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PoolConfig {
    /// Instance slots in the pooling allocator (and memories, tables, stacks).
    pub instances: u32,
    /// Ready instances kept per hot module; 0 turns prewarming off.
    pub prewarm: u32,
}

impl Default for PoolConfig {
    fn default() -> Self {
        PoolConfig { instances: 1000, prewarm: 0 }
    }
}

/// Per-request and per-upload limits.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    pub timeout_ms: u64,
    pub fuel: u64,
    pub memory_mb: u64,
    pub max_request_bytes: u64,
    pub max_response_bytes: u64,
    pub max_upload_bytes: u64,
    pub outbound_hosts: Vec<String>,
    /// Requests of one site in flight at once; more wait briefly, then 503.
    pub max_concurrency: u32,
    /// Whether guest responses carry `x-terrafirma-fuel` and `x-terrafirma-time-us`.
    pub cost_headers: bool,
    /// Whether a guest's `_initialize` is run once at upload and snapshotted
    /// where that is safe (else it runs on every request).
    pub preinitialize: bool,
    /// Modules one site may have deployed.
    pub max_modules: u64,
    /// Bytes of wasm one site may have stored, all its modules together.
    pub max_module_bytes: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            timeout_ms: 5_000,
            fuel: 2_000_000_000,
            memory_mb: 128,
            max_request_bytes: 8 << 20,
            max_response_bytes: 8 << 20,
            max_upload_bytes: 64 << 20,
            outbound_hosts: Vec::new(),
            max_concurrency: 64,
            cost_headers: true,
            preinitialize: true,
            max_modules: 100,
            max_module_bytes: 256 << 20,
        }
    }
}

impl Limits {
    pub fn memory_bytes(&self) -> usize {
        (self.memory_mb as usize) << 20
    }
}

/// A site's admin token and the limits that differ from the defaults.
#[derive(Debug, Clone, Default)]
pub struct SiteConfig {
    pub token: Option<String>,
    pub limits: Limits,
}

/// The file as written: every key optional.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ConfigFile {
    listen: Option<SocketAddr>,
    tls_listen: Option<SocketAddr>,
    admin: Option<SocketAddr>,
    data: Option<PathBuf>,
    admin_token: Option<String>,
    #[serde(default)]
    pool: PoolConfig,
    #[serde(default)]
    limits: LimitsFile,
    #[serde(default)]
    sites: BTreeMap<String, SiteFile>,
    #[serde(default)]
    http: HttpFile,
    drain_ms: Option<u64>,
    #[serde(default)]
    access_log: bool,
    baseline_compiler: Option<bool>,
    fleet: Option<FleetConfig>,
}

/// Limits as written in the file: absent keys fall back to another level.
#[derive(Debug, Default, Deserialize, Clone)]
#[serde(deny_unknown_fields)]
struct LimitsFile {
    timeout_ms: Option<u64>,
    fuel: Option<u64>,
    memory_mb: Option<u64>,
    max_request_bytes: Option<u64>,
    max_response_bytes: Option<u64>,
    max_upload_bytes: Option<u64>,
    outbound_hosts: Option<Vec<String>>,
    max_concurrency: Option<u32>,
    cost_headers: Option<bool>,
    preinitialize: Option<bool>,
    max_modules: Option<u64>,
    max_module_bytes: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct SiteFile {
    token: Option<String>,
    #[serde(flatten)]
    limits: LimitsFile,
}

impl LimitsFile {
    fn over(&self, base: &Limits) -> Limits {
        Limits {
            timeout_ms: self.timeout_ms.unwrap_or(base.timeout_ms),
            fuel: self.fuel.unwrap_or(base.fuel),
            memory_mb: self.memory_mb.unwrap_or(base.memory_mb),
            max_request_bytes: self.max_request_bytes.unwrap_or(base.max_request_bytes),
            max_response_bytes: self.max_response_bytes.unwrap_or(base.max_response_bytes),
            max_upload_bytes: self.max_upload_bytes.unwrap_or(base.max_upload_bytes),
            outbound_hosts: self.outbound_hosts.clone().unwrap_or_else(|| base.outbound_hosts.clone()),
            max_concurrency: self.max_concurrency.unwrap_or(base.max_concurrency),
            cost_headers: self.cost_headers.unwrap_or(base.cost_headers),
            preinitialize: self.preinitialize.unwrap_or(base.preinitialize),
            max_modules: self.max_modules.unwrap_or(base.max_modules),
            max_module_bytes: self.max_module_bytes.unwrap_or(base.max_module_bytes),
        }
    }
}

/// Command-line values that win over the file.
#[derive(Debug, Default, Clone)]
pub struct Overrides {
    pub listen: Option<SocketAddr>,
    pub tls_listen: Option<SocketAddr>,
    pub admin: Option<SocketAddr>,
    pub data: Option<PathBuf>,
    /// `--fleet URL`: one NATS server, in place of the file's `[fleet] nats`.
    pub fleet: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("invalid config {path}: {source}")]
    Parse { path: PathBuf, source: toml::de::Error },
    #[error("invalid config: {0}")]
    Invalid(String),
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: "127.0.0.1:8080".parse().expect("literal address"),
            tls_listen: None,
            admin: "127.0.0.1:8081".parse().expect("literal address"),
            data: PathBuf::from("./terrafirma-data"),
            admin_token: None,
            pool: PoolConfig::default(),
            limits: Limits::default(),
            sites: BTreeMap::new(),
            http: HttpConfig::default(),
            drain: DRAIN,
            access_log: false,
            baseline_compiler: true,
            fleet: None,
        }
    }
}

impl Config {
    /// Reads the optional file, applies the flags, validates.
    pub fn load(file: Option<&Path>, overrides: &Overrides) -> Result<Config, ConfigError> {
        let parsed = match file {
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read { path: path.to_owned(), source })?;
                Self::parse(&text).map_err(|e| match e {
                    ConfigError::Parse { source, .. } => ConfigError::Parse { path: path.to_owned(), source },
                    other => other,
                })?
            }
            None => Config::default(),
        };
        let mut config = parsed;
        if let Some(listen) = overrides.listen {
            config.listen = listen;
        }
        if let Some(tls_listen) = overrides.tls_listen {
            config.tls_listen = Some(tls_listen);
        }
        if let Some(admin) = overrides.admin {
            config.admin = admin;
        }
        if let Some(data) = &overrides.data {
            config.data = data.clone();
        }
        if let Some(url) = &overrides.fleet {
            match &mut config.fleet {
                Some(fleet) => fleet.nats = vec![url.clone()],
                None => config.fleet = Some(FleetConfig::at(url)),
            }
        }
        config.validate()?;
        Ok(config)
    }

    /// Parses TOML text into a config (not yet validated).
    pub fn parse(text: &str) -> Result<Config, ConfigError> {
        let file: ConfigFile = toml::from_str(text).map_err(|source| ConfigError::Parse { path: PathBuf::from("<text>"), source })?;
        let defaults = Config::default();
        let limits = file.limits.over(&Limits::default());
        let sites = file
            .sites
            .into_iter()
            .map(|(name, site)| {
                let limits = site.limits.over(&limits);
                (name.to_ascii_lowercase(), SiteConfig { token: site.token, limits })
            })
            .collect();
        Ok(Config {
            listen: file.listen.unwrap_or(defaults.listen),
            tls_listen: file.tls_listen,
            admin: file.admin.unwrap_or(defaults.admin),
            data: file.data.unwrap_or(defaults.data),
            admin_token: file.admin_token,
            pool: file.pool,
            limits,
            sites,
            http: HttpConfig {
                head_timeout: file.http.head_timeout_ms.map_or(defaults.http.head_timeout, Duration::from_millis),
                body_timeout: file.http.body_timeout_ms.map_or(defaults.http.body_timeout, Duration::from_millis),
            },
            drain: file.drain_ms.map_or(defaults.drain, Duration::from_millis),
            access_log: file.access_log,
            baseline_compiler: file.baseline_compiler.unwrap_or(defaults.baseline_compiler),
            fleet: file.fleet,
        })
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        let bad = |msg: String| Err(ConfigError::Invalid(msg));
        if self.pool.instances == 0 {
            return bad("pool.instances must be at least 1".into());
        }
        if self.http.head_timeout.is_zero() || self.http.body_timeout.is_zero() {
            return bad("http.head_timeout_ms and http.body_timeout_ms must be positive".into());
        }
        if let Some(fleet) = &self.fleet {
            if fleet.nats.is_empty() {
                return bad("fleet.nats must name at least one server".into());
            }
            let valid = |c: char| c.is_ascii_alphanumeric() || c == '-' || c == '_';
            if fleet.prefix.is_empty() || !fleet.prefix.chars().all(valid) {
                return bad(format!("fleet.prefix {:?}: use letters, digits, `-` and `_`", fleet.prefix));
            }
            if !(1..=5).contains(&fleet.replicas) {
                return bad("fleet.replicas must be between 1 and 5".into());
            }
        }
        if self.pool.prewarm > 64 {
            return bad("pool.prewarm must be at most 64".into());
        }
        for (site, limits) in self.all_limits() {
            if limits.timeout_ms == 0 {
                return bad(format!("{site}: timeout_ms must be positive"));
            }
            if limits.fuel == 0 {
                return bad(format!("{site}: fuel must be positive"));
            }
            if limits.memory_mb == 0 || limits.memory_mb > 4096 {
                return bad(format!("{site}: memory_mb must be between 1 and 4096"));
            }
            if limits.max_concurrency == 0 {
                return bad(format!("{site}: max_concurrency must be positive"));
            }
            if let Err(e) = crate::outbound::AllowList::parse(&limits.outbound_hosts) {
                return bad(format!("{site}: {e}"));
            }
        }
        for site in self.sites.keys() {
            if !crate::names::valid_site_name(site) {
                return bad(format!("invalid site name {site:?}"));
            }
        }
        Ok(())
    }

    fn all_limits(&self) -> impl Iterator<Item = (&str, &Limits)> {
        std::iter::once(("[limits]", &self.limits)).chain(self.sites.iter().map(|(name, site)| (name.as_str(), &site.limits)))
    }

    /// The limits that apply to one site.
    pub fn limits_for(&self, site: &str) -> &Limits {
        self.sites.get(site).map(|s| &s.limits).unwrap_or(&self.limits)
    }

    /// The largest linear memory any site may use: the pool's slot size.
    pub fn max_memory_bytes(&self) -> usize {
        self.all_limits().map(|(_, l)| l.memory_bytes()).max().unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn site_overrides_inherit_from_limits() {
        let config = Config::parse(
            r#"
            [limits]
            timeout_ms = 200
            memory_mb = 16
            [sites."Example.com"]
            token = "t"
            timeout_ms = 100
            "#,
        )
        .unwrap();
        config.validate().unwrap();
        let site = config.limits_for("example.com");
        assert_eq!(site.timeout_ms, 100);
        assert_eq!(site.memory_mb, 16);
        assert_eq!(config.limits_for("other").timeout_ms, 200);
        assert_eq!(config.sites["example.com"].token.as_deref(), Some("t"));
    }

    #[test]
    fn unknown_keys_are_rejected() {
        assert!(Config::parse("listn = \"127.0.0.1:1\"").is_err());
        assert!(Config::parse("[limits]\nfuell = 3").is_err());
    }

    #[test]
    fn zero_limits_are_rejected() {
        let config = Config::parse("[limits]\nfuel = 0").unwrap();
        assert!(config.validate().is_err());
    }
}
