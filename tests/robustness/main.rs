//! Hostile input never takes a server down.
//!
//! One real cluster (PD + one store) gets malformed and hostile-but-well-
//! formed requests on every method it serves — `tikvpb.Tikv`, `pdpb.PD`
//! (its Tso and RegionHeartbeat streams included), `keyspacepb.Keyspace`
//! and the store's `deadlock.Deadlock`, `CheckLeader` and `GetStoreSafeTS`
//! — batch by batch: keys over 8 KiB and empty keys, inverted ranges,
//! timestamps and TTLs at 0 and u64::MAX, unknown enum values, wrong
//! regions, epochs and stores, scheduling headers at their limits, then
//! seeded random requests and raw-byte bodies for every method.
//!
//! Every request must be answered within [`CALL_TIMEOUT`]: with an error
//! value (`region_error`, `error`, `errors`, a PD header error), a status a
//! client can act on (`InvalidArgument`; `FailedPrecondition` for a foreign
//! cluster id; `OutOfRange` / `ResourceExhausted` for a message over the
//! size limit), or a success; many cases require one in particular. After
//! each batch both servers must still serve: a raw write and read, a
//! transaction through the official client that commits and reads back,
//! PD members, TSO and routing.
//!
//! Misbehaviour is collected, not fatal, so one run lists all of it: the
//! panic text a server printed is attached to the request that caused it, a
//! server left broken is restarted and the survey goes on, and the test
//! fails at the end with the whole list.
//!
//! The batches live by what they probe: [`store`] (keys, raw column
//! families, regions, scheduling headers), [`txn`] (timestamps, prewrite,
//! corrupt MVCC data), [`pd`] (PD, Keyspace, TSO, region heartbeats, GC),
//! [`random`] (seeded requests and bodies, drawn from [`values`]). The
//! requests themselves are in [`requests`], how the streams and raw bodies
//! are sent in [`wire`], and what an answer must be in [`judge`]. The
//! cluster, its clients and the findings are the [`prober::Prober`], which
//! [`liveness`] checks between batches.

#[path = "../common/mod.rs"]
mod common;

use std::time::{Duration, Instant};

/// Calls `tikvpb.Tikv`, `pdpb.PD` or `keyspacepb.Keyspace` (the client
/// field of [`prober::Prober`]) through [`prober::Prober::judge`]; yields
/// the answer, if any.
macro_rules! call {
    ($p:expr, $client:ident.$method:ident($req:expr), $what:expr, $expect:expr) => {{
        let what = $what.to_string();
        let req = $req;
        let mut client = $p.$client.clone();
        let call = async move { client.$method(req).await };
        $p.judge(stringify!($method), what, $expect, call).await
    }};
}

mod judge;
mod liveness;
mod pd;
mod prober;
mod random;
mod requests;
mod store;
mod txn;
mod values;
mod wire;

use prober::Prober;

/// Longest a server may take to answer one request.
const CALL_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest a liveness check (a whole transaction) may take.
const CHECK_TIMEOUT: Duration = Duration::from_secs(20);
/// The random batches' seed; `ROBUSTNESS_SEED` (decimal) replaces it, for a
/// longer survey outside CI.
fn seed() -> u64 {
    env_number("ROBUSTNESS_SEED").unwrap_or(0x7469_6b61_6c21)
}

/// Random typed requests per method (`ROBUSTNESS_REQUESTS` replaces it),
/// then a third as many random raw-byte bodies.
fn random_requests() -> usize {
    env_number("ROBUSTNESS_REQUESTS").map_or(150, |n| n as usize)
}

fn random_bodies() -> usize {
    random_requests() / 3
}

fn env_number(name: &str) -> Option<u64> {
    let v = std::env::var(name).ok()?;
    Some(
        v.parse()
            .unwrap_or_else(|_| panic!("{name} must be a number, not {v:?}")),
    )
}

/// One byte over the store's key size limit (TiKV's `max-key-size`, 8 KiB).
const HUGE_KEY: usize = 8 * 1024 + 1;
const MAX: u64 = u64::MAX;

#[tokio::test(flavor = "multi_thread")]
async fn hostile_requests_get_answers_and_both_servers_keep_serving() {
    let started = Instant::now();
    let mut p = Prober::start().await;
    p.check_servers().await;

    store::every_store_method_refuses_bad_keys_and_inverted_ranges(&mut p).await;
    p.check_servers().await;
    store::raw_methods_refuse_bad_cfs_and_oversized_writes(&mut p).await;
    p.check_servers().await;
    store::raw_methods_serve_extreme_ttls_and_limits(&mut p).await;
    p.check_servers().await;
    txn::transactional_methods_survive_extreme_timestamps(&mut p).await;
    p.check_servers().await;
    txn::prewrite_refuses_unknown_ops_and_oversized_batches(&mut p).await;
    p.check_servers().await;
    txn::transactional_reads_survive_garbage_in_lock_and_write_cfs(&mut p).await;
    p.check_servers().await;
    store::every_store_method_checks_region_epoch_and_store(&mut p).await;
    p.check_servers().await;
    store::scheduling_headers_at_their_limits_are_served_or_refused(&mut p).await;
    p.check_servers().await;
    store::deadlock_detector_takes_hostile_edges(&mut p).await;
    p.check_servers().await;
    store::check_leader_takes_hostile_infos(&mut p).await;
    p.check_servers().await;
    store::store_safe_ts_takes_any_range(&mut p).await;
    p.check_servers().await;
    pd::pd_refuses_malformed_and_hostile_requests(&mut p).await;
    p.check_servers().await;
    pd::pd_tso_hands_out_only_batches_it_reserved(&mut p).await;
    p.check_servers().await;
    pd::region_heartbeats_that_are_stale_or_malformed_do_not_reroute(&mut p).await;
    p.check_servers().await;
    pd::gc_at_the_largest_safe_point_is_survived(&mut p).await;
    p.check_servers().await;
    random::random_store_requests_get_answers(&mut p).await;
    p.check_servers().await;
    random::random_pd_requests_get_answers(&mut p).await;
    p.check_servers().await;
    pd::a_stale_split_report_cannot_wedge_pd_routing(&mut p).await;
    p.check_servers().await;

    p.finish(started);
}
