//! Store batches on keys, raw column families, sizes, routing and
//! scheduling headers: what every `tikvpb.Tikv` method must refuse, and
//! what it must still serve at the limits.

use tikal_proto::kvrpcpb::*;
use tikal_proto::metapb;

use crate::judge::answered_ok;
use crate::judge::Expect::{self, Any, Invalid, Refused, Served};
use crate::judge::RegionErr::{EntryTooLarge, EpochNotMatch, NotFound, StoreNotMatch};
use crate::prober::Prober;
use crate::requests::{
    every_store_method, kv, range, raw_writes, req, with_headers, Shape, StoreReq,
};
use crate::{HUGE_KEY, MAX};

/// Every store method refuses keys over 8 KiB where it takes keys to read
/// or write, raw methods refuse empty keys, and every range method refuses
/// a start after its end.
pub async fn every_store_method_refuses_bad_keys_and_inverted_ranges(p: &mut Prober) {
    p.batch = "bad keys and inverted ranges";
    let ctx = p.ctx();
    let ts = p.tso().await;
    let huge = [&b"refused/"[..], &vec![b'h'; HUGE_KEY][..]].concat();
    for req in every_store_method(&ctx, &huge, ts) {
        let expect = match req.shape() {
            Shape::Write | Shape::RawRead => Invalid,
            Shape::TxnRead | Shape::Range | Shape::Region => Any,
        };
        p.send_store(req, &[], "a key over 8 KiB", expect).await;
    }
    for req in every_store_method(&ctx, b"", ts) {
        let expect = match req.shape() {
            Shape::RawRead => Invalid,
            Shape::Write if req.is_raw() => Invalid,
            _ => Any,
        };
        p.send_store(req, &[], "an empty key", expect).await;
    }
    // An inverted range is refused, except by RawScan and KvScan, which
    // find nothing in it, as TiKV answers them.
    for req in every_store_method(&ctx, b"refused/z", ts) {
        if req.shape() == Shape::Range {
            let expect = match req {
                StoreReq::RawScan(_) | StoreReq::KvScan(_) => Served,
                _ => Invalid,
            };
            let req = req.with_range(b"refused/z", b"refused/a");
            p.send_store(req, &[], "start after end", expect).await;
        }
    }
    // Reverse scans read [end, start): there the end must not be after the
    // start (a RawScan or KvScan finds nothing).
    let (a, z) = (&b"refused/a"[..], &b"refused/z"[..]);
    let raw = |start, end| RawScanRequest {
        reverse: true,
        ..req::raw_scan(&ctx, start, end)
    };
    let txn = |start, end| ScanRequest {
        reverse: true,
        ..req::scan(&ctx, start, end, ts)
    };
    let batch = RawBatchScanRequest {
        reverse: true,
        ..req::raw_batch_scan(&ctx, vec![range(a, z)])
    };
    let (inverted, proper) = ("reverse, end after start", "reverse, a proper range");
    let cases = [
        (StoreReq::RawScan(raw(a, z)), inverted, Served),
        (StoreReq::RawScan(raw(z, a)), proper, Served),
        (StoreReq::KvScan(txn(a, z)), inverted, Served),
        (StoreReq::KvScan(txn(z, a)), proper, Served),
        (StoreReq::RawBatchScan(batch), inverted, Invalid),
    ];
    for (req, what, expect) in cases {
        p.send_store(req, &[], what, expect).await;
    }
}

/// Raw methods refuse unknown column families and checksum algorithms, TTL
/// lists that do not fit, and writes over the Raft entry limit; a batch
/// with one bad key writes none of its good ones.
pub async fn raw_methods_refuse_bad_cfs_and_oversized_writes(p: &mut Prober) {
    p.batch = "raw column families and sizes";
    let ctx = p.ctx();
    let ok = p.key("refused");
    let (a, z) = (&b"refused/a"[..], &b"refused/z"[..]);
    for cf in ["raft", "lock\0", "Default", "writes"] {
        let what = format!("cf {cf:?}");
        let mut get = req::raw_get(&ctx, &ok);
        let mut put = req::raw_put(&ctx, &ok, b"v");
        let mut scan = req::raw_scan(&ctx, a, z);
        let mut delete = req::raw_delete_range(&ctx, a, z);
        (get.cf, put.cf) = (cf.into(), cf.into());
        (scan.cf, delete.cf) = (cf.into(), cf.into());
        call!(p, tikv.raw_get(get), &what, Invalid);
        call!(p, tikv.raw_put(put), &what, Invalid);
        call!(p, tikv.raw_scan(scan), &what, Invalid);
        call!(p, tikv.raw_delete_range(delete), &what, Invalid);
    }
    for algorithm in [7, -1, i32::MAX] {
        let what = format!("ChecksumAlgorithm {algorithm}");
        let checksum = RawChecksumRequest {
            algorithm,
            ..req::raw_checksum(&ctx, vec![range(a, z)])
        };
        call!(p, tikv.raw_checksum(checksum), &what, Invalid);
    }
    let mut put = req::raw_batch_put(&ctx, vec![kv(&ok, b"1"), kv(a, b"2")]);
    put.ttls = vec![1, 2, 3];
    call!(p, tikv.raw_batch_put(put), "3 ttls for 2 pairs", Invalid);
    let huge = vec![b'h'; HUGE_KEY];
    for (bad, what) in [(&huge[..], "a key over 8 KiB"), (b"", "an empty key")] {
        let put = req::raw_batch_put(&ctx, vec![kv(&ok, b"1"), kv(bad, b"2")]);
        let what = format!("{what} after a good one");
        call!(p, tikv.raw_batch_put(put), what, Invalid);
    }

    let big = vec![b'v'; 9 << 20];
    let (too_large, what) = (Expect::Region(EntryTooLarge), "a 9 MiB value");
    let put = req::raw_put(&ctx, &ok, &big);
    call!(p, tikv.raw_put(put), what, too_large);
    let cas = req::raw_cas(&ctx, &ok, &big);
    call!(p, tikv.raw_compare_and_swap(cas), what, too_large);
    let half = &big[..5 << 20];
    let put = req::raw_batch_put(&ctx, vec![kv(&ok, half), kv(a, half)]);
    call!(p, tikv.raw_batch_put(put), "two 5 MiB values", too_large);

    let scan = req::raw_scan(&ctx, b"refused/", b"refused0");
    let what = "what refused writes left";
    if let Some(r) = call!(p, tikv.raw_scan(scan), what, Served) {
        let keys: Vec<_> = r
            .kvs
            .iter()
            .map(|p| String::from_utf8_lossy(&p.key))
            .collect();
        p.require(keys.is_empty(), "raw_scan", what, format!("{keys:?}"));
    }
}

/// TTLs, limits and key counts at their extremes are served, and a value
/// put with an extreme TTL is readable at once.
pub async fn raw_methods_serve_extreme_ttls_and_limits(p: &mut Prober) {
    p.batch = "raw extremes";
    let ctx = p.ctx();
    let bulk: Vec<Vec<u8>> = (0..5000)
        .map(|i| format!("bulk/{i:05}").into_bytes())
        .collect();
    let pairs = bulk.iter().map(|k| kv(k, b"b")).collect();
    let put = req::raw_batch_put(&ctx, pairs);
    call!(p, tikv.raw_batch_put(put), "5000 pairs", Served);
    let get = req::raw_batch_get(&ctx, bulk.clone());
    call!(p, tikv.raw_batch_get(get), "5000 keys", Served);
    let mut scan = req::raw_scan(&ctx, b"bulk/", b"");
    scan.limit = u32::MAX;
    call!(p, tikv.raw_scan(scan), "limit u32::MAX", Served);
    let ranges = vec![range(b"bulk/00001", b"bulk/00003"); 1000];
    let mut batch_scan = req::raw_batch_scan(&ctx, ranges.clone());
    batch_scan.each_limit = u32::MAX;
    let what = "1000 ranges, each_limit u32::MAX";
    call!(p, tikv.raw_batch_scan(batch_scan), what, Served);
    let checksum = req::raw_checksum(&ctx, ranges);
    call!(p, tikv.raw_checksum(checksum), "1000 ranges", Served);
    let delete = req::raw_batch_delete(&ctx, bulk);
    call!(p, tikv.raw_batch_delete(delete), "5000 keys", Served);

    for ttl in [MAX, 1 << 63, MAX / 1000 + 1] {
        let what = format!("ttl {ttl}");
        let key = p.key("ttl");
        let put = RawPutRequest {
            ttl,
            ..req::raw_put(&ctx, &key, b"t")
        };
        if answered_ok(call!(p, tikv.raw_put(put), &what, Any)) {
            p.readable(&key, b"t", &format!("after a RawPut with {what}"))
                .await;
        }
        let key = p.key("ttl");
        let mut put = req::raw_batch_put(&ctx, vec![kv(&key, b"t"), kv(&p.key("ttl"), b"t")]);
        put.ttls = vec![ttl, 0];
        if answered_ok(call!(p, tikv.raw_batch_put(put), &what, Any)) {
            p.readable(&key, b"t", &format!("after a RawBatchPut with {what}"))
                .await;
        }
        let key = p.key("ttl");
        let cas = RawCasRequest {
            ttl,
            ..req::raw_cas(&ctx, &key, b"t")
        };
        if answered_ok(call!(p, tikv.raw_compare_and_swap(cas), &what, Any)) {
            let after = format!("after a RawCompareAndSwap with {what}");
            p.readable(&key, b"t", &after).await;
        }
    }
}

/// Every store method answers a wrong region, epoch or store with that
/// region error, a missing Context with an error, and unknown enum values
/// and extreme hints with some answer.
pub async fn every_store_method_checks_region_epoch_and_store(p: &mut Prober) {
    p.batch = "region, epoch, store and Context";
    let valid = p.ctx.clone();
    let with = |edit: fn(&mut Context)| {
        let mut c = valid.clone();
        edit(&mut c);
        Some(c)
    };
    let region = |kind| Expect::Region(kind);
    let variants: Vec<(&str, Option<Context>, Expect)> = vec![
        (
            "region 987654",
            with(|c| c.region_id = 987_654),
            region(NotFound),
        ),
        ("region 0", with(|c| c.region_id = 0), region(NotFound)),
        (
            "region u64::MAX",
            with(|c| c.region_id = MAX),
            region(NotFound),
        ),
        (
            "epoch version 999",
            with(|c| epoch(c).version = 999),
            region(EpochNotMatch),
        ),
        (
            "epoch version 0",
            with(|c| epoch(c).version = 0),
            region(EpochNotMatch),
        ),
        (
            "a peer on store 4242",
            with(|c| leader(c).store_id = 4242),
            region(StoreNotMatch),
        ),
        ("no Context", None, Refused),
        (
            "api_version V2 on a V1 store",
            with(|c| c.api_version = 2),
            Refused,
        ),
        ("api_version 5", with(|c| c.api_version = 5), Any),
        ("CommandPri 42", with(|c| c.priority = 42), Any),
        (
            "IsolationLevel 9, DiskFullOpt 7",
            with(|c| (c.isolation_level, c.disk_full_opt) = (9, 7)),
            Any,
        ),
        (
            "term, applied_index, buckets_version u64::MAX",
            with(extreme_numbers),
            Any,
        ),
        (
            "max_execution_duration_ms u64::MAX",
            with(|c| c.max_execution_duration_ms = MAX),
            Any,
        ),
        ("10000 resolved and committed locks", with(many_locks), Any),
        (
            "stale_read and replica_read",
            with(|c| (c.stale_read, c.replica_read) = (true, true)),
            Any,
        ),
    ];
    for (what, ctx, expect) in variants {
        let key = p.key("every");
        let ts = p.tso().await;
        for req in every_store_method(&ctx, &key, ts) {
            // UnsafeDestroyRange is store-wide: it names no region.
            let expect = match req {
                StoreReq::UnsafeDestroyRange(_) => Any,
                _ => expect,
            };
            p.send_store(req, &[], what, expect).await;
        }
    }
}

fn epoch(c: &mut Context) -> &mut metapb::RegionEpoch {
    c.region_epoch.get_or_insert_with(Default::default)
}

fn leader(c: &mut Context) -> &mut metapb::Peer {
    c.peer.get_or_insert_with(Default::default)
}

fn extreme_numbers(c: &mut Context) {
    (c.term, c.applied_index, c.buckets_version) = (MAX, MAX, MAX);
    (c.busy_threshold_ms, c.keyspace_id) = (u32::MAX, u32::MAX);
}

fn many_locks(c: &mut Context) {
    c.resolved_locks = (0..10_000).collect();
    c.committed_locks = (0..10_000).rev().collect();
}

const DEADLINE: &str = "x-aaws-deadline-ms";
const ARRIVAL: &str = "x-aaws-arrival-ms";

/// Scheduling headers at the limits of u64 are served; malformed ones are
/// refused naming the header; after a write with a far deadline, later
/// writes still succeed.
pub async fn scheduling_headers_at_their_limits_are_served_or_refused(p: &mut Prober) {
    p.batch = "scheduling headers";
    let ctx = p.ctx();
    // First, alone, the deadline that once broke every later write.
    let far = [(DEADLINE, "9223372036854775808")];
    let put = with_headers(req::raw_put(&ctx, &p.key("hdr"), b"h"), &far);
    let what = "x-aaws-deadline-ms 9223372036854775808";
    call!(p, tikv.raw_put(put), what, Served);
    let after = &format!("a plain write after one with {what}");
    let key = p.key("hdr");
    let put = req::raw_put(&ctx, &key, b"n");
    call!(p, tikv.raw_put(put), after, Served);
    p.readable(&key, b"n", after).await;
    p.recover_if_broken(after).await;

    let served: [&[(&'static str, &str)]; 10] = [
        &[(DEADLINE, "18446744073709551615")],
        &[(DEADLINE, "9223372036854775808")],
        &[(DEADLINE, "9223372036854775807")],
        &[(ARRIVAL, "18446744073709551615")],
        &[(ARRIVAL, "0")],
        &[(ARRIVAL, "0"), (DEADLINE, "1")],
        &[(ARRIVAL, "18446744073709551615"), (DEADLINE, "0")],
        &[(ARRIVAL, "0"), (DEADLINE, "18446744073709551615")],
        &[(DEADLINE, " 42 ")],
        &[("x-aaws-priority", "high"), ("x-aaws-request-id", "r-1")],
    ];
    for headers in served {
        let what = describe_headers(headers);
        for req in raw_writes(&ctx, &p.key("hdr")) {
            p.send_store(req, headers, &what, Served).await;
        }
        let key = p.key("hdr");
        let put = with_headers(req::raw_put(&ctx, &key, b"h"), headers);
        call!(p, tikv.raw_put(put), &what, Served);
        p.readable(&key, b"h", &format!("after a RawPut with {what}"))
            .await;
        let get = with_headers(req::get(&ctx, &key, p.tso().await), headers);
        call!(p, tikv.kv_get(get), &what, Served);
    }
    let refused = [
        (DEADLINE, "soon"),
        (DEADLINE, "18446744073709551616"),
        (DEADLINE, "-1"),
        (DEADLINE, ""),
        (ARRIVAL, "1e3"),
        (ARRIVAL, "0x10"),
        ("x-aaws-priority", "urgent"),
        ("x-aaws-request-id", "a,b"),
        // Quoted in the error: tonic leaves `%` unescaped in a status
        // message, so the client once decoded `%c9` into a byte that is
        // not UTF-8 and saw `Unknown` (found with ROBUSTNESS_SEED=3).
        ("x-aaws-request-id", "%c9\""),
        ("x-aaws-priority", "%ff%fe"),
    ];
    for (name, value) in refused {
        let what = format!("{name}: {value:?}");
        for req in raw_writes(&ctx, &p.key("hdr")) {
            let expect = Expect::InvalidNaming(name);
            p.send_store(req, &[(name, value)], &what, expect).await;
        }
    }
    let mut hinted = p.ctx.clone();
    hinted.max_execution_duration_ms = MAX;
    let hinted = Some(hinted);
    for headers in [&[][..], &[(ARRIVAL, "18446744073709551615")]] {
        let what = format!(
            "max_execution_duration_ms u64::MAX, {}",
            describe_headers(headers)
        );
        for req in raw_writes(&hinted, &p.key("hdr")) {
            p.send_store(req, headers, &what, Served).await;
        }
    }
}

fn describe_headers(headers: &[(&'static str, &str)]) -> String {
    let named: Vec<String> = headers.iter().map(|(n, v)| format!("{n}: {v:?}")).collect();
    named.join(", ")
}

/// The cluster's deadlock detector (this store leads the first region)
/// takes malformed and hostile edges on its Detect stream: no entry, an
/// unknown request type, self-waits, extreme ids, a huge key, a chain of
/// thousands of edges closed into a cycle, undecodable bodies. Each stream
/// is answered and the detector keeps serving.
pub async fn deadlock_detector_takes_hostile_edges(p: &mut Prober) {
    use prost::Message as _;
    use tikal_proto::deadlock::{DeadlockRequest, WaitForEntry};
    const DETECT: &str = "/deadlock.Deadlock/Detect";
    let edge = |tp: i32, txn: u64, wait_for_txn: u64| DeadlockRequest {
        tp,
        entry: Some(WaitForEntry {
            txn,
            wait_for_txn,
            key_hash: txn ^ wait_for_txn,
            key: b"k".to_vec(),
            ..Default::default()
        }),
    };
    let encode = |reqs: Vec<DeadlockRequest>| -> Vec<Vec<u8>> {
        reqs.into_iter().map(|r| r.encode_to_vec()).collect()
    };
    let mut huge = edge(0, 7, 8);
    if let Some(e) = huge.entry.as_mut() {
        e.key = vec![b'k'; HUGE_KEY];
    }
    let chain = 5_000u64;
    let mut long: Vec<DeadlockRequest> = (1..chain).map(|t| edge(0, t, t + 1)).collect();
    long.push(edge(0, chain, 1));
    long.extend((1..=chain).map(|t| edge(2, t, 0)));
    let cases: Vec<(&str, Vec<Vec<u8>>)> = vec![
        (
            "no entry",
            encode(vec![DeadlockRequest { tp: 0, entry: None }]),
        ),
        ("unknown request type 99", encode(vec![edge(99, 1, 2)])),
        (
            "a transaction waiting for itself",
            encode(vec![edge(0, 5, 5), edge(0, 5, 5)]),
        ),
        (
            "ids at 0 and u64::MAX",
            encode(vec![edge(0, 0, MAX), edge(0, MAX, 0), edge(1, MAX, 0)]),
        ),
        ("a key over 8 KiB", encode(vec![huge])),
        (
            "5,000 edges closed into a cycle, then cleaned up",
            encode(long),
        ),
        (
            "undecodable bodies",
            vec![vec![0xff; 16], vec![0x0a, 0xff, 0xff, 0xff, 0xff, 0x0f]],
        ),
    ];
    for (what, bodies) in cases {
        let call = crate::wire::raw_streaming(p.store_channel.clone(), DETECT, bodies);
        p.judge(DETECT, what.to_string(), Any, call).await;
    }
    const ENTRIES: &str = "/deadlock.Deadlock/GetWaitForEntries";
    let call = crate::wire::raw_unary(p.store_channel.clone(), ENTRIES, vec![]);
    p.judge(ENTRIES, "after the hostile edges".into(), Served, call)
        .await;
}

/// `tikvpb.Tikv/CheckLeader` is for stores; a client sending it anything
/// gets an answer and the store keeps serving. One naming the store's own
/// leader is not agreed with (no store vouches for itself).
pub async fn check_leader_takes_hostile_infos(p: &mut Prober) {
    use prost::Message as _;
    use tikal_proto::kvrpcpb::{CheckLeaderRequest, CheckLeaderResponse, LeaderInfo, ReadState};
    const PATH: &str = "/tikvpb.Tikv/CheckLeader";
    let info = |region_id: u64, peer_id: u64, term: u64, safe_ts: u64| LeaderInfo {
        region_id,
        peer_id,
        term,
        region_epoch: p.region.region_epoch.clone(),
        read_state: Some(ReadState {
            applied_index: MAX,
            safe_ts,
        }),
    };
    let leader_peer = p.ctx.peer.as_ref().map_or(0, |l| l.id);
    let own = CheckLeaderRequest {
        regions: (0..64)
            .map(|term| info(p.region.id, leader_peer, term, MAX))
            .collect(),
        ts: MAX,
    };
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("no regions", CheckLeaderRequest::default().encode_to_vec()),
        (
            "unknown regions, ids at 0 and u64::MAX, no epoch",
            CheckLeaderRequest {
                regions: vec![
                    info(0, 0, 0, MAX),
                    info(MAX, MAX, MAX, MAX),
                    LeaderInfo {
                        region_id: p.region.id,
                        ..Default::default()
                    },
                ],
                ts: 0,
            }
            .encode_to_vec(),
        ),
        (
            "100,000 infos",
            CheckLeaderRequest {
                regions: (0..100_000).map(|i| info(i, i, i, i)).collect(),
                ts: 1,
            }
            .encode_to_vec(),
        ),
        ("the store's own leader, every term", own.encode_to_vec()),
        (
            "an undecodable body",
            vec![0x0a, 0xff, 0xff, 0xff, 0xff, 0x0f],
        ),
    ];
    for (what, body) in cases {
        let call = crate::wire::raw_unary(p.store_channel.clone(), PATH, body);
        p.judge(PATH, what.to_string(), Any, call).await;
    }
    let answer = crate::wire::raw_unary(p.store_channel.clone(), PATH, own.encode_to_vec())
        .await
        .expect("CheckLeader answers");
    let answer = CheckLeaderResponse::decode(answer.into_inner().as_slice()).expect("decodes");
    assert!(
        answer.regions.is_empty(),
        "the store agreed with a leader on itself: {answer:?}"
    );
}

/// `tikvpb.Tikv/GetStoreSafeTS` answers any range: inverted, empty on one
/// side, huge keys, or no range at all; and a body that does not decode
/// is refused.
pub async fn store_safe_ts_takes_any_range(p: &mut Prober) {
    use prost::Message as _;
    const PATH: &str = "/tikvpb.Tikv/GetStoreSafeTS";
    let range = |start: &[u8], end: &[u8]| {
        StoreSafeTsRequest {
            key_range: Some(KeyRange {
                start_key: start.to_vec(),
                end_key: end.to_vec(),
            }),
        }
        .encode_to_vec()
    };
    let huge = vec![0xff; HUGE_KEY];
    let cases: Vec<(&str, Vec<u8>, Expect)> = vec![
        (
            "no range",
            StoreSafeTsRequest::default().encode_to_vec(),
            Served,
        ),
        ("inverted", range(b"z", b"a"), Served),
        ("open end", range(b"m", b""), Served),
        ("keys over 8 KiB", range(&huge, &huge), Served),
        (
            "an undecodable body",
            vec![0x0a, 0xff, 0xff, 0xff, 0xff, 0x0f],
            Any,
        ),
    ];
    for (what, body, expect) in cases {
        let call = crate::wire::raw_unary(p.store_channel.clone(), PATH, body);
        p.judge(PATH, what.to_string(), expect, call).await;
    }
}
