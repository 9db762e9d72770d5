//! Admission control: a bound on the queries this orchestrator runs at once.
//!
//! A query holds its slot (an [`Admitted`]) for as long as its task runs; when all
//! slots are taken a new query is refused at once with RESOURCE_EXHAUSTED rather than
//! queued, so a client can retry elsewhere or later instead of waiting blind.

use std::sync::Arc;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tonic::Status;

/// The global max-queries limit.
pub struct Admission {
    slots: Arc<Semaphore>,
    limit: usize,
}

/// One admitted query's slot, given back when dropped.
pub struct Admitted {
    _slot: OwnedSemaphorePermit,
}

impl Admission {
    /// At most `limit` (at least 1) queries in progress.
    pub fn new(limit: usize) -> Self {
        Self {
            slots: Arc::new(Semaphore::new(limit)),
            limit,
        }
    }

    /// A slot for one query, or RESOURCE_EXHAUSTED when all are taken.
    pub fn admit(&self) -> Result<Admitted, Status> {
        self.slots
            .clone()
            .try_acquire_owned()
            .map(|slot| Admitted { _slot: slot })
            .map_err(|_| {
                Status::resource_exhausted(format!(
                    "{} queries are in progress (the limit); retry later",
                    self.limit
                ))
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_house_is_resource_exhausted_until_a_query_ends() {
        let a = Admission::new(2);
        let first = a.admit().unwrap();
        let _second = a.admit().unwrap();
        let e = a.admit().err().unwrap();
        assert_eq!(e.code(), tonic::Code::ResourceExhausted);
        assert!(e.message().contains("2 queries"), "{}", e.message());
        drop(first);
        assert!(a.admit().is_ok());
    }
}
