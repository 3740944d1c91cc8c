//! What a Raft entry carries, and the administrative commands a region runs
//! on itself through its log (split, merge and log compaction).
//!
//! A normal entry's context says what its data is:
//!
//! | context                          | data                              |
//! |----------------------------------|-----------------------------------|
//! | empty                            | a client command, no epoch known (written by older versions) |
//! | `1`, version, conf_ver (u64 BE)  | a client command proposed at that epoch |
//! | `2`, version, conf_ver (u64 BE)  | a `raft_cmdpb.AdminRequest`       |
//! | `3`, version, conf_ver (u64 BE)  | client commands, each a u32 BE length and its bytes |
//!
//! A leader proposes the client commands it took in during one round as
//! one entry (kind `3`, as TiKV batches a peer's writes): raft-rs then
//! appends, sends, persists and commits one entry for all of them. They
//! are applied one by one, in order, each as if it were alone, and each
//! proposer hears its own command's result.
//!
//! The epoch is checked again when the entry is applied, because the
//! region may have changed between proposal and apply: a write proposed
//! before a split, whose key the split moved to another region, must not be
//! applied through this region's log (the other region's log may order
//! writes to that key differently, and replicas would diverge). Every
//! replica applies the same entries to the same region state, so all of
//! them skip such an entry alike, and its proposer gets EpochNotMatch.
//!
//! A batch split of region `[a, z)` at keys `m`, `t` (right-derived, as
//! TiKV splits by default) leaves the parent id on `[t, z)` and makes two
//! new regions `[a, m)` and `[m, t)`; all three take version
//! `parent version + 2` and keep the parent's conf_ver and stores, with new
//! peer ids. The data stays where it is (every region of a store shares
//! one engine); only the regions' metadata changes.
//!
//! A merge of a source region into an adjacent target on the same stores
//! takes three admin commands, as TiKV's:
//!
//! 1. **PrepareMerge**, in the source's log: from its index on the source
//!    takes no proposals (its version and conf_ver go up by one, so any
//!    command proposed before it is skipped at apply), and records the
//!    target as the leader saw it and `min_index`, the lowest index every
//!    source peer had then.
//! 2. **CommitMerge**, in the target's log, proposed by the source's
//!    leader through its own store's target peer once that one leads. It
//!    carries the source region, the PrepareMerge index (`commit`) and the
//!    source's entries after `min_index` up to it. Each target replica that
//!    applies it first brings its store's source peer to `commit` (from
//!    that peer's log and the carried entries), so the source's data is
//!    complete there; then the target takes the source's range, its
//!    version becomes one more than the larger of the two, and the source
//!    peer is forgotten (its data stays: it is now the target's).
//!    The entry is proposed at the target's epoch PrepareMerge recorded: if
//!    the target changed since, every replica refuses it alike.
//! 3. **RollbackMerge**, in the source's log, once a quorum of its voters
//!    found their store's target peer at a newer epoch than recorded, or
//!    destroyed: no CommitMerge can apply any more, so the source takes
//!    proposals again (its version goes up once more).
//!
//! **CompactLog** is log GC, decided by the leader alone: it picks an index
//! its followers' progress allows (or, past the count or size limit, its
//! applied index) and every replica drops its entries up to there when it
//! applies the command. No follower truncates by itself, so a follower that
//! takes over still holds what the leader kept for its slowest peer, such
//! as the entries a CommitMerge built from its log must carry.

use prost::Message as _;
use tikal_proto::metapb;
use tikal_proto::raft_cmdpb::{
    AdminCmdType, AdminRequest, BatchSplitRequest, CommitMergeRequest, CompactLogRequest,
    PrepareMergeRequest, RollbackMergeRequest,
};

const COMMAND: u8 = 1;
const ADMIN: u8 = 2;
const COMMANDS: u8 = 3;

/// What a committed normal entry holds.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum EntryKind {
    /// A client command, with the epoch it was proposed at if recorded.
    Command(Option<metapb::RegionEpoch>),
    /// Client commands proposed together (see [`encode_commands`]).
    Commands(metapb::RegionEpoch),
    Admin(metapb::RegionEpoch),
}

/// The context of an entry proposed at `epoch`.
pub(crate) fn entry_context(admin: bool, epoch: &metapb::RegionEpoch) -> Vec<u8> {
    context(if admin { ADMIN } else { COMMAND }, epoch)
}

/// The context of client commands proposed together at `epoch`.
pub(crate) fn commands_context(epoch: &metapb::RegionEpoch) -> Vec<u8> {
    context(COMMANDS, epoch)
}

fn context(kind: u8, epoch: &metapb::RegionEpoch) -> Vec<u8> {
    let mut out = Vec::with_capacity(17);
    out.push(kind);
    out.extend_from_slice(&epoch.version.to_be_bytes());
    out.extend_from_slice(&epoch.conf_ver.to_be_bytes());
    out
}

/// Reads an entry's context; `None` if no version of Tikal wrote it.
pub(crate) fn entry_kind(context: &[u8]) -> Option<EntryKind> {
    if context.is_empty() {
        return Some(EntryKind::Command(None));
    }
    if context.len() != 17 {
        return None;
    }
    let word = |i: usize| {
        let bytes: [u8; 8] = context[i..i + 8].try_into().ok()?;
        Some(u64::from_be_bytes(bytes))
    };
    let epoch = metapb::RegionEpoch {
        version: word(1)?,
        conf_ver: word(9)?,
    };
    match context[0] {
        COMMAND => Some(EntryKind::Command(Some(epoch))),
        ADMIN => Some(EntryKind::Admin(epoch)),
        COMMANDS => Some(EntryKind::Commands(epoch)),
        _ => None,
    }
}

/// The data of an entry of client commands proposed together; `None` if
/// a command is too long to frame (4 GiB; far above any batch's bound).
pub(crate) fn encode_commands(cmds: &[Vec<u8>]) -> Option<Vec<u8>> {
    let total = cmds.iter().map(|c| c.len() + 4).sum();
    let mut out = Vec::with_capacity(total);
    for cmd in cmds {
        out.extend_from_slice(&u32::try_from(cmd.len()).ok()?.to_be_bytes());
        out.extend_from_slice(cmd);
    }
    Some(out)
}

/// The commands of an entry [`encode_commands`] wrote; `None` if the data
/// is not such a list.
pub(crate) fn decode_commands(mut data: &[u8]) -> Option<Vec<&[u8]>> {
    let mut cmds = vec![];
    while !data.is_empty() {
        let (len, rest) = data.split_first_chunk::<4>()?;
        let len = usize::try_from(u32::from_be_bytes(*len)).ok()?;
        if rest.len() < len {
            return None;
        }
        let (cmd, rest) = rest.split_at(len);
        cmds.push(cmd);
        data = rest;
    }
    Some(cmds)
}

/// Encodes a batch split as an admin entry's data.
pub(crate) fn encode_batch_split(req: BatchSplitRequest) -> Vec<u8> {
    AdminRequest {
        cmd_type: AdminCmdType::BatchSplit as i32,
        splits: Some(req),
        ..Default::default()
    }
    .encode_to_vec()
}

/// Encodes a PrepareMerge as an admin entry's data.
pub(crate) fn encode_prepare_merge(min_index: u64, target: metapb::Region) -> Vec<u8> {
    AdminRequest {
        cmd_type: AdminCmdType::PrepareMerge as i32,
        prepare_merge: Some(PrepareMergeRequest {
            min_index,
            target: Some(target),
        }),
        ..Default::default()
    }
    .encode_to_vec()
}

/// Encodes a CommitMerge as an admin entry's data.
pub(crate) fn encode_commit_merge(req: CommitMergeRequest) -> Vec<u8> {
    AdminRequest {
        cmd_type: AdminCmdType::CommitMerge as i32,
        commit_merge: Some(req),
        ..Default::default()
    }
    .encode_to_vec()
}

/// Encodes a CompactLog as an admin entry's data.
pub(crate) fn encode_compact_log(compact_index: u64, compact_term: u64) -> Vec<u8> {
    AdminRequest {
        cmd_type: AdminCmdType::CompactLog as i32,
        compact_log: Some(CompactLogRequest {
            compact_index,
            compact_term,
        }),
        ..Default::default()
    }
    .encode_to_vec()
}

/// Encodes a RollbackMerge as an admin entry's data.
pub(crate) fn encode_rollback_merge(commit: u64) -> Vec<u8> {
    AdminRequest {
        cmd_type: AdminCmdType::RollbackMerge as i32,
        rollback_merge: Some(RollbackMergeRequest { commit }),
        ..Default::default()
    }
    .encode_to_vec()
}

/// What a source region's PrepareMerge recorded: the target as its leader
/// saw it, the lowest index every source peer had, and the PrepareMerge's
/// own index.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct MergeState {
    pub min_index: u64,
    pub commit: u64,
    pub target: metapb::Region,
}

/// The region `source` and `target` make together, or why they cannot
/// merge: they must be adjacent and on the same stores, each with the same
/// role in both (voter, learner). The result has the
/// target's id, peers and conf_ver, and a version above both.
pub(crate) fn merged_region(
    target: &metapb::Region,
    source: &metapb::Region,
) -> std::result::Result<metapb::Region, String> {
    if source.id == target.id {
        return Err("a region cannot merge into itself".into());
    }
    // Each store with the same role in both, as TiKV checks: a rolled-back
    // merge relies on the source's voters being the target's (see
    // `Peer::rollback_merge_agreed`).
    let stores = |r: &metapb::Region| {
        let mut s: Vec<(u64, i32)> = r.peers.iter().map(|p| (p.store_id, p.role)).collect();
        s.sort_unstable();
        s
    };
    if stores(source) != stores(target) {
        return Err(format!(
            "source {} and target {} are not on the same stores with the same roles",
            source.id, target.id
        ));
    }
    let mut merged = target.clone();
    if !source.end_key.is_empty() && source.end_key == target.start_key {
        merged.start_key = source.start_key.clone();
    } else if !target.end_key.is_empty() && target.end_key == source.start_key {
        merged.end_key = source.end_key.clone();
    } else {
        return Err(format!(
            "source {} and target {} are not adjacent",
            source.id, target.id
        ));
    }
    let version = crate::region_version;
    let epoch = merged.region_epoch.get_or_insert_with(Default::default);
    epoch.version = version(source)
        .max(version(target))
        .checked_add(1)
        .ok_or("region version overflow")?;
    Ok(merged)
}

/// Why `region` cannot split at `keys`, if it cannot: the keys must be
/// strictly inside the region's range and strictly increasing.
pub(crate) fn check_split_keys(
    region: &metapb::Region,
    keys: &[Vec<u8>],
) -> std::result::Result<(), String> {
    if keys.is_empty() {
        return Err("no split key".into());
    }
    let mut previous: &[u8] = &region.start_key;
    for key in keys {
        if key.is_empty() || key.as_slice() <= previous {
            return Err(format!(
                "split key {} is not after {} (keys must be inside the region and increasing)",
                hex(key),
                hex(previous)
            ));
        }
        if !region.end_key.is_empty() && key.as_slice() >= region.end_key.as_slice() {
            return Err(format!(
                "split key {} is not before the region's end {}",
                hex(key),
                hex(&region.end_key)
            ));
        }
        previous = key;
    }
    Ok(())
}

/// The regions a batch split makes of `region`, in key order; the last
/// keeps the parent's id (right-derived). Refuses what every replica
/// refuses alike: bad keys, or new peer ids that do not match the peers.
pub(crate) fn split_regions(
    region: &metapb::Region,
    req: &BatchSplitRequest,
) -> std::result::Result<Vec<metapb::Region>, String> {
    let keys: Vec<Vec<u8>> = req.requests.iter().map(|r| r.split_key.clone()).collect();
    check_split_keys(region, &keys)?;
    for r in &req.requests {
        if r.new_region_id == 0 || r.new_region_id == region.id {
            return Err(format!("bad new region id {}", r.new_region_id));
        }
        if r.new_peer_ids.len() != region.peers.len() || r.new_peer_ids.contains(&0) {
            return Err(format!(
                "{} new peer ids for {} peers",
                r.new_peer_ids.len(),
                region.peers.len()
            ));
        }
    }
    let mut epoch = region.region_epoch.clone().unwrap_or_default();
    epoch.version = epoch
        .version
        .checked_add(req.requests.len() as u64)
        .ok_or("region version overflow")?;
    let mut out = Vec::with_capacity(req.requests.len() + 1);
    let mut start = region.start_key.clone();
    for r in &req.requests {
        let peers = region
            .peers
            .iter()
            .zip(&r.new_peer_ids)
            .map(|(p, id)| metapb::Peer {
                id: *id,
                ..p.clone()
            })
            .collect();
        out.push(metapb::Region {
            id: r.new_region_id,
            start_key: std::mem::replace(&mut start, r.split_key.clone()),
            end_key: r.split_key.clone(),
            region_epoch: Some(epoch.clone()),
            peers,
            ..region.clone()
        });
    }
    out.push(metapb::Region {
        start_key: start,
        region_epoch: Some(epoch),
        ..region.clone()
    });
    Ok(out)
}

/// Lower-case hex of a key, for messages.
pub(crate) fn hex(key: &[u8]) -> String {
    key.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use tikal_proto::raft_cmdpb::SplitRequest;

    fn region() -> metapb::Region {
        metapb::Region {
            id: 1,
            start_key: b"a".to_vec(),
            end_key: b"z".to_vec(),
            region_epoch: Some(metapb::RegionEpoch {
                conf_ver: 3,
                version: 4,
            }),
            peers: (1..=3)
                .map(|s| metapb::Peer {
                    id: 10 + s,
                    store_id: s,
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        }
    }

    fn split(keys: &[&str]) -> BatchSplitRequest {
        BatchSplitRequest {
            requests: keys
                .iter()
                .enumerate()
                .map(|(i, k)| SplitRequest {
                    split_key: k.as_bytes().to_vec(),
                    new_region_id: 100 + i as u64,
                    new_peer_ids: vec![200 + 3 * i as u64, 201 + 3 * i as u64, 202 + 3 * i as u64],
                    ..Default::default()
                })
                .collect(),
            right_derive: true,
            ..Default::default()
        }
    }

    #[test]
    fn a_batch_split_leaves_the_parent_id_on_the_last_range() {
        let regions = split_regions(&region(), &split(&["m", "t"])).unwrap();
        let shape: Vec<String> = regions
            .iter()
            .map(|r| {
                let e = r.region_epoch.clone().unwrap();
                format!(
                    "{} [{}..{}) v{} c{}",
                    r.id,
                    String::from_utf8_lossy(&r.start_key),
                    String::from_utf8_lossy(&r.end_key),
                    e.version,
                    e.conf_ver
                )
            })
            .collect();
        assert_eq!(
            shape,
            ["100 [a..m) v6 c3", "101 [m..t) v6 c3", "1 [t..z) v6 c3"]
        );
        let stores: Vec<(u64, u64)> = regions[1]
            .peers
            .iter()
            .map(|p| (p.id, p.store_id))
            .collect();
        assert_eq!(stores, vec![(203, 1), (204, 2), (205, 3)]);
    }

    #[test]
    fn split_keys_must_be_inside_and_increasing() {
        for bad in [&["a"][..], &["z"], &["zz"], &["m", "m"], &["t", "m"], &[""]] {
            assert!(split_regions(&region(), &split(bad)).is_err(), "{bad:?}");
        }
        let mut short = split(&["m"]);
        short.requests[0].new_peer_ids.pop();
        assert!(split_regions(&region(), &short).is_err());
        let mut open = region();
        open.end_key.clear();
        assert!(split_regions(&open, &split(&["zz"])).is_ok());
    }

    #[test]
    fn a_merged_region_spans_both_at_a_newer_version() {
        let shape = |r: &metapb::Region| {
            format!(
                "{} [{}..{}) v{}",
                r.id,
                String::from_utf8_lossy(&r.start_key),
                String::from_utf8_lossy(&r.end_key),
                r.region_epoch.clone().unwrap().version
            )
        };
        let target = region();
        let mut left = region();
        left.id = 2;
        left.start_key = b"".to_vec();
        left.end_key = b"a".to_vec();
        left.region_epoch.as_mut().unwrap().version = 9;
        assert_eq!(
            shape(&merged_region(&target, &left).unwrap()),
            "1 [..z) v10"
        );
        let mut right = left.clone();
        right.start_key = b"z".to_vec();
        right.end_key = vec![];
        assert_eq!(
            shape(&merged_region(&target, &right).unwrap()),
            "1 [a..) v10"
        );
        // Not adjacent, not on the same stores (or not with the same
        // roles there), or itself: refused.
        let mut apart = right.clone();
        apart.start_key = b"zz".to_vec();
        assert!(merged_region(&target, &apart).is_err());
        let mut elsewhere = left.clone();
        elsewhere.peers[0].store_id = 9;
        assert!(merged_region(&target, &elsewhere).is_err());
        let mut learner_there = left.clone();
        learner_there.peers[0].role = metapb::PeerRole::Learner as i32;
        assert!(merged_region(&target, &learner_there).is_err());
        assert!(merged_region(&target, &target).is_err());
    }

    #[test]
    fn commands_round_trip_and_a_torn_list_is_refused() {
        let cmds = vec![b"put a".to_vec(), vec![], vec![7; 300]];
        let data = encode_commands(&cmds).unwrap();
        let back = decode_commands(&data).unwrap();
        assert_eq!(back, cmds.iter().map(Vec::as_slice).collect::<Vec<_>>());
        assert_eq!(decode_commands(&[]), Some(vec![]));
        // A length longer than what follows, or a torn length.
        assert_eq!(decode_commands(&data[..data.len() - 1]), None);
        assert_eq!(decode_commands(&[0, 0, 1]), None);
        assert_eq!(decode_commands(&[0, 0, 0, 9, 1]), None);
    }

    #[test]
    fn entry_contexts_round_trip_and_unknown_ones_are_refused() {
        let epoch = metapb::RegionEpoch {
            conf_ver: 7,
            version: 9,
        };
        assert_eq!(
            entry_kind(&entry_context(false, &epoch)),
            Some(EntryKind::Command(Some(epoch.clone())))
        );
        assert_eq!(
            entry_kind(&entry_context(true, &epoch)),
            Some(EntryKind::Admin(epoch.clone()))
        );
        assert_eq!(
            entry_kind(&commands_context(&epoch)),
            Some(EntryKind::Commands(epoch))
        );
        assert_eq!(entry_kind(b""), Some(EntryKind::Command(None)));
        assert_eq!(entry_kind(b"x"), None);
        assert_eq!(entry_kind(&[9; 17]), None);
    }
}
