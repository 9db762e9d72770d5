//! Static membership: a fixed list of addresses, for setups without etcd (the embedded
//! `ponder up`, simple deployments).

use super::Discovery;
use crate::member::{MemberRecord, Role};
use crate::membership::Registry;

pub struct StaticDiscovery {
    pub members: Vec<(Role, String)>,
}

impl StaticDiscovery {
    pub fn new(generators: &[String], verifiers: &[String]) -> Self {
        let mut members = Vec::new();
        members.extend(generators.iter().map(|a| (Role::Generator, a.clone())));
        members.extend(verifiers.iter().map(|a| (Role::Verifier, a.clone())));
        Self { members }
    }
}

impl Discovery for StaticDiscovery {
    fn kind(&self) -> &'static str {
        "static"
    }

    async fn run(self, registry: Registry) {
        for (role, address) in self.members {
            let record = MemberRecord {
                role,
                instance_id: format!("{}@{address}", role.as_str()),
                address,
                model_id: String::new(),
                capacity: 0,
            };
            registry.upsert(record);
        }
    }
}
