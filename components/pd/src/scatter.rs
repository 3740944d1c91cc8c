//! Scattering regions: spreading a region's replicas and its leader over
//! the stores, as upstream's region scatterer does for `ScatterRegion`
//! (TiDB's and BR's pre-split tables, client-go `ScatterRegions`) and
//! `pd-ctl operator add scatter-region`.
//!
//! Regions scattered under one group name are spread as a whole: PD
//! counts, per group and store, the replicas and leaders it has placed,
//! and each region's replicas go to the stores with the lowest counts (a
//! replica stays where it is on a tie, so a scatter moves no more than it
//! must, and moves only to a store the region does not use yet; it stays
//! on a store that is not Up only if no Up store will do), its leader to
//! the chosen store that leads the fewest. Without a
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

/// Where the replicas on `current` go, in that order: each to the store
/// among `candidates` with the fewest of the group's replicas (`placed`),
/// staying on a tie. A replica moves only to a store the region does not
/// use (never onto one another replica leaves: that would be two moves
/// for one) and only if `safe_move(others, from, to)` holds, `others`
/// being the replicas placed before it and those still to move; it stays
/// if nowhere else will do.
fn pick_stores(
    current: &[u64],
    candidates: &[u64],
    placed: &HashMap<u64, u64>,
    safe_move: impl Fn(&[u64], u64, u64) -> bool,
) -> Vec<u64> {
    let count = |s: u64| placed.get(&s).copied().unwrap_or(0);
    let mut chosen: Vec<u64> = Vec::with_capacity(current.len());
    for (i, &from) in current.iter().enumerate() {
        let others: Vec<u64> = (chosen.iter().copied())
            .chain(current[i + 1..].iter().copied())
            .collect();
        let new_store = |s: &u64| !chosen.contains(s) && !current.contains(s);
        let to = (candidates.iter().copied())
            .filter(|s| *s == from || (new_store(s) && safe_move(&others, from, *s)))
            .min_by_key(|s| (count(*s), *s != from, *s));
        chosen.push(to.unwrap_or(from));
    }
    chosen
}

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
        let safe_move = |others: &[u64], from: u64, to: u64| {
            v.distinct_score(others, to) >= v.distinct_score(others, from) && v.isolated(others, to)
        };
        let chosen = pick_stores(&current, &candidates, &g.peers, safe_move);
        // Distinct: each pick is its replica's own store or one neither
        // the region nor an earlier pick holds.
        let want: BTreeSet<u64> = chosen.iter().copied().collect();
        // Leadership only to an Up store (a replica may stay on one that
        // is not, for now).
        let new_leader = (chosen.iter().copied())
            .filter(|s| v.takes_leader(*s))
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
            let placed = g.peers.entry(*s).or_default();
            *placed = placed.saturating_add(1);
        }
        let led = g.leaders.entry(new_leader).or_default();
        *led = led.saturating_add(1);
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replicas_go_where_the_group_has_fewest_and_never_onto_a_store_left() {
        let placed = HashMap::from([(1, 1), (2, 2)]);
        let any = |_: &[u64], _: u64, _: u64| true;
        // 1 moves to 4 (none there); 2 (two there) would take 1 next, but
        // one move does it: 2 and 3 stay.
        assert_eq!(
            pick_stores(&[1, 2, 3], &[1, 2, 3, 4], &placed, any),
            [4, 2, 3]
        );
        // Ties stay; a store that is no candidate (not Up) is left if
        // another will do, kept if none will.
        let even = HashMap::from([(1, 1), (2, 1), (3, 1), (4, 1)]);
        assert_eq!(
            pick_stores(&[1, 2, 3], &[1, 2, 3, 4], &even, any),
            [1, 2, 3]
        );
        assert_eq!(pick_stores(&[1, 2, 3], &[1, 2, 4], &even, any), [1, 2, 4]);
        assert_eq!(pick_stores(&[1, 2, 3], &[1, 2], &even, any), [1, 2, 3]);
        // An unsafe move is not made.
        let never = |_: &[u64], _: u64, _: u64| false;
        assert_eq!(
            pick_stores(&[1, 2, 3], &[1, 2, 3, 4], &placed, never),
            [1, 2, 3]
        );
    }
}
