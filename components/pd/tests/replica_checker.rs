//! The replica checker and its operators, driven through region
//! heartbeats: each test is a scenario, and its log is what PD asked of
//! the region's leader, one line per heartbeat (`-`: nothing).

mod common;

use std::time::Duration;

use common::{opts, peer, ScheduleOptions, Sim, QUIET};
use tikal_pd::operator::OpStatus;
use tikal_pd::schedule::{LeaderHold, StoreError};
use tikal_proto::{metapb, pdpb};

#[test]
fn a_lone_replica_grows_to_three_voters_one_learner_at_a_time() {
    let mut sim = Sim::new(&[1, 2, 3], &[1], opts(3));
    assert_eq!(
        sim.run(),
        [
            "add learner on store 2",
            QUIET, // the learner is catching up
            "promote on store 2",
            "add learner on store 3",
            QUIET,
            "promote on store 3",
            QUIET,
        ]
    );
    assert_eq!(sim.voter_stores(), [1, 2, 3]);
}

#[test]
fn with_two_stores_a_region_keeps_two_voters_and_asks_nothing_more() {
    let mut sim = Sim::new(&[1, 2], &[1], opts(3));
    assert_eq!(
        sim.run(),
        ["add learner on store 2", QUIET, "promote on store 2", QUIET]
    );
    assert_eq!(sim.voter_stores(), [1, 2]);
    assert_eq!(sim.run(), [QUIET]);
}

#[test]
fn new_replicas_go_to_the_store_with_fewest_regions() {
    let mut sim = Sim::new(&[1, 2, 3], &[1], opts(2));
    // Another region already has a peer on store 2.
    let mut other = sim.request();
    let mut r = other.region.take().unwrap();
    r.id = 7;
    r.start_key = b"m".to_vec();
    r.peers = vec![metapb::Peer {
        id: 700,
        store_id: 2,
        ..Default::default()
    }];
    sim.region.end_key = b"m".to_vec();
    other.leader = r.peers.first().cloned();
    other.region = Some(r);
    // (Region 7 is itself short of replicas; only its placement matters.)
    sim.cluster.region_heartbeat(&other).unwrap();
    assert_eq!(sim.step(), "add learner on store 3");
}

#[test]
fn a_store_low_on_space_gets_no_new_replica() {
    let mut sim = Sim::new(&[1, 2, 3], &[1], opts(3));
    // Under a fifth of its capacity free (and under 8 GiB: not young).
    sim.available.insert(2, 1 << 30);
    sim.store_heartbeats();
    let log = sim.run();
    assert_eq!(
        log,
        ["add learner on store 3", QUIET, "promote on store 3", QUIET]
    );
    assert_eq!(sim.voter_stores(), [1, 3]);
    // With room again it gets the third.
    sim.available.insert(2, 6 << 30);
    sim.store_heartbeats();
    assert_eq!(sim.step(), "add learner on store 2");
}

#[test]
fn learners_are_promoted_only_once_caught_up() {
    let mut sim = Sim::new(&[1, 2, 3], &[1, 2], opts(3));
    let learner = peer(3, metapb::PeerRole::Learner);
    sim.pending.push(learner.id);
    sim.region.peers.push(learner);
    assert_eq!(sim.step(), QUIET);
    assert_eq!(sim.step(), "promote on store 3");
    assert_eq!(sim.run(), [QUIET]);
    assert_eq!(sim.voter_stores(), [1, 2, 3]);
}

#[test]
fn a_down_stores_replica_is_replaced_then_removed() {
    let mut sim = Sim::new(&[1, 2, 3, 4], &[1, 2, 3], opts(3));
    assert_eq!(sim.run(), [QUIET]);

    sim.silent.insert(3);
    sim.advance(Duration::from_secs(2));
    assert_eq!(sim.state_name(3), "Up");
    assert_eq!(sim.run(), [QUIET], "silent, not yet down");

    sim.advance(Duration::from_secs(2));
    assert_eq!(sim.state_name(3), "Down");
    assert_eq!(
        sim.run(),
        [
            "add learner on store 4",
            QUIET,
            "promote on store 4",
            "remove store 3",
            QUIET,
        ]
    );
    assert_eq!(sim.voter_stores(), [1, 2, 4]);
}

#[test]
fn a_down_replica_stays_when_no_store_can_take_its_place() {
    let mut sim = Sim::new(&[1, 2, 3], &[1, 2, 3], opts(3));
    sim.silent.insert(3);
    sim.advance(Duration::from_secs(4));
    assert_eq!(sim.state_name(3), "Down");
    assert_eq!(sim.run(), [QUIET]);
    assert_eq!(sim.voter_stores(), [1, 2, 3]);
}

#[test]
fn an_offline_leader_hands_over_before_its_replica_is_removed_then_the_store_is_tombstone() {
    let mut sim = Sim::new(&[1, 2, 3, 4], &[1, 2, 3], opts(3));
    sim.step();
    sim.cluster.remove_store(1, false).unwrap();
    assert_eq!(sim.state_name(1), "Offline");
    assert_eq!(
        sim.run(),
        [
            "add learner on store 4",
            QUIET,
            "promote on store 4",
            "transfer leader to store 2",
            "remove store 1",
            QUIET,
        ]
    );
    assert_eq!(sim.voter_stores(), [2, 3, 4]);
    assert_eq!(sim.state_name(1), "Tombstone");

    let gone = sim.cluster.store(1).unwrap().meta;
    assert_eq!(gone.state, metapb::StoreState::Tombstone as i32);
    assert_eq!(gone.node_state, metapb::NodeState::Removed as i32);
    let refused = sim.cluster.put_store(gone).unwrap_err();
    assert_eq!(refused.kind, pdpb::ErrorType::StoreTombstone);
    let refused = sim
        .cluster
        .store_heartbeat(pdpb::StoreStats {
            store_id: 1,
            ..Default::default()
        })
        .unwrap_err();
    assert_eq!(refused.kind, pdpb::ErrorType::StoreTombstone);
    assert!(matches!(
        sim.cluster.remove_store(1, false),
        Err(StoreError::Removed(1))
    ));
}

#[test]
fn an_offline_store_without_replicas_becomes_tombstone_at_its_next_heartbeat() {
    let sim = Sim::new(&[1, 2, 3, 4], &[1, 2, 3], opts(3));
    sim.cluster.remove_store(4, false).unwrap();
    assert_eq!(sim.state_name(4), "Offline");
    sim.store_heartbeats();
    assert_eq!(sim.state_name(4), "Tombstone");
}

#[test]
fn an_offline_store_that_died_empty_becomes_tombstone_at_another_stores_heartbeat() {
    let mut sim = Sim::new(&[1, 2, 3, 4], &[1, 2, 3], opts(3));
    sim.silent.insert(4);
    sim.cluster.remove_store(4, false).unwrap();
    sim.store_heartbeats();
    assert_eq!(sim.state_name(4), "Tombstone");
    // Its address is free again for a store that replaces it.
    let address = sim.cluster.store(4).unwrap().meta.address;
    let replacement = metapb::Store {
        id: 5,
        address,
        version: "8.5.0".into(),
        ..Default::default()
    };
    sim.cluster.put_store(replacement).unwrap();
}

#[test]
fn store_removal_is_refused_for_unknown_stores_and_when_too_few_would_stay_up() {
    let sim = Sim::new(&[1, 2, 3], &[1, 2, 3], opts(3));
    assert!(matches!(
        sim.cluster.remove_store(9, false),
        Err(StoreError::NotFound(9))
    ));
    let err = sim.cluster.remove_store(3, false).unwrap_err();
    assert!(matches!(err, StoreError::NotEnough { up: 2, need: 3, .. }));
    assert_eq!(
        err.to_string(),
        "[PD:core:ErrStoresNotEnough]can not remove store 3 since the number of up stores \
         would be 2 while need 3"
    );
    assert_eq!(sim.state_name(3), "Up");
}

#[test]
fn an_extra_replica_goes_from_a_store_that_is_not_up_and_the_leader_moves_first() {
    // Store 4 leads but has stopped its store heartbeats (Disconnected).
    let long_down = common::ScheduleOptions {
        max_store_down_time: Duration::from_secs(3600),
        ..opts(3)
    };
    let mut sim = Sim::new(&[1, 2, 3, 4], &[4, 1, 2, 3], long_down);
    sim.silent.insert(4);
    sim.advance(Duration::from_secs(25));
    assert_eq!(sim.state_name(4), "Disconnected");
    assert_eq!(
        sim.run(),
        ["transfer leader to store 1", "remove store 4", QUIET]
    );
    assert_eq!(sim.voter_stores(), [1, 2, 3]);
}

#[test]
fn an_extra_replica_on_healthy_stores_is_never_the_leader() {
    let mut sim = Sim::new(&[1, 2, 3, 4], &[4, 1, 2, 3], opts(3));
    assert_eq!(sim.run(), ["remove store 3", QUIET]);
    assert_eq!(sim.voter_stores(), [1, 2, 4]);
}

#[test]
fn a_step_not_carried_out_is_resent_and_the_operator_times_out_and_is_retried() {
    let mut sim = Sim::new(&[1, 2], &[1], opts(3));
    let first = sim.heartbeat().unwrap();
    let added = |r: &pdpb::RegionHeartbeatResponse| {
        r.change_peer_v2.as_ref().unwrap().changes[0]
            .peer
            .clone()
            .unwrap()
    };
    sim.advance(Duration::from_secs(5));
    assert_eq!(sim.heartbeat(), Some(first.clone()), "re-sent unchanged");

    // Adding a learner to a 3 MiB region may take operator-timeout (10 s)
    // and 6 s a MiB.
    sim.advance(Duration::from_secs(22));
    assert_eq!(sim.cluster.operator(1).unwrap().1, OpStatus::Running);
    sim.advance(Duration::from_secs(2));
    let (op, status) = sim.cluster.operator(1).unwrap();
    assert_eq!(status, OpStatus::Timeout);
    assert_eq!(op.plan.desc, "make-up-replica");

    let retry = sim.heartbeat().unwrap();
    assert_eq!(added(&retry).store_id, 2);
    assert_ne!(added(&retry).id, added(&first).id, "a fresh operator");
    assert_eq!(sim.cluster.operator(1).unwrap().1, OpStatus::Running);
    sim.apply(&retry);
    assert_eq!(sim.run(), [QUIET, "promote on store 2", QUIET]);
}

#[test]
fn an_operator_overtaken_by_another_membership_change_is_dropped() {
    let mut sim = Sim::new(&[1, 2, 3], &[1], opts(3));
    assert_eq!(sim.step(), "add learner on store 2");
    // Someone else adds (and promotes) a voter on store 3 meanwhile.
    sim.region.peers.push(peer(3, metapb::PeerRole::Voter));
    sim.region.region_epoch.as_mut().unwrap().conf_ver += 2;
    // The learner on 2 is kept and promoted by a fresh plan.
    assert_eq!(sim.run(), [QUIET, "promote on store 2", QUIET]);
    assert_eq!(sim.voter_stores(), [1, 2, 3]);
    let (_, status) = sim.cluster.operator(1).unwrap();
    assert_eq!(status, OpStatus::Success);
}

#[test]
fn membership_changes_use_change_peer_before_5_0_and_change_peer_v2_after() {
    let mut old = Sim::with_version(&[1, 2], &[1], opts(3), "4.0.16");
    let r = old.heartbeat().unwrap();
    assert!(r.change_peer_v2.is_none());
    let change = r.change_peer.unwrap();
    assert_eq!(
        change.change_type,
        tikal_proto::eraftpb::ConfChangeType::AddLearnerNode as i32
    );
    assert_eq!(change.peer.unwrap().role, metapb::PeerRole::Learner as i32);

    let mut new = Sim::new(&[1, 2], &[1], opts(3));
    let r = new.heartbeat().unwrap();
    assert!(r.change_peer.is_none());
    assert_eq!(r.change_peer_v2.unwrap().changes.len(), 1);
    assert_eq!(r.header.unwrap().cluster_id, new.cluster.cluster_id);
}

/// Stores 1 to 6, two on each of hosts h1, h2, h3.
fn on_hosts(sim: &Sim) {
    for id in 1..=6u64 {
        let host = format!("h{}", id.div_ceil(2));
        common::set_labels(&sim.cluster, id, &[("host", &host)]);
    }
}

fn hosts(sim: &Sim) -> Vec<u64> {
    let mut h: Vec<u64> = sim.voter_stores().iter().map(|s| s.div_ceil(2)).collect();
    h.sort_unstable();
    h
}

#[test]
fn with_location_labels_replicas_go_to_distinct_hosts() {
    let opts = common::with_location_labels(opts(3), &["host"]);
    let mut sim = Sim::new(&[1, 2, 3, 4, 5, 6], &[1], opts);
    on_hosts(&sim);
    sim.run();
    // By region count alone stores 2 and 3 would take them (2 is on h1).
    assert_eq!(sim.voter_stores(), vec![1, 3, 5]);
    assert_eq!(hosts(&sim), vec![1, 2, 3]);
}

#[test]
fn a_replica_sharing_a_host_moves_to_a_better_location() {
    let opts = common::with_location_labels(opts(3), &["host"]);
    let mut sim = Sim::new(&[1, 2, 3, 4, 5, 6], &[1, 2, 3], opts);
    on_hosts(&sim);
    let log = sim.run();
    assert_eq!(
        log,
        [
            "add learner on store 5",
            "-",
            "promote on store 5",
            "remove store 2",
            "-"
        ]
    );
    let (op, status) = sim.cluster.operator(1).unwrap();
    assert_eq!(
        (op.plan.desc.as_str(), status),
        ("move-to-better-location", OpStatus::Success)
    );
    assert_eq!(hosts(&sim), vec![1, 2, 3]);
    // Spread as far as the labels allow: nothing more moves.
    assert_eq!(sim.run(), [QUIET]);
}

#[test]
fn an_extra_replica_is_removed_where_it_shares_a_host() {
    let opts = common::with_location_labels(opts(3), &["host"]);
    let mut sim = Sim::new(&[1, 2, 3, 4, 5, 6], &[1, 2, 3, 5], opts);
    on_hosts(&sim);
    // By region count and id alone store 5 would go.
    assert_eq!(sim.run()[0], "remove store 2");
    assert_eq!(sim.voter_stores(), vec![1, 3, 5]);
}

#[test]
fn with_an_isolation_level_a_region_stays_short_rather_than_share_a_zone() {
    // Stores 1, 2 in zone z1; 3, 4 in z2: room for two zones only.
    let mut opts = common::with_location_labels(opts(3), &["zone", "host"]);
    opts.isolation_level = "zone".into();
    let mut sim = Sim::new(&[1, 2, 3, 4], &[1], opts);
    for id in 1..=4u64 {
        let zone = format!("z{}", id.div_ceil(2));
        let host = format!("h{id}");
        common::set_labels(&sim.cluster, id, &[("zone", &zone), ("host", &host)]);
    }
    sim.run();
    // Without the isolation level a third replica would go to store 2.
    assert_eq!(sim.voter_stores(), vec![1, 3]);
}

#[test]
fn repairs_pass_over_a_store_weighted_zero() {
    let mut sim = Sim::new(&[1, 2, 3, 4, 5], &[1, 2, 3], opts(3));
    let zero = tikal_pd::stores::Weights {
        leader: 0.0,
        region: 0.0,
    };
    sim.cluster.set_store_weights(4, zero).unwrap();
    sim.cluster.set_store_weights(2, zero).unwrap();
    // The leader's store 1 is deleted: by counts alone its replica would go
    // to store 4 and its leadership to store 2, both weighted 0.
    sim.cluster.remove_store(1, false).unwrap();
    let log = sim.run();
    assert_eq!(log[0], "add learner on store 5", "{log:?}");
    assert!(
        log.contains(&"transfer leader to store 3".to_string()),
        "{log:?}"
    );
    assert_eq!(sim.voter_stores(), [2, 3, 5]);
}

/// Asks for a peer on store 4, has `gone` happen to store 4 before the
/// region's next heartbeat, and checks that the operator is dropped
/// without a learner placed there.
fn add_peer_dropped_when(gone: impl FnOnce(&mut Sim)) {
    let mut sim = Sim::new(&[1, 2, 3, 4, 5], &[1, 2, 3], opts(3));
    assert_eq!(sim.run(), [QUIET]);
    let add = tikal_pd::schedule::AdminOp::AddPeer { store_id: 4 };
    sim.cluster.add_admin_operator(1, add).unwrap();
    gone(&mut sim);
    assert_ne!(sim.step(), "add learner on store 4");
    let (op, status) = sim.cluster.operator(1).unwrap();
    assert_eq!(
        (op.plan.desc.as_str(), status),
        ("admin-add-peer", OpStatus::Cancel)
    );
    assert!(sim.peer_on(4).is_none());
    assert_eq!(sim.run(), [QUIET]);
}

#[test]
fn an_operator_placing_on_a_store_taken_out_of_service_is_dropped() {
    add_peer_dropped_when(|sim| sim.cluster.remove_store(4, false).unwrap());
}

#[test]
fn an_operator_placing_on_a_store_gone_down_is_dropped() {
    // Silent past max-store-down-time: the learner would wait there until
    // the operator timed out.
    add_peer_dropped_when(|sim| {
        sim.silent.insert(4);
        sim.advance(Duration::from_secs(4));
        assert_eq!(sim.state_name(4), "Down");
    });
}

/// Switches one of the replica checker's rules (`enable-*`) online, as
/// `pd-ctl config set` does (it sends the value as a string).
fn switch(sim: &Sim, key: &str, on: bool) {
    let change = serde_json::Map::from_iter([(key.to_string(), on.to_string().into())]);
    sim.cluster.update_opts(&change).unwrap();
}

#[test]
fn each_repair_rule_can_be_switched_off_and_on_online() {
    // Make up a missing replica.
    let mut sim = Sim::new(&[1, 2, 3], &[1, 2], opts(3));
    switch(&sim, "enable-make-up-replica", false);
    assert_eq!(sim.run(), [QUIET]);
    switch(&sim, "enable-make-up-replica", true);
    assert_eq!(sim.run()[0], "add learner on store 3");

    // Remove one too many.
    let mut sim = Sim::new(&[1, 2, 3, 4], &[1, 2, 3, 4], opts(3));
    switch(&sim, "enable-remove-extra-replica", false);
    assert_eq!(sim.run(), [QUIET]);
    switch(&sim, "enable-remove-extra-replica", true);
    assert_eq!(sim.run()[0], "remove store 4");

    // Replace a Down store's replica.
    let mut sim = Sim::new(&[1, 2, 3, 4], &[1, 2, 3], opts(3));
    switch(&sim, "enable-remove-down-replica", false);
    sim.silent.insert(3);
    sim.advance(Duration::from_secs(4));
    assert_eq!(sim.state_name(3), "Down");
    assert_eq!(sim.run(), [QUIET]);
    switch(&sim, "enable-remove-down-replica", true);
    assert_eq!(sim.run()[0], "add learner on store 4");

    // Move an Offline store's replica: the store stays Offline meanwhile.
    let mut sim = Sim::new(&[1, 2, 3, 4], &[1, 2, 3], opts(3));
    switch(&sim, "enable-replace-offline-replica", false);
    sim.cluster.remove_store(3, false).unwrap();
    assert_eq!(sim.run(), [QUIET]);
    assert_eq!(sim.state_name(3), "Offline");
    switch(&sim, "enable-replace-offline-replica", true);
    assert_eq!(sim.run()[0], "add learner on store 4");

    // Move a replica to a better location by labels.
    let opts = common::with_location_labels(opts(3), &["host"]);
    let mut sim = Sim::new(&[1, 2, 3, 4, 5, 6], &[1, 2, 3], opts);
    on_hosts(&sim);
    switch(&sim, "enable-location-replacement", false);
    assert_eq!(sim.run(), [QUIET]);
    switch(&sim, "enable-location-replacement", true);
    assert_eq!(sim.run()[0], "add learner on store 5");
}

#[test]
fn a_learner_left_on_a_down_store_is_not_promoted() {
    let mut sim = Sim::new(&[1, 2, 3], &[1, 2], opts(3));
    switch(&sim, "enable-remove-down-replica", false);
    assert_eq!(sim.step(), "add learner on store 3");
    // Store 3 goes down before its learner is promoted.
    sim.silent.insert(3);
    sim.advance(Duration::from_secs(4));
    assert_eq!(sim.state_name(3), "Down");
    sim.cluster.cancel_operator(1);
    let log = sim.run();
    assert!(log.iter().all(|l| l == QUIET), "{log:?}");
    assert_eq!(sim.voter_stores(), [1, 2]);
    // With the rule on again, the learner is removed.
    switch(&sim, "enable-remove-down-replica", true);
    assert_eq!(sim.run()[0], "remove store 3");
}

/// Region 1 ends at "m"; after it, for each of `peers` in turn, a region
/// with a voter on store 1 (its leader) and one on that store, pending
/// there if said so.
fn other_regions(sim: &mut Sim, peers: &[(u64, bool)]) {
    sim.region.end_key = b"m".to_vec();
    for (i, (store, pending)) in peers.iter().enumerate() {
        let id = 10 + i as u64;
        let on = |store_id: u64, n: u64| metapb::Peer {
            id: id * 100 + n,
            store_id,
            ..Default::default()
        };
        let region = metapb::Region {
            id,
            start_key: format!("m{i:02}").into_bytes(),
            end_key: format!("m{i:02}z").into_bytes(),
            region_epoch: Some(metapb::RegionEpoch {
                conf_ver: 2,
                version: 1,
            }),
            peers: vec![on(1, 1), on(*store, 2)],
            ..Default::default()
        };
        let req = pdpb::RegionHeartbeatRequest {
            leader: Some(on(1, 1)),
            pending_peers: if *pending {
                vec![on(*store, 2)]
            } else {
                vec![]
            },
            region: Some(region),
            approximate_size: 1 << 20,
            ..Default::default()
        };
        sim.cluster.region_heartbeat(&req).unwrap();
    }
}

#[test]
fn a_store_busy_with_snapshots_takes_no_new_replica_until_it_is_not() {
    let mut o = opts(3);
    o.max_snapshot_count = 2;
    let mut sim = Sim::new(&[1, 2, 3], &[1], o);
    // Store 2 receives three snapshots and store 3 sends three: both over.
    sim.snapshots.insert(2, (0, 3));
    sim.snapshots.insert(3, (3, 0));
    sim.store_heartbeats();
    assert_eq!(sim.run(), [QUIET]);
    // Two is at the limit, not over it.
    sim.snapshots.insert(3, (2, 0));
    sim.store_heartbeats();
    assert_eq!(
        sim.run(),
        ["add learner on store 3", QUIET, "promote on store 3", QUIET]
    );
    // The limit raised online, store 2 takes the third replica.
    let change = [("max-snapshot-count".to_string(), serde_json::json!(3))];
    (sim.cluster)
        .update_opts(change.iter().map(|(k, v)| (k, v)))
        .unwrap();
    assert_eq!(sim.step(), "add learner on store 2");
}

#[test]
fn a_store_with_too_many_pending_peers_takes_no_new_replica() {
    // Store 2 holds two regions, both pending there; store 3 holds three,
    // none pending. By region count store 2 takes the new replica.
    let first_add = |max_pending_peer_count: u64| {
        let o = ScheduleOptions {
            max_pending_peer_count,
            ..opts(2)
        };
        let mut sim = Sim::new(&[1, 2, 3], &[1], o);
        other_regions(
            &mut sim,
            &[(2, true), (2, true), (3, false), (3, false), (3, false)],
        );
        sim.step()
    };
    assert_eq!(
        first_add(1),
        "add learner on store 3",
        "two pending, over one"
    );
    assert_eq!(first_add(2), "add learner on store 2", "at the limit");
    assert_eq!(first_add(0), "add learner on store 2", "0: no limit");
}

#[test]
fn with_location_labels_a_region_waits_for_a_farther_store_rather_than_take_a_nearer_one() {
    let mut o = common::with_location_labels(opts(2), &["host"]);
    o.max_snapshot_count = 2;
    let mut sim = Sim::new(&[1, 2, 3, 4, 5, 6], &[1], o);
    on_hosts(&sim);
    // Every store on another host than store 1's receives three snapshots.
    for s in 3..=6 {
        sim.snapshots.insert(s, (0, 3));
    }
    sim.store_heartbeats();
    // Store 2 is free but shares store 1's host: the region waits.
    assert_eq!(sim.run(), [QUIET]);
    sim.snapshots.remove(&6);
    sim.store_heartbeats();
    assert_eq!(sim.step(), "add learner on store 6");
}

#[test]
fn a_learner_on_a_store_only_disconnected_is_still_promoted() {
    let mut o = opts(3);
    o.max_store_down_time = Duration::from_secs(60);
    let mut sim = Sim::new(&[1, 2, 3], &[1, 2], o);
    assert_eq!(sim.step(), "add learner on store 3");
    // Store 3 silent past the disconnect time, not yet Down; the repair's
    // operator lost (as after a PD restart): the checker decides alone.
    sim.silent.insert(3);
    sim.advance(Duration::from_secs(25));
    assert_eq!(sim.state_name(3), "Disconnected");
    sim.cluster.cancel_operator(1);
    assert!(sim.run().contains(&"promote on store 3".to_string()));
    assert_eq!(sim.voter_stores(), [1, 2, 3]);
}

#[test]
fn with_location_labels_a_region_waits_for_a_farther_store_only_disconnected() {
    let mut o = common::with_location_labels(opts(2), &["host"]);
    o.max_store_down_time = Duration::from_secs(60);
    let mut sim = Sim::new(&[1, 2, 3, 4, 5, 6], &[1], o);
    on_hosts(&sim);
    // Every store on another host than store 1's falls silent: Disconnected,
    // not Down, so its absence is passing.
    sim.silent.extend(3..=6);
    sim.advance(Duration::from_secs(25));
    assert_eq!(sim.state_name(5), "Disconnected");
    // Store 2 is Up but shares store 1's host: the region waits.
    assert_eq!(sim.run(), [QUIET]);
    sim.silent.remove(&5);
    sim.store_heartbeats();
    assert_eq!(sim.step(), "add learner on store 5");
}

#[test]
fn halted_scheduling_plans_nothing_and_refuses_splits_but_running_operators_go_on() {
    let mut sim = Sim::new(&[1, 2, 3, 4], &[1, 2], opts(3));
    assert_eq!(sim.step(), "add learner on store 3");
    switch(&sim, "halt-scheduling", true);
    // The running operator goes on to its end ...
    assert_eq!(sim.run(), ["-", "promote on store 3", "-"]);
    // ... but a replica lost now is not made up while halted.
    sim.cluster.remove_store(3, false).unwrap();
    assert_eq!(sim.run(), [QUIET]);
    // A store asking to split is refused: splits wait too.
    let region = sim.request().region.unwrap();
    let err = sim.cluster.ask_batch_split(&region, 1).unwrap_err();
    assert!(err.to_string().contains("halted"), "{err}");
    switch(&sim, "halt-scheduling", false);
    assert_eq!(sim.step(), "add learner on store 4");
    assert_eq!(sim.cluster.ask_batch_split(&region, 1).unwrap().len(), 1);
}

#[test]
fn a_paused_checker_plans_nothing_until_its_pause_ends_or_it_is_resumed() {
    let mut sim = Sim::new(&[1, 2, 3], &[1, 2], opts(3));
    sim.cluster.pause_checker("replica", 60).unwrap();
    assert_eq!(sim.cluster.is_checker_paused("replica"), Ok(true));
    assert_eq!(sim.cluster.is_checker_paused("learner"), Ok(false));
    assert_eq!(sim.run(), [QUIET]);
    sim.advance(Duration::from_secs(59));
    assert_eq!(sim.run(), [QUIET], "a second to go");
    sim.advance(Duration::from_secs(1));
    assert_eq!(sim.cluster.is_checker_paused("replica"), Ok(false));
    assert_eq!(sim.step(), "add learner on store 3");

    // A learner left without its operator (as after a PD restart) waits
    // while the learner checker is paused.
    sim.cluster.pause_checker("learner", 600).unwrap();
    sim.cluster.cancel_operator(1);
    assert_eq!(sim.run(), ["-", "-"]);
    sim.cluster.pause_checker("learner", 0).unwrap();
    assert!(sim.run().contains(&"promote on store 3".to_string()));
    assert_eq!(sim.voter_stores(), [1, 2, 3]);

    // Upstream's names only; those with nothing to pause here are taken.
    assert!(sim.cluster.pause_checker("joint-state", 5).is_ok());
    assert!(sim.cluster.pause_checker("nope", 5).is_err());
    assert!(sim.cluster.is_checker_paused("nope").is_err());
}

#[test]
fn a_leader_leaving_its_store_passes_over_a_store_whose_leaders_are_evicted() {
    let mut sim = Sim::new(&[1, 2, 3, 4], &[1, 2, 3], opts(3));
    sim.step();
    sim.cluster.hold_store(LeaderHold::Evict, 2).unwrap();
    sim.cluster.remove_store(1, false).unwrap();
    let steps = sim.run();
    assert!(
        steps.contains(&"transfer leader to store 3".to_string()),
        "{steps:?}"
    );
    assert!(
        !steps.iter().any(|s| s.contains("leader to store 2")),
        "{steps:?}"
    );
    assert_eq!(sim.voter_stores(), [2, 3, 4]);
}

#[test]
fn a_store_held_by_a_leader_scheduler_is_let_go_once_tombstone() {
    let mut sim = Sim::new(&[1, 2, 3, 4], &[1, 2, 3], opts(3));
    sim.step();
    sim.cluster.hold_store(LeaderHold::Evict, 1).unwrap();
    // Evicted and granted at once is refused.
    let both = sim.cluster.hold_store(LeaderHold::Grant, 1).unwrap_err();
    assert!(matches!(both, StoreError::HeldByOther(1, _)), "{both}");
    sim.cluster.remove_store(1, false).unwrap();
    sim.run();
    assert_eq!(sim.state_name(1), "Tombstone");
    assert!(sim.cluster.held_stores(LeaderHold::Evict).is_empty());
    assert!(!sim.cluster.schedulers().contains(&"evict-leader-scheduler"));
    // And it cannot be held again (410 over HTTP, as other store APIs).
    let gone = sim.cluster.hold_store(LeaderHold::Evict, 1).unwrap_err();
    assert!(matches!(gone, StoreError::Removed(1)), "{gone}");
}

#[test]
fn a_learner_that_stays_pending_does_not_hold_back_a_down_voters_replacement() {
    for paused in [false, true] {
        let mut sim = Sim::new(&[1, 2, 3, 4, 5], &[1, 2, 3], opts(3));
        let learner = peer(4, metapb::PeerRole::Learner);
        sim.region.peers.push(learner.clone());
        if paused {
            sim.cluster.pause_checker("learner", 600).unwrap();
        }
        sim.silent.insert(3);
        sim.advance(Duration::from_secs(4));
        assert_eq!(sim.state_name(3), "Down");
        // The learner on store 4 never catches up (its snapshot refused
        // again and again, say): store 3's voter is replaced all the same.
        sim.pending.push(learner.id);
        assert_eq!(sim.step(), "add learner on store 5", "paused: {paused}");
    }
    // With every voter up, a waiting learner still holds back a new
    // replica beside it.
    let mut sim = Sim::new(&[1, 2, 3, 4], &[1, 2], opts(3));
    let learner = peer(4, metapb::PeerRole::Learner);
    sim.region.peers.push(learner.clone());
    sim.pending.push(learner.id);
    assert_eq!(sim.step(), QUIET);
}

#[test]
fn an_operator_whose_region_went_silent_times_out_and_frees_its_place() {
    let mut o = opts(3);
    o.replica_schedule_limit = 1;
    let mut sim = Sim::new(&[1, 2, 3], &[1], o);
    sim.region.end_key = b"m".to_vec();
    assert_eq!(sim.step(), "add learner on store 2");
    // Region 1 never reports again (its quorum lost, say). Region 7, a
    // lone voter on store 3, needs a replica too: the limit of one is
    // taken until region 1's operator times out.
    let lone = |sim: &Sim| {
        let mut req = sim.request();
        let r = req.region.as_mut().unwrap();
        (r.id, r.start_key, r.end_key) = (7, b"m".to_vec(), vec![]);
        r.peers = vec![metapb::Peer {
            id: 700,
            store_id: 3,
            ..Default::default()
        }];
        req.leader = r.peers.first().cloned();
        req.pending_peers.clear();
        sim.cluster.region_heartbeat(&req).unwrap()
    };
    assert_eq!(lone(&sim), None, "over the replica limit");
    sim.advance(Duration::from_secs(29));
    let planned = lone(&sim).expect("a place came free");
    let added = planned.change_peer_v2.unwrap().changes[0].peer.clone();
    assert_ne!(added.unwrap().store_id, 3);
    assert_eq!(sim.cluster.operator(1).unwrap().1, OpStatus::Timeout);
}

#[test]
fn a_leadership_step_times_out_sooner_than_adding_a_learner() {
    let mut sim = Sim::new(&[1, 2, 3, 4], &[1, 2, 3], opts(3));
    sim.step();
    sim.cluster.remove_store(1, false).unwrap();
    assert_eq!(sim.step(), "add learner on store 4");
    assert_eq!(sim.step(), QUIET);
    assert_eq!(sim.step(), "promote on store 4");
    // The leader never hands over (its target refuses, say). A role or
    // leadership change may take 60 s (here operator-timeout, 10 s, being
    // shorter) and 0.6 s a MiB: 11.8 s for this 3 MiB region, counted from
    // when the step before it was seen done.
    let transfer = sim.heartbeat().unwrap();
    assert!(transfer.transfer_leader.is_some());
    let first = sim.cluster.operator(1).unwrap().0.created_at;
    sim.advance(Duration::from_secs(11));
    assert_eq!(sim.heartbeat(), Some(transfer), "re-sent, still in time");
    assert_eq!(sim.cluster.operator(1).unwrap().0.created_at, first);
    sim.advance(Duration::from_secs(1));
    // Timed out: the next heartbeat plans the hand-over afresh.
    assert!(sim.heartbeat().unwrap().transfer_leader.is_some());
    let (op, status) = sim.cluster.operator(1).unwrap();
    assert!(op.created_at > first);
    assert_eq!(status, OpStatus::Running);
}
