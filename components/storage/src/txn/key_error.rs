//! Key-error constructors, with the fields and messages clients expect.

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

/// A prewrite's assertion about `key` (`Exist` / `NotExist`) is
/// contradicted by the record at `existing_commit_ts` (0: no record).
pub fn assertion_failed(
    start_ts: u64,
    key: &[u8],
    assertion: kvrpcpb::Assertion,
    existing_start_ts: u64,
    existing_commit_ts: u64,
) -> KeyError {
    KeyError {
        assertion_failed: Some(kvrpcpb::AssertionFailed {
            start_ts,
            key: key.to_vec(),
            assertion: assertion as i32,
            existing_start_ts,
            existing_commit_ts,
        }),
        ..Default::default()
    }
}

/// CheckTxnStatus met a lock (`info`) that does not name the key it was
/// sent to as its primary.
pub fn primary_mismatch(info: kvrpcpb::LockInfo) -> KeyError {
    KeyError {
        primary_mismatch: Some(kvrpcpb::PrimaryMismatch {
            lock_info: Some(info),
        }),
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
