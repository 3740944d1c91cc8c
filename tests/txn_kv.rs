//! Transactional KV through the official Rust client (`tikv-client`
//! TransactionClient, API V1) against real pd-server and tikv-server
//! processes: Percolator reads and writes, optimistic and pessimistic,
//! async commit and 1PC, lock resolution after a client died mid-commit.

mod common;

use std::time::Duration;

use common::{direct, eventually, TestCluster};
use tikal_proto::kvrpcpb;
use tikv_client::{Key, KvPair, TimestampExt, TransactionClient, TransactionOptions};

async fn client(t: &TestCluster) -> TransactionClient {
    TransactionClient::new(vec![t.pd()])
        .await
        .expect("TransactionClient connects to PD")
}

fn strs(pairs: Vec<KvPair>) -> Vec<(String, String)> {
    pairs
        .into_iter()
        .map(|p| {
            (
                String::from_utf8(Vec::from(p.key().clone())).unwrap(),
                String::from_utf8(p.value().clone()).unwrap(),
            )
        })
        .collect()
}

async fn read(c: &TransactionClient, key: &str) -> Option<String> {
    let mut t = c.begin_optimistic().await.unwrap();
    let v = t.get(key.to_owned()).await.unwrap();
    t.commit().await.unwrap();
    v.map(|v| String::from_utf8(v).unwrap())
}

#[tokio::test(flavor = "multi_thread")]
async fn optimistic_crud_scans_and_snapshot_isolation() {
    let t = TestCluster::start(1).await;
    let c = client(&t).await;

    let mut w = c.begin_optimistic().await.unwrap();
    for (k, v) in [("a", "1"), ("b", "2"), ("c", "3"), ("d", "4"), ("e", "5")] {
        w.put(k.to_owned(), v.to_owned()).await.unwrap();
    }
    // A long value lives in CF default, not inline in the write record.
    w.put("long".to_owned(), "x".repeat(1000)).await.unwrap();
    assert_eq!(
        w.get("a".to_owned()).await.unwrap(),
        Some(b"1".to_vec()),
        "own write"
    );
    w.commit().await.unwrap();

    // A snapshot taken now does not see later commits.
    let mut snap = c.begin_optimistic().await.unwrap();
    let mut u = c.begin_optimistic().await.unwrap();
    u.put("a".to_owned(), "1b".to_owned()).await.unwrap();
    u.delete("b".to_owned()).await.unwrap();
    u.commit().await.unwrap();
    assert_eq!(snap.get("a".to_owned()).await.unwrap(), Some(b"1".to_vec()));
    assert_eq!(snap.get("b".to_owned()).await.unwrap(), Some(b"2".to_vec()));
    snap.rollback().await.unwrap();

    let mut r = c.begin_optimistic().await.unwrap();
    assert_eq!(r.get("a".to_owned()).await.unwrap(), Some(b"1b".to_vec()));
    assert_eq!(r.get("b".to_owned()).await.unwrap(), None, "deleted");
    assert_eq!(
        r.get("long".to_owned()).await.unwrap(),
        Some(vec![b'x'; 1000])
    );
    let got = strs(
        r.batch_get(vec!["a".to_owned(), "c".to_owned(), "zz".to_owned()])
            .await
            .unwrap()
            .collect(),
    );
    let mut got = got;
    got.sort();
    assert_eq!(
        got,
        vec![("a".into(), "1b".into()), ("c".into(), "3".into())]
    );
    let fwd = strs(
        r.scan("a".to_owned().."e".to_owned(), 10)
            .await
            .unwrap()
            .collect(),
    );
    assert_eq!(
        fwd,
        vec![
            ("a".into(), "1b".into()),
            ("c".into(), "3".into()),
            ("d".into(), "4".into())
        ]
    );
    let rev = strs(
        r.scan_reverse("a".to_owned().."e".to_owned(), 2)
            .await
            .unwrap()
            .collect(),
    );
    assert_eq!(
        rev,
        vec![("d".into(), "4".into()), ("c".into(), "3".into())]
    );
    let keys: Vec<Key> = r
        .scan_keys("c".to_owned()..="e".to_owned(), 10)
        .await
        .unwrap()
        .collect();
    assert_eq!(
        keys,
        vec![
            Key::from("c".to_owned()),
            "d".to_owned().into(),
            "e".to_owned().into()
        ]
    );
    r.commit().await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn conflicts_inserts_and_rollbacks() {
    let t = TestCluster::start(1).await;
    let c = client(&t).await;

    // Two optimistic transactions write one key: the second to commit fails.
    let mut t1 = c.begin_optimistic().await.unwrap();
    let mut t2 = c.begin_optimistic().await.unwrap();
    t1.put("k".to_owned(), "t1".to_owned()).await.unwrap();
    t2.put("k".to_owned(), "t2".to_owned()).await.unwrap();
    t1.commit().await.unwrap();
    let err = t2.commit().await.expect_err("write conflict");
    assert!(format!("{err:?}").contains("WriteConflict"), "{err:?}");
    assert_eq!(read(&c, "k").await.as_deref(), Some("t1"));

    // Insert on an existing key is AlreadyExist.
    let mut t3 = c.begin_optimistic().await.unwrap();
    t3.insert("k".to_owned(), "again".to_owned()).await.unwrap();
    let err = t3.commit().await.expect_err("key exists");
    assert!(format!("{err:?}").contains("AlreadyExist"), "{err:?}");
    let mut t4 = c.begin_optimistic().await.unwrap();
    t4.insert("fresh".to_owned(), "new".to_owned())
        .await
        .unwrap();
    t4.commit().await.unwrap();
    assert_eq!(read(&c, "fresh").await.as_deref(), Some("new"));

    // Rollback leaves nothing behind.
    let mut t5 = c.begin_optimistic().await.unwrap();
    t5.put("gone".to_owned(), "x".to_owned()).await.unwrap();
    t5.rollback().await.unwrap();
    assert_eq!(read(&c, "gone").await, None);
}

#[tokio::test(flavor = "multi_thread")]
async fn pessimistic_locking_reads_and_writes() {
    let t = TestCluster::start(1).await;
    let c = client(&t).await;

    let mut p = c.begin_pessimistic().await.unwrap();
    assert_eq!(p.get_for_update("acct".to_owned()).await.unwrap(), None);
    p.put("acct".to_owned(), "100".to_owned()).await.unwrap();
    p.lock_keys(vec!["other".to_owned()]).await.unwrap();
    // While p holds the lock, an optimistic writer of the key cannot commit.
    let mut o = c.begin_optimistic().await.unwrap();
    o.put("other".to_owned(), "o".to_owned()).await.unwrap();
    let ttl = p.send_heart_beat().await.unwrap();
    assert!(ttl > 0, "heartbeat returns the lock's TTL");
    p.commit().await.unwrap();
    assert!(o.commit().await.is_err(), "o started before p committed");
    assert_eq!(read(&c, "acct").await.as_deref(), Some("100"));
    // The locked-only key was not written.
    assert_eq!(read(&c, "other").await, None);

    let mut p2 = c.begin_pessimistic().await.unwrap();
    assert_eq!(
        p2.get_for_update("acct".to_owned()).await.unwrap(),
        Some(b"100".to_vec())
    );
    p2.put("acct".to_owned(), "90".to_owned()).await.unwrap();
    p2.delete("fresh".to_owned()).await.unwrap();
    p2.commit().await.unwrap();
    assert_eq!(read(&c, "acct").await.as_deref(), Some("90"));

    let mut p3 = c.begin_pessimistic().await.unwrap();
    p3.put("acct".to_owned(), "0".to_owned()).await.unwrap();
    p3.rollback().await.unwrap();
    assert_eq!(read(&c, "acct").await.as_deref(), Some("90"));
}

#[tokio::test(flavor = "multi_thread")]
async fn async_commit_and_one_pc() {
    let t = TestCluster::start(1).await;
    let c = client(&t).await;
    for (name, opts) in [
        (
            "async",
            TransactionOptions::new_optimistic().use_async_commit(),
        ),
        ("1pc", TransactionOptions::new_optimistic().try_one_pc()),
        (
            "p-async",
            TransactionOptions::new_pessimistic().use_async_commit(),
        ),
    ] {
        let mut w = c.begin_with_options(opts).await.unwrap();
        for i in 0..3 {
            w.put(format!("{name}-{i}"), format!("v{i}")).await.unwrap();
        }
        let commit_ts = w.commit().await.unwrap();
        assert!(commit_ts.is_some(), "{name}: a commit timestamp");
        for i in 0..3 {
            assert_eq!(
                read(&c, &format!("{name}-{i}")).await,
                Some(format!("v{i}")),
                "{name}"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn async_commit_and_one_pc_too_late_for_max_commit_ts_fall_back_to_2pc() {
    let t = TestCluster::start(1).await;
    let c = client(&t).await;
    let d = direct(&t).await;
    for (name, one_pc) in [("fallback-async", false), ("fallback-1pc", true)] {
        let (k1, k2) = (
            format!("{name}-1").into_bytes(),
            format!("{name}-2").into_bytes(),
        );
        let start_ts = c.current_timestamp().await.unwrap().version();
        // A read far above start_ts raises the store's max_ts past the
        // max_commit_ts the prewrite allows.
        let read_ts = c.current_timestamp().await.unwrap().version() + (10_000 << 18);
        let got = d.kv_get(&k1, read_ts).await;
        assert!(got.not_found && got.error.is_none(), "{got:?}");
        let mut req = d.prewrite(&k1, b"v1", start_ts, 3000);
        req.mutations.push(kvrpcpb::Mutation {
            op: kvrpcpb::Op::Put as i32,
            key: k2.clone(),
            value: b"v2".to_vec(),
            ..Default::default()
        });
        req.use_async_commit = !one_pc;
        req.try_one_pc = one_pc;
        req.secondaries = vec![k2.clone()];
        req.max_commit_ts = start_ts + (1 << 18);
        // A new leader takes async commit and 1PC only once it has synced
        // its max_ts with PD; clients retry until then.
        let resp = eventually(Duration::from_secs(10), "max ts synced", || {
            let (mut tikv, req) = (d.tikv.clone(), req.clone());
            async move {
                let resp = tikv.kv_prewrite(req).await.unwrap().into_inner();
                let not_synced = resp
                    .region_error
                    .as_ref()
                    .is_some_and(|e| e.max_timestamp_not_synced.is_some());
                (!not_synced).then_some(resp)
            }
        })
        .await;
        assert!(
            resp.errors.is_empty() && resp.region_error.is_none(),
            "{resp:?}"
        );
        assert_eq!(
            (resp.min_commit_ts, resp.one_pc_commit_ts),
            (0, 0),
            "{name}: neither async commit nor 1PC"
        );
        // The locks were written: a normal commit makes the values visible.
        let commit_ts = read_ts + 1;
        let resp = d
            .tikv
            .clone()
            .kv_commit(kvrpcpb::CommitRequest {
                context: Some(d.ctx.clone()),
                start_version: start_ts,
                keys: vec![k1.clone(), k2.clone()],
                commit_version: commit_ts,
            })
            .await
            .unwrap()
            .into_inner();
        assert!(
            resp.error.is_none() && resp.region_error.is_none(),
            "{name}: {resp:?}"
        );
        for (k, v) in [(&k1, "v1"), (&k2, "v2")] {
            let got = d.kv_get(k, commit_ts).await;
            assert_eq!(got.value, v.as_bytes(), "{name}: {got:?}");
        }
    }
}

/// Prewrites `key` as a transaction that then vanishes, with a short TTL.
async fn abandoned_prewrite(
    t: &TestCluster,
    c: &TransactionClient,
    key: &[u8],
    ttl_ms: u64,
) -> u64 {
    let start_ts = c.current_timestamp().await.unwrap().version();
    direct(t)
        .await
        .prewrite_ok(key, b"orphan", start_ts, ttl_ms)
        .await;
    start_ts
}

#[tokio::test(flavor = "multi_thread")]
async fn locks_of_a_dead_client_are_resolved_by_readers_and_cleanup() {
    let t = TestCluster::start(1).await;
    let c = client(&t).await;
    let mut w = c.begin_optimistic().await.unwrap();
    w.put("dead".to_owned(), "before".to_owned()).await.unwrap();
    w.commit().await.unwrap();

    // A reader meets the lock. Before its TTL passes the reader pushes the
    // lock's min_commit_ts above itself and reads past it; after, a reader
    // rolls the dead transaction back.
    abandoned_prewrite(&t, &c, b"dead", 200).await;
    assert_eq!(read(&c, "dead").await.as_deref(), Some("before"));
    eventually(
        Duration::from_secs(10),
        "the expired lock is resolved",
        || async {
            let v = read(&c, "dead").await;
            let now = c.current_timestamp().await.ok()?;
            let locks = c.scan_locks(&now, .., 100).await.ok()?;
            (v.as_deref() == Some("before") && locks.is_empty()).then_some(())
        },
    )
    .await;

    // scan_locks lists a lock; cleanup_locks resolves it.
    let start_ts = abandoned_prewrite(&t, &c, b"dead2", 0).await;
    let now = c.current_timestamp().await.unwrap();
    let locks = c.scan_locks(&now, .., 100).await.unwrap();
    assert_eq!(locks.len(), 1, "{locks:?}");
    assert_eq!(locks[0].lock_version, start_ts);
    assert_eq!(locks[0].key, b"dead2");
    c.cleanup_locks(.., &now, Default::default()).await.unwrap();
    assert!(c.scan_locks(&now, .., 100).await.unwrap().is_empty());
    assert_eq!(read(&c, "dead2").await, None, "rolled back");

    // A prewrite of the rolled-back transaction arriving late fails.
    let mut d = direct(&t).await;
    let late = d
        .tikv
        .kv_prewrite(d.prewrite(b"dead2", b"late", start_ts, 1000))
        .await
        .unwrap()
        .into_inner();
    assert!(
        late.errors
            .first()
            .and_then(|e| e.conflict.as_ref())
            .is_some(),
        "{late:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn gc_and_unsafe_destroy_range() {
    let t = TestCluster::start(1).await;
    let c = client(&t).await;
    for v in ["v1", "v2"] {
        let mut w = c.begin_optimistic().await.unwrap();
        w.put("g".to_owned(), v.to_owned()).await.unwrap();
        w.put("u1".to_owned(), v.to_owned()).await.unwrap();
        w.put("u2".to_owned(), v.to_owned()).await.unwrap();
        w.commit().await.unwrap();
    }
    let before_gc = c.current_timestamp().await.unwrap();
    assert!(
        c.gc(before_gc.clone()).await.unwrap(),
        "PD took the safe point"
    );

    // KvGC past PD's GC safe point is refused: it could remove versions a
    // reader or a service safe point still needs.
    let mut d = direct(&t).await;
    let later = c.current_timestamp().await.unwrap();
    let resp = d
        .tikv
        .kv_gc(kvrpcpb::GcRequest {
            context: Some(d.ctx.clone()),
            safe_point: later.version(),
        })
        .await
        .unwrap()
        .into_inner();
    let abort = resp.error.map(|e| e.abort).unwrap_or_default();
    assert!(
        abort.contains("after the cluster's GC safe point"),
        "{abort}"
    );

    // KvGC at the safe point keeps the newest version, drops the rest.
    let resp = d
        .tikv
        .kv_gc(kvrpcpb::GcRequest {
            context: Some(d.ctx.clone()),
            safe_point: before_gc.version(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(
        resp.error.is_none() && resp.region_error.is_none(),
        "{resp:?}"
    );
    assert_eq!(read(&c, "g").await.as_deref(), Some("v2"));

    c.unsafe_destroy_range("u1".to_owned().."u3".to_owned())
        .await
        .unwrap();
    assert_eq!(read(&c, "u1").await, None);
    assert_eq!(read(&c, "u2").await, None);
    assert_eq!(
        read(&c, "g").await.as_deref(),
        Some("v2"),
        "outside the range"
    );
}

/// A stale read (`Context.stale_read`) of `key` at `version`.
async fn stale_get(t: &TestCluster, key: &[u8], version: u64) -> kvrpcpb::GetResponse {
    let d = direct(t).await;
    d.tikv
        .clone()
        .kv_get(kvrpcpb::GetRequest {
            context: Some(kvrpcpb::Context {
                stale_read: true,
                ..d.ctx.clone()
            }),
            key: key.to_vec(),
            version,
        })
        .await
        .unwrap()
        .into_inner()
}

fn safe_ts(resp: &kvrpcpb::GetResponse) -> Option<u64> {
    let e = resp.region_error.as_ref()?;
    Some(e.data_is_not_ready.as_ref()?.safe_ts)
}

#[tokio::test(flavor = "multi_thread")]
async fn stale_reads_are_served_below_the_safe_ts_and_refused_above() {
    let t =
        TestCluster::start_with_config(1, "[resolved-ts]\nadvance-ts-interval = \"100ms\"\n").await;
    let c = client(&t).await;
    let mut w = c.begin_optimistic().await.unwrap();
    w.put("s".to_owned(), "v1".to_owned()).await.unwrap();
    w.commit().await.unwrap();
    let after = c.current_timestamp().await.unwrap().version();

    // Once the store has a PD timestamp past `after`, a stale read there
    // is served.
    let resp = eventually(
        Duration::from_secs(20),
        "the stale read is served",
        || async {
            let r = stale_get(&t, b"s", after).await;
            r.region_error.is_none().then_some(r)
        },
    )
    .await;
    assert_eq!(resp.value, b"v1");

    // A read in the future is not ready: commits may still land below it.
    let future = after + (3_600_000 << 18);
    let resp = stale_get(&t, b"s", future).await;
    let safe = safe_ts(&resp).expect("DataIsNotReady");
    assert!(safe >= after && safe < future, "{resp:?}");

    // A lock in the region holds the safe ts just below it, whatever key
    // the read is for; a normal read of an unlocked key is unaffected.
    let lock_ts = abandoned_prewrite(&t, &c, b"held", 60_000).await;
    let now = c.current_timestamp().await.unwrap().version();
    eventually(
        Duration::from_secs(20),
        "the safe ts stops below the lock",
        || async { (safe_ts(&stale_get(&t, b"s", now).await) == Some(lock_ts - 1)).then_some(()) },
    )
    .await;
    let resp = stale_get(&t, b"s", lock_ts - 1).await;
    assert!(resp.region_error.is_none(), "{resp:?}");
    assert_eq!(resp.value, b"v1");
    assert_eq!(read(&c, "s").await.as_deref(), Some("v1"));
}
