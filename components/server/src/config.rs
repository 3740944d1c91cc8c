//! `tikv-server` configuration: TiKV's TOML section and key names, overridden
//! by command-line flags.
//!
//! ```toml
//! [server]
//! addr = "127.0.0.1:20160"
//! status-addr = "127.0.0.1:20180"
//! [storage]
//! data-dir = "tikv-data"
//! api-version = 1
//! [pd]
//! endpoints = ["127.0.0.1:2379"]
//! [raftstore]
//! raft-base-tick-interval = "100ms"
//! ```
//! Keys Tikal does not know are reported in the log, not silently dropped.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context as _;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, rename_all = "kebab-case")]
pub struct TikvConfig {
    pub log_file: String,
    pub server: ServerSection,
    pub storage: StorageSection,
    pub pd: PdSection,
    pub raftstore: RaftstoreSection,
    pub coprocessor: CoprocessorSection,
    pub scheduler: SchedulerSection,
    pub pessimistic_txn: PessimisticTxnSection,
    pub gc: GcSection,
    pub resolved_ts: ResolvedTsSection,
    pub quota: QuotaSection,
}

/// `[quota]`: upstream's foreground quota limiter, write side.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, rename_all = "kebab-case")]
pub struct QuotaSection {
    /// Bytes of foreground writes the store takes in per second ("0" =
    /// unlimited, the default). Writes beyond it wait in the scheduler (or,
    /// for `fcfs`, the store's queue): a store whose disk sustains only this
    /// much, as in the overload benchmark.
    pub foreground_write_bandwidth: String,
}

impl Default for QuotaSection {
    fn default() -> Self {
        QuotaSection {
            foreground_write_bandwidth: "0KB".into(),
        }
    }
}

/// `[resolved-ts]`: how fresh a stale read can be.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, rename_all = "kebab-case")]
pub struct ResolvedTsSection {
    /// How often the store takes a PD timestamp as its stale-read ceiling
    /// (TiKV's default is 20s; Tikal's 1s lets stale reads be fresher).
    pub advance_ts_interval: String,
}

impl Default for ResolvedTsSection {
    fn default() -> Self {
        ResolvedTsSection {
            advance_ts_interval: "1s".into(),
        }
    }
}

/// `[gc]`: background MVCC garbage collection.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, rename_all = "kebab-case")]
pub struct GcSection {
    /// How often PD's GC safe point is read (Tikal's own key; TiKV
    /// hard-codes this).
    pub poll_safe_point_interval: String,
}

impl Default for GcSection {
    fn default() -> Self {
        GcSection {
            poll_safe_point_interval: "10s".into(),
        }
    }
}

/// `[pessimistic-txn]`: lock waiting of pessimistic transactions.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, rename_all = "kebab-case")]
pub struct PessimisticTxnSection {
    /// How long a lock request waits for a conflicting lock when the
    /// client leaves it to the server (`wait_timeout` 0).
    pub wait_for_lock_timeout: String,
}

impl Default for PessimisticTxnSection {
    fn default() -> Self {
        PessimisticTxnSection {
            wait_for_lock_timeout: "1s".into(),
        }
    }
}

/// `[scheduler]`: deadline-aware admission of raw writes.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, rename_all = "kebab-case")]
pub struct SchedulerSection {
    /// fcfs | threshold | edf; changeable at run time via POST /config.
    pub policy: String,
    /// Server trace CSV; relative paths are from the working directory;
    /// empty = no trace.
    pub trace_path: String,
    pub threshold: tikal_storage::scheduler::ThresholdConfig,
    pub edf: tikal_storage::scheduler::EdfConfig,
}

impl Default for SchedulerSection {
    fn default() -> Self {
        SchedulerSection {
            policy: "edf".into(),
            trace_path: "replay_trace_server.csv".into(),
            threshold: Default::default(),
            edf: Default::default(),
        }
    }
}

/// `--labels zone=z1,host=h1` as a label map; each pair needs exactly one
/// `=` (the labels themselves are checked with the rest of the config).
pub fn parse_labels(text: &str) -> anyhow::Result<BTreeMap<String, String>> {
    let mut labels = BTreeMap::new();
    for pair in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        match pair.split('=').collect::<Vec<_>>()[..] {
            [key, value] => labels.insert(key.trim().to_string(), value.trim().to_string()),
            _ => anyhow::bail!("invalid label {pair:?}: expected key=value"),
        };
    }
    Ok(labels)
}

impl SchedulerSection {
    pub fn policy(&self) -> anyhow::Result<tikal_storage::scheduler::Policy> {
        tikal_storage::scheduler::Policy::from_name(&self.policy, &self.threshold, &self.edf)
            .map_err(|e| anyhow::anyhow!("scheduler.policy: {e}"))
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, rename_all = "kebab-case")]
pub struct ServerSection {
    pub addr: String,
    pub advertise_addr: String,
    pub status_addr: String,
    pub advertise_status_addr: String,
    /// Worker threads of the store's async runtime, which serves gRPC
    /// (clients and other stores) and the store's background tasks;
    /// unset, one per core. Upstream's key; TiKV's default is 5 gRPC
    /// threads.
    pub grpc_concurrency: Option<usize>,
    /// Snapshots this store sends (generations included) at once, at
    /// most; one past it fails and Raft sends it again later. Upstream's
    /// key and default (32).
    pub concurrent_send_snap_limit: u32,
    /// Snapshots this store receives at once, at most; a stream past it is
    /// refused with `RESOURCE_EXHAUSTED` and its sender tries again later.
    /// Upstream's key and default (32).
    pub concurrent_recv_snap_limit: u32,
    /// Where the store is, for PD's `location-labels` (upstream's key and
    /// form: `labels = { zone = "z1", host = "h1" }`). Sent to PD at every
    /// start.
    pub labels: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, rename_all = "kebab-case")]
pub struct StorageSection {
    pub data_dir: String,
    /// 1 or 2 (see `tikal_storage::api`).
    pub api_version: u8,
    /// TTL on raw values. API V2 requires it, as upstream. Off, raw writes
    /// with a TTL and TTL queries are refused, as upstream; Tikal's values
    /// carry the V2 expiry encoding whatever the setting, so the setting
    /// can change on a store with data.
    pub enable_ttl: bool,
    /// Room kept back for Raft, membership changes and deletes: at this
    /// much free space or less (or 5 % of the capacity, if that is more)
    /// the store refuses client writes (see `disk.rs`). With "0" only no
    /// room at all counts. Upstream's key and default.
    pub reserve_space: String,
    pub max_ts: MaxTsSection,
}

/// `[storage.max-ts]`: how far a client's read may raise `max_ts` above
/// PD's time (see `tikal_storage::txn::MaxTsPolicy`). Upstream's keys and
/// defaults (v8.5.7's action).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, rename_all = "kebab-case")]
pub struct MaxTsSection {
    /// The ceiling's lead over the last PD timestamp the store took.
    pub max_drift: String,
    /// How often the store takes a PD timestamp for the ceiling.
    pub cache_sync_interval: String,
    /// `error` (refuse such a read) or `log` (serve it). Upstream's
    /// `panic` is taken as `error`: nothing a client sends may stop a
    /// store.
    pub action_on_invalid_update: String,
}

impl Default for MaxTsSection {
    fn default() -> Self {
        MaxTsSection {
            max_drift: "60s".into(),
            cache_sync_interval: "15s".into(),
            action_on_invalid_update: "error".into(),
        }
    }
}

impl MaxTsSection {
    /// The policy these keys describe, and how often to refresh the
    /// ceiling.
    pub fn policy(&self) -> anyhow::Result<(tikal_storage::txn::MaxTsPolicy, Duration)> {
        use tikal_storage::txn::{InvalidMaxTsAction, MaxTsPolicy};
        let max_drift = parse_duration(&self.max_drift).context("storage.max-ts.max-drift")?;
        let every = parse_duration(&self.cache_sync_interval)
            .context("storage.max-ts.cache-sync-interval")?;
        if every.is_zero() || max_drift <= every {
            anyhow::bail!(
                "storage.max-ts.max-drift ({}) must exceed storage.max-ts.cache-sync-interval ({}), \
                 which must not be 0",
                self.max_drift,
                self.cache_sync_interval
            );
        }
        let action = match self.action_on_invalid_update.to_ascii_lowercase().as_str() {
            "error" | "panic" => InvalidMaxTsAction::Error,
            "log" => InvalidMaxTsAction::Log,
            other => anyhow::bail!(
                "storage.max-ts.action-on-invalid-update must be error, log or panic, not {other:?}"
            ),
        };
        let policy = MaxTsPolicy {
            max_drift,
            valid_for: every.saturating_mul(3).min(max_drift),
            action,
            ..Default::default()
        };
        Ok((policy, every))
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, rename_all = "kebab-case")]
pub struct PdSection {
    pub endpoints: Vec<String>,
    /// How long the store waits between rounds over the endpoints at start.
    pub retry_interval: String,
    /// Rounds after the first before the store gives up; -1 waits for good.
    pub retry_max_count: i64,
    /// One log line per this many failed rounds.
    pub retry_log_every: u64,
}

impl Default for PdSection {
    fn default() -> Self {
        PdSection {
            endpoints: vec!["127.0.0.1:2379".into()],
            retry_interval: "300ms".into(),
            retry_max_count: -1,
            retry_log_every: 10,
        }
    }
}

impl PdSection {
    pub fn retry(&self) -> anyhow::Result<crate::pd_client::PdRetry> {
        let max_count = match self.retry_max_count {
            -1 => None,
            n => Some(u64::try_from(n).map_err(|_| {
                anyhow::anyhow!("pd.retry-max-count must be -1 (for good) or at least 0, got {n}")
            })?),
        };
        Ok(crate::pd_client::PdRetry {
            interval: parse_duration(&self.retry_interval).context("pd.retry-interval")?,
            max_count,
            log_every: self.retry_log_every,
        })
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, rename_all = "kebab-case")]
pub struct RaftstoreSection {
    pub raft_base_tick_interval: String,
    pub raft_election_timeout_ticks: usize,
    /// Randomized election timeouts fall in `[min, max)` ticks (0 = upstream's
    /// defaults: the election timeout and twice it).
    pub raft_min_election_timeout_ticks: usize,
    pub raft_max_election_timeout_ticks: usize,
    pub raft_heartbeat_ticks: usize,
    /// Log GC (upstream's keys and defaults): a leader compacts what all
    /// peers have once that is `threshold` entries; past the count or size
    /// limit it compacts everything applied, and slow peers get snapshots.
    pub raft_log_gc_tick_interval: String,
    pub raft_log_gc_threshold: u64,
    pub raft_log_gc_count_limit: u64,
    pub raft_log_gc_size_limit: String,
    pub pd_heartbeat_tick_interval: String,
    pub pd_store_heartbeat_tick_interval: String,
    /// A peer that knows no leader (or, naive, hears nothing) this long
    /// asks PD whether it is stale
    /// (upstream's key and default).
    pub max_leader_missing_duration: String,
    /// A peer its leader has not heard from this long is reported to PD
    /// as down (upstream's key and default).
    pub max_peer_down_duration: String,
    /// How often leaders look for regions due a split check, and how many
    /// bytes of writes make a region due (default: region-split-size / 16).
    pub split_region_check_tick_interval: String,
    pub region_split_check_diff: Option<String>,
    /// The largest Raft entry a write may make (upstream's key).
    pub raft_entry_max_size: String,
    /// Whether a leader proposes the writes it takes in during one round
    /// as one Raft entry, up to 256 of them and 40 % of
    /// `raft-entry-max-size` (upstream's key and bounds; default on).
    pub cmd_batch: bool,
    /// Nice value of the raftstore thread (0 = unchanged); see
    /// `tikal_raftstore::RaftstoreConfig::thread_nice`.
    pub thread_nice: i32,
    /// The store's capacity ("0": its file system's size); a smaller one
    /// makes it full sooner (upstream's key).
    pub capacity: String,
}

/// `[coprocessor]`: when regions split (upstream's keys and defaults; the
/// max values default to 1.5 × the split values).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, rename_all = "kebab-case")]
pub struct CoprocessorSection {
    pub region_max_size: Option<String>,
    pub region_split_size: String,
    pub region_max_keys: Option<u64>,
    pub region_split_keys: u64,
    pub batch_split_limit: u64,
}

impl Default for CoprocessorSection {
    fn default() -> Self {
        CoprocessorSection {
            region_max_size: None,
            region_split_size: "96MiB".into(),
            region_max_keys: None,
            region_split_keys: 960_000,
            batch_split_limit: 10,
        }
    }
}

/// The largest `[raftstore] raft-entry-max-size` a store takes.
const MAX_RAFT_ENTRY_SIZE: u64 = 32 << 20;

impl TikvConfig {
    /// How a leader batches client writes into entries (`cmd-batch`).
    pub fn command_batch(&self) -> anyhow::Result<tikal_raftstore::CommandBatch> {
        if !self.raftstore.cmd_batch {
            return Ok(tikal_raftstore::CommandBatch::OFF);
        }
        let entry_max = parse_size(&self.raftstore.raft_entry_max_size)
            .context("raftstore.raft-entry-max-size")?;
        let entry_max = usize::try_from(entry_max).context("raftstore.raft-entry-max-size")?;
        Ok(tikal_raftstore::CommandBatch::for_entry_max(entry_max))
    }

    /// The split checker's settings, defaults filled as upstream fills them.
    pub fn split_check(&self) -> anyhow::Result<tikal_raftstore::SplitCheckConfig> {
        let c = &self.coprocessor;
        let split_size =
            parse_size(&c.region_split_size).context("coprocessor.region-split-size")?;
        let max_size = match &c.region_max_size {
            Some(s) => parse_size(s).context("coprocessor.region-max-size")?,
            None => split_size.saturating_add(split_size / 2),
        };
        let check_diff = match &self.raftstore.region_split_check_diff {
            Some(s) => parse_size(s).context("raftstore.region-split-check-diff")?,
            None => split_size / 16,
        };
        if split_size == 0 || c.region_split_keys == 0 || c.batch_split_limit == 0 {
            anyhow::bail!(
                "coprocessor.region-split-size, region-split-keys and batch-split-limit must be \
                 above 0"
            );
        }
        if max_size < split_size {
            anyhow::bail!("coprocessor.region-max-size must be at least region-split-size");
        }
        let max_keys = c
            .region_max_keys
            .unwrap_or_else(|| c.region_split_keys.saturating_add(c.region_split_keys / 2));
        if max_keys < c.region_split_keys {
            anyhow::bail!("coprocessor.region-max-keys must be at least region-split-keys");
        }
        Ok(tikal_raftstore::SplitCheckConfig {
            tick: parse_duration(&self.raftstore.split_region_check_tick_interval)
                .context("raftstore.split-region-check-tick-interval")?,
            check_diff,
            region_max_size: max_size,
            region_split_size: split_size,
            region_max_keys: max_keys,
            region_split_keys: c.region_split_keys,
            batch_split_limit: c.batch_split_limit,
        })
    }
}

impl Default for ServerSection {
    fn default() -> Self {
        ServerSection {
            addr: "127.0.0.1:20160".into(),
            advertise_addr: String::new(),
            status_addr: "127.0.0.1:20180".into(),
            advertise_status_addr: String::new(),
            grpc_concurrency: None,
            concurrent_send_snap_limit: tikal_raftstore::DEFAULT_SNAP_LIMIT,
            concurrent_recv_snap_limit: tikal_raftstore::DEFAULT_SNAP_LIMIT,
            labels: BTreeMap::new(),
        }
    }
}

impl Default for StorageSection {
    fn default() -> Self {
        StorageSection {
            data_dir: "./".into(),
            api_version: 1,
            enable_ttl: false,
            reserve_space: "5GB".into(),
            max_ts: MaxTsSection::default(),
        }
    }
}

impl Default for RaftstoreSection {
    fn default() -> Self {
        RaftstoreSection {
            raft_base_tick_interval: "100ms".into(),
            raft_election_timeout_ticks: 10,
            raft_min_election_timeout_ticks: 0,
            raft_max_election_timeout_ticks: 0,
            raft_heartbeat_ticks: 2,
            raft_log_gc_tick_interval: "3s".into(),
            raft_log_gc_threshold: 50,
            raft_log_gc_count_limit: 73_728,
            raft_log_gc_size_limit: "72MiB".into(),
            pd_heartbeat_tick_interval: "10s".into(),
            pd_store_heartbeat_tick_interval: "10s".into(),
            max_leader_missing_duration: "2h".into(),
            max_peer_down_duration: "10m".into(),
            split_region_check_tick_interval: "10s".into(),
            region_split_check_diff: None,
            raft_entry_max_size: "8MiB".into(),
            cmd_batch: true,
            thread_nice: 0,
            capacity: "0".into(),
        }
    }
}

impl TikvConfig {
    /// Reads a TOML file. Returns the config and the keys it did not know.
    pub fn from_file(path: &Path) -> anyhow::Result<(TikvConfig, Vec<String>)> {
        tikal_util::read_toml(path)
    }

    /// Checks values and fills derived ones (advertise addresses).
    pub fn validate(&mut self) -> anyhow::Result<()> {
        if self.storage.api_version != 1 && self.storage.api_version != 2 {
            anyhow::bail!(
                "storage.api-version must be 1 or 2, got {}",
                self.storage.api_version
            );
        }
        if self.storage.api_version == 2 && !self.storage.enable_ttl {
            anyhow::bail!(
                "storage.enable-ttl must be true in API V2 because API V2 forces to enable TTL"
            );
        }
        if self.pd.endpoints.is_empty() {
            anyhow::bail!("pd.endpoints is empty: pass --pd");
        }
        self.pd.retry()?;
        for (key, value) in &self.server.labels {
            if !tikal_util::is_label_key(key) || !tikal_util::is_label_value(value) {
                anyhow::bail!(
                    "server.labels: {key:?} = {value:?} is not a valid label (keys: letters, \
                     digits and -_./, starting and ending with a letter or digit; values: \
                     letters, digits and -_./)"
                );
            }
        }
        if self.server.advertise_addr.is_empty() {
            self.server.advertise_addr = self.server.addr.clone();
        }
        if self.server.advertise_status_addr.is_empty() {
            self.server.advertise_status_addr = self.server.status_addr.clone();
        }
        self.scheduler.policy()?;
        if self.scheduler.edf.workers <= self.scheduler.edf.high_reserve {
            anyhow::bail!("scheduler.edf.workers must exceed scheduler.edf.high-reserve");
        }
        if self.scheduler.threshold.slots == 0 {
            anyhow::bail!("scheduler.threshold.slots must be at least 1");
        }
        if self.raftstore.raft_log_gc_threshold == 0 {
            anyhow::bail!("raftstore.raft-log-gc-threshold must be at least 1");
        }
        let ticks = &self.raftstore;
        if ticks.raft_election_timeout_ticks <= ticks.raft_heartbeat_ticks {
            anyhow::bail!("raftstore.raft-election-timeout-ticks must exceed raft-heartbeat-ticks");
        }
        let min = match ticks.raft_min_election_timeout_ticks {
            0 => ticks.raft_election_timeout_ticks,
            n => n,
        };
        let max = match ticks.raft_max_election_timeout_ticks {
            0 => ticks.raft_election_timeout_ticks.saturating_mul(2),
            n => n,
        };
        if min < ticks.raft_election_timeout_ticks || max <= min {
            anyhow::bail!(
                "raftstore: need raft-election-timeout-ticks <= raft-min-election-timeout-ticks \
                 < raft-max-election-timeout-ticks (got {}, {min}, {max})",
                ticks.raft_election_timeout_ticks
            );
        }
        if ticks.raft_heartbeat_ticks == 0 {
            anyhow::bail!("raftstore.raft-heartbeat-ticks must be at least 1");
        }
        if ticks.raft_log_gc_count_limit == 0 {
            anyhow::bail!("raftstore.raft-log-gc-count-limit must be at least 1");
        }
        if parse_size(&ticks.raft_log_gc_size_limit).context("raftstore.raft-log-gc-size-limit")?
            == 0
        {
            anyhow::bail!("raftstore.raft-log-gc-size-limit must be above 0");
        }
        // Intervals and timeouts: zero would spin a loop (or panic a
        // timer); past a year, a deadline would overflow the clock.
        for (key, d, zero_ok) in [
            (
                "raftstore.raft-base-tick-interval",
                &ticks.raft_base_tick_interval,
                false,
            ),
            (
                "raftstore.pd-heartbeat-tick-interval",
                &ticks.pd_heartbeat_tick_interval,
                false,
            ),
            (
                "raftstore.pd-store-heartbeat-tick-interval",
                &ticks.pd_store_heartbeat_tick_interval,
                false,
            ),
            (
                "raftstore.raft-log-gc-tick-interval",
                &ticks.raft_log_gc_tick_interval,
                false,
            ),
            (
                "raftstore.split-region-check-tick-interval",
                &ticks.split_region_check_tick_interval,
                false,
            ),
            (
                "raftstore.max-leader-missing-duration",
                &ticks.max_leader_missing_duration,
                false,
            ),
            (
                "raftstore.max-peer-down-duration",
                &ticks.max_peer_down_duration,
                false,
            ),
            (
                "pessimistic-txn.wait-for-lock-timeout",
                &self.pessimistic_txn.wait_for_lock_timeout,
                true,
            ),
            (
                "gc.poll-safe-point-interval",
                &self.gc.poll_safe_point_interval,
                false,
            ),
            (
                "resolved-ts.advance-ts-interval",
                &self.resolved_ts.advance_ts_interval,
                false,
            ),
            ("pd.retry-interval", &self.pd.retry_interval, false),
        ] {
            let value = parse_duration(d).context(key)?;
            if value.is_zero() && !zero_ok {
                anyhow::bail!("{key} must be above 0");
            }
            if value > MAX_INTERVAL {
                anyhow::bail!("{key} must be at most a year, got {d:?}");
            }
        }
        parse_size(&self.quota.foreground_write_bandwidth)
            .context("quota.foreground-write-bandwidth")?;
        parse_size(&self.storage.reserve_space).context("storage.reserve-space")?;
        self.storage.max_ts.policy()?;
        parse_size(&self.raftstore.capacity).context("raftstore.capacity")?;
        let entry_max = parse_size(&self.raftstore.raft_entry_max_size)
            .context("raftstore.raft-entry-max-size")?;
        if entry_max == 0 {
            anyhow::bail!("raftstore.raft-entry-max-size must be above 0");
        }
        if entry_max > MAX_RAFT_ENTRY_SIZE {
            // A round's entries (up to the raftstore's 16 MiB round cap,
            // plus one entry) travel to a follower in one gRPC message,
            // which a store takes up to 64 MiB.
            anyhow::bail!(
                "raftstore.raft-entry-max-size must be at most 32MiB: a round's entries \
                 travel in one gRPC message of at most 64MiB"
            );
        }
        self.split_check()?;
        Ok(())
    }

    pub fn data_dir(&self) -> PathBuf {
        PathBuf::from(&self.storage.data_dir)
    }
}

pub use tikal_util::{parse_duration, parse_size, parse_toml};

/// Longest interval or timeout a store takes from its config.
const MAX_INTERVAL: std::time::Duration = std::time::Duration::from_secs(365 * 86400);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upstream_keys_parse_and_unknown_keys_are_reported() {
        let (cfg, unknown): (TikvConfig, _) = parse_toml(
            r#"
            [server]
            addr = "0.0.0.0:20161"
            grpc-concurrency = 3
            concurrent-recv-snap-limit = 4
            [storage]
            api-version = 1
            data-dir = "/tmp/x"
            [rocksdb]
            max-open-files = 4096
            "#,
        )
        .unwrap();
        assert_eq!(cfg.server.addr, "0.0.0.0:20161");
        assert_eq!(cfg.server.grpc_concurrency, Some(3));
        assert_eq!(cfg.server.concurrent_recv_snap_limit, 4);
        assert_eq!(cfg.server.concurrent_send_snap_limit, 32);
        assert_eq!(TikvConfig::default().server.grpc_concurrency, None);
        assert_eq!(cfg.storage.data_dir, "/tmp/x");
        assert_eq!(cfg.server.status_addr, "127.0.0.1:20180");
        assert_eq!(unknown, vec!["rocksdb".to_string()]);
    }

    #[test]
    fn values_that_would_spin_panic_or_stall_a_store_are_refused() {
        for (toml, key) in [
            (
                "[raftstore]\nraft-base-tick-interval = \"0s\"",
                "raft-base-tick-interval",
            ),
            (
                "[raftstore]\npd-heartbeat-tick-interval = \"0ms\"",
                "pd-heartbeat-tick-interval",
            ),
            (
                "[raftstore]\npd-store-heartbeat-tick-interval = \"0\"",
                "pd-store-heartbeat-tick-interval",
            ),
            (
                "[gc]\npoll-safe-point-interval = \"0s\"",
                "poll-safe-point-interval",
            ),
            (
                "[resolved-ts]\nadvance-ts-interval = \"0s\"",
                "advance-ts-interval",
            ),
            (
                "[raftstore]\nraft-base-tick-interval = \"999999h\"",
                "raft-base-tick-interval",
            ),
            (
                "[raftstore]\nraft-heartbeat-ticks = 0",
                "raft-heartbeat-ticks",
            ),
            (
                "[raftstore]\nraft-log-gc-count-limit = 0",
                "raft-log-gc-count-limit",
            ),
            (
                "[raftstore]\nraft-log-gc-size-limit = \"0\"",
                "raft-log-gc-size-limit",
            ),
            (
                "[raftstore]\nraft-entry-max-size = \"0\"",
                "raft-entry-max-size",
            ),
            ("[pd]\nretry-max-count = -2", "retry-max-count"),
        ] {
            let (mut cfg, _): (TikvConfig, _) = parse_toml(toml).unwrap();
            let err = format!("{:#}", cfg.validate().unwrap_err());
            assert!(err.contains(key), "{toml}: {err}");
        }
        // A wait for a lock may be zero (no waiting), and PD's defaults
        // are TiKV's: try every 300 ms for good.
        let (mut cfg, _): (TikvConfig, _) =
            parse_toml("[pessimistic-txn]\nwait-for-lock-timeout = \"0s\"").unwrap();
        cfg.validate().unwrap();
        let retry = cfg.pd.retry().unwrap();
        assert_eq!(retry.interval, std::time::Duration::from_millis(300));
        assert_eq!((retry.max_count, retry.log_every), (None, 10));
    }

    #[test]
    fn the_client_test_suites_split_settings_parse() {
        let (mut cfg, unknown): (TikvConfig, _) = parse_toml(
            r#"
            [coprocessor]
            region-max-keys = 10
            region-split-keys = 7
            batch-split-limit = 100
            [raftstore]
            region-split-check-diff = "1B"
            split-region-check-tick-interval = "1s"
            pd-heartbeat-tick-interval = "2s"
            raft-entry-max-size = "1MB"
            "#,
        )
        .unwrap();
        assert!(unknown.is_empty(), "{unknown:?}");
        cfg.validate().unwrap();
        let split = cfg.split_check().unwrap();
        assert_eq!(
            (
                split.region_max_keys,
                split.region_split_keys,
                split.batch_split_limit
            ),
            (10, 7, 100)
        );
        assert_eq!((split.check_diff, split.tick.as_secs()), (1, 1));
        // Upstream's defaults: max = 1.5 × split, diff = split size / 16.
        let split = TikvConfig::default().split_check().unwrap();
        assert_eq!(split, tikal_raftstore::SplitCheckConfig::default());
        cfg.coprocessor.region_max_keys = Some(3);
        assert!(cfg.validate().is_err());
    }

    #[test]
    fn store_labels_come_from_the_file_or_the_flag_and_are_checked() {
        let (mut cfg, unknown): (TikvConfig, _) =
            parse_toml("[server]\nlabels = { zone = \"z1\", host = \"h1\" }\n").unwrap();
        assert!(unknown.is_empty(), "{unknown:?}");
        cfg.validate().unwrap();
        let pairs: Vec<(&str, &str)> = (cfg.server.labels.iter())
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        assert_eq!(pairs, [("host", "h1"), ("zone", "z1")]);
        let store = crate::node::store_meta(&cfg, 0);
        let sent: Vec<(&str, &str)> = (store.labels.iter())
            .map(|l| (l.key.as_str(), l.value.as_str()))
            .collect();
        assert_eq!(sent, pairs, "sent to PD");

        let flag = parse_labels("zone=z2, rack=r1").unwrap();
        assert_eq!(flag.get("rack").map(String::as_str), Some("r1"));
        for bad in ["zone", "zone=a=b"] {
            assert!(parse_labels(bad).is_err(), "{bad}");
        }
        for (key, value) in [("-zone", "z"), ("zone", "a b"), ("", "z")] {
            cfg.server.labels = BTreeMap::from([(key.to_string(), value.to_string())]);
            let err = cfg.validate().unwrap_err();
            assert!(format!("{err:#}").contains("server.labels"), "{err:#}");
        }
    }

    #[test]
    fn writes_are_batched_into_entries_unless_cmd_batch_is_off() {
        let (cfg, _): (TikvConfig, _) =
            parse_toml("[raftstore]\nraft-entry-max-size = \"1MiB\"\n").unwrap();
        let batch = cfg.command_batch().unwrap();
        assert_eq!(
            (batch.max_commands, batch.max_bytes),
            (256, (1 << 20) * 2 / 5)
        );
        let (cfg, _): (TikvConfig, _) = parse_toml("[raftstore]\ncmd-batch = false\n").unwrap();
        let batch = cfg.command_batch().unwrap();
        assert_eq!((batch.max_commands, batch.max_bytes), (1, 0));
    }

    #[test]
    fn an_entry_limit_too_large_for_one_append_is_refused() {
        let (mut cfg, _): (TikvConfig, _) =
            parse_toml("[raftstore]\nraft-entry-max-size = \"32MiB\"\n").unwrap();
        cfg.validate().unwrap();
        cfg.raftstore.raft_entry_max_size = "33MiB".into();
        let err = cfg.validate().unwrap_err();
        assert!(format!("{err:#}").contains("at most 32MiB"), "{err:#}");
    }

    #[test]
    fn the_write_quota_is_a_size_per_second() {
        let (mut cfg, _): (TikvConfig, _) =
            parse_toml("[quota]\nforeground-write-bandwidth = \"1MB\"\n").unwrap();
        cfg.validate().unwrap();
        assert_eq!(
            parse_size(&cfg.quota.foreground_write_bandwidth).unwrap(),
            1 << 20
        );
        cfg.quota.foreground_write_bandwidth = "fast".into();
        let err = cfg.validate().unwrap_err();
        assert!(
            format!("{err:#}").contains("quota.foreground-write-bandwidth"),
            "{err:#}"
        );
    }

    #[test]
    fn the_max_ts_ceiling_takes_upstreams_keys_and_never_panics() {
        use tikal_storage::txn::InvalidMaxTsAction;
        let (mut cfg, unknown): (TikvConfig, _) = parse_toml(
            "[storage.max-ts]\nmax-drift = \"30s\"\ncache-sync-interval = \"5s\"\n\
             action-on-invalid-update = \"Panic\"\n",
        )
        .unwrap();
        assert!(unknown.is_empty(), "{unknown:?}");
        cfg.validate().unwrap();
        let (policy, every) = cfg.storage.max_ts.policy().unwrap();
        assert_eq!(every, Duration::from_secs(5));
        assert_eq!(policy.max_drift, Duration::from_secs(30));
        assert_eq!(policy.valid_for, Duration::from_secs(15));
        // Never past max-drift, where PD's time may overtake the ceiling.
        cfg.storage.max_ts.max_drift = "10s".into();
        let (policy, _) = cfg.storage.max_ts.policy().unwrap();
        assert_eq!(policy.valid_for, Duration::from_secs(10));
        cfg.storage.max_ts.max_drift = "30s".into();
        assert_eq!(
            policy.action,
            InvalidMaxTsAction::Error,
            "panic acts as error"
        );
        let (default, _) = TikvConfig::default().storage.max_ts.policy().unwrap();
        assert_eq!(default.max_drift, Duration::from_secs(60));
        assert_eq!(default.action, InvalidMaxTsAction::Error);
        cfg.storage.max_ts.action_on_invalid_update = "LOG".into();
        assert_eq!(
            cfg.storage.max_ts.policy().unwrap().0.action,
            InvalidMaxTsAction::Log
        );
        cfg.storage.max_ts.max_drift = "5s".into();
        let err = cfg.validate().unwrap_err();
        assert!(format!("{err:#}").contains("must exceed"), "{err:#}");
        cfg.storage.max_ts.max_drift = "60s".into();
        cfg.storage.max_ts.action_on_invalid_update = "ignore".into();
        let err = cfg.validate().unwrap_err();
        assert!(
            format!("{err:#}").contains("error, log or panic"),
            "{err:#}"
        );
    }
}
