//! `tikal playground`: one command brings up PD + N stores that the
//! official client can use, prints the PD address, and Ctrl-C stops it all.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use tikal_tools::local_cluster::free_port;

#[tokio::test(flavor = "multi_thread")]
async fn playground_serves_clients_and_stops_cleanly_on_ctrl_c() {
    let dir = tempfile::tempdir().unwrap();
    let pd_port = free_port().unwrap();
    // No disk reserve: the test must not depend on the machine's free
    // space (see tests/common).
    let conf = tempfile::tempdir().unwrap();
    let store_config = conf.path().join("store.toml");
    std::fs::write(&store_config, "[storage]\nreserve-space = \"0\"\n").unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_tikal"))
        .args(["playground", "--stores", "2"])
        .arg("--store-config")
        .arg(&store_config)
        .arg("--data-dir")
        .arg(dir.path())
        .args(["--pd-port", &pd_port.to_string()])
        .args(["--store-port", &free_port().unwrap().to_string()])
        .args(["--status-port", &free_port().unwrap().to_string()])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();

    // Read stdout on a thread until the PD address is printed.
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let deadline = Instant::now() + Duration::from_secs(90);
    let pd_addr = loop {
        let line = rx
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            .unwrap_or_else(|_| panic!("no PD address printed\n{}", common::dump_logs(dir.path())));
        if let Some(addr) = line.strip_prefix("PD address: ") {
            break addr.to_string();
        }
    };
    assert_eq!(pd_addr, format!("127.0.0.1:{pd_port}"));

    let client = tikv_client::RawClient::new(vec![pd_addr.clone()])
        .await
        .unwrap();
    client
        .put("hello".to_owned(), "playground".to_owned())
        .await
        .unwrap();
    assert_eq!(
        client.get("hello".to_owned()).await.unwrap(),
        Some(b"playground".to_vec())
    );
    let stores = common::get_json(&format!("http://{pd_addr}/pd/api/v1/stores")).await;
    assert_eq!(stores["count"], 2, "--stores 2 runs two stores");

    // Ctrl-C: the playground stops its children and exits 0.
    // SAFETY: kill(2) on our own child's pid.
    unsafe {
        libc::kill(child.id() as i32, libc::SIGINT);
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(Instant::now() < deadline, "playground did not stop");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(status.success(), "playground exit: {status:?}");
    assert!(
        std::net::TcpStream::connect(&pd_addr).is_err(),
        "PD must be gone after Ctrl-C"
    );
}
