//! Prometheus metrics, named as upstream TiKV names them.

use std::sync::OnceLock;
use std::time::Instant;

use prometheus::{HistogramOpts, HistogramVec, IntCounterVec, IntGaugeVec, Opts, Registry};
use tikal_storage::scheduler::{Decision, Priority, SchedulerObserver, TraceRow};

pub struct Metrics {
    pub registry: Registry,
    /// Per gRPC command: count (`_count`) and latency.
    pub grpc_msg_duration: HistogramVec,
    pub grpc_msg_fail: IntCounterVec,
    /// Raw-write scheduler, per priority.
    pub sched_waiting: IntGaugeVec,
    pub sched_delay: HistogramVec,
    pub sched_deadline_miss: IntCounterVec,
    pub sched_decisions: IntCounterVec,
    /// Pessimistic lock waits: registered waiters and wait-for edges
    /// (refreshed when scraped), and deadlocks found.
    pub lock_wait_table: IntGaugeVec,
    pub lock_detect_error: IntCounterVec,
    /// Background GC: the safe point it follows, and what it did by CF.
    pub gc_safe_point: prometheus::IntGauge,
    pub gc_keys: IntCounterVec,
}

// Metric definitions below are constants; `new` fails only for invalid
// names or labels, which would be a bug caught by the first test run.
const VALID: &str = "constant metric definition is valid";

fn histogram(reg: &Registry, name: &str, help: &str, labels: &[&str], b: Vec<f64>) -> HistogramVec {
    let m = HistogramVec::new(HistogramOpts::new(name, help).buckets(b), labels).expect(VALID);
    let _ = reg.register(Box::new(m.clone()));
    m
}

fn counter(reg: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    let m = IntCounterVec::new(Opts::new(name, help), labels).expect(VALID);
    let _ = reg.register(Box::new(m.clone()));
    m
}

fn gauge(reg: &Registry, name: &str, help: &str, labels: &[&str]) -> IntGaugeVec {
    let m = IntGaugeVec::new(Opts::new(name, help), labels).expect(VALID);
    let _ = reg.register(Box::new(m.clone()));
    m
}

pub fn metrics() -> &'static Metrics {
    static METRICS: OnceLock<Metrics> = OnceLock::new();
    METRICS.get_or_init(|| {
        let r = Registry::new();
        let exp =
            |start, count| prometheus::exponential_buckets(start, 2.0, count).unwrap_or_default();
        Metrics {
            grpc_msg_duration: histogram(
                &r,
                "tikv_grpc_msg_duration_seconds",
                "Bucketed histogram of grpc server messages",
                &["type"],
                exp(0.00005, 20),
            ),
            grpc_msg_fail: counter(
                &r,
                "tikv_grpc_msg_fail_total",
                "Total number of handle grpc message failure",
                &["type"],
            ),
            sched_waiting: gauge(
                &r,
                "tikv_raw_scheduler_waiting",
                "Raw writes waiting for admission, by priority",
                &["priority"],
            ),
            sched_delay: histogram(
                &r,
                "tikv_raw_scheduler_delay_seconds",
                "Time from arrival to admission of raw writes, by priority",
                &["priority"],
                exp(0.0005, 16),
            ),
            sched_deadline_miss: counter(
                &r,
                "tikv_raw_scheduler_deadline_miss_total",
                "Raw writes admitted after their deadline, by priority",
                &["priority"],
            ),
            sched_decisions: counter(
                &r,
                "tikv_raw_scheduler_decisions_total",
                "Scheduling decisions on raw writes, by priority and decision",
                &["priority", "decision"],
            ),
            lock_wait_table: gauge(
                &r,
                "tikv_lock_manager_wait_table_status",
                "Pessimistic lock requests waiting, and wait-for edges",
                &["type"],
            ),
            lock_detect_error: counter(
                &r,
                "tikv_lock_manager_detect_error_total",
                "Lock waits refused by the deadlock detector",
                &["type"],
            ),
            gc_safe_point: gauge(
                &r,
                "tikv_gcworker_autogc_safe_point",
                "Safe point used for auto gc",
                &[],
            )
            .with_label_values(&[]),
            gc_keys: counter(
                &r,
                "tikv_gcworker_gc_keys",
                "Keys handled by background GC, by CF and what was done",
                &["cf", "tag"],
            ),
            registry: r,
        }
    })
}

/// Observes one gRPC command's latency when dropped.
pub struct GrpcTimer {
    kind: &'static str,
    start: Instant,
    failed: bool,
}

impl GrpcTimer {
    pub fn new(kind: &'static str) -> GrpcTimer {
        GrpcTimer {
            kind,
            start: Instant::now(),
            failed: false,
        }
    }

    pub fn fail(&mut self) {
        self.failed = true;
    }
}

impl Drop for GrpcTimer {
    fn drop(&mut self) {
        let m = metrics();
        m.grpc_msg_duration
            .with_label_values(&[self.kind])
            .observe(self.start.elapsed().as_secs_f64());
        if self.failed {
            m.grpc_msg_fail.with_label_values(&[self.kind]).inc();
        }
    }
}

/// The registry in Prometheus text format.
pub fn render() -> String {
    let mut buf = vec![];
    let encoder = prometheus::TextEncoder::new();
    let _ = prometheus::Encoder::encode(&encoder, &metrics().registry.gather(), &mut buf);
    String::from_utf8(buf).unwrap_or_default()
}

/// Feeds scheduler decisions into the metrics above. Label lookups are
/// resolved once here: the scheduler reports every decision, so the
/// per-event cost must stay a few atomic increments.
pub struct SchedulerMetrics {
    decisions: [[prometheus::IntCounter; DECISIONS.len()]; 3],
    delay: [prometheus::Histogram; 3],
    misses: [prometheus::IntCounter; 3],
    waiting: [prometheus::IntGauge; 3],
}

const DECISIONS: [Decision; 6] = [
    Decision::BaselineImmediate,
    Decision::CheckDelay,
    Decision::Scheduled,
    Decision::UrgentAdmit,
    Decision::Queued,
    Decision::Cancelled,
];

impl SchedulerMetrics {
    pub fn new() -> SchedulerMetrics {
        let m = metrics();
        let by_priority =
            |f: &dyn Fn(&str) -> prometheus::IntCounter| Priority::ALL.map(|p| f(p.name()));
        SchedulerMetrics {
            decisions: Priority::ALL.map(|p| {
                DECISIONS.map(|d| m.sched_decisions.with_label_values(&[p.name(), d.name()]))
            }),
            delay: Priority::ALL.map(|p| m.sched_delay.with_label_values(&[p.name()])),
            misses: by_priority(&|p| m.sched_deadline_miss.with_label_values(&[p])),
            waiting: Priority::ALL.map(|p| m.sched_waiting.with_label_values(&[p.name()])),
        }
    }
}

impl Default for SchedulerMetrics {
    fn default() -> Self {
        Self::new()
    }
}

impl SchedulerObserver for SchedulerMetrics {
    fn on_row(&self, row: &TraceRow) {
        let p = row.priority as usize;
        if let Some(i) = DECISIONS.iter().position(|d| *d == row.decision) {
            self.decisions[p][i].inc();
        }
        if row.decision.is_final() && row.decision != Decision::Cancelled {
            let delay = row.scheduled_ms.saturating_sub(row.arrival_ms);
            self.delay[p].observe(delay as f64 / 1000.0);
            if row.deadline_ms.is_some_and(|d| row.scheduled_ms > d) {
                self.misses[p].inc();
            }
        }
    }

    fn on_waiting(&self, waiting: [usize; 3]) {
        for (gauge, n) in self.waiting.iter().zip(waiting) {
            gauge.set(n as i64);
        }
    }
}
