//! The status server on `--status-addr`: `/metrics`, `/status`, `/config`.

use std::sync::Arc;

use axum::extract::State;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router};
use serde_json::json;

use crate::config::TikvConfig;
use crate::metrics;

pub struct StatusState {
    pub config: TikvConfig,
    pub store_id: u64,
    pub router: tikal_raftstore::Router,
    pub start_time: u64,
}

pub async fn serve(
    listener: std::net::TcpListener,
    state: Arc<StatusState>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let app = Router::new()
        .route("/metrics", get(metrics_handler))
        .route("/status", get(status_handler))
        .route("/config", get(config_handler))
        .with_state(state);
    listener.set_nonblocking(true)?;
    axum::Server::from_tcp(listener)?
        .serve(app.into_make_service())
        .with_graceful_shutdown(shutdown)
        .await?;
    Ok(())
}

async fn metrics_handler() -> impl IntoResponse {
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
    Json(s.config.clone())
}
