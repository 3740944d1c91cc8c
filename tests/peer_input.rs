//! Hostile input from "another store": random and malformed Raft messages
//! and snapshot streams sent to a store's `Raft`, `BatchRaft` and
//! `Snapshot` methods. The store must keep serving its clients (a message
//! that could stop its Raft loop is dropped). This is a smoke test of
//! shapes, seeded; a peer that forges well-formed Raft traffic is outside
//! what it checks (upstream's guard is TLS between stores).

mod common;

use std::time::{Duration, Instant};

use common::{direct, TestCluster};
use protobuf::{Message as _, ProtobufEnum as _};
use raft::eraftpb::{Entry, EntryType, Message, MessageType, Snapshot};
use rand::{Rng, SeedableRng};
use tikal_proto::metapb;
use tikal_proto::raft_serverpb::{
    ExtraMessage, RaftMessage, RaftSnapshotData, SnapshotCfFile, SnapshotChunk, SnapshotMeta,
};
use tikal_proto::tikvpb::BatchRaftMessage;

fn peer(id: u64, store_id: u64) -> Option<metapb::Peer> {
    Some(metapb::Peer {
        id,
        store_id,
        ..Default::default()
    })
}

/// A random Raft message: any type, numbers near the real ones or huge.
fn random_message(rng: &mut rand::rngs::StdRng, region_id: u64, me: &metapb::Peer) -> RaftMessage {
    let mut m = Message::default();
    let types = MessageType::values();
    m.set_msg_type(types[rng.gen_range(0..types.len())]);
    let num = |rng: &mut rand::rngs::StdRng| match rng.gen_range(0..4) {
        0 => 0,
        1 => rng.gen_range(0..20),
        2 => u64::MAX - rng.gen_range(0..3),
        _ => rng.gen(),
    };
    m.term = num(rng);
    m.index = num(rng);
    m.log_term = num(rng);
    m.commit = num(rng);
    m.from = rng.gen_range(0..1000);
    m.to = if rng.gen_bool(0.7) { me.id } else { rng.gen() };
    for _ in 0..rng.gen_range(0..3) {
        let mut e = Entry::default();
        e.set_entry_type(match rng.gen_range(0..3) {
            0 => EntryType::EntryNormal,
            1 => EntryType::EntryConfChange,
            _ => EntryType::EntryConfChangeV2,
        });
        e.index = num(rng);
        e.term = num(rng);
        e.data = (0..rng.gen_range(0..64))
            .map(|_| rng.gen())
            .collect::<Vec<u8>>()
            .into();
        m.mut_entries().push(e);
    }
    let region = if rng.gen_bool(0.7) {
        region_id
    } else {
        rng.gen()
    };
    RaftMessage {
        region_id: region,
        from_peer: peer(m.from, rng.gen_range(0..5)),
        to_peer: if rng.gen_bool(0.9) {
            Some(me.clone())
        } else {
            peer(m.to, rng.gen())
        },
        message: if rng.gen_bool(0.95) {
            m.write_to_bytes().unwrap()
        } else {
            (0..rng.gen_range(0..40)).map(|_| rng.gen()).collect()
        },
        region_epoch: None,
        is_tombstone: rng.gen_bool(0.05),
        merge_target: rng.gen_bool(0.05).then(|| metapb::Region {
            id: rng.gen(),
            ..Default::default()
        }),
        extra_msg: rng.gen_bool(0.05).then(|| ExtraMessage {
            r#type: rng.gen_range(0..3),
            index: rng.gen_range(0..40),
        }),
        ..Default::default()
    }
}

/// A snapshot stream's first chunk: a MsgSnapshot whose data names `cf`
/// with `size` bytes, for the store's own region and peer.
fn snapshot_head(region_id: u64, me: &metapb::Peer, cf: &str, size: u64) -> SnapshotChunk {
    let data = RaftSnapshotData {
        region: Some(metapb::Region {
            id: region_id,
            peers: vec![me.clone()],
            ..Default::default()
        }),
        file_size: size,
        version: 1,
        meta: Some(SnapshotMeta {
            cf_files: vec![SnapshotCfFile {
                cf: cf.into(),
                size,
                checksum: 0,
            }],
        }),
    };
    let mut snap = Snapshot {
        data: prost::Message::encode_to_vec(&data).into(),
        ..Default::default()
    };
    snap.mut_metadata().index = 1_000_000;
    snap.mut_metadata().term = 1_000;
    let mut m = Message::default();
    m.set_msg_type(MessageType::MsgSnapshot);
    m.set_snapshot(snap);
    m.to = me.id;
    m.from = 999;
    m.term = 1_000;
    SnapshotChunk {
        message: Some(RaftMessage {
            region_id,
            from_peer: peer(999, 2),
            to_peer: Some(me.clone()),
            message: m.write_to_bytes().unwrap(),
            ..Default::default()
        }),
        data: vec![],
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn hostile_raft_traffic_leaves_the_store_serving() {
    let t = TestCluster::start(1).await;
    let d = direct(&t).await;
    let raw = t.raw_client().await;
    raw.put("kept".to_owned(), "1".to_owned()).await.unwrap();
    let (region_id, me) = (d.ctx.region_id, d.ctx.peer.clone().unwrap());
    let mut rng = rand::rngs::StdRng::seed_from_u64(11);

    for _ in 0..20 {
        let batch = BatchRaftMessage {
            msgs: (0..50)
                .map(|_| random_message(&mut rng, region_id, &me))
                .collect(),
        };
        let _ = d
            .tikv
            .clone()
            .batch_raft(tokio_stream::iter(vec![batch]))
            .await;
        let one: Vec<RaftMessage> = (0..20)
            .map(|_| random_message(&mut rng, region_id, &me))
            .collect();
        let _ = d.tikv.clone().raft(tokio_stream::iter(one)).await;
    }
    // Snapshot streams: no message, a metadata CF, an unknown CF, a short
    // stream, bytes that do not match the checksum.
    let bad_streams: Vec<Vec<SnapshotChunk>> = vec![
        vec![SnapshotChunk {
            message: None,
            data: vec![1, 2, 3],
        }],
        vec![
            snapshot_head(region_id, &me, "raft", 4),
            SnapshotChunk {
                message: None,
                data: vec![0; 4],
            },
        ],
        vec![
            snapshot_head(region_id, &me, "nope", 4),
            SnapshotChunk {
                message: None,
                data: vec![0; 4],
            },
        ],
        vec![
            snapshot_head(region_id, &me, "write", 100),
            SnapshotChunk {
                message: None,
                data: vec![0; 10],
            },
        ],
        vec![
            snapshot_head(region_id, &me, "write", 4),
            SnapshotChunk {
                message: None,
                data: vec![7; 4],
            },
        ],
    ];
    for chunks in bad_streams {
        let r = d.tikv.clone().snapshot(tokio_stream::iter(chunks)).await;
        assert!(r.is_err(), "a bad snapshot stream is refused");
    }

    // Still serving (a forged higher term may cost it an election first).
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let put = raw.put("after".to_owned(), "2".to_owned()).await;
        let get = raw.get("kept".to_owned()).await;
        if put.is_ok() && matches!(get, Ok(Some(ref v)) if v == b"1") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the store stopped serving\n{}",
            t.logs()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_raft_stream_that_reached_the_wrong_store_is_ended() {
    // A sender that reached this store at an address another store left
    // is told so: its stream ends, and it looks the address up again.
    let t = TestCluster::start(1).await;
    let d = direct(&t).await;
    let (region_id, me) = (d.ctx.region_id, d.ctx.peer.clone().unwrap());
    let mut heartbeat = Message::default();
    heartbeat.set_msg_type(MessageType::MsgHeartbeat);
    let to = |store_id: u64| RaftMessage {
        region_id,
        from_peer: peer(me.id + 1000, me.store_id + 1000),
        to_peer: peer(me.id, store_id),
        message: heartbeat.write_to_bytes().unwrap(),
        ..Default::default()
    };
    let batch = BatchRaftMessage {
        msgs: vec![to(me.store_id + 1)],
    };
    let ended = d
        .tikv
        .clone()
        .batch_raft(tokio_stream::iter(vec![batch]))
        .await
        .unwrap_err();
    assert!(ended.message().contains("store not match"), "{ended:?}");
    let ended = d
        .tikv
        .clone()
        .raft(tokio_stream::iter(vec![to(me.store_id + 1)]))
        .await
        .unwrap_err();
    assert!(ended.message().contains("store not match"), "{ended:?}");
    // Its own store's messages are taken as before.
    let batch = BatchRaftMessage {
        msgs: vec![to(me.store_id)],
    };
    let taken = d
        .tikv
        .clone()
        .batch_raft(tokio_stream::iter(vec![batch]))
        .await;
    assert!(taken.is_ok(), "{taken:?}");
}
