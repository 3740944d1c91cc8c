//! PD's durable metadata: a RocksDB instance written with fsync.
//!
//! | key                    | value                                   |
//! |------------------------|-----------------------------------------|
//! | `cluster_id`           | u64 BE                                  |
//! | `cluster`              | `metapb.Cluster` (present = bootstrapped)|
//! | `alloc_id`             | u64 BE: ids below it may have been used  |
//! | `tso`                  | u64 BE: ms no timestamp may reach        |
//! | `store/<id BE>`        | `metapb.Store`                          |
//! | `region/<id BE>`       | `metapb.Region`                         |
//! | `gc_safe_point`        | u64 BE                                  |
//! | `service_sp/<id>`      | safe point, expire (Unix s), u64 BE each |
//! | `keyspace/<id u32 BE>` | `keyspacepb.KeyspaceMeta`               |
//! | `keyspace_next_id`     | u64 BE: the next keyspace id             |
//! | `keyspace_split_default` | present = DEFAULT's range is split off |

use std::path::Path;

use prost::Message;
use rocksdb::{IteratorMode, Options, WriteBatch, WriteOptions, DB};

#[derive(Debug, thiserror::Error)]
pub enum MetaError {
    #[error("PD storage: {0}")]
    RocksDb(#[from] rocksdb::Error),
    #[error("PD storage corrupted at {key}: {detail}")]
    Corrupted { key: String, detail: String },
}

pub type Result<T> = std::result::Result<T, MetaError>;

pub struct MetaStore {
    db: DB,
}

pub const CLUSTER_ID: &[u8] = b"cluster_id";
pub const CLUSTER: &[u8] = b"cluster";
pub const ALLOC_ID: &[u8] = b"alloc_id";
pub const TSO: &[u8] = b"tso";
pub const GC_SAFE_POINT: &[u8] = b"gc_safe_point";
pub const STORE_PREFIX: &[u8] = b"store/";
/// The settings changed online (`POST /config`), as a JSON object of
/// upstream keys: they outlive a restart and win over the config file.
pub const CONFIG_CHANGES: &[u8] = b"config_changes";
/// A store's leader and region weights, apart from its `metapb.Store` (as
/// upstream keeps them), see [`crate::stores::Weights`].
pub const STORE_WEIGHT_PREFIX: &[u8] = b"store_weight/";
/// Store limits' rates (`pd-ctl store limit`), see
/// [`crate::store_limit::Settings`].
pub const STORE_LIMITS: &[u8] = b"store_limits";
/// The schedulers that run and the stores the evict- and grant-leader
/// schedulers hold, once changed by request (a JSON object, see
/// `schedule::load_schedulers`).
pub const SCHEDULERS: &[u8] = b"schedulers";
pub const REGION_PREFIX: &[u8] = b"region/";
pub const SERVICE_SP_PREFIX: &[u8] = b"service_sp/";

pub fn id_key(prefix: &[u8], id: u64) -> Vec<u8> {
    [prefix, &id.to_be_bytes()].concat()
}

impl MetaStore {
    pub fn open(dir: &Path) -> Result<MetaStore> {
        let mut opts = Options::default();
        opts.create_if_missing(true);
        opts.set_max_background_jobs(1);
        Ok(MetaStore {
            db: DB::open(&opts, dir)?,
        })
    }

    pub fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        Ok(self.db.get(key)?)
    }

    pub fn get_u64(&self, key: &[u8]) -> Result<Option<u64>> {
        match self.get(key)? {
            None => Ok(None),
            Some(v) => decode_u64(key, &v).map(Some),
        }
    }

    pub fn get_msg<M: Message + Default>(&self, key: &[u8]) -> Result<Option<M>> {
        match self.get(key)? {
            None => Ok(None),
            Some(v) => decode_msg(key, &v).map(Some),
        }
    }

    /// All values under `prefix`, decoded as `M`.
    pub fn scan_msgs<M: Message + Default>(&self, prefix: &[u8]) -> Result<Vec<M>> {
        self.scan_raw(prefix)?
            .into_iter()
            .map(|(k, v)| decode_msg(&k, &v))
            .collect()
    }

    pub fn scan_raw(&self, prefix: &[u8]) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        let mut out = vec![];
        let mode = IteratorMode::From(prefix, rocksdb::Direction::Forward);
        for item in self.db.iterator(mode) {
            let (k, v) = item?;
            if !k.starts_with(prefix) {
                break;
            }
            out.push((k.to_vec(), v.to_vec()));
        }
        Ok(out)
    }

    /// Writes atomically and durably (fsync) before returning.
    pub fn write(&self, batch: Batch) -> Result<()> {
        let mut opts = WriteOptions::default();
        opts.set_sync(true);
        self.db.write_opt(batch.0, &opts)?;
        Ok(())
    }

    pub fn put_u64(&self, key: &[u8], v: u64) -> Result<()> {
        let mut b = Batch::default();
        b.put(key, &v.to_be_bytes());
        self.write(b)
    }
}

#[derive(Default)]
pub struct Batch(WriteBatch);

impl Batch {
    pub fn put(&mut self, key: &[u8], value: &[u8]) {
        self.0.put(key, value);
    }

    pub fn put_msg<M: Message>(&mut self, key: &[u8], m: &M) {
        self.0.put(key, m.encode_to_vec());
    }

    pub fn delete(&mut self, key: &[u8]) {
        self.0.delete(key);
    }
}

pub fn decode_u64(key: &[u8], v: &[u8]) -> Result<u64> {
    let bytes: [u8; 8] = v.try_into().map_err(|_| MetaError::Corrupted {
        key: String::from_utf8_lossy(key).into_owned(),
        detail: format!("expected 8 bytes, found {}", v.len()),
    })?;
    Ok(u64::from_be_bytes(bytes))
}

fn decode_msg<M: Message + Default>(key: &[u8], v: &[u8]) -> Result<M> {
    M::decode(v).map_err(|e| MetaError::Corrupted {
        key: String::from_utf8_lossy(key).into_owned(),
        detail: e.to_string(),
    })
}
