//! The store's client of PD: cluster id, ids, bootstrap, store registration,
//! heartbeats, timestamps and the GC safe point.
//!
//! The channel reconnects by itself, so a PD restart costs the store only
//! the requests made while PD was down; the heartbeat loops retry them.

use std::time::Duration;

use anyhow::{anyhow, bail, Context as _};
use tikal_proto::metapb;
use tikal_proto::pdpb::{self, pd_client::PdClient as PdGrpc};
use tonic::transport::{Channel, Endpoint};

#[derive(Clone)]
pub struct PdClient {
    cluster_id: u64,
    grpc: PdGrpc<Channel>,
}

/// Normalizes "host:port" or "http://host:port" to a URL.
pub fn pd_url(endpoint: &str) -> String {
    let e = endpoint.trim().trim_end_matches('/');
    if e.starts_with("http://") || e.starts_with("https://") {
        e.to_string()
    } else {
        format!("http://{e}")
    }
}

/// A gRPC endpoint to another server of the cluster (PD, a store, the
/// deadlock detector): connecting gives up after 3 s, and HTTP/2 pings
/// every 10 s (idle or not) drop a connection unanswered for 3 s, as
/// TiKV's clients keep alive. Without them, a peer whose host lost power
/// or was cut off kept the connection, and everything sent on it, until
/// TCP gave up (about 15 minutes), or for good on an idle one.
pub fn endpoint(url: String) -> anyhow::Result<Endpoint> {
    Ok(Endpoint::from_shared(url)?
        .connect_timeout(Duration::from_secs(3))
        .tcp_nodelay(true)
        .http2_keep_alive_interval(Duration::from_secs(10))
        .keep_alive_timeout(Duration::from_secs(3))
        .keep_alive_while_idle(true))
}

/// A channel to `url` over [`endpoint`], connected now.
pub async fn connect(url: String) -> anyhow::Result<Channel> {
    Ok(endpoint(url)?.connect().await?)
}

/// How a store waits for PD at start (`[pd] retry-interval`,
/// `retry-max-count`, `retry-log-every`; upstream's defaults: every
/// 300 ms, for good, a log line every 10th round).
#[derive(Debug, Clone)]
pub struct PdRetry {
    pub interval: Duration,
    /// Rounds over the endpoints after the first; `None` retries for good.
    pub max_count: Option<u64>,
    pub log_every: u64,
}

impl Default for PdRetry {
    fn default() -> Self {
        PdRetry {
            interval: Duration::from_millis(300),
            max_count: None,
            log_every: 10,
        }
    }
}

impl PdClient {
    /// Connects to the first endpoint that answers GetMembers, trying the
    /// endpoints again every `retry.interval` (PD may still be starting),
    /// for good unless `retry.max_count` bounds the rounds, as TiKV's
    /// `[pd] retry-*` keys do.
    pub async fn connect(endpoints: &[String], retry: &PdRetry) -> anyhow::Result<PdClient> {
        let mut last_err = anyhow!("no PD endpoints given");
        let mut round: u64 = 0;
        loop {
            for e in endpoints {
                match Self::try_connect(&pd_url(e)).await {
                    Ok(c) => return Ok(c),
                    Err(err) => last_err = err.context(format!("PD {e}")),
                }
            }
            round = round.saturating_add(1);
            if retry.max_count.is_some_and(|max| round > max) {
                return Err(last_err.context(format!("cannot reach PD after {round} rounds")));
            }
            if retry.log_every > 0 && (round - 1).is_multiple_of(retry.log_every) {
                tracing::warn!(round, error = %format!("{last_err:#}"), "PD not reachable yet, retrying");
            }
            tokio::time::sleep(retry.interval).await;
        }
    }

    async fn try_connect(url: &str) -> anyhow::Result<PdClient> {
        let first = endpoint(url.to_string())?.timeout(Duration::from_secs(10));
        let mut grpc = PdGrpc::new(first.connect().await?);
        let members = grpc
            .get_members(pdpb::GetMembersRequest::default())
            .await?
            .into_inner();
        let cluster_id = members.header.map(|h| h.cluster_id).unwrap_or_default();
        if cluster_id == 0 {
            bail!("PD returned no cluster id");
        }
        // Talk to the leader from now on; the lazy channel reconnects to it.
        let leader_url = members
            .leader
            .and_then(|m| m.client_urls.into_iter().next())
            .unwrap_or_else(|| url.to_string());
        Self::lazy(cluster_id, leader_url)
    }

    /// A client of the PD at `url` whose channel connects on first use
    /// (and again after each failure).
    pub(crate) fn lazy(cluster_id: u64, url: String) -> anyhow::Result<PdClient> {
        let channel = endpoint(url)?
            .timeout(Duration::from_secs(10))
            .connect_lazy();
        Ok(PdClient {
            cluster_id,
            grpc: PdGrpc::new(channel),
        })
    }

    pub fn cluster_id(&self) -> u64 {
        self.cluster_id
    }

    pub fn header(&self) -> Option<pdpb::RequestHeader> {
        Some(pdpb::RequestHeader {
            cluster_id: self.cluster_id,
            sender_id: 0,
        })
    }

    pub fn grpc(&self) -> PdGrpc<Channel> {
        self.grpc.clone()
    }

    pub async fn alloc_id(&self) -> anyhow::Result<u64> {
        let resp = self
            .grpc()
            .alloc_id(pdpb::AllocIdRequest {
                header: self.header(),
            })
            .await?
            .into_inner();
        check(resp.header.as_ref())?;
        Ok(resp.id)
    }

    pub async fn is_bootstrapped(&self) -> anyhow::Result<bool> {
        let resp = self
            .grpc()
            .is_bootstrapped(pdpb::IsBootstrappedRequest {
                header: self.header(),
            })
            .await?
            .into_inner();
        check(resp.header.as_ref())?;
        Ok(resp.bootstrapped)
    }

    /// Returns false if another store bootstrapped the cluster first.
    pub async fn bootstrap(
        &self,
        store: metapb::Store,
        region: metapb::Region,
    ) -> anyhow::Result<bool> {
        let resp = self
            .grpc()
            .bootstrap(pdpb::BootstrapRequest {
                header: self.header(),
                store: Some(store),
                region: Some(region),
            })
            .await?
            .into_inner();
        match resp.header.as_ref().and_then(|h| h.error.as_ref()) {
            Some(e) if e.r#type == pdpb::ErrorType::AlreadyBootstrapped as i32 => Ok(false),
            _ => check(resp.header.as_ref()).map(|_| true),
        }
    }

    pub async fn put_store(&self, store: metapb::Store) -> anyhow::Result<()> {
        let resp = self
            .grpc()
            .put_store(pdpb::PutStoreRequest {
                header: self.header(),
                store: Some(store),
            })
            .await
            .context("PutStore")?
            .into_inner();
        check(resp.header.as_ref())
    }

    /// A store's metadata (its address), as PD knows it.
    pub async fn get_store(&self, store_id: u64) -> anyhow::Result<metapb::Store> {
        let resp = self
            .grpc()
            .get_store(pdpb::GetStoreRequest {
                header: self.header(),
                store_id,
            })
            .await?
            .into_inner();
        check(resp.header.as_ref())?;
        resp.store
            .ok_or_else(|| anyhow::anyhow!("PD knows no store {store_id}"))
    }

    /// The region with this id, as PD knows it (`None`: PD knows no such
    /// region).
    pub async fn region_by_id(&self, region_id: u64) -> anyhow::Result<Option<metapb::Region>> {
        let resp = self
            .grpc()
            .get_region_by_id(pdpb::GetRegionByIdRequest {
                header: self.header(),
                region_id,
                need_buckets: false,
            })
            .await?
            .into_inner();
        check(resp.header.as_ref())?;
        Ok(resp.region.filter(|r| r.id != 0))
    }

    /// The leader of the region holding `key`, as PD knows it.
    pub async fn region_leader(&self, key: &[u8]) -> anyhow::Result<Option<metapb::Peer>> {
        let resp = self
            .grpc()
            .get_region(pdpb::GetRegionRequest {
                header: self.header(),
                region_key: key.to_vec(),
                need_buckets: false,
            })
            .await?
            .into_inner();
        check(resp.header.as_ref())?;
        Ok(resp.leader.filter(|l| l.id != 0))
    }

    /// Reports the store's stats. A store PD has made Tombstone gets
    /// [`StoreTombstone`] as the error.
    pub async fn store_heartbeat(&self, stats: pdpb::StoreStats) -> anyhow::Result<()> {
        let resp = self
            .grpc()
            .store_heartbeat(pdpb::StoreHeartbeatRequest {
                header: self.header(),
                stats: Some(stats),
            })
            .await?
            .into_inner();
        if let Some(e) = resp.header.as_ref().and_then(|h| h.error.as_ref()) {
            if e.r#type == pdpb::ErrorType::StoreTombstone as i32 {
                return Err(StoreTombstone(e.message.clone()).into());
            }
        }
        check(resp.header.as_ref())
    }
}

/// Where a read above the store's `max_ts` ceiling is checked again.
impl tikal_storage::txn::TsoSource for PdClient {
    fn tso(&self) -> std::pin::Pin<Box<dyn std::future::Future<Output = Option<u64>> + Send + '_>> {
        Box::pin(async move { PdClient::tso(self).await.ok() })
    }
}

impl PdClient {
    /// One timestamp from PD's TSO (a one-request stream), or an error
    /// after 10 s: the stream's reply has no deadline of its own.
    pub async fn tso(&self) -> anyhow::Result<u64> {
        tokio::time::timeout(Duration::from_secs(10), self.tso_once())
            .await
            .map_err(|_| anyhow!("no TSO reply from PD within 10 s"))?
    }

    async fn tso_once(&self) -> anyhow::Result<u64> {
        let req = pdpb::TsoRequest {
            header: self.header(),
            count: 1,
            dc_location: String::new(),
        };
        let mut replies = self
            .grpc()
            .tso(tokio_stream::once(req))
            .await
            .context("Tso")?
            .into_inner();
        let resp = replies
            .message()
            .await?
            .ok_or_else(|| anyhow!("PD closed the TSO stream"))?;
        check(resp.header.as_ref())?;
        let ts = resp
            .timestamp
            .ok_or_else(|| anyhow!("TSO reply without a timestamp"))?;
        Ok(((ts.physical as u64) << 18) | ts.logical as u64)
    }

    /// New ids for splitting `region` `count` times: per new region, its id
    /// and one peer id per peer of `region`.
    pub async fn ask_batch_split(
        &self,
        region: &metapb::Region,
        count: u32,
    ) -> anyhow::Result<Vec<pdpb::SplitId>> {
        let resp = self
            .grpc()
            .ask_batch_split(pdpb::AskBatchSplitRequest {
                header: self.header(),
                region: Some(region.clone()),
                split_count: count,
            })
            .await
            .context("AskBatchSplit")?
            .into_inner();
        check(resp.header.as_ref())?;
        Ok(resp.ids)
    }

    /// Tells PD the regions a split made, in key order.
    pub async fn report_batch_split(&self, regions: Vec<metapb::Region>) -> anyhow::Result<()> {
        let resp = self
            .grpc()
            .report_batch_split(pdpb::ReportBatchSplitRequest {
                header: self.header(),
                regions,
            })
            .await
            .context("ReportBatchSplit")?
            .into_inner();
        check(resp.header.as_ref())
    }

    pub async fn gc_safe_point(&self) -> anyhow::Result<u64> {
        let resp = self
            .grpc()
            .get_gc_safe_point(pdpb::GetGcSafePointRequest {
                header: self.header(),
            })
            .await
            .context("GetGCSafePoint")?
            .into_inner();
        check(resp.header.as_ref())?;
        Ok(resp.safe_point)
    }
}

/// PD's answer to a store it removed from the cluster (`pd-ctl store
/// delete`, then Tombstone): the store must stop, as TiKV does.
#[derive(Debug, thiserror::Error)]
#[error("PD says this store is Tombstone (removed from the cluster): {0}")]
pub struct StoreTombstone(pub String);

/// Turns an error in a PD response header into an error.
pub fn check(header: Option<&pdpb::ResponseHeader>) -> anyhow::Result<()> {
    match header.and_then(|h| h.error.as_ref()) {
        Some(e) if e.r#type != pdpb::ErrorType::Ok as i32 => Err(anyhow!("{}", e.message)),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An address where nothing listens: connections are refused.
    fn dead_endpoint() -> String {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        drop(l);
        addr.to_string()
    }

    #[tokio::test(start_paused = true)]
    async fn a_store_waits_for_pd_for_good_by_default() {
        // Ten minutes of (paused, so instant) clock: TiKV waits for PD for
        // good; a store that gave up after a minute could not be started
        // before its PD.
        let retry = PdRetry {
            interval: Duration::from_secs(1),
            ..PdRetry::default()
        };
        let endpoints = [dead_endpoint()];
        let waiting = PdClient::connect(&endpoints, &retry);
        let still = tokio::time::timeout(Duration::from_secs(600), waiting).await;
        assert!(still.is_err(), "gave up on PD: {:?}", still.err());
    }

    #[tokio::test]
    async fn a_bounded_retry_gives_up_with_the_last_error() {
        let retry = PdRetry {
            interval: Duration::from_millis(1),
            max_count: Some(2),
            log_every: 1,
        };
        let Err(err) = PdClient::connect(&[dead_endpoint()], &retry).await else {
            panic!("connected to nothing");
        };
        let msg = format!("{err:#}");
        assert!(msg.contains("cannot reach PD after 3 rounds"), "{msg}");
        assert!(msg.contains("PD 127.0.0.1:"), "{msg}");
    }
}
