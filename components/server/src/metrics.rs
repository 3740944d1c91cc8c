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
}

pub fn metrics() -> &'static Metrics {
    static METRICS: OnceLock<Metrics> = OnceLock::new();
    METRICS.get_or_init(|| {
        let registry = Registry::new();
        let grpc_msg_duration = HistogramVec::new(
            HistogramOpts::new(
                "tikv_grpc_msg_duration_seconds",
                "Bucketed histogram of grpc server messages",
            )
            .buckets(prometheus::exponential_buckets(0.00005, 2.0, 20).unwrap_or_default()),
            &["type"],
        )
        .expect("metric definition is valid");
        let grpc_msg_fail = IntCounterVec::new(
            Opts::new(
                "tikv_grpc_msg_fail_total",
                "Total number of handle grpc message failure",
            ),
            &["type"],
        )
        .expect("metric definition is valid");
        let sched_waiting = IntGaugeVec::new(
            Opts::new(
                "tikv_raw_scheduler_waiting",
                "Raw writes waiting for admission, by priority",
            ),
            &["priority"],
        )
        .expect("metric definition is valid");
        let sched_delay = HistogramVec::new(
            HistogramOpts::new(
                "tikv_raw_scheduler_delay_seconds",
                "Time from arrival to admission of raw writes, by priority",
            )
            .buckets(prometheus::exponential_buckets(0.0005, 2.0, 16).unwrap_or_default()),
            &["priority"],
        )
        .expect("metric definition is valid");
        let sched_deadline_miss = IntCounterVec::new(
            Opts::new(
                "tikv_raw_scheduler_deadline_miss_total",
                "Raw writes admitted after their deadline, by priority",
            ),
            &["priority"],
        )
        .expect("metric definition is valid");
        let sched_decisions = IntCounterVec::new(
            Opts::new(
                "tikv_raw_scheduler_decisions_total",
                "Scheduling decisions on raw writes, by priority and decision",
            ),
            &["priority", "decision"],
        )
        .expect("metric definition is valid");
        for c in [
            Box::new(grpc_msg_duration.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(grpc_msg_fail.clone()),
            Box::new(sched_waiting.clone()),
            Box::new(sched_delay.clone()),
            Box::new(sched_deadline_miss.clone()),
            Box::new(sched_decisions.clone()),
        ] {
            let _ = registry.register(c);
        }
        Metrics {
            registry,
            grpc_msg_duration,
            grpc_msg_fail,
            sched_waiting,
            sched_delay,
            sched_deadline_miss,
            sched_decisions,
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
