//! The cluster PD manages: bootstrap state, ids, stores, regions, GC safe
//! points. Everything durable is written to the [`MetaStore`] before the
//! in-memory view changes, so a PD killed at any point restarts consistent.
//! What PD asks of regions and stores in return (operators, store removal)
//! is in [`crate::schedule`].

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use parking_lot::{Mutex, RwLock};
use tikal_proto::{metapb, pdpb};

use crate::clock::{elapsed, Clock, SystemClock};
use crate::config::ScheduleOptions;
pub use crate::regions::RegionInfo;
use crate::regions::{check_region, Regions};
use crate::schedule::Operators;
use crate::storage::{self, id_key, Batch, MetaError, MetaStore};
use crate::store_limit::{Limits, Settings};
pub use crate::stores::StoreInfo;
use crate::stores::{set_state, Liveness, Weights};
use crate::tso::Tso;

/// Ids reserved per durable write of the id allocator.
const ID_BATCH: u64 = 1000;

/// An error PD reports in a response header.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct PdError {
    pub kind: pdpb::ErrorType,
    pub message: String,
}

impl PdError {
    pub fn new(kind: pdpb::ErrorType, message: impl Into<String>) -> PdError {
        PdError {
            kind,
            message: message.into(),
        }
    }
}

impl From<MetaError> for PdError {
    fn from(e: MetaError) -> PdError {
        PdError::new(pdpb::ErrorType::Unknown, e.to_string())
    }
}

/// Most regions one AskBatchSplit makes: client-go sends up to 2,048 split
/// keys of one region in a batch (`splitBatchRegionLimit`).
pub const MAX_SPLIT_COUNT: u32 = 2048;

pub type PdResult<T> = std::result::Result<T, PdError>;

pub struct Cluster {
    pub meta: MetaStore,
    pub cluster_id: u64,
    /// Changed online by `POST /config`; read a copy with [`Cluster::opts`].
    opts: RwLock<InForce>,
    /// The schedulers that run (upstream's names), see [`crate::schedule`].
    pub(crate) schedulers: RwLock<Vec<crate::schedule::RunningScheduler>>,
    /// Paused checkers (upstream's names) and when each resumes (Unix
    /// seconds), see [`Cluster::pause_checker`].
    pub(crate) paused_checkers: RwLock<HashMap<&'static str, i64>>,
    /// The stores `evict-leader-scheduler` and `grant-leader-scheduler`
    /// hold, see [`Cluster::hold_store`].
    pub(crate) holds: RwLock<crate::schedule::Holds>,
    pub tso: Tso,
    pub(crate) clock: Arc<dyn Clock>,
    /// When this PD started (Unix nanoseconds, by `clock`).
    pub(crate) started: i64,
    bootstrapped: RwLock<Option<metapb::Cluster>>,
    ids: Mutex<(u64, u64)>,
    pub(crate) stores: RwLock<BTreeMap<u64, StoreInfo>>,
    pub(crate) regions: RwLock<Regions>,
    /// Lock order: `operators` before `regions` before `stores`.
    pub(crate) operators: Mutex<Operators>,
    gc: Mutex<GcState>,
    pub keyspaces: crate::keyspace::Keyspaces,
}

#[derive(Default)]
struct GcState {
    safe_point: u64,
    /// service id -> (safe point, expire at Unix seconds)
    services: HashMap<Vec<u8>, (u64, i64)>,
}

pub use crate::clock::unix_nanos;

impl Cluster {
    /// When this PD started, in Unix seconds.
    pub fn started_secs(&self) -> i64 {
        self.started / 1_000_000_000
    }

    /// Now by this cluster's clock, in Unix seconds.
    pub(crate) fn now_secs(&self) -> i64 {
        self.clock.now_nanos() / 1_000_000_000
    }

    /// Loads (or creates, on first start) the cluster from `meta`.
    pub fn open(meta: MetaStore, opts: ScheduleOptions) -> PdResult<Cluster> {
        Cluster::open_with_clock(meta, opts, Arc::new(SystemClock))
    }

    /// As [`Cluster::open`], telling time by `clock`.
    pub fn open_with_clock(
        meta: MetaStore,
        opts: ScheduleOptions,
        clock: Arc<dyn Clock>,
    ) -> PdResult<Cluster> {
        let cluster_id = match meta.get_u64(storage::CLUSTER_ID)? {
            Some(id) => id,
            None => {
                // As upstream: creation time in the high bits, randomness below.
                let secs = (unix_nanos() / 1_000_000_000) as u64;
                let id = (secs << 32) | u64::from(rand::random::<u32>());
                meta.put_u64(storage::CLUSTER_ID, id)?;
                id
            }
        };
        let tso = Tso::open(&meta)?;
        let bootstrapped = meta.get_msg::<metapb::Cluster>(storage::CLUSTER)?;
        let id_end = meta.get_u64(storage::ALLOC_ID)?.unwrap_or(0);
        let mut stores = BTreeMap::new();
        for mut s in meta.scan_msgs::<metapb::Store>(storage::STORE_PREFIX)? {
            // Stores written before node_state was kept get the matching one.
            let state = metapb::StoreState::try_from(s.state).unwrap_or(metapb::StoreState::Up);
            set_state(&mut s, state);
            stores.insert(s.id, StoreInfo::new(s, 0));
        }
        for (k, v) in meta.scan_raw(storage::STORE_WEIGHT_PREFIX)? {
            let id = storage::decode_u64(&k, &k[storage::STORE_WEIGHT_PREFIX.len()..])?;
            let weights = Weights::decode(&v).filter(|w| w.are_valid());
            let Some(weights) = weights else {
                return Err(MetaError::Corrupted {
                    key: format!("store weight of {id}"),
                    detail: format!("{} bytes, or not two weights of 0 or more", v.len()),
                }
                .into());
            };
            if let Some(s) = stores.get_mut(&id) {
                s.weights = weights;
            }
        }
        let mut regions = Regions::default();
        for r in meta.scan_msgs::<metapb::Region>(storage::REGION_PREFIX)? {
            regions.insert(RegionInfo::from_meta(r));
        }
        let mut gc = GcState {
            safe_point: meta.get_u64(storage::GC_SAFE_POINT)?.unwrap_or(0),
            ..Default::default()
        };
        for (k, v) in meta.scan_raw(storage::SERVICE_SP_PREFIX)? {
            if v.len() == 16 {
                let sp = storage::decode_u64(&k, &v[..8])?;
                let expire = storage::decode_u64(&k, &v[8..])? as i64;
                gc.services
                    .insert(k[storage::SERVICE_SP_PREFIX.len()..].to_vec(), (sp, expire));
            }
        }
        let started = clock.now_nanos();
        let keyspaces = crate::keyspace::Keyspaces::load(&meta, started / 1_000_000_000)?;
        let opts = with_online_changes(&meta, opts)?;
        let limits = match meta.get(storage::STORE_LIMITS)? {
            None => Settings::default(),
            Some(bytes) => Settings::decode(&bytes).ok_or_else(|| MetaError::Corrupted {
                key: "store_limits".into(),
                detail: "not store limit rates above zero".into(),
            })?,
        };
        let (schedulers, holds) = crate::schedule::load_schedulers(&meta)?;
        Ok(Cluster {
            keyspaces,
            meta,
            cluster_id,
            opts: RwLock::new(InForce::new(opts)),
            schedulers: RwLock::new(
                (schedulers.into_iter())
                    .map(crate::schedule::RunningScheduler::new)
                    .collect(),
            ),
            paused_checkers: RwLock::default(),
            holds: RwLock::new(holds),
            tso,
            clock,
            started,
            bootstrapped: RwLock::new(bootstrapped),
            // Everything below the persisted end may have been handed out.
            ids: Mutex::new((id_end, id_end)),
            stores: RwLock::new(stores),
            regions: RwLock::new(regions),
            operators: Mutex::new(Operators::new(Limits::new(limits))),
            gc: Mutex::new(gc),
        })
    }

    /// The settings scheduling runs by now: the lasting ones, with any
    /// temporary ones (see [`Cluster::update_opts_for`]) not yet expired
    /// over them.
    pub fn opts(&self) -> ScheduleOptions {
        let now = self.clock.now_nanos();
        {
            let opts = self.opts.read();
            if !opts.expired(now) {
                return opts.now.clone();
            }
        }
        let mut opts = self.opts.write();
        opts.rebuild(now);
        opts.now.clone()
    }

    /// Whether `halt-scheduling` is on.
    pub(crate) fn scheduling_halted(&self) -> bool {
        self.opts().halt_scheduling
    }

    /// Changes settings online, as `POST /config` does: every key (upstream
    /// names, see [`ScheduleOptions::set`]) or none. Kept in the meta
    /// store, so they outlive a restart and win over the config file, as
    /// upstream keeps them.
    pub fn update_opts<'a>(
        &self,
        changes: impl IntoIterator<Item = (&'a String, &'a serde_json::Value)>,
    ) -> Result<(), String> {
        let mut opts = self.opts.write();
        let mut new = opts.lasting.clone();
        let mut kept = online_changes(&self.meta).map_err(|e| e.to_string())?;
        for (key, value) in changes {
            new.set(key, value)?;
            kept.insert(bare_key(key).to_string(), value.clone());
        }
        new.check()?;
        let text = serde_json::Value::Object(kept).to_string();
        let mut b = Batch::default();
        b.put(storage::CONFIG_CHANGES, text.as_bytes());
        self.meta.write(b).map_err(|e| e.to_string())?;
        tracing::info!(?new, "schedule settings changed");
        opts.lasting = new;
        opts.rebuild(self.clock.now_nanos());
        Ok(())
    }

    /// Changes settings for `ttl` only, as `POST /config?ttlSecond=N` does
    /// (BR and Lightning pause merging and raise limits that way while they
    /// import, so that a tool that dies leaves no lasting change): every
    /// key or none, only upstream's temporary keys (see [`TTL_KEYS`]), over
    /// the lasting settings until they expire. A zero `ttl` ends those
    /// keys' temporary values. Held in memory: a PD restart ends them early,
    /// where upstream keeps them to their end.
    pub fn update_opts_for<'a>(
        &self,
        changes: impl IntoIterator<Item = (&'a String, &'a serde_json::Value)>,
        ttl: std::time::Duration,
    ) -> Result<(), String> {
        let now = self.clock.now_nanos();
        let mut opts = self.opts.write();
        let mut temporary = opts.temporary.clone();
        let until = now.saturating_add(i64::try_from(ttl.as_nanos()).unwrap_or(i64::MAX));
        for (key, value) in changes {
            let bare = bare_key(key);
            if !TTL_KEYS.contains(&bare) {
                return Err(format!("unsupported ttl config {key}"));
            }
            if ttl.is_zero() {
                temporary.remove(bare);
            } else {
                temporary.insert(bare.to_string(), (value.clone(), until));
            }
        }
        let mut trial = opts.lasting.clone();
        for (key, (value, _)) in &temporary {
            trial.set(key, value)?;
        }
        trial.check()?;
        tracing::info!(?ttl, ?trial, "schedule settings changed for a while");
        opts.temporary = temporary;
        opts.rebuild(now);
        Ok(())
    }

    pub fn is_bootstrapped(&self) -> bool {
        self.bootstrapped.read().is_some()
    }

    fn require_bootstrapped(&self) -> PdResult<()> {
        if self.is_bootstrapped() {
            Ok(())
        } else {
            Err(PdError::new(
                pdpb::ErrorType::NotBootstrapped,
                "cluster is not bootstrapped",
            ))
        }
    }

    pub fn cluster_meta(&self) -> metapb::Cluster {
        self.bootstrapped.read().clone().unwrap_or(metapb::Cluster {
            id: self.cluster_id,
            max_peer_count: self.opts().max_replicas,
        })
    }

    pub fn alloc_id(&self) -> PdResult<u64> {
        let mut ids = self.ids.lock();
        if ids.0 >= ids.1 {
            let end = ids.1 + ID_BATCH;
            self.meta.put_u64(storage::ALLOC_ID, end)?;
            ids.1 = end;
        }
        ids.0 += 1;
        Ok(ids.0)
    }

    pub fn bootstrap(&self, mut store: metapb::Store, region: metapb::Region) -> PdResult<()> {
        let mut boot = self.bootstrapped.write();
        if boot.is_some() {
            return Err(PdError::new(
                pdpb::ErrorType::AlreadyBootstrapped,
                "cluster is already bootstrapped",
            ));
        }
        if store.id == 0 {
            return Err(invalid("bootstrap store id must not be 0"));
        }
        if region.id == 0 || region.peers.is_empty() {
            return Err(invalid("bootstrap region needs an id and a peer"));
        }
        if !region.peers.iter().all(|p| p.store_id == store.id) {
            return Err(invalid(
                "bootstrap region peers must be on the bootstrap store",
            ));
        }
        if !region.start_key.is_empty() || !region.end_key.is_empty() {
            return Err(invalid("bootstrap region must cover the whole key space"));
        }
        let cluster = metapb::Cluster {
            id: self.cluster_id,
            max_peer_count: self.opts().max_replicas,
        };
        set_state(&mut store, metapb::StoreState::Up);
        let mut b = Batch::default();
        b.put_msg(storage::CLUSTER, &cluster);
        b.put_msg(&id_key(storage::STORE_PREFIX, store.id), &store);
        b.put_msg(&id_key(storage::REGION_PREFIX, region.id), &region);
        self.meta.write(b)?;
        let now = self.clock.now_nanos();
        self.stores
            .write()
            .insert(store.id, StoreInfo::new(store, now));
        self.regions.write().insert(RegionInfo::from_meta(region));
        *boot = Some(cluster);
        Ok(())
    }

    pub fn put_store(&self, mut store: metapb::Store) -> PdResult<()> {
        self.require_bootstrapped()?;
        if store.id == 0 || store.address.is_empty() {
            return Err(invalid("store needs an id and an address"));
        }
        if let Some(l) = crate::placement::bad_label(&store.labels) {
            return Err(invalid(format!(
                "store label {:?}={:?}: keys and values are letters, digits and -_./",
                l.key, l.value
            )));
        }
        let mut stores = self.stores.write();
        for other in stores.values() {
            let o = &other.meta;
            // A store removed for good, or whose machine is gone, frees
            // its address for a store that replaces it.
            if o.id != store.id
                && o.address == store.address
                && o.state != metapb::StoreState::Tombstone as i32
                && !o.physically_destroyed
            {
                return Err(PdError::new(
                    pdpb::ErrorType::Unknown,
                    format!(
                        "duplicated store address: id:{} address:{:?}, already registered by \
                         id:{} address:{:?}",
                        store.id, store.address, o.id, o.address
                    ),
                ));
            }
        }
        match stores.get(&store.id) {
            Some(existing) if existing.is_tombstone() => {
                return Err(tombstone(store.id));
            }
            // A store cannot change its own state through PutStore.
            Some(existing) => {
                store.state = existing.meta.state;
                store.node_state = existing.meta.node_state;
                store.physically_destroyed = existing.meta.physically_destroyed;
                store.labels = crate::placement::merge_labels(&existing.meta.labels, &store.labels);
            }
            None => {
                set_state(&mut store, metapb::StoreState::Up);
                store.labels = crate::placement::merge_labels(&[], &store.labels);
            }
        }
        let now = self.clock.now_nanos();
        store.last_heartbeat = now;
        let mut b = Batch::default();
        b.put_msg(&id_key(storage::STORE_PREFIX, store.id), &store);
        self.meta.write(b)?;
        let (stats, weights) = stores
            .get(&store.id)
            .map(|s| (s.stats.clone(), s.weights))
            .unwrap_or_default();
        let mut info = StoreInfo::new(store, now);
        info.stats = stats;
        info.weights = weights;
        stores.insert(info.meta.id, info);
        Ok(())
    }

    pub fn store(&self, id: u64) -> PdResult<StoreInfo> {
        self.require_bootstrapped()?;
        self.stores.read().get(&id).cloned().ok_or_else(|| {
            PdError::new(
                pdpb::ErrorType::Unknown,
                format!("invalid store ID {id}, not found"),
            )
        })
    }

    pub fn stores(&self) -> Vec<StoreInfo> {
        self.stores.read().values().cloned().collect()
    }

    /// Records a store's heartbeat. An Offline store that holds no region
    /// peers any more becomes Tombstone here, whichever store's heartbeat
    /// it is (one that died empty sends none; upstream PD checks its
    /// stores every 10 s).
    pub fn store_heartbeat(&self, stats: pdpb::StoreStats) -> PdResult<()> {
        self.require_bootstrapped()?;
        let offline = {
            let mut stores = self.stores.write();
            let Some(s) = stores.get_mut(&stats.store_id) else {
                return Err(PdError::new(
                    pdpb::ErrorType::Unknown,
                    format!("store {} not found", stats.store_id),
                ));
            };
            if s.is_tombstone() {
                return Err(tombstone(stats.store_id));
            }
            s.last_heartbeat = self.clock.now_nanos();
            s.meta.last_heartbeat = s.last_heartbeat;
            s.stats = stats;
            stores.values().any(StoreInfo::is_offline)
        };
        if offline {
            self.bury_empty_stores()?;
        }
        Ok(())
    }

    /// How store silence is judged right now.
    pub fn liveness(&self) -> Liveness {
        Liveness {
            now: self.clock.now_nanos(),
            pd_started: self.started,
            max_store_down_time: self.opts().max_store_down_time,
        }
    }

    /// Applies a region heartbeat from the region's leader, as PD does: the
    /// region must be well formed and led by one of its peers, and a report
    /// older than what PD knows — an older epoch than the region's own, an
    /// older term than its last leader's, or an older version than a region
    /// it overlaps — is ignored, so no report can take keys from a newer
    /// region, nor a deposed leader's late report name it leader again.
    ///
    /// Returns what PD asks of the leader, if anything: the next step of the
    /// region's operator (see [`crate::schedule`]).
    pub fn region_heartbeat(
        &self,
        req: &pdpb::RegionHeartbeatRequest,
    ) -> PdResult<Option<pdpb::RegionHeartbeatResponse>> {
        self.require_bootstrapped()?;
        let Some(region) = req.region.clone() else {
            return Err(invalid("region heartbeat without region"));
        };
        check_region(&region)?;
        let leader = match &req.leader {
            Some(l) if region.peers.iter().any(|p| p == l) => Some(l.clone()),
            _ => {
                return Err(invalid(format!(
                    "region {} heartbeat: the leader must be one of its peers",
                    region.id
                )))
            }
        };
        // As upstream: a leader on a store PD does not know (removed for
        // good, or never there) would route clients where no store is.
        if let Some(l) = &leader {
            self.store(l.store_id)?;
        }
        let now = self.clock.now_nanos();
        let keep_splits = self.opts().split_merge_interval;
        let mut regions = self.regions.write();
        if regions.is_stale(&region, req.term) {
            return Ok(None);
        }
        let old = regions.by_id.get(&region.id);
        let lost_peers = old.is_some_and(|old| {
            old.region
                .peers
                .iter()
                .any(|p| !region.peers.iter().any(|q| q.store_id == p.store_id))
        });
        if old.is_none_or(|old| old.region != region) {
            self.persist_region(&regions, &region)?;
        }
        // Rates over the interval the store reports, else since the
        // region's last heartbeat.
        let secs = match &req.interval {
            Some(i) if i.end_timestamp > i.start_timestamp => {
                (i.end_timestamp - i.start_timestamp) as f64
            }
            _ => old.map_or(0.0, |o| elapsed(o.reported_at, now).as_secs_f64()),
        };
        let rate = |n: u64| if secs > 0.0 { n as f64 / secs } else { 0.0 };
        let (approximate_size, approximate_keys, size_reported) = reported_size(old, &region, req);
        let info = RegionInfo {
            leader,
            term: req.term,
            pending_peers: req.pending_peers.clone(),
            down_peers: req.down_peers.clone(),
            approximate_size,
            approximate_keys,
            size_reported,
            written_bytes: req.bytes_written,
            written_keys: req.keys_written,
            write_bytes_rate: rate(req.bytes_written),
            write_keys_rate: rate(req.keys_written),
            reported_at: now,
            region,
        };
        if regions.shows_split(&info.region) {
            regions.record_split(&[info.region.id], now, keep_splits);
        }
        let gone = regions.insert(info.clone());
        drop(regions);
        self.regions_gone(&gone);
        if lost_peers {
            self.bury_empty_stores()?;
        }
        self.schedule(&info)
    }

    /// Writes `region`, and deletes the regions it overlaps, on disk.
    fn persist_region(&self, regions: &Regions, region: &metapb::Region) -> PdResult<()> {
        let mut b = Batch::default();
        for id in regions.overlaps(region) {
            b.delete(&id_key(storage::REGION_PREFIX, id));
        }
        b.put_msg(&id_key(storage::REGION_PREFIX, region.id), region);
        self.meta.write(b)?;
        Ok(())
    }

    pub fn region_by_key(&self, key: &[u8]) -> Option<RegionInfo> {
        let regions = self.regions.read();
        let (_, id) = regions.by_start.range(..=key.to_vec()).next_back()?;
        let r = regions.by_id.get(id)?;
        let end = &r.region.end_key;
        (end.is_empty() || key < end.as_slice()).then(|| r.clone())
    }

    /// The region just before the one containing `key`, if it ends where
    /// that one starts. Across a gap (a split PD has not heard of yet) there
    /// is none, as PD answers: a reverse scan would otherwise take the
    /// earlier region for the one before and skip the gap's keys.
    pub fn prev_region(&self, key: &[u8]) -> Option<RegionInfo> {
        let current = self.region_by_key(key)?;
        if current.region.start_key.is_empty() {
            return None;
        }
        let regions = self.regions.read();
        let (_, id) = regions
            .by_start
            .range(..current.region.start_key.clone())
            .next_back()?;
        (regions.by_id.get(id))
            .filter(|prev| prev.region.end_key == current.region.start_key)
            .cloned()
    }

    pub fn region_by_id(&self, id: u64) -> Option<RegionInfo> {
        self.regions.read().by_id.get(&id).cloned()
    }

    /// Regions intersecting `[start, end)` (empty end = +inf), in key order.
    pub fn scan_regions(&self, start: &[u8], end: &[u8], limit: usize) -> Vec<RegionInfo> {
        let regions = self.regions.read();
        let first = regions
            .by_start
            .range(..=start.to_vec())
            .next_back()
            .map(|(k, _)| k.clone())
            .unwrap_or_default();
        regions
            .by_start
            .range(first..)
            .filter_map(|(_, id)| regions.by_id.get(id))
            .filter(|r| {
                let rend = &r.region.end_key;
                rend.is_empty() || rend.as_slice() > start
            })
            .take_while(|r| end.is_empty() || r.region.start_key.as_slice() < end)
            .take(if limit == 0 { usize::MAX } else { limit })
            .cloned()
            .collect()
    }

    pub fn region_count(&self) -> usize {
        self.regions.read().by_id.len()
    }

    /// Ids for `count` new regions split from `region`, a peer id for each
    /// of its peers.
    pub fn ask_batch_split(
        &self,
        region: &metapb::Region,
        count: u32,
    ) -> PdResult<Vec<pdpb::SplitId>> {
        self.require_bootstrapped()?;
        // As upstream; the store's split check tries again later.
        let opts = self.opts();
        if opts.halt_scheduling {
            return Err(PdError::new(
                pdpb::ErrorType::Unknown,
                "scheduling is halted",
            ));
        }
        if !opts.tikv_split {
            return Err(PdError::new(
                pdpb::ErrorType::Unknown,
                "tikv split region is disabled (enable-tikv-split-region)",
            ));
        }
        if count == 0 || count > MAX_SPLIT_COUNT {
            return Err(invalid(format!(
                "split count {count} out of range 1..={MAX_SPLIT_COUNT}"
            )));
        }
        if self.region_by_id(region.id).is_none() {
            return Err(PdError::new(
                pdpb::ErrorType::RegionNotFound,
                format!("region {} not found", region.id),
            ));
        }
        self.check_peer_stores(region)?;
        let ids: Vec<pdpb::SplitId> = (0..count)
            .map(|_| {
                Ok(pdpb::SplitId {
                    new_region_id: self.alloc_id()?,
                    new_peer_ids: region
                        .peers
                        .iter()
                        .map(|_| self.alloc_id())
                        .collect::<PdResult<_>>()?,
                })
            })
            .collect::<PdResult<_>>()?;
        // As upstream: a region about to split is not merged meanwhile.
        let mut split: Vec<u64> = ids.iter().map(|s| s.new_region_id).collect();
        split.push(region.id);
        let (now, keep) = (self.clock.now_nanos(), self.opts().split_merge_interval);
        self.regions.write().record_split(&split, now, keep);
        Ok(ids)
    }

    /// A region a store sent is well formed and its peers are on stores PD
    /// knows, one each: what PD does for it (an id per peer, a report
    /// checked against the tree) is then bounded by the cluster's size,
    /// not by what a request claims.
    fn check_peer_stores(&self, region: &metapb::Region) -> PdResult<()> {
        check_region(region)?;
        let stores = self.stores.read();
        match region
            .peers
            .iter()
            .find(|p| !stores.contains_key(&p.store_id))
        {
            Some(p) => Err(invalid(format!(
                "region {}: peer {} is on store {}, which PD does not know",
                region.id, p.id, p.store_id
            ))),
            None => Ok(()),
        }
    }

    /// A store's report of a split: every region in it not older than what
    /// PD knows goes into the tree at once (the parent shrinks, the new
    /// regions appear), so no key is left without a region until each new
    /// leader's heartbeat arrives. A report names no leaders: each region
    /// is taken as led from the store that led the parent, as a split
    /// leaves it, until its heartbeat says otherwise.
    pub fn report_batch_split(&self, report: &[metapb::Region]) -> PdResult<()> {
        self.require_bootstrapped()?;
        let regions = report;
        if regions.len() < 2 || regions.len() > MAX_SPLIT_COUNT as usize + 1 {
            return Err(invalid(format!(
                "a split report names 2 to {} regions, not {}",
                MAX_SPLIT_COUNT + 1,
                regions.len()
            )));
        }
        for r in regions {
            self.check_peer_stores(r)?;
        }
        if regions.windows(2).any(|w| w[0].end_key != w[1].start_key) {
            return Err(invalid("split regions must be adjacent, in key order"));
        }
        let ids: Vec<u64> = regions.iter().map(|r| r.id).collect();
        tracing::info!(?ids, "regions split");
        let now = self.clock.now_nanos();
        let keep_splits = self.opts().split_merge_interval;
        let mut tree = self.regions.write();
        let leader_store = regions.iter().find_map(|r| {
            let ids = tree.overlaps(r).into_iter().chain([r.id]);
            ids.filter_map(|id| tree.by_id.get(&id)?.leader_store())
                .next()
        });
        let mut gone = vec![];
        for r in regions {
            if tree.is_stale(r, 0) {
                continue;
            }
            self.persist_region(&tree, r)?;
            let leader = leader_store.and_then(|s| r.peers.iter().find(|p| p.store_id == s));
            gone.extend(tree.insert(RegionInfo {
                leader: leader.cloned(),
                reported_at: now,
                ..RegionInfo::from_meta(r.clone())
            }));
        }
        tree.record_split(&ids, now, keep_splits);
        drop(tree);
        self.regions_gone(&gone);
        Ok(())
    }

    pub fn gc_safe_point(&self) -> u64 {
        self.gc.lock().safe_point
    }

    /// Advances the GC safe point; it never moves back, nor past a live
    /// service safe point (a backup or CDC still reading old versions).
    /// Returns the new value.
    pub fn update_gc_safe_point(&self, sp: u64) -> PdResult<u64> {
        let now = unix_nanos() / 1_000_000_000;
        let mut gc = self.gc.lock();
        gc.services.retain(|_, (_, expire)| *expire > now);
        let sp = gc.services.values().map(|(s, _)| *s).fold(sp, u64::min);
        if sp > gc.safe_point {
            self.meta.put_u64(storage::GC_SAFE_POINT, sp)?;
            gc.safe_point = sp;
        }
        Ok(gc.safe_point)
    }

    /// Sets (or, with ttl <= 0, removes) a service's safe point, which
    /// holds the GC safe point back while it lives, and returns the lowest
    /// safe point a live service holds, never below the GC safe point
    /// (see [`MinServiceSafePoint`]). A safe point below the GC safe point
    /// is not kept: GC may already have removed what it asks to keep, and
    /// the answer (above the request) tells the service so, as PD answers
    /// (a backup or changefeed checks `min_safe_point <= its start ts`). A
    /// GC driver that sets its candidate as service `gc_worker` learns
    /// from the answer how far the others let it go, as TiDB's does.
    pub fn update_service_safe_point(
        &self,
        service: &[u8],
        ttl: i64,
        sp: u64,
    ) -> PdResult<MinServiceSafePoint> {
        if service.is_empty() {
            return Err(invalid("service id must not be empty"));
        }
        let now = unix_nanos() / 1_000_000_000;
        let mut gc = self.gc.lock();
        let key = [storage::SERVICE_SP_PREFIX, service].concat();
        let mut b = Batch::default();
        if ttl <= 0 {
            b.delete(&key);
            self.meta.write(b)?;
            gc.services.remove(service);
        } else if sp < gc.safe_point {
            // Too late to protect: not kept.
        } else {
            let expire = now.saturating_add(ttl);
            let mut v = sp.to_be_bytes().to_vec();
            v.extend_from_slice(&(expire as u64).to_be_bytes());
            b.put(&key, &v);
            self.meta.write(b)?;
            gc.services.insert(service.to_vec(), (sp, expire));
        }
        gc.services.retain(|_, (_, expire)| *expire > now);
        let floor = MinServiceSafePoint {
            service_id: b"gc_worker".to_vec(),
            ttl: i64::MAX,
            safe_point: gc.safe_point,
        };
        let lowest = (gc.services.iter())
            .filter(|(_, (sp, _))| *sp >= gc.safe_point)
            .min_by_key(|(id, (sp, _))| (*sp, id.as_slice()))
            .map(|(id, (sp, expire))| MinServiceSafePoint {
                service_id: id.clone(),
                ttl: expire.saturating_sub(now),
                safe_point: *sp,
            });
        Ok(lowest.unwrap_or(floor))
    }
}

/// The answer to `UpdateServiceGCSafePoint`: the service holding the
/// lowest live safe point, its time left (seconds) and that safe point;
/// with none, the GC safe point itself, as the never-expiring `gc_worker`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MinServiceSafePoint {
    pub service_id: Vec<u8>,
    pub ttl: i64,
    pub safe_point: u64,
}

/// A heartbeat's size and keys, and whether they are known. A store
/// reports size 0 while it has not measured the region's current range
/// (after a split or a merge, or on a new leader) and at least 1 once it
/// has. What PD knew stays while the range is the same (a new leader has
/// not measured yet); a new range's size is unknown until measured, so a
/// region that just took in a merge is not merged on as if empty.
fn reported_size(
    old: Option<&RegionInfo>,
    region: &metapb::Region,
    req: &pdpb::RegionHeartbeatRequest,
) -> (u64, u64, bool) {
    if req.approximate_size > 0 {
        return (req.approximate_size, req.approximate_keys, true);
    }
    let version = |r: &metapb::Region| r.region_epoch.as_ref().map(|e| e.version);
    match old {
        Some(o) if o.size_reported && version(&o.region) == version(region) => {
            (o.approximate_size, o.approximate_keys, true)
        }
        _ => (0, 0, false),
    }
}

/// The settings changed online so far (see [`Cluster::update_opts`]).
/// The settings upstream lets `POST /config?ttlSecond=N` change for a
/// while (its `supportedTTLConfigs`, less what Tikal has no setting for).
pub const TTL_KEYS: [&str; 11] = [
    "max-snapshot-count",
    "max-merge-region-size",
    "max-pending-peer-count",
    "max-merge-region-keys",
    "leader-schedule-limit",
    "region-schedule-limit",
    "replica-schedule-limit",
    "merge-schedule-limit",
    "hot-region-schedule-limit",
    "enable-location-replacement",
    "enable-tikv-split-region",
];

/// A setting's name without its section (`schedule.`, `replication.`).
pub(crate) fn bare_key(key: &str) -> &str {
    (key.strip_prefix("schedule."))
        .or_else(|| key.strip_prefix("replication."))
        .unwrap_or(key)
}

/// The settings in force: the lasting ones (the config file's, with the
/// changes made online) and the temporary ones over them, each until it
/// expires (Unix nanoseconds).
struct InForce {
    lasting: ScheduleOptions,
    temporary: BTreeMap<String, (serde_json::Value, i64)>,
    now: ScheduleOptions,
}

impl InForce {
    fn new(lasting: ScheduleOptions) -> InForce {
        InForce {
            now: lasting.clone(),
            lasting,
            temporary: BTreeMap::new(),
        }
    }

    /// Whether a temporary setting has expired by `now`.
    fn expired(&self, now: i64) -> bool {
        self.temporary.values().any(|(_, until)| *until <= now)
    }

    /// Drops the temporary settings expired by `now` and sets the others
    /// over the lasting ones (each was checked when it was made).
    fn rebuild(&mut self, now: i64) {
        self.temporary.retain(|_, (_, until)| *until > now);
        let mut opts = self.lasting.clone();
        for (key, (value, _)) in &self.temporary {
            if let Err(e) = opts.set(key, value) {
                tracing::warn!(key, error = %e, "temporary setting dropped");
            }
        }
        if let Err(e) = opts.check() {
            tracing::warn!(error = %e, "temporary settings dropped");
            self.temporary.clear();
            opts = self.lasting.clone();
        }
        self.now = opts;
    }
}

fn online_changes(
    meta: &MetaStore,
) -> Result<serde_json::Map<String, serde_json::Value>, MetaError> {
    let Some(bytes) = meta.get(storage::CONFIG_CHANGES)? else {
        return Ok(Default::default());
    };
    serde_json::from_slice(&bytes).map_err(|e| MetaError::Corrupted {
        key: "config_changes".into(),
        detail: e.to_string(),
    })
}

/// `opts` (from the config file) with the settings changed online over
/// them. A change this version refuses is left out with a warning; if the
/// result breaks a rule between settings (see [`ScheduleOptions::check`]),
/// the file's settings stand, with a warning.
fn with_online_changes(
    meta: &MetaStore,
    opts: ScheduleOptions,
) -> Result<ScheduleOptions, MetaError> {
    let mut merged = opts.clone();
    for (key, value) in online_changes(meta)? {
        if let Err(e) = merged.set(&key, &value) {
            tracing::warn!(key, %value, error = e, "setting changed online not applied");
        }
    }
    if let Err(e) = merged.check() {
        tracing::warn!(error = e, "settings changed online not applied");
        return Ok(opts);
    }
    Ok(merged)
}

pub(crate) fn invalid(msg: impl Into<String>) -> PdError {
    PdError::new(pdpb::ErrorType::InvalidValue, msg)
}

/// Upstream's answer to a removed store that still reports.
fn tombstone(store_id: u64) -> PdError {
    PdError::new(
        pdpb::ErrorType::StoreTombstone,
        format!("store {store_id} is tombstone"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn region(id: u64, start: &[u8], end: &[u8], version: u64, conf_ver: u64) -> metapb::Region {
        metapb::Region {
            id,
            start_key: start.to_vec(),
            end_key: end.to_vec(),
            region_epoch: Some(metapb::RegionEpoch { conf_ver, version }),
            peers: vec![metapb::Peer {
                id: id + 100,
                store_id: 1,
                ..Default::default()
            }],
            ..Default::default()
        }
    }

    fn heartbeat(r: &metapb::Region) -> pdpb::RegionHeartbeatRequest {
        pdpb::RegionHeartbeatRequest {
            leader: r.peers.first().cloned(),
            region: Some(r.clone()),
            ..Default::default()
        }
    }

    /// A cluster bootstrapped with region 2 over every key at epoch (1, 1).
    fn cluster(dir: &std::path::Path) -> Cluster {
        let c = Cluster::open(MetaStore::open(dir).unwrap(), ScheduleOptions::default()).unwrap();
        let store = metapb::Store {
            id: 1,
            address: "127.0.0.1:1".into(),
            ..Default::default()
        };
        c.bootstrap(store, region(2, b"", b"", 1, 1)).unwrap();
        c
    }

    fn routes_to(c: &Cluster, key: &[u8]) -> u64 {
        c.region_by_key(key).map_or(0, |r| r.region.id)
    }

    #[test]
    fn a_region_led_from_a_store_pd_does_not_know_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let c = cluster(dir.path());
        let mut r = region(2, b"", b"", 2, 1);
        r.peers[0].store_id = 4242;
        let err = c.region_heartbeat(&heartbeat(&r)).unwrap_err();
        assert!(err.to_string().contains("invalid store ID 4242"), "{err}");
        let kept = c.region_by_key(b"a").unwrap();
        assert_eq!(kept.region.peers[0].store_id, 1, "the tree is unchanged");
    }

    #[test]
    fn settings_changed_online_outlive_a_restart_and_win_over_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let change = |c: &Cluster, pairs: &[(&str, serde_json::Value)]| {
            let owned: Vec<(String, serde_json::Value)> = pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.clone()))
                .collect();
            c.update_opts(owned.iter().map(|(k, v)| (k, v)))
        };
        {
            let c = cluster(dir.path());
            change(&c, &[("location-labels", json!("zone,host"))]).unwrap();
            let both = [
                ("high-space-ratio", json!(0.9)),
                ("low-space-ratio", json!(0.95)),
            ];
            change(&c, &both).unwrap();
            change(&c, &[("replication.max-replicas", json!(5))]).unwrap();
            // pd-ctl's string form of a switch.
            change(&c, &[("enable-remove-down-replica", json!("false"))]).unwrap();
            // Refused: not kept either.
            assert!(change(&c, &[("max-replicas", json!(0))]).is_err());
        }
        let file = ScheduleOptions {
            leader_schedule_limit: 7,
            ..Default::default()
        };
        let c = Cluster::open(MetaStore::open(dir.path()).unwrap(), file).unwrap();
        let opts = c.opts();
        assert_eq!(opts.location_labels, ["zone", "host"]);
        assert_eq!((opts.high_space_ratio, opts.low_space_ratio), (0.9, 0.95));
        assert_eq!(opts.max_replicas, 5);
        assert!(!opts.repairs.remove_down && opts.repairs.make_up);
        assert_eq!(
            opts.leader_schedule_limit, 7,
            "the file's, never changed online"
        );
    }

    #[test]
    fn store_labels_are_checked_and_merge_as_stores_report_them() {
        let dir = tempfile::tempdir().unwrap();
        let c = cluster(dir.path());
        let label = |key: &str, value: &str| metapb::StoreLabel {
            key: key.into(),
            value: value.into(),
        };
        let mut store = c.store(1).unwrap().meta;
        store.labels = vec![label("zone", "z1"), label("host", "h1")];
        c.put_store(store.clone()).unwrap();
        // A restart reporting a new host and no zone keeps the zone.
        store.labels = vec![label("host", "h2")];
        c.put_store(store.clone()).unwrap();
        assert_eq!(
            c.store(1).unwrap().meta.labels,
            vec![label("zone", "z1"), label("host", "h2")]
        );
        for bad in [label("", "x"), label("zone", "a b"), label("-zone", "z")] {
            store.labels = vec![bad.clone()];
            let err = c.put_store(store.clone()).unwrap_err();
            assert!(err.to_string().contains("store label"), "{bad:?}: {err}");
        }
        assert_eq!(
            c.store(1).unwrap().meta.labels.len(),
            2,
            "refused: unchanged"
        );
    }

    #[test]
    fn store_weights_outlive_a_restart_and_a_new_put_store() {
        let dir = tempfile::tempdir().unwrap();
        let weights = Weights {
            leader: 2.5,
            region: 0.0,
        };
        {
            let c = cluster(dir.path());
            c.set_store_weights(1, weights).unwrap();
            let bad = Weights {
                leader: f64::NAN,
                region: 1.0,
            };
            assert!(c.set_store_weights(1, bad).is_err());
            assert!(c.set_store_weights(7, weights).is_err(), "no store 7");
        }
        let c = Cluster::open(MetaStore::open(dir.path()).unwrap(), Default::default()).unwrap();
        assert_eq!(c.store(1).unwrap().weights, weights);
        // A restarted store registers again: its weights stay.
        c.put_store(c.store(1).unwrap().meta).unwrap();
        assert_eq!(c.store(1).unwrap().weights, weights);
    }

    #[test]
    fn schedulers_removed_added_and_evicted_stores_outlive_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let reopen = || Cluster::open(MetaStore::open(dir.path()).unwrap(), Default::default());
        {
            let c = cluster(dir.path());
            c.remove_scheduler("balance-region-scheduler").unwrap();
            c.hold_store(crate::schedule::LeaderHold::Evict, 1).unwrap();
            // Pauses are not kept, as upstream's.
            c.pause_scheduler("balance-leader-scheduler", 600).unwrap();
        }
        {
            let c = reopen().unwrap();
            assert_eq!(
                c.schedulers(),
                [
                    "balance-leader-scheduler",
                    "balance-hot-region-scheduler",
                    crate::schedule::EVICT_LEADER
                ]
            );
            assert_eq!(c.held_stores(crate::schedule::LeaderHold::Evict), [1]);
            assert!(c.paused_schedulers().is_empty());
            c.remove_scheduler("evict-leader-scheduler-1").unwrap();
            c.add_scheduler("balance-region-scheduler").unwrap();
        }
        let c = reopen().unwrap();
        assert_eq!(c.schedulers().len(), 3);
        assert!(!c.schedulers().contains(&crate::schedule::EVICT_LEADER));
        assert!(c.held_stores(crate::schedule::LeaderHold::Evict).is_empty());
    }

    #[test]
    fn the_region_before_is_one_that_ends_where_the_key_s_region_starts() {
        let dir = tempfile::tempdir().unwrap();
        let c = cluster(dir.path());
        // A split into three; the middle region has not reported yet.
        c.region_heartbeat(&heartbeat(&region(2, b"", b"g", 2, 1)))
            .unwrap();
        c.region_heartbeat(&heartbeat(&region(9, b"m", b"", 2, 1)))
            .unwrap();
        let prev = |key: &[u8]| c.prev_region(key).map(|r| r.region.id);
        assert_eq!(prev(b"n"), None, "region 2 ends at g, not m: a gap");
        c.region_heartbeat(&heartbeat(&region(8, b"g", b"m", 2, 1)))
            .unwrap();
        assert_eq!(
            (prev(b"n"), prev(b"h"), prev(b"a")),
            (Some(8), Some(2), None)
        );
    }

    #[test]
    fn heartbeats_older_than_what_pd_knows_reroute_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let c = cluster(dir.path());
        // A new region at an older version than the one it overlaps.
        c.region_heartbeat(&heartbeat(&region(9, b"", b"", 0, 5)))
            .unwrap();
        // Region 2 itself, with one epoch part going back.
        c.region_heartbeat(&heartbeat(&region(2, b"", b"m", 0, u64::MAX)))
            .unwrap();
        for key in [&b""[..], b"a", b"zz"] {
            assert_eq!(routes_to(&c, key), 2, "{key:?}");
        }
        // A real split: both halves report at the newer version.
        c.region_heartbeat(&heartbeat(&region(9, b"m", b"", 2, 1)))
            .unwrap();
        c.region_heartbeat(&heartbeat(&region(2, b"", b"m", 2, 1)))
            .unwrap();
        assert_eq!((routes_to(&c, b"a"), routes_to(&c, b"z")), (2, 9));
        // The old, whole region 2 can no longer come back.
        c.region_heartbeat(&heartbeat(&region(2, b"", b"", 1, 1)))
            .unwrap();
        assert_eq!((routes_to(&c, b"a"), routes_to(&c, b"z")), (2, 9));
    }

    #[test]
    fn a_size_is_known_only_for_the_range_it_was_measured_on() {
        let dir = tempfile::tempdir().unwrap();
        let c = cluster(dir.path());
        let known = |c: &Cluster| {
            let r = c.region_by_id(2).unwrap();
            (r.size_reported, r.approximate_size, r.approximate_keys)
        };
        let sized = |r: &metapb::Region, size: u64, keys: u64| pdpb::RegionHeartbeatRequest {
            approximate_size: size,
            approximate_keys: keys,
            ..heartbeat(r)
        };
        let whole = region(2, b"", b"", 1, 1);
        c.region_heartbeat(&heartbeat(&whole)).unwrap();
        assert_eq!(known(&c), (false, 0, 0), "never measured");
        c.region_heartbeat(&sized(&whole, 1, 0)).unwrap();
        assert_eq!(known(&c), (true, 1, 0), "measured empty");
        c.region_heartbeat(&sized(&whole, 5 << 20, 40)).unwrap();
        // A new leader that has not measured yet: the same range.
        c.region_heartbeat(&heartbeat(&whole)).unwrap();
        assert_eq!(known(&c), (true, 5 << 20, 40));
        // A merge (or split) changed the range: unknown until measured.
        // Taken as 0 keys, the region would be merged on at once.
        c.region_heartbeat(&heartbeat(&region(2, b"", b"", 2, 1)))
            .unwrap();
        assert_eq!(known(&c), (false, 0, 0));
    }

    #[test]
    fn a_deposed_leaders_late_heartbeat_names_no_leader() {
        let dir = tempfile::tempdir().unwrap();
        let c = cluster(dir.path());
        let store_2 = metapb::Store {
            id: 2,
            address: "127.0.0.1:2".into(),
            ..Default::default()
        };
        c.put_store(store_2).unwrap();
        let mut r = region(2, b"", b"", 1, 2);
        r.peers.push(metapb::Peer {
            id: 202,
            store_id: 2,
            ..Default::default()
        });
        let from = |leader: usize, term: u64| pdpb::RegionHeartbeatRequest {
            leader: Some(r.peers[leader].clone()),
            term,
            ..heartbeat(&r)
        };
        let leader_store = |c: &Cluster| c.region_by_id(2).unwrap().leader_store();
        c.region_heartbeat(&from(0, 6)).unwrap();
        c.region_heartbeat(&from(1, 7)).unwrap();
        assert_eq!(leader_store(&c), Some(2));
        // The old leader's report of term 6, same epoch, arrives last.
        c.region_heartbeat(&from(0, 6)).unwrap();
        assert_eq!(leader_store(&c), Some(2));
        // A later term moves it back.
        c.region_heartbeat(&from(0, 8)).unwrap();
        assert_eq!(leader_store(&c), Some(1));
    }

    #[test]
    fn malformed_regions_and_leaders_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let c = cluster(dir.path());
        let inverted = region(2, b"z", b"a", 1, 1);
        assert!(c.region_heartbeat(&heartbeat(&inverted)).is_err());
        let mut no_leader = heartbeat(&region(2, b"", b"", 1, 1));
        no_leader.leader = Some(metapb::Peer::default());
        assert!(c.region_heartbeat(&no_leader).is_err());
        let mut bad_role = region(2, b"", b"", 1, 1);
        bad_role.peers[0].role = 99;
        assert!(c.region_heartbeat(&heartbeat(&bad_role)).is_err());
        let mut twins = region(2, b"", b"", 1, 1);
        twins.peers.push(twins.peers[0].clone());
        assert!(c.region_heartbeat(&heartbeat(&twins)).is_err());
        // A split report older than what PD knows changes no route.
        let split = [region(9, b"", b"m", 0, 0), region(10, b"m", b"", 0, 0)];
        c.report_batch_split(&split).unwrap();
        assert!(c.report_batch_split(&split[..1]).is_err());
        assert_eq!(routes_to(&c, b"a"), 2);
        assert!(c.region_by_key(b"a").unwrap().leader.is_none());
    }

    #[test]
    fn split_requests_are_bounded_by_the_stores_pd_knows() {
        let dir = tempfile::tempdir().unwrap();
        let c = cluster(dir.path());
        let mut known = region(2, b"", b"", 1, 1);
        assert_eq!(c.ask_batch_split(&known, 2).unwrap().len(), 2);
        // As many as client-go asks for in one batch of split keys.
        assert_eq!(c.ask_batch_split(&known, 2048).unwrap().len(), 2048);
        assert!(c.ask_batch_split(&known, 2049).is_err());
        // A peer on a store PD never heard of: no ids for it, however many.
        let mut forged = known.clone();
        forged.peers = (0..100)
            .map(|i| metapb::Peer {
                id: 1000 + i,
                store_id: 1000 + i,
                ..Default::default()
            })
            .collect();
        let err = c.ask_batch_split(&forged, 2).unwrap_err();
        assert!(err.to_string().contains("does not know"), "{err}");
        // A report of more regions than one split can make, or naming an
        // unknown store, changes nothing.
        let many: Vec<metapb::Region> = (0..2100u32)
            .map(|i| {
                let key = |i: u32| {
                    if i == 0 {
                        vec![]
                    } else {
                        i.to_be_bytes().to_vec()
                    }
                };
                let end = if i == 2099 { vec![] } else { key(i + 1) };
                region(1000 + u64::from(i), &key(i), &end, 5, 1)
            })
            .collect();
        let err = c.report_batch_split(&many).unwrap_err();
        assert!(err.to_string().contains("2 to 2049 regions"), "{err}");
        known.peers[0].store_id = 7;
        let split = [region(9, b"", b"m", 5, 1), {
            let mut r = known.clone();
            r.start_key = b"m".to_vec();
            r.region_epoch = Some(metapb::RegionEpoch {
                conf_ver: 1,
                version: 5,
            });
            r
        }];
        let err = c.report_batch_split(&split).unwrap_err();
        assert!(err.to_string().contains("does not know"), "{err}");
        assert_eq!(routes_to(&c, b"a"), 2);
    }
}
