//! Ponder's public gRPC contract, package `ponder.v1` (sources in `proto/ponder/v1/`).
//!
//! Every service and client in the workspace uses these generated types, so the wire
//! contract lives in exactly one place.

#![allow(clippy::large_enum_variant, clippy::doc_lazy_continuation)]

pub mod v1 {
    tonic::include_proto!("ponder.v1");
}

/// The encoded `FileDescriptorSet` of `ponder.v1`, for server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("ponder_descriptor");
