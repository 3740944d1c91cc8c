//! Background MVCC GC, following PD's GC safe point.
//!
//! Every poll interval the store reads the safe point from PD (which never
//! moves it past a live service safe point). When it has advanced, each
//! region this store leads is collected: expired locks below the safe
//! point are resolved through their primary, then versions below it are
//! removed except the newest visible one, in small Raft batches that
//! foreground commands interleave with.

use std::time::Duration;

use tikal_proto::kvrpcpb;
use tikal_raftstore::{RegionView, Router};
use tikal_storage::txn::TxnStorage;
use tracing::{debug, info, warn};

use crate::pd_client::PdClient;

pub async fn gc_loop(pd: PdClient, router: Router, txn: TxnStorage, every: Duration) {
    let mut done = 0;
    loop {
        tokio::time::sleep(every).await;
        let safe_point = match pd.gc_safe_point().await {
            Ok(sp) => sp,
            Err(e) => {
                debug!(error = %e, "cannot read the GC safe point");
                continue;
            }
        };
        crate::metrics::metrics()
            .gc_safe_point
            .set(safe_point as i64);
        if safe_point <= done {
            continue;
        }
        match gc_round(&pd, &router, &txn, safe_point).await {
            Ok((resolved, removed)) => {
                done = safe_point;
                info!(safe_point, resolved, removed, "GC round finished");
            }
            // Retried next interval, from the start: GC is idempotent.
            Err(e) => warn!(safe_point, error = %e, "GC round failed"),
        }
    }
}

fn context(v: &RegionView) -> kvrpcpb::Context {
    kvrpcpb::Context {
        region_id: v.region.id,
        region_epoch: v.region.region_epoch.clone(),
        peer: v.leader.clone(),
        ..Default::default()
    }
}

/// Collects every region this store leads; returns (locks resolved,
/// versions removed).
async fn gc_round(
    pd: &PdClient,
    router: &Router,
    txn: &TxnStorage,
    safe_point: u64,
) -> anyhow::Result<(usize, usize)> {
    let now = pd.tso().await?;
    let views: Vec<RegionView> = router
        .region_views()
        .into_iter()
        .filter(|v| v.is_leader)
        .collect();
    let primary_ctx = |key: &[u8]| {
        views
            .iter()
            .find(|v| tikal_storage::in_region(v, key))
            .map(context)
    };
    let m = crate::metrics::metrics();
    let (mut resolved, mut removed) = (0, 0);
    for v in &views {
        let ctx = context(v);
        let fail = |e| anyhow::anyhow!("region {}: {e:?}", v.region.id);
        let r = txn
            .resolve_expired_locks(&ctx, safe_point, now, primary_ctx)
            .await
            .map_err(fail)?;
        let n = txn.gc(&ctx, safe_point).await.map_err(fail)?;
        m.gc_keys
            .with_label_values(&["lock", "resolved"])
            .inc_by(r as u64);
        m.gc_keys
            .with_label_values(&["write", "deleted"])
            .inc_by(n as u64);
        resolved += r;
        removed += n;
    }
    Ok((resolved, removed))
}
