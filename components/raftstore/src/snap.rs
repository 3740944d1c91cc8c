//! Region snapshots as files: generated on the leader's store, moved to a
//! follower's store by the transport, applied there atomically.
//!
//! A snapshot of region R at applied index I is one SST file per data column
//! family holding R's key range as of I (a column family with no keys in the
//! range has no file), plus a `RaftSnapshotData` naming R and each file's
//! size and CRC32. The files are written by streaming a RocksDB snapshot, so
//! neither generating, sending nor applying a snapshot holds the region in
//! memory.
//!
//! Directory layout under a store's snapshot directory:
//!
//! | path                        | what                                    |
//! |-----------------------------|-----------------------------------------|
//! | `gen_<region>_<term>_<idx>` | generated here, to be sent              |
//! | `rev_<region>_<term>_<idx>` | received here, to be applied            |
//! | `*.tmp`                     | being written; removed at start         |
//!
//! Generation runs on its own thread; the store loop waits only until that
//! thread holds its RocksDB snapshot, so the data is exactly what the loop
//! had applied at that moment.

use std::collections::HashMap;
use std::fmt;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Instant;

use crossbeam_channel::Receiver;
use prost::Message as _;
use protobuf::Message as _;
use raft::eraftpb::{ConfState, Snapshot};
use tikal_engine::{Cf, EngineError, KvEngine, DATA_CFS};
use tikal_proto::{metapb, raft_serverpb};
use tracing::{info, warn};

use crate::Result;

/// Version of the snapshot format written into `RaftSnapshotData`.
const SNAPSHOT_VERSION: u64 = 1;

/// Names one snapshot of one region.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SnapKey {
    pub region_id: u64,
    pub term: u64,
    pub index: u64,
}

impl SnapKey {
    pub fn of(region_id: u64, snap: &Snapshot) -> SnapKey {
        let m = snap.get_metadata();
        SnapKey {
            region_id,
            term: m.term,
            index: m.index,
        }
    }
}

impl fmt::Display for SnapKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}_{}_{}", self.region_id, self.term, self.index)
    }
}

/// A store's snapshot files, and how many snapshots it is busy with.
#[derive(Debug)]
pub struct SnapManager {
    dir: PathBuf,
    sending: Arc<AtomicU32>,
    receiving: Arc<AtomicU32>,
    /// Generated snapshots handed to the transport and not yet reported
    /// sent or failed, by (region, receiving peer). A generated snapshot
    /// goes once its last send ends, as TiKV deletes a sent snapshot, and
    /// never while one runs (a newer generation would cut it off).
    sends: parking_lot::Mutex<HashMap<(u64, u64), SnapKey>>,
    /// At most this many snapshots sent (or generated) at once; a send
    /// past it fails at once and Raft tries again later.
    send_limit: u32,
    /// At most this many snapshots received at once; a stream past it is
    /// refused (`RESOURCE_EXHAUSTED`) and its sender tries again later.
    recv_limit: u32,
}

/// Upstream's `[server] concurrent-send-snap-limit` and
/// `concurrent-recv-snap-limit`.
pub const DEFAULT_SNAP_LIMIT: u32 = 32;

/// Snapshots a store is busy with, as its heartbeats report them
/// (`sending_snap_count`, `receiving_snap_count`) and PD's
/// `max-snapshot-count` weighs them: sending counts those being generated
/// too, as TiKV counts them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SnapCounts {
    pub sending: u32,
    pub receiving: u32,
}

/// Counts one snapshot as sent or received until dropped.
#[derive(Debug)]
pub struct SnapBusy(Arc<AtomicU32>);

impl SnapBusy {
    fn new(count: &Arc<AtomicU32>) -> SnapBusy {
        count.fetch_add(1, Ordering::Relaxed);
        SnapBusy(count.clone())
    }

    /// Counts one more if fewer than `limit` are counted.
    fn below(count: &Arc<AtomicU32>, limit: u32) -> Option<SnapBusy> {
        (count.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
            (n < limit).then_some(n + 1)
        }))
        .ok()
        .map(|_| SnapBusy(count.clone()))
    }
}

impl Drop for SnapBusy {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A generation in progress: the loop polls `done` (see `PeerStorage`).
pub(crate) struct Generating {
    pub done: Receiver<Result<Snapshot>>,
    /// Where its files go: a snapshot is usable only while they are there.
    pub dir: PathBuf,
}

impl SnapManager {
    /// Opens (creating) the directory and removes half-written files left
    /// by a crash.
    pub fn open(dir: &Path) -> Result<SnapManager> {
        std::fs::create_dir_all(dir).map_err(|e| io_error("snapshot dir", e))?;
        for entry in std::fs::read_dir(dir).map_err(|e| io_error("snapshot dir", e))? {
            let path = entry.map_err(|e| io_error("snapshot dir", e))?.path();
            if path.extension().is_some_and(|e| e == "tmp") {
                let _ = std::fs::remove_dir_all(&path);
            }
        }
        Ok(SnapManager {
            dir: dir.to_path_buf(),
            sending: Arc::default(),
            receiving: Arc::default(),
            sends: Default::default(),
            send_limit: DEFAULT_SNAP_LIMIT,
            recv_limit: DEFAULT_SNAP_LIMIT,
        })
    }

    /// The same manager with at most `send` snapshots sent (generations
    /// included) and `recv` received at once (each at least one).
    pub fn with_limits(self, send: u32, recv: u32) -> SnapManager {
        SnapManager {
            send_limit: send.max(1),
            recv_limit: recv.max(1),
            ..self
        }
    }

    /// The store handed generated snapshot `key` to the transport, for
    /// peer `to`.
    pub(crate) fn begin_send(&self, key: SnapKey, to: u64) {
        let earlier = self.sends.lock().insert((key.region_id, to), key);
        // An earlier send to the same peer never reported: it ended.
        if let Some(earlier) = earlier.filter(|k| *k != key) {
            self.remove_if_unsent(earlier);
        }
    }

    /// The send of the region's snapshot to peer `to` ended (delivered or
    /// not): its files go unless another send of them still runs.
    pub(crate) fn end_send(&self, region_id: u64, to: u64) {
        let key = self.sends.lock().remove(&(region_id, to));
        if let Some(key) = key {
            self.remove_if_unsent(key);
        }
    }

    fn remove_if_unsent(&self, key: SnapKey) {
        let sends = self.sends.lock();
        if !sends.values().any(|k| *k == key) {
            self.remove(&self.gen_dir(key));
        }
    }

    pub fn counts(&self) -> SnapCounts {
        SnapCounts {
            sending: self.sending.load(Ordering::Relaxed),
            receiving: self.receiving.load(Ordering::Relaxed),
        }
    }

    /// Counts a snapshot as being sent (or generated) while the guard lives.
    pub fn sending(&self) -> SnapBusy {
        SnapBusy::new(&self.sending)
    }

    /// Counts a snapshot as being received while the guard lives.
    pub fn receiving(&self) -> SnapBusy {
        SnapBusy::new(&self.receiving)
    }

    /// [`SnapManager::sending`], unless the send limit is reached.
    pub fn try_sending(&self) -> Option<SnapBusy> {
        SnapBusy::below(&self.sending, self.send_limit)
    }

    /// [`SnapManager::receiving`], unless the receive limit is reached.
    pub fn try_receiving(&self) -> Option<SnapBusy> {
        SnapBusy::below(&self.receiving, self.recv_limit)
    }

    /// The names of the snapshots on disk, sorted (`gen_…` generated,
    /// `rev_…` received).
    pub fn listed(&self) -> Vec<String> {
        let mut names: Vec<String> = (std::fs::read_dir(&self.dir).into_iter())
            .flatten()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    pub fn gen_dir(&self, key: SnapKey) -> PathBuf {
        self.dir.join(format!("gen_{key}"))
    }

    pub fn recv_dir(&self, key: SnapKey) -> PathBuf {
        self.dir.join(format!("rev_{key}"))
    }

    /// Starts generating a snapshot of `region` at `key.index`; returns once
    /// the generating thread holds a consistent view of `kv`.
    pub(crate) fn start_generate(
        &self,
        kv: &KvEngine,
        region: metapb::Region,
        key: SnapKey,
        conf_state: ConfState,
    ) -> Result<Generating> {
        let (taken_tx, taken_rx) = crossbeam_channel::bounded::<()>(1);
        let (done_tx, done) = crossbeam_channel::bounded(1);
        let kv = kv.clone();
        let dir = self.gen_dir(key);
        let files = dir.clone();
        let parent = self.dir.clone();
        let busy = self.sending();
        std::thread::Builder::new()
            .name(format!("snap-gen-{}", key.region_id))
            .spawn(move || {
                let started = Instant::now();
                let snap = kv.snapshot();
                let _ = taken_tx.send(());
                let result = write_snapshot(&snap, &region, &parent, &dir, key, conf_state);
                match &result {
                    Ok(s) => info!(
                        region_id = key.region_id,
                        index = key.index,
                        bytes = s.get_data().len(),
                        ms = started.elapsed().as_millis() as u64,
                        "snapshot generated"
                    ),
                    Err(e) => {
                        warn!(region_id = key.region_id, error = %e, "snapshot generation failed")
                    }
                }
                // The engine is closed with its last handle: none may
                // outlive the answer (a store reopened at once would find
                // its engine still locked).
                drop(snap);
                drop(kv);
                drop(busy);
                let _ = done_tx.send(result);
            })
            .map_err(|e| io_error("snapshot thread", e))?;
        // The thread takes its RocksDB snapshot first thing; until then the
        // loop must not apply anything more.
        let _ = taken_rx.recv();
        Ok(Generating { done, dir: files })
    }

    /// The files of a generated snapshot, in the order its meta lists them,
    /// for a transport to send.
    pub fn files(
        &self,
        key: SnapKey,
        data: &raft_serverpb::RaftSnapshotData,
    ) -> Vec<(raft_serverpb::SnapshotCfFile, PathBuf)> {
        let dir = self.gen_dir(key);
        cf_files(data)
            .iter()
            .map(|f| (f.clone(), dir.join(sst_name(&f.cf))))
            .collect()
    }

    /// Starts receiving a snapshot's files; see [`SnapReceiver`].
    pub fn receive(
        &self,
        key: SnapKey,
        data: &raft_serverpb::RaftSnapshotData,
    ) -> Result<SnapReceiver> {
        // Each stream writes its own directory: the same snapshot may be
        // sent again while an earlier stream of it is still arriving.
        static STREAMS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let stream = STREAMS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let tmp = self.dir.join(format!("rev_{key}_{stream}.tmp"));
        std::fs::create_dir_all(&tmp).map_err(|e| io_error("snapshot receive", e))?;
        Ok(SnapReceiver {
            files: cf_files(data).to_vec(),
            tmp,
            done: self.recv_dir(key),
            next: 0,
            current: None,
        })
    }

    /// Copies a generated snapshot into `to` as received: what a transport
    /// does over the network, for in-process clusters.
    pub fn copy_to(&self, to: &SnapManager, key: SnapKey, snap: &Snapshot) -> Result<()> {
        let data = decode_data(snap)?;
        let mut rx = to.receive(key, &data)?;
        for (_, path) in self.files(key, &data) {
            let mut f = std::fs::File::open(&path).map_err(|e| io_error("snapshot file", e))?;
            let mut buf = vec![0; 64 * 1024];
            loop {
                let n = f.read(&mut buf).map_err(|e| io_error("snapshot file", e))?;
                if n == 0 {
                    break;
                }
                rx.write(&buf[..n])?;
            }
        }
        rx.finish()
    }

    pub fn has_received(&self, key: SnapKey) -> bool {
        self.recv_dir(key).is_dir()
    }

    /// Replaces the region's data with the received snapshot's: deletes
    /// every data key in the region's range, then ingests the files. Not
    /// atomic by itself: the caller records the snapshot as pending first
    /// and re-runs this after a crash.
    pub(crate) fn apply(&self, kv: &KvEngine, key: SnapKey, snap: &Snapshot) -> Result<()> {
        let data = decode_data(snap)?;
        let region = data.region.clone().unwrap_or_default();
        let dir = self.recv_dir(key);
        let files = cf_files(&data);
        for f in files {
            let path = dir.join(sst_name(&f.cf));
            let size = std::fs::metadata(&path).map(|m| m.len()).ok();
            if size != Some(f.size) {
                return Err(corrupted(format!(
                    "snapshot {key}: file {} has {size:?} bytes, expected {}",
                    f.cf, f.size
                )));
            }
        }
        let mut wb = kv.write_batch();
        for cf in DATA_CFS {
            wb.delete_range(cf, &region.start_key, &region.end_key);
        }
        kv.write(wb, true)?;
        for f in files {
            let cf = Cf::from_name(&f.cf).ok_or_else(|| corrupted(format!("cf {}", f.cf)))?;
            // Ingesting moves the file into RocksDB; a hard link keeps the
            // received one, so a crash before the region state is written
            // can apply the snapshot again.
            let staged = dir.join(format!("{}.ingest", sst_name(&f.cf)));
            let _ = std::fs::remove_file(&staged);
            std::fs::hard_link(dir.join(sst_name(&f.cf)), &staged)
                .map_err(|e| io_error("snapshot apply", e))?;
            kv.ingest_sst(cf, &staged)?;
        }
        Ok(())
    }

    /// Removes a snapshot's directory (sent, applied or superseded).
    pub fn remove(&self, dir: &Path) {
        if let Err(e) = std::fs::remove_dir_all(dir) {
            if e.kind() != std::io::ErrorKind::NotFound {
                warn!(path = %dir.display(), error = %e, "cannot remove snapshot files");
            }
        }
    }

    /// Removes the region's generated snapshots, but for those being sent
    /// (each goes when its last send ends).
    pub(crate) fn remove_generated(&self, region_id: u64) {
        let prefix = format!("gen_{region_id}_");
        let sends = self.sends.lock();
        let sending: Vec<String> = (sends.values())
            .filter(|k| k.region_id == region_id)
            .map(|k| format!("gen_{k}"))
            .collect();
        self.remove_where(|name| name.starts_with(&prefix) && !sending.iter().any(|s| s == name));
    }

    /// Removes the region's received snapshots below `index` (one applied
    /// at `index` replaced them; a newer one may still be on its way in).
    pub(crate) fn remove_received_below(&self, region_id: u64, index: u64) {
        let prefix = format!("rev_{region_id}_");
        self.remove_where(|name| {
            let Some(rest) = name.strip_prefix(&prefix) else {
                return false;
            };
            // `term_index`; a directory still being written has more parts.
            let mut parts = rest.split('_');
            let (Some(_term), Some(i), None) = (parts.next(), parts.next(), parts.next()) else {
                return false;
            };
            i.parse::<u64>().is_ok_and(|i| i < index)
        });
    }

    /// Removes every snapshot a store opening finds once it has finished
    /// the applies a crash interrupted: what was generated is generated
    /// again when asked for, and what was received is sent again (its
    /// message went with the process). A crash right after an apply's
    /// last write leaves its files otherwise.
    pub(crate) fn remove_leftovers(&self) {
        self.remove_where(|name| name.starts_with("gen_") || name.starts_with("rev_"));
    }

    fn remove_where(&self, pick: impl Fn(&str) -> bool) {
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return;
        };
        for entry in entries.flatten() {
            if pick(&entry.file_name().to_string_lossy()) {
                self.remove(&entry.path());
            }
        }
    }
}

/// Receives one snapshot's files as a byte stream (the files concatenated
/// in their meta's order), checking each file's size and checksum. The
/// snapshot becomes visible to [`SnapManager::has_received`] only when
/// [`SnapReceiver::finish`] found every file whole.
pub struct SnapReceiver {
    files: Vec<raft_serverpb::SnapshotCfFile>,
    tmp: PathBuf,
    done: PathBuf,
    /// Index of the next file to open.
    next: usize,
    current: Option<OpenFile>,
}

struct OpenFile {
    index: usize,
    size: u64,
    file: std::fs::File,
    written: u64,
    hasher: crc32fast::Hasher,
}

impl SnapReceiver {
    pub fn write(&mut self, mut bytes: &[u8]) -> Result<()> {
        while !bytes.is_empty() {
            let open = match self.current.as_mut() {
                Some(open) => open,
                None => self.open_next()?,
            };
            let want = open.size - open.written;
            let n = want.min(bytes.len() as u64) as usize;
            open.file
                .write_all(&bytes[..n])
                .map_err(|e| io_error("snapshot receive", e))?;
            open.hasher.update(&bytes[..n]);
            open.written += n as u64;
            bytes = &bytes[n..];
            if open.written == open.size {
                self.close_current()?;
            }
        }
        Ok(())
    }

    fn open_next(&mut self) -> Result<&mut OpenFile> {
        let index = self.next;
        let Some(f) = self.files.get(index) else {
            return Err(corrupted("snapshot stream longer than its files".into()));
        };
        let file = std::fs::File::create(self.tmp.join(sst_name(&f.cf)))
            .map_err(|e| io_error("snapshot receive", e))?;
        self.next += 1;
        Ok(self.current.insert(OpenFile {
            index,
            size: f.size,
            file,
            written: 0,
            hasher: crc32fast::Hasher::new(),
        }))
    }

    fn close_current(&mut self) -> Result<()> {
        let Some(open) = self.current.take() else {
            return Ok(());
        };
        open.file
            .sync_all()
            .map_err(|e| io_error("snapshot receive", e))?;
        let sum = open.hasher.finalize();
        let want = &self.files[open.index];
        if sum != want.checksum {
            return Err(corrupted(format!(
                "snapshot file {} checksum {sum:#x}, expected {:#x}",
                want.cf, want.checksum
            )));
        }
        Ok(())
    }

    /// Checks that every file arrived whole and publishes the snapshot.
    pub fn finish(self) -> Result<()> {
        if self.current.is_some() || self.next < self.files.len() {
            return Err(corrupted(
                "snapshot stream ended before its last file".into(),
            ));
        }
        if self.done.is_dir() {
            // Already received whole (maybe being applied): keep that copy.
            return Ok(());
        }
        std::fs::rename(&self.tmp, &self.done).map_err(|e| io_error("snapshot receive", e))?;
        // The rename is durable before the apply records the snapshot as
        // pending: a power loss must not leave a pending snapshot whose
        // files are under their temporary name (and removed at open).
        sync_parent(&self.done)
    }
}

/// Syncs the directory holding `path`, so a rename into it survives a
/// power loss.
fn sync_parent(path: &Path) -> Result<()> {
    let parent = path.parent().unwrap_or(Path::new("."));
    let dir = std::fs::File::open(parent).map_err(|e| io_error("snapshot dir", e))?;
    dir.sync_all().map_err(|e| io_error("snapshot dir", e))
}

impl Drop for SnapReceiver {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.tmp);
    }
}

fn write_snapshot(
    snap: &tikal_engine::KvSnapshot<'_>,
    region: &metapb::Region,
    parent: &Path,
    dir: &Path,
    key: SnapKey,
    conf_state: ConfState,
) -> Result<Snapshot> {
    let tmp = parent.join(format!("gen_{key}.tmp"));
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp).map_err(|e| io_error("snapshot generate", e))?;
    let mut meta = raft_serverpb::SnapshotMeta::default();
    let mut total = 0;
    for cf in DATA_CFS {
        let path = tmp.join(sst_name(cf.name()));
        if snap
            .export_sst(cf, &region.start_key, &region.end_key, &path)?
            .is_none()
        {
            continue;
        }
        let (size, checksum) = file_checksum(&path)?;
        total += size;
        meta.cf_files.push(raft_serverpb::SnapshotCfFile {
            cf: cf.name().to_string(),
            size,
            checksum,
        });
    }
    let _ = std::fs::remove_dir_all(dir);
    std::fs::rename(&tmp, dir).map_err(|e| io_error("snapshot generate", e))?;
    let data = raft_serverpb::RaftSnapshotData {
        region: Some(region.clone()),
        file_size: total,
        version: SNAPSHOT_VERSION,
        meta: Some(meta),
    };
    let mut s = Snapshot {
        data: data.encode_to_vec().into(),
        ..Default::default()
    };
    let m = s.mut_metadata();
    m.index = key.index;
    m.term = key.term;
    m.set_conf_state(conf_state);
    Ok(s)
}

/// The `RaftSnapshotData` a snapshot carries; an error for one that does
/// not decode or names no region.
pub fn decode_data(snap: &Snapshot) -> Result<raft_serverpb::RaftSnapshotData> {
    let data = raft_serverpb::RaftSnapshotData::decode(snap.get_data())
        .map_err(|e| corrupted(format!("snapshot data: {e}")))?;
    if data.region.is_none() {
        return Err(corrupted("snapshot data names no region".into()));
    }
    // Only data column families, each at most once: a file for `raft` would
    // overwrite store metadata, and two files for one CF one another.
    let mut seen = std::collections::HashSet::new();
    for f in cf_files(&data) {
        let known = Cf::from_name(&f.cf).is_some_and(|cf| DATA_CFS.contains(&cf));
        if !known || !seen.insert(f.cf.as_str()) {
            return Err(corrupted(format!("snapshot file for cf {:?}", f.cf)));
        }
    }
    Ok(data)
}

/// A snapshot's raft metadata and data, as one byte string (kept while a
/// received snapshot is being applied).
pub(crate) fn encode_snapshot(snap: &Snapshot) -> Vec<u8> {
    snap.write_to_bytes().unwrap_or_default()
}

pub(crate) fn decode_snapshot(bytes: &[u8]) -> Result<Snapshot> {
    Snapshot::parse_from_bytes(bytes).map_err(|e| corrupted(format!("pending snapshot: {e}")))
}

fn cf_files(data: &raft_serverpb::RaftSnapshotData) -> &[raft_serverpb::SnapshotCfFile] {
    data.meta.as_ref().map_or(&[], |m| &m.cf_files)
}

fn sst_name(cf: &str) -> String {
    // Only known CF names reach here in generated snapshots; a received
    // one is checked by `Cf::from_name` before ingest. Keep the name a
    // plain file name either way.
    let safe: String = cf
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '_')
        .collect();
    format!("{safe}.sst")
}

fn file_checksum(path: &Path) -> Result<(u64, u32)> {
    let mut f = std::fs::File::open(path).map_err(|e| io_error("snapshot file", e))?;
    let mut hasher = crc32fast::Hasher::new();
    let mut buf = vec![0; 64 * 1024];
    let mut size = 0;
    loop {
        let n = f.read(&mut buf).map_err(|e| io_error("snapshot file", e))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        size += n as u64;
    }
    Ok((size, hasher.finalize()))
}

fn io_error(what: &'static str, e: std::io::Error) -> crate::RaftstoreError {
    EngineError::Corrupted {
        what,
        detail: e.to_string(),
    }
    .into()
}

fn corrupted(detail: String) -> crate::RaftstoreError {
    EngineError::Corrupted {
        what: "snapshot",
        detail,
    }
    .into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_applied_snapshot_takes_older_received_ones_of_its_region_with_it() {
        let dir = tempfile::tempdir().unwrap();
        let snaps = SnapManager::open(dir.path()).unwrap();
        for name in [
            "rev_1_5_10",
            "rev_1_5_20",
            "rev_1_6_30",
            "rev_1_5_12_7.tmp",
            "rev_2_5_5",
        ] {
            std::fs::create_dir_all(dir.path().join(name)).unwrap();
        }
        snaps.remove_received_below(1, 25);
        // One still being written, a newer one, and another region's stay.
        assert_eq!(
            snaps.listed(),
            ["rev_1_5_12_7.tmp", "rev_1_6_30", "rev_2_5_5"]
        );
    }

    #[test]
    fn snapshots_count_as_busy_while_their_guards_live() {
        let dir = tempfile::tempdir().unwrap();
        let snaps = SnapManager::open(dir.path()).unwrap();
        let sending = snaps.sending();
        let (first, second) = (snaps.receiving(), snaps.receiving());
        let counts = |sending, receiving| SnapCounts { sending, receiving };
        assert_eq!(snaps.counts(), counts(1, 2));
        drop(first);
        drop(sending);
        assert_eq!(snaps.counts(), counts(0, 1));
        drop(second);
        assert_eq!(snaps.counts(), counts(0, 0));
    }

    #[test]
    fn snapshots_past_the_limits_are_refused_until_one_ends() {
        let dir = tempfile::tempdir().unwrap();
        let snaps = SnapManager::open(dir.path()).unwrap().with_limits(2, 1);
        let generating = snaps.sending();
        let sent = snaps
            .try_sending()
            .expect("one generation, one send: within 2");
        assert!(snaps.try_sending().is_none(), "a third is refused");
        drop(generating);
        let again = snaps.try_sending().expect("a place came free");
        let received = snaps.try_receiving().expect("the first receive");
        assert!(snaps.try_receiving().is_none());
        let counts = SnapCounts {
            sending: 2,
            receiving: 1,
        };
        assert_eq!(snaps.counts(), counts, "a refusal counts nothing");
        drop((sent, again, received));
        assert!(snaps.try_receiving().is_some());
        let zero = SnapManager::open(dir.path()).unwrap().with_limits(0, 0);
        assert!(zero.try_sending().is_some(), "a limit is at least one");
    }

    #[test]
    fn a_generated_snapshot_no_longer_counts_once_it_is_answered() {
        let dir = tempfile::tempdir().unwrap();
        let kv = KvEngine::open(&dir.path().join("db")).unwrap();
        let snaps = SnapManager::open(&dir.path().join("snap")).unwrap();
        let region = metapb::Region {
            id: 1,
            ..Default::default()
        };
        let key = SnapKey {
            region_id: 1,
            term: 1,
            index: 5,
        };
        let generating = (snaps.start_generate(&kv, region, key, ConfState::default())).unwrap();
        generating.done.recv().unwrap().unwrap();
        assert_eq!(snaps.counts(), SnapCounts::default());
    }
}
