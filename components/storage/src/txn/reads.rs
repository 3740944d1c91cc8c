//! Snapshot reads at a timestamp: the newest committed version at or below
//! `ts`, unless a lock that may still commit at or below `ts` is in the
//! way (KeyIsLocked, for the client to resolve). Every read first raises
//! the concurrency manager's `max_ts`, so an async-commit or 1PC
//! transaction never commits below it.
//!
//! These take a reader and the concurrency manager, not a region: the
//! store checks the region first ([`super::TxnStorage`]); the scenario
//! tests read the in-memory engine directly.

use std::collections::BTreeMap;

use tikal_proto::kvrpcpb;

use super::actions::{blocks_read, one};
use super::{key_error as ke, ConcurrencyManager, TxnError, TxnResult};
use crate::mvcc::record::{Lock, Write, WriteType};
use crate::mvcc::MvccReader;

/// The lock on `key` (in memory or applied) if it blocks a read at `ts`.
fn check_lock(
    reader: &MvccReader<'_>,
    cm: &ConcurrencyManager,
    key: &[u8],
    ts: u64,
    ctx: &kvrpcpb::Context,
) -> TxnResult<()> {
    let lock = match cm.memory_lock(key) {
        Some(l) => Some(l),
        None => reader.load_lock(key)?,
    };
    match lock {
        Some(l) if blocks_read(&l, ts, ctx) => Err(one(ke::locked(l.info(key)))),
        _ => Ok(()),
    }
}

pub fn get(
    reader: &MvccReader<'_>,
    cm: &ConcurrencyManager,
    ctx: &kvrpcpb::Context,
    key: &[u8],
    ts: u64,
) -> TxnResult<Option<Vec<u8>>> {
    cm.observe_read(ts);
    check_lock(reader, cm, key, ts, ctx)?;
    Ok(reader.get(key, ts)?)
}

/// Found pairs; a locked key is a pair carrying its error.
pub fn batch_get(
    reader: &MvccReader<'_>,
    cm: &ConcurrencyManager,
    ctx: &kvrpcpb::Context,
    keys: &[Vec<u8>],
    ts: u64,
) -> TxnResult<Vec<kvrpcpb::KvPair>> {
    cm.observe_read(ts);
    let mut pairs = vec![];
    for key in keys {
        match check_lock(reader, cm, key, ts, ctx) {
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

/// What a scan reads: user keys in `[lower, upper)` (`upper` empty = no
/// bound), at most `limit` pairs (0 = no limit), descending if `reverse`.
pub struct ScanRange<'a> {
    pub lower: &'a [u8],
    pub upper: &'a [u8],
    pub limit: u32,
    pub key_only: bool,
    pub reverse: bool,
}

/// Pairs in scan order; a locked key becomes a pair carrying its error.
pub fn scan(
    reader: &MvccReader<'_>,
    cm: &ConcurrencyManager,
    ctx: &kvrpcpb::Context,
    range: &ScanRange<'_>,
    ts: u64,
) -> TxnResult<Vec<kvrpcpb::KvPair>> {
    cm.observe_read(ts);
    let (lower, upper, reverse) = (range.lower, range.upper, range.reverse);
    let limit = match range.limit {
        0 => usize::MAX,
        n => n as usize,
    };
    // Locks first: a locked key in range reports its lock in place.
    let mut locks = BTreeMap::new();
    reader.scan_locks(lower, upper, |k, l| {
        if blocks_read(&l, ts, ctx) {
            locks.insert(k, l);
        }
        true
    })?;
    for (k, l) in cm.memory_locks_in(lower, upper) {
        if blocks_read(&l, ts, ctx) {
            locks.insert(k, l);
        }
    }
    // Values: the visible version of each key.
    let mut values: Vec<(Vec<u8>, Write)> = vec![];
    let mut current: Option<Vec<u8>> = None;
    let mut decided = false;
    reader.scan_writes(lower, upper, reverse, |key, commit_ts, w| {
        if current.as_deref() != Some(key) {
            if values.len() >= limit {
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
                values.push((key.to_vec(), w));
                decided = true;
            }
            WriteType::Delete => decided = true,
            _ => {}
        }
        true
    })?;
    // Merge values and locks in scan order, up to `limit`.
    let mut lock_iter: Box<dyn Iterator<Item = (Vec<u8>, Lock)>> = if reverse {
        Box::new(locks.into_iter().rev())
    } else {
        Box::new(locks.into_iter())
    };
    let mut next_lock = lock_iter.next();
    let before = |a: &[u8], b: &[u8]| if reverse { a > b } else { a < b };
    let mut vals = values.into_iter().peekable();
    let mut out: Vec<kvrpcpb::KvPair> = vec![];
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
            let value = match range.key_only {
                true => vec![],
                false => reader.load_value(&k, w)?,
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

/// Locks with `ts <= max_ts` among keys in `[lower, upper)`, at most
/// `limit` (0 = no limit).
pub fn scan_lock(
    reader: &MvccReader<'_>,
    lower: &[u8],
    upper: &[u8],
    max_ts: u64,
    limit: u32,
) -> TxnResult<Vec<kvrpcpb::LockInfo>> {
    let limit = match limit {
        0 => usize::MAX,
        n => n as usize,
    };
    let mut out = vec![];
    reader.scan_locks(lower, upper, |k, l| {
        if l.ts <= max_ts {
            out.push(l.info(&k));
        }
        out.len() < limit
    })?;
    Ok(out)
}
