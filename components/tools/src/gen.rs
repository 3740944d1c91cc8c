//! `tikal gen-requests`: a synthetic request CSV for `tikal replay`.
//!
//! Arrivals come in bursts: burst sizes are geometric with mean
//! `burstiness` (1 = plain Poisson arrivals), gaps between bursts are
//! exponential, scaled so the average rate is `rate`. Each request draws
//! its priority from the mix (default HIGH .35, MEDIUM .40, LOW .25), its
//! delay budget from its priority, and a key uniformly from `keys`. The
//! same seed gives the same file. Rows are written as they are generated.

use std::io::Write;
use std::path::PathBuf;

use anyhow::{bail, Context as _};
use chrono::{DateTime, Utc};
use clap::Args;
use rand::{Rng, SeedableRng};

#[derive(Args, Debug, Clone)]
pub struct GenArgs {
    /// Number of requests (or give --duration).
    #[arg(long)]
    pub count: Option<u64>,
    /// Seconds of arrivals; count = rate × duration.
    #[arg(long)]
    pub duration: Option<f64>,
    /// Average requests per second.
    #[arg(long, default_value_t = 1000.0)]
    pub rate: f64,
    /// Mean burst size (1 = Poisson).
    #[arg(long, default_value_t = 1.0)]
    pub burstiness: f64,
    /// Shares of HIGH, MEDIUM, LOW.
    #[arg(
        long = "priority-mix",
        value_delimiter = ',',
        default_value = "0.35,0.40,0.25"
    )]
    pub priority_mix: Vec<f64>,
    /// Delay budget (request_max_delay) for HIGH, MEDIUM, LOW, in ms.
    #[arg(
        long = "delay-ms",
        value_delimiter = ',',
        default_value = "50,200,1000"
    )]
    pub delay_ms: Vec<u64>,
    /// Key length in bytes (zero-padded numbers).
    #[arg(long = "key-size", default_value_t = 16)]
    pub key_size: usize,
    #[arg(long = "value-size", default_value_t = 100)]
    pub value_size: usize,
    /// Distinct keys.
    #[arg(long, default_value_t = 100_000)]
    pub keys: u64,
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Arrival time of the first request (RFC 3339).
    #[arg(long, default_value = "2025-01-01T00:00:00Z")]
    pub start: String,
    /// Output file (default: stdout).
    #[arg(long, short)]
    pub output: Option<PathBuf>,
}

const NAMES: [&str; 3] = ["HIGH", "MEDIUM", "LOW"];

pub fn run(args: &GenArgs) -> anyhow::Result<u64> {
    if args.priority_mix.len() != 3 || args.priority_mix.iter().any(|p| *p < 0.0) {
        bail!("--priority-mix needs three non-negative shares (HIGH,MEDIUM,LOW)");
    }
    let total: f64 = args.priority_mix.iter().sum();
    if total <= 0.0 {
        bail!("--priority-mix shares must not all be zero");
    }
    if args.delay_ms.len() != 3 {
        bail!("--delay-ms needs three budgets (HIGH,MEDIUM,LOW)");
    }
    let rate_ok = args.rate.is_finite() && args.rate > 0.0;
    let burst_ok = args.burstiness.is_finite() && args.burstiness >= 1.0;
    if !rate_ok || !burst_ok {
        bail!("--rate must be positive and --burstiness at least 1");
    }
    let count = match (args.count, args.duration) {
        (Some(c), _) => c,
        (None, Some(d)) if d > 0.0 => (d * args.rate).round() as u64,
        _ => bail!("give --count or a positive --duration"),
    };
    let start: DateTime<Utc> = DateTime::parse_from_rfc3339(&args.start)
        .with_context(|| format!("--start {:?} is not RFC 3339", args.start))?
        .with_timezone(&Utc);
    let out: Box<dyn Write> = match &args.output {
        Some(p) => Box::new(
            std::fs::File::create(p).with_context(|| format!("cannot create {}", p.display()))?,
        ),
        None => Box::new(std::io::stdout().lock()),
    };
    let mut out = std::io::BufWriter::new(out);
    writeln!(out, "arrival_time,request_max_delay,priority,key,value")?;
    let mut rng = rand::rngs::StdRng::seed_from_u64(args.seed);
    let mean_gap_us = 1e6 * args.burstiness / args.rate;
    let mut t_us = 0.0f64;
    let mut left_in_burst = 0u64;
    let value: String = "x".repeat(args.value_size);
    for _ in 0..count {
        if left_in_burst == 0 {
            // Geometric burst size with mean `burstiness`.
            let p = 1.0 / args.burstiness;
            left_in_burst = 1;
            while rng.gen::<f64>() > p {
                left_in_burst += 1;
            }
            let u: f64 = rng.gen::<f64>().max(f64::MIN_POSITIVE);
            t_us += -u.ln() * mean_gap_us;
        }
        left_in_burst -= 1;
        let mut x = rng.gen::<f64>() * total;
        let mut prio = 2;
        for (i, share) in args.priority_mix.iter().enumerate() {
            if x < *share {
                prio = i;
                break;
            }
            x -= share;
        }
        let at = start + chrono::Duration::microseconds(t_us as i64);
        let key = format!(
            "{:0width$}",
            rng.gen_range(0..args.keys.max(1)),
            width = args.key_size
        );
        writeln!(
            out,
            "{},{},{},{},{}",
            at.format("%Y-%m-%dT%H:%M:%S%.6fZ"),
            args.delay_ms[prio] as f64 / 1000.0,
            NAMES[prio],
            key,
            value
        )?;
    }
    out.flush()?;
    Ok(count)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::replay::Rows;

    fn args(path: PathBuf) -> GenArgs {
        GenArgs {
            count: Some(20_000),
            duration: None,
            rate: 2000.0,
            burstiness: 4.0,
            priority_mix: vec![0.35, 0.40, 0.25],
            delay_ms: vec![50, 200, 1000],
            key_size: 8,
            value_size: 10,
            keys: 1000,
            seed: 7,
            start: "2025-01-01T00:00:00Z".into(),
            output: Some(path),
        }
    }

    #[test]
    fn generated_csv_replays_and_matches_rate_mix_and_seed() {
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("a.csv");
        run(&args(a.clone())).unwrap();
        let mut rows = Rows::open(&a).unwrap();
        let (mut n, mut first, mut last, mut per) = (0u64, i64::MAX, 0i64, [0u64; 3]);
        while let Some(r) = rows.next_row().unwrap() {
            n += 1;
            first = first.min(r.arrival_ms);
            last = last.max(r.arrival_ms);
            per[r.priority as usize] += 1;
            assert_eq!(r.key.len(), 8);
            assert_eq!(r.max_delay_ms, [50, 200, 1000][r.priority as usize]);
        }
        assert_eq!(n, 20_000);
        let rate = n as f64 / ((last - first) as f64 / 1000.0);
        assert!((1600.0..2500.0).contains(&rate), "rate {rate}");
        let high = per[0] as f64 / n as f64;
        assert!((0.32..0.38).contains(&high), "HIGH share {high}");
        // Same seed, same file.
        let b = dir.path().join("b.csv");
        run(&args(b.clone())).unwrap();
        assert_eq!(std::fs::read(&a).unwrap(), std::fs::read(&b).unwrap());
    }
}
