//! Calls the generated typed unary clients cannot make: the PD streams
//! (Tso, RegionHeartbeat) collected into one answer, and raw protobuf bytes
//! sent as any method's body.

use tikal_proto::pdpb::{self, pd_client::PdClient};
use tonic::client::Grpc;
use tonic::codegen::http::uri::PathAndQuery;
use tonic::transport::Channel;
use tonic::{Response, Status, Streaming};

use crate::common::BytesCodec;

type Answers<T> = Result<Response<Vec<T>>, Status>;

/// Sends `reqs` on one Tso stream; the answers, in order.
pub async fn tso_stream(
    mut pd: PdClient<Channel>,
    reqs: Vec<pdpb::TsoRequest>,
) -> Answers<pdpb::TsoResponse> {
    collect(pd.tso(futures::stream::iter(reqs)).await?.into_inner()).await
}

/// Sends `reqs` on one RegionHeartbeat stream; the answers, in order.
pub async fn heartbeat_stream(
    mut pd: PdClient<Channel>,
    reqs: Vec<pdpb::RegionHeartbeatRequest>,
) -> Answers<pdpb::RegionHeartbeatResponse> {
    let answers = pd.region_heartbeat(futures::stream::iter(reqs)).await?;
    collect(answers.into_inner()).await
}

/// Sends `body` as the raw protobuf payload of a unary call.
pub async fn raw_unary(
    channel: Channel,
    path: &'static str,
    body: Vec<u8>,
) -> Result<Response<Vec<u8>>, Status> {
    let mut grpc = ready(channel).await?;
    let path = PathAndQuery::from_static(path);
    grpc.unary(tonic::Request::new(body), path, BytesCodec)
        .await
}

/// Sends `bodies` as the raw messages of a bidirectional stream and
/// collects the answers.
pub async fn raw_streaming(
    channel: Channel,
    path: &'static str,
    bodies: Vec<Vec<u8>>,
) -> Answers<Vec<u8>> {
    let mut grpc = ready(channel).await?;
    let request = tonic::Request::new(futures::stream::iter(bodies));
    let path = PathAndQuery::from_static(path);
    collect(
        grpc.streaming(request, path, BytesCodec)
            .await?
            .into_inner(),
    )
    .await
}

async fn ready(channel: Channel) -> Result<Grpc<Channel>, Status> {
    let mut grpc = Grpc::new(channel);
    let ready = grpc.ready().await;
    ready.map_err(|e| Status::unavailable(format!("channel not ready: {e}")))?;
    Ok(grpc)
}

/// Every message of a stream, until it ends or fails.
async fn collect<T>(mut answers: Streaming<T>) -> Answers<T> {
    let mut out = vec![];
    while let Some(m) = answers.message().await? {
        out.push(m);
    }
    Ok(Response::new(out))
}
