//! Percolator scenarios as data, as toydb's goldenscripts: each file in
//! `testscripts/` is a sequence of commands run against the in-memory
//! engine, followed by the output they must produce. Commands decide
//! exactly as in a store ([`WriteCommand::process`]) and their batches
//! apply through the same raw apply path as a Raft entry
//! ([`crate::command::apply_command`]); only the region check, latches and
//! Raft are left out. Regenerate the expected output after a deliberate
//! change with `UPDATE_GOLDENFILES=1 cargo test -p tikal-storage scenarios`
//! and review the diff.
//!
//! Commands (keys are UTF-8 strings; `K...` means one or more keys):
//!
//! ```text
//! prewrite put.K=V del.K lock.K insert.K=V check.K start=T primary=K
//!          [ttl=N] [for_update=T] [min_commit=T] [max_commit=T] [txn_size=N]
//!          [async_commit] [one_pc] [secondary=K]... [pessimistic=K]...
//!          [skip_constraint_check] [exist=K]... [not_exist=K]...
//!          [assertion=fast|strict]   (the mutations' assertions, and their level)
//! commit K... start=T commit=T
//! rollback K... start=T                     (BatchRollback)
//! cleanup K start=T [current=T]
//! check_txn_status K lock=T [caller=T] [current=T] [rollback_if_not_exist]
//!                  [force_sync_commit] [resolving_pessimistic] [verify_primary]
//! check_secondary_locks K... start=T
//! resolve_lock [K...] txn=START@COMMIT...    (COMMIT 0 = roll back)
//! heart_beat K start=T ttl=N
//! pessimistic_lock K... primary=K start=T for_update=T [ttl=N] [return_values]
//!                  [check_existence] [wait] [lock_only_if_exists]
//!                  [not_exist=K]   (K's mutation asserts NotExist: an insert)
//! pessimistic_rollback K... start=T for_update=T
//! gc safe_point=T
//! get K ts=T            scan [from=K] [to=K] ts=T [limit=N] [reverse] [key_only]
//!   (reads also take resolved=T and committed=T: the context's
//!   resolved_locks and committed_locks, each repeatable; and rc: a
//!   read-committed read)
//! scan_lock max_ts=T    max_ts       dump
//! ```
//!
//! Timestamps in scripts are small numbers, or `max` for `u64::MAX`. A
//! lock's TTL counts in milliseconds of the physical part (`ts >> 18`), so
//! expiry tests write timestamps as `ms.N`, meaning `N << 18`.

use std::error::Error;
use std::fmt::Write as _;
use std::sync::Arc;

use goldenscript::{Argument, Command, Context};
use tikal_engine::{Cf, MemEngine};
use tikal_proto::kvrpcpb;

use super::commands::*;
use super::lock_wait::LockWaits;
use super::reads::{self, ScanRange};
use super::{ConcurrencyManager, TxnError, TxnResult};
use crate::command::{apply_command, RawCommand};
use crate::mvcc::codec::{decode_key, split_ts};
use crate::mvcc::record::{Lock, Write};
use crate::mvcc::MvccReader;
use crate::StorageError;

type Res<T> = Result<T, Box<dyn Error>>;

/// One script's store: an engine, a concurrency manager, lock waits.
struct Runner {
    engine: MemEngine,
    cm: ConcurrencyManager,
    waits: Arc<LockWaits>,
}

impl Runner {
    fn new() -> Self {
        Runner {
            engine: MemEngine::new(),
            cm: ConcurrencyManager::default(),
            waits: Arc::new(LockWaits::default()),
        }
    }

    /// Decides, applies the batch if the command succeeded, and releases
    /// the command's in-memory locks: what `TxnStorage::execute` does
    /// around Raft.
    fn execute<C: WriteCommand>(&mut self, cmd: &C) -> Res<TxnResult<C::Output>> {
        let (out, batch) = {
            let mut p = ProcessContext::new(&self.engine, &self.cm, &self.waits);
            let out = cmd.process(&mut p);
            (out, p.batch)
        };
        if out.is_ok() && !batch.is_empty() {
            let cmd = RawCommand {
                ops: batch.ops,
                now: 0,
            };
            if let Err(e) = apply_command(&mut self.engine, cmd)? {
                return Err(format!("apply failed: {e}").into());
            }
        }
        self.cm.release(&batch.memory_locked);
        Ok(out)
    }

    fn reader(&self) -> MvccReader<'_> {
        MvccReader::new(&self.engine)
    }
}

/// A command's arguments: positional values, `key=value` options, and
/// flags (positional words the command knows).
struct Args<'a> {
    name: &'a str,
    args: Vec<&'a Argument>,
}

impl<'a> Args<'a> {
    fn new(c: &'a Command) -> Self {
        Args {
            name: &c.name,
            args: c.args.iter().collect(),
        }
    }

    /// Removes and returns every value of option `key`.
    /// A read's context: the transactions the client resolved
    /// (`resolved=T`) and found committed (`committed=T`), each repeatable.
    fn read_ctx(&mut self) -> Res<kvrpcpb::Context> {
        let rc = self.flag("rc");
        let mut ts = |key| -> Res<Vec<u64>> { self.all(key).iter().map(|v| parse_ts(v)).collect() };
        Ok(kvrpcpb::Context {
            resolved_locks: ts("resolved")?,
            committed_locks: ts("committed")?,
            isolation_level: match rc {
                true => kvrpcpb::IsolationLevel::Rc as i32,
                false => kvrpcpb::IsolationLevel::Si as i32,
            },
            ..Default::default()
        })
    }

    fn all(&mut self, key: &str) -> Vec<String> {
        let mut out = vec![];
        self.args.retain(|a| match a {
            Argument::KeyValue(k, v) if k == key => {
                out.push(v.clone());
                false
            }
            _ => true,
        });
        out
    }

    fn opt(&mut self, key: &str) -> Option<String> {
        self.all(key).pop()
    }

    fn ts_opt(&mut self, key: &str) -> Res<Option<u64>> {
        self.opt(key).map(|v| parse_ts(&v)).transpose()
    }

    fn ts(&mut self, key: &str) -> Res<u64> {
        self.ts_opt(key)?
            .ok_or_else(|| format!("{}: {key}= is required", self.name).into())
    }

    fn flag(&mut self, name: &str) -> bool {
        let before = self.args.len();
        self.args
            .retain(|a| !matches!(a, Argument::Positional(p) if p == name));
        self.args.len() != before
    }

    /// Every remaining positional argument, as keys.
    fn keys(&mut self) -> Vec<Vec<u8>> {
        let mut out = vec![];
        self.args.retain(|a| match a {
            Argument::Positional(p) => {
                out.push(p.as_bytes().to_vec());
                false
            }
            _ => true,
        });
        out
    }

    fn key(&mut self) -> Res<Vec<u8>> {
        let mut keys = self.keys();
        match keys.len() {
            1 => Ok(keys.remove(0)),
            n => Err(format!("{}: expected one key, got {n}", self.name).into()),
        }
    }

    /// Fails on anything not consumed: a typo must not pass silently.
    fn done(self) -> Res<()> {
        match self.args.first() {
            None => Ok(()),
            Some(a) => Err(format!("{}: unexpected argument {a:?}", self.name).into()),
        }
    }
}

/// `N`, `max`, or `ms.N` for a timestamp whose physical part is N ms.
fn parse_ts(v: &str) -> Res<u64> {
    match v.strip_prefix("ms.") {
        Some(ms) => Ok(ms.parse::<u64>()? << 18),
        None if v == "max" => Ok(u64::MAX),
        None => Ok(v.parse()?),
    }
}

fn s(k: &[u8]) -> String {
    String::from_utf8_lossy(k).into_owned()
}

fn fmt_lock(l: &Lock) -> String {
    let mut o = format!(
        "{:?} primary={} start={} ttl={}",
        l.lock_type,
        s(&l.primary),
        l.ts,
        l.ttl
    );
    if let Some(v) = &l.short_value {
        let _ = write!(o, " value={}", s(v));
    }
    for (name, v) in [
        ("for_update", l.for_update_ts),
        ("txn_size", l.txn_size),
        ("min_commit", l.min_commit_ts),
    ] {
        if v > 0 {
            let _ = write!(o, " {name}={v}");
        }
    }
    if l.use_async_commit {
        let secondaries: Vec<String> = l.secondaries.iter().map(|k| s(k)).collect();
        let _ = write!(o, " async_commit secondaries=[{}]", secondaries.join(","));
    }
    o
}

fn fmt_write(w: &Write) -> String {
    let mut o = format!("{:?} start={}", w.write_type, w.start_ts);
    if let Some(v) = &w.short_value {
        let _ = write!(o, " value={}", s(v));
    }
    if w.has_overlapped_rollback {
        o.push_str(" overlapped_rollback");
    }
    o
}

fn fmt_key_error(e: &kvrpcpb::KeyError) -> String {
    if let Some(l) = &e.locked {
        let mut o = format!(
            "KeyIsLocked key={} primary={} start={} ttl={} type={:?}",
            s(&l.key),
            s(&l.primary_lock),
            l.lock_version,
            l.lock_ttl,
            kvrpcpb::Op::try_from(l.lock_type).unwrap_or(kvrpcpb::Op::Put)
        );
        if l.min_commit_ts > 0 {
            let _ = write!(o, " min_commit={}", l.min_commit_ts);
        }
        if l.use_async_commit {
            o.push_str(" async_commit");
        }
        return o;
    }
    if let Some(c) = &e.conflict {
        return format!(
            "WriteConflict key={} start={} conflict_start={} conflict_commit={} reason={:?}",
            s(&c.key),
            c.start_ts,
            c.conflict_ts,
            c.conflict_commit_ts,
            kvrpcpb::write_conflict::Reason::try_from(c.reason)
                .unwrap_or(kvrpcpb::write_conflict::Reason::Unknown)
        );
    }
    if let Some(f) = &e.assertion_failed {
        return format!(
            "AssertionFailed key={} start={} assertion={:?} existing_start={} existing_commit={}",
            s(&f.key),
            f.start_ts,
            kvrpcpb::Assertion::try_from(f.assertion).unwrap_or_default(),
            f.existing_start_ts,
            f.existing_commit_ts
        );
    }
    if let Some(a) = &e.already_exist {
        return format!("AlreadyExist key={}", s(&a.key));
    }
    if let Some(t) = &e.txn_not_found {
        return format!(
            "TxnNotFound start={} primary={}",
            t.start_ts,
            s(&t.primary_key)
        );
    }
    if let Some(l) = e
        .primary_mismatch
        .as_ref()
        .and_then(|p| p.lock_info.as_ref())
    {
        return format!(
            "PrimaryMismatch key={} primary={} start={}",
            s(&l.key),
            s(&l.primary_lock),
            l.lock_version
        );
    }
    if let Some(c) = &e.commit_ts_expired {
        return format!(
            "CommitTsExpired start={} attempted={} min_commit={}",
            c.start_ts, c.attempted_commit_ts, c.min_commit_ts
        );
    }
    if let Some(d) = &e.deadlock {
        let chain: Vec<String> = d
            .wait_chain
            .iter()
            .map(|w| format!("{}->{}", w.txn, w.wait_for_txn))
            .collect();
        return format!("Deadlock lock_ts={} chain=[{}]", d.lock_ts, chain.join(","));
    }
    if !e.retryable.is_empty() {
        return format!("retryable: {}", e.retryable);
    }
    format!("abort: {}", e.abort)
}

/// The outcome line(s) of a command.
fn outcome<T>(r: TxnResult<T>, ok: impl FnOnce(T) -> String) -> String {
    match r {
        Ok(v) => ok(v),
        Err(TxnError::Key(errors)) => errors
            .iter()
            .map(|e| format!("error: {}\n", fmt_key_error(e)))
            .collect(),
        Err(TxnError::Storage(StorageError::InvalidArgument(m))) => {
            format!("invalid argument: {m}\n")
        }
        Err(TxnError::Storage(e)) => format!("storage error: {e}\n"),
    }
}

fn ok_unit(_: ()) -> String {
    "ok\n".into()
}

impl Runner {
    fn prewrite(&mut self, a: &mut Args<'_>) -> Res<String> {
        let mut mutations = vec![];
        let mut rest = vec![];
        for arg in std::mem::take(&mut a.args) {
            let (spec, value) = match arg {
                Argument::KeyValue(k, v) if k.contains('.') => (k.as_str(), v.clone()),
                Argument::Positional(p) if p.contains('.') => (p.as_str(), String::new()),
                other => {
                    rest.push(other);
                    continue;
                }
            };
            let (op, key) = spec.split_once('.').ok_or("mutation without op")?;
            let op = match op {
                "put" => MutationOp::Put,
                "del" => MutationOp::Delete,
                "lock" => MutationOp::Lock,
                "insert" => MutationOp::Insert,
                "check" => MutationOp::CheckNotExists,
                other => return Err(format!("unknown mutation op {other}").into()),
            };
            mutations.push(Mutation {
                op,
                key: key.as_bytes().to_vec(),
                value: value.into_bytes(),
                pessimistic: false,
                assertion: kvrpcpb::Assertion::None,
            });
        }
        a.args = rest;
        for (name, assertion) in [
            ("exist", kvrpcpb::Assertion::Exist),
            ("not_exist", kvrpcpb::Assertion::NotExist),
        ] {
            for k in a.all(name) {
                match mutations.iter_mut().find(|m| m.key == k.as_bytes()) {
                    Some(m) => m.assertion = assertion,
                    None => return Err(format!("{name}={k} names no mutation").into()),
                }
            }
        }
        let assertion_level = match a.opt("assertion").as_deref() {
            None => kvrpcpb::AssertionLevel::Off,
            Some("fast") => kvrpcpb::AssertionLevel::Fast,
            Some("strict") => kvrpcpb::AssertionLevel::Strict,
            Some(other) => return Err(format!("unknown assertion level {other}").into()),
        };
        for k in a.all("pessimistic") {
            match mutations.iter_mut().find(|m| m.key == k.as_bytes()) {
                Some(m) => m.pessimistic = true,
                None => return Err(format!("pessimistic={k} names no mutation").into()),
            }
        }
        let cmd = Prewrite {
            mutations,
            primary: a.opt("primary").ok_or("primary= is required")?.into_bytes(),
            start_ts: a.ts("start")?,
            lock_ttl: a.ts_opt("ttl")?.unwrap_or(3000),
            for_update_ts: a.ts_opt("for_update")?.unwrap_or(0),
            txn_size: a.ts_opt("txn_size")?.unwrap_or(0),
            min_commit_ts: a.ts_opt("min_commit")?.unwrap_or(0),
            max_commit_ts: a.ts_opt("max_commit")?.unwrap_or(0),
            use_async_commit: a.flag("async_commit"),
            secondaries: a
                .all("secondary")
                .into_iter()
                .map(String::into_bytes)
                .collect(),
            try_one_pc: a.flag("one_pc"),
            skip_constraint_check: a.flag("skip_constraint_check"),
            assertion_level,
        };
        Ok(outcome(self.execute(&cmd)?, |o| match o {
            PrewriteOutcome {
                min_commit_ts: 0,
                one_pc_commit_ts: 0,
            } => "ok\n".into(),
            o if o.one_pc_commit_ts > 0 => format!("ok one_pc_commit_ts={}\n", o.one_pc_commit_ts),
            o => format!("ok min_commit_ts={}\n", o.min_commit_ts),
        }))
    }

    fn dump(&self) -> Res<String> {
        let mut o = String::new();
        for (k, v) in self.engine.dump(Cf::Lock) {
            let (key, _) = decode_key(&k).ok_or("bad lock key")?;
            let lock = Lock::parse(&v).ok_or("bad lock record")?;
            writeln!(o, "lock {} -> {}", s(&key), fmt_lock(&lock))?;
        }
        for (k, v) in self.engine.dump(Cf::Write) {
            let (enc, ts) = split_ts(&k).ok_or("bad write key")?;
            let (key, _) = decode_key(enc).ok_or("bad write key")?;
            let w = Write::parse(&v).ok_or("bad write record")?;
            writeln!(o, "write {}@{} -> {}", s(&key), ts, fmt_write(&w))?;
        }
        for (k, v) in self.engine.dump(Cf::Default) {
            let (enc, ts) = split_ts(&k).ok_or("bad value key")?;
            let (key, _) = decode_key(enc).ok_or("bad value key")?;
            writeln!(o, "value {}@{} -> {}", s(&key), ts, s(&v))?;
        }
        if o.is_empty() {
            o.push_str("(empty)\n");
        }
        Ok(o)
    }

    fn run_command(&mut self, a: &mut Args<'_>) -> Res<String> {
        Ok(match a.name {
            "prewrite" => self.prewrite(a)?,
            "commit" => {
                let keys = a.keys();
                let (start, commit) = (a.ts("start")?, a.ts("commit")?);
                match Commit::new(keys, start, commit) {
                    Ok(cmd) => outcome(self.execute(&cmd)?, ok_unit),
                    Err(e) => outcome::<()>(Err(e.into()), ok_unit),
                }
            }
            "rollback" => {
                let cmd = BatchRollback {
                    keys: a.keys(),
                    start_ts: a.ts("start")?,
                };
                outcome(self.execute(&cmd)?, ok_unit)
            }
            "cleanup" => {
                let cmd = Cleanup {
                    key: a.key()?,
                    start_ts: a.ts("start")?,
                    current_ts: a.ts_opt("current")?.unwrap_or(0),
                };
                outcome(self.execute(&cmd)?, |c| match c {
                    0 => "ok\n".to_string(),
                    c => format!("ok committed={c}\n"),
                })
            }
            "check_txn_status" => {
                // Flags first: the rest of the positionals are keys.
                let rollback_if_not_exist = a.flag("rollback_if_not_exist");
                let force_sync_commit = a.flag("force_sync_commit");
                let resolving_pessimistic_lock = a.flag("resolving_pessimistic");
                let verify_is_primary = a.flag("verify_primary");
                let cmd = CheckTxnStatus {
                    primary: a.key()?,
                    lock_ts: a.ts("lock")?,
                    caller_start_ts: a.ts_opt("caller")?.unwrap_or(0),
                    current_ts: a.ts_opt("current")?.unwrap_or(0),
                    rollback_if_not_exist,
                    force_sync_commit,
                    resolving_pessimistic_lock,
                    verify_is_primary,
                };
                outcome(self.execute(&cmd)?, |st| {
                    let mut o = format!(
                        "ok action={:?} ttl={} commit={}",
                        st.action, st.lock_ttl, st.commit_version
                    );
                    if let Some(l) = st.lock_info {
                        let _ = write!(o, " lock_min_commit={}", l.min_commit_ts);
                    }
                    o + "\n"
                })
            }
            "check_secondary_locks" => {
                let cmd = CheckSecondaryLocks {
                    keys: a.keys(),
                    start_ts: a.ts("start")?,
                };
                outcome(self.execute(&cmd)?, |(locks, commit_ts)| {
                    let keys: Vec<String> = locks.iter().map(|l| s(&l.key)).collect();
                    format!("ok locks=[{}] commit={commit_ts}\n", keys.join(","))
                })
            }
            "resolve_lock" => {
                let mut txns = vec![];
                for t in a.all("txn") {
                    let (st, ct) = t.split_once('@').ok_or("txn=START@COMMIT")?;
                    txns.push((parse_ts(st)?, parse_ts(ct)?));
                }
                let keys = a.keys();
                let targets = if keys.is_empty() {
                    let mut found = vec![];
                    self.reader().scan_locks(b"", b"", |k, l| {
                        if txns.iter().any(|t| t.0 == l.ts) {
                            found.push((k, l.ts));
                        }
                        true
                    })?;
                    found
                } else {
                    let start = txns.first().map_or(0, |t| t.0);
                    keys.into_iter().map(|k| (k, start)).collect()
                };
                match ResolveLock::new(&txns, targets) {
                    Ok(cmd) => outcome(self.execute(&cmd)?, ok_unit),
                    Err(e) => outcome::<()>(Err(e.into()), ok_unit),
                }
            }
            "heart_beat" => {
                let cmd = TxnHeartBeat {
                    primary: a.key()?,
                    start_ts: a.ts("start")?,
                    advise_ttl: a.ts("ttl")?,
                };
                outcome(self.execute(&cmd)?, |ttl| format!("ok ttl={ttl}\n"))
            }
            "pessimistic_lock" => {
                let (return_values, check_existence) =
                    (a.flag("return_values"), a.flag("check_existence"));
                let may_wait = a.flag("wait");
                let lock_only_if_exists = a.flag("lock_only_if_exists");
                let not_exist = a.opt("not_exist").map(String::into_bytes);
                let keys = a.keys();
                let should_not_exist = keys.iter().map(|k| Some(k) == not_exist.as_ref()).collect();
                let cmd = PessimisticLock {
                    keys,
                    primary: a.opt("primary").ok_or("primary= is required")?.into_bytes(),
                    start_ts: a.ts("start")?,
                    for_update_ts: a.ts("for_update")?,
                    lock_ttl: a.ts_opt("ttl")?.unwrap_or(3000),
                    min_commit_ts: 0,
                    return_values,
                    check_existence,
                    should_not_exist,
                    lock_only_if_exists,
                    may_wait,
                };
                outcome(self.execute(&cmd)?, |o| match o {
                    LockOutcome::Locked { values, not_founds } => {
                        let values: Vec<String> = values.iter().map(|v| s(v)).collect();
                        format!(
                            "ok values=[{}] not_founds={not_founds:?}\n",
                            values.join(",")
                        )
                    }
                    // The wait is dropped at once: its waiter and edge go.
                    LockOutcome::Wait(_) => "waiting (nothing written)\n".into(),
                })
            }
            "pessimistic_rollback" => {
                let cmd = PessimisticRollback {
                    keys: a.keys(),
                    start_ts: a.ts("start")?,
                    for_update_ts: a.ts("for_update")?,
                };
                outcome(self.execute(&cmd)?, ok_unit)
            }
            "gc" => {
                let safe_point = a.ts("safe_point")?;
                let max_bytes = match a.opt("batch_bytes") {
                    Some(n) => n.parse().map_err(|_| "gc: batch_bytes= takes a number")?,
                    None => gc::GC_BATCH_BYTES,
                };
                let (mut removed, mut batches) = (0, 0);
                let mut from = gc::GcCursor::default();
                loop {
                    let (batch, n, next) =
                        gc_batch(&self.reader(), &from, b"", safe_point, max_bytes)
                            .map_err(|e| format!("gc: {e:?}"))?;
                    removed += n;
                    batches += 1;
                    let cmd = RawCommand {
                        ops: batch.ops,
                        now: 0,
                    };
                    apply_command(&mut self.engine, cmd)?.map_err(|e| e.to_string())?;
                    match next {
                        Some(k) => from = k,
                        None => break,
                    }
                }
                format!("ok removed={removed} batches={batches}\n")
            }
            "get" => {
                let read_ctx = a.read_ctx()?;
                let key = a.key()?;
                let ts = a.ts("ts")?;
                let locks = reads::MemoryLocks::take(&self.cm, ts, &[reads::point(&key)]);
                let r = reads::get(&self.reader(), &locks, &read_ctx, &key, ts);
                outcome(r, |v| match v {
                    Some(v) => format!("{}\n", s(&v)),
                    None => "not found\n".into(),
                })
            }
            "scan" => {
                let (lower, upper) = (
                    a.opt("from").unwrap_or_default(),
                    a.opt("to").unwrap_or_default(),
                );
                let ts = a.ts("ts")?;
                let read_ctx = a.read_ctx()?;
                let range = ScanRange {
                    lower: lower.as_bytes(),
                    upper: upper.as_bytes(),
                    limit: a.ts_opt("limit")?.unwrap_or(u32::MAX.into()).try_into()?,
                    key_only: a.flag("key_only"),
                    reverse: a.flag("reverse"),
                };
                let bounds = [(lower.as_bytes().to_vec(), upper.as_bytes().to_vec())];
                let locks = reads::MemoryLocks::take(&self.cm, ts, &bounds);
                let r = reads::scan(&self.reader(), &locks, &read_ctx, &range, ts);
                outcome(r, |pairs| {
                    let mut o = String::new();
                    for p in pairs {
                        match &p.error {
                            Some(e) => o += &format!("{} -> {}\n", s(&p.key), fmt_key_error(e)),
                            None => o += &format!("{} = {}\n", s(&p.key), s(&p.value)),
                        }
                    }
                    if o.is_empty() {
                        o.push_str("(none)\n");
                    }
                    o
                })
            }
            "scan_lock" => {
                let max_ts = a.ts("max_ts")?;
                let locks = reads::MemoryLocks::take(&self.cm, max_ts, &[(vec![], vec![])]);
                let r = reads::scan_lock(&self.reader(), &locks, b"", b"", max_ts, 0);
                outcome(r, |locks| {
                    let keys: Vec<String> = locks
                        .iter()
                        .map(|l| format!("{}@{}", s(&l.key), l.lock_version))
                        .collect();
                    format!("locks=[{}]\n", keys.join(","))
                })
            }
            "max_ts" => format!("max_ts={}\n", self.cm.max_ts()),
            "dump" => self.dump()?,
            other => return Err(format!("unknown command {other}").into()),
        })
    }
}

impl goldenscript::Runner for Runner {
    type Command = Command;

    fn run(&mut self, command: &Command, _: &Context) -> Res<String> {
        let mut args = Args::new(command);
        let out = self.run_command(&mut args)?;
        args.done()?;
        Ok(out)
    }
}

#[test]
fn scenarios() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src/txn/testscripts");
    let mut paths: Vec<_> = std::fs::read_dir(&dir)
        .expect("testscripts dir")
        .map(|e| e.expect("dir entry").path())
        .collect();
    paths.sort();
    assert!(!paths.is_empty(), "no scripts in {}", dir.display());
    for path in paths {
        goldenscript::run(&mut Runner::new(), &path)
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    }
}
