//! The Raft log engine: raft-engine holding each region's log and hard state.
//!
//! Every region is a raft group keyed by its region id. One [`RaftLogWrite`]
//! may carry appends for many regions; [`RaftLogEngine::write`] persists it
//! with one fsync. That is the store's group commit: all proposals that
//! arrive while the previous batch is being synced share the next fsync.

use raft::eraftpb::{Entry, HardState};
use raft_engine::{Config, Engine, LogBatch, MessageExt, ReadableSize};

use crate::{Result, WriteBudget};

const HARD_STATE_KEY: &[u8] = b"hard_state";

#[derive(Clone)]
struct EntryExt;

impl MessageExt for EntryExt {
    type Entry = Entry;

    fn index(e: &Entry) -> u64 {
        e.index
    }
}

pub struct RaftLogEngine {
    engine: Engine,
    /// Told apart from other engines on one thread (see
    /// [`RaftLogEngine::mark_cache_sentinel`]).
    id: u64,
    sentinel: std::sync::OnceLock<(u64, u64)>,
    budget: WriteBudget,
}

static ENGINES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

thread_local! {
    /// The engine whose entries this thread read last.
    static LAST_READER: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
}

/// Log appends and hard states for any number of regions, written atomically.
#[derive(Default)]
pub struct RaftLogWrite {
    batch: LogBatch,
}

impl RaftLogWrite {
    pub fn append(&mut self, region_id: u64, entries: &[Entry]) -> Result<()> {
        self.batch.add_entries::<EntryExt>(region_id, entries)?;
        Ok(())
    }

    pub fn set_hard_state(&mut self, region_id: u64, hs: &HardState) -> Result<()> {
        self.batch
            .put_message(region_id, HARD_STATE_KEY.to_vec(), hs)?;
        Ok(())
    }

    /// Forgets the region's whole log and hard state (a snapshot replaces
    /// them, or the region left this store). Later items of this write
    /// start the region afresh.
    pub fn clean(&mut self, region_id: u64) {
        self.batch
            .add_command(region_id, raft_engine::Command::Clean);
    }

    pub fn is_empty(&self) -> bool {
        self.batch.is_empty()
    }
}

impl RaftLogEngine {
    pub fn open(dir: &std::path::Path) -> Result<RaftLogEngine> {
        let cfg = Config {
            dir: dir.to_string_lossy().into_owned(),
            target_file_size: ReadableSize::mb(64),
            purge_threshold: ReadableSize::mb(512),
            ..Default::default()
        };
        Ok(RaftLogEngine {
            engine: Engine::open(cfg)?,
            id: ENGINES.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
            sentinel: std::sync::OnceLock::new(),
            budget: WriteBudget::default(),
        })
    }

    /// For processes that run several engines on one thread (the
    /// in-process test clusters): raft-engine keeps the last block of
    /// entries it read in a thread-local cache keyed by file and offset,
    /// not by engine, so one engine could be handed another's block at the
    /// same place. Entry `index` of raft group `region`, written by the
    /// caller in a block no other engine has (a size of its own), is read
    /// first whenever this engine reads entries after another did on the
    /// thread, which leaves that block in the cache. A store process has
    /// one engine and marks none.
    pub fn mark_cache_sentinel(&self, region: u64, index: u64) {
        let _ = self.sentinel.set((region, index));
    }

    fn before_entry_read(&self) {
        let Some(&(region, index)) = self.sentinel.get() else {
            return;
        };
        if LAST_READER.with(|last| last.replace(self.id)) != self.id {
            let _ = self.engine.get_entry::<EntryExt>(region, index);
        }
    }

    /// Makes this engine share `budget`'s crash point (tests; see
    /// [`WriteBudget`]).
    pub fn with_budget(mut self, budget: WriteBudget) -> RaftLogEngine {
        self.budget = budget;
        self
    }

    /// Persists `write`; with `sync` the call returns only after fsync.
    pub fn write(&self, write: &mut RaftLogWrite, sync: bool) -> Result<()> {
        if write.batch.is_empty() {
            return Ok(());
        }
        self.budget.take()?;
        self.engine.write(&mut write.batch, sync)?;
        Ok(())
    }

    pub fn hard_state(&self, region_id: u64) -> Result<Option<HardState>> {
        Ok(self
            .engine
            .get_message::<HardState>(region_id, HARD_STATE_KEY)?)
    }

    /// Entries `[low, high)`, up to `max_size` bytes (at least one entry).
    pub fn entries(
        &self,
        region_id: u64,
        low: u64,
        high: u64,
        max_size: Option<usize>,
        out: &mut Vec<Entry>,
    ) -> Result<usize> {
        self.before_entry_read();
        Ok(self
            .engine
            .fetch_entries_to::<EntryExt>(region_id, low, high, max_size, out)?)
    }

    pub fn entry(&self, region_id: u64, index: u64) -> Result<Option<Entry>> {
        self.before_entry_read();
        Ok(self.engine.get_entry::<EntryExt>(region_id, index)?)
    }

    /// Every region with a log or hard state here.
    pub fn regions(&self) -> Vec<u64> {
        self.engine.raft_groups()
    }

    pub fn first_index(&self, region_id: u64) -> Option<u64> {
        self.engine.first_index(region_id)
    }

    pub fn last_index(&self, region_id: u64) -> Option<u64> {
        self.engine.last_index(region_id)
    }

    /// Drops entries before `index`. The caller has durably recorded the
    /// truncated index and term first.
    pub fn compact_to(&self, region_id: u64, index: u64) {
        // Past a crash point nothing is written, this either.
        if !self.budget.is_spent() {
            self.engine.compact_to(region_id, index);
        }
    }

    /// Reclaims log files whose entries were all compacted away.
    pub fn purge(&self) -> Result<()> {
        if self.budget.is_spent() {
            return Err(crate::EngineError::CrashPoint);
        }
        self.engine.purge_expired_files()?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(index: u64, term: u64, data: &[u8]) -> Entry {
        Entry {
            index,
            term,
            data: data.to_vec().into(),
            ..Default::default()
        }
    }

    #[test]
    fn entries_and_hard_state_survive_reopen() {
        let dir = tempfile::tempdir().unwrap();
        {
            let engine = RaftLogEngine::open(dir.path()).unwrap();
            let mut w = RaftLogWrite::default();
            w.append(7, &[entry(1, 1, b"a"), entry(2, 1, b"b")])
                .unwrap();
            let hs = HardState {
                term: 1,
                commit: 2,
                ..Default::default()
            };
            w.set_hard_state(7, &hs).unwrap();
            engine.write(&mut w, true).unwrap();
        }
        let engine = RaftLogEngine::open(dir.path()).unwrap();
        assert_eq!(engine.last_index(7), Some(2));
        assert_eq!(engine.hard_state(7).unwrap().unwrap().commit, 2);
        let mut out = vec![];
        engine.entries(7, 1, 3, None, &mut out).unwrap();
        assert_eq!(out.len(), 2);
        assert_eq!(&out[1].data[..], b"b");
        engine.compact_to(7, 2);
        assert_eq!(engine.first_index(7), Some(2));
    }

    #[test]
    fn clean_forgets_a_region_and_later_items_start_it_afresh() {
        let dir = tempfile::tempdir().unwrap();
        {
            let engine = RaftLogEngine::open(dir.path()).unwrap();
            let mut w = RaftLogWrite::default();
            w.append(
                7,
                &[entry(1, 1, b"a"), entry(2, 1, b"b"), entry(3, 1, b"c")],
            )
            .unwrap();
            w.append(8, &[entry(1, 1, b"other")]).unwrap();
            engine.write(&mut w, true).unwrap();
            let mut w = RaftLogWrite::default();
            w.clean(7);
            let hs = HardState {
                term: 4,
                commit: 10,
                ..Default::default()
            };
            w.set_hard_state(7, &hs).unwrap();
            engine.write(&mut w, true).unwrap();
            assert_eq!(engine.last_index(7), None);
        }
        let engine = RaftLogEngine::open(dir.path()).unwrap();
        assert_eq!(engine.last_index(7), None);
        assert_eq!(engine.entry(7, 2).unwrap(), None);
        assert_eq!(engine.hard_state(7).unwrap().unwrap().commit, 10);
        assert_eq!(engine.last_index(8), Some(1));
        let mut w = RaftLogWrite::default();
        w.append(7, &[entry(11, 4, b"next")]).unwrap();
        engine.write(&mut w, true).unwrap();
        assert_eq!(engine.first_index(7), Some(11));
    }
}
