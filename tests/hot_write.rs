//! The hot-write scheduler end to end: 1 PD and 3 stores (real processes)
//! whose region heartbeats carry the bytes each region wrote. Three
//! regions led by one store all take writes; PD sees that store carry
//! every byte written and moves a hot region's leadership to a store that
//! writes nothing. Balance-leader is removed first, so the move is the
//! hot scheduler's and not a count balance.

mod common;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{direct_at, eventually, regions, transfer_leader, TestCluster};
use tikal_proto::kvrpcpb::SplitRegionRequest;
use tikv_client::RawClient;

const WAIT: Duration = Duration::from_secs(90);

/// The three regions' leaders' stores, by region start key order.
async fn leaders(t: &TestCluster) -> Option<Vec<(u64, u64)>> {
    let all = regions(t, 3).await?;
    (all.len() == 3).then_some(())?;
    all.iter()
        .map(|r| Some((r["id"].as_u64()?, r["leader"]["store_id"].as_u64()?)))
        .collect()
}

/// Whether `store` itself says it leads `region` (PD's view can lag: a
/// split's new regions are taken as led where the parent was): a read
/// with no keys through it passes the leader check or answers NotLeader.
async fn leads(t: &TestCluster, region_id: u64, store: u64) -> bool {
    use tikal_proto::kvrpcpb::{Context, RawBatchGetRequest};
    use tikal_proto::pdpb;
    let (mut pd, header) = common::pd_client(t).await;
    let Ok(found) = pd
        .get_region_by_id(pdpb::GetRegionByIdRequest {
            header: header.clone(),
            region_id,
            need_buckets: false,
        })
        .await
    else {
        return false;
    };
    let Some(region) = found.into_inner().region else {
        return false;
    };
    let Some(peer) = region.peers.iter().find(|p| p.store_id == store).cloned() else {
        return false;
    };
    let Ok(found) = pd
        .get_store(pdpb::GetStoreRequest {
            header,
            store_id: store,
        })
        .await
    else {
        return false;
    };
    let Some(addr) = found.into_inner().store.map(|s| s.address) else {
        return false;
    };
    let Ok(mut tikv) =
        tikal_proto::tikvpb::tikv_client::TikvClient::connect(format!("http://{addr}")).await
    else {
        return false;
    };
    let req = RawBatchGetRequest {
        context: Some(Context {
            region_id,
            region_epoch: region.region_epoch.clone(),
            peer: Some(peer),
            ..Default::default()
        }),
        ..Default::default()
    };
    matches!(tikv.raw_batch_get(req).await, Ok(r) if r.get_ref().region_error.is_none())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_store_leading_every_hot_region_hands_one_off() {
    let t = TestCluster::start_with_config(3, "[raftstore]\npd-heartbeat-tick-interval = \"1s\"\n")
        .await;
    eventually(WAIT, "3 voters on the first region", || regions(&t, 3)).await;
    let resp = reqwest::Client::new()
        .delete(format!(
            "{}/pd/api/v1/schedulers/balance-leader-scheduler",
            t.cluster.pd_url()
        ))
        .send()
        .await
        .expect("DELETE scheduler");
    assert!(resp.status().is_success(), "{}", resp.status());

    // Three regions: [.., h1), [h1, h2), [h2, ..), all led by one store.
    let d = direct_at(&t, b"h0").await;
    let split = d
        .tikv
        .clone()
        .split_region(SplitRegionRequest {
            context: Some(d.ctx.clone()),
            split_keys: vec![b"h1".to_vec(), b"h2".to_vec()],
            is_raw_kv: true,
            ..Default::default()
        })
        .await
        .expect("SplitRegion")
        .into_inner();
    assert!(split.region_error.is_none(), "{split:?}");
    let hot_store = d.ctx.peer.as_ref().expect("leader").store_id;
    eventually(WAIT, "one store leads all three regions", || async {
        let now = leaders(&t).await?;
        for (region, store) in &now {
            if *store != hot_store {
                transfer_leader(&t, *region, hot_store).await;
            }
        }
        if !now.iter().all(|(_, s)| *s == hot_store) {
            return None;
        }
        for (region, _) in &now {
            if !leads(&t, *region, hot_store).await {
                transfer_leader(&t, *region, hot_store).await;
                return None;
            }
        }
        Some(())
    })
    .await;

    // Every region takes writes (1 KiB values), so all of the cluster's
    // write flow is on one store.
    let raw = RawClient::new(vec![t.pd()]).await.unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let written = Arc::new(AtomicUsize::new(0));
    let writers: Vec<_> = ["h0", "h1", "h2"]
        .into_iter()
        .map(|prefix| {
            let (raw, stop, written) = (raw.clone(), stop.clone(), written.clone());
            tokio::spawn(async move {
                let mut i = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    let key = format!("{prefix}-{:04}", i % 1000);
                    if raw.put(key, vec![b'x'; 1024]).await.is_ok() {
                        written.fetch_add(1, Ordering::Relaxed);
                    }
                    i += 1;
                }
            })
        })
        .collect();

    // PD says which scheduler made a move: an election (the hot store
    // overloaded) may move a leader too, and that is not the one awaited.
    let hot_operator = || {
        let pd_log = std::fs::read_to_string(t.cluster.log_path("pd")).unwrap_or_default();
        (pd_log.lines()).any(|l| l.contains("operator created") && l.contains("hot-region"))
    };
    let started = Instant::now();
    let after = eventually(WAIT, "a hot region's leader moved off by PD", || async {
        let now = leaders(&t).await?;
        let moved = now.iter().any(|(_, s)| *s != hot_store);
        (moved && hot_operator()).then_some(now)
    })
    .await;
    stop.store(true, Ordering::Relaxed);
    for w in writers {
        w.await.unwrap();
    }
    eprintln!(
        "after {:?} and {} writes, leaders (region, store): {after:?}",
        started.elapsed(),
        written.load(Ordering::Relaxed)
    );
    let still_hot = after.iter().filter(|(_, s)| *s == hot_store).count();
    assert!(
        still_hot >= 1,
        "the hot scheduler moved too much: {after:?}"
    );
    let resp = reqwest::get(format!("{}/pd/api/v1/schedulers", t.cluster.pd_url()))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        !resp.contains("balance-leader-scheduler"),
        "balance-leader stayed off: {resp}"
    );
}
