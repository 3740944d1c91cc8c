//! A store keeps its identity across restarts; a wiped store on a known
//! address is refused with upstream's "duplicated store address" error;
//! a first region prepared for a bootstrap another store won goes;
//! a restart may change how many threads serve it
//! (`[server] grpc-concurrency`).

mod common;

use common::TestCluster;

async fn store_ids(t: &TestCluster) -> Vec<u64> {
    let stores = t.cluster.http_get("/pd/api/v1/stores").await.unwrap();
    stores["stores"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["store"]["id"].as_u64().unwrap())
        .collect()
}

/// What the restart tests wrote under "identity".
async fn kept(t: &TestCluster) -> Option<Vec<u8>> {
    t.raw_client()
        .await
        .get("identity".to_owned())
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn restart_on_same_data_dir_keeps_store_id_and_data() {
    let mut t = TestCluster::start(1).await;
    let ids = store_ids(&t).await;
    assert_eq!(ids.len(), 1);
    t.raw_client()
        .await
        .put("identity".to_owned(), "kept".to_owned())
        .await
        .unwrap();

    t.cluster.stop_store(0).await;
    t.cluster.start_store(0).unwrap();
    t.wait_ready().await;

    assert_eq!(
        store_ids(&t).await,
        ids,
        "restart must not register a new store"
    );
    assert_eq!(kept(&t).await, Some(b"kept".to_vec()));

    // `[server] grpc-concurrency`: 0 threads is refused at start; one
    // thread serves.
    t.cluster.stop_store(0).await;
    let config = t.cluster.spec.data_dir.join("tikv.toml");
    let base = std::fs::read_to_string(&config).unwrap();
    assert!(!base.contains("[server]"), "{base}");
    std::fs::write(&config, format!("{base}\n[server]\ngrpc-concurrency = 0\n")).unwrap();
    let stderr = t.start_store_refused(0).await;
    assert!(
        stderr.contains("server.grpc-concurrency must be between 1 and"),
        "stderr: {stderr}"
    );
    std::fs::write(&config, format!("{base}\n[server]\ngrpc-concurrency = 1\n")).unwrap();
    t.cluster.start_store(0).unwrap();
    t.wait_ready().await;
    assert_eq!(kept(&t).await, Some(b"kept".to_vec()));
}

#[tokio::test(flavor = "multi_thread")]
async fn wiped_store_on_known_address_fails_fast_with_duplicated_address() {
    let mut t = TestCluster::start(1).await;
    let old_id = store_ids(&t).await[0];
    t.cluster.kill_store(0);
    t.cluster.wipe_store_data(0).unwrap();
    let stderr = t.start_store_refused(0).await;
    assert!(
        stderr.contains("duplicated store address"),
        "stderr: {stderr}"
    );
    assert!(
        stderr.contains(&format!("already registered by id:{old_id}")),
        "{stderr}"
    );
    let new_id = store_ids(&t).await;
    assert_eq!(new_id, vec![old_id], "PD must not register the duplicate");
    // The error names the new id too.
    assert!(
        stderr.contains("duplicated store address: id:"),
        "stderr: {stderr}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_store_that_lost_the_bootstrap_race_before_hearing_so_drops_its_region() {
    use tikal_proto::metapb;
    use tikal_raftstore::{load_prepared_bootstrap, load_regions, write_prepared_bootstrap};
    // The cluster was bootstrapped by store 1. Another store had prepared
    // its own first region (the whole key space, one voter there) and
    // crashed before PD's answer: at its restart PD is bootstrapped, and
    // the region must go, or it would serve a second copy of every key.
    let t = TestCluster::start(1).await;
    let pd = tikal_server::pd_client::PdClient::connect(&[t.pd()], &Default::default())
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let kv = tikal_engine::KvEngine::open(dir.path()).unwrap();
    let whole = |id: u64| metapb::Region {
        id,
        region_epoch: Some(metapb::RegionEpoch {
            conf_ver: 1,
            version: 1,
        }),
        peers: vec![metapb::Peer {
            id: id + 1,
            store_id: 999,
            ..Default::default()
        }],
        ..Default::default()
    };
    let lost = whole(pd.alloc_id().await.unwrap());
    write_prepared_bootstrap(&kv, &lost).unwrap();
    let store = metapb::Store {
        address: "127.0.0.1:1".into(),
        ..Default::default()
    };
    tikal_server::node::bootstrap(&pd, &kv, &store, 1)
        .await
        .unwrap();
    assert!(
        load_regions(&kv).unwrap().is_empty(),
        "the lost region is gone"
    );
    assert_eq!(load_prepared_bootstrap(&kv).unwrap(), None);

    // One PD knows (its bootstrap went through, the answer was lost) stays.
    let won = whole(pd_first_region(&t).await.expect("PD's first region"));
    let dir = tempfile::tempdir().unwrap();
    let kv = tikal_engine::KvEngine::open(dir.path()).unwrap();
    write_prepared_bootstrap(&kv, &won).unwrap();
    tikal_server::node::bootstrap(&pd, &kv, &store, 1)
        .await
        .unwrap();
    assert_eq!(load_regions(&kv).unwrap().len(), 1, "kept");
    assert_eq!(load_prepared_bootstrap(&kv).unwrap(), None, "the mark goes");
}

/// The id of the cluster's first region, as PD's HTTP API lists it.
async fn pd_first_region(t: &TestCluster) -> Option<u64> {
    let regions = t.cluster.http_get("/pd/api/v1/regions").await.ok()?;
    regions["regions"][0]["id"].as_u64()
}
