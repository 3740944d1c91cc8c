//! Snapshot reads at a timestamp: the newest committed version at or below
//! `ts`, unless a lock that may still commit at or below `ts` is in the
//! way (KeyIsLocked, for the client to resolve). Every read first raises
//! the concurrency manager's `max_ts`, so an async-commit or 1PC
//! transaction never commits below it, and takes the in-memory locks of
//! its ranges ([`MemoryLocks`]), before the reader it reads is made.
//!
//! These take a reader and those locks, not a region: the store checks
//! the region first ([`super::TxnStorage`]); the scenario tests read the
//! in-memory engine directly.

use std::collections::BTreeMap;

use tikal_proto::kvrpcpb;

use super::actions::{blocks_read, lock_meets, one, LockMeets};
use super::{key_error as ke, ConcurrencyManager, TxnError, TxnResult};
use crate::mvcc::record::{Lock, LockType, Write, WriteType};
use crate::mvcc::MvccReader;

/// The in-memory locks (prewrites not yet applied) in a read's ranges,
/// taken once the read has raised `max_ts` and before its engine snapshot
/// (TiKV checks them before its snapshot too). A prewrite that took its
/// memory lock before the raise, and so may commit at or below the read's
/// ts, either still holds it here or released it once its lock was
/// applied, before the snapshot, which then shows the lock. Taken after
/// the snapshot, a lock applied and released in between would be in
/// neither. A prewrite that locks after the raise commits above the ts.
pub struct MemoryLocks(BTreeMap<Vec<u8>, Lock>);

impl MemoryLocks {
    /// Raises `cm`'s max_ts to `ts`, then takes its in-memory locks in
    /// `ranges` (`[start, end)` user keys, empty end = unbounded).
    pub fn take(cm: &ConcurrencyManager, ts: u64, ranges: &[(Vec<u8>, Vec<u8>)]) -> MemoryLocks {
        cm.observe_read(ts);
        Self::without_raise(cm, ranges)
    }

    /// The in-memory locks in `ranges`, leaving `max_ts` alone: for a
    /// stale read, served only at or below a safe ts no commit can land
    /// under (as TiKV, which does not raise `max_ts` for those).
    pub fn without_raise(cm: &ConcurrencyManager, ranges: &[(Vec<u8>, Vec<u8>)]) -> MemoryLocks {
        let mut locks = BTreeMap::new();
        for (start, end) in ranges {
            locks.extend(cm.memory_locks_in(start, end));
        }
        MemoryLocks(locks)
    }

    fn get(&self, key: &[u8]) -> Option<&Lock> {
        self.0.get(key)
    }

    fn range<'a>(
        &'a self,
        lower: &[u8],
        upper: &'a [u8],
    ) -> impl Iterator<Item = (&'a Vec<u8>, &'a Lock)> + 'a {
        self.0
            .range(lower.to_vec()..)
            .take_while(move |(k, _)| upper.is_empty() || k.as_slice() < upper)
    }
}

/// The range `[key, key\0)`: `key` alone.
pub fn point(key: &[u8]) -> (Vec<u8>, Vec<u8>) {
    let mut end = Vec::with_capacity(key.len() + 1);
    end.extend_from_slice(key);
    end.push(0);
    (key.to_vec(), end)
}

/// What a read at `ts` finds on `key` from its lock (in memory or
/// applied): nothing to say (`None`: read the records), or the value of a
/// transaction the client knows committed (`Some`; `Some(None)` for a
/// delete). A lock in the way is an error.
fn check_lock(
    reader: &MvccReader<'_>,
    locks: &MemoryLocks,
    key: &[u8],
    ts: u64,
    ctx: &kvrpcpb::Context,
) -> TxnResult<Option<Option<Vec<u8>>>> {
    let lock = match locks.get(key) {
        Some(l) => Some(l.clone()),
        None => reader.load_lock(key)?,
    };
    let Some(l) = lock else {
        return Ok(None);
    };
    match lock_entry(reader, key, l, ts, ctx)? {
        None => Ok(None),
        Some(LockEntry::Committed(value)) => Ok(Some(value)),
        Some(LockEntry::Blocks(l)) => Err(one(ke::locked(l.info(key)))),
    }
}

/// What a read at `ts` takes from `lock` on `key`: nothing (`None`, the
/// lock passes), the lock in its way, or the value a transaction the
/// client knows committed leaves (`None` for a delete). A committed
/// lock whose value is not here to read (a prewrite not applied yet cannot
/// have committed) is reported as a lock.
fn lock_entry(
    reader: &MvccReader<'_>,
    key: &[u8],
    lock: Lock,
    ts: u64,
    ctx: &kvrpcpb::Context,
) -> TxnResult<Option<LockEntry>> {
    Ok(Some(match lock_meets(key, &lock, ts, ctx) {
        LockMeets::Passes => return Ok(None),
        LockMeets::Blocks => LockEntry::Blocks(lock),
        LockMeets::Committed => match (lock.lock_type, &lock.short_value) {
            (LockType::Put, Some(v)) => LockEntry::Committed(Some(v.clone())),
            (LockType::Put, None) => match reader.long_value(key, lock.ts)? {
                Some(v) => LockEntry::Committed(Some(v)),
                None => LockEntry::Blocks(lock),
            },
            _ => LockEntry::Committed(None),
        },
    }))
}

pub fn get(
    reader: &MvccReader<'_>,
    locks: &MemoryLocks,
    ctx: &kvrpcpb::Context,
    key: &[u8],
    ts: u64,
) -> TxnResult<Option<Vec<u8>>> {
    match check_lock(reader, locks, key, ts, ctx)? {
        Some(committed) => Ok(committed),
        None => Ok(reader.get(key, ts)?),
    }
}

/// Found pairs; a locked key is a pair carrying its error.
pub fn batch_get(
    reader: &MvccReader<'_>,
    locks: &MemoryLocks,
    ctx: &kvrpcpb::Context,
    keys: &[Vec<u8>],
    ts: u64,
) -> TxnResult<Vec<kvrpcpb::KvPair>> {
    let mut pairs = vec![];
    let mut budget = crate::raw::ReplyBudget::default();
    for key in keys {
        match check_lock(reader, locks, key, ts, ctx) {
            Err(TxnError::Key(mut e)) => pairs.push(kvrpcpb::KvPair {
                error: e.pop(),
                key: key.clone(),
                value: vec![],
            }),
            Err(e) => return Err(e),
            Ok(committed) => {
                let value = match committed {
                    Some(value) => value,
                    None => reader.get(key, ts)?,
                };
                if let Some(value) = value {
                    budget.take(key, &value)?;
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

/// What a scan takes from a key's lock.
enum LockEntry {
    /// The lock is in the way: the key's pair carries it.
    Blocks(Lock),
    /// A transaction the client knows committed: its value (or none).
    Committed(Option<Vec<u8>>),
}

/// Pairs in scan order; a locked key becomes a pair carrying its error.
pub fn scan(
    reader: &MvccReader<'_>,
    memory_locks: &MemoryLocks,
    ctx: &kvrpcpb::Context,
    range: &ScanRange<'_>,
    ts: u64,
) -> TxnResult<Vec<kvrpcpb::KvPair>> {
    let (lower, upper, reverse) = (range.lower, range.upper, range.reverse);
    // As TiKV: a limit of 0 asks for nothing (it is not "no limit").
    if range.limit == 0 {
        return Ok(vec![]);
    }
    let limit = range.limit as usize;
    // Locks first: a locked key in range reports its lock in place, and a
    // committed one (`committed_locks`) its value.
    let mut applied = vec![];
    reader.scan_locks(lower, upper, |k, l| {
        applied.push((k, l));
        true
    })?;
    let mut locks = BTreeMap::new();
    let in_memory = memory_locks.range(lower, upper);
    for (k, l) in applied
        .into_iter()
        .chain(in_memory.map(|(k, l)| (k.clone(), l.clone())))
    {
        let Some(entry) = lock_entry(reader, &k, l, ts, ctx)? else {
            continue;
        };
        // An in-memory lock (a prewrite not applied yet) comes last and
        // wins over what the engine shows.
        locks.insert(k, entry);
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
            // A committed lock's value stands for the key's records.
            decided = matches!(locks.get(key), Some(LockEntry::Committed(_)));
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
    let mut lock_iter: Box<dyn Iterator<Item = (Vec<u8>, LockEntry)>> = if reverse {
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
            if let Some((k, entry)) = next_lock.take() {
                if vals.peek().is_some_and(|(vk, _)| *vk == k) {
                    vals.next();
                }
                match entry {
                    LockEntry::Blocks(l) => out.push(kvrpcpb::KvPair {
                        error: Some(ke::locked(l.info(&k))),
                        key: k,
                        value: vec![],
                    }),
                    LockEntry::Committed(Some(value)) => out.push(kvrpcpb::KvPair {
                        error: None,
                        key: k,
                        value: if range.key_only { vec![] } else { value },
                    }),
                    LockEntry::Committed(None) => {}
                }
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
/// `limit` (0 = no limit). An in-memory one among `memory` (a prewrite not
/// yet applied) fails the scan with KeyIsLocked, as TiKV answers: the
/// caller (GC resolving locks below its safe point) must not miss it, and
/// it is not there to return yet.
pub fn scan_lock(
    reader: &MvccReader<'_>,
    memory: &MemoryLocks,
    lower: &[u8],
    upper: &[u8],
    max_ts: u64,
    limit: u32,
) -> TxnResult<Vec<kvrpcpb::LockInfo>> {
    if let Some((key, lock)) = memory.range(lower, upper).find(|(_, l)| l.ts <= max_ts) {
        return Err(one(ke::locked(lock.info(key))));
    }
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

/// The check a replica read at `ts` over `ranges` (`[start, end)`, empty
/// end = unbounded) asks of the region's leader (see
/// [`check_replica_read`]), encoded for the raftstore.
pub fn replica_read_check(ts: u64, ranges: &[(Vec<u8>, Vec<u8>)]) -> Vec<u8> {
    use prost::Message;
    let key_ranges = ranges
        .iter()
        .map(|(start_key, end_key)| kvrpcpb::KeyRange {
            start_key: start_key.clone(),
            end_key: end_key.clone(),
        })
        .collect();
    let req = tikal_proto::raft_cmdpb::ReadIndexRequest {
        start_ts: ts,
        key_ranges,
    };
    req.encode_to_vec()
}

/// On a region's leader, before it gives a replica the read index for a
/// transactional read (TiKV's replica read): raises `max_ts` to the
/// read's ts, as a read here would, so no async-commit or 1PC transaction
/// commits at or below it later, and returns the encoded `LockInfo` of an
/// in-memory lock in the read's ranges that blocks it. Such a lock belongs
/// to a prewrite not yet applied, which the replica cannot see. An
/// undecodable check, or one above this store's `max_ts` ceiling (the
/// replica checked the read against its own first), is refused with an
/// empty answer: the reader reports an error.
pub fn check_replica_read(cm: &ConcurrencyManager, check: &[u8]) -> Option<Vec<u8>> {
    use prost::Message;
    let Ok(req) = tikal_proto::raft_cmdpb::ReadIndexRequest::decode(check) else {
        return Some(vec![]);
    };
    if cm.exceeds_limit(req.start_ts).is_some() {
        return Some(vec![]);
    }
    cm.observe_read(req.start_ts);
    let no_bypass = kvrpcpb::Context::default();
    for range in &req.key_ranges {
        for (key, lock) in cm.memory_locks_in(&range.start_key, &range.end_key) {
            if blocks_read(&key, &lock, req.start_ts, &no_bypass) {
                return Some(lock.info(&key).encode_to_vec());
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use prost::Message;

    use super::*;
    use crate::mvcc::record::LockType;

    #[test]
    fn a_leader_refuses_a_replica_read_an_in_memory_lock_blocks_and_raises_max_ts() {
        let cm = ConcurrencyManager::default();
        let mut lock = Lock::new(LockType::Put, b"k2".to_vec(), 10, 3_000);
        lock.use_async_commit = true;
        lock.min_commit_ts = 11;
        cm.lock_in_memory(b"k2", lock);
        let range = |a: &[u8], b: &[u8]| (a.to_vec(), b.to_vec());

        // Other keys, and an older snapshot, pass; max_ts follows the reads.
        let check = replica_read_check(20, &[range(b"k1", b"k2"), range(b"k3", b"")]);
        assert_eq!(check_replica_read(&cm, &check), None);
        assert_eq!(cm.max_ts(), 20);
        assert_eq!(
            check_replica_read(&cm, &replica_read_check(9, &[range(b"", b"")])),
            None
        );

        // A read at or above its min commit ts over its key is refused
        // with the lock.
        let refusal = check_replica_read(&cm, &replica_read_check(30, &[range(b"k", b"l")]));
        let info = kvrpcpb::LockInfo::decode(refusal.expect("refused").as_slice()).unwrap();
        assert_eq!((info.key.as_slice(), info.lock_version), (&b"k2"[..], 10));
        assert_eq!(cm.max_ts(), 30);

        // Bytes that are no check are refused, with nothing to decode.
        assert_eq!(check_replica_read(&cm, b"\xff\xff"), Some(vec![]));

        // So is a read far above PD's time, which leaves max_ts alone.
        cm.refresh_max_ts_limit(40);
        let far = replica_read_check(u64::MAX - 1, &[range(b"", b"")]);
        assert_eq!(check_replica_read(&cm, &far), Some(vec![]));
        assert_eq!(cm.max_ts(), 30);
    }
}
