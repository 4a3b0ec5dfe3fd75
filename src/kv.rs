//! The sites' durable key-value stores: one redb database per site under
//! `DATA/kv/SITE.redb`, shared by all of the site's modules and invisible to
//! other sites. A write is committed (fsynced) before the guest sees it
//! succeed, so it survives `kill -9` of the node.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};

const DATA: TableDefinition<&[u8], &[u8]> = TableDefinition::new("kv");
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
/// Bytes of keys plus values stored, kept in `META`.
const STORED_BYTES: &str = "stored_bytes";

/// Longest key (ABI: keys are short strings, up to 1 KiB).
pub const MAX_KEY_BYTES: usize = 1024;
/// Keys plus values one site may store.
pub const MAX_SITE_BYTES: u64 = 256 << 20;

#[derive(Debug, thiserror::Error)]
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
                Arc::new(SiteKv { path: self.dir.join(format!("{site}.redb")), db: Mutex::new(None), max_value })
            })
            .clone()
    }

    /// Forgets every store; each database closes when its last user is done.
    pub fn close(&self) {
        self.open.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).clear();
    }
}

/// One site's store. Methods block (a write waits for its fsync).
pub struct SiteKv {
    path: PathBuf,
    db: Mutex<Option<Arc<Database>>>,
    max_value: usize,
}

/// What a write does with the current value of its key.
enum Change {
    Keep,
    Set(Vec<u8>),
    Remove,
}

impl SiteKv {
    /// The database, opened (or created) on first use; a failed open is
    /// retried by the next operation.
    fn db(&self) -> Result<Arc<Database>, KvError> {
        let mut db = self.db.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(db) = &*db {
            return Ok(db.clone());
        }
        let opened = Arc::new(Database::create(&self.path).map_err(storage)?);
        *db = Some(opened.clone());
        Ok(opened)
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

    /// Sets `key`; `true` if it was new.
    pub fn insert(&self, key: &[u8], value: &[u8]) -> Result<bool, KvError> {
        self.write(key, |old| (Change::Set(value.to_vec()), old.is_none()))
    }

    /// Sets `key` only if absent; `true` if it was set.
    pub fn upsert(&self, key: &[u8], value: &[u8]) -> Result<bool, KvError> {
        self.write(key, |old| match old {
            Some(_) => (Change::Keep, false),
            None => (Change::Set(value.to_vec()), true),
        })
    }

    /// Appends to the value, creating it if absent; `true` if it was new.
    pub fn append(&self, key: &[u8], value: &[u8]) -> Result<bool, KvError> {
        self.write(key, |old| {
            let mut joined = old.map(<[u8]>::to_vec).unwrap_or_default();
            joined.extend_from_slice(value);
            (Change::Set(joined), old.is_none())
        })
    }

    /// Removes `key`; `true` if a value was removed.
    pub fn remove(&self, key: &[u8]) -> Result<bool, KvError> {
        self.write(key, |old| (Change::Remove, old.is_some()))
    }

    /// One committed write transaction: reads the current value, applies
    /// `change`, checks the limits, keeps the site's byte count.
    fn write(&self, key: &[u8], change: impl FnOnce(Option<&[u8]>) -> (Change, bool)) -> Result<bool, KvError> {
        if key.len() > MAX_KEY_BYTES {
            return Err(KvError::KeyTooLong(key.len()));
        }
        let txn = self.db()?.begin_write().map_err(storage)?;
        let answer = {
            let mut data = txn.open_table(DATA).map_err(storage)?;
            let mut meta = txn.open_table(META).map_err(storage)?;
            let old = data.get(key).map_err(storage)?.map(|v| v.value().to_vec());
            let (change, answer) = change(old.as_deref());
            let old_size = old.as_ref().map_or(0, |v| (key.len() + v.len()) as u64);
            let new_size = match &change {
                Change::Keep => old_size,
                Change::Remove => 0,
                Change::Set(value) => {
                    if value.len() > self.max_value {
                        return Err(KvError::ValueTooLarge { len: value.len(), limit: self.max_value });
                    }
                    (key.len() + value.len()) as u64
                }
            };
            let stored = meta.get(STORED_BYTES).map_err(storage)?.map_or(0, |v| v.value());
            let total = (stored + new_size).saturating_sub(old_size);
            if new_size > old_size && total > MAX_SITE_BYTES {
                return Err(KvError::SiteFull);
            }
            match change {
                Change::Keep => return Ok(answer),
                Change::Set(value) => {
                    data.insert(key, value.as_slice()).map_err(storage)?;
                }
                Change::Remove => {
                    data.remove(key).map_err(storage)?;
                }
            }
            meta.insert(STORED_BYTES, total).map_err(storage)?;
            answer
        };
        txn.commit().map_err(storage)?;
        Ok(answer)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn semantics_and_limits() {
        let dir = tempfile::tempdir().unwrap();
        let stores = KvStores::new(dir.path().to_owned()).unwrap();
        let kv = stores.site("a.test", 8);
        assert!(kv.insert(b"k", b"1").unwrap());
        assert!(!kv.insert(b"k", b"2").unwrap());
        assert!(!kv.upsert(b"k", b"3").unwrap());
        assert_eq!(kv.get(b"k").unwrap().as_deref(), Some(&b"2"[..]));
        assert!(kv.upsert(b"u", b"x").unwrap());
        assert!(!kv.append(b"k", b"45").unwrap());
        assert_eq!(kv.get(b"k").unwrap().as_deref(), Some(&b"245"[..]));
        assert!(kv.append(b"n", b"z").unwrap());
        assert!(kv.remove(b"k").unwrap());
        assert!(!kv.remove(b"k").unwrap());
        assert_eq!(kv.get(b"k").unwrap(), None);
        assert!(matches!(kv.insert(b"big", b"123456789"), Err(KvError::ValueTooLarge { .. })));
        assert!(matches!(kv.insert(&[b'k'; MAX_KEY_BYTES + 1], b"v"), Err(KvError::KeyTooLong(_))));
        let other = stores.site("b.test", 8);
        assert_eq!(other.get(b"u").unwrap(), None);
    }
}
