//! A peer's view of its Raft log, implementing raft-rs' `Storage`.
//!
//! Entries live in the Raft log engine; the most recent ones are also kept in
//! a small in-memory cache, because raft-rs reads back just-appended entries
//! (to commit and apply them) and their terms far more often than old ones.
//!
//! When raft-rs asks for a snapshot (a follower is behind the compacted
//! log), the first ask only records the wish and answers "temporarily
//! unavailable"; the store then starts generating one on another thread
//! (`snap.rs`), and a later ask, once it is done, gets it.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::sync::Arc;

use raft::eraftpb::{ConfState, Entry, HardState, Snapshot};
use raft::{GetEntriesContext, RaftState, StorageError};
use tikal_engine::{RaftLogEngine, RaftLogWrite};
use tikal_proto::metapb;

use crate::meta::ApplyState;
use crate::snap::Generating;

/// Where the peer is in serving snapshots to followers.
pub(crate) enum SnapState {
    Idle,
    /// raft-rs asked; the store starts generating in its next round.
    Wanted,
    Generating(Generating),
    /// Generated, its files in the directory named (gone once sent).
    Ready(Snapshot, std::path::PathBuf),
}

impl SnapState {
    /// What a finished generation leaves.
    pub(crate) fn generated(g: &Generating, result: crate::Result<Snapshot>) -> SnapState {
        match result {
            Ok(snap) => SnapState::Ready(snap, g.dir.clone()),
            Err(_) => SnapState::Idle,
        }
    }
}

const CACHE_MAX_ENTRIES: usize = 4096;

pub(crate) struct PeerStorage {
    region_id: u64,
    log: Arc<RaftLogEngine>,
    pub hard_state: HardState,
    pub conf_state: ConfState,
    pub truncated_index: u64,
    pub truncated_term: u64,
    last_index: u64,
    last_term: u64,
    cache: VecDeque<Entry>,
    /// Approximate bytes of the entries after the truncated index.
    log_size: u64,
    pub snap_state: RefCell<SnapState>,
}

impl PeerStorage {
    pub fn new(
        region: &metapb::Region,
        log: Arc<RaftLogEngine>,
        apply: ApplyState,
    ) -> crate::Result<PeerStorage> {
        let mut hard_state = log.hard_state(region.id)?.unwrap_or_default();
        // The commit index is persisted lazily (it is only a hint), so after
        // a crash it may trail what was applied. Applied implies committed.
        hard_state.commit = hard_state.commit.max(apply.applied_index);
        // A new region's log starts at a term above 0 (meta::INITIAL_INDEX).
        hard_state.term = hard_state.term.max(apply.truncated_term);
        let last_index = log
            .last_index(region.id)
            .unwrap_or(apply.truncated_index)
            .max(apply.truncated_index);
        let mut s = PeerStorage {
            region_id: region.id,
            log,
            hard_state,
            conf_state: conf_state_of(region),
            truncated_index: apply.truncated_index,
            truncated_term: apply.truncated_term,
            last_index,
            last_term: apply.truncated_term,
            cache: VecDeque::new(),
            log_size: 0,
            snap_state: RefCell::new(SnapState::Idle),
        };
        if last_index > apply.truncated_index {
            s.last_term =
                s.read_term(last_index)
                    .map_err(|e| tikal_engine::EngineError::Corrupted {
                        what: "raft log",
                        detail: format!("region {}: {e}", region.id),
                    })?;
        }
        Ok(s)
    }

    /// Records entries just persisted; a conflicting tail is replaced.
    pub fn on_append(&mut self, entries: &[Entry]) {
        let Some(first) = entries.first() else { return };
        while self.cache.back().is_some_and(|e| e.index >= first.index) {
            self.cache.pop_back();
        }
        if self
            .cache
            .back()
            .is_some_and(|e| e.index + 1 != first.index)
        {
            self.cache.clear();
        }
        self.cache.extend(entries.iter().cloned());
        self.log_size += entries.iter().map(|e| e.compute_size_hint()).sum::<u64>();
        while self.cache.len() > CACHE_MAX_ENTRIES {
            self.cache.pop_front();
        }
        if let Some(last) = entries.last() {
            self.last_index = last.index;
            self.last_term = last.term;
        }
    }

    /// Forgets cached entries at or below `index` (already applied).
    pub fn compact_cache(&mut self, index: u64) {
        while self.cache.front().is_some_and(|e| e.index <= index) && self.cache.len() > 1 {
            self.cache.pop_front();
        }
    }

    /// Writes `entries` into the log itself, synced, replacing any from
    /// the first one's index on (see `Peer::catch_up_for_merge`).
    pub fn append_durably(&mut self, entries: &[Entry]) -> crate::Result<()> {
        let mut w = RaftLogWrite::default();
        w.append(self.region_id, entries)?;
        self.log.write(&mut w, true)?;
        self.on_append(entries);
        Ok(())
    }

    /// Drops the entries up to `index` (of `term`), whose truncation the
    /// apply state durably records.
    pub fn compact_to(&mut self, index: u64, term: u64) {
        // Entries are of similar size: keep the share of the size that the
        // remaining entries had.
        let before = self.last_index.saturating_sub(self.truncated_index);
        let after = self.last_index.saturating_sub(index);
        if before > 0 {
            self.log_size = (self.log_size as u128 * after as u128 / before as u128) as u64;
        }
        self.truncated_index = index;
        self.truncated_term = term;
        self.log.compact_to(self.region_id, index.saturating_add(1));
    }

    /// The log now starts after the snapshot: everything before is gone.
    pub fn apply_snapshot(&mut self, snap: &Snapshot) {
        let m = snap.get_metadata();
        self.truncated_index = m.index;
        self.truncated_term = m.term;
        self.last_index = m.index;
        self.last_term = m.term;
        self.cache.clear();
        self.log_size = 0;
        self.conf_state = m.get_conf_state().clone();
        self.hard_state.commit = self.hard_state.commit.max(m.index);
        self.hard_state.term = self.hard_state.term.max(m.term);
    }

    /// Approximate bytes of the log not yet compacted (entries appended
    /// before a restart are not counted).
    pub fn log_size(&self) -> u64 {
        self.log_size
    }

    /// Forgets a snapshot generated, or being generated, before the
    /// region's range changed (a split or merge applied since): a store
    /// that holds the regions the change made would refuse it for good,
    /// its range overlapping theirs. The next request generates anew.
    pub fn forget_snapshot(&self) {
        let mut state = self.snap_state.borrow_mut();
        if matches!(*state, SnapState::Ready(..) | SnapState::Generating(_)) {
            *state = SnapState::Idle;
        }
    }

    /// True once raft-rs asked for a snapshot that is not being generated.
    pub fn wants_snapshot(&self) -> bool {
        matches!(*self.snap_state.borrow(), SnapState::Wanted)
    }

    fn cached(&self, index: u64) -> Option<&Entry> {
        let first = self.cache.front()?.index;
        if index < first {
            return None;
        }
        self.cache.get((index - first) as usize)
    }

    fn read_term(&self, index: u64) -> raft::Result<u64> {
        if let Some(e) = self.cached(index) {
            return Ok(e.term);
        }
        match self.log.entry(self.region_id, index) {
            Ok(Some(e)) => Ok(e.term),
            Ok(None) => Err(raft::Error::Store(StorageError::Unavailable)),
            Err(e) => Err(raft::Error::Store(StorageError::Other(Box::new(e)))),
        }
    }
}

/// The Raft configuration a region's peers and their roles describe,
/// including a joint one (incoming and demoting voters).
pub(crate) fn conf_state_of(region: &metapb::Region) -> ConfState {
    use metapb::PeerRole;
    let mut cs = ConfState::default();
    let mut joint = false;
    for p in &region.peers {
        match PeerRole::try_from(p.role).unwrap_or(PeerRole::Voter) {
            PeerRole::Voter => {
                cs.voters.push(p.id);
                cs.voters_outgoing.push(p.id);
            }
            PeerRole::Learner => cs.learners.push(p.id),
            PeerRole::IncomingVoter => {
                joint = true;
                cs.voters.push(p.id);
            }
            PeerRole::DemotingVoter => {
                joint = true;
                cs.voters_outgoing.push(p.id);
                cs.learners_next.push(p.id);
            }
        }
    }
    if joint {
        cs.auto_leave = true;
    } else {
        cs.voters_outgoing.clear();
    }
    cs
}

impl raft::Storage for PeerStorage {
    fn initial_state(&self) -> raft::Result<RaftState> {
        Ok(RaftState {
            hard_state: self.hard_state.clone(),
            conf_state: self.conf_state.clone(),
        })
    }

    fn entries(
        &self,
        low: u64,
        high: u64,
        max_size: impl Into<Option<u64>>,
        _context: GetEntriesContext,
    ) -> raft::Result<Vec<Entry>> {
        if low <= self.truncated_index {
            return Err(raft::Error::Store(StorageError::Compacted));
        }
        if high > self.last_index + 1 {
            return Err(raft::Error::Store(StorageError::Unavailable));
        }
        let max_size = max_size.into().unwrap_or(u64::MAX);
        let mut out = Vec::with_capacity((high - low) as usize);
        let mut size = 0u64;
        let mut next = low;
        // Older entries come from the log engine, the newest from the cache.
        let cache_first = self.cache.front().map_or(u64::MAX, |e| e.index);
        if next < cache_first.min(high) {
            let end = cache_first.min(high);
            self.log
                .entries(self.region_id, next, end, Some(max_size as usize), &mut out)
                .map_err(|e| raft::Error::Store(StorageError::Other(Box::new(e))))?;
            size = out.iter().map(|e| e.compute_size_hint()).sum();
            next = low + out.len() as u64;
            if next < end {
                return Ok(out);
            }
        }
        while next < high {
            let Some(e) = self.cached(next) else {
                return Err(raft::Error::Store(StorageError::Unavailable));
            };
            size += e.compute_size_hint();
            if !out.is_empty() && size > max_size {
                break;
            }
            out.push(e.clone());
            next += 1;
        }
        Ok(out)
    }

    fn term(&self, idx: u64) -> raft::Result<u64> {
        if idx == self.truncated_index {
            return Ok(self.truncated_term);
        }
        if idx < self.truncated_index {
            return Err(raft::Error::Store(StorageError::Compacted));
        }
        if idx > self.last_index {
            return Err(raft::Error::Store(StorageError::Unavailable));
        }
        if idx == self.last_index {
            return Ok(self.last_term);
        }
        self.read_term(idx)
    }

    fn first_index(&self) -> raft::Result<u64> {
        Ok(self.truncated_index + 1)
    }

    fn last_index(&self) -> raft::Result<u64> {
        Ok(self.last_index)
    }

    fn snapshot(&self, request_index: u64, to: u64) -> raft::Result<Snapshot> {
        let mut state = self.snap_state.borrow_mut();
        if let SnapState::Generating(g) = &*state {
            match g.done.try_recv() {
                Ok(result) => *state = SnapState::generated(g, result),
                Err(crossbeam_channel::TryRecvError::Disconnected) => *state = SnapState::Idle,
                Err(crossbeam_channel::TryRecvError::Empty) => {}
            }
        }
        if let SnapState::Ready(snap, dir) = &*state {
            let m = snap.get_metadata();
            let cs = m.get_conf_state();
            // Usable only if the log still holds what follows it, and if
            // it knows the peer (one added since needs a newer snapshot).
            let knows_to = [
                &cs.voters,
                &cs.learners,
                &cs.voters_outgoing,
                &cs.learners_next,
            ]
            .iter()
            .any(|ids| ids.contains(&to));
            // And only while its files are there: a send removes them.
            let usable = m.index >= request_index && m.index >= self.truncated_index;
            if usable && knows_to && dir.is_dir() {
                return Ok(snap.clone());
            }
            *state = SnapState::Idle;
        }
        if matches!(*state, SnapState::Idle) {
            *state = SnapState::Wanted;
        }
        Err(raft::Error::Store(
            StorageError::SnapshotTemporarilyUnavailable,
        ))
    }
}

trait SizeHint {
    fn compute_size_hint(&self) -> u64;
}

impl SizeHint for Entry {
    fn compute_size_hint(&self) -> u64 {
        (self.data.len() + self.context.len() + 16) as u64
    }
}
