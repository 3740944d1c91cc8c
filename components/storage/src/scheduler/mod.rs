//! Deadline-aware admission of raw writes.
//!
//! Every raw write carries a [`RequestMeta`] — priority, arrival, optional
//! deadline, request id — taken from the seed's `x-aaws-*` gRPC headers or
//! from kvproto's own `Context.priority` / `max_execution_duration_ms`
//! ([`meta`]). The server prepares the write (checked and encoded), then
//! [`Scheduler::submit`] queues it; when the active [`Policy`] admits it,
//! its action hands the write straight to the store loop — no hop back
//! through the async runtime, which under overload is busy reading new
//! requests. The action's [`Permit`] holds a
//! slot — for `threshold` a worker until the write is done, for `edf` a
//! place in the store's next batch until the store takes the write in. Each decision is a row in the
//! server trace ([`trace`]) and in the per-priority metrics.
//!
//! Policies (the state machine is in [`core`]):
//! * `fcfs` — admit at once (`baseline-immediate`);
//! * `threshold` — the seed's v0: 8 virtual slots, free slots required
//!   High 1 / Medium 2 / Low 4, urgent 10 ms before the deadline, recheck
//!   every 5 ms (`check-delay`, `scheduled`, `urgent-admit`);
//! * `edf` — ours: event-driven; High first, then Medium and Low escalated
//!   by deadline; a slot reserved for High; a request counts as late once
//!   its deadline falls before its write could start (a measured lead), and
//!   late requests run after those that can still make it; one timer for
//!   the whole scheduler, never one per request.
//!
//! No policy drops a request: one past its deadline still runs.

pub mod core;
pub mod trace;

/// Request metadata is parsed where tools can reach it without a store.
pub use tikal_codec::request_meta as meta;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use tokio::sync::Notify;

pub use self::core::{Core, Footprint, Output};
pub use self::meta::{MetaError, Priority, RequestMeta};
pub use self::trace::{TraceRow, TraceWriter, TRACE_HEADER};

/// Why a request was admitted, or why it still waits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    BaselineImmediate,
    CheckDelay,
    Scheduled,
    UrgentAdmit,
    /// edf: the request waits in its queue (one row, not one per poll).
    Queued,
    /// The client gave up before admission.
    Cancelled,
}

impl Decision {
    pub fn name(self) -> &'static str {
        match self {
            Decision::BaselineImmediate => "baseline-immediate",
            Decision::CheckDelay => "check-delay",
            Decision::Scheduled => "scheduled",
            Decision::UrgentAdmit => "urgent-admit",
            Decision::Queued => "queued",
            Decision::Cancelled => "cancelled",
        }
    }

    /// Final decisions end a request's scheduling; the others are progress.
    pub fn is_final(self) -> bool {
        !matches!(self, Decision::CheckDelay | Decision::Queued)
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, rename_all = "kebab-case")]
pub struct ThresholdConfig {
    pub slots: usize,
    /// Free slots required for High, Medium, Low.
    pub required: [usize; 3],
    pub urgent_margin_ms: u64,
    pub recheck_ms: u64,
    /// Trace a `check-delay` row at every failed recheck (the seed's v0),
    /// or only at a request's first one. Under sustained overload the
    /// seed's way writes 200 rows per second per waiting request.
    pub trace_every_check: bool,
}

impl Default for ThresholdConfig {
    fn default() -> Self {
        ThresholdConfig {
            slots: 8,
            required: [1, 2, 4],
            urgent_margin_ms: 10,
            recheck_ms: 5,
            trace_every_check: true,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, rename_all = "kebab-case")]
pub struct EdfConfig {
    /// Writes admitted but not yet taken in by the store. A write frees its
    /// slot when the store's loop takes it (its place in the Raft log is
    /// then fixed), and the freed slot admits the next write into the same
    /// round, so group-commit batches are not capped by this number. What it
    /// sets is the wait between admission and start (`workers` / writes per
    /// second), which every deadline must cover: small keeps High on time
    /// (docs/benchmarks.md).
    pub workers: usize,
    /// Slots only High (or an urgent request) may take.
    pub high_reserve: usize,
    /// Escalation horizon: a Medium or Low whose deadline is this close
    /// competes on deadline with the other of the two (a Low about to miss
    /// goes before a Medium with slack to spare); further out, Medium comes
    /// first. High always goes first. With the generator's budgets (Medium
    /// 200 ms, Low 1000) the default orders Medium and Low by deadline.
    pub escalate_ms: u64,
    /// A request this close to its deadline is urgent: it may take a High
    /// reserve slot (`urgent-admit`).
    pub urgent_ms: u64,
}

impl Default for EdfConfig {
    fn default() -> Self {
        EdfConfig {
            workers: 32,
            high_reserve: 1,
            escalate_ms: 1000,
            urgent_ms: 10,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum Policy {
    Fcfs,
    Threshold(ThresholdConfig),
    Edf(EdfConfig),
}

impl Policy {
    pub fn name(&self) -> &'static str {
        match self {
            Policy::Fcfs => "fcfs",
            Policy::Threshold(_) => "threshold",
            Policy::Edf(_) => "edf",
        }
    }

    pub fn from_name(
        name: &str,
        threshold: &ThresholdConfig,
        edf: &EdfConfig,
    ) -> Result<Policy, String> {
        match name {
            "fcfs" => Ok(Policy::Fcfs),
            "threshold" => Ok(Policy::Threshold(threshold.clone())),
            "edf" => Ok(Policy::Edf(edf.clone())),
            other => Err(format!(
                "unknown scheduler policy {other:?}: expected fcfs, threshold or edf"
            )),
        }
    }
}

/// Observes scheduling decisions (metrics live in the server).
pub trait SchedulerObserver: Send + Sync {
    fn on_row(&self, row: &TraceRow);
    fn on_waiting(&self, waiting: [usize; 3]);
}

pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// What runs when a request is admitted: it gets the request's permit.
pub type OnAdmit = Box<dyn FnOnce(Permit) + Send>;

struct Shared {
    core: Core,
    waiters: HashMap<u64, OnAdmit>,
}

/// The runtime face of [`Core`]: async admission, the wake-up timer, the
/// trace and metrics. Cheap to clone.
#[derive(Clone)]
pub struct Scheduler {
    shared: Arc<Mutex<Shared>>,
    timer: Arc<Notify>,
    trace: Option<Arc<TraceWriter>>,
    observer: Option<Arc<dyn SchedulerObserver>>,
}

/// Holds a slot until dropped.
pub struct Permit {
    scheduler: Scheduler,
    seq: u64,
    /// edf: the slot is a place in the store's next batch, freed when the
    /// store takes the write in. Otherwise it is a worker, freed when the
    /// write is done.
    release_at_pickup: bool,
    /// The admission's trace row, recorded when the write starts.
    row: Option<TraceRow>,
}

/// Dropped by the store loop the moment it takes the write in: that is
/// when the write gets its worker, so it is what every policy's trace row
/// reports as `scheduled_time_ms`. For `fcfs` this includes the wait in the
/// store's queue; for the others the admitted writes are few, so it is
/// moments after admission.
pub struct Started {
    scheduler: Scheduler,
    row: Option<TraceRow>,
    /// edf's slot, freed with the stamp (after the row is recorded).
    _slot: Option<Permit>,
}

impl Drop for Started {
    fn drop(&mut self) {
        if let Some(row) = self.row.take() {
            self.scheduler.record_started(row);
        }
    }
}

impl Permit {
    /// Splits into (what the store drops on pickup, what the caller holds
    /// until the write completes, for a policy whose slot is a worker).
    pub fn split(mut self) -> (Started, Option<Permit>) {
        let row = self.row.take();
        let scheduler = self.scheduler.clone();
        let (slot, hold) = if self.release_at_pickup {
            (Some(self), None)
        } else {
            (None, Some(self))
        };
        (
            Started {
                scheduler,
                row,
                _slot: slot,
            },
            hold,
        )
    }
}

/// A queued request; dropping it before admission withdraws the request.
pub struct Ticket {
    scheduler: Scheduler,
    seq: u64,
}

impl Drop for Ticket {
    fn drop(&mut self) {
        let outputs = {
            let mut shared = self.scheduler.shared.lock();
            if shared.waiters.remove(&self.seq).is_none() {
                return; // admitted: its permit owns the slot now
            }
            shared.core.complete(self.seq, now_ms())
        };
        self.scheduler.dispatch(outputs);
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        if let Some(row) = self.row.take() {
            self.scheduler.record_started(row);
        }
        let outputs = self
            .scheduler
            .shared
            .lock()
            .core
            .complete(self.seq, now_ms());
        self.scheduler.dispatch(outputs);
    }
}

impl Scheduler {
    /// Starts the scheduler; its timer task runs on the current runtime.
    pub fn start(
        policy: Policy,
        trace: Option<Arc<TraceWriter>>,
        observer: Option<Arc<dyn SchedulerObserver>>,
    ) -> Scheduler {
        let s = Scheduler {
            shared: Arc::new(Mutex::new(Shared {
                core: Core::new(policy),
                waiters: HashMap::new(),
            })),
            timer: Arc::new(Notify::new()),
            trace,
            observer,
        };
        tokio::spawn(s.clone().timer_loop());
        s
    }

    pub fn set_policy(&self, policy: Policy) {
        let outputs = self.shared.lock().core.set_policy(policy, now_ms());
        self.dispatch(outputs);
        self.timer.notify_one();
    }

    /// Queues a request; `on_admit` runs (on whichever thread admits it)
    /// the moment the policy lets it go, with its permit. Dropping the
    /// returned ticket before then withdraws the request.
    pub fn submit(&self, meta: RequestMeta, footprint: Footprint, on_admit: OnAdmit) -> Ticket {
        let (seq, outputs) = {
            let mut shared = self.shared.lock();
            let (seq, outputs) = shared.core.arrive(meta, footprint, now_ms());
            shared.waiters.insert(seq, on_admit);
            (seq, outputs)
        };
        self.dispatch(outputs);
        self.timer.notify_one();
        Ticket {
            scheduler: self.clone(),
            seq,
        }
    }

    fn record(&self, row: &TraceRow) {
        if let Some(obs) = &self.observer {
            obs.on_row(row);
        }
        if let Some(t) = &self.trace {
            t.record(row);
        }
    }

    /// An admitted write starts now: its decision row gets this time.
    fn record_started(&self, mut row: TraceRow) {
        row.scheduled_ms = row.scheduled_ms.max(now_ms());
        self.record(&row);
    }

    fn dispatch(&self, outputs: Vec<Output>) {
        let mut admitted = vec![];
        for o in outputs {
            match o {
                Output::Admit(seq, row) => admitted.push((seq, row)),
                Output::Trace(row) => self.record(&row),
            }
        }
        let (actions, waiting, at_pickup) = {
            let mut shared = self.shared.lock();
            let actions: Vec<(u64, TraceRow, OnAdmit)> = admitted
                .into_iter()
                .filter_map(|(seq, row)| shared.waiters.remove(&seq).map(|a| (seq, row, a)))
                .collect();
            let at_pickup = matches!(shared.core.policy(), Policy::Edf(_));
            (actions, shared.core.waiting_by_priority(), at_pickup)
        };
        if let Some(obs) = &self.observer {
            obs.on_waiting(waiting);
        }
        // Outside the lock: an action may drop its permit at once.
        for (seq, row, action) in actions {
            action(Permit {
                scheduler: self.clone(),
                seq,
                release_at_pickup: at_pickup,
                row: Some(row),
            });
        }
    }

    async fn timer_loop(self) {
        loop {
            let next = self.shared.lock().core.next_wakeup(now_ms());
            match next {
                Some(at) => {
                    let wait = at.saturating_sub(now_ms());
                    tokio::select! {
                        _ = tokio::time::sleep(std::time::Duration::from_millis(wait)) => {
                            let outputs = self.shared.lock().core.tick(now_ms());
                            self.dispatch(outputs);
                        }
                        _ = self.timer.notified() => {}
                    }
                }
                None => self.timer.notified().await,
            }
            if Arc::strong_count(&self.shared) == 1 {
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    fn meta(id: &str, priority: Priority) -> RequestMeta {
        RequestMeta {
            request_id: id.into(),
            priority,
            arrival_ms: now_ms(),
            deadline_ms: None,
        }
    }

    /// An action that parks its permit in `slot` and counts admissions.
    fn park(slot: &Arc<Mutex<Vec<Permit>>>, count: &Arc<AtomicUsize>) -> OnAdmit {
        let (slot, count) = (slot.clone(), count.clone());
        Box::new(move |p| {
            count.fetch_add(1, Ordering::SeqCst);
            slot.lock().push(p);
        })
    }

    #[tokio::test]
    async fn admission_runs_the_action_and_freeing_a_slot_admits_the_next() {
        let edf = Policy::Edf(EdfConfig {
            workers: 1,
            high_reserve: 0,
            escalate_ms: 10,
            urgent_ms: 10,
        });
        let s = Scheduler::start(edf, None, None);
        let (slot, count) = (Arc::new(Mutex::new(vec![])), Arc::new(AtomicUsize::new(0)));
        let _t1 = s.submit(
            meta("a", Priority::Low),
            Footprint::Keys(vec![1]),
            park(&slot, &count),
        );
        let _t2 = s.submit(
            meta("b", Priority::Low),
            Footprint::Keys(vec![2]),
            park(&slot, &count),
        );
        assert_eq!(count.load(Ordering::SeqCst), 1, "one worker: b waits");
        // edf permits belong to the store's pickup, not the caller.
        let first = slot.lock().pop().unwrap();
        let (started, hold) = first.split();
        assert!(hold.is_none());
        drop(started);
        assert_eq!(
            count.load(Ordering::SeqCst),
            2,
            "freeing the slot admits b at once"
        );
    }

    struct Rows(Mutex<Vec<(String, Decision)>>);

    impl SchedulerObserver for Rows {
        fn on_row(&self, row: &TraceRow) {
            self.0.lock().push((row.request_id.clone(), row.decision));
        }
        fn on_waiting(&self, _: [usize; 3]) {}
    }

    #[tokio::test]
    async fn the_admission_row_is_recorded_when_the_write_starts() {
        for policy in [
            Policy::Fcfs,
            Policy::Edf(EdfConfig::default()),
            Policy::Threshold(ThresholdConfig::default()),
        ] {
            let rows = Arc::new(Rows(Mutex::new(vec![])));
            let s = Scheduler::start(policy.clone(), None, Some(rows.clone()));
            let (slot, count) = (Arc::new(Mutex::new(vec![])), Arc::new(AtomicUsize::new(0)));
            let _t = s.submit(
                meta("a", Priority::High),
                Footprint::Keys(vec![1]),
                park(&slot, &count),
            );
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
            while count.load(Ordering::SeqCst) == 0 {
                assert!(
                    std::time::Instant::now() < deadline,
                    "{policy:?}: never admitted"
                );
                tokio::time::sleep(std::time::Duration::from_millis(1)).await;
            }
            let finals = |rows: &Rows| rows.0.lock().iter().filter(|r| r.1.is_final()).count();
            assert_eq!(finals(&rows), 0, "{policy:?}: admitted but not started yet");
            let (started, hold) = slot.lock().pop().unwrap().split();
            drop(started);
            assert_eq!(finals(&rows), 1, "{policy:?}: the store took it in");
            drop(hold);
            assert_eq!(finals(&rows), 1, "{policy:?}: one final row");
        }
    }

    #[tokio::test]
    async fn dropping_a_ticket_withdraws_a_waiting_request() {
        let s = Scheduler::start(
            Policy::Threshold(ThresholdConfig {
                slots: 1,
                ..Default::default()
            }),
            None,
            None,
        );
        let (slot, count) = (Arc::new(Mutex::new(vec![])), Arc::new(AtomicUsize::new(0)));
        let _t1 = s.submit(
            meta("a", Priority::High),
            Footprint::Keys(vec![1]),
            park(&slot, &count),
        );
        let t2 = s.submit(
            meta("b", Priority::High),
            Footprint::Keys(vec![2]),
            park(&slot, &count),
        );
        assert_eq!(s.shared.lock().core.waiting_by_priority(), [1, 0, 0]);
        drop(t2);
        assert_eq!(s.shared.lock().core.waiting_by_priority(), [0, 0, 0]);
        // threshold permits are held by the caller until the write is done.
        let (_started, hold) = slot.lock().pop().unwrap().split();
        assert!(hold.is_some());
        assert_eq!(count.load(Ordering::SeqCst), 1, "b never ran");
    }
}
