//! Deadline-aware scheduling of raw writes, end to end: metadata from the
//! seed's headers or kvproto's Context, the server trace, online policy
//! switches, and per-priority metrics.

mod common;

use std::time::Duration;

use common::{direct, eventually, get_json, TestCluster};
use tikal_proto::kvrpcpb::*;
use tikal_storage::scheduler::TRACE_HEADER;
use tonic::Code;

fn with_headers<T>(msg: T, headers: &[(&'static str, String)]) -> tonic::Request<T> {
    let mut req = tonic::Request::new(msg);
    for (k, v) in headers {
        req.metadata_mut().insert(*k, v.parse().unwrap());
    }
    req
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

/// Trace rows (as column vectors) for `request_id`, waiting for the flush.
async fn trace_rows(t: &TestCluster, request_id: &str) -> Vec<Vec<String>> {
    let path = t.cluster.store_dir(0).join("replay_trace_server.csv");
    eventually(Duration::from_secs(10), "trace rows", || async {
        let text = std::fs::read_to_string(&path).ok()?;
        assert_eq!(text.lines().next(), Some(TRACE_HEADER));
        let rows: Vec<Vec<String>> = text
            .lines()
            .skip(1)
            .map(|l| l.split(',').map(str::to_string).collect())
            .filter(|r: &Vec<String>| r[0] == request_id)
            .collect();
        rows.iter()
            .any(|r| !matches!(r[9].as_str(), "check-delay" | "queued"))
            .then_some(rows)
    })
    .await
}

/// The value of the first metric line starting with `prefix`.
fn metric(metrics: &str, prefix: &str) -> Option<f64> {
    metrics
        .lines()
        .find(|l| l.starts_with(prefix))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

async fn post_config(t: &TestCluster, body: &str) -> reqwest::StatusCode {
    reqwest::Client::new()
        .post(format!("http://{}/config", t.cluster.status_addrs[0]))
        .body(body.to_string())
        .send()
        .await
        .unwrap()
        .status()
}

#[tokio::test(flavor = "multi_thread")]
async fn header_metadata_reaches_the_trace_with_one_final_decision() {
    let t = TestCluster::start(1).await;
    let mut d = direct(&t).await;
    let arrival = now_ms();
    let req = with_headers(
        d.put(b"sched-key", b"v", ""),
        &[
            ("x-aaws-priority", "H".into()),
            ("x-aaws-arrival-ms", arrival.to_string()),
            ("x-aaws-deadline-ms", (arrival + 500).to_string()),
            ("x-aaws-request-id", "req-header-1".into()),
        ],
    );
    let resp = d.tikv.raw_put(req).await.unwrap().into_inner();
    assert!(
        resp.error.is_empty() && resp.region_error.is_none(),
        "{resp:?}"
    );
    assert_eq!(d.get(b"sched-key").await, Some(b"v".to_vec()));

    let rows = trace_rows(&t, "req-header-1").await;
    let finals: Vec<_> = rows.iter().filter(|r| r[9] != "queued").collect();
    assert_eq!(finals.len(), 1, "{rows:?}");
    let r = finals[0];
    assert_eq!(r[1], "HIGH");
    assert_eq!(r[2], arrival.to_string());
    assert_eq!(r[3], (arrival + 500).to_string());
    assert_eq!(r[4], "500");
    assert_eq!(r[9], "scheduled", "edf is the default policy");
}

#[tokio::test(flavor = "multi_thread")]
async fn context_priority_and_max_execution_duration_are_scheduling_hints() {
    let t = TestCluster::start(1).await;
    let mut d = direct(&t).await;
    let mut put = d.put(b"ctx-key", b"v", "");
    let ctx = put.context.as_mut().unwrap();
    ctx.priority = CommandPri::Low as i32;
    ctx.max_execution_duration_ms = 250;
    let req = with_headers(put, &[("x-aaws-request-id", "req-ctx".into())]);
    d.tikv.raw_put(req).await.unwrap();
    let rows = trace_rows(&t, "req-ctx").await;
    let r = rows.last().unwrap();
    assert_eq!(r[1], "LOW");
    assert_eq!(
        r[4], "250",
        "deadline = arrival + max_execution_duration_ms"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn malformed_metadata_is_invalid_argument_naming_the_header() {
    let t = TestCluster::start(1).await;
    let mut d = direct(&t).await;
    for (header, value) in [
        ("x-aaws-priority", "urgent"),
        ("x-aaws-deadline-ms", "tomorrow"),
        ("x-aaws-arrival-ms", "-5"),
    ] {
        let req = with_headers(d.put(b"bad-meta", b"v", ""), &[(header, value.into())]);
        let status = d.tikv.raw_put(req).await.unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument);
        assert!(status.message().contains(header), "{status:?}");
    }
    assert_eq!(d.get(b"bad-meta").await, None);
}

#[tokio::test(flavor = "multi_thread")]
async fn policy_switches_online_through_the_status_server() {
    let t = TestCluster::start(1).await;
    let status = &t.cluster.status_addrs[0];
    let cfg = get_json(&format!("http://{status}/config")).await;
    assert_eq!(cfg["scheduler"]["policy"], "edf");

    let mut d = direct(&t).await;
    for (policy, decision, id) in [
        ("fcfs", "baseline-immediate", "req-fcfs"),
        ("threshold", "scheduled", "req-threshold"),
        ("edf", "scheduled", "req-edf"),
    ] {
        let body = format!("{{\"scheduler.policy\": \"{policy}\"}}");
        assert_eq!(post_config(&t, &body).await, reqwest::StatusCode::OK);
        let cfg = get_json(&format!("http://{status}/config")).await;
        assert_eq!(cfg["scheduler"]["policy"], policy);
        let req = with_headers(
            d.put(id.as_bytes(), b"v", ""),
            &[("x-aaws-request-id", id.into())],
        );
        d.tikv.raw_put(req).await.unwrap();
        let rows = trace_rows(&t, id).await;
        assert_eq!(rows.last().unwrap()[9], decision, "{policy}: {rows:?}");
    }
    // Threshold records the seed's required slots: Medium needs 2.
    assert_eq!(trace_rows(&t, "req-threshold").await[0][8], "2");

    let bad = post_config(&t, r#"{"scheduler.policy": "lottery"}"#).await;
    assert_eq!(bad, reqwest::StatusCode::BAD_REQUEST);
    let bad = post_config(&t, r#"{"server.addr": "0.0.0.0:1"}"#).await;
    assert_eq!(bad, reqwest::StatusCode::BAD_REQUEST);
    let cfg = get_json(&format!("http://{status}/config")).await;
    assert_eq!(
        cfg["scheduler"]["policy"], "edf",
        "a refused change changes nothing"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn scheduler_metrics_count_decisions_and_misses_per_priority() {
    let t = TestCluster::start(1).await;
    let mut d = direct(&t).await;
    let past = now_ms() - 1_000;
    let req = with_headers(
        d.put(b"late", b"v", ""),
        &[
            ("x-aaws-priority", "LOW".into()),
            ("x-aaws-arrival-ms", (past - 100).to_string()),
            ("x-aaws-deadline-ms", past.to_string()),
        ],
    );
    d.tikv.raw_put(req).await.unwrap();
    // Past its deadline, the write still ran.
    assert_eq!(d.get(b"late").await, Some(b"v".to_vec()));
    let metrics = t.metrics(0).await;
    let value = |prefix: &str| -> f64 {
        metric(&metrics, prefix).unwrap_or_else(|| panic!("no {prefix} in\n{metrics}"))
    };
    assert!(value("tikv_raw_scheduler_deadline_miss_total{priority=\"LOW\"}") >= 1.0);
    assert!(
        value("tikv_raw_scheduler_decisions_total{decision=\"scheduled\",priority=\"LOW\"}") >= 1.0
    );
    assert!(metrics.contains("tikv_raw_scheduler_waiting{priority=\"HIGH\"} 0"));
    assert!(metrics.contains("tikv_raw_scheduler_delay_seconds_bucket"));
}

/// With the store's intake throttled by `[quota] foreground-write-bandwidth`,
/// writes back up in the scheduler, and edf lets a High that arrives behind
/// them through ahead of the Lows still waiting (fcfs would run it last).
#[tokio::test(flavor = "multi_thread")]
async fn under_a_write_quota_edf_serves_a_high_before_the_waiting_lows() {
    let t =
        TestCluster::start_with_config(1, "[quota]\nforeground-write-bandwidth = \"4KB\"\n").await;
    let mut d = direct(&t).await;
    let far = (now_ms() + 600_000).to_string();
    let headers = |priority: &str, id: &str| {
        [
            ("x-aaws-priority", priority.to_string()),
            ("x-aaws-deadline-ms", far.clone()),
            ("x-aaws-request-id", id.to_string()),
        ]
    };
    let lows: Vec<String> = (0..120).map(|i| format!("low-{i}")).collect();
    // Values large enough that the quota lets in only about 14 Lows a
    // second: many still wait when the High arrives, however slowly this
    // test reaches that point once it saw them waiting.
    let value = vec![b'v'; 256];
    let mut tasks = vec![];
    for id in &lows {
        let req = with_headers(d.put(id.as_bytes(), &value, ""), &headers("LOW", id));
        let mut tikv = d.tikv.clone();
        tasks.push(tokio::spawn(async move { tikv.raw_put(req).await }));
    }
    eventually(
        Duration::from_secs(20),
        "Lows held back by the quota",
        || async {
            let m = t.metrics(0).await;
            (metric(&m, "tikv_raw_scheduler_waiting{priority=\"LOW\"}")? >= 40.0).then_some(())
        },
    )
    .await;
    let high = with_headers(d.put(b"high", b"v", ""), &headers("HIGH", "high"));
    d.tikv.clone().raw_put(high).await.unwrap();
    for task in tasks {
        let resp = task.await.unwrap().unwrap().into_inner();
        assert!(
            resp.region_error.is_none() && resp.error.is_empty(),
            "{resp:?}"
        );
    }
    let high_at: u64 = trace_rows(&t, "high").await.last().unwrap()[5]
        .parse()
        .unwrap();
    let mut lows_after = 0;
    for id in &lows {
        let rows = trace_rows(&t, id).await;
        let last = rows.last().unwrap();
        assert!(
            matches!(last[9].as_str(), "scheduled" | "urgent-admit"),
            "{last:?}"
        );
        if last[5].parse::<u64>().unwrap() > high_at {
            lows_after += 1;
        }
    }
    assert!(
        lows_after >= 10,
        "only {lows_after} of the waiting Lows started after the High"
    );
    for id in &lows {
        assert_eq!(d.get(id.as_bytes()).await, Some(value.clone()), "{id}");
    }
    assert_eq!(d.get(b"high").await, Some(b"v".to_vec()));
}
