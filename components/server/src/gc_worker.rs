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
/// versions removed). A region that fails (its leader moved, its disk is
/// full) is left for the next safe point, as TiKV's GC manager goes on
/// past it: one region's trouble holds back no other region's GC.
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
    let primary_ctx = primary_finder(&views);
    let m = crate::metrics::metrics();
    let (mut resolved, mut removed) = (0, 0);
    for v in &views {
        let ctx = context(v);
        let region = async {
            let r = (txn.resolve_expired_locks(&ctx, safe_point, now, &primary_ctx)).await?;
            let n = txn.gc(&ctx, safe_point).await?;
            Ok::<_, tikal_storage::txn::TxnError>((r, n))
        };
        let (r, n) = match region.await {
            Ok(done) => done,
            Err(e) => {
                warn!(region_id = v.region.id, safe_point, error = ?e, "GC of a region failed");
                continue;
            }
        };
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

/// The context of the region among `views` (this store's leaders) that
/// holds a lock's primary, a user key: compared with each region's bounds
/// decoded, as a transactional request's keys are.
fn primary_finder(views: &[RegionView]) -> impl Fn(&[u8]) -> Option<kvrpcpb::Context> {
    let decoded: Vec<(RegionView, kvrpcpb::Context)> = (views.iter())
        .map(|v| {
            let mut user = v.clone();
            tikal_storage::decode_bounds(&mut user.region);
            (user, context(v))
        })
        .collect();
    move |key| {
        (decoded.iter())
            .find(|(user, _)| tikal_storage::in_region(user, key))
            .map(|(_, ctx)| ctx.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tikal_proto::metapb;

    fn view(id: u64, start: &[u8], end: &[u8]) -> RegionView {
        let encoded = |k: &[u8]| match k.is_empty() {
            true => vec![],
            false => tikal_storage::mvcc::codec::encode_key(k),
        };
        RegionView::led_here(metapb::Region {
            id,
            start_key: encoded(start),
            end_key: encoded(end),
            ..Default::default()
        })
    }

    #[test]
    fn a_primary_is_found_in_the_region_whose_decoded_bounds_hold_it() {
        // Region bounds are memcomparable-encoded user keys; a lock's
        // primary is a user key. Compared raw, `m` sorts below the
        // encoded `m` and would be taken for the left region's.
        let views = [view(1, b"", b"m"), view(2, b"m", b"")];
        let find = primary_finder(&views);
        assert_eq!(find(b"m").map(|c| c.region_id), Some(2));
        assert_eq!(find(b"l").map(|c| c.region_id), Some(1));
        assert_eq!(find(b"z").map(|c| c.region_id), Some(2));
    }
}
