//! Transactional store batches: Percolator's methods at timestamps, TTLs
//! and sizes at their extremes, prewrites with unknown ops and enum values,
//! and reads over corrupt MVCC data that raw writes put into CF lock and CF
//! write.

use tikal_proto::kvrpcpb::*;

use crate::judge::Expect::{self, Any, CorruptionOk, Invalid, Refused, Region, Served};
use crate::judge::RegionErr::{EntryTooLarge, InvalidMaxTs};
use crate::prober::Prober;
use crate::requests::{every_store_method, lock_mutation, put_mutation, req, Shape};
use crate::{HUGE_KEY, MAX};

/// Transactional methods answer timestamps and TTLs at 0 and u64::MAX;
/// commits at or below the start are refused and commit nothing; a lock
/// wait that would never end still gets an answer.
pub async fn transactional_methods_survive_extreme_timestamps(p: &mut Prober) {
    p.batch = "transactional timestamps";
    let ctx = p.ctx();
    let ts = p.tso().await;

    // A lock that never expires, for the methods that look at locks.
    let locked = p.key("txn");
    let pw = |key: &[u8], start_ts, ttl| req::prewrite(&ctx, key, start_ts, ttl);
    let lock = pw(&locked, ts, MAX);
    call!(p, tikv.kv_prewrite(lock), "lock_ttl u64::MAX", Any);
    for version in [MAX, 0, 1 << 63] {
        let what = format!("version {version}");
        call!(p, tikv.kv_get(req::get(&ctx, &locked, version)), &what, Any);
        let get = req::batch_get(&ctx, vec![locked.clone(), p.key("txn")], version);
        call!(p, tikv.kv_batch_get(get), &what, Any);
        let mut scan = req::scan(&ctx, b"txn/", b"txn0", version);
        (scan.limit, scan.sample_step) = (u32::MAX, u32::MAX);
        let what = format!("{what}, limit and sample_step u32::MAX");
        call!(p, tikv.kv_scan(scan), what, Any);
    }
    // A read far above PD's time is refused, and none of the reads above
    // raised max_ts with it: an async-commit prewrite still commits within
    // max-drift (60 s) of PD's time, not near u64::MAX.
    let far = req::get(&ctx, &locked, MAX - 1);
    call!(
        p,
        tikv.kv_get(far),
        "version u64::MAX - 1",
        Region(InvalidMaxTs)
    );
    let mut after = pw(&p.key("ac"), ts, 3000);
    async_commit(&mut after);
    let what = "async commit after reads far ahead";
    if let Some(r) = call!(p, tikv.kv_prewrite(after), what, Served) {
        let now = p.tso().await;
        let problem = format!("min_commit_ts {} with PD at {now}", r.min_commit_ts);
        let near = r.min_commit_ts > ts && r.min_commit_ts <= now + (60_000 << 18);
        p.require(near, "kv_prewrite", what, problem);
    }
    let absent: Vec<_> = (0..5000).map(|_| p.key("absent")).collect();
    let get = req::batch_get(&ctx, absent, ts);
    call!(p, tikv.kv_batch_get(get), "5000 absent keys", Served);

    type Edit = fn(&mut PrewriteRequest);
    let cases: [(&str, u64, u64, Edit, Expect); 11] = [
        ("start_version 0", 0, 3000, |_| {}, Any),
        ("start_version u64::MAX", MAX, 3000, |_| {}, Any),
        ("start_version and lock_ttl u64::MAX", MAX, MAX, |_| {}, Any),
        ("a primary over 8 KiB", ts, 3000, huge_primary, Any),
        ("no mutations", ts, 3000, |r| r.mutations.clear(), Any),
        (
            "a pessimistic check, no pessimistic lock",
            ts,
            3000,
            pessimistic_check,
            Refused,
        ),
        (
            "async commit, min and max_commit_ts u64::MAX",
            ts,
            3000,
            async_commit_at_max,
            Any,
        ),
        (
            "async commit, max_commit_ts 1",
            ts,
            3000,
            async_commit_by_1,
            Any,
        ),
        (
            "async commit at start_version u64::MAX - 1",
            MAX - 1,
            3000,
            async_commit,
            Any,
        ),
        (
            "1PC at start_version u64::MAX",
            MAX,
            3000,
            |r| r.try_one_pc = true,
            Any,
        ),
        (
            "1PC, max_commit_ts and txn_size u64::MAX",
            ts,
            3000,
            one_pc_at_max,
            Any,
        ),
    ];
    for (what, start_ts, ttl, edit, expect) in cases {
        let mut req = pw(&p.key("pw"), start_ts, ttl);
        edit(&mut req);
        call!(p, tikv.kv_prewrite(req), what, expect);
    }

    // Commits at or below the start are refused and commit nothing.
    let key = p.key("commit");
    let lock = pw(&key, ts, 60_000);
    call!(p, tikv.kv_prewrite(lock), "a plain prewrite", Served);
    for (what, start, commit) in [
        ("commit_version == start_version", ts, ts),
        ("commit_version < start_version", ts, ts - 1),
        ("commit_version 0", ts, 0),
        ("start and commit u64::MAX", MAX, MAX),
    ] {
        let commit = req::commit(&ctx, &key, start, commit);
        call!(p, tikv.kv_commit(commit), what, Refused);
    }
    let now = p.tso().await;
    let what = "a key whose commits were refused";
    if let Some(r) = call!(p, tikv.kv_get(req::get(&ctx, &key, now)), what, Any) {
        let visible = "its value is visible".into();
        p.require(r.value.is_empty(), "kv_get", what, visible);
    }
    let commit = req::commit(&ctx, &p.key("commit"), 0, MAX);
    let what = "no lock, commit u64::MAX";
    call!(p, tikv.kv_commit(commit), what, Refused);

    // Locks inspected and resolved at extreme timestamps.
    for (at, now) in [("u64::MAX", MAX), ("0", 0)] {
        let cleanup = req::cleanup(&ctx, &locked, ts, now);
        call!(p, tikv.kv_cleanup(cleanup), format!("current_ts {at}"), Any);
        let check = req::check_txn_status(&ctx, &locked, ts, now, now);
        let what = format!("caller and current ts {at}");
        call!(p, tikv.kv_check_txn_status(check), what, Any);
    }
    for lock_ts in [MAX, 0] {
        let mut check = req::check_txn_status(&ctx, &p.key("txn"), lock_ts, MAX, MAX);
        check.rollback_if_not_exist = true;
        let what = format!("lock_ts {lock_ts}, absent");
        call!(p, tikv.kv_check_txn_status(check), what, Any);
    }
    for start in [MAX, 0, ts] {
        let what = format!("start_version {start}");
        let rollback = req::batch_rollback(&ctx, vec![p.key("rb")], start);
        call!(p, tikv.kv_batch_rollback(rollback), &what, Any);
        let check = req::check_secondary_locks(&ctx, vec![locked.clone()], start);
        call!(p, tikv.kv_check_secondary_locks(check), &what, Any);
        let heart_beat = req::txn_heart_beat(&ctx, &locked, start, MAX);
        let what = format!("{what}, advise_lock_ttl u64::MAX");
        call!(p, tikv.kv_txn_heart_beat(heart_beat), what, Any);
    }
    let many: Vec<_> = (0..5000).map(|_| p.key("absent")).collect();
    let check = req::check_secondary_locks(&ctx, many, ts);
    call!(p, tikv.kv_check_secondary_locks(check), "5000 keys", Any);
    for (what, start, commit) in [
        ("commit below start", ts + 5, ts + 4),
        ("commit u64::MAX", ts + 6, MAX),
    ] {
        let key = p.key("resolve");
        let lock = pw(&key, start, 60_000);
        call!(p, tikv.kv_prewrite(lock), "a lock to resolve", Any);
        let resolve = req::resolve_lock(&ctx, vec![key], start, commit);
        call!(p, tikv.kv_resolve_lock(resolve), what, Any);
    }
    let mut resolve = req::resolve_lock(&ctx, vec![], 0, 0);
    let info = |i| TxnInfo {
        txn: MAX - i,
        status: MAX,
    };
    resolve.txn_infos = (0..5000).map(info).collect();
    let what = "5000 txn_infos, status u64::MAX, no keys";
    call!(p, tikv.kv_resolve_lock(resolve), what, Any);
    for max_version in [MAX, 0] {
        let mut scan = req::scan_lock(&ctx, b"", b"", max_version);
        scan.limit = u32::MAX;
        let what = format!("max_version {max_version}, limit u32::MAX");
        call!(p, tikv.kv_scan_lock(scan), what, Served);
    }

    // Pessimistic locks on a key locked for ever: every wait ends in an answer.
    for wait in [i64::MAX, i64::MIN, 0] {
        let lock = req::pessimistic_lock(&ctx, &locked, ts + 1, ts + 1, wait);
        let what = format!("a lock for ever, wait_timeout {wait}");
        call!(p, tikv.kv_pessimistic_lock(lock), what, Refused);
    }
    let mut lock = req::pessimistic_lock(&ctx, &p.key("pl"), ts, MAX, -1);
    (lock.lock_ttl, lock.min_commit_ts) = (MAX, MAX);
    let what = "for_update_ts, lock_ttl, min_commit_ts u64::MAX";
    call!(p, tikv.kv_pessimistic_lock(lock), what, Any);
    let lock = req::pessimistic_lock(&ctx, &p.key("pl"), MAX, MAX, -1);
    let what = "start_version u64::MAX";
    call!(p, tikv.kv_pessimistic_lock(lock), what, Any);
    let mut lock = req::pessimistic_lock(&ctx, &p.key("pl"), ts, ts, -1);
    lock.mutations = (0..5000).map(|_| lock_mutation(&p.key("pl"))).collect();
    (lock.return_values, lock.check_existence) = (true, true);
    (lock.lock_only_if_exists, lock.wake_up_mode) = (true, 9);
    let what = "5000 keys, every option, wake_up_mode 9";
    call!(p, tikv.kv_pessimistic_lock(lock), what, Any);
    for (start, for_update) in [(ts, MAX), (MAX, MAX)] {
        let rollback = req::pessimistic_rollback(&ctx, vec![p.key("pl")], start, for_update);
        let what = format!("start_version {start}, for_update_ts {for_update}");
        call!(p, tikv.kv_pessimistic_rollback(rollback), &what, Any);
    }
    for safe_point in [MAX, 0] {
        let what = format!("safe_point {safe_point}");
        call!(p, tikv.kv_gc(req::gc(&ctx, safe_point)), what, Any);
    }
    let mut delete_range = req::delete_range(&ctx, b"dr/z", b"dr/a");
    delete_range.notify_only = true;
    let what = "start after end, notify_only";
    call!(p, tikv.kv_delete_range(delete_range), what, Any);
    let destroy = req::unsafe_destroy_range(&ctx, b"dr/a", b"dr/z");
    let what = "a proper range";
    call!(p, tikv.unsafe_destroy_range(destroy), what, Served);
}

fn huge_primary(r: &mut PrewriteRequest) {
    r.primary_lock = vec![b'h'; HUGE_KEY];
}

fn pessimistic_check(r: &mut PrewriteRequest) {
    (r.pessimistic_actions, r.for_update_ts) = (vec![1], MAX);
}

fn async_commit(r: &mut PrewriteRequest) {
    r.use_async_commit = true;
}

fn async_commit_at_max(r: &mut PrewriteRequest) {
    (r.use_async_commit, r.min_commit_ts, r.max_commit_ts) = (true, MAX, MAX);
}

fn async_commit_by_1(r: &mut PrewriteRequest) {
    (r.use_async_commit, r.max_commit_ts) = (true, 1);
}

fn one_pc_at_max(r: &mut PrewriteRequest) {
    (r.try_one_pc, r.max_commit_ts, r.txn_size) = (true, MAX, MAX);
}

/// Prewrite refuses unknown mutation ops and locks nothing for them,
/// refuses batches over the Raft entry limit, serves thousands of
/// mutations, and answers unknown enum values and out-of-range indexes.
pub async fn prewrite_refuses_unknown_ops_and_oversized_batches(p: &mut Prober) {
    p.batch = "prewrite ops and sizes";
    let ctx = p.ctx();
    let ts = p.tso().await;
    for op in [99, -1, i32::MAX] {
        let key = p.key("op");
        let mut pw = req::prewrite(&ctx, &key, ts, 60_000);
        pw.mutations[0].op = op;
        let what = format!("Mutation.op {op}");
        call!(p, tikv.kv_prewrite(pw), what, Refused);
        let now = p.tso().await;
        let what = format!("a key prewritten with op {op}");
        if let Some(r) = call!(p, tikv.kv_get(req::get(&ctx, &key, now)), &what, Served) {
            p.require(r.not_found, "kv_get", &what, "a value is visible".into());
        }
    }
    // Each case edits a fresh prewrite of one key at `ts`, lock TTL 3 s.
    let mut cases = vec![];
    let mut case = |p: &mut Prober, what: String, edit: &dyn Fn(&mut PrewriteRequest), expect| {
        let mut pw = req::prewrite(&ctx, &p.key("op"), ts, 3000);
        edit(&mut pw);
        cases.push((what, pw, expect));
    };
    use Op::*;
    for op in [Rollback, PessimisticLock, Lock, Insert, CheckNotExists] {
        let expect = if op == CheckNotExists { Served } else { Any };
        let what = format!("Mutation.op {op:?} on an absent key");
        case(p, what, &|pw| pw.mutations[0].op = op as i32, expect);
    }
    let odd_assertion = |pw: &mut PrewriteRequest| {
        (pw.mutations[0].assertion, pw.assertion_level) = (7, 9);
    };
    case(
        p,
        "Assertion 7, AssertionLevel 9".into(),
        &odd_assertion,
        Any,
    );
    case(
        p,
        "PessimisticAction 9".into(),
        &|pw| pw.pessimistic_actions = vec![9],
        Any,
    );
    let three_actions = |pw: &mut PrewriteRequest| {
        (pw.pessimistic_actions, pw.for_update_ts) = (vec![1, 1, 1], ts);
    };
    case(
        p,
        "3 pessimistic_actions for 1 mutation".into(),
        &three_actions,
        Any,
    );
    for index in [1000, u32::MAX] {
        let constraint = |pw: &mut PrewriteRequest| {
            (pw.pessimistic_actions, pw.for_update_ts) = (vec![2], ts);
            let expected_for_update_ts = ts;
            let constraint = prewrite_request::ForUpdateTsConstraint {
                index,
                expected_for_update_ts,
            };
            pw.for_update_ts_constraints = vec![constraint];
        };
        let what = format!("ForUpdateTsConstraint.index {index}, 1 mutation");
        case(p, what, &constraint, Any);
    }
    let secondaries = |pw: &mut PrewriteRequest| {
        pw.use_async_commit = true;
        pw.secondaries = (0..10_000)
            .map(|i| format!("sec/{i}").into_bytes())
            .collect();
    };
    case(
        p,
        "async commit with 10000 secondaries".into(),
        &secondaries,
        Any,
    );
    let twice = |pw: &mut PrewriteRequest| {
        let key = pw.primary_lock.clone();
        let del = Mutation {
            op: Del as i32,
            key,
            ..Default::default()
        };
        pw.mutations.push(del);
    };
    case(p, "the same key twice, Put and Del".into(), &twice, Any);
    let huge = |pw: &mut PrewriteRequest| {
        pw.mutations.push(put_mutation(&vec![b'h'; HUGE_KEY], b"v"));
    };
    case(
        p,
        "a key over 8 KiB after a good one".into(),
        &huge,
        Invalid,
    );
    for (what, pw, expect) in cases {
        call!(p, tikv.kv_prewrite(pw), &what, expect);
    }

    // Thousands of mutations: served, committed, readable.
    let keys: Vec<Vec<u8>> = (0..5000)
        .map(|i| format!("many/{ts}/{i:05}").into_bytes())
        .collect();
    let mut pw = req::prewrite(&ctx, &keys[0], ts, 60_000);
    pw.mutations = keys.iter().map(|k| put_mutation(k, b"m")).collect();
    call!(p, tikv.kv_prewrite(pw), "5000 mutations", Served);
    let mut commit = req::commit(&ctx, &keys[0], ts, p.tso().await);
    commit.keys = keys;
    call!(p, tikv.kv_commit(commit), "5000 keys", Served);
    let prefix = format!("many/{ts}/").into_bytes();
    let what = "a committed 5000-key transaction";
    let scan = req::scan(&ctx, &prefix, b"", p.tso().await);
    if let Some(r) = call!(p, tikv.kv_scan(scan), what, Served) {
        let n = r.pairs.len();
        p.require(n == 10, "kv_scan", what, format!("{n} pairs of 10"));
    }

    // Over the Raft entry limit: refused, and nothing is locked.
    let mut pw = req::prewrite(&ctx, b"big/0", ts, 60_000);
    let value = vec![b'b'; 8 << 10];
    let big = |i| put_mutation(format!("big/{i}").as_bytes(), &value);
    pw.mutations = (0..1100).map(big).collect();
    let what = "1100 mutations of 8 KiB";
    call!(p, tikv.kv_prewrite(pw), what, Expect::Region(EntryTooLarge));
    let what = "locks left by a refused 9 MiB prewrite";
    let scan = req::scan_lock(&ctx, b"big/", b"big0", MAX);
    if let Some(r) = call!(p, tikv.kv_scan_lock(scan), what, Served) {
        let n = r.locks.len();
        p.require(n == 0, "kv_scan_lock", what, format!("{n} locks"));
    }
}

/// Raw writes may put anything into CF lock and CF write (both are raw
/// column families in API V1); transactional requests that then meet it
/// answer, with errors if they must (`Internal` naming the corruption is
/// fair: the data is bad, not the request), and never panic. Then the
/// garbage goes, and the lock CF reads clean again.
pub async fn transactional_reads_survive_garbage_in_lock_and_write_cfs(p: &mut Prober) {
    p.batch = "garbage in CF lock and CF write";
    let ctx = p.ctx();
    let ts = p.tso().await;
    let keys: Vec<Vec<u8>> = (0..4)
        .map(|i| format!("garbage/{i}").into_bytes())
        .collect();
    let garbage = [
        ("lock", b"garbage/raw".to_vec(), vec![0]),
        ("write", b"garbage/raw".to_vec(), vec![0xff, 0xff]),
        ("lock", txn_key(&keys[0]), [&b"P"[..], &[0xff; 10]].concat()),
        ("lock", txn_key(&keys[1]), vec![]),
        ("write", versioned(&keys[2], ts), b"P\x80".to_vec()),
        ("write", versioned(&keys[3], ts), b"X".to_vec()),
        ("default", versioned(&keys[3], ts - 1), b"v".to_vec()),
    ];
    for (cf, key, value) in garbage {
        let mut put = req::raw_put(&ctx, &key, &value);
        put.cf = cf.into();
        let what = format!("garbage into CF {cf}");
        call!(p, tikv.raw_put(put), what, Served);
    }
    let now = p.tso().await;
    for key in &keys {
        let what = format!("{} over garbage", String::from_utf8_lossy(key));
        for req in every_store_method(&ctx, key, now) {
            let keyed = !matches!(req.shape(), Shape::Region | Shape::Range);
            if keyed && !req.is_raw() {
                p.send_store(req, &[], &what, CorruptionOk).await;
            }
        }
    }
    for req in every_store_method(&ctx, b"garbage/", now) {
        if req.shape() == Shape::Range && !req.is_raw() {
            let req = req.with_range(b"garbage/", b"garbage0");
            p.send_store(req, &[], "a range holding garbage", CorruptionOk)
                .await;
        }
    }
    let what = "a region holding garbage";
    // KvGC runs only up to PD's GC safe point: raise it to `now` first.
    let update = tikal_proto::pdpb::UpdateGcSafePointRequest {
        header: p.header.clone(),
        safe_point: now,
    };
    call!(p, pd.update_gc_safe_point(update), "safe point now", Any);
    call!(p, tikv.kv_gc(req::gc(&ctx, now)), what, CorruptionOk);
    let resolve = req::resolve_lock(&ctx, vec![], ts, now);
    call!(p, tikv.kv_resolve_lock(resolve), what, CorruptionOk);

    for cf in ["lock", "write", "default"] {
        let mut delete = req::raw_delete_range(&ctx, b"garbage/", b"garbage0");
        delete.cf = cf.into();
        let what = format!("garbage out of CF {cf}");
        call!(p, tikv.raw_delete_range(delete), what, Served);
    }
    let mut scan = req::scan_lock(&ctx, b"", b"", MAX);
    scan.limit = u32::MAX;
    let what = "every lock, with the garbage gone";
    call!(p, tikv.kv_scan_lock(scan), what, Served);
}

/// A user key as CF lock and CF write hold it: memcomparable, 8-byte groups
/// each followed by 0xFF minus the group's zero padding.
fn txn_key(key: &[u8]) -> Vec<u8> {
    let whole = key.len().is_multiple_of(8).then_some(&[][..]);
    let mut out = vec![];
    for group in key.chunks(8).chain(whole) {
        let pad = 8 - group.len();
        out.extend_from_slice(group);
        out.extend(std::iter::repeat_n(0, pad));
        out.push(0xff - pad as u8);
    }
    out
}

/// A version of `key` at `ts` in CF write or CF default: `!ts` big-endian
/// after the encoded key, so newer versions sort first.
fn versioned(key: &[u8], ts: u64) -> Vec<u8> {
    [txn_key(key), (!ts).to_be_bytes().to_vec()].concat()
}
