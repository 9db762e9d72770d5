//! Membership as an actor: one task owns the member table; everyone else holds a
//! [`Registry`] handle.
//!
//! Why an actor: discovery (etcd or a static list), the ModelInfo fetches of new members
//! and routing all touch membership. A single owner applies changes in order and
//! publishes an immutable [`Snapshot`] through a `watch` channel; routing reads the
//! latest snapshot (no lock, no sorting per call), and anything that waits for a member
//! waits on the watch with a deadline ([`Registry::wait_for`]) instead of polling. Per-call
//! load counters and ejections stay atomics inside each `Arc<Member>`, shared by every
//! snapshot, so a call takes no round trip through the actor.
//!
//! Every task here has an owner: the actor owns the ModelInfo fetch of each member
//! (aborted when the member leaves or is replaced), and the actor itself ends, with its
//! fetches, when the last handle is dropped.

use crate::member::{Member, MemberRecord, Role};
use crate::member_check::{self, Expectations};
use crate::metrics::Metrics;
use crate::tls::PeerTls;
use ponder_proto::v1::generator_client::GeneratorClient;
use ponder_proto::v1::verifier_client::VerifierClient;
use ponder_proto::v1::{ModelInfoRequest, ModelInfoResponse};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

/// The membership at one moment: members sorted by (role, instance id).
#[derive(Debug, Default)]
pub struct Snapshot {
    members: Vec<Arc<Member>>,
    /// Bumped by every change.
    pub version: u64,
}

impl Snapshot {
    /// Members of `role`, by instance id: a slice, since the members are sorted by role
    /// first (routing reads it for every call, so it does not copy).
    pub fn members(&self, role: Role) -> &[Arc<Member>] {
        let start = self
            .members
            .iter()
            .position(|m| m.record.role == role)
            .unwrap_or(self.members.len());
        let len = self.members[start..]
            .iter()
            .take_while(|m| m.record.role == role)
            .count();
        &self.members[start..start + len]
    }

    pub fn all(&self) -> &[Arc<Member>] {
        &self.members
    }

    /// Members of `role` that have answered ModelInfo (routable).
    pub fn ready(&self, role: Role) -> usize {
        self.members
            .iter()
            .filter(|m| m.record.role == role && m.info.get().is_some())
            .count()
    }
}

/// A value derived from the membership (the limits a pool's members agree on), computed
/// once per snapshot instead of on every call: it is kept with the version it was
/// computed from, and recomputed when a call sees a newer snapshot. The lock is held
/// only to compare versions and copy the value out.
pub struct PerSnapshot<T>(std::sync::Mutex<Option<(u64, T)>>);

impl<T: Clone> PerSnapshot<T> {
    pub fn new() -> Self {
        Self(std::sync::Mutex::new(None))
    }

    /// The value for `snapshot`: the kept one if it was computed from this version,
    /// else `compute(snapshot)` (then kept).
    pub fn get(&self, snapshot: &Snapshot, compute: impl FnOnce(&Snapshot) -> T) -> T {
        let mut kept = self.0.lock().unwrap_or_else(|e| e.into_inner());
        match &*kept {
            Some((version, value)) if *version == snapshot.version => value.clone(),
            _ => {
                let value = compute(snapshot);
                *kept = Some((snapshot.version, value.clone()));
                value
            }
        }
    }
}

impl<T: Clone> Default for PerSnapshot<T> {
    fn default() -> Self {
        Self::new()
    }
}

enum Command {
    Upsert(MemberRecord),
    Remove(String),
    Retain(HashSet<String>),
    /// A member's ModelInfo answered (the member is the one the fetch was started for).
    Ready(Arc<Member>, ModelInfoResponse),
    /// The client TLS files changed: dial every member again with this.
    Tls(Arc<PeerTls>),
}

/// A cheap handle to the membership actor.
#[derive(Clone)]
pub struct Registry {
    tx: mpsc::UnboundedSender<Command>,
    snapshot: watch::Receiver<Arc<Snapshot>>,
}

impl Registry {
    /// Starts the actor; members are dialed over TLS with `tls` (plaintext when `None`).
    /// Needs a tokio runtime.
    pub fn with_tls(tls: Option<PeerTls>) -> Self {
        Self::with_checks(tls, Expectations::default(), None)
    }

    /// As [`Registry::with_tls`], with the members' ModelInfo checked against `expect`
    /// ([`crate::member_check`]); refusals are counted in `metrics` when given.
    pub fn with_checks(
        tls: Option<PeerTls>,
        expect: Expectations,
        metrics: Option<Metrics>,
    ) -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        let (publish, snapshot) = watch::channel(Arc::new(Snapshot::default()));
        let actor = Actor {
            table: BTreeMap::new(),
            fetches: HashMap::new(),
            tls: tls.map(Arc::new),
            tx: tx.downgrade(),
            publish,
            version: 0,
            expect,
            metrics,
        };
        tokio::spawn(actor.run(rx));
        Self { tx, snapshot }
    }

    /// Dials members with each new client TLS config `tls` publishes (the rotated
    /// certificate and CA files, [`crate::tls::TlsArgs::watched_peers`]): members joining
    /// later get it, and every current member gets a fresh channel with it. Ends with
    /// the sender.
    pub fn follow_tls(&self, mut tls: watch::Receiver<Arc<PeerTls>>) {
        let tx = self.tx.clone();
        tokio::spawn(async move {
            while tls.changed().await.is_ok() {
                let next = tls.borrow_and_update().clone();
                if tx.send(Command::Tls(next)).is_err() {
                    return;
                }
            }
        });
    }

    /// A plaintext membership.
    pub fn new() -> Self {
        Self::with_tls(None)
    }

    /// Adds or replaces a member (a changed record gets a fresh channel and a new
    /// ModelInfo fetch); it is routable once that fetch answers.
    pub fn upsert(&self, record: MemberRecord) {
        let _ = self.tx.send(Command::Upsert(record));
    }

    pub fn remove(&self, instance_id: &str) {
        let _ = self.tx.send(Command::Remove(instance_id.to_string()));
    }

    /// Keeps only the members whose ids are in `keep` (a resync after a watch gap).
    pub fn retain(&self, keep: HashSet<String>) {
        let _ = self.tx.send(Command::Retain(keep));
    }

    /// The latest snapshot.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.snapshot.borrow().clone()
    }

    pub fn members(&self, role: Role) -> Vec<Arc<Member>> {
        self.snapshot().members(role).to_vec()
    }

    pub fn all(&self) -> Vec<Arc<Member>> {
        self.snapshot().all().to_vec()
    }

    pub fn ready(&self, role: Role) -> usize {
        self.snapshot().ready(role)
    }

    /// A receiver of every new snapshot (e.g. to follow readiness).
    pub fn subscribe(&self) -> watch::Receiver<Arc<Snapshot>> {
        self.snapshot.clone()
    }

    /// Waits until `found` gives a value on some snapshot, at most until `deadline`
    /// (`None`: forever). Woken by membership changes, never by a timer.
    pub async fn wait_for<T>(
        &self,
        deadline: Option<Instant>,
        mut found: impl FnMut(&Snapshot) -> Option<T>,
    ) -> Option<T> {
        let mut rx = self.snapshot.clone();
        let wait = async {
            loop {
                let snap = rx.borrow_and_update().clone();
                if let Some(v) = found(&snap) {
                    return Some(v);
                }
                if rx.changed().await.is_err() {
                    return None;
                }
            }
        };
        match deadline {
            None => wait.await,
            Some(d) => tokio::time::timeout_at(d.into(), wait).await.ok().flatten(),
        }
    }
}

impl Default for Registry {
    fn default() -> Self {
        Self::new()
    }
}

struct Actor {
    table: BTreeMap<(&'static str, String), Arc<Member>>,
    fetches: HashMap<String, JoinHandle<()>>,
    tls: Option<Arc<PeerTls>>,
    /// For the fetch tasks' replies; weak, so the actor ends with its last handle.
    tx: mpsc::WeakUnboundedSender<Command>,
    publish: watch::Sender<Arc<Snapshot>>,
    version: u64,
    expect: Expectations,
    metrics: Option<Metrics>,
}

impl Actor {
    async fn run(mut self, mut rx: mpsc::UnboundedReceiver<Command>) {
        while let Some(cmd) = rx.recv().await {
            if self.apply(cmd) {
                // Apply whatever else is queued before publishing once.
                while let Ok(cmd) = rx.try_recv() {
                    self.apply(cmd);
                }
                self.publish();
            }
        }
        for (_, fetch) in self.fetches.drain() {
            fetch.abort();
        }
    }

    /// Applies one change; whether the membership changed.
    fn apply(&mut self, cmd: Command) -> bool {
        match cmd {
            Command::Upsert(record) => self.upsert(record),
            Command::Remove(id) => self.remove(&id),
            Command::Retain(keep) => {
                let gone: Vec<String> = self
                    .table
                    .values()
                    .map(|m| m.record.instance_id.clone())
                    .filter(|id| !keep.contains(id))
                    .collect();
                let mut changed = false;
                for id in gone {
                    changed |= self.remove(&id);
                }
                changed
            }
            Command::Tls(tls) => self.redial(tls),
            Command::Ready(member, info) => {
                let current = self.table.get(&(
                    member.record.role.as_str(),
                    member.record.instance_id.clone(),
                ));
                if !current.is_some_and(|m| Arc::ptr_eq(m, &member)) {
                    return false; // replaced or gone meanwhile
                }
                self.fetches.remove(&member.record.instance_id);
                if let Err(refusal) = member_check::check(&member.record, &info, &self.expect) {
                    // Kept in the table (so a changed record gets a fresh look) but never
                    // routable: its info stays unset.
                    tracing::warn!(
                        role = member.record.role.as_str(),
                        instance = %member.record.instance_id,
                        address = %member.record.address,
                        reason = refusal.reason,
                        "member refused: {}",
                        refusal.message
                    );
                    if let Some(m) = &self.metrics {
                        m.refusals
                            .get_or_create(&Metrics::labels(&[
                                ("what", "member"),
                                ("reason", refusal.reason),
                            ]))
                            .inc();
                    }
                    return false;
                }
                tracing::info!(
                    role = member.record.role.as_str(),
                    instance = %member.record.instance_id,
                    address = %member.record.address,
                    model = %info.model_id,
                    "member ready"
                );
                let _ = member.info.set(info);
                true
            }
        }
    }

    fn upsert(&mut self, record: MemberRecord) -> bool {
        let slot = (record.role.as_str(), record.instance_id.clone());
        if self.table.get(&slot).is_some_and(|m| m.record == record) {
            return false;
        }
        let member = match Member::new(record, self.tls.as_deref()) {
            Ok(m) => Arc::new(m),
            Err(e) => {
                tracing::warn!(error = %e, "ignoring a member with a bad address");
                return false;
            }
        };
        tracing::info!(
            role = member.record.role.as_str(),
            instance = %member.record.instance_id,
            address = %member.record.address,
            "member joined"
        );
        // An instance id names one member whatever its role claims.
        self.remove(&member.record.instance_id);
        self.fetch(&member);
        self.table.insert(slot, member);
        true
    }

    /// Starts asking `member` for its ModelInfo ([`fetch_info`]); it becomes routable
    /// when that answers.
    fn fetch(&mut self, member: &Arc<Member>) {
        if let Some(tx) = self.tx.upgrade() {
            let fetch = tokio::spawn(fetch_info(member.clone(), tx));
            self.fetches
                .insert(member.record.instance_id.clone(), fetch);
        }
    }

    /// New client TLS: every member gets a fresh channel with it, so the next
    /// connection presents the new certificate (a live connection would otherwise keep
    /// the old one until it breaks). A ready member stays routable (its ModelInfo does
    /// not depend on TLS); a pending one fetches again. Calls in flight finish on the
    /// old channel.
    fn redial(&mut self, tls: Arc<PeerTls>) -> bool {
        self.tls = Some(tls);
        let members: Vec<Arc<Member>> = self.table.values().cloned().collect();
        for old in &members {
            let record = old.record.clone();
            let member = match Member::new(record.clone(), self.tls.as_deref()) {
                Ok(m) => Arc::new(m),
                Err(e) => {
                    tracing::warn!(error = %e, "cannot dial a member again; keeping its channel");
                    continue;
                }
            };
            if let Some(fetch) = self.fetches.remove(&record.instance_id) {
                fetch.abort();
            }
            match old.info.get() {
                Some(info) => {
                    let _ = member.info.set(info.clone());
                }
                None => self.fetch(&member),
            }
            self.table
                .insert((record.role.as_str(), record.instance_id), member);
        }
        tracing::info!(
            members = members.len(),
            "client TLS reloaded; members dialed again"
        );
        !members.is_empty()
    }

    fn remove(&mut self, id: &str) -> bool {
        if let Some(fetch) = self.fetches.remove(id) {
            fetch.abort();
        }
        let before = self.table.len();
        self.table.retain(|(_, instance), _| instance != id);
        let removed = self.table.len() != before;
        if removed {
            tracing::info!(instance = id, "member left");
        }
        removed
    }

    fn publish(&mut self) {
        self.version += 1;
        self.publish.send_replace(Arc::new(Snapshot {
            members: self.table.values().cloned().collect(),
            version: self.version,
        }));
    }
}

/// Asks a new member for its ModelInfo until it answers (retrying with backoff), then
/// reports to the actor. Aborted by the actor if the member leaves first.
async fn fetch_info(member: Arc<Member>, tx: mpsc::UnboundedSender<Command>) {
    let mut delay = Duration::from_millis(100);
    let mut attempts = 0u32;
    loop {
        attempts += 1;
        let res = match member.record.role {
            Role::Generator => GeneratorClient::new(member.calls())
                .model_info(ModelInfoRequest {})
                .await
                .map(|r| r.into_inner()),
            Role::Verifier => VerifierClient::new(member.calls())
                .model_info(ModelInfoRequest {})
                .await
                .map(|r| r.into_inner()),
            Role::Orchestrator => return,
        };
        match res {
            Ok(info) => {
                let _ = tx.send(Command::Ready(member, info));
                return;
            }
            Err(e) => {
                // A member that stays unreachable is usually misconfigured (a wrong
                // address, or with TLS a certificate the other side refuses): say so,
                // with the cause (the TLS alert), after ~3 s and then every minute.
                if attempts == 5 || attempts.is_multiple_of(30) {
                    tracing::warn!(
                        instance = %member.record.instance_id,
                        address = %member.record.address,
                        error = %cause_chain(&e),
                        "member still unreachable; check its address and, with TLS, \
                         --tls-ca, --tls-server-name and this node's client certificate"
                    );
                } else {
                    tracing::debug!(instance = %member.record.instance_id, error = %e, "member not ready yet");
                }
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(2));
            }
        }
    }
}

/// A status with its causes: tonic says "transport error"; the cause says why.
fn cause_chain(e: &tonic::Status) -> String {
    format!(
        "{:?}: {}{}",
        e.code(),
        e.message(),
        crate::connect::causes(e)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A deadline on tokio's clock (paused in these tests), as the std `Instant` the
    /// product uses.
    fn in_(d: Duration) -> Instant {
        tokio::time::Instant::now().into_std() + d
    }

    fn record(role: Role, id: &str) -> MemberRecord {
        MemberRecord {
            role,
            instance_id: id.into(),
            // Nothing listens here: the member is known, never ready.
            address: "127.0.0.1:9".into(),
            model_id: String::new(),
            capacity: 0,
        }
    }

    #[tokio::test(start_paused = true)]
    async fn waiting_for_a_member_is_woken_by_the_change_not_by_a_timer() {
        let registry = Registry::new();
        let waiter = {
            let registry = registry.clone();
            tokio::spawn(async move {
                let start = tokio::time::Instant::now();
                let found = registry
                    .wait_for(Some(in_(Duration::from_secs(60))), |s| {
                        s.members(Role::Verifier).first().cloned()
                    })
                    .await;
                (found.map(|m| m.record.instance_id.clone()), start.elapsed())
            })
        };
        tokio::task::yield_now().await;
        registry.upsert(record(Role::Generator, "g1"));
        registry.upsert(record(Role::Verifier, "v1"));
        let (found, waited) = waiter.await.unwrap();
        assert_eq!(found.as_deref(), Some("v1"));
        // Time is paused: a polling loop would have slept at least one period.
        assert_eq!(
            waited,
            Duration::ZERO,
            "the wait slept instead of being woken"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_wait_ends_at_its_deadline_and_removal_is_published() {
        let registry = Registry::new();
        registry.upsert(record(Role::Generator, "g1"));
        let known = registry
            .wait_for(Some(in_(Duration::from_secs(1))), |s| {
                (!s.members(Role::Generator).is_empty()).then_some(())
            })
            .await;
        assert!(known.is_some());
        // Never ready (nothing answers ModelInfo): the wait gives up at its deadline.
        let ready = registry
            .wait_for(Some(in_(Duration::from_secs(2))), |s| {
                (s.ready(Role::Generator) > 0).then_some(())
            })
            .await;
        assert!(ready.is_none());
        registry.retain(HashSet::new());
        let gone = registry
            .wait_for(Some(in_(Duration::from_secs(1))), |s| {
                s.all().is_empty().then_some(s.version)
            })
            .await;
        assert!(gone.is_some_and(|v| v >= 2), "{gone:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn each_role_reads_as_its_own_slice() {
        let registry = Registry::new();
        for (role, id) in [
            (Role::Verifier, "v2"),
            (Role::Generator, "g1"),
            (Role::Orchestrator, "o1"),
            (Role::Verifier, "v1"),
            (Role::Generator, "g2"),
        ] {
            registry.upsert(record(role, id));
        }
        let snap = registry
            .wait_for(Some(in_(Duration::from_secs(1))), |s| {
                (s.all().len() == 5).then(|| registry.snapshot())
            })
            .await
            .expect("all five published");
        let ids = |role| -> Vec<String> {
            snap.members(role)
                .iter()
                .map(|m| m.record.instance_id.clone())
                .collect()
        };
        assert_eq!(ids(Role::Generator), ["g1", "g2"]);
        assert_eq!(ids(Role::Orchestrator), ["o1"]);
        assert_eq!(ids(Role::Verifier), ["v1", "v2"]);
        registry.retain(HashSet::from(["o1".to_string()]));
        let only = registry
            .wait_for(Some(in_(Duration::from_secs(1))), |s| {
                (s.all().len() == 1).then(|| registry.snapshot())
            })
            .await
            .expect("the removal published");
        assert!(only.members(Role::Generator).is_empty());
        assert!(only.members(Role::Verifier).is_empty());
        assert_eq!(only.members(Role::Orchestrator).len(), 1);
    }

    #[test]
    fn a_derived_value_is_computed_once_per_snapshot() {
        let memo = PerSnapshot::new();
        let computed = std::cell::Cell::new(0);
        let mut snapshot = Snapshot::default();
        let get = |s: &Snapshot| {
            memo.get(s, |s| {
                computed.set(computed.get() + 1);
                s.version * 10
            })
        };
        assert_eq!((get(&snapshot), get(&snapshot)), (0, 0));
        assert_eq!(computed.get(), 1);
        snapshot.version = 3;
        assert_eq!((get(&snapshot), get(&snapshot)), (30, 30));
        assert_eq!(computed.get(), 2);
    }
}
