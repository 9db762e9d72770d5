//! Files that are read again when they change: TLS certificates, keys and CAs rotated
//! by cert-manager or the chart's re-issue, which rewrite the mounted Secret.
//!
//! Why polling modification times rather than inotify: mounted Secrets change through a
//! symlink swap that inotify on the files themselves misses, and a 2 s poll of a few
//! `stat`s costs nothing. SIGHUP forces a reload at once.

use std::path::PathBuf;
use std::time::{Duration, SystemTime};
use tokio::sync::watch;

/// How often the files' modification times are checked.
pub const POLL_EVERY: Duration = Duration::from_secs(2);

/// What [`watch_files`] keeps current.
pub struct Watched<T> {
    pub value: watch::Receiver<T>,
    /// Successful reloads so far.
    pub reloads: watch::Receiver<u64>,
}

fn modified(files: &[PathBuf]) -> Vec<Option<SystemTime>> {
    files
        .iter()
        .map(|f| std::fs::metadata(f).and_then(|m| m.modified()).ok())
        .collect()
}

/// `load()` now, and again whenever one of `files` changes or the process gets SIGHUP;
/// each success is published. A load that fails (a half-written file, a key that does
/// not match its certificate) is logged with `what` and skipped, so the last good value
/// stays in service. The task ends when every receiver is gone.
pub fn watch_files<T, L>(
    files: Vec<PathBuf>,
    what: &'static str,
    load: L,
) -> anyhow::Result<Watched<T>>
where
    T: Send + Sync + 'static,
    L: Fn() -> anyhow::Result<T> + Send + 'static,
{
    let (tx, value) = watch::channel(load()?);
    let (count_tx, reloads) = watch::channel(0u64);
    tokio::spawn(async move {
        let mut hangup = crate::telemetry::Hangup::new();
        let mut seen = modified(&files);
        loop {
            let signalled = tokio::select! {
                _ = tokio::time::sleep(POLL_EVERY) => false,
                _ = hangup.recv() => true,
                _ = tx.closed() => return,
            };
            let now = modified(&files);
            if !signalled && now == seen {
                continue;
            }
            seen = now;
            match load() {
                Ok(v) => {
                    tracing::info!(what, "reloaded");
                    let _ = tx.send(v);
                    count_tx.send_modify(|n| *n += 1);
                }
                Err(e) => tracing::error!(
                    what,
                    error = %e,
                    "files changed but do not load; keeping the previous ones"
                ),
            }
        }
    });
    Ok(Watched { value, reloads })
}
