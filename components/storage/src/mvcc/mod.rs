//! Percolator MVCC over column families default / lock / write, in TiKV's
//! layout ([`codec`], [`record`]): a transaction's uncommitted intent is a
//! [`record::Lock`] in CF lock; a commit (or rollback) is a
//! [`record::Write`] in CF write at the commit timestamp; values too long
//! to inline live in CF default at the start timestamp.

pub use tikal_codec::mvcc_key as codec;
pub use tikal_codec::mvcc_record as record;

use tikal_engine::{Cf, KvRead};

use self::codec::{append_ts, encode_key, split_ts};
use self::record::{Lock, Write, WriteType};
use crate::{Result, StorageError};

fn corrupt(what: &str) -> StorageError {
    StorageError::Internal(format!("corrupted MVCC {what} record"))
}

/// The smallest encoded key greater than every version of `encoded`.
/// An encoded key never ends in 0xFF (its last marker is at most 0xF7).
fn versions_end(encoded: &[u8]) -> Vec<u8> {
    let mut end = encoded.to_vec();
    if let Some(last) = end.last_mut() {
        *last += 1;
    }
    end
}

/// Encoded bounds of user keys `[start, end)` (`end` empty = no bound).
fn encoded_bounds(start: &[u8], end: &[u8]) -> (Vec<u8>, Vec<u8>) {
    let e = if end.is_empty() {
        vec![]
    } else {
        encode_key(end)
    };
    (encode_key(start), e)
}

/// Reads MVCC state straight from an engine (the latest applied state):
/// RocksDB in a store, the in-memory engine in tests.
pub struct MvccReader<'a> {
    engine: &'a dyn KvRead,
}

impl<'a> MvccReader<'a> {
    pub fn new(engine: &'a dyn KvRead) -> Self {
        MvccReader { engine }
    }

    pub fn load_lock(&self, key: &[u8]) -> Result<Option<Lock>> {
        match self.engine.get(Cf::Lock, &encode_key(key))? {
            Some(b) => Lock::parse(&b).map(Some).ok_or_else(|| corrupt("lock")),
            None => Ok(None),
        }
    }

    /// Versions of `key` with commit_ts <= `ts`, newest first, until `visit`
    /// returns false.
    fn versions(
        &self,
        key: &[u8],
        ts: u64,
        mut visit: impl FnMut(u64, Write) -> bool,
    ) -> Result<()> {
        let enc = encode_key(key);
        let end = versions_end(&enc);
        let start = append_ts(enc, ts);
        self.scan_parsed(
            Cf::Write,
            &start,
            &end,
            "write",
            |k, v| Some((split_ts(k)?.1, Write::parse(v)?)),
            |(commit_ts, w)| visit(commit_ts, w),
        )
    }

    /// Scans encoded keys `[start, end)` of `cf` forward, handing each
    /// entry `parse` understands to `visit` until it returns false; an
    /// entry it does not understand ends the scan as a corrupted `what`.
    fn scan_parsed<T>(
        &self,
        cf: Cf,
        start: &[u8],
        end: &[u8],
        what: &str,
        parse: impl Fn(&[u8], &[u8]) -> Option<T>,
        mut visit: impl FnMut(T) -> bool,
    ) -> Result<()> {
        let mut bad = false;
        self.engine
            .scan(cf, start, end, false, &mut |k, v| match parse(k, v) {
                Some(t) => visit(t),
                None => {
                    bad = true;
                    false
                }
            })?;
        if bad {
            return Err(corrupt(what));
        }
        Ok(())
    }

    /// The newest record with commit_ts <= `ts`, of any type.
    pub fn seek_write(&self, key: &[u8], ts: u64) -> Result<Option<(u64, Write)>> {
        let mut found = None;
        self.versions(key, ts, |c, w| {
            found = Some((c, w));
            false
        })?;
        Ok(found)
    }

    /// The newest Put or Delete with commit_ts <= `ts` (Lock and Rollback
    /// records do not change the value).
    pub fn seek_data_write(&self, key: &[u8], ts: u64) -> Result<Option<(u64, Write)>> {
        let mut found = None;
        self.versions(key, ts, |c, w| match w.write_type {
            WriteType::Put | WriteType::Delete => {
                found = Some((c, w));
                false
            }
            _ => true,
        })?;
        Ok(found)
    }

    /// The value of `key` as of `ts`, ignoring locks.
    pub fn get(&self, key: &[u8], ts: u64) -> Result<Option<Vec<u8>>> {
        match self.seek_data_write(key, ts)? {
            Some((_, w)) if w.write_type == WriteType::Put => self.load_value(key, w).map(Some),
            _ => Ok(None),
        }
    }

    pub fn load_value(&self, key: &[u8], w: Write) -> Result<Vec<u8>> {
        if let Some(v) = w.short_value {
            return Ok(v);
        }
        self.long_value(key, w.start_ts)?
            .ok_or_else(|| corrupt("default (value missing)"))
    }

    /// The value transaction `start_ts` put on `key` in CF default (a value
    /// too long to ride in its lock or record), if there.
    pub fn long_value(&self, key: &[u8], start_ts: u64) -> Result<Option<Vec<u8>>> {
        Ok(self
            .engine
            .get(Cf::Default, &append_ts(encode_key(key), start_ts))?)
    }

    /// What became of transaction `start_ts` on `key`: its commit or
    /// rollback record, if any.
    pub fn txn_record(&self, key: &[u8], start_ts: u64) -> Result<Option<(u64, Write)>> {
        let mut found = None;
        self.versions(key, u64::MAX, |c, w| {
            if c < start_ts {
                return false;
            }
            if w.start_ts == start_ts || (c == start_ts && w.has_overlapped_rollback) {
                found = Some((c, w));
                return false;
            }
            true
        })?;
        Ok(found)
    }

    /// Locks with keys in `[start, end)` (user keys; `end` empty = no bound).
    pub fn scan_locks(
        &self,
        start: &[u8],
        end: &[u8],
        mut visit: impl FnMut(Vec<u8>, Lock) -> bool,
    ) -> Result<()> {
        let (s, e) = encoded_bounds(start, end);
        self.scan_parsed(
            Cf::Lock,
            &s,
            &e,
            "lock",
            |k, v| Some((codec::decode_key(k)?.0, Lock::parse(v)?)),
            |(key, lock)| visit(key, lock),
        )
    }

    /// Every version in CF write for user keys in `[start, end)`, as
    /// (user key, commit_ts, record), in key order (ascending or
    /// descending); versions of one key come newest first either way.
    pub fn scan_writes(
        &self,
        start: &[u8],
        end: &[u8],
        reverse: bool,
        mut visit: impl FnMut(&[u8], u64, Write) -> bool,
    ) -> Result<()> {
        let (s, e) = encoded_bounds(start, end);
        let mut bad = false;
        // Reverse iteration meets a key's versions oldest first; gather one
        // key's versions, then hand them over newest first.
        let mut group: Vec<(u64, Write)> = vec![];
        let mut group_key: Vec<u8> = vec![];
        let mut go_on = true;
        self.engine.scan(Cf::Write, &s, &e, reverse, &mut |k, v| {
            let (Some((enc, ts)), Some(w)) = (split_ts(k), Write::parse(v)) else {
                bad = true;
                return false;
            };
            if !reverse {
                let Some((key, _)) = codec::decode_key(enc) else {
                    bad = true;
                    return false;
                };
                return visit(&key, ts, w);
            }
            if enc != group_key.as_slice() {
                if !group.is_empty() {
                    let Some((key, _)) = codec::decode_key(&group_key) else {
                        bad = true;
                        return false;
                    };
                    for (c, w) in group.drain(..).rev() {
                        if !visit(&key, c, w) {
                            go_on = false;
                            return false;
                        }
                    }
                }
                group_key = enc.to_vec();
            }
            group.push((ts, w));
            true
        })?;
        if bad {
            return Err(corrupt("write"));
        }
        if go_on && !group.is_empty() {
            let (key, _) = codec::decode_key(&group_key).ok_or_else(|| corrupt("write key"))?;
            for (c, w) in group.into_iter().rev() {
                if !visit(&key, c, w) {
                    break;
                }
            }
        }
        Ok(())
    }
}
