//! `pd-server` configuration: PD's flag names and TOML keys.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context as _};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, rename_all = "kebab-case")]
pub struct PdConfig {
    pub name: String,
    pub data_dir: String,
    pub client_urls: String,
    pub peer_urls: String,
    pub advertise_client_urls: String,
    pub advertise_peer_urls: String,
    pub initial_cluster: String,
    pub log_file: String,
    pub schedule: ScheduleSection,
    pub replication: ReplicationSection,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, rename_all = "kebab-case")]
pub struct ScheduleSection {
    /// A store silent longer than this is Down and its replicas are
    /// replaced elsewhere (upstream's key and default, 30m).
    pub max_store_down_time: String,
    /// The base of an operator step's wait: adding a learner may take this
    /// and 6 s a MiB of the region, a role or leadership change 60 s (or
    /// this, if shorter) and 0.6 s a MiB, a merge ten of those, as
    /// upstream bounds each step (its slow step's base is 10 minutes). A
    /// step past its wait drops the operator, and the checkers plan
    /// afresh. Ours: upstream has no such key.
    pub operator_timeout: String,
    /// How many operators of a kind may run at once (upstream's keys and
    /// defaults): leader transfers, peer moves, replica repairs, merges,
    /// hot-region moves.
    pub leader_schedule_limit: u64,
    pub region_schedule_limit: u64,
    pub replica_schedule_limit: u64,
    pub merge_schedule_limit: u64,
    pub hot_region_schedule_limit: u64,
    /// A region below both (MiB, keys) is merged into a neighbour.
    pub max_merge_region_size: u64,
    pub max_merge_region_keys: u64,
    /// No merge of a region split this recently, nor by a PD started this
    /// recently.
    pub split_merge_interval: String,
    /// A store with less than (1 − this) of its capacity available takes no
    /// new replicas (upstream's key and default, 0.8).
    pub low_space_ratio: f64,
    /// Balance-region moves a replica only onto a store with at least
    /// (1 − this) of its capacity available (upstream's key and default,
    /// 0.7); below `low-space-ratio`.
    pub high_space_ratio: f64,
    /// A store sending or receiving more snapshots than this neither takes
    /// a new replica nor gives one up to balance-region (upstream's key
    /// and default, 64).
    pub max_snapshot_count: u64,
    /// A store with more regions than this whose peer there is pending
    /// (behind the leader's log) takes no new replica; 0 turns the check
    /// off (upstream's key and default, 64).
    pub max_pending_peer_count: u64,
    /// The replica checker's rules, each on unless switched off
    /// (upstream's keys): replace (or remove) replicas on Down stores, on
    /// Offline stores; add replicas up to `max-replicas`; remove those
    /// over it; move one to a better location by labels.
    pub enable_remove_down_replica: bool,
    pub enable_replace_offline_replica: bool,
    pub enable_make_up_replica: bool,
    pub enable_remove_extra_replica: bool,
    pub enable_location_replacement: bool,
    /// On, PD plans nothing by itself: no checker or scheduler makes an
    /// operator and stores' split requests are refused; running operators
    /// go on, and operators asked for by hand are still made (upstream's
    /// key, off by default).
    pub halt_scheduling: bool,
    /// What balance-leader evens out: `count` (leaders, upstream's
    /// default) or `size` (the sizes of the regions led).
    pub leader_schedule_policy: String,
    /// On, a small region merges only into the region after it (upstream's
    /// key, off by default).
    pub enable_one_way_merge: bool,
    /// Off, stores' split requests (`AskBatchSplit`, also behind a
    /// client's `SplitRegion`) are refused (upstream's key, on by
    /// default).
    pub enable_tikv_split_region: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, rename_all = "kebab-case")]
pub struct ReplicationSection {
    pub max_replicas: u32,
    /// The store labels that say where a store is, outermost first (e.g.
    /// `["zone", "host"]`): PD keeps a region's replicas as far apart as
    /// they allow (see `crate::placement`). Upstream's key; empty by
    /// default.
    pub location_labels: Vec<String>,
    /// One of `location-labels`, or empty: no two replicas of a region are
    /// placed where the labels down to this one are all equal, even if
    /// that leaves the region short of replicas. Upstream's key.
    pub isolation_level: String,
}

impl Default for PdConfig {
    fn default() -> Self {
        PdConfig {
            name: "pd".into(),
            data_dir: String::new(),
            client_urls: "http://127.0.0.1:2379".into(),
            peer_urls: "http://127.0.0.1:2380".into(),
            advertise_client_urls: String::new(),
            advertise_peer_urls: String::new(),
            initial_cluster: String::new(),
            log_file: String::new(),
            schedule: ScheduleSection::default(),
            replication: ReplicationSection::default(),
        }
    }
}

impl Default for ScheduleSection {
    fn default() -> Self {
        ScheduleSection {
            max_store_down_time: "30m".into(),
            operator_timeout: "10m".into(),
            leader_schedule_limit: 4,
            region_schedule_limit: 2048,
            replica_schedule_limit: 64,
            merge_schedule_limit: 8,
            hot_region_schedule_limit: 4,
            max_merge_region_size: 20,
            max_merge_region_keys: 200_000,
            split_merge_interval: "1h".into(),
            low_space_ratio: 0.8,
            high_space_ratio: 0.7,
            max_snapshot_count: 64,
            max_pending_peer_count: 64,
            enable_remove_down_replica: true,
            enable_replace_offline_replica: true,
            enable_make_up_replica: true,
            enable_remove_extra_replica: true,
            enable_location_replacement: true,
            halt_scheduling: false,
            leader_schedule_policy: "count".into(),
            enable_one_way_merge: false,
            enable_tikv_split_region: true,
        }
    }
}

impl Default for ReplicationSection {
    fn default() -> Self {
        ReplicationSection {
            max_replicas: 3,
            location_labels: vec![],
            isolation_level: String::new(),
        }
    }
}

impl PdConfig {
    pub fn from_file(path: &std::path::Path) -> anyhow::Result<(PdConfig, Vec<String>)> {
        tikal_util::read_toml(path)
    }

    /// Fills defaults that depend on other settings and checks the rest.
    pub fn validate(&mut self) -> anyhow::Result<()> {
        if self.data_dir.is_empty() {
            self.data_dir = format!("default.{}", self.name);
        }
        if self.advertise_client_urls.is_empty() {
            self.advertise_client_urls = self.client_urls.clone();
        }
        if self.advertise_peer_urls.is_empty() {
            self.advertise_peer_urls = self.peer_urls.clone();
        }
        if self.initial_cluster.is_empty() {
            self.initial_cluster = format!("{}={}", self.name, self.advertise_peer_urls);
        }
        let members: Vec<&str> = self.initial_cluster.split(',').collect();
        let me = members
            .iter()
            .find(|m| m.split('=').next() == Some(self.name.as_str()));
        if me.is_none() {
            bail!(
                "--initial-cluster {:?} has no member named {:?}",
                self.initial_cluster,
                self.name
            );
        }
        if members.len() > 1 {
            bail!(
                "a PD group of {} members is not supported yet; run one PD",
                members.len()
            );
        }
        self.listen_addr()?;
        self.schedule_options()?;
        Ok(())
    }

    pub fn data_dir(&self) -> PathBuf {
        PathBuf::from(&self.data_dir)
    }

    /// The socket address of the first client URL.
    pub fn listen_addr(&self) -> anyhow::Result<std::net::SocketAddr> {
        let url = first_url(&self.client_urls);
        let hostport = url
            .strip_prefix("http://")
            .or_else(|| url.strip_prefix("https://"))
            .unwrap_or(url);
        use std::net::ToSocketAddrs;
        hostport
            .to_socket_addrs()
            .ok()
            .and_then(|mut a| a.next())
            .with_context(|| format!("invalid --client-urls {:?}", self.client_urls))
    }

    pub fn client_urls(&self) -> Vec<String> {
        split_urls(&self.advertise_client_urls)
    }

    pub fn peer_urls(&self) -> Vec<String> {
        split_urls(&self.advertise_peer_urls)
    }

    /// The settings the cluster schedules by, checked.
    pub fn schedule_options(&self) -> anyhow::Result<ScheduleOptions> {
        let sc = &self.schedule;
        let mut opts = ScheduleOptions {
            max_replicas: self.replication.max_replicas,
            leader_schedule_limit: sc.leader_schedule_limit,
            region_schedule_limit: sc.region_schedule_limit,
            replica_schedule_limit: sc.replica_schedule_limit,
            merge_schedule_limit: sc.merge_schedule_limit,
            hot_region_schedule_limit: sc.hot_region_schedule_limit,
            max_merge_region_size: sc.max_merge_region_size,
            max_merge_region_keys: sc.max_merge_region_keys,
            max_snapshot_count: sc.max_snapshot_count,
            max_pending_peer_count: sc.max_pending_peer_count,
            repairs: Repairs {
                remove_down: sc.enable_remove_down_replica,
                replace_offline: sc.enable_replace_offline_replica,
                make_up: sc.enable_make_up_replica,
                remove_extra: sc.enable_remove_extra_replica,
                location_replacement: sc.enable_location_replacement,
            },
            halt_scheduling: sc.halt_scheduling,
            one_way_merge: sc.enable_one_way_merge,
            tikv_split: sc.enable_tikv_split_region,
            ..ScheduleOptions::default()
        };
        let labels = serde_json::json!(self.replication.location_labels.join(","));
        opts.set("location-labels", &labels)
            .map_err(|e| anyhow::anyhow!("replication.{e}"))?;
        opts.set(
            "leader-schedule-policy",
            &serde_json::json!(sc.leader_schedule_policy),
        )
        .map_err(|e| anyhow::anyhow!("schedule.{e}"))?;
        opts.set(
            "isolation-level",
            &serde_json::json!(self.replication.isolation_level),
        )
        .map_err(|e| anyhow::anyhow!("replication.{e}"))?;
        for (key, ratio) in [
            ("low-space-ratio", sc.low_space_ratio),
            ("high-space-ratio", sc.high_space_ratio),
        ] {
            opts.set(key, &serde_json::json!(ratio))
                .map_err(|e| anyhow::anyhow!("schedule.{e}"))?;
        }
        // The checks of online changes, so a file and POST /config agree.
        let durations = [
            ("max-store-down-time", &sc.max_store_down_time),
            ("operator-timeout", &sc.operator_timeout),
            ("split-merge-interval", &sc.split_merge_interval),
        ];
        for (key, text) in durations {
            let d = tikal_util::parse_duration(text).with_context(|| format!("schedule.{key}"))?;
            opts.set_duration(key, d)
                .map_err(|e| anyhow::anyhow!("schedule.{key}: {e}"))?;
        }
        if opts.max_replicas == 0 {
            bail!("replication.max-replicas must be at least 1");
        }
        opts.check().map_err(|e| anyhow::anyhow!("schedule: {e}"))?;
        Ok(opts)
    }
}

/// What the cluster schedules by: `[replication] max-replicas` and the
/// `[schedule]` settings, typed. Changed online by `POST /config`
/// ([`ScheduleOptions::set`]); shown by `GET /config` ([`Self::schedule_json`]).
#[derive(Debug, Clone, PartialEq)]
pub struct ScheduleOptions {
    pub max_replicas: u32,
    /// `[replication] location-labels`, each a valid label key.
    pub location_labels: Vec<String>,
    /// `[replication] isolation-level`: empty or one of `location_labels`
    /// (see [`ScheduleOptions::check`]).
    pub isolation_level: String,
    pub max_store_down_time: Duration,
    pub operator_timeout: Duration,
    pub leader_schedule_limit: u64,
    pub region_schedule_limit: u64,
    pub replica_schedule_limit: u64,
    pub merge_schedule_limit: u64,
    pub hot_region_schedule_limit: u64,
    /// MiB, as upstream.
    pub max_merge_region_size: u64,
    pub max_merge_region_keys: u64,
    pub split_merge_interval: Duration,
    /// In (0, 1); see [`crate::stores::StoreInfo::is_low_space`].
    pub low_space_ratio: f64,
    /// In (0, 1) and below `low_space_ratio`: the room balance-region's
    /// targets must have.
    pub high_space_ratio: f64,
    /// See [`ScheduleSection::max_snapshot_count`] and
    /// [`crate::checker::ClusterView::takes_replica_now`].
    pub max_snapshot_count: u64,
    /// 0: no limit.
    pub max_pending_peer_count: u64,
    /// Which of the replica checker's rules run.
    pub repairs: Repairs,
    /// See [`ScheduleSection::halt_scheduling`].
    pub halt_scheduling: bool,
    pub leader_schedule_policy: LeaderPolicy,
    /// See [`ScheduleSection::enable_one_way_merge`].
    pub one_way_merge: bool,
    /// See [`ScheduleSection::enable_tikv_split_region`].
    pub tikv_split: bool,
}

/// What balance-leader evens out between stores (`leader-schedule-policy`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LeaderPolicy {
    /// The leaders each store holds.
    #[default]
    Count,
    /// The sizes of the regions each store leads.
    Size,
}

impl LeaderPolicy {
    pub fn name(self) -> &'static str {
        match self {
            LeaderPolicy::Count => "count",
            LeaderPolicy::Size => "size",
        }
    }
}

/// The replica checker's rules that can be switched off (upstream's
/// `enable-*` keys; all on by default). Off, a rule plans nothing: a
/// replica on a Down store stays (`enable-remove-down-replica`), an
/// Offline store keeps its replicas and never becomes Tombstone
/// (`enable-replace-offline-replica`), and so on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Repairs {
    pub remove_down: bool,
    pub replace_offline: bool,
    pub make_up: bool,
    pub remove_extra: bool,
    pub location_replacement: bool,
}

impl Default for Repairs {
    fn default() -> Self {
        Repairs {
            remove_down: true,
            replace_offline: true,
            make_up: true,
            remove_extra: true,
            location_replacement: true,
        }
    }
}

impl Repairs {
    /// Each switch by its upstream key.
    fn switches(&mut self) -> [(&'static str, &mut bool); 5] {
        [
            ("enable-remove-down-replica", &mut self.remove_down),
            ("enable-replace-offline-replica", &mut self.replace_offline),
            ("enable-make-up-replica", &mut self.make_up),
            ("enable-remove-extra-replica", &mut self.remove_extra),
            (
                "enable-location-replacement",
                &mut self.location_replacement,
            ),
        ]
    }
}

impl Default for ScheduleOptions {
    fn default() -> Self {
        // Upstream's defaults, and ours for the operator timeout.
        ScheduleOptions {
            max_replicas: 3,
            location_labels: vec![],
            isolation_level: String::new(),
            max_store_down_time: Duration::from_secs(30 * 60),
            operator_timeout: Duration::from_secs(10 * 60),
            leader_schedule_limit: 4,
            region_schedule_limit: 2048,
            replica_schedule_limit: 64,
            merge_schedule_limit: 8,
            hot_region_schedule_limit: 4,
            max_merge_region_size: 20,
            max_merge_region_keys: 200_000,
            split_merge_interval: Duration::from_secs(3600),
            low_space_ratio: 0.8,
            high_space_ratio: 0.7,
            max_snapshot_count: 64,
            max_pending_peer_count: 64,
            repairs: Repairs::default(),
            halt_scheduling: false,
            leader_schedule_policy: LeaderPolicy::Count,
            one_way_merge: false,
            tikv_split: true,
        }
    }
}

impl ScheduleOptions {
    /// Sets one setting by its upstream key (`max-merge-region-keys`, or
    /// with its section, `schedule.max-merge-region-keys`) from a JSON
    /// value: numbers for counts and sizes, Go duration strings (`"1h0m0s"`,
    /// `"1s"`) for durations. Nothing changes on an error.
    pub fn set(&mut self, key: &str, value: &serde_json::Value) -> Result<(), String> {
        let key = key
            .strip_prefix("schedule.")
            .or_else(|| key.strip_prefix("replication."))
            .unwrap_or(key);
        // pd-ctl sends "true" / "false" as strings.
        let boolean = || match value {
            serde_json::Value::Bool(b) => Ok(*b),
            serde_json::Value::String(s) if s.eq_ignore_ascii_case("true") => Ok(true),
            serde_json::Value::String(s) if s.eq_ignore_ascii_case("false") => Ok(false),
            _ => Err(format!("{key} must be true or false, not {value}")),
        };
        let number = || {
            value
                .as_u64()
                .or_else(|| value.as_str().and_then(|s| s.trim().parse().ok()))
                .ok_or_else(|| format!("{key} must be a non-negative integer, not {value}"))
        };
        match key {
            "max-replicas" => {
                let n = u32::try_from(number()?)
                    .ok()
                    .filter(|n| *n > 0)
                    .ok_or_else(|| format!("{key} must be between 1 and {}", u32::MAX))?;
                self.max_replicas = n;
            }
            "location-labels" => {
                // Upstream's JSON form: one string, comma-separated.
                let text = value.as_str().ok_or_else(|| {
                    format!("{key} must be a string of comma-separated labels, not {value}")
                })?;
                let labels: Vec<String> = (text.split(','))
                    .map(|l| l.trim().to_string())
                    .filter(|l| !l.is_empty())
                    .collect();
                if let Some(bad) = labels.iter().find(|l| !tikal_util::is_label_key(l)) {
                    return Err(format!("{key}: {bad:?} is not a valid label key"));
                }
                self.location_labels = labels;
            }
            "isolation-level" => {
                let level = value
                    .as_str()
                    .ok_or_else(|| format!("{key} must be a string, not {value}"))?;
                self.isolation_level = level.trim().to_string();
            }
            "leader-schedule-limit" => self.leader_schedule_limit = number()?,
            "region-schedule-limit" => self.region_schedule_limit = number()?,
            "replica-schedule-limit" => self.replica_schedule_limit = number()?,
            "merge-schedule-limit" => self.merge_schedule_limit = number()?,
            "hot-region-schedule-limit" => self.hot_region_schedule_limit = number()?,
            "max-merge-region-size" => self.max_merge_region_size = number()?,
            "max-merge-region-keys" => self.max_merge_region_keys = number()?,
            "max-snapshot-count" => self.max_snapshot_count = number()?,
            "max-pending-peer-count" => self.max_pending_peer_count = number()?,
            "halt-scheduling" => self.halt_scheduling = boolean()?,
            "enable-one-way-merge" => self.one_way_merge = boolean()?,
            "enable-tikv-split-region" => self.tikv_split = boolean()?,
            "leader-schedule-policy" => {
                // Upstream takes either case.
                let name = value.as_str().map(|s| s.trim().to_ascii_lowercase());
                self.leader_schedule_policy = match name.as_deref() {
                    Some("count") => LeaderPolicy::Count,
                    Some("size") => LeaderPolicy::Size,
                    _ => return Err(format!("{key} must be \"count\" or \"size\", not {value}")),
                };
            }
            "low-space-ratio" | "high-space-ratio" => {
                let r = value
                    .as_f64()
                    .or_else(|| value.as_str().and_then(|s| s.trim().parse().ok()))
                    .filter(|r| *r > 0.0 && *r < 1.0)
                    .ok_or_else(|| format!("{key} must be a number in (0, 1), not {value}"))?;
                match key {
                    "low-space-ratio" => self.low_space_ratio = r,
                    _ => self.high_space_ratio = r,
                }
            }
            "max-store-down-time" | "operator-timeout" | "split-merge-interval" => {
                let text = value
                    .as_str()
                    .ok_or_else(|| format!("{key} must be a duration string, not {value}"))?;
                let d = crate::format::parse_go_duration(text)?;
                self.set_duration(key, d)?;
            }
            _ => {
                let mut switches = self.repairs.switches();
                let Some((_, on)) = switches.iter_mut().find(|(k, _)| *k == key) else {
                    return Err(format!("config item {key} not found"));
                };
                **on = boolean()?;
            }
        }
        Ok(())
    }

    /// What must hold between settings, once a change's keys are all set
    /// (a change may move both space ratios at once).
    pub fn check(&self) -> Result<(), String> {
        let level = &self.isolation_level;
        if !level.is_empty() && !self.location_labels.contains(level) {
            return Err("isolation-level must be one of location-labels or empty".into());
        }
        if self.low_space_ratio <= self.high_space_ratio {
            return Err(format!(
                "low-space-ratio ({}) must be above high-space-ratio ({})",
                self.low_space_ratio, self.high_space_ratio
            ));
        }
        Ok(())
    }

    fn set_duration(&mut self, key: &str, d: Duration) -> Result<(), String> {
        // A zero split-merge-interval means "merge at once"; the others
        // must leave stores and operators some time.
        if d.is_zero() && key != "split-merge-interval" {
            return Err(format!("{key} must be above zero"));
        }
        match key {
            "max-store-down-time" => self.max_store_down_time = d,
            "operator-timeout" => self.operator_timeout = d,
            "split-merge-interval" => self.split_merge_interval = d,
            _ => return Err(format!("config item {key} not found")),
        }
        Ok(())
    }

    /// The `schedule` object of `GET /config`, with upstream's keys.
    pub fn schedule_json(&self) -> serde_json::Value {
        use crate::format::go_duration;
        let mut json = serde_json::json!({
            "max-store-down-time": go_duration(self.max_store_down_time),
            "operator-timeout": go_duration(self.operator_timeout),
            "leader-schedule-limit": self.leader_schedule_limit,
            "region-schedule-limit": self.region_schedule_limit,
            "replica-schedule-limit": self.replica_schedule_limit,
            "merge-schedule-limit": self.merge_schedule_limit,
            "hot-region-schedule-limit": self.hot_region_schedule_limit,
            "max-merge-region-size": self.max_merge_region_size,
            "max-merge-region-keys": self.max_merge_region_keys,
            "split-merge-interval": go_duration(self.split_merge_interval),
            "low-space-ratio": self.low_space_ratio,
            "high-space-ratio": self.high_space_ratio,
            "max-snapshot-count": self.max_snapshot_count,
            "max-pending-peer-count": self.max_pending_peer_count,
            "leader-schedule-policy": self.leader_schedule_policy.name(),
        });
        // Switches as upstream shows them: strings; `halt-scheduling` only
        // when on.
        let mut repairs = self.repairs;
        for (key, on) in repairs.switches() {
            json[key] = serde_json::json!(on.to_string());
        }
        json["enable-one-way-merge"] = serde_json::json!(self.one_way_merge.to_string());
        json["enable-tikv-split-region"] = serde_json::json!(self.tikv_split.to_string());
        if self.halt_scheduling {
            json["halt-scheduling"] = serde_json::json!("true");
        }
        json
    }

    /// The `replication` object of `GET /config`.
    pub fn replication_json(&self) -> serde_json::Value {
        serde_json::json!({
            "max-replicas": self.max_replicas,
            "location-labels": self.location_labels.join(","),
            "isolation-level": self.isolation_level,
        })
    }
}

fn first_url(urls: &str) -> &str {
    urls.split(',').next().unwrap_or("").trim()
}

fn split_urls(urls: &str) -> Vec<String> {
    urls.split(',')
        .map(|u| u.trim().to_string())
        .filter(|u| !u.is_empty())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seed_flags_validate_and_derive_defaults() {
        let mut cfg = PdConfig {
            name: "pd".into(),
            data_dir: "pd-data".into(),
            client_urls: "http://127.0.0.1:2379".into(),
            peer_urls: "http://127.0.0.1:2380".into(),
            initial_cluster: "pd=http://127.0.0.1:2380".into(),
            ..Default::default()
        };
        cfg.validate().unwrap();
        assert_eq!(cfg.listen_addr().unwrap().port(), 2379);
        assert_eq!(cfg.client_urls(), vec!["http://127.0.0.1:2379".to_string()]);
        assert_eq!(cfg.schedule_options().unwrap(), ScheduleOptions::default());

        cfg.initial_cluster = "other=http://127.0.0.1:2380".into();
        assert!(cfg.validate().is_err());
    }

    #[test]
    fn schedule_keys_parse_and_are_checked() {
        let text = r#"
            [replication]
            max-replicas = 5
            location-labels = ["zone", "host"]
            [schedule]
            max-store-down-time = "3s"
            operator-timeout = "1500ms"
            leader-schedule-limit = 7
            max-merge-region-size = 1
            max-merge-region-keys = 10
            split-merge-interval = "0s"
            enable-remove-down-replica = false
            max-pending-peer-count = 0
            max-snapshot-count = 5
            halt-scheduling = true
            leader-schedule-policy = "size"
            enable-one-way-merge = true
            enable-tikv-split-region = false
        "#;
        let (mut cfg, unknown): (PdConfig, _) = tikal_util::parse_toml(text).unwrap();
        assert!(unknown.is_empty(), "{unknown:?}");
        cfg.validate().unwrap();
        let opts = cfg.schedule_options().unwrap();
        assert_eq!(opts.max_replicas, 5);
        assert_eq!(opts.location_labels, ["zone", "host"]);
        assert_eq!(
            opts.replication_json(),
            serde_json::json!({
                "max-replicas": 5,
                "location-labels": "zone,host",
                "isolation-level": "",
            })
        );
        assert_eq!(opts.max_store_down_time, Duration::from_secs(3));
        assert_eq!(opts.operator_timeout, Duration::from_millis(1500));
        assert_eq!(opts.leader_schedule_limit, 7);
        assert_eq!(opts.region_schedule_limit, 2048, "upstream default");
        assert_eq!(
            (opts.max_merge_region_size, opts.max_merge_region_keys),
            (1, 10)
        );
        assert_eq!(opts.split_merge_interval, Duration::ZERO);
        let off = Repairs {
            remove_down: false,
            ..Repairs::default()
        };
        assert_eq!(opts.repairs, off);
        // Switches show as upstream's strings; halt-scheduling only when on.
        assert_eq!(opts.schedule_json()["enable-remove-down-replica"], "false");
        assert_eq!(opts.schedule_json()["enable-make-up-replica"], "true");
        assert!(opts.halt_scheduling);
        assert_eq!(opts.leader_schedule_policy, LeaderPolicy::Size);
        assert!(opts.one_way_merge && !opts.tikv_split);
        assert_eq!(opts.schedule_json()["enable-one-way-merge"], "true");
        assert_eq!(opts.schedule_json()["enable-tikv-split-region"], "false");
        let defaults = ScheduleOptions::default();
        assert!(
            !defaults.one_way_merge && defaults.tikv_split,
            "upstream's defaults"
        );
        assert_eq!(opts.schedule_json()["leader-schedule-policy"], "size");
        let json = ScheduleOptions::default().schedule_json();
        assert_eq!(
            json["leader-schedule-policy"], "count",
            "upstream's default"
        );
        assert_eq!(opts.schedule_json()["halt-scheduling"], "true");
        assert!(!ScheduleOptions::default().halt_scheduling);
        let json = ScheduleOptions::default().schedule_json();
        assert!(json.get("halt-scheduling").is_none(), "{json}");
        assert_eq!(opts.max_pending_peer_count, 0, "0 turns the check off");
        assert_eq!(opts.max_snapshot_count, 5);
        assert_eq!(opts.schedule_json()["max-snapshot-count"], 5);
        assert_eq!(opts.schedule_json()["max-pending-peer-count"], 0);
        let defaults = ScheduleOptions::default();
        assert_eq!(
            (defaults.max_snapshot_count, defaults.max_pending_peer_count),
            (64, 64),
            "upstream's defaults"
        );
        let mut online = opts.clone();
        online
            .set("schedule.max-snapshot-count", &serde_json::json!(3))
            .unwrap();
        online
            .set("max-pending-peer-count", &serde_json::json!("16"))
            .unwrap();
        assert_eq!(
            (online.max_snapshot_count, online.max_pending_peer_count),
            (3, 16)
        );
        assert!(online
            .set("max-snapshot-count", &serde_json::json!(-1))
            .is_err());
        assert_eq!(online.max_snapshot_count, 3, "unchanged");
        online
            .set("schedule.halt-scheduling", &serde_json::json!("false"))
            .unwrap();
        assert!(!online.halt_scheduling);
        online
            .set("halt-scheduling", &serde_json::json!(true))
            .unwrap();
        assert!(online.halt_scheduling);
        assert!(online
            .set("halt-scheduling", &serde_json::json!("soon"))
            .is_err());
        assert!(online.halt_scheduling, "unchanged");
        online
            .set("leader-schedule-policy", &serde_json::json!("Count"))
            .unwrap();
        assert_eq!(online.leader_schedule_policy, LeaderPolicy::Count);
        assert!(online
            .set("leader-schedule-policy", &serde_json::json!("speed"))
            .is_err());
        assert_eq!(online.leader_schedule_policy, LeaderPolicy::Count);

        for bad in [
            "[replication]\nmax-replicas = 0",
            "[schedule]\nmax-store-down-time = \"soon\"",
            "[schedule]\noperator-timeout = \"0s\"",
            "[schedule]\nhigh-space-ratio = 0.8",
            "[schedule]\nlow-space-ratio = 0.6",
            "[schedule]\nleader-schedule-policy = \"speed\"",
            "[replication]\nlocation-labels = [\"zone\", \"-host\"]",
            "[replication]\nlocation-labels = [\"zone\"]\nisolation-level = \"host\"",
        ] {
            let (mut cfg, _): (PdConfig, _) = tikal_util::parse_toml(bad).unwrap();
            assert!(cfg.validate().is_err(), "{bad}");
        }
    }

    #[test]
    fn online_changes_take_upstream_keys_and_refuse_bad_values() {
        let mut o = ScheduleOptions::default();
        // Location labels come as upstream's one comma-separated string.
        o.set("location-labels", &serde_json::json!("zone, host"))
            .unwrap();
        assert_eq!(o.location_labels, ["zone", "host"]);
        for bad in [serde_json::json!(["zone"]), serde_json::json!("zone,a b")] {
            assert!(o.set("replication.location-labels", &bad).is_err(), "{bad}");
        }
        assert_eq!(o.location_labels, ["zone", "host"], "unchanged");
        // The isolation level must be one of them, checked once a change's
        // keys are all set.
        o.set("isolation-level", &serde_json::json!("zone"))
            .unwrap();
        o.check().unwrap();
        o.set("isolation-level", &serde_json::json!("rack"))
            .unwrap();
        let err = o.check().unwrap_err();
        assert_eq!(
            err,
            "isolation-level must be one of location-labels or empty"
        );
        o.set("isolation-level", &serde_json::json!("")).unwrap();
        o.set("location-labels", &serde_json::json!("")).unwrap();
        assert!(o.location_labels.is_empty());
        o.check().unwrap();
        o.set("max-merge-region-keys", &serde_json::json!(10))
            .unwrap();
        o.set("schedule.split-merge-interval", &serde_json::json!("1s"))
            .unwrap();
        o.set("replication.max-replicas", &serde_json::json!(5))
            .unwrap();
        assert_eq!(o.max_merge_region_keys, 10);
        assert_eq!(o.split_merge_interval, Duration::from_secs(1));
        assert_eq!(o.max_replicas, 5);
        // Switches: JSON booleans, or pd-ctl's "true" / "false".
        o.set("enable-make-up-replica", &serde_json::json!(false))
            .unwrap();
        o.set(
            "schedule.enable-location-replacement",
            &serde_json::json!("False"),
        )
        .unwrap();
        assert!(!o.repairs.make_up && !o.repairs.location_replacement);
        o.set("enable-make-up-replica", &serde_json::json!("true"))
            .unwrap();
        assert!(o.repairs.make_up);
        let before = o.clone();
        for (key, value) in [
            ("max-merge-region-keys", serde_json::json!(-1)),
            ("max-merge-region-keys", serde_json::json!("many")),
            ("split-merge-interval", serde_json::json!(5)),
            ("max-store-down-time", serde_json::json!("0s")),
            ("max-replicas", serde_json::json!(0)),
            ("no-such-key", serde_json::json!(1)),
            ("enable-make-up-replica", serde_json::json!(0)),
            ("enable-make-up-replica", serde_json::json!("yes")),
        ] {
            assert!(o.set(key, &value).is_err(), "{key} = {value}");
        }
        assert_eq!(o, before);
    }
}
