//! Stores as PD sees them, and the state PD derives for each.
//!
//! A store's durable state (`metapb.Store.state`) moves one way only:
//!
//! ```text
//!   Up ──DELETE /store/{id}──► Offline ──no region peers left──► Tombstone
//! ```
//!
//! Up is refined by how long the store has been silent (no store heartbeat):
//!
//! | silent for                  | state shown  | PD places replicas there? | moves replicas away? |
//! |-----------------------------|--------------|---------------------------|----------------------|
//! | up to 20 s                  | Up           | yes                       | no                   |
//! | over 20 s                   | Disconnected | no                        | no                   |
//! | over `max-store-down-time`  | Down         | no                        | yes                  |
//! | (Offline, Tombstone)        | as named     | no                        | yes                  |
//!
//! Silence is counted from PD's own start at the earliest: a restarted PD
//! has not heard from anyone yet, and must not call every store Down (and
//! start moving replicas) before the stores had a chance to report.

use std::time::Duration;

use tikal_proto::{metapb, pdpb};

use crate::clock::elapsed;

/// Upstream's bounds of a young store, never low on space (see
/// [`StoreInfo::is_low_space`]).
const YOUNG_REGIONS: usize = 100;
const YOUNG_MIN_SPACE: u64 = 8 << 30;

/// A store silent this long is shown as Disconnected.
pub const STORE_DISCONNECT: Duration = Duration::from_secs(20);

#[derive(Debug, Clone)]
pub struct StoreInfo {
    pub meta: metapb::Store,
    pub stats: pdpb::StoreStats,
    /// Unix nanoseconds of the last heartbeat (0 = none since PD started).
    pub last_heartbeat: i64,
    /// `pd-ctl store weight`: the balance schedulers divide the store's
    /// leader and region scores by these (see [`weighted`]); 1 unless set.
    pub weights: Weights,
}

/// A store's leader and region weights.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Weights {
    pub leader: f64,
    pub region: f64,
}

impl Default for Weights {
    fn default() -> Self {
        Weights {
            leader: 1.0,
            region: 1.0,
        }
    }
}

impl Weights {
    /// Both weights as stored: each as its IEEE bits, big-endian.
    pub fn encode(self) -> Vec<u8> {
        [
            self.leader.to_bits().to_be_bytes(),
            self.region.to_bits().to_be_bytes(),
        ]
        .concat()
    }

    pub fn decode(v: &[u8]) -> Option<Weights> {
        let leader: [u8; 8] = v.get(..8)?.try_into().ok()?;
        let region: [u8; 8] = v.get(8..)?.try_into().ok()?;
        Some(Weights {
            leader: f64::from_bits(u64::from_be_bytes(leader)),
            region: f64::from_bits(u64::from_be_bytes(region)),
        })
    }

    /// Whether both are finite and not negative (0 is allowed, as
    /// upstream: such a store scores as if it were full).
    pub fn are_valid(self) -> bool {
        [self.leader, self.region]
            .iter()
            .all(|w| w.is_finite() && *w >= 0.0)
    }
}

/// Upstream's floor for a weight in a score: a store weighted 0 scores
/// a million times its count, so it sheds and never takes.
const MIN_WEIGHT: f64 = 1e-6;

/// A score as the balance schedulers compare it: `score / weight`.
pub fn weighted(score: f64, weight: f64) -> f64 {
    score / weight.max(MIN_WEIGHT)
}

/// The state PD shows for a store and schedules by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreState {
    Up,
    Disconnected,
    Down,
    Offline,
    Tombstone,
}

impl StoreState {
    /// Upstream's `state_name`.
    pub fn name(self) -> &'static str {
        match self {
            StoreState::Up => "Up",
            StoreState::Disconnected => "Disconnected",
            StoreState::Down => "Down",
            StoreState::Offline => "Offline",
            StoreState::Tombstone => "Tombstone",
        }
    }

    /// Whether PD may place a new replica on the store.
    pub fn takes_replicas(self) -> bool {
        self == StoreState::Up
    }

    /// Whether the store's replicas must be replaced elsewhere.
    pub fn loses_replicas(self) -> bool {
        matches!(
            self,
            StoreState::Down | StoreState::Offline | StoreState::Tombstone
        )
    }
}

/// How the silence of stores is judged.
#[derive(Debug, Clone, Copy)]
pub struct Liveness {
    pub now: i64,
    /// When this PD started (Unix nanoseconds).
    pub pd_started: i64,
    pub max_store_down_time: Duration,
}

impl StoreInfo {
    pub fn new(meta: metapb::Store, last_heartbeat: i64) -> StoreInfo {
        StoreInfo {
            meta,
            stats: Default::default(),
            last_heartbeat,
            weights: Weights::default(),
        }
    }

    pub fn is_tombstone(&self) -> bool {
        self.meta.state == metapb::StoreState::Tombstone as i32
    }

    pub fn is_offline(&self) -> bool {
        self.meta.state == metapb::StoreState::Offline as i32
    }

    pub fn state(&self, l: &Liveness) -> StoreState {
        if self.is_tombstone() {
            return StoreState::Tombstone;
        }
        if self.is_offline() {
            return StoreState::Offline;
        }
        let heard = self
            .last_heartbeat
            .max(self.meta.last_heartbeat)
            .max(l.pd_started);
        let silent = elapsed(heard, l.now);
        if silent > l.max_store_down_time {
            StoreState::Down
        } else if self.last_heartbeat == 0 || elapsed(self.last_heartbeat, l.now) > STORE_DISCONNECT
        {
            StoreState::Disconnected
        } else {
            StoreState::Up
        }
    }

    /// Whether the store is short of room for new replicas: less than
    /// (1 − `low_space_ratio`) of its capacity available, as PD judges it.
    /// A young store (under 100 regions, more than 8 GiB free) and one
    /// that reported no capacity never are.
    pub fn is_low_space(&self, low_space_ratio: f64, region_count: usize) -> bool {
        let (capacity, available) = (self.stats.capacity, self.stats.available);
        if capacity == 0 || (region_count < YOUNG_REGIONS && available > YOUNG_MIN_SPACE) {
            return false;
        }
        (available as f64) < capacity as f64 * (1.0 - low_space_ratio)
    }

    /// Time since the store's process started (zero if it never said).
    pub fn uptime(&self, now: i64) -> Duration {
        let start = i64::from(self.stats.start_time).saturating_mul(1_000_000_000);
        if self.stats.start_time == 0 || self.last_heartbeat == 0 {
            return Duration::ZERO;
        }
        elapsed(start, self.last_heartbeat.min(now))
    }
}

/// Sets a store's durable state and the matching `node_state`, as upstream
/// pairs them (Up/Serving, Offline/Removing, Tombstone/Removed).
pub fn set_state(store: &mut metapb::Store, state: metapb::StoreState) {
    store.state = state as i32;
    store.node_state = match state {
        metapb::StoreState::Up => metapb::NodeState::Serving,
        metapb::StoreState::Offline => metapb::NodeState::Removing,
        metapb::StoreState::Tombstone => metapb::NodeState::Removed,
    } as i32;
}

/// Whether every live store runs a version that takes conf changes as
/// `change_peer_v2` (5.0.0 and later), as upstream decides which of the two
/// heartbeat-response fields carries a membership change.
pub fn supports_conf_change_v2<'a>(stores: impl IntoIterator<Item = &'a StoreInfo>) -> bool {
    let mut any = false;
    for s in stores.into_iter().filter(|s| !s.is_tombstone()) {
        match major_version(&s.meta.version) {
            Some(major) if major >= 5 => any = true,
            _ => return false,
        }
    }
    any
}

fn major_version(v: &str) -> Option<u64> {
    v.trim_start_matches('v').split('.').next()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: i64 = 1_000_000_000;

    fn store(last_heartbeat: i64) -> StoreInfo {
        StoreInfo::new(metapb::Store::default(), last_heartbeat)
    }

    #[test]
    fn a_store_is_low_on_space_below_a_fifth_free_unless_young() {
        let mut s = store(0);
        assert!(!s.is_low_space(0.8, 500), "no capacity reported");
        s.stats.capacity = 128 << 30;
        s.stats.available = 16 << 30; // an eighth
        assert!(s.is_low_space(0.8, 100));
        assert!(!s.is_low_space(0.8, 99), "young: few regions, 16 GiB free");
        s.stats.available = 32 << 30; // a quarter
        assert!(!s.is_low_space(0.8, 101));
        s.stats.capacity = 1 << 30;
        s.stats.available = 100 << 20;
        assert!(s.is_low_space(0.8, 0), "few regions but under 8 GiB free");
    }

    #[test]
    fn silence_makes_a_store_disconnected_then_down() {
        let l = |now| Liveness {
            now,
            pd_started: 0,
            max_store_down_time: Duration::from_secs(60),
        };
        let s = store(100 * S);
        assert_eq!(s.state(&l(110 * S)), StoreState::Up);
        assert_eq!(s.state(&l(121 * S)), StoreState::Disconnected);
        assert_eq!(s.state(&l(161 * S)), StoreState::Down);
        let mut off = s.clone();
        set_state(&mut off.meta, metapb::StoreState::Offline);
        assert_eq!(off.state(&l(110 * S)), StoreState::Offline);
        assert_eq!(off.meta.node_state, metapb::NodeState::Removing as i32);
    }

    #[test]
    fn a_restarted_pd_counts_silence_from_its_own_start() {
        let mut s = store(0);
        s.meta.last_heartbeat = S;
        let l = Liveness {
            now: 1000 * S,
            pd_started: 990 * S,
            max_store_down_time: Duration::from_secs(60),
        };
        assert_eq!(s.state(&l), StoreState::Disconnected);
    }

    #[test]
    fn conf_change_v2_needs_every_live_store_at_5_0_or_later() {
        let with = |v: &str| {
            let mut s = store(0);
            s.meta.version = v.into();
            s
        };
        assert!(supports_conf_change_v2(&[with("8.5.0"), with("5.0.0")]));
        assert!(!supports_conf_change_v2(&[with("8.5.0"), with("4.0.16")]));
        assert!(!supports_conf_change_v2(&[with("")]));
        assert!(!supports_conf_change_v2(&[]));
    }
}
