//! Raw values with their expiry (`tikal_codec::raw_value`), as the store
//! reads them back from RocksDB.
//!
//! Checks:
//! * `decode` of arbitrary bytes never panics, and what it accepts is
//!   exactly `value ++ 0x00` or `value ++ expire_at (8 bytes BE) ++ 0x01`:
//!   rebuilding the bytes from the decoded parts gives the input back;
//! * `live_value` agrees with `decode` and `is_live`;
//! * `encode(value, ttl, now)`, with all three taken from the input,
//!   decodes to the same value, no expiry for ttl 0 and `now + ttl`
//!   (saturating) otherwise; such a value is live at `now` (unless `now`
//!   is the last second there is) and dead at its expiry.

#![no_main]

use libfuzzer_sys::fuzz_target;
use tikal_codec::raw_value::{decode, encode, live_value};

fuzz_target!(|data: &[u8]| {
    stored(data);
    if data.len() >= 16 {
        let (ttl, rest) = data.split_at(8);
        let (now, value) = rest.split_at(8);
        let ttl = u64::from_be_bytes(ttl.try_into().unwrap());
        let now = u64::from_be_bytes(now.try_into().unwrap());
        written(value, ttl, now);
    }
});

fn stored(data: &[u8]) {
    let now = data.first().map_or(0, |&b| u64::from(b) << 56);
    match decode(data) {
        Some(s) => {
            let mut rebuilt = s.value.to_vec();
            match s.expire_at {
                None => rebuilt.push(0),
                Some(at) => {
                    rebuilt.extend_from_slice(&at.to_be_bytes());
                    rebuilt.push(1);
                }
            }
            assert_eq!(rebuilt, data);
            let live = s.is_live(now).then_some(s.value);
            assert_eq!(live_value(data, now), live);
        }
        None => {
            let plain_or_ttl = match data.split_last() {
                Some((0, _)) => true,
                Some((1, rest)) => rest.len() >= 8,
                _ => false,
            };
            assert!(!plain_or_ttl, "{data:02x?} is a stored value");
            assert_eq!(live_value(data, now), None);
        }
    }
}

fn written(value: &[u8], ttl: u64, now: u64) {
    let raw = encode(value, ttl, now);
    let s = decode(&raw).expect("an encoded value decodes");
    assert_eq!(s.value, value);
    if ttl == 0 {
        assert_eq!(s.expire_at, None);
        assert!(s.is_live(u64::MAX));
    } else {
        let at = now.saturating_add(ttl);
        assert_eq!(s.expire_at, Some(at));
        assert_eq!(s.is_live(now), now < u64::MAX);
        assert!(!s.is_live(at));
    }
}
