//! Request decoding: the bytes a client sends to any method of the store
//! (`tikvpb.Tikv`), PD (`pdpb.PD`) and PD's keyspace service
//! (`keyspacepb.Keyspace`), decoded as that method's request type.
//!
//! Every input is decoded as the request type of every method, two ways:
//! with prost directly, and as the server does, through tonic's request
//! stream with our `StrictProstCodec` decoder (the input framed as one
//! gRPC message). Checks:
//! * neither ever panics;
//! * both agree: the server path yields exactly the message prost decodes,
//!   or, when prost rejects the bytes, fails with `InvalidArgument`
//!   naming a malformed message (never `Internal`);
//! * a decoded message re-encodes to `encoded_len()` bytes that decode to
//!   the same message;
//! * the input taken as a whole unframed request body, decoded as one
//!   method's type (chosen by the first byte), yields only messages that
//!   are the prost decoding of a complete uncompressed frame, in order, and
//!   all of them when every frame is one.
//!
//! The method table is checked against the `.proto` files on the first
//! input, so a method added there and not here fails the run.

#![no_main]

use std::fmt::Debug;
use std::future::Future;
use std::pin::pin;
use std::task::{Context, Poll, Waker};

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use prost::Message;
use tikal_proto::codec::StrictProstCodec;
use tikal_proto::{keyspacepb, kvrpcpb, pdpb};
use tonic::codec::{Codec, Streaming};
use tonic::{Code, Status};

struct Method {
    service: &'static str,
    name: &'static str,
    check: fn(&[u8]),
    check_body: fn(&[u8]),
}

macro_rules! methods {
    ($($service:literal $name:ident: $ty:ty;)*) => {
        &[$(Method {
            service: $service,
            name: stringify!($name),
            check: check::<$ty>,
            check_body: check_body::<$ty>,
        }),*]
    };
}

const METHODS: &[Method] = methods! {
    "Tikv" KvGet: kvrpcpb::GetRequest;
    "Tikv" KvScan: kvrpcpb::ScanRequest;
    "Tikv" KvPrewrite: kvrpcpb::PrewriteRequest;
    "Tikv" KvPessimisticLock: kvrpcpb::PessimisticLockRequest;
    "Tikv" KVPessimisticRollback: kvrpcpb::PessimisticRollbackRequest;
    "Tikv" KvTxnHeartBeat: kvrpcpb::TxnHeartBeatRequest;
    "Tikv" KvCheckTxnStatus: kvrpcpb::CheckTxnStatusRequest;
    "Tikv" KvCheckSecondaryLocks: kvrpcpb::CheckSecondaryLocksRequest;
    "Tikv" KvCommit: kvrpcpb::CommitRequest;
    "Tikv" KvCleanup: kvrpcpb::CleanupRequest;
    "Tikv" KvBatchGet: kvrpcpb::BatchGetRequest;
    "Tikv" KvBatchRollback: kvrpcpb::BatchRollbackRequest;
    "Tikv" KvScanLock: kvrpcpb::ScanLockRequest;
    "Tikv" KvResolveLock: kvrpcpb::ResolveLockRequest;
    "Tikv" KvGC: kvrpcpb::GcRequest;
    "Tikv" KvDeleteRange: kvrpcpb::DeleteRangeRequest;
    "Tikv" RawGet: kvrpcpb::RawGetRequest;
    "Tikv" RawBatchGet: kvrpcpb::RawBatchGetRequest;
    "Tikv" RawPut: kvrpcpb::RawPutRequest;
    "Tikv" RawBatchPut: kvrpcpb::RawBatchPutRequest;
    "Tikv" RawDelete: kvrpcpb::RawDeleteRequest;
    "Tikv" RawBatchDelete: kvrpcpb::RawBatchDeleteRequest;
    "Tikv" RawScan: kvrpcpb::RawScanRequest;
    "Tikv" RawDeleteRange: kvrpcpb::RawDeleteRangeRequest;
    "Tikv" RawBatchScan: kvrpcpb::RawBatchScanRequest;
    "Tikv" RawGetKeyTTL: kvrpcpb::RawGetKeyTtlRequest;
    "Tikv" RawCompareAndSwap: kvrpcpb::RawCasRequest;
    "Tikv" RawChecksum: kvrpcpb::RawChecksumRequest;
    "Tikv" UnsafeDestroyRange: kvrpcpb::UnsafeDestroyRangeRequest;
    "PD" GetMembers: pdpb::GetMembersRequest;
    "PD" Tso: pdpb::TsoRequest;
    "PD" Bootstrap: pdpb::BootstrapRequest;
    "PD" IsBootstrapped: pdpb::IsBootstrappedRequest;
    "PD" AllocID: pdpb::AllocIdRequest;
    "PD" GetStore: pdpb::GetStoreRequest;
    "PD" PutStore: pdpb::PutStoreRequest;
    "PD" GetAllStores: pdpb::GetAllStoresRequest;
    "PD" StoreHeartbeat: pdpb::StoreHeartbeatRequest;
    "PD" RegionHeartbeat: pdpb::RegionHeartbeatRequest;
    "PD" GetRegion: pdpb::GetRegionRequest;
    "PD" GetPrevRegion: pdpb::GetRegionRequest;
    "PD" GetRegionByID: pdpb::GetRegionByIdRequest;
    "PD" ScanRegions: pdpb::ScanRegionsRequest;
    "PD" AskBatchSplit: pdpb::AskBatchSplitRequest;
    "PD" ReportBatchSplit: pdpb::ReportBatchSplitRequest;
    "PD" GetClusterConfig: pdpb::GetClusterConfigRequest;
    "PD" GetGCSafePoint: pdpb::GetGcSafePointRequest;
    "PD" UpdateGCSafePoint: pdpb::UpdateGcSafePointRequest;
    "PD" UpdateServiceGCSafePoint: pdpb::UpdateServiceGcSafePointRequest;
    "Keyspace" LoadKeyspace: keyspacepb::LoadKeyspaceRequest;
    "Keyspace" GetAllKeyspaces: keyspacepb::GetAllKeyspacesRequest;
};

fuzz_target!(init: check_table_covers_protos(), |data: &[u8]| {
    for m in METHODS {
        (m.check)(data);
    }
    if let Some((&pick, body)) = data.split_first() {
        (METHODS[usize::from(pick) % METHODS.len()].check_body)(body);
    }
});

fn check<T: Message + Default + PartialEq + Debug + Send + 'static>(data: &[u8]) {
    let direct = T::decode(data);
    if let Ok(m) = &direct {
        let bytes = m.encode_to_vec();
        assert_eq!(bytes.len(), m.encoded_len());
        assert_eq!(T::decode(bytes.as_slice()).as_ref(), Ok(m), "re-encoded");
    }
    let (got, end) = serve::<T>(frame(data));
    match (direct, end) {
        (Ok(m), Ok(())) => assert_eq!(got, [m]),
        (Err(_), Err(status)) => {
            assert!(got.is_empty());
            assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
            assert!(status.message().starts_with("malformed protobuf message"));
        }
        (direct, end) => panic!("prost: {direct:?}, server: {got:?} then {end:?}"),
    }
}

fn check_body<T: Message + Default + PartialEq + Debug + Send + 'static>(body: &[u8]) {
    let frames = frames(body);
    let (got, end) = serve::<T>(body.to_vec());
    for (i, msg) in got.iter().enumerate() {
        let Some(Frame::Whole {
            compressed: false,
            payload,
        }) = frames.get(i)
        else {
            panic!("message {i} {msg:?} from frame {:?}", frames.get(i));
        };
        assert_eq!(T::decode(*payload).as_ref(), Ok(msg));
    }
    let all_good = frames.iter().all(|f| match f {
        Frame::Whole {
            compressed,
            payload,
        } => !compressed && T::decode(*payload).is_ok(),
        Frame::Cut => false,
    });
    if all_good {
        assert!(end.is_ok(), "{end:?}");
        assert_eq!(got.len(), frames.len());
    }
}

/// One message in gRPC's framing: compressed flag, u32 BE length, payload.
fn frame(payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(payload.len() + 5);
    out.push(0);
    out.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    out.extend_from_slice(payload);
    out
}

#[derive(Debug)]
enum Frame<'a> {
    Whole {
        compressed: bool,
        payload: &'a [u8],
    },
    /// The body ends inside this frame.
    Cut,
}

/// The body's frames, as the gRPC wire format defines them.
fn frames(mut body: &[u8]) -> Vec<Frame<'_>> {
    let mut out = vec![];
    while !body.is_empty() {
        let Some(len) = body.get(1..5) else {
            out.push(Frame::Cut);
            break;
        };
        let len = u32::from_be_bytes(len.try_into().unwrap()) as usize;
        let Some(payload) = body[5..].get(..len) else {
            out.push(Frame::Cut);
            break;
        };
        out.push(Frame::Whole {
            compressed: body[0] != 0,
            payload,
        });
        body = &body[5 + len..];
    }
    out
}

/// Decodes a request body as the generated servers do: tonic's request
/// stream with our codec's decoder. The messages read, then how it ended.
fn serve<T: Message + Default + Send + 'static>(body: Vec<u8>) -> (Vec<T>, Result<(), Status>) {
    let decoder = StrictProstCodec::<(), T>::default().decoder();
    let body = http_body::Full::new(Bytes::from(body));
    let mut stream = Streaming::new_request(decoder, body, None, None);
    let mut got = vec![];
    loop {
        match ready(stream.message()) {
            Ok(Some(m)) => got.push(m),
            Ok(None) => return (got, Ok(())),
            Err(status) => return (got, Err(status)),
        }
    }
}

/// Polls a future that never waits: the body is all in memory.
fn ready<F: Future>(f: F) -> F::Output {
    match pin!(f).poll(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(out) => out,
        Poll::Pending => panic!("decoding an in-memory body waited"),
    }
}

/// Every `rpc` of the three services in `proto/` has a row in `METHODS`.
fn check_table_covers_protos() {
    let protos = [
        ("Tikv", include_str!("../../proto/tikvpb.proto")),
        ("PD", include_str!("../../proto/pdpb.proto")),
        ("Keyspace", include_str!("../../proto/keyspacepb.proto")),
    ];
    let mut declared = vec![];
    for (service, text) in protos {
        for line in text.lines() {
            let Some(rest) = line.trim_start().strip_prefix("rpc ") else {
                continue;
            };
            let name = rest.split('(').next().unwrap_or_default().trim();
            declared.push((service, name));
        }
    }
    let mut table: Vec<_> = METHODS.iter().map(|m| (m.service, m.name)).collect();
    declared.sort_unstable();
    table.sort_unstable();
    assert_eq!(
        declared, table,
        "fuzz_targets/kvrpc_request.rs METHODS vs proto/"
    );
}
