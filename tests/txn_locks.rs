//! Pessimistic lock waiting and deadlock detection against real
//! pd-server / tikv-server processes: waits woken by the holder's release,
//! wait timeouts, a deadlock between two official-client transactions, and
//! a bank workload of optimistic and pessimistic clients.

mod common;

use std::time::Duration;

use common::{bank, direct, eventually, second_lock, Direct, Fate, TestCluster};
use tikal_proto::kvrpcpb::{self, Mutation, Op};
use tikv_client::{TimestampExt, TransactionClient};

async fn client(t: &TestCluster) -> TransactionClient {
    TransactionClient::new(vec![t.pd()])
        .await
        .expect("TransactionClient connects to PD")
}

/// The store's lock-wait gauge for `kind` (waiters | wait_for_edges).
async fn wait_table(t: &TestCluster, kind: &str) -> Option<i64> {
    let body = t.metrics(0).await;
    let prefix = format!("tikv_lock_manager_wait_table_status{{type=\"{kind}\"}} ");
    body.lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .and_then(|v| v.trim().parse().ok())
}

async fn waiters_become(t: &TestCluster, n: i64) {
    eventually(
        Duration::from_secs(20),
        &format!("{n} lock waiters on the store"),
        || async { (wait_table(t, "waiters").await == Some(n)).then_some(()) },
    )
    .await;
}

fn lock_request(
    d: &Direct,
    key: &[u8],
    start_ts: u64,
    wait_ms: i64,
) -> kvrpcpb::PessimisticLockRequest {
    kvrpcpb::PessimisticLockRequest {
        context: Some(d.ctx.clone()),
        mutations: vec![Mutation {
            op: Op::PessimisticLock as i32,
            key: key.to_vec(),
            ..Default::default()
        }],
        primary_lock: key.to_vec(),
        start_version: start_ts,
        for_update_ts: start_ts,
        lock_ttl: 20_000,
        wait_timeout: wait_ms,
        ..Default::default()
    }
}

async fn lock(d: &Direct, req: kvrpcpb::PessimisticLockRequest) -> Vec<kvrpcpb::KeyError> {
    let mut tikv = d.tikv.clone();
    let resp = tikv.kv_pessimistic_lock(req).await.unwrap().into_inner();
    assert!(resp.region_error.is_none(), "{resp:?}");
    resp.errors
}

/// Spawns a lock request that is expected to wait; returns its handle.
fn spawn_lock(
    d: &Direct,
    req: kvrpcpb::PessimisticLockRequest,
) -> tokio::task::JoinHandle<Vec<kvrpcpb::KeyError>> {
    let d = Direct {
        tikv: d.tikv.clone(),
        ctx: d.ctx.clone(),
        channel: d.channel.clone(),
    };
    tokio::spawn(async move { lock(&d, req).await })
}

/// Generous bound for a woken waiter to answer: far below its own wait.
const WAKE_BOUND: Duration = Duration::from_secs(15);

#[tokio::test(flavor = "multi_thread")]
async fn a_waiting_lock_request_is_woken_by_release_and_times_out_otherwise() {
    let t = TestCluster::start(1).await;
    let c = client(&t).await;
    let mut d = direct(&t).await;
    let ts = || async { c.current_timestamp().await.unwrap().version() };

    // Without waiting (negative wait_timeout) a held key answers at once.
    let holder = ts().await;
    assert!(lock(&d, lock_request(&d, b"k", holder, -1))
        .await
        .is_empty());
    let errs = lock(&d, lock_request(&d, b"k", ts().await, -1)).await;
    assert_eq!(errs.len(), 1);
    assert_eq!(errs[0].locked.as_ref().unwrap().lock_version, holder);

    // A short wait that nobody ends times out with KeyIsLocked and leaves
    // no waiter behind.
    let errs = lock(&d, lock_request(&d, b"k", ts().await, 100)).await;
    assert_eq!(errs[0].locked.as_ref().unwrap().lock_version, holder);
    waiters_become(&t, 0).await;

    // A long wait is woken by the holder's rollback and takes the lock.
    let waiter = ts().await;
    let pending = spawn_lock(&d, lock_request(&d, b"k", waiter, 600_000));
    waiters_become(&t, 1).await;
    assert!(!pending.is_finished());
    let resp = d
        .tikv
        .kv_pessimistic_rollback(kvrpcpb::PessimisticRollbackRequest {
            context: Some(d.ctx.clone()),
            start_version: holder,
            for_update_ts: holder,
            keys: vec![b"k".to_vec()],
        })
        .await
        .unwrap()
        .into_inner();
    assert!(resp.errors.is_empty(), "{resp:?}");
    let errs = tokio::time::timeout(WAKE_BOUND, pending)
        .await
        .expect("the release wakes the waiter")
        .unwrap();
    assert!(errs.is_empty(), "the waiter takes the lock: {errs:?}");
    let locks = c
        .scan_locks(&c.current_timestamp().await.unwrap(), .., 10)
        .await
        .unwrap();
    assert_eq!(locks.len(), 1);
    assert_eq!(locks[0].lock_version, waiter);
    waiters_become(&t, 0).await;

    // A holder that commits after the waiter's for_update_ts turns the
    // woken wait into a WriteConflict, so the client retries.
    let next = ts().await;
    let pending = spawn_lock(&d, lock_request(&d, b"k", next, 600_000));
    waiters_become(&t, 1).await;
    let prewrite = d
        .tikv
        .kv_prewrite(kvrpcpb::PrewriteRequest {
            for_update_ts: waiter,
            pessimistic_actions: vec![
                kvrpcpb::prewrite_request::PessimisticAction::DoPessimisticCheck as i32,
            ],
            ..d.prewrite(b"k", b"v", waiter, 20_000)
        })
        .await
        .unwrap()
        .into_inner();
    assert!(prewrite.errors.is_empty(), "{prewrite:?}");
    let commit_ts = ts().await;
    let commit = d.commit(&[b"k"], waiter, commit_ts).await;
    assert!(commit.error.is_none(), "{commit:?}");
    let errs = tokio::time::timeout(WAKE_BOUND, pending)
        .await
        .expect("the commit wakes the waiter")
        .unwrap();
    let conflict = errs[0].conflict.as_ref().expect("WriteConflict");
    assert_eq!(conflict.conflict_commit_ts, commit_ts);
    assert_eq!(
        conflict.reason,
        kvrpcpb::write_conflict::Reason::PessimisticRetry as i32
    );
    waiters_become(&t, 0).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn two_transactions_locking_in_opposite_orders_one_deadlocks_one_commits() {
    let t = TestCluster::start(1).await;
    let c = client(&t).await;
    let mut t1 = c.begin_pessimistic().await.unwrap();
    let mut t2 = c.begin_pessimistic().await.unwrap();
    t1.get_for_update("A".to_owned()).await.unwrap();
    t2.get_for_update("B".to_owned()).await.unwrap();

    // t1 waits on B; then t2 asks for A, closing the cycle.
    let first = tokio::spawn(second_lock(t1, "B", ["A", "B"]));
    waiters_become(&t, 1).await;
    let second = tokio::spawn(second_lock(t2, "A", ["A", "B"]));
    let mut fates = vec![first.await.unwrap(), second.await.unwrap()];
    fates.sort_by_key(|f| matches!(f, Fate::Committed));
    assert_eq!(fates, vec![Fate::Deadlock, Fate::Committed]);

    // The winner's writes are there, and nothing is left waiting.
    let mut r = c.begin_optimistic().await.unwrap();
    let a = r.get("A".to_owned()).await.unwrap().unwrap();
    let b = r.get("B".to_owned()).await.unwrap().unwrap();
    r.commit().await.unwrap();
    assert_eq!(a, b, "both keys written by the same winner");
    waiters_become(&t, 0).await;
    assert_eq!(wait_table(&t, "wait_for_edges").await, Some(0));
    let metrics = t.metrics(0).await;
    assert!(
        metrics.contains("tikv_lock_manager_detect_error_total{type=\"deadlock\"} 1"),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn bank_transfers_keep_the_total_and_apply_each_commit_once() {
    let t = TestCluster::start(1).await;
    let report = bank::run(&t.pd(), bank::secs(30), |_| std::future::ready(())).await;
    report.check();
}
