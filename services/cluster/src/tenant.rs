//! Whose query a generate or score call serves, so that workers can take clients in
//! turn (the engine's fair queue).
//!
//! The orchestrator derives a tenant id from the caller (a hash of its API key name,
//! or of its address when the API is open: never the key itself) and sends it on every
//! call as `x-ponder-tenant`; workers read it back. A call without one is tenant 0.

use tonic::metadata::MetadataMap;

pub const HEADER: &str = "x-ponder-tenant";

/// The tenant in `metadata` (0 when absent or malformed).
pub fn from_metadata(metadata: &MetadataMap) -> u64 {
    metadata
        .get(HEADER)
        .and_then(|v| v.to_str().ok())
        .and_then(|s| u64::from_str_radix(s, 16).ok())
        .unwrap_or(0)
}

pub fn insert(metadata: &mut MetadataMap, tenant: u64) {
    if tenant != 0 {
        if let Ok(v) = format!("{tenant:016x}").parse() {
            metadata.insert(HEADER, v);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tenant_round_trips_and_junk_reads_as_none() {
        let mut md = MetadataMap::new();
        assert_eq!(from_metadata(&md), 0);
        insert(&mut md, 0xdead_beef);
        assert_eq!(from_metadata(&md), 0xdead_beef);
        md.insert(HEADER, "not hex".parse().unwrap());
        assert_eq!(from_metadata(&md), 0);
    }
}
