//! Applying committed commands to the KV engine.
//!
//! The raftstore treats command bytes as opaque; an [`Applier`] from the
//! storage layer gives them meaning. Appliers write through an
//! [`ApplyContext`] (the engine's [`KvApply`]), one region's view of an
//! [`ApplyBatch`]: every region applying in one pass of a round writes into
//! the same batch, each with its applied index, and the batch is written
//! once at the pass's end (one RocksDB write, not one per region). Nothing
//! applied is answered or read before that write. A command that must
//! read current state (a compare-and-swap) calls `get`, which first writes
//! what earlier entries put in the batch so the read sees it (every region
//! in it with its applied index so far). Appliers read before they write
//! within one command, so a crash never leaves half a command applied.
//! An entry of several client commands (see `admin.rs`) holds its writes
//! out of the batch until the entry is finished, and `get` lays them over
//! what it reads: a read by its third command sees what the first two
//! wrote, yet never writes half the entry to the engine, where a crash
//! would leave it to be applied a second time on top of itself.

use std::any::Any;

use tikal_engine::{Cf, KvApply, KvEngine, KvWriteBatch};
use tikal_proto::metapb;

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

    /// Run on a region's leader before it gives another replica a read
    /// index for a read that carries `check` (see `replica_read.rs`):
    /// whatever the read needs of the leader's in-memory state. Returns
    /// why the read may not go ahead, for the replica to hand its reader,
    /// or None.
    fn check_replica_read(&self, _region: &metapb::Region, _check: &[u8]) -> Option<Vec<u8>> {
        None
    }
}

impl KvApply for ApplyContext<'_> {
    fn put(&mut self, cf: Cf, key: &[u8], value: &[u8]) {
        self.written.add(key.len() + value.len());
        match &mut self.held {
            Some(held) => held.push(Held::Put(cf, key.to_vec(), value.to_vec())),
            None => self.wb.put(cf, key, value),
        }
    }

    fn delete(&mut self, cf: Cf, key: &[u8]) {
        self.written.add(key.len());
        match &mut self.held {
            Some(held) => held.push(Held::Delete(cf, key.to_vec())),
            None => self.wb.delete(cf, key),
        }
    }

    fn delete_range(&mut self, cf: Cf, start: &[u8], end: &[u8]) {
        match &mut self.held {
            Some(held) => held.push(Held::DeleteRange(cf, start.to_vec(), end.to_vec())),
            None => self.wb.delete_range(cf, start, end),
        }
    }

    /// Writes what the batch holds so far (earlier entries, other
    /// regions' parts), then reads, with what this entry's earlier
    /// commands wrote laid over.
    fn get(&mut self, cf: Cf, key: &[u8]) -> tikal_engine::Result<Option<Vec<u8>>> {
        if !self.wb.is_empty() {
            self.write_out()?;
        }
        let mut value = self.engine.get(cf, key)?;
        for w in self.held.iter().flatten() {
            match w {
                Held::Put(c, k, v) if *c == cf && k == key => value = Some(v.clone()),
                Held::Delete(c, k) if *c == cf && k == key => value = None,
                Held::DeleteRange(c, start, end)
                    if *c == cf
                        && key >= start.as_slice()
                        && (end.is_empty() || key < end.as_slice()) =>
                {
                    value = None
                }
                _ => {}
            }
        }
        Ok(value)
    }
}

/// A write of an unfinished entry of several commands (module docs).
enum Held {
    Put(Cf, Vec<u8>, Vec<u8>),
    Delete(Cf, Vec<u8>),
    DeleteRange(Cf, Vec<u8>, Vec<u8>),
}

/// The KV write shared by every region applying in one pass of a round.
pub struct ApplyBatch<'a> {
    engine: &'a KvEngine,
    wb: Option<KvWriteBatch<'a>>,
    /// A CompactLog applied: the write is synced before the log drops the
    /// entries, so the truncated index recorded never trails the log.
    sync: bool,
}

impl<'a> ApplyBatch<'a> {
    pub(crate) fn new(engine: &'a KvEngine) -> Self {
        ApplyBatch {
            engine,
            wb: None,
            sync: false,
        }
    }

    pub(crate) fn engine(&self) -> &'a KvEngine {
        self.engine
    }

    /// Region `region_id`'s view of the batch, from its applied `state`;
    /// given back with [`ApplyBatch::restore`].
    pub(crate) fn context(&mut self, region_id: u64, state: ApplyState) -> ApplyContext<'a> {
        let wb = self.wb.take().unwrap_or_else(|| self.engine.write_batch());
        ApplyContext {
            engine: self.engine,
            wb,
            region_id,
            state,
            written: Default::default(),
            sync: self.sync,
            held: None,
        }
    }

    /// Takes a region's writes back, with its applied index.
    pub(crate) fn restore(&mut self, ctx: ApplyContext<'a>) {
        let ApplyContext {
            mut wb,
            region_id,
            state,
            sync,
            ..
        } = ctx;
        put_apply_state(&mut wb, region_id, &state);
        self.wb = Some(wb);
        self.sync = sync;
    }

    /// Writes everything so far. Not synced unless a log was truncated: a
    /// process crash keeps it (the OS has it); after power loss the Raft
    /// log, which is synced, replays it.
    pub(crate) fn write(&mut self) -> Result<()> {
        let sync = std::mem::take(&mut self.sync);
        match self.wb.take() {
            Some(wb) if !wb.is_empty() => Ok(self.engine.write(wb, sync)?),
            _ => Ok(()),
        }
    }
}

/// One region's part of an [`ApplyBatch`], while its entries apply.
pub struct ApplyContext<'a> {
    engine: &'a KvEngine,
    wb: KvWriteBatch<'a>,
    region_id: u64,
    state: ApplyState,
    written: crate::RegionStats,
    sync: bool,
    /// While an entry of several commands applies: their writes so far.
    held: Option<Vec<Held>>,
}

impl<'a> ApplyContext<'a> {
    /// The entry about to apply holds several commands: their writes are
    /// held out of the batch until [`ApplyContext::finish_entry`].
    pub(crate) fn hold_writes(&mut self) {
        self.held = Some(vec![]);
    }

    pub(crate) fn finish_entry(&mut self, index: u64) {
        for w in self.held.take().into_iter().flatten() {
            match w {
                Held::Put(cf, key, value) => self.wb.put(cf, &key, &value),
                Held::Delete(cf, key) => self.wb.delete(cf, &key),
                Held::DeleteRange(cf, start, end) => self.wb.delete_range(cf, &start, &end),
            }
        }
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

    /// Marks `peer_id` removed from `region` (as the removal left it),
    /// with this round's writes.
    pub(crate) fn put_tombstone_mark(
        &mut self,
        region: &tikal_proto::metapb::Region,
        peer_id: u64,
    ) {
        crate::meta::put_tombstone_mark(&mut self.wb, region, peer_id);
    }

    /// Records the merge this region prepared, with this round's writes.
    pub(crate) fn put_merge_state(&mut self, state: &crate::admin::MergeState) {
        crate::meta::put_merge_state(&mut self.wb, self.region_id, state);
    }

    /// Records that this region's prepared merge was rolled back.
    pub(crate) fn delete_merge_state(&mut self) {
        crate::meta::delete_merge_state(&mut self.wb, self.region_id);
    }

    /// Forgets region `source`, merged into this one, with this round's
    /// writes: a tombstone with its peer here replaces its state, and a
    /// mark says where it went and what it was.
    pub(crate) fn put_merged_source(
        &mut self,
        source: &tikal_proto::metapb::Region,
        peer_id: u64,
        version: u64,
    ) {
        crate::meta::put_tombstone(&mut self.wb, source, peer_id);
        crate::meta::put_merged_into(&mut self.wb, source, self.region_id, version);
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

    /// Writes what the batch holds so far, for a command that needs
    /// everything earlier in the engine (an admin command).
    pub(crate) fn flush(&mut self) -> Result<()> {
        Ok(self.write_out()?)
    }

    /// Writes the batch so far (other regions' finished parts included)
    /// with this region's applied index of its last finished entry; synced
    /// if a log truncation is in it.
    fn write_out(&mut self) -> tikal_engine::Result<()> {
        let mut wb = std::mem::replace(&mut self.wb, self.engine.write_batch());
        put_apply_state(&mut wb, self.region_id, &self.state);
        self.engine.write(wb, self.sync)
    }
}

#[cfg(test)]
mod tests {
    use tikal_engine::CF_DEFAULT;

    use super::*;
    use crate::meta::load_apply_state;

    fn applied(kv: &KvEngine, region_id: u64) -> u64 {
        load_apply_state(kv, region_id).unwrap().applied_index
    }

    /// Puts `key` = `value` as region `region_id`'s entry `index`.
    fn put_entry(batch: &mut ApplyBatch<'_>, region_id: u64, index: u64, key: &[u8], value: &[u8]) {
        let mut ctx = batch.context(region_id, ApplyState::initial());
        ctx.put(CF_DEFAULT, key, value);
        ctx.finish_entry(index);
        batch.restore(ctx);
    }

    #[test]
    fn regions_applying_together_share_one_write() {
        let dir = tempfile::tempdir().unwrap();
        let kv = KvEngine::open(dir.path()).unwrap();
        let mut batch = ApplyBatch::new(&kv);
        put_entry(&mut batch, 1, 6, b"a", b"1");
        put_entry(&mut batch, 2, 6, b"b", b"1");
        // Nothing is in the engine (or answerable) before the write.
        assert_eq!(kv.get(CF_DEFAULT, b"a").unwrap(), None);
        assert_eq!(kv.get(CF_DEFAULT, b"b").unwrap(), None);
        batch.write().unwrap();
        assert_eq!(kv.get(CF_DEFAULT, b"a").unwrap(), Some(b"1".to_vec()));
        assert_eq!(kv.get(CF_DEFAULT, b"b").unwrap(), Some(b"1".to_vec()));
        assert_eq!((applied(&kv, 1), applied(&kv, 2)), (6, 6));
    }

    #[test]
    fn a_read_while_applying_writes_every_region_so_far_with_its_applied_index() {
        let dir = tempfile::tempdir().unwrap();
        let kv = KvEngine::open(dir.path()).unwrap();
        let mut batch = ApplyBatch::new(&kv);
        put_entry(&mut batch, 1, 6, b"a", b"1");
        let mut ctx = batch.context(2, ApplyState::initial());
        ctx.put(CF_DEFAULT, b"b", b"1");
        ctx.finish_entry(6);
        // Region 2's next entry reads what region 1 wrote this round.
        assert_eq!(ctx.get(CF_DEFAULT, b"a").unwrap(), Some(b"1".to_vec()));
        assert_eq!((applied(&kv, 1), applied(&kv, 2)), (6, 6));
        ctx.put(CF_DEFAULT, b"b", b"2");
        ctx.finish_entry(7);
        batch.restore(ctx);
        assert_eq!(kv.get(CF_DEFAULT, b"b").unwrap(), Some(b"1".to_vec()));
        batch.write().unwrap();
        assert_eq!(kv.get(CF_DEFAULT, b"b").unwrap(), Some(b"2".to_vec()));
        assert_eq!(applied(&kv, 2), 7);
    }

    #[test]
    fn a_read_inside_an_entry_of_several_commands_writes_none_of_that_entry() {
        let dir = tempfile::tempdir().unwrap();
        let kv = KvEngine::open(dir.path()).unwrap();
        let mut batch = ApplyBatch::new(&kv);
        let mut ctx = batch.context(2, ApplyState::initial());
        ctx.put(CF_DEFAULT, b"a", b"1");
        ctx.put(CF_DEFAULT, b"c", b"1");
        ctx.finish_entry(6);
        // Entry 7 holds several commands: the first two write, the third
        // reads and sees them.
        ctx.hold_writes();
        ctx.put(CF_DEFAULT, b"b", b"2");
        ctx.delete(CF_DEFAULT, b"a");
        ctx.delete_range(CF_DEFAULT, b"c", b"");
        assert_eq!(ctx.get(CF_DEFAULT, b"b").unwrap(), Some(b"2".to_vec()));
        assert_eq!(ctx.get(CF_DEFAULT, b"a").unwrap(), None);
        assert_eq!(ctx.get(CF_DEFAULT, b"c").unwrap(), None);
        // The read wrote entry 6 and nothing of entry 7: a crash now
        // replays 7 whole, from the state after 6.
        assert_eq!(applied(&kv, 2), 6);
        assert_eq!(kv.get(CF_DEFAULT, b"a").unwrap(), Some(b"1".to_vec()));
        assert_eq!(kv.get(CF_DEFAULT, b"b").unwrap(), None);
        assert_eq!(kv.get(CF_DEFAULT, b"c").unwrap(), Some(b"1".to_vec()));
        ctx.finish_entry(7);
        batch.restore(ctx);
        batch.write().unwrap();
        assert_eq!(applied(&kv, 2), 7);
        assert_eq!(kv.get(CF_DEFAULT, b"a").unwrap(), None);
        assert_eq!(kv.get(CF_DEFAULT, b"b").unwrap(), Some(b"2".to_vec()));
        assert_eq!(kv.get(CF_DEFAULT, b"c").unwrap(), None);
    }
}
