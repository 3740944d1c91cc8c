//! Per-key actions of Percolator, shared by the commands: what a lock
//! means for a read, when a lock has expired, what became of a transaction
//! on a key, and how one key is committed or rolled back.
//!
//! Timestamps are TSO values (`physical ms << 18 | logical`), and every one
//! of them may come from a client or from a record a client caused to be
//! written, so sums on them saturate: a lock with ttl `u64::MAX` simply
//! never expires.

use tikal_proto::kvrpcpb;

use super::commands::Batch;
use super::{key_error as ke, TxnError, TxnResult};
use crate::mvcc::record::{Lock, LockType, Write, WriteType};
use crate::mvcc::MvccReader;

/// Milliseconds since the Unix epoch of a TSO timestamp.
pub fn physical(ts: u64) -> u64 {
    ts >> 18
}

/// Whether `lock`'s TTL (ms from its start) has passed at `current_ts`.
pub fn lock_expired(lock: &Lock, current_ts: u64) -> bool {
    physical(current_ts) >= physical(lock.ts).saturating_add(lock.ttl)
}

pub fn one(e: kvrpcpb::KeyError) -> TxnError {
    TxnError::Key(vec![e])
}

/// How a read at `ts` meets a lock (TiKV's snapshot-isolation check).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LockMeets {
    /// It does not concern the read.
    Passes,
    /// It may still commit at or below `ts`: the read stops there.
    Blocks,
    /// The client found its transaction committed at or below `ts`
    /// (`committed_locks`): the read takes the lock's own value, which the
    /// records do not show yet, as TiKV reads through such a lock.
    Committed,
}

/// How a read at `ts` meets `lock`: only a Put or Delete lock started at
/// or before `ts` concerns it. The client may know its transaction
/// committed; otherwise it blocks unless it can only commit above `ts`
/// or the client resolved it (`resolved_locks`). A read-committed read
/// (`isolation_level` RC) is never blocked, as TiKV checks no lock for it,
/// nor is a read of the latest version (`ts` = `u64::MAX`, an auto-commit
/// point get) of a transaction's own primary key, unless that transaction
/// commits asynchronously (its commit ts may lie anywhere).
pub fn lock_meets(key: &[u8], lock: &Lock, ts: u64, ctx: &kvrpcpb::Context) -> LockMeets {
    if lock.ts > ts || matches!(lock.lock_type, LockType::Lock | LockType::Pessimistic) {
        return LockMeets::Passes;
    }
    if ctx.committed_locks.contains(&lock.ts) {
        return LockMeets::Committed;
    }
    if lock.min_commit_ts > ts
        || ctx.resolved_locks.contains(&lock.ts)
        || ctx.isolation_level == kvrpcpb::IsolationLevel::Rc as i32
        || (ts == u64::MAX && key == lock.primary.as_slice() && !lock.use_async_commit)
    {
        return LockMeets::Passes;
    }
    LockMeets::Blocks
}

/// Whether a read at `ts` must stop at `lock` ([`lock_meets`]).
pub fn blocks_read(key: &[u8], lock: &Lock, ts: u64, ctx: &kvrpcpb::Context) -> bool {
    lock_meets(key, lock, ts, ctx) == LockMeets::Blocks
}

/// What became of transaction `start_ts` on a key, by its records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Finished {
    Committed(u64),
    RolledBack,
}

/// The commit or rollback record of `start_ts` on `key`, if any.
pub fn finished(reader: &MvccReader<'_>, key: &[u8], start_ts: u64) -> TxnResult<Option<Finished>> {
    Ok(match reader.txn_record(key, start_ts)? {
        Some((c, w)) if w.write_type != WriteType::Rollback && w.start_ts == start_ts => {
            Some(Finished::Committed(c))
        }
        Some(_) => Some(Finished::RolledBack),
        None => None,
    })
}

/// Rolls back transaction `start_ts` on `key` (whose lock, if any, is
/// `lock`): drops the lock and its value, and leaves a rollback record so a
/// late prewrite of the same transaction fails, and so does a late
/// pessimistic lock request (a pessimistic lock rolled back without one
/// could be taken again and prewritten, as TiKV's records prevent).
pub fn rollback_key(
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

/// Marks `w`, a commit record about to be written on `key` at
/// `commit_ts`, as overlapping a rollback when the transaction that
/// started at `commit_ts` already left its rollback record there. Only an
/// async-commit or 1PC commit_ts can meet one: the store computes it
/// (above `max_ts`), so it may equal another transaction's start_ts,
/// where PD never issues one timestamp twice. Overwriting the rollback
/// would let that transaction's late prewrite of `key` succeed after it
/// was rolled back (TiKV guards the same case with `max_ts` and a lock's
/// `rollback_ts`; one read here covers every order of the two).
pub fn keep_rollback_at(
    reader: &MvccReader<'_>,
    key: &[u8],
    commit_ts: u64,
    w: &mut Write,
) -> TxnResult<()> {
    if let Some((c, old)) = reader.seek_write(key, commit_ts)? {
        if c == commit_ts && old.write_type == WriteType::Rollback {
            w.has_overlapped_rollback = true;
        }
    }
    Ok(())
}

/// Commits `key`'s lock of `start_ts` at `commit_ts`.
pub fn commit_key(
    reader: &MvccReader<'_>,
    b: &mut Batch,
    key: &[u8],
    start_ts: u64,
    commit_ts: u64,
) -> TxnResult<()> {
    match reader.load_lock(key)? {
        Some(lock) if lock.ts == start_ts => {
            if commit_ts < lock.min_commit_ts {
                return Err(one(ke::commit_ts_expired(
                    start_ts,
                    commit_ts,
                    key,
                    lock.min_commit_ts,
                )));
            }
            // A pessimistic lock the committed transaction took but never
            // wrote (its pessimistic rollback lost) commits as a Lock
            // record, as TiKV commits it, so writers that started before
            // the commit still conflict with it.
            let mut w = Write::new(
                WriteType::of_lock(lock.lock_type),
                start_ts,
                lock.short_value.clone(),
            );
            if lock.use_async_commit || lock.lock_type == LockType::Pessimistic {
                keep_rollback_at(reader, key, commit_ts, &mut w)?;
            }
            b.put_write(key, commit_ts, &w);
            b.delete_lock(key);
            Ok(())
        }
        _ => match finished(reader, key, start_ts)? {
            Some(Finished::Committed(_)) => Ok(()),
            _ => Err(one(ke::txn_lock_not_found(start_ts, commit_ts, key))),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lock_with_an_endless_ttl_never_expires_and_never_overflows() {
        let ts = |ms: u64| ms << 18;
        let mut lock = Lock::new(LockType::Put, b"k".to_vec(), ts(1_000), u64::MAX);
        assert!(!lock_expired(&lock, u64::MAX));
        lock.ttl = 100;
        assert!(!lock_expired(&lock, ts(1_099)));
        assert!(lock_expired(&lock, ts(1_100)));
        lock.ts = u64::MAX;
        assert!(!lock_expired(&lock, ts(1_100)));
    }
}
