//! `tikal replay` against a real cluster: every row written once with its
//! headers, the official client reads every key back, and the server trace
//! has one final decision per request.

mod common;

use std::collections::{BTreeMap, HashMap};
use std::process::Command;

use common::TestCluster;
use tikal_storage::scheduler::TRACE_HEADER;

fn replay(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_tikal"))
        .arg("replay")
        .args(args)
        .output()
        .expect("tikal runs")
}

/// 400 rows over 2 s, columns out of order, mixed priorities, some keys
/// written twice (the later row must win).
fn write_csv(path: &std::path::Path) -> BTreeMap<String, String> {
    let mut text = String::from("priority,key,arrival_time,value,request_max_delay\n");
    let mut expected = BTreeMap::new();
    for i in 0..400u32 {
        let prio = ["H", "M", "L", "normal"][i as usize % 4];
        let key = if i % 10 == 9 {
            format!("k{}", i - 9)
        } else {
            format!("k{i}")
        };
        let value = format!("v{i}");
        let ms = i * 5;
        let time = format!("2025-06-01T12:00:{:02}.{:03}Z", ms / 1000, ms % 1000);
        let delay = [0.05, 0.2, 0.5][i as usize % 3];
        text.push_str(&format!("{prio},{key},{time},{value},{delay}\n"));
        expected.insert(key, value);
    }
    std::fs::write(path, text).unwrap();
    expected
}

#[tokio::test(flavor = "multi_thread")]
async fn replayed_csv_is_written_once_per_row_and_traced() {
    let t = TestCluster::start(1).await;
    let dir = tempfile::tempdir().unwrap();
    let csv = dir.path().join("requests.csv");
    let expected = write_csv(&csv);

    let out = replay(&[
        "-csv",
        csv.to_str().unwrap(),
        "-pd",
        &t.pd(),
        "-table",
        "usertable",
        "-apiversion",
        "V1",
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("INSERT - Takes(s): "), "{stdout}");
    assert!(stdout.contains("Count: 400,"), "{stdout}");
    assert!(stdout.contains("99.99th(us): "), "{stdout}");
    assert!(stdout.contains("Errors: 0"), "{stdout}");

    let client = t.raw_client().await;
    for (key, value) in &expected {
        let got = client.get(format!("usertable:{key}")).await.unwrap();
        assert_eq!(got, Some(value.clone().into_bytes()), "key {key}");
    }

    let trace = t.cluster.store_dir(0).join("replay_trace_server.csv");
    let text = common::eventually(
        std::time::Duration::from_secs(10),
        "trace flush",
        || async {
            let text = std::fs::read_to_string(&trace).ok()?;
            (text.matches("line-").count() >= 400).then_some(text)
        },
    )
    .await;
    assert_eq!(text.lines().next(), Some(TRACE_HEADER));
    let mut finals: HashMap<String, usize> = HashMap::new();
    for line in text.lines().skip(1).filter(|l| l.starts_with("line-")) {
        let cols: Vec<&str> = line.split(',').collect();
        assert_eq!(cols.len(), 10, "{line}");
        if !matches!(cols[9], "check-delay" | "queued") {
            *finals.entry(cols[0].to_string()).or_default() += 1;
        }
    }
    assert_eq!(finals.len(), 400, "one request id per row");
    assert!(
        finals.values().all(|n| *n == 1),
        "exactly one final decision each"
    );
}

#[test]
fn bad_csv_names_line_and_column_and_exits_1() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing.csv");
    std::fs::write(&missing, "arrival_time,request_max_delay,priority,key\n").unwrap();
    let out = replay(&["-csv", missing.to_str().unwrap(), "-pd", "127.0.0.1:1"]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("line 1, column value: missing column"),
        "{err}"
    );

    let bad_time = dir.path().join("time.csv");
    std::fs::write(
        &bad_time,
        "arrival_time,request_max_delay,priority,key,value\n\
         2025-01-01T00:00:00,1,H,a,b\n\
         half past noon,1,H,a,b\n",
    )
    .unwrap();
    let out = replay(&["-csv", bad_time.to_str().unwrap(), "-pd", "127.0.0.1:1"]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("line 3, column arrival_time"), "{err}");
}

#[tokio::test(flavor = "multi_thread")]
async fn generated_requests_replay_and_report() {
    let t = TestCluster::start(1).await;
    let dir = tempfile::tempdir().unwrap();
    let csv = dir.path().join("gen.csv");
    let tikal = |args: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_tikal"))
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    tikal(&[
        "gen-requests",
        "--count",
        "300",
        "--rate",
        "600",
        "--burstiness",
        "3",
        "--keys",
        "1000000",
        "--seed",
        "3",
        "-o",
        csv.to_str().unwrap(),
    ]);
    let stdout = tikal(&["replay", "--csv", csv.to_str().unwrap(), "--pd", &t.pd()]);
    assert!(
        stdout.contains("Count: 300,") && stdout.contains("Errors: 0"),
        "{stdout}"
    );

    // Every generated row reads back (last writer wins for repeated keys).
    let mut rows = tikal_tools::replay::Rows::open(&csv).unwrap();
    let mut expected = BTreeMap::new();
    while let Some(r) = rows.next_row().unwrap() {
        expected.insert(r.key, r.value);
    }
    let client = t.raw_client().await;
    for (k, v) in &expected {
        let got = client.get(format!("usertable:{k}")).await.unwrap();
        assert_eq!(got.as_deref(), Some(v.as_bytes()), "key {k}");
    }

    let trace = t.cluster.store_dir(0).join("replay_trace_server.csv");
    common::eventually(
        std::time::Duration::from_secs(10),
        "trace flush",
        || async {
            let text = std::fs::read_to_string(&trace).ok()?;
            (text.matches("line-").count() >= 300).then_some(())
        },
    )
    .await;
    let html = dir.path().join("report.html");
    let report = tikal(&[
        "trace-report",
        &format!("edf={}", trace.display()),
        "--html",
        html.to_str().unwrap(),
    ]);
    let counted: u64 = report
        .lines()
        .filter(|l| l.starts_with("edf ") && !l.contains("weighted"))
        .map(|l| l.split_whitespace().nth(2).unwrap().parse::<u64>().unwrap())
        .sum();
    assert_eq!(counted, 300, "{report}");
    assert!(report.contains("weighted"), "{report}");
    assert!(std::fs::read_to_string(&html).unwrap().contains("<svg"));
}
