//! `tikal bench raw`: Raw KV throughput and latency through the official
//! TiKV client, at one or more client concurrencies.
//!
//! Each concurrency level runs `clients` tasks sharing one `RawClient`, each
//! issuing one request at a time for `duration`; latencies are recorded per
//! request and reported as p50 / p99. Gets read keys written by a preload.

use std::time::{Duration, Instant};

use clap::{Args, ValueEnum};
use rand::Rng;
use tikv_client::RawClient;

#[derive(Args, Debug)]
pub struct RawBenchArgs {
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
}

#[derive(Clone, Copy, Debug, ValueEnum, PartialEq, Eq)]
pub enum Op {
    Put,
    Get,
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

pub async fn run_raw(args: RawBenchArgs) -> anyhow::Result<()> {
    let client = RawClient::new(vec![args.pd.clone()]).await?;
    if args.op == Op::Get {
        preload(&client, args.keys, args.value_size).await?;
    }
    println!(
        "{:>8} {:>10} {:>12} {:>10} {:>10} {:>8}",
        "clients", "ops", "ops/s", "p50(us)", "p99(us)", "errors"
    );
    for &clients in &args.clients {
        let r = run_level(&client, &args, clients).await?;
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

async fn preload(client: &RawClient, keys: u64, value_size: usize) -> anyhow::Result<()> {
    let value = vec![b'v'; value_size];
    let mut i = 0;
    while i < keys {
        let end = (i + 256).min(keys);
        let batch: Vec<(Vec<u8>, Vec<u8>)> = (i..end).map(|k| (key(k), value.clone())).collect();
        client.batch_put(batch).await?;
        i = end;
    }
    Ok(())
}

async fn run_level(
    client: &RawClient,
    args: &RawBenchArgs,
    clients: usize,
) -> anyhow::Result<BenchResult> {
    let stop_at = Instant::now() + Duration::from_secs(args.duration);
    let start = Instant::now();
    let mut tasks = vec![];
    for _ in 0..clients {
        let client = client.clone();
        let (op, keys, value_size) = (args.op, args.keys, args.value_size);
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::with_capacity(1 << 16);
            let mut errors = 0u64;
            let value = vec![b'v'; value_size];
            while Instant::now() < stop_at {
                let k = key(rand::thread_rng().gen_range(0..keys));
                let t = Instant::now();
                let ok = match op {
                    Op::Put => client.put(k, value.clone()).await.is_ok(),
                    Op::Get => client.get(k).await.is_ok(),
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
