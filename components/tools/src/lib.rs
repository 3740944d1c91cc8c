//! The `tikal` command's subcommands, and the local-cluster harness shared
//! by `tikal playground` and the end-to-end tests.
//!
//! * [`local_cluster`] — start/stop/kill real PD and store processes;
//! * [`playground`] — `tikal playground`: a local cluster until Ctrl-C;
//! * [`replay`] — `tikal replay`: a request CSV sent at its arrival times
//!   with scheduling headers (the seed's csv-ycsb);
//! * [`gen`] — `tikal gen-requests`: synthetic request CSVs;
//! * [`trace_report`] — `tikal trace-report`: per-priority miss rates and
//!   delays from server traces, with charts;
//! * [`bench`] — `tikal bench`: throughput and latency through the official
//!   TiKV client.

pub mod bench;
pub mod gen;
pub mod local_cluster;
pub mod playground;
pub mod replay;
pub mod trace_report;
