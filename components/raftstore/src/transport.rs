//! How a store's peers reach the peers of their regions on other stores.
//!
//! The store loop never touches the network: each round it hands every
//! outgoing Raft message to a [`Transport`], which must not block (a slow or
//! dead store must not stall the loop). A transport may drop a message it
//! cannot send; Raft retransmits. In a server the transport is gRPC
//! (`tikvpb.Tikv/Raft` streams, batched per store); in protocol tests it is a
//! simulated network that delivers, drops and partitions as the test says.

use std::sync::Arc;

use tikal_proto::metapb;

use crate::disk::{DiskState, DiskUsage};
use crate::snap::{SnapKey, SnapManager};

/// One Raft message between two peers of a region, with what the receiving
/// store needs to check it (as `raft_serverpb.RaftMessage` carries it).
#[derive(Debug, Clone)]
pub struct PeerMessage {
    pub region_id: u64,
    pub from: metapb::Peer,
    pub to: metapb::Peer,
    pub epoch: metapb::RegionEpoch,
    pub message: raft::eraftpb::Message,
    /// Tells `to` that the region no longer has it: a peer removed while it
    /// was away learns so from the region's other peers and destroys itself.
    /// `message` is then empty.
    pub is_tombstone: bool,
    /// Tells `to`, the region's leader, that `from` found the merge
    /// prepared at this index unable to commit (the target's peer on
    /// `from`'s store changed or is gone): a quorum of such votes rolls the
    /// merge back. `message` is then empty.
    pub want_rollback_merge: Option<u64>,
    /// With `is_tombstone`: the region merged into this one on the
    /// sender's store, so no peer of it is left anywhere (the sender's
    /// peer was forgotten when its store applied the CommitMerge).
    pub merged_into: Option<u64>,
    /// With `merged_into`: the target's epoch version once it took the
    /// region in (0: unknown, a mark from before it was recorded). A
    /// snapshot of the target at this version or later holds the region's
    /// data.
    pub merged_version: u64,
    /// Asks `to` whether `from` is still a member of the region: sent by a
    /// peer that has known no leader for `max-leader-missing-duration` to
    /// the region's other peers (as TiKV's check-stale-peer message). One
    /// that knows `from` was removed answers with a tombstone; otherwise
    /// nothing. `message` is then empty.
    pub check_stale: bool,
    /// The sender's region range: a store that has no peer of the region
    /// yet creates one only if no region it holds overlaps it (else the
    /// range is still its own region's, which will split off this one).
    pub start_key: Vec<u8>,
    pub end_key: Vec<u8>,
    /// How full the sender's disk is; the store loop stamps it on each
    /// message it sends.
    pub disk_usage: DiskUsage,
}

impl PeerMessage {
    /// A message from `from` to `to` about their region that carries no
    /// Raft message: the caller sets its note (a tombstone, a vote).
    pub fn note(
        region_id: u64,
        from: metapb::Peer,
        to: metapb::Peer,
        epoch: metapb::RegionEpoch,
    ) -> PeerMessage {
        PeerMessage {
            region_id,
            from,
            to,
            epoch,
            message: Default::default(),
            is_tombstone: false,
            want_rollback_merge: None,
            merged_into: None,
            merged_version: 0,
            check_stale: false,
            start_key: vec![],
            end_key: vec![],
            disk_usage: DiskUsage::Normal,
        }
    }

    /// It carries a note for the receiving store rather than a Raft message.
    pub fn is_note(&self) -> bool {
        self.is_tombstone || self.want_rollback_merge.is_some() || self.check_stale
    }
}

/// Carries a store's outgoing Raft messages.
pub trait Transport: Send + 'static {
    /// Queues `msg` for `msg.to.store_id`; never blocks.
    fn send(&mut self, msg: PeerMessage);

    /// Ends a round: a batching transport sends what it queued.
    fn flush(&mut self) {}
}

/// Drops every message: a store whose regions have one voter needs none.
pub struct NoTransport;

impl Transport for NoTransport {
    fn send(&mut self, _: PeerMessage) {}
}

/// Stamps the store's disk usage on every message it sends, and notes
/// each snapshot handed over until its send is reported (a store loop's
/// transport, whichever carries the messages; every transport reports
/// each snapshot it was given, sent or not).
pub(crate) struct Stamped {
    pub inner: Box<dyn Transport>,
    pub disk: DiskState,
    pub snaps: Arc<SnapManager>,
}

impl Transport for Stamped {
    fn send(&mut self, mut msg: PeerMessage) {
        msg.disk_usage = self.disk.get();
        if msg.message.get_msg_type() == raft::eraftpb::MessageType::MsgSnapshot {
            let key = SnapKey::of(msg.region_id, msg.message.get_snapshot());
            self.snaps.begin_send(key, msg.to.id);
        }
        self.inner.send(msg);
    }

    fn flush(&mut self) {
        self.inner.flush();
    }
}
