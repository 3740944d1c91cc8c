//! What a store does when it gains or loses a region's leadership, beyond
//! Raft itself:
//!
//! * a new leader raises the transactional `max_ts` to a fresh PD timestamp
//!   before it takes async-commit or 1PC prewrites (reads served by the old
//!   leader raised only the old leader's `max_ts`; every such read's
//!   timestamp is below a timestamp PD hands out after the new term began),
//!   and so does a leader whose range grew by a merge (the source's leader
//!   served reads in it);
//! * a store that lost a leadership wakes its pessimistic lock waiters, so
//!   they retry (and meet NotLeader) instead of waiting for a release that
//!   now happens elsewhere.
//!
//! Both follow the published region views, checked every `every`.

use std::collections::HashSet;
use std::time::Duration;

use tikal_raftstore::Router;
use tikal_storage::txn::TxnStorage;
use tracing::debug;

use crate::pd_client::PdClient;

pub async fn watch_loop(pd: PdClient, router: Router, txn: TxnStorage, every: Duration) {
    let mut leading: HashSet<u64> = HashSet::new();
    loop {
        let views = router.region_views();
        let now: HashSet<u64> = views
            .iter()
            .filter(|v| v.is_leader)
            .map(|v| v.region.id)
            .collect();
        if leading.iter().any(|id| !now.contains(id)) {
            txn.lock_waits().wake_all();
        }
        leading = now;
        for v in views.iter().filter(|v| v.is_leader) {
            if txn.max_ts_synced(&v.region, v.term) {
                continue;
            }
            match pd.tso().await {
                Ok(ts) => txn.sync_max_ts(&v.region, v.term, ts),
                Err(e) => debug!(region_id = v.region.id, error = %e, "cannot sync max ts"),
            }
        }
        tokio::time::sleep(every).await;
    }
}
