//! The request id that ties one query's log lines together across nodes.
//!
//! The orchestrator takes `x-request-id` from the client's metadata (or makes one) and
//! sends it on every generate/score call; workers log it in their spans.

use tonic::metadata::MetadataMap;

pub const HEADER: &str = "x-request-id";

/// The id in `metadata`, or a fresh random one.
pub fn from_metadata(metadata: &MetadataMap) -> String {
    metadata
        .get(HEADER)
        .and_then(|v| v.to_str().ok())
        .filter(|s| !s.is_empty() && s.len() <= 128)
        .map(String::from)
        .unwrap_or_else(fresh)
}

pub fn fresh() -> String {
    format!("{:016x}", rand::random::<u64>())
}

pub fn insert(metadata: &mut MetadataMap, id: &str) {
    if let Ok(v) = id.parse() {
        metadata.insert(HEADER, v);
    }
}
