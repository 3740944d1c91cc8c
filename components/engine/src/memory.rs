//! An in-memory engine: one ordered map per column family. It keeps no
//! bytes on disk and fails no read; it exists so MVCC, the transactional
//! commands and the raw apply path are tested without RocksDB or a Raft
//! thread, as TiKV tests on its `BTreeEngine` and toydb on its `Memory`.

use std::collections::BTreeMap;
use std::ops::Bound;
use std::sync::Arc;

use parking_lot::RwLock;

use crate::kv::ALL_CFS;
use crate::{Cf, KvApply, KvRead, Result};

type Map = BTreeMap<Vec<u8>, Vec<u8>>;

/// Cheap to clone; clones share the data.
#[derive(Clone, Default)]
pub struct MemEngine {
    cfs: Arc<RwLock<[Map; ALL_CFS.len()]>>,
}

impl MemEngine {
    pub fn new() -> MemEngine {
        MemEngine::default()
    }

    /// Every pair of `cf`, in key order.
    pub fn dump(&self, cf: Cf) -> Vec<(Vec<u8>, Vec<u8>)> {
        let cfs = self.cfs.read();
        cfs[cf as usize]
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }
}

impl KvRead for MemEngine {
    fn get(&self, cf: Cf, key: &[u8]) -> Result<Option<Vec<u8>>> {
        Ok(self.cfs.read()[cf as usize].get(key).cloned())
    }

    fn scan(
        &self,
        cf: Cf,
        start: &[u8],
        end: &[u8],
        reverse: bool,
        visit: &mut dyn FnMut(&[u8], &[u8]) -> bool,
    ) -> Result<()> {
        if !end.is_empty() && start >= end {
            return Ok(());
        }
        let upper = match end.is_empty() {
            true => Bound::Unbounded,
            false => Bound::Excluded(end),
        };
        let cfs = self.cfs.read();
        let range = cfs[cf as usize].range::<[u8], _>((Bound::Included(start), upper));
        let items: Box<dyn Iterator<Item = (&Vec<u8>, &Vec<u8>)>> = match reverse {
            true => Box::new(range.rev()),
            false => Box::new(range),
        };
        for (k, v) in items {
            if !visit(k, v) {
                break;
            }
        }
        Ok(())
    }
}

/// Writes apply at once: an apply round on the in-memory engine reads its
/// own writes trivially.
impl KvApply for MemEngine {
    fn get(&mut self, cf: Cf, key: &[u8]) -> Result<Option<Vec<u8>>> {
        KvRead::get(self, cf, key)
    }

    fn put(&mut self, cf: Cf, key: &[u8], value: &[u8]) {
        self.cfs.write()[cf as usize].insert(key.to_vec(), value.to_vec());
    }

    fn delete(&mut self, cf: Cf, key: &[u8]) {
        self.cfs.write()[cf as usize].remove(key);
    }

    fn delete_range(&mut self, cf: Cf, start: &[u8], end: &[u8]) {
        let mut cfs = self.cfs.write();
        let map = &mut cfs[cf as usize];
        let doomed: Vec<Vec<u8>> = map
            .range::<[u8], _>((Bound::Included(start), Bound::Unbounded))
            .map(|(k, _)| k)
            .take_while(|k| end.is_empty() || k.as_slice() < end)
            .cloned()
            .collect();
        for k in doomed {
            map.remove(&k);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scans_honour_bounds_and_direction_and_ranges_delete() {
        let mut e = MemEngine::new();
        for k in [b"a", b"b", b"c", b"d"] {
            e.put(Cf::Default, k, k);
        }
        let mut seen = vec![];
        e.scan(Cf::Default, b"b", b"d", false, &mut |k, _| {
            seen.push(k.to_vec());
            true
        })
        .unwrap();
        assert_eq!(seen, vec![b"b".to_vec(), b"c".to_vec()]);
        seen.clear();
        e.scan(Cf::Default, b"a", b"", true, &mut |k, _| {
            seen.push(k.to_vec());
            seen.len() < 2
        })
        .unwrap();
        assert_eq!(seen, vec![b"d".to_vec(), b"c".to_vec()]);
        e.delete_range(Cf::Default, b"b", b"");
        assert_eq!(e.dump(Cf::Default), vec![(b"a".to_vec(), b"a".to_vec())]);
        assert_eq!(KvRead::get(&e, Cf::Lock, b"a").unwrap(), None);
    }
}
