//! `pdpb.PD` and `keyspacepb.Keyspace` over gRPC.
//!
//! Every response carries a header with the cluster id; failures go in the
//! header's error (as upstream PD does), not in the gRPC status, except for
//! requests naming another cluster.

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use futures::{Stream, StreamExt};
use tikal_proto::keyspacepb::{self, keyspace_server::Keyspace};
use tikal_proto::metapb;
use tikal_proto::pdpb::{self, pd_server::Pd};
use tonic::{Request, Response, Status, Streaming};
use tracing::warn;

use crate::cluster::{Cluster, PdError, PdResult, RegionInfo};
use crate::operator::{kind_names, OpStatus};
use crate::schedule::AdminOp;

#[derive(Clone)]
pub struct PdService {
    pub cluster: Arc<Cluster>,
    pub member: pdpb::Member,
}

type GrpcResult<T> = Result<Response<T>, Status>;

/// Splits a result into the value for the response body (default on error)
/// and the outcome for the response header.
fn split<T: Default>(r: PdResult<T>) -> (T, PdResult<()>) {
    match r {
        Ok(v) => (v, Ok(())),
        Err(e) => (T::default(), Err(e)),
    }
}
type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

impl PdService {
    /// `count` timestamps (see [`crate::tso::Tso::allocate`]); while the
    /// oracle is as far ahead of the clock as it may go, waits for the
    /// clock a millisecond at a time, and gives up after a second.
    async fn timestamps(&self, count: u32) -> Result<(i64, i64), Status> {
        for _ in 0..1000 {
            let allocated = (self.cluster.tso)
                .allocate(&self.cluster.meta, count)
                .map_err(|e| Status::unavailable(e.to_string()))?;
            match allocated {
                Some(ts) => return Ok(ts),
                None => tokio::time::sleep(std::time::Duration::from_millis(1)).await,
            }
        }
        Err(Status::unavailable(
            "timestamps used up; the clock does not move",
        ))
    }

    fn header(&self, result: PdResult<()>) -> Option<pdpb::ResponseHeader> {
        Some(pdpb::ResponseHeader {
            cluster_id: self.cluster.cluster_id,
            error: result.err().map(|e| pdpb::Error {
                r#type: e.kind as i32,
                message: e.message,
            }),
        })
    }

    fn check_cluster(&self, header: &Option<pdpb::RequestHeader>) -> Result<(), Status> {
        match header {
            Some(h) if h.cluster_id != 0 && h.cluster_id != self.cluster.cluster_id => {
                Err(Status::failed_precondition(format!(
                    "mismatch cluster id, need {} but got {}",
                    self.cluster.cluster_id, h.cluster_id
                )))
            }
            _ => Ok(()),
        }
    }

    fn region_response(&self, info: Option<RegionInfo>) -> pdpb::GetRegionResponse {
        let mut resp = pdpb::GetRegionResponse {
            header: self.header(self.bootstrapped()),
            ..Default::default()
        };
        if let Some(i) = info {
            // Down and pending peers too, as PD answers: clients route
            // follower and stale reads away from them.
            resp.region = Some(i.region);
            resp.leader = i.leader;
            resp.down_peers = i.down_peers;
            resp.pending_peers = i.pending_peers;
        }
        resp
    }

    fn bootstrapped(&self) -> PdResult<()> {
        if self.cluster.is_bootstrapped() {
            Ok(())
        } else {
            Err(PdError::new(
                pdpb::ErrorType::NotBootstrapped,
                "cluster is not bootstrapped",
            ))
        }
    }
}

#[tonic::async_trait]
impl Pd for PdService {
    async fn get_members(
        &self,
        req: Request<pdpb::GetMembersRequest>,
    ) -> GrpcResult<pdpb::GetMembersResponse> {
        self.check_cluster(&req.get_ref().header)?;
        Ok(Response::new(pdpb::GetMembersResponse {
            header: self.header(Ok(())),
            members: vec![self.member.clone()],
            leader: Some(self.member.clone()),
            etcd_leader: Some(self.member.clone()),
            ..Default::default()
        }))
    }

    type TsoStream = BoxStream<pdpb::TsoResponse>;

    async fn tso(&self, req: Request<Streaming<pdpb::TsoRequest>>) -> GrpcResult<Self::TsoStream> {
        let mut requests = req.into_inner();
        let svc = self.clone();
        let out = async_stream::try_stream! {
            while let Some(r) = requests.next().await {
                let r = r?;
                svc.check_cluster(&r.header)?;
                if r.count == 0 || r.count > crate::tso::MAX_COUNT {
                    Err(Status::invalid_argument(format!(
                        "tso count {} out of range 1..={}",
                        r.count,
                        crate::tso::MAX_COUNT
                    )))?;
                }
                let (physical, logical) = svc.timestamps(r.count).await?;
                yield pdpb::TsoResponse {
                    header: svc.header(Ok(())),
                    count: r.count,
                    timestamp: Some(pdpb::Timestamp {
                        physical,
                        logical,
                        suffix_bits: 0,
                    }),
                };
            }
        };
        Ok(Response::new(Box::pin(out)))
    }

    async fn bootstrap(
        &self,
        req: Request<pdpb::BootstrapRequest>,
    ) -> GrpcResult<pdpb::BootstrapResponse> {
        let req = req.into_inner();
        self.check_cluster(&req.header)?;
        let result = match (req.store, req.region) {
            (Some(store), Some(region)) => self.cluster.bootstrap(store, region),
            _ => Err(PdError::new(
                pdpb::ErrorType::InvalidValue,
                "bootstrap needs a store and a region",
            )),
        };
        Ok(Response::new(pdpb::BootstrapResponse {
            header: self.header(result),
        }))
    }

    async fn is_bootstrapped(
        &self,
        req: Request<pdpb::IsBootstrappedRequest>,
    ) -> GrpcResult<pdpb::IsBootstrappedResponse> {
        self.check_cluster(&req.get_ref().header)?;
        Ok(Response::new(pdpb::IsBootstrappedResponse {
            header: self.header(Ok(())),
            bootstrapped: self.cluster.is_bootstrapped(),
        }))
    }

    async fn alloc_id(
        &self,
        req: Request<pdpb::AllocIdRequest>,
    ) -> GrpcResult<pdpb::AllocIdResponse> {
        self.check_cluster(&req.get_ref().header)?;
        let (id, result) = split(self.cluster.alloc_id());
        Ok(Response::new(pdpb::AllocIdResponse {
            header: self.header(result),
            id,
        }))
    }

    async fn get_store(
        &self,
        req: Request<pdpb::GetStoreRequest>,
    ) -> GrpcResult<pdpb::GetStoreResponse> {
        self.check_cluster(&req.get_ref().header)?;
        let resp = match self.cluster.store(req.get_ref().store_id) {
            Ok(s) => pdpb::GetStoreResponse {
                header: self.header(Ok(())),
                store: Some(s.meta),
                stats: Some(s.stats),
            },
            Err(e) => pdpb::GetStoreResponse {
                header: self.header(Err(e)),
                ..Default::default()
            },
        };
        Ok(Response::new(resp))
    }

    async fn put_store(
        &self,
        req: Request<pdpb::PutStoreRequest>,
    ) -> GrpcResult<pdpb::PutStoreResponse> {
        let req = req.into_inner();
        self.check_cluster(&req.header)?;
        let result = match req.store {
            Some(store) => self.cluster.put_store(store),
            None => Err(PdError::new(pdpb::ErrorType::InvalidValue, "missing store")),
        };
        if let Err(e) = &result {
            warn!(error = %e, "PutStore refused");
        }
        Ok(Response::new(pdpb::PutStoreResponse {
            header: self.header(result),
        }))
    }

    async fn get_all_stores(
        &self,
        req: Request<pdpb::GetAllStoresRequest>,
    ) -> GrpcResult<pdpb::GetAllStoresResponse> {
        let req = req.into_inner();
        self.check_cluster(&req.header)?;
        let stores = self
            .cluster
            .stores()
            .into_iter()
            .map(|s| s.meta)
            .filter(|s| {
                !(req.exclude_tombstone_stores && s.state == metapb::StoreState::Tombstone as i32)
            })
            .collect();
        Ok(Response::new(pdpb::GetAllStoresResponse {
            header: self.header(self.bootstrapped()),
            stores,
        }))
    }

    async fn store_heartbeat(
        &self,
        req: Request<pdpb::StoreHeartbeatRequest>,
    ) -> GrpcResult<pdpb::StoreHeartbeatResponse> {
        let req = req.into_inner();
        self.check_cluster(&req.header)?;
        let result = match req.stats {
            Some(stats) => self.cluster.store_heartbeat(stats),
            None => Err(PdError::new(pdpb::ErrorType::InvalidValue, "missing stats")),
        };
        Ok(Response::new(pdpb::StoreHeartbeatResponse {
            header: self.header(result),
            cluster_version: String::new(),
        }))
    }

    type RegionHeartbeatStream = BoxStream<pdpb::RegionHeartbeatResponse>;

    async fn region_heartbeat(
        &self,
        req: Request<Streaming<pdpb::RegionHeartbeatRequest>>,
    ) -> GrpcResult<Self::RegionHeartbeatStream> {
        let mut requests = req.into_inner();
        let svc = self.clone();
        let out = async_stream::try_stream! {
            while let Some(r) = requests.next().await {
                let r = r?;
                svc.check_cluster(&r.header)?;
                match svc.cluster.region_heartbeat(&r) {
                    // The next step of the region's operator, to the store
                    // that sent the heartbeat: the region's leader.
                    Ok(Some(command)) => yield command,
                    Ok(None) => {}
                    Err(e) => {
                        warn!(error = %e, "region heartbeat rejected");
                        yield pdpb::RegionHeartbeatResponse {
                            header: svc.header(Err(e)),
                            ..Default::default()
                        };
                    }
                }
            }
        };
        Ok(Response::new(Box::pin(out)))
    }

    async fn get_region(
        &self,
        req: Request<pdpb::GetRegionRequest>,
    ) -> GrpcResult<pdpb::GetRegionResponse> {
        self.check_cluster(&req.get_ref().header)?;
        let info = self.cluster.region_by_key(&req.get_ref().region_key);
        Ok(Response::new(self.region_response(info)))
    }

    async fn get_prev_region(
        &self,
        req: Request<pdpb::GetRegionRequest>,
    ) -> GrpcResult<pdpb::GetRegionResponse> {
        self.check_cluster(&req.get_ref().header)?;
        let info = self.cluster.prev_region(&req.get_ref().region_key);
        Ok(Response::new(self.region_response(info)))
    }

    async fn get_region_by_id(
        &self,
        req: Request<pdpb::GetRegionByIdRequest>,
    ) -> GrpcResult<pdpb::GetRegionResponse> {
        self.check_cluster(&req.get_ref().header)?;
        let info = self.cluster.region_by_id(req.get_ref().region_id);
        Ok(Response::new(self.region_response(info)))
    }

    async fn scan_regions(
        &self,
        req: Request<pdpb::ScanRegionsRequest>,
    ) -> GrpcResult<pdpb::ScanRegionsResponse> {
        let req = req.into_inner();
        self.check_cluster(&req.header)?;
        let limit = req.limit.max(0) as usize;
        let infos = self
            .cluster
            .scan_regions(&req.start_key, &req.end_key, limit);
        let mut resp = pdpb::ScanRegionsResponse {
            header: self.header(self.bootstrapped()),
            ..Default::default()
        };
        for i in infos {
            resp.region_metas.push(i.region.clone());
            resp.leaders.push(i.leader.clone().unwrap_or_default());
            resp.regions.push(pdpb::Region {
                region: Some(i.region),
                leader: i.leader,
                down_peers: i.down_peers,
                pending_peers: i.pending_peers,
            });
        }
        Ok(Response::new(resp))
    }

    async fn ask_batch_split(
        &self,
        req: Request<pdpb::AskBatchSplitRequest>,
    ) -> GrpcResult<pdpb::AskBatchSplitResponse> {
        let req = req.into_inner();
        self.check_cluster(&req.header)?;
        let result = match &req.region {
            Some(region) => self.cluster.ask_batch_split(region, req.split_count),
            None => Err(PdError::new(
                pdpb::ErrorType::InvalidValue,
                "missing region",
            )),
        };
        let (ids, result) = split(result);
        Ok(Response::new(pdpb::AskBatchSplitResponse {
            header: self.header(result),
            ids,
        }))
    }

    async fn report_batch_split(
        &self,
        req: Request<pdpb::ReportBatchSplitRequest>,
    ) -> GrpcResult<pdpb::ReportBatchSplitResponse> {
        let req = req.into_inner();
        self.check_cluster(&req.header)?;
        let result = self.cluster.report_batch_split(&req.regions);
        Ok(Response::new(pdpb::ReportBatchSplitResponse {
            header: self.header(result),
        }))
    }

    async fn get_cluster_config(
        &self,
        req: Request<pdpb::GetClusterConfigRequest>,
    ) -> GrpcResult<pdpb::GetClusterConfigResponse> {
        self.check_cluster(&req.get_ref().header)?;
        Ok(Response::new(pdpb::GetClusterConfigResponse {
            header: self.header(self.bootstrapped()),
            cluster: Some(self.cluster.cluster_meta()),
        }))
    }

    async fn get_gc_safe_point(
        &self,
        req: Request<pdpb::GetGcSafePointRequest>,
    ) -> GrpcResult<pdpb::GetGcSafePointResponse> {
        self.check_cluster(&req.get_ref().header)?;
        Ok(Response::new(pdpb::GetGcSafePointResponse {
            header: self.header(Ok(())),
            safe_point: self.cluster.gc_safe_point(),
        }))
    }

    async fn update_gc_safe_point(
        &self,
        req: Request<pdpb::UpdateGcSafePointRequest>,
    ) -> GrpcResult<pdpb::UpdateGcSafePointResponse> {
        self.check_cluster(&req.get_ref().header)?;
        let (sp, result) = split(self.cluster.update_gc_safe_point(req.get_ref().safe_point));
        Ok(Response::new(pdpb::UpdateGcSafePointResponse {
            header: self.header(result),
            new_safe_point: sp,
        }))
    }

    async fn update_service_gc_safe_point(
        &self,
        req: Request<pdpb::UpdateServiceGcSafePointRequest>,
    ) -> GrpcResult<pdpb::UpdateServiceGcSafePointResponse> {
        let req = req.into_inner();
        self.check_cluster(&req.header)?;
        let (min, result) =
            match self
                .cluster
                .update_service_safe_point(&req.service_id, req.ttl, req.safe_point)
            {
                Ok(min) => (Some(min), Ok(())),
                Err(e) => (None, Err(e)),
            };
        let min = min.unwrap_or(crate::cluster::MinServiceSafePoint {
            service_id: vec![],
            ttl: 0,
            safe_point: 0,
        });
        Ok(Response::new(pdpb::UpdateServiceGcSafePointResponse {
            header: self.header(result),
            service_id: min.service_id,
            ttl: min.ttl,
            min_safe_point: min.safe_point,
        }))
    }

    /// See [`crate::scatter`]. With `regions_id`, the regions that could
    /// not be scattered (but exist) are tried again, up to `retry_limit`
    /// times (at most 30) with a pause that doubles from 100 ms, as
    /// upstream; failures lower `finished_percentage` and are no error. The single `region_id` of
    /// older clients fails in the header.
    async fn scatter_region(
        &self,
        req: Request<pdpb::ScatterRegionRequest>,
    ) -> GrpcResult<pdpb::ScatterRegionResponse> {
        let req = req.into_inner();
        self.check_cluster(&req.header)?;
        let scatter = |id: u64| {
            let group = req.group.clone();
            self.cluster
                .add_admin_operator(id, AdminOp::ScatterRegion { group })
        };
        if req.regions_id.is_empty() {
            let id = req.region_id;
            let result = match self.cluster.region_by_id(id) {
                None => Err(PdError::new(
                    pdpb::ErrorType::RegionNotFound,
                    format!("region {id} not found"),
                )),
                Some(_) => scatter(id).map_err(|e| PdError::new(pdpb::ErrorType::Unknown, e)),
            };
            let finished_percentage = if result.is_ok() { 100 } else { 0 };
            return Ok(Response::new(pdpb::ScatterRegionResponse {
                header: self.header(result),
                finished_percentage,
            }));
        }
        let mut left: Vec<u64> = req.regions_id.clone();
        left.sort_unstable();
        left.dedup();
        let total = left.len() as u64;
        // A region PD does not know fails at once (as upstream): no pause
        // would bring it.
        left.retain(|id| self.cluster.region_by_id(*id).is_some());
        let unknown = total - left.len() as u64;
        let mut pause = SCATTER_FIRST_PAUSE;
        for attempt in 0..=req.retry_limit.min(SCATTER_MAX_RETRIES) {
            if attempt > 0 {
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(SCATTER_MAX_PAUSE);
            }
            left.retain(|id| match scatter(*id) {
                Ok(()) => false,
                Err(e) => {
                    warn!(region_id = *id, error = %e, "region not scattered");
                    true
                }
            });
            if left.is_empty() {
                break;
            }
        }
        Ok(Response::new(pdpb::ScatterRegionResponse {
            header: self.header(Ok(())),
            finished_percentage: 100 - 100 * (left.len() as u64 + unknown) / total,
        }))
    }

    /// The region's running operator, or the last one that ended (kept
    /// ten minutes); `REGION_NOT_FOUND` "Not Found" if neither, as upstream.
    async fn get_operator(
        &self,
        req: Request<pdpb::GetOperatorRequest>,
    ) -> GrpcResult<pdpb::GetOperatorResponse> {
        let req = req.into_inner();
        self.check_cluster(&req.header)?;
        let Some((op, status)) = self.cluster.operator(req.region_id) else {
            return Ok(Response::new(pdpb::GetOperatorResponse {
                header: self.header(Err(PdError::new(
                    pdpb::ErrorType::RegionNotFound,
                    "Not Found",
                ))),
                ..Default::default()
            }));
        };
        let status = match status {
            OpStatus::Running => pdpb::OperatorStatus::Running,
            OpStatus::Success => pdpb::OperatorStatus::Success,
            OpStatus::Timeout => pdpb::OperatorStatus::Timeout,
            OpStatus::Cancel => pdpb::OperatorStatus::Cancel,
        };
        Ok(Response::new(pdpb::GetOperatorResponse {
            header: self.header(Ok(())),
            region_id: req.region_id,
            desc: op.plan.desc.into_bytes(),
            status: status as i32,
            kind: kind_names(op.plan.kind).into_bytes(),
        }))
    }
}

/// `ScatterRegion`'s retries (upstream's bounds).
const SCATTER_MAX_RETRIES: u64 = 30;
const SCATTER_FIRST_PAUSE: Duration = Duration::from_millis(100);
const SCATTER_MAX_PAUSE: Duration = Duration::from_secs(60);

/// `keyspacepb.Keyspace`: see [`crate::keyspace`].
#[derive(Clone)]
pub struct KeyspaceService {
    pub pd: PdService,
}

impl KeyspaceService {
    async fn load(&self, name: &str) -> Result<keyspacepb::KeyspaceMeta, PdError> {
        let cluster = &self.pd.cluster;
        let m = cluster.keyspaces.named(name)?;
        if m.id == crate::keyspace::DEFAULT_ID {
            // A client uses API V2: DEFAULT's range becomes its own regions.
            cluster.keyspaces.split_default(&cluster.meta)?;
            let wait = crate::keyspace::WAIT_REGION_SPLIT;
            crate::keyspace::wait_split(cluster, m.id, wait).await?;
        }
        Ok(m)
    }
}

type WatchStream = Pin<
    Box<dyn Stream<Item = Result<keyspacepb::WatchKeyspacesResponse, Status>> + Send + 'static>,
>;

#[tonic::async_trait]
impl Keyspace for KeyspaceService {
    async fn load_keyspace(
        &self,
        req: Request<keyspacepb::LoadKeyspaceRequest>,
    ) -> GrpcResult<keyspacepb::LoadKeyspaceResponse> {
        self.pd.check_cluster(&req.get_ref().header)?;
        let (keyspace, result) = match self.load(&req.get_ref().name).await {
            Ok(m) => (Some(m), Ok(())),
            Err(e) => (None, Err(e)),
        };
        Ok(Response::new(keyspacepb::LoadKeyspaceResponse {
            header: self.pd.header(result),
            keyspace,
        }))
    }

    type WatchKeyspacesStream = WatchStream;

    async fn watch_keyspaces(
        &self,
        req: Request<keyspacepb::WatchKeyspacesRequest>,
    ) -> GrpcResult<Self::WatchKeyspacesStream> {
        self.pd.check_cluster(&req.get_ref().header)?;
        // Subscribed before the first answer is read: no change falls between.
        let mut changes = self.pd.cluster.keyspaces.subscribe();
        let all = self.pd.cluster.keyspaces.list(0, 0);
        let svc = self.clone();
        let out = async_stream::try_stream! {
            yield keyspacepb::WatchKeyspacesResponse {
                header: svc.pd.header(Ok(())),
                keyspaces: all,
            };
            loop {
                let keyspaces = match changes.recv().await {
                    Ok(m) => vec![m],
                    // Too slow a watcher: it gets everything again.
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {
                        svc.pd.cluster.keyspaces.list(0, 0)
                    }
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => break,
                };
                yield keyspacepb::WatchKeyspacesResponse {
                    header: svc.pd.header(Ok(())),
                    keyspaces,
                };
            }
        };
        Ok(Response::new(Box::pin(out)))
    }

    async fn update_keyspace_state(
        &self,
        req: Request<keyspacepb::UpdateKeyspaceStateRequest>,
    ) -> GrpcResult<keyspacepb::UpdateKeyspaceStateResponse> {
        let req = req.into_inner();
        self.pd.check_cluster(&req.header)?;
        let cluster = &self.pd.cluster;
        let result = keyspacepb::KeyspaceState::try_from(req.state)
            .map_err(|_| {
                PdError::new(
                    pdpb::ErrorType::InvalidValue,
                    format!("unknown keyspace state {}", req.state),
                )
            })
            .and_then(|to| {
                let now = cluster.now_secs();
                cluster.keyspaces.set_state(&cluster.meta, req.id, to, now)
            });
        let (keyspace, result) = match result {
            Ok(m) => (Some(m), Ok(())),
            Err(e) => (None, Err(e)),
        };
        Ok(Response::new(keyspacepb::UpdateKeyspaceStateResponse {
            header: self.pd.header(result),
            keyspace,
        }))
    }

    async fn get_all_keyspaces(
        &self,
        req: Request<keyspacepb::GetAllKeyspacesRequest>,
    ) -> GrpcResult<keyspacepb::GetAllKeyspacesResponse> {
        let req = req.into_inner();
        self.pd.check_cluster(&req.header)?;
        let keyspaces = self
            .pd
            .cluster
            .keyspaces
            .list(req.start_id, req.limit as usize);
        Ok(Response::new(keyspacepb::GetAllKeyspacesResponse {
            header: self.pd.header(Ok(())),
            keyspaces,
        }))
    }
}
