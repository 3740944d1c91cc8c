//! How full a store's disk is, and which writes that still lets through.
//!
//! The server's disk monitor sets the store's [`DiskUsage`] (from its
//! `reserve-space`); the store loop stamps it on every Raft message it
//! sends, so each leader knows its followers'. A leader then refuses a
//! client write (a kvproto `DiskFull` region error) when its own disk, or
//! the disks of so many voters that no quorum with room is left, are fuller
//! than the write's [`DiskFullOpt`] tolerates (see `Peer::check_disk`).
//! Reads, membership changes, splits and merges are never refused: they are
//! how an operator or PD makes room. A leader also stops sending log entries
//! to followers whose disks are not Normal while the others make a quorum
//! (`Peer::pause_full_followers`), so a full follower does not fill up
//! with the writes its leader takes.

use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::Arc;

pub use tikal_proto::kvrpcpb::DiskFullOpt;
pub use tikal_proto::raft_serverpb::DiskUsage;

/// A store's disk usage, shared by the monitor that sets it and the store
/// loop that reads it.
#[derive(Clone, Debug, Default)]
pub struct DiskState(Arc<AtomicI32>);

impl DiskState {
    pub fn get(&self) -> DiskUsage {
        DiskUsage::try_from(self.0.load(Ordering::Relaxed)).unwrap_or(DiskUsage::Normal)
    }

    pub fn set(&self, usage: DiskUsage) {
        self.0.store(usage as i32, Ordering::Relaxed);
    }
}

/// Whether a write that tolerates `opt` may be written to a store whose
/// disk is at `usage`: Normal takes every write, AlmostFull those that
/// allow it, and AlreadyFull none (as TiKV: the last half of the reserve
/// is Raft's and the operator's, whatever a client asks).
pub fn allows(opt: DiskFullOpt, usage: DiskUsage) -> bool {
    match usage {
        DiskUsage::Normal => true,
        DiskUsage::AlmostFull => opt != DiskFullOpt::NotAllowedOnFull,
        DiskUsage::AlreadyFull => false,
    }
}

/// The store's usage for an amount of free space, as TiKV grades it:
/// AlreadyFull at half the reserve or less, AlmostFull at the reserve or
/// less. With a reserve of 0 only no room at all is AlreadyFull (a write
/// would fail in the engine and stop the store).
pub fn grade(available: u64, reserve: u64) -> DiskUsage {
    if available == 0 {
        DiskUsage::AlreadyFull
    } else if reserve == 0 || available > reserve {
        DiskUsage::Normal
    } else if available > reserve / 2 {
        DiskUsage::AlmostFull
    } else {
        DiskUsage::AlreadyFull
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_option_takes_the_usages_up_to_its_own() {
        use DiskFullOpt::*;
        use DiskUsage::*;
        assert!(allows(NotAllowedOnFull, Normal));
        assert!(!allows(NotAllowedOnFull, AlmostFull));
        assert!(!allows(NotAllowedOnFull, AlreadyFull));
        assert!(allows(AllowedOnAlmostFull, AlmostFull));
        assert!(!allows(AllowedOnAlmostFull, AlreadyFull));
        assert!(allows(AllowedOnAlreadyFull, AlmostFull));
        assert!(!allows(AllowedOnAlreadyFull, AlreadyFull));
    }

    #[test]
    fn free_space_is_graded_against_the_reserve() {
        assert_eq!(grade(101, 100), DiskUsage::Normal);
        assert_eq!(grade(100, 100), DiskUsage::AlmostFull);
        assert_eq!(grade(51, 100), DiskUsage::AlmostFull);
        assert_eq!(grade(50, 100), DiskUsage::AlreadyFull);
        assert_eq!(grade(0, 100), DiskUsage::AlreadyFull);
        assert_eq!(grade(1, 0), DiskUsage::Normal, "no reserve");
        assert_eq!(grade(0, 0), DiskUsage::AlreadyFull, "no reserve, no room");
    }

    #[test]
    fn a_state_reads_back_what_was_set() {
        let s = DiskState::default();
        assert_eq!(s.get(), DiskUsage::Normal);
        s.clone().set(DiskUsage::AlreadyFull);
        assert_eq!(s.get(), DiskUsage::AlreadyFull);
    }
}
