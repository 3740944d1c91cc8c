//! How raw values are stored: the user's bytes plus an expiry marker.
//!
//! ```text
//! no TTL:    b"hello" -> b"hello\x00"
//! TTL:       b"hello" -> b"hello" ++ expire_at.to_be_bytes() ++ b"\x01"
//! ```
//! The flag byte is last so decoding never needs to know which form it is in.

use std::time::{SystemTime, UNIX_EPOCH};

const FLAG_PLAIN: u8 = 0;
const FLAG_TTL: u8 = 1;

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
}

impl Stored<'_> {
    pub fn is_live(&self, now: u64) -> bool {
        self.expire_at.is_none_or(|at| at > now)
    }
}

/// Decodes a stored value; None if the bytes are not in either form.
pub fn decode(raw: &[u8]) -> Option<Stored<'_>> {
    let (&flag, rest) = raw.split_last()?;
    match flag {
        FLAG_PLAIN => Some(Stored {
            value: rest,
            expire_at: None,
        }),
        FLAG_TTL if rest.len() >= 8 => {
            let (value, at) = rest.split_at(rest.len() - 8);
            Some(Stored {
                value,
                expire_at: Some(u64::from_be_bytes(at.try_into().ok()?)),
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
    }
}
