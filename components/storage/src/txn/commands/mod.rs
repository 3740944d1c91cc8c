//! The transactional write commands as types, as TiKV's `txn::commands`.
//!
//! Each command names the user keys it latches ([`WriteCommand::keys`]) and
//! decides from the current MVCC state into a [`Batch`] of lock / write /
//! value changes ([`WriteCommand::process`]). Deciding sees nothing but its
//! [`ProcessContext`] — an MVCC reader, the concurrency manager and the
//! lock-wait table — so every command runs the same on the in-memory
//! engine (the scenario scripts in `txn/testscripts/`) as in a store, where
//! [`super::TxnStorage`] checks the region, takes the latches, proposes the
//! batch through Raft and answers once it is applied.
//!
//! | command | file |
//! |---|---|
//! | Prewrite (optimistic, pessimistic, async commit, 1PC) | [`prewrite`] |
//! | Commit, BatchRollback, Cleanup | [`commit`] |
//! | CheckTxnStatus, CheckSecondaryLocks, TxnHeartBeat | [`status`] |
//! | ResolveLock | [`resolve`] |
//! | PessimisticLock, PessimisticRollback | [`pessimistic`] |
//! | GC (one batch of keys) | [`gc`] |

pub mod commit;
pub mod gc;
pub mod pessimistic;
pub mod prewrite;
pub mod resolve;
pub mod status;

use std::sync::Arc;

use tikal_engine::{Cf, KvRead};

use super::lock_wait::LockWaits;
use super::{ConcurrencyManager, TxnResult};
use crate::command::RawOp;
use crate::mvcc::codec::{append_ts, encode_key};
use crate::mvcc::record::{Lock, Write};
use crate::mvcc::MvccReader;

pub use commit::{BatchRollback, Cleanup, Commit};
pub use gc::{gc_batch, GcCursor};
pub use pessimistic::{LockOutcome, PessimisticLock, PessimisticRollback};
pub use prewrite::{Mutation, MutationOp, Prewrite, PrewriteOutcome};
pub use resolve::ResolveLock;
pub use status::{CheckSecondaryLocks, CheckTxnStatus, TxnHeartBeat, TxnStatus};

/// A transactional write command.
pub trait WriteCommand {
    type Output;

    /// The user keys whose latches the command holds from its decision
    /// until its batch is applied.
    fn keys(&self) -> Vec<Vec<u8>>;

    /// Decides from the applied state of every latched key. On error the
    /// batch is dropped: nothing is written.
    fn process(&self, ctx: &mut ProcessContext<'_>) -> TxnResult<Self::Output>;

    /// Whether the command may write on a store whose disk is almost full
    /// whatever the client's `disk_full_opt`: it ends transactions (commits,
    /// rolls back, resolves locks) rather than adds data, as TiKV lets
    /// them, so that locks do not outlive the room to release them.
    fn allowed_on_almost_full(&self) -> bool {
        false
    }

    /// Whether the command decides a commit ts from `max_ts` (an
    /// async-commit or 1PC prewrite): the leader's term must have synced
    /// `max_ts` from PD, and still lead in that term when it decides.
    fn needs_synced_max_ts(&self) -> bool {
        false
    }
}

/// What a command decides from, and the batch it decides into.
pub struct ProcessContext<'a> {
    pub reader: MvccReader<'a>,
    pub cm: &'a ConcurrencyManager,
    pub waits: &'a Arc<LockWaits>,
    pub batch: Batch,
}

impl<'a> ProcessContext<'a> {
    pub fn new(
        engine: &'a dyn KvRead,
        cm: &'a ConcurrencyManager,
        waits: &'a Arc<LockWaits>,
    ) -> Self {
        ProcessContext {
            reader: MvccReader::new(engine),
            cm,
            waits,
            batch: Batch::default(),
        }
    }

    /// Shows `lock` to readers before it is applied (async commit / 1PC);
    /// it stays in memory until the batch is applied or dropped.
    pub fn lock_in_memory(&mut self, key: &[u8], lock: Lock) {
        self.cm.lock_in_memory(key, lock);
        self.batch.memory_locked.push(key.to_vec());
    }
}

/// The changes one command makes, as Raft-log ops.
#[derive(Default)]
pub struct Batch {
    pub(crate) ops: Vec<RawOp>,
    /// Keys whose lock this batch removes: their waiters wake after apply.
    pub(crate) released: Vec<Vec<u8>>,
    /// Keys whose lock the concurrency manager shows until apply.
    pub(crate) memory_locked: Vec<Vec<u8>>,
}

impl Batch {
    pub fn put_lock(&mut self, key: &[u8], lock: &Lock) {
        self.ops
            .push(RawOp::put(Cf::Lock, encode_key(key), lock.to_bytes()));
    }

    pub fn delete_lock(&mut self, key: &[u8]) {
        self.ops.push(RawOp::delete(Cf::Lock, encode_key(key)));
        self.released.push(key.to_vec());
    }

    pub fn put_write(&mut self, key: &[u8], commit_ts: u64, w: &Write) {
        self.ops.push(RawOp::put(
            Cf::Write,
            append_ts(encode_key(key), commit_ts),
            w.to_bytes(),
        ));
    }

    pub fn delete_write(&mut self, key: &[u8], commit_ts: u64) {
        self.ops.push(RawOp::delete(
            Cf::Write,
            append_ts(encode_key(key), commit_ts),
        ));
    }

    pub fn put_value(&mut self, key: &[u8], start_ts: u64, value: Vec<u8>) {
        self.ops.push(RawOp::put(
            Cf::Default,
            append_ts(encode_key(key), start_ts),
            value,
        ));
    }

    pub fn delete_value(&mut self, key: &[u8], start_ts: u64) {
        self.ops.push(RawOp::delete(
            Cf::Default,
            append_ts(encode_key(key), start_ts),
        ));
    }

    pub fn delete_range(&mut self, cf: Cf, start: Vec<u8>, end: Vec<u8>) {
        self.ops.push(RawOp::delete_range(cf, start, end));
    }

    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }

    /// Forgets every change (a command that waits writes nothing).
    pub fn clear(&mut self) {
        self.ops.clear();
        self.released.clear();
    }
}
