//! The Raw KV API: requests checked against their region, reads from the KV
//! engine, writes through Raft.

use prost::Message;
use tikal_engine::{Cf, KvEngine, KvRead, CF_DEFAULT, DATA_CFS};
use tikal_proto::{errorpb, kvrpcpb};
use tikal_raftstore::{ApplyOutput, DiskFullOpt, Pickup, RaftstoreError, RegionView, Router};

use crate::api::{Api, Cmd};
use crate::command::{CasOutcome, RawApplyResult, RawCommand, RawOp};
use crate::value;
use crate::{Result, StorageError};

/// Largest key accepted (TiKV's `storage.max-key-size` default).
pub const MAX_KEY_SIZE: usize = 8 * 1024;
/// Largest Raft entry a write may become by default (TiKV's
/// `raft-entry-max-size`).
pub const RAFT_ENTRY_MAX_SIZE: usize = 8 * 1024 * 1024;

#[derive(Debug, Clone)]
pub struct StorageConfig {
    /// 1 or 2, as `[storage] api-version`.
    pub api_version: u8,
    /// `[raftstore] raft-entry-max-size`: larger writes are refused with
    /// RaftEntryTooLarge.
    pub raft_entry_max_size: usize,
    /// `[storage] enable-ttl` (API V2 requires it). Off, a write that asks
    /// for a TTL and a TTL query are refused, as TiKV refuses them; the
    /// values stored carry the expiry encoding either way.
    pub enable_ttl: bool,
}

impl Default for StorageConfig {
    fn default() -> Self {
        StorageConfig {
            api_version: 1,
            raft_entry_max_size: RAFT_ENTRY_MAX_SIZE,
            enable_ttl: false,
        }
    }
}

#[derive(Clone)]
pub struct RawStorage {
    store_id: u64,
    cfg: StorageConfig,
    engine: KvEngine,
    router: Router,
}

/// A write checked against its region and encoded for the Raft log, not
/// yet proposed: the scheduler decides when it goes.
pub struct PreparedWrite {
    region_id: u64,
    /// What the region must still be when the write is proposed.
    expected: tikal_raftstore::Expected,
    cmd: Vec<u8>,
    /// How full the disks it needs may be.
    disk_full_opt: DiskFullOpt,
}

impl PreparedWrite {
    /// Proposed only in `term`: for a write decided on the leader's
    /// applied state (see [`tikal_raftstore::Expected`]).
    pub(crate) fn decided_in(mut self, term: u64) -> PreparedWrite {
        self.expected = self.expected.in_term(term);
        self
    }
}

/// A proposed write; `wait` yields its outcome once applied.
pub struct PendingWrite(tokio::sync::oneshot::Receiver<tikal_raftstore::Result<ApplyOutput>>);

impl PendingWrite {
    /// Waits until the write is applied. Returns the CAS outcome, if the
    /// write was a compare-and-swap.
    pub async fn wait(self) -> Result<Option<CasOutcome>> {
        let output = self
            .0
            .await
            .map_err(|_| tikal_raftstore::RaftstoreError::StoreStopped)??;
        match output.downcast::<RawApplyResult>() {
            Ok(result) => (*result).map_err(StorageError::Internal),
            Err(_) => Err(StorageError::Internal("unexpected apply output".into())),
        }
    }
}

/// A scan's key range after checking it against the region: `[lower, upper)`
/// with an empty `upper` meaning unbounded.
pub(crate) struct Bounds {
    pub lower: Vec<u8>,
    pub upper: Vec<u8>,
}

impl RawStorage {
    pub(crate) fn router(&self) -> &Router {
        &self.router
    }

    pub(crate) fn engine(&self) -> &KvEngine {
        &self.engine
    }

    pub fn store_id(&self) -> u64 {
        self.store_id
    }

    pub fn new(store_id: u64, cfg: StorageConfig, engine: KvEngine, router: Router) -> Self {
        RawStorage {
            store_id,
            cfg,
            engine,
            router,
        }
    }

    // ---- reads ----

    /// Waits until a read of the request's region may be served here and
    /// see every write acknowledged before it arrived (ReadIndex). A stale
    /// read (`Context.stale_read`) needs no such wait. A replica read
    /// (`Context.replica_read`, TiKV's Follower Read) may be served by a
    /// follower or learner, with the read index its leader gives it.
    pub async fn read_barrier(&self, ctx: &kvrpcpb::Context, cmd: Cmd) -> Result<ReadGuard> {
        // With no check, the leader refuses nothing.
        Ok(self.read_barrier_checked(ctx, cmd, vec![]).await?.1)
    }

    /// Runs `read` once [`Self::read_barrier`] lets it, on an engine
    /// snapshot taken then ([`Self::guarded`]).
    pub async fn guarded_read<T, E: From<StorageError>>(
        &self,
        ctx: &kvrpcpb::Context,
        cmd: Cmd,
        read: impl FnOnce(&dyn KvRead) -> std::result::Result<T, E>,
    ) -> std::result::Result<T, E> {
        let guard = self.read_barrier(ctx, cmd).await?;
        self.guarded(guard, read)
    }

    /// Runs `read` on an engine snapshot taken now, once its barrier has
    /// passed, and refuses the result if the replica's data was replaced
    /// since the barrier began (`guard`). `read` checks the region view
    /// after the snapshot is taken: a region split from the one read and
    /// then destroyed here drops its data only after the split is
    /// published, so a view that still shows the region whole means the
    /// snapshot holds all of it, whatever happens to the live engine
    /// during the read (TiKV reads a snapshot taken after its read index
    /// too).
    pub fn guarded<T, E: From<StorageError>>(
        &self,
        guard: ReadGuard,
        read: impl FnOnce(&dyn KvRead) -> std::result::Result<T, E>,
    ) -> std::result::Result<T, E> {
        let snapshot = self.engine.snapshot();
        let out = read(&snapshot)?;
        guard.check()?;
        Ok(out)
    }

    /// [`Self::read_barrier`], where a replica read carries `check` for
    /// the leader (see `tikal_raftstore::Applier::check_replica_read`).
    /// Returns the leader's refusal, if it refused the read, and the guard
    /// the read must pass once done.
    pub async fn read_barrier_checked(
        &self,
        ctx: &kvrpcpb::Context,
        cmd: Cmd,
        check: Vec<u8>,
    ) -> Result<(Option<Vec<u8>>, ReadGuard)> {
        // A stale read is a transactional read at a ts (served below the
        // region's safe ts, checked as it reads); a raw read has no ts, so
        // one asking for it is served as a linearizable read, as TiKV
        // serves it.
        let stale = ctx.stale_read && cmd == Cmd::Txn;
        // Any replica for a stale or a replica read; the read itself
        // checks where it may be served.
        let any_replica = stale || ctx.replica_read;
        let view = self.check_replica(ctx, Some(cmd), std::iter::empty::<&[u8]>(), any_replica)?;
        // Taken before the read index is asked for: a snapshot or the
        // peer's end any time after moves it.
        let guard = ReadGuard::new(&view.read_progress, ctx.region_id);
        if stale {
            return Ok((None, guard));
        }
        if ctx.replica_read && !view.is_leader {
            return match self.router.replica_read_index(ctx.region_id, check).await {
                Ok(()) => Ok((None, guard)),
                Err(RaftstoreError::ReplicaReadRefused(refusal)) => Ok((Some(refusal), guard)),
                Err(e) => Err(e.into()),
            };
        }
        self.router.read_index(ctx.region_id).await?;
        Ok((None, guard))
    }

    /// Waits until a quorum confirms that this store still leads `view`'s
    /// region in `view`'s term (a read index), at `view`'s version: what it
    /// decided from its own state since taking `view` was then still the
    /// region's state (a split since may have moved the keys to a region
    /// led elsewhere).
    pub(crate) async fn confirm_leader(&self, view: &RegionView) -> Result<()> {
        let region_id = view.region.id;
        self.router.read_index(region_id).await?;
        let version = tikal_raftstore::region_version;
        match self.router.region_view(region_id) {
            Some(now) if !now.is_leader || now.term != view.term => {
                Err(not_leader(&now, self.store_id).into())
            }
            Some(now) if version(&now.region) != version(&view.region) => {
                Err(RaftstoreError::EpochNotMatch(Box::new(now.region.clone())).into())
            }
            Some(_) => Ok(()),
            None => Err(RaftstoreError::RegionNotFound(region_id).into()),
        }
    }

    /// The store's view of a region, as published (bounds as stored).
    pub(crate) fn region_view(&self, region_id: u64) -> Option<RegionView> {
        self.router.region_view(region_id)
    }

    /// The store's API version rules (see [`crate::api`]).
    pub fn api(&self) -> Api {
        Api {
            version: self.cfg.api_version,
        }
    }

    /// A raw request's key as stored: checked (size, API version, key
    /// mode) and, under API V2, memcomparable-encoded like every V2 key.
    fn raw_key(&self, ctx: &kvrpcpb::Context, key: Vec<u8>) -> Result<Vec<u8>> {
        check_key(&key)?;
        let api = self.api();
        api.check_version(ctx, Cmd::Raw)?;
        api.check_key(ctx, Cmd::Raw, &key)?;
        Ok(if api.v2() {
            tikal_codec::mvcc_key::encode_key(&key)
        } else {
            key
        })
    }

    /// A raw request's range `[start, end)` (either order) as stored; see
    /// `raw_key`. Under API V2 both ends must be given and in raw mode.
    fn raw_range(
        &self,
        ctx: &kvrpcpb::Context,
        start: &[u8],
        end: &[u8],
    ) -> Result<(Vec<u8>, Vec<u8>)> {
        self.check_api_range(ctx, Cmd::Raw, start, end)?;
        if !self.api().v2() {
            return Ok((start.to_vec(), end.to_vec()));
        }
        let enc = tikal_codec::mvcc_key::encode_key;
        Ok((enc(start), enc(end)))
    }

    /// Checks a `cmd` request's range against the store's API version
    /// rules (see [`crate::api`]).
    pub(crate) fn check_api_range(
        &self,
        ctx: &kvrpcpb::Context,
        cmd: Cmd,
        start: &[u8],
        end: &[u8],
    ) -> Result<()> {
        let api = self.api();
        api.check_version(ctx, cmd)?;
        api.check_range(ctx, cmd, start, end)
    }

    /// A stored raw key as the client wrote it.
    fn client_key(&self, stored: &[u8]) -> Option<Vec<u8>> {
        if !self.api().v2() {
            return Some(stored.to_vec());
        }
        match tikal_codec::mvcc_key::decode_key(stored)? {
            (key, []) => Some(key),
            _ => None,
        }
    }

    /// The column family a raw request names; API V2 has only the default
    /// one (TiKV's "cf is deprecated in API V2").
    fn raw_cf(&self, cf: &str) -> Result<Cf> {
        if self.api().v2() && !cf.is_empty() && cf != CF_DEFAULT.name() {
            return Err(StorageError::invalid(format!(
                "cf is deprecated in API V2, cf name: {cf}"
            )));
        }
        cf_name(cf)
    }

    pub fn get(
        &self,
        at: &dyn KvRead,
        ctx: &kvrpcpb::Context,
        cf: &str,
        key: &[u8],
    ) -> Result<Option<Vec<u8>>> {
        let cf = self.raw_cf(cf)?;
        let key = self.raw_key(ctx, key.to_vec())?;
        self.check_read_region(ctx, [key.as_slice()])?;
        read_live(at, cf, &key, value::now_secs())
    }

    pub fn batch_get(
        &self,
        at: &dyn KvRead,
        ctx: &kvrpcpb::Context,
        cf: &str,
        keys: &[Vec<u8>],
    ) -> Result<Vec<kvrpcpb::KvPair>> {
        let cf = self.raw_cf(cf)?;
        let stored = keys
            .iter()
            .map(|k| self.raw_key(ctx, k.clone()))
            .collect::<Result<Vec<_>>>()?;
        self.check_read_region(ctx, stored.iter().map(Vec::as_slice))?;
        let now = value::now_secs();
        let mut budget = ReplyBudget::default();
        let mut pairs = Vec::with_capacity(keys.len());
        for (key, stored) in keys.iter().zip(&stored) {
            if let Some(v) = read_live(at, cf, stored, now)? {
                budget.take(key, &v)?;
                pairs.push(kv_pair(key.clone(), v));
            }
        }
        Ok(pairs)
    }

    /// Seconds left to live: Some(0) for no TTL, None if absent or expired.
    pub fn get_key_ttl(
        &self,
        at: &dyn KvRead,
        ctx: &kvrpcpb::Context,
        cf: &str,
        key: &[u8],
    ) -> Result<Option<u64>> {
        if !self.ttl_enabled() {
            return Err(ttl_not_enabled());
        }
        let cf = self.raw_cf(cf)?;
        let key = self.raw_key(ctx, key.to_vec())?;
        self.check_read_region(ctx, [key.as_slice()])?;
        let now = value::now_secs();
        let Some(raw) = at.get(cf, &key)? else {
            return Ok(None);
        };
        let stored = decode_stored(&raw)?;
        Ok(match stored.expire_at {
            _ if stored.deleted => None,
            None => Some(0),
            Some(at) if at > now => Some(at - now),
            Some(_) => None,
        })
    }

    /// Forward: `[start, end)`. Reverse: from just below `start` (empty =
    /// the region's end) down to `end` inclusive, as TiKV defines it.
    #[allow(clippy::too_many_arguments)]
    pub fn scan(
        &self,
        at: &dyn KvRead,
        ctx: &kvrpcpb::Context,
        cf: &str,
        start: &[u8],
        end: &[u8],
        limit: u32,
        key_only: bool,
        reverse: bool,
    ) -> Result<Vec<kvrpcpb::KvPair>> {
        let cf = self.raw_cf(cf)?;
        let (start, end) = self.raw_range(ctx, start, end)?;
        let view = self.check_read_region(ctx, std::iter::empty::<&[u8]>())?;
        if inverted(&start, &end, reverse) {
            return Ok(vec![]);
        }
        let bounds = scan_bounds(&view, &start, &end, reverse, true)?;
        let budget = &mut ReplyBudget::default();
        self.scan_bounds(at, cf, &bounds, limit, key_only, reverse, budget)
    }

    #[allow(clippy::too_many_arguments)]
    pub fn batch_scan(
        &self,
        at: &dyn KvRead,
        ctx: &kvrpcpb::Context,
        cf: &str,
        ranges: &[kvrpcpb::KeyRange],
        each_limit: u32,
        key_only: bool,
        reverse: bool,
    ) -> Result<Vec<kvrpcpb::KvPair>> {
        let cf = self.raw_cf(cf)?;
        let view = self.check_read_region(ctx, std::iter::empty::<&[u8]>())?;
        let mut out = vec![];
        let budget = &mut ReplyBudget::default();
        for (i, r) in ranges.iter().enumerate() {
            // As TiKV: an open end short of the last range ends where the
            // next range starts, and every range must be non-empty.
            let end = match ranges.get(i + 1) {
                Some(next) if r.end_key.is_empty() => &next.start_key,
                _ => &r.end_key,
            };
            let ordered = if reverse {
                r.start_key > *end
            } else {
                r.start_key < *end
            };
            if !end.is_empty() && !ordered {
                return Err(StorageError::invalid(format!(
                    "invalid key ranges: range {i} from {} to {} is empty",
                    hex(&r.start_key),
                    hex(end)
                )));
            }
            let (start, end) = self.raw_range(ctx, &r.start_key, end)?;
            let bounds = scan_bounds(&view, &start, &end, reverse, false)?;
            out.extend(self.scan_bounds(at, cf, &bounds, each_limit, key_only, reverse, budget)?);
        }
        Ok(out)
    }

    /// CRC64-XOR over live pairs in `ranges`, with pair and byte counts, as
    /// TiKV computes it: each pair's digest is crc64(key ++ value), and the
    /// digests are XORed, so order does not matter.
    pub fn checksum(
        &self,
        at: &dyn KvRead,
        ctx: &kvrpcpb::Context,
        ranges: &[kvrpcpb::KeyRange],
    ) -> Result<(u64, u64, u64)> {
        let view = self.check_read_region(ctx, std::iter::empty::<&[u8]>())?;
        let now = value::now_secs();
        let (mut checksum, mut kvs, mut bytes) = (0u64, 0u64, 0u64);
        for r in ranges {
            let (start, end) = self.raw_range(ctx, &r.start_key, &r.end_key)?;
            let b = scan_bounds(&view, &start, &end, false, false)?;
            let mut corrupt = false;
            at.scan(CF_DEFAULT, &b.lower, &b.upper, false, &mut |k, raw| {
                match (value::decode(raw), self.client_key(k)) {
                    (Some(s), Some(k)) if s.is_live(now) => {
                        let mut digest = crc64fast::Digest::new();
                        digest.write(&k);
                        digest.write(s.value);
                        checksum ^= digest.sum64();
                        kvs += 1;
                        bytes += (k.len() + s.value.len()) as u64;
                    }
                    (Some(_), Some(_)) => {}
                    _ => corrupt = true,
                }
                !corrupt
            })?;
            if corrupt {
                return Err(StorageError::Internal("corrupted raw value".into()));
            }
        }
        Ok((checksum, kvs, bytes))
    }

    // ---- writes ----

    pub fn prepare_put(
        &self,
        ctx: &kvrpcpb::Context,
        cf: &str,
        key: Vec<u8>,
        value: &[u8],
        ttl: u64,
    ) -> Result<PreparedWrite> {
        self.check_ttls([ttl])?;
        let cf = self.raw_cf(cf)?;
        let key = self.raw_key(ctx, key)?;
        let view = self.check_region(ctx, [key.as_slice()])?;
        let now = value::now_secs();
        let op = RawOp::put(cf, key, value::encode(value, ttl, now));
        self.prepare(&view, vec![op], now, ctx.disk_full_opt())
    }

    pub fn prepare_batch_put(
        &self,
        ctx: &kvrpcpb::Context,
        cf: &str,
        pairs: Vec<kvrpcpb::KvPair>,
        ttls: &[u64],
    ) -> Result<PreparedWrite> {
        let cf = self.raw_cf(cf)?;
        if ttls.len() > 1 && ttls.len() != pairs.len() {
            return Err(StorageError::invalid(format!(
                "ttls has {} entries for {} pairs",
                ttls.len(),
                pairs.len()
            )));
        }
        self.check_ttls(ttls.iter().copied())?;
        let pairs = pairs
            .into_iter()
            .map(|p| Ok((self.raw_key(ctx, p.key)?, p.value)))
            .collect::<Result<Vec<_>>>()?;
        let view = self.check_region(ctx, pairs.iter().map(|(k, _)| k.as_slice()))?;
        let now = value::now_secs();
        let ops = pairs
            .into_iter()
            .enumerate()
            .map(|(i, (key, v))| {
                let ttl = ttls.get(i).or(ttls.first()).copied().unwrap_or(0);
                RawOp::put(cf, key, value::encode(&v, ttl, now))
            })
            .collect();
        self.prepare(&view, ops, now, ctx.disk_full_opt())
    }

    pub fn prepare_delete(
        &self,
        ctx: &kvrpcpb::Context,
        cf: &str,
        key: Vec<u8>,
    ) -> Result<PreparedWrite> {
        let cf = self.raw_cf(cf)?;
        let key = self.raw_key(ctx, key)?;
        let view = self.check_region(ctx, [key.as_slice()])?;
        let now = value::now_secs();
        self.prepare(
            &view,
            vec![self.delete_op(cf, key)],
            now,
            almost_full_ok(ctx),
        )
    }

    pub fn prepare_batch_delete(
        &self,
        ctx: &kvrpcpb::Context,
        cf: &str,
        keys: Vec<Vec<u8>>,
    ) -> Result<PreparedWrite> {
        let cf = self.raw_cf(cf)?;
        let keys = keys
            .into_iter()
            .map(|k| self.raw_key(ctx, k))
            .collect::<Result<Vec<_>>>()?;
        let view = self.check_region(ctx, keys.iter().map(Vec::as_slice))?;
        let ops = keys.into_iter().map(|k| self.delete_op(cf, k)).collect();
        self.prepare(&view, ops, value::now_secs(), almost_full_ok(ctx))
    }

    pub fn prepare_delete_range(
        &self,
        ctx: &kvrpcpb::Context,
        cf: &str,
        start: Vec<u8>,
        end: Vec<u8>,
    ) -> Result<PreparedWrite> {
        let cf = self.raw_cf(cf)?;
        let (start, end) = self.raw_range(ctx, &start, &end)?;
        if !end.is_empty() && start >= end {
            return Err(StorageError::invalid(format!(
                "start key {} is not before end key {}",
                hex(&start),
                hex(&end)
            )));
        }
        let view = self.check_region(ctx, [start.as_slice()])?;
        check_range_end(&view, &end)?;
        let op = RawOp::delete_range(cf, start, end);
        self.prepare(&view, vec![op], value::now_secs(), almost_full_ok(ctx))
    }

    #[allow(clippy::too_many_arguments)]
    pub fn prepare_compare_and_swap(
        &self,
        ctx: &kvrpcpb::Context,
        cf: &str,
        key: Vec<u8>,
        value: &[u8],
        expected: Option<Vec<u8>>,
        ttl: u64,
    ) -> Result<PreparedWrite> {
        self.check_ttls([ttl])?;
        let cf = self.raw_cf(cf)?;
        let key = self.raw_key(ctx, key)?;
        let view = self.check_region(ctx, [key.as_slice()])?;
        let now = value::now_secs();
        let op = RawOp::compare_and_swap(cf, key, value::encode(value, ttl, now), expected);
        self.prepare(&view, vec![op], now, ctx.disk_full_opt())
    }

    // ---- helpers ----

    /// Whether the store takes TTLs: `enable-ttl`, or API V2, which
    /// requires it.
    fn ttl_enabled(&self) -> bool {
        self.cfg.enable_ttl || self.api().v2()
    }

    /// Refuses a write that asks for a TTL (any non-zero one of `ttls`)
    /// when the store takes none.
    fn check_ttls(&self, ttls: impl IntoIterator<Item = u64>) -> Result<()> {
        if self.ttl_enabled() || ttls.into_iter().all(|t| t == 0) {
            return Ok(());
        }
        Err(ttl_not_enabled())
    }

    /// A raw delete: physical under API V1; under API V2 a tombstone, as
    /// TiKV writes it, that compaction drops later.
    fn delete_op(&self, cf: Cf, key: Vec<u8>) -> RawOp {
        if self.api().v2() {
            RawOp::put(cf, key, value::TOMBSTONE.to_vec())
        } else {
            RawOp::delete(cf, key)
        }
    }

    /// Encodes a write whose keys were checked against `view` for the Raft
    /// log, and checks its size. It carries the epoch of that check: should
    /// a split move its keys to another region before it applies, it is
    /// refused there (EpochNotMatch) rather than applied by the wrong log.
    /// `disk_full_opt` says how full the disks it needs may be (see
    /// `tikal_raftstore::DiskFullOpt`).
    pub(crate) fn prepare(
        &self,
        view: &RegionView,
        ops: Vec<RawOp>,
        now: u64,
        disk_full_opt: DiskFullOpt,
    ) -> Result<PreparedWrite> {
        let cmd = RawCommand { ops, now }.encode_to_vec();
        let limit = self.cfg.raft_entry_max_size;
        if cmd.len() > limit {
            return Err(StorageError::region(errorpb::Error {
                message: format!(
                    "raft entry is too large: {} bytes, limit {limit}",
                    cmd.len()
                ),
                raft_entry_too_large: Some(errorpb::RaftEntryTooLarge {
                    region_id: view.region.id,
                    entry_size: cmd.len() as u64,
                }),
                ..Default::default()
            }));
        }
        Ok(PreparedWrite {
            region_id: view.region.id,
            expected: tikal_raftstore::Expected::version(view.region.region_epoch.as_ref()),
            cmd,
            disk_full_opt,
        })
    }

    /// Hands a prepared write to the store loop without waiting. `pickup`
    /// is dropped when the loop takes the write in.
    pub fn submit(&self, write: PreparedWrite, pickup: Pickup) -> Result<PendingWrite> {
        let rx = self.router.send_proposal(
            write.region_id,
            write.expected,
            write.cmd,
            write.disk_full_opt,
            pickup,
        )?;
        Ok(PendingWrite(rx))
    }

    #[allow(clippy::too_many_arguments)]
    fn scan_bounds(
        &self,
        at: &dyn KvRead,
        cf: Cf,
        b: &Bounds,
        limit: u32,
        key_only: bool,
        reverse: bool,
        budget: &mut ReplyBudget,
    ) -> Result<Vec<kvrpcpb::KvPair>> {
        let now = value::now_secs();
        let mut out = vec![];
        if limit == 0 {
            return Ok(out);
        }
        let mut corrupt = false;
        let mut spent = Ok(());
        at.scan(cf, &b.lower, &b.upper, reverse, &mut |k, raw| {
            match (value::decode(raw), self.client_key(k)) {
                (Some(s), Some(k)) if s.is_live(now) => {
                    let v = if key_only { vec![] } else { s.value.to_vec() };
                    spent = budget.take(&k, &v);
                    out.push(kv_pair(k, v));
                }
                (Some(_), Some(_)) => {}
                _ => corrupt = true,
            }
            !corrupt && spent.is_ok() && out.len() < limit as usize
        })?;
        if corrupt {
            return Err(StorageError::Internal("corrupted raw value".into()));
        }
        spent?;
        Ok(out)
    }

    /// `check_region` for a read: with `Context.replica_read` a follower
    /// or learner passes too (after [`Self::read_barrier`]).
    fn check_read_region<'k>(
        &self,
        ctx: &kvrpcpb::Context,
        keys: impl IntoIterator<Item = &'k [u8]>,
    ) -> Result<RegionView> {
        self.check_replica(ctx, Some(Cmd::Raw), keys, ctx.replica_read)
    }

    /// Checks that this store leads the request's region at the epoch the
    /// client knows, and that every key lies in the region.
    pub(crate) fn check_region<'k>(
        &self,
        ctx: &kvrpcpb::Context,
        keys: impl IntoIterator<Item = &'k [u8]>,
    ) -> Result<RegionView> {
        self.check_replica(ctx, Some(Cmd::Raw), keys, false)
    }

    /// `check_region`, where with `any_replica` a follower or learner of
    /// the region passes too. `cmd` is checked against the store's API
    /// version; None for admin requests (SplitRegion), which any takes.
    fn check_replica<'k>(
        &self,
        ctx: &kvrpcpb::Context,
        cmd: Option<Cmd>,
        keys: impl IntoIterator<Item = &'k [u8]>,
        any_replica: bool,
    ) -> Result<RegionView> {
        if let Some(cmd) = cmd {
            self.api().check_version(ctx, cmd)?;
        }
        // The store first, as TiKV checks it: a client that reached the
        // wrong store (an address reused by another store) must refresh
        // its store cache, which RegionNotFound would not make it do.
        if let Some(peer) = &ctx.peer {
            if peer.store_id != 0 && peer.store_id != self.store_id {
                return Err(StorageError::region(errorpb::Error {
                    message: format!(
                        "store not match: request for store {}, this is store {}",
                        peer.store_id, self.store_id
                    ),
                    store_not_match: Some(errorpb::StoreNotMatch {
                        request_store_id: peer.store_id,
                        actual_store_id: self.store_id,
                    }),
                    ..Default::default()
                }));
            }
        }
        let view = self.router.region_view(ctx.region_id).ok_or(
            tikal_raftstore::RaftstoreError::RegionNotFound(ctx.region_id),
        )?;
        let replica_here = view
            .region
            .peers
            .iter()
            .any(|p| p.store_id == self.store_id);
        let may_serve = view.is_leader || (any_replica && replica_here);
        if !may_serve {
            return Err(not_leader(&view, self.store_id).into());
        }
        if let Some(epoch) = &ctx.region_epoch {
            let current = view.region.region_epoch.clone().unwrap_or_default();
            if epoch.version != current.version {
                return Err(StorageError::region(crate::errors::epoch_not_match(
                    self.with_sibling(&view.region),
                )));
            }
        }
        for key in keys {
            if !in_region(&view, key) {
                return Err(key_not_in_region(&view, key));
            }
        }
        Ok(view)
    }
}

/// What a read checks once it has read: a replica's data can be replaced
/// (a Raft snapshot) or dropped (the peer destroyed: a follower's, or a
/// leader's deposed and removed since its read index) between the read's
/// barrier and the engine snapshot it reads. A read over such a change may
/// miss acknowledged writes, so it is refused (ReadIndexNotReady) and the
/// client retries. What happens after the engine snapshot is taken does
/// not reach the read (see [`RawStorage::guarded`]).
#[must_use = "a read must check its guard once it has read"]
pub struct ReadGuard {
    progress: std::sync::Arc<tikal_raftstore::ReadProgress>,
    generation: u64,
    region_id: u64,
}

impl ReadGuard {
    /// Watches the replica `progress` stands for from now on.
    fn new(progress: &std::sync::Arc<tikal_raftstore::ReadProgress>, region_id: u64) -> Self {
        ReadGuard {
            progress: progress.clone(),
            generation: progress.generation(),
            region_id,
        }
    }

    /// Ok if the replica's data stayed in place since the barrier began.
    pub fn check(self) -> Result<()> {
        if self.progress.generation() == self.generation {
            return Ok(());
        }
        Err(RaftstoreError::ReadIndexNotReady {
            region_id: self.region_id,
            reason: "the replica's data was replaced during the read".into(),
        }
        .into())
    }
}

/// The disk-full option of a write that makes room or ends transactions
/// (deletes, GC, commits, rollbacks): at least AllowedOnAlmostFull, as TiKV
/// takes them.
pub(crate) fn almost_full_ok(ctx: &kvrpcpb::Context) -> DiskFullOpt {
    ctx.disk_full_opt().max(DiskFullOpt::AllowedOnAlmostFull)
}

fn ttl_not_enabled() -> StorageError {
    StorageError::invalid(
        "TTL is not enabled on this store ([storage] enable-ttl = false), \
         but the request uses one",
    )
}

/// A raw value that is there and not expired at `now`.
fn read_live(at: &dyn KvRead, cf: Cf, key: &[u8], now: u64) -> Result<Option<Vec<u8>>> {
    let Some(raw) = at.get(cf, key)? else {
        return Ok(None);
    };
    let stored = decode_stored(&raw)?;
    Ok(stored.is_live(now).then(|| stored.value.to_vec()))
}

/// NotLeader for a region this store may not serve (see
/// [`tikal_raftstore::RaftstoreError::not_leader`]).
fn not_leader(view: &RegionView, store_id: u64) -> tikal_raftstore::RaftstoreError {
    tikal_raftstore::RaftstoreError::not_leader(view.region.id, view.leader.clone(), store_id)
}

/// A region's boundaries as transactional user keys (they are stored
/// memcomparable-encoded under API V1; a bound that does not decode, such
/// as a raw key, stays as it is).
pub fn decode_bounds(region: &mut tikal_proto::metapb::Region) {
    let user = |bound: &mut Vec<u8>| {
        if let Some((key, rest)) = tikal_codec::mvcc_key::decode_key(bound) {
            if rest.is_empty() {
                *bound = key;
            }
        }
    };
    user(&mut region.start_key);
    user(&mut region.end_key);
}

impl RawStorage {
    /// Like `check_region` for transactional requests, whose keys are user
    /// keys while region boundaries are memcomparable-encoded (as TiKV
    /// stores them under API V1): the view returned has the region's
    /// boundaries as user keys, and `keys` are checked against those.
    pub(crate) fn check_txn_region<'k>(
        &self,
        ctx: &kvrpcpb::Context,
        keys: impl IntoIterator<Item = &'k [u8]>,
    ) -> Result<RegionView> {
        self.txn_region(ctx, keys, false)
    }

    /// `check_txn_region` for a transactional read: a stale read
    /// (`Context.stale_read`) may be served by any replica, which then
    /// checks the read's ts against its own safe ts.
    pub(crate) fn check_txn_read_region<'k>(
        &self,
        ctx: &kvrpcpb::Context,
        keys: impl IntoIterator<Item = &'k [u8]>,
    ) -> Result<RegionView> {
        self.txn_region(ctx, keys, ctx.stale_read || ctx.replica_read)
    }

    fn txn_region<'k>(
        &self,
        ctx: &kvrpcpb::Context,
        keys: impl IntoIterator<Item = &'k [u8]>,
        any_replica: bool,
    ) -> Result<RegionView> {
        let mut view = self.check_replica(
            ctx,
            Some(Cmd::Txn),
            std::iter::empty::<&[u8]>(),
            any_replica,
        )?;
        decode_bounds(&mut view.region);
        for key in keys {
            self.api().check_key(ctx, Cmd::Txn, key)?;
            if !in_region(&view, key) {
                return Err(key_not_in_region(&view, key));
            }
        }
        Ok(view)
    }

    /// Where a client asked the region to split: its keys as stored
    /// (transactional user keys are memcomparable-encoded unless
    /// `is_raw`), sorted, without repeats or the region's own start, each
    /// inside the region this store leads at the client's epoch.
    pub fn split_keys(
        &self,
        ctx: &kvrpcpb::Context,
        keys: Vec<Vec<u8>>,
        is_raw: bool,
    ) -> Result<(tikal_proto::metapb::Region, Vec<Vec<u8>>)> {
        let mut keys: Vec<Vec<u8>> = keys
            .into_iter()
            .map(|k| {
                // API V2 stores raw keys encoded too.
                if is_raw && !self.api().v2() {
                    k
                } else {
                    crate::mvcc::codec::encode_key(&k)
                }
            })
            .collect();
        for k in &keys {
            check_key(k)?;
        }
        keys.sort();
        keys.dedup();
        let view = self.check_replica(ctx, None, keys.iter().map(Vec::as_slice), false)?;
        keys.retain(|k| *k != view.region.start_key);
        Ok((view.region, keys))
    }

    /// The region and, if this store has it, the region a split made of
    /// its left part (splits keep the parent id on the right), as TiKV
    /// answers EpochNotMatch: a client that knew the parent learns both.
    fn with_sibling(
        &self,
        region: &tikal_proto::metapb::Region,
    ) -> Vec<tikal_proto::metapb::Region> {
        let mut regions = vec![region.clone()];
        if !region.start_key.is_empty() {
            let sibling = self
                .router
                .region_views()
                .into_iter()
                .find(|v| v.region.end_key == region.start_key);
            regions.extend(sibling.map(|v| v.region));
        }
        regions
    }
}

/// Whether `key` lies in the region's range.
pub fn in_region(view: &RegionView, key: &[u8]) -> bool {
    let r = &view.region;
    key >= r.start_key.as_slice() && (r.end_key.is_empty() || key < r.end_key.as_slice())
}

fn key_not_in_region(view: &RegionView, key: &[u8]) -> StorageError {
    let r = &view.region;
    StorageError::region(errorpb::Error {
        message: format!("key {} is not in region {}", hex(key), r.id),
        key_not_in_region: Some(errorpb::KeyNotInRegion {
            key: key.to_vec(),
            region_id: r.id,
            start_key: r.start_key.clone(),
            end_key: r.end_key.clone(),
        }),
        ..Default::default()
    })
}

/// A delete range (whose start the region check took as a key) must end
/// inside its region, as TiKV's apply checks it: one past the region's end
/// would be cut short there without a word.
pub(crate) fn check_range_end(view: &RegionView, end: &[u8]) -> Result<()> {
    let region_end = view.region.end_key.as_slice();
    if !region_end.is_empty() && (end.is_empty() || end > region_end) {
        return Err(key_not_in_region(view, end));
    }
    Ok(())
}

/// Resolves a scan request's keys to bounds inside the region. `strict`
/// (RawScan) requires the scan's first key to be in the region; batch scans
/// and checksums clip each range to the region instead.
/// Most bytes of keys and values one read answers: a reply past the 64 MiB
/// a gRPC message may carry could never be sent, and a request that names
/// one large value many times (or one region in many ranges) must fail
/// before it builds such a reply in memory.
pub const MAX_REPLY_BYTES: usize = 64 << 20;

/// What is left of [`MAX_REPLY_BYTES`] for one reply.
pub struct ReplyBudget(usize);

impl Default for ReplyBudget {
    fn default() -> Self {
        ReplyBudget(MAX_REPLY_BYTES)
    }
}

impl ReplyBudget {
    /// Takes a pair's bytes from the budget; an error once it is spent.
    pub fn take(&mut self, key: &[u8], value: &[u8]) -> Result<()> {
        let bytes = key.len().saturating_add(value.len());
        self.0 = self.0.checked_sub(bytes).ok_or_else(|| {
            StorageError::invalid(format!(
                "the reply would be over {} MiB: ask for fewer keys or a lower limit",
                MAX_REPLY_BYTES >> 20
            ))
        })?;
        Ok(())
    }
}

/// Whether a scan's range is inverted: it holds nothing, and a scan of it
/// finds nothing, as TiKV answers it (a reverse scan runs from `start`
/// down to `end`).
pub(crate) fn inverted(start: &[u8], end: &[u8], reverse: bool) -> bool {
    let (lower, upper) = if reverse { (end, start) } else { (start, end) };
    !upper.is_empty() && lower > upper
}

pub(crate) fn scan_bounds(
    view: &RegionView,
    start: &[u8],
    end: &[u8],
    reverse: bool,
    strict: bool,
) -> Result<Bounds> {
    let r = &view.region;
    // (lower, upper) as the client meant them, before clipping.
    let (lower, upper) = if reverse { (end, start) } else { (start, end) };
    if inverted(start, end, reverse) {
        return Err(StorageError::invalid(format!(
            "start key {} is after end key {}",
            hex(start),
            hex(end)
        )));
    }
    if strict {
        // The scan's first key must be in the region or on its edge (where
        // the scan finds nothing), as TiKV checks it.
        let first_ok = if reverse {
            // The scan starts just below `upper`.
            upper.is_empty() && r.end_key.is_empty()
                || !upper.is_empty()
                    && upper >= r.start_key.as_slice()
                    && (r.end_key.is_empty() || upper <= r.end_key.as_slice())
        } else {
            in_region(view, lower) || !r.end_key.is_empty() && lower == r.end_key.as_slice()
        };
        if !first_ok {
            return Err(key_not_in_region(view, if reverse { upper } else { lower }));
        }
    }
    let lower = lower.max(r.start_key.as_slice()).to_vec();
    let upper = match (upper.is_empty(), r.end_key.is_empty()) {
        (true, _) => r.end_key.clone(),
        (false, true) => upper.to_vec(),
        (false, false) => upper.min(r.end_key.as_slice()).to_vec(),
    };
    Ok(Bounds { lower, upper })
}

/// The data column family a client names (`""` = default).
pub fn cf_name(cf: &str) -> Result<Cf> {
    if cf.is_empty() {
        return Ok(CF_DEFAULT);
    }
    DATA_CFS
        .into_iter()
        .find(|c| c.name() == cf)
        .ok_or_else(|| StorageError::invalid(format!("invalid column family {cf:?}")))
}

pub(crate) fn check_key(key: &[u8]) -> Result<()> {
    if key.is_empty() {
        return Err(StorageError::invalid("key must not be empty"));
    }
    if key.len() > MAX_KEY_SIZE {
        return Err(StorageError::invalid(format!(
            "key is too large: {} bytes, limit {MAX_KEY_SIZE}",
            key.len()
        )));
    }
    Ok(())
}

fn decode_stored(raw: &[u8]) -> Result<value::Stored<'_>> {
    value::decode(raw).ok_or_else(|| StorageError::Internal("corrupted raw value".into()))
}

fn kv_pair(key: Vec<u8>, value: Vec<u8>) -> kvrpcpb::KvPair {
    kvrpcpb::KvPair {
        key,
        value,
        ..Default::default()
    }
}

/// Upper-case hex of a key, for messages.
pub fn hex(bytes: &[u8]) -> String {
    // A message names a key; it need not carry one of megabytes whole (a
    // client's range end is not bounded as keys are).
    const SHOWN: usize = 256;
    let mut text: String = bytes
        .iter()
        .take(SHOWN)
        .map(|b| format!("{b:02X}"))
        .collect();
    if bytes.len() > SHOWN {
        text.push_str(&format!("…({} bytes)", bytes.len()));
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use tikal_proto::metapb;

    fn view(start: &[u8], end: &[u8]) -> RegionView {
        RegionView::led_here(metapb::Region {
            id: 1,
            start_key: start.to_vec(),
            end_key: end.to_vec(),
            ..Default::default()
        })
    }

    #[test]
    fn a_reads_guard_fails_once_the_replicas_data_was_replaced() {
        let progress = std::sync::Arc::new(tikal_raftstore::ReadProgress::default());
        let guard = || ReadGuard::new(&progress, 7);
        assert!(guard().check().is_ok());
        let taken = guard();
        progress.invalidate();
        match taken.check() {
            Err(StorageError::Region(e)) => {
                assert_eq!(e.read_index_not_ready.map(|r| r.region_id), Some(7))
            }
            other => panic!("{other:?}"),
        }
        assert!(guard().check().is_ok(), "taken after the change");
    }

    #[tokio::test]
    async fn a_leader_confirms_a_decision_only_at_the_region_version_it_took() {
        use tikal_proto::raft_cmdpb::{BatchSplitRequest, SplitRequest};
        let dir = tempfile::tempdir().unwrap();
        let store = crate::test_store::one_store(dir.path()).await;
        let view = store.raw.region_view(1).unwrap();
        store.raw.confirm_leader(&view).await.unwrap();
        // A split since the decision: its keys may be in the new region,
        // led (and written) elsewhere by the time it is answered.
        let req = BatchSplitRequest {
            requests: vec![SplitRequest {
                split_key: b"m".to_vec(),
                new_region_id: 9,
                new_peer_ids: vec![90],
                ..Default::default()
            }],
            ..Default::default()
        };
        let epoch = view.region.region_epoch.clone();
        store.router.batch_split(1, epoch, req).await.unwrap();
        let refused = store.raw.confirm_leader(&view).await.unwrap_err();
        assert!(
            matches!(&refused, StorageError::Region(e) if e.epoch_not_match.is_some()),
            "{refused:?}"
        );
    }

    #[tokio::test]
    async fn a_guarded_read_sees_the_data_of_its_start_when_the_live_engine_drops_it() {
        let dir = tempfile::tempdir().unwrap();
        let store = crate::test_store::one_store(dir.path()).await;
        let (raw, engine) = (&store.raw, &store.kv);
        let mut wb = engine.write_batch();
        wb.put(CF_DEFAULT, b"k", &value::encode(b"v", 0, 0));
        engine.write(wb, false).unwrap();
        let progress = std::sync::Arc::new(tikal_raftstore::ReadProgress::default());
        let got = raw.guarded(ReadGuard::new(&progress, 1), |at| {
            // A region split off the one read, then destroyed here
            // mid-read: its data goes from the live engine, not from the
            // read's snapshot.
            let mut wb = engine.write_batch();
            wb.delete_range(CF_DEFAULT, b"", b"");
            engine.write(wb, false).unwrap();
            read_live(at, CF_DEFAULT, b"k", 1)
        });
        assert_eq!(got.unwrap(), Some(b"v".to_vec()));
        assert_eq!(engine.get(CF_DEFAULT, b"k").unwrap(), None);
        // The read's own region replaced meanwhile: refused as before.
        let refused = raw.guarded(ReadGuard::new(&progress, 1), |at| {
            progress.invalidate();
            read_live(at, CF_DEFAULT, b"k", 1)
        });
        assert!(refused.is_err());
    }

    #[tokio::test]
    async fn a_raw_read_asking_for_a_stale_read_still_waits_for_its_read_index() {
        let dir = tempfile::tempdir().unwrap();
        let store = crate::test_store::one_store(dir.path()).await;
        let mut wb = store.kv.write_batch();
        wb.put(CF_DEFAULT, b"k", &value::encode(b"v", 0, 0));
        store.kv.write(wb, false).unwrap();
        let stale = kvrpcpb::Context {
            stale_read: true,
            ..crate::test_store::ctx()
        };
        let get = || {
            store
                .raw
                .guarded_read(&stale, Cmd::Raw, |at| store.raw.get(at, &stale, "", b"k"))
        };
        assert_eq!(get().await.unwrap(), Some(b"v".to_vec()));
        // A store loop that is gone answers no read index: the read fails
        // rather than answering from data no quorum confirmed.
        store.router.stop();
        assert!(get().await.is_err());
    }

    #[tokio::test]
    async fn batch_scan_ranges_and_delete_ranges_are_read_as_tikv_reads_them() {
        let dir = tempfile::tempdir().unwrap();
        let store = crate::test_store::one_store(dir.path()).await;
        let mut wb = store.kv.write_batch();
        for k in [&b"a"[..], b"n", b"q"] {
            wb.put(CF_DEFAULT, k, &value::encode(b"v", 0, 0));
        }
        store.kv.write(wb, false).unwrap();
        let ctx = crate::test_store::ctx();
        let range = |s: &[u8], e: &[u8]| kvrpcpb::KeyRange {
            start_key: s.to_vec(),
            end_key: e.to_vec(),
        };
        let scan = |ranges: Vec<kvrpcpb::KeyRange>, reverse: bool| {
            let (raw, ctx) = (&store.raw, &ctx);
            async move {
                raw.guarded_read(ctx, Cmd::Raw, |at| {
                    raw.batch_scan(at, ctx, "", &ranges, 100, true, reverse)
                })
                .await
                .map(|pairs| pairs.into_iter().map(|p| p.key).collect::<Vec<_>>())
            }
        };
        // An open end short of the last range stops at the next range's
        // start: `n` once, and nothing past `p`.
        let keys = scan(vec![range(b"a", b""), range(b"m", b"p")], false).await;
        assert_eq!(keys.unwrap(), vec![b"a".to_vec(), b"n".to_vec()]);
        let keys = scan(vec![range(b"z", b""), range(b"o", b"m")], true).await;
        assert_eq!(keys.unwrap(), vec![b"q".to_vec(), b"n".to_vec()]);
        // An empty range is refused, as TiKV's "Invalid KeyRanges".
        assert!(scan(vec![range(b"m", b"m")], false).await.is_err());
        assert!(scan(vec![range(b"a", b""), range(b"a", b"b")], false)
            .await
            .is_err());
        // RawScan: an inverted range finds nothing; a start on the
        // region's edge is no error.
        let keys = store.raw.guarded_read(&ctx, Cmd::Raw, |at| {
            store.raw.scan(at, &ctx, "", b"z", b"a", 10, true, false)
        });
        assert!(keys.await.unwrap().is_empty());
        // A delete range must not be empty.
        let same = store
            .raw
            .prepare_delete_range(&ctx, "", b"k".to_vec(), b"k".to_vec());
        assert!(matches!(same, Err(StorageError::InvalidArgument(_))));
    }

    #[tokio::test]
    async fn a_small_request_for_a_huge_reply_is_refused_before_it_is_built() {
        // One 1 MiB value, asked for 100 times (a 300-byte request), or
        // the region scanned in 100 ranges: 100 MiB, past what one gRPC
        // reply carries.
        let dir = tempfile::tempdir().unwrap();
        let store = crate::test_store::one_store(dir.path()).await;
        let mut wb = store.kv.write_batch();
        wb.put(CF_DEFAULT, b"k", &value::encode(&vec![7; 1 << 20], 0, 0));
        store.kv.write(wb, false).unwrap();
        let ctx = crate::test_store::ctx();
        let read = |keys: Vec<Vec<u8>>| {
            let (raw, ctx) = (&store.raw, &ctx);
            raw.guarded_read(ctx, Cmd::Raw, move |at| raw.batch_get(at, ctx, "", &keys))
        };
        let pairs = read(vec![b"k".to_vec(); 10]).await.unwrap();
        assert_eq!(pairs.len(), 10, "10 MiB is a reply");
        match read(vec![b"k".to_vec(); 100]).await {
            Err(StorageError::InvalidArgument(why)) => assert!(why.contains("64 MiB"), "{why}"),
            other => panic!(
                "expected the reply refused, got {:?}",
                other.map(|p| p.len())
            ),
        }
        let ranges: Vec<kvrpcpb::KeyRange> = (0..100)
            .map(|_| kvrpcpb::KeyRange {
                start_key: b"a".to_vec(),
                end_key: b"z".to_vec(),
            })
            .collect();
        let scanned = store.raw.guarded_read(&ctx, Cmd::Raw, |at| {
            store
                .raw
                .batch_scan(at, &ctx, "", &ranges, u32::MAX, false, false)
        });
        assert!(matches!(
            scanned.await,
            Err(StorageError::InvalidArgument(_))
        ));
    }

    #[test]
    fn a_long_key_is_shown_cut_in_messages() {
        assert_eq!(hex(b"\x01\xab"), "01AB");
        let long = hex(&vec![0xab; 30 << 20]);
        assert!(long.len() < 600, "{}", long.len());
        assert!(long.ends_with("…(31457280 bytes)"), "{long}");
    }

    #[test]
    fn a_delete_range_must_end_inside_its_region() {
        let v = view(b"b", b"m");
        assert!(check_range_end(&v, b"m").is_ok());
        assert!(check_range_end(&v, b"c").is_ok());
        for end in [&b"n"[..], b""] {
            assert!(matches!(
                check_range_end(&v, end),
                Err(StorageError::Region(_))
            ));
        }
        assert!(check_range_end(&view(b"b", b""), b"").is_ok());
    }

    #[test]
    fn scan_bounds_clip_to_region_and_reject_inverted_ranges() {
        let v = view(b"b", b"m");
        let b = scan_bounds(&v, b"c", b"", false, true).unwrap();
        assert_eq!(
            (b.lower.as_slice(), b.upper.as_slice()),
            (&b"c"[..], &b"m"[..])
        );
        assert!(matches!(
            scan_bounds(&v, b"a", b"c", false, true),
            Err(StorageError::Region(_))
        ));
        let b = scan_bounds(&v, b"a", b"z", false, false).unwrap();
        assert_eq!(
            (b.lower.as_slice(), b.upper.as_slice()),
            (&b"b"[..], &b"m"[..])
        );
        assert!(matches!(
            scan_bounds(&v, b"d", b"c", false, true),
            Err(StorageError::InvalidArgument(_))
        ));
        // A first key on the region's edge finds nothing, as TiKV.
        let b = scan_bounds(&v, b"m", b"", false, true).unwrap();
        assert_eq!(
            (b.lower.as_slice(), b.upper.as_slice()),
            (&b"m"[..], &b"m"[..])
        );
        let b = scan_bounds(&v, b"b", b"", true, true).unwrap();
        assert_eq!(
            (b.lower.as_slice(), b.upper.as_slice()),
            (&b"b"[..], &b"b"[..])
        );
        assert!(matches!(
            scan_bounds(&v, b"n", b"", false, true),
            Err(StorageError::Region(_))
        ));
        // Reverse: start is the exclusive upper bound, end the lower bound.
        let b = scan_bounds(&v, b"k", b"c", true, true).unwrap();
        assert_eq!(
            (b.lower.as_slice(), b.upper.as_slice()),
            (&b"c"[..], &b"k"[..])
        );
        assert!(matches!(
            scan_bounds(&v, b"c", b"k", true, true),
            Err(StorageError::InvalidArgument(_))
        ));
    }

    #[test]
    fn not_leader_never_names_this_store() {
        let mut v = view(b"", b"");
        v.is_leader = false;
        let peer = |store_id| metapb::Peer {
            id: 10 + store_id,
            store_id,
            ..Default::default()
        };
        v.leader = Some(peer(2));
        let named = |e| match e {
            tikal_raftstore::RaftstoreError::NotLeader { leader, .. } => leader,
            other => panic!("expected NotLeader, got {other:?}"),
        };
        assert_eq!(named(not_leader(&v, 1)), Some(peer(2)));
        // Store 2 leads in Raft but does not serve yet.
        assert_eq!(named(not_leader(&v, 2)), None);
    }

    #[test]
    fn column_family_names_are_validated() {
        assert_eq!(cf_name("").unwrap(), CF_DEFAULT);
        assert_eq!(cf_name("write").unwrap(), tikal_engine::CF_WRITE);
        assert!(cf_name("raft").is_err());
        assert!(cf_name("bogus").is_err());
    }
}
