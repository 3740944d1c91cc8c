//! The status server on `--status-addr`: `/metrics`, `/status`, `/config`.

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router};
use serde_json::json;

use crate::config::TikvConfig;
use crate::metrics;

pub struct StatusState {
    /// The effective configuration, updated by online changes.
    pub config: parking_lot::RwLock<TikvConfig>,
    pub scheduler: tikal_storage::scheduler::Scheduler,
    pub store_id: u64,
    pub router: tikal_raftstore::Router,
    pub start_time: u64,
    pub txn: tikal_storage::txn::TxnStorage,
}

pub async fn serve(
    listener: std::net::TcpListener,
    state: Arc<StatusState>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let app = Router::new()
        .route("/metrics", get(metrics_handler))
        .route("/status", get(status_handler))
        .route("/config", get(config_handler).post(update_config))
        .with_state(state);
    listener.set_nonblocking(true)?;
    axum::Server::from_tcp(listener)?
        .serve(app.into_make_service())
        .with_graceful_shutdown(shutdown)
        .await?;
    Ok(())
}

async fn metrics_handler(State(s): State<Arc<StatusState>>) -> impl IntoResponse {
    let (waiters, edges) = s.txn.lock_waits().counts();
    let table = &metrics::metrics().lock_wait_table;
    table.with_label_values(&["waiters"]).set(waiters as i64);
    table
        .with_label_values(&["wait_for_edges"])
        .set(edges as i64);
    (
        [("content-type", "text/plain; version=0.0.4")],
        metrics::render(),
    )
}

async fn status_handler(State(s): State<Arc<StatusState>>) -> impl IntoResponse {
    let views = s.router.region_views();
    Json(json!({
        "store_id": s.store_id,
        "version": crate::TIKV_COMPAT_VERSION,
        "start_time": s.start_time,
        "region_count": views.len(),
        "leader_count": views.iter().filter(|v| v.is_leader).count(),
    }))
}

async fn config_handler(State(s): State<Arc<StatusState>>) -> impl IntoResponse {
    Json(s.config.read().clone())
}

/// Online configuration change, in upstream's form: a JSON object of
/// dotted keys, e.g. `{"scheduler.policy": "edf"}`. All keys are checked
/// before any is applied.
async fn update_config(
    State(s): State<Arc<StatusState>>,
    body: axum::body::Bytes,
) -> axum::response::Response {
    let bad = |msg: String| (StatusCode::BAD_REQUEST, msg).into_response();
    let changes: serde_json::Map<String, serde_json::Value> = match serde_json::from_slice(&body) {
        Ok(serde_json::Value::Object(m)) => m,
        _ => return bad("body must be a JSON object of config keys to values".into()),
    };
    let mut cfg = s.config.read().clone();
    for (key, value) in &changes {
        match key.as_str() {
            "scheduler.policy" => match value.as_str() {
                Some(p) => cfg.scheduler.policy = p.to_string(),
                None => return bad(format!("{key} must be a string")),
            },
            other => return bad(format!("config item {other:?} cannot be changed online")),
        }
    }
    let policy = match cfg.scheduler.policy() {
        Ok(p) => p,
        Err(e) => return bad(format!("{e:#}")),
    };
    s.scheduler.set_policy(policy);
    *s.config.write() = cfg;
    tracing::info!(?changes, "configuration changed online");
    StatusCode::OK.into_response()
}
