//! The requests: one enum per service ([`StoreReq`], [`PdReq`]) with a
//! variant per unary method, so a batch can send "every store method" or a
//! random one; ordinary requests to edit ([`req`], [`every_store_method`]);
//! and the small values they are made of.

use prost::Message;
use tikal_proto::kvrpcpb::*;
use tikal_proto::{keyspacepb, metapb, pdpb};

use crate::judge::Expect;
use crate::prober::Prober;

/// A request to any unary method of a service: its gRPC path, its
/// encoding, and how [`Prober`] sends it (`$send`).
macro_rules! requests {
    ($name:ident, $count:ident, $send:ident {
        $($variant:ident($req:ty) => $client:ident.$method:ident, $path:literal;)*
    }) => {
        #[derive(Debug, Clone)]
        pub enum $name {
            $($variant($req),)*
        }

        pub const $count: usize = [$($path),*].len();

        impl $name {
            pub fn path(&self) -> &'static str {
                match self {
                    $($name::$variant(_) => $path,)*
                }
            }

            pub fn encode(&self) -> Vec<u8> {
                match self {
                    $($name::$variant(r) => r.encode_to_vec(),)*
                }
            }
        }

        impl Prober {
            /// Sends `req` with `headers` and judges the answer.
            pub async fn $send(
                &mut self,
                req: $name,
                headers: &[(&'static str, &str)],
                what: &str,
                expect: Expect,
            ) {
                match req {
                    $($name::$variant(r) => {
                        call!(self, $client.$method(with_headers(r, headers)), what, expect);
                    })*
                }
            }
        }
    };
}

requests!(StoreReq, STORE_METHODS, send_store {
    KvGet(GetRequest) => tikv.kv_get, "/tikvpb.Tikv/KvGet";
    KvScan(ScanRequest) => tikv.kv_scan, "/tikvpb.Tikv/KvScan";
    KvPrewrite(PrewriteRequest) => tikv.kv_prewrite, "/tikvpb.Tikv/KvPrewrite";
    KvPessimisticLock(PessimisticLockRequest) => tikv.kv_pessimistic_lock, "/tikvpb.Tikv/KvPessimisticLock";
    KvPessimisticRollback(PessimisticRollbackRequest) => tikv.kv_pessimistic_rollback, "/tikvpb.Tikv/KVPessimisticRollback";
    KvTxnHeartBeat(TxnHeartBeatRequest) => tikv.kv_txn_heart_beat, "/tikvpb.Tikv/KvTxnHeartBeat";
    KvCheckTxnStatus(CheckTxnStatusRequest) => tikv.kv_check_txn_status, "/tikvpb.Tikv/KvCheckTxnStatus";
    KvCheckSecondaryLocks(CheckSecondaryLocksRequest) => tikv.kv_check_secondary_locks, "/tikvpb.Tikv/KvCheckSecondaryLocks";
    KvCommit(CommitRequest) => tikv.kv_commit, "/tikvpb.Tikv/KvCommit";
    KvCleanup(CleanupRequest) => tikv.kv_cleanup, "/tikvpb.Tikv/KvCleanup";
    KvBatchGet(BatchGetRequest) => tikv.kv_batch_get, "/tikvpb.Tikv/KvBatchGet";
    KvBatchRollback(BatchRollbackRequest) => tikv.kv_batch_rollback, "/tikvpb.Tikv/KvBatchRollback";
    KvScanLock(ScanLockRequest) => tikv.kv_scan_lock, "/tikvpb.Tikv/KvScanLock";
    KvResolveLock(ResolveLockRequest) => tikv.kv_resolve_lock, "/tikvpb.Tikv/KvResolveLock";
    KvGc(GcRequest) => tikv.kv_gc, "/tikvpb.Tikv/KvGC";
    KvDeleteRange(DeleteRangeRequest) => tikv.kv_delete_range, "/tikvpb.Tikv/KvDeleteRange";
    RawGet(RawGetRequest) => tikv.raw_get, "/tikvpb.Tikv/RawGet";
    RawBatchGet(RawBatchGetRequest) => tikv.raw_batch_get, "/tikvpb.Tikv/RawBatchGet";
    RawPut(RawPutRequest) => tikv.raw_put, "/tikvpb.Tikv/RawPut";
    RawBatchPut(RawBatchPutRequest) => tikv.raw_batch_put, "/tikvpb.Tikv/RawBatchPut";
    RawDelete(RawDeleteRequest) => tikv.raw_delete, "/tikvpb.Tikv/RawDelete";
    RawBatchDelete(RawBatchDeleteRequest) => tikv.raw_batch_delete, "/tikvpb.Tikv/RawBatchDelete";
    RawScan(RawScanRequest) => tikv.raw_scan, "/tikvpb.Tikv/RawScan";
    RawDeleteRange(RawDeleteRangeRequest) => tikv.raw_delete_range, "/tikvpb.Tikv/RawDeleteRange";
    RawBatchScan(RawBatchScanRequest) => tikv.raw_batch_scan, "/tikvpb.Tikv/RawBatchScan";
    RawGetKeyTtl(RawGetKeyTtlRequest) => tikv.raw_get_key_ttl, "/tikvpb.Tikv/RawGetKeyTTL";
    RawCompareAndSwap(RawCasRequest) => tikv.raw_compare_and_swap, "/tikvpb.Tikv/RawCompareAndSwap";
    RawChecksum(RawChecksumRequest) => tikv.raw_checksum, "/tikvpb.Tikv/RawChecksum";
    UnsafeDestroyRange(UnsafeDestroyRangeRequest) => tikv.unsafe_destroy_range, "/tikvpb.Tikv/UnsafeDestroyRange";
});

requests!(PdReq, PD_METHODS, send_pd {
    GetMembers(pdpb::GetMembersRequest) => pd.get_members, "/pdpb.PD/GetMembers";
    Bootstrap(pdpb::BootstrapRequest) => pd.bootstrap, "/pdpb.PD/Bootstrap";
    IsBootstrapped(pdpb::IsBootstrappedRequest) => pd.is_bootstrapped, "/pdpb.PD/IsBootstrapped";
    AllocId(pdpb::AllocIdRequest) => pd.alloc_id, "/pdpb.PD/AllocID";
    GetStore(pdpb::GetStoreRequest) => pd.get_store, "/pdpb.PD/GetStore";
    PutStore(pdpb::PutStoreRequest) => pd.put_store, "/pdpb.PD/PutStore";
    GetAllStores(pdpb::GetAllStoresRequest) => pd.get_all_stores, "/pdpb.PD/GetAllStores";
    StoreHeartbeat(pdpb::StoreHeartbeatRequest) => pd.store_heartbeat, "/pdpb.PD/StoreHeartbeat";
    GetRegion(pdpb::GetRegionRequest) => pd.get_region, "/pdpb.PD/GetRegion";
    GetPrevRegion(pdpb::GetRegionRequest) => pd.get_prev_region, "/pdpb.PD/GetPrevRegion";
    GetRegionById(pdpb::GetRegionByIdRequest) => pd.get_region_by_id, "/pdpb.PD/GetRegionByID";
    ScanRegions(pdpb::ScanRegionsRequest) => pd.scan_regions, "/pdpb.PD/ScanRegions";
    AskBatchSplit(pdpb::AskBatchSplitRequest) => pd.ask_batch_split, "/pdpb.PD/AskBatchSplit";
    ReportBatchSplit(pdpb::ReportBatchSplitRequest) => pd.report_batch_split, "/pdpb.PD/ReportBatchSplit";
    GetClusterConfig(pdpb::GetClusterConfigRequest) => pd.get_cluster_config, "/pdpb.PD/GetClusterConfig";
    GetGcSafePoint(pdpb::GetGcSafePointRequest) => pd.get_gc_safe_point, "/pdpb.PD/GetGCSafePoint";
    UpdateGcSafePoint(pdpb::UpdateGcSafePointRequest) => pd.update_gc_safe_point, "/pdpb.PD/UpdateGCSafePoint";
    UpdateServiceGcSafePoint(pdpb::UpdateServiceGcSafePointRequest) => pd.update_service_gc_safe_point, "/pdpb.PD/UpdateServiceGCSafePoint";
    LoadKeyspace(keyspacepb::LoadKeyspaceRequest) => keyspace.load_keyspace, "/keyspacepb.Keyspace/LoadKeyspace";
    GetAllKeyspaces(keyspacepb::GetAllKeyspacesRequest) => keyspace.get_all_keyspaces, "/keyspacepb.Keyspace/GetAllKeyspaces";
});

/// What a store request does with the keys it names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Shape {
    /// Writes (or locks, or resolves) named keys.
    Write,
    /// Reads named raw keys.
    RawRead,
    /// Reads named keys at a version.
    TxnRead,
    /// Works on a key range.
    Range,
    /// Works on the whole region.
    Region,
}

impl StoreReq {
    pub fn shape(&self) -> Shape {
        use StoreReq::*;
        match self {
            KvGet(_) | KvBatchGet(_) => Shape::TxnRead,
            RawGet(_) | RawBatchGet(_) | RawGetKeyTtl(_) => Shape::RawRead,
            KvScan(_)
            | KvScanLock(_)
            | KvDeleteRange(_)
            | RawScan(_)
            | RawDeleteRange(_)
            | RawBatchScan(_)
            | RawChecksum(_)
            | UnsafeDestroyRange(_) => Shape::Range,
            KvGc(_) => Shape::Region,
            _ => Shape::Write,
        }
    }

    /// Whether this is a raw method (not a transactional one).
    pub fn is_raw(&self) -> bool {
        self.path().contains("/Raw")
    }

    /// The same range request over [start, end).
    pub fn with_range(mut self, start: &[u8], end: &[u8]) -> StoreReq {
        let (s, e) = (start.to_vec(), end.to_vec());
        use StoreReq::*;
        match &mut self {
            KvScan(r) => (r.start_key, r.end_key) = (s, e),
            KvScanLock(r) => (r.start_key, r.end_key) = (s, e),
            KvDeleteRange(r) => (r.start_key, r.end_key) = (s, e),
            RawScan(r) => (r.start_key, r.end_key) = (s, e),
            RawDeleteRange(r) => (r.start_key, r.end_key) = (s, e),
            UnsafeDestroyRange(r) => (r.start_key, r.end_key) = (s, e),
            RawBatchScan(r) => r.ranges = vec![range(&s, &e)],
            RawChecksum(r) => r.ranges = vec![range(&s, &e)],
            _ => {}
        }
        self
    }
}

/// One ordinary request per store method, on `key` (ranges: [key, key~))
/// at `ts`, under `ctx`.
pub fn every_store_method(ctx: &Option<Context>, key: &[u8], ts: u64) -> Vec<StoreReq> {
    let end = [key, &b"~"[..]].concat();
    let keys = || vec![key.to_vec()];
    let ranges = || vec![range(key, &end)];
    use StoreReq::*;
    vec![
        KvGet(req::get(ctx, key, ts)),
        KvScan(req::scan(ctx, key, &end, ts)),
        KvPrewrite(req::prewrite(ctx, key, ts, 3000)),
        KvPessimisticLock(req::pessimistic_lock(ctx, key, ts, ts, -1)),
        KvPessimisticRollback(req::pessimistic_rollback(ctx, keys(), ts, ts)),
        KvTxnHeartBeat(req::txn_heart_beat(ctx, key, ts, 3000)),
        KvCheckTxnStatus(req::check_txn_status(ctx, key, ts, ts, ts)),
        KvCheckSecondaryLocks(req::check_secondary_locks(ctx, keys(), ts)),
        KvCommit(req::commit(ctx, key, ts, ts + 1)),
        KvCleanup(req::cleanup(ctx, key, ts, ts)),
        KvBatchGet(req::batch_get(ctx, keys(), ts)),
        KvBatchRollback(req::batch_rollback(ctx, keys(), ts)),
        KvScanLock(req::scan_lock(ctx, key, &end, ts)),
        KvResolveLock(req::resolve_lock(ctx, keys(), ts, 0)),
        KvGc(req::gc(ctx, 0)),
        KvDeleteRange(req::delete_range(ctx, key, &end)),
        RawGet(req::raw_get(ctx, key)),
        RawBatchGet(req::raw_batch_get(ctx, keys())),
        RawPut(req::raw_put(ctx, key, b"e")),
        RawBatchPut(req::raw_batch_put(ctx, vec![kv(key, b"e")])),
        RawDelete(req::raw_delete(ctx, key)),
        RawBatchDelete(req::raw_batch_delete(ctx, keys())),
        RawScan(req::raw_scan(ctx, key, &end)),
        RawDeleteRange(req::raw_delete_range(ctx, key, &end)),
        RawBatchScan(req::raw_batch_scan(ctx, ranges())),
        RawGetKeyTtl(req::raw_get_key_ttl(ctx, key)),
        RawCompareAndSwap(req::raw_cas(ctx, key, b"e")),
        RawChecksum(req::raw_checksum(ctx, ranges())),
        UnsafeDestroyRange(req::unsafe_destroy_range(ctx, key, &end)),
    ]
}

/// One valid request per scheduled raw write method, on `key` (and `key~`).
pub fn raw_writes(ctx: &Option<Context>, key: &[u8]) -> Vec<StoreReq> {
    use StoreReq::*;
    let writes = every_store_method(ctx, key, 1).into_iter().filter(|r| {
        matches!(
            r,
            RawPut(_)
                | RawBatchPut(_)
                | RawDelete(_)
                | RawBatchDelete(_)
                | RawDeleteRange(_)
                | RawCompareAndSwap(_)
        )
    });
    writes.collect()
}

/// Ordinary store requests, one builder per method; cases edit fields.
pub mod req {
    use tikal_proto::kvrpcpb::*;

    type Ctx = Option<Context>;

    pub fn get(ctx: &Ctx, key: &[u8], version: u64) -> GetRequest {
        GetRequest {
            context: ctx.clone(),
            key: key.to_vec(),
            version,
        }
    }

    pub fn batch_get(ctx: &Ctx, keys: Vec<Vec<u8>>, version: u64) -> BatchGetRequest {
        BatchGetRequest {
            context: ctx.clone(),
            keys,
            version,
        }
    }

    pub fn scan(ctx: &Ctx, start: &[u8], end: &[u8], version: u64) -> ScanRequest {
        let (start_key, end_key) = (start.to_vec(), end.to_vec());
        ScanRequest {
            context: ctx.clone(),
            start_key,
            end_key,
            limit: 10,
            version,
            ..Default::default()
        }
    }

    pub fn prewrite(ctx: &Ctx, key: &[u8], start_version: u64, lock_ttl: u64) -> PrewriteRequest {
        PrewriteRequest {
            context: ctx.clone(),
            mutations: vec![super::put_mutation(key, b"v")],
            primary_lock: key.to_vec(),
            start_version,
            lock_ttl,
            ..Default::default()
        }
    }

    pub fn pessimistic_lock(
        ctx: &Ctx,
        key: &[u8],
        start_version: u64,
        for_update_ts: u64,
        wait_timeout: i64,
    ) -> PessimisticLockRequest {
        PessimisticLockRequest {
            context: ctx.clone(),
            mutations: vec![super::lock_mutation(key)],
            primary_lock: key.to_vec(),
            start_version,
            lock_ttl: 3000,
            for_update_ts,
            is_first_lock: true,
            wait_timeout,
            ..Default::default()
        }
    }

    pub fn pessimistic_rollback(
        ctx: &Ctx,
        keys: Vec<Vec<u8>>,
        start_version: u64,
        for_update_ts: u64,
    ) -> PessimisticRollbackRequest {
        PessimisticRollbackRequest {
            context: ctx.clone(),
            start_version,
            for_update_ts,
            keys,
        }
    }

    pub fn txn_heart_beat(
        ctx: &Ctx,
        primary: &[u8],
        start_version: u64,
        advise_lock_ttl: u64,
    ) -> TxnHeartBeatRequest {
        let primary_lock = primary.to_vec();
        TxnHeartBeatRequest {
            context: ctx.clone(),
            primary_lock,
            start_version,
            advise_lock_ttl,
        }
    }

    pub fn check_txn_status(
        ctx: &Ctx,
        primary: &[u8],
        lock_ts: u64,
        caller_start_ts: u64,
        current_ts: u64,
    ) -> CheckTxnStatusRequest {
        CheckTxnStatusRequest {
            context: ctx.clone(),
            primary_key: primary.to_vec(),
            lock_ts,
            caller_start_ts,
            current_ts,
            ..Default::default()
        }
    }

    pub fn check_secondary_locks(
        ctx: &Ctx,
        keys: Vec<Vec<u8>>,
        start_version: u64,
    ) -> CheckSecondaryLocksRequest {
        CheckSecondaryLocksRequest {
            context: ctx.clone(),
            keys,
            start_version,
        }
    }

    pub fn commit(ctx: &Ctx, key: &[u8], start_version: u64, commit_version: u64) -> CommitRequest {
        let keys = vec![key.to_vec()];
        CommitRequest {
            context: ctx.clone(),
            start_version,
            keys,
            commit_version,
        }
    }

    pub fn cleanup(ctx: &Ctx, key: &[u8], start_version: u64, current_ts: u64) -> CleanupRequest {
        CleanupRequest {
            context: ctx.clone(),
            key: key.to_vec(),
            start_version,
            current_ts,
        }
    }

    pub fn batch_rollback(
        ctx: &Ctx,
        keys: Vec<Vec<u8>>,
        start_version: u64,
    ) -> BatchRollbackRequest {
        BatchRollbackRequest {
            context: ctx.clone(),
            start_version,
            keys,
        }
    }

    pub fn scan_lock(ctx: &Ctx, start: &[u8], end: &[u8], max_version: u64) -> ScanLockRequest {
        let (start_key, end_key) = (start.to_vec(), end.to_vec());
        ScanLockRequest {
            context: ctx.clone(),
            max_version,
            start_key,
            limit: 10,
            end_key,
        }
    }

    pub fn resolve_lock(
        ctx: &Ctx,
        keys: Vec<Vec<u8>>,
        start_version: u64,
        commit_version: u64,
    ) -> ResolveLockRequest {
        ResolveLockRequest {
            context: ctx.clone(),
            start_version,
            commit_version,
            keys,
            ..Default::default()
        }
    }

    pub fn gc(ctx: &Ctx, safe_point: u64) -> GcRequest {
        GcRequest {
            context: ctx.clone(),
            safe_point,
        }
    }

    pub fn delete_range(ctx: &Ctx, start: &[u8], end: &[u8]) -> DeleteRangeRequest {
        let (start_key, end_key) = (start.to_vec(), end.to_vec());
        DeleteRangeRequest {
            context: ctx.clone(),
            start_key,
            end_key,
            notify_only: false,
        }
    }

    pub fn unsafe_destroy_range(ctx: &Ctx, start: &[u8], end: &[u8]) -> UnsafeDestroyRangeRequest {
        let (start_key, end_key) = (start.to_vec(), end.to_vec());
        UnsafeDestroyRangeRequest {
            context: ctx.clone(),
            start_key,
            end_key,
        }
    }

    pub fn raw_get(ctx: &Ctx, key: &[u8]) -> RawGetRequest {
        RawGetRequest {
            context: ctx.clone(),
            key: key.to_vec(),
            cf: String::new(),
        }
    }

    pub fn raw_batch_get(ctx: &Ctx, keys: Vec<Vec<u8>>) -> RawBatchGetRequest {
        RawBatchGetRequest {
            context: ctx.clone(),
            keys,
            cf: String::new(),
        }
    }

    pub fn raw_get_key_ttl(ctx: &Ctx, key: &[u8]) -> RawGetKeyTtlRequest {
        RawGetKeyTtlRequest {
            context: ctx.clone(),
            key: key.to_vec(),
            cf: String::new(),
        }
    }

    pub fn raw_put(ctx: &Ctx, key: &[u8], value: &[u8]) -> RawPutRequest {
        let (key, value) = (key.to_vec(), value.to_vec());
        RawPutRequest {
            context: ctx.clone(),
            key,
            value,
            ..Default::default()
        }
    }

    pub fn raw_batch_put(ctx: &Ctx, pairs: Vec<KvPair>) -> RawBatchPutRequest {
        RawBatchPutRequest {
            context: ctx.clone(),
            pairs,
            ..Default::default()
        }
    }

    pub fn raw_delete(ctx: &Ctx, key: &[u8]) -> RawDeleteRequest {
        RawDeleteRequest {
            context: ctx.clone(),
            key: key.to_vec(),
            ..Default::default()
        }
    }

    pub fn raw_batch_delete(ctx: &Ctx, keys: Vec<Vec<u8>>) -> RawBatchDeleteRequest {
        RawBatchDeleteRequest {
            context: ctx.clone(),
            keys,
            ..Default::default()
        }
    }

    pub fn raw_scan(ctx: &Ctx, start: &[u8], end: &[u8]) -> RawScanRequest {
        let (start_key, end_key) = (start.to_vec(), end.to_vec());
        RawScanRequest {
            context: ctx.clone(),
            start_key,
            end_key,
            limit: 100,
            ..Default::default()
        }
    }

    pub fn raw_delete_range(ctx: &Ctx, start: &[u8], end: &[u8]) -> RawDeleteRangeRequest {
        let (start_key, end_key) = (start.to_vec(), end.to_vec());
        RawDeleteRangeRequest {
            context: ctx.clone(),
            start_key,
            end_key,
            cf: String::new(),
        }
    }

    pub fn raw_batch_scan(ctx: &Ctx, ranges: Vec<KeyRange>) -> RawBatchScanRequest {
        RawBatchScanRequest {
            context: ctx.clone(),
            ranges,
            each_limit: 10,
            ..Default::default()
        }
    }

    pub fn raw_cas(ctx: &Ctx, key: &[u8], value: &[u8]) -> RawCasRequest {
        let (key, value) = (key.to_vec(), value.to_vec());
        let previous_not_exist = true;
        RawCasRequest {
            context: ctx.clone(),
            key,
            value,
            previous_not_exist,
            ..Default::default()
        }
    }

    pub fn raw_checksum(ctx: &Ctx, ranges: Vec<KeyRange>) -> RawChecksumRequest {
        RawChecksumRequest {
            context: ctx.clone(),
            ranges,
            ..Default::default()
        }
    }
}

pub fn put_mutation(key: &[u8], value: &[u8]) -> Mutation {
    let (key, value) = (key.to_vec(), value.to_vec());
    Mutation {
        op: Op::Put as i32,
        key,
        value,
        ..Default::default()
    }
}

pub fn lock_mutation(key: &[u8]) -> Mutation {
    Mutation {
        op: Op::PessimisticLock as i32,
        key: key.to_vec(),
        ..Default::default()
    }
}

pub fn kv(key: &[u8], value: &[u8]) -> KvPair {
    KvPair {
        key: key.to_vec(),
        value: value.to_vec(),
        ..Default::default()
    }
}

pub fn range(start: &[u8], end: &[u8]) -> KeyRange {
    KeyRange {
        start_key: start.to_vec(),
        end_key: end.to_vec(),
    }
}

pub fn peer(id: u64, store_id: u64) -> metapb::Peer {
    metapb::Peer {
        id,
        store_id,
        ..Default::default()
    }
}

/// `msg` with gRPC metadata `headers` (the scheduling headers).
pub fn with_headers<T>(msg: T, headers: &[(&'static str, &str)]) -> tonic::Request<T> {
    let mut r = tonic::Request::new(msg);
    for (name, value) in headers {
        let value = value.parse().expect("header values here are visible ASCII");
        r.metadata_mut().insert(*name, value);
    }
    r
}
