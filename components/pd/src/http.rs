//! PD's HTTP API on the client URL, with upstream's paths and JSON shapes
//! (`/pd/api/v1/...`). Keys in region JSON are upper-case hex, sizes and
//! durations print as upstream's Go types do ([`crate::format`]), and
//! failures answer with the message as a JSON string, all as upstream.
//!
//! | method, path                   | answer                                      |
//! |--------------------------------|---------------------------------------------|
//! | GET `/members`, `/health`      | this PD                                     |
//! | GET `/stores` (`?state=N`)     | `{"count", "stores": [{"store", "status"}]}` |
//! | GET/DELETE `/store/{id}`       | one store / take it out of service          |
//! | GET `/regions`, `/region/id/{id}`, `/region/key/{key}` | regions, peers by role |
//! | GET/POST `/config`, `/config/schedule` | settings; POST changes them online  |
//! | GET `/config/replicate`        | the replication settings                    |
//! | GET/POST `/schedulers` (`?status=paused`), DELETE `/schedulers/{name}` | running schedulers |
//! | POST `/schedulers/{name}` (`{"delay"}`) | pause or resume one (or `all`)     |
//! | GET `/scheduler-config/{evict,grant}-leader-scheduler/list` | the stores it holds |
//! | GET/POST `/checker/{name}` (`{"delay"}`) | a checker paused?; pause or resume it |
//! | GET/POST `/stores/limit`, POST `/store/{id}/limit` | store limits          |
//! | GET `/operators` (`?object`, `?kind=`) | running operators                   |
//! | GET `/operators/{region_id}`   | one region's operator and its status        |
//! | `/pd/api/v2/keyspaces/...`     | keyspaces, see [`crate::keyspace_http`]      |

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use serde_json::{json, Value};
use tikal_proto::{metapb, pdpb};

use crate::config::{LeaderPolicy, PdConfig};
use crate::format::{byte_size, from_hex, go_duration, hex, rfc3339};
use crate::operator::{kind_names, OpStatus};
use crate::regions::{RegionInfo, StoreLoad};
use crate::schedule::{AdminOp, LeaderHold, SchedulerError, StoreError};
use crate::service::PdService;
use crate::store_limit::LimitType;
use crate::stores::{weighted, StoreInfo, StoreState, Weights};

pub struct HttpState {
    pub pd: PdService,
    pub config: PdConfig,
}

pub fn router(state: Arc<HttpState>) -> Router {
    Router::new()
        .route("/pd/api/v1/members", get(members))
        .route("/pd/api/v1/health", get(health))
        .route("/pd/api/v1/stores", get(stores))
        .route(
            "/pd/api/v1/stores/remove-tombstone",
            delete(remove_tombstones),
        )
        .route("/pd/api/v1/store/:id", get(store).delete(delete_store))
        .route("/pd/api/v1/store/:id/state", post(set_store_state))
        .route("/pd/api/v1/store/:id/weight", post(set_store_weight))
        .route("/pd/api/v1/store/:id/limit", post(set_store_limit))
        .route(
            "/pd/api/v1/stores/limit",
            get(store_limits).post(set_all_store_limits),
        )
        .route(
            "/pd/api/v1/store/:id/label",
            post(set_store_labels).delete(delete_store_label),
        )
        .route("/pd/api/v1/regions/store/:id", get(store_regions))
        .route("/pd/api/v1/regions/count", get(region_count))
        .route("/pd/api/v1/regions/check/:state", get(check_regions))
        .route("/pd/api/v1/hotspot/regions/write", get(hot_write_regions))
        .route("/pd/api/v1/hotspot/stores", get(hot_stores))
        .route(
            "/pd/api/v1/regions/writeflow",
            get(|s, q| top_regions(s, q, |r| r.written_bytes)),
        )
        .route(
            "/pd/api/v1/regions/confver",
            get(|s, q| top_regions(s, q, |r| r.epoch().conf_ver)),
        )
        .route(
            "/pd/api/v1/regions/version",
            get(|s, q| top_regions(s, q, |r| r.epoch().version)),
        )
        .route(
            "/pd/api/v1/regions/size",
            get(|s, q| top_regions(s, q, RegionInfo::approximate_size_mib)),
        )
        .route(
            "/pd/api/v1/regions/keys",
            get(|s, q| top_regions(s, q, |r| r.approximate_keys)),
        )
        .route("/pd/api/v1/cluster", get(cluster))
        .route("/pd/api/v1/version", get(version))
        .route("/pd/api/v1/status", get(status))
        .route("/pd/api/v1/ping", get(|| async {}))
        .route("/pd/api/v1/regions", get(regions))
        .route("/pd/api/v1/region/id/:id", get(region_by_id))
        .route("/pd/api/v1/region/key/:key", get(region_by_key))
        .route("/pd/api/v1/config", get(config).post(update_config))
        .route(
            "/pd/api/v1/config/schedule",
            get(schedule_config).post(update_config),
        )
        .route(
            "/pd/api/v1/config/replicate",
            get(replication_config).post(update_config),
        )
        .route("/pd/api/v1/schedulers", get(schedulers).post(add_scheduler))
        .route(
            "/pd/api/v1/scheduler-config/:name/list",
            get(held_stores_config),
        )
        .route(
            "/pd/api/v1/schedulers/:name",
            delete(remove_scheduler).post(pause_scheduler),
        )
        .route(
            "/pd/api/v1/checker/:name",
            get(checker_status).post(pause_checker),
        )
        .route("/pd/api/v1/operators", get(operators).post(add_operator))
        .route(
            "/pd/api/v1/operators/:region_id",
            get(operator).delete(cancel_operator),
        )
        .merge(crate::keyspace_http::routes())
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

fn store_json(
    s: &StoreInfo,
    state: StoreState,
    load: StoreLoad,
    policy: LeaderPolicy,
    now: i64,
) -> Value {
    let m = &s.meta;
    let mut store = json!({
        "id": m.id,
        "address": m.address,
        "state": m.state,
        "version": m.version,
        "peer_address": m.peer_address,
        "status_address": m.status_address,
        "git_hash": m.git_hash,
        "start_timestamp": m.start_timestamp,
        "deploy_path": m.deploy_path,
        "last_heartbeat": s.last_heartbeat.max(m.last_heartbeat),
        "node_state": m.node_state,
        "state_name": state.name(),
    });
    if !m.labels.is_empty() {
        let labels: Vec<Value> = m
            .labels
            .iter()
            .map(|l| json!({ "key": l.key, "value": l.value }))
            .collect();
        store["labels"] = json!(labels);
    }
    if m.physically_destroyed {
        store["physically_destroyed"] = json!(true);
    }
    let st = &s.stats;
    let mut status = json!({
        "capacity": byte_size(st.capacity),
        "available": byte_size(st.available),
        "used_size": byte_size(st.used_size),
        "leader_count": load.leader_count,
        "leader_weight": s.weights.leader,
        "leader_score": weighted(load.leader_score(policy) as f64, s.weights.leader),
        "leader_size": load.leader_size_mib,
        "region_count": load.region_count,
        "region_weight": s.weights.region,
        "region_score": weighted(load.region_score as f64, s.weights.region),
        "region_size": load.region_size_mib,
    });
    // Upstream leaves these out when zero (or unknown).
    let nonzero = |n: u64| (n > 0).then(|| json!(n));
    let uptime = s.uptime(now);
    let start_ns = i64::from(st.start_time) * 1_000_000_000;
    let optional = [
        ("learner_count", nonzero(load.learner_count as u64)),
        (
            "pending_peer_count",
            nonzero(load.pending_peer_count as u64),
        ),
        ("sending_snap_count", nonzero(st.sending_snap_count.into())),
        (
            "receiving_snap_count",
            nonzero(st.receiving_snap_count.into()),
        ),
        ("is_busy", st.is_busy.then_some(json!(true))),
        (
            "start_ts",
            (st.start_time > 0).then(|| json!(rfc3339(start_ns))),
        ),
        (
            "last_heartbeat_ts",
            (s.last_heartbeat > 0).then(|| json!(rfc3339(s.last_heartbeat))),
        ),
        (
            "uptime",
            (!uptime.is_zero()).then(|| json!(go_duration(uptime))),
        ),
    ];
    for (key, value) in optional {
        if let Some(v) = value {
            status[key] = v;
        }
    }
    json!({ "store": store, "status": status })
}

/// `GET /stores`: Up and Offline stores, or those in the states named by
/// `?state=N` (metapb numbers, repeatable), as upstream filters.
async fn stores(State(s): State<Arc<HttpState>>, RawQuery(query): RawQuery) -> Response {
    let mut accept = vec![];
    for (key, value) in query_pairs(query.as_deref()) {
        if key == "state" {
            match value.parse::<i32>() {
                Ok(n) => accept.push(n),
                Err(e) => return error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
            }
        }
    }
    if accept.is_empty() {
        accept = vec![
            metapb::StoreState::Up as i32,
            metapb::StoreState::Offline as i32,
        ];
    }
    let cluster = &s.pd.cluster;
    let (loads, liveness) = (cluster.store_loads(), cluster.liveness());
    let policy = cluster.opts().leader_schedule_policy;
    let list: Vec<Value> = cluster
        .stores()
        .iter()
        .filter(|st| accept.contains(&st.meta.state))
        .map(|st| {
            let load = loads.get(&st.meta.id).copied().unwrap_or_default();
            store_json(st, st.state(&liveness), load, policy, liveness.now)
        })
        .collect();
    Json(json!({ "count": list.len(), "stores": list })).into_response()
}

async fn store(State(s): State<Arc<HttpState>>, Path(id): Path<String>) -> Response {
    let id = match store_id(&id) {
        Ok(id) => id,
        Err(bad) => return bad,
    };
    let cluster = &s.pd.cluster;
    match cluster.store(id) {
        Ok(st) => {
            let load = cluster.store_loads().get(&id).copied().unwrap_or_default();
            let liveness = cluster.liveness();
            let policy = cluster.opts().leader_schedule_policy;
            Json(store_json(
                &st,
                st.state(&liveness),
                load,
                policy,
                liveness.now,
            ))
            .into_response()
        }
        Err(_) => error(StatusCode::NOT_FOUND, StoreError::NotFound(id).to_string()),
    }
}

/// `POST /operators` with the bodies `pd-ctl operator add` sends:
/// `{"name": "transfer-leader", "region_id": R, "to_store_id": S}`,
/// `add-peer` and `remove-peer` with `"store_id"`, `transfer-peer` with
/// `"from_store_id"` and `"to_store_id"`, `split-region` with `"policy"`
/// and `"keys"`, and `merge-region` with `"source_region_id"` and
/// `"target_region_id"` (no `region_id`).
async fn add_operator(State(s): State<Arc<HttpState>>, body: String) -> Response {
    let Ok(req) = serde_json::from_str::<Value>(&body) else {
        return error(StatusCode::BAD_REQUEST, "the body is not JSON".into());
    };
    let id = |field: &str| {
        req[field]
            .as_u64()
            .ok_or_else(|| format!("{field} is required (a number)"))
    };
    let op = || -> Result<AdminOp, String> {
        Ok(match req["name"].as_str().unwrap_or_default() {
            "transfer-leader" => AdminOp::TransferLeader {
                to_store: id("to_store_id")?,
            },
            "add-peer" => AdminOp::AddPeer {
                store_id: id("store_id")?,
            },
            "remove-peer" => AdminOp::RemovePeer {
                store_id: id("store_id")?,
            },
            "transfer-peer" => AdminOp::TransferPeer {
                from_store: id("from_store_id")?,
                to_store: id("to_store_id")?,
            },
            "split-region" => split_op(&req)?,
            "merge-region" => AdminOp::MergeRegion {
                target: id("target_region_id")?,
            },
            "scatter-region" => AdminOp::ScatterRegion {
                group: req["group"].as_str().unwrap_or_default().to_string(),
            },
            _ => return Err(format!("operator {} is not supported", req["name"])),
        })
    };
    // A merge names its source so (as upstream); every other, `region_id`.
    let region_field = match req["name"].as_str() {
        Some("merge-region") => "source_region_id",
        _ => "region_id",
    };
    let made = id(region_field)
        .and_then(|region_id| Ok((region_id, op()?)))
        .and_then(|(region_id, op)| s.pd.cluster.add_admin_operator(region_id, op));
    match made {
        Ok(()) => Json(json!("The operator is created.")).into_response(),
        Err(e) => error(StatusCode::BAD_REQUEST, e),
    }
}

/// `split-region`'s `"policy"` (`scan`, `approximate` or `usekey`, any
/// case) and, for `usekey`, its `"keys"` in hex, as upstream reads them.
fn split_op(req: &Value) -> Result<AdminOp, String> {
    let name = req["policy"].as_str().ok_or("missing split policy")?;
    let policy = pdpb::CheckPolicy::from_str_name(&name.to_uppercase())
        .ok_or_else(|| format!("check policy {name} is not supported"))?;
    let mut keys = vec![];
    if policy == pdpb::CheckPolicy::Usekey {
        let listed = match &req["keys"] {
            Value::Null => &vec![],
            Value::Array(keys) => keys,
            _ => return Err("bad format keys".into()),
        };
        for key in listed {
            let text = key.as_str().ok_or("bad format keys")?;
            keys.push(
                from_hex(text).ok_or_else(|| format!("split key {text} is not in hex format"))?,
            );
        }
    }
    Ok(AdminOp::SplitRegion { policy, keys })
}

/// `DELETE /store/{id}[?force]`, as `pd-ctl store delete`: the store goes
/// Offline. With `force` it is also marked physically destroyed (its
/// machine is gone for good): no check of the stores left up, it never
/// comes back, and a new store may take its address at once.
async fn delete_store(
    State(s): State<Arc<HttpState>>,
    Path(id): Path<String>,
    RawQuery(query): RawQuery,
) -> Response {
    let id = match store_id(&id) {
        Ok(id) => id,
        Err(bad) => return bad,
    };
    let force = query_pairs(query.as_deref())
        .iter()
        .any(|(k, v)| k == "force" && v != "false");
    store_done(
        s.pd.cluster.remove_store(id, force),
        "The store is set as Offline.",
    )
}

/// `POST /store/{id}/state?state=Up|Offline` (any case): `Up` is `pd-ctl
/// store cancel-delete`, `Offline` the same as `DELETE /store/{id}`.
/// Upstream takes no other state here.
async fn set_store_state(
    State(s): State<Arc<HttpState>>,
    Path(id): Path<String>,
    RawQuery(query): RawQuery,
) -> Response {
    let id = match store_id(&id) {
        Ok(id) => id,
        Err(bad) => return bad,
    };
    let state = query_pairs(query.as_deref())
        .into_iter()
        .find(|(k, _)| k == "state")
        .map(|(_, v)| v)
        .unwrap_or_default();
    let cluster = &s.pd.cluster;
    let done = if state.eq_ignore_ascii_case("up") {
        cluster.up_store(id)
    } else if state.eq_ignore_ascii_case("offline") {
        cluster.remove_store(id, false)
    } else {
        return error(StatusCode::BAD_REQUEST, format!("invalid state {state}"));
    };
    store_done(done, "The store's state is updated.")
}

/// `GET /stores/limit`, as `pd-ctl store limit`: each store's rates, in
/// operations a minute (Tombstone stores left out); see
/// [`crate::store_limit`].
async fn store_limits(State(s): State<Arc<HttpState>>) -> Json<Value> {
    Json(store_limits_json(&s))
}

fn store_limits_json(s: &HttpState) -> Value {
    let limits = (s.pd.cluster.store_limits().into_iter())
        .map(|(id, rates)| (id.to_string(), json!(rates)))
        .collect();
    Value::Object(limits)
}

/// `POST /stores/limit` with `{"rate": R, "type": T}`, as `pd-ctl store
/// limit all R [T]`: every store's rate, and the rate of stores yet to
/// come. `type` is `add-peer` or `remove-peer`; none means both.
async fn set_all_store_limits(State(s): State<Arc<HttpState>>, body: String) -> Response {
    let (rate, types) = match limit_request(&body) {
        Ok(req) => req,
        Err(bad) => return bad,
    };
    store_done(
        s.pd.cluster.set_all_store_limits(&types, rate),
        "Set store limit successfully.",
    )
}

/// `POST /store/{id}/limit` with `{"rate": R, "type": T}`, as `pd-ctl
/// store limit <id> R [T]`.
async fn set_store_limit(
    State(s): State<Arc<HttpState>>,
    Path(id): Path<String>,
    body: String,
) -> Response {
    let id = match store_id(&id) {
        Ok(id) => id,
        Err(bad) => return bad,
    };
    let (rate, types) = match limit_request(&body) {
        Ok(req) => req,
        Err(bad) => return bad,
    };
    store_done(
        s.pd.cluster.set_store_limit(id, &types, rate),
        "The store's limit is updated.",
    )
}

/// The rate and types a store limit request sets, with upstream's
/// messages for what it refuses. Upstream's `labels` (stores chosen by
/// label) is refused rather than taken as "all stores".
fn limit_request(body: &str) -> Result<(f64, Vec<LimitType>), Response> {
    let bad = |msg: &str| error(StatusCode::BAD_REQUEST, msg.into());
    let Ok(Value::Object(req)) = serde_json::from_str::<Value>(body) else {
        return Err(bad("the body must be a JSON object"));
    };
    let rate = match req.get("rate") {
        None | Some(Value::Null) => return Err(bad("rate unset")),
        Some(v) => v
            .as_f64()
            .ok_or_else(|| bad("invalid rate which should be larger than 0"))?,
    };
    let types = match req.get("type") {
        None | Some(Value::Null) => LimitType::ALL.to_vec(),
        Some(v) => match v.as_str().and_then(LimitType::from_name) {
            Some(t) => vec![t],
            None => return Err(bad("unknown type")),
        },
    };
    if req.contains_key("labels") {
        return Err(bad(
            "labels are not supported: set the stores' limits one by one",
        ));
    }
    Ok((rate, types))
}

/// `POST /store/{id}/weight` with `{"leader": W, "region": W}`, as
/// `pd-ctl store weight`: each a number, 0 or more.
async fn set_store_weight(
    State(s): State<Arc<HttpState>>,
    Path(id): Path<String>,
    body: String,
) -> Response {
    let (id, req) = match store_and_body::<Value>(&id, &body, "JSON") {
        Ok(parsed) => parsed,
        Err(bad) => return bad,
    };
    let mut weights = [0.0; 2];
    for (w, name) in weights.iter_mut().zip(["leader", "region"]) {
        *w = match &req[name] {
            Value::Null => return error(StatusCode::BAD_REQUEST, format!("{name} weight unset")),
            v => match v.as_f64().filter(|w| *w >= 0.0) {
                Some(w) => w,
                None => return error(StatusCode::BAD_REQUEST, format!("bad format {name} weight")),
            },
        };
    }
    let [leader, region] = weights;
    let weights = Weights { leader, region };
    store_done(
        s.pd.cluster.set_store_weights(id, weights),
        "The store's weight is updated.",
    )
}

/// `POST /store/{id}/label[?force]` with `{"key": "value", ...}`, as
/// `pd-ctl store label`: merged into the store's labels (an empty value
/// deletes one), or with `force` (present, whatever its value, as
/// upstream reads it) in place of them all.
async fn set_store_labels(
    State(s): State<Arc<HttpState>>,
    Path(id): Path<String>,
    RawQuery(query): RawQuery,
    body: String,
) -> Response {
    let what = "a JSON object of labels";
    let (id, map) = match store_and_body::<serde_json::Map<String, Value>>(&id, &body, what) {
        Ok(parsed) => parsed,
        Err(bad) => return bad,
    };
    let mut labels = vec![];
    for (key, value) in map {
        let Some(value) = value.as_str() else {
            return error(
                StatusCode::BAD_REQUEST,
                format!("label {key}: the value must be a string"),
            );
        };
        labels.push(tikal_proto::metapb::StoreLabel {
            key,
            value: value.to_string(),
        });
    }
    let force = query_pairs(query.as_deref())
        .iter()
        .any(|(k, _)| k == "force");
    store_done(
        s.pd.cluster.set_store_labels(id, labels, force),
        "The store's label is updated.",
    )
}

/// `DELETE /store/{id}/label` with the key as a JSON string, as `pd-ctl
/// store label <id> <key> --delete`.
async fn delete_store_label(
    State(s): State<Arc<HttpState>>,
    Path(id): Path<String>,
    body: String,
) -> Response {
    let what = "the label key as a JSON string";
    let (id, key) = match store_and_body::<String>(&id, &body, what) {
        Ok(parsed) => parsed,
        Err(bad) => return bad,
    };
    let done = s.pd.cluster.delete_store_label(id, &key);
    store_done(done, &format!("The label {key} is deleted for store {id}."))
}

/// A store id from the path, or the answer refusing it.
fn store_id(id: &str) -> Result<u64, Response> {
    id.parse::<u64>()
        .map_err(|_| error(StatusCode::BAD_REQUEST, format!("invalid store id {id:?}")))
}

/// A store id from the path and a request body, or the answer refusing
/// them (`what` says what the body must be).
fn store_and_body<T: serde::de::DeserializeOwned>(
    id: &str,
    body: &str,
    what: &str,
) -> Result<(u64, T), Response> {
    let id = store_id(id)?;
    let body = serde_json::from_str(body)
        .map_err(|_| error(StatusCode::BAD_REQUEST, format!("the body must be {what}")))?;
    Ok((id, body))
}

/// A store command's answer: `ok` as upstream words it, or the failure.
fn store_done(done: Result<(), StoreError>, ok: &str) -> Response {
    match done {
        Ok(()) => Json(json!(ok)).into_response(),
        Err(e) => store_error(e),
    }
}

/// A store command's failure with upstream's status for it.
fn store_error(e: StoreError) -> Response {
    let status = match e {
        StoreError::NotFound(_) => StatusCode::NOT_FOUND,
        StoreError::Removed(_) | StoreError::Destroyed(_) => StatusCode::GONE,
        StoreError::NotEnough { .. }
        | StoreError::HeldByOther(..)
        | StoreError::BadWeights(_)
        | StoreError::BadLabel(..)
        | StoreError::BadRate => StatusCode::BAD_REQUEST,
        StoreError::Meta(_) | StoreError::NoLabel(_) => StatusCode::INTERNAL_SERVER_ERROR,
    };
    error(status, e.to_string())
}

/// `DELETE /stores/remove-tombstone`, as `pd-ctl store remove-tombstone`:
/// forgets the Tombstone stores no region names. Those a region still
/// names stay, and are listed in the failure.
async fn remove_tombstones(State(s): State<Arc<HttpState>>) -> Response {
    match s.pd.cluster.remove_tombstones() {
        Ok(kept) if kept.is_empty() => {
            Json(json!("Remove tombstone successfully.")).into_response()
        }
        Ok(kept) => {
            let ids: Vec<String> = kept.iter().map(u64::to_string).collect();
            let msg = format!("failed stores: {}", ids.join(", "));
            error(StatusCode::INTERNAL_SERVER_ERROR, msg)
        }
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

/// Upstream's `MetaPeer`: the peer, its role by number and by name, and
/// `is_learner` when it is one.
fn peer_json(p: &metapb::Peer) -> Value {
    let role = metapb::PeerRole::try_from(p.role).unwrap_or(metapb::PeerRole::Voter);
    let mut v = json!({
        "id": p.id,
        "store_id": p.store_id,
        "role": p.role,
        "role_name": role.as_str_name(),
    });
    if role == metapb::PeerRole::Learner {
        v["is_learner"] = json!(true);
    }
    v
}

/// Upstream's region JSON; sizes in MiB, as upstream counts them.
fn region_json(r: &RegionInfo) -> Value {
    let epoch = r.epoch();
    let mut v = json!({
        "id": r.region.id,
        "start_key": hex(&r.region.start_key),
        "end_key": hex(&r.region.end_key),
        "epoch": { "conf_ver": epoch.conf_ver, "version": epoch.version },
        "peers": r.region.peers.iter().map(peer_json).collect::<Vec<_>>(),
        "leader": r.leader.as_ref().map(peer_json),
        "written_bytes": r.written_bytes,
        "read_bytes": 0,
        "written_keys": r.written_keys,
        "read_keys": 0,
        "approximate_size": r.approximate_size_mib(),
        "approximate_keys": r.approximate_keys,
    });
    if !r.down_peers.is_empty() {
        let down: Vec<Value> = r
            .down_peers
            .iter()
            .map(|d| {
                json!({
                    "peer": d.peer.as_ref().map(peer_json),
                    "down_seconds": d.down_seconds,
                })
            })
            .collect();
        v["down_peers"] = json!(down);
    }
    if !r.pending_peers.is_empty() {
        v["pending_peers"] = json!(r.pending_peers.iter().map(peer_json).collect::<Vec<_>>());
    }
    v
}

async fn regions(State(s): State<Arc<HttpState>>) -> Json<Value> {
    regions_answer(s.pd.cluster.scan_regions(b"", b"", 0).iter())
}

/// Upstream's answer listing regions: their count and each one.
fn regions_answer<'a>(regions: impl Iterator<Item = &'a RegionInfo>) -> Json<Value> {
    let list: Vec<Value> = regions.map(region_json).collect();
    Json(json!({ "count": list.len(), "regions": list }))
}

/// `GET /regions/store/{id}`: the regions with a peer on the store, in
/// key order; none for a store PD does not know. `?type=` picks the
/// peer's part as upstream names them: `leader`, `follower` (a voter
/// that does not lead), `learner`, `pending` (not caught up), `witness`
/// (Tikal has none) or `all` (the default).
async fn store_regions(
    State(s): State<Arc<HttpState>>,
    Path(id): Path<String>,
    RawQuery(query): RawQuery,
) -> Response {
    let id = match store_id(&id) {
        Ok(id) => id,
        Err(bad) => return bad,
    };
    let pairs = query_pairs(query.as_deref());
    let part = (pairs.iter())
        .find(|(k, v)| k == "type" && !v.is_empty())
        .map_or("all", |(_, v)| v.as_str());
    let plays: fn(&RegionInfo, &metapb::Peer) -> bool = match part {
        "all" => |_, _| true,
        "leader" => |r, p| r.leader.as_ref().is_some_and(|l| l.id == p.id),
        "follower" => {
            |r, p| crate::regions::is_voter(p) && r.leader.as_ref().is_none_or(|l| l.id != p.id)
        }
        "learner" => |_, p| crate::regions::is_learner(p),
        "pending" => |r, p| r.is_pending(p.id),
        "witness" => |_, _| false,
        other => {
            return error(
                StatusCode::BAD_REQUEST,
                format!("unknown region type {other:?}"),
            )
        }
    };
    let all = s.pd.cluster.scan_regions(b"", b"", 0);
    regions_answer(
        all.iter()
            .filter(|r| r.peer_on(id).is_some_and(|p| plays(r, p))),
    )
    .into_response()
}

/// `GET /regions/check/{state}` (`pd-ctl region check miss-peer` and the
/// like): the regions in that state, as upstream's region statistics
/// classify them, in key order.
async fn check_regions(State(s): State<Arc<HttpState>>, Path(state): Path<String>) -> Response {
    let c = &s.pd.cluster;
    let opts = c.opts();
    let want = opts.max_replicas as usize;
    let states = c.store_states();
    let offline = |store: u64| states.get(&store) == Some(&StoreState::Offline);
    let test: Box<dyn Fn(&RegionInfo) -> bool> = match state.as_str() {
        "miss-peer" => Box::new(|r| r.region.peers.len() < want),
        "extra-peer" => Box::new(|r| r.region.peers.len() > want),
        "down-peer" => Box::new(|r| !r.down_peers.is_empty()),
        "pending-peer" => Box::new(|r| !r.pending_peers.is_empty()),
        "offline-peer" => Box::new(|r| r.region.peers.iter().any(|p| offline(p.store_id))),
        "learner-peer" => Box::new(|r| r.learners().next().is_some()),
        "empty-region" => Box::new(|r| r.approximate_size_mib() <= 1),
        "undersized-region" => Box::new(|r| {
            r.approximate_size_mib() <= opts.max_merge_region_size
                && r.approximate_keys <= opts.max_merge_region_keys
        }),
        _ => {
            let why = format!("region state {state:?} is not supported");
            return error(StatusCode::BAD_REQUEST, why);
        }
    };
    let all = c.scan_regions(b"", b"", 0);
    regions_answer(all.iter().filter(|r| test(r))).into_response()
}

/// `GET /hotspot/regions/write` (`pd-ctl hot write`): per store, the hot
/// regions (writing at least `hot::HOT_BYTES_RATE`) it leads
/// (`as_leader`) and holds a replica of (`as_peer`), with their write
/// rates per second, as the hot scheduler sees them. Upstream's hot
/// degree and anti-count are not kept, so not shown.
async fn hot_write_regions(State(s): State<Arc<HttpState>>) -> Json<Value> {
    let regions = s.pd.cluster.scan_regions(b"", b"", 0);
    let hot: Vec<&RegionInfo> = regions.iter().filter(|r| crate::hot::is_hot(r)).collect();
    let by_store = |stores_of: &dyn Fn(&RegionInfo) -> Vec<u64>| {
        let mut stores: BTreeMap<u64, Vec<&RegionInfo>> = BTreeMap::new();
        for r in &hot {
            for store in stores_of(r) {
                stores.entry(store).or_default().push(r);
            }
        }
        let shown: serde_json::Map<String, Value> = (stores.into_iter())
            .map(|(store, rs)| {
                let stats: Vec<Value> = (rs.iter())
                    .map(|r| {
                        json!({
                            "store_id": store,
                            "region_id": r.region.id,
                            "flow_bytes": r.write_bytes_rate,
                            "flow_keys": r.write_keys_rate,
                        })
                    })
                    .collect();
                let total = json!({
                    "total_flow_bytes": rs.iter().map(|r| r.write_bytes_rate).sum::<f64>(),
                    "total_flow_keys": rs.iter().map(|r| r.write_keys_rate).sum::<f64>(),
                    "regions_count": rs.len(),
                    "statistics": stats,
                });
                (store.to_string(), total)
            })
            .collect();
        Value::Object(shown)
    };
    let leaders = |r: &RegionInfo| r.leader_store().into_iter().collect();
    let peers = |r: &RegionInfo| r.region.peers.iter().map(|p| p.store_id).collect();
    Json(json!({ "as_leader": by_store(&leaders), "as_peer": by_store(&peers) }))
}

/// `GET /hotspot/stores` (`pd-ctl hot store`): each store's write flow
/// per second, as the hot scheduler counts it (over the regions it
/// leads). Reads are not measured, so not shown.
async fn hot_stores(State(s): State<Arc<HttpState>>) -> Json<Value> {
    let loads = s.pd.cluster.store_loads();
    let mut bytes = serde_json::Map::new();
    let mut keys = serde_json::Map::new();
    for store in s.pd.cluster.stores().iter().filter(|s| !s.is_tombstone()) {
        let load = loads.get(&store.meta.id).copied().unwrap_or_default();
        bytes.insert(store.meta.id.to_string(), json!(load.write_bytes_rate));
        keys.insert(store.meta.id.to_string(), json!(load.write_keys_rate));
    }
    Json(json!({ "bytes-write-rate": bytes, "keys-write-rate": keys }))
}

/// Upstream's default and largest `limit` of a top-regions list.
const TOP_REGIONS: usize = 16;
const TOP_REGIONS_MAX: usize = 10240;

/// `GET /regions/writeflow`, `/confver`, `/version`, `/size`, `/keys`
/// (`pd-ctl region topwrite`, `topconfver`, ...): the `limit` regions
/// (16 unless given; at most 10240) with the most of `key`, most first.
async fn top_regions(
    State(s): State<Arc<HttpState>>,
    RawQuery(query): RawQuery,
    key: fn(&RegionInfo) -> u64,
) -> Response {
    let pairs = query_pairs(query.as_deref());
    // An empty value counts as none, as upstream reads it.
    let limit = match pairs.iter().find(|(k, v)| k == "limit" && !v.is_empty()) {
        None => TOP_REGIONS,
        Some((_, v)) => match v.parse::<i64>() {
            Ok(n) => usize::try_from(n).unwrap_or(0).min(TOP_REGIONS_MAX),
            Err(_) => {
                return error(
                    StatusCode::BAD_REQUEST,
                    format!("limit {v:?}: not a number"),
                )
            }
        },
    };
    let mut all = s.pd.cluster.scan_regions(b"", b"", 0);
    all.sort_by_key(|r| std::cmp::Reverse(key(r)));
    regions_answer(all.iter().take(limit)).into_response()
}

/// `GET /regions/count`: upstream's regions answer without the list.
async fn region_count(State(s): State<Arc<HttpState>>) -> Json<Value> {
    let count = s.pd.cluster.scan_regions(b"", b"", 0).len();
    Json(json!({ "count": count, "regions": null }))
}

/// `GET /cluster`: `metapb.Cluster`, as `pd-ctl cluster` shows it.
async fn cluster(State(s): State<Arc<HttpState>>) -> Json<Value> {
    let c = &s.pd.cluster;
    Json(json!({ "id": c.cluster_id, "max_peer_count": c.opts().max_replicas }))
}

async fn version() -> Json<Value> {
    Json(json!({
        "version": crate::PD_COMPAT_VERSION,
        "build_time": "",
        "hash": "",
        "branch": "",
    }))
}

/// `GET /status`: the build and when this PD started (Unix seconds).
async fn status(State(s): State<Arc<HttpState>>) -> Json<Value> {
    Json(json!({
        "build_ts": "None",
        "version": crate::PD_COMPAT_VERSION,
        "git_hash": option_env!("TIKAL_GIT_HASH").unwrap_or("None"),
        "start_timestamp": s.pd.cluster.started_secs(),
    }))
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
/// The key is the path's last segment, percent-escaped bytes (as pd-ctl
/// sends a binary key: `url.QueryUnescape` upstream, `+` a space), and
/// hex with `?format=hex`.
async fn region_by_key(State(s): State<Arc<HttpState>>, uri: axum::http::Uri) -> Response {
    let raw = uri.path().rsplit('/').next().unwrap_or_default();
    let Some(mut key) = unescape(raw) else {
        return error(
            StatusCode::BAD_REQUEST,
            format!("invalid escape in key {raw:?}"),
        );
    };
    let pairs = query_pairs(uri.query());
    if pairs.iter().any(|(k, v)| k == "format" && v == "hex") {
        let text = String::from_utf8_lossy(&key).into_owned();
        match crate::format::from_hex(&text) {
            Some(bytes) => key = bytes,
            None => return error(StatusCode::BAD_REQUEST, format!("invalid hex key {text:?}")),
        }
    }
    match s.pd.cluster.region_by_key(&key) {
        Some(r) => Json(region_json(&r)).into_response(),
        None => error(
            StatusCode::NOT_FOUND,
            format!("no region for key {}", crate::format::hex(&key)),
        ),
    }
}

/// `%XX` escapes to their bytes and `+` to a space, as Go's
/// `url.QueryUnescape`; None for a bad escape.
fn unescape(text: &str) -> Option<Vec<u8>> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                let hex = bytes.get(i + 1..i + 3)?;
                if !hex.iter().all(u8::is_ascii_hexdigit) {
                    return None;
                }
                out.push(u8::from_str_radix(std::str::from_utf8(hex).ok()?, 16).ok()?);
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    Some(out)
}

async fn config(State(s): State<Arc<HttpState>>) -> Json<Value> {
    let opts = s.pd.cluster.opts();
    Json(json!({
        "name": s.config.name,
        "data-dir": s.config.data_dir,
        "client-urls": s.config.client_urls,
        "peer-urls": s.config.peer_urls,
        "advertise-client-urls": s.config.advertise_client_urls,
        "initial-cluster": s.config.initial_cluster,
        "schedule": schedule_json(&s),
        "replication": opts.replication_json(),
    }))
}

async fn schedule_config(State(s): State<Arc<HttpState>>) -> Json<Value> {
    Json(schedule_json(&s))
}

/// The `schedule` settings as upstream shows them, each store's limits
/// (`store-limit`) among them.
fn schedule_json(s: &HttpState) -> Value {
    let mut json = s.pd.cluster.opts().schedule_json();
    json["store-limit"] = store_limits_json(s);
    json
}

async fn replication_config(State(s): State<Arc<HttpState>>) -> Json<Value> {
    Json(s.pd.cluster.opts().replication_json())
}

/// `POST /config` (or `/config/schedule`) with `{"key": value, ...}`, as
/// `pd-ctl config set` sends: keys bare (`max-merge-region-keys`) or with
/// their section (`schedule.split-merge-interval`). All change, or none.
/// With `?ttlSecond=N` (BR and Lightning) the change lasts N seconds
/// (see [`crate::cluster::Cluster::update_opts_for`]).
async fn update_config(
    State(s): State<Arc<HttpState>>,
    RawQuery(query): RawQuery,
    body: String,
) -> Response {
    let Ok(Value::Object(changes)) = serde_json::from_str::<Value>(&body) else {
        return error(
            StatusCode::BAD_REQUEST,
            "the body is not a JSON object".into(),
        );
    };
    let pairs = query_pairs(query.as_deref());
    let ttl = pairs.iter().find(|(k, _)| k == "ttlSecond").map(|(_, v)| v);
    let done = match ttl {
        None => {
            // What GET shows posted back unchanged is no change, so a
            // whole section read, edited and posted works (read-only
            // entries, `store-limit` among them, included).
            let mut shown = schedule_json(&s);
            if let (Value::Object(all), Value::Object(more)) =
                (&mut shown, s.pd.cluster.opts().replication_json())
            {
                all.extend(more);
            }
            let changes: serde_json::Map<String, Value> = (changes.into_iter())
                .filter(|(k, v)| shown.get(crate::cluster::bare_key(k)) != Some(v))
                .collect();
            s.pd.cluster
                .update_opts(&changes)
                .map(|()| "The config is updated.")
        }
        Some(text) => match text.trim().parse::<u64>() {
            Ok(secs) => (s.pd.cluster)
                .update_opts_for(&changes, std::time::Duration::from_secs(secs))
                .map(|()| "The ttl config is updated."),
            Err(_) => Err(format!(
                "ttlSecond must be a non-negative integer, not {text:?}"
            )),
        },
    };
    match done {
        Ok(said) => Json(json!(said)).into_response(),
        Err(e) => error(StatusCode::BAD_REQUEST, e),
    }
}

/// `GET /schedulers`: the running schedulers' names; with
/// `?status=paused` the paused ones (`pd-ctl scheduler show --status
/// paused`), as objects with when they were paused and resume if
/// `timestamp` is asked for; `?status=disabled` none (none is disabled).
async fn schedulers(State(s): State<Arc<HttpState>>, RawQuery(query): RawQuery) -> Json<Value> {
    let pairs = query_pairs(query.as_deref());
    let status = pairs.iter().find(|(k, _)| k == "status").map(|(_, v)| v);
    let timestamps = pairs.iter().any(|(k, _)| k == "timestamp");
    let cluster = &s.pd.cluster;
    Json(match status.map(String::as_str) {
        Some("paused") if timestamps => {
            let at = |secs: i64| rfc3339(secs.saturating_mul(1_000_000_000));
            (cluster.paused_schedulers().iter())
                .map(|p| json!({"name": p.name, "paused_at": at(p.paused_at), "resume_at": at(p.resume_at)}))
                .collect()
        }
        Some("paused") => json!(cluster
            .paused_schedulers()
            .iter()
            .map(|p| p.name)
            .collect::<Vec<_>>()),
        Some("disabled") => json!([]),
        _ => json!(cluster.schedulers()),
    })
}

/// `POST /schedulers/{name}` with `{"delay": seconds}`, as `pd-ctl
/// scheduler pause <name> <seconds>` (`resume` sends 0); `all` is every
/// running scheduler. Errors as upstream answers them (500 for an
/// unknown scheduler).
async fn pause_scheduler(
    State(s): State<Arc<HttpState>>,
    Path(name): Path<String>,
    body: String,
) -> Response {
    let delay = match pause_delay(&body) {
        Ok(d) => d,
        Err(bad) => return bad,
    };
    match s.pd.cluster.pause_scheduler(&name, delay) {
        Ok(()) => Json(json!("Pause or resume the scheduler successfully.")).into_response(),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

/// The `delay` (seconds) of a pause request's body, or the answer to a
/// bad one.
fn pause_delay(body: &str) -> Result<i64, Response> {
    let Ok(Value::Object(req)) = serde_json::from_str::<Value>(body) else {
        return Err(error(
            StatusCode::BAD_REQUEST,
            "the body must be a JSON object".into(),
        ));
    };
    match req.get("delay") {
        None => Err(error(StatusCode::BAD_REQUEST, "missing pause time".into())),
        Some(v) => (v.as_i64())
            .ok_or_else(|| error(StatusCode::BAD_REQUEST, format!("bad pause time {v}"))),
    }
}

/// `POST /checker/{name}` with `{"delay": seconds}`, as `pd-ctl checker
/// pause <name> <seconds>` (`resume` sends 0). Upstream's answers: 400
/// for a negative delay, 500 for an unknown checker.
async fn pause_checker(
    State(s): State<Arc<HttpState>>,
    Path(name): Path<String>,
    body: String,
) -> Response {
    let delay = match pause_delay(&body) {
        Ok(d) => d,
        Err(bad) => return bad,
    };
    let Ok(delay) = u64::try_from(delay) else {
        return error(StatusCode::BAD_REQUEST, "delay cannot be negative".into());
    };
    match s.pd.cluster.pause_checker(&name, delay) {
        Ok(()) if delay == 0 => Json(json!("Resume the checker successfully.")).into_response(),
        Ok(()) => Json(json!("Pause the checker successfully.")).into_response(),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e),
    }
}

/// `GET /checker/{name}`: `{"paused": bool}`, as `pd-ctl checker show`.
async fn checker_status(State(s): State<Arc<HttpState>>, Path(name): Path<String>) -> Response {
    match s.pd.cluster.is_checker_paused(&name) {
        Ok(paused) => Json(json!({ "paused": paused })).into_response(),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e),
    }
}

/// `POST /schedulers` with `{"name": "balance-leader-scheduler"}`, or
/// `{"name": "evict-leader-scheduler", "store_id": N}` to add a store to
/// that one.
async fn add_scheduler(State(s): State<Arc<HttpState>>, body: String) -> Response {
    let req = serde_json::from_str::<Value>(&body).unwrap_or_default();
    let Some(name) = req["name"].as_str() else {
        return error(StatusCode::BAD_REQUEST, "missing scheduler name".into());
    };
    if let Some(hold) = LeaderHold::by_name(name) {
        let Some(id) = req["store_id"].as_u64() else {
            return error(StatusCode::BAD_REQUEST, "missing store id".into());
        };
        return match s.pd.cluster.hold_store(hold, id) {
            Ok(()) => Json(json!("The scheduler is created.")).into_response(),
            Err(e) => store_error(e),
        };
    }
    match s.pd.cluster.add_scheduler(name) {
        Ok(()) => Json(json!("The scheduler is created.")).into_response(),
        Err(e @ SchedulerError::Meta(_)) => error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
        Err(e) => error(StatusCode::BAD_REQUEST, e.to_string()),
    }
}

/// `GET /scheduler-config/{evict,grant}-leader-scheduler/list`: the
/// stores it holds, each over the whole key space, in upstream's shape.
async fn held_stores_config(State(s): State<Arc<HttpState>>, Path(name): Path<String>) -> Response {
    let stores = LeaderHold::by_name(&name).map_or_else(Vec::new, |h| s.pd.cluster.held_stores(h));
    if stores.is_empty() {
        return error(StatusCode::NOT_FOUND, SchedulerError::NotFound.to_string());
    }
    let ranges: serde_json::Map<String, Value> = (stores.iter())
        .map(|id| (id.to_string(), json!([{"start-key": "", "end-key": ""}])))
        .collect();
    Json(json!({ "store-id-ranges": ranges })).into_response()
}

async fn remove_scheduler(State(s): State<Arc<HttpState>>, Path(name): Path<String>) -> Response {
    match s.pd.cluster.remove_scheduler(&name) {
        Ok(()) => Json(json!("The scheduler is removed.")).into_response(),
        Err(e @ SchedulerError::NotFound) => error(StatusCode::NOT_FOUND, e.to_string()),
        Err(e @ SchedulerError::Meta(_)) => error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
        Err(e) => error(StatusCode::BAD_REQUEST, e.to_string()),
    }
}

/// `GET /operators`: running operators in upstream's one-line form (JSON
/// strings), or as objects with `?object`; `?kind=region` (or `leader`,
/// `replica`) keeps those of a kind.
async fn operators(State(s): State<Arc<HttpState>>, RawQuery(query): RawQuery) -> Json<Value> {
    let pairs = query_pairs(query.as_deref());
    let as_objects = pairs.iter().any(|(k, _)| k == "object");
    let kinds: Vec<&str> = pairs
        .iter()
        .filter(|(k, _)| k == "kind")
        .map(|(_, v)| v.as_str())
        .collect();
    let list: Vec<Value> =
        s.pd.cluster
            .operators()
            .iter()
            .filter(|op| {
                let names = kind_names(op.plan.kind);
                kinds.is_empty() || kinds.iter().any(|k| names.split(',').any(|n| n == *k))
            })
            .map(|op| {
                if as_objects {
                    op.json_object(OpStatus::Running)
                } else {
                    json!(op.to_string())
                }
            })
            .collect();
    Json(json!(list))
}

/// `GET /operators/{region_id}`: the region's running operator, or the last
/// one that ended, as upstream's `"status: RUNNING, operator: …"` string.
async fn operator(State(s): State<Arc<HttpState>>, Path(id): Path<String>) -> Response {
    let id = match id.parse::<u64>() {
        Ok(id) => id,
        Err(e) => return error(StatusCode::BAD_REQUEST, e.to_string()),
    };
    match s.pd.cluster.operator(id) {
        Some((op, status)) => {
            Json(json!(format!("status: {}, operator: {op}", status.name()))).into_response()
        }
        None => operator_not_found(),
    }
}

/// `DELETE /operators/{region_id}`, as `pd-ctl operator remove`.
async fn cancel_operator(State(s): State<Arc<HttpState>>, Path(id): Path<String>) -> Response {
    let id = match id.parse::<u64>() {
        Ok(id) => id,
        Err(e) => return error(StatusCode::BAD_REQUEST, e.to_string()),
    };
    if s.pd.cluster.cancel_operator(id) {
        Json(json!("The pending operator is canceled.")).into_response()
    } else {
        operator_not_found()
    }
}

fn operator_not_found() -> Response {
    error(
        StatusCode::INTERNAL_SERVER_ERROR,
        "[PD:operator:ErrOperatorNotFound]operator not found".into(),
    )
}

/// `a=1&b&a=2` -> [("a","1"), ("b",""), ("a","2")] (values are not
/// percent-decoded: none of ours need it).
fn query_pairs(query: Option<&str>) -> Vec<(String, String)> {
    query
        .unwrap_or("")
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| match p.split_once('=') {
            Some((k, v)) => (k.to_string(), v.to_string()),
            None => (p.to_string(), String::new()),
        })
        .collect()
}

/// Upstream answers failures with the message as a JSON string.
pub(crate) fn error(status: StatusCode, msg: String) -> Response {
    (status, Json(json!(msg))).into_response()
}
