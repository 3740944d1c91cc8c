//! Regions as their leaders last reported them, indexed by id and by start
//! key, plus the questions scheduling asks of one region (who is a voter,
//! which peer is on a store, is a peer still catching up).

use std::collections::{BTreeMap, HashMap, HashSet};

use tikal_proto::{metapb, pdpb};

use crate::cluster::{invalid, PdResult};

#[derive(Debug, Clone, Default)]
pub struct RegionInfo {
    pub region: metapb::Region,
    pub leader: Option<metapb::Peer>,
    /// Peers the leader reports as not caught up yet.
    pub pending_peers: Vec<metapb::Peer>,
    /// Peers the leader has not heard from for a while.
    pub down_peers: Vec<pdpb::PeerStats>,
    pub approximate_size: u64,
    pub approximate_keys: u64,
}

impl RegionInfo {
    /// A region PD loaded from disk: no leader known yet.
    pub fn from_meta(region: metapb::Region) -> RegionInfo {
        RegionInfo {
            region,
            ..Default::default()
        }
    }

    pub fn epoch(&self) -> metapb::RegionEpoch {
        self.region.region_epoch.clone().unwrap_or_default()
    }

    pub fn peer_on(&self, store_id: u64) -> Option<&metapb::Peer> {
        self.region.peers.iter().find(|p| p.store_id == store_id)
    }

    pub fn leader_store(&self) -> Option<u64> {
        self.leader.as_ref().map(|l| l.store_id)
    }

    pub fn voters(&self) -> impl Iterator<Item = &metapb::Peer> {
        self.region.peers.iter().filter(|p| is_voter(p))
    }

    pub fn learners(&self) -> impl Iterator<Item = &metapb::Peer> {
        self.region.peers.iter().filter(|p| is_learner(p))
    }

    /// Whether a membership change is half done (joint consensus).
    pub fn in_joint_state(&self) -> bool {
        self.region.peers.iter().any(|p| {
            p.role == metapb::PeerRole::IncomingVoter as i32
                || p.role == metapb::PeerRole::DemotingVoter as i32
        })
    }

    pub fn is_pending(&self, peer_id: u64) -> bool {
        self.pending_peers.iter().any(|p| p.id == peer_id)
    }

    /// The region's size in MiB as upstream counts it (any data rounds up to 1).
    pub fn approximate_size_mib(&self) -> u64 {
        match self.approximate_size {
            0 => 0,
            n => (n >> 20).max(1),
        }
    }
}

pub fn is_voter(p: &metapb::Peer) -> bool {
    p.role == metapb::PeerRole::Voter as i32
}

pub fn is_learner(p: &metapb::Peer) -> bool {
    p.role == metapb::PeerRole::Learner as i32
}

/// Peers, leaders and data a store holds, from the regions' reports.
#[derive(Debug, Clone, Copy, Default)]
pub struct StoreLoad {
    pub region_count: usize,
    pub leader_count: usize,
    pub learner_count: usize,
    pub pending_peer_count: usize,
    pub region_size_mib: u64,
    pub leader_size_mib: u64,
}

#[derive(Default)]
pub struct Regions {
    pub by_id: HashMap<u64, RegionInfo>,
    /// start key -> region id; ranges never overlap.
    pub by_start: BTreeMap<Vec<u8>, u64>,
}

impl Regions {
    pub fn insert(&mut self, info: RegionInfo) {
        for id in self.overlaps(&info.region) {
            if let Some(old) = self.by_id.remove(&id) {
                self.by_start.remove(&old.region.start_key);
            }
        }
        if let Some(old) = self.by_id.get(&info.region.id) {
            self.by_start.remove(&old.region.start_key.clone());
        }
        self.by_start
            .insert(info.region.start_key.clone(), info.region.id);
        self.by_id.insert(info.region.id, info);
    }

    /// Other regions whose ranges intersect `region`'s.
    pub fn overlaps(&self, region: &metapb::Region) -> Vec<u64> {
        let start = &region.start_key;
        let end = &region.end_key;
        self.by_id
            .values()
            .filter(|r| r.region.id != region.id)
            .filter(|r| {
                let (s, e) = (&r.region.start_key, &r.region.end_key);
                (end.is_empty() || s < end) && (e.is_empty() || e > start)
            })
            .map(|r| r.region.id)
            .collect()
    }

    /// What each store holds, by store id.
    pub fn store_loads(&self) -> HashMap<u64, StoreLoad> {
        let mut loads: HashMap<u64, StoreLoad> = HashMap::new();
        for r in self.by_id.values() {
            let size = r.approximate_size_mib();
            for p in &r.region.peers {
                let load = loads.entry(p.store_id).or_default();
                load.region_count += 1;
                load.region_size_mib += size;
                load.learner_count += usize::from(is_learner(p));
                load.pending_peer_count += usize::from(r.is_pending(p.id));
            }
            if let Some(store) = r.leader_store() {
                let load = loads.entry(store).or_default();
                load.leader_count += 1;
                load.leader_size_mib += size;
            }
        }
        loads
    }
}

/// A region as a store may report it: an id, a range that is not inverted,
/// peers with ids, on distinct stores, in known roles.
pub fn check_region(region: &metapb::Region) -> PdResult<()> {
    let id = region.id;
    if id == 0 {
        return Err(invalid("region id 0"));
    }
    if !region.end_key.is_empty() && region.start_key >= region.end_key {
        return Err(invalid(format!(
            "region {id}: start key is not below end key"
        )));
    }
    let mut ids = HashSet::new();
    let mut stores = HashSet::new();
    for p in &region.peers {
        if p.id == 0 || p.store_id == 0 || metapb::PeerRole::try_from(p.role).is_err() {
            return Err(invalid(format!("region {id}: invalid peer {p:?}")));
        }
        if !ids.insert(p.id) || !stores.insert(p.store_id) {
            return Err(invalid(format!(
                "region {id}: two peers share an id or a store"
            )));
        }
    }
    Ok(())
}
