//! Faults on real processes while the cluster splits, merges and moves
//! regions by itself: 1 PD and 4 stores (3 replicas each) with TiKV's
//! client-suite store settings, so regions split every few keys, and PD
//! settings that merge emptied regions and rebuild a store's replicas
//! elsewhere after a few seconds down.
//!
//! A seeded nemesis, one fault at a time: kill -9 of a store and its
//! restart seconds later, SIGSTOP and SIGCONT of a store (a partition of
//! all its peers), or a leader moved by a PD operator. Meanwhile the bank
//! runs (optimistic and pessimistic transfers, snapshot reads of the
//! total) and raw writers put keys and, every few keys, delete their older
//! ones with delete_range, so emptied regions merge.
//!
//! At the end, with every store up again:
//! - the bank's checks (total, every acknowledged transfer applied once);
//! - every acknowledged raw put reads back, unless an acknowledged
//!   delete_range covered it, and nothing so deleted comes back;
//! - the stores are stopped and their engines compared offline: every
//!   replica of every region holds the same data in the region's range
//!   (every column family), and no store holds data of a region it has no
//!   replica of.
//!
//! `TIKAL_NEMESIS_SECS` (default 40) sets how long faults go on and
//! `TIKAL_NEMESIS_SEED` picks the schedule (printed at the start). Real
//! timing decides the interleaving, so a seed does not replay exactly.
//!
//! `scripts/test` runs the default seed; a survey runs many, e.g.
//! `TIKAL_NEMESIS_SEED=41 TIKAL_NEMESIS_SECS=60 cargo test --test nemesis
//! -- --nocapture` with `TIKAL_KEEP_TEST_DIRS=1` to keep a failure's logs
//! and engines (docs/robustness.md).

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use common::{bank, eventually, eventually_ok, get_json, hex_key, regions, transfer_leader};
use common::{TestCluster, CLIENT_SUITE_STORE_CONFIG};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tikal_engine::{KvEngine, CF_DEFAULT, CF_LOCK, CF_WRITE};

const STORES: usize = 4;
const WRITERS: usize = 3;
/// A writer deletes its older keys every this many puts...
const DELETE_EVERY: u64 = 40;
/// ...keeping this many.
const KEEP: u64 = 10;
const CALL_TIMEOUT: Duration = Duration::from_secs(10);
const WAIT: Duration = Duration::from_secs(120);

const PD_CONFIG: &str = r#"
[schedule]
max-store-down-time = "4s"
split-merge-interval = "0s"
max-merge-region-keys = 3
max-merge-region-size = 1
merge-schedule-limit = 16
"#;

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok()?.parse().ok()
}

/// Raw keys are stored memcomparable-encoded, as transactional keys are:
/// the split checker cuts regions at them, and the transactional client
/// must be able to decode every region boundary. (With API V1 raw and
/// transactional data do not otherwise share a cluster, as upstream.)
fn raw_key(writer: usize, seq: u64) -> Vec<u8> {
    tikal_codec::mvcc_key::encode_key(format!("nem/{writer}/{seq:07}").as_bytes())
}

fn raw_value(writer: usize, seq: u64) -> String {
    format!("value of {writer}/{seq}")
}

/// What one raw writer did.
#[derive(Default)]
struct RawLog {
    /// Puts acknowledged, by sequence number.
    acked: Vec<u64>,
    /// Puts that failed or timed out: applied or not, perhaps later.
    unknown: Vec<u64>,
    /// Every key below this sequence number was deleted by an
    /// acknowledged delete_range.
    deleted_below: u64,
    last: u64,
}

async fn raw_writer(c: tikv_client::RawClient, w: usize, until: Instant) -> RawLog {
    let mut log = RawLog {
        deleted_below: 1,
        ..RawLog::default()
    };
    while Instant::now() < until {
        log.last += 1;
        let seq = log.last;
        match tokio::time::timeout(CALL_TIMEOUT, c.put(raw_key(w, seq), raw_value(w, seq))).await {
            Ok(Ok(())) => log.acked.push(seq),
            _ => log.unknown.push(seq),
        }
        if seq.is_multiple_of(DELETE_EVERY) {
            // delete_range is idempotent: retried until acknowledged.
            let upto = seq - KEEP;
            let range = raw_key(w, log.deleted_below)..raw_key(w, upto);
            let deadline = until + WAIT;
            loop {
                let call = c.delete_range(range.clone());
                match tokio::time::timeout(CALL_TIMEOUT, call).await {
                    Ok(Ok(())) => break,
                    Ok(Err(e)) if Instant::now() > deadline => {
                        panic!("writer {w}: delete_range {range:?} never succeeded: {e}")
                    }
                    _ => tokio::time::sleep(Duration::from_millis(100)).await,
                }
            }
            log.deleted_below = upto;
        }
    }
    log
}

/// Sends `signal` to store `i`'s process.
fn signal(t: &TestCluster, i: usize, signal: i32) {
    let pid = t.cluster.store_pid(i).expect("store is running");
    // SAFETY: kill(2) on a child process id we spawned; no memory involved.
    let rc = unsafe { libc::kill(pid as i32, signal) };
    assert_eq!(rc, 0, "signal {signal} to store {i}");
}

async fn pause(rng: &mut StdRng, millis: std::ops::Range<u64>) {
    tokio::time::sleep(Duration::from_millis(rng.gen_range(millis))).await;
}

/// One fault at a time until `until`; every store runs again when it
/// returns. Returns what it did, for the test's output.
async fn nemesis(t: &mut TestCluster, seed: u64, until: Instant) -> Vec<String> {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut did = vec![];
    while Instant::now() < until {
        pause(&mut rng, 500..2_000).await;
        let i = rng.gen_range(0..STORES);
        match rng.gen_range(0..3) {
            0 => {
                t.cluster.kill_store(i);
                pause(&mut rng, 1_000..7_000).await;
                t.cluster.start_store(i).expect("restart store");
                did.push(format!("kill -9 store {i}"));
            }
            1 => {
                signal(t, i, libc::SIGSTOP);
                pause(&mut rng, 1_000..5_000).await;
                signal(t, i, libc::SIGCONT);
                did.push(format!("SIGSTOP store {i}"));
            }
            _ => {
                let url = format!("{}/pd/api/v1/regions", t.cluster.pd_url());
                let all = get_json(&url).await;
                let Some(list) = all["regions"].as_array().filter(|l| !l.is_empty()) else {
                    continue;
                };
                let region = &list[rng.gen_range(0..list.len())];
                let peers: Vec<u64> = (region["peers"].as_array().into_iter().flatten())
                    .filter_map(|p| p["store_id"].as_u64())
                    .collect();
                let (Some(id), false) = (region["id"].as_u64(), peers.is_empty()) else {
                    continue;
                };
                let to = peers[rng.gen_range(0..peers.len())];
                if transfer_leader(t, id, to).await {
                    did.push(format!("leader of region {id} to store {to}"));
                }
            }
        }
    }
    did
}

/// Checks every raw key a writer touched against what it was told.
async fn check_raw(t: &TestCluster, c: &tikv_client::RawClient, w: usize, log: &RawLog) {
    let acked: std::collections::HashSet<u64> = log.acked.iter().copied().collect();
    let seqs: Vec<u64> = (1..=log.last).collect();
    for chunk in seqs.chunks(200) {
        let keys: Vec<Vec<u8>> = chunk.iter().map(|s| raw_key(w, *s)).collect();
        let found: BTreeMap<Vec<u8>, Vec<u8>> =
            eventually_ok(t, WAIT, "batch_get of raw keys", || {
                c.batch_get(keys.clone())
            })
            .await
            .into_iter()
            .map(|p| (Vec::from(p.key().clone()), p.value().clone()))
            .collect();
        for &seq in chunk {
            let key = raw_key(w, seq);
            let got = found.get(&key);
            if let Some(v) = got {
                assert_eq!(v, raw_value(w, seq).as_bytes(), "value of {w}/{seq}");
            }
            if !acked.contains(&seq) {
                continue;
            }
            if seq < log.deleted_below {
                assert!(
                    got.is_none(),
                    "{w}/{seq} was deleted (acknowledged) but is back"
                );
            } else {
                assert!(got.is_some(), "acknowledged put of {w}/{seq} is lost");
            }
        }
    }
}

/// Asks PD to schedule nothing more but repairs (a move cut short may
/// leave a region a replica too many, which the replica checker removes),
/// then waits until no operator runs, the region map stays the same
/// across a second's polls, and no store holds a peer PD does not count.
async fn quiesce(t: &TestCluster) -> Vec<serde_json::Value> {
    common::stop_scheduling(t).await;
    let operators = format!("{}/pd/api/v1/operators", t.cluster.pd_url());
    let shape = |rs: &[serde_json::Value]| -> Vec<String> {
        (rs.iter())
            .map(|r| format!("{} {} {}", r["id"], r["epoch"], r["leader"]))
            .collect()
    };
    let deadline = Instant::now() + WAIT;
    let mut last: Option<Vec<String>> = None;
    let mut leftover = String::new();
    loop {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let running = get_json(&operators).await;
        let now = regions(t, 3).await;
        if Instant::now() > deadline {
            let all = get_json(&format!("{}/pd/api/v1/regions", t.cluster.pd_url())).await;
            panic!(
                "no quiet cluster within {WAIT:?}: operators {running}; \
                 regions with 3 voters and a leader, covering the key space: {}; \
                 peers PD does not count: {leftover}; PD's regions: {all}",
                now.is_some()
            );
        }
        let Some(now) = now else {
            continue;
        };
        let idle = running.as_array().is_some_and(|o| o.is_empty());
        if idle && last.as_ref() == Some(&shape(&now)) {
            match leftover_peers(t, &now).await {
                None => return now,
                Some(text) => leftover = text,
            }
        }
        last = Some(shape(&now));
    }
}

/// Which stores hold peers PD does not count (a peer removed while its
/// store was away stays until it hears it was removed), if any.
async fn leftover_peers(t: &TestCluster, all: &[serde_json::Value]) -> Option<String> {
    let mut odd = vec![];
    for addr in &t.cluster.status_addrs {
        let status = get_json(&format!("http://{addr}/status")).await;
        let id = status["store_id"].as_u64().unwrap_or_default();
        let held = status["region_count"].as_u64();
        let expected = (all.iter())
            .filter(|r| (r["peers"].as_array().into_iter().flatten()).any(|p| p["store_id"] == id))
            .count() as u64;
        if held != Some(expected) {
            odd.push(format!(
                "store {id} holds {held:?} regions, PD counts {expected}"
            ));
        }
    }
    (!odd.is_empty()).then(|| odd.join(", "))
}

type Data = BTreeMap<(u8, Vec<u8>), Vec<u8>>;

/// Everything in `[start, end)` of the data column families.
fn scan(kv: &KvEngine, start: &[u8], end: &[u8]) -> Data {
    let mut data = Data::new();
    for (tag, cf) in [(0u8, CF_DEFAULT), (1, CF_LOCK), (2, CF_WRITE)] {
        kv.scan(cf, start, end, false, |k, v| {
            data.insert((tag, k.to_vec()), v.to_vec());
            true
        })
        .expect("scan a stopped store's engine");
    }
    data
}

/// Keys `a` has that `b` has not, or holds otherwise (at most 5).
fn only(a: &Data, b: &Data) -> String {
    let keys: Vec<String> = (a.iter())
        .filter(|(k, v)| b.get(*k) != Some(*v))
        .map(|((cf, k), _)| format!("cf{cf}:{}", String::from_utf8_lossy(k)))
        .take(5)
        .collect();
    keys.join(" ")
}

/// With every store stopped: the replicas of each region in `all` hold the
/// same data, and stores without one hold none of its range.
fn compare_replicas(t: &TestCluster, all: &[serde_json::Value]) {
    let mut engines = BTreeMap::new();
    for i in 0..STORES {
        let kv = KvEngine::open(&t.cluster.store_dir(i).join("db")).expect("open a store's engine");
        let ident = tikal_raftstore::load_store_ident(&kv)
            .unwrap()
            .expect("store ident");
        engines.insert(ident.store_id, kv);
    }
    for region in all {
        let id = region["id"].as_u64().unwrap();
        let (start, end) = (hex_key(region, "start_key"), hex_key(region, "end_key"));
        let leader = region["leader"]["store_id"].as_u64().unwrap();
        let members: Vec<u64> = (region["peers"].as_array().into_iter().flatten())
            .filter_map(|p| p["store_id"].as_u64())
            .collect();
        let reference = scan(&engines[&leader], &start, &end);
        let applied = |s: u64| tikal_raftstore::applied_index(&engines[&s], id).unwrap();
        for (&s, kv) in &engines {
            let data = scan(kv, &start, &end);
            if members.contains(&s) {
                assert!(
                    data == reference,
                    "replicas of region {id} differ: store {leader} (leader, applied {}) has \
                     and store {s} (applied {}) has not or holds otherwise: [{}]; the other \
                     way: [{}]",
                    applied(leader),
                    applied(s),
                    only(&reference, &data),
                    only(&data, &reference),
                );
            } else {
                assert!(
                    data.is_empty(),
                    "store {s} has no replica of region {id} but holds {} of its keys: [{}]",
                    data.len(),
                    only(&data, &Data::new()),
                );
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn faults_lose_no_acknowledged_write_and_replicas_never_differ() {
    let seed = env_u64("TIKAL_NEMESIS_SEED").unwrap_or(7);
    let length = Duration::from_secs(env_u64("TIKAL_NEMESIS_SECS").unwrap_or(40));
    eprintln!("nemesis seed {seed}, {length:?} of faults");
    // Store heartbeats well inside max-store-down-time (their default is
    // 10 s): a live store must not be taken for down between two of them
    // (seed 26: PD kept moving replicas off live stores, and never went
    // quiet). The line extends the client-suite config's last table,
    // `[raftstore]`.
    let store_config =
        format!("{CLIENT_SUITE_STORE_CONFIG}pd-store-heartbeat-tick-interval = \"1s\"\n");
    let mut t = TestCluster::start_with_configs(STORES, &store_config, PD_CONFIG).await;
    eventually(WAIT, "3 voters on the first region", || regions(&t, 3)).await;

    let pd = t.pd();
    let raw = t.raw_client().await;
    let mut raw_logs = vec![];
    let mut did = vec![];
    let report = bank::run(&pd, length, |until| {
        let (t, raw_logs, did) = (&mut t, &mut raw_logs, &mut did);
        async move {
            let mut writers = vec![];
            for w in 0..WRITERS {
                let c = tikv_client::RawClient::new(vec![t.pd()]).await.unwrap();
                writers.push(tokio::spawn(raw_writer(c, w, until)));
            }
            *did = nemesis(t, seed, until).await;
            for w in writers {
                raw_logs.push(w.await.expect("raw writer"));
            }
            eventually(WAIT, "every region on 3 voters again", || regions(t, 3)).await;
        }
    })
    .await;
    eprintln!("nemesis: {}", did.join("; "));
    // A failed bank check is raised at the end: what the replicas hold
    // and the stores' logs tell more about it.
    let bank = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| report.check()));
    for (w, log) in raw_logs.iter().enumerate() {
        eprintln!(
            "raw writer {w}: {} puts acknowledged, {} unknown, keys below {} deleted",
            log.acked.len(),
            log.unknown.len(),
            log.deleted_below
        );
        check_raw(&t, &raw, w, log).await;
    }
    assert!(
        raw_logs.iter().all(|l| l.deleted_below > 1),
        "every writer deleted keys (regions had something to merge)"
    );

    let all = quiesce(&t).await;
    eprintln!("{} regions at the end", all.len());
    // PD goes first: with the stores going one by one, it would take each
    // stopped store for down and rebuild its replicas on the others, and
    // the map in `all` would no longer be the truth.
    t.cluster.kill_pd();
    for i in 0..STORES {
        t.cluster.stop_store(i).await;
    }
    compare_replicas(&t, &all);
    // The stores' own invariant watch (`Store::check_unowned`).
    for i in 0..STORES {
        let log =
            std::fs::read_to_string(t.cluster.log_path(&format!("tikv-{i}"))).unwrap_or_default();
        let bad: Vec<&str> = (log.lines())
            .filter(|l| l.contains("another region here owns"))
            .take(3)
            .collect();
        assert!(
            bad.is_empty(),
            "store {i} deleted another region's data: {bad:#?}"
        );
    }
    if let Err(failed) = bank {
        std::panic::resume_unwind(failed);
    }
}
