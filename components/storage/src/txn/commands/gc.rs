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

use crate::mvcc::codec::encoded_len;
use crate::mvcc::record::WriteType;
use crate::mvcc::MvccReader;
use crate::txn::TxnResult;

use super::Batch;

/// How many user keys one GC batch covers (TiKV's `[gc] batch-keys`
/// default).
pub const GC_BATCH_KEYS: usize = 512;

/// How many bytes of deletions one GC batch carries at most (TiKV's
/// `MAX_TXN_WRITE_SIZE`): a key with many versions is collected over
/// several batches, so no batch outgrows a Raft entry.
pub const GC_BATCH_BYTES: usize = 32 * 1024;

/// Where a GC pass goes on: at `key`, and, when the last batch filled up
/// among that key's versions, from the version committed at `ts` down,
/// with `kept` saying whether the key's visible version was already met
/// (every older one is then removed).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct GcCursor {
    pub key: Vec<u8>,
    pub within: Option<GcWithin>,
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub struct GcWithin {
    pub ts: u64,
    pub kept: bool,
}

impl GcCursor {
    pub fn at(key: &[u8]) -> Self {
        GcCursor {
            key: key.to_vec(),
            within: None,
        }
    }
}

/// One GC batch of user keys in `[from, end)`, at most [`GC_BATCH_KEYS`]
/// keys and about `max_bytes` of deletions: the deletions, how many
/// versions they remove, and where the next batch starts.
pub fn gc_batch(
    reader: &MvccReader<'_>,
    from: &GcCursor,
    end: &[u8],
    safe_point: u64,
    max_bytes: usize,
) -> TxnResult<(Batch, usize, Option<GcCursor>)> {
    let mut b = Batch::default();
    let mut removed = 0usize;
    let mut bytes = 0usize;
    let mut keys = 0usize;
    let mut next = None;
    let mut current: Option<Vec<u8>> = None;
    let mut kept = false;
    let mut resume = from.within;
    reader.scan_writes(&from.key, end, false, |key, c, w| {
        if current.as_deref() != Some(key) {
            if keys == GC_BATCH_KEYS || bytes >= max_bytes {
                next = Some(GcCursor::at(key));
                return false;
            }
            keys += 1;
            current = Some(key.to_vec());
            kept = match resume.take() {
                Some(within) if key == from.key.as_slice() => {
                    resume = Some(within);
                    within.kept
                }
                _ => false,
            };
        }
        if c > safe_point || resume.is_some_and(|r| c > r.ts) {
            return true;
        }
        let keep = !kept && w.write_type == WriteType::Put;
        if !keep && bytes >= max_bytes {
            next = Some(GcCursor {
                key: key.to_vec(),
                within: Some(GcWithin { ts: c, kept }),
            });
            return false;
        }
        if matches!(w.write_type, WriteType::Put | WriteType::Delete) {
            kept = true;
        }
        if !keep {
            b.delete_write(key, c);
            bytes = bytes.saturating_add(deletion_size(key));
            if w.write_type == WriteType::Put && w.short_value.is_none() {
                b.delete_value(key, w.start_ts);
                bytes = bytes.saturating_add(deletion_size(key));
            }
            removed += 1;
        }
        true
    })?;
    Ok((b, removed, next))
}

/// About what one deletion of a version of `key` adds to a batch's Raft
/// entry: the encoded key, its timestamp, and the operation's framing.
fn deletion_size(key: &[u8]) -> usize {
    encoded_len(key) + 8 + 16
}
