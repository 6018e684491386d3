//! The memd gRPC API (`memd.v1`): message types, client and server stubs, and the encoded
//! file descriptor set for gRPC reflection.

/// Generated code for package `memd.v1`.
pub mod v1 {
    tonic::include_proto!("memd.v1");
}

/// Encoded `FileDescriptorSet` of the memd.v1 protos (for tonic-reflection).
pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("memd_descriptor");

pub mod json;
