//! Finding out what became of a transaction, from its primary
//! (CheckTxnStatus) or, for async commit, from its secondaries
//! (CheckSecondaryLocks); and keeping a live one alive (TxnHeartBeat).

use tikal_proto::kvrpcpb;

use super::{ProcessContext, WriteCommand};
use crate::mvcc::record::LockType;
use crate::txn::actions::{finished, lock_expired, one, rollback_key, Finished};
use crate::txn::{key_error as ke, TxnResult};

/// Checks the primary lock of `lock_ts`: rolls it back if expired at
/// `current_ts`, pushes its min_commit_ts above `caller_start_ts` so the
/// caller may read past it, or reports the transaction's commit.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CheckTxnStatus {
    pub primary: Vec<u8>,
    pub lock_ts: u64,
    pub caller_start_ts: u64,
    pub current_ts: u64,
    pub rollback_if_not_exist: bool,
    pub force_sync_commit: bool,
    pub resolving_pessimistic_lock: bool,
    /// The lock found must name `primary` as its primary.
    pub verify_is_primary: bool,
}

impl From<&kvrpcpb::CheckTxnStatusRequest> for CheckTxnStatus {
    fn from(req: &kvrpcpb::CheckTxnStatusRequest) -> Self {
        CheckTxnStatus {
            primary: req.primary_key.clone(),
            lock_ts: req.lock_ts,
            caller_start_ts: req.caller_start_ts,
            current_ts: req.current_ts,
            rollback_if_not_exist: req.rollback_if_not_exist,
            force_sync_commit: req.force_sync_commit,
            resolving_pessimistic_lock: req.resolving_pessimistic_lock,
            verify_is_primary: req.verify_is_primary,
        }
    }
}

/// What CheckTxnStatus found or did.
#[derive(Debug, Default, PartialEq)]
pub struct TxnStatus {
    pub lock_ttl: u64,
    pub commit_version: u64,
    pub action: kvrpcpb::Action,
    pub lock_info: Option<kvrpcpb::LockInfo>,
}

impl WriteCommand for CheckTxnStatus {
    type Output = TxnStatus;

    fn allowed_on_almost_full(&self) -> bool {
        true
    }

    fn keys(&self) -> Vec<Vec<u8>> {
        vec![self.primary.clone()]
    }

    fn process(&self, ctx: &mut ProcessContext<'_>) -> TxnResult<TxnStatus> {
        let (key, lock_ts, caller) = (&self.primary, self.lock_ts, self.caller_start_ts);
        if let Some(mut l) = ctx.reader.load_lock(key)?.filter(|l| l.ts == lock_ts) {
            if self.verify_is_primary && l.primary != *key {
                if l.lock_type == LockType::Pessimistic && !self.resolving_pessimistic_lock {
                    // The caller resolves a prewritten lock naming this
                    // key as primary, so this pessimistic lock is a stale
                    // one of the transaction: it goes, and the status is
                    // the records' (as TiKV).
                    ctx.batch.delete_lock(key);
                    return self.without_lock(ctx);
                }
                // Not the transaction's primary: checking it as one could
                // roll back a transaction whose primary still commits.
                return Err(one(ke::primary_mismatch(l.info(key))));
            }
            if l.use_async_commit && !self.force_sync_commit {
                return Ok(TxnStatus {
                    lock_ttl: l.ttl,
                    lock_info: Some(l.info(key)),
                    ..Default::default()
                });
            }
            if lock_expired(&l, self.current_ts) {
                let action =
                    if l.lock_type == LockType::Pessimistic && self.resolving_pessimistic_lock {
                        // Only the lock goes, as a PessimisticRollback would
                        // (TiKV): the transaction may still lock it again.
                        ctx.batch.delete_lock(key);
                        kvrpcpb::Action::TtlExpirePessimisticRollback
                    } else {
                        rollback_key(&ctx.reader, &mut ctx.batch, key, lock_ts, Some(&l))?;
                        kvrpcpb::Action::TtlExpireRollback
                    };
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
                l.min_commit_ts = caller.saturating_add(1);
                ctx.batch.put_lock(key, &l);
                action = kvrpcpb::Action::MinCommitTsPushed;
            } else if (caller != 0 && l.min_commit_ts > caller) || caller == u64::MAX {
                // Already above the caller's ts (an earlier push): the
                // transaction commits after it, so its read may pass the
                // lock. A caller at u64::MAX (an auto-commit point get) may
                // pass it too: the transaction has not committed yet. As
                // TiKV answers both.
                action = kvrpcpb::Action::MinCommitTsPushed;
            }
            return Ok(TxnStatus {
                lock_ttl: l.ttl,
                action,
                lock_info: Some(l.info(key)),
                ..Default::default()
            });
        }
        self.without_lock(ctx)
    }
}

impl CheckTxnStatus {
    /// The status when the primary holds no lock of the transaction: its
    /// commit or rollback record, or (as asked) a rollback written now.
    fn without_lock(&self, ctx: &mut ProcessContext<'_>) -> TxnResult<TxnStatus> {
        let (key, lock_ts) = (&self.primary, self.lock_ts);
        match finished(&ctx.reader, key, lock_ts)? {
            Some(Finished::Committed(c)) => Ok(TxnStatus {
                commit_version: c,
                ..Default::default()
            }),
            Some(Finished::RolledBack) => Ok(TxnStatus::default()),
            // Not found first, as TiKV: a client resolving a pessimistic
            // lock asks without rollback_if_not_exist and waits on
            // TxnNotFound while the lock lives; "do nothing" would read to
            // it as rolled back, and it would resolve a live lock away.
            None if !self.rollback_if_not_exist => Err(one(ke::txn_not_found(lock_ts, key))),
            None if self.resolving_pessimistic_lock => Ok(TxnStatus {
                action: kvrpcpb::Action::LockNotExistDoNothing,
                ..Default::default()
            }),
            None => {
                rollback_key(&ctx.reader, &mut ctx.batch, key, lock_ts, None)?;
                Ok(TxnStatus {
                    action: kvrpcpb::Action::LockNotExistRollback,
                    ..Default::default()
                })
            }
        }
    }
}

/// Async-commit recovery: the secondaries' locks, or the commit ts (0 with
/// no locks = rolled back). A secondary found neither locked nor finished
/// is rolled back, so the transaction can no longer commit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckSecondaryLocks {
    pub keys: Vec<Vec<u8>>,
    pub start_ts: u64,
}

impl WriteCommand for CheckSecondaryLocks {
    type Output = (Vec<kvrpcpb::LockInfo>, u64);

    fn allowed_on_almost_full(&self) -> bool {
        true
    }

    fn keys(&self) -> Vec<Vec<u8>> {
        self.keys.clone()
    }

    fn process(&self, ctx: &mut ProcessContext<'_>) -> TxnResult<Self::Output> {
        let start_ts = self.start_ts;
        let mut locks = vec![];
        for key in &self.keys {
            match ctx.reader.load_lock(key)?.filter(|l| l.ts == start_ts) {
                Some(l) if l.lock_type == LockType::Pessimistic => {
                    rollback_key(&ctx.reader, &mut ctx.batch, key, start_ts, Some(&l))?;
                    return Ok((vec![], 0));
                }
                Some(l) => locks.push(l.info(key)),
                None => match finished(&ctx.reader, key, start_ts)? {
                    // Decided: no later key may roll it back (TiKV stops
                    // here too).
                    Some(Finished::Committed(c)) => return Ok((vec![], c)),
                    Some(Finished::RolledBack) => return Ok((vec![], 0)),
                    None => {
                        rollback_key(&ctx.reader, &mut ctx.batch, key, start_ts, None)?;
                        return Ok((vec![], 0));
                    }
                },
            }
        }
        Ok((locks, 0))
    }
}

/// Extends the primary lock's TTL to `advise_ttl` (never shortens it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TxnHeartBeat {
    pub primary: Vec<u8>,
    pub start_ts: u64,
    pub advise_ttl: u64,
}

impl WriteCommand for TxnHeartBeat {
    type Output = u64;

    fn keys(&self) -> Vec<Vec<u8>> {
        vec![self.primary.clone()]
    }

    fn process(&self, ctx: &mut ProcessContext<'_>) -> TxnResult<u64> {
        let key = &self.primary;
        match ctx.reader.load_lock(key)?.filter(|l| l.ts == self.start_ts) {
            Some(mut l) => {
                if self.advise_ttl > l.ttl {
                    l.ttl = self.advise_ttl;
                    ctx.batch.put_lock(key, &l);
                }
                Ok(l.ttl)
            }
            None => Err(one(ke::txn_not_found(self.start_ts, key))),
        }
    }
}
