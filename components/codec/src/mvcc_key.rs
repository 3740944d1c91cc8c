//! TiKV's byte encodings for MVCC keys and records.
//!
//! * A user key is stored memcomparable-encoded: 8-byte groups, each
//!   followed by a marker `0xFF - padding`, the last group zero-padded; so
//!   encoded keys sort as the user keys do and none is a prefix of another.
//! * Versions append a timestamp as `!ts` big-endian, so newer versions of a
//!   key sort first.
//! * Numbers inside records are LEB128 varints (`u64`), zigzag varints
//!   (`i64`, used for byte-string lengths), or 8-byte big-endian.

const GROUP: usize = 8;
const MARKER: u8 = 0xFF;

/// The length of `key`'s memcomparable encoding.
pub fn encoded_len(key: &[u8]) -> usize {
    (key.len() / GROUP + 1) * (GROUP + 1)
}

/// Memcomparable encoding of a user key.
pub fn encode_key(key: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(encoded_len(key) + 8);
    for chunk in key.chunks(GROUP) {
        out.extend_from_slice(chunk);
        if chunk.len() == GROUP {
            out.push(MARKER);
        }
    }
    // A key of whole groups ends with a whole padding group.
    let pad = GROUP - key.len() % GROUP;
    out.extend(std::iter::repeat_n(0, pad));
    out.push(MARKER - pad as u8);
    out
}

/// Decodes a memcomparable-encoded key; returns the user key and the bytes
/// after it (the timestamp suffix, if any).
pub fn decode_key(encoded: &[u8]) -> Option<(Vec<u8>, &[u8])> {
    let mut key = Vec::with_capacity(encoded.len());
    let mut rest = encoded;
    loop {
        if rest.len() < GROUP + 1 {
            return None;
        }
        let (group, tail) = rest.split_at(GROUP);
        let marker = tail[0];
        rest = &tail[1..];
        let pad = (MARKER - marker) as usize;
        if pad == 0 {
            key.extend_from_slice(group);
            continue;
        }
        if pad > GROUP || group[GROUP - pad..].iter().any(|b| *b != 0) {
            return None;
        }
        key.extend_from_slice(&group[..GROUP - pad]);
        return Some((key, rest));
    }
}

/// `encoded key | !ts` — a version of a key in CF write or default.
pub fn append_ts(mut encoded: Vec<u8>, ts: u64) -> Vec<u8> {
    encoded.extend_from_slice(&(!ts).to_be_bytes());
    encoded
}

/// Splits a versioned key into (encoded user key, ts).
pub fn split_ts(versioned: &[u8]) -> Option<(&[u8], u64)> {
    if versioned.len() < 8 {
        return None;
    }
    let (key, ts) = versioned.split_at(versioned.len() - 8);
    Some((key, !u64::from_be_bytes(ts.try_into().ok()?)))
}

pub fn put_var_u64(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push(v as u8 | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

pub fn put_compact_bytes(out: &mut Vec<u8>, b: &[u8]) {
    let n = b.len() as i64;
    put_var_u64(out, ((n << 1) ^ (n >> 63)) as u64);
    out.extend_from_slice(b);
}

/// Reads the fields of a record, failing on truncation.
pub struct Reader<'a>(pub &'a [u8]);

impl<'a> Reader<'a> {
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn u8(&mut self) -> Option<u8> {
        let (b, rest) = self.0.split_first()?;
        self.0 = rest;
        Some(*b)
    }

    pub fn var_u64(&mut self) -> Option<u64> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let b = self.u8()?;
            // The tenth byte holds bit 63 alone: anything more does not fit
            // a u64, and shifting it in would drop bits silently.
            if shift == 63 && b > 1 {
                return None;
            }
            v |= u64::from(b & 0x7f) << shift;
            if b < 0x80 {
                return Some(v);
            }
        }
        None
    }

    pub fn u64(&mut self) -> Option<u64> {
        let b = self.bytes(8)?;
        Some(u64::from_be_bytes(b.try_into().ok()?))
    }

    pub fn bytes(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.0.len() < n {
            return None;
        }
        let (b, rest) = self.0.split_at(n);
        self.0 = rest;
        Some(b)
    }

    pub fn compact_bytes(&mut self) -> Option<&'a [u8]> {
        let z = self.var_u64()?;
        let n = ((z >> 1) as i64) ^ -((z & 1) as i64);
        self.bytes(usize::try_from(n).ok()?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_encode_in_order_and_round_trip() {
        let keys: Vec<&[u8]> = vec![
            b"",
            b"\0",
            b"a",
            b"a\0",
            b"ab",
            b"abcdefg",
            b"abcdefgh",
            b"abcdefgh\0",
            b"abcdefghi",
            b"b",
        ];
        let enc: Vec<Vec<u8>> = keys.iter().map(|k| encode_key(k)).collect();
        for w in enc.windows(2) {
            assert!(w[0] < w[1], "{:?} < {:?}", w[0], w[1]);
        }
        for (k, e) in keys.iter().zip(&enc) {
            let (d, rest) = decode_key(e).unwrap();
            assert_eq!(&d[..], *k);
            assert!(rest.is_empty());
            assert_eq!(encoded_len(k), e.len());
        }
        // TiKV's documented example: [1,2,3] -> [1,2,3,0,0,0,0,0,0xFA].
        assert_eq!(encode_key(&[1, 2, 3]), vec![1, 2, 3, 0, 0, 0, 0, 0, 0xFA]);
        assert_eq!(encode_key(&[]), vec![0, 0, 0, 0, 0, 0, 0, 0, 0xF7]);
    }

    #[test]
    fn newer_versions_sort_first() {
        let k = encode_key(b"k");
        let (v1, v2) = (append_ts(k.clone(), 10), append_ts(k.clone(), 20));
        assert!(v2 < v1);
        assert_eq!(split_ts(&v1), Some((k.as_slice(), 10)));
    }

    #[test]
    fn numbers_round_trip() {
        let mut b = vec![];
        put_var_u64(&mut b, 300);
        put_compact_bytes(&mut b, b"xyz");
        let mut r = Reader(&b);
        assert_eq!(r.var_u64(), Some(300));
        assert_eq!(r.compact_bytes(), Some(&b"xyz"[..]));
        assert!(r.is_empty());
    }

    // Found by fuzz/fuzz_targets/mvcc_key.rs: ten bytes whose last one
    // carried more than bit 63 read as a different number (here i64::MAX)
    // instead of being refused.
    #[test]
    fn varints_beyond_64_bits_are_refused() {
        let mut max = vec![];
        put_var_u64(&mut max, u64::MAX);
        assert_eq!(max, [[0xff; 9].as_slice(), &[0x01]].concat());
        assert_eq!(Reader(&max).var_u64(), Some(u64::MAX));

        for last in [0x02, 0x6e, 0x7f] {
            let over = [[0xff; 9].as_slice(), &[last]].concat();
            assert_eq!(Reader(&over).var_u64(), None, "last byte {last:#x}");
            // A length that overflows is refused too, not truncated.
            assert_eq!(
                Reader(&[over.as_slice(), b"x"].concat()).compact_bytes(),
                None
            );
        }
        // Eleven bytes never fit.
        assert_eq!(
            Reader(&[[0x80; 10].as_slice(), &[0]].concat()).var_u64(),
            None
        );
    }
}
