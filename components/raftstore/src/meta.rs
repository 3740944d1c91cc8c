//! Store-local metadata in the KV engine's `raft` column family.
//!
//! | key                       | value                                        |
//! |---------------------------|----------------------------------------------|
//! | `store_ident`             | cluster id, store id (8 bytes BE each)       |
//! | `region_state/<id BE>`    | `metapb.Region` (protobuf)                   |
//! | `apply_state/<id BE>`     | applied, truncated index, truncated term     |
//! | `snapshot_pending/<id BE>`| a received snapshot being applied (eraftpb)  |
//! | `tombstone/<id BE>`       | id of this store's last, removed peer (8 bytes BE), then the region as it last knew it (`metapb.Region`; none in older marks) |
//! | `incarnation/<id BE>`     | id of the last peer a message made here      |
//! | `merge_state/<id BE>`     | a prepared merge: its index (8 bytes BE), then `raft_cmdpb.PrepareMergeRequest` |
//! | `merged_into/<id BE>`     | where a source that merged here went ([`MergedInto`]) |
//! | `prepare_bootstrap`       | id of the first region this store wrote to bootstrap the cluster with, until PD's answer is known (8 bytes BE) |
//!
//! The apply state is written in the same batch as the data it covers.
//!
//! A region's log starts at [`INITIAL_INDEX`], not 0, as in TiKV: a peer
//! created later (an empty log) can never be caught up from the log alone,
//! so it always starts from a snapshot that carries the region's metadata.

use prost::Message;
use tikal_engine::{EngineError, KvEngine, KvWriteBatch, CF_RAFT};
use tikal_proto::metapb;
use tikal_proto::raft_cmdpb::PrepareMergeRequest;

use crate::admin::MergeState;
use crate::Result;

const STORE_IDENT_KEY: &[u8] = b"store_ident";
const REGION_STATE_PREFIX: &[u8] = b"region_state/";
const APPLY_STATE_PREFIX: &[u8] = b"apply_state/";
const SNAPSHOT_PENDING_PREFIX: &[u8] = b"snapshot_pending/";
const TOMBSTONE_PREFIX: &[u8] = b"tombstone/";
const INCARNATION_PREFIX: &[u8] = b"incarnation/";
const MERGE_STATE_PREFIX: &[u8] = b"merge_state/";
const MERGED_PREFIX: &[u8] = b"merged_into/";
const PREPARE_BOOTSTRAP_KEY: &[u8] = b"prepare_bootstrap";

/// Index and term of a new region's (empty) log.
pub const INITIAL_INDEX: u64 = 5;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoreIdent {
    pub cluster_id: u64,
    pub store_id: u64,
    /// The `[storage] api-version` the data dir was written with (1 for
    /// idents written before it was recorded).
    pub api_version: u8,
}

pub fn load_store_ident(engine: &KvEngine) -> Result<Option<StoreIdent>> {
    let Some(v) = engine.get(CF_RAFT, STORE_IDENT_KEY)? else {
        return Ok(None);
    };
    // cluster id, store id (u64 BE each), then the API version byte.
    if v.len() != 16 && v.len() != 17 {
        return Err(corrupted("store ident", v.len()));
    }
    Ok(Some(StoreIdent {
        cluster_id: u64::from_be_bytes(v[..8].try_into().unwrap_or_default()),
        store_id: u64::from_be_bytes(v[8..16].try_into().unwrap_or_default()),
        api_version: v.get(16).copied().unwrap_or(1),
    }))
}

pub fn write_store_ident(engine: &KvEngine, ident: StoreIdent) -> Result<()> {
    let mut v = ident.cluster_id.to_be_bytes().to_vec();
    v.extend_from_slice(&ident.store_id.to_be_bytes());
    // API V1 idents keep the 16 bytes older binaries read.
    if ident.api_version != 1 {
        v.push(ident.api_version);
    }
    let mut wb = engine.write_batch();
    wb.put(CF_RAFT, STORE_IDENT_KEY, &v);
    engine.write(wb, true)?;
    Ok(())
}

/// Records a brand-new region (bootstrap or, later, split) with an empty
/// log that starts after [`INITIAL_INDEX`].
pub fn write_initial_region(engine: &KvEngine, region: &metapb::Region) -> Result<()> {
    let mut wb = engine.write_batch();
    put_initial_region(&mut wb, region);
    engine.write(wb, true)?;
    Ok(())
}

fn put_initial_region(wb: &mut KvWriteBatch<'_>, region: &metapb::Region) {
    put_region(wb, region);
    put_apply_state(wb, region.id, &ApplyState::initial());
}

/// A region state as stored under `what`'s key.
fn decode_region(bytes: &[u8], what: &'static str) -> Result<metapb::Region> {
    metapb::Region::decode(bytes).map_err(|e| {
        EngineError::Corrupted {
            what,
            detail: e.to_string(),
        }
        .into()
    })
}

pub(crate) fn put_region(wb: &mut KvWriteBatch<'_>, region: &metapb::Region) {
    wb.put(CF_RAFT, &region_key(region.id), &region.encode_to_vec());
}

/// Every region this store keeps a state for.
pub fn load_regions(engine: &KvEngine) -> Result<Vec<metapb::Region>> {
    let mut end = REGION_STATE_PREFIX.to_vec();
    *end.last_mut().unwrap_or(&mut 0) += 1;
    let mut regions = vec![];
    let mut bad = None;
    engine.scan(CF_RAFT, REGION_STATE_PREFIX, &end, false, |_, v| {
        match metapb::Region::decode(v) {
            Ok(r) => regions.push(r),
            Err(e) => bad = Some(e.to_string()),
        }
        bad.is_none()
    })?;
    if let Some(detail) = bad {
        return Err(EngineError::Corrupted {
            what: "region state",
            detail,
        }
        .into());
    }
    Ok(regions)
}

/// How far a region's log has been applied and truncated.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct ApplyState {
    pub applied_index: u64,
    pub truncated_index: u64,
    pub truncated_term: u64,
}

impl ApplyState {
    /// A new region's: an empty log that starts after [`INITIAL_INDEX`].
    pub(crate) fn initial() -> ApplyState {
        ApplyState {
            applied_index: INITIAL_INDEX,
            truncated_index: INITIAL_INDEX,
            truncated_term: INITIAL_INDEX,
        }
    }
}

pub(crate) fn put_apply_state(wb: &mut KvWriteBatch<'_>, region_id: u64, s: &ApplyState) {
    let mut v = Vec::with_capacity(24);
    for x in [s.applied_index, s.truncated_index, s.truncated_term] {
        v.extend_from_slice(&x.to_be_bytes());
    }
    wb.put(CF_RAFT, &apply_key(region_id), &v);
}

pub(crate) fn load_apply_state(engine: &KvEngine, region_id: u64) -> Result<ApplyState> {
    let Some(v) = engine.get(CF_RAFT, &apply_key(region_id))? else {
        return Ok(ApplyState::default());
    };
    if v.len() != 24 {
        return Err(corrupted("apply state", v.len()));
    }
    let word = |i: usize| u64::from_be_bytes(v[i * 8..i * 8 + 8].try_into().unwrap_or_default());
    Ok(ApplyState {
        applied_index: word(0),
        truncated_index: word(1),
        truncated_term: word(2),
    })
}

/// The index up to which this store applied `region_id`'s log (0 if it
/// holds no apply state for it).
pub fn applied_index(engine: &KvEngine, region_id: u64) -> Result<u64> {
    Ok(load_apply_state(engine, region_id)?.applied_index)
}

/// Records a received snapshot as being applied: after a crash it is
/// applied again from its files.
pub(crate) fn put_pending_snapshot(wb: &mut KvWriteBatch<'_>, region_id: u64, snap: &[u8]) {
    wb.put(CF_RAFT, &pending_key(region_id), snap);
}

pub(crate) fn delete_pending_snapshot(wb: &mut KvWriteBatch<'_>, region_id: u64) {
    wb.delete(CF_RAFT, &pending_key(region_id));
}

/// Snapshots whose application a crash interrupted: (region id, bytes).
pub(crate) fn load_pending_snapshots(engine: &KvEngine) -> Result<Vec<(u64, Vec<u8>)>> {
    let mut end = SNAPSHOT_PENDING_PREFIX.to_vec();
    *end.last_mut().unwrap_or(&mut 0) += 1;
    let mut out = vec![];
    engine.scan(CF_RAFT, SNAPSHOT_PENDING_PREFIX, &end, false, |k, v| {
        let id = &k[SNAPSHOT_PENDING_PREFIX.len()..];
        if let Ok(id) = <[u8; 8]>::try_from(id) {
            out.push((u64::from_be_bytes(id), v.to_vec()));
        }
        true
    })?;
    Ok(out)
}

/// Forgets a region this store's peer `peer_id` was removed from, keeping
/// a tombstone so stale messages to that peer cannot recreate it, and the
/// region as the peer last knew it (see [`Tombstone`]).
pub(crate) fn put_tombstone(wb: &mut KvWriteBatch<'_>, region: &metapb::Region, peer_id: u64) {
    wb.delete(CF_RAFT, &region_key(region.id));
    wb.delete(CF_RAFT, &apply_key(region.id));
    wb.delete(CF_RAFT, &merge_key(region.id));
    put_tombstone_mark(wb, region, peer_id);
}

/// Records only the tombstone mark (with the applied removal, before the
/// peer is destroyed: a crash in between then knows the removed peer's id).
pub(crate) fn put_tombstone_mark(wb: &mut KvWriteBatch<'_>, region: &metapb::Region, peer_id: u64) {
    let v = [&peer_id.to_be_bytes()[..], &region.encode_to_vec()].concat();
    wb.put(CF_RAFT, &tombstone_key(region.id), &v);
}

/// What a store keeps of a region its peer was removed from.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Tombstone {
    /// This store's last removed peer of the region.
    pub peer_id: u64,
    /// The region as that peer last knew it: after its removal when it
    /// applied it, else as of its last applied change (no peers when the
    /// peer never knew the region; `None` in marks written before regions
    /// were kept). A store holding only this can still tell a peer older
    /// than it, on a store not in it, that it was removed.
    pub region: Option<metapb::Region>,
}

/// The id of this store's last removed peer of the region, if any.
pub(crate) fn load_tombstone(engine: &KvEngine, region_id: u64) -> Result<Option<u64>> {
    Ok(load_tombstone_state(engine, region_id)?.map(|t| t.peer_id))
}

/// This store's tombstone of the region, if any ([`Tombstone`]).
pub(crate) fn load_tombstone_state(engine: &KvEngine, region_id: u64) -> Result<Option<Tombstone>> {
    let Some(v) = engine.get(CF_RAFT, &tombstone_key(region_id))? else {
        return Ok(None);
    };
    let id = v.get(..8).ok_or_else(|| corrupted("tombstone", v.len()))?;
    let peer_id = u64::from_be_bytes(id.try_into().unwrap_or_default());
    let region = match &v[8..] {
        [] => None,
        bytes => Some(decode_region(bytes, "tombstone")?),
    };
    Ok(Some(Tombstone { peer_id, region }))
}

/// Records, durably, that a message made this store's peer `peer_id` of a
/// region (after removing an earlier one, or before a split here made the
/// region). Until that peer holds the region (a snapshot brings its
/// state), its log holds nothing but its hard state, and that must outlive
/// a restart, and a split that would open an older peer over it: a peer
/// that forgot its vote could vote twice in one term, and the term have
/// two leaders.
pub(crate) fn write_incarnation(engine: &KvEngine, region_id: u64, peer_id: u64) -> Result<()> {
    let mut wb = engine.write_batch();
    wb.put(CF_RAFT, &incarnation_key(region_id), &peer_id.to_be_bytes());
    Ok(engine.write(wb, true)?)
}

/// The peer a message last made here ([`write_incarnation`]), unless it
/// was removed in turn.
pub(crate) fn load_incarnation(engine: &KvEngine, region_id: u64) -> Result<Option<u64>> {
    let removed = load_tombstone(engine, region_id)?;
    let made = load_id(engine, &incarnation_key(region_id), "incarnation")?;
    Ok(made.filter(|id| removed.is_none_or(|r| *id > r)))
}

/// Where a region forgotten here went: the region it merged into and that
/// region's version once it took the source in, and the source as it
/// merged (its last epoch and peers; `None` in a mark written before
/// sources were kept).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct MergedInto {
    pub target: u64,
    pub version: u64,
    pub source: Option<metapb::Region>,
}

/// Records that region `source`, forgotten here, merged into region
/// `target_id`, which had epoch version `version` once it took the source
/// in: every peer of the source is gone, which this store tells a peer of
/// it that still writes (see `Store::step`). Region ids are never reused,
/// so the mark stays.
pub(crate) fn put_merged_into(
    wb: &mut KvWriteBatch<'_>,
    source: &metapb::Region,
    target_id: u64,
    version: u64,
) {
    let mut v = target_id.to_be_bytes().to_vec();
    v.extend_from_slice(&version.to_be_bytes());
    v.extend_from_slice(&source.encode_to_vec());
    wb.put(CF_RAFT, &merged_key(source.id), &v);
}

/// Where region `source_id` went, if it merged away here. Older marks
/// hold the target alone (8 bytes; version 0) or the target and version
/// (16 bytes).
pub(crate) fn load_merged_into(engine: &KvEngine, source_id: u64) -> Result<Option<MergedInto>> {
    let Some(v) = engine.get(CF_RAFT, &merged_key(source_id))? else {
        return Ok(None);
    };
    let word = |at: usize| v.get(at..at + 8).and_then(|b| <[u8; 8]>::try_from(b).ok());
    let (Some(target), version) = (word(0), word(8)) else {
        return Err(corrupted("merged_into", v.len()));
    };
    let source = match v.get(16..) {
        None | Some([]) => None,
        Some(bytes) => Some(decode_region(bytes, "merged_into")?),
    };
    match (v.len(), version) {
        (8, _) | (16.., Some(_)) => Ok(Some(MergedInto {
            target: u64::from_be_bytes(target),
            version: version.map_or(0, u64::from_be_bytes),
            source,
        })),
        _ => Err(corrupted("merged_into", v.len())),
    }
}

/// An id (a big-endian u64) stored under `key` in CF raft, if any.
fn load_id(engine: &KvEngine, key: &[u8], what: &'static str) -> Result<Option<u64>> {
    let Some(v) = engine.get(CF_RAFT, key)? else {
        return Ok(None);
    };
    let id = <[u8; 8]>::try_from(v.as_slice()).map_err(|_| corrupted(what, v.len()))?;
    Ok(Some(u64::from_be_bytes(id)))
}

/// Records that the region prepared a merge (see `admin.rs`): the
/// PrepareMerge's index, then the request as applied.
pub(crate) fn put_merge_state(wb: &mut KvWriteBatch<'_>, region_id: u64, state: &MergeState) {
    let req = PrepareMergeRequest {
        min_index: state.min_index,
        target: Some(state.target.clone()),
    };
    let v = [&state.commit.to_be_bytes()[..], &req.encode_to_vec()].concat();
    wb.put(CF_RAFT, &merge_key(region_id), &v);
}

pub(crate) fn delete_merge_state(wb: &mut KvWriteBatch<'_>, region_id: u64) {
    wb.delete(CF_RAFT, &merge_key(region_id));
}

/// The merge the region prepared and has not finished or rolled back.
pub(crate) fn load_merge_state(engine: &KvEngine, region_id: u64) -> Result<Option<MergeState>> {
    let Some(v) = engine.get(CF_RAFT, &merge_key(region_id))? else {
        return Ok(None);
    };
    let bad = || corrupted("merge state", v.len());
    let commit = <[u8; 8]>::try_from(v.get(..8).ok_or_else(bad)?).map_err(|_| bad())?;
    let req = PrepareMergeRequest::decode(&v[8..]).map_err(|_| bad())?;
    Ok(Some(MergeState {
        min_index: req.min_index,
        commit: u64::from_be_bytes(commit),
        target: req.target.unwrap_or_default(),
    }))
}

fn merge_key(id: u64) -> Vec<u8> {
    [MERGE_STATE_PREFIX, &id.to_be_bytes()].concat()
}

fn merged_key(id: u64) -> Vec<u8> {
    [MERGED_PREFIX, &id.to_be_bytes()].concat()
}

fn pending_key(id: u64) -> Vec<u8> {
    [SNAPSHOT_PENDING_PREFIX, &id.to_be_bytes()].concat()
}

fn incarnation_key(id: u64) -> Vec<u8> {
    [INCARNATION_PREFIX, &id.to_be_bytes()].concat()
}

fn tombstone_key(id: u64) -> Vec<u8> {
    [TOMBSTONE_PREFIX, &id.to_be_bytes()].concat()
}

fn region_key(id: u64) -> Vec<u8> {
    [REGION_STATE_PREFIX, &id.to_be_bytes()].concat()
}

fn apply_key(id: u64) -> Vec<u8> {
    [APPLY_STATE_PREFIX, &id.to_be_bytes()].concat()
}

fn corrupted(what: &'static str, len: usize) -> crate::RaftstoreError {
    EngineError::Corrupted {
        what,
        detail: format!("unexpected length {len}"),
    }
    .into()
}

/// The first region recorded locally, if any (a bootstrap left half-done).
pub fn load_first_region(engine: &KvEngine) -> Result<Option<metapb::Region>> {
    Ok(load_regions(engine)?.into_iter().next())
}

/// Records the first region this store creates to bootstrap the cluster
/// with, and that PD has not yet taken it (see [`load_prepared_bootstrap`]).
pub fn write_prepared_bootstrap(engine: &KvEngine, region: &metapb::Region) -> Result<()> {
    let mut wb = engine.write_batch();
    put_initial_region(&mut wb, region);
    wb.put(CF_RAFT, PREPARE_BOOTSTRAP_KEY, &region.id.to_be_bytes());
    engine.write(wb, true)?;
    Ok(())
}

/// The region this store prepared to bootstrap the cluster with, while
/// PD's answer is not known: a crash or a failed request between writing
/// it and PD's answer leaves it, and only PD can say whether it is the
/// cluster's first region or another store's bootstrap won.
pub fn load_prepared_bootstrap(engine: &KvEngine) -> Result<Option<metapb::Region>> {
    let Some(id) = load_id(engine, PREPARE_BOOTSTRAP_KEY, "prepare bootstrap")? else {
        return Ok(None);
    };
    match engine.get(CF_RAFT, &region_key(id))? {
        Some(v) => Ok(Some(decode_region(&v, "region state")?)),
        None => Ok(None),
    }
}

/// PD took the prepared region as the cluster's first: it stays.
pub fn clear_prepared_bootstrap(engine: &KvEngine) -> Result<()> {
    let mut wb = engine.write_batch();
    wb.delete(CF_RAFT, PREPARE_BOOTSTRAP_KEY);
    engine.write(wb, true)?;
    Ok(())
}

/// Forgets a region that never started (a lost bootstrap race), and the
/// bootstrap mark with it.
pub fn remove_region(engine: &KvEngine, region_id: u64) -> Result<()> {
    let mut wb = engine.write_batch();
    wb.delete(CF_RAFT, &region_key(region_id));
    wb.delete(CF_RAFT, &apply_key(region_id));
    if load_id(engine, PREPARE_BOOTSTRAP_KEY, "prepare bootstrap")? == Some(region_id) {
        wb.delete(CF_RAFT, PREPARE_BOOTSTRAP_KEY);
    }
    engine.write(wb, true)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tombstone_keeps_the_region_and_reads_older_marks() {
        let dir = tempfile::tempdir().unwrap();
        let engine = KvEngine::open(dir.path()).unwrap();
        let region = metapb::Region {
            id: 4,
            start_key: b"a".to_vec(),
            region_epoch: Some(metapb::RegionEpoch {
                conf_ver: 6,
                version: 2,
            }),
            peers: vec![metapb::Peer {
                id: 9,
                store_id: 2,
                ..Default::default()
            }],
            ..Default::default()
        };
        let mut wb = engine.write_batch();
        put_tombstone(&mut wb, &region, 7);
        engine.write(wb, true).unwrap();
        let kept = Tombstone {
            peer_id: 7,
            region: Some(region),
        };
        assert_eq!(load_tombstone_state(&engine, 4).unwrap(), Some(kept));
        assert_eq!(load_tombstone(&engine, 4).unwrap(), Some(7));

        // A mark of an older binary: the id alone.
        let mut wb = engine.write_batch();
        wb.put(CF_RAFT, &tombstone_key(5), &8u64.to_be_bytes());
        wb.put(CF_RAFT, &tombstone_key(6), b"short");
        engine.write(wb, true).unwrap();
        let old = load_tombstone_state(&engine, 5).unwrap();
        assert_eq!(
            old,
            Some(Tombstone {
                peer_id: 8,
                region: None
            })
        );
        assert!(load_tombstone_state(&engine, 6).is_err());
        assert_eq!(load_tombstone_state(&engine, 7).unwrap(), None);
    }

    #[test]
    fn store_ident_region_and_apply_state_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let engine = KvEngine::open(dir.path()).unwrap();
        assert_eq!(load_store_ident(&engine).unwrap(), None);
        let ident = StoreIdent {
            cluster_id: 42,
            store_id: 7,
            api_version: 2,
        };
        write_store_ident(&engine, ident).unwrap();
        assert_eq!(load_store_ident(&engine).unwrap(), Some(ident));
        let v1 = StoreIdent {
            api_version: 1,
            ..ident
        };
        write_store_ident(&engine, v1).unwrap();
        assert_eq!(load_store_ident(&engine).unwrap(), Some(v1));
        let raw = engine.get(CF_RAFT, STORE_IDENT_KEY).unwrap().unwrap();
        assert_eq!(raw.len(), 16, "what older binaries read");

        let region = metapb::Region {
            id: 3,
            end_key: b"m".to_vec(),
            ..Default::default()
        };
        write_initial_region(&engine, &region).unwrap();
        assert_eq!(load_regions(&engine).unwrap(), vec![region]);
        let initial = load_apply_state(&engine, 3).unwrap();
        assert_eq!(initial.applied_index, INITIAL_INDEX);
        assert_eq!(initial.truncated_term, INITIAL_INDEX);
    }

    #[test]
    fn a_merged_into_mark_keeps_the_targets_version_and_the_source_and_reads_older_marks() {
        let dir = tempfile::tempdir().unwrap();
        let engine = KvEngine::open(dir.path()).unwrap();
        assert_eq!(load_merged_into(&engine, 5).unwrap(), None);
        let source = metapb::Region {
            id: 5,
            peers: vec![metapb::Peer {
                id: 6,
                store_id: 1,
                ..Default::default()
            }],
            ..Default::default()
        };
        let mut wb = engine.write_batch();
        put_merged_into(&mut wb, &source, 9, 12);
        engine.write(wb, false).unwrap();
        let mark = |target, version, source| {
            Some(MergedInto {
                target,
                version,
                source,
            })
        };
        assert_eq!(
            load_merged_into(&engine, 5).unwrap(),
            mark(9, 12, Some(source))
        );
        // Marks from before the source, and the version, were kept.
        let mut wb = engine.write_batch();
        wb.put(CF_RAFT, &merged_key(6), &9u64.to_be_bytes());
        let mut both = 9u64.to_be_bytes().to_vec();
        both.extend_from_slice(&12u64.to_be_bytes());
        wb.put(CF_RAFT, &merged_key(8), &both);
        engine.write(wb, false).unwrap();
        assert_eq!(load_merged_into(&engine, 6).unwrap(), mark(9, 0, None));
        assert_eq!(load_merged_into(&engine, 8).unwrap(), mark(9, 12, None));
        let mut wb = engine.write_batch();
        wb.put(CF_RAFT, &merged_key(7), &[1, 2, 3]);
        engine.write(wb, false).unwrap();
        assert!(load_merged_into(&engine, 7).is_err());
    }
}
