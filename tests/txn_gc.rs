//! Background GC against real pd-server / tikv-server processes: the store
//! follows PD's GC safe point (capped by service safe points), removes old
//! versions but the newest visible one, and resolves expired locks below
//! the safe point — with no KvGC request from anyone.

mod common;

use std::time::Duration;

use common::{direct, eventually, pd_client, Direct, TestCluster};
use tikal_proto::{kvrpcpb, pdpb};
use tikv_client::{TimestampExt, TransactionClient};

async fn get_at(d: &Direct, key: &[u8], version: u64) -> Option<Vec<u8>> {
    let resp = d
        .tikv
        .clone()
        .kv_get(kvrpcpb::GetRequest {
            context: Some(d.ctx.clone()),
            key: key.to_vec(),
            version,
        })
        .await
        .unwrap()
        .into_inner();
    assert!(
        resp.error.is_none() && resp.region_error.is_none(),
        "{resp:?}"
    );
    (!resp.not_found).then_some(resp.value)
}

async fn put(c: &TransactionClient, key: &str, value: Option<Vec<u8>>) -> u64 {
    let mut t = c.begin_optimistic().await.unwrap();
    match value {
        Some(v) => t.put(key.to_owned(), v).await.unwrap(),
        None => t.delete(key.to_owned()).await.unwrap(),
    }
    t.commit().await.unwrap();
    c.current_timestamp().await.unwrap().version()
}

#[tokio::test(flavor = "multi_thread")]
async fn background_gc_follows_the_pd_safe_point() {
    let t = TestCluster::start_with_config(1, "[gc]\npoll-safe-point-interval = \"100ms\"\n").await;
    let c = TransactionClient::new(vec![t.pd()]).await.unwrap();
    let d = direct(&t).await;

    // A transaction that prewrote and died, long before the safe point.
    let dead_ts = c.current_timestamp().await.unwrap().version();
    d.prewrite_ok(b"orphan", b"x", dead_ts, 0).await;

    // Enough keys for several GC batches, each with a hidden old version.
    let many = |i: usize| format!("many{i:04}");
    let mut w = c.begin_optimistic().await.unwrap();
    for i in 0..1200 {
        w.put(many(i), "old").await.unwrap();
    }
    w.commit().await.unwrap();
    let ts_old = c.current_timestamp().await.unwrap().version();
    let mut w = c.begin_optimistic().await.unwrap();
    for i in 0..1200 {
        w.put(many(i), "new").await.unwrap();
    }
    w.commit().await.unwrap();

    let long = vec![b'L'; 1000]; // lives in CF default
    let ts1 = put(&c, "k", Some(b"v1".to_vec())).await;
    put(&c, "gone", Some(b"g".to_vec())).await;
    let ts2 = put(&c, "k", Some(b"v2".to_vec())).await;
    put(&c, "gone", None).await;
    put(&c, "k", Some(long.clone())).await;
    assert_eq!(get_at(&d, b"k", ts1).await.as_deref(), Some(&b"v1"[..]));
    assert_eq!(get_at(&d, b"gone", ts2).await.as_deref(), Some(&b"g"[..]));

    // A backup holds a service safe point at ts2: PD caps the GC safe point
    // there, so what a reader at ts2 sees must survive.
    let (mut pd, header) = pd_client(&t).await;
    let svc = |ttl, safe_point| pdpb::UpdateServiceGcSafePointRequest {
        header: header.clone(),
        service_id: b"backup".to_vec(),
        ttl,
        safe_point,
    };
    pd.update_service_gc_safe_point(svc(3600, ts2))
        .await
        .unwrap();
    let now = c.current_timestamp().await.unwrap().version();
    let r = pd
        .update_gc_safe_point(pdpb::UpdateGcSafePointRequest {
            header: header.clone(),
            safe_point: now,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.new_safe_point, ts2);

    eventually(
        Duration::from_secs(30),
        "GC removes the version hidden below the safe point",
        || async {
            let last = many(1199).into_bytes();
            (get_at(&d, b"k", ts1).await.is_none() && get_at(&d, &last, ts_old).await.is_none())
                .then_some(())
        },
    )
    .await;
    for i in [0, 511, 512, 1199] {
        let key = many(i).into_bytes();
        assert_eq!(get_at(&d, &key, ts_old).await, None, "{}", many(i));
        assert_eq!(get_at(&d, &key, ts2).await.as_deref(), Some(&b"new"[..]));
    }
    assert_eq!(get_at(&d, b"k", ts2).await.as_deref(), Some(&b"v2"[..]));
    assert_eq!(get_at(&d, b"gone", ts2).await.as_deref(), Some(&b"g"[..]));
    // The dead transaction's expired lock was rolled back by GC.
    let locks = c
        .scan_locks(&tikv_client::Timestamp::from_version(now), .., 10)
        .await
        .unwrap();
    assert!(locks.is_empty(), "{locks:?}");
    let mut r = c.begin_optimistic().await.unwrap();
    assert_eq!(r.get("orphan".to_owned()).await.unwrap(), None);
    r.commit().await.unwrap();

    // The backup finishes; the next safe point reaches the present.
    pd.update_service_gc_safe_point(svc(0, 0)).await.unwrap();
    let now = c.current_timestamp().await.unwrap().version();
    let r = pd
        .update_gc_safe_point(pdpb::UpdateGcSafePointRequest {
            header,
            safe_point: now,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.new_safe_point, now);
    eventually(
        Duration::from_secs(30),
        "GC removes versions below the new safe point",
        || async {
            (get_at(&d, b"k", ts2).await.is_none() && get_at(&d, b"gone", ts2).await.is_none())
                .then_some(())
        },
    )
    .await;
    assert_eq!(get_at(&d, b"k", now).await, Some(long));
    let metrics = t.metrics(0).await;
    let counted = |tag: &str| {
        metrics
            .lines()
            .find(|l| l.starts_with("tikv_gcworker_gc_keys") && l.contains(tag))
            .and_then(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    assert!(counted("tag=\"deleted\"") >= 4.0, "{metrics}");
    assert!(counted("tag=\"resolved\"") >= 1.0, "{metrics}");
    // Prometheus text carries the safe point as a float.
    let followed = metrics
        .lines()
        .find_map(|l| l.strip_prefix("tikv_gcworker_autogc_safe_point "))
        .and_then(|v| v.parse::<f64>().ok());
    assert_eq!(followed, Some(now as f64));
}
