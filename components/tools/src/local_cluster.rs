//! A local cluster of real `pd-server` and `tikv-server` processes: what
//! `tikal playground` runs and what every end-to-end test starts.
//!
//! Processes log to `<data dir>/logs/`. Readiness is observed, never
//! assumed: [`LocalCluster::wait_ready`] polls PD's HTTP API until every
//! store is Up and every region has a leader, with a deadline.

use std::fs::File;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context as _};
use serde_json::Value;

/// Where and how to run a cluster.
#[derive(Debug, Clone)]
pub struct ClusterSpec {
    /// Directory holding the `pd-server` and `tikv-server` binaries.
    pub bin_dir: PathBuf,
    pub data_dir: PathBuf,
    pub host: String,
    /// 0 = pick a free port.
    pub pd_port: u16,
    pub stores: usize,
    /// First store's gRPC and status ports, the next stores count up from
    /// there; 0 = pick free ports.
    pub store_port: u16,
    pub status_port: u16,
    /// Extra TOML for every store (written to a config file).
    pub store_config: String,
    /// Extra TOML for PD.
    pub pd_config: String,
}

impl ClusterSpec {
    /// Free loopback ports, `stores` stores, data under `data_dir`.
    pub fn for_test(bin_dir: PathBuf, data_dir: PathBuf, stores: usize) -> ClusterSpec {
        ClusterSpec {
            bin_dir,
            data_dir,
            host: "127.0.0.1".into(),
            pd_port: 0,
            stores,
            store_port: 0,
            status_port: 0,
            store_config: String::new(),
            pd_config: String::new(),
        }
    }
}

struct Node {
    name: String,
    args: Vec<String>,
    binary: PathBuf,
    /// Working directory (stores write their scheduler trace there).
    cwd: PathBuf,
    child: Option<Child>,
}

pub struct LocalCluster {
    pub spec: ClusterSpec,
    /// host:port clients pass to RawClient::new.
    pub pd_addr: String,
    pub store_addrs: Vec<String>,
    pub status_addrs: Vec<String>,
    pd: Node,
    stores: Vec<Node>,
    http: reqwest::Client,
}

/// A loopback port nobody listens on now. Ports come from below the
/// kernel's ephemeral range (32768+ on Linux), so outgoing connections
/// cannot grab them between this check and the server's bind, and one
/// process never hands out the same port twice.
pub fn free_port() -> anyhow::Result<u16> {
    use std::collections::HashSet;
    use std::sync::Mutex;
    static GIVEN: Mutex<Option<HashSet<u16>>> = Mutex::new(None);
    let mut given = GIVEN.lock().unwrap_or_else(|e| e.into_inner());
    let given = given.get_or_insert_with(HashSet::new);
    for _ in 0..1000 {
        let port = rand::random::<u16>() % 17_000 + 15_000;
        if given.contains(&port) {
            continue;
        }
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            given.insert(port);
            return Ok(port);
        }
    }
    bail!("no free loopback port found in 15000..32000")
}

fn port_or_free(base: u16, offset: usize) -> anyhow::Result<u16> {
    if base == 0 {
        free_port()
    } else {
        Ok(base + offset as u16)
    }
}

impl LocalCluster {
    /// Starts PD, then the stores, and waits until the cluster serves.
    pub async fn start(spec: ClusterSpec, timeout: Duration) -> anyhow::Result<LocalCluster> {
        let stores = spec.stores;
        Self::start_first(spec, stores, timeout).await
    }

    /// Like [`LocalCluster::start`], with only the first `running` stores
    /// started; the others may join later ([`LocalCluster::start_store`]).
    pub async fn start_first(
        spec: ClusterSpec,
        running: usize,
        timeout: Duration,
    ) -> anyhow::Result<LocalCluster> {
        let mut cluster = LocalCluster::prepare(spec)?;
        cluster.start_pd()?;
        cluster.wait_pd(timeout).await?;
        for i in 0..running.min(cluster.stores.len()) {
            cluster.start_store(i)?;
        }
        cluster.wait_ready(timeout).await?;
        Ok(cluster)
    }

    /// Lays out ports, directories and command lines without starting anything.
    pub fn prepare(spec: ClusterSpec) -> anyhow::Result<LocalCluster> {
        let logs = spec.data_dir.join("logs");
        std::fs::create_dir_all(&logs)
            .with_context(|| format!("cannot create {}", logs.display()))?;
        let host = spec.host.clone();
        let pd_port = port_or_free(spec.pd_port, 0)?;
        let pd_peer_port = if spec.pd_port == 0 {
            free_port()?
        } else {
            pd_port + 1
        };
        let pd_addr = format!("{host}:{pd_port}");
        let peer_url = format!("http://{host}:{pd_peer_port}");
        let pd_config_path = spec.data_dir.join("pd.toml");
        std::fs::write(&pd_config_path, &spec.pd_config)?;
        let pd = Node {
            name: "pd".into(),
            binary: spec.bin_dir.join("pd-server"),
            args: vec![
                "--name=pd".into(),
                format!("--data-dir={}", spec.data_dir.join("pd").display()),
                format!("--client-urls=http://{pd_addr}"),
                format!("--peer-urls={peer_url}"),
                format!("--initial-cluster=pd={peer_url}"),
                format!("--log-file={}", logs.join("pd.log").display()),
                format!("--config={}", pd_config_path.display()),
            ],
            cwd: spec.data_dir.clone(),
            child: None,
        };
        let config_path = spec.data_dir.join("tikv.toml");
        std::fs::write(&config_path, &spec.store_config)?;
        let mut stores = vec![];
        let mut store_addrs = vec![];
        let mut status_addrs = vec![];
        for i in 0..spec.stores {
            let store_dir = spec.data_dir.join(format!("tikv-{i}"));
            let addr = format!("{host}:{}", port_or_free(spec.store_port, i)?);
            let status = format!("{host}:{}", port_or_free(spec.status_port, i)?);
            stores.push(Node {
                name: format!("tikv-{i}"),
                binary: spec.bin_dir.join("tikv-server"),
                args: vec![
                    format!("--addr={addr}"),
                    format!("--status-addr={status}"),
                    format!("--data-dir={}", store_dir.display()),
                    format!("--pd={pd_addr}"),
                    format!(
                        "--log-file={}",
                        logs.join(format!("tikv-{i}.log")).display()
                    ),
                    format!("--config={}", config_path.display()),
                ],
                cwd: store_dir,
                child: None,
            });
            store_addrs.push(addr);
            status_addrs.push(status);
        }
        Ok(LocalCluster {
            spec,
            pd_addr,
            store_addrs,
            status_addrs,
            pd,
            stores,
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(5))
                .build()?,
        })
    }

    pub fn pd_url(&self) -> String {
        format!("http://{}", self.pd_addr)
    }

    pub fn log_path(&self, node: &str) -> PathBuf {
        self.spec.data_dir.join("logs").join(format!("{node}.log"))
    }

    pub fn start_pd(&mut self) -> anyhow::Result<()> {
        spawn(&mut self.pd, &self.spec.data_dir)
    }

    pub fn start_store(&mut self, i: usize) -> anyhow::Result<()> {
        let node = self
            .stores
            .get_mut(i)
            .ok_or_else(|| anyhow!("no store {i}"))?;
        spawn(node, &self.spec.data_dir)
    }

    /// SIGKILL, as `kill -9`: no chance to flush or clean up.
    pub fn kill_pd(&mut self) {
        kill9(&mut self.pd);
    }

    pub fn kill_store(&mut self, i: usize) {
        if let Some(n) = self.stores.get_mut(i) {
            kill9(n);
        }
    }

    /// Process id of store `i`, while it runs (to pause it with SIGSTOP).
    pub fn store_pid(&self, i: usize) -> Option<u32> {
        self.stores.get(i)?.child.as_ref().map(Child::id)
    }

    /// SIGTERM and wait, as an operator's clean stop.
    pub async fn stop_store(&mut self, i: usize) {
        if let Some(n) = self.stores.get_mut(i) {
            terminate(n, Duration::from_secs(10)).await;
        }
    }

    /// Store `i`'s data directory, also its working directory.
    pub fn store_dir(&self, i: usize) -> PathBuf {
        self.spec.data_dir.join(format!("tikv-{i}"))
    }

    /// Points store `i` at a fresh, empty data directory (for the next start).
    pub fn wipe_store_data(&mut self, i: usize) -> anyhow::Result<()> {
        let dir = self.spec.data_dir.join(format!("tikv-{i}"));
        if dir.exists() {
            std::fs::remove_dir_all(&dir)?;
        }
        Ok(())
    }

    /// Waits for store `i` to exit by itself; returns its status.
    pub async fn wait_store_exit(
        &mut self,
        i: usize,
        timeout: Duration,
    ) -> anyhow::Result<ExitStatus> {
        let node = self
            .stores
            .get_mut(i)
            .ok_or_else(|| anyhow!("no store {i}"))?;
        let child = node
            .child
            .as_mut()
            .ok_or_else(|| anyhow!("store {i} not running"))?;
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = child.try_wait()? {
                node.child = None;
                return Ok(status);
            }
            if Instant::now() > deadline {
                bail!("store {i} still running after {timeout:?}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub async fn http_get(&self, path: &str) -> anyhow::Result<Value> {
        let url = format!("{}{path}", self.pd_url());
        let resp = self.http.get(&url).send().await?;
        let status = resp.status();
        let body = resp.text().await?;
        if !status.is_success() {
            bail!("GET {url}: {status}: {body}");
        }
        serde_json::from_str(&body).with_context(|| format!("GET {url}: not JSON: {body}"))
    }

    pub async fn wait_pd(&self, timeout: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            if self.http_get("/pd/api/v1/members").await.is_ok() {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!(
                    "PD did not answer within {timeout:?}; see {}",
                    self.log_path("pd").display()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Waits until every running store is Up in PD, every region has a
    /// leader that PD knows, and the running stores say they lead them all.
    pub async fn wait_ready(&self, timeout: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + timeout;
        let running = self.stores.iter().filter(|n| n.child.is_some()).count();
        loop {
            let last = match self.readiness(running).await {
                Ok(()) => return Ok(()),
                Err(e) => e.to_string(),
            };
            if Instant::now() > deadline {
                bail!(
                    "cluster not ready within {timeout:?}: {last}; logs in {}",
                    self.spec.data_dir.join("logs").display()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn readiness(&self, stores: usize) -> anyhow::Result<()> {
        let s = self.http_get("/pd/api/v1/stores").await?;
        let up = s["stores"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter(|st| st["store"]["state_name"] == "Up")
                    .count()
            })
            .unwrap_or(0);
        if up < stores {
            bail!("{up} of {stores} stores are Up");
        }
        let r = self.http_get("/pd/api/v1/regions").await?;
        let regions = r["regions"].as_array().cloned().unwrap_or_default();
        if regions.is_empty() {
            bail!("no regions yet");
        }
        if let Some(r) = regions.iter().find(|r| r["leader"].is_null()) {
            bail!("region {} has no leader yet", r["id"]);
        }
        // PD may remember a leader from before a restart: ask the stores
        // themselves, through their status servers, what they lead now.
        let mut leaders = 0;
        for (node, status) in self.stores.iter().zip(&self.status_addrs) {
            if node.child.is_none() {
                continue;
            }
            let url = format!("http://{status}/status");
            let s: Value = self.http.get(&url).send().await?.json().await?;
            leaders += s["leader_count"].as_u64().unwrap_or(0) as usize;
        }
        if leaders < regions.len() {
            bail!("stores lead {leaders} of {} regions", regions.len());
        }
        Ok(())
    }

    /// Stops everything gracefully (SIGTERM, then SIGKILL after a grace period).
    pub async fn stop(&mut self) {
        for n in self.stores.iter_mut().chain(std::iter::once(&mut self.pd)) {
            terminate(n, Duration::from_secs(10)).await;
        }
    }
}

impl Drop for LocalCluster {
    fn drop(&mut self) {
        for n in self.stores.iter_mut().chain(std::iter::once(&mut self.pd)) {
            kill9(n);
        }
    }
}

fn spawn(node: &mut Node, data_dir: &Path) -> anyhow::Result<()> {
    if node.child.is_some() {
        bail!("{} is already running", node.name);
    }
    let stderr = File::options()
        .create(true)
        .append(true)
        .open(data_dir.join("logs").join(format!("{}.stderr", node.name)))?;
    std::fs::create_dir_all(&node.cwd)?;
    let child = Command::new(&node.binary)
        .args(&node.args)
        .current_dir(&node.cwd)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(stderr)
        .spawn()
        .with_context(|| format!("cannot start {}", node.binary.display()))?;
    node.child = Some(child);
    Ok(())
}

fn kill9(node: &mut Node) {
    if let Some(mut c) = node.child.take() {
        let _ = c.kill();
        let _ = c.wait();
    }
}

async fn terminate(node: &mut Node, grace: Duration) {
    let Some(mut c) = node.child.take() else {
        return;
    };
    if let Ok(pid) = i32::try_from(c.id()) {
        // SAFETY: plain kill(2) on our own child's pid.
        unsafe {
            libc::kill(pid, libc::SIGTERM);
        }
    }
    let deadline = Instant::now() + grace;
    while Instant::now() < deadline {
        if let Ok(Some(_)) = c.try_wait() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let _ = c.kill();
    let _ = c.wait();
}
