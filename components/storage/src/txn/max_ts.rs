//! How far a client's timestamp may raise `max_ts` (TiKV's
//! `[storage.max-ts]`).
//!
//! Every read raises the store's `max_ts` to its timestamp, and an
//! async-commit or 1PC prewrite commits above `max_ts`. A read at a made-up
//! timestamp near `u64::MAX` would push every later such commit on the
//! store up there until restart. So the store keeps a ceiling: a PD
//! timestamp it took lately plus `max-drift`, refreshed every
//! `cache-sync-interval` (and whenever it takes a PD timestamp for its own
//! use). A ceiling not refreshed for three intervals grows with the local
//! clock, so a store cut off from PD does not refuse honest readers. A
//! read above the ceiling is checked once more against a fresh PD
//! timestamp (unless PD set the ceiling within the last second), then
//! refused (action `error`) or only logged (`log`).

use std::time::{Duration, Instant};

use super::actions::physical;

/// What a read above the ceiling gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InvalidMaxTsAction {
    /// Refused with a region error naming the ceiling (TiKV's message, so
    /// clients that recognise it stop retrying).
    Error,
    /// Served, and logged.
    Log,
}

/// `[storage.max-ts]`, as the store runs it.
#[derive(Debug, Clone, Copy)]
pub struct MaxTsPolicy {
    pub max_drift: Duration,
    /// How long a ceiling stays as PD set it; older, it grows with the
    /// local clock (three `cache-sync-interval`s, as TiKV, but never
    /// longer than `max_drift`, past which PD's time may have overtaken it).
    pub valid_for: Duration,
    /// A ceiling set this recently is taken as PD's word without asking PD
    /// again (the store refreshes it every second for stale reads): a
    /// flood of made-up timestamps costs PD nothing.
    pub fresh_for: Duration,
    pub action: InvalidMaxTsAction,
}

impl Default for MaxTsPolicy {
    fn default() -> Self {
        MaxTsPolicy {
            max_drift: Duration::from_secs(60),
            valid_for: Duration::from_secs(45),
            fresh_for: Duration::from_secs(1),
            action: InvalidMaxTsAction::Error,
        }
    }
}

/// The ceiling and when PD last set it.
#[derive(Debug)]
pub(crate) struct MaxTsLimit {
    pub(crate) policy: MaxTsPolicy,
    /// 0 until the store first takes a PD timestamp: nothing is checked.
    ceiling: u64,
    set_at: Instant,
}

impl Default for MaxTsLimit {
    fn default() -> Self {
        MaxTsLimit {
            policy: MaxTsPolicy::default(),
            ceiling: 0,
            set_at: Instant::now(),
        }
    }
}

impl MaxTsLimit {
    /// PD gave `pd_ts`: the ceiling becomes it plus `max-drift`, unless it
    /// is already higher.
    pub(crate) fn set(&mut self, pd_ts: u64) {
        if pd_ts == u64::MAX {
            return;
        }
        let ceiling = add_ms(pd_ts, self.policy.max_drift);
        if ceiling > self.ceiling {
            self.ceiling = ceiling;
            self.set_at = Instant::now();
        }
    }

    /// Whether PD set the ceiling within `fresh_for`.
    pub(crate) fn is_fresh(&self) -> bool {
        self.ceiling != 0 && self.set_at.elapsed() < self.policy.fresh_for
    }

    /// The ceiling `ts` goes above, if it does (`u64::MAX`, which raises
    /// nothing, never does).
    pub(crate) fn exceeded_by(&self, ts: u64) -> Option<u64> {
        if self.ceiling == 0 || ts == u64::MAX {
            return None;
        }
        let age = self.set_at.elapsed();
        let ceiling = if age < self.policy.valid_for {
            self.ceiling
        } else {
            add_ms(self.ceiling, age)
        };
        (ts > ceiling).then_some(ceiling)
    }
}

/// `ts` with `d` added to its physical part (saturating; the logical part
/// kept).
fn add_ms(ts: u64, d: Duration) -> u64 {
    let ms = u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
    let physical = physical(ts).saturating_add(ms).min(u64::MAX >> 18);
    (physical << 18) | (ts & ((1 << 18) - 1))
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: u64 = 1 << 18;

    #[test]
    fn the_ceiling_is_pd_time_plus_the_drift_and_only_rises() {
        let mut l = MaxTsLimit::default();
        assert_eq!(l.exceeded_by(u64::MAX - 1), None, "no PD timestamp yet");
        l.set(1_000 * MS + 5);
        let ceiling = 61_000 * MS + 5;
        assert_eq!(l.exceeded_by(ceiling), None);
        assert_eq!(l.exceeded_by(ceiling + 1), Some(ceiling));
        assert_eq!(l.exceeded_by(u64::MAX - 1), Some(ceiling));
        assert_eq!(l.exceeded_by(u64::MAX), None, "u64::MAX raises nothing");
        l.set(10 * MS);
        assert_eq!(
            l.exceeded_by(ceiling + 1),
            Some(ceiling),
            "a lower one is ignored"
        );
        l.set(u64::MAX);
        assert_eq!(l.exceeded_by(ceiling + 1), Some(ceiling), "as is u64::MAX");
        // A PD timestamp near the top saturates instead of wrapping.
        l.set(u64::MAX - 1);
        assert_eq!(l.exceeded_by(u64::MAX - 1), None);
    }

    #[test]
    fn a_ceiling_pd_has_not_refreshed_grows_with_the_clock() {
        let mut l = MaxTsLimit {
            policy: MaxTsPolicy {
                max_drift: Duration::ZERO,
                valid_for: Duration::ZERO,
                ..Default::default()
            },
            ..Default::default()
        };
        l.set(1_000 * MS);
        std::thread::sleep(Duration::from_millis(20));
        let grown = l.exceeded_by(u64::MAX - 1).unwrap();
        assert!(grown >= 1_020 * MS, "{}", grown / MS);
        assert_eq!(l.exceeded_by(1_010 * MS), None);
    }
}
