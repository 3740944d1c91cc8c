//! The transactional half of `tikvpb.Tikv`: each handler unpacks its
//! request into a storage read or a command and answers through
//! [`respond`], which maps failures to kvproto error fields.

use tikal_proto::kvrpcpb::*;
use tikal_storage::txn::commands::{
    BatchRollback, CheckSecondaryLocks, CheckTxnStatus, Cleanup, Commit, PessimisticRollback,
    TxnHeartBeat,
};
use tikal_storage::txn::reads::point;
use tikal_storage::txn::TxnStorage;
use tikal_storage::StorageError;
use tonic::Status;

use crate::pd_client::PdClient;
use crate::respond::respond;

pub async fn get(s: &TxnStorage, req: GetRequest) -> Result<GetResponse, Status> {
    let ctx = req.context.unwrap_or_default();
    let ranges = vec![point(&req.key)];
    let call = s.guarded_snapshot_read(&ctx, req.version, ranges, |at, start| {
        s.get(at, start, &ctx, &req.key, req.version)
    });
    respond("kv_get", call, |r: &mut GetResponse, v| match v {
        Some(v) => r.value = v,
        None => r.not_found = true,
    })
    .await
}

pub async fn batch_get(s: &TxnStorage, req: BatchGetRequest) -> Result<BatchGetResponse, Status> {
    let ctx = req.context.unwrap_or_default();
    let ranges = req.keys.iter().map(|k| point(k)).collect();
    let call = s.guarded_snapshot_read(&ctx, req.version, ranges, |at, start| {
        s.batch_get(at, start, &ctx, &req.keys, req.version)
    });
    respond("kv_batch_get", call, |r: &mut BatchGetResponse, pairs| {
        r.pairs = pairs
    })
    .await
}

pub async fn scan(s: &TxnStorage, req: ScanRequest) -> Result<ScanResponse, Status> {
    let ctx = req.context.unwrap_or_default();
    // A reverse scan's start key is its (exclusive) upper end.
    let range = match req.reverse {
        false => (req.start_key.clone(), req.end_key.clone()),
        true => (req.end_key.clone(), req.start_key.clone()),
    };
    let call = s.guarded_snapshot_read(&ctx, req.version, vec![range], |at, start| {
        s.scan(
            at,
            start,
            &ctx,
            &req.start_key,
            &req.end_key,
            req.limit,
            req.version,
            req.key_only,
            req.reverse,
        )
    });
    respond("kv_scan", call, |r: &mut ScanResponse, pairs| {
        r.pairs = pairs
    })
    .await
}

pub async fn prewrite(s: &TxnStorage, req: PrewriteRequest) -> Result<PrewriteResponse, Status> {
    respond(
        "kv_prewrite",
        s.prewrite(req),
        |r: &mut PrewriteResponse, o| {
            r.min_commit_ts = o.min_commit_ts;
            r.one_pc_commit_ts = o.one_pc_commit_ts;
        },
    )
    .await
}

pub async fn commit(s: &TxnStorage, req: CommitRequest) -> Result<CommitResponse, Status> {
    let ctx = req.context.unwrap_or_default();
    let commit_ts = req.commit_version;
    let call = async {
        let cmd = Commit::new(req.keys, req.start_version, commit_ts)?;
        s.execute(&ctx, &cmd).await
    };
    respond("kv_commit", call, |r: &mut CommitResponse, ()| {
        r.commit_version = commit_ts
    })
    .await
}

pub async fn cleanup(s: &TxnStorage, req: CleanupRequest) -> Result<CleanupResponse, Status> {
    let ctx = req.context.unwrap_or_default();
    let cmd = Cleanup {
        key: req.key,
        start_ts: req.start_version,
        current_ts: req.current_ts,
    };
    respond(
        "kv_cleanup",
        s.execute(&ctx, &cmd),
        |r: &mut CleanupResponse, commit_ts| r.commit_version = commit_ts,
    )
    .await
}

pub async fn batch_rollback(
    s: &TxnStorage,
    req: BatchRollbackRequest,
) -> Result<BatchRollbackResponse, Status> {
    let ctx = req.context.unwrap_or_default();
    let cmd = BatchRollback {
        keys: req.keys,
        start_ts: req.start_version,
    };
    let call = s.execute(&ctx, &cmd);
    respond(
        "kv_batch_rollback",
        call,
        |_: &mut BatchRollbackResponse, ()| {},
    )
    .await
}

pub async fn check_txn_status(
    s: &TxnStorage,
    req: CheckTxnStatusRequest,
) -> Result<CheckTxnStatusResponse, Status> {
    let ctx = req.context.clone().unwrap_or_default();
    let cmd = CheckTxnStatus::from(&req);
    let call = s.execute(&ctx, &cmd);
    respond(
        "kv_check_txn_status",
        call,
        |r: &mut CheckTxnStatusResponse, st| {
            r.lock_ttl = st.lock_ttl;
            r.commit_version = st.commit_version;
            r.action = st.action as i32;
            r.lock_info = st.lock_info;
        },
    )
    .await
}

pub async fn check_secondary_locks(
    s: &TxnStorage,
    req: CheckSecondaryLocksRequest,
) -> Result<CheckSecondaryLocksResponse, Status> {
    let ctx = req.context.unwrap_or_default();
    let cmd = CheckSecondaryLocks {
        keys: req.keys,
        start_ts: req.start_version,
    };
    let call = s.execute(&ctx, &cmd);
    respond(
        "kv_check_secondary_locks",
        call,
        |r: &mut CheckSecondaryLocksResponse, (locks, commit_ts)| {
            (r.locks, r.commit_ts) = (locks, commit_ts)
        },
    )
    .await
}

pub async fn resolve_lock(
    s: &TxnStorage,
    req: ResolveLockRequest,
) -> Result<ResolveLockResponse, Status> {
    let ctx = req.context.unwrap_or_default();
    let txns: Vec<(u64, u64)> = if req.txn_infos.is_empty() {
        vec![(req.start_version, req.commit_version)]
    } else {
        req.txn_infos.iter().map(|i| (i.txn, i.status)).collect()
    };
    let call = s.resolve_lock(&ctx, &txns, &req.keys);
    respond(
        "kv_resolve_lock",
        call,
        |_: &mut ResolveLockResponse, ()| {},
    )
    .await
}

pub async fn scan_lock(s: &TxnStorage, req: ScanLockRequest) -> Result<ScanLockResponse, Status> {
    let ctx = req.context.unwrap_or_default();
    let range = (req.start_key.clone(), req.end_key.clone());
    let call = s.guarded_leader_read(&ctx, req.max_version, range, |at, start| {
        s.scan_lock(
            at,
            start,
            &ctx,
            &req.start_key,
            &req.end_key,
            req.max_version,
            req.limit,
        )
    });
    respond("kv_scan_lock", call, |r: &mut ScanLockResponse, locks| {
        r.locks = locks
    })
    .await
}

pub async fn txn_heart_beat(
    s: &TxnStorage,
    req: TxnHeartBeatRequest,
) -> Result<TxnHeartBeatResponse, Status> {
    let ctx = req.context.unwrap_or_default();
    let cmd = TxnHeartBeat {
        primary: req.primary_lock,
        start_ts: req.start_version,
        advise_ttl: req.advise_lock_ttl,
    };
    let call = s.execute(&ctx, &cmd);
    respond(
        "kv_txn_heart_beat",
        call,
        |r: &mut TxnHeartBeatResponse, ttl| r.lock_ttl = ttl,
    )
    .await
}

pub async fn pessimistic_lock(
    s: &TxnStorage,
    req: PessimisticLockRequest,
) -> Result<PessimisticLockResponse, Status> {
    let resp = respond(
        "kv_pessimistic_lock",
        s.pessimistic_lock(&req),
        |r: &mut PessimisticLockResponse, (values, not_founds)| {
            (r.values, r.not_founds) = (values, not_founds)
        },
    )
    .await?;
    if resp.errors.iter().any(|e| e.deadlock.is_some()) {
        crate::metrics::metrics()
            .lock_detect_error
            .with_label_values(&["deadlock"])
            .inc();
    }
    Ok(resp)
}

pub async fn pessimistic_rollback(
    s: &TxnStorage,
    req: PessimisticRollbackRequest,
) -> Result<PessimisticRollbackResponse, Status> {
    let ctx = req.context.unwrap_or_default();
    let cmd = PessimisticRollback {
        keys: req.keys,
        start_ts: req.start_version,
        for_update_ts: req.for_update_ts,
    };
    let call = s.execute(&ctx, &cmd);
    respond(
        "kv_pessimistic_rollback",
        call,
        |_: &mut PessimisticRollbackResponse, ()| {},
    )
    .await
}

pub async fn delete_range(
    s: &TxnStorage,
    req: DeleteRangeRequest,
) -> Result<DeleteRangeResponse, Status> {
    let ctx = req.context.unwrap_or_default();
    let call = async {
        match req.notify_only {
            true => Ok(()),
            false => s.delete_range(&ctx, &req.start_key, &req.end_key).await,
        }
    };
    respond(
        "kv_delete_range",
        call,
        |_: &mut DeleteRangeResponse, ()| {},
    )
    .await
}

/// GC work clients ask for (KvGC, UnsafeDestroyRange): at most
/// [`GC_MAX_RUNNING`] at once and [`GC_MAX_WAITING`] waiting, past which
/// the store answers that its GC worker is busy, as TiKV's GC worker
/// bounds its tasks (10 running, 4096 pending). Unbounded, a client's
/// burst of full-region GC passes took every thread the store serves on.
pub struct GcGate {
    running: tokio::sync::Semaphore,
    max_waiting: usize,
    waiting: std::sync::atomic::AtomicUsize,
}

pub const GC_MAX_RUNNING: usize = 10;
pub const GC_MAX_WAITING: usize = 4096;

impl Default for GcGate {
    fn default() -> Self {
        GcGate::new(GC_MAX_RUNNING, GC_MAX_WAITING)
    }
}

impl GcGate {
    pub fn new(running: usize, waiting: usize) -> GcGate {
        GcGate {
            running: tokio::sync::Semaphore::new(running),
            max_waiting: waiting,
            waiting: std::sync::atomic::AtomicUsize::new(0),
        }
    }

    /// A place to run, once one is free; an error if too many wait.
    pub async fn enter(&self) -> Result<tokio::sync::SemaphorePermit<'_>, StorageError> {
        use std::sync::atomic::Ordering::SeqCst;
        if let Ok(permit) = self.running.try_acquire() {
            return Ok(permit);
        }
        if self.waiting.fetch_add(1, SeqCst) >= self.max_waiting {
            self.waiting.fetch_sub(1, SeqCst);
            return Err(StorageError::Internal("gc worker is busy".into()));
        }
        let permit = self.running.acquire().await;
        self.waiting.fetch_sub(1, SeqCst);
        permit.map_err(|_| StorageError::Internal("gc worker stopped".into()))
    }
}

pub async fn unsafe_destroy_range(
    s: &TxnStorage,
    gate: &GcGate,
    req: UnsafeDestroyRangeRequest,
) -> Result<UnsafeDestroyRangeResponse, Status> {
    let call = async {
        let _running = gate.enter().await?;
        s.unsafe_destroy_range(&req.start_key, &req.end_key)
    };
    respond(
        "unsafe_destroy_range",
        call,
        |_: &mut UnsafeDestroyRangeResponse, ()| {},
    )
    .await
}

/// KvGC at a safe point no later than the cluster's GC safe point in PD:
/// a later one could remove versions a reader, or a service safe point
/// (a backup, a changefeed), still needs. (TiKV has dropped KvGC; GC
/// follows PD's safe point, as this store's GC worker does.)
pub async fn gc(
    s: &TxnStorage,
    gate: &GcGate,
    pd: &PdClient,
    req: GcRequest,
) -> Result<GcResponse, Status> {
    let ctx = req.context.unwrap_or_default();
    let call = async {
        let _running = gate.enter().await?;
        let cluster = (pd.gc_safe_point().await).map_err(|e| {
            StorageError::Internal(format!("cannot read the GC safe point from PD: {e}"))
        })?;
        if req.safe_point > cluster {
            return Err(StorageError::invalid(format!(
                "safe point {} is after the cluster's GC safe point {cluster}",
                req.safe_point
            ))
            .into());
        }
        s.gc(&ctx, req.safe_point).await
    };
    respond("kv_gc", call, |_: &mut GcResponse, _| {}).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn gc_work_past_the_running_and_waiting_bounds_is_told_busy() {
        let gate = std::sync::Arc::new(GcGate::new(1, 1));
        let first = gate.enter().await.unwrap();
        let (entered_tx, entered) = tokio::sync::oneshot::channel();
        let waiter = {
            let gate = gate.clone();
            tokio::spawn(async move {
                let _permit = gate.enter().await.unwrap();
                let _ = entered_tx.send(());
            })
        };
        // Until the waiter counts as waiting, a third might wait too.
        while gate.waiting.load(std::sync::atomic::Ordering::SeqCst) == 0 {
            tokio::task::yield_now().await;
        }
        let busy = gate.enter().await.unwrap_err();
        assert!(busy.to_string().contains("gc worker is busy"), "{busy}");
        drop(first);
        entered.await.unwrap();
        waiter.await.unwrap();
        assert!(gate.enter().await.is_ok(), "free again");
    }
}
