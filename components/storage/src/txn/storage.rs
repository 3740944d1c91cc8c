//! [`TxnStorage`]: the transactional API of one store. Reads check the
//! region and read the KV engine ([`super::reads`]); write commands
//! ([`super::commands`]) check the region, take their keys' latches,
//! decide, and propose their batch through Raft, holding the latches until
//! it is applied.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use prost::Message;
use tikal_engine::{Cf, KvRead};
use tikal_proto::{errorpb, kvrpcpb, metapb};
use tikal_raftstore::{DiskFullOpt, RegionView};

use super::commands::{self, Batch, LockOutcome, ProcessContext, WriteCommand};
use super::reads::{self, MemoryLocks, ScanRange};
use super::{
    key_error, latch, lock_wait, ConcurrencyManager, InvalidMaxTsAction, TxnError, TxnResult,
};
use crate::api::Cmd;
use crate::mvcc::codec::encode_key;
use crate::mvcc::record::LockType;
use crate::mvcc::MvccReader;
use crate::raw::{decode_bounds, RawStorage, ReadGuard};
use crate::StorageError;

/// How long a pessimistic lock waits for a conflicting lock when the
/// request leaves it to the server (`wait_timeout` 0), and the most it may
/// ask for: TiKV's `[pessimistic-txn] wait-for-lock-timeout` default.
pub const DEFAULT_WAIT_FOR_LOCK_TIMEOUT: Duration = Duration::from_secs(1);

/// Where the store takes a fresh PD timestamp from, to check a read above
/// its `max_ts` ceiling once more before refusing it. `None`: PD did not
/// answer.
pub trait TsoSource: Send + Sync {
    fn tso(&self) -> Pin<Box<dyn Future<Output = Option<u64>> + Send + '_>>;
}

/// Longest wait for that timestamp (TiKV's).
const TSO_CHECK_TIMEOUT: Duration = Duration::from_secs(5);

/// Locks one ResolveLock command resolves when the request names no keys
/// (TiKV's `RESOLVE_LOCK_BATCH_SIZE`).
pub const RESOLVE_LOCK_BATCH: usize = 256;

/// The transactional storage of one store.
#[derive(Clone)]
pub struct TxnStorage {
    raw: RawStorage,
    latches: Arc<latch::Latches>,
    cm: Arc<ConcurrencyManager>,
    waits: Arc<lock_wait::LockWaits>,
    wait_for_lock_timeout: Duration,
    /// Per region, the leader term and range whose `max_ts` was raised to
    /// a PD timestamp taken after the term began, or the range grew (see
    /// [`TxnStorage::sync_max_ts`]).
    max_ts_synced: Arc<parking_lot::Mutex<std::collections::HashMap<u64, SyncedLeader>>>,
    max_ts_synced_notify: Arc<tokio::sync::Notify>,
    tso: Option<Arc<dyn TsoSource>>,
}

/// What a write command holds from deciding until its batch is applied
/// or dropped: its keys' latches and the locks it shows in memory (released
/// when this is dropped).
struct Held {
    cm: Arc<ConcurrencyManager>,
    memory_locked: Vec<Vec<u8>>,
    _latches: latch::Guard,
}

impl Drop for Held {
    fn drop(&mut self) {
        self.cm.release(&self.memory_locked);
    }
}

/// What a transactional read takes before its engine snapshot: the
/// in-memory locks of its ranges, once `max_ts` is raised, and for a stale
/// read the safe ts published then (region version, safe ts).
pub struct ReadStart {
    memory_locks: MemoryLocks,
    safe_ts: Option<(u64, u64)>,
}

/// A leader term that synced `max_ts`, and the region's range then.
struct SyncedLeader {
    term: u64,
    start_key: Vec<u8>,
    end_key: Vec<u8>,
}

impl SyncedLeader {
    /// Same term, and `region` no wider than at the sync (a split since
    /// needs no new sync; a merge does).
    fn covers(&self, region: &metapb::Region, term: u64) -> bool {
        let end_within = self.end_key.is_empty()
            || (!region.end_key.is_empty() && region.end_key <= self.end_key);
        self.term == term && region.start_key >= self.start_key && end_within
    }
}

/// How long an async-commit or 1PC prewrite waits for a new leader to sync
/// its max_ts before it answers `MaxTimestampNotSynced` (not every client
/// retries that error).
const MAX_TS_SYNC_WAIT: Duration = Duration::from_secs(2);

impl TxnStorage {
    /// [`Self::guarded_snapshot_read`] at `ts` over `range` on the leader
    /// only, after its read index, whatever the request's context asks
    /// (ScanLock).
    pub async fn guarded_leader_read<T>(
        &self,
        ctx: &kvrpcpb::Context,
        ts: u64,
        range: (Vec<u8>, Vec<u8>),
        read: impl FnOnce(&dyn KvRead, &ReadStart) -> TxnResult<T>,
    ) -> TxnResult<T> {
        let leader_only = kvrpcpb::Context {
            replica_read: false,
            stale_read: false,
            ..ctx.clone()
        };
        self.guarded_snapshot_read(&leader_only, ts, vec![range], read)
            .await
    }

    /// Runs `read` once [`Self::snapshot_read_barrier`] lets it, on an
    /// engine snapshot taken then ([`RawStorage::guarded`]), with what the
    /// read must take before that snapshot ([`ReadStart`]).
    pub async fn guarded_snapshot_read<T>(
        &self,
        ctx: &kvrpcpb::Context,
        ts: u64,
        ranges: Vec<(Vec<u8>, Vec<u8>)>,
        read: impl FnOnce(&dyn KvRead, &ReadStart) -> TxnResult<T>,
    ) -> TxnResult<T> {
        if !ctx.stale_read {
            self.check_read_ts(ts).await?;
        }
        let guard = self.snapshot_read_barrier(ctx, ts, &ranges).await?;
        let start = ReadStart {
            memory_locks: match ctx.stale_read {
                true => MemoryLocks::without_raise(&self.cm, &ranges),
                false => MemoryLocks::take(&self.cm, ts, &ranges),
            },
            safe_ts: ctx
                .stale_read
                .then(|| self.published_safe_ts(ctx.region_id)),
        };
        self.raw.guarded(guard, |at| read(at, &start))
    }

    /// Refuses a read whose timestamp is above the store's `max_ts`
    /// ceiling (see `max_ts.rs`) once PD confirms it: by a fresh PD
    /// timestamp, or by having set the ceiling within the last second.
    /// Unconfirmed (PD silent), the read goes on, as in TiKV.
    async fn check_read_ts(&self, ts: u64) -> TxnResult<()> {
        if self.cm.exceeds_limit(ts).is_none() {
            return Ok(());
        }
        if !self.cm.max_ts_limit_is_fresh() {
            let fresh = match &self.tso {
                Some(tso) => {
                    (tokio::time::timeout(TSO_CHECK_TIMEOUT, tso.tso()).await).unwrap_or(None)
                }
                None => None,
            };
            let Some(pd_ts) = fresh else {
                tracing::warn!(
                    ts,
                    "a read's timestamp may be above the max_ts ceiling; PD did not confirm"
                );
                return Ok(());
            };
            self.cm.refresh_max_ts_limit(pd_ts);
        }
        let Some(ceiling) = self.cm.exceeds_limit(ts) else {
            return Ok(());
        };
        tracing::warn!(
            ts,
            ceiling,
            "a read's timestamp is above the max_ts ceiling"
        );
        match self.cm.max_ts_policy().action {
            InvalidMaxTsAction::Log => Ok(()),
            InvalidMaxTsAction::Error => Err(StorageError::region(errorpb::Error {
                message: format!("invalid max_ts update: {ts} exceeds the limit {ceiling}"),
                ..Default::default()
            })
            .into()),
        }
    }

    /// The safe ts this replica has published for the region, with the
    /// region version it is for (0: none).
    fn published_safe_ts(&self, region_id: u64) -> (u64, u64) {
        self.raw.region_view(region_id).map_or((0, 0), |v| {
            let version = tikal_raftstore::region_version(&v.region);
            (version, v.read_progress.safe_ts(version))
        })
    }

    /// The barrier of a snapshot read at `ts` over `ranges` (`[start,
    /// end)`, empty end = unbounded). A replica read (`Context.replica_read`)
    /// may be served by a follower or learner: the region's leader first
    /// raises its max_ts to `ts` and looks for in-memory locks in the
    /// ranges ([`reads::check_replica_read`]); a lock it finds is the
    /// read's KeyIsLocked.
    async fn snapshot_read_barrier(
        &self,
        ctx: &kvrpcpb::Context,
        ts: u64,
        ranges: &[(Vec<u8>, Vec<u8>)],
    ) -> TxnResult<ReadGuard> {
        if !ctx.replica_read || ctx.stale_read {
            return Ok(self.raw.read_barrier(ctx, Cmd::Txn).await?);
        }
        let check = reads::replica_read_check(ts, ranges);
        let (refusal, guard) = self.raw.read_barrier_checked(ctx, Cmd::Txn, check).await?;
        let Some(refusal) = refusal else {
            return Ok(guard);
        };
        match kvrpcpb::LockInfo::decode(refusal.as_slice()) {
            Ok(lock) if !refusal.is_empty() => Err(TxnError::Key(vec![key_error::locked(lock)])),
            _ => Err(StorageError::Internal(
                "the leader refused the replica read (its check undecodable or its ts too high)"
                    .into(),
            )
            .into()),
        }
    }

    pub fn new(raw: RawStorage) -> Self {
        TxnStorage {
            raw,
            latches: Arc::new(latch::Latches::default()),
            cm: Arc::new(ConcurrencyManager::default()),
            waits: Arc::new(lock_wait::LockWaits::default()),
            wait_for_lock_timeout: DEFAULT_WAIT_FOR_LOCK_TIMEOUT,
            max_ts_synced: Arc::default(),
            max_ts_synced_notify: Arc::default(),
            tso: None,
        }
    }

    /// Where a read above the `max_ts` ceiling is checked once more.
    pub fn with_tso_source(mut self, tso: Arc<dyn TsoSource>) -> Self {
        self.tso = Some(tso);
        self
    }

    /// The store took PD timestamp `ts` to refresh its `max_ts` ceiling
    /// (every `[storage.max-ts] cache-sync-interval`).
    pub fn refresh_max_ts_limit(&self, ts: u64) {
        self.cm.refresh_max_ts_limit(ts);
    }

    /// Shares `cm` (max_ts and in-memory locks) with the store's applier,
    /// which runs the leader's check of replica reads with it.
    pub fn with_concurrency_manager(mut self, cm: Arc<ConcurrencyManager>) -> Self {
        self.cm = cm;
        self
    }

    /// A new leader of `region` (as the store's view has it, at `term`)
    /// took PD timestamp `ts` after its term began: reads the old leader
    /// served were at lower timestamps, so raising `max_ts` to `ts` keeps
    /// async-commit and 1PC transactions from committing below them. A
    /// leader whose range grew since (it took in a merge) syncs again: the
    /// source's leader, maybe on another store, served reads in that range
    /// (TiKV syncs after a CommitMerge too). Until then such prewrites get
    /// `MaxTimestampNotSynced` and the client retries.
    pub fn sync_max_ts(&self, region: &metapb::Region, term: u64, ts: u64) {
        self.cm.observe_pd_ts(ts);
        let synced = SyncedLeader {
            term,
            start_key: region.start_key.clone(),
            end_key: region.end_key.clone(),
        };
        self.max_ts_synced.lock().insert(region.id, synced);
        self.max_ts_synced_notify.notify_waiters();
    }

    /// Waits (a bounded time) until the region's leader term synced max_ts.
    async fn wait_max_ts_synced(&self, ctx: &kvrpcpb::Context) -> TxnResult<()> {
        let deadline = Instant::now() + MAX_TS_SYNC_WAIT;
        loop {
            let notified = self.max_ts_synced_notify.notified();
            let view = self
                .raw
                .check_txn_region(ctx, std::iter::empty::<&[u8]>())?;
            // The store's own view: its bounds as the sync recorded them.
            let stored = self.raw.region_view(view.region.id);
            if stored.is_some_and(|v| self.max_ts_synced(&v.region, view.term)) {
                return Ok(());
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(max_ts_not_synced(view.region.id).into());
            }
            let _ = tokio::time::timeout(left, notified).await;
        }
    }

    /// Whether the region's current leader term has synced `max_ts` since
    /// its range last grew.
    pub fn max_ts_synced(&self, region: &metapb::Region, term: u64) -> bool {
        (self.max_ts_synced.lock().get(&region.id)).is_some_and(|s| s.covers(region, term))
    }

    /// A timestamp was just taken from PD to compute safe ts with
    /// ([`Self::leader_safe_ts`]): raising `max_ts` to it makes an
    /// async-commit or 1PC prewrite that takes its lock after the safe ts
    /// is computed commit above it.
    pub fn raise_max_ts(&self, ts: u64) {
        self.cm.observe_pd_ts(ts);
    }

    /// The default and longest lock wait of pessimistic locks.
    pub fn with_wait_for_lock_timeout(mut self, timeout: Duration) -> Self {
        self.wait_for_lock_timeout = timeout;
        self
    }

    pub fn lock_waits(&self) -> &Arc<lock_wait::LockWaits> {
        &self.waits
    }

    pub fn concurrency_manager(&self) -> &ConcurrencyManager {
        &self.cm
    }

    /// Runs a write command: region check, latches, decide, propose, wait
    /// for apply. The command sees the applied state of every key it
    /// latched; its latches and the locks it showed in memory go once its
    /// batch is applied or dropped, whether or not the caller still waits
    /// ([`Self::apply`]).
    pub async fn execute<C: WriteCommand>(
        &self,
        ctx: &kvrpcpb::Context,
        cmd: &C,
    ) -> TxnResult<C::Output> {
        let keys = cmd.keys();
        for k in &keys {
            crate::raw::check_key(k)?;
        }
        let view = self
            .raw
            .check_txn_region(ctx, keys.iter().map(Vec::as_slice))?;
        let latches = self.latches.acquire(keys.iter().map(Vec::as_slice)).await;
        if cmd.needs_synced_max_ts() {
            // Checked again once latched, as TiKV checks it on the snapshot
            // taken after latches: leadership may have moved (and come
            // back) while the command waited, and a term that has not
            // synced max_ts may commit below a read another leader served.
            let now = self.raw.region_view(view.region.id);
            let synced =
                now.is_some_and(|v| v.term == view.term && self.max_ts_synced(&v.region, v.term));
            if !synced {
                return Err(max_ts_not_synced(view.region.id).into());
            }
        }
        let (out, mut batch) = {
            let mut pctx = ProcessContext::new(self.raw.engine(), &self.cm, &self.waits);
            let out = cmd.process(&mut pctx);
            (out, pctx.batch)
        };
        let held = Held {
            cm: self.cm.clone(),
            memory_locked: std::mem::take(&mut batch.memory_locked),
            _latches: latches,
        };
        if out.is_err() || batch.is_empty() {
            // Nothing to propose: the answer rests on this replica's state
            // alone, and a leader cut off from its quorum still takes
            // itself for the leader until check-quorum steps it down, while
            // another may already have committed over that state. So it
            // answers only once a quorum has confirmed it still leads, in
            // the term it decided in (TiKV decides every command on a
            // snapshot taken through its lease or a read index).
            drop(held);
            self.raw.confirm_leader(&view).await?;
            return out;
        }
        let opt = if cmd.allowed_on_almost_full() {
            crate::raw::almost_full_ok(ctx)
        } else {
            ctx.disk_full_opt()
        };
        self.apply(&view, batch, opt, Some(held)).await?;
        out
    }

    /// Proposes `batch` and waits until it is applied, then wakes the
    /// waiters of the locks it released and lets go of what the command
    /// holds (`held`: latches and in-memory locks). The wait runs in a task
    /// of its own, to the end: a client that gives up drops its request's
    /// future, but a proposed write may still apply, and until it has, its
    /// keys must stay latched (a command after it would decide on state it
    /// is about to change) and its in-memory locks shown (readers would
    /// see neither them nor the applied locks). Dropped with the request
    /// instead, in-memory locks would never be released, and their keys
    /// would read as locked for good.
    async fn apply(
        &self,
        view: &RegionView,
        batch: Batch,
        opt: DiskFullOpt,
        held: Option<Held>,
    ) -> TxnResult<()> {
        if batch.is_empty() {
            return Ok(());
        }
        // The command decided on the state this leader had applied in the
        // view's term: a term since has committed what it did not see.
        let write = (self.raw)
            .prepare(view, batch.ops, crate::value::now_secs(), opt)?
            .decided_in(view.term);
        let pending = self.raw.submit(write, None)?;
        let waits = self.waits.clone();
        let released = batch.released;
        let applied = tokio::spawn(async move {
            let outcome = pending.wait().await;
            if outcome.is_ok() {
                waits.wake(&released);
            }
            drop(held);
            outcome
        });
        match applied.await {
            Ok(outcome) => outcome.map(|_| ()).map_err(Into::into),
            Err(e) => Err(StorageError::Internal(format!("a write's task failed: {e}")).into()),
        }
    }

    // ---- reads ----

    /// `ts` lowered below every Put or Delete lock (in memory or in CF
    /// lock) in the view's range (user-key bounds). Lock and pessimistic
    /// locks change no value, and a pessimistic lock prewritten later
    /// commits above a safe ts taken before (max_ts was raised to it), so
    /// they hold no safe ts back, as TiKV tracks only the others.
    fn below_locks(
        &self,
        reader: &MvccReader<'_>,
        view: &tikal_raftstore::RegionView,
        ts: u64,
    ) -> TxnResult<u64> {
        use crate::mvcc::record::LockType;
        let (start, end) = (&view.region.start_key, &view.region.end_key);
        let mut safe_ts = ts;
        let mut below_lock = |l: &crate::mvcc::record::Lock| {
            if matches!(l.lock_type, LockType::Put | LockType::Delete) {
                safe_ts = safe_ts.min(l.ts.saturating_sub(1));
            }
        };
        for (_, l) in self.cm.memory_locks_in(start, end) {
            below_lock(&l);
        }
        reader.scan_locks(start, end, |_, l| {
            below_lock(&l);
            true
        })?;
        Ok(safe_ts)
    }

    /// A safe ts candidate for a region this store leads, from `pd_ts`
    /// (a PD timestamp taken, and passed to [`Self::raise_max_ts`], before
    /// this call): no commit at or below it can still land once a quorum
    /// confirms this leader. The caller reads the applied index after it.
    pub fn leader_safe_ts(&self, view: &tikal_raftstore::RegionView, pd_ts: u64) -> TxnResult<u64> {
        let mut view = view.clone();
        decode_bounds(&mut view.region);
        self.below_locks(&MvccReader::new(self.raw.engine()), &view, pd_ts)
    }

    /// A stale read (`Context.stale_read`) is served only at or below the
    /// region's safe ts, by any replica: the one its leader last sent this
    /// replica (or, on the leader, the last one a quorum confirmed; see
    /// [`tikal_raftstore::ReadProgress`]) as published before the read's
    /// engine snapshot (`published`: version and safe ts; one published
    /// later may cover a commit applied after the snapshot), lowered below
    /// every lock in the region. Above it the answer is DataIsNotReady and
    /// the client retries as an ordinary leader read.
    fn check_stale_read(
        &self,
        reader: &MvccReader<'_>,
        view: &tikal_raftstore::RegionView,
        published: (u64, u64),
        ts: u64,
    ) -> TxnResult<()> {
        let (version, published_ts) = published;
        let version_now = tikal_raftstore::region_version(&view.region);
        let at_version = if version == version_now {
            published_ts
        } else {
            0
        };
        let safe_ts = self.below_locks(reader, view, at_version)?;
        if ts <= safe_ts {
            return Ok(());
        }
        Err(data_is_not_ready(
            self.raw.store_id(),
            view,
            format!("stale read at {ts} is above the safe ts {safe_ts}"),
            safe_ts,
        ))
    }

    /// Checks the region and, for stale reads, the safe ts; then reads
    /// `at` (an engine snapshot taken after the read's barrier and
    /// `start`).
    fn read<T>(
        &self,
        at: &dyn KvRead,
        start: &ReadStart,
        ctx: &kvrpcpb::Context,
        keys: &[&[u8]],
        ts: u64,
        read: impl FnOnce(&MvccReader<'_>, &tikal_raftstore::RegionView) -> TxnResult<T>,
    ) -> TxnResult<T> {
        for k in keys {
            crate::raw::check_key(k)?;
        }
        let view = self.raw.check_txn_read_region(ctx, keys.iter().copied())?;
        let reader = MvccReader::new(at);
        if !ctx.stale_read {
            return read(&reader, &view);
        }
        let generation = view.read_progress.generation();
        let published = start.safe_ts.unwrap_or_default();
        self.check_stale_read(&reader, &view, published, ts)?;
        let out = read(&reader, &view)?;
        if view.read_progress.generation() != generation {
            // The replica's data was being replaced while we read.
            return Err(data_is_not_ready(
                self.raw.store_id(),
                &view,
                "the replica's data was replaced during the read".into(),
                0,
            ));
        }
        Ok(out)
    }

    pub fn get(
        &self,
        at: &dyn KvRead,
        start: &ReadStart,
        ctx: &kvrpcpb::Context,
        key: &[u8],
        ts: u64,
    ) -> TxnResult<Option<Vec<u8>>> {
        self.read(at, start, ctx, &[key], ts, |r, _| {
            reads::get(r, &start.memory_locks, ctx, key, ts)
        })
    }

    /// Found pairs; a locked key is a pair carrying its error.
    pub fn batch_get(
        &self,
        at: &dyn KvRead,
        start: &ReadStart,
        ctx: &kvrpcpb::Context,
        keys: &[Vec<u8>],
        ts: u64,
    ) -> TxnResult<Vec<kvrpcpb::KvPair>> {
        let key_refs: Vec<&[u8]> = keys.iter().map(Vec::as_slice).collect();
        self.read(at, start, ctx, &key_refs, ts, |r, _| {
            reads::batch_get(r, &start.memory_locks, ctx, keys, ts)
        })
    }

    /// Scan in key order (descending when `reverse`, where `start` is the
    /// exclusive upper end as in TiKV). A locked key becomes a pair
    /// carrying its error.
    #[allow(clippy::too_many_arguments)]
    pub fn scan(
        &self,
        at: &dyn KvRead,
        read_start: &ReadStart,
        ctx: &kvrpcpb::Context,
        start: &[u8],
        end: &[u8],
        limit: u32,
        ts: u64,
        key_only: bool,
        reverse: bool,
    ) -> TxnResult<Vec<kvrpcpb::KvPair>> {
        self.raw.check_api_range(ctx, Cmd::Txn, start, end)?;
        self.read(at, read_start, ctx, &[], ts, |r, view| {
            if crate::raw::inverted(start, end, reverse) {
                return Ok(vec![]);
            }
            let bounds = crate::raw::scan_bounds(view, start, end, reverse, false)?;
            let range = ScanRange {
                lower: &bounds.lower,
                upper: &bounds.upper,
                limit,
                key_only,
                reverse,
            };
            reads::scan(r, &read_start.memory_locks, ctx, &range, ts)
        })
    }

    /// The locks at or below `max_ts` in `[start, end)`, read from `at`
    /// after [`Self::guarded_leader_read`] at `max_ts` over that range.
    #[allow(clippy::too_many_arguments)]
    pub fn scan_lock(
        &self,
        at: &dyn KvRead,
        read_start: &ReadStart,
        ctx: &kvrpcpb::Context,
        start: &[u8],
        end: &[u8],
        max_ts: u64,
        limit: u32,
    ) -> TxnResult<Vec<kvrpcpb::LockInfo>> {
        // No API version or key mode check, as TiKV: TiDB's GC worker
        // scans locks region by region, and a region's bounds (the first
        // region's empty start key, say) lie outside any key mode.
        let view = self
            .raw
            .check_txn_region(ctx, std::iter::empty::<&[u8]>())?;
        let bounds = crate::raw::scan_bounds(&view, start, end, false, false)?;
        let reader = MvccReader::new(at);
        let memory = &read_start.memory_locks;
        reads::scan_lock(&reader, memory, &bounds.lower, &bounds.upper, max_ts, limit)
    }

    // ---- writes ----

    pub async fn prewrite(
        &self,
        req: kvrpcpb::PrewriteRequest,
    ) -> TxnResult<commands::PrewriteOutcome> {
        let ctx = req.context.clone().unwrap_or_default();
        let cmd = commands::Prewrite::from_request(req)?;
        if cmd.use_async_commit || cmd.try_one_pc {
            self.wait_max_ts_synced(&ctx).await?;
        }
        // A CheckNotExists reads at start_ts and raises max_ts to it.
        if (cmd.mutations.iter()).any(|m| m.op == commands::MutationOp::CheckNotExists) {
            self.check_read_ts(cmd.start_ts).await?;
        }
        self.execute(&ctx, &cmd).await
    }

    /// Takes pessimistic locks; returns (values, not_founds) as asked.
    ///
    /// A key locked by another transaction makes the request wait (up to
    /// `wait_timeout` ms, at most the store's wait-for-lock-timeout, which
    /// is also the wait for 0; negative = not at all) for that lock's
    /// release, then try again: a holder that committed past
    /// `for_update_ts` turns into WriteConflict, one that rolled back lets
    /// the lock through. A wait that would close a cycle of waiting
    /// transactions fails with Deadlock; one that times out returns the
    /// KeyIsLocked error for the client to resolve.
    pub async fn pessimistic_lock(
        &self,
        req: &kvrpcpb::PessimisticLockRequest,
    ) -> TxnResult<(Vec<Vec<u8>>, Vec<bool>)> {
        let ctx = req.context.clone().unwrap_or_default();
        let wait = match req.wait_timeout {
            t if t < 0 => Duration::ZERO,
            0 => self.wait_for_lock_timeout,
            t => Duration::from_millis(t.unsigned_abs()).min(self.wait_for_lock_timeout),
        };
        let deadline = Instant::now() + wait;
        let mut cmd = commands::PessimisticLock::from(req);
        if cmd.reads() {
            self.check_read_ts(cmd.for_update_ts).await?;
        }
        loop {
            cmd.may_wait = Instant::now() < deadline;
            match self.execute(&ctx, &cmd).await? {
                LockOutcome::Locked { values, not_founds } => return Ok((values, not_founds)),
                LockOutcome::Wait(waiting) => {
                    let (key, lock_ts) = (waiting.key().0.to_vec(), waiting.key().1);
                    if let Err(d) = waiting.until(deadline).await {
                        return Err(super::actions::one(super::key_error::deadlock(
                            lock_ts,
                            &key,
                            d.key_hash,
                            d.wait_chain,
                        )));
                    }
                }
            }
        }
    }

    /// The encoded bounds covering every version, lock and value of user
    /// keys in `[start, end)` (`end` empty = no bound).
    fn encoded_range(start: &[u8], end: &[u8]) -> (Vec<u8>, Vec<u8>) {
        // Above every encoded key a stored key (at most MAX_KEY_SIZE bytes)
        // can have.
        let upper = if end.is_empty() {
            vec![0xFF; crate::raw::MAX_KEY_SIZE / 8 * 9 + 32]
        } else {
            encode_key(end)
        };
        (encode_key(start), upper)
    }

    /// Removes every version, lock and value of keys in `[start, end)`,
    /// which must lie in the region, through Raft.
    pub async fn delete_range(
        &self,
        ctx: &kvrpcpb::Context,
        start: &[u8],
        end: &[u8],
    ) -> TxnResult<()> {
        self.raw.check_api_range(ctx, Cmd::Txn, start, end)?;
        // The whole range must be in the region, as TiKV checks it.
        let view = self.raw.check_txn_region(ctx, [start])?;
        crate::raw::check_range_end(&view, end)?;
        let bounds = crate::raw::scan_bounds(&view, start, end, false, false)?;
        let (lower, upper) = Self::encoded_range(&bounds.lower, &bounds.upper);
        let mut b = Batch::default();
        for cf in [Cf::Default, Cf::Lock, Cf::Write] {
            b.delete_range(cf, lower.clone(), upper.clone());
        }
        self.apply(&view, b, crate::raw::almost_full_ok(ctx), None)
            .await
    }

    /// TiKV's UnsafeDestroyRange: a store-wide request (no region) that
    /// deletes the range straight from the engine, bypassing Raft — for
    /// data already unreachable (dropped tables below the GC safe point).
    /// Both bounds are required: an open range would wipe every region on
    /// this store, outside Raft (TiKV refuses MIN_KEY and MAX_KEY too).
    pub fn unsafe_destroy_range(&self, start: &[u8], end: &[u8]) -> TxnResult<()> {
        if start.is_empty() || end.is_empty() {
            return Err(StorageError::invalid(
                "UnsafeDestroyRange needs a start_key and an end_key (an open range is refused)",
            )
            .into());
        }
        if start > end {
            return Err(StorageError::invalid("start_key is after end_key").into());
        }
        let (lower, upper) = Self::encoded_range(start, end);
        let engine = self.raw.engine();
        let mut wb = engine.write_batch();
        for cf in [Cf::Default, Cf::Lock, Cf::Write] {
            wb.delete_range(cf, &lower, &upper);
        }
        engine.write(wb, true)?;
        // The regions there shrank without a write through them.
        self.raw.router().clear_sizes_in(lower, upper);
        Ok(())
    }

    /// Garbage-collects the region's versions below `safe_point`
    /// ([`commands::gc_batch`]), one Raft command per batch of keys,
    /// yielding between them so foreground commands interleave.
    pub async fn gc(&self, ctx: &kvrpcpb::Context, safe_point: u64) -> TxnResult<usize> {
        let mut removed = 0;
        let mut from: Option<commands::GcCursor> = None;
        loop {
            let view = self
                .raw
                .check_txn_region(ctx, std::iter::empty::<&[u8]>())?;
            let start =
                (from.take()).unwrap_or_else(|| commands::GcCursor::at(&view.region.start_key));
            let (batch, n, next) = {
                let reader = MvccReader::new(self.raw.engine());
                let end = &view.region.end_key;
                commands::gc_batch(
                    &reader,
                    &start,
                    end,
                    safe_point,
                    commands::gc::GC_BATCH_BYTES,
                )?
            };
            removed += n;
            self.apply(&view, batch, crate::raw::almost_full_ok(ctx), None)
                .await?;
            match next {
                Some(key) => from = Some(key),
                None => return Ok(removed),
            }
            tokio::task::yield_now().await;
        }
    }

    /// ResolveLock: `keys` (all of the first transaction) in one command,
    /// or, with no keys, every lock of the given transactions in the
    /// region, [`RESOLVE_LOCK_BATCH`] keys per command, as TiKV goes: a
    /// large transaction's locks in one command made one Raft entry past
    /// the entry limit, refused every time.
    pub async fn resolve_lock(
        &self,
        ctx: &kvrpcpb::Context,
        txns: &[(u64, u64)],
        keys: &[Vec<u8>],
    ) -> TxnResult<()> {
        if !keys.is_empty() {
            let start_ts = txns.first().map_or(0, |t| t.0);
            let targets = keys.iter().map(|k| (k.clone(), start_ts)).collect();
            return self
                .execute(ctx, &commands::ResolveLock::new(txns, targets)?)
                .await;
        }
        let wanted: std::collections::HashSet<u64> = txns.iter().map(|t| t.0).collect();
        let mut from: Option<Vec<u8>> = None;
        loop {
            let first_batch = from.is_none();
            // The region is checked again for each batch: it may split.
            let view = self
                .raw
                .check_txn_region(ctx, std::iter::empty::<&[u8]>())?;
            let start = from.take().unwrap_or_else(|| view.region.start_key.clone());
            let mut batch = vec![];
            MvccReader::new(self.raw.engine()).scan_locks(
                &start,
                &view.region.end_key,
                |k, l| {
                    if wanted.contains(&l.ts) {
                        batch.push((k, l.ts));
                    }
                    batch.len() < RESOLVE_LOCK_BATCH
                },
            )?;
            let Some(last) = batch.last() else {
                // Nothing to resolve by this replica's state: answered, as
                // `execute` answers a command that writes nothing, only
                // once a quorum confirms this store still leads.
                if first_batch {
                    self.raw.confirm_leader(&view).await?;
                }
                return Ok(());
            };
            // The next batch starts just after this one's last key.
            let mut next = last.0.clone();
            next.push(0);
            let full = batch.len() == RESOLVE_LOCK_BATCH;
            self.execute(ctx, &commands::ResolveLock::new(txns, batch)?)
                .await?;
            if !full {
                return Ok(());
            }
            from = Some(next);
        }
    }

    /// Resolves the region's locks below `safe_point` whose TTL has passed
    /// at `current_ts`, as a client meeting them would: the primary's
    /// status decides between commit and rollback. Locks whose primary is
    /// in no region this store serves (`primary_ctx` gives None),
    /// async-commit locks, and locks of live transactions are left to
    /// clients. At most [`commands::gc::GC_BATCH_KEYS`] locks per call.
    pub async fn resolve_expired_locks(
        &self,
        ctx: &kvrpcpb::Context,
        safe_point: u64,
        current_ts: u64,
        primary_ctx: impl Fn(&[u8]) -> Option<kvrpcpb::Context>,
    ) -> TxnResult<usize> {
        let view = self
            .raw
            .check_txn_region(ctx, std::iter::empty::<&[u8]>())?;
        let mut expired = vec![];
        MvccReader::new(self.raw.engine()).scan_locks(
            &view.region.start_key,
            &view.region.end_key,
            |key, l| {
                if l.ts < safe_point
                    && !l.use_async_commit
                    && super::actions::lock_expired(&l, current_ts)
                {
                    expired.push((key, l));
                }
                expired.len() < commands::gc::GC_BATCH_KEYS
            },
        )?;
        let mut resolved = 0;
        for (key, lock) in expired {
            let Some(pctx) = primary_ctx(&lock.primary) else {
                continue;
            };
            let check = commands::CheckTxnStatus {
                primary: lock.primary.clone(),
                lock_ts: lock.ts,
                current_ts,
                rollback_if_not_exist: true,
                verify_is_primary: true,
                // As the official clients resolve a pessimistic lock.
                resolving_pessimistic_lock: lock.lock_type == LockType::Pessimistic,
                ..Default::default()
            };
            // A live primary (ttl > 0) or an unreachable one: not ours to end.
            let Ok(commands::TxnStatus {
                lock_ttl: 0,
                commit_version,
                ..
            }) = self.execute(&pctx, &check).await
            else {
                continue;
            };
            let resolve =
                commands::ResolveLock::new(&[(lock.ts, commit_version)], vec![(key, lock.ts)])?;
            self.execute(ctx, &resolve).await?;
            resolved += 1;
        }
        Ok(resolved)
    }
}

/// DataIsNotReady for a stale read of `view`'s region: the client retries
/// as a leader read.
fn data_is_not_ready(
    store_id: u64,
    view: &RegionView,
    why: String,
    safe_ts: u64,
) -> super::TxnError {
    // This replica's peer, as TiKV names it (not the request's, which a
    // client may leave out).
    let peer_id = (view.region.peers.iter())
        .find(|p| p.store_id == store_id)
        .map_or(0, |p| p.id);
    StorageError::region(errorpb::Error {
        message: format!("region {}: {why}", view.region.id),
        data_is_not_ready: Some(errorpb::DataIsNotReady {
            region_id: view.region.id,
            peer_id,
            safe_ts,
        }),
        ..Default::default()
    })
    .into()
}

/// The region's leader term has not synced `max_ts` from PD (yet): the
/// client retries.
fn max_ts_not_synced(region_id: u64) -> StorageError {
    StorageError::region(errorpb::Error {
        message: format!("max ts of region {region_id} is not synced yet"),
        max_timestamp_not_synced: Some(Default::default()),
        ..Default::default()
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mvcc::codec::encode_key;
    use crate::mvcc::record::{Lock, LockType};
    use crate::test_store::{commit, ctx, one_store, write};
    use crate::txn::MaxTsPolicy;
    use tikal_engine::{CF_LOCK, CF_WRITE};

    /// An async-commit prewrite of `k` = `v` at `start_version`.
    fn async_put_k(start_version: u64) -> kvrpcpb::PrewriteRequest {
        kvrpcpb::PrewriteRequest {
            context: Some(ctx()),
            mutations: vec![kvrpcpb::Mutation {
                op: kvrpcpb::Op::Put as i32,
                key: b"k".to_vec(),
                value: b"v".to_vec(),
                ..Default::default()
            }],
            primary_lock: b"k".to_vec(),
            start_version,
            lock_ttl: 3_000,
            use_async_commit: true,
            ..Default::default()
        }
    }

    /// The test store's leader term has synced max_ts.
    fn synced(txn: &TxnStorage) {
        let view = txn.raw.region_view(1).unwrap();
        txn.sync_max_ts(&view.region, view.term, 1);
    }

    #[tokio::test]
    async fn a_prewrite_whose_caller_gives_up_releases_its_memory_lock_once_applied() {
        let dir = tempfile::tempdir().unwrap();
        let store = one_store(dir.path()).await;
        let (txn, kv) = (&store.txn, &store.kv);
        synced(txn);
        let prewrite =
            |start_version| commands::Prewrite::from_request(async_put_k(start_version)).unwrap();
        // Polled once: proposed, then dropped, as a cancelled request's
        // handler is.
        let (first, context) = (prewrite(10), ctx());
        let mut gave_up = Box::pin(txn.execute(&context, &first));
        let once = std::future::poll_fn(|cx| {
            std::task::Poll::Ready(std::future::Future::poll(gave_up.as_mut(), cx).is_pending())
        });
        assert!(once.await, "answered before its write could apply");
        drop(gave_up);
        let deadline = Instant::now() + Duration::from_secs(10);
        let applied = || kv.get(CF_LOCK, &encode_key(b"k")).unwrap().is_some();
        let in_memory = || !txn.cm.memory_locks_in(b"k", b"").is_empty();
        // Shown in memory until applied (checked in that order: the
        // release comes after the apply), then no longer in memory.
        loop {
            assert!(in_memory() || applied(), "released before applied");
            if applied() && !in_memory() {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "applied: {}, still in memory: {}",
                applied(),
                in_memory()
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        // The latch went too: another transaction's prewrite runs, and
        // meets the applied lock.
        let second = prewrite(20);
        let other = tokio::time::timeout(Duration::from_secs(10), txn.execute(&context, &second));
        match other.await {
            Ok(Err(TxnError::Key(_))) => {}
            Ok(other) => panic!("a prewrite over another's lock: {:?}", other.err()),
            Err(_) => panic!("the latch was never released"),
        }
    }

    #[tokio::test]
    async fn scan_lock_raises_max_ts_refuses_an_unapplied_lock_and_always_asks_the_quorum() {
        let dir = tempfile::tempdir().unwrap();
        let store = one_store(dir.path()).await;
        let (txn, kv) = (&store.txn, &store.kv);
        write(
            kv,
            CF_LOCK,
            encode_key(b"a"),
            Lock::new(LockType::Put, b"a".to_vec(), 5, 3_000).to_bytes(),
        );
        let scan = |ctx: kvrpcpb::Context, max_ts: u64| async move {
            let range = (vec![], vec![]);
            txn.guarded_leader_read(&ctx, max_ts, range, |at, start| {
                txn.scan_lock(at, start, &ctx, b"", b"", max_ts, 0)
            })
            .await
        };
        let found = scan(ctx(), 50).await.unwrap();
        assert_eq!(
            found.iter().map(|l| l.lock_version).collect::<Vec<_>>(),
            [5]
        );
        assert_eq!(txn.cm.max_ts(), 50, "as a read at 50 raises it");
        // A prewrite at 40 not applied yet: GC must not miss its lock.
        txn.cm
            .lock_in_memory(b"m", Lock::new(LockType::Put, b"m".to_vec(), 40, 3_000));
        match scan(ctx(), 50).await {
            Err(TxnError::Key(e)) => {
                assert_eq!(e[0].locked.as_ref().map(|l| l.lock_version), Some(40))
            }
            other => panic!("{other:?}"),
        }
        let below_m = scan(ctx(), 30).await.unwrap();
        assert_eq!(
            below_m.iter().map(|l| l.lock_version).collect::<Vec<_>>(),
            [5]
        );
        txn.cm.release(&[b"m".to_vec()]);
        // Stale or not, it reads only what a quorum confirmed: a store whose
        // loop is gone answers nothing.
        store.router.stop();
        let stale = kvrpcpb::Context {
            stale_read: true,
            ..ctx()
        };
        assert!(scan(stale, 50).await.is_err());
    }

    /// PD as a read above the ceiling sees it: a set timestamp, or silence.
    struct FakePd(parking_lot::Mutex<Option<u64>>);

    impl TsoSource for FakePd {
        fn tso(&self) -> Pin<Box<dyn Future<Output = Option<u64>> + Send + '_>> {
            let ts = *self.0.lock();
            Box::pin(async move { ts })
        }
    }

    #[tokio::test]
    async fn a_read_far_above_pd_time_is_refused_and_leaves_max_ts_alone() {
        const MS: u64 = 1 << 18;
        let dir = tempfile::tempdir().unwrap();
        let store = one_store(dir.path()).await;
        let pd = Arc::new(FakePd(parking_lot::Mutex::new(Some(1_000_000 * MS))));
        let txn = store.txn.clone().with_tso_source(pd.clone());
        // PD is asked again whatever the ceiling's age (the part with a
        // fresh ceiling comes last).
        txn.cm.set_max_ts_policy(MaxTsPolicy {
            fresh_for: Duration::ZERO,
            ..txn.cm.max_ts_policy()
        });
        // The store's own PD timestamp (as the stale-read loop takes one).
        txn.raise_max_ts(1_000_000 * MS);
        // Within max-drift (60 s) of it: served, and raises max_ts.
        get(&txn, &ctx(), 1_059_000 * MS).await.unwrap();
        assert_eq!(txn.cm.max_ts(), 1_059_000 * MS);
        // Far above, and PD confirms: refused with TiKV's message, and
        // max_ts stays where it was.
        match get(&txn, &ctx(), u64::MAX - 1).await {
            Err(TxnError::Storage(StorageError::Region(e))) => {
                assert!(
                    e.message.starts_with("invalid max_ts update"),
                    "{}",
                    e.message
                )
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(txn.cm.max_ts(), 1_059_000 * MS);
        // PD moved on since the store last asked: the fresh timestamp
        // raises the ceiling, and an honest read above the old one passes.
        *pd.0.lock() = Some(1_120_000 * MS);
        get(&txn, &ctx(), 1_100_000 * MS).await.unwrap();
        assert_eq!(txn.cm.max_ts(), 1_100_000 * MS);
        // A stale read is not checked, and raises nothing: it is served
        // only below a safe ts (here it is refused, none being published).
        let stale = kvrpcpb::Context {
            stale_read: true,
            ..ctx()
        };
        assert!(get(&txn, &stale, u64::MAX - 1).await.is_err());
        assert_eq!(txn.cm.max_ts(), 1_100_000 * MS);
        // A ceiling PD set within `fresh_for` is its word: reads above it
        // are refused without asking PD (which would say otherwise here).
        txn.cm.set_max_ts_policy(MaxTsPolicy {
            fresh_for: Duration::from_secs(3600),
            ..txn.cm.max_ts_policy()
        });
        txn.raise_max_ts(1_120_000 * MS);
        *pd.0.lock() = Some(2_000_000 * MS);
        assert!(get(&txn, &ctx(), 1_190_000 * MS).await.is_err());
        assert_eq!(txn.cm.max_ts(), 1_120_000 * MS);
        // With the action `log`, such a read is served.
        txn.cm.set_max_ts_policy(MaxTsPolicy {
            action: InvalidMaxTsAction::Log,
            ..txn.cm.max_ts_policy()
        });
        get(&txn, &ctx(), 2_000_000 * MS).await.unwrap();
        assert_eq!(txn.cm.max_ts(), 2_000_000 * MS);
    }

    async fn get(txn: &TxnStorage, ctx: &kvrpcpb::Context, ts: u64) -> TxnResult<Option<Vec<u8>>> {
        get_racing(txn, ctx, ts, || {}).await
    }

    /// A get of `k` at `ts` where `race` runs right after the read's
    /// engine snapshot is taken.
    async fn get_racing(
        txn: &TxnStorage,
        ctx: &kvrpcpb::Context,
        ts: u64,
        race: impl FnOnce(),
    ) -> TxnResult<Option<Vec<u8>>> {
        let point = vec![reads::point(b"k")];
        txn.guarded_snapshot_read(ctx, ts, point, |at, start| {
            race();
            txn.get(at, start, ctx, b"k", ts)
        })
        .await
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn a_cut_off_leader_does_not_answer_a_resolve_lock_it_finds_nothing_for() {
        let dir = tempfile::tempdir().unwrap();
        let (stores, l, links) = crate::test_store::three_stores(dir.path()).await;
        let leader = &stores[l].txn;
        // The others may elect a leader that takes txn 10's prewrite; this
        // one's state has no lock of it, which proves nothing.
        links.cut(l as u64 + 1);
        assert!(
            leader.raw.region_view(1).unwrap().is_leader,
            "not yet stepped down"
        );
        match leader.resolve_lock(&ctx(), &[(10, 0)], &[]).await {
            Err(TxnError::Storage(StorageError::Region(e))) => {
                assert!(e.not_leader.is_some(), "{e:?}")
            }
            other => panic!("answered from a cut-off leader's state: {other:?}"),
        }
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn a_leader_cut_off_from_its_quorum_answers_no_command_from_its_own_state() {
        let dir = tempfile::tempdir().unwrap();
        let (stores, l, links) = crate::test_store::three_stores(dir.path()).await;
        let leader = &stores[l].txn;
        synced(leader);
        let prewrite = commands::Prewrite::from_request(async_put_k(10)).unwrap();
        leader.execute(&ctx(), &prewrite).await.unwrap();
        // Cut off, it still takes itself for the leader until check-quorum
        // steps it down (an election timeout), while the others may elect
        // a leader that commits or rolls back the lock. A CheckTxnStatus
        // that would write nothing must not answer from this state.
        links.cut(l as u64 + 1);
        let check = commands::CheckTxnStatus {
            primary: b"k".to_vec(),
            lock_ts: 10,
            caller_start_ts: u64::MAX,
            current_ts: 20,
            rollback_if_not_exist: false,
            force_sync_commit: false,
            resolving_pessimistic_lock: false,
            verify_is_primary: true,
        };
        assert!(
            leader.raw.region_view(1).unwrap().is_leader,
            "not yet stepped down"
        );
        match leader.execute(&ctx(), &check).await {
            Err(TxnError::Storage(StorageError::Region(e))) => {
                assert!(e.not_leader.is_some(), "{e:?}")
            }
            other => panic!("answered from a cut-off leader's state: {other:?}"),
        }
    }

    #[tokio::test]
    async fn unsafe_destroy_range_refuses_an_open_range() {
        let dir = tempfile::tempdir().unwrap();
        let store = one_store(dir.path()).await;
        commit(&store.kv, b"k", b"v", 1, 2);
        for (start, end) in [(&b""[..], &b"z"[..]), (b"a", b""), (b"", b"")] {
            let e = store.txn.unsafe_destroy_range(start, end).unwrap_err();
            assert!(format!("{e:?}").contains("open range"), "{e:?}");
        }
        assert_eq!(
            get(&store.txn, &ctx(), 10).await.unwrap(),
            Some(b"v".to_vec())
        );
        store.txn.unsafe_destroy_range(b"a", b"z").unwrap();
        assert_eq!(get(&store.txn, &ctx(), 10).await.unwrap(), None);
    }

    #[tokio::test]
    async fn a_key_with_more_versions_than_one_raft_entry_holds_is_collected() {
        let dir = tempfile::tempdir().unwrap();
        // 64 KiB entries; 10,000 versions of `k` take about 250 KB to delete.
        let store = crate::test_store::one_store_with(dir.path(), 64 << 10).await;
        for ts in 1..=10_000u64 {
            commit(&store.kv, b"k", b"v", 2 * ts, 2 * ts + 1);
        }
        let removed = store.txn.gc(&ctx(), 30_000).await.unwrap();
        assert_eq!(removed, 9_999);
        assert_eq!(
            get(&store.txn, &ctx(), 30_000).await.unwrap(),
            Some(b"v".to_vec())
        );
        let mut left = 0;
        (store.kv.scan(CF_WRITE, b"", b"", false, |_, _| {
            left += 1;
            true
        }))
        .unwrap();
        assert_eq!(left, 1, "only the newest version stays");
    }

    #[tokio::test]
    async fn a_resolve_lock_without_keys_goes_in_batches_under_the_entry_limit() {
        // A thousand locks' rollbacks are about 110 KB, past the 32 KiB
        // entry limit: in one command, refused every time.
        let dir = tempfile::tempdir().unwrap();
        let store = crate::test_store::one_store_with(dir.path(), 32 << 10).await;
        let key = |i: u32| format!("key{i:06}").into_bytes();
        for i in 0..1000 {
            let lock = Lock::new(LockType::Put, key(0), 10, 3_000);
            write(&store.kv, CF_LOCK, encode_key(&key(i)), lock.to_bytes());
        }
        // Another transaction's lock stays.
        let other = Lock::new(LockType::Put, b"x".to_vec(), 20, 3_000);
        write(&store.kv, CF_LOCK, encode_key(b"x"), other.to_bytes());
        store
            .txn
            .resolve_lock(&ctx(), &[(10, 0)], &[])
            .await
            .unwrap();
        let mut left = vec![];
        (store.kv.scan(CF_LOCK, b"", b"", false, |k, _| {
            left.push(k.to_vec());
            true
        }))
        .unwrap();
        assert_eq!(left, vec![encode_key(b"x")]);
    }

    #[tokio::test]
    async fn a_read_sees_a_prewrite_that_released_its_memory_lock_after_the_snapshot() {
        let dir = tempfile::tempdir().unwrap();
        let store = one_store(dir.path()).await;
        let (txn, kv) = (&store.txn, &store.kv);
        commit(kv, b"k", b"old", 1, 2);
        // An async-commit prewrite holds its memory lock: it took max_ts
        // before the read raised it, so it may commit at or below 20.
        let mut lock = Lock::new(LockType::Put, b"k".to_vec(), 10, 3_000);
        lock.use_async_commit = true;
        lock.min_commit_ts = 11;
        txn.cm.lock_in_memory(b"k", lock.clone());
        let got = get_racing(txn, &ctx(), 20, || {
            // After the read's engine snapshot, the prewrite's lock is
            // applied and its memory lock released.
            write(kv, CF_LOCK, encode_key(b"k"), lock.to_bytes());
            txn.cm.release(&[b"k".to_vec()]);
        })
        .await;
        match got {
            Err(TxnError::Key(e)) => assert!(e[0].locked.is_some(), "{e:?}"),
            other => panic!("the read must meet the lock, got {other:?}"),
        }
        assert_eq!(txn.cm.max_ts(), 20);
    }

    #[tokio::test]
    async fn an_async_commit_prewrite_checks_max_ts_synced_again_once_latched() {
        let dir = tempfile::tempdir().unwrap();
        let store = one_store(dir.path()).await;
        let txn = &store.txn;
        synced(txn);
        let req = async_put_k(10);
        // Another command holds the key's latch: the prewrite passes the
        // sync check and waits for it.
        let held = txn.latches.acquire([&b"k"[..]]).await;
        let mut prewrite = Box::pin(txn.prewrite(req));
        let waiting = std::future::poll_fn(|cx| {
            std::task::Poll::Ready(std::future::Future::poll(prewrite.as_mut(), cx).is_pending())
        });
        assert!(waiting.await, "the prewrite waits for the latch");
        // Meanwhile leadership moved (a term that has synced nothing).
        txn.max_ts_synced.lock().clear();
        drop(held);
        match prewrite.await {
            Err(TxnError::Storage(StorageError::Region(e))) => {
                assert!(e.max_timestamp_not_synced.is_some(), "{e:?}")
            }
            other => panic!("expected MaxTimestampNotSynced, got {other:?}"),
        }
        assert!(
            (store.kv.get(CF_LOCK, &encode_key(b"k")).unwrap()).is_none(),
            "nothing written"
        );
    }

    #[tokio::test]
    async fn a_stale_read_goes_by_the_safe_ts_published_before_its_snapshot() {
        let dir = tempfile::tempdir().unwrap();
        let store = one_store(dir.path()).await;
        let (txn, kv) = (&store.txn, &store.kv);
        commit(kv, b"k", b"old", 50, 60);
        let view = txn.raw.region_view(1).unwrap();
        let progress = view.read_progress.clone();
        let version = tikal_raftstore::region_version(&view.region);
        let publish = |safe_ts| {
            progress.update(tikal_raftstore::ReadState {
                applied_index: progress.applied(),
                safe_ts,
                version,
            })
        };
        publish(100);
        // No peer in the request: DataIsNotReady names this replica's.
        let stale = kvrpcpb::Context {
            stale_read: true,
            peer: None,
            ..ctx()
        };
        let here = (view.region.peers.iter())
            .find(|p| p.store_id == txn.raw.store_id())
            .map(|p| p.id);
        assert!(here.is_some_and(|id| id != 0));
        assert_eq!(get(txn, &stale, 90).await.unwrap(), Some(b"old".to_vec()));
        // After the read's snapshot, a commit at 150 is applied and a safe
        // ts past it published: the snapshot lacks that commit.
        let got = get_racing(txn, &stale, 180, || {
            commit(kv, b"k", b"new", 140, 150);
            publish(200);
        })
        .await;
        match got {
            Err(TxnError::Storage(StorageError::Region(e))) => {
                assert!(e.data_is_not_ready.is_some(), "{e:?}")
            }
            other => panic!("the read must be refused, got {other:?}"),
        }
        assert_eq!(get(txn, &stale, 180).await.unwrap(), Some(b"new".to_vec()));
        // A pessimistic lock elsewhere in the region changes no value and
        // holds no stale read back (TiKV tracks Put and Delete locks only);
        // a prewritten one does.
        let mut held = Lock::new(LockType::Pessimistic, b"p".to_vec(), 170, 3_000);
        held.for_update_ts = 170;
        write(kv, CF_LOCK, encode_key(b"p"), held.to_bytes());
        assert_eq!(get(txn, &stale, 180).await.unwrap(), Some(b"new".to_vec()));
        let prewritten = Lock::new(LockType::Put, b"p".to_vec(), 170, 3_000);
        write(kv, CF_LOCK, encode_key(b"p"), prewritten.to_bytes());
        let refused = get(txn, &stale, 180).await;
        assert!(
            matches!(&refused, Err(TxnError::Storage(StorageError::Region(e)))
                if e.data_is_not_ready.as_ref().map(|d| d.peer_id) == here),
            "{refused:?}"
        );
    }

    #[test]
    fn a_leader_syncs_max_ts_again_for_a_new_term_or_a_range_a_merge_grew() {
        let region = |start: &[u8], end: &[u8]| metapb::Region {
            start_key: start.to_vec(),
            end_key: end.to_vec(),
            ..Default::default()
        };
        let synced = SyncedLeader {
            term: 5,
            start_key: b"b".to_vec(),
            end_key: b"m".to_vec(),
        };
        assert!(synced.covers(&region(b"b", b"m"), 5));
        assert!(!synced.covers(&region(b"b", b"m"), 6), "a new term");
        assert!(synced.covers(&region(b"b", b"f"), 5), "split: narrower");
        assert!(
            !synced.covers(&region(b"a", b"m"), 5),
            "merged from the left"
        );
        assert!(
            !synced.covers(&region(b"b", b"t"), 5),
            "merged from the right"
        );
        assert!(!synced.covers(&region(b"b", b""), 5), "to the end");
        let to_end = SyncedLeader {
            end_key: vec![],
            ..synced
        };
        assert!(to_end.covers(&region(b"c", b""), 5));
        assert!(to_end.covers(&region(b"c", b"x"), 5));
    }
}
