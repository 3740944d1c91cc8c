//! PD's HTTP API on the client URL, with upstream's paths and JSON shapes
//! (`/pd/api/v1/...`). Keys in region JSON are upper-case hex, as upstream.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{json, Value};
use tikal_proto::metapb;

use crate::cluster::{Cluster, RegionInfo, StoreInfo};
use crate::config::PdConfig;
use crate::service::PdService;

pub struct HttpState {
    pub pd: PdService,
    pub config: PdConfig,
}

pub fn router(state: Arc<HttpState>) -> Router {
    Router::new()
        .route("/pd/api/v1/members", get(members))
        .route("/pd/api/v1/health", get(health))
        .route("/pd/api/v1/stores", get(stores))
        .route("/pd/api/v1/store/:id", get(store))
        .route("/pd/api/v1/regions", get(regions))
        .route("/pd/api/v1/region/id/:id", get(region_by_id))
        .route("/pd/api/v1/region/key/:key", get(region_by_key))
        .route("/pd/api/v1/config", get(config))
        .route("/pd/api/v1/operators", get(operators))
        .with_state(state)
}

fn member_json(m: &tikal_proto::pdpb::Member) -> Value {
    json!({
        "name": m.name,
        "member_id": m.member_id,
        "peer_urls": m.peer_urls,
        "client_urls": m.client_urls,
        "binary_version": m.binary_version,
        "deploy_path": m.deploy_path,
    })
}

async fn members(State(s): State<Arc<HttpState>>) -> Json<Value> {
    let m = member_json(&s.pd.member);
    Json(json!({
        "header": { "cluster_id": s.pd.cluster.cluster_id },
        "members": [m.clone()],
        "leader": m.clone(),
        "etcd_leader": m,
    }))
}

async fn health(State(s): State<Arc<HttpState>>) -> Json<Value> {
    let m = &s.pd.member;
    Json(json!([{
        "name": m.name,
        "member_id": m.member_id,
        "client_urls": m.client_urls,
        "health": true,
    }]))
}

fn store_json(cluster: &Cluster, s: &StoreInfo) -> Value {
    let m = &s.meta;
    let leader_count = cluster
        .scan_regions(b"", b"", 0)
        .iter()
        .filter(|r| r.leader.as_ref().is_some_and(|l| l.store_id == m.id))
        .count();
    json!({
        "store": {
            "id": m.id,
            "address": m.address,
            "version": m.version,
            "peer_address": m.peer_address,
            "status_address": m.status_address,
            "git_hash": m.git_hash,
            "start_timestamp": m.start_timestamp,
            "deploy_path": m.deploy_path,
            "last_heartbeat": s.last_heartbeat.max(m.last_heartbeat),
            "state_name": cluster.store_state_name(s),
        },
        "status": {
            "capacity": s.stats.capacity,
            "available": s.stats.available,
            "used_size": s.stats.used_size,
            "leader_count": leader_count,
            "region_count": s.stats.region_count,
            "start_ts": s.stats.start_time,
        }
    })
}

async fn stores(State(s): State<Arc<HttpState>>) -> Json<Value> {
    let cluster = &s.pd.cluster;
    let list: Vec<Value> = cluster
        .stores()
        .iter()
        .map(|st| store_json(cluster, st))
        .collect();
    Json(json!({ "count": list.len(), "stores": list }))
}

async fn store(State(s): State<Arc<HttpState>>, Path(id): Path<String>) -> Response {
    let Ok(id) = id.parse::<u64>() else {
        return error(StatusCode::BAD_REQUEST, format!("invalid store id {id:?}"));
    };
    match s.pd.cluster.store(id) {
        Ok(st) => Json(store_json(&s.pd.cluster, &st)).into_response(),
        Err(e) => error(StatusCode::NOT_FOUND, e.message),
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02X}")).collect()
}

fn peer_json(p: &metapb::Peer) -> Value {
    let role = match metapb::PeerRole::try_from(p.role) {
        Ok(metapb::PeerRole::Learner) => "Learner",
        Ok(metapb::PeerRole::IncomingVoter) => "IncomingVoter",
        Ok(metapb::PeerRole::DemotingVoter) => "DemotingVoter",
        _ => "Voter",
    };
    json!({ "id": p.id, "store_id": p.store_id, "role_name": role })
}

fn region_json(r: &RegionInfo) -> Value {
    let epoch = r.region.region_epoch.clone().unwrap_or_default();
    json!({
        "id": r.region.id,
        "start_key": hex(&r.region.start_key),
        "end_key": hex(&r.region.end_key),
        "epoch": { "conf_ver": epoch.conf_ver, "version": epoch.version },
        "peers": r.region.peers.iter().map(peer_json).collect::<Vec<_>>(),
        "leader": r.leader.as_ref().map(peer_json),
        "approximate_size": r.approximate_size,
        "approximate_keys": r.approximate_keys,
    })
}

async fn regions(State(s): State<Arc<HttpState>>) -> Json<Value> {
    let list: Vec<Value> =
        s.pd.cluster
            .scan_regions(b"", b"", 0)
            .iter()
            .map(region_json)
            .collect();
    Json(json!({ "count": list.len(), "regions": list }))
}

async fn region_by_id(State(s): State<Arc<HttpState>>, Path(id): Path<String>) -> Response {
    let Ok(id) = id.parse::<u64>() else {
        return error(StatusCode::BAD_REQUEST, format!("invalid region id {id:?}"));
    };
    match s.pd.cluster.region_by_id(id) {
        Some(r) => Json(region_json(&r)).into_response(),
        None => error(StatusCode::NOT_FOUND, format!("region {id} not found")),
    }
}

/// The key is taken as raw bytes of the path segment, as upstream does.
async fn region_by_key(State(s): State<Arc<HttpState>>, Path(key): Path<String>) -> Response {
    match s.pd.cluster.region_by_key(key.as_bytes()) {
        Some(r) => Json(region_json(&r)).into_response(),
        None => error(StatusCode::NOT_FOUND, format!("no region for key {key:?}")),
    }
}

async fn config(State(s): State<Arc<HttpState>>) -> Json<Value> {
    Json(json!({
        "name": s.config.name,
        "data-dir": s.config.data_dir,
        "client-urls": s.config.client_urls,
        "peer-urls": s.config.peer_urls,
        "advertise-client-urls": s.config.advertise_client_urls,
        "initial-cluster": s.config.initial_cluster,
        "schedule": { "max-store-down-time": s.config.schedule.max_store_down_time },
        "replication": { "max-replicas": s.config.replication.max_replicas },
    }))
}

/// No scheduler issues operators yet, so the list is truly empty.
async fn operators() -> Json<Value> {
    Json(json!([]))
}

fn error(status: StatusCode, msg: String) -> Response {
    (status, Json(json!({ "error": msg }))).into_response()
}
