//! The node's KV journal: when a write's record reaches the operating
//! system (so that it survives `kill -9`), and when it reaches the disk (so
//! that it survives a power loss).
//!
//! A write leaves its record in fjall's journal buffer (every keyspace is
//! created with `manual_journal_persist`). Nothing of a request that wrote
//! or read the store leaves the node (its response, a request or DNS query
//! it sends, a line it logs) before `Journal::flush` has put the records
//! it may have seen into the operating system's buffers, and a guest that
//! runs on has them put there at each epoch tick. So every write anyone
//! outside the node could have learned of survives `kill -9`, and
//! one `write(2)` serves the writes of every request that ran alongside,
//! instead of one each: at the end of a request, `flush_batched` first lets
//! the other requests ready on the same worker run up to the same point.
//!
//! A syncer thread fsyncs the journal within `SYNC_INTERVAL` of a write,
//! which bounds what a power loss can take, without making writers wait for
//! the disk (`sync_journals`); a clean shutdown syncs everything.

use std::fs::File;
use std::io::ErrorKind;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::thread::JoinHandle;
use std::time::Duration;

use fjall::{Database, PersistMode};

use super::{KvError, storage};

/// Longest time between a write and the fsync of the journal holding it.
const SYNC_INTERVAL: Duration = Duration::from_millis(500);

/// The database, and how many of its writes began, finished, and reached
/// the operating system's buffers, counted over all sites.
pub(super) struct Journal {
    pub(super) db: Database,
    /// Writes that began (fjall was asked to insert or remove).
    begun: AtomicU64,
    /// Writes fjall is done with: their records are in the journal, in its
    /// buffer or beyond. Counted as they finish, in whatever order.
    finished: AtomicU64,
    /// `finished` as it was just before the latest flush took the
    /// journal's lock: at least that many writes are in the operating
    /// system's buffers.
    flushed: AtomicU64,
    /// Something was written since the syncer last looked.
    dirty: AtomicBool,
}

impl Journal {
    pub(super) fn new(db: Database) -> Journal {
        let counter = || AtomicU64::new(0);
        Journal { db, begun: counter(), finished: counter(), flushed: counter(), dirty: AtomicBool::new(false) }
    }

    /// Runs one fjall write, counted.
    pub(super) fn write<R>(&self, apply: impl FnOnce() -> R) -> R {
        self.begun.fetch_add(1, Ordering::SeqCst);
        let result = apply();
        self.finished.fetch_add(1, Ordering::SeqCst);
        self.dirty.store(true, Ordering::Release);
        result
    }

    /// Whether a write may not be in the operating system's buffers yet.
    ///
    /// When every write that began had finished before the latest flush
    /// (`begun == flushed`: the writes counted are then the same ones),
    /// all of them are there.
    pub(super) fn unflushed(&self) -> bool {
        self.begun.load(Ordering::SeqCst) != self.flushed.load(Ordering::SeqCst)
    }

    /// Puts the record of every write whose value anyone may have read
    /// into the operating system's buffers. A value becomes readable only
    /// after its record is in the journal's buffer, so the buffer fjall
    /// writes out here holds it; one `write(2)` for however many records
    /// there are, none if a concurrent flush took them.
    pub(super) fn flush(&self) -> Result<(), KvError> {
        if !self.unflushed() {
            return Ok(());
        }
        let upto = self.finished.load(Ordering::SeqCst);
        self.db.persist(PersistMode::Buffer).map_err(storage)?;
        self.flushed.fetch_max(upto, Ordering::SeqCst);
        Ok(())
    }
}

/// The thread that fsyncs the journal; stops, and is joined, on `stop`.
pub(super) struct Syncer {
    stop: mpsc::Sender<()>,
    thread: JoinHandle<()>,
}

impl Syncer {
    pub(super) fn start(journal: Arc<Journal>, dir: PathBuf) -> Result<Syncer, KvError> {
        let (stop, stopped) = mpsc::channel();
        let thread =
            std::thread::Builder::new().name("kv-sync".into()).spawn(move || sync_loop(&journal, &dir, &stopped)).map_err(storage)?;
        Ok(Syncer { stop, thread })
    }

    pub(super) fn stop(self) {
        drop(self.stop);
        let _ = self.thread.join();
    }
}

/// Fsyncs the journal every `SYNC_INTERVAL` when something was written,
/// until the sender is dropped.
fn sync_loop(journal: &Journal, dir: &Path, stop: &mpsc::Receiver<()>) {
    while let Err(RecvTimeoutError::Timeout) = stop.recv_timeout(SYNC_INTERVAL) {
        if journal.dirty.swap(false, Ordering::AcqRel)
            && let Err(e) = sync_journals(journal, dir)
        {
            journal.dirty.store(true, Ordering::Release);
            tracing::error!("KV: syncing the journal failed: {e}");
        }
    }
}

/// Makes every write made so far survive a power loss, without holding up
/// the writes that come meanwhile.
///
/// fjall's own `persist(SyncAll)` fsyncs its journal while holding the
/// journal's lock, so every write, and on a directly called guest the whole
/// worker thread with every request on it, waits for the disk: 2.5 to 6 ms
/// every `SYNC_INTERVAL` on this project's machine, far longer on a slow
/// disk. Instead fjall only writes out its buffer under the lock (as
/// `Journal::flush` does), and the journal files (`*.jnl` in the database
/// folder) are fsynced through descriptors of our own: fsync writes back all
/// of a file's pages, whichever descriptor wrote them. A journal fjall has
/// sealed was synced by fjall as it sealed it; one deleted meanwhile holds
/// nothing unflushed. Should an fsync fail, fjall's own persist runs too:
/// its descriptor sees the same write-back error and fjall stops taking
/// writes, as it would have with its persist alone.
pub(super) fn sync_journals(journal: &Journal, dir: &Path) -> Result<usize, KvError> {
    journal.flush()?;
    let db = &journal.db;
    let mut synced = 0;
    for entry in std::fs::read_dir(dir).map_err(storage)? {
        let path = entry.map_err(storage)?.path();
        if path.extension().is_none_or(|extension| extension != "jnl") {
            continue;
        }
        let file = match File::open(&path) {
            Ok(file) => file,
            Err(e) if e.kind() == ErrorKind::NotFound => continue,
            Err(e) => return Err(storage(format!("{}: {e}", path.display()))),
        };
        if let Err(e) = file.sync_all() {
            let _ = db.persist(PersistMode::SyncAll);
            return Err(storage(format!("{}: {e}", path.display())));
        }
        synced += 1;
    }
    if synced == 0 {
        // fjall keeps its journals elsewhere now: nothing would be synced.
        return Err(storage(format!("no journal (*.jnl) in {}", dir.display())));
    }
    Ok(synced)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// How many times `marker` is in the first 64 KiB of the journal
    /// files, as the operating system has them (fjall preallocates the
    /// files, so their length says nothing).
    fn in_journal_files(dir: &Path, marker: &[u8]) -> usize {
        use std::io::Read;
        let files = std::fs::read_dir(dir).unwrap().map(|entry| entry.unwrap().path());
        let files = files.filter(|path| path.extension().is_some_and(|e| e == "jnl"));
        let head = |path: PathBuf| {
            let mut bytes = Vec::new();
            File::open(path).unwrap().take(64 << 10).read_to_end(&mut bytes).unwrap();
            bytes
        };
        files.map(|path| head(path).windows(marker.len()).filter(|w| *w == marker).count()).sum()
    }

    #[test]
    fn records_wait_in_the_buffer_until_one_flush_writes_them_all() {
        const MARKER: &[u8] = b"a value to find in the journal";
        let dir = tempfile::tempdir().unwrap();
        let journal = Journal::new(Database::builder(dir.path()).open().unwrap());
        let data = journal.db.keyspace("f.test", super::super::keyspace_options).unwrap();
        assert!(!journal.unflushed());
        for i in 0..10u8 {
            journal.write(|| data.insert([i], MARKER)).unwrap();
        }
        assert!(journal.unflushed());
        assert_eq!(in_journal_files(dir.path(), MARKER), 0, "no record written out yet");
        assert_eq!(data.get([3]).unwrap().as_deref(), Some(MARKER), "but every write readable");
        journal.flush().unwrap();
        assert!(!journal.unflushed());
        assert_eq!(in_journal_files(dir.path(), MARKER), 10, "one flush wrote out all ten");
    }

    #[test]
    fn a_write_still_under_way_keeps_the_journal_unflushed() {
        let dir = tempfile::tempdir().unwrap();
        let journal = Journal::new(Database::builder(dir.path()).open().unwrap());
        let data = journal.db.keyspace("u.test", super::super::keyspace_options).unwrap();
        journal.write(|| {
            data.insert("k", "v").unwrap();
            // Another request flushes while this write is between fjall and
            // its count: its record goes out, but it is not counted as flushed.
            journal.flush().unwrap();
        });
        assert!(journal.unflushed(), "the write finished after the flush began");
        journal.flush().unwrap();
        assert!(!journal.unflushed());
    }
}
