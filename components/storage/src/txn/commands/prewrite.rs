//! Prewrite: the first phase of Percolator. Each mutation's key gets a lock
//! naming the primary; a Put's value rides in the lock when short, else in
//! CF default at `start_ts`.
//!
//! Three ways to commit follow, chosen by the request:
//!
//! * **2PC** (default): the client later commits the primary, then the
//!   secondaries, at a commit ts it takes from PD.
//! * **Async commit** (`use_async_commit`): the transaction is committed
//!   once every lock is written; the primary lists the secondaries, and
//!   each lock carries a `min_commit_ts` above every read this store has
//!   served (`max_ts`), returned to the client as the commit ts floor.
//! * **1PC** (`try_one_pc`): the locks are committed at once, at that same
//!   `min_commit_ts`, in the same batch.
//!
//! If that `min_commit_ts` is above the client's `max_commit_ts`, async
//! commit or 1PC would commit later than the client allows: the prewrite
//! falls back to 2PC, writing plain locks and answering `min_commit_ts` 0,
//! as TiKV does.

use tikal_proto::kvrpcpb::{self, prewrite_request::PessimisticAction, write_conflict::Reason};

use super::{ProcessContext, WriteCommand};
use crate::mvcc::record::{Lock, LockType, Write, WriteType, SHORT_VALUE_MAX_LEN};
use crate::txn::actions::{finished, keep_rollback_at, one, Finished};
use crate::txn::{key_error as ke, TxnError, TxnResult};
use crate::StorageError;

/// What a prewrite may do to a key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MutationOp {
    Put,
    Delete,
    /// Lock without changing the value (SELECT FOR UPDATE in optimistic
    /// transactions).
    Lock,
    /// Put, if the key has no value.
    Insert,
    /// Write nothing; fail if the key has a value.
    CheckNotExists,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mutation {
    pub op: MutationOp,
    pub key: Vec<u8>,
    pub value: Vec<u8>,
    /// The key must hold this transaction's pessimistic lock.
    pub pessimistic: bool,
    /// What the client asserts of the key's value before this write
    /// (checked under [`Prewrite::assertion_level`]).
    pub assertion: kvrpcpb::Assertion,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Prewrite {
    pub mutations: Vec<Mutation>,
    pub primary: Vec<u8>,
    pub start_ts: u64,
    pub lock_ttl: u64,
    pub for_update_ts: u64,
    pub txn_size: u64,
    pub min_commit_ts: u64,
    /// 0 = no limit.
    pub max_commit_ts: u64,
    pub use_async_commit: bool,
    pub secondaries: Vec<Vec<u8>>,
    pub try_one_pc: bool,
    pub skip_constraint_check: bool,
    /// How hard to check the mutations' assertions: Off, Fast (only where
    /// the conflict check read the key's records anyway) or Strict.
    pub assertion_level: kvrpcpb::AssertionLevel,
}

/// What a prewrite produced.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct PrewriteOutcome {
    /// Async commit: the floor of the commit ts. 0 for 2PC (and fallback).
    pub min_commit_ts: u64,
    /// 1PC: the commit ts. 0 unless committed in this prewrite.
    pub one_pc_commit_ts: u64,
}

impl Prewrite {
    /// The command of a request, rejecting what no prewrite can carry.
    pub fn from_request(req: kvrpcpb::PrewriteRequest) -> Result<Prewrite, StorageError> {
        let n = req.mutations.len();
        // One action per mutation, in order. More are ignored, as TiKV
        // pairs them: the official Rust client splits a prewrite's
        // mutations by region but sends every split all the actions.
        if !req.pessimistic_actions.is_empty() && req.pessimistic_actions.len() < n {
            return Err(StorageError::invalid(format!(
                "pessimistic_actions has {} entries for {n} mutations",
                req.pessimistic_actions.len()
            )));
        }
        let mut mutations = Vec::with_capacity(n);
        for (i, m) in req.mutations.into_iter().enumerate() {
            let op = match kvrpcpb::Op::try_from(m.op) {
                Ok(kvrpcpb::Op::Put) => MutationOp::Put,
                Ok(kvrpcpb::Op::Del) => MutationOp::Delete,
                Ok(kvrpcpb::Op::Lock) => MutationOp::Lock,
                Ok(kvrpcpb::Op::Insert) => MutationOp::Insert,
                Ok(kvrpcpb::Op::CheckNotExists) => MutationOp::CheckNotExists,
                _ => {
                    return Err(StorageError::invalid(format!(
                        "mutation {i} has op {}: a prewrite takes Put, Del, Lock, Insert \
                         or CheckNotExists",
                        m.op
                    )))
                }
            };
            let pessimistic = match req.pessimistic_actions.get(i).copied() {
                None => false,
                Some(a) => match PessimisticAction::try_from(a) {
                    Ok(PessimisticAction::DoPessimisticCheck) => true,
                    Ok(_) => false,
                    Err(_) => {
                        return Err(StorageError::invalid(format!(
                            "mutation {i} has unknown pessimistic action {a}"
                        )))
                    }
                },
            };
            mutations.push(Mutation {
                op,
                key: m.key,
                value: m.value,
                pessimistic,
                assertion: kvrpcpb::Assertion::try_from(m.assertion).unwrap_or_default(),
            });
        }
        Ok(Prewrite {
            mutations,
            primary: req.primary_lock,
            start_ts: req.start_version,
            lock_ttl: req.lock_ttl,
            for_update_ts: req.for_update_ts,
            txn_size: req.txn_size,
            min_commit_ts: req.min_commit_ts,
            max_commit_ts: req.max_commit_ts,
            use_async_commit: req.use_async_commit,
            secondaries: req.secondaries,
            try_one_pc: req.try_one_pc,
            skip_constraint_check: req.skip_constraint_check,
            assertion_level: kvrpcpb::AssertionLevel::try_from(req.assertion_level)
                .unwrap_or_default(),
        })
    }

    /// Whether the key's records are read for a newer commit (and so its
    /// assertion is checked at the Fast level too). A pessimistic
    /// transaction's keys are not: its locks keep them, as TiKV skips the
    /// check for every key of a pessimistic prewrite.
    fn checks_newer_version(&self) -> bool {
        !self.skip_constraint_check && self.for_update_ts == 0
    }

    /// A newer commit of the key than our start: someone wrote it after we
    /// read it.
    fn check_newer_version(&self, ctx: &ProcessContext<'_>, m: &Mutation) -> TxnResult<()> {
        if !self.checks_newer_version() {
            return Ok(());
        }
        match ctx.reader.seek_write(&m.key, u64::MAX)? {
            Some((c, w)) if c > self.start_ts => Err(one(ke::write_conflict(
                self.start_ts,
                w.start_ts,
                c,
                &m.key,
                &self.primary,
                Reason::Optimistic,
            ))),
            _ => Ok(()),
        }
    }

    /// Fails the prewrite if `m`'s assertion about the key's newest value
    /// does not hold (TiKV's AssertionFailed, naming the record that
    /// contradicts it). Fast checks only keys whose records the conflict
    /// check read (`read_records`); Strict reads them for every key.
    fn check_assertion(
        &self,
        ctx: &ProcessContext<'_>,
        m: &Mutation,
        read_records: bool,
    ) -> TxnResult<()> {
        use kvrpcpb::{Assertion, AssertionLevel};
        let checked = match self.assertion_level {
            AssertionLevel::Off => false,
            AssertionLevel::Fast => read_records,
            AssertionLevel::Strict => true,
        };
        if !checked || m.assertion == Assertion::None {
            return Ok(());
        }
        let newest = ctx.reader.seek_data_write(&m.key, u64::MAX)?;
        let exists = matches!(&newest, Some((_, w)) if w.write_type == WriteType::Put);
        let holds = match m.assertion {
            Assertion::Exist => exists,
            Assertion::NotExist => !exists,
            Assertion::None => true,
        };
        if holds {
            return Ok(());
        }
        let (commit_ts, start_ts) = newest.map_or((0, 0), |(c, w)| (c, w.start_ts));
        Err(one(ke::assertion_failed(
            self.start_ts,
            &m.key,
            m.assertion,
            start_ts,
            commit_ts,
        )))
    }

    /// The answer to a retry that finds this transaction committed on a
    /// key at `c` (its 1PC, or a resolver of its async commit), as TiKV
    /// gives it: the commit ts, whatever the keys after it would say (a
    /// key it only checked may have been written since), and nothing
    /// written.
    fn committed_at(&self, ctx: &mut ProcessContext<'_>, c: u64) -> PrewriteOutcome {
        ctx.batch.clear();
        PrewriteOutcome {
            min_commit_ts: if self.use_async_commit { c } else { 0 },
            one_pc_commit_ts: if self.try_one_pc { c } else { 0 },
        }
    }

    /// The lock `m` leaves, or None if it leaves none.
    fn new_lock(&self, ctx: &mut ProcessContext<'_>, m: &Mutation) -> Option<Lock> {
        let lock_type = match m.op {
            MutationOp::Put | MutationOp::Insert => LockType::Put,
            MutationOp::Delete => LockType::Delete,
            MutationOp::Lock => LockType::Lock,
            MutationOp::CheckNotExists => return None,
        };
        let mut lock = Lock::new(
            lock_type,
            self.primary.clone(),
            self.start_ts,
            self.lock_ttl,
        );
        lock.for_update_ts = self.for_update_ts;
        lock.txn_size = self.txn_size;
        lock.min_commit_ts = self.min_commit_ts;
        if lock_type == LockType::Put {
            if m.value.len() <= SHORT_VALUE_MAX_LEN {
                lock.short_value = Some(m.value.clone());
            } else {
                ctx.batch.put_value(&m.key, self.start_ts, m.value.clone());
            }
        }
        Some(lock)
    }

    /// Async commit / 1PC: puts the lock in memory, then fixes its
    /// min_commit_ts above every read so far. In that order, a reader either
    /// sees the lock or has already raised `max_ts`.
    fn fix_min_commit_ts(&self, ctx: &mut ProcessContext<'_>, key: &[u8], lock: &mut Lock) -> u64 {
        if self.use_async_commit {
            lock.use_async_commit = true;
            if key == self.primary.as_slice() {
                lock.secondaries = self.secondaries.clone();
            }
        }
        ctx.lock_in_memory(key, lock.clone());
        let min = [
            self.start_ts.saturating_add(1),
            self.min_commit_ts,
            self.for_update_ts.saturating_add(1),
            ctx.cm.max_ts().saturating_add(1),
        ]
        .into_iter()
        .max()
        .unwrap_or(u64::MAX);
        lock.min_commit_ts = min;
        // Same key, now with its min_commit_ts: already listed for release.
        ctx.cm.lock_in_memory(key, lock.clone());
        min
    }
}

impl WriteCommand for Prewrite {
    type Output = PrewriteOutcome;

    fn keys(&self) -> Vec<Vec<u8>> {
        self.mutations.iter().map(|m| m.key.clone()).collect()
    }

    fn needs_synced_max_ts(&self) -> bool {
        self.use_async_commit || self.try_one_pc
    }

    fn process(&self, ctx: &mut ProcessContext<'_>) -> TxnResult<PrewriteOutcome> {
        let start_ts = self.start_ts;
        let async_commit = self.use_async_commit || self.try_one_pc;
        let mut errors = vec![];
        // (key, lock, whether it replaces our pessimistic lock)
        let mut locks: Vec<(&[u8], Lock, bool)> = vec![];
        let mut min_commit_ts = 0;
        // A retry of a prewrite whose async commit or 1PC fell back to 2PC
        // (it finds its own plain locks): it falls back again.
        let mut fell_back = false;
        for m in &self.mutations {
            let existing = ctx.reader.load_lock(&m.key)?;
            let mut read_records = false;
            match &existing {
                Some(l) if l.ts != start_ts => {
                    match finished(&ctx.reader, &m.key, start_ts)? {
                        Some(Finished::Committed(c)) => return Ok(self.committed_at(ctx, c)),
                        _ => errors.push(ke::locked(l.info(&m.key))),
                    }
                    continue;
                }
                // Already prewritten by this transaction: a retry.
                Some(l) if l.lock_type != LockType::Pessimistic => {
                    if l.use_async_commit {
                        min_commit_ts = min_commit_ts.max(l.min_commit_ts);
                    } else {
                        fell_back = true;
                    }
                    continue;
                }
                Some(_) => {}
                None => match finished(&ctx.reader, &m.key, start_ts)? {
                    Some(Finished::Committed(c)) if c != start_ts => {
                        return Ok(self.committed_at(ctx, c));
                    }
                    _ if m.pessimistic => {
                        return Err(one(ke::pessimistic_lock_not_found(start_ts, &m.key)));
                    }
                    Some(f) => {
                        let c = match f {
                            Finished::Committed(c) => c,
                            Finished::RolledBack => start_ts,
                        };
                        return Err(one(ke::write_conflict(
                            start_ts,
                            start_ts,
                            c,
                            &m.key,
                            &self.primary,
                            Reason::SelfRolledBack,
                        )));
                    }
                    None => {
                        self.check_newer_version(ctx, m)?;
                        read_records = self.checks_newer_version();
                    }
                },
            }
            self.check_assertion(ctx, m, read_records)?;
            if matches!(m.op, MutationOp::Insert | MutationOp::CheckNotExists)
                && ctx.reader.get(&m.key, u64::MAX)?.is_some()
            {
                return Err(one(ke::already_exist(&m.key)));
            }
            if m.op == MutationOp::CheckNotExists {
                // A read at start_ts that found nothing: no async-commit or
                // 1PC write of the key may commit below it (TiKV's rule;
                // `TxnStorage::prewrite` checked start_ts against the
                // max_ts ceiling first).
                ctx.cm.observe_read(start_ts);
            }
            let Some(mut lock) = self.new_lock(ctx, m) else {
                continue;
            };
            if let Some(ours) = &existing {
                // Our pessimistic lock: heartbeats may have extended its
                // TTL and readers pushed its min_commit_ts; the prewritten
                // lock keeps both, as TiKV.
                lock.ttl = lock.ttl.max(ours.ttl);
                lock.min_commit_ts = lock.min_commit_ts.max(ours.min_commit_ts);
            }
            if async_commit {
                min_commit_ts = min_commit_ts.max(self.fix_min_commit_ts(ctx, &m.key, &mut lock));
            }
            locks.push((&m.key, lock, existing.is_some()));
        }
        if !errors.is_empty() {
            return Err(TxnError::Key(errors));
        }
        let too_late = self.max_commit_ts > 0 && min_commit_ts > self.max_commit_ts;
        if async_commit && (too_late || fell_back) {
            // Fall back to 2PC: plain locks, committed by the client later.
            for (key, mut lock, _) in locks {
                lock.use_async_commit = false;
                lock.secondaries.clear();
                lock.min_commit_ts = self.min_commit_ts;
                ctx.batch.put_lock(key, &lock);
            }
            return Ok(PrewriteOutcome::default());
        }
        if self.try_one_pc {
            for (key, lock, replaces_lock) in locks {
                let mut w = Write::new(
                    WriteType::of_lock(lock.lock_type),
                    start_ts,
                    lock.short_value.clone(),
                );
                keep_rollback_at(&ctx.reader, key, min_commit_ts, &mut w)?;
                ctx.batch.put_write(key, min_commit_ts, &w);
                if replaces_lock {
                    ctx.batch.delete_lock(key);
                }
            }
            return Ok(PrewriteOutcome {
                min_commit_ts: 0,
                one_pc_commit_ts: min_commit_ts,
            });
        }
        for (key, lock, _) in locks {
            ctx.batch.put_lock(key, &lock);
        }
        Ok(PrewriteOutcome {
            min_commit_ts: if async_commit { min_commit_ts } else { 0 },
            one_pc_commit_ts: 0,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(ops: &[i32]) -> kvrpcpb::PrewriteRequest {
        kvrpcpb::PrewriteRequest {
            mutations: ops
                .iter()
                .enumerate()
                .map(|(i, op)| kvrpcpb::Mutation {
                    op: *op,
                    key: vec![b'k', i as u8],
                    ..Default::default()
                })
                .collect(),
            primary_lock: b"k".to_vec(),
            start_version: 10,
            ..Default::default()
        }
    }

    #[test]
    fn mutations_a_prewrite_cannot_carry_are_rejected_not_turned_into_puts() {
        let put = kvrpcpb::Op::Put as i32;
        for bad in [
            99,
            -1,
            kvrpcpb::Op::Rollback as i32,
            kvrpcpb::Op::PessimisticLock as i32,
        ] {
            let e = Prewrite::from_request(request(&[put, bad])).unwrap_err();
            assert!(
                matches!(&e, StorageError::InvalidArgument(m) if m.contains("mutation 1 has op")),
                "{bad}: {e:?}"
            );
        }
        let ok = Prewrite::from_request(request(&[put, kvrpcpb::Op::Del as i32])).unwrap();
        assert_eq!(ok.mutations[1].op, MutationOp::Delete);
    }

    #[test]
    fn pessimistic_actions_must_cover_the_mutations() {
        let put = kvrpcpb::Op::Put as i32;
        let mut req = request(&[put, put]);
        req.pessimistic_actions = vec![PessimisticAction::DoPessimisticCheck as i32];
        assert!(Prewrite::from_request(req.clone()).is_err());
        req.pessimistic_actions.push(7);
        assert!(Prewrite::from_request(req.clone()).is_err());
        req.pessimistic_actions[1] = PessimisticAction::SkipPessimisticCheck as i32;
        let p = Prewrite::from_request(req.clone()).unwrap();
        assert!(p.mutations[0].pessimistic && !p.mutations[1].pessimistic);
        // A region's share of a prewrite the official client split still
        // carries every action: the first ones are its mutations'.
        req.pessimistic_actions
            .push(PessimisticAction::DoPessimisticCheck as i32);
        let p = Prewrite::from_request(req).unwrap();
        assert!(p.mutations[0].pessimistic && !p.mutations[1].pessimistic);
    }
}
