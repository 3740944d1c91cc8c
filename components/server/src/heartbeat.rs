//! Reporting to PD: store heartbeats on a timer, region heartbeats whenever a
//! region this store leads changes and on a timer.
//!
//! Region heartbeats travel on one long-lived stream; if it breaks (PD
//! restarted), it is reopened and every led region is reported again, so PD
//! relearns leaders without waiting for the next timer.

use std::sync::Arc;
use std::time::Duration;

use tikal_proto::raft_cmdpb::ChangePeerRequest;
use tikal_proto::{metapb, pdpb};
use tikal_raftstore::{RegionStats, RegionView, Router, StoreEvent};
use tokio::sync::{mpsc, Notify};
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::StreamExt;
use tracing::{debug, info, warn};

use crate::pd_client::PdClient;

pub struct StoreStatsSource {
    pub store_id: u64,
    pub start_time: u32,
    pub disk: Arc<crate::disk::DiskMonitor>,
    pub snaps: Arc<tikal_raftstore::SnapManager>,
}

impl StoreStatsSource {
    /// What a store heartbeat reports, for a store holding `regions`.
    fn stats(&self, regions: usize) -> pdpb::StoreStats {
        // The room the disk monitor last measured (once a second), as TiKV
        // reports it: the capacity may be `[raftstore] capacity`.
        let space = self.disk.last();
        let snaps = self.snaps.counts();
        pdpb::StoreStats {
            store_id: self.store_id,
            capacity: space.capacity,
            available: space.available,
            region_count: u32::try_from(regions).unwrap_or(u32::MAX),
            start_time: self.start_time,
            used_size: space.used,
            sending_snap_count: snaps.sending,
            receiving_snap_count: snaps.receiving,
            ..Default::default()
        }
    }
}

/// Sends store heartbeats every `every`, and at once when `kick` fires (the
/// region heartbeat stream reconnected: PD may have restarted and should see
/// this store Up without waiting a whole interval). Returns PD's reason
/// once PD says the store is Tombstone: the server must then stop.
pub async fn store_heartbeat_loop(
    pd: PdClient,
    router: Router,
    src: StoreStatsSource,
    every: Duration,
    kick: Arc<Notify>,
) -> String {
    loop {
        let stats = src.stats(router.region_views().len());
        // After a failure (PD down or restarting) retry soon, so a restarted
        // PD sees the store Up again without waiting a whole interval.
        let wait = match pd.store_heartbeat(stats).await {
            Ok(()) => every,
            Err(e) if e.is::<crate::pd_client::StoreTombstone>() => return e.to_string(),
            Err(e) => {
                warn!(error = %e, "store heartbeat failed");
                every.min(Duration::from_secs(1))
            }
        };
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = kick.notified() => {}
        }
    }
}

pub async fn region_heartbeat_loop(
    pd: PdClient,
    router: Router,
    mut events: mpsc::UnboundedReceiver<StoreEvent>,
    every: Duration,
    reconnected: Arc<Notify>,
) {
    let mut tick = tokio::time::interval(every);
    let mut first = true;
    let mut flows = Flows::default();
    let splitting = Splitting::default();
    loop {
        // (Re)open the stream and report every region this store leads.
        let (tx, rx) = mpsc::channel::<pdpb::RegionHeartbeatRequest>(1024);
        let mut grpc = pd.grpc();
        let responses = match grpc.region_heartbeat(ReceiverStream::new(rx)).await {
            Ok(r) => r.into_inner(),
            Err(e) => {
                warn!(error = %e, "cannot open region heartbeat stream; retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        if !first {
            reconnected.notify_one();
        }
        first = false;
        let mut responses = Box::pin(responses);
        let mut broken = false;
        for view in router.region_views() {
            broken |= send(&pd, &tx, &view, &mut flows).await;
        }
        while !broken {
            tokio::select! {
                ev = events.recv() => match ev {
                    Some(StoreEvent::RegionChanged(view)) => {
                        broken = send(&pd, &tx, &view, &mut flows).await
                    }
                    // The region's leader reports the change.
                    Some(StoreEvent::RegionRemoved(id)) => {
                        flows.0.remove(&id);
                    }
                    Some(StoreEvent::LeaderMissing { region, peer }) => {
                        let (pd, router) = (pd.clone(), router.clone());
                        tokio::spawn(async move { check_stale(&pd, &router, region, peer.id).await });
                    }
                    // The store asks again at each split check until the
                    // split shows; one under way is enough.
                    Some(StoreEvent::AskSplit { region, split_keys }) => {
                        if let Some(under_way) = splitting.begin(region.id) {
                            let (pd, router) = (pd.clone(), router.clone());
                            tokio::spawn(async move {
                                split(&pd, &router, &region, split_keys).await;
                                drop(under_way);
                            });
                        }
                    }
                    None => return,
                },
                _ = tick.tick() => {
                    for view in router.region_views() {
                        broken |= send(&pd, &tx, &view, &mut flows).await;
                    }
                }
                resp = responses.next() => match resp {
                    Some(Ok(r)) => carry_out(&pd, &router, &splitting, r),
                    Some(Err(e)) => {
                        warn!(error = %e, "region heartbeat stream broke; reopening");
                        broken = true;
                    }
                    None => broken = true,
                },
            }
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Carries out an operator step PD sent for a region this store leads:
/// a membership change through Raft, a leader transfer, or a merge (the
/// store carries it through once prepared). Its result shows
/// in the next heartbeats; PD resends or times out what did not happen.
/// Regions a split is under way in, at PD's keys or the split checker's:
/// both ask again (PD with every heartbeat, the store at every check)
/// until the split shows, and one is enough.
#[derive(Clone, Default)]
struct Splitting(Arc<parking_lot::Mutex<std::collections::HashSet<u64>>>);

impl Splitting {
    /// Marks a split under way in the region, until the guard goes; None
    /// if one already is.
    fn begin(&self, region_id: u64) -> Option<SplitUnderWay> {
        let fresh = self.0.lock().insert(region_id);
        fresh.then(|| SplitUnderWay {
            splitting: self.clone(),
            region_id,
        })
    }
}

struct SplitUnderWay {
    splitting: Splitting,
    region_id: u64,
}

impl Drop for SplitUnderWay {
    fn drop(&mut self) {
        self.splitting.0.lock().remove(&self.region_id);
    }
}

fn carry_out(
    pd: &PdClient,
    router: &Router,
    splitting: &Splitting,
    r: pdpb::RegionHeartbeatResponse,
) {
    let region_id = r.region_id;
    if let Some(split_region) = r.split_region.clone() {
        let epoch = r.region_epoch.clone();
        match pdpb::CheckPolicy::try_from(split_region.policy) {
            Ok(pdpb::CheckPolicy::Usekey) => {
                if let Some(under_way) = splitting.begin(region_id) {
                    let (pd, router) = (pd.clone(), router.clone());
                    tokio::spawn(async move {
                        let _under_way = under_way;
                        let keys = split_region.keys;
                        if let Some(region) = led_at(&router, region_id, epoch.as_ref()) {
                            let keys = keys_inside(&region, keys);
                            if !keys.is_empty() {
                                split(&pd, &router, &region, keys).await;
                            }
                        }
                    });
                }
            }
            Ok(pdpb::CheckPolicy::Scan | pdpb::CheckPolicy::Approximate) => {
                router.split_at_middle(region_id, epoch)
            }
            Err(_) => warn!(
                region_id,
                policy = split_region.policy,
                "split asked for with an unknown policy"
            ),
        }
    }
    let steps = match (r.change_peer_v2, r.change_peer) {
        (Some(v2), _) if !v2.changes.is_empty() => v2.changes,
        (_, Some(one)) => vec![one],
        _ => vec![],
    };
    let changes: Vec<ChangePeerRequest> = steps
        .into_iter()
        .map(|c| ChangePeerRequest {
            change_type: c.change_type,
            peer: c.peer,
        })
        .collect();
    if !changes.is_empty() {
        let router = router.clone();
        let epoch = r.region_epoch.clone();
        tokio::spawn(async move {
            match router.change_peers(region_id, epoch, changes).await {
                Ok(region) => info!(region_id, peers = ?region.peers, "membership changed"),
                Err(e) => debug!(region_id, error = %e, "membership change not made"),
            }
        });
    }
    if let Some(peer) = r.transfer_leader.and_then(|t| t.peer) {
        router.transfer_leader(region_id, peer.id, r.region_epoch.clone());
    }
    if let Some(target) = r.merge.and_then(|m| m.target) {
        let router = router.clone();
        let epoch = r.region_epoch.clone();
        tokio::spawn(async move {
            let target_id = target.id;
            match router.prepare_merge(region_id, epoch, target).await {
                Ok(_) => info!(region_id, target = target_id, "merge prepared"),
                Err(e) => debug!(region_id, error = %e, "merge not prepared"),
            }
        });
    }
}

/// Splits `region` at `keys` (ids from PD), and logs how it went.
async fn split(pd: &PdClient, router: &Router, region: &metapb::Region, keys: Vec<Vec<u8>>) {
    let region_id = region.id;
    let count = keys.len();
    match crate::split::split_region(pd, router, region, keys).await {
        Ok(regions) => info!(
            region_id,
            keys = count,
            regions = regions.len(),
            "region split"
        ),
        Err(e) if e.is_race() => debug!(region_id, error = %e, "split not made"),
        Err(e) => warn!(region_id, error = %e, "split not made"),
    }
}

/// The region as this store leads it, if it does at `epoch` (any if None).
fn led_at(
    router: &Router,
    region_id: u64,
    epoch: Option<&metapb::RegionEpoch>,
) -> Option<metapb::Region> {
    let view = router.region_view(region_id)?;
    let at_epoch = epoch.is_none_or(|e| Some(e) == view.region.region_epoch.as_ref());
    (view.is_leader && at_epoch).then_some(view.region)
}

/// PD's split keys for `region` that lie strictly inside it, in order and
/// once each: a split key on or outside a boundary splits nothing. A key
/// with a version's timestamp (as tools print stored keys) is cut to its
/// user key, as TiKV strips it: a split never falls between two versions
/// of one key.
fn keys_inside(region: &metapb::Region, keys: Vec<Vec<u8>>) -> Vec<Vec<u8>> {
    let mut keys: Vec<Vec<u8>> = (keys.iter())
        .map(|k| tikal_raftstore::user_key(k).to_vec())
        .collect();
    keys.retain(|k| {
        k.as_slice() > region.start_key.as_slice()
            && (region.end_key.is_empty() || k.as_slice() < region.end_key.as_slice())
    });
    keys.sort();
    keys.dedup();
    keys
}

/// What each region led here had written at its last heartbeat, and when
/// (Unix seconds): a heartbeat reports what was written since.
#[derive(Default)]
struct Flows(std::collections::HashMap<u64, ((u64, u64), u64)>);

impl Flows {
    /// Bytes and keys written since the region's last heartbeat from this
    /// store, and that interval; nothing the first time.
    fn since_last(&mut self, view: &RegionView) -> (u64, u64, pdpb::TimeInterval) {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let total = view.written.total();
        let ((bytes, keys), since) = self
            .0
            .insert(view.region.id, (total, now))
            .unwrap_or((total, now));
        let interval = pdpb::TimeInterval {
            start_timestamp: since,
            end_timestamp: now,
        };
        (
            total.0.saturating_sub(bytes),
            total.1.saturating_sub(keys),
            interval,
        )
    }
}

/// Asks PD about a region this store's peer has known no leader of (or,
/// naive, heard nothing from) for long, and destroys the peer if PD shows
/// it stale.
async fn check_stale(pd: &PdClient, router: &Router, region: metapb::Region, peer_id: u64) {
    match pd.region_by_id(region.id).await {
        Ok(known) if tikal_raftstore::peer_is_stale(&region, peer_id, known.as_ref()) => {
            info!(
                region_id = region.id,
                "PD shows this peer stale; destroying it"
            );
            router.destroy_stale_peer(
                region.id,
                peer_id,
                region.region_epoch.clone().unwrap_or_default(),
            );
        }
        Ok(_) => debug!(
            region_id = region.id,
            "no leader, but PD still has this peer, or does not know its region"
        ),
        Err(e) => {
            debug!(region_id = region.id, error = %e, "cannot ask PD about a leaderless peer")
        }
    }
}

/// Sends one heartbeat if this store leads the region; true if the stream is gone.
async fn send(
    pd: &PdClient,
    tx: &mpsc::Sender<pdpb::RegionHeartbeatRequest>,
    view: &RegionView,
    flows: &mut Flows,
) -> bool {
    if !view.is_leader {
        return false;
    }
    let (bytes_written, keys_written, interval) = flows.since_last(view);
    let req = pdpb::RegionHeartbeatRequest {
        header: pd.header(),
        region: Some(view.region.clone()),
        leader: view
            .leader
            .clone()
            .or_else(|| Some(metapb::Peer::default())),
        term: view.term,
        pending_peers: view.pending_peers.clone(),
        down_peers: (view.down_peers.iter())
            .map(|(peer, secs)| pdpb::PeerStats {
                peer: Some(peer.clone()),
                down_seconds: *secs,
            })
            .collect(),
        approximate_size: reported_size(view.approximate),
        approximate_keys: view.approximate.map_or(0, |a| a.keys),
        bytes_written,
        keys_written,
        interval: Some(interval),
        ..Default::default()
    };
    tx.send(req).await.is_err()
}

/// The size a heartbeat reports: 0 while this peer has not measured the
/// region's current range (after a split or a merge, or on a new leader),
/// at least 1 byte once it has, even an empty region. PD keeps what it knew
/// of the same range and takes a range it does not know the size of for no
/// merge source; as 0, a region that just took in a merge would pass for
/// empty and be merged on at once, region after region (found by
/// `tests/nemesis.rs`: whole stretches merged, split and merged again).
fn reported_size(approximate: Option<RegionStats>) -> u64 {
    approximate.map_or(0, |a| a.size.max(1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_store_heartbeat_reports_the_snapshots_being_sent_and_received() {
        let dir = tempfile::tempdir().unwrap();
        let disk = crate::disk::DiskMonitor::new(dir.path().into(), 0, 0, Default::default());
        let src = StoreStatsSource {
            store_id: 4,
            start_time: 1,
            disk: Arc::new(disk),
            snaps: Arc::new(tikal_raftstore::SnapManager::open(&dir.path().join("snap")).unwrap()),
        };
        let sending = [src.snaps.sending(), src.snaps.sending()];
        let receiving = src.snaps.receiving();
        let stats = src.stats(3);
        assert_eq!((stats.store_id, stats.region_count), (4, 3));
        assert_eq!(
            (stats.sending_snap_count, stats.receiving_snap_count),
            (2, 1)
        );
        drop((sending, receiving));
        let stats = src.stats(3);
        assert_eq!(
            (stats.sending_snap_count, stats.receiving_snap_count),
            (0, 0)
        );
    }

    #[test]
    fn one_split_at_pds_keys_runs_per_region_at_a_time() {
        let splitting = Splitting::default();
        let first = splitting.begin(7).expect("none under way");
        // PD asks again with the next heartbeat: no second split.
        assert!(splitting.begin(7).is_none());
        assert!(splitting.begin(8).is_some(), "another region's is free");
        drop(first);
        assert!(splitting.begin(7).is_some(), "done: PD may ask again");
    }

    #[test]
    fn split_keys_from_pd_are_user_keys_inside_the_region() {
        use tikal_storage::mvcc::codec::{append_ts, encode_key};
        let region = metapb::Region {
            start_key: encode_key(b"b"),
            end_key: encode_key(b"y"),
            ..Default::default()
        };
        let keys = vec![
            append_ts(encode_key(b"k"), 5),
            encode_key(b"k"),
            encode_key(b"a"),
            encode_key(b"b"),
            encode_key(b"c"),
        ];
        // k's version is cut to k (once); a and b split nothing.
        let expected = vec![encode_key(b"c"), encode_key(b"k")];
        assert_eq!(keys_inside(&region, keys), expected);
    }

    #[test]
    fn a_measured_region_never_reports_the_unknown_size() {
        assert_eq!(reported_size(None), 0);
        let empty = RegionStats { size: 0, keys: 0 };
        assert_eq!(reported_size(Some(empty)), 1);
        let some = RegionStats {
            size: 4096,
            keys: 7,
        };
        assert_eq!(reported_size(Some(some)), 4096);
    }
}
