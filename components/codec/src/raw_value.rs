//! How raw values are stored: the user's bytes plus an expiry marker, in
//! TiKV's API V2 value encoding (used by every api-version here).
//!
//! ```text
//! no TTL:    b"hello" -> b"hello\x00"
//! TTL:       b"hello" -> b"hello" ++ expire_at.to_be_bytes() ++ b"\x01"
//! deleted:                b"\x02"   (an API V2 delete's tombstone)
//! ```
//! The flag byte is last so decoding never needs to know which form it is in.

use std::time::{SystemTime, UNIX_EPOCH};

const FLAG_PLAIN: u8 = 0;
const FLAG_TTL: u8 = 1;
const FLAG_DELETED: u8 = 2;

/// What an API V2 raw delete writes: the key reads as absent until
/// compaction drops it (see `tikal_engine`'s raw tombstone filter).
pub const TOMBSTONE: [u8; 1] = [FLAG_DELETED];

/// Seconds since the Unix epoch.
pub fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Encodes `value`, expiring `ttl` seconds after `now` (0 = never).
pub fn encode(value: &[u8], ttl: u64, now: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(value.len() + 9);
    out.extend_from_slice(value);
    if ttl == 0 {
        out.push(FLAG_PLAIN);
    } else {
        out.extend_from_slice(&now.saturating_add(ttl).to_be_bytes());
        out.push(FLAG_TTL);
    }
    out
}

/// A stored value, decoded.
#[derive(Debug, PartialEq, Eq)]
pub struct Stored<'a> {
    pub value: &'a [u8],
    /// Unix seconds after which the value is gone; None = never.
    pub expire_at: Option<u64>,
    /// A tombstone: absent, whatever the clock says.
    pub deleted: bool,
}

impl Stored<'_> {
    pub fn is_live(&self, now: u64) -> bool {
        !self.deleted && self.expire_at.is_none_or(|at| at > now)
    }
}

/// Whether `raw` is a tombstone ([`TOMBSTONE`]).
pub fn is_tombstone(raw: &[u8]) -> bool {
    raw == TOMBSTONE
}

/// Decodes a stored value; None if the bytes are not in either form.
pub fn decode(raw: &[u8]) -> Option<Stored<'_>> {
    let (&flag, rest) = raw.split_last()?;
    match flag {
        FLAG_PLAIN => Some(Stored {
            value: rest,
            expire_at: None,
            deleted: false,
        }),
        FLAG_DELETED if rest.is_empty() => Some(Stored {
            value: rest,
            expire_at: None,
            deleted: true,
        }),
        FLAG_TTL if rest.len() >= 8 => {
            let (value, at) = rest.split_at(rest.len() - 8);
            Some(Stored {
                value,
                expire_at: Some(u64::from_be_bytes(at.try_into().ok()?)),
                deleted: false,
            })
        }
        _ => None,
    }
}

/// The user value if `raw` is live at `now`.
pub fn live_value(raw: &[u8], now: u64) -> Option<&[u8]> {
    decode(raw).filter(|s| s.is_live(now)).map(|s| s.value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_and_ttl_values_round_trip() {
        let plain = encode(b"v", 0, 100);
        assert_eq!(plain, b"v\x00");
        assert_eq!(live_value(&plain, u64::MAX), Some(&b"v"[..]));

        let ttl = encode(b"v", 10, 100);
        let d = decode(&ttl).unwrap();
        assert_eq!(d.value, b"v");
        assert_eq!(d.expire_at, Some(110));
        assert_eq!(live_value(&ttl, 109), Some(&b"v"[..]));
        assert_eq!(live_value(&ttl, 110), None);

        assert_eq!(live_value(&encode(b"", 0, 0), 0), Some(&b""[..]));
        assert_eq!(decode(b""), None);
        assert_eq!(decode(b"\x01"), None);
        assert_eq!(decode(b"x\x07"), None);
        // A tombstone decodes, and is never live; nothing else carries the flag.
        assert!(decode(&TOMBSTONE).is_some_and(|d| d.deleted));
        assert_eq!(live_value(&TOMBSTONE, 0), None);
        assert_eq!(decode(b"x\x02"), None);
    }
}
