//! One replica of one region: a raft-rs `RawNode` plus the proposals waiting
//! for their entries to be applied.

use std::collections::VecDeque;
use std::sync::Arc;

use raft::eraftpb::{Entry, EntryType};
use raft::{RawNode, StateRole};
use tikal_engine::{KvEngine, RaftLogEngine};
use tikal_proto::metapb;
use tokio::sync::oneshot;

use crate::apply::{Applier, ApplyContext, ApplyOutput};
use crate::meta::{self, ApplyState};
use crate::peer_storage::PeerStorage;
use crate::{RaftstoreError, Result};

pub(crate) type Callback = oneshot::Sender<Result<ApplyOutput>>;

struct Proposal {
    index: u64,
    term: u64,
    cb: Callback,
}

pub(crate) struct Peer {
    pub region: metapb::Region,
    pub meta: metapb::Peer,
    pub raw_node: RawNode<PeerStorage>,
    proposals: VecDeque<Proposal>,
    apply_state: ApplyState,
}

impl Peer {
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
        let mut peer = Peer {
            region,
            meta,
            raw_node,
            proposals: VecDeque::new(),
            apply_state,
        };
        // A region whose only voter is this peer needs no election timeout.
        let voters = &peer.raw_node.store().conf_state.voters;
        if voters.len() == 1 && voters[0] == peer.meta.id {
            let _ = peer.raw_node.campaign();
        }
        Ok(peer)
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

    pub fn term(&self) -> u64 {
        self.raw_node.raft.term
    }

    /// The leader as this peer knows it, if any.
    pub fn leader(&self) -> Option<metapb::Peer> {
        let id = self.raw_node.raft.leader_id;
        self.region.peers.iter().find(|p| p.id == id).cloned()
    }

    pub fn propose(&mut self, epoch: Option<metapb::RegionEpoch>, cmd: Vec<u8>, cb: Callback) {
        if !self.is_leader() {
            let _ = cb.send(Err(self.not_leader()));
            return;
        }
        if let Some(epoch) = epoch {
            let current = self.region.region_epoch.clone().unwrap_or_default();
            if epoch.version != current.version {
                let _ = cb.send(Err(RaftstoreError::EpochNotMatch(Box::new(
                    self.region.clone(),
                ))));
                return;
            }
        }
        if self.raw_node.propose(vec![], cmd).is_err() {
            let _ = cb.send(Err(self.not_leader()));
            return;
        }
        let index = self.raw_node.raft.raft_log.last_index();
        self.proposals.push_back(Proposal {
            index,
            term: self.term(),
            cb,
        });
    }

    pub fn not_leader(&self) -> RaftstoreError {
        RaftstoreError::NotLeader {
            region_id: self.region.id,
            leader: self.leader(),
        }
    }

    /// Fails every waiting proposal: after a leadership change their entries
    /// may be overwritten, and clients retry on the new leader.
    pub fn fail_proposals(&mut self) {
        for p in self.proposals.drain(..) {
            let _ = p.cb.send(Err(RaftstoreError::StaleCommand));
        }
    }

    /// Applies committed entries in one atomic batch, then answers their
    /// proposers. Returns the new applied index.
    pub fn apply(
        &mut self,
        kv: &KvEngine,
        applier: &dyn Applier,
        entries: Vec<Entry>,
    ) -> Result<u64> {
        if entries.is_empty() {
            return Ok(self.apply_state.applied_index);
        }
        let mut ctx = ApplyContext::new(kv, self.region.id, self.apply_state);
        let mut answers = Vec::with_capacity(entries.len());
        for entry in entries {
            if entry.index <= self.apply_state.applied_index {
                continue;
            }
            let output = match entry.get_entry_type() {
                // An error leaves this round unwritten and unanswered.
                EntryType::EntryNormal if !entry.data.is_empty() => {
                    Some(applier.apply(&mut ctx, &entry.data)?)
                }
                // Empty entries mark a new leader's term; membership changes
                // arrive with replication.
                _ => None,
            };
            ctx.finish_entry(entry.index);
            self.take_answer(entry.index, entry.term, output, &mut answers);
        }
        ctx.commit()?;
        self.apply_state = ctx.state();
        for (cb, output) in answers {
            let _ = cb.send(output);
        }
        Ok(self.apply_state.applied_index)
    }

    fn take_answer(
        &mut self,
        index: u64,
        term: u64,
        output: Option<ApplyOutput>,
        answers: &mut Vec<(Callback, Result<ApplyOutput>)>,
    ) {
        let mut output = output;
        while let Some(front) = self.proposals.front() {
            if front.index > index {
                break;
            }
            let Some(p) = self.proposals.pop_front() else {
                break;
            };
            let result = match output.take() {
                Some(out) if p.index == index && p.term == term => Ok(out),
                _ => Err(RaftstoreError::StaleCommand),
            };
            answers.push((p.cb, result));
        }
    }

    /// Drops log entries that are applied, keeping the log engine small.
    /// The truncation point is made durable before the entries go away.
    pub fn compact_log(&mut self, kv: &KvEngine, log: &RaftLogEngine, keep: u64) -> Result<()> {
        let applied = self.apply_state.applied_index;
        let first = self.raw_node.store().truncated_index + 1;
        if applied < first + keep * 2 {
            return Ok(());
        }
        let mut index = applied - keep;
        if self.is_leader() {
            // Until peers catch up by snapshot, keep what a follower lacks.
            let slowest = self
                .raw_node
                .raft
                .prs()
                .iter()
                .map(|(_, p)| p.matched)
                .min();
            index = index.min(slowest.unwrap_or(index));
            if index < first {
                return Ok(());
            }
        }
        let term = raft::Storage::term(self.raw_node.store(), index).map_err(|e| {
            tikal_engine::EngineError::Corrupted {
                what: "raft log",
                detail: e.to_string(),
            }
        })?;
        self.apply_state.truncated_index = index;
        self.apply_state.truncated_term = term;
        let mut wb = kv.write_batch();
        meta::put_apply_state(&mut wb, self.region.id, &self.apply_state);
        kv.write(wb, true)?;
        self.raw_node.mut_store().on_truncate(index, term);
        log.compact_to(self.region.id, index + 1);
        Ok(())
    }
}
