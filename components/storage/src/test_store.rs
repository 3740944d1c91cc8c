//! One store leading one region on its own, in process, for tests of the
//! storage's read and write paths against a real store loop.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tikal_engine::{KvEngine, CF_WRITE};
use tikal_proto::{kvrpcpb, metapb};
use tikal_raftstore::Router;

use crate::mvcc::codec::{append_ts, encode_key};
use crate::mvcc::record::{Write, WriteType};
use crate::txn::{ConcurrencyManager, TxnStorage};
use crate::RawStorage;

/// A store leading region 1 (the whole key space) on its own.
pub struct TestStore {
    pub raw: RawStorage,
    pub txn: TxnStorage,
    /// Its engine, for writes that stand for an apply racing a read.
    pub kv: KvEngine,
    pub router: Router,
}

impl Drop for TestStore {
    /// Joins the store loop: a loop still running when the test process
    /// exits would meet RocksDB torn down under it.
    fn drop(&mut self) {
        self.router.stop();
    }
}

/// Opens a [`TestStore`] in `dir` and waits until it leads its region.
pub async fn one_store(dir: &std::path::Path) -> TestStore {
    one_store_with(dir, 8 << 20).await
}

/// [`one_store`] refusing Raft entries over `raft_entry_max_size` bytes.
pub async fn one_store_with(dir: &std::path::Path, raft_entry_max_size: usize) -> TestStore {
    let kv = KvEngine::open(&dir.join("db")).unwrap();
    let log = Arc::new(tikal_engine::RaftLogEngine::open(&dir.join("raft")).unwrap());
    let region = metapb::Region {
        id: 1,
        region_epoch: Some(metapb::RegionEpoch {
            conf_ver: 1,
            version: 1,
        }),
        peers: vec![metapb::Peer {
            id: 2,
            store_id: 1,
            ..Default::default()
        }],
        ..Default::default()
    };
    tikal_raftstore::write_initial_region(&kv, &region).unwrap();
    let cm = Arc::new(ConcurrencyManager::default());
    let snaps = Arc::new(tikal_raftstore::SnapManager::open(&dir.join("snap")).unwrap());
    let store = tikal_raftstore::Store::open(
        1,
        Default::default(),
        kv.clone(),
        log,
        snaps,
        Arc::new(crate::RawApplier::new(cm.clone())),
        Box::new(tikal_raftstore::NoTransport),
        tokio::sync::mpsc::unbounded_channel().0,
    )
    .unwrap();
    let router = Router::start(store).unwrap();
    let cfg = crate::raw::StorageConfig {
        api_version: 1,
        raft_entry_max_size,
        enable_ttl: false,
    };
    let raw = RawStorage::new(1, cfg, kv.clone(), router.clone());
    let txn = TxnStorage::new(raw.clone()).with_concurrency_manager(cm);
    let deadline = Instant::now() + Duration::from_secs(10);
    while !router.region_view(1).is_some_and(|v| v.is_leader) {
        assert!(Instant::now() < deadline, "no leader");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    TestStore {
        raw,
        txn,
        kv,
        router,
    }
}

pub fn ctx() -> kvrpcpb::Context {
    kvrpcpb::Context {
        region_id: 1,
        region_epoch: Some(metapb::RegionEpoch {
            conf_ver: 1,
            version: 1,
        }),
        ..Default::default()
    }
}

pub fn write(kv: &KvEngine, cf: tikal_engine::Cf, key: Vec<u8>, value: Vec<u8>) {
    let mut wb = kv.write_batch();
    wb.put(cf, &key, &value);
    kv.write(wb, false).unwrap();
}

pub fn commit(kv: &KvEngine, key: &[u8], value: &[u8], start_ts: u64, commit_ts: u64) {
    let w = Write::new(WriteType::Put, start_ts, Some(value.to_vec()));
    write(
        kv,
        CF_WRITE,
        append_ts(encode_key(key), commit_ts),
        w.to_bytes(),
    );
}
