//! The bank workload of the transactions issue: clients move money between
//! accounts in optimistic and pessimistic transactions, each transfer
//! recorded in the same transaction, while snapshot reads check the total.
//! [`run`] drives it next to whatever else a test does meanwhile (splits,
//! leader moves); [`Report::check`] asserts that the total never changed
//! and that exactly the acknowledged transfers (and none never attempted)
//! applied, once each.

use std::collections::HashMap;
use std::future::Future;
use std::time::{Duration, Instant};

use rand::Rng;
use tikv_client::{TimestampExt, Transaction, TransactionClient};

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

/// One attempt at a transfer, up to its commit; Ok(None) when `from`
/// cannot afford it.
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
    Ok(Some(()))
}

#[derive(Default, Debug)]
struct ClientLog {
    /// Transfers whose commit was acknowledged, by record key.
    committed: HashMap<String, Transfer>,
    /// Commits that failed after prewrite started: applied or not.
    unknown: HashMap<String, Transfer>,
    retries: u64,
    /// Transfers whose commit was asked for more than [`SLOW`] after
    /// their transaction began, with how long: the client's locks may
    /// have expired meanwhile (its lock TTL is 20 s, and its heartbeat
    /// stops at the first failure).
    slow: Vec<(String, Duration)>,
    /// Every transfer that reached its commit: start ts, record key, and
    /// how the commit ended (for a failure's report).
    commits: Vec<(u64, String, Transfer, String)>,
}

/// See [`ClientLog::slow`].
const SLOW: Duration = Duration::from_secs(10);

/// A pessimistic transfer whose puts end later than this after it began
/// is rolled back, not committed. The official Rust client (0.4) locks a
/// key again on `put`, at a new `for_update_ts`, and its lock heartbeat
/// stops at the first failure: its locks (TTL 20 s from the start) may
/// expire, another transaction's CheckTxnStatus may remove them (only the
/// lock goes, no rollback record, as TiKV does) and commit over the key,
/// and the `put` then locks it again without conflict, writing a balance
/// computed from the older read: a lost update TiKV would take the same
/// way. Before this bound, every lock of the transaction is still live.
const LOCKS_SURELY_LIVE: Duration = Duration::from_secs(15);

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
        // Before the start timestamp is taken, so that its locks expire
        // no sooner than 20 s after this.
        let began = Instant::now();
        let mut txn = if pessimistic {
            c.begin_pessimistic().await.unwrap()
        } else {
            c.begin_optimistic().await.unwrap()
        };
        let tried = try_transfer(&mut txn, pessimistic, x, &record).await;
        if !matches!(tried, Ok(Some(()))) {
            // Nothing can commit before the commit starts: roll back (at
            // most pessimistic locks, which also expire) and move on.
            log.retries += u64::from(tried.is_err());
            let _ = txn.rollback().await;
            continue;
        }
        if began.elapsed() > SLOW {
            log.slow.push((record.clone(), began.elapsed()));
        }
        if pessimistic && began.elapsed() > LOCKS_SURELY_LIVE {
            log.retries += 1;
            let _ = txn.rollback().await;
            continue;
        }
        let start_ts = txn.start_timestamp().version();
        let committed = txn.commit().await;
        let outcome = match &committed {
            Ok(ts) => format!("committed at {:?}", ts.as_ref().map(|t| t.version())),
            Err(e) => format!("failed: {e}"),
        };
        log.commits.push((start_ts, record.clone(), x, outcome));
        match committed {
            Ok(_) => {
                log.committed.insert(record, x);
            }
            Err(_) => {
                // Conflict, or a store lost mid-commit: the transfer may
                // have landed, and it is not rolled back. A rollback is
                // sent region by region (BatchRollback, as TiKV takes it,
                // rolls back the locks it finds), so after a primary that
                // committed with its answer lost it would roll back the
                // secondaries still locked: half a transfer (found by
                // tests/nemesis.rs). Readers resolve what is left by the
                // primary, as after any client that stops mid-commit.
                log.retries += 1;
                log.unknown.insert(record, x);
            }
        }
    }
    log
}

/// Reads every balance in one snapshot at `ts` (a fresh timestamp if
/// `None`); returns the timestamp and the balances. A read may give up on
/// a lock it keeps meeting (an error, not a wrong answer).
async fn snapshot_balances(
    c: &TransactionClient,
    ts: Option<u64>,
) -> tikv_client::Result<(u64, Vec<i64>)> {
    let ts = match ts {
        Some(ts) => tikv_client::Timestamp::from_version(ts),
        None => c.current_timestamp().await?,
    };
    let version = ts.version();
    let mut r = c.snapshot(ts, tikv_client::TransactionOptions::new_optimistic());
    let pairs: Vec<_> = r
        .scan(account(0)..=account(ACCOUNTS - 1), ACCOUNTS as u32 + 1)
        .await?
        .collect();
    assert_eq!(pairs.len(), ACCOUNTS);
    let balances = pairs
        .into_iter()
        .map(|p| number(Some(p.value().clone())))
        .collect();
    Ok((version, balances))
}

async fn snapshot_total(c: &TransactionClient) -> tikv_client::Result<i64> {
    Ok(snapshot_balances(c, None).await?.1.iter().sum())
}

/// A snapshot read whose total was wrong.
#[derive(Debug)]
struct WrongSnapshot {
    ts: u64,
    balances: Vec<i64>,
    /// The same snapshot read again once the run is over: the same
    /// balances mean the data at `ts` is wrong (a lost update, half a
    /// transfer), others that the first read missed or saw too much.
    again: Option<Vec<i64>>,
}

/// How long a bank runs: `TIKAL_BANK_SECS`, or `default` seconds.
pub fn secs(default: u64) -> Duration {
    let secs = std::env::var("TIKAL_BANK_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default);
    Duration::from_secs(secs)
}

async fn client(pd: &str) -> TransactionClient {
    TransactionClient::new(vec![pd.to_owned()])
        .await
        .expect("TransactionClient connects to PD")
}

/// The transaction and primary key of a `TxnNotFound` in `e`.
fn txn_not_found(e: &tikv_client::Error) -> Option<(u64, Vec<u8>)> {
    use tikv_client::Error;
    match e {
        Error::KeyError(ke) => {
            (ke.txn_not_found.as_ref()).map(|t| (t.start_ts, t.primary_key.clone()))
        }
        Error::MultipleKeyErrors(es) | Error::ExtractedErrors(es) => {
            es.iter().find_map(txn_not_found)
        }
        _ => None,
    }
}

/// What the official Go client does and the Rust one (0.4) does not: a
/// lock whose primary holds neither a lock nor a commit or rollback record
/// (its prewrite failed, and so did the rollback, while a store was down)
/// is answered `TxnNotFound` by CheckTxnStatus (as TiKV answers it), and
/// once the lock expired the client asks again with
/// `rollback_if_not_exist`. The Rust client means to, but its match misses
/// the error as its plan wraps it (`MultipleKeyErrors`), so every read of
/// the key fails. The bank asks itself, for its snapshot reads during the
/// run and its final reads. Asking before the lock expired is safe: the
/// rollback record makes a late prewrite of the primary fail, so a live
/// transaction only aborts.
async fn roll_back_missing_primary(pd: &str, c: &TransactionClient, start_ts: u64, primary: &[u8]) {
    // The next failed read asks again; why this one could not is printed,
    // for a run that keeps failing.
    let now = match c.current_timestamp().await {
        Ok(now) => now,
        Err(e) => return eprintln!("bank: no timestamp to roll back txn {start_ts}: {e}"),
    };
    let key = tikal_codec::mvcc_key::encode_key(primary);
    let reach = tokio::time::timeout(Duration::from_secs(10), super::direct_at_pd(pd, &key));
    let mut d = match reach.await {
        Ok(Ok(d)) => d,
        Ok(Err(e)) => return eprintln!("bank: cannot reach txn {start_ts}'s primary: {e:#}"),
        Err(_) => {
            return eprintln!("bank: no answer from PD or store for txn {start_ts}'s primary")
        }
    };
    let req = tikal_proto::kvrpcpb::CheckTxnStatusRequest {
        context: Some(d.ctx.clone()),
        primary_key: primary.to_vec(),
        lock_ts: start_ts,
        current_ts: now.version(),
        rollback_if_not_exist: true,
        ..Default::default()
    };
    let asked = std::time::Instant::now();
    let answer =
        tokio::time::timeout(Duration::from_secs(10), d.tikv.kv_check_txn_status(req)).await;
    eprintln!(
        "bank: rolled back txn {start_ts}, whose primary was never written ({:?}): {answer:?}",
        asked.elapsed()
    );
}

/// The total, the transfer records by key and every balance, read once the
/// clients stopped.
async fn final_state(
    c: &TransactionClient,
) -> tikv_client::Result<(i64, HashMap<String, Transfer>, Vec<i64>)> {
    let total = snapshot_total(c).await?;
    // Read only: an error may drop it unfinished.
    let options =
        tikv_client::TransactionOptions::new_optimistic().drop_check(tikv_client::CheckLevel::None);
    let mut r = c.begin_with_options(options).await?;
    let records = r
        .scan("xfer:".to_owned().."xfer;".to_owned(), u32::MAX)
        .await?
        .map(|p| {
            let key = String::from_utf8(Vec::from(p.key().clone())).unwrap();
            (key, Transfer::decode(p.value()))
        })
        .collect();
    let mut balances = vec![];
    for i in 0..ACCOUNTS {
        balances.push(number(r.get(account(i)).await?));
    }
    r.commit().await?;
    Ok((total, records, balances))
}

/// What a bank run saw.
pub struct Report {
    logs: Vec<ClientLog>,
    /// Transfer records found at the end, by key.
    records: HashMap<String, Transfer>,
    /// Balances at the end, and as the records say they must be.
    balances: Vec<i64>,
    expected: Vec<i64>,
    final_total: i64,
    snapshots: u64,
    gave_up: u64,
    wrong: Vec<WrongSnapshot>,
}

/// Runs the bank against the cluster whose PD is at `pd` for `length`
/// while `during(until)` runs beside it, then reads the final state
/// (retrying for up to a minute: `during` may have left locks behind whose
/// transactions a store's death cut short).
pub async fn run<F, Fut>(pd: &str, length: Duration, during: F) -> Report
where
    F: FnOnce(Instant) -> Fut,
    Fut: Future<Output = ()>,
{
    let c = client(pd).await;
    let mut init = c.begin_optimistic().await.unwrap();
    for i in 0..ACCOUNTS {
        init.put(account(i), INITIAL.to_string()).await.unwrap();
    }
    init.commit().await.unwrap();

    let until = Instant::now() + length;
    let mut workers = vec![];
    for id in 0..CLIENTS {
        let c = client(pd).await;
        workers.push(tokio::spawn(bank_client(c, id, until)));
    }
    let reads = async {
        let (mut snapshots, mut gave_up, mut wrong) = (0, 0, vec![]);
        while Instant::now() < until {
            match snapshot_balances(&c, None).await {
                Ok((ts, balances)) => {
                    if balances.iter().sum::<i64>() != INITIAL * ACCOUNTS as i64 {
                        eprintln!("bank: a wrong snapshot at {ts}: {balances:?}");
                        wrong.push(WrongSnapshot {
                            ts,
                            balances,
                            again: None,
                        });
                    }
                    snapshots += 1;
                }
                Err(e) => {
                    gave_up += 1;
                    // An orphan lock would fail every later read of its
                    // key (see `roll_back_missing_primary`).
                    if let Some((start_ts, primary)) = txn_not_found(&e) {
                        roll_back_missing_primary(pd, &c, start_ts, &primary).await;
                    }
                }
            }
        }
        (snapshots, gave_up, wrong)
    };
    let ((snapshots, gave_up, mut wrong), ()) = tokio::join!(reads, during(until));
    let mut logs = vec![];
    for w in workers {
        logs.push(w.await.unwrap());
    }

    let deadline = Instant::now() + Duration::from_secs(60);
    let (final_total, records, balances) = loop {
        match final_state(&c).await {
            Ok(state) => break state,
            Err(e) if Instant::now() > deadline => panic!("reading the bank's final state: {e}"),
            Err(e) => {
                if let Some((start_ts, primary)) = txn_not_found(&e) {
                    roll_back_missing_primary(pd, &c, start_ts, &primary).await;
                }
                tokio::time::sleep(Duration::from_millis(200)).await
            }
        }
    };
    for w in &mut wrong {
        w.again = snapshot_balances(&c, Some(w.ts)).await.ok().map(|r| r.1);
    }
    let mut expected = vec![INITIAL; ACCOUNTS];
    for x in records.values() {
        expected[x.from] -= x.amount;
        expected[x.to] += x.amount;
    }
    Report {
        logs,
        records,
        balances,
        expected,
        final_total,
        snapshots,
        gave_up,
        wrong,
    }
}

impl Report {
    /// The total holds; every balance is the initial one moved by exactly
    /// the transfers whose records committed with it; every acknowledged
    /// transfer applied, and none that was never attempted.
    pub fn check(&self) {
        let slow: Vec<_> = self.logs.iter().flat_map(|l| &l.slow).collect();
        if !slow.is_empty() {
            eprintln!("bank: transfers asked to commit over {SLOW:?} after they began: {slow:?}");
        }
        for w in &self.wrong {
            self.explain(w);
        }
        assert!(
            self.wrong.is_empty(),
            "{} snapshots' totals were wrong",
            self.wrong.len()
        );
        assert_eq!(self.final_total, INITIAL * ACCOUNTS as i64);
        let off: Vec<usize> = (0..ACCOUNTS)
            .filter(|i| self.balances[*i] != self.expected[*i])
            .collect();
        if !off.is_empty() {
            // The transfers over those accounts whose record is missing.
            for (id, log) in self.logs.iter().enumerate() {
                for (ts, key, x, how) in &log.commits {
                    let touches = off.contains(&x.from) || off.contains(&x.to);
                    if touches && !self.records.contains_key(key) {
                        eprintln!(
                            "bank: client {id} txn {ts} {key} {x:?} without its record: {how}"
                        );
                    }
                }
            }
        }
        for (i, (got, want)) in self.balances.iter().zip(&self.expected).enumerate() {
            assert_eq!(got, want, "balance of {}", account(i));
        }
        let mut by_mode = [0usize; 2];
        for (id, log) in self.logs.iter().enumerate() {
            by_mode[id % 2] += log.committed.len();
            for (key, x) in &log.committed {
                assert_eq!(
                    self.records.get(key),
                    Some(x),
                    "acknowledged {key} is applied"
                );
            }
        }
        for key in self.records.keys() {
            assert!(
                self.logs
                    .iter()
                    .any(|l| l.committed.contains_key(key) || l.unknown.contains_key(key)),
                "{key} was applied but never attempted"
            );
        }
        let retries: u64 = self.logs.iter().map(|l| l.retries).sum();
        eprintln!(
            "bank: {} optimistic and {} pessimistic transfers committed, {retries} retried, \
             {} snapshot reads ({} gave up on locks)",
            by_mode[0], by_mode[1], self.snapshots, self.gave_up
        );
        assert!(by_mode[0] > 0 && by_mode[1] > 0, "both modes commit");
        assert!(self.snapshots > 0);
    }

    /// Prints what a wrong snapshot differs in and the transfers that
    /// could explain it.
    fn explain(&self, w: &WrongSnapshot) {
        let total: i64 = w.balances.iter().sum();
        let off = total - INITIAL * ACCOUNTS as i64;
        let again_total = w.again.as_ref().map(|b| b.iter().sum::<i64>());
        let differs: Vec<_> = match &w.again {
            Some(again) => (0..ACCOUNTS)
                .filter(|i| again[*i] != w.balances[*i])
                .map(|i| (account(i), w.balances[i], again[i]))
                .collect(),
            None => vec![],
        };
        let suspects: Vec<_> = (self.logs.iter().enumerate())
            .flat_map(|(id, l)| {
                let done = l
                    .committed
                    .iter()
                    .map(move |(k, x)| (id, "committed", k, x));
                done.chain(l.unknown.iter().map(move |(k, x)| (id, "unknown", k, x)))
            })
            .filter(|(.., x)| x.amount == off.abs())
            .map(|(id, how, k, x)| {
                let applied = self.records.contains_key(k.as_str());
                format!("client {id} {how} {k} {x:?} (record found at the end: {applied})")
            })
            .collect();
        eprintln!(
            "bank: the snapshot at {} summed to {total} ({off:+}); read again after the run: \
             {again_total:?}, differing in (account, first read, second read) {differs:?}; \
             final total {}; transfers of {}: {suspects:?}",
            w.ts,
            self.final_total,
            off.abs()
        );
    }
}
