//! What PD asks of the cluster: on each region heartbeat, drive the
//! region's operator a step on, or plan a new one; and take stores out of
//! service (Up -> Offline -> Tombstone, see [`crate::stores`]).
//!
//! A region without an operator is planned for by the first that wants
//! something, in this order (each within its `[schedule] *-schedule-limit`
//! of running operators of its kind):
//!
//! | who                                   | wants                                         |
//! |---------------------------------------|-----------------------------------------------|
//! | replica checker ([`checker`])          | repair: `max-replicas` voters on live stores  |
//! | `evict-leader-scheduler` ([`balance`]) | leaders off the stores it holds (any region)  |
//! | merge checker ([`merge`])              | a small region merged into a neighbour        |
//! | `grant-leader-scheduler` ([`balance`]) | leaders onto the stores it holds              |
//! | `balance-hot-region-scheduler` ([`hot`]) | a hot leader off a store taking most writes |
//! | `balance-leader-scheduler` ([`balance`]) | leader counts even across Up stores         |
//! | `balance-region-scheduler` ([`balance`]) | region counts even across Up stores         |
//!
//! A plan whose steps would overdraw a store's limit (see
//! [`store_limit`]) is not made; the region's next heartbeat plans again.
//! With `halt-scheduling` on, nothing is planned; a paused checker
//! (`pd-ctl checker pause`) or scheduler is passed over.
//!
//! Only healthy regions (led, fully replicated, nothing pending or down)
//! are merged or balanced. Schedulers see each store's counts as they will
//! be once the running operators are done (upstream's operator influence),
//! so a heartbeat round plans no more moves than the imbalance needs. The
//! schedulers run by region heartbeats: every region reports on a timer
//! and on every change, so each gets its turn; an operator's first step
//! goes back on the heartbeat that made it.
//!
//! At most one operator runs per region. PD keeps operators in memory
//! only: a restarted PD plans afresh from what the regions report (a
//! learner left behind by a lost operator is promoted by the checker).
//! Ended operators are kept a while so `GET /operators/{region}` can say
//! how the last one ended.

use std::cell::OnceCell;
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::time::Duration;

use tikal_proto::{metapb, pdpb};
use tracing::{debug, info, warn};

use crate::checker::{self, ClusterView};
use crate::clock::elapsed;
use crate::cluster::{Cluster, PdResult};
use crate::config::{LeaderPolicy, ScheduleOptions};
use crate::operator::{kind, OpStatus, Operator, Plan, Progress, Step};
use crate::regions::{RegionInfo, StoreLoad};
use crate::storage::{self, id_key, Batch, MetaError, MetaStore};
use crate::store_limit::{self, LimitType, Limits, Rates};
use crate::stores::{set_state, supports_conf_change_v2, weighted, StoreState, Weights};
use crate::{balance, hot, merge, scatter};

/// How long an ended operator stays visible (as upstream keeps records).
const ENDED_KEPT: Duration = Duration::from_secs(10 * 60);

/// The schedulers PD runs unless told otherwise, by upstream's names.
pub const SCHEDULERS: [&str; 3] = [
    "balance-leader-scheduler",
    "balance-region-scheduler",
    "balance-hot-region-scheduler",
];

/// The scheduler that moves every leader off the stores it is given, as
/// upstream's (one scheduler for all of them; `evict-leader-scheduler-{id}`
/// names one store's part when deleting).
pub const EVICT_LEADER: &str = "evict-leader-scheduler";
/// The scheduler that moves every leader it can onto the stores it is
/// given (those of regions with a voter there), named as the one above.
pub const GRANT_LEADER: &str = "grant-leader-scheduler";

/// The schedulers that hold stores, upstream's store-scoped leader
/// schedulers: what each does with the leaders of the stores it holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum LeaderHold {
    /// `evict-leader-scheduler`: every leader leaves, none comes.
    Evict,
    /// `grant-leader-scheduler`: every leader it can comes, none leaves.
    Grant,
}

impl LeaderHold {
    pub const ALL: [LeaderHold; 2] = [LeaderHold::Evict, LeaderHold::Grant];

    pub fn name(self) -> &'static str {
        match self {
            LeaderHold::Evict => EVICT_LEADER,
            LeaderHold::Grant => GRANT_LEADER,
        }
    }

    pub fn by_name(name: &str) -> Option<LeaderHold> {
        LeaderHold::ALL.into_iter().find(|h| h.name() == name)
    }
}

/// The stores each store-holding scheduler that runs holds.
pub(crate) type Holds = BTreeMap<LeaderHold, BTreeSet<u64>>;

/// Upstream's answer for a checker name it does not know.
fn checker_not_found() -> String {
    "[PD:checker:ErrCheckerNotFound]checker not found".into()
}

/// The checkers `pd-ctl checker pause` names, as upstream's.
pub const CHECKERS: [&str; 6] = [
    "learner",
    "replica",
    "rule",
    "split",
    "merge",
    "joint-state",
];

const NANOS_PER_SEC: i64 = 1_000_000_000;

/// A scheduler that runs, and the pause it is under (`pd-ctl scheduler
/// pause`; Unix seconds, both 0 when it never was paused).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RunningScheduler {
    pub name: &'static str,
    pub paused_at: i64,
    pub resume_at: i64,
}

impl RunningScheduler {
    pub fn new(name: &'static str) -> RunningScheduler {
        RunningScheduler {
            name,
            paused_at: 0,
            resume_at: 0,
        }
    }
}

/// The schedulers that run and the stores `evict-leader-scheduler` holds,
/// as kept in the meta store once changed by request (upstream keeps its
/// schedulers' configs too): a restarted PD runs what ran before. Pauses
/// are not kept, as upstream's are not.
#[derive(serde::Serialize, serde::Deserialize)]
struct KeptSchedulers {
    #[serde(default)]
    running: Vec<String>,
    /// The stores each store-holding scheduler holds, by its name.
    #[serde(default)]
    held: BTreeMap<String, BTreeSet<u64>>,
}

/// The schedulers to run and the stores those that hold stores hold, as
/// kept (see [`KeptSchedulers`]), or the default schedulers if nothing is.
/// Names this version does not know are left out with a warning.
pub(crate) fn load_schedulers(meta: &MetaStore) -> Result<(Vec<&'static str>, Holds), MetaError> {
    let Some(bytes) = meta.get(storage::SCHEDULERS)? else {
        return Ok((SCHEDULERS.to_vec(), Holds::new()));
    };
    let kept: KeptSchedulers =
        serde_json::from_slice(&bytes).map_err(|e| MetaError::Corrupted {
            key: "schedulers".into(),
            detail: e.to_string(),
        })?;
    let mut running: Vec<&'static str> = vec![];
    let known = SCHEDULERS
        .into_iter()
        .chain(LeaderHold::ALL.map(LeaderHold::name));
    let known: Vec<&'static str> = known.collect();
    for name in &kept.running {
        match known.iter().find(|s| **s == name) {
            Some(k) if !running.contains(k) => running.push(k),
            Some(_) => {}
            None => warn!(scheduler = name, "kept scheduler unknown: not started"),
        }
    }
    let holds = (kept.held.into_iter())
        .filter_map(|(name, stores)| Some((LeaderHold::by_name(&name)?, stores)))
        .filter(|(h, stores)| running.contains(&h.name()) && !stores.is_empty())
        .collect();
    Ok((running, holds))
}

/// A scheduler request PD refuses, with upstream's messages.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SchedulerError {
    #[error("[PD:scheduler:ErrSchedulerNotFound]scheduler not found")]
    NotFound,
    #[error("[PD:scheduler:ErrSchedulerExisted]scheduler existed")]
    Existed,
    #[error("{0}")]
    Meta(String),
}

impl From<MetaError> for SchedulerError {
    fn from(e: MetaError) -> Self {
        SchedulerError::Meta(e.to_string())
    }
}

pub struct Operators {
    running: HashMap<u64, Operator>,
    /// The last operator that ended, per region: how, and when.
    ended: HashMap<u64, (Operator, OpStatus, i64)>,
    /// What scatters placed, per group.
    scattered: scatter::Groups,
    /// How fast each store may take in and let go replicas.
    limits: Limits,
}

impl Operators {
    pub fn new(limits: Limits) -> Operators {
        Operators {
            running: HashMap::new(),
            ended: HashMap::new(),
            scattered: scatter::Groups::default(),
            limits,
        }
    }
}

/// A store request PD refuses, with upstream's messages.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("[PD:core:ErrStoreNotFound]store {0} not found")]
    NotFound(u64),
    #[error("[PD:core:ErrStoreRemoved]store {0} has been removed")]
    Removed(u64),
    #[error("[PD:core:ErrStoreDestroyed]store {0} has been physically destroyed")]
    Destroyed(u64),
    #[error(
        "[PD:core:ErrStoresNotEnough]can not remove store {id} since the number of up stores \
         would be {up} while need {need}"
    )]
    NotEnough { id: u64, up: usize, need: u32 },
    #[error("invalid rate which should be larger than 0")]
    BadRate,
    #[error("bad format weights {0:?}: each must be a number, 0 or more")]
    BadWeights(Weights),
    #[error("label {0:?}={1:?}: keys and values are letters, digits and -_./")]
    BadLabel(String, String),
    #[error("the label key {0} does not exist")]
    NoLabel(String),
    #[error("store {0} is already held by {1}")]
    HeldByOther(u64, &'static str),
    #[error(transparent)]
    Meta(#[from] MetaError),
}

/// An operator `pd-ctl operator add` asks for, by upstream's names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AdminOp {
    /// `transfer-leader`: leadership to the region's voter there.
    TransferLeader { to_store: u64 },
    /// `add-peer`: a new voter there (a learner first, promoted once it
    /// caught up).
    AddPeer { store_id: u64 },
    /// `remove-peer`: the peer there goes (leadership moved away first if
    /// it leads).
    RemovePeer { store_id: u64 },
    /// `transfer-peer`: the peer moves, as balance-region moves one.
    TransferPeer { from_store: u64, to_store: u64 },
    /// `merge-region`: the region merges into the adjacent `target`
    /// (its peers moved onto the target's stores first).
    MergeRegion { target: u64 },
    /// `split-region`: the region splits at its middle (`scan`,
    /// `approximate`; the store scans for both) or at `keys` (`usekey`).
    SplitRegion {
        policy: pdpb::CheckPolicy,
        keys: Vec<Vec<u8>>,
    },
    /// `scatter-region` (and gRPC `ScatterRegion`): replicas and leader
    /// spread evenly within `group` (see [`crate::scatter`]).
    ScatterRegion { group: String },
}

impl AdminOp {
    /// The plan, or why the region cannot have it now. A plan with no
    /// steps has nothing to do.
    fn plan(self, r: &RegionInfo, v: &View, groups: &mut scatter::Groups) -> Result<Plan, String> {
        let id = r.region.id;
        let takes = |store_id: u64| -> Result<(), String> {
            if !v.is_up(store_id) {
                return Err(format!("store {store_id} is not up"));
            }
            if r.peer_on(store_id).is_some() {
                return Err(format!(
                    "region {id} already has a peer on store {store_id}"
                ));
            }
            Ok(())
        };
        let has_peer = |store_id: u64| -> Result<u64, String> {
            (r.peer_on(store_id).map(|p| p.id))
                .ok_or_else(|| format!("region {id} has no peer on store {store_id}"))
        };
        let no_leader = || format!("no voter of region {id} can take its leadership");
        let (desc, brief, kind, steps) = match self {
            AdminOp::TransferLeader { to_store } => {
                if !r.peer_on(to_store).is_some_and(crate::regions::is_voter) {
                    return Err(format!("region {id} has no voter on store {to_store}"));
                }
                if v.is_evicted(to_store) {
                    return Err(format!("store {to_store} is held by {EVICT_LEADER}"));
                }
                let from_store = r
                    .leader_store()
                    .ok_or_else(|| format!("region {id} has no leader"))?;
                let step = Step::TransferLeader {
                    from_store,
                    to_store,
                };
                let brief = format!("transfer leader: store {from_store} to {to_store}");
                ("admin-transfer-leader", brief, kind::LEADER, vec![step])
            }
            AdminOp::AddPeer { store_id } => {
                takes(store_id)?;
                let steps = checker::add_voter(v, store_id).map_err(|e| e.to_string())?;
                let brief = format!("add peer: store [{store_id}]");
                ("admin-add-peer", brief, kind::REGION, steps.to_vec())
            }
            AdminOp::RemovePeer { store_id } => {
                let peer_id = has_peer(store_id)?;
                let desc = "admin-remove-peer".to_string();
                let p = checker::remove_plan(r, v, desc, store_id, peer_id, &[]);
                return p.map(admin).ok_or_else(no_leader);
            }
            AdminOp::TransferPeer {
                from_store,
                to_store,
            } => {
                has_peer(from_store)?;
                takes(to_store)?;
                let p = checker::move_peer(r, v, "admin-move-peer", from_store, to_store)
                    .map_err(|e| e.to_string())?;
                return p.map(admin).ok_or_else(no_leader);
            }
            AdminOp::MergeRegion { target } => {
                let t = v
                    .cluster
                    .region_by_id(target)
                    .ok_or_else(|| format!("region {target} not found"))?;
                for (which, region) in [(id, r), (target, &t)] {
                    if !region.is_healthy(v.max_replicas()) {
                        return Err(format!(
                            "region {which} has abnormal peers (it must be healthy and fully \
                             replicated)"
                        ));
                    }
                }
                let (a, b) = (&r.region, &t.region);
                let boundary = if !a.start_key.is_empty() && a.start_key == b.end_key {
                    &a.start_key
                } else if !a.end_key.is_empty() && a.end_key == b.start_key {
                    &a.end_key
                } else {
                    return Err(format!("regions {id} and {target} are not adjacent"));
                };
                // As the merge checker: PD would split it again at once.
                if v.cluster.keyspaces.is_bound(boundary) {
                    return Err(format!(
                        "the boundary between regions {id} and {target} is a keyspace's"
                    ));
                }
                let p = crate::merge::plan(r, &t, v, "admin-merge-region")
                    .map_err(|e| e.to_string())?;
                return p.map(admin).ok_or_else(|| {
                    format!("region {id} cannot be moved onto region {target}'s stores")
                });
            }
            AdminOp::SplitRegion { policy, keys } => {
                if policy == pdpb::CheckPolicy::Usekey {
                    let region = &r.region;
                    let mut inside: Vec<&Vec<u8>> = (keys.iter())
                        .filter(|k| {
                            k.as_slice() > region.start_key.as_slice()
                                && (region.end_key.is_empty()
                                    || k.as_slice() < region.end_key.as_slice())
                        })
                        .collect();
                    inside.sort();
                    inside.dedup();
                    // The store splits at these, with ids from AskBatchSplit.
                    match inside.len() {
                        0 => return Err(format!("no split key lies inside region {id}")),
                        n if n > crate::cluster::MAX_SPLIT_COUNT as usize => {
                            return Err(format!(
                                "{n} split keys; at most {} at once",
                                crate::cluster::MAX_SPLIT_COUNT
                            ))
                        }
                        _ => {}
                    }
                }
                let mut brief = format!("split: region {id} use policy {}", policy.as_str_name());
                if !keys.is_empty() {
                    let hex: Vec<String> = keys.iter().map(|k| crate::format::hex(k)).collect();
                    brief.push_str(&format!(" and keys [{}]", hex.join(" ")));
                }
                let step = Step::SplitRegion {
                    start_key: r.region.start_key.clone(),
                    end_key: r.region.end_key.clone(),
                    policy,
                    keys,
                };
                ("admin-split-region", brief, kind::SPLIT, vec![step])
            }
            AdminOp::ScatterRegion { group } => return groups.scatter(r, v, &group),
        };
        Ok(admin(Plan {
            desc: desc.into(),
            brief,
            kind,
            steps,
        }))
    }
}

/// A merge holds its target too: a passive operator keeps every other one
/// off it until the merge ends. For a `plan` that merges, the target's id
/// and that operator's plan.
fn merge_target_hold(plan: &Plan) -> Option<(u64, Plan)> {
    plan.steps.iter().find_map(|s| match s {
        Step::MergeRegion {
            source_id, target, ..
        } => Some((
            target.id,
            Plan {
                steps: vec![Step::MergeRegion {
                    source_id: *source_id,
                    target: target.clone(),
                    passive: true,
                }],
                ..plan.clone()
            },
        )),
        _ => None,
    })
}

/// A plan asked for by hand: not a repair, so no replica limit applies.
fn admin(mut p: Plan) -> Plan {
    p.kind &= !kind::REPLICA;
    p.kind |= kind::ADMIN;
    p
}

impl Cluster {
    /// Drives `r`'s operator (or makes one) and returns the command for
    /// the leader, if there is one to send now.
    pub(crate) fn schedule(
        &self,
        r: &RegionInfo,
    ) -> PdResult<Option<pdpb::RegionHeartbeatResponse>> {
        let now = self.clock.now_nanos();
        let v2 = supports_conf_change_v2(self.stores.read().values());
        let mut ops = self.operators.lock();
        ops.end_timed_out(now);
        let id = r.region.id;
        if let Some(op) = ops.running.get_mut(&id) {
            let progress = op.progress(r, now, v2);
            // A store taken out of service (or forgotten) since the
            // operator was planned, or down (as upstream validates a
            // step's target store), gets no replica from it: the operator
            // is dropped, and the checkers plan again from what the region
            // has.
            let unfit = |s: u64| {
                let liveness = self.liveness();
                let stores = self.stores.read();
                stores.get(&s).is_none_or(|s| {
                    matches!(
                        s.state(&liveness),
                        StoreState::Offline | StoreState::Tombstone | StoreState::Down
                    )
                })
            };
            let progress = match (progress, op.next_placement()) {
                (Progress::Running(_), Some(s)) if unfit(s) => {
                    Progress::Dropped(OpStatus::Cancel, "its target store is down or left service")
                }
                (p, _) => p,
            };
            match progress {
                Progress::Running(cmd) => return Ok(cmd.map(|c| self.response(r, *c))),
                Progress::Finished => {
                    info!(region_id = id, operator = %op, "operator finished");
                    ops.end(id, OpStatus::Success, now);
                }
                Progress::Dropped(status, why) => {
                    warn!(region_id = id, operator = %op, why, "operator dropped");
                    ops.end(id, status, now);
                }
            }
        }
        if self.scheduling_halted() {
            return Ok(None);
        }
        let view = View::new(self, &ops, now);
        let Some(plan) = plan(r, &view)? else {
            return Ok(None);
        };
        let timeout = view.opts.operator_timeout;
        let costs = view.limit_costs(&plan, r);
        if !ops.limits.allows(&costs, now) {
            // Not made: the region's next heartbeat plans again.
            debug!(region_id = id, plan = %plan.desc, "operator over a store limit");
            return Ok(None);
        }
        let hold = merge_target_hold(&plan);
        let mut op = Operator::new(plan, r, now, timeout);
        info!(region_id = id, operator = %op, "operator created");
        let cmd = match op.progress(r, now, v2) {
            Progress::Running(cmd) => cmd,
            Progress::Finished | Progress::Dropped(..) => return Ok(None),
        };
        if let Some((target_id, hold)) = hold {
            let Some(target) = self.region_by_id(target_id) else {
                return Ok(None);
            };
            ops.running
                .insert(target_id, Operator::new(hold, &target, now, timeout));
        }
        ops.limits.take(&costs, now);
        ops.running.insert(id, op);
        Ok(cmd.map(|c| self.response(r, *c)))
    }

    /// Ends the operators of regions dropped from the tree: a merge's
    /// source swallowed by its target is the merge done; any other
    /// operator of a region that is gone can never finish.
    pub(crate) fn regions_gone(&self, ids: &[u64]) {
        if ids.is_empty() {
            return;
        }
        let now = self.clock.now_nanos();
        let mut ops = self.operators.lock();
        for id in ids {
            let Some(op) = ops.running.get(id) else {
                continue;
            };
            if op.merge_partner().is_some() {
                info!(region_id = id, operator = %op, "merged: operator finished");
                ops.end(*id, OpStatus::Success, now);
            } else if op.splits() {
                // A region a split made reached PD before the region's own
                // report: its range changed, which is the split done.
                info!(region_id = id, operator = %op, "split: operator finished");
                ops.end(*id, OpStatus::Success, now);
            } else {
                warn!(region_id = id, operator = %op, "region is gone: operator dropped");
                ops.end(*id, OpStatus::Cancel, now);
            }
        }
    }

    /// The schedulers that run (paused or not), by upstream's names.
    pub fn schedulers(&self) -> Vec<&'static str> {
        self.schedulers.read().iter().map(|s| s.name).collect()
    }

    /// The schedulers that run and are not paused at `now` (Unix nanos).
    fn active_schedulers(&self, now: i64) -> Vec<&'static str> {
        let now = now.div_euclid(NANOS_PER_SEC);
        (self.schedulers.read().iter())
            .filter(|s| s.resume_at <= now)
            .map(|s| s.name)
            .collect()
    }

    /// Pauses a running scheduler (or with `all`, every one) for `delay`
    /// seconds, or resumes it with a delay of 0 or less, as `pd-ctl
    /// scheduler pause` / `resume` do. Pauses live in memory, as
    /// upstream's.
    pub fn pause_scheduler(&self, name: &str, delay: i64) -> Result<(), SchedulerError> {
        let now = self.clock.now_nanos().div_euclid(NANOS_PER_SEC);
        let (at, until) = if delay > 0 {
            (now, now.saturating_add(delay))
        } else {
            (0, 0)
        };
        let mut running = self.schedulers.write();
        let mut found = false;
        for s in running
            .iter_mut()
            .filter(|s| name == "all" || s.name == name)
        {
            (s.paused_at, s.resume_at) = (at, until);
            found = true;
        }
        if !found && name != "all" {
            return Err(SchedulerError::NotFound);
        }
        info!(scheduler = name, delay, "scheduler paused or resumed");
        Ok(())
    }

    /// Pauses a checker for `delay` seconds, or resumes it with a delay of
    /// 0, as `pd-ctl checker pause` / `resume` do (in memory, as
    /// upstream's). Names are upstream's ([`CHECKERS`]); `rule`, `split`
    /// and `joint-state` have nothing to pause here (no placement rules;
    /// stores leave joint states by themselves).
    pub fn pause_checker(&self, name: &str, delay: u64) -> Result<(), String> {
        let name = (CHECKERS.iter())
            .find(|c| **c == name)
            .ok_or_else(checker_not_found)?;
        let now = self.clock.now_nanos().div_euclid(NANOS_PER_SEC);
        let mut paused = self.paused_checkers.write();
        if delay == 0 {
            paused.remove(name);
        } else {
            let delay = i64::try_from(delay).unwrap_or(i64::MAX);
            paused.insert(name, now.saturating_add(delay));
        }
        info!(checker = name, delay, "checker paused or resumed");
        Ok(())
    }

    /// Whether a checker is paused now; an error for an unknown name.
    pub fn is_checker_paused(&self, name: &str) -> Result<bool, String> {
        if !CHECKERS.contains(&name) {
            return Err(checker_not_found());
        }
        let now = self.clock.now_nanos();
        Ok(self.checker_paused_at(name, now))
    }

    fn checker_paused_at(&self, name: &str, now: i64) -> bool {
        let now = now.div_euclid(NANOS_PER_SEC);
        (self.paused_checkers.read().get(name)).is_some_and(|resume_at| *resume_at > now)
    }

    /// The schedulers paused now, with when they were paused and when they
    /// resume (Unix seconds).
    pub fn paused_schedulers(&self) -> Vec<RunningScheduler> {
        let now = self.clock.now_nanos().div_euclid(NANOS_PER_SEC);
        (self.schedulers.read().iter())
            .filter(|s| s.resume_at > now)
            .copied()
            .collect()
    }

    /// Starts a scheduler by name, as `POST /schedulers` does.
    pub fn add_scheduler(&self, name: &str) -> Result<(), SchedulerError> {
        let known = SCHEDULERS
            .iter()
            .find(|s| **s == name)
            .ok_or(SchedulerError::NotFound)?;
        self.change_schedulers(|running, _| {
            if running.iter().any(|s| s.name == *known) {
                return Err(SchedulerError::Existed);
            }
            running.push(RunningScheduler::new(known));
            Ok(())
        })?;
        info!(scheduler = name, "scheduler added");
        Ok(())
    }

    /// Changes the running schedulers and the stores held as `change`
    /// does to copies of them, keeps the result in the meta store, then
    /// lets it take effect; nothing changes if `change` or the write fails.
    /// A store-holding scheduler runs exactly while it holds a store: one
    /// left without, or stores held by one stopped, are dropped here.
    fn change_schedulers<E: From<MetaError>>(
        &self,
        change: impl FnOnce(&mut Vec<RunningScheduler>, &mut Holds) -> Result<(), E>,
    ) -> Result<(), E> {
        let mut running = self.schedulers.write();
        let mut holds = self.holds.write();
        let (mut next, mut next_holds) = (running.clone(), holds.clone());
        change(&mut next, &mut next_holds)?;
        next_holds
            .retain(|h, stores| !stores.is_empty() && next.iter().any(|s| s.name == h.name()));
        next.retain(|s| LeaderHold::by_name(s.name).is_none_or(|h| next_holds.contains_key(&h)));
        self.keep_schedulers(&next, &next_holds)?;
        (*running, *holds) = (next, next_holds);
        Ok(())
    }

    /// Keeps the running schedulers and the stores held in the meta store
    /// (see [`KeptSchedulers`]), before they take effect.
    fn keep_schedulers(
        &self,
        running: &[RunningScheduler],
        holds: &Holds,
    ) -> Result<(), MetaError> {
        let kept = KeptSchedulers {
            running: running.iter().map(|s| s.name.to_string()).collect(),
            held: (holds.iter())
                .map(|(h, stores)| (h.name().to_string(), stores.clone()))
                .collect(),
        };
        let text = serde_json::to_vec(&kept).map_err(|e| MetaError::Corrupted {
            key: "schedulers".into(),
            detail: e.to_string(),
        })?;
        let mut b = Batch::default();
        b.put(storage::SCHEDULERS, &text);
        self.meta.write(b)
    }

    /// Stops a scheduler by name, as `DELETE /schedulers/{name}` does;
    /// `evict-leader-scheduler-{id}` (or `grant-leader-scheduler-{id}`)
    /// lets go of that store only (the scheduler stops with its last).
    pub fn remove_scheduler(&self, name: &str) -> Result<(), SchedulerError> {
        let one_store = LeaderHold::ALL.into_iter().find_map(|h| {
            let id = name.strip_prefix(h.name())?.strip_prefix('-')?;
            Some((h, id))
        });
        self.change_schedulers(|running, holds| {
            if let Some((hold, id)) = one_store {
                let id: u64 = id.parse().map_err(|_| SchedulerError::NotFound)?;
                if !holds
                    .get_mut(&hold)
                    .is_some_and(|stores| stores.remove(&id))
                {
                    return Err(SchedulerError::NotFound);
                }
            } else {
                let before = running.len();
                running.retain(|s| s.name != name);
                if running.len() == before {
                    return Err(SchedulerError::NotFound);
                }
            }
            Ok(())
        })?;
        info!(scheduler = name, "scheduler removed");
        Ok(())
    }

    /// Adds a store to a store-holding scheduler (starting it if it does
    /// not run), as `pd-ctl scheduler add evict-leader-scheduler <id>` (or
    /// `grant-leader-scheduler`): see [`LeaderHold`]; held until the store
    /// is let go with its `-{id}` name.
    pub fn hold_store(&self, hold: LeaderHold, store_id: u64) -> Result<(), StoreError> {
        match self.stores.read().get(&store_id) {
            None => return Err(StoreError::NotFound(store_id)),
            Some(s) if s.is_tombstone() => return Err(StoreError::Removed(store_id)),
            Some(_) => {}
        }
        self.change_schedulers(|running, holds| {
            // Evicted and granted at once would mean nothing: refused.
            let other =
                (holds.iter()).find(|(h, stores)| **h != hold && stores.contains(&store_id));
            if let Some((other, _)) = other {
                return Err(StoreError::HeldByOther(store_id, other.name()));
            }
            holds.entry(hold).or_default().insert(store_id);
            if !running.iter().any(|s| s.name == hold.name()) {
                running.push(RunningScheduler::new(hold.name()));
            }
            Ok(())
        })?;
        info!(store_id, scheduler = hold.name(), "store held");
        Ok(())
    }

    /// The stores a store-holding scheduler holds.
    pub fn held_stores(&self, hold: LeaderHold) -> Vec<u64> {
        (self.holds.read().get(&hold)).map_or_else(Vec::new, |s| s.iter().copied().collect())
    }

    /// A command, addressed as upstream addresses it: the region, its
    /// epoch, and the peer meant to carry it out (the leader).
    fn response(
        &self,
        r: &RegionInfo,
        cmd: pdpb::RegionHeartbeatResponse,
    ) -> pdpb::RegionHeartbeatResponse {
        pdpb::RegionHeartbeatResponse {
            header: Some(pdpb::ResponseHeader {
                cluster_id: self.cluster_id,
                error: None,
            }),
            region_id: r.region.id,
            region_epoch: Some(r.epoch()),
            target_peer: r.leader.clone(),
            ..cmd
        }
    }

    /// Every store's state, by id.
    pub fn store_states(&self) -> HashMap<u64, StoreState> {
        let l = self.liveness();
        let stores = self.stores.read();
        stores.iter().map(|(id, s)| (*id, s.state(&l))).collect()
    }

    /// Peers, leaders and data each store holds, by store id.
    pub fn store_loads(&self) -> HashMap<u64, StoreLoad> {
        self.regions.read().store_loads()
    }

    /// Running operators, by region id.
    pub fn operators(&self) -> Vec<Operator> {
        let ops = self.operators.lock();
        let mut list: Vec<Operator> = ops.running.values().cloned().collect();
        list.sort_by_key(|op| op.region_id);
        list
    }

    /// The region's running operator, or else the last one that ended
    /// (for ten minutes), with its status.
    pub fn operator(&self, region_id: u64) -> Option<(Operator, OpStatus)> {
        let now = self.clock.now_nanos();
        let mut ops = self.operators.lock();
        if let Some(op) = ops.running.get(&region_id) {
            let status = if op.is_timed_out(now) {
                OpStatus::Timeout
            } else {
                OpStatus::Running
            };
            return Some((op.clone(), status));
        }
        ops.ended
            .retain(|_, (_, _, at)| elapsed(*at, now) <= ENDED_KEPT);
        ops.ended
            .get(&region_id)
            .map(|(op, status, _)| (op.clone(), *status))
    }

    /// An operator asked for by hand, as `pd-ctl operator add ...` asks
    /// (see [`AdminOp`]). It goes to the region's leader with its next
    /// heartbeat. Refused while another operator runs on the region.
    pub fn add_admin_operator(&self, region_id: u64, op: AdminOp) -> Result<(), String> {
        let r = self
            .region_by_id(region_id)
            .ok_or_else(|| format!("region {region_id} not found"))?;
        let now = self.clock.now_nanos();
        let mut ops = self.operators.lock();
        if let Some(running) = ops.running.get(&region_id) {
            // Clients ask again while the scatter they asked for runs.
            if matches!(op, AdminOp::ScatterRegion { .. })
                && running.plan.desc == scatter::DESC
                && !running.is_timed_out(now)
            {
                return Ok(());
            }
            return Err(format!("region {region_id} already has an operator"));
        }
        let view = View::new(self, &ops, now);
        let plan = op.plan(&r, &view, &mut ops.scattered)?;
        if plan.steps.is_empty() {
            return Ok(());
        }
        let timeout = view.opts.operator_timeout;
        if let Some((target_id, hold)) = merge_target_hold(&plan) {
            if ops.running.contains_key(&target_id) {
                return Err(format!("region {target_id} already has an operator"));
            }
            let target = self
                .region_by_id(target_id)
                .ok_or_else(|| format!("region {target_id} not found"))?;
            ops.running
                .insert(target_id, Operator::new(hold, &target, now, timeout));
        }
        // Asked for by hand: never held back by a store limit, but the
        // buckets that hold its costs give them, so the checkers wait
        // behind it. A scatter's learners are light: they take nothing.
        if plan.desc != scatter::DESC {
            let costs = view.limit_costs(&plan, &r);
            ops.limits.take(&costs, now);
        }
        let op = Operator::new(plan, &r, now, timeout);
        info!(region_id, operator = %op, "operator created by request");
        ops.running.insert(region_id, op);
        Ok(())
    }

    /// Takes a store out of service, as `pd-ctl store delete` does: it
    /// becomes Offline, the replica checker moves its replicas elsewhere,
    /// and once it holds none it becomes Tombstone. Refused if fewer Up
    /// stores than `max-replicas` would remain, unless `destroyed` (its
    /// machine is gone for good, upstream's `force`): then it is marked
    /// physically destroyed, may not come back, and frees its address.
    pub fn remove_store(&self, id: u64, destroyed: bool) -> Result<(), StoreError> {
        let mut stores = self.stores.write();
        let Some(store) = stores.get(&id) else {
            return Err(StoreError::NotFound(id));
        };
        if store.is_offline() && store.meta.physically_destroyed == destroyed {
            return Ok(());
        }
        if store.is_tombstone() {
            return Err(StoreError::Removed(id));
        }
        if store.meta.physically_destroyed {
            return Err(StoreError::Destroyed(id));
        }
        if !store.is_offline() && !destroyed {
            let up = stores
                .values()
                .filter(|s| s.meta.id != id && s.meta.state == metapb::StoreState::Up as i32)
                .count();
            let need = self.opts().max_replicas;
            if up < need as usize {
                return Err(StoreError::NotEnough { id, up, need });
            }
        }
        let mut meta = store.meta.clone();
        meta.physically_destroyed = destroyed;
        set_state(&mut meta, metapb::StoreState::Offline);
        self.put_store_meta(&meta)?;
        info!(store_id = id, "store is offline; its replicas will move");
        if let Some(s) = stores.get_mut(&id) {
            s.meta = meta;
        }
        Ok(())
    }

    /// Puts an Offline store back in service, as `pd-ctl store
    /// cancel-delete` does: it takes replicas again, and the replicas it
    /// still holds stay. A store that is Up stays so; a Tombstone cannot
    /// come back.
    pub fn up_store(&self, id: u64) -> Result<(), StoreError> {
        let mut stores = self.stores.write();
        let Some(store) = stores.get_mut(&id) else {
            return Err(StoreError::NotFound(id));
        };
        if store.is_tombstone() {
            return Err(StoreError::Removed(id));
        }
        if store.meta.physically_destroyed {
            return Err(StoreError::Destroyed(id));
        }
        if !store.is_offline() {
            return Ok(());
        }
        let mut meta = store.meta.clone();
        set_state(&mut meta, metapb::StoreState::Up);
        self.put_store_meta(&meta)?;
        info!(
            store_id = id,
            "store is up again; its deletion is cancelled"
        );
        store.meta = meta;
        Ok(())
    }

    /// Forgets the Tombstone stores no region names any more, as `pd-ctl
    /// store remove-tombstone` does, and returns the ids of those kept
    /// because a region still has a peer there or a running operator
    /// names them (a learner on its way there would land on a store PD
    /// no longer knows, and its region would never be repaired again).
    pub fn remove_tombstones(&self) -> Result<Vec<u64>, MetaError> {
        let ops = self.operators.lock();
        let loads = self.store_loads();
        let mut stores = self.stores.write();
        let named = |id: &u64| {
            (ops.running.values()).any(|op| op.plan.steps.iter().any(|s| s.names_store(*id)))
        };
        let (kept, gone): (Vec<u64>, Vec<u64>) = (stores.values())
            .filter(|s| s.is_tombstone())
            .map(|s| s.meta.id)
            .partition(|id| loads.get(id).is_some_and(|l| l.region_count > 0) || named(id));
        let mut b = Batch::default();
        for id in &gone {
            b.delete(&id_key(storage::STORE_PREFIX, *id));
            b.delete(&id_key(storage::STORE_WEIGHT_PREFIX, *id));
        }
        self.meta.write(b)?;
        for id in gone {
            stores.remove(&id);
            info!(store_id = id, "tombstone store removed");
        }
        Ok(kept)
    }

    /// Sets a store's leader and region weights, as `pd-ctl store weight`
    /// does. Kept across PD restarts.
    pub fn set_store_weights(&self, id: u64, weights: Weights) -> Result<(), StoreError> {
        if !weights.are_valid() {
            return Err(StoreError::BadWeights(weights));
        }
        let mut stores = self.stores.write();
        let Some(store) = stores.get_mut(&id) else {
            return Err(StoreError::NotFound(id));
        };
        let mut b = Batch::default();
        b.put(&id_key(storage::STORE_WEIGHT_PREFIX, id), &weights.encode());
        self.meta.write(b)?;
        info!(
            store_id = id,
            leader = weights.leader,
            region = weights.region,
            "store weights set"
        );
        store.weights = weights;
        Ok(())
    }

    /// Every store's limit rates (Tombstone stores left out), as
    /// `GET /stores/limit` shows them; see [`crate::store_limit`].
    pub fn store_limits(&self) -> BTreeMap<u64, Rates> {
        let ids: Vec<u64> = (self.stores.read().values())
            .filter(|s| !s.is_tombstone())
            .map(|s| s.meta.id)
            .collect();
        let ops = self.operators.lock();
        (ids.into_iter())
            .map(|id| (id, ops.limits.settings.rates(id)))
            .collect()
    }

    /// Sets `rate` (per minute) for `types` of every store, and of stores
    /// yet to come, as `pd-ctl store limit all` does.
    pub fn set_all_store_limits(&self, types: &[LimitType], rate: f64) -> Result<(), StoreError> {
        self.change_limits(rate, |s| s.set_all(types, rate))
    }

    /// Sets `rate` (per minute) for `types` of one store, as
    /// `pd-ctl store limit <id>` does.
    pub fn set_store_limit(
        &self,
        id: u64,
        types: &[LimitType],
        rate: f64,
    ) -> Result<(), StoreError> {
        if !self.stores.read().contains_key(&id) {
            return Err(StoreError::NotFound(id));
        }
        self.change_limits(rate, |s| s.set_store(id, types, rate))
    }

    fn change_limits(
        &self,
        rate: f64,
        change: impl FnOnce(&mut store_limit::Settings),
    ) -> Result<(), StoreError> {
        if !store_limit::is_valid_rate(rate) {
            return Err(StoreError::BadRate);
        }
        let mut ops = self.operators.lock();
        let mut settings = ops.limits.settings.clone();
        change(&mut settings);
        let mut b = Batch::default();
        b.put(storage::STORE_LIMITS, &settings.encode());
        self.meta.write(b)?;
        info!(?settings, "store limits set");
        ops.limits.reset(settings);
        Ok(())
    }

    /// Sets labels on a store, as `pd-ctl store label` does: merged into
    /// its own as a store's report is (see
    /// [`crate::placement::merge_labels`]; an empty value deletes one), or
    /// with `force` in place of them all.
    pub fn set_store_labels(
        &self,
        id: u64,
        labels: Vec<metapb::StoreLabel>,
        force: bool,
    ) -> Result<(), StoreError> {
        if let Some(l) = crate::placement::bad_label(&labels) {
            return Err(StoreError::BadLabel(l.key.clone(), l.value.clone()));
        }
        self.change_labels(id, |old| {
            let base = if force { &[][..] } else { old };
            Ok(crate::placement::merge_labels(base, &labels))
        })
    }

    /// Deletes one label of a store (`pd-ctl store label <id> <key>
    /// --delete`).
    pub fn delete_store_label(&self, id: u64, key: &str) -> Result<(), StoreError> {
        self.change_labels(id, |old| {
            if !old.iter().any(|l| l.key.eq_ignore_ascii_case(key)) {
                return Err(StoreError::NoLabel(key.to_string()));
            }
            Ok((old.iter())
                .filter(|l| !l.key.eq_ignore_ascii_case(key))
                .cloned()
                .collect())
        })
    }

    /// Replaces a store's labels with `change` of them, kept in PD's meta
    /// store.
    fn change_labels(
        &self,
        id: u64,
        change: impl FnOnce(&[metapb::StoreLabel]) -> Result<Vec<metapb::StoreLabel>, StoreError>,
    ) -> Result<(), StoreError> {
        let mut stores = self.stores.write();
        let Some(store) = stores.get_mut(&id) else {
            return Err(StoreError::NotFound(id));
        };
        let mut meta = store.meta.clone();
        meta.labels = change(&meta.labels)?;
        self.put_store_meta(&meta)?;
        info!(store_id = id, labels = ?meta.labels, "store labels set");
        store.meta = meta;
        Ok(())
    }

    /// Cancels a region's running operator, as `pd-ctl operator remove`
    /// does (the other half of a merge with it). What its leader was
    /// already told to do still happens; PD stops driving the rest.
    /// False if none runs.
    pub fn cancel_operator(&self, region_id: u64) -> bool {
        let now = self.clock.now_nanos();
        let mut ops = self.operators.lock();
        if !ops.running.contains_key(&region_id) {
            return false;
        }
        info!(region_id, "operator cancelled by request");
        ops.end(region_id, OpStatus::Cancel, now);
        true
    }

    /// Makes every Offline store that holds no region peer a Tombstone.
    pub(crate) fn bury_empty_stores(&self) -> Result<(), MetaError> {
        let loads = self.store_loads();
        let mut buried = vec![];
        for s in self.stores.write().values_mut() {
            let empty = loads.get(&s.meta.id).is_none_or(|l| l.region_count == 0);
            if s.is_offline() && empty {
                let mut meta = s.meta.clone();
                set_state(&mut meta, metapb::StoreState::Tombstone);
                self.put_store_meta(&meta)?;
                info!(store_id = meta.id, "store is tombstone");
                s.meta = meta;
                buried.push(s.meta.id);
            }
        }
        self.let_go(&buried)
    }

    /// Lets the store-holding schedulers go of `ids` (stores gone for
    /// good); one left holding nothing stops.
    fn let_go(&self, ids: &[u64]) -> Result<(), MetaError> {
        let held = |stores: &BTreeSet<u64>| ids.iter().any(|id| stores.contains(id));
        if !self.holds.read().values().any(held) {
            return Ok(());
        }
        self.change_schedulers(|_, holds| {
            for stores in holds.values_mut() {
                stores.retain(|s| !ids.contains(s));
            }
            Ok::<_, MetaError>(())
        })?;
        info!(?ids, "stores gone: no longer held");
        Ok(())
    }

    fn put_store_meta(&self, meta: &metapb::Store) -> Result<(), MetaError> {
        let mut b = Batch::default();
        b.put_msg(&id_key(storage::STORE_PREFIX, meta.id), meta);
        self.meta.write(b)
    }
}

impl Operators {
    /// Ends a region's operator, and the other half of a merge with it
    /// (done with it, or cancelled if this half did not succeed).
    /// Ends every operator past its timeout, its region heard from or
    /// not (as upstream's operator controller checks them on a timer):
    /// one whose region went silent (lost its quorum, or its leader cut
    /// off from PD) would otherwise hold its place against the schedule
    /// limits for good.
    fn end_timed_out(&mut self, now: i64) {
        let mut late: Vec<u64> = (self.running.iter())
            .filter(|(_, op)| op.is_timed_out(now))
            .map(|(id, _)| *id)
            .collect();
        late.sort_unstable();
        for id in late {
            if let Some(op) = self.running.get(&id) {
                warn!(region_id = id, operator = %op, "operator timed out");
            }
            self.end(id, OpStatus::Timeout, now);
        }
    }

    fn end(&mut self, region_id: u64, status: OpStatus, now: i64) {
        let Some(op) = self.running.remove(&region_id) else {
            return;
        };
        let partner = op.merge_partner();
        self.ended.insert(region_id, (op, status, now));
        if let Some(partner) = partner {
            let linked = self
                .running
                .get(&partner)
                .is_some_and(|p| p.merge_partner() == Some(region_id));
            if linked {
                let status = match status {
                    OpStatus::Success => OpStatus::Success,
                    _ => OpStatus::Cancel,
                };
                self.end(partner, status, now);
            }
        }
    }
}

/// What `r` should have done next, if anything: the first plan of the
/// checkers and running schedulers (see the table at the top).
fn plan(r: &RegionInfo, v: &View) -> PdResult<Option<Plan>> {
    if let Some(plan) = checker::check(r, v)? {
        let limited = plan.kind & kind::REPLICA != 0
            && v.running(kind::REPLICA) >= v.opts.replica_schedule_limit;
        // Over the limit, the rest is asked, as upstream's merge checker
        // is.
        if !limited {
            return Ok(Some(plan));
        }
    }
    // Leaders leave an evicted store even from regions not healthy (a
    // store being restarted must not wait on another's repair).
    if v.runs(EVICT_LEADER) {
        if let Some(plan) = balance::evict_leader(r, v) {
            return Ok(Some(plan));
        }
    }
    if !r.is_healthy(v.max_replicas()) {
        return Ok(None);
    }
    if !v.checker_paused("merge") {
        if let Some(plan) = merge::check(r, v)? {
            return Ok(Some(plan));
        }
    }
    if v.runs(GRANT_LEADER) {
        if let Some(plan) = balance::grant_leader(r, v) {
            return Ok(Some(plan));
        }
    }
    if v.runs("balance-hot-region-scheduler") {
        if let Some(plan) = hot::check(r, v) {
            return Ok(Some(plan));
        }
    }
    if hot::is_hot(r) {
        // Balancing by counts leaves hot regions to the hot scheduler, so
        // the two never pull one leader back and forth.
        return Ok(None);
    }
    if v.runs("balance-leader-scheduler") {
        if let Some(plan) = balance::leader(r, v) {
            return Ok(Some(plan));
        }
    }
    if v.runs("balance-region-scheduler") {
        return balance::region(r, v);
    }
    Ok(None)
}

/// The cluster as checkers and schedulers see it during one heartbeat:
/// store states, each store's counts as they will be once the running
/// operators are done, and how many operators of each kind run. Per-store
/// counts are taken only if a rule needs them.
pub(crate) struct View<'a> {
    pub cluster: &'a Cluster,
    pub opts: ScheduleOptions,
    pub now: i64,
    states: HashMap<u64, StoreState>,
    /// Every store as last reported, for its room.
    space: HashMap<u64, crate::stores::StoreInfo>,
    loads: OnceCell<HashMap<u64, StoreLoad>>,
    /// Per store: what the running operators will add.
    influence: HashMap<u64, crate::operator::Influence>,
    /// (region id, kind) of every running operator.
    running: Vec<(u64, u32)>,
    schedulers: Vec<&'static str>,
    /// Store limit buckets that cannot pay for a large region's step now.
    exhausted: HashSet<(u64, LimitType)>,
    /// Stores the store-holding schedulers hold (paused or not).
    holds: Holds,
}

impl<'a> View<'a> {
    fn new(cluster: &'a Cluster, ops: &Operators, now: i64) -> View<'a> {
        let mut influence: HashMap<u64, crate::operator::Influence> = HashMap::new();
        {
            let regions = cluster.regions.read();
            for op in ops.running.values() {
                let Some(r) = regions.by_id.get(&op.region_id) else {
                    continue;
                };
                for i in op.influence(r) {
                    let e = influence.entry(i.store_id).or_default();
                    e.regions = e.regions.saturating_add(i.regions);
                    e.score = e.score.saturating_add(i.score);
                    e.leaders = e.leaders.saturating_add(i.leaders);
                    e.leader_score = e.leader_score.saturating_add(i.leader_score);
                    e.write_rate = e.write_rate.saturating_add(i.write_rate);
                }
            }
        }
        let states = cluster.store_states();
        let exhausted = (states.keys())
            .flat_map(|s| LimitType::ALL.map(|t| (*s, t)))
            .filter(|(s, t)| !ops.limits.could_pay_large(*s, *t, now))
            .collect();
        View {
            cluster,
            opts: cluster.opts(),
            now,
            states,
            space: (cluster.stores().into_iter())
                .map(|s| (s.meta.id, s))
                .collect(),
            loads: OnceCell::new(),
            influence,
            running: ops
                .running
                .values()
                .map(|op| (op.region_id, op.plan.kind))
                .collect(),
            schedulers: cluster.active_schedulers(now),
            exhausted,
            holds: cluster.holds.read().clone(),
        }
    }

    pub fn load(&self, store_id: u64) -> StoreLoad {
        let loads = self.loads.get_or_init(|| self.cluster.store_loads());
        loads.get(&store_id).copied().unwrap_or_default()
    }

    /// Regions on the store once the running operators are done.
    pub fn regions_after(&self, store_id: u64) -> i64 {
        let extra = self.influence.get(&store_id).map_or(0, |i| i.regions);
        (self.load(store_id).region_count as i64).saturating_add(extra)
    }

    /// The store's region score (MiB) once the running operators are done.
    pub fn score_after(&self, store_id: u64) -> i64 {
        let extra = self.influence.get(&store_id).map_or(0, |i| i.score);
        i64::try_from(self.load(store_id).region_score)
            .unwrap_or(i64::MAX)
            .saturating_add(extra)
    }

    fn weights(&self, store_id: u64) -> Weights {
        self.space
            .get(&store_id)
            .map_or_else(Weights::default, |s| s.weights)
    }

    /// The store's leader score once the running operators are done and
    /// it leads `r` too (`gains`) or no longer (`!gains`): by
    /// `leader-schedule-policy`, its leaders or the sizes of the regions it
    /// leads (MiB, see [`RegionInfo::score_mib`]), over its leader weight.
    pub fn leader_score(&self, store_id: u64, r: &RegionInfo, gains: bool) -> f64 {
        let policy = self.opts.leader_schedule_policy;
        let (extra, unit) = match policy {
            LeaderPolicy::Count => (self.influence.get(&store_id).map_or(0, |i| i.leaders), 1),
            LeaderPolicy::Size => (
                self.influence.get(&store_id).map_or(0, |i| i.leader_score),
                i64::try_from(r.score_mib()).unwrap_or(i64::MAX),
            ),
        };
        let score = i64::try_from(self.load(store_id).leader_score(policy)).unwrap_or(i64::MAX);
        let now = score.saturating_add(extra);
        let delta = if gains { unit } else { unit.saturating_neg() };
        weighted(
            now.saturating_add(delta) as f64,
            self.weights(store_id).leader,
        )
    }

    /// The store's region score (MiB) once the running operators are done
    /// and `delta` MiB more moved there, over its region weight.
    pub fn region_score(&self, store_id: u64, delta: i64) -> f64 {
        let score = self.score_after(store_id).saturating_add(delta);
        weighted(score as f64, self.weights(store_id).region)
    }

    /// The store's write flow (bytes per second, over the regions it
    /// leads) once the running leader transfers are done.
    pub fn write_rate_after(&self, store_id: u64) -> f64 {
        let extra = self.influence.get(&store_id).map_or(0, |i| i.write_rate);
        self.load(store_id).write_bytes_rate + extra as f64
    }

    /// How many running operators have a kind bit.
    pub fn running(&self, kind: u32) -> u64 {
        self.running.iter().filter(|(_, k)| k & kind != 0).count() as u64
    }

    /// Whether the store's `t` bucket could pay a large region's step now
    /// (balance-region leaves stores that could not out, as upstream's
    /// store filters do).
    pub fn within_limit(&self, store_id: u64, t: LimitType) -> bool {
        !self.exhausted.contains(&(store_id, t))
    }

    /// What `plan` costs the stores' limits (see [`store_limit`]).
    fn limit_costs(&self, plan: &Plan, r: &RegionInfo) -> Vec<(u64, LimitType, f64)> {
        let is_down = |s| self.states.get(&s) == Some(&StoreState::Down);
        store_limit::plan_costs(plan, r.approximate_size_mib(), is_down)
    }

    pub fn has_operator(&self, region_id: u64) -> bool {
        self.running.iter().any(|(id, _)| *id == region_id)
    }

    pub fn runs(&self, scheduler: &str) -> bool {
        self.schedulers.contains(&scheduler)
    }

    pub fn is_up(&self, store_id: u64) -> bool {
        self.store_state(store_id) == Some(StoreState::Up)
    }

    /// Whether `evict-leader-scheduler` holds the store.
    pub fn is_evicted(&self, store_id: u64) -> bool {
        self.is_held(LeaderHold::Evict, store_id)
    }

    /// Whether `grant-leader-scheduler` holds the store.
    pub fn is_granted(&self, store_id: u64) -> bool {
        self.is_held(LeaderHold::Grant, store_id)
    }

    fn is_held(&self, hold: LeaderHold, store_id: u64) -> bool {
        (self.holds.get(&hold)).is_some_and(|s| s.contains(&store_id))
    }

    /// Whether the store is not low on space at `ratio`.
    fn room_at(&self, store_id: u64, ratio: f64) -> bool {
        let regions = self.load(store_id).region_count;
        !(self.space.get(&store_id)).is_some_and(|s| s.is_low_space(ratio, regions))
    }

    /// Whether the store is sending or receiving more snapshots than
    /// `max-snapshot-count`, as its last heartbeat said (upstream's
    /// store filter: such a store neither takes nor gives up replicas).
    pub fn too_many_snapshots(&self, store_id: u64) -> bool {
        let max = self.opts.max_snapshot_count;
        self.space.get(&store_id).is_some_and(|s| {
            u64::from(s.stats.sending_snap_count) > max
                || u64::from(s.stats.receiving_snap_count) > max
        })
    }

    /// Whether more of the store's regions have a pending peer there than
    /// `max-pending-peer-count` (never, with 0).
    fn too_many_pending_peers(&self, store_id: u64) -> bool {
        let max = self.opts.max_pending_peer_count;
        max > 0 && self.load(store_id).pending_peer_count as u64 > max
    }

    /// Whether balance-region may move a replica onto the store: it has
    /// room below `high-space-ratio` (which is below `low-space-ratio`),
    /// so a store that shed replicas for lack of room does not take them
    /// back as soon as it is just above the line.
    pub fn has_room_to_balance(&self, store_id: u64) -> bool {
        self.room_at(store_id, self.opts.high_space_ratio)
    }

    /// The stores `others` and `one` as PD knows them (unknown ones left
    /// out), for the placement rules.
    fn metas(&self, others: &[u64], one: u64) -> (Vec<&metapb::Store>, Option<&metapb::Store>) {
        let meta = |id: &u64| self.space.get(id).map(|s| &s.meta);
        (others.iter().filter_map(meta).collect(), meta(&one))
    }

    /// Up stores, in id order.
    pub fn up_stores(&self) -> Vec<u64> {
        let mut ids: Vec<u64> = self.store_ids();
        ids.retain(|id| self.is_up(*id));
        ids
    }
}

impl ClusterView for View<'_> {
    fn max_replicas(&self) -> usize {
        self.opts.max_replicas as usize
    }

    fn store_state(&self, store_id: u64) -> Option<StoreState> {
        self.states.get(&store_id).copied()
    }

    fn store_ids(&self) -> Vec<u64> {
        let mut ids: Vec<u64> = self.states.keys().copied().collect();
        ids.sort_unstable();
        ids
    }

    fn region_load(&self, store_id: u64, delta: i64) -> f64 {
        let regions = self.regions_after(store_id).saturating_add(delta);
        weighted(regions as f64, self.weights(store_id).region)
    }

    fn leader_load(&self, store_id: u64, r: &RegionInfo) -> f64 {
        self.leader_score(store_id, r, true)
    }

    fn has_room(&self, store_id: u64) -> bool {
        self.room_at(store_id, self.opts.low_space_ratio)
    }

    fn checker_paused(&self, name: &str) -> bool {
        self.cluster.checker_paused_at(name, self.now)
    }

    fn takes_replica_later(&self, store_id: u64) -> bool {
        match self.store_state(store_id) {
            Some(StoreState::Up) => true,
            // Heard from since PD started: a store silent since before a
            // PD restart may have been dead for long (its last heartbeat
            // time is not kept), and is not waited for.
            Some(StoreState::Disconnected) => {
                (self.space.get(&store_id)).is_some_and(|s| s.last_heartbeat > 0)
            }
            _ => false,
        }
    }

    fn takes_leader(&self, store_id: u64) -> bool {
        self.is_up(store_id) && !self.is_evicted(store_id)
    }

    fn takes_replica_now(&self, store_id: u64) -> bool {
        !self.too_many_snapshots(store_id) && !self.too_many_pending_peers(store_id)
    }

    fn alloc_id(&self) -> PdResult<u64> {
        self.cluster.alloc_id()
    }

    fn distinct_score(&self, others: &[u64], other: u64) -> u64 {
        let labels = &self.opts.location_labels;
        if labels.is_empty() {
            return 0;
        }
        let (stores, other) = self.metas(others, other);
        other.map_or(0, |o| crate::placement::distinct_score(labels, &stores, o))
    }

    fn isolated(&self, others: &[u64], target: u64) -> bool {
        let labels = &self.opts.location_labels;
        let Some(level) = labels.iter().position(|l| *l == self.opts.isolation_level) else {
            return true;
        };
        let (stores, target) = self.metas(others, target);
        target.is_none_or(|t| crate::placement::isolated(labels, level, &stores, t))
    }

    fn repairs(&self) -> crate::config::Repairs {
        self.opts.repairs
    }
}
