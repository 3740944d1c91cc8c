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
    /// An operator not finished this long after it was made is dropped, and
    /// the replica checker plans afresh. Ours: upstream has no such key and
    /// bounds each step instead (adding a peer: 10 minutes).
    pub operator_timeout: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, rename_all = "kebab-case")]
pub struct ReplicationSection {
    pub max_replicas: u32,
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
        }
    }
}

impl Default for ReplicationSection {
    fn default() -> Self {
        ReplicationSection { max_replicas: 3 }
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
        let duration = |key: &str, v: &str| -> anyhow::Result<Duration> {
            let d = tikal_util::parse_duration(v).with_context(|| format!("schedule.{key}"))?;
            if d.is_zero() {
                bail!("schedule.{key} must be above zero");
            }
            Ok(d)
        };
        if self.replication.max_replicas == 0 {
            bail!("replication.max-replicas must be at least 1");
        }
        Ok(ScheduleOptions {
            max_replicas: self.replication.max_replicas,
            max_store_down_time: duration(
                "max-store-down-time",
                &self.schedule.max_store_down_time,
            )?,
            operator_timeout: duration("operator-timeout", &self.schedule.operator_timeout)?,
        })
    }
}

/// What the cluster schedules by: `[replication] max-replicas`,
/// `[schedule] max-store-down-time` and `operator-timeout`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ScheduleOptions {
    pub max_replicas: u32,
    pub max_store_down_time: Duration,
    pub operator_timeout: Duration,
}

impl Default for ScheduleOptions {
    fn default() -> Self {
        // Upstream's defaults, and ours for the operator timeout.
        ScheduleOptions {
            max_replicas: 3,
            max_store_down_time: Duration::from_secs(30 * 60),
            operator_timeout: Duration::from_secs(10 * 60),
        }
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
            [schedule]
            max-store-down-time = "3s"
            operator-timeout = "1500ms"
        "#;
        let (mut cfg, unknown): (PdConfig, _) = tikal_util::parse_toml(text).unwrap();
        assert!(unknown.is_empty(), "{unknown:?}");
        cfg.validate().unwrap();
        let opts = cfg.schedule_options().unwrap();
        assert_eq!(opts.max_replicas, 5);
        assert_eq!(opts.max_store_down_time, Duration::from_secs(3));
        assert_eq!(opts.operator_timeout, Duration::from_millis(1500));

        for bad in [
            "[replication]\nmax-replicas = 0",
            "[schedule]\nmax-store-down-time = \"soon\"",
            "[schedule]\noperator-timeout = \"0s\"",
        ] {
            let (mut cfg, _): (PdConfig, _) = tikal_util::parse_toml(bad).unwrap();
            assert!(cfg.validate().is_err(), "{bad}");
        }
    }
}
