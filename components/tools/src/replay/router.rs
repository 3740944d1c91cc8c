//! A minimal routing client for what the official client cannot do: raw
//! puts that carry gRPC headers, and splits at chosen keys. Regions and store addresses come from PD
//! and are cached; a region error drops the cached route and the put is
//! retried, which is safe because a request refused with a region error
//! was not applied.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use anyhow::{anyhow, bail, Context as _};
use std::sync::Mutex;
use tikal_proto::kvrpcpb::{self, ApiVersion};
use tikal_proto::metapb;
use tikal_proto::pdpb::{self, pd_client::PdClient};
use tikal_proto::tikvpb::tikv_client::TikvClient;
use tonic::transport::Channel;

const ROUTE_RETRIES: usize = 5;
/// Connections per store, used in turn (the Go client's
/// `grpc-connection-count` default). One HTTP/2 connection is read by one
/// task on each side, so one connection caps a busy replay at one core.
const CONNECTIONS_PER_STORE: usize = 4;

#[derive(Clone)]
struct Route {
    region: metapb::Region,
    leader: metapb::Peer,
}

pub struct Router {
    pd: PdClient<Channel>,
    header: Option<pdpb::RequestHeader>,
    api_version: ApiVersion,
    /// start key -> route
    routes: Mutex<BTreeMap<Vec<u8>, Route>>,
    stores: Mutex<HashMap<u64, Vec<TikvClient<Channel>>>>,
    next_connection: AtomicUsize,
}

fn url(addr: &str) -> String {
    if addr.starts_with("http://") || addr.starts_with("https://") {
        addr.to_string()
    } else {
        format!("http://{addr}")
    }
}

impl Router {
    pub async fn connect(
        pd_endpoints: &[String],
        api_version: ApiVersion,
    ) -> anyhow::Result<Router> {
        let mut last = anyhow!("no PD endpoints");
        for e in pd_endpoints {
            match PdClient::connect(url(e)).await {
                Ok(mut pd) => {
                    let members = pd
                        .get_members(pdpb::GetMembersRequest::default())
                        .await
                        .with_context(|| format!("GetMembers from PD {e}"))?
                        .into_inner();
                    let header = Some(pdpb::RequestHeader {
                        cluster_id: members.header.map(|h| h.cluster_id).unwrap_or_default(),
                        sender_id: 0,
                    });
                    return Ok(Router {
                        pd,
                        header,
                        api_version,
                        routes: Mutex::new(BTreeMap::new()),
                        stores: Mutex::new(HashMap::new()),
                        next_connection: AtomicUsize::new(0),
                    });
                }
                Err(err) => last = anyhow!("cannot connect to PD {e}: {err}"),
            }
        }
        Err(last)
    }

    /// Where `key` lies among region boundaries: API V2 boundaries are
    /// memcomparable-encoded keys, V1 raw ones the keys themselves.
    fn region_key(&self, key: &[u8]) -> Vec<u8> {
        match self.api_version {
            ApiVersion::V2 => tikal_codec::mvcc_key::encode_key(key),
            _ => key.to_vec(),
        }
    }

    async fn route(&self, key: &[u8]) -> anyhow::Result<Route> {
        let key = &self.region_key(key)[..];
        {
            let routes = self.routes.lock().unwrap_or_else(|e| e.into_inner());
            if let Some((_, r)) = routes.range(..=key.to_vec()).next_back() {
                let end = &r.region.end_key;
                if end.is_empty() || key < end.as_slice() {
                    return Ok(r.clone());
                }
            }
        }
        let resp = self
            .pd
            .clone()
            .get_region(pdpb::GetRegionRequest {
                header: self.header.clone(),
                region_key: key.to_vec(),
                need_buckets: false,
            })
            .await?
            .into_inner();
        let (Some(region), Some(leader)) = (resp.region, resp.leader) else {
            bail!("PD knows no region with a leader for this key yet");
        };
        let route = Route { region, leader };
        self.routes
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(route.region.start_key.clone(), route.clone());
        Ok(route)
    }

    async fn store(&self, store_id: u64) -> anyhow::Result<TikvClient<Channel>> {
        let turn = self.next_connection.fetch_add(1, Ordering::Relaxed);
        if let Some(c) = self
            .stores
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&store_id)
        {
            return Ok(c[turn % c.len()].clone());
        }
        let store = self
            .pd
            .clone()
            .get_store(pdpb::GetStoreRequest {
                header: self.header.clone(),
                store_id,
            })
            .await?
            .into_inner()
            .store
            .ok_or_else(|| anyhow!("PD has no store {store_id}"))?;
        let endpoint = Channel::from_shared(url(&store.address))?
            .tcp_nodelay(true)
            .connect_timeout(Duration::from_secs(3));
        let clients: Vec<_> = (0..CONNECTIONS_PER_STORE)
            .map(|_| TikvClient::new(endpoint.connect_lazy()))
            .collect();
        let client = clients[turn % clients.len()].clone();
        self.stores
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(store_id)
            .or_insert(clients);
        Ok(client)
    }

    fn forget(&self, route: &Route) {
        self.routes
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&route.region.start_key);
    }

    /// Splits the regions holding `keys` (increasing) at them, each region
    /// at the keys inside it, through `tikvpb.Tikv/SplitRegion` (raw keys).
    /// Returns how many regions the splits made.
    pub async fn split(&self, keys: &[Vec<u8>]) -> anyhow::Result<usize> {
        let (mut made, mut rest, mut failures) = (0, keys, 0);
        while let Some(first) = rest.first() {
            let route = self.route(first).await?;
            let end = &route.region.end_key;
            let here = rest
                .iter()
                .take_while(|k| end.is_empty() || self.region_key(k).as_slice() < end.as_slice())
                .count();
            let mut client = self.store(route.leader.store_id).await?;
            let resp = client
                .split_region(kvrpcpb::SplitRegionRequest {
                    context: Some(self.context(&route)),
                    split_keys: rest[..here].to_vec(),
                    is_raw_kv: true,
                    ..Default::default()
                })
                .await?
                .into_inner();
            if let Some(e) = resp.region_error {
                self.forget(&route);
                failures += 1;
                if failures == ROUTE_RETRIES {
                    bail!("region error: {}", e.message);
                }
                tokio::time::sleep(Duration::from_millis(20 << failures)).await;
                continue;
            }
            // The new regions are PD's to report; route afresh.
            self.forget(&route);
            made += resp.regions.len().saturating_sub(1);
            rest = &rest[here..];
        }
        Ok(made)
    }

    fn context(&self, route: &Route) -> kvrpcpb::Context {
        kvrpcpb::Context {
            region_id: route.region.id,
            region_epoch: route.region.region_epoch.clone(),
            peer: Some(route.leader.clone()),
            api_version: self.api_version as i32,
            ..Default::default()
        }
    }

    /// Puts `key = value` once, with `headers` as gRPC metadata. Returns an
    /// error for anything but success.
    pub async fn put(
        &self,
        key: Vec<u8>,
        value: Vec<u8>,
        headers: &[(&'static str, String)],
    ) -> anyhow::Result<()> {
        for attempt in 0..ROUTE_RETRIES {
            let route = self.route(&key).await?;
            let mut client = self.store(route.leader.store_id).await?;
            let mut req = tonic::Request::new(kvrpcpb::RawPutRequest {
                context: Some(self.context(&route)),
                key: key.clone(),
                value: value.clone(),
                ..Default::default()
            });
            for (name, v) in headers {
                req.metadata_mut().insert(*name, v.parse()?);
            }
            let resp = client.raw_put(req).await?.into_inner();
            if let Some(e) = resp.region_error {
                self.forget(&route);
                if attempt + 1 == ROUTE_RETRIES {
                    bail!("region error: {}", e.message);
                }
                tokio::time::sleep(Duration::from_millis(20 << attempt)).await;
                continue;
            }
            if !resp.error.is_empty() {
                bail!("{}", resp.error);
            }
            return Ok(());
        }
        bail!("no route")
    }
}
