//! Applying committed commands to the KV engine.
//!
//! The raftstore treats command bytes as opaque; an [`Applier`] from the
//! storage layer gives them meaning. Appliers write through an
//! [`ApplyContext`] (the engine's [`KvApply`]), whose batch is committed
//! atomically together with the region's applied index. A command that must
//! read current state (a compare-and-swap) calls `get`, which first commits
//! what earlier entries wrote so the read sees it. Appliers read before they write
//! within one command, so a crash never leaves half a command applied.

use std::any::Any;

use tikal_engine::{Cf, KvApply, KvEngine, KvWriteBatch};

use crate::meta::{put_apply_state, ApplyState};
use crate::Result;

/// What a command's proposer gets back once it is applied.
pub type ApplyOutput = Box<dyn Any + Send>;

/// Gives committed command bytes their meaning.
pub trait Applier: Send + Sync + 'static {
    /// Applies one command. Failures every replica reaches alike (a bad
    /// argument, an undecodable command) go inside the output, for the
    /// proposer. An `Err` is a failure of this store alone (the engine could
    /// not read or write): answering it, or counting the entry as applied,
    /// would let replicas diverge, so it stops the store's Raft loop.
    fn apply(&self, ctx: &mut ApplyContext<'_>, cmd: &[u8]) -> Result<ApplyOutput>;
}

impl KvApply for ApplyContext<'_> {
    fn put(&mut self, cf: Cf, key: &[u8], value: &[u8]) {
        self.written.add(key.len() + value.len());
        self.wb.put(cf, key, value);
    }

    fn delete(&mut self, cf: Cf, key: &[u8]) {
        self.written.add(key.len());
        self.wb.delete(cf, key);
    }

    fn delete_range(&mut self, cf: Cf, start: &[u8], end: &[u8]) {
        self.wb.delete_range(cf, start, end);
    }

    /// Commits what earlier entries of this round wrote, then reads.
    fn get(&mut self, cf: Cf, key: &[u8]) -> tikal_engine::Result<Option<Vec<u8>>> {
        if !self.wb.is_empty() {
            self.write_out(false)?;
        }
        self.engine.get(cf, key)
    }
}

/// One region's apply batch for one round of committed entries.
pub struct ApplyContext<'a> {
    engine: &'a KvEngine,
    wb: KvWriteBatch<'a>,
    region_id: u64,
    state: ApplyState,
    written: crate::RegionStats,
    /// A CompactLog applied: the batch is synced before the log drops the
    /// entries, so the truncated index recorded never trails the log.
    sync: bool,
}

impl<'a> ApplyContext<'a> {
    pub(crate) fn new(engine: &'a KvEngine, region_id: u64, state: ApplyState) -> Self {
        ApplyContext {
            engine,
            wb: engine.write_batch(),
            region_id,
            state,
            written: Default::default(),
            sync: false,
        }
    }

    pub(crate) fn finish_entry(&mut self, index: u64) {
        self.state.applied_index = index;
    }

    /// Records the region's new metadata with this round's writes.
    pub(crate) fn put_region(&mut self, region: &tikal_proto::metapb::Region) {
        crate::meta::put_region(&mut self.wb, region);
    }

    /// Records a region a split made, with an empty log, with this round's
    /// writes.
    pub(crate) fn put_new_region(&mut self, region: &tikal_proto::metapb::Region) {
        crate::meta::put_region(&mut self.wb, region);
        put_apply_state(&mut self.wb, region.id, &ApplyState::initial());
    }

    /// Marks `peer_id` removed, with this round's writes.
    pub(crate) fn put_tombstone_mark(&mut self, peer_id: u64) {
        crate::meta::put_tombstone_mark(&mut self.wb, self.region_id, peer_id);
    }

    /// Records the merge this region prepared, with this round's writes.
    pub(crate) fn put_merge_state(&mut self, state: &crate::admin::MergeState) {
        crate::meta::put_merge_state(&mut self.wb, self.region_id, state);
    }

    /// Records that this region's prepared merge was rolled back.
    pub(crate) fn delete_merge_state(&mut self) {
        crate::meta::delete_merge_state(&mut self.wb, self.region_id);
    }

    /// Forgets region `source_id`, merged into this one, with this round's
    /// writes: a tombstone with its peer here replaces its state.
    pub(crate) fn put_merged_source(&mut self, source_id: u64, peer_id: u64) {
        crate::meta::put_tombstone(&mut self.wb, source_id, peer_id);
    }

    /// Records the log truncated up to `index` (of `term`) with this
    /// round's writes, which are then synced.
    pub(crate) fn truncate(&mut self, index: u64, term: u64) {
        self.state.truncated_index = index;
        self.state.truncated_term = term;
        self.sync = true;
    }

    /// Bytes and keys the round's commands wrote.
    pub(crate) fn written(&self) -> crate::RegionStats {
        self.written
    }

    pub(crate) fn state(&self) -> ApplyState {
        self.state
    }

    /// Writes everything so far with the applied index of the last finished
    /// entry. Not synced unless the log is truncated: a process crash keeps
    /// it (the OS has it); after power loss the Raft log, which is synced,
    /// replays it.
    pub(crate) fn commit(&mut self) -> Result<()> {
        let sync = self.sync;
        Ok(self.write_out(sync)?)
    }

    fn write_out(&mut self, sync: bool) -> tikal_engine::Result<()> {
        let mut wb = std::mem::replace(&mut self.wb, self.engine.write_batch());
        put_apply_state(&mut wb, self.region_id, &self.state);
        self.engine.write(wb, sync)
    }
}
