//! Sharding end to end: 1 PD and 3 stores configured as TiKV's own client
//! test suite configures them (a region splits past 10 keys, checked every
//! second), driven with the official Rust client. Regions split by
//! themselves as data arrives, every replica splits alike, and clients
//! find every key across region boundaries.
//!
//! One cluster serves the phases in order (each builds on the regions the
//! last one made), so the file pays for one cluster start.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::CLIENT_SUITE_STORE_CONFIG;
use common::{direct_at, eventually, eventually_ok, hex_key, regions, TestCluster};
use tikal_proto::kvrpcpb::{ChecksumAlgorithm, KeyRange, RawChecksumRequest, SplitRegionRequest};
use tikal_proto::metapb::Region;
use tikv_client::{CheckLevel, RawClient, TransactionClient, TransactionOptions};

const KEYS: usize = 2_000;
const WAIT: Duration = Duration::from_secs(120);

fn raw_key(i: usize) -> Vec<u8> {
    format!("raw{i:05}").into_bytes()
}

fn txn_key(i: usize) -> Vec<u8> {
    format!("txn{i:05}").into_bytes()
}

fn value(i: usize) -> Vec<u8> {
    format!("value-{i}").into_bytes()
}

/// CRC64-XOR checksum, keys and bytes of `pairs`, as RawChecksum computes it.
fn local_checksum<'a>(pairs: impl Iterator<Item = (&'a Vec<u8>, &'a Vec<u8>)>) -> (u64, u64, u64) {
    let (mut sum, mut kvs, mut bytes) = (0u64, 0u64, 0u64);
    for (k, v) in pairs {
        let mut digest = crc64fast::Digest::new();
        digest.write(k);
        digest.write(v);
        sum ^= digest.sum64();
        kvs += 1;
        bytes += (k.len() + v.len()) as u64;
    }
    (sum, kvs, bytes)
}

/// RawChecksum of `[start, end)` summed over every region that holds part
/// of it, each asked at its leader (as client-go's checksum does). Leaders
/// move while the test runs (balance-leader), so PD's answer can be a
/// heartbeat old: a region error starts the sum again from fresh regions,
/// as a client retries after NotLeader.
async fn cluster_checksum(t: &TestCluster, start: &[u8], end: &[u8]) -> (u64, u64, u64) {
    eventually(WAIT, "a checksum with no region error", || {
        checksum_once(t, start, end)
    })
    .await
}

async fn checksum_once(t: &TestCluster, start: &[u8], end: &[u8]) -> Option<(u64, u64, u64)> {
    let all = regions(t, 3).await?;
    let (mut sum, mut kvs, mut bytes) = (0u64, 0u64, 0u64);
    for region in all {
        let (rs, re) = (hex_key(&region, "start_key"), hex_key(&region, "end_key"));
        if (!re.is_empty() && re.as_slice() <= start) || rs.as_slice() >= end {
            continue;
        }
        let d = direct_at(t, &rs).await;
        let r = d
            .tikv
            .clone()
            .raw_checksum(RawChecksumRequest {
                context: Some(d.ctx.clone()),
                algorithm: ChecksumAlgorithm::Crc64Xor as i32,
                ranges: vec![KeyRange {
                    start_key: start.max(rs.as_slice()).to_vec(),
                    end_key: if re.is_empty() {
                        end.to_vec()
                    } else {
                        end.min(re.as_slice()).to_vec()
                    },
                }],
            })
            .await
            .expect("RawChecksum")
            .into_inner();
        assert!(r.error.is_empty(), "{r:?}");
        if let Some(e) = r.region_error {
            eprintln!("checksum retried: {}", e.message);
            return None;
        }
        sum ^= r.checksum;
        kvs += r.total_kvs;
        bytes += r.total_bytes;
    }
    Some((sum, kvs, bytes))
}

/// SplitRegion at `keys`, sent to the leader of the region holding `at`;
/// retried from a fresh PD answer on a region error (the leader moved).
async fn split(t: &TestCluster, at: &[u8], keys: Vec<Vec<u8>>, is_raw_kv: bool) -> Vec<Region> {
    eventually(WAIT, "SplitRegion with no region error", || async {
        let d = direct_at(t, at).await;
        let resp = d
            .tikv
            .clone()
            .split_region(SplitRegionRequest {
                context: Some(d.ctx.clone()),
                split_keys: keys.clone(),
                is_raw_kv,
                ..Default::default()
            })
            .await
            .expect("SplitRegion")
            .into_inner();
        match resp.region_error {
            Some(e) => {
                eprintln!("SplitRegion retried: {}", e.message);
                None
            }
            None => Some(resp.regions),
        }
    })
    .await
}

/// `[lo, hi)` cut at every region boundary, from the last piece to the
/// first: reverse scans one region at a time. (The official Rust client
/// 0.4 walks regions forward even for a reverse scan and sends each region
/// the whole range, which TiKV, like Tikal, refuses with KeyNotInRegion;
/// client-go locates a reverse scan's regions from its end.) With
/// `encoded`, boundaries are memcomparable and the pieces user keys.
fn region_ranges(
    regions: &[serde_json::Value],
    lo: &[u8],
    hi: &[u8],
    encoded: bool,
) -> Vec<(Vec<u8>, Vec<u8>)> {
    let user = |k: Vec<u8>| match tikal_codec::mvcc_key::decode_key(&k) {
        Some((key, _)) if encoded => key,
        _ => k,
    };
    let mut cuts: Vec<Vec<u8>> = regions
        .iter()
        .map(|r| user(hex_key(r, "start_key")))
        .filter(|k| k.as_slice() > lo && k.as_slice() < hi)
        .collect();
    cuts.sort();
    cuts.insert(0, lo.to_vec());
    cuts.push(hi.to_vec());
    let mut pieces: Vec<(Vec<u8>, Vec<u8>)> = cuts
        .windows(2)
        .map(|w| (w[0].clone(), w[1].clone()))
        .collect();
    pieces.reverse();
    pieces
}

/// A forward and a reverse scan of everything found exactly `data`.
fn assert_scans(
    data: &BTreeMap<Vec<u8>, Vec<u8>>,
    forward: Vec<tikv_client::KvPair>,
    backward: Vec<tikv_client::KvPair>,
    what: &str,
) {
    let pairs = |scan: Vec<tikv_client::KvPair>| -> Vec<(Vec<u8>, Vec<u8>)> {
        scan.into_iter()
            .map(|p| (Vec::<u8>::from(p.key().clone()), p.value().clone()))
            .collect()
    };
    let expected: Vec<(Vec<u8>, Vec<u8>)> = data.clone().into_iter().collect();
    assert_eq!(pairs(forward), expected, "{what} scan");
    let mut reversed = expected;
    reversed.reverse();
    assert_eq!(pairs(backward), reversed, "{what} reverse scan");
}

#[tokio::test(flavor = "multi_thread")]
async fn regions_split_as_data_arrives_and_clients_find_every_key() {
    let t = TestCluster::start_with_config(3, CLIENT_SUITE_STORE_CONFIG).await;
    eventually(WAIT, "3 voters on the first region", || regions(&t, 3)).await;
    let raw = RawClient::new(vec![t.pd()]).await.unwrap();
    let txn = TransactionClient::new(vec![t.pd()]).await.unwrap();

    // Raw and transactional data apart, as API V1 needs (the transactional
    // client decodes every region boundary it meets as a memcomparable
    // key, so no region may start at a raw key and hold transactional
    // ones): a raw split at a boundary valid for both.
    let apart = tikal_codec::mvcc_key::encode_key(b"s");
    let halves = split(&t, &apart, vec![apart.clone()], true).await;
    assert_eq!(halves.len(), 2, "{halves:?}");
    assert_eq!(halves[0].end_key, apart);

    // ---- 2,000 raw and 2,000 transactional keys, in batches ----
    let raw_data: BTreeMap<Vec<u8>, Vec<u8>> = (0..KEYS).map(|i| (raw_key(i), value(i))).collect();
    let txn_data: BTreeMap<Vec<u8>, Vec<u8>> = (0..KEYS).map(|i| (txn_key(i), value(i))).collect();
    let raw_pairs: Vec<(Vec<u8>, Vec<u8>)> = raw_data.clone().into_iter().collect();
    // Regions split meanwhile: a new region's election may outlast the
    // client's own retries, so a batch is asked again (it is idempotent).
    for batch in raw_pairs.chunks(100) {
        eventually_ok(&t, WAIT, "a raw batch put", || {
            raw.batch_put(batch.to_vec())
        })
        .await;
    }
    let txn_pairs: Vec<(Vec<u8>, Vec<u8>)> = txn_data.clone().into_iter().collect();
    for batch in txn_pairs.chunks(100) {
        eventually_ok(&t, WAIT, "a transactional batch", || async {
            // A failed attempt is dropped unfinished; readers resolve
            // what it left.
            let options = TransactionOptions::new_optimistic().drop_check(CheckLevel::None);
            let mut tx = txn.begin_with_options(options).await?;
            for (k, v) in batch {
                tx.put(k.clone(), v.clone()).await?;
            }
            tx.commit().await.map(drop)
        })
        .await;
    }

    // Ten keys per region at most: far more than 40 regions, each with 3
    // voters, once the split checker has caught up (no region holds more
    // than region-max-keys, so none will split again).
    let stored: Vec<Vec<u8>> = raw_data
        .keys()
        .cloned()
        .chain(
            txn_data
                .keys()
                .map(|k| tikal_codec::mvcc_key::encode_key(k)),
        )
        .collect();
    let all = eventually(
        WAIT,
        "every region split down to 10 keys, 3 voters each",
        || async {
            let all = regions(&t, 3).await?;
            let settled = all.iter().all(|r| {
                let (start, end) = (hex_key(r, "start_key"), hex_key(r, "end_key"));
                let held = stored
                    .iter()
                    .filter(|k| **k >= start && (end.is_empty() || **k < end))
                    .count();
                held <= 10
            });
            settled.then_some(all)
        },
    )
    .await;
    assert!(all.len() >= 40, "{} regions", all.len());
    eprintln!("{} regions", all.len());

    // ---- every key reads back, one by one, batched, scanned both ways ----
    for (k, v) in &raw_data {
        assert_eq!(
            raw.get(k.clone()).await.unwrap().as_ref(),
            Some(v),
            "raw get"
        );
    }
    let got = raw.batch_get(raw_data.keys().cloned()).await.unwrap();
    assert_eq!(got.len(), KEYS, "raw batch get finds every key");
    for pair in got {
        assert_eq!(
            raw_data.get(Vec::<u8>::from(pair.key().clone()).as_slice()),
            Some(pair.value())
        );
    }
    let forward = raw
        .scan(b"raw".to_vec()..b"rax".to_vec(), 10_000)
        .await
        .unwrap();
    let mut backward = vec![];
    for (lo, hi) in region_ranges(&all, b"raw", b"rax", false) {
        backward.extend(raw.scan_reverse(lo..hi, 10_000).await.unwrap());
    }
    assert_scans(&raw_data, forward, backward, "raw");

    let mut snapshot = txn.snapshot(
        txn.current_timestamp().await.unwrap(),
        tikv_client::TransactionOptions::new_optimistic(),
    );
    for (k, v) in &txn_data {
        assert_eq!(
            snapshot.get(k.clone()).await.unwrap().as_ref(),
            Some(v),
            "txn get"
        );
    }
    let got: Vec<_> = snapshot
        .batch_get(txn_data.keys().cloned())
        .await
        .unwrap()
        .collect();
    assert_eq!(got.len(), KEYS, "txn batch get finds every key");
    let forward: Vec<tikv_client::KvPair> = snapshot
        .scan(b"txn".to_vec()..b"txo".to_vec(), 10_000)
        .await
        .unwrap()
        .collect();
    // The transactional client shards a reverse scan by region itself, so
    // one call crosses every boundary.
    let backward: Vec<tikv_client::KvPair> = snapshot
        .scan_reverse(b"txn".to_vec()..b"txo".to_vec(), 10_000)
        .await
        .unwrap()
        .collect();
    assert_scans(&txn_data, forward, backward, "txn");

    assert_eq!(
        cluster_checksum(&t, b"raw", b"rax").await,
        local_checksum(raw_data.iter()),
        "raw checksum over every region"
    );

    // ---- SplitRegion at client-given keys; transactions span them ----
    let split_at: Vec<Vec<u8>> = vec![b"zz-b".to_vec(), b"zz-d".to_vec()];
    let encoded = tikal_codec::mvcc_key::encode_key(b"zz-a");
    let pieces = split(&t, &encoded, split_at.clone(), false).await;
    let bounds: Vec<Vec<u8>> = pieces.iter().map(|r| r.end_key.clone()).collect();
    let expected: Vec<Vec<u8>> = split_at
        .iter()
        .map(|k| tikal_codec::mvcc_key::encode_key(k))
        .collect();
    assert_eq!(
        &bounds[..2],
        expected.as_slice(),
        "the new regions end at the encoded keys"
    );
    for round in 0..5 {
        let mut tx = txn.begin_optimistic().await.unwrap();
        for k in ["zz-a", "zz-c", "zz-e"] {
            tx.put(k.as_bytes().to_vec(), format!("{round}").into_bytes())
                .await
                .unwrap();
        }
        tx.commit().await.unwrap();
    }
    let mut snapshot = txn.snapshot(
        txn.current_timestamp().await.unwrap(),
        tikv_client::TransactionOptions::new_optimistic(),
    );
    for k in ["zz-a", "zz-c", "zz-e"] {
        assert_eq!(
            snapshot.get(k.as_bytes().to_vec()).await.unwrap(),
            Some(b"4".to_vec())
        );
    }
}
