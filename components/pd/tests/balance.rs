//! The balance schedulers over many regions (`common::fleet`): leaders and
//! replicas even out when a store joins, within the schedule limits, and
//! nothing moves once they are even.

mod common;

use std::collections::BTreeMap;

use common::fleet::Fleet;
use common::ScheduleOptions;
use tikal_pd::schedule::LeaderHold;
use tikal_pd::stores::Weights;

/// Regions i on stores 1, 2, 3, led in turn by each.
fn three_stores(i: usize) -> Vec<u64> {
    let mut v = vec![1, 2, 3];
    v.rotate_left(i % 3);
    v
}

fn spread(
    counts: &BTreeMap<u64, (usize, usize)>,
    pick: fn(&(usize, usize)) -> usize,
) -> Vec<usize> {
    counts.values().map(pick).collect()
}

/// Every count within 20% of their mean.
fn within_20_percent(counts: &[usize]) -> bool {
    let mean = counts.iter().sum::<usize>() as f64 / counts.len() as f64;
    counts
        .iter()
        .all(|c| (*c as f64 - mean).abs() <= 0.2 * mean)
}

/// Upstream's defaults (operators time out after 10 minutes, many
/// rounds), merging off.
fn no_merges() -> ScheduleOptions {
    ScheduleOptions {
        max_merge_region_size: 0,
        ..Default::default()
    }
}

#[test]
fn a_fourth_store_gets_its_share_of_regions_and_leaders_and_then_nothing_moves() {
    let mut fleet = Fleet::new(&[1, 2, 3], 48, three_stores, no_merges());
    assert_eq!(
        fleet.settle(5, |_| {}),
        1,
        "balanced already: nothing to do"
    );

    fleet.add_store(4);
    let mut most_leader_ops = 0;
    fleet.settle(100, |f| {
        let ops = f.cluster.operators();
        let leader_ops = ops
            .iter()
            .filter(|op| op.plan.desc == "balance-leader")
            .count();
        most_leader_ops = most_leader_ops.max(leader_ops);
    });
    let counts = fleet.counts();
    let regions = spread(&counts, |c| c.0);
    let leaders = spread(&counts, |c| c.1);
    assert_eq!(regions, [36, 36, 36, 36], "{counts:?}");
    assert!(within_20_percent(&leaders), "{counts:?}");
    assert!(
        most_leader_ops <= 4,
        "leader-schedule-limit: {most_leader_ops}"
    );

    // PD's view agrees with the stores', and nothing moves any more.
    let loads = fleet.cluster.store_loads();
    for (store, (regions, leaders)) in &counts {
        assert_eq!(loads[store].region_count, *regions);
        assert_eq!(loads[store].leader_count, *leaders);
    }
    let before = fleet.log.len();
    for _ in 0..30 {
        assert_eq!(fleet.round(), 0, "{:?}", &fleet.log[before..]);
    }
}

#[test]
fn a_fourth_store_low_on_space_gets_no_regions() {
    let mut fleet = Fleet::new(&[1, 2, 3], 48, three_stores, no_merges());
    // 1 GiB of 16 free: under a fifth, and under 8 GiB (not young).
    fleet.space.insert(4, (16 << 30, 1 << 30));
    fleet.add_store(4);
    fleet.settle(30, |_| {});
    let counts = fleet.counts();
    assert_eq!(counts.get(&4).map_or(0, |c| c.0), 0, "{counts:?}");

    // Room again: it gets its share.
    fleet.space.insert(4, (16 << 30, 12 << 30));
    fleet.store_heartbeats();
    fleet.settle(100, |_| {});
    let counts = fleet.counts();
    assert_eq!(spread(&counts, |c| c.0), [36, 36, 36, 36], "{counts:?}");

    // Short of room again: it sheds its replicas to the stores with room.
    fleet.space.insert(4, (16 << 30, 1 << 30));
    fleet.store_heartbeats();
    fleet.settle(200, |_| {});
    let counts = fleet.counts();
    assert_eq!(spread(&counts, |c| c.0), [48, 48, 48, 0], "{counts:?}");

    // Just above the low-space line (a fifth free) but under 30 %: it is
    // no longer low, so it sheds nothing more, yet takes nothing back
    // (it would swing around the line).
    fleet.space.insert(4, (32 << 30, 7 << 30));
    fleet.store_heartbeats();
    fleet.settle(30, |_| {});
    assert_eq!(fleet.counts().get(&4).map_or(0, |c| c.0), 0);

    // That line is `high-space-ratio` (0.7): raised online past the
    // store's 78 % used, it takes its share again.
    let change = [("high-space-ratio".to_string(), serde_json::json!(0.79))];
    fleet
        .cluster
        .update_opts(change.iter().map(|(k, v)| (k, v)))
        .unwrap();
    fleet.settle(100, |_| {});
    let counts = fleet.counts();
    assert_eq!(spread(&counts, |c| c.0), [36, 36, 36, 36], "{counts:?}");
}

#[test]
fn leaders_all_on_one_store_spread_evenly_without_moving_replicas() {
    let mut fleet = Fleet::new(&[1, 2, 3], 30, |_| vec![1, 2, 3], no_merges());
    fleet.settle(50, |_| {});
    let counts = fleet.counts();
    assert_eq!(spread(&counts, |c| c.1), [10, 10, 10], "{counts:?}");
    assert_eq!(spread(&counts, |c| c.0), [30, 30, 30]);
    assert!(fleet.log.iter().all(|l| l.contains("transfer leader")));
}

#[test]
fn region_moves_stay_within_the_region_schedule_limit() {
    let limited = ScheduleOptions {
        region_schedule_limit: 2,
        ..no_merges()
    };
    let mut fleet = Fleet::new(&[1, 2, 3], 24, three_stores, limited);
    fleet.add_store(4);
    let mut most = 0;
    fleet.settle(200, |f| {
        let moving = f
            .cluster
            .operators()
            .iter()
            .filter(|op| op.plan.desc == "balance-region")
            .count();
        most = most.max(moving);
    });
    assert_eq!(most, 2);
    assert_eq!(spread(&fleet.counts(), |c| c.0), [18, 18, 18, 18]);
}

#[test]
fn removed_schedulers_move_nothing_until_added_back() {
    let mut fleet = Fleet::new(&[1, 2, 3], 12, |_| vec![1, 2, 3], no_merges());
    fleet
        .cluster
        .remove_scheduler("balance-leader-scheduler")
        .unwrap();
    fleet
        .cluster
        .remove_scheduler("balance-region-scheduler")
        .unwrap();
    assert_eq!(fleet.cluster.schedulers(), ["balance-hot-region-scheduler"]);
    fleet.add_store(4);
    assert_eq!(fleet.settle(5, |_| {}), 1);
    assert_eq!(fleet.counts()[&4], (0, 0));
    assert_eq!(fleet.counts()[&1], (12, 12));

    fleet
        .cluster
        .add_scheduler("balance-region-scheduler")
        .unwrap();
    fleet.settle(100, |_| {});
    assert_eq!(spread(&fleet.counts(), |c| c.0), [9, 9, 9, 9]);
}

#[test]
fn a_paused_scheduler_moves_nothing_until_its_pause_ends_or_it_is_resumed() {
    let mut fleet = Fleet::new(&[1, 2, 3], 12, |_| vec![1, 2, 3], no_merges());
    // Rounds are 10 s: paused for two rounds.
    let cluster = fleet.cluster.clone();
    cluster
        .pause_scheduler("balance-leader-scheduler", 20)
        .unwrap();
    assert_eq!(fleet.round(), 0);
    assert_eq!(fleet.round(), 0);
    assert_eq!(fleet.counts()[&1].1, 12, "every leader still on store 1");
    assert!(fleet.round() > 0, "the pause is over");

    // Everything paused for an hour: a new store gets nothing and no
    // leader moves, round after round.
    cluster.pause_scheduler("all", 3600).unwrap();
    fleet.add_store(4);
    let before = fleet.counts();
    for _ in 0..3 {
        assert_eq!(fleet.round(), 0);
    }
    assert_eq!(fleet.counts(), before);
    // Resumed by hand (a delay of 0 or less): balancing goes on.
    cluster.pause_scheduler("all", -1).unwrap();
    fleet.settle(200, |_| {});
    assert_eq!(spread(&fleet.counts(), |c| c.0), [9, 9, 9, 9]);

    // A scheduler removed and added again comes back unpaused.
    let name = "balance-region-scheduler";
    cluster.pause_scheduler(name, 3600).unwrap();
    cluster.remove_scheduler(name).unwrap();
    assert_eq!(
        cluster.pause_scheduler(name, 5),
        Err(tikal_pd::schedule::SchedulerError::NotFound)
    );
    cluster.add_scheduler(name).unwrap();
    assert!(cluster.paused_schedulers().is_empty());
}

#[test]
fn region_replicas_even_out_by_size_not_only_by_count() {
    // Regions i on 3 of 4 stores, in turn: 9 replicas per store. The ones
    // not on store 4 are 100 MiB, the rest 1 MiB: counts are even, sizes
    // are not (stores 1-3: 306 MiB each, store 4: 9 MiB).
    let on = |i: usize| {
        let mut v = vec![1, 2, 3, 4];
        v.rotate_left(i % 4);
        v.truncate(3);
        v
    };
    let mut fleet = Fleet::new(&[1, 2, 3, 4], 12, on, no_merges());
    for (i, r) in fleet.regions.values_mut().enumerate() {
        if !r.region.peers.iter().any(|p| p.store_id == 4) {
            r.size = 100 << 20;
        }
        assert_eq!(r.region.peers.len(), 3, "region {i}");
    }
    let score = |f: &Fleet| -> BTreeMap<u64, u64> {
        let loads = f.cluster.store_loads();
        [1, 2, 3, 4]
            .iter()
            .map(|s| (*s, loads.get(s).map_or(0, |l| l.region_score)))
            .collect()
    };
    fleet.round();
    let before = score(&fleet);
    assert_eq!(
        before.values().copied().collect::<Vec<_>>(),
        [306, 306, 306, 9]
    );
    fleet.settle(100, |_| {});
    let after = score(&fleet);
    let (most, least) = (
        after.values().max().copied().unwrap_or(0),
        after.values().min().copied().unwrap_or(0),
    );
    // A 100 MiB region moved onto store 4; no store is two big regions
    // above another any more.
    assert!(after[&4] >= 100, "{after:?}");
    assert!(most - least < 200, "{before:?} -> {after:?}");
    let settled = fleet.log.len();
    for _ in 0..30 {
        assert_eq!(fleet.round(), 0, "{:?}", &fleet.log[settled..]);
    }
}

#[test]
fn weights_give_a_store_its_share_of_leaders_and_regions() {
    let mut fleet = Fleet::new(&[1, 2, 3], 48, three_stores, no_merges());
    // Store 3 weighs twice as much for leaders: half of them, 24 of 48.
    let weights = |leader, region| Weights { leader, region };
    fleet
        .cluster
        .set_store_weights(3, weights(2.0, 1.0))
        .unwrap();
    fleet.settle(100, |_| {});
    let leaders = spread(&fleet.counts(), |c| c.1);
    assert!((23..=25).contains(&leaders[2]), "{leaders:?}");
    assert!(
        leaders[..2].iter().all(|l| (11..=13).contains(l)),
        "{leaders:?}"
    );

    // A fourth store weighing half for regions takes a seventh of the 144
    // replicas (about 20), not a quarter (36).
    fleet.add_store(4);
    fleet
        .cluster
        .set_store_weights(4, weights(1.0, 0.5))
        .unwrap();
    fleet.settle(200, |_| {});
    let regions = spread(&fleet.counts(), |c| c.0);
    assert!((19..=22).contains(&regions[3]), "{regions:?}");
    assert!(
        regions[..3].iter().all(|r| (39..=43).contains(r)),
        "{regions:?}"
    );

    // Weight 0: the store sheds its leaders, down to at most one (moving
    // the last would leave it scoring below its target).
    fleet
        .cluster
        .set_store_weights(3, weights(0.0, 1.0))
        .unwrap();
    fleet.settle(200, |_| {});
    assert!(fleet.counts()[&3].1 <= 1, "{:?}", fleet.counts());
}

#[test]
fn a_store_weighted_zero_takes_nothing_and_others_still_balance() {
    // Store 4 joins weighted 0 for leaders and regions; store 5 joins
    // weighted 1: store 5 alone gets a share, store 4 nothing.
    let mut fleet = Fleet::new(&[1, 2, 3], 48, three_stores, no_merges());
    fleet.add_store(4);
    let zero = Weights {
        leader: 0.0,
        region: 0.0,
    };
    fleet.cluster.set_store_weights(4, zero).unwrap();
    fleet.add_store(5);
    fleet.settle(300, |_| {});
    let counts = fleet.counts();
    assert_eq!(
        counts.get(&4).copied().unwrap_or_default(),
        (0, 0),
        "{counts:?}"
    );
    assert_eq!(spread(&counts, |c| c.0), [36, 36, 36, 0, 36], "{counts:?}");
}

#[test]
fn balance_never_moves_a_replica_nearer_the_others() {
    // Stores 1, 2, 3 on hosts h1, h2, h3; store 4 joins on h1.
    let opts = common::with_location_labels(no_merges(), &["host"]);
    let mut fleet = Fleet::new(&[1, 2, 3], 48, three_stores, opts);
    for (id, host) in [(1, "h1"), (2, "h2"), (3, "h3")] {
        common::set_labels(&fleet.cluster, id, &[("host", host)]);
    }
    fleet.add_store(4);
    common::set_labels(&fleet.cluster, 4, &[("host", "h1")]);
    fleet.settle(200, |_| {});
    // Only store 1's replicas may move there (same host): the two share
    // h1's 48, and every region keeps one replica per host.
    let regions = spread(&fleet.counts(), |c| c.0);
    assert_eq!((regions[1], regions[2]), (48, 48), "{regions:?}");
    assert_eq!(regions[0] + regions[3], 48, "{regions:?}");
    assert!((23..=25).contains(&regions[3]), "{regions:?}");
}

#[test]
fn a_store_busy_with_snapshots_neither_takes_nor_gives_up_replicas() {
    let mut opts = no_merges();
    opts.max_snapshot_count = 2;
    let mut fleet = Fleet::new(&[1, 2, 3], 48, three_stores, opts);
    // The new store receives three snapshots (over two): it takes nothing.
    fleet.snapshots.insert(4, (0, 3));
    fleet.add_store(4);
    fleet.settle(30, |_| {});
    let counts = fleet.counts();
    assert_eq!(counts.get(&4).map_or(0, |c| c.0), 0, "{counts:?}");

    // Done receiving, but store 1 sends three and store 2 receives
    // three: the new store's share comes from store 3 only.
    fleet.snapshots.insert(4, (0, 2));
    fleet.snapshots.insert(1, (3, 0));
    fleet.snapshots.insert(2, (0, 3));
    fleet.store_heartbeats();
    fleet.settle(100, |_| {});
    let counts = fleet.counts();
    assert_eq!((counts[&1].0, counts[&2].0), (48, 48), "{counts:?}");
    assert!(counts[&4].0 >= 12, "{counts:?}");

    // Store 1 idle again: every store ends with its share.
    fleet.snapshots.clear();
    fleet.store_heartbeats();
    fleet.settle(100, |_| {});
    let counts = fleet.counts();
    assert_eq!(spread(&counts, |c| c.0), [36, 36, 36, 36], "{counts:?}");
}

#[test]
fn a_store_with_too_many_pending_peers_takes_no_replica_from_balance() {
    let mut opts = no_merges();
    opts.max_pending_peer_count = 2;
    // Store 4 holds a voter of three regions, and none has caught up.
    let placement = |i: usize| {
        if i < 3 {
            vec![1, 2, 4]
        } else {
            three_stores(i)
        }
    };
    let mut fleet = Fleet::new(&[1, 2, 3, 4], 48, placement, opts);
    fleet.lagging.insert(4);
    fleet.settle(100, |_| {});
    let counts = fleet.counts();
    assert_eq!(counts[&4].0, 3, "{counts:?}");

    // Caught up: store 4 takes its share.
    fleet.lagging.clear();
    fleet.settle(100, |_| {});
    let counts = fleet.counts();
    assert_eq!(spread(&counts, |c| c.0), [36, 36, 36, 36], "{counts:?}");
}

#[test]
fn with_the_size_policy_leaders_even_out_by_the_sizes_they_lead() {
    // Every store holds every region and leads ten; store 1's are 10 MiB,
    // the others' 1 MiB.
    let mut fleet = Fleet::new(&[1, 2, 3], 30, three_stores, no_merges());
    for r in fleet.regions.values_mut() {
        if r.leader_store == 1 {
            r.size = 10 << 20;
        }
    }
    let led = |fleet: &Fleet| -> BTreeMap<u64, u64> {
        let mut sizes = BTreeMap::new();
        for r in fleet.regions.values() {
            *sizes.entry(r.leader_store).or_default() += r.size >> 20;
        }
        sizes
    };
    // By count (upstream's default) they are even already.
    fleet.settle(10, |_| {});
    assert!(fleet.log.is_empty(), "{:?}", fleet.log);
    assert_eq!(led(&fleet), BTreeMap::from([(1, 100), (2, 10), (3, 10)]));

    let change = serde_json::Map::from_iter([(
        "leader-schedule-policy".to_string(),
        serde_json::json!("size"),
    )]);
    fleet.cluster.update_opts(&change).unwrap();
    fleet.settle(100, |_| {});
    let sizes = led(&fleet);
    let (most, least) = (sizes.values().max(), sizes.values().min());
    // Settled: no 10 MiB leader can move without overshooting.
    assert!(most.unwrap() - least.unwrap() < 20, "{sizes:?}");
    assert!(sizes[&1] < 100, "{sizes:?}");
    assert!(fleet.log.iter().all(|l| l.contains("transfer leader")));
    let counts = fleet.counts();
    assert!(counts[&1].1 < 10, "{counts:?}");
}

#[test]
fn evicted_stores_lose_every_leader_and_get_none_until_given_back() {
    let mut fleet = Fleet::new(&[1, 2, 3], 30, three_stores, no_merges());
    fleet.cluster.hold_store(LeaderHold::Evict, 1).unwrap();
    assert!(fleet
        .cluster
        .schedulers()
        .contains(&"evict-leader-scheduler"));
    fleet.settle(100, |_| {});
    let counts = fleet.counts();
    assert_eq!(spread(&counts, |c| c.1), [0, 15, 15], "{counts:?}");
    assert_eq!(spread(&counts, |c| c.0), [30, 30, 30], "replicas stay");
    assert!(fleet.log.iter().all(|l| l.contains("transfer leader")));

    // A second store: every leader goes to the third.
    fleet.cluster.hold_store(LeaderHold::Evict, 2).unwrap();
    assert_eq!(fleet.cluster.held_stores(LeaderHold::Evict), [1, 2]);
    fleet.settle(100, |_| {});
    assert_eq!(spread(&fleet.counts(), |c| c.1), [0, 0, 30]);

    // Store 2 given back (as `evict-leader-scheduler-2` is deleted), then
    // store 1 with the whole scheduler: leaders even out again.
    fleet
        .cluster
        .remove_scheduler("evict-leader-scheduler-2")
        .unwrap();
    assert!(fleet
        .cluster
        .schedulers()
        .contains(&"evict-leader-scheduler"));
    fleet.settle(100, |_| {});
    assert_eq!(spread(&fleet.counts(), |c| c.1), [0, 15, 15]);
    fleet
        .cluster
        .remove_scheduler("evict-leader-scheduler")
        .unwrap();
    assert!(fleet.cluster.held_stores(LeaderHold::Evict).is_empty());
    assert!(!fleet
        .cluster
        .schedulers()
        .contains(&"evict-leader-scheduler"));
    fleet.settle(100, |_| {});
    assert_eq!(spread(&fleet.counts(), |c| c.1), [10, 10, 10]);

    assert!(
        fleet.cluster.hold_store(LeaderHold::Evict, 9).is_err(),
        "no such store"
    );
    assert!(fleet
        .cluster
        .remove_scheduler("evict-leader-scheduler-1")
        .is_err());
}

#[test]
fn a_granted_store_takes_every_leader_it_can_and_keeps_them() {
    // Store 4 holds a voter of half the regions.
    let placement = |i: usize| {
        let mut v = three_stores(i);
        if i.is_multiple_of(2) {
            v[2] = 4;
        }
        v
    };
    let mut fleet = Fleet::new(&[1, 2, 3, 4], 24, placement, no_merges());
    for s in ["balance-region-scheduler", "balance-hot-region-scheduler"] {
        fleet.cluster.remove_scheduler(s).unwrap();
    }
    fleet.cluster.hold_store(LeaderHold::Grant, 4).unwrap();
    fleet.settle(100, |_| {});
    // Every region with a voter on store 4 is led from there; balance-leader
    // takes none of them away.
    let on_4 = fleet
        .regions
        .values()
        .filter(|r| r.region.peers.iter().any(|p| p.store_id == 4));
    assert_eq!(on_4.clone().count(), 12);
    assert!(
        on_4.clone().all(|r| r.leader_store == 4),
        "{:?}",
        fleet.counts()
    );
    assert_eq!(fleet.counts()[&4].1, 12);

    // Let go: balance-leader evens leaders out again.
    fleet
        .cluster
        .remove_scheduler("grant-leader-scheduler-4")
        .unwrap();
    assert!(fleet.cluster.held_stores(LeaderHold::Grant).is_empty());
    fleet.settle(100, |_| {});
    assert!(fleet.counts()[&4].1 < 12, "{:?}", fleet.counts());
}

#[test]
fn leaders_leave_an_evicted_store_from_regions_not_healthy_but_not_to_a_pending_peer() {
    let mut fleet = Fleet::new(&[1, 2, 3], 30, three_stores, no_merges());
    // Store 3's peers never catch up: no region is healthy.
    fleet.lagging.insert(3);
    fleet.cluster.hold_store(LeaderHold::Evict, 1).unwrap();
    fleet.settle(100, |_| {});
    let counts = fleet.counts();
    assert_eq!(spread(&counts, |c| c.1), [0, 20, 10], "{counts:?}");
}
