//! Raw KV through the official Rust client (`tikv-client`, RawClient, API
//! V1) against real pd-server and tikv-server processes.
//!
//! Scan limits: tikv-client 0.4 continues a scan from the region's end key
//! until the limit is filled, and the last region's end key is empty (= the
//! start of the key space), so a scan whose range holds fewer pairs than its
//! limit re-reads the range. It does the same against TiKV. The tests below
//! therefore pass limits no larger than the pairs in range; out-of-range
//! keys are always present so a store ignoring bounds would still fail.

mod common;

use std::time::Duration;

use common::{eventually, TestCluster};
use tikv_client::{ColumnFamily, KvPair, Value};

fn kv(k: &str, v: &str) -> (Vec<u8>, Vec<u8>) {
    (k.as_bytes().to_vec(), v.as_bytes().to_vec())
}

fn keys(pairs: &[KvPair]) -> Vec<String> {
    pairs
        .iter()
        .map(|p| String::from_utf8(Vec::from(p.key().clone())).unwrap())
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn put_get_delete_and_batches_round_trip() {
    let t = TestCluster::start(1).await;
    let c = t.raw_client().await;

    assert_eq!(c.get("missing".to_owned()).await.unwrap(), None);
    c.put("k1".to_owned(), "v1".to_owned()).await.unwrap();
    assert_eq!(c.get("k1".to_owned()).await.unwrap(), Some(b"v1".to_vec()));
    c.put("k1".to_owned(), "v1b".to_owned()).await.unwrap();
    assert_eq!(c.get("k1".to_owned()).await.unwrap(), Some(b"v1b".to_vec()));
    // An empty value is a value, not a deletion.
    c.put("empty".to_owned(), "".to_owned()).await.unwrap();
    assert_eq!(c.get("empty".to_owned()).await.unwrap(), Some(vec![]));

    c.batch_put(vec![kv("b1", "x1"), kv("b2", "x2"), kv("b3", "x3")])
        .await
        .unwrap();
    let got = c
        .batch_get(vec!["b1".to_owned(), "b3".to_owned(), "nope".to_owned()])
        .await
        .unwrap();
    let mut got: Vec<(String, Value)> = got
        .into_iter()
        .map(|p| {
            let k = String::from_utf8(Vec::from(p.key().clone())).unwrap();
            (k, p.value().clone())
        })
        .collect();
    got.sort();
    assert_eq!(
        got,
        vec![("b1".into(), b"x1".to_vec()), ("b3".into(), b"x3".to_vec())]
    );

    c.delete("k1".to_owned()).await.unwrap();
    assert_eq!(c.get("k1".to_owned()).await.unwrap(), None);
    c.batch_delete(vec!["b1".to_owned(), "b2".to_owned()])
        .await
        .unwrap();
    assert_eq!(c.get("b1".to_owned()).await.unwrap(), None);
    assert_eq!(c.get("b2".to_owned()).await.unwrap(), None);
    assert_eq!(c.get("b3".to_owned()).await.unwrap(), Some(b"x3".to_vec()));
}

#[tokio::test(flavor = "multi_thread")]
async fn scans_honour_limits_key_only_end_keys_and_reverse() {
    let t = TestCluster::start(1).await;
    let c = t.raw_client().await;
    let pairs: Vec<_> = (0..10)
        .map(|i| kv(&format!("s{i}"), &format!("v{i}")))
        .collect();
    c.batch_put(pairs).await.unwrap();
    c.put("t0".to_owned(), "outside".to_owned()).await.unwrap();

    let all = c.scan("s".to_owned().."t".to_owned(), 10).await.unwrap();
    assert_eq!(
        keys(&all),
        (0..10).map(|i| format!("s{i}")).collect::<Vec<_>>()
    );
    assert_eq!(all[3].value(), &b"v3".to_vec());

    let limited = c.scan("s2".to_owned().."t".to_owned(), 3).await.unwrap();
    assert_eq!(keys(&limited), vec!["s2", "s3", "s4"]);

    let bounded = c.scan("s2".to_owned().."s5".to_owned(), 3).await.unwrap();
    assert_eq!(keys(&bounded), vec!["s2", "s3", "s4"]);

    let key_only = c
        .scan_keys("s7".to_owned().."t".to_owned(), 3)
        .await
        .unwrap();
    let key_only: Vec<String> = key_only
        .into_iter()
        .map(|k| String::from_utf8(Vec::from(k)).unwrap())
        .collect();
    assert_eq!(key_only, vec!["s7", "s8", "s9"]);

    let rev = c
        .scan_reverse("s2".to_owned().."s6".to_owned(), 4)
        .await
        .unwrap();
    assert_eq!(keys(&rev), vec!["s5", "s4", "s3", "s2"]);
    let rev_limited = c
        .scan_reverse("s0".to_owned().."t".to_owned(), 2)
        .await
        .unwrap();
    assert_eq!(keys(&rev_limited), vec!["s9", "s8"]);

    let batch = c
        .batch_scan(
            vec![
                "s1".to_owned().."s3".to_owned(),
                "s8".to_owned().."t".to_owned(),
            ],
            10,
        )
        .await
        .unwrap();
    assert_eq!(keys(&batch), vec!["s1", "s2", "s8", "s9"]);
    let batch_limited = c
        .batch_scan(
            vec![
                "s0".to_owned().."s5".to_owned(),
                "s5".to_owned().."t".to_owned(),
            ],
            1,
        )
        .await
        .unwrap();
    assert_eq!(keys(&batch_limited), vec!["s0", "s5"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn delete_range_removes_exactly_the_range() {
    let t = TestCluster::start(1).await;
    let c = t.raw_client().await;
    let pairs: Vec<_> = (0..10).map(|i| kv(&format!("d{i}"), "v")).collect();
    c.batch_put(pairs).await.unwrap();
    c.delete_range("d3".to_owned().."d7".to_owned())
        .await
        .unwrap();
    let left = c.scan("d".to_owned().."e".to_owned(), 6).await.unwrap();
    assert_eq!(c.get("d3".to_owned()).await.unwrap(), None);
    assert_eq!(keys(&left), vec!["d0", "d1", "d2", "d7", "d8", "d9"]);

    // Without `enable-ttl` (the default), TTLs are refused, as TiKV does;
    // a TTL of 0 is no TTL.
    let refused = |e: tikv_client::Error| {
        let text = e.to_string();
        assert!(text.contains("TTL is not enabled"), "{text}");
    };
    refused(
        c.put_with_ttl("t".to_owned(), "v".to_owned(), 5)
            .await
            .unwrap_err(),
    );
    refused(
        c.batch_put_with_ttl(vec![kv("t1", "v"), kv("t2", "v")], vec![0, 5])
            .await
            .unwrap_err(),
    );
    refused(c.get_key_ttl_secs("k1".to_owned()).await.unwrap_err());
    assert_eq!(c.get("t".to_owned()).await.unwrap(), None);
    assert_eq!(c.get("t1".to_owned()).await.unwrap(), None);
    c.put_with_ttl("t".to_owned(), "v".to_owned(), 0)
        .await
        .unwrap();
    assert_eq!(c.get("t".to_owned()).await.unwrap(), Some(b"v".to_vec()));
}

#[tokio::test(flavor = "multi_thread")]
async fn ttl_values_expire_for_every_read_and_report_remaining_ttl() {
    let t = TestCluster::start_with_config(1, "[storage]\nenable-ttl = true\n").await;
    let c = t.raw_client().await;
    c.put_with_ttl("ttl".to_owned(), "soon-gone".to_owned(), 5)
        .await
        .unwrap();
    c.batch_put_with_ttl(vec![kv("ttl-b1", "x"), kv("ttl-b2", "y")], vec![5, 5])
        .await
        .unwrap();
    c.put("forever".to_owned(), "stays".to_owned())
        .await
        .unwrap();
    c.put("ttm".to_owned(), "stays-too".to_owned())
        .await
        .unwrap();

    assert_eq!(
        c.get("ttl".to_owned()).await.unwrap(),
        Some(b"soon-gone".to_vec())
    );
    // Five seconds, so that a slow machine still reads it before expiry.
    let ttl = c.get_key_ttl_secs("ttl".to_owned()).await.unwrap();
    assert!(matches!(ttl, Some(1..=5)), "remaining ttl {ttl:?}");
    assert_eq!(
        c.get_key_ttl_secs("forever".to_owned()).await.unwrap(),
        Some(0)
    );
    assert_eq!(c.get_key_ttl_secs("absent".to_owned()).await.unwrap(), None);

    eventually(Duration::from_secs(20), "TTL expiry", || async {
        c.get("ttl".to_owned())
            .await
            .unwrap()
            .is_none()
            .then_some(())
    })
    .await;
    assert_eq!(c.get("ttl-b1".to_owned()).await.unwrap(), None);
    assert_eq!(c.get_key_ttl_secs("ttl".to_owned()).await.unwrap(), None);
    // Two live keys around the expired ones: a limit of 2 must skip them.
    let scanned = c.scan("f".to_owned().."u".to_owned(), 2).await.unwrap();
    assert_eq!(keys(&scanned), vec!["forever", "ttm"]);
    let got = c
        .batch_get(vec!["ttl-b2".to_owned(), "forever".to_owned()])
        .await
        .unwrap();
    assert_eq!(keys(&got), vec!["forever"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn compare_and_swap_succeeds_only_on_match() {
    let t = TestCluster::start(1).await;
    let c = t.raw_client().await.with_atomic_for_cas();

    // Absent key, expecting absence: swaps in.
    let (prev, ok) = c
        .compare_and_swap("cas".to_owned(), None, "one".to_owned())
        .await
        .unwrap();
    assert!(ok);
    assert_eq!(prev, None);

    // Expecting absence but present: fails and reports the value.
    let (prev, ok) = c
        .compare_and_swap("cas".to_owned(), None, "two".to_owned())
        .await
        .unwrap();
    assert!(!ok);
    assert_eq!(prev, Some(b"one".to_vec()));

    // Wrong expected value: fails, value unchanged.
    let (prev, ok) = c
        .compare_and_swap("cas".to_owned(), Some(b"nope".to_vec()), "two".to_owned())
        .await
        .unwrap();
    assert!(!ok);
    assert_eq!(prev, Some(b"one".to_vec()));
    assert_eq!(
        c.get("cas".to_owned()).await.unwrap(),
        Some(b"one".to_vec())
    );

    // Right expected value: swaps.
    let (prev, ok) = c
        .compare_and_swap("cas".to_owned(), Some(b"one".to_vec()), "two".to_owned())
        .await
        .unwrap();
    assert!(ok);
    assert_eq!(prev, Some(b"one".to_vec()));
    assert_eq!(
        c.get("cas".to_owned()).await.unwrap(),
        Some(b"two".to_vec())
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn concurrent_cas_increments_never_lose_an_update() {
    let t = TestCluster::start(1).await;
    let c = t.raw_client().await.with_atomic_for_cas();
    c.put("counter".to_owned(), 0u64.to_be_bytes().to_vec())
        .await
        .unwrap();
    let mut tasks = vec![];
    for _ in 0..8 {
        let c = c.clone();
        tasks.push(tokio::spawn(async move {
            for _ in 0..20 {
                loop {
                    let cur = c.get("counter".to_owned()).await.unwrap().unwrap();
                    let n = u64::from_be_bytes(cur.clone().try_into().unwrap());
                    let (_, ok) = c
                        .compare_and_swap(
                            "counter".to_owned(),
                            Some(cur),
                            (n + 1).to_be_bytes().to_vec(),
                        )
                        .await
                        .unwrap();
                    if ok {
                        break;
                    }
                }
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    let v = c.get("counter".to_owned()).await.unwrap().unwrap();
    assert_eq!(u64::from_be_bytes(v.try_into().unwrap()), 160);
}

#[tokio::test(flavor = "multi_thread")]
async fn column_families_are_separate_key_spaces() {
    let t = TestCluster::start(1).await;
    let c = t.raw_client().await;
    let write_cf = c.with_cf(ColumnFamily::Write);
    let lock_cf = c.with_cf(ColumnFamily::Lock);
    c.put("cf-key".to_owned(), "in-default".to_owned())
        .await
        .unwrap();
    write_cf
        .put("cf-key".to_owned(), "in-write".to_owned())
        .await
        .unwrap();
    assert_eq!(
        c.get("cf-key".to_owned()).await.unwrap(),
        Some(b"in-default".to_vec())
    );
    assert_eq!(
        write_cf.get("cf-key".to_owned()).await.unwrap(),
        Some(b"in-write".to_vec())
    );
    assert_eq!(lock_cf.get("cf-key".to_owned()).await.unwrap(), None);
    write_cf.delete("cf-key".to_owned()).await.unwrap();
    assert_eq!(write_cf.get("cf-key".to_owned()).await.unwrap(), None);
    assert_eq!(
        c.get("cf-key".to_owned()).await.unwrap(),
        Some(b"in-default".to_vec())
    );
}
