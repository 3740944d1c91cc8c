//! Scattering regions: spreading a region's replicas and its leader over
//! the stores, as upstream's region scatterer does for `ScatterRegion`
//! (TiDB's and BR's pre-split tables, client-go `ScatterRegions`) and
//! `pd-ctl operator add scatter-region`.
//!
//! Regions scattered under one group name are spread as a whole: PD
//! counts, per group and store, the replicas and leaders it has placed,
//! and each region's replicas go to the stores with the lowest counts (a
//! replica stays where it is on a tie, so a scatter moves no more than it
//! must), its leader to the chosen store that leads the fewest. Without a
//! group name the regions share the cluster's group. A group's counts are
//! forgotten once it has not been used for [`GROUP_KEPT`].
//!
//! Only a healthy region (led, fully replicated, nothing pending or down)
//! is scattered. A replica moves only to an Up store with room, and only
//! where the location labels keep it at least as far from the others as
//! where it was (the rule balance-region keeps), judged beside the
//! replicas placed before it and those still to move, in the order the
//! moves are made. Leadership goes only to an Up store. The move is an
//! operator (`scatter-region`, the admin kind) walked through heartbeats
//! as any other: leadership handed to its chosen store first if that one
//! is already a voter, then one replica at a time a learner added and
//! promoted, leadership handed over if the leaving peer leads, the old
//! peer removed; a new leader on a new store takes over last.
//!
//! ```text
//!   group "t", stores 1-6, regions A and B both on 1 2 3 led by 1
//!   A: 1 2 3 count 0 and stay; leader 1          counts: 1 2 3 -> 1
//!   B: 4 5 6 count 0 beat 1 2 3; leader 4        counts: all 1
//! ```

use std::collections::{BTreeSet, HashMap};
use std::time::Duration;

use crate::checker::ClusterView;
use crate::clock::elapsed;
use crate::operator::{kind, Plan, Step};
use crate::regions::RegionInfo;
use crate::schedule::View;

/// How long a group's counts are kept after its last scatter (upstream's
/// 3 minutes).
pub const GROUP_KEPT: Duration = Duration::from_secs(3 * 60);

/// The scatter operator's desc, as upstream names it.
pub const DESC: &str = "scatter-region";

/// Per group name: what PD has placed there, and when it last did.
#[derive(Default)]
pub struct Groups(HashMap<String, Group>);

#[derive(Default)]
struct Group {
    /// Replicas placed per store.
    peers: HashMap<u64, u64>,
    /// Leaders placed per store.
    leaders: HashMap<u64, u64>,
    used_at: i64,
}

impl Groups {
    /// Plans the scatter of `r` within `group` and counts what it places;
    /// a plan with no steps if the region already is where it would go.
    pub(crate) fn scatter(
        &mut self,
        r: &RegionInfo,
        v: &View,
        group: &str,
    ) -> Result<Plan, String> {
        self.0
            .retain(|_, g| elapsed(g.used_at, v.now) <= GROUP_KEPT);
        let id = r.region.id;
        let Some(leader) = r.leader_store() else {
            return Err(format!("region {id} has no leader"));
        };
        if !r.is_healthy(v.max_replicas()) {
            return Err(format!(
                "region {id} is not fully replicated or has abnormal peers"
            ));
        }
        let g = self.0.entry(group.to_string()).or_default();
        g.used_at = v.now;
        let current: Vec<u64> = r.region.peers.iter().map(|p| p.store_id).collect();
        let candidates: Vec<u64> = (v.up_stores().into_iter())
            .filter(|s| v.has_room(*s))
            .collect();
        let count = |m: &HashMap<u64, u64>, s: u64| m.get(&s).copied().unwrap_or(0);
        let mut chosen: Vec<u64> = Vec::with_capacity(current.len());
        for (i, &from) in current.iter().enumerate() {
            // The replicas already placed, and those not yet looked at.
            let others: Vec<u64> = (chosen.iter().copied())
                .chain(current[i + 1..].iter().copied())
                .collect();
            let free = |s: &u64| !others.contains(s);
            let safe = v.distinct_score(&others, from);
            let to = (candidates.iter().copied())
                .filter(free)
                .filter(|s| v.distinct_score(&others, *s) >= safe && v.isolated(&others, *s))
                .chain(Some(from).filter(free))
                .min_by_key(|s| (count(&g.peers, *s), *s != from, *s));
            chosen.push(to.unwrap_or(from));
        }
        // Distinct: each pick excluded the picks before it and the
        // replicas after it, and a replica's own store is never excluded.
        let want: BTreeSet<u64> = chosen.iter().copied().collect();
        // Leadership only to an Up store (a replica may stay on one that
        // is not, for now).
        let new_leader = (chosen.iter().copied())
            .filter(|s| v.is_up(*s))
            .min_by_key(|s| (count(&g.leaders, *s), *s != leader, *s))
            .or(want.contains(&leader).then_some(leader))
            .ok_or_else(|| format!("region {id} has no store to lead from"))?;
        // A leader chosen among the voters takes over first, so a leader
        // whose store is left hands over once, not twice.
        let mut steps = vec![];
        let mut leader_now = leader;
        if new_leader != leader && current.contains(&new_leader) {
            steps.push(Step::TransferLeader {
                from_store: leader,
                to_store: new_leader,
            });
            leader_now = new_leader;
        }
        // In the order checked above: each move is safe beside the
        // replicas placed before it and those left after it.
        let pairs: Vec<(u64, u64)> = (current.iter().copied())
            .zip(chosen.iter().copied())
            .filter(|(from, to)| from != to)
            .collect();
        let moves = crate::merge::move_peers(r, &pairs, Some(leader_now), v)
            .map_err(|e| e.to_string())?
            .ok_or_else(|| format!("region {id} cannot be moved onto stores {want:?}"))?;
        steps.extend(moves);
        let leader_after = steps.iter().fold(leader, |l, s| match s {
            Step::TransferLeader { to_store, .. } => *to_store,
            _ => l,
        });
        if leader_after != new_leader {
            steps.push(Step::TransferLeader {
                from_store: leader_after,
                to_store: new_leader,
            });
        }
        for s in &chosen {
            *g.peers.entry(*s).or_default() += 1;
        }
        *g.leaders.entry(new_leader).or_default() += 1;
        let mut plan_kind = kind::ADMIN;
        if want != current.iter().copied().collect() {
            plan_kind |= kind::REGION;
        }
        if new_leader != leader {
            plan_kind |= kind::LEADER;
        }
        let mut stores: Vec<u64> = want.into_iter().collect();
        stores.sort_unstable();
        Ok(Plan {
            desc: DESC.into(),
            brief: format!("scatter region: stores {stores:?}, leader store {new_leader}"),
            kind: plan_kind,
            steps,
        })
    }
}
