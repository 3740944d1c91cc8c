//! PD's keyspace HTTP API (`/pd/api/v2/keyspaces`), with upstream's paths
//! and JSON: a keyspace is `{"id", "name", "state": "ENABLED", "created_at",
//! "state_changed_at", "config"}`.
//!
//! | method, path                     | body / answer                                  |
//! |----------------------------------|------------------------------------------------|
//! | POST `/keyspaces`                | `{"name", "config"}`: the new keyspace          |
//! | GET `/keyspaces?page_token=&limit=` | `{"keyspaces": [...], "next_page_token"}`    |
//! | GET `/keyspaces/{name}`          | one keyspace                                   |
//! | PUT `/keyspaces/{name}/state`    | `{"state": "disabled"}`: the keyspace after it |
//!
//! Failures answer with the message as a JSON string. Upstream answers 500
//! for every keyspace failure; here a bad request is 400, an unknown
//! keyspace 404, an existing name 409, and a split timeout 500.

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, put};
use axum::{Json, Router};
use serde_json::{json, Value};
use tikal_proto::keyspacepb::{KeyspaceMeta, KeyspaceState};
use tikal_proto::pdpb::ErrorType;

use crate::cluster::PdError;
use crate::http::{error, HttpState};

pub fn routes() -> Router<Arc<HttpState>> {
    Router::new()
        .route("/pd/api/v2/keyspaces", get(list).post(create))
        .route("/pd/api/v2/keyspaces/:name", get(load))
        .route("/pd/api/v2/keyspaces/:name/state", put(update_state))
}

pub fn keyspace_json(m: &KeyspaceMeta) -> Value {
    let state = KeyspaceState::try_from(m.state).unwrap_or(KeyspaceState::Enabled);
    json!({
        "id": m.id,
        "name": m.name,
        "state": state.as_str_name(),
        "created_at": m.created_at,
        "state_changed_at": m.state_changed_at,
        "config": m.config,
    })
}

fn pd_error(e: PdError) -> Response {
    let status = match e.kind {
        ErrorType::EntryNotFound => StatusCode::NOT_FOUND,
        ErrorType::DuplicatedEntry => StatusCode::CONFLICT,
        ErrorType::InvalidValue => StatusCode::BAD_REQUEST,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    };
    error(status, e.message)
}

async fn create(State(s): State<Arc<HttpState>>, body: String) -> Response {
    let Ok(req) = serde_json::from_str::<Value>(&body) else {
        return error(StatusCode::BAD_REQUEST, "the body is not JSON".into());
    };
    let Some(name) = req["name"].as_str() else {
        return error(StatusCode::BAD_REQUEST, "missing keyspace name".into());
    };
    let config: HashMap<String, String> = match &req["config"] {
        Value::Null => HashMap::new(),
        Value::Object(o) => {
            let mut config = HashMap::new();
            for (k, v) in o {
                let Some(v) = v.as_str() else {
                    return error(
                        StatusCode::BAD_REQUEST,
                        format!("config {k:?} is not a string"),
                    );
                };
                config.insert(k.clone(), v.to_string());
            }
            config
        }
        _ => return error(StatusCode::BAD_REQUEST, "config is not an object".into()),
    };
    let wait = crate::keyspace::WAIT_REGION_SPLIT;
    match crate::keyspace::create(&s.pd.cluster, name, config, wait).await {
        Ok(m) => Json(keyspace_json(&m)).into_response(),
        Err(e) => pd_error(e),
    }
}

async fn list(
    State(s): State<Arc<HttpState>>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let number = |key: &str| -> Result<usize, Response> {
        match q.get(key).map(String::as_str) {
            None | Some("") => Ok(0),
            Some(v) => v
                .parse()
                .map_err(|_| error(StatusCode::BAD_REQUEST, format!("invalid {key} {v:?}"))),
        }
    };
    let (start, limit) = match (number("page_token"), number("limit")) {
        (Ok(start), Ok(limit)) => (start, limit),
        (Err(e), _) | (_, Err(e)) => return e,
    };
    let start = u32::try_from(start).unwrap_or(u32::MAX);
    // One more than asked: its id is the next page's token.
    let mut page = s.pd.cluster.keyspaces.list(
        start,
        if limit == 0 {
            0
        } else {
            limit.saturating_add(1)
        },
    );
    let next = if limit > 0 && page.len() > limit {
        page.pop().map(|m| m.id.to_string()).unwrap_or_default()
    } else {
        String::new()
    };
    Json(json!({
        "keyspaces": page.iter().map(keyspace_json).collect::<Vec<_>>(),
        "next_page_token": next,
    }))
    .into_response()
}

async fn load(State(s): State<Arc<HttpState>>, Path(name): Path<String>) -> Response {
    match s.pd.cluster.keyspaces.named(&name) {
        Ok(m) => Json(keyspace_json(&m)).into_response(),
        Err(e) => pd_error(e),
    }
}

async fn update_state(
    State(s): State<Arc<HttpState>>,
    Path(name): Path<String>,
    body: String,
) -> Response {
    let req = serde_json::from_str::<Value>(&body).unwrap_or_default();
    let state = req["state"]
        .as_str()
        .and_then(|v| KeyspaceState::from_str_name(&v.to_uppercase()));
    let Some(to) = state else {
        return error(
            StatusCode::BAD_REQUEST,
            "state must be one of enabled, disabled, archived, tombstone".into(),
        );
    };
    let cluster = &s.pd.cluster;
    let now = cluster.now_secs();
    let moved = cluster
        .keyspaces
        .named(&name)
        .and_then(|m| cluster.keyspaces.set_state(&cluster.meta, m.id, to, now));
    match moved {
        Ok(m) => Json(keyspace_json(&m)).into_response(),
        Err(e) => pd_error(e),
    }
}
