//! The transactional KV API: Percolator as TiKV runs it.
//!
//! * [`commands`] — each write command a type (Prewrite, Commit, …) that
//!   names its keys and decides from the MVCC state into a batch;
//!   [`actions`] holds the per-key steps they share (commit a key, roll
//!   one back, when a lock has expired).
//! * [`reads`] — snapshot reads at a timestamp.
//! * [`TxnStorage`] ([`storage`]) — runs them in a store: checks the
//!   region, takes the latches of a command's keys ([`latch`]), decides,
//!   and proposes the batch as one Raft command; the latches are held until
//!   it is applied, so the next command on those keys reads the result.
//!   Reads take no latches.
//! * The concurrency manager ([`ConcurrencyManager`]) tracks the largest
//!   timestamp any read has used, so an async-commit or 1PC transaction
//!   never commits below a read that could have missed it, and holds
//!   async-commit locks in memory between their decision and their apply
//!   so readers see them.
//! * [`lock_wait`] — pessimistic lock waits and the deadlock detector.
//!
//! Commands and reads see the engine only through an MVCC reader over
//! [`tikal_engine::KvRead`], so the scenario scripts in `testscripts/` run
//! them on the in-memory engine.

pub mod actions;
pub mod commands;
pub mod key_error;
mod latch;
pub mod lock_wait;
mod max_ts;
pub mod reads;
#[cfg(test)]
mod scenarios;
mod storage;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};

use parking_lot::Mutex;
use tikal_proto::kvrpcpb;

use crate::mvcc::record::Lock;
use crate::StorageError;

pub use commands::PrewriteOutcome;
pub use max_ts::{InvalidMaxTsAction, MaxTsPolicy};
pub use storage::{ReadStart, TsoSource, TxnStorage, DEFAULT_WAIT_FOR_LOCK_TIMEOUT};

/// A failed transactional command: a storage failure (region, argument,
/// internal) or key errors the client resolves or reports.
#[derive(Debug)]
pub enum TxnError {
    Storage(StorageError),
    Key(Vec<kvrpcpb::KeyError>),
}

impl From<StorageError> for TxnError {
    fn from(e: StorageError) -> Self {
        TxnError::Storage(e)
    }
}

impl From<tikal_engine::EngineError> for TxnError {
    fn from(e: tikal_engine::EngineError) -> Self {
        TxnError::Storage(e.into())
    }
}

pub type TxnResult<T> = std::result::Result<T, TxnError>;

/// max_ts and the in-memory locks of async-commit / 1PC prewrites.
#[derive(Default)]
pub struct ConcurrencyManager {
    max_ts: AtomicU64,
    memory_locks: Mutex<BTreeMap<Vec<u8>, Lock>>,
    /// How far a client's read may raise `max_ts` (see `max_ts.rs`).
    limit: Mutex<max_ts::MaxTsLimit>,
}

impl ConcurrencyManager {
    /// A read at `ts` happened: later commits must be above it. A client's
    /// timestamp is checked against the ceiling first
    /// ([`Self::exceeds_limit`]).
    pub fn observe_read(&self, ts: u64) {
        if ts != u64::MAX {
            self.max_ts.fetch_max(ts, Ordering::SeqCst);
        }
    }

    /// A timestamp from PD: raises `max_ts` to it and the ceiling of
    /// client reads to it plus `max-drift`.
    pub fn observe_pd_ts(&self, ts: u64) {
        self.observe_read(ts);
        self.refresh_max_ts_limit(ts);
    }

    /// A timestamp from PD: the ceiling of client reads becomes it plus
    /// `max-drift` (`max_ts` itself is left alone).
    pub fn refresh_max_ts_limit(&self, ts: u64) {
        self.limit.lock().set(ts);
    }

    /// The ceiling of client reads `ts` goes above, if it does.
    pub fn exceeds_limit(&self, ts: u64) -> Option<u64> {
        self.limit.lock().exceeded_by(ts)
    }

    /// Whether PD set that ceiling within the policy's `fresh_for`.
    pub fn max_ts_limit_is_fresh(&self) -> bool {
        self.limit.lock().is_fresh()
    }

    pub fn set_max_ts_policy(&self, policy: MaxTsPolicy) {
        self.limit.lock().policy = policy;
    }

    pub fn max_ts_policy(&self) -> MaxTsPolicy {
        self.limit.lock().policy
    }

    pub fn max_ts(&self) -> u64 {
        self.max_ts.load(Ordering::SeqCst)
    }

    pub(crate) fn lock_in_memory(&self, key: &[u8], lock: Lock) {
        self.memory_locks.lock().insert(key.to_vec(), lock);
    }

    pub(crate) fn release(&self, keys: &[Vec<u8>]) {
        let mut m = self.memory_locks.lock();
        for k in keys {
            m.remove(k);
        }
    }

    pub(crate) fn memory_locks_in(&self, start: &[u8], end: &[u8]) -> Vec<(Vec<u8>, Lock)> {
        let m = self.memory_locks.lock();
        m.range(start.to_vec()..)
            .take_while(|(k, _)| end.is_empty() || k.as_slice() < end)
            .map(|(k, l)| (k.clone(), l.clone()))
            .collect()
    }
}
