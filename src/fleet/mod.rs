//! A fleet of nodes on NATS JetStream: a module deployed on any node is
//! served by every node.
//!
//! Three buckets, named from `[fleet] prefix`:
//!
//! ```text
//! PREFIX-modules       object store: the wasm as uploaded, named by its
//!                      sha256, written once, checked against its name on
//!                      every fetch
//! PREFIX-deployments   key-value: SITE/MODULE -> {sha256, abi,
//!                      deployed_at}, with history; a delete stops the
//!                      module everywhere
//! PREFIX-kv            key-value: SITE/BASE64URL(KEY) -> the value of a
//!                      site's KV key; the latest revision only
//! ```
//!
//! A guest's KV write is published to `PREFIX-kv` with compare-and-set on
//! the revision the node's copy holds (after a conflict, on the bucket's
//! latest), and returns once JetStream acknowledged it (stored on a quorum
//! of servers when the bucket is replicated) and it is in this node's copy:
//! read-your-writes on the writing node. Reads are local; every node's copy
//! is fed by its watch of the bucket, so the other nodes see the write when
//! their watch delivers it (`docs/fleet.md` has the promise in full).
//!
//! A deploy on a node validates and compiles locally first, then stores the
//! object, then writes the key with compare-and-set on its revision (so two
//! deploys of one module cannot interleave), then serves. Every node
//! watches the deployments bucket (the latest deployment of each module,
//! then every new one, skipping what it applied: `DATA/fleet/revision`),
//! fetches what it lacks and deploys it locally; the
//! old version serves until the new one is compiled. Without the servers a
//! node serves what it has, refuses deploys, and catches up on reconnect.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use async_nats::jetstream::consumer::DeliverPolicy;
use async_nats::jetstream::{self, kv, object_store};
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tokio::io::AsyncReadExt;
use tokio::sync::OnceCell;

use crate::config::FleetConfig;
use crate::modules::ModuleStore;

mod kv_bucket;
mod watch;

use watch::{Change, keep_following};

/// How long one JetStream request may take before the deploy (or the
/// follower's step) is given up as failed.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(3);

/// How long a starting node waits for its first connection.
const FIRST_CONNECTION: Duration = Duration::from_secs(2);

/// How long the follower waits before trying again after a failure
/// (no connection, a missing object).
const RETRY: Duration = Duration::from_secs(1);

/// Deployments kept per module (the current one and older, for rollback).
const HISTORY: i64 = 16;

/// Why the fleet could not take a deploy or a deletion. Shown to the
/// uploader with a 503: nothing was changed anywhere.
#[derive(Debug, thiserror::Error)]
#[error("the fleet's NATS servers did not take it: {0}")]
pub struct FleetError(String);

fn failed(e: impl std::fmt::Display) -> FleetError {
    FleetError(e.to_string())
}

/// One deployment as the key-value bucket holds it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Deployment {
    pub sha256: String,
    pub abi: String,
    /// Seconds since the Unix epoch.
    pub deployed_at: u64,
}

struct Buckets {
    objects: object_store::ObjectStore,
    deployments: kv::Store,
    kv: kv::Store,
    /// The buckets' names.
    deployments_bucket: String,
    kv_bucket: String,
}

pub struct Fleet {
    config: FleetConfig,
    client: async_nats::Client,
    jetstream: jetstream::Context,
    buckets: OnceCell<Buckets>,
    revision_file: PathBuf,
    /// The runtime a KV write, made on a thread of its own, waits on.
    runtime: tokio::runtime::Handle,
    /// The last revision of the KV bucket this node's watch applied.
    kv_applied: AtomicU64,
    /// Where `kv_applied` is kept, once the copy is durable up to it.
    kv_revision_file: PathBuf,
    /// Restarts of the followers' watches (`metrics::FLEET_FOLLOWERS`).
    restarts: [AtomicU64; 2],
}

impl Fleet {
    /// A client for the fleet's servers. Returns at once: the client keeps
    /// trying to connect (and to reconnect) in the background.
    pub async fn connect(config: &FleetConfig, data: &Path) -> anyhow::Result<Arc<Fleet>> {
        let mut options =
            async_nats::ConnectOptions::new().retry_on_initial_connect().connection_timeout(REQUEST_TIMEOUT).name("terrafirma");
        if let Some(token) = &config.token {
            options = options.token(token.clone());
        }
        let client = options.connect(config.nats.as_slice()).await?;
        // A node started with its servers up is connected before it serves
        // (a deploy right after start is taken); one started without them
        // serves what it has, and connects when they are back.
        let connecting = tokio::time::Instant::now() + FIRST_CONNECTION;
        while client.connection_state() != async_nats::connection::State::Connected && tokio::time::Instant::now() < connecting {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let mut jetstream = jetstream::new(client.clone());
        jetstream.set_timeout(REQUEST_TIMEOUT);
        let dir = data.join("fleet");
        std::fs::create_dir_all(&dir)?;
        let kv_revision_file = dir.join("kv.revision");
        // The copy (DATA/fleet/kv) and its revision go together: without
        // the one, the other is not trusted.
        let kv_applied = match dir.join("kv").is_dir() {
            true => read_revision(&kv_revision_file),
            false => 0,
        };
        Ok(Arc::new(Fleet {
            config: config.clone(),
            client,
            jetstream,
            buckets: OnceCell::new(),
            revision_file: dir.join("revision"),
            runtime: tokio::runtime::Handle::current(),
            kv_applied: AtomicU64::new(kv_applied),
            kv_revision_file,
            restarts: Default::default(),
        }))
    }

    /// A deploy, a deletion, a guest's KV write or a follower's next watch
    /// asked for while no server is connected is refused at once, rather
    /// than waiting out request timeouts (and each other's).
    fn connected(&self) -> Result<(), FleetError> {
        match self.client.connection_state() {
            async_nats::connection::State::Connected => Ok(()),
            _ => Err(FleetError("not connected to any of the fleet's NATS servers".into())),
        }
    }

    /// The buckets, made (or found) on first use once a server answers.
    async fn buckets(&self) -> Result<&Buckets, FleetError> {
        self.buckets
            .get_or_try_init(|| async {
                let prefix = &self.config.prefix;
                let objects = object_store::Config {
                    bucket: format!("{prefix}-modules"),
                    description: Some("Terrafirma modules, named by the sha256 of their bytes".into()),
                    num_replicas: self.config.replicas,
                    ..Default::default()
                };
                let objects = match self.jetstream.get_object_store(&objects.bucket).await {
                    Ok(store) => store,
                    Err(_) => self.jetstream.create_object_store(objects).await.map_err(failed)?,
                };
                let deployments = kv::Config {
                    bucket: format!("{prefix}-deployments"),
                    description: "Terrafirma deployments: SITE/MODULE -> sha256".into(),
                    history: HISTORY,
                    num_replicas: self.config.replicas,
                    ..Default::default()
                };
                let deployments_bucket = deployments.bucket.clone();
                let deployments = match self.jetstream.get_key_value(&deployments.bucket).await {
                    Ok(store) => store,
                    Err(_) => self.jetstream.create_key_value(deployments).await.map_err(failed)?,
                };
                let kv = kv::Config {
                    bucket: format!("{prefix}-kv"),
                    description: "Terrafirma sites' KV stores: SITE/BASE64URL(KEY) -> value".into(),
                    history: 1,
                    num_replicas: self.config.replicas,
                    ..Default::default()
                };
                let kv_bucket = kv.bucket.clone();
                let kv = match self.jetstream.get_key_value(&kv.bucket).await {
                    Ok(store) => store,
                    Err(_) => self.jetstream.create_key_value(kv).await.map_err(failed)?,
                };
                Ok(Buckets { objects, deployments, kv, deployments_bucket, kv_bucket })
            })
            .await
    }

    /// Stores `wasm` (once: an object of that name is never rewritten) and
    /// points `site/name` at it.
    pub async fn publish(&self, site: &str, name: &str, wasm: &[u8], sha256: &str, abi: &str) -> Result<(), FleetError> {
        self.connected()?;
        let buckets = self.buckets().await?;
        // Stored once; an object of this name whose recorded digest is not
        // the name's (written by something else than a node) is stored
        // again, or no node would ever serve this module.
        let stored = buckets.objects.info(sha256).await.ok().map(|info| info.digest);
        let expected = object_digest(sha256);
        if stored.as_ref() != Some(&expected) {
            if let Some(digest) = stored {
                tracing::error!(sha256, ?digest, "fleet: the object of this name holds other bytes; storing it again");
            }
            let mut reader = wasm;
            buckets.objects.put(sha256, &mut reader).await.map_err(failed)?;
        }
        let deployed_at = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_secs());
        let value = serde_json::to_vec(&Deployment { sha256: sha256.to_owned(), abi: abi.to_owned(), deployed_at }).map_err(failed)?;
        let key = key(site, name);
        // Compare-and-set: a deploy of the same module that lands between
        // the read and the write makes this one read again.
        for _ in 0..5 {
            let current = buckets.deployments.entry(&key).await.map_err(failed)?;
            let written = match current {
                Some(entry) => buckets.deployments.update(&key, value.clone().into(), entry.revision).await.map_err(failed),
                None => buckets.deployments.create(&key, value.clone().into()).await.map_err(failed),
            };
            if written.is_ok() {
                return Ok(());
            }
        }
        Err(FleetError(format!("{key} kept changing under five deploys in a row")))
    }

    /// Stops `site/name` on every node.
    pub async fn retract(&self, site: &str, name: &str) -> Result<(), FleetError> {
        self.connected()?;
        self.buckets().await?.deployments.delete(key(site, name)).await.map_err(failed)
    }

    /// The last revision of the deployments bucket this node applied.
    fn applied(&self) -> u64 {
        read_revision(&self.revision_file)
    }

    fn set_applied(&self, revision: u64) {
        write_revision(&self.revision_file, revision);
    }

    /// Follows the deployments bucket until the store is closed: every
    /// deployment this node has not applied yet is made local.
    pub fn follow(self: &Arc<Self>, store: Arc<ModuleStore>) -> tokio::task::JoinHandle<()> {
        let fleet = self.clone();
        let restarted = self.clone();
        keep_following(
            "fleet",
            move || restarted.restarts[0].fetch_add(1, Ordering::Relaxed),
            move || {
                let (fleet, store) = (fleet.clone(), store.clone());
                async move { fleet.follow_once(&store).await }
            },
        )
    }

    /// One watch of the bucket, until it fails. A deployment that cannot be
    /// applied yet (its object is missing, a server is gone) waits in
    /// `pending`, retried every `RETRY` until it applies or a later
    /// deployment of the same module replaces it; the others go on.
    async fn follow_once(&self, store: &Arc<ModuleStore>) -> Result<(), FleetError> {
        self.connected()?;
        let buckets = self.buckets().await?;
        // The latest deployment of each module (the bucket keeps older ones
        // for rollback, which a node catching up need not compile), then
        // every new one; those this node applied already are skipped.
        let applied = self.applied();
        let mut watch = self.watch(&buckets.deployments_bucket, DeliverPolicy::LastPerSubject).await?;
        let mut pending: std::collections::BTreeMap<String, Change> = Default::default();
        let mut retry = tokio::time::interval(RETRY);
        loop {
            tokio::select! {
                entry = watch.next() => {
                    let Some(entry) = entry else { return Err(FleetError("the watch of the deployments bucket ended".into())) };
                    let entry = entry?;
                    if entry.revision <= applied {
                        continue;
                    }
                    pending.remove(&entry.key);
                    if let Err(error) = self.apply(store, buckets, &entry).await {
                        tracing::warn!(key = %entry.key, revision = entry.revision, "fleet: not applied yet: {error}");
                        pending.insert(entry.key.clone(), entry.clone());
                    }
                    self.record(&pending, entry.revision);
                }
                _ = retry.tick(), if !pending.is_empty() => {
                    let keys: Vec<String> = pending.keys().cloned().collect();
                    for key in keys {
                        let entry = pending[&key].clone();
                        if self.apply(store, buckets, &entry).await.is_ok() {
                            pending.remove(&key);
                        }
                    }
                }
            }
            if store.is_closed() {
                return Ok(());
            }
        }
    }

    /// Records how far the follower got: `seen`, or just before the
    /// oldest deployment still pending, so a restart retries it.
    fn record(&self, pending: &std::collections::BTreeMap<String, Change>, seen: u64) {
        let oldest_pending = pending.values().map(|entry| entry.revision).min();
        self.set_applied(oldest_pending.map_or(seen, |revision| revision - 1));
    }

    async fn apply(&self, store: &Arc<ModuleStore>, buckets: &Buckets, entry: &Change) -> Result<(), FleetError> {
        let Some((site, name)) = entry.key.split_once('/') else {
            tracing::warn!(key = %entry.key, "fleet: not a SITE/MODULE key; ignored");
            return Ok(());
        };
        if entry.removed {
            store.remove_local(site, name).await.map_err(failed)?;
            tracing::info!(%site, module = %name, revision = entry.revision, "fleet: module removed");
            return Ok(());
        }
        let Ok(deployment) = serde_json::from_slice::<Deployment>(&entry.value) else {
            tracing::warn!(key = %entry.key, revision = entry.revision, "fleet: not a deployment; ignored");
            return Ok(());
        };
        if store.registry.get(site, name).is_some_and(|d| d.sha256 == deployment.sha256) {
            return Ok(());
        }
        let wasm = match self.fetch(buckets, &deployment.sha256).await {
            Ok(wasm) => wasm,
            // Bytes that are not what their name says are never served; a
            // later deployment of the module may name a good object.
            Err(Fetched::Corrupt(reason)) => {
                tracing::error!(%site, module = %name, "fleet: refused: {reason}");
                return Ok(());
            }
            Err(Fetched::Unavailable(error)) => return Err(error),
        };
        match store.deploy_local(site, name, wasm.into()).await {
            Ok(outcome) => {
                tracing::info!(%site, module = %name, sha256 = %deployment.sha256, compile_ms = outcome.compile_ms, "fleet: deployed");
            }
            // The node that published it compiled it: a module this node
            // refuses (another limit, another engine) is logged and skipped.
            Err(error) if error.is_client_error() => {
                tracing::warn!(%site, module = %name, sha256 = %deployment.sha256, "fleet: not deployed here: {error}");
            }
            Err(error) => return Err(failed(error)),
        }
        Ok(())
    }

    /// The object named `sha256`, whose bytes must hash to its name.
    async fn fetch(&self, buckets: &Buckets, sha256: &str) -> Result<Vec<u8>, Fetched> {
        let unavailable = |e: &dyn std::fmt::Display| Fetched::Unavailable(FleetError(format!("object {sha256}: {e}")));
        let mut object = buckets.objects.get(sha256).await.map_err(|e| unavailable(&e))?;
        let mut wasm = Vec::new();
        if let Err(error) = object.read_to_end(&mut wasm).await {
            // The client checks the object's own digest as it reads.
            return Err(match error.to_string().contains("digest") {
                true => Fetched::Corrupt(format!("object {sha256}: {error}")),
                false => unavailable(&error),
            });
        }
        let digest = hex::encode(Sha256::digest(&wasm));
        if digest != sha256 {
            return Err(Fetched::Corrupt(format!("object {sha256} holds bytes whose sha256 is {digest}")));
        }
        Ok(wasm)
    }
}

/// Why an object could not be had.
enum Fetched {
    /// Not there (yet), or no server answered: try again later.
    Unavailable(FleetError),
    /// There, but its bytes are not the ones its name promises.
    Corrupt(String),
}

fn key(site: &str, name: &str) -> String {
    format!("{site}/{name}")
}

/// The digest the object store records for the bytes whose hex sha256 is
/// `sha256` (`None` if `sha256` is not hex).
fn object_digest(sha256: &str) -> Option<String> {
    use base64::Engine;
    Some(format!("SHA-256={}", base64::engine::general_purpose::URL_SAFE.encode(hex::decode(sha256).ok()?)))
}

fn read_revision(file: &Path) -> u64 {
    std::fs::read_to_string(file).ok().and_then(|text| text.trim().parse().ok()).unwrap_or(0)
}

fn write_revision(file: &Path, revision: u64) {
    let tmp = file.with_extension("tmp");
    let written = std::fs::write(&tmp, format!("{revision}\n")).and_then(|()| std::fs::rename(&tmp, file));
    if let Err(error) = written {
        tracing::warn!("cannot record the fleet revision applied ({revision}) in {}: {error}", file.display());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_object_digest_is_the_one_the_object_store_records() {
        // sha256 of no bytes, as hex and as the store's padded base64url.
        let empty = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
        assert_eq!(object_digest(empty).as_deref(), Some("SHA-256=47DEQpj8HBSa-_TImW-5JCeuQeRkm5NMpJWZG3hSuFU="));
        assert_eq!(object_digest("not hex"), None);
    }
}
