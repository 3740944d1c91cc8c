//! The store's thread: a [`Store`] driven by a real clock and a channel.
//!
//! Other threads reach the store through the [`Router`]: proposals and Raft
//! messages from other stores go into one channel; the loop takes in
//! everything queued (up to `max_batch`, `max_round_bytes` of proposals
//! and the write quota), ticks Raft on
//! the base tick, and runs a round of [`Store::on_ready`]. Readers observe
//! the published [`RegionView`]s.

use std::collections::HashMap;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};
use parking_lot::RwLock;
use tikal_proto::metapb;
use tikal_proto::raft_cmdpb::{BatchSplitRequest, ChangePeerRequest};
use tokio::sync::oneshot;
use tracing::{debug, error, warn};

use crate::apply::ApplyOutput;
use crate::disk::DiskFullOpt;
use crate::peer::{Callback, Expected};
use crate::split_check::{self, SplitCheck};
use crate::store::{RegionView, Store};
use crate::transport::PeerMessage;
use crate::{RaftstoreError, Result};

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

/// Dropped by the store loop when it takes the proposal in: the moment its
/// place in the Raft log is decided. Admission control uses it to hand the
/// loop one batch at a time.
pub type Pickup = Option<Box<dyn std::any::Any + Send>>;

enum Msg {
    Propose {
        region_id: u64,
        expected: Expected,
        cmd: Vec<u8>,
        opt: DiskFullOpt,
        cb: Callback,
        pickup: Pickup,
    },
    Raft(Box<PeerMessage>),
    RaftBatch(Vec<PeerMessage>),
    ChangePeers {
        region_id: u64,
        epoch: Option<metapb::RegionEpoch>,
        changes: Vec<ChangePeerRequest>,
        cb: Callback,
    },
    TransferLeader {
        region_id: u64,
        to: u64,
        epoch: Option<metapb::RegionEpoch>,
    },
    ReadIndex {
        region_id: u64,
        /// A replica read's check for the leader (see
        /// [`Router::replica_read_index`]); None for a leader's read.
        replica: Option<Vec<u8>>,
        cb: crate::peer::ReadCallback,
    },
    StoreUnreachable {
        store_id: u64,
    },
    ReportSnapshot {
        region_id: u64,
        to: u64,
        delivered: bool,
    },
    BatchSplit {
        region_id: u64,
        epoch: Option<metapb::RegionEpoch>,
        req: BatchSplitRequest,
        cb: Callback,
    },
    PrepareMerge {
        region_id: u64,
        epoch: Option<metapb::RegionEpoch>,
        target: metapb::Region,
        cb: Callback,
    },
    DestroyStale {
        region_id: u64,
        peer_id: u64,
        epoch: metapb::RegionEpoch,
    },
    SplitAtMiddle {
        region_id: u64,
        epoch: Option<metapb::RegionEpoch>,
    },
    ClearSizes {
        start: Vec<u8>,
        end: Vec<u8>,
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
    /// Runs an opened [`Store`] on its own thread.
    pub fn start(store: Store) -> Result<Router> {
        let quota = WriteQuota::new(store.config().write_bandwidth);
        let views = store.views();
        let (tx, rx) = crossbeam_channel::unbounded();
        let split_checks = SplitChecker::start(store.kv_engine().clone(), store.config())?;
        let mut runner = Runner {
            store,
            rx,
            quota,
            held: Default::default(),
            split_checks,
            middle_checks: Default::default(),
            round_bytes: 0,
        };
        let (failed_tx, failure) = tokio::sync::watch::channel(None);
        let thread = std::thread::Builder::new()
            .name("raftstore".into())
            .spawn(move || {
                let views = runner.store.views();
                let outcome =
                    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| runner.run()));
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
                drop(runner);
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
    /// committed and applied, returning the applier's output. The write is
    /// refused on a (nearly) full disk.
    pub async fn propose(
        &self,
        region_id: u64,
        expected: Expected,
        cmd: Vec<u8>,
        pickup: Pickup,
    ) -> Result<ApplyOutput> {
        let opt = DiskFullOpt::NotAllowedOnFull;
        self.send_proposal(region_id, expected, cmd, opt, pickup)?
            .await
            .map_err(|_| RaftstoreError::StoreStopped)?
    }

    /// Hands `cmd` to the store loop without waiting; the receiver yields
    /// the applier's output once the command is applied. `opt` says how
    /// full the disks it needs may be (see `disk.rs`).
    pub fn send_proposal(
        &self,
        region_id: u64,
        expected: Expected,
        cmd: Vec<u8>,
        opt: DiskFullOpt,
        pickup: Pickup,
    ) -> Result<oneshot::Receiver<Result<ApplyOutput>>> {
        let (cb, rx) = oneshot::channel();
        self.tx
            .send(Msg::Propose {
                region_id,
                expected,
                cmd,
                opt,
                cb,
                pickup,
            })
            .map_err(|_| RaftstoreError::StoreStopped)?;
        Ok(rx)
    }

    /// Hands a Raft message from another store to the loop. Never
    /// blocks; a stopped store drops it.
    pub fn send_raft_message(&self, msg: PeerMessage) {
        let _ = self.tx.send(Msg::Raft(Box::new(msg)));
    }

    /// Like [`Router::send_raft_message`], for messages that arrived together.
    pub fn send_raft_messages(&self, msgs: Vec<PeerMessage>) {
        if !msgs.is_empty() {
            let _ = self.tx.send(Msg::RaftBatch(msgs));
        }
    }

    /// Changes the region's membership through Raft (add a learner,
    /// promote, remove; several at once go through a joint configuration)
    /// and waits until it is applied, returning the region after it.
    pub async fn change_peers(
        &self,
        region_id: u64,
        epoch: Option<metapb::RegionEpoch>,
        changes: Vec<ChangePeerRequest>,
    ) -> Result<metapb::Region> {
        let (cb, rx) = oneshot::channel();
        self.tx
            .send(Msg::ChangePeers {
                region_id,
                epoch,
                changes,
                cb,
            })
            .map_err(|_| RaftstoreError::StoreStopped)?;
        let output = rx.await.map_err(|_| RaftstoreError::StoreStopped)??;
        match output.downcast::<crate::ConfChangeOutput>() {
            Ok(out) => (*out).map_err(RaftstoreError::ConfChange),
            Err(_) => Err(RaftstoreError::StaleCommand),
        }
    }

    /// Splits the region at `req`'s keys through Raft and waits until it is
    /// applied, returning every region it made, in key order.
    pub async fn batch_split(
        &self,
        region_id: u64,
        epoch: Option<metapb::RegionEpoch>,
        req: BatchSplitRequest,
    ) -> Result<Vec<metapb::Region>> {
        let (cb, rx) = oneshot::channel();
        self.admin(
            Msg::BatchSplit {
                region_id,
                epoch,
                req,
                cb,
            },
            rx,
        )
        .await
    }

    /// Prepares merging the region into the adjacent `target` through
    /// Raft and waits until that is applied, returning the region as
    /// prepared; the store then carries the merge through by itself.
    /// `epoch`: the source's epoch as PD planned the merge (refused with
    /// EpochNotMatch if it moved since).
    pub async fn prepare_merge(
        &self,
        region_id: u64,
        epoch: Option<metapb::RegionEpoch>,
        target: metapb::Region,
    ) -> Result<Vec<metapb::Region>> {
        let (cb, rx) = oneshot::channel();
        self.admin(
            Msg::PrepareMerge {
                region_id,
                epoch,
                target,
                cb,
            },
            rx,
        )
        .await
    }

    /// Destroys this store's peer `peer_id` of the region, which PD found
    /// stale, if it is still at `epoch` and still without a leader (see
    /// [`Store::destroy_stale_peer`]).
    pub fn destroy_stale_peer(&self, region_id: u64, peer_id: u64, epoch: metapb::RegionEpoch) {
        let _ = self.tx.send(Msg::DestroyStale {
            region_id,
            peer_id,
            epoch,
        });
    }

    /// Has the region checked at its middle, as PD's split-region
    /// operator asks with its `scan` and `approximate` policies: if this
    /// store leads it at `epoch` (any if `None`), the split checker picks
    /// the user-key boundary nearest half its bytes, and the split follows
    /// as one the checker found by size would (`StoreEvent::AskSplit`).
    pub fn split_at_middle(&self, region_id: u64, epoch: Option<metapb::RegionEpoch>) {
        let _ = self.tx.send(Msg::SplitAtMiddle { region_id, epoch });
    }

    /// Has the regions overlapping `[start, end)` measured again (their
    /// data went outside Raft); see `Store::clear_sizes_in`.
    pub fn clear_sizes_in(&self, start: Vec<u8>, end: Vec<u8>) {
        let _ = self.tx.send(Msg::ClearSizes { start, end });
    }

    /// Sends an admin command and waits for the regions it left.
    async fn admin(
        &self,
        msg: Msg,
        rx: oneshot::Receiver<Result<crate::ApplyOutput>>,
    ) -> Result<Vec<metapb::Region>> {
        self.tx
            .send(msg)
            .map_err(|_| RaftstoreError::StoreStopped)?;
        let output = rx.await.map_err(|_| RaftstoreError::StoreStopped)??;
        match output.downcast::<crate::SplitOutput>() {
            Ok(out) => *out,
            Err(_) => Err(RaftstoreError::StaleCommand),
        }
    }

    /// Waits until this store may serve a linearizable read of the region:
    /// it still leads (a quorum confirmed it after the read arrived) and
    /// has applied everything committed before. Reads that arrive together
    /// share one confirmation.
    pub async fn read_index(&self, region_id: u64) -> Result<()> {
        self.read(region_id, None).await
    }

    /// Waits until this store's replica of the region, leader, follower or
    /// learner, may serve a linearizable read: it has applied everything
    /// the leader had committed when the read arrived (see
    /// `replica_read.rs`). The leader first runs `check` (empty for none)
    /// through its [`crate::Applier::check_replica_read`]; a refusal comes
    /// back as [`RaftstoreError::ReplicaReadRefused`].
    pub async fn replica_read_index(&self, region_id: u64, check: Vec<u8>) -> Result<()> {
        self.read(region_id, Some(check)).await
    }

    async fn read(&self, region_id: u64, replica: Option<Vec<u8>>) -> Result<()> {
        let (cb, rx) = oneshot::channel();
        self.tx
            .send(Msg::ReadIndex {
                region_id,
                replica,
                cb,
            })
            .map_err(|_| RaftstoreError::StoreStopped)?;
        rx.await.map_err(|_| RaftstoreError::StoreStopped)?
    }

    /// Asks this store's peer, if it leads the region, to hand leadership
    /// to peer `to`. Returns at once; the outcome shows in region views.
    pub fn transfer_leader(&self, region_id: u64, to: u64, epoch: Option<metapb::RegionEpoch>) {
        let _ = self.tx.send(Msg::TransferLeader {
            region_id,
            to,
            epoch,
        });
    }

    /// Tells the loop that messages to `store_id` were lost on the way (see
    /// [`Store::report_store_unreachable`]).
    pub fn report_store_unreachable(&self, store_id: u64) {
        let _ = self.tx.send(Msg::StoreUnreachable { store_id });
    }

    /// Tells the loop whether a snapshot sent for the region reached `to`.
    pub fn report_snapshot(&self, region_id: u64, to: u64, delivered: bool) {
        let _ = self.tx.send(Msg::ReportSnapshot {
            region_id,
            to,
            delivered,
        });
    }

    pub fn region_view(&self, region_id: u64) -> Option<RegionView> {
        self.views.read().get(&region_id).cloned()
    }

    /// The term of the first region (the one holding the empty key) if
    /// this store leads it; no view is copied.
    pub fn leading_first_region(&self) -> Option<u64> {
        self.views
            .read()
            .values()
            .find(|v| v.region.start_key.is_empty())
            .filter(|v| v.is_leader)
            .map(|v| v.term)
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

struct Runner {
    store: Store,
    rx: Receiver<Msg>,
    quota: Option<WriteQuota>,
    /// Proposals taken off the channel while over the write quota, in
    /// order: they wait here until it allows them.
    held: std::collections::VecDeque<Msg>,
    split_checks: SplitChecker,
    /// Regions with a check at their middle queued or running: PD asks
    /// again with every heartbeat until the split shows, and one scan
    /// at a time is enough.
    middle_checks: std::collections::HashSet<u64>,
    /// Proposal bytes taken in this round (see `max_round_bytes`).
    round_bytes: usize,
}

/// The split checker's thread (`split_check.rs`): regions go in, their
/// measurements come back; the loop polls for them each round.
struct SplitChecker {
    /// Regions to check, and whether at their middle (PD's split-region
    /// operator) rather than by the split thresholds.
    tasks: Sender<(metapb::Region, bool)>,
    /// What each check found (None: it failed, and was logged).
    results: Receiver<(metapb::Region, Option<SplitCheck>)>,
}

impl SplitChecker {
    fn start(kv: tikal_engine::KvEngine, cfg: &crate::RaftstoreConfig) -> Result<SplitChecker> {
        let cfg = cfg.split_check.clone();
        let (tasks, task_rx) = crossbeam_channel::unbounded::<(metapb::Region, bool)>();
        let (result_tx, results) = crossbeam_channel::unbounded();
        std::thread::Builder::new()
            .name("split-check".into())
            .spawn(move || {
                // Ends when the loop (the task sender) is gone.
                for (region, middle) in task_rx {
                    let found = match middle {
                        true => split_check::half(&kv, &region),
                        false => split_check::check(&kv, &region, &cfg),
                    };
                    let found = found
                        .inspect_err(
                            |e| warn!(region_id = region.id, error = %e, "split check failed"),
                        )
                        .ok();
                    if result_tx.send((region, found)).is_err() {
                        return;
                    }
                }
            })
            .map_err(|e| tikal_engine::EngineError::Corrupted {
                what: "split-check thread",
                detail: e.to_string(),
            })?;
        Ok(SplitChecker { tasks, results })
    }
}

impl Runner {
    /// Runs until Stop (Ok) or until the engines fail (Err): continuing
    /// then could acknowledge writes that are not durable, or skip entries
    /// that other replicas apply.
    fn run(&mut self) -> Result<()> {
        let cfg = self.store.config().clone();
        lower_thread_priority(cfg.thread_nice);
        let mut next_tick = Instant::now() + cfg.base_tick;
        let mut last_purge = Instant::now();
        let mut last_split_check = Instant::now();
        loop {
            let timeout = next_tick.saturating_duration_since(Instant::now());
            if !self.take_in(timeout, cfg.max_batch) {
                break;
            }
            if Instant::now() >= next_tick {
                next_tick = Instant::now() + cfg.base_tick;
                self.store.tick();
            }
            self.store.on_ready()?;
            if last_purge.elapsed() >= cfg.log_gc_tick {
                last_purge = Instant::now();
                self.store.compact_logs();
            }
            if last_split_check.elapsed() >= cfg.split_check.tick {
                last_split_check = Instant::now();
                for region in self.store.split_check_due() {
                    let _ = self.split_checks.tasks.send((region, false));
                }
            }
            while let Ok((region, found)) = self.split_checks.results.try_recv() {
                self.middle_checks.remove(&region.id);
                self.store.on_split_check(&region, found);
            }
        }
        self.shutdown();
        Ok(())
    }

    /// Waits up to `timeout` for messages and handles every one queued, up
    /// to `max_batch` and the write quota. Returns false on Stop or when
    /// every sender is gone.
    fn take_in(&mut self, timeout: Duration, max_batch: usize) -> bool {
        self.round_bytes = 0;
        let throttled = self.throttled();
        if !throttled.is_zero() {
            // Over the write quota: proposals wait, in order; Raft traffic,
            // reads and reports keep flowing, or the store's groups would
            // lose their leaders.
            let deadline = Instant::now() + throttled.min(timeout);
            loop {
                match self.rx.recv_deadline(deadline) {
                    Ok(msg @ Msg::Propose { .. }) => self.held.push_back(msg),
                    Ok(msg) => {
                        if !self.handle(msg) {
                            return false;
                        }
                    }
                    Err(RecvTimeoutError::Timeout) => return true,
                    Err(RecvTimeoutError::Disconnected) => return false,
                }
            }
        }
        let mut timeout = timeout;
        while let Some(msg) = self.held.pop_front() {
            if !self.throttled().is_zero() || self.round_full() {
                self.held.push_front(msg);
                return true;
            }
            if !self.handle(msg) {
                return false;
            }
            // Work for this round: take in what else is there, but do
            // not wait for more.
            timeout = Duration::ZERO;
        }
        match self.rx.recv_timeout(timeout) {
            Ok(msg) => {
                if !self.handle(msg) {
                    return false;
                }
                for _ in 0..max_batch {
                    if !self.throttled().is_zero() || self.round_full() {
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

    /// Whether this round took in its `max_round_bytes` of proposals.
    fn round_full(&self) -> bool {
        self.round_bytes >= self.store.config().max_round_bytes
    }

    fn throttled(&mut self) -> Duration {
        match &mut self.quota {
            Some(q) => q.wait(Instant::now()),
            None => Duration::ZERO,
        }
    }

    fn shutdown(&mut self) {
        self.store.shutdown();
        let held: Vec<Msg> = self.held.drain(..).collect();
        for msg in held.into_iter().chain(self.rx.try_iter()) {
            match msg {
                Msg::Propose { cb, .. }
                | Msg::ChangePeers { cb, .. }
                | Msg::BatchSplit { cb, .. } => {
                    let _ = cb.send(Err(RaftstoreError::StoreStopped));
                }
                Msg::ReadIndex { cb, .. } => {
                    let _ = cb.send(Err(RaftstoreError::StoreStopped));
                }
                _ => {}
            }
        }
    }

    /// Returns false on Stop.
    fn handle(&mut self, msg: Msg) -> bool {
        match msg {
            Msg::Propose {
                region_id,
                expected,
                cmd,
                opt,
                cb,
                pickup,
            } => {
                if let Some(q) = &mut self.quota {
                    q.consume(cmd.len());
                }
                self.round_bytes = self.round_bytes.saturating_add(cmd.len());
                self.store.propose(region_id, expected, cmd, opt, cb);
                drop(pickup);
            }
            Msg::Raft(msg) => self.store.step(*msg),
            Msg::RaftBatch(msgs) => {
                for msg in msgs {
                    self.store.step(msg);
                }
            }
            Msg::ChangePeers {
                region_id,
                epoch,
                changes,
                cb,
            } => self
                .store
                .propose_conf_change(region_id, epoch, changes, cb),
            Msg::ReadIndex {
                region_id,
                replica,
                cb,
            } => self.store.read_index(region_id, replica, cb),
            Msg::TransferLeader {
                region_id,
                to,
                epoch,
            } => {
                if let Err(e) = self.store.transfer_leader(region_id, to, epoch.as_ref()) {
                    debug!(region_id, to, error = %e, "no leadership transfer");
                }
            }
            Msg::StoreUnreachable { store_id } => self.store.report_store_unreachable(store_id),
            Msg::ReportSnapshot {
                region_id,
                to,
                delivered,
            } => self.store.report_snapshot(region_id, to, delivered),
            Msg::BatchSplit {
                region_id,
                epoch,
                req,
                cb,
            } => self.store.propose_batch_split(region_id, epoch, req, cb),
            Msg::PrepareMerge {
                region_id,
                epoch,
                target,
                cb,
            } => self
                .store
                .propose_prepare_merge(region_id, epoch, target, cb),
            Msg::DestroyStale {
                region_id,
                peer_id,
                epoch,
            } => {
                if let Err(e) = self.store.destroy_stale_peer(region_id, peer_id, &epoch) {
                    self.store.fail(region_id, "cannot destroy a stale peer", e);
                }
            }
            Msg::ClearSizes { start, end } => self.store.clear_sizes_in(&start, &end),
            Msg::SplitAtMiddle { region_id, epoch } => {
                if let Some(region) = self.store.led_region(region_id, epoch.as_ref()) {
                    if self.middle_checks.insert(region_id) {
                        let _ = self.split_checks.tasks.send((region, true));
                    }
                }
            }
            Msg::Stop => return false,
        }
        true
    }
}

pub(crate) fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
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
    use crate::apply::Applier;
    use crate::apply::ApplyContext;
    use crate::meta;
    use crate::store::StoreEvent;
    use crate::RaftstoreConfig;
    use tikal_engine::KvApply;
    use tikal_engine::{KvEngine, RaftLogEngine};
    use tokio::sync::mpsc;

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
        one_region_store_with(dir, RaftstoreConfig::default())
    }

    fn one_region_store_with(dir: &std::path::Path, cfg: RaftstoreConfig) -> (Router, KvEngine) {
        let (store, kv) = open_one_region_store(dir, cfg);
        (Router::start(store).unwrap(), kv)
    }

    fn open_one_region_store(dir: &std::path::Path, cfg: RaftstoreConfig) -> (Store, KvEngine) {
        let (store, kv, _) = open_one_region_store_heard(dir, cfg);
        (store, kv)
    }

    /// [`open_one_region_store`], with the store's events.
    fn open_one_region_store_heard(
        dir: &std::path::Path,
        cfg: RaftstoreConfig,
    ) -> (Store, KvEngine, mpsc::UnboundedReceiver<StoreEvent>) {
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
        let (events, heard) = mpsc::unbounded_channel();
        let snaps = Arc::new(crate::SnapManager::open(&dir.join("snap")).unwrap());
        let store = Store::open(
            1,
            cfg,
            kv.clone(),
            log,
            snaps,
            Arc::new(FailingApplier),
            Box::new(crate::NoTransport),
            events,
        )
        .unwrap();
        (store, kv, heard)
    }

    #[tokio::test]
    async fn a_split_at_the_middle_asked_for_reaches_pd_as_a_split_request() {
        let dir = tempfile::tempdir().unwrap();
        let (store, kv, mut heard) =
            open_one_region_store_heard(dir.path(), RaftstoreConfig::default());
        // Twenty keys of one size: the middle of the bytes is k10.
        let mut wb = kv.write_batch();
        for i in 0..20 {
            wb.put(
                tikal_engine::CF_DEFAULT,
                format!("k{i:02}").as_bytes(),
                &[7; 100],
            );
        }
        kv.write(wb, false).unwrap();
        let router = Router::start(store).unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        while !router.region_view(1).is_some_and(|v| v.is_leader) {
            assert!(Instant::now() < deadline, "no leader");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        // PD's `split-region --policy=scan`, as its heartbeat answers ask
        // it again and again; and one at an epoch the region is past.
        let stale = metapb::RegionEpoch {
            conf_ver: 1,
            version: 0,
        };
        router.split_at_middle(1, Some(stale));
        router.split_at_middle(1, None);
        router.split_at_middle(1, None);
        let asked = loop {
            let event = tokio::time::timeout_at(deadline.into(), heard.recv())
                .await
                .expect("a split asked for within 10 s")
                .expect("events flow");
            if let StoreEvent::AskSplit { region, split_keys } = event {
                break (region.id, split_keys);
            }
        };
        assert_eq!(asked, (1, vec![b"k10".to_vec()]));
        router.stop();
    }

    #[test]
    fn a_round_takes_in_proposals_up_to_its_byte_cap() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = RaftstoreConfig {
            max_round_bytes: 250,
            ..Default::default()
        };
        let (store, kv) = open_one_region_store(dir.path(), cfg);
        let split_checks = SplitChecker::start(kv, store.config()).unwrap();
        let (tx, rx) = crossbeam_channel::unbounded();
        let mut runner = Runner {
            store,
            rx,
            quota: None,
            held: Default::default(),
            split_checks,
            middle_checks: Default::default(),
            round_bytes: 0,
        };
        for _ in 0..10 {
            let (cb, _) = oneshot::channel();
            let cmd = vec![0; 100];
            let pickup = None;
            let (region_id, expected) = (1, Expected::default());
            let propose = Msg::Propose {
                region_id,
                expected,
                cmd,
                opt: DiskFullOpt::NotAllowedOnFull,
                cb,
                pickup,
            };
            tx.send(propose).unwrap();
        }
        // 300 bytes reach the 250-byte cap: the round takes three.
        assert!(runner.take_in(Duration::ZERO, 4096));
        assert_eq!(runner.rx.len(), 7);
        assert!(runner.take_in(Duration::ZERO, 4096));
        assert_eq!(runner.rx.len(), 4);
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
        router
            .propose(1, Expected::default(), b"v1".to_vec(), None)
            .await
            .unwrap();
        let applied = meta::load_apply_state(&kv, 1).unwrap().applied_index;

        let failed = router
            .propose(1, Expected::default(), b"fail".to_vec(), None)
            .await;
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
        assert!(router
            .propose(1, Expected::default(), b"v2".to_vec(), None)
            .await
            .is_err());
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

    #[tokio::test]
    async fn over_the_write_quota_reads_and_raft_traffic_still_flow() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = RaftstoreConfig {
            // 1 KB/s: a 20 KB write holds proposals back for ~20 s.
            write_bandwidth: 1000,
            ..Default::default()
        };
        let (router, _kv) = one_region_store_with(dir.path(), cfg);
        let deadline = Instant::now() + Duration::from_secs(10);
        while !router.region_view(1).is_some_and(|v| v.is_leader) {
            assert!(Instant::now() < deadline, "no leader");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        router
            .propose(1, Expected::default(), vec![b'x'; 20_000], None)
            .await
            .unwrap();
        let held = router
            .send_proposal(
                1,
                Expected::default(),
                b"held".to_vec(),
                DiskFullOpt::NotAllowedOnFull,
                None,
            )
            .unwrap();
        // A read is answered long before the quota lets the write in.
        let read = tokio::time::timeout(Duration::from_secs(5), router.read_index(1)).await;
        assert!(matches!(read, Ok(Ok(()))), "the read waited for the quota");
        drop(held);
        router.stop();
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
