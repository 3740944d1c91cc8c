//! The bank workload on a sharded, replicated cluster: 1 PD and 3 stores
//! with TiKV's client-suite store settings, so the accounts and the growing
//! transfer records split into more and more regions while the bank runs,
//! and leaders are moved between stores all along (PD transfer-leader
//! operators). The total never changes and every transfer applies once.

mod common;

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::{bank, eventually, regions, transfer_leader, TestCluster, CLIENT_SUITE_STORE_CONFIG};

const WAIT: Duration = Duration::from_secs(120);

/// Each region's leader store, by region id.
fn leaders(all: &[serde_json::Value]) -> HashMap<u64, u64> {
    all.iter()
        .filter_map(|r| Some((r["id"].as_u64()?, r["leader"]["store_id"].as_u64()?)))
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn bank_total_holds_while_regions_split_and_leaders_move() {
    let t = TestCluster::start_with_config(3, CLIENT_SUITE_STORE_CONFIG).await;
    eventually(WAIT, "3 voters on the first region", || regions(&t, 3)).await;

    let (first, last) = (AtomicUsize::new(0), AtomicUsize::new(0));
    let (asked, seen) = (AtomicUsize::new(0), AtomicUsize::new(0));
    let written = AtomicUsize::new(0);
    let moves = |until: Instant| {
        let (t, first, last, asked, seen) = (&t, &first, &last, &asked, &seen);
        let written = &written;
        async move {
            let mut pace = tokio::time::interval(Duration::from_millis(300));
            let mut before: HashMap<u64, u64> = HashMap::new();
            let mut turn = 0usize;
            while Instant::now() < until {
                pace.tick().await;
                let Some(all) = regions(t, 3).await else {
                    continue;
                };
                if first.load(Ordering::Relaxed) == 0 {
                    first.store(all.len(), Ordering::Relaxed);
                }
                last.store(all.len(), Ordering::Relaxed);
                // Keys written in each region's last heartbeat interval.
                let keys: u64 = all.iter().filter_map(|r| r["written_keys"].as_u64()).sum();
                written.fetch_max(keys as usize, Ordering::Relaxed);
                let now = leaders(&all);
                let moved = now
                    .iter()
                    .filter(|(id, s)| before.get(id).is_some_and(|b| b != *s))
                    .count();
                seen.fetch_add(moved, Ordering::Relaxed);
                before = now;
                // One region at a time, round the key space, to the next store.
                turn += 1;
                let region = &all[turn % all.len()];
                let (Some(id), Some(leader)) =
                    (region["id"].as_u64(), region["leader"]["store_id"].as_u64())
                else {
                    continue;
                };
                if transfer_leader(t, id, leader % 3 + 1).await {
                    asked.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
    };
    let report = bank::run(&t.pd(), bank::secs(20), moves).await;
    report.check();

    let (first, last) = (first.into_inner(), last.into_inner());
    let (asked, seen) = (asked.into_inner(), seen.into_inner());
    let written = written.into_inner();
    eprintln!(
        "regions {first} -> {last}; {asked} leader moves asked, {seen} seen; \
         at most {written} keys written in one heartbeat round"
    );
    assert!(written > 0, "heartbeats report the keys regions write");
    assert!(last > first, "regions split while the bank ran");
    assert!(seen > 0, "leaders moved while the bank ran");
}
