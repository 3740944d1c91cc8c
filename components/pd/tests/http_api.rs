//! The HTTP API's store, region, operator and config answers in upstream's
//! shapes, served in process over a scenario from `common`.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{opts, Sim};
use hyper::{Body, Method, Request, StatusCode};
use serde_json::{json, Value};
use tikal_pd::clock::Clock;
use tikal_pd::config::PdConfig;
use tikal_pd::http::{router, HttpState};
use tikal_pd::service::PdService;
use tikal_proto::{metapb, pdpb};

/// Serves the API over `sim`'s cluster on a free loopback port.
fn serve(sim: &Sim) -> String {
    serve_cluster(sim.cluster.clone())
}

fn serve_cluster(cluster: Arc<tikal_pd::cluster::Cluster>) -> String {
    let state = Arc::new(HttpState {
        pd: PdService {
            cluster,
            member: pdpb::Member::default(),
        },
        config: PdConfig::default(),
    });
    let server = axum::Server::bind(&"127.0.0.1:0".parse().unwrap())
        .serve(router(state).into_make_service());
    let addr = server.local_addr();
    tokio::spawn(server);
    format!("http://{addr}/pd/api/v1")
}

async fn call(method: Method, url: &str) -> (StatusCode, Value) {
    let req = Request::builder()
        .method(method)
        .uri(url)
        .body(Body::empty())
        .unwrap();
    let resp = hyper::Client::new().request(req).await.unwrap();
    let status = resp.status();
    let body = hyper::body::to_bytes(resp.into_body()).await.unwrap();
    let json =
        serde_json::from_slice(&body).unwrap_or_else(|e| panic!("{url}: not JSON ({e}): {body:?}"));
    (status, json)
}

async fn get(url: &str) -> Value {
    let (status, body) = call(Method::GET, url).await;
    assert_eq!(status, StatusCode::OK, "{url}: {body}");
    body
}

#[tokio::test]
async fn stores_show_state_and_upstream_status_fields() {
    let sim = Sim::new(&[1, 2, 3, 4], &[1, 2, 3], opts(3));
    let mut sim = sim;
    sim.step();
    let api = serve(&sim);

    let stores = get(&format!("{api}/stores")).await;
    assert_eq!(stores["count"], 4);
    let one = get(&format!("{api}/store/1")).await;
    assert_eq!(one, stores["stores"][0]);
    let (store, status) = (&one["store"], &one["status"]);
    assert_eq!(store["id"], 1);
    assert_eq!(store["address"], "127.0.0.1:20161");
    assert_eq!(store["state"], 0);
    assert_eq!(store["node_state"], 1, "Serving");
    assert_eq!(store["state_name"], "Up");
    assert_eq!(status["capacity"], "10GiB");
    assert_eq!(status["available"], "6GiB");
    assert_eq!(status["used_size"], "1GiB");
    assert_eq!(status["region_count"], 1);
    assert_eq!(status["leader_count"], 1);
    assert_eq!(status["region_size"], 3);
    assert_eq!(status["start_ts"], "2023-11-14T22:13:20Z");
    assert_eq!(status["last_heartbeat_ts"], "2023-11-14T22:13:20Z");
    assert_eq!(
        get(&format!("{api}/store/4")).await["status"]["region_count"],
        0
    );

    let (code, body) = call(Method::GET, &format!("{api}/store/424242")).await;
    assert_eq!(code, StatusCode::NOT_FOUND);
    assert_eq!(
        body,
        json!("[PD:core:ErrStoreNotFound]store 424242 not found")
    );
    let (code, body) = call(Method::DELETE, &format!("{api}/store/424242")).await;
    assert_eq!((code, body.is_string()), (StatusCode::NOT_FOUND, true));

    let (code, body) = call(Method::DELETE, &format!("{api}/store/4")).await;
    assert_eq!(
        (code, body),
        (StatusCode::OK, json!("The store is set as Offline."))
    );
    let four = get(&format!("{api}/store/4")).await;
    assert_eq!(four["store"]["state_name"], "Offline");
    assert_eq!(four["store"]["state"], 1);
    assert_eq!(four["store"]["node_state"], 2, "Removing");

    sim.store_heartbeats();
    let four = get(&format!("{api}/store/4")).await;
    assert_eq!(four["store"]["state_name"], "Tombstone");
    assert_eq!(
        get(&format!("{api}/stores")).await["count"],
        3,
        "tombstones hidden"
    );
    let all = get(&format!("{api}/stores?state=0&state=2")).await;
    assert_eq!(all["count"], 4);
    let (code, _) = call(Method::DELETE, &format!("{api}/store/4")).await;
    assert_eq!(code, StatusCode::GONE);

    sim.silent.insert(3);
    sim.advance(Duration::from_secs(4));
    let three = get(&format!("{api}/store/3")).await;
    assert_eq!(three["store"]["state_name"], "Down");
}

#[tokio::test]
async fn regions_and_operators_show_peers_by_role_and_the_running_step() {
    let mut sim = Sim::new(&[1, 2], &[1], opts(3));
    assert_eq!(sim.step(), "add learner on store 2");
    assert_eq!(sim.step(), common::QUIET, "the learner is catching up");
    // It has caught up: PD asks for its promotion (not carried out yet).
    assert!(sim.heartbeat().is_some());
    let api = serve(&sim);

    let region = get(&format!("{api}/region/id/1")).await;
    assert_eq!(region["leader"]["store_id"], 1);
    assert_eq!(region["leader"]["role_name"], "Voter");
    let peers = region["peers"].as_array().unwrap();
    assert_eq!(peers.len(), 2);
    assert_eq!(peers[1]["store_id"], 2);
    assert_eq!(peers[1]["role"], 1);
    assert_eq!(peers[1]["role_name"], "Learner");
    assert_eq!(peers[1]["is_learner"], true);
    assert_eq!(region["epoch"]["conf_ver"], 2);
    assert_eq!(region["approximate_size"], 3);
    let regions = get(&format!("{api}/regions")).await;
    assert_eq!(regions["regions"][0], region);

    let ops = get(&format!("{api}/operators")).await;
    let line = ops[0].as_str().unwrap();
    assert!(
        line.starts_with(
            "make-up-replica {add peer: store [2]} (kind:replica,region, region:1(1, 1)"
        ),
        "{line}"
    );
    assert!(line.contains("currentStep:1"), "{line}");
    assert!(line.contains("1:{promote learner peer"), "{line}");
    // Every step's wait, for a 3 MiB region and operator-timeout 10 s:
    // adding the learner 10 s + 6 s a MiB, promoting it 10 s + 0.6 s a MiB.
    assert!(line.ends_with("timeout:[39.8s])"), "{line}");
    let objects = get(&format!("{api}/operators?object")).await;
    assert_eq!(objects[0]["desc"], "make-up-replica");
    assert_eq!(objects[0]["region_id"], 1);
    assert_eq!(objects[0]["status"], 1, "STARTED");
    assert_eq!(
        get(&format!("{api}/operators?kind=leader")).await,
        json!([])
    );
    assert_eq!(get(&format!("{api}/operators?kind=region")).await, ops);

    let one = get(&format!("{api}/operators/1")).await;
    assert_eq!(one, json!(format!("status: RUNNING, operator: {line}")));
    let (code, _) = call(Method::GET, &format!("{api}/operators/99")).await;
    assert_eq!(code, StatusCode::INTERNAL_SERVER_ERROR);

    sim.run();
    assert_eq!(get(&format!("{api}/operators")).await, json!([]));
    let last = get(&format!("{api}/operators/1")).await;
    assert!(
        last.as_str().unwrap().starts_with("status: SUCCESS"),
        "{last}"
    );
}

#[tokio::test]
async fn config_shows_replication_and_schedule_settings() {
    let sim = Sim::new(&[1], &[1], opts(3));
    let api = serve(&sim);
    let config = get(&format!("{api}/config")).await;
    assert_eq!(config["replication"]["max-replicas"], 3);
    assert_eq!(config["schedule"]["max-store-down-time"], "3s");
    assert_eq!(config["schedule"]["operator-timeout"], "10s");
}

/// How many items the JSON array at `url` holds.
async fn array_len(url: &str) -> usize {
    let answer = get(url).await;
    answer
        .as_array()
        .unwrap_or_else(|| panic!("{url}: {answer}"))
        .len()
}

/// The status of a POST of `body` to `url`.
async fn post_code(url: &str, body: Value) -> StatusCode {
    send(Method::POST, url, body).await.0
}

async fn send(method: Method, url: &str, body: Value) -> (StatusCode, Value) {
    let req = Request::builder()
        .method(method)
        .uri(url)
        .body(Body::from(body.to_string()))
        .unwrap();
    let resp = hyper::Client::new().request(req).await.unwrap();
    let status = resp.status();
    let bytes = hyper::body::to_bytes(resp.into_body()).await.unwrap();
    (status, serde_json::from_slice(&bytes).unwrap())
}

#[tokio::test]
async fn config_changes_online_take_effect_and_bad_values_are_refused() {
    let mut fleet = common::fleet::Fleet::new(&[1, 2, 3], 2, |_| vec![1, 2, 3], opts(3));
    let api = serve_cluster(fleet.cluster.clone());
    let schedule = get(&format!("{api}/config/schedule")).await;
    for (key, value) in [
        ("leader-schedule-limit", json!(4)),
        ("region-schedule-limit", json!(2048)),
        ("replica-schedule-limit", json!(64)),
        ("max-merge-region-size", json!(20)),
        ("max-merge-region-keys", json!(200000)),
        ("split-merge-interval", json!("1h0m0s")),
        ("low-space-ratio", json!(0.8)),
        ("high-space-ratio", json!(0.7)),
    ] {
        assert_eq!(schedule[key], value, "{key}");
    }
    assert_eq!(get(&format!("{api}/config")).await["schedule"], schedule);
    // Two small regions, but PD started less than an hour ago: no merge.
    fleet.settle(10, |_| {});
    assert_eq!(fleet.regions.len(), 2);

    let (status, msg) = send(
        Method::POST,
        &format!("{api}/config"),
        json!({"max-merge-region-keys": "many", "split-merge-interval": "0s", "low-space-ratio": 1.5}),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{msg}");
    assert_eq!(
        get(&format!("{api}/config/schedule")).await,
        schedule,
        "unchanged"
    );
    assert_eq!(fleet.settle(3, |_| {}), 1);
    assert_eq!(fleet.regions.len(), 2);
    // The low-space line must stay above the high-space one, also when a
    // change moves both.
    let (status, msg) = send(
        Method::POST,
        &format!("{api}/config"),
        json!({"low-space-ratio": 0.6}),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{msg}");
    let (status, msg) = send(
        Method::POST,
        &format!("{api}/config"),
        json!({"low-space-ratio": 0.6, "high-space-ratio": 0.5}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{msg}");
    let moved = get(&format!("{api}/config/schedule")).await;
    assert_eq!(
        (
            moved["low-space-ratio"].clone(),
            moved["high-space-ratio"].clone()
        ),
        (json!(0.6), json!(0.5))
    );

    let (status, _) = send(
        Method::POST,
        &format!("{api}/config"),
        json!({
            "max-merge-region-keys": 1000,
            "schedule.split-merge-interval": "0s",
            "low-space-ratio": 0.9
        }),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let schedule = get(&format!("{api}/config/schedule")).await;
    assert_eq!(schedule["max-merge-region-keys"], 1000);
    assert_eq!(schedule["low-space-ratio"], 0.9);
    assert_eq!(schedule["split-merge-interval"], "0s");
    fleet.settle(5, |_| {});
    assert_eq!(
        fleet.regions.len(),
        1,
        "merged once allowed: {:?}",
        fleet.log
    );
}

#[tokio::test]
async fn a_config_change_with_a_ttl_lasts_that_long_and_no_longer() {
    // BR pauses merging and raises limits this way while it restores; if
    // it dies, the cluster must not keep them for good.
    let sim = Sim::new(&[1], &[1], opts(3));
    let api = serve(&sim);
    let before = get(&format!("{api}/config/schedule")).await;
    let pause = json!({
        "schedule.max-merge-region-keys": 0,
        "schedule.max-merge-region-size": 0,
        "schedule.leader-schedule-limit": 40,
        "schedule.enable-location-replacement": "false",
        "schedule.max-pending-peer-count": 2147483647u64,
    });
    let (status, msg) = send(Method::POST, &format!("{api}/config?ttlSecond=300"), pause).await;
    assert_eq!(status, StatusCode::OK, "{msg}");
    let paused = get(&format!("{api}/config/schedule")).await;
    assert_eq!(paused["max-merge-region-keys"], 0);
    assert_eq!(paused["leader-schedule-limit"], 40);
    assert_eq!(paused["enable-location-replacement"], "false");
    assert_eq!(sim.cluster.opts().max_merge_region_keys, 0);
    // A lasting change meanwhile stays under the temporary one, and lasts.
    let (status, _) = send(
        Method::POST,
        &format!("{api}/config"),
        json!({"max-merge-region-keys": 1000}),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        get(&format!("{api}/config/schedule")).await["max-merge-region-keys"],
        0
    );
    sim.clock.advance(Duration::from_secs(301));
    let after = get(&format!("{api}/config/schedule")).await;
    assert_eq!(after["max-merge-region-keys"], 1000);
    for key in [
        "max-merge-region-size",
        "leader-schedule-limit",
        "enable-location-replacement",
    ] {
        assert_eq!(after[key], before[key], "{key}");
    }
    // Only upstream's temporary keys, all or none; ttlSecond=0 ends them.
    let url = format!("{api}/config?ttlSecond=60");
    let (status, msg) = send(Method::POST, &url, json!({"max-replicas": 1})).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{msg}");
    let bad = json!({"merge-schedule-limit": 0, "leader-schedule-limit": "many"});
    assert_eq!(post_code(&url, bad).await, StatusCode::BAD_REQUEST);
    assert_eq!(get(&format!("{api}/config/schedule")).await, after);
    let (status, _) = send(Method::POST, &url, json!({"merge-schedule-limit": 0})).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        get(&format!("{api}/config/schedule")).await["merge-schedule-limit"],
        0
    );
    let end = format!("{api}/config?ttlSecond=0");
    assert_eq!(
        post_code(&end, json!({"merge-schedule-limit": 0})).await,
        StatusCode::OK
    );
    assert_eq!(get(&format!("{api}/config/schedule")).await, after);
    let nonsense = format!("{api}/config?ttlSecond=soon");
    assert_eq!(
        post_code(&nonsense, json!({"merge-schedule-limit": 0})).await,
        StatusCode::BAD_REQUEST
    );
}

#[tokio::test]
async fn a_config_section_read_edited_and_posted_back_is_taken() {
    let sim = Sim::new(&[1], &[1], opts(3));
    let api = serve(&sim);
    let url = format!("{api}/config/schedule");
    let mut whole = get(&url).await;
    // Read-only entries (`store-limit`) come back unchanged: no error.
    let (status, msg) = send(Method::POST, &url, whole.clone()).await;
    assert_eq!(status, StatusCode::OK, "{msg}");
    whole["leader-schedule-limit"] = json!(7);
    let (status, msg) = send(Method::POST, &url, whole).await;
    assert_eq!(status, StatusCode::OK, "{msg}");
    assert_eq!(get(&url).await["leader-schedule-limit"], 7);
    // A read-only entry changed is still refused.
    let (status, _) = send(Method::POST, &url, json!({"store-limit": {}})).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    // tiup posts the replication section to its own path.
    let replicate = format!("{api}/config/replicate");
    let (status, msg) = send(Method::POST, &replicate, json!({"max-replicas": 5})).await;
    assert_eq!(status, StatusCode::OK, "{msg}");
    assert_eq!(get(&replicate).await["max-replicas"], 5);
}

#[tokio::test]
async fn a_region_is_found_by_a_binary_or_hex_key_as_pd_ctl_sends_it() {
    // Regions [.., k0001) and [k0001, ..): 0x80 is past "k".
    let mut fleet = common::fleet::Fleet::new(&[1, 2, 3], 2, |_| vec![1, 2, 3], opts(3));
    fleet.settle(10, |_| {});
    let api = serve_cluster(fleet.cluster.clone());
    let start = |v: &Value| v["start_key"].as_str().unwrap_or_default().to_string();
    // pd-ctl `region key` escapes the key's bytes, which are no UTF-8.
    let high = get(&format!("{api}/region/key/%80%00%FF")).await;
    assert_eq!(start(&high), "6B30303031");
    let low = get(&format!("{api}/region/key/a%2Bb+c")).await;
    assert_eq!(start(&low), "");
    let hex = get(&format!("{api}/region/key/6B30303031?format=hex")).await;
    assert_eq!(start(&hex), "6B30303031");
    for bad in ["%8", "%ZZ", "%+1", "zz?format=hex"] {
        let (status, body) = call(Method::GET, &format!("{api}/region/key/{bad}")).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{bad}: {body}");
    }
}

#[tokio::test]
async fn schedulers_are_listed_added_and_removed() {
    let sim = Sim::new(&[1], &[1], opts(3));
    let api = serve(&sim);
    let all = json!([
        "balance-leader-scheduler",
        "balance-region-scheduler",
        "balance-hot-region-scheduler"
    ]);
    assert_eq!(get(&format!("{api}/schedulers")).await, all);
    let one = format!("{api}/schedulers/balance-leader-scheduler");
    assert_eq!(call(Method::DELETE, &one).await.0, StatusCode::OK);
    assert_eq!(call(Method::DELETE, &one).await.0, StatusCode::NOT_FOUND);
    assert_eq!(
        get(&format!("{api}/schedulers")).await,
        json!(["balance-region-scheduler", "balance-hot-region-scheduler"])
    );
    let url = format!("{api}/schedulers");
    let add = |name: &str| send(Method::POST, &url, json!({ "name": name }));
    assert_eq!(add("balance-leader-scheduler").await.0, StatusCode::OK);
    assert_eq!(
        add("balance-leader-scheduler").await.0,
        StatusCode::BAD_REQUEST
    );
    assert_eq!(add("no-such-scheduler").await.0, StatusCode::BAD_REQUEST);
    assert_eq!(array_len(&format!("{api}/schedulers")).await, 3);
}

#[tokio::test]
async fn a_forced_delete_marks_the_store_destroyed_and_frees_its_address() {
    let mut sim = Sim::new(&[1, 2, 3], &[1, 2, 3], opts(3));
    sim.step();
    let api = serve(&sim);
    // Two stores would stay up for three replicas: refused, unless forced
    // (the machine is gone; its replicas are rebuilt once a store joins).
    let (code, _) = call(Method::DELETE, &format!("{api}/store/3")).await;
    assert_eq!(code, StatusCode::BAD_REQUEST);
    let (code, _) = call(Method::DELETE, &format!("{api}/store/3?force=true")).await;
    assert_eq!(code, StatusCode::OK);
    let three = get(&format!("{api}/store/3")).await;
    assert_eq!(three["store"]["state_name"], "Offline");
    assert_eq!(three["store"]["physically_destroyed"], true);
    // It never comes back, and a plain delete does not undo the force.
    let (code, _) = call(Method::POST, &format!("{api}/store/3/state?state=Up")).await;
    assert_eq!(code, StatusCode::GONE);
    let (code, _) = call(Method::DELETE, &format!("{api}/store/3")).await;
    assert_eq!(code, StatusCode::GONE);
    // A new store takes its address at once; the old one, back at it, is
    // refused (the address is the new store's now).
    let old = sim.cluster.store(3).unwrap().meta;
    let new = metapb::Store {
        id: 5,
        address: old.address.clone(),
        version: "8.5.0".into(),
        ..Default::default()
    };
    sim.cluster.put_store(new).unwrap();
    sim.cluster.put_store(old).unwrap_err();
}

#[tokio::test]
async fn a_deleted_store_comes_back_or_its_tombstone_is_forgotten() {
    let mut sim = Sim::new(&[1, 2, 3, 4, 5], &[1, 2, 3], opts(3));
    sim.step();
    let api = serve(&sim);
    let state = |id: u64, to: &str| format!("{api}/store/{id}/state?state={to}");

    // `pd-ctl store cancel-delete`: Offline, then Up again.
    let (code, _) = call(Method::DELETE, &format!("{api}/store/4")).await;
    assert_eq!(code, StatusCode::OK);
    assert_eq!(sim.state_name(4), "Offline");
    let (code, body) = call(Method::POST, &state(4, "Up")).await;
    assert_eq!(
        (code, body),
        (StatusCode::OK, json!("The store's state is updated."))
    );
    assert_eq!(sim.state_name(4), "Up");
    sim.store_heartbeats();
    assert_eq!(sim.state_name(4), "Up", "not buried once back");
    // Up again is no change; Offline through this path as DELETE does.
    let (code, _) = call(Method::POST, &state(4, "up")).await;
    assert_eq!(code, StatusCode::OK);
    let (code, _) = call(Method::POST, &state(4, "Offline")).await;
    assert_eq!(code, StatusCode::OK);
    assert_eq!(sim.state_name(4), "Offline");
    let (code, body) = call(Method::POST, &state(4, "Tombstone")).await;
    assert_eq!(
        (code, body),
        (StatusCode::BAD_REQUEST, json!("invalid state Tombstone"))
    );
    let (code, _) = call(Method::POST, &state(424242, "Up")).await;
    assert_eq!(code, StatusCode::NOT_FOUND);

    // Buried, it cannot come back; `remove-tombstone` forgets it.
    sim.store_heartbeats();
    assert_eq!(sim.state_name(4), "Tombstone");
    let (code, body) = call(Method::POST, &state(4, "Up")).await;
    assert_eq!(code, StatusCode::GONE, "{body}");
    assert_eq!(get(&format!("{api}/stores?state=2")).await["count"], 1);
    let (code, body) = call(Method::DELETE, &format!("{api}/stores/remove-tombstone")).await;
    assert_eq!(
        (code, body),
        (StatusCode::OK, json!("Remove tombstone successfully."))
    );
    assert_eq!(get(&format!("{api}/stores?state=2")).await["count"], 0);
    let (code, _) = call(Method::GET, &format!("{api}/store/4")).await;
    assert_eq!(code, StatusCode::NOT_FOUND);
    assert_eq!(get(&format!("{api}/stores")).await["count"], 4);
    // Forgotten for good: what a restarted PD loads has no store 4.
    let kept: Vec<u64> = (sim.cluster.meta)
        .scan_msgs::<metapb::Store>(tikal_pd::storage::STORE_PREFIX)
        .unwrap()
        .iter()
        .map(|s| s.id)
        .collect();
    assert_eq!(kept, vec![1, 2, 3, 5]);
}

#[tokio::test]
async fn a_running_operator_is_cancelled_by_request() {
    let mut sim = Sim::new(&[1, 2], &[1], opts(3));
    assert_eq!(sim.step(), "add learner on store 2");
    let api = serve(&sim);
    assert_eq!(array_len(&format!("{api}/operators")).await, 1);

    let (code, body) = call(Method::DELETE, &format!("{api}/operators/1")).await;
    assert_eq!(
        (code, body),
        (StatusCode::OK, json!("The pending operator is canceled."))
    );
    assert_eq!(get(&format!("{api}/operators")).await, json!([]));
    let last = get(&format!("{api}/operators/1")).await;
    assert!(
        last.as_str()
            .unwrap()
            .starts_with("status: CANCEL, operator: make-up-replica"),
        "{last}"
    );
    let (code, body) = call(Method::DELETE, &format!("{api}/operators/1")).await;
    assert_eq!(
        (code, body),
        (
            StatusCode::INTERNAL_SERVER_ERROR,
            json!("[PD:operator:ErrOperatorNotFound]operator not found")
        )
    );
    let (code, _) = call(Method::DELETE, &format!("{api}/operators/x")).await;
    assert_eq!(code, StatusCode::BAD_REQUEST);
    // The replica checker takes the region up again from where it is.
    sim.run();
    assert_eq!(sim.voter_stores(), vec![1, 2]);
}

#[tokio::test]
async fn store_weights_are_set_checked_and_shown_in_the_scores() {
    let mut sim = Sim::new(&[1, 2, 3], &[1, 2, 3], opts(3));
    sim.step();
    let api = serve(&sim);
    let weight = format!("{api}/store/1/weight");

    let (code, body) = send(Method::POST, &weight, json!({"leader": 2, "region": 0.5})).await;
    assert_eq!(
        (code, body),
        (StatusCode::OK, json!("The store's weight is updated."))
    );
    let status = &get(&format!("{api}/store/1")).await["status"];
    assert_eq!(status["leader_weight"], 2.0);
    assert_eq!(status["region_weight"], 0.5);
    assert_eq!(status["leader_count"], 1);
    assert_eq!(status["leader_score"], 0.5, "one leader over weight 2");
    assert_eq!(status["region_size"], 3);
    assert_eq!(status["region_score"], 6.0, "3 MiB over weight 0.5");
    let other = &get(&format!("{api}/store/2")).await["status"];
    assert_eq!(
        (&other["leader_weight"], &other["region_weight"]),
        (&json!(1.0), &json!(1.0))
    );

    for (body, why) in [
        (json!({"region": 1}), "leader weight unset"),
        (json!({"leader": 1}), "region weight unset"),
        (
            json!({"leader": -1, "region": 1}),
            "bad format leader weight",
        ),
        (
            json!({"leader": 1, "region": "2"}),
            "bad format region weight",
        ),
    ] {
        let (code, answer) = send(Method::POST, &weight, body).await;
        assert_eq!((code, answer), (StatusCode::BAD_REQUEST, json!(why)));
    }
    let status = &get(&format!("{api}/store/1")).await["status"];
    assert_eq!(
        status["leader_weight"], 2.0,
        "refused changes change nothing"
    );
    let (code, _) = send(
        Method::POST,
        &format!("{api}/store/424242/weight"),
        json!({"leader": 1, "region": 1}),
    )
    .await;
    assert_eq!(code, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn peers_are_added_moved_and_removed_by_request() {
    let mut sim = Sim::new(&[1, 2, 3, 4], &[1, 2, 3], opts(3));
    sim.step();
    let api = serve(&sim);
    let ops = format!("{api}/operators");
    let ask = |body: Value| send(Method::POST, &ops, body);

    // `pd-ctl operator add transfer-peer 1 3 4`.
    let (code, body) = ask(json!({
        "name": "transfer-peer", "region_id": 1, "from_store_id": 3, "to_store_id": 4
    }))
    .await;
    assert_eq!(
        (code, body),
        (StatusCode::OK, json!("The operator is created."))
    );
    let line = get(&ops).await[0].as_str().unwrap().to_string();
    assert!(
        line.starts_with("admin-move-peer {mv peer: store [3] to [4]} (kind:admin,region"),
        "{line}"
    );
    // One at a time per region.
    let (code, body) = ask(json!({"name": "add-peer", "region_id": 1, "store_id": 3})).await;
    assert_eq!(code, StatusCode::BAD_REQUEST);
    assert_eq!(body, json!("region 1 already has an operator"));
    assert_eq!(
        sim.run(),
        [
            "add learner on store 4",
            "-",
            "promote on store 4",
            "remove store 3",
            "-"
        ]
    );
    assert_eq!(sim.voter_stores(), vec![1, 2, 4]);

    // `remove-peer` of the leader's peer: leadership moves away first,
    // then the replica checker makes up the third replica.
    let (code, _) = ask(json!({"name": "remove-peer", "region_id": 1, "store_id": 1})).await;
    assert_eq!(code, StatusCode::OK);
    let log = sim.run();
    assert!(log[0].starts_with("transfer leader to store"), "{log:?}");
    assert_eq!(log[1], "remove store 1", "{log:?}");
    assert_eq!(sim.voter_stores().len(), 3, "{log:?}");

    // `add-peer` on the store without a peer: a learner, then a voter.
    let free = [1, 2, 3, 4]
        .into_iter()
        .find(|s| sim.peer_on(*s).is_none())
        .unwrap();
    let (code, _) = ask(json!({"name": "add-peer", "region_id": 1, "store_id": free})).await;
    assert_eq!(code, StatusCode::OK);
    let kinds = get(&format!("{ops}?object")).await;
    assert_eq!(kinds[0]["desc"], "admin-add-peer");
    let log = sim.run();
    assert_eq!(
        log[..3],
        [
            &*format!("add learner on store {free}"),
            "-",
            &*format!("promote on store {free}")
        ]
    );

    // Refused: what cannot be done now, and what is not a request.
    let has = sim.voter_stores()[0];
    for (body, why) in [
        (
            json!({"name": "add-peer", "region_id": 1, "store_id": 9}),
            "store 9 is not up",
        ),
        (
            json!({"name": "add-peer", "region_id": 1, "store_id": has}),
            &*format!("region 1 already has a peer on store {has}"),
        ),
        (
            json!({"name": "add-learner", "region_id": 1, "store_id": free}),
            "operator \"add-learner\" is not supported",
        ),
        (
            json!({"name": "remove-peer", "region_id": 99, "store_id": 1}),
            "region 99 not found",
        ),
        (
            json!({"name": "add-peer", "region_id": 1}),
            "store_id is required (a number)",
        ),
        (
            json!({"name": "transfer-region", "region_id": 1}),
            "operator \"transfer-region\" is not supported",
        ),
    ] {
        assert_eq!(ask(body).await, (StatusCode::BAD_REQUEST, json!(why)));
    }
}

#[tokio::test]
async fn store_labels_are_set_and_deleted_and_the_cluster_described() {
    let mut sim = Sim::new(&[1, 2, 3, 4], &[1, 2, 3], opts(3));
    sim.step();
    let api = serve(&sim);
    let label = format!("{api}/store/1/label");
    let labels = |sim: &Sim| -> Vec<(String, String)> {
        let meta = sim.cluster.store(1).unwrap().meta;
        meta.labels.into_iter().map(|l| (l.key, l.value)).collect()
    };
    let pairs = |p: &[(&str, &str)]| -> Vec<(String, String)> {
        p.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    };

    // `pd-ctl store label 1 zone=z1 host=h1`: merged.
    let (code, body) = send(Method::POST, &label, json!({"zone": "z1", "host": "h1"})).await;
    assert_eq!(
        (code, body),
        (StatusCode::OK, json!("The store's label is updated."))
    );
    let (code, _) = send(Method::POST, &label, json!({"host": "h2", "rack": "r1"})).await;
    assert_eq!(code, StatusCode::OK);
    assert_eq!(
        labels(&sim),
        pairs(&[("host", "h2"), ("zone", "z1"), ("rack", "r1")])
    );
    let shown = &get(&format!("{api}/store/1")).await["store"]["labels"];
    assert_eq!(shown[0], json!({"key": "host", "value": "h2"}));
    // `--rewrite` (`?force`): exactly these.
    let (code, _) = send(
        Method::POST,
        &format!("{label}?force=true"),
        json!({"zone": "z2"}),
    )
    .await;
    assert_eq!(code, StatusCode::OK);
    assert_eq!(labels(&sim), pairs(&[("zone", "z2")]));
    // `--delete`: the key as a JSON string.
    let (code, body) = send(Method::DELETE, &label, json!("zone")).await;
    assert_eq!(
        (code, body),
        (
            StatusCode::OK,
            json!("The label zone is deleted for store 1.")
        )
    );
    assert!(labels(&sim).is_empty());
    let (code, body) = send(Method::DELETE, &label, json!("zone")).await;
    assert_eq!(
        (code, body),
        (
            StatusCode::INTERNAL_SERVER_ERROR,
            json!("the label key zone does not exist")
        )
    );
    for bad in [
        json!({"-zone": "z"}),
        json!({"zone": "a b"}),
        json!({"zone": 1}),
        json!(["zone"]),
    ] {
        let (code, _) = send(Method::POST, &label, bad.clone()).await;
        assert_eq!(code, StatusCode::BAD_REQUEST, "{bad}");
    }
    assert!(labels(&sim).is_empty(), "refused: unchanged");
    let (code, _) = send(
        Method::POST,
        &format!("{api}/store/9/label"),
        json!({"a": "b"}),
    )
    .await;
    assert_eq!(code, StatusCode::NOT_FOUND);

    // The regions of a store, and how many there are.
    let on_1 = get(&format!("{api}/regions/store/1")).await;
    assert_eq!(on_1["count"], 1);
    assert_eq!(on_1["regions"][0]["id"], 1);
    assert_eq!(
        get(&format!("{api}/regions/store/4")).await,
        json!({"count": 0, "regions": []})
    );
    assert_eq!(
        get(&format!("{api}/regions/count")).await,
        json!({"count": 1, "regions": null})
    );

    // `pd-ctl cluster`, version, status, ping.
    let cluster = get(&format!("{api}/cluster")).await;
    assert_eq!(cluster["id"], sim.cluster.cluster_id);
    assert_eq!(cluster["max_peer_count"], 3);
    assert_eq!(
        get(&format!("{api}/version")).await["version"],
        tikal_pd::PD_COMPAT_VERSION
    );
    let status = get(&format!("{api}/status")).await;
    assert_eq!(status["start_timestamp"], 1_700_000_000);
    let req = Request::builder()
        .uri(format!("{api}/ping"))
        .body(Body::empty())
        .unwrap();
    let resp = hyper::Client::new().request(req).await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
}

#[tokio::test]
async fn a_tombstone_a_running_operator_names_is_kept() {
    let mut sim = Sim::new(&[1, 2, 3, 4, 5], &[1, 2, 3], opts(3));
    sim.step();
    let api = serve(&sim);
    // An operator asked for by hand will put a replica on store 4 ...
    let add = json!({"name": "add-peer", "region_id": 1, "store_id": 4});
    let (code, _) = send(Method::POST, &format!("{api}/operators"), add).await;
    assert_eq!(code, StatusCode::OK);
    // ... which is deleted and buried before the region's next heartbeat.
    let (code, _) = call(Method::DELETE, &format!("{api}/store/4")).await;
    assert_eq!(code, StatusCode::OK);
    sim.store_heartbeats();
    assert_eq!(sim.state_name(4), "Tombstone");

    let remove = format!("{api}/stores/remove-tombstone");
    let (code, body) = call(Method::DELETE, &remove).await;
    assert_eq!(
        (code, body),
        (StatusCode::INTERNAL_SERVER_ERROR, json!("failed stores: 4"))
    );
    assert_eq!(sim.state_name(4), "Tombstone", "still known");
    let (code, _) = call(Method::DELETE, &format!("{api}/operators/1")).await;
    assert_eq!(code, StatusCode::OK);
    let (code, _) = call(Method::DELETE, &remove).await;
    assert_eq!(code, StatusCode::OK);
    assert!(sim.cluster.store(4).is_err(), "forgotten");
}

#[tokio::test]
async fn a_region_is_split_by_request_at_given_keys_or_at_its_middle() {
    let mut sim = Sim::new(&[1, 2, 3], &[1, 2, 3], opts(3));
    // Two regions led by store 1 after the split: no leader moves here.
    for s in ["balance-leader-scheduler", "balance-region-scheduler"] {
        sim.cluster.remove_scheduler(s).unwrap();
    }
    sim.step();
    let api = serve(&sim);
    let ops = format!("{api}/operators");
    let ask = |body: Value| send(Method::POST, &ops, body);

    // `pd-ctl operator add split-region 1 --policy=usekey --keys=6162,6D`.
    let (code, _) = ask(json!({
        "name": "split-region", "region_id": 1, "policy": "usekey", "keys": ["6162", "6D"]
    }))
    .await;
    assert_eq!(code, StatusCode::OK);
    let line = get(&ops).await[0].as_str().unwrap().to_string();
    assert!(
        line.starts_with(
            "admin-split-region {split: region 1 use policy USEKEY and keys [6162 6D]} \
             (kind:admin,split"
        ),
        "{line}"
    );
    // Every heartbeat asks the leader, until the region's range changes.
    for _ in 0..2 {
        let split = sim.heartbeat().and_then(|r| r.split_region).unwrap();
        assert_eq!(split.policy, pdpb::CheckPolicy::Usekey as i32);
        assert_eq!(split.keys, vec![b"ab".to_vec(), b"m".to_vec()]);
    }
    // Split (right-derived, as the store splits): region 1 keeps [m, ),
    // and the new regions' reports may reach PD first. The left one
    // overlaps what PD knows of region 1, which leaves PD's tree: the
    // split is done.
    let version = sim.region.region_epoch.as_ref().unwrap().version + 2;
    let epoch = metapb::RegionEpoch {
        version,
        conf_ver: 1,
    };
    let left = metapb::Region {
        id: 2000,
        end_key: b"ab".to_vec(),
        region_epoch: Some(epoch.clone()),
        peers: (sim.region.peers.iter())
            .map(|p| metapb::Peer {
                id: p.id + 2000,
                ..p.clone()
            })
            .collect(),
        ..Default::default()
    };
    let report = pdpb::RegionHeartbeatRequest {
        region: Some(left),
        ..sim.request()
    };
    let leader = report.region.as_ref().unwrap().peers[0].clone();
    let report = pdpb::RegionHeartbeatRequest {
        leader: Some(leader),
        ..report
    };
    sim.cluster.region_heartbeat(&report).unwrap();
    assert_eq!(get(&ops).await, json!([]));
    sim.region.start_key = b"m".to_vec();
    sim.region.region_epoch = Some(epoch);
    assert_eq!(sim.heartbeat(), None);
    let last = get(&format!("{ops}/1")).await;
    assert!(
        last.as_str()
            .unwrap()
            .starts_with("status: SUCCESS, operator: admin-split-region"),
        "{last}"
    );

    // `--policy=approximate` (any case): the store picks the key.
    let (code, _) =
        ask(json!({"name": "split-region", "region_id": 1, "policy": "APPROXIMATE"})).await;
    assert_eq!(code, StatusCode::OK);
    let split = sim.heartbeat().and_then(|r| r.split_region).unwrap();
    assert_eq!(
        (split.policy, split.keys),
        (pdpb::CheckPolicy::Approximate as i32, vec![])
    );
    call(Method::DELETE, &format!("{ops}/1")).await;

    for (body, why) in [
        (
            json!({"name": "split-region", "region_id": 1}),
            "missing split policy",
        ),
        (
            json!({"name": "split-region", "region_id": 1, "policy": "half"}),
            "check policy half is not supported",
        ),
        (
            json!({"name": "split-region", "region_id": 1, "policy": "usekey", "keys": ["6g"]}),
            "split key 6g is not in hex format",
        ),
        (
            json!({"name": "split-region", "region_id": 1, "policy": "usekey", "keys": "61"}),
            "bad format keys",
        ),
        (
            // Region 1 is [m, ) now.
            json!({"name": "split-region", "region_id": 1, "policy": "usekey", "keys": ["6162", "6D"]}),
            "no split key lies inside region 1",
        ),
    ] {
        assert_eq!(ask(body).await, (StatusCode::BAD_REQUEST, json!(why)));
    }
}

#[tokio::test]
async fn a_region_is_scattered_by_request() {
    let mut sim = Sim::new(&[1, 2, 3, 4], &[1, 2, 3], opts(3));
    for s in tikal_pd::schedule::SCHEDULERS {
        sim.cluster.remove_scheduler(s).unwrap();
    }
    sim.step();
    let api = serve(&sim);
    let ops = format!("{api}/operators");
    let ask = || {
        send(
            Method::POST,
            &ops,
            json!({"name": "scatter-region", "region_id": 1, "group": "g"}),
        )
    };
    // `pd-ctl operator add scatter-region 1`, twice in group g: the first
    // finds it spread already, the second moves a replica to store 4.
    for _ in 0..2 {
        let (code, body) = ask().await;
        assert_eq!(code, StatusCode::OK);
        assert_eq!(body, json!("The operator is created."));
    }
    let line = get(&ops).await[0].as_str().unwrap().to_string();
    assert!(
        line.starts_with(
            "scatter-region {scatter region: stores [2, 3, 4], leader store 2} \
             (kind:admin,region,leader"
        ),
        "{line}"
    );
    sim.run();
    assert_eq!(sim.voter_stores(), [2, 3, 4]);
    let (code, body) = send(Method::POST, &ops, json!({"name": "scatter-region"})).await;
    assert_eq!(code, StatusCode::BAD_REQUEST);
    assert!(body.to_string().contains("region_id"), "{body}");
}

/// The ids of a regions answer, checked against its count.
async fn region_ids(url: String) -> Vec<u64> {
    let body = get(&url).await;
    let listed: Vec<u64> = (body["regions"].as_array().unwrap().iter())
        .map(|r| r["id"].as_u64().unwrap())
        .collect();
    assert_eq!(body["count"], listed.len());
    listed
}

#[tokio::test]
async fn the_top_regions_by_write_flow_size_and_keys_as_pd_ctl_lists_them() {
    let mut fleet = common::fleet::Fleet::new(&[1, 2, 3], 5, |_| vec![1, 2, 3], opts(3));
    for (i, r) in fleet.regions.values_mut().enumerate() {
        // Writes grow with i, size falls with it, keys peak in the middle.
        r.write_rate = 1000 * (i as u64 + 1);
        r.size = (10 - i as u64) << 20;
        r.keys = [5, 9, 100, 7, 1][i];
    }
    let ids: Vec<u64> = fleet.regions.keys().copied().collect();
    fleet.round();
    let api = serve_cluster(fleet.cluster.clone());
    let top = |path: &str| region_ids(format!("{api}/regions/{path}"));
    let newest_first: Vec<u64> = ids.iter().rev().copied().collect();
    assert_eq!(top("writeflow").await, newest_first);
    assert_eq!(top("writeflow?limit=2").await, newest_first[..2]);
    assert_eq!(top("size?limit=1").await, [ids[0]]);
    assert_eq!(top("keys?limit=3").await, [ids[2], ids[1], ids[3]]);
    assert_eq!(top("writeflow?limit=0").await, Vec::<u64>::new());
    assert_eq!(top("writeflow?limit=").await, newest_first);
    assert_eq!(top("confver").await.len(), 5);
    let (code, _) = call(Method::GET, &format!("{api}/regions/version?limit=x")).await;
    assert_eq!(code, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn regions_are_listed_by_what_is_wrong_with_them() {
    let mut sim = Sim::new(&[1, 2, 3, 4], &[1, 2, 3], opts(3));
    let api = serve(&sim);
    let check = |state: &str| region_ids(format!("{api}/regions/check/{state}"));
    let id = sim.region.id;
    let none: Vec<u64> = vec![];
    // A voter catching up; 3 MiB, so not empty, but small enough to merge.
    sim.pending = vec![sim.peer_on(2).unwrap().id];
    sim.heartbeat();
    assert_eq!(check("pending-peer").await, [id]);
    assert_eq!(check("undersized-region").await, [id]);
    for state in [
        "miss-peer",
        "extra-peer",
        "down-peer",
        "offline-peer",
        "learner-peer",
    ] {
        assert_eq!(check(state).await, none, "{state}");
    }
    assert_eq!(check("empty-region").await, none);
    // Store 3 leaves: its peer is offline, and its replacement starts as
    // a learner, one peer more than max-replicas.
    sim.cluster.remove_store(3, false).unwrap();
    assert_eq!(check("offline-peer").await, [id]);
    sim.step();
    let learner = Some(metapb::PeerRole::Learner as i32);
    assert_eq!(sim.peer_on(4).map(|p| p.role), learner, "a learner on 4");
    sim.heartbeat();
    assert_eq!(check("learner-peer").await, [id]);
    assert_eq!(check("extra-peer").await, [id]);
    let (code, _) = call(Method::GET, &format!("{api}/regions/check/hist-size")).await;
    assert_eq!(code, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn hot_write_regions_are_shown_per_store_as_leader_and_as_peer() {
    // Regions led by stores 1, 2 and 3 in turn; the middle one is cold.
    let rotate = |i: usize| {
        let mut v = vec![1, 2, 3];
        v.rotate_left(i % 3);
        v
    };
    let mut fleet = common::fleet::Fleet::new(&[1, 2, 3], 3, rotate, opts(3));
    for s in tikal_pd::schedule::SCHEDULERS {
        fleet.cluster.remove_scheduler(s).unwrap();
    }
    for (r, rate) in fleet.regions.values_mut().zip([5000, 100, 2048]) {
        r.write_rate = rate;
    }
    let ids: Vec<u64> = fleet.regions.keys().copied().collect();
    fleet.round();
    let api = serve_cluster(fleet.cluster.clone());
    let hot = get(&format!("{api}/hotspot/regions/write")).await;
    let leaders = &hot["as_leader"];
    assert_eq!(leaders.as_object().unwrap().len(), 2, "{hot}");
    assert_eq!(leaders["1"]["regions_count"], 1);
    assert_eq!(leaders["1"]["total_flow_bytes"], 5000.0);
    assert_eq!(leaders["1"]["statistics"][0]["region_id"], ids[0]);
    assert_eq!(leaders["3"]["total_flow_bytes"], 2048.0);
    assert_eq!(leaders["3"]["statistics"][0]["region_id"], ids[2]);
    for store in ["1", "2", "3"] {
        assert_eq!(hot["as_peer"][store]["regions_count"], 2, "{hot}");
        assert_eq!(hot["as_peer"][store]["total_flow_bytes"], 7048.0);
    }
    // `pd-ctl hot store`: every region's flow counts on its leader's
    // store, the cold one's too.
    let stores = get(&format!("{api}/hotspot/stores")).await;
    let rates = &stores["bytes-write-rate"];
    assert_eq!(
        (&rates["1"], &rates["2"], &rates["3"]),
        (&json!(5000.0), &json!(100.0), &json!(2048.0))
    );
}

#[tokio::test]
async fn a_stores_regions_are_listed_by_the_part_its_peer_plays() {
    let mut sim = Sim::new(&[1, 2, 3, 4], &[1, 2, 3], opts(3));
    let api = serve(&sim);
    let on = |store: u64, part: &str| region_ids(format!("{api}/regions/store/{store}{part}"));
    let id = sim.region.id;
    sim.step();
    // Store 3 leaves; its replacement on 4 starts as a learner, and its
    // next report shows it catching up.
    sim.cluster.remove_store(3, false).unwrap();
    sim.step();
    sim.pending = vec![sim.peer_on(4).unwrap().id];
    sim.heartbeat();
    let none: Vec<u64> = vec![];
    assert_eq!(on(1, "?type=leader").await, [id]);
    assert_eq!(on(2, "?type=leader").await, none);
    assert_eq!(on(2, "?type=follower").await, [id]);
    assert_eq!(on(1, "?type=follower").await, none);
    assert_eq!(on(4, "?type=learner").await, [id]);
    assert_eq!(on(4, "?type=pending").await, [id]);
    assert_eq!(on(2, "?type=pending").await, none);
    assert_eq!(on(4, "?type=witness").await, none);
    assert_eq!(on(4, "").await, [id]);
    assert_eq!(on(4, "?type=all").await, [id]);
    let (code, _) = call(Method::GET, &format!("{api}/regions/store/4?type=boss")).await;
    assert_eq!(code, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn store_limits_are_shown_set_for_all_or_one_and_checked() {
    let mut sim = Sim::new(&[1, 2, 3], &[1, 2, 3], opts(3));
    sim.step();
    let api = serve(&sim);
    let all = format!("{api}/stores/limit");
    let rates = |add: f64, remove: f64| json!({"add-peer": add, "remove-peer": remove});
    assert_eq!(
        get(&all).await,
        json!({"1": rates(15.0, 15.0), "2": rates(15.0, 15.0), "3": rates(15.0, 15.0)})
    );

    let (code, body) = send(Method::POST, &all, json!({"rate": 30, "type": "add-peer"})).await;
    assert_eq!(
        (code, body),
        (StatusCode::OK, json!("Set store limit successfully."))
    );
    let one = format!("{api}/store/2/limit");
    let (code, body) = send(Method::POST, &one, json!({"rate": 5})).await;
    assert_eq!(
        (code, body),
        (StatusCode::OK, json!("The store's limit is updated."))
    );
    let shown = get(&all).await;
    assert_eq!(shown["1"], rates(30.0, 15.0));
    assert_eq!(shown["2"], rates(5.0, 5.0));
    // A rate for all stores covers the one set apart too.
    assert_eq!(
        post_code(&all, json!({"rate": 60, "type": "remove-peer"})).await,
        StatusCode::OK
    );
    let shown = get(&all).await;
    assert_eq!(shown["2"], rates(5.0, 60.0));
    assert_eq!(shown["3"], rates(30.0, 60.0));

    for (body, why) in [
        (json!({"type": "add-peer"}), "rate unset"),
        (
            json!({"rate": 0}),
            "invalid rate which should be larger than 0",
        ),
        (
            json!({"rate": -3}),
            "invalid rate which should be larger than 0",
        ),
        (
            json!({"rate": "5"}),
            "invalid rate which should be larger than 0",
        ),
        (json!({"rate": 5, "type": "add-learner"}), "unknown type"),
        (json!(5), "the body must be a JSON object"),
    ] {
        for url in [&all, &one] {
            let (code, answer) = send(Method::POST, url, body.clone()).await;
            assert_eq!(
                (code, answer),
                (StatusCode::BAD_REQUEST, json!(why)),
                "{url}"
            );
        }
    }
    assert_eq!(
        post_code(&all, json!({"rate": 5, "labels": {"zone": "z1"}})).await,
        StatusCode::BAD_REQUEST
    );
    assert_eq!(
        post_code(&format!("{api}/store/42/limit"), json!({"rate": 5})).await,
        StatusCode::NOT_FOUND
    );
    assert_eq!(get(&all).await, shown, "refused changes change nothing");
    // `pd-ctl config show` shows them too.
    assert_eq!(
        get(&format!("{api}/config")).await["schedule"]["store-limit"],
        shown
    );
    assert_eq!(
        get(&format!("{api}/config/schedule")).await["store-limit"],
        shown
    );
}

#[tokio::test]
async fn schedulers_are_paused_listed_as_paused_and_resumed() {
    let sim = Sim::new(&[1], &[1], opts(3));
    let api = serve(&sim);
    let leader = format!("{api}/schedulers/balance-leader-scheduler");
    let (code, body) = send(Method::POST, &leader, json!({"delay": 60})).await;
    assert_eq!(
        (code, body),
        (
            StatusCode::OK,
            json!("Pause or resume the scheduler successfully.")
        )
    );
    let paused = format!("{api}/schedulers?status=paused");
    assert_eq!(get(&paused).await, json!(["balance-leader-scheduler"]));
    assert_eq!(
        array_len(&format!("{api}/schedulers")).await,
        3,
        "a paused scheduler still runs"
    );
    let now = sim.clock.now_nanos() / 1_000_000_000 * 1_000_000_000;
    let at = |nanos: i64| tikal_pd::format::rfc3339(nanos);
    assert_eq!(
        get(&format!("{paused}&timestamp=true")).await,
        json!([{
            "name": "balance-leader-scheduler",
            "paused_at": at(now),
            "resume_at": at(now + 60_000_000_000),
        }])
    );
    assert_eq!(
        get(&format!("{api}/schedulers?status=disabled")).await,
        json!([])
    );
    sim.advance(Duration::from_secs(59));
    assert_eq!(array_len(&paused).await, 1, "a second to go");
    sim.advance(Duration::from_secs(1));
    assert_eq!(get(&paused).await, json!([]));

    let all = format!("{api}/schedulers/all");
    assert_eq!(
        send(Method::POST, &all, json!({"delay": 30})).await.0,
        StatusCode::OK
    );
    assert_eq!(array_len(&paused).await, 3);
    assert_eq!(
        send(Method::POST, &all, json!({"delay": 0})).await.0,
        StatusCode::OK
    );
    assert_eq!(get(&paused).await, json!([]));

    let (code, body) = send(Method::POST, &leader, json!({"wait": 5})).await;
    assert_eq!(
        (code, body),
        (StatusCode::BAD_REQUEST, json!("missing pause time"))
    );
    assert_eq!(
        post_code(&leader, json!({"delay": "soon"})).await,
        StatusCode::BAD_REQUEST
    );
    let nope = format!("{api}/schedulers/nope");
    let (code, body) = send(Method::POST, &nope, json!({"delay": 5})).await;
    assert_eq!(
        (code, body),
        (
            StatusCode::INTERNAL_SERVER_ERROR,
            json!("[PD:scheduler:ErrSchedulerNotFound]scheduler not found")
        )
    );
}

#[tokio::test]
async fn checkers_are_paused_shown_and_resumed() {
    let sim = Sim::new(&[1], &[1], opts(3));
    let api = serve(&sim);
    let merge = format!("{api}/checker/merge");
    assert_eq!(get(&merge).await, json!({"paused": false}));
    let (code, body) = send(Method::POST, &merge, json!({"delay": 60})).await;
    assert_eq!(
        (code, body),
        (StatusCode::OK, json!("Pause the checker successfully."))
    );
    assert_eq!(get(&merge).await, json!({"paused": true}));
    assert!(sim.cluster.is_checker_paused("merge").unwrap());
    let (code, body) = send(Method::POST, &merge, json!({"delay": 0})).await;
    assert_eq!(
        (code, body),
        (StatusCode::OK, json!("Resume the checker successfully."))
    );
    assert_eq!(get(&merge).await, json!({"paused": false}));

    let (code, body) = send(Method::POST, &merge, json!({"delay": -1})).await;
    assert_eq!(
        (code, body),
        (StatusCode::BAD_REQUEST, json!("delay cannot be negative"))
    );
    let (code, body) = send(Method::POST, &merge, json!({"wait": 5})).await;
    assert_eq!(
        (code, body),
        (StatusCode::BAD_REQUEST, json!("missing pause time"))
    );
    let nope = format!("{api}/checker/nope");
    let not_found = json!("[PD:checker:ErrCheckerNotFound]checker not found");
    let (code, body) = send(Method::POST, &nope, json!({"delay": 5})).await;
    assert_eq!(
        (code, body),
        (StatusCode::INTERNAL_SERVER_ERROR, not_found.clone())
    );
    let (code, body) = call(Method::GET, &nope).await;
    assert_eq!((code, body), (StatusCode::INTERNAL_SERVER_ERROR, not_found));
}

#[tokio::test]
async fn leaders_are_evicted_from_a_store_by_request_and_given_back() {
    let sim = Sim::new(&[1, 2], &[1], opts(3));
    let api = serve(&sim);
    let url = format!("{api}/schedulers");
    let evict = |body: Value| send(Method::POST, &url, body);
    let body = json!({"name": "evict-leader-scheduler", "store_id": 2});
    assert_eq!(
        evict(body).await,
        (StatusCode::OK, json!("The scheduler is created."))
    );
    let list = format!("{api}/scheduler-config/evict-leader-scheduler/list");
    assert_eq!(
        get(&list).await,
        json!({"store-id-ranges": {"2": [{"start-key": "", "end-key": ""}]}})
    );
    assert_eq!(array_len(&url).await, 4);
    assert!(get(&url)
        .await
        .as_array()
        .unwrap()
        .contains(&json!("evict-leader-scheduler")));

    let no_store = json!({"name": "evict-leader-scheduler"});
    assert_eq!(evict(no_store).await.0, StatusCode::BAD_REQUEST);
    let unknown = json!({"name": "evict-leader-scheduler", "store_id": 9});
    assert_eq!(evict(unknown).await.0, StatusCode::NOT_FOUND);

    let give_back = format!("{api}/schedulers/evict-leader-scheduler-2");
    assert_eq!(call(Method::DELETE, &give_back).await.0, StatusCode::OK);
    assert_eq!(
        call(Method::DELETE, &give_back).await.0,
        StatusCode::NOT_FOUND
    );
    assert_eq!(array_len(&url).await, 3, "gone with its last store");
    assert_eq!(call(Method::GET, &list).await.0, StatusCode::NOT_FOUND);

    // Its sibling holds stores the same way.
    let body = json!({"name": "grant-leader-scheduler", "store_id": 1});
    assert_eq!(evict(body).await.0, StatusCode::OK);
    let list = format!("{api}/scheduler-config/grant-leader-scheduler/list");
    assert_eq!(
        get(&list).await,
        json!({"store-id-ranges": {"1": [{"start-key": "", "end-key": ""}]}})
    );
    let whole = format!("{api}/schedulers/grant-leader-scheduler");
    assert_eq!(call(Method::DELETE, &whole).await.0, StatusCode::OK);
    assert_eq!(call(Method::GET, &list).await.0, StatusCode::NOT_FOUND);
}
