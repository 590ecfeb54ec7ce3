//! Watches `--config` paths and signals when something under them may have changed. Files
//! are watched through their directory, so that editors' rename-and-replace is seen.
//!
//! Events come from the OS (inotify) as they happen; a burst of them (an editor's write,
//! rename and chmod) is settled into one reload here, in the engine's task, so that an idle
//! gateway has no thread waking on a tick to look for them.

use std::{path::PathBuf, time::Duration};

use notify::{RecommendedWatcher, RecursiveMode, Watcher as _};
use tokio::sync::mpsc;

/// How long the files must be quiet before a change is acted on.
const SETTLE: Duration = Duration::from_millis(150);

pub type Watcher = RecommendedWatcher;

/// Starts watching; the returned watcher must be kept alive. A message means that
/// something may have changed since the last one was taken.
pub fn watch(paths: &[PathBuf]) -> notify::Result<(Watcher, mpsc::Receiver<()>)> {
    let (tx, rx) = mpsc::channel(1);
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| match event {
        // A full channel already holds a pending change, which covers this one.
        Ok(e) if !e.kind.is_access() => {
            let _ = tx.try_send(());
        }
        Ok(_) => {}
        Err(e) => {
            tracing::warn!("watching configuration files: {e}");
            let _ = tx.try_send(());
        }
    })?;
    for path in paths {
        let absolute = std::fs::canonicalize(path).unwrap_or_else(|_| path.clone());
        if absolute.is_dir() {
            watcher.watch(&absolute, RecursiveMode::Recursive)?;
        } else {
            let dir = absolute.parent().map(PathBuf::from).unwrap_or_else(|| PathBuf::from("."));
            watcher.watch(&dir, RecursiveMode::NonRecursive)?;
        }
    }
    Ok((watcher, rx))
}

/// Once a change has been signalled: waits until the files have been quiet for [`SETTLE`].
pub async fn settle(changes: &mut mpsc::Receiver<()>) {
    while let Ok(Some(())) = tokio::time::timeout(SETTLE, changes.recv()).await {}
}
