//! Watches `--config` paths and signals when something under them may have changed. Files
//! are watched through their directory, so that editors' rename-and-replace is seen.

use std::{path::PathBuf, time::Duration};

use notify::RecursiveMode;
use notify_debouncer_full::{DebounceEventResult, Debouncer, RecommendedCache, new_debouncer};
use tokio::sync::mpsc;

pub type Watcher = Debouncer<notify::RecommendedWatcher, RecommendedCache>;

/// Starts watching; the returned watcher must be kept alive. Each debounced burst of events
/// becomes one message.
pub fn watch(paths: &[PathBuf]) -> notify::Result<(Watcher, mpsc::Receiver<()>)> {
    let (tx, rx) = mpsc::channel(1);
    let mut debouncer = new_debouncer(Duration::from_millis(150), None, move |result: DebounceEventResult| {
        match result {
            Ok(events) if events.iter().any(|e| !e.kind.is_access()) => {
                // A full channel already holds a pending reload, which will see this change.
                let _ = tx.try_send(());
            }
            Ok(_) => {}
            Err(errors) => {
                for e in errors {
                    tracing::warn!("watching configuration files: {e}");
                }
                let _ = tx.try_send(());
            }
        }
    })?;
    for path in paths {
        let absolute = std::fs::canonicalize(path).unwrap_or_else(|_| path.clone());
        if absolute.is_dir() {
            debouncer.watch(&absolute, RecursiveMode::Recursive)?;
        } else {
            let dir = absolute.parent().map(PathBuf::from).unwrap_or_else(|| PathBuf::from("."));
            debouncer.watch(&dir, RecursiveMode::NonRecursive)?;
        }
    }
    Ok((debouncer, rx))
}
