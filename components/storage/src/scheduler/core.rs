//! The scheduling state machine, free of clocks, threads and I/O.
//!
//! Callers feed it events — a request arrives, a request completes, time
//! passes — with the current time in milliseconds, and read back what to do:
//! admit these requests, record these trace rows. Everything policy-specific
//! lives here, so the unit tests below drive it with plain numbers.
//!
//! Worked example, `threshold` (8 slots; High needs 1 free, Medium 2,
//! Low 4; urgent 10 ms before the deadline; recheck every 5 ms):
//!
//! ```text
//! t=0   6 slots busy, Low arrives, deadline t=50   2 free < 4  -> check-delay
//! t=5   recheck                                    2 free < 4  -> check-delay
//! t=7   4 requests complete                        (no event: v0 polls)
//! t=10  recheck                                    6 free >= 4 -> scheduled
//! ```
//!
//! `edf` instead reacts to events: a completion admits the next request at
//! once. High goes first, earliest deadline first; Medium and Low whose
//! deadlines are within `escalate_ms` go next in deadline order whatever
//! their priority; beyond that, priority then deadline; requests that can
//! no longer make their deadline go last. One slot is kept for High, which
//! a Medium or Low takes only within `urgent_ms` of its deadline
//! ("urgent-admit").
//!
//! Both keep writes to the same key in arrival order: a request is admitted
//! only after every earlier request touching one of its keys has completed
//! (a range delete orders against everything).

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};

use super::{Decision, EdfConfig, Policy, Priority, RequestMeta, ThresholdConfig, TraceRow};

/// What a request touches, for per-key ordering.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Footprint {
    /// Hashes of the keys written.
    Keys(Vec<u64>),
    /// A range delete: ordered against every other request.
    Everything,
}

/// An instruction for the caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    /// Admitted, with its decision row. The runtime stamps the row when the
    /// write actually starts (see [`super::Permit`]), so every policy's
    /// `scheduled_time_ms` is the same event.
    Admit(u64, TraceRow),
    Trace(TraceRow),
}

struct Waiting {
    meta: RequestMeta,
    /// Threshold only: a check has already found it short of slots.
    delayed: bool,
}

/// Sort key of a ready request: deadline (none = last), then arrival.
fn ready_key(seq: u64, meta: &RequestMeta) -> (u64, u64) {
    (meta.deadline_ms.unwrap_or(u64::MAX), seq)
}

/// Merges two ascending seq lists (in O(1) when one follows the other,
/// the usual case).
fn merge_sorted(mut a: VecDeque<u64>, mut b: VecDeque<u64>) -> VecDeque<u64> {
    match (a.back(), b.front()) {
        (None, _) => return b,
        (_, None) => return a,
        (Some(last), Some(first)) if last < first => {
            a.append(&mut b);
            return a;
        }
        _ => {}
    }
    if b.back() < a.front() {
        b.append(&mut a);
        return b;
    }
    let mut out = VecDeque::with_capacity(a.len() + b.len());
    while let (Some(x), Some(y)) = (a.front(), b.front()) {
        let next = if x < y { a.pop_front() } else { b.pop_front() };
        out.extend(next);
    }
    out.append(&mut a);
    out.append(&mut b);
    out
}

pub struct Core {
    policy: Policy,
    in_use: usize,
    next_seq: u64,
    /// Requests not yet admitted.
    waiting: HashMap<u64, Waiting>,
    waiting_count: [usize; 3],
    /// Waiting requests whose earlier same-key requests are all done, per
    /// priority, by (deadline, arrival). Eligibility never reverts, so a
    /// request enters once and leaves on admission.
    ready: [BTreeSet<(u64, u64)>; 3],
    /// Threshold's recheck schedule: check time -> the requests due then,
    /// in arrival order. A withdrawn request's entry stays until a pass
    /// skips it.
    checks: BTreeMap<u64, VecDeque<u64>>,
    /// Threshold: every waiting request below this seq has been checked
    /// (and traced its first `check-delay`).
    first_unchecked: u64,
    /// Per key hash: outstanding (waiting or running) requests in arrival order.
    key_queues: HashMap<u64, VecDeque<u64>>,
    footprints: HashMap<u64, Footprint>,
    /// Outstanding range deletes.
    barriers: BTreeSet<u64>,
    /// Outstanding requests, waiting or running.
    outstanding: BTreeSet<u64>,
    /// edf: admitted requests still holding a slot, and when each was
    /// admitted (only edf uses the lead).
    admitted_at: HashMap<u64, u64>,
    /// Eight times the moving average of how long an admitted request held
    /// its slot. For edf that is the wait before its write starts, so a
    /// request whose deadline is nearer than that can no longer make it.
    lead_x8: u64,
    out: Vec<Output>,
}

impl Core {
    pub fn new(policy: Policy) -> Core {
        Core {
            policy,
            in_use: 0,
            next_seq: 1,
            waiting: HashMap::new(),
            waiting_count: [0; 3],
            ready: Default::default(),
            checks: BTreeMap::new(),
            first_unchecked: u64::MAX,
            key_queues: HashMap::new(),
            footprints: HashMap::new(),
            barriers: BTreeSet::new(),
            outstanding: BTreeSet::new(),
            admitted_at: HashMap::new(),
            lead_x8: 0,
            out: vec![],
        }
    }

    pub fn policy(&self) -> &Policy {
        &self.policy
    }

    /// Switches policy; waiting requests are re-evaluated under the new one.
    pub fn set_policy(&mut self, policy: Policy, now: u64) -> Vec<Output> {
        self.policy = policy;
        self.checks.clear();
        if matches!(self.policy, Policy::Threshold(_)) {
            let mut all: Vec<u64> = self.waiting.keys().copied().collect();
            all.sort_unstable();
            self.checks.insert(now, all.into());
            self.first_unchecked = 0;
        }
        self.pump(now);
        std::mem::take(&mut self.out)
    }

    pub fn waiting_by_priority(&self) -> [usize; 3] {
        self.waiting_count
    }

    /// A request arrives; returns its sequence number and what to do.
    pub fn arrive(
        &mut self,
        meta: RequestMeta,
        footprint: Footprint,
        now: u64,
    ) -> (u64, Vec<Output>) {
        let seq = self.next_seq;
        self.next_seq += 1;
        match &footprint {
            Footprint::Keys(keys) => {
                for k in keys {
                    let q = self.key_queues.entry(*k).or_default();
                    if q.back() != Some(&seq) {
                        q.push_back(seq);
                    }
                }
            }
            Footprint::Everything => {
                self.barriers.insert(seq);
            }
        }
        self.footprints.insert(seq, footprint);
        self.outstanding.insert(seq);
        let priority = meta.priority;
        if self.eligible(seq) {
            self.ready[priority as usize].insert(ready_key(seq, &meta));
        }
        if matches!(self.policy, Policy::Threshold(_)) {
            // The newest seq: the bucket stays in arrival order.
            self.checks.entry(now).or_default().push_back(seq);
            self.first_unchecked = self.first_unchecked.min(seq);
        }
        self.waiting_count[priority as usize] += 1;
        self.waiting.insert(
            seq,
            Waiting {
                meta,
                delayed: false,
            },
        );
        self.pump(now);
        if let (Policy::Edf(_), Some(w)) = (&self.policy, self.waiting.get(&seq)) {
            let row = self.row(&w.meta, now, Decision::Queued);
            self.out.push(Output::Trace(row));
        }
        (seq, std::mem::take(&mut self.out))
    }

    /// A running request finished (or a waiting one was abandoned).
    pub fn complete(&mut self, seq: u64, now: u64) -> Vec<Output> {
        if let Some(w) = self.take_waiting(seq) {
            let row = self.row(&w.meta, now, Decision::Cancelled);
            self.out.push(Output::Trace(row));
        } else if self.outstanding.contains(&seq) {
            self.in_use = self.in_use.saturating_sub(1);
            if let Some(at) = self.admitted_at.remove(&seq) {
                // A moving average, each sample weighted 1/8.
                self.lead_x8 = self.lead_x8 - self.lead_x8 / 8 + now.saturating_sub(at);
            }
        }
        self.forget(seq);
        // Threshold admits only on its own recheck ticks, as the seed's v0.
        if !matches!(self.policy, Policy::Threshold(_)) {
            self.pump(now);
        }
        std::mem::take(&mut self.out)
    }

    /// Time passed: threshold rechecks, edf escalations.
    pub fn tick(&mut self, now: u64) -> Vec<Output> {
        self.pump(now);
        std::mem::take(&mut self.out)
    }

    /// When `tick` next has something to do, if ever.
    pub fn next_wakeup(&self, now: u64) -> Option<u64> {
        match &self.policy {
            // Waiting fcfs requests wait only for earlier same-key writes.
            Policy::Fcfs => None,
            Policy::Threshold(_) => self.checks.keys().next().copied(),
            Policy::Edf(c) => {
                if self.available() == 0 {
                    return None;
                }
                // Only requests held back by the High reserve can become
                // admissible with time alone: when they turn urgent (late
                // ones never do).
                [Priority::Medium, Priority::Low]
                    .iter()
                    .filter_map(|p| {
                        self.ready[*p as usize]
                            .range((now + self.lead_ms(), 0)..)
                            .next()
                    })
                    .map(|(d, _)| *d)
                    .filter(|d| *d != u64::MAX)
                    .map(|d| d.saturating_sub(c.urgent_ms.saturating_add(self.lead_ms())))
                    .min()
            }
        }
    }

    fn lead_ms(&self) -> u64 {
        self.lead_x8 / 8
    }

    fn capacity(&self) -> usize {
        match &self.policy {
            Policy::Fcfs => usize::MAX,
            Policy::Threshold(c) => c.slots,
            Policy::Edf(c) => c.workers,
        }
    }

    fn available(&self) -> usize {
        self.capacity().saturating_sub(self.in_use)
    }

    fn required(&self, p: Priority) -> usize {
        match &self.policy {
            Policy::Fcfs => 0,
            Policy::Threshold(c) => c.required[p as usize],
            Policy::Edf(c) => {
                if p == Priority::High {
                    1
                } else {
                    c.high_reserve + 1
                }
            }
        }
    }

    /// True if no earlier outstanding request shares a key with `seq`.
    fn eligible(&self, seq: u64) -> bool {
        match self.footprints.get(&seq) {
            Some(Footprint::Everything) => self.outstanding.range(..seq).next().is_none(),
            Some(Footprint::Keys(keys)) => {
                self.barriers.range(..seq).next().is_none()
                    && keys
                        .iter()
                        .all(|k| self.key_queues.get(k).and_then(|q| q.front()) == Some(&seq))
            }
            None => false,
        }
    }

    fn take_waiting(&mut self, seq: u64) -> Option<Waiting> {
        let w = self.waiting.remove(&seq)?;
        let p = w.meta.priority as usize;
        self.ready[p].remove(&ready_key(seq, &w.meta));
        self.waiting_count[p] -= 1;
        Some(w)
    }

    fn pump(&mut self, now: u64) {
        match self.policy.clone() {
            Policy::Fcfs => {
                let ready: Vec<u64> = self
                    .ready
                    .iter()
                    .flat_map(|r| r.iter().map(|(_, s)| *s))
                    .collect();
                for seq in ready {
                    if let Some(w) = self.take_waiting(seq) {
                        self.admit(w.meta, now, Decision::BaselineImmediate, seq);
                    }
                }
            }
            Policy::Threshold(c) => self.threshold_pass(now, &c),
            Policy::Edf(c) => {
                while self.available() > 0 {
                    let Some((seq, decision)) = self.edf_pick(now, &c) else {
                        break;
                    };
                    if let Some(w) = self.take_waiting(seq) {
                        self.admit(w.meta, now, decision, seq);
                    }
                }
            }
        }
    }

    /// Threshold's recheck of every request due by `now`, in arrival order:
    /// admit it if enough slots are free (or it is urgent and one is),
    /// otherwise look again `recheck_ms` later.
    ///
    /// With no slot free nothing can be admitted, so requests that already
    /// traced their first `check-delay` (when only the first is traced) move
    /// to their next check in bulk: a pass costs O(admitted) plus a copy of
    /// the due seqs, not a lookup per waiting request, and the decisions
    /// are the seed's.
    fn threshold_pass(&mut self, now: u64, c: &ThresholdConfig) {
        let mut due = VecDeque::new();
        while let Some(bucket) = self.checks.first_entry() {
            if *bucket.key() > now {
                break;
            }
            due = merge_sorted(due, bucket.remove());
        }
        let mut later = VecDeque::new();
        while let Some(seq) = due.pop_front() {
            let nothing_fits = self.available() == 0 && c.required.iter().all(|r| *r >= 1);
            if nothing_fits && !c.trace_every_check && seq < self.first_unchecked {
                let checked = due.partition_point(|s| *s < self.first_unchecked);
                let rest = due.split_off(checked);
                later.push_back(seq);
                later.append(&mut due);
                due = rest;
                continue;
            }
            let Some(w) = self.waiting.get_mut(&seq) else {
                continue; // withdrawn
            };
            let p = w.meta.priority;
            let urgent = w
                .meta
                .deadline_ms
                .is_some_and(|d| now.saturating_add(c.urgent_margin_ms) >= d);
            let first_check = !w.delayed;
            w.delayed = true;
            let avail = self.available();
            let decision = if !self.eligible(seq) {
                None
            } else if avail >= c.required[p as usize] {
                Some(Decision::Scheduled)
            } else if urgent && avail >= 1 {
                Some(Decision::UrgentAdmit)
            } else {
                None
            };
            match decision {
                Some(d) => {
                    if let Some(w) = self.take_waiting(seq) {
                        self.admit(w.meta, now, d, seq);
                    }
                }
                None => {
                    if c.trace_every_check || first_check {
                        let row = self.row(&self.waiting[&seq].meta, now, Decision::CheckDelay);
                        self.out.push(Output::Trace(row));
                    }
                    later.push_back(seq);
                }
            }
        }
        self.first_unchecked = u64::MAX;
        if self.waiting.is_empty() {
            self.checks.clear();
        } else if !later.is_empty() {
            let at = now.saturating_add(c.recheck_ms);
            let bucket = self.checks.remove(&at).unwrap_or_default();
            self.checks.insert(at, merge_sorted(bucket, later));
        }
    }

    /// The next request edf admits now, if any: O(log n) over the ready sets.
    ///
    /// A request whose deadline falls before its write could start has
    /// missed it whatever happens next, so edf spends capacity on the ones
    /// that can still make it, in this order:
    /// 1. High, earliest deadline first;
    /// 2. Medium and Low escalated: the earliest deadline among those due
    ///    within the escalation horizon, either priority;
    /// 3. Medium, then Low, earliest deadline first;
    /// 4. the late ones, by priority and earliest deadline.
    ///
    /// Late requests still run — after the ones that can still be on time.
    /// (Serving the oldest first under overload makes every request late:
    /// global EDF's domino effect.) Escalation never puts a request ahead of
    /// High: under overload Medium and Low requests turn urgent faster than
    /// capacity frees, and letting them pass would starve High. The High
    /// reserve holds throughout; a Medium or Low takes one of its slots only
    /// when urgent.
    fn edf_pick(&self, now: u64, c: &EdfConfig) -> Option<(u64, Decision)> {
        let avail = self.available();
        // An admitted write starts about `lead_ms` later: judge deadlines
        // against that moment.
        let start = now + self.lead_ms();
        let ahead: [Option<(u64, u64)>; 3] =
            [0, 1, 2].map(|p| self.ready[p].range((start, 0)..).next().copied());
        let urgent = |d: u64| d != u64::MAX && d >= start && start.saturating_add(c.urgent_ms) >= d;
        let admissible =
            |p: Priority, d: u64| avail >= self.required(p) || (avail >= 1 && urgent(d));
        let decision = |d: u64| {
            if urgent(d) {
                Decision::UrgentAdmit
            } else {
                Decision::Scheduled
            }
        };
        let high = ahead[Priority::High as usize].filter(|(d, _)| admissible(Priority::High, *d));
        let escalated = || {
            [Priority::Medium, Priority::Low]
                .into_iter()
                .filter_map(|p| ahead[p as usize].map(|(d, seq)| (p, (d, seq))))
                .filter(|(p, (d, _))| {
                    *d != u64::MAX
                        && start.saturating_add(c.escalate_ms) >= *d
                        && admissible(*p, *d)
                })
                .map(|(_, head)| head)
                .min()
        };
        let by_priority = || {
            [Priority::Medium, Priority::Low]
                .into_iter()
                .find_map(|p| ahead[p as usize].filter(|(d, _)| admissible(p, *d)))
        };
        let late = || {
            Priority::ALL
                .into_iter()
                .filter(|p| avail >= self.required(*p))
                .find_map(|p| self.ready[p as usize].first().copied())
        };
        high.or_else(escalated)
            .or_else(by_priority)
            .or_else(late)
            .map(|(d, seq)| (seq, decision(d)))
    }

    fn admit(&mut self, meta: RequestMeta, now: u64, decision: Decision, seq: u64) {
        let row = self.row(&meta, now, decision);
        self.in_use += 1;
        if matches!(self.policy, Policy::Edf(_)) {
            self.admitted_at.insert(seq, now);
        }
        self.out.push(Output::Admit(seq, row));
    }

    fn row(&self, meta: &RequestMeta, now: u64, decision: Decision) -> TraceRow {
        TraceRow {
            request_id: meta.request_id.clone(),
            priority: meta.priority,
            arrival_ms: meta.arrival_ms,
            deadline_ms: meta.deadline_ms,
            scheduled_ms: now,
            available: self.available().min(u32::MAX as usize) as u32,
            required: self.required(meta.priority) as u32,
            decision,
        }
    }

    /// Drops a finished request's ordering claims and marks the requests
    /// that were waiting only for it as ready.
    fn forget(&mut self, seq: u64) {
        self.outstanding.remove(&seq);
        let was_barrier = self.barriers.remove(&seq);
        let mut candidates = vec![];
        if let Some(Footprint::Keys(keys)) = self.footprints.remove(&seq) {
            for k in keys {
                if let Some(q) = self.key_queues.get_mut(&k) {
                    if q.front() == Some(&seq) {
                        q.pop_front();
                    } else {
                        q.retain(|s| *s != seq);
                    }
                    match q.front() {
                        Some(next) => candidates.push(*next),
                        None => {
                            self.key_queues.remove(&k);
                        }
                    }
                }
            }
        }
        if was_barrier {
            // Rare: a range delete finished; anything may be free now.
            candidates.extend(self.waiting.keys().copied());
        }
        // The oldest range delete becomes eligible once all before it finish.
        if let Some(first_barrier) = self.barriers.first() {
            candidates.push(*first_barrier);
        }
        for c in candidates {
            if let Some(w) = self.waiting.get(&c) {
                if self.eligible(c) {
                    self.ready[w.meta.priority as usize].insert(ready_key(c, &w.meta));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    //! Scenario tables: each test is a timeline of events and the exact
    //! trace rows ("time request decision") the policy must produce.
    use super::*;
    use crate::scheduler::ThresholdConfig;

    struct Sim {
        core: Core,
        seqs: HashMap<String, u64>,
        log: Vec<String>,
    }

    fn hash(key: &str) -> u64 {
        key.bytes().fold(1469598103934665603u64, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(1099511628211)
        })
    }

    impl Sim {
        fn new(policy: Policy) -> Sim {
            Sim {
                core: Core::new(policy),
                seqs: HashMap::new(),
                log: vec![],
            }
        }

        fn take(&mut self, outputs: Vec<Output>) {
            for o in outputs {
                let (Output::Trace(r) | Output::Admit(_, r)) = o;
                self.log.push(format!(
                    "{} {} {}",
                    r.scheduled_ms,
                    r.request_id,
                    r.decision.name()
                ));
            }
        }

        /// `name` arrives at `t`; priority from its first letter (h/m/l).
        fn arrive(
            &mut self,
            t: u64,
            name: &str,
            deadline: Option<u64>,
            keys: &[&str],
        ) -> &mut Self {
            let priority = Priority::parse(&name[..1]).expect("name starts with h, m or l");
            let meta = RequestMeta {
                request_id: name.into(),
                priority,
                arrival_ms: t,
                deadline_ms: deadline,
            };
            let footprint = if keys == ["*"] {
                Footprint::Everything
            } else {
                Footprint::Keys(keys.iter().map(|k| hash(k)).collect())
            };
            let (seq, out) = self.core.arrive(meta, footprint, t);
            self.seqs.insert(name.into(), seq);
            self.take(out);
            self
        }

        fn complete(&mut self, t: u64, name: &str) -> &mut Self {
            let seq = self.seqs[name];
            let out = self.core.complete(seq, t);
            self.take(out);
            self
        }

        fn tick(&mut self, t: u64) -> &mut Self {
            let out = self.core.tick(t);
            self.take(out);
            self
        }

        fn expect(&mut self, rows: &[&str]) {
            assert_eq!(self.log, rows, "trace rows");
            self.log.clear();
        }
    }

    fn threshold() -> Policy {
        Policy::Threshold(ThresholdConfig::default())
    }

    fn edf(workers: usize, reserve: usize) -> Policy {
        Policy::Edf(EdfConfig {
            workers,
            high_reserve: reserve,
            escalate_ms: 10,
            urgent_ms: 10,
        })
    }

    #[test]
    fn fcfs_admits_everything_at_once() {
        let mut s = Sim::new(Policy::Fcfs);
        for i in 0..20 {
            s.arrive(0, &format!("l{i}"), Some(1), &[&format!("k{i}")]);
        }
        assert_eq!(s.log.len(), 20);
        assert!(s.log.iter().all(|l| l.ends_with("baseline-immediate")));
    }

    #[test]
    fn threshold_waits_for_free_slots_and_rechecks_every_5ms() {
        let mut s = Sim::new(threshold());
        for i in 0..6 {
            s.arrive(0, &format!("h{i}"), None, &[&format!("k{i}")]);
        }
        s.log.clear();
        s.arrive(0, "low", Some(50), &["x"])
            .tick(5)
            .complete(7, "h0");
        s.complete(7, "h1")
            .complete(7, "h2")
            .complete(7, "h3")
            .tick(7)
            .tick(10);
        s.expect(&["0 low check-delay", "5 low check-delay", "10 low scheduled"]);
        assert_eq!(s.core.next_wakeup(10), None);
    }

    #[test]
    fn threshold_can_trace_only_the_first_check_delay() {
        let mut s = Sim::new(Policy::Threshold(ThresholdConfig {
            trace_every_check: false,
            ..ThresholdConfig::default()
        }));
        for i in 0..6 {
            s.arrive(0, &format!("h{i}"), None, &[&format!("k{i}")]);
        }
        s.log.clear();
        s.arrive(0, "low", Some(50), &["x"]).tick(5).tick(10);
        s.complete(12, "h0")
            .complete(12, "h1")
            .complete(12, "h2")
            .tick(15);
        s.expect(&["0 low check-delay", "15 low scheduled"]);
    }

    #[test]
    fn threshold_priorities_need_1_2_4_free_slots() {
        let mut s = Sim::new(threshold());
        for i in 0..5 {
            s.arrive(0, &format!("h{i}"), None, &[&format!("k{i}")]);
        }
        s.log.clear();
        // 3 free: High (1) and Medium (2) go, Low (4) waits.
        s.arrive(1, "h-a", None, &["a"])
            .arrive(1, "m-b", None, &["b"])
            .arrive(1, "l-c", None, &["c"]);
        s.expect(&["1 h-a scheduled", "1 m-b scheduled", "1 l-c check-delay"]);
    }

    #[test]
    fn threshold_admits_urgent_requests_if_any_slot_is_free() {
        let mut s = Sim::new(threshold());
        for i in 0..7 {
            s.arrive(0, &format!("h{i}"), None, &[&format!("k{i}")]);
        }
        s.log.clear();
        // 1 free < 4: waits until 10 ms before its deadline.
        s.arrive(0, "low", Some(20), &["x"]).tick(5).tick(10);
        s.expect(&[
            "0 low check-delay",
            "5 low check-delay",
            "10 low urgent-admit",
        ]);
        // No free slot: even an urgent request keeps waiting.
        s.arrive(10, "l-late", Some(12), &["y"]).tick(15);
        s.expect(&["10 l-late check-delay", "15 l-late check-delay"]);
    }

    /// The seed's threshold as the plainest loop: each waiting request has
    /// its own next check, and every pass looks at every due one.
    struct NaiveThreshold {
        c: ThresholdConfig,
        in_use: usize,
        /// (name, priority, deadline, next check, delayed), arrival order.
        waiting: Vec<(String, Priority, Option<u64>, u64, bool)>,
        log: Vec<String>,
    }

    impl NaiveThreshold {
        fn pass(&mut self, now: u64) {
            let c = self.c.clone();
            let mut still = vec![];
            for (name, p, deadline, next, delayed) in std::mem::take(&mut self.waiting) {
                if next > now {
                    still.push((name, p, deadline, next, delayed));
                    continue;
                }
                let avail = c.slots - self.in_use;
                let urgent = deadline.is_some_and(|d| now.saturating_add(c.urgent_margin_ms) >= d);
                let decision = if avail >= c.required[p as usize] {
                    "scheduled"
                } else if urgent && avail >= 1 {
                    "urgent-admit"
                } else {
                    "check-delay"
                };
                if decision != "check-delay" {
                    self.in_use += 1;
                } else if !c.trace_every_check && delayed {
                    still.push((name, p, deadline, now + c.recheck_ms, true));
                    continue;
                }
                self.log.push(format!("{now} {name} {decision}"));
                if decision == "check-delay" {
                    still.push((name, p, deadline, now + c.recheck_ms, true));
                }
            }
            self.waiting = still;
        }
    }

    #[test]
    fn threshold_decides_as_a_per_request_recheck_loop_would() {
        for trace_every_check in [false, true] {
            for seed in 1..=4u64 {
                let c = ThresholdConfig {
                    trace_every_check,
                    ..ThresholdConfig::default()
                };
                let mut s = Sim::new(Policy::Threshold(c.clone()));
                let mut naive = NaiveThreshold {
                    c,
                    in_use: 0,
                    waiting: vec![],
                    log: vec![],
                };
                let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15);
                let mut rand = move |n: u64| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    x % n
                };
                let mut running: Vec<String> = vec![];
                let (mut t, mut next_id, mut seen) = (0u64, 0, 0);
                while t < 3000 {
                    t += 1 + rand(3); // ticks come late as often as not
                    s.tick(t);
                    naive.pass(t);
                    for _ in 0..rand(4) {
                        let p = ["h", "m", "l"][rand(3) as usize];
                        let name = format!("{p}{next_id}");
                        next_id += 1;
                        let deadline = (rand(4) > 0).then(|| t + 5 + rand(300));
                        s.arrive(t, &name, deadline, &[&name]);
                        let priority = Priority::parse(p).unwrap();
                        naive.waiting.push((name, priority, deadline, t, false));
                        naive.pass(t);
                    }
                    assert_eq!(
                        s.log[seen..],
                        naive.log[seen.min(naive.log.len())..],
                        "seed {seed}, trace_every_check {trace_every_check}, t={t}"
                    );
                    // Admitted writes run for a while, then complete.
                    for line in &s.log[seen..] {
                        let name = line.split(' ').nth(1).unwrap();
                        if !line.ends_with("check-delay") {
                            running.push(name.to_string());
                        }
                    }
                    seen = s.log.len();
                    running.retain(|name| {
                        let done = rand(6) == 0;
                        if done {
                            s.complete(t, name);
                            naive.in_use -= 1;
                        }
                        !done
                    });
                }
                assert!(
                    s.log.iter().filter(|l| l.ends_with("check-delay")).count() > 1000,
                    "the scenario kept slots busy and requests waiting"
                );
            }
        }
    }

    #[test]
    fn edf_admits_on_completion_without_polling() {
        let mut s = Sim::new(edf(2, 1));
        s.arrive(0, "h1", None, &["a"])
            .arrive(0, "h2", None, &["b"]);
        s.arrive(1, "m", Some(500), &["c"]);
        assert_eq!(
            s.core.next_wakeup(1),
            None,
            "all busy: only a completion can help"
        );
        // One free slot is the High reserve; Medium needs two.
        s.complete(5, "h1");
        s.complete(6, "h2");
        s.expect(&[
            "0 h1 scheduled",
            "0 h2 scheduled",
            "1 m queued",
            "6 m scheduled",
        ]);
    }

    #[test]
    fn edf_high_never_waits_behind_low() {
        let mut s = Sim::new(edf(2, 1));
        s.arrive(0, "l1", None, &["a"])
            .arrive(0, "l2", None, &["b"]);
        s.arrive(1, "h", None, &["c"]);
        s.expect(&["0 l1 scheduled", "0 l2 queued", "1 h scheduled"]);
    }

    #[test]
    fn edf_orders_by_priority_then_deadline() {
        let mut s = Sim::new(edf(1, 0));
        s.arrive(0, "h-busy", None, &["z"]);
        s.arrive(1, "m-late", Some(900), &["a"])
            .arrive(2, "m-soon", Some(300), &["b"])
            .arrive(3, "l", Some(100), &["c"])
            .arrive(4, "h", Some(5000), &["d"]);
        s.log.clear();
        s.complete(10, "h-busy")
            .complete(11, "h")
            .complete(12, "m-soon")
            .complete(13, "m-late");
        s.expect(&[
            "10 h scheduled",
            "11 m-soon scheduled",
            "12 m-late scheduled",
            "13 l scheduled",
        ]);
    }

    #[test]
    fn edf_escalates_requests_near_their_deadline() {
        let mut s = Sim::new(edf(2, 1));
        s.arrive(0, "m1", None, &["a"]);
        s.arrive(1, "l", Some(100), &["b"]);
        // One slot free, reserved for High: Low waits, with one timer set.
        assert_eq!(s.core.next_wakeup(1), Some(90));
        s.tick(90);
        s.expect(&["0 m1 scheduled", "1 l queued", "90 l urgent-admit"]);
        // An urgent Low beats a Medium with a later deadline, not a High.
        let mut s = Sim::new(edf(1, 0));
        s.arrive(0, "h-busy", None, &["z"]);
        s.arrive(1, "m", Some(1000), &["a"])
            .arrive(2, "l", Some(30), &["b"]);
        s.log.clear();
        s.complete(25, "h-busy");
        s.expect(&["25 l urgent-admit"]);
        s.arrive(26, "h", Some(1000), &["c"])
            .arrive(26, "l2", Some(40), &["d"]);
        s.complete(32, "l");
        s.expect(&["26 h queued", "26 l2 queued", "32 h scheduled"]);
    }

    #[test]
    fn edf_orders_by_deadline_within_the_escalation_horizon() {
        let policy = |escalate_ms| {
            Policy::Edf(EdfConfig {
                workers: 1,
                high_reserve: 0,
                escalate_ms,
                urgent_ms: 10,
            })
        };
        let run = |escalate_ms, order: [&str; 3]| {
            let mut s = Sim::new(policy(escalate_ms));
            s.arrive(0, "h-busy", None, &["z"])
                .arrive(1, "l-first", Some(150), &["a"])
                .arrive(100, "m-fresh", Some(200), &["b"])
                .arrive(100, "h-roomy", Some(900), &["c"]);
            s.log.clear();
            s.complete(110, "h-busy")
                .complete(111, order[0])
                .complete(112, order[1])
                .complete(113, order[2]);
            s.log.clone()
        };
        // Horizon 300 ms: Low and Medium go in deadline order; High first.
        assert_eq!(
            run(300, ["h-roomy", "l-first", "m-fresh"]),
            [
                "110 h-roomy scheduled",
                "111 l-first scheduled",
                "112 m-fresh scheduled"
            ]
        );
        // Horizon 10 ms: priority first until a deadline is that close.
        assert_eq!(
            run(10, ["h-roomy", "m-fresh", "l-first"]),
            [
                "110 h-roomy scheduled",
                "111 m-fresh scheduled",
                "112 l-first scheduled"
            ]
        );
        // The High reserve holds inside the horizon: Medium waits for it
        // until it is urgent, then takes it.
        let mut s = Sim::new(Policy::Edf(EdfConfig {
            workers: 2,
            high_reserve: 1,
            escalate_ms: 1000,
            urgent_ms: 10,
        }));
        s.arrive(0, "h-busy", None, &["z"])
            .arrive(0, "m", Some(100), &["a"]);
        assert_eq!(s.core.next_wakeup(0), Some(90));
        s.tick(90);
        s.expect(&["0 h-busy scheduled", "0 m queued", "90 m urgent-admit"]);
    }

    #[test]
    fn edf_judges_deadlines_by_when_an_admitted_write_will_start() {
        let mut s = Sim::new(Policy::Edf(EdfConfig {
            workers: 1,
            high_reserve: 0,
            escalate_ms: 1000,
            urgent_ms: 10,
        }));
        // Admitted writes have been starting 40 ms after admission.
        let mut t = 0;
        for i in 0..24 {
            s.arrive(t, &format!("h{i}"), None, &["w"]);
            t += 40;
            s.complete(t, &format!("h{i}"));
        }
        s.arrive(t, "h-busy", None, &["z"])
            .arrive(t, "m-tight", Some(t + 30), &["a"])
            .arrive(t, "l-roomy", Some(t + 300), &["b"]);
        s.log.clear();
        s.complete(t + 1, "h-busy").complete(t + 2, "l-roomy");
        // m-tight's deadline is still ahead, but its write would start too
        // late: the request that can still make it goes first.
        s.expect(&[
            &format!("{} l-roomy scheduled", t + 1),
            &format!("{} m-tight scheduled", t + 2),
        ]);
    }

    #[test]
    fn edf_serves_requests_that_can_still_make_their_deadline_first() {
        let mut s = Sim::new(edf(1, 0));
        s.arrive(0, "h-busy", None, &["z"])
            .arrive(0, "h-late", Some(50), &["a"])
            .arrive(1, "m-late", Some(60), &["b"])
            .arrive(90, "l-ahead", Some(1000), &["c"])
            .arrive(95, "m-ahead", Some(300), &["d"]);
        s.log.clear();
        s.complete(100, "h-busy")
            .complete(101, "m-ahead")
            .complete(102, "l-ahead")
            .complete(103, "h-late");
        s.expect(&[
            "100 m-ahead scheduled",
            "101 l-ahead scheduled",
            "102 h-late scheduled",
            "103 m-late scheduled",
        ]);
        // A late request held back by the High reserve never turns urgent,
        // so it sets no timer (which would fire at once, forever).
        let mut s = Sim::new(edf(2, 1));
        s.arrive(0, "h-busy", None, &["z"])
            .arrive(0, "m-late", Some(20), &["a"]);
        assert_eq!(s.core.next_wakeup(0), Some(10));
        assert_eq!(s.core.next_wakeup(100), None);
        s.complete(100, "h-busy");
        s.expect(&[
            "0 h-busy scheduled",
            "0 m-late queued",
            "100 m-late scheduled",
        ]);
    }

    #[test]
    fn requests_past_their_deadline_still_run() {
        let mut s = Sim::new(edf(1, 0));
        s.arrive(0, "h-busy", None, &["z"])
            .arrive(0, "l", Some(5), &["a"]);
        s.complete(100, "h-busy");
        s.expect(&["0 h-busy scheduled", "0 l queued", "100 l scheduled"]);
    }

    #[test]
    fn same_key_writes_run_in_arrival_order_under_every_policy() {
        for policy in [Policy::Fcfs, threshold(), edf(4, 1)] {
            let name = policy.name();
            let mut s = Sim::new(policy);
            s.arrive(0, "l-first", None, &["k"]);
            s.arrive(1, "h-second", None, &["k", "other"]);
            s.arrive(2, "h-other", None, &["other"]);
            let admitted: Vec<&String> = s.log.iter().filter(|l| l.contains("h-second")).collect();
            assert!(
                admitted
                    .iter()
                    .all(|l| !l.ends_with("scheduled") && !l.ends_with("immediate")),
                "{name}: {:?}",
                s.log
            );
            s.log.clear();
            s.complete(10, "l-first").tick(10);
            assert!(
                s.log
                    .iter()
                    .any(|l| l.starts_with("10 h-second") && !l.ends_with("check-delay")),
                "{name}: {:?}",
                s.log
            );
        }
    }

    #[test]
    fn range_deletes_order_against_everything() {
        let mut s = Sim::new(Policy::Fcfs);
        s.arrive(0, "l-a", None, &["a"])
            .arrive(1, "m-range", None, &["*"]);
        s.arrive(2, "h-b", None, &["b"]);
        s.expect(&["0 l-a baseline-immediate"]);
        s.complete(3, "l-a");
        s.expect(&["3 m-range baseline-immediate"]);
        s.complete(4, "m-range");
        s.expect(&["4 h-b baseline-immediate"]);
    }

    #[test]
    fn withdrawn_requests_leave_a_cancelled_row_and_free_their_keys() {
        let mut s = Sim::new(edf(1, 0));
        s.arrive(0, "h-busy", None, &["k"])
            .arrive(1, "l", None, &["k"]);
        s.complete(2, "l");
        s.complete(3, "h-busy");
        s.expect(&["0 h-busy scheduled", "1 l queued", "2 l cancelled"]);
        assert_eq!(s.core.waiting_by_priority(), [0, 0, 0]);
    }
}
