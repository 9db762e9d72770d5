//! The API keys in force, reloadable without a restart.
//!
//! Why: keys are rotated (a leaked one removed, a new client added) far more often than
//! an orchestrator should restart. The store re-reads `--api-keys-file` on SIGHUP and
//! whenever the file's modification time changes (a Kubernetes Secret mounted as a file
//! is swapped in place), keeping the inline keys (`PONDER_API_KEYS`). A file that no
//! longer parses is reported and the keys in force are kept, so a typo never opens the
//! API or locks every client out.

use super::api_keys::ApiKeys;
use ponder_cluster::secret::Secret;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

/// How often the key file's modification time is looked at.
pub const POLL_EVERY: Duration = Duration::from_secs(2);

pub struct KeyStore {
    current: RwLock<Arc<ApiKeys>>,
    file: Option<PathBuf>,
    inline: Vec<Secret>,
}

fn modified(path: &Path) -> Option<SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}

impl KeyStore {
    /// Reads the keys; None when none are configured (the API is open: keys cannot
    /// be turned on later without a restart).
    pub fn load(file: Option<&Path>, inline: &[Secret]) -> anyhow::Result<Option<Arc<Self>>> {
        let Some(keys) = ApiKeys::load(file, inline)? else {
            return Ok(None);
        };
        Ok(Some(Arc::new(Self {
            current: RwLock::new(Arc::new(keys)),
            file: file.map(Path::to_path_buf),
            inline: inline.to_vec(),
        })))
    }

    /// The keys in force.
    pub fn keys(&self) -> Arc<ApiKeys> {
        self.current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Re-reads the key file; on error the keys in force stay.
    pub fn reload(&self) -> anyhow::Result<usize> {
        let fresh = ApiKeys::load(self.file.as_deref(), &self.inline)?
            .ok_or_else(|| anyhow::anyhow!("the reloaded key file holds no key"))?;
        let n = fresh.len();
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(fresh);
        Ok(n)
    }

    fn reload_logged(&self, why: &str) {
        match self.reload() {
            Ok(n) => tracing::info!(keys = n, why, "API keys reloaded"),
            Err(e) => {
                tracing::error!(error = %e, why, "API keys not reloaded; the old keys stay in force")
            }
        }
    }

    /// Reloads on SIGHUP and when the key file changes, until the store is dropped.
    /// Call inside a tokio runtime.
    pub fn watch(self: &Arc<Self>) {
        let weak = Arc::downgrade(self);
        let file = self.file.clone();
        tokio::spawn(async move {
            let mut hangup = ponder_cluster::telemetry::Hangup::new();
            let mut seen = file.as_deref().and_then(modified);
            loop {
                let signalled = tokio::select! {
                    _ = tokio::time::sleep(POLL_EVERY) => false,
                    _ = hangup.recv() => true,
                };
                let Some(store) = weak.upgrade() else { return };
                let now = file.as_deref().and_then(modified);
                if signalled {
                    store.reload_logged("SIGHUP");
                } else if now != seen {
                    store.reload_logged("the key file changed");
                }
                seen = now;
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tonic::metadata::MetadataMap;

    fn bearer(key: &str) -> MetadataMap {
        let mut md = MetadataMap::new();
        md.insert("authorization", format!("Bearer {key}").parse().unwrap());
        md
    }

    #[tokio::test]
    async fn a_changed_key_file_is_reloaded_and_a_broken_one_keeps_the_old_keys() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keys");
        let (old, new) = ("a".repeat(20), "b".repeat(20));
        std::fs::write(&path, format!("alice:{old}\n")).unwrap();
        let store = KeyStore::load(Some(&path), &[]).unwrap().unwrap();
        assert!(store.keys().check(&bearer(&old)).is_ok());
        std::fs::write(&path, format!("alice:{new}\n")).unwrap();
        assert_eq!(store.reload().unwrap(), 1);
        assert!(store.keys().check(&bearer(&old)).is_err());
        assert_eq!(store.keys().check(&bearer(&new)).unwrap(), "alice");
        std::fs::write(&path, "alice:short\n").unwrap();
        assert!(store.reload().is_err());
        assert_eq!(store.keys().check(&bearer(&new)).unwrap(), "alice", "kept");
    }
}
