//! `tikvpb.Tikv`: the gRPC edge of the store.
//!
//! Raw writes first pass the deadline-aware scheduler: their metadata is
//! read from the request (malformed metadata: `InvalidArgument` naming the
//! header), and they run once admitted, holding a worker slot meanwhile.
//!
//! Each handler unpacks the request, calls the storage layer, and answers
//! through [`respond`], the one place failures become kvproto error fields
//! or gRPC statuses.

use tikal_proto::codec::status;
use tikal_proto::kvrpcpb::*;
use tikal_proto::raft_serverpb::{Done, RaftMessage, SnapshotChunk};
use tikal_proto::tikvpb::tikv_server::Tikv;
use tikal_proto::tikvpb::BatchRaftMessage;
use tikal_raftstore::{Pickup, Router};
use tikal_storage::api::Cmd;
use tikal_storage::scheduler::{now_ms, Footprint, Permit, RequestMeta, Scheduler};
use tikal_storage::txn::TxnStorage;
use tikal_storage::{CasOutcome, PreparedWrite, RawStorage, StorageError};
use tonic::{Code, Request, Response, Status};

use crate::pd_client::PdClient;
use crate::raft_transport::RaftIntake;
use crate::respond::respond;
use crate::split::{self, SplitError};
use crate::txn_service as txn;

pub struct TikvService {
    raw: RawStorage,
    txn: TxnStorage,
    scheduler: Scheduler,
    raft: RaftIntake,
    /// For the ids of client-requested splits.
    pd: PdClient,
    /// For other stores' CheckLeader.
    router: Router,
    gc: txn::GcGate,
}

impl TikvService {
    pub fn new(
        raw: RawStorage,
        txn: TxnStorage,
        scheduler: Scheduler,
        raft: RaftIntake,
        pd: PdClient,
        router: Router,
    ) -> Self {
        TikvService {
            raw,
            txn,
            scheduler,
            raft,
            pd,
            router,
            gc: txn::GcGate::default(),
        }
    }

    /// Queues a prepared write with the scheduler. When admitted, the
    /// scheduler's action hands it straight to the store loop; this then
    /// waits for its outcome (the CAS outcome, for a compare-and-swap).
    async fn schedule(
        &self,
        meta: RequestMeta,
        footprint: Footprint,
        write: Result<PreparedWrite, StorageError>,
    ) -> Result<Option<CasOutcome>, StorageError> {
        // Invalid writes fail here, before they take a place in the queue.
        let write = write?;
        let (tx, rx) = tokio::sync::oneshot::channel();
        let raw = self.raw.clone();
        let _ticket = self.scheduler.submit(
            meta,
            footprint,
            Box::new(move |permit: Permit| {
                let (started, hold) = permit.split();
                let pickup: Pickup = Some(Box::new(started));
                let _ = tx.send((raw.submit(write, pickup), hold));
            }),
        );
        let (pending, _hold) = rx
            .await
            .map_err(|_| StorageError::Internal("the scheduler dropped the write".into()))?;
        pending?.wait().await
    }
}

/// The request's scheduling metadata (headers, else Context hints).
fn request_meta<T>(req: &Request<T>, ctx: Option<&Context>) -> Result<RequestMeta, Status> {
    let md = req.metadata();
    let header = |name: &str| {
        // A value that is not visible ASCII cannot be valid metadata.
        md.get(name).map(|v| v.to_str().unwrap_or("\u{fffd}"))
    };
    let default_ctx = Context::default();
    RequestMeta::parse(header, ctx.unwrap_or(&default_ctx), now_ms())
        .map_err(|e| status(Code::InvalidArgument, e.to_string()))
}

/// Hash of a (column family, key) pair, for per-key write ordering. The
/// column family is hashed as storage resolves it, so `""` and `"default"`
/// name the same key.
fn key_hash(cf: &str, key: &[u8]) -> u64 {
    let cf = tikal_storage::cf_name(cf).map_or(cf, |c| c.name());
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in cf.bytes().chain([0xff]).chain(key.iter().copied()) {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

fn keys_footprint<'a>(cf: &str, keys: impl IntoIterator<Item = &'a [u8]>) -> Footprint {
    Footprint::Keys(keys.into_iter().map(|k| key_hash(cf, k)).collect())
}

type GrpcResult<T> = Result<Response<T>, Status>;

#[tonic::async_trait]
impl Tikv for TikvService {
    async fn raft(
        &self,
        req: Request<tonic::Streaming<RaftMessage>>,
    ) -> Result<Response<Done>, Status> {
        self.raft.raft(req.into_inner()).await.map(Response::new)
    }

    async fn batch_raft(
        &self,
        req: Request<tonic::Streaming<BatchRaftMessage>>,
    ) -> Result<Response<Done>, Status> {
        self.raft
            .batch_raft(req.into_inner())
            .await
            .map(Response::new)
    }

    async fn snapshot(
        &self,
        req: Request<tonic::Streaming<SnapshotChunk>>,
    ) -> Result<Response<Done>, Status> {
        self.raft
            .snapshot(req.into_inner())
            .await
            .map(Response::new)
    }

    async fn check_leader(
        &self,
        req: Request<CheckLeaderRequest>,
    ) -> GrpcResult<CheckLeaderResponse> {
        Ok(Response::new(crate::resolved_ts::handle_check_leader(
            &self.router,
            self.raw.store_id(),
            req.into_inner(),
        )))
    }

    async fn get_store_safe_ts(
        &self,
        req: Request<StoreSafeTsRequest>,
    ) -> GrpcResult<StoreSafeTsResponse> {
        let range = req.into_inner().key_range.unwrap_or_default();
        Ok(Response::new(StoreSafeTsResponse {
            safe_ts: crate::resolved_ts::store_safe_ts(
                &self.router,
                &range.start_key,
                &range.end_key,
            ),
        }))
    }

    async fn kv_delete_range(
        &self,
        req: Request<DeleteRangeRequest>,
    ) -> GrpcResult<DeleteRangeResponse> {
        txn::delete_range(&self.txn, req.into_inner())
            .await
            .map(Response::new)
    }

    async fn unsafe_destroy_range(
        &self,
        req: Request<UnsafeDestroyRangeRequest>,
    ) -> GrpcResult<UnsafeDestroyRangeResponse> {
        txn::unsafe_destroy_range(&self.txn, &self.gc, req.into_inner())
            .await
            .map(Response::new)
    }

    async fn kv_gc(&self, req: Request<GcRequest>) -> GrpcResult<GcResponse> {
        txn::gc(&self.txn, &self.gc, &self.pd, req.into_inner())
            .await
            .map(Response::new)
    }

    async fn kv_get(&self, req: Request<GetRequest>) -> GrpcResult<GetResponse> {
        txn::get(&self.txn, req.into_inner())
            .await
            .map(Response::new)
    }

    async fn kv_batch_get(&self, req: Request<BatchGetRequest>) -> GrpcResult<BatchGetResponse> {
        txn::batch_get(&self.txn, req.into_inner())
            .await
            .map(Response::new)
    }

    async fn kv_scan(&self, req: Request<ScanRequest>) -> GrpcResult<ScanResponse> {
        txn::scan(&self.txn, req.into_inner())
            .await
            .map(Response::new)
    }

    async fn kv_prewrite(&self, req: Request<PrewriteRequest>) -> GrpcResult<PrewriteResponse> {
        txn::prewrite(&self.txn, req.into_inner())
            .await
            .map(Response::new)
    }

    async fn kv_commit(&self, req: Request<CommitRequest>) -> GrpcResult<CommitResponse> {
        txn::commit(&self.txn, req.into_inner())
            .await
            .map(Response::new)
    }

    async fn kv_cleanup(&self, req: Request<CleanupRequest>) -> GrpcResult<CleanupResponse> {
        txn::cleanup(&self.txn, req.into_inner())
            .await
            .map(Response::new)
    }

    async fn kv_batch_rollback(
        &self,
        req: Request<BatchRollbackRequest>,
    ) -> GrpcResult<BatchRollbackResponse> {
        txn::batch_rollback(&self.txn, req.into_inner())
            .await
            .map(Response::new)
    }

    async fn kv_check_txn_status(
        &self,
        req: Request<CheckTxnStatusRequest>,
    ) -> GrpcResult<CheckTxnStatusResponse> {
        txn::check_txn_status(&self.txn, req.into_inner())
            .await
            .map(Response::new)
    }

    async fn kv_check_secondary_locks(
        &self,
        req: Request<CheckSecondaryLocksRequest>,
    ) -> GrpcResult<CheckSecondaryLocksResponse> {
        txn::check_secondary_locks(&self.txn, req.into_inner())
            .await
            .map(Response::new)
    }

    async fn kv_resolve_lock(
        &self,
        req: Request<ResolveLockRequest>,
    ) -> GrpcResult<ResolveLockResponse> {
        txn::resolve_lock(&self.txn, req.into_inner())
            .await
            .map(Response::new)
    }

    async fn kv_scan_lock(&self, req: Request<ScanLockRequest>) -> GrpcResult<ScanLockResponse> {
        txn::scan_lock(&self.txn, req.into_inner())
            .await
            .map(Response::new)
    }

    async fn kv_txn_heart_beat(
        &self,
        req: Request<TxnHeartBeatRequest>,
    ) -> GrpcResult<TxnHeartBeatResponse> {
        txn::txn_heart_beat(&self.txn, req.into_inner())
            .await
            .map(Response::new)
    }

    async fn kv_pessimistic_lock(
        &self,
        req: Request<PessimisticLockRequest>,
    ) -> GrpcResult<PessimisticLockResponse> {
        txn::pessimistic_lock(&self.txn, req.into_inner())
            .await
            .map(Response::new)
    }

    async fn kv_pessimistic_rollback(
        &self,
        req: Request<PessimisticRollbackRequest>,
    ) -> GrpcResult<PessimisticRollbackResponse> {
        txn::pessimistic_rollback(&self.txn, req.into_inner())
            .await
            .map(Response::new)
    }

    async fn raw_get(&self, req: Request<RawGetRequest>) -> GrpcResult<RawGetResponse> {
        let req = req.into_inner();
        let ctx = req.context.unwrap_or_default();
        let call = self.raw.guarded_read(&ctx, Cmd::Raw, |at| {
            self.raw.get(at, &ctx, &req.cf, &req.key)
        });
        respond("raw_get", call, |r: &mut RawGetResponse, v| match v {
            Some(v) => r.value = v,
            None => r.not_found = true,
        })
        .await
        .map(Response::new)
    }

    async fn raw_batch_get(
        &self,
        req: Request<RawBatchGetRequest>,
    ) -> GrpcResult<RawBatchGetResponse> {
        let req = req.into_inner();
        let ctx = req.context.unwrap_or_default();
        let call = self.raw.guarded_read(&ctx, Cmd::Raw, |at| {
            self.raw.batch_get(at, &ctx, &req.cf, &req.keys)
        });
        respond(
            "raw_batch_get",
            call,
            |r: &mut RawBatchGetResponse, pairs| r.pairs = pairs,
        )
        .await
        .map(Response::new)
    }

    async fn raw_put(&self, req: Request<RawPutRequest>) -> GrpcResult<RawPutResponse> {
        let meta = request_meta(&req, req.get_ref().context.as_ref())?;
        let req = req.into_inner();
        let ctx = req.context.unwrap_or_default();
        let footprint = keys_footprint(&req.cf, [req.key.as_slice()]);
        let write = self
            .raw
            .prepare_put(&ctx, &req.cf, req.key, &req.value, req.ttl);
        let call = self.schedule(meta, footprint, write);
        respond("raw_put", call, |_: &mut RawPutResponse, _| {})
            .await
            .map(Response::new)
    }

    async fn raw_batch_put(
        &self,
        req: Request<RawBatchPutRequest>,
    ) -> GrpcResult<RawBatchPutResponse> {
        let meta = request_meta(&req, req.get_ref().context.as_ref())?;
        let req = req.into_inner();
        let ctx = req.context.unwrap_or_default();
        // The deprecated single `ttl` is ignored, as TiKV ignores it: an
        // empty `ttls` means no TTL.
        let ttls = req.ttls;
        let footprint = keys_footprint(&req.cf, req.pairs.iter().map(|p| p.key.as_slice()));
        let write = self.raw.prepare_batch_put(&ctx, &req.cf, req.pairs, &ttls);
        let call = self.schedule(meta, footprint, write);
        respond("raw_batch_put", call, |_: &mut RawBatchPutResponse, _| {})
            .await
            .map(Response::new)
    }

    async fn raw_delete(&self, req: Request<RawDeleteRequest>) -> GrpcResult<RawDeleteResponse> {
        let meta = request_meta(&req, req.get_ref().context.as_ref())?;
        let req = req.into_inner();
        let ctx = req.context.unwrap_or_default();
        let footprint = keys_footprint(&req.cf, [req.key.as_slice()]);
        let write = self.raw.prepare_delete(&ctx, &req.cf, req.key);
        let call = self.schedule(meta, footprint, write);
        respond("raw_delete", call, |_: &mut RawDeleteResponse, _| {})
            .await
            .map(Response::new)
    }

    async fn raw_batch_delete(
        &self,
        req: Request<RawBatchDeleteRequest>,
    ) -> GrpcResult<RawBatchDeleteResponse> {
        let meta = request_meta(&req, req.get_ref().context.as_ref())?;
        let req = req.into_inner();
        let ctx = req.context.unwrap_or_default();
        let footprint = keys_footprint(&req.cf, req.keys.iter().map(Vec::as_slice));
        let write = self.raw.prepare_batch_delete(&ctx, &req.cf, req.keys);
        let call = self.schedule(meta, footprint, write);
        respond(
            "raw_batch_delete",
            call,
            |_: &mut RawBatchDeleteResponse, _| {},
        )
        .await
        .map(Response::new)
    }

    async fn raw_scan(&self, req: Request<RawScanRequest>) -> GrpcResult<RawScanResponse> {
        let req = req.into_inner();
        let ctx = req.context.unwrap_or_default();
        let call = self.raw.guarded_read(&ctx, Cmd::Raw, |at| {
            self.raw.scan(
                at,
                &ctx,
                &req.cf,
                &req.start_key,
                &req.end_key,
                req.limit,
                req.key_only,
                req.reverse,
            )
        });
        respond("raw_scan", call, |r: &mut RawScanResponse, kvs| r.kvs = kvs)
            .await
            .map(Response::new)
    }

    async fn raw_delete_range(
        &self,
        req: Request<RawDeleteRangeRequest>,
    ) -> GrpcResult<RawDeleteRangeResponse> {
        let meta = request_meta(&req, req.get_ref().context.as_ref())?;
        let req = req.into_inner();
        let ctx = req.context.unwrap_or_default();
        let write = self
            .raw
            .prepare_delete_range(&ctx, &req.cf, req.start_key, req.end_key);
        let call = self.schedule(meta, Footprint::Everything, write);
        respond(
            "raw_delete_range",
            call,
            |_: &mut RawDeleteRangeResponse, _| {},
        )
        .await
        .map(Response::new)
    }

    async fn raw_batch_scan(
        &self,
        req: Request<RawBatchScanRequest>,
    ) -> GrpcResult<RawBatchScanResponse> {
        let req = req.into_inner();
        let ctx = req.context.unwrap_or_default();
        let call = self.raw.guarded_read(&ctx, Cmd::Raw, |at| {
            self.raw.batch_scan(
                at,
                &ctx,
                &req.cf,
                &req.ranges,
                req.each_limit,
                req.key_only,
                req.reverse,
            )
        });
        respond(
            "raw_batch_scan",
            call,
            |r: &mut RawBatchScanResponse, kvs| r.kvs = kvs,
        )
        .await
        .map(Response::new)
    }

    async fn raw_get_key_ttl(
        &self,
        req: Request<RawGetKeyTtlRequest>,
    ) -> GrpcResult<RawGetKeyTtlResponse> {
        let req = req.into_inner();
        let ctx = req.context.unwrap_or_default();
        let call = self.raw.guarded_read(&ctx, Cmd::Raw, |at| {
            self.raw.get_key_ttl(at, &ctx, &req.cf, &req.key)
        });
        respond(
            "raw_get_key_ttl",
            call,
            |r: &mut RawGetKeyTtlResponse, ttl| match ttl {
                Some(ttl) => r.ttl = ttl,
                None => r.not_found = true,
            },
        )
        .await
        .map(Response::new)
    }

    async fn raw_compare_and_swap(
        &self,
        req: Request<RawCasRequest>,
    ) -> GrpcResult<RawCasResponse> {
        let meta = request_meta(&req, req.get_ref().context.as_ref())?;
        let req = req.into_inner();
        let ctx = req.context.unwrap_or_default();
        let expected = (!req.previous_not_exist).then_some(req.previous_value);
        let footprint = keys_footprint(&req.cf, [req.key.as_slice()]);
        let write = self
            .raw
            .prepare_compare_and_swap(&ctx, &req.cf, req.key, &req.value, expected, req.ttl);
        let call = async {
            self.schedule(meta, footprint, write).await?.ok_or_else(|| {
                StorageError::Internal("compare-and-swap produced no outcome".into())
            })
        };
        respond("raw_compare_and_swap", call, |r: &mut RawCasResponse, o| {
            r.succeed = o.succeed;
            r.previous_not_exist = o.previous.is_none();
            r.previous_value = o.previous.unwrap_or_default();
        })
        .await
        .map(Response::new)
    }

    /// Splits the region at client-given keys (transactional user keys
    /// unless `is_raw_kv`), as `tikvpb.Tikv/SplitRegion`.
    async fn split_region(
        &self,
        req: Request<SplitRegionRequest>,
    ) -> GrpcResult<SplitRegionResponse> {
        let req = req.into_inner();
        let ctx = req.context.unwrap_or_default();
        let mut keys = req.split_keys;
        if !req.split_key.is_empty() {
            keys.push(req.split_key);
        }
        let call = async {
            let (region, keys) = self.raw.split_keys(&ctx, keys, req.is_raw_kv)?;
            if keys.is_empty() {
                return Ok(vec![region]);
            }
            split::split_region(&self.pd, &self.raft.router, &region, keys)
                .await
                .map_err(|e| match e {
                    SplitError::Region(e) => StorageError::from(e),
                    SplitError::Pd(e) => StorageError::Internal(format!("{e:#}")),
                })
        };
        respond(
            "split_region",
            call,
            |r: &mut SplitRegionResponse, regions| {
                if let [left, right] = regions.as_slice() {
                    r.left = Some(left.clone());
                    r.right = Some(right.clone());
                }
                r.regions = regions;
            },
        )
        .await
        .map(Response::new)
    }

    async fn raw_checksum(
        &self,
        req: Request<RawChecksumRequest>,
    ) -> GrpcResult<RawChecksumResponse> {
        let req = req.into_inner();
        let ctx = req.context.unwrap_or_default();
        let call = self.raw.guarded_read(&ctx, Cmd::Raw, |at| {
            if req.algorithm != ChecksumAlgorithm::Crc64Xor as i32 {
                return Err(StorageError::invalid(format!(
                    "unknown checksum algorithm {}",
                    req.algorithm
                )));
            }
            self.raw.checksum(at, &ctx, &req.ranges)
        });
        respond("raw_checksum", call, |r: &mut RawChecksumResponse, sum| {
            (r.checksum, r.total_kvs, r.total_bytes) = sum
        })
        .await
        .map(Response::new)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_to_one_key_share_a_footprint_however_the_default_cf_is_named() {
        let k: &[u8] = b"k";
        assert_eq!(keys_footprint("", [k]), keys_footprint("default", [k]));
        assert_ne!(keys_footprint("", [k]), keys_footprint("write", [k]));
        assert_ne!(keys_footprint("", [k]), keys_footprint("", [&b"j"[..]]));
    }
}
