//! One region and a few stores, played against a real `Cluster` (on a
//! temporary metadata store, with a manual clock): the region's leader
//! heartbeats, and carries out what PD answers the way a store would
//! (each membership change raises conf_ver by one; a new learner reports
//! pending once before it has caught up). The log of what PD asked reads
//! as the scenario's script.

#![allow(dead_code)]

pub mod fleet;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use tikal_pd::clock::ManualClock;
use tikal_pd::cluster::Cluster;
pub use tikal_pd::config::ScheduleOptions;
use tikal_pd::storage::MetaStore;
use tikal_proto::eraftpb::ConfChangeType;
use tikal_proto::{metapb, pdpb};

/// The logged word for a heartbeat PD answered with nothing.
pub const QUIET: &str = "-";

pub struct Sim {
    pub clock: Arc<ManualClock>,
    pub cluster: Arc<Cluster>,
    pub region: metapb::Region,
    pub leader_store: u64,
    /// Peers that report pending on the next heartbeat.
    pub pending: Vec<u64>,
    /// Stores that have stopped heartbeating.
    pub silent: BTreeSet<u64>,
    /// Stores that report this much available instead of 6 GiB (of 10).
    pub available: BTreeMap<u64, u64>,
    /// Stores that report (sending, receiving) snapshots instead of none.
    pub snapshots: BTreeMap<u64, (u32, u32)>,
    pub log: Vec<String>,
    _dir: tempfile::TempDir,
}

impl Sim {
    /// Stores `stores` (version 8.5.0), and region 1 with one voter on
    /// each of `voters`, led by the first.
    pub fn new(stores: &[u64], voters: &[u64], opts: ScheduleOptions) -> Sim {
        Sim::with_version(stores, voters, opts, "8.5.0")
    }

    pub fn with_version(
        stores: &[u64],
        voters: &[u64],
        opts: ScheduleOptions,
        version: &str,
    ) -> Sim {
        let dir = tempfile::tempdir().unwrap();
        let clock = Arc::new(ManualClock::new(1_700_000_000_000_000_000));
        let meta = MetaStore::open(dir.path()).unwrap();
        let cluster = Arc::new(Cluster::open_with_clock(meta, opts, clock.clone()).unwrap());
        // Ids below 1000 are ours; PD hands out ids from 1 but we take
        // 1000 first so they cannot meet.
        while cluster.alloc_id().unwrap() < 1000 {}
        let store = |id: u64| metapb::Store {
            id,
            address: format!("127.0.0.1:{}", 20160 + id),
            version: version.into(),
            ..Default::default()
        };
        let first = voters[0];
        let boot_region = metapb::Region {
            id: 1,
            region_epoch: Some(metapb::RegionEpoch {
                conf_ver: 1,
                version: 1,
            }),
            peers: vec![peer(first, metapb::PeerRole::Voter)],
            ..Default::default()
        };
        cluster
            .bootstrap(store(first), boot_region.clone())
            .unwrap();
        for id in stores {
            cluster.put_store(store(*id)).unwrap();
        }
        let mut region = boot_region;
        region.peers = voters
            .iter()
            .map(|s| peer(*s, metapb::PeerRole::Voter))
            .collect();
        region.region_epoch = Some(metapb::RegionEpoch {
            conf_ver: voters.len() as u64,
            version: 1,
        });
        let sim = Sim {
            clock,
            cluster,
            region,
            leader_store: first,
            pending: vec![],
            silent: BTreeSet::new(),
            available: BTreeMap::new(),
            snapshots: BTreeMap::new(),
            log: vec![],
            _dir: dir,
        };
        sim.store_heartbeats();
        sim
    }

    /// Every store that is not silent reports (one buried by an earlier
    /// store's heartbeat no longer does).
    pub fn store_heartbeats(&self) {
        for s in self.cluster.stores() {
            let buried = (self.cluster.store(s.meta.id)).is_ok_and(|now| now.is_tombstone());
            if !self.silent.contains(&s.meta.id) && !buried {
                let (sending, receiving) =
                    self.snapshots.get(&s.meta.id).copied().unwrap_or_default();
                self.cluster
                    .store_heartbeat(pdpb::StoreStats {
                        store_id: s.meta.id,
                        capacity: 10 << 30,
                        available: self.available.get(&s.meta.id).copied().unwrap_or(6 << 30),
                        used_size: 1 << 30,
                        start_time: 1_700_000_000,
                        sending_snap_count: sending,
                        receiving_snap_count: receiving,
                        ..Default::default()
                    })
                    .unwrap();
            }
        }
    }

    /// Moves time on, with the stores that are not silent reporting.
    pub fn advance(&self, by: Duration) {
        self.clock.advance(by);
        self.store_heartbeats();
    }

    pub fn request(&self) -> pdpb::RegionHeartbeatRequest {
        let pending = self
            .region
            .peers
            .iter()
            .filter(|p| self.pending.contains(&p.id))
            .cloned()
            .collect();
        pdpb::RegionHeartbeatRequest {
            region: Some(self.region.clone()),
            leader: self.peer_on(self.leader_store).cloned(),
            pending_peers: pending,
            approximate_size: 3 << 20,
            ..Default::default()
        }
    }

    /// One heartbeat from the leader: PD's answer, not carried out.
    pub fn heartbeat(&mut self) -> Option<pdpb::RegionHeartbeatResponse> {
        let req = self.request();
        // A learner catches up by the heartbeat after the one showing it.
        self.pending.clear();
        self.cluster.region_heartbeat(&req).unwrap()
    }

    /// One heartbeat, with PD's answer carried out and logged.
    pub fn step(&mut self) -> String {
        let line = match self.heartbeat() {
            Some(resp) => self.apply(&resp),
            None => QUIET.to_string(),
        };
        self.log.push(line.clone());
        line
    }

    /// Heartbeats until PD has nothing running and nothing to say about a
    /// region with no peer catching up; the log.
    pub fn run(&mut self) -> Vec<String> {
        self.log.clear();
        for _ in 0..50 {
            let caught_up = self.pending.is_empty();
            let line = self.step();
            if line == QUIET && caught_up && self.cluster.operators().is_empty() {
                return self.log.clone();
            }
        }
        panic!("no quiet after 50 heartbeats: {:?}", self.log);
    }

    /// Carries out a command as the leader would; says what it did.
    pub fn apply(&mut self, resp: &pdpb::RegionHeartbeatResponse) -> String {
        assert_eq!(resp.region_id, self.region.id);
        assert_eq!(
            resp.region_epoch.as_ref(),
            self.region.region_epoch.as_ref()
        );
        assert_eq!(resp.target_peer.as_ref(), self.peer_on(self.leader_store));
        carry_out(
            &mut self.region,
            &mut self.leader_store,
            &mut self.pending,
            resp,
        )
    }

    pub fn peer_on(&self, store: u64) -> Option<&metapb::Peer> {
        self.region.peers.iter().find(|p| p.store_id == store)
    }

    /// Store ids of the region's voters, in order.
    pub fn voter_stores(&self) -> Vec<u64> {
        let mut v: Vec<u64> = self
            .region
            .peers
            .iter()
            .filter(|p| p.role == metapb::PeerRole::Voter as i32)
            .map(|p| p.store_id)
            .collect();
        v.sort_unstable();
        v
    }

    pub fn state_name(&self, store: u64) -> &'static str {
        self.cluster.store_states()[&store].name()
    }
}

/// Carries out a leader transfer or a membership change as a region's
/// leader would (a conf change raises conf_ver; a new learner is pending
/// until the next heartbeat); says what it did.
pub fn carry_out(
    region: &mut metapb::Region,
    leader_store: &mut u64,
    pending: &mut Vec<u64>,
    resp: &pdpb::RegionHeartbeatResponse,
) -> String {
    let peer_on = |r: &metapb::Region, store: u64| r.peers.iter().any(|p| p.store_id == store);
    if let Some(t) = &resp.transfer_leader {
        let to = t.peer.as_ref().unwrap().store_id;
        assert_eq!(t.peers.len(), 1);
        assert!(peer_on(region, to));
        *leader_store = to;
        return format!("transfer leader to store {to}");
    }
    let change = resp
        .change_peer
        .clone()
        .or_else(|| {
            let v2 = resp.change_peer_v2.as_ref()?;
            assert_eq!(v2.changes.len(), 1, "one change at a time");
            v2.changes.first().cloned()
        })
        .expect("a command");
    let p = change.peer.unwrap();
    let epoch = region.region_epoch.as_mut().unwrap();
    epoch.conf_ver += 1;
    match ConfChangeType::try_from(change.change_type).unwrap() {
        ConfChangeType::AddLearnerNode => {
            assert_eq!(p.role, metapb::PeerRole::Learner as i32);
            assert!(!peer_on(region, p.store_id), "two peers on one store");
            pending.push(p.id);
            region.peers.push(p.clone());
            format!("add learner on store {}", p.store_id)
        }
        ConfChangeType::AddNode => {
            let existing = region
                .peers
                .iter_mut()
                .find(|q| q.id == p.id)
                .expect("promote an existing learner");
            existing.role = metapb::PeerRole::Voter as i32;
            format!("promote on store {}", p.store_id)
        }
        ConfChangeType::RemoveNode => {
            assert_ne!(p.store_id, *leader_store, "never remove the leader");
            region.peers.retain(|q| q.id != p.id);
            format!("remove store {}", p.store_id)
        }
    }
}

/// Peer ids are `100 + store id` for the peers a scenario starts with.
pub fn peer(store: u64, role: metapb::PeerRole) -> metapb::Peer {
    metapb::Peer {
        id: 100 + store,
        store_id: store,
        role: role as i32,
        ..Default::default()
    }
}

pub fn opts(max_replicas: u32) -> ScheduleOptions {
    ScheduleOptions {
        max_replicas,
        max_store_down_time: Duration::from_secs(3),
        operator_timeout: Duration::from_secs(10),
        ..Default::default()
    }
}

/// PD's gRPC services (`pdpb.PD`, `keyspacepb.Keyspace`) over `sim`'s
/// cluster, on a free loopback port.
pub async fn serve(sim: &Sim) -> tonic::transport::Channel {
    use tikal_pd::service::{KeyspaceService, PdService};
    use tikal_proto::keyspacepb::keyspace_server::KeyspaceServer;
    use tikal_proto::pdpb::pd_server::PdServer;
    let svc = PdService {
        cluster: sim.cluster.clone(),
        member: pdpb::Member::default(),
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(PdServer::new(svc.clone()))
            .add_service(KeyspaceServer::new(KeyspaceService { pd: svc }))
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );
    tonic::transport::Channel::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap()
}

/// Gives store `id` these labels, as its next PutStore would.
pub fn set_labels(cluster: &Cluster, id: u64, labels: &[(&str, &str)]) {
    let mut meta = cluster.store(id).unwrap().meta;
    meta.labels = labels
        .iter()
        .map(|(key, value)| metapb::StoreLabel {
            key: key.to_string(),
            value: value.to_string(),
        })
        .collect();
    cluster.put_store(meta).unwrap();
}

/// `opts` with `[replication] location-labels` set.
pub fn with_location_labels(opts: ScheduleOptions, labels: &[&str]) -> ScheduleOptions {
    ScheduleOptions {
        location_labels: labels.iter().map(|l| l.to_string()).collect(),
        ..opts
    }
}
