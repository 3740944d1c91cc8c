//! Storage errors and the one place raftstore errors become kvproto region
//! errors.

use tikal_proto::{errorpb, metapb};
use tikal_raftstore::RaftstoreError;

#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    /// The client must refresh its region cache and retry.
    #[error("region error: {}", .0.message)]
    Region(Box<errorpb::Error>),
    /// The request itself is wrong; retrying it will not help.
    #[error("{0}")]
    InvalidArgument(String),
    /// The store failed internally.
    #[error("storage: {0}")]
    Internal(String),
}

impl StorageError {
    pub fn invalid(msg: impl Into<String>) -> StorageError {
        StorageError::InvalidArgument(msg.into())
    }

    pub fn region(e: errorpb::Error) -> StorageError {
        StorageError::Region(Box::new(e))
    }
}

impl From<RaftstoreError> for StorageError {
    fn from(e: RaftstoreError) -> StorageError {
        match e {
            RaftstoreError::Engine(e) => StorageError::Internal(e.to_string()),
            other => StorageError::region(region_error(&other)),
        }
    }
}

impl From<tikal_engine::EngineError> for StorageError {
    fn from(e: tikal_engine::EngineError) -> StorageError {
        StorageError::Internal(e.to_string())
    }
}

/// EpochNotMatch with the regions the client should know now.
pub fn epoch_not_match(current_regions: Vec<metapb::Region>) -> errorpb::Error {
    errorpb::Error {
        message: "region epoch does not match".into(),
        epoch_not_match: Some(errorpb::EpochNotMatch { current_regions }),
        ..Default::default()
    }
}

/// Builds the region error a TiKV client expects for a raftstore failure.
pub fn region_error(e: &RaftstoreError) -> errorpb::Error {
    let mut err = errorpb::Error {
        message: e.to_string(),
        ..Default::default()
    };
    match e {
        RaftstoreError::RegionNotFound(region_id) => {
            err.region_not_found = Some(errorpb::RegionNotFound {
                region_id: *region_id,
            })
        }
        RaftstoreError::NotLeader { region_id, leader } => {
            err.not_leader = Some(errorpb::NotLeader {
                region_id: *region_id,
                leader: leader.clone(),
            })
        }
        RaftstoreError::EpochNotMatch(region) => {
            err.epoch_not_match = epoch_not_match(vec![(**region).clone()]).epoch_not_match
        }
        RaftstoreError::StaleCommand => err.stale_command = Some(errorpb::StaleCommand {}),
        RaftstoreError::ProposalInMergingMode(region_id) => {
            err.proposal_in_merging_mode = Some(errorpb::ProposalInMergingMode {
                region_id: *region_id,
            })
        }
        RaftstoreError::StoreStopped => {
            err.server_is_busy = Some(errorpb::ServerIsBusy {
                reason: "store is stopping".into(),
                ..Default::default()
            })
        }
        RaftstoreError::DiskFull { store_ids, reason } => {
            err.disk_full = Some(errorpb::DiskFull {
                store_id: store_ids.clone(),
                reason: reason.clone(),
            })
        }
        RaftstoreError::ReadIndexNotReady { region_id, reason } => {
            err.read_index_not_ready = Some(errorpb::ReadIndexNotReady {
                reason: reason.clone(),
                region_id: *region_id,
            })
        }
        // Never a client request's outcome: the message says what happened
        // (a replica read's refusal becomes a key error in the txn layer).
        RaftstoreError::Engine(_)
        | RaftstoreError::ConfChange(_)
        | RaftstoreError::Split(_)
        | RaftstoreError::Merge(_)
        | RaftstoreError::Inconsistent(_)
        | RaftstoreError::ReplicaReadRefused(_) => {}
    }
    err
}
