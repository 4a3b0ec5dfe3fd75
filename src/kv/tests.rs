//! The KV stores' unit tests.
use super::*;

use WriteKind::*;

/// The store of `site` (values up to `max_value` bytes) in a fresh
/// folder, with the folder and the stores that hold it.
fn open(site: &str, max_value: usize) -> (tempfile::TempDir, KvStores, Arc<SiteKv>) {
    let dir = tempfile::tempdir().unwrap();
    let stores = KvStores::new(dir.path().to_owned(), None).unwrap();
    let kv = stores.site(site, max_value);
    (dir, stores, kv)
}

async fn w(kv: &SiteKv, kind: WriteKind, key: &[u8], value: &[u8]) -> Result<bool, KvError> {
    kv.write(kind, key.to_vec(), value.to_vec(), std::time::Instant::now())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_writes_are_all_applied() {
    let (_dir, stores, kv) = open("b.test", 64);
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
    stores.close().await;
}

#[tokio::test]
async fn semantics_and_limits() {
    let (_dir, stores, kv) = open("a.test", 8);
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
    // fjall panics on an empty key: refused before it gets there.
    assert!(matches!(w(&kv, Insert, b"", b"v").await, Err(KvError::EmptyKey)));
    assert!(matches!(kv.get(b""), Err(KvError::EmptyKey)));
    let other = stores.site("b.test", 8);
    assert_eq!(other.get(b"u").unwrap(), None);
    stores.close().await;
}

#[tokio::test]
async fn sizes_are_counted_and_kept_across_a_reopen() {
    let (dir, stores, kv) = open("s.test", 100);
    assert!(w(&kv, Insert, b"ab", b"12345").await.unwrap());
    assert!(!w(&kv, Append, b"ab", b"6").await.unwrap());
    assert!(w(&kv, Insert, b"c", b"1").await.unwrap());
    assert!(w(&kv, Remove, b"c", b"").await.unwrap());
    assert_eq!(lock(&kv.state).as_ref().unwrap().stored, 8, "2 + 6 bytes");
    stores.close().await;
    let stores = KvStores::new(dir.path().to_owned(), None).unwrap();
    let kv = stores.site("s.test", 100);
    assert_eq!(lock(&kv.state).as_ref().unwrap().stored, 8);
    assert_eq!(kv.get(b"ab").unwrap().as_deref(), Some(&b"123456"[..]));
    stores.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn data_over_several_memtables_is_all_there_after_a_reopen() {
    let (dir, stores, kv) = open("m.test", 64 << 10);
    let value = |i: u32| vec![i as u8; 64 << 10];
    let writes = (3 * MEMTABLE_BYTES / (64 << 10)) as u32;
    for i in 0..writes {
        assert!(w(&kv, Insert, &i.to_le_bytes(), &value(i)).await.unwrap());
    }
    // Rewrites of one key, the pattern that fills a memtable with versions.
    for i in 0..writes {
        w(&kv, Insert, b"hot", &i.to_le_bytes()).await.unwrap();
    }
    stores.close().await;
    let stores = KvStores::new(dir.path().to_owned(), None).unwrap();
    let kv = stores.site("m.test", 64 << 10);
    for i in 0..writes {
        assert_eq!(kv.get(&i.to_le_bytes()).unwrap(), Some(value(i)), "key {i}");
    }
    assert_eq!(kv.get(b"hot").unwrap(), Some((writes - 1).to_le_bytes().to_vec()));
    let stored = lock(&kv.state).as_ref().unwrap().stored;
    assert_eq!(stored, u64::from(writes) * (4 + (64 << 10)) + 3 + 4);
    stores.close().await;
}

#[tokio::test]
async fn a_request_that_lets_others_write_first_still_flushes() {
    let (_dir, stores, kv) = open("f.test", 8);
    let unflushed = || lock(&stores.open).as_ref().unwrap().journal.unflushed();
    let (mine, other) = (kv.user(), kv.user());
    assert!(w(&kv, Insert, b"k", b"v").await.unwrap());
    assert!(unflushed());
    kv.flush_batched(mine).await.unwrap();
    assert!(!unflushed(), "flushed after the wait for the other request");
    assert_eq!(kv.users.load(Ordering::Relaxed), 1, "the other request is still counted");
    drop(other);
    assert_eq!(kv.users.load(Ordering::Relaxed), 0);
    stores.close().await;
}

#[tokio::test]
async fn an_ordinary_store_has_no_backlog_a_closed_one_none_to_wait_for() {
    let (_dir, stores, kv) = open("w.test", 8);
    assert!(w(&kv, Insert, b"k", b"v").await.unwrap());
    assert!(!kv.write_may_wait());
    stores.close().await;
    assert!(!kv.write_may_wait(), "a closed store fails at once");
}

#[tokio::test]
async fn the_syncer_finds_fjalls_journal_where_it_looks() {
    let (_dir, stores, kv) = open("j.test", 8);
    assert!(w(&kv, Insert, b"k", b"v").await.unwrap());
    {
        let open = lock(&stores.open);
        let journal = &open.as_ref().unwrap().journal;
        assert_eq!(journal::sync_journals(journal, &stores.dir).unwrap(), journal.db.journal_count(), "every journal of fjall's is synced");
        let empty = tempfile::tempdir().unwrap();
        assert!(journal::sync_journals(journal, empty.path()).is_err(), "a folder without journals is an error, not a silent no-op");
    }
    stores.close().await;
}

#[tokio::test]
async fn close_releases_the_database_even_while_the_store_is_still_held() {
    let (dir, stores, held) = open("c.test", 8);
    assert!(w(&held, Insert, b"k", b"v").await.unwrap());
    stores.close().await;
    assert!(matches!(w(&held, Insert, b"k", b"w").await, Err(KvError::Storage(_))), "closed for writes");
    assert!(held.get(b"k").is_err(), "and for reads");
    let reopened = KvStores::new(dir.path().to_owned(), None).unwrap();
    let kv = reopened.site("c.test", 8);
    assert_eq!(kv.get(b"k").unwrap().as_deref(), Some(&b"v"[..]), "the database opens again at once");
    reopened.close().await;
}

#[tokio::test]
async fn a_store_that_cannot_open_says_why_not_that_the_node_stops() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("kv");
    let stores = KvStores::new(path.clone(), None).unwrap();
    std::fs::remove_dir(&path).unwrap();
    std::fs::write(&path, b"not a folder").unwrap();
    let kv = stores.site("x.test", 8);
    for error in [kv.get(b"k").unwrap_err(), w(&kv, Insert, b"k", b"v").await.unwrap_err()] {
        let error = error.to_string();
        assert!(error.contains("could not be opened"), "{error}");
        assert!(!error.contains("shutting down"), "{error}");
    }
}
