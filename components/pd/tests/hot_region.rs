//! The hot-write scheduler over a few regions (`common::fleet`): a store
//! leading most of the write flow hands its hottest leader to the
//! follower store writing least, once, and never back.

mod common;

use common::fleet::Fleet;
use common::ScheduleOptions;

/// Stores 1 2 3 and `n` regions on all three placed by `placement`, with
/// only the hot scheduler running (and no merges).
fn hot_only(n: usize, placement: impl Fn(usize) -> Vec<u64>) -> Fleet {
    let opts = ScheduleOptions {
        max_merge_region_size: 0,
        ..Default::default()
    };
    let fleet = Fleet::new(&[1, 2, 3], n, placement, opts);
    for s in ["balance-leader-scheduler", "balance-region-scheduler"] {
        fleet.cluster.remove_scheduler(s).unwrap();
    }
    fleet
}

/// Sets the regions' write rates (KiB/s), in id order.
fn set_rates(fleet: &mut Fleet, kib: &[u64]) {
    let ids: Vec<u64> = fleet.regions.keys().copied().collect();
    for (id, rate) in ids.iter().zip(kib) {
        fleet.regions.get_mut(id).unwrap().write_rate = rate << 10;
    }
}

#[test]
fn the_hottest_leader_leaves_a_store_taking_most_writes_and_stays_away() {
    // Six regions on 1 2 3; store 1 leads 0..3, 2 leads 3..5, 3 leads 5.
    let leaders = [1, 1, 1, 2, 2, 3];
    let mut fleet = hot_only(6, |i| {
        let mut v = vec![1, 2, 3];
        v.retain(|s| *s != leaders[i]);
        v.insert(0, leaders[i]);
        v
    });
    let ids: Vec<u64> = fleet.regions.keys().copied().collect();
    // KiB/s: store 1 writes 210, stores 2 and 3 nothing: mean 70.
    set_rates(&mut fleet, &[100, 60, 50, 0, 0, 0]);
    fleet.round(); // PD learns the flows.
    fleet.log.clear();
    fleet.settle(10, |_| {});
    // 0 + 100 < 210 - 100: region 0's leadership moves to store 2 (2 and
    // 3 both write nothing; ties go to the lowest id).
    assert_eq!(
        fleet.log,
        [format!("{}: transfer leader to store 2", ids[0])]
    );
    let (op, _) = fleet.cluster.operator(ids[0]).unwrap();
    assert_eq!(op.plan.desc, "transfer-hot-write-leader");
    // Store 1 now writes 110 KiB/s, store 2 100: no more moves.
    for _ in 0..10 {
        assert_eq!(fleet.round(), 0, "{:?}", fleet.log);
    }
    let loads = fleet.cluster.store_loads();
    assert_eq!(loads[&1].write_bytes_rate, (110 << 10) as f64);
    assert_eq!(loads[&2].write_bytes_rate, (100 << 10) as f64);
}

#[test]
fn without_the_hot_scheduler_hot_leaders_stay_and_balance_leaves_them() {
    let opts = ScheduleOptions {
        max_merge_region_size: 0,
        ..Default::default()
    };
    let mut fleet = Fleet::new(&[1, 2, 3], 3, |_| vec![1, 2, 3], opts);
    fleet
        .cluster
        .remove_scheduler("balance-hot-region-scheduler")
        .unwrap();
    for r in fleet.regions.values_mut() {
        r.write_rate = 100 << 10;
    }
    fleet.settle(10, |_| {});
    // All three hot regions stay led by store 1: balance-leader leaves
    // hot regions to the hot scheduler, which is off.
    assert_eq!(fleet.counts()[&1], (3, 3), "{:?}", fleet.log);
}

#[test]
fn a_store_whose_hottest_leader_is_leaving_hands_off_no_second_one() {
    let mut fleet = hot_only(3, |_| vec![1, 2, 3]);
    let ids: Vec<u64> = fleet.regions.keys().copied().collect();
    // Heartbeats go in id order. Store 1 leads all three: 100 + 110 +
    // 120 KiB/s; on the last heartbeat the 120 region is its hottest and
    // moves (0 + 120 < 330 - 120).
    set_rates(&mut fleet, &[100, 110, 120]);
    fleet.log.clear();
    fleet.round();
    assert_eq!(
        fleet.log,
        [format!("{}: transfer leader to store 2", ids[2])]
    );
    // Before PD hears that the move is done, the first region turns
    // hottest (200). Store 1's flow counting the running move as done is
    // 200 + 110 = 310 (430 without), store 3's 0: moving the 200 region
    // would leave store 1 with 110, below the 200 store 3 would take, so
    // it stays. Counted as still on store 1, the move looked worth it.
    set_rates(&mut fleet, &[200, 110, 120]);
    fleet.log.clear();
    fleet.heartbeat(ids[0]);
    assert!(fleet.log.is_empty(), "{:?}", fleet.log);
}
