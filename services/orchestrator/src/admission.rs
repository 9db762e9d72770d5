//! Admission control: a bound on the queries this orchestrator runs at once, in all
//! and per client.
//!
//! A query holds its slot (an [`Admitted`]) for as long as its task runs; when all
//! slots are taken, or its client already has its share in progress, a new query is
//! refused at once with RESOURCE_EXHAUSTED rather than queued, so a client can retry
//! elsewhere or later instead of waiting blind. The per-client share is what keeps one
//! client (one API key, or one address when the API is open) from holding every slot:
//! a rate limit alone counts requests as they arrive, not how long each one runs.
//!
//! A client's generate and score calls in flight can be capped too, over all its queries
//! (`--max-calls-per-client`): its queries share one semaphore, which the search takes a
//! permit of for every call. That bounds a client's share of the generators' batches
//! rather than of the query slots.
//!
//! These limits are per orchestrator replica: K replicas admit K times as much
//! (docs/security.md).

use dashmap::DashMap;
use std::sync::Arc;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tonic::Status;

/// The max-queries, max-queries-per-client and max-calls-per-client limits (a clone
/// shares them).
#[derive(Clone)]
pub struct Admission {
    slots: Arc<Semaphore>,
    limit: usize,
    /// 0: no per-client query limit.
    per_client: usize,
    /// Generate/score calls in flight per client, over all its queries; 0: no limit.
    calls_per_client: usize,
    /// Per client key, while it has a query in progress.
    clients: Arc<DashMap<String, ClientState>>,
}

struct ClientState {
    queries: usize,
    /// The client's call permits, shared by its queries (when calls are capped).
    calls: Option<Arc<Semaphore>>,
}

/// One admitted query's slot (and its client's count), given back when dropped.
pub struct Admitted {
    _slot: OwnedSemaphorePermit,
    client: Option<ClientCount>,
}

impl Admitted {
    /// The call permits this query shares with its client's other queries, if calls
    /// are capped per client.
    pub fn client_calls(&self) -> Option<Arc<Semaphore>> {
        self.client.as_ref().and_then(|c| c.calls.clone())
    }
}

/// One query in a client's count; the count goes down when this is dropped.
struct ClientCount {
    clients: Arc<DashMap<String, ClientState>>,
    key: String,
    calls: Option<Arc<Semaphore>>,
}

impl Drop for ClientCount {
    fn drop(&mut self) {
        self.clients.remove_if_mut(&self.key, |_, state| {
            state.queries -= 1;
            state.queries == 0
        });
    }
}

impl Admission {
    /// At most `limit` (at least 1) queries in progress, at most `per_client` of them
    /// from one client (0: no such limit), and at most `calls_per_client` generate or
    /// score calls in flight for one client over all its queries (0: no such limit).
    pub fn new(limit: usize, per_client: usize, calls_per_client: usize) -> Self {
        Self {
            slots: Arc::new(Semaphore::new(limit)),
            limit,
            per_client,
            calls_per_client,
            clients: Arc::new(DashMap::new()),
        }
    }

    /// A slot for one query of the client keyed `client` (described as `who` in the
    /// message), or RESOURCE_EXHAUSTED naming the limit that is full.
    pub fn admit(&self, client: &str, who: &str) -> Result<Admitted, Status> {
        let count = if self.per_client > 0 || self.calls_per_client > 0 {
            let mut state = self
                .clients
                .entry(client.to_string())
                .or_insert(ClientState {
                    queries: 0,
                    calls: None,
                });
            if self.per_client > 0 && state.queries >= self.per_client {
                return Err(ponder_cluster::status::resource_exhausted(
                    format!(
                        "{who} already has {} queries in progress (the per-client limit); \
                         retry when one ends",
                        self.per_client
                    ),
                    ponder_cluster::status::DEFAULT_RETRY_AFTER,
                ));
            }
            state.queries += 1;
            if self.calls_per_client > 0 && state.calls.is_none() {
                state.calls = Some(Arc::new(Semaphore::new(self.calls_per_client)));
            }
            Some(ClientCount {
                clients: self.clients.clone(),
                key: client.to_string(),
                calls: state.calls.clone(),
            })
        } else {
            None
        };
        // On refusal `count` is dropped here, which gives the client's count back.
        let slot = self.slots.clone().try_acquire_owned().map_err(|_| {
            ponder_cluster::status::resource_exhausted(
                format!(
                    "{} queries are in progress (the limit); retry later",
                    self.limit
                ),
                ponder_cluster::status::DEFAULT_RETRY_AFTER,
            )
        })?;
        Ok(Admitted {
            _slot: slot,
            client: count,
        })
    }

    /// The share of the query slots in use, 0..=1 (a load signal of the budget
    /// controller).
    pub fn occupancy(&self) -> f64 {
        self.in_progress() as f64 / self.limit.max(1) as f64
    }

    /// The share in use of the fullest admission limit, 0..=1: all the query slots, or
    /// the busiest client's (when clients are capped). A query is refused when this
    /// is 1 for it.
    pub fn fullest(&self) -> f64 {
        let client = if self.per_client > 0 {
            let busiest = self.clients.iter().map(|c| c.queries).max().unwrap_or(0);
            busiest as f64 / self.per_client as f64
        } else {
            0.0
        };
        self.occupancy().max(client)
    }

    /// Queries in progress now.
    pub fn in_progress(&self) -> usize {
        self.limit.saturating_sub(self.slots.available_permits())
    }

    /// Clients with a query in progress (for tests and metrics).
    pub fn active_clients(&self) -> usize {
        self.clients.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_fullest_limit_is_the_busiest_clients_or_all_slots() {
        let a = Admission::new(8, 2, 0);
        assert_eq!(a.fullest(), 0.0);
        let _one = a.admit("k1", "k1").unwrap();
        assert_eq!(a.fullest(), 0.5, "one of k1's two");
        let _two = a.admit("k2", "k2").unwrap();
        let _three = a.admit("k1", "k1").unwrap();
        assert_eq!(a.fullest(), 1.0, "k1 is full; 3 of 8 slots are not");
        drop(_three);
        assert_eq!(a.fullest(), 0.5);
        let open = Admission::new(4, 0, 0);
        let _q: Vec<_> = (0..3)
            .map(|i| open.admit(&i.to_string(), "c").unwrap())
            .collect();
        assert_eq!(open.fullest(), 0.75, "no per-client limit: the slots");
    }

    #[test]
    fn a_full_house_is_resource_exhausted_until_a_query_ends() {
        let a = Admission::new(2, 0, 0);
        let first = a.admit("a", "client a").unwrap();
        let _second = a.admit("b", "client b").unwrap();
        let e = a.admit("c", "client c").err().unwrap();
        assert_eq!(e.code(), tonic::Code::ResourceExhausted);
        assert!(e.message().contains("2 queries"), "{}", e.message());
        drop(first);
        assert!(a.admit("c", "client c").is_ok());
    }

    #[test]
    fn one_client_cannot_hold_more_than_its_share() {
        let a = Admission::new(10, 2, 0);
        let first = a.admit("key:k", "API key k").unwrap();
        let _second = a.admit("key:k", "API key k").unwrap();
        let e = a.admit("key:k", "API key k").err().unwrap();
        assert_eq!(e.code(), tonic::Code::ResourceExhausted);
        assert!(
            e.message().contains("API key k already has 2 queries"),
            "{}",
            e.message()
        );
        // Another client still gets in, and the first gets a slot back when one ends.
        let _other = a.admit("key:j", "API key j").unwrap();
        drop(first);
        let _third = a.admit("key:k", "API key k").unwrap();
        assert_eq!(a.active_clients(), 2);
    }

    #[test]
    fn a_refusal_by_the_global_limit_gives_the_clients_count_back() {
        let a = Admission::new(1, 1, 0);
        let held = a.admit("x", "client x").unwrap();
        assert!(a.admit("y", "client y").is_err());
        assert_eq!(a.active_clients(), 1, "y's count was given back");
        drop(held);
        assert_eq!(a.active_clients(), 0);
        assert!(a.admit("y", "client y").is_ok());
    }

    #[test]
    fn a_clients_queries_share_its_call_permits() {
        let a = Admission::new(10, 0, 3);
        let (q1, q2) = (a.admit("k", "k").unwrap(), a.admit("k", "k").unwrap());
        let other = a.admit("j", "j").unwrap();
        let shared = q1.client_calls().unwrap();
        assert!(Arc::ptr_eq(&shared, &q2.client_calls().unwrap()));
        assert!(!Arc::ptr_eq(&shared, &other.client_calls().unwrap()));
        assert_eq!(shared.available_permits(), 3);
        assert!(Admission::new(10, 4, 0)
            .admit("k", "k")
            .unwrap()
            .client_calls()
            .is_none());
    }
}
