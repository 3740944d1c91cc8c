//! Starting a store: identity, cluster bootstrap, registration with PD.
//!
//! First start on an empty data dir:
//! 1. PD allocates a store id, which is written to the data dir;
//! 2. if PD has no cluster yet, this store creates the first region (the
//!    whole key space, one peer here) locally, marked prepared, then asks
//!    PD to bootstrap with it; if another store won that race, the local
//!    region is dropped. The mark goes once PD's answer is known; a store
//!    that finds it at start asks PD again (or, if the cluster is
//!    bootstrapped by then, keeps the region only if PD knows it);
//! 3. the store registers its address with PutStore.
//!
//! A restart reads the store id back. PD refuses PutStore when another
//! store id already holds this address (the data dir was wiped but PD
//! remembers): the server stops with PD's "duplicated store address" error.

use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context as _};
use tikal_engine::KvEngine;
use tikal_proto::metapb;
use tikal_raftstore::{load_store_ident, write_prepared_bootstrap, write_store_ident, StoreIdent};
use tracing::info;

use crate::config::TikvConfig;
use crate::pd_client::PdClient;

pub fn unix_secs() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// Returns this store's id, allocating and bootstrapping as needed.
/// `api_version` is `[storage] api-version`; see [`check_api_version`].
pub async fn bootstrap(
    pd: &PdClient,
    kv: &KvEngine,
    store: &metapb::Store,
    api_version: u8,
) -> anyhow::Result<u64> {
    let store_id = match load_store_ident(kv)? {
        Some(ident) => {
            if ident.cluster_id != pd.cluster_id() {
                bail!(
                    "data dir belongs to cluster {} but PD serves cluster {}; \
                     point --pd at the right PD or use a fresh --data-dir",
                    ident.cluster_id,
                    pd.cluster_id()
                );
            }
            check_api_version(kv, ident, api_version)?;
            ident.store_id
        }
        None => {
            let store_id = pd.alloc_id().await.context("allocating store id")?;
            write_store_ident(
                kv,
                StoreIdent {
                    cluster_id: pd.cluster_id(),
                    store_id,
                    api_version,
                },
            )?;
            info!(store_id, "allocated store id");
            store_id
        }
    };
    // A first region written here for a bootstrap whose answer from PD was
    // never recorded (a crash, or a failed request, in between).
    let prepared = tikal_raftstore::load_prepared_bootstrap(kv)?;
    if pd.is_bootstrapped().await? {
        if let Some(region) = prepared {
            // Bootstrapped meanwhile: with this region if PD knows it, as
            // TiKV compares PD's first region with its own. Otherwise
            // another store's bootstrap won, and this one, a whole key
            // space with one voter here, must never start.
            if pd.region_by_id(region.id).await?.is_some() {
                info!(
                    region_id = region.id,
                    "bootstrapped the cluster (before a restart)"
                );
                tikal_raftstore::clear_prepared_bootstrap(kv)?;
            } else {
                info!(
                    region_id = region.id,
                    "cluster was bootstrapped by another store; dropping the region prepared here"
                );
                tikal_raftstore::remove_region(kv, region.id)?;
            }
        }
    } else {
        // (A region without the mark: a bootstrap left half-done by an
        // older version.)
        let region = match prepared.or(tikal_raftstore::load_first_region(kv)?) {
            Some(region) => region,
            None => {
                let region = metapb::Region {
                    id: pd.alloc_id().await?,
                    region_epoch: Some(metapb::RegionEpoch {
                        conf_ver: 1,
                        version: 1,
                    }),
                    peers: vec![metapb::Peer {
                        id: pd.alloc_id().await?,
                        store_id,
                        ..Default::default()
                    }],
                    ..Default::default()
                };
                write_prepared_bootstrap(kv, &region)?;
                region
            }
        };
        let store = metapb::Store {
            id: store_id,
            ..store.clone()
        };
        if pd.bootstrap(store, region.clone()).await? {
            info!(region_id = region.id, "bootstrapped the cluster");
            tikal_raftstore::clear_prepared_bootstrap(kv)?;
        } else {
            info!("cluster was bootstrapped by another store");
            tikal_raftstore::remove_region(kv, region.id)?;
        }
    }
    Ok(store_id)
}

/// A data dir keeps the API version it was written with, as TiKV's: it
/// may change only while the store holds no data but TiDB's (`m` and `t`
/// keys, which mean the same under both versions; any other key would
/// mean something else). Then the new one is recorded.
pub fn check_api_version(kv: &KvEngine, ident: StoreIdent, api_version: u8) -> anyhow::Result<()> {
    if ident.api_version == api_version {
        return Ok(());
    }
    // Everything but TiDB's ranges, as stored keys.
    const NOT_TIDB: [(&[u8], &[u8]); 3] = [(b"", b"m"), (b"n", b"t"), (b"u", b"")];
    let mut found = None;
    for (cf, (start, end)) in tikal_engine::DATA_CFS
        .into_iter()
        .flat_map(|cf| NOT_TIDB.map(|r| (cf, r)))
    {
        kv.scan(cf, start, end, false, |k, _| {
            found = Some(k.to_vec());
            false
        })?;
        if let Some(key) = found {
            bail!(
                "unable to switch storage.api-version from V{} to V{} because found data key \
                 that is not written by TiDB: {}; the data dir is left as it is",
                ident.api_version,
                api_version,
                tikal_storage::hex(&key)
            );
        }
    }
    write_store_ident(
        kv,
        StoreIdent {
            api_version,
            ..ident
        },
    )?;
    info!(
        from = ident.api_version,
        to = api_version,
        "storage.api-version changed on a store without data but TiDB's"
    );
    Ok(())
}

pub fn store_meta(cfg: &TikvConfig, start_timestamp: i64) -> metapb::Store {
    metapb::Store {
        address: cfg.server.advertise_addr.clone(),
        peer_address: cfg.server.advertise_addr.clone(),
        status_address: cfg.server.advertise_status_addr.clone(),
        version: crate::TIKV_COMPAT_VERSION.to_string(),
        git_hash: option_env!("TIKAL_GIT_HASH").unwrap_or("").to_string(),
        start_timestamp,
        deploy_path: std::env::current_exe()
            .ok()
            .and_then(|p| p.parent().map(|d| d.display().to_string()))
            .unwrap_or_default(),
        state: metapb::StoreState::Up as i32,
        node_state: metapb::NodeState::Serving as i32,
        labels: (cfg.server.labels.iter())
            .map(|(key, value)| metapb::StoreLabel {
                key: key.clone(),
                value: value.clone(),
            })
            .collect(),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_api_version_changes_only_over_tidb_data() {
        let dir = tempfile::tempdir().unwrap();
        let kv = KvEngine::open(dir.path()).unwrap();
        let v1 = StoreIdent {
            cluster_id: 1,
            store_id: 2,
            api_version: 1,
        };
        write_store_ident(&kv, v1).unwrap();
        let put = |cf, key: &[u8]| {
            let mut wb = kv.write_batch();
            wb.put(cf, key, b"v");
            kv.write(wb, false).unwrap();
        };
        put(tikal_engine::CF_WRITE, b"t\x80table-row");
        put(tikal_engine::CF_DEFAULT, b"m-meta");
        check_api_version(&kv, v1, 2).unwrap();
        let v2 = load_store_ident(&kv).unwrap().unwrap();
        assert_eq!(v2.api_version, 2, "recorded");

        put(tikal_engine::CF_LOCK, b"user-key");
        let e = check_api_version(&kv, v2, 1).unwrap_err().to_string();
        assert!(
            e.contains("unable to switch storage.api-version from V2 to V1")
                && e.contains(
                    &"user-key"
                        .bytes()
                        .map(|b| format!("{b:02X}"))
                        .collect::<String>()
                ),
            "{e}"
        );
        assert_eq!(load_store_ident(&kv).unwrap().unwrap().api_version, 2);
    }
}
