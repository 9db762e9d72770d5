//! A node's registration in etcd: its key under a lease, kept alive at half the TTL.
//!
//! If the node dies, the lease expires and etcd deletes the key (orchestrators see a
//! delete event). If etcd restarts or the lease is lost, the keeper grants a new lease
//! and writes the key again. On shutdown the lease is revoked, so the member leaves at
//! once instead of after the TTL.

use crate::discovery::EtcdConfig;
use crate::member::MemberRecord;
use etcd_client::PutOptions;
use std::time::Duration;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

pub const DEFAULT_TTL_SECS: i64 = 10;

pub struct Registration {
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<()>,
}

impl Registration {
    /// Starts registering `record`; keeps trying while etcd is unreachable.
    pub fn start(etcd: EtcdConfig, cluster: String, record: MemberRecord, ttl: i64) -> Self {
        let (stop_tx, mut stop_rx) = oneshot::channel();
        let key = record.key(&cluster).to_string();
        let value = serde_json::to_string(&record).expect("a member record serialises");
        let task = tokio::spawn(async move {
            let mut backoff = Duration::from_millis(200);
            loop {
                match hold(&etcd, &key, &value, ttl, &mut stop_rx).await {
                    Ok(true) => return,
                    Ok(false) => {}
                    Err(e) => tracing::warn!(error = %e, key, "etcd registration lost; retrying"),
                }
                tokio::select! {
                    _ = tokio::time::sleep(backoff) => {}
                    _ = &mut stop_rx => return,
                }
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
        });
        Self {
            stop: Some(stop_tx),
            task,
        }
    }

    /// Revokes the lease (the member leaves now) and stops the keeper.
    pub async fn revoke(mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        let _ = tokio::time::timeout(Duration::from_secs(3), &mut self.task).await;
    }
}

/// Registers and keeps the lease alive. Ok(true): stopped and revoked; Ok(false) or
/// Err: the lease or connection was lost.
async fn hold(
    etcd: &EtcdConfig,
    key: &str,
    value: &str,
    ttl: i64,
    stop: &mut oneshot::Receiver<()>,
) -> anyhow::Result<bool> {
    let mut client = etcd.connect().await?;
    let lease = client.lease_grant(ttl, None).await?.id();
    client
        .put(key, value, Some(PutOptions::new().with_lease(lease)))
        .await?;
    tracing::info!(key, lease, ttl, "registered in etcd");
    let (mut keeper, mut responses) = client.lease_keep_alive(lease).await?;
    let mut tick = tokio::time::interval(Duration::from_millis((ttl as u64 * 1000 / 2).max(500)));
    loop {
        tokio::select! {
            _ = &mut *stop => {
                let _ = client.lease_revoke(lease).await;
                tracing::info!(key, "lease revoked");
                return Ok(true);
            }
            _ = tick.tick() => keeper.keep_alive().await?,
            msg = responses.message() => match msg? {
                Some(r) if r.ttl() > 0 => {}
                _ => return Ok(false),
            },
        }
    }
}
