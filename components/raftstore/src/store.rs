//! The store loop: one thread driving every peer on this store.
//!
//! See the crate docs for the round structure. The loop owns all `Peer`s;
//! other threads reach it through the [`Router`] (a channel) and observe it
//! through the published [`RegionView`]s.

use std::collections::HashMap;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};
use parking_lot::RwLock;
use raft::Ready;
use tikal_engine::{KvEngine, RaftLogEngine, RaftLogWrite};
use tikal_proto::metapb;
use tokio::sync::{mpsc, oneshot};
use tracing::{error, info, warn};

use crate::apply::{Applier, ApplyOutput};
use crate::meta;
use crate::peer::{Callback, Peer};
use crate::{RaftstoreError, Result};

/// Settings under `[raftstore]`.
#[derive(Debug, Clone)]
pub struct RaftstoreConfig {
    /// Raft's logical clock tick.
    pub base_tick: Duration,
    pub election_ticks: usize,
    pub heartbeat_ticks: usize,
    /// Applied entries kept in the log after compaction.
    pub log_keep_entries: u64,
    /// Most messages handled per round before the loop takes readies.
    pub max_batch: usize,
    /// Nice value of the loop thread (0 = unchanged). Under overload the
    /// gRPC intake must keep up, so requests wait in the write scheduler,
    /// which orders them, rather than unread in sockets, which cannot.
    pub thread_nice: i32,
    /// Foreground write quota in bytes per second (0 = none): the loop takes
    /// in proposals no faster, as a store whose disk sustains only so much.
    /// Proposals beyond it wait where they were queued.
    pub write_bandwidth: u64,
}

impl Default for RaftstoreConfig {
    fn default() -> Self {
        RaftstoreConfig {
            base_tick: Duration::from_millis(100),
            election_ticks: 10,
            heartbeat_ticks: 2,
            log_keep_entries: 10_000,
            max_batch: 4096,
            thread_nice: 0,
            write_bandwidth: 0,
        }
    }
}

/// A token bucket over proposal bytes. Taking in a proposal may overdraw
/// it; the loop then takes in nothing until the debt is paid back.
struct WriteQuota {
    bytes_per_sec: f64,
    /// At most 100 ms of bandwidth saved up.
    burst: f64,
    tokens: f64,
    refilled: Instant,
}

impl WriteQuota {
    fn new(bytes_per_sec: u64) -> Option<WriteQuota> {
        (bytes_per_sec > 0).then(|| {
            let rate = bytes_per_sec as f64;
            WriteQuota {
                bytes_per_sec: rate,
                burst: rate / 10.0,
                tokens: rate / 10.0,
                refilled: Instant::now(),
            }
        })
    }

    fn consume(&mut self, bytes: usize) {
        self.tokens -= bytes as f64;
    }

    /// How long until the loop may take in more proposals.
    fn wait(&mut self, now: Instant) -> Duration {
        let elapsed = now.saturating_duration_since(self.refilled).as_secs_f64();
        self.refilled = now;
        self.tokens = (self.tokens + elapsed * self.bytes_per_sec).min(self.burst);
        if self.tokens >= 0.0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64(-self.tokens / self.bytes_per_sec)
        }
    }
}

/// What readers need to know about a region, published after every round.
#[derive(Debug, Clone)]
pub struct RegionView {
    pub region: metapb::Region,
    pub leader: Option<metapb::Peer>,
    pub is_leader: bool,
    pub term: u64,
}

/// Things the server reports to PD.
#[derive(Debug, Clone)]
pub enum StoreEvent {
    /// A region's leadership or metadata changed.
    RegionChanged(RegionView),
}

/// Dropped by the store loop when it takes the proposal in: the moment its
/// place in the Raft log is decided. Admission control uses it to hand the
/// loop one batch at a time.
pub type Pickup = Option<Box<dyn std::any::Any + Send>>;

enum Msg {
    Propose {
        region_id: u64,
        epoch: Option<metapb::RegionEpoch>,
        cmd: Vec<u8>,
        cb: Callback,
        pickup: Pickup,
    },
    Stop,
}

/// Handle to the store loop. Cheap to clone.
#[derive(Clone)]
pub struct Router {
    tx: Sender<Msg>,
    views: Arc<RwLock<HashMap<u64, RegionView>>>,
    thread: Arc<parking_lot::Mutex<Option<JoinHandle<()>>>>,
    /// Why the loop stopped on its own, once it has.
    failure: tokio::sync::watch::Receiver<Option<String>>,
}

impl Router {
    /// Opens every region recorded in `kv` that has a peer on `store_id` and
    /// starts the loop thread.
    pub fn start(
        store_id: u64,
        cfg: RaftstoreConfig,
        kv: KvEngine,
        log: Arc<RaftLogEngine>,
        applier: Arc<dyn Applier>,
        events: mpsc::UnboundedSender<StoreEvent>,
    ) -> Result<Router> {
        let logger = slog::Logger::root(slog::Discard, slog::o!());
        let raft_cfg = raft::Config {
            election_tick: cfg.election_ticks,
            heartbeat_tick: cfg.heartbeat_ticks,
            max_size_per_msg: 1 << 20,
            max_inflight_msgs: 256,
            check_quorum: true,
            pre_vote: true,
            ..Default::default()
        };
        let mut peers = HashMap::new();
        for region in meta::load_regions(&kv)? {
            let peer = Peer::open(store_id, region, &kv, log.clone(), &raft_cfg, &logger)?;
            info!(region_id = peer.region_id(), "opened region peer");
            peers.insert(peer.region_id(), peer);
        }
        let (tx, rx) = crossbeam_channel::unbounded();
        let views = Arc::new(RwLock::new(HashMap::new()));
        let mut store = StoreLoop {
            quota: WriteQuota::new(cfg.write_bandwidth),
            cfg,
            kv,
            log,
            applier,
            peers,
            rx,
            views: views.clone(),
            events,
            published: HashMap::new(),
        };
        store.publish_all();
        let (failed_tx, failure) = tokio::sync::watch::channel(None);
        let thread = std::thread::Builder::new()
            .name("raftstore".into())
            .spawn(move || {
                let views = store.views.clone();
                let outcome =
                    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| store.run()));
                let reason = match outcome {
                    Ok(Ok(())) => return,
                    Ok(Err(e)) => e.to_string(),
                    Err(panic) => panic_message(panic.as_ref()),
                };
                // No region is served from here on: readers find none, and
                // the server, told below, stops.
                views.write().clear();
                error!(%reason, "raftstore stopped");
                let _ = failed_tx.send(Some(reason));
                // Dropping the loop drops every waiting proposal's answer
                // channel: their proposers see the store stopped.
                drop(store);
            })
            .map_err(|e| tikal_engine::EngineError::Corrupted {
                what: "raftstore thread",
                detail: e.to_string(),
            })?;
        Ok(Router {
            tx,
            views,
            thread: Arc::new(parking_lot::Mutex::new(Some(thread))),
            failure,
        })
    }

    /// Resolves with the reason once the store loop has stopped on an error
    /// (an engine failure, a bug); never resolves while it runs or after a
    /// requested [`Router::stop`]. A store whose loop is gone must not serve.
    pub async fn failed(&self) -> String {
        let mut rx = self.failure.clone();
        loop {
            if let Some(reason) = rx.borrow_and_update().clone() {
                return reason;
            }
            if rx.changed().await.is_err() {
                return std::future::pending().await;
            }
        }
    }

    /// Proposes `cmd` to the region's Raft group and waits until it is
    /// committed and applied, returning the applier's output.
    pub async fn propose(
        &self,
        region_id: u64,
        epoch: Option<metapb::RegionEpoch>,
        cmd: Vec<u8>,
        pickup: Pickup,
    ) -> Result<ApplyOutput> {
        self.send_proposal(region_id, epoch, cmd, pickup)?
            .await
            .map_err(|_| RaftstoreError::StoreStopped)?
    }

    /// Hands `cmd` to the store loop without waiting; the receiver yields
    /// the applier's output once the command is applied.
    pub fn send_proposal(
        &self,
        region_id: u64,
        epoch: Option<metapb::RegionEpoch>,
        cmd: Vec<u8>,
        pickup: Pickup,
    ) -> Result<oneshot::Receiver<Result<ApplyOutput>>> {
        let (cb, rx) = oneshot::channel();
        self.tx
            .send(Msg::Propose {
                region_id,
                epoch,
                cmd,
                cb,
                pickup,
            })
            .map_err(|_| RaftstoreError::StoreStopped)?;
        Ok(rx)
    }

    pub fn region_view(&self, region_id: u64) -> Option<RegionView> {
        self.views.read().get(&region_id).cloned()
    }

    pub fn region_views(&self) -> Vec<RegionView> {
        self.views.read().values().cloned().collect()
    }

    /// Stops the loop and waits for it; in-flight proposals fail.
    pub fn stop(&self) {
        let _ = self.tx.send(Msg::Stop);
        if let Some(t) = self.thread.lock().take() {
            let _ = t.join();
        }
    }
}

struct StoreLoop {
    cfg: RaftstoreConfig,
    quota: Option<WriteQuota>,
    kv: KvEngine,
    log: Arc<RaftLogEngine>,
    applier: Arc<dyn Applier>,
    peers: HashMap<u64, Peer>,
    rx: Receiver<Msg>,
    views: Arc<RwLock<HashMap<u64, RegionView>>>,
    events: mpsc::UnboundedSender<StoreEvent>,
    /// (is_leader, leader peer id, term, epoch) last published per region.
    published: HashMap<u64, (bool, u64, u64, metapb::RegionEpoch)>,
}

impl StoreLoop {
    /// Runs until Stop (Ok) or until the engines fail (Err): continuing
    /// then could acknowledge writes that are not durable, or skip entries
    /// that other replicas apply.
    fn run(&mut self) -> Result<()> {
        lower_thread_priority(self.cfg.thread_nice);
        let mut next_tick = Instant::now() + self.cfg.base_tick;
        let mut last_purge = Instant::now();
        loop {
            let timeout = next_tick.saturating_duration_since(Instant::now());
            if !self.take_in(timeout) {
                break;
            }
            if Instant::now() >= next_tick {
                next_tick = Instant::now() + self.cfg.base_tick;
                for peer in self.peers.values_mut() {
                    peer.raw_node.tick();
                }
            }
            self.on_ready()?;
            if last_purge.elapsed() > Duration::from_secs(10) {
                last_purge = Instant::now();
                self.compact_logs();
            }
        }
        self.shutdown();
        Ok(())
    }

    /// Waits up to `timeout` for messages and handles every one queued, up
    /// to `max_batch` and the write quota. Returns false on Stop or when
    /// every sender is gone.
    fn take_in(&mut self, timeout: Duration) -> bool {
        let throttled = self.throttled();
        if !throttled.is_zero() {
            // Over the write quota: proposals wait where they were queued.
            std::thread::sleep(throttled.min(timeout));
            return true;
        }
        match self.rx.recv_timeout(timeout) {
            Ok(msg) => {
                if !self.handle(msg) {
                    return false;
                }
                for _ in 0..self.cfg.max_batch {
                    if !self.throttled().is_zero() {
                        break;
                    }
                    let Ok(msg) = self.rx.try_recv() else { break };
                    if !self.handle(msg) {
                        return false;
                    }
                }
                true
            }
            Err(RecvTimeoutError::Timeout) => true,
            Err(RecvTimeoutError::Disconnected) => false,
        }
    }

    fn throttled(&mut self) -> Duration {
        match &mut self.quota {
            Some(q) => q.wait(Instant::now()),
            None => Duration::ZERO,
        }
    }

    fn shutdown(&mut self) {
        for peer in self.peers.values_mut() {
            peer.fail_proposals();
        }
        for msg in self.rx.try_iter() {
            if let Msg::Propose { cb, .. } = msg {
                let _ = cb.send(Err(RaftstoreError::StoreStopped));
            }
        }
    }

    /// Returns false on Stop.
    fn handle(&mut self, msg: Msg) -> bool {
        match msg {
            Msg::Propose {
                region_id,
                epoch,
                cmd,
                cb,
                pickup,
            } => {
                if let Some(q) = &mut self.quota {
                    q.consume(cmd.len());
                }
                match self.peers.get_mut(&region_id) {
                    Some(peer) => peer.propose(epoch, cmd, cb),
                    None => {
                        let _ = cb.send(Err(RaftstoreError::RegionNotFound(region_id)));
                    }
                }
                drop(pickup);
            }
            Msg::Stop => return false,
        }
        true
    }

    /// One round of group commit across all peers.
    fn on_ready(&mut self) -> Result<()> {
        let mut write = RaftLogWrite::default();
        let mut readies: Vec<(u64, Ready)> = vec![];
        for (id, peer) in self.peers.iter_mut() {
            if !peer.raw_node.has_ready() {
                continue;
            }
            let mut rd = peer.raw_node.ready();
            if !rd.messages().is_empty() || !rd.persisted_messages().is_empty() {
                warn!(region_id = id, "raft messages dropped: no transport yet");
            }
            let committed = rd.take_committed_entries();
            peer.apply(&self.kv, self.applier.as_ref(), committed)?;
            if !rd.entries().is_empty() {
                write.append(*id, rd.entries())?;
                peer.raw_node.mut_store().on_append(rd.entries());
            }
            if let Some(hs) = rd.hs() {
                write.set_hard_state(*id, hs)?;
                peer.raw_node.mut_store().hard_state = hs.clone();
            }
            readies.push((*id, rd));
        }
        if readies.is_empty() {
            return Ok(());
        }
        self.log.write(&mut write, true)?;

        let mut commit_write = RaftLogWrite::default();
        for (id, rd) in readies {
            let Some(peer) = self.peers.get_mut(&id) else {
                continue;
            };
            let was_leader = peer.is_leader();
            let mut light = peer.raw_node.advance(rd);
            if let Some(commit) = light.commit_index() {
                let store = peer.raw_node.mut_store();
                store.hard_state.commit = commit;
                commit_write.set_hard_state(id, &store.hard_state)?;
            }
            let committed = light.take_committed_entries();
            let applied = peer.apply(&self.kv, self.applier.as_ref(), committed)?;
            peer.raw_node.advance_apply();
            peer.raw_node.mut_store().compact_cache(applied);
            if was_leader && !peer.is_leader() {
                peer.fail_proposals();
            }
        }
        // The commit index is a hint that saves replay work after restart;
        // it need not be synced (entries themselves already are).
        self.log.write(&mut commit_write, false)?;
        self.publish_all();
        Ok(())
    }

    fn publish_all(&mut self) {
        let mut changed = vec![];
        for (id, peer) in &self.peers {
            let epoch = peer.region.region_epoch.clone().unwrap_or_default();
            let leader = peer.leader();
            let key = (
                peer.is_leader(),
                leader.as_ref().map_or(0, |p| p.id),
                peer.term(),
                epoch,
            );
            if self.published.get(id) == Some(&key) {
                continue;
            }
            self.published.insert(*id, key);
            changed.push(RegionView {
                region: peer.region.clone(),
                leader,
                is_leader: peer.is_leader(),
                term: peer.term(),
            });
        }
        if changed.is_empty() {
            return;
        }
        let mut views = self.views.write();
        for view in changed {
            views.insert(view.region.id, view.clone());
            let _ = self.events.send(StoreEvent::RegionChanged(view));
        }
    }

    fn compact_logs(&mut self) {
        for peer in self.peers.values_mut() {
            if let Err(e) = peer.compact_log(&self.kv, &self.log, self.cfg.log_keep_entries) {
                warn!(region_id = peer.region_id(), error = %e, "log compaction failed");
            }
        }
        if let Err(e) = self.log.purge() {
            warn!(error = %e, "raft log purge failed");
        }
    }
}

fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    let text = panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic".into());
    format!("panicked: {text}")
}

/// Lowers the calling thread's scheduling priority (Linux nice values are
/// per thread). Failure only costs ordering under overload, so it is logged.
fn lower_thread_priority(nice: i32) {
    if nice == 0 {
        return;
    }
    // SAFETY: setpriority on the calling thread (who = 0) with a plain value.
    let rc = unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, nice) };
    if rc != 0 {
        warn!(nice, "cannot lower the raftstore thread's priority");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::apply::ApplyContext;
    use tikal_engine::KvApply;

    /// Writes each command's bytes under key "k"; a command `fail` is an
    /// engine failure of this store.
    struct FailingApplier;

    impl Applier for FailingApplier {
        fn apply(&self, ctx: &mut ApplyContext<'_>, cmd: &[u8]) -> Result<ApplyOutput> {
            if cmd == b"fail" {
                return Err(tikal_engine::EngineError::Corrupted {
                    what: "test engine",
                    detail: "disk gone".into(),
                }
                .into());
            }
            ctx.put(tikal_engine::CF_DEFAULT, b"k", cmd);
            Ok(Box::new(()))
        }
    }

    fn one_region_store(dir: &std::path::Path) -> (Router, KvEngine) {
        let kv = KvEngine::open(&dir.join("db")).unwrap();
        let log = Arc::new(RaftLogEngine::open(&dir.join("raft")).unwrap());
        let region = metapb::Region {
            id: 1,
            region_epoch: Some(metapb::RegionEpoch {
                conf_ver: 1,
                version: 1,
            }),
            peers: vec![metapb::Peer {
                id: 2,
                store_id: 1,
                ..Default::default()
            }],
            ..Default::default()
        };
        meta::write_initial_region(&kv, &region).unwrap();
        let (events, _) = mpsc::unbounded_channel();
        let router = Router::start(
            1,
            RaftstoreConfig::default(),
            kv.clone(),
            log,
            Arc::new(FailingApplier),
            events,
        )
        .unwrap();
        (router, kv)
    }

    #[tokio::test]
    async fn an_engine_error_at_apply_stops_the_loop_unanswered_and_unapplied() {
        let dir = tempfile::tempdir().unwrap();
        let (router, kv) = one_region_store(dir.path());
        let leads = || router.region_view(1).is_some_and(|v| v.is_leader);
        let deadline = Instant::now() + Duration::from_secs(10);
        while !leads() {
            assert!(Instant::now() < deadline, "no leader");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        router.propose(1, None, b"v1".to_vec(), None).await.unwrap();
        let applied = meta::load_apply_state(&kv, 1).unwrap().applied_index;

        let failed = router.propose(1, None, b"fail".to_vec(), None).await;
        assert!(
            matches!(failed, Err(RaftstoreError::StoreStopped)),
            "the proposer must not hear success: {:?}",
            failed.map(|_| ())
        );
        let reason = tokio::time::timeout(Duration::from_secs(10), router.failed())
            .await
            .expect("the failure is reported");
        assert!(reason.contains("disk gone"), "{reason}");
        // Nothing is served, nothing more is taken in, nothing was skipped.
        assert!(router.region_view(1).is_none());
        assert!(router.propose(1, None, b"v2".to_vec(), None).await.is_err());
        assert_eq!(
            meta::load_apply_state(&kv, 1).unwrap().applied_index,
            applied
        );
        assert_eq!(
            kv.get(tikal_engine::CF_DEFAULT, b"k").unwrap(),
            Some(b"v1".to_vec())
        );
        router.stop();
    }

    #[tokio::test]
    async fn a_requested_stop_is_not_a_failure() {
        let dir = tempfile::tempdir().unwrap();
        let (router, _kv) = one_region_store(dir.path());
        router.stop();
        let failed = tokio::time::timeout(Duration::from_millis(200), router.failed()).await;
        assert!(failed.is_err(), "a stop must not report a failure");
    }

    #[test]
    fn the_write_quota_paces_intake_to_its_bandwidth() {
        assert!(WriteQuota::new(0).is_none(), "0 = unlimited");
        // 1000 B/s: up to 100 ms (100 B) may be taken in at once.
        let mut q = WriteQuota::new(1000).unwrap();
        let t0 = q.refilled;
        q.consume(100);
        assert_eq!(q.wait(t0), Duration::ZERO);
        // Overdrawn by 50 B: 50 ms until more may be taken in.
        q.consume(50);
        assert_eq!(q.wait(t0), Duration::from_millis(50));
        assert_eq!(q.wait(t0 + Duration::from_millis(50)), Duration::ZERO);
        // Idle time saves up no more than the burst.
        let later = t0 + Duration::from_secs(10);
        assert_eq!(q.wait(later), Duration::ZERO);
        q.consume(150);
        assert_eq!(q.wait(later), Duration::from_millis(50));
    }
}
