//! Merge end to end: 1 PD and 3 stores with TiKV's client-suite store
//! settings. Regions split as keys arrive; once most keys are deleted (by
//! delete_range across region boundaries) and PD's merge checker is let
//! loose, small neighbours merge through Raft (PrepareMerge in the source,
//! CommitMerge in the target) while a client keeps writing into the ranges
//! being merged. Nothing is lost, nothing deleted comes back.

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use common::{
    eventually, eventually_ok, most_keys_per_region, regions, TestCluster,
    CLIENT_SUITE_STORE_CONFIG,
};
use tikv_client::RawClient;

const KEYS: usize = 600;
/// One key in this many survives the deletes.
const KEEP_EVERY: usize = 50;
/// Writes issued while regions merge.
const RACING_WRITES: usize = 40;
const WAIT: Duration = Duration::from_secs(120);

fn key(i: usize) -> Vec<u8> {
    format!("m{i:05}").into_bytes()
}

/// A key inside the deleted stretch after key `i`.
fn racing_key(j: usize) -> Vec<u8> {
    format!("m{:05}w{j}", (j * 37) % KEYS).into_bytes()
}

#[tokio::test(flavor = "multi_thread")]
async fn small_regions_merge_and_no_write_is_lost_or_revived() {
    let t = TestCluster::start_with_config(3, CLIENT_SUITE_STORE_CONFIG).await;
    eventually(WAIT, "3 voters on the first region", || regions(&t, 3)).await;
    let raw = Arc::new(RawClient::new(vec![t.pd()]).await.unwrap());

    // ---- many small regions ----
    let data: BTreeMap<Vec<u8>, Vec<u8>> = (0..KEYS)
        .map(|i| (key(i), format!("v{i}").into_bytes()))
        .collect();
    let pairs: Vec<(Vec<u8>, Vec<u8>)> = data.clone().into_iter().collect();
    // Regions split meanwhile: a new region's election may outlast the
    // client's own retries.
    for batch in pairs.chunks(100) {
        eventually_ok(&t, WAIT, "a batch put", || raw.batch_put(batch.to_vec())).await;
    }
    let stored: Vec<Vec<u8>> = data.keys().cloned().collect();
    let split = eventually(WAIT, "regions split down to 10 keys", || async {
        let all = regions(&t, 3).await?;
        (most_keys_per_region(&all, &stored) <= 10).then_some(all)
    })
    .await;
    let before = split.len();
    assert!(before >= 40, "{before} regions after the splits");

    // ---- most keys go, by delete_range over stretches that span several
    // regions each; PD may merge from now on ----
    let mut expected = data.clone();
    for kept in (0..KEYS).step_by(KEEP_EVERY) {
        let (from, to) = (key(kept + 1), key(kept + KEEP_EVERY));
        raw.delete_range(from.clone()..to.clone()).await.unwrap();
        expected.retain(|k, _| *k < from || *k >= to);
    }
    assert_eq!(expected.len(), KEYS / KEEP_EVERY);
    common::pd_post(
        &t,
        "/pd/api/v1/config",
        serde_json::json!({
            "split-merge-interval": "0s",
            "max-merge-region-keys": 3,
            "max-merge-region-size": 1,
            "merge-schedule-limit": 64,
        }),
    )
    .await;

    // ---- writes race the merges; each is retried until acknowledged ----
    let writer = {
        let raw = raw.clone();
        tokio::spawn(async move {
            let mut acked = BTreeMap::new();
            let mut failures = 0;
            let mut pace = tokio::time::interval(Duration::from_millis(50));
            for j in 0..RACING_WRITES {
                pace.tick().await;
                let (k, v) = (racing_key(j), format!("w{j}").into_bytes());
                loop {
                    match raw.put(k.clone(), v.clone()).await {
                        Ok(()) => break,
                        Err(e) if failures < 100 => {
                            failures += 1;
                            eprintln!("racing write {j} not acknowledged, retried: {e}");
                        }
                        Err(e) => panic!("racing write {j} keeps failing: {e}"),
                    }
                }
                acked.insert(k, v);
            }
            (acked, failures)
        })
    };

    let merged = eventually(WAIT, "small regions merged", || async {
        let all = regions(&t, 3).await?;
        (all.len() * 2 <= before).then_some(all.len())
    })
    .await;
    let (acked, failures) = writer.await.unwrap();
    eprintln!("{before} regions merged down to {merged}; {failures} racing writes retried");
    expected.extend(acked);

    // ---- every surviving and racing key is there, no deleted one is ----
    // PD may still be merging: a read of a merge's source waits for the
    // merge and may then fail (ReadIndexNotReady) past the client's own
    // retries; it is asked again.
    for (k, v) in &expected {
        let got = eventually_ok(&t, WAIT, "a read after the merges", || raw.get(k.clone())).await;
        assert_eq!(got.as_ref(), Some(v), "{}", String::from_utf8_lossy(k));
    }
    let scanned: BTreeMap<Vec<u8>, Vec<u8>> =
        eventually_ok(&t, WAIT, "a scan after the merges", || {
            raw.scan(b"m".to_vec()..b"n".to_vec(), 10_000)
        })
        .await
        .into_iter()
        .map(|p| (Vec::<u8>::from(p.key().clone()), p.value().clone()))
        .collect();
    assert_eq!(scanned, expected, "the scan holds exactly the live keys");

    // Merged regions keep taking writes and splitting.
    let later: Vec<(Vec<u8>, Vec<u8>)> = (0..KEYS)
        .step_by(KEEP_EVERY)
        .map(|i| (format!("m{i:05}z").into_bytes(), b"after".to_vec()))
        .collect();
    // PD may still be merging: a write to a region mid-merge is refused
    // (ProposalInMergingMode) until the merge ends, possibly longer than
    // the client's own retries; it is retried here until it lands. One
    // key at a time: a batch over every region could meet some merge on
    // every try while PD keeps merging (a CI run timed out that way).
    for (k, v) in &later {
        eventually_ok(&t, WAIT, "a write after the merges", || {
            raw.put(k.clone(), v.clone())
        })
        .await;
    }
    for (k, v) in later {
        let got = eventually_ok(&t, WAIT, "a read after the merges", || raw.get(k.clone())).await;
        assert_eq!(got, Some(v));
    }
}
