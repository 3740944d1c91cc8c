//! Prometheus metrics, named as upstream TiKV names them.

use std::sync::OnceLock;
use std::time::Instant;

use prometheus::{HistogramOpts, HistogramVec, IntCounterVec, Opts, Registry};

pub struct Metrics {
    pub registry: Registry,
    /// Per gRPC command: count (`_count`) and latency.
    pub grpc_msg_duration: HistogramVec,
    pub grpc_msg_fail: IntCounterVec,
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
        for c in [
            Box::new(grpc_msg_duration.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(grpc_msg_fail.clone()),
        ] {
            let _ = registry.register(c);
        }
        Metrics {
            registry,
            grpc_msg_duration,
            grpc_msg_fail,
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
