//! PD's gRPC and HTTP APIs, and the store's status server, as seen from
//! outside. (The official client exercises GetMembers, Tso, GetRegion and
//! GetStore in every other test; here the rest are driven directly.)

mod common;

use std::time::Duration;

use common::{get_json, pd_client, TestCluster};
use serde_json::json;
use tikal_proto::keyspacepb::{self, keyspace_client::KeyspaceClient};
use tikal_proto::pdpb;

fn ok(h: &Option<pdpb::ResponseHeader>) {
    let err = h.as_ref().and_then(|h| h.error.clone());
    assert!(err.is_none(), "PD error: {err:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn http_api_has_upstream_shapes() {
    let t = TestCluster::start(1).await;
    let c = &t.cluster;

    let members = c.http_get("/pd/api/v1/members").await.unwrap();
    assert_eq!(members["members"].as_array().unwrap().len(), 1);
    let url = format!("http://{}", t.pd());
    assert_eq!(members["leader"]["client_urls"][0], url.as_str());
    assert!(members["header"]["cluster_id"].as_u64().unwrap() > 0);

    let health = c.http_get("/pd/api/v1/health").await.unwrap();
    assert_eq!(health[0]["health"], true);

    let stores = c.http_get("/pd/api/v1/stores").await.unwrap();
    assert_eq!(stores["count"], 1);
    let store = &stores["stores"][0]["store"];
    assert_eq!(store["state_name"], "Up");
    assert_eq!(
        (&store["state"], &store["node_state"]),
        (&json!(0), &json!(1))
    );
    assert_eq!(store["address"], c.store_addrs[0].as_str());
    let status = &stores["stores"][0]["status"];
    assert!(
        status["capacity"].as_str().unwrap().ends_with('B'),
        "{status}"
    );
    assert_eq!(status["region_count"], 1);
    assert_eq!(status["leader_count"], 1);
    let id = store["id"].as_u64().unwrap();
    let one = c.http_get(&format!("/pd/api/v1/store/{id}")).await.unwrap();
    assert_eq!(one["store"]["id"], id);
    assert!(c.http_get("/pd/api/v1/store/424242").await.is_err());

    let regions = c.http_get("/pd/api/v1/regions").await.unwrap();
    assert_eq!(regions["count"], 1);
    let region = &regions["regions"][0];
    assert_eq!(region["start_key"], "");
    assert_eq!(region["end_key"], "");
    assert_eq!(region["leader"]["store_id"], id);
    assert_eq!(region["peers"][0]["role_name"], "Voter");
    let rid = region["id"].as_u64().unwrap();
    let by_id = c
        .http_get(&format!("/pd/api/v1/region/id/{rid}"))
        .await
        .unwrap();
    assert_eq!(by_id["id"], rid);
    let by_key = c.http_get("/pd/api/v1/region/key/anything").await.unwrap();
    assert_eq!(by_key["id"], rid);

    let config = c.http_get("/pd/api/v1/config").await.unwrap();
    assert_eq!(config["replication"]["max-replicas"], 3);
    assert_eq!(config["schedule"]["max-store-down-time"], "30m0s");
    // One store cannot hold more replicas: the region keeps working as is.
    let operators = c.http_get("/pd/api/v1/operators").await.unwrap();
    assert_eq!(operators, json!([]));
    let none = c.http_get(&format!("/pd/api/v1/operators/{rid}")).await;
    assert!(none.is_err(), "no operator for region {rid}");
}

#[tokio::test(flavor = "multi_thread")]
async fn grpc_metadata_rpcs_answer_and_ids_grow() {
    let t = TestCluster::start(1).await;
    let (mut pd, header) = pd_client(&t).await;

    let boot = pd
        .is_bootstrapped(pdpb::IsBootstrappedRequest {
            header: header.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(boot.bootstrapped);

    let mut last = 0;
    for _ in 0..1100 {
        let r = pd
            .alloc_id(pdpb::AllocIdRequest {
                header: header.clone(),
            })
            .await
            .unwrap()
            .into_inner();
        ok(&r.header);
        assert!(r.id > last);
        last = r.id;
    }

    let stores = pd
        .get_all_stores(pdpb::GetAllStoresRequest {
            header: header.clone(),
            exclude_tombstone_stores: true,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(stores.stores.len(), 1);

    let scan = pd
        .scan_regions(pdpb::ScanRegionsRequest {
            header: header.clone(),
            start_key: vec![],
            limit: 10,
            end_key: vec![],
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(scan.regions.len(), 1);
    let region = scan.regions[0].region.clone().unwrap();
    assert!(scan.regions[0].leader.is_some());

    let by_id = pd
        .get_region_by_id(pdpb::GetRegionByIdRequest {
            header: header.clone(),
            region_id: region.id,
            need_buckets: false,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(by_id.region.unwrap().id, region.id);
    let prev = pd
        .get_prev_region(pdpb::GetRegionRequest {
            header: header.clone(),
            region_key: b"k".to_vec(),
            need_buckets: false,
        })
        .await
        .unwrap()
        .into_inner();
    assert!(prev.region.is_none(), "the first region has no predecessor");

    let split = pd
        .ask_batch_split(pdpb::AskBatchSplitRequest {
            header: header.clone(),
            region: Some(region.clone()),
            split_count: 2,
        })
        .await
        .unwrap()
        .into_inner();
    ok(&split.header);
    assert_eq!(split.ids.len(), 2);
    assert!(split
        .ids
        .iter()
        .all(|s| s.new_region_id > last && s.new_peer_ids.len() == region.peers.len()));

    let cfg = pd
        .get_cluster_config(pdpb::GetClusterConfigRequest {
            header: header.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(cfg.cluster.unwrap().max_peer_count, 3);

    let mut ks = KeyspaceClient::connect(format!("http://{}", t.pd()))
        .await
        .unwrap();
    let default = ks
        .load_keyspace(keyspacepb::LoadKeyspaceRequest {
            header: header.clone(),
            name: "DEFAULT".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(default.keyspace.unwrap().id, 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn gc_safe_points_only_advance_and_survive_restart() {
    let mut t = TestCluster::start(1).await;
    let (mut pd, header) = pd_client(&t).await;
    let update = |sp| pdpb::UpdateGcSafePointRequest {
        header: header.clone(),
        safe_point: sp,
    };
    let r = pd
        .update_gc_safe_point(update(100))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.new_safe_point, 100);
    let r = pd
        .update_gc_safe_point(update(50))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.new_safe_point, 100, "the safe point never moves back");

    // The answer is the lowest safe point a live service holds, never
    // below the GC safe point. A service asking to keep versions GC may
    // already have removed is told so (the answer is above its request),
    // and not kept, as PD does.
    let service = |header: &Option<pdpb::RequestHeader>, id: &[u8], ttl, safe_point| {
        pdpb::UpdateServiceGcSafePointRequest {
            header: header.clone(),
            service_id: id.to_vec(),
            ttl,
            safe_point,
        }
    };
    for (id, safe_point) in [(&b"br"[..], 150), (b"cdc", 50)] {
        let svc = pd
            .update_service_gc_safe_point(service(&header, id, 3600, safe_point))
            .await
            .unwrap()
            .into_inner();
        ok(&svc.header);
        assert_eq!(svc.min_safe_point, 150, "{id:?} at {safe_point}");
        assert_eq!(svc.service_id, b"br");
    }
    // A GC driver sets its candidate as service `gc_worker` and learns how
    // far the others let it go (as TiDB's GC worker does).
    let svc = pd
        .update_service_gc_safe_point(service(&header, b"gc_worker", i64::MAX, 300))
        .await
        .unwrap()
        .into_inner();
    assert_eq!((svc.service_id, svc.min_safe_point), (b"br".to_vec(), 150));
    (pd.update_service_gc_safe_point(service(&header, b"gc_worker", 0, 0)))
        .await
        .unwrap();

    t.cluster.kill_pd();
    t.cluster.start_pd().unwrap();
    t.wait_ready().await;
    let (mut pd, header) = pd_client(&t).await;
    let r = pd
        .get_gc_safe_point(pdpb::GetGcSafePointRequest {
            header: header.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.safe_point, 100);

    // A live service safe point (150) caps the GC safe point; removing the
    // service lifts the cap.
    let r = pd
        .update_gc_safe_point(pdpb::UpdateGcSafePointRequest {
            header: header.clone(),
            safe_point: 200,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.new_safe_point, 150, "capped by the service safe point");
    (pd.update_service_gc_safe_point(service(&header, b"br", 0, 0)))
        .await
        .unwrap();
    let r = pd
        .update_gc_safe_point(pdpb::UpdateGcSafePointRequest {
            header,
            safe_point: 200,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        r.new_safe_point, 200,
        "the late service (50) was never kept"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn status_server_reports_metrics_status_and_config() {
    let t = TestCluster::start(1).await;
    let client = t.raw_client().await;
    client.put("m".to_owned(), "1".to_owned()).await.unwrap();
    client.get("m".to_owned()).await.unwrap();

    let status = &t.cluster.status_addrs[0];
    let metrics = t.metrics(0).await;
    for kind in ["raw_put", "raw_get"] {
        let line = metrics
            .lines()
            .find(|l| {
                l.starts_with("tikv_grpc_msg_duration_seconds_count")
                    && l.contains(&format!("type=\"{kind}\""))
            })
            .unwrap_or_else(|| panic!("no count for {kind} in:\n{metrics}"));
        let n: f64 = line.rsplit(' ').next().unwrap().parse().unwrap();
        assert!(n >= 1.0, "{line}");
    }
    assert!(metrics.contains("tikv_grpc_msg_duration_seconds_bucket"));

    let s = get_json(&format!("http://{status}/status")).await;
    assert_eq!(s["leader_count"], 1);
    let c = get_json(&format!("http://{status}/config")).await;
    assert_eq!(c["server"]["addr"], t.cluster.store_addrs[0].as_str());
    assert_eq!(c["storage"]["api-version"], 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn location_labels_keep_replicas_on_distinct_hosts() {
    // Every store says its zone in its config; hosts are set online.
    let t = TestCluster::start_with_configs(
        4,
        "[server]\nlabels = { zone = \"z1\" }\n",
        "[replication]\nmax-replicas = 1\nlocation-labels = [\"zone\", \"host\"]\n",
    )
    .await;
    let c = &t.cluster;
    let stores = c.http_get("/pd/api/v1/stores").await.unwrap();
    let mut ids: Vec<u64> = (stores["stores"].as_array().unwrap().iter())
        .map(|s| {
            let labels = &s["store"]["labels"];
            assert_eq!(labels, &json!([{"key": "zone", "value": "z1"}]), "{s}");
            s["store"]["id"].as_u64().unwrap()
        })
        .collect();
    ids.sort_unstable();
    assert_eq!(ids.len(), 4);
    let regions = c.http_get("/pd/api/v1/regions").await.unwrap();
    let leader = regions["regions"][0]["leader"]["store_id"]
        .as_u64()
        .unwrap();
    // The leader's store shares host h1 with the store PD would pick
    // first by region count and id alone.
    let others: Vec<u64> = ids.iter().copied().filter(|i| *i != leader).collect();
    let host_of = |id: u64| match id {
        id if id == leader || id == others[0] => "h1",
        id if id == others[1] => "h2",
        _ => "h3",
    };
    for id in &ids {
        common::pd_post(
            &t,
            &format!("/pd/api/v1/store/{id}/label"),
            json!({"host": host_of(*id)}),
        )
        .await;
    }
    common::pd_post(&t, "/pd/api/v1/config", json!({"max-replicas": 3})).await;

    let hosts = common::eventually(Duration::from_secs(60), "3 voters on 3 hosts", || async {
        let all = common::regions(&t, 3).await?;
        let region = all.first()?;
        let mut hosts: Vec<&str> = (region["peers"].as_array()?.iter())
            .filter_map(|p| p["store_id"].as_u64())
            .map(host_of)
            .collect();
        hosts.sort_unstable();
        Some(hosts.join(","))
    })
    .await;
    assert_eq!(hosts, "h1,h2,h3");
}

/// Region boundaries PD shows (start keys after the first), once every
/// region has its one voter.
async fn boundaries(t: &TestCluster) -> Option<Vec<Vec<u8>>> {
    let all = common::regions(t, 1).await?;
    Some(
        all[1..]
            .iter()
            .map(|r| common::hex_key(r, "start_key"))
            .collect(),
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn regions_split_at_given_keys_or_their_middle_and_merge_by_request() {
    // One store, one replica: a merge needs fully replicated regions.
    let t = TestCluster::start_with_configs(
        1,
        "[raftstore]\npd-heartbeat-tick-interval = \"1s\"\n",
        "[replication]\nmax-replicas = 1\n",
    )
    .await;
    let raw = t.raw_client().await;
    let keys: Vec<Vec<u8>> = (0..40).map(|i| format!("k{i:02}").into_bytes()).collect();
    for k in &keys {
        raw.put(k.clone(), vec![7; 100]).await.unwrap();
    }
    let wait = Duration::from_secs(30);
    let hex = |k: &[u8]| k.iter().map(|b| format!("{b:02X}")).collect::<String>();
    let region_at = |key: &'static [u8]| {
        let t = &t;
        async move {
            let all = common::regions(t, 1).await.unwrap();
            let holds = |r: &&serde_json::Value| {
                let (start, end) = (
                    common::hex_key(r, "start_key"),
                    common::hex_key(r, "end_key"),
                );
                start.as_slice() <= key && (end.is_empty() || key < end.as_slice())
            };
            all.iter().find(holds).unwrap()["id"].as_u64().unwrap()
        }
    };

    // `pd-ctl operator add split-region <id> --policy=usekey --keys=...`.
    let id = region_at(b"k00").await;
    let at = json!({"name": "split-region", "region_id": id, "policy": "usekey",
                    "keys": [hex(b"k30"), hex(b"k10")]});
    common::pd_post(&t, "/pd/api/v1/operators", at).await;
    common::eventually(wait, "regions split at k10 and k30", || async {
        (boundaries(&t).await? == [b"k10".to_vec(), b"k30".to_vec()]).then_some(())
    })
    .await;

    // `--policy=scan` on [k10, k30): twenty keys of one size, so the
    // boundary nearest the middle of its bytes is k20.
    let id = region_at(b"k10").await;
    let half = json!({"name": "split-region", "region_id": id, "policy": "scan"});
    common::pd_post(&t, "/pd/api/v1/operators", half).await;
    let want = [b"k10".to_vec(), b"k20".to_vec(), b"k30".to_vec()];
    common::eventually(wait, "region [k10, k30) split at k20", || async {
        (boundaries(&t).await? == want).then_some(())
    })
    .await;

    // `pd-ctl operator add merge-region <source> <target>`: [k10, k20)
    // into [k20, k30).
    let (source, target) = (region_at(b"k10").await, region_at(b"k20").await);
    let merge = json!({"name": "merge-region", "source_region_id": source,
                       "target_region_id": target});
    common::pd_post(&t, "/pd/api/v1/operators", merge).await;
    common::eventually(wait, "[k10, k20) merged into [k20, k30)", || async {
        (boundaries(&t).await? == [b"k10".to_vec(), b"k30".to_vec()]).then_some(())
    })
    .await;

    // Every key is still there, across the new boundaries. (The limit is
    // the key count: the official Rust client 0.4 goes on scanning from
    // the key space's start after the last region, whose end is empty,
    // until its limit is used up.)
    let scanned = raw.scan(b"k".to_vec()..b"l".to_vec(), 40).await.unwrap();
    let got: Vec<Vec<u8>> = scanned
        .into_iter()
        .map(|p| p.key().clone().into())
        .collect();
    assert_eq!(got, keys);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_split_table_is_scattered_as_tidb_asks() {
    // Two stores, one replica: the two regions of a group end one on
    // each store. Nothing else moves them.
    let t = TestCluster::start_with_configs(
        2,
        "[raftstore]\npd-heartbeat-tick-interval = \"1s\"\n",
        "[replication]\nmax-replicas = 1\n",
    )
    .await;
    for s in tikal_pd::schedule::SCHEDULERS {
        common::pd_delete(&t, &format!("/pd/api/v1/schedulers/{s}")).await;
    }
    let wait = Duration::from_secs(30);
    let operators = format!("{}/pd/api/v1/operators", t.cluster.pd_url());
    common::eventually(wait, "no operator running", || async {
        get_json(&operators)
            .await
            .as_array()?
            .is_empty()
            .then_some(())
    })
    .await;
    let raw = t.raw_client().await;
    let keys: Vec<Vec<u8>> = (0..20).map(|i| format!("k{i:02}").into_bytes()).collect();
    for k in &keys {
        raw.put(k.clone(), vec![7; 100]).await.unwrap();
    }
    let all = common::regions(&t, 1).await.unwrap();
    let id = all[0]["id"].as_u64().unwrap();
    let at = json!({"name": "split-region", "region_id": id, "policy": "usekey",
                    "keys": ["6B3130"]});
    common::pd_post(&t, "/pd/api/v1/operators", at).await;
    common::eventually(wait, "the region split at k10", || async {
        (boundaries(&t).await? == [b"k10".to_vec()]).then_some(())
    })
    .await;
    let on_store = |r: &serde_json::Value| r["leader"]["store_id"].as_u64();
    let all = common::regions(&t, 1).await.unwrap();
    assert_eq!(on_store(&all[0]), on_store(&all[1]), "{all:?}");
    let ids: Vec<u64> = all.iter().map(|r| r["id"].as_u64().unwrap()).collect();

    // As TiDB and client-go ask after splitting a table.
    let (mut pd, header) = pd_client(&t).await;
    let req = pdpb::ScatterRegionRequest {
        header: header.clone(),
        group: "table-42".into(),
        regions_id: ids.clone(),
        ..Default::default()
    };
    let r = pd.scatter_region(req).await.unwrap().into_inner();
    ok(&r.header);
    assert_eq!(r.finished_percentage, 100);
    common::eventually(wait, "one region on each store", || async {
        let all = common::regions(&t, 1).await?;
        let stores: std::collections::BTreeSet<u64> =
            all.iter().map(on_store).collect::<Option<_>>()?;
        (all.len() == 2 && stores.len() == 2).then_some(())
    })
    .await;
    // client-go's WaitScatterRegionFinish: the region that moved shows
    // its scatter done; the one already in place needed no operator (its
    // last one is still the split's).
    let success = pdpb::OperatorStatus::Success as i32;
    let want = [
        (None, "admin-split-region".to_string(), success),
        (None, "scatter-region".to_string(), success),
    ];
    common::eventually(wait, "the scatter shown done", || {
        let (mut pd, header, ids, want) = (pd.clone(), header.clone(), ids.clone(), want.clone());
        async move {
            let mut ended = vec![];
            for region_id in ids {
                let header = header.clone();
                let req = pdpb::GetOperatorRequest { header, region_id };
                let op = pd.get_operator(req).await.ok()?.into_inner();
                let error = op.header.and_then(|h| h.error).map(|e| e.r#type);
                let desc = String::from_utf8_lossy(&op.desc).to_string();
                ended.push((error, desc, op.status));
            }
            ended.sort();
            (ended == want).then_some(())
        }
    })
    .await;
    let scanned = raw.scan(b"k".to_vec()..b"l".to_vec(), 20).await.unwrap();
    let got: Vec<Vec<u8>> = scanned
        .into_iter()
        .map(|p| p.key().clone().into())
        .collect();
    assert_eq!(got, keys);
}
