//! MVCC key encodings (`tikal_codec::mvcc_key`): what the store reads back
//! as keys from RocksDB, and the varints and length-prefixed bytes inside
//! lock and write records.
//!
//! Checks, for arbitrary bytes:
//! * `decode_key` accepts only the canonical encoding: the key it returns
//!   re-encodes to exactly the bytes it consumed, and what it leaves is the
//!   input's tail;
//! * `encode_key` then `decode_key` gives back the key and any bytes after
//!   it, and encoding keeps the order of two keys (the input cut in two);
//! * `split_ts` answers for 8 bytes or more, and `append_ts` undoes it;
//! * a `Reader` driven by the input (an op byte, then its field) returns
//!   what a reference decoder computes with 128-bit arithmetic: a varint
//!   that does not fit 64 bits, a negative or truncated length, is `None`.
//!   What it reads re-encodes and reads back to the same value.

#![no_main]

use libfuzzer_sys::fuzz_target;
use tikal_codec::mvcc_key::{
    append_ts, decode_key, encode_key, put_compact_bytes, put_var_u64, split_ts, Reader,
};

fuzz_target!(|data: &[u8]| {
    keys(data);
    versions(data);
    fields(data);
});

fn keys(data: &[u8]) {
    if let Some((key, rest)) = decode_key(data) {
        let consumed = &data[..data.len() - rest.len()];
        assert_eq!(encode_key(&key), consumed, "a key has one encoding");
        assert!(data.ends_with(rest));
    }

    let (a, b) = data.split_at(data.len() / 2);
    let (ea, eb) = (encode_key(a), encode_key(b));
    assert_eq!(a.cmp(b), ea.cmp(&eb), "encoding keeps key order");
    let mut with_tail = ea.clone();
    with_tail.extend_from_slice(b);
    let (key, rest) = decode_key(&with_tail).expect("an encoded key decodes");
    assert_eq!((key.as_slice(), rest), (a, b));
}

fn versions(data: &[u8]) {
    match split_ts(data) {
        Some((key, ts)) => {
            assert_eq!(append_ts(key.to_vec(), ts), data);
        }
        None => assert!(data.len() < 8),
    }
}

/// Reads fields from the input as the op bytes say, each checked against
/// the reference decoders below.
fn fields(data: &[u8]) {
    let mut r = Reader(data);
    while let Some(op) = r.u8() {
        let before = r.0;
        match op % 4 {
            0 => {
                let got = r.var_u64();
                let want = ref_var_u64(before);
                assert_eq!(got, want.map(|(v, _)| v), "varint {before:02x?}");
                let Some((v, len)) = want else { return };
                assert_eq!(before.len() - r.0.len(), len);
                let mut enc = vec![];
                put_var_u64(&mut enc, v);
                assert!(enc.len() <= len, "the canonical encoding is shortest");
                assert_eq!(Reader(&enc).var_u64(), Some(v));
            }
            1 => {
                let got = r.compact_bytes();
                let want = ref_compact_bytes(before);
                assert_eq!(got, want, "compact bytes {before:02x?}");
                let Some(b) = got else { return };
                let mut enc = vec![];
                put_compact_bytes(&mut enc, b);
                let mut again = Reader(&enc);
                assert_eq!(again.compact_bytes(), Some(b));
                assert!(again.is_empty());
            }
            2 => {
                let got = r.u64();
                let want = before
                    .get(..8)
                    .map(|b| u64::from_be_bytes(b.try_into().unwrap()));
                assert_eq!(got, want);
                if got.is_none() {
                    return;
                }
            }
            _ => {
                let Some(n) = r.u8() else { return };
                let rest = r.0;
                match r.bytes(n as usize) {
                    Some(b) => assert_eq!(b, &rest[..n as usize]),
                    None => {
                        assert!(rest.len() < n as usize);
                        return;
                    }
                }
            }
        }
    }
}

/// LEB128 in at most 10 bytes, computed wide: `None` when truncated, longer
/// than 10 bytes, or above `u64::MAX`. Returns the value and bytes used.
fn ref_var_u64(b: &[u8]) -> Option<(u64, usize)> {
    let mut v: u128 = 0;
    for (i, &byte) in b.iter().enumerate().take(10) {
        v |= u128::from(byte & 0x7f) << (7 * i);
        if byte < 0x80 {
            return u64::try_from(v).ok().map(|v| (v, i + 1));
        }
    }
    None
}

/// A zigzag varint length, then that many bytes.
fn ref_compact_bytes(b: &[u8]) -> Option<&[u8]> {
    let (z, used) = ref_var_u64(b)?;
    let n = i128::from(z >> 1) * if z & 1 == 1 { -1 } else { 1 } - i128::from(z & 1);
    let n = usize::try_from(n).ok()?;
    b[used..].get(..n)
}
