//! Scattering regions (`ScatterRegion`, `scatter-region`): a group's
//! replicas and leaders spread evenly over the stores, through operators
//! walked by heartbeats; `GetOperator` follows them.

mod common;

use common::fleet::Fleet;
use common::{opts, set_labels, with_location_labels, ScheduleOptions, Sim, QUIET};
use tikal_pd::schedule::{AdminOp, SCHEDULERS};
use tikal_proto::pdpb::{self, pd_client::PdClient};

fn scatter(group: &str) -> AdminOp {
    AdminOp::ScatterRegion {
        group: group.into(),
    }
}

fn no_schedulers(cluster: &tikal_pd::cluster::Cluster) {
    for s in SCHEDULERS {
        cluster.remove_scheduler(s).unwrap();
    }
}

#[test]
fn a_scattered_group_spreads_replicas_and_leaders_evenly() {
    let merges_off = ScheduleOptions {
        max_merge_region_size: 0,
        ..Default::default()
    };
    // A pre-split table: 12 regions on stores 1 2 3, all led by 1, and
    // three empty stores. Nothing but the scatter moves anything.
    let mut fleet = Fleet::new(&[1, 2, 3, 4, 5, 6], 12, |_| vec![1, 2, 3], merges_off);
    no_schedulers(&fleet.cluster);
    fleet.round();
    let ids: Vec<u64> = fleet.regions.keys().copied().collect();
    for id in &ids {
        fleet.cluster.add_admin_operator(*id, scatter("t")).unwrap();
    }
    fleet.settle(60, |_| {});
    // 36 replicas and 12 leaders over 6 stores.
    for (store, (replicas, leaders)) in fleet.counts() {
        assert_eq!((replicas, leaders), (6, 2), "store {store}");
    }
    for r in fleet.regions.values() {
        let mut stores: Vec<u64> = r.region.peers.iter().map(|p| p.store_id).collect();
        stores.sort_unstable();
        stores.dedup();
        assert_eq!(stores.len(), 3, "{:?}", r.region);
    }
    let moved = ids
        .iter()
        .filter_map(|id| fleet.cluster.operator(*id))
        .inspect(|(op, status)| {
            assert_eq!(op.plan.desc, "scatter-region");
            assert_eq!(status.name(), "SUCCESS");
        })
        .count();
    // The first region of each kind stays: 1 2 3 led by 1 needs nothing.
    assert!(moved >= 10, "{moved} regions moved");

    // Another group counts from nothing: its first region stays put,
    // leader and all.
    let first = ids[0];
    let before = fleet.regions[&first].clone();
    fleet
        .cluster
        .add_admin_operator(first, scatter("u"))
        .unwrap();
    fleet.settle(5, |_| {});
    let after = &fleet.regions[&first];
    assert_eq!(after.region.peers, before.region.peers);
    assert_eq!(after.leader_store, before.leader_store);
}

/// Heartbeats until nothing runs, checking `each` after every step.
fn run_checking(sim: &mut Sim, mut each: impl FnMut(&Sim)) {
    for _ in 0..50 {
        let caught_up = sim.pending.is_empty();
        let line = sim.step();
        each(sim);
        if line == QUIET && caught_up && sim.cluster.operators().is_empty() {
            return;
        }
    }
    panic!("no quiet after 50 heartbeats: {:?}", sim.log);
}

#[test]
fn a_scatter_never_brings_replicas_nearer_each_other_on_its_way() {
    let labels = with_location_labels(opts(3), &["zone"]);
    let mut sim = Sim::new(&[1, 2, 3, 4, 5], &[1, 2, 3], labels);
    no_schedulers(&sim.cluster);
    let zones = [(1, "z1"), (2, "z2"), (3, "z3"), (4, "z2"), (5, "z1")];
    for (store, zone) in zones {
        set_labels(&sim.cluster, store, &[("zone", zone)]);
    }
    assert_eq!(sim.step(), QUIET);
    // The group's first scatter counts 1 2 3; the second moves 1 to 5
    // (z1 for z1) and then 2 to 4 (z2 for z2). Moving 1 to 4 first would
    // leave two replicas in z2 and none in z1 until the second move.
    let id = sim.region.id;
    for _ in 0..2 {
        sim.cluster.add_admin_operator(id, scatter("g")).unwrap();
    }
    let zone_of = |store: u64| zones.iter().find(|(s, _)| *s == store).unwrap().1;
    run_checking(&mut sim, |sim| {
        let voters = sim.voter_stores();
        let mut in_zones: Vec<&str> = voters.iter().map(|s| zone_of(*s)).collect();
        in_zones.sort_unstable();
        in_zones.dedup();
        assert!(
            in_zones.len() == 3,
            "voters {voters:?} share a zone: {:?}",
            sim.log
        );
    });
    assert_eq!(sim.voter_stores(), [3, 4, 5]);
}

#[test]
fn leadership_is_scattered_only_onto_an_up_store() {
    let three = ScheduleOptions {
        max_replicas: 3,
        ..Default::default()
    };
    let mut sim = Sim::new(&[1, 2, 3], &[1, 2, 3], three);
    no_schedulers(&sim.cluster);
    assert_eq!(sim.step(), QUIET);
    let id = sim.region.id;
    sim.cluster.add_admin_operator(id, scatter("g")).unwrap();
    // Store 2 (leading fewest of the group, then lowest id) stops
    // heartbeating: Disconnected, not yet Down. Leadership goes to 3.
    sim.silent.insert(2);
    sim.advance(std::time::Duration::from_secs(25));
    assert_eq!(sim.state_name(2), "Disconnected");
    sim.cluster.add_admin_operator(id, scatter("g")).unwrap();
    let op = sim.cluster.operator(id).unwrap().0;
    assert_eq!(
        op.plan.brief,
        "scatter region: stores [1, 2, 3], leader store 3"
    );
}

#[tokio::test]
async fn a_region_busy_with_another_operator_is_tried_again_after_a_pause() {
    let mut sim = Sim::new(&[1, 2, 3], &[1, 2, 3], opts(3));
    no_schedulers(&sim.cluster);
    assert_eq!(sim.step(), QUIET);
    let id = sim.region.id;
    let to_2 = AdminOp::TransferLeader { to_store: 2 };
    sim.cluster.add_admin_operator(id, to_2).unwrap();
    let mut pd = PdClient::new(common::serve(&sim).await);
    let req = pdpb::ScatterRegionRequest {
        regions_id: vec![id],
        retry_limit: 2,
        ..Default::default()
    };
    let started = std::time::Instant::now();
    let r = pd.scatter_region(req).await.unwrap().into_inner();
    assert_eq!((error_of(&r.header), r.finished_percentage), (None, 0));
    // Two pauses: 100 ms, then 200 ms.
    assert!(started.elapsed() >= std::time::Duration::from_millis(300));
}

#[test]
fn only_a_healthy_region_is_scattered() {
    let mut sim = Sim::new(&[1, 2, 3, 4], &[1, 2, 3], opts(3));
    no_schedulers(&sim.cluster);
    // A voter still catching up.
    sim.pending = vec![sim.peer_on(3).unwrap().id];
    assert!(sim.heartbeat().is_none());
    assert_eq!(
        sim.cluster.add_admin_operator(sim.region.id, scatter("")),
        Err(format!(
            "region {} is not fully replicated or has abnormal peers",
            sim.region.id
        ))
    );
}

async fn get_operator(
    pd: &mut PdClient<tonic::transport::Channel>,
    region_id: u64,
) -> pdpb::GetOperatorResponse {
    let req = pdpb::GetOperatorRequest {
        header: None,
        region_id,
    };
    pd.get_operator(req).await.unwrap().into_inner()
}

async fn scatter_regions(
    pd: &mut PdClient<tonic::transport::Channel>,
    regions_id: Vec<u64>,
    region_id: u64,
) -> pdpb::ScatterRegionResponse {
    let req = pdpb::ScatterRegionRequest {
        group: "t".into(),
        regions_id,
        region_id,
        ..Default::default()
    };
    pd.scatter_region(req).await.unwrap().into_inner()
}

fn error_of(header: &Option<pdpb::ResponseHeader>) -> Option<(i32, String)> {
    let e = header.as_ref()?.error.as_ref()?;
    Some((e.r#type, e.message.clone()))
}

#[tokio::test]
async fn scatter_region_and_get_operator_over_grpc() {
    let mut sim = Sim::new(&[1, 2, 3, 4], &[1, 2, 3], opts(3));
    no_schedulers(&sim.cluster);
    assert_eq!(sim.step(), QUIET);
    let id = sim.region.id;
    let mut pd = PdClient::new(common::serve(&sim).await);
    let not_found = Some((pdpb::ErrorType::RegionNotFound as i32, "Not Found".into()));
    assert_eq!(error_of(&get_operator(&mut pd, id).await.header), not_found);

    // The group's first region is already spread: counted, not moved.
    let r = scatter_regions(&mut pd, vec![id], 0).await;
    assert_eq!((error_of(&r.header), r.finished_percentage), (None, 100));
    assert_eq!(error_of(&get_operator(&mut pd, id).await.header), not_found);

    // Again in the same group: stores 1 2 3 hold one each, store 4 none.
    // The replica on 1 moves to 4; leadership goes to 2 (the voter that
    // leads fewest in the group, then lowest id) before 1 leaves.
    let r = scatter_regions(&mut pd, vec![id], 0).await;
    assert_eq!(r.finished_percentage, 100);
    let op = get_operator(&mut pd, id).await;
    assert_eq!(error_of(&op.header), None);
    assert_eq!(op.status, pdpb::OperatorStatus::Running as i32);
    assert_eq!(op.desc, b"scatter-region");
    assert_eq!(op.kind, b"admin,region,leader");
    // Asked again while it runs (clients retry): done, nothing new.
    let r = scatter_regions(&mut pd, vec![id, id], 0).await;
    assert_eq!(r.finished_percentage, 100);
    // A region PD does not know lowers the share; it is no error.
    let r = scatter_regions(&mut pd, vec![id, 999], 0).await;
    assert_eq!((error_of(&r.header), r.finished_percentage), (None, 50));
    // The single id of older clients fails in the header.
    let r = scatter_regions(&mut pd, vec![], 999).await;
    let missing = (
        pdpb::ErrorType::RegionNotFound as i32,
        "region 999 not found".into(),
    );
    assert_eq!(error_of(&r.header), Some(missing));

    sim.run();
    assert_eq!(sim.voter_stores(), [2, 3, 4]);
    assert_eq!(sim.leader_store, 2);
    let op = get_operator(&mut pd, id).await;
    assert_eq!(op.status, pdpb::OperatorStatus::Success as i32);
    assert_eq!(op.desc, b"scatter-region");
}

#[test]
fn a_scatter_timed_out_is_not_taken_for_one_under_way() {
    let mut sim = Sim::new(&[1, 2, 3, 4], &[1, 2, 3], opts(3));
    no_schedulers(&sim.cluster);
    assert_eq!(sim.step(), QUIET);
    let id = sim.region.id;
    for _ in 0..2 {
        sim.cluster.add_admin_operator(id, scatter("g")).unwrap();
    }
    // Asked again while it runs: done. Past its timeout, no longer.
    assert_eq!(sim.cluster.add_admin_operator(id, scatter("g")), Ok(()));
    // (Its first step, adding a learner, waits 10 s and 6 s a MiB.)
    sim.advance(std::time::Duration::from_secs(29));
    assert_eq!(
        sim.cluster.add_admin_operator(id, scatter("g")),
        Err(format!("region {id} already has an operator"))
    );
}

#[tokio::test]
async fn a_region_pd_does_not_know_fails_without_pauses() {
    let sim = Sim::new(&[1, 2, 3], &[1, 2, 3], opts(3));
    let mut pd = PdClient::new(common::serve(&sim).await);
    let req = pdpb::ScatterRegionRequest {
        regions_id: vec![999],
        retry_limit: 30,
        ..Default::default()
    };
    let started = std::time::Instant::now();
    let r = pd.scatter_region(req).await.unwrap().into_inner();
    assert_eq!(r.finished_percentage, 0);
    // Thirty pauses would take over twenty minutes.
    assert!(started.elapsed() < std::time::Duration::from_secs(5));
}
