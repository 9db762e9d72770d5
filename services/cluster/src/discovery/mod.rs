//! Where the orchestrator learns its members from: etcd, or a static list.
//!
//! Both sources write the same [`Registry`]; routing above it does not know which one
//! runs. A member becomes routable once its ModelInfo RPC has answered (that also
//! tells the pools its parameter count for FLOP accounting).

mod etcd;
mod etcd_access;
mod static_list;

pub use etcd::{key_prefix, EtcdDiscovery};
pub use etcd_access::{EtcdAccessArgs, EtcdConfig};
pub use static_list::StaticDiscovery;

use crate::member::{Member, Registry, Role};
use ponder_proto::v1::generator_client::GeneratorClient;
use ponder_proto::v1::verifier_client::VerifierClient;
use ponder_proto::v1::ModelInfoRequest;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

/// A source of membership that keeps `registry` up to date until dropped/aborted.
pub trait Discovery: Send + 'static {
    /// "static" or "etcd".
    fn kind(&self) -> &'static str;
    fn run(self, registry: Registry) -> impl Future<Output = ()> + Send;
}

/// Fetches a new member's ModelInfo, retrying until it answers or leaves the registry.
pub fn fetch_info(registry: Registry, member: Arc<Member>) {
    tokio::spawn(async move {
        let mut delay = Duration::from_millis(100);
        let mut attempts = 0u32;
        loop {
            attempts += 1;
            let res = match member.record.role {
                Role::Generator => GeneratorClient::new(member.channel.clone())
                    .model_info(ModelInfoRequest {})
                    .await
                    .map(|r| r.into_inner()),
                Role::Verifier => VerifierClient::new(member.channel.clone())
                    .model_info(ModelInfoRequest {})
                    .await
                    .map(|r| r.into_inner()),
                Role::Orchestrator => return,
            };
            match res {
                Ok(info) => {
                    tracing::info!(
                        role = member.record.role.as_str(),
                        instance = %member.record.instance_id,
                        address = %member.record.address,
                        model = %info.model_id,
                        "member ready"
                    );
                    let _ = member.info.set(info);
                    return;
                }
                Err(e) => {
                    let still_member = registry
                        .members(member.record.role)
                        .iter()
                        .any(|m| Arc::ptr_eq(m, &member));
                    if !still_member {
                        return;
                    }
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
    });
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
