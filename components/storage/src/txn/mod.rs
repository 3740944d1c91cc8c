//! The transactional KV API: Percolator as TiKV runs it.
//!
//! Every command checks its region, takes the latches of its keys
//! ([`latch`]), reads the MVCC state ([`crate::mvcc`]), decides, and
//! proposes its lock / write / default changes as one Raft command; the
//! latches are held until that command is applied, so the next command on
//! those keys reads the result. Reads take no latches. The concurrency
//! manager ([`ConcurrencyManager`]) tracks the largest timestamp any read
//! has used, so an async-commit or 1PC transaction never commits below a
//! read that could have missed it, and holds async-commit locks in memory
//! between their decision and their apply so readers see them.

mod actions;
mod latch;
pub mod lock_wait;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use tikal_engine::Cf;
use tikal_proto::kvrpcpb;

use crate::command::RawOp;
use crate::mvcc::codec::{append_ts, encode_key};
use crate::mvcc::record::{Lock, Write};
use crate::raw::RawStorage;
use crate::StorageError;

pub use actions::PrewriteOutcome;

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

/// Key-error constructors, with the fields and messages clients expect.
pub mod key_error {
    use tikal_proto::kvrpcpb::{self, KeyError};

    pub fn locked(info: kvrpcpb::LockInfo) -> KeyError {
        KeyError {
            locked: Some(info),
            ..Default::default()
        }
    }

    pub fn write_conflict(
        start_ts: u64,
        conflict_start_ts: u64,
        conflict_commit_ts: u64,
        key: &[u8],
        primary: &[u8],
        reason: kvrpcpb::write_conflict::Reason,
    ) -> KeyError {
        KeyError {
            retryable: format!(
                "WriteConflict {{ start_ts: {start_ts}, conflict_start_ts: {conflict_start_ts}, \
                 conflict_commit_ts: {conflict_commit_ts}, key: {}, reason: {reason:?} }}",
                crate::raw::hex(key)
            ),
            conflict: Some(kvrpcpb::WriteConflict {
                start_ts,
                conflict_ts: conflict_start_ts,
                key: key.to_vec(),
                primary: primary.to_vec(),
                conflict_commit_ts,
                reason: reason as i32,
            }),
            ..Default::default()
        }
    }

    pub fn already_exist(key: &[u8]) -> KeyError {
        KeyError {
            already_exist: Some(kvrpcpb::AlreadyExist { key: key.to_vec() }),
            ..Default::default()
        }
    }

    pub fn txn_not_found(start_ts: u64, primary: &[u8]) -> KeyError {
        KeyError {
            txn_not_found: Some(kvrpcpb::TxnNotFound {
                start_ts,
                primary_key: primary.to_vec(),
            }),
            ..Default::default()
        }
    }

    pub fn commit_ts_expired(start_ts: u64, commit_ts: u64, key: &[u8], min: u64) -> KeyError {
        KeyError {
            commit_ts_expired: Some(kvrpcpb::CommitTsExpired {
                start_ts,
                attempted_commit_ts: commit_ts,
                key: key.to_vec(),
                min_commit_ts: min,
            }),
            ..Default::default()
        }
    }

    /// Commit or rollback found neither the lock nor a commit record.
    pub fn txn_lock_not_found(start_ts: u64, commit_ts: u64, key: &[u8]) -> KeyError {
        KeyError {
            retryable: format!(
                "TxnLockNotFound {{ start_ts: {start_ts}, commit_ts: {commit_ts}, key: {} }}",
                crate::raw::hex(key)
            ),
            ..Default::default()
        }
    }

    pub fn pessimistic_lock_not_found(start_ts: u64, key: &[u8]) -> KeyError {
        KeyError {
            abort: format!(
                "PessimisticLockNotFound {{ start_ts: {start_ts}, key: {} }}",
                crate::raw::hex(key)
            ),
            ..Default::default()
        }
    }

    /// Waiting for `lock_ts`'s lock on `key` would close `wait_chain`.
    pub fn deadlock(
        lock_ts: u64,
        key: &[u8],
        key_hash: u64,
        wait_chain: Vec<tikal_proto::deadlock::WaitForEntry>,
    ) -> KeyError {
        KeyError {
            deadlock: Some(kvrpcpb::Deadlock {
                lock_ts,
                lock_key: key.to_vec(),
                deadlock_key_hash: key_hash,
                wait_chain,
            }),
            ..Default::default()
        }
    }

    pub fn committed(start_ts: u64, commit_ts: u64, key: &[u8]) -> KeyError {
        KeyError {
            abort: format!(
                "Committed {{ start_ts: {start_ts}, commit_ts: {commit_ts}, key: {} }}",
                crate::raw::hex(key)
            ),
            ..Default::default()
        }
    }
}

/// The changes one command makes, as Raft-log ops.
#[derive(Default)]
pub struct Batch {
    ops: Vec<RawOp>,
    /// Keys whose lock this batch removes: their waiters wake after apply.
    released: Vec<Vec<u8>>,
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
}

/// max_ts and the in-memory locks of async-commit / 1PC prewrites.
#[derive(Default)]
pub struct ConcurrencyManager {
    max_ts: AtomicU64,
    memory_locks: Mutex<BTreeMap<Vec<u8>, Lock>>,
}

impl ConcurrencyManager {
    /// A read at `ts` happened: later commits must be above it.
    pub fn observe_read(&self, ts: u64) {
        if ts != u64::MAX {
            self.max_ts.fetch_max(ts, Ordering::SeqCst);
        }
    }

    pub fn max_ts(&self) -> u64 {
        self.max_ts.load(Ordering::SeqCst)
    }

    fn lock_in_memory(&self, key: &[u8], lock: Lock) {
        self.memory_locks.lock().insert(key.to_vec(), lock);
    }

    fn release(&self, keys: &[Vec<u8>]) {
        let mut m = self.memory_locks.lock();
        for k in keys {
            m.remove(k);
        }
    }

    fn memory_lock(&self, key: &[u8]) -> Option<Lock> {
        self.memory_locks.lock().get(key).cloned()
    }

    fn memory_locks_in(&self, start: &[u8], end: &[u8]) -> Vec<(Vec<u8>, Lock)> {
        let m = self.memory_locks.lock();
        m.range(start.to_vec()..)
            .take_while(|(k, _)| end.is_empty() || k.as_slice() < end)
            .map(|(k, l)| (k.clone(), l.clone()))
            .collect()
    }
}

/// How long a pessimistic lock waits for a conflicting lock when the
/// request leaves it to the server (`wait_timeout` 0): TiKV's
/// `[pessimistic-txn] wait-for-lock-timeout` default.
pub const DEFAULT_WAIT_FOR_LOCK_TIMEOUT: Duration = Duration::from_secs(1);

/// The transactional storage of one store.
#[derive(Clone)]
pub struct TxnStorage {
    raw: RawStorage,
    latches: Arc<latch::Latches>,
    cm: Arc<ConcurrencyManager>,
    waits: Arc<lock_wait::LockWaits>,
    wait_for_lock_timeout: Duration,
    /// A PD timestamp the store has seen: the ceiling of stale reads.
    ts_floor: Arc<AtomicU64>,
}

impl TxnStorage {
    pub fn new(raw: RawStorage) -> Self {
        TxnStorage {
            raw,
            latches: Arc::new(latch::Latches::default()),
            cm: Arc::new(ConcurrencyManager::default()),
            waits: Arc::new(lock_wait::LockWaits::default()),
            wait_for_lock_timeout: DEFAULT_WAIT_FOR_LOCK_TIMEOUT,
            ts_floor: Arc::new(AtomicU64::new(0)),
        }
    }

    /// Records a timestamp just taken from PD: every commit at or below it
    /// has its locks on the store already, so stale reads up to it (and
    /// below every lock) are safe.
    pub fn advance_ts_floor(&self, ts: u64) {
        self.ts_floor.fetch_max(ts, Ordering::SeqCst);
    }

    /// The default lock wait of pessimistic locks (`wait_timeout` 0).
    pub fn with_wait_for_lock_timeout(mut self, timeout: Duration) -> Self {
        self.wait_for_lock_timeout = timeout;
        self
    }

    pub fn lock_waits(&self) -> &lock_wait::LockWaits {
        &self.waits
    }

    pub fn concurrency_manager(&self) -> &ConcurrencyManager {
        &self.cm
    }

    /// Runs a write command: region check, latches, decide, propose, wait
    /// for apply. `decide` sees the applied state of every key it latched.
    async fn write<T>(
        &self,
        ctx: &kvrpcpb::Context,
        keys: &[Vec<u8>],
        decide: impl FnOnce(&crate::mvcc::MvccReader<'_>, &mut Batch) -> TxnResult<T>,
    ) -> TxnResult<T> {
        for k in keys {
            crate::raw::check_key(k)?;
        }
        self.raw.check_region(ctx, keys.iter().map(Vec::as_slice))?;
        let _guard = self.latches.acquire(keys.iter().map(Vec::as_slice)).await;
        let mut batch = Batch::default();
        let out = {
            let reader = crate::mvcc::MvccReader::new(self.raw.engine());
            decide(&reader, &mut batch)?
        };
        self.apply(ctx, batch).await?;
        Ok(out)
    }

    async fn apply(&self, ctx: &kvrpcpb::Context, batch: Batch) -> TxnResult<()> {
        if batch.is_empty() {
            return Ok(());
        }
        let write = self.raw.prepare(ctx, batch.ops, crate::value::now_secs())?;
        self.raw.submit(write, None)?.wait().await?;
        self.waits.wake(&batch.released);
        Ok(())
    }
}
