//! Deadlock detection across stores, as TiKV runs it: one detector for the
//! cluster, on the store leading the first region (the one holding the
//! empty key), reached over gRPC `deadlock.Deadlock/Detect`.
//!
//! Every store keeps detecting cycles among its own waiters at once
//! (`tikal_storage::txn::lock_wait`); each wait-for edge it accepts is also
//! sent to the cluster's detector ([`DetectorClient`]), which holds every
//! store's edges. An edge that closes a cycle there comes back as a
//! `DeadlockResponse`, and the store fails that wait with Deadlock. A wait
//! that ends sends `CleanUpWaitFor`. When the first region's leadership
//! moves, the new leader starts with no edges; each store reconnects and
//! sends it every edge it holds then.

use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use tikal_proto::deadlock::deadlock_client::DeadlockClient;
use tikal_proto::deadlock::deadlock_server::Deadlock;
use tikal_proto::deadlock::{
    DeadlockRequest, DeadlockRequestType, DeadlockResponse, WaitForEntriesRequest,
    WaitForEntriesResponse, WaitForEntry,
};
use tikal_raftstore::Router;
use tikal_storage::txn::lock_wait::{Detector, LockWaits, RemoteDetector};
use tokio::sync::mpsc;
use tokio_stream::wrappers::{ReceiverStream, UnboundedReceiverStream};
use tokio_stream::StreamExt;
use tonic::{Request, Response, Status, Streaming};
use tracing::{debug, info};

use crate::pd_client::PdClient;

/// How often an open Detect stream checks that this store still leads
/// the first region (streams of a former detector end).
const LEADERSHIP_CHECK: Duration = Duration::from_millis(500);

/// The cluster's detector, served by every store and answering only while
/// this store leads the first region.
pub struct DetectorService {
    router: Router,
    /// The graph, with the term of the first region it was built under:
    /// a new leadership starts from nothing.
    graph: Arc<Mutex<(u64, Detector)>>,
    /// How long an edge lives unless reported again: the wait-for-lock
    /// timeout, which no waiter outlives.
    ttl: Duration,
}

impl DetectorService {
    pub fn new(router: Router, ttl: Duration) -> DetectorService {
        DetectorService {
            router,
            graph: Arc::new(Mutex::new((0, Detector::with_ttl(ttl)))),
            ttl,
        }
    }
}

fn not_leader() -> Status {
    Status::unavailable("this store does not lead the first region: not the deadlock detector")
}

/// Handles one request on the detector; a response if it found a cycle.
fn handle(
    graph: &Mutex<(u64, Detector)>,
    ttl: Duration,
    term: u64,
    req: DeadlockRequest,
) -> Option<DeadlockResponse> {
    let mut g = graph.lock();
    if g.0 != term {
        *g = (term, Detector::with_ttl(ttl));
    }
    let entry = req.entry.unwrap_or_default();
    match DeadlockRequestType::try_from(req.tp) {
        Ok(DeadlockRequestType::Detect) => match g.1.detect(entry.clone()) {
            Ok(()) => None,
            Err(cycle) => Some(DeadlockResponse {
                deadlock_key_hash: cycle.key_hash,
                entry: Some(entry),
                wait_chain: cycle.wait_chain,
            }),
        },
        Ok(DeadlockRequestType::CleanUpWaitFor) => {
            g.1.remove(entry.txn, entry.wait_for_txn, entry.key_hash);
            None
        }
        Ok(DeadlockRequestType::CleanUp) => {
            g.1.clean_up(entry.txn);
            None
        }
        Err(_) => None,
    }
}

#[tonic::async_trait]
impl Deadlock for DetectorService {
    async fn get_wait_for_entries(
        &self,
        _: Request<WaitForEntriesRequest>,
    ) -> Result<Response<WaitForEntriesResponse>, Status> {
        let term = self.router.leading_first_region().ok_or_else(not_leader)?;
        let g = self.graph.lock();
        let entries = if g.0 == term { g.1.entries() } else { vec![] };
        Ok(Response::new(WaitForEntriesResponse { entries }))
    }

    type DetectStream = ReceiverStream<Result<DeadlockResponse, Status>>;

    async fn detect(
        &self,
        req: Request<Streaming<DeadlockRequest>>,
    ) -> Result<Response<Self::DetectStream>, Status> {
        self.router.leading_first_region().ok_or_else(not_leader)?;
        let mut incoming = req.into_inner();
        let (tx, rx) = mpsc::channel(1024);
        let (router, graph, ttl) = (self.router.clone(), self.graph.clone(), self.ttl);
        tokio::spawn(async move {
            let mut check = tokio::time::interval(LEADERSHIP_CHECK);
            loop {
                let req = tokio::select! {
                    req = incoming.next() => match req {
                        Some(Ok(req)) => Some(req),
                        _ => return,
                    },
                    _ = check.tick() => None,
                };
                let Some(term) = router.leading_first_region() else {
                    // Leadership moved: the stream ends, and its store
                    // finds the new detector and sends it its edges.
                    let _ = tx.send(Err(not_leader())).await;
                    return;
                };
                let Some(req) = req else { continue };
                if let Some(resp) = handle(&graph, ttl, term, req) {
                    if tx.send(Ok(resp)).await.is_err() {
                        return;
                    }
                }
            }
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }
}

/// A store's line to the cluster's detector: edges go out through an
/// unbounded queue (the lock path never waits on the network), deadlocks
/// come back to the store's waiters.
pub struct DetectorClient {
    tx: mpsc::UnboundedSender<DeadlockRequest>,
}

impl RemoteDetector for DetectorClient {
    fn detect(&self, entry: WaitForEntry) {
        self.send(DeadlockRequestType::Detect, entry);
    }

    fn clean_up_wait_for(&self, entry: WaitForEntry) {
        self.send(DeadlockRequestType::CleanUpWaitFor, entry);
    }
}

impl DetectorClient {
    fn send(&self, tp: DeadlockRequestType, entry: WaitForEntry) {
        let _ = self.tx.send(DeadlockRequest {
            tp: tp as i32,
            entry: Some(entry),
        });
    }

    /// Starts the line: it finds the first region's leader through PD,
    /// streams edges to it, and hands deadlocks to `waits`; it reconnects
    /// whenever the stream ends.
    pub fn start(pd: PdClient, waits: Arc<LockWaits>) -> Arc<DetectorClient> {
        let (tx, mut rx) = mpsc::unbounded_channel::<DeadlockRequest>();
        tokio::spawn(async move {
            loop {
                let addr = match detector_address(&pd).await {
                    Ok(a) => a,
                    Err(e) => {
                        debug!(error = %e, "deadlock detector not found yet");
                        drain(&mut rx);
                        tokio::time::sleep(Duration::from_secs(1)).await;
                        continue;
                    }
                };
                let url = crate::pd_client::pd_url(&addr);
                let connected = crate::pd_client::connect(url).await;
                let mut client = match connected.map(DeadlockClient::new) {
                    Ok(c) => c,
                    Err(e) => {
                        debug!(%addr, error = %e, "cannot reach the deadlock detector");
                        drain(&mut rx);
                        tokio::time::sleep(Duration::from_secs(1)).await;
                        continue;
                    }
                };
                // What was queued while no detector was reachable is
                // replaced by the edges as they are now: a new detector
                // (leadership moved) starts with none of them.
                drain(&mut rx);
                let (out_tx, out_rx) = mpsc::unbounded_channel();
                for entry in waits.edges() {
                    let _ = out_tx.send(DeadlockRequest {
                        tp: DeadlockRequestType::Detect as i32,
                        entry: Some(entry),
                    });
                }
                let responses = match client.detect(UnboundedReceiverStream::new(out_rx)).await {
                    Ok(r) => r.into_inner(),
                    Err(e) => {
                        debug!(%addr, error = %e, "deadlock detector refused the stream");
                        tokio::time::sleep(Duration::from_secs(1)).await;
                        continue;
                    }
                };
                info!(%addr, "connected to the deadlock detector");
                let mut responses = Box::pin(responses);
                loop {
                    tokio::select! {
                        req = rx.recv() => match req {
                            Some(req) => if out_tx.send(req).is_err() { break },
                            None => return,
                        },
                        resp = responses.next() => match resp {
                            Some(Ok(r)) => {
                                let entry = r.entry.unwrap_or_default();
                                waits.on_remote_deadlock(&entry, r.deadlock_key_hash, r.wait_chain);
                            }
                            _ => break,
                        },
                    }
                }
                debug!(%addr, "deadlock detector stream ended; finding it again");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        });
        Arc::new(DetectorClient { tx })
    }
}

fn drain(rx: &mut mpsc::UnboundedReceiver<DeadlockRequest>) {
    while rx.try_recv().is_ok() {}
}

/// The address of the store leading the first region, as PD knows it.
async fn detector_address(pd: &PdClient) -> anyhow::Result<String> {
    let leader = pd
        .region_leader(b"")
        .await?
        .ok_or_else(|| anyhow::anyhow!("the first region has no leader yet"))?;
    Ok(pd.get_store(leader.store_id).await?.address)
}
