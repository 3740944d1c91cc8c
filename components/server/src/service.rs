//! `tikvpb.Tikv`: the gRPC edge of the store.
//!
//! Raw writes first pass the deadline-aware scheduler: their metadata is
//! read from the request (malformed metadata: `InvalidArgument` naming the
//! header), and they run once admitted, holding a worker slot meanwhile.
//!
//! Each handler unpacks the request, calls the storage layer, and maps its
//! error once: region errors into `region_error` (clients refresh and
//! retry), other failures into the response's `error` string, or, for
//! responses without one, a gRPC `InvalidArgument` / `Internal` status.

use tikal_proto::errorpb;
use tikal_proto::kvrpcpb::*;
use tikal_proto::tikvpb::tikv_server::Tikv;
use tikal_raftstore::Pickup;
use tikal_storage::scheduler::{now_ms, Footprint, Permit, RequestMeta, Scheduler};
use tikal_storage::txn::TxnStorage;
use tikal_storage::{CasOutcome, PreparedWrite, RawStorage, StorageError};
use tonic::{Request, Response, Status};

use crate::metrics::GrpcTimer;
use crate::txn_service as txn;

pub struct TikvService {
    raw: RawStorage,
    txn: TxnStorage,
    scheduler: Scheduler,
}

impl TikvService {
    pub fn new(raw: RawStorage, txn: TxnStorage, scheduler: Scheduler) -> Self {
        TikvService {
            raw,
            txn,
            scheduler,
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
        .map_err(|e| Status::invalid_argument(e.to_string()))
}

/// Hash of a (column family, key) pair, for per-key write ordering.
fn key_hash(cf: &str, key: &[u8]) -> u64 {
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

/// For responses with both `region_error` and `error` fields.
fn error_fields(e: StorageError, timer: &mut GrpcTimer) -> (Option<errorpb::Error>, String) {
    timer.fail();
    match e {
        StorageError::Region(r) => (Some(*r), String::new()),
        other => (None, other.to_string()),
    }
}

/// For responses with only a `region_error` field.
fn region_error_or_status(
    e: StorageError,
    timer: &mut GrpcTimer,
) -> Result<Option<errorpb::Error>, Status> {
    timer.fail();
    match e {
        StorageError::Region(r) => Ok(Some(*r)),
        StorageError::InvalidArgument(m) => Err(Status::invalid_argument(m)),
        StorageError::Internal(m) => Err(Status::internal(m)),
    }
}

#[tonic::async_trait]
impl Tikv for TikvService {
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
        txn::unsafe_destroy_range(&self.txn, req.into_inner())
            .await
            .map(Response::new)
    }

    async fn kv_gc(&self, req: Request<GcRequest>) -> GrpcResult<GcResponse> {
        txn::gc(&self.txn, req.into_inner())
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
        let mut t = GrpcTimer::new("raw_get");
        let req = req.into_inner();
        let ctx = req.context.unwrap_or_default();
        let mut resp = RawGetResponse::default();
        match self.raw.get(&ctx, &req.cf, &req.key) {
            Ok(Some(v)) => resp.value = v,
            Ok(None) => resp.not_found = true,
            Err(e) => (resp.region_error, resp.error) = error_fields(e, &mut t),
        }
        Ok(Response::new(resp))
    }

    async fn raw_batch_get(
        &self,
        req: Request<RawBatchGetRequest>,
    ) -> GrpcResult<RawBatchGetResponse> {
        let mut t = GrpcTimer::new("raw_batch_get");
        let req = req.into_inner();
        let ctx = req.context.unwrap_or_default();
        let mut resp = RawBatchGetResponse::default();
        match self.raw.batch_get(&ctx, &req.cf, &req.keys) {
            Ok(pairs) => resp.pairs = pairs,
            Err(e) => resp.region_error = region_error_or_status(e, &mut t)?,
        }
        Ok(Response::new(resp))
    }

    async fn raw_put(&self, req: Request<RawPutRequest>) -> GrpcResult<RawPutResponse> {
        let mut t = GrpcTimer::new("raw_put");
        let meta = request_meta(&req, req.get_ref().context.as_ref())?;
        let req = req.into_inner();
        let ctx = req.context.unwrap_or_default();
        let footprint = keys_footprint(&req.cf, [req.key.as_slice()]);
        let write = self
            .raw
            .prepare_put(&ctx, &req.cf, req.key, &req.value, req.ttl);
        let mut resp = RawPutResponse::default();
        if let Err(e) = self.schedule(meta, footprint, write).await {
            (resp.region_error, resp.error) = error_fields(e, &mut t);
        }
        Ok(Response::new(resp))
    }

    async fn raw_batch_put(
        &self,
        req: Request<RawBatchPutRequest>,
    ) -> GrpcResult<RawBatchPutResponse> {
        let mut t = GrpcTimer::new("raw_batch_put");
        let meta = request_meta(&req, req.get_ref().context.as_ref())?;
        let req = req.into_inner();
        let ctx = req.context.unwrap_or_default();
        #[allow(deprecated)]
        let ttls = if req.ttls.is_empty() && req.ttl != 0 {
            vec![req.ttl]
        } else {
            req.ttls
        };
        let footprint = keys_footprint(&req.cf, req.pairs.iter().map(|p| p.key.as_slice()));
        let write = self.raw.prepare_batch_put(&ctx, &req.cf, req.pairs, &ttls);
        let mut resp = RawBatchPutResponse::default();
        if let Err(e) = self.schedule(meta, footprint, write).await {
            (resp.region_error, resp.error) = error_fields(e, &mut t);
        }
        Ok(Response::new(resp))
    }

    async fn raw_delete(&self, req: Request<RawDeleteRequest>) -> GrpcResult<RawDeleteResponse> {
        let mut t = GrpcTimer::new("raw_delete");
        let meta = request_meta(&req, req.get_ref().context.as_ref())?;
        let req = req.into_inner();
        let ctx = req.context.unwrap_or_default();
        let footprint = keys_footprint(&req.cf, [req.key.as_slice()]);
        let write = self.raw.prepare_delete(&ctx, &req.cf, req.key);
        let mut resp = RawDeleteResponse::default();
        if let Err(e) = self.schedule(meta, footprint, write).await {
            (resp.region_error, resp.error) = error_fields(e, &mut t);
        }
        Ok(Response::new(resp))
    }

    async fn raw_batch_delete(
        &self,
        req: Request<RawBatchDeleteRequest>,
    ) -> GrpcResult<RawBatchDeleteResponse> {
        let mut t = GrpcTimer::new("raw_batch_delete");
        let meta = request_meta(&req, req.get_ref().context.as_ref())?;
        let req = req.into_inner();
        let ctx = req.context.unwrap_or_default();
        let footprint = keys_footprint(&req.cf, req.keys.iter().map(Vec::as_slice));
        let write = self.raw.prepare_batch_delete(&ctx, &req.cf, req.keys);
        let mut resp = RawBatchDeleteResponse::default();
        if let Err(e) = self.schedule(meta, footprint, write).await {
            (resp.region_error, resp.error) = error_fields(e, &mut t);
        }
        Ok(Response::new(resp))
    }

    async fn raw_scan(&self, req: Request<RawScanRequest>) -> GrpcResult<RawScanResponse> {
        let mut t = GrpcTimer::new("raw_scan");
        let req = req.into_inner();
        let ctx = req.context.unwrap_or_default();
        let mut resp = RawScanResponse::default();
        match self.raw.scan(
            &ctx,
            &req.cf,
            &req.start_key,
            &req.end_key,
            req.limit,
            req.key_only,
            req.reverse,
        ) {
            Ok(kvs) => resp.kvs = kvs,
            Err(e) => resp.region_error = region_error_or_status(e, &mut t)?,
        }
        Ok(Response::new(resp))
    }

    async fn raw_delete_range(
        &self,
        req: Request<RawDeleteRangeRequest>,
    ) -> GrpcResult<RawDeleteRangeResponse> {
        let mut t = GrpcTimer::new("raw_delete_range");
        let meta = request_meta(&req, req.get_ref().context.as_ref())?;
        let req = req.into_inner();
        let ctx = req.context.unwrap_or_default();
        let write = self
            .raw
            .prepare_delete_range(&ctx, &req.cf, req.start_key, req.end_key);
        let mut resp = RawDeleteRangeResponse::default();
        if let Err(e) = self.schedule(meta, Footprint::Everything, write).await {
            (resp.region_error, resp.error) = error_fields(e, &mut t);
        }
        Ok(Response::new(resp))
    }

    async fn raw_batch_scan(
        &self,
        req: Request<RawBatchScanRequest>,
    ) -> GrpcResult<RawBatchScanResponse> {
        let mut t = GrpcTimer::new("raw_batch_scan");
        let req = req.into_inner();
        let ctx = req.context.unwrap_or_default();
        let mut resp = RawBatchScanResponse::default();
        match self.raw.batch_scan(
            &ctx,
            &req.cf,
            &req.ranges,
            req.each_limit,
            req.key_only,
            req.reverse,
        ) {
            Ok(kvs) => resp.kvs = kvs,
            Err(e) => resp.region_error = region_error_or_status(e, &mut t)?,
        }
        Ok(Response::new(resp))
    }

    async fn raw_get_key_ttl(
        &self,
        req: Request<RawGetKeyTtlRequest>,
    ) -> GrpcResult<RawGetKeyTtlResponse> {
        let mut t = GrpcTimer::new("raw_get_key_ttl");
        let req = req.into_inner();
        let ctx = req.context.unwrap_or_default();
        let mut resp = RawGetKeyTtlResponse::default();
        match self.raw.get_key_ttl(&ctx, &req.cf, &req.key) {
            Ok(Some(ttl)) => resp.ttl = ttl,
            Ok(None) => resp.not_found = true,
            Err(e) => (resp.region_error, resp.error) = error_fields(e, &mut t),
        }
        Ok(Response::new(resp))
    }

    async fn raw_compare_and_swap(
        &self,
        req: Request<RawCasRequest>,
    ) -> GrpcResult<RawCasResponse> {
        let mut t = GrpcTimer::new("raw_compare_and_swap");
        let meta = request_meta(&req, req.get_ref().context.as_ref())?;
        let req = req.into_inner();
        let ctx = req.context.unwrap_or_default();
        let expected = (!req.previous_not_exist).then_some(req.previous_value);
        let footprint = keys_footprint(&req.cf, [req.key.as_slice()]);
        let write = self
            .raw
            .prepare_compare_and_swap(&ctx, &req.cf, req.key, &req.value, expected, req.ttl);
        let mut resp = RawCasResponse::default();
        match self.schedule(meta, footprint, write).await {
            Ok(Some(outcome)) => {
                resp.succeed = outcome.succeed;
                resp.previous_not_exist = outcome.previous.is_none();
                resp.previous_value = outcome.previous.unwrap_or_default();
            }
            Ok(None) => {
                t.fail();
                resp.error = "compare-and-swap produced no outcome".into();
            }
            Err(e) => (resp.region_error, resp.error) = error_fields(e, &mut t),
        }
        Ok(Response::new(resp))
    }

    async fn raw_checksum(
        &self,
        req: Request<RawChecksumRequest>,
    ) -> GrpcResult<RawChecksumResponse> {
        let mut t = GrpcTimer::new("raw_checksum");
        let req = req.into_inner();
        let ctx = req.context.unwrap_or_default();
        let mut resp = RawChecksumResponse::default();
        if req.algorithm != ChecksumAlgorithm::Crc64Xor as i32 {
            t.fail();
            resp.error = format!("unknown checksum algorithm {}", req.algorithm);
            return Ok(Response::new(resp));
        }
        match self.raw.checksum(&ctx, &req.ranges) {
            Ok((checksum, kvs, bytes)) => {
                resp.checksum = checksum;
                resp.total_kvs = kvs;
                resp.total_bytes = bytes;
            }
            Err(e) => (resp.region_error, resp.error) = error_fields(e, &mut t),
        }
        Ok(Response::new(resp))
    }
}
