//! The drop folder: a `.wasm` copied into `DATA/sites/SITE/` is served, an
//! overwritten one is replaced, a deleted one stops being served. File
//! events that may change a module trigger a scan after a short quiet
//! period; a slow periodic scan covers anything the events miss.

use std::sync::Arc;
use std::time::Duration;

use notify::event::{AccessKind, AccessMode};
use notify::{EventKind, RecursiveMode, Watcher};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::{ModuleStore, Scan};

/// Writes settle for this long before a scan (a `cp` is many writes).
const QUIET: Duration = Duration::from_millis(150);
/// Scan anyway this often.
const PERIOD: Duration = Duration::from_secs(2);

/// Runs until dropped.
pub struct DropFolder {
    task: JoinHandle<()>,
    _watcher: Option<notify::RecommendedWatcher>,
}

impl DropFolder {
    pub fn start(store: Arc<ModuleStore>) -> DropFolder {
        let (events, mut wake) = mpsc::channel::<()>(1);
        let watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
            if event.is_ok_and(|event| may_change_a_module(event.kind)) {
                let _ = events.try_send(());
            }
        })
        .and_then(|mut watcher| watcher.watch(store.sites_dir(), RecursiveMode::Recursive).map(|()| watcher));
        let watcher = match watcher {
            Ok(watcher) => Some(watcher),
            Err(e) => {
                tracing::warn!("file events unavailable, scanning every {PERIOD:?}: {e}");
                None
            }
        };
        let task = tokio::spawn(async move {
            loop {
                if let Ok(Some(())) = tokio::time::timeout(PERIOD, wake.recv()).await {
                    tokio::time::sleep(QUIET).await;
                    while wake.try_recv().is_ok() {}
                }
                store.rescan(Scan::DropFolder).await;
            }
        });
        DropFolder { task, _watcher: watcher }
    }
}

/// Whether a file event may mean a module was added, changed or removed.
/// Opening or reading a file or folder does not: the scan itself opens
/// every site's folder, and waking on that would scan again and again,
/// one `QUIET` apart, for as long as the node runs.
fn may_change_a_module(kind: EventKind) -> bool {
    match kind {
        EventKind::Access(AccessKind::Close(AccessMode::Write)) => true,
        EventKind::Access(_) => false,
        _ => true,
    }
}

impl DropFolder {
    /// Stops watching and waits until no scan is running.
    pub async fn stop(self) {
        self.task.abort();
        let _ = (&mut { self }.task).await;
    }
}

impl Drop for DropFolder {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[cfg(test)]
mod tests {
    use notify::event::{CreateKind, DataChange, ModifyKind, RemoveKind, RenameMode};

    use super::*;

    #[test]
    fn writes_creations_renames_and_removals_wake_the_scan_opens_and_reads_do_not() {
        for kind in [
            EventKind::Create(CreateKind::File),
            EventKind::Modify(ModifyKind::Data(DataChange::Any)),
            EventKind::Modify(ModifyKind::Name(RenameMode::To)),
            EventKind::Remove(RemoveKind::File),
            EventKind::Access(AccessKind::Close(AccessMode::Write)),
            EventKind::Any,
        ] {
            assert!(may_change_a_module(kind), "{kind:?}");
        }
        for kind in [
            EventKind::Access(AccessKind::Open(AccessMode::Any)),
            EventKind::Access(AccessKind::Close(AccessMode::Read)),
            EventKind::Access(AccessKind::Read),
        ] {
            assert!(!may_change_a_module(kind), "{kind:?}");
        }
    }
}
