//! What PD asks of the cluster: on each region heartbeat, drive the
//! region's operator a step on, or ask the replica checker ([`checker`])
//! for a new one; and take stores out of service (Up -> Offline ->
//! Tombstone, see [`crate::stores`]).
//!
//! At most one operator runs per region. PD keeps operators in memory
//! only: a restarted PD plans afresh from what the regions report (a
//! learner left behind by a lost operator is promoted by the checker).
//! Ended operators are kept a while so `GET /operators/{region}` can say
//! how the last one ended.

use std::cell::OnceCell;
use std::collections::HashMap;
use std::time::Duration;

use tikal_proto::{metapb, pdpb};
use tracing::{info, warn};

use crate::checker::{self, ClusterView};
use crate::clock::elapsed;
use crate::cluster::{Cluster, PdResult};
use crate::operator::{OpStatus, Operator, Progress};
use crate::regions::{RegionInfo, StoreLoad};
use crate::storage::{self, id_key, Batch, MetaError};
use crate::stores::{set_state, supports_conf_change_v2, StoreState};

/// How long an ended operator stays visible (as upstream keeps records).
const ENDED_KEPT: Duration = Duration::from_secs(10 * 60);

#[derive(Default)]
pub struct Operators {
    running: HashMap<u64, Operator>,
    /// The last operator that ended, per region: how, and when.
    ended: HashMap<u64, (Operator, OpStatus, i64)>,
}

/// A store request PD refuses, with upstream's messages.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("[PD:core:ErrStoreNotFound]store {0} not found")]
    NotFound(u64),
    #[error("[PD:core:ErrStoreRemoved]store {0} has been removed")]
    Removed(u64),
    #[error(
        "[PD:core:ErrStoresNotEnough]can not remove store {id} since the number of up stores \
         would be {up} while need {need}"
    )]
    NotEnough { id: u64, up: usize, need: u32 },
    #[error(transparent)]
    Meta(#[from] MetaError),
}

impl Cluster {
    /// Drives `r`'s operator (or makes one) and returns the command for
    /// the leader, if there is one to send now.
    pub(crate) fn schedule(
        &self,
        r: &RegionInfo,
    ) -> PdResult<Option<pdpb::RegionHeartbeatResponse>> {
        let now = self.clock.now_nanos();
        let v2 = supports_conf_change_v2(self.stores.read().values());
        let mut ops = self.operators.lock();
        let id = r.region.id;
        if let Some(op) = ops.running.get_mut(&id) {
            match op.progress(r, now, v2) {
                Progress::Running(cmd) => return Ok(cmd.map(|c| self.response(r, *c))),
                Progress::Finished => {
                    info!(region_id = id, operator = %op, "operator finished");
                    ops.end(id, OpStatus::Success, now);
                }
                Progress::Dropped(status, why) => {
                    warn!(region_id = id, operator = %op, why, "operator dropped");
                    ops.end(id, status, now);
                }
            }
        }
        let view = View {
            cluster: self,
            states: self.store_states(),
            loads: OnceCell::new(),
        };
        let Some(plan) = checker::check(r, &view)? else {
            return Ok(None);
        };
        let mut op = Operator::new(plan, r, now, self.opts.operator_timeout);
        info!(region_id = id, operator = %op, "operator created");
        let cmd = match op.progress(r, now, v2) {
            Progress::Running(cmd) => cmd,
            Progress::Finished | Progress::Dropped(..) => return Ok(None),
        };
        ops.running.insert(id, op);
        Ok(cmd.map(|c| self.response(r, *c)))
    }

    /// A command, addressed as upstream addresses it: the region, its
    /// epoch, and the peer meant to carry it out (the leader).
    fn response(
        &self,
        r: &RegionInfo,
        cmd: pdpb::RegionHeartbeatResponse,
    ) -> pdpb::RegionHeartbeatResponse {
        pdpb::RegionHeartbeatResponse {
            header: Some(pdpb::ResponseHeader {
                cluster_id: self.cluster_id,
                error: None,
            }),
            region_id: r.region.id,
            region_epoch: Some(r.epoch()),
            target_peer: r.leader.clone(),
            ..cmd
        }
    }

    /// Every store's state, by id.
    pub fn store_states(&self) -> HashMap<u64, StoreState> {
        let l = self.liveness();
        let stores = self.stores.read();
        stores.iter().map(|(id, s)| (*id, s.state(&l))).collect()
    }

    /// Peers, leaders and data each store holds, by store id.
    pub fn store_loads(&self) -> HashMap<u64, StoreLoad> {
        self.regions.read().store_loads()
    }

    /// Running operators, by region id.
    pub fn operators(&self) -> Vec<Operator> {
        let ops = self.operators.lock();
        let mut list: Vec<Operator> = ops.running.values().cloned().collect();
        list.sort_by_key(|op| op.region_id);
        list
    }

    /// The region's running operator, or else the last one that ended
    /// (for ten minutes), with its status.
    pub fn operator(&self, region_id: u64) -> Option<(Operator, OpStatus)> {
        let now = self.clock.now_nanos();
        let mut ops = self.operators.lock();
        if let Some(op) = ops.running.get(&region_id) {
            let status = if op.is_timed_out(now) {
                OpStatus::Timeout
            } else {
                OpStatus::Running
            };
            return Some((op.clone(), status));
        }
        ops.ended
            .retain(|_, (_, _, at)| elapsed(*at, now) <= ENDED_KEPT);
        ops.ended
            .get(&region_id)
            .map(|(op, status, _)| (op.clone(), *status))
    }

    /// An operator asked for by hand, as `pd-ctl operator add
    /// transfer-leader <region> <store>` does: the region's leadership
    /// moves to its voter on `to_store`. It goes to the leader with the
    /// region's next heartbeat. Refused while another operator runs.
    pub fn add_transfer_leader(&self, region_id: u64, to_store: u64) -> Result<(), String> {
        let r = self
            .region_by_id(region_id)
            .ok_or_else(|| format!("region {region_id} not found"))?;
        if !r.peer_on(to_store).is_some_and(crate::regions::is_voter) {
            return Err(format!(
                "region {region_id} has no voter on store {to_store}"
            ));
        }
        let from_store = r
            .leader_store()
            .ok_or_else(|| format!("region {region_id} has no leader"))?;
        let plan = crate::operator::Plan {
            desc: "admin-transfer-leader".into(),
            brief: format!("transfer leader: store {from_store} to {to_store}"),
            kind: crate::operator::kind::LEADER,
            steps: vec![crate::operator::Step::TransferLeader {
                from_store,
                to_store,
            }],
        };
        let now = self.clock.now_nanos();
        let mut ops = self.operators.lock();
        if ops.running.contains_key(&region_id) {
            return Err(format!("region {region_id} already has an operator"));
        }
        let op = Operator::new(plan, &r, now, self.opts.operator_timeout);
        info!(region_id, operator = %op, "operator created by request");
        ops.running.insert(region_id, op);
        Ok(())
    }

    /// Takes a store out of service, as `pd-ctl store delete` does: it
    /// becomes Offline, the replica checker moves its replicas elsewhere,
    /// and once it holds none it becomes Tombstone. Refused if fewer Up
    /// stores than `max-replicas` would remain.
    pub fn remove_store(&self, id: u64) -> Result<(), StoreError> {
        let mut stores = self.stores.write();
        let Some(store) = stores.get(&id) else {
            return Err(StoreError::NotFound(id));
        };
        if store.is_tombstone() {
            return Err(StoreError::Removed(id));
        }
        if store.is_offline() {
            return Ok(());
        }
        let up = stores
            .values()
            .filter(|s| s.meta.id != id && s.meta.state == metapb::StoreState::Up as i32)
            .count();
        let need = self.opts.max_replicas;
        if up < need as usize {
            return Err(StoreError::NotEnough { id, up, need });
        }
        let mut meta = store.meta.clone();
        set_state(&mut meta, metapb::StoreState::Offline);
        self.put_store_meta(&meta)?;
        info!(store_id = id, "store is offline; its replicas will move");
        if let Some(s) = stores.get_mut(&id) {
            s.meta = meta;
        }
        Ok(())
    }

    /// Makes every Offline store that holds no region peer a Tombstone.
    pub(crate) fn bury_empty_stores(&self) -> Result<(), MetaError> {
        let loads = self.store_loads();
        let mut stores = self.stores.write();
        for s in stores.values_mut() {
            let empty = loads.get(&s.meta.id).is_none_or(|l| l.region_count == 0);
            if s.is_offline() && empty {
                let mut meta = s.meta.clone();
                set_state(&mut meta, metapb::StoreState::Tombstone);
                self.put_store_meta(&meta)?;
                info!(store_id = meta.id, "store is tombstone");
                s.meta = meta;
            }
        }
        Ok(())
    }

    fn put_store_meta(&self, meta: &metapb::Store) -> Result<(), MetaError> {
        let mut b = Batch::default();
        b.put_msg(&id_key(storage::STORE_PREFIX, meta.id), meta);
        self.meta.write(b)
    }
}

impl Operators {
    fn end(&mut self, region_id: u64, status: OpStatus, now: i64) {
        if let Some(op) = self.running.remove(&region_id) {
            self.ended.insert(region_id, (op, status, now));
        }
    }
}

/// The cluster as the checker sees it during one heartbeat; per-store
/// counts are taken only if a rule needs them.
struct View<'a> {
    cluster: &'a Cluster,
    states: HashMap<u64, StoreState>,
    loads: OnceCell<HashMap<u64, StoreLoad>>,
}

impl View<'_> {
    fn load(&self, store_id: u64) -> StoreLoad {
        let loads = self.loads.get_or_init(|| self.cluster.store_loads());
        loads.get(&store_id).copied().unwrap_or_default()
    }
}

impl ClusterView for View<'_> {
    fn max_replicas(&self) -> usize {
        self.cluster.opts.max_replicas as usize
    }

    fn store_state(&self, store_id: u64) -> Option<StoreState> {
        self.states.get(&store_id).copied()
    }

    fn store_ids(&self) -> Vec<u64> {
        let mut ids: Vec<u64> = self.states.keys().copied().collect();
        ids.sort_unstable();
        ids
    }

    fn region_count(&self, store_id: u64) -> usize {
        self.load(store_id).region_count
    }

    fn leader_count(&self, store_id: u64) -> usize {
        self.load(store_id).leader_count
    }

    fn alloc_id(&self) -> PdResult<u64> {
        self.cluster.alloc_id()
    }
}
