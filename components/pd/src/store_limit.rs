//! Store limits (`pd-ctl store limit`): how fast each store takes in new
//! replicas and lets old ones go, so that the repair of a lost store or a
//! rebalance cannot send one store more snapshots than it can take.
//!
//! Each store has two token buckets, `add-peer` and `remove-peer`, filled
//! at a rate given in operations per minute (15 each by default, as
//! upstream). A step that adds a learner on a store, or removes a peer
//! from it, costs tokens from that store's bucket by the region's size:
//! 1000 over 20 MiB, 200 over 1 MiB, nothing below (an empty region's
//! snapshot costs the store nothing worth limiting). With rate `r` per
//! second, a bucket holds `max(1, r) × 1000` tokens and gains `r × 1000` a
//! second: at 15 a minute a large region's step may start every 4 s.
//!
//! Removing a peer from a Down store costs at most the small-region cost:
//! nothing is read from it, and a lost store's repair must not crawl.
//!
//! A checker's or scheduler's operator is made only if every bucket it
//! needs holds its whole cost (the steps' costs summed per store and
//! type); its tokens are then taken at once. Otherwise it is not made,
//! and the region's next heartbeat plans again. Operators asked for by
//! hand (`pd-ctl operator add`) are not held back, as upstream's urgent
//! ones are not, but they spend what the buckets hold (down to zero), so
//! the checkers wait behind them. Scatters take no tokens at all (upstream's scatter adds
//! "light-weight" learners).
//!
//! Rates are kept in the meta store: a default for every store, and the
//! rates set for single stores. Setting a rate for all stores sets the
//! default and every single store's rate of that type.

use std::collections::{BTreeMap, HashMap};

use serde::{Deserialize, Serialize};

use crate::clock::elapsed;
use crate::operator::{Plan, Step};

/// Upstream's default rate, operations per minute.
pub const DEFAULT_RATE: f64 = 15.0;
/// Rates at or above this are treated as unlimited (they are accepted,
/// and the token arithmetic stays finite).
const UNLIMITED: f64 = 1e9;
/// Tokens a step on a region over [`SMALL_REGION_MIB`] costs; also a
/// bucket's capacity at rates up to one a second.
const REGION_COST: f64 = 1000.0;
/// Tokens a step on a region over [`EMPTY_REGION_MIB`] (and up to
/// [`SMALL_REGION_MIB`]) costs.
const SMALL_REGION_COST: f64 = 200.0;
const SMALL_REGION_MIB: u64 = 20;
const EMPTY_REGION_MIB: u64 = 1;

/// What a bucket limits, by upstream's names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum LimitType {
    AddPeer,
    RemovePeer,
}

impl LimitType {
    pub const ALL: [LimitType; 2] = [LimitType::AddPeer, LimitType::RemovePeer];

    pub fn name(self) -> &'static str {
        match self {
            LimitType::AddPeer => "add-peer",
            LimitType::RemovePeer => "remove-peer",
        }
    }

    pub fn from_name(name: &str) -> Option<LimitType> {
        LimitType::ALL.into_iter().find(|t| t.name() == name)
    }
}

/// One store's rates, operations per minute, as upstream shows them.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Rates {
    #[serde(rename = "add-peer")]
    pub add_peer: f64,
    #[serde(rename = "remove-peer")]
    pub remove_peer: f64,
}

impl Default for Rates {
    fn default() -> Self {
        Rates {
            add_peer: DEFAULT_RATE,
            remove_peer: DEFAULT_RATE,
        }
    }
}

impl Rates {
    fn get(&self, t: LimitType) -> f64 {
        match t {
            LimitType::AddPeer => self.add_peer,
            LimitType::RemovePeer => self.remove_peer,
        }
    }

    fn set(&mut self, t: LimitType, rate: f64) {
        match t {
            LimitType::AddPeer => self.add_peer = rate,
            LimitType::RemovePeer => self.remove_peer = rate,
        }
    }

    fn are_valid(&self) -> bool {
        LimitType::ALL.iter().all(|t| is_valid_rate(self.get(*t)))
    }
}

/// Whether `rate` (per minute) may be set: a number above zero.
pub fn is_valid_rate(rate: f64) -> bool {
    rate.is_finite() && rate > 0.0
}

/// The rates as kept in the meta store.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Settings {
    pub default: Rates,
    /// Rates set for single stores (or for all, once they were set one by
    /// one), by store id.
    pub stores: BTreeMap<u64, Rates>,
}

impl Settings {
    pub fn decode(bytes: &[u8]) -> Option<Settings> {
        let s: Settings = serde_json::from_slice(bytes).ok()?;
        let valid = s.default.are_valid() && s.stores.values().all(Rates::are_valid);
        valid.then_some(s)
    }

    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }

    pub fn rates(&self, store_id: u64) -> Rates {
        self.stores.get(&store_id).copied().unwrap_or(self.default)
    }

    /// `rate` for `types` of every store, and of stores yet to come.
    pub fn set_all(&mut self, types: &[LimitType], rate: f64) {
        for t in types {
            self.default.set(*t, rate);
            for r in self.stores.values_mut() {
                r.set(*t, rate);
            }
        }
    }

    /// `rate` for `types` of one store.
    pub fn set_store(&mut self, store_id: u64, types: &[LimitType], rate: f64) {
        let mut rates = self.rates(store_id);
        for t in types {
            rates.set(*t, rate);
        }
        self.stores.insert(store_id, rates);
    }
}

/// Tokens one step on a region of `size_mib` takes.
pub fn step_cost(size_mib: u64) -> f64 {
    if size_mib > SMALL_REGION_MIB {
        REGION_COST
    } else if size_mib > EMPTY_REGION_MIB {
        SMALL_REGION_COST
    } else {
        0.0
    }
}

/// What `plan`, on a region of `size_mib`, costs each store's buckets:
/// its steps' costs summed per store and type (only those above zero).
/// A removal from a store `is_down` says is Down costs as a region of at
/// most [`SMALL_REGION_MIB`].
pub fn plan_costs(
    plan: &Plan,
    size_mib: u64,
    is_down: impl Fn(u64) -> bool,
) -> Vec<(u64, LimitType, f64)> {
    let mut sums: BTreeMap<(u64, LimitType), f64> = BTreeMap::new();
    for step in &plan.steps {
        let (store, t, cost) = match step {
            Step::AddLearner { store_id, .. } => {
                (*store_id, LimitType::AddPeer, step_cost(size_mib))
            }
            Step::RemovePeer { store_id, .. } if is_down(*store_id) => (
                *store_id,
                LimitType::RemovePeer,
                step_cost(size_mib.min(SMALL_REGION_MIB)),
            ),
            Step::RemovePeer { store_id, .. } => {
                (*store_id, LimitType::RemovePeer, step_cost(size_mib))
            }
            _ => continue,
        };
        if cost > 0.0 {
            *sums.entry((store, t)).or_default() += cost;
        }
    }
    sums.into_iter().map(|((s, t), c)| (s, t, c)).collect()
}

/// One bucket: tokens as of `at` (Unix nanoseconds).
#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: i64,
}

impl Bucket {
    /// The tokens it holds at `now`, filling at `rate` a minute.
    fn level(&self, rate: f64, now: i64) -> f64 {
        let (fill, capacity) = shape(rate);
        let gained = elapsed(self.at, now).as_secs_f64() * fill;
        (self.tokens + gained).min(capacity)
    }
}

/// Token rate (per second) and capacity of a bucket at `rate` a minute.
fn shape(rate: f64) -> (f64, f64) {
    let per_sec = rate.min(UNLIMITED) / 60.0;
    (per_sec * REGION_COST, per_sec.max(1.0) * REGION_COST)
}

/// Every store's buckets. A bucket starts full, and again whenever its
/// rate changes.
#[derive(Debug, Default)]
pub struct Limits {
    pub settings: Settings,
    buckets: HashMap<(u64, LimitType), Bucket>,
}

impl Limits {
    pub fn new(settings: Settings) -> Limits {
        Limits {
            settings,
            buckets: HashMap::new(),
        }
    }

    /// Replaces the settings; buckets whose rate changed start full again.
    pub fn reset(&mut self, settings: Settings) {
        let old = std::mem::replace(&mut self.settings, settings);
        let new = &self.settings;
        self.buckets
            .retain(|(s, t), _| old.rates(*s).get(*t) == new.rates(*s).get(*t));
    }

    /// The tokens in a bucket now.
    fn tokens(&mut self, store_id: u64, t: LimitType, now: i64) -> &mut Bucket {
        let rate = self.settings.rates(store_id).get(t);
        let b = self.buckets.entry((store_id, t)).or_insert(Bucket {
            tokens: shape(rate).1,
            at: now,
        });
        // A clock stepped back restarts the count from its new "now",
        // rather than freezing the bucket until the old one comes again.
        b.tokens = b.level(rate, now);
        b.at = now;
        b
    }

    /// Whether the bucket holds a large region's cost now (it is not
    /// changed: a view of it).
    pub fn could_pay_large(&self, store_id: u64, t: LimitType, now: i64) -> bool {
        let rate = self.settings.rates(store_id).get(t);
        (self.buckets.get(&(store_id, t))).is_none_or(|b| b.level(rate, now) >= REGION_COST)
    }

    /// Whether every bucket holds its share of `costs` now.
    pub fn allows(&mut self, costs: &[(u64, LimitType, f64)], now: i64) -> bool {
        (costs.iter()).all(|(s, t, c)| self.tokens(*s, *t, now).tokens >= *c)
    }

    /// Takes `costs` from the buckets; a bucket that does not hold its
    /// share gives what it holds (it never goes below zero).
    pub fn take(&mut self, costs: &[(u64, LimitType, f64)], now: i64) {
        for (s, t, c) in costs {
            let b = self.tokens(*s, *t, now);
            b.tokens = (b.tokens - c).max(0.0);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEC: i64 = 1_000_000_000;

    #[test]
    fn a_bucket_lets_a_large_step_through_every_four_seconds_at_fifteen_a_minute() {
        let mut l = Limits::default();
        let big = [(1, LimitType::AddPeer, step_cost(64))];
        assert!(l.allows(&big, 0));
        l.take(&big, 0);
        assert!(!l.allows(&big, 3 * SEC));
        assert!(l.allows(&big, 4 * SEC));
        // The other type and other stores have their own buckets.
        assert!(l.allows(&[(1, LimitType::RemovePeer, 1000.0)], 0));
        assert!(l.allows(&[(2, LimitType::AddPeer, 1000.0)], 0));
        // A full bucket does not grow past its capacity.
        assert!(!l.allows(&[(2, LimitType::AddPeer, 1001.0)], 3600 * SEC));
    }

    #[test]
    fn small_regions_cost_less_and_empty_ones_nothing() {
        assert_eq!(step_cost(21), 1000.0);
        assert_eq!(step_cost(20), 200.0);
        assert_eq!(step_cost(2), 200.0);
        assert_eq!(step_cost(1), 0.0);
        assert_eq!(step_cost(0), 0.0);
    }

    #[test]
    fn a_clock_stepped_back_does_not_freeze_a_bucket() {
        let mut l = Limits::default();
        let big = [(1, LimitType::AddPeer, 1000.0)];
        l.take(&big, 100 * SEC);
        // Stepped back 60 s: the bucket fills from the new "now" on.
        assert!(!l.allows(&big, 40 * SEC));
        assert!(l.allows(&big, 44 * SEC));
    }

    #[test]
    fn a_bucket_short_of_a_cost_gives_what_it_holds() {
        let mut l = Limits::default();
        let big = [(1, LimitType::AddPeer, 1000.0)];
        let small = [(1, LimitType::AddPeer, 200.0)];
        l.take(&small, 0);
        l.take(&big, 0);
        l.take(&big, 0);
        // Empty, not in debt: full again after 4 s at 250 a second.
        assert!(!l.allows(&[(1, LimitType::AddPeer, 1.0)], 0));
        assert!(l.allows(&big, 4 * SEC));
    }

    #[test]
    fn removing_from_a_down_store_costs_as_a_small_region() {
        let step = |s| Step::RemovePeer {
            store_id: s,
            peer_id: 9,
        };
        let plan = Plan {
            desc: "replace-down-replica".into(),
            brief: String::new(),
            kind: 0,
            steps: vec![
                Step::AddLearner {
                    store_id: 4,
                    peer_id: 10,
                },
                step(2),
                step(3),
            ],
        };
        let costs = plan_costs(&plan, 64, |s| s == 2);
        assert_eq!(
            costs,
            [
                (2, LimitType::RemovePeer, 200.0),
                (3, LimitType::RemovePeer, 1000.0),
                (4, LimitType::AddPeer, 1000.0),
            ]
        );
        assert_eq!(plan_costs(&plan, 1, |_| true), []);
    }

    #[test]
    fn a_rate_over_one_a_second_widens_the_bucket() {
        let mut l = Limits::default();
        l.reset(Settings {
            default: Rates {
                add_peer: 120.0,
                remove_peer: DEFAULT_RATE,
            },
            stores: BTreeMap::new(),
        });
        let two = [(1, LimitType::AddPeer, 2000.0)];
        assert!(l.allows(&two, 0));
        l.take(&two, 0);
        assert!(!l.allows(&two, SEC / 2));
        assert!(l.allows(&two, SEC));
    }

    #[test]
    fn a_changed_rate_starts_its_bucket_full() {
        let mut l = Limits::default();
        let big = [(1, LimitType::AddPeer, 1000.0)];
        l.take(&big, 0);
        l.take(&big, 0);
        assert!(!l.allows(&big, 0));
        let mut s = l.settings.clone();
        s.set_store(1, &[LimitType::AddPeer], 30.0);
        l.reset(s);
        assert!(l.allows(&big, 0));
    }

    #[test]
    fn huge_rates_stay_finite() {
        let mut l = Limits::default();
        let mut s = Settings::default();
        s.set_all(&LimitType::ALL, f64::MAX);
        l.reset(s);
        let c = [(1, LimitType::AddPeer, 1000.0)];
        for i in 0..3 {
            assert!(l.allows(&c, i));
            l.take(&c, i);
        }
        assert!(l.buckets.values().all(|b| b.tokens.is_finite()));
    }

    #[test]
    fn settings_round_trip_and_refuse_bad_rates() {
        let mut s = Settings::default();
        s.set_store(4, &[LimitType::RemovePeer], 5.0);
        s.set_all(&[LimitType::AddPeer], 30.0);
        assert_eq!(Settings::decode(&s.encode()), Some(s.clone()));
        assert_eq!(s.rates(4).remove_peer, 5.0);
        assert_eq!(s.rates(4).add_peer, 30.0);
        assert_eq!(s.rates(9).add_peer, 30.0);
        assert_eq!(s.rates(9).remove_peer, DEFAULT_RATE);
        let bad = br#"{"default":{"add-peer":0,"remove-peer":15},"stores":{}}"#;
        assert_eq!(Settings::decode(bad), None);
        assert_eq!(Settings::decode(b"not json"), None);
    }
}
