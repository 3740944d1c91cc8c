//! API V2 and keyspaces, end to end: stores at `api-version = 2` with
//! `enable-ttl`, driven by the official clients configured for a keyspace
//! (`Config::with_default_keyspace()` / `with_keyspace(name)`).

mod common;

use std::time::Duration;

use common::{eventually, get_json, TestCluster};
use tikv_client::{Config, KvPair, RawClient, TransactionClient};

const V2: &str = "[storage]\napi-version = 2\nenable-ttl = true\n";

fn config(keyspace: Option<&str>) -> Config {
    match keyspace {
        None => Config::default().with_default_keyspace(),
        Some(name) => Config::default().with_keyspace(name),
    }
}

async fn raw(t: &TestCluster, keyspace: Option<&str>) -> RawClient {
    RawClient::new_with_config(vec![t.pd()], config(keyspace))
        .await
        .expect("a V2 RawClient connects")
}

async fn txn(t: &TestCluster, keyspace: Option<&str>) -> TransactionClient {
    TransactionClient::new_with_config(vec![t.pd()], config(keyspace))
        .await
        .expect("a V2 TransactionClient connects")
}

fn keys(pairs: &[KvPair]) -> Vec<String> {
    pairs
        .iter()
        .map(|p| String::from_utf8_lossy(p.key().into()).into_owned())
        .collect()
}

fn kv(k: &str, v: &str) -> KvPair {
    KvPair::new(k.to_owned(), v.to_owned())
}

/// Waits until PD knows at least `count` regions, each on 3 voters with a
/// leader: a fresh split's peers are created and replicated before the
/// clients use them.
async fn settled(t: &TestCluster, count: usize) {
    eventually(Duration::from_secs(60), "regions on 3 voters", || async {
        common::regions(t, 3)
            .await
            .filter(|all| all.len() >= count)
            .map(|_| ())
    })
    .await;
}

async fn create_keyspace(t: &TestCluster, name: &str) -> serde_json::Value {
    let resp = reqwest::Client::new()
        .post(format!("http://{}/pd/api/v2/keyspaces", t.pd()))
        .json(&serde_json::json!({ "name": name }))
        .send()
        .await
        .expect("PD answers");
    let status = resp.status();
    let body: serde_json::Value = resp.json().await.expect("JSON");
    assert!(status.is_success(), "create {name}: {status} {body}");
    body
}

/// Every raw operation of the earlier issues, TTL included, through a
/// client of `keyspace`, on keys that start with `p`.
async fn raw_operations(c: &RawClient, p: &str) {
    let k = |s: &str| format!("{p}{s}");
    c.put(k("a"), "1".to_owned()).await.unwrap();
    assert_eq!(c.get(k("a")).await.unwrap(), Some(b"1".to_vec()));
    c.batch_put(vec![kv(&k("b"), "2"), kv(&k("c"), "3"), kv(&k("d"), "4")])
        .await
        .unwrap();
    let got = c.batch_get(vec![k("a"), k("c"), k("zz")]).await.unwrap();
    assert_eq!(keys(&got).len(), 2);
    let all = c.scan(k("")..k("~"), 10).await.unwrap();
    assert_eq!(keys(&all), vec![k("a"), k("b"), k("c"), k("d")]);
    let rev = c.scan_reverse(k("")..k("~"), 3).await.unwrap();
    assert_eq!(keys(&rev), vec![k("d"), k("c"), k("b")]);
    let both = c
        .batch_scan(vec![k("a")..k("b"), k("c")..k("~")], 10)
        .await
        .unwrap();
    assert_eq!(keys(&both), vec![k("a"), k("c"), k("d")]);

    // Deletes leave tombstones that read as absent everywhere.
    c.delete(k("a")).await.unwrap();
    c.batch_delete(vec![k("b")]).await.unwrap();
    assert_eq!(c.get(k("a")).await.unwrap(), None);
    assert_eq!(c.get_key_ttl_secs(k("a")).await.unwrap(), None);
    assert!(c.batch_get(vec![k("a"), k("b")]).await.unwrap().is_empty());
    let all = c.scan(k("")..k("~"), 10).await.unwrap();
    assert_eq!(keys(&all), vec![k("c"), k("d")]);

    // TTL: remaining seconds, then gone for every read.
    c.put_with_ttl(k("t"), "soon".to_owned(), 5).await.unwrap();
    c.batch_put_with_ttl(vec![kv(&k("t2"), "soon")], vec![5])
        .await
        .unwrap();
    c.put(k("u"), "stays".to_owned()).await.unwrap();
    let ttl = c.get_key_ttl_secs(k("t")).await.unwrap();
    assert!(matches!(ttl, Some(1..=5)), "remaining ttl {ttl:?}");
    assert_eq!(c.get_key_ttl_secs(k("u")).await.unwrap(), Some(0));
    eventually(Duration::from_secs(20), "TTL expiry", || async {
        c.get(k("t")).await.unwrap().is_none().then_some(())
    })
    .await;
    assert_eq!(c.get_key_ttl_secs(k("t")).await.unwrap(), None);
    assert!(c.batch_get(vec![k("t"), k("t2")]).await.unwrap().is_empty());
    let all = c.scan(k("")..k("~"), 10).await.unwrap();
    assert_eq!(keys(&all), vec![k("c"), k("d"), k("u")]);

    // Compare-and-swap, against a deleted key too.
    let atomic = c.with_atomic_for_cas();
    let (prev, ok) = atomic
        .compare_and_swap(k("a"), None, "new".to_owned())
        .await
        .unwrap();
    assert!(ok && prev.is_none(), "a deleted key is absent for CAS");
    let (prev, ok) = atomic
        .compare_and_swap(k("a"), Some("other".into()), "x".to_owned())
        .await
        .unwrap();
    assert!(!ok && prev == Some(b"new".to_vec()));

    c.delete_range(k("")..k("~")).await.unwrap();
    assert!(c.scan(k("")..k("~"), 10).await.unwrap().is_empty());
}

async fn txn_operations(c: &TransactionClient, p: &str, value: &str) {
    let k = |s: &str| format!("{p}{s}");
    let mut t = c.begin_optimistic().await.unwrap();
    t.put(k("a"), value.to_owned()).await.unwrap();
    t.put(k("b"), value.to_owned()).await.unwrap();
    t.commit().await.unwrap();
    let mut t = c.begin_pessimistic().await.unwrap();
    let got = t.get_for_update(k("a")).await.unwrap();
    assert_eq!(got, Some(value.as_bytes().to_vec()));
    t.put(k("c"), value.to_owned()).await.unwrap();
    t.delete(k("b")).await.unwrap();
    t.commit().await.unwrap();
    // Async commit and 1PC.
    use tikv_client::TransactionOptions;
    for (key, opts) in [
        ("e", TransactionOptions::new_optimistic().use_async_commit()),
        ("f", TransactionOptions::new_optimistic().try_one_pc()),
    ] {
        let mut t = c.begin_with_options(opts).await.unwrap();
        t.put(k(key), value.to_owned()).await.unwrap();
        t.commit().await.unwrap();
    }
    let mut snap = c.snapshot(
        c.current_timestamp().await.unwrap(),
        TransactionOptions::new_optimistic(),
    );
    let all = snap.scan(k("")..k("~"), 10).await.unwrap();
    let got: Vec<KvPair> = all.collect();
    assert_eq!(keys(&got), vec![k("a"), k("c"), k("e"), k("f")]);
    let got: Vec<KvPair> = snap
        .batch_get(vec![k("a"), k("b"), k("f")])
        .await
        .unwrap()
        .collect();
    let mut got = keys(&got);
    got.sort();
    assert_eq!(got, vec![k("a"), k("f")]);
    // GC up to now: the latest versions stay.
    assert!(c.gc(c.current_timestamp().await.unwrap()).await.unwrap());
    let mut snap = c.snapshot(
        c.current_timestamp().await.unwrap(),
        TransactionOptions::new_optimistic(),
    );
    assert_eq!(snap.scan(k("")..k("~"), 10).await.unwrap().count(), 4);
}

/// What the clients cannot send, over raw gRPC to DEFAULT's raw region
/// (holding only `same` = `D` by now): checksum over client keys, and the
/// errors for keys, ranges and column families that do not fit API V2.
async fn v2_store_checks(t: &TestCluster) {
    use tikal_proto::kvrpcpb::{
        ApiVersion, KeyRange, RawChecksumRequest, RawGetRequest, RawScanRequest,
    };
    // One line to the region's leader serves every check: PD must not
    // move it meanwhile (its balancing goes on for a while after splits).
    common::stop_scheduling(t).await;
    let mut d = common::direct_at(t, &tikal_codec::mvcc_key::encode_key(b"r\0\0\0same")).await;
    d.ctx.api_version = ApiVersion::V2 as i32;
    let sum = d
        .tikv
        .raw_checksum(RawChecksumRequest {
            context: Some(d.ctx.clone()),
            ranges: vec![KeyRange {
                start_key: b"r\0\0\0".to_vec(),
                end_key: b"r\0\0\x01".to_vec(),
            }],
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(sum.error, "");
    let mut digest = crc64fast::Digest::new();
    digest.write(b"r\0\0\0sameD");
    assert_eq!(
        (sum.checksum, sum.total_kvs, sum.total_bytes),
        (digest.sum64(), 1, 9),
        "the client's key (prefix included, no encoding) and the user value"
    );
    let (tikv, ctx) = (d.tikv.clone(), d.ctx.clone());
    let get = |key: &[u8], cf: &str| {
        let req = RawGetRequest {
            context: Some(ctx.clone()),
            key: key.to_vec(),
            cf: cf.into(),
        };
        let mut tikv = tikv.clone();
        async move { tikv.raw_get(req).await.unwrap().into_inner() }
    };
    let r = get(b"x\0\0\0same", "").await;
    assert!(r.error.contains("Key mode mismatched"), "{r:?}");
    let r = get(b"r\0\0\0same", "lock").await;
    assert!(r.error.contains("cf is deprecated in API V2"), "{r:?}");
    let r = get(b"r\0\0\0same", "").await;
    assert_eq!((r.error.as_str(), r.value.as_slice()), ("", &b"D"[..]));
    let r = d
        .tikv
        .raw_scan(RawScanRequest {
            context: Some(d.ctx.clone()),
            start_key: b"r\0\0\0".to_vec(),
            limit: 10,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let e = r
        .kvs
        .first()
        .and_then(|p| p.error.clone())
        .unwrap_or_default();
    assert!(
        e.abort.contains("Key mode mismatched"),
        "an open end is not a raw range under V2: {e:?}"
    );

    // Hostile V2 keys and ranges are refused; the store keeps serving.
    let long = [b"r\0\0\0".as_slice(), &[0xff; 9000]].concat();
    for key in [&b""[..], b"r", b"r\0", b"x", b"\xff\xff", &long] {
        let r = get(key, "").await;
        let refused = !r.error.is_empty() || r.region_error.is_some();
        assert!(refused || r.not_found, "{key:?}: {r:?}");
    }
    for (start, end, reverse) in [
        (&b"r\0\0\x01"[..], &b"r\0\0\0"[..], false),
        (b"r\0\0\0", b"r\0\0\x01", true),
        (b"r", b"s", false),
        (b"r\0\0\0", b"x\0\0\0", false),
        (b"", b"", true),
        (b"\xff", b"\0", false),
    ] {
        let scan = RawScanRequest {
            context: Some(d.ctx.clone()),
            start_key: start.to_vec(),
            end_key: end.to_vec(),
            limit: 10,
            reverse,
            ..Default::default()
        };
        let answered = d.tikv.raw_scan(scan).await;
        assert!(
            answered.is_err() || answered.as_ref().is_ok_and(|r| r.get_ref().kvs.len() <= 1),
            "{start:?}..{end:?}: {answered:?}"
        );
    }
    let r = get(b"r\0\0\0same", "").await;
    assert_eq!(r.value, b"D", "still serving");

    // ScanLock is not held to a key mode (TiDB's GC worker sends a
    // region's bounds, with a V1 context), as TiKV.
    let mut v1 = d.ctx.clone();
    v1.api_version = ApiVersion::V1 as i32;
    let scan = tikal_proto::kvrpcpb::ScanLockRequest {
        context: Some(v1),
        max_version: u64::MAX,
        limit: 10,
        ..Default::default()
    };
    let r = d.tikv.kv_scan_lock(scan).await.unwrap().into_inner();
    assert!(r.error.is_none() && r.region_error.is_none(), "{r:?}");
}

/// PD's keyspace HTTP API beyond creation: paging, refusals, and state
/// moves (on a keyspace of its own, `tenant_b`, left archived).
async fn keyspace_http_rules(t: &TestCluster) {
    let http = reqwest::Client::new();
    let url = format!("http://{}/pd/api/v2/keyspaces", t.pd());
    let post = |body: serde_json::Value| http.post(&url).json(&body).send();
    let status = |name: serde_json::Value| async { post(name).await.unwrap().status().as_u16() };
    assert_eq!(status(serde_json::json!({"name": "tenant_a"})).await, 409);
    assert_eq!(status(serde_json::json!({"name": "no spaces"})).await, 400);
    assert_eq!(status(serde_json::json!({})).await, 400);
    let b = create_keyspace(t, "tenant_b").await;
    assert_eq!(b["id"], 2);

    let page = get_json(&format!("{url}?limit=2")).await;
    let names: Vec<&str> = page["keyspaces"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["DEFAULT", "tenant_a"]);
    assert_eq!(page["next_page_token"], "2");
    let rest = get_json(&format!("{url}?page_token=2&limit=2")).await;
    assert_eq!(rest["keyspaces"][0]["name"], "tenant_b");
    assert_eq!(rest["next_page_token"], "");

    let put_state = |name: &str, state: &str| {
        http.put(format!("{url}/{name}/state"))
            .json(&serde_json::json!({ "state": state }))
            .send()
    };
    let r = put_state("tenant_b", "disabled").await.unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let r = put_state("tenant_b", "tombstone").await.unwrap();
    assert_eq!(r.status().as_u16(), 400, "disabled cannot go to tombstone");
    let r = put_state("tenant_b", "archived").await.unwrap();
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["state"], "ARCHIVED");
    let r = put_state("DEFAULT", "disabled").await.unwrap();
    assert_eq!(r.status().as_u16(), 400);
    let r = put_state("nobody", "disabled").await.unwrap();
    assert_eq!(r.status().as_u16(), 404);
}

#[tokio::test(flavor = "multi_thread")]
async fn keyspaces_serve_every_operation_and_never_see_each_other() {
    let t = TestCluster::start_with_config(3, V2).await;
    settled(&t, 1).await;
    // Loading DEFAULT splits its raw and transactional ranges off.
    let default = raw(&t, None).await;
    settled(&t, 5).await;

    raw_operations(&default, "k").await;
    txn_operations(&txn(&t, None).await, "k", "default").await;

    let created = create_keyspace(&t, "tenant_a").await;
    assert_eq!(created["id"], 1);
    assert_eq!(created["state"], "ENABLED");
    // Its ranges were split off before it was enabled: two more regions
    // (its lower bounds are DEFAULT's upper ones).
    let regions = get_json(&format!("http://{}/pd/api/v1/regions", t.pd())).await;
    assert!(regions["count"].as_u64().unwrap() >= 7, "{regions}");
    settled(&t, 7).await;
    let again = get_json(&format!("http://{}/pd/api/v2/keyspaces/tenant_a", t.pd())).await;
    assert_eq!(again["id"], 1);
    keyspace_http_rules(&t).await;
    let a = raw(&t, Some("tenant_a")).await;
    raw_operations(&a, "k").await;
    let a_txn = txn(&t, Some("tenant_a")).await;
    txn_operations(&a_txn, "k", "tenant_a").await;

    // Isolation: same keys, different data; a delete_range in A leaves
    // DEFAULT whole.
    default
        .put("same".to_owned(), "D".to_owned())
        .await
        .unwrap();
    a.put("same".to_owned(), "A".to_owned()).await.unwrap();
    a.put("only-a".to_owned(), "A".to_owned()).await.unwrap();
    assert_eq!(
        default.get("same".to_owned()).await.unwrap(),
        Some(b"D".to_vec())
    );
    assert_eq!(a.get("same".to_owned()).await.unwrap(), Some(b"A".to_vec()));
    assert_eq!(default.get("only-a".to_owned()).await.unwrap(), None);
    assert_eq!(
        keys(&a.scan(.., 100).await.unwrap()),
        vec!["only-a", "same"]
    );
    a.delete_range(..).await.unwrap();
    assert!(a.scan(.., 100).await.unwrap().is_empty());
    assert_eq!(keys(&default.scan(.., 100).await.unwrap()), vec!["same"]);
    v2_store_checks(&t).await;
    let mut snap = txn(&t, None).await.snapshot(
        a_txn.current_timestamp().await.unwrap(),
        tikv_client::TransactionOptions::new_optimistic(),
    );
    assert_eq!(
        snap.get("ka".to_owned()).await.unwrap(),
        Some(b"default".to_vec()),
        "DEFAULT's transactional data is its own"
    );
    // unsafe_destroy_range in A leaves DEFAULT's transactional data.
    a_txn.unsafe_destroy_range(..).await.unwrap();
    let ts = a_txn.current_timestamp().await.unwrap();
    let opts = tikv_client::TransactionOptions::new_optimistic;
    let mut in_a = a_txn.snapshot(ts.clone(), opts());
    assert!(in_a.scan(.., 10).await.unwrap().next().is_none());
    let mut in_default = txn(&t, None).await.snapshot(ts, opts());
    assert_eq!(in_default.scan(.., 10).await.unwrap().count(), 4);

    // A V1 client is refused with a clear error, not served.
    let v1 = t.raw_client().await;
    let e = v1.put("k".to_owned(), "v".to_owned()).await.unwrap_err();
    assert!(format!("{e:?}").contains("does not match"), "{e:?}");

    // The replay tool's `-apiversion V2` writes into DEFAULT, through the
    // scheduler, and a V2 client reads every row back.
    let dir = tempfile::tempdir().unwrap();
    let csv = dir.path().join("requests.csv");
    let mut text = String::from("arrival_time,request_max_delay,priority,key,value\n");
    for i in 0..60 {
        let ms = i * 10;
        let prio = ["H", "M", "L"][i % 3];
        text.push_str(&format!(
            "2025-06-01T12:00:00.{ms:03}Z,0.5,{prio},r{i},v{i}\n"
        ));
    }
    std::fs::write(&csv, text).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_tikal"))
        .args(["replay", "-csv", csv.to_str().unwrap(), "-pd", &t.pd()])
        .args(["-table", "usertable", "-apiversion", "V2"])
        .output()
        .expect("tikal runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("Count: 60,") && stdout.contains("Errors: 0"),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rows = default
        .scan("usertable:".to_owned().."usertable;".to_owned(), 100)
        .await
        .unwrap();
    assert_eq!(rows.len(), 60);
    for i in 0..60 {
        let got = default.get(format!("usertable:r{i}")).await.unwrap();
        assert_eq!(got, Some(format!("v{i}").into_bytes()));
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_v1_store_refuses_v2_requests_and_a_v1_data_dir_refuses_v2() {
    let mut t = TestCluster::start(1).await;
    let v1 = t.raw_client().await;
    v1.put("kept".to_owned(), "v1".to_owned()).await.unwrap();
    let v2 = raw(&t, None).await;
    let e = v2.put("k".to_owned(), "v".to_owned()).await.unwrap_err();
    assert!(format!("{e:?}").contains("does not match"), "{e:?}");

    t.cluster.stop_store(0).await;
    let config = t.cluster.spec.data_dir.join("tikv.toml");
    std::fs::write(&config, V2).unwrap();
    let stderr = t.start_store_refused(0).await;
    assert!(
        stderr.contains("unable to switch storage.api-version from V1 to V2"),
        "stderr: {stderr}"
    );

    std::fs::write(&config, "").unwrap();
    t.cluster.start_store(0).unwrap();
    t.wait_ready().await;
    assert_eq!(
        v1.get("kept".to_owned()).await.unwrap(),
        Some(b"v1".to_vec()),
        "the data dir is untouched"
    );
}
