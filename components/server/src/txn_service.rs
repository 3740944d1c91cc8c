//! The transactional half of `tikvpb.Tikv`: unpack, call [`TxnStorage`],
//! and map failures once — region errors into `region_error`, key errors
//! (locks, conflicts, …) into `error` / `errors` for the client to resolve
//! or report, a bad request into gRPC `InvalidArgument`.

use tikal_proto::errorpb;
use tikal_proto::kvrpcpb::*;
use tikal_storage::txn::{TxnError, TxnStorage};
use tikal_storage::StorageError;
use tonic::Status;

use crate::metrics::GrpcTimer;

type Fields = (Option<errorpb::Error>, Vec<KeyError>);

/// A failed command as (region error, key errors), or a gRPC status.
fn fields(e: TxnError, t: &mut GrpcTimer) -> Result<Fields, Status> {
    t.fail();
    match e {
        TxnError::Key(errors) => Ok((None, errors)),
        TxnError::Storage(StorageError::Region(r)) => Ok((Some(*r), vec![])),
        TxnError::Storage(StorageError::InvalidArgument(m)) => Err(Status::invalid_argument(m)),
        TxnError::Storage(StorageError::Internal(m)) => Err(Status::internal(m)),
    }
}

/// For responses with one `error` field.
fn single(
    e: TxnError,
    t: &mut GrpcTimer,
) -> Result<(Option<errorpb::Error>, Option<KeyError>), Status> {
    let (region, errors) = fields(e, t)?;
    Ok((region, errors.into_iter().next()))
}

pub async fn get(s: &TxnStorage, req: GetRequest) -> Result<GetResponse, Status> {
    let mut t = GrpcTimer::new("kv_get");
    let ctx = req.context.unwrap_or_default();
    let mut resp = GetResponse::default();
    match s.get(&ctx, &req.key, req.version) {
        Ok(Some(v)) => resp.value = v,
        Ok(None) => resp.not_found = true,
        Err(e) => (resp.region_error, resp.error) = single(e, &mut t)?,
    }
    Ok(resp)
}

pub async fn batch_get(s: &TxnStorage, req: BatchGetRequest) -> Result<BatchGetResponse, Status> {
    let mut t = GrpcTimer::new("kv_batch_get");
    let ctx = req.context.unwrap_or_default();
    let mut resp = BatchGetResponse::default();
    match s.batch_get(&ctx, &req.keys, req.version) {
        Ok(pairs) => resp.pairs = pairs,
        Err(e) => (resp.region_error, resp.error) = single(e, &mut t)?,
    }
    Ok(resp)
}

pub async fn scan(s: &TxnStorage, req: ScanRequest) -> Result<ScanResponse, Status> {
    let mut t = GrpcTimer::new("kv_scan");
    let ctx = req.context.unwrap_or_default();
    let mut resp = ScanResponse::default();
    match s.scan(
        &ctx,
        &req.start_key,
        &req.end_key,
        req.limit,
        req.version,
        req.key_only,
        req.reverse,
    ) {
        Ok(pairs) => resp.pairs = pairs,
        Err(e) => (resp.region_error, resp.error) = single(e, &mut t)?,
    }
    Ok(resp)
}

pub async fn prewrite(s: &TxnStorage, req: PrewriteRequest) -> Result<PrewriteResponse, Status> {
    let mut t = GrpcTimer::new("kv_prewrite");
    let mut resp = PrewriteResponse::default();
    match s.prewrite(req).await {
        Ok(o) => {
            resp.min_commit_ts = o.min_commit_ts;
            resp.one_pc_commit_ts = o.one_pc_commit_ts;
        }
        Err(TxnError::Key(errors))
            if errors.len() == 1 && errors[0].commit_ts_too_large.is_some() =>
        {
            // Async commit / 1PC is not possible: min_commit_ts 0 tells the
            // client to fall back to a normal commit of the written locks.
            resp.min_commit_ts = 0;
        }
        Err(e) => (resp.region_error, resp.errors) = fields(e, &mut t)?,
    }
    Ok(resp)
}

pub async fn commit(s: &TxnStorage, req: CommitRequest) -> Result<CommitResponse, Status> {
    let mut t = GrpcTimer::new("kv_commit");
    let ctx = req.context.unwrap_or_default();
    let mut resp = CommitResponse::default();
    match s
        .commit(&ctx, &req.keys, req.start_version, req.commit_version)
        .await
    {
        Ok(()) => resp.commit_version = req.commit_version,
        Err(e) => (resp.region_error, resp.error) = single(e, &mut t)?,
    }
    Ok(resp)
}

pub async fn cleanup(s: &TxnStorage, req: CleanupRequest) -> Result<CleanupResponse, Status> {
    let mut t = GrpcTimer::new("kv_cleanup");
    let ctx = req.context.unwrap_or_default();
    let mut resp = CleanupResponse::default();
    match s
        .cleanup(&ctx, req.key, req.start_version, req.current_ts)
        .await
    {
        Ok(c) => resp.commit_version = c,
        Err(e) => (resp.region_error, resp.error) = single(e, &mut t)?,
    }
    Ok(resp)
}

pub async fn batch_rollback(
    s: &TxnStorage,
    req: BatchRollbackRequest,
) -> Result<BatchRollbackResponse, Status> {
    let mut t = GrpcTimer::new("kv_batch_rollback");
    let ctx = req.context.unwrap_or_default();
    let mut resp = BatchRollbackResponse::default();
    if let Err(e) = s.batch_rollback(&ctx, &req.keys, req.start_version).await {
        (resp.region_error, resp.error) = single(e, &mut t)?;
    }
    Ok(resp)
}

pub async fn check_txn_status(
    s: &TxnStorage,
    req: CheckTxnStatusRequest,
) -> Result<CheckTxnStatusResponse, Status> {
    let mut t = GrpcTimer::new("kv_check_txn_status");
    let mut resp = CheckTxnStatusResponse::default();
    match s.check_txn_status(&req).await {
        Ok(st) => {
            resp.lock_ttl = st.lock_ttl;
            resp.commit_version = st.commit_version;
            resp.action = st.action as i32;
            resp.lock_info = st.lock_info;
        }
        Err(e) => (resp.region_error, resp.error) = single(e, &mut t)?,
    }
    Ok(resp)
}

pub async fn check_secondary_locks(
    s: &TxnStorage,
    req: CheckSecondaryLocksRequest,
) -> Result<CheckSecondaryLocksResponse, Status> {
    let mut t = GrpcTimer::new("kv_check_secondary_locks");
    let ctx = req.context.unwrap_or_default();
    let mut resp = CheckSecondaryLocksResponse::default();
    match s
        .check_secondary_locks(&ctx, &req.keys, req.start_version)
        .await
    {
        Ok((locks, commit_ts)) => (resp.locks, resp.commit_ts) = (locks, commit_ts),
        Err(e) => (resp.region_error, resp.error) = single(e, &mut t)?,
    }
    Ok(resp)
}

pub async fn resolve_lock(
    s: &TxnStorage,
    req: ResolveLockRequest,
) -> Result<ResolveLockResponse, Status> {
    let mut t = GrpcTimer::new("kv_resolve_lock");
    let ctx = req.context.unwrap_or_default();
    let txns: Vec<(u64, u64)> = if req.txn_infos.is_empty() {
        vec![(req.start_version, req.commit_version)]
    } else {
        req.txn_infos.iter().map(|i| (i.txn, i.status)).collect()
    };
    let mut resp = ResolveLockResponse::default();
    if let Err(e) = s.resolve_lock(&ctx, &txns, &req.keys).await {
        (resp.region_error, resp.error) = single(e, &mut t)?;
    }
    Ok(resp)
}

pub async fn scan_lock(s: &TxnStorage, req: ScanLockRequest) -> Result<ScanLockResponse, Status> {
    let mut t = GrpcTimer::new("kv_scan_lock");
    let ctx = req.context.unwrap_or_default();
    let mut resp = ScanLockResponse::default();
    match s.scan_lock(
        &ctx,
        &req.start_key,
        &req.end_key,
        req.max_version,
        req.limit,
    ) {
        Ok(locks) => resp.locks = locks,
        Err(e) => (resp.region_error, resp.error) = single(e, &mut t)?,
    }
    Ok(resp)
}

pub async fn txn_heart_beat(
    s: &TxnStorage,
    req: TxnHeartBeatRequest,
) -> Result<TxnHeartBeatResponse, Status> {
    let mut t = GrpcTimer::new("kv_txn_heart_beat");
    let ctx = req.context.unwrap_or_default();
    let mut resp = TxnHeartBeatResponse::default();
    match s
        .txn_heart_beat(
            &ctx,
            req.primary_lock,
            req.start_version,
            req.advise_lock_ttl,
        )
        .await
    {
        Ok(ttl) => resp.lock_ttl = ttl,
        Err(e) => (resp.region_error, resp.error) = single(e, &mut t)?,
    }
    Ok(resp)
}

pub async fn pessimistic_lock(
    s: &TxnStorage,
    req: PessimisticLockRequest,
) -> Result<PessimisticLockResponse, Status> {
    let mut t = GrpcTimer::new("kv_pessimistic_lock");
    let mut resp = PessimisticLockResponse::default();
    match s.pessimistic_lock(&req).await {
        Ok((values, not_founds)) => (resp.values, resp.not_founds) = (values, not_founds),
        Err(e) => {
            (resp.region_error, resp.errors) = fields(e, &mut t)?;
            if resp.errors.iter().any(|e| e.deadlock.is_some()) {
                crate::metrics::metrics()
                    .lock_detect_error
                    .with_label_values(&["deadlock"])
                    .inc();
            }
        }
    }
    Ok(resp)
}

pub async fn pessimistic_rollback(
    s: &TxnStorage,
    req: PessimisticRollbackRequest,
) -> Result<PessimisticRollbackResponse, Status> {
    let mut t = GrpcTimer::new("kv_pessimistic_rollback");
    let ctx = req.context.unwrap_or_default();
    let mut resp = PessimisticRollbackResponse::default();
    if let Err(e) = s
        .pessimistic_rollback(&ctx, &req.keys, req.start_version, req.for_update_ts)
        .await
    {
        (resp.region_error, resp.errors) = fields(e, &mut t)?;
    }
    Ok(resp)
}

/// For the range commands, whose `error` is a string.
fn range_error(e: TxnError, t: &mut GrpcTimer) -> Result<(Option<errorpb::Error>, String), Status> {
    let (region, errors) = fields(e, t)?;
    Ok((
        region,
        errors.first().map(|e| format!("{e:?}")).unwrap_or_default(),
    ))
}

pub async fn delete_range(
    s: &TxnStorage,
    req: DeleteRangeRequest,
) -> Result<DeleteRangeResponse, Status> {
    let mut t = GrpcTimer::new("kv_delete_range");
    let ctx = req.context.unwrap_or_default();
    let mut resp = DeleteRangeResponse::default();
    if !req.notify_only {
        if let Err(e) = s.delete_range(&ctx, &req.start_key, &req.end_key).await {
            (resp.region_error, resp.error) = range_error(e, &mut t)?;
        }
    }
    Ok(resp)
}

pub async fn unsafe_destroy_range(
    s: &TxnStorage,
    req: UnsafeDestroyRangeRequest,
) -> Result<UnsafeDestroyRangeResponse, Status> {
    let mut t = GrpcTimer::new("unsafe_destroy_range");
    let mut resp = UnsafeDestroyRangeResponse::default();
    if let Err(e) = s.unsafe_destroy_range(&req.start_key, &req.end_key) {
        (resp.region_error, resp.error) = range_error(e, &mut t)?;
    }
    Ok(resp)
}

pub async fn gc(s: &TxnStorage, req: GcRequest) -> Result<GcResponse, Status> {
    let mut t = GrpcTimer::new("kv_gc");
    let ctx = req.context.unwrap_or_default();
    let mut resp = GcResponse::default();
    if let Err(e) = s.gc(&ctx, req.safe_point).await {
        (resp.region_error, resp.error) = single(e, &mut t)?;
    }
    Ok(resp)
}
