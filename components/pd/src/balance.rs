//! The balance schedulers: even out leaders (`balance-leader-scheduler`)
//! and region replicas (`balance-region-scheduler`) across Up stores.
//!
//! Leaders are scored by count, as upstream's default leader policy
//! (`count`) does, or with `leader-schedule-policy = "size"` by the sizes
//! of the regions led (each at least 1 MiB). Regions are scored by size, as upstream's region score
//! is: the sizes of the regions a store holds a peer of, each counted as
//! at least 1 MiB (so empty and unreported regions weigh as much as small
//! ones, and many small regions balance by count). Each score is divided
//! by the store's leader or region weight (`pd-ctl store weight`, 1
//! unless set), so a store weighted 2 ends with twice the share. Scores
//! are taken as they will be once the running operators are done, and a
//! move is made only when, after it, the source still scores at least as
//! high as the target; with weights of 1 that is the source two moves'
//! worth above the target (two leaders; twice the region's size):
//!
//! ```text
//!   leaders per store  1: 14  2: 13  3: 13  4: 0   (store 4 just joined)
//!   region led by 1 with a follower on 4: 14-1 >= 0+1  → transfer to 4
//!   ...                1: 10  2: 10  3: 10  4: 10  → no move keeps order
//!   region score (MiB) 1: 306  4: 9, a 100 MiB region on 1 not on 4:
//!                      306-100 >= 9+100        → move its peer 1 → 4
//!   store 4 weighted 2: 1: 10  4: 19, 10-1 >= (19+1)/2 → transfer to 4
//! ```
//!
//! Each move lowers the sum over stores of weight × score², so moves
//! stop; and a move can never be undone by the reverse move (after it the
//! source scores at least the target, and the reverse would need the
//! target above the source). At rest:
//!
//! * regions: no region could move its peer from its highest-scored
//!   store to a store without one scored two of its weights lower; with
//!   regions of one size, no two Up stores differ by two regions;
//! * leaders: every region's leader store leads at most one more region
//!   than each of its followers' stores; with replicas spread, stores
//!   share many regions, so leader counts end within a few of each other.
//!   Under `leader-schedule-policy = "size"` the same holds of the sizes
//!   of the regions led, the region's own size taking the place of one.
//!
//! A store whose store limit could not pay for a large region's move now
//! (see [`crate::store_limit`]) is neither a source nor a target, as
//! upstream's store filters leave it out: the move goes elsewhere. So is
//! a store sending or receiving more than `max-snapshot-count` snapshots;
//! and a store with more than `max-pending-peer-count` pending peers is no
//! target.
//!
//! A store low on space is the exception: it takes no replicas, and sheds
//! them to stores with room until it is no longer low. With location
//! labels, a replica never moves to a store nearer the region's other
//! replicas than the one it leaves (see [`crate::placement`]).
//!
//! Hot regions are left to [`crate::hot`].

use crate::checker::{move_peer, ClusterView};
use crate::cluster::PdResult;
use crate::operator::{kind, Plan, Step};
use crate::regions::RegionInfo;
use crate::schedule::View;
use crate::store_limit::LimitType;

/// Orders stores by score, then by id: the lowest score (and on a tie
/// the lowest id) first.
fn by_score(score: impl Fn(u64) -> f64) -> impl Fn(&u64, &u64) -> std::cmp::Ordering {
    move |a, b| score(*a).total_cmp(&score(*b)).then(a.cmp(b))
}

/// Moves `r`'s leadership to the follower on the Up store that would
/// score lowest with it, if after the move its leader's store scores at
/// least as high as that store.
pub(crate) fn leader(r: &RegionInfo, v: &View) -> Option<Plan> {
    if v.running(kind::LEADER) >= v.opts.leader_schedule_limit {
        return None;
    }
    // A store `grant-leader-scheduler` holds keeps its leaders.
    let from_store = r
        .leader_store()
        .filter(|s| v.is_up(*s) && !v.is_granted(*s))?;
    let to_store = r
        .voters()
        .map(|p| p.store_id)
        .filter(|s| *s != from_store && v.takes_leader(*s))
        .min_by(by_score(|s| v.leader_score(s, r, true)))?;
    if v.leader_score(from_store, r, false) < v.leader_score(to_store, r, true) {
        return None;
    }
    Some(transfer_leader("balance-leader", from_store, to_store))
}

/// A leader scheduler's plan: leadership from one store to another.
fn transfer_leader(desc: &str, from_store: u64, to_store: u64) -> Plan {
    Plan {
        desc: desc.into(),
        brief: format!("transfer leader: store {from_store} to {to_store}"),
        kind: kind::LEADER,
        steps: vec![Step::TransferLeader {
            from_store,
            to_store,
        }],
    }
}

/// Moves `r`'s leadership off a store `evict-leader-scheduler` holds, to
/// the voter, neither pending nor down, on a store that takes leaders
/// and would score lowest with it (within `leader-schedule-limit`, as
/// upstream's). Regions that are not healthy are taken too.
pub(crate) fn evict_leader(r: &RegionInfo, v: &View) -> Option<Plan> {
    let from_store = r.leader_store().filter(|s| v.is_evicted(*s))?;
    if v.running(kind::LEADER) >= v.opts.leader_schedule_limit || r.in_joint_state() {
        return None;
    }
    let to_store = r
        .voters()
        .filter(|p| !r.is_pending(p.id) && !r.is_down(p.id))
        .map(|p| p.store_id)
        .filter(|s| *s != from_store && v.takes_leader(*s))
        .min_by(by_score(|s| v.leader_score(s, r, true)))?;
    Some(transfer_leader(
        crate::schedule::EVICT_LEADER,
        from_store,
        to_store,
    ))
}

/// Moves `r`'s leadership onto a store `grant-leader-scheduler` holds, if
/// it has a voter on one that takes leaders and its leader is on none (the
/// one that would score lowest with it; within `leader-schedule-limit`).
pub(crate) fn grant_leader(r: &RegionInfo, v: &View) -> Option<Plan> {
    let from_store = r.leader_store().filter(|s| !v.is_granted(*s))?;
    if v.running(kind::LEADER) >= v.opts.leader_schedule_limit {
        return None;
    }
    let to_store = r
        .voters()
        .map(|p| p.store_id)
        .filter(|s| v.is_granted(*s) && v.takes_leader(*s))
        .min_by(by_score(|s| v.leader_score(s, r, true)))?;
    Some(transfer_leader(
        crate::schedule::GRANT_LEADER,
        from_store,
        to_store,
    ))
}

/// Moves `r`'s peer off one of its Up stores to the Up store with room
/// (below the high-space ratio) without one that would score lowest with
/// it and is no nearer the other replicas: the first of its stores, from
/// the highest score down, for which such a store exists and after the
/// move still scores at least as high as it. Off a store low on space (see
/// [`crate::stores::StoreInfo::is_low_space`]) whatever the scores.
pub(crate) fn region(r: &RegionInfo, v: &View) -> PdResult<Option<Plan>> {
    if v.running(kind::REGION) >= v.opts.region_schedule_limit {
        return Ok(None);
    }
    let size = i64::try_from(r.score_mib()).unwrap_or(i64::MAX);
    // Sources by score, highest first (ties: lowest id).
    let sources = |short_of_room: bool| {
        let mut s: Vec<u64> = (r.region.peers.iter())
            .map(|p| p.store_id)
            .filter(|s| v.is_up(*s) && (!short_of_room || !v.has_room(*s)))
            .filter(|s| v.within_limit(*s, LimitType::RemovePeer) && !v.too_many_snapshots(*s))
            .collect();
        s.sort_by(by_score(|s| -v.region_score(s, -size)));
        s
    };
    // A store low on space sheds replicas whatever the scores say (as
    // upstream's region score soars when space runs low).
    let crowded = sources(true);
    let short_of_room = !crowded.is_empty();
    let candidates = if short_of_room {
        crowded
    } else {
        sources(false)
    };
    let pair = candidates.into_iter().find_map(|from| {
        // Never to a store nearer the other replicas than `from` is (by
        // location labels, see `crate::placement`).
        let others: Vec<u64> = (r.region.peers.iter())
            .map(|p| p.store_id)
            .filter(|s| *s != from)
            .collect();
        let safe = v.distinct_score(&others, from);
        let to = v
            .up_stores()
            .into_iter()
            .filter(|s| r.peer_on(*s).is_none() && v.has_room_to_balance(*s))
            .filter(|s| v.within_limit(*s, LimitType::AddPeer) && v.takes_replica_now(*s))
            .filter(|s| v.distinct_score(&others, *s) >= safe && v.isolated(&others, *s))
            .min_by(by_score(|s| v.region_score(s, size)))?;
        let worth = short_of_room || v.region_score(from, -size) >= v.region_score(to, size);
        worth.then_some((from, to))
    });
    let Some((from, to)) = pair else {
        return Ok(None);
    };
    let plan = move_peer(r, v as &dyn ClusterView, "balance-region", from, to)?;
    Ok(plan.map(|mut p| {
        // A balancing move, not a repair: limited as one.
        p.kind &= !kind::REPLICA;
        p
    }))
}
