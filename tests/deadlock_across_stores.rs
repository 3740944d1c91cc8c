//! Deadlock detection across stores: two pessimistic transactions lock
//! keys in two regions led by different stores, then each asks for the
//! other's key. Neither store sees the cycle among its own waiters; the
//! cluster's detector (on the first region's leader, over gRPC
//! `deadlock.Deadlock`) does, even after it moved to another store while
//! one transaction was waiting, and one transaction gets Deadlock long
//! before its lock wait would time out. The other commits.

mod common;

use std::time::{Duration, Instant};

use common::{
    direct_at, eventually, get_json, hex_key, regions, second_lock, transfer_leader, Fate,
    TestCluster,
};
use tikal_proto::deadlock::deadlock_client::DeadlockClient;
use tikal_proto::deadlock::WaitForEntriesRequest;
use tikal_proto::kvrpcpb::SplitRegionRequest;
use tikv_client::TransactionClient;

/// Lock waits last 60 s here, so a wait that ends in a few seconds was
/// ended by the detector, not by its timeout.
const STORE_CONFIG: &str = r#"
[pessimistic-txn]
wait-for-lock-timeout = "60s"
"#;
const WAIT: Duration = Duration::from_secs(60);

/// The store leading the region that starts at `start` (memcomparable).
async fn leader_of(t: &TestCluster, start: &[u8]) -> Option<u64> {
    let all = regions(t, 3).await?;
    all.iter()
        .find(|r| hex_key(r, "start_key") == start)
        .and_then(|r| r["leader"]["store_id"].as_u64())
}

/// How many wait-for edges the cluster's detector holds.
async fn detector_edges(t: &TestCluster) -> Option<usize> {
    let detector = direct_at(t, b"").await;
    let r = DeadlockClient::new(detector.channel)
        .get_wait_for_entries(WaitForEntriesRequest {})
        .await
        .ok()?
        .into_inner();
    Some(r.entries.len())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_deadlock_spanning_two_stores_is_found_by_the_cluster_detector() {
    let t = TestCluster::start_with_config(3, STORE_CONFIG).await;
    eventually(WAIT, "3 voters on the first region", || regions(&t, 3)).await;

    // Two regions, split at the transactional key "m".
    let d = direct_at(&t, b"").await;
    let resp = d
        .tikv
        .clone()
        .split_region(SplitRegionRequest {
            context: Some(d.ctx.clone()),
            split_keys: vec![b"m".to_vec()],
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(resp.region_error.is_none(), "{resp:?}");
    let right = tikal_codec::mvcc_key::encode_key(b"m");

    // Their leaders on different stores.
    let first = eventually(WAIT, "the first region's leader", || leader_of(&t, b"")).await;
    let regions_now = regions(&t, 3).await.unwrap();
    let right_id = regions_now
        .iter()
        .find(|r| hex_key(r, "start_key") == right)
        .and_then(|r| r["id"].as_u64())
        .unwrap();
    let stores: Vec<u64> = get_json(&format!("{}/pd/api/v1/stores", t.cluster.pd_url())).await
        ["stores"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|s| s["store"]["id"].as_u64())
        .collect();
    let other = stores.iter().copied().find(|s| *s != first).unwrap();
    eventually(WAIT, "the regions led by different stores", || async {
        let (l, r) = (leader_of(&t, b"").await?, leader_of(&t, &right).await?);
        if l == r {
            transfer_leader(&t, right_id, other).await;
            return None;
        }
        Some(())
    })
    .await;

    let c = TransactionClient::new(vec![t.pd()]).await.unwrap();
    let mut t1 = c.begin_pessimistic().await.unwrap();
    let mut t2 = c.begin_pessimistic().await.unwrap();
    t1.get_for_update("a".to_owned()).await.unwrap();
    t2.get_for_update("z".to_owned()).await.unwrap();

    // t1 waits for t2 on the right region's store; the detector hears of it.
    let first_wait = tokio::spawn(second_lock(t1, "z", ["a", "z"]));
    eventually(WAIT, "the detector holding t1's wait", || async {
        (detector_edges(&t).await? == 1).then_some(())
    })
    .await;
    // The first region's leadership, and the detector with it, moves to
    // the third store: the new detector starts empty, and the store where
    // t1 waits sends it t1's edge again.
    let (left, right_leader) = (
        leader_of(&t, b"").await.unwrap(),
        leader_of(&t, &right).await.unwrap(),
    );
    let third = stores
        .iter()
        .copied()
        .find(|s| *s != left && *s != right_leader)
        .unwrap();
    let left_id = regions(&t, 3).await.unwrap()[0]["id"].as_u64().unwrap();
    eventually(WAIT, "the detector moved, holding t1's wait", || async {
        if leader_of(&t, b"").await? != third {
            transfer_leader(&t, left_id, third).await;
            return None;
        }
        (detector_edges(&t).await? == 1).then_some(())
    })
    .await;

    // t2 asks for "a" on the first region's store, closing the cycle.
    let closed = Instant::now();
    let second_wait = tokio::spawn(second_lock(t2, "a", ["a", "z"]));
    let mut fates = vec![first_wait.await.unwrap(), second_wait.await.unwrap()];
    let took = closed.elapsed();
    fates.sort_by_key(|f| matches!(f, Fate::Committed));
    assert_eq!(fates, vec![Fate::Deadlock, Fate::Committed]);
    assert!(
        took < Duration::from_secs(30),
        "the deadlock took {took:?} to be found: by a timeout, not the detector"
    );

    let mut r = c.begin_optimistic().await.unwrap();
    let a = r.get("a".to_owned()).await.unwrap().unwrap();
    let z = r.get("z".to_owned()).await.unwrap().unwrap();
    r.commit().await.unwrap();
    assert_eq!(a, z, "both keys written by the same winner");
}
