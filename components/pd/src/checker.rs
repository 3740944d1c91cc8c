//! The replica checker: looks at one region, as its leader just reported
//! it, and says what membership change (if any) it needs. Rules, first
//! match wins, as upstream's learner and replica checkers order them:
//!
//! | region shows                                  | plan (steps)                                        |
//! |-----------------------------------------------|-----------------------------------------------------|
//! | a learner on a Down/Offline store             | `remove-extra-{down,offline}-replica`: remove it     |
//! | a learner that caught up (not pending), on a store neither Down nor Offline | `promote-learner`: promote it |
//! | a learner still catching up                   | nothing; wait                                       |
//! | a voter on a Down/Offline store               | more voters than `max-replicas`: remove it;         |
//! |                                               | else `replace-…-replica`: add learner on a target,  |
//! |                                               | promote it, remove the bad voter                    |
//! | fewer voters than `max-replicas`              | `make-up-replica`: add learner on a target, promote |
//! | more voters than `max-replicas`               | `remove-extra-replica`: remove the worst voter      |
//! | every voter Up, one could be farther from the | `move-to-better-location`: add learner there,       |
//! | others by location labels                     | promote it, remove the voter                        |
//!
//! Each rule but the learner's promotion can be switched off online
//! (`[schedule] enable-remove-down-replica`, `enable-replace-offline-replica`
//! for the Down and Offline rows, `enable-make-up-replica`,
//! `enable-remove-extra-replica`, `enable-location-replacement`; see
//! [`Repairs`]): off, the row plans nothing and the next rows are asked.
//!
//! A target is an Up store with room holding no peer of the region: the
//! one farthest from the replicas that stay, by location labels (highest
//! distinct score, see [`crate::placement`]), then with the fewest regions
//! once it has this one, over its region weight (ties: lowest id), among
//! those of the farthest that are not busy with snapshots or pending
//! peers (`max-snapshot-count`, `max-pending-peer-count`). The farthest
//! are found among the Up stores and those only Disconnected since they
//! last reported: if only such a one is farthest, the region waits for
//! it. Without a target the rule does not apply and the region keeps
//! working with what it has. The worst voter is on a store that does not take replicas, else
//! the nearest to the others, then not the leader, then on the store with
//! the most regions over its weight. A removal never removes the leader: a
//! step first moves leadership to a voter on an Up store no
//! `evict-leader-scheduler` holds (the one with the lowest leader score
//! once it leads this one, by `leader-schedule-policy`, over its leader
//! weight). Regions in joint consensus, or with a
//! peer on a store PD does not know, are left alone.

use std::cmp::Reverse;

use tikal_proto::metapb;

use crate::cluster::PdResult;
use crate::config::Repairs;
use crate::operator::{kind, Plan, Step};
use crate::regions::{is_learner, RegionInfo};
use crate::stores::StoreState;

/// What the checker needs to know about the rest of the cluster.
pub trait ClusterView {
    fn max_replicas(&self) -> usize;
    /// The state of a store, None if PD does not know it.
    fn store_state(&self, store_id: u64) -> Option<StoreState>;
    /// Every store PD knows, in id order.
    fn store_ids(&self) -> Vec<u64>;
    /// The store's regions once the running operators are done and
    /// `delta` more placed there, over its region weight (`pd-ctl store
    /// weight`, 1 unless set).
    fn region_load(&self, store_id: u64, delta: i64) -> f64;
    /// The store's leader score once it leads `r` too (by
    /// `leader-schedule-policy`: leaders or their regions' sizes), over its
    /// leader weight.
    fn leader_load(&self, store_id: u64, r: &RegionInfo) -> f64;
    /// Whether the store has room for a new replica (is not low on space).
    fn has_room(&self, store_id: u64) -> bool;
    /// Whether the store may take a new replica now: it is not sending or
    /// receiving too many snapshots, nor holding too many pending peers
    /// (`[schedule] max-snapshot-count`, `max-pending-peer-count`). A
    /// passing state: a region whose best target is held back waits.
    fn takes_replica_now(&self, store_id: u64) -> bool;
    /// Whether the store may be given a leader: it is Up and no
    /// `evict-leader-scheduler` holds it.
    fn takes_leader(&self, store_id: u64) -> bool;
    /// Whether the checker of upstream's name (`replica`, `learner`) is
    /// paused now (`pd-ctl checker pause`).
    fn checker_paused(&self, name: &str) -> bool;
    /// Whether the store may take a new replica once a passing state is
    /// over: Up, or only Disconnected since it last reported to this PD
    /// (as upstream's first target stage allows temporary states).
    fn takes_replica_later(&self, store_id: u64) -> bool;
    /// A fresh id for a new peer.
    fn alloc_id(&self) -> PdResult<u64>;
    /// How far `other` is from the stores `others` by location labels (see
    /// [`crate::placement`]); 0 without location labels.
    fn distinct_score(&self, others: &[u64], other: u64) -> u64;
    /// Whether `target` may take a replica beside the stores `others` under
    /// `[replication] isolation-level` (always, without one).
    fn isolated(&self, others: &[u64], target: u64) -> bool;
    /// Which rules are switched on (`[schedule] enable-*`).
    fn repairs(&self) -> Repairs;
}

pub fn check(r: &RegionInfo, c: &dyn ClusterView) -> PdResult<Option<Plan>> {
    if r.in_joint_state() || r.leader.is_none() {
        return Ok(None);
    }
    let mut states = Vec::with_capacity(r.region.peers.len());
    for p in &r.region.peers {
        match c.store_state(p.store_id) {
            Some(s) => states.push((p, s)),
            None => return Ok(None),
        }
    }

    let repairs = c.repairs();
    // Replicas on a Down or Offline store go only while that rule is on.
    let may_go = |s: StoreState| match s {
        StoreState::Down => repairs.remove_down,
        _ => repairs.replace_offline,
    };
    // Upstream's replica checker has every row but the promotion, its
    // learner checker that one; each may be paused (`pd-ctl checker
    // pause`). Paused, its rows plan nothing.
    let replica_paused = c.checker_paused("replica");
    for (p, s) in states.iter().filter(|_| !replica_paused) {
        if is_learner(p) && s.loses_replicas() && may_go(*s) {
            let desc = format!("remove-extra-{}-replica", status(*s));
            return Ok(remove_plan(r, c, desc, p.store_id, p.id, &[]));
        }
    }
    // A learner on a Down or Offline store left there (its rule off) is
    // never promoted; one on a store that is only Disconnected (for
    // instance after a PD restart) is waited for as before. While a
    // learner waits (pending, or its checker paused), no replica is made
    // up beside it, but a Down or Offline voter is still replaced (as
    // upstream's learner checker gives way to the replica checker): a
    // learner that never catches up must not hold the region's repair.
    let on_live_store =
        |p: &&metapb::Peer| (c.store_state(p.store_id)).is_some_and(|s| !s.loses_replicas());
    let learner = r.learners().find(on_live_store);
    let waiting = learner.is_some_and(|p| r.is_pending(p.id) || c.checker_paused("learner"));
    if let Some(p) = learner.filter(|_| !waiting) {
        return Ok(Some(Plan {
            desc: "promote-learner".into(),
            brief: format!("promote peer: store [{}]", p.store_id),
            kind: kind::REGION,
            steps: vec![Step::PromoteLearner {
                store_id: p.store_id,
                peer_id: p.id,
            }],
        }));
    }
    if replica_paused {
        return Ok(None);
    }

    let voters = r.voters().count();
    let max = c.max_replicas();
    // Down stores first, then by store id.
    let mut bad: Vec<(&metapb::Peer, StoreState)> = states
        .iter()
        .filter(|(_, s)| s.loses_replicas() && may_go(*s))
        .copied()
        .collect();
    bad.sort_by_key(|(p, s)| (*s != StoreState::Down, p.store_id));
    for (p, state) in bad {
        if voters > max {
            let desc = format!("remove-extra-{}-replica", status(state));
            return Ok(remove_plan(r, c, desc, p.store_id, p.id, &[]));
        }
        if let Some(target) = pick_target(r, c, &staying(r, Some(p.store_id))) {
            let desc = format!("replace-{}-replica", status(state));
            let add = add_voter(c, target)?;
            return Ok(remove_plan(r, c, desc, p.store_id, p.id, &add));
        }
    }

    if waiting {
        // The rest counts voters, which the learner is to add to.
        return Ok(None);
    }
    if voters < max && repairs.make_up {
        if let Some(target) = pick_target(r, c, &staying(r, None)) {
            return Ok(Some(Plan {
                desc: "make-up-replica".into(),
                brief: format!("add peer: store [{target}]"),
                kind: kind::REPLICA | kind::REGION,
                steps: add_voter(c, target)?.to_vec(),
            }));
        }
    }
    if voters > max && repairs.remove_extra {
        let leader = r.leader_store();
        let voter_stores: Vec<u64> = r.voters().map(|p| p.store_id).collect();
        let worst = states
            .iter()
            .filter(|(p, _)| !is_learner(p))
            .min_by_key(|(p, s)| {
                (
                    s.takes_replicas(),
                    c.distinct_score(&voter_stores, p.store_id),
                    Some(p.store_id) == leader,
                    Reverse(Load(c.region_load(p.store_id, 0))),
                    Reverse(p.store_id),
                )
            });
        if let Some((p, _)) = worst {
            let desc = "remove-extra-replica".into();
            return Ok(remove_plan(r, c, desc, p.store_id, p.id, &[]));
        }
    }
    let all_up = states.iter().all(|(_, s)| s.takes_replicas());
    if voters == max && all_up && repairs.location_replacement {
        return better_location(r, c);
    }
    Ok(None)
}

/// A weighted load, ordered (loads are finite: see
/// [`crate::stores::weighted`]).
#[derive(PartialEq)]
struct Load(f64);

impl Eq for Load {}

impl PartialOrd for Load {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Load {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.0.total_cmp(&other.0)
    }
}

/// Upstream's word for why a replica must go.
fn status(s: StoreState) -> &'static str {
    if s == StoreState::Down {
        "down"
    } else {
        "offline"
    }
}

/// The store with room holding no peer of `r`, allowed beside the stores
/// `staying` by the isolation level, that is farthest from them (the
/// highest distinct score), then with the lowest region load once it has
/// this one (ties: lowest id). The farthest are found among the Up and the
/// only Disconnected stores; of them only those Up that take a replica now
/// (see [`ClusterView::takes_replica_now`]) count, as upstream picks: if
/// none does, `None`, and the region waits rather than settle for a
/// nearer store.
fn pick_target(r: &RegionInfo, c: &dyn ClusterView, staying: &[u64]) -> Option<u64> {
    let fit: Vec<(u64, u64)> = (c.store_ids().into_iter())
        .filter(|id| r.peer_on(*id).is_none())
        .filter(|id| c.takes_replica_later(*id))
        .filter(|id| c.has_room(*id) && c.isolated(staying, *id))
        .map(|id| (id, c.distinct_score(staying, id)))
        .collect();
    let farthest = fit.iter().map(|(_, score)| *score).max()?;
    let up = |id: u64| c.store_state(id).is_some_and(StoreState::takes_replicas);
    fit.into_iter()
        .filter(|(id, score)| *score == farthest && up(*id) && c.takes_replica_now(*id))
        .map(|(id, _)| id)
        .min_by_key(|id| (Load(c.region_load(*id, 1)), *id))
}

/// The stores of `r`'s peers, but `leaving`.
fn staying(r: &RegionInfo, leaving: Option<u64>) -> Vec<u64> {
    (r.region.peers.iter())
        .map(|p| p.store_id)
        .filter(|s| Some(*s) != leaving)
        .collect()
}

/// Where a voter of a region with every replica in place would be better
/// off (`move-to-better-location`): the voter nearest the others (the
/// lowest distinct score; ties: not the leader, the store with the most
/// regions), moved to the target farthest from the rest, if that is
/// strictly farther than it is now.
fn better_location(r: &RegionInfo, c: &dyn ClusterView) -> PdResult<Option<Plan>> {
    let voters: Vec<u64> = r.voters().map(|p| p.store_id).collect();
    let leader = r.leader_store();
    let Some(worst) = voters.iter().copied().min_by_key(|s| {
        let others: Vec<u64> = voters.iter().copied().filter(|o| o != s).collect();
        (
            c.distinct_score(&others, *s),
            Some(*s) == leader,
            Reverse(Load(c.region_load(*s, 0))),
            Reverse(*s),
        )
    }) else {
        return Ok(None);
    };
    let others = staying(r, Some(worst));
    let now = c.distinct_score(&others, worst);
    let Some(target) = pick_target(r, c, &others) else {
        return Ok(None);
    };
    if c.distinct_score(&others, target) <= now {
        return Ok(None);
    }
    move_peer(r, c, "move-to-better-location", worst, target)
}

/// Where leadership goes before the leader's store loses its peer: a voter
/// (or a peer about to become one, `joining`) on an Up store, the one with
/// the lowest leader load once it leads this one (ties: lowest id).
fn pick_new_leader(
    r: &RegionInfo,
    c: &dyn ClusterView,
    leaving: u64,
    joining: &[u64],
) -> Option<u64> {
    r.voters()
        .map(|p| p.store_id)
        .chain(joining.iter().copied())
        .filter(|id| *id != leaving && c.takes_leader(*id))
        .min_by_key(|id| (Load(c.leader_load(*id, r)), *id))
}

/// A plan ending in the removal of `peer_id` from `store_id` (after the
/// steps `before`), with the leader moved away first if it is there. None
/// when the leader must move and no voter can take it.
pub(crate) fn remove_plan(
    r: &RegionInfo,
    c: &dyn ClusterView,
    desc: String,
    store_id: u64,
    peer_id: u64,
    before: &[Step],
) -> Option<Plan> {
    let mut steps = before.to_vec();
    let mut kind = kind::REPLICA | kind::REGION;
    if r.leader_store() == Some(store_id) {
        let joining: Vec<u64> = before
            .iter()
            .filter_map(|s| match s {
                Step::PromoteLearner { store_id, .. } => Some(*store_id),
                _ => None,
            })
            .collect();
        let to_store = pick_new_leader(r, c, store_id, &joining)?;
        steps.push(Step::TransferLeader {
            from_store: store_id,
            to_store,
        });
        kind |= kind::LEADER;
    }
    steps.push(Step::RemovePeer { store_id, peer_id });
    let brief = match before.first() {
        Some(Step::AddLearner { store_id: to, .. }) => {
            format!("mv peer: store [{store_id}] to [{to}]")
        }
        _ => format!("rm peer: store [{store_id}]"),
    };
    Some(Plan {
        desc,
        brief,
        kind,
        steps,
    })
}

/// Moves `r`'s peer from `from_store` to `to_store` (a new voter there,
/// then the old one removed, leadership handed over first if it leads),
/// as balancing moves peers. None when the leader must move and cannot.
pub(crate) fn move_peer(
    r: &RegionInfo,
    c: &dyn ClusterView,
    desc: &str,
    from_store: u64,
    to_store: u64,
) -> PdResult<Option<Plan>> {
    let Some(peer) = r.peer_on(from_store) else {
        return Ok(None);
    };
    let add = add_voter(c, to_store)?;
    Ok(remove_plan(r, c, desc.into(), from_store, peer.id, &add))
}

/// A new voter on `store_id`: first a learner, promoted once caught up.
pub(crate) fn add_voter(c: &dyn ClusterView, store_id: u64) -> PdResult<[Step; 2]> {
    let peer_id = c.alloc_id()?;
    Ok([
        Step::AddLearner { store_id, peer_id },
        Step::PromoteLearner { store_id, peer_id },
    ])
}
