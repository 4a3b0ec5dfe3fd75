//! The drop folder: a `.wasm` copied into `DATA/sites/SITE/` is served, an
//! overwritten one is replaced, a deleted one stops being served. File
//! events trigger a scan after a short quiet period; a slow periodic scan
//! covers anything the events miss.

use std::sync::Arc;
use std::time::Duration;

use notify::{RecursiveMode, Watcher};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::ModuleStore;

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
            if event.is_ok() {
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
                store.rescan().await;
            }
        });
        DropFolder { task, _watcher: watcher }
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
