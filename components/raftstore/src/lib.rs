//! Multi-Raft: each Region of the key space is a Raft group.
//!
//! A store hosts one [`Peer`](peer::Peer) per region replica it holds. All of
//! a store's peers are one state machine, [`Store`] (no clock, no socket),
//! which [`Router`] drives from one thread (`router.rs`): each round it
//!
//! 1. takes in the proposals and Raft messages that arrived since its last
//!    round (from any number of gRPC handlers) and ticks Raft on time;
//! 2. takes every peer's Raft `Ready`, sends what may go before persisting
//!    through the [`Transport`], and appends all new log entries and hard
//!    states to the Raft log engine in **one** fsynced write (group commit);
//! 3. sends votes and acks, then applies committed entries to the KV engine
//!    in one atomic batch per region, with the region's new applied index;
//! 4. only then answers the proposers.
//!
//! Tests drive `Store`s by hand over a simulated network
//! (`testscripts/`, run by `scenarios.rs`), and through seeded random
//! fault schedules (`chaos.rs`).
//!
//! Example: 64 clients each send a `RawPut`. While the loop fsyncs the batch
//! holding the first put, the other 63 queue up; the next round proposes all
//! 63 and syncs them with a single fsync. Throughput grows with concurrency
//! while each write is still durable before it is acknowledged.
//!
//! The loop does not interpret commands: the storage layer hands in an
//! [`Applier`] that turns a command's bytes into KV engine writes at apply
//! time. Reads do not go through the log: a reader asks the region's leader
//! for a ReadIndex ([`Router::read_index`]: the leader confirms with a
//! quorum that it still leads and waits until it has applied that far),
//! checks the epoch via the [`RegionView`] the loop publishes, and reads the
//! KV engine directly. A follower or learner serves a replica read the same
//! way, with the read index its leader gives it
//! ([`Router::replica_read_index`], `replica_read.rs`).

mod admin;
mod apply;
#[cfg(test)]
mod chaos;
mod disk;
mod meta;
mod peer;
mod peer_storage;
mod read_progress;
mod replica_read;
mod router;
#[cfg(test)]
mod scenarios;
mod snap;
mod split_check;
mod store;
mod transport;

pub use apply::{Applier, ApplyContext, ApplyOutput};
pub use disk::{grade as grade_disk, DiskFullOpt, DiskState, DiskUsage};
pub use meta::{
    applied_index, clear_prepared_bootstrap, load_first_region, load_prepared_bootstrap,
    load_regions, load_store_ident, remove_region, write_initial_region, write_prepared_bootstrap,
    write_store_ident, StoreIdent, INITIAL_INDEX,
};
pub use peer::{
    CommandBatch, ConfChangeOutput, Expected, LogGc, RegionStats, SplitOutput, Written,
};
pub use read_progress::{ReadProgress, ReadState};
pub use router::{Pickup, Router};
pub use snap::{
    decode_data as decode_snapshot_data, SnapBusy, SnapCounts, SnapKey, SnapManager, SnapReceiver,
    DEFAULT_SNAP_LIMIT,
};
pub use split_check::{user_key, SplitCheck, SplitCheckConfig};
pub use store::{PeerStatus, RaftstoreConfig, RegionView, Store, StoreEvent};
pub use transport::{NoTransport, PeerMessage, Transport};

use tikal_proto::metapb;

/// A region's epoch version (0 when it has no epoch).
pub fn region_version(region: &metapb::Region) -> u64 {
    region.region_epoch.as_ref().map_or(0, |e| e.version)
}

/// Whether a store's peer `peer_id` of `local` is stale, given the
/// region as PD knows it (`known`): PD's verdict on a peer that reports
/// no leader. Stale if PD knows the region at a newer epoch without this
/// peer (removed while its store was away), or knows no such region and
/// the peer holds nothing. A region PD does not know that holds data is
/// kept, as TiKV keeps it: it may have merged away while this store's
/// target peer is behind (which takes its data in when it applies the
/// CommitMerge), or split with its report lost. Merged-away leftovers are
/// told so by the other stores instead.
pub fn peer_is_stale(local: &metapb::Region, peer_id: u64, known: Option<&metapb::Region>) -> bool {
    let Some(known) = known else {
        return local.peers.is_empty();
    };
    if known.peers.iter().any(|p| p.id == peer_id) {
        return false;
    }
    let epoch = |r: &metapb::Region| r.region_epoch.clone().unwrap_or_default();
    let (ours, theirs) = (epoch(local), epoch(known));
    theirs.conf_ver > ours.conf_ver || theirs.version > ours.version
}

/// Why a proposal or region lookup failed. Mapped to kvproto region errors at
/// the gRPC edge.
#[derive(Debug, thiserror::Error)]
pub enum RaftstoreError {
    #[error("region {0} not found on this store")]
    RegionNotFound(u64),
    #[error("peer of region {region_id} is not leader")]
    NotLeader {
        region_id: u64,
        leader: Option<metapb::Peer>,
    },
    #[error("region epoch does not match")]
    EpochNotMatch(Box<metapb::Region>),
    #[error("command was dropped by a term change")]
    StaleCommand,
    #[error("{0}")]
    ConfChange(String),
    #[error("split refused: {0}")]
    Split(String),
    #[error("region {0} is merging into another and takes no proposals")]
    ProposalInMergingMode(u64),
    #[error("merge refused: {0}")]
    Merge(String),
    #[error("the store is shutting down")]
    StoreStopped,
    /// A replica read (see `replica_read.rs`) got no read index from the
    /// region's leader in time.
    #[error("region {region_id}: read index not ready: {reason}")]
    ReadIndexNotReady { region_id: u64, reason: String },
    /// The leader's check of a replica read refused it; what the check
    /// answered (see [`Applier::check_replica_read`]).
    #[error("the leader refused the replica read")]
    ReplicaReadRefused(Vec<u8>),
    /// A client write refused for lack of disk space on `store_ids` (see
    /// `disk.rs`).
    #[error("disk full on store(s) {store_ids:?}: {reason}")]
    DiskFull { store_ids: Vec<u64>, reason: String },
    /// What the store keeps breaks an invariant: it stops rather than
    /// serve or destroy data it cannot place.
    #[error("inconsistent store state: {0}")]
    Inconsistent(String),
    #[error(transparent)]
    Engine(#[from] tikal_engine::EngineError),
}

impl RaftstoreError {
    /// NotLeader for a region this store does not serve, naming `leader`
    /// only if it is on another store. A leader here that cannot take the
    /// request (it hands leadership over, or has not applied an entry of
    /// its own term yet) names none, as TiKV: the official client retries a
    /// named leader at once, and each retry spends one of its ten, so it
    /// would spend them all here within milliseconds; with none it reloads
    /// the region and backs off.
    pub fn not_leader(region_id: u64, leader: Option<metapb::Peer>, store_id: u64) -> Self {
        RaftstoreError::NotLeader {
            region_id,
            leader: leader.filter(|l| l.store_id != store_id),
        }
    }

    /// The region moved on (leadership, epoch, a merge, the store going
    /// away): asking again, there or elsewhere, may succeed. These are the
    /// failures that reach clients as kvproto region errors.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            RaftstoreError::NotLeader { .. }
                | RaftstoreError::EpochNotMatch(_)
                | RaftstoreError::StaleCommand
                | RaftstoreError::RegionNotFound(_)
                | RaftstoreError::ProposalInMergingMode(_)
                | RaftstoreError::StoreStopped
                | RaftstoreError::ReadIndexNotReady { .. }
        )
    }
}

pub type Result<T> = std::result::Result<T, RaftstoreError>;

#[cfg(test)]
mod tests {
    use super::*;

    fn region(version: u64, conf_ver: u64, peers: &[u64]) -> metapb::Region {
        metapb::Region {
            id: 7,
            region_epoch: Some(metapb::RegionEpoch { conf_ver, version }),
            peers: peers
                .iter()
                .map(|&id| metapb::Peer {
                    id,
                    store_id: id,
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        }
    }

    #[test]
    fn a_peer_is_stale_only_when_pd_shows_the_region_moved_on_without_it() {
        let local = region(5, 3, &[1, 2, 3]);
        // Removed while this store was away: a newer epoch without it.
        assert!(peer_is_stale(&local, 3, Some(&region(5, 4, &[1, 2, 4]))));
        assert!(peer_is_stale(&local, 3, Some(&region(6, 3, &[1, 2, 4]))));
        // Still a member, or PD not yet past our epoch: not stale.
        assert!(!peer_is_stale(&local, 3, Some(&region(9, 9, &[1, 2, 3]))));
        assert!(!peer_is_stale(&local, 3, Some(&region(5, 3, &[1, 2]))));
        // PD knows no such region: kept if it holds data (merged away
        // while a target here is behind, or a split whose report was
        // lost), stale if it holds nothing.
        assert!(!peer_is_stale(&local, 3, None));
        let uninitialized = metapb::Region {
            id: 7,
            ..Default::default()
        };
        assert!(peer_is_stale(&uninitialized, 3, None));
    }
}
