//! How far stale reads may go on one replica of a region.
//!
//! A region's leader computes a safe ts: no commit at or below it can
//! still land, and every commit below it is in the log up to the index
//! the leader had applied when it computed it. Once a quorum confirmed
//! that the leader still led, it sends the pair (applied index, safe ts)
//! to the region's other stores (`tikvpb.Tikv/CheckLeader`). A replica
//! serves a stale read at `ts <= safe ts` once it has applied that index
//! itself; until then the pair waits here.
//!
//! The leader keeps the pairs a quorum confirmed here too, and serves its
//! own stale reads up to them: a leader cut off from its quorum may not
//! know yet that another one took over.
//!
//! Pairs are kept per region version: after a split or merge the range
//! they were computed for is no longer the region's, and reads see no
//! safe ts until a pair for the new version is applied. Replacing the
//! replica's data (a snapshot, or destroying the peer) first invalidates
//! everything and bumps a generation: a stale read that overlapped it
//! sees the generation move and is refused rather than answered from
//! half-replaced data. Invalidated, the progress takes no pair until it
//! is resumed (a snapshot fully applied), as TiKV pauses it: a pair the
//! leader sends meanwhile would otherwise be served at once against the
//! applied index from before the snapshot, over half-replaced data. A
//! merge's source is invalidated once its PrepareMerge applies (its
//! target may take writes in its range from then on, as TiKV discards
//! it) and resumed if the merge rolls back.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};

use parking_lot::Mutex;

/// Pairs waiting for this replica's apply; older ones are merged into the
/// newest when more arrive (a lagging replica must not pin memory).
const MAX_PENDING: usize = 8;

/// A leader's read state for one region version.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ReadState {
    pub applied_index: u64,
    pub safe_ts: u64,
    pub version: u64,
}

#[derive(Debug, Default)]
pub struct ReadProgress {
    applied: AtomicU64,
    /// Bumped whenever the replica's data is replaced wholesale.
    generation: AtomicU64,
    inner: Mutex<Inner>,
    /// The replica's Raft term and the leader it knows in it (0: none),
    /// set by the store before the messages of each Raft ready leave (see
    /// [`ReadProgress::leader`]).
    leader: Mutex<(u64, u64)>,
}

#[derive(Debug, Default)]
struct Inner {
    /// The newest state this replica has applied far enough to serve.
    ready: ReadState,
    /// States from the leader beyond this replica's applied index, in
    /// index order.
    pending: VecDeque<ReadState>,
    /// Invalidated and not resumed: states from the leader are dropped.
    paused: bool,
}

impl ReadProgress {
    /// The replica's term and the leader peer it knows in it, as its Raft
    /// has them now, not as of the last published region view: a replica
    /// that voted for a new leader, or campaigns, must stop confirming
    /// the old one's leadership (CheckLeader) before that vote or
    /// campaign can reach anyone, as TiKV updates its leader info on the
    /// Raft thread.
    pub fn leader(&self) -> (u64, u64) {
        *self.leader.lock()
    }

    /// The store sets it (public for tests of CheckLeader).
    pub fn set_leader(&self, term: u64, leader_id: u64) {
        *self.leader.lock() = (term, leader_id);
    }

    /// The index this replica has applied.
    pub fn applied(&self) -> u64 {
        self.applied.load(Ordering::SeqCst)
    }

    /// This replica applied up to `index`: states it now covers are served.
    pub(crate) fn applied_to(&self, index: u64) {
        self.applied.fetch_max(index, Ordering::SeqCst);
        let mut inner = self.inner.lock();
        inner.promote(index);
    }

    /// A state from the region's leader (already checked to lead).
    pub fn update(&self, state: ReadState) {
        let mut inner = self.inner.lock();
        if inner.paused {
            return;
        }
        if state.version < inner.ready.version
            || (state.version == inner.ready.version && state.safe_ts <= inner.ready.safe_ts)
        {
            return;
        }
        // Indexes and timestamps only grow for one leader; a state that
        // goes back (a newer leader, behind) replaces what waits.
        while inner
            .pending
            .back()
            .is_some_and(|p| p.applied_index >= state.applied_index || p.safe_ts >= state.safe_ts)
        {
            inner.pending.pop_back();
        }
        if inner.pending.len() >= MAX_PENDING {
            // Keep the oldest: the newest index subsumes the rest.
            inner.pending.truncate(1);
        }
        inner.pending.push_back(state);
        let applied = self.applied();
        inner.promote(applied);
    }

    /// The replica's data is about to be replaced: no safe ts until the
    /// leader sends a new one. (The store calls it; public for tests of
    /// readers.)
    pub fn invalidate(&self) {
        let mut inner = self.inner.lock();
        self.generation.fetch_add(1, Ordering::SeqCst);
        *inner = Inner {
            paused: true,
            ..Inner::default()
        };
    }

    /// The replica's data is in place again: states from the leader are
    /// taken again.
    pub(crate) fn resume(&self) {
        self.inner.lock().paused = false;
    }

    /// Changes whenever the replica's data was replaced (see the module
    /// docs); a stale read compares it before and after reading.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::SeqCst)
    }

    /// The newest state this replica serves, if it is for `version`.
    pub fn ready(&self, version: u64) -> Option<ReadState> {
        let inner = self.inner.lock();
        (inner.ready.version == version && inner.ready.safe_ts > 0).then_some(inner.ready)
    }

    /// The safe ts a stale read of the region at `version` may use here
    /// (0: none).
    pub fn safe_ts(&self, version: u64) -> u64 {
        let inner = self.inner.lock();
        if inner.ready.version == version {
            inner.ready.safe_ts
        } else {
            0
        }
    }
}

impl Inner {
    fn promote(&mut self, applied: u64) {
        while let Some(next) = self.pending.front() {
            if next.applied_index > applied {
                break;
            }
            let next = *next;
            self.pending.pop_front();
            let newer_version = next.version > self.ready.version;
            if newer_version || next.safe_ts > self.ready.safe_ts {
                self.ready = next;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(applied_index: u64, safe_ts: u64, version: u64) -> ReadState {
        ReadState {
            applied_index,
            safe_ts,
            version,
        }
    }

    #[test]
    fn a_state_is_served_only_once_its_index_is_applied() {
        let p = ReadProgress::default();
        p.applied_to(10);
        p.update(state(12, 100, 1));
        assert_eq!(p.safe_ts(1), 0, "index 12 not applied yet");
        p.applied_to(11);
        assert_eq!(p.safe_ts(1), 0);
        p.applied_to(12);
        assert_eq!(p.safe_ts(1), 100);
        // Already applied: served at once.
        p.update(state(12, 150, 1));
        assert_eq!(p.safe_ts(1), 150);
    }

    #[test]
    fn safe_ts_never_goes_back_and_belongs_to_one_version() {
        let p = ReadProgress::default();
        p.applied_to(20);
        p.update(state(20, 200, 3));
        p.update(state(20, 150, 3));
        assert_eq!(p.safe_ts(3), 200, "an older state does not lower it");
        assert_eq!(
            p.safe_ts(4),
            0,
            "a split region's reads wait for a new state"
        );
        p.update(state(21, 210, 4));
        p.applied_to(21);
        assert_eq!(p.safe_ts(4), 210);
        assert_eq!(p.safe_ts(3), 0);
        p.update(state(22, 300, 3));
        p.applied_to(22);
        assert_eq!(p.safe_ts(4), 210, "a state for an older version is ignored");
    }

    #[test]
    fn a_lagging_replica_keeps_a_bounded_queue_and_serves_in_order() {
        let p = ReadProgress::default();
        for i in 1..=100u64 {
            p.update(state(i * 10, i * 1000, 1));
        }
        assert!(p.inner.lock().pending.len() <= MAX_PENDING);
        p.applied_to(10);
        assert_eq!(p.safe_ts(1), 1000, "the oldest state is kept");
        p.applied_to(1000);
        assert_eq!(p.safe_ts(1), 100_000);
        assert!(p.inner.lock().pending.is_empty());
    }

    #[test]
    fn the_ready_state_is_the_one_served_for_its_version() {
        let p = ReadProgress::default();
        assert_eq!(p.ready(1), None, "nothing yet");
        p.applied_to(10);
        p.update(state(10, 100, 1));
        p.update(state(12, 120, 1));
        assert_eq!(p.ready(1), Some(state(10, 100, 1)), "12 is not applied");
        assert_eq!(p.ready(2), None, "another version");
    }

    #[test]
    fn invalidating_drops_every_state_and_moves_the_generation() {
        let p = ReadProgress::default();
        p.applied_to(10);
        p.update(state(10, 100, 1));
        p.update(state(20, 200, 1));
        let before = p.generation();
        p.invalidate();
        assert_ne!(p.generation(), before);
        assert_eq!(p.safe_ts(1), 0);
        // A state sent while the data is being replaced is not taken: it
        // would be served against the applied index from before.
        p.update(state(5, 120, 1));
        assert_eq!(p.safe_ts(1), 0, "taken while paused");
        p.applied_to(20);
        assert_eq!(p.safe_ts(1), 0, "a state from before is gone");
        p.resume();
        p.update(state(20, 150, 1));
        assert_eq!(p.safe_ts(1), 150, "a lower safe ts is taken after a reset");
    }

    #[test]
    fn a_state_behind_what_waits_replaces_it() {
        // A new leader's first state may carry a lower index than the old
        // leader's last one that still waits; the replica must not wait
        // for an index that may come later than the new state.
        let p = ReadProgress::default();
        p.applied_to(5);
        p.update(state(50, 500, 1));
        p.update(state(8, 400, 1));
        p.applied_to(8);
        assert_eq!(p.safe_ts(1), 400);
    }
}
