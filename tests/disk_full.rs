//! A store running out of room refuses client writes with kvproto's
//! `DiskFull` region error, keeps serving reads and deletes, loses nothing
//! it acknowledged, and takes writes again once it has room. Room is made
//! scarce with upstream's `[raftstore] capacity`, so the test needs no full
//! disk.

mod common;

use std::time::Duration;

use common::{direct, eventually, get_json, TestCluster};
use tikv_client::{Error, RawClient, TimestampExt, TransactionClient};

/// AlmostFull from 96 MiB of files, AlreadyFull from 176 MiB: each 64 KiB
/// put adds about twice its size (Raft log and KV engine), and the monitor
/// checks once a second, so the writes stop inside the AlmostFull band.
const SMALL_STORE: &str = r#"
[raftstore]
capacity = "256MB"
[storage]
reserve-space = "160MB"
"#;

fn value(i: u32) -> Vec<u8> {
    // Incompressible enough that the engines' files grow with the data.
    (0..64 * 1024u32)
        .map(|j| (j.wrapping_mul(2_654_435_761) ^ i).to_le_bytes()[1])
        .collect()
}

fn key(i: u32) -> String {
    format!("full:{i:06}")
}

/// The store ids a region error names as full, if it is DiskFull.
fn full_stores(e: &Error) -> Option<Vec<u64>> {
    match e {
        Error::RegionError(e) => e.disk_full.as_ref().map(|d| d.store_id.clone()),
        Error::MultipleKeyErrors(errors) | Error::ExtractedErrors(errors) => {
            errors.iter().find_map(full_stores)
        }
        _ => None,
    }
}

/// Keys `from..to` hold their values.
async fn read_back(client: &RawClient, from: u32, to: u32) {
    for first in (from..to).step_by(50) {
        let keys: Vec<String> = (first..to.min(first + 50)).map(key).collect();
        let mut got = client.batch_get(keys.clone()).await.expect("batch_get");
        got.sort_by(|a, b| a.key().cmp(b.key()));
        assert_eq!(got.len(), keys.len(), "keys from {first} missing");
        for (pair, i) in got.iter().zip(first..) {
            assert_eq!(pair.value(), &value(i), "{}", key(i));
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_full_store_refuses_writes_keeps_its_data_and_takes_writes_with_room_again() {
    let mut t = TestCluster::start_with_config(1, SMALL_STORE).await;
    let client = t.raw_client().await;
    // A transaction prewritten while there is room, committed once the
    // disk is almost full: ending it must not be refused.
    let tso = TransactionClient::new(vec![t.pd()]).await.unwrap();
    let d = direct(&t).await;
    let start_ts = tso.current_timestamp().await.unwrap().version();
    d.prewrite_ok(b"txn:a", b"before", start_ts, 60_000).await;

    // PD sees the configured capacity, not the disk's.
    let url = format!("{}/pd/api/v1/stores", t.cluster.pd_url());
    eventually(Duration::from_secs(30), "capacity in PD", || async {
        let stores = get_json(&url).await;
        let cap = stores["stores"][0]["status"]["capacity"]
            .as_str()?
            .to_string();
        (cap == "256MiB").then_some(())
    })
    .await;

    // Write until the store says it is full.
    // Another failure (a slow fsync past the client's timeout) asks again.
    let (mut acked, mut other) = (0u32, 0u32);
    let refused = loop {
        assert!(acked < 4000, "the store never filled up:\n{}", t.logs());
        match client.put(key(acked), value(acked)).await {
            Ok(()) => acked += 1,
            Err(e) if full_stores(&e).is_some() => break e,
            Err(e) => {
                other += 1;
                assert!(
                    other < 20,
                    "puts kept failing, last with {e:?}:\n{}",
                    t.logs()
                );
            }
        }
    };
    assert_eq!(
        full_stores(&refused),
        Some(vec![1]),
        "not a DiskFull naming store 1: {refused:?}"
    );
    assert!(acked > 100, "full after only {acked} puts:\n{}", t.logs());

    // Reads and deletes still work: deletes are how a client makes room.
    read_back(&client, 0, acked).await;
    client
        .delete(key(0))
        .await
        .expect("a delete on an almost full store");
    assert_eq!(client.get(key(0)).await.unwrap(), None);
    // Still full: a new write is refused again, a transactional one too;
    // the transaction from before commits.
    let again = client.put(key(acked), value(acked)).await.unwrap_err();
    assert!(full_stores(&again).is_some(), "{again:?}");
    let ts = tso.current_timestamp().await.unwrap().version();
    let mut tikv = d.tikv.clone();
    let refused = tikv
        .kv_prewrite(d.prewrite(b"txn:b", b"during", ts, 60_000))
        .await
        .unwrap()
        .into_inner();
    assert!(
        refused
            .region_error
            .as_ref()
            .is_some_and(|e| e.disk_full.is_some()),
        "{refused:?}"
    );
    let commit_ts = tso.current_timestamp().await.unwrap().version();
    let committed = d.commit(&[b"txn:a"], start_ts, commit_ts).await;
    assert!(
        committed.region_error.is_none() && committed.error.is_none(),
        "{committed:?}"
    );
    let got = d.kv_get(b"txn:a", commit_ts).await;
    assert_eq!(got.value, b"before");

    // More room (a bigger capacity): writes are taken again, and every
    // acknowledged write is there.
    t.cluster.stop_store(0).await;
    let config = t.cluster.spec.data_dir.join("tikv.toml");
    std::fs::write(&config, SMALL_STORE.replace("256MB", "4GB")).unwrap();
    t.cluster.start_store(0).unwrap();
    t.wait_ready().await;
    let client = t.raw_client().await;
    client
        .put(key(acked), value(acked))
        .await
        .expect("a write with room again");
    read_back(&client, 1, acked + 1).await;
}
