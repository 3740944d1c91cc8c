//! Keyspaces: API V2's tenants, as upstream PD keeps them.
//!
//! A keyspace is a name, a 24-bit id, a state and a config map. DEFAULT
//! (id 0) always exists; others get the next free id, starting at 1. The
//! state moves as upstream allows:
//!
//! ```text
//! ENABLED <-> DISABLED -> ARCHIVED -> TOMBSTONE   (DEFAULT never moves)
//! ```
//!
//! Under API V2 a keyspace's data lies in `r{id}..r{id+1}` (raw) and
//! `x{id}..x{id+1}` (transactional), 3-byte big-endian ids. PD keeps those
//! four keys (memcomparable-encoded, as stores keep region boundaries)
//! region boundaries: a created keyspace is split off before it is
//! enabled, and the merge checker never merges across a boundary. DEFAULT
//! is split off the first time a client loads it, not at bootstrap as
//! upstream does, so an API V1 cluster keeps its single first region.
//!
//! Durable in the metadata store: `keyspace/<id u32 BE>` holds each
//! `KeyspaceMeta`, `keyspace_next_id` the next id (u64 BE; ids are never
//! reused), `keyspace_split_default` marks DEFAULT as split.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::RwLock;
use tikal_proto::keyspacepb::{KeyspaceMeta, KeyspaceState};
use tikal_proto::pdpb::ErrorType;
use tokio::sync::broadcast;

use tikal_proto::kvrpcpb;
use tikal_proto::tikvpb::tikv_client::TikvClient;
use tracing::{debug, info};

use crate::cluster::{Cluster, PdError, PdResult};
use crate::regions::RegionInfo;
use crate::storage::{Batch, MetaStore};

pub const DEFAULT_ID: u32 = 0;
pub const DEFAULT_NAME: &str = "DEFAULT";
/// How long a keyspace's creation, or DEFAULT's first load, waits for its
/// range to be split off (upstream's `wait-region-split-timeout`).
pub const WAIT_REGION_SPLIT: Duration = Duration::from_secs(30);
/// Ids are 3 bytes on the wire.
pub const MAX_ID: u32 = 0xFF_FFFF;
const MAX_NAME_LEN: usize = 64;

const META_PREFIX: &[u8] = b"keyspace/";
const SPLIT_DEFAULT: &[u8] = b"keyspace_split_default";
/// The next id to hand out: ids are never reused, even of a keyspace whose
/// creation failed.
const NEXT_ID: &[u8] = b"keyspace_next_id";

fn meta_key(id: u32) -> Vec<u8> {
    [META_PREFIX, &id.to_be_bytes()].concat()
}

/// The client key prefix of `mode` (`r` or `x`) in keyspace `id`.
pub fn prefix(mode: u8, id: u32) -> Vec<u8> {
    let b = id.to_be_bytes();
    vec![mode, b[1], b[2], b[3]]
}

/// The four client keys that bound a keyspace's raw and transactional
/// data (the last keyspace's upper bounds are the next mode's first key).
pub fn bounds(id: u32) -> Vec<Vec<u8>> {
    let mut out = vec![];
    for mode in [b'r', b'x'] {
        out.push(prefix(mode, id));
        out.push(if id >= MAX_ID {
            vec![mode + 1]
        } else {
            prefix(mode, id + 1)
        });
    }
    out
}

/// What a keyspace's boundary is as a region boundary.
pub fn encoded(bound: &[u8]) -> Vec<u8> {
    tikal_codec::mvcc_key::encode_key(bound)
}

fn not_found(what: impl std::fmt::Display) -> PdError {
    PdError::new(
        ErrorType::EntryNotFound,
        format!("keyspace does not exist: {what}"),
    )
}

fn invalid(msg: impl Into<String>) -> PdError {
    PdError::new(ErrorType::InvalidValue, msg)
}

struct State {
    by_id: BTreeMap<u32, KeyspaceMeta>,
    next_id: u32,
    split_default: bool,
    /// Boundaries of every keyspace that is split off: encoded (as region
    /// boundaries) to the client key.
    bounds: BTreeMap<Vec<u8>, Vec<u8>>,
}

impl State {
    fn recompute_bounds(&mut self) {
        self.bounds = self
            .by_id
            .keys()
            .filter(|&&id| id != DEFAULT_ID || self.split_default)
            .flat_map(|&id| bounds(id))
            .map(|b| (encoded(&b), b))
            .collect();
    }
}

pub struct Keyspaces {
    state: RwLock<State>,
    /// Every change, for `WatchKeyspaces`.
    changes: broadcast::Sender<KeyspaceMeta>,
}

impl Keyspaces {
    /// Loads the keyspaces, creating DEFAULT on first start.
    pub fn load(meta: &MetaStore, now: i64) -> PdResult<Keyspaces> {
        let mut by_id = BTreeMap::new();
        for m in meta.scan_msgs::<KeyspaceMeta>(META_PREFIX)? {
            by_id.insert(m.id, m);
        }
        if let std::collections::btree_map::Entry::Vacant(slot) = by_id.entry(DEFAULT_ID) {
            let default = KeyspaceMeta {
                id: DEFAULT_ID,
                name: DEFAULT_NAME.into(),
                state: KeyspaceState::Enabled as i32,
                created_at: now,
                state_changed_at: now,
                ..Default::default()
            };
            let mut b = Batch::default();
            b.put_msg(&meta_key(DEFAULT_ID), &default);
            meta.write(b)?;
            slot.insert(default);
        }
        // From disk: out-of-range values only make `create` refuse.
        let stored = meta.get_u64(NEXT_ID)?.unwrap_or(1);
        let next_id = u32::try_from(stored).unwrap_or(u32::MAX);
        let after_last = by_id.keys().next_back().map_or(1, |&l| l.saturating_add(1));
        let next_id = next_id.max(after_last);
        let mut state = State {
            by_id,
            next_id,
            split_default: meta.get(SPLIT_DEFAULT)?.is_some(),
            bounds: BTreeMap::new(),
        };
        state.recompute_bounds();
        Ok(Keyspaces {
            state: RwLock::new(state),
            changes: broadcast::channel(1024).0,
        })
    }

    pub fn by_name(&self, name: &str) -> Option<KeyspaceMeta> {
        let s = self.state.read();
        s.by_id.values().find(|m| m.name == name).cloned()
    }

    /// The keyspace named `name`, or upstream's not-found error.
    pub fn named(&self, name: &str) -> PdResult<KeyspaceMeta> {
        self.by_name(name).ok_or_else(|| not_found(name))
    }

    pub fn by_id(&self, id: u32) -> Option<KeyspaceMeta> {
        self.state.read().by_id.get(&id).cloned()
    }

    /// Keyspaces from id `start` on, at most `limit` (0 = all, as upstream:
    /// PD passes the limit to an etcd range read, where 0 means none).
    pub fn list(&self, start: u32, limit: usize) -> Vec<KeyspaceMeta> {
        let s = self.state.read();
        let all = s.by_id.range(start..).map(|(_, m)| m.clone());
        match limit {
            0 => all.collect(),
            n => all.take(n).collect(),
        }
    }

    pub fn subscribe(&self) -> broadcast::Receiver<KeyspaceMeta> {
        self.changes.subscribe()
    }

    /// Creates a keyspace, DISABLED until its range is split off (see
    /// [`crate::keyspace`]); enable it with [`Keyspaces::set_state`].
    pub fn create(
        &self,
        meta: &MetaStore,
        name: &str,
        config: std::collections::HashMap<String, String>,
        now: i64,
    ) -> PdResult<KeyspaceMeta> {
        let valid = !name.is_empty()
            && name.len() <= MAX_NAME_LEN
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
        if !valid {
            return Err(invalid(format!(
                "illegal keyspace name {name:?}, should contain only alphanumerical and \
                 underline (1 to {MAX_NAME_LEN} characters)"
            )));
        }
        let mut s = self.state.write();
        if s.by_id.values().any(|m| m.name == name) {
            return Err(PdError::new(
                ErrorType::DuplicatedEntry,
                format!("keyspace already exists: {name}"),
            ));
        }
        let id = s.next_id;
        if id > MAX_ID {
            return Err(invalid(format!("no keyspace id left (max {MAX_ID})")));
        }
        let m = KeyspaceMeta {
            id,
            name: name.into(),
            state: KeyspaceState::Disabled as i32,
            created_at: now,
            state_changed_at: now,
            config,
        };
        let mut b = Batch::default();
        b.put_msg(&meta_key(id), &m);
        b.put(NEXT_ID, &u64::from(id + 1).to_be_bytes());
        meta.write(b)?;
        s.next_id = id + 1;
        s.by_id.insert(id, m.clone());
        s.recompute_bounds();
        drop(s);
        let _ = self.changes.send(m.clone());
        Ok(m)
    }

    /// Forgets a keyspace whose creation failed.
    pub fn remove(&self, meta: &MetaStore, id: u32) -> PdResult<()> {
        let mut s = self.state.write();
        let mut b = Batch::default();
        b.delete(&meta_key(id));
        meta.write(b)?;
        s.by_id.remove(&id);
        s.recompute_bounds();
        Ok(())
    }

    /// Moves a keyspace to `to`, if upstream allows the move (module docs);
    /// staying put keeps `state_changed_at`.
    pub fn set_state(
        &self,
        meta: &MetaStore,
        id: u32,
        to: KeyspaceState,
        now: i64,
    ) -> PdResult<KeyspaceMeta> {
        use KeyspaceState::*;
        let mut s = self.state.write();
        let m = s.by_id.get(&id).ok_or_else(|| not_found(id))?;
        let from = KeyspaceState::try_from(m.state).unwrap_or(Enabled);
        if from == to {
            return Ok(m.clone());
        }
        if id == DEFAULT_ID {
            return Err(invalid("cannot modify default keyspace's state"));
        }
        let allowed = matches!(
            (from, to),
            (Enabled, Disabled)
                | (Disabled, Enabled)
                | (Disabled, Archived)
                | (Archived, Tombstone)
        );
        if !allowed {
            return Err(invalid(format!(
                "cannot change keyspace state from {} to {}",
                from.as_str_name(),
                to.as_str_name()
            )));
        }
        let mut m = m.clone();
        m.state = to as i32;
        m.state_changed_at = now;
        let mut b = Batch::default();
        b.put_msg(&meta_key(id), &m);
        meta.write(b)?;
        s.by_id.insert(id, m.clone());
        drop(s);
        let _ = self.changes.send(m.clone());
        Ok(m)
    }

    /// Asks for DEFAULT's range to be split off; true the first time.
    pub fn split_default(&self, meta: &MetaStore) -> PdResult<bool> {
        if self.state.read().split_default {
            return Ok(false);
        }
        meta.put_u64(SPLIT_DEFAULT, 1)?;
        let mut s = self.state.write();
        s.split_default = true;
        s.recompute_bounds();
        Ok(true)
    }

    /// The region boundaries keyspaces need, in key order: (encoded,
    /// client key).
    pub fn split_bounds(&self) -> Vec<(Vec<u8>, Vec<u8>)> {
        let s = self.state.read();
        s.bounds
            .iter()
            .map(|(e, k)| (e.clone(), k.clone()))
            .collect()
    }

    /// Whether `key` (a region boundary) is a keyspace's boundary, which
    /// no merge may remove.
    pub fn is_bound(&self, key: &[u8]) -> bool {
        self.state.read().bounds.contains_key(key)
    }
}

/// Regions a keyspace boundary lies inside of, each with the client keys
/// to split it at.
pub fn pending_splits(cluster: &Cluster) -> Vec<(RegionInfo, Vec<Vec<u8>>)> {
    let mut out: Vec<(RegionInfo, Vec<Vec<u8>>)> = vec![];
    for (enc, key) in cluster.keyspaces.split_bounds() {
        let Some(r) = cluster.region_by_key(&enc) else {
            continue;
        };
        if r.region.start_key == enc {
            continue;
        }
        match out.last_mut() {
            Some((last, keys)) if last.region.id == r.region.id => keys.push(key),
            _ => out.push((r, vec![key])),
        }
    }
    out
}

/// Whether every boundary of keyspace `id` is a region boundary.
pub fn is_split(cluster: &Cluster, id: u32) -> bool {
    bounds(id).iter().all(|b| {
        let enc = encoded(b);
        cluster
            .region_by_key(&enc)
            .is_some_and(|r| r.region.start_key == enc)
    })
}

/// Waits until keyspace `id` is split off, or `timeout`.
pub async fn wait_split(cluster: &Cluster, id: u32, timeout: Duration) -> PdResult<()> {
    let deadline = tokio::time::Instant::now() + timeout;
    while !is_split(cluster, id) {
        if tokio::time::Instant::now() >= deadline {
            return Err(PdError::new(
                ErrorType::Unknown,
                format!("region split timeout: keyspace {id}'s range is not split off yet"),
            ));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(())
}

/// Creates a keyspace as upstream does: DISABLED, then its range split off
/// (waiting up to `wait`), then ENABLED with `state_changed_at` its
/// creation time. A keyspace whose split times out is forgotten.
pub async fn create(
    cluster: &Cluster,
    name: &str,
    config: std::collections::HashMap<String, String>,
    wait: Duration,
) -> PdResult<KeyspaceMeta> {
    let now = cluster.now_secs();
    let m = cluster.keyspaces.create(&cluster.meta, name, config, now)?;
    if let Err(e) = wait_split(cluster, m.id, wait).await {
        cluster.keyspaces.remove(&cluster.meta, m.id)?;
        return Err(e);
    }
    cluster
        .keyspaces
        .set_state(&cluster.meta, m.id, KeyspaceState::Enabled, now)
}

/// Keeps every keyspace boundary a region boundary: a region with one
/// inside is asked, at its leader, to split there (`tikvpb.Tikv/
/// SplitRegion`, keys memcomparable-encoded by the store). PD learns the
/// result from the split report, so a failed or lost attempt is retried
/// on a later round.
pub async fn split_loop(cluster: Arc<Cluster>) {
    let mut tick = tokio::time::interval(Duration::from_millis(200));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        // All at once: a region whose leader does not answer holds up no
        // other.
        let attempts = pending_splits(&cluster).into_iter().map(|(region, keys)| {
            let cluster = &cluster;
            async move {
                let id = region.region.id;
                match split_at(cluster, region, keys).await {
                    Ok(()) => info!(region_id = id, "split off a keyspace's range"),
                    Err(e) => debug!(region_id = id, error = %e, "keyspace split not made yet"),
                }
            }
        });
        futures::future::join_all(attempts).await;
    }
}

async fn split_at(cluster: &Cluster, r: RegionInfo, keys: Vec<Vec<u8>>) -> anyhow::Result<()> {
    let leader = r
        .leader
        .clone()
        .ok_or_else(|| anyhow::anyhow!("no leader known"))?;
    let addr = cluster
        .store(leader.store_id)
        .map_err(|e| anyhow::anyhow!("{e:?}"))?
        .meta
        .address;
    let call = async {
        let mut client = TikvClient::connect(format!("http://{addr}")).await?;
        let resp = client
            .split_region(kvrpcpb::SplitRegionRequest {
                context: Some(kvrpcpb::Context {
                    region_id: r.region.id,
                    region_epoch: r.region.region_epoch.clone(),
                    peer: Some(leader),
                    ..Default::default()
                }),
                split_keys: keys,
                ..Default::default()
            })
            .await?
            .into_inner();
        if let Some(e) = resp.region_error {
            anyhow::bail!("region error: {}", e.message);
        }
        anyhow::Ok(())
    };
    tokio::time::timeout(Duration::from_secs(5), call)
        .await
        .map_err(|_| anyhow::anyhow!("timed out"))?
}

#[cfg(test)]
mod tests {
    use super::*;

    fn open() -> (tempfile::TempDir, MetaStore) {
        let dir = tempfile::tempdir().unwrap();
        let meta = MetaStore::open(dir.path()).unwrap();
        (dir, meta)
    }

    #[test]
    fn default_exists_ids_grow_and_everything_survives_a_restart() {
        let (dir, meta) = open();
        let ks = Keyspaces::load(&meta, 10).unwrap();
        assert_eq!(ks.by_name(DEFAULT_NAME).unwrap().id, 0);
        assert!(
            ks.split_bounds().is_empty(),
            "DEFAULT is not split until used"
        );
        let a = ks.create(&meta, "a", Default::default(), 11).unwrap();
        let b = ks.create(&meta, "b-2_x", Default::default(), 12).unwrap();
        assert_eq!((a.id, b.id), (1, 2));
        assert_eq!(a.state, KeyspaceState::Disabled as i32);
        for bad in ["", "a b", "ünï", &"n".repeat(65)] {
            assert!(
                ks.create(&meta, bad, Default::default(), 13).is_err(),
                "{bad:?}"
            );
        }
        let dup = ks.create(&meta, "a", Default::default(), 13).unwrap_err();
        assert_eq!(dup.kind, ErrorType::DuplicatedEntry);
        ks.set_state(&meta, 1, KeyspaceState::Enabled, 14).unwrap();
        assert!(ks.split_default(&meta).unwrap());
        assert!(!ks.split_default(&meta).unwrap());
        drop(ks);
        drop(meta);

        let meta = MetaStore::open(dir.path()).unwrap();
        let ks = Keyspaces::load(&meta, 20).unwrap();
        let a = ks.by_name("a").unwrap();
        assert_eq!((a.id, a.state, a.state_changed_at), (1, 0, 14));
        assert_eq!(ks.list(0, 0).len(), 3);
        assert_eq!(ks.list(1, 1)[0].name, "a");
        // Three keyspaces split off, DEFAULT's included; 0's upper raw
        // bound is 1's lower one.
        assert_eq!(ks.split_bounds().len(), 3 * 4 - 2 * 2);
        assert!(ks.is_bound(&encoded(b"r\0\0\x01")));
        assert!(ks.split_bounds().iter().all(|(e, k)| *e == encoded(k)));
        assert!(!ks.is_bound(b"r\0\0\x01"));
        assert_eq!(ks.create(&meta, "c", Default::default(), 21).unwrap().id, 3);
        // A removed keyspace's id is never handed out again.
        ks.remove(&meta, 3).unwrap();
        assert!(ks.by_id(3).is_none());
        drop(ks);
        let ks = Keyspaces::load(&meta, 22).unwrap();
        assert_eq!(ks.create(&meta, "d", Default::default(), 23).unwrap().id, 4);
    }

    #[test]
    fn states_move_as_upstream_allows() {
        use KeyspaceState::*;
        let (_dir, meta) = open();
        let ks = Keyspaces::load(&meta, 0).unwrap();
        let id = ks.create(&meta, "t", Default::default(), 1).unwrap().id;
        assert!(
            ks.set_state(&meta, id, Archived, 2).is_ok(),
            "disabled -> archived"
        );
        assert!(ks.set_state(&meta, id, Enabled, 3).is_err());
        assert!(ks.set_state(&meta, id, Tombstone, 4).is_ok());
        assert!(ks.set_state(&meta, id, Enabled, 5).is_err());
        let same = ks.set_state(&meta, id, Tombstone, 6).unwrap();
        assert_eq!(same.state_changed_at, 4, "staying put keeps the time");
        assert!(ks.set_state(&meta, DEFAULT_ID, Disabled, 7).is_err());
        assert_eq!(
            ks.set_state(&meta, 99, Enabled, 8).unwrap_err().kind,
            ErrorType::EntryNotFound
        );
    }

    #[test]
    fn bounds_are_the_keyspaces_prefixes() {
        assert_eq!(
            bounds(0x0001_0203),
            vec![
                b"r\x01\x02\x03".to_vec(),
                b"r\x01\x02\x04".to_vec(),
                b"x\x01\x02\x03".to_vec(),
                b"x\x01\x02\x04".to_vec()
            ]
        );
        assert_eq!(bounds(MAX_ID)[1], b"s".to_vec());
    }
}
