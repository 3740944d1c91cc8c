//! What the layers above need of a KV engine, as traits, so MVCC, the
//! transactional commands and the raw apply path run as well on the
//! in-memory engine ([`crate::MemEngine`]) as on RocksDB ([`crate::KvEngine`]).
//!
//! * [`KvRead`]: point reads and ordered scans of one column family.
//! * [`KvApply`]: a batch being applied, whose reads see its own writes so
//!   far (a compare-and-swap reads the value the entries before it left).

use crate::{Cf, Result};

/// Point reads and ordered scans.
pub trait KvRead {
    fn get(&self, cf: Cf, key: &[u8]) -> Result<Option<Vec<u8>>>;

    /// Calls `visit` for each pair in `[start, end)` (`end` empty means
    /// unbounded), ascending or descending, until it returns `false`.
    fn scan(
        &self,
        cf: Cf,
        start: &[u8],
        end: &[u8],
        reverse: bool,
        visit: &mut dyn FnMut(&[u8], &[u8]) -> bool,
    ) -> Result<()>;
}

/// Writes of one apply round.
pub trait KvApply {
    /// Reads `key` as of every write applied so far, this round's included.
    fn get(&mut self, cf: Cf, key: &[u8]) -> Result<Option<Vec<u8>>>;
    fn put(&mut self, cf: Cf, key: &[u8], value: &[u8]);
    fn delete(&mut self, cf: Cf, key: &[u8]);
    /// Deletes `[start, end)`; an empty `end` means to the end of the key
    /// space, covering this round's own puts.
    fn delete_range(&mut self, cf: Cf, start: &[u8], end: &[u8]);
}
