//! Both servers keep serving: after each batch (and after any request that
//! hung or got an unacceptable status) the store must write and read, the
//! official client must commit a transaction, PD must answer members and
//! TSO and route every key to the store's region. A server left broken is
//! reported and restarted, so the survey goes on.

use std::future::Future;
use std::time::Duration;

use tikal_proto::pdpb;
use tikv_client::TransactionClient;
use tokio::time::timeout;
use tonic::Status;

use crate::common::READY_TIMEOUT;
use crate::judge::Answer;
use crate::prober::Prober;
use crate::requests::req;
use crate::wire::{heartbeat_stream, tso_stream};
use crate::{CALL_TIMEOUT, CHECK_TIMEOUT};

impl Prober {
    /// After a batch: both processes serve raw KV, transactions through the
    /// official client, PD members, TSO and routing; nothing panicked.
    pub async fn check_servers(&mut self) {
        let after = format!("after the batch \"{}\"", self.batch);
        if let Some(text) = self.new_panics() {
            let problem = "a server panicked outside any request".to_string();
            self.report("(background)", &after, problem, Some(text));
        }
        self.recover_if_broken(&after).await;
        if let Err(e) = self.txn_round_trip().await {
            let panics = self.new_panics();
            let problem = format!("a transaction through tikv-client failed: {e}");
            self.report("(servers)", &after, problem, panics);
            self.restart().await;
            if let Err(e) = self.txn_round_trip().await {
                self.fatal(&format!("transactions fail even after a restart: {e}"));
            }
        }
        self.routing_unchanged("(servers)", &after).await;
    }

    /// If a server is down or no longer serves raw writes or PD requests,
    /// reports it and restarts both; the survey goes on.
    pub async fn recover_if_broken(&mut self, after: &str) {
        let mut broken = vec![];
        if let Ok(status) = self.t.cluster.wait_store_exit(0, Duration::ZERO).await {
            broken.push(format!("the store process exited ({status})"));
        } else if let Err(e) = self.raw_round_trip().await {
            broken.push(format!("raw writes: {e}"));
        }
        if let Err(e) = self.pd_round_trip().await {
            broken.push(format!("PD: {e}"));
        }
        if !broken.is_empty() {
            let panics = self.new_panics();
            let problem = format!("left a server broken: {}", broken.join("; "));
            self.report("(servers)", after, problem, panics);
            self.restart().await;
        }
    }

    /// Requires PD to route every key to the store's region and leader; if
    /// it does not, reports it and restores the route with the heartbeat the
    /// store itself would send.
    pub async fn routing_unchanged(&mut self, method: &str, what: &str) {
        if self.routing_stuck {
            return;
        }
        let Err(e) = self.pd_routes().await else {
            return;
        };
        let panics = self.new_panics();
        self.report(method, what, format!("changed PD's routing — {e}"), panics);
        let genuine = heartbeat_stream(self.pd.clone(), vec![self.genuine_heartbeat()]);
        let _ = timeout(CALL_TIMEOUT, genuine).await;
        if let Err(e) = self.pd_routes().await {
            let problem = format!("PD's routing stayed wrong after a genuine heartbeat — {e}");
            self.report(method, what, problem, None);
            self.routing_stuck = true;
        }
    }

    async fn pd_routes(&mut self) -> Result<(), String> {
        for key in [&b""[..], b"live", &[0xff; 9]] {
            let get = pdpb::GetRegionRequest {
                header: self.header.clone(),
                region_key: key.to_vec(),
                need_buckets: false,
            };
            let r = answer("GetRegion", self.pd.clone().get_region(get)).await?;
            // PD may legitimately change the region's membership (its
            // replica checker adds learners on stores that hostile
            // requests registered), so conf_ver and peers may move; the
            // key range, version and leader must not.
            let region_ok = r.region.as_ref().is_some_and(|got| {
                let (want, got_epoch) =
                    (&self.region, got.region_epoch.clone().unwrap_or_default());
                let want_epoch = want.region_epoch.clone().unwrap_or_default();
                got.id == want.id
                    && got.start_key == want.start_key
                    && got.end_key == want.end_key
                    && got_epoch.version == want_epoch.version
            });
            let leader_ok = r.leader.as_ref().map(|l| l.store_id) == Some(self.leader.store_id);
            if !region_ok || !leader_ok {
                let region = r
                    .region
                    .map(|r| (r.id, r.start_key, r.end_key, r.region_epoch));
                let leader = r.leader;
                return Err(format!(
                    "GetRegion({key:?}) answers {region:?}, leader {leader:?}"
                ));
            }
        }
        Ok(())
    }

    /// A raw write and read of a fresh key.
    async fn raw_round_trip(&mut self) -> Result<(), String> {
        let key = self.key("live/raw");
        let put = req::raw_put(&self.ctx(), &key, &key);
        let r = answer("RawPut", self.tikv.clone().raw_put(put)).await?;
        if let Some(e) = r.error() {
            return Err(format!("RawPut: {e}"));
        }
        let get = req::raw_get(&self.ctx(), &key);
        let r = answer("RawGet", self.tikv.clone().raw_get(get)).await?;
        if r.value != key || r.error().is_some() {
            return Err(format!("RawGet of a key just written: {r:?}"));
        }
        Ok(())
    }

    /// A transaction through the official client that commits and reads back.
    async fn txn_round_trip(&mut self) -> Result<(), String> {
        let key = self.key("live/txn");
        let c = &self.txn;
        let work = async {
            let begin = || async {
                c.begin_optimistic()
                    .await
                    .map_err(|e| format!("begin: {e}"))
            };
            let mut w = begin().await?;
            let put = w.put(key.clone(), key.clone()).await;
            put.map_err(|e| format!("put: {e}"))?;
            w.commit().await.map_err(|e| format!("commit: {e}"))?;
            let mut r = begin().await?;
            let v = r.get(key.clone()).await.map_err(|e| format!("get: {e}"))?;
            r.rollback().await.map_err(|e| format!("rollback: {e}"))?;
            if v.as_ref() != Some(&key) {
                return Err(format!("read back {v:?}"));
            }
            Ok::<(), String>(())
        };
        let within = timeout(CHECK_TIMEOUT, work).await;
        within.map_err(|_| format!("no outcome within {CHECK_TIMEOUT:?}"))?
    }

    /// PD answers GetMembers with a leader and hands out a growing timestamp.
    async fn pd_round_trip(&mut self) -> Result<(), String> {
        let req = pdpb::GetMembersRequest {
            header: self.header.clone(),
        };
        let m = answer("GetMembers", self.pd.clone().get_members(req)).await?;
        if m.leader.is_none() {
            return Err("GetMembers names no leader".into());
        }
        let before = self.last_ts;
        let ts = self.fresh_ts().await?;
        if ts <= before {
            return Err(format!("Tso went back: {ts} after {before}"));
        }
        self.last_ts = ts;
        Ok(())
    }

    /// A timestamp from PD's Tso stream, or why there is none.
    pub async fn fresh_ts(&self) -> Result<u64, String> {
        let req = pdpb::TsoRequest {
            header: self.header.clone(),
            count: 1,
            ..Default::default()
        };
        let r = answer("Tso", tso_stream(self.pd.clone(), vec![req])).await?;
        let t = r
            .first()
            .and_then(|r| r.timestamp.as_ref())
            .ok_or("Tso: no timestamp")?;
        Ok((t.physical as u64) << 18 | t.logical as u64)
    }

    /// Kills and restarts PD and the store, and waits until they serve.
    async fn restart(&mut self) {
        self.restarts += 1;
        self.t.cluster.kill_store(0);
        self.t.cluster.kill_pd();
        self.t.cluster.start_pd().expect("PD restarts");
        if let Err(e) = self.t.cluster.wait_pd(READY_TIMEOUT).await {
            self.fatal(&format!("PD does not come back: {e:#}"));
        }
        self.t.cluster.start_store(0).expect("the store restarts");
        if let Err(e) = self.t.cluster.wait_ready(READY_TIMEOUT).await {
            self.fatal(&format!("the cluster is not ready after a restart: {e:#}"));
        }
        match TransactionClient::new(vec![self.t.pd()]).await {
            Ok(txn) => self.txn = txn,
            Err(e) => self.fatal(&format!("TransactionClient cannot reconnect: {e}")),
        }
        if let Err(e) = self.raw_round_trip().await {
            self.fatal(&format!("the store does not serve after a restart: {e}"));
        }
    }
}

/// The answer to a liveness call within [`CALL_TIMEOUT`], or why there is
/// none, prefixed with `method`.
async fn answer<T>(
    method: &str,
    call: impl Future<Output = Result<tonic::Response<T>, Status>>,
) -> Result<T, String> {
    match timeout(CALL_TIMEOUT, call).await {
        Err(_) => Err(format!("{method}: no answer")),
        Ok(Err(s)) => Err(format!("{method}: {s:?}")),
        Ok(Ok(r)) => Ok(r.into_inner()),
    }
}
