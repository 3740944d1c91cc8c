//! Scale out and in end to end: 1 PD and 3 stores with TiKV's client-suite
//! store settings hold many small regions; a 4th store joins, and PD's
//! balance schedulers give it its share of region replicas and leaders
//! (moves made of add learner, snapshot, promote, transfer leader, remove
//! peer) while every key stays readable. Then one store is deleted
//! (`pd-ctl store delete`): it hands off every replica and leader first,
//! becomes Tombstone, and writes made meanwhile are all there. Last, a
//! store restarts gracefully, as TiUP restarts one: its leaders are
//! evicted (`evict-leader-scheduler`), it is killed once it leads
//! nothing, the others serve meanwhile, and it leads again once given
//! back.

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use common::CLIENT_SUITE_STORE_CONFIG;
use common::{eventually, eventually_ok, most_keys_per_region, regions, TestCluster};
use tikv_client::RawClient;

const KEYS: usize = 400;
const WAIT: Duration = Duration::from_secs(180);

/// Replicas and leaders per store, from PD's regions.
fn counts(all: &[serde_json::Value]) -> (BTreeMap<u64, usize>, BTreeMap<u64, usize>) {
    let (mut replicas, mut leaders) = (BTreeMap::new(), BTreeMap::new());
    for r in all {
        for p in r["peers"].as_array().into_iter().flatten() {
            if let Some(s) = p["store_id"].as_u64() {
                *replicas.entry(s).or_default() += 1;
            }
        }
        if let Some(s) = r["leader"]["store_id"].as_u64() {
            *leaders.entry(s).or_default() += 1;
        }
    }
    (replicas, leaders)
}

/// Whether `stores` stores each hold within 20 % of the mean.
fn balanced(per_store: &BTreeMap<u64, usize>, stores: usize) -> bool {
    let total: usize = per_store.values().sum();
    let mean = total as f64 / stores as f64;
    per_store.len() == stores
        && per_store
            .values()
            .all(|&c| (c as f64 - mean).abs() <= 0.2 * mean)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_new_store_gets_its_share_of_regions_and_leaders_and_a_deleted_one_hands_them_off() {
    let t = TestCluster::start_first(4, 3, CLIENT_SUITE_STORE_CONFIG, "").await;
    eventually(WAIT, "3 voters on the first region", || regions(&t, 3)).await;
    let raw = RawClient::new(vec![t.pd()]).await.unwrap();
    let data: BTreeMap<Vec<u8>, Vec<u8>> = (0..KEYS)
        .map(|i| {
            (
                format!("s{i:05}").into_bytes(),
                format!("v{i}").into_bytes(),
            )
        })
        .collect();
    let pairs: Vec<(Vec<u8>, Vec<u8>)> = data.clone().into_iter().collect();
    // Regions split meanwhile: a new region's election may outlast the
    // client's own retries.
    for batch in pairs.chunks(100) {
        eventually_ok(&t, WAIT, "a batch put", || raw.batch_put(batch.to_vec())).await;
    }
    let keys: Vec<Vec<u8>> = data.keys().cloned().collect();
    let before = eventually(WAIT, "regions split down to 10 keys", || async {
        let all = regions(&t, 3).await?;
        (most_keys_per_region(&all, &keys) <= 10).then_some(all)
    })
    .await;
    let (replicas, _) = counts(&before);
    assert_eq!(replicas.len(), 3, "{replicas:?}");

    let mut t = t;
    let joined = Instant::now();
    t.cluster.start_store(3).expect("the 4th store starts");
    let after = eventually(
        WAIT,
        "regions and leaders balanced over 4 stores",
        || async {
            let all = regions(&t, 3).await?;
            let (replicas, leaders) = counts(&all);
            (balanced(&replicas, 4) && balanced(&leaders, 4)).then_some((replicas, leaders))
        },
    )
    .await;
    eprintln!(
        "{} regions; balanced {:?} after the 4th store joined: replicas {:?}, leaders {:?}",
        before.len(),
        joined.elapsed(),
        after.0,
        after.1
    );

    let check_all = |data: BTreeMap<Vec<u8>, Vec<u8>>, what: &'static str| {
        let raw = raw.clone();
        async move {
            let keys: Vec<Vec<u8>> = data.keys().cloned().collect();
            let got = raw.batch_get(keys).await.unwrap();
            assert_eq!(got.len(), data.len(), "every key reads back {what}");
            for pair in got {
                assert_eq!(
                    data.get(Vec::<u8>::from(pair.key().clone()).as_slice()),
                    Some(pair.value())
                );
            }
        }
    };
    check_all(data.clone(), "after the moves").await;

    // ---- scale in: the store with the most replicas is deleted ----
    let (deleted, held) = after
        .0
        .iter()
        .max_by_key(|(_, n)| **n)
        .map(|(id, n)| (*id, *n))
        .expect("stores");
    common::delete_store(&t, deleted).await;
    let deleted_at = Instant::now();
    // Writes go on while the store hands off (each retried, as an
    // application would, if it meets a leader just moved).
    let mut data = data;
    for i in 0..40 {
        let (k, v) = (
            format!("w{i:03}").into_bytes(),
            format!("v{i}").into_bytes(),
        );
        let deadline = Instant::now() + Duration::from_secs(30);
        while let Err(e) = raw.put(k.clone(), v.clone()).await {
            assert!(Instant::now() < deadline, "put during the hand-off: {e:?}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        data.insert(k, v);
    }
    let left = eventually(WAIT, "the deleted store handed off everything", || async {
        let all = regions(&t, 3).await?;
        let (replicas, leaders) = counts(&all);
        let gone = !replicas.contains_key(&deleted) && !leaders.contains_key(&deleted);
        let tombstone = common::store_states(&t)
            .await
            .contains(&(deleted, "Tombstone".to_owned()));
        (gone && tombstone).then_some(replicas)
    })
    .await;
    eprintln!(
        "store {deleted} handed off {held} replicas and became Tombstone after {:?}: replicas {left:?}",
        deleted_at.elapsed()
    );
    assert_eq!(left.len(), 3, "three stores hold every replica: {left:?}");
    check_all(
        data.clone(),
        "after the hand-off, writes during it included",
    )
    .await;

    // ---- a graceful restart, as TiUP makes one: the store's leaders are
    // evicted, it restarts once it leads nothing, then gets them back ----
    let restarted = *left.keys().next().expect("a store");
    let body = serde_json::json!({"name": "evict-leader-scheduler", "store_id": restarted});
    common::pd_post(&t, "/pd/api/v1/schedulers", body).await;
    let evicted_at = Instant::now();
    eventually(WAIT, "the store leads nothing", || async {
        let (_, leaders) = counts(&regions(&t, 3).await?);
        (!leaders.contains_key(&restarted)).then_some(())
    })
    .await;
    eprintln!(
        "store {restarted} led nothing after {:?}",
        evicted_at.elapsed()
    );
    let i = common::store_index(&t, restarted).await.expect("its index");
    t.cluster.kill_store(i);
    // Its replicas are followers: every key reads back and writes go on
    // from the other two while it is away.
    check_all(data.clone(), "with the evicted store down").await;
    raw.put(b"r000".to_vec(), b"during".to_vec()).await.unwrap();
    data.insert(b"r000".to_vec(), b"during".to_vec());
    t.cluster.start_store(i).expect("the store restarts");
    common::pd_delete(
        &t,
        &format!("/pd/api/v1/schedulers/evict-leader-scheduler-{restarted}"),
    )
    .await;
    eventually(WAIT, "the restarted store leads again", || async {
        let (_, leaders) = counts(&regions(&t, 3).await?);
        (leaders.get(&restarted) > Some(&0)).then_some(())
    })
    .await;
    check_all(data, "after the graceful restart").await;
}
