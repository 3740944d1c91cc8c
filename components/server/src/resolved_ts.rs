//! The ceiling of stale reads: every `[resolved-ts] advance-ts-interval`
//! the store takes a timestamp from PD and records it with the
//! transactional storage. A stale read at or below it, and below every
//! lock of its region, cannot miss a commit; above it the read gets
//! DataIsNotReady and the client falls back to a leader read.

use std::time::Duration;

use tikal_storage::txn::TxnStorage;
use tracing::debug;

use crate::pd_client::PdClient;

pub async fn advance_loop(pd: PdClient, txn: TxnStorage, every: Duration) {
    loop {
        match pd.tso().await {
            Ok(ts) => txn.advance_ts_floor(ts),
            Err(e) => debug!(error = %e, "cannot advance the stale-read ts"),
        }
        tokio::time::sleep(every).await;
    }
}
