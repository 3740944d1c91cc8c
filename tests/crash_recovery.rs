//! kill -9 during a stream of writes: no acknowledged write is lost, and PD
//! timestamps keep growing across its own crash. A store whose disk fails
//! stops serving and exits, rather than answering from a dead Raft loop.

mod common;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{eventually, TestCluster, READY_TIMEOUT};
use tikv_client::{RawClient, TimestampExt, TransactionClient};

type Acked = Arc<Mutex<BTreeMap<u64, u64>>>;

/// Writes key i = value (i, round) until told to stop, recording every put
/// the client saw succeed. Puts that time out or fail are not recorded:
/// they may or may not have been applied, which the test allows.
fn writer(
    client: RawClient,
    round: u64,
    acked: Acked,
    stop: Arc<std::sync::atomic::AtomicBool>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut i = 0u64;
        while !stop.load(std::sync::atomic::Ordering::Relaxed) {
            let key = format!("crash:{i:08}");
            let value = format!("{i}:{round}");
            let put = client.put(key, value);
            if let Ok(Ok(())) = tokio::time::timeout(Duration::from_secs(2), put).await {
                acked.lock().unwrap().insert(i, round);
            }
            i += 1;
        }
    })
}

async fn wait_acks(acked: &Acked, at_least: usize) {
    eventually(Duration::from_secs(60), "acknowledged writes", || async {
        (acked.lock().unwrap().len() >= at_least).then_some(())
    })
    .await;
}

async fn verify(client: &RawClient, acked: &Acked) {
    let acked = acked.lock().unwrap().clone();
    assert!(!acked.is_empty());
    for (i, round) in acked {
        let got = client.get(format!("crash:{i:08}")).await.unwrap();
        // A later round may have overwritten the key; never an older one.
        let got = got.unwrap_or_else(|| panic!("acknowledged key {i} lost"));
        let got = String::from_utf8(got).unwrap();
        let (gi, gr) = got.split_once(':').unwrap();
        assert_eq!(gi, i.to_string());
        assert!(
            gr.parse::<u64>().unwrap() >= round,
            "key {i} went back in time"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn store_kill_9_loses_no_acknowledged_write() {
    let mut t = TestCluster::start(1).await;
    let acked: Acked = Default::default();
    for round in 0..2u64 {
        let client = t.raw_client().await;
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let before = acked.lock().unwrap().len();
        let w = writer(client, round, acked.clone(), stop.clone());
        wait_acks(&acked, before + 200).await;
        // Crash mid-stream: writes are in flight right now.
        t.cluster.kill_store(0);
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        w.await.unwrap();
        t.cluster.start_store(0).unwrap();
        t.wait_ready().await;
        let client = t.raw_client().await;
        verify(&client, &acked).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn pd_kill_9_keeps_data_and_timestamps_strictly_increasing() {
    let mut t = TestCluster::start(1).await;
    let txn = TransactionClient::new(vec![t.pd()]).await.unwrap();
    let mut before = 0u64;
    for _ in 0..200 {
        let ts = txn.current_timestamp().await.unwrap().version();
        assert!(ts > before, "timestamps must grow: {ts} after {before}");
        before = ts;
    }
    drop(txn);

    let acked: Acked = Default::default();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let w = writer(t.raw_client().await, 0, acked.clone(), stop.clone());
    wait_acks(&acked, 100).await;
    t.cluster.kill_pd();
    // Writes keep flowing to the store while PD is down (clients cache
    // region routes); give them a moment, then bring PD back.
    let during = acked.lock().unwrap().len();
    wait_acks(&acked, during + 50).await;
    t.cluster.start_pd().unwrap();
    t.cluster.wait_pd(READY_TIMEOUT).await.unwrap();
    t.wait_ready().await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    w.await.unwrap();

    let txn = TransactionClient::new(vec![t.pd()]).await.unwrap();
    let after = txn.current_timestamp().await.unwrap().version();
    assert!(
        after > before,
        "timestamp {after} after restart <= {before} before"
    );
    let client = t.raw_client().await;
    verify(&client, &acked).await;

    // Both crash at once: still nothing acknowledged is lost.
    t.cluster.kill_store(0);
    t.cluster.kill_pd();
    t.cluster.start_pd().unwrap();
    t.cluster.wait_pd(READY_TIMEOUT).await.unwrap();
    t.cluster.start_store(0).unwrap();
    t.wait_ready().await;
    let client = t.raw_client().await;
    verify(&client, &acked).await;
    let txn = TransactionClient::new(vec![t.pd()]).await.unwrap();
    assert!(txn.current_timestamp().await.unwrap().version() > after);
}

/// Makes every file and directory under `dir` immutable (`chattr +i`, which
/// refuses writes even to files already open) until dropped.
struct FrozenDisk(std::path::PathBuf);

impl FrozenDisk {
    /// None where the file system has no immutable flag.
    fn freeze(dir: &std::path::Path) -> Option<FrozenDisk> {
        let ok = std::process::Command::new("chattr")
            .args(["-R", "+i"])
            .arg(dir)
            .status()
            .is_ok_and(|s| s.success());
        let frozen = FrozenDisk(dir.to_path_buf());
        ok.then_some(frozen)
    }
}

impl Drop for FrozenDisk {
    fn drop(&mut self) {
        let _ = std::process::Command::new("chattr")
            .args(["-R", "-i"])
            .arg(&self.0)
            .status();
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_store_whose_disk_fails_stops_serving_and_exits_non_zero() {
    let mut t = TestCluster::start(1).await;
    let client = t.raw_client().await;
    client
        .put("before".to_owned(), "v".to_owned())
        .await
        .unwrap();
    let Some(frozen) = FrozenDisk::freeze(&t.cluster.store_dir(0)) else {
        eprintln!("skipped: chattr +i is not supported here, so no disk fault can be made");
        return;
    };
    // The write cannot be persisted: it must not be acknowledged.
    let put = client.put("after".to_owned(), "v".to_owned());
    let result = tokio::time::timeout(Duration::from_secs(20), put).await;
    assert!(
        !matches!(result, Ok(Ok(()))),
        "a write was acknowledged by a store that cannot persist it"
    );
    let status = t
        .cluster
        .wait_store_exit(0, Duration::from_secs(30))
        .await
        .unwrap_or_else(|e| panic!("{e:#}\n{}", t.logs()));
    drop(frozen);
    assert!(!status.success(), "exit status {status:?}");
    let log = std::fs::read_to_string(t.cluster.log_path("tikv-0")).unwrap_or_default();
    assert!(log.contains("raftstore stopped"), "{}", t.logs());
}
