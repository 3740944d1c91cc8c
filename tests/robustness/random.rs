//! Seeded random requests to every method, then random and mangled
//! protobuf bodies: each must get an answer. [`Gen`] draws the field
//! values, mostly at boundaries, so a random request is hostile more often
//! than not; the seed makes a failing run repeatable.

use prost::Message;
use rand::Rng;
use tikal_proto::kvrpcpb::*;
use tikal_proto::{keyspacepb, pdpb};
use tonic::transport::Channel;

use crate::judge::short;
use crate::judge::Expect::Any;
use crate::prober::Prober;
use crate::requests::{kv, req, PdReq, StoreReq, PD_METHODS, STORE_METHODS};
use crate::values::Gen;
use crate::wire::{raw_streaming, raw_unary};
use crate::{random_bodies, random_requests, seed};

/// Seeded random requests to every store method, with random contexts,
/// keys, timestamps, enum values and scheduling headers, then random and
/// mangled protobuf bodies: each gets an answer.
pub async fn random_store_requests_get_answers(p: &mut Prober) {
    p.batch = "random store requests";
    let mut g = Gen::new(seed(), p);
    for m in 0..STORE_METHODS {
        let hangs = p.hangs;
        for i in 0..random_requests() {
            let req = g.store_request(m);
            let headers = g.headers();
            let what = format!("random #{i} {headers:?} {}", short(&format!("{req:?}")));
            let headers: Vec<_> = headers.iter().map(|(n, v)| (*n, v.as_str())).collect();
            p.send_store(req, &headers, &what, Any).await;
            if p.hangs > hangs + 1 {
                break; // Two hangs show it; the rest would only slow the run.
            }
        }
        let (path, channel) = (g.store_request(m).path(), p.store_channel.clone());
        send_random_bodies(p, channel, path, || {
            let valid = g.store_request(m).encode();
            g.body(&valid)
        })
        .await;
    }
}

/// Seeded random requests to every PD and Keyspace method, the streams
/// included, then random and mangled bodies: each gets an answer, no
/// random heartbeat or split report (all stale) reroutes a key, and every
/// TSO batch answered is one the oracle reserved.
pub async fn random_pd_requests_get_answers(p: &mut Prober) {
    p.batch = "random PD requests";
    let mut g = Gen::new(seed() ^ 1, p);
    for m in 0..PD_METHODS {
        for i in 0..random_requests() {
            let req = g.pd_request(m);
            let reroutes = matches!(req, PdReq::ReportBatchSplit(_));
            let what = format!("random #{i} {}", short(&format!("{req:?}")));
            p.send_pd(req, &[], &what, Any).await;
            if reroutes {
                p.routing_unchanged("report_batch_split", &what).await;
            }
        }
        let (path, channel) = (g.pd_request(m).path(), p.pd_channel.clone());
        send_random_bodies(p, channel, path, || {
            let valid = g.pd_request(m).encode();
            g.body(&valid)
        })
        .await;
    }
    for i in 0..random_requests() {
        let reqs = (0..g.rng.gen_range(1..4))
            .map(|_| g.tso_request())
            .collect();
        p.tso_case(&format!("random #{i}"), reqs, Any).await;
        let req = g.region_heartbeat();
        let what = format!("random #{i} {}", short(&format!("{req:?}")));
        p.heartbeat_case(&what, vec![req], Any).await;
    }
    for path in ["/pdpb.PD/Tso", "/pdpb.PD/RegionHeartbeat"] {
        for i in 0..random_bodies() {
            let valid = match path {
                "/pdpb.PD/Tso" => g.tso_request().encode_to_vec(),
                _ => g.region_heartbeat().encode_to_vec(),
            };
            let bodies = vec![g.body(&valid), g.body(&valid)];
            let what = format!("random bodies #{i}: {}", short(&format!("{bodies:?}")));
            let call = raw_streaming(p.pd_channel.clone(), path, bodies);
            p.judge(path, what, Any, call).await;
        }
        p.routing_unchanged(path, "random bodies").await;
    }
}

/// Sends [`random_bodies`] bodies from `body` as the unary method `path`.
async fn send_random_bodies(
    p: &mut Prober,
    channel: Channel,
    path: &'static str,
    mut body: impl FnMut() -> Vec<u8>,
) {
    for i in 0..random_bodies() {
        let body = body();
        let what = format!("random body #{i}: {}", short(&format!("{body:?}")));
        p.judge(path, what, Any, raw_unary(channel.clone(), path, body))
            .await;
    }
}

impl Gen {
    #[allow(deprecated)] // RawBatchPutRequest.ttl, which clients may still send
    fn store_request(&mut self, m: usize) -> StoreReq {
        let context = self.ctx();
        use StoreReq::*;
        match m {
            0 => KvGet(req::get(&context, &self.key(), self.u64())),
            1 => KvScan(ScanRequest {
                context,
                start_key: self.key(),
                limit: self.u32(),
                version: self.u64(),
                key_only: self.flag(),
                reverse: self.flag(),
                end_key: self.key(),
                sample_step: self.u32(),
            }),
            2 => KvPrewrite(PrewriteRequest {
                context,
                mutations: self.mutations(),
                primary_lock: self.key(),
                start_version: self.u64(),
                lock_ttl: self.u64(),
                skip_constraint_check: self.flag(),
                pessimistic_actions: self.enums(3),
                txn_size: self.u64(),
                for_update_ts: self.u64(),
                min_commit_ts: self.u64(),
                use_async_commit: self.flag(),
                secondaries: self.keys(),
                try_one_pc: self.flag(),
                max_commit_ts: self.u64(),
                assertion_level: self.enum_value(3),
                for_update_ts_constraints: (0..self.rng.gen_range(0..3))
                    .map(|_| prewrite_request::ForUpdateTsConstraint {
                        index: self.u32(),
                        expected_for_update_ts: self.u64(),
                    })
                    .collect(),
            }),
            3 => KvPessimisticLock(PessimisticLockRequest {
                context,
                mutations: self.mutations(),
                primary_lock: self.key(),
                start_version: self.u64(),
                lock_ttl: self.u64(),
                for_update_ts: self.u64(),
                is_first_lock: self.flag(),
                wait_timeout: self.wait_timeout(),
                force: self.flag(),
                return_values: self.flag(),
                min_commit_ts: self.u64(),
                check_existence: self.flag(),
                lock_only_if_exists: self.flag(),
                wake_up_mode: self.enum_value(2),
            }),
            4 => {
                let (start, for_update, keys) = (self.u64(), self.u64(), self.keys());
                KvPessimisticRollback(req::pessimistic_rollback(&context, keys, start, for_update))
            }
            5 => {
                let (primary, start, ttl) = (self.key(), self.u64(), self.u64());
                KvTxnHeartBeat(req::txn_heart_beat(&context, &primary, start, ttl))
            }
            6 => {
                let (key, lock_ts, caller, current) =
                    (self.key(), self.u64(), self.u64(), self.u64());
                let mut r = req::check_txn_status(&context, &key, lock_ts, caller, current);
                (r.rollback_if_not_exist, r.force_sync_commit) = (self.flag(), self.flag());
                (r.resolving_pessimistic_lock, r.verify_is_primary) = (self.flag(), self.flag());
                KvCheckTxnStatus(r)
            }
            7 => {
                let (keys, start) = (self.keys(), self.u64());
                KvCheckSecondaryLocks(req::check_secondary_locks(&context, keys, start))
            }
            8 => {
                let mut r = req::commit(&context, b"", self.u64(), self.u64());
                r.keys = self.keys();
                KvCommit(r)
            }
            9 => KvCleanup(req::cleanup(&context, &self.key(), self.u64(), self.u64())),
            10 => KvBatchGet(req::batch_get(&context, self.keys(), self.u64())),
            11 => KvBatchRollback(req::batch_rollback(&context, self.keys(), self.u64())),
            12 => {
                let mut r = req::scan_lock(&context, &self.key(), &self.key(), self.u64());
                r.limit = self.u32();
                KvScanLock(r)
            }
            13 => {
                let mut r = req::resolve_lock(&context, self.keys(), self.u64(), self.u64());
                let n = self.count();
                r.txn_infos = (0..n)
                    .map(|_| TxnInfo {
                        txn: self.u64(),
                        status: self.u64(),
                    })
                    .collect();
                KvResolveLock(r)
            }
            14 => KvGc(req::gc(&context, self.u64())),
            15 => {
                let mut r = req::delete_range(&context, &self.key(), &self.key());
                r.notify_only = self.flag();
                KvDeleteRange(r)
            }
            16 => {
                let mut r = req::raw_get(&context, &self.key());
                r.cf = self.cf_to_read();
                RawGet(r)
            }
            17 => {
                let mut r = req::raw_batch_get(&context, self.keys());
                r.cf = self.cf_to_read();
                RawBatchGet(r)
            }
            18 => {
                let mut r = req::raw_put(&context, &self.key(), &self.value());
                (r.cf, r.ttl, r.for_cas) = (self.cf_to_write(), self.u64(), self.flag());
                RawPut(r)
            }
            19 => {
                let n = self.count();
                let pairs = (0..n).map(|_| kv(&self.key(), &self.value())).collect();
                let mut r = req::raw_batch_put(&context, pairs);
                let ttls = self.rng.gen_range(0..3);
                (r.cf, r.for_cas) = (self.cf_to_write(), self.flag());
                r.ttls = (0..ttls).map(|_| self.u64()).collect();
                r.ttl = self.u64();
                RawBatchPut(r)
            }
            20 => {
                let mut r = req::raw_delete(&context, &self.key());
                (r.cf, r.for_cas) = (self.cf_to_write(), self.flag());
                RawDelete(r)
            }
            21 => {
                let mut r = req::raw_batch_delete(&context, self.keys());
                (r.cf, r.for_cas) = (self.cf_to_write(), self.flag());
                RawBatchDelete(r)
            }
            22 => {
                let mut r = req::raw_scan(&context, &self.key(), &self.key());
                (r.limit, r.key_only, r.reverse) = (self.u32(), self.flag(), self.flag());
                r.cf = self.cf_to_read();
                RawScan(r)
            }
            23 => {
                let mut r = req::raw_delete_range(&context, &self.key(), &self.key());
                r.cf = self.cf_to_write();
                RawDeleteRange(r)
            }
            24 => {
                let mut r = req::raw_batch_scan(&context, self.ranges());
                (r.each_limit, r.key_only, r.reverse) = (self.u32(), self.flag(), self.flag());
                r.cf = self.cf_to_read();
                RawBatchScan(r)
            }
            25 => {
                let mut r = req::raw_get_key_ttl(&context, &self.key());
                r.cf = self.cf_to_read();
                RawGetKeyTtl(r)
            }
            26 => {
                let mut r = req::raw_cas(&context, &self.key(), &self.value());
                (r.previous_not_exist, r.previous_value) = (self.flag(), self.value());
                (r.cf, r.ttl) = (self.cf_to_write(), self.u64());
                RawCompareAndSwap(r)
            }
            27 => {
                let mut r = req::raw_checksum(&context, self.ranges());
                r.algorithm = self.enum_value(1);
                RawChecksum(r)
            }
            _ => {
                let (start, end) = (self.key(), self.key());
                UnsafeDestroyRange(req::unsafe_destroy_range(&context, &start, &end))
            }
        }
    }

    fn pd_request(&mut self, m: usize) -> PdReq {
        let header = self.pd_header();
        use PdReq::*;
        match m {
            0 => GetMembers(pdpb::GetMembersRequest { header }),
            1 => {
                let (store, region) = (
                    self.flag().then(|| self.store()),
                    self.flag().then(|| self.stale_region()),
                );
                Bootstrap(pdpb::BootstrapRequest {
                    header,
                    store,
                    region,
                })
            }
            2 => IsBootstrapped(pdpb::IsBootstrappedRequest { header }),
            3 => AllocId(pdpb::AllocIdRequest { header }),
            4 => GetStore(pdpb::GetStoreRequest {
                header,
                store_id: self.u64(),
            }),
            5 => PutStore(pdpb::PutStoreRequest {
                header,
                store: self.flag().then(|| self.store()),
            }),
            6 => GetAllStores(pdpb::GetAllStoresRequest {
                header,
                exclude_tombstone_stores: self.flag(),
            }),
            7 => StoreHeartbeat(pdpb::StoreHeartbeatRequest {
                header,
                stats: self.flag().then(|| self.stats()),
            }),
            8 | 9 => {
                let get = pdpb::GetRegionRequest {
                    header,
                    region_key: self.key(),
                    need_buckets: self.flag(),
                };
                if m == 8 {
                    GetRegion(get)
                } else {
                    GetPrevRegion(get)
                }
            }
            10 => GetRegionById(pdpb::GetRegionByIdRequest {
                header,
                region_id: self.u64(),
                need_buckets: self.flag(),
            }),
            11 => {
                let (start_key, limit, end_key) = (self.key(), self.i32(), self.key());
                ScanRegions(pdpb::ScanRegionsRequest {
                    header,
                    start_key,
                    limit,
                    end_key,
                })
            }
            12 => {
                let mut region = self.stale_region();
                if self.flag() {
                    region.id = self.region_id;
                }
                let split_count = match self.rng.gen_range(0..5) {
                    0 => 0,
                    1 => u32::MAX,
                    2 => 1024,
                    _ => self.rng.gen_range(1..20),
                };
                let region = self.flag().then_some(region);
                AskBatchSplit(pdpb::AskBatchSplitRequest {
                    header,
                    region,
                    split_count,
                })
            }
            13 => {
                let n = self.rng.gen_range(0..3);
                let regions = (0..n).map(|_| self.stale_region()).collect();
                ReportBatchSplit(pdpb::ReportBatchSplitRequest { header, regions })
            }
            14 => GetClusterConfig(pdpb::GetClusterConfigRequest { header }),
            15 => GetGcSafePoint(pdpb::GetGcSafePointRequest { header }),
            16 => UpdateGcSafePoint(pdpb::UpdateGcSafePointRequest {
                header,
                safe_point: self.u64(),
            }),
            17 => {
                let service_id = match self.flag() {
                    true => format!("svc-{}", self.rng.gen_range(0..4)).into_bytes(),
                    false => self.bytes(20),
                };
                let (ttl, safe_point) = (self.i64(), self.u64());
                UpdateServiceGcSafePoint(pdpb::UpdateServiceGcSafePointRequest {
                    header,
                    service_id,
                    ttl,
                    safe_point,
                })
            }
            18 => {
                // Not DEFAULT: its first load splits the range (see
                // `pd::keyspace_requests`).
                let name = if self.one_in(4) {
                    "default".into()
                } else {
                    self.text(40)
                };
                LoadKeyspace(keyspacepb::LoadKeyspaceRequest { header, name })
            }
            _ => {
                let (start_id, limit) = (self.u32(), self.u32());
                GetAllKeyspaces(keyspacepb::GetAllKeyspacesRequest {
                    header,
                    start_id,
                    limit,
                })
            }
        }
    }

    fn tso_request(&mut self) -> pdpb::TsoRequest {
        let count = match self.rng.gen_range(0..6) {
            0 => 0,
            1 => u32::MAX,
            2 => 1 << 18,
            _ => self.rng.gen_range(1..1000),
        };
        pdpb::TsoRequest {
            header: self.pd_header(),
            count,
            dc_location: self.text(10),
        }
    }

    fn region_heartbeat(&mut self) -> pdpb::RegionHeartbeatRequest {
        let down = self.rng.gen_range(0..2);
        pdpb::RegionHeartbeatRequest {
            header: self.pd_header(),
            region: self.flag().then(|| self.stale_region()),
            leader: self.flag().then(|| self.peer()),
            down_peers: (0..down)
                .map(|_| pdpb::PeerStats {
                    peer: Some(self.peer()),
                    down_seconds: self.u64(),
                })
                .collect(),
            bytes_written: self.u64(),
            keys_written: self.u64(),
            approximate_size: self.u64(),
            approximate_keys: self.u64(),
            interval: Some(pdpb::TimeInterval {
                start_timestamp: self.u64(),
                end_timestamp: self.u64(),
            }),
            term: self.u64(),
            cpu_usage: self.u64(),
            ..Default::default()
        }
    }
}
