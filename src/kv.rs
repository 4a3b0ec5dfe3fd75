//! The sites' durable key-value stores: one redb database per site under
//! `DATA/kv/SITE.redb`, shared by all of the site's modules and invisible to
//! other sites. A write is committed (fsynced) before the guest sees it
//! succeed, so it survives `kill -9` of the node; concurrent writes share
//! one commit.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, mpsc};

use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use tokio::sync::oneshot;

const DATA: TableDefinition<&[u8], &[u8]> = TableDefinition::new("kv");
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
/// Bytes of keys plus values stored, kept in `META`.
const STORED_BYTES: &str = "stored_bytes";

/// Longest key (ABI: keys are short strings, up to 1 KiB).
pub const MAX_KEY_BYTES: usize = 1024;
/// Keys plus values one site may store.
pub const MAX_SITE_BYTES: u64 = 256 << 20;

#[derive(Debug, Clone, thiserror::Error)]
pub enum KvError {
    #[error("key of {0} bytes is over the limit of {MAX_KEY_BYTES}")]
    KeyTooLong(usize),
    #[error("value of {len} bytes is over the limit of {limit}")]
    ValueTooLarge { len: usize, limit: usize },
    #[error("the site's store is full ({MAX_SITE_BYTES} bytes)")]
    SiteFull,
    #[error("storage failed: {0}")]
    Storage(String),
}

fn storage(e: impl std::fmt::Display) -> KvError {
    KvError::Storage(e.to_string())
}

/// Opens each site's store on first use and keeps it open.
pub struct KvStores {
    dir: PathBuf,
    open: Mutex<HashMap<String, Arc<SiteKv>>>,
}

impl KvStores {
    pub fn new(dir: PathBuf) -> std::io::Result<KvStores> {
        std::fs::create_dir_all(&dir)?;
        Ok(KvStores { dir, open: Mutex::new(HashMap::new()) })
    }

    /// The store of `site` (a validated site name), values capped at
    /// `max_value` bytes. The database opens on first use.
    pub fn site(&self, site: &str, max_value: usize) -> Arc<SiteKv> {
        let mut open = self.open.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        open.entry(site.to_owned())
            .or_insert_with(|| {
                Arc::new(SiteKv {
                    path: self.dir.join(format!("{site}.redb")),
                    db: Mutex::new(Handle::Unopened),
                    writer: Mutex::new(Handle::Unopened),
                    max_value,
                })
            })
            .clone()
    }

    /// Closes every store: later operations on them fail, queued writes are
    /// committed, and each database file is released before this returns,
    /// so a new node can open it at once.
    pub async fn close(&self) {
        let stores: Vec<_> = self.open.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).drain().collect();
        let closing = tokio::task::spawn_blocking(move || stores.into_iter().for_each(|(_, kv)| kv.close()));
        if let Err(e) = closing.await {
            tracing::error!("closing the KV stores failed: {e}");
        }
    }
}

/// One site's store. Reads run where they are called; writes go to the
/// site's writer thread, which commits whatever has queued up in one
/// transaction (one fsync for the batch) and then answers each write.
pub struct SiteKv {
    path: PathBuf,
    db: Mutex<Handle<Arc<Database>>>,
    writer: Mutex<Handle<Writer>>,
    max_value: usize,
}

/// A resource opened on first use and gone for good once closed.
enum Handle<T> {
    Unopened,
    Open(T),
    Closed,
}

struct Writer {
    queue: mpsc::Sender<WriteOp>,
    thread: std::thread::JoinHandle<()>,
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

struct WriteOp {
    kind: WriteKind,
    key: Vec<u8>,
    value: Vec<u8>,
    reply: oneshot::Sender<Result<bool, KvError>>,
}

/// Most writes committed together.
const MAX_BATCH: usize = 256;

impl SiteKv {
    /// The database, opened (or created) on first use; a failed open is
    /// retried by the next operation.
    fn db(&self) -> Result<Arc<Database>, KvError> {
        let mut db = lock(&self.db);
        match &*db {
            Handle::Open(db) => Ok(db.clone()),
            Handle::Closed => Err(closed()),
            Handle::Unopened => {
                let opened = Arc::new(Database::create(&self.path).map_err(storage)?);
                *db = Handle::Open(opened.clone());
                Ok(opened)
            }
        }
    }

    /// The queue of the writer thread, started on first use. The thread
    /// ends when the store is closed or dropped.
    fn writer(&self) -> Result<mpsc::Sender<WriteOp>, KvError> {
        let mut writer = lock(&self.writer);
        match &*writer {
            Handle::Open(writer) => Ok(writer.queue.clone()),
            Handle::Closed => Err(closed()),
            Handle::Unopened => {
                let (queue, receiver) = mpsc::channel();
                let (db, max_value) = (self.db()?, self.max_value);
                let thread = std::thread::Builder::new()
                    .name("kv-writer".into())
                    .spawn(move || write_loop(&db, max_value, &receiver))
                    .map_err(storage)?;
                *writer = Handle::Open(Writer { queue: queue.clone(), thread });
                Ok(queue)
            }
        }
    }

    /// Refuses further operations, lets the writer commit what is queued
    /// and waits for it, then releases the database (once no read that
    /// already started still holds it). Blocks.
    fn close(&self) {
        if let Handle::Open(Writer { queue, thread }) = std::mem::replace(&mut *lock(&self.writer), Handle::Closed) {
            drop(queue);
            if thread.join().is_err() {
                tracing::error!(path = %self.path.display(), "KV writer thread panicked");
            }
        }
        *lock(&self.db) = Handle::Closed;
    }

    pub fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, KvError> {
        let txn = self.db()?.begin_read().map_err(storage)?;
        let table = match txn.open_table(DATA) {
            Ok(table) => table,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(None),
            Err(e) => return Err(storage(e)),
        };
        Ok(table.get(key).map_err(storage)?.map(|value| value.value().to_vec()))
    }

    /// Resolves once the write is committed to disk (or refused).
    pub async fn write(&self, kind: WriteKind, key: Vec<u8>, value: Vec<u8>) -> Result<bool, KvError> {
        if key.len() > MAX_KEY_BYTES {
            return Err(KvError::KeyTooLong(key.len()));
        }
        let (reply, answer) = oneshot::channel();
        let stopped = || KvError::Storage("the store's writer stopped".into());
        self.writer()?.send(WriteOp { kind, key, value, reply }).map_err(|_| stopped())?;
        answer.await.map_err(|_| stopped())?
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn closed() -> KvError {
    KvError::Storage("the store is closed (the node is shutting down)".into())
}

fn write_loop(db: &Database, max_value: usize, queue: &mpsc::Receiver<WriteOp>) {
    while let Ok(first) = queue.recv() {
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match queue.try_recv() {
                Ok(op) => batch.push(op),
                Err(_) => break,
            }
        }
        match commit(db, max_value, &batch) {
            Ok(answers) => {
                for (op, answer) in batch.into_iter().zip(answers) {
                    let _ = op.reply.send(answer);
                }
            }
            Err(error) => {
                tracing::error!("KV commit failed: {error}");
                for op in batch {
                    let _ = op.reply.send(Err(error.clone()));
                }
            }
        }
    }
}

/// Applies a batch in one write transaction. The outer error fails the
/// whole batch (storage); an inner one refuses a single write (limits).
fn commit(db: &Database, max_value: usize, batch: &[WriteOp]) -> Result<Vec<Result<bool, KvError>>, KvError> {
    let txn = db.begin_write().map_err(storage)?;
    let answers = {
        let mut data = txn.open_table(DATA).map_err(storage)?;
        let mut meta = txn.open_table(META).map_err(storage)?;
        let mut stored = meta.get(STORED_BYTES).map_err(storage)?.map_or(0, |v| v.value());
        let mut answers = Vec::with_capacity(batch.len());
        for op in batch {
            answers.push(apply(&mut data, &mut stored, max_value, op)?);
        }
        meta.insert(STORED_BYTES, stored).map_err(storage)?;
        answers
    };
    txn.commit().map_err(storage)?;
    Ok(answers)
}

fn apply(
    data: &mut redb::Table<&[u8], &[u8]>,
    stored: &mut u64,
    max_value: usize,
    op: &WriteOp,
) -> Result<Result<bool, KvError>, KvError> {
    let key = op.key.as_slice();
    let old = data.get(key).map_err(storage)?.map(|v| v.value().to_vec());
    let (new, answer) = match (op.kind, &old) {
        (WriteKind::Insert, _) => (Some(op.value.clone()), old.is_none()),
        (WriteKind::Upsert, Some(_)) => return Ok(Ok(false)),
        (WriteKind::Upsert, None) => (Some(op.value.clone()), true),
        (WriteKind::Append, _) => {
            let mut joined = old.clone().unwrap_or_default();
            joined.extend_from_slice(&op.value);
            (Some(joined), old.is_none())
        }
        (WriteKind::Remove, _) => (None, old.is_some()),
    };
    let old_size = old.as_ref().map_or(0, |v| (key.len() + v.len()) as u64);
    let new_size = new.as_ref().map_or(0, |v| (key.len() + v.len()) as u64);
    if let Some(value) = &new {
        if value.len() > max_value {
            return Ok(Err(KvError::ValueTooLarge { len: value.len(), limit: max_value }));
        }
    }
    let total = (*stored + new_size).saturating_sub(old_size);
    if new_size > old_size && total > MAX_SITE_BYTES {
        return Ok(Err(KvError::SiteFull));
    }
    match new {
        Some(value) => data.insert(key, value.as_slice()).map_err(storage)?,
        None => data.remove(key).map_err(storage)?,
    };
    *stored = total;
    Ok(Ok(answer))
}

#[cfg(test)]
mod tests {
    use super::*;

    use WriteKind::*;

    async fn w(kv: &SiteKv, kind: WriteKind, key: &[u8], value: &[u8]) -> Result<bool, KvError> {
        kv.write(kind, key.to_vec(), value.to_vec()).await
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_writes_are_all_applied() {
        let dir = tempfile::tempdir().unwrap();
        let stores = KvStores::new(dir.path().to_owned()).unwrap();
        let kv = stores.site("b.test", 64);
        let tasks: Vec<_> = (0..100)
            .map(|_| {
                let kv = kv.clone();
                tokio::spawn(async move { w(&kv, Append, b"log", b"x").await })
            })
            .collect();
        let mut created = 0;
        let mut refused = 0;
        for task in tasks {
            match task.await.unwrap() {
                Ok(true) => created += 1,
                Ok(false) => {}
                Err(KvError::ValueTooLarge { .. }) => refused += 1,
                Err(e) => panic!("{e}"),
            }
        }
        assert_eq!(created, 1, "exactly one append created the key");
        assert_eq!(refused, 36, "appends past the 64-byte value limit are refused");
        assert_eq!(kv.get(b"log").unwrap().unwrap().len(), 64);
    }

    #[tokio::test]
    async fn semantics_and_limits() {
        let dir = tempfile::tempdir().unwrap();
        let stores = KvStores::new(dir.path().to_owned()).unwrap();
        let kv = stores.site("a.test", 8);
        assert!(w(&kv, Insert, b"k", b"1").await.unwrap());
        assert!(!w(&kv, Insert, b"k", b"2").await.unwrap());
        assert!(!w(&kv, Upsert, b"k", b"3").await.unwrap());
        assert_eq!(kv.get(b"k").unwrap().as_deref(), Some(&b"2"[..]));
        assert!(w(&kv, Upsert, b"u", b"x").await.unwrap());
        assert!(!w(&kv, Append, b"k", b"45").await.unwrap());
        assert_eq!(kv.get(b"k").unwrap().as_deref(), Some(&b"245"[..]));
        assert!(w(&kv, Append, b"n", b"z").await.unwrap());
        assert!(w(&kv, Remove, b"k", b"").await.unwrap());
        assert!(!w(&kv, Remove, b"k", b"").await.unwrap());
        assert_eq!(kv.get(b"k").unwrap(), None);
        assert!(matches!(w(&kv, Insert, b"big", b"123456789").await, Err(KvError::ValueTooLarge { .. })));
        assert!(matches!(w(&kv, Append, b"n", b"12345678").await, Err(KvError::ValueTooLarge { .. })));
        assert_eq!(kv.get(b"n").unwrap().as_deref(), Some(&b"z"[..]), "a refused append changes nothing");
        assert!(matches!(w(&kv, Insert, &[b'k'; MAX_KEY_BYTES + 1], b"v").await, Err(KvError::KeyTooLong(_))));
        let other = stores.site("b.test", 8);
        assert_eq!(other.get(b"u").unwrap(), None);
    }

    #[tokio::test]
    async fn close_releases_the_file_even_while_the_store_is_still_held() {
        let dir = tempfile::tempdir().unwrap();
        let stores = KvStores::new(dir.path().to_owned()).unwrap();
        let held = stores.site("c.test", 8);
        assert!(w(&held, Insert, b"k", b"v").await.unwrap());
        stores.close().await;
        assert!(matches!(w(&held, Insert, b"k", b"w").await, Err(KvError::Storage(_))), "closed for writes");
        assert!(held.get(b"k").is_err(), "and for reads");
        let reopened = KvStores::new(dir.path().to_owned()).unwrap().site("c.test", 8);
        assert_eq!(reopened.get(b"k").unwrap().as_deref(), Some(&b"v"[..]), "the file opens again at once");
    }
}
