//! Lock and write records, in TiKV's byte layout.
//!
//! Lock (CF lock, key = encoded user key):
//! `type | primary (compact bytes) | start_ts (varint) | ttl (varint)`, then
//! optional tagged fields: `v` short value (u8 length + bytes), `f`
//! for_update_ts, `t` txn_size, `c` min_commit_ts (u64 BE each), `a` async
//! commit secondaries (varint count + compact bytes each).
//!
//! Write (CF write, key = encoded user key | !commit_ts):
//! `type | start_ts (varint)`, then `v` short value, `R` overlapped rollback.
//! A value longer than [`SHORT_VALUE_MAX_LEN`] lives in CF default at
//! `encoded user key | !start_ts`.

use tikal_proto::kvrpcpb;

use crate::mvcc_key::{put_compact_bytes, put_var_u64, Reader};

pub const SHORT_VALUE_MAX_LEN: usize = 255;

const SHORT_VALUE: u8 = b'v';
const FOR_UPDATE_TS: u8 = b'f';
const TXN_SIZE: u8 = b't';
const MIN_COMMIT_TS: u8 = b'c';
const ASYNC_COMMIT: u8 = b'a';
const ROLLBACK_TS: u8 = b'r';
const LAST_CHANGE: u8 = b'l';
const TXN_SOURCE: u8 = b's';
const OVERLAPPED_ROLLBACK: u8 = b'R';
const GC_FENCE: u8 = b'F';

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LockType {
    Put,
    Delete,
    Lock,
    Pessimistic,
}

impl LockType {
    fn byte(self) -> u8 {
        match self {
            LockType::Put => b'P',
            LockType::Delete => b'D',
            LockType::Lock => b'L',
            LockType::Pessimistic => b'S',
        }
    }

    fn from_byte(b: u8) -> Option<LockType> {
        Some(match b {
            b'P' => LockType::Put,
            b'D' => LockType::Delete,
            b'L' => LockType::Lock,
            b'S' => LockType::Pessimistic,
            _ => return None,
        })
    }

    pub fn op(self) -> kvrpcpb::Op {
        match self {
            LockType::Put => kvrpcpb::Op::Put,
            LockType::Delete => kvrpcpb::Op::Del,
            LockType::Lock => kvrpcpb::Op::Lock,
            LockType::Pessimistic => kvrpcpb::Op::PessimisticLock,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lock {
    pub lock_type: LockType,
    pub primary: Vec<u8>,
    pub ts: u64,
    pub ttl: u64,
    pub short_value: Option<Vec<u8>>,
    pub for_update_ts: u64,
    pub txn_size: u64,
    pub min_commit_ts: u64,
    pub use_async_commit: bool,
    pub secondaries: Vec<Vec<u8>>,
}

impl Lock {
    pub fn new(lock_type: LockType, primary: Vec<u8>, ts: u64, ttl: u64) -> Lock {
        Lock {
            lock_type,
            primary,
            ts,
            ttl,
            short_value: None,
            for_update_ts: 0,
            txn_size: 0,
            min_commit_ts: 0,
            use_async_commit: false,
            secondaries: vec![],
        }
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        let mut b = Vec::with_capacity(32 + self.primary.len());
        b.push(self.lock_type.byte());
        put_compact_bytes(&mut b, &self.primary);
        put_var_u64(&mut b, self.ts);
        put_var_u64(&mut b, self.ttl);
        if let Some(v) = &self.short_value {
            b.push(SHORT_VALUE);
            b.push(v.len() as u8);
            b.extend_from_slice(v);
        }
        for (tag, v) in [
            (FOR_UPDATE_TS, self.for_update_ts),
            (TXN_SIZE, self.txn_size),
            (MIN_COMMIT_TS, self.min_commit_ts),
        ] {
            if v > 0 {
                b.push(tag);
                b.extend_from_slice(&v.to_be_bytes());
            }
        }
        if self.use_async_commit {
            b.push(ASYNC_COMMIT);
            put_var_u64(&mut b, self.secondaries.len() as u64);
            for s in &self.secondaries {
                put_compact_bytes(&mut b, s);
            }
        }
        b
    }

    pub fn parse(b: &[u8]) -> Option<Lock> {
        let mut r = Reader(b);
        let lock_type = LockType::from_byte(r.u8()?)?;
        let primary = r.compact_bytes()?.to_vec();
        let ts = r.var_u64()?;
        let ttl = if r.is_empty() { 0 } else { r.var_u64()? };
        let mut lock = Lock::new(lock_type, primary, ts, ttl);
        while !r.is_empty() {
            match r.u8()? {
                SHORT_VALUE => {
                    let n = r.u8()? as usize;
                    lock.short_value = Some(r.bytes(n)?.to_vec());
                }
                FOR_UPDATE_TS => lock.for_update_ts = r.u64()?,
                TXN_SIZE => lock.txn_size = r.u64()?,
                MIN_COMMIT_TS => lock.min_commit_ts = r.u64()?,
                ASYNC_COMMIT => {
                    lock.use_async_commit = true;
                    let n = r.var_u64()?;
                    for _ in 0..n {
                        lock.secondaries.push(r.compact_bytes()?.to_vec());
                    }
                }
                ROLLBACK_TS => {
                    let n = r.var_u64()?;
                    for _ in 0..n {
                        r.u64()?;
                    }
                }
                LAST_CHANGE => {
                    r.u64()?;
                    r.var_u64()?;
                }
                TXN_SOURCE => {
                    r.var_u64()?;
                }
                // Fields we never write and do not need: stop reading.
                _ => break,
            }
        }
        Some(lock)
    }

    /// The lock as a client sees it in KeyIsLocked / ScanLock.
    pub fn info(&self, key: &[u8]) -> kvrpcpb::LockInfo {
        kvrpcpb::LockInfo {
            primary_lock: self.primary.clone(),
            lock_version: self.ts,
            key: key.to_vec(),
            lock_ttl: self.ttl,
            txn_size: self.txn_size,
            lock_type: self.lock_type.op() as i32,
            lock_for_update_ts: self.for_update_ts,
            use_async_commit: self.use_async_commit,
            min_commit_ts: self.min_commit_ts,
            secondaries: self.secondaries.clone(),
            duration_to_last_update_ms: 0,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteType {
    Put,
    Delete,
    Lock,
    Rollback,
}

impl WriteType {
    fn byte(self) -> u8 {
        match self {
            WriteType::Put => b'P',
            WriteType::Delete => b'D',
            WriteType::Lock => b'L',
            WriteType::Rollback => b'R',
        }
    }

    fn from_byte(b: u8) -> Option<WriteType> {
        Some(match b {
            b'P' => WriteType::Put,
            b'D' => WriteType::Delete,
            b'L' => WriteType::Lock,
            b'R' => WriteType::Rollback,
            _ => return None,
        })
    }

    /// The committed record a lock of this type becomes.
    pub fn of_lock(t: LockType) -> WriteType {
        match t {
            LockType::Put => WriteType::Put,
            LockType::Delete => WriteType::Delete,
            LockType::Lock | LockType::Pessimistic => WriteType::Lock,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Write {
    pub write_type: WriteType,
    pub start_ts: u64,
    pub short_value: Option<Vec<u8>>,
    pub has_overlapped_rollback: bool,
}

impl Write {
    pub fn new(write_type: WriteType, start_ts: u64, short_value: Option<Vec<u8>>) -> Write {
        Write {
            write_type,
            start_ts,
            short_value,
            has_overlapped_rollback: false,
        }
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        let mut b = Vec::with_capacity(16);
        b.push(self.write_type.byte());
        put_var_u64(&mut b, self.start_ts);
        if let Some(v) = &self.short_value {
            b.push(SHORT_VALUE);
            b.push(v.len() as u8);
            b.extend_from_slice(v);
        }
        if self.has_overlapped_rollback {
            b.push(OVERLAPPED_ROLLBACK);
        }
        b
    }

    pub fn parse(b: &[u8]) -> Option<Write> {
        let mut r = Reader(b);
        let write_type = WriteType::from_byte(r.u8()?)?;
        let start_ts = r.var_u64()?;
        let mut w = Write::new(write_type, start_ts, None);
        while !r.is_empty() {
            match r.u8()? {
                SHORT_VALUE => {
                    let n = r.u8()? as usize;
                    w.short_value = Some(r.bytes(n)?.to_vec());
                }
                OVERLAPPED_ROLLBACK => w.has_overlapped_rollback = true,
                GC_FENCE => {
                    r.u64()?;
                }
                _ => break,
            }
        }
        Some(w)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locks_round_trip_in_tikv_layout() {
        let mut l = Lock::new(LockType::Put, b"pk".to_vec(), 5, 3000);
        l.short_value = Some(b"v".to_vec());
        l.min_commit_ts = 6;
        l.use_async_commit = true;
        l.secondaries = vec![b"s1".to_vec(), b"s2".to_vec()];
        let b = l.to_bytes();
        // type, compact "pk" (zigzag 2 = 4), ts 5, ttl 3000 = [0xb8, 0x17].
        assert_eq!(&b[..8], &[b'P', 4, b'p', b'k', 5, 0xb8, 0x17, b'v']);
        assert_eq!(Lock::parse(&b), Some(l));
        assert_eq!(Lock::parse(b"X"), None);
    }

    #[test]
    fn writes_round_trip_in_tikv_layout() {
        let mut w = Write::new(WriteType::Put, 300, Some(b"abc".to_vec()));
        assert_eq!(
            w.to_bytes(),
            vec![b'P', 0xac, 0x02, b'v', 3, b'a', b'b', b'c']
        );
        w.has_overlapped_rollback = true;
        assert_eq!(Write::parse(&w.to_bytes()), Some(w));
        assert_eq!(Write::parse(b"P"), None);
    }

    #[test]
    fn a_timestamp_beyond_64_bits_makes_a_record_unreadable() {
        let ts = [[0xff; 9].as_slice(), &[0x6e]].concat();
        assert_eq!(Write::parse(&[b"P".as_slice(), &ts].concat()), None);
        assert_eq!(Lock::parse(&[b"P\x02k".as_slice(), &ts].concat()), None);
    }
}
