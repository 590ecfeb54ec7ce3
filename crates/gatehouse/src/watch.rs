//! Watches `--config` paths and signals when something under them may have changed. Files
//! are watched through their directory, so that editors' rename-and-replace is seen.
//!
//! Events come from the OS (inotify) as they happen; a burst of them (an editor's write,
//! rename and chmod) is settled into one reload here, in the engine's task, so that an idle
//! gateway has no thread waking on a tick to look for them.

use std::{path::PathBuf, time::Duration};

use notify::{RecommendedWatcher, RecursiveMode, Watcher as _};
use tokio::sync::mpsc;

/// How long the files must be quiet before a change is acted on, and the longest a change
/// waits for quiet: a file written without pause is still applied within a second, as the
/// standalone contract promises.
const SETTLE: Duration = Duration::from_millis(150);
const SETTLE_AT_MOST: Duration = Duration::from_millis(700);

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

/// Once a change has been signalled: waits until the files have been quiet for [`SETTLE`],
/// or for [`SETTLE_AT_MOST`] in all.
pub async fn settle(changes: &mut mpsc::Receiver<()>) {
    let give_up = tokio::time::Instant::now() + SETTLE_AT_MOST;
    let quiet_by = || (tokio::time::Instant::now() + SETTLE).min(give_up);
    while let Ok(Some(())) = tokio::time::timeout_at(quiet_by(), changes.recv()).await {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_burst_settles_once_quiet_and_an_endless_one_within_the_bound() {
        let (tx, mut rx) = mpsc::channel(1);
        let started = tokio::time::Instant::now();
        let burst = tokio::spawn(async move {
            for _ in 0..3 {
                let _ = tx.send(()).await;
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            tx
        });
        settle(&mut rx).await;
        let waited = started.elapsed();
        assert!(waited >= Duration::from_millis(100 + 150) && waited < SETTLE_AT_MOST, "{waited:?}");

        let tx = burst.await.unwrap();
        let started = tokio::time::Instant::now();
        let endless = tokio::spawn(async move {
            loop {
                if tx.send(()).await.is_err() {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        });
        let settled = tokio::time::timeout(Duration::from_secs(5), settle(&mut rx)).await;
        assert!(settled.is_ok(), "a file written without pause is applied anyway");
        assert_eq!(started.elapsed(), SETTLE_AT_MOST);
        endless.abort();
    }
}
