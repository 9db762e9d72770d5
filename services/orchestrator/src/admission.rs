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
//! Both limits are per orchestrator replica: K replicas admit K times as much
//! (docs/security.md).

use dashmap::DashMap;
use std::sync::Arc;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tonic::Status;

/// The max-queries and max-queries-per-client limits.
pub struct Admission {
    slots: Arc<Semaphore>,
    limit: usize,
    /// 0: no per-client limit.
    per_client: usize,
    /// Queries in progress per client key (only clients with at least one).
    clients: Arc<DashMap<String, usize>>,
}

/// One admitted query's slot (and its client's count), given back when dropped.
pub struct Admitted {
    _slot: OwnedSemaphorePermit,
    _client: Option<ClientCount>,
}

/// One query in a client's count; the count goes down when this is dropped.
struct ClientCount {
    clients: Arc<DashMap<String, usize>>,
    key: String,
}

impl Drop for ClientCount {
    fn drop(&mut self) {
        self.clients.remove_if_mut(&self.key, |_, n| {
            *n -= 1;
            *n == 0
        });
    }
}

impl Admission {
    /// At most `limit` (at least 1) queries in progress, and at most `per_client` of
    /// them from one client (0: no per-client limit).
    pub fn new(limit: usize, per_client: usize) -> Self {
        Self {
            slots: Arc::new(Semaphore::new(limit)),
            limit,
            per_client,
            clients: Arc::new(DashMap::new()),
        }
    }

    /// A slot for one query of the client keyed `client` (described as `who` in the
    /// message), or RESOURCE_EXHAUSTED naming the limit that is full.
    pub fn admit(&self, client: &str, who: &str) -> Result<Admitted, Status> {
        let count = if self.per_client > 0 {
            let mut n = self.clients.entry(client.to_string()).or_insert(0);
            if *n >= self.per_client {
                return Err(Status::resource_exhausted(format!(
                    "{who} already has {} queries in progress (the per-client limit); retry \
                     when one ends",
                    self.per_client
                )));
            }
            *n += 1;
            Some(ClientCount {
                clients: self.clients.clone(),
                key: client.to_string(),
            })
        } else {
            None
        };
        // On refusal `count` is dropped here, which gives the client's count back.
        let slot = self.slots.clone().try_acquire_owned().map_err(|_| {
            Status::resource_exhausted(format!(
                "{} queries are in progress (the limit); retry later",
                self.limit
            ))
        })?;
        Ok(Admitted {
            _slot: slot,
            _client: count,
        })
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
    fn a_full_house_is_resource_exhausted_until_a_query_ends() {
        let a = Admission::new(2, 0);
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
        let a = Admission::new(10, 2);
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
        let a = Admission::new(1, 1);
        let held = a.admit("x", "client x").unwrap();
        assert!(a.admit("y", "client y").is_err());
        assert_eq!(a.active_clients(), 1, "y's count was given back");
        drop(held);
        assert_eq!(a.active_clients(), 0);
        assert!(a.admit("y", "client y").is_ok());
    }
}
