//! Pessimistic lock waiting and deadlock detection against real
//! pd-server / tikv-server processes: waits woken by the holder's release,
//! wait timeouts, a deadlock between two official-client transactions, and
//! a bank workload of optimistic and pessimistic clients.

mod common;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use common::{direct, eventually, Direct, TestCluster};
use rand::Rng;
use tikal_proto::kvrpcpb::{self, Mutation, Op};
use tikv_client::{TimestampExt, Transaction, TransactionClient};

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
    let commit = d
        .tikv
        .kv_commit(kvrpcpb::CommitRequest {
            context: Some(d.ctx.clone()),
            start_version: waiter,
            keys: vec![b"k".to_vec()],
            commit_version: commit_ts,
        })
        .await
        .unwrap()
        .into_inner();
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

/// What happened to one side of the deadlock test.
#[derive(Debug, PartialEq)]
enum Fate {
    Deadlock,
    Committed,
}

/// Locks `key` in `txn`; on Deadlock rolls back, otherwise writes both
/// keys and commits.
async fn second_lock(mut txn: Transaction, key: &str, keys: [&str; 2]) -> Fate {
    match txn.get_for_update(key.to_owned()).await {
        Err(e) => {
            let text = format!("{e:?}");
            assert!(text.contains("Deadlock {"), "not a deadlock: {text}");
            assert!(text.contains("WaitForEntry"), "no wait chain: {text}");
            txn.rollback().await.unwrap();
            Fate::Deadlock
        }
        Ok(_) => {
            for k in keys {
                txn.put(k.to_owned(), format!("by-{key}")).await.unwrap();
            }
            txn.commit().await.unwrap();
            Fate::Committed
        }
    }
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

// ---- bank ----

const ACCOUNTS: usize = 100;
const INITIAL: i64 = 1_000;
const CLIENTS: usize = 8;

fn account(i: usize) -> String {
    format!("acct:{i:03}")
}

fn number(v: Option<Vec<u8>>) -> i64 {
    let v = v.expect("account exists");
    String::from_utf8(v).unwrap().parse().unwrap()
}

/// One transfer, recorded in the same transaction as the balance changes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct Transfer {
    from: usize,
    to: usize,
    amount: i64,
}

impl Transfer {
    fn encode(&self) -> String {
        format!("{}:{}:{}", self.from, self.to, self.amount)
    }

    fn decode(v: &[u8]) -> Transfer {
        let s = String::from_utf8(v.to_vec()).unwrap();
        let p: Vec<&str> = s.split(':').collect();
        Transfer {
            from: p[0].parse().unwrap(),
            to: p[1].parse().unwrap(),
            amount: p[2].parse().unwrap(),
        }
    }
}

fn record_key(client: usize, seq: u64) -> String {
    format!("xfer:{client}:{seq:08}")
}

/// One attempt at a transfer; Ok(None) when `from` cannot afford it.
async fn try_transfer(
    txn: &mut Transaction,
    pessimistic: bool,
    x: Transfer,
    record: &str,
) -> tikv_client::Result<Option<()>> {
    let (from, to) = (account(x.from), account(x.to));
    let (fb, tb) = if pessimistic {
        (
            number(txn.get_for_update(from.clone()).await?),
            number(txn.get_for_update(to.clone()).await?),
        )
    } else {
        (
            number(txn.get(from.clone()).await?),
            number(txn.get(to.clone()).await?),
        )
    };
    if fb < x.amount {
        return Ok(None);
    }
    txn.put(from, (fb - x.amount).to_string()).await?;
    txn.put(to, (tb + x.amount).to_string()).await?;
    txn.put(record.to_owned(), x.encode()).await?;
    txn.commit().await?;
    Ok(Some(()))
}

#[derive(Default, Debug)]
struct ClientLog {
    /// Transfers whose commit was acknowledged, by record key.
    committed: HashMap<String, Transfer>,
    /// Commits that failed after prewrite started: applied or not.
    unknown: HashMap<String, Transfer>,
    retries: u64,
}

async fn bank_client(c: TransactionClient, id: usize, until: Instant) -> ClientLog {
    let pessimistic = id % 2 == 1;
    let mut log = ClientLog::default();
    let mut seq = 0u64;
    while Instant::now() < until {
        let (from, to, amount) = {
            let mut rng = rand::thread_rng();
            let from = rng.gen_range(0..ACCOUNTS);
            let to = (from + rng.gen_range(1..ACCOUNTS)) % ACCOUNTS;
            (from, to, rng.gen_range(1..=100))
        };
        let x = Transfer { from, to, amount };
        seq += 1;
        let record = record_key(id, seq);
        let mut txn = if pessimistic {
            c.begin_pessimistic().await.unwrap()
        } else {
            c.begin_optimistic().await.unwrap()
        };
        match try_transfer(&mut txn, pessimistic, x, &record).await {
            Ok(Some(())) => {
                log.committed.insert(record, x);
            }
            Ok(None) => txn.rollback().await.unwrap(),
            Err(_) => {
                // Conflict, deadlock or lock timeout: roll back and move
                // on. If the rollback fails too, the commit may have landed.
                log.retries += 1;
                if txn.rollback().await.is_err() {
                    log.unknown.insert(record, x);
                }
            }
        }
    }
    log
}

/// Reads every balance in one snapshot; returns the total. A read may
/// give up on a lock it keeps meeting (an error, not a wrong answer).
async fn snapshot_total(c: &TransactionClient) -> tikv_client::Result<i64> {
    let mut r = c.snapshot(
        c.current_timestamp().await?,
        tikv_client::TransactionOptions::new_optimistic(),
    );
    let pairs: Vec<_> = r
        .scan(account(0)..=account(ACCOUNTS - 1), ACCOUNTS as u32 + 1)
        .await?
        .collect();
    assert_eq!(pairs.len(), ACCOUNTS);
    Ok(pairs
        .into_iter()
        .map(|p| number(Some(p.value().clone())))
        .sum())
}

#[tokio::test(flavor = "multi_thread")]
async fn bank_transfers_keep_the_total_and_apply_each_commit_once() {
    let secs: u64 = std::env::var("TIKAL_BANK_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(30);
    let t = TestCluster::start(1).await;
    let c = client(&t).await;
    let mut init = c.begin_optimistic().await.unwrap();
    for i in 0..ACCOUNTS {
        init.put(account(i), INITIAL.to_string()).await.unwrap();
    }
    init.commit().await.unwrap();
    let total = INITIAL * ACCOUNTS as i64;

    let until = Instant::now() + Duration::from_secs(secs);
    let mut workers = vec![];
    for id in 0..CLIENTS {
        let c = client(&t).await;
        workers.push(tokio::spawn(bank_client(c, id, until)));
    }
    let (mut snapshots, mut gave_up) = (0, 0);
    while Instant::now() < until {
        match snapshot_total(&c).await {
            Ok(sum) => {
                assert_eq!(sum, total, "a snapshot's total");
                snapshots += 1;
            }
            Err(_) => gave_up += 1,
        }
    }
    let mut logs = vec![];
    for w in workers {
        logs.push(w.await.unwrap());
    }

    // Final state: the total holds, and every balance is the initial one
    // moved by exactly the transfers whose records committed with it.
    assert_eq!(snapshot_total(&c).await.unwrap(), total);
    let mut r = c.begin_optimistic().await.unwrap();
    let records: HashMap<String, Transfer> = r
        .scan("xfer:".to_owned().."xfer;".to_owned(), u32::MAX)
        .await
        .unwrap()
        .map(|p| {
            let key = String::from_utf8(Vec::from(p.key().clone())).unwrap();
            (key, Transfer::decode(p.value()))
        })
        .collect();
    let mut expected = vec![INITIAL; ACCOUNTS];
    for x in records.values() {
        expected[x.from] -= x.amount;
        expected[x.to] += x.amount;
    }
    for (i, want) in expected.iter().enumerate() {
        let got = number(r.get(account(i)).await.unwrap());
        assert_eq!(got, *want, "balance of {}", account(i));
    }
    r.commit().await.unwrap();

    let mut by_mode = [0usize; 2];
    for (id, log) in logs.iter().enumerate() {
        by_mode[id % 2] += log.committed.len();
        for (key, x) in &log.committed {
            assert_eq!(records.get(key), Some(x), "acknowledged {key} is applied");
        }
    }
    for key in records.keys() {
        assert!(
            logs.iter()
                .any(|l| l.committed.contains_key(key) || l.unknown.contains_key(key)),
            "{key} was applied but never attempted"
        );
    }
    let retries: u64 = logs.iter().map(|l| l.retries).sum();
    eprintln!(
        "bank: {} optimistic and {} pessimistic transfers committed, {retries} retried, \
         {snapshots} snapshot reads ({gave_up} gave up on locks)",
        by_mode[0], by_mode[1]
    );
    assert!(by_mode[0] > 0 && by_mode[1] > 0, "both modes commit");
    assert!(snapshots > 0);
}
