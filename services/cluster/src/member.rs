//! Members of the cluster and the live membership table.
//!
//! The table is a `DashMap` written by one discovery task and read by every query's
//! routing decision; per-member load and health are atomics, so routing never waits
//! on a lock held across an await.
//!
//! With a cluster CA configured the registry dials every member over TLS (`https://`),
//! verifying the member's certificate and presenting this node's own (mTLS).

use crate::tls::PeerTls;
use dashmap::DashMap;
use ponder_proto::v1::ModelInfoResponse;
use serde::{Deserialize, Serialize};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};
use tonic::transport::Channel;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Generator,
    Verifier,
    Orchestrator,
}

impl Role {
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Generator => "generator",
            Self::Verifier => "verifier",
            Self::Orchestrator => "orchestrator",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "generator" => Some(Self::Generator),
            "verifier" => Some(Self::Verifier),
            "orchestrator" => Some(Self::Orchestrator),
            _ => None,
        }
    }
}

/// What a node publishes about itself (the JSON value of its etcd key).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberRecord {
    pub role: Role,
    pub instance_id: String,
    /// host:port reachable by the orchestrator.
    pub address: String,
    pub model_id: String,
    /// Requests the node accepts before answering RESOURCE_EXHAUSTED.
    pub capacity: u32,
}

/// A member with its channel and live routing state.
#[derive(Debug)]
pub struct Member {
    pub record: MemberRecord,
    pub channel: Channel,
    /// Filled from the node's ModelInfo RPC; the member is routable once set.
    pub info: OnceLock<ModelInfoResponse>,
    pub in_flight: AtomicU32,
    pub requests: AtomicU64,
    pub failures: AtomicU64,
    consecutive_failures: AtomicU32,
    /// Milliseconds since `epoch` until which the member is ejected.
    ejected_until_ms: AtomicU64,
    epoch: Instant,
}

/// Longest time a failing member stays ejected before the next probe.
pub const MAX_EJECTION: Duration = Duration::from_secs(30);
pub const FIRST_EJECTION: Duration = Duration::from_millis(500);

impl Member {
    /// A member dialed in plaintext, or over TLS with `tls`.
    pub fn new(record: MemberRecord, tls: Option<&PeerTls>) -> anyhow::Result<Self> {
        let scheme = if tls.is_some() { "https" } else { "http" };
        let mut endpoint = Channel::from_shared(format!("{scheme}://{}", record.address))?;
        if let Some(tls) = tls {
            endpoint = endpoint.tls_config(tls.config.clone())?;
        }
        let channel = endpoint
            .connect_timeout(Duration::from_secs(2))
            .tcp_nodelay(true)
            .http2_keep_alive_interval(Duration::from_secs(10))
            .keep_alive_timeout(Duration::from_secs(5))
            .connect_lazy();
        Ok(Self {
            record,
            channel,
            info: OnceLock::new(),
            in_flight: AtomicU32::new(0),
            requests: AtomicU64::new(0),
            failures: AtomicU64::new(0),
            consecutive_failures: AtomicU32::new(0),
            ejected_until_ms: AtomicU64::new(0),
            epoch: Instant::now(),
        })
    }

    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    pub fn is_ejected(&self) -> bool {
        self.now_ms() < self.ejected_until_ms.load(Ordering::Relaxed)
    }

    /// Ejects the member for a time that doubles with each consecutive failure.
    pub fn record_failure(&self) {
        self.failures.fetch_add(1, Ordering::Relaxed);
        let n = self
            .consecutive_failures
            .fetch_add(1, Ordering::Relaxed)
            .min(16);
        let span = (FIRST_EJECTION * 2u32.pow(n)).min(MAX_EJECTION);
        self.ejected_until_ms
            .store(self.now_ms() + span.as_millis() as u64, Ordering::Relaxed);
    }

    pub fn record_success(&self) {
        self.consecutive_failures.store(0, Ordering::Relaxed);
        self.ejected_until_ms.store(0, Ordering::Relaxed);
    }

    pub fn health(&self) -> &'static str {
        if self.info.get().is_none() {
            "connecting"
        } else if self.is_ejected() {
            "ejected"
        } else {
            "serving"
        }
    }
}

/// Holds one unit of a member's in-flight count while a call runs.
pub struct InFlight(Arc<Member>);

impl InFlight {
    pub fn new(m: Arc<Member>) -> Self {
        m.in_flight.fetch_add(1, Ordering::Relaxed);
        m.requests.fetch_add(1, Ordering::Relaxed);
        Self(m)
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The live membership, keyed by instance id.
#[derive(Debug, Default, Clone)]
pub struct Registry {
    members: Arc<DashMap<String, Arc<Member>>>,
    tls: Option<Arc<PeerTls>>,
}

impl Registry {
    /// Members dialed in plaintext.
    pub fn new() -> Self {
        Self::default()
    }

    /// Members dialed over TLS with `tls` (or plaintext when `None`).
    pub fn with_tls(tls: Option<PeerTls>) -> Self {
        Self {
            members: Default::default(),
            tls: tls.map(Arc::new),
        }
    }

    /// Adds or replaces a member (a changed record gets a fresh channel). Returns the
    /// member if it is new or changed, so the caller can fetch its model info.
    pub fn upsert(&self, record: MemberRecord) -> anyhow::Result<Option<Arc<Member>>> {
        if let Some(m) = self.members.get(&record.instance_id) {
            if m.record == record {
                return Ok(None);
            }
        }
        let m = Arc::new(Member::new(record, self.tls.as_deref())?);
        self.members.insert(m.record.instance_id.clone(), m.clone());
        Ok(Some(m))
    }

    pub fn remove(&self, instance_id: &str) -> Option<Arc<Member>> {
        self.members.remove(instance_id).map(|(_, m)| m)
    }

    /// Keeps only the members whose ids are in `keep`.
    pub fn retain(&self, keep: &std::collections::HashSet<String>) {
        self.members.retain(|id, _| keep.contains(id));
    }

    pub fn members(&self, role: Role) -> Vec<Arc<Member>> {
        let mut v: Vec<_> = self
            .members
            .iter()
            .filter(|m| m.record.role == role)
            .map(|m| m.value().clone())
            .collect();
        v.sort_by(|a, b| a.record.instance_id.cmp(&b.record.instance_id));
        v
    }

    pub fn all(&self) -> Vec<Arc<Member>> {
        let mut v: Vec<_> = self.members.iter().map(|m| m.value().clone()).collect();
        v.sort_by(|a, b| {
            (a.record.role.as_str(), &a.record.instance_id)
                .cmp(&(b.record.role.as_str(), &b.record.instance_id))
        });
        v
    }

    /// Members of `role` that have answered ModelInfo.
    pub fn ready(&self, role: Role) -> usize {
        self.members(role)
            .iter()
            .filter(|m| m.info.get().is_some())
            .count()
    }
}
