//! Raft between stores over gRPC, both ways.
//!
//! Sending ([`GrpcTransport`], the raftstore's [`Transport`]): every
//! destination store has a bounded queue of `BatchRaftMessage`s (one per
//! store loop round) that is the body of a `tikvpb.Tikv/BatchRaft` stream,
//! and one task that resolves the store's address from PD and keeps that
//! stream open. The store loop only ever `try_send`s: when a store is slow
//! or gone its queue fills and further messages are dropped (Raft
//! retransmits), and the task reconnects with backoff. A snapshot message goes on its own `Snapshot` stream: the
//! message first, then its files in 1 MiB chunks read from disk as they are
//! sent; the leader hears whether it arrived.
//!
//! Receiving ([`RaftIntake`]): `Raft` and `BatchRaft` messages go straight
//! to the store loop (one for another store ends its stream, so the sender
//! resolves the address again); a `Snapshot` stream is written to the snapshot
//! directory (sizes and checksums checked) and its message handed to the
//! loop only once every file is whole; one silent for a minute is given up
//! and its partial files removed. A message that does not decode is
//! dropped and logged; the stream goes on.

use std::collections::HashMap;
use std::io::Read;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock, Weak};
use std::time::Duration;

use anyhow::{anyhow, Context as _};
use protobuf::Message as _;
use raft::eraftpb::MessageType;
use tikal_proto::codec::status;
use tikal_proto::raft_serverpb::{
    Done, ExtraMessage, ExtraMessageType, RaftMessage, SnapshotChunk,
};
use tikal_proto::tikvpb::tikv_client::TikvClient;
use tikal_proto::tikvpb::BatchRaftMessage;
use tikal_raftstore::{PeerMessage, Router, SnapKey, SnapManager, Transport};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::StreamExt;
use tonic::transport::Channel;
use tonic::{Code, Status, Streaming};
use tracing::{debug, info, warn};

use crate::pd_client::PdClient;

/// Rounds of messages queued per destination store before new ones are
/// dropped.
const QUEUE_CAPACITY: usize = 1024;
/// Bytes queued per destination store before new messages are dropped
/// (a dead store must not pin memory; Raft resends what is lost).
const QUEUE_BYTES: usize = 64 << 20;
/// Largest `BatchRaftMessage` sent, unless one message is larger (TiKV's
/// `max-grpc-send-msg-len` is 10 MiB); a store takes up to 64 MiB.
const BATCH_BYTES: usize = 10 << 20;
const SNAPSHOT_CHUNK: usize = 1 << 20;
const MAX_BACKOFF: Duration = Duration::from_secs(2);
/// How long a stream must have lived for its break to reset the backoff.
const STREAM_SETTLED: Duration = Duration::from_secs(10);
/// Longest a snapshot send may take, at the least (a 1 GiB region at
/// ~10 MB/s fits); a larger snapshot gets a second for each MiB, so a slow
/// link still carries a large region rather than restarting it for good.
const SNAPSHOT_SEND_TIMEOUT: Duration = Duration::from_secs(600);

/// How long sending `msg`'s snapshot may take: [`SNAPSHOT_SEND_TIMEOUT`],
/// or a second per MiB of its files if that is longer.
fn snapshot_send_timeout(msg: &PeerMessage) -> Duration {
    let bytes: u64 = tikal_raftstore::decode_snapshot_data(msg.message.get_snapshot())
        .map(|data| {
            (data.meta.iter().flat_map(|m| &m.cf_files))
                .map(|f| f.size)
                .sum()
        })
        .unwrap_or(0);
    SNAPSHOT_SEND_TIMEOUT.max(Duration::from_secs(bytes >> 20))
}
/// Longest a snapshot stream may stay silent before its receiver gives it
/// up: a sender that vanished without closing its connection must not
/// leave the store counting a snapshot received, nor its files half
/// written, until restart.
const SNAPSHOT_CHUNK_IDLE: Duration = Duration::from_secs(60);

/// The wire form of a raftstore message.
pub fn to_wire(msg: &PeerMessage) -> RaftMessage {
    RaftMessage {
        region_id: msg.region_id,
        from_peer: Some(msg.from.clone()),
        to_peer: Some(msg.to.clone()),
        message: msg.message.write_to_bytes().unwrap_or_default(),
        region_epoch: Some(msg.epoch.clone()),
        is_tombstone: msg.is_tombstone,
        start_key: msg.start_key.clone(),
        end_key: msg.end_key.clone(),
        merge_target: msg.merged_into.map(|id| tikal_proto::metapb::Region {
            id,
            region_epoch: Some(tikal_proto::metapb::RegionEpoch {
                version: msg.merged_version,
                conf_ver: 0,
            }),
            ..Default::default()
        }),
        extra_msg: match (msg.want_rollback_merge, msg.check_stale) {
            (Some(index), _) => Some(ExtraMessage {
                r#type: ExtraMessageType::MsgWantRollbackMerge as i32,
                index,
            }),
            (None, true) => Some(ExtraMessage {
                r#type: ExtraMessageType::MsgCheckStalePeer as i32,
                index: 0,
            }),
            (None, false) => None,
        },
        disk_usage: msg.disk_usage as i32,
    }
}

/// A raftstore message from the wire; an error names what is missing.
pub fn from_wire(m: RaftMessage) -> Result<PeerMessage, String> {
    let message = raft::eraftpb::Message::parse_from_bytes(&m.message)
        .map_err(|e| format!("undecodable raft message: {e}"))?;
    let disk_usage = m.disk_usage();
    let (Some(from), Some(to)) = (m.from_peer, m.to_peer) else {
        return Err("raft message without from_peer or to_peer".into());
    };
    Ok(PeerMessage {
        region_id: m.region_id,
        from,
        to,
        epoch: m.region_epoch.unwrap_or_default(),
        message,
        is_tombstone: m.is_tombstone,
        start_key: m.start_key,
        end_key: m.end_key,
        want_rollback_merge: (m.extra_msg.as_ref())
            .filter(|x| x.r#type == ExtraMessageType::MsgWantRollbackMerge as i32)
            .map(|x| x.index),
        check_stale: (m.extra_msg.as_ref())
            .is_some_and(|x| x.r#type == ExtraMessageType::MsgCheckStalePeer as i32),
        merged_version: (m.merge_target.as_ref())
            .and_then(|r| r.region_epoch.as_ref())
            .map_or(0, |e| e.version),
        disk_usage,
        merged_into: m.merge_target.map(|r| r.id),
    })
}

struct Shared {
    pd: PdClient,
    snaps: Arc<SnapManager>,
    /// Set once the store loop runs (the transport is built before it).
    router: OnceLock<Router>,
    runtime: tokio::runtime::Handle,
    dropped: AtomicU64,
}

/// Sends a store's Raft messages to other stores over gRPC.
pub struct GrpcTransport {
    shared: Arc<Shared>,
    queues: HashMap<u64, Queue>,
    /// This round's messages per destination store, handed over at flush:
    /// one queue operation (and one wake-up) per store and round.
    round: HashMap<u64, Vec<RaftMessage>>,
}

/// One destination store's queue and the bytes waiting in it. The queue
/// is the body of the `BatchRaft` stream itself: the store loop's batch
/// goes straight to the gRPC connection, with no task in between.
struct Queue {
    /// Swapped for a new queue's sender on each reconnect.
    tx: Arc<parking_lot::Mutex<mpsc::Sender<BatchRaftMessage>>>,
    bytes: Arc<AtomicUsize>,
    /// Set by the connection task when it ends for good (the store is a
    /// Tombstone). Not inferred from a closed channel: while a broken
    /// stream's queue is replaced, the old one is briefly closed.
    removed: Arc<std::sync::atomic::AtomicBool>,
    /// When losses here were last reported to the store loop (which then
    /// walks every peer): a store whose queue stays full loses messages
    /// every round, and one report a second is enough to keep its peers
    /// probing.
    reported: Option<std::time::Instant>,
}

/// Completes a [`GrpcTransport`] once the store loop it serves runs.
#[derive(Clone)]
pub struct TransportHandle(Arc<Shared>);

impl TransportHandle {
    pub fn set_router(&self, router: Router) {
        let _ = self.0.router.set(router);
    }

    /// Messages dropped because a destination's queue was full.
    pub fn dropped(&self) -> u64 {
        self.0.dropped.load(Ordering::Relaxed)
    }
}

impl GrpcTransport {
    pub fn new(pd: PdClient, snaps: Arc<SnapManager>) -> (GrpcTransport, TransportHandle) {
        let shared = Arc::new(Shared {
            pd,
            snaps,
            router: OnceLock::new(),
            runtime: tokio::runtime::Handle::current(),
            dropped: AtomicU64::new(0),
        });
        let t = GrpcTransport {
            shared: shared.clone(),
            queues: HashMap::new(),
            round: HashMap::new(),
        };
        (t, TransportHandle(shared))
    }
}

impl Transport for GrpcTransport {
    fn send(&mut self, msg: PeerMessage) {
        if msg.message.get_msg_type() == MessageType::MsgSnapshot {
            let shared = self.shared.clone();
            self.shared.runtime.spawn(send_snapshot(shared, msg));
            return;
        }
        self.round
            .entry(msg.to.store_id)
            .or_default()
            .push(to_wire(&msg));
    }

    fn flush(&mut self) {
        for (store_id, msgs) in self.round.drain() {
            if msgs.is_empty() {
                continue;
            }
            let queue = self.queues.entry(store_id).or_insert_with(|| {
                let (tx, rx) = mpsc::channel(QUEUE_CAPACITY);
                let tx = Arc::new(parking_lot::Mutex::new(tx));
                let bytes = Arc::new(AtomicUsize::new(0));
                let removed = Arc::new(std::sync::atomic::AtomicBool::new(false));
                let shared = self.shared.clone();
                let slot = Arc::downgrade(&tx);
                let task = connection(shared, store_id, slot, rx, bytes.clone(), removed.clone());
                self.shared.runtime.spawn(task);
                Queue {
                    tx,
                    bytes,
                    removed,
                    reported: None,
                }
            });
            if queue.removed.load(Ordering::Relaxed) {
                // A store PD has made Tombstone: its peers are gone.
                self.shared
                    .dropped
                    .fetch_add(msgs.len() as u64, Ordering::Relaxed);
                continue;
            }
            let mut lost = false;
            for (msgs, size) in split_batch(msgs, BATCH_BYTES) {
                let n = msgs.len() as u64;
                let queued = queue.bytes.load(Ordering::Relaxed);
                // An empty queue takes any one batch, however large: a
                // batch past the bound would otherwise never go at all.
                let full = queued > 0 && queued.saturating_add(size) > QUEUE_BYTES;
                let sent = !full && queue.tx.lock().try_send(BatchRaftMessage { msgs }).is_ok();
                if sent {
                    queue.bytes.fetch_add(size, Ordering::Relaxed);
                } else {
                    self.shared.dropped.fetch_add(n, Ordering::Relaxed);
                    lost = true;
                }
            }
            if lost && (queue.reported).is_none_or(|at| at.elapsed() >= Duration::from_secs(1)) {
                queue.reported = Some(std::time::Instant::now());
                if let Some(router) = self.shared.router.get() {
                    router.report_store_unreachable(store_id);
                }
            }
        }
    }
}

/// Cuts a round's messages for one store into batches of at most `cap`
/// encoded bytes each (a message larger than `cap` goes alone), in order,
/// with each batch's size: as TiKV cuts a batch at its gRPC message limit,
/// so that a follower catching up, sent a window of large appends in one
/// round, gets them in several batches rather than none.
fn split_batch(msgs: Vec<RaftMessage>, cap: usize) -> Vec<(Vec<RaftMessage>, usize)> {
    let mut out: Vec<(Vec<RaftMessage>, usize)> = Vec::new();
    for m in msgs {
        let size = prost::Message::encoded_len(&m);
        match out.last_mut() {
            Some((batch, bytes)) if bytes.saturating_add(size) <= cap => {
                batch.push(m);
                *bytes += size;
            }
            _ => out.push((vec![m], size)),
        }
    }
    out
}

/// Connects to a store by the address PD has for it.
pub(crate) async fn connect(pd: &PdClient, store_id: u64) -> anyhow::Result<TikvClient<Channel>> {
    let store = pd.get_store(store_id).await?;
    if store.state == tikal_proto::metapb::StoreState::Tombstone as i32 {
        return Err(anyhow::Error::new(StoreRemoved(store_id)));
    }
    let addr = if store.peer_address.is_empty() {
        store.address
    } else {
        store.peer_address
    };
    if addr.is_empty() {
        return Err(anyhow!("PD has no address for store {store_id}"));
    }
    let channel = crate::pd_client::connect(format!("http://{addr}"))
        .await
        .with_context(|| format!("connecting to store {store_id} at {addr}"))?;
    Ok(TikvClient::new(channel)
        .max_decoding_message_size(usize::MAX)
        .max_encoding_message_size(usize::MAX))
}

/// PD has made the store a Tombstone: nothing is sent to it again, as
/// TiKV's resolver answers "store has been removed".
#[derive(Debug, thiserror::Error)]
#[error("store {0} has been removed")]
pub(crate) struct StoreRemoved(u64);

/// Bytes of a batch's messages, as the queue bounds count them.
fn batch_bytes(msgs: &[RaftMessage]) -> usize {
    msgs.iter().map(prost::Message::encoded_len).sum()
}

/// Keeps a `BatchRaft` stream to one store open while the transport
/// lives: the queue's receiver is the stream's body. What is queued before
/// the first connection waits for it; when a stream breaks, what it had
/// not sent is dropped (Raft resends), the transport gets a new queue, and
/// the task reconnects with backoff. Ends when the transport (`slot`'s
/// owner) is gone.
async fn connection(
    shared: Arc<Shared>,
    store_id: u64,
    slot: Weak<parking_lot::Mutex<mpsc::Sender<BatchRaftMessage>>>,
    mut rx: mpsc::Receiver<BatchRaftMessage>,
    queued: Arc<AtomicUsize>,
    removed: Arc<std::sync::atomic::AtomicBool>,
) {
    let mut backoff = Duration::from_millis(100);
    loop {
        if slot.strong_count() == 0 {
            return;
        }
        let mut client = match connect(&shared.pd, store_id).await {
            Ok(c) => c,
            Err(e) if e.is::<StoreRemoved>() => {
                // What is queued goes with the receiver; sends fail at once.
                info!(store_id, "store removed; no more raft messages to it");
                removed.store(true, Ordering::Relaxed);
                return;
            }
            Err(e) => {
                debug!(store_id, error = %e, "raft connection failed; retrying");
                if let Some(router) = shared.router.get() {
                    router.report_store_unreachable(store_id);
                }
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(MAX_BACKOFF);
                continue;
            }
        };
        info!(store_id, "raft connection open");
        let opened = tokio::time::Instant::now();
        let (next_tx, next_rx) = mpsc::channel(QUEUE_CAPACITY);
        let taken = queued.clone();
        let body = futures::stream::unfold(std::mem::replace(&mut rx, next_rx), move |mut rx| {
            let taken = taken.clone();
            async move {
                let batch = rx.recv().await?;
                // Taken off the queue: no longer counted against its bound.
                let size = batch_bytes(&batch.msgs);
                let _ = taken.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |q| {
                    Some(q.saturating_sub(size))
                });
                Some((batch, rx))
            }
        });
        match client.batch_raft(body).await {
            Err(e) => debug!(store_id, error = %e, "raft stream broke; reconnecting"),
            Ok(_) => debug!(store_id, "raft stream ended"),
        }
        let Some(slot) = slot.upgrade() else {
            return;
        };
        // The broken stream's queue is gone with what it held.
        *slot.lock() = next_tx;
        queued.store(0, Ordering::Relaxed);
        drop(slot);
        if let Some(router) = shared.router.get() {
            router.report_store_unreachable(store_id);
        }
        // A stream that lived a while starts the backoff over; one that
        // breaks at once (a store that answers "store not match", say)
        // waits longer each time rather than reconnecting ten times a
        // second.
        backoff = if opened.elapsed() >= STREAM_SETTLED {
            Duration::from_millis(100)
        } else {
            (backoff * 2).min(MAX_BACKOFF)
        };
        tokio::time::sleep(backoff).await;
    }
}

/// Streams a snapshot's message and files to its peer's store, then tells
/// the leader whether it arrived.
async fn send_snapshot(shared: Arc<Shared>, msg: PeerMessage) {
    let (region_id, to) = (msg.region_id, msg.to.id);
    let Some(_busy) = shared.snaps.try_sending() else {
        // Raft sends it again once the peer is probed anew.
        warn!(
            region_id,
            to, "too many snapshots being sent; this one fails"
        );
        if let Some(router) = shared.router.get() {
            router.report_snapshot(region_id, to, false);
        }
        return;
    };
    // Until it hears, the leader sends that peer nothing else: a send that
    // hangs must end as a failure, and the leader then tries again.
    let timeout = snapshot_send_timeout(&msg);
    let sent = tokio::time::timeout(timeout, stream_snapshot(&shared, msg)).await;
    let delivered = match sent {
        Ok(Ok(())) => true,
        Ok(Err(e)) => {
            warn!(region_id, to, error = %e, "sending snapshot failed");
            false
        }
        Err(_) => {
            warn!(region_id, to, "sending snapshot timed out");
            false
        }
    };
    if let Some(router) = shared.router.get() {
        router.report_snapshot(region_id, to, delivered);
    }
}

async fn stream_snapshot(shared: &Shared, msg: PeerMessage) -> anyhow::Result<()> {
    let snap = msg.message.get_snapshot();
    let key = SnapKey::of(msg.region_id, snap);
    let data = tikal_raftstore::decode_snapshot_data(snap)?;
    let files = shared.snaps.files(key, &data);
    let mut client = connect(&shared.pd, msg.to.store_id).await?;
    let (tx, rx) = mpsc::channel::<SnapshotChunk>(4);
    let first = SnapshotChunk {
        message: Some(to_wire(&msg)),
        data: vec![],
    };
    // Files are read on a blocking thread, a chunk at a time: at most a
    // few chunks are in memory whatever the snapshot's size.
    let reader = tokio::task::spawn_blocking(move || -> anyhow::Result<()> {
        tx.blocking_send(first)?;
        for (meta, path) in files {
            let mut f = std::fs::File::open(&path)
                .with_context(|| format!("opening snapshot file {}", path.display()))?;
            let mut sent = 0u64;
            loop {
                let mut buf = vec![0; SNAPSHOT_CHUNK];
                let n = f.read(&mut buf)?;
                if n == 0 {
                    break;
                }
                buf.truncate(n);
                sent += n as u64;
                tx.blocking_send(SnapshotChunk {
                    message: None,
                    data: buf,
                })?;
            }
            if sent != meta.size {
                return Err(anyhow!("snapshot file {} changed while sent", meta.cf));
            }
        }
        Ok(())
    });
    let call = client.snapshot(ReceiverStream::new(rx)).await;
    reader.await??;
    call?;
    Ok(())
}

/// The receiving side, used by the `Raft`, `BatchRaft` and `Snapshot`
/// handlers of `tikvpb.Tikv`.
#[derive(Clone)]
pub struct RaftIntake {
    pub store_id: u64,
    pub router: Router,
    pub snaps: Arc<SnapManager>,
}

/// Refuses a message for another store (a sender that reached this one at
/// an address that store left): the stream ends, and its sender looks the
/// store's address up again when it reconnects, as TiKV answers
/// StoreNotMatch to break the connection. Dropped silently, the stream
/// stayed up and the store it meant never heard from the sender again.
fn check_store(store_id: u64, msg: &PeerMessage) -> Result<(), Status> {
    if msg.to.store_id == store_id {
        return Ok(());
    }
    Err(status(
        Code::FailedPrecondition,
        format!(
            "store not match: a message for store {} reached store {store_id}",
            msg.to.store_id
        ),
    ))
}

/// The message of `m` for the store loop, or `None` (logged) if it does not
/// decode or is a snapshot, which only comes on a `Snapshot` stream.
fn intake(m: RaftMessage) -> Option<PeerMessage> {
    match from_wire(m) {
        Ok(msg) if msg.message.get_msg_type() == MessageType::MsgSnapshot => {
            debug!(
                region_id = msg.region_id,
                "snapshot outside a Snapshot stream dropped"
            );
            None
        }
        Ok(msg) => Some(msg),
        Err(e) => {
            debug!(error = %e, "bad raft message dropped");
            None
        }
    }
}

impl RaftIntake {
    pub async fn raft(&self, mut stream: Streaming<RaftMessage>) -> Result<Done, Status> {
        while let Some(m) = stream.next().await {
            if let Some(msg) = intake(m?) {
                check_store(self.store_id, &msg)?;
                self.router.send_raft_message(msg);
            }
        }
        Ok(Done {})
    }

    /// A batch reaches the loop in one hand-off (one wake-up), however
    /// many regions' messages it carries.
    pub async fn batch_raft(
        &self,
        mut stream: Streaming<BatchRaftMessage>,
    ) -> Result<Done, Status> {
        while let Some(batch) = stream.next().await {
            let msgs: Vec<PeerMessage> = batch?.msgs.into_iter().filter_map(intake).collect();
            for msg in &msgs {
                check_store(self.store_id, msg)?;
            }
            self.router.send_raft_messages(msgs);
        }
        Ok(Done {})
    }

    /// Receives one snapshot; the store loop gets its message only when
    /// every file arrived whole.
    pub async fn snapshot(&self, stream: Streaming<SnapshotChunk>) -> Result<Done, Status> {
        let msg = receive_snapshot(self.store_id, &self.snaps, stream, SNAPSHOT_CHUNK_IDLE)
            .await
            .inspect_err(|e| {
                if e.code() == Code::DeadlineExceeded {
                    warn!(error = %e.message(), "snapshot stream given up");
                }
            })?;
        self.router.send_raft_message(msg);
        Ok(Done {})
    }
}

/// Writes one snapshot stream's files into the snapshot directory and
/// answers its message once every file arrived whole. A stream silent for
/// `idle` ends with `DeadlineExceeded`, its partial files removed.
async fn receive_snapshot<S>(
    store_id: u64,
    snaps: &Arc<SnapManager>,
    mut stream: S,
    idle: Duration,
) -> Result<PeerMessage, Status>
where
    S: tokio_stream::Stream<Item = Result<SnapshotChunk, Status>> + Unpin,
{
    let invalid = |what: String| status(Code::InvalidArgument, what);
    let _busy = snaps.try_receiving().ok_or_else(|| {
        let why = "too many snapshots being received; send it again later";
        status(Code::ResourceExhausted, why)
    })?;
    let first = next_chunk(&mut stream, idle)
        .await?
        .ok_or_else(|| invalid("empty snapshot stream".into()))?;
    let msg = first
        .message
        .ok_or_else(|| invalid("the first snapshot chunk carries no message".into()))
        .and_then(|m| from_wire(m).map_err(invalid))?;
    if msg.message.get_msg_type() != MessageType::MsgSnapshot {
        return Err(invalid("a snapshot stream must carry a MsgSnapshot".into()));
    }
    // Before any file is written: a snapshot for another store would be
    // received whole, then dropped, and reported delivered.
    check_store(store_id, &msg)?;
    let snap = msg.message.get_snapshot();
    let key = SnapKey::of(msg.region_id, snap);
    let data = tikal_raftstore::decode_snapshot_data(snap).map_err(|e| invalid(e.to_string()))?;
    let into = snaps.clone();
    let mut receiver = blocking(move || into.receive(key, &data)).await?;
    if !first.data.is_empty() {
        receiver = write_chunk(receiver, first.data).await?;
    }
    while let Some(chunk) = next_chunk(&mut stream, idle).await? {
        receiver = write_chunk(receiver, chunk.data).await?;
    }
    blocking(move || receiver.finish()).await?;
    info!(
        region_id = key.region_id,
        index = key.index,
        "snapshot received"
    );
    Ok(msg)
}

/// The stream's next chunk, `None` at its end, or `DeadlineExceeded` if
/// none comes within `idle`.
async fn next_chunk<S>(stream: &mut S, idle: Duration) -> Result<Option<SnapshotChunk>, Status>
where
    S: tokio_stream::Stream<Item = Result<SnapshotChunk, Status>> + Unpin,
{
    match tokio::time::timeout(idle, stream.next()).await {
        Ok(chunk) => chunk.transpose(),
        Err(_) => Err(Status::deadline_exceeded(format!(
            "no snapshot chunk for {idle:?}"
        ))),
    }
}

async fn write_chunk(
    mut receiver: tikal_raftstore::SnapReceiver,
    data: Vec<u8>,
) -> Result<tikal_raftstore::SnapReceiver, Status> {
    blocking(move || receiver.write(&data).map(|()| receiver)).await
}

/// Runs file I/O off the async threads; a raftstore error (a bad snapshot
/// from a peer) becomes `InvalidArgument`.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> tikal_raftstore::Result<T> + Send + 'static,
) -> Result<T, Status> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Status::internal(e.to_string()))?
        .map_err(|e| status(Code::InvalidArgument, e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tikal_proto::metapb;
    use tikal_raftstore::DiskUsage;

    fn peer(id: u64, store_id: u64) -> metapb::Peer {
        metapb::Peer {
            id,
            store_id,
            ..Default::default()
        }
    }

    #[tokio::test]
    async fn a_snapshot_stream_gone_silent_is_given_up_and_leaves_nothing_behind() {
        use prost::Message as _;
        use tikal_proto::raft_serverpb::{RaftSnapshotData, SnapshotCfFile, SnapshotMeta};
        let dir = tempfile::tempdir().unwrap();
        let snaps = Arc::new(SnapManager::open(dir.path()).unwrap());
        let data = RaftSnapshotData {
            region: Some(metapb::Region {
                id: 5,
                ..Default::default()
            }),
            meta: Some(SnapshotMeta {
                cf_files: vec![SnapshotCfFile {
                    cf: "default".into(),
                    size: 4,
                    checksum: 0,
                }],
            }),
            ..Default::default()
        };
        let mut message = raft::eraftpb::Message::default();
        message.set_msg_type(MessageType::MsgSnapshot);
        message.mut_snapshot().data = data.encode_to_vec().into();
        message.mut_snapshot().mut_metadata().index = 7;
        let msg = PeerMessage {
            message,
            ..PeerMessage::note(5, peer(51, 1), peer(53, 3), Default::default())
        };
        // The message and half the file, then silence with the stream open.
        let first = SnapshotChunk {
            message: Some(to_wire(&msg)),
            data: b"ab".to_vec(),
        };
        let stream = tokio_stream::iter([Ok(first)]).chain(tokio_stream::pending());
        let idle = Duration::from_millis(300);
        let outcome = tokio::time::timeout(
            Duration::from_secs(60),
            receive_snapshot(3, &snaps, stream, idle),
        )
        .await
        .expect("a silent stream must be given up");
        assert_eq!(outcome.unwrap_err().code(), Code::DeadlineExceeded);
        // The same stream at a store it was not meant for is refused at
        // its first chunk, before any file is written.
        let first = SnapshotChunk {
            message: Some(to_wire(&msg)),
            data: b"ab".to_vec(),
        };
        let stream = tokio_stream::iter([Ok(first)]).chain(tokio_stream::pending());
        let refused = receive_snapshot(1, &snaps, stream, idle).await.unwrap_err();
        assert_eq!(refused.code(), Code::FailedPrecondition);
        assert!(refused.message().contains("store not match"), "{refused:?}");
        assert_eq!(snaps.counts().receiving, 0);
        let left: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
        assert!(left.is_empty(), "{left:?}");
    }

    #[tokio::test]
    async fn a_snapshot_past_the_receive_limit_is_refused_as_resource_exhausted() {
        let dir = tempfile::tempdir().unwrap();
        let snaps = Arc::new(SnapManager::open(dir.path()).unwrap().with_limits(32, 1));
        let idle = Duration::from_secs(60);
        let empty = || tokio_stream::iter(Vec::<Result<SnapshotChunk, Status>>::new());
        let busy = snaps.try_receiving().unwrap();
        let refused = receive_snapshot(1, &snaps, empty(), idle)
            .await
            .unwrap_err();
        assert_eq!(refused.code(), Code::ResourceExhausted);
        assert_eq!(snaps.counts().receiving, 1, "the refused one never counted");
        drop(busy);
        // With room, the same stream is read (and found empty).
        let read = receive_snapshot(1, &snaps, empty(), idle)
            .await
            .unwrap_err();
        assert_eq!(read.code(), Code::InvalidArgument);
        assert_eq!(snaps.counts().receiving, 0);
    }

    /// An append of `len` bytes of entry data from region `region_id`'s
    /// leader to its peer on store 2.
    fn append(region_id: u64, len: usize) -> RaftMessage {
        let mut msg = PeerMessage::note(region_id, peer(1, 1), peer(2, 2), Default::default());
        msg.message.set_msg_type(MessageType::MsgAppend);
        msg.message.mut_entries().push(raft::eraftpb::Entry {
            data: vec![7; len].into(),
            ..Default::default()
        });
        to_wire(&msg)
    }

    #[test]
    fn a_rounds_messages_are_cut_into_batches_under_the_cap() {
        let msgs: Vec<_> = (1..=5).map(|r| append(r, 400)).collect();
        let one = prost::Message::encoded_len(&msgs[0]);
        let batches = split_batch(msgs, 2 * one + 1);
        let regions: Vec<Vec<u64>> = (batches.iter())
            .map(|(b, _)| b.iter().map(|m| m.region_id).collect())
            .collect();
        assert_eq!(regions, vec![vec![1, 2], vec![3, 4], vec![5]]);
        assert!(batches.iter().all(|(b, size)| *size == batch_bytes(b)));
        // A message past the cap goes alone, not nowhere.
        let batches = split_batch(vec![append(1, 10), append(2, 5000), append(3, 10)], 1000);
        assert_eq!(
            batches.iter().map(|(b, _)| b.len()).collect::<Vec<_>>(),
            [1, 1, 1]
        );
    }

    #[tokio::test]
    async fn a_round_larger_than_the_queue_bound_is_sent_in_part_not_dropped_whole() {
        // A follower catching up is sent a window of 1 MiB appends in one
        // round: 70 MiB for one store, past the queue's 64 MiB bound.
        let dir = tempfile::tempdir().unwrap();
        let snaps = Arc::new(SnapManager::open(dir.path()).unwrap());
        // Nothing answers there: the queue holds what the round gives it.
        let pd = PdClient::lazy(1, "http://127.0.0.1:1".into()).unwrap();
        let (mut transport, handle) = GrpcTransport::new(pd, snaps);
        for region_id in 1..=70 {
            let mut msg = from_wire(append(region_id, 1 << 20)).unwrap();
            msg.to.store_id = 2;
            transport.send(msg);
        }
        transport.flush();
        let queued = transport.queues[&2].bytes.load(Ordering::Relaxed);
        assert!((60 << 20..=QUEUE_BYTES).contains(&queued), "{queued}");
        assert!(handle.dropped() <= 10, "dropped {}", handle.dropped());
    }

    #[test]
    fn a_large_snapshot_gets_a_second_per_mib_to_send() {
        use tikal_proto::raft_serverpb::{RaftSnapshotData, SnapshotCfFile, SnapshotMeta};
        let with_files = |sizes: &[(&str, u64)]| {
            let data = RaftSnapshotData {
                region: Some(metapb::Region::default()),
                meta: Some(SnapshotMeta {
                    cf_files: (sizes.iter())
                        .map(|(cf, size)| SnapshotCfFile {
                            cf: cf.to_string(),
                            size: *size,
                            ..Default::default()
                        })
                        .collect(),
                }),
                ..Default::default()
            };
            let mut msg = PeerMessage::note(5, peer(51, 1), peer(53, 3), Default::default());
            msg.message.mut_snapshot().data = prost::Message::encode_to_vec(&data).into();
            msg
        };
        let small = with_files(&[("default", 10 << 20), ("write", 1 << 20)]);
        assert_eq!(snapshot_send_timeout(&small), SNAPSHOT_SEND_TIMEOUT);
        let large = with_files(&[("default", 2 << 30), ("write", 1 << 30)]);
        assert_eq!(snapshot_send_timeout(&large), Duration::from_secs(3 << 10));
    }

    #[test]
    fn a_merged_away_note_keeps_its_target_and_version_on_the_wire() {
        let note = PeerMessage {
            is_tombstone: true,
            merged_into: Some(9),
            merged_version: 12,
            ..PeerMessage::note(5, peer(51, 1), peer(53, 3), Default::default())
        };
        let back = from_wire(to_wire(&note)).unwrap();
        assert!(back.is_tombstone);
        assert_eq!((back.merged_into, back.merged_version), (Some(9), 12));
        assert_eq!((back.region_id, back.from.id, back.to.id), (5, 51, 53));
        assert!(!back.check_stale);
    }

    #[test]
    fn a_check_stale_note_keeps_its_kind_on_the_wire() {
        let note = PeerMessage {
            check_stale: true,
            ..PeerMessage::note(5, peer(51, 1), peer(53, 3), Default::default())
        };
        let wire = to_wire(&note);
        let extra = wire.extra_msg.clone().expect("an extra message");
        assert_eq!(extra.r#type, ExtraMessageType::MsgCheckStalePeer as i32);
        let back = from_wire(wire).unwrap();
        assert!(back.check_stale && back.is_note());
        assert_eq!(back.want_rollback_merge, None);
    }

    #[test]
    fn the_senders_disk_usage_keeps_its_value_on_the_wire() {
        let msg = PeerMessage {
            disk_usage: DiskUsage::AlreadyFull,
            ..PeerMessage::note(5, peer(51, 1), peer(53, 3), Default::default())
        };
        let wire = to_wire(&msg);
        // kvproto's disk_usage.DiskUsage numbers, as TiKV sends them.
        assert_eq!(wire.disk_usage, 2);
        assert_eq!(from_wire(wire).unwrap().disk_usage, DiskUsage::AlreadyFull);
        let unknown = RaftMessage {
            disk_usage: 7,
            ..to_wire(&msg)
        };
        assert_eq!(from_wire(unknown).unwrap().disk_usage, DiskUsage::Normal);
    }
}
