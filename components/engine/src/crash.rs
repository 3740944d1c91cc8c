//! Crash points for tests: kill -9 between any two writes, in process.
//!
//! A store's two engines share one [`WriteBudget`]. Once it is spent,
//! every write of either engine fails and changes nothing, so what is on
//! disk is what a process killed right after the last allowed write would
//! leave (the OS keeps unsynced writes through kill -9, as here). A test
//! then drops the store and opens it again from the same directories,
//! and can sweep the crash point over every write of a scenario. A budget
//! is unlimited unless a test sets one: a store process never does.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use crate::{EngineError, Result};

const UNLIMITED: u64 = u64::MAX;

/// Writes left before the engines holding it act as killed; clones share it.
#[derive(Clone, Debug)]
pub struct WriteBudget(Arc<AtomicU64>);

impl Default for WriteBudget {
    fn default() -> Self {
        WriteBudget(Arc::new(AtomicU64::new(UNLIMITED)))
    }
}

impl WriteBudget {
    /// Lets `n` more writes through, then none.
    pub fn crash_after(&self, n: u64) {
        self.0.store(n, Ordering::SeqCst);
    }

    /// Whether the crash point was reached.
    pub fn is_spent(&self) -> bool {
        self.0.load(Ordering::SeqCst) == 0
    }

    /// Takes one write from the budget, or fails if none is left.
    pub(crate) fn take(&self) -> Result<()> {
        let took = self
            .0
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |left| match left {
                0 => None,
                UNLIMITED => Some(UNLIMITED),
                n => Some(n - 1),
            });
        took.map(drop).map_err(|_| EngineError::CrashPoint)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_budget_lets_its_writes_through_then_none_and_clones_share_it() {
        let budget = WriteBudget::default();
        for _ in 0..1000 {
            budget.take().unwrap();
        }
        assert!(!budget.is_spent());
        let clone = budget.clone();
        clone.crash_after(2);
        budget.take().unwrap();
        assert!(!clone.is_spent());
        clone.take().unwrap();
        assert!(budget.is_spent());
        assert!(matches!(budget.take(), Err(EngineError::CrashPoint)));
    }
}
