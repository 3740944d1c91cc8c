//! The store: every peer on this store, driven as one state machine.
//!
//! [`Store`] takes inputs — a proposal, a Raft message from another store,
//! a tick of Raft's logical clock — and then, in [`Store::on_ready`], runs
//! one round of group commit across all peers:
//!
//! 1. messages a leader may send before persisting (appends) go to the
//!    [`Transport`] at once, every peer's before any applies;
//! 2. leaders apply their committed entries (one atomic KV write for all
//!    of them, see `apply.rs`) and answer the proposers;
//! 3. every peer's new entries and hard state go to the Raft log engine in
//!    **one** write, fsynced unless the round only moved commit indexes;
//! 4. messages that must follow persistence (votes, append acks) go out;
//! 5. followers apply what they learned is committed, and every peer
//!    applies what persisting committed: again one KV write for all, then
//!    the answers and the reads it covers.
//!
//! Nothing here reads a clock or a socket, so a test drives stores by hand
//! — ticks, deliveries, partitions — and gets the same run every time
//! (`testscripts/`). In a server, [`crate::Router`] runs the store on its
//! own thread with a real clock and channel.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::RwLock;
use raft::eraftpb::{Entry, MessageType};
use raft::{Ready, StateRole};
use tikal_engine::{KvEngine, RaftLogEngine, RaftLogWrite, DATA_CFS};
use tikal_proto::metapb;
use tikal_proto::raft_cmdpb::{BatchSplitRequest, ChangePeerRequest};
use tokio::sync::mpsc;
use tokio::sync::oneshot;
use tracing::{debug, error, info, warn};

use crate::admin;
use crate::apply::{Applier, ApplyBatch};
use crate::disk::{DiskFullOpt, DiskState, DiskUsage};
use crate::meta;
use crate::peer::{
    self, Callback, CommandBatch, Expected, LogGc, Peer, ReadCallback, RegionStats, Written,
};
use crate::replica_read::ReadContext;
use crate::snap::{self, SnapKey, SnapManager};
use crate::split_check::{SplitCheck, SplitCheckConfig};
use crate::transport::{PeerMessage, Stamped, Transport};
use crate::{RaftstoreError, Result};

/// Settings under `[raftstore]`.
#[derive(Debug, Clone)]
pub struct RaftstoreConfig {
    /// Raft's logical clock tick.
    pub base_tick: Duration,
    pub election_ticks: usize,
    /// Randomized election timeouts fall in `[min, max)` ticks; 0 means
    /// raft-rs' defaults (`election_ticks` and twice it).
    pub min_election_ticks: usize,
    pub max_election_ticks: usize,
    pub heartbeat_ticks: usize,
    /// When applied log entries are dropped (`raft-log-gc-*`).
    pub log_gc: LogGc,
    /// How often the log GC rules are checked.
    pub log_gc_tick: Duration,
    /// Most messages handled per round before the loop takes readies.
    pub max_batch: usize,
    /// Bounds of the client commands a leader proposes as one entry.
    pub command_batch: CommandBatch,
    /// The largest entry (`raft-entry-max-size`): a merge whose CommitMerge
    /// would carry more of the source's log than nine tenths of it is
    /// refused, as TiKV refuses it (it could never be sent).
    pub raft_entry_max_size: u64,
    /// Proposal bytes taken in per round before the loop takes readies. A
    /// round's entries reach each follower as one append (raft-rs'
    /// `batch_append`), which must stay well below the receiving store's
    /// gRPC message limit (64 MiB): with entries of at most 8 MiB
    /// (`raft-entry-max-size`), a round stays under 24 MiB.
    pub max_round_bytes: usize,
    /// Nice value of the loop thread (0 = unchanged). Under overload the
    /// gRPC intake must keep up, so requests wait in the write scheduler,
    /// which orders them, rather than unread in sockets, which cannot.
    pub thread_nice: i32,
    /// Foreground write quota in bytes per second (0 = none): the loop takes
    /// in proposals no faster, as a store whose disk sustains only so much.
    /// Proposals beyond it wait where they were queued.
    pub write_bandwidth: u64,
    /// When and where regions split.
    pub split_check: SplitCheckConfig,
    /// A peer that knows no leader this long (a naive one: hears nothing)
    /// is reported ([`StoreEvent::LeaderMissing`]), and again each time as
    /// long again.
    pub max_leader_missing: Duration,
    /// A peer its leader has not heard from this long is down
    /// ([`RegionView::down_peers`]; upstream's `max-peer-down-duration`).
    pub max_peer_down: Duration,
}

impl Default for RaftstoreConfig {
    fn default() -> Self {
        RaftstoreConfig {
            base_tick: Duration::from_millis(100),
            election_ticks: 10,
            min_election_ticks: 0,
            max_election_ticks: 0,
            heartbeat_ticks: 2,
            // Upstream's defaults for a 96 MiB region.
            log_gc: LogGc {
                threshold: 50,
                count_limit: 73_728,
                size_limit: 72 << 20,
            },
            log_gc_tick: Duration::from_secs(3),
            max_batch: 4096,
            command_batch: CommandBatch::for_entry_max(8 << 20),
            raft_entry_max_size: 8 << 20,
            max_round_bytes: 16 << 20,
            thread_nice: 0,
            write_bandwidth: 0,
            split_check: SplitCheckConfig::default(),
            // Upstream's `max-leader-missing-duration`.
            max_leader_missing: Duration::from_secs(2 * 3600),
            max_peer_down: Duration::from_secs(10 * 60),
        }
    }
}

/// What readers need to know about a region, published after every round.
#[derive(Debug, Clone)]
pub struct RegionView {
    pub region: metapb::Region,
    pub leader: Option<metapb::Peer>,
    /// This store's peer leads the region and has applied an entry of its
    /// own term, so everything committed before it is applied here: reads
    /// may be served from the engine.
    pub is_leader: bool,
    pub term: u64,
    /// On a leader: peers that still wait for a snapshot (PD promotes a
    /// learner only once it is not pending).
    pub pending_peers: Vec<metapb::Peer>,
    /// On a leader: peers not heard from for `max-peer-down-duration`,
    /// with how many seconds (PD's down peers: it moves neither leaders
    /// nor merges onto them, and upstream PD replaces them).
    pub down_peers: Vec<(metapb::Peer, u64)>,
    /// Size and keys at this peer's last split check of the region's
    /// current range (None until one ran here since the range last
    /// changed: a split, a merge or a snapshot).
    pub approximate: Option<RegionStats>,
    /// What this store's peer has written so far (live counters).
    pub written: Arc<Written>,
    /// Applied index and the leader's safe ts for stale reads here.
    pub read_progress: Arc<crate::ReadProgress>,
}

impl RegionView {
    /// A view of `region`, led here at term 1, with nothing else known
    /// (for tests of what reads views).
    pub fn led_here(region: metapb::Region) -> Self {
        RegionView {
            region,
            leader: None,
            is_leader: true,
            term: 1,
            pending_peers: vec![],
            down_peers: vec![],
            approximate: None,
            written: Default::default(),
            read_progress: Default::default(),
        }
    }
}

/// Things the server reports to PD.
#[derive(Debug, Clone)]
pub enum StoreEvent {
    /// A region's leadership or metadata changed.
    RegionChanged(RegionView),
    /// This store's peer of the region was removed from it and destroyed.
    RegionRemoved(u64),
    /// A split check on the region's leader found it too big: PD should
    /// give ids for a split at these keys.
    AskSplit {
        region: metapb::Region,
        split_keys: Vec<Vec<u8>>,
    },
    /// This store's peer of the region has known no leader (a naive one:
    /// heard nothing) for `max-leader-missing-duration`: it may be stale
    /// (removed while this store was away, or before its snapshot came,
    /// with no peer left to say so); PD can tell
    /// ([`Store::destroy_stale_peer`]).
    LeaderMissing {
        region: metapb::Region,
        peer: metapb::Peer,
    },
}

/// What was last published of a region: a change of any of it is news.
#[derive(PartialEq)]
struct Published {
    serves_reads: bool,
    leader_id: u64,
    term: u64,
    epoch: metapb::RegionEpoch,
    pending_peers: Vec<u64>,
    down_peers: Vec<u64>,
    approximate: Option<RegionStats>,
}

/// Messages for regions this store will have once one of its regions
/// applies the split that makes them; stepped again after each split.
const MAX_WAITING_MESSAGES: usize = 1024;

/// Every peer on one store, and what the store publishes about them.
pub struct Store {
    store_id: u64,
    /// An engine failure met outside a round (destroying or creating a
    /// peer for a message or a tick): the store takes nothing more and
    /// its next round fails, as a round's own engine failure does. Going
    /// on could start a region over a range whose old state stays on
    /// disk, and the store would then not open again.
    failure: Option<crate::RaftstoreError>,
    cfg: RaftstoreConfig,
    kv: KvEngine,
    log: Arc<RaftLogEngine>,
    snaps: Arc<SnapManager>,
    applier: Arc<dyn Applier>,
    transport: Box<dyn Transport>,
    /// This store's disk usage, set by the server's disk monitor.
    disk: DiskState,
    raft_cfg: raft::Config,
    logger: slog::Logger,
    peers: HashMap<u64, Peer>,
    views: Arc<RwLock<HashMap<u64, RegionView>>>,
    events: mpsc::UnboundedSender<StoreEvent>,
    /// What was last published per region.
    published: HashMap<u64, Published>,
    /// Messages that would create a peer in a range a local region still
    /// covers (see [`MAX_WAITING_MESSAGES`]).
    waiting: std::collections::VecDeque<PeerMessage>,
    /// Local peers other stores said merged away: source → (target, the
    /// target's version once it took the source in, 0 if unknown), kept
    /// while a target peer here may still take them in.
    merged_away: HashMap<u64, (u64, u64)>,
    /// Raft ticks so far: prepared merges are driven every few.
    ticks: u64,
}

/// Ticks between a prepared source leader's attempts to get its merge
/// committed (or rolled back).
const MERGE_CHECK_TICKS: u64 = 3;

/// A leader tells a peer a membership change removed that it was removed
/// after 4, 8, 16, … of its polls (one an election timeout), up to this
/// many; then it forgets the peer (17 minutes with the default 1-second
/// election timeout). Not at once: a removed peer still connected applies
/// its removal itself, after any split committed before it (told first,
/// it would go with the split's new region's copy).
const FIRST_REMOVED_PEER_POLL: u64 = 4;
const REMOVED_PEER_POLLS: u64 = 1024;

/// What this store's peer of a prepared merge's target says about the
/// merge (see [`Store::drive_merges`]).
#[derive(Debug, Clone, Copy)]
enum TargetHere {
    /// As the PrepareMerge recorded it: the CommitMerge can go through it.
    Current,
    /// Behind what was recorded: it catches up through its log.
    Behind,
    /// Not here, or not initialized yet.
    Missing,
    /// Changed since, or destroyed: no CommitMerge can apply here.
    Stale(&'static str),
}

impl Store {
    /// Opens every region recorded in `kv` that has a peer on `store_id`,
    /// first finishing any snapshot a crash interrupted.
    #[allow(clippy::too_many_arguments)]
    pub fn open(
        store_id: u64,
        cfg: RaftstoreConfig,
        kv: KvEngine,
        log: Arc<RaftLogEngine>,
        snaps: Arc<SnapManager>,
        applier: Arc<dyn Applier>,
        transport: Box<dyn Transport>,
        events: mpsc::UnboundedSender<StoreEvent>,
    ) -> Result<Store> {
        let logger = slog::Logger::root(slog::Discard, slog::o!());
        let raft_cfg = raft::Config {
            election_tick: cfg.election_ticks,
            min_election_tick: cfg.min_election_ticks,
            max_election_tick: cfg.max_election_ticks,
            heartbeat_tick: cfg.heartbeat_ticks,
            max_size_per_msg: 1 << 20,
            max_inflight_msgs: peer::MAX_INFLIGHT_MSGS,
            check_quorum: true,
            pre_vote: true,
            // One append per follower and round, however many proposals
            // the round took in (raft-rs otherwise sends one per proposal,
            // and the follower answers each).
            batch_append: true,
            // Commit indexes ride on appends and heartbeats (see
            // `Peer::hurry_commit`).
            skip_bcast_commit: true,
            ..Default::default()
        };
        for (region_id, bytes) in meta::load_pending_snapshots(&kv)? {
            let snap = snap::decode_snapshot(&bytes)?;
            info!(region_id, "finishing a snapshot a crash interrupted");
            peer::finish_snapshot(&kv, &snaps, region_id, &snap)?;
            let mut w = RaftLogWrite::default();
            w.clean(region_id);
            let mut hs = raft::eraftpb::HardState {
                term: snap.get_metadata().term,
                commit: snap.get_metadata().index,
                ..Default::default()
            };
            if let Some(old) = log.hard_state(region_id)? {
                hs.term = hs.term.max(old.term);
                hs.vote = old.vote;
            }
            w.set_hard_state(region_id, &hs)?;
            log.write(&mut w, true)?;
        }
        snaps.remove_leftovers();
        let mut peers = HashMap::new();
        for region in meta::load_regions(&kv)? {
            if !region.peers.iter().any(|p| p.store_id == store_id) {
                // Its removal was applied, and a crash came before the
                // peer was destroyed: finish that.
                info!(
                    region_id = region.id,
                    "finishing the destruction of a removed peer"
                );
                let last = meta::load_tombstone(&kv, region.id)?.unwrap_or(0);
                destroy_region_data(&kv, &log, &region, last)?;
                continue;
            }
            drop_stale_log(&kv, &log, region.id)?;
            let peer = Peer::open(store_id, region, &kv, log.clone(), &raft_cfg, &logger)?;
            info!(region_id = peer.region_id(), "opened region peer");
            peers.insert(peer.region_id(), peer);
        }
        drop_destroyed_logs(&kv, &log, &peers)?;
        if let Some((a, b)) = overlapping(peers.values().filter(|p| p.is_initialized())) {
            // One of them is a leftover (TiKV stops here too): destroying
            // either could delete the other's data, and serving both
            // would answer one range two ways.
            return Err(RaftstoreError::Inconsistent(format!(
                "regions {} {} and {} {} overlap",
                a.id,
                range_text(a),
                b.id,
                range_text(b)
            )));
        }
        let disk = DiskState::default();
        let transport = Box::new(Stamped {
            inner: transport,
            disk: disk.clone(),
            snaps: snaps.clone(),
        });
        let mut store = Store {
            store_id,
            failure: None,
            cfg,
            kv,
            log,
            snaps,
            applier,
            transport,
            disk,
            raft_cfg,
            logger,
            peers,
            views: Arc::new(RwLock::new(HashMap::new())),
            events,
            published: HashMap::new(),
            waiting: Default::default(),
            merged_away: HashMap::new(),
            ticks: 0,
        };
        store.publish_all();
        Ok(store)
    }

    pub fn store_id(&self) -> u64 {
        self.store_id
    }

    /// The handle through which the server's disk monitor tells this store
    /// how full its disk is.
    pub fn disk_state(&self) -> DiskState {
        self.disk.clone()
    }

    pub fn config(&self) -> &RaftstoreConfig {
        &self.cfg
    }

    pub fn kv_engine(&self) -> &KvEngine {
        &self.kv
    }

    /// The region views this store publishes, shared with readers.
    pub fn views(&self) -> Arc<RwLock<HashMap<u64, RegionView>>> {
        self.views.clone()
    }

    /// Proposes `cmd` to the region; `cb` gets the applier's output once the
    /// command is applied, or the reason it was not.
    pub fn propose(
        &mut self,
        region_id: u64,
        expected: Expected,
        cmd: Vec<u8>,
        opt: DiskFullOpt,
        cb: Callback,
    ) {
        let disk = (self.store_id, self.disk.get());
        match self.peers.get_mut(&region_id) {
            Some(peer) => match peer.check_disk(disk, opt) {
                Ok(()) => peer.propose(expected, cmd, cb, self.cfg.command_batch),
                Err(e) => {
                    if disk.1 != DiskUsage::Normal {
                        peer.hand_off_for_room();
                    }
                    let _ = cb.send(Err(e));
                }
            },
            None => {
                let _ = cb.send(Err(RaftstoreError::RegionNotFound(region_id)));
            }
        }
    }

    /// Proposes a membership change of the region; `cb` gets a
    /// [`crate::ConfChangeOutput`] once it is applied.
    pub fn propose_conf_change(
        &mut self,
        region_id: u64,
        epoch: Option<metapb::RegionEpoch>,
        changes: Vec<ChangePeerRequest>,
        cb: Callback,
    ) {
        match self.peers.get_mut(&region_id) {
            Some(peer) => peer.propose_conf_change(epoch, changes, cb),
            None => {
                let _ = cb.send(Err(RaftstoreError::RegionNotFound(region_id)));
            }
        }
    }

    /// Proposes splitting the region (ids from PD); `cb` gets a
    /// [`crate::SplitOutput`] once it is applied.
    pub fn propose_batch_split(
        &mut self,
        region_id: u64,
        epoch: Option<metapb::RegionEpoch>,
        req: BatchSplitRequest,
        cb: Callback,
    ) {
        // One Raft entry, as any proposal: past raft-entry-max-size (many
        // long split keys) it is refused, as TiKV refuses it, before it
        // could grow past what a follower takes in one message.
        let size = prost::Message::encoded_len(&req) as u64;
        if size > self.cfg.raft_entry_max_size {
            let why = format!(
                "the split's entry ({size} bytes) is over raft-entry-max-size ({})",
                self.cfg.raft_entry_max_size
            );
            let _ = cb.send(Err(RaftstoreError::Split(why)));
            return;
        }
        match self.peers.get_mut(&region_id) {
            Some(peer) => peer.propose_batch_split(epoch, req, cb),
            None => {
                let _ = cb.send(Err(RaftstoreError::RegionNotFound(region_id)));
            }
        }
    }

    /// Proposes merging the region, at `epoch` if given (PD's), into the
    /// adjacent `target` (PD's merge operator); the merge then proceeds
    /// on ticks ([`Store::tick`]). Refused, as TiKV refuses it, unless
    /// this store's replica of the target is the target PD planned with
    /// (its range and epoch): a target that moved on since would only be
    /// found after the PrepareMerge, and rolled back.
    pub fn propose_prepare_merge(
        &mut self,
        region_id: u64,
        epoch: Option<metapb::RegionEpoch>,
        target: metapb::Region,
        cb: Callback,
    ) {
        let here = self.peers.get(&target.id).map(|p| &p.region);
        let matches = here.is_some_and(|r| {
            (r.start_key == target.start_key && r.end_key == target.end_key)
                && r.region_epoch == target.region_epoch
        });
        if !matches {
            let why = match here {
                None => format!("target region {} is not on this store", target.id),
                Some(r) => format!(
                    "target region {} is not as planned: {:?} here, {:?} planned",
                    target.id, r.region_epoch, target.region_epoch
                ),
            };
            let _ = cb.send(Err(RaftstoreError::Merge(why)));
            return;
        }
        let entry_max = self.cfg.raft_entry_max_size;
        match self.peers.get_mut(&region_id) {
            Some(peer) => peer.propose_prepare_merge(epoch, target, entry_max, cb),
            None => {
                let _ = cb.send(Err(RaftstoreError::RegionNotFound(region_id)));
            }
        }
    }

    /// Moves every merge prepared here one step on (see `admin.rs`).
    ///
    /// - The target's peer here is as the PrepareMerge recorded it: on the
    ///   source's leader, once that target peer leads, propose the
    ///   CommitMerge through it. On the target's leader, when the source's
    ///   leader is on another store, hand the target's leadership to that
    ///   store, since the source's leader is the peer sure to keep the log
    ///   entries a CommitMerge carries.
    /// - The target's peer here changed since (a newer epoch) or is gone
    ///   (destroyed): no CommitMerge can apply here, so this source peer
    ///   votes to roll the merge back, and the source's leader proposes
    ///   the rollback once a quorum of its voters did (as TiKV's
    ///   `MsgWantRollbackMerge`; see [`Peer::rollback_merge_agreed`]).
    /// - A target here that is behind, or unknown, is waited for.
    fn drive_merges(&mut self) {
        let mut prepared: Vec<(u64, admin::MergeState)> = self
            .peers
            .iter()
            .filter(|(_, p)| !p.merged)
            .filter_map(|(id, p)| Some((*id, p.merging.clone()?)))
            .collect();
        prepared.sort_by_key(|(id, _)| *id);
        // Targets a source led here merges into keep their leadership
        // here: two sources led on two stores, merging into one target
        // from either side, would otherwise hand its leadership back and
        // forth, and neither merge would be proposed (found by
        // `chaos.rs`). Once one commits, the other rolls back.
        let wanted: HashSet<u64> = (prepared.iter())
            .filter(|(id, _)| self.peers.get(id).is_some_and(|p| p.is_leader()))
            .map(|(_, state)| state.target.id)
            .collect();
        // A merge that keeps waiting says so every few seconds, so a
        // stuck one shows in the log.
        let loud = self.ticks.is_multiple_of(MERGE_CHECK_TICKS * 10);
        for (source_id, state) in prepared {
            let here = self.merge_target_here(&state);
            if let TargetHere::Stale(why) = here {
                self.vote_rollback_merge(source_id, state.commit, why);
            }
            let Some(source) = self.peers.get_mut(&source_id) else {
                continue;
            };
            if source.rollback_merge_agreed() {
                roll_back_merge(source);
                continue;
            }
            let (TargetHere::Current, Some(target)) = (here, self.peers.get(&state.target.id))
            else {
                if loud {
                    let waits = match here {
                        TargetHere::Stale(_) => "merge waits for a quorum to vote it back",
                        _ => "merge waits for its target here",
                    };
                    info!(
                        region_id = source_id,
                        target = state.target.id,
                        ?here,
                        "{waits}"
                    );
                }
                continue;
            };
            let Some(source) = self.peers.get(&source_id) else {
                continue;
            };
            if !source.is_leader() {
                if !target.is_leader() || wanted.contains(&state.target.id) {
                    continue;
                }
                let to = source
                    .leader()
                    .map(|l| l.store_id)
                    .filter(|s| *s != self.store_id)
                    .and_then(|s| target.region.peers.iter().find(|p| p.store_id == s))
                    .map(|p| p.id);
                // Not to a store short of room from one with room (it
                // would refuse, after an election timeout of no writes).
                let short_here = self.disk.get() != DiskUsage::Normal;
                let target = self.peers.get_mut(&state.target.id);
                let target = target.filter(|t| short_here || to.is_none_or(|to| !t.disk_short(to)));
                if let (Some(to), Some(target)) = (to, target) {
                    debug!(
                        region_id = target.region.id,
                        to, "target leadership goes to its merge source's leader"
                    );
                    target.propose_pending();
                    target.raw_node.transfer_leader(to);
                }
                continue;
            }
            if !target.is_leader() {
                if loud {
                    info!(
                        region_id = source_id,
                        target = state.target.id,
                        "merge waits for its target to lead here"
                    );
                }
                continue;
            }
            match source.commit_merge_request() {
                Ok(req) => {
                    info!(
                        region_id = source_id,
                        target = state.target.id,
                        "proposing the merge to its target"
                    );
                    let recorded = state.target.region_epoch.clone().unwrap_or_default();
                    let (cb, _) = oneshot::channel();
                    if let Some(target) = self.peers.get_mut(&state.target.id) {
                        target.propose_commit_merge(&recorded, req, cb);
                    }
                }
                Err(e) => warn!(region_id = source_id, error = %e, "cannot build the CommitMerge"),
            }
        }
        self.transport.flush();
    }

    /// What this store's peer of a prepared merge's target says about it.
    fn merge_target_here(&self, merge: &admin::MergeState) -> TargetHere {
        let recorded = merge.target.region_epoch.clone().unwrap_or_default();
        if let Some(target) = self
            .peers
            .get(&merge.target.id)
            .filter(|t| t.is_initialized())
        {
            let now = target.region.region_epoch.clone().unwrap_or_default();
            return if now.version > recorded.version || now.conf_ver > recorded.conf_ver {
                TargetHere::Stale("the target changed")
            } else if now == recorded {
                TargetHere::Current
            } else {
                TargetHere::Behind
            };
        }
        // The target's peer here that the PrepareMerge recorded was
        // destroyed: removed from the target, or the target merged away.
        let recorded_here = merge
            .target
            .peers
            .iter()
            .find(|p| p.store_id == self.store_id)
            .map(|p| p.id);
        match (
            recorded_here,
            meta::load_tombstone(&self.kv, merge.target.id),
        ) {
            (Some(id), Ok(Some(gone))) if gone >= id => {
                TargetHere::Stale("the target's peer here is gone")
            }
            _ => TargetHere::Missing,
        }
    }

    /// This store's peer of a prepared merge's source votes to roll it
    /// back: a leader counts its own vote, a follower sends its vote to
    /// the leader it knows (every merge check, so a new leader hears it
    /// too). Learners do not vote.
    fn vote_rollback_merge(&mut self, source_id: u64, commit: u64, why: &str) {
        let Some(source) = self.peers.get_mut(&source_id) else {
            return;
        };
        debug!(region_id = source_id, why, "voting to roll the merge back");
        if source.is_leader() {
            let me = source.meta.id;
            // A quorum, if this vote made one, is acted on by the caller.
            source.want_rollback_merge(me, commit);
            return;
        }
        if source.meta.role == metapb::PeerRole::Learner as i32 {
            return;
        }
        let Some(leader) = source.leader() else {
            return;
        };
        let epoch = source.region.region_epoch.clone().unwrap_or_default();
        self.transport.send(PeerMessage {
            want_rollback_merge: Some(commit),
            ..PeerMessage::note(source_id, source.meta.clone(), leader, epoch)
        });
    }

    /// The regions this store leads that are due a split check: their
    /// applied commands reached `region-split-check-diff`, or their size
    /// is unknown here (a new leader, or a check that failed); their
    /// counters start again. A region whose check is still queued or
    /// running is not due (TiKV queues no scan while one is pending).
    pub fn split_check_due(&mut self) -> Vec<metapb::Region> {
        let diff = self.cfg.split_check.check_diff;
        self.peers
            .values_mut()
            .filter(|p| p.is_initialized() && p.is_leader() && !p.split_check_pending)
            .filter(|p| p.size_diff_hint >= diff || p.approximate.is_none())
            .map(|p| {
                p.size_diff_hint = 0;
                p.split_check_pending = true;
                p.region.clone()
            })
            .collect()
    }

    /// Forgets the measured size of every region here overlapping
    /// `[start, end)` (empty end: unbounded), whose data went outside Raft
    /// (UnsafeDestroyRange): each is measured again at the next split
    /// check, so PD sees it shrink and may merge it (as TiKV's
    /// ClearRegionSizeInRange).
    pub fn clear_sizes_in(&mut self, start: &[u8], end: &[u8]) {
        for peer in self.peers.values_mut() {
            if overlaps(&peer.region, (start, end)) {
                peer.approximate = None;
                peer.size_diff_hint = u64::MAX;
            }
        }
        self.publish_all();
    }

    /// The region, if this store's peer leads it at `epoch` (any if None).
    pub fn led_region(
        &self,
        region_id: u64,
        epoch: Option<&metapb::RegionEpoch>,
    ) -> Option<metapb::Region> {
        let peer = self.peers.get(&region_id)?;
        let current = peer.region.region_epoch.as_ref();
        let at_epoch = epoch.is_none_or(|e| Some(e) == current);
        (peer.is_initialized() && peer.is_leader() && at_epoch).then(|| peer.region.clone())
    }

    /// Takes a split check's outcome (None: the check failed): records
    /// the region's size, and asks PD for a split if one is due and the
    /// region is still as checked. A region that should split is checked
    /// again at the next tick until it has (as TiKV keeps checking while a
    /// split is due): a split that failed (PD refused ids, a membership
    /// change raced it) is tried again without waiting for more writes.
    pub fn on_split_check(&mut self, region: &metapb::Region, found: Option<SplitCheck>) {
        let Some(peer) = self.peers.get_mut(&region.id) else {
            return;
        };
        peer.split_check_pending = false;
        let Some(found) = found else {
            return;
        };
        // A membership change since leaves the range, and so the size, as
        // it was; a split or a merge does not (and asks for a new check).
        if crate::region_version(&peer.region) != crate::region_version(region) {
            return;
        }
        peer.approximate = Some(found.stats);
        if !found.split_keys.is_empty() && peer.is_leader() {
            peer.size_diff_hint = u64::MAX;
            let _ = self.events.send(StoreEvent::AskSplit {
                region: peer.region.clone(),
                split_keys: found.split_keys,
            });
        }
        self.publish_all();
    }

    /// `cb` is answered once this store may serve a linearizable read of
    /// the region (Raft's ReadIndex, batched per round). With `replica`
    /// (the leader's check, may be empty) a follower or learner may serve
    /// it too (see `replica_read.rs`); else only the leader.
    pub fn read_index(&mut self, region_id: u64, replica: Option<Vec<u8>>, cb: ReadCallback) {
        match self.peers.get_mut(&region_id) {
            Some(peer) => match replica {
                None => peer.read_index(cb),
                Some(check) => peer.replica_read_index(cb, check),
            },
            None => {
                let _ = cb.send(Err(RaftstoreError::RegionNotFound(region_id)));
            }
        }
    }

    /// Tells the region's leader whether its snapshot reached peer `to`.
    /// After a failure it sends another; after success it resumes the log.
    pub fn report_snapshot(&mut self, region_id: u64, to: u64, delivered: bool) {
        self.snaps.end_send(region_id, to);
        if let Some(peer) = self.peers.get_mut(&region_id) {
            let status = if delivered {
                raft::SnapshotStatus::Finish
            } else {
                raft::SnapshotStatus::Failure
            };
            peer.raw_node.report_snapshot(to, status);
        }
    }

    /// Tells every leader here that its peer on `store_id` did not get
    /// what was sent to it (a queue to that store was full or its
    /// connection broke), as TiKV's transport reports a lost connection:
    /// Raft then probes that peer with one append at a time rather than
    /// waiting, its window full, for acknowledgements that will not come.
    pub fn report_store_unreachable(&mut self, store_id: u64) {
        for peer in self.peers.values_mut() {
            if !peer.is_leader() {
                continue;
            }
            let on_store: Vec<u64> = (peer.region.peers.iter())
                .filter(|p| p.store_id == store_id)
                .map(|p| p.id)
                .collect();
            for id in on_store {
                peer.raw_node.report_unreachable(id);
            }
        }
    }

    /// Hands a Raft message from another store to its peer, creating the
    /// peer when the message may be the first a new peer gets; a note
    /// (a tombstone, a vote to roll back a merge) is acted on here. A
    /// message for another peer than ours, or one that cannot be checked,
    /// is dropped: its sender retries. A snapshot that Raft did not take
    /// (dropped, refused or stale) leaves no files behind.
    pub fn step(&mut self, msg: PeerMessage) {
        if self.failure.is_some() {
            return;
        }
        let snapshot = (msg.message.get_msg_type() == MessageType::MsgSnapshot)
            .then(|| SnapKey::of(msg.region_id, msg.message.get_snapshot()));
        self.take_message(msg, snapshot);
        if let Some(key) = snapshot {
            let taken = (self.peers.get(&key.region_id))
                .and_then(|p| p.raw_node.snap())
                .is_some_and(|s| SnapKey::of(key.region_id, s) == key);
            if !taken {
                self.snaps.remove(&self.snaps.recv_dir(key));
            }
        }
    }

    /// [`Store::step`]'s work; `snapshot` names the message's snapshot,
    /// if it carries one.
    fn take_message(&mut self, msg: PeerMessage, snapshot: Option<SnapKey>) {
        let region_id = msg.region_id;
        if msg.to.store_id != self.store_id || msg.from.id == 0 || msg.to.id == 0 {
            debug!(region_id, "message with bad peers dropped");
            return;
        }
        if !msg.is_note() && !from_a_peer(&msg.message) {
            debug!(region_id, msg_type = ?msg.message.get_msg_type(), "message type no peer sends dropped");
            return;
        }
        if self.peers.get(&region_id).is_some_and(|p| {
            let ours = p.region.region_epoch.clone().unwrap_or_default();
            msg.to.id > p.meta.id && msg.epoch.conf_ver > ours.conf_ver
        }) {
            // This store's peer was removed and a newer one added here
            // since (only a newer configuration can name one): the old one
            // goes, the new one starts afresh.
            info!(
                region_id,
                to = msg.to.id,
                "replaced by a newer peer of the region"
            );
            if let Err(e) = self.destroy_peer(region_id) {
                self.fail(region_id, "cannot destroy a replaced peer", e);
                return;
            }
        }
        if !self.peers.contains_key(&region_id) {
            match self.maybe_create_peer(&msg) {
                Ok(true) => {}
                Ok(false) => return,
                Err(e) => {
                    self.fail(region_id, "cannot create peer", e);
                    return;
                }
            }
        }
        let Some(peer) = self.peers.get_mut(&region_id) else {
            return;
        };
        if msg.to.id != peer.meta.id {
            debug!(
                region_id,
                to = msg.to.id,
                "message for another peer dropped"
            );
            return;
        }
        let ours = peer.region.region_epoch.clone().unwrap_or_default();
        if msg.is_tombstone {
            if let Some(target) = msg.merged_into {
                // A peer that applied the region's CommitMerge: the region
                // is gone everywhere. This peer is a leftover only if its
                // store's target peer is gone (removed before it applied the
                // merge). A target peer that is behind, or not yet started
                // (a split here not yet applied makes it), takes this one in
                // when it applies the CommitMerge, and the merged data is
                // this peer's (found by `chaos.rs`); a snapshot of the merged
                // target replaces it too.
                let other = msg.from.id != peer.meta.id && msg.from.store_id != self.store_id;
                let fellow = peer.region.peers.iter().any(|p| p.id == msg.from.id);
                if !other || !fellow {
                    return;
                }
                if !self.target_gone(target) {
                    debug!(
                        region_id,
                        target, "merged away; this store's target peer is to take it in"
                    );
                    self.merged_away
                        .insert(region_id, (target, msg.merged_version));
                } else {
                    info!(
                        region_id,
                        target, "told by a peer that the region merged away"
                    );
                    if let Err(e) = self.destroy_leftover(region_id) {
                        self.fail(region_id, "cannot destroy a merged-away peer", e);
                    }
                }
                return;
            }
            // Only a peer of a newer configuration can say we were removed.
            if peer.is_initialized() && msg.epoch.conf_ver > ours.conf_ver {
                info!(region_id, "told by a peer that this one was removed");
                if let Err(e) = self.destroy_peer(region_id) {
                    self.fail(region_id, "cannot destroy a removed peer", e);
                }
            }
            return;
        }
        if let Some(commit) = msg.want_rollback_merge {
            if peer.want_rollback_merge(msg.from.id, commit) {
                roll_back_merge(peer);
            }
            return;
        }
        let stale_sender = peer.is_initialized()
            && msg.epoch.conf_ver < ours.conf_ver
            && !peer.region.peers.iter().any(|p| p.id == msg.from.id);
        if stale_sender {
            // A peer removed while it was away: tell it, so it goes.
            debug!(region_id, from = msg.from.id, "message from a removed peer");
            self.transport.send(you_were_removed(peer, msg.from));
            self.transport.flush();
            return;
        }
        if msg.check_stale {
            // Still a member, as far as this peer knows.
            return;
        }
        let m = &msg.message;
        if m.get_msg_type() == MessageType::MsgTimeoutNow
            && self.disk.get() != DiskUsage::Normal
            && msg.disk_usage == DiskUsage::Normal
        {
            // A leader with room handing over to a store without: it would
            // refuse the writes its leader takes (TiKV refuses it too).
            debug!(region_id, "leadership refused: this disk is short of room");
            return;
        }
        if m.get_msg_type() == MessageType::MsgHeartbeat
            && m.commit > peer.raw_node.raft.raft_log.last_index()
        {
            // A leader never claims a commit beyond what it sent us; raft-rs
            // would stop on it.
            debug!(region_id, "heartbeat with a commit beyond our log dropped");
            return;
        }
        if let Some(key) = snapshot {
            let others = self.peers.values().filter(|p| p.region.id != region_id);
            // Stale regions it covers go when Raft applies it.
            if let Err(why) = check_snapshot(&self.snaps, &msg, key, others, &self.merged_away) {
                debug!(region_id, %why, "snapshot message dropped");
                return;
            }
        }
        let Some(peer) = self.peers.get_mut(&region_id) else {
            return;
        };
        let mut message = msg.message;
        if message.get_msg_type() == MessageType::MsgReadIndex {
            // Another replica's read: its leader runs the read's check.
            match leader_takes_read(peer, &msg.from, message, self.applier.as_ref()) {
                Some(m) => message = m,
                None => return,
            }
        }
        peer.peer_cache.insert(msg.from.id, msg.from.clone());
        peer.note_disk_usage(msg.from.id, msg.disk_usage);
        peer.heard = true;
        peer.heard_from(msg.from.id);
        if message.get_msg_type() == MessageType::MsgTransferLeader {
            if let Some(answer) = peer.on_transfer_leader(&message) {
                Self::send(self.transport.as_mut(), peer, vec![answer]);
                self.transport.flush();
            }
            return;
        }
        if let Err(e) = peer.raw_node.step(message) {
            debug!(region_id, error = %e, "raft message rejected");
        }
    }

    /// Creates an uninitialized peer for a message to a region this store
    /// does not have, if the message can start a peer (a vote, or a
    /// leader's first heartbeat) and the peer was not removed before. A
    /// message to a peer forgotten in a merge is answered: its sender is a
    /// leftover of a region that no longer exists. So is a vote (or a
    /// check-stale note) from a peer removed before this store's, by the
    /// region this store's tombstone keeps.
    fn maybe_create_peer(&mut self, msg: &PeerMessage) -> Result<bool> {
        let tombstone = meta::load_tombstone_state(&self.kv, msg.region_id)?;
        if let Some(t) = tombstone.as_ref().filter(|t| msg.to.id <= t.peer_id) {
            let merged = match msg.is_note() && !msg.check_stale {
                true => None,
                false => meta::load_merged_into(&self.kv, msg.region_id)?,
            };
            if let Some(merged) = merged {
                // A leftover of a merged region still writes, or asks
                // whether it is stale: tell it (no other note is answered,
                // so two stores never trade them).
                let (from, to) = (msg.to.clone(), msg.from.clone());
                let member = |s: &metapb::Region| s.peers.iter().any(|p| p.id == msg.from.id);
                let note = match merged.source.filter(|s| !member(s)) {
                    // Removed from the source before it merged (cut off
                    // meanwhile): no part of the merge, and no target here
                    // would ever take it in, so it is told it was removed,
                    // at the source's last epoch (as TiKV answers a peer
                    // isolated before its removal and the PrepareMerge).
                    Some(source) => PeerMessage {
                        is_tombstone: true,
                        ..PeerMessage::note(
                            msg.region_id,
                            from,
                            to,
                            source.region_epoch.unwrap_or_default(),
                        )
                    },
                    None => PeerMessage {
                        is_tombstone: true,
                        merged_into: Some(merged.target),
                        merged_version: merged.version,
                        ..PeerMessage::note(msg.region_id, from, to, Default::default())
                    },
                };
                self.transport.send(note);
                self.transport.flush();
            } else if let Some(region) = (t.region.as_ref()).filter(|r| removed_before(r, msg)) {
                // The sender was removed before this store's peer, and
                // missed it: every peer it knows may be gone, and none
                // left to tell it (as TiKV answers a vote to a tombstone).
                info!(
                    region_id = msg.region_id,
                    from = msg.from.id,
                    "a peer removed before this store's asks; told it was removed"
                );
                let note = removal_note(region, msg.to.clone(), msg.from.clone());
                self.transport.send(note);
                self.transport.flush();
            }
            debug!(
                region_id = msg.region_id,
                "message to a removed peer dropped"
            );
            return Ok(false);
        }
        if !is_initial(&msg.message) {
            debug!(
                region_id = msg.region_id,
                "message for an unknown region dropped"
            );
            return Ok(false);
        }
        let range = (msg.start_key.as_slice(), msg.end_key.as_slice());
        let overlapped: Vec<u64> = (self.peers.values())
            .filter(|p| p.is_initialized() && overlaps(&p.region, range))
            .map(|p| p.region.id)
            .collect();
        let merged_here = |id: &u64| self.merged_away.get(id).map(|m| m.0) == Some(msg.region_id);
        if !overlapped.is_empty() && overlapped.iter().all(merged_here) {
            // Only sources that merged into this region cover its range:
            // no split here will make this peer, so it comes by snapshot,
            // and they are leftovers (their data with them).
            for id in overlapped {
                info!(
                    region_id = id,
                    target = msg.region_id,
                    "merged away; its target's peer starts here"
                );
                self.destroy_leftover(id)?;
            }
        } else if !overlapped.is_empty() {
            // A region here still covers the range: most likely it has not
            // applied the split that makes this one yet. Step it again then.
            debug!(
                region_id = msg.region_id,
                "message for a range a local region covers; waits for a split"
            );
            // Or it is a leftover nobody tells it is: a learner removed
            // while cut off never campaigns, and would hold the range until
            // max-leader-missing-duration. A region older than the
            // message's asks its peers now (as TiKV wakes a learner a newer
            // region overlaps; seed 11 of tests/nemesis.rs).
            // Once an election timeout at most: the newer region's
            // messages keep coming while it waits.
            let (now, every) = (self.ticks, self.election_ticks());
            let mut asked = false;
            for id in &overlapped {
                let Some(p) = (self.peers.get_mut(id))
                    .filter(|p| crate::region_version(&p.region) < msg.epoch.version)
                else {
                    continue;
                };
                if p.asked_if_stale_at
                    .is_none_or(|at| now >= at.saturating_add(every))
                {
                    p.asked_if_stale_at = Some(now);
                    asked |= ask_if_stale(self.transport.as_mut(), p);
                }
            }
            if asked {
                self.transport.flush();
            }
            if self.waiting.len() >= MAX_WAITING_MESSAGES {
                self.waiting.pop_front();
            }
            self.waiting.push_back(msg.clone());
            return Ok(false);
        }
        match meta::load_incarnation(&self.kv, msg.region_id)? {
            // Made before a restart: its log holds its votes.
            Some(id) if id == msg.to.id => {}
            Some(id) if msg.to.id < id => {
                debug!(
                    region_id = msg.region_id,
                    "message to a peer a newer one replaced dropped"
                );
                return Ok(false);
            }
            earlier => {
                // A new incarnation: nothing of a removed peer's log or
                // votes applies to it (a crash may have left some).
                if tombstone.is_some() || earlier.is_some() {
                    let mut w = RaftLogWrite::default();
                    w.clean(msg.region_id);
                    self.log.write(&mut w, true)?;
                }
                // Recorded before it can vote: a split applied here later
                // must not open an older peer of the region over its log.
                meta::write_incarnation(&self.kv, msg.region_id, msg.to.id)?;
            }
        }
        let peer = Peer::uninitialized(
            msg.region_id,
            msg.to.clone(),
            self.log.clone(),
            &self.raft_cfg,
            &self.logger,
        )?;
        info!(
            region_id = msg.region_id,
            peer_id = msg.to.id,
            "created peer, waiting for a snapshot"
        );
        self.peers.insert(msg.region_id, peer);
        Ok(true)
    }

    /// One tick of every peer's Raft clock; every few, prepared merges
    /// move on.
    pub fn tick(&mut self) {
        let missing = self.leader_missing_ticks();
        let deposed_wait = self.election_ticks().saturating_mul(2);
        let mut asked = false;
        for peer in self.peers.values_mut() {
            peer.raw_node.tick();
            peer.tick_reads();
            peer.wait_deposed_proposals(deposed_wait);
            peer.count_silence();
            if peer.disk_windows_due() {
                peer.pause_full_followers();
            }
            let heard = std::mem::take(&mut peer.heard);
            let led = if peer.is_naive() {
                heard
            } else {
                peer.raw_node.raft.leader_id != raft::INVALID_ID
            };
            if led {
                peer.leaderless_ticks = 0;
                continue;
            }
            peer.leaderless_ticks = peer.leaderless_ticks.saturating_add(1);
            if peer.leaderless_ticks.is_multiple_of(missing) {
                let _ = self.events.send(StoreEvent::LeaderMissing {
                    region: peer.region.clone(),
                    peer: peer.meta.clone(),
                });
                // PD cannot judge a peer of a region it no longer knows
                // (merged away); the region's other peers may.
                asked |= ask_if_stale(self.transport.as_mut(), peer);
            }
        }
        if asked {
            self.transport.flush();
        }
        self.ticks += 1;
        if self.ticks.is_multiple_of(MERGE_CHECK_TICKS) {
            self.drop_merged_sources();
            self.drive_merges();
        }
        if self.ticks.is_multiple_of(self.election_ticks()) {
            self.tell_removed_peers();
        }
        // Peers silent long enough are down now, or heard from again: a
        // round with nothing to do would not publish that.
        self.publish_all();
    }

    /// Records an engine failure met outside a round: see `failure`.
    pub(crate) fn fail(&mut self, region_id: u64, what: &str, e: crate::RaftstoreError) {
        error!(region_id, error = %e, "{what}; the store stops");
        self.failure.get_or_insert(e);
    }

    /// The election timeout in ticks (at least one).
    fn election_ticks(&self) -> u64 {
        (self.raft_cfg.election_tick as u64).max(1)
    }

    /// One poll of the peers membership changes removed (see
    /// [`Peer::removed_peers`]): a leader tells each that it was removed,
    /// at this epoch (unless raft-rs counts that peer again). A removed
    /// peer that applied its removal is gone already and its store drops
    /// the note; an initialized one cut off meanwhile goes when it hears
    /// it. Nothing answers, so it is sent again later.
    fn tell_removed_peers(&mut self) {
        let mut sent = false;
        for peer in self.peers.values_mut() {
            for (_, polls) in &mut peer.removed_peers {
                *polls += 1;
            }
            (peer.removed_peers).retain(|(_, polls)| *polls <= REMOVED_PEER_POLLS);
            if peer.removed_peers.is_empty() || !peer.is_leader() {
                continue;
            }
            for (removed, polls) in &peer.removed_peers {
                if *polls < FIRST_REMOVED_PEER_POLL
                    || !polls.is_power_of_two()
                    || peer.in_raft_config(removed.id)
                {
                    continue;
                }
                self.transport.send(you_were_removed(peer, removed.clone()));
                sent = true;
            }
        }
        if sent {
            self.transport.flush();
        }
    }

    /// Destroys the merged-away sources here whose target here is past
    /// the merge (at or beyond the version it had once it took the source
    /// in) without having taken them in: it applied a snapshot instead,
    /// and that snapshot held the source's data, or a region split from
    /// it since holds it. Waiting would keep the source, and the range it
    /// blocks, for good (a split target's new region could never start
    /// here; found by `chaos.rs`).
    fn drop_merged_sources(&mut self) {
        let mut past: Vec<u64> = (self.merged_away.iter())
            .filter(|(source, &(target, merged))| {
                merged > 0
                    && self.peers.contains_key(source)
                    && self.peers.get(&target).is_some_and(|t| {
                        t.is_initialized() && crate::region_version(&t.region) >= merged
                    })
            })
            .map(|(source, _)| *source)
            .collect();
        past.sort_unstable();
        for source in past {
            info!(
                region_id = source,
                "merged away, and this store's target is past the merge: destroying the source"
            );
            if let Err(e) = self.destroy_leftover(source) {
                self.fail(source, "cannot destroy a merged-away peer", e);
            }
        }
    }

    /// `max_leader_missing` in ticks (at least one).
    fn leader_missing_ticks(&self) -> u64 {
        self.ticks_in(self.cfg.max_leader_missing)
    }

    /// How many ticks a peer may stay silent to its leader before it is
    /// down.
    fn down_ticks(&self) -> u64 {
        self.ticks_in(self.cfg.max_peer_down)
    }

    /// The whole ticks in `d`, at least one.
    fn ticks_in(&self, d: Duration) -> u64 {
        let tick = self.cfg.base_tick.as_nanos().max(1);
        u64::try_from(d.as_nanos() / tick)
            .unwrap_or(u64::MAX)
            .max(1)
    }

    /// `ticks` in whole seconds.
    fn ticks_to_secs(&self, ticks: u64) -> u64 {
        let ms = u64::try_from(self.cfg.base_tick.as_millis()).unwrap_or(u64::MAX);
        ticks.saturating_mul(ms) / 1000
    }

    /// Destroys this store's peer `peer_id` of a region PD found it stale
    /// in, if the peer is still as it was reported (`epoch`) and still
    /// without a leader (a naive one: has heard nothing for
    /// `max_leader_missing`), and is not a merge source whose target has a
    /// peer here, which takes it in once it catches up. (A target with no
    /// peer here yet, which a merged-away note waits for, is not waited
    /// for here: after PD's long wait, it most likely merged on itself,
    /// and waiting would keep the source for good.) Its data goes too
    /// unless another region here overlaps it. True if it was destroyed.
    pub fn destroy_stale_peer(
        &mut self,
        region_id: u64,
        peer_id: u64,
        epoch: &metapb::RegionEpoch,
    ) -> Result<bool> {
        let Some(peer) = self.peers.get(&region_id) else {
            return Ok(false);
        };
        let unchanged = peer.meta.id == peer_id
            && peer.region.region_epoch.clone().unwrap_or_default() == *epoch;
        let quiet = if peer.is_naive() {
            !peer.heard && peer.leaderless_ticks >= self.leader_missing_ticks()
        } else {
            peer.raw_node.raft.leader_id == raft::INVALID_ID
        };
        if !unchanged || !quiet {
            return Ok(false);
        }
        let target = (peer.merging.as_ref().map(|m| m.target.id))
            .or_else(|| self.merged_away.get(&region_id).map(|m| m.0));
        if let Some(target) = target.filter(|t| self.peers.contains_key(t)) {
            info!(
                region_id,
                target, "a stale merge source waits for its target here to take it in"
            );
            return Ok(false);
        }
        info!(region_id, "destroying a stale peer, as PD knows the region");
        self.destroy_leftover(region_id)?;
        Ok(true)
    }

    /// Whether this store's peer of a merge's target is gone for good (a
    /// tombstone and no live peer), so it will never take the source in.
    fn target_gone(&self, target: u64) -> bool {
        !self.peers.contains_key(&target)
            && meta::load_tombstone(&self.kv, target).is_ok_and(|t| t.is_some())
    }

    /// Destroys a peer of a region that no longer has it; its data goes
    /// too unless another region here overlaps it (that data is the other
    /// region's).
    fn destroy_leftover(&mut self, region_id: u64) -> Result<()> {
        let Some(peer) = self.peers.get(&region_id) else {
            return Ok(());
        };
        let range = (
            peer.region.start_key.as_slice(),
            peer.region.end_key.as_slice(),
        );
        let shared = self
            .peers
            .values()
            .any(|p| p.region.id != region_id && p.is_initialized() && overlaps(&p.region, range));
        debug!(region_id, shared, "destroying a leftover peer");
        self.destroy_peer_with(region_id, !shared)
    }

    /// Makes this store's peer of the region start an election now.
    pub fn campaign(&mut self, region_id: u64) -> Result<()> {
        let peer = self
            .peers
            .get_mut(&region_id)
            .ok_or(RaftstoreError::RegionNotFound(region_id))?;
        let _ = peer.raw_node.campaign();
        Ok(())
    }

    /// Asks this store's peer, if it leads the region, to hand leadership
    /// to peer `to`: the leader stops taking proposals, brings `to` up to
    /// date, and tells it to campaign at once (Raft's leader transfer).
    pub fn transfer_leader(
        &mut self,
        region_id: u64,
        to: u64,
        epoch: Option<&metapb::RegionEpoch>,
    ) -> Result<()> {
        let peer = self
            .peers
            .get_mut(&region_id)
            .ok_or(RaftstoreError::RegionNotFound(region_id))?;
        if !peer.is_leader() {
            return Err(peer.not_leader());
        }
        // PD's order is for the region as PD last saw it (TiKV checks a
        // TransferLeader's version and conf_ver): after a split or a
        // membership change it may name a peer that no longer holds the
        // range it thinks.
        if epoch.is_some_and(|e| Some(e) != peer.region.region_epoch.as_ref()) {
            return Err(peer.epoch_not_match());
        }
        if !peer.region.peers.iter().any(|p| p.id == to) {
            return Err(RaftstoreError::ConfChange(format!(
                "peer {to} is not a member of region {region_id}"
            )));
        }
        if self.disk.get() == DiskUsage::Normal && peer.disk_short(to) {
            // It would refuse at the end (see `step`), after a whole
            // election timeout of proposals dropped here.
            debug!(region_id, to, "no leadership to a store short of room");
            return Ok(());
        }
        // First the target is asked whether it is ready (TiKV's
        // handshake): it answers with its applied index, and the transfer
        // starts only if that shows it ready ([`Peer::on_transfer_leader`]).
        match peer.ask_to_take_over(to) {
            Ok(ask) => {
                Self::send(self.transport.as_mut(), peer, vec![ask]);
                self.transport.flush();
            }
            Err(why) => debug!(region_id, to, why, "no leadership transfer now"),
        }
        Ok(())
    }

    /// Fails every waiting proposal: the store is stopping.
    pub fn shutdown(&mut self) {
        for peer in self.peers.values_mut() {
            peer.fail_proposals();
            peer.fail_all_reads();
        }
    }

    fn send(transport: &mut dyn Transport, peer: &Peer, messages: Vec<raft::eraftpb::Message>) {
        for mut m in messages {
            if !peer.repair_append(&mut m) {
                continue;
            }
            let Some(to) = peer.find_peer(m.to) else {
                debug!(
                    region_id = peer.region.id,
                    to = m.to,
                    "message to a peer not in the region dropped"
                );
                continue;
            };
            // Only a message that may create the peer needs the range (as
            // TiKV): the receiver checks it against its regions.
            let (start_key, end_key) = if is_initial(&m) {
                (peer.region.start_key.clone(), peer.region.end_key.clone())
            } else {
                (vec![], vec![])
            };
            let epoch = peer.region.region_epoch.clone().unwrap_or_default();
            transport.send(PeerMessage {
                message: m,
                start_key,
                end_key,
                ..PeerMessage::note(peer.region.id, peer.meta.clone(), to, epoch)
            });
        }
    }

    /// One round of group commit across all peers; see the module docs.
    /// An error means an engine failed: the store must stop.
    pub fn on_ready(&mut self) -> Result<()> {
        if let Some(e) = self.failure.take() {
            return Err(e);
        }
        let mut taken: Vec<(u64, Ready)> = vec![];
        let ids: Vec<u64> = self.peers.keys().copied().collect();
        for id in &ids {
            let Some(peer) = self.peers.get_mut(id) else {
                continue;
            };
            if let Some(rd) =
                Self::take_ready(self.transport.as_mut(), &self.kv, &self.snaps, peer)?
            {
                taken.push((*id, rd));
            }
        }
        if taken.is_empty() {
            return Ok(());
        }
        // Appends leave now, so followers persist them while we do.
        self.transport.flush();
        let mut write = RaftLogWrite::default();
        let mut readies: Vec<(u64, Ready, Vec<Entry>)> = vec![];
        let kv = self.kv.clone();
        let mut batch = ApplyBatch::new(&kv);
        for (id, mut rd) in taken {
            // Out of the map while it runs, so that a merge's target can
            // reach its source peer (see `Peer::apply`).
            let Some(mut peer) = self.peers.remove(&id) else {
                continue;
            };
            let outcome = self.ready_one(id, &mut peer, &mut rd, &mut write, &mut batch);
            self.peers.insert(id, peer);
            readies.push((id, rd, outcome?));
        }
        // Leaders' applies, in one write: their proposers hear back before
        // the fsync.
        self.finish_applies(batch, readies.iter().map(|(id, _, _)| *id))?;
        // Only new entries, a snapshot, or a new term or vote need the
        // fsync (raft-rs' `must_sync`); a round that only moves the commit
        // index (a hint, see `PeerStorage::new`) writes without one.
        let sync = readies.iter().any(|(_, rd, _)| rd.must_sync());
        self.log.write(&mut write, sync)?;
        // Votes and acks promise what is now durable: they leave before
        // anything more is applied, so leaders commit sooner.
        for (id, rd, _) in &mut readies {
            if let Some(peer) = self.peers.get(id).filter(|p| !p.merged) {
                Self::send(self.transport.as_mut(), peer, rd.take_persisted_messages());
            }
        }
        self.transport.flush();

        let mut commit_write = RaftLogWrite::default();
        let mut batch = ApplyBatch::new(&kv);
        let mut applied_ids = Vec::with_capacity(readies.len());
        for (id, rd, deferred) in readies {
            let Some(mut peer) = self.peers.remove(&id) else {
                continue;
            };
            if peer.merged || peer.pending_remove {
                // Taken in by its target, or removed from its region by a
                // change it applied this round: it goes after the round.
                // raft-rs must not advance a leader that is no longer in
                // its own configuration (it stops on its own progress;
                // found by `chaos.rs`).
                self.peers.insert(id, peer);
                continue;
            }
            applied_ids.push(id);
            let applied = peer.apply(&mut batch, self.applier.as_ref(), deferred, &mut self.peers);
            if let Err(e) = applied {
                self.peers.insert(id, peer);
                return Err(e);
            }
            let mut light = peer.raw_node.advance(rd);
            if let Some(commit) = light.commit_index() {
                let store = peer.raw_node.mut_store();
                store.hard_state.commit = commit;
                if let Err(e) = commit_write.set_hard_state(id, &store.hard_state) {
                    self.peers.insert(id, peer);
                    return Err(e.into());
                }
            }
            Self::send(self.transport.as_mut(), &peer, light.take_messages());
            let committed = light.take_committed_entries();
            let applied = peer.apply(
                &mut batch,
                self.applier.as_ref(),
                committed,
                &mut self.peers,
            );
            if let Ok(applied) = applied {
                peer.raw_node.advance_apply();
                peer.raw_node.mut_store().compact_cache(applied);
            }
            self.peers.insert(id, peer);
            applied?;
        }
        self.transport.flush();
        self.finish_applies(batch, applied_ids.into_iter())?;
        // The commit index is a hint that saves replay work after restart;
        // it need not be synced (entries themselves already are).
        self.log.write(&mut commit_write, false)?;
        self.after_round()
    }

    /// Takes one peer's Raft ready (see the module docs) and sends what
    /// may go before persisting: a leader's appends. Every peer's leave
    /// before any peer applies. `None` if the peer has nothing to do.
    fn take_ready(
        transport: &mut dyn Transport,
        kv: &KvEngine,
        snaps: &SnapManager,
        peer: &mut Peer,
    ) -> Result<Option<Ready>> {
        // The round's client commands, as one entry (or refused, if the
        // peer was deposed or merged since it took them in).
        peer.propose_pending();
        if peer.merged {
            return Ok(None);
        }
        if !peer.is_leader() {
            // Deposed (by a message or a tick since the last round): its
            // reads are retried elsewhere. Its proposals wait: under the
            // next leader their entries may still commit, and then apply
            // here (see `Peer::wait_deposed_proposals`).
            peer.fail_reads();
        }
        peer.ask_reads();
        if peer.raw_node.store().wants_snapshot() && !peer.merge_pending() {
            // Everything applied so far is in the engine: the snapshot is
            // taken at the applied index. Not while a merge is pending (as
            // TiKV): a snapshot does not carry the merge state, and the
            // peer waits for the merge's end.
            peer.start_snapshot(kv, snaps)?;
        }
        if !peer.raw_node.has_ready() {
            return Ok(None);
        }
        let mut rd = peer.raw_node.ready();
        if rd.ss().is_some_and(|ss| ss.raft_state == StateRole::Leader) {
            peer.hurry_commit();
        }
        if rd.ss().is_some() || rd.hs().is_some() {
            // Before this ready's messages (a vote, a campaign) leave.
            let raft = &peer.raw_node.raft;
            peer.read_progress.set_leader(raft.term, raft.leader_id);
        }
        // A leader's appends go out while it persists them itself.
        let messages = rd.take_messages();
        let snapshots = (messages.iter())
            .filter(|m| m.get_msg_type() == MessageType::MsgSnapshot)
            .map(|m| m.get_snapshot().get_metadata().index);
        if let Some(index) = snapshots.max() {
            peer.snapshot_sent_index = peer.snapshot_sent_index.max(index);
        }
        Self::send(transport, peer, messages);
        Ok(Some(rd))
    }

    /// Writes a pass's applies in one KV write, then answers what they
    /// applied and the reads now covered (see `apply.rs`).
    fn finish_applies(
        &mut self,
        mut batch: ApplyBatch<'_>,
        ids: impl Iterator<Item = u64>,
    ) -> Result<()> {
        batch.write()?;
        for id in ids {
            if let Some(peer) = self.peers.get_mut(&id) {
                peer.finish_apply();
                peer.answer_reads();
            }
        }
        Ok(())
    }

    /// Applies a taken ready's snapshot and, on a leader, its committed
    /// entries (into `batch`); queues its new entries and hard state in
    /// `write`. Returns a follower's committed entries, applied once its
    /// acknowledgements are sent.
    fn ready_one(
        &mut self,
        id: u64,
        peer: &mut Peer,
        rd: &mut Ready,
        write: &mut RaftLogWrite,
        batch: &mut ApplyBatch<'_>,
    ) -> Result<Vec<Entry>> {
        let snapshot = !rd.snapshot().is_empty();
        if snapshot {
            // Other regions' applies first: the snapshot may replace a
            // stale peer's data, which must not be written back after it.
            batch.write()?;
            self.destroy_stale_under(peer, rd.snapshot(), write)?;
            if let Ok(data) = crate::snap::decode_data(rd.snapshot()) {
                let new = data.region.unwrap_or_default();
                self.check_unowned(id, (&new.start_key, &new.end_key), "snapshot");
                if peer.is_initialized() {
                    for (start, end) in crate::peer::outside(&peer.region, &new) {
                        self.check_unowned(id, (&start, &end), "snapshot's outside");
                    }
                }
            }
            peer.apply_snapshot(&self.kv, &self.snaps, rd.snapshot())?;
            info!(
                region_id = id,
                index = rd.snapshot().get_metadata().index,
                range = %range_text(&peer.region),
                "applied snapshot"
            );
            write.clean(id);
        }
        let committed = rd.take_committed_entries();
        // A leader applies at once, so its proposers hear back before its
        // fsync; a follower first persists and acknowledges what it got.
        let deferred = if peer.is_leader() || snapshot {
            peer.apply(batch, self.applier.as_ref(), committed, &mut self.peers)?;
            vec![]
        } else {
            committed
        };
        peer.on_read_states(rd.take_read_states());
        if !rd.entries().is_empty() {
            write.append(id, rd.entries())?;
            peer.raw_node.mut_store().on_append(rd.entries());
        }
        if let Some(hs) = rd.hs() {
            peer.raw_node.mut_store().hard_state = hs.clone();
        }
        if snapshot || rd.hs().is_some() {
            write.set_hard_state(id, &peer.raw_node.store().hard_state)?;
        }
        Ok(deferred)
    }

    /// After a round: destroys removed peers, forgets merged sources,
    /// starts the peers splits made, and publishes what changed.
    fn after_round(&mut self) -> Result<()> {
        let ids = |peers: &HashMap<u64, Peer>, pick: fn(&Peer) -> bool| -> Vec<u64> {
            peers
                .iter()
                .filter(|(_, p)| pick(p))
                .map(|(id, _)| *id)
                .collect()
        };
        let to_clear: Vec<(Vec<u8>, Vec<u8>)> = (self.peers.values_mut())
            .flat_map(|p| p.ranges_to_clear.drain(..))
            .collect();
        // A merge's source that was behind may have applied a split of its
        // own log while it caught up: those regions start all the same.
        let mut made = vec![];
        for id in ids(&self.peers, |p| p.merged) {
            if let Some(peer) = self.peers.get_mut(&id) {
                made.extend(peer.pending_splits.drain(..).map(|r| (r, false)));
            }
            self.forget_merged_peer(id)?;
        }
        // A peer removed after a split in the same round: the split's
        // regions were written with it and keep their peers here. Left
        // unstarted, one would surface only at the next restart, over
        // whatever region took its range here meanwhile (found by
        // `tests/nemesis.rs`: destroying it deleted that region's data).
        for id in ids(&self.peers, |p| p.pending_remove) {
            if let Some(peer) = self.peers.get_mut(&id) {
                made.extend(peer.pending_splits.drain(..).map(|r| (r, false)));
            }
            self.destroy_peer(id)?;
        }
        self.start_split_peers(made)?;
        self.publish_all();
        if !to_clear.is_empty() {
            // Split ranges no region here owns (see `Peer::ranges_to_clear`),
            // once no view shows them any more. A crash before this write
            // leaves them, unowned and unread, as before.
            let mut wb = self.kv.write_batch();
            for (start, end) in &to_clear {
                self.check_unowned(0, (start, end), "split range cleared");
                for cf in tikal_engine::DATA_CFS {
                    wb.delete_range(cf, start, end);
                }
            }
            self.kv.write(wb, false)?;
        }
        for peer in self.peers.values_mut() {
            peer.answer_replica_reads();
        }
        Ok(())
    }

    /// Starts this store's peers of the regions splits made this round
    /// (`made`: those of merged sources, with whether to campaign). A
    /// new peer whose parent leads campaigns at once, so the new region
    /// has a leader (most likely on this store) without an election
    /// timeout; messages that waited for the split are stepped now.
    fn start_split_peers(&mut self, mut made: Vec<(metapb::Region, bool)>) -> Result<()> {
        for peer in self.peers.values_mut() {
            if !peer.pending_splits.is_empty() {
                let lead = peer.is_leader();
                made.extend(peer.pending_splits.drain(..).map(|r| (r, lead)));
            }
        }
        if made.is_empty() {
            return Ok(());
        }
        for (region, lead) in made {
            if self
                .peers
                .get(&region.id)
                .is_some_and(|p| p.is_initialized())
            {
                warn!(
                    region_id = region.id,
                    "split made a region this store already has"
                );
                continue;
            }
            let mut peer = Peer::open(
                self.store_id,
                region,
                &self.kv,
                self.log.clone(),
                &self.raft_cfg,
                &self.logger,
            )?;
            if lead {
                let _ = peer.raw_node.campaign();
            }
            info!(
                region_id = peer.region_id(),
                range = %range_text(&peer.region),
                "started the peer of a split region"
            );
            // An uninitialized peer created by an early message gives way.
            self.peers.insert(peer.region_id(), peer);
        }
        let waiting: Vec<PeerMessage> = self.waiting.drain(..).collect();
        for msg in waiting {
            self.step(msg);
        }
        Ok(())
    }

    /// Destroys the stale regions here that the snapshot Raft is about to
    /// apply to `peer` covers ([`check_snapshot`] let only such through).
    /// `write` is the round's log write: a destroyed peer may have queued
    /// entries in it earlier in the round, which must not land after its
    /// log is gone.
    fn destroy_stale_under(
        &mut self,
        peer: &Peer,
        snap: &raft::eraftpb::Snapshot,
        write: &mut RaftLogWrite,
    ) -> Result<()> {
        let region = snap::decode_data(snap)?.region.unwrap_or_default();
        let stale: Vec<u64> = self
            .peers
            .values()
            .filter(|p| p.region.id != peer.region.id)
            .filter(|p| under_snapshot(p, &region, &self.merged_away) == Some(true))
            .map(|p| p.region.id)
            .collect();
        for id in stale {
            info!(
                region_id = id,
                by = region.id,
                "a newer region's snapshot covers this stale one"
            );
            self.destroy_peer(id)?;
            write.clean(id);
        }
        Ok(())
    }

    /// Forgets a merge's source peer its target here took in: its log and
    /// snapshots go; its data is the target's now, and the tombstone was
    /// written with the merge.
    fn forget_merged_peer(&mut self, region_id: u64) -> Result<()> {
        let Some(mut peer) = self.peers.remove(&region_id) else {
            return Ok(());
        };
        self.merged_away.remove(&region_id);
        peer.fail_proposals();
        peer.fail_all_reads_merged();
        // The merge's batch was written unsynced; its tombstone must be
        // durable before the log goes (a synced write makes every earlier
        // one durable too), or a power loss would bring the source back
        // without its log.
        let mut wb = self.kv.write_batch();
        meta::put_tombstone(&mut wb, &peer.region, peer.meta.id);
        self.kv.write(wb, true)?;
        let mut w = RaftLogWrite::default();
        w.clean(region_id);
        self.log.write(&mut w, true)?;
        self.snaps.remove_generated(region_id);
        self.views.write().remove(&region_id);
        self.published.remove(&region_id);
        let _ = self.events.send(StoreEvent::RegionRemoved(region_id));
        info!(region_id, "merged into its target; peer forgotten");
        Ok(())
    }

    /// Logs an error when `range`, whose data is about to be deleted for
    /// region `region_id`, overlaps another initialized region here: one
    /// range has one region per store, and deleting another's data loses
    /// it (the check watches that invariant; it deletes nothing itself).
    fn check_unowned(&self, region_id: u64, range: (&[u8], &[u8]), why: &str) {
        for (id, p) in &self.peers {
            if *id != region_id && p.is_initialized() && overlaps(&p.region, range) {
                error!(
                    region_id,
                    other = id,
                    range = %span_text(range),
                    other_range = %range_text(&p.region),
                    why,
                    "deleting data in a range another region here owns"
                );
            }
        }
    }

    /// Destroys this store's peer of a region it was removed from: its
    /// data, log and snapshots go, and a tombstone keeps stale messages
    /// from recreating it.
    fn destroy_peer(&mut self, region_id: u64) -> Result<()> {
        self.destroy_peer_with(region_id, true)
    }

    /// [`Store::destroy_peer`], deleting the data in its range only if
    /// `with_data`.
    fn destroy_peer_with(&mut self, region_id: u64, with_data: bool) -> Result<()> {
        let Some(mut peer) = self.peers.remove(&region_id) else {
            return Ok(());
        };
        let merged_away = self.merged_away.remove(&region_id).is_some();
        // Regions a split made this round, not started yet, go with it:
        // it is destroyed mid-round only as stale under a snapshot, which
        // covers them too (`after_round` starts those of a removed peer).
        // Their states must not surface at the next restart.
        for child in peer.pending_splits.drain(..) {
            warn!(
                region_id = child.id,
                parent = region_id,
                "a split's region goes with its destroyed parent"
            );
            meta::remove_region(&self.kv, child.id)?;
        }
        // What it applied is written (a peer is destroyed after its pass's
        // write, or a snapshot's, see `ready_one`): those proposers hear
        // of success; the rest retry.
        peer.finish_apply();
        peer.fail_proposals();
        if merged_away {
            peer.fail_all_reads_merged();
        } else {
            peer.fail_all_reads();
        }
        let region = if with_data {
            peer.region.clone()
        } else {
            // No peers: a region whose range holds nothing of its own.
            metapb::Region {
                id: region_id,
                ..Default::default()
            }
        };
        // Readers first: no stale read may start on, or finish from, the
        // data about to go.
        self.views.write().remove(&region_id);
        peer.read_progress.invalidate();
        if !region.peers.is_empty() {
            self.check_unowned(region_id, (&region.start_key, &region.end_key), "destroy");
        }
        destroy_region_data(&self.kv, &self.log, &region, peer.meta.id)?;
        self.snaps.remove_generated(region_id);
        self.published.remove(&region_id);
        let _ = self.events.send(StoreEvent::RegionRemoved(region_id));
        info!(
            region_id,
            peer_id = peer.meta.id,
            range = %range_text(&region),
            "peer removed from its region and destroyed"
        );
        Ok(())
    }

    /// Publishes the views of regions whose leadership, term or epoch
    /// changed, and reports them as events. A view's down peers' times
    /// are brought up to date without an event (PD reads them in the
    /// periodic heartbeat, as TiKV counts `down_seconds` at each one).
    pub fn publish_all(&mut self) {
        let mut changed = vec![];
        let mut down_longer = vec![];
        for (id, peer) in &self.peers {
            if !peer.is_initialized() {
                continue;
            }
            let leader = peer.leader();
            let pending_peers = peer.pending_peers();
            let down_ticks = self.down_ticks();
            let down: Vec<(metapb::Peer, u64)> = (peer.down_peers(down_ticks).into_iter())
                .map(|(p, ticks)| (p, self.ticks_to_secs(ticks)))
                .collect();
            let key = Published {
                serves_reads: peer.serves_reads(),
                leader_id: leader.as_ref().map_or(0, |p| p.id),
                term: peer.term(),
                epoch: peer.region.region_epoch.clone().unwrap_or_default(),
                pending_peers: pending_peers.iter().map(|p| p.id).collect(),
                down_peers: down.iter().map(|(p, _)| p.id).collect(),
                approximate: peer.approximate,
            };
            if self.published.get(id) == Some(&key) {
                if !down.is_empty() {
                    down_longer.push((*id, down));
                }
                continue;
            }
            self.published.insert(*id, key);
            changed.push(RegionView {
                region: peer.region.clone(),
                leader,
                is_leader: peer.serves_reads(),
                term: peer.term(),
                pending_peers,
                down_peers: down,
                approximate: peer.approximate,
                written: peer.written.clone(),
                read_progress: peer.read_progress.clone(),
            });
        }
        if !down_longer.is_empty() {
            let mut views = self.views.write();
            for (id, down) in down_longer {
                if let Some(view) = views.get_mut(&id) {
                    view.down_peers = down;
                }
            }
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

    /// Drops applied log entries by the `raft-log-gc-*` rules.
    pub fn compact_logs(&mut self) {
        let gc = self.cfg.log_gc;
        self.compact_logs_with(&gc);
    }

    /// Like [`Store::compact_logs`] with other thresholds.
    pub fn compact_logs_with(&mut self, gc: &LogGc) {
        for peer in self.peers.values_mut() {
            peer.compact_log(gc);
        }
        if let Err(e) = self.log.purge() {
            warn!(error = %e, "raft log purge failed");
        }
    }

    /// The state of this store's peer of a region, for tests and status.
    /// Logs of peers destroyed here that are still on disk (none once a
    /// store has opened and its destroys have finished; see
    /// `drop_destroyed_logs`). For the crash sweeps.
    #[cfg(test)]
    pub(crate) fn destroyed_logs(&self) -> Result<Vec<u64>> {
        destroyed_logs(&self.kv, &self.log, &self.peers)
    }

    pub fn snap_manager(&self) -> &Arc<SnapManager> {
        &self.snaps
    }

    /// The region as this store's peer knows it.
    pub fn region(&self, region_id: u64) -> Option<metapb::Region> {
        self.peers.get(&region_id).map(|p| p.region.clone())
    }

    /// Whether this store's peer of the region has a merge prepared.
    pub fn is_merging(&self, region_id: u64) -> bool {
        self.peers
            .get(&region_id)
            .is_some_and(|p| p.merging.is_some())
    }

    /// Every initialized region this store has a peer of.
    pub fn regions(&self) -> Vec<metapb::Region> {
        self.peers
            .values()
            .filter(|p| p.is_initialized())
            .map(|p| p.region.clone())
            .collect()
    }

    pub fn peer_status(&self, region_id: u64) -> Option<PeerStatus> {
        let peer = self.peers.get(&region_id)?;
        let raft = &peer.raw_node.raft;
        Some(PeerStatus {
            role: format!("{:?}", raft.state),
            term: raft.term,
            leader_id: raft.leader_id,
            commit: raft.raft_log.committed,
            applied: peer.applied_index(),
            first_index: raft.raft_log.first_index(),
            last_index: raft.raft_log.last_index(),
        })
    }

    /// Blocks until every snapshot being generated is done, so that tests
    /// see the same run every time.
    pub fn wait_for_snapshots(&mut self) {
        for peer in self.peers.values_mut() {
            let store = peer.raw_node.store();
            let mut state = store.snap_state.borrow_mut();
            if let crate::peer_storage::SnapState::Generating(g) = &*state {
                *state = match g.done.recv() {
                    Ok(result) => crate::peer_storage::SnapState::generated(g, result),
                    Err(_) => crate::peer_storage::SnapState::Idle,
                };
            }
        }
    }
}

/// One peer's Raft state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerStatus {
    pub role: String,
    pub term: u64,
    pub leader_id: u64,
    pub commit: u64,
    pub applied: u64,
    pub first_index: u64,
    pub last_index: u64,
}

/// Whether another store's peer may send this message: local message
/// types (a proposal, a tick, a read index request) would let a peer write
/// into or stop this store's Raft groups, and every message between peers
/// carries its sender's term (raft-rs stops on a vote without one).
fn from_a_peer(m: &raft::eraftpb::Message) -> bool {
    use MessageType::*;
    match m.get_msg_type() {
        // A replica's read index request (raft-rs forwards it without a
        // term) and its answer: raft-rs reads the one entry's context.
        MsgReadIndex => return m.term == 0 && m.entries.len() == 1,
        MsgReadIndexResp => return m.term > 0 && m.entries.len() == 1,
        _ => {}
    }
    m.term > 0
        && matches!(
            m.get_msg_type(),
            MsgAppend
                | MsgAppendResponse
                | MsgRequestVote
                | MsgRequestVoteResponse
                | MsgRequestPreVote
                | MsgRequestPreVoteResponse
                | MsgSnapshot
                | MsgHeartbeat
                | MsgHeartbeatResponse
                | MsgTransferLeader
                | MsgTimeoutNow
        )
}

/// A replica's read index request to `peer`, as its Raft should step it:
/// only a leader takes one, from a member of the region asking for
/// itself, after running the read's check (its answer goes back in the
/// request's context, see `replica_read.rs`). None drops it; the replica
/// asks again.
fn leader_takes_read(
    peer: &Peer,
    from: &metapb::Peer,
    mut m: raft::eraftpb::Message,
    applier: &dyn Applier,
) -> Option<raft::eraftpb::Message> {
    if !peer.is_leader() || m.from != from.id || !peer.region.peers.iter().any(|p| p.id == from.id)
    {
        return None;
    }
    let ctx =
        ReadContext::decode(&m.entries[0].data).filter(|c| c.is_ask() && c.peer_id == from.id)?;
    let refusal = match ctx.payload {
        [] => None,
        check => applier.check_replica_read(&peer.region, check),
    };
    let answered = ctx.answered(refusal);
    m.entries[0].data = answered.into();
    Some(m)
}

/// A message that may create the peer it is sent to on a store that has
/// none yet: a vote, or a leader's first heartbeat to a peer it knows
/// nothing of (commit 0), as TiKV decides.
fn is_initial(m: &raft::eraftpb::Message) -> bool {
    matches!(
        m.get_msg_type(),
        MessageType::MsgRequestVote | MessageType::MsgRequestPreVote
    ) || (m.get_msg_type() == MessageType::MsgHeartbeat && m.commit == 0)
}

/// Why a snapshot message cannot be stepped, if it cannot: its data does
/// not decode or does not describe this region with the receiving peer in
/// it, its range overlaps another region this store holds that is not
/// stale or another snapshot taken in and not yet applied, or its files
/// did not arrive. Stale regions it covers are
/// destroyed when Raft applies it ([`Store::destroy_stale_under`]).
///
/// A region here is stale when it lies within the snapshot's range at an
/// older version: versions only grow along a key range's history (a split
/// gives its parts the parent's version plus the number of new regions, a
/// merge one more than the larger of the two), so an older region inside
/// the range is one the snapshot's region has since absorbed, say a merge
/// source whose CommitMerge this store never saw before the log moved on.
fn check_snapshot<'a>(
    snaps: &SnapManager,
    msg: &PeerMessage,
    key: SnapKey,
    mut others: impl Iterator<Item = &'a Peer>,
    merged_away: &HashMap<u64, (u64, u64)>,
) -> std::result::Result<(), String> {
    let data = snap::decode_data(msg.message.get_snapshot()).map_err(|e| e.to_string())?;
    let region = data.region.unwrap_or_default();
    if region.id != msg.region_id || !region.peers.iter().any(|p| p.id == msg.to.id) {
        return Err("the snapshot is of another region or lacks the peer".into());
    }
    let range = (region.start_key.as_slice(), region.end_key.as_slice());
    let blocks = |p: &Peer| {
        under_snapshot(p, &region, merged_away) == Some(false)
            || pending_snapshot_region(p).is_some_and(|r| overlaps(&r, range))
    };
    if others.any(blocks) {
        return Err("the snapshot's range overlaps another region here".into());
    }
    if !snaps.has_received(key) {
        return Err(format!("files of snapshot {key} not received"));
    }
    Ok(())
}

/// The region of a snapshot the peer took in and has not applied yet. Its
/// range counts as taken: two snapshots that overlap (one taken before a
/// split or merge, one after) must not both be applied, or two regions
/// here would hold one range, and destroying either would delete the
/// other's data (found by `tests/nemesis.rs`; TiKV checks its pending
/// snapshot regions alike).
fn pending_snapshot_region(p: &Peer) -> Option<metapb::Region> {
    let snap = p.raw_node.snap()?;
    snap::decode_data(snap).ok()?.region
}

/// How another peer here stands to a snapshot of `region`: `None` if it
/// does not overlap it (or knows no range yet), `Some(true)` if it is stale,
/// `Some(false)` if it blocks it. A peer is stale inside the range at an
/// older version, or as a source other stores said merged into `region`
/// (`merged_away`, so the merge committed) when the snapshot holds the
/// source's data: it is at least at the version the target had once it
/// took the source in (as TiKV checks a merge target's epoch), or, that
/// version unknown, newer than the target the source's PrepareMerge named
/// (a merge commits only at that epoch).
fn under_snapshot(
    p: &Peer,
    region: &metapb::Region,
    merged_away: &HashMap<u64, (u64, u64)>,
) -> Option<bool> {
    let (start, end) = (region.start_key.as_slice(), region.end_key.as_slice());
    if !p.is_initialized() || !overlaps(&p.region, (start, end)) {
        return None;
    }
    let r = &p.region;
    let version = crate::region_version;
    let within = r.start_key.as_slice() >= start
        && (end.is_empty() || (!r.end_key.is_empty() && r.end_key.as_slice() <= end));
    let merged_in = match merged_away.get(&r.id) {
        Some(&(target, merged)) if target == region.id && merged > 0 => version(region) >= merged,
        Some(&(target, _)) if target == region.id => (p.merging.as_ref())
            .is_some_and(|m| m.target.id == region.id && version(&m.target) < version(region)),
        _ => false,
    };
    Some((within && version(r) < version(region)) || merged_in)
}

/// `peer`'s tombstone note to `to`, a peer no longer in its region: at
/// the region's epoch, with its range.
fn you_were_removed(peer: &Peer, to: metapb::Peer) -> PeerMessage {
    removal_note(&peer.region, peer.meta.clone(), to)
}

/// A tombstone note from `from` to `to`, a peer not in `region`: at the
/// region's epoch, with its range.
fn removal_note(region: &metapb::Region, from: metapb::Peer, to: metapb::Peer) -> PeerMessage {
    let epoch = region.region_epoch.clone().unwrap_or_default();
    PeerMessage {
        is_tombstone: true,
        start_key: region.start_key.clone(),
        end_key: region.end_key.clone(),
        ..PeerMessage::note(region.id, from, to, epoch)
    }
}

/// Whether `msg` asks whether its sender is still a member (a vote, or a
/// check-stale note) and `region`, as a tombstone here keeps it, shows
/// the sender removed: its configuration is older, and no peer of the
/// region is on its store (one there may be a newer peer of that store).
fn removed_before(region: &metapb::Region, msg: &PeerMessage) -> bool {
    let asks = msg.check_stale
        || matches!(
            msg.message.get_msg_type(),
            MessageType::MsgRequestVote | MessageType::MsgRequestPreVote
        );
    let ours = region.region_epoch.clone().unwrap_or_default();
    asks && msg.epoch.conf_ver < ours.conf_ver
        && !region.peers.iter().any(|p| p.store_id == msg.from.store_id)
}

/// Sends `peer`'s check-stale note to the region's other peers (see
/// [`PeerMessage::check_stale`]); true if it sent any (the caller flushes).
fn ask_if_stale(transport: &mut dyn Transport, peer: &Peer) -> bool {
    let epoch = peer.region.region_epoch.clone().unwrap_or_default();
    let mut sent = false;
    for to in (peer.region.peers.iter()).filter(|p| p.id != peer.meta.id) {
        transport.send(PeerMessage {
            check_stale: true,
            ..PeerMessage::note(peer.region.id, peer.meta.clone(), to.clone(), epoch.clone())
        });
        sent = true;
    }
    sent
}

/// Two of the peers' regions whose ranges overlap, if any.
fn overlapping<'a>(
    peers: impl Iterator<Item = &'a Peer>,
) -> Option<(&'a metapb::Region, &'a metapb::Region)> {
    let mut regions: Vec<&metapb::Region> = peers.map(|p| &p.region).collect();
    regions.sort_by(|a, b| a.start_key.cmp(&b.start_key));
    (regions.windows(2))
        .find(|w| overlaps(w[0], (&w[1].start_key, &w[1].end_key)))
        .map(|w| (w[0], w[1]))
}

/// Whether the region's range and `[start, end)` (empty end: unbounded)
/// share a key.
fn overlaps(r: &metapb::Region, (start, end): (&[u8], &[u8])) -> bool {
    (end.is_empty() || r.start_key.as_slice() < end)
        && (r.end_key.is_empty() || start < r.end_key.as_slice())
}

/// Proposes rolling back the merge a quorum of the region's voters found
/// unable to commit (see [`Store::drive_merges`]).
fn roll_back_merge(peer: &mut Peer) {
    info!(
        region_id = peer.region.id,
        "a quorum found the merge's target changed or gone: rolling the merge back"
    );
    let (cb, _) = oneshot::channel();
    peer.propose_rollback_merge(cb);
}

/// A region's range for the log (`[start, end)` in hex; a region with no
/// peers holds no range of its own).
pub(crate) fn range_text(region: &metapb::Region) -> String {
    if region.peers.is_empty() {
        return "none".into();
    }
    span_text((&region.start_key, &region.end_key))
}

/// `[start, end)` in hex.
fn span_text((start, end): (&[u8], &[u8])) -> String {
    format!("[{}, {})", crate::admin::hex(start), crate::admin::hex(end))
}

/// Forgets this store's peer of a region: a tombstone with `peer_id` in
/// place of its state, its data in the region's range (none while the
/// region is unknown: no peers), and its log.
fn destroy_region_data(
    kv: &KvEngine,
    log: &RaftLogEngine,
    region: &metapb::Region,
    peer_id: u64,
) -> Result<()> {
    let mut wb = kv.write_batch();
    meta::put_tombstone(&mut wb, region, peer_id);
    if !region.peers.is_empty() {
        for cf in DATA_CFS {
            wb.delete_range(cf, &region.start_key, &region.end_key);
        }
    }
    kv.write(wb, true)?;
    let mut w = RaftLogWrite::default();
    w.clean(region.id);
    log.write(&mut w, true)?;
    Ok(())
}

/// A crash between a destroyed peer's tombstone and the cleaning of its
/// log (or a merged source's) leaves the log: it goes now rather than when
/// the region comes back here. A log with no tombstone and no region state
/// is an uninitialized peer's (its hard state) and stays.
fn drop_destroyed_logs(
    kv: &KvEngine,
    log: &RaftLogEngine,
    open: &HashMap<u64, Peer>,
) -> Result<()> {
    let mut w = RaftLogWrite::default();
    for region_id in destroyed_logs(kv, log, open)? {
        info!(region_id, "dropping the log of a destroyed peer");
        w.clean(region_id);
    }
    if !w.is_empty() {
        log.write(&mut w, true)?;
    }
    Ok(())
}

/// The regions whose log is here though their peer here was destroyed:
/// tombstoned, not among the `open` peers, and not made again since (that
/// peer's log holds its votes).
fn destroyed_logs(
    kv: &KvEngine,
    log: &RaftLogEngine,
    open: &HashMap<u64, Peer>,
) -> Result<Vec<u64>> {
    let mut ids = vec![];
    for region_id in log.regions() {
        if !open.contains_key(&region_id)
            && meta::load_tombstone(kv, region_id)?.is_some()
            && meta::load_incarnation(kv, region_id)?.is_none()
        {
            ids.push(region_id);
        }
    }
    Ok(ids)
}

/// A crash after a snapshot was applied but before the region's old log
/// was dropped leaves entries that end below the truncated index; the log
/// engine could not take the next entries after such a hole. They predate
/// the snapshot, so they go; the hard state stays (commit raised to what
/// is applied).
fn drop_stale_log(kv: &KvEngine, log: &RaftLogEngine, region_id: u64) -> Result<()> {
    let state = meta::load_apply_state(kv, region_id)?;
    let Some(last) = log.last_index(region_id) else {
        return Ok(());
    };
    if last >= state.truncated_index {
        return Ok(());
    }
    info!(
        region_id,
        last,
        truncated = state.truncated_index,
        "dropping a log older than the applied snapshot"
    );
    let mut hs = log.hard_state(region_id)?.unwrap_or_default();
    hs.commit = hs.commit.max(state.applied_index);
    hs.term = hs.term.max(state.truncated_term);
    let mut w = RaftLogWrite::default();
    w.clean(region_id);
    w.set_hard_state(region_id, &hs)?;
    log.write(&mut w, true)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::apply::{ApplyContext, ApplyOutput};
    use crate::transport::NoTransport;
    use raft::eraftpb::{HardState, Message};

    struct Ignore;

    impl Applier for Ignore {
        fn apply(&self, _: &mut ApplyContext<'_>, _: &[u8]) -> Result<ApplyOutput> {
            Ok(Box::new(()))
        }
    }

    /// A region known only by its id, as a tombstone of a peer that
    /// never held it keeps it.
    fn unknown_region(id: u64) -> metapb::Region {
        metapb::Region {
            id,
            ..Default::default()
        }
    }

    fn region(peers: &[(u64, u64)]) -> metapb::Region {
        metapb::Region {
            id: 1,
            region_epoch: Some(metapb::RegionEpoch {
                conf_ver: 1,
                version: 1,
            }),
            peers: peers
                .iter()
                .map(|&(id, store_id)| metapb::Peer {
                    id,
                    store_id,
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        }
    }

    fn engines(dir: &std::path::Path) -> (KvEngine, Arc<RaftLogEngine>, Arc<SnapManager>) {
        (
            KvEngine::open(&dir.join("db")).unwrap(),
            Arc::new(RaftLogEngine::open(&dir.join("raft")).unwrap()),
            Arc::new(SnapManager::open(&dir.join("snap")).unwrap()),
        )
    }

    fn open(dir: &std::path::Path) -> Store {
        try_open(dir).unwrap()
    }

    /// Store 1 with region 1's sole voter, which leads after one round.
    fn sole_voter(dir: &std::path::Path) -> Store {
        {
            let (kv, _, _) = engines(dir);
            meta::write_initial_region(&kv, &region(&[(1, 1)])).unwrap();
        }
        let mut store = open(dir);
        store.on_ready().unwrap();
        store
    }

    fn try_open(dir: &std::path::Path) -> Result<Store> {
        open_with(dir, Box::new(NoTransport))
    }

    fn open_with(dir: &std::path::Path, transport: Box<dyn Transport>) -> Result<Store> {
        let (kv, log, snaps) = engines(dir);
        let (events, _) = mpsc::unbounded_channel();
        Store::open(
            1,
            RaftstoreConfig::default(),
            kv,
            log,
            snaps,
            Arc::new(Ignore),
            transport,
            events,
        )
    }

    /// Store 1 opened from `dir`, keeping every message it sends.
    fn open_keeping(dir: &std::path::Path) -> (Store, Arc<parking_lot::Mutex<Vec<PeerMessage>>>) {
        let sent = Arc::new(parking_lot::Mutex::new(vec![]));
        (open_with(dir, Box::new(Keep(sent.clone()))).unwrap(), sent)
    }

    fn entry(index: u64, term: u64) -> Entry {
        Entry {
            index,
            term,
            ..Default::default()
        }
    }

    /// Answers each command with its own bytes.
    struct Echo;

    impl Applier for Echo {
        fn apply(&self, _: &mut ApplyContext<'_>, cmd: &[u8]) -> Result<ApplyOutput> {
            Ok(Box::new(cmd.to_vec()))
        }
    }

    /// Proposes `cmds` in one round of a sole voter batching by `batch`;
    /// each proposer's answer, and how many entries the round appended.
    fn one_round(batch: CommandBatch, cmds: &[&[u8]]) -> (Vec<Vec<u8>>, u64) {
        let dir = tempfile::tempdir().unwrap();
        let (kv, log, snaps) = engines(dir.path());
        meta::write_initial_region(&kv, &region(&[(1, 1)])).unwrap();
        let (events, _) = mpsc::unbounded_channel();
        let cfg = RaftstoreConfig {
            command_batch: batch,
            ..Default::default()
        };
        let (applier, transport) = (Arc::new(Echo), Box::new(NoTransport));
        let mut store = Store::open(1, cfg, kv, log, snaps, applier, transport, events).unwrap();
        store.on_ready().unwrap();
        let before = store.peer_status(1).unwrap().last_index;
        let answers: Vec<_> = (cmds.iter())
            .map(|cmd| {
                let (cb, rx) = tokio::sync::oneshot::channel();
                store.propose(
                    1,
                    Expected::default(),
                    cmd.to_vec(),
                    DiskFullOpt::NotAllowedOnFull,
                    cb,
                );
                rx
            })
            .collect();
        store.on_ready().unwrap();
        let status = store.peer_status(1).unwrap();
        assert_eq!(
            status.applied, status.last_index,
            "all applied in the round"
        );
        let answers = (answers.into_iter())
            .map(|mut rx| match rx.try_recv() {
                Ok(Ok(out)) => *out.downcast::<Vec<u8>>().unwrap(),
                other => panic!("expected an answer, got {other:?}"),
            })
            .collect();
        (answers, status.last_index - before)
    }

    #[test]
    fn a_rounds_commands_are_one_entry_and_each_proposer_hears_its_own() {
        let cmds: &[&[u8]] = &[b"a", b"bb", b"c", b"dddd", b"e"];
        let want: Vec<Vec<u8>> = cmds.iter().map(|c| c.to_vec()).collect();
        let upstream = CommandBatch::for_entry_max(8 << 20);
        assert_eq!(one_round(upstream, cmds), (want.clone(), 1));
        // Without batching, an entry each.
        assert_eq!(one_round(CommandBatch::OFF, cmds), (want.clone(), 5));
        // Two commands per entry at most.
        let two = CommandBatch {
            max_commands: 2,
            ..upstream
        };
        assert_eq!(one_round(two, cmds), (want.clone(), 3));
        // Three bytes per entry at most: "a" and "bb", then "c", then
        // "dddd" alone (too long to batch), then "e"; order kept.
        let three_bytes = CommandBatch {
            max_bytes: 3,
            ..upstream
        };
        assert_eq!(one_round(three_bytes, cmds), (want, 4));
    }

    /// `w:K` writes key K; `r:K` answers whether the read sees K, and
    /// whether the engine itself holds it yet.
    struct WriteThenRead(KvEngine);

    impl Applier for WriteThenRead {
        fn apply(&self, ctx: &mut ApplyContext<'_>, cmd: &[u8]) -> Result<ApplyOutput> {
            use tikal_engine::KvApply;
            let (op, key) = cmd.split_at(2);
            if op == b"w:" {
                ctx.put(tikal_engine::CF_DEFAULT, key, b"1");
                return Ok(Box::new((false, false)));
            }
            let seen = ctx.get(tikal_engine::CF_DEFAULT, key)?.is_some();
            let stored = self.0.get(tikal_engine::CF_DEFAULT, key)?.is_some();
            Ok(Box::new((seen, stored)))
        }
    }

    #[test]
    fn a_read_in_an_entry_of_several_commands_sees_them_without_storing_them() {
        let dir = tempfile::tempdir().unwrap();
        let (kv, log, snaps) = engines(dir.path());
        meta::write_initial_region(&kv, &region(&[(1, 1)])).unwrap();
        let (events, _) = mpsc::unbounded_channel();
        let applier = Arc::new(WriteThenRead(kv.clone()));
        let (cfg, transport) = (RaftstoreConfig::default(), Box::new(NoTransport));
        let mut store = Store::open(1, cfg, kv, log, snaps, applier, transport, events).unwrap();
        store.on_ready().unwrap();
        let mut answers = [b"w:x", b"r:x"].map(|cmd| {
            let (cb, rx) = tokio::sync::oneshot::channel();
            store.propose(
                1,
                Expected::default(),
                cmd.to_vec(),
                DiskFullOpt::NotAllowedOnFull,
                cb,
            );
            rx
        });
        store.on_ready().unwrap();
        let read = match answers[1].try_recv() {
            Ok(Ok(out)) => *out.downcast::<(bool, bool)>().unwrap(),
            other => panic!("expected an answer, got {other:?}"),
        };
        // One entry: the read sees the write before it, and the engine
        // does not hold the write until the whole entry is applied.
        assert_eq!(read, (true, false));
    }

    #[test]
    fn a_log_older_than_the_applied_snapshot_is_dropped_at_open() {
        let dir = tempfile::tempdir().unwrap();
        {
            // As a crash leaves it: the snapshot's state (applied and
            // truncated at 20) is written, the old log (6..=8) not yet gone.
            let (kv, log, _) = engines(dir.path());
            meta::write_initial_region(&kv, &region(&[(1, 1)])).unwrap();
            let mut w = RaftLogWrite::default();
            w.append(1, &[entry(6, 6), entry(7, 6), entry(8, 6)])
                .unwrap();
            let hs = HardState {
                term: 6,
                commit: 8,
                ..Default::default()
            };
            w.set_hard_state(1, &hs).unwrap();
            log.write(&mut w, true).unwrap();
            let mut wb = kv.write_batch();
            let state = meta::ApplyState {
                applied_index: 20,
                truncated_index: 20,
                truncated_term: 6,
            };
            meta::put_apply_state(&mut wb, 1, &state);
            kv.write(wb, true).unwrap();
        }
        let mut store = open(dir.path());
        // The sole voter leads and appends right after the snapshot.
        store.on_ready().unwrap();
        let (cb, mut rx) = tokio::sync::oneshot::channel();
        store.propose(
            1,
            Expected::default(),
            b"x".to_vec(),
            DiskFullOpt::NotAllowedOnFull,
            cb,
        );
        store.on_ready().unwrap();
        assert!(matches!(rx.try_recv(), Ok(Ok(_))));
        let status = store.peer_status(1).unwrap();
        assert_eq!((status.first_index, status.applied), (21, 22));
    }

    #[test]
    fn a_leader_of_unknown_size_is_checked_and_a_membership_change_keeps_the_result() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = sole_voter(dir.path());
        let checked = |store: &mut Store| store.split_check_due().len();
        assert_eq!(checked(&mut store), 1, "never measured");
        assert_eq!(checked(&mut store), 0, "its check is still queued");
        // A check that failed: unknown still, asked again.
        store.on_split_check(&store.region(1).unwrap(), None);
        assert_eq!(checked(&mut store), 1, "still unknown: asked again");
        // The result comes back after a membership change (conf_ver only):
        // the range is the same, so it counts.
        let mut asked = store.region(1).unwrap();
        asked.region_epoch.as_mut().unwrap().conf_ver -= 1;
        let stats = RegionStats { size: 10, keys: 1 };
        let found = SplitCheck {
            stats,
            split_keys: vec![],
        };
        store.on_split_check(&asked, Some(found));
        assert_eq!(store.peers[&1].approximate, Some(stats));
        assert_eq!(checked(&mut store), 0, "measured, nothing written since");
        // One taken before a split or a merge (another version) does not.
        store.peers.get_mut(&1).unwrap().approximate = None;
        asked.region_epoch.as_mut().unwrap().version -= 1;
        let found = SplitCheck {
            stats,
            split_keys: vec![],
        };
        store.on_split_check(&asked, Some(found));
        assert_eq!(store.peers[&1].approximate, None);
    }

    #[test]
    fn a_region_that_should_split_is_checked_again_until_it_has() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = sole_voter(dir.path());
        assert_eq!(store.split_check_due().len(), 1);
        let stats = RegionStats { size: 10, keys: 20 };
        let found = |split_keys| SplitCheck { stats, split_keys };
        store.on_split_check(&store.region(1).unwrap(), Some(found(vec![b"k".to_vec()])));
        // The split it asked PD for may fail (PD refused ids, a membership
        // change raced it); nothing more need be written to try again.
        assert_eq!(store.split_check_due().len(), 1, "checked again");
        store.on_split_check(&store.region(1).unwrap(), Some(found(vec![])));
        assert_eq!(store.split_check_due().len(), 0, "nothing to split");
    }

    #[test]
    fn a_range_destroyed_outside_raft_has_its_regions_measured_again() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = sole_voter(dir.path());
        assert_eq!(store.split_check_due().len(), 1);
        let stats = RegionStats {
            size: 96 << 20,
            keys: 10,
        };
        let found = SplitCheck {
            stats,
            split_keys: vec![],
        };
        store.on_split_check(&store.region(1).unwrap(), Some(found));
        assert_eq!(store.split_check_due().len(), 0, "measured");
        store.clear_sizes_in(b"a", b"b");
        assert_eq!(store.peers[&1].approximate, None);
        assert_eq!(store.split_check_due().len(), 1, "measured again");
    }

    #[test]
    fn log_gc_truncates_when_its_command_applies_and_refuses_a_bad_one() {
        let dir = tempfile::tempdir().unwrap();
        // The sole voter leads at once; three writes follow.
        let mut store = sole_voter(dir.path());
        for _ in 0..3 {
            let (cb, _rx) = tokio::sync::oneshot::channel();
            store.propose(
                1,
                Expected::default(),
                b"x".to_vec(),
                DiskFullOpt::NotAllowedOnFull,
                cb,
            );
        }
        store.on_ready().unwrap();
        let before = store.peer_status(1).unwrap();
        // Forged commands: past the applied index, and with a wrong term.
        // Applied like any entry, they answer an error and truncate nothing.
        let peer = store.peers.get_mut(&1).unwrap();
        let epoch = peer.region.region_epoch.clone().unwrap();
        let term = peer.raw_node.raft.term;
        for (index, term) in [(before.applied + 100, term), (before.applied, term + 7)] {
            let data = admin::encode_compact_log(index, term);
            peer.raw_node
                .propose(admin::entry_context(true, &epoch), data)
                .unwrap();
        }
        store.on_ready().unwrap();
        let status = store.peer_status(1).unwrap();
        assert_eq!(status.applied, before.applied + 2, "both commands applied");
        assert_eq!(status.first_index, before.first_index, "nothing truncated");
        // Log GC proper (threshold 1): the leader proposes, the apply
        // truncates up to what was applied when it proposed.
        store.compact_logs_with(&LogGc {
            threshold: 1,
            count_limit: u64::MAX,
            size_limit: u64::MAX,
        });
        assert_eq!(
            store.peer_status(1).unwrap().first_index,
            before.first_index
        );
        store.on_ready().unwrap();
        let status = store.peer_status(1).unwrap();
        assert_eq!(status.first_index, before.applied + 3);
        // The truncation is durable: a reopened store starts its log there.
        store.shutdown();
        drop(store);
        let store = open(dir.path());
        assert_eq!(
            store.peer_status(1).unwrap().first_index,
            status.first_index
        );
    }

    /// Writes each command's bytes as a key.
    struct PutKey;

    impl Applier for PutKey {
        fn apply(&self, ctx: &mut ApplyContext<'_>, cmd: &[u8]) -> Result<ApplyOutput> {
            tikal_engine::KvApply::put(ctx, tikal_engine::CF_DEFAULT, cmd, b"1");
            Ok(Box::new(()))
        }
    }

    /// Records, for each message it sends, whether key `x` was applied
    /// when the message left.
    struct Probe {
        kv: KvEngine,
        queued: Vec<PeerMessage>,
        sent: Arc<parking_lot::Mutex<Vec<(MessageType, bool)>>>,
    }

    impl Transport for Probe {
        fn send(&mut self, msg: PeerMessage) {
            self.queued.push(msg);
        }

        fn flush(&mut self) {
            let applied = self
                .kv
                .get(tikal_engine::CF_DEFAULT, b"x")
                .unwrap()
                .is_some();
            let mut sent = self.sent.lock();
            for m in self.queued.drain(..) {
                sent.push((m.message.get_msg_type(), applied));
            }
        }
    }

    type Sent = Arc<parking_lot::Mutex<Vec<(MessageType, bool)>>>;

    /// Store `store_id` of region 1 on stores 1 and 2, applying with
    /// `PutKey` and sending through a `Probe`.
    fn open_probed(dir: &std::path::Path, store_id: u64) -> (Store, KvEngine, Sent) {
        let (kv, log, snaps) = engines(dir);
        meta::write_initial_region(&kv, &region(&[(1, 1), (2, 2)])).unwrap();
        let sent = Sent::default();
        let probe = Probe {
            kv: kv.clone(),
            queued: vec![],
            sent: sent.clone(),
        };
        let (events, _) = mpsc::unbounded_channel();
        let store = Store::open(
            store_id,
            RaftstoreConfig::default(),
            kv.clone(),
            log,
            snaps,
            Arc::new(PutKey),
            Box::new(probe),
            events,
        )
        .unwrap();
        (store, kv, sent)
    }

    /// A message between the peers of region 1 (peer id = store id).
    fn between(from: u64, to: u64, message: Message) -> PeerMessage {
        PeerMessage {
            message,
            ..PeerMessage::note(
                1,
                region(&[(from, from)]).peers[0].clone(),
                region(&[(to, to)]).peers[0].clone(),
                region(&[]).region_epoch.unwrap(),
            )
        }
    }

    #[test]
    fn a_leader_sends_its_appends_before_it_applies() {
        let dir = tempfile::tempdir().unwrap();
        let (mut store, kv, sent) = open_probed(dir.path(), 1);
        // Store 2's peer answers as a voter would, given what store 1's
        // peer sent last: a pre-vote, a vote, appends.
        let answer = |store: &mut Store, kind: MessageType, reply: MessageType| {
            let raft = &store.peers[&1].raw_node.raft;
            let mut m = Message::default();
            m.set_msg_type(reply);
            m.from = 2;
            m.to = 1;
            m.term = raft.term + u64::from(kind == MessageType::MsgRequestPreVote);
            m.index = raft.raft_log.last_index();
            store.step(between(2, 1, m));
            store.on_ready().unwrap();
        };
        store.campaign(1).unwrap();
        store.on_ready().unwrap();
        answer(
            &mut store,
            MessageType::MsgRequestPreVote,
            MessageType::MsgRequestPreVoteResponse,
        );
        answer(
            &mut store,
            MessageType::MsgRequestVote,
            MessageType::MsgRequestVoteResponse,
        );
        assert!(store.peers[&1].is_leader());
        answer(
            &mut store,
            MessageType::MsgAppend,
            MessageType::MsgAppendResponse,
        );
        let (cb, _rx) = tokio::sync::oneshot::channel();
        store.propose(
            1,
            Expected::default(),
            b"x".to_vec(),
            DiskFullOpt::NotAllowedOnFull,
            cb,
        );
        store.on_ready().unwrap();
        // Store 2 acknowledges x; in the same round y is proposed. Its
        // append leaves before the round applies x.
        let raft = &store.peers[&1].raw_node.raft;
        let mut ack = Message::default();
        ack.set_msg_type(MessageType::MsgAppendResponse);
        ack.from = 2;
        ack.to = 1;
        ack.term = raft.term;
        ack.index = raft.raft_log.last_index();
        store.step(between(2, 1, ack));
        let (cb, _rx) = tokio::sync::oneshot::channel();
        store.propose(
            1,
            Expected::default(),
            b"y".to_vec(),
            DiskFullOpt::NotAllowedOnFull,
            cb,
        );
        sent.lock().clear();
        store.on_ready().unwrap();
        let appends: Vec<bool> = sent
            .lock()
            .iter()
            .filter(|(kind, _)| *kind == MessageType::MsgAppend)
            .map(|(_, x_applied)| *x_applied)
            .collect();
        assert_eq!(
            appends.first(),
            Some(&false),
            "y's append left before x was applied"
        );
        assert!(kv.get(tikal_engine::CF_DEFAULT, b"x").unwrap().is_some());
    }

    #[test]
    fn a_follower_acknowledges_an_append_before_it_applies() {
        let dir = tempfile::tempdir().unwrap();
        let (mut store, kv, sent) = open_probed(dir.path(), 2);
        let raft = &store.peers[&1].raw_node.raft;
        let (term, last, last_term) = (
            raft.term,
            raft.raft_log.last_index(),
            raft.raft_log.last_term(),
        );
        // Leader 1 appends one command and says it is committed.
        let mut append = Message::default();
        append.set_msg_type(MessageType::MsgAppend);
        append.from = 1;
        append.to = 2;
        append.term = term;
        append.index = last;
        append.log_term = last_term;
        append.commit = last + 1;
        append.mut_entries().push(Entry {
            index: last + 1,
            term,
            data: b"x".to_vec().into(),
            ..Default::default()
        });
        store.step(between(1, 2, append));
        store.on_ready().unwrap();
        assert_eq!(
            *sent.lock(),
            [(MessageType::MsgAppendResponse, false)],
            "the acknowledgement left before the entry was applied"
        );
        assert!(kv.get(tikal_engine::CF_DEFAULT, b"x").unwrap().is_some());
    }

    /// Leader 2's append of `entries` to store 1's peer 1, right after its
    /// last entry and in a term at least its own, with all of them
    /// committed.
    fn committed_from_2(store: &Store, mut entries: Vec<Entry>) -> PeerMessage {
        let raft = &store.peers[&1].raw_node.raft;
        let (term, last) = (raft.term.max(1), raft.raft_log.last_index());
        for (e, index) in entries.iter_mut().zip(last + 1..) {
            (e.index, e.term) = (index, term);
        }
        let mut append = Message::default();
        append.set_msg_type(MessageType::MsgAppend);
        (append.from, append.to, append.term) = (2, 1, term);
        (append.index, append.log_term) = (last, raft.raft_log.last_term());
        append.commit = last + entries.len() as u64;
        append.set_entries(entries.into());
        between(2, 1, append)
    }

    /// Fails every command, as an entry a removed replica cannot apply
    /// (a CommitMerge whose source it no longer has) fails.
    struct Unappliable;

    impl Applier for Unappliable {
        fn apply(&self, _: &mut ApplyContext<'_>, _: &[u8]) -> Result<ApplyOutput> {
            Err(RaftstoreError::Merge("no source here".into()))
        }
    }

    #[test]
    fn a_replica_applies_nothing_after_its_own_removal() {
        // TiKV's apply stops at a pending removal: entries after it were
        // committed by peers that no longer count this one, and it may not
        // be able to apply them. Applying them stopped the store.
        let dir = tempfile::tempdir().unwrap();
        let (kv, log, snaps) = engines(dir.path());
        meta::write_initial_region(&kv, &region(&[(1, 1), (2, 2), (3, 3)])).unwrap();
        let (events, _) = mpsc::unbounded_channel();
        let (cfg, applier) = (RaftstoreConfig::default(), Arc::new(Unappliable));
        let mut store = Store::open(
            1,
            cfg,
            kv,
            log,
            snaps,
            applier,
            Box::new(NoTransport),
            events,
        )
        .unwrap();
        // Leader 2 appends the removal of peer 1, then a command, and says
        // both are committed.
        use raft::eraftpb::{ConfChangeSingle, ConfChangeV2, EntryType};
        let mut cc = ConfChangeV2::default();
        let mut single = ConfChangeSingle::default();
        single.set_change_type(raft::eraftpb::ConfChangeType::RemoveNode);
        single.node_id = 1;
        cc.mut_changes().push(single);
        let remove = tikal_proto::raft_cmdpb::ChangePeerRequest {
            change_type: tikal_proto::eraftpb::ConfChangeType::RemoveNode as i32,
            peer: Some(region(&[(1, 1)]).peers[0].clone()),
        };
        let context = tikal_proto::raft_cmdpb::ChangePeerV2Request {
            changes: vec![remove],
        };
        let mut removal = Entry::default();
        removal.set_entry_type(EntryType::EntryConfChangeV2);
        removal.data = protobuf::Message::write_to_bytes(&cc).unwrap().into();
        removal.context = prost::Message::encode_to_vec(&context).into();
        let command = Entry {
            data: b"after".to_vec().into(),
            ..Default::default()
        };
        let append = committed_from_2(&store, vec![removal, command]);
        store.step(append);
        store.on_ready().unwrap();
        assert!(store.peer_status(1).is_none(), "the removed peer is gone");
    }

    /// Region 1 (a follower here, at `region(&[])`'s epoch) applies a
    /// split at `m` making region 5, with peers 11, 12 and 13 on stores
    /// 1, 2 and 3; region 1 keeps `[m, ..)`.
    fn split_1_at_m(store: &mut Store) {
        let split = tikal_proto::raft_cmdpb::BatchSplitRequest {
            requests: vec![tikal_proto::raft_cmdpb::SplitRequest {
                split_key: b"m".to_vec(),
                new_region_id: 5,
                new_peer_ids: vec![11, 12, 13],
                ..Default::default()
            }],
            ..Default::default()
        };
        let epoch = region(&[]).region_epoch.unwrap();
        let split = Entry {
            data: admin::encode_batch_split(split).into(),
            context: admin::entry_context(true, &epoch).into(),
            ..Default::default()
        };
        store.step(committed_from_2(store, vec![split]));
        store.on_ready().unwrap();
    }

    #[test]
    fn a_split_region_whose_peer_here_was_removed_leaves_no_data_behind() {
        // The split's new region 5 already had its peer here removed (it
        // was made by a message, took a snapshot and was removed while
        // this replica of the parent lagged). The split skips it, and the
        // parent's data in its range has no region here to own it: it
        // goes, as TiKV clears a skipped split region's data.
        let dir = tempfile::tempdir().unwrap();
        let (kv, log, snaps) = engines(dir.path());
        meta::write_initial_region(&kv, &region(&[(1, 1), (2, 2), (3, 3)])).unwrap();
        let mut wb = kv.write_batch();
        meta::put_tombstone(&mut wb, &unknown_region(5), 15);
        for key in [&b"b"[..], b"x"] {
            for cf in tikal_engine::DATA_CFS {
                wb.put(cf, key, b"v");
            }
        }
        kv.write(wb, true).unwrap();
        let (events, _) = mpsc::unbounded_channel();
        let (cfg, transport) = (RaftstoreConfig::default(), Box::new(NoTransport));
        let mut store = Store::open(
            1,
            cfg,
            kv.clone(),
            log,
            snaps,
            Arc::new(Ignore),
            transport,
            events,
        )
        .unwrap();
        split_1_at_m(&mut store);
        let kept = store.region(1).unwrap();
        assert_eq!(store.regions().len(), 1, "region 5 is not started here");
        let (ours, theirs) = match kept.start_key.is_empty() {
            true => (&b"b"[..], &b"x"[..]),
            false => (&b"x"[..], &b"b"[..]),
        };
        for cf in tikal_engine::DATA_CFS {
            assert!(kv.get(cf, ours).unwrap().is_some(), "region 1's data stays");
            assert!(
                kv.get(cf, theirs).unwrap().is_none(),
                "region 5's range is cleared"
            );
        }
    }

    #[test]
    fn a_split_leaves_its_region_to_a_newer_peer_a_message_made_here() {
        // Region 5 splits from region 1 with peer 11 here; then 11 is
        // removed and store 1 added back as peer 21. This replica of region
        // 1 waited for a snapshot meanwhile, so nothing covered region 5's
        // range here: a vote request made peer 21 (uninitialized), which
        // voted for 22 in term 3. Then region 1's snapshot came (before the
        // split) and its log now applies the split.
        let dir = tempfile::tempdir().unwrap();
        let vote =
            |store: &mut Store, sent: &parking_lot::Mutex<Vec<PeerMessage>>, candidate: u64| {
                let mut m = Message::default();
                m.set_msg_type(MessageType::MsgRequestVote);
                (m.from, m.to, m.term) = (candidate, 21, 3);
                let epoch = metapb::RegionEpoch {
                    conf_ver: 3,
                    version: 2,
                };
                let from = region(&[(candidate, 2)]).peers[0].clone();
                let to = region(&[(21, 1)]).peers[0].clone();
                store.step(PeerMessage {
                    message: m,
                    end_key: b"m".to_vec(),
                    ..PeerMessage::note(5, from, to, epoch)
                });
                store.on_ready().unwrap();
                let answer = (sent.lock().drain(..))
                    .find(|m| m.message.get_msg_type() == MessageType::MsgRequestVoteResponse);
                answer.map(|m| !m.message.reject)
            };
        {
            let (mut store, sent) = open_keeping(dir.path());
            assert_eq!(vote(&mut store, &sent, 22), Some(true));
        }
        {
            let (kv, _, _) = engines(dir.path());
            meta::write_initial_region(&kv, &region(&[(1, 1), (2, 2), (3, 3)])).unwrap();
            let mut wb = kv.write_batch();
            for cf in tikal_engine::DATA_CFS {
                wb.put(cf, b"b", b"v");
            }
            kv.write(wb, true).unwrap();
        }
        let (mut store, sent) = open_keeping(dir.path());
        split_1_at_m(&mut store);
        assert_eq!(store.region(1).unwrap().start_key, b"m");
        assert!(store.region(5).is_none(), "peer 11 is not started");
        let kv = store.kv_engine().clone();
        for cf in tikal_engine::DATA_CFS {
            assert!(
                kv.get(cf, b"b").unwrap().is_none(),
                "region 5's range is cleared"
            );
        }
        // Peer 21 still holds its vote: a second candidate of term 3 must
        // not get it, or term 3 could have two leaders.
        assert_eq!(vote(&mut store, &sent, 23), Some(false));
        assert_eq!(vote(&mut store, &sent, 22), Some(true));
    }

    #[test]
    fn a_removal_applied_before_a_crash_is_finished_at_open() {
        let dir = tempfile::tempdir().unwrap();
        {
            let (kv, _, _) = engines(dir.path());
            // The region as applied: this store (1) is gone from it, and
            // the removal's batch marked its peer 3 removed.
            meta::write_initial_region(&kv, &region(&[(2, 2)])).unwrap();
            let mut wb = kv.write_batch();
            meta::put_tombstone_mark(&mut wb, &region(&[(2, 2)]), 3);
            wb.put(tikal_engine::CF_DEFAULT, b"old data", b"v");
            kv.write(wb, true).unwrap();
        }
        let store = open(dir.path());
        assert!(store.peer_status(1).is_none());
        drop(store);
        let (kv, _, _) = engines(dir.path());
        assert!(meta::load_regions(&kv).unwrap().is_empty());
        assert_eq!(meta::load_tombstone(&kv, 1).unwrap(), Some(3));
        assert_eq!(kv.get(tikal_engine::CF_DEFAULT, b"old data").unwrap(), None);
    }

    #[test]
    fn a_destroyed_peers_log_and_leftover_snapshots_go_at_open() {
        let dir = tempfile::tempdir().unwrap();
        let key = SnapKey {
            region_id: 5,
            term: 1,
            index: 6,
        };
        {
            let (kv, log, snaps) = engines(dir.path());
            meta::write_initial_region(&kv, &region(&[(1, 1)])).unwrap();
            // Region 5's peer was destroyed, and a crash came before its
            // log was cleaned.
            let mut wb = kv.write_batch();
            meta::put_tombstone(&mut wb, &unknown_region(5), 7);
            kv.write(wb, true).unwrap();
            let mut w = RaftLogWrite::default();
            w.append(5, &[entry(6, 1)]).unwrap();
            let hs = |term, vote| HardState {
                term,
                vote,
                ..Default::default()
            };
            w.set_hard_state(5, &hs(1, 7)).unwrap();
            // Region 6: an uninitialized peer's vote, which must stay.
            w.set_hard_state(6, &hs(3, 9)).unwrap();
            log.write(&mut w, true).unwrap();
            // A received and a generated snapshot a crash left behind.
            std::fs::create_dir_all(snaps.recv_dir(key)).unwrap();
            std::fs::create_dir_all(snaps.gen_dir(key)).unwrap();
        }
        drop(open(dir.path()));
        let (_, log, snaps) = engines(dir.path());
        assert!(!log.regions().contains(&5), "{:?}", log.regions());
        assert_eq!(log.hard_state(6).unwrap().map(|h| h.vote), Some(9));
        assert!(!snaps.recv_dir(key).exists());
        assert!(!snaps.gen_dir(key).exists());
    }

    /// Whether store 1's peer `to` of region 5 grants `candidate` (on
    /// store `candidate`) its vote at term 3 (`None`: no answer); the store
    /// is opened afresh from `dir` for the one request, as after a restart.
    fn vote_after_restart(dir: &std::path::Path, to: u64, candidate: u64) -> Option<bool> {
        let (mut store, sent) = open_keeping(dir);
        let peer = |id: u64, store_id: u64| metapb::Peer {
            id,
            store_id,
            ..Default::default()
        };
        let mut m = Message::default();
        m.set_msg_type(MessageType::MsgRequestVote);
        m.from = candidate;
        m.to = to;
        m.term = 3;
        let epoch = metapb::RegionEpoch {
            conf_ver: 2,
            version: 1,
        };
        store.step(PeerMessage {
            message: m,
            ..PeerMessage::note(5, peer(candidate, candidate), peer(to, 1), epoch)
        });
        store.on_ready().unwrap();
        let sent = sent.lock();
        (sent.iter())
            .find(|m| m.message.get_msg_type() == MessageType::MsgRequestVoteResponse)
            .map(|m| !m.message.reject)
    }

    #[test]
    fn a_peer_made_again_after_its_removal_keeps_its_vote_across_restarts() {
        let dir = tempfile::tempdir().unwrap();
        {
            // Store 1 once held peer 7 of region 5; it was removed.
            let (kv, _, _) = engines(dir.path());
            let mut wb = kv.write_batch();
            meta::put_tombstone(&mut wb, &unknown_region(5), 7);
            kv.write(wb, true).unwrap();
        }
        let d = dir.path();
        // Region 5 adds store 1 back as peer 8, which votes for a
        // candidate before any snapshot reaches it, then restarts.
        assert_eq!(vote_after_restart(d, 8, 20), Some(true));
        // One vote per term: a second candidate of term 3 must not get
        // it, or term 3 could have two leaders.
        assert_eq!(vote_after_restart(d, 8, 21), Some(false));
        assert_eq!(
            vote_after_restart(d, 8, 20),
            Some(true),
            "the same one may ask again"
        );
        assert_eq!(
            vote_after_restart(d, 7, 21),
            None,
            "the removed peer stays removed"
        );
        // A newer incarnation starts with no vote; the one it replaced is
        // gone for good.
        assert_eq!(vote_after_restart(d, 9, 21), Some(true));
        assert_eq!(vote_after_restart(d, 8, 22), None);
        assert_eq!(vote_after_restart(d, 9, 22), Some(false));
    }

    /// Region `id` over `[start, end)`, its sole voter on store 1.
    fn with_range(id: u64, start: &[u8], end: &[u8]) -> metapb::Region {
        metapb::Region {
            id,
            start_key: start.to_vec(),
            end_key: end.to_vec(),
            ..region(&[(id, 1)])
        }
    }

    /// Regions 1 `[.., m)` and 2 `[m, ..)` in `dir`, each a sole voter on
    /// store 1.
    fn two_adjacent_regions(dir: &std::path::Path) {
        let (kv, _, _) = engines(dir);
        meta::write_initial_region(&kv, &with_range(1, b"", b"m")).unwrap();
        meta::write_initial_region(&kv, &with_range(2, b"m", b"")).unwrap();
    }

    #[test]
    fn a_log_compaction_after_a_prepared_merge_leaves_the_merges_entries() {
        // A leader elected after the PrepareMerge was proposed, before it
        // applied there, sees no merge and may propose a CompactLog past
        // the merge's minimum index. Every replica skips it once the
        // merge is prepared: the CommitMerge is built from those entries.
        let dir = tempfile::tempdir().unwrap();
        two_adjacent_regions(dir.path());
        let mut store = open(dir.path());
        store.on_ready().unwrap();
        store.on_ready().unwrap();
        let (cb, mut rx) = tokio::sync::oneshot::channel();
        let target = store.region(2).unwrap();
        store.propose_prepare_merge(1, None, target, cb);
        store.on_ready().unwrap();
        store.on_ready().unwrap();
        assert!(rx.try_recv().is_ok_and(|r| r.is_ok()), "merge prepared");
        assert!(store.peers[&1].commit_merge_request().is_ok());
        let peer = store.peers.get_mut(&1).unwrap();
        let raft = &peer.raw_node.raft;
        let (index, term) = (raft.raft_log.last_index(), raft.term);
        let truncated = peer.raw_node.store().truncated_index;
        assert!(truncated < index);
        (peer.propose_admin(None, admin::encode_compact_log(index, term))).unwrap();
        store.on_ready().unwrap();
        store.on_ready().unwrap();
        let peer = &store.peers[&1];
        assert!(peer.applied_index() > index, "the compaction applied");
        assert_eq!(peer.raw_node.store().truncated_index, truncated);
        assert!(peer.commit_merge_request().is_ok());
    }

    #[test]
    fn a_prepared_merge_source_takes_no_safe_ts() {
        // Once its PrepareMerge applies, the source's target may take
        // writes in its range, which the source's safe ts would not cover:
        // its read progress takes no pair from its leader (as TiKV
        // discards it), also after a restart.
        let dir = tempfile::tempdir().unwrap();
        two_adjacent_regions(dir.path());
        let taken = |store: &Store| {
            let view = store.views().read().get(&1).cloned().unwrap();
            let version = crate::region_version(&view.region);
            let progress = &view.read_progress;
            progress.update(crate::ReadState {
                applied_index: progress.applied(),
                safe_ts: 100,
                version,
            });
            progress.ready(version).is_some()
        };
        let mut store = open(dir.path());
        store.on_ready().unwrap();
        store.on_ready().unwrap();
        assert!(taken(&store), "before the merge, a pair is taken");
        let (cb, mut rx) = tokio::sync::oneshot::channel();
        let target = store.region(2).unwrap();
        store.propose_prepare_merge(1, None, target, cb);
        store.on_ready().unwrap();
        assert!(rx.try_recv().is_ok_and(|r| r.is_ok()), "merge prepared");
        assert!(store.is_merging(1));
        assert!(!taken(&store), "a prepared source takes no pair");
        drop(store);
        let mut store = open(dir.path());
        store.on_ready().unwrap();
        assert!(store.is_merging(1));
        assert!(!taken(&store), "nor after a restart");
    }

    #[test]
    fn a_store_whose_regions_overlap_refuses_to_open() {
        let dir = tempfile::tempdir().unwrap();
        two_adjacent_regions(dir.path());
        assert_eq!(open(dir.path()).regions().len(), 2, "adjacent is fine");
        {
            let (kv, _, _) = engines(dir.path());
            meta::write_initial_region(&kv, &with_range(3, b"k", b"p")).unwrap();
        }
        match try_open(dir.path()) {
            Err(RaftstoreError::Inconsistent(why)) => {
                assert!(why.contains("regions 1 ") && why.contains(" 3 "), "{why}")
            }
            Err(e) => panic!("expected an overlap, got {e}"),
            Ok(_) => panic!("a store with overlapping regions opened"),
        }
    }

    #[test]
    fn messages_no_peer_sends_are_dropped() {
        let dir = tempfile::tempdir().unwrap();
        {
            let (kv, _, _) = engines(dir.path());
            meta::write_initial_region(&kv, &region(&[(1, 1), (2, 2)])).unwrap();
        }
        let mut store = open(dir.path());
        let before = store.peer_status(1).unwrap();
        let from_2 = |mut m: Message| {
            m.from = 2;
            m.to = 1;
            m.term = before.term;
            from_peer_2(m)
        };
        // A proposal with no entries, a read index request with none, and a
        // heartbeat claiming a commit beyond our log would each stop
        // raft-rs; a proposal with entries would write into our log.
        let mut propose = Message::default();
        propose.set_msg_type(MessageType::MsgPropose);
        store.step(from_2(propose.clone()));
        propose.mut_entries().push(Entry {
            data: b"forged".to_vec().into(),
            ..Default::default()
        });
        store.step(from_2(propose));
        let mut read = Message::default();
        read.set_msg_type(MessageType::MsgReadIndex);
        store.step(from_2(read.clone()));
        // As raft-rs forwards a replica's read index request: no term.
        let mut forwarded = from_2(read);
        forwarded.message.term = 0;
        store.step(forwarded);
        let mut heartbeat = Message::default();
        heartbeat.set_msg_type(MessageType::MsgHeartbeat);
        heartbeat.commit = 1_000;
        store.step(from_2(heartbeat));
        store.on_ready().unwrap();
        let after = store.peer_status(1).unwrap();
        assert_eq!(after.last_index, before.last_index, "nothing was appended");
        assert_eq!(after.commit, before.commit);
    }

    #[test]
    fn a_snapshot_message_dropped_before_raft_takes_it_leaves_no_files() {
        let dir = tempfile::tempdir().unwrap();
        {
            let (kv, _, _) = engines(dir.path());
            meta::write_initial_region(&kv, &region(&[(1, 1), (2, 2)])).unwrap();
        }
        let mut store = open(dir.path());
        let snaps = store.snap_manager().clone();
        let snapshot_to = |region_id: u64, to_store: u64| {
            let mut m = Message::default();
            m.set_msg_type(MessageType::MsgSnapshot);
            (m.from, m.to, m.term) = (2, to_store, 1);
            let meta = m.mut_snapshot().mut_metadata();
            (meta.term, meta.index) = (1, 50);
            let mut msg = from_peer_2(m);
            msg.region_id = region_id;
            msg.to.store_id = to_store;
            (SnapKey::of(region_id, msg.message.get_snapshot()), msg)
        };
        // For a region this store has no peer of (a snapshot creates
        // none), and for another store: dropped, their files with them.
        for (region_id, to_store) in [(99, 1), (1, 3)] {
            let (key, msg) = snapshot_to(region_id, to_store);
            std::fs::create_dir_all(snaps.recv_dir(key)).unwrap();
            store.step(msg);
            assert!(!snaps.has_received(key), "{key} left on disk");
        }
    }

    #[test]
    fn an_engine_failure_destroying_a_peer_stops_the_store() {
        let dir = tempfile::tempdir().unwrap();
        {
            let (kv, _, _) = engines(dir.path());
            meta::write_initial_region(&kv, &region(&[(1, 1), (2, 2)])).unwrap();
        }
        let budget = tikal_engine::WriteBudget::default();
        let kv = KvEngine::open(&dir.path().join("db")).unwrap();
        let log = RaftLogEngine::open(&dir.path().join("raft")).unwrap();
        let snaps = SnapManager::open(&dir.path().join("snap")).unwrap();
        let mut store = Store::open(
            1,
            RaftstoreConfig::default(),
            kv.with_budget(budget.clone()),
            Arc::new(log.with_budget(budget.clone())),
            Arc::new(snaps),
            Arc::new(Ignore),
            Box::new(NoTransport),
            mpsc::unbounded_channel().0,
        )
        .unwrap();
        store.on_ready().unwrap();
        // Peer 2, of a newer configuration, says peer 1 was removed; the
        // destroy's writes fail (a full disk, an I/O error).
        budget.crash_after(0);
        let mut removed = between(2, 1, Message::default());
        removed.is_tombstone = true;
        removed.epoch.conf_ver += 1;
        store.step(removed);
        assert!(store.on_ready().is_err(), "the store stops");
    }

    /// `m` from peer 2 to peer 1 of region 1 (peer id = store id).
    fn from_peer_2(message: Message) -> PeerMessage {
        between(2, 1, message)
    }

    /// A message of `kind` and `term` from peer 2 to peer 1 of region 1.
    fn peer_2_says(kind: MessageType, term: u64) -> PeerMessage {
        let mut m = Message::default();
        m.set_msg_type(kind);
        m.from = 2;
        m.to = 1;
        m.term = term;
        from_peer_2(m)
    }

    /// Region 1 on stores 1 and 2, opened on store 1, whose peer leads:
    /// store 2's votes are stepped in by hand.
    fn leading_one_of_two(dir: &std::path::Path) -> Store {
        {
            let (kv, _, _) = engines(dir);
            meta::write_initial_region(&kv, &region(&[(1, 1), (2, 2)])).unwrap();
        }
        let mut store = open(dir);
        store.campaign(1).unwrap();
        store.on_ready().unwrap();
        for (reply, ahead) in [
            (MessageType::MsgRequestPreVoteResponse, 1),
            (MessageType::MsgRequestVoteResponse, 0),
        ] {
            let mut m = Message::default();
            m.set_msg_type(reply);
            m.from = 2;
            m.to = 1;
            m.term = store.peers[&1].raw_node.raft.term + ahead;
            store.step(from_peer_2(m));
            store.on_ready().unwrap();
        }
        assert!(store.peers[&1].is_leader());
        store
    }

    #[test]
    fn messages_lost_on_the_way_to_a_store_send_its_peers_back_to_probing() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = leading_one_of_two(dir.path());
        // Peer 2 acknowledges the leader's log: its progress replicates.
        let status = store.peer_status(1).unwrap();
        let mut ack = peer_2_says(MessageType::MsgAppendResponse, status.term);
        ack.message.index = status.last_index;
        store.step(ack);
        store.on_ready().unwrap();
        let state = |store: &Store| store.peers[&1].raw_node.raft.prs().get(2).map(|p| p.state);
        assert_eq!(state(&store), Some(raft::ProgressState::Replicate));
        // A store with none of the region's peers changes nothing.
        store.report_store_unreachable(7);
        assert_eq!(state(&store), Some(raft::ProgressState::Replicate));
        store.report_store_unreachable(2);
        assert_eq!(state(&store), Some(raft::ProgressState::Probe));
    }

    #[test]
    fn a_split_past_the_entry_limit_is_refused() {
        use tikal_proto::raft_cmdpb::SplitRequest;
        let dir = tempfile::tempdir().unwrap();
        let mut store = leading_one_of_two(dir.path());
        let key = |c: u8| vec![c; 5 << 20];
        let req = BatchSplitRequest {
            requests: [b'a', b'b']
                .into_iter()
                .enumerate()
                .map(|(i, c)| SplitRequest {
                    split_key: key(c),
                    new_region_id: 100 + i as u64,
                    new_peer_ids: vec![101 + 2 * i as u64, 102 + 2 * i as u64],
                    ..Default::default()
                })
                .collect(),
            right_derive: true,
            share_source_region_size: false,
        };
        let before = store.peer_status(1).unwrap().last_index;
        let (cb, mut rx) = tokio::sync::oneshot::channel();
        store.propose_batch_split(1, None, req, cb);
        match rx.try_recv() {
            Ok(Err(RaftstoreError::Split(why))) => {
                assert!(why.contains("raft-entry-max-size"), "{why}")
            }
            other => panic!("expected the split refused, got {other:?}"),
        }
        assert_eq!(
            store.peer_status(1).unwrap().last_index,
            before,
            "nothing proposed"
        );
    }

    #[test]
    fn a_leader_transfer_for_another_epoch_or_a_stranger_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = leading_one_of_two(dir.path());
        // PD's order names the region as PD saw it before a membership
        // change or split this store has applied since.
        let mut stale = store.peers[&1].region.region_epoch.clone().unwrap();
        stale.conf_ver = stale.conf_ver.saturating_sub(1);
        match store.transfer_leader(1, 2, Some(&stale)) {
            Err(RaftstoreError::EpochNotMatch(region)) => assert_eq!(region.id, 1),
            other => panic!("expected EpochNotMatch, got {other:?}"),
        }
        assert!(matches!(
            store.transfer_leader(1, 7, None),
            Err(RaftstoreError::ConfChange(_))
        ));
        let current = store.peers[&1].region.region_epoch.clone();
        store.transfer_leader(1, 2, current.as_ref()).unwrap();
    }

    #[test]
    fn a_leader_handing_over_refuses_without_naming_itself() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = leading_one_of_two(dir.path());
        // Raft drops proposals while a transfer is under way. A NotLeader
        // naming this peer would send the client straight back here.
        store.transfer_leader(1, 2, None).unwrap();
        // Peer 2 answers the leader's handshake: ready, all applied.
        let status = store.peer_status(1).unwrap();
        let mut ready = peer_2_says(MessageType::MsgTransferLeader, status.term);
        (ready.message.log_term, ready.message.index) = (status.term, status.last_index);
        store.step(ready);
        let (cb, mut rx) = tokio::sync::oneshot::channel();
        store.propose(
            1,
            Expected::default(),
            b"x".to_vec(),
            DiskFullOpt::NotAllowedOnFull,
            cb,
        );
        match rx.try_recv() {
            Ok(Err(RaftstoreError::NotLeader { region_id, leader })) => {
                assert_eq!((region_id, leader), (1, None));
            }
            other => panic!("expected NotLeader with no leader, got {other:?}"),
        }
        // A follower names the leader it knows.
        let status = store.peer_status(1).unwrap();
        store.step(peer_2_says(MessageType::MsgHeartbeat, status.term + 1));
        store.on_ready().unwrap();
        let (cb, mut rx) = tokio::sync::oneshot::channel();
        store.propose(
            1,
            Expected::default(),
            b"y".to_vec(),
            DiskFullOpt::NotAllowedOnFull,
            cb,
        );
        match rx.try_recv() {
            Ok(Err(RaftstoreError::NotLeader { leader, .. })) => {
                assert_eq!(leader.map(|p| p.id), Some(2));
            }
            other => panic!("expected NotLeader naming peer 2, got {other:?}"),
        }
    }

    /// Store 1 over `dir`, reporting a peer without a leader after 30
    /// ticks; its events.
    fn missing_after_30_ticks(
        dir: &std::path::Path,
    ) -> (Store, mpsc::UnboundedReceiver<StoreEvent>) {
        let (kv, log, snaps) = engines(dir);
        let (events, rx) = mpsc::unbounded_channel();
        let cfg = RaftstoreConfig {
            max_leader_missing: RaftstoreConfig::default().base_tick * 30,
            ..Default::default()
        };
        let transport = Box::new(NoTransport);
        let store =
            Store::open(1, cfg, kv, log, snaps, Arc::new(Ignore), transport, events).unwrap();
        (store, rx)
    }

    /// PD's verdict at `epoch` destroys region 1's peer 1 and no other
    /// id, leaving its tombstone.
    fn destroyed_as_peer_1_only(store: &mut Store, epoch: &metapb::RegionEpoch) {
        assert!(
            !store.destroy_stale_peer(1, 2, epoch).unwrap(),
            "another peer"
        );
        assert!(store.destroy_stale_peer(1, 1, epoch).unwrap());
        assert!(store.peer_status(1).is_none());
        assert_eq!(meta::load_tombstone(store.kv_engine(), 1).unwrap(), Some(1));
    }

    #[test]
    fn a_peer_without_a_leader_is_reported_and_destroyed_when_stale() {
        let dir = tempfile::tempdir().unwrap();
        {
            let (kv, _, _) = engines(dir.path());
            meta::write_initial_region(&kv, &region(&[(1, 1), (2, 2)])).unwrap();
            let mut wb = kv.write_batch();
            wb.put(tikal_engine::CF_DEFAULT, b"k", b"v");
            kv.write(wb, true).unwrap();
        }
        let (mut store, mut rx) = missing_after_30_ticks(dir.path());
        // Its only other peer never answers: no leader, ever.
        let mut reported = vec![];
        for _ in 0..60 {
            store.tick();
            store.on_ready().unwrap();
            while let Ok(ev) = rx.try_recv() {
                if let StoreEvent::LeaderMissing { region, peer } = ev {
                    reported.push((region.id, peer.id));
                }
            }
        }
        assert_eq!(
            reported,
            [(1, 1), (1, 1)],
            "once per 30 ticks without a leader"
        );
        // Only as reported: a changed epoch is not destroyed.
        let mut newer = region(&[]).region_epoch.unwrap();
        newer.version += 1;
        assert!(!store.destroy_stale_peer(1, 1, &newer).unwrap());
        let epoch = region(&[]).region_epoch.unwrap();
        destroyed_as_peer_1_only(&mut store, &epoch);
        assert_eq!(
            store
                .kv_engine()
                .get(tikal_engine::CF_DEFAULT, b"k")
                .unwrap(),
            None,
            "its data went with it"
        );
    }

    #[test]
    fn a_peer_that_holds_nothing_is_reported_once_it_hears_nothing() {
        // Store 1 has no region; peer 2 (on store 2) leads region 1 and
        // adds peer 1, whose store makes it from the first heartbeat. It
        // never campaigns and keeps naming its leader, so only silence
        // tells that it may have been removed before its snapshot came.
        let dir = tempfile::tempdir().unwrap();
        let (mut store, mut rx) = missing_after_30_ticks(dir.path());
        let mut reported = 0;
        let mut run = |store: &mut Store, ticks: usize, heartbeat_every: Option<usize>| {
            for t in 0..ticks {
                if heartbeat_every.is_some_and(|n| t % n == 0) {
                    store.step(peer_2_says(MessageType::MsgHeartbeat, 6));
                }
                store.tick();
                store.on_ready().unwrap();
                while let Ok(ev) = rx.try_recv() {
                    if let StoreEvent::LeaderMissing { region, peer } = ev {
                        assert_eq!((region.id, peer.id), (1, 1));
                        reported += 1;
                    }
                }
            }
            reported
        };
        // While its leader's heartbeats come, it is a member waiting.
        assert_eq!(run(&mut store, 60, Some(5)), 0);
        assert_eq!(store.peers[&1].raw_node.raft.leader_id, 2);
        assert!(!store.peers[&1].is_initialized());
        let epoch = metapb::RegionEpoch::default();
        assert!(
            !store.destroy_stale_peer(1, 1, &epoch).unwrap(),
            "it hears its leader"
        );
        // Removed: nothing comes any more.
        assert_eq!(run(&mut store, 60, None), 2, "once per 30 quiet ticks");
        // A message between the report and PD's answer keeps it.
        store.step(peer_2_says(MessageType::MsgHeartbeat, 6));
        assert!(
            !store.destroy_stale_peer(1, 1, &epoch).unwrap(),
            "it just heard"
        );
        assert_eq!(run(&mut store, 31, None), 3);
        destroyed_as_peer_1_only(&mut store, &epoch);
    }

    #[test]
    fn a_new_leader_serves_reads_once_an_entry_of_its_term_applies() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = leading_one_of_two(dir.path());
        let serves = |store: &Store| store.views().read().get(&1).map(|v| v.is_leader);
        // Its first entry waits for peer 2: entries of an earlier term may
        // still be unapplied here, so reads wait too.
        assert_eq!(serves(&store), Some(false));
        let status = store.peer_status(1).unwrap();
        let mut ack = peer_2_says(MessageType::MsgAppendResponse, status.term);
        ack.message.index = store.peers[&1].raw_node.raft.raft_log.last_index();
        store.step(ack);
        store.on_ready().unwrap();
        assert_eq!(serves(&store), Some(true));
        // Deposed by a higher term: no reads, whatever it applied.
        store.step(peer_2_says(MessageType::MsgHeartbeat, status.term + 1));
        store.on_ready().unwrap();
        assert_eq!(serves(&store), Some(false));
    }

    struct Keep(Arc<parking_lot::Mutex<Vec<PeerMessage>>>);

    impl Transport for Keep {
        fn send(&mut self, msg: PeerMessage) {
            self.0.lock().push(msg);
        }

        fn flush(&mut self) {}
    }

    #[test]
    fn only_messages_that_may_create_a_peer_carry_the_range() {
        let dir = tempfile::tempdir().unwrap();
        {
            let (kv, _, _) = engines(dir.path());
            let mut r = region(&[(1, 1), (2, 2)]);
            r.start_key = b"a".to_vec();
            r.end_key = b"m".to_vec();
            meta::write_initial_region(&kv, &r).unwrap();
        }
        let (mut store, sent) = open_keeping(dir.path());
        store.campaign(1).unwrap();
        store.on_ready().unwrap();
        let term = store.peer_status(1).unwrap().term;
        store.step(peer_2_says(
            MessageType::MsgRequestPreVoteResponse,
            term + 1,
        ));
        store.on_ready().unwrap();
        store.step(peer_2_says(MessageType::MsgRequestVoteResponse, term + 1));
        store.on_ready().unwrap();
        assert!(store.peers[&1].is_leader());
        let sent: Vec<(MessageType, Vec<u8>, Vec<u8>)> = sent
            .lock()
            .iter()
            .map(|m| {
                (
                    m.message.get_msg_type(),
                    m.start_key.clone(),
                    m.end_key.clone(),
                )
            })
            .collect();
        let range = (b"a".to_vec(), b"m".to_vec());
        let of = |kind| sent.iter().find(|(k, _, _)| *k == kind).cloned();
        for vote in [MessageType::MsgRequestPreVote, MessageType::MsgRequestVote] {
            assert_eq!(of(vote), Some((vote, range.0.clone(), range.1.clone())));
        }
        let append = MessageType::MsgAppend;
        assert_eq!(of(append), Some((append, vec![], vec![])));
    }
}
