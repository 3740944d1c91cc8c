//! Properties of every decoder a client or a disk reaches: what is encoded
//! decodes to itself, order is kept where it must be, and arbitrary bytes
//! never panic a decoder. (The fuzz targets in `fuzz/` search the same
//! decoders for longer, guided by coverage.)

use proptest::prelude::*;
use tikal_codec::mvcc_key::{append_ts, decode_key, encode_key, split_ts};
use tikal_codec::mvcc_record::{Lock, LockType, Write, WriteType, SHORT_VALUE_MAX_LEN};
use tikal_codec::raw_value;
use tikal_codec::replay_csv::Rows;
use tikal_codec::request_meta::RequestMeta;
use tikal_proto::kvrpcpb;

fn lock_type() -> impl Strategy<Value = LockType> {
    prop_oneof![
        Just(LockType::Put),
        Just(LockType::Delete),
        Just(LockType::Lock),
        Just(LockType::Pessimistic)
    ]
}

fn write_type() -> impl Strategy<Value = WriteType> {
    prop_oneof![
        Just(WriteType::Put),
        Just(WriteType::Delete),
        Just(WriteType::Lock),
        Just(WriteType::Rollback)
    ]
}

fn bytes(max: usize) -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(any::<u8>(), 0..max)
}

prop_compose! {
    fn a_lock()(
        lock_type in lock_type(),
        primary in bytes(40),
        ts in any::<u64>(),
        ttl in any::<u64>(),
        short_value in prop::option::of(bytes(SHORT_VALUE_MAX_LEN + 1)),
        for_update_ts in any::<u64>(),
        txn_size in any::<u64>(),
        min_commit_ts in any::<u64>(),
        use_async_commit in any::<bool>(),
        secondaries in prop::collection::vec(bytes(20), 0..4),
    ) -> Lock {
        Lock {
            lock_type,
            primary,
            ts,
            ttl,
            short_value,
            for_update_ts,
            txn_size,
            min_commit_ts,
            use_async_commit,
            secondaries: if use_async_commit { secondaries } else { vec![] },
        }
    }
}

proptest! {
    #[test]
    fn keys_round_trip_and_keep_their_order(a in bytes(40), b in bytes(40)) {
        let (ea, eb) = (encode_key(&a), encode_key(&b));
        let (da, rest) = decode_key(&ea).expect("own encoding decodes");
        prop_assert_eq!(&da, &a);
        prop_assert!(rest.is_empty());
        prop_assert_eq!(a.cmp(&b), ea.cmp(&eb));
    }

    #[test]
    fn versions_round_trip_newest_first(key in bytes(30), t1 in any::<u64>(), t2 in any::<u64>()) {
        let (v1, v2) = (append_ts(encode_key(&key), t1), append_ts(encode_key(&key), t2));
        let enc = encode_key(&key);
        prop_assert_eq!(split_ts(&v1), Some((enc.as_slice(), t1)));
        prop_assert_eq!(t1.cmp(&t2), v2.cmp(&v1));
    }

    #[test]
    fn locks_round_trip(lock in a_lock()) {
        prop_assert_eq!(Lock::parse(&lock.to_bytes()), Some(lock));
    }

    #[test]
    fn writes_round_trip(
        write_type in write_type(),
        start_ts in any::<u64>(),
        short_value in prop::option::of(bytes(SHORT_VALUE_MAX_LEN + 1)),
        overlapped in any::<bool>(),
    ) {
        let mut w = Write::new(write_type, start_ts, short_value);
        w.has_overlapped_rollback = overlapped;
        prop_assert_eq!(Write::parse(&w.to_bytes()), Some(w));
    }

    #[test]
    fn raw_values_round_trip(value in bytes(64), ttl in any::<u64>(), now in any::<u64>()) {
        let stored = raw_value::encode(&value, ttl, now);
        let d = raw_value::decode(&stored).expect("own encoding decodes");
        prop_assert_eq!(d.value, value.as_slice());
        prop_assert_eq!(d.expire_at, (ttl > 0).then(|| now.saturating_add(ttl)));
    }

    #[test]
    fn arbitrary_bytes_never_panic_a_decoder(b in bytes(300)) {
        let _ = decode_key(&b);
        let _ = split_ts(&b);
        let _ = Lock::parse(&b);
        let _ = Write::parse(&b);
        let _ = raw_value::decode(&b);
        if let Ok(mut rows) = Rows::from_reader(b.as_slice()) {
            for _ in 0..64 {
                if !matches!(rows.next_row(), Ok(Some(_))) {
                    break;
                }
            }
        }
    }

    #[test]
    fn request_metadata_of_any_header_values_parses_or_errs(
        priority in prop::option::of(".{0,12}"),
        arrival in prop::option::of(prop_oneof![".{0,24}", any::<u64>().prop_map(|n| n.to_string())]),
        deadline in prop::option::of(prop_oneof![".{0,24}", any::<u64>().prop_map(|n| n.to_string())]),
        id in prop::option::of(".{0,16}"),
        max_execution_duration_ms in any::<u64>(),
        ctx_priority in any::<i32>(),
        now in any::<u64>(),
    ) {
        let headers = [
            ("x-aaws-priority", priority),
            ("x-aaws-arrival-ms", arrival.clone()),
            ("x-aaws-deadline-ms", deadline.clone()),
            ("x-aaws-request-id", id),
        ];
        let ctx = kvrpcpb::Context {
            priority: ctx_priority,
            max_execution_duration_ms,
            ..Default::default()
        };
        let header = |name: &str| {
            headers.iter().find(|(k, _)| *k == name).and_then(|(_, v)| v.as_deref())
        };
        if let Ok(m) = RequestMeta::parse(header, &ctx, now) {
            // A numeric header is taken as given; otherwise the defaults.
            match arrival.as_deref().map(|a| a.trim().parse::<u64>()) {
                Some(Ok(a)) => prop_assert_eq!(m.arrival_ms, a),
                _ => prop_assert_eq!(m.arrival_ms, now),
            }
            if let Some(Ok(d)) = deadline.as_deref().map(|d| d.trim().parse::<u64>()) {
                prop_assert_eq!(m.deadline_ms, Some(d));
            }
            prop_assert!(!m.request_id.contains([',', '\n', '"']));
        }
    }
}
