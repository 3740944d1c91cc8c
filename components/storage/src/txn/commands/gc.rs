//! GC of one batch of keys: below the safe point, only the newest version
//! of each key that a read at the safe point can see is kept.
//!
//! ```text
//! key k, safe point 25:   commit 30 Put   -> kept (above the safe point)
//!                         commit 20 Put   -> kept (newest visible at 25)
//!                         commit 15 Lock  -> removed
//!                         commit 10 Put   -> removed, with its value
//! key j, safe point 25:   commit 20 Delete -> removed: j has no value
//! ```

use crate::mvcc::record::WriteType;
use crate::mvcc::MvccReader;
use crate::txn::TxnResult;

use super::Batch;

/// How many user keys one GC batch covers (TiKV's `[gc] batch-keys`
/// default).
pub const GC_BATCH_KEYS: usize = 512;

/// One GC batch of user keys in `[start, end)`: the deletions, how many
/// versions they remove, and the key the next batch starts at.
pub fn gc_batch(
    reader: &MvccReader<'_>,
    start: &[u8],
    end: &[u8],
    safe_point: u64,
) -> TxnResult<(Batch, usize, Option<Vec<u8>>)> {
    let mut b = Batch::default();
    let mut removed = 0usize;
    let mut keys = 0usize;
    let mut next = None;
    let mut current: Option<Vec<u8>> = None;
    let mut kept = false;
    reader.scan_writes(start, end, false, |key, c, w| {
        if current.as_deref() != Some(key) {
            if keys == GC_BATCH_KEYS {
                next = Some(key.to_vec());
                return false;
            }
            keys += 1;
            current = Some(key.to_vec());
            kept = false;
        }
        if c > safe_point {
            return true;
        }
        let keep = !kept && w.write_type == WriteType::Put;
        if matches!(w.write_type, WriteType::Put | WriteType::Delete) {
            kept = true;
        }
        if !keep {
            b.delete_write(key, c);
            if w.write_type == WriteType::Put && w.short_value.is_none() {
                b.delete_value(key, w.start_ts);
            }
            removed += 1;
        }
        true
    })?;
    Ok((b, removed, next))
}
