//! ResolveLock: a reader that found the locks of finished transactions
//! commits or rolls them back, as their primaries decided.

use std::collections::HashMap;

use super::{ProcessContext, WriteCommand};
use crate::txn::actions::{commit_key, finished, rollback_key};
use crate::txn::TxnResult;
use crate::StorageError;

/// For each target `(key, start_ts)`: commits its lock at the transaction's
/// commit ts, or rolls it back where the commit ts is 0. A pessimistic lock
/// is only dropped: it was never prewritten.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolveLock {
    /// start_ts → commit_ts (0 = rolled back).
    pub txns: HashMap<u64, u64>,
    pub targets: Vec<(Vec<u8>, u64)>,
}

impl ResolveLock {
    pub fn new(txns: &[(u64, u64)], targets: Vec<(Vec<u8>, u64)>) -> Result<Self, StorageError> {
        if let Some((s, c)) = txns.iter().find(|(s, c)| *c != 0 && c <= s) {
            return Err(StorageError::invalid(format!(
                "commit_version {c} must be greater than start_version {s}"
            )));
        }
        Ok(ResolveLock {
            txns: txns.iter().copied().collect(),
            targets,
        })
    }
}

impl WriteCommand for ResolveLock {
    type Output = ();

    fn allowed_on_almost_full(&self) -> bool {
        true
    }

    fn keys(&self) -> Vec<Vec<u8>> {
        self.targets.iter().map(|t| t.0.clone()).collect()
    }

    fn process(&self, ctx: &mut ProcessContext<'_>) -> TxnResult<()> {
        for (key, start_ts) in &self.targets {
            let (key, start_ts) = (key.as_slice(), *start_ts);
            let commit_ts = self.txns.get(&start_ts).copied().unwrap_or(0);
            let (reader, b) = (&ctx.reader, &mut ctx.batch);
            match reader.load_lock(key)?.filter(|l| l.ts == start_ts) {
                Some(_) if commit_ts > 0 => commit_key(reader, b, key, start_ts, commit_ts)?,
                Some(l) => rollback_key(reader, b, key, start_ts, Some(&l))?,
                None if commit_ts == 0 && finished(reader, key, start_ts)?.is_none() => {
                    rollback_key(reader, b, key, start_ts, None)?
                }
                None => {}
            }
        }
        Ok(())
    }
}
