//! Splitting a region: ids from PD, the split through Raft, the outcome
//! back to PD.
//!
//! Two things start a split: the store's split checker, when a region it
//! leads outgrew `[coprocessor]` region-max-size / region-max-keys
//! (`StoreEvent::AskSplit`, handled by the region heartbeat loop), and a
//! client's `SplitRegion` request. Both come here: PD's `AskBatchSplit`
//! gives a new region id and peer ids for every split key, the leader
//! proposes the split as a Raft admin command (`raftstore/src/admin.rs`),
//! and once it is applied `ReportBatchSplit` tells PD every region it
//! made. PD also learns them from the new leaders' heartbeats; the report
//! saves it waiting for them.

use tikal_proto::metapb;
use tikal_proto::raft_cmdpb::{BatchSplitRequest, SplitRequest};
use tikal_raftstore::{RaftstoreError, Router};

use crate::pd_client::PdClient;

/// Why a split was not made.
#[derive(Debug, thiserror::Error)]
pub enum SplitError {
    /// The region refused it (not leader, epoch changed, bad keys).
    #[error(transparent)]
    Region(#[from] RaftstoreError),
    #[error("PD: {0:#}")]
    Pd(anyhow::Error),
}

impl SplitError {
    /// The split lost a race that ends by itself (leadership or the region
    /// moved on, a merge is under way): the next check asks again. Anything
    /// else (PD, the engine, bad keys) is worth an operator's attention.
    pub fn is_race(&self) -> bool {
        matches!(self, SplitError::Region(e) if e.is_retryable())
    }
}

/// Splits `region` (as this store's leader knows it) at `keys`, which must
/// lie strictly inside it in increasing order. Returns every region the
/// split made, in key order.
pub async fn split_region(
    pd: &PdClient,
    router: &Router,
    region: &metapb::Region,
    keys: Vec<Vec<u8>>,
) -> Result<Vec<metapb::Region>, SplitError> {
    let count = u32::try_from(keys.len())
        .map_err(|_| RaftstoreError::Split("too many split keys".into()))?;
    let ids = pd
        .ask_batch_split(region, count)
        .await
        .map_err(SplitError::Pd)?;
    if ids.len() != keys.len() {
        return Err(SplitError::Pd(anyhow::anyhow!(
            "PD gave {} ids for {} split keys",
            ids.len(),
            keys.len()
        )));
    }
    let req = BatchSplitRequest {
        requests: keys
            .into_iter()
            .zip(ids)
            .map(|(split_key, id)| SplitRequest {
                split_key,
                new_region_id: id.new_region_id,
                new_peer_ids: id.new_peer_ids,
                ..Default::default()
            })
            .collect(),
        right_derive: true,
        share_source_region_size: false,
    };
    let regions = router
        .batch_split(region.id, region.region_epoch.clone(), req)
        .await?;
    if let Err(e) = pd.report_batch_split(regions.clone()).await {
        // The new leaders' heartbeats tell PD the same.
        tracing::warn!(region_id = region.id, error = %e, "cannot report a split to PD");
    }
    Ok(regions)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_lost_races_are_quiet() {
        let race = SplitError::Region(RaftstoreError::NotLeader {
            region_id: 1,
            leader: None,
        });
        assert!(race.is_race());
        assert!(SplitError::Region(RaftstoreError::EpochNotMatch(Box::default())).is_race());
        assert!(!SplitError::Pd(anyhow::anyhow!("unreachable")).is_race());
        assert!(!SplitError::Region(RaftstoreError::Split("bad key".into())).is_race());
    }
}
