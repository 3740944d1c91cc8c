//! One store leading one region on its own, in process, for tests of the
//! storage's read and write paths against a real store loop.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tikal_engine::{KvEngine, CF_WRITE};
use tikal_proto::{kvrpcpb, metapb};
use tikal_raftstore::{NoTransport, PeerMessage, Router, Transport};

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
    let region = region_on(&[1]);
    let store = open_store(dir, 1, &region, raft_entry_max_size, Box::new(NoTransport));
    let deadline = Instant::now() + Duration::from_secs(10);
    while !store.router.region_view(1).is_some_and(|v| v.is_leader) {
        assert!(Instant::now() < deadline, "no leader");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    store
}

/// Region 1 (the whole key space) with a voter on each of `stores`
/// (peer id = store id + 1).
fn region_on(stores: &[u64]) -> metapb::Region {
    metapb::Region {
        id: 1,
        region_epoch: Some(metapb::RegionEpoch {
            conf_ver: 1,
            version: 1,
        }),
        peers: (stores.iter())
            .map(|&store_id| metapb::Peer {
                id: store_id + 1,
                store_id,
                ..Default::default()
            })
            .collect(),
        ..Default::default()
    }
}

fn open_store(
    dir: &std::path::Path,
    store_id: u64,
    region: &metapb::Region,
    raft_entry_max_size: usize,
    transport: Box<dyn Transport>,
) -> TestStore {
    let kv = KvEngine::open(&dir.join("db")).unwrap();
    let log = Arc::new(tikal_engine::RaftLogEngine::open(&dir.join("raft")).unwrap());
    tikal_raftstore::write_initial_region(&kv, region).unwrap();
    let cm = Arc::new(ConcurrencyManager::default());
    let snaps = Arc::new(tikal_raftstore::SnapManager::open(&dir.join("snap")).unwrap());
    let store = tikal_raftstore::Store::open(
        store_id,
        Default::default(),
        kv.clone(),
        log,
        snaps,
        Arc::new(crate::RawApplier::new(cm.clone())),
        transport,
        tokio::sync::mpsc::unbounded_channel().0,
    )
    .unwrap();
    let router = Router::start(store).unwrap();
    let cfg = crate::raw::StorageConfig {
        api_version: 1,
        raft_entry_max_size,
        enable_ttl: false,
    };
    let raw = RawStorage::new(store_id, cfg, kv.clone(), router.clone());
    let txn = TxnStorage::new(raw.clone()).with_concurrency_manager(cm);
    TestStore {
        raw,
        txn,
        kv,
        router,
    }
}

/// In-process links between test stores: every Raft message goes to its
/// store's router unless the sender or the receiver is cut off.
#[derive(Clone, Default)]
pub struct Links {
    routers: Arc<Mutex<HashMap<u64, Router>>>,
    cut: Arc<Mutex<HashSet<u64>>>,
}

impl Links {
    /// Cuts `store` off from every other store, both ways.
    pub fn cut(&self, store: u64) {
        self.cut.lock().unwrap().insert(store);
    }
}

struct Link {
    from: u64,
    links: Links,
}

impl Transport for Link {
    fn send(&mut self, msg: PeerMessage) {
        let cut = self.links.cut.lock().unwrap();
        if cut.contains(&self.from) || cut.contains(&msg.to.store_id) {
            return;
        }
        drop(cut);
        let router = self
            .links
            .routers
            .lock()
            .unwrap()
            .get(&msg.to.store_id)
            .cloned();
        if let Some(router) = router {
            router.send_raft_message(msg);
        }
    }
}

/// Three stores (ids 1, 2, 3) whose region 1 has a voter on each, linked
/// in process; returns them once one leads, with the index of the leader.
pub async fn three_stores(dir: &std::path::Path) -> (Vec<TestStore>, usize, Links) {
    let region = region_on(&[1, 2, 3]);
    let links = Links::default();
    let stores: Vec<TestStore> = (1..=3u64)
        .map(|id| {
            let link = Link {
                from: id,
                links: links.clone(),
            };
            let dir = dir.join(format!("store{id}"));
            let store = open_store(&dir, id, &region, 8 << 20, Box::new(link));
            (links.routers.lock().unwrap()).insert(id, store.router.clone());
            store
        })
        .collect();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let leading =
            (stores.iter()).position(|s| s.router.region_view(1).is_some_and(|v| v.is_leader));
        if let Some(i) = leading {
            return (stores, i, links);
        }
        assert!(Instant::now() < deadline, "no leader");
        tokio::time::sleep(Duration::from_millis(10)).await;
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
