//! etcd membership: list `/ponder/v1/<cluster>/`, then watch from the next revision.
//!
//! When the watch stream breaks (etcd restarted, network cut) the task reconnects with
//! backoff and resyncs with a fresh list. Until then the last known membership stays
//! in the registry, so the cluster keeps serving while etcd is down; members that died
//! meanwhile are ejected by routing on their first failed call.

use super::{Discovery, EtcdConfig};
use crate::member::{key_prefix, MemberKey, MemberRecord};
use crate::membership::Registry;
use etcd_client::{EventType, GetOptions, WatchOptions};
use std::collections::HashSet;
use std::time::Duration;

pub struct EtcdDiscovery {
    pub etcd: EtcdConfig,
    pub cluster: String,
    /// Where `ponder_etcd_watch_up` is set: 1 while the watch runs, 0 while etcd is
    /// unreachable (the last membership is kept meanwhile).
    pub metrics: Option<crate::metrics::Metrics>,
}

impl Discovery for EtcdDiscovery {
    fn kind(&self) -> &'static str {
        "etcd"
    }

    async fn run(self, registry: Registry) {
        let prefix = key_prefix(&self.cluster);
        let mut backoff = Duration::from_millis(200);
        let up = |v: i64| {
            if let Some(m) = &self.metrics {
                m.etcd_watch_up.set(v);
            }
        };
        loop {
            let result = sync_and_watch(&self.etcd, &self.cluster, &prefix, &registry, &up).await;
            up(0);
            match result {
                Ok(()) => tracing::warn!("etcd watch ended; resyncing"),
                Err(e) => {
                    tracing::warn!(error = %e, "etcd unavailable; keeping the last membership")
                }
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_secs(5));
        }
    }
}

/// The record under `key`, if the key is one of `cluster`'s and names the same member
/// as the record.
fn parse(key: &str, value: &str, cluster: &str) -> Option<MemberRecord> {
    let key: MemberKey = key.parse().ok()?;
    let record: MemberRecord = serde_json::from_str(value).ok()?;
    (record.key(cluster) == key).then_some(record)
}

async fn sync_and_watch(
    etcd: &EtcdConfig,
    cluster: &str,
    prefix: &str,
    registry: &Registry,
    up: &(dyn Fn(i64) + Sync),
) -> anyhow::Result<()> {
    let mut client = etcd.connect().await?;
    let listing = client
        .get(prefix, Some(GetOptions::new().with_prefix()))
        .await?;
    up(1);
    let revision = listing.header().map(|h| h.revision()).unwrap_or(0);
    let mut seen = HashSet::new();
    for kv in listing.kvs() {
        let (Ok(k), Ok(v)) = (kv.key_str(), kv.value_str()) else {
            continue;
        };
        match parse(k, v, cluster) {
            Some(r) => {
                seen.insert(r.instance_id.clone());
                registry.upsert(r);
            }
            None => tracing::warn!(key = k, "ignoring a malformed member record"),
        }
    }
    // Members that left while the watch was down.
    registry.retain(seen);
    let mut stream = client
        .watch(
            prefix,
            Some(
                WatchOptions::new()
                    .with_prefix()
                    .with_start_revision(revision + 1),
            ),
        )
        .await?;
    while let Some(resp) = stream.message().await? {
        if resp.canceled() {
            anyhow::bail!("watch cancelled: {}", resp.cancel_reason());
        }
        for ev in resp.events() {
            let Some(kv) = ev.kv() else { continue };
            let Ok(key) = kv.key_str() else { continue };
            match ev.event_type() {
                EventType::Put => {
                    if let Some(r) = kv.value_str().ok().and_then(|v| parse(key, v, cluster)) {
                        registry.upsert(r);
                    }
                }
                EventType::Delete => match key.parse::<MemberKey>() {
                    Ok(k) if k.cluster == cluster => registry.remove(&k.instance),
                    _ => tracing::warn!(key, "ignoring a delete of a malformed key"),
                },
            }
        }
    }
    Ok(())
}
