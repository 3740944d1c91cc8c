//! The hot-write scheduler (`balance-hot-region-scheduler`), a simple form
//! of upstream's: it moves write load by moving leaders.
//!
//! Every region heartbeat reports the bytes and keys written to the region
//! over its interval; PD keeps the rates (per second) on the region, and a
//! store's write flow is the sum over the regions it leads. When a region
//! heartbeat comes from the hottest region of a store whose flow is over
//! twice the mean of the Up stores (and the region writes at least
//! [`HOT_BYTES_RATE`]), its leadership moves to the follower on the Up
//! store with the least flow — only if, after the move, that store would
//! still carry less than the source, so the move is never undone. Flows
//! count the leader transfers still running as done, so a store whose
//! hottest region is already leaving does not hand off a second one for
//! the flow that one takes away:
//!
//! ```text
//!   flows (KiB/s)  1: 900 (region 5: 800)  2: 50  3: 50   mean 333
//!   900 > 2 * 333, region 5 is 1's hottest: 50 + 800 < 900 - 800? no,
//!   so region 5 stays; had 1 led two such regions, one would move.
//! ```
//!
//! The balance schedulers leave hot regions alone.

use crate::checker::ClusterView;
use crate::operator::{kind, Plan, Step};
use crate::regions::RegionInfo;
use crate::schedule::View;

/// A region writing less than this (bytes per second) is not hot
/// (upstream's minimum write byte rate for a hot region).
pub const HOT_BYTES_RATE: f64 = 1024.0;

pub fn is_hot(r: &RegionInfo) -> bool {
    r.write_bytes_rate >= HOT_BYTES_RATE
}

pub(crate) fn check(r: &RegionInfo, v: &View) -> Option<Plan> {
    let o = &v.opts;
    if v.running(kind::HOT_REGION) >= o.hot_region_schedule_limit
        || v.running(kind::LEADER) >= o.leader_schedule_limit
        || !is_hot(r)
    {
        return None;
    }
    let from_store = r
        .leader_store()
        .filter(|s| v.is_up(*s) && !v.is_granted(*s))?;
    let source = v.load(from_store);
    if source.hottest_leader_region.map(|(id, _)| id) != Some(r.region.id) {
        return None;
    }
    let flow = |s: u64| v.write_rate_after(s);
    let up = v.up_stores();
    let total: f64 = up.iter().map(|s| flow(*s)).sum();
    let mean = total / up.len().max(1) as f64;
    let source_flow = flow(from_store);
    if source_flow <= 2.0 * mean {
        return None;
    }
    let to_store = r
        .voters()
        .map(|p| p.store_id)
        .filter(|s| *s != from_store && v.takes_leader(*s))
        .min_by(|a, b| flow(*a).total_cmp(&flow(*b)).then(a.cmp(b)))?;
    let rate = r.write_bytes_rate;
    if flow(to_store) + rate >= source_flow - rate {
        return None;
    }
    Some(Plan {
        desc: "transfer-hot-write-leader".into(),
        brief: format!("transfer leader: store {from_store} to {to_store}"),
        kind: kind::HOT_REGION | kind::LEADER,
        steps: vec![Step::TransferLeader {
            from_store,
            to_store,
        }],
    })
}
