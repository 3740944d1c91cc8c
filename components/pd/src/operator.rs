//! Operators: the membership changes PD walks a region through, one region
//! heartbeat at a time, as upstream PD does.
//!
//! An operator is a list of steps. Each heartbeat from the region's leader
//! shows PD the region's peers, their roles and its leader; PD skips every
//! step the report shows done and answers with the command for the first
//! step that is not (again, if it was sent before and not carried out yet).
//! Replacing the peer on store 1 (the leader) by one on store 4:
//!
//! ```text
//!   peers (leader*)        step shown done?           PD answers
//!   1* 2 3                 0: add learner 9 on 4  no  change_peer AddLearnerNode 9@4
//!   1* 2 3 9(learner)      0 yes; 1: promote 9    no  change_peer AddNode 9@4
//!   1* 2 3 9               1 yes; 2: leader to 2  no  transfer_leader to 2
//!   1 2* 3 9               2 yes; 3: remove 1     no  change_peer RemoveNode 1
//!   2* 3 9                 3 yes: finished            (nothing)
//! ```
//!
//! A step "add learner" is done only once the learner is not pending (has
//! caught up), so it is never promoted while it lacks data. An operator is
//! dropped when a step runs longer than its wait (as upstream's: adding a
//! learner `[schedule] operator-timeout` and 6 s a MiB of the region, a
//! role or leadership change 60 s and 0.6 s a MiB, a merge ten of those;
//! see `step_timeout`), when the
//! region changed under it (split, merge, or a membership change no step of
//! its own explains), or when its next step would remove the leader; the
//! replica checker then plans afresh from what the region is.
//!
//! A merge is two operators, as upstream makes it: the source region's
//! (its peers moved onto the target's stores first if they differ, then
//! `merge` sent to its leader until PD sees the source gone, swallowed by
//! the target) and the target's, a passive one that only keeps other
//! operators off the target and ends when the target's range grows. When
//! one of the two ends, so does the other.

use std::fmt;
use std::time::Duration;

use serde_json::{json, Value};
use tikal_proto::{eraftpb::ConfChangeType, metapb, pdpb};

use crate::clock::elapsed;
use crate::format::{go_duration, rfc3339};
use crate::regions::{is_voter, RegionInfo};

#[derive(Debug, Clone, PartialEq)]
pub enum Step {
    AddLearner {
        store_id: u64,
        peer_id: u64,
    },
    PromoteLearner {
        store_id: u64,
        peer_id: u64,
    },
    TransferLeader {
        from_store: u64,
        to_store: u64,
    },
    RemovePeer {
        store_id: u64,
        peer_id: u64,
    },
    /// Region `source_id` merges into `target` (the target as it was when
    /// the merge was planned). The source's operator sends it (`passive`
    /// false); the target's waits for its range to change (`passive` true).
    MergeRegion {
        source_id: u64,
        target: metapb::Region,
        passive: bool,
    },
    /// The region, as it spans `start_key..end_key`, splits by `policy`
    /// (at `keys` with `Usekey`); done once its range changed.
    SplitRegion {
        start_key: Vec<u8>,
        end_key: Vec<u8>,
        policy: pdpb::CheckPolicy,
        keys: Vec<Vec<u8>>,
    },
}

impl Step {
    /// Whether the step puts, moves or takes something on `store`.
    pub fn names_store(&self, store: u64) -> bool {
        match self {
            Step::AddLearner { store_id, .. }
            | Step::PromoteLearner { store_id, .. }
            | Step::RemovePeer { store_id, .. } => *store_id == store,
            Step::TransferLeader {
                from_store,
                to_store,
            } => *from_store == store || *to_store == store,
            Step::MergeRegion { target, .. } => target.peers.iter().any(|p| p.store_id == store),
            Step::SplitRegion { .. } => false,
        }
    }

    /// Whether the region, as its leader reports it, shows this step done.
    pub fn is_done(&self, r: &RegionInfo) -> bool {
        match *self {
            Step::AddLearner { store_id, peer_id } => {
                r.peer_on(store_id).is_some_and(|p| p.id == peer_id) && !r.is_pending(peer_id)
            }
            Step::PromoteLearner { store_id, peer_id } => r
                .peer_on(store_id)
                .is_some_and(|p| p.id == peer_id && is_voter(p)),
            Step::TransferLeader { to_store, .. } => r.leader_store() == Some(to_store),
            Step::RemovePeer { store_id, .. } => r.peer_on(store_id).is_none(),
            // The source is done when it is gone (see `Cluster`), never by
            // a report of its own.
            Step::MergeRegion {
                ref target,
                passive,
                ..
            } => {
                passive
                    && (r.region.start_key != target.start_key
                        || r.region.end_key != target.end_key)
            }
            Step::SplitRegion {
                ref start_key,
                ref end_key,
                ..
            } => r.region.start_key != *start_key || r.region.end_key != *end_key,
        }
    }

    /// Whether this step's membership change shows in the region, done or
    /// not: each such change raised the region's conf_ver by one.
    fn changed_membership(&self, r: &RegionInfo) -> bool {
        match *self {
            Step::AddLearner { store_id, peer_id } => {
                r.peer_on(store_id).is_some_and(|p| p.id == peer_id)
            }
            Step::PromoteLearner { .. } => self.is_done(r),
            Step::TransferLeader { .. } => false,
            Step::RemovePeer { store_id, peer_id } => {
                r.peer_on(store_id).map(|p| p.id) != Some(peer_id)
            }
            Step::MergeRegion { .. } | Step::SplitRegion { .. } => false,
        }
    }

    /// The heartbeat-response fields that ask the leader to take this step
    /// (None: nothing to send, the step is under way). A membership change
    /// goes in `change_peer_v2` when every store takes it there, else in
    /// `change_peer`, as upstream chooses by cluster version.
    fn command(
        &self,
        r: &RegionInfo,
        conf_change_v2: bool,
    ) -> Option<pdpb::RegionHeartbeatResponse> {
        let change = |change_type: ConfChangeType, peer: metapb::Peer| {
            let change = pdpb::ChangePeer {
                peer: Some(peer),
                change_type: change_type as i32,
            };
            if conf_change_v2 {
                pdpb::RegionHeartbeatResponse {
                    change_peer_v2: Some(pdpb::ChangePeerV2 {
                        changes: vec![change],
                    }),
                    ..Default::default()
                }
            } else {
                pdpb::RegionHeartbeatResponse {
                    change_peer: Some(change),
                    ..Default::default()
                }
            }
        };
        let new_peer = |id, store_id, role: metapb::PeerRole| metapb::Peer {
            id,
            store_id,
            role: role as i32,
            ..Default::default()
        };
        match *self {
            Step::MergeRegion {
                ref target,
                passive: false,
                ..
            } => Some(pdpb::RegionHeartbeatResponse {
                merge: Some(pdpb::Merge {
                    target: Some(target.clone()),
                }),
                ..Default::default()
            }),
            Step::MergeRegion { passive: true, .. } => None,
            Step::SplitRegion {
                policy, ref keys, ..
            } => Some(pdpb::RegionHeartbeatResponse {
                split_region: Some(pdpb::SplitRegion {
                    policy: policy as i32,
                    keys: keys.clone(),
                }),
                ..Default::default()
            }),
            Step::AddLearner { store_id, peer_id } => match r.peer_on(store_id) {
                Some(_) => None,
                None => Some(change(
                    ConfChangeType::AddLearnerNode,
                    new_peer(peer_id, store_id, metapb::PeerRole::Learner),
                )),
            },
            Step::PromoteLearner { store_id, peer_id } => Some(change(
                ConfChangeType::AddNode,
                new_peer(peer_id, store_id, metapb::PeerRole::Voter),
            )),
            Step::TransferLeader { to_store, .. } => {
                let peer = r.peer_on(to_store)?.clone();
                Some(pdpb::RegionHeartbeatResponse {
                    transfer_leader: Some(pdpb::TransferLeader {
                        peer: Some(peer.clone()),
                        peers: vec![peer],
                    }),
                    ..Default::default()
                })
            }
            Step::RemovePeer { store_id, .. } => Some(change(
                ConfChangeType::RemoveNode,
                r.peer_on(store_id)?.clone(),
            )),
        }
    }
}

/// Upstream's step descriptions.
impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Step::AddLearner { store_id, peer_id } => {
                write!(f, "add learner peer {peer_id} on store {store_id}")
            }
            Step::PromoteLearner { store_id, peer_id } => {
                write!(
                    f,
                    "promote learner peer {peer_id} on store {store_id} to voter"
                )
            }
            Step::TransferLeader {
                from_store,
                to_store,
            } => write!(
                f,
                "transfer leader from store {from_store} to store {to_store}"
            ),
            Step::RemovePeer { store_id, .. } => write!(f, "remove peer on store {store_id}"),
            Step::MergeRegion {
                source_id, target, ..
            } => write!(f, "merge region {source_id} into region {}", target.id),
            Step::SplitRegion { policy, .. } => {
                write!(f, "split region with policy {}", policy.as_str_name())
            }
        }
    }
}

/// Upstream's `OpKind` bits (named in bit order by [`kind_names`]).
pub mod kind {
    /// Asked for by hand (`POST /operators`).
    pub const ADMIN: u32 = 1 << 0;
    pub const MERGE: u32 = 1 << 2;
    pub const REPLICA: u32 = 1 << 4;
    pub const SPLIT: u32 = 1 << 5;
    pub const HOT_REGION: u32 = 1 << 6;
    pub const REGION: u32 = 1 << 7;
    pub const LEADER: u32 = 1 << 8;
}

pub fn kind_names(k: u32) -> String {
    let names: Vec<&str> = [
        (kind::ADMIN, "admin"),
        (kind::MERGE, "merge"),
        (kind::REPLICA, "replica"),
        (kind::SPLIT, "split"),
        (kind::HOT_REGION, "hot-region"),
        (kind::REGION, "region"),
        (kind::LEADER, "leader"),
    ]
    .iter()
    .filter(|(bit, _)| k & bit != 0)
    .map(|(_, name)| *name)
    .collect();
    if names.is_empty() {
        "unknown".into()
    } else {
        names.join(",")
    }
}

/// What a checker or scheduler wants done to a region.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    /// Upstream's operator description, e.g. `replace-down-replica`.
    pub desc: String,
    /// e.g. `mv peer: store [1] to [4]`.
    pub brief: String,
    pub kind: u32,
    pub steps: Vec<Step>,
}

/// How an operator ended (upstream's `pdpb.OperatorStatus` names).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpStatus {
    Running,
    Success,
    Timeout,
    Cancel,
}

impl OpStatus {
    pub fn name(self) -> &'static str {
        match self {
            OpStatus::Running => "RUNNING",
            OpStatus::Success => "SUCCESS",
            OpStatus::Timeout => "TIMEOUT",
            OpStatus::Cancel => "CANCEL",
        }
    }

    /// Upstream's internal `OpStatus` number, shown by `?object`.
    fn code(self) -> u32 {
        match self {
            OpStatus::Running => 1,
            OpStatus::Success => 2,
            OpStatus::Cancel => 3,
            OpStatus::Timeout => 6,
        }
    }
}

/// What a running operator will change on one store once done.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Influence {
    pub store_id: u64,
    pub regions: i64,
    /// Region score (MiB), see `RegionInfo::score_mib`.
    pub score: i64,
    pub leaders: i64,
    /// The led regions' sizes (MiB, as `score`).
    pub leader_score: i64,
    /// Write flow (bytes per second) that moves with a leadership, as the
    /// hot scheduler counts a store's flow.
    pub write_rate: i64,
}

#[derive(Debug, Clone)]
pub struct Operator {
    pub plan: Plan,
    pub region_id: u64,
    /// The region's epoch and range when the operator was made.
    pub region_epoch: metapb::RegionEpoch,
    pub start_key: Vec<u8>,
    pub end_key: Vec<u8>,
    pub approximate_size_mib: u64,
    /// Index of the first step not seen done.
    pub current: usize,
    pub created_at: i64,
    /// When the current step began (the operator's start, or when the
    /// step before it was seen done).
    pub step_started_at: i64,
    /// `[schedule] operator-timeout`: the base of a slow step's wait (see
    /// [`step_timeout`]).
    pub slow_wait: Duration,
}

/// The base of a fast step's wait: upstream's `FastStepWaitTime`.
const FAST_STEP_WAIT: Duration = Duration::from_secs(60);

/// How long `step` may take on a region of `size_mib` MiB, as upstream
/// gives each step its own wait: one that changes roles or leadership
/// 60 s (or `slow_wait`, if shorter) and 0.6 s a MiB; adding a learner,
/// which takes a snapshot, `slow_wait` (`[schedule] operator-timeout`, 10
/// min) and 6 s a MiB; a merge ten fast steps.
pub fn step_timeout(step: &Step, size_mib: u64, slow_wait: Duration) -> Duration {
    let fast = (FAST_STEP_WAIT.min(slow_wait))
        .saturating_add(Duration::from_millis(size_mib.saturating_mul(600)));
    match step {
        Step::AddLearner { .. } => {
            slow_wait.saturating_add(Duration::from_secs(size_mib.saturating_mul(6)))
        }
        Step::MergeRegion { .. } => fast.saturating_mul(10),
        _ => fast,
    }
}

/// What one heartbeat makes of an operator.
#[derive(Debug)]
pub enum Progress {
    /// Send this to the leader (None: the step is under way).
    Running(Option<Box<pdpb::RegionHeartbeatResponse>>),
    Finished,
    /// The operator is dropped, for this reason.
    Dropped(OpStatus, &'static str),
}

/// The region's peers as (store, role), sorted: a merge's source must
/// match its target's.
fn stores_of(region: &metapb::Region) -> Vec<(u64, i32)> {
    let mut stores: Vec<(u64, i32)> = (region.peers.iter())
        .map(|p| (p.store_id, p.role))
        .collect();
    stores.sort_unstable();
    stores
}

impl Operator {
    /// An operator carrying out `plan` on `r`, from `now`; `slow_wait` is
    /// `[schedule] operator-timeout` (see [`step_timeout`]).
    pub fn new(plan: Plan, r: &RegionInfo, now: i64, slow_wait: Duration) -> Operator {
        Operator {
            plan,
            region_id: r.region.id,
            region_epoch: r.epoch(),
            start_key: r.region.start_key.clone(),
            end_key: r.region.end_key.clone(),
            approximate_size_mib: r.approximate_size_mib(),
            current: 0,
            created_at: now,
            step_started_at: now,
            slow_wait,
        }
    }

    pub fn steps(&self) -> &[Step] {
        &self.plan.steps
    }

    /// The store the step to be carried out next puts a replica on, if it
    /// does (a learner added or promoted).
    pub fn next_placement(&self) -> Option<u64> {
        match self.plan.steps.get(self.current)? {
            Step::AddLearner { store_id, .. } | Step::PromoteLearner { store_id, .. } => {
                Some(*store_id)
            }
            _ => None,
        }
    }

    /// Moves past the steps `r` shows done and says what to do next.
    pub fn progress(&mut self, r: &RegionInfo, now: i64, conf_change_v2: bool) -> Progress {
        let steps = &self.plan.steps;
        while self.current < steps.len() && steps[self.current].is_done(r) {
            self.current += 1;
            self.step_started_at = now;
        }
        let Some(step) = steps.get(self.current) else {
            return Progress::Finished;
        };
        if self.is_timed_out(now) {
            return Progress::Dropped(OpStatus::Timeout, "operator timed out");
        }
        let epoch = r.epoch();
        // Preparing the merge adds one to the source's version and keeps
        // its range and peers: its operator ends when the source is gone.
        // Anything more (a split, a merge into it, a merge rolled back, a
        // peer the alignment steps did not plan, added by an operator
        // dropped just before) makes the merge stale, and it is dropped
        // (with its target's half) to be planned again; else the command
        // is refused for good and both regions stay held until the
        // operator times out.
        if let Step::MergeRegion {
            passive: false,
            target,
            ..
        } = step
        {
            let moved = r.region.start_key != self.start_key
                || r.region.end_key != self.end_key
                || stores_of(&r.region) != stores_of(target)
                || epoch.version > self.region_epoch.version.saturating_add(1);
            if moved {
                return Progress::Dropped(OpStatus::Cancel, "merge source split or merged");
            }
            return Progress::Running(step.command(r, conf_change_v2).map(Box::new));
        }
        if epoch.version != self.region_epoch.version {
            return Progress::Dropped(OpStatus::Cancel, "region split or merged");
        }
        let explained = steps[..=self.current]
            .iter()
            .filter(|s| s.changed_membership(r))
            .count() as u64;
        if epoch.conf_ver.saturating_sub(self.region_epoch.conf_ver) > explained {
            return Progress::Dropped(OpStatus::Cancel, "membership changed by another hand");
        }
        if let Step::RemovePeer { store_id, .. } = step {
            if r.leader_store() == Some(*store_id) {
                return Progress::Dropped(OpStatus::Cancel, "next step would remove the leader");
            }
        }
        Progress::Running(step.command(r, conf_change_v2).map(Box::new))
    }

    /// Whether this operator splits its region.
    pub fn splits(&self) -> bool {
        (self.steps().iter()).any(|s| matches!(s, Step::SplitRegion { .. }))
    }

    /// The region of the other half of a merge, if this is one.
    pub fn merge_partner(&self) -> Option<u64> {
        self.steps().iter().find_map(|s| match s {
            Step::MergeRegion {
                source_id,
                target,
                passive,
            } => Some(if *passive { *source_id } else { target.id }),
            _ => None,
        })
    }

    /// What the steps not yet shown in `r` (the region as PD knows it)
    /// will change, per store, so schedulers count a move under way as made
    /// and do not plan it twice.
    pub fn influence(&self, r: &RegionInfo) -> Vec<Influence> {
        let score = i64::try_from(r.score_mib()).unwrap_or(i64::MAX);
        let mut out = vec![];
        for step in self.steps().iter().skip(self.current) {
            match *step {
                Step::AddLearner { store_id, .. } if r.peer_on(store_id).is_none() => {
                    out.push(Influence {
                        store_id,
                        regions: 1,
                        score,
                        ..Default::default()
                    })
                }
                Step::RemovePeer { store_id, .. } if r.peer_on(store_id).is_some() => {
                    out.push(Influence {
                        store_id,
                        regions: -1,
                        score: -score,
                        ..Default::default()
                    })
                }
                Step::TransferLeader {
                    from_store,
                    to_store,
                } if r.leader_store() != Some(to_store) => {
                    // `as` saturates (and takes NaN to 0).
                    let write_rate = r.write_bytes_rate as i64;
                    out.push(Influence {
                        store_id: from_store,
                        leaders: -1,
                        leader_score: -score,
                        write_rate: write_rate.saturating_neg(),
                        ..Default::default()
                    });
                    out.push(Influence {
                        store_id: to_store,
                        leaders: 1,
                        leader_score: score,
                        write_rate,
                        ..Default::default()
                    });
                }
                _ => {}
            }
        }
        out
    }

    /// Every step's wait together, as upstream shows an operator's.
    pub fn timeout(&self) -> Duration {
        (self.plan.steps.iter())
            .map(|s| step_timeout(s, self.approximate_size_mib, self.slow_wait))
            .fold(Duration::ZERO, Duration::saturating_add)
    }

    /// Whether the current step has run past its own wait
    /// ([`step_timeout`]); a finished operator never times out.
    pub fn is_timed_out(&self, now: i64) -> bool {
        self.plan.steps.get(self.current).is_some_and(|step| {
            let wait = step_timeout(step, self.approximate_size_mib, self.slow_wait);
            elapsed(self.step_started_at, now) > wait
        })
    }

    /// Upstream's `GET /pd/api/v1/operators?object` entry.
    pub fn json_object(&self, status: OpStatus) -> Value {
        json!({
            "desc": self.plan.desc,
            "brief": self.plan.brief,
            "region_id": self.region_id,
            "region_epoch": {
                "conf_ver": self.region_epoch.conf_ver,
                "version": self.region_epoch.version,
            },
            "kind": self.plan.kind,
            "timeout": go_duration(self.timeout()),
            "status": status.code(),
        })
    }
}

/// Upstream's one-line form, the JSON string `GET /operators` lists:
/// `make-up-replica {add peer: store [2]} (kind:replica,region, region:2(1, 1),
/// createAt:…, startAt:…, currentStep:0, size:0, steps:[0:{add learner peer 9
/// on store 2}, 1:{promote learner peer 9 on store 2 to voter}], timeout:[10m0s])`.
impl fmt::Display for Operator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let steps: Vec<String> = self
            .steps()
            .iter()
            .enumerate()
            .map(|(i, s)| format!("{i}:{{{s}}}"))
            .collect();
        let created = rfc3339(self.created_at);
        write!(
            f,
            "{} {{{}}} (kind:{}, region:{}({}, {}), createAt:{created}, startAt:{created}, \
             currentStep:{}, size:{}, steps:[{}], timeout:[{}])",
            self.plan.desc,
            self.plan.brief,
            kind_names(self.plan.kind),
            self.region_id,
            self.region_epoch.version,
            self.region_epoch.conf_ver,
            self.current,
            self.approximate_size_mib,
            steps.join(", "),
            go_duration(self.timeout()),
        )
    }
}
