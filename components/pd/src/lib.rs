//! The Placement Driver (`pd-server`): cluster metadata, timestamps, ids.
//!
//! One process serves gRPC (`pdpb.PD`, `keyspacepb.Keyspace`) and the HTTP
//! API (`/pd/api/v1/...`) on the same client URL; requests are told apart by
//! their content type. Files:
//!
//! * [`cluster`] — ids, bootstrap, GC safe points, and the metadata of
//!   [`stores`] and [`regions`] (the state);
//! * [`schedule`] — what PD asks back on region heartbeats: [`operator`]s
//!   planned by the replica [`checker`], the [`merge`] checker and the
//!   [`balance`] and [`hot`] schedulers, and taking stores out of service;
//! * [`keyspace`] — API V2's tenants and the region boundaries they need;
//! * [`tso`] — the timestamp oracle;
//! * [`storage`] — the durable metadata store those write through;
//! * [`service`] / [`http`] — the gRPC and HTTP faces ([`format`]: how
//!   upstream prints sizes, durations and times);
//! * [`clock`] — "now", injectable for tests.
//!
//! A replicated PD group comes with a later issue; today PD is a single
//! durable member.

// tonic::Status is large, and returning it is how gRPC handlers fail.
#![allow(clippy::result_large_err)]

pub mod balance;
pub mod checker;
pub mod clock;
pub mod cluster;
pub mod config;
pub mod format;
pub mod hot;
pub mod http;
pub mod keyspace;
pub mod keyspace_http;
pub mod merge;
pub mod operator;
pub mod placement;
pub mod regions;
pub mod scatter;
pub mod schedule;
pub mod service;
pub mod storage;
pub mod store_limit;
pub mod stores;
pub mod tso;

use std::sync::Arc;

use anyhow::Context as _;
use tikal_proto::keyspacepb::keyspace_server::KeyspaceServer;
use tikal_proto::pdpb::{self, pd_server::PdServer};
use tracing::info;

pub use config::PdConfig;

/// The PD version reported to clients and in the HTTP API.
pub const PD_COMPAT_VERSION: &str = "8.5.0";

pub async fn run(
    mut cfg: PdConfig,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    cfg.validate()?;
    let addr = cfg.listen_addr()?;
    let listener =
        std::net::TcpListener::bind(addr).with_context(|| format!("cannot listen on {addr}"))?;
    let dir = cfg.data_dir();
    std::fs::create_dir_all(&dir)
        .with_context(|| format!("cannot create data dir {}", dir.display()))?;
    let meta = storage::MetaStore::open(&dir.join("meta")).context("opening PD metadata")?;
    let cluster = cluster::Cluster::open(meta, cfg.schedule_options()?)
        .map_err(|e| anyhow::anyhow!("loading PD metadata: {e}"))?;
    let cluster = Arc::new(cluster);
    let member = pdpb::Member {
        name: cfg.name.clone(),
        member_id: member_id(&cfg.name, &cfg.peer_urls()),
        peer_urls: cfg.peer_urls(),
        client_urls: cfg.client_urls(),
        binary_version: PD_COMPAT_VERSION.into(),
        deploy_path: dir.display().to_string(),
        ..Default::default()
    };
    tokio::spawn(keyspace::split_loop(cluster.clone()));
    let svc = service::PdService {
        cluster: cluster.clone(),
        member,
    };
    let grpc = tonic::transport::Server::builder()
        .add_service(PdServer::new(svc.clone()))
        .add_service(KeyspaceServer::new(service::KeyspaceService {
            pd: svc.clone(),
        }))
        .into_router();
    let app = grpc.merge(http::router(Arc::new(http::HttpState {
        pd: svc,
        config: cfg.clone(),
    })));
    info!(%addr, cluster_id = cluster.cluster_id, "pd-server is serving");
    listener.set_nonblocking(true)?;
    let (stop_tx, mut stop_rx) = tokio::sync::watch::channel(false);
    let server = axum::Server::from_tcp(listener)?
        .tcp_nodelay(true)
        .serve(app.into_make_service())
        .with_graceful_shutdown(async move {
            let _ = stop_rx.changed().await;
        });
    let stop = move || {
        let _ = stop_tx.send(true);
    };
    tikal_util::serve_with_grace(server, shutdown, stop, std::time::Duration::from_secs(2))
        .await
        .unwrap_or(Ok(()))
        .context("PD server failed")?;
    info!("pd-server stopped");
    Ok(())
}

/// A stable member id derived from the member's name and peer URLs.
fn member_id(name: &str, peer_urls: &[String]) -> u64 {
    // FNV-1a: stable across builds, unlike std's hasher.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in name.bytes().chain(peer_urls.join(",").bytes()) {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}
