//! Store limits (`pd-ctl store limit`): how fast a store takes in new
//! replicas, played through heartbeats against a manual clock.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::fleet::Fleet;
use common::{opts, ScheduleOptions};
use tikal_pd::clock::{Clock, ManualClock};
use tikal_pd::cluster::Cluster;
use tikal_pd::schedule::{AdminOp, SCHEDULERS};
use tikal_pd::storage::MetaStore;
use tikal_pd::store_limit::{LimitType, Rates};
use tikal_pd::stores::Weights;
use tikal_proto::metapb;

const MIB: u64 = 1 << 20;

/// `n` regions of `size_mib` on stores 1 and 2, store 3 empty, no
/// schedulers: only the replica checker (or a request) moves anything.
fn fleet(n: usize, size_mib: u64, opts: ScheduleOptions) -> Fleet {
    fleet_on(&[1, 2, 3], n, |_| vec![1, 2], size_mib, opts)
}

/// `n` regions of `size_mib` over `stores`, placed by `placement` (see
/// `Fleet::new`), with no scheduler running.
fn fleet_on(
    stores: &[u64],
    n: usize,
    placement: impl Fn(usize) -> Vec<u64>,
    size_mib: u64,
    opts: ScheduleOptions,
) -> Fleet {
    let mut fleet = Fleet::new(stores, n, placement, opts);
    for s in SCHEDULERS {
        fleet.cluster.remove_scheduler(s).unwrap();
    }
    for r in fleet.regions.values_mut() {
        r.size = size_mib * MIB;
    }
    fleet
}

/// How many of the fleet's commands so far added a learner on `store`.
fn adds_on(fleet: &Fleet, store: u64) -> usize {
    let line = format!("add learner on store {store}");
    fleet.log.iter().filter(|l| l.ends_with(&line)).count()
}

#[test]
fn large_regions_take_new_replicas_as_fast_as_the_store_limit_allows() {
    let mut fleet = fleet(4, 64, opts(3));
    // 15 a minute (the default): a bucket of 1000 tokens, 250 back a
    // second, and each large region's learner takes 1000. A round is 10 s.
    fleet.round();
    assert_eq!(adds_on(&fleet, 3), 1, "{:?}", fleet.log);
    fleet.round();
    assert_eq!(adds_on(&fleet, 3), 2, "{:?}", fleet.log);
    // 10 a second: the bucket holds 10,000 and the rest go at once.
    (fleet.cluster)
        .set_all_store_limits(&[LimitType::AddPeer], 600.0)
        .unwrap();
    fleet.round();
    assert_eq!(adds_on(&fleet, 3), 4, "{:?}", fleet.log);
    fleet.settle(10, |_| {});
}

#[test]
fn regions_of_a_mib_or_less_are_not_limited() {
    let mut fleet = fleet(4, 1, opts(3));
    fleet.round();
    assert_eq!(adds_on(&fleet, 3), 4, "{:?}", fleet.log);
}

#[test]
fn a_limit_set_for_one_store_leaves_the_others_alone() {
    // Even regions can take a fourth replica only on store 3, odd ones
    // only on store 4.
    let placement = |i: usize| [vec![1, 2, 4], vec![1, 2, 3]][i % 2].clone();
    let mut fleet = fleet_on(&[1, 2, 3, 4], 4, placement, 64, opts(4));
    for s in [1, 2, 3, 4] {
        fleet
            .cluster
            .set_store_limit(s, &LimitType::ALL, 6000.0)
            .unwrap();
    }
    // Store 3 slows down to one large learner a round; store 4 does not.
    (fleet.cluster)
        .set_store_limit(3, &[LimitType::AddPeer], 6.0)
        .unwrap();
    fleet.round();
    assert_eq!(adds_on(&fleet, 3), 1, "{:?}", fleet.log);
    assert_eq!(adds_on(&fleet, 4), 2, "{:?}", fleet.log);
    let limits = fleet.cluster.store_limits();
    assert_eq!(limits[&3].add_peer, 6.0);
    assert_eq!(limits[&3].remove_peer, 6000.0);
    assert_eq!(limits[&4].add_peer, 6000.0);
}

#[test]
fn operators_asked_for_by_hand_are_not_held_back_but_take_their_tokens() {
    let (mut fleet, ids) = three_known_regions();
    // Two at once, over a bucket that holds one: both are made; the first
    // empties the bucket, the second finds nothing to take.
    for id in &ids[..2] {
        (fleet.cluster)
            .add_admin_operator(*id, AdminOp::AddPeer { store_id: 3 })
            .unwrap();
        fleet.heartbeat(*id);
    }
    assert_eq!(adds_on(&fleet, 3), 2, "{:?}", fleet.log);
    // Three replicas wanted now: the checker's learner for the third
    // region waits for the bucket to fill back up, 4 s at 250 tokens a
    // second.
    set_max_replicas(&fleet, 3);
    let third = ids[2];
    fleet.heartbeat(third);
    fleet.clock.advance(Duration::from_secs(3));
    fleet.store_heartbeats();
    fleet.heartbeat(third);
    assert_eq!(adds_on(&fleet, 3), 2, "{:?}", fleet.log);
    fleet.clock.advance(Duration::from_secs(1));
    fleet.store_heartbeats();
    fleet.heartbeat(third);
    assert_eq!(adds_on(&fleet, 3), 3, "{:?}", fleet.log);
}

/// Three large regions on stores 1 and 2, two replicas wanted (so
/// nothing to do), after a round in which PD heard of them; their ids.
fn three_known_regions() -> (Fleet, Vec<u64>) {
    let mut fleet = fleet(3, 64, opts(2));
    fleet.round();
    let ids = fleet.regions.keys().copied().collect();
    (fleet, ids)
}

fn set_max_replicas(fleet: &Fleet, n: u32) {
    let change = serde_json::Map::from_iter([("max-replicas".to_string(), n.into())]);
    fleet.cluster.update_opts(&change).unwrap();
}

#[test]
fn a_scatter_takes_no_tokens() {
    let (mut fleet, ids) = three_known_regions();
    // The group's first region stays where it is; its second moves a
    // replica to store 3, the store the group has used least.
    for id in &ids[..2] {
        let group = "t".to_string();
        (fleet.cluster)
            .add_admin_operator(*id, AdminOp::ScatterRegion { group })
            .unwrap();
    }
    // Its leadership may move first: a few heartbeats.
    for _ in 0..4 {
        fleet.heartbeat(ids[1]);
    }
    assert_eq!(adds_on(&fleet, 3), 1, "{:?}", fleet.log);
    // The bucket is still full: the checker's learner goes at once.
    set_max_replicas(&fleet, 3);
    fleet.heartbeat(ids[2]);
    assert_eq!(adds_on(&fleet, 3), 2, "{:?}", fleet.log);
}

#[test]
fn a_down_stores_replicas_are_replaced_at_the_small_region_cost() {
    // Stores 1-4; every region on 1, 2 and 3. Store 3 goes down: each
    // region's replica there is replaced on store 4 (add-peer, 1000 each
    // against store 4's bucket) and removed from store 3 (remove-peer,
    // 200 each against store 3's, a Down store's removal cost).
    let mut fleet = fleet_on(&[1, 2, 3, 4], 3, |_| vec![1, 2, 3], 64, opts(3));
    fleet.round();
    (fleet.cluster)
        .set_store_limit(4, &[LimitType::AddPeer], 6000.0)
        .unwrap();
    // Store 3 may remove one large region's peer a minute, but five of a
    // Down store's.
    (fleet.cluster)
        .set_store_limit(3, &[LimitType::RemovePeer], 1.0)
        .unwrap();
    let silent_since = fleet.clock.now_nanos();
    while fleet.clock.now_nanos() - silent_since < 5_000_000_000 {
        fleet.clock.advance(Duration::from_secs(1));
        for s in [1, 2, 4] {
            fleet.store_heartbeat(s);
        }
    }
    let ids: Vec<u64> = fleet.regions.keys().copied().collect();
    for id in &ids {
        fleet.heartbeat(*id);
    }
    assert_eq!(adds_on(&fleet, 4), 3, "{:?}", fleet.log);
}

#[test]
fn store_limits_outlive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let open = || {
        let clock = Arc::new(ManualClock::new(1_700_000_000_000_000_000));
        let meta = MetaStore::open(dir.path()).unwrap();
        Cluster::open_with_clock(meta, opts(3), clock).unwrap()
    };
    let store = |id: u64| metapb::Store {
        id,
        address: format!("127.0.0.1:{}", 20160 + id),
        version: "8.5.0".into(),
        ..Default::default()
    };
    {
        let cluster = open();
        let region = metapb::Region {
            id: cluster.alloc_id().unwrap(),
            peers: vec![metapb::Peer {
                id: cluster.alloc_id().unwrap(),
                store_id: 1,
                ..Default::default()
            }],
            ..Default::default()
        };
        cluster.bootstrap(store(1), region).unwrap();
        cluster.put_store(store(2)).unwrap();
        cluster
            .set_all_store_limits(&[LimitType::RemovePeer], 30.0)
            .unwrap();
        cluster
            .set_store_limit(2, &[LimitType::AddPeer], 5.0)
            .unwrap();
    }
    let cluster = open();
    let limits = cluster.store_limits();
    let rates = |add_peer, remove_peer| Rates {
        add_peer,
        remove_peer,
    };
    assert_eq!(limits[&1], rates(15.0, 30.0));
    assert_eq!(limits[&2], rates(5.0, 30.0));
    // A store that joins later gets the rates set for all.
    cluster.put_store(store(3)).unwrap();
    assert_eq!(cluster.store_limits()[&3], rates(15.0, 30.0));
}

#[test]
fn balance_region_moves_to_a_store_whose_limit_can_pay() {
    // Six large regions on stores 1-3, a seventh on 5, 1 and 2; store 4
    // empty and weighted to take far more than store 5, but allowed one
    // large learner a minute. Once its bucket is spent, balance-region
    // moves replicas to store 5 instead of asking for store 4 in vain.
    let placement = |i: usize| if i < 6 { vec![1, 2, 3] } else { vec![5, 1, 2] };
    let mut fleet = fleet_on(&[1, 2, 3, 4, 5], 7, placement, 64, opts(3));
    // PD hears of every region before it balances.
    fleet.round();
    (fleet.cluster)
        .add_scheduler("balance-region-scheduler")
        .unwrap();
    let heavy = Weights {
        leader: 1.0,
        region: 100.0,
    };
    fleet.cluster.set_store_weights(4, heavy).unwrap();
    (fleet.cluster)
        .set_store_limit(4, &[LimitType::AddPeer], 1.0)
        .unwrap();
    fleet.round();
    assert_eq!(adds_on(&fleet, 4), 1, "{:?}", fleet.log);
    assert!(adds_on(&fleet, 5) >= 1, "{:?}", fleet.log);
}
