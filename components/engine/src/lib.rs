//! Storage engines: where bytes live on disk.
//!
//! A store keeps two engines, as TiKV does:
//!
//! * the **KV engine** ([`KvEngine`], RocksDB) holds user data in the column
//!   families `default`, `lock` and `write`, plus the store's own metadata
//!   (store identity, region states, apply states) in the column family `raft`;
//! * the **Raft log engine** ([`RaftLogEngine`], raft-engine) holds each
//!   region's Raft log entries and hard state.
//!
//! The split matters for durability: a write is acknowledged once its Raft
//! entry is fsynced in the log engine and applied to the KV engine. The KV
//! engine's applied index is written in the same atomic batch as the data it
//! covers, so after a crash the store re-applies exactly the entries after it.
//!
//! Layers above read through the [`KvRead`] trait and apply through
//! [`KvApply`], so their logic also runs on the in-memory [`MemEngine`].
//!
//! This crate is the bottom storage layer: it knows bytes and column families,
//! not regions, transactions or Raft roles.

mod crash;
mod kv;
mod memory;
mod raft_log;
mod traits;

pub use crash::WriteBudget;
pub use kv::{
    Cf, DropFilter, KvEngine, KvSnapshot, KvWriteBatch, SstInfo, CF_DEFAULT, CF_LOCK, CF_RAFT,
    CF_WRITE, DATA_CFS,
};
pub use memory::MemEngine;
pub use raft_log::{RaftLogEngine, RaftLogWrite};
pub use traits::{KvApply, KvRead};

/// Errors from either engine.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("rocksdb: {0}")]
    RocksDb(#[from] rocksdb::Error),
    #[error("raft-engine: {0}")]
    RaftEngine(#[from] raft_engine::Error),
    #[error("corrupted {what}: {detail}")]
    Corrupted { what: &'static str, detail: String },
    /// A test's crash point was reached (see [`WriteBudget`]).
    #[error("the engine stopped writing at a test's crash point")]
    CrashPoint,
}

pub type Result<T> = std::result::Result<T, EngineError>;
