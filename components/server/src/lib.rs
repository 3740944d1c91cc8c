//! The store server (`tikv-server`): wires engines, the raftstore and the
//! storage layer to the outside world.
//!
//! * [`service`] — `tikvpb.Tikv` gRPC handlers; `respond` is the edge where
//!   storage errors become kvproto error fields;
//! * [`node`] — store identity and cluster bootstrap with PD;
//! * [`heartbeat`] — store and region heartbeats to PD;
//! * [`status`] — the HTTP status server (`/metrics`, `/status`, `/config`);
//! * [`config`] — TiKV-compatible TOML configuration.
//!
//! [`run`] starts everything and returns when `shutdown` resolves.

// tonic::Status is large, and returning it is how gRPC handlers fail.
#![allow(clippy::result_large_err)]

pub mod config;
mod deadlock;
pub mod disk;
mod gc_worker;
pub mod heartbeat;
mod leadership;
pub mod metrics;
pub mod node;
pub mod pd_client;
pub mod raft_transport;
mod resolved_ts;
mod respond;
pub mod service;
pub mod split;
pub mod status;
mod txn_service;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use tikal_engine::{KvEngine, RaftLogEngine};
use tikal_proto::deadlock::deadlock_server::DeadlockServer;
use tikal_proto::tikvpb::tikv_server::TikvServer;
use tikal_raftstore::{RaftstoreConfig, Router, SnapManager, Store};
use tikal_storage::{RawApplier, RawStorage, StorageConfig};
use tracing::info;

use crate::config::{parse_duration, parse_size, TikvConfig};
use crate::pd_client::PdClient;

/// The TiKV version this server reports to PD and clients, which use it to
/// decide what protocol features a store supports.
pub const TIKV_COMPAT_VERSION: &str = "8.5.0";

/// Largest gRPC message accepted: above any legal request, so oversized
/// writes reach the storage layer and get a proper RaftEntryTooLarge error.
const MAX_GRPC_MESSAGE: usize = 64 * 1024 * 1024;

pub async fn run(
    mut cfg: TikvConfig,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    cfg.validate()?;
    let addr: SocketAddr = cfg
        .server
        .addr
        .parse()
        .with_context(|| format!("invalid --addr {:?}", cfg.server.addr))?;
    let status_addr: SocketAddr = cfg
        .server
        .status_addr
        .parse()
        .with_context(|| format!("invalid --status-addr {:?}", cfg.server.status_addr))?;
    let data_dir = cfg.data_dir();
    std::fs::create_dir_all(&data_dir)
        .with_context(|| format!("cannot create data dir {}", data_dir.display()))?;
    // Claim the ports before anything is registered with PD, so a port clash
    // fails fast instead of leaving a store PD cannot reach.
    let grpc_listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on {addr}"))?;
    let status_listener = std::net::TcpListener::bind(status_addr)
        .with_context(|| format!("cannot listen on status address {status_addr}"))?;

    // API V2's raw tombstones and expired raw values go in compaction.
    let drop_filter = (cfg.storage.api_version == 2)
        .then_some(tikal_storage::api::is_raw_garbage as tikal_engine::DropFilter);
    let kv = KvEngine::open_with(&data_dir.join("db"), drop_filter).context("opening KV engine")?;
    let raft_log =
        Arc::new(RaftLogEngine::open(&data_dir.join("raft-engine")).context("opening raft log")?);

    let pd = PdClient::connect(&cfg.pd.endpoints, &cfg.pd.retry()?).await?;
    info!(cluster_id = pd.cluster_id(), "connected to PD");
    let start_time = node::unix_secs();
    let store = node::store_meta(&cfg, start_time);
    let store_id = node::bootstrap(&pd, &kv, &store, cfg.storage.api_version).await?;
    pd.put_store(tikal_proto::metapb::Store {
        id: store_id,
        ..store
    })
    .await
    .context("registering the store with PD")?;
    info!(store_id, addr = %cfg.server.advertise_addr, "store registered");

    // At most 32 MiB (checked with the config).
    let entry_max = parse_size(&cfg.raftstore.raft_entry_max_size)? as usize;
    let raftstore_cfg = RaftstoreConfig {
        base_tick: parse_duration(&cfg.raftstore.raft_base_tick_interval)?,
        election_ticks: cfg.raftstore.raft_election_timeout_ticks,
        min_election_ticks: cfg.raftstore.raft_min_election_timeout_ticks,
        max_election_ticks: cfg.raftstore.raft_max_election_timeout_ticks,
        heartbeat_ticks: cfg.raftstore.raft_heartbeat_ticks,
        log_gc: tikal_raftstore::LogGc {
            threshold: cfg.raftstore.raft_log_gc_threshold,
            count_limit: cfg.raftstore.raft_log_gc_count_limit,
            size_limit: parse_size(&cfg.raftstore.raft_log_gc_size_limit)?,
        },
        log_gc_tick: parse_duration(&cfg.raftstore.raft_log_gc_tick_interval)?,
        command_batch: cfg.command_batch()?,
        raft_entry_max_size: parse_size(&cfg.raftstore.raft_entry_max_size)?,
        thread_nice: cfg.raftstore.thread_nice,
        write_bandwidth: parse_size(&cfg.quota.foreground_write_bandwidth)?,
        split_check: cfg.split_check()?,
        max_leader_missing: parse_duration(&cfg.raftstore.max_leader_missing_duration)?,
        max_peer_down: parse_duration(&cfg.raftstore.max_peer_down_duration)?,
        ..Default::default()
    };
    let (events_tx, events_rx) = tokio::sync::mpsc::unbounded_channel();
    let snaps = Arc::new(SnapManager::open(&data_dir.join("snap"))?.with_limits(
        cfg.server.concurrent_send_snap_limit,
        cfg.server.concurrent_recv_snap_limit,
    ));
    // max_ts and in-memory locks: the transactional storage's, and the
    // applier's for the leader's check of replica reads.
    let cm = Arc::new(tikal_storage::txn::ConcurrencyManager::default());
    let (transport, transport_handle) =
        raft_transport::GrpcTransport::new(pd.clone(), snaps.clone());
    let store = Store::open(
        store_id,
        raftstore_cfg,
        kv.clone(),
        raft_log,
        snaps.clone(),
        Arc::new(RawApplier::new(cm.clone())),
        Box::new(transport),
        events_tx,
    )?;
    let disk = Arc::new(disk::DiskMonitor::new(
        data_dir.clone(),
        parse_size(&cfg.raftstore.capacity)?,
        parse_size(&cfg.storage.reserve_space)?,
        store.disk_state(),
    ));
    // A store that starts without room refuses writes from the first one.
    disk.check();
    let router = Router::start(store)?;
    transport_handle.set_router(router.clone());
    let raft_intake = raft_transport::RaftIntake {
        store_id,
        router: router.clone(),
        snaps: snaps.clone(),
    };
    let raw = RawStorage::new(
        store_id,
        StorageConfig {
            api_version: cfg.storage.api_version,
            raft_entry_max_size: entry_max,
            enable_ttl: cfg.storage.enable_ttl,
        },
        kv.clone(),
        router.clone(),
    );

    let trace = match cfg.scheduler.trace_path.as_str() {
        "" => None,
        path => Some(Arc::new(
            tikal_storage::scheduler::TraceWriter::create(std::path::Path::new(path))
                .with_context(|| format!("cannot create scheduler trace {path}"))?,
        )),
    };
    let scheduler = tikal_storage::scheduler::Scheduler::start(
        cfg.scheduler.policy()?,
        trace.clone(),
        Some(Arc::new(metrics::SchedulerMetrics::new())),
    );
    let (max_ts_policy, max_ts_sync) = cfg.storage.max_ts.policy()?;
    cm.set_max_ts_policy(max_ts_policy);
    let wait_for_lock_timeout = parse_duration(&cfg.pessimistic_txn.wait_for_lock_timeout)?;
    let txn = tikal_storage::txn::TxnStorage::new(raw.clone())
        .with_concurrency_manager(cm)
        .with_tso_source(Arc::new(pd.clone()))
        .with_wait_for_lock_timeout(wait_for_lock_timeout);
    let reconnected = Arc::new(tokio::sync::Notify::new());
    // Ends, with PD's reason, once PD says this store is Tombstone.
    let mut store_heartbeat = tokio::spawn(heartbeat::store_heartbeat_loop(
        pd.clone(),
        router.clone(),
        heartbeat::StoreStatsSource {
            store_id,
            start_time: start_time as u32,
            disk: disk.clone(),
            snaps,
        },
        parse_duration(&cfg.raftstore.pd_store_heartbeat_tick_interval)?,
        reconnected.clone(),
    ));
    let background = [
        tokio::spawn(disk.run(Duration::from_secs(1))),
        tokio::spawn(heartbeat::region_heartbeat_loop(
            pd.clone(),
            router.clone(),
            events_rx,
            parse_duration(&cfg.raftstore.pd_heartbeat_tick_interval)?,
            reconnected.clone(),
        )),
        tokio::spawn(gc_worker::gc_loop(
            pd.clone(),
            router.clone(),
            txn.clone(),
            parse_duration(&cfg.gc.poll_safe_point_interval)?,
        )),
        tokio::spawn(leadership::watch_loop(
            pd.clone(),
            router.clone(),
            txn.clone(),
            Duration::from_millis(50),
        )),
        tokio::spawn(resolved_ts::max_ts_limit_loop(
            pd.clone(),
            txn.clone(),
            max_ts_sync,
        )),
        tokio::spawn(resolved_ts::advance_loop(
            pd.clone(),
            router.clone(),
            txn.clone(),
            store_id,
            parse_duration(&cfg.resolved_ts.advance_ts_interval)?,
        )),
    ];

    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let status_state = Arc::new(status::StatusState {
        config: parking_lot::RwLock::new(cfg.clone()),
        scheduler: scheduler.clone(),
        store_id,
        router: router.clone(),
        start_time: start_time as u64,
        txn: txn.clone(),
    });
    let mut status_stop = stop_rx.clone();
    let status_task = tokio::spawn(status::serve(status_listener, status_state, async move {
        let _ = status_stop.changed().await;
    }));

    txn.lock_waits().set_remote(deadlock::DetectorClient::start(
        pd.clone(),
        txn.lock_waits().clone(),
    ));
    let detector = DeadlockServer::new(deadlock::DetectorService::new(
        router.clone(),
        wait_for_lock_timeout,
    ));
    let service = TikvServer::new(service::TikvService::new(
        raw,
        txn,
        scheduler.clone(),
        raft_intake,
        pd.clone(),
        router.clone(),
    ))
    .max_decoding_message_size(MAX_GRPC_MESSAGE)
    .max_encoding_message_size(MAX_GRPC_MESSAGE);
    // Our own listener (bound early) bypasses tonic's socket options, so
    // set TCP_NODELAY here: without it small responses wait on delayed ACKs.
    let incoming = tonic::transport::server::TcpIncoming::from_listener(
        grpc_listener,
        true,
        Some(Duration::from_secs(10)),
    )
    .map_err(|e| anyhow::anyhow!("gRPC listener: {e}"))?;
    info!(%addr, %status_addr, "tikv-server is serving");
    let mut grpc_stop = stop_rx.clone();
    let grpc = tonic::transport::Server::builder()
        .tcp_nodelay(true)
        .add_service(service)
        .add_service(detector)
        .serve_with_incoming_shutdown(incoming, async move {
            let _ = grpc_stop.changed().await;
        });
    let grace = Duration::from_secs(2);
    let stopper = stop_tx.clone();
    // A store whose Raft loop is gone must not answer anything: its failure
    // stops the server like a signal, and the process exits non-zero.
    // So does a store PD removed from the cluster (Tombstone), as TiKV's.
    let raftstore_failure = Arc::new(parking_lot::Mutex::new(None));
    let shutdown = {
        let (router, failure) = (router.clone(), raftstore_failure.clone());
        let removed = async move {
            match (&mut store_heartbeat).await {
                Ok(reason) => reason,
                Err(_) => std::future::pending().await,
            }
        };
        async move {
            tokio::select! {
                _ = shutdown => {}
                reason = router.failed() => {
                    *failure.lock() = Some(format!("raftstore stopped: {reason}"))
                }
                reason = removed => *failure.lock() = Some(reason),
            }
        }
    };
    let result = tikal_util::serve_with_grace(
        grpc,
        shutdown,
        move || {
            let _ = stopper.send(true);
        },
        grace,
    )
    .await
    .unwrap_or(Ok(()))
    .context("gRPC server failed");
    let _ = stop_tx.send(true);
    for h in background {
        h.abort();
    }
    let _ = status_task.await;
    // Joins the raftstore thread: everything applied is in the engines.
    tokio::task::spawn_blocking(move || router.stop()).await?;
    if let Some(t) = trace {
        t.flush();
    }
    if let Some(reason) = raftstore_failure.lock().take() {
        anyhow::bail!("{reason}");
    }
    result
}
