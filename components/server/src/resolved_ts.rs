//! Safe timestamps for stale reads, on every replica.
//!
//! Every `[resolved-ts] advance-ts-interval` the store takes a timestamp
//! from PD and raises `max_ts` to it. For each region it leads it then
//! computes a safe ts (that timestamp, lowered below every lock of the
//! region), notes its applied index after that, and asks every store
//! holding a peer of the region whether it still sees this peer leading in
//! this term (`tikvpb.Tikv/CheckLeader`, as TiKV's resolved-ts worker
//! does). Once a quorum of voters agreed, the pair is confirmed: no leader
//! of a later term can have committed below the timestamp taken before
//! the question. The leader serves stale reads up to it at once; the next
//! round carries it to the other replicas, which serve them once they have
//! applied that index ([`tikal_raftstore::ReadProgress`]).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use futures::future::join_all;
use tikal_proto::kvrpcpb::{CheckLeaderRequest, CheckLeaderResponse, LeaderInfo, ReadState};
use tikal_proto::metapb::{self, PeerRole};
use tikal_proto::tikvpb::tikv_client::TikvClient;
use tikal_raftstore::{region_version, RegionView, Router};
use tikal_storage::txn::TxnStorage;
use tonic::transport::Channel;
use tracing::debug;

use crate::pd_client::PdClient;

/// Longest wait for one store's CheckLeader answer.
const CHECK_LEADER_TIMEOUT: Duration = Duration::from_secs(2);
/// How long a store whose CheckLeader failed is left alone, at first and
/// at most.
const MIN_RETRY: Duration = Duration::from_secs(1);
const MAX_RETRY: Duration = Duration::from_secs(30);

pub async fn advance_loop(
    pd: PdClient,
    router: Router,
    txn: TxnStorage,
    store_id: u64,
    every: Duration,
) {
    let mut advancer = Advancer {
        pd,
        router,
        txn,
        store_id,
        stores: HashMap::new(),
        unreachable: HashMap::new(),
    };
    loop {
        advancer.round().await;
        tokio::time::sleep(every).await;
    }
}

/// Refreshes the store's `max_ts` ceiling from PD every `every`
/// (`[storage.max-ts] cache-sync-interval`; see
/// `tikal_storage::txn::MaxTsPolicy`).
pub async fn max_ts_limit_loop(pd: PdClient, txn: TxnStorage, every: Duration) {
    loop {
        match pd.tso().await {
            Ok(ts) => txn.refresh_max_ts_limit(ts),
            Err(e) => debug!(error = %e, "cannot refresh the max_ts ceiling"),
        }
        tokio::time::sleep(every).await;
    }
}

struct Advancer {
    pd: PdClient,
    router: Router,
    txn: TxnStorage,
    store_id: u64,
    /// Connections to the other stores, dropped on error.
    stores: HashMap<u64, TikvClient<Channel>>,
    /// Stores whose last CheckLeader failed: not asked again before the
    /// instant, and the wait doubles while they keep failing.
    unreachable: HashMap<u64, (Instant, Duration)>,
}

/// A region this store leads, as asked about this round.
struct Candidate {
    view: RegionView,
    state: ReadState,
}

impl Advancer {
    async fn round(&mut self) {
        let ts = match self.pd.tso().await {
            Ok(ts) => ts,
            Err(e) => {
                debug!(error = %e, "cannot advance the stale-read ts");
                return;
            }
        };
        self.txn.raise_max_ts(ts);
        // The lock scans read the engine: off the async runtime.
        let (router, txn) = (self.router.clone(), self.txn.clone());
        let candidates =
            match tokio::task::spawn_blocking(move || candidates(&router, &txn, ts)).await {
                Ok(c) => c,
                Err(e) => {
                    debug!(error = %e, "safe ts computation failed");
                    return;
                }
            };
        let mut asks: HashMap<u64, Vec<LeaderInfo>> = HashMap::new();
        for c in &candidates {
            let info = self.leader_info(c);
            for p in &c.view.region.peers {
                if p.store_id != self.store_id {
                    asks.entry(p.store_id).or_default().push(info.clone());
                }
            }
        }
        let now = Instant::now();
        asks.retain(|store, _| {
            self.unreachable
                .get(store)
                .is_none_or(|(until, _)| now >= *until)
        });
        let answers = join_all(asks.into_iter().map(|(store, regions)| {
            let client = self.stores.get(&store).cloned();
            let pd = self.pd.clone();
            async move { (store, check_leader(pd, store, client, regions, ts).await) }
        }))
        .await;
        let mut agreed: HashMap<u64, Vec<u64>> = HashMap::new();
        for (store, answer) in answers {
            match answer {
                Ok((client, regions)) => {
                    self.stores.insert(store, client);
                    self.unreachable.remove(&store);
                    for r in regions {
                        agreed.entry(r).or_default().push(store);
                    }
                }
                Err(e) => {
                    debug!(store, error = %e, "CheckLeader failed");
                    self.stores.remove(&store);
                    let wait = self
                        .unreachable
                        .get(&store)
                        .map_or(MIN_RETRY, |(_, w)| (*w * 2).min(MAX_RETRY));
                    self.unreachable
                        .insert(store, (Instant::now() + wait, wait));
                }
            }
        }
        for c in candidates {
            let id = c.view.region.id;
            let mut stores = agreed.remove(&id).unwrap_or_default();
            let own_peer = (c.view.region.peers.iter())
                .find(|p| p.store_id == self.store_id)
                .map_or(0, |p| p.id);
            // The published view lags Raft by up to a round; its live
            // term and leader must agree too.
            let still_leads = own_peer != 0
                && c.view.read_progress.leader() == (c.view.term, own_peer)
                && self
                    .router
                    .region_view(id)
                    .is_some_and(|v| v.is_leader && v.term == c.view.term);
            if still_leads {
                stores.push(self.store_id);
            }
            if quorum_agrees(&c.view.region, &stores) {
                let version = region_version(&c.view.region);
                c.view.read_progress.update(tikal_raftstore::ReadState {
                    applied_index: c.state.applied_index,
                    safe_ts: c.state.safe_ts,
                    version,
                });
            }
        }
    }

    fn leader_info(&self, c: &Candidate) -> LeaderInfo {
        // The last state a quorum confirmed (kept in the leader's own read
        // progress, or one its predecessor sent: as valid), if it is for
        // the region's current version.
        let confirmed = c.view.read_progress.ready(region_version(&c.view.region));
        LeaderInfo {
            region_id: c.view.region.id,
            peer_id: c.view.leader.as_ref().map_or(0, |p| p.id),
            term: c.view.term,
            region_epoch: c.view.region.region_epoch.clone(),
            read_state: confirmed.map(|r| ReadState {
                applied_index: r.applied_index,
                safe_ts: r.safe_ts,
            }),
        }
    }
}

/// The regions this store leads, each with its safe ts from `pd_ts` and
/// the applied index read after computing it.
fn candidates(router: &Router, txn: &TxnStorage, pd_ts: u64) -> Vec<Candidate> {
    router
        .region_views()
        .into_iter()
        .filter(|v| v.is_leader)
        .filter_map(|view| {
            let safe_ts = match txn.leader_safe_ts(&view, pd_ts) {
                Ok(ts) => ts,
                Err(e) => {
                    debug!(region = view.region.id, error = ?e, "no safe ts");
                    return None;
                }
            };
            let state = ReadState {
                applied_index: view.read_progress.applied(),
                safe_ts,
            };
            Some(Candidate { view, state })
        })
        .collect()
}

async fn check_leader(
    pd: PdClient,
    store: u64,
    client: Option<TikvClient<Channel>>,
    regions: Vec<LeaderInfo>,
    ts: u64,
) -> anyhow::Result<(TikvClient<Channel>, Vec<u64>)> {
    let mut client = match client {
        Some(c) => c,
        None => crate::raft_transport::connect(&pd, store).await?,
    };
    let req = CheckLeaderRequest { regions, ts };
    let resp = tokio::time::timeout(CHECK_LEADER_TIMEOUT, client.check_leader(req))
        .await
        .map_err(|_| anyhow::anyhow!("CheckLeader to store {store} timed out"))??;
    Ok((client, resp.into_inner().regions))
}

/// Whether the stores in `agreed` hold a majority of the region's voters
/// (of both configurations while a joint change is under way).
fn quorum_agrees(region: &metapb::Region, agreed: &[u64]) -> bool {
    let majority = |in_config: &dyn Fn(PeerRole) -> bool| {
        let voters: Vec<&metapb::Peer> = region
            .peers
            .iter()
            .filter(|p| in_config(PeerRole::try_from(p.role).unwrap_or(PeerRole::Learner)))
            .collect();
        let yes = voters
            .iter()
            .filter(|p| agreed.contains(&p.store_id))
            .count();
        voters.is_empty() || yes > voters.len() / 2
    };
    majority(&|r| matches!(r, PeerRole::Voter | PeerRole::IncomingVoter))
        && majority(&|r| matches!(r, PeerRole::Voter | PeerRole::DemotingVoter))
}

/// Answers another store's CheckLeader: the regions whose peer here sees
/// the asking peer leading in the same term at the same region version.
/// Those carrying a read state hand it to this replica's read progress.
/// A request naming a leader on this store itself is not another store's,
/// and is ignored.
pub fn handle_check_leader(
    router: &Router,
    store_id: u64,
    req: CheckLeaderRequest,
) -> CheckLeaderResponse {
    let mut regions = vec![];
    for info in req.regions {
        let Some(view) = router.region_view(info.region_id) else {
            continue;
        };
        let leader_here = view.leader.as_ref().is_some_and(|l| l.store_id == store_id);
        if leader_here || !agrees(&view, &info) {
            continue;
        }
        let version = region_version(&view.region);
        if let Some(state) = info.read_state {
            view.read_progress.update(tikal_raftstore::ReadState {
                applied_index: state.applied_index,
                safe_ts: state.safe_ts,
                version,
            });
        }
        regions.push(info.region_id);
    }
    CheckLeaderResponse {
        regions,
        ts: req.ts,
    }
}

/// The smallest safe ts (see [`tikal_raftstore::ReadProgress`]) of this
/// store's regions overlapping `[start, end)` (an empty range: all of
/// them); 0 when none does.
pub fn store_safe_ts(router: &Router, start: &[u8], end: &[u8]) -> u64 {
    let whole = start.is_empty() && end.is_empty();
    router
        .region_views()
        .iter()
        .filter(|v| {
            let r = &v.region;
            whole
                || ((end.is_empty() || r.start_key.as_slice() < end)
                    && (r.end_key.is_empty() || start < r.end_key.as_slice()))
        })
        .map(|v| v.read_progress.safe_ts(region_version(&v.region)))
        // A region with none yet (just split, merging, cut off) says
        // nothing of the others, as TiKV leaves it out: with it, the
        // store's answer would be 0, which clients read as "unknown".
        .filter(|ts| *ts != 0)
        .min()
        .unwrap_or(0)
}

/// Whether this replica sees the asker leading: same term and leader
/// peer as its Raft has them now (the published view may lag a vote
/// already sent), same region epoch (as TiKV compares it).
fn agrees(view: &RegionView, info: &LeaderInfo) -> bool {
    view.read_progress.leader() == (info.term, info.peer_id)
        && view.term == info.term
        && info.region_epoch.as_ref() == view.region.region_epoch.as_ref()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_replica_agrees_only_with_the_leader_it_knows_in_its_term_and_version() {
        let epoch = |version| {
            Some(metapb::RegionEpoch {
                version,
                conf_ver: 1,
            })
        };
        let view = RegionView {
            region: metapb::Region {
                id: 1,
                region_epoch: epoch(3),
                ..Default::default()
            },
            leader: Some(metapb::Peer {
                id: 20,
                store_id: 2,
                ..Default::default()
            }),
            is_leader: false,
            term: 7,
            pending_peers: vec![],
            down_peers: vec![],
            approximate: None,
            written: Default::default(),
            read_progress: Default::default(),
        };
        view.read_progress.set_leader(7, 20);
        let info = LeaderInfo {
            region_id: 1,
            peer_id: 20,
            term: 7,
            region_epoch: epoch(3),
            read_state: None,
        };
        assert!(agrees(&view, &info));
        let moved = LeaderInfo {
            region_epoch: Some(metapb::RegionEpoch {
                version: 3,
                conf_ver: 2,
            }),
            ..info.clone()
        };
        assert!(!agrees(&view, &moved), "another membership");
        let deposed = LeaderInfo {
            term: 6,
            ..info.clone()
        };
        assert!(!agrees(&view, &deposed), "a leader of an older term");
        let other = LeaderInfo {
            peer_id: 30,
            ..info.clone()
        };
        assert!(!agrees(&view, &other), "another peer");
        let split = LeaderInfo {
            region_epoch: epoch(4),
            ..info.clone()
        };
        assert!(!agrees(&view, &split), "another region version");
        // The replica has voted in a newer term (or campaigns) and the
        // vote may have left, though its published view is a round
        // behind: it no longer vouches for the old leader.
        view.read_progress.set_leader(8, 0);
        assert!(!agrees(&view, &info), "voted since in a newer term");
    }

    fn region(peers: &[(u64, PeerRole)]) -> metapb::Region {
        metapb::Region {
            id: 1,
            peers: peers
                .iter()
                .map(|&(store_id, role)| metapb::Peer {
                    id: store_id * 10,
                    store_id,
                    role: role as i32,
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        }
    }

    #[test]
    fn a_quorum_of_voters_confirms_and_learners_do_not_count() {
        use PeerRole::*;
        let r = region(&[(1, Voter), (2, Voter), (3, Voter), (4, Learner)]);
        assert!(!quorum_agrees(&r, &[1]));
        assert!(!quorum_agrees(&r, &[1, 4]), "a learner is no vote");
        assert!(quorum_agrees(&r, &[1, 3]));
        let single = region(&[(1, Voter)]);
        assert!(quorum_agrees(&single, &[1]));
    }

    #[test]
    fn a_joint_configuration_needs_a_majority_of_both_halves() {
        use PeerRole::*;
        // Old {1,2,3}, new {1,4,5}: 2 and 3 leave, 4 and 5 come in.
        let r = region(&[
            (1, Voter),
            (2, DemotingVoter),
            (3, DemotingVoter),
            (4, IncomingVoter),
            (5, IncomingVoter),
        ]);
        assert!(!quorum_agrees(&r, &[1, 2]), "only the old half");
        assert!(!quorum_agrees(&r, &[1, 4]), "only the new half");
        assert!(quorum_agrees(&r, &[1, 2, 4]));
    }
}
