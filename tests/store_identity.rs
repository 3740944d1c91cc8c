//! A store keeps its identity across restarts; a wiped store on a known
//! address is refused with upstream's "duplicated store address" error;
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
