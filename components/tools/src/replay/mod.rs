//! `tikal replay`: replays a request CSV against a cluster, as the seed's
//! `csv-ycsb` does.
//!
//! Each row becomes one raw put of `table:key = value`, sent once at the
//! row's arrival offset (from the earliest row) with the scheduling headers
//! `x-aaws-priority`, `x-aaws-arrival-ms`, `x-aaws-deadline-ms` (arrival +
//! `request_max_delay`) and `x-aaws-request-id` (`line-<n>`). The file is
//! read twice — once to validate and find the earliest arrival, once to
//! send — and streamed both times: memory and tasks grow with the requests
//! in flight, not with the file.
//!
//! The summary is go-ycsb's: `INSERT - Takes(s): …, Count: …, OPS: …,
//! Avg(us): …, Min(us): …, Max(us): …, 50th(us): …, … 99.99th(us): …` and
//! `Errors: N`.

pub(crate) mod router;

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::bail;
use clap::Args;
use hdrhistogram::Histogram;
use tikal_proto::kvrpcpb::ApiVersion;
use tokio::sync::Semaphore;

pub use tikal_codec::replay_csv::{parse_time, Row, Rows, COLUMNS};

#[derive(Args, Debug, Clone)]
pub struct ReplayArgs {
    /// Request CSV: arrival_time, request_max_delay, priority, key, value.
    #[arg(long)]
    pub csv: PathBuf,
    /// PD endpoints, comma-separated.
    #[arg(long, default_value = "127.0.0.1:2379", value_delimiter = ',')]
    pub pd: Vec<String>,
    /// Key prefix: rows write `table:key`.
    #[arg(long, default_value = "usertable")]
    pub table: String,
    /// V1 or V2; must match the store's storage.api-version.
    #[arg(long = "apiversion", default_value = "V1")]
    pub api_version: String,
    /// Skip a request that is late by more than this (0 = never skip).
    #[arg(long = "max-wait-seconds", default_value_t = 0.0)]
    pub max_wait_seconds: f64,
    /// Print every failed request.
    #[arg(short, long)]
    pub verbose: bool,
    /// Requests in flight at most. When reached, sending falls behind the
    /// CSV's schedule (the lateness shows in the server's delays), so keep
    /// it above the backlog an overload builds.
    #[arg(long = "max-in-flight", default_value_t = 65_536)]
    pub max_in_flight: usize,
}

/// What a replay did; also printed as the summary.
#[derive(Debug)]
pub struct ReplayOutcome {
    pub sent: u64,
    pub errors: u64,
    pub skipped: u64,
    pub summary: String,
}

/// Rewrites the seed's single-dash long flags (`-csv x`, `-pd=y`) into
/// clap's `--csv x`, leaving everything else alone.
pub fn normalize_args(args: impl IntoIterator<Item = String>) -> Vec<String> {
    const LONG: [&str; 5] = ["csv", "pd", "table", "apiversion", "max-wait-seconds"];
    args.into_iter()
        .map(|a| {
            let name = a.strip_prefix('-').filter(|r| !r.starts_with('-'));
            match name {
                Some(rest) if LONG.contains(&rest.split('=').next().unwrap_or("")) => {
                    format!("-{a}")
                }
                _ => a,
            }
        })
        .collect()
}

fn api_version(s: &str) -> anyhow::Result<ApiVersion> {
    match s.to_ascii_uppercase().as_str() {
        "V1" => Ok(ApiVersion::V1),
        "V2" => Ok(ApiVersion::V2),
        _ => bail!("-apiversion must be V1 or V2, got {s:?}"),
    }
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

pub async fn run(args: ReplayArgs) -> anyhow::Result<ReplayOutcome> {
    let api = api_version(&args.api_version)?;
    // Pass 1: validate every row, count them, find the earliest arrival.
    let (count, earliest) = {
        let mut rows = Rows::open(&args.csv)?;
        let (mut n, mut min) = (0u64, i64::MAX);
        while let Some(r) = rows.next_row()? {
            n += 1;
            min = min.min(r.arrival_ms);
        }
        (n, min)
    };
    if count == 0 {
        bail!("{}: no rows", args.csv.display());
    }
    let router = Arc::new(router::Router::connect(&args.pd, api).await?);

    // Pass 2: a reader thread streams rows into a bounded channel.
    let (tx, mut rx) = tokio::sync::mpsc::channel::<anyhow::Result<Row>>(1024);
    let path = args.csv.clone();
    std::thread::spawn(move || {
        let mut rows = match Rows::open(&path) {
            Ok(r) => r,
            Err(e) => {
                let _ = tx.blocking_send(Err(e.into()));
                return;
            }
        };
        loop {
            match rows.next_row() {
                Ok(Some(r)) => {
                    if tx.blocking_send(Ok(r)).is_err() {
                        return;
                    }
                }
                Ok(None) => return,
                Err(e) => {
                    let _ = tx.blocking_send(Err(e.into()));
                    return;
                }
            }
        }
    });

    let progress = if std::io::IsTerminal::is_terminal(&std::io::stderr()) {
        indicatif::ProgressBar::new(count)
    } else {
        indicatif::ProgressBar::hidden()
    };
    let histogram = Arc::new(Mutex::new(
        Histogram::<u64>::new(3).map_err(|e| anyhow::anyhow!("histogram: {e}"))?,
    ));
    let errors = Arc::new(AtomicU64::new(0));
    // How late each request left, against the CSV's schedule: when this
    // grows, the client (not the store) is the bottleneck.
    let mut send_late = Histogram::<u64>::new(3).map_err(|e| anyhow::anyhow!("histogram: {e}"))?;
    let max_in_flight = args.max_in_flight.clamp(1, Semaphore::MAX_PERMITS);
    let in_flight = Arc::new(Semaphore::new(max_in_flight));
    let max_wait = Duration::from_secs_f64(args.max_wait_seconds.max(0.0));
    let start = tokio::time::Instant::now();
    let start_wall = now_ms();
    let (mut sent, mut skipped) = (0u64, 0u64);
    while let Some(row) = rx.recv().await {
        let row = row?;
        let offset = Duration::from_millis((row.arrival_ms - earliest).max(0) as u64);
        tokio::time::sleep_until(start + offset).await;
        let late = start.elapsed().saturating_sub(offset);
        let _ = send_late.record(late.as_millis() as u64);
        if !max_wait.is_zero() && late > max_wait {
            skipped += 1;
            progress.inc(1);
            continue;
        }
        let permit = in_flight.clone().acquire_owned().await?;
        let arrival = start_wall + offset.as_millis() as i64;
        let headers = [
            ("x-aaws-priority", row.priority.name().to_string()),
            ("x-aaws-arrival-ms", arrival.to_string()),
            (
                "x-aaws-deadline-ms",
                arrival
                    .saturating_add(i64::try_from(row.max_delay_ms).unwrap_or(i64::MAX))
                    .to_string(),
            ),
            ("x-aaws-request-id", format!("line-{}", row.line)),
        ];
        let mut key = match api {
            // API V2 raw keys live under 'r' and the keyspace id (DEFAULT = 0).
            ApiVersion::V2 => vec![b'r', 0, 0, 0],
            _ => vec![],
        };
        key.extend_from_slice(format!("{}:{}", args.table, row.key).as_bytes());
        let value = row.value.into_bytes();
        let (router, histogram, errors, progress) = (
            router.clone(),
            histogram.clone(),
            errors.clone(),
            progress.clone(),
        );
        let verbose = args.verbose;
        let line = row.line;
        sent += 1;
        tokio::spawn(async move {
            let t = Instant::now();
            match router.put(key, value, &headers).await {
                Ok(()) => {
                    let us = t.elapsed().as_micros() as u64;
                    if let Ok(mut h) = histogram.lock() {
                        let _ = h.record(us.max(1));
                    }
                }
                Err(e) => {
                    errors.fetch_add(1, Ordering::Relaxed);
                    if verbose {
                        eprintln!("line {line}: {e:#}");
                    }
                }
            }
            progress.inc(1);
            drop(permit);
        });
    }
    // Wait for every request still in flight.
    let _all = in_flight.acquire_many(max_in_flight as u32).await?;
    progress.finish_and_clear();
    let takes = start.elapsed().as_secs_f64();
    let errors = errors.load(Ordering::Relaxed);
    let h = histogram
        .lock()
        .map_err(|_| anyhow::anyhow!("histogram lock"))?;
    let mut summary = summary("INSERT", takes, &h, errors, skipped);
    summary.push_str(&format!(
        "\nSend lateness(ms): 50th {}, 99th {}, max {}",
        send_late.value_at_quantile(0.5),
        send_late.value_at_quantile(0.99),
        send_late.max()
    ));
    Ok(ReplayOutcome {
        sent,
        errors,
        skipped,
        summary,
    })
}

/// go-ycsb's one-line summary plus `Errors: N`.
pub fn summary(op: &str, takes: f64, h: &Histogram<u64>, errors: u64, skipped: u64) -> String {
    let count = h.len();
    let ops = if takes > 0.0 {
        count as f64 / takes
    } else {
        0.0
    };
    let q = |p: f64| h.value_at_quantile(p);
    let mut s = format!(
        "{op} - Takes(s): {takes:.1}, Count: {count}, OPS: {ops:.1}, Avg(us): {:.0}, Min(us): {}, \
         Max(us): {}, 50th(us): {}, 90th(us): {}, 95th(us): {}, 99th(us): {}, 99.9th(us): {}, \
         99.99th(us): {}\nErrors: {errors}",
        h.mean(),
        if count == 0 { 0 } else { h.min() },
        h.max(),
        q(0.50),
        q(0.90),
        q(0.95),
        q(0.99),
        q(0.999),
        q(0.9999),
    );
    if skipped > 0 {
        s.push_str(&format!("\nSkipped: {skipped}"));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seed_style_single_dash_flags_become_long_flags() {
        let args = normalize_args(
            [
                "tikal",
                "replay",
                "-csv",
                "a.csv",
                "-pd=x:1",
                "-max-wait-seconds",
                "2",
                "-v",
                "--table",
                "t",
            ]
            .map(String::from),
        );
        assert_eq!(
            args,
            [
                "tikal",
                "replay",
                "--csv",
                "a.csv",
                "--pd=x:1",
                "--max-wait-seconds",
                "2",
                "-v",
                "--table",
                "t"
            ]
        );
    }

    #[test]
    fn summary_has_go_ycsb_fields() {
        let mut h = Histogram::<u64>::new(3).unwrap();
        for v in [100, 200, 300] {
            h.record(v).unwrap();
        }
        let s = summary("INSERT", 1.5, &h, 2, 0);
        assert!(
            s.starts_with("INSERT - Takes(s): 1.5, Count: 3, OPS: 2.0, Avg(us): 200, Min(us): 100")
        );
        for f in [
            "50th(us)",
            "90th(us)",
            "95th(us)",
            "99th(us)",
            "99.9th(us)",
            "99.99th(us)",
        ] {
            assert!(s.contains(f), "{s}");
        }
        assert!(s.ends_with("Errors: 2"));
    }
}
