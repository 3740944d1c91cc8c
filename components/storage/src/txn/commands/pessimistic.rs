//! Pessimistic transactions lock keys as they read them (PessimisticLock),
//! before any prewrite; PessimisticRollback drops such locks again.

use tikal_proto::kvrpcpb::{self, write_conflict::Reason};

use super::{ProcessContext, WriteCommand};
use crate::mvcc::record::{Lock, LockType};
use crate::txn::actions::{finished, one, Finished};
use crate::txn::lock_wait::Waiting;
use crate::txn::{key_error as ke, TxnError, TxnResult};

/// Takes pessimistic locks on `keys` for `start_ts` at `for_update_ts`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PessimisticLock {
    pub keys: Vec<Vec<u8>>,
    pub primary: Vec<u8>,
    pub start_ts: u64,
    pub for_update_ts: u64,
    pub lock_ttl: u64,
    pub min_commit_ts: u64,
    pub return_values: bool,
    pub check_existence: bool,
    /// Per key: its mutation asserts `NotExist` (a pessimistic insert), so
    /// a key with a value fails with AlreadyExist instead of being locked.
    pub should_not_exist: Vec<bool>,
    /// Lock only the keys that have a value (with `return_values`).
    pub lock_only_if_exists: bool,
    /// Whether meeting another transaction's lock registers a wait (and
    /// writes nothing) rather than failing with KeyIsLocked.
    pub may_wait: bool,
}

impl PessimisticLock {
    /// Whether the request reads its keys at `for_update_ts` (values,
    /// existence, or an insert's check), which raises `max_ts` there, as
    /// TiKV: no async-commit or 1PC write may then commit below the read.
    pub fn reads(&self) -> bool {
        self.return_values || self.check_existence || self.should_not_exist.contains(&true)
    }
}

impl From<&kvrpcpb::PessimisticLockRequest> for PessimisticLock {
    fn from(req: &kvrpcpb::PessimisticLockRequest) -> Self {
        PessimisticLock {
            keys: req.mutations.iter().map(|m| m.key.clone()).collect(),
            primary: req.primary_lock.clone(),
            start_ts: req.start_version,
            for_update_ts: req.for_update_ts,
            lock_ttl: req.lock_ttl,
            min_commit_ts: req.min_commit_ts,
            return_values: req.return_values,
            check_existence: req.check_existence,
            should_not_exist: (req.mutations.iter())
                .map(|m| m.assertion == kvrpcpb::Assertion::NotExist as i32)
                .collect(),
            lock_only_if_exists: req.lock_only_if_exists,
            may_wait: false,
        }
    }
}

/// One attempt at pessimistic locks: taken (values and not-founds, as
/// asked), or a wait registered on the first key another transaction holds.
pub enum LockOutcome {
    Locked {
        values: Vec<Vec<u8>>,
        not_founds: Vec<bool>,
    },
    Wait(Waiting),
}

impl WriteCommand for PessimisticLock {
    type Output = LockOutcome;

    fn keys(&self) -> Vec<Vec<u8>> {
        self.keys.clone()
    }

    fn process(&self, ctx: &mut ProcessContext<'_>) -> TxnResult<LockOutcome> {
        let (start_ts, for_update_ts) = (self.start_ts, self.for_update_ts);
        let want_values = self.return_values || self.check_existence;
        if self.lock_only_if_exists && !self.return_values {
            // TiKV's LockIfExistsFailed: the client could not tell which
            // keys were locked.
            return Err(one(kvrpcpb::KeyError {
                abort: format!(
                    "LockIfExistsFailed {{ start_ts: {start_ts} }}: lock_only_if_exists \
                     needs return_values"
                ),
                ..Default::default()
            }));
        }
        if self.reads() {
            // `TxnStorage::pessimistic_lock` checked it against the ceiling.
            ctx.cm.observe_read(for_update_ts);
        }
        let mut errors = vec![];
        let (mut values, mut not_founds) = (vec![], vec![]);
        for (i, key) in self.keys.iter().enumerate() {
            let lock = match ctx.reader.load_lock(key)? {
                Some(l) if l.ts != start_ts => {
                    if self.may_wait && errors.is_empty() {
                        // Nothing is written while the request waits.
                        ctx.batch.clear();
                        return match ctx.waits.wait_for(start_ts, key, l.ts) {
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
                        ctx.batch.put_lock(key, &l);
                    }
                    None
                }
                None => {
                    if let Some((c, w)) = ctx.reader.seek_write(key, u64::MAX)? {
                        if c > for_update_ts {
                            return Err(one(ke::write_conflict(
                                start_ts,
                                w.start_ts,
                                c,
                                key,
                                &self.primary,
                                Reason::PessimisticRetry,
                            )));
                        }
                    }
                    // Rolled back here (a rollback record, or one a commit
                    // at our start_ts overlapped): a late request.
                    if finished(&ctx.reader, key, start_ts)? == Some(Finished::RolledBack) {
                        return Err(one(kvrpcpb::KeyError {
                            abort: format!(
                                "PessimisticLockRolledBack {{ start_ts: {start_ts}, key: {} }}",
                                crate::raw::hex(key)
                            ),
                            ..Default::default()
                        }));
                    }
                    if self.should_not_exist.get(i).copied().unwrap_or(false)
                        && ctx.reader.get(key, u64::MAX)?.is_some()
                    {
                        return Err(one(ke::already_exist(key)));
                    }
                    let mut l = Lock::new(
                        LockType::Pessimistic,
                        self.primary.clone(),
                        start_ts,
                        self.lock_ttl,
                    );
                    l.for_update_ts = for_update_ts;
                    l.min_commit_ts = self.min_commit_ts;
                    Some(l)
                }
            };
            let value = match want_values {
                true => ctx.reader.get(key, u64::MAX)?,
                false => None,
            };
            if let Some(l) = lock {
                if !self.lock_only_if_exists || value.is_some() {
                    ctx.batch.put_lock(key, &l);
                }
            }
            if want_values {
                not_founds.push(value.is_none());
                values.push(match self.return_values {
                    true => value.unwrap_or_default(),
                    false => vec![],
                });
            }
        }
        if !errors.is_empty() {
            return Err(TxnError::Key(errors));
        }
        Ok(LockOutcome::Locked { values, not_founds })
    }
}

/// Drops `start_ts`'s pessimistic locks on `keys` taken at or below
/// `for_update_ts`; prewritten locks stay.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PessimisticRollback {
    pub keys: Vec<Vec<u8>>,
    pub start_ts: u64,
    pub for_update_ts: u64,
}

impl WriteCommand for PessimisticRollback {
    type Output = ();

    fn allowed_on_almost_full(&self) -> bool {
        true
    }

    fn keys(&self) -> Vec<Vec<u8>> {
        self.keys.clone()
    }

    fn process(&self, ctx: &mut ProcessContext<'_>) -> TxnResult<()> {
        for key in &self.keys {
            if let Some(l) = ctx.reader.load_lock(key)? {
                if l.ts == self.start_ts
                    && l.lock_type == LockType::Pessimistic
                    && l.for_update_ts <= self.for_update_ts
                {
                    ctx.batch.delete_lock(key);
                }
            }
        }
        Ok(())
    }
}
