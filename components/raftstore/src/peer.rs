//! One replica of one region: a raft-rs `RawNode` plus the proposals waiting
//! for their entries to be applied.
//!
//! A peer is *initialized* once it knows its region (key range, peers): a
//! region's first peers are, and a peer created for a message from another
//! store becomes so when it applies its first snapshot.
//!
//! Membership changes travel as `ConfChangeV2` entries whose context is a
//! `raft_cmdpb.ChangePeerV2Request` naming the peers (the entry knows only
//! their ids). Applying one updates the region's peers and roles, bumps
//! `conf_ver`, and persists the region in the same batch as the applied
//! index; a change of several voters goes through a joint configuration,
//! which raft-rs leaves on its own.
//!
//! Splits and merges are admin commands (`admin.rs`). While a merge is
//! prepared the source takes no proposals, admin commands or membership
//! changes, and keeps its whole log, until the target takes it in or the
//! merge is rolled back.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;

use prost::Message as _;
use protobuf::Message as _;
use raft::eraftpb::{
    ConfChange, ConfChangeSingle, ConfChangeTransition, ConfChangeV2, Entry, EntryType, Message,
    MessageType, Snapshot,
};
use raft::{RawNode, StateRole};
use tikal_engine::{KvEngine, RaftLogEngine};
use tikal_proto::eraftpb::ConfChangeType;
use tikal_proto::metapb::{self, PeerRole};
use tikal_proto::raft_cmdpb::{
    AdminCmdType, AdminRequest, BatchSplitRequest, ChangePeerRequest, ChangePeerV2Request,
    CommitMergeRequest,
};
use tokio::sync::oneshot;
use tracing::{info, warn};

use crate::admin::{self, EntryKind, MergeState};
use crate::apply::{Applier, ApplyBatch, ApplyContext, ApplyOutput};
use crate::disk::{self, DiskFullOpt, DiskUsage};
use crate::meta::{self, ApplyState};
use crate::peer_storage::{PeerStorage, SnapState};
use crate::replica_read::{ReplicaReads, GIVE_UP_TICKS};
use crate::snap::{self, SnapKey, SnapManager};
use crate::{RaftstoreError, ReadProgress, Result};

/// What a membership change's proposer gets: the region after it, or why
/// every replica refused it.
pub type ConfChangeOutput = std::result::Result<metapb::Region, String>;

/// What an admin command's proposer gets: for a split, every region it
/// made, in key order; for a merge step, the region it left. Or why it was
/// not made (EpochNotMatch when the region changed meanwhile).
pub type SplitOutput = Result<Vec<metapb::Region>>;

pub(crate) type Callback = oneshot::Sender<Result<ApplyOutput>>;
/// Answered once a linearizable read of the region may be served here.
pub(crate) type ReadCallback = oneshot::Sender<Result<()>>;

/// Proposers waiting for the entry at `index` of `term`: one per client
/// command in it, in order.
struct Proposal {
    index: u64,
    term: u64,
    cbs: Vec<Callback>,
}

/// Client commands a leader took in since its last round, proposed as one
/// entry when the round starts (see `admin.rs`).
#[derive(Default)]
struct PendingCommands {
    /// The region version they were checked against.
    version: u64,
    /// The term they were taken in.
    term: u64,
    cmds: Vec<Vec<u8>>,
    bytes: usize,
    cbs: Vec<Callback>,
}

/// What a client command was checked against, as `raft_cmdpb`'s request
/// header carries it: the region version and, for a command decided on
/// the leader's applied state (a transactional write), the term of that
/// state. The command is refused if either changed. A term that changed
/// means leadership was lost in between, perhaps regained since: a peer
/// leading again in a new term may not have applied what the leaders
/// in between committed, so a decision made before is stale (TiKV proposes
/// with the term of the snapshot its scheduler decided on).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Expected {
    pub version: Option<u64>,
    pub term: Option<u64>,
}

impl Expected {
    /// Expects the epoch's version (none: any).
    pub fn version(epoch: Option<&metapb::RegionEpoch>) -> Expected {
        Expected {
            version: epoch.map(|e| e.version),
            term: None,
        }
    }

    /// Also expects `term`.
    pub fn in_term(self, term: u64) -> Expected {
        Expected {
            term: Some(term),
            ..self
        }
    }
}

/// How many client commands one entry may carry, and how many bytes of
/// them (TiKV's bounds: 256 requests, 40 % of `raft-entry-max-size`).
#[derive(Debug, Clone, Copy)]
pub struct CommandBatch {
    pub max_commands: usize,
    pub max_bytes: usize,
}

impl CommandBatch {
    /// One entry per command.
    pub const OFF: CommandBatch = CommandBatch {
        max_commands: 1,
        max_bytes: 0,
    };

    /// Upstream's bounds for entries of at most `raft_entry_max_size`.
    pub fn for_entry_max(raft_entry_max_size: usize) -> CommandBatch {
        CommandBatch {
            max_commands: 256,
            max_bytes: raft_entry_max_size / 5 * 2,
        }
    }
}

/// How far behind the leader's log a leader transfer's target may have
/// applied (TiKV's `leader-transfer-max-log-lag` default).
pub const LEADER_TRANSFER_MAX_LOG_LAG: u64 = 128;

pub(crate) struct Peer {
    pub region: metapb::Region,
    pub meta: metapb::Peer,
    pub raw_node: RawNode<PeerStorage>,
    proposals: VecDeque<Proposal>,
    pending: PendingCommands,
    /// Ticks this peer, not leading, has had proposals waiting: a deposed
    /// leader's entries may still commit under the next leader, and its
    /// proposers hear the real outcome when it applies them (or
    /// StaleCommand once a newer term's entry applies in their place). Cut
    /// off from the others, it fails them after a while instead.
    deposed_ticks: u64,
    /// Applied so far, in memory: ahead of the engine while a round's
    /// [`ApplyBatch`] is unwritten.
    apply_state: ApplyState,
    /// The applied index the engine holds (readers see), once the batch
    /// that applied it is written; reads are answered up to here only.
    visible_applied: u64,
    /// Proposers of applied entries, answered once their batch is written.
    answers_due: Vec<(Callback, Result<ApplyOutput>)>,
    /// Term of the entry at the applied index (0 if unknown): kept here
    /// because the log may have dropped that entry from its cache.
    applied_term: u64,
    /// Peers of the region met in messages, by id: an uninitialized peer
    /// answers its leader through this before it knows the region.
    pub peer_cache: HashMap<u64, metapb::Peer>,
    /// Set when an applied membership change removed this peer; the store
    /// destroys it after the round.
    pub pending_remove: bool,
    /// Regions an applied split made that this store should start a peer
    /// of; the store does after the round.
    pub pending_splits: Vec<metapb::Region>,
    /// Bytes of commands applied since the last split check.
    pub size_diff_hint: u64,
    /// A split check of the region is queued or running: no other is
    /// queued until its result is back.
    pub split_check_pending: bool,
    /// The region's size and key count at the last split check.
    pub approximate: Option<RegionStats>,
    /// The merge this region prepared, from its PrepareMerge's apply until
    /// the merge is rolled back (or the region is gone).
    pub merging: Option<MergeState>,
    /// Index of a PrepareMerge this peer proposed and has not applied yet.
    prepare_merge_proposed: u64,
    /// The highest index of a snapshot this peer, leading, sent: a peer
    /// that took it has no log below it, so a merge that would need a
    /// lagging peer's entries from below it is refused (TiKV's
    /// `last_sent_snapshot_idx`).
    pub(crate) snapshot_sent_index: u64,
    /// The peers that voted to roll back the merge prepared at the index
    /// given (see [`Peer::rollback_merge_agreed`]), counted while this
    /// peer led. Kept across leadership changes: a target found changed
    /// or gone stays so.
    rollback_votes: (u64, HashSet<u64>),
    /// Index of a RollbackMerge this peer proposed and has not applied
    /// yet: no second one is proposed meanwhile.
    rollback_merge_proposed: u64,
    /// Index of the last CompactLog this peer proposed: while it is above
    /// the applied index, log GC waits for it.
    compact_proposed: u64,
    /// Set on a merge's source peer once its target here took it in; the
    /// store forgets it after the round (its data is the target's now).
    pub merged: bool,
    /// Ticks since this peer last knew a leader; for a naive peer (see
    /// [`Peer::is_naive`]), which never campaigns and so keeps naming a
    /// leader that may have dropped it, ticks since it last heard any
    /// Raft message.
    pub leaderless_ticks: u64,
    /// Whether a Raft message reached this peer since the last tick.
    pub heard: bool,
    /// Ranges a split gave to regions whose peers here were removed: their
    /// data goes once the round has published this peer's narrower view
    /// ([`Store::after_round`]), not before, or a stale read checking the
    /// old view would read them emptied.
    pub ranges_to_clear: Vec<(Vec<u8>, Vec<u8>)>,
    /// On a leader: ticks since each other peer of the region was last
    /// heard from (its down peers are those silent too long, see
    /// [`Peer::down_peers`]).
    silent_ticks: HashMap<u64, u64>,
    /// The store tick at which this peer last asked its region's other
    /// peers whether it is stale because a newer region's message found it
    /// over that region's range (see `Store::maybe_create_peer`): such
    /// messages come with every heartbeat, the question once an election
    /// timeout is enough.
    pub asked_if_stale_at: Option<u64>,
    /// Peers a membership change applied here removed from the region,
    /// with the polls (see `Store::tell_removed_peers`) since: while this
    /// peer leads, it tells each it was removed, at growing intervals.
    /// A removed peer cut off at the time, a learner above all, would
    /// otherwise hold its copy until max-leader-missing-duration (as
    /// TiKV's leader polls its removed peers until they are gone). In
    /// memory only: a restart forgets it, and a replica that catches up
    /// by snapshot does not learn the removals the snapshot covers.
    pub removed_peers: Vec<(metapb::Peer, u64)>,
    /// Peers whose last message said their store's disk is not Normal (see
    /// `disk.rs`); a peer is dropped from it once it says Normal again.
    full_disks: HashMap<u64, DiskUsage>,
    /// Whether some peer's inflight window is closed for its full disk
    /// (see [`Peer::pause_full_followers`]).
    windows_closed: bool,
    /// On a leader, the last entry whose commit followers must hear of at
    /// once (see [`Peer::hurry_commit`]); 0 when none is pending.
    urgent_index: u64,
    pub written: Arc<Written>,
    /// The leader's safe ts for stale reads here, shared with the views.
    pub read_progress: Arc<ReadProgress>,
    reads: Reads,
    /// Reads this peer serves as a follower or learner (replica reads).
    replica_reads: ReplicaReads,
}

/// Raft's window of appends in flight to one follower (`raft::Config`).
pub(crate) const MAX_INFLIGHT_MSGS: usize = 256;

/// A region's approximate size in bytes and number of keys (or bytes and
/// keys written).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RegionStats {
    pub size: u64,
    pub keys: u64,
}

impl RegionStats {
    /// Counts one key of `bytes` bytes.
    pub(crate) fn add(&mut self, bytes: usize) {
        self.size = self.size.saturating_add(bytes as u64);
        self.keys = self.keys.saturating_add(1);
    }
}

/// Bytes and keys a peer's applied commands wrote since it started,
/// shared with the region's published views (PD's write rates come from
/// the difference between two heartbeats).
#[derive(Debug, Default)]
pub struct Written {
    bytes: std::sync::atomic::AtomicU64,
    keys: std::sync::atomic::AtomicU64,
}

impl Written {
    fn add(&self, w: RegionStats) {
        use std::sync::atomic::Ordering::Relaxed;
        self.bytes.fetch_add(w.size, Relaxed);
        self.keys.fetch_add(w.keys, Relaxed);
    }

    /// (bytes, keys) so far.
    pub fn total(&self) -> (u64, u64) {
        use std::sync::atomic::Ordering::Relaxed;
        (self.bytes.load(Relaxed), self.keys.load(Relaxed))
    }
}

/// Linearizable reads in flight (Raft's ReadIndex): every read that arrives
/// in one round shares one read index request; a quorum's heartbeat acks
/// confirm this peer still leads, and the reads are answered once the
/// confirmed commit index is applied.
#[derive(Default)]
struct Reads {
    arrived: Vec<ReadCallback>,
    next_id: u64,
    /// Asked of Raft, by request id.
    asked: VecDeque<(u64, Vec<ReadCallback>)>,
    /// Confirmed: answered once applied reaches the index.
    confirmed: VecDeque<Confirmed>,
}

/// Reads confirmed at one read index.
struct Confirmed {
    index: u64,
    /// Ticks these reads have waited for a merge to end (see
    /// [`Peer::readable_index`]).
    held_ticks: u32,
    batch: Vec<ReadCallback>,
}

impl Peer {
    /// Opens this store's peer of an initialized region.
    pub fn open(
        store_id: u64,
        region: metapb::Region,
        kv: &KvEngine,
        log: Arc<RaftLogEngine>,
        raft_cfg: &raft::Config,
        logger: &slog::Logger,
    ) -> Result<Peer> {
        let meta = region
            .peers
            .iter()
            .find(|p| p.store_id == store_id)
            .cloned()
            .ok_or(RaftstoreError::RegionNotFound(region.id))?;
        let apply_state = meta::load_apply_state(kv, region.id)?;
        let merging = meta::load_merge_state(kv, region.id)?;
        let mut peer = Peer::new(region, meta, apply_state, log, raft_cfg, logger)?;
        if merging.is_some() {
            // A prepared source serves no stale reads (see below).
            peer.read_progress.invalidate();
        }
        peer.merging = merging;
        // A region whose only voter is this peer needs no election timeout.
        let voters = &peer.raw_node.store().conf_state.voters;
        if voters.len() == 1 && voters[0] == peer.meta.id {
            let _ = peer.raw_node.campaign();
        }
        Ok(peer)
    }

    /// Creates peer `meta` of a region this store does not know yet; it
    /// waits for a snapshot from the region's leader.
    pub fn uninitialized(
        region_id: u64,
        meta: metapb::Peer,
        log: Arc<RaftLogEngine>,
        raft_cfg: &raft::Config,
        logger: &slog::Logger,
    ) -> Result<Peer> {
        let region = metapb::Region {
            id: region_id,
            ..Default::default()
        };
        Peer::new(region, meta, ApplyState::default(), log, raft_cfg, logger)
    }

    fn new(
        region: metapb::Region,
        meta: metapb::Peer,
        apply_state: ApplyState,
        log: Arc<RaftLogEngine>,
        raft_cfg: &raft::Config,
        logger: &slog::Logger,
    ) -> Result<Peer> {
        let storage = PeerStorage::new(&region, log, apply_state)?;
        let cfg = raft::Config {
            id: meta.id,
            applied: apply_state.applied_index,
            ..raft_cfg.clone()
        };
        let raw_node = RawNode::new(&cfg, storage, logger).map_err(|e| {
            tikal_engine::EngineError::Corrupted {
                what: "raft state",
                detail: format!("region {}: {e}", region.id),
            }
        })?;
        // Unknown (the entry compacted away) only until this peer applies
        // an entry: a leader's first is one of its own term.
        let applied_term =
            raft::Storage::term(raw_node.store(), apply_state.applied_index).unwrap_or(0);
        Ok(Peer {
            region,
            meta,
            raw_node,
            proposals: VecDeque::new(),
            pending: PendingCommands::default(),
            deposed_ticks: 0,
            apply_state,
            visible_applied: apply_state.applied_index,
            answers_due: vec![],
            applied_term,
            peer_cache: HashMap::new(),
            pending_remove: false,
            pending_splits: vec![],
            // Checked once it leads, so PD learns its size.
            size_diff_hint: u64::MAX,
            split_check_pending: false,
            approximate: None,
            merging: None,
            prepare_merge_proposed: 0,
            snapshot_sent_index: 0,
            rollback_votes: (0, HashSet::new()),
            rollback_merge_proposed: 0,
            compact_proposed: 0,
            merged: false,
            leaderless_ticks: 0,
            heard: false,
            ranges_to_clear: vec![],
            silent_ticks: HashMap::new(),
            asked_if_stale_at: None,
            removed_peers: vec![],
            full_disks: HashMap::new(),
            windows_closed: false,
            urgent_index: 0,
            written: Arc::default(),
            read_progress: Arc::default(),
            reads: Reads::default(),
            replica_reads: ReplicaReads::new(),
        })
    }

    pub fn is_initialized(&self) -> bool {
        !self.region.peers.is_empty()
    }

    /// Whether this peer never campaigns (it holds nothing yet, or is a
    /// learner), so it keeps naming a leader that may have removed it and
    /// gone quiet: only hearing nothing tells such a peer it may be stale
    /// (TiKV's "naive" peer).
    pub fn is_naive(&self) -> bool {
        !self.is_initialized() || !self.raw_node.raft.promotable()
    }

    /// A peer of the region by id, from the region or met in messages.
    pub fn find_peer(&self, id: u64) -> Option<metapb::Peer> {
        self.region
            .peers
            .iter()
            .find(|p| p.id == id)
            .or_else(|| self.peer_cache.get(&id))
            .cloned()
    }

    /// Repairs an append that raft-rs' `batch_append` got wrong, or says
    /// to drop it (false). raft-rs adds a follower's next entries to an
    /// append already queued for it if they continue its entries, and
    /// counts an append without entries as continued by anything. When a
    /// rejection moves the follower's next index back in the same round,
    /// a queued empty append at, say, index 81 takes the entries from 75 on
    /// and keeps its index: a follower holding entry 81 would take them as
    /// 82 and on and acknowledge entries it does not have (found by
    /// `chaos.rs`). The entries are right, their predecessor is not: it
    /// becomes the entry before the first one sent, with the term the log
    /// has for it, or the append is dropped if the log no longer has that
    /// term (Raft sends again).
    pub fn repair_append(&self, m: &mut raft::eraftpb::Message) -> bool {
        let Some(first) = m.entries.first().map(|e| e.index) else {
            return true;
        };
        if m.get_msg_type() != raft::eraftpb::MessageType::MsgAppend
            || m.index.checked_add(1) == Some(first)
        {
            return true;
        }
        let index = first.saturating_sub(1);
        match self.raw_node.raft.raft_log.term(index) {
            Ok(term) => {
                warn!(
                    region_id = self.region.id,
                    to = m.to,
                    index = m.index,
                    first,
                    "repairing a batched append's predecessor"
                );
                m.index = index;
                m.log_term = term;
                true
            }
            _ => false,
        }
    }

    pub fn applied_index(&self) -> u64 {
        self.apply_state.applied_index
    }

    pub fn region_id(&self) -> u64 {
        self.region.id
    }

    pub fn is_leader(&self) -> bool {
        self.raw_node.raft.state == StateRole::Leader
    }

    /// Leads and has applied an entry of its own term: every entry any
    /// earlier leader committed is then applied here too.
    pub fn serves_reads(&self) -> bool {
        self.is_leader() && self.applied_term == self.term()
    }

    pub fn term(&self) -> u64 {
        self.raw_node.raft.term
    }

    /// A message from `peer_id` arrived: it is not down.
    pub fn heard_from(&mut self, peer_id: u64) {
        if let Some(ticks) = self.silent_ticks.get_mut(&peer_id) {
            *ticks = 0;
        }
    }

    /// A tick passed: on a leader, every other peer not heard from since
    /// is silent one tick longer (a peer new to the leader starts at 0,
    /// as TiKV's leader starts each peer's clock when it takes over).
    pub fn count_silence(&mut self) {
        if !self.is_leader() {
            self.silent_ticks.clear();
            return;
        }
        let me = self.meta.id;
        let peers: Vec<u64> = (self.region.peers.iter().map(|p| p.id))
            .filter(|id| *id != me)
            .collect();
        self.silent_ticks.retain(|id, _| peers.contains(id));
        for id in peers {
            let ticks = self.silent_ticks.entry(id).or_insert(0);
            *ticks = ticks.saturating_add(1);
        }
    }

    /// On a leader, the peers not heard from for at least `ticks` ticks,
    /// with how long (TiKV's down peers, reported to PD).
    pub fn down_peers(&self, ticks: u64) -> Vec<(metapb::Peer, u64)> {
        (self.region.peers.iter())
            .filter_map(|p| {
                let silent = *self.silent_ticks.get(&p.id)?;
                (silent >= ticks).then(|| (p.clone(), silent))
            })
            .collect()
    }

    /// On a leader, the peers whose log is behind its compacted index:
    /// they need a snapshot before they can serve.
    pub fn pending_peers(&self) -> Vec<metapb::Peer> {
        if !self.is_leader() {
            return vec![];
        }
        let truncated = self.raw_node.store().truncated_index;
        self.region
            .peers
            .iter()
            .filter(|p| {
                p.id != self.meta.id
                    && self
                        .raw_node
                        .raft
                        .prs()
                        .get(p.id)
                        .is_none_or(|pr| pr.matched < truncated)
            })
            .cloned()
            .collect()
    }

    /// The leader as this peer knows it, if any.
    pub fn leader(&self) -> Option<metapb::Peer> {
        let id = self.raw_node.raft.leader_id;
        self.region.peers.iter().find(|p| p.id == id).cloned()
    }

    /// Proposes a membership change (see the module docs). Refuses at once
    /// what every replica would refuse, and a change while another is not
    /// yet applied.
    pub fn propose_conf_change(
        &mut self,
        epoch: Option<metapb::RegionEpoch>,
        changes: Vec<ChangePeerRequest>,
        cb: Callback,
    ) {
        self.propose_pending();
        let Some(cb) = self.check_admin(epoch, cb) else {
            return;
        };
        let refuse = |cb: Callback, why: String| {
            let _ = cb.send(Err(RaftstoreError::ConfChange(why)));
        };
        if self.raw_node.raft.pending_conf_index > self.apply_state.applied_index {
            return refuse(cb, "another membership change is not applied yet".into());
        }
        if let Err(why) = check_changes(&self.region, self.meta.id, &changes) {
            return refuse(cb, why);
        }
        if let Err(why) = self.check_quorum_after(&changes) {
            return refuse(cb, why);
        }
        let mut cc = ConfChangeV2::default();
        cc.set_transition(ConfChangeTransition::Auto);
        for c in &changes {
            let mut single = ConfChangeSingle::default();
            single.set_change_type(raft_change_type(c.change_type()));
            single.node_id = c.peer.as_ref().map_or(0, |p| p.id);
            cc.mut_changes().push(single);
        }
        let context = ChangePeerV2Request { changes }.encode_to_vec();
        // raft-rs broadcasts the commit of a pending membership change
        // itself, whatever `skip_bcast_commit` says.
        let proposed = self.raw_node.propose_conf_change(context, cc);
        self.track(proposed, cb);
    }

    /// Waits for the entry just proposed, or answers that it was not.
    fn track(&mut self, proposed: raft::Result<()>, cb: Callback) {
        self.track_all(proposed, vec![cb]);
    }

    /// [`Peer::track`] for an entry of several client commands.
    fn track_all(&mut self, proposed: raft::Result<()>, cbs: Vec<Callback>) {
        if proposed.is_err() {
            for cb in cbs {
                let _ = cb.send(Err(self.not_leader()));
            }
            return;
        }
        let index = self.raw_node.raft.raft_log.last_index();
        self.proposals.push_back(Proposal {
            index,
            term: self.term(),
            cbs,
        });
    }

    /// Takes a client command checked against the region at `epoch` (the
    /// current one if `None`); it is applied only if the region's version
    /// is still the same then (see `admin.rs`). It waits with the others
    /// of this round for [`Peer::propose_pending`], unless `batch` says it
    /// goes alone.
    pub fn propose(&mut self, expected: Expected, cmd: Vec<u8>, cb: Callback, batch: CommandBatch) {
        if let Err(e) = self.check_command(expected) {
            let _ = cb.send(Err(e));
            return;
        }
        let pending = &self.pending;
        if pending.term != self.term()
            || pending.cmds.len() >= batch.max_commands
            || pending.bytes.saturating_add(cmd.len()) > batch.max_bytes
        {
            // Those before it go first, in their own entry.
            self.propose_pending();
        }
        let alone = cmd.len() > batch.max_bytes;
        let (version, term) = (crate::region_version(&self.region), self.term());
        let pending = &mut self.pending;
        pending.version = version;
        pending.term = term;
        pending.bytes = pending.bytes.saturating_add(cmd.len());
        pending.cmds.push(cmd);
        pending.cbs.push(cb);
        if alone {
            // Too long to share an entry: a plain one of its own, now.
            self.propose_pending();
        }
    }

    /// Whether the region takes a client command checked against
    /// `expected` (see [`Expected`]).
    fn check_command(&self, expected: Expected) -> Result<()> {
        // raft-rs drops proposals while leadership is handed over.
        if !self.is_leader() || self.raw_node.raft.lead_transferee.is_some() {
            return Err(self.not_leader());
        }
        if expected.term.is_some_and(|t| t != self.term()) {
            return Err(RaftstoreError::StaleCommand);
        }
        if self.merge_pending() {
            return Err(RaftstoreError::ProposalInMergingMode(self.region.id));
        }
        if (expected.version).is_some_and(|v| v != crate::region_version(&self.region)) {
            return Err(self.epoch_not_match());
        }
        Ok(())
    }

    /// Proposes the client commands taken in since the last round as one
    /// entry (a lone command as a plain one). Called when a round starts
    /// and before anything else is proposed, so the log keeps the order
    /// in which the peer took things in.
    pub fn propose_pending(&mut self) {
        if self.pending.cbs.is_empty() {
            return;
        }
        let PendingCommands {
            version,
            term,
            mut cmds,
            cbs,
            ..
        } = std::mem::take(&mut self.pending);
        // Leadership may have moved since they were taken in.
        let expected = Expected {
            version: Some(version),
            term: Some(term),
        };
        if self.check_command(expected).is_err() {
            for cb in cbs {
                let refused = self.check_command(expected);
                let _ = cb.send(Err(refused.err().unwrap_or(RaftstoreError::StaleCommand)));
            }
            return;
        }
        let epoch = self.region.region_epoch.clone().unwrap_or_default();
        let entry = match cmds.len() {
            1 => cmds
                .pop()
                .map(|cmd| (admin::entry_context(false, &epoch), cmd)),
            _ => admin::encode_commands(&cmds).map(|data| (admin::commands_context(&epoch), data)),
        };
        let proposed = match entry {
            Some((context, data)) => self.raw_node.propose(context, data),
            // Unreachable within the batch's bounds; refused as a dropped
            // proposal is.
            None => Err(raft::Error::ProposalDropped),
        };
        self.track_all(proposed, cbs);
    }

    /// Proposes splitting the region at `req`'s keys (ids from PD); `cb`
    /// gets a [`SplitOutput`] once it is applied.
    pub fn propose_batch_split(
        &mut self,
        epoch: Option<metapb::RegionEpoch>,
        req: BatchSplitRequest,
        cb: Callback,
    ) {
        let Some(cb) = self.check_admin(epoch, cb) else {
            return;
        };
        if let Err(why) = admin::split_regions(&self.region, &req) {
            let _ = cb.send(Err(RaftstoreError::Split(why)));
            return;
        }
        let proposed = self.propose_admin(None, admin::encode_batch_split(req));
        self.track(proposed.map(drop), cb);
    }

    /// On a leader, the log index every peer has (learners included).
    /// Refuses a membership change whose new configuration could not
    /// commit until a peer behind the compacted log got a snapshot, as
    /// TiKV refuses it: the log a quorum of the new voters holds must
    /// reach the compacted index (both quorums in a joint configuration).
    /// A region of one voter may change at will.
    fn check_quorum_after(&self, changes: &[ChangePeerRequest]) -> std::result::Result<(), String> {
        let voters = |roles: &[PeerRole], region: &metapb::Region| -> Vec<u64> {
            (region.peers.iter())
                .filter(|p| roles.iter().any(|r| p.role == *r as i32))
                .map(|p| p.id)
                .collect()
        };
        use PeerRole::{DemotingVoter, IncomingVoter, Voter};
        if voters(&[Voter, IncomingVoter, DemotingVoter], &self.region).len() <= 1 {
            return Ok(());
        }
        let mut after = self.region.clone();
        change_region_peers(&mut after, changes.len() > 1, changes);
        let raft = &self.raw_node.raft;
        let matched = |id: u64| match id == self.meta.id {
            true => raft.raft_log.last_index(),
            false => raft.prs().get(id).map_or(0, |p| p.matched),
        };
        // The highest index a majority of `ids` holds (no bound if none).
        let quorum_index = |ids: Vec<u64>| {
            let mut m: Vec<u64> = ids.into_iter().map(matched).collect();
            m.sort_unstable_by(|a, b| b.cmp(a));
            m.get(m.len() / 2).copied().unwrap_or(u64::MAX)
        };
        let joint = changes.len() > 1;
        let incoming = quorum_index(voters(&[Voter, IncomingVoter], &after));
        let outgoing = match joint {
            true => quorum_index(voters(&[Voter, DemotingVoter], &after)),
            false => u64::MAX,
        };
        let reachable = incoming.min(outgoing);
        let truncated = self.raw_node.store().truncated_index;
        if reachable < truncated {
            return Err(format!(
                "unsafe membership change: the new configuration's quorum holds the log up \
                 to {reachable}, below the compacted index {truncated}; a peer needs a \
                 snapshot first"
            ));
        }
        Ok(())
    }

    fn slowest_matched(&self) -> Option<u64> {
        self.raw_node
            .raft
            .prs()
            .iter()
            .map(|(_, p)| p.matched)
            .min()
    }

    /// Appends an admin command at `epoch` (the current one if `None`);
    /// its log index if it was.
    pub(crate) fn propose_admin(
        &mut self,
        epoch: Option<&metapb::RegionEpoch>,
        data: Vec<u8>,
    ) -> raft::Result<u64> {
        self.propose_pending();
        let current = self.region.region_epoch.clone().unwrap_or_default();
        let context = admin::entry_context(true, epoch.unwrap_or(&current));
        self.raw_node.propose(context, data)?;
        self.hurry_commit();
        Ok(self.raw_node.raft.raft_log.last_index())
    }

    /// Followers learn a commit index from the next append or heartbeat:
    /// a leader does not send an empty append just to carry it (raft-rs'
    /// `skip_bcast_commit`, as TiKV). That halves the messages of a region
    /// that takes one write at a time. Until the entries up to the last
    /// one now are applied here, though, each commit is sent at once: an
    /// admin command (splits start peers on every store, merges wait on
    /// every peer) or a new leader's first entry.
    pub fn hurry_commit(&mut self) {
        self.urgent_index = self.raw_node.raft.raft_log.last_index();
        self.raw_node.skip_bcast_commit(false);
    }

    /// A merge is prepared, or proposed to be: the region takes no
    /// proposals but the merge's own.
    pub(crate) fn merge_pending(&self) -> bool {
        self.merging.is_some() || self.prepare_merge_proposed > self.apply_state.applied_index
    }

    /// Proposes merging this region into the adjacent `target` (as PD saw
    /// it). Refused at once while a membership change is not applied, when
    /// a peer's log is behind the compacted index (it needs a snapshot
    /// first), or when an admin command or membership change sits in the
    /// log past what every peer has: a lagging peer's catch-up at the
    /// target (see `admin.rs`) carries plain commands only, or when the
    /// log it would carry is over nine tenths of `entry_max` (TiKV's
    /// bound: the CommitMerge that carries it is one entry).
    pub fn propose_prepare_merge(
        &mut self,
        epoch: Option<metapb::RegionEpoch>,
        target: metapb::Region,
        entry_max: u64,
        cb: Callback,
    ) {
        let Some(cb) = self.check_admin(epoch, cb) else {
            return;
        };
        let refuse = |cb: Callback, why: String| {
            let _ = cb.send(Err(RaftstoreError::Merge(why)));
        };
        if self.raw_node.raft.pending_conf_index > self.apply_state.applied_index {
            return refuse(cb, "a membership change is not applied yet".into());
        }
        if let Err(why) = admin::merged_region(&target, &self.region) {
            return refuse(cb, why);
        }
        let last = self.raw_node.raft.raft_log.last_index();
        let min_index = self.slowest_matched().unwrap_or(last);
        if min_index < self.raw_node.store().truncated_index {
            return refuse(cb, "a peer is behind the compacted log".into());
        }
        // A peer made from a snapshot has no log below it: should it lead
        // the prepared source, it could not build the CommitMerge, and the
        // source would take no writes for good (as TiKV refuses it).
        let prs = self.raw_node.raft.prs();
        if prs
            .iter()
            .any(|(_, p)| p.state == raft::ProgressState::Snapshot)
        {
            return refuse(cb, "a peer is taking a snapshot".into());
        }
        if min_index < self.snapshot_sent_index {
            let why = format!(
                "a lagging peer needs the log from {} and a peer was sent a snapshot at {}",
                min_index.saturating_add(1),
                self.snapshot_sent_index
            );
            return refuse(cb, why);
        }
        // Log GC up to `min_index` at most keeps what the CommitMerge
        // carries; any other admin command in the gap is refused, as TiKV.
        let fits =
            |e: &Entry| is_plain_command(e) || compact_log_index(e).is_some_and(|i| i <= min_index);
        let entries = match self.entries(min_index.saturating_add(1), last) {
            Ok(entries) if entries.iter().all(fits) => entries,
            Ok(_) => return refuse(cb, "an admin command is not on every peer yet".into()),
            Err(e) => return refuse(cb, e.to_string()),
        };
        let carried: u64 = entries.iter().map(|e| u64::from(e.compute_size())).sum();
        if carried > entry_max / 10 * 9 {
            let why =
                format!("the log a lagging peer lacks ({carried} bytes) is too large to carry");
            return refuse(cb, why);
        }
        let proposed = self.propose_admin(None, admin::encode_prepare_merge(min_index, target));
        if let Ok(index) = proposed {
            self.prepare_merge_proposed = index;
        }
        self.track(proposed.map(drop), cb);
    }

    /// On a prepared source's leader: the CommitMerge its target should
    /// apply, carrying the entries after `min_index` up to the PrepareMerge.
    pub fn commit_merge_request(&self) -> Result<CommitMergeRequest> {
        let state = self
            .merging
            .as_ref()
            .ok_or_else(|| RaftstoreError::Merge("no merge prepared".into()))?;
        let entries = self.entries(state.min_index.saturating_add(1), state.commit)?;
        Ok(CommitMergeRequest {
            source: Some(self.region.clone()),
            commit: state.commit,
            entries: entries
                .iter()
                .map(|e| e.write_to_bytes().unwrap_or_default())
                .collect(),
        })
    }

    /// Proposes, on the target's leader, a CommitMerge at the target epoch
    /// the source's PrepareMerge recorded.
    pub fn propose_commit_merge(
        &mut self,
        recorded: &metapb::RegionEpoch,
        req: CommitMergeRequest,
        cb: Callback,
    ) {
        let Some(cb) = self.check_admin(None, cb) else {
            return;
        };
        let proposed = self.propose_admin(Some(recorded), admin::encode_commit_merge(req));
        self.track(proposed.map(drop), cb);
    }

    /// Proposes, on a prepared source's leader, to roll its merge back.
    pub fn propose_rollback_merge(&mut self, cb: Callback) {
        let Some(state) = self.merging.as_ref() else {
            let _ = cb.send(Err(RaftstoreError::Merge("no merge prepared".into())));
            return;
        };
        if !self.is_leader() {
            let _ = cb.send(Err(self.not_leader()));
            return;
        }
        if self.rollback_merge_proposed > self.apply_state.applied_index {
            let _ = cb.send(Err(RaftstoreError::Merge(
                "a rollback is proposed already".into(),
            )));
            return;
        }
        let commit = state.commit;
        let proposed = self.propose_admin(None, admin::encode_rollback_merge(commit));
        if let Ok(index) = proposed {
            self.rollback_merge_proposed = index;
        }
        self.track(proposed.map(drop), cb);
    }

    /// Records peer `from`'s vote to roll back the merge prepared at
    /// `commit`; true if that vote completed a quorum. Only a leader
    /// counts votes, and only for its region's current merge and from the
    /// region's peers.
    pub fn want_rollback_merge(&mut self, from: u64, commit: u64) -> bool {
        let current = self.merging.as_ref().is_some_and(|m| m.commit == commit);
        if !current || !self.is_leader() || !self.region.peers.iter().any(|p| p.id == from) {
            return false;
        }
        if self.rollback_votes.0 != commit {
            self.rollback_votes = (commit, HashSet::new());
        }
        let before = self.rollback_merge_agreed();
        self.rollback_votes.1.insert(from);
        !before && self.rollback_merge_agreed()
    }

    /// On a leader: a quorum of the voters (of both configurations while
    /// joint) voted to roll back the prepared merge. One peer's view of
    /// the target is not enough: a source peer whose store's target peer
    /// was removed after the merge committed elsewhere votes too. A
    /// committed CommitMerge is in the log of a quorum of the target's
    /// voters, which are on the stores of the source's voters with the
    /// same roles (`admin::merged_region`); each of them applies it and
    /// the source peer on its store is gone, so their stores never vote.
    /// That holds unless a quorum of those target peers is removed before
    /// applying it, which TiKV's rule assumes too.
    pub fn rollback_merge_agreed(&self) -> bool {
        let Some(merge) = &self.merging else {
            return false;
        };
        if !self.is_leader() || self.rollback_votes.0 != merge.commit {
            return false;
        }
        let votes = &self.rollback_votes.1;
        self.quorum_of(|id| votes.contains(&id))
    }

    /// Whether the voters for which `yes` holds are a quorum of the
    /// region's configuration (of both halves of a joint one).
    fn quorum_of(&self, yes: impl Fn(u64) -> bool) -> bool {
        let majority = |voters: &[u64]| {
            let ayes = voters.iter().filter(|&&v| yes(v)).count();
            voters.is_empty() || ayes >= raft::majority(voters.len())
        };
        let conf = self.raw_node.raft.prs().conf().to_conf_state();
        majority(&conf.voters) && majority(&conf.voters_outgoing)
    }

    /// TiKV's handshake before a leader transfer (asked for by
    /// [`Peer::ask_to_take_over`]): a follower asked by its leader answers
    /// with its applied index unless it is taking a snapshot; the leader
    /// hands over once that answer shows the target ready
    /// ([`Peer::transfer_refused`]). Raft never steps these messages, so no
    /// peer can take leadership by asking for it. The answer to send, if
    /// any.
    pub fn on_transfer_leader(&mut self, m: &Message) -> Option<Message> {
        let raft = &self.raw_node.raft;
        if m.log_term != raft.term {
            return None;
        }
        if self.is_leader() {
            match self.transfer_refused(m.from, m.index) {
                Some(why) => info!(
                    region_id = self.region.id,
                    to = m.from,
                    why,
                    "leadership not handed over"
                ),
                None => {
                    self.propose_pending();
                    self.raw_node.transfer_leader(m.from);
                }
            }
            return None;
        }
        if m.from != raft.leader_id || self.raw_node.snap().is_some() {
            return None;
        }
        Some(self.transfer_leader_message(m.from, self.apply_state.applied_index))
    }

    /// On a leader: asks `to` whether it is ready to lead (see
    /// [`Peer::on_transfer_leader`]). Refused at once while a membership
    /// change is not applied here, as TiKV refuses it.
    pub fn ask_to_take_over(&self, to: u64) -> std::result::Result<Message, &'static str> {
        if self.raw_node.raft.has_pending_conf() {
            return Err("a membership change is not applied yet");
        }
        Ok(self.transfer_leader_message(to, 0))
    }

    fn transfer_leader_message(&self, to: u64, index: u64) -> Message {
        let mut m = Message::default();
        m.set_msg_type(MessageType::MsgTransferLeader);
        (m.from, m.to) = (self.meta.id, to);
        // The term rides in `log_term` too, as TiKV sends it.
        (m.term, m.log_term) = (self.raw_node.raft.term, self.raw_node.raft.term);
        m.index = index;
        m
    }

    /// Why the leader must not hand over to `to`, whose applied index is
    /// `applied`, if it must (TiKV's `ready_to_transfer_leader`): the
    /// target must be a voter; no peer may be taking a snapshot; no
    /// membership change may be pending here or unapplied there (a target
    /// that has not applied its own promotion ignores the hand-over, and
    /// the region refuses writes for an election timeout); nor a merge;
    /// and its applied log must be within [`LEADER_TRANSFER_MAX_LOG_LAG`]
    /// of ours, or it would lead without serving reads for long.
    fn transfer_refused(&self, to: u64, applied: u64) -> Option<&'static str> {
        let raft = &self.raw_node.raft;
        let conf = raft.prs().conf().to_conf_state();
        if !conf.voters.contains(&to) {
            return Some("not a voter");
        }
        if (raft.prs().iter()).any(|(_, p)| p.state == raft::ProgressState::Snapshot) {
            return Some("a peer is taking a snapshot");
        }
        if raft.has_pending_conf() || raft.pending_conf_index > applied {
            return Some("a membership change is pending");
        }
        if self.merge_pending() {
            return Some("a merge is pending");
        }
        if raft.raft_log.last_index() >= applied.saturating_add(LEADER_TRANSFER_MAX_LOG_LAG) {
            return Some("its log lags");
        }
        None
    }

    /// On a leader that refuses writes for its own disk, hands leadership
    /// to the lowest-id voter whose disk last said Normal (as TiKV's leader
    /// does), so the region takes writes again where there is room. None
    /// such: the region waits for room.
    pub fn hand_off_for_room(&mut self) {
        if !self.is_leader() {
            return;
        }
        let me = self.meta.id;
        let conf = self.raw_node.raft.prs().conf().to_conf_state();
        let prs = self.raw_node.raft.prs();
        let to = (conf.voters.iter())
            .filter(|id| **id != me && !self.full_disks.contains_key(id))
            .filter(|id| prs.get(**id).is_some_and(|p| p.recent_active))
            .min()
            .copied();
        if let Some(to) = to {
            if self.raw_node.raft.lead_transferee != Some(to) {
                info!(
                    region_id = self.region.id,
                    to, "disk short of room: handing leadership over"
                );
                self.propose_pending();
                self.raw_node.transfer_leader(to);
            }
        }
    }

    /// Records how full `from`'s disk is, as its message said.
    pub fn note_disk_usage(&mut self, from: u64, usage: DiskUsage) {
        if usage == DiskUsage::Normal && self.full_disks.is_empty() {
            // Every message's case: nothing to record or change.
            return;
        }
        let before = self
            .full_disks
            .get(&from)
            .copied()
            .unwrap_or(DiskUsage::Normal);
        if usage == DiskUsage::Normal {
            self.full_disks.remove(&from);
        } else {
            self.full_disks.insert(from, usage);
        }
        if usage != before {
            self.pause_full_followers();
        }
    }

    /// Whether `to`'s store said its disk is short of room.
    pub fn disk_short(&self, to: u64) -> bool {
        self.full_disks.contains_key(&to)
    }

    /// On a leader, stops log entries to the peers whose disks are not
    /// Normal while the others make a quorum (their inflight window is
    /// closed, as TiKV's leader does), so they do not fill up with the
    /// writes the rest take; heartbeats still go, and entries resume once
    /// they say Normal. When they are needed for a quorum they keep getting
    /// entries: only writes that allow their usage, and Raft's own, are
    /// proposed then. Anywhere else (a follower) every window is opened
    /// again, so a peer that leads again later starts with none closed.
    /// Called whenever a usage changes and on ticks while
    /// [`Peer::disk_windows_due`].
    pub fn pause_full_followers(&mut self) {
        let me = self.meta.id;
        let normal = |id: u64| id == me || !self.full_disks.contains_key(&id);
        let pause = self.is_leader() && self.quorum_of(normal);
        let full_disks = &self.full_disks;
        let mut closed_any = false;
        for (id, pr) in self.raw_node.raft.mut_prs().iter_mut() {
            let closed = pause && *id != me && full_disks.contains_key(id);
            pr.ins.set_cap(if closed { 0 } else { MAX_INFLIGHT_MSGS });
            closed_any |= closed;
        }
        self.windows_closed = closed_any;
    }

    /// Whether the inflight windows may need changing on this tick: a peer
    /// reported a full disk, or windows are still closed (a leader that
    /// lost leadership, new peers, conf changes).
    pub fn disk_windows_due(&self) -> bool {
        !self.full_disks.is_empty() || self.windows_closed
    }

    /// On a leader, whether a client write that tolerates `opt` may be
    /// proposed, given this store's disk (`(store id, usage)`) and the
    /// usage its followers last reported: this store's disk must take it,
    /// and so must the disks of a quorum of voters. Otherwise DiskFull
    /// names the stores that refuse it. A follower answers NotLeader
    /// later, as before.
    pub fn check_disk(&self, own: (u64, DiskUsage), opt: DiskFullOpt) -> Result<()> {
        if !self.is_leader() {
            return Ok(());
        }
        let (store_id, usage) = own;
        if !disk::allows(opt, usage) {
            return Err(RaftstoreError::DiskFull {
                store_ids: vec![store_id],
                reason: format!("the leader's disk is {usage:?}; the write allows {opt:?}"),
            });
        }
        let refuses = |id: u64| {
            self.full_disks
                .get(&id)
                .is_some_and(|u| !disk::allows(opt, *u))
        };
        if self.full_disks.is_empty() || self.quorum_of(|id| !refuses(id)) {
            return Ok(());
        }
        let mut store_ids: Vec<u64> = (self.region.peers.iter())
            .filter(|p| refuses(p.id))
            .map(|p| p.store_id)
            .collect();
        store_ids.sort_unstable();
        Err(RaftstoreError::DiskFull {
            store_ids,
            reason: format!("no quorum of voters has disk room for a write that allows {opt:?}"),
        })
    }

    /// Log entries `low..=high` (none if `low > high`).
    fn entries(&self, low: u64, high: u64) -> Result<Vec<Entry>> {
        if low > high {
            return Ok(vec![]);
        }
        raft::Storage::entries(
            self.raw_node.store(),
            low,
            high.saturating_add(1),
            None,
            raft::GetEntriesContext::empty(false),
        )
        .map_err(|e| {
            tikal_engine::EngineError::Corrupted {
                what: "raft log",
                detail: format!("region {}: entries {low}..={high}: {e}", self.region.id),
            }
            .into()
        })
    }

    /// An admin command or membership change is proposed only by the
    /// leader, at the region's exact epoch, and not while a merge is
    /// pending; otherwise `cb` is answered why and `None` returned.
    fn check_admin(&self, epoch: Option<metapb::RegionEpoch>, cb: Callback) -> Option<Callback> {
        let refused = if !self.is_leader() {
            self.not_leader()
        } else if self.merge_pending() {
            RaftstoreError::ProposalInMergingMode(self.region.id)
        } else if epoch.is_some_and(|e| Some(e) != self.region.region_epoch) {
            self.epoch_not_match()
        } else {
            return Some(cb);
        };
        let _ = cb.send(Err(refused));
        None
    }

    pub fn epoch_not_match(&self) -> RaftstoreError {
        RaftstoreError::EpochNotMatch(Box::new(self.region.clone()))
    }

    /// Queues a read that must see every write acknowledged before it.
    pub fn read_index(&mut self, cb: ReadCallback) {
        if !self.is_leader() {
            let _ = cb.send(Err(self.not_leader()));
            return;
        }
        self.reads.arrived.push(cb);
    }

    /// Queues a read served by this replica, a follower or a learner,
    /// once it has applied what its leader had committed (see
    /// `replica_read.rs`); `check` (may be empty) is for the leader. A
    /// leader takes it as its own read.
    pub fn replica_read_index(&mut self, cb: ReadCallback, check: Vec<u8>) {
        if self.is_leader() {
            return self.read_index(cb);
        }
        if !self.is_initialized() || self.raw_node.raft.leader_id == raft::INVALID_ID {
            let _ = cb.send(Err(self.not_leader()));
            return;
        }
        self.replica_reads.arrive(cb, check);
    }

    /// Asks Raft for one read index covering the reads that arrived (on a
    /// replica: asks its leader).
    pub fn ask_reads(&mut self) {
        if self.is_leader() {
            if !self.replica_reads.is_idle() {
                // Asked as a follower: the old leader's answers will not
                // come (their term is past); the readers retry.
                self.replica_reads.fail_all(|| RaftstoreError::StaleCommand);
            }
        } else {
            for ctx in self.replica_reads.ask(self.meta.id) {
                self.raw_node.read_index(ctx);
            }
        }
        // raft-rs drops a read index request until the leader has
        // committed an entry of its term; those reads wait for that.
        if self.reads.arrived.is_empty() || !self.raw_node.raft.commit_to_current_term() {
            return;
        }
        self.reads.next_id += 1;
        let id = self.reads.next_id;
        self.raw_node.read_index(id.to_be_bytes().to_vec());
        let batch = std::mem::take(&mut self.reads.arrived);
        self.reads.asked.push_back((id, batch));
    }

    /// Takes Raft's confirmed read indexes for requests asked earlier.
    pub fn on_read_states(&mut self, states: Vec<raft::ReadState>) {
        for rs in states {
            if self.replica_reads.on_read_state(self.meta.id, &rs) {
                continue;
            }
            let Ok(id) = <[u8; 8]>::try_from(rs.request_ctx.as_slice()) else {
                continue;
            };
            let id = u64::from_be_bytes(id);
            while let Some((asked, batch)) = self.reads.asked.pop_front() {
                if asked == id {
                    self.reads.confirmed.push_back(Confirmed {
                        index: rs.index,
                        held_ticks: 0,
                        batch,
                    });
                    break;
                }
                // Raft answers in order; an earlier request it skipped
                // cannot be confirmed any more.
                for cb in batch {
                    let _ = cb.send(Err(RaftstoreError::StaleCommand));
                }
            }
        }
        self.answer_reads();
    }

    /// The highest read index a read may be answered at: what is applied
    /// and written, but below the PrepareMerge while a merge is prepared.
    ///
    /// The merge's target may take writes in this range as soon as it
    /// commits the merge, and this region's peers that have not applied
    /// the CommitMerge yet can still confirm its leader. So a read index
    /// at or past the PrepareMerge may have been confirmed after the
    /// target took a write here, which the read would miss (TiKV refuses
    /// such a read index). One confirmed below the PrepareMerge was asked
    /// before the merge committed anywhere, so the frozen source data is a
    /// state it may see. Held reads are answered if the merge rolls back,
    /// fail with RegionNotFound when the merge ends here (the client reloads
    /// the region), or with ReadIndexNotReady after [`GIVE_UP_TICKS`].
    /// Refused at once, they would spend the official Rust client's ten
    /// retries within the merge's usual 0.3 s.
    fn readable_index(&self) -> u64 {
        match &self.merging {
            Some(merge) => self.visible_applied.min(merge.commit.saturating_sub(1)),
            None => self.visible_applied,
        }
    }

    /// Answers confirmed reads whose index is applied and written (see
    /// [`Peer::readable_index`]).
    pub fn answer_reads(&mut self) {
        let readable = self.readable_index();
        while self
            .reads
            .confirmed
            .front()
            .is_some_and(|c| c.index <= readable)
        {
            if let Some(Confirmed { batch, .. }) = self.reads.confirmed.pop_front() {
                for cb in batch {
                    let _ = cb.send(Ok(()));
                }
            }
        }
    }

    /// Answers the replica reads confirmed at an index this peer has
    /// applied (see [`Peer::readable_index`]). Called after the round's
    /// views are published: a reader checks its region against the view,
    /// which must already show what the applied entries did (a split, a
    /// snapshot's narrower range).
    pub fn answer_replica_reads(&mut self) {
        self.replica_reads.answer(self.readable_index());
    }

    /// A tick for the reads: a replica's are asked again while
    /// unanswered; reads that waited too long, a replica's or ones held
    /// by a merge, fail.
    pub fn tick_reads(&mut self) {
        self.tick_merge_held_reads();
        if self.replica_reads.is_idle() {
            return;
        }
        for ctx in self.replica_reads.tick(self.region.id) {
            // raft-rs drops it while no leader is known.
            self.raw_node.read_index(ctx);
        }
    }

    /// Fails the confirmed reads a prepared merge has held for
    /// [`GIVE_UP_TICKS`] (see [`Peer::readable_index`]). The client
    /// retries.
    fn tick_merge_held_reads(&mut self) {
        if self.merging.is_none() {
            return;
        }
        let readable = self.readable_index();
        let mut any_expired = false;
        for c in &mut self.reads.confirmed {
            // Reads waiting only for their index to be applied are not
            // held.
            if c.index > readable {
                c.held_ticks += 1;
                any_expired |= c.held_ticks >= GIVE_UP_TICKS;
            }
        }
        if !any_expired {
            return;
        }
        let region_id = self.region.id;
        let (expired, waiting): (VecDeque<_>, VecDeque<_>) =
            std::mem::take(&mut self.reads.confirmed)
                .into_iter()
                .partition(|c| c.held_ticks >= GIVE_UP_TICKS);
        self.reads.confirmed = waiting;
        for cb in expired.into_iter().flat_map(|c| c.batch) {
            let _ = cb.send(Err(RaftstoreError::ReadIndexNotReady {
                region_id,
                reason: "the region is merging".into(),
            }));
        }
    }

    /// Fails every read, a leader's and a replica's: the peer goes, and
    /// the region's leader elsewhere (if this peer knows one) serves on.
    pub fn fail_all_reads(&mut self) {
        let (region_id, leader) = (self.region.id, self.leader());
        let store_id = self.meta.store_id;
        self.fail_all_reads_with(|| {
            RaftstoreError::not_leader(region_id, leader.clone(), store_id)
        });
    }

    /// Fails every read, a leader's and a replica's, with RegionNotFound:
    /// the region merged away, so no leader serves it any more (one this
    /// peer names may be a source peer that has not applied the merge
    /// yet), and the client looks the keys' region up again.
    pub fn fail_all_reads_merged(&mut self) {
        let region_id = self.region.id;
        self.fail_all_reads_with(|| RaftstoreError::RegionNotFound(region_id));
    }

    fn fail_all_reads_with(&mut self, error: impl Fn() -> RaftstoreError) {
        self.fail_reads_with(&error);
        self.replica_reads.fail_all(error);
    }

    /// Fails every read not yet answered: this peer no longer leads.
    pub fn fail_reads(&mut self) {
        let (region_id, leader) = (self.region.id, self.leader());
        let store_id = self.meta.store_id;
        self.fail_reads_with(|| RaftstoreError::not_leader(region_id, leader.clone(), store_id));
    }

    fn fail_reads_with(&mut self, error: impl Fn() -> RaftstoreError) {
        let reads = std::mem::take(&mut self.reads);
        let all = reads
            .arrived
            .into_iter()
            .chain(reads.asked.into_iter().flat_map(|(_, b)| b))
            .chain(reads.confirmed.into_iter().flat_map(|c| c.batch));
        for cb in all {
            let _ = cb.send(Err(error()));
        }
        self.reads.next_id = reads.next_id;
    }

    /// NotLeader, naming the leader to retry at when this peer knows
    /// another (see [`RaftstoreError::not_leader`]).
    pub fn not_leader(&self) -> RaftstoreError {
        RaftstoreError::not_leader(self.region.id, self.leader(), self.meta.store_id)
    }

    /// A tick passed: proposals a deposed leader still waits for, past
    /// `limit` ticks since it stopped leading, fail (see `deposed_ticks`).
    pub fn wait_deposed_proposals(&mut self, limit: u64) {
        if self.is_leader() || self.proposals.is_empty() {
            self.deposed_ticks = 0;
            return;
        }
        self.deposed_ticks = self.deposed_ticks.saturating_add(1);
        if self.deposed_ticks > limit {
            tracing::debug!(
                region_id = self.region.id,
                "a deposed leader's proposals never applied here; failing them"
            );
            self.fail_proposals();
            self.deposed_ticks = 0;
        }
    }

    /// Fails every waiting proposal: their entries may be overwritten, or
    /// never applied here, and clients retry elsewhere.
    pub fn fail_proposals(&mut self) {
        let pending = std::mem::take(&mut self.pending).cbs;
        let waiting = self.proposals.drain(..).flat_map(|p| p.cbs);
        for cb in waiting.chain(pending) {
            let _ = cb.send(Err(RaftstoreError::StaleCommand));
        }
    }

    /// Applies committed entries into `batch`, with this region's applied
    /// index; [`Peer::finish_apply`] answers their proposers once the batch
    /// is written. Returns the new applied index.
    /// `others` are the store's other peers: a merge's target brings its
    /// source here up to date before it takes the source's range.
    pub fn apply(
        &mut self,
        batch: &mut ApplyBatch<'_>,
        applier: &dyn Applier,
        entries: Vec<Entry>,
        others: &mut HashMap<u64, Peer>,
    ) -> Result<u64> {
        if entries.is_empty() {
            return Ok(self.apply_state.applied_index);
        }
        let version = crate::region_version(&self.region);
        let kv = batch.engine();
        let mut ctx = batch.context(self.region.id, self.apply_state);
        let mut answers = std::mem::take(&mut self.answers_due);
        let mut applied_term = self.applied_term;
        for entry in entries {
            if self.pending_remove {
                // Removed by an entry just applied: what follows was
                // committed by peers that no longer count this one, and it
                // may not be able to apply it (a CommitMerge whose source
                // it no longer has). TiKV's apply stops here too.
                break;
            }
            if entry.index <= self.apply_state.applied_index {
                continue;
            }
            let output = match entry.get_entry_type() {
                // Empty entries mark a new leader's term.
                EntryType::EntryNormal if entry.data.is_empty() => None,
                EntryType::EntryNormal => {
                    Some(self.apply_normal(kv, &mut ctx, applier, &entry, others)?)
                }
                EntryType::EntryConfChange | EntryType::EntryConfChangeV2 => {
                    let out: ApplyOutput = Box::new(self.apply_conf_change(&mut ctx, &entry));
                    Some(vec![Ok(out)])
                }
            };
            ctx.finish_entry(entry.index);
            applied_term = entry.term;
            self.take_answer(entry.index, entry.term, output, &mut answers);
        }
        self.answers_due = answers;
        self.written.add(ctx.written());
        self.apply_state = ctx.state();
        self.applied_term = applied_term;
        batch.restore(ctx);
        if crate::region_version(&self.region) != version {
            // A cached snapshot now stands for an older range (found by
            // the chaos schedules with splits and membership changes,
            // seed 167: a new learner refused the stale one forever).
            self.raw_node.mut_store().forget_snapshot();
        }
        if self.urgent_index != 0 && self.apply_state.applied_index >= self.urgent_index {
            self.urgent_index = 0;
            self.raw_node.skip_bcast_commit(true);
        }
        Ok(self.apply_state.applied_index)
    }

    /// After the batch [`Peer::apply`] wrote into is written: drops the
    /// log a CompactLog truncated (the batch was synced), makes the applied
    /// index visible to readers, and answers the proposers.
    pub fn finish_apply(&mut self) {
        let truncated = (
            self.apply_state.truncated_index,
            self.apply_state.truncated_term,
        );
        if truncated.0 > self.raw_node.store().truncated_index {
            self.raw_node
                .mut_store()
                .compact_to(truncated.0, truncated.1);
        }
        if self.visible_applied < self.apply_state.applied_index {
            self.visible_applied = self.apply_state.applied_index;
            self.read_progress.applied_to(self.visible_applied);
        }
        for (cb, output) in self.answers_due.drain(..) {
            let _ = cb.send(output);
        }
    }

    /// Applies a normal entry: client commands or an admin command. An
    /// `Err` is an engine failure (this round stays unwritten and
    /// unanswered); the inner results are the proposers' answers, one per
    /// command, in order.
    fn apply_normal(
        &mut self,
        kv: &KvEngine,
        ctx: &mut ApplyContext<'_>,
        applier: &dyn Applier,
        entry: &Entry,
        others: &mut HashMap<u64, Peer>,
    ) -> Result<Vec<Result<ApplyOutput>>> {
        let current = self.region.region_epoch.clone().unwrap_or_default();
        let cmds = match admin::entry_kind(&entry.context) {
            Some(EntryKind::Command(epoch)) => (epoch.map(|e| e.version), vec![&entry.data[..]]),
            Some(EntryKind::Commands(epoch)) => match admin::decode_commands(&entry.data) {
                Some(cmds) => (Some(epoch.version), cmds),
                None => {
                    // Every replica skips it alike; its proposers hear
                    // that it was dropped.
                    warn!(
                        region_id = self.region.id,
                        index = entry.index,
                        "entry of commands that does not decode skipped"
                    );
                    return Ok(vec![]);
                }
            },
            Some(EntryKind::Admin(epoch)) => {
                if epoch != current {
                    return Ok(vec![Err(self.epoch_not_match())]);
                }
                // Admin commands read the engine (a split's tombstones, a
                // merge's source) and a merge's source writes its own
                // catch-up: what the round applied so far goes first.
                ctx.flush()?;
                let out: SplitOutput =
                    self.apply_admin(kv, ctx, applier, entry.index, &entry.data, others)?;
                return Ok(vec![Ok(Box::new(out))]);
            }
            None => {
                warn!(
                    region_id = self.region.id,
                    index = entry.index,
                    "entry of an unknown kind skipped"
                );
                return Ok(vec![Err(RaftstoreError::Split(
                    "unknown entry kind".into(),
                ))]);
            }
        };
        let (version, cmds) = cmds;
        if version.is_some_and(|v| v != current.version) {
            return Ok(cmds.iter().map(|_| Err(self.epoch_not_match())).collect());
        }
        let size = cmds.iter().map(|c| c.len() as u64).sum::<u64>();
        self.size_diff_hint = self.size_diff_hint.saturating_add(size);
        if cmds.len() > 1 {
            // No part of the entry may reach the engine before all of it
            // (see `apply.rs`).
            ctx.hold_writes();
        }
        let mut outputs = Vec::with_capacity(cmds.len());
        for cmd in cmds {
            outputs.push(Ok(applier.apply(ctx, cmd)?));
        }
        Ok(outputs)
    }

    /// Applies an admin command at `index`. An `Err` is an engine failure
    /// or a merge that cannot be completed here (the store must stop).
    fn apply_admin(
        &mut self,
        kv: &KvEngine,
        ctx: &mut ApplyContext<'_>,
        applier: &dyn Applier,
        index: u64,
        data: &[u8],
        others: &mut HashMap<u64, Peer>,
    ) -> Result<SplitOutput> {
        let req = match AdminRequest::decode(data) {
            Ok(req) => req,
            Err(e) => {
                return Ok(Err(RaftstoreError::Split(format!(
                    "undecodable admin command: {e}"
                ))))
            }
        };
        let cmd = AdminCmdType::try_from(req.cmd_type);
        Ok(match cmd {
            Ok(AdminCmdType::BatchSplit) if req.splits.is_some() => {
                self.apply_batch_split(kv, ctx, &req.splits.unwrap_or_default())
            }
            Ok(AdminCmdType::PrepareMerge) if req.prepare_merge.is_some() => {
                let prepare = req.prepare_merge.unwrap_or_default();
                self.apply_prepare_merge(ctx, index, prepare.min_index, prepare.target)
            }
            Ok(AdminCmdType::CommitMerge) if req.commit_merge.is_some() => {
                let commit = req.commit_merge.unwrap_or_default();
                return self.apply_commit_merge(kv, ctx, applier, commit, others);
            }
            Ok(AdminCmdType::RollbackMerge) if req.rollback_merge.is_some() => {
                self.apply_rollback_merge(ctx, req.rollback_merge.unwrap_or_default().commit)
            }
            Ok(AdminCmdType::CompactLog) if req.compact_log.is_some() => {
                let c = req.compact_log.unwrap_or_default();
                self.apply_compact_log(ctx, c.compact_index, c.compact_term)
            }
            _ => Err(RaftstoreError::Split(format!(
                "unsupported admin command {}",
                req.cmd_type
            ))),
        })
    }

    /// The source stops taking proposals (see `admin.rs`).
    fn apply_prepare_merge(
        &mut self,
        ctx: &mut ApplyContext<'_>,
        index: u64,
        min_index: u64,
        target: Option<metapb::Region>,
    ) -> SplitOutput {
        if self.merging.is_some() {
            return Err(RaftstoreError::Merge("a merge is already prepared".into()));
        }
        let target = target.ok_or_else(|| RaftstoreError::Merge("no target".into()))?;
        let epoch = self
            .region
            .region_epoch
            .get_or_insert_with(Default::default);
        epoch.version = epoch.version.saturating_add(1);
        epoch.conf_ver = epoch.conf_ver.saturating_add(1);
        let state = MergeState {
            min_index,
            commit: index,
            target,
        };
        ctx.put_region(&self.region);
        ctx.put_merge_state(&state);
        // Its target may take writes in its range from now on, which the
        // source's safe ts would not cover: no stale reads here until the
        // merge rolls back, as TiKV discards the source's read progress.
        self.read_progress.invalidate();
        info!(
            region_id = self.region.id,
            target = state.target.id,
            index,
            "merge prepared"
        );
        self.merging = Some(state);
        Ok(vec![self.region.clone()])
    }

    /// The target takes the source's range, once its store's source peer
    /// has applied everything up to the PrepareMerge (see `admin.rs`).
    fn apply_commit_merge(
        &mut self,
        kv: &KvEngine,
        ctx: &mut ApplyContext<'_>,
        applier: &dyn Applier,
        req: CommitMergeRequest,
        others: &mut HashMap<u64, Peer>,
    ) -> Result<SplitOutput> {
        if self.merging.is_some() {
            return Ok(Err(RaftstoreError::Merge(
                "the target is merging into another region".into(),
            )));
        }
        let source = req.source.clone().unwrap_or_default();
        let merged = match admin::merged_region(&self.region, &source) {
            Ok(merged) => merged,
            Err(why) => return Ok(Err(RaftstoreError::Merge(why))),
        };
        let peer_id = match others.remove(&source.id) {
            Some(mut src) if src.is_initialized() => {
                let caught_up = src.catch_up_for_merge(kv, applier, &req, others);
                let id = src.meta.id;
                let ready = src.merging.as_ref().is_some_and(|m| m.commit == req.commit);
                src.merged = true;
                others.insert(source.id, src);
                caught_up?;
                if !ready {
                    return Err(RaftstoreError::Merge(format!(
                        "source {} did not reach its PrepareMerge at {} here",
                        source.id, req.commit
                    )));
                }
                id
            }
            other => {
                if let Some(src) = other {
                    others.insert(source.id, src);
                }
                // Every store of the target holds an initialized source
                // peer (PrepareMerge needs every peer's log past the
                // compacted index, and a waiting source is destroyed only
                // once its target here is gone or past the merge). Taking
                // the range without the source's data would make this
                // replica diverge: the store stops instead, as TiKV does.
                return Err(RaftstoreError::Merge(format!(
                    "source {} of the CommitMerge at {} has no initialized peer here",
                    source.id, req.commit
                )));
            }
        };
        ctx.put_merged_source(&source, peer_id, crate::region_version(&merged));
        ctx.put_region(&merged);
        info!(
            region_id = self.region.id,
            source = source.id,
            "region merged"
        );
        self.region = merged;
        self.size_diff_hint = u64::MAX;
        self.approximate = None;
        Ok(Ok(vec![self.region.clone()]))
    }

    /// Applies this (source) peer's entries up to the PrepareMerge at
    /// `req.commit`: its own log's up to `min_index`, the carried ones
    /// after.
    fn catch_up_for_merge(
        &mut self,
        kv: &KvEngine,
        applier: &dyn Applier,
        req: &CommitMergeRequest,
        others: &mut HashMap<u64, Peer>,
    ) -> Result<()> {
        let applied = self.apply_state.applied_index;
        if applied >= req.commit {
            return Ok(());
        }
        let mut carried = HashMap::new();
        for bytes in &req.entries {
            let e = Entry::parse_from_bytes(bytes).map_err(|e| {
                RaftstoreError::Merge(format!("undecodable entry in a CommitMerge: {e}"))
            })?;
            carried.insert(e.index, e);
        }
        let mut entries = Vec::new();
        let mut first_carried = None;
        for index in applied.saturating_add(1)..=req.commit {
            match carried.remove(&index) {
                Some(e) => {
                    first_carried.get_or_insert(entries.len());
                    entries.push(e);
                }
                None => entries.extend(self.entries(index, index)?),
            }
        }
        // The carried entries go into this peer's log first, as TiKV
        // appends them: the write below records them applied, and an
        // applied index past the end of the log would stop raft-rs at
        // the next open (found by a crash at every write of a catch-up).
        // Only from the first carried entry this log lacks or holds in
        // another term (as raft-rs appends): the log may hold the same
        // entries and more past the commit (a newer source leader's), and
        // cutting those would leave the persisted commit index past the
        // log's end, which stops raft-rs at the next open.
        if let Some(i) = first_carried {
            let log = &self.raw_node.raft.raft_log;
            let differs = entries[i..]
                .iter()
                .position(|e| !log.match_term(e.index, e.term));
            if let Some(j) = differs {
                self.raw_node
                    .mut_store()
                    .append_durably(&entries[i + j..])?;
            }
        }
        info!(
            region_id = self.region.id,
            from = applied.saturating_add(1),
            to = req.commit,
            "source catches up for its merge"
        );
        // Its own write, before the target's: the target's batch is not
        // written until its round's end.
        let mut batch = ApplyBatch::new(kv);
        self.apply(&mut batch, applier, entries, others)?;
        batch.write()?;
        self.finish_apply();
        Ok(())
    }

    /// The source takes proposals again.
    fn apply_rollback_merge(&mut self, ctx: &mut ApplyContext<'_>, commit: u64) -> SplitOutput {
        if self.merging.as_ref().is_none_or(|m| m.commit != commit) {
            return Err(RaftstoreError::Merge(format!(
                "no merge prepared at {commit}"
            )));
        }
        let epoch = self
            .region
            .region_epoch
            .get_or_insert_with(Default::default);
        epoch.version = epoch.version.saturating_add(1);
        ctx.put_region(&self.region);
        ctx.delete_merge_state();
        self.merging = None;
        self.read_progress.resume();
        info!(region_id = self.region.id, "merge rolled back");
        Ok(vec![self.region.clone()])
    }

    /// Splits the region (see `admin.rs`): records every new region with
    /// an empty log, in this round's batch, and the parent's new range.
    fn apply_batch_split(
        &mut self,
        kv: &KvEngine,
        ctx: &mut ApplyContext<'_>,
        req: &BatchSplitRequest,
    ) -> SplitOutput {
        let regions = admin::split_regions(&self.region, req).map_err(RaftstoreError::Split)?;
        for region in &regions {
            if region.id == self.region.id {
                ctx.put_region(region);
                self.region = region.clone();
                continue;
            }
            let mine = region
                .peers
                .iter()
                .find(|p| p.store_id == self.meta.store_id);
            // A peer of the new region on this store was already removed
            // (its other peers moved on): it must not come back. With no
            // peer here at all (this store left the parent first), the
            // new region is not this store's either. Nor is it when a
            // newer peer of it is here already, made by a message while
            // this replica of the parent waited for its snapshot (the
            // split's peer was removed and the store added back): opened
            // over that peer's log, the split's peer would take its votes,
            // and lose them when the newer one replaced it (as TiKV skips
            // a split region a message already created).
            let removed = match (meta::load_tombstone(kv, region.id)?, mine) {
                (Some(last), Some(me)) if me.id <= last => true,
                (_, Some(me)) => {
                    meta::load_incarnation(kv, region.id)?.is_some_and(|id| id > me.id)
                }
                (_, None) => true,
            };
            if removed {
                info!(
                    region_id = region.id,
                    "split made a region whose peer here was removed"
                );
                // Its range holds the parent's data, which no region here
                // owns any more: it goes (after the round publishes the
                // narrower parent), as TiKV clears a skipped split region's
                // data. No other region here can hold part of that range:
                // the parent covered it until now.
                (self.ranges_to_clear).push((region.start_key.clone(), region.end_key.clone()));
                continue;
            }
            ctx.put_new_region(region);
            self.pending_splits.push(region.clone());
        }
        info!(
            region_id = self.region.id,
            regions = regions.len(),
            "region split"
        );
        // Both halves are checked again soon: their sizes changed.
        self.size_diff_hint = u64::MAX;
        self.approximate = None;
        Ok(regions)
    }

    /// Applies one membership change entry. A change raft-rs refuses is
    /// refused alike by every replica (same entry, same configuration), so
    /// it changes nothing and only its proposer hears why.
    fn apply_conf_change(&mut self, ctx: &mut ApplyContext<'_>, entry: &Entry) -> ConfChangeOutput {
        let cc = match entry.get_entry_type() {
            EntryType::EntryConfChange => ConfChange::parse_from_bytes(&entry.data).map(|v1| {
                let mut single = ConfChangeSingle::default();
                single.set_change_type(v1.get_change_type());
                single.node_id = v1.node_id;
                let mut cc = ConfChangeV2::default();
                cc.mut_changes().push(single);
                cc
            }),
            _ => ConfChangeV2::parse_from_bytes(&entry.data),
        }
        .map_err(|e| format!("undecodable membership change: {e}"))?;
        let changes = if cc.leave_joint() {
            vec![]
        } else {
            ChangePeerV2Request::decode(&entry.context[..])
                .map_err(|e| format!("undecodable membership change context: {e}"))?
                .changes
        };
        let named: Vec<u64> = changes
            .iter()
            .map(|c| c.peer.as_ref().map_or(0, |p| p.id))
            .collect();
        let ids: Vec<u64> = cc.get_changes().iter().map(|c| c.node_id).collect();
        if !cc.leave_joint() && named != ids {
            return Err("membership change context does not match its entry".into());
        }
        let mut region = self.region.clone();
        change_region_peers(&mut region, cc.enter_joint().is_some(), &changes);
        let conf_state = self
            .raw_node
            .apply_conf_change(&cc)
            .map_err(|e| format!("membership change refused: {e}"))?;
        self.raw_node.mut_store().conf_state = conf_state;
        let epoch = region.region_epoch.get_or_insert_with(Default::default);
        epoch.conf_ver += changes.len().max(1) as u64;
        ctx.put_region(&region);
        match region.peers.iter().find(|p| p.id == self.meta.id) {
            Some(me) => self.meta = me.clone(),
            None => {
                ctx.put_tombstone_mark(&region, self.meta.id);
                self.pending_remove = true;
            }
        }
        let removed = (self.region.peers.iter())
            .filter(|p| p.id != self.meta.id && !region.peers.iter().any(|q| q.id == p.id));
        self.removed_peers.extend(removed.map(|p| (p.clone(), 0)));
        self.region = region;
        Ok(self.region.clone())
    }

    /// Whether raft-rs counts `id` in the configuration (incoming,
    /// outgoing or learner): a removed peer it counts is not told it was
    /// removed.
    pub fn in_raft_config(&self, id: u64) -> bool {
        self.raw_node.raft.prs().get(id).is_some()
    }

    /// Replaces this peer's data and log with a received snapshot's. The
    /// snapshot is recorded as pending first, so a crash in the middle
    /// applies it again at restart ([`finish_snapshot`]).
    pub fn apply_snapshot(
        &mut self,
        kv: &KvEngine,
        snaps: &SnapManager,
        snap: &Snapshot,
    ) -> Result<()> {
        self.read_progress.invalidate();
        let mut wb = kv.write_batch();
        meta::put_pending_snapshot(&mut wb, self.region.id, &snap::encode_snapshot(snap));
        // A replica that missed a split takes a snapshot of a smaller
        // range: what it held outside that range belongs to the regions
        // the split made, none of which is here (one range, one region
        // per store), so it goes, as TiKV clears a snapshot's extra data.
        // Left, it lay here with no region to own it (found by the chaos
        // schedules with splits and membership changes, seed 276).
        if self.is_initialized() {
            let new = snap::decode_data(snap)?.region.unwrap_or_default();
            for (start, end) in outside(&self.region, &new) {
                for cf in tikal_engine::DATA_CFS {
                    wb.delete_range(cf, &start, &end);
                }
            }
        }
        kv.write(wb, true)?;
        let (region, state) = finish_snapshot(kv, snaps, self.region.id, snap)?;
        if let Some(me) = region.peers.iter().find(|p| p.id == self.meta.id) {
            self.meta = me.clone();
        }
        // No leader sends a snapshot while a merge is pending, so the
        // region it stands for is not merging (a merge this peer saw
        // prepared was rolled back meanwhile).
        self.merging = None;
        self.region = region;
        // Its data is the snapshot's now: measured again before reported.
        self.approximate = None;
        self.size_diff_hint = u64::MAX;
        self.apply_state = state;
        self.visible_applied = state.applied_index;
        self.applied_term = snap.get_metadata().term;
        self.read_progress.resume();
        self.read_progress.applied_to(state.applied_index);
        self.raw_node.mut_store().apply_snapshot(snap);
        Ok(())
    }

    /// Starts generating the snapshot raft-rs asked for, at the applied index.
    pub fn start_snapshot(&mut self, kv: &KvEngine, snaps: &SnapManager) -> Result<()> {
        let index = self.apply_state.applied_index;
        let term = raft::Storage::term(self.raw_node.store(), index).map_err(|e| {
            tikal_engine::EngineError::Corrupted {
                what: "raft log",
                detail: e.to_string(),
            }
        })?;
        let key = SnapKey {
            region_id: self.region.id,
            term,
            index,
        };
        snaps.remove_generated(self.region.id);
        let conf_state = self.raw_node.raft.prs().conf().to_conf_state();
        let generating = snaps.start_generate(kv, self.region.clone(), key, conf_state)?;
        *self.raw_node.store().snap_state.borrow_mut() = SnapState::Generating(generating);
        Ok(())
    }

    fn take_answer(
        &mut self,
        index: u64,
        term: u64,
        outputs: Option<Vec<Result<ApplyOutput>>>,
        answers: &mut Vec<(Callback, Result<ApplyOutput>)>,
    ) {
        let mut outputs = outputs;
        // By term, then index (as TiKV's proposal queue): a proposal of an
        // older term than the applied entry's can no longer commit, at any
        // index (a deposed leader's, or its own from before it led again).
        while let Some(front) = self.proposals.front() {
            if (front.term, front.index) > (term, index) {
                break;
            }
            let Some(p) = self.proposals.pop_front() else {
                break;
            };
            // Older proposals, or this index of another term: their
            // entries were overwritten. A command missing from its entry
            // (one that did not decode) was not applied either.
            let mut mine = outputs
                .take_if(|_| p.index == index && p.term == term)
                .unwrap_or_default()
                .into_iter();
            for cb in p.cbs {
                let out = mine.next().unwrap_or(Err(RaftstoreError::StaleCommand));
                answers.push((cb, out));
            }
        }
    }

    /// Log GC by the `[raftstore] raft-log-gc-*` rules, as TiKV does it: on
    /// the leader, proposes a CompactLog up to what every peer has (once
    /// that is `threshold` entries), or up to everything applied once the
    /// log exceeds the count or size limit (slow peers then catch up by
    /// snapshot). Every replica truncates when it applies the command
    /// (`apply_compact_log`); followers never decide on their own.
    pub fn compact_log(&mut self, gc: &LogGc) {
        if !self.is_leader()
            || self.merge_pending()
            || self.compact_proposed > self.apply_state.applied_index
        {
            // A CommitMerge carries entries from this log; a CompactLog
            // proposed earlier is not applied yet.
            return;
        }
        let applied = self.apply_state.applied_index;
        let first = self.apply_state.truncated_index.saturating_add(1);
        if applied < first {
            return;
        }
        let count = applied - first + 1;
        let over_limit =
            count >= gc.count_limit || self.raw_node.store().log_size() >= gc.size_limit;
        let replicated = self.slowest_matched().unwrap_or(applied).min(applied);
        let index = if over_limit {
            applied
        } else if replicated >= first && replicated - first + 1 >= gc.threshold {
            replicated
        } else {
            return;
        };
        let term = match raft::Storage::term(self.raw_node.store(), index) {
            Ok(term) => term,
            Err(e) => {
                warn!(region_id = self.region.id, index, error = %e, "no term for log GC");
                return;
            }
        };
        if let Ok(proposed) = self.propose_admin(None, admin::encode_compact_log(index, term)) {
            self.compact_proposed = proposed;
        }
    }

    /// Truncates the log up to `index` with this round's writes (see
    /// `compact_log`); the storage drops the entries once they are synced.
    /// A command at or below what is already truncated (a snapshot moved
    /// the log past it) changes nothing.
    fn apply_compact_log(
        &mut self,
        ctx: &mut ApplyContext<'_>,
        index: u64,
        term: u64,
    ) -> SplitOutput {
        let state = ctx.state();
        if index <= state.truncated_index {
            return Ok(vec![]);
        }
        if self.merging.is_some() {
            // The CommitMerge is built from this log's entries past the
            // merge's minimum index. A leader that did not know of the
            // merge yet (elected before it applied there) may have
            // proposed this; every replica skips it alike (as TiKV).
            info!(
                region_id = self.region.id,
                index, "log compaction skipped: a merge is prepared"
            );
            return Ok(vec![]);
        }
        if index > state.applied_index {
            return Err(RaftstoreError::Split(format!(
                "log compaction to {index} past the applied index {}",
                state.applied_index
            )));
        }
        match raft::Storage::term(self.raw_node.store(), index) {
            Ok(t) if t == term => {}
            found => {
                // Every replica's log agrees up to what it applied: a
                // mismatch is a corrupt command, kept from the storage.
                return Err(RaftstoreError::Split(format!(
                    "log compaction to {index} of term {term}, the log has {found:?}"
                )));
            }
        }
        ctx.truncate(index, term);
        Ok(vec![])
    }
}

/// The `[raftstore] raft-log-gc-*` thresholds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogGc {
    pub threshold: u64,
    pub count_limit: u64,
    pub size_limit: u64,
}

/// Applies a received snapshot's files and records the region and apply
/// state it stands for, clearing the pending mark. Run again after a crash
/// between the two (the files stay until it succeeds).
pub(crate) fn finish_snapshot(
    kv: &KvEngine,
    snaps: &SnapManager,
    region_id: u64,
    snap: &Snapshot,
) -> Result<(metapb::Region, ApplyState)> {
    let key = SnapKey::of(region_id, snap);
    let data = snap::decode_data(snap)?;
    let region = data.region.unwrap_or_default();
    snaps.apply(kv, key, snap)?;
    let state = ApplyState {
        applied_index: key.index,
        truncated_index: key.index,
        truncated_term: key.term,
    };
    let mut wb = kv.write_batch();
    meta::put_region(&mut wb, &region);
    meta::put_apply_state(&mut wb, region_id, &state);
    meta::delete_merge_state(&mut wb, region_id);
    meta::delete_pending_snapshot(&mut wb, region_id);
    kv.write(wb, true)?;
    // With it go older ones that arrived and were superseded before Raft
    // handed them over.
    snaps.remove(&snaps.recv_dir(key));
    snaps.remove_received_below(region_id, key.index);
    Ok((region, state))
}

/// The parts of `old`'s range that `new`'s does not cover, as
/// `[start, end)` pairs (an empty end: to the end of the key space).
pub(crate) fn outside(old: &metapb::Region, new: &metapb::Region) -> Vec<(Vec<u8>, Vec<u8>)> {
    let mut parts = vec![];
    if old.start_key < new.start_key {
        let end = if old.end_key.is_empty() || new.start_key < old.end_key {
            new.start_key.clone()
        } else {
            old.end_key.clone()
        };
        parts.push((old.start_key.clone(), end));
    }
    let new_ends_first =
        !new.end_key.is_empty() && (old.end_key.is_empty() || new.end_key < old.end_key);
    if new_ends_first {
        let start = new.end_key.clone().max(old.start_key.clone());
        parts.push((start, old.end_key.clone()));
    }
    parts
}

/// A client command (or an empty entry), not an admin command or a
/// membership change.
fn is_plain_command(e: &Entry) -> bool {
    e.get_entry_type() == EntryType::EntryNormal
        && !matches!(admin::entry_kind(&e.context), Some(EntryKind::Admin(_)))
}

/// The index a CompactLog entry truncates to; `None` for any other entry.
fn compact_log_index(e: &Entry) -> Option<u64> {
    if e.get_entry_type() != EntryType::EntryNormal
        || !matches!(admin::entry_kind(&e.context), Some(EntryKind::Admin(_)))
    {
        return None;
    }
    let req = AdminRequest::decode(&e.data[..]).ok()?;
    if req.cmd_type != AdminCmdType::CompactLog as i32 {
        return None;
    }
    Some(req.compact_log?.compact_index)
}

fn raft_change_type(t: ConfChangeType) -> raft::eraftpb::ConfChangeType {
    match t {
        ConfChangeType::AddNode => raft::eraftpb::ConfChangeType::AddNode,
        ConfChangeType::RemoveNode => raft::eraftpb::ConfChangeType::RemoveNode,
        ConfChangeType::AddLearnerNode => raft::eraftpb::ConfChangeType::AddLearnerNode,
    }
}

fn is_voter(role: i32) -> bool {
    role != PeerRole::Learner as i32
}

/// Why a membership change must be refused before it is proposed, if it
/// must: malformed peers, removing the leader (`me`: transfer leadership
/// first), removing a voter in a joint change (demote it first), a change
/// that names a peer twice or would leave no voter.
pub(crate) fn check_changes(
    region: &metapb::Region,
    me: u64,
    changes: &[ChangePeerRequest],
) -> std::result::Result<(), String> {
    if changes.is_empty() {
        return Err("no change requested".into());
    }
    let joint = changes.len() > 1;
    let mut seen = std::collections::HashSet::new();
    let mut after = region.clone();
    for c in changes {
        let Some(p) = c.peer.as_ref().filter(|p| p.id != 0 && p.store_id != 0) else {
            return Err("a change must name a peer with an id and a store".into());
        };
        if !seen.insert(p.id) {
            return Err(format!("peer {} is named twice", p.id));
        }
        let existing = region.peers.iter().find(|q| q.id == p.id);
        if region
            .peers
            .iter()
            .any(|q| q.store_id == p.store_id && q.id != p.id)
        {
            return Err(format!(
                "store {} already holds a peer of the region",
                p.store_id
            ));
        }
        match ConfChangeType::try_from(c.change_type) {
            Ok(ConfChangeType::RemoveNode) => {
                let Some(q) = existing else {
                    return Err(format!("peer {} is not in the region", p.id));
                };
                if q.id == me {
                    return Err("cannot remove the leader; transfer leadership first".into());
                }
                if joint && is_voter(q.role) {
                    return Err(format!("demote voter {} before removing it", q.id));
                }
            }
            Ok(ConfChangeType::AddLearnerNode) if p.id == me => {
                return Err("cannot demote the leader; transfer leadership first".into());
            }
            Ok(_) => {}
            Err(_) => return Err(format!("unknown change type {}", c.change_type)),
        }
    }
    // A joint configuration only matters to voters; several changes that
    // touch only learners are refused, as TiKV refuses them. (raft-rs
    // would enter a joint configuration of learners, which the region's
    // peer roles cannot record, so a replica restarted inside it could
    // not leave it and fell behind its peers' epoch.)
    let voter = |id: u64| {
        (region.peers.iter())
            .find(|q| q.id == id)
            .is_some_and(|q| is_voter(q.role))
    };
    let touches_voters = changes.iter().any(|c| {
        let id = c.peer.as_ref().map_or(0, |p| p.id);
        c.change_type == ConfChangeType::AddNode as i32 || voter(id)
    });
    if joint && !touches_voters {
        return Err("several changes that only touch learners; make them one by one".into());
    }
    change_region_peers(&mut after, joint, changes);
    if !after
        .peers
        .iter()
        .any(|p| p.role == PeerRole::Voter as i32 || p.role == PeerRole::IncomingVoter as i32)
    {
        return Err("the change would leave the region without voters".into());
    }
    Ok(())
}

/// The region's peers and roles after `changes`; `joint` marks entering a
/// joint configuration (voters come in as incoming, leave as demoting).
/// With no changes it leaves a joint configuration.
pub(crate) fn change_region_peers(
    region: &mut metapb::Region,
    joint: bool,
    changes: &[ChangePeerRequest],
) {
    if changes.is_empty() {
        for p in &mut region.peers {
            if p.role == PeerRole::IncomingVoter as i32 {
                p.role = PeerRole::Voter as i32;
            } else if p.role == PeerRole::DemotingVoter as i32 {
                p.role = PeerRole::Learner as i32;
            }
        }
        return;
    }
    for c in changes {
        let Some(peer) = c.peer.clone() else { continue };
        let at = region.peers.iter().position(|p| p.id == peer.id);
        match ConfChangeType::try_from(c.change_type) {
            Ok(ConfChangeType::AddNode) => {
                let role = if joint {
                    PeerRole::IncomingVoter
                } else {
                    PeerRole::Voter
                } as i32;
                match at {
                    Some(i) => region.peers[i].role = role,
                    None => region.peers.push(metapb::Peer { role, ..peer }),
                }
            }
            Ok(ConfChangeType::AddLearnerNode) => match at {
                Some(i) if joint && is_voter(region.peers[i].role) => {
                    region.peers[i].role = PeerRole::DemotingVoter as i32
                }
                Some(i) => region.peers[i].role = PeerRole::Learner as i32,
                None => region.peers.push(metapb::Peer {
                    role: PeerRole::Learner as i32,
                    ..peer
                }),
            },
            Ok(ConfChangeType::RemoveNode) => {
                if let Some(i) = at {
                    region.peers.remove(i);
                }
            }
            Err(_) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn region(start: &str, end: &str) -> metapb::Region {
        metapb::Region {
            start_key: start.as_bytes().to_vec(),
            end_key: end.as_bytes().to_vec(),
            ..Default::default()
        }
    }

    fn parts(old: (&str, &str), new: (&str, &str)) -> Vec<(String, String)> {
        outside(&region(old.0, old.1), &region(new.0, new.1))
            .into_iter()
            .map(|(s, e)| (String::from_utf8(s).unwrap(), String::from_utf8(e).unwrap()))
            .collect()
    }

    #[test]
    fn several_changes_must_touch_a_voter() {
        let peer = |id: u64, role: PeerRole| metapb::Peer {
            id,
            store_id: id,
            role: role as i32,
            ..Default::default()
        };
        let region = metapb::Region {
            peers: vec![
                peer(1, PeerRole::Voter),
                peer(2, PeerRole::Voter),
                peer(5, PeerRole::Learner),
            ],
            ..Default::default()
        };
        let change = |kind: ConfChangeType, id: u64| ChangePeerRequest {
            change_type: kind as i32,
            peer: Some(peer(id, PeerRole::Voter)),
        };
        let (add_learner, add, remove) = (
            ConfChangeType::AddLearnerNode,
            ConfChangeType::AddNode,
            ConfChangeType::RemoveNode,
        );
        let learners_only = [change(add_learner, 4), change(remove, 5)];
        let why = check_changes(&region, 1, &learners_only).unwrap_err();
        assert!(why.contains("only touch learners"), "{why}");
        // One at a time, each is fine; so is a pair that touches a voter.
        assert!(check_changes(&region, 1, &learners_only[..1]).is_ok());
        assert!(check_changes(&region, 1, &learners_only[1..]).is_ok());
        assert!(check_changes(&region, 1, &[change(add, 5), change(add_learner, 4)]).is_ok());
        assert!(check_changes(&region, 1, &[change(add_learner, 2), change(add, 5)]).is_ok());
    }

    #[test]
    fn a_snapshot_of_a_smaller_range_clears_what_the_old_range_held_outside_it() {
        let p = |s: &str, e: &str| (s.to_string(), e.to_string());
        // The region kept the right part of a split it missed.
        assert_eq!(parts(("b", "k"), ("f", "k")), [p("b", "f")]);
        // ... the left part, or the middle of the key space's end.
        assert_eq!(parts(("b", ""), ("b", "f")), [p("f", "")]);
        assert_eq!(parts(("", ""), ("c", "f")), [p("", "c"), p("f", "")]);
        // Moved right past its old end by later splits: all of it.
        assert_eq!(parts(("b", "d"), ("f", "k")), [p("b", "d")]);
        // A snapshot of the same or a larger range (after a merge) clears
        // nothing.
        assert!(parts(("c", "f"), ("c", "f")).is_empty());
        assert!(parts(("c", "f"), ("a", "")).is_empty());
    }
}
