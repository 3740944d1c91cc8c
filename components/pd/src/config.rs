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
    pub max_store_down_time: String,
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
        self.max_store_down_time()?;
        if self.replication.max_replicas == 0 {
            bail!("replication.max-replicas must be at least 1");
        }
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

    pub fn max_store_down_time(&self) -> anyhow::Result<Duration> {
        tikal_util::parse_duration(&self.schedule.max_store_down_time)
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
        assert_eq!(
            cfg.max_store_down_time().unwrap(),
            Duration::from_secs(1800)
        );

        cfg.initial_cluster = "other=http://127.0.0.1:2380".into();
        assert!(cfg.validate().is_err());
    }
}
