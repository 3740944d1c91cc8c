//! Applying committed commands to the KV engine.
//!
//! The raftstore treats command bytes as opaque; an [`Applier`] from the
//! storage layer gives them meaning. Appliers write through an
//! [`ApplyContext`], whose batch is committed atomically together with the
//! region's applied index. A command that must read current state (a
//! compare-and-swap) calls [`ApplyContext::get`], which first commits what
//! earlier entries wrote so the read sees it. Appliers read before they write
//! within one command, so a crash never leaves half a command applied.

use std::any::Any;

use tikal_engine::{Cf, KvEngine, KvWriteBatch};

use crate::meta::{put_apply_state, ApplyState};
use crate::Result;

/// What a command's proposer gets back once it is applied.
pub type ApplyOutput = Box<dyn Any + Send>;

/// Gives committed command bytes their meaning.
pub trait Applier: Send + Sync + 'static {
    /// Applies one command. An error here is a bug or corrupted log: the
    /// command is deterministic, so every replica would fail the same way.
    /// Implementations report client-visible failures inside the output.
    fn apply(&self, ctx: &mut ApplyContext<'_>, cmd: &[u8]) -> ApplyOutput;
}

/// One region's apply batch for one round of committed entries.
pub struct ApplyContext<'a> {
    engine: &'a KvEngine,
    wb: KvWriteBatch<'a>,
    region_id: u64,
    state: ApplyState,
}

impl<'a> ApplyContext<'a> {
    pub(crate) fn new(engine: &'a KvEngine, region_id: u64, state: ApplyState) -> Self {
        ApplyContext {
            engine,
            wb: engine.write_batch(),
            region_id,
            state,
        }
    }

    pub fn put(&mut self, cf: Cf, key: &[u8], value: &[u8]) {
        self.wb.put(cf, key, value);
    }

    pub fn delete(&mut self, cf: Cf, key: &[u8]) {
        self.wb.delete(cf, key);
    }

    pub fn delete_range(&mut self, cf: Cf, start: &[u8], end: &[u8]) {
        self.wb.delete_range(cf, start, end);
    }

    /// Reads `key` as of all commands applied so far in this round.
    pub fn get(&mut self, cf: Cf, key: &[u8]) -> Result<Option<Vec<u8>>> {
        if !self.wb.is_empty() {
            self.commit()?;
        }
        Ok(self.engine.get(cf, key)?)
    }

    pub(crate) fn finish_entry(&mut self, index: u64) {
        self.state.applied_index = index;
    }

    pub(crate) fn state(&self) -> ApplyState {
        self.state
    }

    /// Writes everything so far with the applied index of the last finished
    /// entry. Not synced: a process crash keeps it (the OS has it); after
    /// power loss the Raft log, which is synced, replays it.
    pub(crate) fn commit(&mut self) -> Result<()> {
        let mut wb = std::mem::replace(&mut self.wb, self.engine.write_batch());
        put_apply_state(&mut wb, self.region_id, &self.state);
        self.engine.write(wb, false)?;
        Ok(())
    }
}
