//! `tikal trace-report`: compares server traces (one per policy, say).
//!
//! For each trace and priority it reads the final decision of every request
//! (`scheduled`, `urgent-admit`, `baseline-immediate`; progress rows such
//! as `check-delay` are skipped) and reports: count, deadline-miss rate
//! (admitted after `deadline_ms`, among requests with a deadline),
//! scheduling delay mean / p50 / p95 / p99, and the priority-weighted delay
//! and miss rate with weights HIGH .35, MEDIUM .40, LOW .25. `--html`
//! writes a self-contained page with delay CDFs and miss rates as SVG.
//! Traces are streamed; memory does not grow with their length.

use std::fmt::Write as _;
use std::io::BufRead;
use std::path::PathBuf;

use anyhow::{bail, Context as _};
use clap::Args;
use hdrhistogram::Histogram;
use tikal_storage::scheduler::TRACE_HEADER;

pub const WEIGHTS: [f64; 3] = [0.35, 0.40, 0.25];
const NAMES: [&str; 3] = ["HIGH", "MEDIUM", "LOW"];

#[derive(Args, Debug, Clone)]
pub struct ReportArgs {
    /// Traces as NAME=PATH (or PATH; the name is then the file stem).
    #[arg(required = true)]
    pub traces: Vec<String>,
    /// Also write an HTML page with charts here.
    #[arg(long)]
    pub html: Option<PathBuf>,
}

pub struct PriorityStats {
    pub count: u64,
    pub with_deadline: u64,
    pub misses: u64,
    pub delays_ms: Histogram<u64>,
}

impl PriorityStats {
    fn new() -> PriorityStats {
        PriorityStats {
            count: 0,
            with_deadline: 0,
            misses: 0,
            delays_ms: Histogram::new(3).expect("3 significant digits is valid"),
        }
    }

    pub fn miss_rate(&self) -> f64 {
        if self.with_deadline == 0 {
            0.0
        } else {
            self.misses as f64 / self.with_deadline as f64
        }
    }
}

pub struct TraceStats {
    pub name: String,
    pub by_priority: [PriorityStats; 3],
}

impl TraceStats {
    pub fn weighted_delay_ms(&self) -> f64 {
        (0..3)
            .map(|p| WEIGHTS[p] * self.by_priority[p].delays_ms.mean())
            .sum()
    }

    pub fn weighted_miss_rate(&self) -> f64 {
        (0..3)
            .map(|p| WEIGHTS[p] * self.by_priority[p].miss_rate())
            .sum()
    }
}

pub fn read_trace(name: &str, path: &std::path::Path) -> anyhow::Result<TraceStats> {
    let file =
        std::fs::File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let mut reader = std::io::BufReader::new(file);
    let mut stats = TraceStats {
        name: name.to_string(),
        by_priority: [
            PriorityStats::new(),
            PriorityStats::new(),
            PriorityStats::new(),
        ],
    };
    let mut line = String::new();
    let mut n = 0u64;
    loop {
        line.clear();
        if reader.read_line(&mut line)? == 0 {
            break;
        }
        n += 1;
        // A line without its newline is still being written: stop there.
        let Some(text) = line.strip_suffix('\n') else {
            break;
        };
        if n == 1 {
            if text.trim_end() != TRACE_HEADER {
                bail!("{}: line 1 is not the trace header", path.display());
            }
            continue;
        }
        let cols: Vec<&str> = text.split(',').collect();
        if cols.len() != 10 {
            bail!(
                "{} line {n}: expected 10 columns, found {}",
                path.display(),
                cols.len()
            );
        }
        if matches!(cols[9], "check-delay" | "queued" | "cancelled") {
            continue;
        }
        let p = match cols[1] {
            "HIGH" => 0,
            "MEDIUM" => 1,
            "LOW" => 2,
            other => bail!("{} line {n}, column priority: {other:?}", path.display()),
        };
        let num = |i: usize| -> anyhow::Result<i64> {
            cols[i]
                .parse()
                .with_context(|| format!("{} line {n}: bad number {:?}", path.display(), cols[i]))
        };
        let (arrival, scheduled) = (num(2)?, num(5)?);
        let s = &mut stats.by_priority[p];
        s.count += 1;
        let _ = s.delays_ms.record((scheduled - arrival).max(0) as u64);
        if !cols[3].is_empty() {
            s.with_deadline += 1;
            if scheduled > num(3)? {
                s.misses += 1;
            }
        }
    }
    Ok(stats)
}

pub fn table(all: &[TraceStats]) -> String {
    let mut out = format!(
        "{:<12} {:<9} {:>9} {:>8} {:>10} {:>8} {:>8} {:>8}\n",
        "trace", "priority", "count", "miss%", "mean(ms)", "p50", "p95", "p99"
    );
    for t in all {
        for (p, s) in t.by_priority.iter().enumerate() {
            let h = &s.delays_ms;
            let _ = writeln!(
                out,
                "{:<12} {:<9} {:>9} {:>7.2}% {:>10.1} {:>8} {:>8} {:>8}",
                t.name,
                NAMES[p],
                s.count,
                100.0 * s.miss_rate(),
                h.mean(),
                h.value_at_quantile(0.5),
                h.value_at_quantile(0.95),
                h.value_at_quantile(0.99)
            );
        }
        let _ = writeln!(
            out,
            "{:<12} {:<9} {:>9} {:>7.2}% {:>10.1}",
            t.name,
            "weighted",
            "",
            100.0 * t.weighted_miss_rate(),
            t.weighted_delay_ms()
        );
    }
    out
}

const COLORS: [&str; 3] = ["#d62728", "#1f77b4", "#2ca02c"];
const DASHES: [&str; 4] = ["", "6,3", "2,2", "10,3,2,3"];

/// A self-contained HTML page: delay CDFs and miss rates, as inline SVG.
pub fn html(all: &[TraceStats]) -> String {
    let max_ms = all
        .iter()
        .flat_map(|t| t.by_priority.iter())
        .map(|s| s.delays_ms.value_at_quantile(0.999))
        .max()
        .unwrap_or(1)
        .max(1) as f64;
    let (w, h, pad) = (760.0, 360.0, 50.0);
    let mut cdf = format!(r#"<svg width="{w}" height="{h}" xmlns="http://www.w3.org/2000/svg">"#);
    let _ = write!(
        cdf,
        r#"<line x1="{pad}" y1="{y}" x2="{x}" y2="{y}" stroke="black"/><line x1="{pad}" y1="{pad}" x2="{pad}" y2="{y}" stroke="black"/><text x="{cx}" y="{ty}" text-anchor="middle">scheduling delay (ms), up to {max_ms:.0}</text><text x="12" y="{pad}">CDF</text>"#,
        y = h - pad,
        x = w - pad,
        cx = w / 2.0,
        ty = h - 12.0
    );
    for (ti, t) in all.iter().enumerate() {
        for (p, s) in t.by_priority.iter().enumerate() {
            if s.count == 0 {
                continue;
            }
            let mut pts = String::new();
            for i in 0..=100 {
                let q = i as f64 / 100.0;
                let v = s.delays_ms.value_at_quantile(q) as f64;
                let x = pad + (w - 2.0 * pad) * (v / max_ms).min(1.0);
                let y = (h - pad) - (h - 2.0 * pad) * q;
                let _ = write!(pts, "{x:.1},{y:.1} ");
            }
            let _ = write!(
                cdf,
                r#"<polyline fill="none" stroke="{}" stroke-dasharray="{}" stroke-width="2" points="{pts}"><title>{} {}</title></polyline>"#,
                COLORS[p],
                DASHES[ti % DASHES.len()],
                t.name,
                NAMES[p]
            );
        }
    }
    cdf.push_str("</svg>");

    let bar_w = 22.0;
    let mut bars = format!(r#"<svg width="{w}" height="{h}" xmlns="http://www.w3.org/2000/svg">"#);
    let max_rate = all
        .iter()
        .flat_map(|t| t.by_priority.iter().map(|s| s.miss_rate()))
        .fold(0.0f64, f64::max)
        .max(0.01);
    for (ti, t) in all.iter().enumerate() {
        let gx = pad + ti as f64 * (4.0 * bar_w + 30.0);
        for (p, s) in t.by_priority.iter().enumerate() {
            let bh = (h - 2.0 * pad) * s.miss_rate() / max_rate;
            let _ = write!(
                bars,
                r#"<rect x="{:.1}" y="{:.1}" width="{bar_w}" height="{bh:.1}" fill="{}"><title>{} {}: {:.2}%</title></rect>"#,
                gx + p as f64 * bar_w,
                h - pad - bh,
                COLORS[p],
                t.name,
                NAMES[p],
                100.0 * s.miss_rate()
            );
        }
        let _ = write!(
            bars,
            r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">{}</text>"#,
            gx + 1.5 * bar_w,
            h - pad + 18.0,
            t.name
        );
    }
    let _ = write!(
        bars,
        r#"<text x="12" y="{pad}">deadline-miss rate (max {:.1}%)</text></svg>"#,
        100.0 * max_rate
    );
    let mut legend = String::new();
    for (p, name) in NAMES.iter().enumerate() {
        let _ = write!(
            legend,
            r#"<span style="color:{}">■ {name}</span> "#,
            COLORS[p]
        );
    }
    for (ti, t) in all.iter().enumerate() {
        let _ = write!(
            legend,
            "· {} dash \"{}\" ",
            t.name,
            DASHES[ti % DASHES.len()]
        );
    }
    format!(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>Tikal trace report</title></head>\
         <body style=\"font-family:sans-serif\"><h1>Scheduling trace report</h1><p>{legend}</p>\
         <h2>Scheduling delay CDF</h2>{cdf}<h2>Deadline-miss rate</h2>{bars}<h2>Table</h2><pre>{}</pre></body></html>",
        table(all)
    )
}

pub fn run(args: &ReportArgs) -> anyhow::Result<String> {
    let mut all = vec![];
    for spec in &args.traces {
        let (name, path) = match spec.split_once('=') {
            Some((n, p)) => (n.to_string(), PathBuf::from(p)),
            None => {
                let p = PathBuf::from(spec);
                let n = p
                    .file_stem()
                    .map(|s| s.to_string_lossy().into_owned())
                    .unwrap_or_default();
                (n, p)
            }
        };
        all.push(read_trace(&name, &path)?);
    }
    if let Some(out) = &args.html {
        std::fs::write(out, html(&all))
            .with_context(|| format!("cannot write {}", out.display()))?;
    }
    Ok(table(&all))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn final_decisions_give_miss_rates_delays_and_weights() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("edf.csv");
        std::fs::write(
            &path,
            format!(
                "{TRACE_HEADER}\n\
                 a,HIGH,1000,1050,50,1000,0,3,1,queued\n\
                 a,HIGH,1000,1050,50,1010,10,3,1,scheduled\n\
                 b,HIGH,1000,1050,50,1100,100,3,1,urgent-admit\n\
                 c,LOW,1000,,,1200,200,3,2,scheduled\n\
                 d,LOW,1000,1100,100,1050,50,3,2,check-delay\n\
                 d,LOW,1000,1100,100,10"
            ),
        )
        .unwrap();
        let s = read_trace("edf", &path).unwrap();
        let high = &s.by_priority[0];
        assert_eq!((high.count, high.with_deadline, high.misses), (2, 2, 1));
        assert_eq!(high.miss_rate(), 0.5);
        // c has no deadline: counted, never a miss. d's final row is torn.
        let low = &s.by_priority[2];
        assert_eq!((low.count, low.with_deadline, low.misses), (1, 0, 0));
        assert!((s.weighted_miss_rate() - 0.35 * 0.5).abs() < 1e-9);
        let expected_delay = 0.35 * 55.0 + 0.25 * 200.0;
        assert!(
            (s.weighted_delay_ms() - expected_delay).abs() < 1.0,
            "{}",
            s.weighted_delay_ms()
        );
        let page = html(&[s]);
        assert!(page.contains("<svg") && page.contains("polyline"));
    }
}
