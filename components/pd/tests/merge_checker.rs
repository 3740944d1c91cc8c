//! The merge checker over a few regions (`common::fleet`): small regions
//! merge into their smaller neighbour once old enough, peers are aligned
//! first, and PD's region tree follows splits and merges.

mod common;

use std::time::Duration;

use common::fleet::{key, Fleet};
use common::ScheduleOptions;
use tikal_proto::metapb;

const MIB: u64 = 1 << 20;

/// Merging on at once (no wait after start or splits), balancing off.
fn merge_now() -> ScheduleOptions {
    ScheduleOptions {
        split_merge_interval: Duration::ZERO,
        ..Default::default()
    }
}

fn quiet_balance(fleet: &Fleet) {
    for s in [
        "balance-leader-scheduler",
        "balance-region-scheduler",
        "balance-hot-region-scheduler",
    ] {
        fleet.cluster.remove_scheduler(s).unwrap();
    }
}

/// Region ids in key order, as PD routes.
fn routes(fleet: &Fleet) -> Vec<(u64, Vec<u8>, Vec<u8>)> {
    fleet
        .cluster
        .scan_regions(b"", b"", 0)
        .into_iter()
        .map(|r| (r.region.id, r.region.start_key, r.region.end_key))
        .collect()
}

/// PD learns every region (one round with merging off), then merges by
/// `opts`' sizes again.
fn introduce(fleet: &mut Fleet) {
    quiet_balance(fleet);
    let size = fleet.cluster.opts().max_merge_region_size;
    let off = serde_json::json!({"max-merge-region-size": 0});
    fleet.cluster.update_opts(off.as_object().unwrap()).unwrap();
    assert_eq!(fleet.round(), 0);
    let on = serde_json::json!({"max-merge-region-size": size});
    fleet.cluster.update_opts(on.as_object().unwrap()).unwrap();
    fleet.log.clear();
}

/// Three regions on stores 1 2 3, known to PD; sizes in MiB as given.
fn three(sizes: [u64; 3], opts: ScheduleOptions) -> (Fleet, [u64; 3]) {
    let mut fleet = Fleet::new(&[1, 2, 3], 3, |_| vec![1, 2, 3], opts);
    let ids: Vec<u64> = fleet.regions.keys().copied().collect();
    for (id, size) in ids.iter().zip(sizes) {
        fleet.regions.get_mut(id).unwrap().size = size * MIB;
    }
    introduce(&mut fleet);
    (fleet, [ids[0], ids[1], ids[2]])
}

#[test]
fn a_small_region_merges_into_its_smaller_neighbour_and_is_dropped_from_the_tree() {
    let (mut fleet, [a, b, c]) = three([30, 1, 25], merge_now());
    assert!(fleet.heartbeat(b));
    assert_eq!(fleet.log, [format!("{b}: merge into {c}")]);
    // The target's heartbeat, its range grown at a newer version, removed
    // the source from PD's tree; both operators ended as done.
    assert_eq!(routes(&fleet), [(a, vec![], key(1)), (c, key(1), vec![])]);
    assert!(fleet.cluster.region_by_id(b).is_none());
    assert!(fleet.cluster.operators().is_empty());
    let (op, status) = fleet.cluster.operator(b).unwrap();
    assert_eq!(status.name(), "SUCCESS");
    assert_eq!(op.plan.desc, "merge-region");
    assert_eq!(op.plan.brief, format!("merge: region {b} to {c}"));
    assert_eq!(fleet.cluster.operator(c).unwrap().1.name(), "SUCCESS");
    // Neither remaining region is small enough for another merge.
    assert_eq!(fleet.settle(5, |_| {}), 1);
}

#[test]
fn the_merge_command_names_the_target_region_and_is_resent_until_done() {
    let (fleet, [_, b, c]) = three([30, 1, 25], merge_now());
    let req = fleet.request(b);
    let target = fleet.regions[&c].region.clone();
    let resp = fleet.cluster.region_heartbeat(&req).unwrap().unwrap();
    assert_eq!(resp.merge.unwrap().target.unwrap(), target);
    assert_eq!(resp.region_id, b);
    assert_eq!(resp.target_peer, req.leader);
    // The store prepares the merge (version and conf_ver go up) and
    // reports again: the command comes again, the operator still runs.
    let mut prepared = req.clone();
    let epoch = prepared
        .region
        .as_mut()
        .unwrap()
        .region_epoch
        .as_mut()
        .unwrap();
    epoch.version += 1;
    epoch.conf_ver += 1;
    let again = fleet.cluster.region_heartbeat(&prepared).unwrap().unwrap();
    assert_eq!(again.merge.unwrap().target.unwrap(), target);
    // The target is held meanwhile: it gets no operator of its own.
    assert!(fleet
        .cluster
        .region_heartbeat(&fleet.request(c))
        .unwrap()
        .is_none());
    assert_eq!(fleet.cluster.operators().len(), 2);
}

#[test]
fn a_merge_whose_source_split_before_preparing_it_is_dropped_with_its_target_half() {
    let (fleet, [_, b, c]) = three([30, 1, 25], merge_now());
    let req = fleet.request(b);
    let resp = fleet.cluster.region_heartbeat(&req).unwrap().unwrap();
    assert!(resp.merge.is_some());
    assert_eq!(fleet.cluster.operators().len(), 2);
    // The source splits before it prepares the merge (found by
    // tests/nemesis.rs): the merge, refused by the store from now on, must
    // not hold both regions until the operator times out.
    let mut split = req.clone();
    let region = split.region.as_mut().unwrap();
    let mut middle = region.start_key.clone();
    middle.push(0x80);
    assert!(middle < region.end_key);
    region.end_key = middle;
    region.region_epoch.as_mut().unwrap().version += 1;
    let again = fleet.cluster.region_heartbeat(&split).unwrap();
    // The merge into c is dropped and c released. The source, still
    // small, may be planned anew, but not into c: it no longer touches it.
    assert_eq!(fleet.cluster.operator(c).unwrap().1.name(), "CANCEL");
    assert!(fleet
        .cluster
        .operators()
        .iter()
        .all(|op| { op.region_id != c && op.merge_partner() != Some(c) }));
    if let Some(merge) = again.and_then(|r| r.merge) {
        assert_ne!(merge.target.unwrap().id, c);
    }
}

#[test]
fn a_merge_whose_source_gained_a_peer_before_preparing_it_is_dropped_with_its_target_half() {
    let (fleet, [_, b, c]) = three([30, 1, 25], merge_now());
    let req = fleet.request(b);
    let resp = fleet.cluster.region_heartbeat(&req).unwrap().unwrap();
    assert!(resp.merge.is_some());
    // A learner an operator dropped just before had already added (found
    // by tests/nemesis.rs, seed 11): the source's stores no longer match
    // the target's, so the store refuses the merge for good.
    let mut grown = req.clone();
    let region = grown.region.as_mut().unwrap();
    region.peers.push(metapb::Peer {
        id: 999,
        store_id: 99,
        role: metapb::PeerRole::Learner as i32,
        ..Default::default()
    });
    region.region_epoch.as_mut().unwrap().conf_ver += 1;
    let again = fleet.cluster.region_heartbeat(&grown).unwrap();
    assert_eq!(fleet.cluster.operator(c).unwrap().1.name(), "CANCEL");
    if let Some(merge) = again.and_then(|r| r.merge) {
        assert_ne!(merge.target.unwrap().id, c);
    }
}

#[test]
fn regions_over_max_merge_region_keys_are_not_merged() {
    let opts = ScheduleOptions {
        max_merge_region_keys: 50,
        ..merge_now()
    };
    // 100 keys each.
    let (mut fleet, _) = three([1, 1, 1], opts);
    assert_eq!(fleet.settle(3, |_| {}), 1, "{:?}", fleet.log);
}

#[test]
fn a_region_that_just_took_in_a_merge_is_neither_source_nor_target_until_measured() {
    let (mut fleet, [a, b, c]) = three([1, 1, 1], merge_now());
    // a merges into b, which reports its grown range with size 0 until
    // its store measures it: c, also small, waits rather than merging
    // into a region that would pass for empty; nor is b merged on.
    fleet.round();
    assert_eq!(fleet.log, [format!("{a}: merge into {b}")]);
    // Measured (2 MiB), b is a target again.
    fleet.log.clear();
    fleet.round();
    assert_eq!(fleet.log.len(), 1, "{:?}", fleet.log);
    assert_eq!(routes(&fleet).len(), 1);
    assert!(fleet.cluster.region_by_id(a).is_none());
    assert!(fleet.cluster.region_by_id(b).is_some() != fleet.cluster.region_by_id(c).is_some());
}

#[test]
fn regions_that_never_reported_a_size_are_not_merged() {
    let (mut fleet, [a, b, c]) = three([0, 0, 0], merge_now());
    assert_eq!(fleet.settle(3, |_| {}), 1, "{:?}", fleet.log);
    fleet.regions.get_mut(&b).unwrap().size = 21 * MIB;
    fleet.regions.get_mut(&c).unwrap().size = MIB;
    fleet.round();
    // c merges into b, its one neighbour; b is too large to merge, and a
    // never reported a size.
    assert_eq!(fleet.log, [format!("{c}: merge into {b}")]);
    assert_eq!(fleet.settle(3, |_| {}), 1, "{:?}", fleet.log);
    assert_eq!(routes(&fleet).len(), 2);
    assert!(fleet.cluster.region_by_id(a).is_some());
}

#[test]
fn no_merge_within_split_merge_interval_of_pd_start_or_of_a_split() {
    let opts = ScheduleOptions {
        split_merge_interval: Duration::from_secs(3600),
        ..Default::default()
    };
    let (mut fleet, [a, b, c]) = three([30, 1, 25], opts);
    assert_eq!(fleet.settle(3, |_| {}), 1, "PD just started");
    fleet.clock.advance(Duration::from_secs(3600));
    fleet.store_heartbeats();

    // c splits at key(2) + "m": the new region and c are both young.
    let mut split_key = key(2);
    split_key.push(b'm');
    let c_region = fleet.regions[&c].region.clone();
    let new_id = fleet.cluster.alloc_id().unwrap();
    let mut left = c_region.clone();
    left.id = new_id;
    left.end_key = split_key.clone();
    for p in &mut left.peers {
        p.id = fleet.cluster.alloc_id().unwrap();
    }
    let mut right = c_region;
    right.start_key = split_key;
    for r in [&mut left, &mut right] {
        r.region_epoch.as_mut().unwrap().version += 1;
    }
    fleet
        .cluster
        .report_batch_split(&[left.clone(), right.clone()])
        .unwrap();
    let mut young = fleet.regions[&c].clone();
    young.region = right;
    young.size = MIB;
    fleet.regions.insert(c, young.clone());
    fleet.regions.insert(
        new_id,
        common::fleet::SimRegion {
            region: left,
            ..young
        },
    );

    // b is old enough; of its neighbours only a is: b merges into a.
    fleet.round();
    assert_eq!(fleet.log, [format!("{b}: merge into {a}")]);
    // The split halves wait out the interval, then merge, and so on
    // until one region is left (a, 30 MiB, is the only large one).
    fleet.log.clear();
    for _ in 0..5 {
        assert_eq!(fleet.round(), 0, "{:?}", fleet.log);
    }
    fleet.clock.advance(Duration::from_secs(3600));
    fleet.store_heartbeats();
    fleet.settle(10, |_| {});
    assert!(
        fleet.log.contains(&format!("{c}: merge into {new_id}")),
        "{:?}",
        fleet.log
    );
    assert_eq!(routes(&fleet), [(a, vec![], vec![])]);
}

#[test]
fn peers_move_onto_the_target_stores_before_the_merge() {
    let placement = |i: usize| if i == 2 { vec![4, 1, 2] } else { vec![3, 1, 2] };
    let mut fleet = Fleet::new(&[1, 2, 3, 4], 3, placement, merge_now());
    let ids: Vec<u64> = fleet.regions.keys().copied().collect();
    let (b, c) = (ids[1], ids[2]);
    fleet.regions.get_mut(&ids[0]).unwrap().size = 30 * MIB;
    fleet.regions.get_mut(&c).unwrap().size = 25 * MIB;
    introduce(&mut fleet);
    fleet.settle(20, |_| {});
    // b was led from store 3, which c has no peer on.
    let steps: Vec<&String> = fleet
        .log
        .iter()
        .filter(|l| l.starts_with(&format!("{b}:")))
        .collect();
    assert_eq!(
        steps,
        [
            &format!("{b}: add learner on store 4"),
            &format!("{b}: promote on store 4"),
            &format!("{b}: transfer leader to store 4"),
            &format!("{b}: remove store 3"),
            &format!("{b}: merge into {c}"),
        ]
    );
    assert!(fleet.cluster.region_by_id(b).is_none());
    let c_now = fleet.cluster.region_by_id(c).unwrap();
    assert_eq!(c_now.region.start_key, key(1));
    // One operator did it all: the peers its own steps moved do not make
    // the merge look stale when its last step comes.
    let (op, status) = fleet.cluster.operator(b).unwrap();
    assert_eq!((op.steps().len(), status.name()), (5, "SUCCESS"));
}

#[test]
fn a_split_report_reshapes_the_tree_and_heartbeats_keep_it() {
    let mut fleet = Fleet::new(&[1, 2, 3], 1, |_| vec![1, 2, 3], ScheduleOptions::default());
    fleet.round();
    let parent = fleet.regions.values().next().unwrap().clone();
    let id = parent.region.id;
    let piece = |new_id: u64, start: &[u8], end: &[u8]| {
        let mut r = parent.region.clone();
        r.id = new_id;
        r.start_key = start.to_vec();
        r.end_key = end.to_vec();
        r.region_epoch.as_mut().unwrap().version += 2;
        r
    };
    let (x, y) = (
        fleet.cluster.alloc_id().unwrap(),
        fleet.cluster.alloc_id().unwrap(),
    );
    let report = [
        piece(x, b"", b"g"),
        piece(y, b"g", b"p"),
        piece(id, b"p", b""),
    ];
    fleet.cluster.report_batch_split(&report).unwrap();
    let expect = vec![
        (x, b"".to_vec(), b"g".to_vec()),
        (y, b"g".to_vec(), b"p".to_vec()),
        (id, b"p".to_vec(), b"".to_vec()),
    ];
    assert_eq!(routes(&fleet), expect);
    // Led from the parent's leader store until they report.
    let leader = |rid: u64| {
        fleet
            .cluster
            .region_by_id(rid)
            .unwrap()
            .leader
            .unwrap()
            .store_id
    };
    assert_eq!([leader(x), leader(y), leader(id)], [1, 1, 1]);
    // The old parent's report changes nothing now.
    fleet.cluster.region_heartbeat(&fleet.request(id)).unwrap();
    assert_eq!(routes(&fleet), expect);
    // Each reports; the tree stays.
    fleet.regions.clear();
    for r in &report {
        fleet.regions.insert(
            r.id,
            common::fleet::SimRegion {
                region: r.clone(),
                ..parent.clone()
            },
        );
    }
    fleet.round();
    assert_eq!(routes(&fleet), expect);
    // A merge: y takes x's range at a newer version; x is dropped.
    let mut grown = report[1].clone();
    grown.start_key = vec![];
    grown.region_epoch.as_mut().unwrap().version += 1;
    fleet.regions.remove(&x);
    fleet.regions.get_mut(&y).unwrap().region = grown;
    fleet.heartbeat(y);
    assert_eq!(
        routes(&fleet),
        [
            (y, b"".to_vec(), b"p".to_vec()),
            (id, b"p".to_vec(), b"".to_vec())
        ]
    );
}

/// Three regions whose boundaries are DEFAULT's raw range (`r\0\0\0`,
/// `r\0\0\x01`, encoded), the middle one small.
fn around_default_raw() -> Fleet {
    let mut fleet = Fleet::new(&[1, 2, 3], 3, |_| vec![1, 2, 3], merge_now());
    let bounds = [
        tikal_pd::keyspace::encoded(b"r\0\0\0"),
        tikal_pd::keyspace::encoded(b"r\0\0\x01"),
    ];
    let ids: Vec<u64> = fleet.regions.keys().copied().collect();
    for (i, id) in ids.iter().enumerate() {
        let r = fleet.regions.get_mut(id).unwrap();
        if i > 0 {
            r.region.start_key = bounds[i - 1].clone();
        }
        if i < 2 {
            r.region.end_key = bounds[i].clone();
        }
        r.size = [30, 1, 25][i] * MIB;
    }
    introduce(&mut fleet);
    fleet
}

#[test]
fn no_merge_across_a_keyspace_boundary() {
    // Before DEFAULT is split off, the small region merges as any would.
    let mut fleet = around_default_raw();
    assert!(fleet.settle(5, |_| {}) > 1);
    assert_eq!(routes(&fleet).len(), 2);

    let mut fleet = around_default_raw();
    let cluster = fleet.cluster.clone();
    assert!(cluster.keyspaces.split_default(&cluster.meta).unwrap());
    assert_eq!(fleet.settle(5, |_| {}), 1, "{:?}", fleet.log);
    assert_eq!(routes(&fleet).len(), 3);
    // Nor by hand.
    let ids: Vec<u64> = routes(&fleet).iter().map(|r| r.0).collect();
    let merge = tikal_pd::schedule::AdminOp::MergeRegion { target: ids[0] };
    assert_eq!(
        cluster.add_admin_operator(ids[1], merge),
        Err(format!(
            "the boundary between regions {} and {} is a keyspace's",
            ids[1], ids[0]
        ))
    );
}

#[test]
fn a_merge_asked_for_by_hand_needs_no_small_or_old_region_only_a_healthy_neighbour() {
    use tikal_pd::schedule::AdminOp;
    // Regions too big and too young for the merge checker.
    let (mut fleet, [a, b, c]) = three([30, 30, 30], ScheduleOptions::default());
    let merge = |target| AdminOp::MergeRegion { target };
    let ask = |fleet: &Fleet, source, op| fleet.cluster.add_admin_operator(source, op);
    assert_eq!(
        ask(&fleet, a, merge(c)),
        Err(format!("regions {a} and {c} are not adjacent"))
    );
    assert_eq!(
        ask(&fleet, a, merge(999)),
        Err("region 999 not found".to_string())
    );
    // `pd-ctl operator add merge-region b c`: the target is held too.
    fleet.cluster.add_admin_operator(b, merge(c)).unwrap();
    let free = ask(&fleet, a, AdminOp::TransferLeader { to_store: 2 });
    assert_eq!(free, Ok(()), "a has no part in the merge");
    assert_eq!(
        ask(&fleet, c, merge(b)),
        Err(format!("region {c} already has an operator"))
    );
    assert!(fleet.heartbeat(b));
    assert_eq!(fleet.log, [format!("{b}: merge into {c}")]);
    assert_eq!(routes(&fleet)[1], (c, key(1), vec![]));
    let (op, status) = fleet.cluster.operator(b).unwrap();
    assert_eq!(status.name(), "SUCCESS");
    assert_eq!(op.plan.desc, "admin-merge-region");
    assert_eq!(op.plan.brief, format!("merge: region {b} to {c}"));
}

#[test]
fn a_paused_merge_checker_merges_nothing_until_resumed() {
    let (mut fleet, [_, b, c]) = three([30, 1, 25], merge_now());
    fleet.cluster.pause_checker("merge", 600).unwrap();
    assert!(!fleet.heartbeat(b), "{:?}", fleet.log);
    fleet.cluster.pause_checker("merge", 0).unwrap();
    assert!(fleet.heartbeat(b));
    assert_eq!(fleet.log, [format!("{b}: merge into {c}")]);
}

#[test]
fn with_one_way_merge_a_region_merges_only_into_the_next_one() {
    // The previous neighbour is the smaller: it takes the merge ...
    let (mut fleet, [a, b, _]) = three([25, 1, 30], merge_now());
    assert!(fleet.heartbeat(b));
    assert_eq!(fleet.log, [format!("{b}: merge into {a}")]);
    // ... unless merges go one way only.
    let one_way = ScheduleOptions {
        one_way_merge: true,
        ..merge_now()
    };
    let (mut fleet, [_, b, c]) = three([25, 1, 30], one_way);
    assert!(fleet.heartbeat(b));
    assert_eq!(fleet.log, [format!("{b}: merge into {c}")]);
}

/// Three regions of `sizes` MiB on stores 1-3, with store 4 added: stores
/// 1 and 2 share a host and store 4 is on its own, so every region would
/// be better off with a replica moved there.
fn misplaced(sizes: [u64; 3], opts: ScheduleOptions) -> (Fleet, [u64; 3]) {
    let opts = common::with_location_labels(opts, &["host"]);
    let (fleet, ids) = three(sizes, opts);
    fleet.add_store(4);
    for (id, host) in [(1, "h1"), (2, "h1"), (3, "h2"), (4, "h3")] {
        common::set_labels(&fleet.cluster, id, &[("host", host)]);
    }
    (fleet, ids)
}

#[test]
fn a_paused_replica_checker_leaves_the_merge_checker_asked() {
    let (mut fleet, [_, b, c]) = misplaced([30, 1, 25], merge_now());
    fleet.cluster.pause_checker("replica", 600).unwrap();
    assert!(fleet.heartbeat(b));
    assert_eq!(fleet.log, [format!("{b}: merge into {c}")]);
    // Resumed, the replica checker's move comes first.
    fleet.cluster.pause_checker("replica", 0).unwrap();
    fleet.log.clear();
    assert!(fleet.heartbeat(c));
    assert_eq!(fleet.log, [format!("{c}: add learner on store 4")]);
}

#[test]
fn a_replica_move_over_its_limit_leaves_the_merge_checker_asked() {
    let limited = ScheduleOptions {
        replica_schedule_limit: 0,
        ..merge_now()
    };
    let (mut fleet, [_, b, c]) = misplaced([30, 1, 25], limited);
    assert!(fleet.heartbeat(b));
    assert_eq!(fleet.log, [format!("{b}: merge into {c}")]);
}

#[test]
fn a_merge_hands_leadership_to_no_store_whose_leaders_are_evicted() {
    // The small middle region is on stores 1-3 and led from 1; its
    // neighbours are on 4, 2, 3. To merge, its peer moves from 1 to 4,
    // but store 4 may not lead: leadership goes to a voter that stays.
    let placement = |i: usize| if i == 1 { vec![1, 2, 3] } else { vec![4, 2, 3] };
    let mut fleet = Fleet::new(&[1, 2, 3, 4], 3, placement, merge_now());
    let ids: Vec<u64> = fleet.regions.keys().copied().collect();
    for (id, size) in ids.iter().zip([30, 1, 25]) {
        fleet.regions.get_mut(id).unwrap().size = size * MIB;
    }
    introduce(&mut fleet);
    fleet
        .cluster
        .hold_store(tikal_pd::schedule::LeaderHold::Evict, 4)
        .unwrap();
    fleet.settle(50, |_| {});
    let b = ids[1];
    assert!(
        fleet.cluster.region_by_id(b).is_none(),
        "merged: {:?}",
        fleet.log
    );
    assert!(
        !fleet.log.iter().any(|l| l.contains("leader to store 4")),
        "{:?}",
        fleet.log
    );
    assert!(fleet.regions.values().all(|r| r.leader_store != 4));
}
