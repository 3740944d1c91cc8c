//! The merge checker: a small region is merged into a neighbour, as
//! upstream's merge checker does.
//!
//! A region is merged when all hold:
//!
//! * its leader reported its size, and it is at most `[schedule]
//!   max-merge-region-size` (MiB) and `max-merge-region-keys`;
//! * neither it nor PD is younger than `split-merge-interval` (a region
//!   that split, or was made by a split, that recently is left alone, and
//!   so is everything right after PD starts);
//! * it and a neighbour (the region whose range touches its own) are
//!   healthy, fully replicated, of known size and free of operators, and the boundary
//!   between them is no keyspace's (see [`crate::keyspace`]). With two such
//!   neighbours, the smaller takes it (ties: the next one); one over
//!   upstream's region-max-size (144 MiB) takes nothing. With
//!   `enable-one-way-merge` only the next one may take it.
//!
//! The operator first moves the source's peers onto the target's stores
//! (a learner on a missing store, promoted, leadership handed to it if the
//! leaving peer leads, the leaving peer removed: one store at a time), then
//! sends `merge { target }` to the source's leader until PD sees the
//! source gone. The leaders need not share a store.
//!
//! ```text
//!   source 7 [b, c) on stores 1 2 3, target 8 [c, d) on 1 2 4
//!   steps: add learner on 4, promote it, remove peer on 3, merge 7 into 8
//!   the target reports [b, d) at a newer version: 7 is dropped, done
//! ```

use std::collections::BTreeSet;

use crate::checker::{add_voter, ClusterView};
use crate::clock::elapsed;
use crate::cluster::PdResult;
use crate::operator::{kind, Plan, Step};
use crate::regions::RegionInfo;
use crate::schedule::View;

/// Upstream TiKV's default `region-max-size` (MiB): no target above it.
const REGION_MAX_SIZE_MIB: u64 = 144;

pub(crate) fn check(r: &RegionInfo, v: &View) -> PdResult<Option<Plan>> {
    let o = &v.opts;
    if o.max_merge_region_size == 0 || v.running(kind::MERGE) >= o.merge_schedule_limit {
        return Ok(None);
    }
    if elapsed(v.cluster.started, v.now) < o.split_merge_interval {
        return Ok(None);
    }
    let small = r.size_reported
        && r.approximate_size_mib() <= o.max_merge_region_size
        && r.approximate_keys <= o.max_merge_region_keys;
    if !small {
        return Ok(None);
    }
    let target = {
        let regions = v.cluster.regions.read();
        if regions.split_within(r.region.id, v.now, o.split_merge_interval) {
            return Ok(None);
        }
        // A target of unknown size (it just took in a merge, say) would
        // count as the smallest and pass any cap: not one.
        let fits = |t: &&RegionInfo| {
            t.size_reported
                && t.is_healthy(v.max_replicas())
                && !v.has_operator(t.region.id)
                && !regions.split_within(t.region.id, v.now, o.split_merge_interval)
                && t.approximate_size_mib() <= REGION_MAX_SIZE_MIB
        };
        // A keyspace's boundary stays a region boundary.
        let keyspaces = &v.cluster.keyspaces;
        let (prev, next) = regions.neighbours(&r.region);
        let prev = prev
            .filter(fits)
            .filter(|_| !keyspaces.is_bound(&r.region.start_key));
        let next = next
            .filter(fits)
            .filter(|_| !keyspaces.is_bound(&r.region.end_key));
        let prev = prev.filter(|_| !o.one_way_merge);
        let target = match (prev, next) {
            (Some(p), Some(n)) if p.approximate_size < n.approximate_size => Some(p),
            (p, n) => n.or(p),
        };
        match target {
            Some(t) => t.clone(),
            None => return Ok(None),
        }
    };
    plan(r, &target, v, "merge-region")
}

/// The operator that merges `r` into the adjacent `target`, `r`'s peers
/// moved onto the target's stores first (module docs); None if the two
/// cannot be paired.
pub(crate) fn plan(
    r: &RegionInfo,
    target: &RegionInfo,
    v: &View,
    desc: &str,
) -> PdResult<Option<Plan>> {
    let Some(mut steps) = align_peers(r, target, v)? else {
        return Ok(None);
    };
    let mut plan_kind = kind::MERGE;
    if !steps.is_empty() {
        plan_kind |= kind::REGION;
    }
    if steps
        .iter()
        .any(|s| matches!(s, Step::TransferLeader { .. }))
    {
        plan_kind |= kind::LEADER;
    }
    steps.push(Step::MergeRegion {
        source_id: r.region.id,
        target: target.region.clone(),
        passive: false,
    });
    Ok(Some(Plan {
        desc: desc.into(),
        brief: format!("merge: region {} to {}", r.region.id, target.region.id),
        kind: plan_kind,
        steps,
    }))
}

/// Steps that put the source's peers on the target's stores, one store
/// at a time; None if the two cannot be paired (different peer counts).
fn align_peers(src: &RegionInfo, target: &RegionInfo, v: &View) -> PdResult<Option<Vec<Step>>> {
    let want: BTreeSet<u64> = target.region.peers.iter().map(|p| p.store_id).collect();
    let have: BTreeSet<u64> = src.region.peers.iter().map(|p| p.store_id).collect();
    let missing: Vec<u64> = want.difference(&have).copied().collect();
    let extra: Vec<u64> = have.difference(&want).copied().collect();
    if missing.len() != extra.len() {
        return Ok(None);
    }
    let moves: Vec<(u64, u64)> = extra.into_iter().zip(missing).collect();
    move_peers(src, &moves, src.leader_store(), v)
}

/// Steps that move `r`'s peers by `moves` (from store, to store), in
/// that order, one at a time: a learner added on the new store and
/// promoted, leadership handed to it if the leaving peer leads, the
/// leaving peer removed. The leader is on store `leader` at the start.
/// Leadership goes to a store that takes leaders (see
/// [`ClusterView::takes_leader`]): the new one, else a voter that stays.
/// None if a store to add to is not Up, one to leave holds no peer, or
/// no store may take the leadership.
pub(crate) fn move_peers(
    r: &RegionInfo,
    moves: &[(u64, u64)],
    mut leader: Option<u64>,
    v: &View,
) -> PdResult<Option<Vec<Step>>> {
    if moves.iter().any(|(_, to)| !v.is_up(*to)) {
        return Ok(None);
    }
    let mut steps = vec![];
    for &(from, to) in moves {
        let Some(leaving) = r.peer_on(from) else {
            return Ok(None);
        };
        steps.extend(add_voter(v as &dyn ClusterView, to)?);
        if leader == Some(from) {
            let stays = |s: u64| s != from && moves.iter().all(|(f, _)| *f != s);
            let next = Some(to).filter(|s| v.takes_leader(*s)).or_else(|| {
                (r.voters().map(|p| p.store_id)).find(|s| stays(*s) && v.takes_leader(*s))
            });
            let Some(next) = next else {
                return Ok(None);
            };
            steps.push(Step::TransferLeader {
                from_store: from,
                to_store: next,
            });
            leader = Some(next);
        }
        steps.push(Step::RemovePeer {
            store_id: from,
            peer_id: leaving.id,
        });
    }
    Ok(Some(steps))
}
