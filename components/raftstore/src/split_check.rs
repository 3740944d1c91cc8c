//! The split checker: measures a region and picks where it should split.
//!
//! A region's leader asks for a check once the commands it applied since
//! the last one add up to `region-split-check-diff` bytes, at most every
//! `split-region-check-tick-interval`. The check runs on its own thread
//! over a RocksDB snapshot (`Router` owns it), walking CF write and CF
//! default side by side in key order, and counts *user keys*: every
//! version of a transactional key (`memcomparable key | !ts`, in both CFs)
//! counts once, under its key without the timestamp, so a split key never
//! falls between two versions of one key. A raw key counts as itself
//! (with API V1 raw keys have no timestamp; a raw key that happens to look
//! like a versioned one is cut at its would-be key, still a valid boundary
//! for raw data). CF lock holds only in-flight transactions and is not
//! counted.
//!
//! Split keys, as TiKV picks them: when the region holds more than
//! `region-max-keys` keys, one every `region-split-keys` keys; else when it
//! holds more than `region-max-size` bytes, one every `region-split-size`
//! bytes; at most `batch-split-limit` per check (the rest is split at the
//! next check). The last piece is never left small: when it and one
//! split's worth together stay under the maximum, the last key goes and
//! the last two pieces stay one. Example with max-keys 10, split-keys 7: a
//! region of 16 keys `k01..k16` splits at `k08` only (7 and 9 keys, not 7,
//! 7 and 2: a 2-key region PD would merge straight back).

use std::time::Duration;

use tikal_codec::mvcc_key;
use tikal_engine::{KvEngine, KvSnapshot, CF_DEFAULT, CF_WRITE};
use tikal_proto::metapb;

use crate::peer::RegionStats;
use crate::Result;

/// `[raftstore] split-region-check-tick-interval`, `region-split-check-diff`
/// and the `[coprocessor]` split thresholds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SplitCheckConfig {
    pub tick: Duration,
    pub check_diff: u64,
    pub region_max_size: u64,
    pub region_split_size: u64,
    pub region_max_keys: u64,
    pub region_split_keys: u64,
    pub batch_split_limit: u64,
}

impl Default for SplitCheckConfig {
    /// Upstream's defaults.
    fn default() -> Self {
        SplitCheckConfig {
            tick: Duration::from_secs(10),
            check_diff: 6 << 20,
            region_max_size: 144 << 20,
            region_split_size: 96 << 20,
            region_max_keys: 1_440_000,
            region_split_keys: 960_000,
            batch_split_limit: 10,
        }
    }
}

/// What a check found: the region's size and keys, and where to split it
/// (empty: it need not split).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SplitCheck {
    pub stats: RegionStats,
    pub split_keys: Vec<Vec<u8>>,
}

/// The user key a stored key belongs to: a versioned transactional key
/// without its timestamp, anything else as it is.
pub fn user_key(stored: &[u8]) -> &[u8] {
    match mvcc_key::decode_key(stored) {
        Some((_, rest)) if rest.len() == 8 => &stored[..stored.len() - 8],
        _ => stored,
    }
}

/// Measures `region` as of now and picks its split keys (module docs).
pub fn check(kv: &KvEngine, region: &metapb::Region, cfg: &SplitCheckConfig) -> Result<SplitCheck> {
    let limit = cfg.batch_split_limit.max(1) as usize;
    let mut stats = RegionStats::default();
    let (mut by_keys, mut by_size) = (vec![], vec![]);
    let mut size_since_split = 0u64;
    // Keys before the last split key by count.
    let mut keys_before_split = 0u64;
    walk(&kv.snapshot(), region, |user, bytes, first| {
        if first {
            // A new user key: it may start the next region.
            let inside = user > region.start_key.as_slice();
            if inside
                && cfg.region_split_keys > 0
                && stats.keys > 0
                && stats.keys % cfg.region_split_keys == 0
                && by_keys.len() < limit
                && push_increasing(&mut by_keys, user)
            {
                keys_before_split = stats.keys;
            }
            if inside
                && size_since_split >= cfg.region_split_size.max(1)
                && by_size.len() < limit
                && push_increasing(&mut by_size, user)
            {
                size_since_split = 0;
            }
            stats.keys += 1;
        }
        stats.size = stats.size.saturating_add(bytes);
        size_since_split = size_since_split.saturating_add(bytes);
        true
    })?;
    let split_keys = if stats.keys > cfg.region_max_keys {
        let last_piece = stats.keys - keys_before_split;
        keep_last_piece_whole(
            by_keys,
            last_piece,
            cfg.region_split_keys,
            cfg.region_max_keys,
        )
    } else if stats.size > cfg.region_max_size {
        let (split, max) = (cfg.region_split_size, cfg.region_max_size);
        keep_last_piece_whole(by_size, size_since_split, split, max)
    } else {
        vec![]
    };
    Ok(SplitCheck { stats, split_keys })
}

/// Drops the last split key when the piece after it (`last_piece`, keys
/// or bytes) and one split's worth together stay under `max`: the last
/// two pieces then stay one region, under the maximum, rather than leave
/// a small one behind (as TiKV's checkers pick them).
fn keep_last_piece_whole(
    mut keys: Vec<Vec<u8>>,
    last_piece: u64,
    split: u64,
    max: u64,
) -> Vec<Vec<u8>> {
    if last_piece.saturating_add(split) < max {
        keys.pop();
    }
    keys
}

/// Measures `region` and picks one split key: the user-key boundary
/// nearest half its bytes (none when it holds fewer than two user keys).
/// PD's split-region operator asks for this with its `scan` and
/// `approximate` policies; both scan here.
pub fn half(kv: &KvEngine, region: &metapb::Region) -> Result<SplitCheck> {
    let snap = kv.snapshot();
    let mut stats = RegionStats::default();
    walk(&snap, region, |_, bytes, first| {
        stats.keys += u64::from(first);
        stats.size = stats.size.saturating_add(bytes);
        true
    })?;
    let middle = stats.size / 2;
    // The last boundary before the middle: a key and the bytes before it.
    let mut below: Option<(Vec<u8>, u64)> = None;
    let mut split_keys = vec![];
    let mut before = 0u64;
    walk(&snap, region, |user, bytes, first| {
        if first && before > 0 && user > region.start_key.as_slice() {
            if before >= middle {
                split_keys.push(match below.take() {
                    Some((key, b)) if middle - b < before - middle => key,
                    _ => user.to_vec(),
                });
                return false;
            }
            let (key, b) = below.get_or_insert_with(|| (vec![], 0));
            key.clear();
            key.extend_from_slice(user);
            *b = before;
        }
        before = before.saturating_add(bytes);
        true
    })?;
    if split_keys.is_empty() {
        // The last user key starts before the middle (it holds more than
        // half): its boundary is the nearest.
        split_keys.extend(below.map(|(key, _)| key));
    }
    Ok(SplitCheck { stats, split_keys })
}

/// Walks `region`'s CF write and CF default side by side in key order
/// (module docs), calling `f(user_key, bytes, first)` for each entry:
/// its user key, its size, and whether it is the first entry of that
/// user key. Stops early when `f` returns false.
fn walk(
    snap: &KvSnapshot<'_>,
    region: &metapb::Region,
    mut f: impl FnMut(&[u8], u64, bool) -> bool,
) -> Result<()> {
    let mut write = snap
        .iter(CF_WRITE, &region.start_key, &region.end_key)
        .peekable();
    let mut default = snap
        .iter(CF_DEFAULT, &region.start_key, &region.end_key)
        .peekable();
    let mut last: Option<Vec<u8>> = None;
    loop {
        // The smaller of the two CFs' next keys.
        let from_write = match (write.peek(), default.peek()) {
            (None, None) => break,
            (Some(Ok((w, _))), Some(Ok((d, _)))) => w <= d,
            (Some(_), _) => true,
            (None, Some(_)) => false,
        };
        let next = if from_write {
            write.next()
        } else {
            default.next()
        };
        let Some(item) = next else { break };
        let (key, value) = item?;
        let bytes = (key.len() + value.len()) as u64;
        let user = user_key(&key);
        let first = last.as_deref() != Some(user);
        if first {
            let last = last.get_or_insert_with(Vec::new);
            last.clear();
            last.extend_from_slice(user);
        }
        if !f(user, bytes, first) {
            break;
        }
    }
    Ok(())
}

/// Keeps split keys strictly increasing (a raw key may sort between a
/// versioned key and the key it belongs to).
/// Pushes `key` if it is past the last one; says whether it did.
fn push_increasing(keys: &mut Vec<Vec<u8>>, key: &[u8]) -> bool {
    let past = keys.last().is_none_or(|k| k.as_slice() < key);
    if past {
        keys.push(key.to_vec());
    }
    past
}

#[cfg(test)]
mod tests {
    use super::*;

    fn region(start: &[u8], end: &[u8]) -> metapb::Region {
        metapb::Region {
            id: 1,
            start_key: start.to_vec(),
            end_key: end.to_vec(),
            ..Default::default()
        }
    }

    fn cfg(max_keys: u64, split_keys: u64) -> SplitCheckConfig {
        SplitCheckConfig {
            region_max_keys: max_keys,
            region_split_keys: split_keys,
            ..Default::default()
        }
    }

    fn versioned(key: &[u8], ts: u64) -> Vec<u8> {
        mvcc_key::append_ts(mvcc_key::encode_key(key), ts)
    }

    #[test]
    fn raw_keys_split_every_split_keys_once_over_max_keys() {
        let dir = tempfile::tempdir().unwrap();
        let kv = KvEngine::open(dir.path()).unwrap();
        let mut wb = kv.write_batch();
        for i in 1..=16 {
            wb.put(CF_DEFAULT, format!("k{i:02}").as_bytes(), b"v");
        }
        kv.write(wb, false).unwrap();
        let found = check(&kv, &region(b"", b""), &cfg(10, 7)).unwrap();
        assert_eq!(found.stats.keys, 16);
        // k15 would leave a region of 2 keys: k08 alone, 7 and 9 keys.
        assert_eq!(found.split_keys, vec![b"k08".to_vec()]);
        // Within the limit nothing splits; the range bounds the count.
        let found = check(&kv, &region(b"k10", b""), &cfg(10, 7)).unwrap();
        assert_eq!((found.stats.keys, found.split_keys.len()), (7, 0));
        // With 17 keys the last piece (3) and a split's worth (7) reach
        // the maximum: both keys.
        let mut wb = kv.write_batch();
        wb.put(CF_DEFAULT, b"k17", b"v");
        kv.write(wb, false).unwrap();
        let found = check(&kv, &region(b"", b""), &cfg(10, 7)).unwrap();
        assert_eq!(found.split_keys, vec![b"k08".to_vec(), b"k15".to_vec()]);
    }

    #[test]
    fn versions_of_one_key_count_once_and_are_never_split_apart() {
        let dir = tempfile::tempdir().unwrap();
        let kv = KvEngine::open(dir.path()).unwrap();
        let mut wb = kv.write_batch();
        for i in 0..6u64 {
            let key = format!("t{i}");
            for ts in [10, 20, 30] {
                wb.put(CF_WRITE, &versioned(key.as_bytes(), ts), b"w");
            }
            // A long value in CF default, under the same key.
            wb.put(CF_DEFAULT, &versioned(key.as_bytes(), 5), &[7; 300]);
        }
        kv.write(wb, false).unwrap();
        let found = check(&kv, &region(b"", b""), &cfg(4, 2)).unwrap();
        assert_eq!(found.stats.keys, 6);
        let expected: Vec<Vec<u8>> = ["t2", "t4"]
            .iter()
            .map(|k| mvcc_key::encode_key(k.as_bytes()))
            .collect();
        assert_eq!(found.split_keys, expected);
        assert!(found.stats.size > 6 * 300);
    }

    #[test]
    fn half_splits_at_the_boundary_nearest_the_middle_never_inside_a_key() {
        let dir = tempfile::tempdir().unwrap();
        let kv = KvEngine::open(dir.path()).unwrap();
        let mut wb = kv.write_batch();
        // a and b: 100 bytes each; c: two versions of 208; d: 100.
        wb.put(CF_DEFAULT, b"a", &[0; 99]);
        wb.put(CF_DEFAULT, b"b", &[0; 99]);
        let c = mvcc_key::encode_key(b"c");
        for ts in [10, 20] {
            wb.put(CF_WRITE, &versioned(b"c", ts), &[0; 191]);
        }
        wb.put(CF_DEFAULT, b"d", &[0; 99]);
        kv.write(wb, false).unwrap();
        let found = half(&kv, &region(b"", b"")).unwrap();
        assert_eq!((found.stats.keys, found.stats.size), (4, 716));
        // The middle (358) lies inside c's versions: 200 bytes before c,
        // 616 before d. c's boundary is nearer, and the split is at c's
        // user key, not between its versions.
        assert_eq!(found.split_keys, vec![c.clone()]);
        // a and b alone: the middle is b's boundary.
        let found = half(&kv, &region(b"", b"b\xff")).unwrap();
        assert_eq!(found.split_keys, vec![b"b".to_vec()]);
        // c's versions and d: c holds 416 of 516 bytes, so the middle lies
        // inside the first key, and d's boundary is the only one.
        let found = half(&kv, &region(&c, b"")).unwrap();
        assert_eq!(found.split_keys, vec![b"d".to_vec()]);
        // a and b and c: the last key holds more than half; its boundary
        // is the nearest to the middle.
        let found = half(&kv, &region(b"", b"c\xff")).unwrap();
        assert_eq!((found.stats.size, found.split_keys), (616, vec![c]));
        // One key, or none: nothing to split.
        assert!(half(&kv, &region(b"d", b"")).unwrap().split_keys.is_empty());
        assert!(half(&kv, &region(b"x", b"")).unwrap().split_keys.is_empty());
    }

    #[test]
    fn size_splits_when_keys_are_few_but_large() {
        let dir = tempfile::tempdir().unwrap();
        let kv = KvEngine::open(dir.path()).unwrap();
        let mut wb = kv.write_batch();
        for i in 0..10 {
            wb.put(CF_DEFAULT, format!("big{i}").as_bytes(), &[1; 1000]);
        }
        kv.write(wb, false).unwrap();
        let cfg = SplitCheckConfig {
            region_max_size: 5000,
            region_split_size: 3000,
            ..Default::default()
        };
        let found = check(&kv, &region(b"", b""), &cfg).unwrap();
        // big9 would leave a region of one key; big6..big9 stay whole.
        assert_eq!(found.split_keys, vec![b"big3".to_vec(), b"big6".to_vec()]);
    }
}
