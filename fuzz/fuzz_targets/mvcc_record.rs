//! Percolator lock and write records (`tikal_codec::mvcc_record`), as the
//! store reads them back from CF lock and CF write.
//!
//! Checks, for arbitrary bytes:
//! * `Lock::parse` and `Write::parse` never panic;
//! * what parses re-encodes (`to_bytes`) to bytes that parse to the same
//!   record, and encoding that record again gives the same bytes (the
//!   encoding is a fixed point after one round);
//! * a parsed record keeps the input's type byte and timestamp, and a short
//!   value is never longer than `SHORT_VALUE_MAX_LEN`;
//! * a lock's `info` reports the fields the lock holds.

#![no_main]

use libfuzzer_sys::fuzz_target;
use tikal_codec::mvcc_key::Reader;
use tikal_codec::mvcc_record::{Lock, Write, SHORT_VALUE_MAX_LEN};

fuzz_target!(|data: &[u8]| {
    lock(data);
    write(data);
});

fn lock(data: &[u8]) {
    let Some(lock) = Lock::parse(data) else {
        return;
    };
    let bytes = lock.to_bytes();
    assert_eq!(bytes[0], data[0], "the type byte is kept");
    assert_eq!(Lock::parse(&bytes).as_ref(), Some(&lock), "{data:02x?}");
    assert_eq!(Lock::parse(&bytes).map(|l| l.to_bytes()), Some(bytes));
    assert!(lock
        .short_value
        .as_ref()
        .is_none_or(|v| v.len() <= SHORT_VALUE_MAX_LEN));
    assert!(lock.use_async_commit || lock.secondaries.is_empty());

    let mut r = Reader(&data[1..]);
    assert_eq!(r.compact_bytes(), Some(lock.primary.as_slice()));
    assert_eq!(r.var_u64(), Some(lock.ts));

    let info = lock.info(b"k");
    assert_eq!(info.primary_lock, lock.primary);
    assert_eq!(info.lock_version, lock.ts);
    assert_eq!(info.lock_ttl, lock.ttl);
    assert_eq!(info.key, b"k");
    assert_eq!(info.lock_type, lock.lock_type.op() as i32);
    assert_eq!(info.secondaries, lock.secondaries);
}

fn write(data: &[u8]) {
    let Some(write) = Write::parse(data) else {
        return;
    };
    let bytes = write.to_bytes();
    assert_eq!(bytes[0], data[0], "the type byte is kept");
    assert_eq!(Write::parse(&bytes).as_ref(), Some(&write), "{data:02x?}");
    assert_eq!(Write::parse(&bytes).map(|w| w.to_bytes()), Some(bytes));
    assert!(write
        .short_value
        .as_ref()
        .is_none_or(|v| v.len() <= SHORT_VALUE_MAX_LEN));
    assert_eq!(Reader(&data[1..]).var_u64(), Some(write.start_ts));
}
