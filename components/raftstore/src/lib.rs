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
//! KV engine directly.

mod admin;
mod apply;
#[cfg(test)]
mod chaos;
mod meta;
mod peer;
mod peer_storage;
mod read_progress;
mod router;
#[cfg(test)]
mod scenarios;
mod snap;
mod split_check;
mod store;
mod transport;

pub use apply::{Applier, ApplyContext, ApplyOutput};
pub use meta::{
    load_first_region, load_store_ident, remove_region, write_initial_region, write_store_ident,
    StoreIdent, INITIAL_INDEX,
};
pub use peer::{ConfChangeOutput, LogGc, RegionStats, SplitOutput, Written};
pub use read_progress::{ReadProgress, ReadState};
pub use router::{Pickup, Router};
pub use snap::{decode_data as decode_snapshot_data, SnapKey, SnapManager, SnapReceiver};
pub use split_check::{SplitCheck, SplitCheckConfig};
pub use store::{PeerStatus, RaftstoreConfig, RegionView, Store, StoreEvent};
pub use transport::{NoTransport, PeerMessage, Transport};

use tikal_proto::metapb;

/// A region's epoch version (0 when it has no epoch).
pub fn region_version(region: &metapb::Region) -> u64 {
    region.region_epoch.as_ref().map_or(0, |e| e.version)
}

/// Whether a store's peer `peer_id` of `local` is stale, given the
/// region as PD knows it by id (`known`) and PD's region holding the
/// local region's start key (`covering`): PD's verdict on a peer that
/// reports no leader. Stale if PD knows the region at a newer epoch
/// without this peer (removed while its store was away), or knows no
/// such region and either the peer holds nothing or a newer region
/// (higher version) covers its range (it merged away). A region PD never
/// heard of (a split whose report and heartbeats were lost) is kept, as
/// TiKV keeps it: destroyed, its data would be gone.
pub fn peer_is_stale(
    local: &metapb::Region,
    peer_id: u64,
    known: Option<&metapb::Region>,
    covering: Option<&metapb::Region>,
) -> bool {
    let epoch = |r: &metapb::Region| r.region_epoch.clone().unwrap_or_default();
    let Some(known) = known else {
        let superseded = covering.is_some_and(|c| {
            let range = (local.start_key.as_slice(), local.end_key.as_slice());
            store::overlaps(c, range) && epoch(c).version > epoch(local).version
        });
        return local.peers.is_empty() || superseded;
    };
    if known.peers.iter().any(|p| p.id == peer_id) {
        return false;
    }
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
        assert!(peer_is_stale(
            &local,
            3,
            Some(&region(5, 4, &[1, 2, 4])),
            None
        ));
        assert!(peer_is_stale(
            &local,
            3,
            Some(&region(6, 3, &[1, 2, 4])),
            None
        ));
        // Still a member, or PD not yet past our epoch: not stale.
        assert!(!peer_is_stale(
            &local,
            3,
            Some(&region(9, 9, &[1, 2, 3])),
            None
        ));
        assert!(!peer_is_stale(
            &local,
            3,
            Some(&region(5, 3, &[1, 2])),
            None
        ));
    }

    #[test]
    fn a_region_pd_does_not_know_is_stale_only_once_a_newer_one_covers_it() {
        let mut local = region(5, 3, &[1, 2, 3]);
        (local.start_key, local.end_key) = (b"c".to_vec(), b"f".to_vec());
        let covering = |version, start: &[u8], end: &[u8]| metapb::Region {
            id: 9,
            start_key: start.to_vec(),
            end_key: end.to_vec(),
            ..region(version, 1, &[1, 2, 3])
        };
        // Merged into a region that holds its range now.
        assert!(peer_is_stale(
            &local,
            3,
            None,
            Some(&covering(6, b"a", b""))
        ));
        // Never reported (a split whose report was lost): PD has nothing
        // there, or the parent at an older version, or a region that
        // does not reach the range.
        assert!(!peer_is_stale(&local, 3, None, None));
        assert!(!peer_is_stale(
            &local,
            3,
            None,
            Some(&covering(5, b"a", b""))
        ));
        assert!(!peer_is_stale(
            &local,
            3,
            None,
            Some(&covering(7, b"a", b"c"))
        ));
        // A peer that holds nothing loses nothing.
        let uninitialized = metapb::Region {
            id: 7,
            ..Default::default()
        };
        assert!(peer_is_stale(&uninitialized, 3, None, None));
    }
}
