//! Where the orchestrator learns its members from: etcd, or a static list.
//!
//! Both sources send their changes to the same membership actor ([`Registry`]); routing
//! above it does not know which one runs. A member becomes routable once its ModelInfo
//! RPC has answered (that also tells the pools its parameter count for FLOP accounting).

mod etcd;
mod etcd_access;
mod static_list;

pub use crate::member::key_prefix;
pub use etcd::EtcdDiscovery;
pub use etcd_access::{EtcdAccessArgs, EtcdConfig};
pub use static_list::StaticDiscovery;

use crate::membership::Registry;
use std::future::Future;

/// A source of membership that keeps `registry` up to date until dropped/aborted.
pub trait Discovery: Send + 'static {
    /// "static" or "etcd".
    fn kind(&self) -> &'static str;
    fn run(self, registry: Registry) -> impl Future<Output = ()> + Send;
}
