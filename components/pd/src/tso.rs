//! The timestamp oracle.
//!
//! A timestamp is `physical_ms << 18 | logical`. Timestamps must grow
//! strictly, even across a crash and restart, and even if the clock steps
//! back. So PD persists a *window*: before handing out any timestamp with
//! physical time `p`, it has durably recorded some `w > p`. After a restart
//! it starts at `max(now, w + 1)`, above everything it could have issued.
//! The window is extended by [`WINDOW_MS`] at a time, so an fsync happens
//! about once every few seconds, not per request.

use std::time::{Instant, SystemTime, UNIX_EPOCH};

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
/// "The clock" is the wall clock or, if that stepped back, the time that
/// really passed since the oracle opened (a monotonic clock from the wall
/// time then): a clock set back does not stop the oracle until it catches
/// up, as it does not stop upstream's.
const MAX_AHEAD_MS: i64 = 50;

/// The clocks the oracle reads: the wall clock, and a monotonic one.
pub trait TsoClock: Send + Sync {
    /// Milliseconds since the Unix epoch.
    fn wall_ms(&self) -> i64;
    /// Milliseconds since some fixed instant; never goes back.
    fn steady_ms(&self) -> i64;
}

/// The system's clocks.
pub struct SystemClocks(Instant);

impl TsoClock for SystemClocks {
    fn wall_ms(&self) -> i64 {
        now_ms()
    }

    fn steady_ms(&self) -> i64 {
        i64::try_from(self.0.elapsed().as_millis()).unwrap_or(i64::MAX)
    }
}

pub struct Tso {
    state: Mutex<State>,
    clock: Box<dyn TsoClock>,
}

struct State {
    physical: i64,
    logical: i64,
    /// Persisted: no timestamp may reach this physical time.
    window: i64,
    /// The physical time the oracle started at (above the wall clock after
    /// a restart that came soon after the last one).
    start: i64,
    /// The wall and monotonic clocks when the oracle opened.
    opened: (i64, i64),
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

impl Tso {
    pub fn open(meta: &MetaStore) -> Result<Tso> {
        Tso::open_with(meta, Box::new(SystemClocks(Instant::now())))
    }

    /// [`Tso::open`] reading `clock`.
    pub fn open_with(meta: &MetaStore, clock: Box<dyn TsoClock>) -> Result<Tso> {
        // The disk's number is trusted only as far as it is sane.
        let saved = i64::try_from(meta.get_u64(TSO)?.unwrap_or(0)).unwrap_or(i64::MAX);
        let wall = clock.wall_ms();
        let physical = wall.max(saved.saturating_add(1));
        let window = physical.saturating_add(WINDOW_MS);
        meta.put_u64(TSO, window as u64)?;
        Ok(Tso {
            state: Mutex::new(State {
                physical,
                logical: 0,
                window,
                start: physical,
                opened: (wall, clock.steady_ms()),
            }),
            clock,
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
        let now = self.clock.wall_ms();
        if now > s.physical {
            s.physical = now;
            s.logical = 0;
        }
        if s.logical + count >= MAX_LOGICAL {
            // What the wall clock would say had it not been set back.
            let (wall, steady) = s.opened;
            let passed = self.clock.steady_ms().saturating_sub(steady).max(0);
            let clock = now.max(s.start).max(wall.saturating_add(passed));
            if s.physical >= clock.saturating_add(MAX_AHEAD_MS) {
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

    /// Clocks a test sets: (wall, steady) in ms.
    struct Manual(std::sync::Arc<Mutex<(i64, i64)>>);

    impl TsoClock for Manual {
        fn wall_ms(&self) -> i64 {
            self.0.lock().0
        }

        fn steady_ms(&self) -> i64 {
            self.0.lock().1
        }
    }

    #[test]
    fn a_wall_clock_set_back_does_not_stop_the_oracle() {
        let dir = tempfile::tempdir().unwrap();
        let meta = MetaStore::open(dir.path()).unwrap();
        let clocks = std::sync::Arc::new(Mutex::new((1_000_000, 0)));
        let tso = Tso::open_with(&meta, Box::new(Manual(clocks.clone()))).unwrap();
        let mut last = compose(tso.allocate(&meta, 5).unwrap());
        // NTP steps the wall clock back 10 s; time goes on.
        clocks.lock().0 -= 10_000;
        for _ in 0..150 {
            {
                let mut c = clocks.lock();
                (c.0, c.1) = (c.0 + 50, c.1 + 50);
            }
            let ts = compose(tso.allocate(&meta, MAX_COUNT).unwrap());
            assert!(ts > last);
            last = ts;
        }
        // Still bounded: no further ahead of the time that passed than
        // requests were ever allowed to push it.
        let passed = 1_000_000 + clocks.lock().1;
        assert!((last >> LOGICAL_BITS) <= passed + MAX_AHEAD_MS);
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
