//! etcd membership: list `/ponder/v1/<cluster>/`, then watch from the next revision.
//!
//! When the watch stream breaks (etcd restarted, network cut) the task reconnects with
//! backoff and resyncs with a fresh list. Until then the last known membership stays
//! in the registry, so the cluster keeps serving while etcd is down; members that died
//! meanwhile are ejected by routing on their first failed call.

use super::{fetch_info, Discovery, EtcdConfig};
use crate::member::{MemberRecord, Registry, Role};
use etcd_client::{EventType, GetOptions, WatchOptions};
use std::collections::HashSet;
use std::time::Duration;

/// `/ponder/v1/<cluster>/`: every member's key lives under it.
pub fn key_prefix(cluster: &str) -> String {
    format!("/ponder/v1/{cluster}/")
}

pub struct EtcdDiscovery {
    pub etcd: EtcdConfig,
    pub cluster: String,
}

impl Discovery for EtcdDiscovery {
    fn kind(&self) -> &'static str {
        "etcd"
    }

    async fn run(self, registry: Registry) {
        let prefix = key_prefix(&self.cluster);
        let mut backoff = Duration::from_millis(200);
        loop {
            match sync_and_watch(&self.etcd, &prefix, &registry).await {
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

fn parse(key: &str, value: &str, prefix: &str) -> Option<MemberRecord> {
    let rest = key.strip_prefix(prefix)?;
    let (role, id) = rest.split_once('/')?;
    let record: MemberRecord = serde_json::from_str(value).ok()?;
    (Role::parse(role) == Some(record.role) && record.instance_id == id).then_some(record)
}

fn apply(registry: &Registry, record: MemberRecord) {
    match registry.upsert(record) {
        Ok(Some(m)) => {
            tracing::info!(role = m.record.role.as_str(), instance = %m.record.instance_id, address = %m.record.address, "member joined");
            fetch_info(registry.clone(), m);
        }
        Ok(None) => {}
        Err(e) => tracing::warn!(error = %e, "ignoring a member with a bad address"),
    }
}

async fn sync_and_watch(
    etcd: &EtcdConfig,
    prefix: &str,
    registry: &Registry,
) -> anyhow::Result<()> {
    let mut client = etcd.connect().await?;
    let listing = client
        .get(prefix, Some(GetOptions::new().with_prefix()))
        .await?;
    let revision = listing.header().map(|h| h.revision()).unwrap_or(0);
    let mut seen = HashSet::new();
    for kv in listing.kvs() {
        let (Ok(k), Ok(v)) = (kv.key_str(), kv.value_str()) else {
            continue;
        };
        match parse(k, v, prefix) {
            Some(r) => {
                seen.insert(r.instance_id.clone());
                apply(registry, r);
            }
            None => tracing::warn!(key = k, "ignoring a malformed member record"),
        }
    }
    for gone in registry.all() {
        if gone.record.role != Role::Orchestrator && !seen.contains(&gone.record.instance_id) {
            tracing::info!(instance = %gone.record.instance_id, "member left while the watch was down");
        }
    }
    registry.retain(&seen);
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
                    if let Some(r) = kv.value_str().ok().and_then(|v| parse(key, v, prefix)) {
                        apply(registry, r);
                    }
                }
                EventType::Delete => {
                    if let Some(id) = key
                        .strip_prefix(prefix)
                        .and_then(|r| r.split_once('/'))
                        .map(|(_, id)| id)
                    {
                        if registry.remove(id).is_some() {
                            tracing::info!(instance = id, "member left");
                        }
                    }
                }
            }
        }
    }
    Ok(())
}
