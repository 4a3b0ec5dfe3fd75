//! A site's store as a fleet's copy (`crate::fleet`): each value stored
//! after the bucket revision it came with, which the next write of the key
//! expects (compare-and-set) and which keeps an older revision arriving
//! late from undoing a newer one.

use super::{Decision, KvError, SiteKv, check_key, decide, lock, storage};
use crate::kv::WriteKind;

impl SiteKv {
    /// In a fleet: the local copy of `key`, with the bucket revision it came
    /// with; a value of `None` if that revision removed it.
    pub(crate) fn replicated(&self, key: &[u8]) -> Result<Option<Versioned>, KvError> {
        let live = self.reads.load();
        let stored = live.as_ref().ok_or_else(|| self.unavailable.clone())?.data.get(key).map_err(storage)?;
        Ok(stored.and_then(|stored| Replica::parse(&stored).map(|replica| (replica.revision, replica.value.map(<[u8]>::to_vec)))))
    }

    /// In a fleet: what `kind` makes of a value `old` (`None`: absent),
    /// checked against the value's and the site's limits as they stand here.
    pub(crate) fn plan(&self, kind: WriteKind, key: &[u8], old: Option<&[u8]>, value: &[u8]) -> Result<Decision, KvError> {
        let decision = decide(kind, old, value);
        if let Decision::Write(new, _) = &decision {
            let state = lock(&self.state);
            let state = state.as_ref().ok_or_else(|| self.unavailable.clone())?;
            self.check(state, key.len(), old.map(<[u8]>::len), new.as_ref().map(Vec::len))?;
        }
        Ok(decision)
    }

    /// In a fleet: applies the bucket's `revision` of `key` (a value, or
    /// `None` for a removal) to the local copy, unless the copy already
    /// holds that revision or a later one. `by` says who: the watch applies
    /// the bucket's revisions in order, so a removal it applies removes the
    /// key; the writer applies its own as soon as JetStream acknowledged it,
    /// possibly before older ones reach the watch, so its removal is kept
    /// as a marker (which the watch removes when it gets there).
    pub(crate) fn apply(&self, key: &[u8], value: Option<&[u8]>, revision: u64, by: AppliedBy) -> Result<(), KvError> {
        check_key(key)?;
        let mut state = lock(&self.state);
        let state = state.as_mut().ok_or_else(|| self.unavailable.clone())?;
        let live = &*state.live;
        let old = live.data.get(key).map_err(storage)?;
        let old = old.as_deref().and_then(Replica::parse);
        if old.as_ref().is_some_and(|old| old.revision >= revision) {
            return Ok(());
        }
        let size = |len: Option<usize>| len.map_or(0, |len| (key.len() + len) as u64);
        let old_size = size(old.and_then(|old| old.value).map(<[u8]>::len));
        let new_size = size(value.map(<[u8]>::len));
        live.journal
            .write(|| match (value, by) {
                (None, AppliedBy::Watch) => live.data.remove(key),
                _ => live.data.insert(key, Replica { revision, value }.to_bytes()),
            })
            .map_err(storage)?;
        state.stored = (state.stored + new_size).saturating_sub(old_size);
        Ok(())
    }
}

/// A key of a fleet's copy: the bucket revision, and the value it set
/// (`None`: that revision removed the key).
pub(crate) type Versioned = (u64, Option<Vec<u8>>);

/// Who applies a revision to a fleet's copy (see `SiteKv::apply`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum AppliedBy {
    Watch,
    Writer,
}

/// A key of a fleet's copy as stored: the bucket revision (8 bytes, little
/// endian), then 0 and the value, or 1 for a removal.
pub(super) struct Replica<'a> {
    revision: u64,
    pub(super) value: Option<&'a [u8]>,
}

impl<'a> Replica<'a> {
    pub(super) fn parse(stored: &'a [u8]) -> Option<Replica<'a>> {
        let (revision, rest) = stored.split_first_chunk::<8>()?;
        let value = match rest.split_first()? {
            (0, value) => Some(value),
            (_, _) => None,
        };
        Some(Replica { revision: u64::from_le_bytes(*revision), value })
    }

    fn to_bytes(&self) -> Vec<u8> {
        let mut stored = Vec::with_capacity(9 + self.value.map_or(0, <[u8]>::len));
        stored.extend_from_slice(&self.revision.to_le_bytes());
        match self.value {
            Some(value) => {
                stored.push(0);
                stored.extend_from_slice(value);
            }
            None => stored.push(1),
        }
        stored
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kv::KvStores;

    async fn w(kv: &SiteKv, kind: WriteKind, key: &[u8], value: &[u8]) -> Result<bool, KvError> {
        kv.write(kind, key.to_vec(), value.to_vec(), std::time::Instant::now())
    }

    #[tokio::test]
    async fn a_fleets_copy_keeps_the_newest_revision_whichever_comes_first() {
        use AppliedBy::*;
        let dir = tempfile::tempdir().unwrap();
        let mut stores = KvStores::new(dir.path().to_owned(), None).unwrap();
        stores.replica = true;
        let kv = stores.site("r.test", 64);
        kv.apply(b"k", Some(b"one"), 3, Watch).unwrap();
        assert_eq!(kv.get(b"k").unwrap().as_deref(), Some(&b"one"[..]));
        assert_eq!(kv.replicated(b"k").unwrap(), Some((3, Some(b"one".to_vec()))));
        // The writer's revision 7 before the watch's older 5: 5 changes nothing.
        kv.apply(b"k", Some(b"seven"), 7, Writer).unwrap();
        kv.apply(b"k", Some(b"five"), 5, Watch).unwrap();
        assert_eq!(kv.get(b"k").unwrap().as_deref(), Some(&b"seven"[..]));
        kv.apply(b"k", Some(b"seven"), 7, Watch).unwrap();
        // A removal by the writer is kept as a marker an older put cannot undo...
        kv.apply(b"k", None, 9, Writer).unwrap();
        kv.apply(b"k", Some(b"eight"), 8, Watch).unwrap();
        assert_eq!(kv.get(b"k").unwrap(), None);
        assert_eq!(kv.replicated(b"k").unwrap(), Some((9, None)), "the marker holds the revision to expect");
        // ...and the watch, in order, removes the key when it gets there.
        kv.apply(b"k", None, 9, Watch).unwrap();
        assert_eq!(kv.replicated(b"k").unwrap(), Some((9, None)), "the same revision is not applied twice");
        kv.apply(b"gone", Some(b"x"), 10, Watch).unwrap();
        kv.apply(b"gone", None, 11, Watch).unwrap();
        assert_eq!(kv.replicated(b"gone").unwrap(), None, "removed outright");
        kv.apply(b"e", Some(b""), 12, Watch).unwrap();
        assert_eq!(kv.get(b"e").unwrap().as_deref(), Some(&b""[..]), "an empty value is not a removal");
        assert!(matches!(w(&kv, WriteKind::Insert, b"k", b"v").await, Err(KvError::Fleet(_))), "a copy without its fleet takes no write");
        stores.close().await;
    }
}
