//! Store limits (`pd-ctl store limit`): how fast a store takes in new
//! replicas, played through heartbeats against a manual clock.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::fleet::Fleet;
use common::{opts, ScheduleOptions};
use tikal_pd::clock::ManualClock;
use tikal_pd::cluster::Cluster;
use tikal_pd::schedule::{AdminOp, SCHEDULERS};
use tikal_pd::storage::MetaStore;
use tikal_pd::store_limit::{LimitType, Rates};
use tikal_proto::metapb;

const MIB: u64 = 1 << 20;

/// `n` regions of `size_mib` on stores 1 and 2, store 3 empty, no
/// schedulers: only the replica checker (or a request) moves anything.
fn fleet(n: usize, size_mib: u64, opts: ScheduleOptions) -> Fleet {
    let mut fleet = Fleet::new(&[1, 2, 3], n, |_| vec![1, 2], opts);
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
    let mut fleet = Fleet::new(&[1, 2, 3, 4], 4, placement, opts(4));
    for s in SCHEDULERS {
        fleet.cluster.remove_scheduler(s).unwrap();
    }
    for r in fleet.regions.values_mut() {
        r.size = 64 * MIB;
    }
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
    // Two replicas wanted, and two each: PD hears of the regions first.
    let mut fleet = fleet(3, 64, opts(2));
    fleet.round();
    let ids: Vec<u64> = fleet.regions.keys().copied().collect();
    // Two at once, over a bucket that holds one: both are made, and the
    // bucket is 1000 tokens short.
    for id in &ids[..2] {
        (fleet.cluster)
            .add_admin_operator(*id, AdminOp::AddPeer { store_id: 3 })
            .unwrap();
        fleet.heartbeat(*id);
    }
    assert_eq!(adds_on(&fleet, 3), 2, "{:?}", fleet.log);
    // Three replicas wanted now: the checker's learner for the third
    // region waits for the bucket to fill back up, 8 s at 250 tokens a
    // second.
    let three = serde_json::Map::from_iter([("max-replicas".to_string(), 3.into())]);
    fleet.cluster.update_opts(&three).unwrap();
    let third = ids[2];
    fleet.heartbeat(third);
    fleet.clock.advance(Duration::from_secs(7));
    fleet.store_heartbeats();
    fleet.heartbeat(third);
    assert_eq!(adds_on(&fleet, 3), 2, "{:?}", fleet.log);
    fleet.clock.advance(Duration::from_secs(1));
    fleet.store_heartbeats();
    fleet.heartbeat(third);
    assert_eq!(adds_on(&fleet, 3), 3, "{:?}", fleet.log);
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
