//! `tikal bench raw` / `tikal bench txn`: Raw KV and transactional
//! throughput and latency through the official TiKV client, at one or more
//! client concurrencies.
//!
//! Each concurrency level runs `clients` tasks sharing one client, each
//! issuing one operation at a time for `duration`; latencies are recorded
//! per operation and reported as p50 / p99. Gets read keys written by a
//! preload. A transactional put is a whole transaction: begin, put,
//! commit (two-phase, or 1PC / async commit when asked for).

use std::time::{Duration, Instant};

use clap::{Args, ValueEnum};
use rand::Rng;
use tikv_client::{RawClient, TransactionClient, TransactionOptions};

#[derive(Args, Debug)]
pub struct BenchArgs {
    /// PD address (host:port).
    #[arg(long, default_value = "127.0.0.1:2379")]
    pub pd: String,
    /// Operation to measure.
    #[arg(long, value_enum, default_value_t = Op::Put)]
    pub op: Op,
    /// Concurrency levels to run, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "1,64")]
    pub clients: Vec<usize>,
    /// Seconds per concurrency level.
    #[arg(long, default_value_t = 10)]
    pub duration: u64,
    /// Value size in bytes.
    #[arg(long = "value-size", default_value_t = 100)]
    pub value_size: usize,
    /// Distinct keys.
    #[arg(long, default_value_t = 10_000)]
    pub keys: u64,
    /// Before measuring, split the keys evenly into this many regions (raw
    /// only; 0 or 1: leave the regions as they are) and wait until PD has
    /// spread their leaders over the stores.
    #[arg(long = "split-regions", default_value_t = 0)]
    pub split_regions: u64,
}

#[derive(Args, Debug)]
pub struct TxnBenchArgs {
    #[command(flatten)]
    pub common: BenchArgs,
    /// How transactions lock and commit.
    #[arg(long, value_enum, default_value_t = TxnMode::Optimistic)]
    pub mode: TxnMode,
}

#[derive(Clone, Copy, Debug, ValueEnum, PartialEq, Eq)]
pub enum Op {
    Put,
    Get,
}

#[derive(Clone, Copy, Debug, ValueEnum, PartialEq, Eq)]
pub enum TxnMode {
    /// Percolator two-phase commit.
    Optimistic,
    /// Pessimistic lock on the key, then two-phase commit.
    Pessimistic,
    /// Async commit: done after prewrite.
    AsyncCommit,
    /// One-phase commit: one round trip for a single-region transaction.
    OnePc,
}

/// What the benchmark drives.
#[derive(Clone)]
enum Target {
    Raw(RawClient),
    Txn(TransactionClient, TxnMode),
}

impl Target {
    async fn put(&self, key: Vec<u8>, value: Vec<u8>) -> tikv_client::Result<()> {
        match self {
            Target::Raw(c) => c.put(key, value).await,
            Target::Txn(c, mode) => {
                // In a pessimistic transaction the put takes the lock.
                let mut t = c.begin_with_options(txn_options(*mode)).await?;
                let done = match t.put(key, value).await {
                    Ok(()) => t.commit().await.map(|_| ()),
                    Err(e) => Err(e),
                };
                if done.is_err() {
                    // A conflict: end the transaction (the client insists).
                    let _ = t.rollback().await;
                }
                done
            }
        }
    }

    async fn get(&self, key: Vec<u8>) -> tikv_client::Result<()> {
        match self {
            Target::Raw(c) => c.get(key).await.map(|_| ()),
            Target::Txn(c, _) => {
                let ts = c.current_timestamp().await?;
                let mut s = c.snapshot(ts, TransactionOptions::new_optimistic());
                s.get(key).await.map(|_| ())
            }
        }
    }
}

fn txn_options(mode: TxnMode) -> TransactionOptions {
    match mode {
        TxnMode::Optimistic => TransactionOptions::new_optimistic(),
        TxnMode::Pessimistic => TransactionOptions::new_pessimistic(),
        TxnMode::AsyncCommit => TransactionOptions::new_optimistic().use_async_commit(),
        TxnMode::OnePc => TransactionOptions::new_optimistic().try_one_pc(),
    }
}

pub struct BenchResult {
    pub clients: usize,
    pub ops: u64,
    pub errors: u64,
    pub secs: f64,
    pub p50_us: u64,
    pub p99_us: u64,
}

fn key(i: u64) -> Vec<u8> {
    format!("bench:{i:012}").into_bytes()
}

pub async fn run_raw(args: BenchArgs) -> anyhow::Result<()> {
    if args.split_regions > 1 {
        let router = crate::replay::router::Router::connect(
            std::slice::from_ref(&args.pd),
            tikal_proto::kvrpcpb::ApiVersion::V1,
        )
        .await?;
        let keys: Vec<Vec<u8>> = (1..args.split_regions)
            .map(|i| key(i * args.keys / args.split_regions))
            .collect();
        let made = router.split(&keys).await?;
        println!("split the keys into {} more regions", made);
    }
    let leaders = wait_spread_leaders(&args.pd, Duration::from_secs(120)).await?;
    println!("leaders per store: {leaders:?}");
    let client = RawClient::new(vec![args.pd.clone()]).await?;
    run(Target::Raw(client), &args).await
}

/// Waits until every region PD knows has a leader and the stores' leader
/// counts differ by at most one (or `timeout` passes); returns the counts
/// by store id.
async fn wait_spread_leaders(
    pd: &str,
    timeout: Duration,
) -> anyhow::Result<std::collections::BTreeMap<u64, usize>> {
    let url = format!("http://{pd}/pd/api/v1/regions");
    let deadline = Instant::now() + timeout;
    loop {
        let regions: serde_json::Value = reqwest::get(&url).await?.json().await?;
        let mut leaders = std::collections::BTreeMap::new();
        let mut stores = std::collections::BTreeSet::new();
        let mut leaderless = 0;
        for r in regions["regions"].as_array().into_iter().flatten() {
            for p in r["peers"].as_array().into_iter().flatten() {
                stores.extend(p["store_id"].as_u64());
            }
            match r["leader"]["store_id"].as_u64() {
                Some(s) => *leaders.entry(s).or_insert(0usize) += 1,
                None => leaderless += 1,
            }
        }
        let total: usize = leaders.values().sum();
        let (most, least) = stores
            .iter()
            .map(|s| leaders.get(s).copied().unwrap_or(0))
            .fold((0, usize::MAX), |(hi, lo), c| (hi.max(c), lo.min(c)));
        let spread = leaderless == 0 && (total < stores.len() || most - least <= 1);
        if spread || Instant::now() > deadline {
            return Ok(leaders);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

pub async fn run_txn(args: TxnBenchArgs) -> anyhow::Result<()> {
    let client = TransactionClient::new(vec![args.common.pd.clone()]).await?;
    run(Target::Txn(client, args.mode), &args.common).await
}

async fn run(target: Target, args: &BenchArgs) -> anyhow::Result<()> {
    if args.op == Op::Get {
        preload(&target, args.keys, args.value_size).await?;
    }
    println!(
        "{:>8} {:>10} {:>12} {:>10} {:>10} {:>8}",
        "clients", "ops", "ops/s", "p50(us)", "p99(us)", "errors"
    );
    for &clients in &args.clients {
        let r = run_level(&target, args, clients).await?;
        println!(
            "{:>8} {:>10} {:>12.0} {:>10} {:>10} {:>8}",
            r.clients,
            r.ops,
            r.ops as f64 / r.secs,
            r.p50_us,
            r.p99_us,
            r.errors
        );
    }
    Ok(())
}

/// Writes every key once, 256 per request (raw) or transaction (txn).
async fn preload(target: &Target, keys: u64, value_size: usize) -> anyhow::Result<()> {
    let value = vec![b'v'; value_size];
    let mut i = 0;
    while i < keys {
        let end = (i + 256).min(keys);
        let batch: Vec<(Vec<u8>, Vec<u8>)> = (i..end).map(|k| (key(k), value.clone())).collect();
        match target {
            Target::Raw(c) => c.batch_put(batch).await?,
            Target::Txn(c, _) => {
                let mut t = c.begin_optimistic().await?;
                for (k, v) in batch {
                    t.put(k, v).await?;
                }
                t.commit().await?;
            }
        }
        i = end;
    }
    Ok(())
}

async fn run_level(
    target: &Target,
    args: &BenchArgs,
    clients: usize,
) -> anyhow::Result<BenchResult> {
    let stop_at = Instant::now() + Duration::from_secs(args.duration);
    let start = Instant::now();
    let mut tasks = vec![];
    for _ in 0..clients {
        let target = target.clone();
        let (op, keys, value_size) = (args.op, args.keys, args.value_size);
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::with_capacity(1 << 16);
            let mut errors = 0u64;
            let value = vec![b'v'; value_size];
            while Instant::now() < stop_at {
                let k = key(rand::thread_rng().gen_range(0..keys));
                let t = Instant::now();
                let ok = match op {
                    Op::Put => target.put(k, value.clone()).await.is_ok(),
                    Op::Get => target.get(k).await.is_ok(),
                };
                if ok {
                    lat.push(t.elapsed().as_micros() as u64);
                } else {
                    errors += 1;
                }
            }
            (lat, errors)
        }));
    }
    let mut all = vec![];
    let mut errors = 0;
    for t in tasks {
        let (lat, e) = t.await?;
        all.extend(lat);
        errors += e;
    }
    let secs = start.elapsed().as_secs_f64();
    all.sort_unstable();
    let pct = |p: f64| -> u64 {
        if all.is_empty() {
            return 0;
        }
        all[((all.len() as f64 * p) as usize).min(all.len() - 1)]
    };
    Ok(BenchResult {
        clients,
        ops: all.len() as u64,
        errors,
        secs,
        p50_us: pct(0.50),
        p99_us: pct(0.99),
    })
}
