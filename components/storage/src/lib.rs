//! Storage semantics on top of the Multi-Raft store: the Raw KV API, and
//! the transactional API ([`txn`]) over Percolator MVCC ([`mvcc`]).
//!
//! A request's life here: the server hands in a kvproto request; we check it
//! against the region it names (exists on this store, this peer leads it, the
//! epoch is current, every key lies inside it) and validate arguments. Reads
//! then wait for their read index and read an engine snapshot taken after
//! it. Writes become a [`RawCommand`]: a list
//! of column-family puts and deletes (or one compare-and-swap) proposed to the
//! region's Raft group; [`RawApplier`] performs it at apply time on every
//! replica, so all replicas evaluate a CAS against the same state.
//!
//! Values carry their expiry: a value put with a TTL is stored as
//! `user value | expire (u64 BE, Unix seconds) | 0x01`, one without as
//! `user value | 0x00` (see [`value`]). Every read filters out expired values.

pub mod api;
mod command;
mod errors;
pub mod mvcc;
mod raw;
pub mod scheduler;
#[cfg(test)]
mod test_store;
pub mod txn;
pub use tikal_codec::raw_value as value;

pub use command::{CasOutcome, RawApplier, RawApplyResult, RawCommand, RawOp};
pub use errors::{region_error, StorageError};
pub use raw::{
    cf_name, decode_bounds, hex, in_region, PendingWrite, PreparedWrite, RawStorage, ReadGuard,
    StorageConfig, MAX_KEY_SIZE, RAFT_ENTRY_MAX_SIZE,
};

pub type Result<T> = std::result::Result<T, StorageError>;
