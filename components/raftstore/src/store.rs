//! The store: every peer on this store, driven as one state machine.
//!
//! [`Store`] takes inputs — a proposal, a Raft message from another store,
//! a tick of Raft's logical clock — and then, in [`Store::on_ready`], runs
//! one round of group commit across all peers:
//!
//! 1. messages a leader may send before persisting (appends) go to the
//!    [`Transport`] at once;
//! 2. every peer's new entries and hard state go to the Raft log engine in
//!    **one** fsynced write;
//! 3. messages that must follow persistence (votes, append acks) go out;
//! 4. committed entries are applied, one atomic KV batch per region, and
//!    their proposers answered.
//!
//! Nothing here reads a clock or a socket, so a test drives stores by hand
//! — ticks, deliveries, partitions — and gets the same run every time
//! (`testscripts/`). In a server, [`crate::Router`] runs the store on its
//! own thread with a real clock and channel.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::RwLock;
use raft::Ready;
use tikal_engine::{KvEngine, RaftLogEngine, RaftLogWrite};
use tikal_proto::metapb;
use tokio::sync::mpsc;
use tracing::{debug, info, warn};

use crate::apply::Applier;
use crate::meta;
use crate::peer::{Callback, Peer};
use crate::transport::{PeerMessage, Transport};
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
            min_election_ticks: 0,
            max_election_ticks: 0,
            heartbeat_ticks: 2,
            log_keep_entries: 10_000,
            max_batch: 4096,
            thread_nice: 0,
            write_bandwidth: 0,
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

/// Every peer on one store, and what the store publishes about them.
pub struct Store {
    store_id: u64,
    cfg: RaftstoreConfig,
    kv: KvEngine,
    log: Arc<RaftLogEngine>,
    applier: Arc<dyn Applier>,
    transport: Box<dyn Transport>,
    peers: HashMap<u64, Peer>,
    views: Arc<RwLock<HashMap<u64, RegionView>>>,
    events: mpsc::UnboundedSender<StoreEvent>,
    /// (is_leader, leader peer id, term, epoch) last published per region.
    published: HashMap<u64, (bool, u64, u64, metapb::RegionEpoch)>,
}

impl Store {
    /// Opens every region recorded in `kv` that has a peer on `store_id`.
    pub fn open(
        store_id: u64,
        cfg: RaftstoreConfig,
        kv: KvEngine,
        log: Arc<RaftLogEngine>,
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
        let mut store = Store {
            store_id,
            cfg,
            kv,
            log,
            applier,
            transport,
            peers,
            views: Arc::new(RwLock::new(HashMap::new())),
            events,
            published: HashMap::new(),
        };
        store.publish_all();
        Ok(store)
    }

    pub fn store_id(&self) -> u64 {
        self.store_id
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
        epoch: Option<metapb::RegionEpoch>,
        cmd: Vec<u8>,
        cb: Callback,
    ) {
        match self.peers.get_mut(&region_id) {
            Some(peer) => peer.propose(epoch, cmd, cb),
            None => {
                let _ = cb.send(Err(RaftstoreError::RegionNotFound(region_id)));
            }
        }
    }

    /// Hands a Raft message from another store to its peer. A message for
    /// another peer id than ours, or for a region we do not have, is
    /// dropped: its sender retries.
    pub fn step(&mut self, msg: PeerMessage) {
        let Some(peer) = self.peers.get_mut(&msg.region_id) else {
            debug!(
                region_id = msg.region_id,
                "message for an unknown region dropped"
            );
            return;
        };
        if msg.to.id != peer.meta.id || msg.to.store_id != self.store_id {
            debug!(
                region_id = msg.region_id,
                to = msg.to.id,
                "message for another peer dropped"
            );
            return;
        }
        if let Err(e) = peer.raw_node.step(msg.message) {
            debug!(region_id = msg.region_id, error = %e, "raft message rejected");
        }
    }

    /// One tick of every peer's Raft clock.
    pub fn tick(&mut self) {
        for peer in self.peers.values_mut() {
            peer.raw_node.tick();
        }
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
    pub fn transfer_leader(&mut self, region_id: u64, to: u64) -> Result<()> {
        let peer = self
            .peers
            .get_mut(&region_id)
            .ok_or(RaftstoreError::RegionNotFound(region_id))?;
        if !peer.is_leader() {
            return Err(peer.not_leader());
        }
        peer.raw_node.transfer_leader(to);
        Ok(())
    }

    /// Fails every waiting proposal: the store is stopping.
    pub fn shutdown(&mut self) {
        for peer in self.peers.values_mut() {
            peer.fail_proposals();
        }
    }

    fn send(transport: &mut dyn Transport, peer: &Peer, messages: Vec<raft::eraftpb::Message>) {
        for m in messages {
            let Some(to) = peer.region.peers.iter().find(|p| p.id == m.to).cloned() else {
                debug!(
                    region_id = peer.region.id,
                    to = m.to,
                    "message to a peer not in the region dropped"
                );
                continue;
            };
            transport.send(PeerMessage {
                region_id: peer.region.id,
                from: peer.meta.clone(),
                to,
                epoch: peer.region.region_epoch.clone().unwrap_or_default(),
                message: m,
            });
        }
    }

    /// One round of group commit across all peers; see the module docs.
    /// An error means an engine failed: the store must stop.
    pub fn on_ready(&mut self) -> Result<()> {
        let mut write = RaftLogWrite::default();
        let mut readies: Vec<(u64, Ready)> = vec![];
        for (id, peer) in self.peers.iter_mut() {
            if !peer.is_leader() {
                // Deposed (by a message or a tick since the last round):
                // its proposals may never commit; clients retry elsewhere.
                peer.fail_proposals();
            }
            if !peer.raw_node.has_ready() {
                continue;
            }
            let mut rd = peer.raw_node.ready();
            // A leader's appends go out while it persists them itself.
            Self::send(self.transport.as_mut(), peer, rd.take_messages());
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
        for (id, mut rd) in readies {
            let Some(peer) = self.peers.get_mut(&id) else {
                continue;
            };
            // Votes and append acks promise what is now durable.
            Self::send(self.transport.as_mut(), peer, rd.take_persisted_messages());
            let mut light = peer.raw_node.advance(rd);
            if let Some(commit) = light.commit_index() {
                let store = peer.raw_node.mut_store();
                store.hard_state.commit = commit;
                commit_write.set_hard_state(id, &store.hard_state)?;
            }
            Self::send(self.transport.as_mut(), peer, light.take_messages());
            let committed = light.take_committed_entries();
            let applied = peer.apply(&self.kv, self.applier.as_ref(), committed)?;
            peer.raw_node.advance_apply();
            peer.raw_node.mut_store().compact_cache(applied);
        }
        self.transport.flush();
        // The commit index is a hint that saves replay work after restart;
        // it need not be synced (entries themselves already are).
        self.log.write(&mut commit_write, false)?;
        self.publish_all();
        Ok(())
    }

    /// Publishes the views of regions whose leadership, term or epoch
    /// changed, and reports them as events.
    pub fn publish_all(&mut self) {
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

    /// Drops applied log entries no follower still needs.
    pub fn compact_logs(&mut self) {
        for peer in self.peers.values_mut() {
            if let Err(e) = peer.compact_log(&self.kv, &self.log, self.cfg.log_keep_entries) {
                warn!(region_id = peer.region_id(), error = %e, "log compaction failed");
            }
        }
        if let Err(e) = self.log.purge() {
            warn!(error = %e, "raft log purge failed");
        }
    }

    /// The state of this store's peer of a region, for tests and status.
    pub fn peer_status(&self, region_id: u64) -> Option<PeerStatus> {
        let peer = self.peers.get(&region_id)?;
        let raft = &peer.raw_node.raft;
        Some(PeerStatus {
            role: format!("{:?}", raft.state),
            term: raft.term,
            leader_id: raft.leader_id,
            commit: raft.raft_log.committed,
            applied: peer.applied_index(),
            last_index: raft.raft_log.last_index(),
        })
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
    pub last_index: u64,
}
