//! Every byte format a client, a peer or a disk hands Tikal, decoded by
//! pure functions: no engine, no I/O beyond a reader, no async. Decoders
//! never panic and never trust a length or a number they read; they answer
//! `None` or an error. Being small and self-contained, this crate is what
//! the fuzz targets in `fuzz/` exercise, and its property tests run in
//! `cargo test`.
//!
//! * [`mvcc_key`] — TiKV's memcomparable user-key encoding, `!ts` version
//!   suffixes, varints;
//! * [`mvcc_record`] — Percolator lock and write records in TiKV's layout;
//! * [`raw_value`] — raw values with their expiry;
//! * [`request_meta`] — a request's priority, arrival, deadline and id from
//!   the seed's `x-aaws-*` headers or kvproto's `Context`;
//! * [`replay_csv`] — the replay tool's request CSV.
//!
//! Storage and tools re-export these under their own names
//! (`tikal_storage::mvcc::codec`, `tikal_storage::value`, …).

pub mod mvcc_key;
pub mod mvcc_record;
pub mod raw_value;
pub mod replay_csv;
pub mod request_meta;
