//! The timestamp oracle.
//!
//! A timestamp is `physical_ms << 18 | logical`. Timestamps must grow
//! strictly, even across a crash and restart, and even if the clock steps
//! back. So PD persists a *window*: before handing out any timestamp with
//! physical time `p`, it has durably recorded some `w > p`. After a restart
//! it starts at `max(now, w + 1)`, above everything it could have issued.
//! The window is extended by [`WINDOW_MS`] at a time, so an fsync happens
//! about once every few seconds, not per request.

use std::time::{SystemTime, UNIX_EPOCH};

use parking_lot::Mutex;

use crate::storage::{MetaStore, Result, TSO};

pub const LOGICAL_BITS: u32 = 18;
const MAX_LOGICAL: i64 = 1 << LOGICAL_BITS;
/// Most timestamps one request may reserve: they share one physical ms.
pub const MAX_COUNT: u32 = (1 << LOGICAL_BITS) - 1;
const WINDOW_MS: i64 = 3000;
/// How far past the wall clock (or, after a restart, past where the oracle
/// started) requests that use up the logical part may push the physical
/// part. Without a bound, a client asking for `MAX_COUNT` timestamps in a
/// loop moved PD's time ahead by a millisecond a request, and with it every
/// lock's expiry and every safe point. Upstream moves it at most one
/// millisecond per 50 ms update; here a request waits for the clock instead.
const MAX_AHEAD_MS: i64 = 50;

pub struct Tso {
    state: Mutex<State>,
}

struct State {
    physical: i64,
    logical: i64,
    /// Persisted: no timestamp may reach this physical time.
    window: i64,
    /// The physical time the oracle started at (above the wall clock after
    /// a restart that came soon after the last one).
    start: i64,
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

impl Tso {
    pub fn open(meta: &MetaStore) -> Result<Tso> {
        // The disk's number is trusted only as far as it is sane.
        let saved = i64::try_from(meta.get_u64(TSO)?.unwrap_or(0)).unwrap_or(i64::MAX);
        let physical = now_ms().max(saved.saturating_add(1));
        let window = physical.saturating_add(WINDOW_MS);
        meta.put_u64(TSO, window as u64)?;
        Ok(Tso {
            state: Mutex::new(State {
                physical,
                logical: 0,
                window,
                start: physical,
            }),
        })
    }

    /// Reserves `count` consecutive timestamps and returns the last one as
    /// (physical, logical); the batch is `logical - count + 1 ..= logical`.
    /// `None` if the logical part is used up and the physical part is as
    /// far ahead of the clock as it may go ([`MAX_AHEAD_MS`]): ask again
    /// once the clock moved.
    pub fn allocate(&self, meta: &MetaStore, count: u32) -> Result<Option<(i64, i64)>> {
        let count = i64::from(count.clamp(1, MAX_COUNT));
        let mut s = self.state.lock();
        let now = now_ms();
        if now > s.physical {
            s.physical = now;
            s.logical = 0;
        }
        if s.logical + count >= MAX_LOGICAL {
            if s.physical >= now.max(s.start).saturating_add(MAX_AHEAD_MS) {
                return Ok(None);
            }
            s.physical += 1;
            s.logical = 0;
        }
        if s.physical >= s.window {
            let window = s.physical + WINDOW_MS;
            meta.put_u64(TSO, window as u64)?;
            s.window = window;
        }
        s.logical += count;
        Ok(Some((s.physical, s.logical)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn compose(ts: Option<(i64, i64)>) -> i64 {
        let (p, l) = ts.expect("a timestamp");
        p << LOGICAL_BITS | l
    }

    #[test]
    fn timestamps_grow_within_and_across_restarts() {
        let dir = tempfile::tempdir().unwrap();
        let meta = MetaStore::open(dir.path()).unwrap();
        let tso = Tso::open(&meta).unwrap();
        let mut last = 0;
        for i in 0..10_000 {
            let ts = compose(tso.allocate(&meta, 1 + i % 7).unwrap());
            assert!(ts > last);
            last = ts;
        }
        // Exhausting the logical space moves to the next millisecond.
        let (p1, _) = tso
            .allocate(&meta, (MAX_LOGICAL - 2) as u32)
            .unwrap()
            .unwrap();
        let (p2, _) = tso.allocate(&meta, 10).unwrap().unwrap();
        assert!(p2 > p1);
        let before_restart = compose(tso.allocate(&meta, 1).unwrap());
        // A restart: a new oracle over the same metadata.
        let tso = Tso::open(&meta).unwrap();
        assert!(compose(tso.allocate(&meta, 1).unwrap()) > before_restart);
    }

    #[test]
    fn using_up_the_logical_part_moves_time_only_a_little_ahead_of_the_clock() {
        let dir = tempfile::tempdir().unwrap();
        let meta = MetaStore::open(dir.path()).unwrap();
        let tso = Tso::open(&meta).unwrap();
        let start = tso.state.lock().start;
        let (mut last, mut refused) = (0, 0);
        for _ in 0..1000 {
            match tso.allocate(&meta, MAX_COUNT).unwrap() {
                Some(ts) => {
                    let ts = compose(Some(ts));
                    assert!(ts > last);
                    last = ts;
                }
                None => refused += 1,
            }
        }
        let ahead = (last >> LOGICAL_BITS) - now_ms().max(start);
        assert!(ahead <= MAX_AHEAD_MS, "{ahead} ms ahead of the clock");
        assert!(
            refused > 0,
            "1000 requests of a whole millisecond in well under a second"
        );
    }
}
