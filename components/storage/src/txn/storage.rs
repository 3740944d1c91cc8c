//! The transactional commands, each as TiKV defines it.

use tikal_proto::kvrpcpb::{self, prewrite_request::PessimisticAction, write_conflict::Reason, Op};

use std::time::{Duration, Instant};

use super::lock_wait::Waiting;
use super::{key_error as ke, Batch, TxnError, TxnResult, TxnStorage};
use crate::mvcc::codec::encode_key;
use crate::mvcc::record::{Lock, LockType, Write, WriteType, SHORT_VALUE_MAX_LEN};
use crate::mvcc::MvccReader;
use tikal_engine::Cf;

/// How many user keys one GC batch covers (TiKV's `[gc] batch-keys`
/// default).
pub const GC_BATCH_KEYS: usize = 512;

/// Milliseconds since the Unix epoch of a TSO timestamp.
fn physical(ts: u64) -> u64 {
    ts >> 18
}

fn lock_expired(lock: &Lock, current_ts: u64) -> bool {
    physical(current_ts) >= physical(lock.ts) + lock.ttl
}

fn one(e: kvrpcpb::KeyError) -> TxnError {
    TxnError::Key(vec![e])
}

/// Whether a read at `ts` must stop at `lock` (TiKV's snapshot-isolation
/// check): only a Put or Delete lock started at or before `ts`, that could
/// still commit at or below `ts`, and that the client has not told us it
/// resolved.
fn blocks_read(lock: &Lock, ts: u64, ctx: &kvrpcpb::Context) -> bool {
    if lock.ts > ts || matches!(lock.lock_type, LockType::Lock | LockType::Pessimistic) {
        return false;
    }
    if lock.min_commit_ts > ts {
        return false;
    }
    !ctx.resolved_locks.contains(&lock.ts) && !ctx.committed_locks.contains(&lock.ts)
}

/// What a prewrite produced.
#[derive(Debug, Default)]
pub struct PrewriteOutcome {
    pub min_commit_ts: u64,
    pub one_pc_commit_ts: u64,
}

/// One attempt at pessimistic locks: taken (values, not_founds as asked),
/// or a wait registered on the first key another transaction holds.
enum LockOutcome {
    Locked(Vec<Vec<u8>>, Vec<bool>),
    Wait(Waiting),
}

/// What CheckTxnStatus found or did.
#[derive(Debug, Default)]
pub struct TxnStatus {
    pub lock_ttl: u64,
    pub commit_version: u64,
    pub action: kvrpcpb::Action,
    pub lock_info: Option<kvrpcpb::LockInfo>,
}

/// Rolls back transaction `start_ts` on `key` (whose lock, if any, is
/// `lock`): drops the lock and its value, and leaves a rollback record so a
/// late prewrite of the same transaction fails.
fn rollback_key(
    reader: &MvccReader<'_>,
    b: &mut Batch,
    key: &[u8],
    start_ts: u64,
    lock: Option<&Lock>,
) -> TxnResult<()> {
    if let Some(lock) = lock {
        b.delete_lock(key);
        if lock.lock_type == LockType::Put && lock.short_value.is_none() {
            b.delete_value(key, start_ts);
        }
        if lock.lock_type == LockType::Pessimistic {
            // Never prewritten: nothing can arrive late for it.
            return Ok(());
        }
    }
    match reader.seek_write(key, start_ts)? {
        // Another transaction committed at exactly start_ts: mark it
        // instead of overwriting its record.
        Some((c, mut w)) if c == start_ts && w.start_ts != start_ts => {
            w.has_overlapped_rollback = true;
            b.put_write(key, c, &w);
        }
        _ => b.put_write(
            key,
            start_ts,
            &Write::new(WriteType::Rollback, start_ts, None),
        ),
    }
    Ok(())
}

/// Commits `key`'s lock of `start_ts` at `commit_ts`.
fn commit_key(
    reader: &MvccReader<'_>,
    b: &mut Batch,
    key: &[u8],
    start_ts: u64,
    commit_ts: u64,
) -> TxnResult<()> {
    match reader.load_lock(key)? {
        Some(lock) if lock.ts == start_ts => {
            if lock.lock_type == LockType::Pessimistic {
                // A pessimistic lock never prewritten cannot be committed.
                return Err(one(ke::txn_lock_not_found(start_ts, commit_ts, key)));
            }
            if commit_ts < lock.min_commit_ts {
                return Err(one(ke::commit_ts_expired(
                    start_ts,
                    commit_ts,
                    key,
                    lock.min_commit_ts,
                )));
            }
            let w = Write::new(
                WriteType::of_lock(lock.lock_type),
                start_ts,
                lock.short_value.clone(),
            );
            b.put_write(key, commit_ts, &w);
            b.delete_lock(key);
            Ok(())
        }
        _ => match reader.txn_record(key, start_ts)? {
            Some((_, w)) if w.write_type != WriteType::Rollback && w.start_ts == start_ts => Ok(()),
            _ => Err(one(ke::txn_lock_not_found(start_ts, commit_ts, key))),
        },
    }
}

impl TxnStorage {
    // ---- reads ----

    fn check_lock(
        &self,
        reader: &MvccReader<'_>,
        key: &[u8],
        ts: u64,
        ctx: &kvrpcpb::Context,
    ) -> TxnResult<()> {
        let lock = match self.cm.memory_lock(key) {
            Some(l) => Some(l),
            None => reader.load_lock(key)?,
        };
        match lock {
            Some(l) if blocks_read(&l, ts, ctx) => Err(one(ke::locked(l.info(key)))),
            _ => Ok(()),
        }
    }

    /// A stale read (`Context.stale_read`) is served only at or below the
    /// region's safe ts: below every lock in the region, and at most the
    /// PD timestamp the store last learned (so no commit can still land
    /// below it). Above it the answer is DataIsNotReady and the client
    /// retries as an ordinary leader read.
    fn check_stale_read(
        &self,
        reader: &MvccReader<'_>,
        ctx: &kvrpcpb::Context,
        view: &tikal_raftstore::RegionView,
        ts: u64,
    ) -> TxnResult<()> {
        if !ctx.stale_read {
            return Ok(());
        }
        let (start, end) = (&view.region.start_key, &view.region.end_key);
        let mut safe_ts = self.ts_floor.load(std::sync::atomic::Ordering::SeqCst);
        let mut below_lock = |l: &crate::mvcc::record::Lock| {
            safe_ts = safe_ts.min(l.ts.saturating_sub(1));
        };
        for (_, l) in self.cm.memory_locks_in(start, end) {
            below_lock(&l);
        }
        reader.scan_locks(start, end, |_, l| {
            below_lock(&l);
            true
        })?;
        if ts <= safe_ts {
            return Ok(());
        }
        Err(crate::StorageError::region(tikal_proto::errorpb::Error {
            message: format!(
                "stale read at {ts} is above region {}'s safe ts {safe_ts}",
                view.region.id
            ),
            data_is_not_ready: Some(tikal_proto::errorpb::DataIsNotReady {
                region_id: view.region.id,
                peer_id: ctx.peer.as_ref().map_or(0, |p| p.id),
                safe_ts,
            }),
            ..Default::default()
        })
        .into())
    }

    pub fn get(&self, ctx: &kvrpcpb::Context, key: &[u8], ts: u64) -> TxnResult<Option<Vec<u8>>> {
        crate::raw::check_key(key)?;
        let view = self.raw.check_region(ctx, [key])?;
        self.cm.observe_read(ts);
        let reader = MvccReader::new(self.raw.engine());
        self.check_stale_read(&reader, ctx, &view, ts)?;
        self.check_lock(&reader, key, ts, ctx)?;
        Ok(reader.get(key, ts)?)
    }

    /// Found pairs; a locked key is a pair carrying its error.
    pub fn batch_get(
        &self,
        ctx: &kvrpcpb::Context,
        keys: &[Vec<u8>],
        ts: u64,
    ) -> TxnResult<Vec<kvrpcpb::KvPair>> {
        for k in keys {
            crate::raw::check_key(k)?;
        }
        let view = self.raw.check_region(ctx, keys.iter().map(Vec::as_slice))?;
        self.cm.observe_read(ts);
        let reader = MvccReader::new(self.raw.engine());
        self.check_stale_read(&reader, ctx, &view, ts)?;
        let mut pairs = vec![];
        for key in keys {
            match self.check_lock(&reader, key, ts, ctx) {
                Err(TxnError::Key(mut e)) => pairs.push(kvrpcpb::KvPair {
                    error: e.pop(),
                    key: key.clone(),
                    value: vec![],
                }),
                Err(e) => return Err(e),
                Ok(()) => {
                    if let Some(value) = reader.get(key, ts)? {
                        pairs.push(kvrpcpb::KvPair {
                            error: None,
                            key: key.clone(),
                            value,
                        });
                    }
                }
            }
        }
        Ok(pairs)
    }

    /// Scan in key order (descending when `reverse`, where `start` is the
    /// exclusive upper end as in TiKV). A locked key becomes a pair
    /// carrying its error.
    #[allow(clippy::too_many_arguments)]
    pub fn scan(
        &self,
        ctx: &kvrpcpb::Context,
        start: &[u8],
        end: &[u8],
        limit: u32,
        ts: u64,
        key_only: bool,
        reverse: bool,
    ) -> TxnResult<Vec<kvrpcpb::KvPair>> {
        let view = self.raw.check_region(ctx, std::iter::empty::<&[u8]>())?;
        let bounds = crate::raw::scan_bounds(&view, start, end, reverse, false)?;
        self.cm.observe_read(ts);
        let reader = MvccReader::new(self.raw.engine());
        self.check_stale_read(&reader, ctx, &view, ts)?;
        let limit = if limit == 0 {
            usize::MAX
        } else {
            limit as usize
        };
        // Locks first: a locked key in range reports its lock in place.
        let mut locks = std::collections::BTreeMap::new();
        reader.scan_locks(&bounds.lower, &bounds.upper, |k, l| {
            if blocks_read(&l, ts, ctx) {
                locks.insert(k, l);
            }
            true
        })?;
        for (k, l) in self.cm.memory_locks_in(&bounds.lower, &bounds.upper) {
            if blocks_read(&l, ts, ctx) {
                locks.insert(k, l);
            }
        }
        // Values: the visible version of each key.
        let mut values: Vec<(Vec<u8>, Option<Write>)> = vec![];
        let mut current: Option<Vec<u8>> = None;
        let mut decided = false;
        let mut found = 0usize;
        reader.scan_writes(
            &bounds.lower,
            &bounds.upper,
            reverse,
            |key, commit_ts, w| {
                if current.as_deref() != Some(key) {
                    if found >= limit {
                        return false;
                    }
                    current = Some(key.to_vec());
                    decided = false;
                }
                if decided || commit_ts > ts {
                    return true;
                }
                match w.write_type {
                    WriteType::Put => {
                        values.push((key.to_vec(), Some(w)));
                        decided = true;
                        found += 1;
                    }
                    WriteType::Delete => decided = true,
                    _ => {}
                }
                true
            },
        )?;
        // Merge values and locks in scan order, up to `limit`.
        let mut out: Vec<kvrpcpb::KvPair> = vec![];
        let mut lock_iter: Box<dyn Iterator<Item = (Vec<u8>, Lock)>> = if reverse {
            Box::new(locks.into_iter().rev())
        } else {
            Box::new(locks.into_iter())
        };
        let mut next_lock = lock_iter.next();
        let before = |a: &[u8], b: &[u8]| if reverse { a > b } else { a < b };
        let mut vals = values.into_iter().peekable();
        while out.len() < limit {
            let take_lock = match (&next_lock, vals.peek()) {
                (Some((lk, _)), Some((vk, _))) => !before(vk, lk),
                (Some(_), None) => true,
                (None, Some(_)) => false,
                (None, None) => break,
            };
            if take_lock {
                if let Some((k, l)) = next_lock.take() {
                    if vals.peek().is_some_and(|(vk, _)| *vk == k) {
                        vals.next();
                    }
                    out.push(kvrpcpb::KvPair {
                        error: Some(ke::locked(l.info(&k))),
                        key: k,
                        value: vec![],
                    });
                }
                next_lock = lock_iter.next();
            } else if let Some((k, w)) = vals.next() {
                let value = match (key_only, w) {
                    (true, _) | (false, None) => vec![],
                    (false, Some(w)) => reader.load_value(&k, w)?,
                };
                out.push(kvrpcpb::KvPair {
                    error: None,
                    key: k,
                    value,
                });
            }
        }
        Ok(out)
    }

    pub fn scan_lock(
        &self,
        ctx: &kvrpcpb::Context,
        start: &[u8],
        end: &[u8],
        max_ts: u64,
        limit: u32,
    ) -> TxnResult<Vec<kvrpcpb::LockInfo>> {
        let view = self.raw.check_region(ctx, std::iter::empty::<&[u8]>())?;
        let bounds = crate::raw::scan_bounds(&view, start, end, false, false)?;
        let limit = if limit == 0 {
            usize::MAX
        } else {
            limit as usize
        };
        let reader = MvccReader::new(self.raw.engine());
        let mut out = vec![];
        reader.scan_locks(&bounds.lower, &bounds.upper, |k, l| {
            if l.ts <= max_ts {
                out.push(l.info(&k));
            }
            out.len() < limit
        })?;
        Ok(out)
    }

    // ---- writes ----

    pub async fn prewrite(&self, req: kvrpcpb::PrewriteRequest) -> TxnResult<PrewriteOutcome> {
        let ctx = req.context.clone().unwrap_or_default();
        let keys: Vec<Vec<u8>> = req.mutations.iter().map(|m| m.key.clone()).collect();
        let start_ts = req.start_version;
        let async_commit = req.use_async_commit || req.try_one_pc;
        let cm = self.cm.clone();
        let result = self
            .write(&ctx, &keys, |reader, b| {
                let mut errors = vec![];
                let mut one_pc = vec![];
                let mut min_commit_ts = 0;
                for (i, m) in req.mutations.iter().enumerate() {
                    let op = Op::try_from(m.op).unwrap_or(Op::Put);
                    let pessimistic = req
                        .pessimistic_actions
                        .get(i)
                        .is_some_and(|a| *a == PessimisticAction::DoPessimisticCheck as i32);
                    let existing = reader.load_lock(&m.key)?;
                    match &existing {
                        Some(l) if l.ts != start_ts => {
                            errors.push(ke::locked(l.info(&m.key)));
                            continue;
                        }
                        // Already prewritten by this transaction: a retry.
                        Some(l) if l.lock_type != LockType::Pessimistic => {
                            min_commit_ts = min_commit_ts.max(l.min_commit_ts);
                            continue;
                        }
                        Some(_) => {}
                        None if pessimistic => {
                            return Err(one(ke::pessimistic_lock_not_found(start_ts, &m.key)));
                        }
                        None => {}
                    }
                    if existing.is_none() {
                        // Our own commit or rollback record means this is a
                        // late duplicate.
                        if let Some((c, w)) = reader.txn_record(&m.key, start_ts)? {
                            if w.write_type == WriteType::Rollback || c == start_ts {
                                return Err(one(ke::write_conflict(
                                    start_ts,
                                    start_ts,
                                    c,
                                    &m.key,
                                    &req.primary_lock,
                                    Reason::SelfRolledBack,
                                )));
                            }
                            continue;
                        }
                        if !req.skip_constraint_check {
                            if let Some((c, w)) = reader.seek_write(&m.key, u64::MAX)? {
                                if c > start_ts {
                                    return Err(one(ke::write_conflict(
                                        start_ts,
                                        w.start_ts,
                                        c,
                                        &m.key,
                                        &req.primary_lock,
                                        Reason::Optimistic,
                                    )));
                                }
                            }
                        }
                    }
                    if matches!(op, Op::Insert | Op::CheckNotExists)
                        && reader.get(&m.key, u64::MAX)?.is_some()
                    {
                        return Err(one(ke::already_exist(&m.key)));
                    }
                    let lock_type = match op {
                        Op::Put | Op::Insert => LockType::Put,
                        Op::Del => LockType::Delete,
                        Op::Lock => LockType::Lock,
                        Op::CheckNotExists => continue,
                        Op::Rollback | Op::PessimisticLock => {
                            return Err(TxnError::Storage(crate::StorageError::invalid(format!(
                                "prewrite cannot carry a {op:?} mutation"
                            ))))
                        }
                    };
                    let mut lock =
                        Lock::new(lock_type, req.primary_lock.clone(), start_ts, req.lock_ttl);
                    lock.for_update_ts = req.for_update_ts;
                    lock.txn_size = req.txn_size;
                    lock.min_commit_ts = req.min_commit_ts;
                    if lock_type == LockType::Put {
                        if m.value.len() <= SHORT_VALUE_MAX_LEN {
                            lock.short_value = Some(m.value.clone());
                        } else {
                            b.put_value(&m.key, start_ts, m.value.clone());
                        }
                    }
                    if async_commit {
                        if req.use_async_commit {
                            lock.use_async_commit = true;
                            if m.key == req.primary_lock {
                                lock.secondaries = req.secondaries.clone();
                            }
                        }
                        // In memory before max_ts is read: a reader either
                        // sees this lock or has already raised max_ts.
                        cm.lock_in_memory(&m.key, lock.clone());
                        let min = [
                            start_ts + 1,
                            req.min_commit_ts,
                            req.for_update_ts + 1,
                            cm.max_ts() + 1,
                        ]
                        .into_iter()
                        .max()
                        .unwrap_or(start_ts + 1);
                        lock.min_commit_ts = min;
                        min_commit_ts = min_commit_ts.max(min);
                        cm.lock_in_memory(&m.key, lock.clone());
                    }
                    if req.try_one_pc {
                        one_pc.push((m.key.clone(), lock, existing.is_some()));
                    } else {
                        b.put_lock(&m.key, &lock);
                    }
                }
                if !errors.is_empty() {
                    return Err(TxnError::Key(errors));
                }
                if req.max_commit_ts > 0 && min_commit_ts > req.max_commit_ts {
                    // Too late for async commit / 1PC: TiKV answers with a
                    // zero min_commit_ts and the client commits normally.
                    return Err(one(kvrpcpb::KeyError {
                        commit_ts_too_large: Some(kvrpcpb::CommitTsTooLarge {
                            commit_ts: min_commit_ts,
                        }),
                        ..Default::default()
                    }));
                }
                let mut outcome = PrewriteOutcome {
                    min_commit_ts: if async_commit { min_commit_ts } else { 0 },
                    one_pc_commit_ts: 0,
                };
                if req.try_one_pc {
                    let commit_ts = min_commit_ts;
                    for (key, lock, had_lock) in one_pc {
                        let w = Write::new(
                            WriteType::of_lock(lock.lock_type),
                            start_ts,
                            lock.short_value.clone(),
                        );
                        b.put_write(&key, commit_ts, &w);
                        if had_lock {
                            b.delete_lock(&key);
                        }
                    }
                    outcome.one_pc_commit_ts = commit_ts;
                    outcome.min_commit_ts = 0;
                }
                Ok(outcome)
            })
            .await;
        if async_commit {
            self.cm.release(&keys);
        }
        result
    }

    pub async fn commit(
        &self,
        ctx: &kvrpcpb::Context,
        keys: &[Vec<u8>],
        start_ts: u64,
        commit_ts: u64,
    ) -> TxnResult<()> {
        if commit_ts <= start_ts {
            return Err(crate::StorageError::invalid(format!(
                "commit_version {commit_ts} must be greater than start_version {start_ts}"
            ))
            .into());
        }
        self.write(ctx, keys, |reader, b| {
            for key in keys {
                commit_key(reader, b, key, start_ts, commit_ts)?;
            }
            Ok(())
        })
        .await
    }

    pub async fn batch_rollback(
        &self,
        ctx: &kvrpcpb::Context,
        keys: &[Vec<u8>],
        start_ts: u64,
    ) -> TxnResult<()> {
        self.write(ctx, keys, |reader, b| {
            for key in keys {
                let lock = reader.load_lock(key)?.filter(|l| l.ts == start_ts);
                if lock.is_none() {
                    match reader.txn_record(key, start_ts)? {
                        Some((c, w))
                            if w.write_type != WriteType::Rollback && w.start_ts == start_ts =>
                        {
                            return Err(one(ke::committed(start_ts, c, key)));
                        }
                        Some(_) => continue, // already rolled back
                        None => {}
                    }
                }
                rollback_key(reader, b, key, start_ts, lock.as_ref())?;
            }
            Ok(())
        })
        .await
    }

    /// Rolls back `key` of `start_ts` if its lock expired (or
    /// `current_ts` is 0); returns the commit ts if it had committed.
    pub async fn cleanup(
        &self,
        ctx: &kvrpcpb::Context,
        key: Vec<u8>,
        start_ts: u64,
        current_ts: u64,
    ) -> TxnResult<u64> {
        let keys = [key.clone()];
        self.write(ctx, &keys, |reader, b| match reader.load_lock(&key)? {
            Some(l) if l.ts == start_ts => {
                if current_ts != 0 && !lock_expired(&l, current_ts) {
                    return Err(one(ke::locked(l.info(&key))));
                }
                rollback_key(reader, b, &key, start_ts, Some(&l))?;
                Ok(0)
            }
            _ => match reader.txn_record(&key, start_ts)? {
                Some((c, w)) if w.write_type != WriteType::Rollback && w.start_ts == start_ts => {
                    Err(one(ke::committed(start_ts, c, &key)))
                }
                Some(_) => Ok(0),
                None => {
                    rollback_key(reader, b, &key, start_ts, None)?;
                    Ok(0)
                }
            },
        })
        .await
    }

    pub async fn check_txn_status(
        &self,
        req: &kvrpcpb::CheckTxnStatusRequest,
    ) -> TxnResult<TxnStatus> {
        let ctx = req.context.clone().unwrap_or_default();
        let key = req.primary_key.clone();
        let (lock_ts, caller, current) = (req.lock_ts, req.caller_start_ts, req.current_ts);
        self.write(&ctx, std::slice::from_ref(&key), |reader, b| {
            if let Some(mut l) = reader.load_lock(&key)?.filter(|l| l.ts == lock_ts) {
                if l.use_async_commit && !req.force_sync_commit {
                    return Ok(TxnStatus {
                        lock_ttl: l.ttl,
                        lock_info: Some(l.info(&key)),
                        ..Default::default()
                    });
                }
                if lock_expired(&l, current) {
                    let action = if l.lock_type == LockType::Pessimistic {
                        kvrpcpb::Action::TtlExpirePessimisticRollback
                    } else {
                        kvrpcpb::Action::TtlExpireRollback
                    };
                    rollback_key(reader, b, &key, lock_ts, Some(&l))?;
                    return Ok(TxnStatus {
                        action,
                        ..Default::default()
                    });
                }
                let mut action = kvrpcpb::Action::NoAction;
                if caller != 0
                    && caller != u64::MAX
                    && l.lock_type != LockType::Pessimistic
                    && l.min_commit_ts <= caller
                {
                    l.min_commit_ts = caller + 1;
                    b.put_lock(&key, &l);
                    action = kvrpcpb::Action::MinCommitTsPushed;
                }
                return Ok(TxnStatus {
                    lock_ttl: l.ttl,
                    action,
                    lock_info: Some(l.info(&key)),
                    ..Default::default()
                });
            }
            match reader.txn_record(&key, lock_ts)? {
                Some((c, w)) if w.write_type != WriteType::Rollback && w.start_ts == lock_ts => {
                    Ok(TxnStatus {
                        commit_version: c,
                        ..Default::default()
                    })
                }
                Some(_) => Ok(TxnStatus::default()),
                None if req.resolving_pessimistic_lock => Ok(TxnStatus {
                    action: kvrpcpb::Action::LockNotExistDoNothing,
                    ..Default::default()
                }),
                None if req.rollback_if_not_exist => {
                    rollback_key(reader, b, &key, lock_ts, None)?;
                    Ok(TxnStatus {
                        action: kvrpcpb::Action::LockNotExistRollback,
                        ..Default::default()
                    })
                }
                None => Err(one(ke::txn_not_found(lock_ts, &key))),
            }
        })
        .await
    }

    /// Async-commit recovery: the secondaries' locks, or the commit ts
    /// (0 with no locks = rolled back).
    pub async fn check_secondary_locks(
        &self,
        ctx: &kvrpcpb::Context,
        keys: &[Vec<u8>],
        start_ts: u64,
    ) -> TxnResult<(Vec<kvrpcpb::LockInfo>, u64)> {
        self.write(ctx, keys, |reader, b| {
            let mut locks = vec![];
            let mut commit_ts = 0;
            for key in keys {
                match reader.load_lock(key)?.filter(|l| l.ts == start_ts) {
                    Some(l) if l.lock_type == LockType::Pessimistic => {
                        rollback_key(reader, b, key, start_ts, Some(&l))?;
                        return Ok((vec![], 0));
                    }
                    Some(l) => locks.push(l.info(key)),
                    None => match reader.txn_record(key, start_ts)? {
                        Some((c, w))
                            if w.write_type != WriteType::Rollback && w.start_ts == start_ts =>
                        {
                            commit_ts = c
                        }
                        Some(_) => return Ok((vec![], 0)),
                        None => {
                            rollback_key(reader, b, key, start_ts, None)?;
                            return Ok((vec![], 0));
                        }
                    },
                }
            }
            if commit_ts > 0 {
                Ok((vec![], commit_ts))
            } else {
                Ok((locks, 0))
            }
        })
        .await
    }

    /// Commits (commit_ts > 0) or rolls back the locks of the given
    /// transactions: on `keys`, or on every key of the region.
    pub async fn resolve_lock(
        &self,
        ctx: &kvrpcpb::Context,
        txns: &[(u64, u64)],
        keys: &[Vec<u8>],
    ) -> TxnResult<()> {
        let status: std::collections::HashMap<u64, u64> = txns.iter().copied().collect();
        let targets: Vec<(Vec<u8>, u64)> = if keys.is_empty() {
            let view = self.raw.check_region(ctx, std::iter::empty::<&[u8]>())?;
            let mut found = vec![];
            MvccReader::new(self.raw.engine()).scan_locks(
                &view.region.start_key,
                &view.region.end_key,
                |k, l| {
                    if status.contains_key(&l.ts) {
                        found.push((k, l.ts));
                    }
                    true
                },
            )?;
            found
        } else {
            let start_ts = txns.first().map_or(0, |t| t.0);
            keys.iter().map(|k| (k.clone(), start_ts)).collect()
        };
        let latch_keys: Vec<Vec<u8>> = targets.iter().map(|t| t.0.clone()).collect();
        self.write(ctx, &latch_keys, |reader, b| {
            for (key, start_ts) in &targets {
                let commit_ts = status.get(start_ts).copied().unwrap_or(0);
                let lock = reader.load_lock(key)?.filter(|l| l.ts == *start_ts);
                match lock {
                    Some(l) if l.lock_type == LockType::Pessimistic => b.delete_lock(key),
                    Some(_) if commit_ts > 0 => commit_key(reader, b, key, *start_ts, commit_ts)?,
                    Some(l) => rollback_key(reader, b, key, *start_ts, Some(&l))?,
                    None if commit_ts == 0 && reader.txn_record(key, *start_ts)?.is_none() => {
                        rollback_key(reader, b, key, *start_ts, None)?
                    }
                    None => {}
                }
            }
            Ok(())
        })
        .await
    }

    pub async fn txn_heart_beat(
        &self,
        ctx: &kvrpcpb::Context,
        primary: Vec<u8>,
        start_ts: u64,
        advise_ttl: u64,
    ) -> TxnResult<u64> {
        let keys = [primary.clone()];
        self.write(ctx, &keys, |reader, b| {
            match reader.load_lock(&primary)?.filter(|l| l.ts == start_ts) {
                Some(mut l) => {
                    if advise_ttl > l.ttl {
                        l.ttl = advise_ttl;
                        b.put_lock(&primary, &l);
                    }
                    Ok(l.ttl)
                }
                None => Err(one(ke::txn_not_found(start_ts, &primary))),
            }
        })
        .await
    }

    /// Takes pessimistic locks; returns (values, not_founds) as asked.
    ///
    /// A key locked by another transaction makes the request wait (up to
    /// `wait_timeout` ms; 0 = the store's default, negative = not at all)
    /// for that lock's release, then try again: a holder that committed
    /// past `for_update_ts` turns into WriteConflict, one that rolled back
    /// lets the lock through. A wait that would close a cycle of waiting
    /// transactions fails with Deadlock; one that times out returns the
    /// KeyIsLocked error for the client to resolve.
    pub async fn pessimistic_lock(
        &self,
        req: &kvrpcpb::PessimisticLockRequest,
    ) -> TxnResult<(Vec<Vec<u8>>, Vec<bool>)> {
        let ctx = req.context.clone().unwrap_or_default();
        let keys: Vec<Vec<u8>> = req.mutations.iter().map(|m| m.key.clone()).collect();
        let wait = match req.wait_timeout {
            t if t < 0 => Duration::ZERO,
            0 => self.wait_for_lock_timeout,
            t => Duration::from_millis(t as u64),
        };
        let deadline = Instant::now() + wait;
        loop {
            let may_wait = Instant::now() < deadline;
            match self
                .write(&ctx, &keys, |reader, b| {
                    self.lock_keys(reader, b, req, &keys, may_wait)
                })
                .await?
            {
                LockOutcome::Locked(values, not_founds) => return Ok((values, not_founds)),
                LockOutcome::Wait(waiting) => {
                    waiting.until(deadline).await;
                }
            }
        }
    }

    /// One attempt of [`TxnStorage::pessimistic_lock`], under the latches.
    fn lock_keys(
        &self,
        reader: &MvccReader<'_>,
        b: &mut Batch,
        req: &kvrpcpb::PessimisticLockRequest,
        keys: &[Vec<u8>],
        may_wait: bool,
    ) -> TxnResult<LockOutcome> {
        let (start_ts, for_update_ts) = (req.start_version, req.for_update_ts);
        let want_values = req.return_values || req.check_existence;
        let mut errors = vec![];
        let (mut values, mut not_founds) = (vec![], vec![]);
        for key in keys {
            match reader.load_lock(key)? {
                Some(l) if l.ts != start_ts => {
                    if may_wait && errors.is_empty() {
                        // Nothing is written while the request waits.
                        *b = Batch::default();
                        return match self.waits.wait_for(start_ts, key, l.ts) {
                            Ok(waiting) => Ok(LockOutcome::Wait(waiting)),
                            Err(d) => Err(one(ke::deadlock(l.ts, key, d.key_hash, d.wait_chain))),
                        };
                    }
                    errors.push(ke::locked(l.info(key)));
                    continue;
                }
                Some(mut l) => {
                    if l.lock_type == LockType::Pessimistic && l.for_update_ts < for_update_ts {
                        l.for_update_ts = for_update_ts;
                        b.put_lock(key, &l);
                    }
                }
                None => {
                    if let Some((c, w)) = reader.seek_write(key, u64::MAX)? {
                        if c > for_update_ts {
                            return Err(one(ke::write_conflict(
                                start_ts,
                                w.start_ts,
                                c,
                                key,
                                &req.primary_lock,
                                Reason::PessimisticRetry,
                            )));
                        }
                    }
                    if let Some((_, w)) = reader.txn_record(key, start_ts)? {
                        if w.write_type == WriteType::Rollback {
                            return Err(one(kvrpcpb::KeyError {
                                abort: format!(
                                    "PessimisticLockRolledBack {{ start_ts: {start_ts}, key: {} }}",
                                    crate::raw::hex(key)
                                ),
                                ..Default::default()
                            }));
                        }
                    }
                    let mut l = Lock::new(
                        LockType::Pessimistic,
                        req.primary_lock.clone(),
                        start_ts,
                        req.lock_ttl,
                    );
                    l.for_update_ts = for_update_ts;
                    l.min_commit_ts = req.min_commit_ts;
                    b.put_lock(key, &l);
                }
            }
            if want_values {
                let v = reader.get(key, u64::MAX)?;
                not_founds.push(v.is_none());
                values.push(if req.return_values {
                    v.unwrap_or_default()
                } else {
                    vec![]
                });
            }
        }
        if !errors.is_empty() {
            return Err(TxnError::Key(errors));
        }
        Ok(LockOutcome::Locked(values, not_founds))
    }

    pub async fn pessimistic_rollback(
        &self,
        ctx: &kvrpcpb::Context,
        keys: &[Vec<u8>],
        start_ts: u64,
        for_update_ts: u64,
    ) -> TxnResult<()> {
        self.write(ctx, keys, |reader, b| {
            for key in keys {
                if let Some(l) = reader.load_lock(key)? {
                    if l.ts == start_ts
                        && l.lock_type == LockType::Pessimistic
                        && l.for_update_ts <= for_update_ts
                    {
                        b.delete_lock(key);
                    }
                }
            }
            Ok(())
        })
        .await
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

    /// Removes every version, lock and value of keys in `[start, end)`
    /// within the region, through Raft.
    pub async fn delete_range(
        &self,
        ctx: &kvrpcpb::Context,
        start: &[u8],
        end: &[u8],
    ) -> TxnResult<()> {
        let view = self.raw.check_region(ctx, std::iter::empty::<&[u8]>())?;
        let bounds = crate::raw::scan_bounds(&view, start, end, false, false)?;
        let (lower, upper) = Self::encoded_range(&bounds.lower, &bounds.upper);
        let mut b = Batch::default();
        for cf in [Cf::Default, Cf::Lock, Cf::Write] {
            b.delete_range(cf, lower.clone(), upper.clone());
        }
        self.apply(ctx, b).await
    }

    /// TiKV's UnsafeDestroyRange: a store-wide request (no region) that
    /// deletes the range straight from the engine, bypassing Raft — for
    /// data already unreachable (dropped tables below the GC safe point).
    pub fn unsafe_destroy_range(&self, start: &[u8], end: &[u8]) -> TxnResult<()> {
        if !end.is_empty() && start > end {
            return Err(crate::StorageError::invalid("start_key is after end_key").into());
        }
        let (lower, upper) = Self::encoded_range(start, end);
        let engine = self.raw.engine();
        let mut wb = engine.write_batch();
        for cf in [Cf::Default, Cf::Lock, Cf::Write] {
            wb.delete_range(cf, &lower, &upper);
        }
        engine.write(wb, true)?;
        Ok(())
    }

    /// Garbage-collects the region's versions below `safe_point`: for each
    /// key, the newest version at or below it stays if it is a Put; every
    /// older version, rollback and lock record below it goes, with their
    /// values. Works in batches of [`GC_BATCH_KEYS`] keys, one Raft command
    /// each, yielding between them so foreground commands interleave.
    pub async fn gc(&self, ctx: &kvrpcpb::Context, safe_point: u64) -> TxnResult<usize> {
        let mut removed = 0;
        let mut from: Option<Vec<u8>> = None;
        loop {
            let view = self.raw.check_region(ctx, std::iter::empty::<&[u8]>())?;
            let start = from.take().unwrap_or(view.region.start_key);
            let (batch, n, next) = self.gc_batch(&start, &view.region.end_key, safe_point)?;
            removed += n;
            self.apply(ctx, batch).await?;
            match next {
                Some(key) => from = Some(key),
                None => return Ok(removed),
            }
            tokio::task::yield_now().await;
        }
    }

    /// One GC batch from `start`: the deletions, how many versions they
    /// remove, and the key the next batch starts at.
    fn gc_batch(
        &self,
        start: &[u8],
        end: &[u8],
        safe_point: u64,
    ) -> TxnResult<(Batch, usize, Option<Vec<u8>>)> {
        let reader = MvccReader::new(self.raw.engine());
        let mut b = Batch::default();
        let mut removed = 0usize;
        let mut keys = 0usize;
        let mut next = None;
        let mut current: Option<Vec<u8>> = None;
        let mut kept = false;
        reader.scan_writes(start, end, false, |key, c, w| {
            if current.as_deref() != Some(key) {
                if keys == GC_BATCH_KEYS {
                    next = Some(key.to_vec());
                    return false;
                }
                keys += 1;
                current = Some(key.to_vec());
                kept = false;
            }
            if c > safe_point {
                return true;
            }
            let keep = !kept && w.write_type == WriteType::Put;
            if matches!(w.write_type, WriteType::Put | WriteType::Delete) {
                kept = true;
            }
            if !keep {
                b.delete_write(key, c);
                if w.write_type == WriteType::Put && w.short_value.is_none() {
                    b.delete_value(key, w.start_ts);
                }
                removed += 1;
            }
            true
        })?;
        Ok((b, removed, next))
    }

    /// Resolves the region's locks below `safe_point` whose TTL has passed
    /// at `current_ts`, as a client meeting them would: the primary's
    /// status decides between commit and rollback. Locks whose primary is
    /// in no region this store serves (`primary_ctx` gives None),
    /// async-commit locks, and locks of live transactions are left to
    /// clients. At most [`GC_BATCH_KEYS`] locks per call.
    pub async fn resolve_expired_locks(
        &self,
        ctx: &kvrpcpb::Context,
        safe_point: u64,
        current_ts: u64,
        primary_ctx: impl Fn(&[u8]) -> Option<kvrpcpb::Context>,
    ) -> TxnResult<usize> {
        let view = self.raw.check_region(ctx, std::iter::empty::<&[u8]>())?;
        let mut expired = vec![];
        MvccReader::new(self.raw.engine()).scan_locks(
            &view.region.start_key,
            &view.region.end_key,
            |key, l| {
                if l.ts < safe_point && !l.use_async_commit && lock_expired(&l, current_ts) {
                    expired.push((key, l));
                }
                expired.len() < GC_BATCH_KEYS
            },
        )?;
        let mut resolved = 0;
        for (key, lock) in expired {
            let Some(pctx) = primary_ctx(&lock.primary) else {
                continue;
            };
            let status = self
                .check_txn_status(&kvrpcpb::CheckTxnStatusRequest {
                    context: Some(pctx),
                    primary_key: lock.primary.clone(),
                    lock_ts: lock.ts,
                    current_ts,
                    rollback_if_not_exist: true,
                    ..Default::default()
                })
                .await;
            // A live primary (ttl > 0) or an unreachable one: not ours to end.
            let Ok(TxnStatus {
                lock_ttl: 0,
                commit_version,
                ..
            }) = status
            else {
                continue;
            };
            self.resolve_lock(ctx, &[(lock.ts, commit_version)], &[key])
                .await?;
            resolved += 1;
        }
        Ok(resolved)
    }
}
