//! Regions as their leaders last reported them, indexed by id and by start
//! key, plus the questions scheduling asks of one region (who is a voter,
//! which peer is on a store, is a peer still catching up, is it healthy)
//! and of the tree (who are its neighbours, did it split lately).
//!
//! The tree never holds overlapping ranges: a region accepted into it (a
//! heartbeat or a split report not older than what it overlaps) drops
//! every region it overlaps. That is how a split shrinks its parent and
//! how a merge's target, reporting its grown range at a newer version,
//! removes the source.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::Duration;

use tikal_proto::{metapb, pdpb};

use crate::cluster::{invalid, PdResult};

#[derive(Debug, Clone, Default)]
pub struct RegionInfo {
    pub region: metapb::Region,
    pub leader: Option<metapb::Peer>,
    /// The Raft term the leader reported (0: not known, as after a split
    /// report): a heartbeat of an older term is a deposed leader's.
    pub term: u64,
    /// Peers the leader reports as not caught up yet.
    pub pending_peers: Vec<metapb::Peer>,
    /// Peers the leader has not heard from for a while.
    pub down_peers: Vec<pdpb::PeerStats>,
    pub approximate_size: u64,
    pub approximate_keys: u64,
    /// Whether the size is known: a heartbeat of the region's current
    /// range carried one (see `cluster::reported_size`). Until then the
    /// region is never merged.
    pub size_reported: bool,
    /// Bytes and keys written in the last reported interval, and the rates
    /// they make (per second).
    pub written_bytes: u64,
    pub written_keys: u64,
    pub write_bytes_rate: f64,
    pub write_keys_rate: f64,
    /// When PD last heard of the region (Unix nanoseconds; 0 = loaded).
    pub reported_at: i64,
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

    /// Whether the leader reported the peer down.
    pub fn is_down(&self, peer_id: u64) -> bool {
        (self.down_peers.iter()).any(|d| d.peer.as_ref().is_some_and(|p| p.id == peer_id))
    }

    /// Led, fully replicated (`max_replicas` voters, no learner), every
    /// peer caught up and alive: a region schedulers may move or merge.
    pub fn is_healthy(&self, max_replicas: usize) -> bool {
        self.leader.is_some()
            && self.pending_peers.is_empty()
            && self.down_peers.is_empty()
            && self.learners().next().is_none()
            && !self.in_joint_state()
            && self.voters().count() == max_replicas
    }

    /// The region's weight in a store's region score: its size, at least
    /// 1 MiB, as upstream counts an empty or unreported region.
    pub fn score_mib(&self) -> u64 {
        self.approximate_size_mib().max(1)
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
    /// What balance-region evens out: the sizes of the regions the store
    /// holds a peer of, each at least 1 MiB (see [`RegionInfo::score_mib`]).
    pub region_score: u64,
    pub leader_size_mib: u64,
    /// What balance-leader evens out under the `size` policy: the sizes of
    /// the regions the store leads, each at least 1 MiB.
    pub leader_score_mib: u64,
    /// Write flow of the regions the store leads (per second).
    pub write_bytes_rate: f64,
    pub write_keys_rate: f64,
    /// The region with the most written bytes the store leads, and its rate.
    pub hottest_leader_region: Option<(u64, f64)>,
}

impl StoreLoad {
    /// What balance-leader evens out under `policy`: leaders, or the sizes
    /// of the regions led (MiB).
    pub fn leader_score(&self, policy: crate::config::LeaderPolicy) -> u64 {
        match policy {
            crate::config::LeaderPolicy::Count => self.leader_count as u64,
            crate::config::LeaderPolicy::Size => self.leader_score_mib,
        }
    }
}

#[derive(Default)]
pub struct Regions {
    pub by_id: HashMap<u64, RegionInfo>,
    /// start key -> region id; ranges never overlap.
    pub by_start: BTreeMap<Vec<u8>, u64>,
    /// When regions split or were made by a split (Unix nanoseconds).
    split_at: HashMap<u64, i64>,
}

impl Regions {
    /// Puts `info` in the tree; returns the ids of the regions it
    /// overlapped, which are dropped.
    pub fn insert(&mut self, info: RegionInfo) -> Vec<u64> {
        let overlapped = self.overlaps(&info.region);
        for id in &overlapped {
            if let Some(old) = self.by_id.remove(id) {
                self.by_start.remove(&old.region.start_key);
            }
        }
        if let Some(old) = self.by_id.get(&info.region.id) {
            self.by_start.remove(&old.region.start_key.clone());
        }
        self.by_start
            .insert(info.region.start_key.clone(), info.region.id);
        self.by_id.insert(info.region.id, info);
        overlapped
    }

    /// Whether a report of `region` is older than what PD knows: an older
    /// epoch than the region's own, an older term than its last leader's
    /// (`term` 0: unknown), or an older version than a region it
    /// overlaps. Such a report must not change the tree.
    pub fn is_stale(&self, region: &metapb::Region, term: u64) -> bool {
        let epoch = region.region_epoch.clone().unwrap_or_default();
        let overlapped_by_newer = self.overlaps(region).into_iter().any(|id| {
            self.by_id
                .get(&id)
                .is_some_and(|r| r.epoch().version > epoch.version)
        });
        let older_than_itself = self.by_id.get(&region.id).is_some_and(|old| {
            let term_behind = term > 0 && term < old.term;
            let old = old.epoch();
            term_behind || epoch.version < old.version || epoch.conf_ver < old.conf_ver
        });
        overlapped_by_newer || older_than_itself
    }

    /// Whether `region` (as reported) shows a split of the region PD has
    /// under its id: a newer version over a narrower range, or a new id
    /// that takes keys from regions PD knows.
    pub fn shows_split(&self, region: &metapb::Region) -> bool {
        match self.by_id.get(&region.id) {
            Some(old) => {
                let (o, n) = (&old.region, region);
                // An empty end key is +inf.
                let end_within =
                    o.end_key.is_empty() || (!n.end_key.is_empty() && n.end_key <= o.end_key);
                let narrower = n.start_key >= o.start_key
                    && end_within
                    && (n.start_key != o.start_key || n.end_key != o.end_key);
                let version = n.region_epoch.clone().unwrap_or_default().version;
                narrower && version > old.epoch().version
            }
            None => !self.overlaps(region).is_empty(),
        }
    }

    /// Remembers that `ids` split now; forgets splits older than `keep`.
    pub fn record_split(&mut self, ids: &[u64], now: i64, keep: Duration) {
        self.split_at
            .retain(|_, at| crate::clock::elapsed(*at, now) < keep);
        for id in ids {
            self.split_at.insert(*id, now);
        }
    }

    /// Whether region `id` split less than `interval` before `now`.
    pub fn split_within(&self, id: u64, now: i64, interval: Duration) -> bool {
        self.split_at
            .get(&id)
            .is_some_and(|at| crate::clock::elapsed(*at, now) < interval)
    }

    /// The regions just before and just after `r` in key order, if they
    /// touch its range.
    pub fn neighbours(&self, r: &metapb::Region) -> (Option<&RegionInfo>, Option<&RegionInfo>) {
        let prev = if r.start_key.is_empty() {
            None
        } else {
            self.by_start
                .range(..r.start_key.clone())
                .next_back()
                .and_then(|(_, id)| self.by_id.get(id))
                .filter(|p| p.region.end_key == r.start_key)
        };
        let next = if r.end_key.is_empty() {
            None
        } else {
            self.by_start
                .get(&r.end_key)
                .and_then(|id| self.by_id.get(id))
        };
        (prev, next)
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
                load.region_size_mib = load.region_size_mib.saturating_add(size);
                load.region_score = load.region_score.saturating_add(r.score_mib());
                load.learner_count += usize::from(is_learner(p));
                load.pending_peer_count += usize::from(r.is_pending(p.id));
            }
            if let Some(store) = r.leader_store() {
                let load = loads.entry(store).or_default();
                load.leader_count += 1;
                load.leader_size_mib = load.leader_size_mib.saturating_add(size);
                load.leader_score_mib = load.leader_score_mib.saturating_add(r.score_mib());
                load.write_bytes_rate += r.write_bytes_rate;
                load.write_keys_rate += r.write_keys_rate;
                // Ties: the lowest region id.
                let hotter = load
                    .hottest_leader_region
                    .is_none_or(|(id, rate)| (r.write_bytes_rate, id) > (rate, r.region.id));
                if hotter {
                    load.hottest_leader_region = Some((r.region.id, r.write_bytes_rate));
                }
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
