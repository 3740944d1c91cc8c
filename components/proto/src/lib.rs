//! Generated protocol types: kvproto-compatible messages and gRPC services.
//!
//! The `.proto` sources live in the repository's `proto/` directory and are
//! ours, written to match kvproto's package, message, field and method names
//! and numbers exactly, so unmodified TiKV clients interoperate. This crate is
//! the bottom of the dependency graph: it holds no logic beyond the codec
//! ([`codec`]) that maps undecodable requests to `InvalidArgument`, and the
//! statuses whose messages quote a client's text ([`codec::status`]).
#![allow(clippy::all, missing_docs)]

pub mod codec;

pub mod metapb {
    tonic::include_proto!("metapb");
}
pub mod eraftpb {
    tonic::include_proto!("eraftpb");
}
pub mod raft_cmdpb {
    tonic::include_proto!("raft_cmdpb");
}
pub mod raft_serverpb {
    tonic::include_proto!("raft_serverpb");
}
pub mod errorpb {
    tonic::include_proto!("errorpb");
}
pub mod deadlock {
    tonic::include_proto!("deadlock");
}
pub mod kvrpcpb {
    tonic::include_proto!("kvrpcpb");
}
pub mod tikvpb {
    tonic::include_proto!("tikvpb");
}
pub mod pdpb {
    tonic::include_proto!("pdpb");
}
pub mod keyspacepb {
    tonic::include_proto!("keyspacepb");
}
