//! Bad input gets a clear error and the server keeps serving; region errors
//! are filled in as TiKV clients expect; RawChecksum matches TiKV's
//! definition. These speak gRPC directly (our generated client), because
//! the official client validates some input itself and has no RawChecksum.

mod common;

use common::{direct, BytesCodec, TestCluster};
use tikal_proto::kvrpcpb::*;
use tikal_proto::metapb;
use tonic::transport::Channel;
use tonic::Code;

#[tokio::test(flavor = "multi_thread")]
async fn invalid_requests_get_clear_errors_and_touch_nothing() {
    let t = TestCluster::start(1).await;
    let mut d = direct(&t).await;
    let ok = d.put_error(d.put(b"keep", b"me", "")).await;
    assert!(ok.error.is_empty() && ok.region_error.is_none(), "{ok:?}");

    let r = d.put_error(d.put(b"", b"v", "")).await;
    assert!(r.error.contains("key must not be empty"), "{r:?}");

    let r = d
        .put_error(d.put(&vec![b'k'; 8 * 1024 + 1], b"v", ""))
        .await;
    assert!(r.error.contains("key is too large"), "{r:?}");

    let r = d.put_error(d.put(b"big", &vec![0u8; 9 << 20], "")).await;
    let too_large = r.region_error.and_then(|e| e.raft_entry_too_large);
    assert!(too_large.is_some_and(|e| e.entry_size > 8 << 20));

    let r = d.put_error(d.put(b"k", b"v", "raft")).await;
    assert!(r.error.contains("invalid column family"), "{r:?}");

    let r = d
        .tikv
        .raw_batch_put(RawBatchPutRequest {
            context: Some(d.ctx.clone()),
            pairs: vec![
                KvPair {
                    key: b"a".to_vec(),
                    ..Default::default()
                },
                KvPair {
                    key: b"b".to_vec(),
                    ..Default::default()
                },
            ],
            ttls: vec![1, 2, 3],
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(r.error.contains("ttls has 3 entries for 2 pairs"), "{r:?}");

    // An inverted scan finds nothing, as TiKV answers it; a bad column
    // family rides in a first pair, where the official client reads it.
    let scan = |start: &[u8], end: &[u8], cf: &str| RawScanRequest {
        context: Some(d.ctx.clone()),
        start_key: start.to_vec(),
        end_key: end.to_vec(),
        limit: 10,
        cf: cf.into(),
        ..Default::default()
    };
    let r = d.tikv.raw_scan(scan(b"z", b"a", "")).await.unwrap();
    assert!(r.get_ref().kvs.is_empty(), "{r:?}");
    let r = d.tikv.raw_scan(scan(b"a", b"z", "raft")).await.unwrap();
    let abort = r.get_ref().kvs.first().and_then(|p| p.error.clone());
    assert!(
        abort.is_some_and(|e| e.abort.contains("invalid column family")),
        "{r:?}"
    );
    // So does a transactional one, forward or reverse.
    for (start, end, reverse) in [(b"z", b"a", false), (b"a", b"z", true)] {
        let r = d
            .tikv
            .kv_scan(ScanRequest {
                context: Some(d.ctx.clone()),
                start_key: start.to_vec(),
                end_key: end.to_vec(),
                limit: 10,
                version: 1,
                reverse,
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        assert!(r.region_error.is_none() && r.error.is_none(), "{r:?}");
        assert!(r.pairs.is_empty(), "{r:?}");
    }

    let r = d
        .tikv
        .raw_delete_range(RawDeleteRangeRequest {
            context: Some(d.ctx.clone()),
            start_key: b"z".to_vec(),
            end_key: b"a".to_vec(),
            cf: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(r.error.contains("is not before end key"), "{r:?}");

    let r = d
        .tikv
        .raw_batch_get(RawBatchGetRequest {
            context: Some(d.ctx.clone()),
            keys: vec![b"keep".to_vec(), vec![]],
            cf: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    let abort = r.pairs.first().and_then(|p| p.error.clone());
    assert!(
        abort.is_some_and(|e| e.abort.contains("key must not be empty")),
        "{r:?}"
    );

    // Not protobuf at all: field 2 (key, bytes) sent as a varint, then junk.
    let status = raw_call(
        &d.channel,
        "/tikvpb.Tikv/RawPut",
        vec![0x10, 0xff, 0xff, 0x07, 0x0a],
    )
    .await
    .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");

    // The server still serves, and nothing above wrote anything.
    assert_eq!(d.get(b"keep").await, Some(b"me".to_vec()));
    for k in [&b"big"[..], b"k", b"a", b"b"] {
        assert_eq!(d.get(k).await, None, "{:?} must not exist", k);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn region_errors_name_the_current_region() {
    let t = TestCluster::start(1).await;
    let mut d = direct(&t).await;

    let mut req = d.put(b"k", b"v", "");
    req.context.as_mut().unwrap().region_id = 987_654;
    let r = d.put_error(req).await;
    let e = r.region_error.expect("region error");
    assert_eq!(e.region_not_found.unwrap().region_id, 987_654);

    let mut req = d.put(b"k", b"v", "");
    req.context.as_mut().unwrap().region_epoch = Some(metapb::RegionEpoch {
        conf_ver: 1,
        version: 999,
    });
    let e = d.put_error(req).await.region_error.expect("region error");
    let current = e.epoch_not_match.expect("epoch not match").current_regions;
    assert_eq!(current.len(), 1);
    assert_eq!(current[0].id, d.ctx.region_id);
    assert_eq!(current[0].region_epoch, d.ctx.region_epoch);

    let mut req = d.put(b"k", b"v", "");
    req.context
        .as_mut()
        .unwrap()
        .peer
        .as_mut()
        .unwrap()
        .store_id = 4242;
    let e = d.put_error(req).await.region_error.expect("region error");
    assert_eq!(e.store_not_match.unwrap().request_store_id, 4242);
    // The store is checked before the region, as TiKV checks it: a client
    // that reached the wrong store must hear so, whatever region it names.
    let mut req = d.put(b"k", b"v", "");
    let ctx = req.context.as_mut().unwrap();
    ctx.region_id = 4243;
    ctx.peer.as_mut().unwrap().store_id = 4242;
    let e = d.put_error(req).await.region_error.expect("region error");
    assert!(e.store_not_match.is_some(), "{e:?}");

    // None of these wrote.
    assert_eq!(d.get(b"k").await, None);
}

#[tokio::test(flavor = "multi_thread")]
async fn raw_checksum_is_crc64_xor_over_the_range() {
    let t = TestCluster::start(1).await;
    let client = t.raw_client().await;
    let pairs: Vec<(Vec<u8>, Vec<u8>)> = (0..50)
        .map(|i| {
            (
                format!("c{i:03}").into_bytes(),
                format!("value-{i}").into_bytes(),
            )
        })
        .collect();
    client.batch_put(pairs.clone()).await.unwrap();
    client
        .put("d-outside".to_owned(), "x".to_owned())
        .await
        .unwrap();

    let in_range: Vec<_> = pairs
        .iter()
        .filter(|(k, _)| k.as_slice() < &b"c040"[..])
        .collect();
    let (mut checksum, mut bytes) = (0u64, 0u64);
    for (k, v) in &in_range {
        let mut digest = crc64fast::Digest::new();
        digest.write(k);
        digest.write(v);
        checksum ^= digest.sum64();
        bytes += (k.len() + v.len()) as u64;
    }

    let mut d = direct(&t).await;
    let r = d
        .tikv
        .raw_checksum(RawChecksumRequest {
            context: Some(d.ctx.clone()),
            algorithm: ChecksumAlgorithm::Crc64Xor as i32,
            ranges: vec![KeyRange {
                start_key: b"c".to_vec(),
                end_key: b"c040".to_vec(),
            }],
        })
        .await
        .unwrap()
        .into_inner();
    assert!(r.error.is_empty() && r.region_error.is_none(), "{r:?}");
    assert_eq!(r.total_kvs, in_range.len() as u64);
    assert_eq!(r.total_bytes, bytes);
    assert_eq!(r.checksum, checksum);
}

/// Sends `body` as the raw protobuf payload of a unary call.
async fn raw_call(
    channel: &Channel,
    path: &'static str,
    body: Vec<u8>,
) -> Result<Vec<u8>, tonic::Status> {
    let mut grpc = tonic::client::Grpc::new(channel.clone());
    grpc.ready().await.unwrap();
    let path = tonic::codegen::http::uri::PathAndQuery::from_static(path);
    grpc.unary(tonic::Request::new(body), path, BytesCodec)
        .await
        .map(|r| r.into_inner())
}
