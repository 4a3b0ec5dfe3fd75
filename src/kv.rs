//! The sites' durable key-value stores: one fjall database for the node
//! under `DATA/kv/`, one keyspace per site, shared by all of the site's
//! modules and invisible to other sites.
//!
//! A write is readable when its call returns, and durable (it survives
//! `kill -9` of the node) before anything of its request leaves the node;
//! `journal` says how, and how a power loss is bounded.
//!
//! In a fleet (`crate::fleet`) the database is the node's copy of the
//! fleet's KV bucket instead: a write goes to JetStream, then to the
//! writer's copy; every node's copy is fed by a watch of the bucket. Each
//! value is stored after the bucket revision it came with (`Replica`),
//! which the next write of the key expects (compare-and-set), and which
//! keeps an older revision arriving late from undoing a newer one.

mod journal;
mod replica;

use replica::Replica;
pub(crate) use replica::{AppliedBy, Versioned};

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use arc_swap::ArcSwapOption;
use fjall::{Database, Keyspace, KeyspaceCreateOptions, PersistMode};

use journal::{Journal, Syncer};

use crate::fleet::Fleet;

/// Longest key (ABI: keys are short strings, up to 1 KiB).
pub const MAX_KEY_BYTES: usize = 1024;
/// Keys plus values one site may store.
pub const MAX_SITE_BYTES: u64 = 256 << 20;
/// Memtable of a site's keyspace before it is flushed to disk (fjall's
/// default is 64 MiB, its recommended range 8 to 64 MiB). At the bottom of
/// that range, because a node holds one per site, and because lookups slow
/// down as a memtable fills with versions of hot keys: with a guest that
/// reads and rewrites one key per request, 8 MiB cost about 5 µs less CPU
/// per request than 64 MiB, and 4 MiB no less than 8 (RESULTS.md).
const MEMTABLE_BYTES: u64 = 8 << 20;
/// Sealed memtables and L0 tables from which fjall may make a write wait
/// for its flushes and compactions (it sleeps, in 100 ms and 10 ms steps,
/// from 4 sealed memtables or 30 L0 runs on), with a margin.
const BACKLOG_SEALED_MEMTABLES: usize = 3;
const BACKLOG_L0_TABLES: usize = 25;

#[derive(Debug, Clone, thiserror::Error)]
pub enum KvError {
    #[error("key of {0} bytes is over the limit of {MAX_KEY_BYTES}")]
    KeyTooLong(usize),
    #[error("a key may not be empty")]
    EmptyKey,
    #[error("value of {len} bytes is over the limit of {limit}")]
    ValueTooLarge { len: usize, limit: usize },
    #[error("the site's store is full ({MAX_SITE_BYTES} bytes)")]
    SiteFull,
    #[error("value of {len} bytes is over the {limit} bytes a message to the fleet's NATS servers may carry (their max_payload)")]
    OverMessageLimit { len: usize, limit: usize },
    #[error("storage failed: {0}")]
    Storage(String),
    /// In a fleet: the write was not taken (the servers are unreachable,
    /// did not answer in time, or refused it); nothing changed.
    #[error("the fleet's NATS servers did not take the write: {0}")]
    Fleet(String),
}

fn storage(e: impl std::fmt::Display) -> KvError {
    KvError::Storage(e.to_string())
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The open database and what keeps its journal synced.
struct Open {
    journal: Arc<Journal>,
    syncer: Syncer,
}

/// How a site's keyspace is made: writes leave their records in the
/// journal's buffer for `Journal::flush`. (A keyspace keeps the options it
/// was created with: one made by an earlier build writes out every record
/// at once, which is slower and as durable.)
fn keyspace_options() -> KeyspaceCreateOptions {
    KeyspaceCreateOptions::default().max_memtable_size(MEMTABLE_BYTES).manual_journal_persist(true)
}

/// The node's stores: the database opens on first use (so `terrafirma run`
/// without KV never opens it) and each site's keyspace with it.
pub struct KvStores {
    dir: PathBuf,
    open: Mutex<Option<Open>>,
    sites: Mutex<HashMap<String, Arc<SiteKv>>>,
    /// Requests, all sites together, that used a store since their last
    /// flush (see `KvUser`).
    users: Arc<AtomicUsize>,
    /// Operations and bytes, all sites together, for the metrics.
    pub counts: Arc<KvCounts>,
    /// The fleet whose KV bucket these stores are the local copy of.
    fleet: Option<Arc<Fleet>>,
    /// Whether the stores hold a fleet's copy (`Replica`s).
    replica: bool,
}

/// KV operations and bytes since the node started.
#[derive(Debug, Default)]
pub struct KvCounts {
    /// Gets, then writes by `WriteKind` (insert, upsert, append, remove):
    /// the order of `metrics::KV_OPS`.
    pub ops: [std::sync::atomic::AtomicU64; 5],
    pub bytes_read: std::sync::atomic::AtomicU64,
    pub bytes_written: std::sync::atomic::AtomicU64,
}

impl KvCounts {
    fn count(&self, op: usize, bytes: &std::sync::atomic::AtomicU64, n: usize) {
        use std::sync::atomic::Ordering::Relaxed;
        self.ops[op].fetch_add(1, Relaxed);
        bytes.fetch_add(n as u64, Relaxed);
    }
}

impl KvStores {
    /// The stores in `dir`; in a fleet, the local copy of its bucket,
    /// written through `fleet`.
    pub fn new(dir: PathBuf, fleet: Option<Arc<Fleet>>) -> std::io::Result<KvStores> {
        std::fs::create_dir_all(&dir)?;
        let users = Arc::new(AtomicUsize::new(0));
        let replica = fleet.is_some();
        Ok(KvStores { dir, open: Mutex::new(None), sites: Mutex::new(HashMap::new()), users, counts: Arc::default(), fleet, replica })
    }

    /// Makes everything written so far survive a power loss (the fleet's
    /// follower, before it records how far it got).
    pub fn persist(&self) -> Result<(), KvError> {
        match lock(&self.open).as_ref() {
            Some(open) => open.journal.db.persist(PersistMode::SyncAll).map_err(storage),
            None => Ok(()),
        }
    }

    /// The store of `site` (a validated site name), values capped at
    /// `max_value` bytes. A store whose database cannot open answers every
    /// operation with the error.
    pub fn site(&self, site: &str, max_value: usize) -> Arc<SiteKv> {
        lock(&self.sites)
            .entry(site.to_owned())
            .or_insert_with(|| {
                let (state, unavailable) = match self.open_site(site) {
                    Ok(state) => (Some(state), KvError::Storage("the store is closed (the node is shutting down)".into())),
                    Err(e) => {
                        tracing::error!(site, "cannot open the KV store in {}: {e}", self.dir.display());
                        (None, KvError::Storage(format!("the store could not be opened: {e}")))
                    }
                };
                let reads = ArcSwapOption::from(state.as_ref().map(|state| state.live.clone()));
                Arc::new(SiteKv {
                    site: site.to_owned(),
                    fleet: self.fleet.clone(),
                    replica: self.replica,
                    max_value,
                    reads,
                    state: Mutex::new(state),
                    unavailable,
                    users: self.users.clone(),
                    counts: self.counts.clone(),
                })
            })
            .clone()
    }

    fn open_site(&self, site: &str) -> Result<SiteState, KvError> {
        let mut open = lock(&self.open);
        if open.is_none() {
            *open = Some(self.open_db()?);
        }
        let journal = &open.as_ref().expect("opened above").journal;
        let data = journal.db.keyspace(site, keyspace_options).map_err(storage)?;
        // Counted once per site and node start rather than written with
        // every change: a second record per write would double the work.
        let mut stored = 0;
        for entry in data.iter() {
            let (key, value) = entry.into_inner().map_err(storage)?;
            stored += (key.len() + value.len()) as u64;
        }
        Ok(SiteState { live: Arc::new(Live { data, journal: journal.clone() }), stored })
    }

    fn open_db(&self) -> Result<Open, KvError> {
        let db = Database::builder(&self.dir).open().map_err(storage)?;
        let journal = Arc::new(Journal::new(db));
        let syncer = Syncer::start(journal.clone(), self.dir.clone())?;
        Ok(Open { journal, syncer })
    }

    /// Closes every store: later operations on them fail, the journal is
    /// synced, and the database is released before this returns, so a new
    /// node can open it at once.
    pub async fn close(&self) {
        let sites: Vec<_> = lock(&self.sites).drain().map(|(_, kv)| kv).collect();
        let open = lock(&self.open).take();
        let closing = tokio::task::spawn_blocking(move || {
            for kv in sites {
                kv.reads.store(None);
                lock(&kv.state).take();
            }
            if let Some(Open { journal, syncer }) = open {
                syncer.stop();
                if let Err(e) = journal.db.persist(PersistMode::SyncAll) {
                    tracing::error!("KV: the final sync failed: {e}");
                }
                drop(journal);
            }
        });
        if let Err(e) = closing.await {
            tracing::error!("closing the KV stores failed: {e}");
        }
    }
}

/// A site's keyspace and the journal its records go to.
struct Live {
    data: Keyspace,
    journal: Arc<Journal>,
}

/// One site's store.
pub struct SiteKv {
    site: String,
    /// In a fleet: where writes go (see the module doc).
    fleet: Option<Arc<Fleet>>,
    /// Whether the store is a fleet's copy (`Replica`s).
    replica: bool,
    max_value: usize,
    /// The store as reads see it, without waiting for a write; `None` once
    /// closed.
    reads: ArcSwapOption<Live>,
    /// `None` once closed (or if the database could not open). Writes hold
    /// the lock for their read-modify-write, so they apply one at a time.
    state: Mutex<Option<SiteState>>,
    /// What an operation answers when `state` is `None`: closed, or why
    /// it never opened.
    unavailable: KvError,
    users: Arc<AtomicUsize>,
    counts: Arc<KvCounts>,
}

/// A request that used the store since its last flush, counted as long as
/// this lives: while others are about, a request at its end waits for them
/// to write too (`SiteKv::flush_batched`).
pub struct KvUser(Arc<AtomicUsize>);

impl Drop for KvUser {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

struct SiteState {
    live: Arc<Live>,
    /// Bytes of keys plus values stored.
    stored: u64,
}

/// The writes of the ABI.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteKind {
    /// Set the key; `true` if it was new.
    Insert,
    /// Set the key only if absent; `true` if it was set.
    Upsert,
    /// Append to the value, creating it if absent; `true` if it was new.
    Append,
    /// Remove the key; `true` if a value was removed.
    Remove,
}

impl SiteKv {
    pub fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, KvError> {
        check_key(key)?;
        let live = self.reads.load();
        let stored = live.as_ref().ok_or_else(|| self.unavailable.clone())?.data.get(key).map_err(storage)?;
        let value = match self.replica {
            true => stored.and_then(|stored| Replica::parse(&stored)?.value.map(<[u8]>::to_vec)),
            false => stored.map(|value| value.to_vec()),
        };
        self.counts.count(0, &self.counts.bytes_read, value.as_ref().map_or(0, Vec::len));
        Ok(value)
    }

    /// Makes every write this store's users may have seen, its own and any
    /// other site's, survive `kill -9` of the node: called before anything
    /// of a request that used the store leaves the node. A closed store
    /// (or one that never opened) has nothing to flush here: closing syncs
    /// the journal after the last write, and a node closes its stores only
    /// once its servers have stopped.
    pub fn flush(&self) -> Result<(), KvError> {
        // In a fleet a write is durable once JetStream acknowledged it.
        if self.replica {
            return Ok(());
        }
        self.reads.load().as_ref().map_or(Ok(()), |live| live.journal.flush())
    }

    /// Counts a request as a user of the stores until the value is dropped.
    pub fn user(&self) -> KvUser {
        self.users.fetch_add(1, Ordering::Relaxed);
        KvUser(self.users.clone())
    }

    /// `flush` at the end of a request, `user` being the request's. If
    /// there is anything to write out and other requests use the stores,
    /// the requests ready on this worker thread run first, up to their own
    /// flush, so that one `write(2)` serves them all: under load, one for
    /// several requests instead of one each. A request on its own flushes
    /// at once: the wait would cost it more than the `write(2)`.
    pub async fn flush_batched(&self, user: KvUser) -> Result<(), KvError> {
        let others = user.0.load(Ordering::Relaxed) > 1;
        if others && self.reads.load().as_ref().is_some_and(|live| live.journal.unflushed()) {
            tokio::task::yield_now().await;
        }
        self.flush()
    }

    /// Whether a write now may wait for fjall to catch up with its flushes
    /// or compactions (see `BACKLOG_*`), so the caller should not make it on
    /// a thread other requests need.
    pub fn write_may_wait(&self) -> bool {
        self.fleet.is_some()
            || self.reads.load().as_ref().is_some_and(|live| {
                live.data.sealed_memtable_count() >= BACKLOG_SEALED_MEMTABLES || live.data.l0_table_count() >= BACKLOG_L0_TABLES
            })
    }

    /// Applies one write: readable, and in the journal's buffer, when this
    /// returns `Ok`; in the operating system's buffers after the next
    /// `flush`. In a fleet, through the fleet's bucket, given up at
    /// `deadline` (see `Fleet::write_kv`).
    pub fn write(&self, kind: WriteKind, key: Vec<u8>, value: Vec<u8>, deadline: std::time::Instant) -> Result<bool, KvError> {
        check_key(&key)?;
        let op = 1 + match kind {
            WriteKind::Insert => 0,
            WriteKind::Upsert => 1,
            WriteKind::Append => 2,
            WriteKind::Remove => 3,
        };
        self.counts.count(op, &self.counts.bytes_written, key.len() + value.len());
        if self.replica {
            let fleet = self.fleet.as_ref().ok_or_else(|| KvError::Fleet("this copy is written by its fleet only".into()))?;
            return fleet.write_kv(self, kind, &key, &value, deadline);
        }
        let mut state = lock(&self.state);
        let state = state.as_mut().ok_or_else(|| self.unavailable.clone())?;
        let live = &*state.live;
        let old = live.data.get(&key).map_err(storage)?;
        let (new, answer) = match decide(kind, old.as_deref(), &value) {
            Decision::Unchanged(answer) => return Ok(answer),
            Decision::Write(new, answer) => (new, answer),
        };
        let total = self.check(state, key.len(), old.as_ref().map(|v| v.len()), new.as_ref().map(Vec::len))?;
        live.journal
            .write(|| match new {
                Some(value) => live.data.insert(key, value),
                None => live.data.remove(key),
            })
            .map_err(storage)?;
        state.stored = total;
        Ok(answer)
    }

    /// The site's bytes stored after replacing a value of `old` bytes by
    /// one of `new` (`None`: absent) under a key of `key` bytes; an error if
    /// the value or the site would be over its limit.
    fn check(&self, state: &SiteState, key: usize, old: Option<usize>, new: Option<usize>) -> Result<u64, KvError> {
        if let Some(len) = new
            && len > self.max_value
        {
            return Err(KvError::ValueTooLarge { len, limit: self.max_value });
        }
        let size = |value: Option<usize>| value.map_or(0, |len| (key + len) as u64);
        let (old_size, new_size) = (size(old), size(new));
        let total = (state.stored + new_size).saturating_sub(old_size);
        if new_size > old_size && total > MAX_SITE_BYTES {
            return Err(KvError::SiteFull);
        }
        Ok(total)
    }

    /// The site's name.
    pub fn site(&self) -> &str {
        &self.site
    }
}

/// Keys are 1 to `MAX_KEY_BYTES` bytes (fjall refuses empty ones).
fn check_key(key: &[u8]) -> Result<(), KvError> {
    match key.len() {
        0 => Err(KvError::EmptyKey),
        len if len > MAX_KEY_BYTES => Err(KvError::KeyTooLong(len)),
        _ => Ok(()),
    }
}

/// What a write does to a key.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Decision {
    /// Nothing to write; the call answers this.
    Unchanged(bool),
    /// The new value (`None`: remove the key) and the call's answer.
    Write(Option<Vec<u8>>, bool),
}

/// What `kind` with `value` makes of a key whose value is `old`.
fn decide(kind: WriteKind, old: Option<&[u8]>, value: &[u8]) -> Decision {
    match (kind, old) {
        (WriteKind::Insert, _) => Decision::Write(Some(value.to_vec()), old.is_none()),
        (WriteKind::Upsert, Some(_)) => Decision::Unchanged(false),
        (WriteKind::Upsert, None) => Decision::Write(Some(value.to_vec()), true),
        (WriteKind::Append, _) => {
            let mut joined = old.map(<[u8]>::to_vec).unwrap_or_default();
            joined.extend_from_slice(value);
            Decision::Write(Some(joined), old.is_none())
        }
        (WriteKind::Remove, None) => Decision::Unchanged(false),
        (WriteKind::Remove, Some(_)) => Decision::Write(None, true),
    }
}

#[cfg(test)]
mod tests;
