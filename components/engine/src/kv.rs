//! The KV engine: RocksDB with TiKV's column families.

use std::path::Path;
use std::sync::Arc;

use rocksdb::{
    ColumnFamilyDescriptor, Direction, IteratorMode, Options, ReadOptions, WriteBatch,
    WriteOptions, DB,
};

use crate::{Result, WriteBudget};

/// A column family of the KV engine. Being an enum, an unknown name cannot
/// reach the engine: names from clients or the Raft log are parsed first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cf {
    Default,
    Lock,
    Write,
    /// Store-local metadata; never visible to clients.
    Raft,
}

pub const CF_DEFAULT: Cf = Cf::Default;
pub const CF_LOCK: Cf = Cf::Lock;
pub const CF_WRITE: Cf = Cf::Write;
pub const CF_RAFT: Cf = Cf::Raft;

/// The column families clients may address.
pub const DATA_CFS: [Cf; 3] = [CF_DEFAULT, CF_LOCK, CF_WRITE];
/// Memtable size of the raft column family.
const RAFT_CF_WRITE_BUFFER: usize = 2 << 20;

pub(crate) const ALL_CFS: [Cf; 4] = [CF_DEFAULT, CF_LOCK, CF_WRITE, CF_RAFT];

impl Cf {
    /// The name as clients send it (`cf` field of raw requests).
    pub fn name(self) -> &'static str {
        match self {
            Cf::Default => "default",
            Cf::Lock => "lock",
            Cf::Write => "write",
            Cf::Raft => "raft",
        }
    }

    /// Any column family by name, including `raft`.
    pub fn from_name(name: &str) -> Option<Cf> {
        ALL_CFS.into_iter().find(|cf| cf.name() == name)
    }
}

/// RocksDB opened with the column families above. Cheap to clone.
#[derive(Clone)]
pub struct KvEngine {
    db: Arc<DB>,
    budget: WriteBudget,
}

/// Which key-value pairs of the default column family compaction may drop:
/// `(key, value)` to true for a pair that reads as absent whatever it
/// covers (API V2's raw tombstones). RocksDB turns a dropped pair into a
/// deletion, so older values under it never come back.
pub type DropFilter = fn(&[u8], &[u8]) -> bool;

impl KvEngine {
    pub fn open(path: &Path) -> Result<KvEngine> {
        KvEngine::open_with(path, None)
    }

    /// Opens the engine; `drop` filters the default column family's
    /// compactions (see [`DropFilter`]).
    pub fn open_with(path: &Path, drop: Option<DropFilter>) -> Result<KvEngine> {
        let mut opts = Options::default();
        opts.create_if_missing(true);
        opts.create_missing_column_families(true);
        opts.set_max_background_jobs(2);
        opts.set_bytes_per_sync(1 << 20);
        let cfs = ALL_CFS.iter().map(|cf| {
            let mut cf_opts = Options::default();
            cf_opts.set_compression_type(rocksdb::DBCompressionType::Lz4);
            if *cf == CF_RAFT {
                // Each region's apply state is rewritten every round: a
                // small memtable keeps the versions a write searches
                // through few and in cache, and flushes to a few keys.
                cf_opts.set_write_buffer_size(RAFT_CF_WRITE_BUFFER);
            }
            if let (Some(drop), CF_DEFAULT) = (drop, *cf) {
                cf_opts.set_compaction_filter("tikal-drop", move |_level, key, value| {
                    if drop(key, value) {
                        rocksdb::CompactionDecision::Remove
                    } else {
                        rocksdb::CompactionDecision::Keep
                    }
                });
            }
            ColumnFamilyDescriptor::new(cf.name(), cf_opts)
        });
        let db = DB::open_cf_descriptors(&opts, path, cfs)?;
        for cf in ALL_CFS {
            if db.cf_handle(cf.name()).is_none() {
                return Err(crate::EngineError::Corrupted {
                    what: "KV engine",
                    detail: format!("column family {} missing after open", cf.name()),
                });
            }
        }
        Ok(KvEngine {
            db: Arc::new(db),
            budget: WriteBudget::default(),
        })
    }

    fn cf(&self, cf: Cf) -> &rocksdb::ColumnFamily {
        // `open` fails unless every `Cf` has a handle, and handles are never
        // dropped, so this lookup cannot miss.
        self.db
            .cf_handle(cf.name())
            .expect("open checked every column family")
    }

    pub fn get(&self, cf: Cf, key: &[u8]) -> Result<Option<Vec<u8>>> {
        Ok(self.db.get_cf(self.cf(cf), key)?)
    }

    /// Calls `visit` for each key-value pair in `[start, end)` (`end` empty
    /// means unbounded), ascending or descending, until it returns `false`.
    pub fn scan(
        &self,
        cf: Cf,
        start: &[u8],
        end: &[u8],
        reverse: bool,
        visit: impl FnMut(&[u8], &[u8]) -> bool,
    ) -> Result<()> {
        self.scan_at(None, cf, start, end, reverse, visit)
    }

    fn scan_at(
        &self,
        snapshot: Option<&rocksdb::Snapshot<'_>>,
        cf: Cf,
        start: &[u8],
        end: &[u8],
        reverse: bool,
        mut visit: impl FnMut(&[u8], &[u8]) -> bool,
    ) -> Result<()> {
        let mut opts = ReadOptions::default();
        opts.set_iterate_lower_bound(start.to_vec());
        if !end.is_empty() {
            opts.set_iterate_upper_bound(end.to_vec());
        }
        if let Some(snap) = snapshot {
            opts.set_snapshot(snap);
        }
        let mode = if reverse {
            IteratorMode::End
        } else {
            IteratorMode::From(start, Direction::Forward)
        };
        for item in self.db.iterator_cf_opt(self.cf(cf), opts, mode) {
            let (k, v) = item?;
            if !visit(&k, &v) {
                break;
            }
        }
        Ok(())
    }

    /// A consistent view of the engine as of now, unchanged by later writes.
    pub fn snapshot(&self) -> KvSnapshot<'_> {
        KvSnapshot {
            engine: self,
            snap: self.db.snapshot(),
        }
    }

    /// Moves an SST file (written by [`KvSnapshot::export_sst`]) into a
    /// column family. Its keys must not overlap data that should survive:
    /// callers delete the range first.
    pub fn ingest_sst(&self, cf: Cf, path: &Path) -> Result<()> {
        self.budget.take()?;
        let mut opts = rocksdb::IngestExternalFileOptions::default();
        opts.set_move_files(true);
        self.db
            .ingest_external_file_cf_opts(self.cf(cf), &opts, vec![path])?;
        Ok(())
    }

    /// Makes this engine (and its clones) share `budget`'s crash point
    /// (tests; see [`WriteBudget`]).
    pub fn with_budget(mut self, budget: WriteBudget) -> KvEngine {
        self.budget = budget;
        self
    }

    pub fn write_batch(&self) -> KvWriteBatch<'_> {
        KvWriteBatch {
            engine: self,
            wb: WriteBatch::default(),
            largest_put: Default::default(),
        }
    }

    /// Writes a batch atomically. `sync` forces an fsync of the WAL; without
    /// it the write survives a process crash (kill -9) but not power loss.
    pub fn write(&self, batch: KvWriteBatch<'_>, sync: bool) -> Result<()> {
        self.budget.take()?;
        let mut opts = WriteOptions::default();
        opts.set_sync(sync);
        self.db.write_opt(batch.wb, &opts)?;
        Ok(())
    }

    /// Bytes on disk, for store heartbeats.
    pub fn approximate_size(&self) -> u64 {
        DATA_CFS
            .iter()
            .filter_map(|cf| {
                self.db
                    .property_int_value_cf(self.cf(*cf), "rocksdb.total-sst-files-size")
                    .ok()
                    .flatten()
            })
            .sum()
    }
}

/// A key and its value, as an iterator yields them.
pub type KvPairBytes = (Box<[u8]>, Box<[u8]>);

/// A point-in-time view of a [`KvEngine`] (a RocksDB snapshot).
pub struct KvSnapshot<'a> {
    engine: &'a KvEngine,
    snap: rocksdb::Snapshot<'a>,
}

/// What [`KvSnapshot::export_sst`] wrote.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SstInfo {
    pub keys: u64,
    pub size: u64,
}

impl KvSnapshot<'_> {
    /// Like [`KvEngine::get`], as of the snapshot.
    pub fn get(&self, cf: Cf, key: &[u8]) -> Result<Option<Vec<u8>>> {
        Ok(self.snap.get_cf(self.engine.cf(cf), key)?)
    }

    /// Like [`KvEngine::scan`], as of the snapshot.
    pub fn scan(
        &self,
        cf: Cf,
        start: &[u8],
        end: &[u8],
        reverse: bool,
        visit: impl FnMut(&[u8], &[u8]) -> bool,
    ) -> Result<()> {
        self.engine
            .scan_at(Some(&self.snap), cf, start, end, reverse, visit)
    }

    /// The key-value pairs of `[start, end)` (`end` empty: unbounded) in
    /// `cf`, ascending, as an iterator (so several CFs can be walked side
    /// by side).
    pub fn iter(
        &self,
        cf: Cf,
        start: &[u8],
        end: &[u8],
    ) -> impl Iterator<Item = Result<KvPairBytes>> + '_ {
        let mut opts = ReadOptions::default();
        opts.set_iterate_lower_bound(start.to_vec());
        if !end.is_empty() {
            opts.set_iterate_upper_bound(end.to_vec());
        }
        opts.set_snapshot(&self.snap);
        let mode = IteratorMode::From(start, Direction::Forward);
        self.engine
            .db
            .iterator_cf_opt(self.engine.cf(cf), opts, mode)
            .map(|item| item.map_err(Into::into))
    }

    /// Writes `[start, end)` of `cf` to an SST file at `path`, streaming (a
    /// range of any size needs only a block's worth of memory). Writes no
    /// file and returns `None` when the range is empty.
    pub fn export_sst(
        &self,
        cf: Cf,
        start: &[u8],
        end: &[u8],
        path: &Path,
    ) -> Result<Option<SstInfo>> {
        let opts = Options::default();
        let mut writer = rocksdb::SstFileWriter::create(&opts);
        let mut keys = 0u64;
        let mut failed = None;
        self.scan(cf, start, end, false, |k, v| {
            if keys == 0 {
                if let Err(e) = writer.open(path) {
                    failed = Some(e);
                    return false;
                }
            }
            keys += 1;
            if let Err(e) = writer.put(k, v) {
                failed = Some(e);
            }
            failed.is_none()
        })?;
        if let Some(e) = failed {
            return Err(e.into());
        }
        if keys == 0 {
            return Ok(None);
        }
        writer.finish()?;
        Ok(Some(SstInfo {
            keys,
            size: writer.file_size(),
        }))
    }
}

/// [`crate::KvRead`] through a type's own `get` and `scan` (the engine
/// reads its latest state, a snapshot its point in time).
macro_rules! kv_read_by_inherent_methods {
    ($ty:ty) => {
        impl crate::KvRead for $ty {
            fn get(&self, cf: Cf, key: &[u8]) -> Result<Option<Vec<u8>>> {
                <$ty>::get(self, cf, key)
            }

            fn scan(
                &self,
                cf: Cf,
                start: &[u8],
                end: &[u8],
                reverse: bool,
                visit: &mut dyn FnMut(&[u8], &[u8]) -> bool,
            ) -> Result<()> {
                <$ty>::scan(self, cf, start, end, reverse, visit)
            }
        }
    };
}

kv_read_by_inherent_methods!(KvEngine);
kv_read_by_inherent_methods!(KvSnapshot<'_>);

/// An atomic group of writes to the KV engine.
pub struct KvWriteBatch<'a> {
    engine: &'a KvEngine,
    wb: WriteBatch,
    /// The largest key put in each column family (by `Cf as usize`), so a
    /// delete to the end of the key space covers this batch's own puts.
    largest_put: [Option<Vec<u8>>; ALL_CFS.len()],
}

impl KvWriteBatch<'_> {
    pub fn put(&mut self, cf: Cf, key: &[u8], value: &[u8]) {
        self.wb.put_cf(self.engine.cf(cf), key, value);
        let largest = &mut self.largest_put[cf as usize];
        if largest.as_deref().is_none_or(|l| key > l) {
            *largest = Some(key.to_vec());
        }
    }

    pub fn delete(&mut self, cf: Cf, key: &[u8]) {
        self.wb.delete_cf(self.engine.cf(cf), key);
    }

    /// Deletes `[start, end)`; an empty `end` means to the end of the key space.
    pub fn delete_range(&mut self, cf: Cf, start: &[u8], end: &[u8]) {
        let largest_put = self.largest_put[cf as usize].clone();
        let handle = self.engine.cf(cf);
        if end.is_empty() {
            // RocksDB needs a concrete upper bound: delete through the last
            // key, written or put earlier in this batch.
            let written = match self.engine.db.iterator_cf(handle, IteratorMode::End).next() {
                Some(Ok((last, _))) => Some(last.to_vec()),
                _ => None,
            };
            if let Some(mut bound) = written.max(largest_put) {
                if bound.as_slice() >= start {
                    bound.push(0);
                    self.wb.delete_range_cf(handle, start, &bound);
                }
            }
        } else if start < end {
            self.wb.delete_range_cf(handle, start, end);
        }
    }

    pub fn is_empty(&self) -> bool {
        self.wb.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compaction_drops_what_the_filter_names_and_nothing_it_covered_comes_back() {
        let dir = tempfile::tempdir().unwrap();
        let drop: DropFilter = |key, value| key.starts_with(b"r") && value == b"\x02";
        let engine = KvEngine::open_with(dir.path(), Some(drop)).unwrap();
        let cf = engine.cf(CF_DEFAULT);
        let put = |k: &[u8], v: &[u8]| {
            let mut wb = engine.write_batch();
            wb.put(CF_DEFAULT, k, v);
            engine.write(wb, false).unwrap();
            engine.db.flush_cf(cf).unwrap();
        };
        // Older values, compacted to the bottom first; then tombstones over
        // one of them in a newer file.
        put(b"r1", b"old");
        put(b"r2", b"kept");
        put(b"x1", b"\x02");
        engine.db.compact_range_cf(cf, None::<&[u8]>, None::<&[u8]>);
        put(b"r1", b"\x02");
        assert_eq!(
            engine.get(CF_DEFAULT, b"r1").unwrap(),
            Some(b"\x02".to_vec())
        );
        engine.db.compact_range_cf(cf, None::<&[u8]>, None::<&[u8]>);
        assert_eq!(
            engine.get(CF_DEFAULT, b"r1").unwrap(),
            None,
            "tombstone dropped, old value gone"
        );
        assert_eq!(
            engine.get(CF_DEFAULT, b"r2").unwrap(),
            Some(b"kept".to_vec())
        );
        assert_eq!(
            engine.get(CF_DEFAULT, b"x1").unwrap(),
            Some(b"\x02".to_vec()),
            "not named"
        );
    }

    #[test]
    fn batch_is_atomic_and_scans_honour_bounds_and_direction() {
        let dir = tempfile::tempdir().unwrap();
        let engine = KvEngine::open(dir.path()).unwrap();
        let mut wb = engine.write_batch();
        for k in [b"a", b"b", b"c", b"d"] {
            wb.put(CF_DEFAULT, k, k);
        }
        wb.put(CF_LOCK, b"b", b"lock");
        engine.write(wb, true).unwrap();

        let mut seen = vec![];
        engine
            .scan(CF_DEFAULT, b"b", b"d", false, |k, _| {
                seen.push(k.to_vec());
                true
            })
            .unwrap();
        assert_eq!(seen, vec![b"b".to_vec(), b"c".to_vec()]);

        seen.clear();
        engine
            .scan(CF_DEFAULT, b"a", b"", true, |k, _| {
                seen.push(k.to_vec());
                seen.len() < 3
            })
            .unwrap();
        assert_eq!(seen, vec![b"d".to_vec(), b"c".to_vec(), b"b".to_vec()]);
        assert_eq!(engine.get(CF_LOCK, b"b").unwrap(), Some(b"lock".to_vec()));
        assert_eq!(engine.get(CF_WRITE, b"b").unwrap(), None);

        let mut wb = engine.write_batch();
        wb.delete_range(CF_DEFAULT, b"b", b"");
        engine.write(wb, false).unwrap();
        assert_eq!(engine.get(CF_DEFAULT, b"a").unwrap(), Some(b"a".to_vec()));
        assert_eq!(engine.get(CF_DEFAULT, b"d").unwrap(), None);
    }

    #[test]
    fn a_delete_to_the_end_covers_keys_put_earlier_in_its_batch() {
        let dir = tempfile::tempdir().unwrap();
        let engine = KvEngine::open(dir.path()).unwrap();
        let mut wb = engine.write_batch();
        wb.put(CF_DEFAULT, b"b", b"1");
        engine.write(wb, false).unwrap();
        let mut wb = engine.write_batch();
        for k in [b"a", b"x", b"c"] {
            wb.put(CF_DEFAULT, k, b"2");
        }
        wb.put(CF_WRITE, b"zz", b"other cf");
        wb.delete_range(CF_DEFAULT, b"b", b"");
        engine.write(wb, false).unwrap();
        assert_eq!(engine.get(CF_DEFAULT, b"a").unwrap(), Some(b"2".to_vec()));
        for k in [b"b", b"c", b"x"] {
            assert_eq!(engine.get(CF_DEFAULT, k).unwrap(), None, "{k:?}");
        }
        assert!(engine.get(CF_WRITE, b"zz").unwrap().is_some());
        // Empty engine and batch: nothing to bound, nothing deleted.
        let mut wb = engine.write_batch();
        wb.delete_range(CF_LOCK, b"a", b"");
        assert!(wb.is_empty());
    }

    #[test]
    fn a_snapshot_reads_as_of_its_point_in_time_after_deletes() {
        let dir = tempfile::tempdir().unwrap();
        let engine = KvEngine::open(dir.path()).unwrap();
        let mut wb = engine.write_batch();
        wb.put(CF_DEFAULT, b"a", b"1");
        wb.put(CF_DEFAULT, b"b", b"2");
        engine.write(wb, false).unwrap();
        let snap = engine.snapshot();
        // A region's data dropped as a destroyed peer drops it.
        let mut wb = engine.write_batch();
        wb.delete_range(CF_DEFAULT, b"", b"");
        wb.put(CF_DEFAULT, b"c", b"3");
        engine.write(wb, false).unwrap();
        let read: &dyn crate::KvRead = &snap;
        assert_eq!(read.get(CF_DEFAULT, b"a").unwrap(), Some(b"1".to_vec()));
        assert_eq!(read.get(CF_DEFAULT, b"c").unwrap(), None);
        let mut seen = vec![];
        read.scan(CF_DEFAULT, b"", b"", true, &mut |k, _| {
            seen.push(k.to_vec());
            true
        })
        .unwrap();
        assert_eq!(seen, vec![b"b".to_vec(), b"a".to_vec()]);
        assert_eq!(engine.get(CF_DEFAULT, b"a").unwrap(), None);
    }

    #[test]
    fn a_snapshot_exports_its_point_in_time_and_ingest_replaces_nothing_else() {
        let dir = tempfile::tempdir().unwrap();
        let src = KvEngine::open(&dir.path().join("src")).unwrap();
        let mut wb = src.write_batch();
        for k in [b"a", b"b", b"c", b"d"] {
            wb.put(CF_WRITE, k, b"old");
        }
        src.write(wb, false).unwrap();
        let snap = src.snapshot();
        let mut wb = src.write_batch();
        wb.put(CF_WRITE, b"b", b"new");
        wb.put(CF_WRITE, b"bb", b"new");
        src.write(wb, false).unwrap();

        let sst = dir.path().join("write.sst");
        let info = snap.export_sst(CF_WRITE, b"b", b"d", &sst).unwrap();
        assert_eq!(info.map(|i| i.keys), Some(2), "b and c as of the snapshot");
        let empty = dir.path().join("lock.sst");
        assert_eq!(snap.export_sst(CF_LOCK, b"", b"", &empty).unwrap(), None);
        assert!(!empty.exists());

        let dst = KvEngine::open(&dir.path().join("dst")).unwrap();
        let mut wb = dst.write_batch();
        wb.put(CF_WRITE, b"z", b"kept");
        dst.write(wb, false).unwrap();
        dst.ingest_sst(CF_WRITE, &sst).unwrap();
        let mut seen = vec![];
        dst.scan(CF_WRITE, b"", b"", false, |k, v| {
            seen.push((k.to_vec(), v.to_vec()));
            true
        })
        .unwrap();
        let expect: Vec<(Vec<u8>, Vec<u8>)> = [("b", "old"), ("c", "old"), ("z", "kept")]
            .iter()
            .map(|(k, v)| (k.as_bytes().to_vec(), v.as_bytes().to_vec()))
            .collect();
        assert_eq!(seen, expect);
    }
}
