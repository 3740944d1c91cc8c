//! Many regions over a few stores, played against a real `Cluster` with a
//! manual clock: each round, every region's leader heartbeats (with its
//! size, keys and write flow) and carries out what PD answers, as
//! `Sim` does for one region; a `merge` is carried out at once (the
//! target takes the source's range at a newer version and reports it).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use tikal_pd::clock::{Clock, ManualClock};
use tikal_pd::cluster::Cluster;
use tikal_pd::storage::MetaStore;
use tikal_proto::{metapb, pdpb};

use super::{carry_out, ScheduleOptions};

/// Seconds between two rounds of heartbeats.
pub const ROUND: Duration = Duration::from_secs(10);

#[derive(Clone, Debug)]
pub struct SimRegion {
    pub region: metapb::Region,
    pub leader_store: u64,
    pub pending: Vec<u64>,
    pub size: u64,
    pub keys: u64,
    /// Whether the leader measured the current range: a store reports
    /// size 0 (unknown) after a merge until its split check ran, which
    /// here happens by the next round.
    pub measured: bool,
    /// Bytes written per second.
    pub write_rate: u64,
}

pub struct Fleet {
    pub clock: Arc<ManualClock>,
    pub cluster: Arc<Cluster>,
    pub regions: BTreeMap<u64, SimRegion>,
    /// Every command PD sent, as `region: what was done`.
    pub log: Vec<String>,
    /// Stores that report (capacity, available); the others report none.
    pub space: BTreeMap<u64, (u64, u64)>,
    /// Stores that report (sending, receiving) snapshots instead of none.
    pub snapshots: BTreeMap<u64, (u32, u32)>,
    /// Stores whose peers never catch up: reported pending on every
    /// heartbeat.
    pub lagging: BTreeSet<u64>,
    _dir: tempfile::TempDir,
}

pub fn key(i: usize) -> Vec<u8> {
    format!("k{i:04}").into_bytes()
}

impl Fleet {
    /// Stores `stores`, and `n` regions splitting the key space at
    /// `key(1)`, `key(2)`, ...: region i (from 0) has voters on
    /// `placement(i)`, led by the first, 1 MiB and 100 keys.
    pub fn new(
        stores: &[u64],
        n: usize,
        placement: impl Fn(usize) -> Vec<u64>,
        opts: ScheduleOptions,
    ) -> Fleet {
        let dir = tempfile::tempdir().unwrap();
        let clock = Arc::new(ManualClock::new(1_700_000_000_000_000_000));
        let meta = MetaStore::open(dir.path()).unwrap();
        let cluster = Arc::new(Cluster::open_with_clock(meta, opts, clock.clone()).unwrap());
        let first = placement(0)[0];
        let boot = metapb::Region {
            id: cluster.alloc_id().unwrap(),
            region_epoch: Some(metapb::RegionEpoch {
                conf_ver: 1,
                version: 1,
            }),
            peers: vec![metapb::Peer {
                id: cluster.alloc_id().unwrap(),
                store_id: first,
                ..Default::default()
            }],
            ..Default::default()
        };
        cluster.bootstrap(store(first), boot.clone()).unwrap();
        let mut fleet = Fleet {
            clock,
            cluster,
            regions: BTreeMap::new(),
            log: vec![],
            space: BTreeMap::new(),
            snapshots: BTreeMap::new(),
            lagging: BTreeSet::new(),
            _dir: dir,
        };
        for s in stores {
            fleet.add_store(*s);
        }
        for i in 0..n {
            let voters = placement(i);
            let id = if i == 0 {
                boot.id
            } else {
                fleet.cluster.alloc_id().unwrap()
            };
            let region = metapb::Region {
                id,
                start_key: if i == 0 { vec![] } else { key(i) },
                end_key: if i + 1 == n { vec![] } else { key(i + 1) },
                region_epoch: Some(metapb::RegionEpoch {
                    conf_ver: voters.len() as u64,
                    version: 2,
                }),
                peers: voters
                    .iter()
                    .map(|s| metapb::Peer {
                        id: fleet.cluster.alloc_id().unwrap(),
                        store_id: *s,
                        ..Default::default()
                    })
                    .collect(),
                ..Default::default()
            };
            fleet.regions.insert(
                id,
                SimRegion {
                    region,
                    leader_store: voters[0],
                    pending: vec![],
                    size: 1 << 20,
                    keys: 100,
                    measured: true,
                    write_rate: 0,
                },
            );
        }
        fleet.store_heartbeats();
        fleet
    }

    pub fn add_store(&self, id: u64) {
        self.cluster.put_store(store(id)).unwrap();
        self.store_heartbeats();
    }

    pub fn store_heartbeats(&self) {
        for s in self.cluster.stores() {
            if !s.is_tombstone() {
                self.store_heartbeat(s.meta.id);
            }
        }
    }

    pub fn store_heartbeat(&self, id: u64) {
        let (sending, receiving) = self.snapshots.get(&id).copied().unwrap_or_default();
        self.cluster
            .store_heartbeat(pdpb::StoreStats {
                store_id: id,
                capacity: self.space.get(&id).map_or(0, |s| s.0),
                available: self.space.get(&id).map_or(0, |s| s.1),
                sending_snap_count: sending,
                receiving_snap_count: receiving,
                ..Default::default()
            })
            .unwrap();
    }

    pub fn request(&self, id: u64) -> pdpb::RegionHeartbeatRequest {
        let r = &self.regions[&id];
        let now_secs = (self.clock.now_nanos() / 1_000_000_000) as u64;
        let secs = ROUND.as_secs();
        pdpb::RegionHeartbeatRequest {
            region: Some(r.region.clone()),
            leader: r
                .region
                .peers
                .iter()
                .find(|p| p.store_id == r.leader_store)
                .cloned(),
            pending_peers: r
                .region
                .peers
                .iter()
                .filter(|p| r.pending.contains(&p.id) || self.lagging.contains(&p.store_id))
                .cloned()
                .collect(),
            approximate_size: if r.measured { r.size } else { 0 },
            approximate_keys: if r.measured { r.keys } else { 0 },
            bytes_written: r.write_rate * secs,
            interval: Some(pdpb::TimeInterval {
                start_timestamp: now_secs - secs,
                end_timestamp: now_secs,
            }),
            ..Default::default()
        }
    }

    /// One heartbeat of region `id`, PD's answer carried out; whether PD
    /// asked for anything.
    pub fn heartbeat(&mut self, id: u64) -> bool {
        if !self.regions.contains_key(&id) {
            return false;
        }
        let req = self.request(id);
        if let Some(r) = self.regions.get_mut(&id) {
            r.pending.clear();
        }
        let resp = self.cluster.region_heartbeat(&req);
        let Some(resp) = resp.unwrap_or_else(|e| panic!("{e}: {req:?}")) else {
            return false;
        };
        assert!(resp.header.as_ref().unwrap().error.is_none(), "{resp:?}");
        let r = self.regions.get_mut(&id).unwrap();
        assert_eq!(resp.region_id, id);
        assert_eq!(resp.region_epoch, r.region.region_epoch);
        if let Some(merge) = &resp.merge {
            let target = merge.target.clone().unwrap();
            self.log.push(format!("{id}: merge into {}", target.id));
            self.merge(id, target.id);
            return true;
        }
        let line = carry_out(&mut r.region, &mut r.leader_store, &mut r.pending, &resp);
        self.log.push(format!("{id}: {line}"));
        true
    }

    /// Carries out a merge as the stores would: the peers must be on the
    /// same stores; the target takes the range at a newer version and
    /// reports at once.
    pub fn merge(&mut self, source: u64, target: u64) {
        let src = self.regions.remove(&source).unwrap();
        let stores = |r: &metapb::Region| {
            let mut s: Vec<u64> = r.peers.iter().map(|p| p.store_id).collect();
            s.sort_unstable();
            s
        };
        let t = self.regions.get_mut(&target).unwrap();
        assert_eq!(stores(&src.region), stores(&t.region), "peers not aligned");
        if !t.region.end_key.is_empty() && t.region.end_key == src.region.start_key {
            t.region.end_key = src.region.end_key.clone();
        } else {
            assert_eq!(t.region.start_key, src.region.end_key, "not adjacent");
            t.region.start_key = src.region.start_key.clone();
        }
        let sv = src.region.region_epoch.as_ref().unwrap().version;
        let epoch = t.region.region_epoch.as_mut().unwrap();
        epoch.version = epoch.version.max(sv) + 1;
        t.size += src.size;
        t.keys += src.keys;
        t.measured = false;
        self.heartbeat(target);
    }

    /// Every region heartbeats once; then time moves a round on. Returns
    /// how many commands PD sent.
    pub fn round(&mut self) -> usize {
        let ids: Vec<u64> = self.regions.keys().copied().collect();
        let sent = ids.into_iter().filter(|id| self.heartbeat(*id)).count();
        for r in self.regions.values_mut() {
            r.measured = true;
        }
        self.clock.advance(ROUND);
        self.store_heartbeats();
        sent
    }

    /// Rounds until one sends nothing with nothing running; the number of
    /// rounds. Checks `each` after every round.
    pub fn settle(&mut self, max_rounds: usize, mut each: impl FnMut(&Fleet)) -> usize {
        for n in 1..=max_rounds {
            let sent = self.round();
            each(self);
            if sent == 0 && self.cluster.operators().is_empty() {
                return n;
            }
        }
        panic!(
            "not settled after {max_rounds} rounds; last commands: {:?}",
            &self.log[self.log.len().saturating_sub(20)..]
        );
    }

    /// (regions, leaders) per store, as the simulated stores hold them.
    pub fn counts(&self) -> BTreeMap<u64, (usize, usize)> {
        let mut c: BTreeMap<u64, (usize, usize)> = BTreeMap::new();
        for s in self.cluster.stores() {
            c.insert(s.meta.id, (0, 0));
        }
        for r in self.regions.values() {
            for p in &r.region.peers {
                c.entry(p.store_id).or_default().0 += 1;
            }
            c.entry(r.leader_store).or_default().1 += 1;
        }
        c
    }
}

fn store(id: u64) -> metapb::Store {
    metapb::Store {
        id,
        address: format!("127.0.0.1:{}", 20160 + id),
        version: "8.5.0".into(),
        ..Default::default()
    }
}
