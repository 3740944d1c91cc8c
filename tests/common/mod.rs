//! The one test-cluster harness: real `pd-server` / `tikv-server` processes
//! on free loopback ports, in a temporary directory removed afterwards.
#![allow(dead_code)]

pub mod bank;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use tikal_proto::kvrpcpb::*;
use tikal_proto::pdpb;
use tikal_proto::tikvpb::tikv_client::TikvClient;
use tikal_tools::local_cluster::{ClusterSpec, LocalCluster};
use tonic::transport::Channel;

pub const READY_TIMEOUT: Duration = Duration::from_secs(60);

pub struct TestCluster {
    pub cluster: LocalCluster,
    // Dropped after `cluster`, so processes are dead before files go.
    _dir: tempfile::TempDir,
}

/// Where `pd-server` and `tikv-server` are: the ones cargo built with
/// the test, or a copy named by `TIKAL_TEST_BIN_DIR` (so a long survey
/// can run on binaries that a rebuild meanwhile does not replace).
fn bin_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("TIKAL_TEST_BIN_DIR") {
        return PathBuf::from(dir);
    }
    PathBuf::from(env!("CARGO_BIN_EXE_pd-server"))
        .parent()
        .expect("binary has a parent directory")
        .to_path_buf()
}

impl TestCluster {
    pub async fn start(stores: usize) -> TestCluster {
        Self::start_with_config(stores, "").await
    }

    pub async fn start_with_config(stores: usize, store_config: &str) -> TestCluster {
        Self::start_with_configs(stores, store_config, "").await
    }

    /// With extra TOML for every store and for PD.
    pub async fn start_with_configs(
        stores: usize,
        store_config: &str,
        pd_config: &str,
    ) -> TestCluster {
        Self::start_first(stores, stores, store_config, pd_config).await
    }

    /// With `stores` laid out and only the first `running` started.
    pub async fn start_first(
        stores: usize,
        running: usize,
        store_config: &str,
        pd_config: &str,
    ) -> TestCluster {
        // TIKAL_KEEP_TEST_DIRS=1 keeps every cluster's data and logs
        // (for a failure to be read afterwards); the path is printed.
        let keep = std::env::var_os("TIKAL_KEEP_TEST_DIRS").is_some();
        let dir = tempfile::Builder::new()
            .prefix("tikal-test-")
            .disable_cleanup(keep)
            .tempdir()
            .expect("temp dir");
        if keep {
            eprintln!("keeping {}", dir.path().display());
        }
        let mut spec = ClusterSpec::for_test(bin_dir(), dir.path().to_path_buf(), stores);
        spec.store_config = with_default(store_config, "storage", "reserve-space", "\"0\"");
        spec.pd_config = with_default(pd_config, "schedule", "low-space-ratio", "0.999");
        let cluster = match LocalCluster::start_first(spec, running, READY_TIMEOUT).await {
            Ok(c) => c,
            Err(e) => panic!("{e:#}\n{}", dump_logs(dir.path())),
        };
        TestCluster { cluster, _dir: dir }
    }

    pub fn pd(&self) -> String {
        self.cluster.pd_addr.clone()
    }

    pub async fn raw_client(&self) -> tikv_client::RawClient {
        tikv_client::RawClient::new(vec![self.pd()])
            .await
            .expect("RawClient connects to PD")
    }

    /// Waits until the cluster serves again; on timeout fails with the logs.
    pub async fn wait_ready(&self) {
        if let Err(e) = self.cluster.wait_ready(READY_TIMEOUT).await {
            panic!("{e:#}\n{}", self.logs());
        }
    }

    pub fn logs(&self) -> String {
        dump_logs(&self.cluster.spec.data_dir)
    }

    /// Store `i`'s Prometheus metrics text.
    pub async fn metrics(&self, i: usize) -> String {
        let url = format!("http://{}/metrics", self.cluster.status_addrs[i]);
        reqwest::get(url)
            .await
            .expect("status server answers")
            .text()
            .await
            .expect("metrics body")
    }
}

/// A PD gRPC client (ours) and a request header carrying the cluster id.
pub async fn pd_client(
    t: &TestCluster,
) -> (
    tikal_proto::pdpb::pd_client::PdClient<tonic::transport::Channel>,
    Option<tikal_proto::pdpb::RequestHeader>,
) {
    pd_client_at(&t.pd()).await
}

/// [`pd_client`] for the PD at `pd`.
pub async fn pd_client_at(
    pd: &str,
) -> (
    tikal_proto::pdpb::pd_client::PdClient<tonic::transport::Channel>,
    Option<tikal_proto::pdpb::RequestHeader>,
) {
    use tikal_proto::pdpb;
    let mut pd = pdpb::pd_client::PdClient::connect(format!("http://{pd}"))
        .await
        .expect("PD answers gRPC");
    let members = pd
        .get_members(pdpb::GetMembersRequest::default())
        .await
        .expect("GetMembers")
        .into_inner();
    let header = Some(pdpb::RequestHeader {
        cluster_id: members.header.map(|h| h.cluster_id).unwrap_or_default(),
        sender_id: 0,
    });
    (pd, header)
}

/// GET a JSON document from any HTTP endpoint.
pub async fn get_json(url: &str) -> serde_json::Value {
    // A hung server fails the test with its logs, not at CI's time limit.
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .expect("an HTTP client");
    client
        .get(url)
        .send()
        .await
        .unwrap_or_else(|e| panic!("GET {url}: {e}"))
        .json()
        .await
        .unwrap_or_else(|e| panic!("GET {url}: {e}"))
}

/// Every log file's tail, for failure messages.
pub fn dump_logs(dir: &std::path::Path) -> String {
    let mut out = String::new();
    if let Ok(entries) = std::fs::read_dir(dir.join("logs")) {
        for e in entries.flatten() {
            let text = std::fs::read_to_string(e.path()).unwrap_or_default();
            let tail: Vec<&str> = text.lines().rev().take(30).collect();
            out.push_str(&format!("==== {} ====\n", e.path().display()));
            for l in tail.into_iter().rev() {
                out.push_str(l);
                out.push('\n');
            }
        }
    }
    out
}

impl TestCluster {
    /// Starts store `i` and expects it to refuse: it exits non-zero within
    /// 30 s. Returns what it wrote to stderr.
    pub async fn start_store_refused(&mut self, i: usize) -> String {
        self.cluster.start_store(i).unwrap();
        let status = self
            .cluster
            .wait_store_exit(i, Duration::from_secs(30))
            .await
            .unwrap();
        assert!(!status.success(), "store {i} must refuse to start");
        let path = self
            .cluster
            .spec
            .data_dir
            .join("logs")
            .join(format!("tikv-{i}.stderr"));
        std::fs::read_to_string(path).unwrap()
    }
}

/// Polls `check` until it returns Ok or `timeout` passes; the timeout's
/// panic names the last error and carries the cluster's logs.
pub async fn eventually_ok<T, E, F, Fut>(
    t: &TestCluster,
    timeout: Duration,
    what: &str,
    mut check: F,
) -> T
where
    E: std::fmt::Display,
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, E>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        match check().await {
            Ok(v) => return v,
            Err(e) if Instant::now() > deadline => panic!(
                "timed out after {timeout:?} waiting for {what}; last error: {e}\n{}",
                t.logs()
            ),
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
}

/// Polls `check` until it returns Some or `timeout` passes.
pub async fn eventually<T, F, Fut>(timeout: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        if Instant::now() > deadline {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A direct gRPC line to the store leading the only region (our generated
/// client), with a valid Context, for requests the official client cannot make.
pub struct Direct {
    pub tikv: TikvClient<Channel>,
    pub ctx: Context,
    pub channel: Channel,
}

/// Connects to the store leading the (only) region, with a valid Context.
pub async fn direct(t: &TestCluster) -> Direct {
    direct_at(t, b"any").await
}

/// Connects to the store leading the region that holds `key` (as stored:
/// transactional keys memcomparable-encoded), with a valid Context.
pub async fn direct_at(t: &TestCluster, key: &[u8]) -> Direct {
    direct_to(&t.pd(), key, false).await.unwrap()
}

/// [`direct_at`] in the cluster whose PD is at `pd`; an error if PD or the
/// leader's store does not answer (a nemesis may have stopped it).
pub async fn direct_at_pd(pd: &str, key: &[u8]) -> anyhow::Result<Direct> {
    direct_to(pd, key, false).await
}

/// Like [`direct_at`], to a store holding a follower of the region instead.
pub async fn direct_follower_at(t: &TestCluster, key: &[u8]) -> Direct {
    direct_to(&t.pd(), key, true).await.unwrap()
}

async fn direct_to(pd: &str, key: &[u8], follower: bool) -> anyhow::Result<Direct> {
    use anyhow::Context as _;
    let (mut pd, header) = pd_client_at(pd).await;
    let region = pd
        .get_region(pdpb::GetRegionRequest {
            header: header.clone(),
            region_key: key.to_vec(),
            need_buckets: false,
        })
        .await?
        .into_inner();
    let mut leader = region.leader.context("no leader")?;
    let region = region.region.context("no region")?;
    if follower {
        leader = (region.peers.iter())
            .find(|p| p.id != leader.id)
            .cloned()
            .context("the region has no follower")?;
    }
    let store = pd
        .get_store(pdpb::GetStoreRequest {
            header,
            store_id: leader.store_id,
        })
        .await?
        .into_inner()
        .store
        .context("no such store")?;
    let channel = Channel::from_shared(format!("http://{}", store.address))?
        .connect()
        .await?;
    let tikv = TikvClient::new(channel.clone())
        .max_decoding_message_size(64 << 20)
        .max_encoding_message_size(64 << 20);
    let ctx = Context {
        region_id: region.id,
        region_epoch: region.region_epoch.clone(),
        peer: Some(leader),
        ..Default::default()
    };
    Ok(Direct { tikv, ctx, channel })
}

impl Direct {
    pub fn put(&self, key: &[u8], value: &[u8], cf: &str) -> RawPutRequest {
        RawPutRequest {
            context: Some(self.ctx.clone()),
            key: key.to_vec(),
            value: value.to_vec(),
            cf: cf.into(),
            ..Default::default()
        }
    }

    /// A one-key optimistic prewrite of `key` = `value`, primary `key`.
    pub fn prewrite(&self, key: &[u8], value: &[u8], start_ts: u64, ttl: u64) -> PrewriteRequest {
        PrewriteRequest {
            context: Some(self.ctx.clone()),
            mutations: vec![Mutation {
                op: Op::Put as i32,
                key: key.to_vec(),
                value: value.to_vec(),
                ..Default::default()
            }],
            primary_lock: key.to_vec(),
            start_version: start_ts,
            lock_ttl: ttl,
            ..Default::default()
        }
    }

    /// Sends [`Direct::prewrite`] and asserts it succeeded.
    pub async fn prewrite_ok(&self, key: &[u8], value: &[u8], start_ts: u64, ttl: u64) {
        self.send_prewrite_ok(self.prewrite(key, value, start_ts, ttl))
            .await;
    }

    /// Sends `req`, asserts it succeeded, and returns the answer.
    pub async fn send_prewrite_ok(&self, req: PrewriteRequest) -> PrewriteResponse {
        let resp = self
            .tikv
            .clone()
            .kv_prewrite(req)
            .await
            .unwrap()
            .into_inner();
        assert!(
            resp.errors.is_empty() && resp.region_error.is_none(),
            "{resp:?}"
        );
        resp
    }

    /// Commits `keys` of the transaction `start_ts` at `commit_ts`.
    pub async fn commit(&self, keys: &[&[u8]], start_ts: u64, commit_ts: u64) -> CommitResponse {
        self.tikv
            .clone()
            .kv_commit(CommitRequest {
                context: Some(self.ctx.clone()),
                start_version: start_ts,
                keys: keys.iter().map(|k| k.to_vec()).collect(),
                commit_version: commit_ts,
            })
            .await
            .unwrap()
            .into_inner()
    }

    /// A transactional read of `key` at `version`.
    pub async fn kv_get(&self, key: &[u8], version: u64) -> GetResponse {
        self.tikv
            .clone()
            .kv_get(GetRequest {
                context: Some(self.ctx.clone()),
                key: key.to_vec(),
                version,
            })
            .await
            .unwrap()
            .into_inner()
    }

    pub async fn put_error(&mut self, req: RawPutRequest) -> RawPutResponse {
        self.tikv.raw_put(req).await.unwrap().into_inner()
    }

    pub async fn get(&mut self, key: &[u8]) -> Option<Vec<u8>> {
        let resp = self
            .tikv
            .raw_get(RawGetRequest {
                context: Some(self.ctx.clone()),
                key: key.to_vec(),
                cf: String::new(),
            })
            .await
            .unwrap()
            .into_inner();
        assert!(
            resp.region_error.is_none() && resp.error.is_empty(),
            "{resp:?}"
        );
        (!resp.not_found).then_some(resp.value)
    }
}

/// Passes message bodies through as they are.
#[derive(Default)]
pub struct BytesCodec;

impl tonic::codec::Codec for BytesCodec {
    type Encode = Vec<u8>;
    type Decode = Vec<u8>;
    type Encoder = BytesCodec;
    type Decoder = BytesCodec;

    fn encoder(&mut self) -> BytesCodec {
        BytesCodec
    }

    fn decoder(&mut self) -> BytesCodec {
        BytesCodec
    }
}

impl tonic::codec::Encoder for BytesCodec {
    type Item = Vec<u8>;
    type Error = tonic::Status;

    fn encode(
        &mut self,
        item: Vec<u8>,
        buf: &mut tonic::codec::EncodeBuf<'_>,
    ) -> Result<(), tonic::Status> {
        bytes::BufMut::put_slice(buf, &item);
        Ok(())
    }
}

impl tonic::codec::Decoder for BytesCodec {
    type Item = Vec<u8>;
    type Error = tonic::Status;

    fn decode(
        &mut self,
        buf: &mut tonic::codec::DecodeBuf<'_>,
    ) -> Result<Option<Vec<u8>>, tonic::Status> {
        let mut out = vec![0; bytes::Buf::remaining(buf)];
        bytes::Buf::copy_to_slice(buf, &mut out);
        Ok(Some(out))
    }
}

/// `config` with `key = value` in `[section]` unless it sets `key`.
/// Tests must not depend on how full the machine's disk is: upstream's
/// store reserve (5 GB, or 5 % of the disk) would refuse every write, and
/// PD's low-space ratio (0.8) every new replica, on a machine with less
/// room than that. So test stores keep no reserve and test PDs call a
/// store low on space only under 0.1 % free, unless a test says otherwise.
fn with_default(config: &str, section: &str, key: &str, value: &str) -> String {
    if config.contains(key) {
        return config.to_string();
    }
    let header = format!("[{section}]\n");
    match config.find(&header) {
        Some(at) => {
            let after = at + header.len();
            format!("{}{key} = {value}\n{}", &config[..after], &config[after..])
        }
        None => format!("{config}\n{header}{key} = {value}\n"),
    }
}

/// The settings of TiKV's client test suite (its `config/tikv.toml`).
pub const CLIENT_SUITE_STORE_CONFIG: &str = r#"
[coprocessor]
region-max-keys = 10
region-split-keys = 7
batch-split-limit = 100

[raftstore]
region-split-check-diff = "1B"
split-region-check-tick-interval = "1s"
pd-heartbeat-tick-interval = "2s"
raft-entry-max-size = "1MB"
"#;

/// Every region PD knows, in key order, once they cover the whole key
/// space without gaps or overlaps and each has `voters` voters on distinct
/// stores and a leader; `None` while that is not so yet.
pub async fn regions(t: &TestCluster, voters: usize) -> Option<Vec<serde_json::Value>> {
    let r = get_json(&format!("{}/pd/api/v1/regions", t.cluster.pd_url())).await;
    let mut regions = r["regions"].as_array()?.clone();
    regions.sort_by_key(|r| hex_key(r, "start_key"));
    let mut next = vec![];
    for region in &regions {
        if hex_key(region, "start_key") != next {
            return None;
        }
        next = hex_key(region, "end_key");
        if next.is_empty() && !std::ptr::eq(region, regions.last()?) {
            return None;
        }
    }
    if !next.is_empty() {
        return None;
    }
    for region in &regions {
        let mut stores: Vec<u64> = region["peers"]
            .as_array()?
            .iter()
            .filter(|p| p["role_name"] == "Voter")
            .filter_map(|p| p["store_id"].as_u64())
            .collect();
        stores.sort_unstable();
        stores.dedup();
        if stores.len() != voters || region["leader"].is_null() {
            return None;
        }
    }
    Some(regions)
}

pub fn hex_key(region: &serde_json::Value, field: &str) -> Vec<u8> {
    let text = region[field].as_str().unwrap_or_default();
    (0..text.len() / 2)
        .map(|i| u8::from_str_radix(&text[2 * i..2 * i + 2], 16).unwrap())
        .collect()
}

/// How many of `keys` each region holds at most.
pub fn most_keys_per_region(all: &[serde_json::Value], keys: &[Vec<u8>]) -> usize {
    all.iter()
        .map(|r| {
            let (start, end) = (hex_key(r, "start_key"), hex_key(r, "end_key"));
            keys.iter()
                .filter(|k| **k >= start && (end.is_empty() || **k < end))
                .count()
        })
        .max()
        .unwrap_or(0)
}

/// What happened to one side of the deadlock test.
#[derive(Debug, PartialEq)]
pub enum Fate {
    Deadlock,
    Committed,
}

/// Locks `key` in `txn`; on Deadlock rolls back, otherwise writes both
/// keys and commits.
pub async fn second_lock(mut txn: tikv_client::Transaction, key: &str, keys: [&str; 2]) -> Fate {
    match txn.get_for_update(key.to_owned()).await {
        Err(e) => {
            let text = format!("{e:?}");
            assert!(text.contains("Deadlock {"), "not a deadlock: {text}");
            assert!(text.contains("WaitForEntry"), "no wait chain: {text}");
            txn.rollback().await.unwrap();
            Fate::Deadlock
        }
        Ok(_) => {
            for k in keys {
                txn.put(k.to_owned(), format!("by-{key}")).await.unwrap();
            }
            txn.commit().await.unwrap();
            Fate::Committed
        }
    }
}

/// Asks PD to move the region's leader to `store` (a transfer-leader
/// operator); true if PD took it (it refuses while the region has another
/// operator: callers ask again).
pub async fn transfer_leader(t: &TestCluster, region_id: u64, store: u64) -> bool {
    reqwest::Client::new()
        .post(format!("{}/pd/api/v1/operators", t.cluster.pd_url()))
        .json(&serde_json::json!({
            "name": "transfer-leader",
            "region_id": region_id,
            "to_store_id": store,
        }))
        .send()
        .await
        .is_ok_and(|r| r.status().is_success())
}

/// Asks PD to schedule nothing more but repairs (every schedule limit
/// but the replica checker's at 0), then waits until no operator runs:
/// leaders and regions stay where they are, for checks that talk to one
/// store directly.
pub async fn stop_scheduling(t: &TestCluster) {
    let limits = serde_json::json!({
        "leader-schedule-limit": 0,
        "region-schedule-limit": 0,
        "merge-schedule-limit": 0,
        "hot-region-schedule-limit": 0,
    });
    pd_post(t, "/pd/api/v1/config", limits).await;
    let operators = format!("{}/pd/api/v1/operators", t.cluster.pd_url());
    eventually(Duration::from_secs(60), "no operator running", || async {
        let running = get_json(&operators).await;
        running
            .as_array()
            .is_some_and(|o| o.is_empty())
            .then_some(())
    })
    .await;
}

/// `pd-ctl store delete`: asks PD to take store `id` offline (its
/// replicas move away, then it is Tombstone); asserts PD accepted.
pub async fn delete_store(t: &TestCluster, id: u64) {
    pd_delete(t, &format!("/pd/api/v1/store/{id}")).await;
}

/// The cluster's index of the store with id `store_id`.
pub async fn store_index(t: &TestCluster, store_id: u64) -> Option<usize> {
    let stores = get_json(&format!("{}/pd/api/v1/stores", t.cluster.pd_url())).await;
    let addr = stores["stores"]
        .as_array()?
        .iter()
        .find(|s| s["store"]["id"].as_u64() == Some(store_id))
        .and_then(|s| s["store"]["address"].as_str().map(str::to_owned))?;
    t.cluster.store_addrs.iter().position(|a| *a == addr)
}

/// POSTs `body` to PD's `path`, which must succeed.
pub async fn pd_post(t: &TestCluster, path: &str, body: serde_json::Value) {
    let url = format!("{}{path}", t.cluster.pd_url());
    let resp = reqwest::Client::new()
        .post(&url)
        .json(&body)
        .send()
        .await
        .expect("POST");
    let status = resp.status();
    let text = resp.text().await.unwrap_or_default();
    assert!(status.is_success(), "POST {path}: {status} {text}");
}

/// DELETEs a path of PD's HTTP API; asserts PD accepted.
pub async fn pd_delete(t: &TestCluster, path: &str) {
    let url = format!("{}{path}", t.cluster.pd_url());
    let resp = reqwest::Client::new()
        .delete(&url)
        .send()
        .await
        .expect("DELETE");
    assert!(
        resp.status().is_success(),
        "DELETE {path}: {}",
        resp.status()
    );
}

/// Every store PD knows (Tombstone ones too, as `state=N` lists them
/// upstream) with its state name.
pub async fn store_states(t: &TestCluster) -> Vec<(u64, String)> {
    let url = format!(
        "{}/pd/api/v1/stores?state=0&state=1&state=2",
        t.cluster.pd_url()
    );
    let s = get_json(&url).await;
    s["stores"]
        .as_array()
        .map(|ss| {
            ss.iter()
                .filter_map(|s| {
                    let id = s["store"]["id"].as_u64()?;
                    Some((id, s["store"]["state_name"].as_str()?.to_owned()))
                })
                .collect()
        })
        .unwrap_or_default()
}
