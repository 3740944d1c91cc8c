//! Ending a transaction on some keys: Commit (second phase of Percolator),
//! BatchRollback (the client gives up), Cleanup (a reader rolls back an
//! expired lock of someone else's transaction).

use super::{ProcessContext, WriteCommand};
use crate::txn::actions::{commit_key, finished, lock_expired, one, rollback_key, Finished};
use crate::txn::{key_error as ke, TxnResult};
use crate::StorageError;

/// Commits the locks of `start_ts` on `keys` at `commit_ts`. Keys already
/// committed by the transaction succeed again (a retry).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Commit {
    pub keys: Vec<Vec<u8>>,
    pub start_ts: u64,
    pub commit_ts: u64,
}

impl Commit {
    pub fn new(keys: Vec<Vec<u8>>, start_ts: u64, commit_ts: u64) -> Result<Commit, StorageError> {
        if commit_ts <= start_ts {
            return Err(StorageError::invalid(format!(
                "commit_version {commit_ts} must be greater than start_version {start_ts}"
            )));
        }
        Ok(Commit {
            keys,
            start_ts,
            commit_ts,
        })
    }
}

impl WriteCommand for Commit {
    type Output = ();

    fn allowed_on_almost_full(&self) -> bool {
        true
    }

    fn keys(&self) -> Vec<Vec<u8>> {
        self.keys.clone()
    }

    fn process(&self, ctx: &mut ProcessContext<'_>) -> TxnResult<()> {
        for key in &self.keys {
            commit_key(
                &ctx.reader,
                &mut ctx.batch,
                key,
                self.start_ts,
                self.commit_ts,
            )?;
        }
        Ok(())
    }
}

/// Rolls back `start_ts` on `keys`, locked or not, leaving rollback records
/// so late prewrites fail. A key the transaction committed is an error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BatchRollback {
    pub keys: Vec<Vec<u8>>,
    pub start_ts: u64,
}

impl WriteCommand for BatchRollback {
    type Output = ();

    fn allowed_on_almost_full(&self) -> bool {
        true
    }

    fn keys(&self) -> Vec<Vec<u8>> {
        self.keys.clone()
    }

    fn process(&self, ctx: &mut ProcessContext<'_>) -> TxnResult<()> {
        let start_ts = self.start_ts;
        for key in &self.keys {
            let lock = ctx.reader.load_lock(key)?.filter(|l| l.ts == start_ts);
            if lock.is_none() {
                match finished(&ctx.reader, key, start_ts)? {
                    Some(Finished::Committed(c)) => {
                        return Err(one(ke::committed(start_ts, c, key)))
                    }
                    Some(Finished::RolledBack) => continue,
                    None => {}
                }
            }
            rollback_key(&ctx.reader, &mut ctx.batch, key, start_ts, lock.as_ref())?;
        }
        Ok(())
    }
}

/// Rolls back `key` of `start_ts` if its lock expired at `current_ts` (or
/// `current_ts` is 0); a live lock is KeyIsLocked, a commit is an error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cleanup {
    pub key: Vec<u8>,
    pub start_ts: u64,
    pub current_ts: u64,
}

impl WriteCommand for Cleanup {
    /// The commit ts if the transaction committed on the key (TiKV answers
    /// it in `commit_version`, not as an error), else 0.
    type Output = u64;

    fn allowed_on_almost_full(&self) -> bool {
        true
    }

    fn keys(&self) -> Vec<Vec<u8>> {
        vec![self.key.clone()]
    }

    fn process(&self, ctx: &mut ProcessContext<'_>) -> TxnResult<u64> {
        let (key, start_ts) = (&self.key, self.start_ts);
        match ctx.reader.load_lock(key)? {
            Some(l) if l.ts == start_ts => {
                if self.current_ts != 0 && !lock_expired(&l, self.current_ts) {
                    return Err(one(ke::locked(l.info(key))));
                }
                rollback_key(&ctx.reader, &mut ctx.batch, key, start_ts, Some(&l))?;
            }
            _ => match finished(&ctx.reader, key, start_ts)? {
                Some(Finished::Committed(c)) => return Ok(c),
                Some(Finished::RolledBack) => {}
                None => rollback_key(&ctx.reader, &mut ctx.batch, key, start_ts, None)?,
            },
        }
        Ok(0)
    }
}
