//! Members of the cluster: what a node publishes ([`MemberRecord`]), the name it goes by
//! ([`MemberKey`]), and a member as routing sees it ([`Member`]).
//!
//! The table of members is owned by the membership actor ([`crate::membership`]);
//! per-call load and health are atomics inside each `Arc<Member>`, shared by every
//! snapshot, so the hot path of routing takes no round trip and no lock.
//!
//! With a cluster CA configured every member is dialed over TLS (`https://`), verifying
//! the member's certificate and presenting this node's own (mTLS).

use crate::member_conn::{MemberConn, TlsDial};
use crate::tls::PeerTls;
use ponder_proto::v1::ModelInfoResponse;
use rustls::pki_types::ServerName;
use serde::{Deserialize, Serialize};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

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

/// The one name of a member: in etcd keys (`/ponder/v1/<cluster>/<role>/<instance>`),
/// logs and metric labels.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct MemberKey {
    pub cluster: String,
    pub role: Role,
    pub instance: String,
}

/// Every key of `cluster` starts with this.
pub fn key_prefix(cluster: &str) -> String {
    format!("/ponder/v1/{cluster}/")
}

impl std::fmt::Display for MemberKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}{}/{}",
            key_prefix(&self.cluster),
            self.role.as_str(),
            self.instance
        )
    }
}

impl std::str::FromStr for MemberKey {
    type Err = String;

    fn from_str(key: &str) -> Result<Self, String> {
        let bad = || format!("{key:?} is not /ponder/v1/<cluster>/<role>/<instance>");
        let rest = key.strip_prefix("/ponder/v1/").ok_or_else(bad)?;
        let mut parts = rest.splitn(3, '/');
        let (Some(cluster), Some(role), Some(instance)) =
            (parts.next(), parts.next(), parts.next())
        else {
            return Err(bad());
        };
        let role = Role::parse(role).ok_or_else(bad)?;
        if cluster.is_empty() || instance.is_empty() || instance.contains('/') {
            return Err(bad());
        }
        Ok(Self {
            cluster: cluster.into(),
            role,
            instance: instance.into(),
        })
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

impl MemberRecord {
    /// This member's key in `cluster`.
    pub fn key(&self, cluster: &str) -> MemberKey {
        MemberKey {
            cluster: cluster.into(),
            role: self.role,
            instance: self.instance_id.clone(),
        }
    }
}

/// A member with its channel and live routing state.
#[derive(Debug)]
pub struct Member {
    pub record: MemberRecord,
    /// The connection its calls go over ([`crate::member_conn`]).
    conn: MemberConn,
    /// The stable hash of the instance id that rendezvous routing mixes with each
    /// call's key (computed once, not per call).
    pub id_hash: u64,
    /// Filled from the node's ModelInfo RPC; the member is routable once set.
    pub info: OnceLock<ModelInfoResponse>,
    pub in_flight: AtomicU32,
    pub requests: AtomicU64,
    pub failures: AtomicU64,
    consecutive_failures: AtomicU32,
    /// Calls in a row that a hedged copy on another member answered first.
    consecutive_outpaced: AtomicU32,
    /// Milliseconds since `epoch` until which the member is ejected.
    ejected_until_ms: AtomicU64,
    /// Milliseconds since `epoch` of the last failed call.
    last_failure_ms: AtomicU64,
    /// The node's own queue depth (requests accepted and not yet answered, from every
    /// orchestrator), as its last answer reported it ([`QUEUE_DEPTH_HEADER`]), and when.
    reported_queue: AtomicU32,
    reported_at_ms: AtomicU64,
    epoch: Instant,
}

/// Response metadata in which a worker reports its queue depth (requests accepted and
/// not yet answered) after each call; orchestrators read it as load.
pub const QUEUE_DEPTH_HEADER: &str = "x-ponder-queue-depth";

/// How long a reported queue depth stands for the node's load; older reports are
/// ignored (the node has had no call from this orchestrator since).
pub const QUEUE_REPORT_TTL: Duration = Duration::from_secs(5);

/// How often the orchestrator pings each member's connection, and how long a ping may
/// go unanswered before the connection (and its calls) fail.
pub const KEEP_ALIVE_INTERVAL: Duration = Duration::from_secs(2);
pub const KEEP_ALIVE_TIMEOUT: Duration = Duration::from_secs(2);

/// Longest time a failing member stays ejected before the next probe.
pub const MAX_EJECTION: Duration = Duration::from_secs(30);
pub const FIRST_EJECTION: Duration = Duration::from_millis(500);
/// Calls in a row a hedged copy must win before the member they were sent to is
/// ejected as slow.
pub const OUTPACED_TO_EJECT: u32 = 2;

impl Member {
    /// A member dialed in plaintext, or over TLS with `tls`. Nothing is dialed until
    /// its first call.
    pub fn new(record: MemberRecord, tls: Option<&PeerTls>) -> anyhow::Result<Self> {
        let dial = match tls {
            None => None,
            Some(tls) => {
                let name = match &tls.server_name {
                    Some(name) => name.clone(),
                    None => host_of(&record.address).to_string(),
                };
                let server_name = ServerName::try_from(name.clone()).map_err(|e| {
                    anyhow::anyhow!("{name:?} cannot name a TLS server (--tls-server-name): {e}")
                })?;
                Some(TlsDial {
                    config: tls.config.clone(),
                    server_name,
                })
            }
        };
        // HTTP/2 pings every 2 s, also while idle, answered within 2 s: a member that is
        // cut off (alive, still holding its etcd lease, but unreachable) fails its calls
        // within about 4 s instead of hanging until the query's deadline, and they are
        // retried on another member. The pings cost a few bytes per member per 2 s.
        let conn = MemberConn::new(&record.address, dial)?;
        Ok(Self {
            id_hash: ponder_search::solve::hash(&record.instance_id),
            record,
            conn,
            info: OnceLock::new(),
            in_flight: AtomicU32::new(0),
            requests: AtomicU64::new(0),
            failures: AtomicU64::new(0),
            consecutive_failures: AtomicU32::new(0),
            consecutive_outpaced: AtomicU32::new(0),
            ejected_until_ms: AtomicU64::new(0),
            last_failure_ms: AtomicU64::new(0),
            reported_queue: AtomicU32::new(0),
            reported_at_ms: AtomicU64::new(0),
            epoch: Instant::now(),
        })
    }

    /// The connection a call to this member goes over: wrap it in the role's client,
    /// e.g. `GeneratorClient::new(member.calls())`.
    pub fn calls(&self) -> MemberConn {
        self.conn.clone()
    }

    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    pub fn is_ejected(&self) -> bool {
        self.now_ms() < self.ejected_until_ms.load(Ordering::Relaxed)
    }

    /// Its last call failed, less than [`MAX_EJECTION`] ago, and none has succeeded
    /// since. Ejection is for routing calls within a model and ends quickly, so that a
    /// member is probed again soon; choosing a query's *model* needs the longer view
    /// (`models::served`), or every probe would cost a query a wait for a dead model.
    pub fn is_failing(&self) -> bool {
        self.consecutive_failures.load(Ordering::Relaxed) > 0
            && self.now_ms()
                < self.last_failure_ms.load(Ordering::Relaxed) + MAX_EJECTION.as_millis() as u64
    }

    /// Ejects the member for a time that doubles with each consecutive failure.
    pub fn record_failure(&self) {
        self.failures.fetch_add(1, Ordering::Relaxed);
        self.last_failure_ms.store(self.now_ms(), Ordering::Relaxed);
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
        self.consecutive_outpaced.store(0, Ordering::Relaxed);
        self.ejected_until_ms.store(0, Ordering::Relaxed);
    }

    /// Records that a hedged copy of a call to this member, sent later to another
    /// member, answered first; true when that has happened [`OUTPACED_TO_EJECT`] times
    /// in a row (then the count starts again): the member is slow, not just its call
    /// large, and is ejected like a failing one (latency-based outlier ejection).
    pub fn record_outpaced(&self) -> bool {
        let n = self.consecutive_outpaced.fetch_add(1, Ordering::Relaxed) + 1;
        if n >= OUTPACED_TO_EJECT {
            self.consecutive_outpaced.store(0, Ordering::Relaxed);
            return true;
        }
        false
    }

    /// Records the queue depth a response reported ([`QUEUE_DEPTH_HEADER`]); a missing or
    /// malformed value is ignored.
    pub fn record_queue_report(&self, metadata: &tonic::metadata::MetadataMap) {
        let Some(depth) = metadata
            .get(QUEUE_DEPTH_HEADER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u32>().ok())
        else {
            return;
        };
        self.reported_queue.store(depth, Ordering::Relaxed);
        // Stored +1 so that 0 means "never reported".
        self.reported_at_ms
            .store(self.now_ms() + 1, Ordering::Relaxed);
    }

    /// The requests on this member that are not this orchestrator's: the node's last
    /// reported queue depth (which counts every orchestrator's calls) less this
    /// orchestrator's calls in flight to it, while that report is fresh; else 0.
    pub fn foreign_backlog(&self) -> u32 {
        let own = self.in_flight.load(Ordering::Relaxed);
        let at = self.reported_at_ms.load(Ordering::Relaxed);
        let fresh = at != 0 && self.now_ms() + 1 - at <= QUEUE_REPORT_TTL.as_millis() as u64;
        if fresh {
            self.reported_queue
                .load(Ordering::Relaxed)
                .saturating_sub(own)
        } else {
            0
        }
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

/// The host of a `host:port` address, without the brackets of an IPv6 literal.
fn host_of(address: &str) -> &str {
    let host = address.rsplit_once(':').map_or(address, |(h, _)| h);
    host.trim_start_matches('[').trim_end_matches(']')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_member_key_prints_and_parses_back() {
        let key = MemberKey {
            cluster: "prod".into(),
            role: Role::Verifier,
            instance: "verifier-7f3a".into(),
        };
        assert_eq!(key.to_string(), "/ponder/v1/prod/verifier/verifier-7f3a");
        assert_eq!(key.to_string().parse::<MemberKey>(), Ok(key));
        for bad in [
            "/ponder/v1/prod/verifier",
            "/ponder/v1/prod/judge/x",
            "/ponder/v2/prod/verifier/x",
            "/ponder/v1/prod/verifier/a/b",
            "/ponder/v1//verifier/x",
        ] {
            assert!(bad.parse::<MemberKey>().is_err(), "{bad}");
        }
    }

    #[test]
    fn the_tls_name_of_an_address_is_its_host() {
        assert_eq!(host_of("gen-0.ponder:50051"), "gen-0.ponder");
        assert_eq!(host_of("127.0.0.1:50051"), "127.0.0.1");
        assert_eq!(host_of("[::1]:50051"), "::1");
    }
}
