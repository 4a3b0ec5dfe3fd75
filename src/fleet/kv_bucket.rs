//! A site's KV store in a fleet: guests' writes published to the
//! `PREFIX-kv` bucket with compare-and-set, and the follower that feeds
//! the node's copy from it (the promises are in the parent module's doc).

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use async_nats::jetstream::consumer::DeliverPolicy;
use async_nats::jetstream::kv;
use futures::StreamExt;

use super::watch::{Change, keep_following};
use super::{Buckets, Fleet, FleetError, REQUEST_TIMEOUT, failed, write_revision};
use crate::kv::{AppliedBy, Decision, KvError, SiteKv, Versioned, WriteKind};
use crate::modules::ModuleStore;

/// How often the KV follower makes its copy durable and records the
/// revision it got to.
const KV_RECORD_EVERY: Duration = Duration::from_secs(1);

/// Room kept in a NATS message for a KV write's subject and headers: a
/// value may take the servers' `max_payload` less this.
const KV_MESSAGE_ROOM: usize = 4096;

/// Tries of one KV write against writes of the same key on other nodes.
const KV_TRIES: usize = 8;

impl Fleet {
    /// A guest's KV write through the fleet's bucket (see the module doc).
    /// Blocks its thread (`crate::sandbox::off_worker` moved the request's
    /// tokio worker away first); gives up at `deadline`, or after
    /// `REQUEST_TIMEOUT`, whichever is first. A write given up for time may
    /// still have been made, as with any request to a server.
    pub fn write_kv(&self, kv: &SiteKv, kind: WriteKind, key: &[u8], value: &[u8], deadline: std::time::Instant) -> Result<bool, KvError> {
        use tokio::runtime::{Handle, RuntimeFlavor};
        if Handle::try_current().is_ok_and(|handle| handle.runtime_flavor() == RuntimeFlavor::CurrentThread) {
            return Err(KvError::Fleet("a fleet KV write needs the node's multi-threaded runtime".into()));
        }
        let deadline = tokio::time::Instant::from_std(deadline.min(std::time::Instant::now() + REQUEST_TIMEOUT));
        self.runtime.block_on(self.write_kv_async(kv, kind, key, value, deadline))
    }

    async fn write_kv_async(
        &self,
        kv: &SiteKv,
        kind: WriteKind,
        key: &[u8],
        value: &[u8],
        deadline: tokio::time::Instant,
    ) -> Result<bool, KvError> {
        let late = || KvError::Fleet("no answer before the request's deadline".into());
        self.connected().map_err(|e| KvError::Fleet(e.0))?;
        let buckets = tokio::time::timeout_at(deadline, self.buckets()).await.map_err(|_| late())?.map_err(|e| KvError::Fleet(e.0))?;
        let bucket_key = kv_key(kv.site(), key);
        let limit = self.client.server_info().max_payload.saturating_sub(KV_MESSAGE_ROOM);
        // What the write is decided on and expects: this node's copy first,
        // after a conflict the bucket's latest (revision 0: no such key).
        let mut basis: Versioned = kv.replicated(key)?.unwrap_or((0, None));
        for _ in 0..KV_TRIES {
            let (new, answer) = match kv.plan(kind, key, basis.1.as_deref(), value)? {
                Decision::Unchanged(answer) => return Ok(answer),
                Decision::Write(new, answer) => (new, answer),
            };
            if let Some(len) = new.as_ref().map(Vec::len)
                && len > limit
            {
                return Err(KvError::OverMessageLimit { len, limit });
            }
            let published = tokio::time::timeout_at(deadline, self.publish_kv(buckets, &bucket_key, new.as_deref(), basis.0));
            match published.await.map_err(|_| late())? {
                Ok(revision) => {
                    kv.apply(key, new.as_deref(), revision, AppliedBy::Writer)?;
                    return Ok(answer);
                }
                Err(Published::Conflict) => {
                    let latest = tokio::time::timeout_at(deadline, buckets.kv.entry(&bucket_key)).await.map_err(|_| late())?;
                    basis = match latest.map_err(|e| KvError::Fleet(e.to_string()))? {
                        Some(entry) => (entry.revision, (entry.operation == kv::Operation::Put).then(|| entry.value.to_vec())),
                        None => (0, None),
                    };
                }
                Err(Published::Failed(error)) => return Err(KvError::Fleet(error)),
            }
        }
        Err(KvError::Fleet(format!("the key kept changing under {KV_TRIES} writes in a row")))
    }

    /// Publishes `value` (`None`: a deletion) as `key` if the key's last
    /// revision is `expected`; the new revision.
    async fn publish_kv(&self, buckets: &Buckets, key: &str, value: Option<&[u8]>, expected: u64) -> Result<u64, Published> {
        use async_nats::jetstream::context::PublishErrorKind;
        let mut headers = async_nats::HeaderMap::new();
        headers.insert(async_nats::header::NATS_EXPECTED_LAST_SUBJECT_SEQUENCE, expected.to_string().as_str());
        let payload = match value {
            Some(value) => bytes::Bytes::copy_from_slice(value),
            None => {
                headers.insert("KV-Operation", "DEL");
                bytes::Bytes::new()
            }
        };
        let subject = format!("$KV.{}.{key}", buckets.kv_bucket);
        let ack = self.jetstream.publish_with_headers(subject, headers, payload).await;
        match ack.map_err(|e| Published::Failed(e.to_string()))?.await {
            Ok(ack) => Ok(ack.sequence),
            Err(error) if error.kind() == PublishErrorKind::WrongLastSequence => Err(Published::Conflict),
            Err(error) => Err(Published::Failed(error.to_string())),
        }
    }

    /// Restarts of the followers' watches so far (`metrics::FLEET_FOLLOWERS`).
    pub fn restarts(&self) -> [u64; 2] {
        std::array::from_fn(|i| self.restarts[i].load(Ordering::Relaxed))
    }

    /// The KV bucket's last revision this node's watch applied.
    pub fn kv_revision(&self) -> u64 {
        self.kv_applied.load(Ordering::Relaxed)
    }

    /// Follows the KV bucket into the node's copy until the store is closed.
    pub fn follow_kv(self: &Arc<Self>, store: Arc<ModuleStore>) -> tokio::task::JoinHandle<()> {
        let fleet = self.clone();
        let restarted = self.clone();
        keep_following(
            "fleet KV",
            move || restarted.restarts[1].fetch_add(1, Ordering::Relaxed),
            move || {
                let (fleet, store) = (fleet.clone(), store.clone());
                async move { fleet.follow_kv_once(&store).await }
            },
        )
    }

    /// One watch of the KV bucket from the revision after the last applied,
    /// until it fails. Every `KV_RECORD_EVERY` the copy is made durable and
    /// the revision recorded, so a restart resumes from there.
    async fn follow_kv_once(&self, store: &Arc<ModuleStore>) -> Result<(), FleetError> {
        self.connected()?;
        let buckets = self.buckets().await?;
        let applied = self.kv_applied.load(Ordering::Relaxed);
        let last = self.jetstream.get_stream(format!("KV_{}", buckets.kv_bucket)).await.map_err(failed)?.cached_info().state.last_sequence;
        if last < applied {
            tracing::warn!(applied, last, "fleet KV: the bucket is behind this node's copy (was it made anew?); reading it all again");
            self.kv_applied.store(0, Ordering::Relaxed);
        }
        // The bucket keeps one revision per key: from the next one on is
        // exactly what this copy lacks.
        let mut recorded = self.kv_applied.load(Ordering::Relaxed);
        let mut watch = self.watch(&buckets.kv_bucket, DeliverPolicy::ByStartSequence { start_sequence: recorded + 1 }).await?;
        let mut record = tokio::time::interval(KV_RECORD_EVERY);
        loop {
            tokio::select! {
                entry = watch.next() => {
                    let Some(entry) = entry else { return Err(FleetError("the watch of the KV bucket ended".into())) };
                    let entry = entry?;
                    apply_kv(store, &entry).map_err(failed)?;
                    self.kv_applied.fetch_max(entry.revision, Ordering::Relaxed);
                }
                _ = record.tick() => {
                    let applied = self.kv_applied.load(Ordering::Relaxed);
                    if applied > recorded {
                        let (store, file) = (store.clone(), self.kv_revision_file.clone());
                        let persisted = tokio::task::spawn_blocking(move || store.kv_stores().persist().map(|()| write_revision(&file, applied)));
                        match persisted.await {
                            Ok(Ok(())) => recorded = applied,
                            Ok(Err(error)) => tracing::warn!("fleet KV: cannot make the copy durable: {error}"),
                            Err(error) => tracing::warn!("fleet KV: cannot make the copy durable: {error}"),
                        }
                    }
                }
            }
            if store.is_closed() {
                return Ok(());
            }
        }
    }
}

/// Applies one entry of the KV bucket to the node's copy. An entry that is
/// not a site's key is logged and skipped.
fn apply_kv(store: &ModuleStore, entry: &Change) -> Result<(), KvError> {
    let Some((site, key)) = parse_kv_key(&entry.key) else {
        tracing::warn!(key = %entry.key, revision = entry.revision, "fleet KV: not a SITE/KEY key; ignored");
        return Ok(());
    };
    let value = (!entry.removed).then_some(&entry.value[..]);
    store.kv_site(site).apply(&key, value, entry.revision, AppliedBy::Watch)
}

/// Why a KV write was not published.
enum Published {
    /// The key has a revision other than the one expected.
    Conflict,
    Failed(String),
}

/// The KV bucket's key of a site's key: the site as it is (its characters
/// are all allowed), the key in unpadded base64url (any bytes, none of
/// them outside what NATS allows in a key).
fn kv_key(site: &str, key: &[u8]) -> String {
    use base64::Engine;
    format!("{site}/{}", base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(key))
}

/// The site and the key of a KV bucket key; `None` if it is not one.
fn parse_kv_key(key: &str) -> Option<(&str, Vec<u8>)> {
    use base64::Engine;
    let (site, key) = key.split_once('/')?;
    let key = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(key).ok()?;
    (crate::names::valid_site_name(site) && (1..=crate::kv::MAX_KEY_BYTES).contains(&key.len())).then_some((site, key))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kv_keys_carry_any_bytes_within_what_nats_allows() {
        let allowed = |key: &str| {
            !key.is_empty()
                && !key.starts_with('.')
                && !key.ends_with('.')
                && key.bytes().all(|b| b.is_ascii_alphanumeric() || b"-/_=.".contains(&b))
        };
        let long = vec![0xff; crate::kv::MAX_KEY_BYTES];
        for (site, key) in [("_default", &b"k"[..]), ("a.example.com", b"count"), ("x-1", &[0, 1, 2, 0xff, b'/', b'.']), ("s", &long)] {
            let encoded = kv_key(site, key);
            assert!(allowed(&encoded), "{encoded}");
            assert_eq!(parse_kv_key(&encoded), Some((site, key.to_vec())));
        }
        assert_eq!(parse_kv_key("no-slash"), None);
        assert_eq!(parse_kv_key("s/"), None, "an empty key");
        assert_eq!(parse_kv_key("Bad_Site/AA"), None, "not a site name");
        assert_eq!(parse_kv_key("s/!!"), None, "not base64url");
        let too_long = kv_key("s", &[0; crate::kv::MAX_KEY_BYTES + 1]);
        assert_eq!(parse_kv_key(&too_long), None);
    }
}
